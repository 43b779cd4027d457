//! The server's sync monitor (see the "Sync monitor" section of PROTOCOL.md): the systems its
//! users keep in sync, the dependencies between them, the sync events they report, their
//! freshness and risk, and the incidents on them. Reading and reporting are open to any caller of
//! every namespace; changing the registry and the dependencies and acting on incidents need the
//! admin token when the server has one, and are audited under the caller's name.
//!
//! Listings follow the server's pages and return everything. Times are Unix milliseconds.

use serde::Serialize;

use crate::{every_page, Channel, Error};
pub use lockstep_core::systems::trend;
pub use lockstep_core::systems::{
    Cause, Change, Criticality, Direction, Event, Impact, Incident, Kind, Measure, Note, Quantity, Report, Status,
    SystemSpec, TrendView,
};
use lockstep_proto::systems as wire;
use lockstep_proto::v1;
use lockstep_proto::v1::systems_client::SystemsClient as Grpc;

/// A handle on a server's `Systems` service.
#[derive(Clone)]
pub struct SystemsClient {
    grpc: Grpc<Channel>,
}

/// A system as the monitor knows it now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemStatus {
    pub spec: SystemSpec,
    pub registered_at: u64,
    pub updated_at: u64,
    pub retired_at: Option<u64>,
    /// When its last successful sync happened.
    pub last_success: Option<u64>,
    pub last_status: Option<Status>,
    pub last_drift_ms: Option<f64>,
    pub stale: bool,
    /// When it goes stale without a success (`None` once stale or retired).
    pub stale_at: Option<u64>,
    /// Its own risk: failed 1.0, stale 0.8, degraded 0.5, drift beyond tolerance 0.3.
    pub own_risk: f64,
    /// Its propagated risk: the larger of its own and each upstream's times the impact weight.
    pub risk: f64,
    pub open_incidents: Vec<u64>,
}

/// One dependency: `downstream` is fed by `upstream`, inheriting `weight` × its risk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dependency {
    pub upstream: String,
    pub downstream: String,
    pub weight: f64,
}

/// One system with its neighbours and kept events.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SystemDetail {
    pub status: SystemStatus,
    pub upstreams: Vec<Dependency>,
    pub downstreams: Vec<Dependency>,
    /// The kept events, oldest first, in canonical units (ms, records, bytes).
    pub events: Vec<Event>,
    /// Rolling quantiles of latency and drift and freshness-SLO attainment over the last hour
    /// and the last day, and the direction.
    pub trends: TrendView,
}

/// What a change or a report did: in words, and the incidents it opened, repeated or resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemsAck {
    pub detail: String,
    pub changes: Vec<(Change, Incident)>,
}

fn invalid(what: &str, e: lockstep_core::CoreError) -> Error {
    Error::Input(format!("the server's {what}: {e}"))
}

fn some(t: u64) -> Option<u64> {
    (t != 0).then_some(t)
}

fn status(i: v1::SystemInfo) -> Result<SystemStatus, Error> {
    let spec = wire::spec(i.spec.unwrap_or_default()).map_err(|e| invalid("system", e))?;
    let last_status = match i.last_status.as_str() {
        "" => None,
        s => Some(Status::parse(s).map_err(|e| invalid("system", e))?),
    };
    Ok(SystemStatus {
        spec,
        registered_at: i.registered_at,
        updated_at: i.updated_at,
        retired_at: some(i.retired_at),
        last_success: some(i.last_success),
        last_status,
        last_drift_ms: i.last_drift_ms,
        stale: i.stale,
        stale_at: some(i.stale_at),
        own_risk: i.own_risk,
        risk: i.risk,
        open_incidents: i.open_incidents,
    })
}

fn dependency(d: v1::Dependency) -> Dependency {
    Dependency { upstream: d.upstream, downstream: d.downstream, weight: d.weight }
}

fn ack(a: v1::SystemsAck) -> Result<SystemsAck, Error> {
    Ok(SystemsAck { detail: a.detail, changes: wire::changes(a.changes).map_err(|e| invalid("incident change", e))? })
}

fn incident(i: v1::IncidentInfo) -> Result<Incident, Error> {
    wire::incident(i).map_err(|e| invalid("incident", e))
}

impl SystemsClient {
    /// On `channel`, which carries the caller's credentials (see `Client::systems`).
    pub(crate) fn new(channel: Channel) -> Self {
        SystemsClient { grpc: Grpc::new(channel) }
    }

    /// Registers a system (the same definition again is a no-op; another definition under a
    /// registered name is `SYSTEM_EXISTS`).
    pub async fn register(&self, spec: &SystemSpec) -> Result<SystemsAck, Error> {
        ack(self.grpc.clone().register(wire::spec_to_wire(spec)).await?.into_inner())
    }

    /// Replaces the definition of an active system, keeping its state and events.
    pub async fn update(&self, spec: &SystemSpec) -> Result<SystemsAck, Error> {
        ack(self.grpc.clone().update(wire::spec_to_wire(spec)).await?.into_inner())
    }

    /// Retires a system: its open incidents are resolved and its dependencies removed.
    pub async fn retire(&self, name: &str) -> Result<SystemsAck, Error> {
        ack(self.grpc.clone().retire(v1::SystemRef { name: name.into() }).await?.into_inner())
    }

    /// Declares that `downstream` is fed by `upstream`, with an impact weight in (0, 1] (again:
    /// sets the weight). An edge closing a cycle is `DEPENDENCY_CYCLE`, naming the cycle.
    pub async fn depend(&self, upstream: &str, downstream: &str, weight: f64) -> Result<SystemsAck, Error> {
        let r = v1::DependencyRequest { upstream: upstream.into(), downstream: downstream.into(), weight };
        ack(self.grpc.clone().depend(r).await?.into_inner())
    }

    /// Removes a dependency.
    pub async fn undepend(&self, upstream: &str, downstream: &str) -> Result<SystemsAck, Error> {
        let r = v1::DependencyRequest { upstream: upstream.into(), downstream: downstream.into(), weight: 0.0 };
        ack(self.grpc.clone().undepend(r).await?.into_inner())
    }

    /// Reports a sync event, in the reporter's units.
    pub async fn report(&self, report: &Report) -> Result<SystemsAck, Error> {
        ack(self.grpc.clone().report(wire::report_to_wire(report)).await?.into_inner())
    }

    /// Every system (the retired ones too if asked), by name.
    pub async fn list(&self, include_retired: bool) -> Result<Vec<SystemStatus>, Error> {
        let infos = every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::SystemListRequest { include_retired, page_token, page_size: 0 };
            async move {
                let page = grpc.list(req).await?.into_inner();
                Ok((page.systems, page.next_page_token))
            }
        })
        .await?;
        infos.into_iter().map(status).collect()
    }

    /// One system with its neighbours and kept events.
    pub async fn show(&self, name: &str) -> Result<SystemDetail, Error> {
        let d = self.grpc.clone().show(v1::SystemRef { name: name.into() }).await?.into_inner();
        Ok(SystemDetail {
            status: status(d.system.unwrap_or_default())?,
            upstreams: d.upstreams.into_iter().map(dependency).collect(),
            downstreams: d.downstreams.into_iter().map(dependency).collect(),
            events: d.events.into_iter().map(wire::event).collect::<Result<_, _>>().map_err(|e| invalid("event", e))?,
            trends: wire::trends(d.trends.unwrap_or_default()).map_err(|e| invalid("trends", e))?,
        })
    }

    /// What depends on `name`, transitively, in topological order, with the risk each would
    /// inherit if it failed and its risk now.
    pub async fn blast_radius(&self, name: &str) -> Result<Vec<Impact>, Error> {
        let impacts = every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::BlastRadiusRequest { name: name.into(), page_token, page_size: 0 };
            async move {
                let page = grpc.blast_radius(req).await?.into_inner();
                Ok((page.impacts, page.next_page_token))
            }
        })
        .await?;
        impacts.into_iter().map(|i| wire::impact(i).map_err(|e| invalid("blast radius", e))).collect()
    }

    /// Every dependency, by upstream then downstream.
    pub async fn dependencies(&self) -> Result<Vec<Dependency>, Error> {
        let deps = every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::DependenciesRequest { page_token, page_size: 0 };
            async move {
                let page = grpc.dependencies(req).await?.into_inner();
                Ok((page.dependencies, page.next_page_token))
            }
        })
        .await?;
        Ok(deps.into_iter().map(dependency).collect())
    }

    /// The open incidents in priority order (severity, then score, then age), each assessed
    /// now; then, if asked, the kept resolved ones, oldest first.
    pub async fn incidents(&self, include_resolved: bool) -> Result<Vec<Incident>, Error> {
        let all = every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::IncidentsRequest { include_resolved, page_token, page_size: 0 };
            async move {
                let page = grpc.incidents(req).await?.into_inner();
                Ok((page.incidents, page.next_page_token))
            }
        })
        .await?;
        all.into_iter().map(incident).collect()
    }

    /// Acknowledges an open incident (again: the latest counts).
    pub async fn ack(&self, id: u64) -> Result<Incident, Error> {
        incident(self.grpc.clone().ack_incident(v1::IncidentRef { id }).await?.into_inner())
    }

    /// Annotates an open incident (1 to 1024 bytes; the last 32 notes are kept).
    pub async fn note(&self, id: u64, text: &str) -> Result<Incident, Error> {
        let r = v1::IncidentNoteRequest { id, text: text.into() };
        incident(self.grpc.clone().note_incident(r).await?.into_inner())
    }

    /// Resolves an open incident by hand; if its cause persists, its next occurrence opens a new
    /// one.
    pub async fn resolve(&self, id: u64) -> Result<Incident, Error> {
        incident(self.grpc.clone().resolve_incident(v1::IncidentRef { id }).await?.into_inner())
    }
}
