//! `lockstep context get|set|delete|list|history|watch`: shared context from the command line.

use clap::{Args, Subcommand};
use lockstep_client::{proto as v1, ContextEntry, ContextOp, ContextWrites, WriteOptions};
use serde_json::{json, Value};

use crate::admin::Target;
use crate::table;

#[derive(Args)]
pub struct ContextArgs {
    #[command(subcommand)]
    command: ContextCommand,
}

#[derive(Subcommand)]
enum ContextCommand {
    /// A key's value: the current one, or a retained version.
    Get {
        key: String,
        /// A retained version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Write a key: replace its value with JSON (or merge-patch it with --patch).
    Set {
        key: String,
        /// The value (or patch) as JSON text.
        value: String,
        /// Apply VALUE as an RFC 7386 merge patch instead of replacing.
        #[arg(long)]
        patch: bool,
        /// Compare-and-set: only if the key is at this version (0: only if it does not exist).
        #[arg(long)]
        expect: Option<u64>,
        /// Delete the key this many milliseconds after the write.
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key.
    Delete {
        key: String,
        /// Compare-and-set: only if the key is at this version.
        #[arg(long)]
        expect: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Every key under a prefix (default: all), current values.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[command(flatten)]
        target: Target,
    },
    /// A key's retained versions, oldest first.
    History {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Follow a key (or, with --prefix, every key under it): one line per change.
    Watch {
        key: String,
        /// Watch KEY and every key under it.
        #[arg(long)]
        prefix: bool,
        /// Resume from this version (0: the current values first).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many batches (default: follow until interrupted).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
}

fn entry_json(e: &ContextEntry) -> Value {
    json!({
        "key": e.key, "version": e.version, "value": e.value, "writer": e.writer, "at_ms": e.at_ms,
        "current_version": e.current_version, "patch": e.patch,
    })
}

fn print_entries(entries: &[ContextEntry], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&entries.iter().map(entry_json).collect::<Vec<_>>())?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![e.key.clone(), e.version.to_string(), e.writer.clone(), e.value.to_string()])
        .collect();
    print!("{}", table::render(&["KEY", "VERSION", "WRITER", "VALUE"], &rows));
    Ok(())
}

fn change_json(c: &v1::ContextChange) -> Value {
    let value = serde_json::from_str::<Value>(&c.value_json).unwrap_or(Value::Null);
    json!({
        "key": c.key, "base_version": c.base_version, "version": c.version, "deleted": c.deleted,
        "gap": c.gap, "value": value,
    })
}

pub async fn run(args: ContextArgs) -> anyhow::Result<()> {
    match args.command {
        ContextCommand::Get { key, version, target } => {
            let ctx = target.client().await?.context();
            let e = match version {
                Some(v) => ctx.get_version(&key, v).await?,
                None => ctx.get(&key).await?,
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&entry_json(&e))?);
            } else {
                println!("{} (version {}, by {})", serde_json::to_string_pretty(&e.value)?, e.version, e.writer);
            }
        }
        ContextCommand::Set { key, value, patch, expect, ttl_ms, target } => {
            serde_json::from_str::<Value>(&value).map_err(|e| anyhow::anyhow!("VALUE is not JSON: {e}"))?;
            let ctx = target.client().await?.context().with_writer("cli");
            let op = if patch { ContextOp::PatchJson(value) } else { ContextOp::SetJson(value) };
            let options = WriteOptions { expected_version: expect, ttl_ms, ..Default::default() };
            let w = ctx.write(&key, op, &options).await?;
            print_written(target.json, &key, w)?;
        }
        ContextCommand::Delete { key, expect, target } => {
            let ctx = target.client().await?.context().with_writer("cli");
            let options = WriteOptions { expected_version: expect, ..Default::default() };
            let w = ctx.write(&key, ContextOp::Delete(true), &options).await?;
            print_written(target.json, &key, w)?;
        }
        ContextCommand::List { prefix, target } => {
            let entries = target.client().await?.context().list(&prefix).await?;
            print_entries(&entries, target.json)?;
        }
        ContextCommand::History { key, target } => {
            let entries = target.client().await?.context().history(&key).await?;
            print_entries(&entries, target.json)?;
        }
        ContextCommand::Watch { key, prefix, from, count, target } => {
            let ctx = target.client().await?.context();
            let mut watch = if prefix { ctx.watch_prefix(&key, from).await? } else { ctx.watch(&key, from).await? };
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                let Some(batch) = watch.next().await else { break };
                let batch = batch?;
                seen += 1;
                if target.json {
                    let changes: Vec<Value> = batch.changes.iter().map(change_json).collect();
                    let line = json!({"reset": batch.reset, "resume_from": batch.resume_from, "changes": changes});
                    println!("{line}");
                    continue;
                }
                if batch.reset {
                    println!("(reset: the view starts afresh)");
                }
                for c in &batch.changes {
                    let what = if c.deleted {
                        "deleted".to_owned()
                    } else if c.base_version == 0 {
                        format!("= {}", c.value_json)
                    } else {
                        format!("patch from {}: {}", c.base_version, c.value_json)
                    };
                    println!("{} v{} {what}", c.key, c.version);
                }
                println!("(resume from {})", batch.resume_from);
            }
        }
    }
    Ok(())
}

fn print_written(json: bool, key: &str, w: lockstep_client::Written) -> anyhow::Result<()> {
    if json {
        println!("{}", json!({"key": key, "version": w.version, "previous_version": w.previous_version}));
    } else {
        println!("{key}: version {} (was {})", w.version, w.previous_version);
    }
    Ok(())
}
