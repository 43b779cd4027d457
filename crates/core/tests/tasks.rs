//! Task handoff through the engine on a manual clock: work asked for and handed out fairly, the
//! submitter told of every step on its session, an executor that loses its lease or misses its
//! deadline losing the task to another, watchers hearing every event (refusals included), bad
//! requests refused, and an operator's retry (what is kept: `durable.rs`).

mod harness;

use harness::Harness;
use lockstep_core::task::{EventKind, Submit, TaskEvent, TaskState};
use lockstep_core::{AdminAction, AdminOutcome, Config, ConnId, CoreError, Frame, Input, Reason, Reply, Request};

fn submit(kind: &str, timeout_ms: u64) -> Request {
    Request::SubmitTask(Box::new(Submit {
        kind: kind.into(),
        input_json: "{}".into(),
        timeout_ms,
        ..Submit::default()
    }))
}

fn work(max_in_flight: u32) -> Request {
    Request::TaskWork { kinds: vec![], max_in_flight }
}

/// The assignments `conn` received, as (task id, attempt).
fn assigned(h: &Harness, conn: ConnId) -> Vec<(String, u32)> {
    h.frames(conn)
        .iter()
        .filter_map(|f| match f {
            Frame::TaskAssigned(a) => Some((a.id.to_string(), a.attempt)),
            _ => None,
        })
        .collect()
}

fn events(h: &Harness, conn: ConnId) -> Vec<TaskEvent> {
    h.frames(conn)
        .iter()
        .filter_map(|f| match f {
            Frame::TaskEvent(e) => Some((**e).clone()),
            _ => None,
        })
        .collect()
}

fn kinds(h: &Harness, conn: ConnId) -> Vec<EventKind> {
    events(h, conn).iter().map(|e| e.kind).collect()
}

fn id(reply: Reply) -> String {
    match reply {
        Reply::TaskSubmitted(id) => id,
        other => panic!("expected a submission, got {other:?}"),
    }
}

#[test]
fn work_is_shared_fairly_and_the_submitter_hears_every_step() {
    let mut h = Harness::new(Config::default());
    let planner = h.join("planner", "planner", &[]);
    let a = h.join("a", "runner", &[]);
    let b = h.join("b", "runner", &[]);
    h.call_ok(a, work(2));
    h.call_ok(b, work(2));
    let ids: Vec<String> = (0..4).map(|_| id(h.call(planner, submit("tool", 0)))).collect();
    assert_eq!(assigned(&h, a), [(ids[0].clone(), 1), (ids[2].clone(), 1)]);
    assert_eq!(assigned(&h, b), [(ids[1].clone(), 1), (ids[3].clone(), 1)]);
    // Both are full: the fifth waits until one completes, and goes to that one.
    let fifth = id(h.call(planner, submit("tool", 0)));
    assert_eq!(h.engine.task_get("", &fifth).unwrap().state, TaskState::Ready);
    h.call_ok(b, Request::StartTask { id: ids[1].clone(), attempt: 1 });
    h.call_ok(b, Request::CompleteTask { id: ids[1].clone(), attempt: 1, output_json: "42".into() });
    assert_eq!(assigned(&h, b).last(), Some(&(fifth.clone(), 1)));
    let of_second: Vec<EventKind> = events(&h, planner).iter().filter(|e| *e.id == *ids[1]).map(|e| e.kind).collect();
    assert_eq!(of_second, [EventKind::Submitted, EventKind::Assigned, EventKind::Started, EventKind::Completed]);
    let done = events(&h, planner).into_iter().find(|e| e.kind == EventKind::Completed).unwrap();
    assert_eq!(done.output.as_deref(), Some(&serde_json::json!(42)));
    let queues = h.engine.task_queues();
    assert_eq!((queues[0].ready, queues[0].held, queues[0].completed), (0, 4, 1));
}

#[test]
fn a_lost_executor_and_a_missed_deadline_lose_the_task_to_another() {
    let mut h = Harness::new(Config::default());
    let lease_ms = h.config().heartbeat_interval_ms * h.config().lease_intervals as u64;
    let planner = h.join("planner", "planner", &[]);
    let watcher = h.open_conn();
    h.engine.handle(h.now, Input::WatchTasks { conn: watcher, namespace: String::new() });
    h.pump();
    let lost = h.join("lost", "runner", &[]);
    h.call_ok(lost, work(1));
    // A deadline far past the lease: the lease decides.
    let first = id(h.call(planner, submit("tool", 10 * lease_ms)));
    assert_eq!(assigned(&h, lost), [(first.clone(), 1)]);
    let steady = h.join("steady", "runner", &[]);
    h.call_ok(steady, work(1));
    h.advance_heartbeating(h.now + 2 * lease_ms, &[planner, steady]);
    assert_eq!(assigned(&h, steady), [(first.clone(), 2)]);
    let t = h.engine.task_get("", &first).unwrap();
    assert_eq!((t.failures, t.errors[0].error.as_str()), (1, "executor 'lost' lost its lease"));
    // The steady one sits on it past its deadline: it goes back to the queue, attempt counted.
    h.advance_heartbeating(h.now + 11 * lease_ms, &[planner, steady]);
    let t = h.engine.task_get("", &first).unwrap();
    assert_eq!(t.failures, 2);
    assert!(t.errors[1].error.contains("missed its deadline"), "{:?}", t.errors);
    // It was handed straight back to the only executor with room, as attempt 3; attempt 2 is refused.
    assert_eq!(assigned(&h, steady).last(), Some(&(first.clone(), 3)));
    let late = h.call_err(steady, Request::CompleteTask { id: first.clone(), attempt: 2, output_json: "1".into() });
    assert_eq!(late.reason(), Reason::TaskNotHeld);
    let watched = kinds(&h, watcher);
    for kind in [EventKind::Assigned, EventKind::Failed, EventKind::Retried, EventKind::Refused] {
        assert!(watched.contains(&kind), "{kind:?} in {watched:?}");
    }
    // After max_attempts (3 by default) it is dead-lettered; an operator's retry brings it back.
    h.advance_heartbeating(h.now + 11 * lease_ms, &[planner, steady]);
    assert_eq!(h.engine.task_get("", &first).unwrap().state, TaskState::DeadLettered);
    assert!(kinds(&h, planner).contains(&EventKind::DeadLettered));
    let counters = h.engine.info().counters;
    assert_eq!((counters.tasks_dead_lettered, counters.tasks_completed), (1, 0));
    assert_eq!(counters.task_attempts_failed, 3, "every lost attempt, the last before the dead letter too");
    let retried = h.admin(AdminAction::RetryTask { namespace: String::new(), id: first.clone() });
    assert!(matches!(retried, Some(Ok(AdminOutcome::Done(_)))), "{retried:?}");
    assert_eq!(assigned(&h, steady).last(), Some(&(first.clone(), 4)));
    let entry = h.engine.control().audit().entries().find(|e| e.command == "retry_task").cloned();
    let entry = entry.expect("the retry is audited");
    assert_eq!((entry.actor.as_str(), entry.target.as_str()), ("ops", first.as_str()));
    // A task that is not dead-lettered is refused, and the refusal is audited too.
    let refused = h.admin(AdminAction::RetryTask { namespace: String::new(), id: first.clone() });
    assert!(matches!(refused, Some(Err(_))), "{refused:?}");
    assert_eq!(h.engine.control().audit().entries().filter(|e| e.command == "retry_task").count(), 2);
}

#[test]
fn bad_requests_are_refused_with_nothing_applied() {
    let mut h = Harness::new(Config::default());
    let planner = h.join("planner", "planner", &[]);
    let too_many = h.config().tasks.max_in_flight_per_agent + 1;
    assert!(matches!(h.call_err(planner, work(too_many)), CoreError::Invalid { .. }));
    let e = h.call_err(planner, Request::CompleteTask { id: "nope".into(), attempt: 1, output_json: "1".into() });
    assert_eq!(e.reason(), Reason::UnknownTask);
    let e = h.call_err(planner, Request::TaskWork { kinds: vec!["bad kind".into()], max_in_flight: 0 });
    assert_eq!(e.reason(), Reason::InvalidArgument);
    assert!(h.engine.task_list("", None, None).unwrap().is_empty());
    assert_eq!(h.engine.task_get("", "nope").unwrap_err().reason(), Reason::UnknownTask);
}

/// A completed task becomes the trace of its type on its input (producer: its executor; lineage:
/// the traces of the tasks it depended on and the context versions pinned at its submission), and
/// a task handed out pins the traces of its dependencies until it is done.
#[test]
fn completed_tasks_become_traces_with_their_lineage_and_open_tasks_pin_their_inputs() {
    use lockstep_core::context::{Expect, Lifetime, Op, Write};
    use lockstep_core::trace::{canonical, trace_id};
    let mut h = Harness::new(Config::default());
    let planner = h.join("planner", "planner", &[]);
    let runner = h.join("runner", "runner", &[]);
    let persona = Write {
        namespace: String::new(),
        key: "persona".into(),
        op: Op::Set(r#"{"tone":"terse"}"#.into()),
        expect: Expect::Any,
        lifetime: Lifetime::Permanent,
    };
    h.call(planner, Request::ContextWrite(persona));
    let fetch = id(h.call(
        planner,
        Request::SubmitTask(Box::new(Submit {
            kind: "tool.fetch".into(),
            input_json: r#"{"url": "u", "n": 1.0}"#.into(),
            context_keys: vec!["persona".into()],
            ..Submit::default()
        })),
    ));
    let parse = id(h.call(
        planner,
        Request::SubmitTask(Box::new(Submit {
            kind: "tool.parse".into(),
            input_json: "{}".into(),
            depends_on: vec![fetch.clone()],
            ..Submit::default()
        })),
    ));
    h.call_ok(runner, work(1));
    h.call_ok(runner, Request::CompleteTask { id: fetch.clone(), attempt: 1, output_json: r#"{"page":"<p>"}"#.into() });
    // Equal inputs however written: the trace is found by the canonical form.
    let fetched = trace_id("tool.fetch", &canonical(&serde_json::json!({"n": 1, "url": "u"})));
    let t = h.engine.trace_show("", &fetched).expect("the completed task's trace");
    assert_eq!((t.tool.as_str(), t.producer.as_str()), ("tool.fetch", "runner"));
    assert_eq!(t.output.inline.as_deref(), Some(&br#"{"page":"<p>"}"#[..]));
    let lineage = h.engine.trace_lineage("", &fetched).unwrap();
    assert_eq!(lineage.context.iter().map(|c| (c.key.as_str(), c.version)).collect::<Vec<_>>(), [("persona", 1)]);
    // The dependent task is held by the runner now: it pins its input's trace.
    assert_eq!(assigned(&h, runner).last(), Some(&(parse.clone(), 1)));
    let pins = h.engine.trace_show("", &fetched).unwrap().pins;
    assert_eq!(pins.iter().map(String::as_str).collect::<Vec<_>>(), [format!("task {parse}")], "{pins:?}");
    h.call_ok(runner, Request::CompleteTask { id: parse.clone(), attempt: 1, output_json: "[1]".into() });
    let parsed = trace_id("tool.parse", "{}");
    assert_eq!(h.engine.trace_lineage("", &parsed).unwrap().parents, vec![(fetched.clone(), true)]);
    assert_eq!(h.engine.trace_lineage("", &fetched).unwrap().children, vec![parsed]);
    assert!(h.engine.trace_show("", &fetched).unwrap().pins.is_empty(), "unpinned once the dependent is done");
}
