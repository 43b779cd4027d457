//! `lockstep bench`: starts a server on loopback and drives it with real gRPC clients in this
//! process, then prints a table (and writes JSON with `--json`).
//!
//! Scenarios:
//! * fan-out, 1 publisher → N subscribers, 256-byte payloads: at saturation (the publisher keeps at
//!   most `window` messages ahead of the slowest subscriber, so nothing needs to be dropped) and at a
//!   fixed offered rate;
//! * interest routing: N subscribers spread over 10 topics, a fixed rate over those topics;
//! * barrier rounds of N participants: from the last arrival to the last release, released with
//!   the whole outcome (`barrier`) or with summaries (`barrier-summary`);
//! * vote rounds of N voters (`vote`): from the last ballot to the last voter holding the outcome,
//!   to set beside the barrier of the same N;
//! * round trips one at a time: an agent's publish with confirmation, and an operator's command to
//!   an agent that answers at once;
//! * state: wire bytes of deltas versus broadcasting the full state;
//! * idle agents: a fresh server's resident memory per agent and CPU with 100, 1,000 and 10,000
//!   connected agents doing nothing but heartbeats (a server in its own process);
//! * memory returned (`memory-return`): a fresh server's resident memory above its idle baseline
//!   once 1,000 subscribers kept busy by a publisher (half of them never reading) have all left
//!   (a server in its own process);
//! * a backup of a 300 MB database under load: state update acknowledgements and barrier
//!   releases of 100 agents while the copy runs (a server with a data directory in its own
//!   process; not with `--quick`);
//! * durable state updates: acknowledged state updates per second of 100 writers on servers without
//!   a store and with a data dir (SQLite, `synchronous=NORMAL` and `FULL`), each started fresh in
//!   this process;
//! * shared context (`context-cas`): compare-and-set writes per second of 100 writers on 100
//!   distinct keys and on one hot key, beside agent state updates on the same fresh servers, in
//!   memory and on a data dir at NORMAL;
//! * task handoff (`task-handoff`): 10,000 tasks through 20 executors asking for work, from the
//!   submit to an executor holding the task and from the completion to the submitter knowing (see
//!   bench_tasks.rs);
//! * tick rounds (`tick-round`): rounds of 100 participants with one hung, from the opening to the
//!   merged result delivered (see bench_rounds.rs);
//! * execution traces (`bench_traces.rs`): lookup of a stored trace (p99 target ≤ 1 ms), and
//!   rounds of 50 agents asking `get_or_claim` for one missing output at once (computed once).
//! * topic history (`history-replay`, bench_history.rs): 100,000 retained messages replayed to a
//!   new subscriber, in messages per second.
//! * intake (`intake-validation-*`, bench_intake.rs): routing throughput of 256-byte JSON records
//!   without intake rules, with a JSON Schema on the topic, and with the schema and a categorising
//!   route, on fresh servers in the same run (target: the schema costs at most 30 %).
//! * event-time tick controller (`bench_streams.rs`): 10 sources at 10,000 events/s in total;
//!   latency from an event's publish to the delivery of its tick (target p99 ≤ period + lateness
//!   + 2 ms).
//! * sync monitor (`systems-*`, bench_systems.rs): 10,000 systems and 20,000 dependencies on a
//!   server keeping its data in SQLite, 1,000 sync events/s: event ingestion (target p99 ≤ 2 ms),
//!   stale detection and risk of systems nobody reports on (target: within 1 s), and the server's
//!   memory for the graph (target ≤ 300 MB).
//!
//! The server for every other scenario runs `--in-memory`: messages are never stored, and the cost
//! of storage is what the durable scenario measures, side by side.
//!
//! Latency is measured from the publisher's send to the subscriber's receive, with one clock (the
//! payload carries the send time), so it includes both clients' gRPC work and the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use lockstep_client::{proto as v1, Agent, AgentFilter, AgentOptions, Client, Participants};
use prost::Message as _;
use serde::Serialize;
use serde_json::{json, Value};

use crate::table;

#[derive(Args)]
pub struct BenchArgs {
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Small sizes and short runs (a smoke test of the benchmark itself).
    #[arg(long)]
    quick: bool,
    /// Only scenarios whose name contains this, or one of these comma-separated words (fanout,
    /// rate, routing, barrier, vote, publish-confirm, command, request, delta, idle, backup,
    /// durable, collective, context-cas, task-handoff, tick-round, trace-lookup, trace-get-or-claim,
    /// tick-controller, history-replay, intake-validation, systems).
    #[arg(long)]
    only: Option<String>,
    /// Agent counts to run (default 10,100,1000; with --quick 10,100).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Run the server inside this process instead of as a separate `lockstep serve` process.
    #[arg(long)]
    in_process: bool,
    /// Measure an already running server at this address instead of starting one.
    #[arg(long, conflicts_with = "in_process")]
    addr: Option<String>,
    /// The agents of the barrier, vote, fan-out and routing scenarios share one connection (as
    /// co-located agents would) instead of each having its own: one HTTP/2 connection
    /// (`Client::register_shared`), or with `--lean` one lean connection
    /// (`Client::register_lean_shared`).
    #[arg(long)]
    shared_connections: bool,
    /// Every agent of the barrier, vote, fan-out, routing, publish-confirm, command and request
    /// scenarios runs its session over the lean transport (`Client::register_lean`: a plain TCP
    /// connection of its own, or a shared one with `--shared-connections`) instead of gRPC.
    #[arg(long)]
    lean: bool,
    /// Milliseconds each barrier participant works between rounds (0: back to back).
    #[arg(long, default_value_t = 0)]
    barrier_work_ms: u64,
    /// Messages per second the publisher offers in the fixed-rate scenarios (at least 1).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Seconds each fixed-rate scenario (and each run of durable-state-updates) runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

const PAYLOAD: usize = 256;

/// One measured scenario.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) n: usize,
    /// Deliveries (or rounds) per second actually achieved.
    pub(crate) rate: f64,
    pub(crate) offered_rate: Option<f64>,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) lost: u64,
    pub(crate) count: u64,
    pub(crate) note: String,
}

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn stamp(epoch: Instant) -> Bytes {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    Bytes::from(p)
}

fn age_us(epoch: Instant, payload: &[u8]) -> u64 {
    let sent = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    (epoch.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000
}

/// How a scenario's agents reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// A gRPC connection per agent (`Client::register`).
    Own,
    /// One gRPC connection for every agent of the scenario (`Client::register_shared`).
    Shared,
    /// A lean-transport connection per agent (`Client::register_lean`).
    Lean,
    /// One lean-transport connection for every agent of the scenario
    /// (`Client::register_lean_shared`).
    LeanShared,
}

impl Link {
    fn of(args: &BenchArgs) -> Link {
        match (args.shared_connections, args.lean) {
            (true, true) => Link::LeanShared,
            (true, false) => Link::Shared,
            (false, true) => Link::Lean,
            (false, false) => Link::Own,
        }
    }

    /// Registers an agent this way.
    async fn register(self, client: &Client, options: AgentOptions) -> Result<Agent, lockstep_client::Error> {
        match self {
            Link::Own => client.register(options).await,
            Link::Shared => client.register_shared(options).await,
            Link::Lean => client.register_lean(options).await,
            Link::LeanShared => client.register_lean_shared(options).await,
        }
    }

    /// How a lone agent of the scenario (a publisher, a responder) connects: sharing makes no
    /// sense for one.
    fn alone(self) -> Link {
        match self {
            Link::Shared => Link::Own,
            Link::LeanShared => Link::Lean,
            other => other,
        }
    }

    /// In words, for a row's note.
    fn describe(self) -> &'static str {
        match self {
            Link::Own => "a connection per agent",
            Link::Shared => "one shared connection",
            Link::Lean => "a lean-transport connection per agent",
            Link::LeanShared => "one shared lean-transport connection",
        }
    }
}

/// How long the bench waits for all of a scenario's agents to register before it fails.
const REGISTER_WAIT: Duration = Duration::from_secs(60);
/// How long a subscriber waits for its next delivery before it counts the rest as lost.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);
/// How long the saturating publisher waits for the slowest subscriber to move before it fails.
const PROGRESS_WAIT: Duration = Duration::from_secs(30);

/// Registers `n` agents concurrently, agent `j` with `options(j)`, and returns them in order. Fails
/// with the first agent that could not register, or when they are not all registered within
/// [`REGISTER_WAIT`]: a scenario never starts (or waits to start) with fewer agents than it counts.
pub(crate) async fn register_all(
    client: &Client,
    n: usize,
    link: Link,
    options: impl Fn(usize) -> AgentOptions,
) -> anyhow::Result<Vec<Agent>> {
    let mut pending = tokio::task::JoinSet::new();
    for j in 0..n {
        let (client, options) = (client.clone(), options(j));
        pending.spawn(async move {
            let id = options.agent_id.clone();
            let agent = link.register(&client, options).await;
            (j, agent.with_context(|| format!("agent {id} could not register")))
        });
    }
    let mut agents: Vec<Option<Agent>> = (0..n).map(|_| None).collect();
    let all = async {
        while let Some(joined) = pending.join_next().await {
            let (j, agent) = joined?;
            agents[j] = Some(agent?);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(REGISTER_WAIT, all).await {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "only {} of {n} agents registered within {} s",
            agents.iter().flatten().count(),
            REGISTER_WAIT.as_secs()
        ),
    }
    Ok(agents.into_iter().flatten().collect())
}

enum Pace {
    /// As fast as the slowest subscriber allows, at most `window` messages ahead of it.
    Saturate { messages: u64, window: u64 },
    /// `rate` messages per second for `seconds`.
    Rate { rate: u64, seconds: u64 },
}

struct SubResult {
    received: u64,
    missed: u64,
    last: Instant,
    hist: Histogram<u64>,
}

/// 1 publisher; `n` subscribers; message i goes to topic `topics[i % topics.len()]`; subscriber j
/// listens on `topics[j % topics.len()]`.
/// `link`: how the subscribers and the publisher connect.
async fn fanout(addr: &str, scenario: &str, n: usize, topics: usize, pace: Pace, link: Link) -> anyhow::Result<Row> {
    fanout_with_hung(addr, scenario, n, 0, topics, pace, link).await
}

/// [`fanout`] with `hung` more subscribers on the first topic that never read what they are sent
/// (they are not measured; the `n` others are).
async fn fanout_with_hung(
    addr: &str,
    scenario: &str,
    n: usize,
    hung: usize,
    topics: usize,
    pace: Pace,
    link: Link,
) -> anyhow::Result<Row> {
    let ns = format!("bench-{scenario}-{n}");
    let client = Client::connect(addr).await?.with_namespace(&ns);
    let mut stuck = Vec::with_capacity(hung);
    for k in 0..hung {
        stuck
            .push(client.register(AgentOptions::new(format!("hung-{k}"), "subscriber").interests(["bench.t0"])).await?);
    }
    let topic_names: Vec<String> = (0..topics).map(|t| format!("bench.t{t}")).collect();
    let total = match pace {
        Pace::Saturate { messages, .. } => messages,
        Pace::Rate { rate, seconds } => rate * seconds,
    };
    // How many messages each subscriber should get.
    let per_topic = |t: usize| (total / topics as u64) + u64::from((t as u64) < total % topics as u64);
    let epoch = Instant::now();
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    // Subscribers wake a blocked publisher now and then instead of it spinning on the counters.
    let moved = Arc::new(tokio::sync::Notify::new());
    let subscribers = register_all(&client, n, link, |j| {
        AgentOptions::new(format!("sub-{j}"), "subscriber").interests([topic_names[j % topics].clone()])
    })
    .await?;
    let mut subs = Vec::with_capacity(n);
    for (j, agent) in subscribers.into_iter().enumerate() {
        let expected = per_topic(j % topics);
        let (progress, moved) = (progress.clone(), moved.clone());
        let mut deliveries = agent.deliveries().context("deliveries")?;
        subs.push(tokio::spawn(async move {
            let mut r = SubResult { received: 0, missed: 0, last: Instant::now(), hist: hist() };
            while r.received + r.missed < expected {
                let Ok(Some(d)) = tokio::time::timeout(DELIVERY_WAIT, deliveries.recv()).await else {
                    break;
                };
                r.hist.record(age_us(epoch, &d.payload).max(1))?;
                r.received += 1;
                r.missed += d.missed_before;
                progress[j].store(r.received + r.missed, Ordering::Relaxed);
                if r.received.is_multiple_of(64) {
                    moved.notify_one();
                }
            }
            r.last = Instant::now();
            // Counted as done, so that a subscriber that gave up does not hold the publisher back.
            progress[j].store(u64::MAX, Ordering::Relaxed);
            moved.notify_one();
            drop(agent);
            anyhow::Ok(r)
        }));
    }
    let publisher = link.alone().register(&client, AgentOptions::new("publisher", "publisher")).await?;
    let start = Instant::now();
    match pace {
        Pace::Saturate { messages, window } => {
            let mut moved_at = (0, Instant::now());
            for i in 0..messages {
                if i.is_multiple_of(32) {
                    loop {
                        let slowest = progress.iter().map(|p| p.load(Ordering::Relaxed)).min().unwrap_or(i);
                        // Subscribers count only their own topic's messages; scale to the whole stream.
                        if i.saturating_sub(slowest.saturating_mul(topics as u64)) <= window {
                            break;
                        }
                        if slowest != moved_at.0 {
                            moved_at = (slowest, Instant::now());
                        } else if moved_at.1.elapsed() > PROGRESS_WAIT {
                            anyhow::bail!(
                                "the slowest subscriber stayed at {slowest} messages for {} s",
                                PROGRESS_WAIT.as_secs()
                            );
                        }
                        let _ = tokio::time::timeout(Duration::from_millis(5), moved.notified()).await;
                    }
                }
                publisher.publish(&topic_names[(i % topics as u64) as usize], stamp(epoch)).await?;
            }
        }
        Pace::Rate { rate, .. } => {
            // Message i is due i/rate s after the start, whatever the rate (a rate under 1,000/s
            // used to publish nothing: it was counted in whole messages per millisecond). Late
            // messages go at once, so the schedule never drifts; at high rates the timer's
            // millisecond makes them go in small bursts.
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                publisher.publish(&topic_names[(i % topics as u64) as usize], stamp(epoch)).await?;
            }
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let mut h = hist();
    let (mut received, mut missed, mut last) = (0u64, 0u64, start);
    for s in subs {
        let r = s.await??;
        received += r.received;
        missed += r.missed;
        last = last.max(r.last);
        h.add(&r.hist)?;
    }
    let expected: u64 = (0..n).map(|j| per_topic(j % topics)).sum();
    let secs = (last - start).as_secs_f64().max(1e-9);
    drop(publisher);
    drop(stuck);
    Ok(Row {
        scenario: scenario.to_owned(),
        n,
        rate: received as f64 / secs,
        offered_rate: match pace {
            Pace::Rate { rate, .. } => Some((rate as f64) * (expected as f64 / total as f64)),
            Pace::Saturate { .. } => None,
        },
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        lost: expected - received,
        count: received,
        note: format!("{total} msgs published in {publish_secs:.2} s; {missed} reported missed"),
    })
}

/// The run with the median p99 of several runs of one configuration, noting every run's p99.
fn median_p99(scenario: &str, mut runs: Vec<Row>) -> Row {
    let all: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.p99_us as f64 / 1000.0)).collect();
    runs.sort_by_key(|r| r.p99_us);
    let mut median = runs.swap_remove(runs.len() / 2);
    median.scenario = scenario.to_owned();
    median.note = format!("median of {} runs; p99 ms of each: {}", all.len(), all.join(", "));
    median
}

/// How the agents of the barrier scenario meet.
#[derive(Clone, Copy)]
struct BarrierMode {
    /// Work between rounds.
    work: Duration,
    /// How the agents connect.
    link: Link,
    /// Released with summaries (`Agent::sync_summary`) rather than the whole outcome.
    summary: bool,
}

impl BarrierMode {
    fn scenario(self) -> &'static str {
        if self.summary {
            "barrier-summary"
        } else {
            "barrier"
        }
    }
}

/// `rounds` barrier rounds of `n` agents; per round, from the last arrival to the last release.
async fn barrier(addr: &str, n: usize, rounds: usize, mode: BarrierMode) -> anyhow::Result<Row> {
    let BarrierMode { work, link, summary } = mode;
    let ns = format!("bench-{}-{n}", mode.scenario());
    let client = Client::connect(addr).await?.with_namespace(&ns);
    let epoch = Instant::now();
    let agents = register_all(&client, n, link, |j| AgentOptions::new(format!("p-{j}"), "participant")).await?;
    let mut tasks = Vec::with_capacity(n);
    for agent in agents {
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(rounds);
            for r in 0..rounds {
                let arrived = epoch.elapsed();
                let (id, everyone, timeout) =
                    (format!("round-{r}"), Participants::Count(n as u32), Duration::from_secs(60));
                let result = match summary {
                    true => agent.sync_summary(&id, everyone, timeout, Bytes::new()).await?,
                    false => agent.sync(&id, everyone, timeout, Bytes::new()).await?,
                };
                anyhow::ensure!(result.count as usize == n, "round {r} released {} of {n}", result.count);
                times.push((arrived, epoch.elapsed()));
                if !work.is_zero() {
                    tokio::time::sleep(work).await;
                }
            }
            drop(agent);
            anyhow::Ok(times)
        }));
    }
    let note = format!(
        "rate = rounds/s; latency = last arrival → last release; {}; {}",
        link.describe(),
        if summary { "released with summaries" } else { "released with the whole outcome" }
    );
    rounds_row(mode.scenario(), n, rounds, tasks, note).await
}

/// Each agent's (went in, came out) times per round.
type RoundTimes = tokio::task::JoinHandle<anyhow::Result<Vec<(Duration, Duration)>>>;

/// The row of `rounds` rounds of `n` agents: per round, from the last agent in to the last agent
/// out (the barrier's and the vote's measure).
async fn rounds_row(
    scenario: &str,
    n: usize,
    rounds: usize,
    tasks: Vec<RoundTimes>,
    note: String,
) -> anyhow::Result<Row> {
    let mut per_agent = Vec::with_capacity(n);
    for t in tasks {
        per_agent.push(t.await??);
    }
    let mut h = hist();
    for r in 0..rounds {
        let last_in = per_agent.iter().map(|t| t[r].0).max().expect("n > 0");
        let last_out = per_agent.iter().map(|t| t[r].1).max().expect("n > 0");
        h.record((last_out.saturating_sub(last_in).as_micros() as u64).max(1))?;
    }
    let total: Duration = per_agent.iter().map(|t| t[rounds - 1].1).max().expect("n > 0")
        - per_agent.iter().map(|t| t[0].0).min().expect("n > 0");
    Ok(Row {
        scenario: scenario.into(),
        n,
        rate: rounds as f64 / total.as_secs_f64().max(1e-9),
        offered_rate: None,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        lost: 0,
        count: rounds as u64,
        note,
    })
}

/// `rounds` votes of `n` voters (any `n` agents, equal weights, plurality); per round, from the
/// last ballot sent to the last voter holding the outcome — the barrier's measure, for votes.
/// Voter 0 opens the next round's vote before it casts in this one, so no ballot finds its vote
/// unopened.
async fn vote_rounds(addr: &str, n: usize, rounds: usize, link: Link) -> anyhow::Result<Row> {
    use lockstep_client::{Ballot, Vote};
    let ns = format!("bench-vote-{n}");
    let client = Client::connect(addr).await?.with_namespace(&ns);
    let epoch = Instant::now();
    let agents = register_all(&client, n, link, |j| AgentOptions::new(format!("v-{j}"), "voter")).await?;
    let vote = move |r: usize| {
        Vote::new(&format!("round-{r}"), "bench", Participants::Count(n as u32), ["a", "b"])
            .timeout(Duration::from_secs(60))
    };
    agents[0].open_vote(&vote(0)).await?;
    let mut tasks = Vec::with_capacity(n);
    for (j, agent) in agents.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(rounds);
            for r in 0..rounds {
                if j == 0 && r + 1 < rounds {
                    agent.open_vote(&vote(r + 1)).await?;
                }
                let cast = epoch.elapsed();
                let outcome = agent.cast(&format!("round-{r}"), Ballot::option("a")).await?;
                anyhow::ensure!(outcome.ballots as usize == n, "round {r} decided with {} of {n}", outcome.ballots);
                times.push((cast, epoch.elapsed()));
            }
            drop(agent);
            anyhow::Ok(times)
        }));
    }
    let note = format!("rate = votes/s; latency = last ballot → last voter holding the outcome; {}", link.describe());
    rounds_row("vote", n, rounds, tasks, note).await
}

/// Sequential round trips for `seconds`, each timed from its start to its end, as a row.
pub(crate) async fn round_trips<F, Fut>(scenario: &str, seconds: u64, note: &str, mut once: F) -> anyhow::Result<Row>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut h = hist();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let sent = Instant::now();
        once().await?;
        h.record((sent.elapsed().as_micros() as u64).max(1))?;
    }
    let count = h.len();
    Ok(Row {
        scenario: scenario.to_owned(),
        n: 1,
        rate: count as f64 / start.elapsed().as_secs_f64().max(1e-9),
        offered_rate: None,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        lost: 0,
        count,
        note: format!("{count} round trips, one at a time; {note}"),
    })
}

/// One agent publishing with confirmation (the server's acknowledgement that the message was
/// routed), one publish at a time.
async fn publish_confirm(addr: &str, seconds: u64, link: Link) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace("bench-publish-confirm");
    let agent = link.alone().register(&client, AgentOptions::new("publisher", "publisher")).await?;
    let payload = Bytes::from(vec![0u8; PAYLOAD]);
    round_trips("publish-confirm", seconds, "publish → routed acknowledgement", || async {
        Ok(agent.publish_confirmed("bench.confirm", payload.clone()).await?)
    })
    .await
}

/// An operator's command to an agent that answers at once: admin → server → agent → server → admin.
async fn command_round_trip(addr: &str, seconds: u64, link: Link) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace("bench-command");
    let agent = link.alone().register(&client, AgentOptions::new("responder", "responder")).await?;
    let mut commands = agent.commands().context("commands")?;
    let responder = tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            let _ = command.reply(Ok(json!("ok"))).await;
        }
    });
    let admin = client.admin(None, Some("bench"))?;
    let row = round_trips("command-roundtrip", seconds, "send_command → agent's answer", || async {
        admin.send_command("responder", "ping", &Value::Null, DELIVERY_WAIT).await?;
        Ok(())
    })
    .await;
    drop(agent);
    responder.abort();
    row
}

/// One agent's request answered at once by another: requester → server → responder → server →
/// requester.
async fn request_reply(addr: &str, seconds: u64, link: Link) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace("bench-request");
    let agent =
        link.alone().register(&client, AgentOptions::new("responder", "responder").interests(["bench.ask"])).await?;
    let mut requests = agent.requests().context("requests")?;
    let responder = tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let payload = request.payload.clone();
            let _ = request.respond(payload).await;
        }
    });
    let requester = link.alone().register(&client, AgentOptions::new("requester", "requester")).await?;
    let payload = Bytes::from(vec![0u8; PAYLOAD]);
    let row = round_trips("request-reply", seconds, "request → responder's answer", || async {
        requester.request("bench.ask", payload.clone(), DELIVERY_WAIT).await?;
        Ok(())
    })
    .await;
    drop(agent);
    responder.abort();
    row
}

/// Wire bytes a watcher receives for deltas versus full states: a 50-field state, 2 fields changed
/// per update.
async fn delta_bytes(addr: &str, updates: usize) -> anyhow::Result<(Row, Value)> {
    let client = Client::connect(addr).await?.with_namespace("bench-delta");
    let owner = client.register(AgentOptions::new("owner", "owner")).await?;
    let initial: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("field_{i:02}"), json!(format!("initial-value-{i}")))).collect();
    owner.update_state(&Value::Object(initial.clone())).await?;
    // A raw session so the exact server messages can be measured.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let reg = v1::Register {
        namespace: "bench-delta".into(),
        agent_id: "watcher".into(),
        role: "watcher".into(),
        ..Default::default()
    };
    tx.send(v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Register(reg)) }).await?;
    let watch = v1::WatchState { target: Some(v1::watch_state::Target::AgentId("owner".into())) };
    tx.send(v1::ClientMessage { request_id: 1, kind: Some(v1::client_message::Kind::WatchState(watch)) }).await?;
    let mut raw = v1::lockstep_client::LockstepClient::connect(format!("http://{addr}")).await?;
    let mut inbound = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut state = Value::Object(initial);
    let (mut delta_bytes, mut full_bytes, mut seen) = (0usize, 0usize, 0u64);
    let mut snapshot_seen = false;
    let reader = async {
        while seen < updates as u64 {
            let Ok(msg) = tokio::time::timeout(DELIVERY_WAIT, inbound.message()).await else {
                anyhow::bail!("the watcher saw no change for {} s", DELIVERY_WAIT.as_secs())
            };
            let Some(msg) = msg? else { anyhow::bail!("session ended") };
            if let Some(v1::server_message::Kind::StateChanges(c)) = &msg.kind {
                if !snapshot_seen {
                    snapshot_seen = true;
                    continue;
                }
                delta_bytes += msg.encoded_len();
                seen = c.items.last().map_or(seen, |i| i.version - 1);
            }
        }
        anyhow::Ok(())
    };
    let writer = async {
        for u in 0..updates {
            let delta = json!({
                format!("field_{:02}", rand::random_range(0..50)): u,
                format!("field_{:02}", rand::random_range(0..50)): format!("v{u}"),
            });
            lockstep_core::state::apply(&mut state, &delta);
            owner.update_state(&delta).await?;
            let full = v1::ServerMessage {
                kind: Some(v1::server_message::Kind::StateChanges(v1::StateChanges {
                    items: vec![v1::StateChange {
                        agent_id: "owner".into(),
                        base_version: 0,
                        version: u as u64 + 2,
                        delta_json: state.to_string(),
                        removed: false,
                    }],
                })),
            };
            full_bytes += full.encoded_len();
        }
        anyhow::Ok(())
    };
    let (r, w) = tokio::join!(reader, writer);
    r?;
    w?;
    let ratio = delta_bytes as f64 / full_bytes as f64;
    let row = Row {
        scenario: "state-delta-bytes".into(),
        n: updates,
        rate: ratio * 100.0,
        offered_rate: None,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        lost: 0,
        count: updates as u64,
        note: format!("delta {delta_bytes} B vs full-state {full_bytes} B on the wire = {:.1} %", ratio * 100.0),
    };
    drop(tx);
    Ok((row, json!({"delta_bytes": delta_bytes, "full_state_bytes": full_bytes, "ratio": ratio})))
}

/// A writer's step: `write(agent, j, done)` writes once as writer `j` (`done` writes counted so
/// far) and answers whether the write counts (`false`: a CAS conflict, retried and counted apart).
type Write = Arc<dyn Fn(Agent, usize, u64) -> futures::future::BoxFuture<'static, anyhow::Result<bool>> + Send + Sync>;

/// Agent state updates: each writer merges a small object into its own state.
fn state_write() -> Write {
    let pad = Arc::new("x".repeat(32));
    Arc::new(move |agent, _, done| {
        let pad = pad.clone();
        Box::pin(async move {
            agent.update_state(&json!({"n": done, "pad": *pad})).await?;
            Ok(true)
        })
    })
}

/// Compare-and-set writes of `n` writers: each on a key of its own (`hot`: false) or all on one key
/// (`hot`: true), each expecting the version the writer last saw (a conflict tells the current one,
/// and the writer tries again with it).
fn cas_write(n: usize, hot: bool) -> Write {
    use lockstep_client::{ContextWrites, Error};
    /// The version each writer expects next (0: the key does not exist yet), its key, and the
    /// payload's padding: one shared value, so that a write clones one `Arc` as a state update
    /// does (each clone is an atomic on a line all writers share).
    struct Writers {
        seen: Vec<AtomicU64>,
        keys: Vec<String>,
        pad: String,
    }
    let writers = Arc::new(Writers {
        seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
        keys: (0..n).map(|j| if hot { "bench.hot".to_owned() } else { format!("bench.key-{j}") }).collect(),
        pad: "x".repeat(32),
    });
    Arc::new(move |agent, j, done| {
        let w = writers.clone();
        Box::pin(async move {
            let expected = w.seen[j].load(Ordering::Relaxed);
            match agent.context().cas(&w.keys[j], expected, &json!({"n": done, "pad": w.pad})).await {
                Ok(written) => {
                    w.seen[j].store(written.version, Ordering::Relaxed);
                    Ok(true)
                }
                Err(Error::Conflict { current_version, .. }) => {
                    w.seen[j].store(current_version, Ordering::Relaxed);
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            }
        })
    })
}

/// `n` writers, each its own agent, each updating its own state and awaiting every acknowledgement,
/// for `seconds`. Rate = acknowledged updates/s of all writers; latency = update sent → ack received.
async fn state_writers(addr: &str, scenario: &str, n: usize, seconds: u64) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace(format!("bench-{scenario}"));
    let agents = register_all(&client, n, Link::Own, |j| AgentOptions::new(format!("writer-{j}"), "writer")).await?;
    let tally = run_writers(&agents, Duration::from_secs(seconds), &state_write()).await?;
    Ok(tally.row(scenario, n, "updates"))
}

/// What writers did in a timed run (or several, added up).
struct Tally {
    /// Writes that counted, and those that did not (CAS conflicts).
    done: u64,
    missed: u64,
    /// Time spent writing: from each run's start to its last answer.
    secs: f64,
    /// Sent → answered, of the writes that counted (µs).
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally { done: 0, missed: 0, secs: 0.0, hist: hist() }
    }

    fn add(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.done += other.done;
        self.missed += other.missed;
        self.secs += other.secs;
        self.hist.add(&other.hist)?;
        Ok(())
    }

    /// Rate = counted writes per second of writing.
    fn row(&self, scenario: &str, n: usize, what: &str) -> Row {
        let secs = self.secs.max(1e-9);
        Row {
            scenario: scenario.to_owned(),
            n,
            rate: self.done as f64 / secs,
            offered_rate: None,
            p50_us: self.hist.value_at_quantile(0.5),
            p99_us: self.hist.value_at_quantile(0.99),
            p999_us: self.hist.value_at_quantile(0.999),
            lost: 0,
            count: self.done,
            note: format!("{} {what} acknowledged in {secs:.2} s", self.done),
        }
    }
}

/// Runs `write` in a loop on each agent (writer `j` is `agents[j]`) for `duration`, awaiting each.
async fn run_writers(agents: &[Agent], duration: Duration, write: &Write) -> anyhow::Result<Tally> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut writers = Vec::with_capacity(agents.len());
    for (j, agent) in agents.iter().enumerate() {
        let (write, agent) = (write.clone(), agent.clone());
        writers.push(tokio::spawn(async move {
            let (mut h, mut done, mut missed) = (hist(), 0u64, 0u64);
            while Instant::now() < deadline {
                let sent = Instant::now();
                if write(agent.clone(), j, done).await? {
                    h.record((sent.elapsed().as_micros() as u64).max(1))?;
                    done += 1;
                } else {
                    missed += 1;
                }
            }
            anyhow::Ok((done, missed, Instant::now(), h))
        }));
    }
    let (mut tally, mut last) = (Tally::new(), start);
    for w in writers {
        let (done, missed, l, h) = w.await??;
        tally.done += done;
        tally.missed += missed;
        last = last.max(l);
        tally.hist.add(&h)?;
    }
    tally.secs = (last - start).as_secs_f64();
    Ok(tally)
}

/// How many turns each of two compared measures gets on one server: they alternate in turns of
/// `seconds / COMPARED_TURNS`, so that the load of a shared machine, which moves over seconds,
/// weighs on both alike.
const COMPARED_TURNS: u32 = 10;

/// State updates and CAS writes on distinct keys, `n` writers each (agents of their own), on the
/// server at `addr`, in alternating turns (see [`COMPARED_TURNS`]) adding up to `seconds` each;
/// `cas_first` says which goes first.
async fn state_against_cas(
    addr: &str,
    names: [&str; 2],
    n: usize,
    seconds: u64,
    cas_first: bool,
) -> anyhow::Result<[Row; 2]> {
    let client = Client::connect(addr).await?;
    let state_client = client.clone().with_namespace(format!("bench-{}", names[0]));
    let cas_client = client.with_namespace(format!("bench-{}", names[1]));
    let state_agents =
        register_all(&state_client, n, Link::Own, |j| AgentOptions::new(format!("writer-{j}"), "writer")).await?;
    let cas_agents =
        register_all(&cas_client, n, Link::Own, |j| AgentOptions::new(format!("cas-{j}"), "writer")).await?;
    let (state, cas) = (state_write(), cas_write(n, false));
    let turn = Duration::from_secs(seconds) / COMPARED_TURNS;
    let (mut states, mut cases) = (Tally::new(), Tally::new());
    for k in 0..2 * COMPARED_TURNS {
        if (k % 2 == 0) != cas_first {
            states.add(&run_writers(&state_agents, turn, &state).await?)?;
        } else {
            cases.add(&run_writers(&cas_agents, turn, &cas).await?)?;
        }
    }
    Ok([states.row(names[0], n, "updates"), cases.row(names[1], n, "CAS writes")])
}

/// `n` writers, each its own agent, compare-and-setting shared context on their sessions for
/// `seconds` (see [`cas_write`]). Rate = successful CAS writes/s.
async fn cas_writers(addr: &str, scenario: &str, n: usize, seconds: u64, hot: bool) -> anyhow::Result<Row> {
    let client = Client::connect(addr).await?.with_namespace(format!("bench-{scenario}"));
    let agents = register_all(&client, n, Link::Own, |j| AgentOptions::new(format!("cas-{j}"), "writer")).await?;
    let tally = run_writers(&agents, Duration::from_secs(seconds), &cas_write(n, hot)).await?;
    let mut row = tally.row(scenario, n, "CAS writes");
    row.note = format!("{} CAS writes acknowledged, {} conflicts", row.count, tally.missed);
    Ok(row)
}

/// The median (of an even count, the mean of the middle two).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Several runs of one configuration as one row: the median of each figure, every run's rate noted.
fn median_rate(scenario: &str, runs: &[Row]) -> Row {
    let of = |f: fn(&Row) -> f64| median(runs.iter().map(f).collect());
    let all: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rate)).collect();
    Row {
        scenario: scenario.to_owned(),
        n: runs[0].n,
        rate: of(|r| r.rate),
        offered_rate: None,
        p50_us: of(|r| r.p50_us as f64).round() as u64,
        p99_us: of(|r| r.p99_us as f64).round() as u64,
        p999_us: of(|r| r.p999_us as f64).round() as u64,
        lost: 0,
        count: runs.iter().map(|r| r.count).sum(),
        note: match runs.len() {
            1 => format!("1 run: {} updates/s", all[0]),
            k => format!("median of {k} runs; updates/s of each: {}", all.join(", ")),
        },
    }
}

/// A fresh data directory under the system's temporary directory, removed when dropped.
struct DataDir(std::path::PathBuf);

/// A server in this process on a loopback port, in memory (`durability` `None`) or on a fresh data
/// directory labelled `label` (returned: the caller drops it after the server, which removes it).
async fn in_process_server(
    label: &str,
    durability: Option<lockstep_server::Durability>,
) -> anyhow::Result<(lockstep_server::RunningServer, Option<DataDir>)> {
    use lockstep_server::Storage;
    let data_dir = durability.map(|_| DataDir::new(label)).transpose()?;
    let storage = match (&data_dir, durability) {
        (Some(data_dir), Some(durability)) => Storage::DataDir { dir: data_dir.0.clone(), durability },
        _ => Storage::InMemory,
    };
    let options = lockstep_server::Options { storage, ..lockstep_server::Options::new("127.0.0.1:0".parse()?) };
    Ok((lockstep_server::start(options).await?, data_dir))
}

impl DataDir {
    fn new(label: &str) -> anyhow::Result<DataDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lockstep-bench-{}-{label}-{k}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(DataDir(dir))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The target: with a data dir at NORMAL, at least this share of the in-memory throughput.
const NORMAL_TARGET: f64 = 0.5;

/// [`state_writers`] on a fresh in-process server per run: in-memory, a data dir at NORMAL and one at
/// FULL. In-memory and NORMAL alternate twice, in the order memory, NORMAL, NORMAL, memory, so that
/// drift on the shared machine weighs on both alike; FULL (a documented figure, no target) runs once.
/// Each configuration reports the median of its runs and its rate as a share of in-memory's.
async fn durable_state_updates(n: usize, seconds: u64) -> anyhow::Result<(Vec<Row>, Value)> {
    use lockstep_server::Durability;
    let configs = [("memory", None), ("normal", Some(Durability::Normal)), ("full", Some(Durability::Full))];
    let order = [0, 1, 1, 0, 2];
    eprintln!(
        "durable-state-updates: {n} writers, {seconds} s per run, on fresh in-process servers: {}",
        order.map(|c| configs[c].0).join(", ")
    );
    let mut runs: [Vec<Row>; 3] = Default::default();
    let mut each = Vec::with_capacity(order.len());
    for (i, c) in order.into_iter().enumerate() {
        let (name, durability) = configs[c];
        let (server, data_dir) = in_process_server(name, durability).await?;
        let row =
            state_writers(&server.local_addr().to_string(), &format!("durable-state-updates-{name}-{i}"), n, seconds)
                .await;
        server.shutdown().await?;
        drop(data_dir);
        let row = row?;
        eprintln!("{row:?}");
        each.push(json!({"storage": name, "rate": row.rate, "p50_us": row.p50_us, "p99_us": row.p99_us}));
        runs[c].push(row);
    }
    let [memory, normal, full] = runs;
    let mut baseline = median_rate("durable-state-updates-memory", &memory);
    baseline.note = format!("in-memory baseline; {}", baseline.note);
    let mut extra = json!({"writers": n, "seconds_per_run": seconds, "runs": each});
    let mut rows = vec![];
    for (&(name, durability), runs) in configs[1..].iter().zip([normal, full]) {
        let mut row = median_rate(&format!("durable-state-updates-{name}"), &runs);
        let share = row.rate / baseline.rate;
        let verdict = if durability == Some(Durability::Normal) {
            let met = if share >= NORMAL_TARGET { "met" } else { "NOT met" };
            format!("target >= {:.0} %: {met}", NORMAL_TARGET * 100.0)
        } else {
            "no target".to_owned()
        };
        row.note = format!("{:.1} % of in-memory ({verdict}); {}", share * 100.0, row.note);
        extra[format!("{name}_vs_memory")] = json!(share);
        rows.push(row);
    }
    rows.insert(0, baseline);
    Ok((rows, extra))
}

/// Shared context against agent state, on the same fresh in-process servers: per server, agent
/// state updates of `n` writers (the baseline) and CAS on `n` distinct keys in alternating turns
/// ([`state_against_cas`]; which goes first alternates from one server to the next), then CAS on
/// one hot key, in memory and on a data dir
/// at NORMAL, in the order memory, memory, NORMAL, NORMAL, memory, memory (so that drift on the
/// shared machine weighs on both alike). Each configuration reports the median of its
/// runs; the distinct-keys row says its rate as a share of the state updates of the same servers.
async fn context_cas(n: usize, seconds: u64) -> anyhow::Result<(Vec<Row>, Value)> {
    use lockstep_server::Durability;
    let configs = [("memory", None), ("normal", Some(Durability::Normal))];
    // Memory, where the target is, four times; state first on even runs, CAS first on odd ones.
    let order = [0, 0, 1, 1, 0, 0];
    eprintln!(
        "context-cas: {n} writers, {seconds} s per measure, on fresh in-process servers: {}",
        order.map(|c| configs[c].0).join(", ")
    );
    let mut runs: [[Vec<Row>; 3]; 2] = Default::default();
    let mut each = Vec::new();
    for (i, c) in order.into_iter().enumerate() {
        let (name, durability) = configs[c];
        let (server, data_dir) = in_process_server(name, durability).await?;
        let addr = server.local_addr().to_string();
        let measured = async {
            let names = [format!("context-state-{name}-{i}"), format!("context-cas-distinct-{name}-{i}")];
            // The two compared measures alternate in turns; which goes first alternates from one
            // server to the next.
            let [state, distinct] = state_against_cas(&addr, [&names[0], &names[1]], n, seconds, i % 2 == 1).await?;
            let hot = cas_writers(&addr, &format!("context-cas-hot-{name}-{i}"), n, seconds, true).await?;
            anyhow::Ok([state, distinct, hot])
        }
        .await;
        server.shutdown().await?;
        drop(data_dir);
        let measured = measured?;
        for (k, row) in measured.into_iter().enumerate() {
            eprintln!("{row:?}");
            each.push(json!({"storage": name, "scenario": row.scenario, "rate": row.rate, "p99_us": row.p99_us}));
            runs[c][k].push(row);
        }
    }
    let mut rows = Vec::new();
    let mut extra = json!({"writers": n, "seconds_per_measure": seconds, "runs": each});
    for (c, (name, _)) in configs.iter().enumerate() {
        let [state, distinct, hot] = &runs[c];
        let baseline = median_rate(&format!("context-state-updates-{name}"), state);
        let mut distinct = median_rate(&format!("context-cas-distinct-{name}"), distinct);
        let share = distinct.rate / baseline.rate;
        let met = if share >= 1.0 { "met" } else { "NOT met" };
        distinct.note = format!(
            "{:.1} % of the state updates of the same servers (target >= 100 % in memory: {}); {}",
            share * 100.0,
            if *name == "memory" { met } else { "no target" },
            distinct.note
        );
        extra[format!("cas_distinct_vs_state_{name}")] = json!(share);
        rows.push(baseline);
        rows.push(distinct);
        rows.push(median_rate(&format!("context-cas-hot-{name}"), hot));
    }
    Ok((rows, extra))
}

/// The backup scenario: agents in an archive namespace, lost long ago, each keeping a large state
/// (about 300 MB in all, so that a copy, check and sync outlast a lease), written with the store's
/// API before the server starts, which is much faster than sending it through the server.
const BACKUP_ARCHIVE_AGENTS: usize = 300;
const BACKUP_ARCHIVE_STATE_BYTES: usize = 1_000_000;
/// Live agents of the backup scenario, and the pause between two of an agent's rounds.
const BACKUP_AGENTS: usize = 100;
const BACKUP_ROUND_PAUSE: Duration = Duration::from_millis(500);
/// Leases of the backup scenario (interval × intervals = 600 ms), short enough that the copy
/// outlasts a lease several times over.
const BACKUP_HEARTBEAT: Duration = Duration::from_millis(200);
const BACKUP_LEASE_INTERVALS: u32 = 3;
/// How long the agents run before the backup starts.
const BACKUP_SETTLE: Duration = Duration::from_millis(1500);

/// One round of a backup-scenario agent: its state update (sent, acknowledged) and its barrier
/// (arrival sent, release received).
struct BackupRound {
    round: u64,
    update: (Instant, Instant),
    sync: (Instant, Instant),
}

/// Heartbeat acknowledgements and barrier releases while `Admin.Backup` copies a large database:
/// a server in its own process with leases of 600 ms, [`BACKUP_AGENTS`] agents each running
/// rounds of a small state update and a barrier of all of them (spread over
/// [`BACKUP_ROUND_PAUSE`]), and a backup in the middle. Two rows: the state updates' round trips
/// and the barriers' releases (from the round's last arrival) that overlapped the copy.
async fn backup_under_load() -> anyhow::Result<Vec<Row>> {
    let data = DataDir::new("backup")?;
    let written = Instant::now();
    lockstep_store::archive::write_archive(&data.0, BACKUP_ARCHIVE_AGENTS, BACKUP_ARCHIVE_STATE_BYTES)?;
    let db_bytes = std::fs::metadata(data.0.join(lockstep_store::DB_FILE_NAME))?.len();
    eprintln!("backup-under-load: {} MB archive written in {:.1?}", db_bytes / 1_000_000, written.elapsed());
    let dir = data.0.to_str().context("a UTF-8 path")?;
    let lease = BACKUP_HEARTBEAT * BACKUP_LEASE_INTERVALS;
    let heartbeat = BACKUP_HEARTBEAT.as_millis().to_string();
    let intervals = BACKUP_LEASE_INTERVALS.to_string();
    let settings = ["--data-dir", dir, "--heartbeat-interval-ms", &heartbeat, "--lease-intervals", &intervals];
    let (server, addr) = UnderTest::spawn(&settings).await?;
    let client = Client::connect(&addr).await?.with_namespace("bench-backup");
    let agents =
        register_all(&client, BACKUP_AGENTS, Link::Own, |j| AgentOptions::new(format!("w-{j}"), "worker")).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(BACKUP_AGENTS);
    for (j, agent) in agents.into_iter().enumerate() {
        let (stop, offset) = (stop.clone(), BACKUP_ROUND_PAUSE * j as u32 / BACKUP_AGENTS as u32);
        tasks.push(tokio::spawn(async move {
            let mut rounds = Vec::new();
            for round in 0.. {
                tokio::time::sleep(offset).await;
                let sent = Instant::now();
                agent.update_state(&json!({ "round": round })).await?;
                let update = (sent, Instant::now());
                // Agent 0 ends the run: every agent stops after the round whose barrier it closes.
                let last = j == 0 && stop.load(Ordering::SeqCst);
                let arrived = Instant::now();
                let everyone = Participants::Count(BACKUP_AGENTS as u32);
                let released = agent
                    .sync(
                        &format!("round-{round}"),
                        everyone,
                        Duration::from_secs(60),
                        Bytes::from(vec![u8::from(last)]),
                    )
                    .await?;
                rounds.push(BackupRound { round, update, sync: (arrived, Instant::now()) });
                if released.payloads.iter().any(|p| p[..] == [1]) {
                    break;
                }
                tokio::time::sleep(BACKUP_ROUND_PAUSE - offset).await;
            }
            drop(agent);
            anyhow::Ok(rounds)
        }));
    }
    tokio::time::sleep(BACKUP_SETTLE).await;
    let admin = client.admin(None, Some("bench"))?;
    let from = Instant::now();
    let bytes = admin.backup(data.0.join("copy.db").to_str().context("a UTF-8 path")?).await?;
    let to = Instant::now();
    tokio::time::sleep(BACKUP_SETTLE).await;
    stop.store(true, Ordering::SeqCst);
    let mut rounds = Vec::new();
    for t in tasks {
        rounds.extend(t.await??);
    }
    server.stop().await?;
    let mut last_arrival = std::collections::HashMap::new();
    for r in &rounds {
        let at = last_arrival.entry(r.round).or_insert(r.sync.0);
        *at = (*at).max(r.sync.0);
    }
    let overlapping = |spans: Vec<(Instant, Instant)>| -> anyhow::Result<(Histogram<u64>, u64)> {
        let mut h = hist();
        let mut inside = 0;
        for (start, end) in spans.into_iter().filter(|&(start, end)| start <= to && end >= from) {
            h.record((end - start).as_micros().max(1) as u64)?;
            inside += u64::from((from..=to).contains(&end));
        }
        Ok((h, inside))
    };
    let took = to - from;
    let mut rows = Vec::new();
    for (scenario, spans, what) in [
        ("backup-state-acks", rounds.iter().map(|r| r.update).collect::<Vec<_>>(), "state update → acknowledgement"),
        (
            "backup-sync-releases",
            rounds.iter().map(|r| (last_arrival[&r.round], r.sync.1)).collect(),
            "last arrival → release",
        ),
    ] {
        let (h, inside) = overlapping(spans)?;
        rows.push(Row {
            scenario: scenario.into(),
            n: BACKUP_AGENTS,
            rate: h.len() as f64 / took.as_secs_f64().max(1e-9),
            offered_rate: None,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            lost: 0,
            count: h.len(),
            note: format!(
                "{what}, the {} round trips that overlapped a backup of {} MB taking {:.1?} ({inside} ended inside \
                 it; lease {lease:?})",
                h.len(),
                bytes / 1_000_000,
                took
            ),
        });
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    Ok(rows)
}

/// Agents of the idle scenario that share one connection, as co-located agents of one process
/// would (`Client::register_shared`).
const IDLE_AGENTS_PER_CONNECTION: usize = 100;

/// What the kernel says of a process: resident memory (bytes) and CPU time used so far.
pub(crate) fn process_usage(pid: u32) -> anyhow::Result<(u64, Duration)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the state, field 3; utime and
    // stime are fields 14 and 15, in USER_HZ ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').context("unexpected /proc/PID/stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((rss_kb * 1024, Duration::from_millis(ticks * 10)))
}

/// A fresh server in its own process with the default settings, and `n` agents of `namespace`
/// registered on it, [`IDLE_AGENTS_PER_CONNECTION`] to a connection (`options` gets each agent's
/// number): what the idle and memory scenarios measure. The server's resident memory is read once
/// it is listening and has answered a call, before any agent.
struct Populated {
    server: UnderTest,
    addr: String,
    pid: u32,
    /// A client of `namespace` that registered nothing, to list the agents.
    probe: Client,
    rss_before: u64,
    agents: Vec<Agent>,
}

async fn populated(namespace: &str, n: usize, options: impl Fn(usize) -> AgentOptions) -> anyhow::Result<Populated> {
    let (server, addr) = UnderTest::spawn(&["--in-memory"]).await?;
    let pid = server.pid().context("the server runs in its own process")?;
    let probe = Client::connect(&addr).await?.with_namespace(namespace);
    probe.list_agents(AgentFilter::default()).await?;
    let (rss_before, _) = process_usage(pid)?;
    let mut agents = Vec::with_capacity(n);
    for group in 0..n.div_ceil(IDLE_AGENTS_PER_CONNECTION) {
        let client = Client::connect(&addr).await?.with_namespace(namespace);
        let size = IDLE_AGENTS_PER_CONNECTION.min(n - group * IDLE_AGENTS_PER_CONNECTION);
        let first = group * IDLE_AGENTS_PER_CONNECTION;
        agents.extend(register_all(&client, size, Link::Shared, |j| options(first + j)).await?);
    }
    Ok(Populated { server, addr, pid, probe, rss_before, agents })
}

/// `n` agents registered and then idle (only their heartbeats) on a fresh server in its own process
/// with the default settings: the server's resident memory per agent (against the same server
/// before any agent) and its CPU over `seconds` of idleness. Agents share connections by
/// [`IDLE_AGENTS_PER_CONNECTION`]. The row's rate is the server's CPU in percent of one core.
async fn idle_agents(n: usize, seconds: u64) -> anyhow::Result<(Row, Value)> {
    let Populated { server, pid, probe, rss_before, agents, .. } =
        populated("bench-idle", n, |j| AgentOptions::new(format!("idle-{j}"), "idle")).await?;
    let heartbeat = agents.first().map(|a| a.heartbeat_interval()).unwrap_or_default();
    // Let the registrations' work pass before measuring idleness.
    tokio::time::sleep(heartbeat * 2).await;
    let (_, cpu_start) = process_usage(pid)?;
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (rss_after, cpu_end) = process_usage(pid)?;
    let wall = idle_from.elapsed();
    let live = probe.list_agents(AgentFilter::default()).await?.len();
    let ended = agents.iter().filter(|a| a.ended().is_some()).count();
    drop(agents);
    server.stop().await?;
    anyhow::ensure!(live >= n && ended == 0, "{live} agents listed of {n}, {ended} sessions ended while idle");
    let cpu_percent = (cpu_end - cpu_start).as_secs_f64() / wall.as_secs_f64() * 100.0;
    let per_agent = rss_after.saturating_sub(rss_before) / n.max(1) as u64;
    let row = Row {
        scenario: "idle-agents".into(),
        n,
        rate: cpu_percent,
        offered_rate: None,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        lost: 0,
        count: n as u64,
        note: format!(
            "rate = server CPU, % of one core, over {:.1?} idle (heartbeat {heartbeat:?}); server RSS {} MiB \
             ({} MiB before any agent), {:.1} KiB per agent; {} agents per connection",
            wall,
            rss_after >> 20,
            rss_before >> 20,
            per_agent as f64 / 1024.0,
            IDLE_AGENTS_PER_CONNECTION
        ),
    };
    let extra = json!({"n": n, "rss_bytes": rss_after, "rss_before_bytes": rss_before, "rss_per_agent_bytes": per_agent,
        "cpu_percent_of_one_core": cpu_percent, "idle_seconds": wall.as_secs_f64(), "heartbeat_ms": heartbeat.as_millis() as u64});
    Ok((row, extra))
}

/// `n` subscribers (100 per connection; half of them never read) on a fresh server of its own,
/// one publisher keeping them busy for `seconds`, then every agent leaves: the server's resident memory before any agent,
/// at the end of the load, and once nobody is left and it has settled. The row's rate is what
/// the server still holds above its idle baseline, in MiB (issue 16: at most 50).
async fn memory_return(n: usize, seconds: u64) -> anyhow::Result<(Row, Value)> {
    let Populated { server, addr, pid, probe, rss_before: rss_idle, agents: subscribers } =
        populated("bench-memory", n, |j| AgentOptions::new(format!("sub-{j}"), "subscriber").interests(["mem.feed"]))
            .await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    // Half of them read, half never do: their queues fill and drop the oldest, as a slow
    // consumer's would, so the server holds as much as its limits let it before they leave.
    for agent in subscribers.iter().step_by(2) {
        let mut deliveries = agent.deliveries().context("deliveries taken once")?;
        let received = received.clone();
        readers.spawn(async move {
            while deliveries.recv().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let publisher = Client::connect(&addr)
        .await?
        .with_namespace("bench-memory")
        .register(AgentOptions::new("publisher", "publisher"))
        .await?;
    let payload = Bytes::from(vec![b'x'; 256]);
    let mut published = 0u64;
    let load_from = Instant::now();
    while load_from.elapsed() < Duration::from_secs(seconds) {
        // Confirmed every 100: the publisher runs ahead of its subscribers by the server's queues,
        // not by an unbounded client buffer.
        if published % 100 == 99 {
            publisher.publish_confirmed("mem.feed", payload.clone()).await?;
        } else {
            publisher.publish("mem.feed", payload.clone()).await?;
        }
        published += 1;
    }
    let (rss_loaded, _) = process_usage(pid)?;
    drop(publisher);
    drop(subscribers);
    readers.shutdown().await;
    // Each said goodbye: none is kept for a lease. One that lost its lease during the load (a
    // machine too busy for its heartbeats) would be kept, resumable, with its queue: the
    // measurement would not be of a server that everyone left.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = probe.list_agents(AgentFilter::default()).await?;
        if listed.is_empty() {
            break;
        }
        let lost = listed.iter().filter(|a| a.status == v1::AgentStatus::Lost as i32).count();
        anyhow::ensure!(
            Instant::now() < deadline && lost == 0,
            "{} agents still listed after every one left, {lost} of them lost (their leases ran out under load)",
            listed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Settled: the server's periodic work (leases, retention, memory release) has had its turn.
    tokio::time::sleep(MEMORY_SETTLE).await;
    let (rss_after, _) = process_usage(pid)?;
    server.stop().await?;
    let held = rss_after.saturating_sub(rss_idle);
    let row = Row {
        scenario: "memory-return".into(),
        n,
        rate: held as f64 / (1 << 20) as f64,
        offered_rate: None,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        lost: 0,
        count: published,
        note: format!(
            "rate = server RSS above its idle baseline once every agent left, MiB (target <= 50); \
             idle {} MiB, under load {} MiB, after {} MiB ({:?} settled); {published} published, {} \
             delivered",
            rss_idle >> 20,
            rss_loaded >> 20,
            rss_after >> 20,
            MEMORY_SETTLE,
            received.load(Ordering::Relaxed)
        ),
    };
    let extra = json!({"n": n, "rss_idle_bytes": rss_idle, "rss_loaded_bytes": rss_loaded,
        "rss_after_bytes": rss_after, "held_bytes": held, "published": published,
        "delivered": received.load(Ordering::Relaxed)});
    Ok((row, extra))
}

/// How long `memory-return` waits after the last agent is gone before it reads the server's memory.
const MEMORY_SETTLE: Duration = Duration::from_secs(5);

/// The server under test: a separate `lockstep serve` process (the default, so the server's tasks
/// do not queue behind the benchmark's clients), or one inside this process.
pub(crate) enum UnderTest {
    Process(KillOnDrop),
    InProcess(lockstep_server::RunningServer),
    Elsewhere,
}

/// A child process (a `lockstep serve`, a worker), killed when dropped: a benchmark that fails
/// half-way (a worker lost, a wait timed out) does not leave its server running.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lockstep serve --listen LISTEN ARGS` in its own process, logging at `log_level`, once it
/// listens: the process and the address it listens on.
pub(crate) fn spawn_serve(listen: &str, args: &[&str], log_level: &str) -> anyhow::Result<(KillOnDrop, String)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", listen])
        .args(args)
        .env("LOCKSTEP_LOG", log_level)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start `lockstep serve`")?;
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
    stdout.read_line(&mut line)?;
    // The server goes on printing (its other listeners' addresses): keep its stdout open and
    // drained, or its next line would fail on a closed pipe and end it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .trim()
        .strip_prefix("lockstep listening on ")
        .with_context(|| format!("unexpected output from lockstep serve: {line:?}"))?
        .to_owned();
    Ok((KillOnDrop(child), addr))
}

impl UnderTest {
    async fn start(in_process: bool, addr: Option<String>) -> anyhow::Result<(UnderTest, String)> {
        if let Some(addr) = addr {
            return Ok((UnderTest::Elsewhere, addr));
        }
        if in_process {
            let options = lockstep_server::Options {
                lean_listen: Some("127.0.0.1:0".parse()?),
                ..lockstep_server::Options::new("127.0.0.1:0".parse()?)
            };
            let server = lockstep_server::start(options).await?;
            let addr = server.local_addr().to_string();
            return Ok((UnderTest::InProcess(server), addr));
        }
        UnderTest::spawn(&["--in-memory", "--lean-listen", "127.0.0.1:0"]).await
    }

    /// `lockstep serve --listen 127.0.0.1:0` with `args`, in its own process.
    pub(crate) async fn spawn(args: &[&str]) -> anyhow::Result<(UnderTest, String)> {
        let (child, addr) = spawn_serve("127.0.0.1:0", args, "warn")?;
        Ok((UnderTest::Process(child), addr))
    }

    /// The server's process id, when it runs in a process of its own.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            UnderTest::Process(child) => Some(child.0.id()),
            _ => None,
        }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        match self {
            UnderTest::InProcess(server) => server.shutdown().await?,
            UnderTest::Process(mut child) => {
                child.0.kill()?;
                child.0.wait()?;
            }
            UnderTest::Elsewhere => {}
        }
        Ok(())
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (server, addr) = UnderTest::start(args.in_process, args.addr.clone()).await?;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| o.split(',').any(|o| name.contains(o)));
    let default_sizes: &[usize] = if args.quick { &[10, 100] } else { &[10, 100, 1000] };
    let sizes = args.sizes.as_deref().unwrap_or(default_sizes);
    let seconds = if args.quick { 1 } else { args.seconds };
    let mut rows = Vec::new();
    let mut extra = serde_json::Map::new();
    let placement = match (&args.addr, args.in_process) {
        (Some(_), _) => "already running",
        (None, true) => "in the benchmark's process",
        (None, false) => "in its own process",
    };
    eprintln!(
        "lockstep bench: server {placement} on {addr}; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let link = Link::of(&args);
    for &n in sizes {
        if wanted("fanout-saturation") {
            let messages = if args.quick { 2_000 } else { (4_000_000 / n as u64).clamp(20_000, 200_000) };
            rows.push(fanout(&addr, "fanout-saturation", n, 1, Pace::Saturate { messages, window: 512 }, link).await?);
            eprintln!("{:?}", rows.last().expect("pushed"));
        }
    }
    for &n in sizes {
        if wanted("fanout-rate") {
            rows.push(fanout(&addr, "fanout-rate", n, 1, Pace::Rate { rate: args.rate, seconds }, link).await?);
            eprintln!("{:?}", rows.last().expect("pushed"));
        }
    }
    if wanted("hung") {
        // The same load measured on the healthy subscribers, without and with a hung one,
        // alternated three times: the machine's noise is larger than the effect of one run.
        let pace = || Pace::Rate { rate: 2_000, seconds };
        let (mut none, mut one) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let a = fanout_with_hung(&addr, &format!("hung-none-{round}"), 100, 0, 1, pace(), Link::Own).await?;
            let b = fanout_with_hung(&addr, &format!("hung-one-{round}"), 99, 1, 1, pace(), Link::Own).await?;
            eprintln!("{a:?}\n{b:?}");
            none.push(a);
            one.push(b);
        }
        rows.push(median_p99("healthy-with-none-hung", none));
        rows.push(median_p99("healthy-with-1-hung", one));
    }
    if wanted("routing") {
        rows.push(fanout(&addr, "interest-routing", 100, 10, Pace::Rate { rate: args.rate, seconds }, link).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    for &n in sizes {
        if wanted("barrier") {
            let rounds = if args.quick {
                20
            } else if n >= 1000 {
                100
            } else {
                300
            };
            for summary in [false, true] {
                let mode =
                    BarrierMode { work: Duration::from_millis(args.barrier_work_ms), link: Link::of(&args), summary };
                rows.push(barrier(&addr, n, rounds, mode).await?);
                eprintln!("{:?}", rows.last().expect("pushed"));
            }
        }
    }
    for &n in sizes {
        if wanted("vote") {
            let rounds = if args.quick { 20 } else { 300 };
            rows.push(vote_rounds(&addr, n, rounds, Link::of(&args)).await?);
            eprintln!("{:?}", rows.last().expect("pushed"));
        }
    }
    if wanted("publish-confirm") {
        rows.push(publish_confirm(&addr, seconds, Link::of(&args)).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    if wanted("command") {
        rows.push(command_round_trip(&addr, seconds, Link::of(&args)).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    if wanted("trace-lookup") {
        rows.push(crate::bench_traces::lookup_hit(&addr, seconds).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    if wanted("trace-get-or-claim") {
        rows.push(crate::bench_traces::get_or_claim(&addr, 50, seconds).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    if wanted("tick-controller") {
        rows.push(crate::bench_streams::tick_controller(&addr, 10_000, seconds).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    if wanted("request") {
        rows.push(request_reply(&addr, seconds, Link::of(&args)).await?);
        eprintln!("{:?}", rows.last().expect("pushed"));
    }
    if wanted("collective") {
        // A participant process per member (see bench_collective.rs).
        for p in crate::bench_collective::plan(args.quick) {
            let m = crate::bench_collective::measure(&addr, server.pid(), &p).await?;
            let row = Row {
                scenario: m.scenario.clone(),
                n: m.members,
                rate: 1e6 / m.p(0.5) as f64,
                offered_rate: None,
                p50_us: m.p(0.5),
                p99_us: m.p(0.99),
                p999_us: m.p(0.999),
                lost: 0,
                count: m.rounds_us.len() as u64,
                note: m.note(),
            };
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    if wanted("delta") {
        let (row, v) = delta_bytes(&addr, if args.quick { 50 } else { 1000 }).await?;
        rows.push(row);
        extra.insert("delta".into(), v);
    }
    // Fresh servers of their own, measured from outside by the kernel's figures.
    if wanted("idle") && args.addr.is_none() && !args.in_process {
        let idle_sizes: &[usize] = if args.quick { &[100] } else { &[100, 1000, 10_000] };
        let mut each = Vec::new();
        for &n in idle_sizes {
            let (row, v) = idle_agents(n, seconds).await?;
            eprintln!("{row:?}");
            rows.push(row);
            each.push(v);
        }
        extra.insert("idle".into(), Value::Array(each));
    }
    if wanted("memory") && args.addr.is_none() && !args.in_process {
        let (row, v) = memory_return(if args.quick { 100 } else { 1000 }, seconds).await?;
        eprintln!("{row:?}");
        rows.push(row);
        extra.insert("memory_return".into(), v);
    }
    // A server of its own with a data directory of about 300 MB: not with --quick (a smoke test)
    // nor against a server started elsewhere.
    if wanted("backup") && !args.quick && args.addr.is_none() {
        rows.extend(backup_under_load().await?);
    }
    if wanted("context-cas") && args.addr.is_none() {
        let (context, v) = context_cas(100, seconds).await?;
        rows.extend(context);
        extra.insert("context_cas".into(), v);
    }
    // A server of its own (its memory is measured), keeping its data in SQLite.
    if wanted("systems") && args.addr.is_none() && !args.in_process {
        use crate::bench_systems::Scale;
        let runs: &[(Scale, u64)] = if args.quick {
            &[(Scale::QUICK, 5)]
        } else {
            &[(Scale::FULL, seconds.max(10)), (Scale::DENSE, seconds.max(10))]
        };
        let mut figures = Vec::new();
        for &(scale, secs) in runs {
            let (systems, v) = crate::bench_systems::measure(scale, secs).await?;
            for row in &systems {
                eprintln!("{row:?}");
            }
            rows.extend(systems);
            figures.push(v);
        }
        extra.insert("systems".into(), Value::Array(figures));
    }
    if wanted("task-handoff") {
        let tasks = if args.quick { 500 } else { 10_000 };
        let h = crate::bench_tasks::measure(&addr, 20, tasks).await?;
        let rate = h.tasks as f64 / h.elapsed.as_secs_f64().max(1e-9);
        for (scenario, hist, what) in [
            ("task-handoff-assign", &h.assigned, "submit → an executor holds the task"),
            ("task-handoff-complete", &h.completed, "completion → the submitter holds the completed event"),
        ] {
            let row = Row {
                scenario: scenario.into(),
                n: h.executors,
                rate,
                offered_rate: None,
                p50_us: hist.value_at_quantile(0.5),
                p99_us: hist.value_at_quantile(0.99),
                p999_us: hist.value_at_quantile(0.999),
                lost: h.tasks - hist.len(),
                count: hist.len(),
                note: format!("{what}; {} tasks, at most one outstanding per executor", h.tasks),
            };
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    if wanted("tick-round") {
        let rounds = if args.quick { 10 } else { 100 };
        let t = crate::bench_rounds::measure(&addr, 100, rounds).await?;
        let timeout = crate::bench_rounds::TIMEOUT_MS;
        for (scenario, hist, what) in [
            ("tick-round-hung", &t.waited, format!("rounds asking the hung agent: open → merged result delivered; timeout {timeout} ms (target p99 ≤ {} ms)", timeout + 5)),
            ("tick-round-isolated", &t.skipped, "rounds after the hung agent's breaker opened (it is skipped; replaced by a fresh hung agent)".to_owned()),
        ] {
            if hist.is_empty() {
                continue;
            }
            let row = Row {
                scenario: scenario.into(),
                n: t.participants,
                rate: (t.waited.len() + t.skipped.len()) as f64 / t.elapsed.as_secs_f64().max(1e-9),
                offered_rate: None,
                p50_us: hist.value_at_quantile(0.5),
                p99_us: hist.value_at_quantile(0.99),
                p999_us: hist.value_at_quantile(0.999),
                lost: if scenario == "tick-round-hung" { t.late } else { 0 },
                count: hist.len(),
                note: what,
            };
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    if wanted("history-replay") && args.addr.is_none() {
        // Its own fresh server, with a retention rule.
        let messages = if args.quick { 10_000 } else { 100_000 };
        rows.push(crate::bench_history::replay(messages, 3).await?);
    }
    if wanted("intake-validation") && args.addr.is_none() {
        // Fresh servers that differ only in their intake rule set.
        // Five rounds of about a second each: single runs on a shared machine move by 5-10 %.
        let records = if args.quick { 20_000 } else { 300_000 };
        rows.extend(crate::bench_intake::rows(records, if args.quick { 1 } else { 5 }).await?);
    }
    if wanted("durable-state-updates") {
        const WRITERS: usize = 100;
        if args.addr.is_some() {
            // Only the storage that server was started with can be measured, and it is not known here.
            let mut row = state_writers(&addr, "durable-state-updates", WRITERS, seconds).await?;
            row.note = format!("the server at {addr} with its own storage; {}", row.note);
            rows.push(row);
        } else {
            let (durable, v) = durable_state_updates(WRITERS, seconds).await?;
            rows.extend(durable);
            extra.insert("durable".into(), v);
        }
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.scenario.clone(),
                r.n.to_string(),
                if r.scenario == "state-delta-bytes" { format!("{:.1} %", r.rate) } else { format!("{:.0}", r.rate) },
                r.offered_rate.map_or("-".into(), |o| format!("{o:.0}")),
                format!("{:.3}", r.p50_us as f64 / 1000.0),
                format!("{:.3}", r.p99_us as f64 / 1000.0),
                format!("{:.3}", r.p999_us as f64 / 1000.0),
                r.lost.to_string(),
                r.note.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["SCENARIO", "N", "RATE/s", "OFFERED/s", "P50_MS", "P99_MS", "P999_MS", "LOST", "NOTE"],
            &table_rows
        )
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "machine": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get()), "os": std::env::consts::OS, "arch": std::env::consts::ARCH},
            "binary": binary_measures(),
            "server": placement,
            "rows": rows,
            "extra": extra,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    server.stop().await?;
    Ok(())
}

/// The build that ran the benchmark: its file's size (the release binary is kept under 25 MB,
/// docs/BENCHMARKS.md) and what it does on a panic (`abort` in release builds), so that a results
/// file says which binary its figures are of.
fn binary_measures() -> serde_json::Value {
    let exe = std::env::current_exe().ok();
    let bytes = exe.as_ref().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len());
    json!({
        "path": exe.map(|p| p.display().to_string()),
        "bytes": bytes,
        "panic": if cfg!(panic = "abort") { "abort" } else { "unwind" },
    })
}
