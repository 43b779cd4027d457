//! Commands that read and steer a running server: `agents`, `sync ...`.

use anyhow::Context;
use clap::{Args, Subcommand};
use lockstep_client::{proto as v1, AgentFilter, Client};
use serde_json::{json, Value};

use crate::table;

/// Where the server is and how to print.
#[derive(Args, Clone)]
pub struct Target {
    /// Server address.
    #[arg(long, env = "LOCKSTEP_ADDR", default_value = crate::config::DEFAULT_LISTEN)]
    pub addr: String,
    /// Namespace (empty: default).
    #[arg(long, short = 'n', default_value = "")]
    pub namespace: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.addr).await?.with_namespace(self.namespace.clone()))
    }
}

#[derive(Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    target: Target,
    /// Only agents with this role.
    #[arg(long)]
    role: Option<String>,
    /// Only agents with this capability.
    #[arg(long)]
    capability: Option<String>,
    /// Only agents in this status (active, idle, busy, syncing, paused, lost).
    #[arg(long)]
    status: Option<String>,
}

fn parse_status(s: &str) -> anyhow::Result<v1::AgentStatus> {
    v1::AgentStatus::from_str_name(&format!("AGENT_STATUS_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != v1::AgentStatus::Unspecified)
        .with_context(|| format!("unknown status '{s}': use active, idle, busy, syncing, paused or lost"))
}

/// An agent status as lower-case text.
pub fn status_name(status: i32) -> String {
    v1::AgentStatus::try_from(status)
        .map(|s| s.as_str_name().trim_start_matches("AGENT_STATUS_").to_ascii_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn sync_state_name(state: i32) -> String {
    v1::sync_point_status::State::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_ascii_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn agent_json(a: &v1::AgentInfo) -> Value {
    json!({
        "namespace": a.namespace, "agent_id": a.agent_id, "role": a.role,
        "capabilities": a.capabilities, "interests": a.interests, "metadata": a.metadata,
        "status": status_name(a.status), "registered_at_ms": a.registered_at_ms,
        "last_heartbeat_ms": a.last_heartbeat_ms, "state_version": a.state_version,
        "queue_depth": a.queue_depth, "delivered": a.delivered, "dropped": a.dropped,
    })
}

pub async fn agents(args: AgentsArgs) -> anyhow::Result<()> {
    let client = args.target.client().await?;
    let filter = AgentFilter {
        role: args.role,
        capability: args.capability,
        status: args.status.as_deref().map(parse_status).transpose()?,
    };
    let agents = client.list_agents(filter).await?;
    if args.target.json {
        println!("{}", serde_json::to_string_pretty(&agents.iter().map(agent_json).collect::<Vec<_>>())?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.clone(),
                a.role.clone(),
                status_name(a.status),
                a.capabilities.join(","),
                a.interests.join(","),
                a.state_version.to_string(),
                a.queue_depth.to_string(),
                a.delivered.to_string(),
                a.dropped.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["AGENT", "ROLE", "STATUS", "CAPABILITIES", "INTERESTS", "STATE_V", "QUEUE", "DELIVERED", "DROPPED"],
            &rows
        )
    );
    println!("{} agent(s)", agents.len());
    Ok(())
}

#[derive(Args)]
pub struct SyncArgs {
    #[command(subcommand)]
    command: SyncCommand,
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Every sync point, waiting or retained.
    List(Target),
    /// Counts of sync points by state.
    Stats(Target),
    /// One sync point: who arrived, who is missing, since when.
    Status(SyncIdArgs),
    /// One sync point explained, with recommendations.
    Diagnose(SyncIdArgs),
    /// Release the agents waiting at a sync point now.
    ForceComplete(SyncIdArgs),
    /// Remove every finished sync point.
    Cleanup(Target),
}

#[derive(Args)]
struct SyncIdArgs {
    /// The sync point id.
    id: String,
    #[command(flatten)]
    target: Target,
}

fn sync_json(s: &v1::SyncPointStatus) -> Value {
    json!({
        "sync_id": s.sync_id, "state": sync_state_name(s.state), "participants": s.participants,
        "required": s.required, "required_count": s.required_count, "arrived": s.arrived,
        "missing": s.missing, "created_at_ms": s.created_at_ms, "waiting_since_ms": s.waiting_since_ms,
        "deadline_ms": s.deadline_ms, "finished_at_ms": (s.finished_at_ms > 0).then_some(s.finished_at_ms),
        "failure": (!s.failure.is_empty()).then_some(&s.failure), "now_ms": s.now_ms,
    })
}

fn print_status(s: &v1::SyncPointStatus) {
    println!("sync point    {}", s.sync_id);
    println!("state         {}", sync_state_name(s.state));
    println!("participants  {}", s.participants);
    println!("arrived       {} of {}: {}", s.arrived.len(), s.required_count, s.arrived.join(", "));
    if !s.missing.is_empty() {
        println!("missing       {}", s.missing.join(", "));
    }
    println!("waiting since {} ms ago", s.now_ms.saturating_sub(s.waiting_since_ms));
    if s.finished_at_ms == 0 {
        println!("deadline in   {} ms", s.deadline_ms.saturating_sub(s.now_ms));
    } else {
        println!("finished      {} ms ago", s.now_ms.saturating_sub(s.finished_at_ms));
    }
    if !s.failure.is_empty() {
        println!("failure       {}", s.failure);
    }
}

pub async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    match args.command {
        SyncCommand::List(t) => {
            let points = t.client().await?.list_sync_points().await?;
            if t.json {
                println!("{}", serde_json::to_string_pretty(&points.iter().map(sync_json).collect::<Vec<_>>())?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = points
                .iter()
                .map(|s| {
                    vec![
                        s.sync_id.clone(),
                        sync_state_name(s.state),
                        format!("{}/{}", s.arrived.len(), s.required_count),
                        s.missing.join(","),
                        format!("{}", s.now_ms.saturating_sub(s.created_at_ms)),
                    ]
                })
                .collect();
            print!("{}", table::render(&["SYNC_ID", "STATE", "ARRIVED", "MISSING", "AGE_MS"], &rows));
            println!("{} sync point(s)", points.len());
        }
        SyncCommand::Stats(t) => {
            let points = t.client().await?.list_sync_points().await?;
            let mut counts = std::collections::BTreeMap::<String, usize>::new();
            for p in &points {
                *counts.entry(sync_state_name(p.state)).or_default() += 1;
            }
            if t.json {
                println!("{}", serde_json::to_string_pretty(&json!({"total": points.len(), "by_state": counts}))?);
            } else {
                let rows: Vec<Vec<String>> = counts.iter().map(|(k, v)| vec![k.clone(), v.to_string()]).collect();
                print!("{}", table::render(&["STATE", "COUNT"], &rows));
                println!("{} sync point(s)", points.len());
            }
        }
        SyncCommand::Status(a) => {
            let s = a.target.client().await?.sync_status(&a.id).await?;
            if a.target.json {
                println!("{}", serde_json::to_string_pretty(&sync_json(&s))?);
            } else {
                print_status(&s);
            }
        }
        SyncCommand::Diagnose(a) => {
            let d = a.target.client().await?.diagnose_sync(&a.id).await?;
            let status = d.status.unwrap_or_default();
            if a.target.json {
                let v = json!({"status": sync_json(&status), "issues": d.issues, "recommendations": d.recommendations});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&status);
                println!("\nissues:");
                for i in &d.issues {
                    println!("  - {i}");
                }
                println!("recommendations:");
                for r in &d.recommendations {
                    println!("  - {r}");
                }
            }
        }
        SyncCommand::ForceComplete(a) => {
            let s = a.target.client().await?.force_complete_sync(&a.id).await?;
            if a.target.json {
                println!("{}", serde_json::to_string_pretty(&sync_json(&s))?);
            } else {
                println!("released {} waiting agent(s) at '{}'", s.arrived.len(), s.sync_id);
            }
        }
        SyncCommand::Cleanup(t) => {
            let removed = t.client().await?.cleanup_sync_points().await?;
            if t.json {
                println!("{}", json!({"removed": removed}));
            } else {
                println!("removed {removed} finished sync point(s)");
            }
        }
    }
    Ok(())
}
