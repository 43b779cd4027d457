//! The control plane on a manual clock: pause and resume, emergency stop, operators' commands.

mod harness;

use harness::{agents, emergency_stop, pause, publish, resume, update, Harness, WatcherView};
use lockstep_core::command::{CommandOutcome, CommandReply};
use lockstep_core::{AgentStatus, Config, ControlKind, ErrorCode, Frame, Request, WatchTarget};
use serde_json::json;

fn controls(h: &Harness, conn: lockstep_core::ConnId) -> Vec<ControlKind> {
    h.frames(conn)
        .iter()
        .filter_map(|f| match f {
            Frame::Control(n) => Some(n.kind),
            _ => None,
        })
        .collect()
}

#[test]
fn a_paused_agent_is_told_refused_and_held_then_catches_up_converged() {
    let mut h = Harness::new(Config::default());
    let owner = h.join("owner", "trader", &[]);
    let w = h.join("watcher", "risk", &["market.>"]);
    h.call_ok(w, Request::Watch(WatchTarget::Agent("owner".into())));
    h.call(owner, update(json!({"pnl": 0})));

    let detail = h.admin_done(pause("watcher"));
    assert!(detail.contains("paused"), "{detail}");
    h.pump();
    assert_eq!(controls(&h, w), vec![ControlKind::Paused]);
    assert_eq!(h.status("watcher"), AgentStatus::Paused);
    let before = h.deliveries(w).len();

    // While paused: the agent may not act, and nothing reaches it...
    let err = h.call_err(w, publish("market.x", "no"));
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert!(err.to_string().contains("paused it"), "{err}");
    assert_eq!(h.call_err(w, update(json!({"a": 1}))).code(), ErrorCode::FailedPrecondition);
    for i in 1..=30 {
        h.call(owner, update(json!({"pnl": i, format!("k{}", i % 3): i})));
        h.call_ok(owner, publish("market.btc", &i.to_string()));
    }
    h.pump();
    assert_eq!(h.deliveries(w).len(), before, "deliveries are held while paused");

    // ...and on resume it gets everything, its view of the owner converged.
    let detail = h.admin_done(resume("watcher"));
    assert!(detail.contains("resumed"), "{detail}");
    h.pump();
    assert_eq!(controls(&h, w), vec![ControlKind::Paused, ControlKind::Resumed]);
    assert_eq!(h.status("watcher"), AgentStatus::Active);
    assert_eq!(h.deliveries(w).len(), before + 30);
    let mut view = WatcherView::default();
    view.apply_all(&h.state_changes(w));
    assert_eq!(Some(h.engine.get_state("", "owner").unwrap()), view.states.get("owner").cloned());
    assert!(!h.engine.control().audit().is_empty());
}

#[test]
fn pausing_an_unknown_agent_is_not_found() {
    let mut h = Harness::new(Config::default());
    assert_eq!(h.admin_err(pause("ghost")).code(), ErrorCode::NotFound);
}

#[test]
fn emergency_stop_pauses_everyone_until_resume_all() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "worker", &["t"]);
    let b = h.join("b", "worker", &["t"]);
    let detail = h.admin_done(emergency_stop("bad market data"));
    assert!(detail.contains("2 agent(s) paused"), "{detail}");
    h.pump();
    for conn in [a, b] {
        assert_eq!(controls(&h, conn), vec![ControlKind::EmergencyStop]);
        let err = h.call_err(conn, publish("t", "x"));
        assert!(err.to_string().contains("emergency stop") && err.to_string().contains("bad market data"), "{err}");
    }
    let err = h.call_err(
        a,
        Request::Sync {
            sync_id: "s".into(),
            participants: agents(&["a", "b"]),
            timeout_ms: 0,
            payload: Default::default(),
            summary: false,
            quorum: None,
        },
    );
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    // A newcomer is stopped too, and told.
    let c = h.join("c", "worker", &[]);
    assert_eq!(controls(&h, c), vec![ControlKind::EmergencyStop]);
    assert_eq!(h.status("c"), AgentStatus::Paused);

    let detail = h.admin_done(lockstep_core::AdminAction::ResumeAll);
    assert!(detail.contains("emergency stop lifted"), "{detail}");
    h.pump();
    assert_eq!(controls(&h, a), vec![ControlKind::EmergencyStop, ControlKind::ResumedAll]);
    h.call_ok(a, publish("t", "again"));
    assert_eq!(h.delivered_payloads(b), vec!["again"]);
}

#[test]
fn a_command_reaches_its_agent_and_its_reply_reaches_the_operator() {
    let mut h = Harness::new(Config::default());
    let a = h.join("trainer", "strategy", &[]);
    let id = h.send_command(77, "trainer", "rebalance_weights", r#"{"min_weight":0.1}"#, 5_000).unwrap();
    let sent = h.frames(a).iter().find_map(|f| match f {
        Frame::Command { command_id, command, params, .. } => Some((*command_id, command.clone(), params.clone())),
        _ => None,
    });
    assert_eq!(sent, Some((id, "rebalance_weights".to_owned(), json!({"min_weight": 0.1}))));
    h.call_ok(a, Request::CommandResult { command_id: id, reply: CommandReply::Result(r#"{"ok":true}"#.into()) });
    assert_eq!(h.commands_done, vec![(77, id, CommandOutcome::Completed(json!({"ok": true})))]);

    // An agent error is its own outcome.
    let id2 = h.send_command(78, "trainer", "explode", "", 5_000).unwrap();
    h.call_ok(a, Request::CommandResult { command_id: id2, reply: CommandReply::Error("cannot".into()) });
    assert_eq!(h.commands_done[1], (78, id2, CommandOutcome::AgentError("cannot".into())));
}

#[test]
fn a_command_without_reply_times_out_and_one_for_a_departed_agent_is_aborted() {
    let mut h = Harness::new(Config::default());
    let a = h.join("slow", "worker", &[]);
    let id = h.send_command(1, "slow", "ping", "", 1_000).unwrap();
    h.advance_heartbeating(999, &[a]);
    assert!(h.commands_done.is_empty());
    h.advance_heartbeating(1_000, &[a]);
    assert!(
        matches!(h.commands_done[..], [(1, i, CommandOutcome::TimedOut { .. })] if i == id),
        "{:?}",
        h.commands_done
    );
    // A late reply is refused: the command is over.
    let err = h.call_err(a, Request::CommandResult { command_id: id, reply: CommandReply::Result("1".into()) });
    assert!(err.to_string().contains("timed out, was already answered"), "{err}");

    let id = h.send_command(2, "slow", "ping", "", 60_000).unwrap();
    h.send(a, Request::Deregister);
    h.pump();
    assert!(
        matches!(&h.commands_done[1], (2, i, CommandOutcome::AgentGone { .. }) if *i == id),
        "{:?}",
        h.commands_done
    );
    assert_eq!(h.send_command(3, "slow", "ping", "", 1_000).unwrap_err().code(), ErrorCode::NotFound);
}

#[test]
fn an_agents_own_status_survives_a_pause() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "worker", &[]);
    h.call_ok(a, Request::SetStatus(AgentStatus::Busy));
    h.admin_done(pause("a"));
    assert_eq!(h.status("a"), AgentStatus::Paused);
    // While held it stays `paused`; what it asks for now is what it gets on resume.
    h.call_ok(a, Request::SetStatus(AgentStatus::Idle));
    assert_eq!(h.status("a"), AgentStatus::Paused);
    h.admin_done(resume("a"));
    assert_eq!(h.status("a"), AgentStatus::Idle);
}

/// A paused agent may not claim or record traces (its other writes are refused alike); it may
/// still look them up, and once resumed it claims as before.
#[test]
fn a_paused_agent_may_look_traces_up_but_not_claim_or_record_them() {
    use lockstep_core::{Input, Reason, SessionCall, TraceEvent, TraceInput};
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "runner", &[]);
    let call = SessionCall { namespace: String::new(), agent_id: "a".into(), resume_token: h.token(a) };
    let claim = |origin| {
        Input::Trace(TraceInput::GetOrClaim {
            origin,
            call: call.clone(),
            tool: "fetch".into(),
            input: "{\"url\":\"x\"}".into(),
            wait_ms: 0,
        })
    };
    h.admin_done(pause("a"));
    h.engine.handle(h.now, claim(1));
    let lookup = TraceInput::Lookup {
        origin: 2,
        namespace: String::new(),
        tool: "fetch".into(),
        input: "{\"url\":\"x\"}".into(),
    };
    h.engine.handle(h.now, Input::Trace(lookup));
    h.pump();
    match &h.trace_events[..] {
        [TraceEvent::Refused { origin: 1, error }, TraceEvent::Miss { origin: 2 }] => {
            assert_eq!(error.reason(), Reason::Paused, "{error}");
            assert!(error.to_string().contains("record or claim traces"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    h.trace_events.clear();
    h.admin_done(resume("a"));
    h.engine.handle(h.now, claim(3));
    h.pump();
    assert!(matches!(h.trace_events[..], [TraceEvent::Claimed { origin: 3, .. }]), "{:?}", h.trace_events);
}
