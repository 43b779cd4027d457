//! Topic history through the engine on a manual clock: retained topics number their messages,
//! a late subscriber is replayed what was kept before anything live (no duplicate, no gap at the
//! seam, even when live messages come while the replay is paced through a small queue), a gap
//! notice where retention dropped what was asked for, trimming by age on the engine's timers, by
//! count and by bytes (store-kept history across a restart: `durable.rs`).

mod harness;

use harness::Harness;
use lockstep_core::history::{Gap, Replay, RetainRule};
use lockstep_core::{Config, ConnId, CoreError, Frame, Reason, Request};

fn rule(pattern: &str) -> RetainRule {
    RetainRule { pattern: pattern.into(), ..RetainRule::default() }
}

fn config(rules: Vec<RetainRule>, queue_capacity: usize) -> Config {
    let mut c = Config { queue_capacity, ..Config::default() };
    c.history.retain = rules;
    c
}

fn publish(h: &mut Harness, conn: ConnId, topic: &str, payload: &str) {
    h.call_ok(
        conn,
        Request::Publish { topic: topic.into(), payload: payload.to_owned().into(), content_type: String::new() },
    );
}

fn subscribe(h: &mut Harness, conn: ConnId, pattern: &str, replay: Replay) {
    h.call_ok(conn, Request::Subscribe { pattern: pattern.into(), replay });
}

/// What `conn` received, in order: (topic, topic seq, payload) per delivery, and gaps.
#[derive(Debug, PartialEq)]
enum Got {
    Msg(String, u64, String),
    Gap(Gap),
}

fn received(h: &Harness, conn: ConnId) -> Vec<Got> {
    let mut out = Vec::new();
    let mut last_seq = 0;
    for f in h.frames(conn) {
        match f {
            Frame::Deliveries(batch) => {
                for d in batch {
                    // Nothing dropped from the agent's queue: its own numbering has no hole.
                    assert_eq!((d.seq, d.missed_before), (last_seq + 1, 0), "{d:?}");
                    last_seq = d.seq;
                    let m = &d.message;
                    out.push(Got::Msg(m.topic.to_string(), m.topic_seq, String::from_utf8_lossy(&m.payload).into()));
                }
            }
            Frame::HistoryGap(g) => out.push(Got::Gap(g.clone())),
            _ => {}
        }
    }
    out
}

fn msg(topic: &str, seq: u64, payload: &str) -> Got {
    Got::Msg(topic.into(), seq, payload.into())
}

#[test]
fn a_late_subscriber_gets_history_then_live_with_no_duplicate_and_no_gap_at_the_seam() {
    // A queue of 4: the replay of 10 cannot go at once and is paced as the connection reads.
    let mut h = Harness::new(config(vec![rule("market.>")], 4));
    let publisher = h.join("pub", "feed", &[]);
    for i in 1..=6 {
        publish(&mut h, publisher, "market.btc", &format!("b{i}"));
        if i % 2 == 0 {
            publish(&mut h, publisher, "market.eth", &format!("e{}", i / 2));
        }
    }
    let late = h.join("late", "strategy", &[]);
    h.pause(late);
    h.send(late, Request::Subscribe { pattern: "market.>".into(), replay: Replay::SinceSeq(1) });
    // Published while the replay waits for the reader: they come after it, once each.
    publish(&mut h, publisher, "market.btc", "b7");
    publish(&mut h, publisher, "market.eth", "e4");
    h.unpause(late);
    publish(&mut h, publisher, "market.btc", "b8");
    let want = vec![
        msg("market.btc", 1, "b1"),
        msg("market.btc", 2, "b2"),
        msg("market.eth", 1, "e1"),
        msg("market.btc", 3, "b3"),
        msg("market.btc", 4, "b4"),
        msg("market.eth", 2, "e2"),
        msg("market.btc", 5, "b5"),
        msg("market.btc", 6, "b6"),
        msg("market.eth", 3, "e3"),
        msg("market.btc", 7, "b7"),
        msg("market.eth", 4, "e4"),
        msg("market.btc", 8, "b8"),
    ];
    assert_eq!(received(&h, late), want);
    // The reply came before the replay.
    assert!(matches!(h.frames(late).iter().find(|f| !matches!(f, Frame::Registered(_))), Some(Frame::Reply { .. })));
    // A subscriber without replay sees live messages only, stamped alike.
    let live = h.join("live", "strategy", &[]);
    subscribe(&mut h, live, "market.eth", Replay::None);
    publish(&mut h, publisher, "market.eth", "e5");
    assert_eq!(received(&h, live), vec![msg("market.eth", 5, "e5")]);
}

#[test]
fn the_queue_never_holds_more_than_its_capacity_during_a_long_replay() {
    let mut h = Harness::new(config(vec![RetainRule { max_messages: 10_000, ..rule("t") }], 8));
    let publisher = h.join("pub", "feed", &[]);
    for i in 0..2_000 {
        publish(&mut h, publisher, "t", &i.to_string());
    }
    let late = h.join("late", "r", &[]);
    h.pause(late);
    h.send(late, Request::Subscribe { pattern: "t".into(), replay: Replay::Last(2_000) });
    let queued =
        h.engine.list_agents("", &Default::default()).unwrap().into_iter().find(|a| a.agent_id == "late").unwrap();
    assert!(queued.queue_depth <= 8, "{}", queued.queue_depth);
    h.unpause(late);
    // The reader acknowledges what it got, as clients do: the server sends at most
    // `max_in_flight` ahead of the acknowledgements.
    let mut got = received(&h, late);
    while got.len() < 2_000 {
        h.send(late, Request::Ack { up_to: got.len() as u64 });
        let more = received(&h, late);
        assert!(more.len() > got.len(), "acknowledgements let the replay go on ({} of 2,000)", got.len());
        got = more;
    }
    assert_eq!(got.len(), 2_000);
    assert_eq!(got[1_999], msg("t", 2_000, "1999"));
}

#[test]
fn a_gap_notice_where_retention_dropped_what_was_asked_for() {
    let mut h = Harness::new(config(vec![RetainRule { max_messages: 3, ..rule("t") }], 64));
    let publisher = h.join("pub", "feed", &[]);
    for i in 1..=5 {
        publish(&mut h, publisher, "t", &i.to_string());
    }
    let late = h.join("late", "r", &[]);
    subscribe(&mut h, late, "t", Replay::SinceSeq(2));
    assert_eq!(
        received(&h, late),
        vec![
            Got::Gap(Gap { topic: "t".into(), first: 2, last: 2 }),
            msg("t", 3, "3"),
            msg("t", 4, "4"),
            msg("t", 5, "5")
        ]
    );
    let other = h.join("other", "r", &[]);
    subscribe(&mut h, other, "t", Replay::Last(2));
    assert_eq!(received(&h, other), vec![msg("t", 4, "4"), msg("t", 5, "5")]);
}

#[test]
fn age_trimming_runs_on_the_engine_timers() {
    let mut h = Harness::new(config(vec![RetainRule { max_age_ms: 1_000, ..rule("t") }], 64));
    let publisher = h.join("pub", "feed", &[]);
    publish(&mut h, publisher, "t", "old");
    h.advance_heartbeating(600, &[publisher]);
    publish(&mut h, publisher, "t", "newer");
    h.advance_heartbeating(1_000, &[publisher]);
    let topics = h.engine.history_topics("").unwrap();
    assert_eq!((topics[0].messages, topics[0].first_seq, topics[0].last_seq), (1, 2, 2));
    h.advance_heartbeating(1_600, &[publisher]);
    assert_eq!(h.engine.history_topics("").unwrap()[0].messages, 0);
    // Asked for both: both were dropped by age.
    let late = h.join("late", "r", &[]);
    subscribe(&mut h, late, "t", Replay::Last(2));
    assert_eq!(received(&h, late), vec![Got::Gap(Gap { topic: "t".into(), first: 1, last: 2 })]);
    // By time: the trimmed message was newer than asked for, so a gap with an unknown start.
    let by_time = h.join("by-time", "r", &[]);
    subscribe(&mut h, by_time, "t", Replay::SinceTime(500));
    assert_eq!(received(&h, by_time), vec![Got::Gap(Gap { topic: "t".into(), first: 0, last: 2 })]);
}

#[test]
fn count_and_byte_bounds_and_the_topic_limit() {
    let rules = vec![
        RetainRule { max_messages: 2, ..rule("count") },
        RetainRule { max_bytes: 2 * (100 + 5 + 3), ..rule("bytes") },
        RetainRule { max_topics: 1, ..rule("one.*") },
    ];
    let mut h = Harness::new(config(rules, 64));
    let p = h.join("pub", "feed", &[]);
    for _ in 0..4 {
        publish(&mut h, p, "count", "x");
        publish(&mut h, p, "bytes", &"y".repeat(100));
    }
    let topics = h.engine.history_topics("").unwrap();
    let by = |t: &str| topics.iter().find(|v| v.topic == t).unwrap().clone();
    assert_eq!((by("count").messages, by("count").first_seq), (2, 3));
    assert_eq!((by("bytes").messages, by("bytes").bytes, by("bytes").first_seq), (2, 216, 3));
    publish(&mut h, p, "one.a", "x");
    let e: CoreError =
        h.call_err(p, Request::Publish { topic: "one.b".into(), payload: "x".into(), content_type: String::new() });
    assert_eq!(e.reason(), Reason::Limit);
    assert!(h.engine.history_topics("").unwrap().iter().all(|v| v.topic != "one.b"));
}

#[test]
fn bad_subscriptions_are_refused_and_unsubscribe_ends_a_replay() {
    let mut h = Harness::new(config(vec![rule("t")], 2));
    let p = h.join("pub", "feed", &[]);
    for i in 0..10 {
        publish(&mut h, p, "t", &i.to_string());
    }
    let a = h.join("a", "r", &[]);
    let e = h.call_err(a, Request::Subscribe { pattern: "a..b".into(), replay: Replay::None });
    assert_eq!(e.reason(), Reason::InvalidArgument);
    let e = h.call_err(a, Request::Unsubscribe { pattern: "never".into() });
    assert_eq!(e.reason(), Reason::InvalidArgument);
    h.pause(a);
    h.send(a, Request::Subscribe { pattern: "t".into(), replay: Replay::SinceSeq(1) });
    h.send(a, Request::Unsubscribe { pattern: "t".into() });
    h.unpause(a);
    // What the queue held went out; the rest of the replay did not, nor did later messages.
    publish(&mut h, p, "t", "late");
    assert_eq!(received(&h, a), vec![msg("t", 1, "0"), msg("t", 2, "1")]);
}

#[test]
fn a_configuration_over_the_memory_budget_is_refused_naming_the_rule() {
    let mut c = config(vec![rule("a"), RetainRule { max_bytes: u64::MAX / 2, ..rule("big.>") }], 64);
    c.history.memory_budget_bytes = 1 << 30;
    let err = c.validate().unwrap_err();
    assert!(err.contains("history.retain[1] (pattern 'big.>')"), "{err}");
}

#[test]
fn unsubscribing_one_pattern_leaves_the_replay_of_another_whole() {
    let mut h = Harness::new(config(vec![rule("m.*")], 2));
    let p = h.join("pub", "feed", &[]);
    for i in 1..=4 {
        publish(&mut h, p, "m.a", &format!("a{i}"));
        publish(&mut h, p, "m.b", &format!("b{i}"));
    }
    let s = h.join("s", "r", &[]);
    h.pause(s);
    h.send(s, Request::Subscribe { pattern: "m.a".into(), replay: Replay::SinceSeq(1) });
    h.send(s, Request::Subscribe { pattern: "m.b".into(), replay: Replay::SinceSeq(1) });
    h.send(s, Request::Unsubscribe { pattern: "m.b".into() });
    publish(&mut h, p, "m.a", "a5");
    publish(&mut h, p, "m.b", "b5");
    h.unpause(s);
    let got = received(&h, s);
    // The queue held two when m.b was dropped (a1 and a2); m.a's replay went on to its live a5.
    let a: Vec<u64> = got
        .iter()
        .filter_map(|g| match g {
            Got::Msg(t, seq, _) if t == "m.a" => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(a, [1, 2, 3, 4, 5]);
    assert!(got.iter().all(|g| !matches!(g, Got::Msg(t, 5, _) if t == "m.b")), "{got:?}");
}
