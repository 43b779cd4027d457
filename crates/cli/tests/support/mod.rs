//! A real `lockstep serve` process on a free loopback port, for end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lockstep_client::{AgentOptions, Client};

pub mod collective;

/// What a server started with [`Server::start_logging`] wrote to stderr, line by line, as it comes.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// The first line `wanted` accepts, waiting for it for at most `within`.
    pub async fn line(&self, within: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| wanted(l)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether the servers started here reword every error message (`LOCKSTEP_REWORD_ERRORS=1`, passed
/// on through the environment): assertions on a message's words are skipped then, while those on
/// reasons, codes and behaviour still hold.
pub fn reworded() -> bool {
    std::env::var("LOCKSTEP_REWORD_ERRORS").is_ok_and(|v| v == "1")
}

pub struct Server {
    pub addr: String,
    /// The Admin API's address: `addr` unless started with `--admin-listen`.
    pub admin_addr: String,
    /// The HTTP listener's address when started with `--http-listen`, else empty.
    pub http_addr: String,
    /// The lean transport's address when started with `--lean-listen`, else empty.
    pub lean_addr: String,
    child: Child,
}

impl Server {
    /// Starts `lockstep serve --listen 127.0.0.1:0 <extra>` and waits until it listens.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", extra)
    }

    /// Starts `lockstep serve --listen <listen> <extra>` and waits until it listens. Unless `extra`
    /// names a `--data-dir`, the server keeps nothing (`--in-memory`), so that tests never write
    /// into the working directory.
    pub fn start_on(listen: &str, extra: &[&str]) -> Server {
        Server::start_command(Command::new(env!("CARGO_BIN_EXE_lockstep")), listen, extra, None)
    }

    /// As [`Server::start`], logging at info level into the returned [`Log`] (`extra` may set
    /// the format).
    pub fn start_logging(extra: &[&str]) -> (Server, Log) {
        let log = Log::default();
        let server =
            Server::start_command(Command::new(env!("CARGO_BIN_EXE_lockstep")), "127.0.0.1:0", extra, Some(&log));
        (server, log)
    }

    /// As [`Server::start`], with the process allowed at most `max_open_files` file descriptors.
    pub fn start_with_fd_limit(max_open_files: u32, extra: &[&str]) -> Server {
        let mut sh = Command::new("sh");
        sh.args(["-c", "ulimit -n \"$0\" && exec \"$@\"", &max_open_files.to_string(), env!("CARGO_BIN_EXE_lockstep")]);
        Server::start_command(sh, "127.0.0.1:0", extra, None)
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_command(mut command: Command, listen: &str, extra: &[&str], log: Option<&Log>) -> Server {
        let storage: &[&str] = if extra.contains(&"--data-dir") { &[] } else { &["--in-memory"] };
        let (level, stderr) = if log.is_some() { ("info", Stdio::piped()) } else { ("warn", Stdio::inherit()) };
        let mut child = command
            .args(["serve", "--listen", listen])
            .args(storage)
            .args(extra)
            .env("LOCKSTEP_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("lockstep binary runs");
        if let Some(log) = log {
            let (lines, stderr) = (log.0.clone(), child.stderr.take().expect("piped"));
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().expect("not poisoned").push(line);
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut read = |prefix: &str| {
            let mut line = String::new();
            out.read_line(&mut line).expect("reads a line");
            line.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}")).to_owned()
        };
        let addr = read("lockstep listening on ");
        let admin_addr =
            if extra.contains(&"--admin-listen") { read("lockstep admin listening on ") } else { addr.clone() };
        let http_addr =
            if extra.contains(&"--http-listen") { read("lockstep http listening on ") } else { String::new() };
        let lean_addr =
            if extra.contains(&"--lean-listen") { read("lockstep lean listening on ") } else { String::new() };
        Server { addr, admin_addr, http_addr, lean_addr, child }
    }

    /// Starts `lockstep serve --listen <listen> --data-dir <dir> <extra>`: durable state in `dir`.
    pub fn start_durable(listen: &str, dir: &Path, extra: &[&str]) -> Server {
        let mut args = vec!["--data-dir", dir.to_str().expect("a UTF-8 path")];
        args.extend_from_slice(extra);
        Server::start_on(listen, &args)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr).await.expect("connects")
    }

    /// Runs the `lockstep` binary against this server and returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(args)
            .args(["--addr", &self.addr])
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`Server::cli`] off the async runtime, so the test's own agents keep running meanwhile.
    pub async fn cli_async(&self, args: &[&str]) -> (bool, String, String) {
        let (bin_args, addr): (Vec<String>, String) = (args.iter().map(|a| a.to_string()).collect(), self.addr.clone());
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
                .args(&bin_args)
                .args(["--addr", &addr])
                .output()
                .expect("runs");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .expect("the CLI ran")
    }

    /// Kills the server at once (SIGKILL), like a crash.
    /// Sends the server process a signal by name (`STOP`, `CONT`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(sent.expect("kill runs").success(), "SIG{name} could not be sent");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self, within: Duration) -> bool {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("waits") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not exit within {within:?} of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long [`serve_fails`] waits for a server to give up.
const REFUSAL_WITHIN: Duration = Duration::from_secs(10);

/// Runs `lockstep serve --listen 127.0.0.1:0 <args>`, expecting it to refuse to start. Returns
/// whether it exited by itself with a failure status (within 10 s), and its stderr. A server that
/// starts instead is killed, and the returned text says so.
pub fn serve_fails(args: &[&str]) -> (bool, String) {
    serve_fails_with_env(args, &[])
}

/// [`serve_fails`] with these environment variables set for the server.
pub fn serve_fails_with_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("LOCKSTEP_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockstep binary runs");
    let deadline = Instant::now() + REFUSAL_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = child.stdout.take().map(read_all).unwrap_or_default();
    let stderr = child.stderr.take().map(read_all).unwrap_or_default();
    match status {
        Some(status) => (!status.success(), stderr),
        None => (false, format!("still running after {REFUSAL_WITHIN:?}; stdout: {stdout:?}; stderr: {stderr:?}")),
    }
}

fn read_all(mut pipe: impl Read) -> String {
    let mut text = String::new();
    let _ = pipe.read_to_string(&mut text);
    text
}

/// A loopback address with a port that is free now, so that a server restarted on it is found
/// again by the clients of the previous one.
pub fn free_listen_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

static SCRATCH_DIRS: AtomicUsize = AtomicUsize::new(0);

/// A new empty directory under the system's temporary directory, removed with its contents when
/// dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        let n = SCRATCH_DIRS.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lockstep-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creates a scratch directory");
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn opts(id: &str, role: &str) -> AgentOptions {
    AgentOptions::new(id, role)
}

/// Waits up to `within` for `cond` to hold, polling.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw session that registers `agent_id` and then goes silent (no heartbeats, no reads), like a
/// hung process: its agent is lost when its lease runs out. Dropping it ends the session.
pub struct SilentSession {
    _requests: tokio::sync::mpsc::Sender<lockstep_client::proto::ClientMessage>,
    _replies: tonic::Response<tonic::Streaming<lockstep_client::proto::ServerMessage>>,
}

pub async fn silent_session(addr: &str, agent_id: &str, role: &str) -> SilentSession {
    use lockstep_client::proto as v1;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let register = v1::Register { agent_id: agent_id.into(), role: role.into(), ..Default::default() };
    tx.send(v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Register(register)) })
        .await
        .expect("the channel is open");
    let mut raw = v1::lockstep_client::LockstepClient::connect(format!("http://{addr}")).await.expect("connects");
    let replies = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("a session");
    SilentSession { _requests: tx, _replies: replies }
}

/// Waits for `child` to end and returns its output; a child still running after `limit` is
/// killed and the test fails naming `what`: it hangs.
pub fn finish_within(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().expect("waits").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `GET path` over a connection of its own: (status code, headers in lower case, body).
#[allow(dead_code)] // not every test binary reads HTTP
pub async fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    http_get_on(tokio::net::TcpStream::connect(addr).await.unwrap(), addr, path).await
}

/// `GET path` over `stream` (plain TCP, TLS...), to the server `host`.
#[allow(dead_code)]
pub async fn http_get_on(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: &str,
    path: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may close without close_notify once the response is complete: what was read
    // is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    (status, head.to_lowercase(), body.to_owned())
}

/// The value of the sample `name` (exactly, labels included) in an OpenMetrics text.
#[allow(dead_code)]
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
