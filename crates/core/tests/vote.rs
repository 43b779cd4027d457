//! Votes through the engine on a manual clock: every voter gets the same outcome, once; the
//! outcome is published once on the vote's topic; a lost voter counts as missing; the deadline
//! decides with the ballots in; the full record is read on demand; and, as properties over random
//! ballots and losses, a vote decides at most once and everyone waiting sees the same outcome.

mod harness;

use std::sync::Arc;

use harness::{agent, Harness};
use lockstep_core::vote::{BallotChoice, BallotRequest, Choices, Policy, TieRule, VoteSpec, WeightSource};
use lockstep_core::{AdminAction, Config, ConnId, Participants, Reason, Reply, Request, VoteOutcome, VoteState};
use proptest::prelude::*;

fn spec(id: &str, participants: Participants, options: &[&str]) -> VoteSpec {
    VoteSpec {
        vote_id: id.into(),
        question: "what now?".into(),
        participants,
        timeout_ms: 10_000,
        policy: Policy::Plurality,
        choices: Choices::Options(options.iter().map(|s| s.to_string()).collect()),
        weight: WeightSource::Equal,
        quorum_ballots: 0,
        quorum_weight: 0.0,
        veto_roles: vec![],
        tie: TieRule::NoDecision,
        topic: "desk.directives".into(),
    }
}

fn ballot(id: &str, option: &str) -> Request {
    Request::CastBallot(BallotRequest {
        vote_id: id.into(),
        choice: BallotChoice::Option(option.into()),
        confidence: None,
        veto: false,
    })
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("v{i}")).collect()
}

fn outcome(reply: Option<Reply>) -> Arc<VoteOutcome> {
    match reply {
        Some(Reply::Vote(o)) => o,
        other => panic!("expected an outcome, got {other:?}"),
    }
}

/// Every directive published on `conn`, as JSON.
fn directives(h: &Harness, conn: ConnId) -> Vec<serde_json::Value> {
    h.deliveries(conn)
        .iter()
        .filter(|d| &*d.message.topic == "desk.directives")
        .map(|d| serde_json::from_slice(&d.message.payload).unwrap())
        .collect()
}

#[test]
fn every_voter_and_the_executor_get_the_one_outcome() {
    let mut h = Harness::new(Config::default());
    h.engine.track_changes();
    let opener = h.join("desk", "desk", &[]);
    let executor = h.join("executor", "executor", &["desk.>"]);
    let voters: Vec<ConnId> = names(3).iter().map(|n| h.join(n, "strategy", &[])).collect();
    let open = h.send(
        opener,
        Request::OpenVote {
            spec: Box::new(spec("t1", Participants::Role("strategy".into()), &["buy", "sell"])),
            wait: true,
        },
    );
    assert_eq!(h.reply(opener, open), None, "a waiting opener is answered with the outcome");
    let ids: Vec<u64> = ["buy", "sell", "buy"].iter().zip(&voters).map(|(o, c)| h.send(*c, ballot("t1", o))).collect();
    let first = outcome(h.reply(voters[0], ids[0]));
    assert!(first.decided);
    assert_eq!(first.choice, "buy");
    for (c, id) in voters.iter().zip(&ids) {
        assert!(Arc::ptr_eq(&outcome(h.reply(*c, *id)), &first), "one shared outcome");
    }
    assert!(Arc::ptr_eq(&outcome(h.reply(opener, open)), &first));
    let counters = h.engine.info().counters;
    assert_eq!((counters.votes_decided, counters.votes_undecided), (1, 0), "counted once, as decided");
    let published = directives(&h, executor);
    assert_eq!(published.len(), 1, "published once");
    assert_eq!(published[0]["directive"], "buy");
    assert_eq!(published[0]["tally"][0]["ballots"], 2);
    // The full record is read on demand.
    let status = h.engine.vote_status("", "t1").unwrap();
    assert_eq!(status.state, VoteState::Decided);
    assert_eq!(status.ballots.iter().map(|b| b.agent_id.as_str()).collect::<Vec<_>>(), ["v0", "v1", "v2"]);
    // A late ballot from a voter gets the same outcome; a different one is refused.
    assert!(Arc::ptr_eq(&outcome(Some(h.call(voters[0], ballot("t1", "buy")))), &first));
    assert_eq!(h.call_err(voters[1], ballot("t1", "buy")).reason(), Reason::DoubleBallot);
    let audit: Vec<String> = h
        .take_changes()
        .into_iter()
        .filter_map(|c| match c {
            lockstep_core::durable::Change::Audit(e) => Some(format!("{} {}", e.command, e.target)),
            _ => None,
        })
        .collect();
    assert!(audit.contains(&"vote_opened t1".to_owned()) && audit.contains(&"vote_decided t1".to_owned()), "{audit:?}");
}

#[test]
fn a_lost_voter_is_missing_and_the_vote_decides_without_it() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = names(3).iter().map(|n| h.join(n, "strategy", &[])).collect();
    let mut s = spec("t2", Participants::Agents(names(3)), &["buy", "sell"]);
    s.timeout_ms = 600_000;
    h.call_ok(conns[0], Request::OpenVote { spec: Box::new(s), wait: false });
    let a = h.send(conns[0], ballot("t2", "sell"));
    let b = h.send(conns[1], ballot("t2", "sell"));
    // v2 goes silent: once its lease runs out it is lost, and nobody else is left to vote.
    let lease = h.config().lease_ms();
    h.advance_heartbeating(h.now + lease + 10, &conns[..2]);
    let o = outcome(h.reply(conns[0], a));
    assert_eq!((o.decided, o.choice.as_str(), o.ballots, o.missing), (true, "sell", 2, 1));
    assert!(Arc::ptr_eq(&o, &outcome(h.reply(conns[1], b))));
    let status = h.engine.vote_status("", "t2").unwrap();
    assert_eq!(status.missing, ["v2"]);
    assert_eq!(status.gone, ["v2"]);
}

#[test]
fn the_deadline_decides_with_the_ballots_in_and_later_ballots_are_refused() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = names(3).iter().map(|n| h.join(n, "strategy", &[])).collect();
    let mut s = spec("t3", Participants::Count(3), &["x", "y"]);
    s.policy = Policy::Majority;
    s.quorum_ballots = 2;
    s.timeout_ms = 1_000;
    h.call_ok(conns[0], Request::OpenVote { spec: Box::new(s), wait: false });
    let a = h.send(conns[0], ballot("t3", "x"));
    h.advance_heartbeating(h.now + 1_000, &conns);
    let o = outcome(h.reply(conns[0], a));
    assert!(!o.decided);
    assert!(o.reason.contains("quorum"), "{}", o.reason);
    assert_eq!(o.missing, 2);
    assert_eq!(h.call_err(conns[1], ballot("t3", "x")).reason(), Reason::VoteClosed);
    assert_eq!(h.call_err(conns[1], ballot("nope", "x")).reason(), Reason::UnknownVote);
    let d = h.engine.diagnose_vote(h.now, "", "t3").unwrap();
    assert!(d.issues[0].contains("no decision"), "{:?}", d.issues);
}

#[test]
fn bad_ballots_get_their_reasons_and_change_nothing() {
    let mut h = Harness::new(Config::default());
    let mut req = agent("v0", "strategy", &[]);
    req.metadata = vec![("stake".into(), "-3".into())];
    let v0 = h.join_with(req);
    let v1 = h.join("v1", "strategy", &[]);
    let outsider = h.join("z", "other", &[]);
    let mut s = spec("t4", Participants::Agents(names(2)), &["x"]);
    s.weight = WeightSource::Metadata("stake".into());
    h.call_ok(v0, Request::OpenVote { spec: Box::new(s.clone()), wait: false });
    assert_eq!(
        h.call_err(v1, Request::OpenVote { spec: Box::new(spec("t4", Participants::Count(2), &["x"])), wait: false })
            .reason(),
        Reason::VoteExists
    );
    assert_eq!(h.call_err(outsider, ballot("t4", "x")).reason(), Reason::NotAVoter);
    assert_eq!(h.call_err(v0, ballot("t4", "x")).reason(), Reason::BadWeight);
    assert_eq!(h.call_err(v1, ballot("t4", "z")).reason(), Reason::UnknownOption);
    let bad_conf = Request::CastBallot(BallotRequest {
        vote_id: "t4".into(),
        choice: BallotChoice::Option("x".into()),
        confidence: Some(f64::NAN),
        veto: false,
    });
    assert_eq!(h.call_err(v1, bad_conf).reason(), Reason::BadConfidence);
    assert!(h.engine.vote_status("", "t4").unwrap().ballots.is_empty(), "refused ballots leave nothing");
    // A paused agent may not vote until it is resumed.
    let (namespace, agent_id) = (String::new(), "v1".to_owned());
    h.admin_ok(AdminAction::PauseAgent { namespace: namespace.clone(), agent_id: agent_id.clone() });
    let paused = h.call_err(v1, ballot("t4", "x"));
    assert_eq!(paused.reason(), Reason::Paused);
    assert!(paused.to_string().contains("cast ballots"), "{paused}");
    h.admin_ok(AdminAction::ResumeAgent { namespace, agent_id });
    let mut big = spec("t5", Participants::Count(2), &["x"]);
    big.choices = Choices::Options((0..=h.config().limits.max_vote_options).map(|i| format!("o{i}")).collect());
    assert_eq!(
        h.call_err(v1, Request::OpenVote { spec: Box::new(big), wait: false }).reason(),
        Reason::InvalidArgument
    );
}

#[test]
fn a_restart_keeps_ballots_and_decides_once() {
    let mut h = Harness::new(Config::default());
    h.engine.track_changes();
    let conns: Vec<ConnId> = names(2).iter().map(|n| h.join(n, "strategy", &[])).collect();
    h.call_ok(
        conns[0],
        Request::OpenVote { spec: Box::new(spec("t6", Participants::Agents(names(2)), &["x", "y"])), wait: false },
    );
    h.send(conns[0], ballot("t6", "y"));
    let changes = h.take_changes();
    let mut restored = lockstep_core::durable::Restored::default();
    for c in changes {
        match c {
            lockstep_core::durable::Change::Agent(a) => restored.agents.push(a),
            lockstep_core::durable::Change::Vote(v) => restored.votes.push(*v),
            lockstep_core::durable::Change::Ballot { ballot, .. } => restored.votes[0].ballots.push(ballot),
            _ => {}
        }
    }
    let mut next = Harness::new(Config::default());
    next.now = h.now + 5;
    next.engine.restore(next.now, restored).unwrap();
    let mut r0 = agent("v0", "strategy", &[]);
    r0.resume_token = h.token(conns[0]);
    let mut r1 = agent("v1", "strategy", &[]);
    r1.resume_token = h.token(conns[1]);
    let (c0, c1) = (next.try_register(r0), next.try_register(r1));
    // v0 sends its ballot again (a client does after a reconnect): re-attached, not counted twice.
    let a = next.send(c0, ballot("t6", "y"));
    assert_eq!(next.reply(c0, a), None);
    let b = next.send(c1, ballot("t6", "x"));
    let o = outcome(next.reply(c0, a));
    assert!(Arc::ptr_eq(&o, &outcome(next.reply(c1, b))));
    assert_eq!((o.ballots, o.groups), (2, 2), "two ballots, each counted once");
}

#[test]
fn a_namespace_holding_only_votes_is_kept_until_their_retention_ends() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = names(2).iter().map(|n| h.join(n, "strategy", &[])).collect();
    h.call_ok(conns[0], Request::OpenVote { spec: Box::new(spec("t7", Participants::Count(2), &["x"])), wait: false });
    let a = h.send(conns[0], ballot("t7", "x"));
    h.send(conns[1], ballot("t7", "x"));
    assert!(outcome(h.reply(conns[0], a)).decided);
    for c in conns {
        h.send_with_id(c, 0, Request::Deregister);
    }
    assert_eq!(h.engine.info().namespaces, 1, "the decided vote keeps its namespace");
    assert!(h.engine.vote_status("", "t7").is_ok());
    let retention = h.config().sync_retention_ms;
    h.advance_to(h.now + retention);
    assert_eq!(h.engine.vote_status("", "t7").unwrap_err().reason(), Reason::UnknownVote);
    assert_eq!(h.engine.info().namespaces, 0, "forgotten with its last vote");
    assert_eq!(h.engine.info().timers, 1, "only the health sample's timer is left");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever ballots arrive in whatever order, whoever is lost on the way and whenever the
    /// deadline strikes, a vote is decided at most once, and every voter that waits for the
    /// outcome gets the same one (the opener too), which is published at most once.
    #[test]
    fn a_vote_decides_at_most_once_and_everyone_sees_the_same_outcome(
        n in 1usize..7,
        steps in prop::collection::vec((0usize..8, 0usize..4), 0..30),
        policy in prop_oneof![
            Just(Policy::Plurality),
            Just(Policy::Majority),
            Just(Policy::Supermajority { num: 2, den: 3 }),
            Just(Policy::Unanimity),
        ],
        count in any::<bool>(),
    ) {
        let mut h = Harness::new(Config::default());
        let opener = h.join("desk", "desk", &["desk.>"]);
        let conns: Vec<ConnId> = names(n).iter().map(|v| h.join(v, "strategy", &[])).collect();
        let participants = if count { Participants::Count(n as u32) } else { Participants::Agents(names(n)) };
        let mut s = spec("p", participants, &["a", "b", "c"]);
        s.policy = policy;
        s.timeout_ms = 50_000;
        let open = h.send(opener, Request::OpenVote { spec: Box::new(s), wait: true });
        let mut waiting: Vec<(ConnId, u64)> = vec![(opener, open)];
        let mut silent = vec![false; n];
        for (who, what) in steps {
            match (who, what) {
                // Some voters fall silent: their leases run out later.
                (w, 3) if w < n => silent[w] = true,
                (w, o) if w < n && !silent[w] => {
                    let option = ["a", "b", "c"][o % 3];
                    let id = h.send(conns[w], ballot("p", option));
                    waiting.push((conns[w], id));
                }
                _ => {
                    let live: Vec<ConnId> = (0..n).filter(|&i| !silent[i]).map(|i| conns[i]).chain([opener]).collect();
                    let t = h.now + 2_000;
                    h.advance_heartbeating(t, &live);
                }
            }
        }
        let live: Vec<ConnId> = (0..n).filter(|&i| !silent[i]).map(|i| conns[i]).chain([opener]).collect();
        let t = h.now + 60_000;
        h.advance_heartbeating(t, &live);
        let mut seen: Option<Arc<VoteOutcome>> = None;
        for (conn, id) in waiting {
            for reply in h.replies(conn, id) {
                match reply {
                    Reply::Vote(o) => {
                        if let Some(first) = &seen {
                            prop_assert!(Arc::ptr_eq(first, &o), "two outcomes: {first:?} and {o:?}");
                        }
                        seen = Some(o);
                    }
                    Reply::Error(e) => prop_assert!(
                        matches!(e.reason(), Reason::DoubleBallot | Reason::VoteClosed),
                        "unexpected {e}"
                    ),
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            prop_assert!(h.replies(conn, id).len() <= 1, "answered twice");
        }
        let o = seen.expect("decided by the deadline at the latest");
        prop_assert!(o.ballots as usize <= n);
        prop_assert_eq!(directives(&h, opener).len(), 1, "published exactly once");
        let status = h.engine.vote_status("", "p").unwrap();
        prop_assert!(status.state != VoteState::Open);
        prop_assert_eq!(status.outcome.as_ref().map(|x| Arc::ptr_eq(x, &o)), Some(true));
    }
}
