//! The engine's side of the sync monitor: calls from clients and operators, the freshness timers
//! (one per active system, set at the time it goes stale), lost leases of tied agents, and where
//! incident changes go: published on the incidents topic (`systems.incidents` in the default
//! namespace) for agents to react to, and written to the audit log. The rules are in
//! [`crate::systems`]; the table works in Unix milliseconds (so that what it keeps means the same
//! after a restart), the engine's timers in its own clock.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::{Engine, Timer, Touched};
use crate::command::{AuditEntry, AuditOutcome};
use crate::durable::Change as Kept;
use crate::error::CoreError;
use crate::io::{SystemsCall, SystemsDone, Time};
use crate::name;
use crate::systems::{Change, Effects, Event, Incident, SystemImage, Systems};

/// The topic incident changes are published on, in the default namespace.
pub const INCIDENTS_TOPIC: &str = "systems.incidents";

/// Who the server is in the audit log and as a publisher.
const SERVER: &str = "lockstep";

impl Engine {
    /// The sync monitor's table, to read (list, show, blast radius, incidents).
    pub fn systems(&self) -> &Systems {
        &self.systems
    }

    /// The server's time as Unix ms, the sync monitor's clock.
    pub fn systems_now(&self, now: Time) -> Time {
        self.clock_origin().saturating_add(now)
    }

    /// Carries out a sync monitor call by `actor`.
    pub(super) fn systems_call(&mut self, now: Time, actor: &str, call: SystemsCall) -> Result<SystemsDone, CoreError> {
        let unix = self.systems_now(now);
        let settings = self.config.systems.clone();
        let t = &mut self.systems;
        let (command, target, result): (&str, String, Result<(Effects, String), CoreError>) = match call {
            SystemsCall::Register(spec) => {
                let name = spec.name.clone();
                (
                    "register_system",
                    name.clone(),
                    t.register(unix, spec, &settings).map(|fx| (fx, format!("system '{name}' registered"))),
                )
            }
            SystemsCall::Update(spec) => {
                let name = spec.name.clone();
                (
                    "update_system",
                    name.clone(),
                    t.update(unix, spec, &settings).map(|fx| (fx, format!("system '{name}' updated"))),
                )
            }
            SystemsCall::Retire { name } => (
                "retire_system",
                name.clone(),
                t.retire(unix, &name, &settings).map(|fx| (fx, format!("system '{name}' retired"))),
            ),
            SystemsCall::Depend { upstream, downstream, weight } => (
                "add_dependency",
                format!("{upstream}->{downstream}"),
                t.depend(&upstream, &downstream, weight, &settings)
                    .map(|fx| (fx, format!("'{upstream}' -> '{downstream}' (weight {weight})"))),
            ),
            SystemsCall::Undepend { upstream, downstream } => (
                "remove_dependency",
                format!("{upstream}->{downstream}"),
                t.undepend(&upstream, &downstream).map(|fx| (fx, format!("'{upstream}' -> '{downstream}' removed"))),
            ),
            SystemsCall::Report(report) => {
                // Events are not audited (there are many); what they change in incidents is.
                let fx = t.report(unix, &report, &settings)?;
                let changes = fx.incidents.clone();
                self.systems_effects(now, SERVER, fx);
                return Ok(SystemsDone { detail: "event taken".into(), incident: None, changes, at: unix });
            }
            SystemsCall::Ack { id } => (
                "ack_incident",
                id.to_string(),
                t.ack(unix, id, actor).map(|fx| (fx, format!("incident {id} acknowledged"))),
            ),
            SystemsCall::Note { id, text } => (
                "note_incident",
                id.to_string(),
                t.note(unix, id, actor, &text).map(|fx| (fx, format!("incident {id} annotated"))),
            ),
            SystemsCall::Resolve { id } => (
                "resolve_incident",
                id.to_string(),
                t.resolve(unix, id, actor, &settings).map(|fx| (fx, format!("incident {id} resolved"))),
            ),
        };
        let outcome = if result.is_ok() { AuditOutcome::Ok } else { AuditOutcome::Refused };
        let detail = match &result {
            Ok((_, d)) => d.clone(),
            Err(e) => e.to_string(),
        };
        self.control.record(AuditEntry::new(now, actor, command, outcome).target("", &target).detail(detail.clone()));
        let (fx, _) = result?;
        let incident = match command {
            "ack_incident" | "note_incident" | "resolve_incident" => fx.incidents.first().map(|(_, i)| i.clone()),
            _ => None,
        };
        let changes = fx.incidents.clone();
        // The operator's own action on an incident is audited above; publish it without a second entry.
        let audited = if incident.is_some() { actor } else { SERVER };
        self.systems_effects_by(now, audited, fx, incident.is_some());
        Ok(SystemsDone { detail, incident, changes, at: unix })
    }

    /// The freshness timer of `name` fired.
    pub(super) fn system_stale_timer(&mut self, now: Time, name: &str) {
        let unix = self.systems_now(now);
        let fx = self.systems.check(unix, name, &self.config.systems);
        self.systems_effects(now, SERVER, fx);
    }

    /// An agent lost its lease: a failed event of the systems it is tied to.
    pub(super) fn systems_agent_lost(&mut self, now: Time, ns: &str, agent: &str) {
        if self.systems.is_empty() {
            return;
        }
        let unix = self.systems_now(now);
        let fx = self.systems.agent_lost(unix, ns, agent, &self.config.systems);
        self.systems_effects(now, SERVER, fx);
    }

    fn systems_effects(&mut self, now: Time, actor: &str, fx: Effects) {
        self.systems_effects_by(now, actor, fx, false);
    }

    /// Sets the freshness timers, and publishes and audits the incident changes of `fx`
    /// (`audited`: the caller wrote the audit entry already).
    fn systems_effects_by(&mut self, now: Time, actor: &str, fx: Effects, audited: bool) {
        let origin = self.clock_origin();
        for name in fx.touched {
            self.touch(Touched::System(name));
        }
        for (name, seq) in fx.events {
            self.touch(Touched::SystemEvent(name, seq));
        }
        for name in fx.trends {
            self.touch(Touched::SystemTrend(name));
        }
        for (up, down) in fx.deps {
            self.touch(Touched::Dependency(up, down));
        }
        for (name, at) in fx.timers {
            match at {
                Some(at) => self.timers.set(Timer::SystemStale(name), at.saturating_sub(origin)),
                None => self.timers.cancel(&Timer::SystemStale(name)),
            }
        }
        for (change, incident) in fx.incidents {
            self.touch(Touched::Incident(incident.id));
            // Repeats are counted, not audited one by one: a flood of failures is one entry.
            if !audited && change != Change::Repeated {
                let detail = incident_summary(change, &incident);
                self.control.record(
                    AuditEntry::new(now, actor, &format!("incident_{}", change.as_str()), AuditOutcome::Ok)
                        .target("", &incident.system)
                        .detail(detail),
                );
            }
            self.publish_incident(change, &incident);
        }
    }

    /// Publishes an incident change on [`INCIDENTS_TOPIC`] of the default namespace, if it has
    /// anyone to hear it.
    fn publish_incident(&mut self, change: Change, incident: &Incident) {
        let ns: Arc<str> = self.key(name::DEFAULT_NAMESPACE);
        if !self.namespaces.contains_key(&ns) {
            return;
        }
        let payload = json!({ "change": change.as_str(), "incident": incident });
        let publisher: Arc<str> = Arc::from(SERVER);
        // Within the limits by construction (bounded notes and texts); a refusal must not undo
        // the change it tells of.
        let _ = self.publish(&ns, &publisher, INCIDENTS_TOPIC, Bytes::from(payload.to_string()), "application/json");
    }
}

impl Engine {
    /// The change that keeps system `name` as it is now.
    pub(super) fn system_change(&self, name: &str) -> Option<Kept> {
        self.systems.image(name).map(|i| Kept::SystemPut(Box::new(i)))
    }

    /// The change that keeps event `seq` of `name` (none once it is no longer kept).
    pub(super) fn system_event_change(&self, name: &str, seq: u64) -> Option<Kept> {
        let event = self.systems.event(name, seq)?.clone();
        let keep = self.config.systems.events_per_system.max(1) as u64;
        Some(Kept::SystemEvent { system: name.to_owned(), seq, event: Box::new(event), keep })
    }

    /// The change that keeps the trends of `name` as they are now.
    pub(super) fn system_trend_change(&self, name: &str) -> Option<Kept> {
        let trend = self.systems.get(name)?.trend.clone();
        Some(Kept::SystemTrend { system: name.to_owned(), trend: Box::new(trend) })
    }

    /// The change that keeps the dependency `up → down` as it is now (its weight, or gone).
    pub(super) fn dependency_change(&self, up: &str, down: &str) -> Kept {
        let weight = self.systems.graph().weight(up, down);
        Kept::Dependency { upstream: up.to_owned(), downstream: down.to_owned(), weight }
    }

    /// The change that keeps incident `id` as it is now.
    pub(super) fn incident_change(&self, id: u64) -> Option<Kept> {
        let incident = self.systems.incident(id)?.clone();
        let keep = self.config.systems.max_resolved_incidents.max(1) as u64;
        Some(Kept::Incident { incident: Box::new(incident), keep })
    }

    /// Rebuilds the sync monitor from what was kept and arms its freshness timers (call after
    /// the clock origin is set).
    pub(super) fn restore_systems(
        &mut self,
        systems: Vec<SystemImage>,
        events: Vec<(String, u64, Event)>,
        dependencies: Vec<(String, String, f64)>,
        incidents: Vec<Incident>,
        trends: Vec<(String, crate::systems::trend::Trend)>,
    ) -> Result<(), CoreError> {
        let settings = self.config.systems.clone();
        let fx = self.systems.restore(systems, events, dependencies, incidents, trends, &settings)?;
        let origin = self.clock_origin();
        for (name, at) in fx.timers {
            if let Some(at) = at {
                self.timers.set(Timer::SystemStale(name), at.saturating_sub(origin));
            }
        }
        Ok(())
    }
}

/// One line for the audit log.
fn incident_summary(change: Change, i: &Incident) -> String {
    let mut s = format!("incident {} ({}) {}: severity {}", i.id, i.cause.as_str(), change.as_str(), i.severity);
    if let Some(at) = i.resolved_at {
        s.push_str(&format!(", open {} ms, by {}", at.saturating_sub(i.opened_at), i.resolved_by));
    }
    if !i.detail.is_empty() {
        s.push_str(&format!("; {}", i.detail));
    }
    s
}
