//! `lockstep bench`'s sync monitor scenario (`systems`), on a fresh server of its own keeping its
//! data in SQLite (the default):
//!
//! * **the graph**: 10,000 systems and 20,000 dependencies — 9,900 systems with a 1-hour cadence
//!   (and a 5-minute tolerance) in 100 pipelines of 99, each system fed by two of the ten before it
//!   in its pipeline (the second by the first), and 100 *canaries* (3-second cadence, never
//!   reported on) each feeding five of them across pipelines (`--quick`: a tenth of each). Then
//!   again on a *dense* graph (`systems-dense-*`, not with `--quick`): each system from the 100th
//!   fed by two of the 500 before it, so a change reaches thousands of systems;
//! * **ingestion**: sync events at a fixed 1,000 per second (`--quick`: 200) for the run's seconds,
//!   on random systems, with latency and drift in mixed units, 1 % of them `failed` (each moves
//!   the system's risk and propagates it downstream); each timed from the call to its answer,
//!   which comes once the event is kept and its risk propagated;
//! * **freshness**: each canary goes stale by itself while the load runs; timed from when it was
//!   due (its registration + cadence, by the server's clock) to an agent holding the `opened`
//!   incident published on `systems.incidents`, and, for the first ten, to a `Show` of one of its
//!   downstream systems answering with the inherited risk;
//! * **memory**: the server's resident memory once the graph is built and after the load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use lockstep_client::systems::{Kind, Measure, Report, Status, SystemSpec};
use lockstep_client::{AgentOptions, Client, SystemsClient};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::bench::{hist, process_usage, Row, UnderTest};

/// The scenario's size: the full one, or a tenth (`--quick`), and the graph's shape.
#[derive(Clone, Copy)]
pub struct Scale {
    /// Systems reported on.
    regular: usize,
    /// Systems nobody reports on, which go stale while the load runs.
    canaries: usize,
    /// Events per second.
    rate: u64,
    /// One graph across every system (each fed by two of the 500 before it: a change reaches
    /// thousands of systems) instead of pipelines of 99.
    dense: bool,
}

impl Scale {
    pub const FULL: Scale = Scale { regular: 9_900, canaries: 100, rate: 1_000, dense: false };
    pub const DENSE: Scale = Scale { dense: true, ..Scale::FULL };
    pub const QUICK: Scale = Scale { regular: 990, canaries: 10, rate: 200, dense: false };

    /// The rows' names start with this.
    fn name(self) -> &'static str {
        if self.dense {
            "systems-dense"
        } else {
            "systems"
        }
    }
}

/// Upstreams of each regular system (but the first of a pipeline, and the second, which has one).
const UPSTREAMS: usize = 2;
/// Systems per pipeline, and how far back in it a system's upstreams are.
const PIPELINE: usize = 99;
const PIPELINE_WINDOW: usize = 10;
/// How far back a system's upstreams are in the dense graph (from its 100th system).
const DENSE_WINDOW: usize = 500;
/// Downstreams of each canary.
const CANARY_FANOUT: usize = 5;
const CANARY_CADENCE_MS: u64 = 3_000;
/// Calls in flight while the graph is built.
const SETUP_CONCURRENCY: usize = 32;
/// Canaries whose downstream risk is read when they go stale.
const RISK_PROBES: usize = 10;
/// How long after the load the bench waits for canaries not yet seen stale.
const STALE_WAIT: Duration = Duration::from_secs(30);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A system of `cadence_ms` with `tolerance_ms` (the reported drifts, up to 2 minutes, stay within
/// the regular systems' 5 minutes: their risk moves with failures only).
fn spec(name: String, cadence_ms: u64, tolerance_ms: u64) -> SystemSpec {
    SystemSpec { name, kind: Kind::Dataset, cadence_ms, tolerance_ms, ..Default::default() }
}

fn regular(i: usize) -> String {
    format!("sys-{i:05}")
}

fn canary(i: usize) -> String {
    format!("canary-{i:03}")
}

/// Runs `call` on each item with at most [`SETUP_CONCURRENCY`] in flight.
async fn all<T, F>(items: Vec<T>, call: impl Fn(T) -> F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = Result<(), lockstep_client::Error>> + Send + 'static,
{
    let calls: Vec<BoxFuture<'static, Result<(), lockstep_client::Error>>> =
        items.into_iter().map(|item| call(item).boxed()).collect();
    stream::iter(calls).buffer_unordered(SETUP_CONCURRENCY).try_collect::<Vec<()>>().await?;
    Ok(())
}

/// Dependencies as (upstream, downstream).
type Edges = Vec<(String, String)>;

/// The graph's edges: the regular ones, then the canaries'.
fn edges(scale: Scale, rng: &mut rand::rngs::StdRng) -> (Edges, Edges) {
    let mut regular_edges = Vec::new();
    for j in 0..scale.regular {
        // Where j's upstreams may be: the systems before it in its pipeline (or the graph).
        let first = if scale.dense {
            if j < 100 {
                continue;
            }
            j.saturating_sub(DENSE_WINDOW)
        } else {
            let start = j - j % PIPELINE;
            start.max(j.saturating_sub(PIPELINE_WINDOW))
        };
        let wanted = UPSTREAMS.min(j - first);
        let mut ups: Vec<usize> = Vec::new();
        while ups.len() < wanted {
            let u = rng.random_range(first..j);
            if !ups.contains(&u) {
                ups.push(u);
            }
        }
        regular_edges.extend(ups.into_iter().map(|u| (regular(u), regular(j))));
    }
    let mut canary_edges = Vec::new();
    for c in 0..scale.canaries {
        for k in 0..CANARY_FANOUT {
            canary_edges.push((canary(c), regular((c * 97 + k * 2_477) % scale.regular)));
        }
    }
    (regular_edges, canary_edges)
}

/// The scenario's rows, and its figures as JSON.
pub async fn measure(scale: Scale, seconds: u64) -> anyhow::Result<(Vec<Row>, Value)> {
    let dir = std::env::temp_dir().join(format!("lockstep-bench-{}-systems", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (server, addr) = UnderTest::spawn(&["--data-dir", dir.to_str().context("a UTF-8 path")?]).await?;
    let result = run(scale, &server, &addr, seconds).await;
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(scale: Scale, server: &UnderTest, addr: &str, seconds: u64) -> anyhow::Result<(Vec<Row>, Value)> {
    let pid = server.pid().context("the server runs in its own process")?;
    let client = Client::connect(addr).await?;
    let ops = client.systems(None, Some("bench"))?;
    ops.list(false).await?;
    let (rss_idle, _) = process_usage(pid)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let (regular_edges, canary_edges) = edges(scale, &mut rng);

    let built = Instant::now();
    let register = |cadence_ms: u64, tolerance_ms: u64| {
        let ops = ops.clone();
        move |name: String| {
            let ops = ops.clone();
            async move { ops.register(&spec(name, cadence_ms, tolerance_ms)).await.map(drop) }
        }
    };
    let depend = |weight: f64| {
        let ops = ops.clone();
        move |(u, d): (String, String)| {
            let ops = ops.clone();
            async move { ops.depend(&u, &d, weight).await.map(drop) }
        }
    };
    all((0..scale.regular).map(regular).collect(), register(3_600_000, 300_000))
        .await
        .context("registering the systems")?;
    all(regular_edges, depend(0.8)).await.context("declaring the dependencies")?;
    let build_time = built.elapsed();

    // Who hears of incidents, from before the canaries exist.
    let listener =
        client.register(AgentOptions::new("bench-incidents", "monitor").interests(["systems.incidents"])).await?;
    let mut incidents = listener.deliveries().context("deliveries are taken once")?;
    let stale_seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let reader = {
        let stale_seen = stale_seen.clone();
        tokio::spawn(async move {
            while let Some(d) = incidents.recv().await {
                let at = unix_ms();
                let v: Value = serde_json::from_slice(&d.payload).unwrap_or_default();
                let system = v["incident"]["system"].as_str().map(str::to_owned);
                if let (true, Some(system)) = (v["change"] == "opened" && v["incident"]["cause"] == "stale", system) {
                    stale_seen.lock().await.entry(system).or_insert(at);
                }
            }
        })
    };
    all((0..scale.canaries).map(canary).collect(), register(CANARY_CADENCE_MS, 0)).await?;
    all(canary_edges.clone(), depend(1.0)).await?;
    let systems = ops.list(false).await?;
    let deps = ops.dependencies().await?.len();
    anyhow::ensure!(systems.len() == scale.regular + scale.canaries, "{} systems listed", systems.len());
    let due: HashMap<String, u64> = systems
        .iter()
        .filter(|s| s.spec.name.starts_with("canary-"))
        .map(|s| (s.spec.name.clone(), s.registered_at + CANARY_CADENCE_MS))
        .collect();
    let (rss_graph, _) = process_usage(pid)?;

    // The risk probes: a canary's first downstream, read as soon as the canary is seen stale.
    let probes = tokio::spawn(risk_probes(ops.clone(), stale_seen.clone(), canary_edges.clone(), due.clone()));

    let (ingest, lost, elapsed) = ingest(scale, &ops, seconds, &mut rng).await?;
    let (rss_after, _) = process_usage(pid)?;
    // A canary due near the end of the load may be heard of after it.
    let waited = Instant::now();
    while stale_seen.lock().await.len() < scale.canaries && waited.elapsed() < STALE_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let risk = probes.await??;
    reader.abort();
    let seen = stale_seen.lock().await.clone();
    let mut freshness = hist();
    for (system, at) in &seen {
        if let Some(d) = due.get(system) {
            freshness.record(at.saturating_sub(*d).max(1) * 1_000)?;
        }
    }
    listener.close().await?;

    let mib = |b: u64| b as f64 / 1_048_576.0;
    let sent = ingest.len() + lost;
    let rows = vec![
        Row {
            scenario: format!("{}-ingest", scale.name()),
            n: scale.regular + scale.canaries,
            rate: ingest.len() as f64 / elapsed.as_secs_f64(),
            offered_rate: Some(scale.rate as f64),
            p50_us: ingest.value_at_quantile(0.5),
            p99_us: ingest.value_at_quantile(0.99),
            p999_us: ingest.value_at_quantile(0.999),
            lost,
            count: ingest.len(),
            note: format!(
                "report → answered (kept, risk propagated); {deps} dependencies, 1 % failed; server RSS {:.0} MiB with the graph, {:.0} MiB after the load ({:.0} MiB idle)",
                mib(rss_graph),
                mib(rss_after),
                mib(rss_idle)
            ),
        },
        Row {
            scenario: format!("{}-freshness", scale.name()),
            n: scale.canaries,
            rate: seen.len() as f64,
            offered_rate: None,
            p50_us: freshness.value_at_quantile(0.5),
            p99_us: freshness.value_at_quantile(0.99),
            p999_us: freshness.max(),
            lost: (scale.canaries - seen.len().min(scale.canaries)) as u64,
            count: freshness.len(),
            note: format!(
                "canary due (registration + {CANARY_CADENCE_MS} ms) → its stale incident received, during the load; p999 column is the max. Downstream risk read by Show: p50 {} ms, max {} ms after due ({} probes)",
                risk.value_at_quantile(0.5) / 1_000,
                risk.max() / 1_000,
                risk.len()
            ),
        },
    ];
    let v = json!({
        "graph": if scale.dense { "dense" } else { "pipelines" },
        "systems": scale.regular + scale.canaries,
        "dependencies": deps,
        "build_seconds": build_time.as_secs_f64(),
        "events_sent": sent,
        "rss_idle_bytes": rss_idle,
        "rss_graph_bytes": rss_graph,
        "rss_after_bytes": rss_after,
        "stale_detected": seen.len(),
        "freshness_max_ms": freshness.max() / 1_000,
        "risk_probe_max_ms": risk.max() / 1_000,
    });
    Ok((rows, v))
}

/// Events at the scale's rate for `seconds`: their answer times, how many failed, and how long it
/// took.
async fn ingest(
    scale: Scale,
    ops: &SystemsClient,
    seconds: u64,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<(Histogram<u64>, u64, Duration)> {
    let total = scale.rate * seconds;
    let times = Arc::new(Mutex::new(hist()));
    let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / scale.rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(total as usize);
    for k in 0..total {
        interval.tick().await;
        let i = rng.random_range(0..scale.regular);
        let failed = rng.random_range(0..100) == 0;
        let report = Report {
            system: regular(i),
            reporter: format!("collector-{}", k % 8),
            status: Some(if failed { Status::Failed } else { Status::Ok }),
            latency: Some(if k % 2 == 0 {
                Measure::new(rng.random_range(5.0..500.0), "ms")
            } else {
                Measure::new(rng.random_range(0.005..0.5), "s")
            }),
            drift: Some(Measure::new(rng.random_range(0.0..2.0), "min")),
            ..Default::default()
        };
        let (ops, times, lost) = (ops.clone(), times.clone(), lost.clone());
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            match ops.report(&report).await {
                Ok(_) => {
                    let _ = times.lock().await.record(sent.elapsed().as_micros().max(1) as u64);
                }
                Err(_) => {
                    lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for c in calls {
        c.await?;
    }
    let elapsed = start.elapsed();
    let times = Arc::try_unwrap(times).map_err(|_| anyhow::anyhow!("calls still hold the histogram"))?.into_inner();
    Ok((times, lost.load(std::sync::atomic::Ordering::Relaxed), elapsed))
}

/// For the first [`RISK_PROBES`] canaries seen stale: the time from when each was due to a `Show`
/// of its first downstream system answering with the risk it inherits (0.8, through weight 1).
async fn risk_probes(
    ops: SystemsClient,
    seen: Arc<Mutex<HashMap<String, u64>>>,
    canary_edges: Vec<(String, String)>,
    due: HashMap<String, u64>,
) -> anyhow::Result<Histogram<u64>> {
    let mut probed = hist();
    let mut done: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = RISK_PROBES.min(due.len());
    while done.len() < wanted && Instant::now() < deadline {
        let ready: Vec<String> = seen.lock().await.keys().filter(|c| !done.contains(c)).cloned().collect();
        for c in ready.into_iter().take(wanted - done.len()) {
            let downstream =
                canary_edges.iter().find(|(u, _)| *u == c).map(|(_, d)| d.clone()).context("a canary feeds systems")?;
            loop {
                let risk = ops.show(&downstream).await?.status.risk;
                if risk >= 0.8 - 1e-9 {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "{downstream} never inherited {c}'s risk");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            probed.record(unix_ms().saturating_sub(due[&c]).max(1) * 1_000)?;
            done.push(c);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(probed)
}
