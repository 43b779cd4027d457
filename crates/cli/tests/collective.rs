//! End-to-end: collectives on numeric arrays against a real `lockstep serve` on loopback.
//!
//! * allreduce (every op), broadcast, allgather and reduce-scatter over f32, f64, i32 and i64 give
//!   every member the same bytes as the reference reduction in rank order;
//! * a large array (64 MiB per member) streams in chunks and comes back whole;
//! * a member calling with another length or type fails the collective for everyone, naming it;
//! * an outsider is refused alone; a member that never joins is named at the deadline; a member
//!   that leaves fails everyone at once; a member whose stream breaks mid-transfer fails everyone
//!   with the same reason;
//! * `lockstep collectives list --json` shows who is missing.

mod support;

use std::time::{Duration, Instant};

use lockstep_client::proto::lockstep_client::LockstepClient;
use lockstep_client::proto::{self as v1};
use lockstep_client::{Collective, Error, ReduceOp};
use support::collective::{all, every_op_for, members, T};
use support::{eventually, reworded, Server};

#[tokio::test]
async fn every_collective_gives_everyone_the_reference_result_for_every_type() {
    let server = Server::start(&[]);
    let agents = members(&server, &["m0", "m1", "m2"], "worker").await;
    every_op_for::<f32>(&agents, "f32", 1001, |_| false, |x| x as f32).await;
    every_op_for::<f64>(&agents, "f64", 1001, |_| false, |x| x).await;
    every_op_for::<i32>(&agents, "i32", 1001, |_| false, |x| x as i32).await;
    every_op_for::<i64>(&agents, "i64", 1001, |_| false, |x| (x * 1e6) as i64).await;
    // A role's ranks are its members' ids in order, whatever order they call in.
    let c = Collective::role("by-role", "worker");
    let results = all(&agents, |i, a| {
        let c = c.clone();
        async move { a.allgather(&c, &[i as i32]).await }
    })
    .await;
    for r in results {
        assert_eq!(r.unwrap(), vec![0, 1, 2]);
    }
}

#[tokio::test]
async fn a_large_array_streams_in_chunks_and_comes_back_whole() {
    let server = Server::start(&[]);
    let agents = members(&server, &["a", "b"], "worker").await;
    let len = 64 * 1024 * 1024 / 4; // 64 MiB of f32 per member
    let c = Collective::agents("big", ["a", "b"]);
    // Built off the runtime's threads, which keep the agents' heartbeats going meanwhile.
    let inputs: Vec<Vec<f32>> = tokio::task::spawn_blocking(move || {
        (0..2).map(|i| (0..len).map(|k| (k % 1000) as f32 * (i as f32 + 1.0)).collect()).collect()
    })
    .await
    .unwrap();
    let inputs = std::sync::Arc::new(inputs);
    let results = all(&agents, |i, a| {
        let (c, inputs) = (c.clone(), inputs.clone());
        async move { a.allreduce(&c, &inputs[i], ReduceOp::Sum).await }
    })
    .await;
    for r in results {
        let r = r.expect("a 64 MiB allreduce completes");
        assert_eq!(r.len(), len);
        let wrong = tokio::task::spawn_blocking(move || {
            r.iter().enumerate().filter(|(k, v)| **v != (k % 1000) as f32 * 3.0).count()
        });
        assert_eq!(wrong.await.unwrap(), 0, "every element reduced");
    }
}

fn collective_error(r: Result<Vec<f32>, Error>) -> (String, Vec<String>, Option<lockstep_client::Reason>, String) {
    match r {
        Err(e @ Error::CollectiveFailed { .. }) => {
            let reason = e.reason();
            let Error::CollectiveFailed { agent, missing, message } = e else { unreachable!() };
            (agent, missing, reason, message.to_string())
        }
        other => panic!("expected a collective failure, got {other:?}"),
    }
}

/// Waits until `lockstep collectives list --json` shows collective `id` missing exactly `missing`.
async fn until_missing(server: &Server, id: &str, missing: &[&str]) {
    let shown = eventually(T, || async {
        let (ok, out, _) = server.cli_async(&["collectives", "list", "--json"]).await;
        let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        ok && list
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["collective_id"] == id && c["missing"] == serde_json::json!(missing)))
    })
    .await;
    assert!(shown, "collective {id} never showed {missing:?} missing");
}

#[tokio::test]
async fn a_member_with_another_length_or_type_fails_everyone_naming_it() {
    let server = Server::start(&[]);
    let agents = members(&server, &["a", "b", "c"], "worker").await;
    let c = Collective::agents("mismatch", ["a", "b", "c"]);
    let (a, c1) = (agents[0].clone(), c.clone());
    let first = tokio::spawn(async move { a.allreduce(&c1, &[1.0f32; 4], ReduceOp::Sum).await });
    until_missing(&server, "mismatch", &["b", "c"]).await;
    let second = agents[1].allreduce(&c, &[1.0f32; 5], ReduceOp::Sum).await;
    let first = tokio::time::timeout(T, first).await.unwrap().unwrap();
    for r in [first, second] {
        let (agent, _, reason, message) = collective_error(r);
        assert_eq!(agent, "b");
        assert_eq!(reason, Some(lockstep_client::Reason::CollectiveMismatch));
        assert!(reworded() || (message.contains("f32 × 5") && message.contains("f32 × 4")), "{message}");
    }
    // Another element type is named the same way.
    let c = Collective::agents("mismatch-type", ["a", "b"]);
    let (a, c1) = (agents[0].clone(), c.clone());
    let first = tokio::spawn(async move { a.allreduce(&c1, &[1.0f32; 4], ReduceOp::Sum).await });
    until_missing(&server, "mismatch-type", &["b"]).await;
    let second = agents[1].allreduce(&c, &[1i64; 4], ReduceOp::Sum).await;
    let (agent, ..) = collective_error(tokio::time::timeout(T, first).await.unwrap().unwrap());
    assert_eq!(agent, "b");
    assert!(matches!(second, Err(Error::CollectiveFailed { ref agent, .. }) if agent == "b"), "{second:?}");
    // An outsider is refused alone.
    let r = agents[2].allreduce(&Collective::agents("outsiders", ["a", "b"]), &[1.0f32], ReduceOp::Sum).await;
    assert_eq!(collective_error(r).2, Some(lockstep_client::Reason::NotCollectiveMember));
}

#[tokio::test]
async fn the_deadline_names_who_never_joined_and_a_leaving_member_fails_everyone_at_once() {
    let server = Server::start(&[]);
    let agents = members(&server, &["a", "b", "c"], "worker").await;
    let c = Collective::agents("late", ["a", "b", "c"]).timeout(Duration::from_millis(500));
    let results = all(&agents[..2], |_, a| {
        let c = c.clone();
        async move { a.allreduce(&c, &[1.0f32; 8], ReduceOp::Sum).await }
    })
    .await;
    for r in results {
        let (_, missing, reason, message) = collective_error(r);
        assert_eq!(missing, vec!["c"]);
        assert_eq!(reason, Some(lockstep_client::Reason::CollectiveTimeout));
        assert!(reworded() || message.contains("never joined: c"), "{message}");
    }
    // c leaves while a and b wait with a long deadline: they fail at once, naming c.
    let c = Collective::agents("leaver", ["a", "b", "c"]).timeout(Duration::from_secs(600));
    let started = Instant::now();
    let waiting: Vec<_> = agents[..2]
        .iter()
        .map(|a| {
            let (a, c) = (a.clone(), c.clone());
            tokio::spawn(async move { a.allreduce(&c, &[1.0f32; 8], ReduceOp::Sum).await })
        })
        .collect();
    until_missing(&server, "leaver", &["c"]).await;
    agents[2].clone().close().await.expect("leaves");
    for w in waiting {
        let (agent, _, reason, message) = collective_error(tokio::time::timeout(T, w).await.unwrap().unwrap());
        assert_eq!((agent.as_str(), reason), ("c", Some(lockstep_client::Reason::CollectiveAborted)), "{message}");
    }
    assert!(started.elapsed() < Duration::from_secs(600));
}

#[tokio::test]
async fn a_member_breaking_off_mid_transfer_fails_everyone_with_the_same_reason() {
    let server = Server::start(&[]);
    let agents = members(&server, &["a", "b", "quitter"], "worker").await;
    let len: u64 = 4 * 256 * 1024 / 4; // four chunks of f32
    let c = Collective::agents("broken", ["a", "b", "quitter"]);
    let waiting: Vec<_> = agents[..2]
        .iter()
        .map(|a| {
            let (a, c) = (a.clone(), c.clone());
            tokio::spawn(async move { a.allreduce(&c, &vec![1.0f32; len as usize], ReduceOp::Sum).await })
        })
        .collect();
    until_missing(&server, "broken", &["quitter"]).await;
    // The quitter joins through a raw stream, sends one chunk of four, and drops the call.
    let mut raw = LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let header = v1::CollectiveHeader {
        namespace: String::new(),
        agent_id: "quitter".into(),
        resume_token: agents[2].resume_token(),
        collective_id: "broken".into(),
        group: Some(v1::CollectiveGroup {
            agents: vec!["a".into(), "b".into(), "quitter".into()],
            ..Default::default()
        }),
        kind: v1::CollectiveKind::Allreduce as i32,
        dtype: v1::ElementType::F32 as i32,
        op: v1::ReduceOp::Sum as i32,
        root: 0,
        length: len,
        timeout_ms: 0,
        state_checksum: String::new(),
        shared_memory: false,
        shm_region: 0,
        shm_result_region: 0,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let up = |kind| v1::CollectiveUpload { kind: Some(kind) };
    tx.send(up(v1::collective_upload::Kind::Header(header))).await.unwrap();
    let chunk = v1::CollectiveChunk { data: vec![0u8; 256 * 1024].into() };
    tx.send(up(v1::collective_upload::Kind::Chunk(chunk))).await.unwrap();
    let mut results = raw.collective(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let started = results.message().await.unwrap().expect("started");
    assert!(matches!(started.kind, Some(v1::collective_download::Kind::Started(_))));
    drop(results);
    drop(tx);
    let mut seen = Vec::new();
    for w in waiting {
        let (agent, _, reason, message) = collective_error(tokio::time::timeout(T, w).await.unwrap().unwrap());
        assert_eq!(
            (agent.as_str(), reason),
            ("quitter", Some(lockstep_client::Reason::CollectiveAborted)),
            "{message}"
        );
        seen.push(message);
    }
    assert_eq!(seen[0], seen[1], "every member gets the same reason");
    // The members go on: the next round completes.
    let c = Collective::agents("after", ["a", "b"]);
    let results = all(&agents[..2], |_, a| {
        let c = c.clone();
        async move { a.allreduce(&c, &[2i32, 3], ReduceOp::Product).await }
    })
    .await;
    for r in results {
        assert_eq!(r.unwrap(), vec![4, 9]);
    }
}
