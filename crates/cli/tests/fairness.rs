//! End-to-end: a client flooding the server with publishes is held back by the bounded intake and
//! its own connection's flow control, and does not starve anyone else: quiet agents' round trips
//! and barriers stay within their lease, and none of them is lost.

mod support;

use std::time::{Duration, Instant};

use lockstep_client::proto::{self as v1, client_message::Kind};
use lockstep_client::{AgentFilter, Participants};
use serde_json::json;
use support::{opts, Server};

/// The server's lease: 3 intervals of 1 s (the default). Every quiet round trip must stay inside
/// it, on a busy machine too.
const HEARTBEAT_INTERVAL_MS: u64 = 1000;
const LEASE: Duration = Duration::from_millis(3 * HEARTBEAT_INTERVAL_MS);
/// How long the quiet agents work while the flood runs.
const QUIET_FOR: Duration = Duration::from_secs(3);
/// Rounds (a state round trip and a barrier) the quiet agents make at least.
const QUIET_ROUNDS: u64 = 5;
/// Agents the flood fans out to (so each flooded message costs the engine real work).
const SUBSCRIBERS: usize = 20;

fn msg(request_id: u64, kind: Kind) -> v1::ClientMessage {
    v1::ClientMessage { request_id, kind: Some(kind) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_does_not_starve_quiet_agents() {
    let server = Server::start(&["--heartbeat-interval-ms", &HEARTBEAT_INTERVAL_MS.to_string()]);
    let client = server.client().await;
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let agent = client.register(opts(&format!("sub-{i}"), "sink").interests(["flood"])).await.unwrap();
        let mut deliveries = agent.deliveries().unwrap();
        tokio::spawn(async move { while deliveries.recv().await.is_some() {} });
        subscribers.push(agent);
    }
    let q1 = client.register(opts("q1", "quiet")).await.unwrap();
    let q2 = client.register(opts("q2", "quiet")).await.unwrap();
    let published_before = client.server_info().await.unwrap().published;

    // The flood: a raw session that writes publishes as fast as its connection takes them, wanting
    // no replies.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::ClientMessage>(64);
    let register = v1::Register { agent_id: "flooder".into(), role: "flood".into(), ..Default::default() };
    tx.send(msg(1, Kind::Register(register))).await.unwrap();
    let mut raw = v1::lockstep_client::LockstepClient::new(channel);
    let mut replies = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = replies.message().await {} });
    // The flood lasts until the quiet agents are done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_stop = stop.clone();
    let flooding = tokio::spawn(async move {
        let payload = bytes::Bytes::from(vec![7u8; 1024]);
        let mut sent = 0u64;
        while !flood_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let publish = v1::Publish { topic: "flood".into(), payload: payload.clone(), ..Default::default() };
            if tx.send(msg(0, Kind::Publish(publish))).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The quiet agents: state round trips and barriers, each timed, while the flood runs.
    let mut round_trips = Vec::new();
    let mut barriers = Vec::new();
    let started = Instant::now();
    let mut round = 0u64;
    // At least QUIET_FOR and at least QUIET_ROUNDS rounds: on a busy machine rounds are slower, and
    // what matters is that each stays within the lease, not how many fit in the time.
    while started.elapsed() < QUIET_FOR || round < QUIET_ROUNDS {
        let t = Instant::now();
        q1.update_state(&json!({ "round": round })).await.unwrap();
        round_trips.push(t.elapsed());
        let both = || Participants::Agents(vec!["q1".into(), "q2".into()]);
        let id = format!("quiet-{round}");
        let t = Instant::now();
        let (a, b) =
            tokio::join!(q1.sync(&id, both(), LEASE * 10, &b""[..]), q2.sync(&id, both(), LEASE * 10, &b""[..]));
        barriers.push(t.elapsed());
        a.unwrap();
        b.unwrap();
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooding.await.unwrap();
    let published = client.server_info().await.unwrap().published - published_before;

    round_trips.sort();
    barriers.sort();
    let worst = |v: &[Duration]| v.last().copied().unwrap_or_default();
    eprintln!(
        "flood: {sent} publishes sent, {published} applied; quiet: {} round trips (max {:?}), {} barriers (max {:?})",
        round_trips.len(),
        worst(&round_trips),
        barriers.len(),
        worst(&barriers)
    );
    assert!(published >= 1_000, "the flood was real: {published} publishes reached the engine");
    assert!(worst(&round_trips) < LEASE, "a quiet round trip took {:?}, past the lease {LEASE:?}", worst(&round_trips));
    assert!(worst(&barriers) < LEASE, "a quiet barrier took {:?}, past the lease {LEASE:?}", worst(&barriers));
    let agents = client.list_agents(AgentFilter::default()).await.unwrap();
    for quiet in ["q1", "q2"] {
        let status = agents.iter().find(|a| a.agent_id == quiet).map(|a| a.status);
        assert_eq!(status, Some(v1::AgentStatus::Active as i32), "{quiet} kept its lease through the flood");
    }
}
