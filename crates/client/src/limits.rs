//! The limits a server announces when an agent registers, and the check every message of the
//! agent's session passes before it is sent: a request over a size limit is refused here, naming
//! the limit ([`Error::TooLarge`]), rather than refused by the server after the trip — or, over the
//! cap on one gRPC message, ending the session's stream.

use std::sync::{Arc, Mutex};

use lockstep_proto::v1;
use prost::Message as _;

use crate::Error;

/// The limits of one agent's session, as the server last announced them (updated when the session
/// is resumed). Empty for a server that predates the announcement: the server alone checks then.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionLimits(Arc<Mutex<Option<v1::Limits>>>);

impl SessionLimits {
    pub(crate) fn set(&self, limits: Option<v1::Limits>) {
        *self.0.lock().expect("not poisoned") = limits;
    }

    pub(crate) fn get(&self) -> Option<v1::Limits> {
        *self.0.lock().expect("not poisoned")
    }

    /// Refuses `m` if it is over a limit; `Ok` when no limits are known.
    pub(crate) fn check(&self, m: &v1::ClientMessage) -> Result<(), Error> {
        match self.0.lock().expect("not poisoned").as_ref() {
            Some(limits) => check(limits, m),
            None => Ok(()),
        }
    }
}

/// Checks the payload a message carries against its own limit, then the whole encoded message
/// against the cap on one gRPC message. A limit of 0 was not announced (an older server's
/// `Limits` lacks the newer fields) and is not checked.
fn check(l: &v1::Limits, m: &v1::ClientMessage) -> Result<(), Error> {
    use v1::client_message::Kind;
    let payload = match &m.kind {
        Some(Kind::Publish(p)) => {
            Some(("the payload", p.payload.len(), l.max_message_bytes, "limits.max_payload_bytes"))
        }
        Some(Kind::UpdateState(u)) => {
            Some(("the state delta", u.delta_json.len(), l.max_delta_bytes, "limits.max_delta_bytes"))
        }
        Some(Kind::AgentRequest(r)) => {
            Some(("the request payload", r.payload.len(), l.max_message_bytes, "limits.max_payload_bytes"))
        }
        Some(Kind::Respond(r)) => {
            Some(("the response payload", r.payload.len(), l.max_message_bytes, "limits.max_payload_bytes"))
        }
        Some(Kind::Sync(s)) => {
            Some(("the sync payload", s.payload.len(), l.max_sync_payload_bytes, "limits.max_sync_payload_bytes"))
        }
        _ => None,
    };
    let whole = ("the encoded message", m.encoded_len(), l.max_grpc_message_bytes, "max_grpc_message_bytes");
    for (what, size, limit, setting) in payload.into_iter().chain([whole]) {
        if limit > 0 && size as u64 > limit {
            return Err(Error::TooLarge { what, size: size as u64, limit, setting });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn limits() -> v1::Limits {
        v1::Limits {
            max_message_bytes: 100,
            max_delta_bytes: 50,
            max_sync_payload_bytes: 10,
            max_grpc_message_bytes: 1000,
            ..Default::default()
        }
    }

    fn publish(n: usize) -> v1::ClientMessage {
        let p = v1::Publish { topic: "t".into(), payload: Bytes::from(vec![0; n]), ..Default::default() };
        v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Publish(p)) }
    }

    #[test]
    fn each_payload_is_held_to_its_own_limit_and_the_error_names_it() {
        let l = limits();
        assert!(check(&l, &publish(100)).is_ok());
        let err = check(&l, &publish(101)).unwrap_err();
        assert_eq!(
            err,
            Error::TooLarge { what: "the payload", size: 101, limit: 100, setting: "limits.max_payload_bytes" }
        );
        assert!(err.to_string().contains("limit of 100 bytes (limits.max_payload_bytes)"), "{err}");
        let delta = v1::UpdateState { delta_json: format!("{{\"k\":\"{}\"}}", "x".repeat(50)) };
        let m = v1::ClientMessage { request_id: 1, kind: Some(v1::client_message::Kind::UpdateState(delta)) };
        assert!(matches!(check(&l, &m), Err(Error::TooLarge { limit: 50, .. })));
        let arrive = v1::SyncArrive { sync_id: "s".into(), payload: Bytes::from(vec![1; 11]), ..Default::default() };
        let m = v1::ClientMessage { request_id: 2, kind: Some(v1::client_message::Kind::Sync(arrive)) };
        assert!(matches!(check(&l, &m), Err(Error::TooLarge { setting: "limits.max_sync_payload_bytes", .. })));
    }

    #[test]
    fn the_whole_message_is_held_to_the_message_cap_and_unknown_limits_are_not_checked() {
        let l = v1::Limits { max_message_bytes: 0, ..limits() };
        let err = check(&l, &publish(2000)).unwrap_err();
        assert!(matches!(err, Error::TooLarge { setting: "max_grpc_message_bytes", limit: 1000, .. }), "{err:?}");
        assert_eq!((err.code(), err.reason()), (tonic::Code::InvalidArgument, None));
        assert!(check(&v1::Limits::default(), &publish(1 << 20)).is_ok(), "no limits announced");
        assert!(SessionLimits::default().check(&publish(1 << 20)).is_ok());
    }
}
