//! `lockstep streams ...`: tick controllers and latency buffers from the command line — list them
//! with their counters, show one (with a controller's sources), create and remove them.

use clap::{Args, Subcommand};
use lockstep_client::{proto as v1, StreamKind, StreamsClient};
use serde_json::{json, Value};

use crate::admin::{cli_actor, Target};
use crate::table;

#[derive(Args)]
pub struct StreamsArgs {
    #[command(subcommand)]
    command: StreamsCommand,
}

/// Where the server is, and the admin token creating and removing needs (when it has one).
#[derive(Args, Clone)]
struct StreamsTarget {
    #[command(flatten)]
    target: Target,
    /// The server's admin token.
    #[arg(long, env = "LOCKSTEP_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl StreamsTarget {
    async fn client(&self) -> anyhow::Result<StreamsClient> {
        Ok(self.target.client().await?.streams(self.token.as_deref(), Some(&cli_actor()))?)
    }
}

#[derive(Subcommand)]
enum StreamsCommand {
    /// Tick controllers with their counters.
    Tickers(StreamsTarget),
    /// Latency buffers with their counters.
    Buffers(StreamsTarget),
    /// One tick controller: definition, counters, sources.
    Ticker {
        id: String,
        #[command(flatten)]
        target: StreamsTarget,
    },
    /// One latency buffer: definition and counters.
    Buffer {
        id: String,
        #[command(flatten)]
        target: StreamsTarget,
    },
    /// Create a tick controller (an operator's action).
    CreateTicker {
        id: String,
        /// Topic pattern of the events it takes (repeat for several).
        #[arg(long = "input", required = true)]
        inputs: Vec<String>,
        /// The topic its ticks are published on.
        #[arg(long)]
        output: String,
        #[arg(long)]
        period_ms: u64,
        #[arg(long, default_value_t = 0)]
        lateness_ms: u64,
        #[arg(long, default_value_t = 5_000)]
        idle_timeout_ms: u64,
        /// Report sources further apart than this (0: never).
        #[arg(long, default_value_t = 0)]
        max_skew_ms: u64,
        /// drop, next_tick or correction.
        #[arg(long, default_value = "drop")]
        late: String,
        /// No tick before this many sources were heard from.
        #[arg(long, default_value_t = 0)]
        min_sources: u32,
        #[command(flatten)]
        target: StreamsTarget,
    },
    /// Create a latency buffer (an operator's action).
    CreateBuffer {
        id: String,
        /// Topic pattern of the samples.
        #[arg(long)]
        topic: String,
        /// JSON pointer of the numeric field (e.g. /pose/x).
        #[arg(long)]
        pointer: String,
        #[arg(long)]
        cadence_ms: u64,
        #[arg(long, default_value_t = 0)]
        grace_ms: u64,
        /// hold_last, linear or constant_velocity.
        #[arg(long, default_value = "hold_last")]
        estimator: String,
        /// Output prefix: OUTPUT.provisional and OUTPUT.definitive.
        #[arg(long)]
        output: String,
        #[arg(long, default_value_t = 10)]
        max_provisional: u32,
        #[command(flatten)]
        target: StreamsTarget,
    },
    /// Remove a controller (`ticker`) or buffer (`buffer`) (an operator's action).
    Remove {
        /// ticker or buffer.
        kind: String,
        id: String,
        #[command(flatten)]
        target: StreamsTarget,
    },
}

fn ticker_json(t: &v1::TickerInfo) -> Value {
    let spec = t.spec.clone().unwrap_or_default();
    let s = t.stats.unwrap_or_default();
    json!({
        "id": spec.id, "inputs": spec.inputs, "output": spec.output, "period_ms": spec.period_ms,
        "lateness_ms": spec.lateness_ms, "idle_timeout_ms": spec.idle_timeout_ms, "max_skew_ms": spec.max_skew_ms,
        "late_policy": spec.late_policy, "min_sources": spec.min_sources,
        "stats": {
            "events": s.events, "ticks_emitted": s.ticks_emitted, "corrections": s.corrections,
            "late_dropped": s.late_dropped, "late_next_tick": s.late_next_tick, "forced": s.forced,
            "idle_reports": s.idle_reports, "skew_violations": s.skew_violations, "skew_ms": s.skew_ms,
            "refused": s.refused, "buffered_events": s.buffered_events, "buffered_bytes": s.buffered_bytes,
            "next_tick": s.next_tick, "watermark_ms": s.watermark_ms,
        },
        "sources": t.sources.iter().map(|src| json!({
            "publisher": src.publisher, "max_event_time_ms": src.max_event_time_ms, "watermark_ms": src.watermark_ms,
            "last_heard_ms": src.last_heard_ms, "idle": src.idle, "events": src.events, "lag_ms": src.lag_ms,
        })).collect::<Vec<_>>(),
    })
}

fn buffer_json(b: &v1::BufferInfo) -> Value {
    let spec = b.spec.clone().unwrap_or_default();
    let s = b.stats.unwrap_or_default();
    json!({
        "id": spec.id, "topic": spec.topic, "pointer": spec.pointer, "cadence_ms": spec.cadence_ms,
        "grace_ms": spec.grace_ms, "estimator": spec.estimator, "output": spec.output,
        "max_provisional": spec.max_provisional,
        "stats": {
            "samples": s.samples, "provisional": s.provisional, "settled": s.settled,
            "provisional_share": s.provisional_share, "mean_abs_error": s.mean_abs_error,
            "max_abs_error": s.max_abs_error, "invalid": s.invalid, "stale": s.stale,
            "last_value": s.last_value, "last_time_ms": s.last_time_ms, "outstanding": s.outstanding,
        },
    })
}

/// Prints `items` as a JSON array, or as a table of `header` with one `row` each.
fn print_list<T>(
    items: &[T],
    json: bool,
    to_json: fn(&T) -> Value,
    header: &[&str],
    row: fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&items.iter().map(to_json).collect::<Vec<_>>())?);
    } else {
        print!("{}", table::render(header, &items.iter().map(row).collect::<Vec<_>>()));
    }
    Ok(())
}

fn print_tickers(tickers: &[v1::TickerInfo], json: bool) -> anyhow::Result<()> {
    let header = ["ID", "PERIOD", "NEXT TICK", "EVENTS", "TICKS", "LATE D/N/C", "SOURCES", "SKEW"];
    print_list(tickers, json, ticker_json, &header, |t| {
        let (spec, s) = (t.spec.clone().unwrap_or_default(), t.stats.unwrap_or_default());
        let idle = t.sources.iter().filter(|s| s.idle).count();
        vec![
            spec.id,
            format!("{} ms", spec.period_ms),
            s.next_tick.to_string(),
            s.events.to_string(),
            s.ticks_emitted.to_string(),
            format!("{}/{}/{}", s.late_dropped, s.late_next_tick, s.corrections),
            format!("{} ({idle} idle)", t.sources.len()),
            s.skew_violations.to_string(),
        ]
    })
}

fn print_buffers(buffers: &[v1::BufferInfo], json: bool) -> anyhow::Result<()> {
    let header = ["ID", "SERIES", "ESTIMATOR", "SAMPLES", "PROVISIONAL", "MEAN ERR", "MAX ERR"];
    print_list(buffers, json, buffer_json, &header, |b| {
        let (spec, s) = (b.spec.clone().unwrap_or_default(), b.stats.unwrap_or_default());
        vec![
            spec.id,
            format!("{}{}", spec.topic, spec.pointer),
            spec.estimator,
            s.samples.to_string(),
            format!("{:.1}%", s.provisional_share * 100.0),
            format!("{:.4}", s.mean_abs_error),
            format!("{:.4}", s.max_abs_error),
        ]
    })
}

fn print_ack(detail: &str, json: bool) {
    if json {
        println!("{}", json!({ "detail": detail }));
    } else {
        println!("{detail}");
    }
}

pub async fn run(args: StreamsArgs) -> anyhow::Result<()> {
    match args.command {
        StreamsCommand::Tickers(t) => print_tickers(&t.client().await?.tickers().await?, t.target.json)?,
        StreamsCommand::Buffers(t) => print_buffers(&t.client().await?.buffers().await?, t.target.json)?,
        StreamsCommand::Ticker { id, target } => {
            print_tickers(&[target.client().await?.ticker(&id).await?], target.target.json)?
        }
        StreamsCommand::Buffer { id, target } => {
            print_buffers(&[target.client().await?.buffer(&id).await?], target.target.json)?
        }
        StreamsCommand::CreateTicker {
            id,
            inputs,
            output,
            period_ms,
            lateness_ms,
            idle_timeout_ms,
            max_skew_ms,
            late,
            min_sources,
            target,
        } => {
            let spec = v1::TickerSpec {
                namespace: String::new(),
                id,
                inputs,
                output,
                period_ms,
                lateness_ms,
                idle_timeout_ms,
                max_skew_ms,
                late_policy: late,
                min_sources,
            };
            print_ack(&target.client().await?.create_ticker(spec).await?, target.target.json);
        }
        StreamsCommand::CreateBuffer {
            id,
            topic,
            pointer,
            cadence_ms,
            grace_ms,
            estimator,
            output,
            max_provisional,
            target,
        } => {
            let spec = v1::BufferSpec {
                namespace: String::new(),
                id,
                topic,
                pointer,
                cadence_ms,
                grace_ms,
                estimator,
                output,
                max_provisional,
            };
            print_ack(&target.client().await?.create_buffer(spec).await?, target.target.json);
        }
        StreamsCommand::Remove { kind, id, target } => {
            let kind = match kind.as_str() {
                "ticker" => StreamKind::Ticker,
                "buffer" => StreamKind::Buffer,
                other => anyhow::bail!("'{other}' is neither ticker nor buffer"),
            };
            print_ack(&target.client().await?.remove(kind, &id).await?, target.target.json);
        }
    }
    Ok(())
}
