//! End-to-end: a publisher saturating a thousand subscribers ends no session. Slow readers lose
//! messages only by the declared overflow policy (drop-oldest), and every message dropped for one
//! of them is reported to it as a gap: what each subscriber received plus what it was told it
//! missed is everything that was published.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep_client::{proto as v1, AgentFilter};
use support::{eventually, opts, Server};

const SUBSCRIBERS: usize = 1_000;
const MESSAGES: u64 = 2_000;
/// Small queues, so that the slow half of the subscribers overflow theirs.
const QUEUE_CAPACITY: &str = "16";
/// Heartbeat interval (the lease is three of them). The thousand subscribers run in this one test
/// process, on two threads: on a busy machine the process itself can be starved for seconds,
/// heartbeats and acknowledgements included, and then every agent rightly loses a short lease
/// (measured under three busy loops: all 1,001 agents lost and resumed with the default 1 s).
/// Real subscribers are separate processes; what this test checks is what the server does when a
/// publisher saturates them, so the lease is long enough to outlast the test process's own stalls.
const HEARTBEAT_INTERVAL_MS: &str = "10000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_at_saturation_lose_no_session_and_every_drop_is_a_gap() {
    let server = Server::start(&["--queue-capacity", QUEUE_CAPACITY, "--heartbeat-interval-ms", HEARTBEAT_INTERVAL_MS]);
    let client = server.client().await;
    let mut registry = client.watch_registry().await.unwrap();
    // received + reported missed, per subscriber.
    let accounted: Arc<Vec<AtomicU64>> = Arc::new((0..SUBSCRIBERS).map(|_| AtomicU64::new(0)).collect());
    let missed_total = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let agent = client.register(opts(&format!("sub-{i:04}"), "subscriber").interests(["feed"])).await.unwrap();
        let mut deliveries = agent.deliveries().unwrap();
        let (accounted, missed_total) = (accounted.clone(), missed_total.clone());
        let slow = i % 2 == 1;
        tokio::spawn(async move {
            while let Some(d) = deliveries.recv().await {
                accounted[i].fetch_add(1 + d.missed_before, Ordering::Relaxed);
                missed_total.fetch_add(d.missed_before, Ordering::Relaxed);
                if slow {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        subscribers.push(agent);
    }
    let publisher = client.register(opts("publisher", "publisher")).await.unwrap();
    for k in 0..MESSAGES {
        publisher.publish("feed", k.to_le_bytes().to_vec()).await.unwrap();
    }
    // Each subscriber eventually accounts for every message: the newest is never dropped, and the
    // gap before it is reported with it.
    let all_accounted = eventually(Duration::from_secs(120), || async {
        accounted.iter().all(|a| a.load(Ordering::Relaxed) == MESSAGES)
    })
    .await;
    let short: Vec<(usize, u64)> = accounted
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .enumerate()
        .filter(|&(_, n)| n != MESSAGES)
        .take(10)
        .collect();
    if !all_accounted {
        let agents = client.list_agents(AgentFilter::default()).await.unwrap();
        let statuses: Vec<(String, i32)> = agents
            .iter()
            .filter(|a| a.status != v1::AgentStatus::Active as i32)
            .map(|a| (a.agent_id.clone(), a.status))
            .take(10)
            .collect();
        let mut opened: Vec<(String, u64)> =
            agents.iter().filter(|a| a.breaker_opened > 0).map(|a| (a.agent_id.clone(), a.breaker_opened)).collect();
        let opened_count = opened.len();
        opened.truncate(10);
        let mut lost_events = 0;
        while let Ok(Some(Ok(e))) =
            tokio::time::timeout(Duration::from_millis(200), futures::StreamExt::next(&mut registry)).await
        {
            lost_events += usize::from(e.kind == v1::registry_event::Kind::Lost as i32);
        }
        let confirmed =
            tokio::time::timeout(Duration::from_secs(10), publisher.publish_confirmed("feed", b"probe".to_vec())).await;
        let status = client.admin(None, None).unwrap().status().await;
        panic!(
            "subscribers short of {MESSAGES} received + missed (first ten): {short:?}; publisher ended: {:?}; \
             agents not active (first ten): {statuses:?}; {opened_count} agents' breakers opened (first ten, times): \
             {opened:?}; {lost_events} LOST registry events; a confirmed publish now: {confirmed:?}; status: {status:?}",
            publisher.ended()
        );
    }
    assert!(missed_total.load(Ordering::Relaxed) > 0, "the slow subscribers overflowed their queues (by policy)");

    // No session ended: every subscriber is still live, and nobody was declared lost.
    for agent in &subscribers {
        assert!(agent.ended().is_none(), "{}'s session ended: {:?}", agent.id(), agent.ended());
    }
    let agents = client.list_agents(AgentFilter::default()).await.unwrap();
    assert_eq!(agents.len(), SUBSCRIBERS + 1);
    let lost: Vec<&str> =
        agents.iter().filter(|a| a.status == v1::AgentStatus::Lost as i32).map(|a| a.agent_id.as_str()).collect();
    assert!(lost.is_empty(), "lost at saturation: {lost:?}");
    let mut events = Vec::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(200), futures::StreamExt::next(&mut registry)).await
    {
        events.push(e.kind);
    }
    let lost_or_left = [v1::registry_event::Kind::Lost as i32, v1::registry_event::Kind::Left as i32];
    assert!(!events.iter().any(|k| lost_or_left.contains(k)), "no agent was lost or left");
    drop(publisher);
    drop(subscribers);
}
