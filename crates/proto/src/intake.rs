//! The wire side of the intake: its rule set and counters as `IntakeInfo`, and a refusal's schema
//! errors as `SchemaError`s.

use lockstep_core::intake::{IntakeView, Violation};
use lockstep_core::CoreError;

use crate::v1;

fn counts(map: &std::collections::BTreeMap<String, u64>) -> Vec<v1::IntakeCount> {
    map.iter().map(|(key, count)| v1::IntakeCount { key: key.clone(), count: *count }).collect()
}

/// The rule set in force and the counters.
pub fn intake_info(v: &IntakeView) -> v1::IntakeInfo {
    let s = &v.stats;
    v1::IntakeInfo {
        version: v.version,
        rules_json: v.set.to_json(),
        validated: s.validated,
        refused: s.refused,
        refused_by_topic: counts(&s.refused_by_topic),
        refused_by_publisher: counts(&s.refused_by_publisher),
        dead_lettered: s.dead_lettered,
        categorised: s.categorised,
        matched_by_rule: counts(&s.matched_by_rule),
        unmatched: s.unmatched,
    }
}

/// The schema errors an error carries (none unless it is a `SCHEMA_VIOLATION`).
pub fn schema_errors(e: &CoreError) -> Vec<v1::SchemaError> {
    match e {
        CoreError::SchemaViolation { violations, .. } => violations.iter().map(schema_error).collect(),
        _ => Vec::new(),
    }
}

fn schema_error(v: &Violation) -> v1::SchemaError {
    v1::SchemaError { path: v.path.clone(), reason: v.reason.clone() }
}
