//! Shared context through the engine on a manual clock: writes from sessions and from clients,
//! compare-and-set, keys bound to a writer's lease going with it, TTLs firing on the engine's
//! timers, watches coalesced and resumable, and `system.health` following the registry (what is
//! kept: `durable.rs`).

mod harness;

use harness::{agent, Harness};
use lockstep_core::context::{Expect, Lifetime, Op, Selector, Write, SYSTEM_HEALTH};
use lockstep_core::{Config, ConnId, ContextBatch, CoreError, Frame, Input, Reason, Reply, Request};
use serde_json::{json, Value};

fn write(key: &str, op: Op, expect: Expect, lifetime: Lifetime) -> Request {
    Request::ContextWrite(Write { namespace: String::new(), key: key.into(), op, expect, lifetime })
}

fn set(key: &str, v: Value) -> Request {
    write(key, Op::Set(v.to_string()), Expect::Any, Lifetime::Permanent)
}

fn version(reply: Reply) -> u64 {
    match reply {
        Reply::ContextWritten(w) => w.version,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn watch(h: &mut Harness, selector: Selector, from: u64) -> ConnId {
    let conn = h.open_conn();
    h.engine.handle(h.now, Input::WatchContext { conn, namespace: String::new(), selector, from });
    h.pump();
    conn
}

fn batches(h: &Harness, conn: ConnId) -> Vec<ContextBatch> {
    h.frames(conn)
        .iter()
        .filter_map(|f| match f {
            Frame::Context(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn value(h: &Harness, key: &str) -> Option<Value> {
    h.engine.context_get("", key, None).ok().map(|r| (*r.value).clone())
}

#[test]
fn compare_and_set_from_sessions_and_clients() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "r", &[]);
    let v1 = version(h.call(a, write("job.plan", Op::Set("{\"step\":1}".into()), Expect::Absent, Lifetime::Permanent)));
    let e = h.call_err(a, write("job.plan", Op::Set("{}".into()), Expect::Absent, Lifetime::Permanent));
    assert_eq!((e.reason(), e.current_version()), (Reason::ContextConflict, Some(v1)));
    // A client outside any session writes with a CAS on the version it read.
    h.engine.handle(
        h.now,
        Input::ContextWrite {
            origin: 7,
            writer: "cli".into(),
            write: Write {
                namespace: "default".into(),
                key: "job.plan".into(),
                op: Op::Patch("{\"step\":2}".into()),
                expect: Expect::Version(v1),
                lifetime: Lifetime::Permanent,
            },
        },
    );
    h.pump();
    let (origin, result) = h.context_done.pop().unwrap();
    assert_eq!(origin, 7);
    let v2 = result.unwrap().version;
    assert!(v2 > v1);
    let read = h.engine.context_get("default", "job.plan", None).unwrap();
    assert_eq!((read.writer.as_str(), &*read.value), ("cli", &json!({"step": 2})));
    assert_eq!(*h.engine.context_get("", "job.plan", Some(v1)).unwrap().value, json!({"step": 1}));
    // Writes to the server's keys are refused, from anyone.
    let e = h.call_err(a, set("system.health", json!({})));
    assert_eq!(e.reason(), Reason::ContextReadOnly);
}

#[test]
fn a_paused_agent_may_not_write_context() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "r", &[]);
    h.admin(lockstep_core::AdminAction::PauseAgent { namespace: "default".into(), agent_id: "a".into() });
    let e = h.call_err(a, set("k", json!(1)));
    assert_eq!(e.reason(), Reason::Paused);
    assert_eq!(value(&h, "k"), None);
}

#[test]
fn lease_bound_keys_go_when_their_writer_is_lost_and_watchers_hear_it() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "r", &[]);
    let b = h.join("b", "r", &[]);
    version(h.call(a, write("presence.a", Op::Set("true".into()), Expect::Any, Lifetime::Lease)));
    version(h.call(b, write("presence.b", Op::Set("true".into()), Expect::Any, Lifetime::Lease)));
    let w = watch(&mut h, Selector::Prefix("presence".into()), 0);
    // a goes silent; b heartbeats.
    let lease = h.config().lease_ms();
    h.advance_heartbeating(lease * 2, &[b]);
    assert_eq!(value(&h, "presence.a"), None);
    assert_eq!(value(&h, "presence.b"), Some(json!(true)));
    let all: Vec<_> = batches(&h, w).into_iter().flat_map(|b| b.changes).collect();
    assert!(all.iter().any(|c| &*c.key == "presence.a" && c.deleted), "{all:?}");
    // Leaving deletes them too.
    h.call_ok(b, Request::Heartbeat);
    h.send_with_id(b, 0, Request::Deregister);
    assert_eq!(value(&h, "presence.b"), None);
}

#[test]
fn a_ttl_key_expires_on_the_engines_timer() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "r", &[]);
    h.now = 1000;
    version(h.call(a, write("lock", Op::Set("\"a\"".into()), Expect::Absent, Lifetime::TtlMs(500))));
    h.advance_heartbeating(1499, &[a]);
    assert_eq!(value(&h, "lock"), Some(json!("a")));
    h.advance_heartbeating(1500, &[a]);
    assert_eq!(value(&h, "lock"), None);
    // Taken again once expired, the CAS "must not exist" succeeds.
    version(h.call(a, write("lock", Op::Set("\"a\"".into()), Expect::Absent, Lifetime::TtlMs(500))));
    // Rewritten permanent, it no longer expires.
    version(h.call(a, set("lock", json!("mine"))));
    h.advance_heartbeating(5000, &[a]);
    assert_eq!(value(&h, "lock"), Some(json!("mine")));
}

#[test]
fn a_watch_begins_with_where_it_stands_and_resumes_without_loss() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "r", &[]);
    version(h.call(a, set("doc.x", json!({"n": 0}))));
    let w = watch(&mut h, Selector::Key("doc.x".into()), 0);
    let first = batches(&h, w);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].changes[0].value, json!({"n": 0}));
    let resume = first[0].resume_from;
    h.disconnect(w);
    // Changes while nobody watches...
    for n in 1..=3 {
        h.call(
            a,
            write(
                "doc.x",
                Op::Patch(json!({ "n": n, format!("f{n}"): n }).to_string()),
                Expect::Any,
                Lifetime::Permanent,
            ),
        );
    }
    // ...come as one delta on a resumed watch.
    let w = watch(&mut h, Selector::Key("doc.x".into()), resume);
    let got = batches(&h, w);
    assert_eq!(got.len(), 1);
    let c = &got[0].changes[0];
    assert_eq!(c.base_version, resume);
    assert_eq!(c.value, json!({"n": 3, "f1": 1, "f2": 2, "f3": 3}));
    // A watch of a key nobody wrote still gets a first (empty) batch: where to resume from.
    let empty = watch(&mut h, Selector::Key("nothing.here".into()), 0);
    assert_eq!(batches(&h, empty).len(), 1);
    assert!(batches(&h, empty)[0].changes.is_empty());
}

#[test]
fn bad_watches_are_refused() {
    let mut h = Harness::new(Config::default());
    let w = watch(&mut h, Selector::Key("bad key".into()), 0);
    assert!(matches!(h.log(w).closed, Some(Some(CoreError::Invalid { .. }))));
}

#[test]
fn system_health_follows_the_registry_and_every_namespace_reads_it() {
    let mut h = Harness::new(Config::default());
    let health = |h: &Harness, ns: &str| (*h.engine.context_get(ns, SYSTEM_HEALTH, None).unwrap().value).clone();
    assert_eq!(health(&h, "")["total_agents"], json!(0));
    let w = watch(&mut h, Selector::Key(SYSTEM_HEALTH.into()), 0);
    let a = h.join("a", "r", &[]);
    h.join_with(lockstep_core::RegisterRequest { namespace: "other".into(), ..agent("b", "r", &[]) });
    let refresh = h.config().context.system_refresh_ms;
    // Published at the end of the first turn once the refresh window has passed.
    h.advance_to(h.now + refresh);
    h.heartbeat(a);
    let facts = health(&h, "other");
    assert_eq!(facts["total_agents"], json!(2));
    assert_eq!(facts["healthy_agents"], json!(2));
    assert_eq!(facts["health_score"], json!(1.0));
    assert_eq!(facts["breakers_open"], json!(0));
    assert!(batches(&h, w).iter().flat_map(|b| &b.changes).any(|c| c.version > 1));
}
