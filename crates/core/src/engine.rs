//! The engine: one value that owns every piece of product state and applies every rule.
//!
//! Drive it in turns (the server's driver task does exactly this):
//!
//! 1. feed each event with [`Engine::handle`]`(now, input)` — agents' requests and operators'
//!    actions ([`Input::Admin`]) alike;
//! 2. when the clock reaches [`Engine::next_deadline`], call [`Engine::handle_timeout`]`(now)`;
//! 3. end the turn with [`Engine::ready`]: commit [`Ready::changes`](crate::Ready::changes), then
//!    [`Ready::committed`](crate::Ready::committed) and drain the [`Sendable`](crate::Sendable):
//!    `Ready(conn)` means pull [`next_frame`](crate::Sendable::next_frame) for that connection until
//!    it returns `None` (as fast as the connection can take frames), `AdminDone` answers an
//!    operator, `Close` means end that stream.
//!
//! Queries ([`Engine::list_agents`], [`Engine::get_state`], [`Engine::health`], sync status and
//! diagnosis) are read-only methods. Nothing here reads a clock, sleeps, allocates threads or does
//! I/O, so every rule can be tested by a plain function call with a chosen `now`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::breaker::{BreakerState, FailureKind, Transition};
use crate::collective::{Collective, CollectiveEvent, CollectiveJoin, CollectiveStatus, Collectives, Joined};
use crate::command::{
    AuditEntry, AuditOutcome, CommandId, CommandRequest, ControlPlane, EmergencyStop, Finished, Gated, PauseCause,
    Refusal, Resumed,
};
use crate::config::Config;
use crate::durable::{Change, PauseImage, Restored};
use crate::error::{CoreError, SessionEnd};
use crate::feed::{self, Overflow, RegistryFeed};
use crate::health::{HealthCounts, HealthHistory, HealthReport, HealthSample, QueueObservation};
use crate::io::{
    AdminAction, AdminOutcome, ConnId, ControlKind, ControlNotice, Frame, GroupOutput, Input, Message, Output,
    RegisterRequest, Registered, RegistryEvent, Reply, Request, Time, WatchTarget,
};
use crate::lease::{Lease, SharedConnections};
use crate::name;
use crate::notice::{Notice, Notices, MISSING_NAMED};
use crate::outbox::{Enqueued, Outbox};
use crate::registry::{Agent, AgentQuery, AgentStatus, AgentView, Profile, RegistryEventKind, Session};
use crate::replica_group::{self, GroupStatus, GroupView, ReplicaGroups};
use crate::request::{self, PendingRequest, Requests, Token};
use crate::state;
use crate::syncpoint::{Arrived, Diagnosis, Participants, Release, SyncPoint, SyncStatus, Waiter};
use crate::timer::Timers;
use crate::topic;
use crate::turn::Ready;
use crate::vote::{self, Cast, Decision, Opened, VoterFacts, Votes, Watcher};

mod context;
mod history;
mod intake;
mod round;
mod streams;
mod systems;
mod task;
mod trace;

/// Asks whether an agent is registered, for the control plane's checks.
fn registry_lookup(namespaces: &HashMap<Arc<str>, Namespace>) -> impl Fn(&str, &str) -> bool + '_ {
    |ns, agent| namespaces.get(ns).is_some_and(|n| n.agents.contains_key(agent))
}

/// The frame telling an agent why it is held.
fn control_frame(kind: ControlKind, refusal: &Refusal) -> Frame {
    let (actor, reason) = match &refusal.cause {
        PauseCause::Paused { actor, .. } => (actor.clone(), String::new()),
        PauseCause::EmergencyStop(stop) => (stop.actor.clone(), stop.reason.clone()),
    };
    Frame::Control(ControlNotice { kind, actor, reason })
}

/// Refuses a payload (or an answer's error text) over `limits.max_payload_bytes`, or a content
/// type longer than a topic may be.
fn check_payload(limits: &crate::config::Limits, len: usize, content_type: &str) -> Result<(), CoreError> {
    if len > limits.max_payload_bytes {
        return Err(CoreError::invalid(
            "payload",
            format!("{len} bytes; the limit is {} (limits.max_payload_bytes)", limits.max_payload_bytes),
        ));
    }
    if content_type.len() > limits.max_topic_len {
        return Err(CoreError::invalid(
            "content type",
            format!("is {} bytes; the limit is {}", content_type.len(), limits.max_topic_len),
        ));
    }
    Ok(())
}

/// Adds `item` to an agent's `list` (its watches, its interests) unless it is there already;
/// refused past `max` items. Returns whether it was added.
fn add_bounded<T: PartialEq + Clone>(
    list: &mut Vec<T>,
    item: &T,
    max: usize,
    what: &'static str,
    hint: &'static str,
) -> Result<bool, CoreError> {
    if list.contains(item) {
        return Ok(false);
    }
    if list.len() >= max {
        return Err(CoreError::Limit { what, limit: max as u64, hint });
    }
    list.push(item.clone());
    Ok(true)
}

/// Route cache entries per namespace before the cache is cleared (it refills on demand).
const ROUTE_CACHE_MAX: usize = 4096;

/// The work, in systems visited, after which [`Engine::handle_timeout`] leaves the rest of the
/// timers due for the next turn (see there).
pub const FRESHNESS_WORK_PER_TURN: u64 = 500;

/// Server-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub published: u64,
    pub routed: u64,
    pub dropped: u64,
    pub state_updates: u64,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    pub breaker_transitions: u64,
    pub breakers_opened: u64,
    /// Sync points released (completed or forced): from their first arrival to the release.
    pub barrier_wait: crate::distribution::Distribution,
    /// Delivery batches acknowledged: from being sent to the acknowledgement.
    pub delivery_ack: crate::distribution::Distribution,
    /// Delivery frames that told their receiver of messages it lost (`missed_before > 0`).
    pub gap_notices: u64,
    /// Votes decided with a choice, and votes that ended without one (tie, quorum, deadline).
    pub votes_decided: u64,
    pub votes_undecided: u64,
    /// Collectives that completed for every member, and collectives that failed.
    pub collectives_completed: u64,
    pub collectives_failed: u64,
    /// Tasks completed, attempts that failed, and tasks dead-lettered.
    pub tasks_completed: u64,
    pub task_attempts_failed: u64,
    pub tasks_dead_lettered: u64,
}

/// The agents as the metrics endpoint reports them (see [`Engine::agent_gauges`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentGauges {
    /// (namespace, status, agents), sorted.
    pub by_status: Vec<(String, &'static str, u64)>,
    /// Messages waiting in every agent's outbound queue.
    pub queued: u64,
    /// The deepest queue now.
    pub deepest_queue: u64,
    /// The deepest any queue has been.
    pub high_water: u64,
}

/// A summary of the engine for `ServerInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    pub agents: usize,
    /// Namespaces the engine holds (with agents, sync points or registry watchers).
    pub namespaces: usize,
    /// Timers armed: one per thing timed (leases, barrier deadlines, retentions...).
    pub timers: usize,
    /// Agent requests waiting for their answer.
    pub pending_requests: usize,
    pub counters: Counters,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    Lease {
        ns: Arc<str>,
        agent: Arc<str>,
    },
    LostRetention {
        ns: Arc<str>,
        agent: Arc<str>,
    },
    SyncDeadline {
        ns: Arc<str>,
        id: Arc<str>,
    },
    SyncRetention {
        ns: Arc<str>,
        id: Arc<str>,
    },
    /// An operator's command may have timed out.
    Commands,
    /// Time to sample system health.
    HealthSample,
    /// A delivery batch sent to the agent may be past its acknowledgement deadline.
    AckDeadline {
        ns: Arc<str>,
        agent: Arc<str>,
    },
    /// The agent's circuit breaker may have a time-driven transition due.
    Breaker {
        ns: Arc<str>,
        agent: Arc<str>,
    },
    /// An agent request's deadline.
    Request(Token),
    /// A vote's deadline.
    VoteDeadline {
        ns: Arc<str>,
        id: Arc<str>,
    },
    /// A finished vote's retention ends.
    VoteRetention {
        ns: Arc<str>,
        id: Arc<str>,
    },
    /// A collective's deadline.
    Collective {
        ns: Arc<str>,
        id: Arc<str>,
    },
    /// A context key's time to live may have run out.
    ContextExpiry {
        ns: Arc<str>,
        key: Arc<str>,
    },
    /// A task's current attempt may have missed its deadline.
    TaskDeadline {
        ns: Arc<str>,
        id: Arc<str>,
    },
    /// A `get_or_claim` call's wait may have run out.
    TraceWait {
        origin: u64,
    },
    /// The oldest unprotected trace may have come of age.
    TraceRetention,
    // Tick rounds.
    /// A round series' open round may have reached its deadline.
    RoundDeadline {
        ns: Arc<str>,
        series: Arc<str>,
    },
    /// A server-driven round series' next round is due.
    RoundTick {
        ns: Arc<str>,
        series: Arc<str>,
    },
    // --- event-time streams
    /// A tick controller's next source may have gone idle.
    TickerIdle {
        ns: Arc<str>,
        id: Arc<str>,
    },
    /// A latency buffer's next provisional value may be due.
    BufferDue {
        ns: Arc<str>,
        id: Arc<str>,
    },
    // --- Topic history ---
    /// The oldest message kept on a retained topic may have come of age.
    HistoryAge {
        ns: Arc<str>,
        topic: Arc<str>,
    },
    // --- sync monitor
    /// A synced system may have gone stale (no success within cadence + tolerance).
    SystemStale(Arc<str>),
}

/// Something durable an input touched; turned into a [`Change`] with the current value when the
/// shell takes the changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Touched {
    Agent(Arc<str>, Arc<str>),
    State(Arc<str>, Arc<str>),
    AgentRemoved(Arc<str>, Arc<str>),
    SyncPoint(Arc<str>, Arc<str>),
    /// (namespace, sync id, agent, its place in the arrival order: arrivals are only appended).
    Arrival(Arc<str>, Arc<str>, Arc<str>, u32),
    SyncPointRemoved(Arc<str>, Arc<str>),
    Vote(Arc<str>, Arc<str>),
    /// (namespace, vote id, the ballot's place: ballots are only appended).
    Ballot(Arc<str>, Arc<str>, u32),
    VoteRemoved(Arc<str>, Arc<str>),
    /// (namespace, context key, the version it took).
    ContextRevision(Arc<str>, Arc<str>, u64),
    /// (namespace, context key, the version its deletion took).
    ContextRemoved(Arc<str>, Arc<str>, u64),
    /// (namespace, task id): kept whole.
    Task(Arc<str>, Arc<str>),
    TaskRemoved(Arc<str>, Arc<str>),
    /// (namespace, trace id): recorded, pinned or unpinned, or evicted.
    Trace(Arc<str>, Arc<str>),
    // Tick rounds.
    /// (namespace, series name): kept whole, or removed when it is gone.
    RoundSeries(Arc<str>, Arc<str>),
    // --- event-time streams
    /// A controller or buffer was created, or a controller closed ticks.
    Stream(crate::streams::StreamKind, Arc<str>, Arc<str>),
    StreamRemoved(crate::streams::StreamKind, Arc<str>, Arc<str>),
    // --- intake
    /// The intake's rule set was replaced.
    Intake,
    // --- sync monitor
    /// A synced system's image changed.
    System(Arc<str>),
    /// A synced system took its event of this number.
    SystemEvent(Arc<str>, u64),
    /// A synced system's trends are due to be kept.
    SystemTrend(Arc<str>),
    /// A dependency (upstream, downstream) was declared, reweighted or removed.
    Dependency(Arc<str>, Arc<str>),
    /// An incident changed.
    Incident(u64),
}

/// What changed durably since the shell last took the changes.
struct ChangeLog {
    touched: Vec<Touched>,
    /// Agents with a `Touched::State` in `touched`: however many updates, the state is written once.
    state: HashSet<(Arc<str>, Arc<str>)>,
    /// The audit entries up to this number were handed over.
    audit_seq: u64,
    /// The pauses and emergency stop as last handed over.
    pauses: Vec<PauseImage>,
    emergency: Option<EmergencyStop>,
}

enum ConnRole {
    Agent {
        ns: Arc<str>,
        agent: Arc<str>,
    },
    RegistryWatcher(RegistryFeed),
    /// A context watch stream, and whether its first batch is still to go.
    ContextWatcher(Box<crate::context::ContextFeed>, bool),
    /// A task event stream.
    TaskWatcher(Box<task::TaskFeed>),
}

#[derive(Default)]
struct Namespace {
    agents: HashMap<Arc<str>, Agent>,
    /// Boxed: a namespace keeps up to `max_retained_sync_points` finished points, and a table of
    /// whole points would hold twice that room for them.
    sync_points: HashMap<Arc<str>, Box<SyncPoint>>,
    open_sync_points: usize,
    /// Finished sync points, oldest first, for bounded retention.
    finished: VecDeque<Arc<str>>,
    /// topic -> agents interested in it; cleared whenever interests change.
    routes: HashMap<Arc<str>, Arc<[Arc<str>]>>,
    registry_watchers: Vec<ConnId>,
    watchers_by_agent: HashMap<Arc<str>, HashSet<Arc<str>>>,
    watchers_by_role: HashMap<Arc<str>, HashSet<Arc<str>>>,
    watchers_of_all: HashSet<Arc<str>>,
    /// The agent chosen last to answer a request here: the next request goes to the one after.
    last_responder: Option<Arc<str>>,
    /// Votes of this namespace, open and retained (they live in `Engine::votes`): a namespace
    /// holding votes is in use and is not forgotten.
    votes: usize,
    /// Replica groups of this namespace (they live in `Engine::groups`): likewise.
    groups: usize,
}

impl Namespace {
    fn route(&mut self, topic: &str) -> Arc<[Arc<str>]> {
        if let Some(r) = self.routes.get(topic) {
            return r.clone();
        }
        let mut subs: Vec<Arc<str>> =
            self.agents.values().filter(|a| a.interested_in(topic)).map(|a| a.id.clone()).collect();
        subs.sort_unstable();
        let subs: Arc<[Arc<str>]> = subs.into();
        if self.routes.len() >= ROUTE_CACHE_MAX {
            self.routes.clear();
        }
        self.routes.insert(topic.into(), subs.clone());
        subs
    }

    /// Agents whose watches cover `owner`.
    fn watchers_of(&self, owner: &Agent) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self.watchers_of_all.iter().cloned().collect();
        if let Some(w) = self.watchers_by_role.get(&owner.role) {
            out.extend(w.iter().cloned());
        }
        if let Some(w) = self.watchers_by_agent.get(&owner.id) {
            out.extend(w.iter().cloned());
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn index_watch(&mut self, watcher: &Arc<str>, target: &WatchTarget, add: bool) {
        let (map, key) = match target {
            WatchTarget::Agent(id) => (&mut self.watchers_by_agent, id),
            WatchTarget::Role(role) => (&mut self.watchers_by_role, role),
            WatchTarget::All => {
                if add {
                    self.watchers_of_all.insert(watcher.clone());
                } else {
                    self.watchers_of_all.remove(watcher);
                }
                return;
            }
        };
        if add {
            map.entry(key.as_str().into()).or_default().insert(watcher.clone());
        } else if let Some(set) = map.get_mut(key.as_str()) {
            set.remove(watcher);
            // An id nobody watches any more is not kept as an empty entry.
            if set.is_empty() {
                map.remove(key.as_str());
            }
        }
    }

    /// Holds nothing (no agents, live or lost; no sync points or votes, open or retained; no
    /// registry watchers): the engine forgets it.
    fn is_empty(&self) -> bool {
        self.agents.is_empty()
            && self.sync_points.is_empty()
            && self.registry_watchers.is_empty()
            && self.votes == 0
            && self.groups == 0
    }

    /// Holds agents, sync points or votes: counts towards `limits.max_namespaces`. (Registry watchers of
    /// a namespace nobody uses are bounded by their own limits.)
    fn in_use(&self) -> bool {
        !self.agents.is_empty() || !self.sync_points.is_empty() || self.votes > 0 || self.groups > 0
    }

    fn live_agents(&self) -> usize {
        self.agents.values().filter(|a| a.is_live()).count()
    }
}

/// The lockstep engine. See the module documentation for how to drive it.
pub struct Engine {
    config: Config,
    namespaces: HashMap<Arc<str>, Namespace>,
    conns: HashMap<ConnId, ConnRole>,
    /// Which agent sessions share a client connection.
    shared: SharedConnections,
    /// Registry watchers over every namespace (`limits.max_registry_watchers`).
    registry_watchers: usize,
    outputs: VecDeque<Output>,
    /// What operators should hear of, since the shell last took them (see `notice`).
    notices: Notices,
    /// One timer per thing timed, removed with it.
    timers: Timers<Timer>,
    counters: Counters,
    control: ControlPlane,
    /// The time of the input being handled (frames are stamped with it when they go out).
    now: Time,
    /// Registrations so far: seeds each breaker's jitter differently.
    registrations: u64,
    /// System health over time (the share of healthy agents).
    history: HealthHistory,
    /// Durable changes not yet taken by the shell; `None` unless [`Engine::track_changes`].
    changes: Option<ChangeLog>,
    /// Changes of a [`Ready`] dropped uncommitted: they go out again first.
    given_back: Vec<Change>,
    /// Agent requests waiting for their answer.
    requests: Requests,
    /// Votes, open and retained (see [`crate::vote`]).
    votes: Votes,
    /// Collectives gathering or transferring.
    collectives: Collectives,
    /// Replica groups (see [`crate::replica_group`]).
    groups: ReplicaGroups,
    /// Shared context (see [`crate::context`]).
    context: crate::context::Context,
    /// Execution traces (see [`crate::trace`]).
    traces: crate::trace::Traces,
    /// Traces changed since the shell last took them, for its index of hits served beside the
    /// engine; `None` unless [`Engine::track_trace_index`].
    trace_index: Option<Vec<(Arc<str>, Arc<str>)>>,
    /// Context watch streams by namespace.
    context_watchers: HashMap<Arc<str>, Vec<ConnId>>,
    context_watcher_count: usize,
    /// The facts behind `system.*` changed since they were last published, and when that was.
    system_dirty: bool,
    system_published: Option<Time>,
    /// Task handoff (see [`crate::task`]).
    tasks: crate::task::Tasks,
    /// Task event streams by namespace.
    task_watchers: HashMap<Arc<str>, Vec<ConnId>>,
    /// Tick round series by (namespace, name) (see [`crate::round`]).
    rounds: std::collections::BTreeMap<(Arc<str>, Arc<str>), crate::round::Series>,
    /// Tick controllers and latency buffers (see [`crate::streams`]).
    streams: crate::streams::Streams,
    /// The Unix time (ms) at which `now` was 0: event times are checked against it.
    clock_origin_unix_ms: u64,
    /// Topic history: retained topics (see [`crate::history`]).
    topic_history: crate::history::History,
    /// Replays in progress, by (namespace, agent).
    replays: HashMap<(Arc<str>, Arc<str>), crate::history::Cursor>,
    /// Validation and categorisation of published records (see [`crate::intake`]).
    intake: crate::intake::Intake,
    /// The sync monitor (see [`crate::systems`]).
    systems: crate::systems::Systems,
}

/// Every agent's health and the system's, for the `health` command.
#[derive(Clone, Debug)]
pub struct HealthOverview {
    /// (namespace, agent id, role, report), sorted.
    pub agents: Vec<(String, String, String, HealthReport)>,
    pub counts: HealthCounts,
    /// Recent samples of system health, oldest first.
    pub history: Vec<HealthSample>,
}

impl Engine {
    /// A new, empty engine. `config` must have passed [`Config::validate`].
    pub fn new(config: Config) -> Self {
        let mut engine = Engine {
            namespaces: HashMap::new(),
            conns: HashMap::new(),
            shared: SharedConnections::default(),
            registry_watchers: 0,
            outputs: VecDeque::new(),
            notices: Notices::default(),
            timers: Timers::default(),
            counters: Counters::default(),
            control: ControlPlane::new(config.commands.clone()),
            now: 0,
            registrations: 0,
            history: HealthHistory::new(0, &config.health),
            topic_history: crate::history::History::new(&config.history, config.limits.max_topic_len),
            replays: HashMap::new(),
            // Checked by `Config::validate`: the file's set is version 1.
            intake: crate::intake::Intake::compile(
                config.intake.rule_set(),
                1,
                &config.intake,
                config.limits.max_topic_len,
            )
            .unwrap_or_default(),
            config,
            changes: None,
            given_back: Vec::new(),
            requests: Requests::default(),
            votes: Votes::default(),
            collectives: Collectives::default(),
            groups: ReplicaGroups::default(),
            context: crate::context::Context::default(),
            traces: crate::trace::Traces::default(),
            trace_index: None,
            context_watchers: HashMap::new(),
            context_watcher_count: 0,
            system_dirty: false,
            system_published: None,
            tasks: crate::task::Tasks::default(),
            task_watchers: HashMap::new(),
            rounds: Default::default(),
            streams: crate::streams::Streams::default(),
            clock_origin_unix_ms: 0,
            systems: crate::systems::Systems::default(),
        };
        // The first sample of system health is taken one interval in, when agents may have come.
        let first = engine.config.health.sample_interval_ms;
        engine.timers.set(Timer::HealthSample, first);
        // `system.health` exists from the start, for every namespace to read.
        engine.refresh_system_facts(0);
        engine.declare_streams();
        engine
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies one input at time `now`.
    pub fn handle(&mut self, now: Time, input: Input) {
        let since = match &input {
            Input::ServerStalled { since } => self.stall_began(*since),
            _ => 0,
        };
        self.now = self.now.max(now);
        match input {
            Input::Register { conn, request, new_token, connection } => {
                if let Err(e) = self.register(now, conn, request, new_token, connection) {
                    self.outputs.push_back(Output::Close(conn, Some(e)));
                }
            }
            Input::Request { conn, request_id, request } => self.request(now, conn, request_id, request),
            Input::WatchRegistry { conn, namespace } => {
                if let Err(e) = self.watch_registry(conn, &namespace) {
                    self.outputs.push_back(Output::Close(conn, Some(e)));
                }
            }
            Input::Disconnected { conn } => self.disconnected(conn),
            Input::Alive { connection, at } => self.shared.heard(connection, at.min(now)),
            Input::Malformed { conn, request_id, reason } => self.malformed(conn, request_id, reason),
            Input::Refused { conn, request_id, denial } => {
                if let Some(ConnRole::Agent { ns, agent }) = self.conns.get(&conn) {
                    let (ns, agent) = (ns.clone(), agent.clone());
                    self.reply(&ns, &agent, request_id, Reply::Error(CoreError::Denied(denial)));
                }
            }
            Input::ServerStalled { .. } => self.server_stalled(now, since),
            Input::Admin { origin, actor, action } => {
                let result = self.admin(now, origin, &actor, action);
                // A command that went out answers later, when the agent does (`command_done`).
                if let Some(result) = result {
                    self.outputs.push_back(Output::AdminDone { origin, result });
                }
            }
            Input::CollectiveJoin { origin, join } => {
                if let Err(error) = self.collective_join(now, origin, &join) {
                    self.outputs.push_back(Output::Collective(CollectiveEvent::Refused { origin, error }));
                }
            }
            Input::CollectiveFault { origin, reason } => self.collective_fault(origin, reason),
            Input::CollectiveTransferred { namespace, collective_id, serial } => {
                let key = (Arc::from(namespace.as_str()), Arc::from(collective_id.as_str()));
                if self.collectives.get_mut(&key).is_some_and(|c| c.serial == serial) {
                    self.collective_finish(&key, Ok(()));
                }
            }
            Input::GroupPublish { origin, call, size } => {
                let out = match self.group_publish(origin, &call, size) {
                    Ok(()) => GroupOutput::PublishGo { origin },
                    Err(error) => GroupOutput::Refused { origin, error },
                };
                self.outputs.push_back(Output::Group(out));
            }
            Input::GroupPublished { origin, result } => self.group_published(now, origin, result),
            Input::GroupFetch { origin, call } => {
                let out = match self.group_fetch(&call) {
                    Ok((namespace, group_id, state)) => GroupOutput::FetchGo { origin, namespace, group_id, state },
                    Err(error) => GroupOutput::Refused { origin, error },
                };
                self.outputs.push_back(Output::Group(out));
            }
            Input::ContextWrite { origin, writer, write } => {
                let writer = crate::context::Writer { name: writer.as_str().into(), agent: None };
                let result = self.context_write(now, &write.namespace.clone(), &writer, &write);
                self.outputs.push_back(Output::ContextDone { origin, result });
            }
            Input::WatchContext { conn, namespace, selector, from } => {
                if let Err(e) = self.watch_context(conn, &namespace, selector, from) {
                    self.outputs.push_back(Output::Close(conn, Some(e)));
                }
            }
            Input::WatchTasks { conn, namespace } => {
                if let Err(e) = self.watch_tasks(conn, &namespace) {
                    self.outputs.push_back(Output::Close(conn, Some(e)));
                }
            }
            Input::Trace(input) => self.trace_input(now, input),
            Input::Round { origin, call } => {
                let result = self.round_call(now, call);
                self.outputs.push_back(Output::RoundDone { origin, result });
            }
            Input::Systems { origin, actor, call } => {
                let result = self.systems_call(now, &actor, call);
                self.outputs.push_back(Output::SystemsDone { origin, result });
            }
        }
    }

    /// The notices since the last call (see `notice`): the shell logs them once the turn that
    /// made them is committed.
    pub fn take_notices(&mut self) -> Notices {
        std::mem::take(&mut self.notices)
    }

    /// Ends the turn: hands over its durable changes, behind which its outputs and frames wait
    /// until the shell says the changes are committed (see [`crate::turn`]).
    pub fn ready(&mut self) -> Ready<'_> {
        self.publish_system_facts(self.now, false);
        let changes = self.take_changes();
        Ready::new(self, changes)
    }

    /// Takes back the changes of a [`Ready`] that was dropped before its commit.
    pub(crate) fn give_back(&mut self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let newer = std::mem::replace(&mut self.given_back, changes);
            self.given_back.extend(newer);
        }
    }

    /// Answers a message the shell could not decode (on the session of `conn`). A protocol
    /// violation counts as a failure for the agent's circuit breaker: an agent that keeps sending
    /// garbage is isolated like one that keeps failing its deliveries.
    fn malformed(&mut self, conn: ConnId, request_id: u64, reason: String) {
        if let Some(ConnRole::Agent { ns, agent }) = self.conns.get(&conn) {
            let (ns, agent) = (ns.clone(), agent.clone());
            self.reply(&ns, &agent, request_id, Reply::Error(CoreError::invalid("message", reason)));
            let now = self.now;
            let capped = self.isolation_capped(now, &ns, &agent);
            let transition = self
                .agent_mut(&ns, &agent)
                .and_then(|a| a.breaker.record_failure_unless_capped(now, FailureKind::AgentError, capped));
            if let Some(t) = transition {
                self.breaker_moved(&ns, &agent, t);
            }
        }
    }

    /// The earliest time at which [`Engine::handle_timeout`] has work to do.
    pub fn next_deadline(&self) -> Option<Time> {
        self.timers.next_deadline()
    }

    /// When a stall that the shell dates from `since` (an overdue timer's deadline, or when a
    /// waiting command was handed over) really began: not before the engine's last input or timer,
    /// since it was running then. A timer restored overdue from the store (its deadline passed
    /// while the server was down) is no stall of a server that has just started: leases given at
    /// the restart are not moved by the downtime.
    pub fn stall_began(&self, since: Time) -> Time {
        since.max(self.now)
    }

    /// Fires the timers due at `now`, in time order: lost leases, barrier deadlines, retention
    /// ends, delivery acknowledgement deadlines, breaker probes, command timeouts, health samples,
    /// synced systems' freshness.
    ///
    /// Freshness checks stop for the call once they have done [`FRESHNESS_WORK_PER_TURN`] work
    /// (systems visited by risk propagation and incident assessment, a measure that does not
    /// depend on the machine): each check may open an incident and propagate risk through a large
    /// part of the dependency graph, and a burst of systems falling due together must not hold up
    /// everything else for its whole length. What is left stays due ([`Engine::next_deadline`] is
    /// in the past), so the shell calls again on its next turn, after the inputs that were waiting.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = self.now.max(now);
        let start = self.systems.work();
        while self.systems.work() - start < FRESHNESS_WORK_PER_TURN {
            let Some(timer) = self.timers.pop_due(now) else { break };
            self.fire(now, timer);
        }
    }

    /// The next thing the shell must do, if any (through [`Sendable`](crate::Sendable)).
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next frame to send on `conn` (at most `max_items` deliveries or state changes in it),
    /// or `None` when nothing is pending; a later `Ready(conn)` says when there is more.
    pub(crate) fn next_frame(&mut self, conn: ConnId, max_items: usize) -> Option<Frame> {
        let (ns_key, agent_key) = match self.conns.get_mut(&conn)? {
            ConnRole::RegistryWatcher(feed) => {
                let frame = feed.pop();
                feed.notified = frame.is_some();
                return frame;
            }
            ConnRole::ContextWatcher(..) => return self.context_frame(conn, max_items),
            ConnRole::TaskWatcher(..) => return self.task_frame(conn),
            ConnRole::Agent { ns, agent } => (ns.clone(), agent.clone()),
        };
        if !self.replays.is_empty() && self.replays.contains_key(&(ns_key.clone(), agent_key.clone())) {
            // The frame about to be taken makes room: the replay refills it (its pacing).
            self.replay_fill(&ns_key, &agent_key);
        }
        let ns = self.namespaces.get_mut(&ns_key)?;
        let agent = ns.agents.get_mut(&agent_key)?;
        let mut outbox = std::mem::replace(&mut agent.outbox, Outbox::new(1, 1, self.config.overflow_policy));
        let agents = &ns.agents;
        let max_bytes = self.config.limits.frame_bytes();
        let frame = outbox
            .next_frame(max_items, max_bytes, |owner| agents.get(owner).map(|a| (a.state_version, a.state.clone())));
        outbox.notified = frame.is_some();
        let agent = ns.agents.get_mut(&agent_key).expect("still there");
        agent.outbox = outbox;
        if let Some(Frame::Deliveries(batch)) = &frame {
            // A batch never spans a gap: only its first delivery can carry one.
            if batch.first().is_some_and(|d| d.missed_before > 0) {
                self.counters.gap_notices += 1;
            }
            // The acknowledgement deadline of this batch feeds the agent's breaker.
            let last = batch.last().map_or(0, |d| d.seq);
            agent.unacked.push_back((last, self.now));
            if !agent.ack_timer {
                agent.ack_timer = true;
                let at = self.now.saturating_add(agent.breaker.settings().timeout_per_agent_ms);
                self.timers.set(Timer::AckDeadline { ns: ns_key, agent: agent_key }, at);
            }
        }
        frame
    }

    // ---------------------------------------------------------------------------------------------
    // Durability: what changed, for the shell to commit; what was kept, to start from.

    /// From now on, record the durable changes every input makes, for [`Engine::take_changes`].
    pub fn track_changes(&mut self) {
        self.changes = Some(ChangeLog {
            touched: Vec::new(),
            state: HashSet::new(),
            audit_seq: self.control.audit().last_seq(),
            pauses: self.control.pauses(),
            emergency: self.control.emergency().cloned(),
        });
    }

    fn touch(&mut self, touched: Touched) {
        // Also kept for a shell's trace index, with or without a store.
        if let (Touched::Trace(ns, id), Some(changed)) = (&touched, self.trace_index.as_mut()) {
            changed.push((ns.clone(), id.clone()));
        }
        let Some(log) = self.changes.as_mut() else { return };
        if let Touched::State(ns, agent) = &touched {
            if !log.state.insert((ns.clone(), agent.clone())) {
                return;
            }
        } else if log.touched.last() == Some(&touched) {
            return;
        }
        log.touched.push(touched);
    }

    /// The durable changes since the last call, in the order they happened, each with the value to
    /// keep (for [`Engine::ready`]). Empty unless [`Engine::track_changes`] was called.
    fn take_changes(&mut self) -> Vec<Change> {
        let mut out = std::mem::take(&mut self.given_back);
        // Taken every turn, kept or not, so that they never pile up in an engine that keeps nothing.
        let history = self.topic_history.take_changes();
        let Some(mut log) = self.changes.take() else { return out };
        out.extend(history.into_iter().map(Change::History));
        out.reserve(log.touched.len());
        for touched in log.touched.drain(..) {
            let change = match touched {
                Touched::Agent(ns, id) => self.agent(&ns, &id).map(|a| Change::Agent(a.image(&ns))),
                Touched::State(ns, id) => self.agent(&ns, &id).map(|a| Change::State {
                    namespace: ns.to_string(),
                    agent_id: id.to_string(),
                    state: a.state.clone(),
                    version: a.state_version,
                }),
                Touched::AgentRemoved(ns, id) => {
                    Some(Change::AgentRemoved { namespace: ns.to_string(), agent_id: id.to_string() })
                }
                Touched::SyncPoint(ns, id) => self.point(&ns, &id).map(|p| Change::SyncPoint(p.image(&ns))),
                Touched::Arrival(ns, id, agent, position) => {
                    self.point(&ns, &id).and_then(|p| p.arrival_image(position, &agent)).map(|arrival| {
                        Change::Arrival { namespace: ns.to_string(), sync_id: id.to_string(), position, arrival }
                    })
                }
                Touched::SyncPointRemoved(ns, id) => {
                    Some(Change::SyncPointRemoved { namespace: ns.to_string(), sync_id: id.to_string() })
                }
                Touched::Vote(ns, id) => self.votes.get(&ns, &id).map(|v| Change::Vote(Box::new(v.image(&ns)))),
                Touched::Ballot(ns, id, position) => {
                    self.votes.get(&ns, &id).and_then(|v| v.ballot(position)).map(|b| Change::Ballot {
                        namespace: ns.to_string(),
                        vote_id: id.to_string(),
                        position,
                        ballot: b.clone(),
                    })
                }
                Touched::VoteRemoved(ns, id) => {
                    Some(Change::VoteRemoved { namespace: ns.to_string(), vote_id: id.to_string() })
                }
                Touched::ContextRevision(ns, key, version) => self.context_change(&ns, &key, version),
                Touched::ContextRemoved(ns, key, version) => {
                    Some(Change::ContextRemoved { namespace: ns.to_string(), key: key.to_string(), version })
                }
                Touched::Task(ns, id) => self.tasks.get(&ns, &id).ok().map(|t| Change::Task(Box::new(t.clone()))),
                Touched::TaskRemoved(ns, id) => {
                    Some(Change::TaskRemoved { namespace: ns.to_string(), id: id.to_string() })
                }
                Touched::Trace(ns, id) => Some(self.trace_change(&ns, &id)),
                Touched::RoundSeries(ns, name) => Some(self.round_change(&ns, &name)),
                Touched::Stream(kind, ns, id) => self.stream_change(kind, &ns, &id),
                Touched::StreamRemoved(kind, ns, id) => {
                    Some(Change::StreamRemoved { kind, namespace: ns.to_string(), id: id.to_string() })
                }
                Touched::Intake => Some(self.intake_change()),
                Touched::System(name) => self.system_change(&name),
                Touched::SystemEvent(name, seq) => self.system_event_change(&name, seq),
                Touched::SystemTrend(name) => self.system_trend_change(&name),
                Touched::Dependency(up, down) => Some(self.dependency_change(&up, &down)),
                Touched::Incident(id) => self.incident_change(id),
            };
            out.extend(change);
        }
        log.state.clear();
        let audit = self.control.audit();
        out.extend(audit.since(log.audit_seq).cloned().map(Change::Audit));
        log.audit_seq = audit.last_seq();
        let emergency = self.control.emergency();
        if log.emergency.as_ref() != emergency {
            log.emergency = emergency.cloned();
            out.push(Change::EmergencyStop(log.emergency.clone()));
        }
        if !log.pauses.is_empty() || self.control.paused_agents().next().is_some() {
            let pauses = self.control.pauses();
            let key = |p: &PauseImage| (p.namespace.clone(), p.agent_id.clone());
            for old in log.pauses.iter().filter(|o| !pauses.iter().any(|p| key(p) == key(o))) {
                out.push(Change::Unpaused { namespace: old.namespace.clone(), agent_id: old.agent_id.clone() });
            }
            out.extend(pauses.iter().filter(|p| !log.pauses.contains(p)).cloned().map(Change::Paused));
            log.pauses = pauses;
        }
        self.changes = Some(log);
        out
    }

    /// Rebuilds the registry, sync points and control plane from what was kept, at `now` (the
    /// engine must be new). Agents that were live get a session without a connection and a fresh
    /// lease, to reconnect and resume with their token; if they do not, they are lost as usual.
    /// Watchers get the current state of what they watch when they come back. Open sync points
    /// keep their arrivals and deadlines; finished ones keep their outcome until their retention
    /// ends. Fails, naming the record, if something kept is not valid any more (a limit lowered,
    /// a name now refused).
    pub fn restore(&mut self, now: Time, restored: Restored) -> Result<(), CoreError> {
        self.now = self.now.max(now);
        let Restored {
            agents,
            sync_points,
            audit,
            pauses,
            emergency,
            votes,
            context,
            context_revisions,
            tasks,
            task_seqs,
            traces,
            rounds,
            streams,
            history,
            intake,
            systems,
            system_events,
            dependencies,
            incidents,
            system_trends,
        } = restored;
        self.history_restore(now, history);
        let bad = |what: String, e: &dyn std::fmt::Display| CoreError::invalid("stored data", format!("{what}: {e}"));
        for image in &agents {
            let ns_name = name::namespace_or_default(&image.namespace)?;
            let ns_key: Arc<str> = ns_name.into();
            let lease = (image.status != AgentStatus::Lost).then(|| Lease::new(now, self.config.lease_ms()));
            self.registrations += 1;
            let agent = Agent::restore(image, now, lease, &self.config, self.registrations)
                .map_err(|e| bad(format!("agent '{}' of namespace '{ns_key}'", image.agent_id), &e))?;
            let id = agent.id.clone();
            let n = self.namespaces.entry(ns_key.clone()).or_default();
            for w in &agent.watches {
                n.index_watch(&id, w, true);
            }
            let lost = agent.lost_at.is_some();
            n.agents.insert(id.clone(), agent);
            if lost {
                let at = now.saturating_add(self.config.lost_retention_ms);
                self.timers.set(Timer::LostRetention { ns: ns_key, agent: id }, at);
            } else {
                self.arm_lease(&ns_key, &id);
            }
        }
        // Watchers hear the current state of everything they watch: whatever they missed while
        // the server was down is healed by these snapshots.
        for n in self.namespaces.values_mut() {
            let mut snapshots = Vec::new();
            for w in n.agents.values().filter(|w| w.is_live() && !w.watches.is_empty()) {
                for owner in n.agents.values().filter(|o| w.watches.iter().any(|t| o.watched_by(t))) {
                    snapshots.push((w.id.clone(), owner.id.clone()));
                }
            }
            // In a stable order: the same data restores to the same queues.
            snapshots.sort_unstable();
            for (watcher, owner) in snapshots {
                n.agents.get_mut(&watcher).expect("listed").outbox.push_state_snapshot(&owner);
            }
        }
        let mut finished = Vec::new();
        for image in sync_points {
            let ns_key: Arc<str> = name::namespace_or_default(&image.namespace)?.into();
            let label = format!("sync point '{}' of namespace '{ns_key}'", image.sync_id);
            let point = SyncPoint::restore(image).map_err(|e| bad(label, &e))?;
            let id: Arc<str> = point.id().into();
            let n = self.namespaces.entry(ns_key.clone()).or_default();
            match point.finished_at() {
                None => {
                    n.open_sync_points += 1;
                    let at = point.deadline();
                    self.timers.set(Timer::SyncDeadline { ns: ns_key.clone(), id: id.clone() }, at);
                }
                Some(at) => finished.push((at, ns_key.clone(), id.clone())),
            }
            n.sync_points.insert(id, Box::new(point));
        }
        finished.sort();
        for (at, ns, id) in finished {
            let retention_ends = at.saturating_add(self.config.sync_retention_ms);
            self.timers.set(Timer::SyncRetention { ns: ns.clone(), id: id.clone() }, retention_ends);
            self.namespaces.get_mut(&ns).expect("inserted").finished.push_back(id);
        }
        let (open_votes, finished_votes) = self.votes.restore(votes)?;
        for (ns, id, deadline) in open_votes {
            self.namespaces.entry(ns.clone()).or_default().votes += 1;
            self.timers.set(Timer::VoteDeadline { ns, id }, deadline);
        }
        for (ns, id, at) in finished_votes {
            self.namespaces.entry(ns.clone()).or_default().votes += 1;
            self.timers.set(Timer::VoteRetention { ns, id }, at.saturating_add(self.config.sync_retention_ms));
        }
        self.restore_context(context, context_revisions)?;
        self.restore_tasks(tasks, task_seqs);
        self.restore_traces(traces);
        self.restore_rounds(now, rounds)?;
        self.restore_streams(streams)?;
        self.restore_intake(intake)?;
        self.restore_systems(systems, system_events, dependencies, incidents, system_trends)?;
        self.control.restore(audit, pauses, emergency);
        for (ns, agent) in self.all_agents() {
            if self.control.is_paused(&ns, &agent) {
                let a = self.agent_mut(&ns, &agent).expect("listed");
                a.outbox.set_held(true);
                if a.status != AgentStatus::Lost {
                    a.status = AgentStatus::Paused;
                }
            }
        }
        if let Some(log) = self.changes.as_mut() {
            log.audit_seq = self.control.audit().last_seq();
            log.pauses = self.control.pauses();
            log.emergency = self.control.emergency().cloned();
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Sessions

    fn register(
        &mut self,
        now: Time,
        conn: ConnId,
        req: RegisterRequest,
        new_token: String,
        connection: u64,
    ) -> Result<(), CoreError> {
        if let Some(ConnRole::Agent { ns, agent }) = self.conns.get(&conn) {
            let (ns, agent) = (ns.clone(), agent.clone());
            let err = CoreError::AlreadyRegisteredHere { agent: agent.to_string() };
            self.reply(&ns, &agent, 0, Reply::Error(err));
            return Ok(());
        }
        let ns_name = name::namespace_or_default(&req.namespace)?.to_owned();
        let profile = Profile::from_request(&req, &self.config.limits)?;
        let max_namespaces = self.config.limits.max_namespaces;
        let in_use = self.namespaces.get(ns_name.as_str()).is_some_and(Namespace::in_use);
        if !in_use && self.namespaces.values().filter(|n| n.in_use()).count() >= max_namespaces {
            return Err(CoreError::Limit {
                what: "namespaces",
                limit: self.config.limits.max_namespaces as u64,
                hint: "use an existing namespace or raise limits.max_namespaces",
            });
        }
        let ns_key: Arc<str> = ns_name.as_str().into();
        let config = &self.config;
        let ns = self.namespaces.entry(ns_key.clone()).or_default();
        let lease = Lease::new(now, config.lease_ms());
        let mut closed_old = None;
        let (agent_key, resumed, joined) = match ns.agents.get_mut(req.agent_id.as_str()) {
            Some(agent) => {
                let token_ok = agent.token_matches(&req.resume_token);
                if agent.is_live() && !token_ok {
                    return Err(CoreError::AlreadyRegistered { namespace: ns_name, agent: req.agent_id });
                }
                let was_lost = !agent.is_live();
                if !token_ok {
                    agent.resume_token = new_token;
                }
                if let Some(old) = agent.session.as_mut().and_then(|s| s.conn.take()) {
                    closed_old = Some(old);
                }
                agent.session = Some(Session { conn: Some(conn), lease });
                agent.breaker.set_settings(config.breaker_for(&profile.role, &agent.id));
                agent.apply_profile(profile);
                agent.last_heartbeat = now;
                if was_lost {
                    agent.status = AgentStatus::Active;
                    agent.lost_at = None;
                }
                (agent.id.clone(), token_ok, was_lost)
            }
            None => {
                if ns.agents.len() >= config.limits.max_agents_per_namespace {
                    return Err(CoreError::Limit {
                        what: "agents per namespace",
                        limit: config.limits.max_agents_per_namespace as u64,
                        hint: "deregister agents that are done, or raise limits.max_agents_per_namespace",
                    });
                }
                let id: Arc<str> = req.agent_id.as_str().into();
                let session = Session { conn: Some(conn), lease };
                let seed = self.registrations
                    ^ id.bytes()
                        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                ns.agents.insert(id.clone(), Agent::new(id.clone(), profile, now, session, new_token, config, seed));
                (id, false, true)
            }
        };
        ns.routes.clear();
        let agent = ns.agents.get_mut(&agent_key).expect("just inserted");
        let registered = Registered {
            namespace: ns_name,
            agent_id: agent_key.to_string(),
            resume_token: agent.resume_token.clone(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            lease_intervals: config.lease_intervals,
            resumed,
            limits: Box::new(config.limits.clone()),
            queue_capacity: config.queue_capacity,
            connection_heartbeats: true,
            missed_messages: agent.outbox.take_trailing_gap(),
        };
        // Registration goes ahead of anything queued while the session was away.
        agent.outbox.push_control_front(Frame::Registered(registered));
        // An agent paused by an operator (or an emergency stop) comes back paused, and is told.
        if let Err(refusal) = self.control.check(&ns_key, &agent_key, Gated::Publish) {
            agent.outbox.set_held(true);
            agent.status_when_resumed = Some(agent.status).filter(|s| *s != AgentStatus::Paused);
            agent.status = AgentStatus::Paused;
            let kind = match refusal.cause {
                PauseCause::EmergencyStop(_) => ControlKind::EmergencyStop,
                PauseCause::Paused { .. } => ControlKind::Paused,
            };
            agent.outbox.push_urgent(control_frame(kind, &refusal));
        }
        // The new connection has been told nothing yet: a `Ready` given to an earlier connection
        // that never drained it (stuck, broken, too slow) must not keep this one waiting.
        agent.outbox.notified = false;
        agent.outbox.new_connection();
        if let Some(old) = closed_old {
            self.forget_conn(old);
            let cause = SessionEnd::TakenOver;
            self.outputs
                .push_back(Output::Close(old, Some(CoreError::SessionEnded { agent: agent_key.to_string(), cause })));
        }
        self.conns.insert(conn, ConnRole::Agent { ns: ns_key.clone(), agent: agent_key.clone() });
        self.shared.join(conn, connection);
        self.touch(Touched::Agent(ns_key.clone(), agent_key.clone()));
        // A lost agent back in time is no longer due to be forgotten.
        self.timers.cancel(&Timer::LostRetention { ns: ns_key.clone(), agent: agent_key.clone() });
        self.arm_lease(&ns_key, &agent_key);
        if joined {
            let role = self.agent(&ns_key, &agent_key).map_or_else(|| "".into(), |a| a.role.clone());
            self.notices.push(Notice::AgentJoined { namespace: ns_key.clone(), agent: agent_key.clone(), role });
            self.registry_event(&ns_key, &agent_key, RegistryEventKind::Joined, None);
            self.resend_watched_states(&ns_key, &agent_key);
        }
        self.notify(&ns_key, &agent_key);
        Ok(())
    }

    /// A sign of life from `agent` at `now` (`progress`: it did work, not only a heartbeat).
    fn heard_from(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, progress: bool) {
        if let Some(a) = self.agent_mut(ns, agent) {
            a.last_heartbeat = now;
            a.health.heartbeat(now);
            if progress {
                a.health.progress(now);
            }
            if let Some(s) = a.session.as_mut() {
                s.lease.renew(now);
            }
        }
    }

    /// Forgets a connection that is over.
    fn forget_conn(&mut self, conn: ConnId) -> Option<ConnRole> {
        self.shared.leave(conn);
        self.conns.remove(&conn)
    }

    fn request(&mut self, now: Time, conn: ConnId, request_id: u64, request: Request) {
        let Some(ConnRole::Agent { ns, agent }) = self.conns.get(&conn) else {
            // A request racing the end of its connection: the connection is already closed.
            return;
        };
        let (ns, agent) = (ns.clone(), agent.clone());
        let progress =
            matches!(request, Request::Publish { .. } | Request::PublishEvent { .. } | Request::UpdateState { .. });
        self.heard_from(now, &ns, &agent, progress);
        if matches!(request, Request::Heartbeat) {
            // The sessions sharing this one's client connection are as alive as it is.
            let peers: Vec<ConnId> = self.shared.peers(conn).collect();
            for peer in peers {
                if let Some(ConnRole::Agent { ns, agent }) = self.conns.get(&peer) {
                    let (ns, agent) = (ns.clone(), agent.clone());
                    self.heard_from(now, &ns, &agent, false);
                }
            }
        }
        let gated = match &request {
            Request::Publish { .. } | Request::PublishEvent { .. } => Some(Gated::Publish),
            Request::UpdateState { .. } => Some(Gated::UpdateState),
            Request::Sync { .. } => Some(Gated::SyncArrive),
            Request::AgentRequest { .. } => Some(Gated::Request),
            Request::OpenVote { .. } | Request::CastBallot(_) => Some(Gated::Vote),
            Request::ContextWrite(_) => Some(Gated::Context),
            Request::SubmitTask(_) | Request::TaskWork { .. } | Request::ClaimTask { .. } => Some(Gated::Tasks),
            _ => None,
        };
        if let Some(Err(refusal)) = gated.map(|action| self.control.check(&ns, &agent, action)) {
            self.reply(&ns, &agent, request_id, Reply::Error(refusal.into()));
            return;
        }
        if matches!(request, Request::Publish { .. } | Request::PublishEvent { .. } | Request::UpdateState { .. }) {
            if let Some(b) = self.agent(&ns, &agent).map(|a| &a.breaker).filter(|b| b.is_open()) {
                let err = CoreError::BreakerOpen {
                    agent: agent.to_string(),
                    probe_at_ms: b.probe_at().unwrap_or(now),
                    reason: b.open_reason().map(|r| r.to_string()).unwrap_or_default(),
                };
                self.reply(&ns, &agent, request_id, Reply::Error(err));
                return;
            }
        }
        let result = match request {
            Request::Heartbeat => Ok(Reply::Ok),
            Request::Publish { topic, payload, content_type } => {
                let taken = (!self.streams.is_empty()).then(|| payload.clone());
                let result = self.intake_publish(now, &ns, &agent, &topic, payload, &content_type);
                if let (Ok(()), Some(payload)) = (&result, taken) {
                    self.streams_ingest(now, &ns, &agent, &topic, &payload, None);
                }
                result.map(|()| Reply::Ok)
            }
            Request::PublishEvent { topic, payload, content_type, event_time_ms } => {
                self.publish_event(now, &ns, &agent, &topic, payload, &content_type, event_time_ms).map(|()| Reply::Ok)
            }
            Request::UpdateState { delta_json } => self.update_state(&ns, &agent, &delta_json).map(Reply::StateVersion),
            Request::SetStatus(status) => self.set_status(&ns, &agent, status).map(|()| Reply::Ok),
            Request::Watch(target) => self.watch(&ns, &agent, target).map(|()| Reply::Ok),
            Request::Unwatch(target) => self.unwatch(&ns, &agent, &target).map(|()| Reply::Ok),
            Request::Sync { sync_id, participants, timeout_ms, payload, summary, quorum } => {
                let waiter = Waiter { agent: agent.clone(), request_id, position: 0, summary };
                match self.sync(now, &ns, waiter, sync_id, (participants, quorum), timeout_ms, payload) {
                    // The reply comes when the point is released.
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            Request::Ack { up_to } => {
                self.acknowledged(now, &ns, &agent, up_to, None);
                return;
            }
            Request::DeliveryError { seq, reason } => {
                self.acknowledged(now, &ns, &agent, seq, Some(reason));
                Ok(Reply::Ok)
            }
            Request::CommandResult { command_id, reply } => {
                match self.control.reply(now, &ns, &agent, CommandId(command_id), reply) {
                    Ok(finished) => {
                        self.command_done(finished);
                        Ok(Reply::Ok)
                    }
                    Err(e) => Err(e),
                }
            }
            Request::AgentRequest { topic, payload, content_type, timeout_ms } => {
                let asked = Message::new(&topic, payload, &content_type, agent.clone());
                match self.agent_request(now, &ns, request_id, asked, timeout_ms) {
                    // The reply is the responder's answer, or how the request failed.
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            Request::Respond { token, payload, content_type, error } => {
                self.respond(&ns, &agent, token, payload, &content_type, error).map(|()| Reply::Ok)
            }
            Request::OpenVote { spec, wait } => match self.open_vote(now, &ns, &agent, request_id, *spec, wait) {
                // A waiting opener is answered with the outcome.
                Ok(None) => return,
                Ok(Some(reply)) => Ok(reply),
                Err(e) => Err(e),
            },
            Request::CastBallot(ballot) => match self.cast_ballot(now, &ns, &agent, request_id, &ballot) {
                // The reply is the outcome, once decided.
                Ok(None) => return,
                Ok(Some(reply)) => Ok(reply),
                Err(e) => Err(e),
            },
            Request::JoinGroup { group_id } => self.join_group(&ns, &agent, group_id).map(Reply::Group),
            Request::LeaveGroup { group_id, forget_state } => {
                let key = (ns.clone(), Arc::from(group_id.as_str()));
                let left = if forget_state {
                    self.groups.forget(&key, &agent).inspect(|_| {
                        let (namespace, group_id) = key.clone();
                        self.outputs.push_back(Output::Group(GroupOutput::Forgotten { namespace, group_id }));
                    })
                } else {
                    self.groups.leave(&key, &agent, "left")
                };
                left.map(|e| {
                    self.group_event(&ns, e);
                    Reply::Ok
                })
            }
            Request::ContextWrite(write) => {
                let writer = crate::context::Writer { name: agent.clone(), agent: Some(agent.clone()) };
                self.context_write(now, &ns, &writer, &write).map(Reply::ContextWritten)
            }
            Request::SubmitTask(submit) => self.submit_task(now, &ns, &agent, *submit),
            Request::TaskWork { kinds, max_in_flight } => self.task_work(now, &ns, &agent, kinds, max_in_flight),
            Request::StopTaskWork => {
                self.tasks.stop_work(&ns, &agent);
                Ok(Reply::Ok)
            }
            Request::ClaimTask { kinds } => self.claim_task(now, &ns, &agent, kinds),
            Request::StartTask { id, attempt } => {
                let result = self.tasks.start(now, &ns, &agent, &id, attempt);
                self.task_done(&ns, result)
            }
            Request::CompleteTask { id, attempt, output_json } => {
                let result = self.tasks.complete(now, &ns, &agent, &id, attempt, &output_json, &self.config.tasks);
                self.task_done(&ns, result)
            }
            Request::FailTask { id, attempt, error } => {
                let result = self.tasks.fail(now, &ns, &agent, &id, attempt, &error, &self.config.tasks);
                self.task_done(&ns, result)
            }
            Request::RoundAnswer { series, round, output_json } => {
                self.round_answer(now, &ns, &agent, &series, round, &output_json)
            }
            Request::Subscribe { pattern, replay } => match self.subscribe(&ns, &agent, &pattern, replay) {
                Ok(()) => {
                    // The reply first, then what is replayed (fenced behind it).
                    if request_id != 0 {
                        self.reply(&ns, &agent, request_id, Reply::Ok);
                    }
                    self.replay_fill(&ns, &agent);
                    return;
                }
                Err(e) => Err(e),
            },
            Request::Unsubscribe { pattern } => self.unsubscribe(&ns, &agent, &pattern).map(|()| Reply::Ok),
            Request::Deregister => {
                self.remove_agent(now, &ns, &agent, "left");
                self.forget_conn(conn);
                self.outputs.push_back(Output::Close(conn, None));
                return;
            }
        };
        match result {
            Ok(_) if request_id == 0 => {}
            Ok(reply) => self.reply(&ns, &agent, request_id, reply),
            Err(e) => self.reply(&ns, &agent, request_id, Reply::Error(e)),
        }
    }

    /// A stream ended without a goodbye. A reset, a cancelled call, a dropped channel and a
    /// half-close all look alike at the transport, and none of them says the agent is done: only
    /// `deregister` does. So the agent keeps its lease and may resume with its token.
    fn disconnected(&mut self, conn: ConnId) {
        match self.forget_conn(conn) {
            Some(ConnRole::Agent { ns, agent }) => {
                if let Some(s) = self.agent_mut(&ns, &agent).and_then(|a| a.session.as_mut()) {
                    s.conn = None;
                }
            }
            Some(ConnRole::RegistryWatcher(feed)) => {
                self.registry_watchers -= 1;
                if let Some(n) = self.namespaces.get_mut(&feed.ns) {
                    n.registry_watchers.retain(|c| *c != conn);
                }
                self.reclaim_if_empty(&feed.ns);
            }
            Some(ConnRole::ContextWatcher(feed, _)) => self.context_watch_ended(conn, &feed),
            Some(ConnRole::TaskWatcher(feed)) => self.task_watch_ended(conn, &feed.ns),
            None => {}
        }
    }

    /// The server could not run from `since` until `now` (see [`Input::ServerStalled`]). Leases
    /// measure a client's silence, not the server's: every live agent's lease is moved by the
    /// stall and runs at least a heartbeat interval past `now` (what the agent sent meanwhile may
    /// still be waiting to be read), and deliveries awaiting an acknowledgement get their deadline
    /// moved by the stall, since their acknowledgements could not be read either. Barrier and
    /// command deadlines are the users' own and stand.
    fn server_stalled(&mut self, now: Time, since: Time) {
        let stall = now.saturating_sub(since);
        let grace = self.config.heartbeat_interval_ms;
        for n in self.namespaces.values_mut() {
            for a in n.agents.values_mut() {
                if let Some(session) = a.session.as_mut() {
                    session.lease.extend_after_stall(now, stall, grace);
                }
                for (_, sent) in a.unacked.iter_mut() {
                    *sent = sent.saturating_add(stall).min(now);
                }
            }
        }
    }

    fn arm_lease(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        let Some(n) = self.namespaces.get_mut(ns) else {
            return;
        };
        let Some(expires) = n.agents.get(agent).and_then(|a| a.session.as_ref()).map(|s| s.lease.expires_at()) else {
            return;
        };
        self.timers.set(Timer::Lease { ns: ns.clone(), agent: agent.clone() }, expires);
    }

    fn fire(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::Lease { ns, agent } => {
                let Some(n) = self.namespaces.get_mut(&ns) else {
                    return;
                };
                let Some(session) = n.agents.get_mut(&agent).and_then(|a| a.session.as_mut()) else {
                    return;
                };
                // Messages read from its connection since its last one was applied (they may
                // still wait to be applied) show the client alive as of the read.
                if let Some(heard) = session.conn.and_then(|c| self.shared.last_heard(c)) {
                    session.lease.renew(heard);
                }
                if session.lease.expired(now) {
                    self.lose_agent(now, &ns, &agent);
                } else {
                    self.arm_lease(&ns, &agent);
                }
            }
            Timer::LostRetention { ns, agent } => {
                let due = self
                    .agent(&ns, &agent)
                    .and_then(|a| a.lost_at)
                    .is_some_and(|at| at.saturating_add(self.config.lost_retention_ms) <= now);
                if due {
                    self.remove_agent(now, &ns, &agent, "was forgotten after being lost");
                }
            }
            Timer::SyncDeadline { ns, id } => {
                let release =
                    self.namespaces.get_mut(&ns).and_then(|n| n.sync_points.get_mut(&id)).and_then(|p| p.expire(now));
                if let Some(release) = release {
                    self.release(now, &ns, &id, release);
                }
                self.reclaim_if_empty(&ns);
            }
            Timer::AckDeadline { ns, agent } => self.ack_deadline(now, &ns, &agent),
            Timer::VoteDeadline { ns, id } => {
                if let Some(decision) = self.votes.expire(now, &ns, &id, &self.config.limits) {
                    self.vote_decided(now, decision);
                }
            }
            Timer::VoteRetention { ns, id } => {
                if self.votes.retire(now, &ns, &id, self.config.sync_retention_ms) {
                    self.vote_removed(&ns, id);
                }
            }
            Timer::Collective { ns, id } => {
                let key = (ns, id);
                if let Some(e) = self.collectives.get_mut(&key).map(|c| c.timed_out(now, Vec::new())) {
                    self.collective_finish(&key, Err(e));
                }
            }
            Timer::Request(token) => {
                if let Some(p) = self.requests.expire(token, now) {
                    let waited_ms = now.saturating_sub(p.sent_at);
                    let e = CoreError::RequestTimeout {
                        topic: p.topic.to_string(),
                        responder: p.responder.to_string(),
                        waited_ms,
                    };
                    self.answer_requester(&p, Reply::Error(e));
                }
            }
            Timer::Breaker { ns, agent } => {
                let quiet_trial = self.agent(&ns, &agent).is_some_and(|a| {
                    a.breaker.state() == BreakerState::HalfOpen && a.unacked.is_empty() && a.outbox.stats().queued == 0
                });
                let transition = self.agent_mut(&ns, &agent).and_then(|a| {
                    if quiet_trial && a.breaker.next_deadline().is_some_and(|d| d <= now) {
                        // Nothing was there to probe it with: give it the benefit of the doubt
                        // rather than reopening an idle agent forever.
                        a.breaker.reset(now)
                    } else {
                        a.breaker.poll(now)
                    }
                });
                if let Some(t) = transition {
                    self.breaker_moved(&ns, &agent, t);
                }
            }
            Timer::HealthSample => {
                let counts = self.observe_health(now);
                self.history.sample(now, counts);
                self.arm_health_sample();
                // Health moves with time too (a silent agent turns stuck): look at the facts.
                self.system_facts_changed();
                self.publish_system_facts(now, true);
            }
            Timer::ContextExpiry { ns, key } => self.context_expired(now, &ns, &key),
            Timer::TaskDeadline { ns, id } => self.task_deadline(now, &ns, &id),
            Timer::TraceWait { origin } => self.trace_wait_over(now, origin),
            Timer::TraceRetention => self.trace_retention(now),
            Timer::RoundDeadline { ns, series } => self.round_deadline(now, &ns, &series),
            Timer::RoundTick { ns, series } => self.round_tick(now, &ns, &series),
            Timer::TickerIdle { ns, id } => self.ticker_idle(now, (ns, id)),
            Timer::BufferDue { ns, id } => self.buffer_due(now, (ns, id)),
            Timer::HistoryAge { ns, topic } => self.history_expire(now, ns, topic),
            Timer::SystemStale(name) => self.system_stale_timer(now, &name),

            Timer::Commands => {
                for finished in self.control.expire(now) {
                    self.command_done(finished);
                }
                self.arm_commands();
            }
            Timer::SyncRetention { ns, id } => {
                let Some(n) = self.namespaces.get_mut(&ns) else {
                    return;
                };
                let due = n
                    .sync_points
                    .get(&id)
                    .and_then(|p| p.finished_at())
                    .is_some_and(|at| at.saturating_add(self.config.sync_retention_ms) <= now);
                if due {
                    n.sync_points.remove(&id);
                    n.finished.retain(|f| *f != id);
                    self.touch(Touched::SyncPointRemoved(ns.clone(), id));
                    self.reclaim_if_empty(&ns);
                }
            }
        }
    }

    /// The lease ran out: the agent is `lost`, its subscriptions end, barriers needing it fail.
    fn lose_agent(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>) {
        let Some(n) = self.namespaces.get_mut(ns) else {
            return;
        };
        let Some(a) = n.agents.get_mut(agent) else {
            return;
        };
        let previous = a.status;
        let conn = a.conn();
        a.session = None;
        a.status = AgentStatus::Lost;
        a.lost_at = Some(now);
        self.counters.dropped += a.outbox.end_session();
        a.unacked.clear();
        let watches = std::mem::take(&mut a.watches);
        for w in &watches {
            n.index_watch(agent, w, false);
        }
        n.routes.clear();
        if let Some(conn) = conn {
            self.forget_conn(conn);
            let cause = SessionEnd::LeaseExpired { lease_ms: self.config.lease_ms() };
            self.outputs
                .push_back(Output::Close(conn, Some(CoreError::SessionEnded { agent: agent.to_string(), cause })));
        }
        let retention_ends = now.saturating_add(self.config.lost_retention_ms);
        self.timers.set(Timer::LostRetention { ns: ns.clone(), agent: agent.clone() }, retention_ends);
        self.touch(Touched::Agent(ns.clone(), agent.clone()));
        self.notices.push(Notice::AgentLost { namespace: ns.clone(), agent: agent.clone() });
        self.registry_event(ns, agent, RegistryEventKind::Lost, Some(previous));
        self.participant_gone(now, ns, agent, "lost its lease");
        self.voter_gone(now, ns, agent);
        self.systems_agent_lost(now, ns, agent);
        self.requests_gone(ns, agent, "lost its lease");
        self.collectives_gone(ns, agent, "lost its lease");
        self.groups_gone(ns, agent, "lost");
        self.context_agent_gone(ns, agent);
        self.tasks_agent_gone(now, ns, agent, "lost its lease");
        self.traces_agent_gone(ns, agent);
        self.rounds_agent_gone(now, ns, agent, "lost its lease");
        self.history_agent_gone(ns, agent);
        for finished in self.control.agent_gone(now, ns, agent, "its lease was lost") {
            self.command_done(finished);
        }
    }

    /// The agent leaves the registry for good (deregistered, or forgotten after being lost).
    fn remove_agent(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, why: &str) {
        let left = Notice::AgentLeft { namespace: ns.clone(), agent: agent.clone(), why: why.to_owned() };
        self.notices.push(left);
        self.registry_event(ns, agent, RegistryEventKind::Left, None);
        let Some(n) = self.namespaces.get_mut(ns) else {
            return;
        };
        let Some(a) = n.agents.remove(agent) else {
            return;
        };
        self.touch(Touched::AgentRemoved(ns.clone(), agent.clone()));
        self.cancel_agent_timers(ns, agent);
        let n = self.namespaces.get_mut(ns).expect("present");
        for w in &a.watches {
            n.index_watch(agent, w, false);
        }
        n.routes.clear();
        let watchers = n.watchers_of(&a);
        self.push_to_watchers(ns, watchers, |outbox| outbox.push_state_removed(agent, a.state_version));
        self.participant_gone(now, ns, agent, why);
        self.voter_gone(now, ns, agent);
        self.requests_gone(ns, agent, why);
        self.collectives_gone(ns, agent, why);
        self.groups_gone(ns, agent, "left");
        self.context_agent_gone(ns, agent);
        self.tasks_agent_gone(now, ns, agent, why);
        self.traces_agent_gone(ns, agent);
        self.rounds_agent_gone(now, ns, agent, why);
        self.history_agent_gone(ns, agent);
        self.control.forget_agent(ns, agent);
        for finished in self.control.agent_gone(now, ns, agent, why) {
            self.command_done(finished);
        }
        self.reclaim_if_empty(ns);
    }

    /// Forgets every timer of an agent that is gone: none keeps its ids alive.
    fn cancel_agent_timers(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        let (ns, agent) = (ns.clone(), agent.clone());
        for timer in [
            Timer::Lease { ns: ns.clone(), agent: agent.clone() },
            Timer::LostRetention { ns: ns.clone(), agent: agent.clone() },
            Timer::AckDeadline { ns: ns.clone(), agent: agent.clone() },
            Timer::Breaker { ns, agent },
        ] {
            self.timers.cancel(&timer);
        }
    }

    /// Forgets a namespace that holds nothing any more: no agents (live or lost), no sync points
    /// (open or retained), no registry watchers. What made it is gone, so it no longer counts
    /// towards `limits.max_namespaces`; using its name again creates it afresh.
    fn reclaim_if_empty(&mut self, ns: &str) {
        if self.namespaces.get(ns).is_some_and(Namespace::is_empty) {
            self.namespaces.remove(ns);
        }
    }

    fn participant_gone(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, why: &str) {
        let Some(n) = self.namespaces.get_mut(ns) else {
            return;
        };
        let mut releases = Vec::new();
        for (id, point) in n.sync_points.iter_mut() {
            if let Some(release) = point.participant_gone(now, agent, why) {
                releases.push((id.clone(), release));
            }
        }
        // Released in id order, not the table's: the same inputs give the same frames.
        releases.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (id, release) in releases {
            self.release(now, ns, &id, release);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Routing

    /// Routes a message published on `topic_name`, once the topic is found valid.
    fn publish(
        &mut self,
        ns: &Arc<str>,
        publisher: &Arc<str>,
        topic_name: &str,
        payload: Bytes,
        content_type: &str,
    ) -> Result<(), CoreError> {
        topic::validate_topic(topic_name, self.config.limits.max_topic_len)?;
        self.publish_enveloped(ns, publisher, topic_name, payload, content_type, None)
    }

    /// Routes a message on a topic already found valid (by [`Engine::publish`]; the intake checks
    /// a topic before it looks at the record, and its targets are valid by construction);
    /// `envelope`: what the intake stamped on it (see `engine::intake`).
    fn publish_enveloped(
        &mut self,
        ns: &Arc<str>,
        publisher: &Arc<str>,
        topic_name: &str,
        payload: Bytes,
        content_type: &str,
        envelope: Option<crate::intake::Envelope>,
    ) -> Result<(), CoreError> {
        let limits = &self.config.limits;
        check_payload(limits, payload.len(), content_type)?;
        let mut message = self.history_message(ns, publisher, topic_name, payload, content_type)?;
        if let Some(envelope) = envelope {
            // On a retained topic the kept copy goes without the envelope (replays do not carry it).
            let mut m = Message::new(topic_name, message.payload.clone(), content_type, publisher.clone());
            (m.topic_seq, m.time, m.intake) = (message.topic_seq, message.time, Some(Box::new(envelope)));
            message = Arc::new(m);
        }
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let subscribers = n.route(topic_name);
        self.counters.published += 1;
        for sub in subscribers.iter() {
            let Some(agent) = n.agents.get_mut(sub) else {
                continue;
            };
            // A replay covering the topic hands this message out from the log, after what it
            // replays: queued here too, it would come twice (see `engine::history`).
            if !self.replays.is_empty()
                && self.replays.get(&(ns.clone(), sub.clone())).is_some_and(|c| c.covers(topic_name))
            {
                continue;
            }
            if agent.breaker.is_open() {
                // Isolated: counted as missed, and reported as a gap once it recovers.
                agent.outbox.drop_routed();
                self.counters.dropped += 1;
                continue;
            }
            match agent.outbox.push_message(message.clone()) {
                Enqueued::Queued => self.counters.routed += 1,
                Enqueued::DroppedOldest => {
                    self.counters.routed += 1;
                    self.counters.dropped += 1;
                }
                Enqueued::Overflow => {
                    self.counters.dropped += 1;
                    let capacity = self.config.queue_capacity;
                    if let Some(conn) = agent.session.as_mut().and_then(|s| s.conn.take()) {
                        self.counters.dropped += agent.outbox.discard_messages();
                        // Not `forget_conn`: `n` borrows the namespaces.
                        self.shared.leave(conn);
                        self.conns.remove(&conn);
                        let err = CoreError::SlowConsumer { agent: sub.to_string(), capacity };
                        self.notices.push(Notice::SlowConsumer { namespace: ns.clone(), agent: sub.clone(), capacity });
                        self.outputs.push_back(Output::Close(conn, Some(err)));
                    }
                    continue;
                }
            }
            if let Some(conn) = agent.announce() {
                self.outputs.push_back(Output::Ready(conn));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Request/reply (the rules are in crate::request)

    /// Hands `asked` (from its publisher) to the responder whose turn it is; the requester's reply
    /// (`request_id`) comes when it answers, or when the request fails.
    fn agent_request(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        request_id: u64,
        asked: Message,
        timeout_ms: u64,
    ) -> Result<(), CoreError> {
        let limits = &self.config.limits;
        if request_id == 0 {
            return Err(CoreError::invalid("agent request", "needs a request_id: the answer comes back as its reply"));
        }
        topic::validate_topic(&asked.topic, limits.max_topic_len)?;
        check_payload(limits, asked.payload.len(), &asked.content_type)?;
        let timeout_ms =
            request::timeout(timeout_ms, self.config.default_request_timeout_ms, limits.max_request_timeout_ms)?;
        let requester = &asked.publisher;
        self.requests.check_room(ns, requester, limits)?;
        let control = &self.control;
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let interested = n.route(&asked.topic);
        let free = interested.iter().filter(|id| {
            *id != requester
                && n.agents.get(*id).is_some_and(|a| a.is_live() && !a.breaker.is_open())
                && !control.is_paused(ns, id)
        });
        let responder = request::choose(free, n.last_responder.as_deref())
            .ok_or_else(|| CoreError::NoResponders { topic: asked.topic.to_string() })?;
        n.last_responder = Some(responder.clone());
        let deadline = now.saturating_add(timeout_ms);
        let token = self.requests.open(PendingRequest {
            ns: ns.clone(),
            requester: requester.clone(),
            request_id,
            responder: responder.clone(),
            topic: asked.topic.clone(),
            sent_at: now,
            deadline,
            orphaned: false,
        });
        self.timers.set(Timer::Request(token), deadline);
        let frame = Frame::IncomingRequest {
            token,
            topic: asked.topic.to_string(),
            payload: asked.payload,
            content_type: asked.content_type.to_string(),
            requester: requester.to_string(),
            deadline,
        };
        self.send_fenced(ns, &responder, frame);
        Ok(())
    }

    /// `responder`'s answer to the request `token` (an error text refuses it).
    fn respond(
        &mut self,
        ns: &Arc<str>,
        responder: &Arc<str>,
        token: Token,
        payload: Bytes,
        content_type: &str,
        error: String,
    ) -> Result<(), CoreError> {
        // Checked before the request is taken: an answer too large can be sent again, smaller.
        check_payload(&self.config.limits, payload.len().max(error.len()), content_type)?;
        let p = self.requests.answer(ns, responder, token)?;
        self.timers.cancel(&Timer::Request(token));
        let reply = if error.is_empty() {
            Reply::Response { payload, content_type: content_type.to_owned(), responder: responder.to_string() }
        } else {
            let (topic, responder) = (p.topic.to_string(), responder.to_string());
            Reply::Error(CoreError::RequestRefused { topic, responder, message: error })
        };
        self.answer_requester(&p, reply);
        Ok(())
    }

    /// Ends a request for its requester, unless the requester went away (then nobody is told).
    fn answer_requester(&mut self, p: &PendingRequest, reply: Reply) {
        if !p.orphaned {
            self.reply(&p.ns, &p.requester, p.request_id, reply);
        }
    }

    /// `agent` left or was lost (`why`): the requests it was to answer fail at once, and nobody
    /// waits for the answers to its own any more.
    fn requests_gone(&mut self, ns: &Arc<str>, agent: &Arc<str>, why: &str) {
        self.requests.requester_gone(ns, agent);
        for (token, p) in self.requests.responder_gone(ns, agent) {
            self.timers.cancel(&Timer::Request(token));
            let e = CoreError::RequestAborted {
                topic: p.topic.to_string(),
                responder: agent.to_string(),
                why: why.to_owned(),
            };
            self.answer_requester(&p, Reply::Error(e));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Collectives (the rules are in crate::collective; the arrays move in the shell)

    /// Call `origin` joins a collective; an error refuses the call alone.
    fn collective_join(&mut self, now: Time, origin: u64, join: &CollectiveJoin) -> Result<(), CoreError> {
        let limits = &self.config.limits;
        join.validate(limits)?;
        let (ns, agent) = self.live_caller(&join.namespace, &join.agent_id, &join.resume_token, "collective call")?;
        let n = self.namespaces.get(&ns).expect("the caller's namespace");
        let limits = &self.config.limits;
        let key = (ns.clone(), Arc::from(join.collective_id.as_str()));
        if self.collectives.get_mut(&key).is_none() {
            if self.collectives.count_in(&ns) >= limits.max_open_collectives {
                return Err(CoreError::Limit {
                    what: "open collectives in the namespace",
                    limit: limits.max_open_collectives as u64,
                    hint: "finish or fail some first (limits.max_open_collectives)",
                });
            }
            let groups = &self.groups;
            let members = Collective::resolve(
                &join.group,
                |role| n.agents.values().filter(|a| a.is_live() && &*a.role == role).map(|a| a.id.clone()).collect(),
                |id| groups.members(&(ns.clone(), id.into())),
            );
            let timeout = match join.timeout_ms {
                0 => self.config.default_sync_timeout_ms,
                t => t,
            };
            let deadline = now.saturating_add(timeout);
            let serial = self.collectives.next_serial();
            self.collectives.insert(key.clone(), Collective::new(join, serial, members, agent.clone(), now, deadline));
            self.timers.set(Timer::Collective { ns: key.0.clone(), id: key.1.clone() }, deadline);
        }
        let c = self.collectives.get_mut(&key).expect("inserted above");
        match c.join(&agent, origin, join) {
            Joined::Waiting => self.collectives.joined(origin, key),
            Joined::Start(members) => {
                let (serial, spec) = (c.serial, c.spec);
                let published = match &c.group {
                    crate::collective::Group::Replica(id) => self.groups.checksum(&(ns.clone(), id.as_str().into())),
                    _ => None,
                };
                let (reference, diverged) = replica_group::diverged(&c.members, &c.checksums, published);
                self.collectives.joined(origin, key.clone());
                let start = CollectiveEvent::Start {
                    namespace: ns,
                    collective_id: key.1,
                    serial,
                    spec,
                    members,
                    diverged,
                    reference,
                };
                self.outputs.push_back(Output::Collective(start));
            }
            Joined::Refused(e) => {
                // A collective this call created and nobody joined is not kept for it.
                if c.origins().is_empty() {
                    self.collective_finish(&key, Err(e.clone()));
                }
                return Err(e);
            }
            Joined::Failed(e) => {
                self.collective_finish(&key, Err(e.clone()));
                return Err(e);
            }
        }
        Ok(())
    }

    /// The exchange could not carry on with call `origin`: its collective fails for everyone.
    fn collective_fault(&mut self, origin: u64, reason: String) {
        let Some(key) = self.collectives.key_of(origin).cloned() else {
            return; // finished already: the outcome was given
        };
        let c = self.collectives.get_mut(&key).expect("indexed calls belong to open collectives");
        let Some(e) = c.member_of(origin).cloned().and_then(|agent| c.member_gone(&agent, &reason)) else {
            return;
        };
        self.collective_finish(&key, Err(e));
    }

    /// Ends a collective the same way for every call that joined it.
    fn collective_finish(&mut self, key: &crate::collective::Key, result: Result<(), CoreError>) {
        self.timers.cancel(&Timer::Collective { ns: key.0.clone(), id: key.1.clone() });
        let completed = result.is_ok();
        if let Some(event) = self.collectives.finish(key, result) {
            if completed {
                self.counters.collectives_completed += 1;
            } else {
                self.counters.collectives_failed += 1;
            }
            self.outputs.push_back(Output::Collective(event));
        }
    }

    /// `agent` left or was lost (`why`): the collectives it is a member of fail at once.
    fn collectives_gone(&mut self, ns: &Arc<str>, agent: &Arc<str>, why: &str) {
        for (key, e) in self.collectives.member_gone(ns, agent, why) {
            self.collective_finish(&key, Err(e));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Replica groups (the rules are in crate::replica_group; the blobs move in the shell)

    /// `agent` joins a group; the group's event goes out if it is new to it.
    fn join_group(&mut self, ns: &Arc<str>, agent: &Arc<str>, group_id: String) -> Result<GroupView, CoreError> {
        let (view, event) = self.groups.join((ns.clone(), group_id.as_str().into()), agent, &self.config.limits)?;
        self.group_counted(ns);
        if let Some(e) = event {
            self.group_event(ns, e);
        }
        Ok(view)
    }

    /// Keeps a namespace's count of groups (it holds the namespace in use) and forgets the
    /// namespace once it holds nothing.
    fn group_counted(&mut self, ns: &Arc<str>) {
        let count = self.groups.count_in(ns);
        if let Some(n) = self.namespaces.get_mut(ns) {
            n.groups = count;
        }
        self.reclaim_if_empty(ns);
    }

    /// Publishes a group's event on its topic, as an ordinary message: the agents interested in
    /// it get it (members that want the events subscribe; those that do not are not made to read
    /// and acknowledge them).
    fn group_event(&mut self, ns: &Arc<str>, e: replica_group::GroupEvent) {
        self.group_counted(ns);
        if !self.namespaces.contains_key(ns) {
            return;
        }
        let topic = replica_group::event_topic(&e.group);
        let publisher: Arc<str> = e.agent.as_str().into();
        let payload = Bytes::from(serde_json::to_vec(&e).expect("serializable"));
        // Small by construction (bounded members); a refusal is no reason to undo the change.
        let _ = self.publish(ns, &publisher, &topic, payload, "application/json");
    }

    /// `agent` left or was lost: it leaves its groups (and its publish in progress is abandoned).
    fn groups_gone(&mut self, ns: &Arc<str>, agent: &Arc<str>, event: &'static str) {
        for e in self.groups.member_gone(ns, agent, event) {
            self.group_event(ns, e);
        }
    }

    /// The live session `call` names (checked by its resume token), for calls beside the session.
    fn live_caller(
        &self,
        namespace: &str,
        agent_id: &str,
        token: &str,
        what: &'static str,
    ) -> Result<(Arc<str>, Arc<str>), CoreError> {
        let unknown = || CoreError::UnknownAgent { namespace: namespace.to_owned(), agent: agent_id.to_owned() };
        let ns = name::namespace_or_default(namespace)?;
        let (ns, n) = self.namespaces.get_key_value(ns).ok_or_else(unknown)?;
        let (agent, a) = n.agents.get_key_value(agent_id).ok_or_else(unknown)?;
        if !a.is_live() || !a.token_matches(token) {
            return Err(CoreError::invalid(
                what,
                format!(
                    "agent '{agent_id}' has no live session with this resume token; call with the token of the agent's current session"
                ),
            ));
        }
        Ok((ns.clone(), agent.clone()))
    }

    fn group_publish(&mut self, origin: u64, call: &crate::io::GroupCall, size: u64) -> Result<(), CoreError> {
        let (ns, agent) = self.live_caller(&call.namespace, &call.agent_id, &call.resume_token, "group state call")?;
        let key = (ns, Arc::from(call.group_id.as_str()));
        self.groups.begin_publish(&key, &agent, origin, size, &self.config.limits)
    }

    fn group_published(&mut self, now: Time, origin: u64, result: Result<String, String>) {
        let ns = self.groups.publishing_in(origin).cloned();
        let out = match self.groups.end_publish(now, origin, result) {
            Ok(((namespace, group_id), state, event)) => {
                self.group_event(&namespace, event);
                GroupOutput::Published { origin, namespace, group_id, state }
            }
            Err(error) => {
                // A failed publish may leave a group with nothing in it, which is forgotten.
                if let Some(ns) = ns {
                    self.group_counted(&ns);
                }
                GroupOutput::Refused { origin, error }
            }
        };
        self.outputs.push_back(Output::Group(out));
    }

    fn group_fetch(
        &self,
        call: &crate::io::GroupCall,
    ) -> Result<(Arc<str>, Arc<str>, replica_group::StateVersion), CoreError> {
        let (ns, agent) = self.live_caller(&call.namespace, &call.agent_id, &call.resume_token, "group state call")?;
        let key = (ns, Arc::from(call.group_id.as_str()));
        let state = self.groups.fetch(&key, &agent)?;
        Ok((key.0, key.1, state))
    }

    /// At start, before any input: group `group_id` of `namespace` has `state` as its current
    /// version (the shell keeps the bytes; members join again).
    pub fn restore_group(
        &mut self,
        namespace: &str,
        group_id: &str,
        state: replica_group::StateVersion,
    ) -> Result<(), CoreError> {
        let ns: Arc<str> = name::namespace_or_default(namespace)?.into();
        ReplicaGroups::validate_id(group_id, &self.config.limits)?;
        self.groups.restore((ns.clone(), group_id.into()), state);
        self.namespaces.entry(ns.clone()).or_default().groups = self.groups.count_in(&ns);
        Ok(())
    }

    /// The replica groups of `namespace`, in id order.
    pub fn list_groups(&self, namespace: &str) -> Result<Vec<GroupStatus>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        Ok(self.groups.in_namespace(ns).map(|(id, g)| ReplicaGroups::status(id, g)).collect())
    }

    // ---------------------------------------------------------------------------------------------
    // State

    fn update_state(&mut self, ns: &Arc<str>, owner: &Arc<str>, delta_json: &str) -> Result<u64, CoreError> {
        let limits = &self.config.limits;
        if delta_json.len() > limits.max_delta_bytes {
            return Err(CoreError::invalid(
                "state delta",
                format!("{} bytes; the limit is {}", delta_json.len(), limits.max_delta_bytes),
            ));
        }
        let delta: Value = serde_json::from_str(delta_json)
            .map_err(|e| CoreError::invalid("state delta", format!("not valid JSON: {e}")))?;
        if !delta.is_object() {
            return Err(CoreError::invalid(
                "state delta",
                "must be a JSON object (an RFC 7386 merge patch of the agent's state)",
            ));
        }
        let max_state = limits.max_state_bytes;
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let a = n.agents.get_mut(owner).expect("a session's agent exists");
        let mut next = a.state.clone();
        state::apply(&mut next, &delta);
        let size = state::json_len(&next);
        if size > max_state {
            return Err(CoreError::invalid(
                "state delta",
                format!("the state would be {size} bytes; the limit is {max_state} (limits.max_state_bytes)"),
            ));
        }
        a.state = next;
        a.state_version += 1;
        let version = a.state_version;
        self.counters.state_updates += 1;
        let watchers = n.watchers_of(&n.agents[owner]);
        self.touch(Touched::State(ns.clone(), owner.clone()));
        self.push_to_watchers(ns, watchers, |outbox| outbox.push_state_delta(owner, version, &delta));
        Ok(version)
    }

    fn set_status(&mut self, ns: &Arc<str>, agent: &Arc<str>, status: AgentStatus) -> Result<(), CoreError> {
        if status == AgentStatus::Lost {
            return Err(CoreError::invalid(
                "status",
                "`lost` is set by the server when a lease runs out, not by agents",
            ));
        }
        let held = self.control.is_paused(ns, agent);
        let a = self.agent_mut(ns, agent).expect("a session's agent exists");
        if held {
            // It stays `paused` until an operator resumes it; then it has what it asked for.
            a.status_when_resumed = Some(status);
            return Ok(());
        }
        let previous = a.status;
        if previous != status {
            a.status = status;
            self.touch(Touched::Agent(ns.clone(), agent.clone()));
            self.registry_event(ns, agent, RegistryEventKind::Status, Some(previous));
        }
        Ok(())
    }

    fn watch(&mut self, ns: &Arc<str>, watcher: &Arc<str>, target: WatchTarget) -> Result<(), CoreError> {
        match &target {
            WatchTarget::Agent(id) => name::validate("watched agent id", id)?,
            WatchTarget::Role(role) => name::validate("watched role", role)?,
            WatchTarget::All => {}
        }
        let max = self.config.limits.max_watches;
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let w = n.agents.get_mut(watcher).expect("a session's agent exists");
        let hint = "watch by role or all instead of many single agents";
        if !add_bounded(&mut w.watches, &target, max, "state watches per agent", hint)? {
            return Ok(());
        }
        n.index_watch(watcher, &target, true);
        let mut covered: Vec<Arc<str>> =
            n.agents.values().filter(|a| a.watched_by(&target)).map(|a| a.id.clone()).collect();
        covered.sort_unstable();
        let w = n.agents.get_mut(watcher).expect("present");
        for owner in &covered {
            w.outbox.push_state_snapshot(owner);
        }
        self.touch(Touched::Agent(ns.clone(), watcher.clone()));
        self.notify(ns, watcher);
        Ok(())
    }

    fn unwatch(&mut self, ns: &Arc<str>, watcher: &Arc<str>, target: &WatchTarget) -> Result<(), CoreError> {
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let w = n.agents.get_mut(watcher).expect("a session's agent exists");
        let Some(pos) = w.watches.iter().position(|t| t == target) else {
            return Err(CoreError::invalid("unwatch", format!("no such watch: {target:?}")));
        };
        w.watches.remove(pos);
        n.index_watch(watcher, target, false);
        let still = n.agents[watcher].watches.clone();
        let dropped: Vec<Arc<str>> = n
            .agents
            .values()
            .filter(|a| a.watched_by(target) && !still.iter().any(|t| a.watched_by(t)))
            .map(|a| a.id.clone())
            .collect();
        let w = n.agents.get_mut(watcher).expect("present");
        for owner in dropped {
            w.outbox.forget_state(&owner);
        }
        self.touch(Touched::Agent(ns.clone(), watcher.clone()));
        Ok(())
    }

    /// An agent (re)joined: whoever watches it gets its full state.
    fn resend_watched_states(&mut self, ns: &Arc<str>, owner: &Arc<str>) {
        let Some(n) = self.namespaces.get_mut(ns) else {
            return;
        };
        let Some(a) = n.agents.get(owner) else { return };
        let watchers = n.watchers_of(a);
        self.push_to_watchers(ns, watchers, |outbox| outbox.push_state_snapshot(owner));
    }

    /// Queues something for each of `watchers` and tells the shell they have frames.
    fn push_to_watchers(&mut self, ns: &Arc<str>, watchers: Vec<Arc<str>>, push: impl Fn(&mut Outbox)) {
        for watcher in watchers {
            if let Some(w) = self.agent_mut(ns, &watcher) {
                push(&mut w.outbox);
            }
            self.notify(ns, &watcher);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Sync points

    #[allow(clippy::too_many_arguments)]
    fn sync(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        waiter: Waiter,
        sync_id: String,
        (participants, quorum): (Participants, Option<u32>),
        timeout_ms: u64,
        payload: Bytes,
    ) -> Result<(), CoreError> {
        let limits = &self.config.limits;
        name::validate("sync id", &sync_id)?;
        participants.validate(limits)?;
        if payload.len() > limits.max_sync_payload_bytes {
            return Err(CoreError::invalid(
                "sync payload",
                format!("{} bytes; the limit is {}", payload.len(), limits.max_sync_payload_bytes),
            ));
        }
        let timeout_ms = match timeout_ms {
            0 => self.config.default_sync_timeout_ms,
            t if t > limits.max_sync_timeout_ms => {
                return Err(CoreError::invalid(
                    "sync timeout",
                    format!("{t} ms; the limit is {} ms", limits.max_sync_timeout_ms),
                ));
            }
            t => t,
        };
        let max_open = limits.max_open_sync_points;
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let id: Arc<str> = sync_id.as_str().into();
        let created = !n.sync_points.contains_key(&id);
        if created {
            if n.open_sync_points >= max_open {
                return Err(CoreError::Limit {
                    what: "open sync points",
                    limit: max_open as u64,
                    hint: "let waiting points complete or time out, or raise limits.max_open_sync_points",
                });
            }
            let required: std::collections::BTreeSet<Arc<str>> = match &participants {
                // The registry's ids where it has them: a retained point then holds no copies.
                Participants::Agents(ids) => ids
                    .iter()
                    .map(|s| {
                        n.agents.get_key_value(s.as_str()).map_or_else(|| Arc::from(s.as_str()), |(k, _)| k.clone())
                    })
                    .collect(),
                Participants::Count(_) => Default::default(),
                Participants::Role(role) => {
                    n.agents.values().filter(|a| a.is_live() && *a.role == **role).map(|a| a.id.clone()).collect()
                }
            };
            participants.validate_quorum(quorum, required.len())?;
            let point = SyncPoint::new(sync_id, participants.clone(), quorum, required, now, timeout_ms);
            n.sync_points.insert(id.clone(), Box::new(point));
            n.open_sync_points += 1;
        }
        let n = self.namespaces.get_mut(ns).expect("present");
        let point = n.sync_points.get_mut(&id).expect("present");
        let before = point.arrival_count();
        let (agent, request_id) = (waiter.agent.clone(), waiter.request_id);
        let agent = &agent;
        point.limit_outcome(self.config.limits.frame_bytes());
        let arrived = match point.arrive(now, waiter, payload, &participants, quorum) {
            Ok(arrived) => arrived,
            Err(e) => {
                // A refused first arrival (not a participant of the point it names) leaves nothing
                // behind, not even a timer: otherwise its definition would bind the real
                // participants.
                if created {
                    n.sync_points.remove(&id);
                    n.open_sync_points -= 1;
                }
                return Err(e);
            }
        };
        let new_arrival = point.arrival_count() > before;
        if created {
            let deadline = now.saturating_add(timeout_ms);
            self.timers.set(Timer::SyncDeadline { ns: ns.clone(), id: id.clone() }, deadline);
            self.touch(Touched::SyncPoint(ns.clone(), id.clone()));
        }
        if new_arrival {
            self.touch(Touched::Arrival(ns.clone(), id.clone(), agent.clone(), before as u32));
        }
        match arrived {
            Arrived::Waiting => {}
            Arrived::Released { waiters, outcome } => self.release(now, ns, &id, (waiters, Ok(outcome))),
            Arrived::AlreadyFinished(reply) => self.reply(ns, agent, request_id, reply),
        }
        Ok(())
    }

    /// A point finished: answer every waiter and start its retention.
    fn release(&mut self, now: Time, ns: &Arc<str>, id: &Arc<str>, (waiters, result): Release) {
        match &result {
            Ok(_) => self.counters.syncs_completed += 1,
            Err(_) => self.counters.syncs_failed += 1,
        }
        if let (Ok(_), Some(point)) = (&result, self.point(ns, id)) {
            self.counters.barrier_wait.record(now.saturating_sub(point.created_at()));
        }
        let ended = match &result {
            Ok(outcome) if outcome.forced => Some(("forced", outcome.late.iter().map(|a| a.to_string()).collect())),
            Ok(_) => None,
            Err(CoreError::SyncTimeout { missing, .. }) => Some(("timed_out", missing.clone())),
            Err(CoreError::SyncAborted { missing, .. }) => Some(("aborted", missing.clone())),
            Err(_) => Some(("failed", Vec::new())),
        };
        if let Some((outcome, mut missing)) = ended {
            let missing_count = missing.len();
            missing.truncate(MISSING_NAMED);
            let (namespace, sync_id) = (ns.clone(), id.clone());
            self.notices.push(Notice::SyncPointEnded { namespace, sync_id, outcome, missing, missing_count });
        }
        let max_retained = self.config.limits.max_retained_sync_points;
        self.touch(Touched::SyncPoint(ns.clone(), id.clone()));
        let mut forgotten = Vec::new();
        if let Some(n) = self.namespaces.get_mut(ns) {
            n.open_sync_points = n.open_sync_points.saturating_sub(1);
            n.finished.push_back(id.clone());
            while n.finished.len() > max_retained {
                if let Some(old) = n.finished.pop_front() {
                    n.sync_points.remove(&old);
                    forgotten.push(old);
                }
            }
        }
        // Finished: its deadline is of no use any more; its retention starts, unless it was
        // evicted at once (`max_retained_sync_points` of 0).
        self.timers.cancel(&Timer::SyncDeadline { ns: ns.clone(), id: id.clone() });
        if self.point(ns, id).is_some() {
            let retention_ends = now.saturating_add(self.config.sync_retention_ms);
            self.timers.set(Timer::SyncRetention { ns: ns.clone(), id: id.clone() }, retention_ends);
        }
        for old in forgotten {
            self.timers.cancel(&Timer::SyncRetention { ns: ns.clone(), id: old.clone() });
            self.touch(Touched::SyncPointRemoved(ns.clone(), old));
        }
        // A waiter restored from storage has no request to answer until it arrives again.
        for w in waiters.into_iter().filter(|w| w.request_id != 0) {
            let reply = match &result {
                Ok(outcome) => w.reply(outcome),
                Err(e) => Reply::Error(e.clone()),
            };
            self.reply(ns, &w.agent, w.request_id, reply);
        }
    }

    /// Releases every agent waiting at a point now, with what has arrived so far.
    fn force_complete(&mut self, now: Time, namespace: &str, sync_id: &str) -> Result<SyncStatus, CoreError> {
        let (ns, id) = self.sync_key(namespace, sync_id)?;
        let point = self.namespaces.get_mut(&ns).and_then(|n| n.sync_points.get_mut(&id)).expect("checked");
        let (waiters, outcome) = point.force_complete(now)?;
        let status = point.status();
        self.release(now, &ns, &id, (waiters, Ok(outcome)));
        Ok(status)
    }

    /// Removes every finished sync point of a namespace now; returns how many.
    fn cleanup_sync_points(&mut self, namespace: &str) -> Result<usize, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        let Some(n) = self.namespaces.get_mut(ns) else {
            return Ok(0);
        };
        let mut removed = Vec::new();
        n.sync_points.retain(|id, p| {
            if !p.is_waiting() {
                removed.push(id.clone());
            }
            p.is_waiting()
        });
        n.finished.clear();
        removed.sort_unstable();
        let ns = self.key(ns);
        for id in &removed {
            self.timers.cancel(&Timer::SyncRetention { ns: ns.clone(), id: id.clone() });
            self.touch(Touched::SyncPointRemoved(ns.clone(), id.clone()));
        }
        self.reclaim_if_empty(&ns);
        Ok(removed.len())
    }

    fn sync_key(&self, namespace: &str, sync_id: &str) -> Result<(Arc<str>, Arc<str>), CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        name::validate("sync id", sync_id)?;
        let unknown = || CoreError::UnknownSyncPoint { namespace: ns.to_owned(), sync_id: sync_id.to_owned() };
        let (ns_key, n) = self.namespaces.get_key_value(ns).ok_or_else(unknown)?;
        let (id, _) = n.sync_points.get_key_value(sync_id).ok_or_else(unknown)?;
        Ok((ns_key.clone(), id.clone()))
    }

    /// The point, looked up by keys the engine already holds (no name checks).
    fn point(&self, ns: &str, id: &str) -> Option<&SyncPoint> {
        self.namespaces.get(ns)?.sync_points.get(id).map(|p| &**p)
    }

    fn sync_point(&self, namespace: &str, sync_id: &str) -> Result<&SyncPoint, CoreError> {
        let (ns, id) = self.sync_key(namespace, sync_id)?;
        Ok(&self.namespaces[&ns].sync_points[&id])
    }

    // ---------------------------------------------------------------------------------------------
    // Votes: the rules are in `vote.rs`; here, the registry's facts, timers, replies and the topic.

    /// Opens a vote. `Ok(None)`: the opener waits for the outcome.
    fn open_vote(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        opener: &Arc<str>,
        request_id: u64,
        spec: vote::VoteSpec,
        wait: bool,
    ) -> Result<Option<Reply>, CoreError> {
        let limits = &self.config.limits;
        spec.validate(limits)?;
        let timeout_ms = if spec.timeout_ms == 0 { self.config.default_sync_timeout_ms } else { spec.timeout_ms };
        let n = self.namespaces.get(ns).expect("a session's namespace exists");
        let required = match &spec.participants {
            Participants::Agents(ids) => ids.iter().map(|s| Arc::from(s.as_str())).collect(),
            Participants::Count(_) => Default::default(),
            Participants::Role(role) => {
                n.agents.values().filter(|a| a.is_live() && *a.role == **role).map(|a| a.id.clone()).collect()
            }
        };
        let (id, question, topic): (Arc<str>, String, String) =
            (spec.vote_id.as_str().into(), spec.question.clone(), spec.topic.clone());
        let wait = wait.then_some(request_id);
        match self.votes.open(now, ns, opener, spec, timeout_ms, required, wait, limits)? {
            Opened::Answer(reply) => return Ok(Some(reply)),
            Opened::Reattached => return Ok(None),
            Opened::New => {
                if let Some(n) = self.namespaces.get_mut(ns) {
                    n.votes += 1;
                }
                self.timers.set(Timer::VoteDeadline { ns: ns.clone(), id: id.clone() }, now.saturating_add(timeout_ms));
                self.touch(Touched::Vote(ns.clone(), id.clone()));
                let detail = format!("question: {question}; outcome on '{topic}'");
                self.control.record(
                    AuditEntry::new(now, opener, "vote_opened", AuditOutcome::Ok).target(ns, &id).detail(detail),
                );
                // Nobody can vote (a role nobody holds): decided at once, with no decision.
                if let Some(decision) = self.votes.decide_if_complete(now, ns, &id, &self.config.limits) {
                    self.vote_decided(now, decision);
                }
            }
        }
        Ok(if wait.is_some() { None } else { Some(Reply::Ok) })
    }

    /// Casts a ballot. `Ok(None)`: the voter waits for the outcome.
    fn cast_ballot(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        request_id: u64,
        ballot: &vote::BallotRequest,
    ) -> Result<Option<Reply>, CoreError> {
        name::validate("vote id", &ballot.vote_id)?;
        let a = self.namespaces.get(ns).and_then(|n| n.agents.get(agent)).expect("a session's agent exists");
        let health = vote::health_weight(a.health.status(now, &self.config.health));
        let voter = VoterFacts { role: &a.role, metadata: &a.metadata, health };
        let watcher = Watcher { agent: agent.clone(), request_id };
        let cast = self.votes.cast(now, ns, watcher, ballot, voter, &self.config.limits)?;
        let id: Arc<str> = ballot.vote_id.as_str().into();
        match cast {
            Cast::Waiting { new_ballot } => {
                if let Some(position) = new_ballot {
                    self.touch(Touched::Ballot(ns.clone(), id, position));
                }
                Ok(None)
            }
            Cast::Decided { position, decision } => {
                self.touch(Touched::Ballot(ns.clone(), id, position));
                self.vote_decided(now, decision);
                Ok(None)
            }
            Cast::Finished(reply) => Ok(Some(reply)),
        }
    }

    /// A finished vote was forgotten: kept no more, and its namespace may hold nothing now.
    fn vote_removed(&mut self, ns: &Arc<str>, id: Arc<str>) {
        self.touch(Touched::VoteRemoved(ns.clone(), id));
        if let Some(n) = self.namespaces.get_mut(ns) {
            n.votes = n.votes.saturating_sub(1);
        }
        self.reclaim_if_empty(ns);
    }

    /// `agent` was lost or left: it is missing from the votes it did not vote in.
    fn voter_gone(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>) {
        for decision in self.votes.voter_gone(now, ns, agent, &self.config.limits) {
            self.vote_decided(now, decision);
        }
    }

    /// A vote was decided: answer everyone waiting with the one outcome, publish it once on its
    /// topic, keep it, audit it, and time its retention.
    fn vote_decided(&mut self, now: Time, d: Decision) {
        let Decision { namespace: ns, vote_id: id, watchers, outcome, topic, opener, evicted } = d;
        self.timers.cancel(&Timer::VoteDeadline { ns: ns.clone(), id: id.clone() });
        self.touch(Touched::Vote(ns.clone(), id.clone()));
        for old in evicted {
            self.timers.cancel(&Timer::VoteRetention { ns: ns.clone(), id: old.clone() });
            self.vote_removed(&ns, old);
        }
        if self.votes.get(&ns, &id).is_some() {
            let retention_ends = now.saturating_add(self.config.sync_retention_ms);
            self.timers.set(Timer::VoteRetention { ns: ns.clone(), id: id.clone() }, retention_ends);
        }
        if outcome.decided {
            self.counters.votes_decided += 1;
        } else {
            self.counters.votes_undecided += 1;
        }
        let summary = if outcome.decided {
            format!("decided '{}' ({} ballot(s), {} missing)", outcome.choice, outcome.ballots, outcome.missing)
        } else {
            format!("no decision: {}", outcome.reason)
        };
        self.control.record(
            AuditEntry::new(now, "lockstep", "vote_decided", AuditOutcome::Ok).target(&ns, &id).detail(summary),
        );
        for w in watchers.into_iter().filter(|w| w.request_id != 0) {
            self.reply(&ns, &w.agent, w.request_id, Reply::Vote(outcome.clone()));
        }
        if !topic.is_empty() && self.namespaces.contains_key(&ns) {
            let payload = Bytes::from(outcome.as_json().to_string());
            // Within the limits by construction (bounded tally and ballots); a refusal is no
            // reason to undo a decision, and every voter has the outcome already.
            let _ = self.publish(&ns, &opener, &topic, payload, "application/json");
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Registry watching

    fn watch_registry(&mut self, conn: ConnId, namespace: &str) -> Result<(), CoreError> {
        if self.conns.contains_key(&conn) {
            // The shell names each stream once; a second role would lose the first's accounting.
            return Err(CoreError::invalid("registry watch", "this stream already carries a session or a watch"));
        }
        let ns = name::namespace_or_default(namespace)?;
        let limits = &self.config.limits;
        if self.registry_watchers >= limits.max_registry_watchers {
            return Err(CoreError::Limit {
                what: "registry watchers",
                limit: limits.max_registry_watchers as u64,
                hint: "close registry watches that are no longer read, or raise limits.max_registry_watchers",
            });
        }
        let watching = self.namespaces.get(ns).map_or(0, |n| n.registry_watchers.len());
        if watching >= limits.max_registry_watchers_per_namespace {
            return Err(CoreError::Limit {
                what: "registry watchers per namespace",
                limit: limits.max_registry_watchers_per_namespace as u64,
                hint: "share one registry watch, or raise limits.max_registry_watchers_per_namespace",
            });
        }
        // A namespace nobody uses yet is held for the watcher (and forgotten when it goes); it
        // does not count towards `limits.max_namespaces`.
        let ns_key: Arc<str> = self.key(ns);
        let n = self.namespaces.entry(ns_key.clone()).or_default();
        let mut agents: Vec<&Agent> = n.agents.values().collect();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        let snapshot = agents
            .into_iter()
            .map(|a| RegistryEvent { kind: RegistryEventKind::Snapshot, agent: a.view(ns), previous_status: None })
            .collect();
        n.registry_watchers.push(conn);
        self.registry_watchers += 1;
        let mut feed = RegistryFeed::new(ns_key, snapshot);
        feed.notified = !feed.is_empty();
        if feed.notified {
            self.outputs.push_back(Output::Ready(conn));
        }
        self.conns.insert(conn, ConnRole::RegistryWatcher(feed));
        Ok(())
    }

    fn registry_event(
        &mut self,
        ns: &Arc<str>,
        agent: &Arc<str>,
        kind: RegistryEventKind,
        previous: Option<AgentStatus>,
    ) {
        // Every registry event is a change of the facts `system.health` counts.
        self.system_facts_changed();
        let Some(n) = self.namespaces.get(ns) else {
            return;
        };
        if n.registry_watchers.is_empty() {
            return;
        }
        let Some(a) = n.agents.get(agent) else { return };
        // Built once, shared by every watcher's queue.
        let event = Arc::new(RegistryEvent { kind, agent: a.view(ns), previous_status: previous });
        let bytes = feed::event_bytes(&event);
        let mut too_slow = Vec::new();
        for conn in &n.registry_watchers {
            let Some(ConnRole::RegistryWatcher(feed)) = self.conns.get_mut(conn) else {
                continue;
            };
            if let Err(overflow) = feed.push(&event, bytes, &self.config.limits) {
                too_slow.push((*conn, overflow));
                continue;
            }
            if !feed.notified {
                feed.notified = true;
                self.outputs.push_back(Output::Ready(*conn));
            }
        }
        for (conn, overflow) in too_slow {
            self.disconnected(conn);
            let (what, limit) = match overflow {
                Overflow::Events(limit) => ("registry events queued for one watcher", limit),
                Overflow::Bytes(limit) => ("bytes of registry events queued for one watcher", limit),
            };
            let hint = "the watcher was too slow; watch again for a fresh snapshot";
            self.outputs.push_back(Output::Close(conn, Some(CoreError::Limit { what, limit: limit as u64, hint })));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Replies and readiness

    fn reply(&mut self, ns: &Arc<str>, agent: &Arc<str>, request_id: u64, reply: Reply) {
        self.send_fenced(ns, agent, Frame::Reply { request_id, reply });
    }

    /// Queues a frame for `agent` behind what is queued for it already (see [`Outbox::push_fenced`]);
    /// an agent with too many such frames waiting is disconnected instead.
    fn send_fenced(&mut self, ns: &Arc<str>, agent: &Arc<str>, frame: Frame) {
        let max = self.config.limits.max_control_backlog;
        let Some(a) = self.agent_mut(ns, agent) else {
            return;
        };
        if a.outbox.control_backlog() >= max {
            if let Some(conn) = a.session.as_mut().and_then(|s| s.conn.take()) {
                self.forget_conn(conn);
                let err = CoreError::Limit {
                    what: "replies queued for one agent",
                    limit: max as u64,
                    hint: "the agent stopped reading its session stream",
                };
                self.outputs.push_back(Output::Close(conn, Some(err)));
            }
            return;
        }
        a.outbox.push_fenced(frame);
        self.notify(ns, agent);
    }

    fn notify(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        if let Some(conn) = self.agent_mut(ns, agent).and_then(Agent::announce) {
            self.outputs.push_back(Output::Ready(conn));
        }
    }

    fn agent(&self, ns: &str, agent: &str) -> Option<&Agent> {
        self.namespaces.get(ns)?.agents.get(agent)
    }

    fn agent_mut(&mut self, ns: &str, agent: &str) -> Option<&mut Agent> {
        self.namespaces.get_mut(ns)?.agents.get_mut(agent)
    }

    // ---------------------------------------------------------------------------------------------
    // Circuit breakers: deliveries not acknowledged in time, or reported as failed, isolate an agent.

    /// The agent acknowledged every delivery up to `seq` (or, with `error`, failed the one at `seq`).
    fn acknowledged(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, seq: u64, error: Option<String>) {
        let capped = error.is_some() && self.isolation_capped(now, ns, agent);
        // Recorded here and put back below: the agent borrows the engine meanwhile.
        let mut ack_latency = self.counters.delivery_ack;
        let Some(a) = self.agent_mut(ns, agent) else { return };
        a.outbox.ack(seq);
        a.health.progress(now);
        let mut transitions = Vec::new();
        while let Some((_, sent)) = a.unacked.front().copied().filter(|(last, _)| *last <= seq) {
            a.unacked.pop_front();
            if error.is_none() {
                ack_latency.record(now.saturating_sub(sent));
                a.health.delivery_succeeded(now, now.saturating_sub(sent));
                transitions.extend(a.breaker.record_success(now));
            }
        }
        if error.is_some() {
            a.health.delivery_failed(now);
            transitions.extend(a.breaker.record_failure_unless_capped(now, FailureKind::AgentError, capped));
        }
        self.counters.delivery_ack = ack_latency;
        for t in transitions {
            self.breaker_moved(ns, agent, t);
        }
        // The acknowledgement made room in flight for messages that waited for it.
        self.notify(ns, agent);
    }

    /// Whether a failure of `agent` must not open its breaker now: it would, but the namespace
    /// already has as many live agents isolated (breakers open or half-open) as
    /// `breaker_max_isolated_percent` allows (at least one). When most agents seem to fail at once,
    /// the likelier cause is a slow machine or network rather than that many faulty agents, and
    /// isolating them all would stop the whole namespace (the rule of Envoy's maximum ejection
    /// percentage). The failures are still counted, in the agent's health too.
    fn isolation_capped(&self, now: Time, ns: &Arc<str>, agent: &Arc<str>) -> bool {
        let Some(n) = self.namespaces.get(ns) else { return false };
        if !n.agents.get(agent).is_some_and(|a| a.breaker.would_open(now)) {
            return false;
        }
        let (mut live, mut isolated) = (0usize, 0usize);
        for a in n.agents.values().filter(|a| a.session.is_some()) {
            live += 1;
            isolated += usize::from(a.breaker.state() != BreakerState::Closed);
        }
        let allowed = (live * self.config.breaker_max_isolated_percent as usize / 100).max(1);
        isolated >= allowed
    }

    /// Batches past their deadline count as failures; the timer moves to the next one.
    fn ack_deadline(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>) {
        let capped = self.isolation_capped(now, ns, agent);
        let Some(a) = self.agent_mut(ns, agent) else { return };
        a.ack_timer = false;
        let timeout = a.breaker.settings().timeout_per_agent_ms;
        let mut transitions = Vec::new();
        while a.unacked.front().is_some_and(|(_, sent)| sent.saturating_add(timeout) <= now) {
            a.unacked.pop_front();
            a.health.delivery_failed(now);
            transitions.extend(a.breaker.record_failure_unless_capped(now, FailureKind::AckTimeout, capped));
        }
        if let Some((_, sent)) = a.unacked.front() {
            a.ack_timer = true;
            let at = sent.saturating_add(timeout);
            self.timers.set(Timer::AckDeadline { ns: ns.clone(), agent: agent.clone() }, at);
        }
        for t in transitions {
            self.breaker_moved(ns, agent, t);
        }
    }

    /// A breaker changed state: hold or release the agent's deliveries, arm its next deadline, and
    /// tell registry watchers.
    fn breaker_moved(&mut self, ns: &Arc<str>, agent: &Arc<str>, t: Transition) {
        self.counters.breaker_transitions += 1;
        let why = t.reason.to_string();
        self.notices.push(Notice::BreakerMoved {
            namespace: ns.clone(),
            agent: agent.clone(),
            from: t.from,
            to: t.to,
            why,
        });
        if t.to == BreakerState::Open {
            self.counters.breakers_opened += 1;
        }
        let paused = self.control.is_paused(ns, agent);
        let Some(a) = self.agent_mut(ns, agent) else { return };
        a.outbox.set_held(paused || t.to == BreakerState::Open);
        let timer = Timer::Breaker { ns: ns.clone(), agent: agent.clone() };
        match a.breaker.next_deadline() {
            Some(at) => self.timers.set(timer, at),
            None => self.timers.cancel(&timer),
        }
        self.registry_event(ns, agent, RegistryEventKind::Breaker, None);
        self.notify(ns, agent);
    }

    /// Closes an agent's breaker and forgets its failures (an operator's `restart`).
    fn restart_agent(&mut self, now: Time, actor: &str, namespace: &str, agent: &str) -> Result<String, CoreError> {
        let ns = self.key(name::namespace_or_default(namespace)?);
        let id: Arc<str> = agent.into();
        let Some(a) = self.agent_mut(&ns, &id) else {
            return Err(CoreError::UnknownAgent { namespace: ns.to_string(), agent: agent.to_owned() });
        };
        a.unacked.clear();
        let before = a.breaker.state();
        let transition = a.breaker.reset(now);
        if let Some(t) = transition {
            self.breaker_moved(&ns, &id, t);
        }
        let detail = format!("agent '{agent}' restarted: breaker {} → closed, failures forgotten", before.as_str());
        self.control
            .record(AuditEntry::new(now, actor, "restart_agent", AuditOutcome::Ok).target(&ns, agent).detail(&detail));
        Ok(detail)
    }

    // ---------------------------------------------------------------------------------------------
    // Health: per agent, and the share of healthy agents over time.

    fn arm_health_sample(&mut self) {
        self.timers.set(Timer::HealthSample, self.history.next_deadline());
    }

    /// Every agent's health, and the system's, at `now` (a read: what the agents' queues and
    /// breakers look like now is weighed in without being recorded).
    pub fn health(&self, now: Time) -> HealthOverview {
        let mut counts = HealthCounts::default();
        let mut agents = Vec::new();
        for (ns, n) in &self.namespaces {
            for a in n.agents.values() {
                let mut health = a.health.clone();
                self.observe(now, a, &mut health);
                let report = health.report(now, &self.config.health);
                counts.add(report.status);
                agents.push((ns.to_string(), a.id.to_string(), a.role.to_string(), report));
            }
        }
        agents.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        HealthOverview { agents, counts, history: self.history.samples().cloned().collect() }
    }

    /// Records what every agent's queue and breaker look like at `now` in its health figures, and
    /// returns how many agents are in each health status (the periodic health sample).
    fn observe_health(&mut self, now: Time) -> HealthCounts {
        let mut counts = HealthCounts::default();
        for (ns, id) in self.all_agents() {
            let Some(a) = self.agent(&ns, &id) else { continue };
            let mut health = a.health.clone();
            self.observe(now, a, &mut health);
            counts.add(health.report(now, &self.config.health).status);
            self.agent_mut(&ns, &id).expect("listed").health = health;
        }
        counts
    }

    /// Feeds an agent's queue and breaker, as they are at `now`, into `health`.
    fn observe(&self, now: Time, a: &Agent, health: &mut crate::health::AgentHealth) {
        let stats = a.outbox.stats();
        health.observe_queue(
            now,
            QueueObservation {
                depth: stats.queued as u64,
                capacity: self.config.queue_capacity as u64,
                high_water: stats.high_water as u64,
                dropped: stats.dropped,
                pending: stats.queued as u64 + a.unacked.len() as u64,
            },
        );
        health.observe_breaker(a.breaker.state(), a.breaker.since());
    }

    // ---------------------------------------------------------------------------------------------
    // Control plane: operators pause, resume, stop everyone, and command agents.

    fn command_done(&mut self, finished: Finished) {
        let outcome = AdminOutcome::Command { command_id: finished.command.id.0, outcome: finished.outcome };
        self.outputs.push_back(Output::AdminDone { origin: finished.command.origin, result: Ok(outcome) });
        self.arm_commands();
    }

    /// One timer for every pending command: at the earliest deadline, or none when nothing waits.
    fn arm_commands(&mut self) {
        match self.control.next_deadline() {
            Some(at) => self.timers.set(Timer::Commands, at),
            None => self.timers.cancel(&Timer::Commands),
        }
    }

    /// Carries out an operator's action; `None` when its answer comes later (a command sent).
    fn admin(
        &mut self,
        now: Time,
        origin: u64,
        actor: &str,
        action: AdminAction,
    ) -> Option<Result<AdminOutcome, CoreError>> {
        use AdminAction as A;
        Some(match action {
            A::PauseAgent { namespace, agent_id } => {
                self.pause_agent(now, actor, &namespace, &agent_id).map(AdminOutcome::Done)
            }
            A::ResumeAgent { namespace, agent_id } => {
                self.resume_agent(now, actor, &namespace, &agent_id).map(AdminOutcome::Done)
            }
            A::RestartAgent { namespace, agent_id } => {
                self.restart_agent(now, actor, &namespace, &agent_id).map(AdminOutcome::Done)
            }
            A::EmergencyStop { reason } => Ok(AdminOutcome::Done(self.emergency_stop(now, actor, &reason))),
            A::ResumeAll => Ok(AdminOutcome::Done(self.resume_all(now, actor))),
            A::SendCommand { namespace, agent_id, command, params_json, timeout_ms } => {
                match self.send_command(now, origin, actor, &namespace, &agent_id, &command, &params_json, timeout_ms) {
                    Ok(_) => return None,
                    Err(e) => Err(e),
                }
            }
            A::ForceCompleteSync { namespace, sync_id } => {
                let result = self.force_complete(now, &namespace, &sync_id);
                let detail = match &result {
                    Ok(s) => format!("released {} waiting agent(s)", s.arrived.len()),
                    Err(e) => e.to_string(),
                };
                self.audit_action(now, actor, "force_complete_sync", &namespace, &sync_id, result.is_ok(), detail);
                result.map(AdminOutcome::SyncForced)
            }
            A::CreateTicker(_) | A::CreateBuffer(_) | A::RemoveStream { .. } => {
                self.streams_admin(now, actor, action).map(AdminOutcome::Done)
            }
            A::ReplaceIntake { rules_json } => self.replace_intake(now, actor, &rules_json).map(AdminOutcome::Done),
            A::CleanupSyncPoints { namespace } => {
                let result = self.cleanup_sync_points(&namespace);
                let detail = match &result {
                    Ok(n) => format!("removed {n} finished sync point(s)"),
                    Err(e) => e.to_string(),
                };
                self.audit_action(now, actor, "cleanup_sync_points", &namespace, "", result.is_ok(), detail);
                result.map(AdminOutcome::Cleaned)
            }
            A::RetryTask { namespace, id } => {
                let result = self.retry_task(now, &namespace, &id).map(|()| format!("task '{id}' is ready again"));
                let detail = match &result {
                    Ok(done) => done.clone(),
                    Err(e) => e.to_string(),
                };
                self.audit_action(now, actor, "retry_task", &namespace, &id, result.is_ok(), detail);
                result.map(AdminOutcome::Done)
            }
        })
    }

    /// Writes an operator's action on a sync point or a task (`target`) to the audit log.
    #[allow(clippy::too_many_arguments)]
    fn audit_action(
        &mut self,
        now: Time,
        actor: &str,
        command: &str,
        namespace: &str,
        target: &str,
        ok: bool,
        detail: String,
    ) {
        let outcome = if ok { AuditOutcome::Ok } else { AuditOutcome::Refused };
        self.control.record(AuditEntry::new(now, actor, command, outcome).target(namespace, target).detail(detail));
    }

    /// Holds or releases one agent's deliveries, sets its status and tells it.
    fn set_paused(&mut self, ns: &str, agent: &str, paused: bool, notice: Frame) {
        let Some(a) = self.agent_mut(ns, agent) else { return };
        a.outbox.set_held(paused);
        a.outbox.push_urgent(notice);
        let previous = a.status;
        // The agent's own status is kept aside while it is held, and comes back on resume.
        let status = if paused {
            if previous != AgentStatus::Paused {
                a.status_when_resumed = Some(previous);
            }
            AgentStatus::Paused
        } else {
            a.status_when_resumed.take().unwrap_or(AgentStatus::Active)
        };
        let changed = previous != status && previous != AgentStatus::Lost;
        if changed {
            a.status = status;
        }
        let (ns, agent) = (self.key(ns), Arc::<str>::from(agent));
        if changed {
            self.touch(Touched::Agent(ns.clone(), agent.clone()));
            self.registry_event(&ns, &agent, RegistryEventKind::Status, Some(previous));
        }
        self.notify(&ns, &agent);
    }

    fn key(&self, ns: &str) -> Arc<str> {
        self.namespaces.get_key_value(ns).map_or_else(|| ns.into(), |(k, _)| k.clone())
    }

    fn all_agents(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let mut all: Vec<_> =
            self.namespaces.iter().flat_map(|(ns, n)| n.agents.keys().map(move |a| (ns.clone(), a.clone()))).collect();
        // Sorted: operators' actions on everyone reach agents in the same order in every run.
        all.sort_unstable();
        all
    }

    /// Pauses one agent: its deliveries are held (state changes coalesce) and its publishes, state
    /// updates and sync arrivals refused until it is resumed. Returns what happened, in words.
    fn pause_agent(&mut self, now: Time, actor: &str, namespace: &str, agent: &str) -> Result<String, CoreError> {
        let ns = name::namespace_or_default(namespace)?.to_owned();
        let registered = registry_lookup(&self.namespaces);
        if !self.control.pause(now, actor, &ns, agent, registered)? {
            return Ok(format!("agent '{agent}' was already paused"));
        }
        let notice = ControlNotice { kind: ControlKind::Paused, actor: actor.to_owned(), reason: String::new() };
        self.set_paused(&ns, agent, true, Frame::Control(notice));
        Ok(format!("agent '{agent}' paused; its deliveries are held until it is resumed"))
    }

    /// Lifts one agent's pause; its held deliveries follow.
    fn resume_agent(&mut self, now: Time, actor: &str, namespace: &str, agent: &str) -> Result<String, CoreError> {
        let ns = name::namespace_or_default(namespace)?.to_owned();
        let registered = registry_lookup(&self.namespaces);
        match self.control.resume(now, actor, &ns, agent, registered)? {
            Resumed::Resumed => {
                let notice =
                    ControlNotice { kind: ControlKind::Resumed, actor: actor.to_owned(), reason: String::new() };
                self.set_paused(&ns, agent, false, Frame::Control(notice));
                Ok(format!("agent '{agent}' resumed; its held deliveries follow"))
            }
            Resumed::WasNotPaused => Ok(format!("agent '{agent}' was not paused")),
            Resumed::StillStopped => Ok(format!(
                "agent '{agent}' is no longer paused on its own, but the emergency stop still holds it: run resume_all"
            )),
        }
    }

    /// Pauses every agent of every namespace at once and tells them.
    fn emergency_stop(&mut self, now: Time, actor: &str, reason: &str) -> String {
        if !self.control.emergency_stop(now, actor, reason) {
            return "an emergency stop was already in force".into();
        }
        let reason = self.control.emergency().map(|e| e.reason.clone()).unwrap_or_default();
        let agents = self.all_agents();
        for (ns, agent) in &agents {
            let notice =
                ControlNotice { kind: ControlKind::EmergencyStop, actor: actor.to_owned(), reason: reason.clone() };
            self.set_paused(ns, agent, true, Frame::Control(notice));
        }
        format!("emergency stop: {} agent(s) paused; publishes, state updates and sync arrivals are refused until resume_all", agents.len())
    }

    /// Lifts the emergency stop and every pause; held deliveries follow.
    fn resume_all(&mut self, now: Time, actor: &str) -> String {
        let lifted = self.control.resume_all(now, actor);
        let agents = if lifted.emergency_lifted { self.all_agents() } else { lifted.agents.clone() };
        for (ns, agent) in &agents {
            let notice =
                ControlNotice { kind: ControlKind::ResumedAll, actor: actor.to_owned(), reason: String::new() };
            self.set_paused(ns, agent, false, Frame::Control(notice));
        }
        let stop = if lifted.emergency_lifted { "emergency stop lifted; " } else { "" };
        format!("{stop}{} agent(s) resumed", agents.len())
    }

    /// Sends a command to an agent; its outcome comes out as [`Output::CommandDone`] with `origin`.
    /// Returns the command's id.
    #[allow(clippy::too_many_arguments)]
    fn send_command(
        &mut self,
        now: Time,
        origin: u64,
        actor: &str,
        namespace: &str,
        agent: &str,
        command: &str,
        params_json: &str,
        timeout_ms: u64,
    ) -> Result<u64, CoreError> {
        let ns = name::namespace_or_default(namespace)?.to_owned();
        let registered = registry_lookup(&self.namespaces);
        let request = CommandRequest {
            origin,
            actor: actor.to_owned(),
            namespace: ns.clone(),
            agent: agent.to_owned(),
            command: command.to_owned(),
            params_json: params_json.to_owned(),
            timeout_ms,
        };
        let pending = self.control.send_command(now, request, registered)?;
        let (id, deadline) = (pending.id.0, pending.deadline);
        let frame = Frame::Command {
            command_id: id,
            command: pending.command.clone(),
            params: pending.params.clone(),
            deadline,
        };
        if let Some(a) = self.agent_mut(&ns, agent) {
            a.outbox.push_urgent(frame);
        }
        let (ns, agent) = (self.key(&ns), Arc::<str>::from(agent));
        self.notify(&ns, &agent);
        self.arm_commands();
        Ok(id)
    }

    /// The control plane: pauses, emergency stop, pending commands, audit log.
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// How many agents are in each status, over every namespace.
    pub fn agents_by_status(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for a in self.namespaces.values().flat_map(|n| n.agents.values()) {
            *counts.entry(a.status.as_str()).or_default() += 1;
        }
        counts
    }

    /// The agents as the metrics endpoint reports them: how many per namespace and status, and
    /// their outbound queues (the messages waiting in all, the deepest now, the highest ever).
    pub fn agent_gauges(&self) -> AgentGauges {
        let mut gauges = AgentGauges::default();
        for (ns, n) in &self.namespaces {
            let mut by_status = std::collections::BTreeMap::new();
            for a in n.agents.values() {
                *by_status.entry(a.status.as_str()).or_insert(0u64) += 1;
                let stats = a.outbox.stats();
                gauges.queued += stats.queued as u64;
                gauges.deepest_queue = gauges.deepest_queue.max(stats.queued as u64);
                gauges.high_water = gauges.high_water.max(stats.high_water as u64);
            }
            gauges.by_status.extend(by_status.into_iter().map(|(status, count)| (ns.to_string(), status, count)));
        }
        gauges.by_status.sort();
        gauges
    }

    // ---------------------------------------------------------------------------------------------
    // Queries

    /// Agents of a namespace matching `query`, sorted by id.
    pub fn list_agents(&self, namespace: &str, query: &AgentQuery) -> Result<Vec<AgentView>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        let Some(n) = self.namespaces.get(ns) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<AgentView> = n.agents.values().filter(|a| query.matches(a)).map(|a| a.view(ns)).collect();
        out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(out)
    }

    /// An agent's state and its version.
    pub fn get_state(&self, namespace: &str, agent_id: &str) -> Result<(u64, Value), CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        name::validate("agent id", agent_id)?;
        let a = self
            .agent(ns, agent_id)
            .ok_or_else(|| CoreError::UnknownAgent { namespace: ns.to_owned(), agent: agent_id.to_owned() })?;
        Ok((a.state_version, a.state.clone()))
    }

    /// The collectives gathering or transferring in `namespace`, in id order, with who is missing.
    pub fn list_collectives(&self, namespace: &str) -> Result<Vec<CollectiveStatus>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        Ok(self.collectives.in_namespace(ns).map(Collective::status).collect())
    }

    /// Every sync point of a namespace (waiting and retained), sorted by id.
    pub fn list_sync_points(&self, namespace: &str) -> Result<Vec<SyncStatus>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        let Some(n) = self.namespaces.get(ns) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<SyncStatus> = n.sync_points.values().map(|p| p.status()).collect();
        out.sort_by(|a, b| a.sync_id.cmp(&b.sync_id));
        Ok(out)
    }

    /// One sync point's status.
    pub fn sync_status(&self, namespace: &str, sync_id: &str) -> Result<SyncStatus, CoreError> {
        self.sync_point(namespace, sync_id).map(SyncPoint::status)
    }

    /// One sync point's status read in plain language, with recommendations.
    pub fn diagnose_sync(&self, now: Time, namespace: &str, sync_id: &str) -> Result<Diagnosis, CoreError> {
        let point = self.sync_point(namespace, sync_id)?;
        let ns = name::namespace_or_default(namespace)?;
        let n = &self.namespaces[ns];
        Ok(point.diagnose(now, |id| n.agents.get(id).map(|a| a.status), n.live_agents()))
    }

    /// Every vote of a namespace (open and retained), by id.
    pub fn list_votes(&self, namespace: &str) -> Result<Vec<vote::VoteStatus>, CoreError> {
        Ok(self.votes.list(name::namespace_or_default(namespace)?))
    }

    /// One vote's full record: who voted what, who abstained, who never voted.
    pub fn vote_status(&self, namespace: &str, vote_id: &str) -> Result<vote::VoteStatus, CoreError> {
        Ok(self.votes.find(name::namespace_or_default(namespace)?, vote_id)?.status())
    }

    /// One vote read in plain language, with recommendations.
    pub fn diagnose_vote(&self, now: Time, namespace: &str, vote_id: &str) -> Result<vote::VoteDiagnosis, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        let v = self.votes.find(ns, vote_id)?;
        Ok(v.diagnose(now, |id| self.agent(ns, id).map(|a| a.status)))
    }

    /// Counters and sizes.
    pub fn info(&self) -> EngineInfo {
        EngineInfo {
            agents: self.namespaces.values().map(|n| n.agents.len()).sum(),
            namespaces: self.namespaces.len(),
            timers: self.timers.len(),
            pending_requests: self.requests.len(),
            counters: self.counters,
        }
    }
}
