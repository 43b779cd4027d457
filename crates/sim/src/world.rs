//! A deterministic simulation of the whole engine: dozens of agents on lossy links against one
//! engine, committed to a real store (SQLite in a temporary directory), through crashes and
//! restarts from that store, and clock jumps. The shell's loop is played the way the server's
//! driver plays it — inputs of one instant make one turn, its changes are committed to the store
//! before anything it says leaves, a timer found late reports a stall first — and everything
//! else (network, clients, faults) is a seeded event queue, so a seed replays exactly.
//!
//! Faults: a message lost in either direction breaks its stream (a stream never loses one message
//! and goes on), each side learning of it after a delay; delays per message, in order per
//! stream; duplicate deliveries (the same request twice); the server crashing (everything in
//! memory and in flight lost) and restarting from the store after a downtime; the clock jumping
//! (the server and its clients could not run for a while).
//!
//! Agents: each keeps writing a counter into its state, publishing on its own retained topic,
//! meeting its group at barrier rounds, watching its neighbour's state and acknowledging what it
//! receives; after a broken stream it resumes with its token and sends again what was not
//! answered. At the end faults stop, every agent reconnects, time runs past every deadline, and the
//! server crashes once more.
//!
//! Invariants checked ([`run`] returns the first one violated):
//!
//! * **no acknowledged write lost**: after every restart (and at all times), each agent's state
//!   version is at least the highest version acknowledged to it or seen by any watcher, its
//!   counter at least the highest acknowledged value, and its topic has given out at least as
//!   many sequence numbers as publishes were acknowledged (retained topics are kept in the
//!   store);
//! * **no barrier released twice or to a non-participant**: every outcome of a barrier is the same
//!   (arrival order and payloads), it names only participants, and only participants get it, each
//!   at most once;
//! * **versions monotonic**: the versions a watcher sees never go back on one stream, and an
//!   agent's version and a topic's last sequence never go back, restarts included;
//! * **every queue within its bound**: no agent's queue is over the configured capacity;
//! * **every waiter answered**: once the faults stop, every request on a live stream is answered —
//!   writes, publishes, barrier arrivals (released, or ended by their timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::history::{HistorySettings, Keep, RetainRule};
use lockstep_core::{
    AgentQuery, Config, ConnId, Engine, Frame, Input, Output, Participants, RegisterRequest, Reply, Request, Time,
    WatchTarget,
};
use lockstep_server::persist;
use lockstep_store::{Durability, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The most items the server puts in one frame (`lockstep_server::driver::MAX_BATCH`).
const MAX_BATCH: usize = 256;
/// Simulated time with faults and new work.
const ACTIVE_MS: Time = 12_000;
/// Simulated time after the faults stop, for everything waiting to be answered: longer than a
/// barrier's timeout plus a lease and a reconnection.
const QUIESCE_MS: Time = 30_000;
/// A barrier's timeout.
const SYNC_TIMEOUT_MS: u64 = 8_000;
/// How often an agent acts (heartbeat, and maybe a write, a publish or an arrival).
const ACT_MS: Time = 250;
/// Agents per barrier group.
const GROUP: usize = 4;

/// What one seed's run did, for the figures.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub agents: usize,
    pub crashes: u32,
    pub clock_jumps: u32,
    pub broken_streams: u64,
    pub duplicates: u64,
    pub turns: u64,
    /// State updates acknowledged to agents.
    pub acked_writes: u64,
    /// Publishes acknowledged to agents.
    pub acked_publishes: u64,
    /// Barrier outcomes delivered to agents.
    pub barrier_releases: u64,
    /// Barrier arrivals answered with an error (timed out, a participant lost).
    pub barrier_errors: u64,
}

/// The command that replays one seed, printed with every failure.
pub fn reproduce(seed: u64) -> String {
    format!("LOCKSTEP_SIM_SEED={seed} LOCKSTEP_SIM_TRACE=1 cargo test -p lockstep-sim --test sim -- --nocapture")
}

/// Runs the simulation of `seed`; on a violated invariant, says which, when, and how to replay it.
pub fn run(seed: u64) -> Result<Report, String> {
    let trace = std::env::var_os("LOCKSTEP_SIM_TRACE").is_some();
    let mut world = World::new(seed, trace).map_err(|e| format!("seed {seed}: could not start: {e}"))?;
    world
        .run()
        .map_err(|e| format!("seed {seed} failed at {} ms: {e}\n  reproduce: {}", world.now, reproduce(seed)))?;
    Ok(world.report)
}

/// The engine's settings in the simulation: long retentions (nothing the checks rely on is
/// forgotten during a run), small queues (so that the bound is reached), retained topics kept in
/// the store.
pub fn config() -> Config {
    let history = HistorySettings {
        retain: vec![RetainRule {
            pattern: "sim.>".into(),
            max_messages: 100_000,
            max_topics: 64,
            keep: Keep::Store,
            ..RetainRule::default()
        }],
        ..HistorySettings::default()
    };
    Config {
        history,
        queue_capacity: 16,
        lost_retention_ms: 3_600_000,
        sync_retention_ms: 3_600_000,
        ..Config::default()
    }
}

/// Something that arrives at the server on a stream.
#[derive(Debug)]
enum Up {
    Register(RegisterRequest),
    Request(u64, Request),
    /// The stream broke: the server's side learns it.
    Gone,
}

/// Something that arrives at a client on a stream.
#[derive(Debug)]
enum Down {
    Frame(Frame),
    /// The stream ended or broke: the client's side learns it.
    Ended,
}

#[derive(Debug)]
enum Event {
    AtServer { conn: ConnId, up: Up },
    AtClient { conn: ConnId, down: Down },
    Act(usize),
    Reconnect(usize),
    Crash,
    Restart,
    Jump(Time),
}

/// One stream between a client and the server.
struct Stream {
    client: usize,
    broken: bool,
    /// When the last message each way arrives: a stream keeps its order.
    up_tail: Time,
    down_tail: Time,
}

/// What a client waits to be answered for.
#[derive(Clone, Debug)]
enum Pending {
    Write(u64),
    Publish,
    Sync(u64),
    Watch,
}

struct Client {
    id: String,
    group: usize,
    token: String,
    conn: Option<ConnId>,
    registered: bool,
    ever_registered: bool,
    reconnecting: bool,
    next_request: u64,
    pending: BTreeMap<u64, Pending>,
    /// The last counter value written, the highest acknowledged, and its version.
    counter: u64,
    acked_counter: u64,
    acked_version: u64,
    /// A write sent on a stream that broke before its answer: sent again after resuming.
    resend_write: bool,
    acked_publishes: u64,
    resend_publishes: u64,
    /// The barrier round the agent is at, and whether it arrived there and waits.
    round: u64,
    waiting: bool,
    outcomes_seen: BTreeSet<String>,
    /// Versions of watched agents seen on the current stream.
    watch_seen: BTreeMap<Arc<str>, u64>,
    last_heartbeat: Time,
}

struct World {
    seed: u64,
    trace: bool,
    rng: StdRng,
    config: Config,
    now: Time,
    seq: u64,
    events: BTreeMap<(Time, u64), Event>,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    store: Option<Store>,
    engine: Option<Engine>,
    clients: Vec<Client>,
    streams: BTreeMap<ConnId, Stream>,
    next_conn: u64,
    /// Streams the running server knows (registered on it).
    server_conns: BTreeMap<ConnId, usize>,
    /// The highest state version of each agent anyone was told (acknowledgements and watchers).
    max_version: Vec<u64>,
    /// The highest last sequence each agent's topic was seen at.
    max_topic_seq: Vec<u64>,
    /// The first outcome of each barrier: its arrival order and payloads.
    outcomes: BTreeMap<String, (Vec<Arc<str>>, Vec<Bytes>)>,
    faults: Faults,
    tokens: u64,
    report: Report,
}

/// This seed's fault rates.
struct Faults {
    on: bool,
    /// Chance that a message is lost (its stream breaks), per message.
    drop: f64,
    /// Chance that a request is delivered twice.
    duplicate: f64,
    /// Longest ordinary delay, and the chance of a long one (up to 2 s).
    delay_ms: Time,
    slow: f64,
}

impl World {
    fn new(seed: u64, trace: bool) -> Result<World, String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = config();
        config.validate()?;
        let agents = rng.random_range(24..=40usize);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().to_path_buf();
        let store = Store::open(&path, Durability::Normal).map_err(|e| e.to_string())?;
        let faults = Faults {
            on: true,
            drop: [0.0, 0.002, 0.01, 0.03][rng.random_range(0..4)],
            duplicate: [0.0, 0.01, 0.05][rng.random_range(0..3)],
            delay_ms: [1, 20, 100][rng.random_range(0..3)],
            slow: [0.0, 0.01][rng.random_range(0..2)],
        };
        let clients = (0..agents)
            .map(|i| Client {
                id: format!("a{i:02}"),
                group: i / GROUP,
                token: String::new(),
                conn: None,
                registered: false,
                ever_registered: false,
                reconnecting: false,
                next_request: 1,
                pending: BTreeMap::new(),
                counter: 0,
                acked_counter: 0,
                acked_version: 0,
                resend_write: false,
                acked_publishes: 0,
                resend_publishes: 0,
                round: 0,
                waiting: false,
                outcomes_seen: BTreeSet::new(),
                watch_seen: BTreeMap::new(),
                last_heartbeat: 0,
            })
            .collect();
        let mut engine = Engine::new(config.clone());
        engine.track_changes();
        let mut world = World {
            seed,
            trace,
            rng,
            config,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            _dir: dir,
            dir: path,
            store: Some(store),
            engine: Some(engine),
            clients,
            streams: BTreeMap::new(),
            next_conn: 1,
            server_conns: BTreeMap::new(),
            max_version: vec![0; agents],
            max_topic_seq: vec![0; agents],
            outcomes: BTreeMap::new(),
            faults,
            tokens: 0,
            report: Report { seed, agents, ..Report::default() },
        };
        for c in 0..agents {
            let at = world.rng.random_range(0..500);
            world.schedule(at, Event::Reconnect(c));
            let at = world.rng.random_range(0..ACT_MS);
            world.schedule(at, Event::Act(c));
        }
        for _ in 0..world.rng.random_range(0..=3u32) {
            let at = world.rng.random_range(1_000..ACTIVE_MS);
            world.schedule(at, Event::Crash);
        }
        for _ in 0..world.rng.random_range(0..=3u32) {
            let at = world.rng.random_range(1_000..ACTIVE_MS);
            let by = [1_500, 5_000, 20_000][world.rng.random_range(0..3)];
            world.schedule(at, Event::Jump(by));
        }
        Ok(world)
    }

    fn schedule(&mut self, at: Time, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn delay(&mut self) -> Time {
        if self.faults.on && self.rng.random_bool(self.faults.slow) {
            self.rng.random_range(500..2_000)
        } else {
            self.rng.random_range(0..=self.faults.delay_ms)
        }
    }

    fn run(&mut self) -> Result<(), String> {
        // The run ends QUIESCE_MS after the faults stop (a clock jump may carry it past ACTIVE_MS).
        let mut end = Time::MAX;
        loop {
            let next_event = self.events.keys().next().map(|k| k.0);
            let deadline = self.engine.as_ref().and_then(Engine::next_deadline);
            let Some(at) = next_event.into_iter().chain(deadline).min() else { break };
            if at > end {
                break;
            }
            if self.faults.on && at >= ACTIVE_MS {
                self.faults.on = false;
                end = self.now.max(at) + QUIESCE_MS;
            }
            self.now = self.now.max(at);
            let now = self.now;
            // The server's turn: a timer found late first reports the stall (as the driver does),
            // then every timer due and every event of this instant.
            if let Some(engine) = self.engine.as_mut() {
                if let Some(since) = engine
                    .next_deadline()
                    .map(|d| engine.stall_began(d))
                    .filter(|d| now.saturating_sub(*d) >= engine.config().stall_threshold_ms())
                {
                    engine.handle(now, Input::ServerStalled { since });
                }
                while engine.next_deadline().is_some_and(|d| d <= now) {
                    engine.handle_timeout(now);
                }
            }
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let event = entry.remove();
                if self.trace {
                    eprintln!("{now:>6} {event:?}");
                }
                // After a jump the turn ends: the next one finds its timers late.
                let jumped = matches!(event, Event::Jump(_));
                self.event(event)?;
                if jumped {
                    break;
                }
            }
            self.commit()?;
        }
        self.finish()
    }

    /// Ends the server's turn: commits its changes, then hands out what it says.
    fn commit(&mut self) -> Result<(), String> {
        let Some(engine) = self.engine.as_mut() else { return Ok(()) };
        self.report.turns += 1;
        let turn = engine.ready();
        if !turn.changes().is_empty() {
            let batch = persist::to_store(turn.changes());
            self.store
                .as_mut()
                .expect("a running server has its store")
                .apply(&batch)
                .map_err(|e| format!("commit: {e}"))?;
        }
        let mut out = turn.committed();
        let mut closed = Vec::new();
        while let Some(output) = out.poll_output() {
            if let Output::Close(conn, reason) = output {
                if self.trace {
                    eprintln!("{:>6} Close {{ conn: {conn:?}, reason: {reason:?} }}", self.now);
                }
                closed.push(conn);
            }
        }
        for conn in &closed {
            self.server_conns.remove(conn);
        }
        let mut frames = Vec::new();
        for &conn in self.server_conns.keys() {
            while let Some(frame) = out.next_frame(conn, MAX_BATCH) {
                frames.push((conn, frame));
            }
        }
        for (conn, frame) in frames {
            self.send_down(conn, Down::Frame(frame));
        }
        for conn in closed {
            self.send_down(conn, Down::Ended);
            if let Some(s) = self.streams.get_mut(&conn) {
                s.broken = true;
            }
        }
        if self.report.turns.is_multiple_of(16) {
            self.check_engine("")?;
        }
        Ok(())
    }

    fn event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::AtServer { conn, up } => self.at_server(conn, up),
            Event::AtClient { conn, down } => return self.at_client(conn, down),
            Event::Act(c) => self.act(c),
            Event::Reconnect(c) => self.reconnect(c),
            Event::Crash => self.crash(),
            Event::Restart => return self.restart(),
            Event::Jump(by) => {
                self.report.clock_jumps += 1;
                self.now += by;
            }
        }
        Ok(())
    }

    // The network.

    /// A client sends on its stream. A lost message breaks the stream.
    fn send_up(&mut self, conn: ConnId, up: Up) {
        let Some(s) = self.streams.get(&conn) else { return };
        if s.broken {
            return;
        }
        if self.faults.on && self.rng.random_bool(self.faults.drop) {
            return self.break_stream(conn);
        }
        let twice = self.faults.on && matches!(up, Up::Request(..)) && self.rng.random_bool(self.faults.duplicate);
        let delay = self.delay();
        let s = self.streams.get_mut(&conn).expect("checked above");
        let at = (self.now + delay).max(s.up_tail);
        s.up_tail = at;
        if twice {
            if let Up::Request(id, request) = &up {
                self.report.duplicates += 1;
                let copy = Up::Request(*id, request.clone());
                self.schedule(at, Event::AtServer { conn, up: copy });
            }
        }
        self.schedule(at, Event::AtServer { conn, up });
    }

    /// The server sends on a stream. A lost frame breaks the stream.
    fn send_down(&mut self, conn: ConnId, down: Down) {
        let Some(s) = self.streams.get(&conn) else { return };
        if s.broken {
            return;
        }
        if self.faults.on && matches!(down, Down::Frame(_)) && self.rng.random_bool(self.faults.drop) {
            return self.break_stream(conn);
        }
        let delay = self.delay();
        let s = self.streams.get_mut(&conn).expect("checked above");
        let at = (self.now + delay).max(s.down_tail);
        s.down_tail = at;
        self.schedule(at, Event::AtClient { conn, down });
    }

    /// The stream breaks: both sides learn it after a delay; nothing more passes.
    fn break_stream(&mut self, conn: ConnId) {
        let Some(s) = self.streams.get_mut(&conn) else { return };
        if s.broken {
            return;
        }
        s.broken = true;
        self.report.broken_streams += 1;
        let (up, down) = (self.delay(), self.delay());
        let s = self.streams.get(&conn).expect("checked above");
        let (up, down) = ((self.now + up).max(s.up_tail), (self.now + down).max(s.down_tail));
        self.schedule(up, Event::AtServer { conn, up: Up::Gone });
        self.schedule(down, Event::AtClient { conn, down: Down::Ended });
    }

    // The server.

    fn at_server(&mut self, conn: ConnId, up: Up) {
        let now = self.now;
        let Some(engine) = self.engine.as_mut() else {
            // The server is down: the connection is refused.
            return self.break_stream(conn);
        };
        let Some(&client) = self.streams.get(&conn).map(|s| &s.client) else { return };
        match up {
            Up::Register(request) => {
                // A stream opened before a crash is gone with it.
                if self.streams[&conn].broken {
                    return;
                }
                self.tokens += 1;
                let new_token = format!("token-{}", self.tokens);
                self.server_conns.insert(conn, client);
                engine.handle(now, Input::Register { conn, request, new_token, connection: client as u64 });
            }
            Up::Request(request_id, request) => {
                if self.server_conns.contains_key(&conn) {
                    engine.handle(now, Input::Request { conn, request_id, request });
                }
            }
            Up::Gone => {
                if self.server_conns.remove(&conn).is_some() {
                    engine.handle(now, Input::Disconnected { conn });
                }
            }
        }
    }

    /// The server process dies: its memory, every stream and everything in flight are lost.
    fn crash(&mut self) {
        if !self.faults.on || self.engine.is_none() {
            return;
        }
        self.report.crashes += 1;
        self.engine = None;
        self.store = None;
        self.server_conns.clear();
        let open: Vec<ConnId> = self.streams.iter().filter(|(_, s)| !s.broken).map(|(c, _)| *c).collect();
        for conn in open {
            self.break_stream(conn);
        }
        let downtime = self.rng.random_range(100..3_000);
        self.schedule(self.now + downtime, Event::Restart);
    }

    /// The server starts again from its data directory, as `lockstep serve` does.
    fn restart(&mut self) -> Result<(), String> {
        let store = Store::open(&self.dir, Durability::Normal).map_err(|e| format!("reopening the store: {e}"))?;
        let snapshot = store.load().map_err(|e| format!("loading the store: {e}"))?;
        let loaded = persist::from_store(snapshot).map_err(|e| format!("decoding the store: {e}"))?;
        // The clock goes on from where the data left it.
        self.now = self.now.max(loaded.latest + 1);
        let mut engine = Engine::new(self.config.clone());
        engine.restore(self.now, loaded.restored).map_err(|e| format!("restoring: {e}"))?;
        engine.track_changes();
        self.engine = Some(engine);
        self.store = Some(store);
        self.check_engine("after a restart: ")
    }

    /// What the engine holds agrees with everything acknowledged or seen so far.
    fn check_engine(&mut self, when: &str) -> Result<(), String> {
        let Some(engine) = self.engine.as_ref() else { return Ok(()) };
        let capacity = self.config.queue_capacity as u64;
        for view in engine.list_agents("", &AgentQuery::default()).map_err(|e| e.to_string())? {
            if view.queue_depth > capacity {
                return Err(format!(
                    "{when}agent {} holds {} queued, over the bound of {capacity}",
                    view.agent_id, view.queue_depth
                ));
            }
        }
        let topics = engine.history_topics("").map_err(|e| e.to_string())?;
        for (i, c) in self.clients.iter().enumerate() {
            let seen = self.max_version[i];
            if seen > 0 || c.acked_counter > 0 {
                let (version, state) = engine
                    .get_state("", &c.id)
                    .map_err(|e| format!("{when}agent {} with acknowledged writes is gone: {e}", c.id))?;
                if version < seen {
                    return Err(format!(
                        "{when}agent {}'s state is at version {version}; version {seen} was acknowledged or seen",
                        c.id
                    ));
                }
                let counter = state.get("c").and_then(serde_json::Value::as_u64).unwrap_or(0);
                if counter < c.acked_counter {
                    return Err(format!(
                        "{when}agent {}'s counter is {counter}; {} was acknowledged",
                        c.id, c.acked_counter
                    ));
                }
                self.max_version[i] = version;
            }
            let topic = format!("sim.{}", c.id);
            let last = topics.iter().find(|t| t.topic == topic).map_or(0, |t| t.last_seq);
            if last < c.acked_publishes || last < self.max_topic_seq[i] {
                return Err(format!(
                    "{when}topic {topic} is at sequence {last}; {} publishes were acknowledged and sequence {} was seen",
                    c.acked_publishes, self.max_topic_seq[i]
                ));
            }
            self.max_topic_seq[i] = last;
        }
        Ok(())
    }

    // The clients.

    fn request(&mut self, c: usize, request: Request, pending: Option<Pending>) {
        let client = &mut self.clients[c];
        let Some(conn) = client.conn.filter(|_| client.registered) else { return };
        let id = match pending {
            Some(p) => {
                let id = client.next_request;
                client.next_request += 1;
                client.pending.insert(id, p);
                id
            }
            None => 0,
        };
        self.send_up(conn, Up::Request(id, request));
    }

    fn reconnect(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.reconnecting = false;
        if client.conn.is_some() {
            return;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        client.conn = Some(conn);
        client.registered = false;
        client.watch_seen.clear();
        let (agent_id, resume_token) = (client.id.clone(), client.token.clone());
        let neighbour = &self.clients[(c + 1) % self.clients.len()].id;
        let request = RegisterRequest {
            agent_id,
            role: "sim".into(),
            interests: vec![format!("sim.{neighbour}")],
            resume_token,
            ..RegisterRequest::default()
        };
        let now = self.now;
        self.streams.insert(conn, Stream { client: c, broken: false, up_tail: now, down_tail: now });
        self.send_up(conn, Up::Register(request));
    }

    fn act(&mut self, c: usize) {
        let next = self.now + ACT_MS + self.rng.random_range(0..ACT_MS / 4);
        self.schedule(next, Event::Act(c));
        let client = &self.clients[c];
        if client.conn.is_none() || !client.registered {
            return;
        }
        if self.now.saturating_sub(client.last_heartbeat) >= self.config.heartbeat_interval_ms / 3 {
            self.clients[c].last_heartbeat = self.now;
            self.request(c, Request::Heartbeat, None);
        }
        if !self.faults.on {
            return;
        }
        let roll: f64 = self.rng.random();
        let client = &self.clients[c];
        let writing = client.pending.values().any(|p| matches!(p, Pending::Write(_)));
        let publishing = client.pending.values().filter(|p| matches!(p, Pending::Publish)).count();
        if roll < 0.35 && !writing {
            self.clients[c].counter += 1;
            self.write(c);
        } else if roll < 0.6 && publishing < 3 {
            self.publish(c);
        } else if roll < 0.85 && !client.waiting {
            self.clients[c].waiting = true;
            self.arrive(c);
        }
    }

    fn write(&mut self, c: usize) {
        let n = self.clients[c].counter;
        let delta_json = format!("{{\"c\":{n}}}");
        self.request(c, Request::UpdateState { delta_json }, Some(Pending::Write(n)));
    }

    fn publish(&mut self, c: usize) {
        let topic = format!("sim.{}", self.clients[c].id);
        let payload = Bytes::from(self.rng.random::<u64>().to_le_bytes().to_vec());
        self.request(c, Request::Publish { topic, payload, content_type: String::new() }, Some(Pending::Publish));
    }

    fn group_of(&self, c: usize) -> Vec<String> {
        let group = self.clients[c].group;
        self.clients.iter().filter(|o| o.group == group).map(|o| o.id.clone()).collect()
    }

    fn sync_id(&self, c: usize) -> String {
        format!("g{}-r{}", self.clients[c].group, self.clients[c].round)
    }

    fn arrive(&mut self, c: usize) {
        let (sync_id, participants) = (self.sync_id(c), self.group_of(c));
        let payload = Bytes::from(self.clients[c].id.clone().into_bytes());
        let request = Request::Sync {
            sync_id,
            participants: Participants::Agents(participants),
            timeout_ms: SYNC_TIMEOUT_MS,
            payload,
            summary: false,
            quorum: None,
        };
        let round = self.clients[c].round;
        self.request(c, request, Some(Pending::Sync(round)));
    }

    fn at_client(&mut self, conn: ConnId, down: Down) -> Result<(), String> {
        let Some(c) = self.streams.get(&conn).map(|s| s.client) else { return Ok(()) };
        if self.clients[c].conn != Some(conn) {
            return Ok(());
        }
        match down {
            Down::Ended => {
                let client = &mut self.clients[c];
                client.conn = None;
                client.registered = false;
                // What was not answered is sent again after resuming.
                for p in std::mem::take(&mut client.pending).into_values() {
                    match p {
                        Pending::Write(_) => client.resend_write = true,
                        Pending::Publish => client.resend_publishes += 1,
                        Pending::Sync(_) | Pending::Watch => {}
                    }
                }
                if !client.reconnecting {
                    client.reconnecting = true;
                    let at = self.now + self.rng.random_range(50..1_000);
                    self.schedule(at, Event::Reconnect(c));
                }
                Ok(())
            }
            Down::Frame(frame) => self.frame(c, frame),
        }
    }

    fn frame(&mut self, c: usize, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Registered(r) => {
                let client = &mut self.clients[c];
                if client.ever_registered && !r.resumed && (client.acked_version > 0 || client.acked_publishes > 0) {
                    return Err(format!(
                        "agent {} could not resume its session: what it was acknowledged is gone",
                        client.id
                    ));
                }
                let first = !client.ever_registered;
                client.ever_registered = true;
                client.registered = true;
                client.token = r.resume_token;
                client.last_heartbeat = self.now;
                if first {
                    let neighbour = self.clients[(c + 1) % self.clients.len()].id.clone();
                    self.request(c, Request::Watch(WatchTarget::Agent(neighbour)), Some(Pending::Watch));
                }
                if std::mem::take(&mut self.clients[c].resend_write) {
                    self.write(c);
                }
                for _ in 0..std::mem::take(&mut self.clients[c].resend_publishes) {
                    self.publish(c);
                }
                if self.clients[c].waiting {
                    self.arrive(c);
                }
            }
            Frame::Reply { request_id, reply } => return self.reply(c, request_id, reply),
            Frame::StateChanges(changes) => {
                for change in changes {
                    let seen = self.clients[c].watch_seen.entry(change.agent_id.clone()).or_default();
                    if change.removed {
                        *seen = 0;
                        continue;
                    }
                    if change.version < *seen {
                        let seen = *seen;
                        return Err(format!(
                            "agent {} watching {} saw version {} after version {seen}",
                            self.clients[c].id, change.agent_id, change.version
                        ));
                    }
                    *seen = change.version;
                    if let Some(i) = self.clients.iter().position(|o| *o.id == *change.agent_id) {
                        self.max_version[i] = self.max_version[i].max(change.version);
                    }
                }
            }
            Frame::Deliveries(batch) => {
                for w in batch.windows(2) {
                    if w[1].seq != w[0].seq + 1 {
                        return Err(format!("agent {} got a batch that is not consecutive", self.clients[c].id));
                    }
                }
                if let Some(last) = batch.last() {
                    if self.rng.random_bool(0.9) {
                        self.request(c, Request::Ack { up_to: last.seq }, None);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn reply(&mut self, c: usize, request_id: u64, reply: Reply) -> Result<(), String> {
        let Some(pending) = self.clients[c].pending.remove(&request_id) else {
            // A duplicate's second answer, or an error for a request that wanted none.
            return Ok(());
        };
        match (pending, reply) {
            (Pending::Write(n), Reply::StateVersion(version)) => {
                let client = &mut self.clients[c];
                client.acked_counter = client.acked_counter.max(n);
                client.acked_version = client.acked_version.max(version);
                self.max_version[c] = self.max_version[c].max(version);
                self.report.acked_writes += 1;
            }
            (Pending::Write(_), _) => self.clients[c].resend_write = true,
            (Pending::Publish, Reply::Ok) => {
                self.clients[c].acked_publishes += 1;
                self.report.acked_publishes += 1;
            }
            (Pending::Publish, _) => {}
            (Pending::Sync(round), reply) => {
                let sync_id = format!("g{}-r{round}", self.clients[c].group);
                if let Reply::Sync(outcome) = &reply {
                    self.released(c, &sync_id, outcome)?;
                } else {
                    self.report.barrier_errors += 1;
                }
                let client = &mut self.clients[c];
                if client.round == round {
                    client.round += 1;
                    client.waiting = false;
                }
            }
            (Pending::Watch, _) => {}
        }
        Ok(())
    }

    /// Agent `c` got barrier `sync_id`'s outcome.
    fn released(&mut self, c: usize, sync_id: &str, outcome: &lockstep_core::SyncOutcome) -> Result<(), String> {
        self.report.barrier_releases += 1;
        let group = self.group_of(c);
        let id = self.clients[c].id.clone();
        if outcome.sync_id != sync_id {
            return Err(format!("agent {id} waiting at {sync_id} got the outcome of {}", outcome.sync_id));
        }
        if !self.clients[c].outcomes_seen.insert(sync_id.to_owned()) {
            return Err(format!("agent {id} got barrier {sync_id}'s outcome twice"));
        }
        if let Some(stranger) = outcome.arrival_order.iter().find(|a| !group.iter().any(|g| **g == ***a)) {
            return Err(format!("barrier {sync_id} names {stranger}, not a participant"));
        }
        let this = (outcome.arrival_order.clone(), outcome.payloads.clone());
        match self.outcomes.get(sync_id) {
            Some(first) if *first != this => {
                let mut e = format!("barrier {sync_id} was released twice: first ");
                let _ = write!(e, "{:?}, then {:?} to {id}", first.0, this.0);
                Err(e)
            }
            Some(_) => Ok(()),
            None => {
                self.outcomes.insert(sync_id.to_owned(), this);
                Ok(())
            }
        }
    }

    /// After the faults stopped and time ran out: everyone is answered, and a last crash loses
    /// nothing acknowledged.
    fn finish(&mut self) -> Result<(), String> {
        self.check_engine("at the end: ")?;
        for c in &self.clients {
            if !c.registered {
                return Err(format!("agent {} is not connected {QUIESCE_MS} ms after the faults stopped", c.id));
            }
            if let Some((id, p)) = c.pending.iter().next() {
                return Err(format!("agent {}'s request {id} ({p:?}) was never answered", c.id));
            }
            if c.waiting {
                return Err(format!("agent {} still waits at barrier g{}-r{}", c.id, c.group, c.round));
            }
        }
        self.faults.on = true;
        self.crash();
        self.faults.on = false;
        self.restart()?;
        if self.trace {
            eprintln!("seed {}: {:?}", self.seed, self.report);
        }
        Ok(())
    }
}
