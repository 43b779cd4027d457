//! Circuit breakers in the engine, on a manual clock: an agent that stops acknowledging, or that
//! reports failures, is isolated — its own requests refused, messages for it counted as missed —
//! and comes back when it recovers; nobody else is affected.

mod harness;

use harness::{publish, restart, update, Harness};
use lockstep_core::breaker::{BreakerSettings, BreakerState};
use lockstep_core::notice::Notice;
use lockstep_core::{Config, ConnId, ErrorCode, RegistryEventKind, Request};
use serde_json::json;

fn config() -> Config {
    Config {
        breaker: BreakerSettings {
            failure_threshold: 3,
            failure_window_ms: 60_000,
            recovery_delay_ms: 1_000,
            max_recovery_delay_ms: 10_000,
            jitter_percent: 0,
            probe_successes: 2,
            probe_timeout_ms: 2_000,
            timeout_per_agent_ms: 500,
        },
        heartbeat_interval_ms: 100_000,
        ..Config::default()
    }
}

fn breaker(h: &Harness, id: &str) -> BreakerState {
    h.agent_view(id).expect("registered").breaker
}

/// Sends one message to everyone, lets `readers` drain and acknowledge, and `hung` not.
fn round(h: &mut Harness, publisher: ConnId, readers: &[ConnId], text: &str) {
    h.call_ok(publisher, publish("feed", text));
    for &r in readers {
        h.drain(r);
        let last = h.deliveries(r).last().map_or(0, |d| d.seq);
        h.send_with_id(r, 0, Request::Ack { up_to: last });
    }
    h.pump();
}

/// Three rounds in which `hung` takes its batch but never acknowledges it: its breaker opens.
fn hang_until_open(h: &mut Harness, publisher: ConnId, readers: &[ConnId], hung: ConnId) {
    h.pause(hung);
    for i in 0..3 {
        h.unpause(hung);
        round(h, publisher, readers, &format!("m{i}"));
        h.pause(hung);
        let t = h.now + 600;
        h.advance_to(t);
    }
}

#[test]
fn a_hung_agent_is_isolated_and_comes_back_told_what_it_missed() {
    let mut h = Harness::new(config());
    let publisher = h.join("pub", "scanner", &[]);
    let healthy = h.join("healthy", "strategy", &["feed"]);
    let hung = h.join("hung", "strategy", &["feed"]);
    let watch = h.watch_registry("");
    // Three batches go unacknowledged past their deadline: the breaker opens.
    hang_until_open(&mut h, publisher, &[healthy], hung);
    assert_eq!(breaker(&h, "hung"), BreakerState::Open);
    assert_eq!(breaker(&h, "healthy"), BreakerState::Closed);
    assert!(h
        .registry_events(watch)
        .iter()
        .any(|e| e.kind == RegistryEventKind::Breaker && e.agent.agent_id == "hung"));

    // Open: its own publishes and state updates are refused, naming the breaker and the probe time.
    // (It reads its replies; deliveries are held back while the breaker is open.)
    h.unpause(hung);
    let err = h.call_err(hung, publish("feed", "x"));
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert!(err.to_string().contains("circuit breaker") && err.to_string().contains("probed again at"), "{err}");
    assert_eq!(h.call_err(hung, update(json!({"a": 1}))).code(), ErrorCode::FailedPrecondition);

    // Messages for it are counted as missed; the healthy agent gets everything.
    let sent_to_hung_before = h.deliveries(hung).len();
    for i in 3..8 {
        round(&mut h, publisher, &[healthy], &format!("m{i}"));
    }
    assert_eq!(h.delivered_payloads(healthy), (0..8).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(h.agent_view("hung").unwrap().dropped, 5);
    assert_eq!(h.deliveries(hung).len(), sent_to_hung_before);

    // It recovers: after the recovery delay the breaker is half-open, probes are acknowledged,
    // and it closes. The first delivery after the gap says how many were missed.
    h.unpause(hung);
    let t = h.now + 1_000;
    h.advance_to(t);
    assert_eq!(breaker(&h, "hung"), BreakerState::HalfOpen);
    for i in 8..10 {
        round(&mut h, publisher, &[healthy, hung], &format!("m{i}"));
    }
    assert_eq!(breaker(&h, "hung"), BreakerState::Closed);
    let after_gap = h.deliveries(hung).into_iter().find(|d| d.missed_before > 0).expect("a gap notice");
    assert_eq!(after_gap.missed_before, 5);
    h.call_ok(hung, publish("feed", "back"));
}

#[test]
fn reported_delivery_errors_open_the_breaker_and_restart_closes_it() {
    let mut h = Harness::new(config());
    let publisher = h.join("pub", "scanner", &[]);
    let failing = h.join("failing", "strategy", &["feed"]);
    for i in 0..3 {
        round(&mut h, publisher, &[], &format!("m{i}"));
        h.drain(failing);
        let seq = h.deliveries(failing).last().unwrap().seq;
        h.call_ok(failing, Request::DeliveryError { seq, reason: "cannot parse".into() });
    }
    assert_eq!(breaker(&h, "failing"), BreakerState::Open);
    let detail = h.admin_done(restart("failing"));
    assert!(detail.contains("open → closed"), "{detail}");
    assert_eq!(breaker(&h, "failing"), BreakerState::Closed);
    // Both moves are notices for the server's log, with their reasons.
    let moves: Vec<(BreakerState, BreakerState, String)> = h
        .engine
        .take_notices()
        .kept()
        .iter()
        .filter_map(|n| match n {
            Notice::BreakerMoved { agent, from, to, why, .. } if &**agent == "failing" => {
                Some((*from, *to, why.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert_eq!((moves[0].0, moves[0].1), (BreakerState::Closed, BreakerState::Open));
    assert!(moves[0].2.contains('3'), "the reason names the failures: {}", moves[0].2);
    assert_eq!((moves[1].0, moves[1].1), (BreakerState::Open, BreakerState::Closed));
    h.call_ok(failing, publish("feed", "ok again"));
    assert!(h.engine.control().audit().entries().any(|e| e.command == "restart_agent"));
    assert_eq!(h.admin_err(restart("nobody")).code(), ErrorCode::NotFound);
}

#[test]
fn a_quiet_agent_is_not_reopened_forever_for_lack_of_probes() {
    let mut h = Harness::new(config());
    let publisher = h.join("pub", "scanner", &[]);
    let quiet = h.join("quiet", "strategy", &["feed"]);
    // Three batches go unacknowledged past their deadline: the breaker opens.
    hang_until_open(&mut h, publisher, &[], quiet);
    assert_eq!(breaker(&h, "quiet"), BreakerState::Open);
    h.unpause(quiet);
    let last = h.deliveries(quiet).last().map_or(0, |d| d.seq);
    h.send_with_id(quiet, 0, Request::Ack { up_to: last });
    // Half-open with nothing to send, then the trial ends: closed, not reopened.
    let t = h.now + 1_000 + 2_000;
    h.advance_to(t);
    assert_eq!(breaker(&h, "quiet"), BreakerState::Closed);
}

#[test]
fn repeated_protocol_violations_open_the_breaker() {
    let mut h = Harness::new(config());
    let bad = h.join("bad", "worker", &[]);
    for id in 1..=3 {
        h.engine.handle(h.now, lockstep_core::Input::Malformed { conn: bad, request_id: id, reason: "garbage".into() });
        h.pump();
    }
    assert_eq!(breaker(&h, "bad"), BreakerState::Open);
    assert_eq!(h.replies(bad, 3).len(), 1, "each violation is answered");
}

#[test]
fn health_tells_the_hung_agent_from_the_healthy_one() {
    let mut h = Harness::new(config());
    let publisher = h.join("pub", "scanner", &[]);
    let healthy = h.join("healthy", "strategy", &["feed"]);
    let hung = h.join("hung", "strategy", &["feed"]);
    // Three batches go unacknowledged past their deadline: the breaker opens.
    hang_until_open(&mut h, publisher, &[healthy], hung);
    let overview = h.engine.health(h.now);
    let report = |id: &str| overview.agents.iter().find(|a| a.1 == id).map(|a| a.3.clone()).unwrap();
    assert_eq!(report("healthy").status, lockstep_core::HealthStatus::Healthy);
    assert_eq!(report("healthy").deliveries_succeeded, 3);
    assert!(report("healthy").ack_p99_ms.is_some());
    let hung_report = report("hung");
    assert_eq!(hung_report.status, lockstep_core::HealthStatus::Unhealthy, "{hung_report:?}");
    assert_eq!(hung_report.deliveries_failed, 3);
    assert_eq!(overview.counts.total(), 3);
    assert!(overview.counts.score() < 1.0);
    // System health is sampled on its own clock.
    let t = h.now + 10_000;
    h.advance_to(t);
    assert!(!h.engine.health(h.now).history.is_empty());
}

#[test]
fn when_most_of_a_namespace_fails_at_once_only_the_configured_share_is_isolated() {
    let mut h = Harness::new(Config { breaker_max_isolated_percent: 20, ..config() });
    let publisher = h.join("pub", "scanner", &[]);
    let slow: Vec<ConnId> = (0..9).map(|i| h.join(&format!("slow-{i}"), "strategy", &["feed"])).collect();
    // Every subscriber takes its batches and acknowledges none, as on a machine too busy to answer.
    for i in 0..5 {
        round(&mut h, publisher, &[], &format!("m{i}"));
        for &s in &slow {
            h.drain(s);
        }
        let t = h.now + 600;
        h.advance_to(t);
    }
    let isolated: Vec<String> =
        (0..9).map(|i| format!("slow-{i}")).filter(|id| breaker(&h, id) != BreakerState::Closed).collect();
    // 20 % of the 10 live agents: 2 isolated, the other 7 held closed although they failed as much.
    assert_eq!(isolated.len(), 2, "{isolated:?}");
    assert!(h.agent_view("slow-8").unwrap().breaker_opened == 0 || isolated.contains(&"slow-8".to_owned()));
    // An operator restarts one of them: its breaker closes, and the room it leaves is taken by the
    // next failure that would open a breaker — never more than the share.
    h.admin_done(restart(&isolated[0]));
    let count = |h: &Harness| (0..9).filter(|i| breaker(h, &format!("slow-{i}")) != BreakerState::Closed).count();
    assert_eq!(count(&h), 1);
    round(&mut h, publisher, &[], "m5");
    for &s in &slow {
        h.drain(s);
    }
    let t = h.now + 600;
    h.advance_to(t);
    assert_eq!(count(&h), 2, "the room went to a failing agent, and no more");
}

/// Three times: a delivery goes out, the server stalls for 2 s (four acknowledgement timeouts),
/// and when it runs again its timers are due at once, before the reader's acknowledgement is read.
/// Whether the shell reported each stall decides the reader's breaker.
fn three_stalls(reported: bool) -> BreakerState {
    let mut h = Harness::new(config());
    let publisher = h.join("pub", "scanner", &[]);
    let reader = h.join("reader", "strategy", &["feed"]);
    for i in 0..3 {
        h.call_ok(publisher, publish("feed", &format!("m{i}")));
        h.pump();
        h.drain(reader);
        let since = h.now + 1;
        h.now += 2_000;
        if reported {
            h.engine.handle(h.now, lockstep_core::Input::ServerStalled { since });
        }
        let t = h.now;
        h.advance_to(t);
        let last = h.deliveries(reader).last().map_or(0, |d| d.seq);
        h.send_with_id(reader, 0, Request::Ack { up_to: last });
    }
    breaker(&h, "reader")
}

#[test]
fn acknowledgements_the_server_could_not_read_during_a_stall_are_not_failures() {
    assert_eq!(three_stalls(true), BreakerState::Closed);
    assert_eq!(three_stalls(false), BreakerState::Open, "unreported, the stalls read as three timeouts");
}
