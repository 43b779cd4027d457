//! End-to-end: topic history against a real `lockstep serve` on loopback.
//!
//! The servers run with the retention rules PROTOCOL.md shows.
//!
//! * A late subscriber is replayed what a retained topic kept, then gets live messages, while the
//!   publisher keeps publishing: every topic sequence number exactly once, in order, stamped with
//!   the server's time. A replay that asks for more than retention kept gets a gap notice; bad
//!   subscriptions are refused with their reason; `lockstep topics` lists counts and sequences.
//! * Store-kept history survives a SIGKILL of the server: it replays as before and numbering goes
//!   on without repeats.
//! * A configuration whose retention would exceed the memory budget is refused at start, naming
//!   the rule.

mod support;

use std::time::Duration;

use lockstep_client::{Deliveries, Delivery, Error, HistoryGap, Reason, Replay};
use support::{eventually, free_listen_addr, opts, serve_fails, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

const PROTOCOL: &str = include_str!("../../../docs/PROTOCOL.md");

/// The retention rules PROTOCOL.md shows (its first TOML block), which these tests run with.
fn documented_rules() -> String {
    let section = &PROTOCOL[PROTOCOL.find("## Topic history").expect("PROTOCOL.md has the section")..];
    let block = &section[section.find("```toml").expect("a TOML example") + "```toml".len()..];
    let block = &block[..block.find("```").expect("closed")];
    block.lines().map(str::trim_start).collect::<Vec<_>>().join("\n")
}

fn config_file(dir: &ScratchDir, text: &str) -> String {
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Reads `n` deliveries, failing after [`T`].
async fn receive(deliveries: &mut Deliveries, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(T, deliveries.recv()).await {
            Ok(Some(d)) => out.push(d),
            other => panic!("after {} of {n} deliveries: {other:?}", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_the_history_then_live_messages_once_each_in_order() {
    let dir = ScratchDir::new("history-seam");
    let config = config_file(&dir, &documented_rules());
    let server = Server::start(&["--config", &config]);
    let client = server.client().await;
    let publisher = client.register(opts("feed", "feed")).await.unwrap();
    for i in 1..=300u32 {
        publisher.publish("market.btc", i.to_string()).await.unwrap();
    }
    publisher.publish_confirmed("market.btc", "301").await.unwrap();

    let late = client.register(opts("late", "strategy")).await.unwrap();
    // The publisher goes on while the replay is under way.
    let more = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            for i in 302..=600u32 {
                publisher.publish("market.btc", i.to_string()).await.unwrap();
            }
        }
    });
    late.subscribe("market.>", Replay::SinceSeq(1)).await.unwrap();
    more.await.unwrap();
    let got = receive(&mut late.deliveries().unwrap(), 600).await;
    let seqs: Vec<u64> = got.iter().map(|d| d.topic_seq).collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<u64>>());
    assert!(got.iter().all(|d| d.payload == d.topic_seq.to_string().as_bytes() && d.publisher == "feed"));
    assert!(got.windows(2).all(|w| w[0].time_ms <= w[1].time_ms) && got[0].time_ms > 0);
    assert!(late.history_gaps().is_empty());

    // `alerts` keeps 5: asking for the last 8 reports the 3 dropped first.
    for i in 1..=8u32 {
        publisher.publish("alerts", i.to_string()).await.unwrap();
    }
    publisher.publish_confirmed("untracked", "x").await.unwrap();
    let other = client.register(opts("other", "strategy")).await.unwrap();
    other.subscribe("alerts", Replay::Last(8)).await.unwrap();
    let got = receive(&mut other.deliveries().unwrap(), 5).await;
    assert_eq!(got.iter().map(|d| d.topic_seq).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
    assert_eq!(other.history_gaps(), [HistoryGap { topic: "alerts".into(), first_seq: 1, last_seq: 3 }]);

    // Bad subscriptions: refused with their reason, nothing changed (a malformed pattern is
    // refused by the client before it is sent; the server refuses it alike).
    let err = other.subscribe("a..b", Replay::None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = other.unsubscribe("never.subscribed").await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::InvalidArgument), "{err:?}");

    // The listing: unary, and through the CLI.
    let topics = client.topics().await.unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(names, ["alerts", "market.btc"]);
    assert_eq!((topics[1].messages, topics[1].first_seq, topics[1].last_seq), (600, 1, 600));
    assert_eq!((topics[0].messages, topics[0].first_seq, topics[0].last_seq, topics[0].stored), (5, 4, 8, false));
    let (ok, out, err) = server.cli_async(&["topics", "--json"]).await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["topic"], "alerts");
    assert_eq!((listed[0]["messages"].as_u64(), listed[0]["last_seq"].as_u64()), (Some(5), Some(8)));
    let (ok, out, _) = server.cli_async(&["topics"]).await;
    assert!(ok && out.contains("market.btc") && out.contains("2 retained topic(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_kept_history_replays_after_a_sigkill_and_numbering_goes_on() {
    let dir = ScratchDir::new("history-restart");
    let config = config_file(&dir, &documented_rules());
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, &data, &["--config", &config]);
    let client = server.client().await;
    let publisher = client.register(opts("feed", "feed")).await.unwrap();
    for i in 1..=30u32 {
        // Confirmed: acknowledged only once stored.
        publisher.publish_confirmed("kept.orders", format!("o{i}")).await.unwrap();
    }
    publisher.publish_confirmed("market.eth", "memory only").await.unwrap();
    server.kill();

    let server = Server::start_durable(&listen, &data, &["--config", &config]);
    let client = server.client().await;
    let topics = client.topics().await.unwrap();
    assert_eq!(topics.len(), 1, "memory-kept topics are gone: {topics:?}");
    assert_eq!((topics[0].topic.as_str(), topics[0].messages, topics[0].last_seq), ("kept.orders", 30, 30));
    let late = client.register(opts("late", "audit")).await.unwrap();
    late.subscribe("kept.>", Replay::SinceSeq(1)).await.unwrap();
    let mut deliveries = late.deliveries().unwrap();
    let replayed = receive(&mut deliveries, 30).await;
    assert_eq!(replayed.iter().map(|d| d.topic_seq).collect::<Vec<_>>(), (1..=30).collect::<Vec<u64>>());
    assert_eq!(replayed[29].payload, "o30".as_bytes());
    // The publisher's session comes back by itself; numbering goes on from 31.
    assert!(eventually(T, || async { publisher.publish_confirmed("kept.orders", "o31").await.is_ok() }).await);
    let live = receive(&mut deliveries, 1).await;
    assert_eq!((live[0].topic_seq, &live[0].payload[..]), (31, "o31".as_bytes()));
}

#[test]
fn retention_over_the_memory_budget_is_refused_at_start_naming_the_rule() {
    let dir = ScratchDir::new("history-budget");
    let config = config_file(
        &dir,
        r#"
[history]
memory_budget_bytes = 1000000

[[history.retain]]
pattern = "a.>"
max_bytes = 1000
max_topics = 10

[[history.retain]]
pattern = "b.*"
max_bytes = 1000000
"#,
    );
    let (failed, stderr) = serve_fails(&["--in-memory", "--config", &config]);
    assert!(failed, "{stderr}");
    assert!(stderr.contains("retain[1] (pattern 'b.*')") && stderr.contains("memory_budget_bytes"), "{stderr}");
}
