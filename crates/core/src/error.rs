//! Every way a request to the engine can fail, typed. The server maps [`ErrorCode`] onto a gRPC
//! status code one to one, so the code and the message together tell a person what to do.

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
    /// The session is no longer usable (lease lost, taken over).
    Unavailable,
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

    #[error("session for agent '{agent}' ended: {reason}")]
    SessionEnded { agent: String, reason: String },

    #[error(transparent)]
    Paused(#[from] crate::command::Refusal),

    #[error("{}", crate::breaker::open_message(.agent, *.probe_at_ms, .reason))]
    BreakerOpen { agent: String, probe_at_ms: u64, reason: String },

    #[error("slow consumer: agent '{agent}' let its outbound queue of {capacity} messages fill up; the server disconnected it (overflow policy `disconnect`)")]
    SlowConsumer { agent: String, capacity: usize },
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
            CoreError::Invalid { .. } | CoreError::NotRegistered | CoreError::AlreadyRegisteredHere { .. } => {
                ErrorCode::InvalidArgument
            }
            CoreError::UnknownAgent { .. } | CoreError::UnknownSyncPoint { .. } => ErrorCode::NotFound,
            CoreError::AlreadyRegistered { .. } => ErrorCode::AlreadyExists,
            CoreError::Limit { .. } | CoreError::SlowConsumer { .. } => ErrorCode::ResourceExhausted,
            CoreError::SyncMismatch { .. }
            | CoreError::NotAParticipant { .. }
            | CoreError::SyncFinished { .. }
            | CoreError::Paused(_)
            | CoreError::BreakerOpen { .. } => ErrorCode::FailedPrecondition,
            CoreError::SyncTimeout { .. } => ErrorCode::DeadlineExceeded,
            CoreError::SyncAborted { .. } => ErrorCode::Aborted,
            CoreError::SessionEnded { .. } => ErrorCode::Unavailable,
        }
    }

    /// For barrier failures: the agents that never arrived (or were lost).
    pub fn missing_agents(&self) -> &[String] {
        match self {
            CoreError::SyncTimeout { missing, .. } | CoreError::SyncAborted { missing, .. } => missing,
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

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        CoreError::Invalid { what, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
