//! # lockstep-server
//!
//! The tokio shell around [`lockstep_core::Engine`]: a gRPC service ([`grpc`]) whose handlers only
//! forward commands to one driver task ([`driver`]) that owns the engine, its clock and every
//! connection's outbound channel. [`start`] runs a server on a listener and hands back its address
//! and a shutdown handle; the `lockstep serve` command, the demo, the benchmark and the end-to-end
//! tests all run the server through it.
//!
//! With [`Storage::DataDir`] the server keeps its durable state in SQLite ([`lockstep_store`]):
//! it starts from what the data directory holds ([`persist`] converts between the engine and the
//! store), and the driver commits every turn before acknowledging anything of it.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod collective;
pub mod dashboard;
pub mod driver;
pub mod event_log;
pub mod group;
pub mod grpc;
pub mod health;
pub mod http;
pub mod http_limit;
pub mod lean;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod page;
pub mod persist;
pub mod reflection;
pub mod tls;
pub mod trace;

/// The largest message the agents' service sends. Session frames and listing pages are bounded
/// by the engine and by [`page`] to the message cap; what may exceed it is one item described on
/// its own (the status of a sync point of ten thousand participants), which the clients read
/// (the Rust client up to 64 MiB, the Python client without a limit).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lockstep_core::{Config, Engine};
use lockstep_proto::server::admin_server::{self, AdminServer};
use lockstep_proto::server::history_server::{self, HistoryServer};
use lockstep_proto::server::intake_server::{self, IntakeServer};
use lockstep_proto::server::lockstep_server::{self, LockstepServer};
use lockstep_proto::server::rounds_server::{self, RoundsServer};
use lockstep_proto::server::shared_context_server::{self, SharedContextServer};
use lockstep_proto::server::streams_server::{self, StreamsServer};
use lockstep_proto::server::systems_server::{self, SystemsServer};
use lockstep_proto::server::tasks_server::{self, TasksServer};
use lockstep_proto::server::traces_server::{self, TracesServer};
pub use lockstep_store::Durability;
use lockstep_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long shutdown waits for clients to close their connections after their streams ended.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// HTTP/2 flow-control windows: large enough that a busy stream is never paused waiting for a
/// window update (the engine's queues, not the transport, decide what happens to a slow reader).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame the server accepts: a whole collective chunk (256 KiB) in one frame rather
/// than sixteen of the default 16 KiB, which cuts the system calls of bulk transfers.
pub const MAX_FRAME: u32 = 1024 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error(transparent)]
    BadRecord(#[from] persist::BadRecord),
    #[error("the data directory {} is in use by another lockstep server (lock file {}); stop it first, or use another --data-dir", dir.display(), lock.display())]
    InUse { dir: PathBuf, lock: PathBuf },
    #[error("cannot lock the data directory {}", dir.display())]
    Lock { dir: PathBuf, source: std::io::Error },
    #[error("the data directory {} is a file, not a directory; give --data-dir a directory (it is created if missing)", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("the data directory {} cannot be restored: {source}", dir.display())]
    Restore { dir: PathBuf, source: Box<lockstep_core::CoreError> },
    #[error("cannot create the input recording {}: {source}", path.display())]
    Record { path: PathBuf, source: std::io::Error },
    #[error("cannot use the replica groups' directory {}: {source}", dir.display())]
    GroupsDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot use the traces' directory {}: {source}", dir.display())]
    TracesDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot use the backup directory {}: {source}", dir.display())]
    BackupDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot serve TLS on {addr}: {source}")]
    Tls { addr: SocketAddr, source: tonic::transport::Error },
}

/// A running server.
pub struct RunningServer {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    lean_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Resolves with the store's error if the driver stopped because a commit failed.
    failed: Option<oneshot::Receiver<StoreError>>,
}

impl RunningServer {
    /// The address the server accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the `Admin` service (the same as [`RunningServer::local_addr`] unless the
    /// server was given a separate admin address).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the lean agent transport, when it is served.
    pub fn lean_addr(&self) -> Option<SocketAddr> {
        self.lean_addr
    }

    /// Waits until the server stops by itself because it could not store a change, and says why;
    /// never resolves while it runs normally (or once [`RunningServer::shutdown`] was asked).
    pub async fn failure(&mut self) -> StoreError {
        match self.failed.as_mut() {
            Some(rx) => match rx.await {
                Ok(e) => e,
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Stops accepting, ends every stream with `Unavailable`, and waits for the server to finish:
    /// at most [`SHUTDOWN_GRACE`] for clients to close their connections, then it closes them.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                // Every stream was already told the server is going; only idle connections remain.
                self.task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where agents (and, unless `admin_listen` is set, operators) connect; port 0 picks one.
    pub listen: SocketAddr,
    /// Serve the `Admin` service here, and only here, when set.
    pub admin_listen: Option<SocketAddr>,
    /// When set, every `Admin` call must present it (`authorization: Bearer <token>`); with
    /// `token_key` set it also stands for an operator allowed everything.
    pub admin_token: Option<String>,
    /// When set, every call on the agents' and operators' services must present a token signed
    /// with this key (see [`auth`] and [`lockstep_core::auth`]); unset: open access.
    pub token_key: Option<lockstep_core::auth::Key>,
    /// The engine's settings and limits.
    pub engine: Config,
    /// Where durable state lives.
    pub storage: Storage,
    /// Write every engine input, timer and pull to this file (JSON lines), for replay with
    /// [`lockstep_core::record::Replay`]. Only for a server that starts empty (`InMemory`).
    pub record_inputs: Option<PathBuf>,
    /// How many connections are kept open, and for how long an unused one.
    pub connections: listener::ConnectionLimits,
    /// Where `Admin.Backup` may write (inside this directory, created if missing); `None`: the
    /// data directory.
    pub backup_dir: Option<PathBuf>,
    /// Serve `/metrics`, `/healthz` and `/readyz` over HTTP here (see [`http`]); `None`: no HTTP.
    pub http_listen: Option<SocketAddr>,
    /// The one opt-in for listeners reachable beyond loopback without authentication: the
    /// agents' listener without `token_key`, the operators' without `token_key` or `admin_token`,
    /// and the HTTP listener (whose endpoints ask for no token). Without it `start` refuses them.
    pub allow_public: bool,
    /// Serve every listener (agents', operators' and HTTP) over TLS with these settings
    /// (see [`tls`]); `None`: plain TCP.
    pub tls: Option<tls::Tls>,
    /// Serve agent sessions over the lean transport here too (see [`lean`]); `None`: not at all.
    /// It has no TLS: with `tls` set it must be a loopback address.
    pub lean_listen: Option<SocketAddr>,
}

impl Options {
    /// Everything on `listen`, no admin token, default engine settings, nothing kept on disk.
    pub fn new(listen: SocketAddr) -> Self {
        Options {
            listen,
            admin_listen: None,
            admin_token: None,
            engine: Config::default(),
            storage: Storage::InMemory,
            record_inputs: None,
            connections: listener::ConnectionLimits::default(),
            backup_dir: None,
            http_listen: None,
            token_key: None,
            allow_public: false,
            tls: None,
            lean_listen: None,
        }
    }
}

/// Where a server keeps its durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Nowhere: everything is lost when the process ends (tests, demos, benchmarks).
    InMemory,
    /// `dir/lockstep.db` (SQLite, WAL), locked by `dir/lockstep.lock` while the server runs.
    DataDir { dir: PathBuf, durability: Durability },
}

/// The directory inside the data directory where replica groups' state is kept.
pub const GROUPS_DIR_NAME: &str = "groups";

/// The directory inside the data directory where traces' larger outputs are kept.
pub const TRACES_DIR_NAME: &str = "traces";

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = "lockstep.lock";

/// An opened data directory: the store, the engine rebuilt from it, and the clock continuing its
/// time. The lock file stays locked while the returned `File` lives.
struct Opened {
    store: Store,
    engine: Engine,
    clock: driver::Clock,
    lock: File,
}

/// Locks and opens the data directory, and rebuilds the engine from it.
fn open_data_dir(dir: &std::path::Path, durability: Durability, config: Config) -> Result<Opened, StartError> {
    let lock_error = |source| StartError::Lock { dir: dir.to_path_buf(), source };
    if dir.exists() && !dir.is_dir() {
        return Err(StartError::NotADirectory { dir: dir.to_path_buf() });
    }
    std::fs::create_dir_all(dir)
        .map_err(|source| StoreError::Create { dir: dir.to_path_buf(), source: Box::new(source) })?;
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(lock_error)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StartError::InUse { dir: dir.to_path_buf(), lock: lock_path });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
    }
    let mut store = Store::open(dir, durability)?;
    let loaded = persist::from_store(store.load()?)?;
    let unix_now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut settings = Vec::new();
    let origin = loaded.clock_origin.unwrap_or_else(|| {
        settings.push(persist::setting(persist::CLOCK_ORIGIN, &unix_now));
        unix_now
    });
    // The settings this server runs with are recorded beside the data they govern.
    let current = serde_json::to_value(&config).expect("settings serialize to JSON");
    if loaded.engine_settings.as_ref() != Some(&current) {
        if loaded.engine_settings.is_some() {
            tracing::info!("the engine settings differ from those of the last start; recording the new ones");
        }
        settings.push(persist::setting(persist::ENGINE_SETTINGS, &current));
    }
    store.apply(&settings)?;
    // The clock goes on from where the data left it, even if the machine's clock went back.
    let clock = driver::Clock::reading(unix_now.saturating_sub(origin).max(loaded.latest + 1));
    let mut engine = Engine::new(config);
    // Event times are checked against the server's clock: the engine learns where it started.
    engine.set_clock_origin(unix_now.saturating_sub(clock.now()));
    engine
        .restore(clock.now(), loaded.restored)
        .map_err(|source| StartError::Restore { dir: dir.to_path_buf(), source: Box::new(source) })?;
    engine.track_changes();
    Ok(Opened { store, engine, clock, lock })
}

/// The listeners `options` would open beyond loopback with nothing asked of callers: the agents'
/// listener without a token key; the operators' (their own, or the agents' when they share it)
/// without a token key or an admin token; the HTTP listener, whose endpoints ask for no token.
/// TLS requiring client certificates authenticates every caller of every listener.
fn exposed_without_authentication(options: &Options) -> Vec<(&'static str, SocketAddr)> {
    if options.tls.as_ref().is_some_and(tls::Tls::authenticates_clients) {
        return Vec::new();
    }
    let public = |a: &SocketAddr| !a.ip().to_canonical().is_loopback();
    let tokens = options.token_key.is_some();
    let admin_guarded = tokens || options.admin_token.is_some();
    let mut exposed = Vec::new();
    if public(&options.listen) && !tokens {
        exposed.push(("agents' listener", options.listen));
    }
    if let Some(a) = options.admin_listen.filter(|a| public(a) && !admin_guarded) {
        exposed.push(("operators' (Admin) listener", a));
    }
    if let Some(a) = options.http_listen.filter(public) {
        exposed.push(("HTTP listener", a));
    }
    if let Some(a) = options.lean_listen.filter(|a| public(a) && !tokens) {
        exposed.push(("lean agents' listener", a));
    }
    exposed
}

fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = listener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

/// `service`, marking the connection of every call as used (see `listener`).
fn marking<S>(service: S) -> tonic::service::interceptor::InterceptedService<S, Interceptor> {
    tonic::service::interceptor::InterceptedService::new(service, listener::mark_used)
}

type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// The gRPC transport of the listener on `addr`, over TLS when `tls` is given.
fn transport(addr: SocketAddr, tls: Option<&tls::Tls>) -> Result<tonic::transport::Server, StartError> {
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)));
    match tls {
        None => Ok(server),
        Some(tls) => server.tls_config(tls.grpc()).map_err(|source| StartError::Tls { addr, source }),
    }
}

/// Binds the listeners and starts serving.
pub async fn start(options: Options) -> Result<RunningServer, StartError> {
    for (what, exposed) in exposed_without_authentication(&options) {
        if !options.allow_public {
            return Err(StartError::Config(format!(
                "the {what} ({exposed}) would be reachable beyond loopback without authentication: listen on \
                 loopback, configure authentication (token_secret_file for the agents' and operators' listeners, or \
                 an admin token for a separate admin listener), or opt in with allow_public = true (--allow-public)"
            )));
        }
        tracing::warn!(listener = what, addr = %exposed, "reachable beyond loopback without authentication (allow_public)");
    }
    let config = options.engine;
    config.validate().map_err(StartError::Config)?;
    options.connections.validate().map_err(StartError::Config)?;
    if options.admin_token.as_deref().is_some_and(str::is_empty) {
        // Taken for "no token", it would leave the operators' API open while its owner believes
        // it closed.
        return Err(StartError::Config(
            "the admin token is empty (LOCKSTEP_ADMIN_TOKEN=\"\", --admin-token \"\" or admin_token = \"\"): \
             give a non-empty token, or none at all to leave the Admin API open"
                .into(),
        ));
    }
    let recorder: Option<Box<dyn driver::Recorder>> = match (&options.record_inputs, &options.storage) {
        (None, _) => None,
        (Some(path), Storage::InMemory) => {
            let file = File::create(path).map_err(|source| StartError::Record { path: path.clone(), source })?;
            Some(Box::new(driver::JsonLines::new(file)))
        }
        (Some(_), Storage::DataDir { .. }) => {
            return Err(StartError::Config(
                "recording inputs needs a server that starts empty (--in-memory): a replay starts from nothing".into(),
            ))
        }
    };
    let opened = match &options.storage {
        Storage::InMemory => None,
        Storage::DataDir { dir, durability } => Some(open_data_dir(dir, *durability, config.clone())?),
    };
    // After the data directory is opened (it is the default place for backups, and now exists).
    let backup_dir = match (&options.backup_dir, &options.storage) {
        (Some(dir), _) | (None, Storage::DataDir { dir, .. }) => {
            backup::BackupDir::new(dir).map_err(|source| StartError::BackupDir { dir: dir.clone(), source })?
        }
        (None, Storage::InMemory) => backup::BackupDir::none(),
    };
    let (listener, addr) = bind(options.listen)?;
    // Shared-memory files of collectives left behind by a server that crashed (see collective.rs).
    let stale = lockstep_proto::shm::remove_stale(std::path::Path::new(lockstep_proto::shm::SHM_DIR));
    if stale > 0 {
        tracing::info!(files = stale, "removed shared-memory files of server processes no longer running");
    }
    let admin_listener = match options.admin_listen {
        Some(a) => Some(bind(a)?),
        None => None,
    };
    let http_listener = match options.http_listen {
        Some(a) => Some(bind(a)?),
        None => None,
    };
    let lean_listener = match options.lean_listen {
        Some(a) if options.tls.is_some() && !a.ip().to_canonical().is_loopback() => {
            return Err(StartError::Config(format!(
                "the lean agents' listener ({a}) has no TLS and the server is configured for TLS: give it a loopback \
                 address (it is meant for agents on the server's host) or leave it out"
            )))
        }
        Some(a) => Some(bind(a)?),
        None => None,
    };
    let database = match &options.storage {
        Storage::DataDir { dir, .. } => Some(dir.join(lockstep_store::DB_FILE_NAME)),
        Storage::InMemory => None,
    };
    let max_message = config.limits.max_message_bytes();

    let (engine_handle, intake) = driver::EngineHandle::new();
    let mut opened = opened;
    if let (Some(o), Storage::DataDir { dir, .. }) = (opened.as_mut(), &options.storage) {
        // Replica groups' state is kept in files beside the database (see `group`).
        let groups_dir = dir.join(GROUPS_DIR_NAME);
        let restored = engine_handle
            .groups()
            .open_dir(groups_dir.clone())
            .map_err(|source| StartError::GroupsDir { dir: groups_dir, source })?;
        for (namespace, group_id, state) in restored {
            o.engine
                .restore_group(&namespace, &group_id, state)
                .map_err(|source| StartError::Restore { dir: dir.clone(), source: Box::new(source) })?;
        }
        // Traces' larger outputs are kept in files beside the database too (see `trace`).
        let traces_dir = dir.join(TRACES_DIR_NAME);
        let present = engine_handle
            .traces()
            .open_dir(traces_dir.clone())
            .map_err(|source| StartError::TracesDir { dir: traces_dir, source })?;
        let referenced = o.engine.retain_trace_blobs(&present);
        let removed = engine_handle.traces().remove_unreferenced(&present, &referenced);
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed trace outputs no trace references (left by an interrupted record)"
            );
        }
    }
    engine_handle.traces().set_settings(&config.traces);
    let departures = engine_handle.departures();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (transport_stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stop = transport_stop_tx.clone();
    let (failed_tx, failed_rx) = oneshot::channel();
    let serving = health::Serving::default();
    let engine_stopped = serving.clone();
    // Shutdown order: the driver stops first and ends every open stream, then the health service
    // says NOT_SERVING (ending its watches), then the transports, which wait for open streams,
    // can finish.
    tokio::spawn(async move {
        let shutdown = async {
            let _ = shutdown_rx.await;
        };
        let (result, lock) = match opened {
            None => {
                let mut engine = Engine::new(config);
                let unix_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                engine.set_clock_origin(unix_now);
                (driver::run(engine, intake, shutdown, driver::Clock::new(), driver::InMemory, recorder).await, None)
            }
            Some(o) => (driver::run(o.engine, intake, shutdown, o.clock, o.store, recorder).await, Some(o.lock)),
        };
        drop(lock);
        if let Err(e) = result {
            let _ = failed_tx.send(e);
        }
        engine_stopped.stop();
        let _ = stop.send(());
    });

    let engine = engine_handle;
    let admin_token = admin::AdminToken::new(options.admin_token);
    // Every call marks its connection as used (see `listener`), then its token is checked (see
    // `auth`); each handler asks the gate what that token allows.
    let gate = auth::Gate::new(options.token_key, admin_token);
    let service = grpc::Service::new(
        engine.clone(),
        max_message,
        std::time::Duration::from_millis(options.connections.register_within_ms),
        gate.clone(),
    )
    .with_lean_port(lean_listener.as_ref().map_or(0, |(_, a)| a.port()));
    let lean_service = service.clone();
    // Shared context is served beside the agents' service, by the same service value (one
    // numbering of streams).
    let context = tonic::service::interceptor::InterceptedService::new(
        SharedContextServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // Task handoff's reads, retries and watches, likewise.
    let tasks = tonic::service::interceptor::InterceptedService::new(
        TasksServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // Traces likewise; an output streams in chunks, so no message is larger than the cap.
    let traces = tonic::service::interceptor::InterceptedService::new(
        TracesServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // Tick rounds' series, openings and reads, likewise.
    let rounds = tonic::service::interceptor::InterceptedService::new(
        RoundsServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // Event-time streams likewise (creating and removing checks the admin token per call).
    let streams = tonic::service::interceptor::InterceptedService::new(
        StreamsServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // Topic history's listing likewise.
    let history = tonic::service::interceptor::InterceptedService::new(
        HistoryServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // The intake's rule set likewise (replacing it checks the admin token per call).
    let intake = tonic::service::interceptor::InterceptedService::new(
        IntakeServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // The sync monitor likewise (its changes check the admin token per call).
    let systems = tonic::service::interceptor::InterceptedService::new(
        SystemsServer::new(service.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        gate.interceptor(),
    );
    // A session refused for its token is refused once its registration arrived (see `auth`).
    let agents = auth::SessionGate::new(
        tonic::service::interceptor::InterceptedService::new(
            LockstepServer::new(service)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
            gate.interceptor(),
        ),
        gate.clone(),
        std::time::Duration::from_millis(options.connections.register_within_ms),
    );
    let http_engine = engine.clone();
    let admin_service = admin::AdminService::new(engine, backup_dir, gate.clone());
    // The dashboard's actions are calls of this same service (see `dashboard`).
    let http_admin = (admin_service.clone(), gate.clone());
    let admin = AdminServer::with_interceptor(admin_service, gate.interceptor());
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let counts = Arc::new(listener::Counts::default());
    let incoming = listener::accepted(listener, options.connections.clone(), counts.clone());
    let admin_addr = admin_listener.as_ref().map(|(_, a)| *a);
    // What each port serves, by gRPC name, for its health and reflection services.
    let agent_services = [
        lockstep_server::SERVICE_NAME,
        shared_context_server::SERVICE_NAME,
        tasks_server::SERVICE_NAME,
        traces_server::SERVICE_NAME,
        rounds_server::SERVICE_NAME,
        streams_server::SERVICE_NAME,
        history_server::SERVICE_NAME,
        intake_server::SERVICE_NAME,
        systems_server::SERVICE_NAME,
    ];
    let task = match admin_listener {
        None => {
            let services = [&agent_services[..], &[admin_server::SERVICE_NAME]].concat();
            let router = transport(addr, options.tls.as_ref())?
                .add_service(marking(serving.service(&services)))
                .add_service(marking(reflection::v1(&services)))
                .add_service(marking(reflection::v1alpha(&services)))
                .add_service(agents)
                .add_service(context)
                .add_service(tasks)
                .add_service(traces)
                .add_service(rounds)
                .add_service(streams)
                .add_service(history)
                .add_service(intake)
                .add_service(systems)
                .add_service(admin);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(&transport_stop_tx)))
        }
        Some((admin_listener, admin_addr)) => {
            let admin_incoming = listener::accepted(admin_listener, options.connections.clone(), counts.clone());
            let admin_services = [admin_server::SERVICE_NAME];
            let admin_task = tokio::spawn(
                transport(admin_addr, options.tls.as_ref())?
                    .add_service(marking(serving.service(&admin_services)))
                    .add_service(marking(reflection::v1(&admin_services)))
                    .add_service(marking(reflection::v1alpha(&admin_services)))
                    .add_service(admin)
                    .serve_with_incoming_shutdown(admin_incoming, stopped(&transport_stop_tx)),
            );
            let agents_task = transport(addr, options.tls.as_ref())?
                .add_service(marking(serving.service(&agent_services)))
                .add_service(marking(reflection::v1(&agent_services)))
                .add_service(marking(reflection::v1alpha(&agent_services)))
                .add_service(agents)
                .add_service(context)
                .add_service(tasks)
                .add_service(traces)
                .add_service(rounds)
                .add_service(streams)
                .add_service(history)
                .add_service(intake)
                .add_service(systems)
                .serve_with_incoming_shutdown(incoming, stopped(&transport_stop_tx));
            tokio::spawn(async move {
                let result = agents_task.await;
                let _ = admin_task.await;
                result
            })
        }
    };
    let lean_addr = lean_listener.as_ref().map(|(_, a)| *a);
    if let Some((lean_listener, _)) = lean_listener {
        let incoming = listener::accepted(lean_listener, options.connections.clone(), counts.clone());
        tokio::spawn(lean::serve(incoming, lean_service, gate.clone(), stopped(&transport_stop_tx)));
    }
    tokio::spawn(memory::release_after_departures(departures, stopped(&transport_stop_tx)));
    let http_addr = http_listener.as_ref().map(|(_, a)| *a);
    if let Some((http_listener, _)) = http_listener {
        let (admin, gate) = http_admin;
        let dashboard = dashboard::DashboardState {
            dashboard: Arc::new(dashboard::Dashboard::new(http_engine.clone())),
            admin,
            gate,
            metrics: http_engine.shared_metrics(),
        };
        let state = http::HttpState { engine: http_engine, serving: serving.clone(), database, dashboard };
        let stop = stopped(&transport_stop_tx);
        let tls = options.tls.clone();
        tokio::spawn(async move {
            if let Err(e) = http::serve(http_listener, state, tls, stop).await {
                tracing::error!(error = %e, "the HTTP listener stopped");
            }
        });
    }
    Ok(RunningServer {
        addr,
        admin_addr: admin_addr.unwrap_or(addr),
        http_addr,
        lean_addr,
        shutdown: Some(shutdown_tx),
        task,
        failed: Some(failed_rx),
    })
}
