//! Every `lockstep` command line the README shows runs, as printed, against a real server that
//! holds what the lines name (the sync point `round-7`, the vote `trade-1`, the task `t12`, the
//! agents `risk_sentinel`, `recorder` and `strategy-1`...): a documented command that fails or
//! no longer exists is a broken product.
//!
//! Lines run in the README's order. Optional parts in brackets (`[--version 12]`) are left out;
//! `TRACE_ID` and the backup directory are replaced by the real ones. Not run here: `lockstep
//! serve` (every end-to-end test runs the server) and `lockstep monitor`, which needs a terminal
//! (tests/monitor.rs drives it in one).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lockstep_client::{ContextWrites, Lineage, Participants, RoundParticipants, RoundSeriesSpec, TaskSpec, Vote};
use serde_json::json;
use support::{free_listen_addr, opts, ScratchDir, Server};

const README: &str = include_str!("../../../README.md");

/// Longer than any of these commands takes on a busy machine: past it, the command hangs.
const HUNG_AFTER: Duration = Duration::from_secs(60);

/// The `lockstep ...` lines of the README's `sh` blocks, comments cut.
fn command_lines() -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in README.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        let command = line.split(" # ").next().unwrap_or("").trim();
        if in_sh && command.starts_with("lockstep ") {
            lines.push(command.to_owned());
        }
    }
    lines
}

/// `line` split into words as a shell would (single and double quotes group; brackets drop).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quote, mut in_word, mut optional) = (String::new(), None, false, 0);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') if optional == 0 => (quote, in_word) = (Some(c), true),
            (None, '[') => optional += 1,
            (None, ']') => optional -= 1,
            (None, _) if optional > 0 => {}
            (None, ' ') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => (word, in_word) = (word + &c.to_string(), true),
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Runs `lockstep args` in `dir` (where the files the lines name are).
fn spawn(dir: &std::path::Path, addr: &str, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .current_dir(dir)
        .args(args)
        .env("LOCKSTEP_ADDR", addr)
        .env("LOCKSTEP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockstep runs")
}

/// Runs a command to its end; its standard output, or a panic saying how it failed.
fn run(dir: &std::path::Path, addr: &str, line: &str, args: &[String]) -> String {
    let out = support::finish_within(spawn(dir, addr, args), HUNG_AFTER, &format!("`{line}`"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{line}` failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(!stdout.trim().is_empty(), "`{line}` printed nothing");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lockstep_command_line_of_the_readme_runs_against_a_real_server() {
    let (data, backups) = (ScratchDir::new("readme-data"), ScratchDir::new("readme-backups"));
    // The files the lines name, in the directory they run in: `intake replace rules.toml`.
    let files = ScratchDir::new("readme-files");
    let rules = "[[schemas]]\ntopic = \"intake\"\nschema = { type = \"object\", required = [\"kind\"] }\n";
    std::fs::write(files.join("rules.toml"), rules).unwrap();
    // `token create --secret-file token-secret`.
    std::fs::write(files.join("token-secret"), "a README secret of at least thirty-two bytes\n").unwrap();
    let backups_arg = backups.path().to_str().unwrap().to_owned();
    let server = Server::start_durable(&free_listen_addr(), data.path(), &["--backup-dir", &backups_arg]);
    let client = server.client().await;

    // What the lines name.
    let _risk = client.register(opts("risk_sentinel", "risk")).await.unwrap();
    let _recorder = client.register(opts("recorder", "sink")).await.unwrap();
    let strategy = client.register(opts("strategy-1", "strategy")).await.unwrap();
    let mut commands = strategy.commands().unwrap();
    tokio::spawn(async move {
        while let Some(cmd) = commands.recv().await {
            let done = json!({"done": cmd.command});
            let _ = cmd.reply(Ok(done)).await;
        }
    });
    let waiter = client.register(opts("waiter", "worker")).await.unwrap();
    let waiting = waiter.clone();
    tokio::spawn(async move {
        let with_ghost = Participants::Agents(vec!["waiter".into(), "ghost".into()]);
        waiting.sync("round-7", with_ghost, Duration::from_secs(300), &b""[..]).await
    });
    let vote = Vote::new(
        "trade-1",
        "what to do with ACME?",
        Participants::Agents(vec!["waiter".into(), "ghost".into()]),
        ["buy", "sell"],
    )
    .timeout(Duration::from_secs(300));
    waiter.open_vote(&vote).await.unwrap();
    client.context().set("workspace.persona", &json!({"tone": "neutral"})).await.unwrap();
    let planner = client.register(opts("planner", "planner")).await.unwrap();
    planner.submit_task(&TaskSpec::new("fetch", json!({})).id("t12").max_attempts(1)).await.unwrap();
    let assignment = planner.claim_task(["fetch"]).await.unwrap().expect("t12 is ready");
    assignment.fail("the tool crashed").await.unwrap();
    let both = RoundParticipants::Agents(vec!["waiter".into(), "planner".into()]);
    client.rounds().create(&RoundSeriesSpec::new("tick", both, 1_000, "tick.merged")).await.unwrap();
    let trace = planner
        .traces()
        .record_json("search.web", &json!({"q": "acme"}), &json!({"hits": 3}), Lineage::default())
        .await
        .unwrap();
    assert!(
        support::eventually(Duration::from_secs(20), || async {
            client.list_sync_points().await.unwrap().iter().any(|s| s.sync_id == "round-7")
        })
        .await
    );

    let lines = command_lines();
    let skipped = |l: &str| l.starts_with("lockstep serve") || l.starts_with("lockstep monitor");
    assert_eq!(lines.iter().filter(|l| skipped(l)).count(), 3, "{lines:#?}");
    let mut ran = 0;
    for line in lines.iter().filter(|l| !skipped(l)) {
        let resolved = line.replace("TRACE_ID", &trace.id).replace("/backups", &backups_arg);
        let args: Vec<String> = words(&resolved).into_iter().skip(1).collect();
        if args.iter().any(|a| a == "watch") {
            // Runs until stopped: one line per change, so it is shown one.
            let mut child = spawn(files.path(), &server.addr, &args);
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut first = String::new();
                BufReader::new(stdout).read_line(&mut first).map(|_| first)
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.context().set("workspace.notes", &json!("watched")).await.unwrap();
            let first = tokio::task::spawn_blocking(move || reader.join().unwrap()).await.unwrap().unwrap();
            let _ = child.kill();
            let _ = child.wait();
            assert!(first.contains("workspace."), "`{line}` printed {first:?}");
        } else {
            let out = run(files.path(), &server.addr, line, &args);
            if line.contains("force-complete round-7") {
                assert!(out.contains("round-7"), "{out}");
            }
        }
        ran += 1;
    }
    // The README shows 49 such lines today: far fewer means the extraction broke.
    assert!(ran >= 46, "only {ran} lines ran: {lines:#?}");
    assert!(backups.path().join("lockstep-2026-11-21.db").exists(), "the backup line wrote its copy");
    let retried = client.tasks().get("t12").await.unwrap();
    assert_eq!(retried.state, "ready", "the retry line made t12 ready again: {retried:?}");
    // The sync monitor's lines: feed failed, report at half its risk, incident 1 noted and resolved.
    let systems = client.systems(None, None).unwrap();
    assert_eq!(systems.show("report").await.unwrap().status.risk, 0.5);
    let incident = systems.incidents(true).await.unwrap().into_iter().find(|i| i.id == 1).expect("incident 1");
    assert_eq!((incident.system.as_str(), incident.notes.len()), ("feed", 1));
    assert!(incident.resolved_at.is_some() && incident.resolved_by != "auto", "{incident:?}");
}
