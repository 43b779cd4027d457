//! `lockstep bench`'s tick round scenario (`tick-round`): a client-driven round series of 100
//! participants, 99 answering at once and one hung (it takes its inputs and never answers). Each
//! round is timed with one clock (this process) from the driver's `OpenRound` call to a monitor
//! holding the merged result published on the series' topic. A round that asks the hung agent
//! closes at its timeout (target: p99 ≤ timeout + 5 ms); once the hung agent's breaker opens it is
//! skipped and the round closes when the 99 answered — then the bench replaces it with a fresh hung
//! agent, so that most rounds measure the timeout path.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use lockstep_client::{AgentOptions, Client, RoundParticipants, RoundSeriesSpec};
use serde_json::{json, Value};

/// The round timeout measured against.
pub const TIMEOUT_MS: u64 = 100;
/// How long the monitor waits for a result before the scenario fails.
const RESULT_WAIT: Duration = Duration::from_secs(30);

/// Round times: those that waited for the hung agent, and those that skipped it (isolated).
pub struct TickRounds {
    pub participants: usize,
    pub waited: Histogram<u64>,
    pub skipped: Histogram<u64>,
    pub elapsed: Duration,
    /// Answers of the answering participants that came too late for their round.
    pub late: u64,
}

/// Runs `rounds` rounds of `participants` agents (one of them hung) on the server at `addr`.
pub async fn measure(addr: &str, participants: usize, rounds: u64) -> anyhow::Result<TickRounds> {
    let client = Client::connect(addr).await?.with_namespace("bench-tick-round");
    let role = "bench-tick";
    let agents = crate::bench::register_all(&client, participants - 1, crate::bench::Link::Own, |j| {
        AgentOptions::new(format!("p-{j}"), role)
    })
    .await?;
    let mut answering = Vec::new();
    for agent in agents {
        let mut inputs = agent.rounds().context("round inputs are taken once")?;
        answering.push(tokio::spawn(async move {
            while let Some(input) = inputs.next().await {
                // An answer that came too late is refused (ROUND_NOT_OPEN): counted by the driver.
                let _ = input.answer(&json!({ "books": { agent.id(): input.round } })).await;
            }
            anyhow::Ok(())
        }));
    }
    let mut hung_n = 0;
    let mut hung = client.register(AgentOptions::new(format!("hung-{hung_n}"), role)).await?;
    let monitor = client.register(AgentOptions::new("monitor", "monitor").interests(["bench.ticks"])).await?;
    let mut results = monitor.deliveries().context("deliveries are taken once")?;
    let mut spec = RoundSeriesSpec::new("bench", RoundParticipants::Role(role.into()), TIMEOUT_MS, "bench.books");
    spec.topic = "bench.ticks".into();
    let rounds_api = client.rounds();
    rounds_api.create(&spec).await?;
    let (mut waited, mut skipped, mut late) = (crate::bench::hist(), crate::bench::hist(), 0);
    let start = Instant::now();
    for k in 1..=rounds {
        let opened = Instant::now();
        rounds_api.open("bench", &json!({ "k": k }), k).await?;
        let d = tokio::time::timeout(RESULT_WAIT, results.recv())
            .await
            .with_context(|| format!("no result of round {k} within {RESULT_WAIT:?}"))?
            .context("the monitor's session ended")?;
        let us = opened.elapsed().as_micros() as u64;
        let r: Value = serde_json::from_slice(&d.payload)?;
        anyhow::ensure!(r["round"] == json!(k), "result of round {} while timing round {k}", r["round"]);
        let answered = r["answered"].as_array().map_or(0, Vec::len);
        late += (participants - 1).saturating_sub(answered) as u64;
        if r["skipped"].as_array().is_some_and(|s| !s.is_empty()) {
            skipped.record(us.max(1))?;
            // Isolated by its breaker: a fresh hung agent takes its place.
            hung.close().await?;
            hung_n += 1;
            hung = client.register(AgentOptions::new(format!("hung-{hung_n}"), role)).await?;
        } else {
            waited.record(us.max(1))?;
        }
    }
    let elapsed = start.elapsed();
    rounds_api.remove("bench").await?;
    for a in answering {
        a.abort();
    }
    drop(hung);
    Ok(TickRounds { participants, waited, skipped, elapsed, late })
}
