//! `lockstep bench` row `history-replay`: a new subscriber asks for the whole history of a topic
//! retaining 100,000 messages of 256 bytes, and the rate is measured from its subscribe to its
//! holding the last replayed message (every topic sequence number checked once and in order). The
//! server runs in this process, fresh, with one retention rule; the replay is paced through the
//! subscriber's queue of `queue_capacity` (1024) messages like any delivery.

use std::time::{Duration, Instant};

use anyhow::Context;
use lockstep_client::{AgentOptions, Client, Replay};

use crate::bench::Row;

const PAYLOAD: usize = 256;
const TOPIC: &str = "bench.replay";

/// Runs `runs` replays of `messages` retained messages, each to a new subscriber.
pub async fn replay(messages: u64, runs: usize) -> anyhow::Result<Row> {
    let mut options = lockstep_server::Options::new("127.0.0.1:0".parse()?);
    options.engine.history.retain = vec![lockstep_core::history::RetainRule {
        pattern: TOPIC.into(),
        max_messages: messages,
        max_bytes: messages * (PAYLOAD as u64 + 64),
        max_topics: 1,
        ..Default::default()
    }];
    options.engine.validate().map_err(anyhow::Error::msg)?;
    let server = lockstep_server::start(options).await?;
    let client = Client::connect(server.local_addr().to_string()).await?;
    let publisher = client.register(AgentOptions::new("bench-publisher", "feed")).await?;
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    for _ in 1..messages {
        publisher.publish(TOPIC, payload.clone()).await?;
    }
    publisher.publish_confirmed(TOPIC, payload.clone()).await?;
    let mut rates = Vec::new();
    let mut first_ms = Vec::new();
    let mut lost = 0;
    for run in 0..runs {
        let agent = client.register(AgentOptions::new(format!("bench-late-{run}"), "late")).await?;
        let mut deliveries = agent.deliveries().context("deliveries taken once")?;
        let start = Instant::now();
        agent.subscribe(TOPIC, Replay::SinceSeq(1)).await?;
        let mut next = 1u64;
        let mut first = None;
        while next <= messages {
            let d = tokio::time::timeout(Duration::from_secs(60), deliveries.recv())
                .await
                .context("a replayed message within 60 s")?
                .context("the session ended")?;
            first.get_or_insert_with(|| start.elapsed());
            // Anything out of order or missing counts as lost.
            lost += d.topic_seq.saturating_sub(next);
            next = d.topic_seq + 1;
        }
        let elapsed = start.elapsed();
        rates.push(messages as f64 / elapsed.as_secs_f64().max(1e-9));
        first_ms.push(first.unwrap_or_default().as_secs_f64() * 1000.0);
        agent.close().await?;
    }
    publisher.close().await?;
    server.shutdown().await?;
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let row = Row {
        scenario: "history-replay".into(),
        n: 1,
        rate: median,
        offered_rate: None,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        lost,
        count: messages * runs as u64,
        note: format!(
            "{messages} retained messages of {PAYLOAD} B replayed to a new subscriber (subscribe → last held), \
             median of {runs} runs: {} messages/s; first message after {} ms",
            rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" / "),
            first_ms.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" / "),
        ),
    };
    eprintln!("{row:?}");
    Ok(row)
}
