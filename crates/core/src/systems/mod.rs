//! The infrastructure sync monitor: the systems lockstep's users keep in sync (datasets,
//! pipelines, services, agent groups), the dependencies between them, the sync events they
//! report, their freshness and risk, and the incidents opened on them.
//!
//! [`Systems`] is one table owning every rule, on the manual clock (every call takes `now`):
//!
//! * **Registry.** Systems are registered, updated and retired by name, each with a kind, an
//!   expected cadence, a tolerance, a criticality (low < medium < high < critical), an owner,
//!   metadata and the agents tied to it (an agent's lost lease is a failed event of its system).
//! * **Events.** A report carries a status (ok, degraded, failed) and optional drift, latency,
//!   records and bytes moved in the reporter's units, converted to canonical units ([`units`]).
//!   Unknown or retired systems, bad values, event times far from the server's clock and floods
//!   from one reporter (a per-reporter limit per second, counted) are refused, and nothing of a
//!   refused event is kept. The last `events_per_system` events of each system are kept.
//! * **Freshness.** A system is stale when it has had no successful (ok or degraded) sync for
//!   cadence + tolerance, counted from its last success or, before any, from its registration.
//!   [`Systems::stale_at`] is when that happens; the engine sets a timer there and calls
//!   [`Systems::check`], so staleness comes by itself, with nobody reporting it.
//! * **Dependencies and risk.** See [`graph`] (acyclic, impact weights) and [`risk`] (own and
//!   propagated risk, incremental propagation bounded by the changed system's downstream cone).
//! * **Incidents.** See [`incident`]. Opened when a system becomes stale or reports a failure,
//!   resolved when it recovers; their severity and priority are assessed by [`Systems::assess`].
//!
//! Every mutating call returns [`Effects`]: the incident changes (for the incidents topic and the
//! audit log) and the freshness timers to set or cancel.

pub mod graph;
pub mod incident;
pub mod risk;
pub mod trend;
pub mod units;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::{CoreError, ErrorCode, Reason};
use crate::io::Time;
use crate::name;
pub use graph::Graph;
pub use incident::{Cause, Change, Incident, Incidents, Note};
pub use risk::{OwnState, Risks};
pub use trend::{Direction, Trend, TrendView};
pub use units::{Measure, Quantity};

/// Longest cadence or tolerance: 30 days, in milliseconds.
pub const MAX_PERIOD_MS: u64 = 30 * 24 * 3_600_000;
/// Most metadata entries per system.
pub const MAX_METADATA: usize = 32;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 64;
/// Longest metadata value or owner, in bytes.
pub const MAX_METADATA_VALUE: usize = 1024;
/// Most agents tied to one system.
pub const MAX_AGENTS: usize = 32;

/// A failure of a call on the sync monitor; each has its own [`Reason`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SystemsError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    #[error("system '{name}' is not registered")]
    UnknownSystem { name: String },

    #[error("system '{name}' was retired at {at} ms; register it again to use it")]
    SystemRetired { name: String, at: Time },

    #[error("system '{name}' is already registered with another definition; update it instead")]
    SystemExists { name: String },

    #[error("unknown unit '{unit}' for {field} ({quantity}); known units: {known}")]
    UnknownUnit { field: &'static str, unit: String, quantity: &'static str, known: String },

    #[error("bad {field} {value}: {why}")]
    BadMeasurement { field: &'static str, value: String, why: String },

    #[error("event time {at} ms is outside the accepted window [{earliest}, {latest}] around the server's time {server_time} ms (systems.event_time_past_ms / event_time_future_ms); check the reporter's clock")]
    EventTime { at: Time, server_time: Time, earliest: Time, latest: Time },

    #[error("dependency would close a cycle: {}", .cycle.join(" -> "))]
    DependencyCycle { cycle: Vec<String> },

    #[error("no dependency '{upstream}' -> '{downstream}' is declared")]
    UnknownDependency { upstream: String, downstream: String },

    #[error("incident {id} does not exist (never opened, or resolved and no longer kept)")]
    UnknownIncident { id: u64 },

    #[error("incident {id} was already resolved at {at} ms")]
    IncidentResolved { id: u64, at: Time },

    #[error("reporter '{reporter}' sent more than {limit} events in one second (systems.max_events_per_reporter_per_sec); this event was dropped and counted")]
    RateLimited { reporter: String, limit: u32 },

    #[error("limit reached: {what} (limit {limit}); {hint}")]
    Limit { what: &'static str, limit: u64, hint: &'static str },
}

impl SystemsError {
    /// The class of this failure.
    pub fn code(&self) -> ErrorCode {
        use SystemsError as E;
        match self {
            E::Invalid { .. }
            | E::UnknownUnit { .. }
            | E::BadMeasurement { .. }
            | E::EventTime { .. }
            | E::DependencyCycle { .. } => ErrorCode::InvalidArgument,
            E::UnknownSystem { .. } | E::UnknownDependency { .. } | E::UnknownIncident { .. } => ErrorCode::NotFound,
            E::SystemRetired { .. } | E::IncidentResolved { .. } => ErrorCode::FailedPrecondition,
            E::SystemExists { .. } => ErrorCode::AlreadyExists,
            E::RateLimited { .. } | E::Limit { .. } => ErrorCode::ResourceExhausted,
        }
    }

    /// Which failure this is, as a stable name.
    pub fn reason(&self) -> Reason {
        use SystemsError as E;
        match self {
            E::Invalid { .. } => Reason::InvalidArgument,
            E::UnknownSystem { .. } => Reason::UnknownSystem,
            E::SystemRetired { .. } => Reason::SystemRetired,
            E::SystemExists { .. } => Reason::SystemExists,
            E::UnknownUnit { .. } => Reason::UnknownUnit,
            E::BadMeasurement { .. } => Reason::BadMeasurement,
            E::EventTime { .. } => Reason::EventTimeOutOfRange,
            E::DependencyCycle { .. } => Reason::DependencyCycle,
            E::UnknownDependency { .. } => Reason::UnknownDependency,
            E::UnknownIncident { .. } => Reason::UnknownIncident,
            E::IncidentResolved { .. } => Reason::IncidentResolved,
            E::RateLimited { .. } => Reason::EventRateLimited,
            E::Limit { .. } => Reason::Limit,
        }
    }
}

fn invalid(what: &'static str, reason: impl Into<String>) -> CoreError {
    SystemsError::Invalid { what, reason: reason.into() }.into()
}

/// What a system is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Dataset,
    Pipeline,
    Service,
    AgentGroup,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Dataset, Kind::Pipeline, Kind::Service, Kind::AgentGroup];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dataset => "dataset",
            Kind::Pipeline => "pipeline",
            Kind::Service => "service",
            Kind::AgentGroup => "agent_group",
        }
    }

    /// The kind named `s`, or an error listing the kinds.
    pub fn parse(s: &str) -> Result<Kind, CoreError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| invalid("system kind", format!("'{s}'; one of dataset, pipeline, service, agent_group")))
    }
}

/// How much a system matters, a small ordered scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low = 1,
    #[default]
    Medium = 2,
    High = 3,
    Critical = 4,
}

impl Criticality {
    pub const ALL: [Criticality; 4] = [Criticality::Low, Criticality::Medium, Criticality::High, Criticality::Critical];

    /// 1 (low) to 4 (critical).
    pub fn rank(self) -> u32 {
        self as u32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Result<Criticality, CoreError> {
        Criticality::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| invalid("criticality", format!("'{s}'; one of low, medium, high, critical")))
    }
}

/// The outcome of one sync, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Degraded,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Status, CoreError> {
        [Status::Ok, Status::Degraded, Status::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| invalid("sync status", format!("'{s}'; one of ok, degraded, failed")))
    }

    /// Ok and degraded syncs happened (degraded: with reduced quality); failed ones did not.
    pub fn is_success(self) -> bool {
        self != Status::Failed
    }
}

/// The definition of a system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemSpec {
    pub name: String,
    pub kind: Kind,
    /// How often it is expected to sync, in milliseconds (> 0).
    pub cadence_ms: u64,
    /// How much later than its cadence a sync may come before the system is stale, in
    /// milliseconds; also the drift beyond which it counts as lagging.
    pub tolerance_ms: u64,
    pub criticality: Criticality,
    pub owner: String,
    pub metadata: BTreeMap<String, String>,
    /// Agents tied to it, as `agent` (default namespace) or `namespace/agent`.
    pub agents: Vec<String>,
}

impl SystemSpec {
    fn validate(&self) -> Result<(), CoreError> {
        name::validate("system name", &self.name)?;
        if self.cadence_ms == 0 || self.cadence_ms > MAX_PERIOD_MS {
            return Err(invalid("cadence", format!("{} ms; a cadence is 1 ms to 30 days", self.cadence_ms)));
        }
        if self.tolerance_ms > MAX_PERIOD_MS {
            return Err(invalid("tolerance", format!("{} ms; at most 30 days", self.tolerance_ms)));
        }
        if self.owner.len() > MAX_METADATA_VALUE {
            return Err(invalid("owner", format!("{} bytes; at most {MAX_METADATA_VALUE}", self.owner.len())));
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(invalid("metadata", format!("{} entries; at most {MAX_METADATA}", self.metadata.len())));
        }
        for (k, v) in &self.metadata {
            if k.is_empty() || k.len() > MAX_METADATA_KEY || v.len() > MAX_METADATA_VALUE {
                return Err(invalid(
                    "metadata",
                    format!("entry '{k}': keys are 1 to {MAX_METADATA_KEY} bytes, values at most {MAX_METADATA_VALUE}"),
                ));
            }
        }
        if self.agents.len() > MAX_AGENTS {
            return Err(invalid("agents", format!("{} agents; at most {MAX_AGENTS}", self.agents.len())));
        }
        for a in &self.agents {
            name::validate("tied agent", a)?;
        }
        Ok(())
    }
}

/// A sync event as reported, before normalisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub system: String,
    /// Who reports (a name): the per-reporter rate limit counts by it.
    pub reporter: String,
    pub status: Option<Status>,
    /// When the sync happened, in the reporter's clock (ms since the epoch); 0 means now.
    pub at: Time,
    pub drift: Option<Measure>,
    pub latency: Option<Measure>,
    pub records: Option<Measure>,
    pub bytes: Option<Measure>,
}

/// A sync event as kept: canonical units (milliseconds, records, bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Time,
    pub received: Time,
    pub reporter: String,
    pub status: Status,
    pub drift_ms: Option<f64>,
    pub latency_ms: Option<f64>,
    pub records: Option<f64>,
    pub bytes: Option<f64>,
}

/// Limits and definitions of the sync monitor (`[systems]` in the TOML file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemsSettings {
    /// Most systems, retired ones included (registering a retired name again reuses its place).
    pub max_systems: usize,
    /// Most dependencies.
    pub max_dependencies: usize,
    /// Events kept per system (the most recent).
    pub events_per_system: usize,
    /// Resolved incidents kept (the most recent).
    pub max_resolved_incidents: usize,
    /// Most events one reporter may send in one second; beyond, events are refused and counted.
    pub max_events_per_reporter_per_sec: u32,
    /// Most reporters tracked by the rate limit at once.
    pub max_reporters: usize,
    /// How far behind the server's clock an event time may be, in milliseconds.
    pub event_time_past_ms: u64,
    /// How far ahead of the server's clock an event time may be, in milliseconds.
    pub event_time_future_ms: u64,
    /// A downstream system counts as at risk (for severity) from this propagated risk, in percent.
    pub at_risk_percent: u32,
    /// With this many downstream systems at risk, an incident is one step more severe.
    pub widespread: u32,
}

impl Default for SystemsSettings {
    fn default() -> Self {
        SystemsSettings {
            max_systems: 20_000,
            max_dependencies: 50_000,
            events_per_system: 120,
            max_resolved_incidents: 1_000,
            max_events_per_reporter_per_sec: 1_000,
            max_reporters: 10_000,
            event_time_past_ms: 3_600_000,
            event_time_future_ms: 60_000,
            at_risk_percent: 30,
            widespread: 10,
        }
    }
}

impl SystemsSettings {
    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), String> {
        let at_least_one = [
            ("max_systems", self.max_systems as u64),
            ("events_per_system", self.events_per_system as u64),
            ("max_resolved_incidents", self.max_resolved_incidents as u64),
            ("max_events_per_reporter_per_sec", u64::from(self.max_events_per_reporter_per_sec)),
            ("max_reporters", self.max_reporters as u64),
            ("widespread", u64::from(self.widespread)),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be at least 1"));
        }
        if !(1..=100).contains(&self.at_risk_percent) {
            return Err(format!("at_risk_percent must be between 1 and 100, not {}", self.at_risk_percent));
        }
        Ok(())
    }
}

/// One system and what the monitor knows of it: what is kept of it (its [`SystemImage`], whose
/// fields it derefs to) and its most recent events.
#[derive(Clone, Debug, PartialEq)]
pub struct System {
    pub image: SystemImage,
    /// The most recent events, oldest first.
    pub events: VecDeque<Event>,
    /// Its trends (kept apart from the image: they change with every event, and are kept every
    /// so many events).
    pub trend: Trend,
}

impl std::ops::Deref for System {
    type Target = SystemImage;

    fn deref(&self) -> &SystemImage {
        &self.image
    }
}

impl std::ops::DerefMut for System {
    fn deref_mut(&mut self) -> &mut SystemImage {
        &mut self.image
    }
}

/// A system as kept (its events are kept beside it, one by one, by number).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemImage {
    pub spec: SystemSpec,
    pub registered_at: Time,
    pub updated_at: Time,
    #[serde(default)]
    pub retired_at: Option<Time>,
    /// When its last successful sync happened.
    #[serde(default)]
    pub last_success: Option<Time>,
    #[serde(default)]
    pub last_status: Option<Status>,
    #[serde(default)]
    pub last_drift_ms: Option<f64>,
    pub stale: bool,
    /// The number of its last event (numbering goes on across retirement and a new registration).
    pub event_seq: u64,
    /// Its events are those numbered above this (the number its current registration started at).
    pub events_from: u64,
}

impl SystemImage {
    /// When it is (or was) stale: cadence + tolerance after its last success, or after its
    /// registration when it never succeeded.
    pub fn stale_at(&self) -> Time {
        self.last_success
            .unwrap_or(self.registered_at)
            .saturating_add(self.spec.cadence_ms)
            .saturating_add(self.spec.tolerance_ms)
    }

    fn own_state(&self) -> OwnState {
        OwnState {
            failed: self.last_status == Some(Status::Failed),
            degraded: self.last_status == Some(Status::Degraded),
            stale: self.stale,
            lagging: self.last_drift_ms.is_some_and(|d| d > self.spec.tolerance_ms as f64),
            retired: self.retired_at.is_some(),
        }
    }
}

/// A system as shown: its definition, state, risk and neighbours.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemView {
    pub system: System,
    pub own_risk: f64,
    pub risk: f64,
    /// `None` once stale or retired.
    pub stale_at: Option<Time>,
    pub upstreams: Vec<(String, f64)>,
    pub downstreams: Vec<(String, f64)>,
    pub open_incidents: Vec<u64>,
}

/// One system of a blast radius.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    pub system: String,
    pub criticality: Criticality,
    /// The risk it would inherit if the system asked about failed (risk 1): the largest product
    /// of impact weights along a path.
    pub inherited: f64,
    /// Its propagated risk now.
    pub risk: f64,
}

/// Counts of the sync monitor for the server's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemsGauges {
    /// Active systems, fresh and stale.
    pub fresh: u64,
    pub stale: u64,
    pub open_incidents: u64,
    /// Events taken, and refused by the per-reporter rate limit, since the start.
    pub events_accepted: u64,
    pub events_rate_limited: u64,
}

/// What a call changed that the engine must act on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// Incident changes, in order, with the incident after the change.
    pub incidents: Vec<(Change, Incident)>,
    /// Freshness timers: set at the time, or cancel (`None`).
    pub timers: Vec<(Arc<str>, Option<Time>)>,
    /// Systems whose kept image changed (to keep: [`Systems::image`]).
    pub touched: Vec<Arc<str>>,
    /// Events taken: (system, number) (to keep: [`Systems::event`]).
    pub events: Vec<(Arc<str>, u64)>,
    /// Dependencies declared, reweighted or removed (to keep: [`Graph::weight`]).
    pub deps: Vec<(Arc<str>, Arc<str>)>,
    /// Systems whose trends are due to be kept (to keep: [`System::trend`]).
    pub trends: Vec<Arc<str>>,
}

impl Effects {
    fn extend(&mut self, other: Effects) {
        self.incidents.extend(other.incidents);
        self.timers.extend(other.timers);
        self.touched.extend(other.touched);
        self.events.extend(other.events);
        self.deps.extend(other.deps);
        self.trends.extend(other.trends);
    }
}

#[derive(Clone, Debug)]
struct Window {
    start: Time,
    count: u32,
}

/// The sync monitor's table: systems, dependencies, risks, incidents, rate limits.
#[derive(Clone, Debug, Default)]
pub struct Systems {
    systems: BTreeMap<Arc<str>, System>,
    /// Every system has an id in it from its registration on, edges or not.
    graph: Graph,
    risks: Risks,
    /// Each system's criticality by graph id, as in its spec: an assessment reads it for each
    /// system it finds at risk, by index rather than by name.
    criticality: Vec<Criticality>,
    incidents: Incidents,
    reporters: BTreeMap<String, Window>,
    /// Events refused by the per-reporter rate limit since the start.
    pub rate_limited: u64,
    /// Events accepted since the start.
    pub events_accepted: u64,
    /// Systems visited to assess incidents since the start (see [`Systems::work`]).
    assessed: u64,
}

impl Systems {
    // ----- registry -----

    /// Registers a system (the same definition again is a no-op; a retired name starts anew).
    pub fn register(&mut self, now: Time, spec: SystemSpec, settings: &SystemsSettings) -> Result<Effects, CoreError> {
        spec.validate()?;
        let key: Arc<str> = Arc::from(spec.name.as_str());
        let event_seq = self.systems.get(&key).map_or(0, |s| s.event_seq);
        match self.systems.get(&key) {
            Some(s) if s.retired_at.is_none() && s.spec == spec => return Ok(Effects::default()),
            Some(s) if s.retired_at.is_none() => return Err(SystemsError::SystemExists { name: spec.name }.into()),
            Some(_) => {}
            None if self.systems.len() >= settings.max_systems => {
                return Err(SystemsError::Limit {
                    what: "systems",
                    limit: settings.max_systems as u64,
                    hint: "retire and re-use systems, or raise systems.max_systems",
                }
                .into())
            }
            None => {}
        }
        let image = SystemImage {
            spec,
            registered_at: now,
            updated_at: now,
            retired_at: None,
            last_success: None,
            last_status: None,
            last_drift_ms: None,
            stale: false,
            event_seq,
            events_from: event_seq,
        };
        let system = System { image, events: VecDeque::new(), trend: Trend::default() };
        self.systems.insert(key.clone(), system);
        self.index(&key);
        let mut fx = Effects { touched: vec![key.clone()], ..Default::default() };
        self.refresh(now, &key, settings, &mut fx);
        Ok(fx)
    }

    /// Replaces the definition of an active system (its state and history stay).
    pub fn update(&mut self, now: Time, spec: SystemSpec, settings: &SystemsSettings) -> Result<Effects, CoreError> {
        spec.validate()?;
        let key = self.active(&spec.name)?;
        let s = self.systems.get_mut(&key).expect("active");
        s.spec = spec;
        s.updated_at = now;
        self.index(&key);
        let mut fx = Effects { touched: vec![key.clone()], ..Default::default() };
        self.refresh(now, &key, settings, &mut fx);
        Ok(fx)
    }

    /// Retires a system: its dependencies go, its open incidents are resolved (`retired`), its
    /// downstreams no longer inherit its risk. It stays listed as retired.
    pub fn retire(&mut self, now: Time, name: &str, settings: &SystemsSettings) -> Result<Effects, CoreError> {
        let key = self.active(name)?;
        let mut fx = Effects::default();
        for id in self.incidents.open_of(&key) {
            if let Ok(i) = self.incidents.resolve(id, now, "retired", settings.max_resolved_incidents) {
                fx.incidents.push((Change::Resolved, i));
            }
        }
        let s = self.systems.get_mut(&key).expect("active");
        s.retired_at = Some(now);
        s.stale = false;
        fx.touched.push(key.clone());
        let ups: Vec<Arc<str>> = self.graph.upstreams(&key).map(|(u, _)| u.clone()).collect();
        fx.deps.extend(ups.into_iter().map(|u| (u, key.clone())));
        fx.deps.extend(self.graph.downstreams(&key).map(|(d, _)| (key.clone(), d.clone())));
        let downs = self.graph.remove_system(&key);
        self.risks.forget(&key);
        for d in downs {
            self.risks.recompute(&self.graph, &d);
        }
        fx.timers.push((key, None));
        Ok(fx)
    }

    /// Gives system `key` its graph id if it has none (risk and the walks go by id, and a system
    /// may have its own risk before any edge) and records its criticality by that id.
    fn index(&mut self, key: &Arc<str>) {
        let criticality = self.systems[key].spec.criticality;
        let id = self.graph.intern(key) as usize;
        if self.criticality.len() <= id {
            self.criticality.resize(id + 1, Criticality::default());
        }
        self.criticality[id] = criticality;
    }

    /// The active system named `name`, or why not.
    fn active(&self, name: &str) -> Result<Arc<str>, SystemsError> {
        match self.systems.get_key_value(name) {
            None => Err(SystemsError::UnknownSystem { name: name.to_owned() }),
            Some((_, s)) if s.retired_at.is_some() => {
                Err(SystemsError::SystemRetired { name: name.to_owned(), at: s.retired_at.unwrap_or_default() })
            }
            Some((k, _)) => Ok(k.clone()),
        }
    }

    // ----- dependencies -----

    /// Declares `upstream → downstream` with an impact `weight` in (0, 1] (again: sets the weight).
    pub fn depend(
        &mut self,
        upstream: &str,
        downstream: &str,
        weight: f64,
        settings: &SystemsSettings,
    ) -> Result<Effects, CoreError> {
        let (up, down) = (self.active(upstream)?, self.active(downstream)?);
        if self.graph.weight(&up, &down).is_none() && self.graph.len() >= settings.max_dependencies {
            return Err(SystemsError::Limit {
                what: "dependencies",
                limit: settings.max_dependencies as u64,
                hint: "remove dependencies, or raise systems.max_dependencies",
            }
            .into());
        }
        self.graph.add(&up, &down, weight)?;
        self.risks.recompute(&self.graph, &down);
        Ok(Effects { deps: vec![(up, down)], ..Default::default() })
    }

    /// Removes `upstream → downstream`.
    pub fn undepend(&mut self, upstream: &str, downstream: &str) -> Result<Effects, CoreError> {
        if !self.graph.remove(upstream, downstream) {
            return Err(SystemsError::UnknownDependency {
                upstream: upstream.to_owned(),
                downstream: downstream.to_owned(),
            }
            .into());
        }
        let down = self.systems.get_key_value(downstream).map(|(k, _)| k.clone()).expect("edges join systems");
        let up = self.systems.get_key_value(upstream).map(|(k, _)| k.clone()).expect("edges join systems");
        self.risks.recompute(&self.graph, &down);
        Ok(Effects { deps: vec![(up, down)], ..Default::default() })
    }

    /// Every dependency as (upstream, downstream, weight), by upstream then downstream.
    pub fn dependencies(&self) -> Vec<(String, String, f64)> {
        self.systems
            .keys()
            .flat_map(|u| self.graph.downstreams(u).map(move |(d, w)| (u.to_string(), d.to_string(), w)))
            .collect()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    // ----- events -----

    /// Takes a sync event: validated whole (nothing kept of a refused one), rate-limited per
    /// reporter, normalised, kept; freshness, risk and incidents follow.
    pub fn report(&mut self, now: Time, report: &Report, settings: &SystemsSettings) -> Result<Effects, CoreError> {
        let key = self.active(&report.system)?;
        name::validate("reporter", &report.reporter)?;
        let Some(status) = report.status else {
            return Err(invalid("sync status", "missing; one of ok, degraded, failed"));
        };
        let at = if report.at == 0 { now } else { report.at };
        let (earliest, latest) =
            (now.saturating_sub(settings.event_time_past_ms), now.saturating_add(settings.event_time_future_ms));
        if at < earliest || at > latest {
            return Err(SystemsError::EventTime { at, server_time: now, earliest, latest }.into());
        }
        let measure = |field, q, m: &Option<Measure>| m.as_ref().map(|m| units::normalise(field, q, m)).transpose();
        let event = Event {
            at,
            received: now,
            reporter: report.reporter.clone(),
            status,
            drift_ms: measure("drift", Quantity::Duration, &report.drift)?,
            latency_ms: measure("latency", Quantity::Duration, &report.latency)?,
            records: measure("records", Quantity::Count, &report.records)?,
            bytes: measure("bytes", Quantity::Size, &report.bytes)?,
        };
        self.admit(now, &report.reporter, settings)?;
        Ok(self.apply(now, &key, event, settings))
    }

    /// Counts an event against its reporter's budget for the current second.
    fn admit(&mut self, now: Time, reporter: &str, settings: &SystemsSettings) -> Result<(), SystemsError> {
        if !self.reporters.contains_key(reporter) && self.reporters.len() >= settings.max_reporters {
            // Forget the reporters whose second is over; they start afresh when they come back.
            self.reporters.retain(|_, w| now < w.start.saturating_add(1000));
            if self.reporters.len() >= settings.max_reporters {
                return Err(SystemsError::Limit {
                    what: "reporters in one second",
                    limit: settings.max_reporters as u64,
                    hint: "report through fewer names, or raise systems.max_reporters",
                });
            }
        }
        let w = self.reporters.entry(reporter.to_owned()).or_insert(Window { start: now, count: 0 });
        if now >= w.start.saturating_add(1000) {
            *w = Window { start: now, count: 0 };
        }
        if w.count >= settings.max_events_per_reporter_per_sec {
            self.rate_limited += 1;
            return Err(SystemsError::RateLimited {
                reporter: reporter.to_owned(),
                limit: settings.max_events_per_reporter_per_sec,
            });
        }
        w.count += 1;
        Ok(())
    }

    /// Keeps a valid event and follows it through freshness, incidents and risk.
    fn apply(&mut self, now: Time, key: &Arc<str>, event: Event, settings: &SystemsSettings) -> Effects {
        self.events_accepted += 1;
        let s = self.systems.get_mut(key).expect("active");
        let status = event.status;
        s.last_status = Some(status);
        if event.drift_ms.is_some() {
            s.last_drift_ms = event.drift_ms;
        }
        if status.is_success() {
            s.last_success = Some(s.last_success.map_or(event.at, |l| l.max(event.at)));
        }
        let detail = format!("{} reported by '{}'", status.as_str(), event.reporter);
        s.event_seq += 1;
        s.trend.add(s.event_seq, event.at.min(now), event.latency_ms, event.drift_ms);
        // Kept every half of the kept events: those after it are folded in again on a restart.
        let trend_due = s.trend.due(settings.events_per_system as u64 / 2);
        s.events.push_back(event);
        while s.events.len() > settings.events_per_system.max(1) {
            s.events.pop_front();
        }
        let mut fx =
            Effects { touched: vec![key.clone()], events: vec![(key.clone(), s.event_seq)], ..Default::default() };
        if trend_due {
            s.trend.kept = s.trend.folded;
            fx.trends.push(key.clone());
        }
        if status.is_success() {
            if let Some(i) = self.incidents.recover(key, Cause::Failed, now, "auto", settings.max_resolved_incidents) {
                fx.incidents.push((Change::Resolved, i));
            }
        } else {
            let (change, i) = self.incidents.raise(key, Cause::Failed, now, detail);
            fx.incidents.push((change, i.clone()));
        }
        self.refresh(now, key, settings, &mut fx);
        fx
    }

    /// An agent lost its lease: a failed event of every active system it is tied to
    /// (`agent` is `namespace/agent`; in the default namespace, the bare id matches too).
    pub fn agent_lost(&mut self, now: Time, namespace: &str, agent: &str, settings: &SystemsSettings) -> Effects {
        let full = format!("{namespace}/{agent}");
        let bare = namespace == name::DEFAULT_NAMESPACE;
        let tied: Vec<Arc<str>> = self
            .systems
            .iter()
            .filter(|(_, s)| s.retired_at.is_none())
            .filter(|(_, s)| s.spec.agents.iter().any(|a| *a == full || (bare && a == agent)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut fx = Effects::default();
        for key in tied {
            let event = Event {
                at: now,
                received: now,
                reporter: format!("lease:{full}"),
                status: Status::Failed,
                drift_ms: None,
                latency_ms: None,
                records: None,
                bytes: None,
            };
            fx.extend(self.apply(now, &key, event, settings));
        }
        fx
    }

    // ----- freshness -----

    /// When `name` becomes stale, if it is active and not stale yet.
    pub fn stale_at(&self, name: &str) -> Option<Time> {
        self.systems.get(name).filter(|s| s.retired_at.is_none() && !s.stale).map(|s| s.stale_at())
    }

    /// The freshness timer of `name` fired at `now`: it becomes stale if its time has come.
    pub fn check(&mut self, now: Time, name: &str, settings: &SystemsSettings) -> Effects {
        let mut fx = Effects::default();
        if let Ok(key) = self.active(name) {
            self.refresh(now, &key, settings, &mut fx);
        }
        fx
    }

    /// Re-evaluates staleness (opening or resolving its incident, setting its timer) and own risk
    /// (propagating it) of `key`, then the severity of what it opened.
    fn refresh(&mut self, now: Time, key: &Arc<str>, settings: &SystemsSettings, fx: &mut Effects) {
        let s = self.systems.get_mut(key).expect("known");
        let stale = now >= s.stale_at();
        if stale != s.stale {
            s.stale = stale;
            fx.touched.push(key.clone());
            // Stale time counts from when it was due; freshness from when the success came.
            if stale {
                let due = s.stale_at();
                s.trend.went_stale(due);
            } else {
                s.trend.went_fresh(now);
            }
            s.trend.kept = s.trend.folded;
            fx.trends.push(key.clone());
            if stale {
                let detail = match s.last_success {
                    Some(t) => format!("no successful sync since {t} ms"),
                    None => format!("no successful sync since its registration at {} ms", s.registered_at),
                };
                let detail =
                    format!("{detail} (cadence {} ms + tolerance {} ms)", s.spec.cadence_ms, s.spec.tolerance_ms);
                let (change, i) = self.incidents.raise(key, Cause::Stale, now, detail);
                fx.incidents.push((change, i.clone()));
            } else if let Some(i) =
                self.incidents.recover(key, Cause::Stale, now, "auto", settings.max_resolved_incidents)
            {
                fx.incidents.push((Change::Resolved, i));
            }
        }
        let s = &self.systems[key];
        fx.timers.push((key.clone(), (!s.stale).then(|| s.stale_at())));
        let own = risk::own(s.own_state());
        if own != self.risks.own(key) {
            self.risks.set_own(&self.graph, key, own);
        }
        self.reassess_with(fx, settings);
    }

    // ----- incidents -----

    /// Severity (1 most severe .. 4), score and downstream systems at risk of an incident on
    /// `system`:
    ///
    /// * at risk: the systems downstream of it that inherit at least `at_risk_percent` % from it:
    ///   its own risk times the best product of weights along a path to them (what its blast
    ///   radius shows, scaled by its own risk). A system at risk only through another source is
    ///   that source's incident's, not this one's;
    /// * impact: the highest criticality among the system and those at risk; severity is
    ///   1 for critical, 2 high, 3 medium, 4 low, one step more severe (at most 1) when `widespread`
    ///   or more systems are at risk;
    /// * score: 10 × the system's criticality + the sum of the criticalities at risk (1 low ..
    ///   4 critical).
    ///
    /// The walk stops where what the system passes on falls below the threshold: it costs the
    /// systems at risk, not the whole cone.
    pub fn assess(&self, system: &str, settings: &SystemsSettings) -> (u8, u32, u32) {
        let Some(s) = self.systems.get(system) else { return (4, 0, 0) };
        let id = self.graph.id(system).expect("a registered system has a graph id");
        let threshold = f64::from(settings.at_risk_percent) / 100.0;
        let own = s.spec.criticality.rank();
        let (mut impact, mut score) = (own, 10 * own);
        let at_risk = Risks::passed_on(&self.graph, id, self.risks.own_of(id), threshold);
        for &(d, _) in &at_risk {
            let c = self.criticality[d as usize].rank();
            impact = impact.max(c);
            score += c;
        }
        let at_risk = u32::try_from(at_risk.len()).unwrap_or(u32::MAX);
        let mut severity = 5 - impact as u8;
        if at_risk >= settings.widespread && severity > 1 {
            severity -= 1;
        }
        (severity, score, at_risk)
    }

    /// The work done since the start, in systems visited: by risk propagation and by incident
    /// assessments. It is a measure of cost that does not depend on the machine, so that the
    /// engine can bound a turn's work and stay deterministic.
    pub fn work(&self) -> u64 {
        self.risks.visited + self.assessed
    }

    /// Assesses the incidents just opened (repeats keep their assessment: cheap under floods).
    fn reassess_with(&mut self, fx: &mut Effects, settings: &SystemsSettings) {
        for (change, i) in fx.incidents.iter_mut() {
            if *change != Change::Opened || i.resolved_at.is_some() {
                continue;
            }
            let (severity, score, at_risk) = self.assess(&i.system, settings);
            // The walk settles the system and those at risk.
            self.assessed += u64::from(at_risk) + 1;
            (i.severity, i.score, i.at_risk) = (severity, score, at_risk);
            if let Some(open) = self.incidents.get_open_mut(i.id) {
                (open.severity, open.score, open.at_risk) = (severity, score, at_risk);
            }
        }
    }

    /// The open incidents in priority order, each assessed now: severity (most severe first),
    /// then score (higher first), then the oldest first, then by id.
    pub fn incidents_by_priority(&self, settings: &SystemsSettings) -> Vec<Incident> {
        let mut open: Vec<Incident> = self
            .incidents
            .open()
            .map(|i| {
                let mut i = i.clone();
                (i.severity, i.score, i.at_risk) = self.assess(&i.system, settings);
                i
            })
            .collect();
        open.sort_by(|a, b| {
            (a.severity, std::cmp::Reverse(a.score), a.opened_at, a.id).cmp(&(
                b.severity,
                std::cmp::Reverse(b.score),
                b.opened_at,
                b.id,
            ))
        });
        open
    }

    /// The resolved incidents kept, oldest first.
    pub fn resolved_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.resolved()
    }

    /// Incident `id` (open or resolved and kept).
    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.incidents.get(id)
    }

    /// An operator acknowledges incident `id`.
    pub fn ack(&mut self, now: Time, id: u64, by: &str) -> Result<Effects, CoreError> {
        let i = self.incidents.ack(id, now, by)?.clone();
        Ok(Effects { incidents: vec![(Change::Acknowledged, i)], ..Default::default() })
    }

    /// An operator annotates incident `id`.
    pub fn note(&mut self, now: Time, id: u64, by: &str, text: &str) -> Result<Effects, CoreError> {
        let i = self.incidents.note(id, now, by, text)?.clone();
        Ok(Effects { incidents: vec![(Change::Annotated, i)], ..Default::default() })
    }

    /// An operator resolves incident `id`. If its cause persists, the next occurrence (a failed
    /// event; for staleness, the system going stale again after a success) opens a new one.
    pub fn resolve(&mut self, now: Time, id: u64, by: &str, settings: &SystemsSettings) -> Result<Effects, CoreError> {
        let i = self.incidents.resolve(id, now, by, settings.max_resolved_incidents)?;
        Ok(Effects { incidents: vec![(Change::Resolved, i)], ..Default::default() })
    }

    // ----- reading -----

    /// How many systems there are (retired included).
    pub fn len(&self) -> usize {
        self.systems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.systems.is_empty()
    }

    /// The kept image of `name`.
    pub fn image(&self, name: &str) -> Option<SystemImage> {
        self.systems.get(name).map(|s| s.image.clone())
    }

    /// Event number `seq` of `name`, while it is kept.
    pub fn event(&self, name: &str, seq: u64) -> Option<&Event> {
        let s = self.systems.get(name)?;
        let back = s.event_seq.checked_sub(seq)?;
        let len = s.events.len() as u64;
        (back < len).then(|| &s.events[(len - 1 - back) as usize])
    }

    /// Rebuilds the table from what was kept: systems with their events (each `(system, number,
    /// event)`, in number order), dependencies and incidents (open and resolved). Risks are
    /// recomputed; the freshness timers to set come back in the effects (a system whose time has
    /// passed goes stale when its timer fires, at once).
    pub fn restore(
        &mut self,
        systems: Vec<SystemImage>,
        events: Vec<(String, u64, Event)>,
        dependencies: Vec<(String, String, f64)>,
        incidents: Vec<Incident>,
        trends: Vec<(String, Trend)>,
        settings: &SystemsSettings,
    ) -> Result<Effects, CoreError> {
        let bad = |what: String| CoreError::invalid("stored data", what);
        *self = Systems::default();
        for image in systems {
            let key: Arc<str> = Arc::from(image.spec.name.as_str());
            self.systems.insert(key.clone(), System { image, events: VecDeque::new(), trend: Trend::default() });
            self.index(&key);
        }
        for (name, trend) in trends {
            if let Some(s) = self.systems.get_mut(name.as_str()) {
                s.trend = trend;
            }
        }
        for (name, seq, event) in events {
            let Some(s) = self.systems.get_mut(name.as_str()) else { continue };
            // Events taken after the trend was last kept are folded in again.
            if seq > s.trend.folded && seq > s.events_from {
                s.trend.add(seq, event.at, event.latency_ms, event.drift_ms);
            }
            if seq > s.events_from && seq <= s.event_seq {
                s.events.push_back(event);
                while s.events.len() > settings.events_per_system.max(1) {
                    s.events.pop_front();
                }
            }
        }
        for (up, down, weight) in dependencies {
            let (Ok(u), Ok(d)) = (self.active(&up), self.active(&down)) else {
                return Err(bad(format!("dependency '{up}' -> '{down}' names a system not active")));
            };
            self.graph.add(&u, &d, weight).map_err(|e| bad(format!("dependency '{up}' -> '{down}': {e}")))?;
        }
        self.incidents.restore(incidents);
        let mut fx = Effects::default();
        let names: Vec<Arc<str>> = self.systems.keys().cloned().collect();
        for key in names {
            let s = &self.systems[&key];
            if s.retired_at.is_some() {
                continue;
            }
            if !s.stale {
                fx.timers.push((key.clone(), Some(s.stale_at())));
            }
            let own = risk::own(s.own_state());
            if own != 0.0 {
                self.risks.set_own(&self.graph, &key, own);
            }
        }
        Ok(fx)
    }

    /// The system named `name`.
    pub fn get(&self, name: &str) -> Option<&System> {
        self.systems.get(name)
    }

    /// The system named `name`, as shown.
    pub fn view(&self, name: &str) -> Result<SystemView, CoreError> {
        let s = self.systems.get(name).ok_or_else(|| SystemsError::UnknownSystem { name: name.to_owned() })?;
        let pairs = |it: &mut dyn Iterator<Item = (&Arc<str>, f64)>| it.map(|(n, w)| (n.to_string(), w)).collect();
        Ok(SystemView {
            system: s.clone(),
            own_risk: self.risks.own(name),
            risk: self.risks.risk(name),
            stale_at: self.stale_at(name),
            upstreams: pairs(&mut self.graph.upstreams(name)),
            downstreams: pairs(&mut self.graph.downstreams(name)),
            open_incidents: self.incidents.open_of(name),
        })
    }

    /// The ids of the open incidents of `name`.
    pub fn open_incidents_of(&self, name: &str) -> Vec<u64> {
        self.incidents.open_of(name)
    }

    /// Every system's name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.systems.keys().map(|k| &**k)
    }

    /// The trends of `name` at `now`.
    pub fn trend(&self, name: &str, now: Time) -> Result<TrendView, CoreError> {
        let s = self.systems.get(name).ok_or_else(|| SystemsError::UnknownSystem { name: name.to_owned() })?;
        Ok(s.trend.view(now, s.registered_at))
    }

    /// The own risk and propagated risk of `name`.
    pub fn risk(&self, name: &str) -> (f64, f64) {
        (self.risks.own(name), self.risks.risk(name))
    }

    /// What the server's metrics show of the sync monitor now.
    pub fn gauges(&self) -> SystemsGauges {
        let active = self.systems.values().filter(|s| s.retired_at.is_none());
        let (mut fresh, mut stale) = (0, 0);
        for s in active {
            if s.stale {
                stale += 1;
            } else {
                fresh += 1;
            }
        }
        SystemsGauges {
            fresh,
            stale,
            open_incidents: self.incidents.open().count() as u64,
            events_accepted: self.events_accepted,
            events_rate_limited: self.rate_limited,
        }
    }

    /// Systems visited by risk propagation since the start.
    pub fn propagation_visits(&self) -> u64 {
        self.risks.visited
    }

    /// What depends on `name`, transitively, in topological order, with the risk each would
    /// inherit if it failed and its risk now.
    pub fn blast_radius(&self, name: &str) -> Result<Vec<Impact>, CoreError> {
        let key = self.systems.get_key_value(name).map(|(k, _)| k.clone());
        let key = key.ok_or_else(|| SystemsError::UnknownSystem { name: name.to_owned() })?;
        Ok(Risks::inherited(&self.graph, &key, 1.0)
            .into_iter()
            .map(|(d, inherited)| Impact {
                criticality: self.systems[&d].spec.criticality,
                risk: self.risks.risk(&d),
                system: d.to_string(),
                inherited,
            })
            .collect())
    }
}

impl From<SystemsError> for CoreError {
    fn from(e: SystemsError) -> Self {
        CoreError::Systems(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cadence_ms: u64, tolerance_ms: u64, criticality: Criticality) -> SystemSpec {
        SystemSpec { name: name.into(), cadence_ms, tolerance_ms, criticality, ..Default::default() }
    }

    fn ok(system: &str) -> Report {
        Report { system: system.into(), reporter: "r".into(), status: Some(Status::Ok), ..Default::default() }
    }

    #[test]
    fn registering_validates_and_is_idempotent() {
        let set = SystemsSettings::default();
        let mut t = Systems::default();
        let fx = t.register(0, spec("feed", 1000, 500, Criticality::High), &set).unwrap();
        assert_eq!(fx.timers, vec![(Arc::from("feed"), Some(1500))]);
        assert_eq!(t.register(5, spec("feed", 1000, 500, Criticality::High), &set).unwrap(), Effects::default());
        let e = t.register(5, spec("feed", 2000, 500, Criticality::High), &set).unwrap_err();
        assert_eq!(e.reason(), Reason::SystemExists);
        assert_eq!(
            t.register(0, spec("x", 0, 0, Criticality::Low), &set).unwrap_err().reason(),
            Reason::InvalidArgument
        );
        assert_eq!(
            t.register(0, spec("a b", 1, 0, Criticality::Low), &set).unwrap_err().reason(),
            Reason::InvalidArgument
        );
        let small = SystemsSettings { max_systems: 1, ..Default::default() };
        assert_eq!(t.register(0, spec("y", 1, 0, Criticality::Low), &small).unwrap_err().reason(), Reason::Limit);
    }

    #[test]
    fn settings_that_make_no_sense_are_refused_by_key() {
        assert_eq!(SystemsSettings::default().validate(), Ok(()));
        let zero = SystemsSettings { events_per_system: 0, ..Default::default() };
        assert_eq!(zero.validate().unwrap_err(), "events_per_system must be at least 1");
        let over = SystemsSettings { at_risk_percent: 101, ..Default::default() };
        assert!(over.validate().unwrap_err().contains("at_risk_percent"));
    }

    #[test]
    fn a_refused_event_keeps_nothing() {
        let set = SystemsSettings::default();
        let mut t = Systems::default();
        t.register(0, spec("feed", 1000, 0, Criticality::Low), &set).unwrap();
        let bad = Report { latency: Some(Measure::new(1.0, "parsecs")), ..ok("feed") };
        assert_eq!(t.report(10, &bad, &set).unwrap_err().reason(), Reason::UnknownUnit);
        let bad = Report { drift: Some(Measure::new(-1.0, "s")), ..ok("feed") };
        assert_eq!(t.report(10, &bad, &set).unwrap_err().reason(), Reason::BadMeasurement);
        assert!(t.get("feed").unwrap().events.is_empty());
        assert_eq!(t.get("feed").unwrap().last_success, None);
        assert_eq!(t.events_accepted, 0);
    }

    #[test]
    fn the_rate_limit_counts_per_reporter_per_second() {
        let set = SystemsSettings { max_events_per_reporter_per_sec: 2, ..Default::default() };
        let mut t = Systems::default();
        t.register(0, spec("feed", 1000, 0, Criticality::Low), &set).unwrap();
        t.report(10, &ok("feed"), &set).unwrap();
        t.report(20, &ok("feed"), &set).unwrap();
        let e = t.report(30, &ok("feed"), &set).unwrap_err();
        assert_eq!(e.reason(), Reason::EventRateLimited);
        assert_eq!(e.code(), ErrorCode::ResourceExhausted);
        // Another reporter has its own budget; the first gets a new one a second later.
        t.report(30, &Report { reporter: "other".into(), ..ok("feed") }, &set).unwrap();
        t.report(1010, &ok("feed"), &set).unwrap();
        assert_eq!((t.rate_limited, t.events_accepted), (1, 4));
    }
}
