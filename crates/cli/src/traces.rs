//! `lockstep traces stats|show|lineage`: execution traces from the command line.

use clap::{Args, Subcommand};
use lockstep_client::{Trace, TraceInfo};
use serde_json::{json, Value};

use crate::admin::Target;
use crate::table;

#[derive(Args)]
pub struct TracesArgs {
    #[command(subcommand)]
    command: TracesCommand,
}

#[derive(Subcommand)]
enum TracesCommand {
    /// The store's counters: traces, bytes, hits, misses, evictions, claims and waiters.
    Stats {
        #[command(flatten)]
        target: Target,
    },
    /// One trace: its tool, input, producer, timings, lineage and output.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// What a trace was computed from (parents, context versions) and what was computed from it.
    Lineage {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A trace's description as JSON (the input parsed back from its canonical text).
fn info_json(i: &TraceInfo) -> Value {
    json!({
        "namespace": i.namespace, "id": i.id, "tool": i.tool,
        "input": serde_json::from_str::<Value>(&i.input_json).unwrap_or(Value::Null),
        "kind": if i.json { "json" } else { "bytes" }, "size": i.size, "sha256": i.sha256,
        "producer": i.producer, "recorded_at_ms": i.recorded_at_ms, "duration_ms": i.duration_ms,
        "parents": i.parents, "pins": i.pins,
        "context": i.context.iter().map(|c| json!({"key": c.key, "version": c.version})).collect::<Vec<_>>(),
    })
}

/// The output as JSON when it is JSON, else as text when it is UTF-8, else its size.
fn output_json(t: &Trace) -> Value {
    if t.info.json {
        if let Ok(v) = t.json() {
            return v;
        }
    }
    match std::str::from_utf8(&t.output) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "bytes": t.output.len() }),
    }
}

pub async fn run(args: TracesArgs) -> anyhow::Result<()> {
    match args.command {
        TracesCommand::Stats { target } => {
            let s = target.client().await?.traces().stats().await?;
            let fields = [
                ("traces", s.traces),
                ("bytes", s.bytes),
                ("hits", s.hits),
                ("misses", s.misses),
                ("evictions", s.evictions),
                ("recorded", s.recorded),
                ("claims", s.claims),
                ("waiters", s.waiters),
                ("pinned", s.pinned),
            ];
            if target.json {
                let map: serde_json::Map<String, Value> =
                    fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
                println!("{}", serde_json::to_string_pretty(&map)?);
            } else {
                let rows: Vec<Vec<String>> = fields.iter().map(|(k, v)| vec![k.to_string(), v.to_string()]).collect();
                print!("{}", table::render(&["COUNTER", "VALUE"], &rows));
            }
        }
        TracesCommand::Show { id, target } => {
            let t = target.client().await?.traces().get(&id).await?;
            let mut v = info_json(&t.info);
            v["output"] = output_json(&t);
            if target.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let i = &t.info;
                println!("trace {} ({} on {})", i.id, i.tool, i.input_json);
                println!("  by {} at {} ms, took {} ms", i.producer, i.recorded_at_ms, i.duration_ms);
                println!("  output: {} bytes, sha256 {}", i.size, i.sha256);
                println!("  parents: {}", if i.parents.is_empty() { "-".into() } else { i.parents.join(", ") });
                println!("{}", serde_json::to_string_pretty(&v["output"])?);
            }
        }
        TracesCommand::Lineage { id, target } => {
            let l = target.client().await?.traces().lineage(&id).await?;
            if target.json {
                let v = json!({
                    "trace": l.trace.as_ref().map(info_json),
                    "parents": l.parents.iter().map(|p| json!({"id": p.id, "stored": p.stored})).collect::<Vec<_>>(),
                    "context": l.context.iter().map(|c| json!({"key": c.key, "version": c.version})).collect::<Vec<_>>(),
                    "children": l.children,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut rows = Vec::new();
                for p in &l.parents {
                    let state = if p.stored { "stored" } else { "evicted" };
                    rows.push(vec!["computed from".into(), p.id.clone(), state.into()]);
                }
                for c in &l.context {
                    rows.push(vec!["read context".into(), c.key.clone(), format!("version {}", c.version)]);
                }
                for c in &l.children {
                    rows.push(vec!["used by".into(), c.clone(), "stored".into()]);
                }
                print!("{}", table::render(&["RELATION", "TRACE / KEY", "STATE"], &rows));
            }
        }
    }
    Ok(())
}
