//! Scenario tests of the sync monitor (see `lockstep_core::systems`) through the engine, on the
//! manual clock: registry, normalised events and their refusals, freshness by itself, risk on
//! small graphs, blast radius, incidents (dedup, auto resolve, ack, notes, severity, priority),
//! their publication on `systems.incidents` and in the audit log, and tied agents' lost leases.

mod harness;

use harness::Harness;
use lockstep_core::io::SystemsCall as C;
use lockstep_core::systems::{Cause, Change, Criticality, Kind, Measure, Report, Status, SystemSpec};
use lockstep_core::{Config, Reason};
use serde_json::Value;

fn spec(name: &str, cadence_ms: u64, tolerance_ms: u64, criticality: Criticality) -> SystemSpec {
    SystemSpec {
        name: name.into(),
        kind: Kind::Dataset,
        cadence_ms,
        tolerance_ms,
        criticality,
        owner: "data-team".into(),
        ..Default::default()
    }
}

fn event(system: &str, status: Status) -> Report {
    Report { system: system.into(), reporter: "collector".into(), status: Some(status), ..Default::default() }
}

fn register(h: &mut Harness, s: SystemSpec) {
    h.systems("ops", C::Register(s)).unwrap();
}

fn report(h: &mut Harness, r: Report) -> lockstep_core::io::SystemsDone {
    h.systems("collector", C::Report(r)).unwrap()
}

fn depend(h: &mut Harness, up: &str, down: &str, weight: f64) {
    h.systems("ops", C::Depend { upstream: up.into(), downstream: down.into(), weight }).unwrap();
}

fn reason(r: Result<lockstep_core::io::SystemsDone, lockstep_core::CoreError>) -> Reason {
    r.unwrap_err().reason()
}

/// The incident changes published on `systems.incidents` to `conn`, as (change, system, cause).
fn published(h: &Harness, conn: lockstep_core::ConnId) -> Vec<(String, String, String)> {
    h.delivered_payloads(conn)
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_str(p).unwrap();
            let i = &v["incident"];
            (
                v["change"].as_str().unwrap().into(),
                i["system"].as_str().unwrap().into(),
                i["cause"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn a_system_goes_stale_by_itself_and_recovers_with_a_duration() {
    let mut h = Harness::new(Config::default());
    let watcher = h.join("watcher", "strategy", &["systems.incidents"]);
    register(&mut h, spec("prices", 1_000, 500, Criticality::High));
    // Nothing is reported: cadence + tolerance after registration it is stale, with nobody saying so.
    h.advance_heartbeating(1_499, &[watcher]);
    assert!(!h.engine.systems().get("prices").unwrap().stale);
    h.advance_heartbeating(1_500, &[watcher]);
    let s = h.engine.systems().get("prices").unwrap();
    assert!(s.stale);
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].cause, open[0].opened_at, open[0].system.as_str()), (Cause::Stale, 1_500, "prices"));
    assert!(open[0].detail.contains("cadence 1000 ms + tolerance 500 ms"), "{}", open[0].detail);
    assert_eq!(published(&h, watcher), [("opened".into(), "prices".into(), "stale".into())]);
    // A success resolves it, with its duration; the system is timed again from that success.
    h.advance_heartbeating(2_300, &[watcher]);
    let done = report(&mut h, event("prices", Status::Ok));
    assert_eq!(done.changes.len(), 1);
    let (change, resolved) = &done.changes[0];
    assert_eq!(
        (*change, resolved.resolved_at, resolved.duration(0), resolved.resolved_by.as_str()),
        (Change::Resolved, Some(2_300), 800, "auto")
    );
    assert_eq!(h.engine.systems().stale_at("prices"), Some(3_800));
    assert_eq!(published(&h, watcher).last().unwrap().0, "resolved");
    // Both changes are in the audit log.
    let audit: Vec<String> = h.engine.control().audit().entries().map(|e| e.command.clone()).collect();
    assert!(
        audit.contains(&"incident_opened".to_string()) && audit.contains(&"incident_resolved".to_string()),
        "{audit:?}"
    );
    // Stale again after another silence.
    h.advance_heartbeating(3_800, &[watcher]);
    assert!(h.engine.systems().get("prices").unwrap().stale);
}

#[test]
fn failures_are_deduplicated_into_one_incident_and_resolved_on_success() {
    let mut h = Harness::new(Config::default());
    register(&mut h, spec("orders", 60_000, 0, Criticality::Medium));
    h.now = 100;
    let first = report(&mut h, event("orders", Status::Failed));
    assert_eq!(first.changes[0].0, Change::Opened);
    for _ in 0..2 {
        h.now += 10;
        let again = report(&mut h, event("orders", Status::Failed));
        assert_eq!(again.changes[0].0, Change::Repeated);
    }
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].count, open[0].last_seen, open[0].cause), (3, 120, Cause::Failed));
    // A degraded sync is a success: the failure is over (the system is still at some risk).
    h.now = 200;
    let done = report(&mut h, event("orders", Status::Degraded));
    assert_eq!(done.changes[0].0, Change::Resolved);
    assert_eq!(done.changes[0].1.duration(0), 100);
    assert!(h.engine.systems().incidents_by_priority(&Config::default().systems).is_empty());
    assert_eq!(h.engine.systems().risk("orders"), (0.5, 0.5));
}

#[test]
fn events_are_normalised_and_bad_ones_refused_precisely() {
    let mut h = Harness::new(Config::default());
    register(&mut h, spec("lake", 60_000, 5_000, Criticality::Low));
    h.now = 10_000;
    let r = Report {
        drift: Some(Measure::new(2.0, "s")),
        latency: Some(Measure::new(0.5, "min")),
        records: Some(Measure::new(1_200.0, "rows")),
        bytes: Some(Measure::new(3.0, "MiB")),
        at: 9_000,
        ..event("lake", Status::Ok)
    };
    report(&mut h, r);
    let kept = h.engine.systems().get("lake").unwrap().events.back().unwrap().clone();
    assert_eq!(
        (kept.at, kept.drift_ms, kept.latency_ms, kept.records, kept.bytes),
        (9_000, Some(2_000.0), Some(30_000.0), Some(1_200.0), Some(3.0 * 1_048_576.0))
    );
    let e = h
        .systems("c", C::Report(Report { latency: Some(Measure::new(1.0, "jiffies")), ..event("lake", Status::Ok) }))
        .unwrap_err();
    assert_eq!(e.reason(), Reason::UnknownUnit);
    assert!(e.to_string().contains("known units: ms, s, min, h"), "{e}");
    for v in [-1.0, f64::NAN, f64::INFINITY] {
        let bad = Report { drift: Some(Measure::new(v, "ms")), ..event("lake", Status::Ok) };
        assert_eq!(reason(h.systems("c", C::Report(bad))), Reason::BadMeasurement, "{v}");
    }
    // An event time an hour and more behind, or more than a minute ahead, of the server's clock.
    h.now = 10_000_000;
    for at in [10_000_000 - 3_600_001, 10_000_000 + 60_001] {
        let e = h.systems("c", C::Report(Report { at, ..event("lake", Status::Ok) })).unwrap_err();
        assert_eq!(e.reason(), Reason::EventTimeOutOfRange, "{at}");
    }
    assert_eq!(reason(h.systems("c", C::Report(event("nowhere", Status::Ok)))), Reason::UnknownSystem);
    assert_eq!(
        reason(h.systems("c", C::Report(Report { status: None, ..event("lake", Status::Ok) }))),
        Reason::InvalidArgument
    );
    // None of the refused events was kept.
    assert_eq!(h.engine.systems().get("lake").unwrap().events.len(), 1);
}

#[test]
fn a_flooding_reporter_is_limited_and_counted() {
    let mut config = Config::default();
    config.systems.max_events_per_reporter_per_sec = 3;
    let mut h = Harness::new(config);
    register(&mut h, spec("ticks", 1_000, 0, Criticality::Low));
    h.now = 50;
    for _ in 0..3 {
        report(&mut h, event("ticks", Status::Ok));
    }
    for _ in 0..2 {
        assert_eq!(reason(h.systems("c", C::Report(event("ticks", Status::Ok)))), Reason::EventRateLimited);
    }
    // Another reporter is not held back by the first.
    report(&mut h, Report { reporter: "backup-collector".into(), ..event("ticks", Status::Ok) });
    h.now = 1_050;
    report(&mut h, event("ticks", Status::Ok));
    assert_eq!(h.engine.systems().rate_limited, 2);
    assert_eq!(h.engine.systems().get("ticks").unwrap().events.len(), 5);
}

#[test]
fn risk_propagates_by_weight_through_a_small_graph_and_blast_radius_lists_it() {
    // src-a → clean (1.0) → report (0.5); src-b → clean (0.5); clean → features (0.8)
    let mut h = Harness::new(Config::default());
    for (n, c) in [
        ("src-a", Criticality::High),
        ("src-b", Criticality::Low),
        ("clean", Criticality::Medium),
        ("report", Criticality::Critical),
        ("features", Criticality::Medium),
    ] {
        register(&mut h, spec(n, 60_000, 0, c));
    }
    depend(&mut h, "src-a", "clean", 1.0);
    depend(&mut h, "src-b", "clean", 0.5);
    depend(&mut h, "clean", "report", 0.5);
    depend(&mut h, "clean", "features", 0.8);
    // A cycle is refused, named.
    let e =
        h.systems("ops", C::Depend { upstream: "report".into(), downstream: "src-a".into(), weight: 1.0 }).unwrap_err();
    assert_eq!(e.reason(), Reason::DependencyCycle);
    assert!(e.to_string().contains("report -> src-a -> clean -> report"), "{e}");
    h.now = 10;
    report(&mut h, event("src-b", Status::Failed));
    let risk = |h: &Harness, n: &str| h.engine.systems().risk(n).1;
    assert_eq!((risk(&h, "src-b"), risk(&h, "clean"), risk(&h, "report"), risk(&h, "features")), (1.0, 0.5, 0.25, 0.4));
    assert_eq!(risk(&h, "src-a"), 0.0);
    report(&mut h, event("src-a", Status::Degraded));
    assert_eq!((risk(&h, "clean"), risk(&h, "report")), (0.5, 0.25));
    // Blast radius of src-a: what it would pass on if it failed, and the risk now.
    let blast = h.engine.systems().blast_radius("src-a").unwrap();
    let got: Vec<(&str, f64)> = blast.iter().map(|i| (i.system.as_str(), i.inherited)).collect();
    assert_eq!(got, [("clean", 1.0), ("report", 0.5), ("features", 0.8)]);
    assert_eq!(blast[1].risk, 0.25);
    // Recovery: the risk goes away downstream too.
    report(&mut h, event("src-b", Status::Ok));
    report(&mut h, event("src-a", Status::Ok));
    assert_eq!((risk(&h, "clean"), risk(&h, "report"), risk(&h, "features")), (0.0, 0.0, 0.0));
}

#[test]
fn incidents_are_listed_by_severity_from_criticality_and_downstream_at_risk() {
    let mut h = Harness::new(Config::default());
    // A low source feeding a critical dashboard outranks a high system alone.
    register(&mut h, spec("low-src", 60_000, 0, Criticality::Low));
    register(&mut h, spec("dash", 60_000, 0, Criticality::Critical));
    register(&mut h, spec("high-alone", 60_000, 0, Criticality::High));
    register(&mut h, spec("low-alone", 60_000, 0, Criticality::Low));
    depend(&mut h, "low-src", "dash", 1.0);
    h.now = 5;
    for s in ["low-alone", "high-alone", "low-src"] {
        report(&mut h, event(s, Status::Failed));
    }
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    let order: Vec<(&str, u8, u32, u32)> =
        open.iter().map(|i| (i.system.as_str(), i.severity, i.score, i.at_risk)).collect();
    assert_eq!(order, [("low-src", 1, 14, 1), ("high-alone", 2, 30, 0), ("low-alone", 4, 10, 0)]);
    // A weak edge leaves the dashboard below the at-risk threshold: the source is just low.
    h.systems("ops", C::Depend { upstream: "low-src".into(), downstream: "dash".into(), weight: 0.2 }).unwrap();
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    // Same severity and score: the older incident (low-alone, opened first) comes first.
    assert_eq!(open.last().map(|i| i.system.as_str()), Some("low-src"));
    assert_eq!(open.iter().find(|i| i.system == "low-src").unwrap().severity, 4);
    // What another source puts at risk is not this incident's: with a second, strong source
    // failed, the dashboard is at risk 1.0, but the weak source still passes on only 0.2.
    register(&mut h, spec("strong-src", 60_000, 0, Criticality::Low));
    depend(&mut h, "strong-src", "dash", 1.0);
    report(&mut h, event("strong-src", Status::Failed));
    assert_eq!(h.engine.systems().risk("dash").1, 1.0);
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    let of = |s: &str| open.iter().find(|i| i.system == s).map(|i| (i.severity, i.score, i.at_risk)).unwrap();
    assert_eq!((of("strong-src"), of("low-src")), ((1, 14, 1), (4, 10, 0)));
}

#[test]
fn operators_ack_annotate_and_resolve_and_are_audited() {
    let mut h = Harness::new(Config::default());
    let watcher = h.join("watcher", "strategy", &["systems.*"]);
    register(&mut h, spec("feed", 60_000, 0, Criticality::Medium));
    let id = report(&mut h, event("feed", Status::Failed)).changes[0].1.id;
    let acked = h.systems("alice", C::Ack { id }).unwrap().incident.unwrap();
    assert_eq!((acked.acked_by.as_str(), acked.acked_at), ("alice", Some(0)));
    let noted = h.systems("bob", C::Note { id, text: "upstream vendor outage".into() }).unwrap().incident.unwrap();
    assert_eq!(noted.notes[0].by, "bob");
    h.now = 40;
    let resolved = h.systems("alice", C::Resolve { id }).unwrap().incident.unwrap();
    assert_eq!((resolved.resolved_by.as_str(), resolved.duration(0)), ("alice", 40));
    assert_eq!(reason(h.systems("alice", C::Ack { id })), Reason::IncidentResolved);
    assert_eq!(reason(h.systems("alice", C::Ack { id: 99 })), Reason::UnknownIncident);
    let changes: Vec<String> = published(&h, watcher).into_iter().map(|(c, _, _)| c).collect();
    assert_eq!(changes, ["opened", "acknowledged", "annotated", "resolved"]);
    let audit: Vec<(String, String)> =
        h.engine.control().audit().entries().map(|e| (e.actor.clone(), e.command.clone())).collect();
    for (who, what) in
        [("alice", "ack_incident"), ("bob", "note_incident"), ("alice", "resolve_incident"), ("ops", "register_system")]
    {
        assert!(audit.contains(&(who.to_string(), what.to_string())), "{who} {what} in {audit:?}");
    }
    // The next failure opens a new incident.
    assert_eq!(report(&mut h, event("feed", Status::Failed)).changes[0].0, Change::Opened);
}

#[test]
fn the_registry_refuses_what_does_not_fit() {
    let mut h = Harness::new(Config::default());
    register(&mut h, spec("a", 1_000, 0, Criticality::Low));
    register(&mut h, spec("b", 1_000, 0, Criticality::Low));
    depend(&mut h, "a", "b", 1.0);
    assert_eq!(reason(h.systems("ops", C::Register(spec("a", 2_000, 0, Criticality::Low)))), Reason::SystemExists);
    h.systems("ops", C::Update(spec("a", 2_000, 0, Criticality::High))).unwrap();
    assert_eq!(h.engine.systems().get("a").unwrap().spec.cadence_ms, 2_000);
    assert_eq!(reason(h.systems("ops", C::Update(spec("zz", 2_000, 0, Criticality::High)))), Reason::UnknownSystem);
    h.now = 10;
    report(&mut h, event("a", Status::Failed));
    assert!(h.engine.systems().risk("b").1 > 0.0);
    // Retiring resolves its incidents, drops its edges and what it put at risk.
    let done = h.systems("ops", C::Retire { name: "a".into() }).unwrap();
    assert_eq!(done.changes[0].1.resolved_by, "retired");
    assert_eq!(h.engine.systems().risk("b").1, 0.0);
    assert_eq!(reason(h.systems("c", C::Report(event("a", Status::Ok)))), Reason::SystemRetired);
    let e = h.systems("ops", C::Depend { upstream: "a".into(), downstream: "b".into(), weight: 1.0 }).unwrap_err();
    assert_eq!(e.reason(), Reason::SystemRetired);
    assert_eq!(
        reason(h.systems("ops", C::Undepend { upstream: "a".into(), downstream: "b".into() })),
        Reason::UnknownDependency
    );
    // A retired system never goes stale.
    h.advance_to(100_000);
    assert!(h.engine.systems().incidents_by_priority(&Config::default().systems).iter().all(|i| i.system != "a"));
    // Registering it again starts anew.
    register(&mut h, spec("a", 1_000, 0, Criticality::Low));
    assert_eq!(h.engine.systems().stale_at("a"), Some(101_000));
    let mut limited = Config::default();
    limited.systems.max_dependencies = 0;
    let mut h = Harness::new(limited);
    register(&mut h, spec("a", 1_000, 0, Criticality::Low));
    register(&mut h, spec("b", 1_000, 0, Criticality::Low));
    assert_eq!(
        reason(h.systems("ops", C::Depend { upstream: "a".into(), downstream: "b".into(), weight: 1.0 })),
        Reason::Limit
    );
}

#[test]
fn an_agent_tied_to_a_system_losing_its_lease_is_a_failure_of_the_system() {
    let mut h = Harness::new(Config::default());
    h.join("loader", "etl", &[]);
    register(
        &mut h,
        SystemSpec { agents: vec!["loader".into()], ..spec("warehouse", 3_600_000, 0, Criticality::High) },
    );
    // The loader stops heartbeating: its lease runs out after 3 intervals.
    h.advance_to(10_000);
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].system.as_str(), open[0].cause), ("warehouse", Cause::Failed));
    assert!(open[0].detail.contains("lease:default/loader"), "{}", open[0].detail);
}

#[test]
fn a_burst_of_systems_falling_due_is_checked_over_several_turns_and_none_is_missed() {
    // A system with no dependencies costs two systems visited when it goes stale: its own risk
    // propagated, its incident assessed.
    let budget = lockstep_core::FRESHNESS_WORK_PER_TURN as usize;
    let per_turn = budget / 2;
    let mut h = Harness::new(Config::default());
    let n = 2 * per_turn + 2;
    let name = |i: usize| format!("feed-{i:04}");
    for i in 0..n {
        register(&mut h, spec(&name(i), 1_000, 0, Criticality::Medium));
    }
    let stale = |h: &Harness| (0..n).filter(|i| h.engine.systems().get(&name(*i)).unwrap().stale).count();
    // One call does one turn's worth of work; what is left stays due for the next turn...
    h.now = 1_000;
    let work = h.engine.systems().work();
    h.engine.handle_timeout(h.now);
    assert_eq!(stale(&h), per_turn);
    assert_eq!(h.engine.systems().work() - work, budget as u64);
    assert!(h.engine.next_deadline().is_some_and(|d| d <= h.now), "the rest is still due");
    // ...and an input between turns is taken at once: here, a success of one not checked yet.
    report(&mut h, event(&name(n - 1), Status::Ok));
    let mut turns = 1;
    while h.engine.next_deadline().is_some_and(|d| d <= h.now) {
        h.engine.handle_timeout(h.now);
        turns += 1;
    }
    assert_eq!(turns, 3);
    assert_eq!(stale(&h), n - 1, "every system due went stale but the one that reported");
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    assert_eq!(open.len(), n - 1);
    assert!(open.iter().all(|i| i.opened_at == 1_000), "each is dated when it was checked, at its due time");
}
