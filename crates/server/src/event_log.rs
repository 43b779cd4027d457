//! The server's log of significant events: one line per agent joined, left or lost, breaker
//! moved, sync point ended without everyone, slow consumer disconnected (the engine's notices,
//! see `lockstep_core::notice`), and per operator action (each new audit log entry, with its
//! actor), written by the driver once the turn that made them is committed — never one per
//! message. Each line carries structured fields (`namespace`, `agent`, `sync_id`, `actor`,
//! `subject`...) so
//! that the JSON log format (`--log-format json`) can be filtered by them.

use lockstep_core::breaker::BreakerState;
use lockstep_core::command::{AuditEntry, AuditOutcome};
use lockstep_core::notice::{Notice, Notices};

/// Logs a turn's notices, oldest first, and how many did not fit (if any).
pub fn notices(notices: &Notices) {
    for notice in notices.kept() {
        log(notice);
    }
    if notices.dropped() > 0 {
        tracing::warn!(dropped = notices.dropped(), "more notices in one turn than are logged; the rest were counted");
    }
}

fn log(notice: &Notice) {
    match notice {
        Notice::AgentJoined { namespace, agent, role } => {
            tracing::info!(namespace = &**namespace, agent = &**agent, role = &**role, "agent joined");
        }
        Notice::AgentLeft { namespace, agent, why } => {
            tracing::info!(namespace = &**namespace, agent = &**agent, why = why.as_str(), "agent left");
        }
        Notice::AgentLost { namespace, agent } => {
            tracing::warn!(namespace = &**namespace, agent = &**agent, "agent lost: its lease ran out");
        }
        Notice::BreakerMoved { namespace, agent, from, to, why } => {
            let opened = *to == BreakerState::Open;
            let (from, to) = (from.as_str(), to.as_str());
            if opened {
                tracing::warn!(
                    namespace = &**namespace,
                    agent = &**agent,
                    from,
                    to,
                    why = why.as_str(),
                    "breaker opened"
                );
            } else {
                tracing::info!(
                    namespace = &**namespace,
                    agent = &**agent,
                    from,
                    to,
                    why = why.as_str(),
                    "breaker moved"
                );
            }
        }
        // Forced by an operator (whose action the audit line tells): no warning.
        Notice::SyncPointEnded { namespace, sync_id, outcome: "forced", missing, missing_count } => {
            let missing = missing.join(",");
            tracing::info!(
                namespace = &**namespace,
                sync_id = &**sync_id,
                outcome = "forced",
                missing = missing.as_str(),
                missing_count = *missing_count,
                "sync point ended without everyone"
            );
        }
        Notice::SyncPointEnded { namespace, sync_id, outcome, missing, missing_count } => {
            let missing = missing.join(",");
            tracing::warn!(
                namespace = &**namespace,
                sync_id = &**sync_id,
                outcome = *outcome,
                missing = missing.as_str(),
                missing_count = *missing_count,
                "sync point ended without everyone"
            );
        }
        Notice::SlowConsumer { namespace, agent, capacity } => {
            tracing::warn!(
                namespace = &**namespace,
                agent = &**agent,
                capacity = *capacity,
                "slow consumer disconnected: its outbound queue was full"
            );
        }
    }
}

/// Logs an operator's action (or a command's end) from the audit log.
pub fn audit(entry: &AuditEntry) {
    let (actor, action, outcome) = (entry.actor.as_str(), entry.command.as_str(), entry.outcome.as_str());
    // `subject`, not `target`: the JSON format's `target` is the module that logged.
    let (namespace, subject, detail) = (entry.namespace.as_str(), entry.target.as_str(), entry.detail.as_str());
    if entry.outcome == AuditOutcome::Ok {
        tracing::info!(seq = entry.seq, actor, action, namespace, subject, outcome, detail, "operator action");
    } else {
        tracing::warn!(seq = entry.seq, actor, action, namespace, subject, outcome, detail, "operator action");
    }
}
