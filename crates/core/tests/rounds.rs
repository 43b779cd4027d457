//! Tick rounds on a manual clock: a round closes as soon as every participant answered, or at its
//! timeout naming who did not; misses count for the breakers; the answers are merged into shared
//! context in the declared order and the result published; numbering goes on after a restart.

mod harness;

use harness::Harness;
use lockstep_core::breaker::{BreakerSettings, BreakerState};
use lockstep_core::durable::{Change, Restored};
use lockstep_core::io::{RoundCall, RoundDone};
use lockstep_core::round::{Closing, Members, MergeOrder, RoundView, SeriesSpec};
use lockstep_core::{Config, ConnId, CoreError, Frame, Input, Reason, Request};
use serde_json::{json, Value};

fn config() -> Config {
    Config {
        breaker: BreakerSettings {
            failure_threshold: 3,
            failure_window_ms: 60_000,
            recovery_delay_ms: 100_000,
            max_recovery_delay_ms: 100_000,
            jitter_percent: 0,
            probe_successes: 1,
            probe_timeout_ms: 2_000,
            timeout_per_agent_ms: 500,
        },
        heartbeat_interval_ms: 1_000_000,
        breaker_max_isolated_percent: 50,
        ..Config::default()
    }
}

fn spec(name: &str, members: Members, timeout_ms: u64, cadence_ms: u64) -> SeriesSpec {
    SeriesSpec {
        namespace: String::new(),
        name: name.into(),
        members,
        timeout_ms,
        context_key: format!("rounds.{name}"),
        topic: format!("rounds.{name}"),
        cadence_ms,
        order: MergeOrder::AgentId,
        input_json: r#"{"tick":true}"#.into(),
    }
}

fn call(h: &mut Harness, call: RoundCall) -> Result<RoundDone, CoreError> {
    let origin = 7_000 + h.rounds_done.len() as u64;
    let now = h.now;
    h.engine.handle(now, Input::Round { origin, call });
    h.pump();
    let (o, result) = h.rounds_done.pop().expect("answered at once");
    assert_eq!(o, origin);
    result
}

fn open(h: &mut Harness, series: &str, input: Value) -> Result<RoundDone, CoreError> {
    let call_ = RoundCall::OpenRound {
        namespace: String::new(),
        series: series.into(),
        round: 0,
        input_json: input.to_string(),
        driver: "driver".into(),
    };
    call(h, call_)
}

/// The round inputs `conn` received: (series, round, input).
fn inputs(h: &mut Harness, conn: ConnId) -> Vec<(String, u64, Value)> {
    h.take_frames(conn)
        .into_iter()
        .filter_map(|f| match f {
            Frame::RoundInput { series, round, input, .. } => {
                Some((series.to_string(), round, serde_json::from_str(&input).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn answer(series: &str, round: u64, output: Value) -> Request {
    Request::RoundAnswer { series: series.into(), round, output_json: output.to_string() }
}

fn context(h: &Harness, key: &str) -> (u64, Value) {
    let read = h.engine.context_get("", key, None).expect("the key exists");
    (read.version, (*read.value).clone())
}

fn closed(h: &Harness, series: &str, round: u64) -> lockstep_core::round::RoundRecord {
    match h.engine.round_get("", series, round).expect("kept") {
        RoundView::Closed(r) => r,
        RoundView::Open(o) => panic!("round {round} is still open: {o:?}"),
    }
}

fn breaker(h: &Harness, id: &str) -> BreakerState {
    h.agent_view(id).expect("registered").breaker
}

#[test]
fn a_round_closes_as_soon_as_everyone_answered_and_its_merge_is_published() {
    let mut h = Harness::new(config());
    let a = h.join("a", "strategy", &[]);
    let b = h.join("b", "strategy", &[]);
    let watcher = h.join("watcher", "monitor", &["rounds.>"]);
    call(&mut h, RoundCall::CreateSeries(Box::new(spec("s", Members::Role("strategy".into()), 1_000, 0)))).unwrap();
    let opened = open(&mut h, "s", json!({"price": 10})).unwrap();
    assert_eq!((opened.round, opened.deadline), (1, 1_000));
    assert_eq!(opened.participants, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(inputs(&mut h, a), vec![("s".into(), 1, json!({"price": 10}))]);
    assert!(inputs(&mut h, watcher).is_empty(), "only participants are asked");
    h.now = 5;
    h.call_ok(b, answer("s", 1, json!({"b": {"signal": "buy"}})));
    assert!(matches!(h.engine.round_get("", "s", 1).unwrap(), RoundView::Open(_)));
    h.now = 8;
    h.call_ok(a, answer("s", 1, json!({"a": {"signal": "sell"}})));
    let r = closed(&h, "s", 1);
    assert_eq!((r.closing, r.closed_at), (Closing::Complete, 8), "closed at the last answer, not the timeout");
    assert_eq!(r.answered, vec![("a".into(), 8), ("b".into(), 5)]);
    assert!(r.missed.is_empty());
    let (version, value) = context(&h, "rounds.s");
    assert_eq!(value, json!({"a": {"signal": "sell"}, "b": {"signal": "buy"}}));
    assert_eq!(r.context_version, version);
    let published = h.delivered_payloads(watcher);
    assert_eq!(published.len(), 1);
    let m: Value = serde_json::from_str(&published[0]).unwrap();
    assert_eq!((m["round"].clone(), m["closing"].clone()), (json!(1), json!("complete")));
    assert_eq!(m["value"], value);
    assert_eq!(m["answered"], json!(["a", "b"]));
}

#[test]
fn a_hung_agent_is_named_at_the_timeout_counted_by_its_breaker_and_not_waited_for() {
    let mut h = Harness::new(config());
    let ids = ["a", "b", "c", "hung"];
    let conns: Vec<ConnId> = ids.iter().map(|id| h.join(id, "strategy", &[])).collect();
    let s = spec("tick", Members::Role("strategy".into()), 50, 100);
    call(&mut h, RoundCall::CreateSeries(Box::new(s))).unwrap();
    // The server opens round 1 at once and every 100 ms after; "hung" never answers.
    for k in 1..=3u64 {
        let opened_at = (k - 1) * 100;
        h.advance_to(opened_at);
        h.now = opened_at + 10;
        for (&conn, id) in conns[..3].iter().zip(ids) {
            let given = inputs(&mut h, conn);
            assert_eq!(given, vec![("tick".into(), k, json!({"tick": true}))], "round {k}");
            h.call_ok(conn, answer("tick", k, json!({ id: k })));
        }
        assert!(matches!(h.engine.round_get("", "tick", k).unwrap(), RoundView::Open(_)), "waits for hung");
        h.advance_to(opened_at + 50);
        let r = closed(&h, "tick", k);
        assert_eq!((r.closing, r.closed_at), (Closing::Timeout, opened_at + 50));
        assert_eq!(r.missed.len(), 1);
        assert_eq!((r.missed[0].agent.as_str(), r.missed[0].why.as_str()), ("hung", "timeout"));
        assert_eq!(r.answered.len(), 3);
        assert_eq!(context(&h, "rounds.tick").1, json!({"a": k, "b": k, "c": k}));
    }
    // Three misses: the breaker opened; the next round skips the isolated agent.
    assert_eq!(breaker(&h, "hung"), BreakerState::Open);
    assert_eq!(breaker(&h, "a"), BreakerState::Closed);
    h.advance_to(300);
    let open = match h.engine.round_get("", "tick", 4).unwrap() {
        RoundView::Open(o) => o,
        other => panic!("round 4 opens on cadence: {other:?}"),
    };
    assert_eq!(open.opened_at, 300);
    assert_eq!(open.skipped, vec!["hung".to_string()]);
    assert!(inputs(&mut h, conns[3]).iter().all(|(_, k, _)| *k < 4), "the isolated agent is not asked");
    // A late answer to a closed round is refused, naming its state; nothing changes.
    let late = h.call_err(conns[3], answer("tick", 1, json!({"hung": 1})));
    assert_eq!(late.reason(), Reason::RoundNotOpen);
    assert!(late.to_string().contains("timeout"), "{late}");
    assert_eq!(closed(&h, "tick", 1).answered.len(), 3);
}

#[test]
fn the_isolation_cap_holds_for_round_misses() {
    let mut h = Harness::new(Config { breaker_max_isolated_percent: 10, ..config() });
    let _conns: Vec<ConnId> = ["h1", "h2", "ok"].iter().map(|id| h.join(id, "s", &[])).collect();
    call(&mut h, RoundCall::CreateSeries(Box::new(spec("t", Members::Role("s".into()), 10, 20)))).unwrap();
    h.advance_to(20 * 5 + 10);
    // Both silent agents missed five rounds, but one agent at most may be isolated (10 % of 3, at
    // least 1).
    let open = [breaker(&h, "h1"), breaker(&h, "h2"), breaker(&h, "ok")];
    assert_eq!(open.iter().filter(|b| **b == BreakerState::Open).count(), 1, "{open:?}");
}

#[test]
fn the_merge_order_is_the_declared_one_whatever_the_timing() {
    for (order, winner) in [(MergeOrder::AgentId, "b"), (MergeOrder::AnswerOrder, "a")] {
        let mut h = Harness::new(config());
        let a = h.join("a", "r", &[]);
        let b = h.join("b", "r", &[]);
        let mut s = spec("m", Members::Agents(vec!["a".into(), "b".into()]), 100, 0);
        s.order = order;
        call(&mut h, RoundCall::CreateSeries(Box::new(s))).unwrap();
        open(&mut h, "m", json!({})).unwrap();
        h.call_ok(b, answer("m", 1, json!({"last": "b", "n": {"b": 1}})));
        h.call_ok(a, answer("m", 1, json!({"last": "a", "n": {"a": 1}})));
        assert_eq!(context(&h, "rounds.m").1, json!({"last": winner, "n": {"a": 1, "b": 1}}), "{order:?}");
        let answered: Vec<String> = closed(&h, "m", 1).answered.into_iter().map(|(a, _)| a).collect();
        let expected = if order == MergeOrder::AgentId { ["a", "b"] } else { ["b", "a"] };
        assert_eq!(answered, expected);
    }
}

#[test]
fn gone_participants_are_missed_at_once_and_bad_answers_change_nothing() {
    let mut h = Harness::new(config());
    let a = h.join("a", "r", &[]);
    let b = h.join("b", "r", &[]);
    let other = h.join("other", "x", &[]);
    let members = Members::Agents(vec!["a".into(), "b".into(), "ghost".into()]);
    call(&mut h, RoundCall::CreateSeries(Box::new(spec("g", members, 1_000, 0)))).unwrap();
    let opened = open(&mut h, "g", json!({"k": 1})).unwrap();
    assert_eq!(opened.participants, vec!["a".to_string(), "b".to_string()]);
    // Refusals, each precise, none applied.
    let e = h.call_err(other, answer("g", 1, json!({})));
    assert_eq!(e.reason(), Reason::NotARoundParticipant);
    let e = h.call_err(a, answer("nope", 1, json!({})));
    assert_eq!(e.reason(), Reason::UnknownRoundSeries);
    let e = h.call_err(a, answer("g", 1, json!([1, 2])));
    assert_eq!(e.reason(), Reason::InvalidArgument);
    let big = "x".repeat(h.config().rounds.max_output_bytes);
    let e = h.call_err(a, answer("g", 1, json!({ "big": big })));
    assert!(e.to_string().contains("rounds.max_output_bytes"), "{e}");
    let e = h.call_err(a, answer("g", 2, json!({})));
    assert_eq!(e.reason(), Reason::RoundNotOpen);
    h.call_ok(a, answer("g", 1, json!({"a": 1})));
    let e = h.call_err(a, answer("g", 1, json!({"a": 2})));
    assert_eq!(e.reason(), Reason::RoundAnswered);
    let e = open(&mut h, "g", json!({})).unwrap_err();
    assert_eq!(e.reason(), Reason::RoundInProgress);
    // b leaves: it is missed at once, and the round closes without waiting for its timeout.
    h.send(b, Request::Deregister);
    let r = closed(&h, "g", 1);
    assert_eq!((r.closing, r.closed_at), (Closing::Complete, h.now), "nobody is left to wait for");
    let missed: Vec<(&str, &str)> = r.missed.iter().map(|m| (m.agent.as_str(), m.why.as_str())).collect();
    assert_eq!(missed, vec![("b", "left"), ("ghost", "not registered")]);
    assert_eq!(context(&h, "rounds.g").1, json!({"a": 1}));
    // Bad series specs are refused whole.
    let mut bad = spec("g", Members::Role("r".into()), 10, 0);
    assert_eq!(
        call(&mut h, RoundCall::CreateSeries(Box::new(bad.clone()))).unwrap_err().reason(),
        Reason::RoundSeriesExists
    );
    bad.name = "bad name!".into();
    assert_eq!(call(&mut h, RoundCall::CreateSeries(Box::new(bad))).unwrap_err().reason(), Reason::InvalidArgument);
    assert_eq!(h.engine.round_series("").unwrap().len(), 1);
}

#[test]
fn numbering_goes_on_after_a_restart_and_retained_rounds_are_kept() {
    let mut h = Harness::new(config());
    h.engine.track_changes();
    let a = h.join("a", "r", &[]);
    call(&mut h, RoundCall::CreateSeries(Box::new(spec("n", Members::Agents(vec!["a".into()]), 100, 0)))).unwrap();
    for k in 1..=3 {
        open(&mut h, "n", json!({})).unwrap();
        h.call_ok(a, answer("n", k, json!({"k": k})));
    }
    // Round 4 is open when the server stops: its number is used up.
    open(&mut h, "n", json!({})).unwrap();
    let mut images = std::collections::BTreeMap::new();
    for change in h.take_changes() {
        if let Change::RoundSeries(s) = change {
            images.insert(s.spec.name.clone(), *s);
        }
    }
    let mut next = Harness::new(config());
    next.now = h.now + 1_000;
    let restored = Restored { rounds: images.into_values().collect(), ..Restored::default() };
    next.engine.restore(next.now, restored).expect("restores");
    let status = next.engine.round_series_get("", "n").unwrap();
    assert_eq!(status.last_round, 4);
    assert!(status.open.is_none());
    assert_eq!(status.retained.iter().map(|r| r.round).collect::<Vec<_>>(), vec![1, 2, 3]);
    let _a = next.join("a", "r", &[]);
    assert_eq!(open(&mut next, "n", json!({})).unwrap().round, 5, "no number is given out twice");
}
