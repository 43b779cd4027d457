//! End-to-end: task handoff against a real `lockstep serve` on loopback.
//!
//! * A planner stages context and submits a chain of tasks; an executor asking for work gets them
//!   in order, each with the context as pinned at submission (even after the keys changed) and
//!   the outputs of the tasks it depends on; the planner hears every event and the output.
//! * An executor that misses its deadline loses the task to another; its late completion is
//!   refused (and reported to watchers); exactly one completion is accepted.
//! * Failures past the maximum dead-letter a task with every attempt's error; an operator retries.
//! * Bad input is refused with its reason and nothing applied; claims past the in-flight limit too.
//! * Acknowledged submissions and completions survive a SIGKILL; a task held when the server died
//!   is handed out again and completed once.

mod support;

use std::time::Duration;

use lockstep_client::{ContextWrites, Error, Reason, TaskSpec};
use serde_json::json;
use support::{eventually, free_listen_addr, opts, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

async fn next_event(
    events: &mut lockstep_client::TaskEvents,
    kind: &str,
    id: &str,
) -> lockstep_client::proto::TaskEvent {
    loop {
        let e = tokio::time::timeout(T, events.recv()).await.expect("an event in time").expect("the session is open");
        if e.kind == kind && e.id == id {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_tasks_runs_with_pinned_context_and_dependency_outputs() {
    let server = Server::start(&[]);
    let client = server.client().await.with_namespace("team");
    let planner = client.register(opts("planner", "planner")).await.unwrap();
    let mut events = planner.task_events().expect("taken once");
    assert!(planner.task_events().is_none());
    let staged = planner.context().set("persona.profile", &json!({"tone": "terse"})).await.unwrap();

    let fetch = planner
        .submit_task(&TaskSpec::new("fetch", json!({"url": "https://example.org"})).context_keys(["persona.profile"]))
        .await
        .unwrap();
    let parse = planner
        .submit_task(&TaskSpec::new("parse", json!({"mode": "html"})).id("parse-1").depends_on([fetch.as_str()]))
        .await
        .unwrap();
    assert_eq!(parse, "parse-1");
    assert_eq!(client.tasks().get(&parse).await.unwrap().state, "waiting");
    // The context changes after submission: the executor still reads the staged version.
    planner.context().set("persona.profile", &json!({"tone": "chatty"})).await.unwrap();

    let runner = client.register(opts("runner", "tool-runner")).await.unwrap();
    let mut work = runner.tasks(Vec::<String>::new(), 4).await.unwrap();
    let first = tokio::time::timeout(T, work.next()).await.unwrap().unwrap();
    assert_eq!((first.id.as_str(), first.kind.as_str(), first.attempt), (fetch.as_str(), "fetch", 1));
    assert_eq!(first.input, json!({"url": "https://example.org"}));
    assert_eq!(first.context("persona.profile"), Some(&json!({"tone": "terse"})));
    assert_eq!(first.pinned["persona.profile"].version, staged.version);
    first.start().await.unwrap();
    first.complete(&json!({"page": "<html/>"})).await.unwrap();

    let second = tokio::time::timeout(T, work.next()).await.unwrap().unwrap();
    assert_eq!(second.id, parse);
    assert_eq!(second.dependencies[&fetch], json!({"page": "<html/>"}));
    second.complete(&json!({"title": "Example"})).await.unwrap();

    let e = next_event(&mut events, "assigned", &fetch).await;
    assert_eq!((e.agent.as_str(), e.attempt), ("runner", 1));
    next_event(&mut events, "started", &fetch).await;
    next_event(&mut events, "completed", &fetch).await;
    let done = next_event(&mut events, "completed", &parse).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&done.output_json).unwrap(), json!({"title": "Example"}));
    let info = client.tasks().get(&parse).await.unwrap();
    assert_eq!((info.state.as_str(), info.holder.as_str(), info.attempt), ("completed", "runner", 1));
    let listed = client.tasks().list("completed", "").await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [fetch.as_str(), parse.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_deadline_hands_the_task_on_and_the_late_completion_is_refused() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let mut watch = client.tasks().watch().await.unwrap();
    let planner = client.register(opts("planner", "planner")).await.unwrap();
    let slow = client.register(opts("slow", "runner")).await.unwrap();
    let fast = client.register(opts("fast", "runner")).await.unwrap();
    // 300 ms per attempt: the slow executor claims it and sits on it.
    let id = planner.submit_task(&TaskSpec::new("tool", json!(1)).timeout_ms(300).role("runner")).await.unwrap();
    let held = slow.claim_task(["tool"]).await.unwrap().expect("a ready task");
    assert_eq!((held.id.as_str(), held.attempt), (id.as_str(), 1));
    assert!(planner.claim_task(["tool"]).await.unwrap().is_none(), "a planner is not a runner");
    let mut work = fast.tasks(["tool"], 1).await.unwrap();
    let taken = tokio::time::timeout(T, work.next()).await.unwrap().unwrap();
    assert_eq!((taken.id.as_str(), taken.attempt), (id.as_str(), 2));

    let late = held.complete(&json!("slow")).await.unwrap_err();
    assert_eq!(late.reason(), Some(Reason::TaskNotHeld), "{late:?}");
    assert!(matches!(late, Error::FailedPrecondition(_)), "{late:?}");
    if !support::reworded() {
        assert!(late.to_string().contains("attempt 2 is held by 'fast'"), "{late}");
    }
    taken.complete(&json!("fast")).await.unwrap();
    assert!(fast.claim_task(["tool"]).await.unwrap().is_none(), "nothing is left to do");
    let info = client.tasks().get(&id).await.unwrap();
    assert_eq!((info.state.as_str(), info.output_json.as_str(), info.failures), ("completed", "\"fast\"", 1));
    assert!(info.errors[0].error.contains("deadline"), "{:?}", info.errors);

    // The watcher saw it all, the refusal included.
    let mut kinds = Vec::new();
    while !kinds.contains(&"completed".to_string()) {
        let e = tokio::time::timeout(T, watch.message()).await.unwrap().unwrap().unwrap();
        if e.kind == "refused" {
            assert_eq!((e.agent.as_str(), e.attempt), ("slow", 1));
        }
        kinds.push(e.kind);
    }
    for kind in ["submitted", "assigned", "failed", "retried", "refused", "completed"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_maximum_dead_letter_and_an_operator_retries() {
    let server = Server::start(&["--admin-token", "s3cret"]);
    let client = server.client().await;
    let planner = client.register(opts("planner", "planner")).await.unwrap();
    let runner = client.register(opts("runner", "runner")).await.unwrap();
    let id = planner.submit_task(&TaskSpec::new("flaky", json!({})).max_attempts(2)).await.unwrap();
    let child = planner.submit_task(&TaskSpec::new("after", json!({})).depends_on([id.as_str()])).await.unwrap();
    for error in ["timeout talking to the tool", "tool crashed"] {
        let a = runner.claim_task(["flaky"]).await.unwrap().expect("ready again");
        a.fail(error).await.unwrap();
    }
    let dead = client.tasks().dead_letters().await.unwrap();
    assert_eq!(dead.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [id.as_str(), child.as_str()]);
    let errors: Vec<_> = dead[0].errors.iter().map(|e| (e.attempt, e.agent.as_str(), e.error.as_str())).collect();
    assert_eq!(errors, [(1, "runner", "timeout talking to the tool"), (2, "runner", "tool crashed")]);
    assert!(dead[1].errors[0].error.contains(&id), "{:?}", dead[1].errors);

    // The CLI shows the same.
    let (ok, out, err) = server.cli_async(&["tasks", "dead-letter", "--json"]).await;
    assert!(ok, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["errors"][1]["error"], "tool crashed");
    let (ok, out, _) = server.cli_async(&["tasks", "show", &id]).await;
    assert!(ok && out.contains("attempt 2 by runner: tool crashed"), "{out}");
    let (ok, out, _) = server.cli_async(&["tasks", "queues", "--json"]).await;
    let queues: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let flaky = queues.iter().find(|q| q["type"] == "flaky").expect("a queue per type");
    assert!(ok && flaky["dead_lettered"] == 1, "{out}");
    let (ok, _, err) = server.cli_async(&["tasks", "retry", "nope", "--token", "s3cret"]).await;
    assert!(!ok && !err.is_empty(), "an unknown task is refused");

    // A retry is an operator's action: it needs the admin token, and it is audited.
    let err = client.admin(None, None).unwrap().retry_task(&id).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AdminTokenMissing), "{err:?}");
    let err = client.admin(Some("wrong"), None).unwrap().retry_task(&id).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::AdminTokenWrong), "{err:?}");
    let (ok, _, err) = server.cli_async(&["tasks", "retry", &id]).await;
    assert!(!ok && err.contains("unauthenticated"), "{err}");
    let admin = client.admin(Some("s3cret"), Some("alice")).unwrap();
    let err = admin.retry_task(&child.replace('t', "x")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::UnknownTask));
    let (ok, out, err) = server.cli_async(&["tasks", "retry", &id, "--json", "--token", "s3cret"]).await;
    assert!(ok, "{err}");
    let retried: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((retried["state"].as_str(), retried["failures"].as_u64()), (Some("ready"), Some(0)));
    let (ok, out, _) = server.cli_async(&["tasks", "list", "--state", "ready"]).await;
    assert!(ok && out.contains(&id) && out.contains("flaky"), "{out}");
    let err = admin.retry_task(&id).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::TaskNotDeadLettered));
    let audit = admin.audit_log(50).await.unwrap().entries;
    let retries: Vec<_> = audit.iter().filter(|e| e.command == "retry_task").collect();
    assert_eq!(retries.len(), 4, "every retry by an operator, refused or not: {retries:?}");
    assert!(retries.iter().any(|e| e.actor == "alice" && e.target == id && e.outcome == "refused"), "{retries:?}");
    let a = runner.claim_task(["flaky"]).await.unwrap().expect("ready after the retry");
    assert_eq!(a.attempt, 3);
    a.complete(&json!("ok")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_claims_past_the_limit_are_refused_with_nothing_applied() {
    let dir = ScratchDir::new("tasks-config");
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, "[tasks]\nmax_in_flight_per_agent = 2\nmax_deps = 2\nmax_input_bytes = 1000\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let client = server.client().await;
    let planner = client.register(opts("planner", "planner")).await.unwrap();
    let a = planner.submit_task(&TaskSpec::new("tool", json!(1)).id("a")).await.unwrap();
    let deep: serde_json::Value = serde_json::from_str(&format!("{}1{}", "[".repeat(40), "]".repeat(40))).unwrap();
    let cases = [
        (TaskSpec::new("tool", json!(1)).depends_on(["nope"]), Reason::UnknownTask),
        (TaskSpec::new("tool", json!(1)).id("b").depends_on(["b"]), Reason::TaskCycle),
        (TaskSpec::new("tool", json!(1)).id("a"), Reason::TaskExists),
        (TaskSpec::new("bad type", json!(1)), Reason::InvalidArgument),
        (TaskSpec::new("tool", deep), Reason::InvalidArgument),
        (TaskSpec::new("tool", json!("x".repeat(2000))), Reason::InvalidArgument),
        (TaskSpec::new("tool", json!(1)).context_keys(["never.written"]), Reason::UnknownContextKey),
        (TaskSpec::new("tool", json!(1)).depends_on(["a", "a", "a"]), Reason::InvalidArgument),
    ];
    for (i, (spec, reason)) in cases.into_iter().enumerate() {
        let err = planner.submit_task(&spec).await.unwrap_err();
        assert_eq!(err.reason(), Some(reason), "case {i}: {err}");
    }
    let all = client.tasks().list("", "").await.unwrap();
    assert_eq!(all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [a.as_str()], "nothing else applied");
    let err = client.tasks().list("sideways", "").await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::InvalidArgument));

    for n in 0..3 {
        planner.submit_task(&TaskSpec::new("tool", json!(n))).await.unwrap();
    }
    let runner = client.register(opts("runner", "runner")).await.unwrap();
    let first = runner.claim_task(["tool"]).await.unwrap().unwrap();
    let _second = runner.claim_task(["tool"]).await.unwrap().unwrap();
    let err = runner.claim_task(["tool"]).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::TaskInFlightLimit), "{err:?}");
    assert_eq!(client.tasks().list("ready", "tool").await.unwrap().len(), 2, "the refused claim took nothing");
    // A completion frees a place.
    let id = first.id.clone();
    first.complete(&json!(1)).await.unwrap();
    let next = runner.claim_task(["tool"]).await.unwrap().unwrap();
    assert_ne!(next.id, id);
    let err = planner.submit_task(&TaskSpec::new("tool", json!(1)).depends_on([id.as_str(), "a", "a"])).await;
    assert_eq!(err.unwrap_err().reason(), Some(Reason::InvalidArgument), "max_deps 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_and_completions_survive_a_sigkill() {
    let dir = ScratchDir::new("tasks");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let planner = client.register(opts("planner", "planner").reconnect_for(None)).await.unwrap();
    let runner = client.register(opts("runner", "runner").reconnect_for(None)).await.unwrap();
    planner.context().set("ws.meta", &json!({"repo": "x"})).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(planner.submit_task(&TaskSpec::new("tool", json!(n)).context_keys(["ws.meta"])).await.unwrap());
    }
    let dependent = planner.submit_task(&TaskSpec::new("tool", json!("last")).depends_on([ids[0].as_str()])).await;
    let dependent = dependent.unwrap();
    for _ in 0..3 {
        let a = runner.claim_task(["tool"]).await.unwrap().unwrap();
        let out = json!({"done": a.input.clone()});
        a.complete(&out).await.unwrap();
    }
    // One held when the server dies.
    let held = runner.claim_task(["tool"]).await.unwrap().unwrap();
    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let tasks = client.tasks();
    let all = tasks.list("", "").await.unwrap();
    assert_eq!(all.len(), 7, "every acknowledged submission is kept");
    let completed: Vec<_> = all.iter().filter(|t| t.state == "completed").map(|t| t.id.clone()).collect();
    assert_eq!(completed, ids[..3].to_vec(), "every acknowledged completion is kept");
    let was_held = tasks.get(&held.id).await.unwrap();
    assert_eq!((was_held.state.as_str(), was_held.failures), ("ready", 0), "requeued, not counted");
    assert_eq!(tasks.get(&dependent).await.unwrap().state, "ready", "its dependency had completed");
    // A new executor completes the rest, each once; the old attempt is refused.
    let runner = client.register(opts("runner2", "runner")).await.unwrap();
    let mut work = runner.tasks(["tool"], 2).await.unwrap();
    let mut done = 0;
    while done < 4 {
        let a = tokio::time::timeout(T, work.next()).await.unwrap().unwrap();
        if a.id == held.id {
            assert_eq!(a.attempt, 2);
        }
        if a.id != dependent {
            assert_eq!(a.context("ws.meta"), Some(&json!({"repo": "x"})), "the pinned context is kept");
        }
        a.complete(&json!("after")).await.unwrap();
        done += 1;
    }
    assert!(
        eventually(T, || async { tasks.list("completed", "").await.is_ok_and(|l| l.len() == 7) }).await,
        "every task completed"
    );
    let first_output = tasks.get(&ids[0]).await.unwrap().output_json;
    assert_eq!(first_output, json!({"done": 0}).to_string(), "a completion is never replaced");
}
