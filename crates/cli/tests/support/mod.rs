//! A real `lockstep serve` process on a free loopback port, for end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lockstep_client::{AgentOptions, Client};

pub struct Server {
    pub addr: String,
    /// The Admin API's address: `addr` unless started with `--admin-listen`.
    pub admin_addr: String,
    child: Child,
}

impl Server {
    /// Starts `lockstep serve --listen 127.0.0.1:0 <extra>` and waits until it listens.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", extra)
    }

    /// Starts `lockstep serve --listen <listen> <extra>` and waits until it listens.
    pub fn start_on(listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["serve", "--listen", listen])
            .args(extra)
            .env("LOCKSTEP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("lockstep binary runs");
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut read = |prefix: &str| {
            let mut line = String::new();
            out.read_line(&mut line).expect("reads a line");
            line.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}")).to_owned()
        };
        let addr = read("lockstep listening on ");
        let admin_addr =
            if extra.contains(&"--admin-listen") { read("lockstep admin listening on ") } else { addr.clone() };
        Server { addr, admin_addr, child }
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
