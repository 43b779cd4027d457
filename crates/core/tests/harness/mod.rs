//! A test harness that plays the server shell around a [`Engine`] on a manual clock.
//!
//! It owns the engine and the time, opens connections, and after every step does what the real
//! driver does: ends the turn with [`Engine::ready`], keeps its durable changes (as a store would),
//! and through the committed turn drains the outputs and, for every `Ready(conn)`, pulls frames
//! until there are none, recording them per connection. A connection can be *paused* to play a
//! slow client: its `Ready` is then ignored and nothing is pulled until it is drained explicitly.
//! Operators act through [`Input::Admin`], as the server's admin service does.
//!
//! Requests get fresh request ids, so replies can be found by id afterwards.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::durable::Change;
use lockstep_core::state;
use lockstep_core::{
    AdminAction, AdminOutcome, AgentQuery, AgentStatus, AgentView, Config, ConnId, CoreError, Delivery, Engine, Frame,
    Input, Output, Participants, RegisterRequest, Registered, RegistryEvent, Reply, Request, Sendable, StateChange,
    Time,
};
use serde_json::{json, Value};

/// Most deliveries or state changes pulled per frame (small, so batching is exercised).
pub const MAX_ITEMS: usize = 16;

/// Everything the shell saw on one connection.
#[derive(Debug, Default)]
pub struct ConnLog {
    /// Every frame pulled for the connection, in order.
    pub frames: Vec<Frame>,
    /// `Some(reason)` once the engine said `Close(conn, reason)`.
    pub closed: Option<Option<CoreError>>,
}

pub struct Harness {
    pub engine: Engine,
    /// The manual clock, in milliseconds.
    pub now: Time,
    next_conn: u64,
    next_request: u64,
    logs: BTreeMap<ConnId, ConnLog>,
    paused: BTreeSet<ConnId>,
    /// Operators' commands that ended: (origin, command id, outcome).
    pub commands_done: Vec<(u64, u64, lockstep_core::command::CommandOutcome)>,
    /// Answers to other operators' actions not yet looked at: (origin, result).
    admin_done: Vec<(u64, Result<AdminOutcome, CoreError>)>,
    /// What the engine told the exchange about collectives, in order.
    pub collective_events: Vec<lockstep_core::collective::CollectiveEvent>,
    /// What the engine told the shell's group store, in order.
    pub group_outputs: Vec<lockstep_core::GroupOutput>,
    /// Answers to context writes made outside a session, by origin.
    pub context_done: Vec<(u64, Result<lockstep_core::context::Written, CoreError>)>,
    /// Operators' task retries answered, by origin.
    /// Answers to trace calls, in order.
    pub trace_events: Vec<lockstep_core::TraceEvent>,
    /// Answers to round calls, by origin.
    pub rounds_done: Vec<(u64, Result<lockstep_core::io::RoundDone, CoreError>)>,
    /// Answers to sync monitor calls, by origin.
    pub systems_done: Vec<(u64, Result<lockstep_core::io::SystemsDone, CoreError>)>,
    next_origin: u64,
    /// The durable changes of every turn so far (what a store would have committed), until taken.
    changes: Vec<Change>,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        config.validate().expect("test config is valid");
        Harness {
            engine: Engine::new(config),
            now: 0,
            next_conn: 1,
            next_request: 1,
            logs: BTreeMap::new(),
            commands_done: Vec::new(),
            admin_done: Vec::new(),
            collective_events: Vec::new(),
            group_outputs: Vec::new(),
            context_done: Vec::new(),
            trace_events: Vec::new(),
            rounds_done: Vec::new(),
            systems_done: Vec::new(),
            next_origin: 1_000,
            changes: Vec::new(),
            paused: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    // ---------------------------------------------------------------------------------------------
    // Connections and sessions

    /// A connection id never used before.
    pub fn open_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.logs.insert(conn, ConnLog::default());
        conn
    }

    /// Sends `request` as the first message of a new connection; the outcome is in the log.
    pub fn try_register(&mut self, request: RegisterRequest) -> ConnId {
        let conn = self.open_conn();
        self.register_on(conn, request);
        conn
    }

    /// Sends a registration on `conn`. The shell's fresh token is `token-<conn>`.
    pub fn register_on(&mut self, conn: ConnId, request: RegisterRequest) {
        self.register_on_connection(conn, request, 0);
    }

    /// Sends a registration on session `conn`, which runs on client connection `connection`.
    pub fn register_on_connection(&mut self, conn: ConnId, request: RegisterRequest, connection: u64) {
        let new_token = format!("token-{}", conn.0);
        self.engine.handle(self.now, Input::Register { conn, request, new_token, connection });
        self.pump();
    }

    /// Registers an agent in the default namespace, asserting it is accepted.
    pub fn join(&mut self, id: &str, role: &str, interests: &[&str]) -> ConnId {
        self.join_with(agent(id, role, interests))
    }

    /// Registers `request`, asserting it is accepted as a new agent.
    pub fn join_with(&mut self, request: RegisterRequest) -> ConnId {
        let id = request.agent_id.clone();
        let conn = self.try_register(request);
        let registered = self.registered(conn);
        assert_eq!(registered.agent_id, id);
        assert!(!registered.resumed, "{id} should be a new agent");
        conn
    }

    /// The `Registered` frame received on `conn` (panics if there is none).
    pub fn registered(&self, conn: ConnId) -> Registered {
        self.frames(conn)
            .iter()
            .find_map(|f| match f {
                Frame::Registered(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{conn:?} was not registered: {:?}", self.log(conn)))
    }

    /// The resume token the engine gave the agent on `conn`.
    pub fn token(&self, conn: ConnId) -> String {
        self.registered(conn).resume_token
    }

    /// The stream ended at the shell without a goodbye (reset, broken or half-closed).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.engine.handle(self.now, Input::Disconnected { conn });
        self.pump();
    }

    /// Opens a registry watch stream on a new connection.
    pub fn watch_registry(&mut self, namespace: &str) -> ConnId {
        let conn = self.open_conn();
        self.engine.handle(self.now, Input::WatchRegistry { conn, namespace: namespace.into() });
        self.pump();
        conn
    }

    // ---------------------------------------------------------------------------------------------
    // Requests

    /// Sends `request` with a fresh request id, which it returns.
    pub fn send(&mut self, conn: ConnId, request: Request) -> u64 {
        let request_id = self.next_request;
        self.next_request += 1;
        self.send_with_id(conn, request_id, request);
        request_id
    }

    pub fn send_with_id(&mut self, conn: ConnId, request_id: u64, request: Request) {
        self.engine.handle(self.now, Input::Request { conn, request_id, request });
        self.pump();
    }

    /// Sends `request` and returns its (single) reply, which must have arrived.
    pub fn call(&mut self, conn: ConnId, request: Request) -> Reply {
        let id = self.send(conn, request);
        self.reply(conn, id).unwrap_or_else(|| panic!("no reply to request {id} on {conn:?}: {:?}", self.log(conn)))
    }

    /// Sends `request`, expecting an error reply; returns the error.
    pub fn call_err(&mut self, conn: ConnId, request: Request) -> CoreError {
        match self.call(conn, request) {
            Reply::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Sends `request`, expecting `Reply::Ok`.
    pub fn call_ok(&mut self, conn: ConnId, request: Request) {
        assert_eq!(self.call(conn, request), Reply::Ok);
    }

    /// A heartbeat wanting no reply.
    pub fn heartbeat(&mut self, conn: ConnId) {
        self.send_with_id(conn, 0, Request::Heartbeat);
    }

    /// Arrives at a sync point; returns the request id the release will answer.
    pub fn arrive(
        &mut self,
        conn: ConnId,
        sync_id: &str,
        participants: Participants,
        timeout_ms: u64,
        payload: &str,
    ) -> u64 {
        self.arrive_quorum(conn, sync_id, participants, None, timeout_ms, payload)
    }

    /// Arrives at a sync point, k of n with `quorum`; returns the request id the release will answer.
    pub fn arrive_quorum(
        &mut self,
        conn: ConnId,
        sync_id: &str,
        participants: Participants,
        quorum: Option<u32>,
        timeout_ms: u64,
        payload: &str,
    ) -> u64 {
        self.send(
            conn,
            Request::Sync {
                sync_id: sync_id.into(),
                participants,
                timeout_ms,
                payload: Bytes::from(payload.to_owned()),
                summary: false,
                quorum,
            },
        )
    }

    /// Every reply received on `conn` for `request_id`.
    pub fn replies(&self, conn: ConnId, request_id: u64) -> Vec<Reply> {
        self.frames(conn)
            .iter()
            .filter_map(|f| match f {
                Frame::Reply { request_id: id, reply } if *id == request_id => Some(reply.clone()),
                _ => None,
            })
            .collect()
    }

    /// The reply for `request_id` on `conn`, if one arrived (panics if several did).
    pub fn reply(&self, conn: ConnId, request_id: u64) -> Option<Reply> {
        let mut replies = self.replies(conn, request_id);
        assert!(
            replies.len() <= 1,
            "request {request_id} on {conn:?} was answered {} times: {replies:?}",
            replies.len()
        );
        replies.pop()
    }

    // ---------------------------------------------------------------------------------------------
    // The shell's loop

    /// Ends the turn like the server driver does: keeps its changes, then drains its outputs.
    pub fn pump(&mut self) {
        let ready = self.engine.ready();
        self.changes.extend(ready.changes().iter().cloned());
        let mut out = ready.committed();
        while let Some(output) = out.poll_output() {
            match output {
                Output::Ready(conn) => {
                    if !self.paused.contains(&conn) {
                        pull(&mut out, &mut self.logs, conn);
                    }
                }
                Output::AdminDone { origin, result: Ok(AdminOutcome::Command { command_id, outcome }) } => {
                    self.commands_done.push((origin, command_id, outcome));
                }
                Output::AdminDone { origin, result } => self.admin_done.push((origin, result)),
                Output::Collective(event) => self.collective_events.push(event),
                Output::Group(out) => self.group_outputs.push(out),
                Output::ContextDone { origin, result } => self.context_done.push((origin, result)),
                Output::Trace(event) => self.trace_events.push(event),
                Output::RoundDone { origin, result } => self.rounds_done.push((origin, result)),
                Output::SystemsDone { origin, result } => self.systems_done.push((origin, result)),
                Output::Close(conn, reason) => {
                    let log = self.logs.entry(conn).or_default();
                    assert!(log.closed.is_none(), "{conn:?} closed twice: {:?} then {reason:?}", log.closed);
                    log.closed = Some(reason);
                }
            }
        }
    }

    /// Pulls every pending frame of `conn` into its log.
    pub fn drain(&mut self, conn: ConnId) {
        let ready = self.engine.ready();
        self.changes.extend(ready.changes().iter().cloned());
        pull(&mut ready.committed(), &mut self.logs, conn);
    }

    /// The durable changes committed since the last call (see [`Engine::track_changes`]).
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.pump();
        std::mem::take(&mut self.changes)
    }

    // ---------------------------------------------------------------------------------------------
    // Operators

    /// An operator ("ops") acts with a fresh origin; returns the answer if it came at once (a
    /// command sent answers later, in [`Harness::commands_done`]).
    pub fn admin(&mut self, action: AdminAction) -> Option<Result<AdminOutcome, CoreError>> {
        let origin = self.next_origin;
        self.next_origin += 1;
        self.admin_as(origin, action)
    }

    /// A sync monitor call by `actor`; its answer.
    pub fn systems(
        &mut self,
        actor: &str,
        call: lockstep_core::io::SystemsCall,
    ) -> Result<lockstep_core::io::SystemsDone, CoreError> {
        let origin = self.next_origin;
        self.next_origin += 1;
        self.engine.handle(self.now, Input::Systems { origin, actor: actor.into(), call });
        self.pump();
        let at =
            self.systems_done.iter().position(|(o, _)| *o == origin).expect("a sync monitor call is answered at once");
        self.systems_done.remove(at).1
    }

    /// An operator acts with `origin`; returns the answer if it came at once.
    pub fn admin_as(&mut self, origin: u64, action: AdminAction) -> Option<Result<AdminOutcome, CoreError>> {
        self.engine.handle(self.now, Input::Admin { origin, actor: "ops".into(), action });
        self.pump();
        let at = self.admin_done.iter().position(|(o, _)| *o == origin)?;
        Some(self.admin_done.remove(at).1)
    }

    /// An operator's action that must succeed at once; what it did.
    pub fn admin_ok(&mut self, action: AdminAction) -> AdminOutcome {
        let described = format!("{action:?}");
        match self.admin(action) {
            Some(Ok(outcome)) => outcome,
            other => panic!("{described} should succeed at once, got {other:?}"),
        }
    }

    /// An operator's action that must fail at once; the error.
    pub fn admin_err(&mut self, action: AdminAction) -> CoreError {
        let described = format!("{action:?}");
        match self.admin(action) {
            Some(Err(e)) => e,
            other => panic!("{described} should fail at once, got {other:?}"),
        }
    }

    /// An operator's action that must succeed with words (pause, resume, restart, stop); the words.
    pub fn admin_done(&mut self, action: AdminAction) -> String {
        match self.admin_ok(action) {
            AdminOutcome::Done(words) => words,
            other => panic!("expected words, got {other:?}"),
        }
    }

    /// Sends a command to an agent of the default namespace as `origin`: its id (from the frame the
    /// agent got), or the refusal.
    pub fn send_command(
        &mut self,
        origin: u64,
        agent: &str,
        command: &str,
        params_json: &str,
        timeout_ms: u64,
    ) -> Result<u64, CoreError> {
        let action = AdminAction::SendCommand {
            namespace: String::new(),
            agent_id: agent.into(),
            command: command.into(),
            params_json: params_json.into(),
            timeout_ms,
        };
        if let Some(answer) = self.admin_as(origin, action) {
            return Err(answer.expect_err("a command sent is answered when the agent answers"));
        }
        let ids = self.logs.values().flat_map(|l| &l.frames).filter_map(|f| match f {
            Frame::Command { command_id, .. } => Some(*command_id),
            _ => None,
        });
        Ok(ids.max().expect("the command reached its agent"))
    }

    /// From now on `conn` is a slow client: nothing is pulled for it until [`Harness::unpause`].
    pub fn pause(&mut self, conn: ConnId) {
        self.paused.insert(conn);
    }

    /// `conn` reads again: everything pending is pulled now.
    pub fn unpause(&mut self, conn: ConnId) {
        self.paused.remove(&conn);
        self.drain(conn);
        self.pump();
    }

    // ---------------------------------------------------------------------------------------------
    // Time

    /// Moves the clock to `t`, firing every timer due on the way at its own deadline.
    pub fn advance_to(&mut self, t: Time) {
        while let Some(deadline) = self.engine.next_deadline() {
            if deadline > t {
                break;
            }
            self.now = self.now.max(deadline);
            self.engine.handle_timeout(self.now);
            self.pump();
        }
        self.now = self.now.max(t);
    }

    /// Moves the clock to `t` while the agents on `conns` heartbeat every heartbeat interval.
    pub fn advance_heartbeating(&mut self, t: Time, conns: &[ConnId]) {
        let step = self.config().heartbeat_interval_ms;
        while self.now + step <= t {
            let next = self.now + step;
            self.advance_to(next);
            for &conn in conns {
                self.heartbeat(conn);
            }
        }
        self.advance_to(t);
    }

    // ---------------------------------------------------------------------------------------------
    // What the connections received

    pub fn log(&self, conn: ConnId) -> &ConnLog {
        self.logs.get(&conn).unwrap_or_else(|| panic!("unknown {conn:?}"))
    }

    pub fn frames(&self, conn: ConnId) -> &[Frame] {
        &self.log(conn).frames
    }

    /// Removes and returns what `conn` received so far.
    pub fn take_frames(&mut self, conn: ConnId) -> Vec<Frame> {
        std::mem::take(&mut self.logs.get_mut(&conn).expect("known conn").frames)
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.log(conn).closed.is_some()
    }

    /// The error `conn` was closed with (panics unless it was closed with one).
    pub fn close_error(&self, conn: ConnId) -> CoreError {
        match &self.log(conn).closed {
            Some(Some(e)) => e.clone(),
            other => panic!("{conn:?} was not closed with an error: {other:?}"),
        }
    }

    /// Every delivery received on `conn`, in order.
    pub fn deliveries(&self, conn: ConnId) -> Vec<Delivery> {
        self.frames(conn)
            .iter()
            .flat_map(|f| match f {
                Frame::Deliveries(d) => d.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The payloads of every delivery received on `conn`, as text.
    pub fn delivered_payloads(&self, conn: ConnId) -> Vec<String> {
        self.deliveries(conn).iter().map(payload_text).collect()
    }

    /// Every state change received on `conn`, in order.
    pub fn state_changes(&self, conn: ConnId) -> Vec<StateChange> {
        self.frames(conn)
            .iter()
            .flat_map(|f| match f {
                Frame::StateChanges(c) => c.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Every registry event received on `conn`, in order.
    pub fn registry_events(&self, conn: ConnId) -> Vec<RegistryEvent> {
        self.frames(conn)
            .iter()
            .filter_map(|f| match f {
                Frame::Registry(e) => Some(RegistryEvent::clone(e)),
                _ => None,
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------------
    // Queries

    /// Every agent of the default namespace.
    pub fn agents(&self) -> Vec<AgentView> {
        self.engine.list_agents("", &AgentQuery::default()).expect("valid namespace")
    }

    /// An agent of the default namespace, if listed.
    pub fn agent_view(&self, id: &str) -> Option<AgentView> {
        self.agents().into_iter().find(|a| a.agent_id == id)
    }

    /// An agent's status (panics if it is not listed).
    pub fn status(&self, id: &str) -> AgentStatus {
        self.agent_view(id).unwrap_or_else(|| panic!("{id} is not listed")).status
    }
}

/// A registration in the default namespace.
pub fn agent(id: &str, role: &str, interests: &[&str]) -> RegisterRequest {
    RegisterRequest {
        agent_id: id.into(),
        role: role.into(),
        interests: interests.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A publish request with a text payload.
pub fn publish(topic: &str, payload: &str) -> Request {
    Request::Publish {
        topic: topic.into(),
        payload: Bytes::from(payload.to_owned()),
        content_type: "text/plain".into(),
    }
}

/// A state update request.
pub fn update(delta: Value) -> Request {
    Request::UpdateState { delta_json: delta.to_string() }
}

pub fn payload_text(d: &Delivery) -> String {
    String::from_utf8(d.message.payload.to_vec()).expect("test payloads are text")
}

/// An explicit participant set.
pub fn agents(ids: &[&str]) -> Participants {
    Participants::Agents(ids.iter().map(|s| s.to_string()).collect())
}

/// What a watcher knows of other agents' states, built only from the changes it received.
#[derive(Debug, Default)]
pub struct WatcherView {
    /// agent id -> (version, state)
    pub states: BTreeMap<String, (u64, Value)>,
}

impl WatcherView {
    /// Applies one received change under the protocol's rules, asserting it applies (no gap).
    pub fn apply(&mut self, change: &StateChange) {
        let id = change.agent_id.to_string();
        if change.removed {
            self.states.remove(&id);
            return;
        }
        if change.base_version == 0 {
            let mut fresh = json!({});
            state::apply(&mut fresh, &change.delta);
            self.states.insert(id, (change.version, fresh));
            return;
        }
        let (version, view) = self.states.get_mut(&id).unwrap_or_else(|| {
            panic!("a delta on base {} for {id}, of which the view has nothing", change.base_version)
        });
        assert_eq!(*version, change.base_version, "gap in {id}'s changes: view at {version}, change {change:?}");
        state::apply(view, &change.delta);
        *version = change.version;
    }

    pub fn apply_all<'a>(&mut self, changes: impl IntoIterator<Item = &'a StateChange>) {
        for c in changes {
            self.apply(c);
        }
    }

    /// The view of `id`'s (version, state).
    pub fn of(&self, id: &str) -> Option<(u64, Value)> {
        self.states.get(id).cloned()
    }
}

/// The outcome all waiters of a released sync point share, from a reply.
pub fn sync_outcome(reply: &Reply) -> Arc<lockstep_core::SyncOutcome> {
    match reply {
        Reply::Sync(outcome) | Reply::SyncSummary { outcome, .. } => outcome.clone(),
        other => panic!("expected a sync release, got {other:?}"),
    }
}

/// Pulls every pending frame of `conn` into its log.
fn pull(out: &mut Sendable<'_>, logs: &mut BTreeMap<ConnId, ConnLog>, conn: ConnId) {
    while let Some(frame) = out.next_frame(conn, MAX_ITEMS) {
        let log = logs.entry(conn).or_default();
        assert!(log.closed.is_none(), "a frame came for {conn:?} after it was closed: {frame:?}");
        log.frames.push(frame);
    }
}

/// An operator's pause of an agent of the default namespace.
pub fn pause(agent: &str) -> AdminAction {
    AdminAction::PauseAgent { namespace: String::new(), agent_id: agent.into() }
}

/// An operator's resume of an agent of the default namespace.
pub fn resume(agent: &str) -> AdminAction {
    AdminAction::ResumeAgent { namespace: String::new(), agent_id: agent.into() }
}

/// An operator's restart of an agent of the default namespace.
pub fn restart(agent: &str) -> AdminAction {
    AdminAction::RestartAgent { namespace: String::new(), agent_id: agent.into() }
}

/// An operator's emergency stop.
pub fn emergency_stop(reason: &str) -> AdminAction {
    AdminAction::EmergencyStop { reason: reason.into() }
}

/// An operator forcing a sync point of the default namespace to complete.
pub fn force(sync_id: &str) -> AdminAction {
    AdminAction::ForceCompleteSync { namespace: String::new(), sync_id: sync_id.into() }
}
