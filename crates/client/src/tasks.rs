//! Task handoff: agents submit tasks and execute them.
//!
//! [`Agent::submit_task`](crate::Agent::submit_task) submits a [`TaskSpec`] (its context keys are
//! pinned by the server at their current versions); the submitter hears what happens to its tasks
//! through [`Agent::task_events`](crate::Agent::task_events). An executor asks for work with
//! [`Agent::tasks`](crate::Agent::tasks) and gets an async stream of [`Assignment`]s, each
//! completed or failed once; the pinned context and the outputs of the tasks it depends on come
//! with it. [`Client::tasks`](crate::Client::tasks) reads, lists, retries and watches tasks from
//! anywhere.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use crate::Channel;
use futures::Stream;
use lockstep_proto::v1;
use lockstep_proto::v1::tasks_client::TasksClient as Grpc;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Agent, Error};

/// A task to submit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskSpec {
    /// Empty: the server names it.
    pub id: String,
    pub kind: String,
    pub input: Value,
    pub context_keys: Vec<String>,
    pub role: String,
    pub capabilities: Vec<String>,
    pub priority: i32,
    /// Each attempt's deadline in milliseconds from its assignment (0: the server's default).
    pub timeout_ms: u64,
    /// 0: the server's default.
    pub max_attempts: u32,
    pub depends_on: Vec<String>,
}

impl TaskSpec {
    /// A task of type `kind` with `input`.
    pub fn new(kind: impl Into<String>, input: Value) -> Self {
        TaskSpec { kind: kind.into(), input, ..TaskSpec::default() }
    }

    /// Names the task (a retried submission with the same id is refused with `TASK_EXISTS`
    /// instead of being taken twice).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Pins these context keys at their current versions.
    pub fn context_keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.context_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Runs once these tasks are completed, with their outputs.
    pub fn depends_on<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.depends_on = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Only an agent of this role may execute it.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    /// Only an agent with all these capabilities may execute it.
    pub fn capabilities<I: IntoIterator<Item = S>, S: Into<String>>(mut self, caps: I) -> Self {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = ms;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The wire form.
    pub fn message(&self) -> v1::SubmitTask {
        v1::SubmitTask {
            id: self.id.clone(),
            r#type: self.kind.clone(),
            input_json: self.input.to_string(),
            context_keys: self.context_keys.clone(),
            role: self.role.clone(),
            capabilities: self.capabilities.clone(),
            priority: self.priority,
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            depends_on: self.depends_on.clone(),
        }
    }
}

/// A context key as the task's submission pinned it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pinned {
    pub version: u64,
    pub value: Value,
}

fn parse(text: &str) -> Result<Value, Error> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| Error::Input(format!("server sent bad JSON: {e}")))
}

/// A task handed to this agent: complete or fail it once.
pub struct Assignment {
    agent: Agent,
    pub id: String,
    pub kind: String,
    pub input: Value,
    /// Quoted back when completing or failing.
    pub attempt: u32,
    /// Server clock: the attempt is lost after it.
    pub deadline_ms: u64,
    pub priority: i32,
    pub submitter: String,
    /// The context keys as staged at submission, by key.
    pub pinned: BTreeMap<String, Pinned>,
    /// The outputs of the tasks it depends on, by id.
    pub dependencies: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Assignment {
    pub(crate) fn new(agent: Agent, a: v1::TaskAssignment) -> Result<Self, Error> {
        let mut pinned = BTreeMap::new();
        for p in a.pinned {
            pinned.insert(p.key, Pinned { version: p.version, value: parse(&p.value_json)? });
        }
        let mut dependencies = BTreeMap::new();
        for d in a.dependencies {
            dependencies.insert(d.id, parse(&d.output_json)?);
        }
        Ok(Assignment {
            agent,
            input: parse(&a.input_json)?,
            id: a.id,
            kind: a.r#type,
            attempt: a.attempt,
            deadline_ms: a.deadline_ms,
            priority: a.priority,
            submitter: a.submitter,
            pinned,
            dependencies,
        })
    }

    /// The pinned value of context key `key`, as it was when the task was submitted.
    pub fn context(&self, key: &str) -> Option<&Value> {
        self.pinned.get(key).map(|p| &p.value)
    }

    /// Tells the submitter the work started.
    pub async fn start(&self) -> Result<(), Error> {
        let m = v1::StartTask { id: self.id.clone(), attempt: self.attempt };
        self.agent.call_ok(v1::client_message::Kind::StartTask(m)).await
    }

    /// Completes the task with `output`. Refused with `TASK_NOT_HELD` when this attempt was
    /// superseded (its deadline passed, or the session was lost), `TASK_FINISHED` when already done.
    pub async fn complete(self, output: &Value) -> Result<(), Error> {
        let m = v1::CompleteTask { id: self.id.clone(), attempt: self.attempt, output_json: output.to_string() };
        self.agent.call_ok(v1::client_message::Kind::CompleteTask(m)).await
    }

    /// Fails this attempt with `error`: the task is retried, or dead-lettered past its attempts.
    pub async fn fail(self, error: &str) -> Result<(), Error> {
        let m = v1::FailTask { id: self.id.clone(), attempt: self.attempt, error: error.to_owned() };
        self.agent.call_ok(v1::client_message::Kind::FailTask(m)).await
    }
}

/// What the session's reader hands over: assignments and the submitter's task events, and the
/// work asked for (asked again after a reconnection, since a restarted server forgets it).
#[derive(Default)]
pub(crate) struct TaskLink {
    assigned: Mutex<Option<mpsc::UnboundedSender<v1::TaskAssignment>>>,
    events: Mutex<Option<mpsc::UnboundedSender<v1::TaskEvent>>>,
    events_taken: AtomicBool,
    work: Mutex<Option<v1::TaskWork>>,
}

impl TaskLink {
    /// An assignment arrived; one nobody asked for is ignored (its deadline hands it on).
    pub(crate) fn assigned(&self, a: v1::TaskAssignment) {
        if let Some(tx) = self.assigned.lock().expect("not poisoned").as_ref() {
            let _ = tx.send(a);
        }
    }

    /// A task event arrived; kept only once the application took the events.
    pub(crate) fn event(&self, e: v1::TaskEvent) {
        if let Some(tx) = self.events.lock().expect("not poisoned").as_ref() {
            let _ = tx.send(e);
        }
    }

    /// The work request to send again on a new connection.
    pub(crate) fn work(&self) -> Option<v1::TaskWork> {
        self.work.lock().expect("not poisoned").clone()
    }
}

/// Assignments for this agent, as an async stream (or with [`Assignments::next`]).
pub struct Assignments {
    agent: Agent,
    rx: mpsc::UnboundedReceiver<v1::TaskAssignment>,
}

impl Assignments {
    /// The next assignment; `None` once the session ended.
    pub async fn next(&mut self) -> Option<Assignment> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for Assignments {
    type Item = Assignment;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Assignment>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(a)) => match Assignment::new(self.agent.clone(), a) {
                    Ok(a) => return Poll::Ready(Some(a)),
                    // Left to its deadline, which hands it on.
                    Err(e) => tracing::warn!(error = %e, "undecodable task assignment"),
                },
                other => return other.map(|_| None),
            }
        }
    }
}

/// Events of the tasks this agent submitted.
pub struct TaskEvents(mpsc::UnboundedReceiver<v1::TaskEvent>);

impl TaskEvents {
    /// The next event; `None` once the session ended.
    pub async fn recv(&mut self) -> Option<v1::TaskEvent> {
        self.0.recv().await
    }

    pub fn try_recv(&mut self) -> Option<v1::TaskEvent> {
        self.0.try_recv().ok()
    }
}

impl Agent {
    /// Submits a task; returns its id. Its context keys are pinned at their current versions.
    pub async fn submit_task(&self, spec: &TaskSpec) -> Result<String, Error> {
        match self.call(v1::client_message::Kind::SubmitTask(spec.message())).await? {
            v1::reply::Outcome::TaskSubmitted(s) => Ok(s.id),
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(crate::agent::unexpected(other)),
        }
    }

    /// The events of the tasks this agent submits (assigned, started, completed, failed, retried,
    /// dead_lettered, refused). Taken once; events before the call are not kept. Read them: they
    /// are held for you until you do.
    pub fn task_events(&self) -> Option<TaskEvents> {
        let link = self.task_link();
        if link.events_taken.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *link.events.lock().expect("not poisoned") = Some(tx);
        Some(TaskEvents(rx))
    }

    /// Asks for work: tasks of `types` (empty: any) this agent is eligible for, at most
    /// `max_in_flight` held at once (0: the server's limit). Asking again replaces the request
    /// and the stream of the previous call ends.
    pub async fn tasks<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        types: I,
        max_in_flight: u32,
    ) -> Result<Assignments, Error> {
        let work = v1::TaskWork { types: types.into_iter().map(Into::into).collect(), max_in_flight };
        let (tx, rx) = mpsc::unbounded_channel();
        let link = self.task_link();
        *link.assigned.lock().expect("not poisoned") = Some(tx);
        *link.work.lock().expect("not poisoned") = Some(work.clone());
        self.call_ok(v1::client_message::Kind::TaskWork(work)).await?;
        Ok(Assignments { agent: self.clone(), rx })
    }

    /// Stops asking for work (tasks held stay held).
    pub async fn stop_tasks(&self) -> Result<(), Error> {
        let link = self.task_link();
        *link.work.lock().expect("not poisoned") = None;
        *link.assigned.lock().expect("not poisoned") = None;
        self.call_ok(v1::client_message::Kind::StopTaskWork(v1::StopTaskWork {})).await
    }

    /// Claims the best ready task of `types` (empty: any) this agent can take, if one is ready.
    /// Past the agent's in-flight limit: `TASK_IN_FLIGHT_LIMIT`.
    pub async fn claim_task<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        types: I,
    ) -> Result<Option<Assignment>, Error> {
        let m = v1::ClaimTask { types: types.into_iter().map(Into::into).collect() };
        match self.call(v1::client_message::Kind::ClaimTask(m)).await? {
            v1::reply::Outcome::TaskClaimed(c) => c.assignment.map(|a| Assignment::new(self.clone(), a)).transpose(),
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(crate::agent::unexpected(other)),
        }
    }
}

/// A task, as the `Tasks` service shows it.
pub use lockstep_proto::v1::TaskInfo;

/// Tasks of one namespace, through the `Tasks` service.
#[derive(Clone)]
pub struct TasksClient {
    pub(crate) grpc: Grpc<Channel>,
    pub(crate) namespace: String,
}

impl TasksClient {
    pub(crate) fn new(channel: Channel, namespace: String, max_message: usize) -> Self {
        let grpc = Grpc::new(channel).max_decoding_message_size(max_message).max_encoding_message_size(max_message);
        TasksClient { grpc, namespace }
    }

    /// One task, whole.
    pub async fn get(&self, id: &str) -> Result<TaskInfo, Error> {
        let req = v1::TaskGetRequest { namespace: self.namespace.clone(), id: id.to_owned() };
        Ok(self.grpc.clone().get(req).await?.into_inner())
    }

    /// The tasks in submission order whose state is `state` and type `kind` (empty: any).
    pub async fn list(&self, state: &str, kind: &str) -> Result<Vec<TaskInfo>, Error> {
        crate::every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::TaskListRequest {
                namespace: self.namespace.clone(),
                state: state.to_owned(),
                r#type: kind.to_owned(),
                page_token,
                page_size: 0,
            };
            async move {
                let page = grpc.list(req).await?.into_inner();
                Ok((page.tasks, page.next_page_token))
            }
        })
        .await
    }

    /// The dead-letter list: every dead-lettered task with each attempt's error.
    pub async fn dead_letters(&self) -> Result<Vec<TaskInfo>, Error> {
        self.list("dead_lettered", "").await
    }

    /// Every task event of the namespace from now on.
    pub async fn watch(&self) -> Result<tonic::Streaming<v1::TaskEvent>, Error> {
        let req = v1::TaskWatchRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().watch(req).await?.into_inner())
    }

    /// Task queues per namespace and type.
    pub async fn queues(&self) -> Result<Vec<v1::TaskQueue>, Error> {
        Ok(self.grpc.clone().queues(v1::TaskQueuesRequest {}).await?.into_inner().queues)
    }
}
