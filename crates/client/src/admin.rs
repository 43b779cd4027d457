//! The operators' client: pause and resume agents, stop and resume everyone, send commands to
//! agents and wait for their answers, read status and the audit log, force and clean up sync
//! points, retry dead-lettered tasks.

use std::time::Duration;

use crate::Channel;
use lockstep_proto::v1;
use lockstep_proto::v1::admin_client::AdminClient as Grpc;
use lockstep_proto::v1::lockstep_client::LockstepClient;
use lockstep_proto::v1::tasks_client::TasksClient;
use serde_json::Value;
use tonic::metadata::{Ascii, MetadataValue};

use crate::Error;

/// Adds the caller's token (an agent's, a tool's, an operator's) and the operator's name to every
/// call.
#[derive(Clone)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
    actor: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// The admin token (`Bearer` is added) and the operator's name, checked to fit a header.
    pub(crate) fn new(token: Option<&str>, actor: Option<&str>) -> Result<Credentials, Error> {
        let header = |what: &str, v: String| {
            v.parse::<MetadataValue<Ascii>>().map_err(|_| Error::Input(format!("the {what} must be printable ASCII")))
        };
        let token = token.filter(|t| !t.is_empty()).map(|t| header("token", format!("Bearer {t}"))).transpose()?;
        let actor = actor.map(|a| header("actor name", a.to_owned())).transpose()?;
        Ok(Credentials { token, actor })
    }

    /// The token presented (without `Bearer `), if any.
    pub(crate) fn token(&self) -> Option<String> {
        self.token.as_ref().and_then(|t| t.to_str().ok()).and_then(|t| t.strip_prefix("Bearer ")).map(str::to_owned)
    }

    /// These credentials with `token` and `actor` instead, where given.
    pub(crate) fn with(&self, token: Option<&str>, actor: Option<&str>) -> Result<Credentials, Error> {
        let given = Credentials::new(token, actor)?;
        Ok(Credentials {
            token: given.token.or_else(|| self.token.clone()),
            actor: given.actor.or_else(|| self.actor.clone()),
        })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            request.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(a) = &self.actor {
            request.metadata_mut().insert("x-lockstep-actor", a.clone());
        }
        Ok(request)
    }
}

/// An operator's handle on a server's `Admin` service.
#[derive(Clone)]
pub struct AdminClient {
    grpc: Grpc<Channel>,
    /// The operators' actions served by the agents' service (sync points), with the same
    /// credentials.
    agents: LockstepClient<Channel>,
    /// The operators' actions served by the `Tasks` service (retries).
    tasks: TasksClient<Channel>,
    namespace: String,
}

impl AdminClient {
    /// On `channel`, which carries the operator's credentials (see `Client::admin`).
    pub(crate) fn new(channel: Channel, namespace: String) -> Self {
        let agents = LockstepClient::new(channel.clone());
        let tasks = TasksClient::new(channel.clone());
        let grpc = Grpc::new(channel);
        AdminClient { grpc, agents, tasks, namespace }
    }

    fn agent(&self, agent_id: &str) -> v1::AgentRef {
        v1::AgentRef { namespace: self.namespace.clone(), agent_id: agent_id.to_owned() }
    }

    /// Agents by status, paused agents, emergency stop, pending commands, counters.
    pub async fn status(&self) -> Result<v1::StatusResponse, Error> {
        Ok(self.grpc.clone().status(v1::StatusRequest {}).await?.into_inner())
    }

    /// Every agent's health, and the system's with its recent history.
    pub async fn health(&self) -> Result<v1::HealthResponse, Error> {
        Ok(self.grpc.clone().health(v1::HealthRequest {}).await?.into_inner())
    }

    /// Holds the agent's deliveries and refuses its publishes, state updates and sync arrivals
    /// until it is resumed; it is told. Returns what happened, in words.
    pub async fn pause_agent(&self, agent_id: &str) -> Result<String, Error> {
        Ok(self.grpc.clone().pause_agent(self.agent(agent_id)).await?.into_inner().detail)
    }

    /// Lifts an agent's pause; its held deliveries follow.
    pub async fn resume_agent(&self, agent_id: &str) -> Result<String, Error> {
        Ok(self.grpc.clone().resume_agent(self.agent(agent_id)).await?.into_inner().detail)
    }

    /// Closes the agent's circuit breaker and forgets its failures.
    pub async fn restart_agent(&self, agent_id: &str) -> Result<String, Error> {
        Ok(self.grpc.clone().restart_agent(self.agent(agent_id)).await?.into_inner().detail)
    }

    /// Pauses every agent at once, in every namespace.
    pub async fn emergency_stop(&self, reason: &str) -> Result<String, Error> {
        let r = v1::EmergencyStopRequest { reason: reason.to_owned() };
        Ok(self.grpc.clone().emergency_stop(r).await?.into_inner().detail)
    }

    /// Lifts the emergency stop and every pause.
    pub async fn resume_all(&self) -> Result<String, Error> {
        Ok(self.grpc.clone().resume_all(v1::ResumeAllRequest {}).await?.into_inner().detail)
    }

    /// Sends `command` with `params` (a JSON object, or null) to an agent and waits at most
    /// `timeout` for its answer. Errors: [`Error::NotFound`] (unknown agent),
    /// [`Error::CommandTimedOut`], [`Error::CommandFailed`] (the agent answered with an error),
    /// [`Error::CommandAborted`] (the agent went away).
    pub async fn send_command(
        &self,
        agent_id: &str,
        command: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let r = v1::SendCommandRequest {
            namespace: self.namespace.clone(),
            agent_id: agent_id.to_owned(),
            command: command.to_owned(),
            params_json: if params.is_null() { String::new() } else { params.to_string() },
            timeout_ms: timeout.as_millis().clamp(1, u64::MAX as u128) as u64,
        };
        let response = match self.grpc.clone().send_command(r).await {
            Ok(r) => r.into_inner(),
            // The reason tells a command's timeout or abort from other failures.
            Err(s) => return Err(s.into()),
        };
        match response.outcome {
            Some(v1::send_command_response::Outcome::ResultJson(json)) => serde_json::from_str(&json).map_err(|e| {
                Error::Other { code: tonic::Code::Internal, message: format!("invalid result JSON: {e}").into() }
            }),
            Some(v1::send_command_response::Outcome::AgentError(message)) => Err(Error::CommandFailed(message.into())),
            None => Ok(Value::Null),
        }
    }

    /// The most recent `limit` audit entries, oldest first, and how many older ones were dropped.
    pub async fn audit_log(&self, limit: u32) -> Result<v1::AuditLogResponse, Error> {
        Ok(self.grpc.clone().audit_log(v1::AuditLogRequest { limit }).await?.into_inner())
    }

    /// Releases the agents waiting at a sync point now, with what has arrived (audited). Served
    /// by the agents' service: make this client with [`Client::admin`](crate::Client::admin) on a
    /// connection to the agents' address.
    pub async fn force_complete_sync(&self, sync_id: &str) -> Result<v1::SyncPointStatus, Error> {
        Ok(self.agents.clone().force_complete_sync(crate::sync_request(&self.namespace, sync_id)).await?.into_inner())
    }

    /// Removes every finished sync point of the namespace; returns how many (audited). Served by
    /// the agents' service, like [`AdminClient::force_complete_sync`].
    pub async fn cleanup_sync_points(&self) -> Result<u32, Error> {
        let req = v1::CleanupSyncPointsRequest { namespace: self.namespace.clone() };
        Ok(self.agents.clone().cleanup_sync_points(req).await?.into_inner().removed)
    }

    /// Makes a dead-lettered task of the namespace ready again, its attempts counted from zero
    /// (audited). Served by the `Tasks` service, like [`AdminClient::force_complete_sync`] by the
    /// agents' service. Returns the task as it is now.
    pub async fn retry_task(&self, id: &str) -> Result<v1::TaskInfo, Error> {
        let req = v1::TaskGetRequest { namespace: self.namespace.clone(), id: id.to_owned() };
        Ok(self.tasks.clone().retry(req).await?.into_inner())
    }

    /// Has the server write a consistent copy of its data to `path` (absolute, on the server's
    /// machine; nothing there yet) while it keeps running. Returns the copy's size in bytes.
    pub async fn backup(&self, path: &str) -> Result<u64, Error> {
        Ok(self.grpc.clone().backup(v1::BackupRequest { path: path.to_owned() }).await?.into_inner().bytes)
    }
}
