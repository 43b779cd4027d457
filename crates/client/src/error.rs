//! The client's errors: one variant per failure a caller may handle differently, each carrying the
//! server's message.

use lockstep_proto::v1;
use tonic::Code;

/// A failed lockstep call.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect to lockstep at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The request was malformed (bad id, pattern, delta, size...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The agent id has a live session elsewhere.
    #[error("already registered: {0}")]
    AlreadyRegistered(String),
    /// The agent or sync point named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A server limit was reached.
    #[error("limit reached: {0}")]
    ResourceExhausted(String),
    /// The request conflicts with the current state (e.g. a sync point defined differently).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A barrier timed out; `missing` never arrived.
    #[error("{message}")]
    SyncTimeout { sync_id: String, missing: Vec<String>, message: String },
    /// A barrier failed because a required participant was lost or left.
    #[error("{message}")]
    SyncAborted { sync_id: String, missing: Vec<String>, message: String },
    /// The session ended (lease lost, taken over, server shut down, connection broken).
    #[error("session ended: {0}")]
    SessionEnded(String),
    /// An admin call without the server's admin token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// An admin call with a wrong token.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The agent did not answer an operator's command in time.
    #[error("command timed out: {0}")]
    CommandTimedOut(String),
    /// The agent answered an operator's command with an error.
    #[error("the agent reported an error: {0}")]
    CommandFailed(String),
    /// The agent went away before answering an operator's command.
    #[error("command aborted: {0}")]
    CommandAborted(String),
    /// The client's own input could not be encoded (e.g. a state delta that is not valid JSON).
    #[error("invalid input: {0}")]
    Input(String),
    /// Any other status from the server.
    #[error("{code:?}: {message}")]
    Other { code: Code, message: String },
}

impl Error {
    fn from_parts(code: Code, message: String, sync_id: String, missing: Vec<String>) -> Self {
        match code {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::AlreadyExists => Error::AlreadyRegistered(message),
            Code::NotFound => Error::NotFound(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::DeadlineExceeded => Error::SyncTimeout { sync_id, missing, message },
            Code::Aborted => Error::SyncAborted { sync_id, missing, message },
            Code::Unavailable | Code::Cancelled => Error::SessionEnded(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            code => Error::Other { code, message },
        }
    }

    /// The gRPC code this error stands for.
    pub fn code(&self) -> Code {
        match self {
            Error::Connect { .. } | Error::SessionEnded(_) => Code::Unavailable,
            Error::InvalidArgument(_) | Error::Input(_) => Code::InvalidArgument,
            Error::AlreadyRegistered(_) => Code::AlreadyExists,
            Error::NotFound(_) => Code::NotFound,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::SyncTimeout { .. } => Code::DeadlineExceeded,
            Error::SyncAborted { .. } => Code::Aborted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::CommandTimedOut(_) => Code::DeadlineExceeded,
            Error::CommandFailed(_) => Code::Unknown,
            Error::CommandAborted(_) => Code::Aborted,
            Error::Other { code, .. } => *code,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::from_parts(s.code(), s.message().to_owned(), String::new(), Vec::new())
    }
}

impl From<v1::Error> for Error {
    fn from(e: v1::Error) -> Self {
        Error::from_parts(Code::from_i32(e.code), e.message, e.sync_id, e.missing_agents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_errors_map_to_typed_variants() {
        let e: Error = v1::Error {
            code: Code::DeadlineExceeded as i32,
            message: "m".into(),
            missing_agents: vec!["b".into()],
            sync_id: "s".into(),
        }
        .into();
        assert_eq!(e, Error::SyncTimeout { sync_id: "s".into(), missing: vec!["b".into()], message: "m".into() });
        let e: Error = tonic::Status::already_exists("taken").into();
        assert_eq!(e, Error::AlreadyRegistered("taken".into()));
        assert_eq!(e.code(), Code::AlreadyExists);
    }
}
