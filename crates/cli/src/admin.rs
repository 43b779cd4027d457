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
    /// The token to present, for a server that requires one (`serve --token-secret-file`; mint
    /// one with `lockstep token create`).
    #[arg(long, env = "LOCKSTEP_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS towards a server that serves it (`serve --tls-cert`).
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// Connect over TLS, checking the server's certificate against this CA (PEM).
    #[arg(long, env = "LOCKSTEP_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The client certificate (PEM) to present, for a server that asks for one
    /// (`serve --tls-client-ca`); needs --tls-key and --tls-ca.
    #[arg(long, env = "LOCKSTEP_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "LOCKSTEP_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The client's TLS options, read from the files named (none: plain TCP).
    pub fn options(&self) -> anyhow::Result<Option<lockstep_client::TlsOptions>> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let mut tls = lockstep_client::TlsOptions::from_ca_file(ca)?;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity_files(cert, key)?;
        }
        Ok(Some(tls))
    }

    /// A client of the server at `addr` presenting `token`.
    pub async fn connect(&self, addr: &str, token: Option<&str>) -> anyhow::Result<Client> {
        let options = lockstep_client::ConnectOptions { token: token.map(str::to_owned), tls: self.options()? };
        Ok(Client::connect_with(addr, options).await?)
    }
}

impl Target {
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        self.client_at(&self.addr).await
    }

    /// A client of the server at `addr` (this one's, or its operators' listener), presenting
    /// this target's token.
    async fn client_at(&self, addr: &str) -> anyhow::Result<Client> {
        let client = self.tls.connect(addr, self.auth_token.as_deref()).await?;
        Ok(client.with_namespace(self.namespace.clone()))
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
        "breaker": a.breaker_state, "breaker_opened": a.breaker_opened,
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
                a.breaker_state.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "AGENT",
                "ROLE",
                "STATUS",
                "CAPABILITIES",
                "INTERESTS",
                "STATE_V",
                "QUEUE",
                "DELIVERED",
                "DROPPED",
                "BREAKER"
            ],
            &rows
        )
    );
    println!("{} agent(s)", agents.len());
    Ok(())
}

#[derive(Args)]
pub struct CollectivesArgs {
    #[command(subcommand)]
    command: CollectivesCommand,
}

#[derive(Subcommand)]
enum CollectivesCommand {
    /// Every collective gathering or transferring, with who has not joined yet.
    List(Target),
}

/// `lockstep collectives list`.
pub async fn collectives(args: CollectivesArgs) -> anyhow::Result<()> {
    let CollectivesCommand::List(t) = args.command;
    let collectives = t.client().await?.list_collectives().await?;
    if t.json {
        let items: Vec<_> = collectives
            .iter()
            .map(|c| {
                json!({
                    "collective_id": c.collective_id,
                    "description": c.description,
                    "group": c.group,
                    "members": c.members,
                    "missing": c.missing,
                    "phase": c.phase,
                    "waiting_ms": c.waiting_ms,
                    "deadline_in_ms": c.deadline_in_ms,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = collectives
        .iter()
        .map(|c| {
            vec![
                c.collective_id.clone(),
                c.description.clone(),
                c.phase.clone(),
                format!("{}/{}", c.members.len() - c.missing.len(), c.members.len()),
                c.missing.join(","),
                c.waiting_ms.to_string(),
            ]
        })
        .collect();
    print!("{}", table::render(&["COLLECTIVE_ID", "CALL", "PHASE", "JOINED", "MISSING", "AGE_MS"], &rows));
    println!("{} collective(s)", collectives.len());
    Ok(())
}

/// `lockstep groups`.
pub async fn groups(t: Target) -> anyhow::Result<()> {
    let groups = t.client().await?.list_groups().await?;
    if t.json {
        let items: Vec<_> = groups
            .iter()
            .map(|g| {
                let s = g.state.as_ref();
                json!({
                    "group_id": g.group_id,
                    "members": g.members,
                    "version": s.map_or(0, |s| s.version),
                    "checksum": s.map(|s| s.checksum.clone()).unwrap_or_default(),
                    "size": s.map_or(0, |s| s.size),
                    "published_by": s.map(|s| s.published_by.clone()).unwrap_or_default(),
                    "publishing": g.publishing,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let s = g.state.as_ref();
            let ranked: Vec<String> = g.members.iter().enumerate().map(|(r, m)| format!("{r}:{m}")).collect();
            vec![
                g.group_id.clone(),
                ranked.join(","),
                s.map_or("-".to_owned(), |s| s.version.to_string()),
                // The first 16 hex digits tell versions apart at a glance; --json has all 64.
                s.map_or("-".to_owned(), |s| s.checksum.chars().take(16).collect()),
                s.map_or("-".to_owned(), |s| s.size.to_string()),
                g.publishing.clone(),
            ]
        })
        .collect();
    print!("{}", table::render(&["GROUP_ID", "MEMBERS(RANK:ID)", "VERSION", "CHECKSUM", "BYTES", "PUBLISHING"], &rows));
    println!("{} group(s)", groups.len());
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
    /// Release the agents waiting at a sync point now (an operator's action: needs the admin
    /// token when the server has one).
    ForceComplete(SyncForceArgs),
    /// Remove every finished sync point (an operator's action: needs the admin token when the
    /// server has one).
    Cleanup(OperatorTarget),
}

#[derive(Args)]
struct SyncForceArgs {
    /// The sync point id.
    id: String,
    #[command(flatten)]
    operator: OperatorTarget,
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
        "quorum": (s.quorum > 0).then_some(s.quorum),
    })
}

fn print_status(s: &v1::SyncPointStatus) {
    println!("sync point    {}", s.sync_id);
    println!("state         {}", sync_state_name(s.state));
    println!("participants  {}", s.participants);
    println!("arrived       {} of {}: {}", s.arrived.len(), s.required_count, s.arrived.join(", "));
    if !s.missing.is_empty() {
        // Once a quorum point is released, those it did not wait for are late, not missing.
        let label = if s.quorum > 0 && s.finished_at_ms > 0 { "late         " } else { "missing      " };
        println!("{label} {}", s.missing.join(", "));
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

/// A diagnosis's issues and recommendations, as lists.
pub fn print_diagnosis(issues: &[String], recommendations: &[String]) {
    println!("\nissues:");
    for i in issues {
        println!("  - {i}");
    }
    println!("recommendations:");
    for r in recommendations {
        println!("  - {r}");
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
                print_diagnosis(&d.issues, &d.recommendations);
            }
        }
        SyncCommand::ForceComplete(a) => {
            let s = a.operator.admin().await?.force_complete_sync(&a.id).await?;
            if a.operator.target.json {
                println!("{}", serde_json::to_string_pretty(&sync_json(&s))?);
            } else {
                println!("released {} waiting agent(s) at '{}'", s.arrived.len(), s.sync_id);
            }
        }
        SyncCommand::Cleanup(t) => {
            let removed = t.admin().await?.cleanup_sync_points().await?;
            if t.target.json {
                println!("{}", json!({"removed": removed}));
            } else {
                println!("removed {removed} finished sync point(s)");
            }
        }
    }
    Ok(())
}

/// Where the Admin API is and how to authenticate.
#[derive(Args, Clone)]
pub struct AdminTarget {
    #[command(flatten)]
    target: Target,
    /// The server's admin token.
    #[arg(long, env = "LOCKSTEP_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The Admin API's address, when the server serves it apart (`serve --admin-listen`).
    #[arg(long, env = "LOCKSTEP_ADMIN_ADDR")]
    admin_addr: Option<String>,
}

impl AdminTarget {
    async fn admin(&self) -> anyhow::Result<lockstep_client::AdminClient> {
        let addr = self.admin_addr.as_deref().unwrap_or(&self.target.addr);
        operator(&self.target, addr, self.token.as_deref()).await
    }
}

/// Where the agents' service is, and the admin token for the operators' actions it serves
/// (forcing and cleaning up sync points, retrying tasks).
#[derive(Args, Clone)]
pub struct OperatorTarget {
    #[command(flatten)]
    pub target: Target,
    /// The server's admin token.
    #[arg(long, env = "LOCKSTEP_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl OperatorTarget {
    pub async fn admin(&self) -> anyhow::Result<lockstep_client::AdminClient> {
        operator(&self.target, &self.target.addr, self.token.as_deref()).await
    }

    /// The server's sync monitor, as this operator.
    pub async fn systems(&self) -> anyhow::Result<lockstep_client::SystemsClient> {
        Ok(self.target.client().await?.systems(self.token.as_deref(), Some(&cli_actor()))?)
    }

    /// The server's intake, as this operator.
    pub async fn intake(&self) -> anyhow::Result<lockstep_client::IntakeClient> {
        Ok(self.target.client().await?.intake(self.token.as_deref(), Some(&cli_actor()))?)
    }
}

/// An operator's client on `addr`, named after the user running the command (for the audit log).
async fn operator(target: &Target, addr: &str, token: Option<&str>) -> anyhow::Result<lockstep_client::AdminClient> {
    Ok(target.client_at(addr).await?.admin(token, Some(&cli_actor()))?)
}

/// The operator's name in the audit log: the user running the command, or `cli`.
pub(crate) fn cli_actor() -> String {
    let actor = std::env::var("USER").ok().filter(|u| lockstep_core::name::validate("actor", u).is_ok());
    actor.unwrap_or_else(|| "cli".into())
}

#[derive(Args)]
pub struct CommandArgs {
    #[command(subcommand)]
    command: CommandCommand,
}

#[derive(Subcommand)]
enum CommandCommand {
    /// Pause an agent: hold its deliveries, refuse its publishes, state updates and sync arrivals.
    Pause(AgentArg),
    /// Resume a paused agent; its held deliveries follow.
    Resume(AgentArg),
    /// Close an agent's circuit breaker and forget its failures.
    Restart(AgentArg),
    /// Emergency stop: pause every agent at once.
    StopAll {
        /// Why, for the agents and the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Lift the emergency stop and every pause.
    ResumeAll(AdminTarget),
    /// Send a command to an agent and print its answer.
    Send {
        agent: String,
        command: String,
        /// Parameters, a JSON object.
        #[arg(long, default_value = "null")]
        params: String,
        /// How long to wait for the agent's answer, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[command(flatten)]
        admin: AdminTarget,
    },
}

#[derive(Args)]
struct AgentArg {
    agent: String,
    #[command(flatten)]
    admin: AdminTarget,
}

fn print_detail(json: bool, detail: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", json!({ "detail": detail }));
    } else {
        println!("{detail}");
    }
    Ok(())
}

pub async fn command(args: CommandArgs) -> anyhow::Result<()> {
    match args.command {
        CommandCommand::Pause(a) => {
            print_detail(a.admin.target.json, &a.admin.admin().await?.pause_agent(&a.agent).await?)
        }
        CommandCommand::Restart(a) => {
            print_detail(a.admin.target.json, &a.admin.admin().await?.restart_agent(&a.agent).await?)
        }
        CommandCommand::Resume(a) => {
            print_detail(a.admin.target.json, &a.admin.admin().await?.resume_agent(&a.agent).await?)
        }
        CommandCommand::StopAll { reason, admin } => {
            print_detail(admin.target.json, &admin.admin().await?.emergency_stop(&reason).await?)
        }
        CommandCommand::ResumeAll(admin) => print_detail(admin.target.json, &admin.admin().await?.resume_all().await?),
        CommandCommand::Send { agent, command, params, timeout_ms, admin } => {
            let params: Value = serde_json::from_str(&params).context("--params must be JSON (an object, or null)")?;
            let timeout = std::time::Duration::from_millis(timeout_ms);
            let result = admin.admin().await?.send_command(&agent, &command, &params, timeout).await?;
            if admin.target.json {
                println!("{}", json!({ "agent": agent, "command": command, "result": result }));
            } else {
                println!("{agent} answered {command}: {result}");
            }
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct BackupArgs {
    /// Where to write the copy, on the server's machine (a relative path is taken from the
    /// current directory): inside the server's backup directory (`serve --backup-dir`, by default
    /// its data directory). Nothing may exist there yet.
    #[arg(long)]
    to: std::path::PathBuf,
    #[command(flatten)]
    admin: AdminTarget,
}

/// Has the server write a consistent copy of its data while it runs.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let path = std::path::absolute(&args.to).with_context(|| format!("cannot resolve {}", args.to.display()))?;
    let path = path.to_str().with_context(|| format!("{} is not valid UTF-8", path.display()))?.to_owned();
    let bytes = args.admin.admin().await?.backup(&path).await?;
    if args.admin.target.json {
        println!("{}", serde_json::to_string_pretty(&json!({"path": path, "bytes": bytes}))?);
    } else {
        println!("backup written to {path} ({bytes} bytes); to restore, start a server on a data directory holding it as lockstep.db");
    }
    Ok(())
}

pub async fn status(args: AdminTarget) -> anyhow::Result<()> {
    let s = args.admin().await?.status().await?;
    if args.target.json {
        let paused: Vec<Value> =
            s.paused.iter().map(|p| json!({"namespace": p.namespace, "agent_id": p.agent_id})).collect();
        let v = json!({
            "agents": s.agents, "agents_by_status": s.agents_by_status, "paused": paused,
            "emergency_stop": s.emergency_stop, "emergency_actor": s.emergency_actor,
            "emergency_reason": s.emergency_reason, "emergency_since_ms": s.emergency_since_ms,
            "pending_commands": s.pending_commands, "published": s.published, "delivered": s.delivered,
            "dropped": s.dropped, "now_ms": s.now_ms,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let by_status: Vec<String> = s.agents_by_status.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "agents            {} ({})",
        s.agents,
        if by_status.is_empty() { "none".into() } else { by_status.join(", ") }
    );
    if s.emergency_stop {
        println!(
            "EMERGENCY STOP    by {} {} ms ago: {}",
            s.emergency_actor,
            s.now_ms.saturating_sub(s.emergency_since_ms),
            s.emergency_reason
        );
    }
    if !s.paused.is_empty() {
        let paused: Vec<&str> = s.paused.iter().map(|p| p.agent_id.as_str()).collect();
        println!("paused            {}", paused.join(", "));
    }
    println!("pending commands  {}", s.pending_commands);
    println!("messages          {} published, {} delivered, {} dropped", s.published, s.delivered, s.dropped);
    Ok(())
}

#[derive(Args)]
pub struct AuditArgs {
    /// How many of the most recent entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    admin: AdminTarget,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let log = args.admin.admin().await?.audit_log(args.limit).await?;
    if args.admin.target.json {
        let entries: Vec<Value> = log
            .entries
            .iter()
            .map(|e| {
                json!({"seq": e.seq, "at_ms": e.at_ms, "actor": e.actor, "command": e.command,
                       "command_id": e.command_id, "namespace": e.namespace, "target": e.target,
                       "params": e.params, "outcome": e.outcome, "detail": e.detail})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"entries": entries, "dropped": log.dropped}))?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = log
        .entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.at_ms.to_string(),
                e.actor.clone(),
                e.command.clone(),
                e.target.clone(),
                e.outcome.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    print!("{}", table::render(&["SEQ", "AT_MS", "ACTOR", "COMMAND", "TARGET", "OUTCOME", "DETAIL"], &rows));
    if log.dropped > 0 {
        println!("({} older entries no longer kept)", log.dropped);
    }
    Ok(())
}

pub async fn health(args: AdminTarget) -> anyhow::Result<()> {
    let h = args.admin().await?.health().await?;
    if args.target.json {
        let agents: Vec<Value> = h
            .agents
            .iter()
            .map(|a| {
                json!({"namespace": a.namespace, "agent_id": a.agent_id, "role": a.role, "status": a.status,
                       "issues": a.issues, "deliveries_succeeded": a.deliveries_succeeded,
                       "deliveries_failed": a.deliveries_failed, "success_ratio": a.success_ratio,
                       "ack_p50_ms": a.ack_p50_ms, "ack_p99_ms": a.ack_p99_ms, "queue_depth": a.queue_depth,
                       "queue_high_water": a.queue_high_water, "dropped": a.dropped, "breaker": a.breaker_state,
                       "breaker_since_ms": a.breaker_since_ms, "last_heartbeat_ms": a.last_heartbeat_ms,
                       "last_progress_ms": a.last_progress_ms})
            })
            .collect();
        let history: Vec<Value> = h.history.iter().map(|s| json!({"at_ms": s.at_ms, "score": s.score})).collect();
        let v = json!({"score": h.score, "healthy": h.healthy, "degraded": h.degraded, "stuck": h.stuck,
                       "unhealthy": h.unhealthy, "agents": agents, "history": history});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = h
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.clone(),
                a.status.clone(),
                format!("{:.1}", a.success_ratio * 100.0),
                a.ack_p50_ms.to_string(),
                a.ack_p99_ms.to_string(),
                format!("{}/{}", a.queue_depth, a.queue_high_water),
                a.dropped.to_string(),
                a.breaker_state.clone(),
                format!("{}", h.now_ms.saturating_sub(a.last_progress_ms)),
                a.issues.join("; "),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["AGENT", "HEALTH", "OK_%", "ACK_P50", "ACK_P99", "QUEUE/HIGH", "DROPPED", "BREAKER", "IDLE_MS", "ISSUES"],
            &rows
        )
    );
    let trend: Vec<String> =
        h.history.iter().rev().take(10).rev().map(|s| format!("{:.0}%", s.score * 100.0)).collect();
    println!(
        "system health {:.0}% ({} healthy, {} degraded, {} stuck, {} unhealthy); recent: {}",
        h.score * 100.0,
        h.healthy,
        h.degraded,
        h.stuck,
        h.unhealthy,
        if trend.is_empty() { "-".into() } else { trend.join(" ") }
    );
    Ok(())
}
