//! End-to-end: circuit breakers isolate exactly the misbehaving agents of a hundred, the others
//! lose nothing, and the isolated ones come back once they behave.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep_client::{proto as v1, AgentFilter};
use support::{eventually, opts, Server};

// The acknowledgement timeout leaves room for a busy machine: the healthy agents share two cores
// with the server and 99 other agents, and a healthy agent isolated by a slow test process would
// miss messages. (When a whole namespace seems to fail at once, `breaker_max_isolated_percent` caps
// the damage; here exactly the two faulty agents must be isolated.)
const BREAKER_CONFIG: &str = "
[breaker]
timeout_per_agent_ms = 1500
failure_threshold = 3
recovery_delay_ms = 1500
max_recovery_delay_ms = 3000
jitter_percent = 0
probe_successes = 2
probe_timeout_ms = 3000
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_and_one_failing_agent_of_a_hundred_are_isolated_and_recover() {
    let dir = std::env::temp_dir().join(format!("lockstep-breakers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, BREAKER_CONFIG).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let client = server.client().await;
    let mut registry = client.watch_registry().await.unwrap();

    // 98 healthy agents count what they receive and any gap.
    let received = Arc::new((0..98).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let missed = Arc::new(AtomicU64::new(0));
    let mut healthy = Vec::new();
    for i in 0..98 {
        let agent = client.register(opts(&format!("healthy-{i:02}"), "worker").interests(["feed"])).await.unwrap();
        let mut deliveries = agent.deliveries().unwrap();
        let (received, missed) = (received.clone(), missed.clone());
        tokio::spawn(async move {
            while let Some(d) = deliveries.recv().await {
                received[i].fetch_add(1, Ordering::Relaxed);
                missed.fetch_add(d.missed_before, Ordering::Relaxed);
            }
        });
        healthy.push(agent);
    }
    // The hung agent does not read its deliveries (so it stops acknowledging them)...
    let hung = client.register(opts("hung", "worker").interests(["feed"])).await.unwrap();
    let mut hung_deliveries = hung.deliveries().unwrap();
    // ...and the failing one reports an error for every delivery while `failing` is set.
    let failing = client.register(opts("failing", "worker").interests(["feed"])).await.unwrap();
    let fails = Arc::new(AtomicBool::new(true));
    {
        let (agent, fails) = (failing.clone(), fails.clone());
        let mut deliveries = failing.deliveries().unwrap();
        tokio::spawn(async move {
            while let Some(d) = deliveries.recv().await {
                if fails.load(Ordering::Relaxed) {
                    let _ = agent.report_delivery_error(d.seq, "cannot parse the tick").await;
                }
            }
        });
    }
    let publisher = client.register(opts("scanner", "scanner")).await.unwrap();

    // Faults on: publish for a while (several acknowledgement timeouts).
    let mut published = 0u64;
    for _ in 0..100 {
        for _ in 0..5 {
            publisher.publish("feed", vec![0u8; 256]).await.unwrap();
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let by_id =
        |agents: Vec<v1::AgentInfo>| agents.into_iter().map(|a| (a.agent_id.clone(), a)).collect::<BTreeMap<_, _>>();
    let agents = by_id(client.list_agents(AgentFilter::default()).await.unwrap());
    for id in ["hung", "failing"] {
        assert!(agents[id].breaker_opened >= 1, "{id}'s breaker never opened: {:?}", agents[id]);
    }
    let opened: Vec<&str> = agents.values().filter(|a| a.breaker_opened > 0).map(|a| a.agent_id.as_str()).collect();
    assert_eq!(opened, vec!["failing", "hung"], "breakers open for exactly those two");

    // Health tells them apart.
    let health = client.admin(None, None).unwrap().health().await.unwrap();
    let status: BTreeMap<&str, &str> = health.agents.iter().map(|a| (a.agent_id.as_str(), a.status.as_str())).collect();
    assert_ne!(status["hung"], "healthy");
    assert_ne!(status["failing"], "healthy");
    assert!(health.score < 1.0 && health.score > 0.9, "{}", health.score);

    // Every healthy agent got every message, with no gap.
    let all_in = eventually(Duration::from_secs(10), || async {
        received.iter().all(|r| r.load(Ordering::Relaxed) == published)
    })
    .await;
    let counts: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    assert!(all_in, "published {published}, healthy agents received {counts:?}");
    assert_eq!(missed.load(Ordering::Relaxed), 0, "healthy agents missed nothing");

    // Faults stop: the hung agent reads again, the failing one stops failing. With traffic going
    // on, both breakers go half-open after the recovery delay, probes succeed, and they close.
    fails.store(false, Ordering::Relaxed);
    tokio::spawn(async move { while hung_deliveries.recv().await.is_some() {} });
    let closed = eventually(Duration::from_secs(20), || async {
        publisher.publish("feed", vec![0u8; 256]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let agents = by_id(client.list_agents(AgentFilter::default()).await.unwrap());
        agents["hung"].breaker_state == "closed" && agents["failing"].breaker_state == "closed"
    })
    .await;
    assert!(closed, "both breakers close after the faults stop");

    // Watchers saw the transitions, for those two only, through half-open.
    let mut transitions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(200), futures::StreamExt::next(&mut registry)).await
    {
        if e.kind == v1::registry_event::Kind::Breaker as i32 {
            let a = e.agent.unwrap();
            transitions.entry(a.agent_id).or_default().push(a.breaker_state);
        }
    }
    assert_eq!(transitions.keys().collect::<Vec<_>>(), vec!["failing", "hung"]);
    for (id, states) in &transitions {
        assert!(
            states.contains(&"half_open".to_owned()) && states.last() == Some(&"closed".to_owned()),
            "{id}: {states:?}"
        );
    }
    drop(healthy);
    std::fs::remove_dir_all(&dir).unwrap();
}
