//! The engine's side of the intake: agents' publishes pass through the rule set in force before
//! they are routed (a refusal is the publish's error, and nothing of it is routed, but its
//! dead-letter copy); operators replace the rule set as an admin action (versioned, audited,
//! kept durably). The rules are in [`crate::intake`].

use std::sync::Arc;

use bytes::Bytes;

use super::{Engine, Touched};
use crate::command::{AuditEntry, AuditOutcome};
use crate::durable::Change;
use crate::error::CoreError;
use crate::intake::{Intake, IntakeImage, IntakeView, RuleSet};
use crate::io::Time;

impl Engine {
    /// An agent's publish: validated and categorised by the intake, then routed.
    pub(super) fn intake_publish(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        publisher: &Arc<str>,
        topic: &str,
        payload: Bytes,
        content_type: &str,
    ) -> Result<(), CoreError> {
        if self.intake.is_empty() {
            return self.publish(ns, publisher, topic, payload, content_type);
        }
        // Checked before the intake looks at it, so that a malformed topic is refused as such.
        crate::topic::validate_topic(topic, self.config.limits.max_topic_len)?;
        let (settings, max_topic_len) = (&self.config.intake, self.config.limits.max_topic_len);
        match self.intake.take(now, (ns, publisher), topic, &payload, settings, max_topic_len) {
            Ok(None) => self.publish_enveloped(ns, publisher, topic, payload, content_type, None),
            Ok(Some(routed)) => {
                let mut envelope = routed.envelope;
                if let (Some(e), Some(series)) = (envelope.as_mut(), routed.round_series.as_deref()) {
                    e.tick = self.open_round_number(ns, series);
                }
                // A target is a valid topic: built and checked by the intake, or checked with the set.
                self.publish_enveloped(ns, publisher, &routed.topic, payload, content_type, envelope)
            }
            Err(refusal) => {
                if let Some(dead) = &refusal.dead_letter {
                    // A copy as published; a dead-letter topic is never under the same schema.
                    let _ = self.publish(ns, publisher, dead, payload, content_type);
                }
                Err(refusal.error())
            }
        }
    }

    /// The number of the open round of series `name` of `ns`; 0 when none is open.
    fn open_round_number(&self, ns: &Arc<str>, name: &str) -> u64 {
        let key = (ns.clone(), Arc::<str>::from(name));
        self.rounds.get(&key).and_then(|s| s.open.as_ref()).map_or(0, |o| o.round)
    }

    /// Replaces the rule set with `rules_json` (a [`RuleSet`] as JSON) as the next version; an
    /// invalid set is refused with the place of the problem and the one in force stays. Audited.
    pub(super) fn replace_intake(&mut self, now: Time, actor: &str, rules_json: &str) -> Result<String, CoreError> {
        let result = self.compile_intake(rules_json).map(|next| {
            let version = next.version();
            self.intake.replace(next);
            self.touch(Touched::Intake);
            format!("intake rule set version {version} in force")
        });
        let outcome = if result.is_ok() { AuditOutcome::Ok } else { AuditOutcome::Refused };
        let detail = match &result {
            Ok(d) => d.clone(),
            Err(e) => e.to_string(),
        };
        self.control.record(AuditEntry::new(now, actor, "replace_intake", outcome).detail(detail));
        result
    }

    fn compile_intake(&self, rules_json: &str) -> Result<Intake, CoreError> {
        let set: RuleSet = serde_json::from_str(rules_json).map_err(|e| CoreError::Invalid {
            what: "intake rule set",
            reason: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
        let settings = &self.config.intake;
        Intake::compile(set, self.intake.version() + 1, settings, self.config.limits.max_topic_len)
    }

    /// The change that keeps the rule set in force.
    pub(super) fn intake_change(&self) -> Change {
        Change::Intake(Box::new(IntakeImage { version: self.intake.version(), set: self.intake.rule_set().clone() }))
    }

    /// Takes back a replaced rule set (it was valid when kept; one the limits now refuse is an
    /// error naming it).
    pub(super) fn restore_intake(&mut self, image: Option<IntakeImage>) -> Result<(), CoreError> {
        let Some(image) = image else { return Ok(()) };
        let next = Intake::compile(image.set, image.version, &self.config.intake, self.config.limits.max_topic_len)
            .map_err(|e| CoreError::invalid("stored data", format!("the kept intake rule set: {e}")))?;
        self.intake.replace(next);
        Ok(())
    }

    /// The rule set in force, its version and the intake's counters.
    pub fn intake_status(&self) -> IntakeView {
        IntakeView {
            version: self.intake.version(),
            set: self.intake.rule_set().clone(),
            stats: self.intake.stats().clone(),
        }
    }
}
