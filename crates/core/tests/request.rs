//! Request/reply between agents on a manual clock: who answers, in what order frames arrive, and
//! how a request ends when nobody answers, its responder goes away, or its requester does.

mod harness;

use bytes::Bytes;
use harness::{pause, publish, Harness};
use lockstep_core::{Config, ConnId, CoreError, ErrorCode, Frame, Limits, Reason, Reply, Request};

fn ask(topic: &str, payload: &str, timeout_ms: u64) -> Request {
    Request::AgentRequest {
        topic: topic.into(),
        payload: Bytes::from(payload.to_owned()),
        content_type: "text/plain".into(),
        timeout_ms,
    }
}

fn answer(token: u64, payload: &str) -> Request {
    Request::Respond {
        token,
        payload: Bytes::from(payload.to_owned()),
        content_type: String::new(),
        error: String::new(),
    }
}

/// The requests `conn` was given: (token, requester, payload).
fn incoming(h: &Harness, conn: ConnId) -> Vec<(u64, String, String)> {
    h.frames(conn)
        .iter()
        .filter_map(|f| match f {
            Frame::IncomingRequest { token, requester, payload, .. } => {
                Some((*token, requester.clone(), String::from_utf8_lossy(payload).into_owned()))
            }
            _ => None,
        })
        .collect()
}

fn error(reply: Option<Reply>) -> CoreError {
    match reply {
        Some(Reply::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn one_responder_answers_and_the_answer_is_the_reply() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &["quotes.>"]);
    let pricer = h.join("pricer", "pricer", &["quotes.*"]);
    let id = h.send(asker, ask("quotes.get", "ACME", 0));
    assert_eq!(h.reply(asker, id), None, "no reply before the answer");
    let given = incoming(&h, pricer);
    assert_eq!(given.len(), 1);
    assert!(incoming(&h, asker).is_empty(), "the requester is never asked itself");
    let (token, requester, payload) = given[0].clone();
    assert_eq!((requester.as_str(), payload.as_str()), ("asker", "ACME"));
    h.call_ok(pricer, answer(token, "42"));
    assert_eq!(
        h.reply(asker, id),
        Some(Reply::Response {
            payload: Bytes::from_static(b"42"),
            content_type: String::new(),
            responder: "pricer".into()
        })
    );
    assert_eq!(h.engine.info().pending_requests, 0);
    assert_eq!(h.engine.info().timers, 3, "two leases and the health sample: the request's timer is gone");
}

#[test]
fn responders_take_turns_in_id_order_skipping_paused_ones() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &[]);
    let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "pricer", &["q"])).collect();
    for _ in 0..4 {
        h.send(asker, ask("q", "x", 0));
    }
    let counts: Vec<usize> = conns.iter().map(|c| incoming(&h, *c).len()).collect();
    assert_eq!(counts, [2, 1, 1], "a, b, c, then a again");
    h.admin_done(pause("b"));
    h.send(asker, ask("q", "x", 0));
    h.send(asker, ask("q", "x", 0));
    let counts: Vec<usize> = conns.iter().map(|c| incoming(&h, *c).len()).collect();
    assert_eq!(counts, [3, 1, 2], "b is paused: after a comes c, then a");
}

#[test]
fn no_responders_is_refused_at_once() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &["q"]);
    let e = h.call_err(asker, ask("q", "x", 0));
    assert_eq!((e.code(), e.reason()), (ErrorCode::Unavailable, Reason::NoResponders));
    assert!(e.to_string().contains("'q'"), "{e}");
    // A request needs an id to be answered with, and a concrete topic.
    h.join("b", "pricer", &["q.>"]);
    h.send_with_id(asker, 0, ask("q.x", "x", 0));
    assert_eq!(error(h.reply(asker, 0)).code(), ErrorCode::InvalidArgument);
    assert_eq!(h.call_err(asker, ask("q.*", "x", 0)).code(), ErrorCode::InvalidArgument);
    assert_eq!(h.engine.info().pending_requests, 0);
}

#[test]
fn a_silent_responder_times_out_by_name_and_a_late_answer_is_refused() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &[]);
    let slow = h.join("slow", "pricer", &["q"]);
    let id = h.send(asker, ask("q", "x", 500));
    let (token, ..) = incoming(&h, slow)[0].clone();
    h.advance_heartbeating(499, &[asker, slow]);
    assert_eq!(h.reply(asker, id), None);
    h.advance_heartbeating(500, &[asker, slow]);
    let e = error(h.reply(asker, id));
    assert_eq!((e.code(), e.reason(), e.agent()), (ErrorCode::DeadlineExceeded, Reason::RequestTimeout, Some("slow")));
    assert!(e.to_string().contains("500 ms"), "{e}");
    let late = h.call_err(slow, answer(token, "late"));
    assert_eq!((late.code(), late.reason()), (ErrorCode::NotFound, Reason::UnknownRequest));
    assert!(!h.is_closed(slow), "the responder's session goes on");
    assert_eq!(h.replies(asker, id).len(), 1, "answered once");
}

#[test]
fn only_the_chosen_responder_may_answer() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &[]);
    let a = h.join("a", "pricer", &["q"]);
    let b = h.join("b", "other", &[]);
    let id = h.send(asker, ask("q", "x", 0));
    let (token, ..) = incoming(&h, a)[0].clone();
    assert_eq!(h.call_err(b, answer(token, "mine")).reason(), Reason::UnknownRequest);
    let refuse = Request::Respond { token, payload: Bytes::new(), content_type: String::new(), error: "busy".into() };
    h.call_ok(a, refuse);
    let e = error(h.reply(asker, id));
    assert_eq!((e.reason(), e.agent()), (Reason::RequestRefused, Some("a")));
    assert!(e.to_string().contains("busy"), "{e}");
}

#[test]
fn a_responder_that_leaves_or_is_lost_fails_its_requests_at_once() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &[]);
    let leaver = h.join("leaver", "pricer", &["q"]);
    let id = h.send(asker, ask("q", "x", 60_000));
    h.send_with_id(leaver, 0, Request::Deregister);
    let e = error(h.reply(asker, id));
    assert_eq!((e.code(), e.reason(), e.agent()), (ErrorCode::Aborted, Reason::RequestAborted, Some("leaver")));

    let silent = h.join("silent", "pricer", &["q"]);
    let id = h.send(asker, ask("q", "x", 60_000));
    assert_eq!(incoming(&h, silent).len(), 1);
    let lease = h.config().lease_ms();
    h.advance_heartbeating(h.now + lease + 1, &[asker]);
    let e = error(h.reply(asker, id));
    assert_eq!((e.reason(), e.agent()), (Reason::RequestAborted, Some("silent")));
    assert!(e.to_string().contains("lease"), "{e}");
    assert_eq!(h.engine.info().pending_requests, 0);
}

#[test]
fn a_requester_that_leaves_is_not_answered_and_its_responder_is_not_troubled() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &[]);
    let pricer = h.join("pricer", "pricer", &["q"]);
    h.send(asker, ask("q", "x", 0));
    h.send(asker, ask("q", "y", 1_000));
    h.send_with_id(asker, 0, Request::Deregister);
    let given = incoming(&h, pricer);
    h.call_ok(pricer, answer(given[0].0, "dropped quietly"));
    h.advance_heartbeating(2_000, &[pricer]);
    assert_eq!(h.engine.info().pending_requests, 0, "the other one timed out, telling nobody");
    assert!(!h.is_closed(pricer));
}

#[test]
fn a_request_reaches_its_responder_after_what_was_routed_to_it_before() {
    let mut h = Harness::new(Config::default());
    let asker = h.join("asker", "desk", &[]);
    let pricer = h.join("pricer", "pricer", &["q"]);
    h.call_ok(asker, publish("q", "before"));
    h.send(asker, ask("q", "request", 0));
    let order: Vec<&str> = h
        .frames(pricer)
        .iter()
        .filter_map(|f| match f {
            Frame::Deliveries(_) => Some("delivery"),
            Frame::IncomingRequest { .. } => Some("request"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["delivery", "request"]);
}

#[test]
fn limits_bound_pending_requests_payloads_and_timeouts() {
    let limits = Limits {
        max_pending_requests_per_agent: 2,
        max_pending_requests: 3,
        max_payload_bytes: 8,
        max_request_timeout_ms: 1_000,
        ..Limits::default()
    };
    let mut h = Harness::new(Config { limits, default_request_timeout_ms: 1_000, ..Config::default() });
    let a = h.join("a", "desk", &[]);
    let b = h.join("b", "desk", &[]);
    let pricer = h.join("pricer", "pricer", &["q"]);
    h.send(a, ask("q", "1", 0));
    h.send(a, ask("q", "2", 0));
    let e = h.call_err(a, ask("q", "3", 0));
    assert_eq!((e.code(), e.reason()), (ErrorCode::ResourceExhausted, Reason::Limit));
    assert!(e.to_string().contains("max_pending_requests_per_agent"), "{e}");
    h.send(b, ask("q", "4", 0));
    let e = h.call_err(b, ask("q", "5", 0));
    assert!(e.to_string().contains("limits.max_pending_requests"), "{e}");
    assert_eq!(h.call_err(b, ask("q", "123456789", 0)).code(), ErrorCode::InvalidArgument);
    assert_eq!(h.call_err(b, ask("q", "x", 1_001)).code(), ErrorCode::InvalidArgument);
    // An answer over the limit is refused and the request still waits for a smaller one.
    let (token, ..) = incoming(&h, pricer)[0].clone();
    assert_eq!(h.call_err(pricer, answer(token, "123456789")).code(), ErrorCode::InvalidArgument);
    h.call_ok(pricer, answer(token, "ok"));
    assert_eq!(h.engine.info().pending_requests, 2);
}
