//! End-to-end: replica groups against a real `lockstep serve` on loopback.
//!
//! * members get ranks in join order and every membership change as an event among their
//!   deliveries; a state of several chunks published by one member is fetched by a late joiner
//!   whole, with its checksum verified; `lockstep groups --json` shows it;
//! * bad input: an unknown group, a non-member publishing or fetching, bytes that do not match
//!   the header's checksum, a blob over the limit, a publisher that drops its stream midway (the
//!   previous version stays current; the group is free for the next publish);
//! * a collective over the group names the member whose state diverged from the published version;
//! * the current version survives a restart of a server with a data directory, and a backup
//!   (`lockstep backup --to FILE` writes the groups' state into `FILE.groups`) restores it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use lockstep_client::proto::lockstep_client::LockstepClient;
use lockstep_client::proto::{self as v1};
use lockstep_client::{state_checksum, Agent, Collective, Error, GroupEvent, Reason, ReduceOp};
use support::{free_listen_addr, opts, reworded, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

async fn agents(server: &Server, ids: &[&str]) -> Vec<Agent> {
    let client = server.client().await;
    let mut out = Vec::new();
    for id in ids {
        // The first hears of every group's changes.
        let interests: &[&str] = if out.is_empty() { &["lockstep.groups.>"] } else { &[] };
        out.push(client.register(opts(id, "worker").interests(interests.iter().copied())).await.expect("registers"));
    }
    out
}

/// A blob of `len` bytes that differs at every position.
fn blob(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

/// The next group event among `agent`'s deliveries.
async fn next_event(d: &mut lockstep_client::Deliveries) -> GroupEvent {
    loop {
        let delivery = tokio::time::timeout(T, d.recv()).await.expect("an event in time").expect("deliveries");
        if let Some(e) = GroupEvent::from_delivery(&delivery) {
            return e;
        }
    }
}

#[tokio::test]
async fn a_late_joiner_fetches_the_current_version_whole_with_its_checksum() {
    let server = Server::start(&[]);
    let a = agents(&server, &["w1", "w2", "late"]).await;
    let mut events = a[0].deliveries().expect("deliveries");
    assert_eq!(a[0].join_group("model").await.unwrap().rank, 0);
    let m = a[1].join_group("model").await.unwrap();
    assert_eq!((m.rank, m.members.clone(), m.state), (1, vec!["w1".to_owned(), "w2".into()], None));
    let e = next_event(&mut events).await;
    assert_eq!((e.event.as_str(), e.agent.as_str()), ("joined", "w1"));
    let e = next_event(&mut events).await;
    assert_eq!((e.event.as_str(), e.agent.as_str(), e.members.len()), ("joined", "w2", 2));
    // Three chunks and a bit: 256 KiB chunks, the last one short.
    let params = blob(3 * 256 * 1024 + 5, 7);
    let s = a[0].publish_group_state("model", params.clone()).await.unwrap();
    assert_eq!((s.version, s.size, s.checksum.clone()), (1, params.len() as u64, state_checksum(&params)));
    let e = next_event(&mut events).await;
    assert_eq!((e.event.as_str(), e.version, e.checksum.as_str()), ("published", 1, s.checksum.as_str()));
    let newer = blob(1000, 9);
    let s2 = a[1].publish_group_state("model", newer.clone()).await.unwrap();
    assert_eq!(s2.version, 2);
    // The late joiner joins, sees version 2 in its membership, and fetches it.
    let m = a[2].join_group("model").await.unwrap();
    assert_eq!((m.rank, m.state.as_ref().map(|s| s.version)), (2, Some(2)));
    let got = a[2].fetch_group_state("model").await.unwrap();
    assert_eq!((got.state.version, got.state.published_by.as_str(), got.bytes), (2, "w2", newer));
    let (ok, out, err) = server.cli_async(&["groups", "--json"]).await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["group_id"], "model");
    assert_eq!(listed[0]["members"], serde_json::json!(["w1", "w2", "late"]));
    assert_eq!((listed[0]["version"].as_u64(), listed[0]["size"].as_u64()), (Some(2), Some(1000)));
    assert_eq!(listed[0]["checksum"], s2.checksum.as_str());
    let (ok, out, _) = server.cli_async(&["groups"]).await;
    assert!(ok && out.contains("0:w1,1:w2,2:late") && out.contains("1 group(s)"), "{out}");
    // Leaving closes the ranks up.
    a[0].leave_group("model").await.unwrap();
    let m = a[2].join_group("model").await.unwrap();
    assert_eq!(m.rank, 1);
}

fn reason_of(r: Result<impl std::fmt::Debug, Error>) -> Option<Reason> {
    r.expect_err("refused").reason()
}

/// A raw publish call: the header (with `checksum`), then `chunks`, then the stream stays open
/// (`hold`) or ends.
async fn raw_publish(
    server: &Server,
    agent: &Agent,
    size: u64,
    checksum: &str,
    chunks: Vec<Bytes>,
    hold: bool,
) -> Result<v1::GroupState, tonic::Status> {
    let mut raw = LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let header = v1::GroupStateHeader {
        namespace: String::new(),
        agent_id: agent.id().to_owned(),
        resume_token: agent.resume_token(),
        group_id: "g".into(),
        size,
        checksum: checksum.to_owned(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let up = |kind| v1::GroupStateUpload { kind: Some(kind) };
    tx.send(up(v1::group_state_upload::Kind::Header(header))).await.unwrap();
    for c in chunks {
        tx.send(up(v1::group_state_upload::Kind::Chunk(c))).await.unwrap();
    }
    let call = raw.publish_group_state(tokio_stream::wrappers::ReceiverStream::new(rx));
    if hold {
        // Drops the call (and its stream) once the server has read what was sent.
        let _ = tokio::time::timeout(Duration::from_millis(500), call).await;
        return Err(tonic::Status::cancelled("dropped"));
    }
    drop(tx);
    call.await.map(|r| r.into_inner())
}

#[tokio::test]
async fn bad_publishes_and_fetches_are_refused_and_leave_the_current_version() {
    let dir = ScratchDir::new("group-limits");
    let file = dir.join("lockstep.toml");
    std::fs::write(&file, "[limits]\nmax_group_state_bytes = 2000000\n").unwrap();
    let server = Server::start(&["--config", file.to_str().unwrap()]);
    let a = agents(&server, &["a", "b", "outsider"]).await;
    assert_eq!(reason_of(a[0].publish_group_state("g", blob(10, 1)).await), Some(Reason::UnknownGroup));
    a[0].join_group("g").await.unwrap();
    a[1].join_group("g").await.unwrap();
    assert_eq!(reason_of(a[0].fetch_group_state("g").await), Some(Reason::NoGroupState));
    let v1_bytes = blob(300_000, 3);
    a[0].publish_group_state("g", v1_bytes.clone()).await.unwrap();
    let e = a[2].publish_group_state("g", blob(10, 1)).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::NotGroupMember));
    assert!(reworded() || e.to_string().contains("outsider"), "{e}");
    assert_eq!(reason_of(a[2].fetch_group_state("g").await), Some(Reason::NotGroupMember));
    let e = a[0].publish_group_state("g", blob(2_000_001, 1)).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::InvalidArgument));
    assert!(reworded() || e.to_string().contains("max_group_state_bytes"), "{e}");
    // Bytes that do not hash to the header's checksum.
    let status = raw_publish(&server, &a[1], 4, &state_checksum(b"abcd"), vec![Bytes::from_static(b"abce")], false)
        .await
        .unwrap_err();
    assert_eq!(lockstep_client::Error::from(status).reason(), Some(Reason::ChecksumMismatch));
    // A publisher that drops its stream after one chunk of four.
    let chunk = Bytes::from(vec![1u8; 256 * 1024]);
    let _ = raw_publish(&server, &a[1], 4 * 256 * 1024, "", vec![chunk], true).await;
    // Nothing half-written is visible; the group is not left busy.
    let got = a[1].fetch_group_state("g").await.unwrap();
    assert_eq!((got.state.version, got.bytes), (1, v1_bytes));
    let deadline = tokio::time::Instant::now() + T;
    let s = loop {
        match a[1].publish_group_state("g", blob(5, 5)).await {
            Ok(s) => break s,
            // The server may not have seen the dropped stream end yet.
            Err(e) if e.reason() == Some(Reason::GroupBusy) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(s.version, 2);
}

#[tokio::test]
async fn an_allreduce_over_the_group_names_the_member_whose_state_diverged() {
    // r0 and r1 agree with the published version; r2 does not.
    let server = Server::start(&[]);
    let a = agents(&server, &["r0", "r1", "r2"]).await;
    for x in &a {
        x.join_group("replicas").await.unwrap();
    }
    let params = blob(64, 1);
    let published = a[0].publish_group_state("replicas", params.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for (i, x) in a.iter().enumerate() {
        // r2 drifted: its parameters hash otherwise.
        let sum = if i == 2 { state_checksum(b"drifted") } else { state_checksum(&params) };
        let c = Collective::replica("step-1", "replicas").checksum(sum);
        let x = x.clone();
        tasks.push(tokio::spawn(async move { x.allreduce_outcome(&c, &[i as f32, 1.0], ReduceOp::Sum).await }));
    }
    for t in tasks {
        let o = tokio::time::timeout(T, t).await.unwrap().unwrap().expect("completes: divergence is a warning");
        assert_eq!(o.result, vec![3.0, 3.0]);
        assert_eq!(o.diverged, vec!["r2"]);
        assert_eq!(o.reference_checksum, published.checksum);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_version_survives_a_restart() {
    let dir = ScratchDir::new("group-restart");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let a = agents(&server, &["a"]).await;
    a[0].join_group("g").await.unwrap();
    a[0].publish_group_state("g", blob(10, 1)).await.unwrap();
    let kept = blob(600_000, 2);
    let s = a[0].publish_group_state("g", kept.clone()).await.unwrap();
    drop(a);
    server.kill();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let b = agents(&server, &["b", "c"]).await;
    let m = b[0].join_group("g").await.unwrap();
    assert_eq!((m.rank, m.members, m.state.map(|s| s.version)), (0, vec!["b".to_owned()], Some(2)));
    let got = b[0].fetch_group_state("g").await.unwrap();
    assert_eq!((got.state.checksum, got.bytes), (s.checksum, kept));
    // The last member forgets the group: its state goes, on disk too.
    b[1].join_group("g").await.unwrap();
    assert_eq!(b[0].forget_group("g").await.unwrap_err().reason(), Some(Reason::InvalidArgument), "c remains");
    b[1].leave_group("g").await.unwrap();
    b[0].forget_group("g").await.unwrap();
    let (ok, out, _) = server.cli_async(&["groups", "--json"]).await;
    assert!(ok && out.trim() == "[]", "{out}");
    drop(b);
    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &[]);
    let d = agents(&server, &["d"]).await;
    assert_eq!(d[0].join_group("g").await.unwrap().state, None, "forgotten for good");
}

/// A backup takes the groups' state beside the database copy (`FILE.groups`); a server started on
/// the copy with that directory as its `groups` has the versions as of the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_the_groups_state() {
    let original = ScratchDir::new("group-backup-from");
    let mut server = Server::start_durable(&free_listen_addr(), original.path(), &[]);
    let a = agents(&server, &["a"]).await;
    a[0].join_group("g").await.unwrap();
    a[0].join_group("h").await.unwrap();
    let kept = blob(300_000, 3);
    let s = a[0].publish_group_state("g", kept.clone()).await.unwrap();
    a[0].publish_group_state("h", blob(10, 4)).await.unwrap();
    let file = original.join("copy.db");
    let (ok, out, err) = server.cli_async(&["backup", "--to", file.to_str().unwrap()]).await;
    assert!(ok, "backup failed: {out} {err}");
    // Published after the backup: not in it.
    a[0].publish_group_state("g", blob(20, 5)).await.unwrap();
    let groups = original.join("copy.db.groups");
    let files = std::fs::read_dir(&groups).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 2, "one state file per group in {}", groups.display());
    // A second backup to the same place is refused: neither the file nor its groups are replaced.
    let (ok, _, err) = server.cli_async(&["backup", "--to", file.to_str().unwrap()]).await;
    assert!(!ok && (reworded() || err.contains("already exists")), "{err}");
    drop(a);
    server.kill();

    let restored = ScratchDir::new("group-backup-to");
    std::fs::copy(&file, restored.join(lockstep_store::DB_FILE_NAME)).unwrap();
    std::fs::rename(&groups, restored.join(lockstep_server::GROUPS_DIR_NAME)).unwrap();
    let server = Server::start_durable(&free_listen_addr(), restored.path(), &[]);
    let b = agents(&server, &["b"]).await;
    assert_eq!(b[0].join_group("g").await.unwrap().state.map(|s| s.version), Some(1));
    let got = b[0].fetch_group_state("g").await.unwrap();
    assert_eq!((got.state.checksum, got.bytes), (s.checksum, kept));
    assert_eq!(b[0].join_group("h").await.unwrap().state.map(|s| s.size), Some(10));
}
