//! The server's intake: the rule set (JSON Schemas and categorisation routes by topic pattern) that
//! every published record passes before it is routed, its version and its counters, read and
//! replaced from anywhere. A record that fails its schema is refused to its publisher with
//! [`Error::SchemaViolation`]; one a route categorises arrives on its category topic with an
//! [`IntakeEnvelope`](crate::IntakeEnvelope) in [`Delivery::intake`](crate::Delivery::intake).

use std::collections::BTreeMap;

use crate::Channel;
pub use lockstep_core::intake::IntakeStats;
use lockstep_proto::v1;
use lockstep_proto::v1::intake_client::IntakeClient as Grpc;

use crate::Error;

/// A handle on a server's `Intake` service.
#[derive(Clone)]
pub struct IntakeClient {
    grpc: Grpc<Channel>,
}

/// The rule set in force and the intake's counters since the server started.
#[derive(Clone, Debug, PartialEq)]
pub struct IntakeStatus {
    /// 1: the configuration file's set; each replacement takes the next.
    pub version: u64,
    /// The rule set as JSON (`{"schemas": [...], "routes": [...]}`).
    pub rules: serde_json::Value,
    /// Refusals per topic and per publisher (`namespace/agent`), categorised records per rule
    /// (`<route topic>/<rule name>`), unmatched ones.
    pub stats: IntakeStats,
}

fn counts(items: Vec<v1::IntakeCount>) -> BTreeMap<String, u64> {
    items.into_iter().map(|c| (c.key, c.count)).collect()
}

impl IntakeClient {
    /// On `channel`, which carries the caller's credentials (see `Client::intake`).
    pub(crate) fn new(channel: Channel) -> Self {
        IntakeClient { grpc: Grpc::new(channel) }
    }

    /// The rule set in force, its version and the counters.
    pub async fn status(&self) -> Result<IntakeStatus, Error> {
        let i = self.grpc.clone().get_intake(v1::IntakeRequest {}).await?.into_inner();
        let rules =
            serde_json::from_str(&i.rules_json).map_err(|e| Error::Input(format!("the server's rule set: {e}")))?;
        let stats = IntakeStats {
            validated: i.validated,
            refused: i.refused,
            refused_by_topic: counts(i.refused_by_topic),
            refused_by_publisher: counts(i.refused_by_publisher),
            dead_lettered: i.dead_lettered,
            categorised: i.categorised,
            matched_by_rule: counts(i.matched_by_rule),
            unmatched: i.unmatched,
        };
        Ok(IntakeStatus { version: i.version, rules, stats })
    }

    /// Replaces the whole rule set (`{"schemas": [...], "routes": [...]}`); returns the version it
    /// took. An invalid set fails with `INVALID_ARGUMENT` naming the place of the problem, and the
    /// set in force stays. Needs the admin token when the server has one; audited.
    pub async fn replace(&self, rules: &serde_json::Value) -> Result<u64, Error> {
        let request = v1::ReplaceIntakeRequest { rules_json: rules.to_string() };
        Ok(self.grpc.clone().replace_intake(request).await?.into_inner().version)
    }
}
