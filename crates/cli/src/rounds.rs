//! `lockstep rounds list|show`: tick round series and their retained rounds from the command line.

use clap::{Args, Subcommand};
use lockstep_client::proto as v1;
use serde_json::{json, Value};

use crate::admin::Target;
use crate::table;

#[derive(Args)]
pub struct RoundsArgs {
    #[command(subcommand)]
    command: RoundsCommand,
}

#[derive(Subcommand)]
enum RoundsCommand {
    /// Round series of the namespace, in name order, with their last round.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// One series with its retained rounds and its open one (or one round, with --round).
    Show {
        series: String,
        /// Only this round (0: the last opened).
        #[arg(long)]
        round: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
}

fn participants(spec: &v1::RoundSeriesSpec) -> String {
    if spec.agents.is_empty() {
        format!("role {}", spec.role)
    } else {
        spec.agents.join(",")
    }
}

/// A series as `--json` prints it.
fn series_json(s: &v1::RoundSeriesInfo) -> Value {
    let spec = s.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name, "agents": spec.agents, "role": spec.role, "timeout_ms": spec.timeout_ms,
        "context_key": spec.context_key, "topic": spec.topic, "cadence_ms": spec.cadence_ms,
        "merge_order": spec.merge_order, "created_at_ms": s.created_at_ms, "last_round": s.last_round,
        "next_tick_ms": s.next_tick_ms, "open_round": s.open_round.as_ref().map(|r| r.round),
    })
}

/// A round as `--json` prints it.
fn round_json(r: &v1::RoundInfo) -> Value {
    json!({
        "series": r.series, "round": r.round, "open": r.open, "driver": r.driver,
        "opened_at_ms": r.opened_at_ms, "deadline_ms": r.deadline_ms, "closed_at_ms": r.closed_at_ms,
        "closing": r.closing, "participants": r.participants,
        "answered": r.answered.iter().map(|a| json!({"agent": a.agent, "after_ms": a.after_ms})).collect::<Vec<_>>(),
        "missed": r.missed.iter().map(|m| json!({"agent": m.agent, "why": m.why})).collect::<Vec<_>>(),
        "skipped": r.skipped, "waiting": r.waiting, "context_version": r.context_version,
        "merge_error": r.merge_error,
    })
}

fn round_row(r: &v1::RoundInfo) -> Vec<String> {
    let state = if r.open { "open".to_owned() } else { r.closing.clone() };
    let took = if r.open { String::new() } else { format!("{} ms", r.closed_at_ms.saturating_sub(r.opened_at_ms)) };
    let missed: Vec<String> = r.missed.iter().map(|m| format!("{} ({})", m.agent, m.why)).collect();
    let answered: Vec<&str> = r.answered.iter().map(|a| a.agent.as_str()).collect();
    vec![r.round.to_string(), state, took, answered.join(","), missed.join(", "), r.context_version.to_string()]
}

const ROUND_HEADERS: [&str; 6] = ["ROUND", "STATE", "TOOK", "ANSWERED", "MISSED", "CONTEXT VERSION"];

pub async fn run(args: RoundsArgs) -> anyhow::Result<()> {
    match args.command {
        RoundsCommand::List { target } => {
            let list = target.client().await?.rounds().list().await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&list.iter().map(series_json).collect::<Vec<_>>())?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    let spec = s.spec.clone().unwrap_or_default();
                    let driver =
                        if spec.cadence_ms > 0 { format!("every {} ms", spec.cadence_ms) } else { "clients".into() };
                    vec![
                        spec.name.clone(),
                        participants(&spec),
                        driver,
                        format!("{} ms", spec.timeout_ms),
                        spec.context_key.clone(),
                        s.last_round.to_string(),
                        s.open_round.as_ref().map(|r| r.round.to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            let headers = ["SERIES", "PARTICIPANTS", "DRIVEN BY", "TIMEOUT", "CONTEXT KEY", "LAST ROUND", "OPEN"];
            print!("{}", table::render(&headers, &rows));
        }
        RoundsCommand::Show { series, round: Some(round), target } => {
            let r = target.client().await?.rounds().round(&series, round).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&round_json(&r))?);
            } else {
                print!("{}", table::render(&ROUND_HEADERS, &[round_row(&r)]));
                if !r.skipped.is_empty() {
                    println!("skipped (isolated or paused): {}", r.skipped.join(", "));
                }
                if !r.waiting.is_empty() {
                    println!("waiting for: {}", r.waiting.join(", "));
                }
            }
        }
        RoundsCommand::Show { series, round: None, target } => {
            let s = target.client().await?.rounds().series(&series).await?;
            let rounds: Vec<&v1::RoundInfo> = s.retained.iter().chain(s.open_round.as_ref()).collect();
            if target.json {
                let mut out = series_json(&s);
                out["rounds"] = rounds.iter().map(|r| round_json(r)).collect::<Vec<_>>().into();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let spec = s.spec.clone().unwrap_or_default();
                println!(
                    "series {} — {}, timeout {} ms, merged into {} ({}), last round {}",
                    spec.name,
                    participants(&spec),
                    spec.timeout_ms,
                    spec.context_key,
                    spec.merge_order,
                    s.last_round
                );
                let rows: Vec<Vec<String>> = rounds.iter().map(|r| round_row(r)).collect();
                print!("{}", table::render(&ROUND_HEADERS, &rows));
            }
        }
    }
    Ok(())
}
