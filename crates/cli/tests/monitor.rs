//! End-to-end: `lockstep monitor` in a real terminal (a detached tmux session) against a real
//! `lockstep serve`, driven by keys the way an operator would over SSH.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use lockstep_client::{proto as v1, AgentFilter, Participants, RoundParticipants, RoundSeriesSpec};
use serde_json::json;
use support::{eventually, opts, Server};

/// How long the screen may take to show what the test waits for.
const SCREEN_WITHIN: Duration = Duration::from_secs(15);

/// `lockstep monitor <args>` running in a tmux server of its own (so that no other tmux session is
/// touched), in a 160x45 terminal. Dropping it ends the tmux server.
struct Monitor {
    socket: String,
    /// Where the monitor's stderr goes: the screen is gone once it exits.
    stderr: std::path::PathBuf,
}

impl Monitor {
    fn start(name: &str, args: &[&str]) -> Monitor {
        let found = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test runs the monitor in tmux, which is not installed: `apt-get install -y tmux` \
             (scripts/test.sh installs it)"
        );
        let socket = format!("lockstep-monitor-{name}-{}", std::process::id());
        let stderr = std::env::temp_dir().join(format!("{socket}.stderr"));
        let command =
            format!("exec '{}' monitor {} 2>'{}'", env!("CARGO_BIN_EXE_lockstep"), args.join(" "), stderr.display());
        let monitor = Monitor { socket, stderr };
        monitor.tmux(&["new-session", "-d", "-s", "monitor", "-x", "160", "-y", "45", &command]);
        monitor
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "monitor"]).stdout).into_owned()
    }

    fn running(&self) -> bool {
        self.tmux(&["has-session", "-t", "monitor"]).status.success()
    }

    /// Types keys, by tmux's names (`Down`, `Escape`, `p`...).
    fn keys(&self, keys: &[&str]) {
        let sent = self.tmux(&[&["send-keys", "-t", "monitor"], keys].concat());
        assert!(sent.status.success(), "send-keys: {}", String::from_utf8_lossy(&sent.stderr));
    }

    /// Waits until the screen shows every one of `texts`; returns the screen.
    async fn shows(&self, texts: &[&str]) -> String {
        self.shows_where(texts, |screen| texts.iter().all(|t| screen.contains(t))).await
    }

    /// Waits until one line of the screen shows every one of `texts`; returns the screen.
    async fn shows_in_a_line(&self, texts: &[&str]) -> String {
        self.shows_where(texts, |screen| screen.lines().any(|l| texts.iter().all(|t| l.contains(t)))).await
    }

    async fn shows_where(&self, texts: &[&str], shown: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_WITHIN;
        loop {
            let screen = self.screen();
            if shown(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {texts:?}:\n{screen}\nmonitor's stderr: {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ends(&self) -> bool {
        eventually(Duration::from_secs(5), || async { !self.running() }).await
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

#[tokio::test]
async fn the_monitor_shows_agents_state_and_sync_points_and_pauses_the_selected_agent() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let recorder = client.register(opts("recorder", "sink")).await.unwrap();
    let risk = client.register(opts("risk-1", "risk")).await.unwrap();
    let strategy = client.register(opts("strategy-1", "strategy")).await.unwrap();
    strategy.update_state(&json!({"confidence": 0.8, "last_signal": "BUY", "pnl": 1.5})).await.unwrap();
    // strategy-1 waits at round-1 for risk-1, which never comes.
    let waiting = strategy.clone();
    tokio::spawn(async move {
        let both = Participants::Agents(vec!["strategy-1".into(), "risk-1".into()]);
        waiting.sync("round-1", both, Duration::from_secs(120), &b""[..]).await
    });
    assert!(
        eventually(SCREEN_WITHIN, || async {
            client.list_sync_points().await.unwrap().iter().any(|s| s.missing == ["risk-1"])
        })
        .await
    );

    let monitor = Monitor::start("pause", &["--addr", &server.addr]);
    let screen =
        monitor.shows(&["recorder", "risk-1", "strategy-1", "0.8", "BUY", "1.5", "round-1", "1/2", "closed"]).await;
    let round = screen.lines().find(|l| l.contains("round-1")).unwrap();
    assert!(round.contains("risk-1"), "the sync point names who is missing: {round}");
    assert!(screen.contains("health 100%"), "an open Admin API answers Health:\n{screen}");

    // Rows are sorted by id: the first Down selects recorder.
    monitor.keys(&["Down", "p"]);
    assert!(eventually(SCREEN_WITHIN, || async { recorder.is_paused() }).await, "{}", monitor.screen());
    let agents = client.list_agents(AgentFilter::default()).await.unwrap();
    let status = |id: &str| agents.iter().find(|a| a.agent_id == id).unwrap().status;
    assert_eq!(status("recorder"), v1::AgentStatus::Paused as i32);
    assert!(!risk.is_paused() && !strategy.is_paused(), "only the selected agent is paused");
    monitor.shows(&["pause recorder: agent 'recorder' paused"]).await;
    monitor.shows_in_a_line(&["▶ recorder", "paused"]).await;

    monitor.keys(&["r"]);
    assert!(eventually(SCREEN_WITHIN, || async { !recorder.is_paused() }).await, "{}", monitor.screen());

    monitor.keys(&["q"]);
    assert!(monitor.ends().await, "q quits:\n{}", monitor.screen());
}

#[tokio::test]
async fn without_the_admin_token_health_is_unknown_and_actions_say_why() {
    let server = Server::start(&["--admin-token", "s3cret"]);
    let client = server.client().await;
    let _worker = client.register(opts("worker-1", "worker")).await.unwrap();

    let monitor = Monitor::start("token", &["--addr", &server.addr]);
    let screen = monitor.shows(&["worker-1", "health ?"]).await;
    assert!(screen.contains("--token"), "a hint says what to do:\n{screen}");
    monitor.keys(&["j", "p"]);
    monitor.shows(&["pause worker-1 failed", "admin token"]).await;
    monitor.keys(&["Escape"]);
    assert!(monitor.ends().await, "Esc quits:\n{}", monitor.screen());

    let monitor = Monitor::start("token-given", &["--addr", &server.addr, "--token", "s3cret"]);
    monitor.shows(&["worker-1", "health 100%"]).await;
}

/// `lockstep serve --listen addr`, killed when dropped: a server started again where one was.
struct ServeOn(std::process::Child);

impl ServeOn {
    fn start(addr: &str) -> ServeOn {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["serve", "--in-memory", "--listen", addr])
            .env("LOCKSTEP_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("lockstep binary runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("reads");
        assert!(line.starts_with("lockstep listening on"), "{line:?}");
        ServeOn(child)
    }
}

impl Drop for ServeOn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_server_that_goes_away_is_shown_disconnected_and_back_when_it_returns() {
    let mut server = Server::start(&[]);
    let client = server.client().await;
    let _worker = client.register(opts("worker-1", "worker")).await.unwrap();
    let monitor = Monitor::start("lost", &["--addr", &server.addr, "--interval-ms", "200"]);
    monitor.shows(&["worker-1", "connected"]).await;

    assert!(server.terminate(Duration::from_secs(10)));
    let screen = monitor.shows(&["disconnected — retrying"]).await;
    assert!(screen.contains("worker-1"), "the last view stays on screen:\n{screen}");
    assert!(monitor.running(), "the monitor keeps going");

    let _again = ServeOn::start(&server.addr);
    let client = lockstep_client::Client::connect(&server.addr).await.unwrap();
    let _newcomer = client.register(opts("worker-2", "worker")).await.unwrap();
    // worker-1's client reconnects by itself and registers again with the new server.
    let screen = monitor.shows(&["worker-1", "worker-2", "connected"]).await;
    assert!(!screen.contains("disconnected"), "{screen}");
    monitor.keys(&["q"]);
    assert!(monitor.ends().await);
}

#[test]
fn an_unreachable_server_is_a_plain_error_at_start() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_lockstep")).args(["monitor", "--addr", "127.0.0.1:1"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot connect to lockstep at 127.0.0.1:1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_open_rounds_whom_a_closed_round_missed_and_tick_controllers() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let alpha = client.register(opts("alpha", "strategy")).await.unwrap();
    let hung = client.register(opts("hung", "strategy")).await.unwrap();
    let (mut alpha_in, mut hung_in) = (alpha.rounds().unwrap(), hung.rounds().unwrap());
    let both = || RoundParticipants::Agents(vec!["alpha".into(), "hung".into()]);
    let rounds = client.rounds();
    // `slow` waits a minute for its answers; `fast` gives up after 200 ms.
    rounds.create(&RoundSeriesSpec::new("slow", both(), 60_000, "slow.merged")).await.unwrap();
    rounds.create(&RoundSeriesSpec::new("fast", both(), 200, "fast.merged")).await.unwrap();
    let bars = v1::TickerSpec {
        id: "bars".into(),
        inputs: vec!["trades.>".into()],
        output: "ticks.bars".into(),
        period_ms: 100,
        ..Default::default()
    };
    client.streams(None, None).unwrap().create_ticker(bars).await.unwrap();

    rounds.open("slow", &json!({}), 1).await.unwrap();
    rounds.open("fast", &json!({}), 1).await.unwrap();
    // alpha answers both rounds; hung takes its inputs and never answers.
    for _ in 0..2 {
        let input = tokio::time::timeout(SCREEN_WITHIN, alpha_in.next()).await.unwrap().unwrap();
        input.answer(&json!({"alpha": 1})).await.unwrap();
        tokio::time::timeout(SCREEN_WITHIN, hung_in.next()).await.unwrap().unwrap();
    }

    let monitor = Monitor::start("rounds", &["--addr", &server.addr, "--interval-ms", "200"]);
    // The fast round may still be open at the first refresh: wait for its outcome.
    let screen = monitor.shows(&["round slow #1", "round fast #1: timeout", "ticker bars"]).await;
    let line = |what: &str| screen.lines().find(|l| l.contains(what)).unwrap().to_owned();
    let open = line("round slow #1");
    assert!(open.contains("1/2") && open.contains("hung"), "the open round waits for hung: {open}");
    let missed = line("round fast #1");
    assert!(missed.contains("timeout") && missed.contains("missed hung (timeout)"), "{missed}");
    assert!(line("ticker bars").contains("0 sources"), "{screen}");

    // Once hung answers, the slow round closes complete and no longer waits.
    hung.answer_round("slow", 1, &json!({"hung": 1})).await.unwrap();
    let screen = monitor.shows(&["round slow #1: complete, 2 answered"]).await;
    assert!(!screen.lines().any(|l| l.contains("round slow #1") && l.contains("1/2")), "{screen}");
    monitor.keys(&["q"]);
    assert!(monitor.ends().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_stale_and_failed_systems_their_incidents_by_priority_and_the_risk_downstream() {
    use lockstep_client::systems::{Criticality, Report, Status, SystemSpec};
    let server = Server::start(&[]);
    let client = server.client().await;
    let ops = client.systems(None, None).unwrap();
    let spec = |name: &str, cadence_ms, criticality| SystemSpec {
        name: name.into(),
        cadence_ms,
        criticality,
        ..Default::default()
    };
    // `feed` goes stale 300 ms after its registration; `orders` fails; `report` is fed by both.
    ops.register(&spec("feed", 300, Criticality::Low)).await.unwrap();
    ops.register(&spec("orders", 3_600_000, Criticality::Critical)).await.unwrap();
    ops.register(&spec("report", 3_600_000, Criticality::High)).await.unwrap();
    ops.depend("feed", "report", 0.5).await.unwrap();
    ops.depend("orders", "report", 1.0).await.unwrap();
    let failed =
        Report { system: "orders".into(), reporter: "etl".into(), status: Some(Status::Failed), ..Default::default() };
    ops.report(&failed).await.unwrap();

    let monitor = Monitor::start("systems", &["--addr", &server.addr, "--interval-ms", "200"]);
    // The systems and the incidents are two reads: wait for a refresh that has both changes.
    // (Ids follow the order things happened, which a busy machine may swap: not asserted.)
    let screen = monitor.shows(&[" orders failed: severity 1", " feed stale: ", "stale: feed", "at risk:"]).await;
    let lines: Vec<&str> = screen.lines().collect();
    let at = |what: &str| lines.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("{what}:\n{screen}"));
    // The critical failure comes before the low-criticality staleness.
    assert!(at(" orders failed: ") < at(" feed stale: "), "{screen}");
    assert!(lines[at("at risk:")].contains("orders 100%, report 100%, feed 80%"), "{screen}");
    assert!(lines[at("systems: 3")].contains("1 stale · 1 failed"), "{screen}");
    monitor.keys(&["q"]);
    assert!(monitor.ends().await);
}
