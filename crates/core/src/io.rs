//! What goes into the engine and what comes out.
//!
//! The shell feeds [`Input`]s with the current time, then drains [`Output`]s with
//! [`Engine::poll_output`](crate::Engine::poll_output) and pulls [`Frame`]s for each connection the
//! engine said is ready. Nothing here does I/O.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::error::CoreError;
use crate::registry::{AgentStatus, AgentView, RegistryEventKind};
use crate::syncpoint::{Participants, SyncOutcome};

/// Milliseconds on the server's clock. The engine never reads a clock: the shell passes `now`.
pub type Time = u64;

/// One connection (gRPC stream) between the server and a client, named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What a client asks to register as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterRequest {
    pub namespace: String,
    pub agent_id: String,
    pub role: String,
    pub capabilities: Vec<String>,
    pub interests: Vec<String>,
    pub metadata: Vec<(String, String)>,
    pub resume_token: String,
}

/// Which agents' state a watch covers (serialized as `agent:<id>`, `role:<role>` or `all`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum WatchTarget {
    Agent(String),
    Role(String),
    All,
}

/// A request on a registered session.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Heartbeat,
    Publish {
        topic: String,
        payload: Bytes,
        content_type: String,
    },
    /// JSON merge patch text.
    UpdateState {
        delta_json: String,
    },
    SetStatus(AgentStatus),
    Watch(WatchTarget),
    Unwatch(WatchTarget),
    Sync {
        sync_id: String,
        participants: Participants,
        timeout_ms: u64,
        payload: Bytes,
    },
    /// Every delivery with `seq <= up_to` has been received.
    Ack {
        up_to: u64,
    },
    Deregister,
    /// The agent could not process the delivery with sequence number `seq` (a failure for its
    /// circuit breaker).
    DeliveryError {
        seq: u64,
        reason: String,
    },
    /// The agent's answer to an operator's command.
    CommandResult {
        command_id: u64,
        reply: crate::command::CommandReply,
    },
}

/// Something that happened at the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The first message of a new session stream. `new_token` is a fresh random resume token chosen by
    /// the shell (the engine has no randomness); it is used if the session is new.
    Register { conn: ConnId, request: RegisterRequest, new_token: String },
    /// A request on a registered session. `request_id == 0` means no reply is wanted unless it fails.
    Request { conn: ConnId, request_id: u64, request: Request },
    /// A client opened a registry watch stream.
    WatchRegistry { conn: ConnId, namespace: String },
    /// The stream ended: `clean` when the client closed it deliberately (deregistering the agent),
    /// not clean when it broke (the lease keeps running so the agent can resume).
    Disconnected { conn: ConnId, clean: bool },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The connection has frames to send: call [`Engine::next_frame`](crate::Engine::next_frame)
    /// until it returns `None`. Emitted once until the connection's frames are drained.
    Ready(ConnId),
    /// An operator's command (sent with `origin`) ended: answer the operator.
    CommandDone { origin: u64, command_id: u64, outcome: crate::command::CommandOutcome },
    /// End the connection: with this error, or normally (`None`, after a deregistration). Send
    /// nothing more on it.
    Close(ConnId, Option<CoreError>),
}

/// A message published on a topic, shared by every queue it is routed to.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub content_type: Arc<str>,
    pub publisher: Arc<str>,
    /// The protocol layer's encoding of this message, made once by whichever connection sends it
    /// first and shared by all the others (the engine never reads it).
    pub wire: std::sync::OnceLock<Bytes>,
}

impl Message {
    pub fn new(topic: &str, payload: Bytes, content_type: &str, publisher: Arc<str>) -> Self {
        Message {
            topic: topic.into(),
            payload,
            content_type: content_type.into(),
            publisher,
            wire: std::sync::OnceLock::new(),
        }
    }
}

/// One message routed to one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Per receiving agent, increasing by one per routed message (dropped ones included).
    pub seq: u64,
    pub message: Arc<Message>,
    /// How many messages were dropped right before this one (queue overflow).
    pub missed_before: u64,
}

/// A change of one watched agent's state.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    pub agent_id: Arc<str>,
    /// The version the watcher's view must be at for `delta` to apply; 0 means "replace your view
    /// with `delta` applied to an empty object" (a snapshot).
    pub base_version: u64,
    pub version: u64,
    pub delta: Value,
    /// The owner left: forget its state.
    pub removed: bool,
}

/// A registry change, for registry watchers.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryEvent {
    pub kind: RegistryEventKind,
    pub agent: AgentView,
    pub previous_status: Option<AgentStatus>,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Ok,
    StateVersion(u64),
    Sync(Arc<SyncOutcome>),
    Error(CoreError),
}

/// The registration was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub namespace: String,
    pub agent_id: String,
    pub resume_token: String,
    pub heartbeat_interval_ms: u64,
    pub lease_intervals: u32,
    pub resumed: bool,
}

/// One unit the shell sends on a connection. A `Deliveries` batch is consecutive: only its first
/// item may have `missed_before > 0`, and each later item's `seq` is one more than the previous.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Registered(Registered),
    Reply {
        request_id: u64,
        reply: Reply,
    },
    Deliveries(Vec<Delivery>),
    StateChanges(Vec<StateChange>),
    Registry(RegistryEvent),
    /// An operator paused or resumed this agent, or stopped or resumed everyone.
    Control(ControlNotice),
    /// An operator's command for this agent.
    Command {
        command_id: u64,
        command: String,
        params: Value,
        deadline: Time,
    },
}

/// What an operator did to an agent's right to act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    Paused,
    Resumed,
    EmergencyStop,
    ResumedAll,
}

/// A control notice for an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlNotice {
    pub kind: ControlKind,
    pub actor: String,
    pub reason: String,
}
