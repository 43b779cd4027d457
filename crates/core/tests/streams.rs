//! Event-time streams through the engine on a manual clock: tick controllers (out-of-order events
//! from three sources emitted in order, an idle source, each late policy, skew reports, event-time
//! bounds) and latency buffers (a known signal interpolated with delay jitter stays within a
//! stated error; definitive-only and provisional-with-corrections consumers), and their admin
//! actions.

mod harness;

use bytes::Bytes;
use harness::Harness;
use lockstep_core::latency::{BufferSpec, Estimator};
use lockstep_core::streams::{EventTimePolicy, StreamKind};
use lockstep_core::ticker::{LatePolicy, TickerSpec};
use lockstep_core::{AdminAction, Config, ConnId, CoreError, Reason, Request};
use serde_json::Value;

fn ticker(late: LatePolicy) -> TickerSpec {
    TickerSpec {
        namespace: String::new(),
        id: "bars".into(),
        inputs: vec!["trades.>".into()],
        output: "ticks.bars".into(),
        period_ms: 100,
        lateness_ms: 0,
        idle_timeout_ms: 5_000,
        max_skew_ms: 0,
        late,
        min_sources: 0,
    }
}

fn event(topic: &str, time: u64) -> Request {
    Request::PublishEvent {
        topic: topic.into(),
        payload: Bytes::from(format!("{{\"t\":{time}}}")),
        content_type: "application/json".into(),
        event_time_ms: time,
    }
}

/// The messages `conn` received on `topic`, as JSON.
fn received(h: &Harness, conn: ConnId, topic: &str) -> Vec<Value> {
    h.deliveries(conn)
        .iter()
        .filter(|d| &*d.message.topic == topic)
        .map(|d| serde_json::from_slice(&d.message.payload).expect("JSON"))
        .collect()
}

/// Acknowledges everything `conn` received (an agent that does not is isolated by its breaker).
fn ack(h: &mut Harness, conn: ConnId) {
    if let Some(last) = h.deliveries(conn).last().map(|d| d.seq) {
        h.send_with_id(conn, 0, Request::Ack { up_to: last });
    }
}

/// (tick, [(publisher, event time)]) of each tick message.
fn ticks(h: &Harness, conn: ConnId) -> Vec<(u64, Vec<(String, u64)>)> {
    received(h, conn, "ticks.bars")
        .iter()
        .filter(|t| t["correction"] == false)
        .map(|t| {
            let events = t["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["publisher"].as_str().unwrap().to_owned(), e["event_time_ms"].as_u64().unwrap()))
                .collect();
            (t["tick"].as_u64().unwrap(), events)
        })
        .collect()
}

fn setup(spec: TickerSpec) -> (Harness, ConnId, [ConnId; 3]) {
    let mut h = Harness::new(Config::default());
    h.now = 10_000;
    let consumer = h.join("consumer", "analytics", &["ticks.>"]);
    let sources = [h.join("a", "feed", &[]), h.join("b", "feed", &[]), h.join("c", "feed", &[])];
    assert_eq!(h.admin_done(AdminAction::CreateTicker(spec)), "created ticker 'bars'");
    (h, consumer, sources)
}

#[test]
fn out_of_order_events_from_three_sources_are_emitted_in_event_time_order() {
    let mut spec = ticker(LatePolicy::Drop);
    spec.lateness_ms = 50;
    let (mut h, consumer, [a, b, c]) = setup(spec);
    // Each source sends its events out of order; the sources interleave.
    let plan: [(ConnId, u64); 12] = [
        (a, 130),
        (b, 20),
        (c, 250),
        (a, 10),
        (b, 180),
        (c, 40),
        (a, 260),
        (b, 110),
        (c, 140),
        (a, 350),
        (b, 330),
        (c, 390),
    ];
    for (i, (conn, t)) in plan.into_iter().enumerate() {
        h.call_ok(conn, event("trades.btc", t));
        // No tick goes before every source's watermark (newest time - 50) has passed its end.
        for (tick, _) in ticks(&h, consumer) {
            let sent = &plan[..=i];
            for src in [a, b, c] {
                let newest = sent.iter().filter(|(s, _)| *s == src).map(|(_, t)| *t).max().unwrap_or(0);
                assert!(
                    newest - 50 >= (tick + 1) * 100,
                    "tick {tick} went before source {src:?}'s watermark passed it"
                );
            }
        }
    }
    // Watermarks: a 300, b 280, c 340 -> ticks 0 and 1 are out (end 100, 200 <= 280), 2 is not.
    let got = ticks(&h, consumer);
    let expected = vec![
        (0, vec![("a".to_owned(), 10), ("b".into(), 20), ("c".into(), 40)]),
        (1, vec![("b".to_owned(), 110), ("a".into(), 130), ("c".into(), 140), ("b".into(), 180)]),
    ];
    assert_eq!(got, expected);
    // Sources move on: tick 2 follows, in order.
    h.call_ok(a, event("trades.btc", 420));
    h.call_ok(b, event("trades.eth", 410));
    let got = ticks(&h, consumer);
    assert_eq!(got[2], (2, vec![("c".to_owned(), 250), ("a".into(), 260)]));
    let view = h.engine.ticker_status("", "bars").unwrap();
    assert_eq!(view.stats.ticks_emitted, 3);
    assert_eq!(view.stats.events, 14);
    assert_eq!(view.stats.next_tick, 3);
    assert_eq!(view.sources.len(), 3);
    // Every tick message is published by the controller.
    assert!(h.deliveries(consumer).iter().all(|d| &*d.message.publisher == "ticker/bars"));
}

#[test]
fn an_idle_source_stops_holding_the_watermark_back_and_is_reported() {
    let (mut h, consumer, [a, b, c]) = setup(ticker(LatePolicy::Drop));
    h.call_ok(a, event("trades.btc", 50));
    h.call_ok(b, event("trades.btc", 60));
    h.call_ok(a, event("trades.btc", 250));
    // b holds tick 0 back, however long a goes on.
    h.advance_heartbeating(14_000, &[consumer, a, b, c]);
    h.call_ok(a, event("trades.btc", 260));
    h.advance_heartbeating(14_999, &[consumer, a, b, c]);
    assert!(ticks(&h, consumer).is_empty());
    // Five seconds without an event from b (server time; heartbeats do not count): it is idle,
    // and the watermark is a's alone (260): tick 0 goes, tick 1 was empty, tick 2 waits.
    h.advance_heartbeating(15_000, &[consumer, a, b, c]);
    assert_eq!(ticks(&h, consumer), vec![(0, vec![("a".to_owned(), 50), ("b".into(), 60)])]);
    let view = h.engine.ticker_status("", "bars").unwrap();
    assert!(view.sources.iter().find(|s| s.publisher == "b").unwrap().idle);
    assert!(!view.sources.iter().find(|s| s.publisher == "a").unwrap().idle);
    assert_eq!(view.stats.idle_reports, 1);
    assert_eq!(view.stats.next_tick, 2);
    // b comes back: active again, holding the watermark from its own time.
    h.call_ok(b, event("trades.btc", 270));
    assert!(!h.engine.ticker_status("", "bars").unwrap().sources.iter().find(|s| s.publisher == "b").unwrap().idle);
    assert_eq!(ticks(&h, consumer).len(), 1);
    // Everyone falls silent: once idle, nothing holds the open tick back.
    h.advance_heartbeating(15_000 + 5_000, &[consumer, a, b, c]);
    assert_eq!(ticks(&h, consumer)[1], (2, vec![("a".to_owned(), 250), ("a".into(), 260), ("b".into(), 270)]));
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.idle_reports, 3);
}

/// One source sends 150, 250 (tick 1 goes), then the late 120.
fn late_event(late: LatePolicy) -> (Harness, ConnId) {
    let (mut h, consumer, [a, _, _]) = setup(ticker(late));
    h.call_ok(a, event("trades.btc", 150));
    h.call_ok(a, event("trades.btc", 250));
    assert_eq!(ticks(&h, consumer), vec![(1, vec![("a".to_owned(), 150)])]);
    h.call_ok(a, event("trades.btc", 120));
    h.call_ok(a, event("trades.btc", 330));
    (h, consumer)
}

#[test]
fn late_policy_drop_counts_the_late_event() {
    let (h, consumer) = late_event(LatePolicy::Drop);
    assert_eq!(ticks(&h, consumer), vec![(1, vec![("a".to_owned(), 150)]), (2, vec![("a".to_owned(), 250)])]);
    let stats = h.engine.ticker_status("", "bars").unwrap().stats;
    assert_eq!((stats.late_dropped, stats.corrections, stats.late_next_tick), (1, 0, 0));
}

#[test]
fn late_policy_next_tick_puts_the_late_event_into_the_next_tick() {
    let (h, consumer) = late_event(LatePolicy::NextTick);
    assert_eq!(
        ticks(&h, consumer),
        vec![(1, vec![("a".to_owned(), 150)]), (2, vec![("a".to_owned(), 120), ("a".into(), 250)])]
    );
    let tick2 = &received(&h, consumer, "ticks.bars")[1];
    assert_eq!(tick2["events"][0]["late"], true);
    assert!(tick2["events"][1].get("late").is_none());
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.late_next_tick, 1);
}

#[test]
fn late_policy_correction_amends_the_emitted_tick() {
    let (h, consumer) = late_event(LatePolicy::Correction);
    let all = received(&h, consumer, "ticks.bars");
    let corrections: Vec<&Value> = all.iter().filter(|t| t["correction"] == true).collect();
    assert_eq!(corrections.len(), 1);
    assert_eq!(corrections[0]["tick"], 1);
    assert_eq!(corrections[0]["events"][0]["event_time_ms"], 120);
    assert_eq!(corrections[0]["events"][0]["late"], true);
    // The correction comes after tick 1 and before tick 2.
    let order: Vec<(u64, bool)> =
        all.iter().map(|t| (t["tick"].as_u64().unwrap(), t["correction"].as_bool().unwrap())).collect();
    assert_eq!(order, vec![(1, false), (1, true), (2, false)]);
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.corrections, 1);
}

#[test]
fn skew_beyond_the_bound_is_counted_and_shown() {
    let mut spec = ticker(LatePolicy::Drop);
    spec.max_skew_ms = 300;
    let (mut h, _consumer, [a, b, _]) = setup(spec);
    h.call_ok(a, event("trades.btc", 1_000));
    h.call_ok(b, event("trades.btc", 1_200));
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.skew_violations, 0);
    h.call_ok(a, event("trades.btc", 1_600));
    h.call_ok(a, event("trades.btc", 1_700));
    let view = h.engine.ticker_status("", "bars").unwrap();
    // Counted once when the spread went over, not for every event while it stays over.
    assert_eq!(view.stats.skew_violations, 1);
    assert_eq!(view.stats.skew_ms, 500);
    assert_eq!(view.sources.iter().find(|s| s.publisher == "b").unwrap().lag_ms, 500);
    // b catches up, then falls behind again: a second violation.
    h.call_ok(b, event("trades.btc", 1_700));
    h.call_ok(a, event("trades.btc", 2_100));
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.skew_violations, 2);
}

#[test]
fn event_times_outside_the_bounds_are_refused_or_flagged() {
    let (mut h, consumer, [a, _, _]) = setup(ticker(LatePolicy::Drop));
    h.engine.set_clock_origin(1_000_000_000);
    // The server's clock reads 1_000_010_000 ms; 60 s ahead is the limit.
    let e = h.call_err(a, event("trades.btc", 1_000_010_000 + 60_001));
    assert_eq!(e.reason(), Reason::EventTimeOutOfRange);
    let e = h.call_err(a, event("trades.btc", 5));
    assert!(matches!(e, CoreError::EventTimeOutOfRange { event_time: 5, .. }), "{e:?}");
    h.call_ok(a, event("trades.btc", 1_000_010_000 + 60_000));

    let mut config = Config::default();
    config.streams.event_time_policy = EventTimePolicy::Flag;
    config.streams.tickers.push(ticker(LatePolicy::Drop));
    let mut h = Harness::new(config);
    let consumer2 = h.join("consumer", "analytics", &["trades.>"]);
    let a = h.join("a", "feed", &[]);
    h.call_ok(a, event("trades.btc", 99_999_999));
    // Routed as an ordinary message, not taken by the controller (counted).
    assert_eq!(h.deliveries(consumer2).len(), 1);
    let stats = h.engine.ticker_status("", "bars").unwrap().stats;
    assert_eq!((stats.events, stats.refused), (0, 1));
    let _ = consumer;
}

#[test]
fn controllers_and_buffers_are_created_listed_and_removed_with_precise_errors() {
    let (mut h, _, _) = setup(ticker(LatePolicy::Drop));
    let e = h.admin_err(AdminAction::CreateTicker(ticker(LatePolicy::Drop)));
    assert_eq!(e.reason(), Reason::StreamExists);
    let mut bad = ticker(LatePolicy::Drop);
    bad.id = "other".into();
    bad.output = "trades.out".into();
    let e = h.admin_err(AdminAction::CreateTicker(bad));
    assert_eq!(e.reason(), Reason::InvalidArgument);
    assert!(e.to_string().contains("own inputs"), "{e}");
    let e = h.admin_err(AdminAction::RemoveStream {
        kind: StreamKind::Buffer,
        namespace: String::new(),
        id: "bars".into(),
    });
    assert_eq!(e.reason(), Reason::UnknownStream);
    assert_eq!(h.engine.list_tickers("").unwrap().len(), 1);
    h.admin_done(AdminAction::RemoveStream { kind: StreamKind::Ticker, namespace: String::new(), id: "bars".into() });
    assert!(h.engine.list_tickers("").unwrap().is_empty());
    assert_eq!(h.engine.ticker_status("", "bars").unwrap_err().reason(), Reason::UnknownStream);
    // The controller limit.
    let mut config = Config::default();
    config.streams.max_tickers = 1;
    let mut h = Harness::new(config);
    h.admin_done(AdminAction::CreateTicker(ticker(LatePolicy::Drop)));
    let mut second = ticker(LatePolicy::Drop);
    second.id = "second".into();
    assert_eq!(h.admin_err(AdminAction::CreateTicker(second)).reason(), Reason::Limit);
    // Every action is audited.
    let audited: Vec<String> = h.engine.control().audit().entries().map(|e| e.command.to_string()).collect();
    assert!(audited.iter().filter(|c| *c == "create_ticker").count() == 2, "{audited:?}");
}

// -------------------------------------------------------------------------------------------------
// Latency buffers

fn buffer(estimator: Estimator) -> BufferSpec {
    BufferSpec {
        namespace: String::new(),
        id: "arm-x".into(),
        topic: "telemetry.arm".into(),
        pointer: "/pose/x".into(),
        cadence_ms: 100,
        grace_ms: 0,
        estimator,
        output: "derived.arm.x".into(),
        max_provisional: 5,
    }
}

fn sample(t: u64, x: f64) -> Request {
    Request::PublishEvent {
        topic: "telemetry.arm".into(),
        payload: Bytes::from(format!("{{\"pose\":{{\"x\":{x}}}}}")),
        content_type: "application/json".into(),
        event_time_ms: t,
    }
}

/// A sine of period 2 s and amplitude 1, sampled every 100 ms (event time); each sample is
/// published after a delay of 0 to 180 ms (a fixed pseudo-random jitter), so about half of them are
/// overdue when they come. Returns the harness and the two consumers.
fn jittered_sine(estimator: Estimator) -> (Harness, ConnId, ConnId) {
    let mut h = Harness::new(Config::default());
    let definitive = h.join("strict", "controller", &["derived.arm.x.definitive"]);
    let both = h.join("eager", "controller", &["derived.arm.x.*"]);
    let robot = h.join("robot", "arm", &[]);
    h.admin_done(AdminAction::CreateBuffer(buffer(estimator)));
    let signal = |t: u64| (2.0 * std::f64::consts::PI * t as f64 / 2_000.0).sin();
    let mut seed = 7u64;
    let start = 1_000;
    let mut arrivals: Vec<(u64, u64)> = (0..60)
        .map(|i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let t = start + i * 100;
            (t + (seed >> 33) % 181, t)
        })
        .collect();
    // Samples are sent in arrival order; one that would overtake its predecessor waits for it
    // (a stream delivers in order).
    for i in 1..arrivals.len() {
        arrivals[i].0 = arrivals[i].0.max(arrivals[i - 1].0);
    }
    for (arrive, t) in arrivals {
        h.advance_heartbeating(arrive, &[definitive, both, robot]);
        h.call_ok(robot, sample(t, signal(t)));
        ack(&mut h, definitive);
        ack(&mut h, both);
    }
    (h, definitive, both)
}

#[test]
fn a_jittered_sine_is_interpolated_within_the_stated_error() {
    // Stated bounds (amplitude 1, period 2 s, cadence 100 ms, delays up to 180 ms, so at most two
    // provisional values in a row): hold-last errs by at most the largest change in 200 ms
    // (≈ 0.62); linear extrapolation by at most f''·2Δ·3Δ/2 ≈ 0.3 two cadences ahead, and like
    // hold-last (≤ 0.314 one cadence ahead) before it has two samples; constant velocity (a
    // smoothed slope, lagging the true one) within 0.45.
    for (estimator, bound) in
        [(Estimator::HoldLast, 0.62), (Estimator::Linear, 0.32), (Estimator::ConstantVelocity, 0.45)]
    {
        let (h, definitive, both) = jittered_sine(estimator);
        let stats = h.engine.buffer_status("", "arm-x").unwrap().stats;
        assert_eq!(stats.samples, 60, "{estimator:?}");
        assert!(stats.provisional > 5, "{estimator:?}: the jitter makes samples overdue ({stats:?})");
        assert_eq!(stats.settled, stats.provisional - stats.outstanding);
        assert!(stats.max_abs_error <= bound, "{estimator:?}: max error {} > {bound}", stats.max_abs_error);
        assert!(stats.mean_abs_error <= stats.max_abs_error);
        let share = stats.provisional as f64 / (stats.provisional + 60) as f64;
        assert!((stats.provisional_share - share).abs() < 1e-9);
        // The strict consumer sees every definitive sample and nothing provisional.
        let strict = received(&h, definitive, "derived.arm.x.definitive");
        assert_eq!(strict.len(), 60);
        assert_eq!(h.deliveries(definitive).len(), 60);
        // The eager one also sees each provisional value, marked so, with its age; each is settled
        // in a later definitive message with its error.
        let provisional = received(&h, both, "derived.arm.x.provisional");
        assert_eq!(provisional.len() as u64, stats.provisional);
        assert!(provisional.iter().all(|p| p["provisional"] == true && p["age_ms"].as_u64().unwrap() >= 100));
        let replaced: usize = strict.iter().map(|d| d["replaced"].as_array().unwrap().len()).sum();
        assert_eq!(replaced as u64, stats.settled);
        let max_reported = strict
            .iter()
            .flat_map(|d| d["replaced"].as_array().unwrap().iter().map(|r| r["error"].as_f64().unwrap()))
            .fold(0.0, f64::max);
        assert_eq!(max_reported, stats.max_abs_error);
    }
    // Linear extrapolation follows a smooth signal more closely than holding the last value.
    let hold = jittered_sine(Estimator::HoldLast).0.engine.buffer_status("", "arm-x").unwrap().stats;
    let linear = jittered_sine(Estimator::Linear).0.engine.buffer_status("", "arm-x").unwrap().stats;
    assert!(linear.mean_abs_error < hold.mean_abs_error, "{linear:?} vs {hold:?}");
}

#[test]
fn a_buffer_counts_samples_without_the_field() {
    let mut h = Harness::new(Config::default());
    let robot = h.join("robot", "arm", &[]);
    h.admin_done(AdminAction::CreateBuffer(buffer(Estimator::Linear)));
    h.call_ok(robot, harness::publish("telemetry.arm", "{\"pose\":{}}"));
    h.call_ok(robot, harness::publish("telemetry.arm", "not json"));
    h.call_ok(robot, harness::publish("telemetry.arm", "{\"pose\":{\"x\":1.5}}"));
    let stats = h.engine.buffer_status("", "arm-x").unwrap().stats;
    assert_eq!((stats.invalid, stats.samples, stats.last_value), (2, 1, Some(1.5)));
    assert_eq!(h.engine.list_buffers("").unwrap().len(), 1);
    let e = h.admin_err(AdminAction::CreateBuffer(buffer(Estimator::Linear)));
    assert_eq!(e.reason(), Reason::StreamExists);
}
