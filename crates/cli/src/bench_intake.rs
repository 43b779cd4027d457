//! `lockstep bench` rows `intake-validation-*`: routing throughput of a 256-byte JSON record from
//! one publisher to one subscriber, on fresh in-process servers that differ only in their intake
//! rule set: none (`off`), a JSON Schema on the topic (`schema`), and the schema with a route that
//! categorises every record onto `market_data.<symbol>` (`categorise`). The configurations
//! alternate (off, schema, categorise, categorise, schema, off, ...) so that drift on a shared
//! machine weighs on all alike; each row is the median of its runs, and notes its rate as a share
//! of `off`'s (target: validation costs at most 30 % of throughput, i.e. `schema` at least 70 %).
//!
//! The publisher keeps at most `WINDOW` records ahead of what the subscriber has received, so that
//! the subscriber's queue (1024) never drops one, and waits for room without spinning (a spinning
//! publisher would take a core from the server it measures): the rate is records delivered per
//! second, from the first publish to the last delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lockstep_client::{AgentOptions, Client};
use serde_json::json;

use crate::bench::Row;

const TOPIC: &str = "intake";
const RECORD_BYTES: usize = 256;
const WINDOW: usize = 512;
/// The target: with a schema, at least this share of the throughput without.
const TARGET: f64 = 0.7;

/// A 256-byte record as a market data feed publishes it.
fn record(i: u64) -> Vec<u8> {
    let mut r = json!({"kind": "tick", "symbol": "BTC", "px": 64000.5 + i as f64, "qty": 1.25, "seq": i, "pad": ""});
    let short = RECORD_BYTES - r.to_string().len();
    r["pad"] = json!("x".repeat(short));
    let bytes = r.to_string().into_bytes();
    debug_assert_eq!(bytes.len(), RECORD_BYTES);
    bytes
}

fn rules(with_route: bool) -> lockstep_core::intake::RuleSet {
    let schema = json!({
        "type": "object",
        "required": ["kind", "symbol", "px", "qty", "seq"],
        "properties": {
            "kind": {"type": "string", "enum": ["tick", "fill", "risk", "scan"]},
            "symbol": {"type": "string", "pattern": "^[A-Z]{2,6}$"},
            "px": {"type": "number", "minimum": 0},
            "qty": {"type": "number", "exclusiveMinimum": 0},
            "seq": {"type": "integer", "minimum": 0},
            "pad": {"type": "string"}
        }
    });
    let routes = if with_route {
        json!([{"topic": TOPIC, "rules": [
            {"name": "market", "when": [{"pointer": "/kind", "equals": "tick"}], "target": "market_data.{/symbol}"}
        ]}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({"schemas": [{"topic": TOPIC, "schema": schema}], "routes": routes}))
        .expect("a valid rule set")
}

/// One run: `records` records through a fresh server with `set` (none: no intake rules).
async fn run(set: Option<lockstep_core::intake::RuleSet>, records: u64) -> anyhow::Result<f64> {
    let mut options = lockstep_server::Options::new("127.0.0.1:0".parse()?);
    if let Some(set) = set {
        (options.engine.intake.schemas, options.engine.intake.routes) = (set.schemas, set.routes);
    }
    options.engine.validate().map_err(anyhow::Error::msg)?;
    let server = lockstep_server::start(options).await?;
    let client = Client::connect(server.local_addr().to_string()).await?;
    let sink =
        client.register(AgentOptions::new("bench-sink", "analytics").interests([TOPIC, "market_data.>"])).await?;
    let publisher = client.register(AgentOptions::new("bench-feed", "feed")).await?;
    let mut deliveries = sink.deliveries().context("deliveries taken once")?;
    let received = Arc::new(AtomicU64::new(0));
    // A permit per record the publisher may still send; each delivery gives one back.
    let room = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let (counter, freed) = (received.clone(), room.clone());
    let reader = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) < records {
            match tokio::time::timeout(Duration::from_secs(30), deliveries.recv()).await {
                Ok(Some(_)) => counter.fetch_add(1, Ordering::Relaxed),
                _ => break,
            };
            freed.add_permits(1);
        }
        // The publisher is not left waiting for room if the records stopped coming.
        freed.close();
    });
    let payloads: Vec<bytes::Bytes> = (0..64).map(|i| bytes::Bytes::from(record(i))).collect();
    let start = Instant::now();
    for i in 0..records {
        let Ok(permit) = room.acquire().await else { break };
        permit.forget();
        publisher.publish(TOPIC, payloads[(i % 64) as usize].clone()).await?;
    }
    reader.await?;
    let elapsed = start.elapsed();
    let got = received.load(Ordering::Relaxed);
    anyhow::ensure!(got == records, "{got} of {records} records delivered");
    anyhow::ensure!(publisher.take_errors().is_empty(), "a record was refused");
    publisher.close().await?;
    sink.close().await?;
    server.shutdown().await?;
    Ok(records as f64 / elapsed.as_secs_f64().max(1e-9))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The three rows, from `rounds` rounds of the three configurations of `records` records each.
pub async fn rows(records: u64, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let names = ["off", "schema", "categorise"];
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        // Forward then backward, so that no configuration always runs first.
        let order: [usize; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for c in order {
            let set = match c {
                0 => None,
                1 => Some(rules(false)),
                _ => Some(rules(true)),
            };
            let rate = run(set, records).await?;
            eprintln!("intake-validation-{}: {rate:.0} records/s", names[c]);
            rates[c].push(rate);
        }
    }
    let off = median(rates[0].clone());
    Ok((0..3)
        .map(|c| {
            let rate = median(rates[c].clone());
            let share = rate / off;
            let each = rates[c].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
            let verdict = match c {
                0 => String::new(),
                1 => format!("; target ≥ {:.0} %: {}", TARGET * 100.0, if share >= TARGET { "met" } else { "NOT met" }),
                _ => String::new(),
            };
            Row {
                scenario: format!("intake-validation-{}", names[c]),
                n: 1,
                rate,
                offered_rate: None,
                p50_us: 0,
                p99_us: 0,
                p999_us: 0,
                lost: 0,
                count: records * rates[c].len() as u64,
                note: format!(
                    "{RECORD_BYTES} B JSON records, 1 publisher → 1 subscriber, median of {} runs ({each}); \
                     {:.1} % of off{verdict}",
                    rates[c].len(),
                    share * 100.0
                ),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_256_bytes_and_meet_the_schema() {
        let set = rules(true);
        let limits = lockstep_core::intake::IntakeSettings::default();
        let mut intake = lockstep_core::intake::Intake::compile(set, 1, &limits, 256).unwrap();
        for i in [0, 1, 63, 1_000_000] {
            let r = record(i);
            assert_eq!(r.len(), RECORD_BYTES);
            let routed = intake.take(0, ("ns", "p"), TOPIC, &r, &limits, 256).unwrap().unwrap();
            assert_eq!(routed.topic, "market_data.btc");
        }
    }
}
