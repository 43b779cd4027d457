//! A backup of a large database runs beside the engine: while `Admin.Backup` copies, checks and
//! syncs several hundred MB (more on a fast disk), a hundred agents keep getting their state
//! updates acknowledged and their barriers released, well inside their leases, and none of them
//! loses its lease.
//!
//! The bound is derived from the configuration, not from the machine's speed: a backup that held up
//! the engine would show as round trips as long as the copy, which outlasts a lease several times.
//! The figure (p99 under 100 ms) is measured by `lockstep bench --only backup` and recorded in
//! docs/BENCHMARKS.md.
//!
//! The data directory is written with the store's API before the server starts (agents of a
//! namespace `archive`, lost long ago, each keeping a large JSON state), which is much faster than
//! sending that much through the server. The live agents then run rounds: a small state update, a
//! barrier of all of them, a short pause. The test measures both kinds of round trips, takes a
//! backup in the middle, and checks what happened during the copy.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_client::{proto as v1, Agent, AgentFilter, Client, Participants};
use lockstep_store::DB_FILE_NAME;
use serde_json::json;
use support::{opts, ScratchDir, Server};
use tonic::Code;

/// Agents first kept in the archive namespace, and the size of each one's state: about 300 MB.
/// The archive doubles until a backup of it, taken before the server starts, outlasts
/// [`CALIBRATION_LEASES`] leases (a machine with a fast disk copies 300 MB in half a second), up
/// to [`MAX_ARCHIVE_AGENTS`].
const ARCHIVE_AGENTS: usize = 300;
const MAX_ARCHIVE_AGENTS: usize = 2_400;
const ARCHIVE_STATE_BYTES: usize = 1_000_000;
const CALIBRATION_LEASES: u32 = 2;

/// Live agents, and the server's lease settings (lease = interval × intervals).
const AGENTS: usize = 100;
const HEARTBEAT_INTERVAL_MS: u64 = 200;
const LEASE_INTERVALS: u64 = 3;
/// Connections the live agents share.
const CONNECTIONS: usize = 4;

/// During a backup, the p99 round trip of each kind stays under this share of a lease.
const P99_LEASE_SHARE: u32 = 2;
/// The pause between two rounds of an agent (keeps the load steady rather than flat out).
const ROUND_PAUSE: Duration = Duration::from_millis(500);
/// How long the agents run before the backup starts and after it ends.
const SETTLE: Duration = Duration::from_millis(1500);
/// A barrier that is not released within this fails the agent (and the test).
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The payload an agent brings to a barrier to say that this round is the last.
const LAST_ROUND: &[u8] = b"last";

/// One agent's timings for one round.
struct Round {
    /// The state update: sent, acknowledged.
    update: (Instant, Instant),
    /// The barrier: arrival sent, release received.
    sync: (Instant, Instant),
    round: u64,
}

/// Runs rounds until some agent brings [`LAST_ROUND`] to a barrier; agent 0 does so once `stop`
/// is set. Each round starts `offset` into the pause, so that the agents' updates are spread over
/// it, as independent agents' work would be. Returns the agent's timings, and the error that
/// stopped it early, if one did.
async fn run_rounds(
    agent: Arc<Agent>,
    offset: Duration,
    leader: bool,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<Round>, Option<String>) {
    let mut rounds = Vec::new();
    for round in 0.. {
        tokio::time::sleep(offset).await;
        let sent = Instant::now();
        if let Err(e) = agent.update_state(&json!({ "round": round })).await {
            return (rounds, Some(format!("{}: update: {e}", agent.id())));
        }
        let update = (sent, Instant::now());
        let last = leader && stop.load(std::sync::atomic::Ordering::SeqCst);
        let payload = if last { Bytes::from_static(LAST_ROUND) } else { Bytes::new() };
        let arrived = Instant::now();
        let sync_id = format!("round-{round}");
        let released = match agent.sync(&sync_id, Participants::Count(AGENTS as u32), SYNC_TIMEOUT, payload).await {
            Ok(released) => released,
            Err(e) => return (rounds, Some(format!("{}: barrier {sync_id}: {e}", agent.id()))),
        };
        rounds.push(Round { update, sync: (arrived, Instant::now()), round });
        if released.payloads.iter().any(|p| p.as_ref() == LAST_ROUND) {
            break;
        }
        tokio::time::sleep(ROUND_PAUSE - offset).await;
    }
    (rounds, None)
}

/// The round trips of one kind that overlapped the copy window, and how many ended inside it.
struct Window {
    latencies: Vec<Duration>,
    completed_inside: usize,
}

impl Window {
    fn of(spans: impl Iterator<Item = (Instant, Instant)>, from: Instant, to: Instant) -> Window {
        let mut latencies = Vec::new();
        let mut completed_inside = 0;
        for (start, end) in spans {
            if start <= to && end >= from {
                latencies.push(end - start);
            }
            if (from..=to).contains(&end) {
                completed_inside += 1;
            }
        }
        latencies.sort();
        Window { latencies, completed_inside }
    }

    fn percentile(&self, p: usize) -> Duration {
        self.latencies.get((self.latencies.len() * p).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default()
    }

    fn p99(&self) -> Duration {
        self.percentile(99)
    }
}

/// Writes the archive into `dir`, doubling it until a backup of it to `scratch` (taken without
/// load, then deleted) lasts at least `target`, so that the backup under load outlasts a lease on
/// a fast machine as on a slow one.
fn grow_archive_until_a_backup_outlasts(dir: &std::path::Path, scratch: &std::path::Path, target: Duration) {
    let mut agents = ARCHIVE_AGENTS;
    loop {
        let generated = Instant::now();
        lockstep_store::archive::write_archive(dir, agents, ARCHIVE_STATE_BYTES).expect("writes the archive");
        let db_bytes = std::fs::metadata(dir.join(DB_FILE_NAME)).unwrap().len();
        let copying = Instant::now();
        lockstep_store::Store::backup_file(&dir.join(DB_FILE_NAME), scratch).expect("backs up the archive");
        let copied = copying.elapsed();
        std::fs::remove_file(scratch).expect("removes the calibration copy");
        eprintln!(
            "database: {} MB ({agents} archived agents) written in {:?}, backed up without load in {copied:?}",
            db_bytes / 1_000_000,
            generated.elapsed()
        );
        if copied >= target || agents >= MAX_ARCHIVE_AGENTS {
            return;
        }
        agents *= 2;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_large_database_does_not_hold_up_the_agents() {
    let data = ScratchDir::new("backup-load");
    let lease = Duration::from_millis(HEARTBEAT_INTERVAL_MS * LEASE_INTERVALS);
    let backups = ScratchDir::new("backup-load-files");
    grow_archive_until_a_backup_outlasts(data.path(), &backups.join("calibration.db"), lease * CALIBRATION_LEASES);

    let server = Server::start_durable(
        "127.0.0.1:0",
        data.path(),
        &[
            "--heartbeat-interval-ms",
            &HEARTBEAT_INTERVAL_MS.to_string(),
            "--lease-intervals",
            &LEASE_INTERVALS.to_string(),
            "--backup-dir",
            backups.path().to_str().unwrap(),
        ],
    );
    let client = server.client().await;
    // Several connections, as separate processes would have.
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(server.client().await);
    }
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let opts = opts(&format!("worker-{i}"), "worker");
        agents.push(Arc::new(connections[i % CONNECTIONS].register(opts).await.expect("registers")));
    }
    assert_eq!(agents[0].heartbeat_interval(), Duration::from_millis(HEARTBEAT_INTERVAL_MS));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            let offset = ROUND_PAUSE * i as u32 / AGENTS as u32;
            tokio::spawn(run_rounds(agent.clone(), offset, i == 0, stop.clone()))
        })
        .collect();
    tokio::time::sleep(SETTLE).await;

    // Acknowledged before the backup starts, so the copy must hold it.
    let marker = client.register(opts("marker", "marker")).await.expect("registers");
    let marked = marker.update_state(&json!({ "before_backup": true })).await.expect("updates");

    let (file, second_file) = (backups.join("copy.db"), backups.join("second.db"));
    let admin = Arc::new(client.admin(None, Some("backup-load")).expect("admin client"));
    let from = Instant::now();
    let backup = tokio::spawn({
        let (admin, file) = (admin.clone(), file.to_str().unwrap().to_owned());
        async move { admin.backup(&file).await }
    });
    // A second backup while the first runs is refused at once.
    tokio::time::sleep(lease / 4).await;
    let second = tokio::time::timeout(lease / 2, admin.backup(second_file.to_str().unwrap())).await;
    let bytes = backup.await.unwrap().expect("the backup succeeds");
    let to = Instant::now();
    let took = to - from;

    tokio::time::sleep(SETTLE).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut rounds, mut failures) = (Vec::new(), Vec::new());
    for task in tasks {
        let (done, failure) = task.await.expect("the agent's task ran");
        rounds.push(done);
        failures.extend(failure);
    }

    // Figures first, so that a failing run still reports them.
    let updates = Window::of(rounds.iter().flatten().map(|r| r.update), from, to);
    // A barrier's release latency counts from the last arrival of its round.
    let mut last_arrival = std::collections::HashMap::new();
    for r in rounds.iter().flatten() {
        let at = last_arrival.entry(r.round).or_insert(r.sync.0);
        *at = (*at).max(r.sync.0);
    }
    let releases = Window::of(rounds.iter().flatten().map(|r| (last_arrival[&r.round], r.sync.1)), from, to);
    let started = rounds.iter().flatten().map(|r| r.update.0).min().expect("rounds ran");
    let (before_updates, before_releases) = (
        Window::of(rounds.iter().flatten().map(|r| r.update), started, from),
        Window::of(rounds.iter().flatten().map(|r| (last_arrival[&r.round], r.sync.1)), started, from),
    );
    eprintln!(
        "before the backup: {} updates (p50 {:?}, p99 {:?}), {} releases (p50 {:?}, p99 {:?})",
        before_updates.latencies.len(),
        before_updates.percentile(50),
        before_updates.p99(),
        before_releases.latencies.len(),
        before_releases.percentile(50),
        before_releases.p99()
    );
    eprintln!(
        "backup: {bytes} bytes in {took:?} (lease {lease:?}); during the copy: {} updates (p99 {:?}, {} acknowledged \
         inside), {} releases (p99 {:?}, {} received inside), {} rounds in all; {} agents failed (first: {:?})",
        updates.latencies.len(),
        updates.p99(),
        updates.completed_inside,
        releases.latencies.len(),
        releases.p99(),
        releases.completed_inside,
        rounds.iter().map(Vec::len).max().unwrap_or(0),
        failures.len(),
        failures.first(),
    );

    assert!(
        took > lease,
        "the backup took {took:?}, not longer than one lease ({lease:?}): this test proves nothing; raise \
         MAX_ARCHIVE_AGENTS"
    );
    for (kind, window, before) in [
        ("state update acknowledgements", &updates, &before_updates),
        ("barrier releases", &releases, &before_releases),
    ] {
        assert!(window.completed_inside > 0, "no {kind} during the {took:?} backup");
        let bound = lease / P99_LEASE_SHARE;
        assert!(
            window.p99() < bound,
            "{kind} during the backup: p99 {:?} over {} round trips, above half a lease ({bound:?}; before the \
             backup: p99 {:?})",
            window.p99(),
            window.latencies.len(),
            before.p99()
        );
    }
    match second {
        Ok(Err(e)) => {
            assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
            assert!(e.to_string().contains("already running"), "{e}");
        }
        other => panic!("a second backup during the first must be refused at once, got {other:?}"),
    }
    assert!(!second_file.exists());

    // No agent was lost: every agent ran every round, every session is alive and the registry
    // says so.
    assert!(failures.is_empty(), "agents failed during the test: {failures:?}");
    for agent in &agents {
        assert_eq!(agent.ended(), None, "{} lost its session", agent.id());
    }
    let lost = client
        .list_agents(AgentFilter { status: Some(v1::AgentStatus::Lost), ..Default::default() })
        .await
        .expect("lists agents");
    assert!(
        lost.is_empty(),
        "agents lost during the backup: {:?}",
        lost.iter().map(|a| &a.agent_id).collect::<Vec<_>>()
    );

    drop(server);
    restore_check(&file, marked).await;
}

/// A server started on a directory holding the copy has the archive and what was acknowledged
/// before the backup started.
async fn restore_check(file: &std::path::Path, marked: u64) {
    let restored = ScratchDir::new("backup-load-restored");
    std::fs::rename(file, restored.join(DB_FILE_NAME)).expect("moves the copy into place");
    let server = Server::start_durable("127.0.0.1:0", restored.path(), &[]);
    let client: Client = server.client().await;
    let (version, state) = client.get_state("marker").await.expect("the marker is in the copy");
    assert_eq!((version, &state["before_backup"]), (marked, &json!(true)));
    let archive = client.with_namespace("archive");
    let (_, state) =
        archive.get_state(&format!("archive-{}", ARCHIVE_AGENTS - 1)).await.expect("the archive is in the copy");
    assert_eq!(state["n"], json!(ARCHIVE_AGENTS - 1));
    assert_eq!(state["blob"].as_str().map(str::len), Some(ARCHIVE_STATE_BYTES - 32));
    let workers = client.list_agents(AgentFilter { role: Some("worker".into()), ..Default::default() }).await.unwrap();
    assert_eq!(workers.len(), AGENTS);
}
