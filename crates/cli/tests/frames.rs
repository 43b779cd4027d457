//! End-to-end: traffic within the documented limits always fits the transport's message cap
//! (`max_payload_bytes` + 64 KiB). What is queued for an agent goes out in frames bounded by bytes,
//! not only by count, so two large messages or two large states never travel as one
//! over-the-cap frame that would end the session (issue: a subscriber removed with OUT_OF_RANGE).

mod support;

use std::time::Duration;

use lockstep_client::WatchTarget;
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
