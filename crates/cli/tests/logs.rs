//! End-to-end: what `lockstep serve` writes to its log, as an operator reads it or a log collector
//! parses it.
//!
//! * `--log-format json`: every line is one JSON object; at info level one line per significant
//!   event (an agent joined or was lost, a sync point timed out, a breaker opened, an operator's
//!   action with its actor), with structured fields, and none per message.
//! * Text: no colour codes when stderr is not a terminal.
//! * The configuration file's `log_format` applies when no flag is given.

mod support;

use std::time::Duration;

use bytes::Bytes;
use lockstep_client::Participants;
use serde_json::Value;
use support::{opts, Log, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

/// The first JSON line whose `message` is `message` and whose fields include every pair of `fields`.
async fn event(log: &Log, message: &str, fields: &[(&str, &str)]) -> Value {
    let matches = |line: &str| {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return false };
        v["message"] == message && fields.iter().all(|(k, want)| v[*k].as_str() == Some(*want))
    };
    let line = log.line(T, matches).await;
    let line = line.unwrap_or_else(|| panic!("no {message:?} with {fields:?} in:\n{}", log.lines().join("\n")));
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_tell_joins_losses_timeouts_and_operator_actions_and_nothing_per_message() {
    let (server, log) = Server::start_logging(&["--log-format", "json", "--heartbeat-interval-ms", "100"]);
    let client = server.client().await;
    let alpha = client.register(opts("alpha", "worker")).await.unwrap();
    event(&log, "agent joined", &[("namespace", "default"), ("agent", "alpha"), ("role", "worker")]).await;

    // A thousand messages and state updates: not one line each.
    let reader = client.register(opts("reader", "sink").interests(["feed"])).await.unwrap();
    for i in 0..1000u32 {
        alpha.publish("feed", i.to_string()).await.unwrap();
    }
    alpha.publish_confirmed("feed", &b"last"[..]).await.unwrap();

    // A sync point nobody else comes to times out.
    let both = Participants::Agents(vec!["alpha".into(), "ghost".into()]);
    assert!(alpha.sync("gate", both, Duration::from_millis(200), Bytes::new()).await.is_err());
    let ended =
        event(&log, "sync point ended without everyone", &[("sync_id", "gate"), ("outcome", "timed_out")]).await;
    assert_eq!(ended["missing"], "ghost");
    assert_eq!(ended["level"], "WARN");

    // An operator pauses alpha: the action, its actor and its target.
    let admin = client.admin(None, Some("carol")).unwrap();
    admin.pause_agent("alpha").await.unwrap();
    let action = event(&log, "operator action", &[("actor", "carol"), ("action", "pause_agent")]).await;
    assert_eq!((action["subject"].as_str(), action["outcome"].as_str()), (Some("alpha"), Some("ok")));

    // A raw session registers and goes silent: it is lost once its lease (3 × 100 ms) runs out.
    let _silent = support::silent_session(&server.addr, "hung", "worker").await;
    event(&log, "agent lost: its lease ran out", &[("agent", "hung")]).await;

    let lines = log.lines();
    for line in &lines {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok_and(|v| v.is_object()), "not a JSON object: {line}");
        assert!(!line.contains('\u{1b}'), "no colour codes in JSON: {line}");
    }
    assert!(lines.len() < 50, "a line per event, not per message ({} lines):\n{}", lines.len(), lines.join("\n"));
    drop(reader);
}

#[tokio::test]
async fn text_lines_carry_no_colour_codes_into_a_pipe_and_the_config_file_can_ask_for_json() {
    let (server, log) = Server::start_logging(&[]);
    let client = server.client().await;
    let _a = client.register(opts("a", "worker")).await.unwrap();
    let joined = log.line(T, |l| l.contains("agent joined")).await.expect("a line for the join");
    assert!(joined.contains("agent=\"a\"") || joined.contains("agent=a"), "{joined}");
    assert!(log.lines().iter().all(|l| !l.contains('\u{1b}')), "{:?}", log.lines());

    let dir = ScratchDir::new("log-format");
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    let (server, log) = Server::start_logging(&["--config", config.to_str().unwrap()]);
    let client = server.client().await;
    let _b = client.register(opts("b", "worker")).await.unwrap();
    event(&log, "agent joined", &[("agent", "b")]).await;
}
