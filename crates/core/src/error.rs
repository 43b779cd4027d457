//! Every way a request to the engine can fail, typed. The server maps [`ErrorCode`] onto a gRPC
//! status code one to one, so the code and the message together tell a person what to do, and
//! sends each error's [`Reason`] with it, so that a program decides by a stable name rather than by
//! the message, whose wording may change.

use thiserror::Error;

/// The class of a failure; each maps to exactly one gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request itself is malformed (bad id, pattern, delta, size...).
    InvalidArgument,
    /// The agent, sync point or namespace named does not exist.
    NotFound,
    /// The id is taken by a live session.
    AlreadyExists,
    /// A configured limit was reached.
    ResourceExhausted,
    /// The request is well formed but conflicts with the current state.
    FailedPrecondition,
    /// A barrier did not complete in time.
    DeadlineExceeded,
    /// A barrier was abandoned because a required participant was lost or left.
    Aborted,
    /// The session is no longer usable (lease lost, taken over), or no agent can answer a request
    /// now.
    Unavailable,
    /// The caller's token does not allow it (see [`crate::auth`]).
    PermissionDenied,
}

/// A failure of an engine operation, with a message a person can act on.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    #[error("agent '{agent}' is not registered in namespace '{namespace}'")]
    UnknownAgent { namespace: String, agent: String },

    #[error("sync point '{sync_id}' does not exist in namespace '{namespace}'")]
    UnknownSyncPoint { namespace: String, sync_id: String },

    #[error("agent '{agent}' already has a live session in namespace '{namespace}'; present its resume token to take it over, or deregister it first")]
    AlreadyRegistered { namespace: String, agent: String },

    #[error("limit reached: {what} (limit {limit}); {hint}")]
    Limit { what: &'static str, limit: u64, hint: &'static str },

    #[error("the first message of a session must be `register`")]
    NotRegistered,

    #[error("this connection already registered agent '{agent}'; open another session for another agent")]
    AlreadyRegisteredHere { agent: String },

    #[error("sync point '{sync_id}' was created with participants {existing}, but this arrival names {requested}; every participant must describe the point the same way")]
    SyncMismatch { sync_id: String, existing: String, requested: String },

    #[error("agent '{agent}' is not a participant of sync point '{sync_id}' (participants: {participants})")]
    NotAParticipant { sync_id: String, agent: String, participants: String },

    #[error("sync point '{sync_id}' already finished ({outcome}); use a new id for a new round, or clean it up first")]
    SyncFinished { sync_id: String, outcome: String },

    #[error("sync point '{sync_id}' timed out after {waited_ms} ms; never arrived: {}", list_or_count(.missing, *.missing_count))]
    SyncTimeout { sync_id: String, waited_ms: u64, missing: Vec<String>, missing_count: u32 },

    #[error("sync point '{sync_id}' failed: {reason}")]
    SyncAborted { sync_id: String, reason: String, missing: Vec<String> },

    #[error("session for agent '{agent}' ended: {cause}")]
    SessionEnded { agent: String, cause: SessionEnd },

    #[error(transparent)]
    Paused(#[from] crate::command::Refusal),

    #[error("{}", crate::breaker::open_message(.agent, *.probe_at_ms, .reason))]
    BreakerOpen { agent: String, probe_at_ms: u64, reason: String },

    #[error("slow consumer: agent '{agent}' let its outbound queue of {capacity} messages fill up; the server disconnected it (overflow policy `disconnect`)")]
    SlowConsumer { agent: String, capacity: usize },

    #[error("no responders for topic '{topic}': no other live agent whose interests match it can take a request now (none registered, or all paused or isolated); try again later")]
    NoResponders { topic: String },

    #[error("agent '{responder}' did not answer the request on topic '{topic}' within {waited_ms} ms")]
    RequestTimeout { topic: String, responder: String, waited_ms: u64 },

    #[error("agent '{responder}' went away before answering the request on topic '{topic}' (it {why})")]
    RequestAborted { topic: String, responder: String, why: String },

    #[error("agent '{responder}' refused the request on topic '{topic}': {message}")]
    RequestRefused { topic: String, responder: String, message: String },

    #[error("no request with token {token} waits for this agent's answer (it was answered already, or timed out)")]
    UnknownRequest { token: u64 },

    #[error(
        "vote '{vote_id}' does not exist in namespace '{namespace}' (never opened, or forgotten after its retention)"
    )]
    UnknownVote { namespace: String, vote_id: String },

    #[error("vote '{vote_id}' already exists with another opener or description; use a new id")]
    VoteExists { vote_id: String },

    #[error("agent '{agent}' is not a voter of vote '{vote_id}' (participants: {participants})")]
    NotAVoter { vote_id: String, agent: String, participants: String },

    #[error("agent '{agent}' already cast another ballot in vote '{vote_id}'; a ballot cannot be changed")]
    DoubleBallot { vote_id: String, agent: String },

    #[error("vote '{vote_id}' takes no more ballots: {why}")]
    VoteClosed { vote_id: String, why: String },

    #[error("'{option}' is not an option of vote '{vote_id}' (options: {options})")]
    UnknownOption { vote_id: String, option: String, options: String },

    #[error("bad weight for agent '{agent}' in vote '{vote_id}': {reason}")]
    BadWeight { vote_id: String, agent: String, reason: String },

    #[error("bad confidence in vote '{vote_id}': {value}; a confidence is a number in [0, 1]")]
    BadConfidence { vote_id: String, value: String },

    #[error("bad ballot for vote '{vote_id}': {reason}")]
    BadBallot { vote_id: String, reason: String },

    #[error("agent '{agent}' (role '{role}') may not veto in vote '{vote_id}': only its veto roles may")]
    VetoNotAllowed { vote_id: String, agent: String, role: String },
    #[error("collective '{collective_id}': agent '{agent}' {what}; every member must call it the same way")]
    CollectiveMismatch { collective_id: String, agent: String, what: String },

    #[error("agent '{agent}' is not a member of collective '{collective_id}' (members: {members})")]
    NotCollectiveMember { collective_id: String, agent: String, members: String },

    #[error("collective '{collective_id}' timed out after {waited_ms} ms; {}: {}", if *.joined_all { "did not finish sending" } else { "never joined" }, .missing.join(", "))]
    CollectiveTimeout { collective_id: String, waited_ms: u64, missing: Vec<String>, joined_all: bool },

    #[error("collective '{collective_id}' failed: member '{agent}' {why}")]
    CollectiveAborted { collective_id: String, agent: String, why: String },

    #[error("replica group '{group_id}' does not exist in namespace '{namespace}' (join it first)")]
    UnknownGroup { namespace: String, group_id: String },

    #[error("agent '{agent}' is not a member of replica group '{group_id}' (members: {members}); join it first")]
    NotGroupMember { group_id: String, agent: String, members: String },

    #[error("replica group '{group_id}' has a publish in progress by '{publisher}'; publish again once it is done")]
    GroupBusy { group_id: String, publisher: String },

    #[error("publish to replica group '{group_id}' abandoned: {why}; the previous version stays current")]
    GroupPublishAborted { group_id: String, why: String },

    #[error("replica group '{group_id}' has no state yet: no member has published one")]
    NoGroupState { group_id: String },

    #[error("checksum mismatch for replica group '{group_id}': {what}")]
    ChecksumMismatch { group_id: String, what: String },
    #[error("context key '{key}' is at version {current}{}, not {}; read it again and retry", if *.current == 0 { " (it does not exist)" } else { "" }, if *.expected == 0 { "absent".to_owned() } else { format!("version {}", .expected) })]
    ContextConflict { key: String, expected: u64, current: u64 },

    #[error("context key '{key}' does not exist in namespace '{namespace}'")]
    UnknownContextKey { namespace: String, key: String },

    #[error("context key '{key}' does not retain version {version} (retained: {})", list_versions(.retained))]
    UnknownContextVersion { key: String, version: u64, retained: Vec<u64> },

    #[error("context key '{key}' is kept by the server (keys under `system.` are read-only)")]
    ContextReadOnly { key: String },

    #[error("task '{id}' does not exist in namespace '{namespace}'")]
    UnknownTask { namespace: String, id: String },

    #[error("task '{id}' already exists; choose another id (or leave it empty for the server to name one)")]
    TaskExists { id: String },

    #[error("task '{id}' would depend on itself ({})", .path.join(" -> "))]
    TaskCycle { id: String, path: Vec<String> },

    #[error("agent '{agent}' does not hold attempt {attempt} of task '{id}': {now}")]
    TaskNotHeld { id: String, agent: String, attempt: u32, now: String },

    #[error("task '{id}' is already {state} (attempt {attempt}{}); exactly one completion is accepted", if .holder.is_empty() { String::new() } else { format!(", by '{}'", .holder) })]
    TaskFinished { id: String, state: &'static str, attempt: u32, holder: String },

    #[error("agent '{agent}' holds {held} tasks, its limit; complete or fail one first")]
    TaskInFlightLimit { agent: String, held: u64, limit: u32 },

    #[error("task '{id}' is {state}, not dead-lettered: only a dead-lettered task can be retried")]
    TaskNotDeadLettered { id: String, state: &'static str },
    #[error("trace '{id}' does not exist in namespace '{namespace}' (never recorded, or evicted)")]
    UnknownTrace { namespace: String, id: String },

    #[error("trace '{id}' is stored with another output (SHA-256 {stored}, not {given}); a trace never changes once recorded")]
    TraceExists { id: String, stored: String, given: String },

    #[error("agent '{holder}' holds the claim on trace '{id}'; wait for its record with get_or_claim, or record once the claim is yours")]
    TraceClaimed { id: String, holder: String },

    #[error("output of trace '{id}' is {size} bytes; the limit is {limit} (traces.max_output_bytes)")]
    TraceTooLarge { id: String, size: u64, limit: u64 },

    #[error("output of trace '{id}' does not match: {what}")]
    TraceHashMismatch { id: String, what: String },

    #[error("waited {waited_ms} ms for trace '{id}', which agent '{holder}' is computing; ask again to keep waiting")]
    TraceWaitTimeout { id: String, holder: String, waited_ms: u64 },

    // Tick rounds (see crate::round).
    #[error("round series '{series}' does not exist in namespace '{namespace}'")]
    UnknownRoundSeries { namespace: String, series: String },

    #[error("round series '{series}' already exists with another spec; close it first, or choose another name")]
    RoundSeriesExists { series: String },

    #[error("agent '{agent}' is not a participant of round {round} of series '{series}'")]
    NotARoundParticipant { series: String, round: u64, agent: String },

    #[error("round {round} of series '{series}' is not open: {state}")]
    RoundNotOpen { series: String, round: u64, state: String },

    #[error("agent '{agent}' already answered round {round} of series '{series}'; one answer per round")]
    RoundAnswered { series: String, round: u64, agent: String },

    #[error("round {round} of series '{series}' is still open (until {deadline} ms); one round is open at a time")]
    RoundInProgress { series: String, round: u64, deadline: u64 },
    // --- event-time streams (tick controllers, latency buffers)
    #[error("event time {event_time} ms is outside the accepted window [{earliest}, {latest}] around the server's time {server_time} ms (streams.event_time_past_ms / event_time_future_ms); check the publisher's clock")]
    EventTimeOutOfRange { event_time: u64, server_time: u64, earliest: u64, latest: u64 },

    #[error("a {kind} named '{id}' already exists in this namespace; remove it first or choose another id")]
    StreamExists { kind: &'static str, id: String },

    #[error("no {kind} named '{id}' exists in namespace '{namespace}'")]
    UnknownStream { kind: &'static str, namespace: String, id: String },

    // --- intake (validation and categorisation)
    #[error(
        "the record on '{topic}' fails its schema ({total} error(s)): {}",
        crate::error::violations_text(violations)
    )]
    SchemaViolation { topic: String, violations: Vec<crate::intake::Violation>, total: usize },

    // --- permissions (see crate::auth)
    #[error("{0}")]
    Denied(crate::auth::Denial),
    // --- sync monitor (see crate::systems): its own error type, each with its own reason
    #[error(transparent)]
    Systems(crate::systems::SystemsError),
}

/// The schema errors of a refusal, as `path: reason` separated by `; ` (the root is `/`).
pub fn violations_text(violations: &[crate::intake::Violation]) -> String {
    let shown: Vec<String> =
        violations.iter().map(|v| format!("{}: {}", if v.path.is_empty() { "/" } else { &v.path }, v.reason)).collect();
    shown.join("; ")
}

fn list_versions(versions: &[u64]) -> String {
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Why the engine ended a session; each cause has its own [`Reason`], because clients must treat
/// them differently (a session taken over stays ended, one whose lease ran out may come back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// A new connection presented the session's resume token and took it over.
    TakenOver,
    /// The agent showed no sign of life for a whole lease of `lease_ms` and is now lost.
    LeaseExpired { lease_ms: u64 },
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::TakenOver => {
                f.write_str("the session was taken over by a new connection presenting its resume token")
            }
            SessionEnd::LeaseExpired { lease_ms } => write!(f, "no sign of life for {lease_ms} ms (lease lost)"),
        }
    }
}

/// The machine-readable reason of an error: a stable name sent with every error the server reports
/// (in a status's `google.rpc.ErrorInfo` and in a reply's `Error.reason`). Clients decide by it,
/// never by the message. [`ErrorCode`] (the gRPC code) says the class; the reason says which
/// failure of that class it is. The last group is made by the server around the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// [`CoreError::Invalid`]: a malformed id, pattern, topic, delta, size, message...
    InvalidArgument,
    /// [`CoreError::UnknownAgent`].
    UnknownAgent,
    /// [`CoreError::UnknownSyncPoint`].
    UnknownSyncPoint,
    /// [`CoreError::AlreadyRegistered`]: the id has a live session and no matching resume token came.
    AlreadyRegistered,
    /// [`CoreError::AlreadyRegisteredHere`]: this connection already registered an agent.
    AlreadyRegisteredHere,
    /// [`CoreError::NotRegistered`]: the first message of a session was not `register`.
    NotRegistered,
    /// [`CoreError::Limit`]: a configured limit was reached.
    Limit,
    /// [`CoreError::SyncMismatch`]: a sync point described differently from its creation.
    SyncMismatch,
    /// [`CoreError::NotAParticipant`].
    NotAParticipant,
    /// [`CoreError::SyncFinished`]: the sync point finished; use a new id.
    SyncFinished,
    /// [`CoreError::SyncTimeout`].
    SyncTimeout,
    /// [`CoreError::SyncAborted`]: a required participant was lost or left.
    SyncAborted,
    /// [`SessionEnd::TakenOver`].
    SessionTakenOver,
    /// [`SessionEnd::LeaseExpired`].
    LeaseExpired,
    /// [`CoreError::Paused`] by an operator's pause of this agent.
    Paused,
    /// [`CoreError::Paused`] by an emergency stop.
    EmergencyStop,
    /// [`CoreError::BreakerOpen`].
    BreakerOpen,
    /// [`CoreError::SlowConsumer`].
    SlowConsumer,
    /// [`CoreError::NoResponders`]: no agent can take a request on the topic now.
    NoResponders,
    /// [`CoreError::RequestTimeout`]: the responder did not answer in time.
    RequestTimeout,
    /// [`CoreError::RequestAborted`]: the responder went away before answering.
    RequestAborted,
    /// [`CoreError::RequestRefused`]: the responder answered with an error.
    RequestRefused,
    /// [`CoreError::UnknownRequest`]: an answer for a request nobody waits on any more.
    UnknownRequest,
    /// [`CoreError::CollectiveMismatch`]: a member called a collective differently (dtype,
    /// length, operation, root, group); names the member.
    CollectiveMismatch,
    /// [`CoreError::NotCollectiveMember`]: the caller is not in the collective's group.
    NotCollectiveMember,
    /// [`CoreError::CollectiveTimeout`]: members missing at the deadline (named).
    CollectiveTimeout,
    /// [`CoreError::CollectiveAborted`]: a member was lost, left or broke off its transfer.
    CollectiveAborted,
    /// [`CoreError::UnknownGroup`].
    UnknownGroup,
    /// [`CoreError::NotGroupMember`]: the caller has not joined the replica group.
    NotGroupMember,
    /// [`CoreError::GroupBusy`]: another member's publish is in progress.
    GroupBusy,
    /// [`CoreError::GroupPublishAborted`]: a publish broke off; the previous version stays.
    GroupPublishAborted,
    /// [`CoreError::NoGroupState`]: nothing published yet.
    NoGroupState,
    /// [`CoreError::ChecksumMismatch`]: a group state's bytes do not hash to the checksum given.
    ChecksumMismatch,
    /// The server is shutting down (or its engine has stopped).
    ServerShuttingDown,
    /// The server could not store a change and is stopping.
    StoreFailed,
    /// [`CoreError::UnknownVote`].
    UnknownVote,
    /// [`CoreError::VoteExists`]: the vote id is taken by another vote.
    VoteExists,
    /// [`CoreError::NotAVoter`]: a ballot from an agent that is not a participant.
    NotAVoter,
    /// [`CoreError::DoubleBallot`]: a second, different ballot from the same voter.
    DoubleBallot,
    /// [`CoreError::VoteClosed`]: a ballot after the vote's decision or deadline.
    VoteClosed,
    /// [`CoreError::UnknownOption`]: a choice that is not one of the vote's options.
    UnknownOption,
    /// [`CoreError::BadWeight`]: the voter's weight is missing, not a number, or negative.
    BadWeight,
    /// [`CoreError::BadConfidence`]: a confidence outside [0, 1], or none where one is needed.
    BadConfidence,
    /// [`CoreError::BadBallot`]: a recommendation that is not JSON or lacks the key field, or a
    /// ballot of the wrong kind.
    BadBallot,
    /// [`CoreError::VetoNotAllowed`]: a veto from a voter outside the vote's veto roles.
    VetoNotAllowed,
    /// An `Admin` call without the server's admin token.
    AdminTokenMissing,
    /// An `Admin` call with another token than the server's.
    AdminTokenWrong,
    /// An operator's command got no answer from the agent within its timeout.
    CommandTimeout,
    /// The agent went away before answering an operator's command.
    CommandAborted,
    /// A backup could not be made (in-memory server, existing file, unwritable place).
    BackupFailed,
    /// A client message over the server's message cap ended its session stream; the agent keeps
    /// its lease and may resume.
    MessageTooLarge,
    /// [`CoreError::ContextConflict`]: a compare-and-set found another version (the current one
    /// travels with the error).
    ContextConflict,
    /// [`CoreError::UnknownContextKey`].
    UnknownContextKey,
    /// [`CoreError::UnknownContextVersion`]: the key does not retain the version asked for.
    UnknownContextVersion,
    /// [`CoreError::ContextReadOnly`]: a write to a server-maintained `system.*` key.
    ContextReadOnly,
    /// [`CoreError::UnknownTask`].
    UnknownTask,
    /// [`CoreError::TaskExists`]: a submission named an id already taken.
    TaskExists,
    /// [`CoreError::TaskCycle`]: a task's dependencies would form a cycle.
    TaskCycle,
    /// [`CoreError::TaskNotHeld`]: a completion or failure from an agent that does not hold the
    /// task's current attempt (a superseded attempt, or another agent).
    TaskNotHeld,
    /// [`CoreError::TaskFinished`]: the task is already completed or dead-lettered.
    TaskFinished,
    /// [`CoreError::TaskInFlightLimit`]: a claim past the agent's in-flight limit.
    TaskInFlightLimit,
    /// [`CoreError::TaskNotDeadLettered`]: a retry of a task that is not dead-lettered.
    TaskNotDeadLettered,
    /// [`CoreError::UnknownTrace`]: no such trace (or a lineage names one).
    UnknownTrace,
    /// [`CoreError::TraceExists`]: the trace is stored with another output.
    TraceExists,
    /// [`CoreError::TraceClaimed`]: another agent holds the claim on the trace.
    TraceClaimed,
    /// [`CoreError::TraceTooLarge`]: the output is over `traces.max_output_bytes`.
    TraceTooLarge,
    /// [`CoreError::TraceHashMismatch`]: the output's bytes do not hash to the SHA-256 given.
    TraceHashMismatch,
    /// [`CoreError::TraceWaitTimeout`]: a `get_or_claim` waited its time out.
    TraceWaitTimeout,
    // Tick rounds.
    /// [`CoreError::UnknownRoundSeries`]: no such round series.
    UnknownRoundSeries,
    /// [`CoreError::RoundSeriesExists`]: a series of that name exists with another spec.
    RoundSeriesExists,
    /// [`CoreError::NotARoundParticipant`]: an answer from an agent the round did not ask.
    NotARoundParticipant,
    /// [`CoreError::RoundNotOpen`]: an answer to a round that closed or is not open yet.
    RoundNotOpen,
    /// [`CoreError::RoundAnswered`]: a second answer to the same round.
    RoundAnswered,
    /// [`CoreError::RoundInProgress`]: an opening while the series' round is still open.
    RoundInProgress,
    // --- event-time streams
    /// [`CoreError::EventTimeOutOfRange`]: a publish's event time is too far ahead or behind.
    EventTimeOutOfRange,
    /// [`CoreError::StreamExists`]: a tick controller or latency buffer of that id exists.
    StreamExists,
    /// [`CoreError::UnknownStream`]: no such tick controller or latency buffer.
    UnknownStream,
    // --- intake
    /// [`CoreError::SchemaViolation`]: a published record fails the JSON Schema of its topic.
    SchemaViolation,
    // --- authentication and permissions (see crate::auth)
    /// No token was presented to a server that requires one (`UNAUTHENTICATED`).
    TokenMissing,
    /// The token does not verify: malformed, signed with another key, another algorithm, unknown
    /// claims (`UNAUTHENTICATED`).
    TokenInvalid,
    /// The token expired, or is not valid yet (`UNAUTHENTICATED`).
    TokenExpired,
    /// The token does not allow the namespace named (`PERMISSION_DENIED`).
    NamespaceDenied,
    /// The token does not allow publishing on (or requesting) the topic (`PERMISSION_DENIED`).
    PublishDenied,
    /// The token does not allow subscribing to the pattern (`PERMISSION_DENIED`).
    SubscribeDenied,
    /// The token is bound to another agent id or role (`PERMISSION_DENIED`).
    AgentDenied,
    /// The token does not allow reading other agents' state (`PERMISSION_DENIED`).
    StateReadDenied,
    /// The token does not allow the operators' action (`PERMISSION_DENIED`).
    AdminDenied,
    // --- sync monitor (crate::systems::SystemsError)
    /// No system of that name is registered.
    UnknownSystem,
    /// The system was retired.
    SystemRetired,
    /// A system of that name exists with another definition.
    SystemExists,
    /// A measurement's unit is not known; the message lists the known ones.
    UnknownUnit,
    /// A measurement is negative, not finite, or too large.
    BadMeasurement,
    /// A dependency would close a cycle; the message names it.
    DependencyCycle,
    /// No such dependency is declared.
    UnknownDependency,
    /// No such incident (never opened, or no longer kept).
    UnknownIncident,
    /// The incident is resolved already.
    IncidentResolved,
    /// A reporter sent more events in one second than allowed.
    EventRateLimited,
}

impl Reason {
    /// Every reason, in the order of the documentation.
    pub const ALL: [Reason; 97] = [
        Reason::InvalidArgument,
        Reason::UnknownAgent,
        Reason::UnknownSyncPoint,
        Reason::AlreadyRegistered,
        Reason::AlreadyRegisteredHere,
        Reason::NotRegistered,
        Reason::Limit,
        Reason::SyncMismatch,
        Reason::NotAParticipant,
        Reason::SyncFinished,
        Reason::SyncTimeout,
        Reason::SyncAborted,
        Reason::SessionTakenOver,
        Reason::LeaseExpired,
        Reason::Paused,
        Reason::EmergencyStop,
        Reason::BreakerOpen,
        Reason::SlowConsumer,
        Reason::NoResponders,
        Reason::RequestTimeout,
        Reason::RequestAborted,
        Reason::RequestRefused,
        Reason::UnknownRequest,
        Reason::UnknownVote,
        Reason::VoteExists,
        Reason::NotAVoter,
        Reason::DoubleBallot,
        Reason::VoteClosed,
        Reason::UnknownOption,
        Reason::BadWeight,
        Reason::BadConfidence,
        Reason::BadBallot,
        Reason::VetoNotAllowed,
        Reason::CollectiveMismatch,
        Reason::NotCollectiveMember,
        Reason::CollectiveTimeout,
        Reason::CollectiveAborted,
        Reason::UnknownGroup,
        Reason::NotGroupMember,
        Reason::GroupBusy,
        Reason::GroupPublishAborted,
        Reason::NoGroupState,
        Reason::ChecksumMismatch,
        Reason::ServerShuttingDown,
        Reason::StoreFailed,
        Reason::AdminTokenMissing,
        Reason::AdminTokenWrong,
        Reason::CommandTimeout,
        Reason::CommandAborted,
        Reason::BackupFailed,
        Reason::MessageTooLarge,
        Reason::ContextConflict,
        Reason::UnknownContextKey,
        Reason::UnknownContextVersion,
        Reason::ContextReadOnly,
        Reason::UnknownTask,
        Reason::TaskExists,
        Reason::TaskCycle,
        Reason::TaskNotHeld,
        Reason::TaskFinished,
        Reason::TaskInFlightLimit,
        Reason::TaskNotDeadLettered,
        Reason::UnknownTrace,
        Reason::TraceExists,
        Reason::TraceClaimed,
        Reason::TraceTooLarge,
        Reason::TraceHashMismatch,
        Reason::TraceWaitTimeout,
        Reason::UnknownRoundSeries,
        Reason::RoundSeriesExists,
        Reason::NotARoundParticipant,
        Reason::RoundNotOpen,
        Reason::RoundAnswered,
        Reason::RoundInProgress,
        // --- event-time streams
        Reason::EventTimeOutOfRange,
        Reason::StreamExists,
        Reason::UnknownStream,
        // --- intake
        Reason::SchemaViolation,
        // --- authentication and permissions
        Reason::TokenMissing,
        Reason::TokenInvalid,
        Reason::TokenExpired,
        Reason::NamespaceDenied,
        Reason::PublishDenied,
        Reason::SubscribeDenied,
        Reason::AgentDenied,
        Reason::StateReadDenied,
        Reason::AdminDenied,
        // --- sync monitor
        Reason::UnknownSystem,
        Reason::SystemRetired,
        Reason::SystemExists,
        Reason::UnknownUnit,
        Reason::BadMeasurement,
        Reason::DependencyCycle,
        Reason::UnknownDependency,
        Reason::UnknownIncident,
        Reason::IncidentResolved,
        Reason::EventRateLimited,
    ];

    /// The stable name on the wire (`SCREAMING_SNAKE_CASE`); it never changes once published.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidArgument => "INVALID_ARGUMENT",
            Reason::UnknownAgent => "UNKNOWN_AGENT",
            Reason::UnknownSyncPoint => "UNKNOWN_SYNC_POINT",
            Reason::AlreadyRegistered => "ALREADY_REGISTERED",
            Reason::AlreadyRegisteredHere => "ALREADY_REGISTERED_HERE",
            Reason::NotRegistered => "NOT_REGISTERED",
            Reason::Limit => "LIMIT",
            Reason::SyncMismatch => "SYNC_MISMATCH",
            Reason::NotAParticipant => "NOT_A_PARTICIPANT",
            Reason::SyncFinished => "SYNC_FINISHED",
            Reason::SyncTimeout => "SYNC_TIMEOUT",
            Reason::SyncAborted => "SYNC_ABORTED",
            Reason::SessionTakenOver => "SESSION_TAKEN_OVER",
            Reason::LeaseExpired => "LEASE_EXPIRED",
            Reason::Paused => "PAUSED",
            Reason::EmergencyStop => "EMERGENCY_STOP",
            Reason::BreakerOpen => "BREAKER_OPEN",
            Reason::SlowConsumer => "SLOW_CONSUMER",
            Reason::NoResponders => "NO_RESPONDERS",
            Reason::RequestTimeout => "REQUEST_TIMEOUT",
            Reason::RequestAborted => "REQUEST_ABORTED",
            Reason::RequestRefused => "REQUEST_REFUSED",
            Reason::UnknownRequest => "UNKNOWN_REQUEST",
            Reason::UnknownVote => "UNKNOWN_VOTE",
            Reason::VoteExists => "VOTE_EXISTS",
            Reason::NotAVoter => "NOT_A_VOTER",
            Reason::DoubleBallot => "DOUBLE_BALLOT",
            Reason::VoteClosed => "VOTE_CLOSED",
            Reason::UnknownOption => "UNKNOWN_OPTION",
            Reason::BadWeight => "BAD_WEIGHT",
            Reason::BadConfidence => "BAD_CONFIDENCE",
            Reason::BadBallot => "BAD_BALLOT",
            Reason::VetoNotAllowed => "VETO_NOT_ALLOWED",
            Reason::CollectiveMismatch => "COLLECTIVE_MISMATCH",
            Reason::NotCollectiveMember => "NOT_COLLECTIVE_MEMBER",
            Reason::CollectiveTimeout => "COLLECTIVE_TIMEOUT",
            Reason::CollectiveAborted => "COLLECTIVE_ABORTED",
            Reason::UnknownGroup => "UNKNOWN_GROUP",
            Reason::NotGroupMember => "NOT_GROUP_MEMBER",
            Reason::GroupBusy => "GROUP_BUSY",
            Reason::GroupPublishAborted => "GROUP_PUBLISH_ABORTED",
            Reason::NoGroupState => "NO_GROUP_STATE",
            Reason::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Reason::ServerShuttingDown => "SERVER_SHUTTING_DOWN",
            Reason::StoreFailed => "STORE_FAILED",
            Reason::AdminTokenMissing => "ADMIN_TOKEN_MISSING",
            Reason::AdminTokenWrong => "ADMIN_TOKEN_WRONG",
            Reason::CommandTimeout => "COMMAND_TIMEOUT",
            Reason::CommandAborted => "COMMAND_ABORTED",
            Reason::BackupFailed => "BACKUP_FAILED",
            Reason::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Reason::ContextConflict => "CONTEXT_CONFLICT",
            Reason::UnknownContextKey => "UNKNOWN_CONTEXT_KEY",
            Reason::UnknownContextVersion => "UNKNOWN_CONTEXT_VERSION",
            Reason::ContextReadOnly => "CONTEXT_READ_ONLY",
            Reason::UnknownTask => "UNKNOWN_TASK",
            Reason::TaskExists => "TASK_EXISTS",
            Reason::TaskCycle => "TASK_CYCLE",
            Reason::TaskNotHeld => "TASK_NOT_HELD",
            Reason::TaskFinished => "TASK_FINISHED",
            Reason::TaskInFlightLimit => "TASK_IN_FLIGHT_LIMIT",
            Reason::TaskNotDeadLettered => "TASK_NOT_DEAD_LETTERED",
            Reason::UnknownTrace => "UNKNOWN_TRACE",
            Reason::TraceExists => "TRACE_EXISTS",
            Reason::TraceClaimed => "TRACE_CLAIMED",
            Reason::TraceTooLarge => "TRACE_TOO_LARGE",
            Reason::TraceHashMismatch => "TRACE_HASH_MISMATCH",
            Reason::TraceWaitTimeout => "TRACE_WAIT_TIMEOUT",
            Reason::UnknownRoundSeries => "UNKNOWN_ROUND_SERIES",
            Reason::RoundSeriesExists => "ROUND_SERIES_EXISTS",
            Reason::NotARoundParticipant => "NOT_A_ROUND_PARTICIPANT",
            Reason::RoundNotOpen => "ROUND_NOT_OPEN",
            Reason::RoundAnswered => "ROUND_ANSWERED",
            Reason::RoundInProgress => "ROUND_IN_PROGRESS",
            Reason::EventTimeOutOfRange => "EVENT_TIME_OUT_OF_RANGE",
            Reason::StreamExists => "STREAM_EXISTS",
            Reason::UnknownStream => "UNKNOWN_STREAM",
            Reason::SchemaViolation => "SCHEMA_VIOLATION",
            Reason::TokenMissing => "TOKEN_MISSING",
            Reason::TokenInvalid => "TOKEN_INVALID",
            Reason::TokenExpired => "TOKEN_EXPIRED",
            Reason::NamespaceDenied => "NAMESPACE_DENIED",
            Reason::PublishDenied => "PUBLISH_DENIED",
            Reason::SubscribeDenied => "SUBSCRIBE_DENIED",
            Reason::AgentDenied => "AGENT_DENIED",
            Reason::StateReadDenied => "STATE_READ_DENIED",
            Reason::AdminDenied => "ADMIN_DENIED",
            Reason::UnknownSystem => "UNKNOWN_SYSTEM",
            Reason::SystemRetired => "SYSTEM_RETIRED",
            Reason::SystemExists => "SYSTEM_EXISTS",
            Reason::UnknownUnit => "UNKNOWN_UNIT",
            Reason::BadMeasurement => "BAD_MEASUREMENT",
            Reason::DependencyCycle => "DEPENDENCY_CYCLE",
            Reason::UnknownDependency => "UNKNOWN_DEPENDENCY",
            Reason::UnknownIncident => "UNKNOWN_INCIDENT",
            Reason::IncidentResolved => "INCIDENT_RESOLVED",
            Reason::EventRateLimited => "EVENT_RATE_LIMITED",
        }
    }

    /// The reason with this wire name; `None` for a name this version does not know (a newer
    /// server's), which a client treats like an error without a reason.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn list_or_count(missing: &[String], count: u32) -> String {
    if missing.is_empty() {
        format!("{count} more agent(s) of the required count")
    } else {
        missing.join(", ")
    }
}

impl CoreError {
    /// The class of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::Invalid { .. }
            | CoreError::NotRegistered
            | CoreError::AlreadyRegisteredHere { .. }
            | CoreError::UnknownOption { .. }
            | CoreError::BadWeight { .. }
            | CoreError::BadConfidence { .. }
            | CoreError::BadBallot { .. } => ErrorCode::InvalidArgument,
            CoreError::UnknownVote { .. } | CoreError::UnknownGroup { .. } | CoreError::NoGroupState { .. } => {
                ErrorCode::NotFound
            }
            CoreError::NotGroupMember { .. } | CoreError::GroupBusy { .. } => ErrorCode::FailedPrecondition,
            CoreError::GroupPublishAborted { .. } => ErrorCode::Aborted,
            CoreError::ChecksumMismatch { .. } => ErrorCode::InvalidArgument,
            CoreError::VoteExists { .. } => ErrorCode::AlreadyExists,
            CoreError::NotAVoter { .. }
            | CoreError::DoubleBallot { .. }
            | CoreError::VoteClosed { .. }
            | CoreError::VetoNotAllowed { .. } => ErrorCode::FailedPrecondition,
            CoreError::UnknownAgent { .. } | CoreError::UnknownSyncPoint { .. } | CoreError::UnknownRequest { .. } => {
                ErrorCode::NotFound
            }
            CoreError::AlreadyRegistered { .. } => ErrorCode::AlreadyExists,
            CoreError::Limit { .. } | CoreError::SlowConsumer { .. } => ErrorCode::ResourceExhausted,
            CoreError::SyncMismatch { .. }
            | CoreError::NotAParticipant { .. }
            | CoreError::SyncFinished { .. }
            | CoreError::Paused(_)
            | CoreError::BreakerOpen { .. }
            | CoreError::CollectiveMismatch { .. }
            | CoreError::NotCollectiveMember { .. } => ErrorCode::FailedPrecondition,
            CoreError::SyncTimeout { .. } | CoreError::RequestTimeout { .. } | CoreError::CollectiveTimeout { .. } => {
                ErrorCode::DeadlineExceeded
            }
            CoreError::SyncAborted { .. }
            | CoreError::RequestAborted { .. }
            | CoreError::RequestRefused { .. }
            | CoreError::CollectiveAborted { .. } => ErrorCode::Aborted,
            CoreError::SessionEnded { .. } | CoreError::NoResponders { .. } => ErrorCode::Unavailable,
            CoreError::ContextConflict { .. } | CoreError::ContextReadOnly { .. } => ErrorCode::FailedPrecondition,
            CoreError::UnknownTask { .. } => ErrorCode::NotFound,
            CoreError::TaskExists { .. } => ErrorCode::AlreadyExists,
            CoreError::TaskCycle { .. } => ErrorCode::InvalidArgument,
            CoreError::TaskNotHeld { .. } | CoreError::TaskFinished { .. } | CoreError::TaskNotDeadLettered { .. } => {
                ErrorCode::FailedPrecondition
            }
            CoreError::TaskInFlightLimit { .. } => ErrorCode::ResourceExhausted,
            CoreError::UnknownContextKey { .. } | CoreError::UnknownContextVersion { .. } => ErrorCode::NotFound,
            CoreError::UnknownTrace { .. } => ErrorCode::NotFound,
            CoreError::TraceExists { .. } | CoreError::TraceClaimed { .. } => ErrorCode::FailedPrecondition,
            CoreError::TraceTooLarge { .. } => ErrorCode::ResourceExhausted,
            CoreError::TraceHashMismatch { .. } => ErrorCode::InvalidArgument,
            CoreError::TraceWaitTimeout { .. } => ErrorCode::DeadlineExceeded,
            CoreError::UnknownRoundSeries { .. } => ErrorCode::NotFound,
            CoreError::RoundSeriesExists { .. } => ErrorCode::AlreadyExists,
            CoreError::NotARoundParticipant { .. }
            | CoreError::RoundNotOpen { .. }
            | CoreError::RoundAnswered { .. }
            | CoreError::RoundInProgress { .. } => ErrorCode::FailedPrecondition,
            CoreError::EventTimeOutOfRange { .. } => ErrorCode::InvalidArgument,
            CoreError::StreamExists { .. } => ErrorCode::AlreadyExists,
            CoreError::UnknownStream { .. } => ErrorCode::NotFound,
            CoreError::SchemaViolation { .. } => ErrorCode::InvalidArgument,
            CoreError::Denied(_) => ErrorCode::PermissionDenied,
            CoreError::Systems(e) => e.code(),
        }
    }

    /// Which failure this is, as a stable name for programs.
    pub fn reason(&self) -> Reason {
        use crate::command::PauseCause;
        match self {
            CoreError::Invalid { .. } => Reason::InvalidArgument,
            CoreError::UnknownAgent { .. } => Reason::UnknownAgent,
            CoreError::UnknownSyncPoint { .. } => Reason::UnknownSyncPoint,
            CoreError::AlreadyRegistered { .. } => Reason::AlreadyRegistered,
            CoreError::Limit { .. } => Reason::Limit,
            CoreError::NotRegistered => Reason::NotRegistered,
            CoreError::AlreadyRegisteredHere { .. } => Reason::AlreadyRegisteredHere,
            CoreError::SyncMismatch { .. } => Reason::SyncMismatch,
            CoreError::NotAParticipant { .. } => Reason::NotAParticipant,
            CoreError::SyncFinished { .. } => Reason::SyncFinished,
            CoreError::SyncTimeout { .. } => Reason::SyncTimeout,
            CoreError::SyncAborted { .. } => Reason::SyncAborted,
            CoreError::SessionEnded { cause: SessionEnd::TakenOver, .. } => Reason::SessionTakenOver,
            CoreError::SessionEnded { cause: SessionEnd::LeaseExpired { .. }, .. } => Reason::LeaseExpired,
            CoreError::Paused(refusal) => match refusal.cause {
                PauseCause::Paused { .. } => Reason::Paused,
                PauseCause::EmergencyStop(_) => Reason::EmergencyStop,
            },
            CoreError::BreakerOpen { .. } => Reason::BreakerOpen,
            CoreError::SlowConsumer { .. } => Reason::SlowConsumer,
            CoreError::NoResponders { .. } => Reason::NoResponders,
            CoreError::RequestTimeout { .. } => Reason::RequestTimeout,
            CoreError::RequestAborted { .. } => Reason::RequestAborted,
            CoreError::RequestRefused { .. } => Reason::RequestRefused,
            CoreError::UnknownRequest { .. } => Reason::UnknownRequest,
            CoreError::UnknownVote { .. } => Reason::UnknownVote,
            CoreError::VoteExists { .. } => Reason::VoteExists,
            CoreError::NotAVoter { .. } => Reason::NotAVoter,
            CoreError::DoubleBallot { .. } => Reason::DoubleBallot,
            CoreError::VoteClosed { .. } => Reason::VoteClosed,
            CoreError::UnknownOption { .. } => Reason::UnknownOption,
            CoreError::BadWeight { .. } => Reason::BadWeight,
            CoreError::BadConfidence { .. } => Reason::BadConfidence,
            CoreError::BadBallot { .. } => Reason::BadBallot,
            CoreError::VetoNotAllowed { .. } => Reason::VetoNotAllowed,
            CoreError::CollectiveMismatch { .. } => Reason::CollectiveMismatch,
            CoreError::NotCollectiveMember { .. } => Reason::NotCollectiveMember,
            CoreError::CollectiveTimeout { .. } => Reason::CollectiveTimeout,
            CoreError::CollectiveAborted { .. } => Reason::CollectiveAborted,
            CoreError::UnknownGroup { .. } => Reason::UnknownGroup,
            CoreError::NotGroupMember { .. } => Reason::NotGroupMember,
            CoreError::GroupBusy { .. } => Reason::GroupBusy,
            CoreError::GroupPublishAborted { .. } => Reason::GroupPublishAborted,
            CoreError::NoGroupState { .. } => Reason::NoGroupState,
            CoreError::ChecksumMismatch { .. } => Reason::ChecksumMismatch,
            CoreError::ContextConflict { .. } => Reason::ContextConflict,
            CoreError::UnknownContextKey { .. } => Reason::UnknownContextKey,
            CoreError::UnknownContextVersion { .. } => Reason::UnknownContextVersion,
            CoreError::ContextReadOnly { .. } => Reason::ContextReadOnly,
            CoreError::UnknownTask { .. } => Reason::UnknownTask,
            CoreError::TaskExists { .. } => Reason::TaskExists,
            CoreError::TaskCycle { .. } => Reason::TaskCycle,
            CoreError::TaskNotHeld { .. } => Reason::TaskNotHeld,
            CoreError::TaskFinished { .. } => Reason::TaskFinished,
            CoreError::TaskInFlightLimit { .. } => Reason::TaskInFlightLimit,
            CoreError::TaskNotDeadLettered { .. } => Reason::TaskNotDeadLettered,
            CoreError::UnknownTrace { .. } => Reason::UnknownTrace,
            CoreError::TraceExists { .. } => Reason::TraceExists,
            CoreError::TraceClaimed { .. } => Reason::TraceClaimed,
            CoreError::TraceTooLarge { .. } => Reason::TraceTooLarge,
            CoreError::TraceHashMismatch { .. } => Reason::TraceHashMismatch,
            CoreError::TraceWaitTimeout { .. } => Reason::TraceWaitTimeout,
            CoreError::UnknownRoundSeries { .. } => Reason::UnknownRoundSeries,
            CoreError::RoundSeriesExists { .. } => Reason::RoundSeriesExists,
            CoreError::NotARoundParticipant { .. } => Reason::NotARoundParticipant,
            CoreError::RoundNotOpen { .. } => Reason::RoundNotOpen,
            CoreError::RoundAnswered { .. } => Reason::RoundAnswered,
            CoreError::RoundInProgress { .. } => Reason::RoundInProgress,
            CoreError::EventTimeOutOfRange { .. } => Reason::EventTimeOutOfRange,
            CoreError::StreamExists { .. } => Reason::StreamExists,
            CoreError::UnknownStream { .. } => Reason::UnknownStream,
            CoreError::SchemaViolation { .. } => Reason::SchemaViolation,
            CoreError::Denied(denial) => denial.reason(),
            CoreError::Systems(e) => e.reason(),
        }
    }

    /// The agent the error is about, when it names one (sent as `agent` in the error's metadata).
    pub fn agent(&self) -> Option<&str> {
        match self {
            CoreError::UnknownAgent { agent, .. }
            | CoreError::AlreadyRegistered { agent, .. }
            | CoreError::AlreadyRegisteredHere { agent }
            | CoreError::NotAParticipant { agent, .. }
            | CoreError::SessionEnded { agent, .. }
            | CoreError::BreakerOpen { agent, .. }
            | CoreError::SlowConsumer { agent, .. }
            | CoreError::NotAVoter { agent, .. }
            | CoreError::DoubleBallot { agent, .. }
            | CoreError::BadWeight { agent, .. }
            | CoreError::VetoNotAllowed { agent, .. }
            | CoreError::CollectiveMismatch { agent, .. }
            | CoreError::NotCollectiveMember { agent, .. }
            | CoreError::CollectiveAborted { agent, .. }
            | CoreError::NotGroupMember { agent, .. }
            | CoreError::NotARoundParticipant { agent, .. }
            | CoreError::RoundAnswered { agent, .. } => Some(agent),
            CoreError::RequestTimeout { responder, .. }
            | CoreError::RequestAborted { responder, .. }
            | CoreError::RequestRefused { responder, .. } => Some(responder),
            CoreError::Paused(refusal) => Some(&refusal.agent),
            CoreError::TraceClaimed { holder, .. } | CoreError::TraceWaitTimeout { holder, .. } => Some(holder),
            _ => None,
        }
    }

    /// For barrier failures: the agents that never arrived (or were lost).
    pub fn missing_agents(&self) -> &[String] {
        match self {
            CoreError::SyncTimeout { missing, .. }
            | CoreError::SyncAborted { missing, .. }
            | CoreError::CollectiveTimeout { missing, .. } => missing,
            _ => &[],
        }
    }

    /// For barrier failures: the sync point concerned.
    pub fn sync_id(&self) -> Option<&str> {
        match self {
            CoreError::SyncTimeout { sync_id, .. }
            | CoreError::SyncAborted { sync_id, .. }
            | CoreError::SyncMismatch { sync_id, .. }
            | CoreError::NotAParticipant { sync_id, .. }
            | CoreError::SyncFinished { sync_id, .. } => Some(sync_id),
            _ => None,
        }
    }

    /// For context conflicts: the key's current version (0: it does not exist).
    pub fn current_version(&self) -> Option<u64> {
        match self {
            CoreError::ContextConflict { current, .. } => Some(*current),
            _ => None,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        CoreError::Invalid { what, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_stable_names_that_parse_back() {
        let names: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert!(r.as_str().chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{r}");
        }
        assert_eq!(Reason::parse("SOMETHING_NEWER"), None);
    }

    #[test]
    fn session_end_causes_have_their_own_reasons() {
        let taken = CoreError::SessionEnded { agent: "a".into(), cause: SessionEnd::TakenOver };
        let lost = CoreError::SessionEnded { agent: "a".into(), cause: SessionEnd::LeaseExpired { lease_ms: 3000 } };
        assert_eq!((taken.reason(), lost.reason()), (Reason::SessionTakenOver, Reason::LeaseExpired));
        assert_eq!((taken.code(), lost.code()), (ErrorCode::Unavailable, ErrorCode::Unavailable));
        assert!(lost.to_string().contains("3000 ms (lease lost)"), "{lost}");
        assert_eq!(taken.agent(), Some("a"));
    }

    #[test]
    fn timeout_message_names_missing_agents() {
        let e = CoreError::SyncTimeout {
            sync_id: "s".into(),
            waited_ms: 5,
            missing: vec!["a".into(), "b".into()],
            missing_count: 2,
        };
        assert_eq!(e.code(), ErrorCode::DeadlineExceeded);
        assert!(e.to_string().contains("never arrived: a, b"), "{e}");
        assert_eq!(e.missing_agents(), ["a", "b"]);
        let e = CoreError::SyncTimeout { sync_id: "s".into(), waited_ms: 5, missing: vec![], missing_count: 3 };
        assert!(e.to_string().contains("3 more agent(s)"), "{e}");
    }
}
