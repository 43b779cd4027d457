//! The `lockstep` command itself: help, configuration errors, the demo and the benchmark.

use std::process::Command;

fn lockstep(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_lockstep")).args(args).env("LOCKSTEP_LOG", "warn").output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command() {
    let (ok, out, _) = lockstep(&["--help"]);
    assert!(ok);
    for cmd in ["serve", "demo", "agents", "sync", "bench", "tasks"] {
        assert!(out.contains(cmd), "--help lacks {cmd}: {out}");
    }
    let (ok, out, _) = lockstep(&["sync", "--help"]);
    assert!(ok);
    for cmd in ["list", "stats", "status", "diagnose", "force-complete", "cleanup"] {
        assert!(out.contains(cmd), "sync --help lacks {cmd}: {out}");
    }
}

#[test]
fn bad_configuration_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("lockstep-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[engine]\nheartbeat = 5\n").unwrap();
    let (ok, _, err) =
        lockstep(&["serve", "--in-memory", "--listen", "127.0.0.1:0", "--config", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("invalid configuration") && err.contains("`engine.heartbeat`"), "{err}");
    // Any key of the file can come from the environment; a bad value is named by its key.
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
        .env("LOCKSTEP_LOG", "warn")
        .env("LOCKSTEP_LIMITS__MAX_INTERESTS", "many")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("`limits.max_interests`: invalid type: string \"many\""), "{err}");
    let (ok, _, err) = lockstep(&["serve", "--in-memory", "--listen", "127.0.0.1:0", "--heartbeat-interval-ms", "0"]);
    assert!(!ok);
    assert!(err.contains("heartbeat_interval_ms must be at least 1"), "{err}");
    let (ok, _, err) = lockstep(&["agents", "--addr", "127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("cannot connect to lockstep at 127.0.0.1:1"), "{err}");
    assert!(!err.contains("backtrace"), "users get one line, not a backtrace: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_runs_a_swarm_through_phase_barriers_and_ends() {
    let (ok, out, err) = lockstep(&["demo", "--rounds", "2", "--pause-ms", "0"]);
    assert!(ok, "demo failed: {err}");
    for expected in [
        "joined  strategy-momentum",
        "── round 2",
        "round-2/data released 5 agents",
        "round-2/decide released; payloads exchanged: ",
        "risk_sentinel",
        "→ risk_sentinel: command 'report' answered {\"exposure\":",
        "recorder: closed → open",
        "recorder: half_open → closed",
        // Three server-driven tick rounds of the strategies, each merged into one new version.
        "tick                   round 3 ",
        "strategies.book v3: strategy-mean-revert ",
        "joined late; replayed 6 trades: market.btc.trades #1..#2, market.eth.trades #1..#2, market.sol.trades #1..#2",
        // The intake desk: one record refused by the schema (and dead-lettered), four categorised.
        "refused {\"px\":\"n/a\",\"symbol\":\"sol\"}: the record: \"kind\" is a required property",
        "market_data.btc ← {\"kind\":\"tick\",\"px\":64210.5,\"symbol\":\"BTC\"} (#1 from intake by rule intake/market)",
        "execution_result ← {\"kind\":\"fill\",\"order\":\"o-17\",\"qty\":2} (#2 from intake by rule intake/execution)",
        "risk_metrics ← {\"kind\":\"risk\",\"var\":0.12} (#3 from intake by rule intake/risk)",
        "scanner_data ← {\"kind\":\"scan\",\"pattern\":\"breakout\",\"symbol\":\"eth\"} (#4 from intake by rule intake/scanner)",
        "intake.dead ← {\"px\":\"n/a\",\"symbol\":\"sol\"} (dead-letter copy, as published)",
        "demo finished",
    ] {
        assert!(out.contains(expected), "demo output lacks {expected:?}:\n{out}");
    }
    // Messages routed to the recorder while its breaker was open are counted, not lost silently.
    assert!(out.contains("messages published") && out.contains("dropped"), "{out}");
}

#[test]
fn the_benchmark_runs_and_writes_json() {
    let file = std::env::temp_dir().join(format!("lockstep-bench-{}.json", std::process::id()));
    let (ok, out, err) =
        lockstep(&["bench", "--quick", "--only", "barrier", "--sizes", "10", "--json", file.to_str().unwrap()]);
    assert!(ok, "bench failed: {err}");
    assert!(out.contains("barrier"), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let scenarios: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(scenarios, ["barrier", "barrier-summary"], "released with whole outcomes, then with summaries");
    for row in rows {
        assert_eq!(row["count"], 20, "{row}");
        assert!(row["p99_us"].as_u64().unwrap() > 0, "{row}");
    }
    // The results name the binary they are of: its size, and what a panic does (tests unwind).
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_lockstep")).unwrap().len();
    assert_eq!(doc["binary"]["bytes"], binary, "{}", doc["binary"]);
    assert_eq!(doc["binary"]["panic"], "unwind", "{}", doc["binary"]);
    std::fs::remove_file(&file).unwrap();
}

/// A fixed rate under 1,000 messages/s, and one that is not a multiple of it, is offered as asked
/// (the publisher once counted in whole messages per millisecond and sent nothing below 1,000/s).
#[test]
fn the_fixed_rate_fan_out_offers_low_rates_as_asked() {
    let file = std::env::temp_dir().join(format!("lockstep-bench-rate-{}.json", std::process::id()));
    let args = ["bench", "--quick", "--only", "fanout-rate", "--sizes", "3", "--rate", "150", "--json"];
    let (ok, _, err) = lockstep(&[&args[..], &[file.to_str().unwrap()]].concat());
    assert!(ok, "bench failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let row = &doc["rows"][0];
    assert_eq!(row["scenario"], "fanout-rate", "{doc}");
    // `--quick`: one second, so 150 messages to each of the 3 subscribers.
    assert_eq!((row["count"].as_u64(), row["lost"].as_u64()), (Some(450), Some(0)), "{row}");
    let (ok, _, err) = lockstep(&["bench", "--quick", "--only", "fanout-rate", "--rate", "0"]);
    assert!(!ok && err.contains("--rate"), "a rate of 0 is refused: {err}");
    std::fs::remove_file(&file).unwrap();
}

/// The soak, shortened: agents in two worker processes, one killed, the server killed and
/// restarted; every acknowledged write is still there, and it says so having checked.
#[test]
fn the_soak_kills_agents_and_the_server_and_loses_no_acknowledged_write() {
    let file = std::env::temp_dir().join(format!("lockstep-soak-{}.json", std::process::id()));
    let args = ["soak", "--agents", "20", "--workers", "2", "--group", "5", "--period-ms", "500", "--seconds", "16"];
    let faults = ["--kill-every-s", "4", "--restart-at-s", "9", "--json", file.to_str().unwrap()];
    let (ok, _, err) = lockstep(&[&args[..], &faults[..]].concat());
    assert!(ok, "soak failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["server_restarts"], 1, "{doc}");
    assert!(doc["worker_kills"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(doc["lost_acknowledged_writes"], 0, "{doc}");
    assert!(doc["checks"]["after_kills"]["agents"].as_u64().unwrap() > 0, "the killed agents were checked: {doc}");
    assert!(doc["checks"]["at_the_end"]["agents"].as_u64().unwrap() >= 20, "every agent at the end: {doc}");
    for measure in ["acknowledged_writes", "deliveries", "barrier_rounds"] {
        assert!(doc[measure].as_u64().unwrap() > 0, "{measure}: {doc}");
    }
    assert!(!doc["rss_bytes"].as_array().unwrap().is_empty(), "{doc}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn the_round_trip_benchmarks_time_real_round_trips() {
    for (only, scenario) in
        [("publish-confirm", "publish-confirm"), ("command", "command-roundtrip"), ("request", "request-reply")]
    {
        let file = std::env::temp_dir().join(format!("lockstep-bench-{only}-{}.json", std::process::id()));
        let (ok, _, err) = lockstep(&["bench", "--quick", "--only", only, "--json", file.to_str().unwrap()]);
        assert!(ok, "bench --only {only} failed: {err}");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let rows = doc["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["scenario"], scenario);
        assert!(rows[0]["count"].as_u64().unwrap() > 0, "{rows:?}");
        let (p50, p99) = (rows[0]["p50_us"].as_u64().unwrap(), rows[0]["p99_us"].as_u64().unwrap());
        assert!(p50 > 0 && p99 >= p50, "{rows:?}");
        std::fs::remove_file(&file).unwrap();
    }
}

#[test]
fn the_idle_benchmark_reports_the_servers_memory_and_cpu() {
    let file = std::env::temp_dir().join(format!("lockstep-bench-idle-{}.json", std::process::id()));
    let (ok, _, err) = lockstep(&["bench", "--quick", "--only", "idle", "--json", file.to_str().unwrap()]);
    assert!(ok, "bench --only idle failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let scenarios: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(scenarios, ["idle-agents"]);
    let idle = &doc["extra"]["idle"][0];
    assert_eq!(idle["n"], 100);
    // A hundred sessions take memory: the server grew, and by less than a MiB per agent.
    let (before, after) = (idle["rss_before_bytes"].as_u64().unwrap(), idle["rss_bytes"].as_u64().unwrap());
    assert!(before > 0 && after > before, "{idle}");
    let per_agent = idle["rss_per_agent_bytes"].as_u64().unwrap();
    assert!(per_agent > 0 && per_agent < 1 << 20, "{idle}");
    // CPU time over wall time: no process uses more than all the machine's cores.
    let cores = doc["machine"]["cores"].as_f64().unwrap();
    let cpu = idle["cpu_percent_of_one_core"].as_f64().unwrap();
    assert!((0.0..=100.0 * cores).contains(&cpu), "{idle}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn the_sync_monitor_benchmark_ingests_every_event_and_sees_every_canary_go_stale() {
    let file = std::env::temp_dir().join(format!("lockstep-bench-systems-{}.json", std::process::id()));
    let (ok, _, err) = lockstep(&["bench", "--quick", "--only", "systems", "--json", file.to_str().unwrap()]);
    assert!(ok, "bench --only systems failed: {err}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let scenarios: Vec<&str> = rows.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(scenarios, ["systems-ingest", "systems-freshness"]);
    // --quick: 1,000 systems, 200 events/s for 5 s, 10 canaries nobody reports on.
    assert_eq!((rows[0]["count"].as_u64(), rows[0]["lost"].as_u64()), (Some(1_000), Some(0)), "{rows:?}");
    assert_eq!((rows[1]["count"].as_u64(), rows[1]["lost"].as_u64()), (Some(10), Some(0)), "{rows:?}");
    let figures = &doc["extra"]["systems"][0];
    assert_eq!((figures["systems"].as_u64(), figures["graph"].as_str()), (Some(1_000), Some("pipelines")));
    // 10 pipelines of 99: one upstream for the second system of each, two for the 97 after it;
    // five downstreams per canary.
    assert_eq!(figures["dependencies"], 10 * (1 + 97 * 2) + 10 * 5, "{figures}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_server_told_to_stop_with_its_input_stops_when_the_input_closes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["serve", "--in-memory", "--listen", "127.0.0.1:0", "--stop-with-stdin"])
        .env("LOCKSTEP_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("reads");
    let addr = line.trim().strip_prefix("lockstep listening on ").expect("the listening line").to_owned();
    // What is written to its input is ignored: it goes on serving.
    let mut input = child.stdin.take().expect("piped");
    input.write_all(b"anything\n").expect("writes");
    input.flush().expect("flushes");
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().expect("waits").is_none(), "still serving");
    assert!(std::net::TcpStream::connect(&addr).is_ok(), "still accepting on {addr}");
    // Its input closed (as when the program holding the pipe ends): it stops, cleanly.
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop after its input closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
