//! The engine's side of task handoff: submissions from sessions (pinning the submitter's context
//! keys at their current versions), work asked for and claimed, completions and failures, the
//! deadline of each attempt, executors lost or gone, operators' retries, and who hears what
//! (submitters on their session, watchers on a task stream). The rules themselves are in
//! [`crate::task`].
//!
//! Tasks meet execution traces ([`crate::trace`]) here: a completed task becomes the trace of its
//! type (as the tool) on its input, produced by its executor, computed from the traces of the
//! tasks it depended on and the context versions pinned at its submission; and while a task is
//! held, the traces of its dependencies are pinned (owner `task <id>`), so retention does not
//! evict what an open task was handed.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{ConnRole, Engine, Timer, Touched};
use crate::error::CoreError;
use crate::io::{ConnId, Frame, Output, Reply, Time};
use crate::name;
use crate::task::{Effects, EventKind, Pinned, Submit, TaskEvent, TaskImage, Worker};
use crate::trace::{canonical, trace_id, Asker, ContextRef, Lineage, OutputKind, Record, TraceOutput};

/// A task watch stream: events not yet sent, oldest first.
pub(super) struct TaskFeed {
    pub ns: Arc<str>,
    pub queue: VecDeque<Arc<TaskEvent>>,
    pub notified: bool,
}

impl Engine {
    /// `agent` of `ns` submits a task.
    pub(super) fn submit_task(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        submit: Submit,
    ) -> Result<Reply, CoreError> {
        let settings = &self.config.tasks;
        let input = crate::task::validate(&submit, settings)?;
        // The staging step: each key as it is now, kept with the task (context history is bounded,
        // so an executor could not read this version later).
        let mut pinned = Vec::with_capacity(submit.context_keys.len());
        for key in &submit.context_keys {
            if pinned.iter().any(|p: &Pinned| p.key == *key) {
                return Err(CoreError::invalid("context_keys", format!("key '{key}' is named twice")));
            }
            let read = self.context.read(ns, key, None, &self.config.context)?;
            pinned.push(Pinned { key: key.clone(), version: read.version, value: read.value.as_ref().clone() });
        }
        let (id, fx) = self.tasks.submit(now, ns, agent, submit, input, pinned, &self.config.tasks)?;
        self.task_effects(ns, fx);
        Ok(Reply::TaskSubmitted(id.to_string()))
    }

    /// The worker `agent` would be, taking `kinds`.
    fn worker(&self, ns: &str, agent: &str, kinds: Vec<String>, max_in_flight: u32) -> Result<Worker, CoreError> {
        for k in &kinds {
            name::validate("task type", k)?;
        }
        let a = self
            .agent(ns, agent)
            .ok_or_else(|| CoreError::UnknownAgent { namespace: ns.to_owned(), agent: agent.to_owned() })?;
        Ok(Worker::new(kinds, &a.role, &a.capabilities, max_in_flight))
    }

    /// `agent` asks for work.
    pub(super) fn task_work(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        kinds: Vec<String>,
        max_in_flight: u32,
    ) -> Result<Reply, CoreError> {
        let limit = self.config.tasks.max_in_flight_per_agent;
        if max_in_flight > limit {
            return Err(CoreError::invalid(
                "max_in_flight",
                format!("{max_in_flight}; the limit is {limit} (tasks.max_in_flight_per_agent)"),
            ));
        }
        let worker = self.worker(ns, agent, kinds, max_in_flight)?;
        let fx = self.tasks.work(now, ns, agent, worker, &self.config.tasks);
        self.task_effects(ns, fx);
        Ok(Reply::Ok)
    }

    /// `agent` claims a task.
    pub(super) fn claim_task(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        kinds: Vec<String>,
    ) -> Result<Reply, CoreError> {
        let worker = self.worker(ns, agent, kinds, 0)?;
        let (id, mut fx) = self.tasks.claim(now, ns, agent, worker, &self.config.tasks)?;
        // The claimant gets its task in the reply, not as a frame.
        let claimed = id.and_then(|id| {
            let at = fx.assignments.iter().position(|a| a.id == id)?;
            Some(Box::new(fx.assignments.remove(at)))
        });
        self.task_effects(ns, fx);
        Ok(Reply::TaskClaimed(claimed))
    }

    /// What a task request did; refusals of completions and failures are reported either way.
    pub(super) fn task_done(&mut self, ns: &Arc<str>, result: Result<Effects, CoreError>) -> Result<Reply, CoreError> {
        for refused in self.tasks.take_refusals() {
            self.task_event(ns, refused);
        }
        self.task_effects(ns, result?);
        Ok(Reply::Ok)
    }

    /// Applies what task handoff produced: keeps what changed, arms deadlines, hands tasks over
    /// and tells who must hear.
    pub(super) fn task_effects(&mut self, ns: &Arc<str>, fx: Effects) {
        for id in fx.touched {
            self.touch(Touched::Task(ns.clone(), id));
        }
        for id in fx.removed {
            self.touch(Touched::TaskRemoved(ns.clone(), id));
        }
        for id in fx.disarm {
            self.timers.cancel(&Timer::TaskDeadline { ns: ns.clone(), id });
        }
        for (id, at) in fx.deadlines {
            self.timers.set(Timer::TaskDeadline { ns: ns.clone(), id }, at);
        }
        // Traces first: a completion may make its dependents ready and handed out in the same
        // step, and they pin the trace it becomes.
        for e in &fx.events {
            match e.kind {
                EventKind::Completed => {
                    self.counters.tasks_completed += 1;
                    self.trace_completed(ns, e);
                    self.trace_unpin(ns, &pin_owner(&e.id));
                }
                EventKind::DeadLettered => {
                    self.counters.tasks_dead_lettered += 1;
                    self.trace_unpin(ns, &pin_owner(&e.id));
                }
                EventKind::Failed => self.counters.task_attempts_failed += 1,
                _ => {}
            }
        }
        for a in fx.assignments {
            let agent = a.agent.clone();
            self.pin_dependency_traces(ns, &a.id);
            self.send_fenced(ns, &agent, Frame::TaskAssigned(Box::new(a)));
        }
        for e in fx.events {
            self.task_event(ns, e);
        }
    }

    /// The trace a task would have: its type as the tool, on its input.
    fn task_trace_id(task: &TaskImage) -> String {
        trace_id(&task.kind, &canonical(&task.input))
    }

    /// Task `id`, handed to an executor, pins the traces of the tasks it depends on.
    fn pin_dependency_traces(&mut self, ns: &Arc<str>, id: &str) {
        let Ok(task) = self.tasks.get(ns, id) else { return };
        let traces: Vec<String> =
            task.depends_on.iter().filter_map(|d| self.tasks.get(ns, d).ok()).map(Self::task_trace_id).collect();
        for t in traces {
            self.trace_pin(ns, &t, &pin_owner(id));
        }
    }

    /// A completed task becomes a trace (see the module's notes). Best effort: a trace of that
    /// tool and input stored already, or claimed by another agent, stays as it is, and a task type
    /// that is no valid tool name records nothing; the output is kept with the task either way.
    fn trace_completed(&mut self, ns: &Arc<str>, event: &TaskEvent) {
        let Ok(task) = self.tasks.get(ns, &event.id) else { return };
        let Some(output) = &task.output else { return };
        let parents = task
            .depends_on
            .iter()
            .filter_map(|d| self.tasks.get(ns, d).ok())
            .map(Self::task_trace_id)
            .filter(|t| self.traces.peek(ns, t).is_some())
            .collect();
        let context = task.pinned.iter().map(|p| ContextRef { key: p.key.clone(), version: p.version }).collect();
        let bytes = bytes::Bytes::from(output.to_string());
        let output = TraceOutput { inline: None, ..TraceOutput::inline(OutputKind::Json, bytes.clone()) };
        let record = Record {
            tool: task.kind.clone(),
            input: task.input.to_string(),
            output,
            inline: Some(bytes.to_vec()),
            lineage: Lineage { parents, context },
            started_at: None,
            duration_ms: 0,
        };
        let asker = Asker { namespace: ns.clone(), agent: Arc::from(event.agent.as_str()) };
        let _ = self.trace_record(event.at, &asker, record);
    }

    /// Tells a task's submitter (if it is an agent here) and the namespace's task watchers.
    fn task_event(&mut self, ns: &Arc<str>, event: TaskEvent) {
        let event = Arc::new(event);
        let submitter = event.submitter.clone();
        if self.agent(ns, &submitter).is_some_and(|a| a.is_live()) {
            self.send_fenced(ns, &submitter, Frame::TaskEvent(event.clone()));
        }
        let max = self.config.limits.max_control_backlog;
        for conn in self.task_watchers.get(ns).cloned().unwrap_or_default() {
            let Some(ConnRole::TaskWatcher(feed)) = self.conns.get_mut(&conn) else { continue };
            if feed.queue.len() >= max {
                // A watcher that does not read is closed, never fed without bound.
                self.end_task_watch(conn);
                let err = CoreError::Limit {
                    what: "task events queued for one watcher",
                    limit: max as u64,
                    hint: "the watcher stopped reading its stream",
                };
                self.outputs.push_back(Output::Close(conn, Some(err)));
                continue;
            }
            feed.queue.push_back(event.clone());
            if !feed.notified {
                feed.notified = true;
                self.outputs.push_back(Output::Ready(conn));
            }
        }
    }

    /// Opens a task event stream on `conn`.
    pub(super) fn watch_tasks(&mut self, conn: ConnId, namespace: &str) -> Result<(), CoreError> {
        if self.conns.contains_key(&conn) {
            return Err(CoreError::invalid("task watch", "this stream already carries a session or a watch"));
        }
        let ns: Arc<str> = self.key(name::namespace_or_default(namespace)?);
        let max = self.config.limits.max_registry_watchers;
        let open: usize = self.task_watchers.values().map(Vec::len).sum();
        if open >= max {
            return Err(CoreError::Limit {
                what: "task watchers",
                limit: max as u64,
                hint: "close task watches that are no longer read",
            });
        }
        self.task_watchers.entry(ns.clone()).or_default().push(conn);
        let feed = TaskFeed { ns, queue: VecDeque::new(), notified: false };
        self.conns.insert(conn, ConnRole::TaskWatcher(Box::new(feed)));
        Ok(())
    }

    /// The next event for a task watcher.
    pub(super) fn task_frame(&mut self, conn: ConnId) -> Option<Frame> {
        let Some(ConnRole::TaskWatcher(feed)) = self.conns.get_mut(&conn) else { return None };
        let next = feed.queue.pop_front();
        feed.notified = next.is_some();
        next.map(Frame::TaskEvent)
    }

    /// A task watch ended.
    pub(super) fn task_watch_ended(&mut self, conn: ConnId, ns: &Arc<str>) {
        if let Some(conns) = self.task_watchers.get_mut(ns) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                self.task_watchers.remove(ns);
            }
        }
    }

    fn end_task_watch(&mut self, conn: ConnId) {
        if let Some(ConnRole::TaskWatcher(feed)) = self.forget_conn(conn) {
            self.task_watch_ended(conn, &feed.ns);
        }
    }

    /// A task's attempt deadline timer fired.
    pub(super) fn task_deadline(&mut self, now: Time, ns: &Arc<str>, id: &Arc<str>) {
        let fx = self.tasks.deadline(now, ns, id, &self.config.tasks);
        self.task_effects(ns, fx);
    }

    /// The agent was lost or left: what it held goes back (an attempt counted).
    pub(super) fn tasks_agent_gone(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, why: &str) {
        let fx = self.tasks.agent_gone(now, ns, agent, why, &self.config.tasks);
        self.task_effects(ns, fx);
    }

    /// An operator retries a dead-lettered task.
    pub(super) fn retry_task(&mut self, now: Time, namespace: &str, id: &str) -> Result<(), CoreError> {
        let ns: Arc<str> = self.key(name::namespace_or_default(namespace)?);
        let fx = self.tasks.retry(now, &ns, id, &self.config.tasks)?;
        self.task_effects(&ns, fx);
        Ok(())
    }

    /// Takes back the kept tasks; attempts that were running start over (not counted). The store
    /// still says they were held until they change again, and a second restart reads them the same.
    pub(super) fn restore_tasks(&mut self, images: Vec<TaskImage>, last_seqs: Vec<(String, u64)>) {
        self.tasks.restore(images, last_seqs);
    }

    // ---------------------------------------------------------------------------------------------
    // Reads

    /// Task `id` of `namespace`.
    pub fn task_get(&self, namespace: &str, id: &str) -> Result<TaskImage, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        self.tasks.get(ns, id).cloned()
    }

    /// The tasks of `namespace` in submission order, filtered by state and type.
    pub fn task_list(
        &self,
        namespace: &str,
        state: Option<crate::task::TaskState>,
        kind: Option<&str>,
    ) -> Result<Vec<TaskImage>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        Ok(self.tasks.list(ns, state, kind).into_iter().cloned().collect())
    }

    /// Task queues per namespace and type.
    pub fn task_queues(&self) -> Vec<crate::task::QueueView> {
        self.tasks.queues()
    }
}

/// The owner name under which task `id` pins traces.
fn pin_owner(id: &str) -> String {
    format!("task {id}")
}
