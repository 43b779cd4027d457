//! End-to-end: shared context against a real `lockstep serve` on loopback.
//!
//! * Agents and clients set, patch, compare-and-set and read keys; a conflict names the current
//!   version; retained versions are read by number; bad input is refused with its reason and
//!   nothing of it is applied.
//! * A watch on a prefix gets the changes (coalesced per key), and a watcher that went away
//!   resumes from its version and converges on the keys' values.
//! * A key bound to its writer's lease goes when the writer goes silent; `system.health` counts
//!   the agents.
//! * Every acknowledged write survives a SIGKILL of the server (the crash harness).

mod support;

use std::time::Duration;

use lockstep_client::{proto as v1, ContextWrites, Error, Reason, WriteOptions};
use serde_json::json;
use support::{eventually, free_listen_addr, opts, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_patch_cas_and_read_versions() {
    let server = Server::start(&[]);
    let client = server.client().await.with_namespace("team");
    let ctx = client.context().with_writer("planner");
    let planner = client.register(opts("planner", "planner")).await.unwrap();

    let first = planner.context().cas("workspace.persona", 0, &json!({"tone": "terse"})).await.unwrap();
    assert_eq!(first.previous_version, 0);
    // "Must not exist" fails now, naming the current version.
    match planner.context().cas("workspace.persona", 0, &json!({})).await.unwrap_err() {
        Error::Conflict { current_version, message } => {
            assert_eq!(current_version, first.version);
            assert_eq!(message.reason, Some(Reason::ContextConflict));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let second = ctx.patch("workspace.persona", &json!({"lang": "en"})).await.unwrap();
    let err = ctx.cas("workspace.persona", first.version, &json!({})).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { current_version, .. } if current_version == second.version), "{err:?}");
    let now = ctx.get("workspace.persona").await.unwrap();
    assert_eq!(now.value, json!({"tone": "terse", "lang": "en"}));
    assert_eq!((now.version, now.writer.as_str()), (second.version, "planner"));
    let then = ctx.get_version("workspace.persona", first.version).await.unwrap();
    assert_eq!(then.value, json!({"tone": "terse"}));
    let history = ctx.history("workspace.persona").await.unwrap();
    assert_eq!(history.iter().map(|e| e.version).collect::<Vec<_>>(), [first.version, second.version]);
    assert_eq!(history[1].patch, Some(json!({"lang": "en"})));

    // Bad input: precise reasons, nothing applied.
    let deep: serde_json::Value = serde_json::from_str(&format!("{}1{}", "[".repeat(40), "]".repeat(40))).unwrap();
    let bad = [
        (ctx.set("bad key", &json!(1)).await.unwrap_err(), Reason::InvalidArgument),
        (ctx.set("system.health", &json!(1)).await.unwrap_err(), Reason::ContextReadOnly),
        (ctx.get("nobody.wrote.this").await.unwrap_err(), Reason::UnknownContextKey),
        (ctx.get_version("workspace.persona", 999).await.unwrap_err(), Reason::UnknownContextVersion),
        (ctx.set("deep", &deep).await.unwrap_err(), Reason::InvalidArgument),
        (ctx.set("big", &json!("x".repeat(300 * 1024))).await.unwrap_err(), Reason::InvalidArgument),
    ];
    for (err, reason) in bad {
        assert_eq!(err.reason(), Some(reason), "{err:?}");
    }
    assert_eq!(ctx.get("workspace.persona").await.unwrap().version, second.version, "nothing applied");
    assert!(ctx.get("deep").await.is_err() && ctx.get("big").await.is_err());
    // A lease needs an agent's session.
    let options = WriteOptions { lease: true, ..Default::default() };
    let err = ctx.write("x", v1::context_write::Op::SetJson("1".into()), &options).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::InvalidArgument));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_converges_and_resumes_from_its_version() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let ctx = client.context();
    ctx.set("market.acme", &json!({"px": 1})).await.unwrap();
    let mut watch = ctx.watch_prefix("market", 0).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.changes.len(), 1);
    for px in 2..=50 {
        ctx.patch("market.acme", &json!({ "px": px })).await.unwrap();
    }
    ctx.set("market.beta", &json!({"px": 7})).await.unwrap();
    ctx.set("other.key", &json!(1)).await.unwrap();
    let want = |w: &lockstep_client::ContextWatch| {
        w.view().get("market.acme").map(|(_, v)| v.clone()) == Some(json!({"px": 50}))
            && w.view().get("market.beta").map(|(_, v)| v.clone()) == Some(json!({"px": 7}))
    };
    while !want(&watch) {
        tokio::time::timeout(T, watch.next()).await.expect("changes arrive").unwrap().unwrap();
    }
    assert!(!watch.view().contains_key("other.key"), "outside the prefix");
    // Gone, then back from where it was: what it missed comes as one delta per key.
    let resume = watch.resume_from();
    let kept = watch.view().clone();
    drop(watch);
    for px in 51..=60 {
        ctx.patch("market.acme", &json!({ "px": px, "seen": px })).await.unwrap();
    }
    ctx.delete("market.beta").await.unwrap();
    let mut watch = ctx.watch_prefix("market", resume).await.unwrap();
    let batch = tokio::time::timeout(T, watch.next()).await.unwrap().unwrap().unwrap();
    assert!(!batch.reset);
    let acme = batch.changes.iter().find(|c| c.key == "market.acme").expect("acme changed");
    assert_eq!(acme.base_version, kept["market.acme"].0, "a delta on the version the watcher had");
    assert!(batch.changes.iter().any(|c| c.key == "market.beta" && c.deleted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_bound_key_goes_with_its_writer_and_system_health_counts_agents() {
    let server = Server::start(&["--heartbeat-interval-ms", "200"]);
    let client = server.client().await;
    let ctx = client.context();
    // A raw session that registers, binds a key to its lease, and then goes silent (no
    // heartbeats), like a hung process.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let register = v1::Register { agent_id: "worker".into(), role: "worker".into(), ..Default::default() };
    let options = WriteOptions { lease: true, ..Default::default() };
    let write = lockstep_client::context_write_message(
        "presence.worker",
        v1::context_write::Op::SetJson("true".into()),
        &options,
    );
    for kind in [v1::client_message::Kind::Register(register), v1::client_message::Kind::ContextWrite(write)] {
        tx.send(v1::ClientMessage { request_id: 1, kind: Some(kind) }).await.unwrap();
    }
    let mut raw = v1::lockstep_client::LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let _stream = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap();
    assert!(eventually(T, || async { ctx.get("presence.worker").await.is_ok() }).await, "written");
    assert!(
        eventually(T, || async { ctx.get("system.health").await.is_ok_and(|e| e.value["total_agents"] == json!(1)) })
            .await
    );
    let health = ctx.get("system.health").await.unwrap().value;
    for field in ["health_score", "total_agents", "healthy_agents", "breakers_open", "breakers_half_open"] {
        assert!(health.get(field).is_some(), "{field} in {health}");
    }
    // The worker never heartbeats: its key goes at its lease.
    assert!(eventually(T, || async { ctx.get("presence.worker").await.is_err() }).await, "deleted at the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_sigkill() {
    let dir = ScratchDir::new("context");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let writer = client.register(opts("writer", "writer")).await.unwrap();
    let mut acked = Vec::new();
    for n in 0..40u64 {
        let w = writer.context().patch(&format!("k.{}", n % 4), &json!({ "n": n })).await.unwrap();
        acked.push((n % 4, n, w.version));
    }
    let deleted = client.context().set("gone", &json!(1)).await.unwrap();
    client.context().delete("gone").await.unwrap();
    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let ctx = server.client().await.context();
    for k in 0..4u64 {
        let (_, n, version) = *acked.iter().rev().find(|(key, _, _)| *key == k).unwrap();
        let e = ctx.get(&format!("k.{k}")).await.expect("kept");
        assert_eq!((e.version, e.value), (version, json!({ "n": n })));
        // Retained versions are kept too.
        assert!(ctx.history(&format!("k.{k}")).await.unwrap().len() > 1);
    }
    assert!(ctx.get("gone").await.is_err(), "the deletion was kept");
    let next = ctx.set("after", &json!(1)).await.unwrap();
    assert!(next.version > deleted.version + 1, "numbering goes on after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_sets_watches_and_lists_history() {
    let server = Server::start(&[]);
    let (ok, out, err) =
        server.cli_async(&["context", "set", "plan.step", r#"{"n":1}"#, "--expect", "0", "--json"]).await;
    assert!(ok, "{err}");
    let first: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v1 = first["version"].as_u64().unwrap();
    let (ok, _, err) = server.cli_async(&["context", "set", "plan.step", r#"{"n":2}"#, "--expect", "0"]).await;
    assert!(!ok && err.contains(&v1.to_string()), "a conflict names the current version: {err}");
    let (ok, _, err) = server.cli_async(&["context", "set", "plan.step", r#"{"done":true}"#, "--patch"]).await;
    assert!(ok, "{err}");
    let (ok, out, _) = server.cli_async(&["context", "get", "plan.step", "--json"]).await;
    let now: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && now["value"] == json!({"n": 1, "done": true}) && now["writer"] == "cli", "{now}");
    let (ok, out, _) = server.cli_async(&["context", "get", "plan.step", "--version", &v1.to_string(), "--json"]).await;
    assert!(ok && serde_json::from_str::<serde_json::Value>(&out).unwrap()["value"] == json!({"n": 1}), "{out}");
    let (ok, out, _) = server.cli_async(&["context", "history", "plan.step", "--json"]).await;
    let history: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(ok && history.len() == 2 && history[1]["patch"] == json!({"done": true}), "{out}");
    let (ok, out, _) = server.cli_async(&["context", "watch", "plan", "--prefix", "--count", "1", "--json"]).await;
    let batch: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(ok && batch["changes"][0]["key"] == "plan.step", "{out}");
    let (ok, out, _) = server.cli_async(&["context", "list"]).await;
    assert!(ok && out.contains("plan.step") && out.contains("system.health"), "{out}");
    let (ok, _, err) = server.cli_async(&["context", "set", "system.health", "1"]).await;
    assert!(!ok, "the server's keys are read-only: {err}");
}
