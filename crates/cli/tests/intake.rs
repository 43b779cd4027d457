//! End-to-end: the intake (validation and categorisation before routing) against a real
//! `lockstep serve` on loopback, its rule set from the configuration file (the example of
//! "Intake" in docs/PROTOCOL.md).
//!
//! * A record failing its topic's schema is refused to its publisher with the schema errors (path
//!   and reason), confirmed or not; nothing is routed but its dead-letter copy; refusals are
//!   counted per topic and per publisher.
//! * Records published on the intake topic are categorised by each predicate kind (equals,
//!   exists, one-of, numeric range), a target taking a pointer's value, with the server's envelope
//!   (sequence, time, the round open in the route's series, intake topic and rule); a record no
//!   rule matches goes to the unmatched topic and is counted.
//! * The rule set is replaced at run time through the `Intake` service: versioned, audited, the
//!   admin token needed; an invalid set is refused naming the place and the previous one stays;
//!   the replaced set survives a restart. An invalid set in the file stops the server starting.

mod support;

use std::time::Duration;

use lockstep_client::{Deliveries, Delivery, Error, Reason, RoundParticipants, RoundSeriesSpec};
use serde_json::{json, Value};
use support::{eventually, free_listen_addr, opts, reworded, serve_fails, ScratchDir, Server};

/// The longest wait for anything, on a busy machine.
const T: Duration = Duration::from_secs(20);

const PROTOCOL: &str = include_str!("../../../docs/PROTOCOL.md");

/// The configuration example of "Intake" in docs/PROTOCOL.md: the tests run the documented rules.
fn config_example() -> String {
    let section = &PROTOCOL[PROTOCOL.find("## Intake").expect("the Intake section")..];
    let block = &section[section.find("```toml").expect("a TOML example") + "```toml".len()..];
    let block = &block[..block.find("```").expect("the example's end")];
    block.lines().map(|l| l.trim_start()).collect::<Vec<_>>().join("\n")
}

fn config_file(dir: &ScratchDir, text: &str) -> String {
    let path = dir.join("lockstep.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn next(d: &mut Deliveries) -> Delivery {
    tokio::time::timeout(T, d.recv()).await.expect("a delivery in time").expect("the stream is open")
}

fn json_of(d: &Delivery) -> Value {
    serde_json::from_slice(&d.payload).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_validated_then_categorised_with_the_servers_envelope() {
    let dir = ScratchDir::new("intake-e2e");
    let config = config_file(&dir, &config_example());
    let server = Server::start(&["--config", &config]);
    let client = server.client().await;
    let sink = client
        .register(opts("sink", "analytics").interests([
            "market_data.>",
            "execution_result",
            "risk_metrics",
            "intake.>",
        ]))
        .await
        .unwrap();
    let mut got = sink.deliveries().unwrap();
    let feed = client.register(opts("feed", "feed")).await.unwrap();
    let raw = client.register(opts("raw", "feed").interests(["intake"])).await.unwrap();
    let mut raw_got = raw.deliveries().unwrap();

    // A confirmed publish failing the schema: refused with path and reason, nothing routed but the
    // dead-letter copy.
    let bad = json!({"kind": 7, "px": "high"}).to_string();
    let err = feed.publish_confirmed("intake", bad.clone()).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::SchemaViolation));
    let Error::SchemaViolation { errors, message } = &err else { panic!("{err:?}") };
    let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/kind", "/px"]);
    assert!(errors.iter().all(|e| !e.reason.is_empty()));
    assert!(reworded() || message.contains("/px"), "{message}");
    let dead = next(&mut got).await;
    assert_eq!(
        (dead.topic.as_str(), dead.publisher.as_str(), json_of(&dead)),
        ("intake.dead", "feed", json!({"kind": 7, "px": "high"}))
    );
    assert_eq!(dead.intake, None);
    // Unconfirmed: the refusal comes back among the agent's errors.
    feed.publish("intake", "not json").await.unwrap();
    let mut errors = Vec::new();
    assert!(
        eventually(T, || {
            errors.extend(feed.take_errors());
            std::future::ready(!errors.is_empty())
        })
        .await
    );
    assert_eq!(errors.iter().map(Error::reason).collect::<Vec<_>>(), [Some(Reason::SchemaViolation)]);
    assert_eq!(next(&mut got).await.topic, "intake.dead");
    let other = client.register(opts("other", "feed")).await.unwrap();
    assert_eq!(other.publish_confirmed("intake", "{}").await.unwrap_err().reason(), Some(Reason::SchemaViolation));
    assert_eq!(next(&mut got).await.topic, "intake.dead");

    // A round of series `bus` is open: categorised records carry its number.
    let rounds = client.rounds();
    rounds
        .create(&RoundSeriesSpec::new("bus", RoundParticipants::Agents(vec!["raw".into()]), 60_000, "bus.result"))
        .await
        .unwrap();
    assert_eq!(rounds.open("bus", &json!({}), 1).await.unwrap().round, 1);

    // Each predicate kind, and a target taking a pointer's value.
    let cases = [
        (json!({"kind": "tick", "symbol": "BTC", "px": 64000.5}), "market_data.btc", "intake/market"),
        (json!({"kind": "cancel"}), "execution_result", "intake/execution"),
        (json!({"kind": "var", "var": 0.25}), "risk_metrics", "intake/risk"),
        // `exists` fails and no later rule matches: unmatched.
        (json!({"kind": "tick"}), "intake.unmatched", ""),
        (json!({"kind": "var", "var": 2}), "intake.unmatched", ""),
    ];
    for (i, (record, topic, rule)) in cases.iter().enumerate() {
        feed.publish_confirmed("intake", record.to_string()).await.unwrap();
        let d = next(&mut got).await;
        assert_eq!((d.topic.as_str(), &json_of(&d), d.publisher.as_str()), (*topic, record, "feed"));
        let envelope = d.intake.expect("an envelope");
        assert_eq!(envelope.seq, i as u64 + 1);
        assert_eq!(
            (envelope.categorised_from.as_str(), envelope.rule.as_str(), envelope.tick_id),
            ("intake", *rule, 1)
        );
        assert!(envelope.time_ms > 0);
    }
    // Nothing stayed on the intake topic: its own subscriber got nothing.
    assert!(raw_got.try_recv().is_none());

    let status = client.intake(None, None).unwrap().status().await.unwrap();
    assert_eq!(status.version, 1);
    let stats = &status.stats;
    assert_eq!((stats.validated, stats.refused, stats.dead_lettered), (8, 3, 3));
    assert_eq!(stats.refused_by_topic["intake"], 3);
    assert_eq!((stats.refused_by_publisher["default/feed"], stats.refused_by_publisher["default/other"]), (2, 1));
    assert_eq!((stats.categorised, stats.unmatched), (3, 2));
    assert_eq!(stats.matched_by_rule["intake/market"], 1);
    assert_eq!(status.rules["routes"][0]["rules"][2]["name"], "risk");

    // The same counters from the command line.
    let (ok, out, err) = server.cli_async(&["intake", "stats", "--json"]).await;
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((shown["version"].as_u64(), shown["refused"].as_u64()), (Some(1), Some(3)));
    assert_eq!(shown["refused_by_publisher"]["default/feed"], 2);
    assert_eq!(shown["matched_by_rule"]["intake/execution"], 1);
    let (ok, out, _) = server.cli_async(&["intake", "stats"]).await;
    assert!(ok && out.contains("refused by topic") && out.contains("intake/risk"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_set_is_replaced_at_run_time_versioned_audited_and_kept_over_a_restart() {
    let dir = ScratchDir::new("intake-replace");
    let config = config_file(&dir, &config_example());
    let listen = free_listen_addr();
    let args = ["--config", config.as_str(), "--admin-token", "s3cret", "--synchronous", "full"];
    let mut server = Server::start_durable(&listen, dir.path(), &args);
    let client = server.client().await;
    let next_set = json!({
        "schemas": [{"topic": "intake", "schema": {"type": "object", "required": ["source"]}}],
        "routes": [{"topic": "intake", "rules": [{"name": "scan", "when": [{"pointer": "/source", "equals": "scanner"}], "target": "scanner_data"}]}]
    });
    // Without the token: refused, the set in force stays.
    let open = client.intake(None, None).unwrap();
    assert_eq!(open.replace(&next_set).await.unwrap_err().reason(), Some(Reason::AdminTokenMissing));
    let intake = client.intake(Some("s3cret"), Some("ops")).unwrap();
    assert_eq!(intake.replace(&next_set).await.unwrap(), 2);
    // An invalid set: refused naming the place of the problem; version 2 stays.
    let bad = json!({"routes": [{"topic": "intake", "rules": [{"target": "x"}, {"when": [{"pointer": "/a", "min": 5, "max": 1}], "target": "y"}]}]});
    let err = intake.replace(&bad).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::InvalidArgument));
    assert!(reworded() || err.to_string().contains("routes[0].rules[1].when[0]"), "{err}");
    let bad_schema = json!({"schemas": [{"topic": "intake", "schema": {"type": 12}}]});
    assert_eq!(intake.replace(&bad_schema).await.unwrap_err().reason(), Some(Reason::InvalidArgument));
    let status = intake.status().await.unwrap();
    assert_eq!((status.version, &status.rules), (2, &next_set));

    let audit = client.admin(Some("s3cret"), None).unwrap().audit_log(10).await.unwrap();
    let replaced: Vec<(&str, &str)> = audit
        .entries
        .iter()
        .filter(|e| e.command == "replace_intake")
        .map(|e| (e.actor.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(replaced, [("ops", "ok"), ("ops", "refused"), ("ops", "refused")]);

    // Agents of the first run come back as sessions to resume: the second run names new ones.
    let check = |client: lockstep_client::Client, run: u32| async move {
        let sink = client.register(opts(&format!("sink{run}"), "analytics").interests(["scanner_data"])).await.unwrap();
        let mut got = sink.deliveries().unwrap();
        let feed = client.register(opts(&format!("feed{run}"), "feed")).await.unwrap();
        // The old schema (`kind` required) no longer applies; the new one does.
        let err = feed.publish_confirmed("intake", json!({"kind": "tick"}).to_string()).await.unwrap_err();
        assert_eq!(err.reason(), Some(Reason::SchemaViolation));
        feed.publish_confirmed("intake", json!({"source": "scanner", "hits": 3}).to_string()).await.unwrap();
        let d = next(&mut got).await;
        assert_eq!(d.topic, "scanner_data");
        assert_eq!(d.intake.unwrap().rule, "intake/scan");
    };
    check(client, 1).await;

    // Killed and restarted on the same data: the replaced set (version 2) is in force, not the
    // file's.
    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &args);
    let client = server.client().await;
    let status = client.intake(None, None).unwrap().status().await.unwrap();
    assert_eq!((status.version, &status.rules), (2, &next_set));
    check(client, 2).await;

    // From the command line, a TOML file: the next version; without the token, refused.
    let file = dir.join("rules.toml");
    std::fs::write(&file, "[[routes]]\ntopic = 'intake'\nunmatched = 'rest'\nrules = []\n").unwrap();
    let file = file.to_str().unwrap();
    let (ok, _, _) = server.cli_async(&["intake", "replace", file]).await;
    assert!(!ok, "refused without the admin token");
    let (ok, out, err) = server.cli_async(&["intake", "replace", file, "--token", "s3cret", "--json"]).await;
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"version": 3}));
    let (ok, out, _) = server.cli_async(&["intake", "show", "--json"]).await;
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&shown["version"], &shown["rules"]["routes"][0]["unmatched"]), (&json!(3), &json!("rest")));
}

#[test]
fn an_invalid_rule_set_in_the_file_stops_the_server_naming_the_place() {
    let dir = ScratchDir::new("intake-bad-file");
    let config = config_file(
        &dir,
        "[[intake.routes]]\ntopic = 'intake'\n[[intake.routes.rules]]\ntarget = 'a'\n\
         [[intake.routes.rules]]\ntarget = 'b'\nwhen = [{ pointer = 'symbol', exists = true }]\n",
    );
    let (failed, stderr) = serve_fails(&["--in-memory", "--config", &config]);
    assert!(failed, "{stderr}");
    assert!(stderr.contains("intake.routes[0].rules[1].when[0].pointer"), "{stderr}");
}
