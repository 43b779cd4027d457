//! End-to-end: a real `lockstep serve` process on loopback, real gRPC clients.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use lockstep_client::{proto as v1, AgentFilter, Client, Error, Participants, Reason, WatchTarget};
use serde_json::json;
use support::{eventually, opts, reworded, Server};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn duplicate_ids_are_refused_unless_the_resume_token_is_presented() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let first = client.register(opts("worker-1", "worker")).await.unwrap();
    let err = client.register(opts("worker-1", "worker")).await.err().expect("second registration refused");
    assert!(matches!(err, Error::AlreadyRegistered(ref m) if reworded() || m.contains("worker-1")), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::AlreadyRegistered));
    let wrong = client.register(opts("worker-1", "worker").resume_token("not-the-token")).await.err().unwrap();
    assert!(matches!(wrong, Error::AlreadyRegistered(_)));

    let v = first.update_state(&json!({"step": 1})).await.unwrap();
    let second = client.register(opts("worker-1", "worker").resume_token(first.resume_token())).await.unwrap();
    // The old session is closed for good (taken over: it never reconnects, which would take the
    // session back); the new one carries on with the same state.
    assert!(eventually(T, || async { first.ended().is_some() }).await);
    assert_eq!(first.ended().and_then(|e| e.reason()), Some(Reason::SessionTakenOver));
    tokio::time::sleep(Duration::from_millis(500)).await; // ten times the first reconnection delay
    assert!(first.ended().is_some());
    assert_eq!(second.update_state(&json!({"step": 2})).await.unwrap(), v + 1);
    assert_eq!(client.get_state("worker-1").await.unwrap(), (v + 1, json!({"step": 2})));
}

#[tokio::test]
async fn messages_go_only_to_matching_interests_in_publisher_order() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let btc = client.register(opts("btc", "strategy").interests(["market.btc.>"])).await.unwrap();
    let trades = client.register(opts("trades", "strategy").interests(["market.*.trades"])).await.unwrap();
    let all = client.register(opts("all", "recorder").interests(["all"])).await.unwrap();
    let none = client.register(opts("risk", "risk").interests(["risk.metrics"])).await.unwrap();
    let scanner = client.register(opts("scanner", "scanner")).await.unwrap();

    for i in 0..50u32 {
        let topic = if i % 2 == 0 { "market.btc.trades" } else { "market.eth.trades" };
        scanner.publish(topic, i.to_be_bytes().to_vec()).await.unwrap();
    }
    scanner.publish("market.btc.book.l2", &b"book"[..]).await.unwrap();
    scanner.publish_confirmed("done.marker", &b""[..]).await.unwrap();

    async fn collect(agent: &lockstep_client::Agent, n: usize) -> Vec<lockstep_client::Delivery> {
        let mut d = agent.deliveries().unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            out.push(tokio::time::timeout(T, d.recv()).await.expect("delivery in time").expect("open"));
        }
        out
    }
    let btc_got = collect(&btc, 26).await;
    assert!(btc_got.iter().all(|d| d.topic.starts_with("market.btc.")));
    assert_eq!(btc_got.last().unwrap().topic, "market.btc.book.l2");
    let trades_got = collect(&trades, 50).await;
    let order: Vec<u32> = trades_got.iter().map(|d| u32::from_be_bytes(d.payload[..].try_into().unwrap())).collect();
    assert_eq!(order, (0..50).collect::<Vec<_>>(), "publisher order is preserved");
    assert!(trades_got.windows(2).all(|w| w[1].seq == w[0].seq + 1), "consecutive sequence numbers");
    assert!(trades_got.iter().all(|d| d.publisher == "scanner" && d.missed_before == 0));
    let all_got = collect(&all, 52).await;
    assert_eq!(all_got.last().unwrap().topic, "done.marker");
    // The risk agent got nothing: a later message on its own topic is the first it sees.
    scanner.publish("risk.metrics", &b"var"[..]).await.unwrap();
    let first = collect(&none, 1).await;
    assert_eq!(first[0].topic, "risk.metrics");
    assert_eq!(first[0].seq, 1);
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_exactly_how_many_it_missed() {
    let server = Server::start(&["--queue-capacity", "16"]);
    let client = server.client().await;
    let slow = client.register(opts("slow", "consumer").interests(["feed"])).await.unwrap();
    let producer = client.register(opts("producer", "producer")).await.unwrap();
    let total = 20_000u32;
    let payload = vec![7u8; 1024];
    for _ in 0..total {
        producer.publish("feed", payload.clone()).await.unwrap();
    }
    producer.publish_confirmed("other", &b""[..]).await.unwrap();
    // Only now does the slow agent start reading.
    let mut d = slow.deliveries().unwrap();
    let (mut received, mut missed, mut last_seq) = (0u64, 0u64, 0u64);
    while received + missed < u64::from(total) {
        let item = tokio::time::timeout(T, d.recv()).await.expect("in time").unwrap();
        assert_eq!(item.seq, last_seq + 1 + item.missed_before, "seq gaps match the reported misses");
        last_seq = item.seq;
        received += 1;
        missed += item.missed_before;
    }
    assert_eq!(received + missed, u64::from(total));
    assert!(missed > 0, "the 16-message queue must have overflowed");
    let info = client.list_agents(AgentFilter::default()).await.unwrap();
    let slow_info = info.iter().find(|a| a.agent_id == "slow").unwrap();
    assert_eq!(slow_info.dropped, missed, "drops are counted per agent");
}

/// The server sends a reader at most `engine.max_in_flight` messages ahead of its
/// acknowledgements; the rest wait in its queue (counted there) and go out as it acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_sent_no_more_than_max_in_flight_ahead_of_its_acknowledgements() {
    let dir = support::ScratchDir::new("in-flight");
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, "[engine]\nmax_in_flight = 10\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let client = server.client().await;
    let mut grpc = v1::lockstep_client::LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let (tx, mut stream) = raw_session(&mut grpc, "reader", &["feed"]).await;
    let publisher = client.register(opts("publisher", "feed")).await.unwrap();
    for i in 0..50 {
        publisher.publish("feed", format!("m{i}")).await.unwrap();
    }
    publisher.publish_confirmed("elsewhere", "").await.unwrap();
    // Reads frames until `n` deliveries arrived in all; returns their sequence numbers.
    async fn read_until(stream: &mut tonic::Streaming<v1::ServerMessage>, seqs: &mut Vec<u64>, n: usize) {
        while seqs.len() < n {
            let message = tokio::time::timeout(T, stream.message()).await.expect("in time").unwrap().unwrap();
            if let Some(v1::server_message::Kind::Deliveries(d)) = message.kind {
                assert_eq!(d.missed_before, 0, "nothing is dropped: 50 fit in the queue");
                seqs.extend((0..d.items.len() as u64).map(|i| d.first_seq + i));
            }
        }
    }
    let mut seqs = Vec::new();
    read_until(&mut stream, &mut seqs, 10).await;
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>(), "ten in flight, in order");
    let queue_depth = || {
        let client = client.clone();
        async move {
            let agents = client.list_agents(AgentFilter::default()).await.unwrap();
            agents.into_iter().find(|a| a.agent_id == "reader").expect("registered").queue_depth
        }
    };
    assert_eq!(queue_depth().await, 40, "the other forty wait in the server for acknowledgements");
    // Each acknowledgement lets as many more go as it acknowledged.
    while seqs.len() < 50 {
        let up_to_seq = *seqs.last().unwrap();
        tx.send(v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Ack(v1::Ack { up_to_seq })) })
            .await
            .unwrap();
        let more = seqs.len() + 10;
        read_until(&mut stream, &mut seqs, more).await;
        assert_eq!(queue_depth().await, 50 - seqs.len() as u64, "no more than ten ahead of the acknowledgement");
    }
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
}

#[tokio::test]
async fn watchers_converge_on_the_owners_state() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let owner = client.register(opts("trader-1", "trader")).await.unwrap();
    owner.update_state(&json!({"pnl": 0, "positions": {"btc": 1}})).await.unwrap();
    let by_id = client.register(opts("w1", "monitor")).await.unwrap();
    let by_role = client.register(opts("w2", "monitor")).await.unwrap();
    let by_all = client.register(opts("w3", "monitor")).await.unwrap();
    by_id.watch_state(WatchTarget::Agent("trader-1".into())).await.unwrap();
    by_role.watch_state(WatchTarget::Role("trader".into())).await.unwrap();
    by_all.watch_state(WatchTarget::All).await.unwrap();
    let mut updates = by_id.state_updates().unwrap();
    for i in 1..=200 {
        let delta = if i % 10 == 0 {
            json!({"positions": {"btc": null, format!("x{i}"): i}})
        } else {
            json!({"pnl": i, "last_signal": format!("s{i}")})
        };
        owner.update_state(&delta).await.unwrap();
    }
    let (version, state) = client.get_state("trader-1").await.unwrap();
    assert_eq!(version, 201);
    for w in [&by_id, &by_role, &by_all] {
        assert!(
            eventually(T, || async { w.view("trader-1") == Some((version, state.clone())) }).await,
            "{} did not converge: {:?}",
            w.id(),
            w.view("trader-1")
        );
    }
    // The update stream carries full views, ending at the owner's state.
    let mut last = None;
    while let Ok(Some(u)) = tokio::time::timeout(Duration::from_millis(300), updates.recv()).await {
        last = Some(u);
    }
    let last = last.expect("updates arrived");
    assert_eq!((last.version, last.state), (version, state));
    // Deltas that are not JSON objects are refused and change nothing.
    let err = owner.update_state(&json!([1, 2])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if reworded() || m.contains("JSON object")), "{err:?}");
    let err = owner.update_state_json("{not json".into()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert_eq!(client.get_state("trader-1").await.unwrap().0, version);
}

#[tokio::test]
async fn barrier_releases_everyone_with_the_same_result_and_payloads() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ids = ["a", "b", "c"];
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let agent = client.register(opts(id, "worker")).await.unwrap();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
            let set = Participants::Agents(vec!["a".into(), "b".into(), "c".into()]);
            agent.sync("work_complete", set, T, Bytes::from(format!("from-{}", agent.id()))).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    let positions: Vec<u32> = results.iter().map(|r| r.position).collect();
    assert_eq!(positions, [0, 1, 2], "each waiter learns its own place");
    assert!(results.windows(2).all(|w| w[0] == w[1]), "every waiter gets the same result");
    let r = &results[0];
    assert_eq!(r.arrival_order, vec!["a", "b", "c"]);
    assert_eq!(r.payloads[1], Bytes::from("from-b"));
    assert_eq!((r.count, r.summary), (3, false));
    let status = client.sync_status("work_complete").await.unwrap();
    assert_eq!(status.state, v1::sync_point_status::State::Completed as i32);
}

#[tokio::test]
async fn summary_waiters_get_their_place_and_the_digest_of_the_whole_outcome() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ids = ["a", "b", "c", "d"];
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let agent = client.register(opts(id, "worker")).await.unwrap();
        let observer = client.clone();
        tasks.push(tokio::spawn(async move {
            // Arrive in the order of `ids`: each waits until the one before it is recorded.
            let id = agent.id().to_owned();
            while arrivals(&observer).await < i {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let payload = Bytes::from(format!("from-{id}"));
            match id.as_str() {
                "c" => agent.sync("round", Participants::Count(4), T, payload).await,
                _ => agent.sync_summary("round", Participants::Count(4), T, payload).await,
            }
        }));
    }
    async fn arrivals(client: &lockstep_client::Client) -> usize {
        match client.sync_status("round").await {
            Ok(status) => status.arrived.len(),
            Err(_) => 0,
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    let full = &results[2];
    assert!(!full.summary);
    assert_eq!(full.arrival_order, ids);
    for (i, r) in results.iter().enumerate() {
        assert_eq!((r.count, r.digest, r.position), (4, full.digest, i as u32), "{r:?}");
        if i != 2 {
            assert!(r.summary && r.arrival_order.is_empty() && r.payloads.is_empty(), "{r:?}");
        }
    }
    // The digest is the documented function of the order and payloads, as any client can check.
    let order: Vec<(&str, &[u8])> =
        full.arrival_order.iter().zip(&full.payloads).map(|(a, p)| (a.as_str(), &p[..])).collect();
    assert_eq!(full.digest, lockstep_core::SyncOutcome::digest_of(order.into_iter()));
}

#[tokio::test]
async fn a_barrier_release_comes_after_the_data_shared_before_it() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let producer = client.register(opts("producer", "producer")).await.unwrap();
    let consumer = client.register(opts("consumer", "consumer").interests(["data.>"])).await.unwrap();
    consumer.watch_state(WatchTarget::Agent("producer".into())).await.unwrap();
    let mut deliveries = consumer.deliveries().unwrap();
    let set = || Participants::Agents(vec!["producer".into(), "consumer".into()]);
    for round in 0..20u32 {
        let waiting = {
            let consumer = consumer.clone();
            let set = set();
            tokio::spawn(async move { consumer.sync(&format!("r{round}"), set, T, Bytes::new()).await })
        };
        for i in 0..50u32 {
            producer.publish("data.chunk", (round * 100 + i).to_be_bytes().to_vec()).await.unwrap();
        }
        let version = producer.update_state(&json!({"round": round})).await.unwrap();
        producer.sync(&format!("r{round}"), set(), T, Bytes::new()).await.unwrap();
        waiting.await.unwrap().unwrap();
        // Released: everything published and every state change made before it is already here.
        let got: Vec<u32> = std::iter::from_fn(|| deliveries.try_recv())
            .map(|d| u32::from_be_bytes(d.payload[..].try_into().unwrap()))
            .collect();
        assert_eq!(got, (0..50).map(|i| round * 100 + i).collect::<Vec<_>>(), "round {round}");
        assert_eq!(consumer.view("producer"), Some((version, json!({"round": round}))));
    }
}

#[tokio::test]
async fn a_quorum_barrier_releases_at_k_and_a_late_participant_gets_the_outcome_at_once() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let mut agents = Vec::new();
    for id in ["s1", "s2", "s3", "s4"] {
        agents.push(client.register(opts(id, "scanner")).await.unwrap());
    }
    let role = || Participants::Role("scanner".into());
    let err = agents[0].sync_quorum("scan", role(), 5, T, Bytes::new()).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(d) if d.reason == Some(Reason::InvalidArgument)), "{err:?}");

    let mut waiting = Vec::new();
    for agent in &agents[..2] {
        let agent = agent.clone();
        waiting.push(tokio::spawn(async move {
            let payload = Bytes::from(format!("from-{}", agent.id()));
            agent.sync_quorum("scan", Participants::Role("scanner".into()), 2, T, payload).await
        }));
    }
    let mut results = Vec::new();
    for w in waiting {
        results.push(w.await.unwrap().unwrap());
    }
    assert_eq!(results[0], results[1], "both get the same outcome");
    let r = &results[0];
    assert_eq!((r.count, r.late.clone(), r.late_count), (2, vec!["s3".to_owned(), "s4".to_owned()], 2));
    let mut arrived = r.arrival_order.clone();
    arrived.sort();
    assert_eq!(arrived, ["s1", "s2"]);

    // A late participant does not wait: it gets the recorded outcome, placed after the arrivals.
    let late = agents[2].sync_quorum("scan", role(), 2, T, Bytes::new()).await.unwrap();
    assert_eq!(&late, r);
    assert_eq!(late.position, 2);
    // As a repeated arrival at any finished point, a late one is answered without its definition
    // being compared: the point is over.
    let also_late = agents[3].sync("scan", role(), T, Bytes::new()).await.unwrap();
    assert_eq!((&also_late, also_late.position), (r, 2));

    let (ok, out, _) = server.cli(&["sync", "status", "scan", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&v["state"], &v["quorum"], &v["missing"]), (&json!("completed"), &json!(2), &json!(["s3", "s4"])));
    assert_eq!(v["participants"], "2 of role scanner: {s1, s2, s3, s4}");
}

#[tokio::test]
async fn barrier_timeout_names_the_agents_that_never_arrived() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let a = client.register(opts("a", "worker")).await.unwrap();
    let set = Participants::Agents(vec!["a".into(), "ghost".into(), "late".into()]);
    let err = a.sync("phase1", set, Duration::from_millis(300), Bytes::new()).await.unwrap_err();
    match err {
        Error::SyncTimeout { sync_id, missing, message } => {
            assert_eq!(sync_id, "phase1");
            assert_eq!(missing, vec!["ghost", "late"]);
            assert_eq!(message.reason, Some(Reason::SyncTimeout));
            assert!(reworded() || message.contains("ghost, late"), "{message}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let d = client.diagnose_sync("phase1").await.unwrap();
    assert!(d.issues.iter().any(|i| i.contains("timed out")), "{:?}", d.issues);
    // The CLI shows the same.
    let (ok, out, _) = server.cli(&["sync", "diagnose", "phase1", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["state"], "timed_out");
    assert_eq!(v["status"]["missing"], json!(["ghost", "late"]));
}

/// A raw session on `grpc`'s connection that registers `id` (with `interests`) and then sends only
/// what `tx` is given.
async fn raw_session(
    grpc: &mut v1::lockstep_client::LockstepClient<tonic::transport::Channel>,
    id: &str,
    interests: &[&str],
) -> (tokio::sync::mpsc::Sender<v1::ClientMessage>, tonic::Streaming<v1::ServerMessage>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let interests = interests.iter().map(|i| i.to_string()).collect();
    let register = v1::Register { agent_id: id.into(), role: "worker".into(), interests, ..Default::default() };
    tx.send(v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Register(register)) })
        .await
        .unwrap();
    let stream = grpc.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, stream)
}

/// Messages queued for an agent whose stream broke are dropped when its lease runs out; when it
/// resumes, the server tells it how many at once, though nothing more is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_resuming_after_it_was_lost_learns_at_once_what_it_missed() {
    let server = Server::start(&["--heartbeat-interval-ms", "200"]);
    let client = server.client().await;
    let publisher = client.register(opts("publisher", "feed")).await.unwrap();
    let mut grpc = v1::lockstep_client::LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let register = v1::Register {
        agent_id: "sub".into(),
        role: "worker".into(),
        interests: vec!["jobs".into()],
        ..Default::default()
    };
    tx.send(v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Register(register)) })
        .await
        .unwrap();
    let mut stream = grpc.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let Some(v1::server_message::Kind::Registered(registered)) = stream.message().await.unwrap().unwrap().kind else {
        panic!("registration comes first");
    };
    // The stream breaks (a reset, not a goodbye): the agent is kept for its lease, and messages
    // published meanwhile wait in its queue.
    drop((tx, stream, grpc));
    let sub = || {
        let client = client.clone();
        async move {
            let agents = client.list_agents(AgentFilter::default()).await.unwrap();
            agents.into_iter().find(|a| a.agent_id == "sub").expect("sub is registered")
        }
    };
    // Until the server noticed the stream is gone, what it routes goes out on the broken stream:
    // publish until messages wait in the queue.
    let mut published = 0;
    while sub().await.queue_depth < 2 {
        assert!(published < 100, "messages never queued for the agent whose stream broke");
        publisher.publish_confirmed("jobs", format!("while away {published}")).await.unwrap();
        published += 1;
    }
    let queued = sub().await.queue_depth;
    let lost = || async { sub().await.status == v1::AgentStatus::Lost as i32 };
    assert!(eventually(T, lost).await, "the lease ran out");

    let back =
        client.register(opts("sub", "worker").interests(["jobs"]).resume_token(registered.resume_token)).await.unwrap();
    assert_eq!(back.missed_while_away(), queued, "told on resuming, with nothing published since");
    publisher.publish_confirmed("jobs", "after").await.unwrap();
    let mut deliveries = back.deliveries().unwrap();
    let next = tokio::time::timeout(T, deliveries.recv()).await.unwrap().unwrap();
    assert_eq!((&next.payload[..], next.missed_before), (&b"after"[..], 0), "not counted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_heartbeat_keeps_every_session_of_its_connection_alive() {
    // Leases of 3 × 300 ms: the test lasts more than three of them.
    let server = Server::start(&["--heartbeat-interval-ms", "300"]);
    let client = server.client().await;
    let url = format!("http://{}", server.addr);
    let mut shared = v1::lockstep_client::LockstepClient::connect(url.clone()).await.unwrap();
    let mut elsewhere = v1::lockstep_client::LockstepClient::connect(url).await.unwrap();
    let (beating, _s1) = raw_session(&mut shared, "beating", &[]).await;
    let (_quiet_tx, _s2) = raw_session(&mut shared, "quiet", &[]).await;
    let (_alone_tx, _s3) = raw_session(&mut elsewhere, "alone", &[]).await;
    // Agents of the Rust client on one shared connection, which take turns to heartbeat.
    let mut turns = Vec::new();
    for i in 0..5 {
        turns.push(client.register_shared(opts(&format!("turn-{i}"), "worker")).await.unwrap());
    }
    let status = |id: &'static str| {
        let client = client.clone();
        async move {
            let agents = client.list_agents(AgentFilter::default()).await.unwrap();
            agents.into_iter().find(|a| a.agent_id == id).map(|a| a.status)
        }
    };
    let heartbeat =
        v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Heartbeat(v1::Heartbeat {})) };
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        beating.send(heartbeat.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(status("alone").await, Some(v1::AgentStatus::Lost as i32), "silent on its own connection");
    assert_eq!(status("beating").await, Some(v1::AgentStatus::Active as i32));
    assert_eq!(status("quiet").await, Some(v1::AgentStatus::Active as i32), "renewed by its connection's heartbeats");
    let agents = client.list_agents(AgentFilter::default()).await.unwrap();
    for agent in &turns {
        let info = agents.iter().find(|a| a.agent_id == agent.id()).unwrap();
        assert_eq!(info.status, v1::AgentStatus::Active as i32, "{}", agent.id());
        assert!(agent.ended().is_none(), "{:?}", agent.ended());
    }
}

#[tokio::test]
async fn a_lost_participant_fails_the_barrier_promptly() {
    // Leases of 3 × 100 ms; the barrier's own timeout is 30 s.
    let server = Server::start(&["--heartbeat-interval-ms", "100"]);
    let client = server.client().await;
    let alive = client.register(opts("alive", "worker")).await.unwrap();
    // A raw session that registers and then goes silent (no heartbeats), like a hung process.
    let _silent = support::silent_session(&server.addr, "hung", "worker").await;

    let started = std::time::Instant::now();
    let set = Participants::Agents(vec!["alive".into(), "hung".into()]);
    let err = alive.sync("checkpoint", set, Duration::from_secs(30), Bytes::new()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed at the lease, not the timeout: {:?}",
        started.elapsed()
    );
    match err {
        Error::SyncAborted { missing, message, .. } => {
            assert_eq!(missing, vec!["hung"]);
            assert_eq!(message.reason, Some(Reason::SyncAborted));
            assert!(reworded() || message.contains("lost its lease"), "{message}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    let lost =
        client.list_agents(AgentFilter { status: Some(v1::AgentStatus::Lost), ..Default::default() }).await.unwrap();
    assert_eq!(lost.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), vec!["hung"]);
}

/// Agents registered on one shared connection route, meet at barriers and leave like any others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sharing_one_connection_route_and_meet() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let mut agents = Vec::new();
    for i in 0..20 {
        agents
            .push(client.register_shared(opts(&format!("shared-{i:02}"), "worker").interests(["news"])).await.unwrap());
    }
    let mut deliveries: Vec<_> = agents.iter().map(|a| a.deliveries().unwrap()).collect();
    agents[0].publish("news", "hello").await.unwrap();
    for (i, d) in deliveries.iter_mut().enumerate().skip(1) {
        let got = tokio::time::timeout(T, d.recv()).await.expect("delivered").expect("open");
        assert_eq!(&got.payload[..], b"hello", "agent {i}");
    }
    for round in 0..3 {
        let id = format!("shared-round-{round}");
        let waits = agents.iter().map(|a| a.sync(&id, Participants::Count(20), T, Bytes::new()));
        let results = futures::future::join_all(waits).await;
        assert!(results.iter().all(Result::is_ok), "round {round}: {results:?}");
    }
    let listed = client.list_agents(AgentFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 20);
    for a in agents {
        a.close().await.unwrap();
    }
    let gone = eventually(T, || async { client.list_agents(AgentFilter::default()).await.unwrap().is_empty() }).await;
    assert!(gone, "each closed session left");
}

/// Leases measure the clients' silence, not the server's: a server stopped (SIGSTOP) for many
/// leases and then continued loses no agent and fails no barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_does_not_blame_its_clients_for_its_silence() {
    // Leases of 3 × 100 ms; the server is stopped for 2 s, about seven of them.
    let server = Server::start(&["--heartbeat-interval-ms", "100"]);
    let client = server.client().await;
    let mut registry = client.watch_registry().await.unwrap();
    let a = client.register(opts("a", "worker")).await.unwrap();
    let b = client.register(opts("b", "worker")).await.unwrap();
    let set = Participants::Agents(vec!["a".into(), "b".into()]);
    let waiting = {
        let set = set.clone();
        tokio::spawn(async move { b.sync("after-the-stop", set, Duration::from_secs(60), Bytes::new()).await })
    };
    let b_arrived = eventually(T, || async {
        client.sync_status("after-the-stop").await.is_ok_and(|s| s.arrived.iter().any(|x| x == "b"))
    })
    .await;
    assert!(b_arrived, "b waits at the barrier");

    server.signal("STOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.signal("CONT");

    let released = a.sync("after-the-stop", set, Duration::from_secs(60), Bytes::new()).await;
    assert!(released.is_ok(), "the barrier completes after the stop: {released:?}");
    assert!(waiting.await.unwrap().is_ok(), "and releases the agent that waited through it");
    let agents = client.list_agents(AgentFilter::default()).await.unwrap();
    let statuses: Vec<(String, i32)> = agents.iter().map(|x| (x.agent_id.clone(), x.status)).collect();
    assert!(agents.iter().all(|x| x.status != v1::AgentStatus::Lost as i32), "nobody was declared lost: {statuses:?}");
    // The watcher saw the two joins and no loss.
    let mut kinds = Vec::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut registry)).await
    {
        kinds.push((e.kind, e.agent.map(|x| x.agent_id).unwrap_or_default()));
    }
    assert!(!kinds.iter().any(|(k, _)| *k == v1::registry_event::Kind::Lost as i32), "{kinds:?}");
}

#[tokio::test]
async fn registry_watch_sees_joins_status_changes_and_leaves() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let early = client.register(opts("early", "scanner").capabilities(["data_sync"])).await.unwrap();
    let mut events = client.watch_registry().await.unwrap();
    async fn next_event(events: &mut tonic::Streaming<v1::RegistryEvent>) -> v1::RegistryEvent {
        tokio::time::timeout(T, events.message()).await.expect("event in time").unwrap().expect("open")
    }
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.agent.unwrap().agent_id), (v1::registry_event::Kind::Snapshot as i32, "early".to_owned()));
    let late = client.register(opts("late", "trader").capabilities(["data_sync", "checkpoint_sync"])).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.agent.unwrap().agent_id), (v1::registry_event::Kind::Joined as i32, "late".to_owned()));
    late.set_status(v1::AgentStatus::Syncing).await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!(e.kind, v1::registry_event::Kind::Status as i32);
    assert_eq!(e.previous_status, v1::AgentStatus::Active as i32);
    assert_eq!(e.agent.unwrap().status, v1::AgentStatus::Syncing as i32);
    let with_cap = client.agents_with_capability("checkpoint_sync").await.unwrap();
    assert_eq!(with_cap.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(), vec!["late"]);
    assert_eq!(client.agents_with_capability("data_sync").await.unwrap().len(), 2);
    late.close().await.unwrap();
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.agent.unwrap().agent_id), (v1::registry_event::Kind::Left as i32, "late".to_owned()));
    drop(early);
}

#[tokio::test]
async fn bad_input_gets_precise_errors() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let bad_id = client.register(opts("has space", "worker")).await.err().unwrap();
    assert!(matches!(bad_id, Error::InvalidArgument(ref m) if reworded() || m.contains("agent id")), "{bad_id:?}");
    let bad_pattern = client.register(opts("p", "worker").interests(["a.>.b"])).await.err().unwrap();
    assert!(
        matches!(bad_pattern, Error::InvalidArgument(ref m) if reworded() || m.contains("last token")),
        "{bad_pattern:?}"
    );
    let agent = client.register(opts("ok", "worker")).await.unwrap();
    assert!(matches!(agent.publish("", &b""[..]).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(agent.publish_confirmed("a..b", &b""[..]).await, Err(Error::InvalidArgument(_))));
    let huge = vec![0u8; 1024 * 1024 + 1];
    // Refused by the client itself, against the limit the server announced at registration.
    let err = agent.publish_confirmed("big", huge).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1_048_576, .. }), "{err:?}");
    let dup = agent.sync("s", Participants::Agents(vec!["ok".into(), "ok".into()]), T, Bytes::new()).await.unwrap_err();
    assert!(matches!(dup, Error::InvalidArgument(ref m) if reworded() || m.contains("twice")), "{dup:?}");
    let not_in =
        agent.sync("s2", Participants::Agents(vec!["x".into(), "y".into()]), T, Bytes::new()).await.unwrap_err();
    assert!(
        matches!(not_in, Error::FailedPrecondition(ref m) if reworded() || m.contains("not a participant")),
        "{not_in:?}"
    );
    assert_eq!(not_in.reason(), Some(Reason::NotAParticipant));
    assert!(matches!(client.get_state("nobody").await, Err(Error::NotFound(_))));
    assert!(matches!(client.sync_status("nothing").await, Err(Error::NotFound(_))));
    assert!(matches!(agent.set_status(v1::AgentStatus::Lost).await, Err(Error::InvalidArgument(_))));
    // After all that the session still works.
    assert_eq!(agent.update_state(&json!({"ok": true})).await.unwrap(), 1);
}

#[tokio::test]
async fn a_hundred_agents_route_sync_and_list() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let mut agents = Vec::new();
    for i in 0..100 {
        let role = if i % 2 == 0 { "even" } else { "odd" };
        agents.push(
            client
                .register(opts(&format!("agent-{i:03}"), role).interests([format!("tick.{role}"), "tick.all".into()]))
                .await
                .unwrap(),
        );
    }
    let publisher = client.register(opts("clock", "clock")).await.unwrap();
    for i in 0..20u32 {
        publisher.publish("tick.all", i.to_be_bytes().to_vec()).await.unwrap();
        publisher.publish("tick.even", i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let agent = agent.clone();
        let expected = if i % 2 == 0 { 40 } else { 20 };
        tasks.push(tokio::spawn(async move {
            let mut d = agent.deliveries().unwrap();
            let mut n = 0;
            while n < expected {
                let item = tokio::time::timeout(T, d.recv()).await.expect("in time").unwrap();
                assert_eq!(item.missed_before, 0);
                n += 1;
            }
            let result = agent.sync("all-ticks-seen", Participants::Count(100), T, Bytes::new()).await.unwrap();
            (n, result)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let first = &results[0].1;
    assert_eq!(first.arrival_order.len(), 100);
    assert_eq!(first.arrival_order.iter().collect::<HashSet<_>>().len(), 100);
    assert!(results.iter().all(|(_, r)| r == first));
    let (ok, out, _) = server.cli(&["agents", "--json", "--role", "even"]);
    assert!(ok);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed.iter().all(|a| a["role"] == "even" && a["delivered"] == 40));
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_agents_connected() {
    let mut server = Server::start(&[]);
    let client = server.client().await;
    let agent = client.register(opts("a", "worker").reconnect_for(None)).await.unwrap();
    assert!(server.terminate(Duration::from_secs(5)), "exit status is success");
    assert!(eventually(T, || async { agent.ended().is_some() }).await);
    assert!(matches!(agent.ended(), Some(Error::SessionEnded(_))), "{:?}", agent.ended());
    assert_eq!(agent.ended().and_then(|e| e.reason()), Some(Reason::ServerShuttingDown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_disconnected_by_the_server_resumes_its_session() {
    let server = Server::start(&["--queue-capacity", "4", "--overflow-policy", "disconnect"]);
    let client = server.client().await;
    let slow = client.register(opts("slow", "consumer").interests(["feed"])).await.unwrap();
    let producer = client.register(opts("producer", "producer")).await.unwrap();
    // Enough to fill the client's buffers, the connection and the 4-message queue behind them.
    for _ in 0..20_000u32 {
        producer.publish("feed", vec![7u8; 1024]).await.unwrap();
    }
    producer.publish_confirmed("other", &b""[..]).await.unwrap();
    // The server ended the session (SLOW_CONSUMER); once reading, the agent resumes it and is told
    // what it missed meanwhile.
    let mut d = slow.deliveries().unwrap();
    let missed = loop {
        let item = tokio::time::timeout(T, d.recv()).await.expect("deliveries in time");
        let item = item.unwrap_or_else(|| panic!("the session ended for good: {:?}", slow.ended()));
        if item.missed_before > 0 {
            break item.missed_before;
        }
    };
    assert!(missed > 0);
    // The producer may have filled the resumed session too before the agent began to read, so a
    // request can meet one more disconnection (and fail as in flight there); the agent resumes
    // again by itself and its session does not end for good.
    assert!(
        eventually(T, || async { slow.publish_confirmed("other", &b""[..]).await.is_ok() }).await,
        "the agent works again after resuming: {:?}",
        slow.ended()
    );
    assert!(slow.ended().is_none(), "{:?}", slow.ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_by_itself_when_its_server_comes_back() {
    // A free port, so that the restarted server can listen where the first one did.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut first = Server::start_on(&listen, &[]);
    let client = Client::connect(&first.addr).await.unwrap();
    let watcher = client.register(opts("watcher", "risk").interests(["feed"])).await.unwrap();
    watcher.watch_state(WatchTarget::Agent("owner".into())).await.unwrap();
    let mut deliveries = watcher.deliveries().unwrap();
    let token = watcher.resume_token();

    // The server dies and another starts on the same address (this version keeps no state).
    first.kill();
    let second = Server::start_on(&listen, &[]);
    assert!(
        eventually(Duration::from_secs(15), || async {
            let listed = client.list_agents(AgentFilter::default()).await;
            // Registered again, and the client has the new server's token.
            listed.is_ok_and(|a| a.iter().any(|a| a.agent_id == "watcher")) && watcher.resume_token() != token
        })
        .await,
        "the agent registered again by itself"
    );
    assert!(watcher.ended().is_none(), "{:?}", watcher.ended());

    // Its interests and its watch came back with it.
    let owner = client.register(opts("owner", "trader")).await.unwrap();
    owner.update_state(&json!({"pnl": 3})).await.unwrap();
    owner.publish_confirmed("feed", &b"after"[..]).await.unwrap();
    let d = tokio::time::timeout(T, deliveries.recv()).await.expect("delivery after reconnecting").unwrap();
    assert_eq!(d.payload, &b"after"[..]);
    assert!(eventually(T, || async { watcher.view("owner") == Some((1, json!({"pnl": 3}))) }).await);
    drop(second);
}
