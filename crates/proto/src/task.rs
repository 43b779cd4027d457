//! Conversions between task handoff's wire messages and the engine's types (see
//! `lockstep_core::task`).

use lockstep_core::io::Request;
use lockstep_core::task::{Assignment, Pinned, QueueView, Submit, TaskEvent, TaskImage};
use lockstep_core::Time;

use crate::v1;

/// A `SubmitTask` as the engine's request.
pub fn submit(s: v1::SubmitTask) -> Request {
    Request::SubmitTask(Box::new(Submit {
        id: s.id,
        kind: s.r#type,
        input_json: s.input_json,
        context_keys: s.context_keys,
        role: s.role,
        capabilities: s.capabilities,
        priority: s.priority,
        timeout_ms: s.timeout_ms,
        max_attempts: s.max_attempts,
        depends_on: s.depends_on,
    }))
}

/// The session requests of task handoff; `None` for any other message.
pub fn request(kind: v1::client_message::Kind) -> Option<Request> {
    use v1::client_message::Kind;
    Some(match kind {
        Kind::SubmitTask(s) => submit(s),
        Kind::TaskWork(w) => Request::TaskWork { kinds: w.types, max_in_flight: w.max_in_flight },
        Kind::StopTaskWork(_) => Request::StopTaskWork,
        Kind::ClaimTask(c) => Request::ClaimTask { kinds: c.types },
        Kind::StartTask(s) => Request::StartTask { id: s.id, attempt: s.attempt },
        Kind::CompleteTask(c) => Request::CompleteTask { id: c.id, attempt: c.attempt, output_json: c.output_json },
        Kind::FailTask(f) => Request::FailTask { id: f.id, attempt: f.attempt, error: f.error },
        _ => return None,
    })
}

fn pinned(p: &[Pinned]) -> Vec<v1::PinnedContext> {
    p.iter()
        .map(|p| v1::PinnedContext { key: p.key.clone(), version: p.version, value_json: p.value.to_string() })
        .collect()
}

/// A task handed to its executor.
pub fn assignment(a: &Assignment) -> v1::TaskAssignment {
    v1::TaskAssignment {
        id: a.id.to_string(),
        r#type: a.kind.clone(),
        input_json: a.input.to_string(),
        pinned: pinned(&a.pinned),
        dependencies: a
            .dep_outputs
            .iter()
            .map(|(id, out)| v1::DependencyOutput { id: id.clone(), output_json: out.to_string() })
            .collect(),
        attempt: a.attempt,
        deadline_ms: a.deadline_at,
        priority: a.priority,
        submitter: a.submitter.clone(),
        namespace: a.namespace.to_string(),
    }
}

/// A task event.
pub fn event(e: &TaskEvent) -> v1::TaskEvent {
    v1::TaskEvent {
        namespace: e.namespace.to_string(),
        id: e.id.to_string(),
        kind: e.kind.as_str().to_owned(),
        agent: e.agent.clone(),
        attempt: e.attempt,
        error: e.error.clone(),
        output_json: e.output.as_ref().map(|o| o.to_string()).unwrap_or_default(),
        at_ms: e.at,
        submitter: e.submitter.to_string(),
    }
}

/// A task, whole.
pub fn info(t: &TaskImage) -> v1::TaskInfo {
    v1::TaskInfo {
        namespace: t.namespace.clone(),
        id: t.id.clone(),
        r#type: t.kind.clone(),
        input_json: t.input.to_string(),
        pinned: pinned(&t.pinned),
        role: t.role.clone(),
        capabilities: t.capabilities.clone(),
        priority: t.priority,
        timeout_ms: t.timeout_ms,
        max_attempts: t.max_attempts,
        depends_on: t.depends_on.clone(),
        submitter: t.submitter.clone(),
        submitted_at_ms: t.submitted_at,
        state: t.state.as_str().to_owned(),
        attempt: t.attempt,
        failures: t.failures,
        holder: t.holder.clone().unwrap_or_default(),
        deadline_ms: t.deadline_at.unwrap_or(0),
        output_json: t.output.as_ref().map(|o| o.to_string()).unwrap_or_default(),
        finished_at_ms: t.finished_at.unwrap_or(0),
        errors: t
            .errors
            .iter()
            .map(|e| v1::TaskAttemptError {
                attempt: e.attempt,
                agent: e.agent.clone(),
                error: e.error.clone(),
                at_ms: e.at,
            })
            .collect(),
    }
}

/// A queue's figures at `now`.
pub fn queue(q: &QueueView, now: Time) -> v1::TaskQueue {
    v1::TaskQueue {
        namespace: q.namespace.clone(),
        r#type: q.kind.clone(),
        waiting: q.waiting,
        ready: q.ready,
        held: q.held,
        completed: q.completed,
        dead_lettered: q.dead_lettered,
        oldest_ready_age_ms: q.oldest_ready_at.map_or(0, |at| now.saturating_sub(at)),
    }
}
