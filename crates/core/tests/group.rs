//! Replica groups through the engine on a manual clock: ranks in join order, membership events
//! delivered to members and observers, members lost with their lease, publishes that make the next
//! version or change nothing, fetches for members only, divergence named at a collective over the
//! group, and a group restored with its state.

mod harness;

use harness::Harness;
use lockstep_core::collective::{
    CollectiveEvent, CollectiveJoin, CollectiveKind, CollectiveSpec, DType, Group, ReduceOp,
};
use lockstep_core::replica_group::StateVersion;
use lockstep_core::{Config, ConnId, CoreError, GroupCall, GroupOutput, Input, Reason, Reply, Request};
use serde_json::Value;

fn join(h: &mut Harness, conn: ConnId, group: &str) -> lockstep_core::replica_group::GroupView {
    match h.call(conn, Request::JoinGroup { group_id: group.into() }) {
        Reply::Group(v) => v,
        other => panic!("expected a membership, got {other:?}"),
    }
}

/// The group events `conn` received, as (event, agent, members).
fn events(h: &Harness, conn: ConnId) -> Vec<(String, String, Vec<String>)> {
    h.deliveries(conn)
        .iter()
        .filter(|d| d.message.topic.starts_with("lockstep.groups."))
        .map(|d| {
            let v: Value = serde_json::from_slice(&d.message.payload).expect("JSON");
            let members = v["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
            (v["event"].as_str().unwrap().to_owned(), v["agent"].as_str().unwrap().to_owned(), members)
        })
        .collect()
}

fn gcall(h: &Harness, conn: ConnId, group: &str) -> GroupCall {
    let r = h.registered(conn);
    GroupCall { namespace: r.namespace, agent_id: r.agent_id, resume_token: r.resume_token, group_id: group.into() }
}

/// What the group store was told since the last look.
fn told(h: &mut Harness) -> Vec<GroupOutput> {
    std::mem::take(&mut h.group_outputs)
}

fn publish(h: &mut Harness, origin: u64, conn: ConnId, group: &str, size: u64) -> GroupOutput {
    let call = gcall(h, conn, group);
    h.engine.handle(h.now, Input::GroupPublish { origin, call, size });
    h.pump();
    told(h).pop().expect("an answer")
}

fn published(h: &mut Harness, origin: u64, result: Result<String, String>) -> GroupOutput {
    h.engine.handle(h.now, Input::GroupPublished { origin, result });
    h.pump();
    told(h).pop().expect("an answer")
}

fn fetch(h: &mut Harness, origin: u64, conn: ConnId, group: &str) -> GroupOutput {
    let call = gcall(h, conn, group);
    h.engine.handle(h.now, Input::GroupFetch { origin, call });
    h.pump();
    told(h).pop().expect("an answer")
}

fn refused(out: GroupOutput) -> CoreError {
    match out {
        GroupOutput::Refused { error, .. } => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn fetched(out: GroupOutput) -> StateVersion {
    match out {
        GroupOutput::FetchGo { state, .. } => state,
        other => panic!("expected a fetch, got {other:?}"),
    }
}

#[test]
fn ranks_are_join_order_and_every_change_is_an_event_for_members_and_observers() {
    let mut h = Harness::new(Config::default());
    let observer = h.join("observer", "ops", &["lockstep.groups.>"]);
    let a = h.join("a", "w", &[]);
    let b = h.join("b", "w", &["lockstep.groups.g"]);
    let c = h.join("c", "w", &["lockstep.groups.g"]);
    assert_eq!(join(&mut h, b, "g").rank, 0);
    assert_eq!(join(&mut h, a, "g").rank, 1);
    let v = join(&mut h, c, "g");
    assert_eq!((v.rank, v.members.clone()), (2, vec!["b".to_owned(), "a".into(), "c".into()]));
    // Joining again keeps the rank and is no event.
    assert_eq!(join(&mut h, a, "g").rank, 1);
    h.call_ok(b, Request::LeaveGroup { group_id: "g".into(), forget_state: false });
    let v = join(&mut h, c, "g");
    assert_eq!((v.rank, v.members), (1, vec!["a".to_owned(), "c".into()]), "ranks close up");
    let seen = events(&h, observer);
    let kinds: Vec<(&str, &str)> = seen.iter().map(|(e, a, _)| (e.as_str(), a.as_str())).collect();
    assert_eq!(kinds, vec![("joined", "b"), ("joined", "a"), ("joined", "c"), ("left", "b")]);
    assert_eq!(seen[3].2, vec!["a", "c"]);
    // Agents interested in the group's topic get every event; the others none.
    assert_eq!(events(&h, c).len(), 4);
    assert_eq!(events(&h, b).len(), 4, "a member that left still hears of the group");
    assert!(events(&h, a).is_empty(), "a has no interest in the topic");
    let e = h.call_err(b, Request::LeaveGroup { group_id: "g".into(), forget_state: false });
    assert_eq!(e.reason(), Reason::NotGroupMember);
    let e = h.call_err(b, Request::LeaveGroup { group_id: "nope".into(), forget_state: false });
    assert_eq!(e.reason(), Reason::UnknownGroup);
    let e = h.call_err(b, Request::JoinGroup { group_id: "bad id".into() });
    assert_eq!(e.reason(), Reason::InvalidArgument);
    let listed = h.engine.list_groups("").unwrap();
    assert_eq!((listed[0].group_id.as_str(), listed[0].members.clone()), ("g", vec!["a".to_owned(), "c".into()]));
}

#[test]
fn a_member_lost_with_its_lease_leaves_and_its_publish_in_progress_changes_nothing() {
    let mut h = Harness::new(Config::default());
    let a = h.join("a", "w", &["lockstep.groups.>"]);
    let b = h.join("b", "w", &[]);
    join(&mut h, a, "g");
    join(&mut h, b, "g");
    assert_eq!(publish(&mut h, 1, a, "g", 10), GroupOutput::PublishGo { origin: 1 });
    match published(&mut h, 1, Ok("c1".into())) {
        GroupOutput::Published { state, .. } => assert_eq!((state.version, state.checksum.as_str()), (1, "c1")),
        other => panic!("{other:?}"),
    }
    // b starts publishing version 2 and goes silent: its lease runs out mid-transfer.
    assert_eq!(publish(&mut h, 2, b, "g", 20), GroupOutput::PublishGo { origin: 2 });
    let lease = h.config().lease_ms();
    h.advance_heartbeating(h.now + lease + 1, &[a]);
    assert!(h.is_closed(b));
    let last = events(&h, a).pop().expect("an event");
    assert_eq!((last.0.as_str(), last.1.as_str(), last.2), ("lost", "b", vec!["a".to_owned()]));
    // Its bytes arrive afterwards: refused, and version 1 stays current.
    let e = refused(published(&mut h, 2, Ok("c2".into())));
    assert_eq!(e.reason(), Reason::GroupPublishAborted);
    assert_eq!(fetched(fetch(&mut h, 3, a, "g")).checksum, "c1");
    // A publish that breaks off changes nothing either, and frees the group for the next one.
    assert_eq!(publish(&mut h, 4, a, "g", 30), GroupOutput::PublishGo { origin: 4 });
    assert_eq!(refused(published(&mut h, 4, Err("broke".into()))).reason(), Reason::GroupPublishAborted);
    assert_eq!(fetched(fetch(&mut h, 5, a, "g")).version, 1);
    assert_eq!(publish(&mut h, 6, a, "g", 30), GroupOutput::PublishGo { origin: 6 });
}

#[test]
fn publishes_and_fetches_are_for_members_within_the_limits() {
    let mut config = Config::default();
    config.limits.max_group_state_bytes = 100;
    config.limits.max_group_state_total_bytes = 150;
    let mut h = Harness::new(config);
    let a = h.join("a", "w", &[]);
    let b = h.join("b", "w", &[]);
    let x = h.join("x", "w", &[]);
    assert_eq!(refused(publish(&mut h, 1, a, "g", 1)).reason(), Reason::UnknownGroup);
    join(&mut h, a, "g");
    join(&mut h, b, "g");
    assert_eq!(refused(fetch(&mut h, 2, a, "g")).reason(), Reason::NoGroupState);
    assert_eq!(refused(publish(&mut h, 3, x, "g", 1)).reason(), Reason::NotGroupMember);
    assert_eq!(refused(fetch(&mut h, 4, x, "g")).reason(), Reason::NotGroupMember);
    assert_eq!(refused(publish(&mut h, 5, a, "g", 101)).reason(), Reason::InvalidArgument);
    let mut bad = gcall(&h, a, "g");
    bad.resume_token = "forged".into();
    h.engine.handle(h.now, Input::GroupPublish { origin: 6, call: bad, size: 1 });
    h.pump();
    assert_eq!(refused(told(&mut h).pop().unwrap()).reason(), Reason::InvalidArgument);
    assert_eq!(publish(&mut h, 7, a, "g", 100), GroupOutput::PublishGo { origin: 7 });
    assert_eq!(refused(publish(&mut h, 8, b, "g", 10)).reason(), Reason::GroupBusy);
    published(&mut h, 7, Ok("c7".into()));
    // Version 1 (100 bytes) is held: another 100 would go over the 150 in all.
    assert_eq!(refused(publish(&mut h, 9, b, "g", 100)).reason(), Reason::Limit);
    assert_eq!(publish(&mut h, 10, b, "g", 50), GroupOutput::PublishGo { origin: 10 });
    match published(&mut h, 10, Ok("c10".into())) {
        GroupOutput::Published { state, .. } => {
            assert_eq!((state.version, state.size, state.published_by.as_str()), (2, 50, "b"))
        }
        other => panic!("{other:?}"),
    }
    let s = fetched(fetch(&mut h, 11, a, "g"));
    assert_eq!((s.version, s.checksum.as_str()), (2, "c10"));
    // The state outlives its members: a late joiner finds it.
    h.call_ok(a, Request::LeaveGroup { group_id: "g".into(), forget_state: false });
    h.call_ok(b, Request::LeaveGroup { group_id: "g".into(), forget_state: false });
    let v = join(&mut h, x, "g");
    assert_eq!((v.rank, v.state.map(|s| s.version)), (0, Some(2)));
    // Until the last member forgets it: the store is told to drop the bytes.
    h.call_ok(x, Request::LeaveGroup { group_id: "g".into(), forget_state: true });
    assert!(matches!(told(&mut h).as_slice(), [GroupOutput::Forgotten { group_id, .. }] if &**group_id == "g"));
    assert!(h.engine.list_groups("").unwrap().is_empty());
    assert_eq!(refused(publish(&mut h, 12, x, "g", 1)).reason(), Reason::UnknownGroup);
}

#[test]
fn the_groups_of_a_namespace_are_bounded() {
    let mut config = Config::default();
    config.limits.max_groups = 2;
    config.limits.max_group_members = 1;
    let mut h = Harness::new(config);
    let a = h.join("a", "w", &[]);
    let b = h.join("b", "w", &[]);
    join(&mut h, a, "g1");
    join(&mut h, a, "g2");
    assert_eq!(h.call_err(a, Request::JoinGroup { group_id: "g3".into() }).reason(), Reason::Limit);
    assert_eq!(h.call_err(b, Request::JoinGroup { group_id: "g1".into() }).reason(), Reason::Limit);
}

fn collective(h: &Harness, conn: ConnId, group: Group, checksum: Option<&str>) -> CollectiveJoin {
    let r = h.registered(conn);
    CollectiveJoin {
        namespace: r.namespace,
        agent_id: r.agent_id,
        resume_token: r.resume_token,
        collective_id: "step".into(),
        group,
        spec: CollectiveSpec { kind: CollectiveKind::Allreduce(ReduceOp::Sum), dtype: DType::F32, length: 4 },
        timeout_ms: 0,
        state_checksum: checksum.map(str::to_owned),
    }
}

fn started(h: &mut Harness) -> (Vec<String>, Vec<String>, String) {
    match std::mem::take(&mut h.collective_events).as_slice() {
        [CollectiveEvent::Start { members, diverged, reference, .. }] => {
            (members.iter().map(|m| m.agent.to_string()).collect(), diverged.clone(), reference.clone())
        }
        other => panic!("expected a start, got {other:?}"),
    }
}

#[test]
fn a_collective_over_the_group_names_who_diverged_from_the_majority_or_the_published_version() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = ["c", "a", "b"].iter().map(|id| h.join(id, "w", &[])).collect();
    for &c in &conns {
        join(&mut h, c, "g");
    }
    // No version yet: the majority is the reference.
    let sums = [Some("x"), Some("y"), Some("x")];
    for (i, &c) in conns.iter().enumerate() {
        let j = collective(&h, c, Group::Replica("g".into()), sums[i]);
        h.engine.handle(h.now, Input::CollectiveJoin { origin: i as u64 + 1, join: j });
        h.pump();
    }
    let (members, diverged, reference) = started(&mut h);
    assert_eq!(members, vec!["c", "a", "b"], "the group's ranks");
    assert_eq!((diverged, reference.as_str()), (vec!["a".to_owned()], "x"));
    h.engine.handle(
        h.now,
        Input::CollectiveTransferred { namespace: "default".into(), collective_id: "step".into(), serial: 1 },
    );
    h.pump();
    h.collective_events.clear();
    // No majority (b presents nothing): version 1's checksum "y" breaks the tie.
    publish(&mut h, 10, conns[1], "g", 4);
    published(&mut h, 10, Ok("y".into()));
    let sums = [Some("x"), Some("y"), None];
    for (i, &c) in conns.iter().enumerate() {
        let j = collective(&h, c, Group::Replica("g".into()), sums[i]);
        h.engine.handle(h.now, Input::CollectiveJoin { origin: i as u64 + 11, join: j });
        h.pump();
    }
    let (_, diverged, reference) = started(&mut h);
    assert_eq!((diverged, reference.as_str()), (vec!["c".to_owned()], "y"));
}

#[test]
fn a_restored_group_keeps_its_state_for_members_joining_again() {
    let mut h = Harness::new(Config::default());
    let state = StateVersion { version: 7, checksum: "c".into(), size: 3, published_by: "a".into(), published_at: 1 };
    h.engine.restore_group("", "g", state.clone()).unwrap();
    assert!(h.engine.restore_group("", "bad id", state.clone()).is_err());
    let a = h.join("a", "w", &[]);
    assert_eq!(refused(fetch(&mut h, 1, a, "g")).reason(), Reason::NotGroupMember);
    let v = join(&mut h, a, "g");
    assert_eq!(v.state, Some(state.clone()));
    assert_eq!(fetched(fetch(&mut h, 2, a, "g")), state);
}
