//! Notices: the significant events operators should hear of — an agent joined, left or was lost,
//! its circuit breaker moved, a sync point timed out, was aborted or forced, a slow consumer was
//! disconnected — collected by the engine in the order they happened, for the shell to write to
//! its log after the turn is committed (`Engine::take_notices`).
//!
//! What it guarantees: never one notice per message (routing, state updates and acknowledgements
//! make none); at most [`MAX_NOTICES_PER_TURN`] are kept between two drains, and the ones past it
//! are counted ([`Notices::dropped`]) rather than held, so that a storm of joins cannot grow the
//! engine's memory. Operators' actions are not notices: they are in the audit log, which the shell
//! logs beside these.

use std::sync::Arc;

use crate::breaker::BreakerState;

/// The most notices kept between two drains (the shell drains after every turn).
pub const MAX_NOTICES_PER_TURN: usize = 4096;

/// How many of a sync point's missing agents a notice names (a log line stays a line).
pub const MISSING_NAMED: usize = 16;

/// One significant event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    AgentJoined {
        namespace: Arc<str>,
        agent: Arc<str>,
        role: Arc<str>,
    },
    /// Deregistered, or forgotten after being lost; `why` says which.
    AgentLeft {
        namespace: Arc<str>,
        agent: Arc<str>,
        why: String,
    },
    /// Its lease ran out: no sign of life for the lease's length.
    AgentLost {
        namespace: Arc<str>,
        agent: Arc<str>,
    },
    /// Its circuit breaker moved from `from` to `to`, for `why`.
    BreakerMoved {
        namespace: Arc<str>,
        agent: Arc<str>,
        from: BreakerState,
        to: BreakerState,
        why: String,
    },
    /// A sync point ended without everyone: `outcome` is `timed_out`, `aborted` or `forced`;
    /// `missing` names the first [`MISSING_NAMED`] of the `missing_count` agents that had not arrived.
    SyncPointEnded {
        namespace: Arc<str>,
        sync_id: Arc<str>,
        outcome: &'static str,
        missing: Vec<String>,
        missing_count: usize,
    },
    /// Its outbound queue of `capacity` messages filled up; its session was ended.
    SlowConsumer {
        namespace: Arc<str>,
        agent: Arc<str>,
        capacity: usize,
    },
}

/// The notices of the current turn, bounded.
#[derive(Debug, Default)]
pub struct Notices {
    kept: Vec<Notice>,
    dropped: u64,
}

impl Notices {
    /// Keeps `notice`, or counts it when [`MAX_NOTICES_PER_TURN`] are kept already.
    pub fn push(&mut self, notice: Notice) {
        if self.kept.len() < MAX_NOTICES_PER_TURN {
            self.kept.push(notice);
        } else {
            self.dropped += 1;
        }
    }

    /// The notices kept, oldest first.
    pub fn kept(&self) -> &[Notice] {
        &self.kept
    }

    /// How many were not kept because the limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.dropped == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_past_the_limit_are_counted_not_kept() {
        let mut notices = Notices::default();
        assert!(notices.is_empty());
        for i in 0..MAX_NOTICES_PER_TURN + 3 {
            notices.push(Notice::AgentLost { namespace: "default".into(), agent: i.to_string().into() });
        }
        assert_eq!(notices.kept().len(), MAX_NOTICES_PER_TURN);
        assert_eq!(notices.dropped(), 3);
        assert_eq!(notices.kept()[0], Notice::AgentLost { namespace: "default".into(), agent: "0".into() });
        assert!(!notices.is_empty());
    }
}
