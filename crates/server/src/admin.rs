//! The operators' gRPC service (`Admin`): pause and resume agents, stop and resume everyone, send
//! commands to agents and wait for their answers, read status and the audit log. Like the agents'
//! service it holds no state: every action is an engine input ([`AdminAction`]) answered once its
//! turn is committed, every read a query on the engine. Each call is checked by
//! [`Gate::admin`](crate::auth::Gate::admin) first: the admin token, or a token allowing the action.

use std::sync::Arc;

use lockstep_core::command::CommandOutcome;
use lockstep_core::{AdminAction, AdminOutcome, Reason};
use lockstep_proto::convert;
use lockstep_proto::reason;
use lockstep_proto::server::admin_server::Admin;
use lockstep_proto::v1;
use subtle::ConstantTimeEq;
use tonic::Code;
use tonic::{Request, Response, Status};

use crate::auth::{Access, Gate};
use crate::backup::{BackupDir, Backups};
use crate::driver::{shutting_down, unexpected, Command, EngineHandle};

/// Metadata key naming the operator, recorded in the audit log.
pub const ACTOR_HEADER: &str = "x-lockstep-actor";

/// The actor recorded when a call names none.
const DEFAULT_ACTOR: &str = "operator";

/// Audit entries returned when a request asks for none in particular.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// The `Admin` service.
#[derive(Clone)]
pub struct AdminService {
    engine: EngineHandle,
    /// This server's backups (one at a time).
    backups: Backups,
    /// Where backups may be written.
    backup_dir: BackupDir,
    /// Who may call (see `crate::auth`): each action is checked for its namespace, or for the
    /// whole server.
    gate: Gate,
}

impl AdminService {
    pub fn new(engine: EngineHandle, backup_dir: BackupDir, gate: Gate) -> Self {
        AdminService { engine, backups: Backups::default(), backup_dir, gate }
    }

    /// Carries out an action that answers in words.
    async fn words(&self, actor: String, action: AdminAction) -> Result<Response<v1::AdminAck>, Status> {
        match self.engine.admin(actor, action).await? {
            AdminOutcome::Done(detail) => Ok(ack(detail)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Who is calling, for the audit log: the subject of its token when it presented one (it cannot
/// be claimed otherwise), else as the caller says (a valid name).
pub fn actor<T>(request: &Request<T>) -> String {
    if let Access::Principal(p) = Access::of(request) {
        let sub = &p.claims().sub;
        if lockstep_core::name::validate("actor", sub).is_ok() {
            return sub.clone();
        }
    }
    request
        .metadata()
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|a| lockstep_core::name::validate("actor", a).is_ok())
        .unwrap_or(DEFAULT_ACTOR)
        .to_owned()
}

/// The server's admin token, if it has one: operators' calls must present it as
/// `authorization: Bearer <token>` (compared in constant time). Checked on every `Admin` call by
/// [`Gate::admin`](crate::auth::Gate::admin), and by the agents' service on the operators' actions it serves
/// (`ForceCompleteSync`, `CleanupSyncPoints`).
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<[u8]>>);

impl AdminToken {
    /// `None` admits every call. (An empty token is refused when the server starts.)
    pub fn new(token: Option<String>) -> Self {
        AdminToken(token.map(|t| t.into_bytes().into()))
    }

    /// Whether `presented` is this token (compared in constant time); never, when none is set.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_ref().is_some_and(|expected| bool::from(presented.as_bytes().ct_eq(expected)))
    }

    /// Admits a call with these headers, or says why not.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(expected) = &self.0 else { return Ok(()) };
        let Some(value) = metadata.get("authorization") else {
            return Err(reason::status(
                Code::Unauthenticated,
                Reason::AdminTokenMissing,
                "this server requires an admin token: send `authorization: Bearer <token>` (`lockstep <command> --token T`, or LOCKSTEP_ADMIN_TOKEN)",
                [],
            ));
        };
        let presented = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(reason::status(
                Code::PermissionDenied,
                Reason::AdminTokenWrong,
                "the admin token presented is not this server's",
                [],
            ))
        }
    }
}

fn ack(detail: String) -> Response<v1::AdminAck> {
    Response::new(v1::AdminAck { detail })
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, request: Request<v1::StatusRequest>) -> Result<Response<v1::StatusResponse>, Status> {
        self.gate.admin(&request, "Status", None)?;
        let status = self
            .engine
            .query(|e, now| {
                let info = e.info();
                let control = e.control();
                let stop = control.emergency();
                Ok(v1::StatusResponse {
                    agents: info.agents as u64,
                    agents_by_status: e.agents_by_status().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    paused: control
                        .paused_agents()
                        .map(|(ns, a)| v1::AgentRef { namespace: ns.to_owned(), agent_id: a.to_owned() })
                        .collect(),
                    emergency_stop: stop.is_some(),
                    emergency_actor: stop.map(|s| s.actor.clone()).unwrap_or_default(),
                    emergency_reason: stop.map(|s| s.reason.clone()).unwrap_or_default(),
                    emergency_since_ms: stop.map_or(0, |s| s.since),
                    pending_commands: control.pending().count() as u64,
                    published: info.counters.published,
                    delivered: info.counters.routed,
                    dropped: info.counters.dropped,
                    now_ms: now,
                })
            })
            .await?;
        Ok(Response::new(status))
    }

    async fn health(&self, request: Request<v1::HealthRequest>) -> Result<Response<v1::HealthResponse>, Status> {
        self.gate.admin(&request, "Health", None)?;
        let health = self.engine.query(|e, now| Ok(convert::health(&e.health(now), now))).await?;
        Ok(Response::new(health))
    }

    async fn pause_agent(&self, request: Request<v1::AgentRef>) -> Result<Response<v1::AdminAck>, Status> {
        self.gate.admin(&request, "PauseAgent", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let r = request.into_inner();
        self.words(actor, AdminAction::PauseAgent { namespace: r.namespace, agent_id: r.agent_id }).await
    }

    async fn resume_agent(&self, request: Request<v1::AgentRef>) -> Result<Response<v1::AdminAck>, Status> {
        self.gate.admin(&request, "ResumeAgent", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let r = request.into_inner();
        self.words(actor, AdminAction::ResumeAgent { namespace: r.namespace, agent_id: r.agent_id }).await
    }

    async fn restart_agent(&self, request: Request<v1::AgentRef>) -> Result<Response<v1::AdminAck>, Status> {
        self.gate.admin(&request, "RestartAgent", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let r = request.into_inner();
        self.words(actor, AdminAction::RestartAgent { namespace: r.namespace, agent_id: r.agent_id }).await
    }

    async fn emergency_stop(
        &self,
        request: Request<v1::EmergencyStopRequest>,
    ) -> Result<Response<v1::AdminAck>, Status> {
        self.gate.admin(&request, "EmergencyStop", None)?;
        let actor = actor(&request);
        let reason = request.into_inner().reason;
        self.words(actor, AdminAction::EmergencyStop { reason }).await
    }

    async fn resume_all(&self, request: Request<v1::ResumeAllRequest>) -> Result<Response<v1::AdminAck>, Status> {
        self.gate.admin(&request, "ResumeAll", None)?;
        let actor = actor(&request);
        self.words(actor, AdminAction::ResumeAll).await
    }

    async fn send_command(
        &self,
        request: Request<v1::SendCommandRequest>,
    ) -> Result<Response<v1::SendCommandResponse>, Status> {
        self.gate.admin(&request, "SendCommand", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let r = request.into_inner();
        let (agent, command) = (r.agent_id.clone(), r.command.clone());
        let action = AdminAction::SendCommand {
            namespace: r.namespace,
            agent_id: r.agent_id,
            command: r.command,
            params_json: r.params_json,
            timeout_ms: r.timeout_ms,
        };
        let (command_id, outcome) = match self.engine.admin(actor, action).await? {
            AdminOutcome::Command { command_id, outcome } => (command_id, outcome),
            other => return Err(unexpected(&other)),
        };
        use v1::send_command_response::Outcome;
        let outcome = match outcome {
            CommandOutcome::Completed(value) => Outcome::ResultJson(value.to_string()),
            CommandOutcome::AgentError(message) => Outcome::AgentError(message),
            CommandOutcome::TimedOut { waited_ms } => {
                return Err(reason::status(
                    Code::DeadlineExceeded,
                    Reason::CommandTimeout,
                    format!(
                        "agent '{agent}' did not answer command '{command}' (id {command_id}) within {waited_ms} ms"
                    ),
                    [("agent", agent)],
                ));
            }
            CommandOutcome::AgentGone { reason } => {
                return Err(reason::status(
                    Code::Aborted,
                    Reason::CommandAborted,
                    format!(
                        "agent '{agent}' went away before answering command '{command}' (id {command_id}): {reason}"
                    ),
                    [("agent", agent)],
                ));
            }
        };
        Ok(Response::new(v1::SendCommandResponse { command_id, outcome: Some(outcome) }))
    }

    async fn audit_log(&self, request: Request<v1::AuditLogRequest>) -> Result<Response<v1::AuditLogResponse>, Status> {
        self.gate.admin(&request, "AuditLog", None)?;
        let limit = match request.into_inner().limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n => n as usize,
        };
        let response = self
            .engine
            .query(move |e, _| {
                let audit = e.control().audit();
                let mut entries: Vec<v1::AuditEntry> =
                    audit.entries().rev().take(limit).map(convert::audit_entry).collect();
                entries.reverse();
                Ok(v1::AuditLogResponse { entries, dropped: audit.dropped() })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn backup(&self, request: Request<v1::BackupRequest>) -> Result<Response<v1::BackupResponse>, Status> {
        self.gate.admin(&request, "Backup", None)?;
        let asked = std::path::PathBuf::from(request.into_inner().path);
        let path = self.backup_dir.target(&asked)?;
        // Refused here at once while another backup runs; see `crate::backup`.
        let (request, answer) = self.backups.request(path, self.engine.groups().dir())?;
        self.engine.send(Command::Backup(request)).await?;
        let bytes = answer.await.map_err(|_| shutting_down())??;
        Ok(Response::new(v1::BackupResponse { path: asked.display().to_string(), bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    #[test]
    fn the_token_is_required_and_checked() {
        let token = AdminToken::new(Some("s3cret".into()));
        let check = |r: Request<()>| token.check(r.metadata());
        assert_eq!(check(with_auth(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(check(with_auth(Some("Bearer nope"))).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(check(with_auth(Some("s3cret"))).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(check(with_auth(Some("Bearer "))).unwrap_err().code(), tonic::Code::PermissionDenied);
        assert!(check(with_auth(Some("Bearer s3cret"))).is_ok());
        assert!(AdminToken::new(None).check(with_auth(None).metadata()).is_ok());
        assert!(token.matches("s3cret") && !token.matches("s3cre") && !AdminToken::new(None).matches(""));
    }
}
