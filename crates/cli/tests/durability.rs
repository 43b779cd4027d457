//! End-to-end durability: a real `lockstep serve` on a data directory, killed with SIGKILL and
//! started again on the same directory and address, with real agents that reconnect by themselves.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lockstep_client::{
    proto as v1, Agent, AgentFilter, Client, ContextClient, ContextWrites, Lineage, Participants, Reason, SyncResult,
    TaskSpec, TraceOutput, WatchTarget,
};
use lockstep_store::{Durability, Snapshot, Store, DB_FILE_NAME};
use serde_json::{json, Value};
use support::{eventually, free_listen_addr, opts, reworded, serve_fails, ScratchDir, Server};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(10);
/// Long enough for a restarted server and the agents' reconnection backoff.
const BACK_WITHIN: Duration = Duration::from_secs(15);

/// Whether the agent's session works again: a confirmed publish (which changes no state) went
/// through the session stream.
async fn session_is_back(agent: &Agent) -> bool {
    let probe = agent.publish_confirmed("probe.alive", Bytes::new());
    matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(())))
}

/// Waits until every agent's session works again, naming those that did not come back.
async fn all_sessions_back(agents: &[Agent]) {
    for agent in agents {
        assert!(
            eventually(BACK_WITHIN, || session_is_back(agent)).await,
            "{} did not come back by itself: ended = {:?}",
            agent.id(),
            agent.ended()
        );
    }
}

/// Registry entries by agent id.
async fn registry(client: &Client) -> BTreeMap<String, v1::AgentInfo> {
    let agents = client.list_agents(AgentFilter::default()).await.expect("lists agents");
    agents.into_iter().map(|a| (a.agent_id.clone(), a)).collect()
}

/// Everything in the data directory's database, read with the store itself (server stopped).
fn load_db(dir: &Path) -> Snapshot {
    let store = Store::open(dir, Durability::Normal).expect("the database opens");
    store.integrity_check().expect("the database passes PRAGMA integrity_check");
    store.load().expect("the database loads")
}

/// State, version, registration (role, metadata, registration time) and a watch survive a SIGKILL;
/// the agents come back by themselves on the same sessions, and versions carry on from where they
/// were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_versions_survive_sigkill_and_agents_resume() {
    let dir = ScratchDir::new("resume");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let owner = client.register(opts("owner", "trader").metadata("desk", "fx")).await.unwrap();
    let worker = client.register(opts("worker", "worker").capabilities(["gpu"])).await.unwrap();
    let watcher = client.register(opts("watcher", "risk")).await.unwrap();
    watcher.watch_state(WatchTarget::Agent("owner".into())).await.unwrap();

    let mut owner_versions = Vec::new();
    for i in 1..=5 {
        owner_versions.push(owner.update_state(&json!({"step": i, "book": {format!("k{i}"): i}})).await.unwrap());
    }
    assert_eq!(owner_versions, vec![1, 2, 3, 4, 5]);
    let worker_deltas =
        [json!({"a": 1, "b": {"c": 2}}), json!({"b": {"c": null, "d": 3}}), json!({"a": null, "e": [1, 2]})];
    let mut worker_version = 0;
    for delta in &worker_deltas {
        worker_version = worker.update_state(delta).await.unwrap();
    }
    let owner_state = json!({"step": 5, "book": {"k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5}});
    assert_eq!(client.get_state("owner").await.unwrap(), (5, owner_state.clone()));
    assert_eq!(client.get_state("worker").await.unwrap(), (3, json!({"b": {"d": 3}, "e": [1, 2]})));
    assert!(eventually(T, || async { watcher.view("owner") == Some((5, owner_state.clone())) }).await);
    let before = registry(&client).await;

    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    // Restored from the data directory with a fresh lease, before any agent reconnected.
    let restored = registry(&client).await;
    assert_eq!(restored.keys().collect::<Vec<_>>(), vec!["owner", "watcher", "worker"]);
    assert!(restored.values().all(|a| a.status != v1::AgentStatus::Lost as i32), "{restored:?}");
    assert_eq!(client.get_state("owner").await.unwrap(), (5, owner_state.clone()));
    assert_eq!(client.get_state("worker").await.unwrap(), (worker_version, json!({"b": {"d": 3}, "e": [1, 2]})));

    let agents = [owner.clone(), worker.clone(), watcher.clone()];
    all_sessions_back(&agents).await;
    let after = registry(&client).await;
    for (id, was) in &before {
        let now = &after[id];
        // Resumed, not registered anew: the registration itself is the one from before the crash.
        assert_eq!(
            (&now.role, &now.capabilities, &now.metadata, now.registered_at_ms, now.state_version, now.status),
            (&was.role, &was.capabilities, &was.metadata, was.registered_at_ms, was.state_version, was.status),
            "{id}"
        );
    }
    assert!(agents.iter().all(|a| a.ended().is_none()));

    // Versions carry on; the watch was restored with the session (a resumed client does not
    // watch again), so the watcher follows the owner's next change.
    assert_eq!(owner.update_state(&json!({"step": 6})).await.unwrap(), 6);
    assert_eq!(worker.update_state(&json!({"e": null})).await.unwrap(), worker_version + 1);
    assert_eq!(watcher.update_state(&json!({"seen": true})).await.unwrap(), 1);
    let owner_state = json!({"step": 6, "book": {"k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5}});
    assert_eq!(client.get_state("owner").await.unwrap(), (6, owner_state.clone()));
    assert!(
        eventually(T, || async { watcher.view("owner") == Some((6, owner_state.clone())) }).await,
        "the watcher's view stays at {:?}",
        watcher.view("owner")
    );
    assert_eq!(client.get_state("worker").await.unwrap(), (worker_version + 1, json!({"b": {"d": 3}})));
}

/// Established TCP connections of this machine to `port` on loopback, from /proc/net/tcp.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    // Fields: sl, local address, remote address (hex ip:port), state (01: established), ...
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2).is_some_and(|r| r.ends_with(&remote)) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// An agent keeps one connection across a server restart: its session reconnects on the
/// connection its queries use. (Each reconnection used to dial a connection of its own, and the
/// agent's next query brought the first one back too: two per agent after a restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holds_one_connection_across_a_restart() {
    let dir = ScratchDir::new("one-connection");
    let listen = free_listen_addr();
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let agents = [
        client.register(opts("a", "worker")).await.unwrap(),
        client.register(opts("b", "worker")).await.unwrap(),
        client.register_shared(opts("c", "worker")).await.unwrap(),
    ];
    for agent in &agents {
        agent.update_state(&json!({"n": 1})).await.unwrap();
        assert_eq!(agent.get_state(agent.id()).await.unwrap().0, 1);
    }
    // The client's own connection (shared by c), and a and b's.
    assert_eq!(connections_to(port), 3);

    server.kill();
    drop(client);
    let server = Server::start_durable(&listen, dir.path(), &[]);
    all_sessions_back(&agents).await;
    for agent in &agents {
        assert_eq!(agent.update_state(&json!({"n": 2})).await.unwrap(), 2);
        assert_eq!(agent.get_state(agent.id()).await.unwrap(), (2, json!({"n": 2})));
    }
    assert!(
        eventually(T, || async { connections_to(port) == 3 }).await,
        "{} connections to the restarted server for 3 agents",
        connections_to(port)
    );
    let other = server.client().await;
    assert_eq!(other.get_state("c").await.unwrap().0, 2);
    assert_eq!(connections_to(port), 4, "the new client's own");
}

/// A barrier two of three agents were waiting at when the server was killed completes after the
/// restart when the third arrives: the waiting calls are carried over, the arrivals (and their
/// payloads) were kept, and nobody is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_in_progress_completes_after_restart() {
    let dir = ScratchDir::new("barrier");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let ids = ["a", "b", "c"];
    let mut agents = Vec::new();
    for id in ids {
        agents.push(client.register(opts(id, "worker")).await.unwrap());
    }
    let arrive = |agent: &Agent| {
        let agent = agent.clone();
        tokio::spawn(async move {
            let set = Participants::Agents(ids.iter().map(|s| s.to_string()).collect());
            let payload = Bytes::from(format!("from-{}", agent.id()));
            tokio::time::timeout(
                Duration::from_secs(30),
                agent.sync("checkpoint", set, Duration::from_secs(60), payload),
            )
            .await
        })
    };
    let arrived = |client: Client, expected: &'static [&'static str]| async move {
        eventually(T, || async { client.sync_status("checkpoint").await.is_ok_and(|s| s.arrived == expected) }).await
    };
    let first = arrive(&agents[0]);
    assert!(arrived(client.clone(), &["a"]).await, "a arrived");
    let second = arrive(&agents[1]);
    assert!(arrived(client.clone(), &["a", "b"]).await, "b arrived");

    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let status = client.sync_status("checkpoint").await.expect("the sync point was kept");
    assert_eq!(status.state, v1::sync_point_status::State::Waiting as i32);
    assert_eq!((status.arrived, status.missing), (vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]));
    assert!(!first.is_finished() && !second.is_finished(), "released before everyone arrived");

    let third = arrive(&agents[2]);
    let mut results: Vec<SyncResult> = Vec::new();
    for (id, task) in ids.iter().zip([first, second, third]) {
        let result = task.await.unwrap().unwrap_or_else(|_| panic!("{id} was not released in time"));
        results.push(result.unwrap_or_else(|e| panic!("{id}: {e:?}")));
    }
    let r = &results[0];
    assert!(results.iter().all(|x| x == r), "every waiter gets the same result: {results:?}");
    assert_eq!(r.arrival_order, ids);
    assert_eq!(r.payloads, ids.map(|id| Bytes::from(format!("from-{id}"))));
    assert!(!r.forced);
    let status = client.sync_status("checkpoint").await.unwrap();
    assert_eq!(status.state, v1::sync_point_status::State::Completed as i32);
    assert_eq!(status.arrived, ids);
}

/// What one agent's update loop saw: every acknowledged (version, n) in order, how many updates it
/// attempted (n counts attempts), the errors (`Debug`) of the attempts that failed, and the n of
/// those that got no answer at all.
#[derive(Default)]
struct UpdateLog {
    acked: Vec<(u64, u64)>,
    attempts: u64,
    errors: Vec<String>,
    unanswered: Vec<u64>,
}

/// How long a state update may go neither acknowledged nor failed before the harness gives up on it.
const UNANSWERED_AFTER: Duration = Duration::from_secs(5);

/// What one agent's barrier loop saw: each released round with its result, and failed arrivals.
#[derive(Default)]
struct BarrierLog {
    released: Vec<(u32, SyncResult)>,
    errors: Vec<String>,
}

/// What an update loop has done so far, for the harness to watch while it runs.
#[derive(Debug, Default)]
struct Progress {
    attempts: AtomicU64,
    acked: AtomicU64,
    last_acked_version: AtomicU64,
}

/// `work`'s output, or `None` if told to stop first (`work` is then abandoned).
async fn unless_stopped<F: std::future::Future>(stop: &mut watch::Receiver<bool>, work: F) -> Option<F::Output> {
    tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => None,
        out = work => Some(out),
    }
}

/// Updates the agent's state with `{"n": attempt}` until told to stop; counts acknowledgements.
async fn update_loop(agent: Agent, progress: Arc<Progress>, mut stop: watch::Receiver<bool>) -> UpdateLog {
    let mut log = UpdateLog::default();
    loop {
        log.attempts += 1;
        let n = log.attempts;
        progress.attempts.store(n, Ordering::Relaxed);
        let delta = json!({"n": n});
        let update = tokio::time::timeout(UNANSWERED_AFTER, agent.update_state(&delta));
        match unless_stopped(&mut stop, update).await {
            None => return log,
            Some(Ok(Ok(version))) => {
                log.acked.push((version, n));
                progress.last_acked_version.store(version, Ordering::Relaxed);
                progress.acked.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Err(e))) => {
                log.errors.push(format!("{e:?}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(Err(_)) => log.unanswered.push(n),
        }
    }
}

/// Meets `peers` at `round-0`, `round-1`... until told to stop; a failed round is tried again.
async fn barrier_loop(agent: Agent, peers: Vec<String>, mut stop: watch::Receiver<bool>) -> BarrierLog {
    let mut log = BarrierLog::default();
    let mut round = 0u32;
    loop {
        let sync_id = format!("round-{round}");
        let payload = Bytes::from(format!("{}:{round}", agent.id()));
        let arrival = agent.sync(&sync_id, Participants::Agents(peers.clone()), Duration::from_secs(60), payload);
        match unless_stopped(&mut stop, arrival).await {
            None => return log,
            Some(Ok(result)) => {
                log.released.push((round, result));
                round += 1;
            }
            Some(Err(e)) => {
                log.errors.push(format!("{}: {sync_id}: {e}", agent.id()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a context writer saw: each acknowledged compare-and-set as (version, n), and how many it
/// attempted (a CAS whose answer was lost may still have been applied).
#[derive(Default)]
struct ContextLog {
    acked: Vec<(u64, u64)>,
    attempts: u64,
    unanswered: u64,
}

/// Increments `harness.counter` by compare-and-set until told to stop: reads the key, then writes
/// `{"n": n + 1}` expecting the version read (on the agent's session, which comes back by itself).
async fn context_loop(agent: Agent, ctx: ContextClient, mut stop: watch::Receiver<bool>) -> ContextLog {
    let mut log = ContextLog::default();
    loop {
        let read = match unless_stopped(&mut stop, tokio::time::timeout(UNANSWERED_AFTER, ctx.get(COUNTER))).await {
            None => return log,
            Some(Ok(Ok(e))) => (e.version, e.value["n"].as_u64().unwrap_or(0)),
            Some(Ok(Err(e))) if e.reason() == Some(Reason::UnknownContextKey) => (0, 0),
            Some(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        log.attempts += 1;
        let (writes, value) = (agent.context(), json!({"n": read.1 + 1}));
        let write = writes.cas(COUNTER, read.0, &value);
        match unless_stopped(&mut stop, tokio::time::timeout(UNANSWERED_AFTER, write)).await {
            None => return log,
            Some(Ok(Ok(w))) => log.acked.push((w.version, read.1 + 1)),
            Some(Ok(Err(_))) => tokio::time::sleep(Duration::from_millis(5)).await,
            Some(Err(_)) => log.unanswered += 1,
        }
    }
}

/// What the trace recorder saw: each acknowledged record as (n, trace id, SHA-256 of its output),
/// and how many calls got no answer in time.
#[derive(Default)]
struct TraceLog {
    acked: Vec<(u64, String, String)>,
    unanswered: u64,
}

/// Records tool calls `harness.tool` on `{"n": n}` until told to stop, outputs alternately small
/// (kept in the database) and 100 KB (kept beside it in DIR/traces); a call that fails or gets
/// no answer is made again with the same output (a retry of an applied record is answered with the
/// stored trace).
async fn trace_loop(agent: Agent, mut stop: watch::Receiver<bool>) -> TraceLog {
    let mut log = TraceLog::default();
    let mut n = 0u64;
    loop {
        let size = if n.is_multiple_of(2) { 200 } else { 100_000 };
        let output: Vec<u8> = (0..size).map(|i| ((i as u64 + n) % 251) as u8).collect();
        let sha = lockstep_client::state_checksum(&output);
        let (traces, input) = (agent.traces(), json!({ "n": n }));
        let record = traces.record("harness.tool", &input, TraceOutput::bytes(output), Lineage::default());
        match unless_stopped(&mut stop, tokio::time::timeout(UNANSWERED_AFTER, record)).await {
            None => return log,
            Some(Ok(Ok(info))) => {
                assert_eq!(info.sha256, sha, "the trace acknowledged is the output sent");
                log.acked.push((n, info.id, sha));
                n += 1;
            }
            Some(Ok(Err(_))) => tokio::time::sleep(Duration::from_millis(20)).await,
            Some(Err(_)) => log.unanswered += 1,
        }
    }
}

/// The key the harness's context writers increment.
const COUNTER: &str = "harness.counter";

/// Checks the context writers: acknowledged CASes never go back, none is lost (each built on the
/// last, so the final count is at least their number), none is applied twice, and the store holds
/// what the server serves.
fn check_context(logs: &[ContextLog], (version, n): (u64, u64), stored: Option<(u64, u64)>) {
    let acked: u64 = logs.iter().map(|l| l.acked.len() as u64).sum();
    let attempts: u64 = logs.iter().map(|l| l.attempts).sum();
    for log in logs {
        for pair in log.acked.windows(2) {
            assert!(pair[1].0 > pair[0].0 && pair[1].1 > pair[0].1, "a writer's CASes went back: {pair:?}");
        }
        if let Some(&(v, m)) = log.acked.last() {
            assert!(version >= v && n >= m, "served ({version}, {n}) is behind an acknowledged CAS ({v}, {m})");
        }
    }
    assert!(n >= acked, "{acked} CASes acknowledged but the counter is {n}: one was lost");
    assert!(n <= attempts, "the counter is {n} after {attempts} attempts: one was applied twice");
    assert_eq!(stored, Some((version, n)), "stored vs served");
}

/// Checks one agent's acknowledged updates against its final stored (version, n): versions and n
/// strictly increase across restarts, no acknowledged update is lost, and no update was applied
/// twice (the version never advances by more than the number of attempts in between).
fn check_updates(id: &str, log: &UpdateLog, (version, n): (u64, u64)) {
    let mut previous = (0, 0);
    for &(v, m) in &log.acked {
        assert!(v > previous.0 && m > previous.1, "{id}: acknowledged {v} (n {m}) after {previous:?}");
        assert!(v - previous.0 <= m - previous.1, "{id}: version {v} (n {m}) after {previous:?}: applied twice?");
        previous = (v, m);
    }
    let (max_version, max_n) = previous;
    assert!(version >= max_version, "{id}: stored version {version} < acknowledged {max_version}");
    assert!(n >= max_n && n <= log.attempts, "{id}: stored n {n}, acknowledged {max_n}, attempted {}", log.attempts);
    assert!(version - max_version <= log.attempts - max_n, "{id}: stored version {version} after {previous:?}");
}

/// Checks the barrier rounds: every release names all participants once with their own payloads,
/// and every agent released at a round got the same result.
fn check_rounds(logs: &[BarrierLog], peers: &[String]) -> BTreeMap<u32, SyncResult> {
    let everyone: BTreeSet<&String> = peers.iter().collect();
    let mut by_round: BTreeMap<u32, SyncResult> = BTreeMap::new();
    for (round, result) in logs.iter().flat_map(|l| &l.released) {
        let order = &result.arrival_order;
        assert_eq!(result.sync_id, format!("round-{round}"));
        assert!(
            order.len() == peers.len() && order.iter().collect::<BTreeSet<_>>() == everyone,
            "round {round}: {order:?}"
        );
        let expected: Vec<Bytes> = order.iter().map(|id| Bytes::from(format!("{id}:{round}"))).collect();
        assert_eq!(result.payloads, expected, "round {round}");
        assert!(!result.forced, "round {round}");
        let first = by_round.entry(*round).or_insert_with(|| result.clone());
        assert_eq!(first, result, "round {round}: two different results");
    }
    by_round
}

/// What the client and the server say about these agents, for a failure message.
async fn describe(agents: &[(&Agent, &Progress)], client: &Client) -> String {
    let listed = registry(client).await;
    let mut out = String::new();
    for (agent, progress) in agents {
        let info = listed.get(agent.id()).map(|a| (a.status, a.last_heartbeat_ms, a.state_version));
        out += &format!(
            "  {}: {progress:?}; ended {:?}; a confirmed publish goes through: {}; server (status, last \
             heartbeat ms, version): {info:?}\n",
            agent.id(),
            agent.ended(),
            session_is_back(agent).await,
        );
    }
    out
}

/// What a task submitter saw: the ids of acknowledged submissions (a submission answered
/// `TASK_EXISTS` after a lost answer counts: the first one was applied).
#[derive(Default)]
struct SubmitLog {
    acked: Vec<String>,
    unanswered: u64,
}

/// Each attempt's deadline for the harness's tasks.
const TASK_TIMEOUT_MS: u64 = 1500;

/// Submits tasks `h-0`, `h-1`... until told to stop, each sent again (same id) until answered.
async fn submit_loop(agent: Agent, mut stop: watch::Receiver<bool>) -> SubmitLog {
    let mut log = SubmitLog::default();
    let mut n = 0u64;
    loop {
        let id = format!("h-{n}");
        // A short deadline: a task whose claim or completion answer was lost to a crash goes back soon.
        let spec = TaskSpec::new("harness", json!({ "n": n })).id(&id).max_attempts(100).timeout_ms(TASK_TIMEOUT_MS);
        let submit = tokio::time::timeout(UNANSWERED_AFTER, agent.submit_task(&spec));
        match unless_stopped(&mut stop, submit).await {
            None => return log,
            Some(Ok(Ok(_))) => {
                log.acked.push(id);
                n += 1;
            }
            Some(Ok(Err(e))) if e.reason() == Some(Reason::TaskExists) => {
                log.acked.push(id);
                n += 1;
            }
            Some(Ok(Err(_))) => tokio::time::sleep(Duration::from_millis(10)).await,
            Some(Err(_)) => log.unanswered += 1,
        }
    }
}

/// What a task executor saw: each acknowledged completion as (task id, attempt).
#[derive(Default)]
struct ExecLog {
    completed: Vec<(String, u32)>,
    refused: u64,
}

/// Claims tasks and completes each with its attempt number until told to stop, then until none
/// is ready.
async fn execute_loop(agent: Agent, mut stop: watch::Receiver<bool>) -> ExecLog {
    let mut log = ExecLog::default();
    let mut idle_after_stop = 0;
    loop {
        let stopped = *stop.borrow();
        let claim = tokio::time::timeout(UNANSWERED_AFTER, agent.claim_task(["harness"]));
        let claimed = if stopped { Some(claim.await) } else { unless_stopped(&mut stop, claim).await };
        let a = match claimed {
            None => continue,
            Some(Ok(Ok(Some(a)))) => a,
            Some(Ok(Ok(None))) if stopped => {
                idle_after_stop += 1;
                // Nothing ready for longer than a task's deadline: everything held has come back.
                if idle_after_stop * 50 > 2 * TASK_TIMEOUT_MS {
                    return log;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        idle_after_stop = 0;
        let (id, attempt) = (a.id.clone(), a.attempt);
        match tokio::time::timeout(UNANSWERED_AFTER, a.complete(&json!({ "attempt": attempt }))).await {
            Ok(Ok(())) => log.completed.push((id, attempt)),
            Ok(Err(e)) if matches!(e.reason(), Some(Reason::TaskNotHeld | Reason::TaskFinished)) => log.refused += 1,
            _ => {}
        }
    }
}

/// N times (`LOCKSTEP_CRASH_KILLS`, default 20) the server is SIGKILLed at a random moment under
/// load and started again on the same data directory: no acknowledged state update is lost or
/// applied twice, versions never go back, every barrier round is released with all of its
/// participants and the same result for each, the database passes an integrity check, every
/// update in flight at a crash is answered (acknowledged or failed) and no arrival fails; two
/// writers racing on one context key by compare-and-set lose no acknowledged write and apply none
/// twice; no acknowledged task submission or completion is lost, no task is completed twice, and
/// every task is completed or dead-lettered in the end; every acknowledged trace record (small
/// outputs in the database, large ones beside it) is served after the last restart with the bytes
/// that were sent, and is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_harness() {
    const AGENTS: usize = 10;
    const BARRIER_AGENTS: usize = 3;
    const CONTEXT_WRITERS: usize = 2;
    let kills: u32 = std::env::var("LOCKSTEP_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = ScratchDir::new("crash");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(client.register(opts(&format!("w-{i}"), "worker")).await.unwrap());
    }
    let peers: Vec<String> = agents[..BARRIER_AGENTS].iter().map(|a| a.id().to_owned()).collect();
    let (stop_tx, stop) = watch::channel(false);
    let progress: Vec<Arc<Progress>> = (0..AGENTS).map(|_| Arc::default()).collect();
    let updaters: Vec<_> = agents
        .iter()
        .zip(&progress)
        .map(|(a, p)| tokio::spawn(update_loop(a.clone(), p.clone(), stop.clone())))
        .collect();
    let barriers: Vec<_> = agents[..BARRIER_AGENTS]
        .iter()
        .map(|a| tokio::spawn(barrier_loop(a.clone(), peers.clone(), stop.clone())))
        .collect();
    // One agent records tool calls as traces.
    let tracer = tokio::spawn(trace_loop(agents[BARRIER_AGENTS].clone(), stop.clone()));
    // Two writers of shared context, racing on one key by compare-and-set.
    let context_writers: Vec<_> = agents[AGENTS - CONTEXT_WRITERS..]
        .iter()
        .map(|a| tokio::spawn(context_loop(a.clone(), client.context(), stop.clone())))
        .collect();
    // A task submitter and an executor.
    let submitter = tokio::spawn(submit_loop(agents[BARRIER_AGENTS].clone(), stop.clone()));
    let executor = tokio::spawn(execute_loop(agents[BARRIER_AGENTS + 1].clone(), stop.clone()));

    // Every agent gets an update acknowledged by the current server, then it dies at a random moment.
    let ack_counts = || progress.iter().map(|p| p.acked.load(Ordering::Relaxed)).collect::<Vec<_>>();
    let mut since = ack_counts();
    for kill in 0..=kills {
        let progressed = eventually(BACK_WITHIN, || async { ack_counts().iter().zip(&since).all(|(n, s)| n > s) });
        if !progressed.await {
            let now = ack_counts();
            let stuck: Vec<_> =
                (0..AGENTS).filter(|&i| now[i] <= since[i]).map(|i| (&agents[i], &*progress[i])).collect();
            let why = describe(&stuck, &server.client().await).await;
            panic!("after {kill} kills, no update acknowledged within {BACK_WITHIN:?} for {}:\n{why}", stuck.len());
        }
        if kill == kills {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(50..=400))).await;
        server.kill();
        server = Server::start_durable(&listen, dir.path(), &[]);
        since = ack_counts();
    }
    stop_tx.send(true).unwrap();
    let mut updates = Vec::new();
    for task in updaters {
        updates.push(task.await.unwrap());
    }
    let mut rounds = Vec::new();
    for task in barriers {
        rounds.push(task.await.unwrap());
    }
    let mut context_logs = Vec::new();
    for task in context_writers {
        context_logs.push(task.await.unwrap());
    }
    let submitted = submitter.await.unwrap();
    // The executor goes on until nothing is ready.
    let executed = executor.await.unwrap();
    let trace_log = tracer.await.unwrap();
    // Requests abandoned at the stop may still be applied: let them land before reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = server.client().await;
    let tasks = reader.tasks().list("", "harness").await.unwrap();
    let mut served = BTreeMap::new();
    for agent in &agents {
        served.insert(agent.id().to_owned(), reader.get_state(agent.id()).await.unwrap());
    }
    let counter = reader.context().get(COUNTER).await.expect("the counter was written");
    let served_counter = (counter.version, counter.value["n"].as_u64().unwrap());
    // Every acknowledged record is served with the output that was sent.
    for (n, id, sha) in &trace_log.acked {
        let t = reader.traces().get(id).await.unwrap_or_else(|e| panic!("acknowledged trace {n} lost: {e}"));
        assert_eq!(&t.info.sha256, sha, "trace {n}");
        assert_eq!(lockstep_client::state_checksum(&t.output), *sha, "trace {n}'s bytes");
    }
    server.kill();
    let db = load_db(dir.path());
    let stored_counter = db.context.iter().find(|k| k.key.key == COUNTER).and_then(|k| {
        let last = k.versions.last()?;
        let revision: Value = serde_json::from_str(&last.revision_json).ok()?;
        Some((last.version, revision["value"]["n"].as_u64()?))
    });
    check_context(&context_logs, served_counter, stored_counter);
    check_tasks(&submitted, &executed, &tasks, &db);
    let stored_traces: BTreeSet<&str> = db.traces.iter().map(|t| t.id.as_str()).collect();
    for (n, id, _) in &trace_log.acked {
        assert!(stored_traces.contains(id.as_str()), "acknowledged trace {n} is not in the database");
    }
    assert!(!trace_log.acked.is_empty(), "no trace record was acknowledged");

    let n_of = |state: &Value| state["n"].as_u64().unwrap_or_else(|| panic!("state without n: {state}"));
    for (agent, log) in agents.iter().zip(&updates) {
        let (version, state) = &served[agent.id()];
        check_updates(agent.id(), log, (*version, n_of(state)));
        let stored = db.agents.iter().find(|a| a.agent_id == agent.id()).expect("the agent is stored");
        let stored_state: Value = serde_json::from_str(&stored.state_json).unwrap();
        assert_eq!((stored.state_version, &stored_state), (*version, state), "{}: stored vs served", agent.id());
    }
    let released = check_rounds(&rounds, &peers);
    for point in db.sync_points.iter().filter(|p| p.point.state == "completed") {
        let arrived: BTreeSet<&String> = point.arrivals.iter().map(|a| &a.agent_id).collect();
        assert_eq!(arrived, point.point.required.iter().collect(), "{} stored as completed", point.point.sync_id);
    }
    assert!(!released.is_empty(), "no barrier round was released");

    let acked: usize = updates.iter().map(|l| l.acked.len()).sum();
    let failed: BTreeSet<&String> = updates.iter().flat_map(|l| &l.errors).collect();
    let failed_count: usize = updates.iter().map(|l| l.errors.len()).sum();
    let unanswered: Vec<(&str, u64)> =
        agents.iter().zip(&updates).flat_map(|(a, l)| l.unanswered.iter().map(|&n| (a.id(), n))).collect();
    let sync_errors: Vec<&String> = rounds.iter().flat_map(|l| &l.errors).collect();
    let context_acked: usize = context_logs.iter().map(|l| l.acked.len()).sum();
    let context_unanswered: u64 = context_logs.iter().map(|l| l.unanswered).sum();
    println!(
        "crash harness: {kills} kills, {acked} acknowledged updates by {AGENTS} agents, {} barrier rounds released \
         to {BARRIER_AGENTS} agents, {context_acked} context CASes acknowledged (counter at {}), {} trace records \
         acknowledged ({} unanswered), integrity check ok; {failed_count} updates failed in flight ({:?}), {} never \
         answered, {} arrivals failed",
        released.len(),
        served_counter.1,
        trace_log.acked.len(),
        trace_log.unanswered,
        failed.iter().take(3).collect::<Vec<_>>(),
        unanswered.len(),
        sync_errors.len(),
    );
    assert!(sync_errors.is_empty(), "arrivals failed instead of being carried over: {sync_errors:?}");
    assert!(
        unanswered.is_empty(),
        "state updates neither acknowledged nor failed within {UNANSWERED_AFTER:?}, as (agent, n): {unanswered:?}"
    );
    assert_eq!(context_unanswered, 0, "context writes neither acknowledged nor failed within {UNANSWERED_AFTER:?}");
    assert!(context_acked > 0, "no context write was acknowledged");
    println!(
        "crash harness: {} task submissions acknowledged, {} completions acknowledged, {} refused",
        submitted.acked.len(),
        executed.completed.len(),
        executed.refused
    );
    assert_eq!(submitted.unanswered, 0, "task submissions neither acknowledged nor failed in time");
    assert!(!executed.completed.is_empty(), "no task completion was acknowledged");
}

/// Checks task handoff across the kills: every acknowledged submission is served and stored; every
/// acknowledged completion stands with the output of the attempt that made it (so none was
/// completed twice); every task ended completed or dead-lettered; the store holds what is served.
fn check_tasks(submitted: &SubmitLog, executed: &ExecLog, tasks: &[v1::TaskInfo], db: &Snapshot) {
    let served: BTreeMap<&str, &v1::TaskInfo> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    for id in &submitted.acked {
        assert!(served.contains_key(id.as_str()), "acknowledged submission {id} lost");
    }
    let mut completions = BTreeSet::new();
    for (id, attempt) in &executed.completed {
        assert!(completions.insert(id), "task {id} acknowledged as completed twice");
        let t = served.get(id.as_str()).unwrap_or_else(|| panic!("completed task {id} lost"));
        assert_eq!(t.state, "completed", "{id}");
        assert_eq!(
            t.output_json,
            json!({ "attempt": attempt }).to_string(),
            "{id}: the acknowledged completion stands"
        );
    }
    for t in tasks {
        assert!(t.state == "completed" || t.state == "dead_lettered", "task {} ended {}", t.id, t.state);
    }
    for t in tasks {
        let stored = db.tasks.iter().find(|r| r.task_id == t.id).unwrap_or_else(|| panic!("{} not stored", t.id));
        let image: Value = serde_json::from_str(&stored.task_json).unwrap();
        assert_eq!(image["state"], json!(t.state), "{}: stored vs served", t.id);
        if t.state == "completed" {
            assert_eq!(image["output"].to_string(), t.output_json, "{}: stored vs served", t.id);
        }
    }
}

/// Bad storage is refused at start with a non-zero exit and a message naming the problem, and is
/// left as it was: a newer schema, a damaged file, an empty file, a data directory that is a file
/// or lies under one, a read-only directory, and a data directory another server is using.
#[test]
fn bad_storage_refuses_to_start() {
    let valid = ScratchDir::new("valid");
    Store::open(valid.path(), Durability::Normal).unwrap().close().unwrap();
    let valid_db = std::fs::read(valid.join(DB_FILE_NAME)).unwrap();
    let refused = |dir: &Path| {
        let (failed, stderr) = serve_fails(&["--data-dir", dir.to_str().unwrap()]);
        assert!(failed, "started on {}: {stderr}", dir.display());
        stderr
    };
    // A data directory holding a database file with these bytes.
    let with_db = |label: &str, bytes: &[u8]| {
        let dir = ScratchDir::new(label);
        std::fs::write(dir.join(DB_FILE_NAME), bytes).unwrap();
        dir
    };

    let newer = with_db("newer", &valid_db);
    let db = newer.join(DB_FILE_NAME);
    rusqlite::Connection::open(&db).unwrap().pragma_update(None, "user_version", 999).unwrap();
    let err = refused(newer.path());
    assert!(err.contains("newer") && err.contains("999") && err.contains(db.to_str().unwrap()), "{err}");
    let version: u32 =
        rusqlite::Connection::open(&db).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 999, "the newer database was left untouched");

    let garbage: Vec<u8> = b"garbage, no SQLite header\n".iter().copied().cycle().take(8192).collect();
    for (label, bytes) in [("garbage", &garbage[..]), ("empty", &[][..])] {
        let dir = with_db(label, bytes);
        let db = dir.join(DB_FILE_NAME);
        let err = refused(dir.path());
        assert!(err.contains("damaged or is not a lockstep database") && err.contains(db.to_str().unwrap()), "{err}");
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "the {label} file was left as it was");
    }

    let file = ScratchDir::new("file");
    let not_a_dir = file.join("data");
    std::fs::write(&not_a_dir, b"a file").unwrap();
    for dir in [not_a_dir.clone(), not_a_dir.join("below")] {
        let err = refused(&dir);
        assert!(err.contains(dir.to_str().unwrap()) && err.to_lowercase().contains("director"), "{err}");
    }

    let read_only = with_db("read-only", &valid_db);
    set_mode(read_only.path(), 0o555);
    if std::fs::write(read_only.join("probe"), b"").is_ok() {
        println!("note: running with write access to a mode 0555 directory (root?): read-only check skipped");
    } else {
        let err = refused(read_only.path());
        assert!(err.contains(read_only.path().to_str().unwrap()), "{err}");
        assert!(["read-only", "permission denied"].iter().any(|w| err.to_lowercase().contains(w)), "{err}");
    }
    set_mode(read_only.path(), 0o755);

    let shared = with_db("shared", &valid_db);
    let first = Server::start_durable("127.0.0.1:0", shared.path(), &[]);
    let err = refused(shared.path());
    assert!(err.contains("in use"), "{err}");
    let (ok, out, err) = first.cli(&["status", "--json"]);
    assert!(ok, "the first server still serves: {out} {err}");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `lockstep backup` writes a consistent copy of a running server's database; a new server started
/// on that copy has the state as of the backup, not what changed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore() {
    let original = ScratchDir::new("backup-from");
    let mut server = Server::start_durable(&free_listen_addr(), original.path(), &[]);
    let client = server.client().await;
    let keeper = client.register(opts("keeper", "trainer").metadata("run", "r7")).await.unwrap();
    for epoch in 1..=3 {
        keeper.update_state(&json!({"epoch": epoch, "loss": {format!("e{epoch}"): epoch * 10}})).await.unwrap();
    }
    let backed_up = client.get_state("keeper").await.unwrap();
    assert_eq!(backed_up.0, 3);

    // Into the data directory: where backups go unless the server names another place.
    let file = original.join("copy.db");
    let (ok, out, err) = server.cli_async(&["backup", "--to", file.to_str().unwrap()]).await;
    assert!(ok, "backup failed: {out} {err}");
    assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 0), "no backup at {}", file.display());
    // Changed after the backup: not in the copy.
    assert_eq!(keeper.update_state(&json!({"epoch": 4})).await.unwrap(), 4);
    server.kill();

    let restored = ScratchDir::new("backup-to");
    std::fs::copy(&file, restored.join(DB_FILE_NAME)).unwrap();
    let server = Server::start_durable(&free_listen_addr(), restored.path(), &[]);
    let client = server.client().await;
    assert_eq!(client.get_state("keeper").await.unwrap(), backed_up);
    let info = &registry(&client).await["keeper"];
    assert_eq!((info.role.as_str(), info.metadata.get("run").map(String::as_str)), ("trainer", Some("r7")));
}

/// A backup is written only inside the server's backup directory (the data directory unless
/// `--backup-dir` names another), never over an existing file or `.partial` file, and is readable
/// by its owner only.
#[tokio::test]
async fn backups_stay_in_their_directory_private_and_never_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let data = ScratchDir::new("backup-rules");
    let elsewhere = ScratchDir::new("backup-rules-elsewhere");
    let server = Server::start_durable("127.0.0.1:0", data.path(), &[]);
    let admin = server.client().await.admin(None, Some("ops")).unwrap();

    let outside = elsewhere.join("copy.db");
    let err = admin.backup(outside.to_str().unwrap()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(reworded() || err.to_string().contains("backup directory"), "{err}");
    let sneaky = data.join("..").join(elsewhere.path().file_name().unwrap()).join("copy.db");
    assert_eq!(admin.backup(sneaky.to_str().unwrap()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert!(!outside.exists(), "nothing written outside");

    let partial = data.join("taken.db.partial");
    std::fs::write(&partial, b"another backup being written").unwrap();
    let err = admin.backup(data.join("taken.db").to_str().unwrap()).await.unwrap_err();
    assert_eq!((err.code(), err.reason()), (tonic::Code::FailedPrecondition, Some(Reason::BackupFailed)));
    assert_eq!(std::fs::read(&partial).unwrap(), b"another backup being written", "left alone");

    let copy = data.join("copy.db");
    assert!(admin.backup(copy.to_str().unwrap()).await.unwrap() > 0);
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
    let err = admin.backup(copy.to_str().unwrap()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "an existing file is never overwritten");
    drop(server);

    let other = ScratchDir::new("backup-rules-dir");
    let server = Server::start_durable("127.0.0.1:0", data.path(), &["--backup-dir", other.path().to_str().unwrap()]);
    let admin = server.client().await.admin(None, Some("ops")).unwrap();
    assert!(admin.backup(other.join("copy.db").to_str().unwrap()).await.unwrap() > 0);
    let err = admin.backup(data.join("again.db").to_str().unwrap()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "only the named directory: {err:?}");
}
