//! Task handoff: the assignment registry.
//!
//! An agent submits a task (a type, a JSON input, the context keys it depends on pinned at the
//! versions current at submission, requirements, a priority, a deadline per attempt, at most so
//! many attempts, and the tasks it depends on). A task whose dependencies are all completed is
//! ready; the registry hands ready tasks to agents that asked for work (highest priority first,
//! then oldest; among eligible agents with room the one holding fewest, then the one served
//! longest ago) or to an agent that claims one. The holder of a task is fenced by the attempt
//! number: exactly one completion is accepted per task, and a completion or failure from an
//! agent that does not hold the task's current attempt is refused with the reason.
//!
//! Every failure (reported, executor lost, deadline missed) counts an attempt; past the maximum
//! the task is dead-lettered with every attempt's error, and so are the tasks that depend on it.
//! An operator can retry a dead-lettered task (its attempts count from zero again).
//!
//! Guarantees: every change is validated before anything is applied; tasks are kept whole in
//! [`TaskImage`]s (the durable form is the state itself); nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CoreError;
use crate::io::Time;
use crate::name;

/// Limits of task handoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSettings {
    /// Most tasks of one namespace not yet completed or dead-lettered.
    pub max_outstanding: usize,
    /// Completed and dead-lettered tasks each namespace keeps (oldest forgotten first, never one
    /// an unfinished task depends on).
    pub max_finished: usize,
    /// Largest input, output (their JSON text) and error text, in bytes.
    pub max_input_bytes: usize,
    pub max_output_bytes: usize,
    pub max_error_bytes: usize,
    /// Deepest nesting of an input or output.
    pub max_depth: usize,
    /// Most context keys one task pins.
    pub max_pinned_keys: usize,
    /// Most tasks one task depends on.
    pub max_deps: usize,
    /// Most tasks one agent holds at once (an agent asking for work may ask for fewer).
    pub max_in_flight_per_agent: u32,
    /// Most attempts a task may ask for, and the attempts of a task that asks for none.
    pub max_attempts: u32,
    pub default_attempts: u32,
    /// The deadline of an attempt when the task names none, and the longest one may name (ms).
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings {
            max_outstanding: 100_000,
            max_finished: 10_000,
            max_input_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_error_bytes: 4096,
            max_depth: 32,
            max_pinned_keys: 32,
            max_deps: 32,
            max_in_flight_per_agent: 64,
            max_attempts: 100,
            default_attempts: 3,
            default_timeout_ms: 60_000,
            max_timeout_ms: 24 * 3600 * 1000,
        }
    }
}

impl TaskSettings {
    /// Checks the settings make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_outstanding == 0 || self.max_in_flight_per_agent == 0 || self.max_attempts == 0 {
            return Err("max_outstanding, max_in_flight_per_agent and max_attempts must be at least 1".into());
        }
        if self.default_attempts == 0 || self.default_attempts > self.max_attempts {
            return Err("default_attempts must be between 1 and max_attempts".into());
        }
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return Err("default_timeout_ms must be between 1 and max_timeout_ms".into());
        }
        if self.max_depth == 0 || self.max_depth > 128 {
            return Err("max_depth must be between 1 and 128 (the JSON parser's own nesting limit)".into());
        }
        Ok(())
    }
}

/// What an agent asks to be done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Submit {
    /// The task's id; empty: the server names it `t<n>`, n its submission number.
    pub id: String,
    /// Its type (a name): agents ask for work by type.
    pub kind: String,
    pub input_json: String,
    /// Context keys of the submitter's namespace to pin at their current versions.
    pub context_keys: Vec<String>,
    /// The role an executor must have (empty: any).
    pub role: String,
    /// Capabilities an executor must all have.
    pub capabilities: Vec<String>,
    /// Higher goes first.
    pub priority: i32,
    /// The deadline of each attempt, from its assignment (0: the default).
    pub timeout_ms: u64,
    /// At most this many attempts (0: the default).
    pub max_attempts: u32,
    /// Tasks whose outputs this one takes: it is ready once they are all completed.
    pub depends_on: Vec<String>,
}

/// A context key as the task pinned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    pub key: String,
    pub version: u64,
    pub value: Value,
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Some dependency is not completed yet.
    Waiting,
    /// Waiting for an executor.
    Ready,
    /// Held by an executor that has not said it started.
    Assigned,
    /// Held by an executor that started it.
    Running,
    Completed,
    DeadLettered,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Ready => "ready",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::DeadLettered => "dead_lettered",
        }
    }

    /// The state named by [`TaskState::as_str`].
    pub fn parse(s: &str) -> Option<TaskState> {
        use TaskState::*;
        [Waiting, Ready, Assigned, Running, Completed, DeadLettered].into_iter().find(|x| x.as_str() == s)
    }

    /// Completed or dead-lettered: nothing more happens to it (but an operator's retry).
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::DeadLettered)
    }

    fn is_held(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

/// A failed attempt, as the dead-letter list shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    /// The executor (empty when the task failed without one, e.g. for a dependency).
    pub agent: String,
    pub error: String,
    pub at: Time,
}

/// A task, whole: it is also what the store keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskImage {
    pub namespace: String,
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub pinned: Vec<Pinned>,
    pub role: String,
    pub capabilities: Vec<String>,
    pub priority: i32,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub depends_on: Vec<String>,
    pub submitter: String,
    pub submitted_at: Time,
    /// Submission order in the namespace (ties of priority go oldest first).
    pub seq: u64,
    pub state: TaskState,
    /// The current (or last) attempt's number: every assignment takes the next one.
    pub attempt: u32,
    /// Failed attempts counted against `max_attempts` (an operator's retry sets it to 0).
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When the current attempt must be done by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Every failed attempt's error, oldest first.
    pub errors: Vec<AttemptError>,
}

/// What happened to a task, for its submitter and watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Submitted,
    Assigned,
    Started,
    Completed,
    /// An attempt failed (the task will be retried or dead-lettered: another event follows).
    Failed,
    /// The task is ready again after a failure (or an operator's retry).
    Retried,
    DeadLettered,
    /// A completion or failure was refused (a superseded attempt, or an agent not holding the
    /// task); `error` says why.
    Refused,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::Assigned => "assigned",
            EventKind::Started => "started",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Refused => "refused",
        }
    }
}

/// One task event.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskEvent {
    pub namespace: Arc<str>,
    pub id: Arc<str>,
    pub kind: EventKind,
    pub submitter: Arc<str>,
    /// The executor concerned (empty if none).
    pub agent: String,
    pub attempt: u32,
    /// For `failed`, `dead_lettered` and `refused`.
    pub error: String,
    /// For `completed`.
    pub output: Option<Arc<Value>>,
    pub at: Time,
}

/// A task handed to an executor.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub namespace: Arc<str>,
    pub agent: Arc<str>,
    pub id: Arc<str>,
    pub kind: String,
    pub input: Value,
    pub pinned: Vec<Pinned>,
    /// The outputs of the tasks it depends on, in `depends_on` order.
    pub dep_outputs: Vec<(String, Value)>,
    pub attempt: u32,
    pub deadline_at: Time,
    pub priority: i32,
    pub submitter: String,
}

/// What a turn of task handoff produced: events to tell, assignments to hand over, deadlines to
/// arm or disarm, tasks to keep and to forget.
#[derive(Debug, Default)]
pub struct Effects {
    pub events: Vec<TaskEvent>,
    pub assignments: Vec<Assignment>,
    /// (task id, deadline) of attempts that began.
    pub deadlines: Vec<(Arc<str>, Time)>,
    /// Tasks whose attempt ended (their deadline timer goes).
    pub disarm: Vec<Arc<str>>,
    /// Tasks changed (to keep).
    pub touched: BTreeSet<Arc<str>>,
    /// Tasks forgotten (to forget).
    pub removed: Vec<Arc<str>>,
}

/// An agent that asked for work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worker {
    /// Task types it takes (empty: any).
    pub kinds: Vec<String>,
    pub role: String,
    pub capabilities: Vec<String>,
    /// Most tasks it holds at once.
    pub max_in_flight: u32,
    /// When it was last given a task (the registry's own count): the longest unserved goes first.
    served: u64,
}

impl Worker {
    /// An agent of `role` with `capabilities` taking `kinds` (empty: any), at most `max_in_flight`
    /// at once (0: the server's limit).
    pub fn new(kinds: Vec<String>, role: &str, capabilities: &[String], max_in_flight: u32) -> Worker {
        Worker { kinds, role: role.to_owned(), capabilities: capabilities.to_vec(), max_in_flight, served: 0 }
    }

    fn takes(&self, t: &TaskImage) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&t.kind))
            && (t.role.is_empty() || t.role == self.role)
            && t.capabilities.iter().all(|c| self.capabilities.contains(c))
    }
}

/// One namespace's tasks.
#[derive(Debug, Default)]
struct Space {
    tasks: HashMap<Arc<str>, TaskImage>,
    /// Ready tasks: (-priority, seq, id).
    ready: BTreeSet<(i64, u64, Arc<str>)>,
    /// Unfinished tasks waiting on each task.
    dependents: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Agents that asked for work.
    workers: BTreeMap<Arc<str>, Worker>,
    /// Tasks each agent holds.
    held: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Finished tasks, in the order they finished (forgotten from the front).
    finished: VecDeque<Arc<str>>,
    outstanding: usize,
    /// The last submission number given out (a refused submission may use one up).
    next_seq: u64,
    served: u64,
}

/// Every namespace's tasks.
#[derive(Debug, Default)]
pub struct Tasks {
    spaces: HashMap<Arc<str>, Space>,
    /// Refused completions and failures not yet reported (see [`Tasks::take_refusals`]).
    refusals: Vec<TaskEvent>,
}

/// Parses JSON text under a size and depth limit.
fn parse_json(what: &'static str, text: &str, max_bytes: usize, max_depth: usize) -> Result<Value, CoreError> {
    if text.len() > max_bytes {
        return Err(CoreError::invalid(what, format!("{} bytes; the limit is {max_bytes}", text.len())));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| CoreError::invalid(what, format!("not JSON: {e}")))?;
    let depth = crate::context::depth(&value);
    if depth > max_depth {
        return Err(CoreError::invalid(what, format!("nests {depth} levels deep; the limit is {max_depth}")));
    }
    Ok(value)
}

fn count_limit(what: &'static str, n: usize, limit: usize) -> Result<(), CoreError> {
    if n > limit {
        return Err(CoreError::invalid(what, format!("{n} given; the limit is {limit}")));
    }
    Ok(())
}

/// Checks what a submission says that does not depend on the registry's state; the submitter's
/// pinned keys are read by the caller.
pub fn validate(submit: &Submit, settings: &TaskSettings) -> Result<Value, CoreError> {
    if !submit.id.is_empty() {
        name::validate("task id", &submit.id)?;
    }
    name::validate("task type", &submit.kind)?;
    if !submit.role.is_empty() {
        name::validate("role", &submit.role)?;
    }
    for c in &submit.capabilities {
        name::validate("capability", c)?;
    }
    count_limit("context_keys", submit.context_keys.len(), settings.max_pinned_keys)?;
    count_limit("depends_on", submit.depends_on.len(), settings.max_deps)?;
    if submit.max_attempts > settings.max_attempts {
        return Err(CoreError::invalid(
            "max_attempts",
            format!("{}; the limit is {}", submit.max_attempts, settings.max_attempts),
        ));
    }
    if submit.timeout_ms > settings.max_timeout_ms {
        return Err(CoreError::invalid(
            "timeout_ms",
            format!("{} ms; the limit is {} ms", submit.timeout_ms, settings.max_timeout_ms),
        ));
    }
    parse_json("task input", &submit.input_json, settings.max_input_bytes, settings.max_depth)
}

impl Tasks {
    /// Takes a submission by `submitter` of namespace `ns` (already validated, its keys pinned).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        submitter: &str,
        submit: Submit,
        input: Value,
        pinned: Vec<Pinned>,
        settings: &TaskSettings,
    ) -> Result<(Arc<str>, Effects), CoreError> {
        let space = self.spaces.entry(ns.clone()).or_default();
        space.check_room(settings)?;
        space.next_seq += 1;
        let id: Arc<str> = if submit.id.is_empty() {
            // Named by its submission number, skipping a name a submitter chose.
            while space.tasks.contains_key(format!("t{}", space.next_seq).as_str()) {
                space.next_seq += 1;
            }
            format!("t{}", space.next_seq).into()
        } else {
            submit.id.as_str().into()
        };
        if space.tasks.contains_key(&id) {
            return Err(CoreError::TaskExists { id: id.to_string() });
        }
        let mut seen = BTreeSet::new();
        for dep in &submit.depends_on {
            if **dep == *id {
                return Err(CoreError::TaskCycle { id: id.to_string(), path: vec![id.to_string(), id.to_string()] });
            }
            if !space.tasks.contains_key(dep.as_str()) {
                return Err(CoreError::UnknownTask { namespace: ns.to_string(), id: dep.clone() });
            }
            if !seen.insert(dep.as_str()) {
                return Err(CoreError::invalid("depends_on", format!("task '{dep}' is named twice")));
            }
        }
        // A task can only depend on tasks that exist, and those only on older ones: the graph
        // stays acyclic by construction, the self-reference above being the only cycle possible.
        let dead = submit.depends_on.iter().find(|d| space.tasks[d.as_str()].state == TaskState::DeadLettered).cloned();
        let waiting = submit.depends_on.iter().any(|d| space.tasks[d.as_str()].state != TaskState::Completed);
        let task = TaskImage {
            namespace: ns.to_string(),
            id: id.to_string(),
            kind: submit.kind,
            input,
            pinned,
            role: submit.role,
            capabilities: submit.capabilities,
            priority: submit.priority,
            timeout_ms: if submit.timeout_ms == 0 { settings.default_timeout_ms } else { submit.timeout_ms },
            max_attempts: if submit.max_attempts == 0 { settings.default_attempts } else { submit.max_attempts },
            depends_on: submit.depends_on,
            submitter: submitter.to_owned(),
            submitted_at: now,
            seq: space.next_seq,
            state: if waiting { TaskState::Waiting } else { TaskState::Ready },
            attempt: 0,
            failures: 0,
            holder: None,
            deadline_at: None,
            output: None,
            finished_at: None,
            errors: Vec::new(),
        };
        let mut fx = Effects::default();
        fx.events.push(event(ns, &task, EventKind::Submitted, "", String::new(), now));
        space.outstanding += 1;
        for dep in &task.depends_on {
            space.dependents.entry(dep.as_str().into()).or_default().push(id.clone());
        }
        if !waiting {
            space.ready.insert(ready_key(&task, &id));
        }
        space.tasks.insert(id.clone(), task);
        fx.touched.insert(id.clone());
        if let Some(dead) = dead {
            space.dead_letter(now, &id, &format!("dependency '{dead}' was dead-lettered"), &mut fx);
        }
        space.dispatch(now, ns, &mut fx);
        space.forget_finished(settings, &mut fx);
        Ok((id, fx))
    }

    /// `agent` asks for work (replacing what it asked before); ready tasks it takes come at once.
    pub fn work(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        mut worker: Worker,
        s: &TaskSettings,
    ) -> Effects {
        if worker.max_in_flight == 0 || worker.max_in_flight > s.max_in_flight_per_agent {
            worker.max_in_flight = s.max_in_flight_per_agent;
        }
        let space = self.spaces.entry(ns.clone()).or_default();
        space.workers.insert(agent.clone(), worker);
        let mut fx = Effects::default();
        space.dispatch(now, ns, &mut fx);
        fx
    }

    /// `agent` stops asking for work (it keeps what it holds).
    pub fn stop_work(&mut self, ns: &str, agent: &str) {
        if let Some(space) = self.spaces.get_mut(ns) {
            space.workers.remove(agent);
        }
    }

    /// `agent` claims the best ready task it can take, if any.
    pub fn claim(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        worker: Worker,
        settings: &TaskSettings,
    ) -> Result<(Option<Arc<str>>, Effects), CoreError> {
        let space = self.spaces.entry(ns.clone()).or_default();
        let held = space.held.get(agent).map_or(0, BTreeSet::len);
        let limit = space.workers.get(agent).map_or(settings.max_in_flight_per_agent, |w| w.max_in_flight);
        if held >= limit as usize {
            return Err(CoreError::TaskInFlightLimit { agent: agent.to_string(), held: held as u64, limit });
        }
        let mut fx = Effects::default();
        let found = space.ready.iter().find(|(_, _, id)| worker.takes(&space.tasks[id])).map(|(_, _, id)| id.clone());
        if let Some(id) = &found {
            space.assign(now, ns, id, agent, &mut fx);
        }
        Ok((found, fx))
    }

    /// The holder of `id` says it started `attempt`.
    pub fn start(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &str,
        id: &str,
        attempt: u32,
    ) -> Result<Effects, CoreError> {
        let space = self.space_mut(ns, id)?;
        let t = space.tasks.get_mut(id).expect("checked");
        check_holder(t, agent, attempt)?;
        let mut fx = Effects::default();
        if t.state == TaskState::Assigned {
            t.state = TaskState::Running;
            fx.events.push(event(ns, t, EventKind::Started, agent, String::new(), now));
            fx.touched.insert(id.into());
        }
        Ok(fx)
    }

    /// The holder of `id` completed `attempt` with `output_json`. Anyone else is refused (and the
    /// refusal reported to the task's watchers).
    #[allow(clippy::too_many_arguments)]
    pub fn complete(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &str,
        id: &str,
        attempt: u32,
        output_json: &str,
        settings: &TaskSettings,
    ) -> Result<Effects, CoreError> {
        let output = parse_json("task output", output_json, settings.max_output_bytes, settings.max_depth)?;
        self.fence(now, ns, id, agent, attempt)?;
        let space = self.space_mut(ns, id)?;
        let t = space.tasks.get_mut(id).expect("checked");
        let mut fx = Effects::default();
        let key: Arc<str> = id.into();
        t.state = TaskState::Completed;
        t.output = Some(output);
        t.deadline_at = None;
        t.finished_at = Some(now);
        let mut e = event(ns, t, EventKind::Completed, agent, String::new(), now);
        e.output = t.output.clone().map(Arc::new);
        fx.events.push(e);
        space.release(agent, &key, &mut fx);
        space.finished(&key);
        // Its dependents may be ready now.
        for d in space.dependents.remove(&key).unwrap_or_default() {
            let ready = space.tasks.get(&d).is_some_and(|t| {
                t.state == TaskState::Waiting
                    && t.depends_on
                        .iter()
                        .all(|x| space.tasks.get(x.as_str()).is_some_and(|x| x.state == TaskState::Completed))
            });
            if ready {
                let t = space.tasks.get_mut(&d).expect("present");
                t.state = TaskState::Ready;
                space.ready.insert(ready_key(t, &d));
                fx.touched.insert(d);
            }
        }
        space.dispatch(now, ns, &mut fx);
        space.forget_finished(settings, &mut fx);
        Ok(fx)
    }

    /// The holder of `id` failed `attempt` with `error`.
    #[allow(clippy::too_many_arguments)]
    pub fn fail(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &str,
        id: &str,
        attempt: u32,
        error: &str,
        settings: &TaskSettings,
    ) -> Result<Effects, CoreError> {
        if error.len() > settings.max_error_bytes {
            return Err(CoreError::invalid(
                "task error",
                format!("{} bytes; the limit is {}", error.len(), settings.max_error_bytes),
            ));
        }
        self.fence(now, ns, id, agent, attempt)?;
        let space = self.space_mut(ns, id)?;
        let mut fx = Effects::default();
        space.attempt_failed(now, ns, &id.into(), error, &mut fx);
        space.dispatch(now, ns, &mut fx);
        space.forget_finished(settings, &mut fx);
        Ok(fx)
    }

    /// The current attempt of `id` ran out of time (a deadline timer fired at `now`).
    pub fn deadline(&mut self, now: Time, ns: &Arc<str>, id: &str, settings: &TaskSettings) -> Effects {
        let mut fx = Effects::default();
        let Some(space) = self.spaces.get_mut(ns) else { return fx };
        let Some(t) = space.tasks.get(id).filter(|t| t.state.is_held() && t.deadline_at.is_some_and(|d| d <= now))
        else {
            return fx;
        };
        let why = format!("attempt {} missed its deadline ({} ms)", t.attempt, t.timeout_ms);
        space.attempt_failed(now, ns, &id.into(), &why, &mut fx);
        space.dispatch(now, ns, &mut fx);
        space.forget_finished(settings, &mut fx);
        fx
    }

    /// `agent` is gone (`why`): it asks for no more work and every task it held fails.
    pub fn agent_gone(&mut self, now: Time, ns: &Arc<str>, agent: &str, why: &str, settings: &TaskSettings) -> Effects {
        let mut fx = Effects::default();
        let Some(space) = self.spaces.get_mut(ns) else { return fx };
        space.workers.remove(agent);
        for id in space.held.get(agent).cloned().unwrap_or_default() {
            let error = format!("executor '{agent}' {why}");
            space.attempt_failed(now, ns, &id, &error, &mut fx);
        }
        space.dispatch(now, ns, &mut fx);
        space.forget_finished(settings, &mut fx);
        fx
    }

    /// An operator retries a dead-lettered task: its attempts count from zero again.
    pub fn retry(&mut self, now: Time, ns: &Arc<str>, id: &str, settings: &TaskSettings) -> Result<Effects, CoreError> {
        let space = self.space_mut(ns, id)?;
        let t = space.tasks.get_mut(id).expect("checked");
        if t.state != TaskState::DeadLettered {
            return Err(CoreError::TaskNotDeadLettered { id: id.to_owned(), state: t.state.as_str() });
        }
        space.check_room(settings)?;
        let key: Arc<str> = id.into();
        let t = space.tasks.get_mut(id).expect("checked");
        t.failures = 0;
        t.finished_at = None;
        let deps_done = {
            let deps = t.depends_on.clone();
            deps.iter().all(|d| space.tasks.get(d.as_str()).is_some_and(|x| x.state == TaskState::Completed))
        };
        let t = space.tasks.get_mut(id).expect("checked");
        t.state = if deps_done { TaskState::Ready } else { TaskState::Waiting };
        let mut fx = Effects::default();
        fx.events.push(event(ns, t, EventKind::Retried, "", String::new(), now));
        if deps_done {
            space.ready.insert(ready_key(t, &key));
        } else {
            for d in t.depends_on.clone() {
                space.dependents.entry(d.as_str().into()).or_default().push(key.clone());
            }
        }
        space.outstanding += 1;
        space.finished.retain(|f| *f != key);
        fx.touched.insert(key);
        space.dispatch(now, ns, &mut fx);
        Ok(fx)
    }

    /// Refuses a completion or failure from anyone but the holder of the current attempt, and
    /// keeps the refusal to report.
    fn fence(&mut self, now: Time, ns: &Arc<str>, id: &str, agent: &str, attempt: u32) -> Result<(), CoreError> {
        let space = self.space_mut(ns, id)?;
        let t = &space.tasks[id];
        if let Err(e) = check_holder(t, agent, attempt) {
            let mut ev = event(ns, t, EventKind::Refused, agent, e.to_string(), now);
            ev.attempt = attempt;
            self.refusals.push(ev);
            return Err(e);
        }
        Ok(())
    }

    /// The refused completions and failures since the last call, to report to watchers.
    pub fn take_refusals(&mut self) -> Vec<TaskEvent> {
        std::mem::take(&mut self.refusals)
    }

    fn space_mut(&mut self, ns: &Arc<str>, id: &str) -> Result<&mut Space, CoreError> {
        self.spaces
            .get_mut(ns)
            .filter(|s| s.tasks.contains_key(id))
            .ok_or_else(|| CoreError::UnknownTask { namespace: ns.to_string(), id: id.to_owned() })
    }

    /// A task of `ns`.
    pub fn get(&self, ns: &str, id: &str) -> Result<&TaskImage, CoreError> {
        self.spaces
            .get(ns)
            .and_then(|s| s.tasks.get(id))
            .ok_or_else(|| CoreError::UnknownTask { namespace: ns.to_owned(), id: id.to_owned() })
    }

    /// The tasks of `ns` in submission order, filtered by state and type (`None`: any).
    pub fn list(&self, ns: &str, state: Option<TaskState>, kind: Option<&str>) -> Vec<&TaskImage> {
        let Some(space) = self.spaces.get(ns) else { return Vec::new() };
        let mut out: Vec<&TaskImage> = space
            .tasks
            .values()
            .filter(|t| state.is_none_or(|s| t.state == s) && kind.is_none_or(|k| t.kind == k))
            .collect();
        out.sort_by_key(|t| t.seq);
        out
    }

    /// Queues per namespace and type: (namespace, type, ready, held, oldest ready task's submission).
    pub fn queues(&self) -> Vec<QueueView> {
        let mut out: BTreeMap<(String, String), QueueView> = BTreeMap::new();
        for (ns, space) in &self.spaces {
            for t in space.tasks.values() {
                let q = out.entry((ns.to_string(), t.kind.clone())).or_insert_with(|| QueueView {
                    namespace: ns.to_string(),
                    kind: t.kind.clone(),
                    ..QueueView::default()
                });
                match t.state {
                    TaskState::Waiting => q.waiting += 1,
                    TaskState::Ready => {
                        q.ready += 1;
                        q.oldest_ready_at = Some(q.oldest_ready_at.map_or(t.submitted_at, |o| o.min(t.submitted_at)));
                    }
                    TaskState::Assigned | TaskState::Running => q.held += 1,
                    TaskState::Completed => q.completed += 1,
                    TaskState::DeadLettered => q.dead_lettered += 1,
                }
            }
        }
        out.into_values().collect()
    }

    /// Takes back kept tasks. Attempts that were running when the server stopped are not counted:
    /// their tasks are ready again (the next assignment takes the next attempt number, so a late
    /// completion of the old attempt is refused).
    /// `last_seqs` holds each namespace's last submission number, so that numbering goes on past
    /// forgotten tasks.
    pub fn restore(&mut self, images: Vec<TaskImage>, last_seqs: Vec<(String, u64)>) {
        for (ns, seq) in last_seqs {
            let space = self.spaces.entry(ns.as_str().into()).or_default();
            space.next_seq = space.next_seq.max(seq);
        }
        let mut images = images;
        images.sort_by_key(|t| t.seq);
        for mut t in images {
            let ns: Arc<str> = t.namespace.as_str().into();
            let id: Arc<str> = t.id.as_str().into();
            let space = self.spaces.entry(ns).or_default();
            space.next_seq = space.next_seq.max(t.seq);
            if t.state.is_held() {
                t.state = TaskState::Ready;
                t.holder = None;
                t.deadline_at = None;
            }
            match t.state {
                TaskState::Ready => {
                    space.ready.insert(ready_key(&t, &id));
                }
                TaskState::Waiting => {
                    for d in &t.depends_on {
                        space.dependents.entry(d.as_str().into()).or_default().push(id.clone());
                    }
                }
                _ => {}
            }
            if t.state.is_finished() {
                space.finished.push_back(id.clone());
            } else {
                space.outstanding += 1;
            }
            space.tasks.insert(id, t);
        }
    }
}

/// Queue figures of one task type in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueView {
    pub namespace: String,
    pub kind: String,
    pub waiting: u64,
    pub ready: u64,
    pub held: u64,
    pub completed: u64,
    pub dead_lettered: u64,
    /// When the oldest ready task was submitted.
    pub oldest_ready_at: Option<Time>,
}

fn ready_key(t: &TaskImage, id: &Arc<str>) -> (i64, u64, Arc<str>) {
    (-i64::from(t.priority), t.seq, id.clone())
}

fn event(ns: &Arc<str>, t: &TaskImage, kind: EventKind, agent: &str, error: String, at: Time) -> TaskEvent {
    TaskEvent {
        namespace: ns.clone(),
        id: t.id.as_str().into(),
        kind,
        submitter: t.submitter.as_str().into(),
        agent: agent.to_owned(),
        attempt: t.attempt,
        error,
        output: None,
        at,
    }
}

/// Whether `agent` holds `attempt` of `t`: the fence of every completion and failure.
fn check_holder(t: &TaskImage, agent: &str, attempt: u32) -> Result<(), CoreError> {
    if t.state.is_finished() {
        return Err(CoreError::TaskFinished {
            id: t.id.clone(),
            state: t.state.as_str(),
            attempt: t.attempt,
            holder: t.holder.clone().unwrap_or_default(),
        });
    }
    let holds = t.state.is_held() && t.holder.as_deref() == Some(agent) && t.attempt == attempt;
    if !holds {
        let now_held = match (&t.holder, t.state.is_held()) {
            (Some(h), true) => format!("attempt {} is held by '{h}'", t.attempt),
            _ => format!("it is {} after attempt {}", t.state.as_str(), t.attempt),
        };
        return Err(CoreError::TaskNotHeld { id: t.id.clone(), agent: agent.to_owned(), attempt, now: now_held });
    }
    Ok(())
}

impl Space {
    /// Refuses one more unfinished task past `tasks.max_outstanding`.
    fn check_room(&self, settings: &TaskSettings) -> Result<(), CoreError> {
        if self.outstanding >= settings.max_outstanding {
            return Err(CoreError::Limit {
                what: "outstanding tasks in a namespace",
                limit: settings.max_outstanding as u64,
                hint: "wait for tasks to complete, or raise tasks.max_outstanding",
            });
        }
        Ok(())
    }

    /// Hands ready tasks to workers with room, highest priority first.
    fn dispatch(&mut self, now: Time, ns: &Arc<str>, fx: &mut Effects) {
        if self.workers.is_empty() || self.ready.is_empty() {
            return;
        }
        let ready: Vec<Arc<str>> = self.ready.iter().map(|(_, _, id)| id.clone()).collect();
        for id in ready {
            let t = &self.tasks[&id];
            let held = &self.held;
            let mut room = false;
            let best = self
                .workers
                .iter()
                .filter(|(a, w)| {
                    let has_room = held.get(*a).map_or(0, BTreeSet::len) < w.max_in_flight as usize;
                    room |= has_room;
                    has_room && w.takes(t)
                })
                .min_by_key(|(a, w)| (held.get(*a).map_or(0, BTreeSet::len), w.served))
                .map(|(a, _)| a.clone());
            match best {
                Some(agent) => self.assign(now, ns, &id, &agent, fx),
                None if !room => break,
                None => {}
            }
        }
    }

    /// Gives `id` to `agent` as its next attempt.
    fn assign(&mut self, now: Time, ns: &Arc<str>, id: &Arc<str>, agent: &Arc<str>, fx: &mut Effects) {
        self.served += 1;
        if let Some(w) = self.workers.get_mut(agent) {
            w.served = self.served;
        }
        let t = self.tasks.get_mut(id).expect("a ready task exists");
        self.ready.remove(&ready_key(t, id));
        t.state = TaskState::Assigned;
        t.attempt += 1;
        t.holder = Some(agent.to_string());
        let deadline = now.saturating_add(t.timeout_ms);
        t.deadline_at = Some(deadline);
        self.held.entry(agent.clone()).or_default().insert(id.clone());
        let t = &self.tasks[id];
        let dep_outputs = t
            .depends_on
            .iter()
            .map(|d| (d.clone(), self.tasks.get(d.as_str()).and_then(|x| x.output.clone()).unwrap_or(Value::Null)))
            .collect();
        fx.assignments.push(Assignment {
            namespace: ns.clone(),
            agent: agent.clone(),
            id: id.clone(),
            kind: t.kind.clone(),
            input: t.input.clone(),
            pinned: t.pinned.clone(),
            dep_outputs,
            attempt: t.attempt,
            deadline_at: deadline,
            priority: t.priority,
            submitter: t.submitter.clone(),
        });
        fx.events.push(event(ns, t, EventKind::Assigned, agent, String::new(), now));
        fx.deadlines.push((id.clone(), deadline));
        fx.touched.insert(id.clone());
    }

    /// `agent` no longer holds `id`.
    fn release(&mut self, agent: &str, id: &Arc<str>, fx: &mut Effects) {
        if let Some(h) = self.held.get_mut(agent) {
            h.remove(id);
            if h.is_empty() {
                self.held.remove(agent);
            }
        }
        fx.disarm.push(id.clone());
        fx.touched.insert(id.clone());
    }

    fn finished(&mut self, id: &Arc<str>) {
        self.outstanding -= 1;
        self.finished.push_back(id.clone());
    }

    /// The current attempt of `id` failed: retried, or dead-lettered past its maximum.
    fn attempt_failed(&mut self, now: Time, ns: &Arc<str>, id: &Arc<str>, error: &str, fx: &mut Effects) {
        let t = self.tasks.get_mut(id).expect("a held task exists");
        let agent = t.holder.take().unwrap_or_default();
        t.errors.push(AttemptError { attempt: t.attempt, agent: agent.clone(), error: error.to_owned(), at: now });
        t.failures += 1;
        t.deadline_at = None;
        fx.events.push(event(ns, t, EventKind::Failed, &agent, error.to_owned(), now));
        self.release(&agent, id, fx);
        let t = self.tasks.get_mut(id).expect("present");
        if t.failures >= t.max_attempts {
            let why = format!("{} attempts failed (max_attempts {}); last: {error}", t.failures, t.max_attempts);
            self.dead_letter(now, id, &why, fx);
            return;
        }
        t.state = TaskState::Ready;
        self.ready.insert(ready_key(t, id));
        fx.events.push(event(ns, t, EventKind::Retried, "", String::new(), now));
    }

    /// `id` (not held) goes to the dead-letter list, and so do the unfinished tasks waiting on it.
    fn dead_letter(&mut self, now: Time, id: &Arc<str>, why: &str, fx: &mut Effects) {
        let mut queue = vec![(id.clone(), why.to_owned())];
        while let Some((id, why)) = queue.pop() {
            let Some(t) = self.tasks.get_mut(&id) else { continue };
            if t.state.is_finished() {
                continue;
            }
            self.ready.remove(&ready_key(t, &id));
            if t.state == TaskState::Waiting {
                t.errors.push(AttemptError { attempt: t.attempt, agent: String::new(), error: why.clone(), at: now });
            }
            t.state = TaskState::DeadLettered;
            t.finished_at = Some(now);
            let ns: Arc<str> = t.namespace.as_str().into();
            fx.events.push(event(&ns, t, EventKind::DeadLettered, "", why.clone(), now));
            fx.touched.insert(id.clone());
            self.finished(&id);
            for d in self.dependents.remove(&id).unwrap_or_default() {
                queue.push((d, format!("dependency '{id}' was dead-lettered")));
            }
        }
    }

    /// Forgets the oldest finished tasks past the limit, never one an unfinished task waits on.
    fn forget_finished(&mut self, settings: &TaskSettings, fx: &mut Effects) {
        let mut kept = VecDeque::new();
        while self.finished.len() + kept.len() > settings.max_finished {
            let Some(id) = self.finished.pop_front() else { break };
            if self.dependents.get(&id).is_some_and(|d| !d.is_empty()) {
                kept.push_back(id);
                continue;
            }
            self.tasks.remove(&id);
            self.dependents.remove(&id);
            fx.touched.remove(&id);
            fx.removed.push(id);
        }
        while let Some(id) = kept.pop_back() {
            self.finished.push_front(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns() -> Arc<str> {
        "default".into()
    }

    fn task(id: &str, kind: &str) -> Submit {
        Submit { id: id.into(), kind: kind.into(), input_json: r#"{"x":1}"#.into(), ..Submit::default() }
    }

    fn submit(t: &mut Tasks, now: Time, s: Submit) -> Result<(Arc<str>, Effects), CoreError> {
        let settings = TaskSettings::default();
        let input = validate(&s, &settings)?;
        t.submit(now, &ns(), "planner", s, input, Vec::new(), &settings)
    }

    fn worker(kinds: &[&str], max: u32) -> Worker {
        Worker::new(kinds.iter().map(|k| k.to_string()).collect(), "runner", &["gpu".into()], max)
    }

    fn assigned(fx: &Effects) -> Vec<(String, String, u32)> {
        fx.assignments.iter().map(|a| (a.id.to_string(), a.agent.to_string(), a.attempt)).collect()
    }

    #[test]
    fn ready_tasks_go_by_priority_then_age_and_fairly_among_workers() {
        let mut t = Tasks::default();
        let s = TaskSettings::default();
        submit(&mut t, 0, task("low", "tool")).unwrap();
        submit(&mut t, 1, Submit { priority: 5, ..task("high", "tool") }).unwrap();
        submit(&mut t, 2, task("low2", "tool")).unwrap();
        let fx = t.work(3, &ns(), &"a".into(), worker(&["tool"], 1), &s);
        assert_eq!(assigned(&fx), [("high".into(), "a".into(), 1)]);
        let fx = t.work(3, &ns(), &"b".into(), worker(&[], 1), &s);
        assert_eq!(assigned(&fx), [("low".into(), "b".into(), 1)]);
        // Both full: the third waits; a completion frees `a`, which takes it.
        let fx = t.complete(4, &ns(), "a", "high", 1, "{}", &s).unwrap();
        assert_eq!(assigned(&fx), [("low2".into(), "a".into(), 1)]);
        assert_eq!(t.get("default", "high").unwrap().state, TaskState::Completed);
        // Among equals with room, the one served longest ago is next.
        let mut t = Tasks::default();
        t.work(0, &ns(), &"a".into(), worker(&[], 5), &s);
        t.work(0, &ns(), &"b".into(), worker(&[], 5), &s);
        let mut got = Vec::new();
        for i in 0..4 {
            let (_, fx) = submit(&mut t, 1, task(&format!("t{i}x"), "tool")).unwrap();
            got.extend(assigned(&fx).into_iter().map(|(_, a, _)| a));
        }
        assert_eq!(got, ["a", "b", "a", "b"]);
    }

    #[test]
    fn requirements_decide_who_may_take_a_task() {
        let mut t = Tasks::default();
        let s = TaskSettings::default();
        submit(&mut t, 0, Submit { role: "planner".into(), ..task("p", "tool") }).unwrap();
        submit(&mut t, 0, Submit { capabilities: vec!["tpu".into()], ..task("q", "tool") }).unwrap();
        submit(&mut t, 0, Submit { role: "runner".into(), capabilities: vec!["gpu".into()], ..task("r", "tool") })
            .unwrap();
        submit(&mut t, 0, task("other", "other-kind")).unwrap();
        let fx = t.work(1, &ns(), &"a".into(), worker(&["tool"], 10), &s);
        assert_eq!(assigned(&fx), [("r".into(), "a".into(), 1)]);
    }

    #[test]
    fn dependencies_gate_readiness_and_hand_over_their_outputs() {
        let mut t = Tasks::default();
        let s = TaskSettings::default();
        submit(&mut t, 0, task("fetch", "tool")).unwrap();
        submit(&mut t, 0, Submit { depends_on: vec!["fetch".into()], ..task("parse", "tool") }).unwrap();
        assert_eq!(t.get("default", "parse").unwrap().state, TaskState::Waiting);
        let fx = t.work(1, &ns(), &"a".into(), worker(&[], 1), &s);
        assert_eq!(assigned(&fx), [("fetch".into(), "a".into(), 1)]);
        let fx = t.complete(2, &ns(), "a", "fetch", 1, r#"{"page":"<html>"}"#, &s).unwrap();
        assert_eq!(fx.assignments.len(), 1);
        assert_eq!(fx.assignments[0].dep_outputs, [("fetch".to_string(), json!({"page": "<html>"}))]);
        assert_eq!(
            fx.events.iter().find(|e| e.kind == EventKind::Completed).unwrap().output.as_deref(),
            Some(&json!({"page": "<html>"}))
        );
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_refused_with_nothing_applied() {
        let mut t = Tasks::default();
        let e = submit(&mut t, 0, Submit { depends_on: vec!["nope".into()], ..task("a", "tool") }).unwrap_err();
        assert!(matches!(e, CoreError::UnknownTask { ref id, .. } if id == "nope"), "{e}");
        let e = submit(&mut t, 0, Submit { depends_on: vec!["a".into()], ..task("a", "tool") }).unwrap_err();
        assert!(matches!(e, CoreError::TaskCycle { .. }), "{e}");
        assert!(t.get("default", "a").is_err(), "nothing was applied");
        submit(&mut t, 0, task("a", "tool")).unwrap();
        assert!(matches!(submit(&mut t, 0, task("a", "tool")), Err(CoreError::TaskExists { .. })));
        let bad = Submit { input_json: "{".into(), ..task("b", "tool") };
        assert!(matches!(submit(&mut t, 0, bad), Err(CoreError::Invalid { .. })));
        let s = TaskSettings { max_deps: 1, ..TaskSettings::default() };
        let too_many = Submit { depends_on: vec!["a".into(), "a".into()], ..task("c", "tool") };
        assert!(validate(&too_many, &s).is_err());
    }

    #[test]
    fn exactly_one_completion_and_superseded_attempts_are_refused_and_reported() {
        let mut t = Tasks::default();
        let s = TaskSettings::default();
        submit(&mut t, 0, Submit { timeout_ms: 100, ..task("x", "tool") }).unwrap();
        t.work(0, &ns(), &"a".into(), worker(&[], 1), &s);
        t.work(0, &ns(), &"b".into(), worker(&[], 1), &s);
        // `a` holds attempt 1 and misses its deadline: `b` gets attempt 2.
        let fx = t.deadline(100, &ns(), "x", &s);
        assert_eq!(assigned(&fx), [("x".into(), "b".into(), 2)]);
        let kinds: Vec<_> = fx.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Failed, EventKind::Retried, EventKind::Assigned]);
        let late = t.complete(101, &ns(), "a", "x", 1, "1", &s).unwrap_err();
        assert!(matches!(late, CoreError::TaskNotHeld { .. }), "{late}");
        assert!(late.to_string().contains("attempt 2 is held by 'b'"), "{late}");
        let refused = t.take_refusals();
        assert_eq!(refused.len(), 1);
        assert_eq!((refused[0].kind, refused[0].agent.as_str(), refused[0].attempt), (EventKind::Refused, "a", 1));
        t.complete(102, &ns(), "b", "x", 2, "2", &s).unwrap();
        let twice = t.complete(103, &ns(), "b", "x", 2, "3", &s).unwrap_err();
        assert!(matches!(twice, CoreError::TaskFinished { .. }), "{twice}");
        assert_eq!(t.get("default", "x").unwrap().output, Some(json!(2)));
    }

    #[test]
    fn attempts_past_the_maximum_dead_letter_the_task_and_its_dependents() {
        let mut t = Tasks::default();
        let s = TaskSettings::default();
        submit(&mut t, 0, Submit { max_attempts: 2, ..task("x", "tool") }).unwrap();
        submit(&mut t, 0, Submit { depends_on: vec!["x".into()], ..task("y", "tool") }).unwrap();
        t.work(0, &ns(), &"a".into(), worker(&[], 1), &s);
        t.fail(1, &ns(), "a", "x", 1, "boom", &s).unwrap();
        let fx = t.agent_gone(2, &ns(), "a", "lost its lease", &s);
        assert!(fx.events.iter().any(|e| e.kind == EventKind::DeadLettered && &*e.id == "x"));
        assert!(fx.events.iter().any(|e| e.kind == EventKind::DeadLettered && &*e.id == "y"));
        let x = t.get("default", "x").unwrap();
        assert_eq!(x.state, TaskState::DeadLettered);
        let errors: Vec<_> = x.errors.iter().map(|e| (e.attempt, e.error.as_str())).collect();
        assert_eq!(errors, [(1, "boom"), (2, "executor 'a' lost its lease")]);
        assert_eq!(t.get("default", "y").unwrap().state, TaskState::DeadLettered);
        // A retry starts the count again.
        assert!(matches!(t.retry(3, &ns(), "nope", &s), Err(CoreError::UnknownTask { .. })));
        t.retry(3, &ns(), "x", &s).unwrap();
        let fx = t.work(4, &ns(), &"b".into(), worker(&[], 1), &s);
        assert_eq!(assigned(&fx), [("x".into(), "b".into(), 3)]);
        assert!(matches!(t.retry(5, &ns(), "x", &s), Err(CoreError::TaskNotDeadLettered { .. })));
    }

    #[test]
    fn claims_past_the_in_flight_limit_are_refused() {
        let mut t = Tasks::default();
        let s = TaskSettings { max_in_flight_per_agent: 2, ..TaskSettings::default() };
        for i in 0..3 {
            submit(&mut t, 0, task(&format!("c{i}"), "tool")).unwrap();
        }
        let a: Arc<str> = "a".into();
        for want in ["c0", "c1"] {
            let (id, _) = t.claim(1, &ns(), &a, worker(&[], 0), &s).unwrap();
            assert_eq!(id.as_deref(), Some(want));
        }
        let e = t.claim(1, &ns(), &a, worker(&[], 0), &s).unwrap_err();
        assert!(matches!(e, CoreError::TaskInFlightLimit { held: 2, limit: 2, .. }), "{e}");
        assert_eq!(t.get("default", "c2").unwrap().state, TaskState::Ready);
        let (none, _) = t.claim(1, &ns(), &"b".into(), worker(&["other"], 0), &s).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn a_restart_requeues_held_tasks_without_counting_an_attempt() {
        let mut t = Tasks::default();
        let s = TaskSettings::default();
        submit(&mut t, 0, task("x", "tool")).unwrap();
        t.work(0, &ns(), &"a".into(), worker(&[], 1), &s);
        let image = t.get("default", "x").unwrap().clone();
        assert_eq!(image.state, TaskState::Assigned);
        let mut back = Tasks::default();
        back.restore(vec![image], Vec::new());
        let x = back.get("default", "x").unwrap();
        assert_eq!((x.state, x.failures, x.attempt), (TaskState::Ready, 0, 1));
        let fx = back.work(1, &ns(), &"b".into(), worker(&[], 1), &s);
        assert_eq!(assigned(&fx), [("x".into(), "b".into(), 2)]);
        assert!(matches!(back.complete(2, &ns(), "a", "x", 1, "1", &s), Err(CoreError::TaskNotHeld { .. })));
    }

    #[test]
    fn finished_tasks_past_the_limit_are_forgotten_oldest_first() {
        let mut t = Tasks::default();
        let s = TaskSettings { max_finished: 1, ..TaskSettings::default() };
        let a: Arc<str> = "a".into();
        for i in 0..2 {
            let id = format!("f{i}");
            let input = validate(&task(&id, "tool"), &s).unwrap();
            t.submit(0, &ns(), "p", task(&id, "tool"), input, Vec::new(), &s).unwrap();
            t.claim(0, &ns(), &a, worker(&[], 0), &s).unwrap();
            let fx = t.complete(1, &ns(), "a", &id, 1, "1", &s).unwrap();
            assert_eq!(
                fx.removed.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                if i == 1 { vec!["f0".to_string()] } else { vec![] }
            );
        }
        assert!(t.get("default", "f0").is_err());
        assert!(t.get("default", "f1").is_ok());
    }
}
