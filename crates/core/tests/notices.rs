//! Notices: what the engine tells operators through the server's log — joins, departures,
//! losses, sync points ending without everyone, slow consumers — and that routine traffic tells
//! them nothing. (Breaker moves: `breakers.rs`; slow consumers: `engine.rs`.)

mod harness;

use harness::{agents, force, publish, update, Harness};
use lockstep_core::notice::Notice;
use lockstep_core::{Config, Request};
use serde_json::json;

fn notices(h: &mut Harness) -> Vec<Notice> {
    let notices = h.engine.take_notices();
    assert_eq!(notices.dropped(), 0);
    notices.kept().to_vec()
}

#[test]
fn joins_departures_and_losses_are_noticed_and_routine_traffic_is_not() {
    let mut h = Harness::new(Config::default());
    let reader = h.join("reader", "worker", &["t"]);
    let feed = h.join("feed", "scanner", &[]);
    assert_eq!(
        notices(&mut h),
        [
            Notice::AgentJoined { namespace: "default".into(), agent: "reader".into(), role: "worker".into() },
            Notice::AgentJoined { namespace: "default".into(), agent: "feed".into(), role: "scanner".into() },
        ]
    );
    for i in 0..50 {
        h.call_ok(feed, publish("t", &i.to_string()));
    }
    h.call(feed, update(json!({"pnl": 1})));
    h.drain(reader);
    h.heartbeat(reader);
    assert_eq!(notices(&mut h), [], "no notice per message, state update or heartbeat");

    // reader goes silent past its lease (3 intervals of 1 s) while feed heartbeats; feed leaves.
    h.advance_heartbeating(4_000, &[feed]);
    assert_eq!(notices(&mut h), [Notice::AgentLost { namespace: "default".into(), agent: "reader".into() }]);
    h.send(feed, Request::Deregister);
    let left = notices(&mut h);
    assert!(
        matches!(&left[..], [Notice::AgentLeft { agent, why, .. }] if &**agent == "feed" && !why.is_empty()),
        "{left:?}"
    );
}

#[test]
fn sync_points_ending_without_everyone_are_noticed_with_who_was_missing() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "worker", &[]);
    let b = h.join("b", "worker", &[]);
    notices(&mut h);
    // Everyone arrives: nothing to tell.
    h.arrive(a, "both", agents(&["a", "b"]), 10_000, "");
    h.arrive(b, "both", agents(&["a", "b"]), 10_000, "");
    assert_eq!(notices(&mut h), []);

    h.arrive(a, "slow", agents(&["a", "ghost"]), 500, "");
    h.arrive(b, "forced", agents(&["b", "ghost"]), 60_000, "");
    h.advance_heartbeating(600, &[a, b]);
    h.admin_ok(force("forced"));
    let ended: Vec<(String, &str, Vec<String>, usize)> = notices(&mut h)
        .into_iter()
        .map(|n| match n {
            Notice::SyncPointEnded { sync_id, outcome, missing, missing_count, .. } => {
                (sync_id.to_string(), outcome, missing, missing_count)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ended,
        [
            ("slow".to_owned(), "timed_out", vec!["ghost".to_owned()], 1),
            ("forced".into(), "forced", vec!["ghost".into()], 1)
        ]
    );
}
