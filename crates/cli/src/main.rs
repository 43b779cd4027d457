//! `lockstep`: run a server, watch and steer it, demonstrate it, measure it.

mod admin;
mod bench;
mod bench_collective;
mod bench_history;
mod bench_intake;
mod bench_rounds;
mod bench_streams;
mod bench_systems;
mod bench_tasks;
mod bench_traces;
mod certs;
mod config;
mod demo;
mod intake;
mod monitor;
mod rounds;
mod shared_context;
mod soak;
mod streams;
mod systems;
mod table;
mod tasks;
mod token;
mod topics;
mod traces;
mod votes;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lockstep", version, about = "A coordination server for multi-agent and multi-engine systems")]
struct Cli {
    #[command(subcommand)]
    command: Action,
    /// How log lines are written: text (coloured only on a terminal) or json (one object per
    /// line). For `serve`, the config file's `log_format` applies when this is not given.
    #[arg(long, global = true, env = "LOCKSTEP_LOG_FORMAT", value_enum)]
    log_format: Option<config::LogFormat>,
}

#[derive(Subcommand)]
enum Action {
    /// Run a server (stops gracefully on SIGINT or SIGTERM).
    Serve(ServeArgs),
    /// Start an embedded server and a simulated trading swarm, print what happens, then stop.
    Demo(demo::DemoArgs),
    /// List registered agents.
    Agents(admin::AgentsArgs),
    /// Inspect and manage sync points (barriers).
    Sync(admin::SyncArgs),
    /// Inspect votes: open and decided, who voted what, who is missing.
    Votes(votes::VotesArgs),
    /// Shared context: read, write, list and watch keys, and their version history.
    Context(shared_context::ContextArgs),
    /// Task handoff: list, show, retry and the dead-letter list.
    Tasks(tasks::TasksArgs),
    /// Tick rounds: series and their retained rounds (who answered, who missed).
    Rounds(rounds::RoundsArgs),
    /// Execution traces: the store's counters, one trace with its output, its lineage.
    Traces(traces::TracesArgs),
    /// Event-time streams: tick controllers and latency buffers, their counters and sources.
    Streams(streams::StreamsArgs),
    /// The intake: the rule set (JSON Schemas, categorisation routes), its counters, replacing it.
    Intake(intake::IntakeArgs),
    /// Synced systems: freshness, risk, events; register, update, retire, report.
    Systems(systems::SystemsArgs),
    /// Dependencies between synced systems (upstream → downstream, impact weight).
    Deps(systems::DepsArgs),
    /// Incidents on synced systems, most urgent first; acknowledge, annotate, resolve.
    Incidents(systems::IncidentsArgs),
    /// Collectives in progress (allreduce, broadcast, ...), with who is missing.
    Collectives(admin::CollectivesArgs),
    /// Replica groups: members with their ranks, the current state version, checksum and size.
    Groups(admin::Target),
    /// Retained topics (topic history): messages, bytes, first and last sequence numbers.
    Topics(admin::Target),
    /// Signed tokens for servers that require them: mint one for agents, tools or operators.
    Token(token::TokenArgs),
    /// A private CA with server and client certificates, to try TLS (`serve --tls-cert`).
    Certs(certs::CertsArgs),
    /// Steer agents: pause, resume, stop everyone, send commands.
    Command(admin::CommandArgs),
    /// Server status: agents by status, paused agents, emergency stop, counters.
    Status(admin::AdminTarget),
    /// Health of every agent and of the system.
    Health(admin::AdminTarget),
    /// The audit log of operators' actions.
    Audit(admin::AuditArgs),
    /// Copy a running server's data to a file (consistent, online); start on the copy to restore.
    Backup(admin::BackupArgs),
    /// A live full-screen view of agents, sync points and health; pause, resume, restart agents.
    Monitor(monitor::MonitorArgs),
    /// Measure fan-out, interest routing, barriers and delta sizes on a loopback server.
    Bench(bench::BenchArgs),
    /// One participant process of the collectives benchmark (started by `lockstep bench`).
    #[command(hide = true)]
    BenchWorker(bench_collective::WorkerArgs),
    /// Minutes of load with agents and the server killed: memory over time, latencies, and no
    /// acknowledged write lost (a server with a data directory, in its own process).
    Soak(soak::SoakArgs),
    /// One process of agents of the soak (started by `lockstep soak`).
    #[command(hide = true)]
    SoakWorker(soak::WorkerArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "LOCKSTEP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serve the Admin (operators') API here only, instead of on --listen.
    #[arg(long, env = "LOCKSTEP_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Require this token on every Admin call (`authorization: Bearer <token>`).
    #[arg(long, env = "LOCKSTEP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Serve /metrics (Prometheus), /healthz and /readyz over HTTP here (e.g. 127.0.0.1:7680).
    #[arg(long, env = "LOCKSTEP_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Serve agent sessions over the lean transport here too (e.g. 127.0.0.1:7602): plain TCP
    /// frames for agents on this host, without TLS (see docs/PROTOCOL.md, "The lean transport").
    #[arg(long, env = "LOCKSTEP_LEAN_LISTEN")]
    lean_listen: Option<SocketAddr>,
    /// Require a signed token on every call of the agents' and operators' services; FILE holds
    /// the secret (at least 32 bytes). Mint tokens with `lockstep token create`.
    #[arg(long, env = "LOCKSTEP_TOKEN_SECRET_FILE", value_name = "FILE")]
    token_secret_file: Option<PathBuf>,
    /// Let a listener (agents', operators' or HTTP) be reachable beyond loopback without
    /// authentication. (`--http-public` is its former name.)
    #[arg(long, alias = "http-public", env = "LOCKSTEP_ALLOW_PUBLIC")]
    allow_public: bool,
    /// Serve every listener (agents', operators', HTTP) over TLS with this certificate chain
    /// (PEM); needs --tls-key. `lockstep certs` makes a private CA and certificates to try it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by this CA (PEM) on every listener.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// TOML configuration file (see docs/PROTOCOL.md for every key; `LOCKSTEP_<SECTION>__<KEY>`
    /// variables and these flags override it).
    #[arg(long, env = "LOCKSTEP_CONFIG")]
    config: Option<PathBuf>,
    /// Keep durable state (registry, agent state, sync points, audit log) in DIR/lockstep.db
    /// [default: ./lockstep-data].
    #[arg(long, env = "LOCKSTEP_DATA_DIR", conflicts_with = "in_memory")]
    data_dir: Option<PathBuf>,
    /// Where `lockstep backup` may write copies: inside DIR only (created if missing)
    /// [default: the data directory].
    #[arg(long, env = "LOCKSTEP_BACKUP_DIR", value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// Keep nothing on disk: everything is lost when the server stops (tests, demos).
    #[arg(long, env = "LOCKSTEP_IN_MEMORY")]
    in_memory: bool,
    /// When a commit is durable: `normal` (survives a crash of lockstep) or `full` (also survives a
    /// power loss, at the cost of an fsync per commit) [default: normal].
    #[arg(long, env = "LOCKSTEP_SYNCHRONOUS")]
    synchronous: Option<String>,
    /// How often clients heartbeat, in milliseconds.
    #[arg(long, env = "LOCKSTEP_HEARTBEAT_INTERVAL_MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Heartbeat intervals without a sign of life before an agent is lost.
    #[arg(long, env = "LOCKSTEP_LEASE_INTERVALS")]
    lease_intervals: Option<u32>,
    /// Capacity of each agent's outbound message queue.
    #[arg(long, env = "LOCKSTEP_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    /// What happens when that queue is full: drop_oldest or disconnect.
    #[arg(long, env = "LOCKSTEP_OVERFLOW_POLICY")]
    overflow_policy: Option<String>,
    /// Write every engine input, timer and frame pull to FILE (JSON lines) so that the run can be
    /// replayed into a fresh engine (debugging; needs --in-memory).
    #[arg(long, value_name = "FILE")]
    record_inputs: Option<PathBuf>,
    /// Stop (as on SIGTERM) when standard input is closed: a program that starts a private server
    /// with a pipe on its input gets it stopped when that program ends, even when it is killed.
    #[arg(long)]
    stop_with_stdin: bool,
}

/// Logs to stderr at `LOCKSTEP_LOG`'s level (by default `default_level`), in `format`.
fn init_logging(format: config::LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG").unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
    log_panics();
}

/// Makes every panic one error event too, in the log's format (with `--log-format json`, a line
/// that log pipelines keep), before the standard hook prints it and, with `RUST_BACKTRACE=1`, its
/// backtrace. Release builds abort on panic, so this is the last event lockstep logs
/// (docs/ARCHITECTURE.md, "Durability").
fn log_panics() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = (payload.downcast_ref::<&str>().copied())
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("(unnamed)").to_owned();
        let aborts = cfg!(panic = "abort");
        tracing::error!(panic = message, location, thread, aborts, "lockstep panicked");
        standard(info);
    }));
}

/// The log format: the flag (or its variable); for `serve` without it, the configuration's.
fn log_format(cli: &Cli) -> config::LogFormat {
    match (&cli.command, cli.log_format) {
        (_, Some(format)) => format,
        // A configuration that cannot be read is reported by `serve` itself, after this.
        (Action::Serve(args), None) => args.clone().settings().map(|s| s.log_format).unwrap_or_default(),
        (_, None) => config::LogFormat::Text,
    }
}

impl ServeArgs {
    /// Writes the settings given as flags (or as their environment variables, which clap reads)
    /// into the configuration document, over what the file and the general `LOCKSTEP_X__Y`
    /// variables said.
    fn apply_to(self, document: &mut toml::Table) -> anyhow::Result<()> {
        fn given(value: Option<impl serde::Serialize>) -> anyhow::Result<Option<toml::Value>> {
            value.map(config::toml_value).transpose()
        }
        // A directory named here keeps state there, even if the file said `in_memory`.
        let in_memory = self.in_memory.then_some(true).or(self.data_dir.is_some().then_some(false));
        let flags = [
            ("listen", given(self.listen)?),
            ("admin_listen", given(self.admin_listen)?),
            ("admin_token", given(self.admin_token)?),
            ("http_listen", given(self.http_listen)?),
            ("lean_listen", given(self.lean_listen)?),
            ("token_secret_file", given(self.token_secret_file)?),
            ("allow_public", given(self.allow_public.then_some(true))?),
            ("tls.cert_file", given(self.tls_cert)?),
            ("tls.key_file", given(self.tls_key)?),
            ("tls.client_ca_file", given(self.tls_client_ca)?),
            ("data_dir", given(self.data_dir)?),
            ("backup_dir", given(self.backup_dir)?),
            ("in_memory", given(in_memory)?),
            ("synchronous", given(self.synchronous)?),
            ("engine.heartbeat_interval_ms", given(self.heartbeat_interval_ms)?),
            ("engine.lease_intervals", given(self.lease_intervals)?),
            ("engine.queue_capacity", given(self.queue_capacity)?),
            ("engine.overflow_policy", given(self.overflow_policy)?),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                config::set(document, key, value)?;
            }
        }
        Ok(())
    }

    /// The settings in force: defaults, the file, `LOCKSTEP_X__Y` variables, then flags.
    fn settings(mut self) -> anyhow::Result<config::ServerConfig> {
        let (mut document, source) = match self.config.take() {
            Some(path) => {
                (config::read_file(&path)?, format!(" (config file {}, LOCKSTEP_ variables, flags)", path.display()))
            }
            None => (toml::Table::new(), " (LOCKSTEP_ variables, flags)".to_owned()),
        };
        config::apply_env(&mut document, std::env::vars())?;
        self.apply_to(&mut document)?;
        config::ServerConfig::from_document(document).with_context(|| format!("invalid configuration{source}"))
    }
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let record_inputs = args.record_inputs.take();
    let stop_with_stdin = args.stop_with_stdin;
    let settings = args.settings()?;
    let storage = settings.storage();
    if let lockstep_server::Storage::DataDir { dir, durability } = &storage {
        tracing::info!(data_dir = %dir.display(), ?durability, "keeping durable state on disk");
    }
    let listen = settings.listen;
    let options = lockstep_server::Options {
        listen,
        admin_listen: settings.admin_listen,
        http_listen: settings.http_listen,
        lean_listen: settings.lean_listen,
        allow_public: settings.allow_public,
        token_key: match &settings.token_secret_file {
            Some(path) => Some(token::read_key(path)?),
            None => None,
        },
        admin_token: settings.admin_token,
        engine: settings.engine,
        storage,
        record_inputs,
        connections: settings.connections,
        backup_dir: settings.backup_dir,
        tls: settings.tls.as_ref().map(lockstep_server::tls::Tls::load).transpose()?,
    };
    let mut server = lockstep_server::start(options).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "lockstep listening on {}", server.local_addr())?;
        if server.admin_addr() != server.local_addr() {
            writeln!(out, "lockstep admin listening on {}", server.admin_addr())?;
        }
        if let Some(http) = server.http_addr() {
            writeln!(out, "lockstep http listening on {http}")?;
        }
        if let Some(lean) = server.lean_addr() {
            writeln!(out, "lockstep lean listening on {lean}")?;
        }
        out.flush()?;
    }
    tracing::info!(addr = %server.local_addr(), "serving");
    tokio::select! {
        signal = shutdown_signal() => signal?,
        () = stdin_closed(), if stop_with_stdin => tracing::info!("standard input closed"),
        failure = server.failure() => {
            return Err(anyhow::Error::new(failure).context("the server stopped: it could not store a change"));
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await.context("server stopped with an error")?;
    Ok(())
}

/// Resolves once standard input reaches its end (or cannot be read): what is written to it is
/// ignored.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: reading a pipe blocks, and nothing else waits on it.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 512];
        let mut input = std::io::stdin().lock();
        loop {
            match input.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
                _ => {}
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo and the benchmark run servers in their own process and print what happens
    // themselves: their servers' event lines (joins, breakers...) would only interleave.
    let default_level = match cli.command {
        Action::Demo(_) | Action::Bench(_) | Action::BenchWorker(_) | Action::Soak(_) | Action::SoakWorker(_) => {
            "error"
        }
        _ => "info",
    };
    init_logging(log_format(&cli), default_level);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes), not a backtrace: these are users' errors. A
            // cause already spelled out in the message before it is not repeated.
            let mut line = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    line = if line.is_empty() { cause } else { format!("{line}: {cause}") };
                }
            }
            eprintln!("error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The command runs as a task on the worker threads, not on a third thread of its own.
    let command = runtime.spawn(async move {
        match cli.command {
            Action::Serve(a) => serve(a).await,
            Action::Demo(a) => demo::run(a).await,
            Action::Agents(a) => admin::agents(a).await,
            Action::Sync(a) => admin::sync(a).await,
            Action::Votes(a) => votes::run(a).await,
            Action::Context(a) => shared_context::run(a).await,
            Action::Tasks(a) => tasks::run(a).await,
            Action::Rounds(a) => rounds::run(a).await,
            Action::Traces(a) => traces::run(a).await,
            Action::Streams(a) => streams::run(a).await,
            Action::Intake(a) => intake::run(a).await,
            Action::Systems(a) => systems::run(a).await,
            Action::Deps(a) => systems::run_deps(a).await,
            Action::Incidents(a) => systems::run_incidents(a).await,
            Action::Collectives(a) => admin::collectives(a).await,
            Action::Groups(t) => admin::groups(t).await,
            Action::Topics(t) => topics::run(t).await,
            Action::Command(a) => admin::command(a).await,
            Action::Token(a) => token::run(a),
            Action::Certs(a) => certs::run(a),
            Action::Status(a) => admin::status(a).await,
            Action::Audit(a) => admin::audit(a).await,
            Action::Backup(a) => admin::backup(a).await,
            Action::Health(a) => admin::health(a).await,
            Action::Monitor(a) => monitor::run(a).await,
            Action::Bench(a) => bench::run(a).await,
            Action::BenchWorker(a) => bench_collective::worker(a).await,
            Action::Soak(a) => soak::run(a).await,
            Action::SoakWorker(a) => soak::worker(a).await,
        }
    });
    runtime.block_on(command)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_error_event_in_the_log() {
        use std::sync::{Arc, Mutex};
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = written.clone();
        let log =
            tracing_subscriber::fmt().json().flatten_event(true).with_writer(move || Lines(sink.clone())).finish();
        log_panics();
        // The hook runs on the panicking thread, whose subscriber this is.
        let outcome = tracing::subscriber::with_default(log, || {
            std::panic::catch_unwind(|| panic!("the turn broke an invariant: {}", 7))
        });
        assert!(outcome.is_err());
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let line =
            text.lines().find(|l| l.contains("lockstep panicked")).unwrap_or_else(|| panic!("no event in {text:?}"));
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["level"], "ERROR", "{event}");
        assert_eq!(event["panic"], "the turn broke an invariant: 7", "{event}");
        assert!(event["location"].as_str().unwrap().starts_with("crates/cli/src/main.rs:"), "{event}");
        assert_eq!(event["aborts"], false, "tests unwind: {event}");
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["lockstep", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("valid flags").command {
            Action::Serve(args) => args,
            _ => unreachable!("a serve command"),
        }
    }

    fn with_flags(file: &str, flags: &[&str]) -> config::ServerConfig {
        let mut document: toml::Table = file.parse().unwrap();
        serve_args(flags).apply_to(&mut document).unwrap();
        config::ServerConfig::from_document(document).unwrap()
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file =
            "listen = \"127.0.0.1:9000\"\nsynchronous = \"full\"\n[engine]\nqueue_capacity = 10\nlease_intervals = 4\n";
        let c = with_flags(
            file,
            &[
                "--queue-capacity",
                "30",
                "--overflow-policy",
                "disconnect",
                "--admin-token",
                "t",
                "--listen",
                "0.0.0.0:1",
            ],
        );
        assert_eq!(c.engine.queue_capacity, 30);
        assert_eq!(c.engine.overflow_policy, lockstep_core::OverflowPolicy::Disconnect);
        assert_eq!(c.engine.lease_intervals, 4, "what no flag names keeps the file's value");
        assert_eq!(c.synchronous, config::Synchronous::Full);
        assert_eq!(c.admin_token.as_deref(), Some("t"));
        assert_eq!(c.listen.port(), 1);
    }

    #[test]
    fn the_one_opt_in_for_public_listeners_is_read_under_its_former_names_too() {
        assert!(!with_flags("", &[]).allow_public);
        assert!(with_flags("allow_public = true\n", &[]).allow_public);
        assert!(with_flags("http_public = true\n", &[]).allow_public, "the file's former key");
        assert!(with_flags("", &["--allow-public"]).allow_public);
        assert!(with_flags("", &["--http-public"]).allow_public, "the former flag");
        let c = with_flags("", &["--token-secret-file", "/etc/lockstep/secret"]);
        assert_eq!(c.token_secret_file.as_deref(), Some(std::path::Path::new("/etc/lockstep/secret")));
    }

    #[test]
    fn a_data_dir_flag_keeps_state_even_if_the_file_said_in_memory() {
        let c = with_flags("in_memory = true\n", &["--data-dir", "/tmp/somewhere"]);
        assert!(matches!(c.storage(), lockstep_server::Storage::DataDir { ref dir, .. } if dir.ends_with("somewhere")));
        let c = with_flags("data_dir = \"/tmp/somewhere\"\n", &["--in-memory"]);
        assert!(matches!(c.storage(), lockstep_server::Storage::InMemory));
        let c = with_flags("", &[]);
        assert!(
            matches!(c.storage(), lockstep_server::Storage::DataDir { ref dir, .. } if dir.ends_with(config::DEFAULT_DATA_DIR))
        );
    }
}
