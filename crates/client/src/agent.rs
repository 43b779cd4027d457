//! An agent's session: one bidirectional stream, a reader task that dispatches what the server
//! sends, and a heartbeat task. Requests carry ids and await their replies; deliveries and state
//! changes flow to their own streams.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::Channel;
use bytes::Bytes;
use lockstep_proto::v1;
use lockstep_proto::v1::lockstep_client::LockstepClient;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{recovery, Recovery};
use crate::limits::SessionLimits;
use crate::Error;

/// Delivery batches (as the server sent them, up to 256 deliveries each) buffered in the client
/// before the reader waits for the application; the server's bounded queue, with its overflow
/// policy, takes over beyond that.
const DELIVERY_BATCHES: usize = 16;
/// State updates buffered for the application; beyond that notifications are skipped, never
/// state: the view of every watched agent is always current.
const STATE_UPDATE_BUFFER: usize = 1024;
/// Client messages buffered before sending waits.
pub(crate) const OUTBOUND_BUFFER: usize = 1024;

/// What an agent registers as.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub agent_id: String,
    pub role: String,
    pub capabilities: Vec<String>,
    pub interests: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Take over a live session of the same agent (after a reconnect).
    pub resume_token: Option<String>,
    /// How long to keep trying to reconnect after the connection breaks (`None`: never
    /// reconnect). Default: one minute.
    pub reconnect_for: Option<Duration>,
}

impl AgentOptions {
    pub fn new(agent_id: impl Into<String>, role: impl Into<String>) -> Self {
        AgentOptions {
            agent_id: agent_id.into(),
            role: role.into(),
            reconnect_for: Some(DEFAULT_RECONNECT_FOR),
            ..Default::default()
        }
    }

    /// How long to keep reconnecting after the connection breaks; `None` turns reconnection off.
    pub fn reconnect_for(mut self, limit: Option<Duration>) -> Self {
        self.reconnect_for = limit;
        self
    }

    pub fn capabilities<I: IntoIterator<Item = S>, S: Into<String>>(mut self, caps: I) -> Self {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }

    /// Topic patterns: `a.b`, `a.*.c` (one token), `a.>` (the rest), `all`.
    pub fn interests<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.interests = patterns.into_iter().map(Into::into).collect();
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn resume_token(mut self, token: impl Into<String>) -> Self {
        self.resume_token = Some(token.into());
        self
    }
}

/// Who must arrive at a sync point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Participants {
    /// Exactly these agents.
    Agents(Vec<String>),
    /// Any N agents.
    Count(u32),
    /// Every live agent with this role when the point is created.
    Role(String),
}

/// Whose state to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchTarget {
    Agent(String),
    Role(String),
    All,
}

/// A message routed to this agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    pub topic: String,
    pub payload: Bytes,
    pub content_type: String,
    pub publisher: String,
    /// Messages dropped right before this one because this agent's queue overflowed.
    pub missed_before: u64,
    /// On a retained topic (live or replayed): the topic's sequence number for this message; 0
    /// on other topics.
    pub topic_seq: u64,
    /// On a retained topic: the server time (ms) it was published at; 0 on other topics.
    pub time_ms: u64,
    /// A record the server's intake categorised: the envelope it stamped (see
    /// [`IntakeClient`](crate::IntakeClient)); `None` for every other message.
    pub intake: Option<IntakeEnvelope>,
}

/// What the server stamps on a record its intake moved onto a category topic (the publisher stays
/// in [`Delivery::publisher`], as the record's data source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeEnvelope {
    /// The intake's sequence number (from 1).
    pub seq: u64,
    /// The topic the record was published on.
    pub categorised_from: String,
    /// The server time (ms) it was taken at.
    pub time_ms: u64,
    /// The open round of the route's round series; 0 when none.
    pub tick_id: u64,
    /// The rule that matched (`<route topic>/<rule name>`); empty when none did.
    pub rule: String,
}

/// What a participant of a completed sync point receives: the whole outcome from
/// [`Agent::sync`], its summary from [`Agent::sync_summary`]. Results compare equal when they
/// describe the same outcome the same way: `position`, which differs from one participant to the
/// next, is left out of the comparison.
#[derive(Clone, Debug, Eq)]
pub struct SyncResult {
    pub sync_id: String,
    /// Who arrived, in order (empty in a summary).
    pub arrival_order: Vec<String>,
    /// `payloads[i]` is what `arrival_order[i]` brought (empty in a summary).
    pub payloads: Vec<Bytes>,
    pub forced: bool,
    /// How many agents arrived.
    pub count: u32,
    /// The outcome's digest, the same for every participant of the point whichever way it was
    /// answered: equal digests mean the same arrival order and payloads.
    pub digest: u64,
    /// This agent's place in the arrival order, from 0; `count` if it is not in the arrival order
    /// (a late participant of a quorum point).
    pub position: u32,
    /// Only the count, digest, position and late count were sent.
    pub summary: bool,
    /// Required participants that had not arrived when the point was released (the rest of a
    /// quorum point's set or role, or those a force-complete went without), sorted; empty in a
    /// summary.
    pub late: Vec<String>,
    /// How many were late (given in a summary too).
    pub late_count: u32,
}

impl PartialEq for SyncResult {
    fn eq(&self, other: &Self) -> bool {
        let Self { sync_id, arrival_order, payloads, forced, count, digest, position: _, summary, late, late_count } =
            self;
        (sync_id, arrival_order, payloads, forced, count, digest, summary, late, late_count)
            == (
                &other.sync_id,
                &other.arrival_order,
                &other.payloads,
                &other.forced,
                &other.count,
                &other.digest,
                &other.summary,
                &other.late,
                &other.late_count,
            )
    }
}

/// A watched agent's state changed; `state` is the full current view.
#[derive(Clone, Debug, PartialEq)]
pub struct StateUpdate {
    pub agent_id: String,
    pub version: u64,
    pub state: Value,
    /// The agent left; its state is gone.
    pub removed: bool,
}

/// The stream of deliveries of one agent.
pub struct Deliveries {
    batches: mpsc::Receiver<Vec<Delivery>>,
    current: std::vec::IntoIter<Delivery>,
}

impl Deliveries {
    /// The next delivery; `None` once the session ended.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    /// The next delivery if one has already arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        loop {
            if let Some(d) = self.current.next() {
                return Some(d);
            }
            self.current = self.batches.try_recv().ok()?.into_iter();
        }
    }

    fn poll_delivery(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Delivery>> {
        loop {
            if let Some(d) = self.current.next() {
                return std::task::Poll::Ready(Some(d));
            }
            match self.batches.poll_recv(cx) {
                std::task::Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                other => return other.map(|_| None),
            }
        }
    }
}

impl futures::Stream for Deliveries {
    type Item = Delivery;
    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Delivery>> {
        self.get_mut().poll_delivery(cx)
    }
}

/// An operator's command for this agent. Answer it with [`IncomingCommand::reply`].
#[derive(Debug)]
pub struct IncomingCommand {
    pub id: u64,
    pub command: String,
    /// A JSON object, or null.
    pub params: Value,
    /// Server clock (ms) at which the operator stops waiting.
    pub deadline_ms: u64,
    outbound: mpsc::WeakSender<v1::ClientMessage>,
    limits: SessionLimits,
}

impl IncomingCommand {
    /// Answers the command: `Ok(result)` or `Err(why it failed)`. A result over the server's
    /// message cap is refused here ([`Error::TooLarge`]).
    pub async fn reply(self, outcome: Result<Value, String>) -> Result<(), Error> {
        command_reply(&self.outbound, &self.limits, self.id, outcome).await
    }
}

async fn command_reply(
    outbound: &mpsc::WeakSender<v1::ClientMessage>,
    limits: &SessionLimits,
    id: u64,
    outcome: Result<Value, String>,
) -> Result<(), Error> {
    use v1::command_result::Outcome;
    let outcome = match outcome {
        Ok(value) => Outcome::ResultJson(value.to_string()),
        Err(message) => Outcome::Error(message),
    };
    let closed = || Error::SessionEnded("the session is closed".into());
    let tx = outbound.upgrade().ok_or_else(closed)?;
    let result = v1::CommandResult { command_id: id, outcome: Some(outcome) };
    let m = msg(0, v1::client_message::Kind::CommandResult(result));
    limits.check(&m)?;
    tx.send(m).await.map_err(|_| closed())
}

/// Operators' commands for this agent.
pub struct IncomingCommands(mpsc::Receiver<IncomingCommand>);

impl IncomingCommands {
    /// The next command; `None` once the session ended.
    pub async fn recv(&mut self) -> Option<IncomingCommand> {
        self.0.recv().await
    }
}

/// Operators' control notices for this agent: paused, resumed, emergency stop, resumed all.
pub struct ControlNotices(mpsc::Receiver<v1::Control>);

impl ControlNotices {
    /// The next notice; `None` once the session ended.
    pub async fn recv(&mut self) -> Option<v1::Control> {
        self.0.recv().await
    }
}

/// The answer to [`Agent::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub payload: Bytes,
    pub content_type: String,
    /// The agent that answered.
    pub responder: String,
}

/// Another agent's request for this one to answer: answer it with [`IncomingRequest::respond`]
/// (or refuse it with [`IncomingRequest::refuse`]) before `deadline_ms`, when the requester stops
/// waiting. One dropped unanswered leaves its requester waiting until then.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The server's name for the request.
    pub token: u64,
    pub topic: String,
    pub payload: Bytes,
    pub content_type: String,
    pub requester: String,
    /// Server clock (ms) at which the requester stops waiting.
    pub deadline_ms: u64,
    agent: Weak<Inner>,
}

impl IncomingRequest {
    /// Answers the request with `payload`; returns once the server took the answer. An answer the
    /// server no longer waits for (the request timed out) is refused: [`Error::NotFound`] with
    /// reason [`Reason::UnknownRequest`](crate::Reason::UnknownRequest); the session goes on.
    pub async fn respond(self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.respond_as(payload, "").await
    }

    /// [`IncomingRequest::respond`] with a content type.
    pub async fn respond_as(self, payload: impl Into<Bytes>, content_type: &str) -> Result<(), Error> {
        self.answer(payload.into(), content_type, String::new()).await
    }

    /// Refuses the request: the requester gets [`Error::RequestRefused`] with `why`.
    pub async fn refuse(self, why: &str) -> Result<(), Error> {
        self.answer(Bytes::new(), "", why.to_owned()).await
    }

    async fn answer(self, payload: Bytes, content_type: &str, error: String) -> Result<(), Error> {
        let inner = self.agent.upgrade().ok_or_else(|| Error::SessionEnded("the session is closed".into()))?;
        let r = v1::Respond { token: self.token, payload, content_type: content_type.to_owned(), error };
        Agent { inner }.call_ok(v1::client_message::Kind::Respond(r)).await
    }
}

/// Other agents' requests for this one to answer.
pub struct IncomingRequests(mpsc::Receiver<IncomingRequest>);

impl IncomingRequests {
    /// The next request; `None` once the session ended.
    pub async fn recv(&mut self) -> Option<IncomingRequest> {
        self.0.recv().await
    }

    /// The next request if one has already arrived, without waiting.
    pub fn try_recv(&mut self) -> Option<IncomingRequest> {
        self.0.try_recv().ok()
    }
}

/// Requests from other agents buffered for the application; beyond that they are refused.
const REQUEST_BUFFER: usize = 1024;

/// How long an agent keeps trying to reconnect by default.
pub const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(60);
/// First and longest pause between reconnection attempts (doubling, with ±25 % jitter).
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// Acknowledgements are sent at most this often: a batch arriving sooner after the last
/// acknowledgement has its acknowledgement held until then, and a later batch's replaces it (one
/// acknowledgement covers every batch before it). A lone batch is acknowledged at once. At a
/// steady stream of small batches this takes the acknowledgements, which cost the server as much
/// as the deliveries, from one per batch to one per interval; it is far below the breaker's
/// acknowledgement timeout (`breaker.timeout_per_agent_ms`, 5 s by default) and the health's
/// slow-acknowledgement threshold (`health.slow_ack_p99_ms`, 1 s).
const ACK_EVERY: Duration = Duration::from_millis(10);

/// Deliveries held unacknowledged that are acknowledged at once, whatever [`ACK_EVERY`] says: the
/// server sends at most `engine.max_in_flight` messages (2,048 by default) ahead of the
/// acknowledgements, so a busy reader acknowledges well before that to keep messages flowing.
const ACK_AT_ONCE: u64 = 512;

/// Commands and notices buffered for the application.
const CONTROL_BUFFER: usize = 64;

/// The stream of state updates of the agents this agent watches.
pub struct StateUpdates(mpsc::Receiver<StateUpdate>);

impl StateUpdates {
    /// The next update; `None` once the session ended.
    pub async fn recv(&mut self) -> Option<StateUpdate> {
        self.0.recv().await
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<v1::reply::Outcome, Error>>>>>;
type Views = Arc<Mutex<HashMap<String, (u64, Value)>>>;

/// Adds the messages a registration reported lost to the agent's count, and says so.
fn report_missed(missed: &AtomicU64, now_reported: u64) {
    if now_reported > 0 {
        missed.fetch_add(now_reported, Ordering::Relaxed);
        tracing::warn!(
            messages = now_reported,
            "messages routed to this agent were dropped while its session was away"
        );
    }
}

struct Inner {
    grpc: LockstepClient<Channel>,
    /// The connection the session opened on, for services beside it (traces).
    channel: Channel,
    agent_id: String,
    namespace: String,
    resume_token: Arc<Mutex<String>>,
    heartbeat_interval: Duration,
    outbound: mpsc::Sender<v1::ClientMessage>,
    next_id: AtomicU64,
    pending: Pending,
    resend: Resend,
    views: Views,
    deliveries: Mutex<Option<Deliveries>>,
    state_updates: Mutex<Option<StateUpdates>>,
    async_errors: Arc<Mutex<Vec<Error>>>,
    watches: Watches,
    ended: watch::Receiver<Option<Error>>,
    paused: Arc<AtomicBool>,
    commands: Mutex<Option<IncomingCommands>>,
    commands_taken: Arc<AtomicBool>,
    notices: Mutex<Option<ControlNotices>>,
    requests: Mutex<Option<IncomingRequests>>,
    requests_taken: Arc<AtomicBool>,
    limits: SessionLimits,
    /// Messages the server reported lost at registrations and resumptions (see
    /// [`Agent::missed_while_away`]).
    missed: Arc<AtomicU64>,
    /// The shared-memory region of this agent's last collective over shared memory, still mapped:
    /// the server hands it over again instead of a new one (see collective.rs).
    shm_region: Mutex<Option<(u64, Arc<lockstep_proto::shm::SharedRegion>)>>,
    /// The shared result region of this agent's last such collective, still mapped; out of here
    /// while a collective reads it (the server hands it over again only to a collective whose
    /// members all name it, so never while one of them still reads it).
    shm_result: Mutex<Option<(u64, Arc<lockstep_proto::shm::SharedRegion>)>>,
    /// Task assignments and events (see tasks.rs).
    tasks: Arc<crate::tasks::TaskLink>,
    /// Tick round inputs (see rounds.rs).
    rounds: Arc<crate::rounds::RoundLink>,
    /// Gap notices and subscriptions (see history.rs).
    history: Arc<crate::history::HistoryLink>,
}

/// A registered agent. Cheap to clone; dropping the last clone ends the session cleanly: the agent
/// says goodbye (`deregister`) and leaves at once, as with [`Agent::close`] (which also waits for
/// the server to end the session). A session whose stream merely breaks is kept by the server for
/// its lease, and resumed.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

fn msg(request_id: u64, kind: v1::client_message::Kind) -> v1::ClientMessage {
    v1::ClientMessage { request_id, kind: Some(kind) }
}

pub(crate) async fn fetch_state(
    grpc: &mut LockstepClient<Channel>,
    namespace: &str,
    agent_id: &str,
) -> Result<(u64, Value), Error> {
    let r = grpc
        .get_state(v1::GetStateRequest { namespace: namespace.to_owned(), agent_id: agent_id.to_owned() })
        .await?
        .into_inner();
    let state = serde_json::from_str(&r.state_json).map_err(|e| Error::Other {
        code: tonic::Code::Internal,
        message: format!("server sent invalid state JSON: {e}").into(),
    })?;
    Ok((r.version, state))
}

impl Agent {
    /// Opens a session on `grpc`'s connection; `shared` is that connection's heartbeat when other
    /// sessions may share it.
    pub(crate) async fn open(
        channel: Channel,
        namespace: &str,
        o: AgentOptions,
        shared: Option<Arc<ConnectionBeat>>,
        transport: Transport,
    ) -> Result<Agent, Error> {
        let mut grpc = crate::grpc_client(channel.clone());
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_BUFFER);
        let mut register = v1::Register {
            namespace: namespace.to_owned(),
            agent_id: o.agent_id.clone(),
            role: o.role,
            capabilities: o.capabilities,
            interests: o.interests,
            metadata: o.metadata.into_iter().collect(),
            resume_token: o.resume_token.unwrap_or_default(),
        };
        let (inbound, registered, conn) = open_session(&mut grpc, &transport, &register).await?;
        register.resume_token = registered.resume_token.clone();
        let limits = SessionLimits::default();
        limits.set(registered.limits);
        let missed = Arc::new(AtomicU64::new(0));
        report_missed(&missed, registered.missed_messages);
        let resume_token = Arc::new(Mutex::new(registered.resume_token.clone()));
        let (new_conn_tx, new_conn_rx) = mpsc::unbounded_channel();
        tokio::spawn(pump(out_rx, conn, new_conn_rx));
        let watches: Watches = Default::default();
        let (del_tx, del_rx) = mpsc::channel(DELIVERY_BATCHES);
        let (state_tx, state_rx) = mpsc::channel(STATE_UPDATE_BUFFER);
        let (ended_tx, ended_rx) = watch::channel(None);
        let pending: Pending = Default::default();
        let resend: Resend = Default::default();
        let views: Views = Default::default();
        let async_errors = Arc::new(Mutex::new(Vec::new()));
        let heartbeat_interval = Duration::from_millis(registered.heartbeat_interval_ms.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(CONTROL_BUFFER);
        let (notices_tx, notices_rx) = mpsc::channel(CONTROL_BUFFER);
        let paused = Arc::new(AtomicBool::new(false));
        let commands_taken = Arc::new(AtomicBool::new(false));
        let (requests_tx, requests_rx) = mpsc::channel(REQUEST_BUFFER);
        let requests_taken = Arc::new(AtomicBool::new(false));
        let this: Arc<OnceLock<Weak<Inner>>> = Default::default();
        let tasks: Arc<crate::tasks::TaskLink> = Default::default();
        let rounds: Arc<crate::rounds::RoundLink> = Default::default();
        let history: Arc<crate::history::HistoryLink> = Default::default();
        // Only a server that renews every session of a connection on one heartbeat lets the
        // sessions of a shared connection take turns.
        let beat = shared
            .filter(|_| registered.connection_heartbeats)
            .map(|beat| SharedBeat { beat, still_shared: Arc::new(AtomicBool::new(true)) });
        let reader = Reader {
            tasks: tasks.clone(),
            rounds: rounds.clone(),
            history: history.clone(),
            left_shared: beat.as_ref().map(|b| b.still_shared.clone()),
            requests: requests_tx,
            requests_taken: requests_taken.clone(),
            agent: this.clone(),
            commands: commands_tx,
            commands_taken: commands_taken.clone(),
            notices: notices_tx,
            paused: paused.clone(),
            grpc: grpc.clone(),
            transport,
            namespace: registered.namespace.clone(),
            pending: pending.clone(),
            resend: resend.clone(),
            views: views.clone(),
            deliveries: del_tx,
            state_updates: state_tx,
            outbound: out_tx.downgrade(),
            async_errors: async_errors.clone(),
            limits: limits.clone(),
            missed: missed.clone(),
            held_ack: None,
            held_count: 0,
            // So that the first batch is acknowledged at once.
            last_ack: tokio::time::Instant::now().checked_sub(ACK_EVERY).unwrap_or_else(tokio::time::Instant::now),
            reconnect: o.reconnect_for.map(|limit| Reconnect {
                register,
                resume_token: resume_token.clone(),
                watches: watches.clone(),
                new_conn: new_conn_tx,
                limit,
            }),
        };
        tokio::spawn(async move {
            let reason = reader.run(inbound).await;
            let _ = ended_tx.send(Some(reason));
        });
        tokio::spawn(heartbeat(out_tx.downgrade(), heartbeat_interval, beat));
        let agent = Agent {
            inner: Arc::new(Inner {
                grpc,
                channel,
                agent_id: registered.agent_id,
                namespace: registered.namespace,
                resume_token,
                watches,
                heartbeat_interval,
                outbound: out_tx,
                next_id: AtomicU64::new(1),
                pending,
                resend,
                views,
                deliveries: Mutex::new(Some(Deliveries { batches: del_rx, current: Vec::new().into_iter() })),
                state_updates: Mutex::new(Some(StateUpdates(state_rx))),
                async_errors,
                ended: ended_rx,
                paused,
                commands: Mutex::new(Some(IncomingCommands(commands_rx))),
                commands_taken,
                notices: Mutex::new(Some(ControlNotices(notices_rx))),
                requests: Mutex::new(Some(IncomingRequests(requests_rx))),
                requests_taken,
                limits,
                missed,
                shm_region: Mutex::new(None),
                shm_result: Mutex::new(None),
                tasks,
                rounds,
                history,
            }),
        };
        // Requests handed to the application answer through the agent (set before any is taken).
        let _ = this.set(Arc::downgrade(&agent.inner));
        Ok(agent)
    }

    pub fn id(&self) -> &str {
        &self.inner.agent_id
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Presented by a new connection to take this session over.
    /// What a collective call needs: the service, the namespace, the agent and its current
    /// resume token (which proves the call comes from the agent's live session).
    /// The session's connection (services beside the session use it).
    pub(crate) fn channel(&self) -> Channel {
        self.inner.channel.clone()
    }

    pub(crate) fn collective_parts(&self) -> (LockstepClient<Channel>, String, String, String) {
        let i = &self.inner;
        (i.grpc.clone(), i.namespace.clone(), i.agent_id.clone(), self.resume_token())
    }

    /// The shared-memory region kept from this agent's last collective over shared memory.
    pub(crate) fn kept_region(&self) -> Option<(u64, Arc<lockstep_proto::shm::SharedRegion>)> {
        self.inner.shm_region.lock().expect("not poisoned").clone()
    }

    /// Keeps region `id` for the next collective over shared memory.
    pub(crate) fn keep_region(&self, id: u64, region: Arc<lockstep_proto::shm::SharedRegion>) {
        *self.inner.shm_region.lock().expect("not poisoned") = Some((id, region));
    }

    /// Takes the shared result region kept from this agent's last collective over shared memory,
    /// for a collective that may read it.
    pub(crate) fn take_result_region(&self) -> Option<(u64, Arc<lockstep_proto::shm::SharedRegion>)> {
        self.inner.shm_result.lock().expect("not poisoned").take()
    }

    /// Keeps shared result region `id` for the next collective over shared memory (once this
    /// agent no longer reads it).
    pub(crate) fn keep_result_region(&self, kept: (u64, Arc<lockstep_proto::shm::SharedRegion>)) {
        *self.inner.shm_result.lock().expect("not poisoned") = Some(kept);
    }

    pub fn resume_token(&self) -> String {
        self.inner.resume_token.lock().expect("not poisoned").clone()
    }

    /// The limits the server announced when this session registered (or last resumed); `None`
    /// from a server that predates the announcement. Requests over them are refused before they
    /// are sent ([`Error::TooLarge`]).
    pub fn limits(&self) -> Option<v1::Limits> {
        self.inner.limits.get()
    }

    /// How many messages routed to this agent it will never receive because they were dropped
    /// while its session was away (the server discards a lost agent's queue) or as its queue
    /// overflowed with nothing after them, as the server reported when the session registered
    /// or resumed; summed over the agent's life. Losses between messages are reported with the
    /// next delivery instead ([`Delivery::missed_before`]).
    pub fn missed_while_away(&self) -> u64 {
        self.inner.missed.load(Ordering::Relaxed)
    }

    /// The heartbeat interval the server asked for (heartbeats are sent automatically).
    pub fn heartbeat_interval(&self) -> Duration {
        self.inner.heartbeat_interval
    }

    /// The stream of messages routed to this agent. Taken once; `None` afterwards. An agent with
    /// interests must read it: while it does not, the server queues and then drops the oldest
    /// messages (reported in `missed_before`).
    pub fn deliveries(&self) -> Option<Deliveries> {
        self.inner.deliveries.lock().expect("not poisoned").take()
    }

    /// The stream of state updates of watched agents. Taken once; `None` afterwards.
    pub fn state_updates(&self) -> Option<StateUpdates> {
        self.inner.state_updates.lock().expect("not poisoned").take()
    }

    /// Operators' commands for this agent. Taken once; `None` afterwards. Until it is taken, the
    /// agent answers every command with an error saying it does not handle commands.
    pub fn commands(&self) -> Option<IncomingCommands> {
        let taken = self.inner.commands.lock().expect("not poisoned").take();
        self.inner.commands_taken.store(true, Ordering::SeqCst);
        taken
    }

    /// Other agents' requests for this agent to answer (see [`Agent::request`]). Taken once;
    /// `None` afterwards. Until it is taken, the agent refuses every request it is given
    /// ([`Error::RequestRefused`] for the requester), so that an agent that only listens to a
    /// topic does not leave requesters waiting.
    pub fn requests(&self) -> Option<IncomingRequests> {
        let taken = self.inner.requests.lock().expect("not poisoned").take();
        self.inner.requests_taken.store(true, Ordering::SeqCst);
        taken
    }

    /// Operators' control notices (paused, resumed, emergency stop, resumed all). Taken once.
    pub fn control_notices(&self) -> Option<ControlNotices> {
        self.inner.notices.lock().expect("not poisoned").take()
    }

    /// Whether an operator paused this agent (or stopped everyone): its deliveries are held and
    /// its publishes, state updates and sync arrivals refused until it is resumed.
    pub fn is_paused(&self) -> bool {
        self.inner.paused.load(Ordering::SeqCst)
    }

    /// Errors the server reported for fire-and-forget requests (such as [`Agent::publish`]) since the
    /// last call.
    pub fn take_errors(&self) -> Vec<Error> {
        std::mem::take(&mut *self.inner.async_errors.lock().expect("not poisoned"))
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<Error> {
        self.inner.ended.borrow().clone()
    }

    async fn send(&self, request_id: u64, kind: v1::client_message::Kind) -> Result<(), Error> {
        let m = msg(request_id, kind);
        self.inner.limits.check(&m)?;
        self.inner.outbound.send(m).await.map_err(|_| self.ended_error())
    }

    fn ended_error(&self) -> Error {
        self.ended().unwrap_or_else(|| Error::SessionEnded("the session is closed".into()))
    }

    pub(crate) async fn call(&self, kind: v1::client_message::Kind) -> Result<v1::reply::Outcome, Error> {
        self.call_with(kind, false).await
    }

    /// Sends a request and waits for its reply. With `resend`, a broken connection does not fail
    /// it: it is sent again, with the same id, on the reconnected session (for requests the server
    /// takes again without doing them twice, like a sync arrival).
    pub(crate) async fn call_with(
        &self,
        kind: v1::client_message::Kind,
        resend: bool,
    ) -> Result<v1::reply::Outcome, Error> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().expect("not poisoned").insert(id, tx);
        if resend {
            self.inner.resend.lock().expect("not poisoned").insert(id, msg(id, kind.clone()));
        }
        let sent = self.send(id, kind).await;
        let outcome = match sent {
            Err(e) => {
                self.inner.pending.lock().expect("not poisoned").remove(&id);
                Err(e)
            }
            Ok(()) => rx.await.unwrap_or_else(|_| Err(self.ended_error())),
        };
        if resend {
            self.inner.resend.lock().expect("not poisoned").remove(&id);
        }
        outcome
    }

    pub(crate) async fn call_ok(&self, kind: v1::client_message::Kind) -> Result<(), Error> {
        match self.call(kind).await? {
            v1::reply::Outcome::Error(e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Publishes without waiting for the server: the fastest way. Malformed topics are refused here;
    /// anything the server refuses later shows up in [`Agent::take_errors`].
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.publish_as(topic, payload, "").await
    }

    /// [`Agent::publish`] with a content type (e.g. `application/json`).
    pub async fn publish_as(&self, topic: &str, payload: impl Into<Bytes>, content_type: &str) -> Result<(), Error> {
        lockstep_core::topic::validate_topic(topic, usize::MAX)
            .map_err(|e| Error::InvalidArgument(e.to_string().into()))?;
        let p = v1::Publish {
            topic: topic.to_owned(),
            payload: payload.into(),
            content_type: content_type.to_owned(),
            event_time_ms: None,
        };
        self.send(0, v1::client_message::Kind::Publish(p)).await
    }

    /// Publishes a message carrying its event time (ms since the Unix epoch), without waiting:
    /// tick controllers and latency buffers place it by that time. A time outside the server's
    /// bounds is refused (`EVENT_TIME_OUT_OF_RANGE`, in [`Agent::take_errors`]) or flagged.
    pub async fn publish_at(&self, topic: &str, payload: impl Into<Bytes>, event_time_ms: u64) -> Result<(), Error> {
        lockstep_core::topic::validate_topic(topic, usize::MAX)
            .map_err(|e| Error::InvalidArgument(e.to_string().into()))?;
        self.send(0, v1::client_message::Kind::Publish(event_publish(topic, payload.into(), event_time_ms))).await
    }

    /// [`Agent::publish_at`], waiting until the server has routed the message (or refused it).
    pub async fn publish_at_confirmed(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        event_time_ms: u64,
    ) -> Result<(), Error> {
        self.call_ok(v1::client_message::Kind::Publish(event_publish(topic, payload.into(), event_time_ms))).await
    }

    /// Publishes and waits until the server has routed the message (or refused it).
    pub async fn publish_confirmed(&self, topic: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        let p = v1::Publish {
            topic: topic.to_owned(),
            payload: payload.into(),
            content_type: String::new(),
            event_time_ms: None,
        };
        self.call_ok(v1::client_message::Kind::Publish(p)).await
    }

    /// Asks the agents interested in `topic` for an answer: exactly one of them (the next in turn)
    /// gets the request, and its answer comes back. Fails with [`Error::NoResponders`] at once
    /// when no other agent can take it, [`Error::RequestTimedOut`] when the responder does not
    /// answer within `timeout` (zero: the server's default), [`Error::RequestAborted`] when it
    /// goes away first, and [`Error::RequestRefused`] when it refuses.
    pub async fn request(&self, topic: &str, payload: impl Into<Bytes>, timeout: Duration) -> Result<Response, Error> {
        self.request_as(topic, payload, "", timeout).await
    }

    /// [`Agent::request`] with a content type.
    pub async fn request_as(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        content_type: &str,
        timeout: Duration,
    ) -> Result<Response, Error> {
        lockstep_core::topic::validate_topic(topic, usize::MAX)
            .map_err(|e| Error::InvalidArgument(e.to_string().into()))?;
        let r = v1::AgentRequest {
            topic: topic.to_owned(),
            payload: payload.into(),
            content_type: content_type.to_owned(),
            timeout_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
        };
        match self.call(v1::client_message::Kind::AgentRequest(r)).await? {
            v1::reply::Outcome::AgentResponse(r) => {
                Ok(Response { payload: r.payload, content_type: r.content_type, responder: r.responder })
            }
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Applies a JSON merge patch (RFC 7386) to this agent's state; returns the new version.
    pub async fn update_state(&self, delta: &Value) -> Result<u64, Error> {
        self.update_state_json(delta.to_string()).await
    }

    pub(crate) fn history_link(&self) -> &crate::history::HistoryLink {
        &self.inner.history
    }

    pub(crate) fn task_link(&self) -> &crate::tasks::TaskLink {
        &self.inner.tasks
    }

    pub(crate) fn round_link(&self) -> &crate::rounds::RoundLink {
        &self.inner.rounds
    }

    /// Execution traces as this agent: lookups, claims and records (see [`crate::AgentTraces`]).
    pub fn traces(&self) -> crate::AgentTraces<'_> {
        crate::AgentTraces { agent: self }
    }

    /// Shared context written as this agent (see [`crate::AgentContext`]).
    pub fn context(&self) -> crate::AgentContext<'_> {
        crate::AgentContext { agent: self }
    }

    pub(crate) async fn context_write(&self, write: v1::ContextWrite) -> Result<v1::ContextWritten, Error> {
        match self.call(v1::client_message::Kind::ContextWrite(write)).await? {
            v1::reply::Outcome::ContextWritten(w) => Ok(w),
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// [`Agent::update_state`] with the patch as JSON text.
    pub async fn update_state_json(&self, delta_json: String) -> Result<u64, Error> {
        match self.call(v1::client_message::Kind::UpdateState(v1::UpdateState { delta_json })).await? {
            v1::reply::Outcome::StateVersion(v) => Ok(v.version),
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Reports that this agent could not process the delivery `seq`: it counts as a failure for the
    /// agent's circuit breaker (enough of them isolate the agent until it recovers).
    pub async fn report_delivery_error(&self, seq: u64, reason: &str) -> Result<(), Error> {
        let e = v1::DeliveryError { seq, reason: reason.to_owned() };
        self.call_ok(v1::client_message::Kind::DeliveryError(e)).await
    }

    /// Sets this agent's status (anything but `lost`).
    pub async fn set_status(&self, status: v1::AgentStatus) -> Result<(), Error> {
        self.call_ok(v1::client_message::Kind::SetStatus(v1::SetStatus { status: status as i32 })).await
    }

    /// Starts watching state. The current state of every covered agent arrives first, then changes;
    /// read them from [`Agent::state_updates`] or look them up with [`Agent::view`].
    pub async fn watch_state(&self, target: WatchTarget) -> Result<(), Error> {
        use v1::watch_state::Target;
        let target = match target {
            WatchTarget::Agent(a) => Target::AgentId(a),
            WatchTarget::Role(r) => Target::Role(r),
            WatchTarget::All => Target::All(true),
        };
        self.call_ok(v1::client_message::Kind::WatchState(v1::WatchState { target: Some(target.clone()) })).await?;
        // Remembered, to watch again if a reconnection finds the session gone.
        let mut watches = self.inner.watches.lock().expect("not poisoned");
        if !watches.contains(&target) {
            watches.push(target);
        }
        Ok(())
    }

    /// Stops a watch started with [`Agent::watch_state`].
    pub async fn unwatch_state(&self, target: WatchTarget) -> Result<(), Error> {
        use v1::unwatch_state::Target;
        let target = match target {
            WatchTarget::Agent(a) => Target::AgentId(a),
            WatchTarget::Role(r) => Target::Role(r),
            WatchTarget::All => Target::All(true),
        };
        self.call_ok(v1::client_message::Kind::UnwatchState(v1::UnwatchState { target: Some(target) })).await
    }

    /// This agent's current view of a watched agent's state: (version, state).
    pub fn view(&self, agent_id: &str) -> Option<(u64, Value)> {
        self.inner.views.lock().expect("not poisoned").get(agent_id).cloned()
    }

    /// Any agent's state in this agent's namespace, fetched from the server now.
    pub async fn get_state(&self, agent_id: &str) -> Result<(u64, Value), Error> {
        fetch_state(&mut self.inner.grpc.clone(), &self.inner.namespace, agent_id).await
    }

    /// Arrives at a sync point and waits until it is released (or fails), with the whole outcome:
    /// every arrival and payload, in order.
    pub async fn sync(
        &self,
        sync_id: &str,
        participants: Participants,
        timeout: Duration,
        payload: impl Into<Bytes>,
    ) -> Result<SyncResult, Error> {
        self.arrive(sync_id, participants, timeout, payload.into(), false, 0).await
    }

    /// A k-of-n barrier: as [`Agent::sync`] over an explicit set or a role, released as soon as
    /// `quorum` of them have arrived. The result names the others in `late`; a late participant
    /// that arrives afterwards gets the same result at once (with `position` equal to `count`).
    /// Every arrival must give the same participants and quorum.
    pub async fn sync_quorum(
        &self,
        sync_id: &str,
        participants: Participants,
        quorum: u32,
        timeout: Duration,
        payload: impl Into<Bytes>,
    ) -> Result<SyncResult, Error> {
        if quorum == 0 {
            return Err(Error::InvalidArgument("a quorum must be at least 1".into()));
        }
        self.arrive(sync_id, participants, timeout, payload.into(), false, quorum).await
    }

    /// As [`Agent::sync`], released with a summary: the count, the digest and this agent's place,
    /// without the other arrivals and payloads. The release of a point of N such waiters sends
    /// O(N) bytes instead of O(N²); use it when the payloads are not needed.
    pub async fn sync_summary(
        &self,
        sync_id: &str,
        participants: Participants,
        timeout: Duration,
        payload: impl Into<Bytes>,
    ) -> Result<SyncResult, Error> {
        self.arrive(sync_id, participants, timeout, payload.into(), true, 0).await
    }

    async fn arrive(
        &self,
        sync_id: &str,
        participants: Participants,
        timeout: Duration,
        payload: Bytes,
        summary: bool,
        quorum: u32,
    ) -> Result<SyncResult, Error> {
        use v1::sync_arrive::Participants as P;
        let participants = match participants {
            Participants::Agents(ids) => P::Agents(v1::AgentIds { ids }),
            Participants::Count(n) => P::Count(n),
            Participants::Role(r) => P::Role(r),
        };
        let arrive = v1::SyncArrive {
            sync_id: sync_id.to_owned(),
            participants: Some(participants),
            timeout_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
            payload,
            summary,
            quorum,
        };
        // A connection lost while waiting does not fail the arrival: it is sent again on the
        // reconnected session, where the server re-attaches it (or answers with the outcome).
        match self.call_with(v1::client_message::Kind::Sync(arrive), true).await? {
            v1::reply::Outcome::SyncResult(r) => {
                let arrival_order = r.arrival_order_strings();
                let late = r.late_strings();
                let position = match r.summary {
                    true => r.position,
                    false => arrival_order.iter().position(|a| a == self.id()).unwrap_or(arrival_order.len()) as u32,
                };
                Ok(SyncResult {
                    sync_id: r.sync_id,
                    arrival_order,
                    payloads: r.payloads,
                    forced: r.forced,
                    count: r.count,
                    digest: r.digest,
                    position,
                    summary: r.summary,
                    late,
                    late_count: r.late_count,
                })
            }
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Phase sync: meets the same participants at each id in turn; stops at the first failure.
    pub async fn sync_phases(
        &self,
        sync_ids: &[&str],
        participants: Participants,
        timeout: Duration,
    ) -> Result<Vec<SyncResult>, Error> {
        let mut results = Vec::with_capacity(sync_ids.len());
        for id in sync_ids {
            results.push(self.sync(id, participants.clone(), timeout, Bytes::new()).await?);
        }
        Ok(results)
    }

    /// Deregisters and ends the session.
    pub async fn close(self) -> Result<(), Error> {
        self.send(0, v1::client_message::Kind::Deregister(v1::Deregister {})).await?;
        let mut ended = self.inner.ended.clone();
        let _ = ended.wait_for(Option::is_some).await;
        Ok(())
    }
}

/// A reply of another kind than the request asked for.
pub(crate) fn unexpected(outcome: v1::reply::Outcome) -> Error {
    Error::Other { code: tonic::Code::Internal, message: format!("unexpected reply {outcome:?}").into() }
}

/// When a heartbeat last went out on a client connection that several sessions share: the server
/// renews every session of a connection on one heartbeat, so they take turns (one heartbeat per
/// connection and interval, whichever session's timer comes first).
#[derive(Debug)]
pub(crate) struct ConnectionBeat {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last heartbeat sent (`u64::MAX`: none yet).
    last_ms: AtomicU64,
}

impl ConnectionBeat {
    pub(crate) fn new() -> Self {
        ConnectionBeat { start: tokio::time::Instant::now(), last_ms: AtomicU64::new(u64::MAX) }
    }

    /// Claims the next heartbeat if none went out in the last three quarters of `interval`.
    fn claim(&self, interval: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let gap = (interval.as_millis() as u64) * 3 / 4;
        self.last_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                (last == u64::MAX || now.saturating_sub(last) >= gap).then_some(now)
            })
            .is_ok()
    }
}

/// A session's part in its connection's heartbeat.
struct SharedBeat {
    beat: Arc<ConnectionBeat>,
    /// Cleared when the session breaks: it resumes on a connection of its own and heartbeats for
    /// itself from then on.
    still_shared: Arc<AtomicBool>,
}

async fn heartbeat(outbound: mpsc::WeakSender<v1::ClientMessage>, interval: Duration, shared: Option<SharedBeat>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(tx) = outbound.upgrade() else { return };
        if let Some(s) = &shared {
            if s.still_shared.load(Ordering::Relaxed) && !s.beat.claim(interval) {
                continue;
            }
        }
        if tx.send(msg(0, v1::client_message::Kind::Heartbeat(v1::Heartbeat {}))).await.is_err() {
            return;
        }
    }
}

struct Reader {
    grpc: LockstepClient<Channel>,
    /// How the session reconnects: as it first connected.
    transport: Transport,
    namespace: String,
    pending: Pending,
    resend: Resend,
    views: Views,
    deliveries: mpsc::Sender<Vec<Delivery>>,
    state_updates: mpsc::Sender<StateUpdate>,
    outbound: mpsc::WeakSender<v1::ClientMessage>,
    async_errors: Arc<Mutex<Vec<Error>>>,
    commands: mpsc::Sender<IncomingCommand>,
    commands_taken: Arc<AtomicBool>,
    notices: mpsc::Sender<v1::Control>,
    paused: Arc<AtomicBool>,
    requests: mpsc::Sender<IncomingRequest>,
    requests_taken: Arc<AtomicBool>,
    /// The agent, for the requests handed to the application to answer through.
    agent: Arc<OnceLock<Weak<Inner>>>,
    limits: SessionLimits,
    missed: Arc<AtomicU64>,
    /// An acknowledgement waiting for [`ACK_EVERY`] to pass since the last one sent.
    held_ack: Option<u64>,
    /// Deliveries the held acknowledgement covers.
    held_count: u64,
    last_ack: tokio::time::Instant,
    reconnect: Option<Reconnect>,
    /// Cleared when the session breaks (see [`SharedBeat`]).
    left_shared: Option<Arc<AtomicBool>>,
    tasks: Arc<crate::tasks::TaskLink>,
    rounds: Arc<crate::rounds::RoundLink>,
    history: Arc<crate::history::HistoryLink>,
}

/// What the reader needs to reconnect a broken session by itself.
struct Reconnect {
    /// The registration, with the current resume token.
    register: v1::Register,
    resume_token: Arc<Mutex<String>>,
    watches: Watches,
    /// Tells the pump that its connection broke (`None`) and hands it each new one.
    new_conn: mpsc::UnboundedSender<Option<mpsc::Sender<v1::ClientMessage>>>,
    limit: Duration,
}

type Watches = Arc<Mutex<Vec<v1::watch_state::Target>>>;

/// Requests in flight to send again after a reconnection, by id.
type Resend = Arc<Mutex<HashMap<u64, v1::ClientMessage>>>;

/// How an agent's session reaches the server: a gRPC stream on the agent's channel, a lean
/// connection of its own, or a lean connection shared with the client's other lean agents (see
/// `crate::lean`).
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    Grpc,
    Lean(crate::lean::Dialer),
    LeanShared(Arc<crate::lean::Mux>),
}

/// Registers on a new session stream: the stream, the server's answer, and where to send.
async fn open_session(
    grpc: &mut LockstepClient<Channel>,
    transport: &Transport,
    register: &v1::Register,
) -> Result<(tonic::Streaming<v1::ServerMessage>, v1::Registered, mpsc::Sender<v1::ClientMessage>), Error> {
    // The registration is queued before the stream opens: a server refusing the session's token
    // answers once its first message has arrived (see the server's `auth`).
    let queue = |tx: mpsc::Sender<v1::ClientMessage>| async move {
        tx.send(msg(0, v1::client_message::Kind::Register(register.clone())))
            .await
            .map_err(|_| Error::SessionEnded("could not queue the registration".into()))
            .map(|()| tx)
    };
    let (mut inbound, conn_tx) = match transport {
        Transport::Grpc => {
            let (conn_tx, conn_rx) = mpsc::channel(OUTBOUND_BUFFER);
            let conn_tx = queue(conn_tx).await?;
            (grpc.session(tokio_stream::wrappers::ReceiverStream::new(conn_rx)).await?.into_inner(), conn_tx)
        }
        Transport::Lean(dialer) => {
            let (inbound, conn_tx) = dialer.open().await?;
            (inbound, queue(conn_tx).await?)
        }
        Transport::LeanShared(mux) => {
            let (inbound, conn_tx) = mux.open().await?;
            (inbound, queue(conn_tx).await?)
        }
    };
    match inbound.message().await? {
        Some(v1::ServerMessage { kind: Some(v1::server_message::Kind::Registered(r)) }) => Ok((inbound, r, conn_tx)),
        Some(other) => Err(Error::Other {
            code: tonic::Code::Internal,
            message: format!("expected `registered`, got {other:?}").into(),
        }),
        None => Err(Error::SessionEnded("the server closed the session during registration".into())),
    }
}

/// Forwards what the application sends to the current connection, and to the next one after a
/// reconnection. When the application drops every handle, it says goodbye (`deregister`) unless
/// the application did: a stream that merely ends is taken by the server for a broken one, and
/// the agent would stay registered for its lease.
async fn pump(
    mut app: mpsc::Receiver<v1::ClientMessage>,
    first: mpsc::Sender<v1::ClientMessage>,
    mut next: mpsc::UnboundedReceiver<Option<mpsc::Sender<v1::ClientMessage>>>,
) {
    let mut conn = Some(first);
    // Without reconnection there is never a next connection: the first one serves to the end.
    let mut more = true;
    let mut said_goodbye = false;
    loop {
        tokio::select! {
            biased;
            // `None` inside: the connection broke. What the application sends from then on waits
            // for the next connection rather than going into a stream that is already dead
            // (where it would be lost without an answer or an error).
            c = next.recv(), if more => match c {
                Some(c) => conn = c,
                None => more = false,
            },
            m = app.recv() => {
                let Some(m) = m else {
                    if let (Some(c), false) = (&conn, said_goodbye) {
                        let _ = c.send(msg(0, v1::client_message::Kind::Deregister(v1::Deregister {}))).await;
                    }
                    return;
                };
                said_goodbye |= matches!(m.kind, Some(v1::client_message::Kind::Deregister(_)));
                loop {
                    if let Some(c) = &conn {
                        if c.send(m.clone()).await.is_ok() {
                            break;
                        }
                    }
                    // No connection, or it is gone: wait for the next.
                    match next.recv().await {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
            }
        }
    }
}

/// How a session ends when the server closes it normally (after a deregistration).
const CLOSED_BY_SERVER: &str = "the server closed the session";

/// Fire-and-forget errors kept for [`Agent::take_errors`].
const MAX_ASYNC_ERRORS: usize = 256;

impl Reader {
    /// Serves sessions until one ends for good; reconnects in between when allowed.
    async fn run(mut self, mut inbound: tonic::Streaming<v1::ServerMessage>) -> Error {
        loop {
            // `None`: the server ended the stream normally (after a deregistration): nothing to resume.
            let ended = self.serve(inbound).await;
            // Sequence numbers are the ended session's: a new one acknowledges its own.
            self.held_ack = None;
            self.held_count = 0;
            if let Some(shared) = &self.left_shared {
                shared.store(false, Ordering::Relaxed);
            }
            if let Some(r) = &self.reconnect {
                // First stop sending into the dead stream, then fail what was sent into it.
                let _ = r.new_conn.send(None);
            }
            let worth_it = ended.as_ref().is_some_and(|e| recovery(e.reason()) == Recovery::Resume);
            let reason = ended.unwrap_or_else(|| Error::SessionEnded(CLOSED_BY_SERVER.into()));
            let reconnecting = self.reconnect.is_some() && worth_it && self.outbound.upgrade().is_some();
            self.fail_pending(&reason, reconnecting);
            if !reconnecting {
                return reason;
            }
            match self.reconnect(&reason).await {
                Ok(next) => {
                    inbound = next;
                    let again: Vec<v1::ClientMessage> =
                        self.resend.lock().expect("not poisoned").values().cloned().collect();
                    if let Some(tx) = self.outbound.upgrade() {
                        for m in again {
                            let _ = tx.send(m).await;
                        }
                    }
                }
                Err(e) => {
                    self.fail_pending(&e, false);
                    return e;
                }
            }
        }
    }

    /// Fails the requests in flight on a lost connection: they may or may not have been carried
    /// out. With `keep_resendable`, those that will be sent again stay pending.
    fn fail_pending(&self, reason: &Error, keep_resendable: bool) {
        let resend = self.resend.lock().expect("not poisoned");
        let mut pending = self.pending.lock().expect("not poisoned");
        let failed: Vec<u64> =
            pending.keys().copied().filter(|id| !(keep_resendable && resend.contains_key(id))).collect();
        // A transport failure is reported as what it means to the caller: the session broke.
        let reason = match reason {
            Error::Other { message, .. } => Error::SessionEnded(
                format!(
                    "the connection broke while the request was in flight (it may or may not have been carried out): {message}"
                )
                .into(),
            ),
            other => other.clone(),
        };
        for id in failed {
            if let Some(tx) = pending.remove(&id) {
                let _ = tx.send(Err(reason.clone()));
            }
        }
    }

    /// Opens a new session with the resume token, with exponential backoff and jitter, for at most
    /// the configured time.
    async fn reconnect(&mut self, reason: &Error) -> Result<tonic::Streaming<v1::ServerMessage>, Error> {
        let Some(r) = self.reconnect.as_mut() else { return Err(reason.clone()) };
        let deadline = tokio::time::Instant::now() + r.limit;
        let mut delay = RECONNECT_FIRST_DELAY;
        loop {
            let jitter = rand::random_range(0.75..1.25);
            tokio::time::sleep(delay.mul_f64(jitter)).await;
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
            // On the session's connection, which connects again by itself when it is next used:
            // the agent's queries use it too, so that an agent holds one connection however often
            // it reconnects (a new one per reconnection doubled the server's connections after a
            // restart, once the queries had brought the first back).
            match open_session(&mut self.grpc, &self.transport, &r.register).await {
                Ok((inbound, registered, conn)) => {
                    r.register.resume_token = registered.resume_token.clone();
                    // A restarted server may run with other limits.
                    self.limits.set(registered.limits);
                    report_missed(&self.missed, registered.missed_messages);
                    *r.resume_token.lock().expect("not poisoned") = registered.resume_token;
                    let _ = r.new_conn.send(Some(conn));
                    if !registered.resumed {
                        // A new session: the server no longer knows this agent's watches.
                        let watches = r.watches.lock().expect("not poisoned").clone();
                        if let Some(tx) = self.outbound.upgrade() {
                            for target in watches {
                                let w = v1::WatchState { target: Some(target) };
                                let _ = tx.send(msg(0, v1::client_message::Kind::WatchState(w))).await;
                            }
                            // Likewise its subscriptions (live only).
                            for s in self.history.resubscribe() {
                                let _ = tx.send(msg(0, v1::client_message::Kind::Subscribe(s))).await;
                            }
                        }
                    }
                    // The work asked for is asked again: a restarted server does not keep it.
                    if let (Some(work), Some(tx)) = (self.tasks.work(), self.outbound.upgrade()) {
                        let _ = tx.send(msg(0, v1::client_message::Kind::TaskWork(work))).await;
                    }
                    tracing::info!(resumed = registered.resumed, "lockstep session reconnected");
                    return Ok(inbound);
                }
                // The attempt's failure is judged by the same policy: a refusal (someone else holds
                // the id, the registration is invalid...) stops; an unreachable server is retried.
                Err(e) if recovery(e.reason()) == Recovery::GiveUp => return Err(e),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::SessionEnded(
                        format!("{reason}; could not reconnect within {:?}: {e}", r.limit).into(),
                    ));
                }
                Err(e) => tracing::debug!(error = %e, "lockstep reconnection attempt failed"),
            }
            if self.outbound.upgrade().is_none() {
                return Err(reason.clone());
            }
        }
    }

    /// Reads one session until it ends; returns why (`None` when the server ended it normally).
    async fn serve(&mut self, mut inbound: tonic::Streaming<v1::ServerMessage>) -> Option<Error> {
        loop {
            let next = if self.held_ack.is_some() {
                tokio::select! {
                    biased;
                    next = inbound.message() => next,
                    () = tokio::time::sleep_until(self.last_ack + ACK_EVERY) => {
                        self.send_held_ack().await;
                        continue;
                    }
                }
            } else {
                inbound.message().await
            };
            match next {
                Ok(Some(m)) => match m.kind {
                    Some(v1::server_message::Kind::Reply(r)) => self.reply(r),
                    Some(v1::server_message::Kind::Deliveries(d)) => self.deliver(d).await,
                    Some(v1::server_message::Kind::StateChanges(c)) => self.state(c).await,
                    Some(v1::server_message::Kind::Control(c)) => self.control(c),
                    Some(v1::server_message::Kind::Command(c)) => self.command(c).await,
                    Some(v1::server_message::Kind::IncomingRequest(r)) => self.incoming_request(r).await,
                    Some(v1::server_message::Kind::TaskAssigned(a)) => self.tasks.assigned(a),
                    Some(v1::server_message::Kind::TaskEvent(e)) => self.tasks.event(e),
                    Some(v1::server_message::Kind::RoundInput(r)) => self.rounds.input(r),
                    Some(v1::server_message::Kind::HistoryGap(g)) => self.history.gap(g),
                    Some(v1::server_message::Kind::Registered(_)) | None => {}
                },
                Ok(None) => return None,
                Err(status) => return Some(Error::from(status)),
            }
        }
    }

    fn reply(&mut self, r: v1::Reply) {
        let Some(outcome) = r.outcome else { return };
        if r.request_id == 0 {
            if let v1::reply::Outcome::Error(e) = outcome {
                let e = Error::from(e);
                tracing::warn!(error = %e, "lockstep refused a fire-and-forget request");
                let mut errors = self.async_errors.lock().expect("not poisoned");
                if errors.len() >= MAX_ASYNC_ERRORS {
                    errors.remove(0);
                }
                errors.push(e);
            }
            return;
        }
        if let Some(tx) = self.pending.lock().expect("not poisoned").remove(&r.request_id) {
            let _ = tx.send(Ok(outcome));
        }
    }

    async fn deliver(&mut self, batch: lockstep_proto::wire::Deliveries) {
        use prost::Message as _;
        let Some(last) =
            (batch.first_seq + batch.items.len() as u64).checked_sub(1).filter(|_| !batch.items.is_empty())
        else {
            return;
        };
        let n = batch.items.len() as u64;
        let mut out = Vec::with_capacity(batch.items.len());
        for (i, raw) in batch.items.into_iter().enumerate() {
            let d = match v1::Delivery::decode(raw) {
                Ok(d) => d,
                Err(e) => {
                    // Counted as missed by the next good item: nothing disappears unannounced.
                    tracing::warn!(error = %e, "undecodable delivery from the server");
                    continue;
                }
            };
            let seq = batch.first_seq + i as u64;
            let missed_before = match out.last() {
                None => seq - batch.first_seq + batch.missed_before,
                Some(prev @ Delivery { .. }) => seq - prev.seq - 1,
            };
            out.push(Delivery {
                seq,
                topic: d.topic,
                payload: d.payload,
                content_type: d.content_type,
                publisher: d.publisher,
                missed_before,
                topic_seq: d.topic_seq,
                time_ms: d.time_ms,
                intake: (d.intake_seq != 0).then_some(IntakeEnvelope {
                    seq: d.intake_seq,
                    categorised_from: d.categorised_from,
                    time_ms: d.intake_time_ms,
                    tick_id: d.tick_id,
                    rule: d.intake_rule,
                }),
            });
        }
        // A dropped receiver means the application does not read deliveries: discard.
        let _ = self.deliveries.send(out).await;
        // Acknowledged once handed to the application: an agent that stops reading stops
        // acknowledging, which is how its breaker learns it is stuck.
        self.held_ack = Some(last);
        self.held_count += n;
        if self.held_count >= ACK_AT_ONCE || self.last_ack.elapsed() >= ACK_EVERY {
            self.send_held_ack().await;
        }
    }

    /// Sends the held acknowledgement, if any.
    async fn send_held_ack(&mut self) {
        let Some(up_to_seq) = self.held_ack.take() else { return };
        self.held_count = 0;
        self.last_ack = tokio::time::Instant::now();
        if let Some(tx) = self.outbound.upgrade() {
            let _ = tx.send(msg(0, v1::client_message::Kind::Ack(v1::Ack { up_to_seq }))).await;
        }
    }

    fn control(&mut self, c: v1::Control) {
        use v1::control::Kind;
        match Kind::try_from(c.kind) {
            Ok(Kind::Paused | Kind::EmergencyStop) => self.paused.store(true, Ordering::SeqCst),
            Ok(Kind::Resumed | Kind::ResumedAll) => self.paused.store(false, Ordering::SeqCst),
            _ => {}
        }
        // Notices nobody reads are dropped; `is_paused` stays current either way.
        let _ = self.notices.try_send(c);
    }

    async fn command(&mut self, c: v1::Command) {
        let id = c.command_id;
        let refusal = if self.commands_taken.load(Ordering::SeqCst) {
            let incoming = IncomingCommand {
                id,
                command: c.command,
                params: serde_json::from_str(&c.params_json).unwrap_or(Value::Null),
                deadline_ms: c.deadline_ms,
                outbound: self.outbound.clone(),
                limits: self.limits.clone(),
            };
            match self.commands.try_send(incoming) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some("this agent has too many commands waiting"),
                Err(mpsc::error::TrySendError::Closed(_)) => Some("this agent stopped handling commands"),
            }
        } else {
            Some("this agent does not handle commands (it never asked for them)")
        };
        if let Some(why) = refusal {
            let _ = command_reply(&self.outbound, &self.limits, id, Err(why.to_owned())).await;
        }
    }

    async fn incoming_request(&mut self, r: v1::IncomingRequest) {
        let token = r.token;
        let refusal = if self.requests_taken.load(Ordering::SeqCst) {
            let incoming = IncomingRequest {
                token,
                topic: r.topic,
                payload: r.payload,
                content_type: r.content_type,
                requester: r.requester,
                deadline_ms: r.deadline_ms,
                agent: self.agent.get().cloned().unwrap_or_default(),
            };
            match self.requests.try_send(incoming) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(_)) => Some("this agent has too many requests waiting"),
                Err(mpsc::error::TrySendError::Closed(_)) => Some("this agent stopped answering requests"),
            }
        } else {
            Some("this agent does not answer requests (it never asked for them)")
        };
        if let (Some(why), Some(tx)) = (refusal, self.outbound.upgrade()) {
            let r = v1::Respond { token, error: why.to_owned(), ..Default::default() };
            let _ = tx.send(msg(0, v1::client_message::Kind::Respond(r))).await;
        }
    }

    async fn state(&mut self, changes: v1::StateChanges) {
        for c in changes.items {
            let update = if c.removed {
                self.views.lock().expect("not poisoned").remove(&c.agent_id);
                StateUpdate { agent_id: c.agent_id, version: c.version, state: Value::Null, removed: true }
            } else {
                match self.apply(&c).await {
                    Some((version, state)) => StateUpdate { agent_id: c.agent_id, version, state, removed: false },
                    None => continue,
                }
            };
            // Skipped notifications lose nothing: the view stays current and the next update
            // carries the whole state.
            let _ = self.state_updates.try_send(update);
        }
    }

    /// Applies one change to the view, resyncing from a snapshot when a version is missing.
    async fn apply(&mut self, c: &v1::StateChange) -> Option<(u64, Value)> {
        let delta: Value = match serde_json::from_str(&c.delta_json) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(agent = %c.agent_id, error = %e, "invalid state delta from server; resyncing");
                Value::Null
            }
        };
        let known = self.views.lock().expect("not poisoned").get(&c.agent_id).map(|(v, _)| *v);
        let next = if c.base_version == 0 && delta.is_object() {
            let mut fresh = Value::Object(Default::default());
            lockstep_core::state::apply(&mut fresh, &delta);
            Some((c.version, fresh))
        } else if known == Some(c.base_version) && delta.is_object() {
            let mut views = self.views.lock().expect("not poisoned");
            let (v, state) = views.get_mut(&c.agent_id).expect("known");
            lockstep_core::state::apply(state, &delta);
            *v = c.version;
            return Some((c.version, state.clone()));
        } else {
            // A gap (or an unreadable delta): fetch the whole state and go on from there.
            match fetch_state(&mut self.grpc, &self.namespace, &c.agent_id).await {
                Ok((version, state)) if known.is_none_or(|k| version > k) => Some((version, state)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(agent = %c.agent_id, error = %e, "state resync failed");
                    None
                }
            }
        };
        let (version, state) = next?;
        self.views.lock().expect("not poisoned").insert(c.agent_id.clone(), (version, state.clone()));
        Some((version, state))
    }
}

/// A publish with an event time (JSON content, as tick controllers and buffers read it).
fn event_publish(topic: &str, payload: Bytes, event_time_ms: u64) -> v1::Publish {
    v1::Publish {
        topic: topic.to_owned(),
        payload,
        content_type: "application/json".into(),
        event_time_ms: Some(event_time_ms),
    }
}
