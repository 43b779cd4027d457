//! End-to-end: tick rounds against a real `lockstep serve` on loopback.
//!
//! * A server-driven series asks every strategy on cadence; the answers are merged into a context
//!   key and the result is published; a hung strategy is named as missed at each round's timeout,
//!   and the next round opens without waiting for it.
//! * A client-driven round closes as soon as everyone answered; bad answers are refused with
//!   their reasons and change nothing.
//! * Round numbering goes on after a SIGKILL; `lockstep rounds list|show` show the series.

mod support;

use std::time::Duration;

use lockstep_client::{Reason, RoundParticipants, RoundSeriesSpec};
use serde_json::{json, Value};
use support::{free_listen_addr, opts, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

/// The next merged result published on the series' topic.
async fn next_result(deliveries: &mut lockstep_client::Deliveries) -> Value {
    let d = tokio::time::timeout(T, deliveries.recv()).await.expect("a result in time").expect("session open");
    serde_json::from_slice(&d.payload).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_driven_round_merges_answers_and_names_the_hung_agent() {
    let server = Server::start(&[]);
    let client = server.client().await.with_namespace("desk");
    let monitor = client.register(opts("monitor", "monitor").interests(["ticks.>"])).await.unwrap();
    let mut results = monitor.deliveries().unwrap();
    let mut answering = Vec::new();
    for id in ["alpha", "beta"] {
        let agent = client.register(opts(id, "strategy")).await.unwrap();
        let mut inputs = agent.rounds().expect("taken once");
        assert!(agent.rounds().is_none());
        answering.push(tokio::spawn(async move {
            while let Some(input) = inputs.next().await {
                let out = json!({ (input.series.clone()): null, "signals": { agent.id(): input.round } });
                input.answer(&out).await.unwrap();
            }
        }));
    }
    // Takes its inputs and never answers.
    let hung = client.register(opts("hung", "strategy")).await.unwrap();
    let mut hung_inputs = hung.rounds().unwrap();

    let timeout_ms = 300;
    let mut spec =
        RoundSeriesSpec::new("tick", RoundParticipants::Role("strategy".into()), timeout_ms, "strategies.merged");
    spec.topic = "ticks.strategies".into();
    spec.cadence_ms = 600;
    spec.input = Some(json!({"market": "btc"}));
    client.rounds().create(&spec).await.unwrap();
    for k in 1..=2u64 {
        let input = tokio::time::timeout(T, hung_inputs.next()).await.unwrap().unwrap();
        assert_eq!((input.round, input.input.clone()), (k, json!({"market": "btc"})));
        assert!(input.deadline_ms > 0);
        let r = next_result(&mut results).await;
        assert_eq!(r["round"], json!(k));
        assert_eq!(r["closing"], json!("timeout"));
        assert_eq!(r["answered"], json!(["alpha", "beta"]));
        assert_eq!(r["missed"], json!([{"agent": "hung", "why": "timeout"}]));
        assert_eq!(r["value"]["signals"], json!({"alpha": k, "beta": k}));
        let waited = r["closed_at_ms"].as_u64().unwrap() - r["opened_at_ms"].as_u64().unwrap();
        assert!(waited >= timeout_ms, "closed at its timeout, counted from its opening: {waited} ms");
    }
    let entry = client.context().get("strategies.merged").await.unwrap();
    assert_eq!(entry.value["signals"]["alpha"], json!(2));
    assert_eq!(entry.writer, "round:tick");
    // A late answer to a closed round is refused with the round's state.
    let late = hung.answer_round("tick", 1, &json!({"x": 1})).await.unwrap_err();
    assert_eq!(late.reason(), Some(Reason::RoundNotOpen));
    let shown = client.rounds().round("tick", 1).await.unwrap();
    assert_eq!(shown.missed.len(), 1);
    assert_eq!(shown.answered.iter().map(|a| a.agent.as_str()).collect::<Vec<_>>(), ["alpha", "beta"]);
    client.rounds().remove("tick").await.unwrap();
    for task in answering {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_driven_round_closes_when_all_answered_and_bad_answers_change_nothing() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let a = client.register(opts("a", "voter")).await.unwrap();
    let b = client.register(opts("b", "voter")).await.unwrap();
    let outsider = client.register(opts("outsider", "x")).await.unwrap();
    let mut a_in = a.rounds().unwrap();
    let mut b_in = b.rounds().unwrap();
    let rounds = client.rounds();
    let mut spec =
        RoundSeriesSpec::new("poll", RoundParticipants::Agents(vec!["a".into(), "b".into()]), 60_000, "poll.result");
    spec.merge_order = "answer_order".into();
    rounds.create(&spec).await.unwrap();
    // The same spec again is a no-op; another spec under the name is refused.
    rounds.create(&spec).await.unwrap();
    let mut other = spec.clone();
    other.timeout_ms = 5;
    assert_eq!(rounds.create(&other).await.unwrap_err().reason(), Some(Reason::RoundSeriesExists));

    let opened = rounds.open("poll", &json!({"q": "go?"}), 1).await.unwrap();
    assert_eq!(opened.round, 1);
    assert_eq!(opened.participants, ["a", "b"]);
    assert_eq!(rounds.open("poll", &json!({}), 0).await.unwrap_err().reason(), Some(Reason::RoundInProgress));
    let ia = tokio::time::timeout(T, a_in.next()).await.unwrap().unwrap();
    let ib = tokio::time::timeout(T, b_in.next()).await.unwrap().unwrap();
    assert_eq!(ia.input, json!({"q": "go?"}));
    let refused = [
        (outsider.answer_round("poll", 1, &json!({})).await, Reason::NotARoundParticipant),
        (a.answer_round("nope", 1, &json!({})).await, Reason::UnknownRoundSeries),
        (a.answer_round("poll", 1, &json!("text")).await, Reason::InvalidArgument),
        (a.answer_round("poll", 1, &json!({"big": "x".repeat(70_000)})).await, Reason::InvalidArgument),
        (a.answer_round("poll", 2, &json!({})).await, Reason::RoundNotOpen),
    ];
    for (result, reason) in refused {
        assert_eq!(result.unwrap_err().reason(), Some(reason));
    }
    ib.answer(&json!({"vote": "b"})).await.unwrap();
    let open = rounds.round("poll", 1).await.unwrap();
    assert!(open.open);
    assert_eq!(open.waiting, ["a"]);
    ia.answer(&json!({"vote": "a"})).await.unwrap();
    assert_eq!(ia.answer(&json!({"vote": "again"})).await.unwrap_err().reason(), Some(Reason::RoundNotOpen));
    let closed = rounds.round("poll", 1).await.unwrap();
    assert!(!closed.open);
    assert_eq!(closed.closing, "complete");
    // Answer order: a answered last, so its vote wins.
    assert_eq!(client.context().get("poll.result").await.unwrap().value, json!({"vote": "a"}));
    assert_eq!(closed.context_version, client.context().get("poll.result").await.unwrap().version);
    // A bad spec is refused whole.
    let mut bad = RoundSeriesSpec::new("bad name", RoundParticipants::Role("voter".into()), 10, "k");
    assert_eq!(rounds.create(&bad).await.unwrap_err().reason(), Some(Reason::InvalidArgument));
    bad.name = "ok".into();
    bad.cadence_ms = 5;
    assert_eq!(rounds.create(&bad).await.unwrap_err().reason(), Some(Reason::InvalidArgument));
    assert_eq!(rounds.list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_goes_on_after_a_sigkill_and_the_cli_lists_and_shows_rounds() {
    let dir = ScratchDir::new("rounds");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let solo = client.register(opts("solo", "r").reconnect_for(None)).await.unwrap();
    let spec = RoundSeriesSpec::new("n", RoundParticipants::Agents(vec!["solo".into()]), 60_000, "n.merged");
    client.rounds().create(&spec).await.unwrap();
    let mut inputs = solo.rounds().unwrap();
    for k in 1..=2u64 {
        assert_eq!(client.rounds().open("n", &json!({"k": k}), k).await.unwrap().round, k);
        let input = tokio::time::timeout(T, inputs.next()).await.unwrap().unwrap();
        input.answer(&json!({"k": k})).await.unwrap();
    }
    // Round 3 is open when the server dies: its number is used up.
    client.rounds().open("n", &json!({}), 3).await.unwrap();
    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let series = client.rounds().series("n").await.unwrap();
    assert_eq!(series.last_round, 3);
    assert!(series.open_round.is_none());
    assert_eq!(series.retained.iter().map(|r| r.round).collect::<Vec<_>>(), [1, 2]);
    // "solo" is back as a live session awaiting its resumption: it is asked.
    assert_eq!(client.rounds().open("n", &json!({}), 0).await.unwrap().round, 4);

    let (ok, out, err) = server.cli_async(&["rounds", "list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["name"], json!("n"));
    assert_eq!(listed[0]["last_round"], json!(4));
    let (ok, out, err) = server.cli_async(&["rounds", "show", "n", "--json"]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["rounds"].as_array().unwrap().len(), 3, "1, 2 retained and 4 open: {shown}");
    let (ok, out, _) = server.cli_async(&["rounds", "show", "n", "--round", "2"]).await;
    assert!(ok);
    assert!(out.contains("complete") && out.contains("solo"), "{out}");
    let (ok, _, err) = server.cli_async(&["rounds", "show", "missing"]).await;
    assert!(!ok && !err.is_empty(), "an unknown series is an error");
}
