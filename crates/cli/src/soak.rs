//! `lockstep soak`: a server under steady load for minutes, with agents killed and the server
//! itself killed and restarted, watching what must not happen: memory that keeps growing, and
//! acknowledged writes that are lost.
//!
//! The server runs in its own process with a data directory (SQLite), on a fixed loopback port
//! so that agents find it again after its restart. Agents run in worker processes (`lockstep
//! soak-worker`, hidden), `--agents / --workers` each; every `--period-ms` each agent writes a
//! counter into its state (acknowledged with a version), publishes the time to its group's topic
//! (its group of `--group` agents of the same worker subscribes to it), and every second period
//! meets its group at a barrier (waiting a period and a half at most: every member's wait ends
//! at the same instant, so a group out of step meets again at its next round). Each agent
//! watches its neighbour's state, and every tenth
//! period reads its own state back from the server. Workers report what was acknowledged and
//! their latencies on their standard output, once a second.
//!
//! Faults: every `--kill-every-s` seconds a random worker is killed with SIGKILL (all its agents
//! at once) and replaced by a new one with new agent ids; once, at `--restart-at-s`, the server is
//! killed with SIGKILL and started again on the same data directory and port.
//!
//! What is checked: an acknowledged write is lost when the server later shows a lower counter —
//! read by the agent itself (after reconnecting and resuming, across the server's restart), by the
//! driver for every agent of a killed worker (the state of a lost agent is kept), and for every
//! agent at the end; and every call an agent makes is answered within a minute (the server's own
//! deadlines are shorter), else it is counted as unanswered. The figures: the server's resident memory every 10 s (growth between minute 2
//! and the end), p50/p99 of state acknowledgements, deliveries and barrier rounds, and counts.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use lockstep_client::{AgentOptions, Client, Participants, WatchTarget};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bench::KillOnDrop;

#[derive(Args)]
pub struct SoakArgs {
    /// Agents in all.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Worker processes the agents are spread over (a kill takes one worker's agents at once).
    #[arg(long, default_value_t = 20)]
    workers: usize,
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Kill a random worker every this many seconds (0: never).
    #[arg(long, default_value_t = 30)]
    kill_every_s: u64,
    /// Kill and restart the server this many seconds into the run (default: half-way; 0: never).
    #[arg(long)]
    restart_at_s: Option<u64>,
    /// Each agent's period: a state write and a publish each, a barrier every second one.
    #[arg(long, default_value_t = 2000)]
    period_ms: u64,
    /// Agents per barrier group (of one worker).
    #[arg(long, default_value_t = 10)]
    group: usize,
    /// How long the server keeps finished sync points and lost agents, in seconds
    /// (`engine.sync_retention_ms` and `engine.lost_retention_ms`; 0: the server's defaults, 10
    /// and 5 minutes). Under a minute by default, so that by minute 2, where the growth is
    /// measured from, these windows are full: the growth is then what stays, not the windows
    /// filling (at the defaults they fill for the first 5 and 10 minutes of this load).
    #[arg(long, default_value_t = 60)]
    retention_s: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One worker process (started by `lockstep soak`).
#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    addr: String,
    /// The agents' id prefix (`w3g1`: worker 3, its second generation).
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    agents: usize,
    #[arg(long)]
    period_ms: u64,
    #[arg(long)]
    group: usize,
}

/// What a worker reports once a second: what was acknowledged (cumulative), and what happened
/// since its last report.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    /// The highest acknowledged counter of each agent.
    acked: Vec<(String, u64)>,
    /// Latency samples since the last report, microseconds: (value, count).
    state_us: Vec<(u64, u64)>,
    delivery_us: Vec<(u64, u64)>,
    barrier_us: Vec<(u64, u64)>,
    counts: Counts,
}

/// What happened, counted.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Counts {
    writes: u64,
    deliveries: u64,
    barriers: u64,
    /// Calls that failed (around the server's restart, mostly), by kind.
    state_errors: u64,
    publish_errors: u64,
    barrier_errors: u64,
    /// Reads of an agent's own state (checks), and those showing less than it had acknowledged.
    checks: u64,
    lost_writes: u64,
    /// Calls not answered within [`ANSWER_WITHIN`] (the agent goes on without the answer).
    unanswered: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.writes += o.writes;
        self.deliveries += o.deliveries;
        self.barriers += o.barriers;
        self.state_errors += o.state_errors;
        self.publish_errors += o.publish_errors;
        self.barrier_errors += o.barrier_errors;
        self.checks += o.checks;
        self.lost_writes += o.lost_writes;
        self.unanswered += o.unanswered;
    }
}

/// What the workers of one process share between their agents and the reporter.
#[derive(Default)]
struct Shared {
    report: Report,
    acked: HashMap<String, u64>,
    state: Option<Histogram<u64>>,
    delivery: Option<Histogram<u64>>,
    barrier: Option<Histogram<u64>>,
    errors_named: u64,
}

/// Every call an agent makes is answered within this (the server's own deadlines are shorter: a
/// barrier's is at most a period and a half), else it is counted as unanswered and the agent goes
/// on.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// `call`, or `None` (counted and named) when it is not answered within [`ANSWER_WITHIN`].
async fn answered<T>(
    shared: &Mutex<Shared>,
    what: &str,
    agent: &str,
    call: impl std::future::Future<Output = T>,
) -> Option<T> {
    match tokio::time::timeout(ANSWER_WITHIN, call).await {
        Ok(answer) => Some(answer),
        Err(_) => {
            let mut s = shared.lock().expect("not poisoned");
            s.report.counts.unanswered += 1;
            eprintln!("soak worker: {agent}: {what} not answered within {ANSWER_WITHIN:?}");
            None
        }
    }
}

/// Errors a worker names on its standard error, at most this many: enough to tell what kind of
/// failure the counts are, without a line per failure.
const ERRORS_NAMED: u64 = 5;

fn note_error(s: &mut Shared, what: &str, e: &lockstep_client::Error) {
    if s.errors_named < ERRORS_NAMED {
        s.errors_named += 1;
        eprintln!("soak worker: {what}: {e}");
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn record(h: &mut Option<Histogram<u64>>, value: Duration) {
    h.get_or_insert_with(histogram).saturating_record(value.as_micros() as u64);
}

fn drain(h: &mut Option<Histogram<u64>>) -> Vec<(u64, u64)> {
    h.take().map_or_else(Vec::new, |h| h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Runs one worker's agents until killed.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let client = Client::connect(&args.addr).await?.with_namespace("soak");
    let shared = Arc::new(Mutex::new(Shared::default()));
    let start = tokio::time::Instant::now();
    let ids: Vec<String> = (0..args.agents).map(|i| format!("{}a{i}", args.prefix)).collect();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let group = i / args.group;
        let members: Vec<String> = ids.iter().skip(group * args.group).take(args.group).cloned().collect();
        let topic = format!("soak.{}.g{group}", args.prefix);
        let options = AgentOptions::new(id.clone(), "soak")
            .interests([topic.clone()])
            .reconnect_for(Some(Duration::from_secs(120)));
        let agent = client.register(options).await?;
        agent.watch_state(WatchTarget::Agent(ids[(i + 1) % ids.len()].clone())).await?;
        let (period, shared) = (Duration::from_millis(args.period_ms), shared.clone());
        let prefix = args.prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut deliveries = agent.deliveries().expect("taken once");
            let mut watched = agent.state_updates().expect("taken once");
            let reader_shared = shared.clone();
            tokio::spawn(async move {
                while let Some(d) = deliveries.recv().await {
                    let sent =
                        u64::from_le_bytes(d.payload.get(..8).and_then(|b| b.try_into().ok()).unwrap_or_default());
                    let mut s = reader_shared.lock().expect("not poisoned");
                    record(&mut s.delivery, Duration::from_micros(now_us().saturating_sub(sent)));
                    s.report.counts.deliveries += 1;
                }
            });
            tokio::spawn(async move { while watched.recv().await.is_some() {} });
            let mut counter = 0u64;
            let mut acked = 0u64;
            let mut tick = 0u64;
            loop {
                // Ticks are counted from the worker's start, so that a group's members meet at
                // the same round even after one of them fell behind.
                let next = (start.elapsed().as_millis() as u64 / period.as_millis() as u64).max(tick) + 1;
                tick = next;
                tokio::time::sleep_until(start + period * next as u32).await;
                counter += 1;
                let t = Instant::now();
                let id = agent.id();
                let delta = json!({ "counter": counter });
                let write = agent.update_state(&delta);
                if let Some(written) = answered(&shared, "state write", id, write).await {
                    let mut s = shared.lock().expect("not poisoned");
                    match written {
                        Ok(_) => {
                            acked = counter;
                            s.acked.insert(agent.id().to_owned(), acked);
                            record(&mut s.state, t.elapsed());
                            s.report.counts.writes += 1;
                        }
                        Err(e) => {
                            s.report.counts.state_errors += 1;
                            note_error(&mut s, "state", &e);
                        }
                    }
                }
                let publish = agent.publish(&topic, Bytes::copy_from_slice(&now_us().to_le_bytes()));
                if let Some(Err(_)) = answered(&shared, "publish", id, publish).await {
                    shared.lock().expect("not poisoned").report.counts.publish_errors += 1;
                }
                if tick.is_multiple_of(10) {
                    if let Some(Ok((_, state))) = answered(&shared, "state read", id, agent.get_state(id)).await {
                        let shown = state["counter"].as_u64().unwrap_or(0);
                        let mut s = shared.lock().expect("not poisoned");
                        s.report.counts.checks += 1;
                        if shown < acked {
                            eprintln!("{id}: the server shows counter {shown}, {acked} was acknowledged");
                            s.report.counts.lost_writes += 1;
                        }
                    }
                }
                if tick.is_multiple_of(2) {
                    // Every member's wait at a round ends at the same instant, half a period
                    // before the next round: members that fell out of step (one waiting at a
                    // round, another at the next after a slow call) meet again at the next. With
                    // a timeout of its own from each arrival, they leapfrogged one another for
                    // good, each waiting out a timeout at a round the other had left.
                    let ends = start + period * (tick as u32 + 1) + period / 2;
                    let Some(timeout) =
                        ends.checked_duration_since(tokio::time::Instant::now()).filter(|t| t.as_millis() > 0)
                    else {
                        continue;
                    };
                    let round = format!("{prefix}g{group}r{}", tick / 2);
                    let participants = Participants::Agents(members.clone());
                    let t = Instant::now();
                    let arrival = agent.sync(&round, participants, timeout, Bytes::new());
                    let Some(met) = answered(&shared, "barrier arrival", id, arrival).await else { continue };
                    let mut s = shared.lock().expect("not poisoned");
                    match met {
                        Ok(_) => {
                            record(&mut s.barrier, t.elapsed());
                            s.report.counts.barriers += 1;
                        }
                        Err(e) => {
                            s.report.counts.barrier_errors += 1;
                            note_error(&mut s, "barrier", &e);
                        }
                    }
                }
            }
        }));
    }
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let report = {
            let mut s = shared.lock().expect("not poisoned");
            let mut report = std::mem::take(&mut s.report);
            report.acked = s.acked.iter().map(|(k, v)| (k.clone(), *v)).collect();
            report.state_us = drain(&mut s.state);
            report.delivery_us = drain(&mut s.delivery);
            report.barrier_us = drain(&mut s.barrier);
            report
        };
        println!("{}", serde_json::to_string(&report)?);
    }
}

/// The driver's view of everything the workers reported.
#[derive(Default)]
struct Totals {
    acked: HashMap<String, u64>,
    state: Option<Histogram<u64>>,
    delivery: Option<Histogram<u64>>,
    barrier: Option<Histogram<u64>>,
    counts: Counts,
}

impl Totals {
    fn add(&mut self, r: Report) {
        self.acked.extend(r.acked);
        for (h, samples) in
            [(&mut self.state, r.state_us), (&mut self.delivery, r.delivery_us), (&mut self.barrier, r.barrier_us)]
        {
            for (value, count) in samples {
                let _ = h.get_or_insert_with(histogram).record_n(value, count);
            }
        }
        self.counts.add(r.counts);
    }
}

/// The server's data directory, removed when the soak ends, however it ends.
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn create() -> anyhow::Result<DataDir> {
        let dir = std::env::temp_dir().join(format!("lockstep-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(DataDir(dir))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the server's configuration into `dir` (its retention, see [`SoakArgs::retention_s`]):
/// the `--config` argument to start it with, if any.
fn server_config(dir: &std::path::Path, retention_s: u64) -> anyhow::Result<Option<String>> {
    if retention_s == 0 {
        return Ok(None);
    }
    let ms = retention_s.saturating_mul(1000);
    let path = dir.join("soak.toml");
    std::fs::write(&path, format!("[engine]\nsync_retention_ms = {ms}\nlost_retention_ms = {ms}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path.to_str().context("a UTF-8 path")?.to_owned()))
}

fn start_server(listen: &str, data: &std::path::Path, config: Option<&str>) -> anyhow::Result<KillOnDrop> {
    let data = data.to_str().context("a UTF-8 path")?;
    let mut args = vec!["--data-dir", data];
    args.extend(config.iter().flat_map(|c| ["--config", c]));
    // Warnings would be one line per agent of every killed worker.
    Ok(crate::bench::spawn_serve(listen, &args, "error")?.0)
}

/// Starts a worker whose reports are added to `totals` as they arrive.
fn start_worker(
    args: &SoakArgs,
    addr: &str,
    prefix: &str,
    agents: usize,
    totals: &Arc<Mutex<Totals>>,
) -> anyhow::Result<KillOnDrop> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["soak-worker", "--addr", addr, "--prefix", prefix])
        .args(["--agents", &agents.to_string(), "--period-ms", &args.period_ms.to_string()])
        .args(["--group", &args.group.to_string()])
        .env("LOCKSTEP_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start a soak worker")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let totals = totals.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(report) = serde_json::from_str::<Report>(&line) {
                totals.lock().expect("not poisoned").add(report);
            }
        }
    });
    Ok(KillOnDrop(child))
}

/// What checking acknowledged counters against the server found.
#[derive(Clone, Copy, Default, Serialize)]
struct Checked {
    /// Agents checked.
    agents: u64,
    /// Agents whose counter on the server is lower than what was acknowledged to them.
    lost: u64,
}

/// Checks each agent's acknowledged counter against the server. Agents the server no longer knows
/// are not checked: a killed worker's agents are forgotten after `lost_retention_ms`.
async fn check(client: &Client, acked: &[(String, u64)]) -> Checked {
    let mut checked = Checked::default();
    for (id, counter) in acked {
        if let Ok((_, state)) = client.get_state(id).await {
            checked.agents += 1;
            let shown = state["counter"].as_u64().unwrap_or(0);
            if shown < *counter {
                eprintln!("{id}: the server shows counter {shown}, {counter} was acknowledged");
                checked.lost += 1;
            }
        }
    }
    checked
}

fn percentile(h: &Option<Histogram<u64>>, q: f64) -> f64 {
    h.as_ref().map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers > 0 && args.agents >= args.workers, "give at least one agent per worker");
    anyhow::ensure!(args.group > 0, "--group must be at least 1");
    let data = DataDir::create()?;
    let addr = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        format!("127.0.0.1:{port}")
    };
    let config = server_config(&data.0, args.retention_s)?;
    let mut server = start_server(&addr, &data.0, config.as_deref())?;
    let totals = Arc::new(Mutex::new(Totals::default()));
    let per_worker = args.agents / args.workers;
    let mut generation = vec![0u32; args.workers];
    let mut workers = Vec::new();
    for w in 0..args.workers {
        workers.push(Some(start_worker(&args, &addr, &format!("w{w}g0"), per_worker, &totals)?));
    }
    let client = Client::connect(&addr).await?.with_namespace("soak");
    let restart_at = Duration::from_secs(args.restart_at_s.unwrap_or(args.seconds / 2));
    let (mut restarted, mut kills, mut after_kills) = (false, 0u32, Checked::default());
    let mut rss: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    let mut next_kill = Duration::from_secs(args.kill_every_s);
    let mut next_sample = Duration::ZERO;
    let retention = match args.retention_s {
        0 => "the server's default retention".to_owned(),
        s => format!("finished sync points and lost agents kept {s} s"),
    };
    eprintln!(
        "soak: {} agents in {} workers against {addr} for {} s ({retention})",
        per_worker * args.workers,
        args.workers,
        args.seconds
    );
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at = started.elapsed();
        if at >= next_sample {
            if let Ok((bytes, _)) = crate::bench::process_usage(server.0.id()) {
                rss.push((at.as_secs(), bytes));
                let t = totals.lock().expect("not poisoned");
                eprintln!(
                    "soak: {:>4} s  rss {:>6.1} MiB  writes {}  deliveries {}  barriers {}  errors {}/{}/{}  unanswered {}  lost {}",
                    at.as_secs(),
                    bytes as f64 / 1048576.0,
                    t.counts.writes,
                    t.counts.deliveries,
                    t.counts.barriers,
                    t.counts.state_errors,
                    t.counts.publish_errors,
                    t.counts.barrier_errors,
                    t.counts.unanswered,
                    t.counts.lost_writes + after_kills.lost
                );
            }
            next_sample += Duration::from_secs(10);
        }
        if !restarted && restart_at > Duration::ZERO && at >= restart_at {
            restarted = true;
            eprintln!("soak: killing the server (SIGKILL) and starting it again");
            drop(server);
            tokio::time::sleep(Duration::from_secs(1)).await;
            server = start_server(&addr, &data.0, config.as_deref())?;
        }
        // No kill close to the restart (10 s, or half the kill period if shorter): the restart's
        // reconnections and a worker's death would blur into one another.
        let quiet = Duration::from_secs(10).min(Duration::from_secs(args.kill_every_s) / 2);
        let near_restart = restart_at > Duration::ZERO && at.abs_diff(restart_at) < quiet;
        if args.kill_every_s > 0 && at >= next_kill && !near_restart {
            next_kill += Duration::from_secs(args.kill_every_s);
            let w = rand::random_range(0..args.workers);
            let prefix = format!("w{w}g{}", generation[w]);
            workers[w] = None; // SIGKILL, as the child is dropped
            kills += 1;
            // The killed agents' reports may still be read: give the reader a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let acked: Vec<(String, u64)> = totals
                .lock()
                .expect("not poisoned")
                .acked
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let checked = check(&client, &acked).await;
            after_kills.agents += checked.agents;
            after_kills.lost += checked.lost;
            generation[w] += 1;
            workers[w] = Some(start_worker(&args, &addr, &format!("w{w}g{}", generation[w]), per_worker, &totals)?);
        }
    }
    // The final check, with every agent still connected.
    let acked: Vec<(String, u64)> =
        totals.lock().expect("not poisoned").acked.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let at_the_end = check(&client, &acked).await;
    drop(workers);
    drop(server);

    let t = totals.lock().expect("not poisoned");
    let at_minute_2 = rss.iter().find(|(s, _)| *s >= 120).map(|(_, b)| *b);
    let last = rss.last().map(|(_, b)| *b);
    let growth = match (at_minute_2, last) {
        (Some(a), Some(b)) if a > 0 => Some((b as f64 - a as f64) / a as f64 * 100.0),
        _ => None,
    };
    let lost = t.counts.lost_writes + after_kills.lost + at_the_end.lost;
    let result = json!({
        "agents": per_worker * args.workers, "workers": args.workers, "seconds": args.seconds,
        "period_ms": args.period_ms, "group": args.group, "server_retention_s": args.retention_s, "worker_kills": kills, "server_restarts": u32::from(restarted),
        "rss_bytes": rss, "rss_growth_percent_from_minute_2": growth,
        "state_ack_ms": {"p50": percentile(&t.state, 0.5), "p99": percentile(&t.state, 0.99)},
        "delivery_ms": {"p50": percentile(&t.delivery, 0.5), "p99": percentile(&t.delivery, 0.99)},
        "barrier_round_ms": {"p50": percentile(&t.barrier, 0.5), "p99": percentile(&t.barrier, 0.99)},
        "acknowledged_writes": t.counts.writes, "deliveries": t.counts.deliveries, "barrier_rounds": t.counts.barriers,
        "errors": {"state": t.counts.state_errors, "publish": t.counts.publish_errors, "barrier": t.counts.barrier_errors},
        "unanswered_calls": t.counts.unanswered,
        "lost_acknowledged_writes": lost,
        "checks": {
            "by_agents": {"reads": t.counts.checks, "lost": t.counts.lost_writes},
            "after_kills": after_kills,
            "at_the_end": at_the_end,
        },
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    anyhow::ensure!(lost == 0, "{lost} acknowledged writes were lost");
    anyhow::ensure!(
        t.counts.writes > 0 && t.counts.barriers > 0 && t.counts.deliveries > 0,
        "the load did not run: {result}"
    );
    Ok(())
}
