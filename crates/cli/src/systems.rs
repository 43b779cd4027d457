//! `lockstep systems ...`, `lockstep deps ...` and `lockstep incidents ...`: the sync monitor from
//! the command line — which synchronised systems are stale, what that puts at risk, and what to
//! fix first. Measurements are given as a number and a unit (`90s`, `2.5MB`, `1200rows`); the
//! server converts them to its canonical units and refuses unknown units, listing the known ones.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use lockstep_client::systems::trend::{Quantiles, WindowStats};
use lockstep_client::systems::{Criticality, Incident, Kind, Measure, Quantity, Report, Status, SystemSpec};
use lockstep_client::{SystemStatus, SystemsAck, SystemsClient};
use serde_json::json;

use crate::admin::OperatorTarget;
use crate::table;

#[derive(Args)]
pub struct SystemsArgs {
    #[command(subcommand)]
    command: SystemsCommand,
}

#[derive(Subcommand)]
enum SystemsCommand {
    /// Every system with its freshness, risk and open incidents.
    List {
        /// The retired systems too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// One system: definition, state, risk, neighbours, blast radius and its last events.
    Show {
        name: String,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// Register a system (an operator's action).
    Register(SpecArgs),
    /// Replace a system's definition, keeping its state and events (an operator's action).
    Update(SpecArgs),
    /// Retire a system: its open incidents are resolved, its dependencies removed.
    Retire {
        name: String,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// Report a sync event of a system.
    Report(ReportArgs),
}

#[derive(Args)]
struct SpecArgs {
    name: String,
    /// dataset, pipeline, service or agent_group.
    #[arg(long, default_value = "dataset")]
    kind: String,
    /// How often it is expected to sync, e.g. `5min`, `30s`, `500ms`.
    #[arg(long)]
    cadence: String,
    /// How much later a sync may come before it is stale (and the drift beyond which it lags).
    #[arg(long, default_value = "0ms")]
    tolerance: String,
    /// low, medium, high or critical.
    #[arg(long, default_value = "medium")]
    criticality: String,
    #[arg(long, default_value = "")]
    owner: String,
    /// Metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// An agent tied to the system (`agent` or `namespace/agent`; repeatable): its lost lease is
    /// a failed sync of the system.
    #[arg(long = "agent")]
    agents: Vec<String>,
    #[command(flatten)]
    target: OperatorTarget,
}

#[derive(Args)]
struct ReportArgs {
    system: String,
    /// ok, degraded or failed.
    #[arg(long)]
    status: String,
    /// Who reports (the per-reporter rate limit counts by it).
    #[arg(long, default_value = "cli")]
    reporter: String,
    /// When the sync happened, Unix ms (0: now).
    #[arg(long, default_value_t = 0)]
    at: u64,
    /// How far behind its source it is, e.g. `2s`.
    #[arg(long)]
    drift: Option<String>,
    /// How long the sync took, e.g. `120ms`.
    #[arg(long)]
    latency: Option<String>,
    /// Records moved, e.g. `1200rows` or `1200`.
    #[arg(long)]
    records: Option<String>,
    /// Bytes moved, e.g. `2.5MB` or `3GiB`.
    #[arg(long)]
    bytes: Option<String>,
    #[command(flatten)]
    target: OperatorTarget,
}

#[derive(Args)]
pub struct DepsArgs {
    #[command(subcommand)]
    command: DepsCommand,
}

#[derive(Subcommand)]
enum DepsCommand {
    /// Every dependency, upstream → downstream with its impact weight.
    List(OperatorTarget),
    /// Declare that DOWNSTREAM is fed by UPSTREAM (an operator's action).
    Add {
        upstream: String,
        downstream: String,
        /// Impact weight in (0, 1]: the share of the upstream's risk the downstream inherits.
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// Remove a dependency (an operator's action).
    Remove {
        upstream: String,
        downstream: String,
        #[command(flatten)]
        target: OperatorTarget,
    },
}

#[derive(Args)]
pub struct IncidentsArgs {
    #[command(subcommand)]
    command: IncidentsCommand,
}

#[derive(Subcommand)]
enum IncidentsCommand {
    /// The open incidents, most urgent first (severity, then score, then age).
    List {
        /// The kept resolved incidents too, after the open ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// Acknowledge an open incident.
    Ack {
        id: u64,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// Resolve an open incident by hand.
    Resolve {
        id: u64,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// Add a note to an open incident.
    Note {
        id: u64,
        text: String,
        #[command(flatten)]
        target: OperatorTarget,
    },
}

/// `90s` as a measure: the number, then the unit as written (empty: the canonical one).
fn measure(text: &str) -> anyhow::Result<Measure> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value = number.parse::<f64>().map_err(|_| anyhow!("'{text}' is not a number followed by a unit"))?;
    Ok(Measure::new(value, unit.trim()))
}

/// A duration flag in milliseconds, converted with the server's units.
fn millis(flag: &str, text: &str) -> anyhow::Result<u64> {
    let ms = lockstep_core::systems::units::normalise("duration", Quantity::Duration, &measure(text)?)
        .map_err(|e| anyhow!("--{flag}: {e}"))?;
    Ok(ms.round() as u64)
}

fn spec(a: &SpecArgs) -> anyhow::Result<SystemSpec> {
    let mut metadata = BTreeMap::new();
    for entry in &a.metadata {
        let (k, v) = entry.split_once('=').with_context(|| format!("--meta '{entry}' is not KEY=VALUE"))?;
        metadata.insert(k.to_owned(), v.to_owned());
    }
    Ok(SystemSpec {
        name: a.name.clone(),
        kind: Kind::parse(&a.kind)?,
        cadence_ms: millis("cadence", &a.cadence)?,
        tolerance_ms: millis("tolerance", &a.tolerance)?,
        criticality: Criticality::parse(&a.criticality)?,
        owner: a.owner.clone(),
        metadata,
        agents: a.agents.clone(),
    })
}

fn report(a: &ReportArgs) -> anyhow::Result<Report> {
    let m = |v: &Option<String>| v.as_deref().map(measure).transpose();
    Ok(Report {
        system: a.system.clone(),
        reporter: a.reporter.clone(),
        status: Some(Status::parse(&a.status)?),
        at: a.at,
        drift: m(&a.drift)?,
        latency: m(&a.latency)?,
        records: m(&a.records)?,
        bytes: m(&a.bytes)?,
    })
}

fn percent(risk: f64) -> String {
    format!("{:.0}%", risk * 100.0)
}

/// Freshness in a word: retired, stale, or fresh.
fn freshness(s: &SystemStatus) -> &'static str {
    if s.retired_at.is_some() {
        "retired"
    } else if s.stale {
        "stale"
    } else {
        "fresh"
    }
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn system_rows(systems: &[SystemStatus]) -> Vec<Vec<String>> {
    systems
        .iter()
        .map(|s| {
            vec![
                s.spec.name.clone(),
                s.spec.kind.as_str().into(),
                s.spec.criticality.as_str().into(),
                freshness(s).into(),
                s.last_status.map_or("-", Status::as_str).into(),
                percent(s.own_risk),
                percent(s.risk),
                ids(&s.open_incidents),
            ]
        })
        .collect()
}

fn incident_rows(incidents: &[Incident]) -> Vec<Vec<String>> {
    incidents
        .iter()
        .map(|i| {
            let state = match (i.resolved_at, i.acked_at) {
                (Some(_), _) => format!("resolved by {}", i.resolved_by),
                (None, Some(_)) => format!("acked by {}", i.acked_by),
                (None, None) => "open".into(),
            };
            vec![
                i.id.to_string(),
                i.severity.to_string(),
                i.score.to_string(),
                i.system.clone(),
                i.cause.as_str().into(),
                i.count.to_string(),
                i.at_risk.to_string(),
                state,
                i.detail.clone(),
            ]
        })
        .collect()
}

/// What a change did: its detail and the incidents it touched.
fn print_ack(ack: &SystemsAck, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let changes: Vec<_> = ack.changes.iter().map(|(c, i)| json!({"change": c, "incident": i})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"detail": ack.detail, "changes": changes}))?);
    } else {
        println!("{}", ack.detail);
        for (change, i) in &ack.changes {
            println!("incident {} on {} ({}): {}", i.id, i.system, i.cause.as_str(), change.as_str());
        }
    }
    Ok(())
}

fn print_incident(i: &Incident, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(i)?);
    } else {
        print!("{}", table::render(&INCIDENT_HEADERS, &incident_rows(std::slice::from_ref(i))));
        for n in &i.notes {
            println!("  note by {} at {}: {}", n.by, n.at, n.text);
        }
    }
    Ok(())
}

const INCIDENT_HEADERS: [&str; 9] = ["ID", "SEV", "SCORE", "SYSTEM", "CAUSE", "COUNT", "AT RISK", "STATE", "DETAIL"];

/// One trend window in a line: events, latency and drift quantiles, freshness attainment.
fn window_line(w: &WindowStats) -> String {
    let q = |q: &Quantiles| {
        let v = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        format!("p50 {} / p95 {} / p99 {} ms", v(q.p50), v(q.p95), v(q.p99))
    };
    let fresh = w.attainment.map_or("-".to_owned(), |a| format!("{:.1}%", a * 100.0));
    format!("{} events, latency {}, drift {}, fresh {fresh} of the time", w.events, q(&w.latency_ms), q(&w.drift_ms))
}

async fn show(client: &SystemsClient, name: &str, as_json: bool) -> anyhow::Result<()> {
    let d = client.show(name).await?;
    let blast = client.blast_radius(name).await?;
    if as_json {
        let mut v = serde_json::to_value(&d)?;
        v["blast_radius"] = serde_json::to_value(&blast)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = &d.status;
    println!(
        "{} ({}, {}), owner '{}': {}, last status {}, risk {} (own {})",
        s.spec.name,
        s.spec.kind.as_str(),
        s.spec.criticality.as_str(),
        s.spec.owner,
        freshness(s),
        s.last_status.map_or("-", Status::as_str),
        percent(s.risk),
        percent(s.own_risk),
    );
    println!(
        "cadence {} ms, tolerance {} ms; open incidents: {}",
        s.spec.cadence_ms,
        s.spec.tolerance_ms,
        ids(&s.open_incidents)
    );
    for (label, w) in [("last hour", &d.trends.hour), ("last day", &d.trends.day)] {
        println!("{label}: {}", window_line(w));
    }
    println!("direction: {}", d.trends.direction.as_str());
    for (what, deps) in [("upstream", &d.upstreams), ("downstream", &d.downstreams)] {
        for dep in deps.iter() {
            let other = if what == "upstream" { &dep.upstream } else { &dep.downstream };
            println!("{what} {other} (weight {})", dep.weight);
        }
    }
    if !blast.is_empty() {
        println!("blast radius:");
        let rows: Vec<Vec<String>> = blast
            .iter()
            .map(|i| vec![i.system.clone(), i.criticality.as_str().into(), percent(i.inherited), percent(i.risk)])
            .collect();
        print!("{}", table::render(&["SYSTEM", "CRITICALITY", "WOULD INHERIT", "RISK NOW"], &rows));
    }
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v}"));
    let rows: Vec<Vec<String>> = d
        .events
        .iter()
        .rev()
        .take(10)
        .map(|e| {
            vec![
                e.at.to_string(),
                e.reporter.clone(),
                e.status.as_str().into(),
                opt(e.drift_ms),
                opt(e.latency_ms),
                opt(e.records),
                opt(e.bytes),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!("last events (newest first):");
        print!("{}", table::render(&["AT", "REPORTER", "STATUS", "DRIFT MS", "LATENCY MS", "RECORDS", "BYTES"], &rows));
    }
    Ok(())
}

pub async fn run(args: SystemsArgs) -> anyhow::Result<()> {
    match args.command {
        SystemsCommand::List { all, target } => {
            let systems = target.systems().await?.list(all).await?;
            if target.target.json {
                println!("{}", serde_json::to_string_pretty(&systems)?);
            } else {
                let headers = ["NAME", "KIND", "CRITICALITY", "FRESHNESS", "LAST", "OWN RISK", "RISK", "INCIDENTS"];
                print!("{}", table::render(&headers, &system_rows(&systems)));
            }
        }
        SystemsCommand::Show { name, target } => show(&target.systems().await?, &name, target.target.json).await?,
        SystemsCommand::Register(a) => {
            let ack = a.target.systems().await?.register(&spec(&a)?).await?;
            print_ack(&ack, a.target.target.json)?;
        }
        SystemsCommand::Update(a) => {
            let ack = a.target.systems().await?.update(&spec(&a)?).await?;
            print_ack(&ack, a.target.target.json)?;
        }
        SystemsCommand::Retire { name, target } => {
            print_ack(&target.systems().await?.retire(&name).await?, target.target.json)?;
        }
        SystemsCommand::Report(a) => {
            let ack = a.target.systems().await?.report(&report(&a)?).await?;
            print_ack(&ack, a.target.target.json)?;
        }
    }
    Ok(())
}

pub async fn run_deps(args: DepsArgs) -> anyhow::Result<()> {
    match args.command {
        DepsCommand::List(target) => {
            let deps = target.systems().await?.dependencies().await?;
            if target.target.json {
                println!("{}", serde_json::to_string_pretty(&deps)?);
            } else {
                let rows: Vec<Vec<String>> =
                    deps.iter().map(|d| vec![d.upstream.clone(), d.downstream.clone(), d.weight.to_string()]).collect();
                print!("{}", table::render(&["UPSTREAM", "DOWNSTREAM", "WEIGHT"], &rows));
            }
        }
        DepsCommand::Add { upstream, downstream, weight, target } => {
            print_ack(&target.systems().await?.depend(&upstream, &downstream, weight).await?, target.target.json)?;
        }
        DepsCommand::Remove { upstream, downstream, target } => {
            print_ack(&target.systems().await?.undepend(&upstream, &downstream).await?, target.target.json)?;
        }
    }
    Ok(())
}

pub async fn run_incidents(args: IncidentsArgs) -> anyhow::Result<()> {
    match args.command {
        IncidentsCommand::List { all, target } => {
            let incidents = target.systems().await?.incidents(all).await?;
            if target.target.json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
            } else {
                print!("{}", table::render(&INCIDENT_HEADERS, &incident_rows(&incidents)));
            }
        }
        IncidentsCommand::Ack { id, target } => {
            print_incident(&target.systems().await?.ack(id).await?, target.target.json)?;
        }
        IncidentsCommand::Resolve { id, target } => {
            print_incident(&target.systems().await?.resolve(id).await?, target.target.json)?;
        }
        IncidentsCommand::Note { id, text, target } => {
            print_incident(&target.systems().await?.note(id, &text).await?, target.target.json)?;
        }
    }
    Ok(())
}
