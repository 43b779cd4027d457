//! The rules of the lockstep engine, as executable specification.
//!
//! Every test drives a real [`Engine`] through the [`harness::Harness`], which plays the server
//! shell on a manual clock (plain milliseconds) and records every frame each connection receives.
//! Unless a test says otherwise the configuration is the default one: heartbeats every 1 000 ms, an
//! agent is lost after 3 silent intervals (3 000 ms).

mod harness;

use std::sync::Arc;

use bytes::Bytes;
use harness::{agent, agents, force, publish, sync_outcome, update, Harness, WatcherView};
use lockstep_core::notice::Notice;
use lockstep_core::outbox::Outbox;
use lockstep_core::{
    AdminAction, AdminOutcome, AgentQuery, AgentStatus, Config, ConnId, CoreError, ErrorCode, Frame, Limits,
    OverflowPolicy, Participants, RegisterRequest, RegistryEventKind, Reply, Request, SyncOutcome, SyncState,
    WatchTarget,
};
use serde_json::json;

fn harness() -> Harness {
    Harness::new(Config::default())
}

fn with_limits(limits: Limits) -> Harness {
    Harness::new(Config { limits, ..Config::default() })
}

// =================================================================================================
// 1. Registration
// =================================================================================================

mod registration {
    use super::*;

    #[test]
    fn a_new_agent_gets_a_resume_token_and_its_lease_terms() {
        let mut h = harness();
        let conn = h.try_register(RegisterRequest {
            agent_id: "scanner-1".into(),
            role: "scanner".into(),
            capabilities: vec!["ocr".into()],
            interests: vec!["market.>".into()],
            metadata: vec![("zone".into(), "eu".into())],
            ..Default::default()
        });

        let registered = h.registered(conn);
        assert_eq!(registered.namespace, "default", "an empty namespace means the default one");
        assert_eq!(registered.agent_id, "scanner-1");
        assert_eq!(registered.resume_token, format!("token-{}", conn.0), "the shell's fresh token is used");
        assert_eq!(registered.heartbeat_interval_ms, 1000);
        assert_eq!(registered.lease_intervals, 3);
        assert!(!registered.resumed);
        assert!(!h.is_closed(conn));

        let view = h.agent_view("scanner-1").expect("listed");
        assert_eq!(view.role, "scanner");
        assert_eq!(view.capabilities, ["ocr"]);
        assert_eq!(view.interests, ["market.>"]);
        assert_eq!(view.metadata.get("zone").map(String::as_str), Some("eu"));
        assert_eq!(view.status, AgentStatus::Active);
        assert_eq!(view.state_version, 0);
    }

    #[test]
    fn an_id_with_a_live_session_cannot_be_registered_again_without_its_token() {
        let mut h = harness();
        let first = h.join("a", "worker", &[]);

        let second = h.try_register(agent("a", "worker", &[]));
        assert_eq!(h.close_error(second).code(), ErrorCode::AlreadyExists);
        assert!(h.frames(second).is_empty(), "a refused registration gets no frames");

        let wrong_token = h.try_register(RegisterRequest { resume_token: "guess".into(), ..agent("a", "worker", &[]) });
        assert_eq!(h.close_error(wrong_token).code(), ErrorCode::AlreadyExists);

        assert!(!h.is_closed(first), "the live session is untouched");
        assert_eq!(h.agents().len(), 1);
    }

    #[test]
    fn the_right_resume_token_takes_the_session_over() {
        let mut h = harness();
        let old = h.join("a", "worker", &["jobs"]);
        h.call(old, update(json!({"progress": 1})));
        let token = h.token(old);

        let new = h.try_register(RegisterRequest { resume_token: token.clone(), ..agent("a", "worker", &["jobs"]) });

        let err = h.close_error(old);
        assert!(matches!(err, CoreError::SessionEnded { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        let registered = h.registered(new);
        assert!(registered.resumed);
        assert_eq!(registered.resume_token, token, "the token stays the same");
        assert_eq!(h.engine.get_state("", "a").unwrap(), (1, json!({"progress": 1})), "state survives a takeover");

        // The old stream ending afterwards (as the shell reports it) does not touch the new session.
        h.disconnect(old);
        assert_eq!(h.status("a"), AgentStatus::Active);
        let publisher = h.join("p", "publisher", &[]);
        h.call_ok(publisher, publish("jobs", "j1"));
        assert_eq!(h.delivered_payloads(new), ["j1"], "messages go to the new connection");
    }

    #[test]
    fn a_takeover_reaches_the_new_connection_even_if_the_old_one_stopped_reading() {
        // The usual reason for a takeover: the old connection is stuck. It was told it had frames
        // (`Ready`) but never pulled them; the new connection must still be told about its own.
        let mut h = harness();
        let old = h.join("a", "worker", &["jobs"]);
        let publisher = h.join("p", "publisher", &[]);
        h.pause(old);
        h.call_ok(publisher, publish("jobs", "j1"));

        let new = h.try_register(RegisterRequest { resume_token: h.token(old), ..agent("a", "worker", &["jobs"]) });

        assert!(h.is_closed(old));
        assert!(h.registered(new).resumed);
        assert_eq!(h.delivered_payloads(new), ["j1"], "what the old connection never read goes to the new one");
        h.call_ok(publisher, publish("jobs", "j2"));
        assert_eq!(h.delivered_payloads(new), ["j1", "j2"]);
    }

    #[test]
    fn invalid_ids_roles_patterns_and_namespaces_are_refused() {
        let mut h = harness();
        let bad = [
            agent("", "worker", &[]),
            agent("has space", "worker", &[]),
            agent(&"x".repeat(129), "worker", &[]),
            agent("a", "", &[]),
            agent("a", "bad/role?", &[]),
            agent("a", "worker", &["a..b"]),
            agent("a", "worker", &["a.>.b"]),
            agent("a", "worker", &["a.b*"]),
            agent("a", "worker", &[""]),
            RegisterRequest { namespace: "no spaces".into(), ..agent("a", "worker", &[]) },
            RegisterRequest { capabilities: vec!["bad cap".into()], ..agent("a", "worker", &[]) },
            RegisterRequest {
                metadata: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
                ..agent("a", "w", &[])
            },
        ];
        for request in bad {
            let conn = h.try_register(request.clone());
            let err = h.close_error(conn);
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{request:?} -> {err}");
        }
        assert!(h.agents().is_empty(), "nothing refused was registered");
    }

    #[test]
    fn the_agents_per_namespace_limit_gives_resource_exhausted() {
        let mut h = with_limits(Limits { max_agents_per_namespace: 2, ..Limits::default() });
        h.join("a", "w", &[]);
        h.join("b", "w", &[]);

        let third = h.try_register(agent("c", "w", &[]));
        let err = h.close_error(third);
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert!(err.to_string().contains("agents per namespace"), "{err}");

        // The limit is per namespace.
        let elsewhere = h.try_register(RegisterRequest { namespace: "other".into(), ..agent("c", "w", &[]) });
        assert_eq!(h.registered(elsewhere).namespace, "other");
    }

    #[test]
    fn registering_twice_on_one_connection_is_answered_with_an_error() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        h.register_on(conn, agent("b", "w", &[]));
        assert_eq!(h.replies(conn, 0).len(), 1);
        let Reply::Error(err) = &h.replies(conn, 0)[0] else { panic!("expected an error reply") };
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(!h.is_closed(conn), "the first registration stands");
        assert!(h.agent_view("b").is_none());
    }

    #[test]
    fn requests_on_a_connection_that_never_registered_are_ignored() {
        let mut h = harness();
        let conn = h.open_conn();
        h.send(conn, publish("t", "x"));
        assert!(h.frames(conn).is_empty());
        assert!(!h.is_closed(conn));
        assert_eq!(h.engine.info().counters.published, 0);
    }
}

// =================================================================================================
// 2. Leases and sessions
// =================================================================================================

mod leases {
    use super::*;

    #[test]
    fn heartbeats_keep_an_agent_alive_past_its_lease() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        h.advance_heartbeating(20_000, &[conn]);
        assert_eq!(h.status("a"), AgentStatus::Active);
        assert!(!h.is_closed(conn));
        assert_eq!(h.agent_view("a").unwrap().last_heartbeat, 20_000);
    }

    #[test]
    fn any_request_counts_as_a_sign_of_life() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        h.advance_to(2_500);
        h.call(conn, update(json!({"k": 1})));
        h.advance_to(5_499);
        assert_eq!(h.status("a"), AgentStatus::Active, "renewed at 2 500 until 5 500");
        h.advance_to(5_500);
        assert_eq!(h.status("a"), AgentStatus::Lost);
    }

    #[test]
    fn a_server_stall_is_not_counted_as_the_agents_silence() {
        let mut h = harness();
        let a = h.join("a", "w", &[]);
        h.advance_heartbeating(2_000, &[a]);
        // The server could not run from 2 500 (its next timer) until 12 000: a's lease (to 5 000)
        // ran out meanwhile, through no fault of a's.
        h.now = 12_000;
        h.engine.handle(h.now, lockstep_core::Input::ServerStalled { since: 2_500 });
        h.advance_to(12_000);
        assert_eq!(h.status("a"), AgentStatus::Active, "the stall moved the lease");
        assert!(!h.is_closed(a));
        // The lease keeps the 2 500 ms it had left when the stall began (5 000 + 9 500).
        h.advance_to(14_499);
        assert_eq!(h.status("a"), AgentStatus::Active);
        h.advance_to(14_500);
        assert_eq!(h.status("a"), AgentStatus::Lost);
    }

    #[test]
    fn without_a_reported_stall_a_late_timer_still_loses_the_agent() {
        let mut h = harness();
        let a = h.join("a", "w", &[]);
        h.advance_heartbeating(2_000, &[a]);
        h.now = 12_000;
        h.engine.handle_timeout(h.now);
        h.pump();
        assert_eq!(h.status("a"), AgentStatus::Lost);
    }

    #[test]
    fn the_stall_threshold_is_half_the_shortest_time_a_client_is_given() {
        let config = Config::default();
        assert_eq!(config.stall_threshold_ms(), 500, "half the 1 000 ms heartbeat interval");
        let mut config = Config::default();
        config.breaker_agents.insert(
            "fast".into(),
            lockstep_core::breaker::BreakerOverrides { timeout_per_agent_ms: Some(300), ..Default::default() },
        );
        assert_eq!(config.stall_threshold_ms(), 150, "half the shortest acknowledgement timeout");
    }

    #[test]
    fn silence_for_the_whole_lease_makes_an_agent_lost() {
        let mut h = harness();
        let watcher = h.watch_registry("");
        let conn = h.join("a", "w", &["jobs"]);
        h.call_ok(conn, Request::SetStatus(AgentStatus::Busy));

        h.advance_to(2_999);
        assert_eq!(h.status("a"), AgentStatus::Busy, "3 000 ms of silence are allowed");
        assert!(!h.is_closed(conn));

        h.advance_to(3_000);
        assert_eq!(h.status("a"), AgentStatus::Lost);
        let err = h.close_error(conn);
        assert!(matches!(&err, CoreError::SessionEnded { agent, .. } if agent == "a"), "{err:?}");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        let lost =
            h.registry_events(watcher).into_iter().find(|e| e.kind == RegistryEventKind::Lost).expect("a Lost event");
        assert_eq!(lost.agent.agent_id, "a");
        assert_eq!(lost.agent.status, AgentStatus::Lost);
        assert_eq!(lost.previous_status, Some(AgentStatus::Busy));
        assert_eq!(
            h.engine
                .list_agents("", &AgentQuery { status: Some(AgentStatus::Lost), ..Default::default() })
                .unwrap()
                .len(),
            1
        );
    }

    /// Registers `id` on a new session of client connection `connection`.
    fn on_connection(h: &mut Harness, id: &str, connection: u64) -> ConnId {
        let conn = h.open_conn();
        h.register_on_connection(conn, agent(id, "w", &[]), connection);
        assert_eq!(h.registered(conn).agent_id, id);
        assert!(h.registered(conn).connection_heartbeats);
        conn
    }

    #[test]
    fn a_heartbeat_renews_every_session_of_its_client_connection_and_no_other() {
        let mut h = harness();
        let lease = h.config().lease_ms();
        let on = on_connection;
        let a = on(&mut h, "a", 7);
        let b = on(&mut h, "b", 7);
        let c = on(&mut h, "c", 7);
        let other = on(&mut h, "other", 8);
        let alone = on(&mut h, "alone", 0);
        // Only `a` heartbeats, for three leases.
        h.advance_heartbeating(3 * lease, &[a]);
        for id in ["a", "b", "c"] {
            assert_eq!(h.status(id), AgentStatus::Active, "{id} shares a's connection");
        }
        for id in ["other", "alone"] {
            assert_eq!(h.status(id), AgentStatus::Lost, "{id} is on another connection");
        }
        assert!(h.is_closed(other) && h.is_closed(alone));
        // Once `b`'s session is over, a's heartbeats no longer keep b alive.
        h.disconnect(b);
        let t = h.now + lease;
        h.advance_heartbeating(t, &[a]);
        assert_eq!(h.status("b"), AgentStatus::Lost);
        assert_eq!(h.status("c"), AgentStatus::Active);
        assert!(!h.is_closed(c));
    }

    #[test]
    fn bytes_read_from_a_connection_renew_its_sessions_as_of_the_read() {
        let mut h = harness();
        let lease = h.config().lease_ms();
        let on = on_connection;
        on(&mut h, "a", 7);
        on(&mut h, "b", 7);
        on(&mut h, "other", 8);
        // No message of theirs is applied; the shell reports bytes read from connection 7.
        h.advance_to(lease - 100);
        h.engine.handle(h.now, lockstep_core::Input::Alive { connection: 7, at: lease - 100 });
        h.engine.handle(h.now, lockstep_core::Input::Alive { connection: 9, at: lease - 100 });
        h.pump();
        h.advance_to(lease + 100);
        assert_eq!((h.status("a"), h.status("b")), (AgentStatus::Active, AgentStatus::Active));
        assert_eq!(h.status("other"), AgentStatus::Lost, "connection 8 said nothing");
        // A read reported late counts as of when it happened: it does not stretch the lease.
        h.engine.handle(h.now, lockstep_core::Input::Alive { connection: 7, at: 500 });
        h.pump();
        h.advance_to(2 * lease - 100);
        assert_eq!((h.status("a"), h.status("b")), (AgentStatus::Lost, AgentStatus::Lost));
    }

    #[test]
    fn a_lost_agent_receives_nothing_more() {
        let mut h = harness();
        let receiver = h.join("r", "w", &["jobs"]);
        h.advance_to(2_000);
        let publisher = h.join("p", "w", &[]);
        h.advance_to(3_000);
        assert_eq!(h.status("r"), AgentStatus::Lost);

        let routed_before = h.engine.info().counters.routed;
        h.call_ok(publisher, publish("jobs", "j1"));
        assert_eq!(h.engine.info().counters.routed, routed_before, "nothing is routed to a lost agent");
        assert!(h.deliveries(receiver).is_empty());
        assert_eq!(h.agent_view("r").unwrap().queue_depth, 0);
    }

    #[test]
    fn a_lost_agent_is_forgotten_after_the_lost_retention() {
        let mut h = Harness::new(Config { lost_retention_ms: 10_000, ..Config::default() });
        let watcher = h.watch_registry("");
        h.join("a", "w", &[]);
        h.advance_to(3_000);
        assert_eq!(h.status("a"), AgentStatus::Lost);

        h.advance_to(12_999);
        assert!(h.agent_view("a").is_some(), "still listed as lost");
        h.advance_to(13_000);
        assert!(h.agent_view("a").is_none(), "forgotten");
        let kinds: Vec<_> = h.registry_events(watcher).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [RegistryEventKind::Joined, RegistryEventKind::Lost, RegistryEventKind::Left]);
        assert!(h.engine.get_state("", "a").is_err(), "its state is gone too");
    }

    #[test]
    fn the_registration_tells_the_limits_in_force() {
        let mut config = Config::default();
        config.limits.max_payload_bytes = 1000;
        config.limits.max_delta_bytes = 300;
        let mut h = Harness::new(config.clone());
        let conn = h.join("a", "w", &[]);
        let registered = h.registered(conn);
        assert_eq!(*registered.limits, config.limits);
        assert_eq!(registered.queue_capacity, config.queue_capacity);
    }

    #[test]
    fn deregistering_removes_the_agent_and_ends_its_stream_normally() {
        let mut h = harness();
        let watcher = h.watch_registry("");
        let conn = h.join("a", "w", &[]);
        h.send(conn, Request::Deregister);
        assert_eq!(h.log(conn).closed, Some(None), "closed without an error");
        assert!(h.agent_view("a").is_none());
        assert_eq!(h.registry_events(watcher).pop().unwrap().kind, RegistryEventKind::Left);
    }

    #[test]
    fn a_stream_ending_without_goodbye_keeps_the_agent_until_its_lease_runs_out() {
        let mut h = harness();
        let watcher = h.watch_registry("");
        let conn = h.join("a", "w", &[]);
        h.advance_to(1_000);
        h.disconnect(conn);
        assert_eq!(h.status("a"), AgentStatus::Active, "a broken stream is not a departure");
        h.advance_to(2_999);
        assert_eq!(h.status("a"), AgentStatus::Active);
        h.advance_to(3_000);
        assert_eq!(h.status("a"), AgentStatus::Lost, "the lease ran from the last sign of life");
        let kinds: Vec<_> = h.registry_events(watcher).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [RegistryEventKind::Joined, RegistryEventKind::Lost]);
    }

    #[test]
    fn an_agent_resumes_after_its_stream_ended_without_goodbye_with_state_and_queue_intact() {
        let mut h = harness();
        let conn = h.join("a", "w", &["jobs"]);
        let publisher = h.join("p", "w", &[]);
        assert_eq!(h.call(conn, update(json!({"step": 1}))), Reply::StateVersion(1));
        assert_eq!(h.call(conn, update(json!({"step": 2}))), Reply::StateVersion(2));
        h.advance_to(1_000);
        h.disconnect(conn);
        h.call_ok(publisher, publish("jobs", "while-away"));

        h.advance_to(2_500);
        let back = h.try_register(RegisterRequest { resume_token: h.token(conn), ..agent("a", "w", &["jobs"]) });

        assert!(matches!(h.frames(back).first(), Some(Frame::Registered(r)) if r.resumed), "Registered comes first");
        assert_eq!(h.delivered_payloads(back), ["while-away"], "messages queued while away are delivered");
        assert_eq!(h.engine.get_state("", "a").unwrap(), (2, json!({"step": 2})));
        assert_eq!(h.call(back, update(json!({"step": 3}))), Reply::StateVersion(3), "versions go on");
        // The lease restarted at the resumption.
        h.advance_heartbeating(5_000, &[publisher]);
        assert_eq!(h.status("a"), AgentStatus::Active);
        h.advance_heartbeating(5_500, &[publisher]);
        assert_eq!(h.status("a"), AgentStatus::Lost);
    }

    #[test]
    fn an_agent_resuming_after_it_was_lost_is_told_at_once_what_it_missed() {
        let mut h = harness();
        let conn = h.join("a", "w", &["jobs"]);
        let publisher = h.join("p", "w", &[]);
        h.disconnect(conn);
        h.call_ok(publisher, publish("jobs", "queued-1"));
        h.call_ok(publisher, publish("jobs", "queued-2"));
        // The lease runs out: the agent is lost, and its queue with it.
        h.advance_heartbeating(3_500, &[publisher]);
        assert_eq!(h.status("a"), AgentStatus::Lost);

        let back = h.try_register(RegisterRequest { resume_token: h.token(conn), ..agent("a", "w", &["jobs"]) });
        let registered = h.registered(back);
        assert!(registered.resumed);
        assert_eq!(registered.missed_messages, 2, "told on resuming, with nothing published since");
        assert!(h.deliveries(back).is_empty());
        // The next delivery does not count them again; its sequence number shows the gap.
        h.call_ok(publisher, publish("jobs", "after"));
        let got = h.deliveries(back);
        assert_eq!(got.iter().map(|d| (d.seq, d.missed_before)).collect::<Vec<_>>(), [(3, 0)]);
        // A fresh agent, or one that missed nothing, is told of nothing.
        assert_eq!(h.registered(publisher).missed_messages, 0);
        h.disconnect(back);
        let again = h.try_register(RegisterRequest { resume_token: h.token(back), ..agent("a", "w", &["jobs"]) });
        assert_eq!(h.registered(again).missed_messages, 0);
    }

    #[test]
    fn an_id_registered_again_after_leaving_gets_a_fresh_lease() {
        let mut h = harness();
        let first = h.join("a", "w", &[]);
        h.advance_to(1_000);
        h.send(first, Request::Deregister);
        h.advance_to(2_000);
        let second = h.join("a", "w", &[]);

        h.advance_to(4_999);
        assert_eq!(h.status("a"), AgentStatus::Active, "the first session's lease (to 3 000) is gone");
        assert!(!h.is_closed(second));
        h.advance_to(5_000);
        assert_eq!(h.status("a"), AgentStatus::Lost, "the second session's lease ran 2 000 to 5 000");
        assert!(h.is_closed(second));
    }

    #[test]
    fn a_lost_agent_comes_back_with_its_token_and_its_state() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        h.call(conn, update(json!({"k": "v"})));
        h.advance_to(3_000);
        assert_eq!(h.status("a"), AgentStatus::Lost);
        let watcher = h.watch_registry("");

        let back = h.try_register(RegisterRequest { resume_token: h.token(conn), ..agent("a", "w", &[]) });

        assert!(h.registered(back).resumed);
        assert_eq!(h.status("a"), AgentStatus::Active);
        assert_eq!(h.engine.get_state("", "a").unwrap(), (1, json!({"k": "v"})));
        let kinds: Vec<_> = h.registry_events(watcher).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [RegistryEventKind::Snapshot, RegistryEventKind::Joined]);
    }
}

// =================================================================================================
// 3. Status
// =================================================================================================

mod status {
    use super::*;

    #[test]
    fn set_status_changes_the_status_and_tells_registry_watchers_what_it_was() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        let watcher = h.watch_registry("");

        h.call_ok(conn, Request::SetStatus(AgentStatus::Busy));
        h.call_ok(conn, Request::SetStatus(AgentStatus::Paused));
        h.call_ok(conn, Request::SetStatus(AgentStatus::Paused));

        assert_eq!(h.status("a"), AgentStatus::Paused);
        let changes: Vec<_> = h
            .registry_events(watcher)
            .into_iter()
            .filter(|e| e.kind == RegistryEventKind::Status)
            .map(|e| (e.previous_status, e.agent.status))
            .collect();
        assert_eq!(
            changes,
            [(Some(AgentStatus::Active), AgentStatus::Busy), (Some(AgentStatus::Busy), AgentStatus::Paused)],
            "setting the same status again is not a change"
        );
    }

    #[test]
    fn agents_cannot_declare_themselves_lost() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        let watcher = h.watch_registry("");
        let err = h.call_err(conn, Request::SetStatus(AgentStatus::Lost));
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(h.status("a"), AgentStatus::Active);
        assert!(h.registry_events(watcher).iter().all(|e| e.kind == RegistryEventKind::Snapshot));
    }
}

// =================================================================================================
// 4. Registry
// =================================================================================================

mod registry {
    use super::*;

    fn ids(views: Vec<lockstep_core::AgentView>) -> Vec<String> {
        views.into_iter().map(|v| v.agent_id).collect()
    }

    #[test]
    fn list_agents_filters_by_role_capability_and_status() {
        let mut h = harness();
        let with_caps = |id: &str, role: &str, caps: &[&str]| RegisterRequest {
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            ..agent(id, role, &[])
        };
        let t1 = h.join_with(with_caps("t1", "trader", &["spot", "futures"]));
        h.join_with(with_caps("t2", "trader", &["spot"]));
        h.join_with(with_caps("r1", "risk", &["futures"]));
        h.call_ok(t1, Request::SetStatus(AgentStatus::Busy));
        let query = |role: Option<&str>, capability: Option<&str>, status: Option<AgentStatus>| AgentQuery {
            role: role.map(Into::into),
            capability: capability.map(Into::into),
            status,
        };
        let list = |q: AgentQuery| ids(h.engine.list_agents("", &q).unwrap());

        assert_eq!(list(query(None, None, None)), ["r1", "t1", "t2"], "sorted by id");
        assert_eq!(list(query(Some("trader"), None, None)), ["t1", "t2"]);
        assert_eq!(list(query(None, Some("futures"), None)), ["r1", "t1"]);
        assert_eq!(list(query(None, None, Some(AgentStatus::Busy))), ["t1"]);
        assert_eq!(list(query(Some("trader"), Some("spot"), Some(AgentStatus::Active))), ["t2"]);
        assert!(list(query(Some("nobody"), None, None)).is_empty());
        assert!(h.engine.list_agents("elsewhere", &AgentQuery::default()).unwrap().is_empty());
        assert_eq!(
            h.engine.list_agents("bad ns", &AgentQuery::default()).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn a_registry_watch_starts_with_a_snapshot_then_follows_every_change() {
        let mut h = harness();
        let b = h.join("b", "w", &[]);
        let a = h.join("a", "w", &[]);
        h.advance_heartbeating(1_000, &[a, b]);

        let watcher = h.watch_registry("");
        let snapshot: Vec<_> = h.registry_events(watcher).iter().map(|e| (e.kind, e.agent.agent_id.clone())).collect();
        assert_eq!(snapshot, [(RegistryEventKind::Snapshot, "a".into()), (RegistryEventKind::Snapshot, "b".into())]);

        h.join("c", "w", &[]);
        h.call_ok(a, Request::SetStatus(AgentStatus::Idle));
        h.send(b, Request::Deregister);
        h.advance_heartbeating(4_000, &[a]); // c never heartbeats: lost at 4 000

        let events: Vec<_> = h.registry_events(watcher)[2..]
            .iter()
            .map(|e| (e.kind, e.agent.agent_id.clone(), e.previous_status))
            .collect();
        assert_eq!(
            events,
            [
                (RegistryEventKind::Joined, "c".into(), None),
                (RegistryEventKind::Status, "a".into(), Some(AgentStatus::Active)),
                (RegistryEventKind::Left, "b".into(), None),
                (RegistryEventKind::Lost, "c".into(), Some(AgentStatus::Active)),
            ]
        );
    }

    #[test]
    fn registry_watches_are_per_namespace_and_end_with_their_stream() {
        let mut h = harness();
        let watcher = h.watch_registry("team-a");
        h.join("x", "w", &[]);
        assert!(h.registry_events(watcher).is_empty(), "the default namespace is not team-a");
        let y = h.join_with(RegisterRequest { namespace: "team-a".into(), ..agent("y", "w", &[]) });
        assert_eq!(h.registry_events(watcher).len(), 1);

        h.disconnect(watcher);
        h.call_ok(y, Request::SetStatus(AgentStatus::Busy));
        assert_eq!(h.registry_events(watcher).len(), 1, "nothing after the watch ended");

        let bad = h.watch_registry("bad namespace");
        assert_eq!(h.close_error(bad).code(), ErrorCode::InvalidArgument);
    }
}

// =================================================================================================
// 5. Routing
// =================================================================================================

mod routing {
    use super::*;

    #[test]
    fn messages_go_only_to_agents_whose_patterns_match() {
        let mut h = harness();
        let publisher = h.join("pub", "feed", &[]);
        let exact = h.join("exact", "w", &["market.btc.trades"]);
        let star = h.join("star", "w", &["market.*.trades"]);
        let rest = h.join("rest", "w", &["market.>"]);
        let all = h.join("all", "w", &["all"]);
        let other = h.join("other", "w", &["risk.>", "market.eth"]);
        let none = h.join("none", "w", &[]);

        for topic in ["market.btc.trades", "market.eth.trades", "market.btc", "market", "risk.limits", "market.eth"] {
            h.call_ok(publisher, publish(topic, topic));
        }

        assert_eq!(h.delivered_payloads(exact), ["market.btc.trades"]);
        assert_eq!(h.delivered_payloads(star), ["market.btc.trades", "market.eth.trades"]);
        assert_eq!(h.delivered_payloads(rest), ["market.btc.trades", "market.eth.trades", "market.btc", "market.eth"]);
        assert_eq!(
            h.delivered_payloads(all),
            ["market.btc.trades", "market.eth.trades", "market.btc", "market", "risk.limits", "market.eth"]
        );
        assert_eq!(h.delivered_payloads(other), ["risk.limits", "market.eth"], "any of an agent's patterns");
        assert!(h.deliveries(none).is_empty());
        assert!(h.deliveries(publisher).is_empty(), "a publisher not interested gets nothing back");

        let d = &h.deliveries(exact)[0];
        assert_eq!(&*d.message.topic, "market.btc.trades");
        assert_eq!(&*d.message.publisher, "pub");
        assert_eq!(&*d.message.content_type, "text/plain");
    }

    #[test]
    fn interests_are_per_namespace() {
        let mut h = harness();
        let publisher = h.join("pub", "feed", &[]);
        let here = h.join("here", "w", &["t"]);
        let there = h.join_with(RegisterRequest { namespace: "other".into(), ..agent("there", "w", &["t"]) });
        h.call_ok(publisher, publish("t", "m"));
        assert_eq!(h.delivered_payloads(here), ["m"]);
        assert!(h.deliveries(there).is_empty());
    }

    #[test]
    fn each_publishers_order_is_kept_and_seq_numbers_are_consecutive() {
        let mut h = harness();
        let p1 = h.join("p1", "feed", &[]);
        let p2 = h.join("p2", "feed", &[]);
        let receiver = h.join("r", "w", &["t.>"]);
        for i in 0..50 {
            h.call_ok(p1, publish("t.a", &format!("p1-{i}")));
            if i % 3 == 0 {
                h.call_ok(p2, publish("t.b", &format!("p2-{i}")));
            }
        }

        let got = h.deliveries(receiver);
        let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, (1..=got.len() as u64).collect::<Vec<_>>(), "seq starts at 1 and has no gap");
        assert!(got.iter().all(|d| d.missed_before == 0));
        for publisher in ["p1", "p2"] {
            let mine: Vec<String> =
                got.iter().filter(|d| &*d.message.publisher == publisher).map(harness::payload_text).collect();
            let expected: Vec<String> =
                (0..50).filter(|i| publisher == "p1" || i % 3 == 0).map(|i| format!("{publisher}-{i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_reports_every_gap() {
        let mut h = Harness::new(Config { queue_capacity: 4, ..Config::default() });
        let publisher = h.join("pub", "feed", &[]);
        let slow = h.join("slow", "w", &["t"]);
        let fast = h.join("fast", "w", &["t"]);
        h.pause(slow);
        for i in 1..=10 {
            h.call_ok(publisher, publish("t", &i.to_string()));
        }
        assert_eq!(h.agent_view("slow").unwrap().queue_depth, 4);
        assert_eq!(h.agent_view("slow").unwrap().dropped, 6);
        h.unpause(slow);

        let got = h.deliveries(slow);
        assert_eq!(h.delivered_payloads(slow), ["7", "8", "9", "10"], "exactly the newest 4");
        assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), [7, 8, 9, 10]);
        assert_eq!(got[0].missed_before, 6, "the first after the gap says how many were lost");
        assert_eq!(h.deliveries(fast).len(), 10, "a fast receiver loses nothing");
        assert!(!h.is_closed(slow), "drop-oldest never disconnects");
        assert_eq!(h.engine.info().counters.dropped, 6);
        assert_eq!(h.engine.info().counters.gap_notices, 1, "one frame told the receiver of its gap");
    }

    #[test]
    fn gaps_and_seq_numbers_account_for_every_dropped_message() {
        let mut h = Harness::new(Config { queue_capacity: 3, ..Config::default() });
        let publisher = h.join("pub", "feed", &[]);
        let slow = h.join("slow", "w", &["t"]);
        h.pause(slow);
        let total = 100;
        for i in 0..total {
            h.call_ok(publisher, publish("t", &i.to_string()));
            if i % 7 == 3 || i % 11 == 0 {
                h.unpause(slow);
                h.pause(slow);
            }
        }
        h.unpause(slow);

        let got = h.deliveries(slow);
        let missed: u64 = got.iter().map(|d| d.missed_before).sum();
        assert_eq!(got.len() as u64 + missed, total, "received + reported missing = published");
        assert_eq!(missed, h.agent_view("slow").unwrap().dropped);
        let mut expected_seq = 1;
        for d in &got {
            assert_eq!(d.seq, expected_seq + d.missed_before, "the seq gap equals missed_before");
            assert_eq!(harness::payload_text(d), (d.seq - 1).to_string(), "seq n is the n-th message");
            expected_seq = d.seq + 1;
        }
        assert_eq!(got.last().unwrap().seq, total, "the newest message always arrives");
    }

    #[test]
    fn the_disconnect_policy_closes_a_slow_consumer() {
        let config = Config { queue_capacity: 2, overflow_policy: OverflowPolicy::Disconnect, ..Config::default() };
        let mut h = Harness::new(config);
        let publisher = h.join("pub", "feed", &[]);
        let slow = h.join("slow", "w", &["t"]);
        let fast = h.join("fast", "w", &["t"]);
        h.pause(slow);
        h.call_ok(publisher, publish("t", "1"));
        h.call_ok(publisher, publish("t", "2"));
        assert!(!h.is_closed(slow), "a full queue is fine");
        h.call_ok(publisher, publish("t", "3"));

        let err = h.close_error(slow);
        assert!(matches!(&err, CoreError::SlowConsumer { agent, capacity: 2 } if agent == "slow"), "{err:?}");
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert_eq!(h.delivered_payloads(fast), ["1", "2", "3"], "other receivers are unaffected");
        assert!(!h.is_closed(publisher));
        // The server's log hears of it (see notices.rs).
        let slow_notice = Notice::SlowConsumer { namespace: "default".into(), agent: "slow".into(), capacity: 2 };
        assert!(h.engine.take_notices().kept().contains(&slow_notice));
    }

    #[test]
    fn a_slow_consumer_that_resumes_is_told_of_everything_it_missed() {
        let config = Config { queue_capacity: 2, overflow_policy: OverflowPolicy::Disconnect, ..Config::default() };
        let mut h = Harness::new(config);
        let publisher = h.join("pub", "feed", &[]);
        let slow = h.join("slow", "w", &["t"]);
        h.pause(slow);
        for i in 1..=3 {
            h.call_ok(publisher, publish("t", &i.to_string()));
        }
        assert!(h.is_closed(slow));
        // Published while the agent has no connection: queued up to capacity, the rest refused.
        for i in 4..=7 {
            h.call_ok(publisher, publish("t", &i.to_string()));
        }

        let back = h.try_register(RegisterRequest { resume_token: h.token(slow), ..agent("slow", "w", &["t"]) });
        h.call_ok(publisher, publish("t", "8"));

        let got = h.deliveries(back);
        let received: Vec<String> = got.iter().map(harness::payload_text).collect();
        assert_eq!(received, ["4", "5", "8"]);
        let missed: u64 = got.iter().map(|d| d.missed_before).sum();
        assert_eq!(got.len() as u64 + missed, 8, "received + reported missing = published");
        let mut expected_seq = 1;
        for d in &got {
            assert_eq!(d.seq, expected_seq + d.missed_before, "{got:?}");
            expected_seq = d.seq + 1;
        }
        assert_eq!(h.agent_view("slow").unwrap().dropped, missed);
    }

    #[test]
    fn an_agent_that_stops_reading_its_replies_is_disconnected_at_the_control_backlog() {
        let mut h = with_limits(Limits { max_control_backlog: 3, ..Limits::default() });
        let conn = h.join("a", "w", &[]);
        h.pause(conn);
        for _ in 0..3 {
            h.send(conn, Request::Heartbeat);
        }
        assert!(!h.is_closed(conn), "three unread replies are within the limit");
        h.send(conn, Request::Heartbeat);
        let err = h.close_error(conn);
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert!(err.to_string().contains("replies queued"), "{err}");
    }

    #[test]
    fn a_registry_watcher_that_stops_reading_is_disconnected_at_its_backlog() {
        let mut h = with_limits(Limits { max_registry_backlog: 2, ..Limits::default() });
        let watcher = h.watch_registry("");
        h.pause(watcher);
        h.join("a", "w", &[]);
        h.join("b", "w", &[]);
        assert!(!h.is_closed(watcher));
        h.join("c", "w", &[]);
        assert_eq!(h.close_error(watcher).code(), ErrorCode::ResourceExhausted);
        h.unpause(watcher);
        assert!(h.frames(watcher).is_empty(), "nothing is sent on a closed watch");
        h.join("d", "w", &[]);
        assert_eq!(h.agents().len(), 4, "agents are unaffected by a slow watcher");
    }

    #[test]
    fn invalid_topics_and_oversized_payloads_are_refused_with_the_request_id() {
        let mut h = with_limits(Limits { max_payload_bytes: 8, ..Limits::default() });
        let publisher = h.join("pub", "feed", &[]);
        let receiver = h.join("r", "w", &["all"]);
        let bad = [
            publish("", "x"),
            publish("a..b", "x"),
            publish("a.*", "x"),
            publish("a.>", "x"),
            publish("has space", "x"),
            publish(&"t".repeat(257), "x"),
            publish("ok", "123456789"),
        ];
        for request in bad {
            let id = h.send(publisher, request.clone());
            match h.reply(publisher, id) {
                Some(Reply::Error(e)) => {
                    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{request:?}: {e}")
                }
                other => panic!("{request:?} should be refused, got {other:?}"),
            }
        }
        assert!(h.deliveries(receiver).is_empty(), "nothing refused was routed");
        assert!(!h.is_closed(publisher), "a refused request does not end the session");
        h.call_ok(publisher, publish("ok", "12345678"));
        assert_eq!(h.delivered_payloads(receiver), ["12345678"], "exactly the limit is fine");
    }

    #[test]
    fn request_id_zero_means_no_reply_unless_the_request_fails() {
        let mut h = harness();
        let publisher = h.join("pub", "feed", &[]);
        let receiver = h.join("r", "w", &["t"]);
        h.take_frames(publisher);

        h.send_with_id(publisher, 0, publish("t", "fine"));
        assert!(h.frames(publisher).is_empty(), "success, and no reply wanted");
        assert_eq!(h.delivered_payloads(receiver), ["fine"]);

        h.send_with_id(publisher, 0, publish("t..", "bad"));
        let replies = h.replies(publisher, 0);
        assert_eq!(replies.len(), 1);
        assert!(matches!(&replies[0], Reply::Error(e) if e.code() == ErrorCode::InvalidArgument));
    }
}

// =================================================================================================
// 6. State
// =================================================================================================

mod state {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn updates_apply_merge_patches_and_number_versions_from_one() {
        let mut h = harness();
        let conn = h.join("a", "w", &[]);
        assert_eq!(h.engine.get_state("", "a").unwrap(), (0, json!({})), "a new agent's state is {{}} at version 0");

        assert_eq!(h.call(conn, update(json!({"pos": {"x": 1, "y": 2}, "mode": "scan"}))), Reply::StateVersion(1));
        assert_eq!(h.call(conn, update(json!({"pos": {"y": null, "z": 3}}))), Reply::StateVersion(2));
        assert_eq!(h.call(conn, update(json!({"mode": null, "tags": ["a", "b"]}))), Reply::StateVersion(3));

        assert_eq!(h.engine.get_state("", "a").unwrap(), (3, json!({"pos": {"x": 1, "z": 3}, "tags": ["a", "b"]})));
        assert_eq!(h.agent_view("a").unwrap().state_version, 3);
        assert_eq!(h.engine.get_state("", "nobody").unwrap_err().code(), ErrorCode::NotFound);
    }

    #[test]
    fn deltas_that_are_not_json_objects_are_refused() {
        let mut h = with_limits(Limits { max_delta_bytes: 64, max_state_bytes: 100, ..Limits::default() });
        let conn = h.join("a", "w", &[]);
        h.call(conn, update(json!({"k": 1})));
        let refused = [
            "not json".to_owned(),
            "{\"unterminated\": ".to_owned(),
            "[1, 2]".to_owned(),
            "42".to_owned(),
            "null".to_owned(),
            "\"text\"".to_owned(),
            format!("{{\"big\": \"{}\"}}", "x".repeat(64)),
        ];
        for delta in refused {
            let err = h.call_err(conn, Request::UpdateState { delta_json: delta.clone() });
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{delta}: {err}");
        }
        // Each delta is small, but together they would outgrow the state limit.
        h.call(conn, update(json!({"a": "x".repeat(40)})));
        let err = h.call_err(conn, update(json!({"b": "x".repeat(40)})));
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            h.engine.get_state("", "a").unwrap(),
            (2, json!({"k": 1, "a": "x".repeat(40)})),
            "nothing refused applied"
        );
    }

    #[test]
    fn watches_by_agent_by_role_and_of_all_receive_changes() {
        let mut h = harness();
        let scanner = h.join("scanner", "scan", &[]);
        let trader = h.join("trader", "trade", &[]);
        h.call(scanner, update(json!({"found": 1})));
        let by_agent = h.join("by-agent", "obs", &[]);
        let by_role = h.join("by-role", "obs", &[]);
        let of_all = h.join("of-all", "obs", &[]);
        h.call_ok(by_agent, Request::Watch(WatchTarget::Agent("scanner".into())));
        h.call_ok(by_role, Request::Watch(WatchTarget::Role("trade".into())));
        h.call_ok(of_all, Request::Watch(WatchTarget::All));

        let first = h.state_changes(by_agent);
        assert_eq!(first.len(), 1, "a new watch starts with a snapshot of what it covers");
        assert_eq!((first[0].base_version, first[0].version, &first[0].delta), (0, 1, &json!({"found": 1})));

        h.call(scanner, update(json!({"found": 2})));
        h.call(trader, update(json!({"cash": 10})));

        let mut views: Vec<WatcherView> = Vec::new();
        for conn in [by_agent, by_role, of_all] {
            let mut view = WatcherView::default();
            view.apply_all(&h.state_changes(conn));
            views.push(view);
        }
        assert_eq!(views[0].of("scanner"), Some((2, json!({"found": 2}))));
        assert_eq!(views[0].of("trader"), None, "not covered by a watch of scanner");
        assert_eq!(views[1].of("trader"), Some((1, json!({"cash": 10}))));
        assert_eq!(views[1].of("scanner"), None, "not of role trade");
        assert_eq!(views[2].of("scanner"), Some((2, json!({"found": 2}))));
        assert_eq!(views[2].of("trader"), Some((1, json!({"cash": 10}))));
        assert!(views[2].of("of-all").is_some(), "all includes observers, and the watcher itself");

        let by_agent_changes = h.state_changes(by_agent);
        let second = &by_agent_changes[1];
        assert_eq!((second.base_version, second.version, &second.delta), (1, 2, &json!({"found": 2})), "a plain delta");
    }

    #[test]
    fn a_watch_covers_agents_that_join_later_and_reports_those_that_leave() {
        let mut h = harness();
        let watcher = h.join("w", "obs", &[]);
        h.call_ok(watcher, Request::Watch(WatchTarget::Role("worker".into())));
        assert!(h.state_changes(watcher).is_empty());

        let worker = h.join("k", "worker", &[]);
        h.call(worker, update(json!({"n": 1})));
        h.send(worker, Request::Deregister);

        let changes = h.state_changes(watcher);
        let summary: Vec<_> = changes.iter().map(|c| (c.base_version, c.version, c.removed)).collect();
        // (base_version, version, removed): its snapshot on joining, its update, its departure.
        assert_eq!(summary, [(0, 0, false), (0, 1, false), (0, 1, true)]);
        let mut view = WatcherView::default();
        view.apply_all(&changes);
        assert_eq!(view.of("k"), None, "the watcher forgets an agent that left");
    }

    #[test]
    fn unwatching_stops_changes_and_unknown_watches_are_refused() {
        let mut h = harness();
        let owner = h.join("o", "w", &[]);
        let watcher = h.join("w", "obs", &[]);
        h.call_ok(watcher, Request::Watch(WatchTarget::Agent("o".into())));
        h.call(owner, update(json!({"a": 1})));
        h.call_ok(watcher, Request::Unwatch(WatchTarget::Agent("o".into())));
        let before = h.state_changes(watcher).len();
        h.call(owner, update(json!({"a": 2})));
        assert_eq!(h.state_changes(watcher).len(), before);
        let err = h.call_err(watcher, Request::Unwatch(WatchTarget::All));
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let err = h.call_err(watcher, Request::Watch(WatchTarget::Agent("bad id".into())));
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn the_watch_limit_is_enforced() {
        let mut h = with_limits(Limits { max_watches: 2, ..Limits::default() });
        let watcher = h.join("w", "obs", &[]);
        h.call_ok(watcher, Request::Watch(WatchTarget::Agent("a".into())));
        h.call_ok(watcher, Request::Watch(WatchTarget::Agent("b".into())));
        h.call_ok(watcher, Request::Watch(WatchTarget::Agent("b".into())));
        let err = h.call_err(watcher, Request::Watch(WatchTarget::Agent("c".into())));
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
    }

    #[test]
    fn a_watcher_that_does_not_read_gets_changes_coalesced_and_converges() {
        let mut h = harness();
        let owner = h.join("o", "w", &[]);
        let watcher = h.join("w", "obs", &[]);
        h.call_ok(watcher, Request::Watch(WatchTarget::Agent("o".into())));
        h.call(owner, update(json!({"counter": 0})));
        let mut view = WatcherView::default();
        view.apply_all(&h.state_changes(watcher));
        assert_eq!(view.of("o"), Some((1, json!({"counter": 0}))));
        let seen = h.state_changes(watcher).len();

        h.pause(watcher);
        for i in 0..200 {
            let delta = match i % 4 {
                0 => json!({"counter": i, "nested": {"last": i}}),
                1 => json!({"nested": {"odd": i, "gone": null}}),
                2 => json!({"flag": i % 3 == 0, "nested": {"odd": null}}),
                _ => json!({"scratch": {"v": i}}),
            };
            h.call(owner, update(delta));
        }
        h.unpause(watcher);

        let new_changes = &h.state_changes(watcher)[seen..];
        assert_eq!(new_changes.len(), 1, "200 updates coalesce into one change: {new_changes:?}");
        assert_eq!((new_changes[0].base_version, new_changes[0].version), (1, 201), "one delta, from 1 to 201");
        view.apply_all(new_changes);
        assert_eq!(view.of("o"), Some(h.engine.get_state("", "o").unwrap()));
    }

    #[test]
    fn a_coalesced_change_that_a_patch_cannot_express_becomes_a_snapshot() {
        let mut h = harness();
        let owner = h.join("o", "w", &[]);
        let watcher = h.join("w", "obs", &[]);
        h.call(owner, update(json!({"keep": true})));
        h.call_ok(watcher, Request::Watch(WatchTarget::Agent("o".into())));
        let mut view = WatcherView::default();
        view.apply_all(&h.state_changes(watcher));
        let seen = h.state_changes(watcher).len();

        h.pause(watcher);
        h.call(owner, update(json!({"n": 5})));
        h.call(owner, update(json!({"n": {"k": 1}})));
        h.unpause(watcher);

        let new_changes = &h.state_changes(watcher)[seen..];
        assert_eq!(new_changes.len(), 1);
        assert_eq!(new_changes[0].base_version, 0, "a snapshot");
        assert_eq!(new_changes[0].delta, json!({"keep": true, "n": {"k": 1}}));
        view.apply_all(new_changes);
        assert_eq!(view.of("o"), Some((3, json!({"keep": true, "n": {"k": 1}}))));
    }

    #[test]
    fn pending_state_changes_stay_bounded_by_the_number_of_watched_agents() {
        // One slow watcher, one busy owner: however many updates, one pending entry, and once it
        // is sent nothing remains.
        let mut outbox = Outbox::new(8, 1024, OverflowPolicy::DropOldest);
        let owner: Arc<str> = "o".into();
        for version in 1..=1000 {
            outbox.push_state_delta(&owner, version, &json!({"v": version}));
        }
        let frame = outbox.next_frame(1, usize::MAX, |_| None);
        let Some(Frame::StateChanges(changes)) = frame else { panic!("expected state changes, got {frame:?}") };
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].base_version, changes[0].version), (0, 1000));
        assert!(!outbox.has_frames(), "nothing is left after the one coalesced change");
        assert_eq!(outbox.next_frame(1, usize::MAX, |_| None), None);
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![Just(Value::Null), any::<i8>().prop_map(|i| json!(i)), "[a-c]".prop_map(Value::String)]
    }

    /// Object deltas over a small key space (so keys collide), nested, with nulls (deletions).
    fn delta() -> impl Strategy<Value = Value> {
        let value = leaf().prop_recursive(3, 16, 3, |inner| {
            prop::collection::btree_map("[a-d]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect()))
        });
        prop::collection::btree_map("[a-d]", value, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn target() -> impl Strategy<Value = WatchTarget> {
        prop_oneof![
            Just(WatchTarget::Agent("owner".into())),
            Just(WatchTarget::Role("writer".into())),
            Just(WatchTarget::All)
        ]
    }

    proptest! {
        /// Whatever the owner writes and whenever the watcher happens to read, the watcher's view,
        /// built only from what it received, ends equal to the owner's state, and every delta it
        /// receives applies to the version it holds.
        #[test]
        fn a_watchers_view_always_converges_to_the_owners_state(
            steps in prop::collection::vec((delta(), any::<bool>()), 1..40),
            target in target(),
            watch_first in any::<bool>(),
        ) {
            let mut h = harness();
            let owner = h.join("owner", "writer", &[]);
            let watcher = h.join("watcher", "reader", &[]);
            let mut model = json!({});
            if watch_first {
                h.call_ok(watcher, Request::Watch(target.clone()));
            }
            h.pause(watcher);
            for (i, (delta, drain)) in steps.iter().enumerate() {
                if !watch_first && i == steps.len() / 2 {
                    h.send_with_id(watcher, 0, Request::Watch(target.clone()));
                }
                prop_assert_eq!(h.call(owner, update(delta.clone())), Reply::StateVersion(i as u64 + 1));
                lockstep_core::state::apply(&mut model, delta);
                if *drain {
                    h.unpause(watcher);
                    h.pause(watcher);
                }
            }
            h.unpause(watcher);

            let (version, state) = h.engine.get_state("", "owner").unwrap();
            prop_assert_eq!(version, steps.len() as u64);
            prop_assert_eq!(&state, &model);
            let mut view = WatcherView::default();
            view.apply_all(&h.state_changes(watcher));
            prop_assert_eq!(view.of("owner"), Some((version, state)));
        }
    }
}

// =================================================================================================
// 7. Sync points
// =================================================================================================

mod sync {
    use super::*;

    /// A harness whose leases outlast every sync timeout used below unless a test says otherwise.
    fn long_leases() -> Harness {
        Harness::new(Config { heartbeat_interval_ms: 60_000, ..Config::default() })
    }

    #[test]
    fn waiters_that_ask_for_a_summary_get_their_place_and_the_shared_digest() {
        let mut h = long_leases();
        let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "w", &[])).collect();
        let arrive = |h: &mut Harness, conn: ConnId, summary: bool| {
            let sync = Request::Sync {
                sync_id: "round".into(),
                participants: Participants::Count(3),
                timeout_ms: 5_000,
                payload: Bytes::new(),
                summary,
                quorum: None,
            };
            h.send(conn, sync)
        };
        let ra = arrive(&mut h, conns[0], true);
        let rb = arrive(&mut h, conns[1], false);
        let rc = arrive(&mut h, conns[2], true);
        let full = sync_outcome(&h.reply(conns[1], rb).expect("released"));
        assert!(matches!(h.reply(conns[1], rb), Some(Reply::Sync(_))), "b asked for the whole outcome");
        for (conn, request, position) in [(conns[0], ra, 0), (conns[2], rc, 2)] {
            match h.reply(conn, request) {
                Some(Reply::SyncSummary { outcome, position: p }) => {
                    assert_eq!(p, position);
                    assert!(Arc::ptr_eq(&outcome, &full), "one outcome, answered two ways");
                }
                other => panic!("expected a summary, got {other:?}"),
            }
        }
        assert_eq!(full.count(), 3);
        let order: Vec<(&str, &[u8])> = full.arrival_order.iter().map(|a| (&**a, &b""[..])).collect();
        assert_eq!(full.digest, SyncOutcome::digest_of(order.into_iter()));
    }

    #[test]
    fn an_explicit_set_releases_everyone_at_once_with_the_same_outcome() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        let c = h.join("c", "w", &[]);
        let set = || agents(&["a", "b", "c"]);

        let ra = h.arrive(a, "round-1", set(), 5_000, "from-a");
        h.advance_to(10);
        let rc = h.arrive(c, "round-1", set(), 5_000, "from-c");
        assert_eq!(h.reply(a, ra), None, "nobody is released before the last arrives");
        assert_eq!(h.reply(c, rc), None);
        let status = h.engine.sync_status("", "round-1").unwrap();
        assert_eq!(status.state, SyncState::Waiting);
        assert_eq!(status.arrived, ["a", "c"]);
        assert_eq!(status.missing, ["b"]);
        assert_eq!((status.created_at, status.deadline), (0, 5_000), "created by the first arrival");

        h.advance_to(20);
        let rb = h.arrive(b, "round-1", agents(&["c", "b", "a"]), 5_000, "from-b");

        let outcomes = [
            sync_outcome(&h.reply(a, ra).unwrap()),
            sync_outcome(&h.reply(b, rb).unwrap()),
            sync_outcome(&h.reply(c, rc).unwrap()),
        ];
        for outcome in &outcomes {
            assert_eq!(outcome, &outcomes[0], "identical outcome for every waiter");
        }
        let outcome = &outcomes[0];
        assert_eq!(outcome.sync_id, "round-1");
        let order: Vec<&str> = outcome.arrival_order.iter().map(|a| &**a).collect();
        assert_eq!(order, ["a", "c", "b"]);
        assert_eq!(outcome.payloads, [Bytes::from("from-a"), Bytes::from("from-c"), Bytes::from("from-b")]);
        assert!(!outcome.forced);
        assert_eq!(h.engine.sync_status("", "round-1").unwrap().state, SyncState::Completed);
        assert_eq!(h.engine.info().counters.syncs_completed, 1);
    }

    #[test]
    fn a_count_point_releases_when_that_many_distinct_agents_arrived() {
        let mut h = long_leases();
        let conns: Vec<_> = ["a", "b", "c", "d"].iter().map(|id| h.join(id, "w", &[])).collect();
        let r0 = h.arrive(conns[0], "any3", Participants::Count(3), 0, "");
        let again = h.arrive(conns[0], "any3", Participants::Count(3), 0, "");
        assert_eq!(h.engine.sync_status("", "any3").unwrap().arrived, ["a"], "arriving twice counts once");
        let r1 = h.arrive(conns[1], "any3", Participants::Count(3), 0, "");
        assert_eq!(h.reply(conns[1], r1), None);
        let r2 = h.arrive(conns[2], "any3", Participants::Count(3), 0, "");

        for (conn, id) in [(conns[1], r1), (conns[2], r2)] {
            assert_eq!(sync_outcome(&h.reply(conn, id).unwrap()).arrival_order.len(), 3);
        }
        assert_eq!(h.reply(conns[0], r0), None, "a repeated arrival re-attaches the waiter to its new request");
        assert!(h.reply(conns[0], again).is_some());

        let late = h.arrive(conns[3], "any3", Participants::Count(3), 0, "");
        let Some(Reply::Error(err)) = h.reply(conns[3], late) else { panic!("a late arrival is refused") };
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert_eq!(h.engine.sync_status("", "any3").unwrap().state, SyncState::Completed);
    }

    #[test]
    fn a_role_point_needs_every_live_agent_of_the_role_at_its_creation() {
        let mut h = long_leases();
        let w1 = h.join("w1", "worker", &[]);
        let w2 = h.join("w2", "worker", &[]);
        let boss = h.join("boss", "lead", &[]);
        let r1 = h.arrive(w1, "shift", Participants::Role("worker".into()), 0, "");
        let w3 = h.join("w3", "worker", &[]); // joins after the point was created: not required
        assert_eq!(h.engine.sync_status("", "shift").unwrap().required, ["w1", "w2"]);

        let refused = h.arrive(boss, "shift", Participants::Role("worker".into()), 0, "");
        let Some(Reply::Error(err)) = h.reply(boss, refused) else { panic!("not of the role") };
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        let late = h.arrive(w3, "shift", Participants::Role("worker".into()), 0, "");
        assert!(matches!(h.reply(w3, late), Some(Reply::Error(e)) if e.code() == ErrorCode::FailedPrecondition));

        let r2 = h.arrive(w2, "shift", Participants::Role("worker".into()), 0, "");
        assert_eq!(sync_outcome(&h.reply(w1, r1).unwrap()), sync_outcome(&h.reply(w2, r2).unwrap()));
    }

    #[test]
    fn a_role_quorum_point_releases_at_k_and_answers_a_late_worker_at_once() {
        let mut h = long_leases();
        let workers: Vec<ConnId> = ["w1", "w2", "w3"].iter().map(|id| h.join(id, "worker", &[])).collect();
        let role = || Participants::Role("worker".into());
        let too_many = h.arrive_quorum(workers[0], "shift", role(), Some(4), 0, "");
        let Some(Reply::Error(err)) = h.reply(workers[0], too_many) else { panic!("4 of 3 workers is refused") };
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(h.engine.sync_status("", "shift").is_err(), "a refused definition leaves no point behind");

        let r1 = h.arrive_quorum(workers[0], "shift", role(), Some(2), 0, "one");
        assert_eq!(h.reply(workers[0], r1), None);
        let r2 = h.arrive_quorum(workers[1], "shift", role(), Some(2), 0, "two");
        let outcome = sync_outcome(&h.reply(workers[1], r2).unwrap());
        assert_eq!(sync_outcome(&h.reply(workers[0], r1).unwrap()), outcome);
        assert_eq!(outcome.late, vec![Arc::<str>::from("w3")]);
        let status = h.engine.sync_status("", "shift").unwrap();
        assert_eq!((status.state, status.quorum, status.missing), (SyncState::Completed, Some(2), vec!["w3".into()]));

        let r3 = h.arrive_quorum(workers[2], "shift", role(), Some(2), 0, "three");
        assert_eq!(
            sync_outcome(&h.reply(workers[2], r3).unwrap()),
            outcome,
            "the late worker gets the outcome at once"
        );
    }

    #[test]
    fn a_quorum_point_fails_once_too_few_participants_are_left_to_reach_it() {
        let mut h = harness();
        let lease = h.config().lease_ms();
        let conns: Vec<ConnId> = ["a", "b", "c", "d"].iter().map(|id| h.join(id, "w", &[])).collect();
        let ra = h.arrive_quorum(conns[0], "s", agents(&["a", "b", "c", "d"]), Some(3), 60_000, "");
        // b goes silent: a, c and d can still make 3.
        h.advance_heartbeating(lease, &[conns[0], conns[2], conns[3]]);
        assert_eq!(h.status("b"), AgentStatus::Lost);
        assert_eq!(h.reply(conns[0], ra), None, "the point waits: three can still arrive");
        // Then c goes silent too: only a and d are left.
        let t = h.now + lease;
        h.advance_heartbeating(t, &[conns[0], conns[3]]);
        let Some(Reply::Error(err)) = h.reply(conns[0], ra) else { panic!("the point fails") };
        assert_eq!(err.code(), ErrorCode::Aborted);
        assert_eq!(err.missing_agents(), ["b", "c"]);
    }

    #[test]
    fn on_timeout_every_waiter_gets_deadline_exceeded_naming_who_never_came() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        let ra = h.arrive(a, "s", agents(&["a", "b", "c", "d"]), 1_000, "");
        let rb = h.arrive(b, "s", agents(&["a", "b", "c", "d"]), 1_000, "");

        let deadline = h.engine.next_deadline().unwrap();
        assert_eq!(deadline, 1_000, "the sync deadline is the engine's next deadline");
        h.engine.handle_timeout(deadline - 1);
        h.pump();
        assert_eq!(h.reply(a, ra), None, "not before the deadline");
        h.advance_to(deadline);

        for (conn, id) in [(a, ra), (b, rb)] {
            let Some(Reply::Error(err)) = h.reply(conn, id) else { panic!("expected a timeout") };
            assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
            assert_eq!(err.missing_agents(), ["c", "d"]);
            assert_eq!(err.sync_id(), Some("s"));
            assert!(err.to_string().contains("c, d"), "{err}");
        }
        let status = h.engine.sync_status("", "s").unwrap();
        assert_eq!((status.state, status.finished_at), (SyncState::TimedOut, Some(1_000)));
        assert_eq!(h.engine.info().counters.syncs_failed, 1);
    }

    #[test]
    fn a_point_with_no_timeout_uses_the_configured_default() {
        let mut h =
            Harness::new(Config { heartbeat_interval_ms: 60_000, default_sync_timeout_ms: 7_000, ..Config::default() });
        let a = h.join("a", "w", &[]);
        h.arrive(a, "s", Participants::Count(2), 0, "");
        assert_eq!(h.engine.sync_status("", "s").unwrap().deadline, 7_000);
        let err = h.call_err(
            a,
            Request::Sync {
                sync_id: "t".into(),
                participants: Participants::Count(2),
                timeout_ms: u64::MAX,
                payload: Bytes::new(),
                summary: false,
                quorum: None,
            },
        );
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "longer than max_sync_timeout_ms");
    }

    #[test]
    fn a_required_participant_that_loses_its_lease_fails_the_point_at_once() {
        let mut h = harness(); // leases of 3 000 ms
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        h.join("c", "w", &[]); // never heartbeats
        let ra = h.arrive(a, "s", agents(&["a", "b", "c"]), 60_000, "");
        let rb = h.arrive(b, "s", agents(&["a", "b", "c"]), 60_000, "");

        h.advance_heartbeating(2_999, &[a, b]);
        assert_eq!(h.reply(a, ra), None);
        h.advance_heartbeating(3_000, &[a, b]);

        assert_eq!(h.status("c"), AgentStatus::Lost);
        for (conn, id) in [(a, ra), (b, rb)] {
            let Some(Reply::Error(err)) = h.reply(conn, id) else { panic!("expected the point to fail at 3 000") };
            assert_eq!(err.code(), ErrorCode::Aborted);
            assert_eq!(err.missing_agents(), ["c"]);
            assert!(err.to_string().contains("'c' lost its lease"), "{err}");
        }
        let status = h.engine.sync_status("", "s").unwrap();
        assert_eq!(
            (status.state, status.finished_at),
            (SyncState::Failed, Some(3_000)),
            "long before the 60 s timeout"
        );
    }

    #[test]
    fn a_required_participant_that_leaves_fails_the_point() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        let ra = h.arrive(a, "s", agents(&["a", "b"]), 0, "");
        h.send(b, Request::Deregister);
        let Some(Reply::Error(err)) = h.reply(a, ra) else { panic!("expected the point to fail") };
        assert_eq!(err.code(), ErrorCode::Aborted);
        assert_eq!(err.missing_agents(), ["b"]);
    }

    #[test]
    fn a_waiter_that_reconnects_and_arrives_again_is_released_on_its_new_connection() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        let first = h.arrive(a, "s", agents(&["a", "b"]), 0, "payload-1");
        h.disconnect(a);
        let a2 = h.try_register(RegisterRequest { resume_token: h.token(a), ..agent("a", "w", &[]) });
        let again = h.arrive(a2, "s", agents(&["a", "b"]), 0, "payload-2");
        let rb = h.arrive(b, "s", agents(&["a", "b"]), 0, "");

        let outcome = sync_outcome(&h.reply(a2, again).expect("released on the new connection"));
        assert_eq!(outcome, sync_outcome(&h.reply(b, rb).unwrap()));
        assert_eq!(h.reply(a2, first), None, "the waiter was re-attached to the repeated request");
        assert_eq!(outcome.payloads[0], Bytes::from("payload-1"), "the first arrival's place and payload stand");
    }

    #[test]
    fn duplicate_or_empty_participant_lists_are_refused() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        for participants in [agents(&["a", "b", "a"]), agents(&[]), agents(&["a", "bad id"]), Participants::Count(0)] {
            let err = h.call_err(
                a,
                Request::Sync {
                    sync_id: "s".into(),
                    participants: participants.clone(),
                    timeout_ms: 0,
                    payload: Bytes::new(),
                    summary: false,
                    quorum: None,
                },
            );
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{participants:?}");
        }
        let err = h.call_err(
            a,
            Request::Sync {
                sync_id: "bad id".into(),
                participants: Participants::Count(1),
                timeout_ms: 0,
                payload: Bytes::new(),
                summary: false,
                quorum: None,
            },
        );
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert!(h.engine.list_sync_points("").unwrap().is_empty(), "no point was created");
    }

    #[test]
    fn every_arrival_must_describe_the_point_the_same_way() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        h.arrive(a, "s", agents(&["a", "b"]), 0, "");
        for different in [agents(&["a", "b", "c"]), Participants::Count(2), Participants::Role("w".into())] {
            let id = h.arrive(b, "s", different.clone(), 0, "");
            let Some(Reply::Error(err)) = h.reply(b, id) else { panic!("{different:?} should be refused") };
            assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{different:?}");
            assert!(matches!(err, CoreError::SyncMismatch { .. }), "{err:?}");
        }
        assert_eq!(h.engine.sync_status("", "s").unwrap().arrived, ["a"], "refused arrivals are not recorded");
    }

    #[test]
    fn a_refused_first_arrival_does_not_create_the_point() {
        // An agent that is not in the set it names is refused; the id stays free, so the real
        // participants can still define the point.
        let mut h = long_leases();
        let outsider = h.join("x", "w", &[]);
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        let err = h.call_err(
            outsider,
            Request::Sync {
                sync_id: "s".into(),
                participants: agents(&["a", "b"]),
                timeout_ms: 0,
                payload: Bytes::new(),
                summary: false,
                quorum: None,
            },
        );
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
        assert!(matches!(err, CoreError::NotAParticipant { .. }));
        assert!(h.engine.sync_status("", "s").is_err(), "the refused arrival left nothing behind");

        let ra = h.arrive(a, "s", agents(&["a", "b", "x"]), 0, "");
        let rx = h.arrive(outsider, "s", agents(&["a", "b", "x"]), 0, "");
        let rb = h.arrive(b, "s", agents(&["a", "b", "x"]), 0, "");
        for (conn, id) in [(a, ra), (outsider, rx), (b, rb)] {
            assert_eq!(sync_outcome(&h.reply(conn, id).unwrap()).arrival_order.len(), 3);
        }
    }

    #[test]
    fn force_complete_releases_the_waiters_with_what_arrived() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        let ra = h.arrive(a, "s", agents(&["a", "b", "c"]), 0, "pa");
        let rb = h.arrive(b, "s", agents(&["a", "b", "c"]), 0, "pb");
        h.advance_to(500);

        let AdminOutcome::SyncForced(status) = h.admin_ok(force("s")) else { panic!("a forced point's status") };
        assert_eq!((status.state, status.finished_at), (SyncState::Forced, Some(500)));
        assert_eq!(status.missing, ["c"]);
        let outcome = sync_outcome(&h.reply(a, ra).unwrap());
        assert_eq!(outcome, sync_outcome(&h.reply(b, rb).unwrap()));
        assert!(outcome.forced);
        assert_eq!(outcome.payloads, [Bytes::from("pa"), Bytes::from("pb")]);

        let again = h.admin_err(force("s"));
        assert_eq!(again.code(), ErrorCode::FailedPrecondition, "only a waiting point can be forced");
        assert_eq!(h.admin_err(force("nope")).code(), ErrorCode::NotFound);
        let audited: Vec<_> = h.engine.control().audit().entries().map(|e| (e.command.clone(), e.outcome)).collect();
        assert_eq!(audited.len(), 3, "every operator action on a sync point is audited: {audited:?}");
        assert_eq!(audited[0], ("force_complete_sync".to_owned(), lockstep_core::AuditOutcome::Ok));
    }

    #[test]
    fn cleanup_removes_finished_points_and_frees_their_ids() {
        let mut h = long_leases();
        let a = h.join("a", "w", &[]);
        h.arrive(a, "done", Participants::Count(1), 0, "");
        h.arrive(a, "waiting", Participants::Count(2), 0, "");
        assert_eq!(h.engine.list_sync_points("").unwrap().len(), 2);

        let cleanup = AdminAction::CleanupSyncPoints { namespace: String::new() };
        assert_eq!(h.admin_ok(cleanup), AdminOutcome::Cleaned(1));
        let left: Vec<_> = h.engine.list_sync_points("").unwrap().into_iter().map(|s| s.sync_id).collect();
        assert_eq!(left, ["waiting"], "waiting points stay");
        // The id can be used for a new round.
        let again = h.arrive(a, "done", Participants::Count(1), 0, "second");
        assert_eq!(sync_outcome(&h.reply(a, again).unwrap()).payloads, [Bytes::from("second")]);
    }

    #[test]
    fn finished_points_are_removed_after_their_retention() {
        let mut h =
            Harness::new(Config { heartbeat_interval_ms: 60_000, sync_retention_ms: 5_000, ..Config::default() });
        let a = h.join("a", "w", &[]);
        h.advance_to(1_000);
        let first = h.arrive(a, "s", Participants::Count(1), 0, "");
        assert!(h.reply(a, first).is_some());
        let replay = h.arrive(a, "s", Participants::Count(1), 0, "");
        assert_eq!(
            h.reply(a, replay),
            h.reply(a, first),
            "a finished point answers a repeated arrival with its outcome"
        );

        h.advance_to(5_999);
        assert!(h.engine.sync_status("", "s").is_ok(), "kept for diagnosis");
        h.advance_to(6_000);
        assert_eq!(h.engine.sync_status("", "s").unwrap_err().code(), ErrorCode::NotFound);
    }

    #[test]
    fn the_open_sync_point_limit_is_enforced() {
        let mut h = Harness::new(Config {
            heartbeat_interval_ms: 60_000,
            limits: Limits { max_open_sync_points: 2, ..Limits::default() },
            ..Config::default()
        });
        let a = h.join("a", "w", &[]);
        h.arrive(a, "s1", Participants::Count(2), 0, "");
        h.arrive(a, "s2", Participants::Count(2), 0, "");
        let err = h.call_err(
            a,
            Request::Sync {
                sync_id: "s3".into(),
                participants: Participants::Count(2),
                timeout_ms: 0,
                payload: Bytes::new(),
                summary: false,
                quorum: None,
            },
        );
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);

        // Arriving at an existing point is not opening one, and a finished point frees its slot.
        let b = h.join("b", "w", &[]);
        h.arrive(b, "s1", Participants::Count(2), 0, "");
        let r3 = h.arrive(a, "s3", Participants::Count(1), 0, "");
        assert!(matches!(h.reply(a, r3), Some(Reply::Sync(_))));
    }

    #[test]
    fn diagnosis_names_the_missing_agents_and_what_to_do() {
        let mut h = harness();
        let a = h.join("a", "w", &[]);
        let b = h.join("b", "w", &[]);
        h.join("lost-one", "w", &[]);
        h.arrive(a, "s", agents(&["a", "b", "lost-one", "ghost"]), 10_000, "");
        h.advance_heartbeating(4_000, &[a, b]);
        assert_eq!(h.status("lost-one"), AgentStatus::Lost); // fails the point: diagnose a new one
        h.arrive(a, "s2", agents(&["a", "b", "ghost"]), 10_000, "");
        h.call_ok(b, Request::SetStatus(AgentStatus::Paused));
        h.advance_heartbeating(10_000, &[a, b]);

        let d = h.engine.diagnose_sync(h.now, "", "s2").unwrap();
        assert_eq!(d.status.missing, ["b", "ghost"]);
        let issues = d.issues.join("\n");
        assert!(issues.contains("waiting for 2 of 3"), "{issues}");
        assert!(issues.contains("'ghost' is not registered"), "{issues}");
        assert!(issues.contains("'b' is paused"), "{issues}");
        let recs = d.recommendations.join("\n");
        assert!(recs.contains("start agent 'ghost'"), "{recs}");
        assert!(recs.contains("resume 'b'"), "{recs}");
        assert!(recs.contains("force-complete"), "{recs}");
        assert!(recs.contains("longer timeout"), "60% of the timeout has passed: {recs}");

        let failed = h.engine.diagnose_sync(h.now, "", "s").unwrap();
        assert!(failed.issues.join("\n").contains("'lost-one' lost its lease"), "{:?}", failed.issues);
        assert_eq!(h.engine.diagnose_sync(h.now, "", "none").unwrap_err().code(), ErrorCode::NotFound);
    }
}

// =================================================================================================
// 8. Scale
// =================================================================================================

mod scale {
    use super::*;

    #[test]
    fn a_thousand_agents_receive_every_message_and_meet_at_one_barrier() {
        const N: usize = 1_000;
        const MESSAGES: usize = 20;
        let mut h = Harness::new(Config { heartbeat_interval_ms: 60_000, ..Config::default() });
        let publisher = h.join("publisher", "feed", &[]);
        let ids: Vec<String> = (0..N).map(|i| format!("agent-{i:04}")).collect();
        let conns: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let interest = ["ticks.>", "ticks.*", "all"][i % 3];
                h.join(id, "worker", &[interest])
            })
            .collect();
        assert_eq!(h.agents().len(), N + 1);

        for m in 0..MESSAGES {
            h.advance_to(h.now + 1);
            h.call_ok(publisher, publish("ticks.btc", &m.to_string()));
        }
        let expected: Vec<String> = (0..MESSAGES).map(|m| m.to_string()).collect();
        for &conn in &conns {
            let got = h.deliveries(conn);
            assert_eq!(got.iter().map(harness::payload_text).collect::<Vec<_>>(), expected);
            assert!(got.iter().enumerate().all(|(i, d)| d.seq == i as u64 + 1 && d.missed_before == 0));
        }
        assert_eq!(h.engine.info().counters.routed, (N * MESSAGES) as u64);

        let everyone: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut requests = Vec::with_capacity(N);
        for (i, &conn) in conns.iter().enumerate().rev() {
            requests.push(h.arrive(conn, "all-hands", agents(&everyone), 0, &i.to_string()));
            if i > 0 {
                assert!(h.reply(conn, *requests.last().unwrap()).is_none(), "released early");
            }
        }
        requests.reverse();
        let outcome = sync_outcome(&h.reply(conns[0], requests[0]).expect("released"));
        assert_eq!(outcome.arrival_order.len(), N);
        assert_eq!(&*outcome.arrival_order[0], "agent-0999", "arrival order is kept");
        for (&conn, &request) in conns.iter().zip(&requests) {
            assert_eq!(h.replies(conn, request).len(), 1, "exactly one release each");
            assert!(Arc::ptr_eq(&sync_outcome(&h.reply(conn, request).unwrap()), &outcome), "the same outcome, shared");
        }
        assert_eq!(h.engine.info().counters.syncs_completed, 1);
    }
}

// =================================================================================================
// 10. Bounded tables: what is gone leaves nothing behind
// =================================================================================================

mod bounds {
    use super::*;

    fn in_ns(ns: &str, id: &str) -> RegisterRequest {
        RegisterRequest { namespace: ns.into(), ..agent(id, "w", &[]) }
    }

    #[test]
    fn namespaces_that_hold_nothing_are_forgotten_and_free_their_place() {
        let mut h = with_limits(Limits { max_namespaces: 2, ..Limits::default() });
        // Watches of made-up namespaces neither count towards the limit nor outlive themselves.
        let watchers: Vec<_> = (0..10).map(|i| h.watch_registry(&format!("made-up-{i}"))).collect();
        assert!(watchers.iter().all(|w| !h.is_closed(*w)));
        assert_eq!(h.engine.info().namespaces, 10);
        for w in watchers {
            h.disconnect(w);
        }
        assert_eq!(h.engine.info().namespaces, 0, "watches gone, their namespaces are forgotten");

        let a = h.join_with(in_ns("a", "x"));
        h.join_with(in_ns("b", "x"));
        let refused = h.try_register(in_ns("c", "x"));
        assert_eq!(h.close_error(refused).code(), ErrorCode::ResourceExhausted);
        h.send(a, Request::Deregister);
        h.disconnect(a);
        h.join_with(in_ns("c", "x"));
    }

    #[test]
    fn a_namespace_stays_while_a_lost_agent_or_a_retained_sync_point_is_in_it() {
        let mut h = with_limits(Limits { max_namespaces: 1, ..Limits::default() });
        h.join_with(in_ns("a", "lost"));
        h.advance_to(h.config().lease_ms() + 1);
        let listed = h.engine.list_agents("a", &AgentQuery::default()).unwrap();
        assert_eq!(listed[0].status, AgentStatus::Lost);
        let refused = h.try_register(in_ns("b", "x"));
        assert_eq!(h.close_error(refused).code(), ErrorCode::ResourceExhausted, "a lost agent holds its namespace");
        h.advance_to(h.now + h.config().lost_retention_ms);
        assert_eq!(h.engine.info().namespaces, 0, "forgotten with its last agent");

        let x = h.join_with(in_ns("b", "x"));
        h.arrive(x, "done", agents(&["x"]), 0, "");
        h.send(x, Request::Deregister);
        h.disconnect(x);
        let refused = h.try_register(in_ns("c", "y"));
        assert_eq!(h.close_error(refused).code(), ErrorCode::ResourceExhausted, "a retained point holds it");
        h.advance_to(h.now + h.config().sync_retention_ms);
        assert_eq!(h.engine.info().namespaces, 0);
        h.join_with(in_ns("c", "y"));
    }

    #[test]
    fn registry_watchers_are_capped_per_namespace_and_in_total() {
        let mut h = with_limits(Limits {
            max_registry_watchers: 3,
            max_registry_watchers_per_namespace: 2,
            ..Limits::default()
        });
        let first = h.watch_registry("a");
        h.watch_registry("a");
        let third = h.watch_registry("a");
        let err = h.close_error(third);
        assert_eq!((err.code(), err.reason()), (ErrorCode::ResourceExhausted, lockstep_core::Reason::Limit));
        assert!(err.to_string().contains("registry watchers per namespace"), "{err}");
        h.watch_registry("b");
        let over = h.watch_registry("c");
        let err = h.close_error(over);
        assert!(err.to_string().contains("registry watchers"), "{err}");
        h.disconnect(first);
        let again = h.watch_registry("c");
        assert!(!h.is_closed(again), "a watcher gone frees its place");
    }

    #[test]
    fn registry_events_are_shared_and_a_watchers_queue_is_bounded_in_bytes() {
        let mut h = with_limits(Limits { max_registry_backlog_bytes: 8 * 1024, ..Limits::default() });
        let reader = h.watch_registry("");
        let slow = h.watch_registry("");
        h.pause(slow);
        let big = RegisterRequest {
            metadata: vec![("blob".into(), "x".repeat(1000)), ("more".into(), "y".repeat(1000))],
            ..agent("big", "w", &[])
        };
        let conn = h.join_with(big);
        let shared = |h: &Harness, c| {
            h.frames(c)
                .iter()
                .find_map(|f| match f {
                    Frame::Registry(e) if e.kind == RegistryEventKind::Joined => Some(e.clone()),
                    _ => None,
                })
                .unwrap()
        };
        h.unpause(slow);
        assert!(Arc::ptr_eq(&shared(&h, reader), &shared(&h, slow)), "one event body for every watcher");
        h.pause(slow);
        // Each status event counts ~2 KB: the slow watcher's 8 KiB fill after a few.
        for i in 0..4 {
            let status = if i % 2 == 0 { AgentStatus::Busy } else { AgentStatus::Idle };
            h.call_ok(conn, Request::SetStatus(status));
        }
        let err = h.close_error(slow);
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        assert!(err.to_string().contains("bytes of registry events"), "{err}");
        assert!(!h.is_closed(reader), "a watcher that reads is not affected");
        assert_eq!(h.registry_events(reader).len(), 5);
    }

    #[test]
    fn timers_go_with_what_they_time() {
        let mut h = with_limits(Limits { max_retained_sync_points: 10, ..Limits::default() });
        let idle = h.engine.info().timers;
        let a = h.join("a", "w", &[]);
        let baseline = h.engine.info().timers;
        assert_eq!(baseline, idle + 1, "an agent: its lease");
        for i in 0..300 {
            let request = h.arrive(a, &format!("p{i}"), agents(&["a"]), 0, "");
            assert!(matches!(h.reply(a, request), Some(Reply::Sync(_))));
            // Refused arrivals leave nothing either.
            h.arrive(a, &format!("q{i}"), agents(&["b", "c"]), 0, "");
        }
        assert_eq!(h.engine.info().timers, baseline + 10, "only the retained points' retention");
        let waiting = h.arrive(a, "waiting", agents(&["a", "b"]), 60_000, "");
        assert_eq!(h.engine.info().timers, baseline + 11, "a waiting point's deadline");
        h.admin_ok(force("waiting"));
        assert!(h.reply(a, waiting).is_some());
        assert_eq!(h.engine.info().timers, baseline + 10, "finished: its retention replaced its deadline");
        h.admin_ok(AdminAction::CleanupSyncPoints { namespace: String::new() });
        assert_eq!(h.engine.info().timers, baseline, "cleaned up with their points");

        h.send(a, update(json!({"k": 1})));
        h.send(a, Request::Deregister);
        h.disconnect(a);
        assert_eq!(h.engine.info().timers, idle, "an agent gone takes its timers along");
        assert_eq!(h.engine.info().namespaces, 0);
    }
}
