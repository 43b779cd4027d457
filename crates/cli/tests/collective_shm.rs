//! End-to-end: the same-host shared-memory path of collectives against a real `lockstep serve` on
//! loopback.
//!
//! * every collective over every type gives the same bytes (the reference reduction in rank
//!   order) whether every member uses shared memory, none does, or some do;
//! * the server offers a member a private (0600) file in /dev/shm for its array, and for an
//!   allreduce one shared result file for all the members on the path, and removes them when the
//!   collective ends;
//! * an agent running several collectives at once over shared memory, with groups that overlap,
//!   gets each its own result: a shared result region is never written again under a reader;
//! * a member that breaks off mid-transfer over shared memory fails everyone with the same reason,
//!   and no file of the collective is left;
//! * bad signals (beyond the array, going back, a signal from a member given no region) are refused
//!   with a precise error naming the member, for everyone.

mod support;

use std::os::unix::fs::PermissionsExt;

use lockstep_client::proto::lockstep_client::LockstepClient;
use lockstep_client::proto::{self as v1};
use lockstep_client::{Agent, Collective, Element, Error, ReduceOp};
use lockstep_core::collective::reduce;
use support::collective::{all, bytes_of, data, every_op_for, members, Asks, T};
use support::{eventually, reworded, Server};

/// The files of server `pid`'s collectives in /dev/shm.
fn files_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("lockstep-shm-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()).collect()
        })
        .unwrap_or_default()
}

async fn no_files_left(server: &Server) {
    let pid = server.pid();
    let gone = eventually(T, || async move { files_of(pid).is_empty() }).await;
    assert!(gone, "files left behind: {:?}", files_of(pid));
}

// Several threads: the agents' heartbeats go on while the test computes its references.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_network_and_mixed_groups_give_the_same_bytes() {
    let server = Server::start(&[]);
    let agents = members(&server, &["m0", "m1", "m2"], "worker").await;
    let modes: [(&str, Asks); 3] = [("net", |_| false), ("shm", |_| true), ("mixed", |i| i != 1)];
    for (mode, shm) in modes {
        every_op_for::<f32>(&agents, &format!("{mode}-f32"), 1001, shm, |x| x as f32).await;
        every_op_for::<f64>(&agents, &format!("{mode}-f64"), 1001, shm, |x| x).await;
        every_op_for::<i32>(&agents, &format!("{mode}-i32"), 1001, shm, |x| x as i32).await;
        every_op_for::<i64>(&agents, &format!("{mode}-i64"), 1001, shm, |x| (x * 1e6) as i64).await;
    }
    // Several chunks and signals, the last ones partial (1.25 MiB of f32 and 3 elements more): the
    // same bytes from each path.
    let len = 5 * 64 * 1024 + 3;
    let inputs: Vec<Vec<f32>> = (0..3).map(|i| data(i, len, |x| x as f32)).collect();
    let mut outcomes = Vec::new();
    for (mode, shm) in modes {
        let results = all(&agents, |i, a| {
            let c = Collective::agents(format!("{mode}-large"), ["m0", "m1", "m2"]).shared_memory(shm(i));
            let x = inputs[i].clone();
            async move { a.allreduce(&c, &x, ReduceOp::Sum).await }
        })
        .await;
        for r in results {
            outcomes.push(bytes_of(&r.expect("a large allreduce completes")));
        }
    }
    let encoded: Vec<Vec<u8>> = inputs.iter().map(|v| bytes_of(v)).collect();
    let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    let expected = reduce(f32::DTYPE, ReduceOp::Sum, &refs);
    assert!(outcomes.iter().all(|o| *o == expected), "every member on every path gets the reference bytes");
    no_files_left(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_overlapping_collectives_each_get_their_own_result() {
    let server = Server::start(&[]);
    let agents = members(&server, &["m0", "m1", "m2"], "worker").await;
    let len = 1 << 17; // 512 KiB of f32: two chunks, a result that takes a while to read
                       // Each agent runs two chains of collectives at once, each chain one call after another: a call
                       // of one chain starts while the other chain's last call may still be reading its result from
                       // the shared result region. A third chain, of two of the agents, churns who holds what.
    let results = all(&agents, |i, a| async move {
        let chain = |name: &'static str, ids: &'static [&'static str], factor: f32| {
            let a = a.clone();
            async move {
                for round in 0..8u32 {
                    let base = factor * (round as f32 + 1.0);
                    let c = Collective::agents(format!("{name}-{round}"), ids.iter().copied()).shared_memory(true);
                    let n = if ids.len() == 3 { len } else { 1024 };
                    let r = a.allreduce(&c, &vec![base; n], ReduceOp::Sum).await?;
                    let want = base * ids.len() as f32;
                    if let Some(k) = r.iter().position(|v| *v != want) {
                        panic!("{name} round {round}: element {k} is {}, not {want}", r[k]);
                    }
                }
                Ok::<_, Error>(())
            }
        };
        let all3: &'static [&'static str] = &["m0", "m1", "m2"];
        let two: &'static [&'static str] = &["m0", "m1"];
        let (x, y) = tokio::join!(chain("x", all3, 1.0), chain("y", all3, 100.0));
        let z = if i < 2 { chain("z", two, 10_000.0).await } else { Ok(()) };
        x.and(y).and(z)
    })
    .await;
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("m{i}: {e}"));
    }
    no_files_left(&server).await;
}

/// A raw `Collective` call (the caller speaks the protocol itself).
struct Raw {
    tx: tokio::sync::mpsc::Sender<v1::CollectiveUpload>,
    results: tonic::Streaming<v1::CollectiveDownload>,
}

fn up(kind: v1::collective_upload::Kind) -> v1::CollectiveUpload {
    v1::CollectiveUpload { kind: Some(kind) }
}

async fn raw_join(server: &Server, agent: &Agent, id: &str, group: &[&str], length: u64, shm: bool) -> Raw {
    let mut raw = LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let header = v1::CollectiveHeader {
        namespace: String::new(),
        agent_id: agent.id().to_string(),
        resume_token: agent.resume_token(),
        collective_id: id.into(),
        group: Some(v1::CollectiveGroup {
            agents: group.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        kind: v1::CollectiveKind::Allreduce as i32,
        dtype: v1::ElementType::F32 as i32,
        op: v1::ReduceOp::Sum as i32,
        root: 0,
        length,
        timeout_ms: 0,
        shared_memory: shm,
        shm_region: 0,
        shm_result_region: 0,
        state_checksum: String::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(up(v1::collective_upload::Kind::Header(header))).await.unwrap();
    let results = raw.collective(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    Raw { tx, results }
}

impl Raw {
    async fn started(&mut self) -> v1::CollectiveStarted {
        match self.results.message().await.unwrap().expect("started").kind {
            Some(v1::collective_download::Kind::Started(s)) => s,
            other => panic!("expected the start, got {other:?}"),
        }
    }

    async fn signal(&self, written: u64) {
        let _ = self.tx.send(up(v1::collective_upload::Kind::ShmWritten(v1::CollectiveShmWritten { written }))).await;
    }

    /// The status the call ends with.
    async fn failure(mut self) -> tonic::Status {
        loop {
            match tokio::time::timeout(T, self.results.message()).await.expect("ends in time") {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("ended without a status"),
                Err(s) => return s,
            }
        }
    }
}

fn collective_error(r: Result<Vec<f32>, Error>) -> (String, Option<lockstep_client::Reason>, String) {
    match r {
        Err(e @ Error::CollectiveFailed { .. }) => {
            let reason = e.reason();
            let Error::CollectiveFailed { agent, message, .. } = e else { unreachable!() };
            (agent, reason, message.to_string())
        }
        other => panic!("expected a collective failure, got {other:?}"),
    }
}

/// Members `agents[..2]` ("a", "b") allreduce `len` f32 over shared memory (member "b") and the
/// network (member "a") in collective `id`, with the third member joining raw.
fn spawn_two(agents: &[Agent], id: &str, len: usize) -> Vec<tokio::task::JoinHandle<Result<Vec<f32>, Error>>> {
    agents[..2]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let a = a.clone();
            let c = Collective::agents(id, ["a", "b", "x"]).shared_memory(i == 1);
            tokio::spawn(async move { a.allreduce(&c, &vec![1.0f32; len], ReduceOp::Sum).await })
        })
        .collect()
}

/// Every member of `waiting` fails naming "x" with reason COLLECTIVE_ABORTED and the same message,
/// which contains `words` (unless messages are reworded).
async fn everyone_fails_naming_x(waiting: Vec<tokio::task::JoinHandle<Result<Vec<f32>, Error>>>, words: &str) {
    let mut seen = Vec::new();
    for w in waiting {
        let (agent, reason, message) = collective_error(tokio::time::timeout(T, w).await.unwrap().unwrap());
        assert_eq!((agent.as_str(), reason), ("x", Some(lockstep_client::Reason::CollectiveAborted)), "{message}");
        if !reworded() {
            assert!(message.contains(words), "{message:?} should say {words:?}");
        }
        seen.push(message);
    }
    assert_eq!(seen[0], seen[1], "every member gets the same reason");
}

#[tokio::test]
async fn a_member_breaking_off_over_shared_memory_fails_everyone_and_leaves_no_file() {
    let server = Server::start(&[]);
    let agents = members(&server, &["a", "b", "x"], "worker").await;
    let len: u64 = 4 * 256 * 1024 / 4; // four chunks of f32
    let waiting = spawn_two(&agents, "broken", len as usize);
    let mut x = raw_join(&server, &agents[2], "broken", &["a", "b", "x"], len, true).await;
    let started = x.started().await;
    let offer = started.shared_memory.expect("a loopback member asking for shared memory is offered it");
    let path = std::path::PathBuf::from(&offer.path);
    assert!(path.starts_with("/dev/shm"), "{path:?}");
    let meta = std::fs::metadata(&path).expect("the file exists while the collective runs");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "only the server's user may open it");
    assert_eq!(meta.len(), offer.size);
    assert_eq!((offer.array_offset, offer.array_bytes), (0, len * 4));
    // An allreduce: the result is in the region shared by the members on this path, written once.
    assert_eq!((offer.result_offset, offer.result_bytes), (0, len * 4));
    assert_eq!(std::fs::metadata(&offer.result_path).map(|m| m.len()).ok(), Some(offer.result_size));
    // One chunk of four written and signalled, then the member is gone.
    x.signal(256 * 1024).await;
    drop(x);
    everyone_fails_naming_x(waiting, "of its array in shared memory").await;
    no_files_left(&server).await;
    // The members go on: the next round, over shared memory, completes.
    let results = all(&agents[..2], |_, a| async move {
        a.allreduce(&Collective::agents("after", ["a", "b"]).shared_memory(true), &[2i32, 3], ReduceOp::Product).await
    })
    .await;
    for r in results {
        assert_eq!(r.unwrap(), vec![4, 9]);
    }
    no_files_left(&server).await;
}

#[tokio::test]
async fn bad_signals_are_refused_naming_the_member() {
    let server = Server::start(&[]);
    let agents = members(&server, &["a", "b", "x"], "worker").await;
    let len: u64 = 1000;
    // Beyond the array.
    let waiting = spawn_two(&agents, "beyond", len as usize);
    let mut x = raw_join(&server, &agents[2], "beyond", &["a", "b", "x"], len, true).await;
    let offer = x.started().await.shared_memory.expect("offered");
    // An allreduce: its own region holds its array; its result is in the shared result region.
    assert_eq!(
        (offer.size, offer.array_bytes, offer.result_bytes, offer.result_offset),
        (len * 4, len * 4, len * 4, 0)
    );
    assert!(offer.result_region != 0 && offer.result_region != offer.region, "{offer:?}");
    assert_eq!(offer.result_size, len * 4);
    let shared = std::fs::metadata(&offer.result_path).expect("the shared result file exists");
    assert_eq!(shared.permissions().mode() & 0o777, 0o600);
    x.signal(len * 4 + 1).await;
    let status = x.failure().await;
    everyone_fails_naming_x(
        waiting,
        "signalled 4001 bytes of its array written in shared memory, beyond its array of 4000 bytes",
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    // Going back.
    let waiting = spawn_two(&agents, "back", len as usize);
    let mut x = raw_join(&server, &agents[2], "back", &["a", "b", "x"], len, true).await;
    x.started().await.shared_memory.expect("offered");
    x.signal(400).await;
    x.signal(200).await;
    let _ = x.failure().await;
    everyone_fails_naming_x(waiting, "signalled 200 bytes of its array written in shared memory after signalling 400")
        .await;
    // A member on the stream path signalling shared memory.
    let waiting = spawn_two(&agents, "ungiven", len as usize);
    let mut x = raw_join(&server, &agents[2], "ungiven", &["a", "b", "x"], len, false).await;
    assert!(x.started().await.shared_memory.is_none(), "not asked for, not offered");
    x.signal(len * 4).await;
    let _ = x.failure().await;
    everyone_fails_naming_x(waiting, "signalled shared memory it was not given").await;
    // A chunk on the stream from a member given a region.
    let waiting = spawn_two(&agents, "chunk", len as usize);
    let mut x = raw_join(&server, &agents[2], "chunk", &["a", "b", "x"], len, true).await;
    x.started().await.shared_memory.expect("offered");
    let chunk = v1::CollectiveChunk { data: vec![0u8; len as usize * 4].into() };
    x.tx.send(up(v1::collective_upload::Kind::Chunk(chunk))).await.unwrap();
    let _ = x.failure().await;
    everyone_fails_naming_x(waiting, "sent something other than a shared-memory signal").await;
    no_files_left(&server).await;
}
