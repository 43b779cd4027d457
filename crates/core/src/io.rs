//! What goes into the engine and what comes out.
//!
//! Every change of product state enters as an [`Input`] with the current time — agents' requests
//! and operators' actions alike — so a run can be recorded and replayed (inputs are serde types).
//! The shell ends each turn with [`Engine::ready`](crate::Engine::ready), commits the turn's durable
//! changes, and only then drains [`Output`]s and pulls [`Frame`]s through the
//! [`Sendable`](crate::Sendable) the commit unlocks. Nothing here does I/O.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::{CommandOutcome, CommandReply};
use crate::error::CoreError;
use crate::registry::{AgentStatus, AgentView, RegistryEventKind};
use crate::syncpoint::{Participants, SyncOutcome, SyncStatus};
use crate::vote::{BallotRequest, VoteOutcome, VoteSpec};

/// Milliseconds on the server's clock. The engine never reads a clock: the shell passes `now`.
pub type Time = u64;

/// One connection (gRPC stream) between the server and a client, named by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// What a client asks to register as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        /// Answer with [`Reply::SyncSummary`] rather than the whole outcome.
        #[serde(default)]
        summary: bool,
        /// Release when this many of the set or role have arrived (k of n); `None`: all of them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quorum: Option<u32>,
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
        reply: CommandReply,
    },
    /// Ask one of the agents interested in `topic` for an answer (see [`crate::request`]).
    AgentRequest {
        topic: String,
        payload: Bytes,
        #[serde(default)]
        content_type: String,
        /// 0 means the configured default.
        #[serde(default)]
        timeout_ms: u64,
    },
    /// A responder's answer to the request with `token`; a non-empty `error` refuses it.
    Respond {
        token: u64,
        #[serde(default)]
        payload: Bytes,
        #[serde(default)]
        content_type: String,
        #[serde(default)]
        error: String,
    },
    /// Open a vote (see [`crate::vote`]); with `wait`, the reply is the vote's outcome, else `Ok`
    /// at once.
    OpenVote {
        spec: Box<VoteSpec>,
        #[serde(default)]
        wait: bool,
    },
    /// Cast a ballot; the reply is the vote's outcome, once decided.
    CastBallot(BallotRequest),
    /// Join a replica group (created if new); the reply is [`Reply::Group`] with the caller's rank.
    JoinGroup {
        group_id: String,
    },
    /// Leave a replica group; with `forget_state`, the last member forgets the group and its
    /// state (refused while other members remain).
    LeaveGroup {
        group_id: String,
        #[serde(default)]
        forget_state: bool,
    },
    /// Write a shared context key of the agent's namespace (see [`crate::context`]); the agent is
    /// the writer (its namespace is used, whatever the write names). Answered with
    /// [`Reply::ContextWritten`].
    ContextWrite(crate::context::Write),
    /// Submit a task (see [`crate::task`]); the agent is its submitter and hears its events.
    /// Answered with [`Reply::TaskSubmitted`].
    SubmitTask(Box<crate::task::Submit>),
    /// Ask for work: ready tasks of `kinds` (empty: any) the agent is eligible for come as
    /// [`Frame::TaskAssigned`], at most `max_in_flight` held at once (0: the server's limit),
    /// until the session ends or [`Request::StopTaskWork`].
    TaskWork {
        kinds: Vec<String>,
        max_in_flight: u32,
    },
    /// Stop asking for work (tasks held stay held).
    StopTaskWork,
    /// Claim the best ready task of `kinds` the agent can take. Answered with [`Reply::TaskClaimed`].
    ClaimTask {
        kinds: Vec<String>,
    },
    /// The holder of `attempt` of task `id` started it.
    StartTask {
        id: String,
        attempt: u32,
    },
    /// The holder of `attempt` of task `id` completed it with this output.
    CompleteTask {
        id: String,
        attempt: u32,
        output_json: String,
    },
    /// The holder of `attempt` of task `id` failed it with this error.
    FailTask {
        id: String,
        attempt: u32,
        error: String,
    },
    // Tick rounds (see crate::round).
    /// The agent's answer (a JSON object, merged as a merge patch) to round `round` of `series`.
    RoundAnswer {
        series: String,
        round: u64,
        output_json: String,
    },
    // --- event-time streams
    /// A publish carrying its event time (ms since the Unix epoch): routed like
    /// [`Request::Publish`], and taken by the tick controllers and latency buffers of its topic at
    /// that time (see [`crate::streams`]).
    PublishEvent {
        topic: String,
        payload: Bytes,
        content_type: String,
        event_time_ms: u64,
    },
    // --- Topic history (see [`crate::history`]) ---
    /// Add `pattern` to the agent's interests and replay what retained topics it matches kept, as
    /// `replay` asks: the replayed messages come before live ones, with no duplicate and no gap
    /// at the seam (or a [`Frame::HistoryGap`] where retention dropped what was asked for).
    Subscribe {
        pattern: String,
        #[serde(default)]
        replay: crate::history::Replay,
    },
    /// Remove `pattern` from the agent's interests (a replay in progress goes on only for the
    /// topics another interest still matches).
    Unsubscribe {
        pattern: String,
    },
}

/// Something that happened at the shell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// The first message of a new session stream. `new_token` is a fresh random resume token chosen by
    /// the shell (the engine has no randomness); it is used if the session is new. `connection` names
    /// the client connection the stream runs on (0: unknown), so that a heartbeat on any session of
    /// a connection renews them all (see [`crate::lease::SharedConnections`]).
    Register {
        conn: ConnId,
        request: RegisterRequest,
        new_token: String,
        #[serde(default)]
        connection: u64,
    },
    /// A request on a registered session. `request_id == 0` means no reply is wanted unless it fails.
    Request { conn: ConnId, request_id: u64, request: Request },
    /// A message on a registered session that the shell could not decode, and why: it is answered
    /// with `InvalidArgument` and counts as a failure for the agent's circuit breaker.
    Malformed { conn: ConnId, request_id: u64, reason: String },
    /// A request on a registered session that the caller's token does not allow (see
    /// [`crate::auth`]): the shell checked it and did not pass it on. It is answered with
    /// `PermissionDenied` naming what was denied, and changes nothing else (no breaker failure: the
    /// agent did what it was asked, its credentials did not allow it).
    Refused { conn: ConnId, request_id: u64, denial: crate::auth::Denial },
    /// A session on client connection `connection` (as [`Input::Register`] names it) sent a
    /// message, read at `at`: a sign of life of every session on that connection, taken when it
    /// reached the server rather than when the message gets its turn, so that a client whose
    /// messages wait behind a backlog of other inputs is not declared lost for the server's delay
    /// (see [`crate::lease`]). The shell reports only messages that have to wait for room in its
    /// intake, at most four times a second per session.
    Alive { connection: u64, at: Time },
    /// A client opened a registry watch stream.
    WatchRegistry { conn: ConnId, namespace: String },
    /// The stream ended without a goodbye: reset, cancelled, broken, or half-closed without
    /// [`Request::Deregister`] (which is the only way an agent leaves at once). An agent's session
    /// keeps its lease, so that the agent can resume with its token; a registry watch ends.
    Disconnected { conn: ConnId },
    /// The shell could not drive the engine on time from `since` until now: a stalled process
    /// (stopped, swapped out, starved of CPU) or a backlog of inputs that waited to be applied. The
    /// agents' silence over that time is the server's, not theirs: leases and acknowledgement
    /// deadlines are extended by it (see `Engine::server_stalled`). The shell reports a stall once it
    /// reaches [`Config::stall_threshold_ms`](crate::Config::stall_threshold_ms), before the first
    /// input it applies after one.
    ServerStalled { since: Time },
    /// An operator's action. `origin` is the shell's name for the caller: the answer comes back as
    /// [`Output::AdminDone`] with it. `actor` is who acted, for the audit log.
    Admin { origin: u64, actor: String, action: AdminAction },
    /// A member's call to a collective (see [`crate::collective`]); `origin` is the shell's name
    /// for the call, unique per call. Answered by [`Output::Collective`] events.
    CollectiveJoin { origin: u64, join: crate::collective::CollectiveJoin },
    /// The shell's exchange could not carry on with call `origin` (its stream broke, it sent a
    /// chunk of the wrong size, it went away): the collective fails for every member.
    CollectiveFault { origin: u64, reason: String },
    /// Every array of the collective `serial` moved and every result was handed to every member's
    /// stream: it completed.
    CollectiveTransferred { namespace: String, collective_id: String, serial: u64 },
    /// A member's call to publish `size` bytes as its replica group's next state version
    /// (`origin`: the shell's name for the call). Answered by [`Output::Group`].
    GroupPublish { origin: u64, call: GroupCall, size: u64 },
    /// The shell has the bytes of publish `origin` (`Ok`: their SHA-256, lowercase hex), or the
    /// upload broke off (`Err`: why). Answered by [`Output::Group`].
    GroupPublished { origin: u64, result: Result<String, String> },
    /// A member's call to fetch its replica group's current state. Answered by [`Output::Group`].
    GroupFetch { origin: u64, call: GroupCall },
    /// A write to shared context from a client outside a session (see [`crate::context`]);
    /// `writer` is the client's name for itself (kept in the key's history). Answered by
    /// [`Output::ContextDone`] with `origin`.
    ContextWrite { origin: u64, writer: String, write: crate::context::Write },
    /// A client opened a context watch stream on `selector` of `namespace`, resuming from version
    /// `from` (0: from nothing, a snapshot of every key covered).
    WatchContext { conn: ConnId, namespace: String, selector: crate::context::Selector, from: u64 },
    /// A client opened a task event stream on `namespace`.
    WatchTasks { conn: ConnId, namespace: String },
    /// A call on the trace store (see [`crate::trace`]), answered by [`Output::Trace`] with its
    /// origin.
    Trace(TraceInput),
    // Tick rounds (see crate::round).
    /// A client's call on round series, answered by [`Output::RoundDone`] with `origin`.
    Round { origin: u64, call: RoundCall },
    // --- sync monitor (see crate::systems)
    /// A call on the sync monitor by `actor` (for the audit log), answered by
    /// [`Output::SystemsDone`] with `origin`.
    Systems { origin: u64, actor: String, call: SystemsCall },
}

/// A call on the sync monitor (see [`crate::systems`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SystemsCall {
    /// Register a system (the same definition again is a no-op).
    Register(crate::systems::SystemSpec),
    /// Replace the definition of an active system.
    Update(crate::systems::SystemSpec),
    /// Retire a system.
    Retire { name: String },
    /// Declare `upstream → downstream` with an impact weight in (0, 1].
    Depend { upstream: String, downstream: String, weight: f64 },
    /// Remove a dependency.
    Undepend { upstream: String, downstream: String },
    /// A sync event.
    Report(crate::systems::Report),
    /// Acknowledge an open incident.
    Ack { id: u64 },
    /// Annotate an open incident.
    Note { id: u64, text: String },
    /// Resolve an open incident by hand.
    Resolve { id: u64 },
}

/// What a sync monitor call did.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemsDone {
    /// What happened, in words.
    pub detail: String,
    /// The incident the call acted on (ack, note, resolve).
    pub incident: Option<crate::systems::Incident>,
    /// Incidents the call opened, repeated or resolved (an event that failed, a recovery).
    pub changes: Vec<(crate::systems::Change, crate::systems::Incident)>,
    /// The server's time of the call, Unix ms (the sync monitor's clock).
    pub at: Time,
}

/// A client's call on round series (see [`crate::round`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoundCall {
    /// Create a series (the same spec again is a no-op).
    CreateSeries(Box<crate::round::SeriesSpec>),
    /// Open the next round of a client-driven series with this input (JSON text); `round` is the
    /// number the caller expects to open (0: the next), `driver` its name.
    OpenRound { namespace: String, series: String, round: u64, input_json: String, driver: String },
    /// Close a series: its open round closes now, and it is forgotten.
    RemoveSeries { namespace: String, series: String },
}

/// What a round call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundDone {
    /// The round opened (for an opening), or the series' last round.
    pub round: u64,
    /// When the round opened closes at the latest (0 for other calls).
    pub deadline: Time,
    /// The agents asked to answer the round opened, in id order.
    pub participants: Vec<String>,
}

/// An agent's live session, proven by its resume token, as trace calls name it (beside the session,
/// like replica groups' calls).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCall {
    pub namespace: String,
    pub agent_id: String,
    pub resume_token: String,
}

/// Calls on the trace store; `origin` is the shell's name for the call, unique per call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TraceInput {
    /// The trace of `tool` on `input` (JSON text) in `namespace`, or a miss. Needs no session.
    Lookup { origin: u64, namespace: String, tool: String, input: String },
    /// The trace `id` of `namespace`.
    Get { origin: u64, namespace: String, id: String },
    /// The trace, or the claim to compute it, or a wait of at most `wait_ms` (0: the longest).
    GetOrClaim { origin: u64, call: SessionCall, tool: String, input: String, wait_ms: u64 },
    /// May this record go ahead (its bytes not sent yet)? Changes nothing.
    Check { origin: u64, call: SessionCall, record: Box<crate::trace::Record> },
    /// Record a tool call (its bytes are inline, or kept by the shell under `output.blob`).
    Record { origin: u64, call: SessionCall, record: Box<crate::trace::Record> },
    /// The caller gives up its claim on `tool` and `input`.
    Release { origin: u64, call: SessionCall, tool: String, input: String },
    /// Call `origin` went away: it waits no more, and a claim it holds passes on.
    Cancel { origin: u64 },
    /// The shell served a lookup's hit on trace `id` of `namespace` from its index beside the
    /// engine: it counts as a hit and uses the trace (for retention), as a lookup here would.
    /// Nothing is answered.
    Used { namespace: String, id: String },
}

/// What the engine tells the shell's trace store.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceEvent {
    /// Call `origin` gets the trace (a lookup's hit, a get, a wait that ended with a record).
    Found { origin: u64, trace: Box<crate::trace::Trace> },
    /// Lookup `origin` found nothing.
    Miss { origin: u64 },
    /// Call `origin` holds the claim on trace `id`: it computes and records it.
    Claimed { origin: u64, id: String },
    /// Call `origin` waits for another agent's record.
    Waiting { origin: u64, id: String, holder: String },
    /// Check `origin` may send its bytes.
    Go { origin: u64, id: String },
    /// Record `origin` is applied (`new`: false when the same trace was stored already).
    Recorded { origin: u64, trace: Box<crate::trace::Trace>, new: bool },
    /// Release `origin` is done.
    Released { origin: u64 },
    /// Call `origin` is refused or ended; nothing changed.
    Refused { origin: u64, error: CoreError },
    /// A trace was evicted: drop its blob (kept by the shell), if it has one.
    Evicted(crate::trace::Evicted),
}

/// Who calls on a replica group's state from beside the session (as collectives do): the agent,
/// proving it is the live session with its resume token, and the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCall {
    pub namespace: String,
    pub agent_id: String,
    pub resume_token: String,
    pub group_id: String,
}

/// What the engine tells the shell's group store.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupOutput {
    /// Call `origin` is refused (or its publish failed); nothing changed.
    Refused { origin: u64, error: CoreError },
    /// Publish `origin` may send its bytes.
    PublishGo { origin: u64 },
    /// Publish `origin`'s bytes are the group's current version now.
    Published { origin: u64, namespace: Arc<str>, group_id: Arc<str>, state: crate::replica_group::StateVersion },
    /// The group and its state are forgotten: drop its bytes (and its file).
    Forgotten { namespace: Arc<str>, group_id: Arc<str> },
    /// Fetch `origin` may read the group's current version (`state`, or a newer one).
    FetchGo { origin: u64, namespace: Arc<str>, group_id: Arc<str>, state: crate::replica_group::StateVersion },
}

/// What an operator can do to the running system. Reads (status, health, listings) are not
/// actions: they are read-only methods on the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminAction {
    /// Hold the agent's deliveries and refuse its publishes, state updates and sync arrivals.
    PauseAgent { namespace: String, agent_id: String },
    /// Lift the agent's own pause; what was held follows.
    ResumeAgent { namespace: String, agent_id: String },
    /// Close the agent's circuit breaker and forget its failures.
    RestartAgent { namespace: String, agent_id: String },
    /// Pause every agent of every namespace at once.
    EmergencyStop { reason: String },
    /// Lift the emergency stop and every pause.
    ResumeAll,
    /// Send a command to an agent and wait for its answer (or `timeout_ms`; 0 means the default).
    SendCommand { namespace: String, agent_id: String, command: String, params_json: String, timeout_ms: u64 },
    /// Release the agents waiting at a sync point now, with what has arrived.
    ForceCompleteSync { namespace: String, sync_id: String },
    /// Remove the finished sync points of a namespace.
    CleanupSyncPoints { namespace: String },
    /// Make a dead-lettered task ready again, its attempts counted from zero.
    RetryTask { namespace: String, id: String },
    // --- event-time streams (see [`crate::streams`]); answered with `AdminOutcome::Done`
    /// Create a tick controller.
    CreateTicker(crate::ticker::TickerSpec),
    /// Create a latency buffer.
    CreateBuffer(crate::latency::BufferSpec),
    /// Remove a tick controller or latency buffer.
    RemoveStream { kind: crate::streams::StreamKind, namespace: String, id: String },
    // --- intake (see [`crate::intake`]); answered with `AdminOutcome::Done`
    /// Replace the intake's rule set (a [`crate::intake::RuleSet`] as JSON) as its next version.
    ReplaceIntake { rules_json: String },
}

/// What an operator's action did.
#[derive(Clone, Debug, PartialEq)]
pub enum AdminOutcome {
    /// Done (pause, resume, restart, emergency stop, resume all): what happened, in words.
    Done(String),
    /// The sync point was released; its status afterwards.
    SyncForced(SyncStatus),
    /// This many finished sync points were removed.
    Cleaned(usize),
    /// The command (with this id) ended so.
    Command { command_id: u64, outcome: CommandOutcome },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// The connection has frames to send: call [`Sendable::next_frame`](crate::Sendable::next_frame)
    /// until it returns `None`. Emitted once until the connection's frames are drained.
    Ready(ConnId),
    /// An operator's action (sent with `origin`) is finished: answer the operator.
    AdminDone { origin: u64, result: Result<AdminOutcome, CoreError> },
    /// End the connection: with this error, or normally (`None`, after a deregistration). Send
    /// nothing more on it.
    Close(ConnId, Option<CoreError>),
    /// Tell the exchange how a collective goes: a call refused, a transfer to start, an outcome.
    Collective(crate::collective::CollectiveEvent),
    /// Tell the group store how a publish or fetch of a replica group's state goes.
    Group(GroupOutput),
    /// A context write (sent with `origin`) is done, or was refused: answer the client.
    ContextDone { origin: u64, result: Result<crate::context::Written, CoreError> },
    /// Tell the trace store how a call goes (see [`TraceEvent`]).
    Trace(TraceEvent),
    // Tick rounds.
    /// A round call (sent with `origin`) is done, or was refused.
    RoundDone { origin: u64, result: Result<RoundDone, CoreError> },
    // --- sync monitor
    /// A sync monitor call (sent with `origin`) is done, or was refused.
    SystemsDone { origin: u64, result: Result<SystemsDone, CoreError> },
}

/// A message published on a topic, shared by every queue it is routed to.
#[derive(PartialEq, Eq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub content_type: Arc<str>,
    pub publisher: Arc<str>,
    /// On a retained topic (see [`crate::history`]): the topic's sequence number for this message
    /// (from 1), and the server time it was published at. 0 and 0 elsewhere.
    pub topic_seq: u64,
    pub time: Time,
    /// A record the intake categorised: the envelope the server stamped (see [`crate::intake`]).
    pub intake: Option<Box<crate::intake::Envelope>>,
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
            topic_seq: 0,
            time: 0,
            intake: None,
            wire: std::sync::OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Message {
    // The wire cache is the shell's business (filled by whichever connection encodes it first), so
    // it stays out of the description: two runs of the same inputs describe the same messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload", &self.payload)
            .field("content_type", &self.content_type)
            .field("publisher", &self.publisher)
            .field("topic_seq", &self.topic_seq)
            .field("time", &self.time)
            .field("intake", &self.intake)
            .finish()
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
    /// A released sync point's whole outcome.
    Sync(Arc<SyncOutcome>),
    /// A released sync point's summary: its count and digest, and where this agent arrived.
    SyncSummary {
        outcome: Arc<SyncOutcome>,
        position: u32,
    },
    /// The answer to an agent request, from `responder`.
    Response {
        payload: Bytes,
        content_type: String,
        responder: String,
    },
    /// A decided vote's outcome (the same for every voter).
    Vote(Arc<VoteOutcome>),
    /// The caller's view of a replica group it joined.
    Group(crate::replica_group::GroupView),
    /// A context write was applied.
    ContextWritten(crate::context::Written),
    /// A task was submitted under this id.
    TaskSubmitted(String),
    /// A claim's task, if one was ready for the claimant.
    TaskClaimed(Option<Box<crate::task::Assignment>>),
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
    /// The limits in force, told to the client so that it can refuse an over-limit request
    /// before sending it (one over the message cap would end its stream).
    pub limits: Box<crate::config::Limits>,
    /// Capacity of the agent's outbound message queue.
    pub queue_capacity: usize,
    /// A heartbeat on any session of a client connection renews every session on it: a client
    /// need send only one per connection and interval.
    pub connection_heartbeats: bool,
    /// Messages routed to this agent that it will never receive and has not been told of: those
    /// dropped while its session was away (its queue is discarded when it is lost), or as its
    /// queue overflowed after the last message queued. Told here, at once, rather than with the
    /// next delivery, which may never come; the next delivery does not count them again.
    pub missed_messages: u64,
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
    /// One registry event, shared by every watcher of its namespace.
    Registry(Arc<RegistryEvent>),
    /// An operator paused or resumed this agent, or stopped or resumed everyone.
    Control(ControlNotice),
    /// An operator's command for this agent.
    Command {
        command_id: u64,
        command: String,
        params: Value,
        deadline: Time,
    },
    /// Changes of watched context keys, for a context watch stream.
    Context(crate::context::ContextBatch),
    /// A task for this agent to execute (it asked for work).
    TaskAssigned(Box<crate::task::Assignment>),
    /// Something happened to a task this agent submitted, or, on a task watch, to any task.
    TaskEvent(Arc<crate::task::TaskEvent>),
    /// Another agent's request for this one to answer (see [`crate::request`]).
    IncomingRequest {
        token: u64,
        topic: String,
        payload: Bytes,
        content_type: String,
        requester: String,
        deadline: Time,
    },
    // Tick rounds.
    /// Round `round` of `series` asks this agent for its answer before `deadline`.
    RoundInput {
        series: Arc<str>,
        round: u64,
        input: Arc<str>,
        deadline: Time,
    },
    // --- Topic history ---
    /// A replay asked for messages retention had already dropped (see [`crate::history::Gap`]).
    HistoryGap(crate::history::Gap),
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
