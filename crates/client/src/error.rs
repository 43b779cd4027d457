//! The client's errors: one variant per failure a caller may handle differently, each carrying the
//! server's message and its [`Reason`]. Which variant an error becomes, and whether a broken
//! session is resumed ([`recovery`]), is decided by the reason alone, never by the message.

use std::ops::Deref;

pub use lockstep_core::Reason;
use lockstep_proto::{reason, v1};
use tonic::Code;

/// What the server said about a failure: its message, for people, and its reason, for programs
/// (`None` for failures the client observed itself, such as a broken connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub message: String,
    pub reason: Option<Reason>,
}

impl Detail {
    /// A server's message with its reason.
    pub fn new(message: impl Into<String>, reason: Option<Reason>) -> Self {
        Detail { message: message.into(), reason }
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A detail reads as its message.
impl Deref for Detail {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

/// A message the client writes itself: it has no reason.
impl From<String> for Detail {
    fn from(message: String) -> Self {
        Detail { message, reason: None }
    }
}

impl From<&str> for Detail {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// One schema error of a refused record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Where in the record, as a JSON pointer (empty: the whole record).
    pub path: String,
    pub reason: String,
}

/// A failed lockstep call.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect to lockstep at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The request was malformed (bad id, pattern, delta, size...).
    #[error("invalid argument: {0}")]
    InvalidArgument(Detail),
    /// The agent id has a live session elsewhere.
    #[error("already registered: {0}")]
    AlreadyRegistered(Detail),
    /// The agent or sync point named does not exist.
    #[error("not found: {0}")]
    NotFound(Detail),
    /// A server limit was reached, or the agent was disconnected as a slow consumer.
    #[error("limit reached: {0}")]
    ResourceExhausted(Detail),
    /// The request conflicts with the current state (a sync point defined differently, the agent
    /// paused, its breaker open...).
    #[error("failed precondition: {0}")]
    FailedPrecondition(Detail),
    /// A barrier timed out; `missing` never arrived.
    #[error("{message}")]
    SyncTimeout { sync_id: String, missing: Vec<String>, message: Detail },
    /// A barrier failed because a required participant was lost or left.
    #[error("{message}")]
    SyncAborted { sync_id: String, missing: Vec<String>, message: Detail },
    /// The session ended (lease lost, taken over, server shut down, connection broken).
    #[error("session ended: {0}")]
    SessionEnded(Detail),
    /// An admin call without the server's admin token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(Detail),
    /// An admin call with a wrong token.
    #[error("permission denied: {0}")]
    PermissionDenied(Detail),
    /// The agent did not answer an operator's command in time.
    #[error("command timed out: {0}")]
    CommandTimedOut(Detail),
    /// The agent answered an operator's command with an error (the agent's text; no reason).
    #[error("the agent reported an error: {0}")]
    CommandFailed(Detail),
    /// The agent went away before answering an operator's command.
    #[error("command aborted: {0}")]
    CommandAborted(Detail),
    /// No other agent can take a request on the topic now (none interested, or all paused or
    /// isolated): try again later, when a responder has joined.
    #[error("no responders: {0}")]
    NoResponders(Detail),
    /// The responder did not answer a request in time (the message names it).
    #[error("request timed out: {0}")]
    RequestTimedOut(Detail),
    /// The responder went away before answering a request.
    #[error("request aborted: {0}")]
    RequestAborted(Detail),
    /// The responder refused a request (its text is in the message).
    #[error("request refused: {0}")]
    RequestRefused(Detail),
    /// A collective was refused or failed, the same way for every member: a member called it
    /// differently (`COLLECTIVE_MISMATCH`), the caller is not in its group
    /// (`NOT_COLLECTIVE_MEMBER`), members were missing at its deadline (`COLLECTIVE_TIMEOUT`), or a
    /// member was lost, left or broke off its transfer (`COLLECTIVE_ABORTED`). `agent` is the
    /// member the error names (if any), `missing` who never joined or finished sending.
    #[error("{message}")]
    CollectiveFailed { agent: String, missing: Vec<String>, message: Detail },
    /// A replica group's state did not move: a publish broke off (`GROUP_PUBLISH_ABORTED`: the
    /// previous version stays current), or bytes did not match their checksum
    /// (`CHECKSUM_MISMATCH`: refused by the server on a publish, or found by this client on a
    /// fetch).
    #[error("{0}")]
    GroupStateFailed(Detail),
    /// The client's own input could not be encoded (e.g. a state delta that is not valid JSON).
    #[error("invalid input: {0}")]
    Input(String),
    /// Refused before sending: `what` is `size` bytes, over the server's `limit` (its setting named
    /// by `setting`, as the server announced it at registration). Nothing was sent.
    #[error("{what} of {size} bytes is over the server's limit of {limit} bytes ({setting}); nothing was sent")]
    TooLarge { what: &'static str, size: u64, limit: u64, setting: &'static str },
    /// A context compare-and-set found the key at another version: `current_version` (0: the
    /// key does not exist). Read it again and retry.
    #[error("conflict: {message}")]
    Conflict { current_version: u64, message: Detail },
    /// A published record failed the JSON Schema of its topic (`SCHEMA_VIOLATION`): where in the
    /// record (a JSON pointer) and why, at most `intake.max_reported_errors` of them. Nothing was
    /// routed.
    #[error("schema violation: {message}")]
    SchemaViolation { errors: Vec<SchemaError>, message: Detail },
    /// Any other status from the server.
    #[error("{code:?}: {message}")]
    Other { code: Code, message: Detail },
}

/// What a client does after its session ended: the reconnection policy of docs/PROTOCOL.md
/// ("Reconnection"), which the Python client follows too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Open a new session presenting the resume token, backing off between attempts (exponential,
    /// with jitter) for at most the reconnection limit.
    Resume,
    /// The session stays ended: report the error.
    GiveUp,
}

/// The policy: what to do when a session ends, or an attempt to resume it fails, with `reason`
/// (`None`: no reason came, i.e. the connection broke or the server could not be reached).
pub fn recovery(reason: Option<Reason>) -> Recovery {
    match reason {
        // The server or the network went away, or the server let go of a session that may come
        // back: the resume token brings it back with its state, watches and pending arrivals.
        None
        | Some(Reason::LeaseExpired)
        | Some(Reason::SlowConsumer)
        | Some(Reason::ServerShuttingDown)
        | Some(Reason::StoreFailed)
        // The stream could not read past an oversized message; the session itself was kept.
        | Some(Reason::MessageTooLarge) => Recovery::Resume,
        // Another connection holds the session now; reconnecting would take it back from them.
        Some(Reason::SessionTakenOver) => Recovery::GiveUp,
        // Anything else is a refusal that another attempt would meet again.
        Some(_) => Recovery::GiveUp,
    }
}

impl Error {
    /// The typed error for a server's failure: chosen by its reason; by its gRPC code only when
    /// it has none (a status made by the transport, or a server that predates reasons).
    fn from_parts(code: Code, detail: Detail, sync_id: String, missing: Vec<String>) -> Self {
        use Reason as R;
        match (detail.reason, code) {
            (Some(R::InvalidArgument | R::NotRegistered | R::AlreadyRegisteredHere | R::TaskCycle), _) => {
                Error::InvalidArgument(detail)
            }
            (
                Some(
                    R::UnknownAgent
                    | R::UnknownSyncPoint
                    | R::UnknownRequest
                    | R::UnknownGroup
                    | R::NoGroupState
                    | R::UnknownContextKey
                    | R::UnknownContextVersion
                    | R::UnknownTask
                    | R::UnknownTrace
                    | R::UnknownRoundSeries,
                ),
                _,
            ) => Error::NotFound(detail),
            (Some(R::TraceHashMismatch), _) => Error::InvalidArgument(detail),
            // --- event-time streams
            (Some(R::EventTimeOutOfRange), _) => Error::InvalidArgument(detail),
            (Some(R::SchemaViolation), _) => Error::SchemaViolation { errors: Vec::new(), message: detail },
            (Some(R::StreamExists), _) => Error::AlreadyRegistered(detail),
            (Some(R::UnknownStream), _) => Error::NotFound(detail),
            (Some(R::TraceTooLarge), _) => Error::ResourceExhausted(detail),
            (Some(R::GroupPublishAborted | R::ChecksumMismatch), _) => Error::GroupStateFailed(detail),
            (Some(R::ContextConflict), _) => Error::Conflict { current_version: 0, message: detail },
            (Some(R::NoResponders), _) => Error::NoResponders(detail),
            (Some(R::RequestTimeout), _) => Error::RequestTimedOut(detail),
            (Some(R::RequestAborted), _) => Error::RequestAborted(detail),
            (Some(R::RequestRefused), _) => Error::RequestRefused(detail),
            (Some(R::AlreadyRegistered | R::TaskExists | R::RoundSeriesExists), _) => Error::AlreadyRegistered(detail),
            (Some(R::Limit | R::SlowConsumer | R::MessageTooLarge | R::TaskInFlightLimit), _) => {
                Error::ResourceExhausted(detail)
            }
            (
                Some(
                    R::SyncMismatch
                    | R::NotAParticipant
                    | R::SyncFinished
                    | R::Paused
                    | R::EmergencyStop
                    | R::BreakerOpen
                    | R::NotGroupMember
                    | R::GroupBusy
                    | R::ContextReadOnly
                    | R::TaskNotHeld
                    | R::TaskFinished
                    | R::TaskNotDeadLettered
                    | R::TraceExists
                    | R::TraceClaimed
                    | R::NotARoundParticipant
                    | R::RoundNotOpen
                    | R::RoundAnswered
                    | R::RoundInProgress,
                ),
                _,
            ) => Error::FailedPrecondition(detail),
            (Some(R::SyncTimeout), _) => Error::SyncTimeout { sync_id, missing, message: detail },
            (Some(R::CollectiveMismatch | R::NotCollectiveMember | R::CollectiveTimeout | R::CollectiveAborted), _) => {
                Error::CollectiveFailed { agent: sync_id, missing, message: detail }
            }
            (Some(R::SyncAborted), _) => Error::SyncAborted { sync_id, missing, message: detail },
            (Some(R::SessionTakenOver | R::LeaseExpired | R::ServerShuttingDown | R::StoreFailed), _) => {
                Error::SessionEnded(detail)
            }
            (Some(R::AdminTokenMissing | R::TokenMissing | R::TokenInvalid | R::TokenExpired), _) => {
                Error::Unauthenticated(detail)
            }
            (
                Some(
                    R::AdminTokenWrong
                    | R::NamespaceDenied
                    | R::PublishDenied
                    | R::SubscribeDenied
                    | R::AgentDenied
                    | R::StateReadDenied
                    | R::AdminDenied,
                ),
                _,
            ) => Error::PermissionDenied(detail),
            (Some(R::CommandTimeout), _) => Error::CommandTimedOut(detail),
            (Some(R::CommandAborted), _) => Error::CommandAborted(detail),
            (Some(R::BackupFailed) | None, Code::InvalidArgument) => Error::InvalidArgument(detail),
            (Some(R::BackupFailed) | None, Code::FailedPrecondition) => Error::FailedPrecondition(detail),
            (None, Code::AlreadyExists) => Error::AlreadyRegistered(detail),
            (None, Code::NotFound) => Error::NotFound(detail),
            (None, Code::ResourceExhausted) => Error::ResourceExhausted(detail),
            (None, Code::DeadlineExceeded) => Error::SyncTimeout { sync_id, missing, message: detail },
            (None, Code::Aborted) => Error::SyncAborted { sync_id, missing, message: detail },
            (None, Code::Unavailable | Code::Cancelled) => Error::SessionEnded(detail),
            (None, Code::Unauthenticated) => Error::Unauthenticated(detail),
            (None, Code::PermissionDenied) => Error::PermissionDenied(detail),
            (_, code) => Error::Other { code, message: detail },
        }
    }

    /// Which failure this is, as the server named it; `None` for failures without a reason (the
    /// connection, the client's own input, a server that predates reasons).
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Connect { .. } | Error::Input(_) | Error::TooLarge { .. } => None,
            Error::InvalidArgument(d)
            | Error::AlreadyRegistered(d)
            | Error::NotFound(d)
            | Error::ResourceExhausted(d)
            | Error::FailedPrecondition(d)
            | Error::SyncTimeout { message: d, .. }
            | Error::SyncAborted { message: d, .. }
            | Error::SessionEnded(d)
            | Error::Unauthenticated(d)
            | Error::PermissionDenied(d)
            | Error::CommandTimedOut(d)
            | Error::CommandFailed(d)
            | Error::CommandAborted(d)
            | Error::NoResponders(d)
            | Error::RequestTimedOut(d)
            | Error::RequestAborted(d)
            | Error::RequestRefused(d)
            | Error::CollectiveFailed { message: d, .. }
            | Error::GroupStateFailed(d)
            | Error::Conflict { message: d, .. }
            | Error::SchemaViolation { message: d, .. }
            | Error::Other { message: d, .. } => d.reason,
        }
    }

    /// The gRPC code this error stands for.
    pub fn code(&self) -> Code {
        match self {
            Error::Connect { .. } | Error::SessionEnded(_) => Code::Unavailable,
            Error::InvalidArgument(_) | Error::Input(_) | Error::TooLarge { .. } | Error::SchemaViolation { .. } => {
                Code::InvalidArgument
            }
            Error::AlreadyRegistered(_) => Code::AlreadyExists,
            Error::NotFound(_) => Code::NotFound,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::FailedPrecondition(_) | Error::Conflict { .. } => Code::FailedPrecondition,
            Error::SyncTimeout { .. } => Code::DeadlineExceeded,
            Error::SyncAborted { .. } => Code::Aborted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::CommandTimedOut(_) => Code::DeadlineExceeded,
            Error::CommandFailed(_) => Code::Unknown,
            Error::CommandAborted(_) => Code::Aborted,
            Error::NoResponders(_) => Code::Unavailable,
            Error::RequestTimedOut(_) => Code::DeadlineExceeded,
            Error::RequestAborted(_) | Error::RequestRefused(_) => Code::Aborted,
            Error::CollectiveFailed { message, .. } => match message.reason {
                Some(Reason::CollectiveTimeout) => Code::DeadlineExceeded,
                Some(Reason::CollectiveAborted) => Code::Aborted,
                _ => Code::FailedPrecondition,
            },
            Error::GroupStateFailed(d) => match d.reason {
                Some(Reason::ChecksumMismatch) => Code::InvalidArgument,
                _ => Code::Aborted,
            },
            Error::Other { code, .. } => *code,
        }
    }
}

/// `message` followed by its causes' (`a: b: c`), skipping a cause that only repeats
/// what was already said. The transport's errors say little on their own ("transport error"):
/// the cause is what names a refused certificate or a peer that does not speak TLS.
pub(crate) fn with_causes(message: String, mut cause: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut text = message;
    while let Some(e) = cause {
        let said = e.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = e.source();
    }
    text
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        let detail =
            Detail::new(with_causes(s.message().to_owned(), std::error::Error::source(&s)), reason::of_status(&s));
        // What the status names, for the errors that carry it (a collective's member and missing).
        let named = |key: &str| reason::named(&s, key);
        let missing: Vec<String> = named("missing").split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect();
        match Error::from_parts(s.code(), detail, String::new(), Vec::new()) {
            Error::CollectiveFailed { message, .. } => {
                Error::CollectiveFailed { agent: named("agent"), missing, message }
            }
            Error::Conflict { message, .. } => {
                Error::Conflict { current_version: named("current_version").parse().unwrap_or(0), message }
            }
            other => other,
        }
    }
}

impl From<v1::Error> for Error {
    fn from(e: v1::Error) -> Self {
        let detail = Detail::new(e.message.clone(), reason::of_error(&e));
        match Error::from_parts(Code::from_i32(e.code), detail, e.sync_id, e.missing_agents) {
            Error::Conflict { message, .. } => Error::Conflict { current_version: e.current_version, message },
            Error::SchemaViolation { message, .. } => Error::SchemaViolation {
                errors: e.schema_errors.into_iter().map(|s| SchemaError { path: s.path, reason: s.reason }).collect(),
                message,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_errors_map_to_typed_variants_by_reason() {
        let e: Error = v1::Error {
            code: Code::DeadlineExceeded as i32,
            message: "m".into(),
            missing_agents: vec!["b".into()],
            sync_id: "s".into(),
            reason: "SYNC_TIMEOUT".into(),
            current_version: 0,
            schema_errors: Vec::new(),
        }
        .into();
        let message = Detail::new("m", Some(Reason::SyncTimeout));
        assert_eq!(e, Error::SyncTimeout { sync_id: "s".into(), missing: vec!["b".into()], message });
        // The reason decides, whatever the code: a command's timeout is not a barrier's.
        let s = reason::status(Code::DeadlineExceeded, Reason::CommandTimeout, "late", []);
        assert!(matches!(Error::from(s), Error::CommandTimedOut(_)));
        let s = reason::status(Code::FailedPrecondition, Reason::EmergencyStop, "x", []);
        assert_eq!(Error::from(s).reason(), Some(Reason::EmergencyStop));
        // Without a reason (a transport's status), the code still gives the class.
        let e: Error = tonic::Status::already_exists("taken").into();
        assert_eq!(e, Error::AlreadyRegistered("taken".into()));
        assert_eq!((e.code(), e.reason()), (Code::AlreadyExists, None));
    }

    /// The reconnection table of docs/PROTOCOL.md, row by row.
    #[test]
    fn recovery_follows_the_reconnection_table() {
        let resume = [
            None,
            Some(Reason::LeaseExpired),
            Some(Reason::SlowConsumer),
            Some(Reason::ServerShuttingDown),
            Some(Reason::StoreFailed),
            Some(Reason::MessageTooLarge),
        ];
        for r in resume {
            assert_eq!(recovery(r), Recovery::Resume, "{r:?}");
        }
        for r in Reason::ALL.into_iter().filter(|r| !resume.contains(&Some(*r))) {
            assert_eq!(recovery(Some(r)), Recovery::GiveUp, "{r}");
        }
        assert_eq!(recovery(Some(Reason::SessionTakenOver)), Recovery::GiveUp);
    }
}
