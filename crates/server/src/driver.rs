//! The driver: the one task that owns the engine.
//!
//! gRPC handlers never touch product state; they send [`Command`]s here over one **bounded** intake
//! ([`INTAKE_CAPACITY`] commands, see [`EngineHandle`]), and wait for room when it is full: a client
//! that floods the server is held back by its own connection's HTTP/2 flow control, and since room
//! is handed out in the order it was asked for, one busy connection cannot starve the others. The driver applies commands to the
//! engine in turns (up to [`MAX_INPUTS_PER_TURN`] inputs, or timers that fell due: timers that fall
//! due while inputs are taken get a turn of their own after the inputs' turn, so that answers never
//! wait for timer work), and every turn ends the same way, as the engine's types demand (see
//! [`lockstep_core::turn`]):
//!
//! 1. [`Engine::ready`] hands over the turn's durable changes;
//! 2. the [`Journal`] commits them (SQLite in one transaction, or nothing with `--in-memory`);
//! 3. only then does the committed turn release its outputs: operators' answers, closed streams,
//!    and frames moved into each ready connection's small outbound channel, as fast as the
//!    connection takes them (credit-based: a full channel marks the connection blocked, and its
//!    stream sends [`Signal::Writable`] when it has room again). The engine's own bounded queues,
//!    with their overflow policies, absorb what a slow connection cannot take.
//!
//! Queries run on the engine task too, read-only, and are answered after the turn's commit. If a
//! commit fails nothing of the turn is acknowledged: the driver ends every stream and stops, and
//! the server reports why. With a [`Recorder`] the driver writes down every input, timer and
//! pull, so that the run can be replayed into a fresh engine ([`lockstep_core::record`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep_core::durable::Change;
use lockstep_core::notice::Notice;
use lockstep_core::record::Step;
use lockstep_core::{
    AdminAction, AdminOutcome, ConnId, CoreError, Engine, Frame, Input, Output, Reason, Sendable, Time,
};
use lockstep_proto::convert;
use lockstep_proto::reason;
use lockstep_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Code;
use tonic::Status;

/// Most deliveries or state changes put in one outbound frame.
pub const MAX_BATCH: usize = 256;

/// Frames buffered per connection between the driver and the connection's stream.
pub const CONN_CHANNEL_FRAMES: usize = 16;

/// Commands waiting for the driver before senders must wait for room (bounds the memory a flood
/// can take, and the time a quiet agent's message waits behind it). Room for a barrier of a
/// thousand arrivals with their acknowledgements in one burst: at 1,024 such bursts made readers
/// wait and cost barriers of 1,000 about 15 % (measured; docs/BENCHMARKS.md).
pub const INTAKE_CAPACITY: usize = 4096;

/// Inputs the driver takes before it commits and sends (keeps latency bounded under load).
pub const MAX_INPUTS_PER_TURN: usize = 1024;

/// A read-only query run on the engine task. It returns how to send its answer, which the driver
/// does once the turn's changes are committed.
pub type Query = Box<dyn FnOnce(&Engine, Time) -> Answer + Send>;

/// Sends one answer (run after the commit; dropped unsent if the commit failed).
pub type Answer = Box<dyn FnOnce() + Send>;

/// What an operator's action came to: its outcome, or why it was refused.
pub type AdminAnswer = Result<AdminOutcome, CoreError>;

/// Where a connection's frames go. Frames cross the channel as engine types and are converted to
/// protobuf by the connection's own stream, so that work runs beside the driver, not on it.
pub enum ConnSink {
    Session(mpsc::Sender<Result<Frame, Status>>),
    Registry(mpsc::Sender<Result<Frame, Status>>),
    /// A context watch stream: like a registry watch, it has no reader.
    Context(mpsc::Sender<Result<Frame, Status>>),
    /// A task event stream: like a registry watch, it has no reader.
    Tasks(mpsc::Sender<Result<Frame, Status>>),
}

impl ConnSink {
    fn sender(&self) -> &mpsc::Sender<Result<Frame, Status>> {
        match self {
            ConnSink::Session(tx) | ConnSink::Registry(tx) | ConnSink::Context(tx) | ConnSink::Tasks(tx) => tx,
        }
    }
}

/// Everything the driver can be asked to do through the intake channel.
pub enum Command {
    /// A new stream: where its frames go, and the flag its consumer checks to say it has room.
    Open { conn: ConnId, sink: ConnSink, blocked: Arc<AtomicBool> },
    /// An engine input from a client.
    Input(Input),
    /// A session's stream ended without a goodbye (its reader says so, and why): the stream is
    /// ended with `status` if it is still open, and the engine told (the agent keeps its lease).
    Ended { conn: ConnId, status: Status },
    /// An operator's action: the driver names its origin, and its answer goes to `done`.
    Admin { actor: String, action: AdminAction, done: oneshot::Sender<AdminAnswer> },
    /// A context write from a client outside a session: its answer goes to `done`.
    ContextWrite {
        writer: String,
        write: lockstep_core::ContextWrite,
        done: oneshot::Sender<Result<lockstep_core::context::Written, CoreError>>,
    },
    /// A client's call on round series: its answer goes to `done`.
    Round { call: lockstep_core::io::RoundCall, done: oneshot::Sender<Result<lockstep_core::io::RoundDone, CoreError>> },
    /// A call on the sync monitor by `actor`.
    Systems {
        actor: String,
        call: lockstep_core::io::SystemsCall,
        done: oneshot::Sender<Result<lockstep_core::io::SystemsDone, CoreError>>,
    },
    /// Read the engine.
    Query(Query),
    /// Copy the committed data (see [`crate::backup`]): the driver only tells the request where
    /// the database is; the copy runs beside the engine.
    Backup(crate::backup::BackupRequest),
}

/// What connection streams tell the driver from places that cannot wait (a stream's poll, its
/// drop). At most one `Writable` per blocked episode and one `Gone` per connection: bounded by the
/// number of connections, so this channel needs no capacity of its own.
pub enum Signal {
    /// A blocked connection's stream consumed a frame.
    Writable(ConnId),
    /// A connection's outbound stream was dropped by the transport.
    Gone(ConnId),
    /// A session on client connection `connection` (as the listener numbers it) sent a message,
    /// read at `at`, that has to wait for room in the intake: a sign of life of every session on
    /// that connection, whenever the message gets its turn.
    Alive { connection: u64, at: Instant },
    /// Session `conn` acknowledged deliveries: the latest sequence number is in `up_to`, which the
    /// driver takes (leaving 0) when it applies it; the session's reader signals again only then.
    Acked { conn: ConnId, up_to: Arc<std::sync::atomic::AtomicU64> },
}

/// Where the driver commits each turn's durable changes.
pub trait Journal: Send {
    /// Stores `changes` durably, all or nothing, before anything of their turn is sent.
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError>;

    /// The database file a backup copies from; `None` when nothing is kept (in memory).
    fn database(&self) -> Option<&std::path::Path>;
}

/// The SQLite store commits each turn in one transaction.
impl Journal for Store {
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let batch = crate::persist::to_store(changes);
        blocking(|| self.apply(&batch))
    }

    fn database(&self) -> Option<&std::path::Path> {
        Some(self.path())
    }
}

/// Keeps nothing (`--in-memory`): every commit is confirmed at once.
pub struct InMemory;

impl Journal for InMemory {
    fn commit(&mut self, _changes: &[Change]) -> Result<(), StoreError> {
        Ok(())
    }

    fn database(&self) -> Option<&std::path::Path> {
        None
    }
}

/// Writes down what the driver does to the engine, for replay.
pub trait Recorder: Send {
    fn record(&mut self, step: &Step);
}

/// A recorder writing one JSON line per step (flushed at the end of every turn).
pub struct JsonLines<W: std::io::Write + Send> {
    out: std::io::BufWriter<W>,
    /// Set once a write failed: recording stops (and says so once) rather than stopping the server.
    failed: bool,
}

impl<W: std::io::Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines { out: std::io::BufWriter::new(out), failed: false }
    }

    fn write(&mut self, step: &Step) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, step)?;
        self.out.write_all(b"\n")?;
        if matches!(step, Step::Outputs(_)) {
            self.out.flush()?;
        }
        Ok(())
    }
}

impl<W: std::io::Write + Send> Recorder for JsonLines<W> {
    fn record(&mut self, step: &Step) {
        if self.failed {
            return;
        }
        if let Err(e) = self.write(step) {
            self.failed = true;
            tracing::error!(error = %e, "cannot write the input recording; recording stops");
        }
    }
}

/// What woke the driver. A short-lived value on the driver's stack: the size of its largest
/// variant (a command carrying a registration) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Woke {
    Signal(Signal),
    Command(Command, Instant),
    Timer,
}

/// What the gRPC services hold to reach the engine.
///
/// The intake is a channel plus a count of room (a semaphore of [`INTAKE_CAPACITY`] permits): a
/// sender takes a permit before it sends, and the driver gives back all it took at once at the end
/// of each turn. That is the bound of a bounded channel without its per-message cost — no lock per
/// message received, and no yield while there is room (measured: tokio's bounded channel cost
/// fan-out at saturation about 10 %).
#[derive(Clone)]
pub struct EngineHandle {
    /// Each command with the moment it was handed over, to tell how long it waited.
    commands: mpsc::UnboundedSender<(Command, Instant)>,
    room: Arc<tokio::sync::Semaphore>,
    signals: mpsc::UnboundedSender<Signal>,
    /// Where collectives' arrays move (beside the engine; see [`crate::collective`]).
    exchange: Arc<crate::collective::Exchange>,
    /// Where replica groups' state blobs move and are kept (see [`crate::group`]).
    groups: Arc<crate::group::GroupStore>,
    /// Where traces' outputs move and are kept (see [`crate::trace`]).
    traces: Arc<crate::trace::TraceStore>,
    /// What the driver measures, for `/metrics` (see [`crate::metrics`]).
    metrics: Arc<crate::metrics::Metrics>,
    /// Where the driver says that agents left (see [`crate::memory`]).
    departures: crate::memory::Departures,
}

/// The driver's ends of the channels an [`EngineHandle`] sends on.
pub struct Intake {
    commands: mpsc::UnboundedReceiver<(Command, Instant)>,
    room: Arc<tokio::sync::Semaphore>,
    signals: mpsc::UnboundedReceiver<Signal>,
    exchange: Arc<crate::collective::Exchange>,
    groups: Arc<crate::group::GroupStore>,
    traces: Arc<crate::trace::TraceStore>,
    metrics: Arc<crate::metrics::Metrics>,
    departures: crate::memory::Departures,
    /// The intake's room when empty, to tell how many commands wait.
    capacity: usize,
}

impl EngineHandle {
    /// A handle and the driver's ends of its channels (intake bounded by [`INTAKE_CAPACITY`]).
    pub fn new() -> (EngineHandle, Intake) {
        Self::with_capacity(INTAKE_CAPACITY)
    }

    /// As [`EngineHandle::new`], with `capacity` commands in the intake.
    pub fn with_capacity(capacity: usize) -> (EngineHandle, Intake) {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let room = Arc::new(tokio::sync::Semaphore::new(capacity));
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let exchange = Arc::new(crate::collective::Exchange::default());
        let groups = Arc::new(crate::group::GroupStore::default());
        let traces = Arc::new(crate::trace::TraceStore::default());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let departures = crate::memory::Departures::default();
        let handle = EngineHandle {
            commands,
            room: room.clone(),
            signals,
            exchange: exchange.clone(),
            groups: groups.clone(),
            traces: traces.clone(),
            metrics: metrics.clone(),
            departures: departures.clone(),
        };
        let intake = Intake {
            commands: commands_rx,
            room,
            signals: signals_rx,
            exchange,
            groups,
            traces,
            metrics,
            departures,
            capacity,
        };
        (handle, intake)
    }

    /// Hands a command to the driver, waiting for room in the intake (in the order room was
    /// asked for: the semaphore is fair, and a free permit goes to a waiter before anyone else).
    pub async fn send(&self, cmd: Command) -> Result<(), Status> {
        self.send_or_else(cmd, || {}).await
    }

    /// [`EngineHandle::send`], calling `waiting` first if the command has to wait for room.
    pub async fn send_or_else(&self, cmd: Command, waiting: impl FnOnce()) -> Result<(), Status> {
        let permit = match self.room.try_acquire() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                waiting();
                self.room.acquire().await.map_err(|_| shutting_down())?
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(shutting_down()),
        };
        // The driver gives the room back when it has taken the command.
        permit.forget();
        self.commands.send((cmd, Instant::now())).map_err(|_| shutting_down())
    }

    /// Where collectives' arrays move.
    pub fn exchange(&self) -> &Arc<crate::collective::Exchange> {
        &self.exchange
    }

    /// Where replica groups' state blobs move and are kept.
    pub fn groups(&self) -> &Arc<crate::group::GroupStore> {
        &self.groups
    }

    /// Where traces' outputs move and are kept.
    pub fn traces(&self) -> &Arc<crate::trace::TraceStore> {
        &self.traces
    }

    /// What the driver measures (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The same measurements, shared (for the HTTP listener's tasks, which outlive a borrow).
    pub fn shared_metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// Where the driver says that agents left, for the memory release (see [`crate::memory`]).
    pub fn departures(&self) -> crate::memory::Departures {
        self.departures.clone()
    }

    /// Where connection streams report on themselves.
    pub fn signals(&self) -> mpsc::UnboundedSender<Signal> {
        self.signals.clone()
    }

    /// Runs `f` on the engine task, read-only, and returns its answer (sent after the turn's
    /// commit).
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, Time) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Query(Box::new(move |engine, now| {
            let answer = f(engine, now);
            Box::new(move || {
                let _ = tx.send(answer);
            })
        })))
        .await?;
        rx.await.map_err(|_| shutting_down())?.map_err(|e| convert::status(&e))
    }

    /// Carries out an operator's action as `actor`; its outcome once committed (a command's when
    /// its agent answered).
    pub async fn admin(&self, actor: String, action: AdminAction) -> Result<AdminOutcome, Status> {
        let (done, answer) = oneshot::channel();
        self.send(Command::Admin { actor, action, done }).await?;
        answer.await.map_err(|_| shutting_down())?.map_err(|e| convert::status(&e))
    }
}

/// What a call gets when the engine answered an operator's action with an outcome of another
/// kind (a bug: each action has one kind of outcome).
pub fn unexpected(outcome: &AdminOutcome) -> Status {
    Status::internal(format!("unexpected answer to an operator's action: {outcome:?}"))
}

/// What a call gets when the driver has stopped.
pub fn shutting_down() -> Status {
    reason::status(Code::Unavailable, Reason::ServerShuttingDown, "the server is shutting down", [])
}

struct Conn {
    sink: ConnSink,
    blocked: Arc<AtomicBool>,
}

/// The engine's clock: milliseconds since the data directory's origin (or since the driver
/// started, without a store), monotonic within a run.
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    /// What the clock reads at `start`.
    at_start: Time,
}

impl Clock {
    /// A clock reading 0 now.
    pub fn new() -> Self {
        Clock::reading(0)
    }

    /// A clock reading `at_start` now: a restarted server continues the time of its data.
    pub fn reading(at_start: Time) -> Self {
        Clock { start: Instant::now(), at_start }
    }

    pub fn now(&self) -> Time {
        self.at_start + self.start.elapsed().as_millis() as Time
    }

    /// What the clock read at `instant` (its start, for an instant before it).
    fn time_of(&self, instant: Instant) -> Time {
        self.at_start + instant.saturating_duration_since(self.start).as_millis() as Time
    }

    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.saturating_sub(self.at_start))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The driver's state between turns.
struct Driver<J> {
    engine: Engine,
    journal: J,
    recorder: Option<Box<dyn Recorder>>,
    conns: HashMap<ConnId, Conn>,
    /// Connections with frames to pull, once the turn is committed.
    ready: Vec<ConnId>,
    /// Answers to queries, sent once the turn is committed.
    answers: Vec<Answer>,
    /// Operators waiting for their actions' answers, by origin.
    waiting: HashMap<u64, oneshot::Sender<AdminAnswer>>,
    /// Clients waiting for their context writes' answers, by origin.
    context_waiting: HashMap<u64, oneshot::Sender<Result<lockstep_core::context::Written, CoreError>>>,
    /// Clients waiting for their round calls' answers, by origin.
    round_waiting: HashMap<u64, oneshot::Sender<Result<lockstep_core::io::RoundDone, CoreError>>>,
    systems_waiting: HashMap<u64, oneshot::Sender<Result<lockstep_core::io::SystemsDone, CoreError>>>,
    next_origin: u64,
    /// Where the engine's decisions on collectives go.
    exchange: Arc<crate::collective::Exchange>,
    /// Where the engine's decisions on replica groups' state go.
    groups: Arc<crate::group::GroupStore>,
    /// Where the engine's answers on traces go.
    traces: Arc<crate::trace::TraceStore>,
    /// The last audit log entry written to the server's log (see `event_log`).
    audit_logged: u64,
    /// Where turn and commit durations go (see [`crate::metrics`]).
    metrics: Arc<crate::metrics::Metrics>,
    /// Told when agents leave, for the memory release (see [`crate::memory`]).
    departures: crate::memory::Departures,
}

/// Runs the engine until every handle is gone or `shutdown` resolves, committing each turn's
/// changes to `journal` before anything of the turn is sent. Returns the journal's error if a
/// commit failed (the driver then stops: nothing uncommitted was acknowledged).
pub async fn run<J: Journal>(
    engine: Engine,
    intake: Intake,
    shutdown: impl std::future::Future<Output = ()>,
    clock: Clock,
    journal: J,
    recorder: Option<Box<dyn Recorder>>,
) -> Result<(), StoreError> {
    let Intake { mut commands, room, mut signals, exchange, groups, traces, metrics, departures, capacity } = intake;
    let mut d = Driver {
        engine,
        journal,
        recorder,
        conns: HashMap::new(),
        ready: Vec::new(),
        answers: Vec::new(),
        waiting: HashMap::new(),
        context_waiting: HashMap::new(),
        round_waiting: HashMap::new(),
        systems_waiting: HashMap::new(),
        next_origin: 1,
        exchange,
        groups,
        traces,
        audit_logged: 0,
        metrics: metrics.clone(),
        departures,
    };
    // What was restored from the data directory happened in an earlier run: not logged again.
    d.audit_logged = d.engine.control().audit().last_seq();
    drop(d.engine.take_notices());
    // Lookups' hits are served beside the engine from the trace store's index (see `trace`),
    // kept current after every turn from the traces stored now.
    d.engine.track_trace_index();
    let stored = d.engine.take_trace_index();
    d.traces.index(stored);
    // A replay checks event times against the same clock.
    let origin = d.engine.clock_origin();
    d.record(|| Step::ClockOrigin { unix_ms: origin });
    let mut failure = None;
    // Commands taken this turn, whose room goes back at its end.
    let mut taken = 0;
    tokio::pin!(shutdown);
    loop {
        let deadline = d.engine.next_deadline();
        let woke = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            // (A closed signal channel disables this branch; the intake's closing ends the loop.)
            Some(signal) = signals.recv() => Woke::Signal(signal),
            cmd = commands.recv() => match cmd {
                Some((cmd, handed_over)) => Woke::Command(cmd, handed_over),
                None => break,
            },
            _ = sleep_until(&clock, deadline) => Woke::Timer,
        };
        let now = clock.now();
        let turn_started = Instant::now();
        let backlog = capacity.saturating_sub(room.available_permits());
        // Before anything else, the engine learns if it could not run on time: a timer that should
        // have woken it long ago, or a command that waited long to be taken.
        let behind_since = match &woke {
            Woke::Command(_, handed_over) => Some(clock.time_of(*handed_over)),
            _ => None,
        };
        if let Some(since) = deadline.into_iter().chain(behind_since).min().map(|t| d.engine.stall_began(t)) {
            let behind_ms = now.saturating_sub(since);
            if behind_ms >= d.engine.config().stall_threshold_ms() {
                if behind_ms >= d.engine.config().lease_ms() {
                    tracing::warn!(behind_ms, "the server fell behind by a lease or more; leases and acknowledgement deadlines were moved by that time");
                } else {
                    tracing::debug!(
                        behind_ms,
                        "the server fell behind; leases and acknowledgement deadlines were moved by that time"
                    );
                }
                d.handle(now, Input::ServerStalled { since });
            }
        }
        match woke {
            Woke::Signal(signal) => d.signal(now, &clock, signal),
            Woke::Command(cmd, _) => {
                d.apply(now, cmd);
                taken += 1;
            }
            Woke::Timer => d.timeout(now),
        }
        // Whatever woke the driver, the turn takes everything else that is waiting (up to a
        // turn's worth of commands): fewer, fuller turns batch more per frame and per commit.
        while taken < MAX_INPUTS_PER_TURN {
            match commands.try_recv() {
                Ok((cmd, _)) => d.apply(now, cmd),
                Err(_) => break,
            }
            taken += 1;
        }
        room.add_permits(std::mem::take(&mut taken));
        while let Ok(signal) = signals.try_recv() {
            d.signal(now, &clock, signal);
        }
        // Timers may be due after a long turn, too. Their work (a burst of synced systems falling
        // due, each walking part of the dependency graph) goes in a turn of its own, after the
        // inputs' turn is committed and answered: the inputs' answers never wait for it.
        let due = d.engine.next_deadline().is_some_and(|t| t <= clock.now());
        let inputs_ended = if due { d.end_turn().map(|()| d.timeout(clock.now())) } else { Ok(()) };
        if let Err(e) = inputs_ended.and_then(|()| d.end_turn()) {
            tracing::error!(error = %e, "a commit failed; stopping without acknowledging the uncommitted changes");
            failure = Some(e);
            break;
        }
        metrics.turn(turn_started.elapsed(), backlog);
    }
    let status = match &failure {
        None => reason::status(
            Code::Unavailable,
            Reason::ServerShuttingDown,
            "the server is shutting down; reconnect to another or the restarted server",
            [],
        ),
        Some(e) => reason::status(
            Code::Unavailable,
            Reason::StoreFailed,
            format!("the server could not store a change and is stopping (nothing uncommitted was acknowledged): {e}"),
            [],
        ),
    };
    for (_, c) in d.conns.drain() {
        send_final(c.sink.sender().clone(), status.clone());
    }
    // Senders waiting for room learn that the server is stopping.
    room.close();
    failure.map_or(Ok(()), Err)
}

impl<J: Journal> Driver<J> {
    fn record(&mut self, step: impl FnOnce() -> Step) {
        if let Some(r) = self.recorder.as_mut() {
            r.record(&step());
        }
    }

    fn handle(&mut self, now: Time, input: Input) {
        self.record(|| Step::Input { now, input: input.clone() });
        self.engine.handle(now, input);
    }

    /// Hands the engine the lookups' hits served from the trace store's index since its last
    /// input (see `crate::trace`), before anything sent after their answers.
    fn uses(&mut self, now: Time) {
        for (namespace, id) in self.traces.take_used() {
            self.handle(now, Input::Trace(lockstep_core::TraceInput::Used { namespace, id }));
        }
    }

    fn timeout(&mut self, now: Time) {
        self.uses(now);
        self.record(|| Step::Timeout { now });
        self.engine.handle_timeout(now);
    }

    fn signal(&mut self, now: Time, clock: &Clock, signal: Signal) {
        self.uses(now);
        match signal {
            Signal::Writable(conn) => self.ready.push(conn),
            Signal::Alive { connection, at } => self.handle(now, Input::Alive { connection, at: clock.time_of(at) }),
            Signal::Acked { conn, up_to } => {
                let up_to = up_to.swap(0, Ordering::AcqRel);
                if up_to > 0 {
                    let request = lockstep_core::Request::Ack { up_to };
                    self.handle(now, Input::Request { conn, request_id: 0, request });
                }
            }
            Signal::Gone(conn) => {
                if let Some(c) = self.conns.remove(&conn) {
                    // A session's reader reports the end of its stream (`Command::Ended`); a
                    // registry watch has no reader, so its stream going away ends it.
                    if matches!(c.sink, ConnSink::Registry(_) | ConnSink::Context(_) | ConnSink::Tasks(_)) {
                        self.handle(now, Input::Disconnected { conn });
                    }
                }
            }
        }
    }

    fn apply(&mut self, now: Time, cmd: Command) {
        self.uses(now);
        match cmd {
            Command::Open { conn, sink, blocked } => {
                self.conns.insert(conn, Conn { sink, blocked });
            }
            Command::Input(input) => self.handle(now, input),
            Command::Ended { conn, status } => {
                if let Some(c) = self.conns.remove(&conn) {
                    send_final(c.sink.sender().clone(), status);
                }
                self.handle(now, Input::Disconnected { conn });
            }
            Command::Admin { actor, action, done } => {
                let origin = self.next_origin;
                self.next_origin += 1;
                self.waiting.insert(origin, done);
                self.handle(now, Input::Admin { origin, actor, action });
            }
            Command::ContextWrite { writer, write, done } => {
                let origin = self.next_origin;
                self.next_origin += 1;
                self.context_waiting.insert(origin, done);
                self.handle(now, Input::ContextWrite { origin, writer, write });
            }
            Command::Round { call, done } => {
                let origin = self.next_origin;
                self.next_origin += 1;
                self.round_waiting.insert(origin, done);
                self.handle(now, Input::Round { origin, call });
            }
            Command::Systems { actor, call, done } => {
                let origin = self.next_origin;
                self.next_origin += 1;
                self.systems_waiting.insert(origin, done);
                self.handle(now, Input::Systems { origin, actor, call });
            }
            Command::Query(query) => self.answers.push(query(&self.engine, now)),
            Command::Backup(request) => request.start(self.journal.database()),
        }
    }

    /// Commits the turn, then sends what it produced.
    fn end_turn(&mut self) -> Result<(), StoreError> {
        let Driver {
            engine,
            journal,
            recorder,
            conns,
            ready,
            answers,
            waiting,
            exchange,
            groups,
            context_waiting,
            round_waiting,
            systems_waiting,
            traces,
            ..
        } = self;
        // Taken before the commit, put in the trace store's index after it and before anything of
        // the turn is answered: a lookup sent after a record's acknowledgement finds the trace.
        let indexed = engine.take_trace_index();
        let turn = engine.ready();
        if !turn.changes().is_empty() {
            let started = Instant::now();
            journal.commit(turn.changes())?;
            if journal.database().is_some() {
                self.metrics.commit(started.elapsed());
            }
        }
        let mut out = turn.committed();
        traces.index(indexed);
        for answer in answers.drain(..) {
            answer();
        }
        let mut outputs = Vec::new();
        while let Some(output) = out.poll_output() {
            if recorder.is_some() {
                outputs.push(format!("{output:?}"));
            }
            match output {
                Output::Ready(conn) => ready.push(conn),
                Output::AdminDone { origin, result } => {
                    if let Some(done) = waiting.remove(&origin) {
                        let _ = done.send(result);
                    }
                }
                Output::Close(conn, error) => {
                    let Some(c) = conns.remove(&conn) else { continue };
                    // Dropping the sink ends the stream normally.
                    if let Some(error) = error {
                        send_final(c.sink.sender().clone(), convert::status(&error));
                    }
                }
                Output::Collective(event) => exchange.apply(event),
                Output::Group(out) => groups.apply(out),
                Output::Trace(event) => traces.apply(event),
                Output::ContextDone { origin, result } => {
                    if let Some(done) = context_waiting.remove(&origin) {
                        let _ = done.send(result);
                    }
                }
                Output::RoundDone { origin, result } => {
                    if let Some(done) = round_waiting.remove(&origin) {
                        let _ = done.send(result);
                    }
                }
                Output::SystemsDone { origin, result } => {
                    if let Some(done) = systems_waiting.remove(&origin) {
                        let _ = done.send(result);
                    }
                }
            }
        }
        if let Some(r) = recorder.as_mut() {
            r.record(&Step::Outputs(outputs));
        }
        flush(&mut out, conns, ready, recorder);
        self.log_events();
        Ok(())
    }

    /// Writes what the committed turn did that operators should hear of (see `event_log`).
    fn log_events(&mut self) {
        let notices = self.engine.take_notices();
        if !notices.is_empty() {
            crate::event_log::notices(&notices);
        }
        // (A turn with more notices than are kept may have lost departures among them.)
        let left = |n: &Notice| matches!(n, Notice::AgentLeft { .. } | Notice::AgentLost { .. });
        if notices.kept().iter().any(left) || notices.dropped() > 0 {
            self.departures.happened();
        }
        let audit = self.engine.control().audit();
        if audit.last_seq() > self.audit_logged {
            audit.since(self.audit_logged).for_each(crate::event_log::audit);
            self.audit_logged = audit.last_seq();
        }
    }
}

/// Runs SQLite work that may block on the disk, telling a multi-threaded runtime so that it moves
/// other tasks off this worker meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

async fn sleep_until(clock: &Clock, deadline: Option<Time>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(clock.instant(t)).await,
        None => std::future::pending().await,
    }
}

/// Ends a stream with `status`, waiting for room if its channel is full.
fn send_final(tx: mpsc::Sender<Result<Frame, Status>>, status: Status) {
    if let Err(mpsc::error::TrySendError::Full(item)) = tx.try_send(Err(status)) {
        tokio::spawn(async move {
            let _ = tx.send(item).await;
        });
    }
}

/// Moves frames from the committed turn to every ready connection that has room.
fn flush(
    out: &mut Sendable<'_>,
    conns: &mut HashMap<ConnId, Conn>,
    ready: &mut Vec<ConnId>,
    recorder: &mut Option<Box<dyn Recorder>>,
) {
    let mut gone = Vec::new();
    for conn in ready.drain(..) {
        let Some(c) = conns.get(&conn) else {
            // No stream (yet, or any more): what is queued for it stays in the engine's view.
            continue;
        };
        let tx = c.sink.sender();
        loop {
            if tx.capacity() == 0 {
                c.blocked.store(true, Ordering::SeqCst);
                // The consumer may have made room between the check and the flag: look again.
                if !(tx.capacity() > 0 && c.blocked.swap(false, Ordering::SeqCst)) {
                    break;
                }
            }
            let frame = out.next_frame(conn, MAX_BATCH);
            if let Some(r) = recorder.as_mut() {
                r.record(&Step::Frame { conn, max_items: MAX_BATCH, frame: frame.as_ref().map(|f| format!("{f:?}")) });
            }
            let Some(frame) = frame else { break };
            if tx.try_send(Ok(frame)).is_err() {
                // Only a closed channel refuses after the room check: the stream is gone.
                gone.push(conn);
                break;
            }
        }
    }
    for conn in gone {
        conns.remove(&conn);
    }
}

/// The stream handed to tonic for a connection: converts the driver's frames to `T`, tells the
/// driver when a blocked connection has room again, and when the transport drops it.
pub struct ConnStream<T> {
    rx: mpsc::Receiver<Result<Frame, Status>>,
    conn: ConnId,
    blocked: Arc<AtomicBool>,
    signals: mpsc::UnboundedSender<Signal>,
    convert: fn(Frame) -> Option<T>,
}

impl<T> ConnStream<T> {
    pub fn new(
        rx: mpsc::Receiver<Result<Frame, Status>>,
        conn: ConnId,
        blocked: Arc<AtomicBool>,
        signals: mpsc::UnboundedSender<Signal>,
        convert: fn(Frame) -> Option<T>,
    ) -> Self {
        ConnStream { rx, conn, blocked, signals, convert }
    }
}

impl<T> futures::Stream for ConnStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            let item = match self.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => item,
                other => return other.map(|_| None),
            };
            if self.blocked.swap(false, Ordering::SeqCst) {
                let _ = self.signals.send(Signal::Writable(self.conn));
            }
            match item.map(self.convert) {
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(msg))),
                Ok(None) => continue, // a frame this kind of stream does not carry
                Err(status) => return Poll::Ready(Some(Err(status))),
            }
        }
    }
}

impl<T> Drop for ConnStream<T> {
    fn drop(&mut self) {
        let _ = self.signals.send(Signal::Gone(self.conn));
    }
}

#[cfg(test)]
mod tests {
    //! The driver without a network: channels stand in for connections, a fake journal for the
    //! store.

    use std::sync::Mutex;

    use bytes::Bytes;
    use futures::StreamExt;
    use lockstep_core::{Config, RegisterRequest, Reply, Request};

    use super::*;

    /// Records every commit; refuses the commit numbered `fail_at` (from 1) and every later one.
    #[derive(Clone, Default)]
    struct FakeJournal {
        commits: Arc<Mutex<Vec<Vec<Change>>>>,
        fail_at: Option<usize>,
    }

    impl Journal for FakeJournal {
        fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
            let mut commits = self.commits.lock().unwrap();
            if self.fail_at.is_some_and(|n| commits.len() + 1 >= n) {
                return Err(StoreError::Full { path: "fake.db".into() });
            }
            commits.push(changes.to_vec());
            Ok(())
        }

        fn database(&self) -> Option<&std::path::Path> {
            None
        }
    }

    impl FakeJournal {
        fn committed(&self) -> Vec<Change> {
            self.commits.lock().unwrap().iter().flatten().cloned().collect()
        }
    }

    struct Running {
        handle: EngineHandle,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), StoreError>>,
    }

    fn start(journal: FakeJournal, capacity: usize) -> Running {
        let (handle, intake) = EngineHandle::with_capacity(capacity);
        let (stop, stopped) = oneshot::channel::<()>();
        let mut engine = Engine::new(Config::default());
        engine.track_changes();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(run(engine, intake, shutdown, Clock::new(), journal, None));
        Running { handle, stop: Some(stop), task }
    }

    /// A session connection: its frames arrive on the returned receiver.
    struct Session {
        conn: ConnId,
        rx: mpsc::Receiver<Result<Frame, Status>>,
        blocked: Arc<AtomicBool>,
    }

    async fn open(r: &Running, id: u64, agent: &str, interests: &[&str]) -> Session {
        let conn = ConnId(id);
        let (tx, rx) = mpsc::channel(CONN_CHANNEL_FRAMES);
        let blocked = Arc::new(AtomicBool::new(false));
        r.handle.send(Command::Open { conn, sink: ConnSink::Session(tx), blocked: blocked.clone() }).await.unwrap();
        let request = RegisterRequest {
            agent_id: agent.into(),
            role: "worker".into(),
            interests: interests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        r.handle
            .send(Command::Input(Input::Register { conn, request, new_token: format!("t{id}"), connection: 0 }))
            .await
            .unwrap();
        Session { conn, rx, blocked }
    }

    async fn request(r: &Running, s: &Session, request_id: u64, request: Request) {
        r.handle.send(Command::Input(Input::Request { conn: s.conn, request_id, request })).await.unwrap();
    }

    /// Waits until the driver has gone through every command sent so far (queries are answered in
    /// order, at the end of a turn).
    async fn settle(r: &Running) {
        r.handle.query(|_, _| Ok(())).await.unwrap();
    }

    fn reply_id(frame: &Frame) -> Option<u64> {
        match frame {
            Frame::Reply { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_blocked_connection_gets_its_frames_in_order_once_it_has_room() {
        let r = start(FakeJournal::default(), 64);
        let s = open(&r, 1, "a", &[]).await;
        // 40 replies: more frames than the connection's channel holds.
        for id in 1..=40 {
            request(&r, &s, id, Request::Heartbeat).await;
        }
        settle(&r).await;
        assert_eq!(s.rx.len(), CONN_CHANNEL_FRAMES, "the driver sends no more than the channel's credit");
        assert!(s.blocked.load(Ordering::SeqCst), "the connection is marked blocked");
        // The stream reads: each frame it takes gives credit back (Writable), until all are through.
        let mut stream = ConnStream::new(s.rx, s.conn, s.blocked, r.handle.signals(), Some);
        let mut ids = Vec::new();
        while ids.len() < 40 {
            let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("frames keep coming")
                .expect("open")
                .expect("not an error");
            ids.extend(reply_id(&frame));
        }
        assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn answers_and_frames_leave_only_after_their_turn_is_committed() {
        let journal = FakeJournal::default();
        let r = start(journal.clone(), 64);
        let mut s = open(&r, 1, "a", &[]).await;
        assert!(matches!(s.rx.recv().await, Some(Ok(Frame::Registered(_)))));
        assert!(
            journal.committed().iter().any(|c| matches!(c, Change::Agent(a) if a.agent_id == "a")),
            "the registration was committed before it was acknowledged"
        );
        request(&r, &s, 7, Request::UpdateState { delta_json: r#"{"x":1}"#.into() }).await;
        let frame = s.rx.recv().await.unwrap().unwrap();
        assert_eq!(reply_id(&frame), Some(7));
        assert!(journal.committed().iter().any(|c| matches!(c, Change::State { version: 1, .. })));
        // An operator's answer too.
        let action = AdminAction::PauseAgent { namespace: String::new(), agent_id: "a".into() };
        let outcome = r.handle.admin("ops".into(), action).await.unwrap();
        assert!(matches!(outcome, AdminOutcome::Done(ref words) if words.contains("paused")), "{outcome:?}");
        assert!(journal.committed().iter().any(|c| matches!(c, Change::Paused(p) if p.agent_id == "a")));
    }

    #[tokio::test(start_paused = true)]
    async fn timers_due_while_commands_wait_get_a_turn_of_their_own_after_the_answers() {
        use lockstep_core::Participants;
        let journal = FakeJournal::default();
        let r = start(journal.clone(), 64);
        let mut a = open(&r, 1, "a", &[]).await;
        let mut b = open(&r, 2, "b", &[]).await;
        for s in [&mut a, &mut b] {
            assert!(matches!(s.rx.recv().await, Some(Ok(Frame::Registered(_)))));
        }
        let sync = Request::Sync {
            sync_id: "s".into(),
            participants: Participants::Count(2),
            timeout_ms: 100,
            payload: Bytes::new(),
            summary: false,
            quorum: None,
        };
        request(&r, &a, 1, sync).await;
        settle(&r).await;
        // b's update waits in the intake when the clock passes the barrier's deadline: the driver
        // wakes to both at once.
        request(&r, &b, 2, Request::UpdateState { delta_json: r#"{"x":1}"#.into() }).await;
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(reply_id(&b.rx.recv().await.unwrap().unwrap()), Some(2));
        assert_eq!(reply_id(&a.rx.recv().await.unwrap().unwrap()), Some(1), "the barrier timed out");
        settle(&r).await;
        let commits = journal.commits.lock().unwrap().clone();
        let turn_of = |what: fn(&Change) -> bool| commits.iter().rposition(|c| c.iter().any(what));
        let update = turn_of(|c| matches!(c, Change::State { .. })).expect("the update was committed");
        let timeout = turn_of(|c| matches!(c, Change::SyncPoint(p) if p.state == lockstep_core::SyncState::TimedOut))
            .expect("the timeout was committed");
        assert!(
            update < timeout,
            "the update's turn ({update}) must come before the timer's ({timeout}): {commits:#?}"
        );
    }

    #[tokio::test]
    async fn a_failed_commit_acknowledges_nothing_of_its_turn_and_ends_every_stream() {
        // The registration commits (1); the state update's commit (2) fails.
        let journal = FakeJournal { fail_at: Some(2), ..Default::default() };
        let r = start(journal.clone(), 64);
        let mut s = open(&r, 1, "a", &[]).await;
        assert!(matches!(s.rx.recv().await, Some(Ok(Frame::Registered(_)))));
        request(&r, &s, 7, Request::UpdateState { delta_json: r#"{"x":1}"#.into() }).await;
        let ended = s.rx.recv().await.expect("the stream is told").expect_err("with an error, not the reply");
        assert_eq!(ended.code(), tonic::Code::Unavailable);
        assert!(ended.message().contains("could not store"), "{}", ended.message());
        assert!(s.rx.recv().await.is_none(), "nothing follows, the reply least of all");
        let result = r.task.await.unwrap();
        assert!(matches!(result, Err(StoreError::Full { .. })), "{result:?}");
        assert!(!journal.committed().iter().any(|c| matches!(c, Change::State { .. })));
    }

    #[tokio::test]
    async fn shutdown_ends_every_stream_with_unavailable() {
        let mut r = start(FakeJournal::default(), 64);
        let mut a = open(&r, 1, "a", &["t"]).await;
        let mut b = open(&r, 2, "b", &[]).await;
        settle(&r).await;
        r.stop.take().unwrap().send(()).unwrap();
        assert!(r.task.await.unwrap().is_ok());
        for s in [&mut a, &mut b] {
            let mut last = None;
            while let Some(item) = s.rx.recv().await {
                last = Some(item);
            }
            let status = last.expect("something was sent").expect_err("the stream ends with a status");
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert!(status.message().contains("shutting down"), "{}", status.message());
        }
        assert!(r.handle.query(|_, _| Ok(())).await.is_err(), "a stopped driver answers nothing");
    }

    #[tokio::test]
    async fn the_intake_is_bounded_and_senders_wait_for_room() {
        let (handle, intake) = EngineHandle::with_capacity(4);
        let publish = |i: u64| {
            let request =
                Request::Publish { topic: "t".into(), payload: Bytes::from(vec![0; 8]), content_type: "".into() };
            Command::Input(Input::Request { conn: ConnId(1), request_id: i, request })
        };
        for i in 0..4 {
            handle.send(publish(i)).await.unwrap();
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), handle.send(publish(5))).await;
        assert!(waiting.is_err(), "a fifth command waits while the driver has not taken any");
        // Once the driver runs, the waiting sender gets through.
        let (_stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::spawn(run(Engine::new(Config::default()), intake, shutdown, Clock::new(), InMemory, None));
        handle.send(publish(5)).await.unwrap();
        let replied: Result<Reply, Status> = handle.query(|_, _| Ok(Reply::Ok)).await;
        assert_eq!(replied.unwrap(), Reply::Ok);
    }
}
