//! `lockstep bench` rows for execution traces:
//!
//! * `trace-lookup-hit`: lookups of a stored trace (a 1 KiB JSON output, kept inline), one at a
//!   time, from a client of the namespace — the seed's "load a prior output without recomputing".
//!   Target: p99 ≤ 1 ms.
//! * `trace-get-or-claim-50`: rounds in which 50 agents ask `get_or_claim` for the same missing
//!   output at once; the one that gets the claim computes (nothing: it records at once) and
//!   records, the other 49 wait and receive the trace. Each round asserts the output was computed
//!   exactly once; the row's rate is rounds per second, its latencies are a round's (first ask to
//!   the last agent holding the output).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_client::{AgentOptions, Claim, Client, Lineage};
use serde_json::json;

use crate::bench::{hist, register_all, round_trips, Row};

/// Lookups of one stored trace, one at a time.
pub async fn lookup_hit(addr: &str, seconds: u64) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace("bench-traces");
    let agent = client.register(AgentOptions::new("tool", "tool")).await?;
    let input = json!({"query": "btc order book", "depth": 20});
    let output = json!({"levels": "x".repeat(1000)});
    agent.traces().record_json("market.snapshot", &input, &output, Lineage::default()).await?;
    let traces = client.traces();
    let mut row = round_trips("trace-lookup-hit", seconds, "lookup → the stored output (1 KiB JSON)", || async {
        let hit = traces.lookup("market.snapshot", &input).await?;
        anyhow::ensure!(hit.is_some(), "the stored trace was not found");
        Ok(())
    })
    .await?;
    let met = if row.p99_us <= 1000 { "met" } else { "NOT met" };
    row.note = format!("target p99 <= 1 ms: {met}; {}", row.note);
    Ok(row)
}

/// Rounds of `n` agents asking for one missing output at once.
pub async fn get_or_claim(addr: &str, n: usize, seconds: u64) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace("bench-claims");
    let agents: Vec<Arc<_>> =
        register_all(&client, n, crate::bench::Link::Shared, |j| AgentOptions::new(format!("a{j}"), "tool"))
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
    let mut h = hist();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut round = 0u64;
    while Instant::now() < deadline || round == 0 {
        let input = json!({"round": round});
        let computed = Arc::new(AtomicUsize::new(0));
        let began = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for a in &agents {
            let (a, input, computed) = (a.clone(), input.clone(), computed.clone());
            tasks.spawn(async move {
                match a.traces().get_or_claim("bench.compute", &input).await? {
                    Claim::Compute { .. } => {
                        computed.fetch_add(1, Ordering::SeqCst);
                        a.traces()
                            .record_json("bench.compute", &input, &json!({"r": input}), Lineage::default())
                            .await?;
                    }
                    Claim::Hit(t) => anyhow::ensure!(t.json()? == json!({"r": input}), "another output arrived"),
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let computed = computed.load(Ordering::SeqCst);
        anyhow::ensure!(computed == 1, "round {round}: the output was computed {computed} times, not once");
        h.record((began.elapsed().as_micros() as u64).max(1))?;
        round += 1;
    }
    Ok(Row {
        scenario: format!("trace-get-or-claim-{n}"),
        n,
        rate: round as f64 / start.elapsed().as_secs_f64().max(1e-9),
        offered_rate: None,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        lost: 0,
        count: round,
        note: format!(
            "{round} rounds of {n} agents asking for one missing output at once, each computed exactly once (checked); rate: rounds/s, {:.0} answers/s",
            round as f64 * n as f64 / start.elapsed().as_secs_f64().max(1e-9)
        ),
    })
}
