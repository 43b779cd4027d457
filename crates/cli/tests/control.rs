//! End-to-end: the operators' command interface against a real `lockstep serve`.

mod support;

use std::time::Duration;

use lockstep_client::{proto as v1, Client, Error, Reason, WatchTarget};
use serde_json::json;
use support::{eventually, opts, reworded, Server};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_paused_agent_is_held_and_catches_up_converged_on_resume() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let admin = client.admin(None, Some("alice")).unwrap();
    let owner = client.register(opts("owner", "trader")).await.unwrap();
    let watcher = client.register(opts("watcher", "risk").interests(["feed"])).await.unwrap();
    watcher.watch_state(WatchTarget::Agent("owner".into())).await.unwrap();
    let mut deliveries = watcher.deliveries().unwrap();
    let mut notices = watcher.control_notices().unwrap();

    assert!(admin.pause_agent("watcher").await.unwrap().contains("paused"));
    let notice = tokio::time::timeout(T, notices.recv()).await.unwrap().unwrap();
    assert_eq!(notice.kind, v1::control::Kind::Paused as i32);
    assert_eq!(notice.actor, "alice");
    assert!(watcher.is_paused());
    let err = watcher.publish_confirmed("feed", &b"x"[..]).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(ref m) if reworded() || m.contains("paused it")), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::Paused));

    for i in 0..20u32 {
        owner.publish("feed", i.to_be_bytes().to_vec()).await.unwrap();
        owner.update_state(&json!({"i": i, format!("k{}", i % 4): i})).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deliveries.try_recv().is_none(), "nothing reaches a paused agent");

    assert!(admin.resume_agent("watcher").await.unwrap().contains("resumed"));
    let mut got = Vec::new();
    while got.len() < 20 {
        let d = tokio::time::timeout(T, deliveries.recv()).await.expect("held deliveries follow").unwrap();
        got.push(u32::from_be_bytes(d.payload[..].try_into().unwrap()));
    }
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    let (version, state) = client.get_state("owner").await.unwrap();
    assert!(eventually(T, || async { watcher.view("owner") == Some((version, state.clone())) }).await);
    assert!(!watcher.is_paused());
    let audit = admin.audit_log(10).await.unwrap();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.command.as_str()).collect();
    assert_eq!(actions, vec!["pause_agent", "resume_agent"]);
    assert!(audit.entries.iter().all(|e| e.actor == "alice" && e.target == "watcher"));
}

#[tokio::test]
async fn emergency_stop_and_resume_all_from_the_cli() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let a = client.register(opts("a", "worker")).await.unwrap();
    let b = client.register(opts("b", "worker").interests(["t"])).await.unwrap();
    let (ok, out, err) = server.cli(&["command", "stop-all", "--reason", "bad market data"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 agent(s) paused"), "{out}");
    assert!(eventually(T, || async { a.is_paused() && b.is_paused() }).await);
    let err = a.publish_confirmed("t", &b""[..]).await.unwrap_err();
    assert!(
        matches!(err, Error::FailedPrecondition(ref m) if reworded() || (m.contains("emergency stop") && m.contains("bad market data"))),
        "{err:?}"
    );
    assert_eq!(err.reason(), Some(Reason::EmergencyStop));
    let (ok, out, _) = server.cli(&["status", "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["emergency_stop"], true);
    assert_eq!(status["agents_by_status"]["paused"], 2);
    let (ok, out, _) = server.cli(&["command", "resume-all"]);
    assert!(ok && out.contains("emergency stop lifted"), "{out}");
    assert!(eventually(T, || async { !a.is_paused() }).await);
    a.publish_confirmed("t", &b"again"[..]).await.unwrap();
    let mut d = b.deliveries().unwrap();
    assert_eq!(tokio::time::timeout(T, d.recv()).await.unwrap().unwrap().payload, &b"again"[..]);
}

#[tokio::test]
async fn commands_round_trip_and_each_failure_is_distinct() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let admin = client.admin(None, None).unwrap();
    let trainer = client.register(opts("trainer", "strategy")).await.unwrap();
    let mut commands = trainer.commands().unwrap();
    tokio::spawn(async move {
        while let Some(cmd) = commands.recv().await {
            let outcome = match cmd.command.as_str() {
                "rebalance_weights" => Ok(json!({"rebalanced": cmd.params["min_weight"]})),
                "explode" => Err("cannot explode right now".to_owned()),
                _ => continue, // never answered
            };
            cmd.reply(outcome).await.unwrap();
        }
    });
    let result = admin.send_command("trainer", "rebalance_weights", &json!({"min_weight": 0.1}), T).await.unwrap();
    assert_eq!(result, json!({"rebalanced": 0.1}));
    let err = admin.send_command("trainer", "explode", &json!(null), T).await.unwrap_err();
    assert_eq!(err, Error::CommandFailed("cannot explode right now".into()));
    let err = admin.send_command("trainer", "ignore_me", &json!(null), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, Error::CommandTimedOut(ref m) if reworded() || m.contains("did not answer")), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::CommandTimeout));
    let err = admin.send_command("nobody", "x", &json!(null), T).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    // An agent that never asked for commands answers at once that it does not handle them.
    let _plain = client.register(opts("plain", "worker")).await.unwrap();
    let started = std::time::Instant::now();
    let err = admin.send_command("plain", "x", &json!(null), T).await.unwrap_err();
    assert!(matches!(err, Error::CommandFailed(ref m) if m.contains("does not handle commands")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The CLI does the same round trip.
    let (ok, out, err) = server
        .cli_async(&["command", "send", "trainer", "rebalance_weights", "--params", r#"{"min_weight":0.5}"#, "--json"])
        .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], json!({"rebalanced": 0.5}));
}

#[tokio::test]
async fn a_command_to_an_agent_that_leaves_is_aborted() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let admin = client.admin(None, None).unwrap();
    let agent = client.register(opts("leaver", "worker")).await.unwrap();
    let mut commands = agent.commands().unwrap();
    let pending = tokio::spawn(async move { admin.send_command("leaver", "wait", &json!(null), T).await });
    let cmd = tokio::time::timeout(T, commands.recv()).await.unwrap().unwrap();
    assert_eq!(cmd.command, "wait");
    agent.close().await.unwrap();
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::CommandAborted(ref m) if reworded() || m.contains("went away")), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::CommandAborted));
}

#[tokio::test]
async fn admin_calls_need_the_token_when_the_server_has_one() {
    let server = Server::start(&["--admin-token", "s3cret"]);
    let client = server.client().await;
    // Agents need no token.
    let _agent = client.register(opts("a", "worker")).await.unwrap();
    let err = client.admin(None, None).unwrap().status().await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::AdminTokenMissing));
    let err = client.admin(Some("wrong"), None).unwrap().status().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::AdminTokenWrong));
    let status = client.admin(Some("s3cret"), None).unwrap().status().await.unwrap();
    assert_eq!(status.agents, 1);
    let (ok, _, err) = server.cli(&["status"]);
    assert!(!ok && err.contains("unauthenticated"), "{err}");
    let (ok, out, _) = server.cli(&["status", "--token", "s3cret"]);
    assert!(ok && out.contains("agents            1"), "{out}");
}

#[tokio::test]
async fn the_admin_api_can_listen_apart() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0"]);
    assert_ne!(server.addr, server.admin_addr);
    let on_agents_port = server.client().await.admin(None, None).unwrap();
    let err = on_agents_port.status().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    let admin = Client::connect_admin(&server.admin_addr, None, None).await.unwrap();
    assert_eq!(admin.status().await.unwrap().agents, 0);
}

/// Forcing and cleaning up sync points are operators' actions: served beside the agents' calls,
/// they need the admin token when the server has one, and each is written to the audit log.
#[tokio::test]
async fn forcing_and_cleaning_up_sync_points_need_the_admin_token_and_are_audited() {
    let server = Server::start(&["--admin-token", "s3cret"]);
    let client = server.client().await;
    let a = client.register(opts("a", "worker")).await.unwrap();
    let waiting = tokio::spawn(async move {
        let both = lockstep_client::Participants::Agents(vec!["a".into(), "b".into()]);
        a.sync("stuck", both, T, &b""[..]).await
    });
    assert!(eventually(T, || async { client.sync_status("stuck").await.is_ok() }).await);

    for (token, reason) in [(None, Reason::AdminTokenMissing), (Some("wrong"), Reason::AdminTokenWrong)] {
        let admin = client.admin(token, None).unwrap();
        let err = admin.force_complete_sync("stuck").await.unwrap_err();
        assert_eq!(err.reason(), Some(reason), "{err:?}");
        assert_eq!(admin.cleanup_sync_points().await.unwrap_err().reason(), Some(reason));
    }
    let (ok, _, err) = server.cli_async(&["sync", "force-complete", "stuck"]).await;
    assert!(!ok && err.contains("unauthenticated"), "{err}");
    let state = client.sync_status("stuck").await.unwrap().state;
    assert_eq!(state, v1::sync_point_status::State::Waiting as i32, "refused calls changed nothing");

    let (ok, out, err) = server.cli_async(&["sync", "force-complete", "stuck", "--token", "s3cret"]).await;
    assert!(ok, "{out} {err}");
    assert!(waiting.await.unwrap().unwrap().forced);
    let (ok, out, err) = server.cli_async(&["sync", "cleanup", "--token", "s3cret", "--json"]).await;
    assert!(ok && out.contains("\"removed\":1"), "{out} {err}");

    let audit = client.admin(Some("s3cret"), None).unwrap().audit_log(10).await.unwrap();
    let commands: Vec<(&str, &str)> = audit.entries.iter().map(|e| (e.command.as_str(), e.outcome.as_str())).collect();
    assert_eq!(commands, [("force_complete_sync", "ok"), ("cleanup_sync_points", "ok")], "{audit:?}");
}

/// An empty admin token would leave the Admin API open while its owner believes it closed: the
/// server refuses to start with it, however it is given.
#[test]
fn an_empty_admin_token_is_refused_at_start() {
    let (refused, err) = support::serve_fails(&["--admin-token", ""]);
    assert!(refused && err.contains("admin token is empty"), "{err}");
    let (refused, err) = support::serve_fails_with_env(&[], &[("LOCKSTEP_ADMIN_TOKEN", "")]);
    assert!(refused && err.contains("admin token is empty"), "{err}");
}

/// `lockstep serve --in-memory --listen <listen> <extra>`, logging warnings, its output piped.
fn spawn_serve(listen: &str, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["serve", "--in-memory", "--listen", listen])
        .args(extra)
        .env("LOCKSTEP_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lockstep binary runs")
}

/// What `lockstep serve` logs at start, until it listens.
fn start_log(listen: &str, extra: &[&str]) -> String {
    use std::io::{BufRead, BufReader, Read};
    let mut child = spawn_serve(listen, extra);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("lockstep listening on"), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    log
}

/// What `lockstep serve --listen <listen> <extra>` prints on stderr when it refuses to start
/// (`None` if it starts after all: it is stopped then).
fn start_refused(listen: &str, extra: &[&str]) -> Option<String> {
    use std::io::Read;
    let mut child = spawn_serve(listen, extra);
    // A refusal comes before anything is bound; a server that starts says so on stdout.
    let mut first = [0u8; 1];
    let started = child.stdout.take().unwrap().read(&mut first).is_ok_and(|n| n > 0);
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (!started).then_some(err)
}

/// Open access stays the default only on loopback: a listener beyond it without authentication is
/// refused at start, unless the one opt-in (`--allow-public`) says the operator means it; then it
/// is warned about.
#[test]
fn a_listener_beyond_loopback_needs_authentication_or_the_opt_in() {
    let opt_in = "allow_public";
    let refused = start_refused("0.0.0.0:0", &[]).expect("the agents' listener is refused");
    assert!(refused.contains("agents' listener") && refused.contains(opt_in), "{refused}");
    let refused = start_refused("127.0.0.1:0", &["--admin-listen", "0.0.0.0:0"]).expect("the operators' too");
    assert!(refused.contains("Admin") && refused.contains(opt_in), "{refused}");
    // An admin token guards a separate operators' listener.
    assert!(start_refused("127.0.0.1:0", &["--admin-listen", "0.0.0.0:0", "--admin-token", "t"]).is_none());
    let warning = "without authentication";
    let log = start_log("0.0.0.0:0", &["--allow-public"]);
    assert!(log.contains(warning) && log.contains("WARN"), "{log}");
    assert!(!start_log("127.0.0.1:0", &[]).contains(warning));
    let dir = support::ScratchDir::new("public-tokens");
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let log = start_log("0.0.0.0:0", &["--token-secret-file", secret.to_str().unwrap()]);
    assert!(!log.contains(warning), "tokens are required: nothing to warn about\n{log}");
    // A secret too short to be safe is refused, naming the file.
    std::fs::write(&secret, "short").unwrap();
    let refused = start_refused("127.0.0.1:0", &["--token-secret-file", secret.to_str().unwrap()]).unwrap();
    assert!(refused.contains("at least 32") && refused.contains("secret"), "{refused}");
}
