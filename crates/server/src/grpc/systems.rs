//! The `Systems` service: the sync monitor (see `lockstep_core::systems`). Every change is an
//! engine input carried out on its clock and audited under the caller's name; reads are queries
//! on the engine. The monitor is the whole server's: reading it and reporting events need a
//! caller of every namespace; changing the registry and acting on incidents are operators'
//! actions (the admin token when the server has one).

use lockstep_core::io::{SystemsCall, SystemsDone};
use lockstep_core::systems::Systems as Table;
use lockstep_core::{CoreError, Engine, Time};
use lockstep_proto::server::systems_server::Systems;
use lockstep_proto::systems::{self as wire, SystemState};
use lockstep_proto::{convert, v1};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::Service;
use crate::admin::actor;
use crate::driver::{shutting_down, Command};

/// Incidents are listed by position (priority, then the resolved ones): a page token is the
/// last position served, zero-padded so that tokens sort as text.
fn position(i: usize) -> String {
    format!("{i:010}")
}

/// What the monitor knows of `name` now.
fn state<'a>(t: &'a Table, name: &str) -> Option<SystemState<'a>> {
    let system = t.get(name)?;
    let (own_risk, risk) = t.risk(name);
    Some(SystemState { system, own_risk, risk, stale_at: t.stale_at(name), open_incidents: t.open_incidents_of(name) })
}

impl Service {
    /// Carries out `call` as `actor` on the engine's turn; its outcome once committed.
    async fn systems_call(&self, actor: String, call: SystemsCall) -> Result<SystemsDone, Status> {
        let (done, answer) = oneshot::channel();
        self.engine.send(Command::Systems { actor, call, done }).await?;
        let done = answer.await.map_err(|_| shutting_down())?.map_err(|e| convert::status(&e))?;
        Ok(done)
    }

    /// An operator's change to the registry or the dependencies.
    async fn change<T>(
        &self,
        request: Request<T>,
        rpc: &str,
        call: impl FnOnce(T) -> Result<SystemsCall, CoreError>,
    ) -> Result<Response<v1::SystemsAck>, Status> {
        self.gate.admin(&request, rpc, None)?;
        let actor = actor(&request);
        let call = call(request.into_inner()).map_err(|e| convert::status(&e))?;
        let done = self.systems_call(actor, call).await?;
        Ok(Response::new(v1::SystemsAck {
            changes: wire::changes_to_wire(&done.changes, done.at),
            detail: done.detail,
        }))
    }

    /// An operator's action on an incident; the incident as it is after.
    async fn on_incident<T>(
        &self,
        request: Request<T>,
        rpc: &str,
        call: impl FnOnce(T) -> SystemsCall,
    ) -> Result<Response<v1::IncidentInfo>, Status> {
        self.gate.admin(&request, rpc, None)?;
        let actor = actor(&request);
        let done = self.systems_call(actor, call(request.into_inner())).await?;
        let incident = done.incident.ok_or_else(|| Status::internal("the engine acted on no incident"))?;
        Ok(Response::new(wire::incident_to_wire(&incident, done.at)))
    }

    /// One page of a listing in an order of the monitor's own (priority, topological): `items`
    /// read on the engine's turn, each converted with the time (Unix ms), keyed by position.
    async fn in_order<T: 'static, M: prost::Message + Send + 'static>(
        &self,
        page_token: String,
        page_size: u32,
        items: impl FnOnce(&Engine, Time) -> Result<Vec<T>, CoreError> + Send + 'static,
        convert: impl Fn(&T, Time) -> M + Send + 'static,
    ) -> Result<(Vec<M>, String), Status> {
        let budget = self.page_bytes();
        self.engine
            .query(read(move |e, now| {
                let keyed: Vec<(String, T)> =
                    items(e, now)?.into_iter().enumerate().map(|(i, x)| (position(i), x)).collect();
                Ok(crate::page::page(&keyed, |(k, _)| k, &page_token, page_size, budget, |(_, x)| convert(x, now)))
            }))
            .await
    }
}

fn read<T: Send + 'static>(
    f: impl FnOnce(&Engine, Time) -> Result<T, CoreError> + Send + 'static,
) -> impl FnOnce(&Engine, Time) -> Result<T, CoreError> + Send + 'static {
    move |e, now| f(e, e.systems_now(now))
}

#[tonic::async_trait]
impl Systems for Service {
    async fn register(&self, request: Request<v1::SystemSpec>) -> Result<Response<v1::SystemsAck>, Status> {
        self.change(request, "RegisterSystem", |s| Ok(SystemsCall::Register(wire::spec(s)?))).await
    }

    async fn update(&self, request: Request<v1::SystemSpec>) -> Result<Response<v1::SystemsAck>, Status> {
        self.change(request, "UpdateSystem", |s| Ok(SystemsCall::Update(wire::spec(s)?))).await
    }

    async fn retire(&self, request: Request<v1::SystemRef>) -> Result<Response<v1::SystemsAck>, Status> {
        self.change(request, "RetireSystem", |r| Ok(SystemsCall::Retire { name: r.name })).await
    }

    async fn depend(&self, request: Request<v1::DependencyRequest>) -> Result<Response<v1::SystemsAck>, Status> {
        self.change(request, "AddDependency", |d| {
            Ok(SystemsCall::Depend { upstream: d.upstream, downstream: d.downstream, weight: d.weight })
        })
        .await
    }

    async fn undepend(&self, request: Request<v1::DependencyRequest>) -> Result<Response<v1::SystemsAck>, Status> {
        self.change(request, "RemoveDependency", |d| {
            Ok(SystemsCall::Undepend { upstream: d.upstream, downstream: d.downstream })
        })
        .await
    }

    /// Open to any caller of every namespace: systems (or agents on their behalf) report.
    async fn report(&self, request: Request<v1::SyncEventReport>) -> Result<Response<v1::SystemsAck>, Status> {
        self.gate.every_namespace(&request)?;
        let actor = actor(&request);
        let report = wire::report(request.into_inner()).map_err(|e| convert::status(&e))?;
        let done = self.systems_call(actor, SystemsCall::Report(report)).await?;
        Ok(Response::new(v1::SystemsAck {
            changes: wire::changes_to_wire(&done.changes, done.at),
            detail: done.detail,
        }))
    }

    async fn list(&self, request: Request<v1::SystemListRequest>) -> Result<Response<v1::SystemListResponse>, Status> {
        self.gate.every_namespace(&request)?;
        let r = request.into_inner();
        let budget = self.page_bytes();
        let (systems, next_page_token) = self
            .engine
            .query(read(move |e, _| {
                let t = e.systems();
                let names: Vec<&str> = t
                    .names()
                    .filter(|n| r.include_retired || t.get(n).is_some_and(|s| s.retired_at.is_none()))
                    .collect();
                Ok(crate::page::page(
                    &names,
                    |n| n,
                    &r.page_token,
                    r.page_size,
                    budget,
                    |n| wire::info(&state(t, n).expect("listed by the table")),
                ))
            }))
            .await?;
        Ok(Response::new(v1::SystemListResponse { systems, next_page_token }))
    }

    async fn show(&self, request: Request<v1::SystemRef>) -> Result<Response<v1::SystemDetail>, Status> {
        self.gate.every_namespace(&request)?;
        let name = request.into_inner().name;
        let detail = self
            .engine
            .query(read(move |e, now| {
                let t = e.systems();
                let view = t.view(&name)?;
                let trends = t.trend(&name, now)?;
                let s = state(t, &name).expect("shown by the table");
                let deps = |pairs: &[(String, f64)], up: bool| {
                    pairs
                        .iter()
                        .map(|(other, weight)| {
                            let (upstream, downstream) =
                                if up { (other.clone(), name.clone()) } else { (name.clone(), other.clone()) };
                            v1::Dependency { upstream, downstream, weight: *weight }
                        })
                        .collect()
                };
                Ok(v1::SystemDetail {
                    system: Some(wire::info(&s)),
                    upstreams: deps(&view.upstreams, true),
                    downstreams: deps(&view.downstreams, false),
                    events: view.system.events.iter().map(wire::event_to_wire).collect(),
                    trends: Some(wire::trends_to_wire(&trends)),
                })
            }))
            .await?;
        Ok(Response::new(detail))
    }

    async fn blast_radius(
        &self,
        request: Request<v1::BlastRadiusRequest>,
    ) -> Result<Response<v1::BlastRadiusResponse>, Status> {
        self.gate.every_namespace(&request)?;
        let v1::BlastRadiusRequest { name, page_token, page_size } = request.into_inner();
        let (impacts, next_page_token) = self
            .in_order(
                page_token,
                page_size,
                move |e, _| e.systems().blast_radius(&name),
                |i, _| wire::impact_to_wire(i),
            )
            .await?;
        Ok(Response::new(v1::BlastRadiusResponse { impacts, next_page_token }))
    }

    async fn dependencies(
        &self,
        request: Request<v1::DependenciesRequest>,
    ) -> Result<Response<v1::DependenciesResponse>, Status> {
        self.gate.every_namespace(&request)?;
        let v1::DependenciesRequest { page_token, page_size } = request.into_inner();
        let (dependencies, next_page_token) = self
            .in_order(
                page_token,
                page_size,
                |e, _| Ok(e.systems().dependencies()),
                |(u, d, w), _| v1::Dependency { upstream: u.clone(), downstream: d.clone(), weight: *w },
            )
            .await?;
        Ok(Response::new(v1::DependenciesResponse { dependencies, next_page_token }))
    }

    async fn incidents(
        &self,
        request: Request<v1::IncidentsRequest>,
    ) -> Result<Response<v1::IncidentsResponse>, Status> {
        self.gate.every_namespace(&request)?;
        let v1::IncidentsRequest { include_resolved, page_token, page_size } = request.into_inner();
        let all = move |e: &Engine, _| {
            let t = e.systems();
            let mut all = t.incidents_by_priority(&e.config().systems);
            if include_resolved {
                all.extend(t.resolved_incidents().cloned());
            }
            Ok(all)
        };
        let (incidents, next_page_token) = self.in_order(page_token, page_size, all, wire::incident_to_wire).await?;
        Ok(Response::new(v1::IncidentsResponse { incidents, next_page_token }))
    }

    async fn ack_incident(&self, request: Request<v1::IncidentRef>) -> Result<Response<v1::IncidentInfo>, Status> {
        self.on_incident(request, "AckIncident", |r| SystemsCall::Ack { id: r.id }).await
    }

    async fn note_incident(
        &self,
        request: Request<v1::IncidentNoteRequest>,
    ) -> Result<Response<v1::IncidentInfo>, Status> {
        self.on_incident(request, "NoteIncident", |r| SystemsCall::Note { id: r.id, text: r.text }).await
    }

    async fn resolve_incident(&self, request: Request<v1::IncidentRef>) -> Result<Response<v1::IncidentInfo>, Status> {
        self.on_incident(request, "ResolveIncident", |r| SystemsCall::Resolve { id: r.id }).await
    }
}
