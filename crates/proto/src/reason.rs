//! Error reasons on the wire. Every status the server ends a call with carries a
//! `google.rpc.ErrorInfo` in its details: the [`Reason`]'s stable name, the domain [`DOMAIN`], and
//! metadata (`agent`, `sync_id`, `missing`) when the error names them. A reply's in-stream `Error`
//! carries the same name in its `reason` field. Clients read the reason back with [`of_status`]
//! and [`of_error`], and decide by it alone.
//!
//! Testing aid: with `LOCKSTEP_REWORD_ERRORS=1` in the server's environment every message made
//! here is replaced by a scrambled wording ([`reword`]) while reasons stay, so a client test suite
//! run against such a server proves that no decision depends on a message's words.

use std::collections::HashMap;
use std::sync::OnceLock;

use lockstep_core::Reason;
use tonic_types::{ErrorDetails, StatusExt};

use crate::v1;

/// The `domain` of lockstep's `ErrorInfo`s.
pub const DOMAIN: &str = "lockstep";

/// The environment variable that turns rewording on (`1`); see the module documentation.
pub const REWORD_ENV: &str = "LOCKSTEP_REWORD_ERRORS";

/// A status with `reason` in its details. `metadata` pairs with an empty value are left out.
pub fn status<'a>(
    code: tonic::Code,
    reason: Reason,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> tonic::Status {
    let metadata: HashMap<String, String> =
        metadata.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_owned(), v)).collect();
    let details = ErrorDetails::with_error_info(reason.as_str(), DOMAIN, metadata);
    tonic::Status::with_error_details(code, outgoing(message.into()), details)
}

/// The reason a status carries; `None` when it has none (a broken connection, a status made by
/// the transport, a reason this version does not know).
pub fn of_status(status: &tonic::Status) -> Option<Reason> {
    let info = status.get_details_error_info()?;
    (info.domain == DOMAIN).then(|| Reason::parse(&info.reason)).flatten()
}

/// What a status names under `key` in its `ErrorInfo` (`agent`, `missing`...), empty when nothing.
pub fn named(status: &tonic::Status, key: &str) -> String {
    status.get_details_error_info().and_then(|i| i.metadata.get(key).cloned()).unwrap_or_default()
}

/// The reason an in-stream `Error` carries; `None` when it has none.
pub fn of_error(error: &v1::Error) -> Option<Reason> {
    Reason::parse(&error.reason)
}

/// A message as it leaves the server: itself, or its scrambled wording when rewording is on.
pub(crate) fn outgoing(message: String) -> String {
    static REWORDING: OnceLock<bool> = OnceLock::new();
    if *REWORDING.get_or_init(|| std::env::var(REWORD_ENV).is_ok_and(|v| v == "1")) {
        reword(&message)
    } else {
        message
    }
}

/// The scrambled wording of a message: its characters in reverse order behind a marker, so that no
/// word of four letters or more survives (palindromes aside) while its length and content remain
/// recognisable to a person reading a test log.
pub fn reword(message: &str) -> String {
    format!("(reworded) {}", message.chars().rev().collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_its_reason_and_metadata() {
        let s = status(
            tonic::Code::Unavailable,
            Reason::ServerShuttingDown,
            "bye",
            [("agent", "a".to_owned()), ("sync_id", String::new())],
        );
        assert_eq!(of_status(&s), Some(Reason::ServerShuttingDown));
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.metadata, HashMap::from([("agent".to_owned(), "a".to_owned())]));
        assert_eq!(of_status(&tonic::Status::unavailable("no details")), None);
    }
}
