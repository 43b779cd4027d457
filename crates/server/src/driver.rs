//! The driver: the one task that owns the engine.
//!
//! gRPC handlers never touch product state; they send [`Command`]s here over one channel. The driver
//! applies them to the engine with the current time, fires the engine's timers at its deadline, and
//! moves the frames the engine has for each connection into that connection's small outbound
//! channel, as fast as the connection takes them (credit-based: a full channel marks the connection
//! blocked, and the connection's stream tells the driver when it has room again). The engine's own
//! bounded queues, with their overflow policies, absorb everything a slow connection cannot take.
//!
//! With a store, every turn ends with one commit: the durable changes of every input the turn
//! applied go to SQLite in one transaction, and only then do the turn's frames and answers leave
//! (acknowledge after commit; grouping a turn's inputs keeps the commits few under load). If a
//! commit fails, nothing of the turn is acknowledged: the driver ends every stream and stops, and
//! the server reports why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep_core::command::CommandOutcome;
use lockstep_core::{ConnId, CoreError, Engine, Frame, Input, Output, Time};
use lockstep_proto::convert;
use lockstep_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// Most deliveries or state changes put in one outbound frame.
pub const MAX_BATCH: usize = 256;

/// Frames buffered per connection between the driver and the connection's stream.
pub const CONN_CHANNEL_FRAMES: usize = 16;

/// Inputs the driver takes before looking at outputs again (keeps latency bounded under load).
const MAX_INPUTS_PER_TURN: usize = 1024;

/// A query or admin operation run on the engine task. It returns how to send its answer, which
/// the driver does once the turn's changes are committed.
pub type Job = Box<dyn FnOnce(&mut Engine, Time) -> Answer + Send>;

/// Sends one answer (run after the commit; dropped unsent if the commit failed).
pub type Answer = Box<dyn FnOnce() + Send>;

/// Where a connection's frames go. Frames cross the channel as engine types and are converted to
/// protobuf by the connection's own stream, so that work runs beside the driver, not on it.
pub enum ConnSink {
    Session(mpsc::Sender<Result<Frame, Status>>),
    Registry(mpsc::Sender<Result<Frame, Status>>),
}

impl ConnSink {
    fn sender(&self) -> &mpsc::Sender<Result<Frame, Status>> {
        match self {
            ConnSink::Session(tx) | ConnSink::Registry(tx) => tx,
        }
    }
}

/// Everything the driver can be asked to do.
pub enum Command {
    /// A new stream: where its frames go, and the flag its consumer checks to say it has room.
    Open { conn: ConnId, sink: ConnSink, blocked: Arc<AtomicBool> },
    /// An engine input.
    Input(Input),
    /// A request that could not be decoded: answer it with this error.
    Reject { conn: ConnId, request_id: u64, error: lockstep_core::CoreError },
    /// A blocked connection's stream consumed a frame.
    Writable(ConnId),
    /// A connection's outbound stream was dropped by the transport.
    Gone(ConnId),
    /// Run a job on the engine.
    Job(Job),
    /// Send an operator's command (`start` asks the engine to send it and returns its id); its
    /// outcome, or the refusal to send it, goes to `done`.
    SendCommand { origin: u64, start: StartCommand, done: oneshot::Sender<CommandAnswer> },
    /// Copy the committed data (see [`crate::backup`]): the driver only tells the request where
    /// the database is; the copy runs beside the engine.
    Backup(crate::backup::BackupRequest),
}

/// Starts an operator's command on the engine; returns the command's id.
pub type StartCommand = Box<dyn FnOnce(&mut Engine, Time) -> Result<u64, CoreError> + Send>;

/// How an operator's command ended: (command id, outcome), or why it was not sent.
pub type CommandAnswer = Result<(u64, CommandOutcome), CoreError>;

/// What the gRPC services hold to reach the engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl EngineHandle {
    pub fn new(commands: mpsc::UnboundedSender<Command>) -> Self {
        EngineHandle { commands }
    }

    /// Hands a command to the driver.
    pub fn send(&self, cmd: Command) -> Result<(), Status> {
        self.commands.send(cmd).map_err(|_| shutting_down())
    }

    /// The raw channel, for connection streams to report on themselves.
    pub fn sender(&self) -> mpsc::UnboundedSender<Command> {
        self.commands.clone()
    }

    /// Runs `f` on the engine task and returns its answer.
    pub async fn job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine, Time) -> Result<T, CoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Job(Box::new(move |engine, now| {
            let answer = f(engine, now);
            Box::new(move || {
                let _ = tx.send(answer);
            })
        })))?;
        rx.await.map_err(|_| shutting_down())?.map_err(|e| convert::status(&e))
    }
}

/// What a call gets when the driver has stopped.
pub fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down")
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

    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.saturating_sub(self.at_start))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the engine until every command sender is gone or `shutdown` resolves; with a `store`,
/// commits each turn's changes before anything of the turn is sent. Returns the store's error if a
/// commit failed (the driver then stops: nothing uncommitted was acknowledged).
pub async fn run(
    mut engine: Engine,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: impl std::future::Future<Output = ()>,
    clock: Clock,
    mut store: Option<Store>,
) -> Result<(), StoreError> {
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    let mut turn = Turn { ready: Vec::new(), waiting: Waiting::new(), answers: Vec::new() };
    let mut failure = None;
    tokio::pin!(shutdown);
    loop {
        let deadline = engine.next_deadline();
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                let now = clock.now();
                apply(&mut engine, &mut conns, &mut turn, store.as_ref(), now, cmd);
                for _ in 0..MAX_INPUTS_PER_TURN {
                    match commands.try_recv() {
                        Ok(cmd) => apply(&mut engine, &mut conns, &mut turn, store.as_ref(), now, cmd),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(&clock, deadline) => engine.handle_timeout(clock.now()),
        }
        // Timers may be due after a long turn, too.
        if engine.next_deadline().is_some_and(|d| d <= clock.now()) {
            engine.handle_timeout(clock.now());
        }
        if let Some(store) = store.as_mut() {
            if let Err(e) = commit(&mut engine, store) {
                tracing::error!(error = %e, "a commit failed; stopping without acknowledging the uncommitted changes");
                failure = Some(e);
                break;
            }
        }
        for answer in turn.answers.drain(..) {
            answer();
        }
        drain_outputs(&mut engine, &mut conns, &mut turn.ready, &mut turn.waiting);
        flush(&mut engine, &mut conns, &mut turn.ready);
    }
    let status = match &failure {
        None => Status::unavailable("the server is shutting down; reconnect to another or the restarted server"),
        Some(e) => Status::unavailable(format!(
            "the server could not store a change and is stopping (nothing uncommitted was acknowledged): {e}"
        )),
    };
    for (_, c) in conns.drain() {
        match c.sink {
            ConnSink::Session(tx) => send_final(tx, status.clone()),
            ConnSink::Registry(tx) => send_final(tx, status.clone()),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// What a turn collects until its changes are committed.
struct Turn {
    ready: Vec<ConnId>,
    waiting: Waiting,
    answers: Vec<Answer>,
}

/// Commits the engine's changes since the last commit, in one transaction.
fn commit(engine: &mut Engine, store: &mut Store) -> Result<(), StoreError> {
    let changes = engine.take_changes();
    if changes.is_empty() {
        return Ok(());
    }
    let batch = crate::persist::to_store(changes);
    blocking(|| store.apply(&batch))
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

/// Operators waiting for their commands' outcomes, by origin.
type Waiting = HashMap<u64, oneshot::Sender<CommandAnswer>>;

fn apply(
    engine: &mut Engine,
    conns: &mut HashMap<ConnId, Conn>,
    turn: &mut Turn,
    store: Option<&Store>,
    now: Time,
    cmd: Command,
) {
    let Turn { ready, waiting, answers } = turn;
    match cmd {
        Command::Open { conn, sink, blocked } => {
            conns.insert(conn, Conn { sink, blocked });
        }
        Command::Input(input) => engine.handle(now, input),
        Command::Reject { conn, request_id, error } => engine.reject(conn, request_id, error),
        Command::Writable(conn) => ready.push(conn),
        Command::Gone(conn) => {
            if let Some(c) = conns.remove(&conn) {
                // A session's reader reports how its stream ended (clean or not); a registry watch
                // has no reader, so its stream going away ends it.
                if matches!(c.sink, ConnSink::Registry(_)) {
                    engine.handle(now, Input::Disconnected { conn, clean: true });
                }
            }
        }
        Command::Job(job) => answers.push(job(engine, now)),
        Command::SendCommand { origin, start, done } => match start(engine, now) {
            // The outcome comes out of the engine later, as `Output::CommandDone` with `origin`.
            Ok(_) => {
                waiting.insert(origin, done);
            }
            Err(e) => answers.push(Box::new(move || {
                let _ = done.send(Err(e));
            })),
        },
        Command::Backup(request) => request.start(store.map(Store::path)),
    }
}

fn drain_outputs(
    engine: &mut Engine,
    conns: &mut HashMap<ConnId, Conn>,
    ready: &mut Vec<ConnId>,
    waiting: &mut Waiting,
) {
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Ready(conn) => ready.push(conn),
            Output::CommandDone { origin, command_id, outcome } => {
                if let Some(done) = waiting.remove(&origin) {
                    let _ = done.send(Ok((command_id, outcome)));
                }
            }
            Output::Close(conn, error) => {
                let Some(c) = conns.remove(&conn) else {
                    continue;
                };
                let Some(error) = error else { continue }; // dropping the sink ends the stream normally
                send_final(c.sink.sender().clone(), convert::status(&error));
            }
        }
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

/// Moves frames from the engine to every ready connection that has room.
fn flush(engine: &mut Engine, conns: &mut HashMap<ConnId, Conn>, ready: &mut Vec<ConnId>) {
    let mut gone = Vec::new();
    for conn in ready.drain(..) {
        let Some(c) = conns.get(&conn) else {
            // No stream (yet, or any more): drop what is queued for it from the engine's view.
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
            let Some(frame) = engine.next_frame(conn, MAX_BATCH) else { break };
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
    commands: mpsc::UnboundedSender<Command>,
    convert: fn(Frame) -> Option<T>,
}

impl<T> ConnStream<T> {
    pub fn new(
        rx: mpsc::Receiver<Result<Frame, Status>>,
        conn: ConnId,
        blocked: Arc<AtomicBool>,
        commands: mpsc::UnboundedSender<Command>,
        convert: fn(Frame) -> Option<T>,
    ) -> Self {
        ConnStream { rx, conn, blocked, commands, convert }
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
                let _ = self.commands.send(Command::Writable(self.conn));
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
        let _ = self.commands.send(Command::Gone(self.conn));
    }
}
