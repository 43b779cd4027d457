//! Conversions between the sync monitor's wire messages and the engine's types (see
//! `lockstep_core::systems`), both ways: the server reads definitions and reports and writes
//! what it knows; the clients do the reverse. Names of kinds, criticalities, statuses, causes and
//! changes travel as the words PROTOCOL.md gives; an empty kind or criticality is the default.

use lockstep_core::systems::trend::{Quantiles, WindowStats};
use lockstep_core::systems::{
    Cause, Change, Criticality, Direction, Event, Impact, Incident, Kind, Measure, Note, Report, Status, System,
    SystemSpec, TrendView,
};
use lockstep_core::{CoreError, Time};

use crate::v1;

/// A definition from the wire; an unknown kind or criticality is refused naming the known ones.
pub fn spec(s: v1::SystemSpec) -> Result<SystemSpec, CoreError> {
    Ok(SystemSpec {
        kind: if s.kind.is_empty() { Kind::default() } else { Kind::parse(&s.kind)? },
        criticality: if s.criticality.is_empty() {
            Criticality::default()
        } else {
            Criticality::parse(&s.criticality)?
        },
        name: s.name,
        cadence_ms: s.cadence_ms,
        tolerance_ms: s.tolerance_ms,
        owner: s.owner,
        metadata: s.metadata.into_iter().collect(),
        agents: s.agents,
    })
}

/// A definition for the wire.
pub fn spec_to_wire(s: &SystemSpec) -> v1::SystemSpec {
    v1::SystemSpec {
        name: s.name.clone(),
        kind: s.kind.as_str().into(),
        cadence_ms: s.cadence_ms,
        tolerance_ms: s.tolerance_ms,
        criticality: s.criticality.as_str().into(),
        owner: s.owner.clone(),
        metadata: s.metadata.clone().into_iter().collect(),
        agents: s.agents.clone(),
    }
}

fn measure(m: Option<v1::Measure>) -> Option<Measure> {
    m.map(|m| Measure { value: m.value, unit: m.unit })
}

fn measure_to_wire(m: &Option<Measure>) -> Option<v1::Measure> {
    m.as_ref().map(|m| v1::Measure { value: m.value, unit: m.unit.clone() })
}

/// A report from the wire. An empty status stays missing, for the engine to refuse.
pub fn report(r: v1::SyncEventReport) -> Result<Report, CoreError> {
    Ok(Report {
        status: if r.status.is_empty() { None } else { Some(Status::parse(&r.status)?) },
        system: r.system,
        reporter: r.reporter,
        at: r.at,
        drift: measure(r.drift),
        latency: measure(r.latency),
        records: measure(r.records),
        bytes: measure(r.bytes),
    })
}

/// A report for the wire.
pub fn report_to_wire(r: &Report) -> v1::SyncEventReport {
    v1::SyncEventReport {
        system: r.system.clone(),
        reporter: r.reporter.clone(),
        status: r.status.map_or("", Status::as_str).into(),
        at: r.at,
        drift: measure_to_wire(&r.drift),
        latency: measure_to_wire(&r.latency),
        records: measure_to_wire(&r.records),
        bytes: measure_to_wire(&r.bytes),
    }
}

/// A kept event for the wire.
pub fn event_to_wire(e: &Event) -> v1::SyncEvent {
    v1::SyncEvent {
        at: e.at,
        received: e.received,
        reporter: e.reporter.clone(),
        status: e.status.as_str().into(),
        drift_ms: e.drift_ms,
        latency_ms: e.latency_ms,
        records: e.records,
        bytes: e.bytes,
    }
}

/// A kept event from the wire.
pub fn event(e: v1::SyncEvent) -> Result<Event, CoreError> {
    Ok(Event {
        status: Status::parse(&e.status)?,
        at: e.at,
        received: e.received,
        reporter: e.reporter,
        drift_ms: e.drift_ms,
        latency_ms: e.latency_ms,
        records: e.records,
        bytes: e.bytes,
    })
}

/// What the monitor knows of one system, for the wire: its risks (own, propagated), when it goes
/// stale without a success, and its open incidents.
pub struct SystemState<'a> {
    pub system: &'a System,
    pub own_risk: f64,
    pub risk: f64,
    pub stale_at: Option<Time>,
    pub open_incidents: Vec<u64>,
}

/// A system as listed.
pub fn info(s: &SystemState) -> v1::SystemInfo {
    let sys = s.system;
    v1::SystemInfo {
        spec: Some(spec_to_wire(&sys.spec)),
        registered_at: sys.registered_at,
        updated_at: sys.updated_at,
        retired_at: sys.retired_at.unwrap_or(0),
        last_success: sys.last_success.unwrap_or(0),
        last_status: sys.last_status.map_or("", Status::as_str).into(),
        last_drift_ms: sys.last_drift_ms,
        stale: sys.stale,
        stale_at: s.stale_at.unwrap_or(0),
        own_risk: s.own_risk,
        risk: s.risk,
        open_incidents: s.open_incidents.clone(),
    }
}

/// One system of a blast radius, for the wire.
pub fn impact_to_wire(i: &Impact) -> v1::Impact {
    v1::Impact {
        system: i.system.clone(),
        criticality: i.criticality.as_str().into(),
        inherited: i.inherited,
        risk: i.risk,
    }
}

/// One system of a blast radius, from the wire.
pub fn impact(i: v1::Impact) -> Result<Impact, CoreError> {
    Ok(Impact {
        criticality: Criticality::parse(&i.criticality)?,
        system: i.system,
        inherited: i.inherited,
        risk: i.risk,
    })
}

/// An incident for the wire, with its duration until `now` (Unix ms) while it is open.
pub fn incident_to_wire(i: &Incident, now: Time) -> v1::IncidentInfo {
    v1::IncidentInfo {
        id: i.id,
        system: i.system.clone(),
        cause: i.cause.as_str().into(),
        opened_at: i.opened_at,
        count: i.count,
        last_seen: i.last_seen,
        detail: i.detail.clone(),
        acked_by: i.acked_by.clone(),
        acked_at: i.acked_at.unwrap_or(0),
        notes: i.notes.iter().map(|n| v1::IncidentNote { at: n.at, by: n.by.clone(), text: n.text.clone() }).collect(),
        resolved_at: i.resolved_at.unwrap_or(0),
        resolved_by: i.resolved_by.clone(),
        severity: u32::from(i.severity),
        score: i.score,
        at_risk: i.at_risk,
        duration_ms: i.duration(now),
    }
}

fn cause(s: &str) -> Result<Cause, CoreError> {
    [Cause::Stale, Cause::Failed]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| CoreError::Invalid { what: "incident cause", reason: format!("'{s}'; one of stale, failed") })
}

/// The change named `s` (opened, repeated, resolved, acknowledged, annotated).
pub fn change(s: &str) -> Result<Change, CoreError> {
    [Change::Opened, Change::Repeated, Change::Resolved, Change::Acknowledged, Change::Annotated]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            let reason = format!("'{s}'; one of opened, repeated, resolved, acknowledged, annotated");
            CoreError::Invalid { what: "incident change", reason }
        })
}

/// An incident from the wire.
pub fn incident(i: v1::IncidentInfo) -> Result<Incident, CoreError> {
    let some = |t: Time| (t != 0).then_some(t);
    Ok(Incident {
        cause: cause(&i.cause)?,
        severity: u8::try_from(i.severity).unwrap_or(u8::MAX),
        id: i.id,
        system: i.system,
        opened_at: i.opened_at,
        count: i.count,
        last_seen: i.last_seen,
        detail: i.detail,
        acked_by: i.acked_by,
        acked_at: some(i.acked_at),
        notes: i.notes.into_iter().map(|n| Note { at: n.at, by: n.by, text: n.text }).collect(),
        resolved_at: some(i.resolved_at),
        resolved_by: i.resolved_by,
        score: i.score,
        at_risk: i.at_risk,
    })
}

/// Incident changes for the wire.
pub fn changes_to_wire(changes: &[(Change, Incident)], now: Time) -> Vec<v1::IncidentChange> {
    changes
        .iter()
        .map(|(c, i)| v1::IncidentChange { change: c.as_str().into(), incident: Some(incident_to_wire(i, now)) })
        .collect()
}

/// Incident changes from the wire.
pub fn changes(changes: Vec<v1::IncidentChange>) -> Result<Vec<(Change, Incident)>, CoreError> {
    changes
        .into_iter()
        .map(|c| {
            let i = c
                .incident
                .ok_or_else(|| CoreError::Invalid { what: "incident change", reason: "without its incident".into() })?;
            Ok((change(&c.change)?, incident(i)?))
        })
        .collect()
}

fn quantiles_to_wire(q: &Quantiles) -> v1::Quantiles {
    v1::Quantiles { p50: q.p50, p95: q.p95, p99: q.p99 }
}

fn window_to_wire(w: &WindowStats) -> v1::TrendWindow {
    v1::TrendWindow {
        window_ms: w.window_ms,
        events: w.events,
        latency_ms: Some(quantiles_to_wire(&w.latency_ms)),
        drift_ms: Some(quantiles_to_wire(&w.drift_ms)),
        attainment: w.attainment,
    }
}

/// A system's trends for the wire.
pub fn trends_to_wire(t: &TrendView) -> v1::SystemTrends {
    v1::SystemTrends {
        hour: Some(window_to_wire(&t.hour)),
        day: Some(window_to_wire(&t.day)),
        direction: t.direction.as_str().into(),
    }
}

fn quantiles(q: Option<v1::Quantiles>) -> Quantiles {
    let q = q.unwrap_or_default();
    Quantiles { p50: q.p50, p95: q.p95, p99: q.p99 }
}

fn window(w: Option<v1::TrendWindow>) -> WindowStats {
    let w = w.unwrap_or_default();
    WindowStats {
        window_ms: w.window_ms,
        events: w.events,
        latency_ms: quantiles(w.latency_ms),
        drift_ms: quantiles(w.drift_ms),
        attainment: w.attainment,
    }
}

/// A system's trends from the wire.
pub fn trends(t: v1::SystemTrends) -> Result<TrendView, CoreError> {
    let direction = [Direction::Improving, Direction::Steady, Direction::Worsening]
        .into_iter()
        .find(|d| d.as_str() == t.direction)
        .ok_or_else(|| CoreError::Invalid {
            what: "trend direction",
            reason: format!("'{}'; one of improving, steady, worsening", t.direction),
        })?;
    Ok(TrendView { hour: window(t.hour), day: window(t.day), direction })
}
