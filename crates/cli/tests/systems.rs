//! End-to-end: the sync monitor against a real `lockstep serve` on loopback, through the Rust
//! client, the `lockstep systems|deps|incidents` commands and an agent on the incidents topic.
//!
//! * A six-system pipeline (two sources, three transforms, a dashboard): a failed source raises
//!   the risk of everything downstream by the documented rule, its blast radius lists them in
//!   topological order, and the incident it opens is published on `systems.incidents` and listed
//!   first; a cycle is refused naming it; a recovery resolves the incident with its duration.
//! * A system nobody reports on goes stale by itself and opens a `stale` incident; a success
//!   resolves it.
//! * Operators act on incidents (ack, note, resolve) from the CLI, with the admin token, audited
//!   under their name; without the token they are refused and reporting still works.
//! * Bad input: unknown units (listing the known ones), negative measurements, unknown and
//!   retired systems, far-off event times and a flood from one reporter each get their reason.
//! * A restart keeps the systems, the dependencies, the open incidents and the events.

mod support;

use std::time::Duration;

use lockstep_client::systems::{Change, Criticality, Kind, Measure, Report, Status, SystemSpec};
use lockstep_client::{Client, Reason, SystemsClient};
use serde_json::Value;
use support::{eventually, free_listen_addr, http_get, opts, reworded, sample, ScratchDir, Server};

/// The longest wait for anything, on a busy machine.
const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "systems-admin-token";
const HOUR: u64 = 3_600_000;

fn spec(name: &str, kind: Kind, criticality: Criticality) -> SystemSpec {
    SystemSpec { name: name.into(), kind, cadence_ms: HOUR, tolerance_ms: 60_000, criticality, ..Default::default() }
}

fn report(system: &str, status: Status) -> Report {
    Report { system: system.into(), reporter: "tests".into(), status: Some(status), ..Default::default() }
}

async fn operator(client: &Client) -> SystemsClient {
    client.systems(Some(TOKEN), Some("alice")).unwrap()
}

/// src-a, src-b → clean (src-b weight 0.5), enrich; clean → report (0.5); enrich → report; report →
/// dashboard.
async fn pipeline(ops: &SystemsClient) {
    for (name, kind, crit) in [
        ("src-a", Kind::Dataset, Criticality::High),
        ("src-b", Kind::Dataset, Criticality::Medium),
        ("clean", Kind::Pipeline, Criticality::Medium),
        ("enrich", Kind::Pipeline, Criticality::Medium),
        ("report", Kind::Pipeline, Criticality::High),
        ("dashboard", Kind::Service, Criticality::Critical),
    ] {
        ops.register(&spec(name, kind, crit)).await.unwrap();
    }
    for (up, down, w) in [
        ("src-a", "clean", 1.0),
        ("src-b", "clean", 0.5),
        ("src-a", "enrich", 1.0),
        ("clean", "report", 0.5),
        ("enrich", "report", 1.0),
        ("report", "dashboard", 1.0),
    ] {
        ops.depend(up, down, w).await.unwrap();
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_source_puts_its_downstream_at_risk_and_opens_a_prioritised_incident() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let client = server.client().await;
    let ops = operator(&client).await;
    pipeline(&ops).await;
    // An agent reacting to incidents (a strategy pausing while its data is stale).
    let watcher = client.register(opts("watcher", "strategy").interests(["systems.incidents"])).await.unwrap();
    let mut incidents_topic = watcher.deliveries().unwrap();

    // A cycle is refused, naming it.
    let err = ops.depend("dashboard", "src-b", 1.0).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::DependencyCycle), "{err}");
    if !reworded() {
        assert!(err.to_string().contains("dashboard -> src-b -> clean -> report -> dashboard"), "{err}");
    }

    // src-b fails: clean inherits 0.5, report 0.25, dashboard 0.25; src-a's side is untouched.
    let ack = ops.report(&report("src-b", Status::Failed)).await.unwrap();
    assert_eq!(ack.changes.len(), 1, "{ack:?}");
    let (change, opened) = &ack.changes[0];
    assert_eq!((*change, opened.system.as_str(), opened.cause.as_str()), (Change::Opened, "src-b", "failed"));
    let risk = |systems: &[lockstep_client::SystemStatus], name: &str| {
        systems.iter().find(|s| s.spec.name == name).map(|s| s.risk).expect("listed")
    };
    let systems = ops.list(false).await.unwrap();
    assert_eq!(systems.len(), 6);
    for (name, want) in
        [("src-b", 1.0), ("clean", 0.5), ("report", 0.25), ("dashboard", 0.25), ("src-a", 0.0), ("enrich", 0.0)]
    {
        assert!((risk(&systems, name) - want).abs() < 1e-9, "{name}: {} != {want}", risk(&systems, name));
    }
    // Blast radius: topological order, with what each would inherit if src-b failed.
    let blast = ops.blast_radius("src-b").await.unwrap();
    let names: Vec<&str> = blast.iter().map(|i| i.system.as_str()).collect();
    assert_eq!(names, ["clean", "report", "dashboard"]);
    assert!((blast[2].inherited - 0.25).abs() < 1e-9);

    // The change was published for agents.
    let d = tokio::time::timeout(T, incidents_topic.recv()).await.expect("published").expect("open");
    let published: Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(
        (published["change"].as_str(), published["incident"]["system"].as_str()),
        (Some("opened"), Some("src-b"))
    );
    assert_eq!(published["incident"]["id"].as_u64(), Some(opened.id));

    // src-a fails too: its incident comes first (high criticality, and it puts the critical
    // dashboard at full risk: severity 1).
    ops.report(&report("src-a", Status::Failed)).await.unwrap();
    let open = ops.incidents(false).await.unwrap();
    let order: Vec<&str> = open.iter().map(|i| i.system.as_str()).collect();
    assert_eq!(order, ["src-a", "src-b"]);
    assert_eq!(open[0].severity, 1);
    assert!(open[0].score > open[1].score);

    // The CLI shows the same, as JSON and as a table.
    let (ok, out, err) = server.cli_async(&["incidents", "list", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Vec<u64> = json(&out).as_array().unwrap().iter().map(|i| i["id"].as_u64().unwrap()).collect();
    assert_eq!(listed, [open[0].id, open[1].id]);
    let (ok, out, err) = server.cli_async(&["systems", "show", "clean"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("upstream src-b (weight 0.5)") && out.contains("risk 100%"), "{out}");
    assert!(out.contains("report") && out.contains("dashboard"), "blast radius: {out}");
    let (ok, out, err) = server.cli_async(&["deps", "list", "--json"]).await;
    assert!(ok, "{err}");
    assert_eq!(json(&out).as_array().unwrap().len(), 6);

    // Recovery: the incident resolves by itself, with its duration; the risk falls back.
    let ack = ops.report(&report("src-b", Status::Ok)).await.unwrap();
    let (change, resolved) = &ack.changes[0];
    assert_eq!((*change, resolved.id, resolved.resolved_by.as_str()), (Change::Resolved, opened.id, "auto"));
    assert!(resolved.resolved_at.unwrap() >= resolved.opened_at);
    let detail = ops.show("clean").await.unwrap();
    assert!((detail.status.risk - 1.0).abs() < 1e-9, "src-a still failed: clean at 1.0 through weight 1");
    let all = ops.incidents(true).await.unwrap();
    assert_eq!(all.len(), 2, "src-a open, then src-b resolved");
    assert!(all[0].resolved_at.is_none() && all[1].resolved_at.is_some());
    watcher.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_nobody_reports_on_goes_stale_by_itself_and_a_success_resolves_it() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ops = client.systems(None, None).unwrap();
    let feed = SystemSpec { cadence_ms: 300, tolerance_ms: 200, ..spec("feed", Kind::Dataset, Criticality::High) };
    ops.register(&feed).await.unwrap();
    assert!(!ops.show("feed").await.unwrap().status.stale);
    assert!(
        eventually(T, || async { ops.incidents(false).await.unwrap().iter().any(|i| i.system == "feed") }).await,
        "no stale incident within {T:?}"
    );
    let stale = ops.incidents(false).await.unwrap().remove(0);
    assert_eq!(stale.cause.as_str(), "stale");
    let status = ops.show("feed").await.unwrap().status;
    assert!(status.stale && (status.own_risk - 0.8).abs() < 1e-9, "{status:?}");
    let ack = ops.report(&report("feed", Status::Ok)).await.unwrap();
    assert!(
        ack.changes.iter().any(|(c, i)| *c == Change::Resolved && i.id == stale.id),
        "the success resolves the stale incident: {ack:?}"
    );
    // The stale spell shows in the freshness-SLO attainment of both windows.
    let trends = ops.show("feed").await.unwrap().trends;
    assert_eq!((trends.hour.events, trends.day.events), (1, 1));
    let (hour, day) = (trends.hour.attainment.unwrap(), trends.day.attainment.unwrap());
    assert!(hour < 1.0 && hour > 0.0 && (hour - day).abs() < 1e-9, "{trends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_act_on_incidents_from_the_cli_with_the_admin_token_and_are_audited() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let client = server.client().await;
    // Without the token: reading and reporting work, changing the registry does not.
    let anyone = client.systems(None, None).unwrap();
    let err = anyone.register(&spec("orders", Kind::Service, Criticality::High)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let (ok, _, err) = server.cli_async(&["systems", "register", "orders", "--cadence", "1h"]).await;
    assert!(!ok && err.to_lowercase().contains("unauthenticated"), "{err}");

    let (ok, out, err) = server
        .cli_async(&[
            "systems",
            "register",
            "orders",
            "--cadence",
            "1h",
            "--tolerance",
            "5min",
            "--criticality",
            "high",
            "--meta",
            "team=core",
            "--token",
            TOKEN,
        ])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("registered"), "{out}");
    let shown = anyone.show("orders").await.unwrap().status;
    assert_eq!((shown.spec.cadence_ms, shown.spec.tolerance_ms), (HOUR, 300_000));
    assert_eq!(shown.spec.metadata.get("team").map(String::as_str), Some("core"));

    // A failed sync reported from the CLI, with units the server converts.
    let (ok, out, err) = server
        .cli_async(&[
            "systems",
            "report",
            "orders",
            "--status",
            "failed",
            "--latency",
            "1.5s",
            "--bytes",
            "2MiB",
            "--records",
            "30rows",
            "--json",
        ])
        .await;
    assert!(ok, "{err}");
    let id = json(&out)["changes"][0]["incident"]["id"].as_u64().expect("an incident opened");
    let event = anyone.show("orders").await.unwrap().events.pop().expect("kept");
    assert_eq!((event.latency_ms, event.bytes, event.records), (Some(1500.0), Some(2_097_152.0), Some(30.0)));
    let latency = anyone.show("orders").await.unwrap().trends.hour.latency_ms;
    assert!((latency.p99.unwrap() - 1500.0).abs() <= 30.0, "within 2 %: {latency:?}");
    let (ok, out, err) = server.cli_async(&["systems", "show", "orders"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("last hour: 1 events, latency p50 ") && out.contains("direction: "), "{out}");

    let id_text = id.to_string();
    let (ok, _, err) = server.cli_async(&["incidents", "ack", &id_text]).await;
    assert!(!ok, "ack without the token is refused");
    assert!(!err.is_empty());
    let (ok, out, err) = server.cli_async(&["incidents", "ack", &id_text, "--token", TOKEN, "--json"]).await;
    assert!(ok, "{err}");
    assert!(json(&out)["acked_at"].as_u64().is_some(), "{out}");
    let (ok, out, err) =
        server.cli_async(&["incidents", "note", &id_text, "failover to the replica", "--token", TOKEN, "--json"]).await;
    assert!(ok, "{err}");
    assert_eq!(json(&out)["notes"][0]["text"].as_str(), Some("failover to the replica"));
    let (ok, out, err) = server.cli_async(&["incidents", "resolve", &id_text, "--token", TOKEN, "--json"]).await;
    assert!(ok, "{err}");
    let resolved = json(&out);
    assert!(resolved["resolved_at"].as_u64().is_some(), "{out}");
    let by = resolved["resolved_by"].as_str().unwrap().to_owned();
    assert!(!by.is_empty() && by != "auto", "{out}");
    // Acting on it again: the precise reason.
    let err = operator(&client).await.ack(id).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::IncidentResolved), "{err}");
    let err = operator(&client).await.ack(id + 1000).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::UnknownIncident), "{err}");

    // The audit log names the operator for each action.
    let log = client.admin(Some(TOKEN), None).unwrap().audit_log(100).await.unwrap();
    let commands: Vec<(&str, &str)> = log.entries.iter().map(|e| (e.command.as_str(), e.actor.as_str())).collect();
    for command in ["register_system", "ack_incident", "note_incident", "resolve_incident"] {
        assert!(commands.iter().any(|(c, a)| *c == command && *a == by), "{command} by {by} in {commands:?}");
    }
    assert!(commands.iter().any(|(c, a)| *c == "incident_opened" && *a == "lockstep"), "{commands:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_reason_and_changes_nothing() {
    let dir = ScratchDir::new("systems-limits");
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, "[systems]\nmax_events_per_reporter_per_sec = 5\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap(), "--http-listen", "127.0.0.1:0"]);
    let client = server.client().await;
    let ops = client.systems(None, None).unwrap();
    ops.register(&spec("ledger", Kind::Dataset, Criticality::Low)).await.unwrap();

    let with = |f: fn(&mut Report)| {
        let mut r = report("ledger", Status::Ok);
        f(&mut r);
        r
    };
    let cases: [(Report, Reason); 5] = [
        (with(|r| r.latency = Some(Measure::new(3.0, "fortnights"))), Reason::UnknownUnit),
        (with(|r| r.drift = Some(Measure::new(-1.0, "s"))), Reason::BadMeasurement),
        (with(|r| r.system = "nobody".into()), Reason::UnknownSystem),
        (with(|r| r.at = 1), Reason::EventTimeOutOfRange),
        (with(|r| r.status = None), Reason::InvalidArgument),
    ];
    for (bad, reason) in cases {
        let err = ops.report(&bad).await.unwrap_err();
        assert_eq!(err.reason(), Some(reason), "{bad:?}: {err}");
        if reason == Reason::UnknownUnit && !reworded() {
            assert!(err.to_string().contains("ms, s, min, h"), "lists the known units: {err}");
        }
    }
    // The CLI passes the server's refusal on.
    let (ok, _, err) =
        server.cli_async(&["systems", "report", "ledger", "--status", "ok", "--bytes", "3parsecs"]).await;
    assert!(!ok, "an unknown unit is refused");
    assert!(err.contains("unknown unit 'parsecs'") || reworded(), "{err}");
    assert!(ops.show("ledger").await.unwrap().events.is_empty(), "nothing of a refused event is kept");

    // A flood from one reporter: beyond the limit, refused and counted; another reporter goes on.
    let flood = (0..12).map(|_| {
        let ops = ops.clone();
        async move { ops.report(&report("ledger", Status::Ok)).await }
    });
    let outcomes = futures::future::join_all(flood).await;
    let limited: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(!limited.is_empty(), "12 events at once from one reporter, limit 5 a second");
    assert!(limited.iter().all(|e| e.reason() == Some(Reason::EventRateLimited)), "{limited:?}");
    let other = Report { reporter: "another".into(), ..report("ledger", Status::Ok) };
    ops.report(&other).await.expect("another reporter is not limited");
    // Counted, for operators: in the server's metrics.
    let (status, _, metrics) = http_get(&server.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    let refused = sample(&metrics, "lockstep_system_events_total{outcome=\"rate_limited\"}");
    assert_eq!(refused, Some(limited.len() as f64), "{metrics}");

    // Retired: events and dependencies naming it are refused; it stays listed as retired.
    ops.register(&spec("ticks", Kind::Dataset, Criticality::Low)).await.unwrap();
    ops.retire("ticks").await.unwrap();
    let err = ops.report(&report("ticks", Status::Ok)).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::SystemRetired), "{err}");
    let err = ops.depend("ticks", "ledger", 1.0).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::SystemRetired), "{err}");
    assert!(ops.list(false).await.unwrap().iter().all(|s| s.spec.name != "ticks"));
    assert!(ops.list(true).await.unwrap().iter().any(|s| s.spec.name == "ticks" && s.retired_at.is_some()));
    // Another definition under a registered name.
    let err = ops.register(&spec("ledger", Kind::Service, Criticality::Low)).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::SystemExists), "{err}");
    let err = ops.undepend("ledger", "ticks").await.unwrap_err();
    assert!(matches!(err.reason(), Some(Reason::UnknownDependency | Reason::SystemRetired)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_systems_dependencies_open_incidents_and_events() {
    let dir = ScratchDir::new("systems-restart");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let ops = client.systems(None, None).unwrap();
    pipeline(&ops).await;
    let opened = ops.report(&report("src-b", Status::Failed)).await.unwrap().changes[0].1.clone();
    let latency = Report { latency: Some(Measure::new(2.0, "min")), ..report("src-a", Status::Ok) };
    ops.report(&latency).await.unwrap();
    let trends_before = ops.show("src-a").await.unwrap().trends;
    drop(client);
    server.kill();

    let server = Server::start_durable(&listen, dir.path(), &[]);
    let ops = server.client().await.systems(None, None).unwrap();
    assert_eq!(ops.list(false).await.unwrap().len(), 6);
    assert_eq!(ops.dependencies().await.unwrap().len(), 6);
    let open = ops.incidents(false).await.unwrap();
    assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [opened.id]);
    let clean = ops.show("clean").await.unwrap().status;
    assert!((clean.risk - 0.5).abs() < 1e-9, "risk recomputed after the restart: {clean:?}");
    let events = ops.show("src-a").await.unwrap().events;
    assert_eq!(events.last().and_then(|e| e.latency_ms), Some(120_000.0));
    let trends = ops.show("src-a").await.unwrap().trends;
    assert_eq!(
        (trends.hour.events, trends.hour.latency_ms),
        (trends_before.hour.events, trends_before.hour.latency_ms)
    );
    assert_eq!(trends.day.latency_ms, trends_before.day.latency_ms);
    // Recovery after the restart resolves the kept incident.
    let ack = ops.report(&report("src-b", Status::Ok)).await.unwrap();
    assert!(ack.changes.iter().any(|(c, i)| *c == Change::Resolved && i.id == opened.id), "{ack:?}");
}
