//! End-to-end: traffic within the documented limits always fits the transport's message cap
//! (`max_payload_bytes` + 64 KiB). What is queued for an agent goes out in frames bounded by bytes,
//! not only by count, so two large messages or two large states never travel as one
//! over-the-cap frame that would end the session (issue: a subscriber removed with OUT_OF_RANGE);
//! and a barrier whose outcome could not fit one message refuses the arrival that would take it
//! over, rather than releasing an outcome nobody can receive.

mod support;

use std::time::Duration;

use lockstep_client::{ContextWrites, Participants, Reason, WatchTarget};
use serde_json::json;
use support::{eventually, opts, Server};

const T: Duration = Duration::from_secs(10);

/// Just under the payload limit's 1 MiB: two of them exceed the 1 MiB + 64 KiB cap together.
const LARGE: usize = 600 * 1024;

#[tokio::test]
async fn large_messages_queued_together_reach_their_subscriber_in_frames_under_the_cap() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let admin = client.admin(None, Some("test")).unwrap();
    let subscriber = client.register(opts("subscriber", "risk").interests(["feed"])).await.unwrap();
    let publisher = client.register(opts("publisher", "trader")).await.unwrap();
    let mut deliveries = subscriber.deliveries().unwrap();

    // Held while paused, the messages are queued together and go out at once on resume.
    admin.pause_agent("subscriber").await.unwrap();
    for i in 0..4u8 {
        publisher.publish_confirmed("feed", vec![i; LARGE]).await.unwrap();
    }
    admin.resume_agent("subscriber").await.unwrap();

    for i in 0..4u8 {
        let d = tokio::time::timeout(T, deliveries.recv()).await.expect("in time").expect("the session lives");
        assert_eq!((d.payload.len(), d.payload[0], d.missed_before), (LARGE, i, 0));
    }
    assert!(subscriber.ended().is_none(), "{:?}", subscriber.ended());
    subscriber.publish_confirmed("other", &b""[..]).await.expect("the session goes on");
}

#[tokio::test]
async fn large_states_of_two_watched_agents_reach_their_watcher_in_frames_under_the_cap() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let admin = client.admin(None, Some("test")).unwrap();
    let watcher = client.register(opts("watcher", "risk")).await.unwrap();
    let a = client.register(opts("a", "trader")).await.unwrap();
    let b = client.register(opts("b", "trader")).await.unwrap();
    watcher.watch_state(WatchTarget::Role("trader".into())).await.unwrap();

    // Paused, the watcher's pending changes pile up (one per watched agent) and leave together.
    admin.pause_agent("watcher").await.unwrap();
    // Deltas are limited to 256 KiB: each state grows to 600 KiB in three.
    let part = |c: char, k: usize| json!({ format!("part{k}"): c.to_string().repeat(LARGE / 3) });
    let big =
        |c: char| json!({ "part0": part(c, 0)["part0"], "part1": part(c, 1)["part1"], "part2": part(c, 2)["part2"] });
    let (mut va, mut vb) = (0, 0);
    for k in 0..3 {
        va = a.update_state(&part('a', k)).await.unwrap();
        vb = b.update_state(&part('b', k)).await.unwrap();
    }
    admin.resume_agent("watcher").await.unwrap();

    let converged = eventually(T, || async {
        watcher.view("a").map(|(v, _)| v) == Some(va) && watcher.view("b").map(|(v, _)| v) == Some(vb)
    })
    .await;
    assert!(
        converged,
        "views: a {:?}, b {:?}; ended: {:?}",
        watcher.view("a").map(|v| v.0),
        watcher.view("b").map(|v| v.0),
        watcher.ended()
    );
    assert_eq!(watcher.view("a").unwrap().1, big('a'));
    assert!(watcher.ended().is_none(), "{:?}", watcher.ended());
    watcher.publish_confirmed("other", &b""[..]).await.expect("the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_refuses_the_arrival_that_would_take_its_outcome_over_the_cap_and_the_rest_meet() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ids: Vec<String> = (0..18).map(|i| format!("p{i:02}")).collect();
    let mut agents = Vec::new();
    for id in &ids {
        agents.push(client.register(opts(id, "worker")).await.unwrap());
    }
    let set = Participants::Agents(ids.clone());
    // 18 payloads of 64 KiB (the per-arrival limit) would make an outcome of 1.1 MiB.
    let payload = vec![9u8; 64 * 1024];
    let meeting = futures::future::join_all(agents.iter().map(|agent| {
        let (set, payload) = (set.clone(), payload.clone());
        async move {
            match agent.sync("big", set.clone(), T, payload).await {
                Err(e) => {
                    assert_eq!(e.reason(), Some(Reason::Limit), "{e:?}");
                    // Refused, it is still a participant: it meets the others with a smaller payload.
                    (true, agent.sync("big", set, T, &b"ref"[..]).await)
                }
                ok => (false, ok),
            }
        }
    }));
    // Each sync waits at most T; twice that and the meeting has hung.
    let results = tokio::time::timeout(3 * T, meeting).await.expect("the barrier meets or fails in time");
    let refused = results.iter().filter(|(refused, _)| *refused).count();
    assert!((1..18).contains(&refused), "{refused} arrivals refused");
    let outcomes: Vec<_> = results.into_iter().map(|(_, r)| r.expect("released")).collect();
    assert!(outcomes.iter().all(|o| o.arrival_order.len() == 18 && o.arrival_order == outcomes[0].arrival_order));
    for agent in &agents {
        assert!(agent.ended().is_none(), "{:?}", agent.ended());
    }
}

#[tokio::test]
async fn listings_larger_than_one_message_come_in_pages() {
    let server = Server::start(&[]);
    let client = server.client().await;
    // Twelve agents with the most metadata allowed (64 entries of 1 KiB keys and values) take
    // 1.5 MiB to list: more than one message.
    let mut agents = Vec::new();
    for i in 0..12 {
        let mut options = opts(&format!("agent-{i:02}"), "worker");
        for k in 0..64 {
            options = options.metadata(format!("{k:02}{}", "k".repeat(1022)), "v".repeat(1024));
        }
        agents.push(client.register(options).await.unwrap());
    }
    let mut raw = lockstep_client::proto::lockstep_client::LockstepClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let first = raw.list_agents(lockstep_client::proto::ListAgentsRequest::default()).await.unwrap().into_inner();
    assert!(first.agents.len() < 12 && !first.next_page_token.is_empty(), "a first page of {}", first.agents.len());
    let listed = client.list_agents(Default::default()).await.expect("listed in pages");
    assert_eq!(
        listed.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(),
        (0..12).map(|i| format!("agent-{i:02}")).collect::<Vec<_>>()
    );
    assert!(listed.iter().all(|a| a.metadata.len() == 64));

    // 2,500 retained sync points: three pages of the default 1,000.
    let agent = &agents[0];
    for i in 0..2_500 {
        agent.sync(&format!("point-{i:04}"), Participants::Count(1), T, &b""[..]).await.unwrap();
    }
    let points = client.list_sync_points().await.expect("listed in pages");
    assert_eq!(points.len(), 2_500);
    assert!(points.windows(2).all(|w| w[0].sync_id < w[1].sync_id), "in id order, each once");

    // Shared context: ten values of 200 KiB (2 MiB in all) list whole, in key order.
    let context = client.context();
    for i in 0..10 {
        context.set(&format!("blobs.b{i}"), &json!("x".repeat(200 * 1024))).await.unwrap();
    }
    let mut raw =
        lockstep_client::proto::shared_context_client::SharedContextClient::connect(format!("http://{}", server.addr))
            .await
            .unwrap();
    let request = lockstep_client::proto::ContextListRequest { prefix: "blobs".into(), ..Default::default() };
    let first = raw.list(request).await.unwrap().into_inner();
    assert!(first.values.len() < 10 && !first.next_page_token.is_empty(), "a first page of {}", first.values.len());
    let listed = context.list("blobs").await.expect("listed in pages");
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        (0..10).map(|i| format!("blobs.b{i}")).collect::<Vec<_>>()
    );
}
