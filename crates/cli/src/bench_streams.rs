//! `lockstep bench` row for event-time tick controllers:
//!
//! * `tick-controller-10`: 10 source agents publish events with their event time (the wall clock
//!   at the send) at 10,000 events/s in total; a controller (period 10 ms, lateness 5 ms, waiting
//!   for all 10 sources) aligns them, and a consumer receives the ticks. Each event's latency is
//!   from its publish to the delivery of its tick; the rule itself makes an event at time `t` of
//!   tick `k` wait until `(k+1)·period + lateness` (at most period + lateness). Target: p99 of the
//!   latency ≤ period + lateness + 2 ms; the note gives the p99 of the latency beyond the rule's
//!   wait too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockstep_client::{proto as v1, AgentOptions, Client};
use serde_json::Value;

use crate::bench::{hist, register_all, Row};

const PERIOD_MS: u64 = 10;
const LATENESS_MS: u64 = 5;
const SOURCES: usize = 10;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// 10 sources at `rate` events/s in total for `seconds`, through one controller.
pub async fn tick_controller(addr: &str, rate: u64, seconds: u64) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace("bench-ticks");
    let spec = v1::TickerSpec {
        id: "bench".into(),
        inputs: vec!["bench.events.>".into()],
        output: "bench.ticks".into(),
        period_ms: PERIOD_MS,
        lateness_ms: LATENESS_MS,
        idle_timeout_ms: 1_000,
        min_sources: SOURCES as u32,
        ..Default::default()
    };
    let streams = client.streams(std::env::var("LOCKSTEP_ADMIN_TOKEN").ok().as_deref(), Some("bench"))?;
    let _ = streams.remove(lockstep_client::StreamKind::Ticker, "bench").await;
    streams.create_ticker(spec).await?;
    let consumer = client.register(AgentOptions::new("consumer", "analytics").interests(["bench.ticks"])).await?;
    let mut ticks = consumer.deliveries().expect("taken once");
    let sources: Vec<Arc<_>> =
        register_all(&client, SOURCES, crate::bench::Link::Own, |j| AgentOptions::new(format!("s{j}"), "feed"))
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
    // One clock for send and receive: microseconds since `epoch`, carried in the payload.
    let epoch = Instant::now();
    let per_source = (rate / SOURCES as u64).max(1);
    let interval = Duration::from_micros(1_000_000 / per_source);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut publishers = tokio::task::JoinSet::new();
    for (j, s) in sources.iter().enumerate() {
        let s = s.clone();
        publishers.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let at = epoch.elapsed().as_micros() as u64;
                let payload = format!("{{\"us\":{at}}}");
                s.publish_at(&format!("bench.events.{j}"), payload, unix_ms()).await?;
                sent += 1;
            }
            // Past the end, every source moves on so that the last ticks close.
            s.publish_at(&format!("bench.events.{j}"), "{\"us\":0}", unix_ms() + PERIOD_MS + LATENESS_MS + 1).await?;
            anyhow::Ok(sent)
        });
    }
    let (mut total, mut wait_free) = (hist(), hist());
    let mut received = 0u64;
    let collect = async {
        loop {
            let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), ticks.recv()).await else { break };
            let now_us = epoch.elapsed().as_micros() as u64;
            let tick: Value = serde_json::from_slice(&d.payload)?;
            let end_ms = tick["end_ms"].as_u64().unwrap_or(0);
            for e in tick["events"].as_array().into_iter().flatten() {
                let sent_us = e["payload"]["us"].as_u64().unwrap_or(0);
                if sent_us == 0 {
                    continue;
                }
                received += 1;
                let latency = now_us.saturating_sub(sent_us).max(1);
                total.record(latency)?;
                // The rule's wait: until the tick's end plus the lateness, from the event's time.
                let event_us = e["event_time_ms"].as_u64().unwrap_or(0) * 1000;
                let release_us = (end_ms + LATENESS_MS) * 1000;
                let rule_wait = release_us.saturating_sub(event_us);
                wait_free.record(latency.saturating_sub(rule_wait).max(1))?;
            }
        }
        anyhow::Ok(())
    };
    let (collected, sent) = tokio::join!(collect, async {
        let mut sent = 0u64;
        while let Some(done) = publishers.join_next().await {
            sent += done??;
        }
        anyhow::Ok(sent)
    });
    collected?;
    let sent = sent?;
    let stats = streams.ticker("bench").await?.stats.unwrap_or_default();
    streams.remove(lockstep_client::StreamKind::Ticker, "bench").await?;
    let target_us = (PERIOD_MS + LATENESS_MS + 2) * 1000;
    let p99 = total.value_at_quantile(0.99);
    let met = if p99 <= target_us { "met" } else { "NOT met" };
    Ok(Row {
        scenario: "tick-controller-10".into(),
        n: SOURCES,
        rate: received as f64 / seconds.max(1) as f64,
        offered_rate: Some(rate as f64),
        p50_us: total.value_at_quantile(0.5),
        p99_us: p99,
        p999_us: total.value_at_quantile(0.999),
        lost: sent.saturating_sub(received),
        count: received,
        note: format!(
            "publish -> its tick delivered, period {PERIOD_MS} ms, lateness {LATENESS_MS} ms; target p99 <= {} ms: {met}; beyond the rule's wait: p50 {} us, p99 {} us; {} ticks, {} late dropped, {} forced",
            target_us / 1000,
            wait_free.value_at_quantile(0.5),
            wait_free.value_at_quantile(0.99),
            stats.ticks_emitted,
            stats.late_dropped,
            stats.forced,
        ),
    })
}
