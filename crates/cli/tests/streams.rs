//! End-to-end: event-time streams against a real `lockstep serve` on loopback.
//!
//! * A tick controller created through the `Streams` service (with the admin token) takes events
//!   published out of order by three agents with their event times, and a consumer receives the
//!   ticks in event-time order; a late event comes as a correction; an idle source stops holding
//!   the watermark back; counters and sources are read back; bad input is refused with its reason.
//! * A latency buffer stands in for an overdue sample with provisional values (for the consumer
//!   that asked for them) and settles them with their error when the sample comes.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockstep_client::{proto as v1, Agent, Deliveries, Reason, StreamKind};
use serde_json::{json, Value};
use support::{free_listen_addr, opts, ScratchDir, Server};

/// The longest wait for anything, on a busy machine.
const T: Duration = Duration::from_secs(20);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The next delivery on `topic` (others skipped), as JSON.
async fn next_on(d: &mut Deliveries, topic: &str) -> Value {
    loop {
        let m = tokio::time::timeout(T, d.recv()).await.expect("a delivery in time").expect("the stream is open");
        if m.topic == topic {
            return serde_json::from_slice(&m.payload).expect("JSON");
        }
    }
}

fn tick_events(tick: &Value) -> Vec<(String, u64)> {
    tick["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["publisher"].as_str().unwrap().to_owned(), e["event_time_ms"].as_u64().unwrap()))
        .collect()
}

async fn event(agent: &Agent, t: u64) {
    agent.publish_at_confirmed("trades.btc", json!({"px": t % 1000}).to_string(), t).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_in_event_time_order_from_three_sources_with_a_correction_and_an_idle_source() {
    let server = Server::start(&["--admin-token", "s3cret"]);
    let client = server.client().await;
    let consumer = client.register(opts("consumer", "analytics").interests(["ticks.>"])).await.unwrap();
    let mut ticks = consumer.deliveries().unwrap();
    let [a, b, c] = [
        client.register(opts("a", "feed")).await.unwrap(),
        client.register(opts("b", "feed")).await.unwrap(),
        client.register(opts("c", "feed")).await.unwrap(),
    ];
    // Without the token: refused, nothing created.
    let spec = v1::TickerSpec {
        id: "bars".into(),
        inputs: vec!["trades.>".into()],
        output: "ticks.bars".into(),
        period_ms: 100,
        lateness_ms: 250,
        idle_timeout_ms: 2_000,
        late_policy: "correction".into(),
        min_sources: 3,
        ..Default::default()
    };
    let open = client.streams(None, None).unwrap();
    let err = open.create_ticker(spec.clone()).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AdminTokenMissing));
    assert!(open.tickers().await.unwrap().is_empty());
    let streams = client.streams(Some("s3cret"), Some("ops")).unwrap();
    assert_eq!(streams.create_ticker(spec.clone()).await.unwrap(), "created ticker 'bars'");

    // Event times a few seconds back, on a tick boundary.
    let base = (unix_ms() - 5_000) / 1_000 * 1_000;
    let k0 = base / 100;
    for (agent, offset) in [(&a, 130), (&b, 20), (&c, 250), (&a, 10), (&b, 180), (&c, 40)] {
        event(agent, base + offset).await;
    }
    // Each source's own disorder is within the lateness (250 ms). Every source moves to 550: the
    // watermark reaches 300, and ticks k0, k0+1 and k0+2 go, in order, their events sorted.
    for agent in [&a, &b, &c] {
        event(agent, base + 550).await;
    }
    let t0 = next_on(&mut ticks, "ticks.bars").await;
    let t1 = next_on(&mut ticks, "ticks.bars").await;
    let t2 = next_on(&mut ticks, "ticks.bars").await;
    assert_eq!(t0["tick"], k0);
    assert_eq!(tick_events(&t0), [("a".to_owned(), base + 10), ("b".into(), base + 20), ("c".into(), base + 40)]);
    assert_eq!(t1["tick"], k0 + 1);
    assert_eq!(tick_events(&t1), [("a".to_owned(), base + 130), ("b".into(), base + 180)]);
    assert_eq!(t2["tick"], k0 + 2);
    assert_eq!(tick_events(&t2), [("c".to_owned(), base + 250)]);
    assert_eq!(t0["start_ms"], base);

    // A late event for tick k0: a correction naming it.
    event(&a, base + 50).await;
    let fix = next_on(&mut ticks, "ticks.bars").await;
    assert_eq!((fix["tick"].as_u64(), fix["correction"].as_bool()), (Some(k0), Some(true)));
    assert_eq!(tick_events(&fix), [("a".to_owned(), base + 50)]);

    // b and c fall silent; a goes on. Tick k0+5 waits for them until they are idle (2 s of
    // server time after their last event), then goes.
    event(&a, base + 580).await;
    event(&a, base + 900).await;
    let t3 = next_on(&mut ticks, "ticks.bars").await;
    assert_eq!(t3["tick"], k0 + 5);
    let expected =
        [("a".to_owned(), base + 550), ("b".into(), base + 550), ("c".into(), base + 550), ("a".into(), base + 580)];
    assert_eq!(tick_events(&t3), expected);
    let info = streams.ticker("bars").await.unwrap();
    let stats = info.stats.unwrap();
    assert_eq!((stats.events, stats.corrections), (12, 1));
    // a fell silent a few milliseconds after b and c: it may be idle too by now, and then nothing
    // holds back the tick of its last event.
    assert!((4..=5).contains(&stats.ticks_emitted), "{stats:?}");
    assert!(stats.idle_reports >= 2, "{stats:?}");
    let idle: Vec<&str> = info.sources.iter().filter(|s| s.idle).map(|s| s.publisher.as_str()).collect();
    assert!(idle.contains(&"b") && idle.contains(&"c"), "{:?}", info.sources);

    // Bad input: precise reasons, nothing applied.
    assert_eq!(streams.create_ticker(spec.clone()).await.unwrap_err().reason(), Some(Reason::StreamExists));
    let bad = v1::TickerSpec { id: "other".into(), late_policy: "later".into(), ..spec.clone() };
    assert_eq!(streams.create_ticker(bad).await.unwrap_err().reason(), Some(Reason::InvalidArgument));
    let looped = v1::TickerSpec { id: "other".into(), output: "trades.out".into(), ..spec.clone() };
    assert_eq!(streams.create_ticker(looped).await.unwrap_err().reason(), Some(Reason::InvalidArgument));
    assert_eq!(streams.ticker("nope").await.unwrap_err().reason(), Some(Reason::UnknownStream));
    assert_eq!(streams.tickers().await.unwrap().len(), 1);
    let err = a.publish_at_confirmed("trades.btc", "{}", unix_ms() + 3_600_000).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::EventTimeOutOfRange));
    assert_eq!(streams.ticker("bars").await.unwrap().stats.unwrap().events, 12);

    assert_eq!(streams.remove(StreamKind::Ticker, "bars").await.unwrap(), "removed ticker 'bars'");
    assert_eq!(streams.remove(StreamKind::Ticker, "bars").await.unwrap_err().reason(), Some(Reason::UnknownStream));
    assert!(streams.tickers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_buffer_fills_an_overdue_sample_and_settles_it() {
    // A controller declared in the configuration file exists from the start.
    let dir = ScratchDir::new("streams-config");
    let config = dir.join("lockstep.toml");
    let declared =
        "[[streams.tickers]]\nid = \"declared\"\ninputs = [\"feed.>\"]\noutput = \"bars\"\nperiod_ms = 1000\n";
    std::fs::write(&config, declared).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let (ok, out, err) = server.cli_async(&["streams", "tickers", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], "declared");
    assert_eq!(listed[0]["idle_timeout_ms"], 5_000);

    let client = server.client().await;
    let strict = client.register(opts("strict", "controller").interests(["arm.x.definitive"])).await.unwrap();
    let eager = client.register(opts("eager", "controller").interests(["arm.x.*"])).await.unwrap();
    let robot = client.register(opts("robot", "arm")).await.unwrap();
    let (mut strict_d, mut eager_d) = (strict.deliveries().unwrap(), eager.deliveries().unwrap());
    let streams = client.streams(None, None).unwrap();
    let create = [
        "streams",
        "create-buffer",
        "arm-x",
        "--topic",
        "telemetry.arm",
        "--pointer",
        "/pose/x",
        "--cadence-ms",
        "100",
        "--grace-ms",
        "50",
        "--estimator",
        "linear",
        "--output",
        "arm.x",
        "--max-provisional",
        "3",
    ];
    let (ok, out, err) = server.cli_async(&create).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "created buffer 'arm-x'");
    let (ok, _, err) = server.cli_async(&create).await;
    assert!(!ok, "a second buffer of that id is refused");
    assert!(support::reworded() || err.contains("already exists"), "{err}");
    // A ramp: x = t / 100 (event time in ms). Two samples, then silence.
    let start = unix_ms() - 1_000;
    for t in [start, start + 100] {
        let sample = json!({"pose": {"x": (t - start) as f64 / 100.0}});
        robot.publish_at_confirmed("telemetry.arm", sample.to_string(), t).await.unwrap();
    }
    for expected in [0.0, 1.0] {
        assert_eq!(next_on(&mut strict_d, "arm.x.definitive").await["value"], expected);
        assert_eq!(next_on(&mut eager_d, "arm.x.definitive").await["value"], expected);
    }
    // The third sample is overdue: the eager consumer gets the ramp's extrapolation, marked.
    let p = next_on(&mut eager_d, "arm.x.provisional").await;
    assert_eq!(p["provisional"], true);
    assert_eq!(p["time_ms"], start + 200);
    assert_eq!(p["value"], 2.0);
    assert!(p["age_ms"].as_u64().unwrap() >= 150, "{p}");
    // It comes, off the ramp by 0.25: delivered with the error of the value it replaced.
    let sample = json!({"pose": {"x": 2.25}});
    robot.publish_at_confirmed("telemetry.arm", sample.to_string(), start + 200).await.unwrap();
    let d = next_on(&mut strict_d, "arm.x.definitive").await;
    assert_eq!(d["value"], 2.25);
    let replaced = d["replaced"].as_array().unwrap();
    assert!(!replaced.is_empty(), "{d}");
    assert_eq!(replaced[0]["time_ms"], start + 200);
    assert_eq!(replaced[0]["error"], 0.25);
    let stats = streams.buffer("arm-x").await.unwrap().stats.unwrap();
    assert_eq!(stats.samples, 3);
    assert!(stats.provisional >= 1 && stats.settled >= 1, "{stats:?}");
    assert!(stats.max_abs_error >= 0.25 && stats.provisional_share > 0.0, "{stats:?}");
    // The strict consumer never sees a provisional value: everything before the next sample
    // is definitive.
    robot.publish_at_confirmed("telemetry.arm", json!({"pose": {"x": 3.0}}).to_string(), start + 300).await.unwrap();
    loop {
        let m = tokio::time::timeout(T, strict_d.recv()).await.unwrap().unwrap();
        assert_eq!(m.topic, "arm.x.definitive");
        if serde_json::from_slice::<Value>(&m.payload).unwrap()["value"] == 3.0 {
            break;
        }
    }
    assert_eq!(streams.buffers().await.unwrap().len(), 1);
    assert_eq!(streams.buffer("nope").await.unwrap_err().reason(), Some(Reason::UnknownStream));
    let (ok, out, err) = server.cli_async(&["streams", "buffer", "arm-x", "--json"]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown[0]["stats"]["samples"], 4);
    assert_eq!(shown[0]["estimator"], "linear");
    let (ok, _, _) = server.cli_async(&["streams", "remove", "buffer", "arm-x"]).await;
    assert!(ok);
    assert!(streams.buffers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_made_at_run_time_survives_a_crash_and_its_numbering_goes_on() {
    let dir = ScratchDir::new("streams-crash");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let spec = v1::TickerSpec {
        id: "bars".into(),
        inputs: vec!["trades.>".into()],
        output: "ticks.bars".into(),
        period_ms: 100,
        idle_timeout_ms: 60_000,
        ..Default::default()
    };
    client.streams(None, None).unwrap().create_ticker(spec.clone()).await.unwrap();
    let consumer = client.register(opts("consumer", "analytics").interests(["ticks.>"])).await.unwrap();
    let mut ticks = consumer.deliveries().unwrap();
    let a = client.register(opts("a", "feed")).await.unwrap();
    let base = (unix_ms() - 5_000) / 1_000 * 1_000;
    event(&a, base + 150).await;
    event(&a, base + 250).await;
    assert_eq!(next_on(&mut ticks, "ticks.bars").await["tick"], base / 100 + 1);
    // The tick was delivered, so where the numbering stands was committed before it: a SIGKILL
    // loses nothing of it.
    server.kill();

    let server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let streams = client.streams(None, None).unwrap();
    let info = streams.ticker("bars").await.unwrap();
    assert_eq!(info.spec.as_ref().unwrap().inputs, spec.inputs);
    assert_eq!(info.stats.unwrap().next_tick, base / 100 + 2);
    let consumer = client.register(opts("consumer2", "analytics").interests(["ticks.>"])).await.unwrap();
    let mut ticks = consumer.deliveries().unwrap();
    let a = client.register(opts("a2", "feed")).await.unwrap();
    // An event of the tick emitted before the crash is late (dropped): that tick is not emitted
    // again; the next one is.
    event(&a, base + 120).await;
    event(&a, base + 260).await;
    event(&a, base + 330).await;
    let tick = next_on(&mut ticks, "ticks.bars").await;
    assert_eq!(tick["tick"], base / 100 + 2);
    assert_eq!(tick_events(&tick), [("a2".to_owned(), base + 260)]);
    assert_eq!(streams.ticker("bars").await.unwrap().stats.unwrap().late_dropped, 1);
}

#[test]
fn a_bad_definition_in_the_configuration_file_is_refused_at_start_naming_it() {
    let dir = ScratchDir::new("streams-bad-config");
    let config = dir.join("lockstep.toml");
    let text = "[[streams.tickers]]\nid = \"loop\"\ninputs = [\">\"]\noutput = \"ticks\"\nperiod_ms = 100\n";
    std::fs::write(&config, text).unwrap();
    let (refused, err) = support::serve_fails(&["--config", config.to_str().unwrap()]);
    assert!(refused, "{err}");
    assert!(err.contains("ticker 'loop'") && err.contains("own inputs"), "{err}");
}
