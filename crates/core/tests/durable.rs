//! Durability at the engine's level: the changes an engine hands over, kept as a store keeps them,
//! rebuild an engine that goes on where the first stopped — agents resume with their tokens and
//! find their state, watchers are healed with snapshots, barriers keep their arrivals and release
//! once, pauses and the emergency stop hold, and what is not resumed is lost as usual.

mod harness;

use std::collections::BTreeMap;

use harness::*;
use lockstep_core::command::{AuditEntry, EmergencyStop};
use lockstep_core::durable::{AgentImage, Change, PauseImage, Restored, SyncPointImage};
use lockstep_core::streams::StreamKind;
use lockstep_core::vote::VoteImage;
use lockstep_core::{
    AgentStatus, Config, ConnId, CoreError, Engine, Frame, Input, Reply, Request, SyncState, WatchTarget,
};
use serde_json::json;

/// What a store would hold after applying the changes, in the engine's terms.
#[derive(Default)]
struct Kept {
    agents: BTreeMap<(String, String), AgentImage>,
    points: BTreeMap<(String, String), SyncPointImage>,
    audit: Vec<AuditEntry>,
    pauses: BTreeMap<(String, String), PauseImage>,
    emergency: Option<EmergencyStop>,
    votes: BTreeMap<(String, String), VoteImage>,
    context: BTreeMap<(String, String), lockstep_core::durable::ContextKeyImage>,
    context_revisions: BTreeMap<String, u64>,
    tasks: BTreeMap<(String, String), lockstep_core::task::TaskImage>,
    task_seqs: BTreeMap<String, u64>,
    traces: BTreeMap<(String, String), lockstep_core::trace::Trace>,
    rounds: BTreeMap<(String, String), lockstep_core::round::SeriesImage>,
    /// As the store keeps them: one setting per controller or buffer.
    streams: BTreeMap<(StreamKind, String, String), lockstep_core::streams::StreamImage>,
    history: BTreeMap<(String, String), lockstep_core::history::KeptTopic>,
    /// As the store keeps it: one setting, replaced whole.
    intake: Option<lockstep_core::intake::IntakeImage>,
    /// As the store keeps the sync monitor: systems, events by number, edges, incidents by id.
    systems: BTreeMap<String, lockstep_core::systems::SystemImage>,
    system_events: BTreeMap<(String, u64), lockstep_core::systems::Event>,
    dependencies: BTreeMap<(String, String), f64>,
    incidents: BTreeMap<u64, lockstep_core::systems::Incident>,
    system_trends: BTreeMap<String, lockstep_core::systems::Trend>,
}

impl Kept {
    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Agent(a) => {
                    self.agents.insert((a.namespace.clone(), a.agent_id.clone()), a);
                }
                Change::State { namespace, agent_id, state, version } => {
                    let a = self.agents.get_mut(&(namespace, agent_id)).expect("the agent was kept before its state");
                    // Values are taken when the changes are handed over, so an earlier change of the
                    // same batch may already carry this version; it never goes back.
                    assert!(
                        version >= a.state_version,
                        "versions never go back: {} after {}",
                        version,
                        a.state_version
                    );
                    a.state = state;
                    a.state_version = version;
                }
                Change::AgentRemoved { namespace, agent_id } => {
                    self.agents.remove(&(namespace, agent_id));
                }
                Change::SyncPoint(p) => {
                    let key = (p.namespace.clone(), p.sync_id.clone());
                    let arrivals = self.points.remove(&key).map(|old| old.arrivals).unwrap_or_default();
                    self.points.insert(key, SyncPointImage { arrivals, ..p });
                }
                Change::Arrival { namespace, sync_id, position, arrival } => {
                    let p = self.points.get_mut(&(namespace, sync_id)).expect("the point was kept before arrivals");
                    assert_eq!(position as usize, p.arrivals.len(), "arrivals are kept in order");
                    p.arrivals.push(arrival);
                }
                Change::SyncPointRemoved { namespace, sync_id } => {
                    self.points.remove(&(namespace, sync_id));
                }
                Change::Audit(e) => self.audit.push(e),
                Change::Paused(p) => {
                    self.pauses.insert((p.namespace.clone(), p.agent_id.clone()), p);
                }
                Change::Unpaused { namespace, agent_id } => {
                    self.pauses.remove(&(namespace, agent_id));
                }
                Change::EmergencyStop(stop) => self.emergency = stop,
                Change::Vote(v) => {
                    let key = (v.namespace.clone(), v.spec.vote_id.clone());
                    let ballots = self.votes.remove(&key).map(|old| old.ballots).unwrap_or_default();
                    self.votes.insert(key, VoteImage { ballots, ..*v });
                }
                Change::Ballot { namespace, vote_id, position, ballot } => {
                    let v = self.votes.get_mut(&(namespace, vote_id)).expect("the vote was kept before its ballots");
                    assert_eq!(position as usize, v.ballots.len(), "ballots are kept in order");
                    v.ballots.push(ballot);
                }
                Change::VoteRemoved { namespace, vote_id } => {
                    self.votes.remove(&(namespace, vote_id));
                }
                // As the store keeps them: one row per version, older ones than retained dropped.
                Change::ContextRevision(image) => {
                    let image = *image;
                    let key = (image.namespace.clone(), image.key.clone());
                    let mut revisions = self.context.remove(&key).map(|k| k.revisions).unwrap_or_default();
                    revisions.retain(|r| r.version >= image.oldest_retained);
                    revisions.extend(image.revisions.iter().cloned());
                    self.context.insert(key, lockstep_core::durable::ContextKeyImage { revisions, ..image });
                }
                Change::ContextRemoved { namespace, key, version } => {
                    self.context.remove(&(namespace.clone(), key));
                    let kept = self.context_revisions.entry(namespace).or_default();
                    *kept = (*kept).max(version);
                }
                Change::Task(t) => {
                    let seq = self.task_seqs.entry(t.namespace.clone()).or_default();
                    *seq = (*seq).max(t.seq);
                    self.tasks.insert((t.namespace.clone(), t.id.clone()), *t);
                }
                Change::TaskRemoved { namespace, id } => {
                    self.tasks.remove(&(namespace, id));
                }
                Change::TracePut(t) => {
                    self.traces.insert((t.namespace.clone(), t.id.clone()), *t);
                }
                Change::TraceRemoved { namespace, id } => {
                    self.traces.remove(&(namespace, id));
                }
                Change::RoundSeries(s) => {
                    self.rounds.insert((s.spec.namespace.clone(), s.spec.name.clone()), *s);
                }
                Change::RoundSeriesRemoved { namespace, name } => {
                    self.rounds.remove(&(namespace, name));
                }
                Change::Stream(image) => {
                    self.streams.insert((image.kind, image.namespace.clone(), image.id.clone()), *image);
                }
                Change::StreamRemoved { kind, namespace, id } => {
                    self.streams.remove(&(kind, namespace, id));
                }
                Change::History(change) => self.apply_history(change),
                Change::Intake(image) => self.intake = Some(*image),
                Change::SystemPut(image) => {
                    self.systems.insert(image.spec.name.clone(), *image);
                }
                Change::SystemEvent { system, seq, event, keep } => {
                    self.system_events.retain(|(s, n), _| *s != system || n + keep > seq);
                    self.system_events.insert((system, seq), *event);
                }
                Change::Dependency { upstream, downstream, weight } => match weight {
                    Some(w) => {
                        self.dependencies.insert((upstream, downstream), w);
                    }
                    None => {
                        self.dependencies.remove(&(upstream, downstream));
                    }
                },
                Change::SystemTrend { system, trend } => {
                    self.system_trends.insert(system, *trend);
                }
                Change::Incident { incident, keep } => {
                    self.incidents.insert(incident.id, *incident);
                    let resolved: Vec<u64> =
                        self.incidents.values().filter(|i| i.resolved_at.is_some()).map(|i| i.id).collect();
                    for id in resolved.iter().rev().skip(keep as usize) {
                        self.incidents.remove(id);
                    }
                }
            }
        }
    }

    fn restored(&self) -> Restored {
        Restored {
            agents: self.agents.values().cloned().collect(),
            sync_points: self.points.values().cloned().collect(),
            audit: self.audit.clone(),
            pauses: self.pauses.values().cloned().collect(),
            emergency: self.emergency.clone(),
            votes: self.votes.values().cloned().collect(),
            context: self.context.values().cloned().collect(),
            context_revisions: self.context_revisions.iter().map(|(ns, v)| (ns.clone(), *v)).collect(),
            tasks: self.tasks.values().cloned().collect(),
            task_seqs: self.task_seqs.iter().map(|(ns, v)| (ns.clone(), *v)).collect(),
            traces: self.traces.values().cloned().collect(),
            rounds: self.rounds.values().cloned().collect(),
            streams: self.streams.values().cloned().collect(),
            history: self.history.values().cloned().collect(),
            intake: self.intake.clone(),
            systems: self.systems.values().cloned().collect(),
            system_events: self.system_events.iter().map(|((s, n), e)| (s.clone(), *n, e.clone())).collect(),
            dependencies: self.dependencies.iter().map(|((u, d), w)| (u.clone(), d.clone(), *w)).collect(),
            incidents: self.incidents.values().cloned().collect(),
            system_trends: self.system_trends.iter().map(|(s, t)| (s.clone(), t.clone())).collect(),
        }
    }

    /// As the store keeps topic history: one row per message, the topic's last seq apart.
    fn apply_history(&mut self, change: lockstep_core::history::HistoryChange) {
        use lockstep_core::history::{HistoryChange, KeptTopic};
        match change {
            HistoryChange::Append(m) => {
                let key = (m.namespace.clone(), m.topic.clone());
                let topic = self.history.entry(key).or_insert_with(|| KeptTopic {
                    namespace: m.namespace.clone(),
                    topic: m.topic.clone(),
                    ..KeptTopic::default()
                });
                topic.last_seq = topic.last_seq.max(m.seq);
                topic.messages.push(*m);
            }
            HistoryChange::Trim { namespace, topic, before_seq } => {
                if let Some(t) = self.history.get_mut(&(namespace, topic)) {
                    t.messages.retain(|m| m.seq >= before_seq);
                }
            }
            HistoryChange::Forget { namespace, topic } => {
                self.history.remove(&(namespace, topic));
            }
        }
    }
}

fn tracked() -> Harness {
    let mut h = Harness::new(Config::default());
    h.engine.track_changes();
    h
}

/// Takes the changes of `h` and starts a new engine from them `gap_ms` later (the crash and the
/// restart in between).
fn restart(h: &mut Harness, kept: &mut Kept, gap_ms: u64) -> Harness {
    kept.apply(h.take_changes());
    let mut next = Harness::new(h.config().clone());
    next.now = h.now + gap_ms;
    next.engine.restore(next.now, kept.restored()).expect("restores");
    next.engine.track_changes();
    next
}

/// Registers again on a new connection with the resume token.
fn resume(h: &mut Harness, id: &str, role: &str, token: &str) -> lockstep_core::ConnId {
    let mut request = agent(id, role, &[]);
    request.resume_token = token.to_owned();
    let conn = h.try_register(request);
    assert!(h.registered(conn).resumed, "{id} resumes its session: {:?}", h.log(conn));
    conn
}

#[test]
fn agents_resume_with_their_state_versions_and_status_and_watchers_get_snapshots() {
    let mut a = tracked();
    let (w1, w2) = (a.join("w1", "worker", &[]), a.join("w2", "watcher", &[]));
    a.call_ok(w2, Request::Watch(WatchTarget::Agent("w1".into())));
    for epoch in 1..=3 {
        assert_eq!(a.call(w1, update(json!({ "epoch": epoch }))), Reply::StateVersion(epoch));
    }
    a.call_ok(w1, Request::SetStatus(AgentStatus::Busy));
    let (t1, t2) = (a.token(w1), a.token(w2));
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 500);

    let view = b.agent_view("w1").expect("w1 is known after the restart");
    assert_eq!((view.state_version, view.status), (3, AgentStatus::Busy));
    assert_eq!(b.engine.get_state("", "w1").unwrap(), (3, json!({ "epoch": 3 })));
    let w2 = resume(&mut b, "w2", "watcher", &t2);
    let snapshot = b.state_changes(w2);
    assert_eq!(snapshot.len(), 1, "one snapshot of what w2 watches: {snapshot:?}");
    assert_eq!((snapshot[0].base_version, snapshot[0].version), (0, 3));
    assert_eq!(snapshot[0].delta, json!({ "epoch": 3 }));
    let w1 = resume(&mut b, "w1", "worker", &t1);
    assert_eq!(b.call(w1, update(json!({ "epoch": 4 }))), Reply::StateVersion(4), "versions go on");
    let delta = b.state_changes(w2).pop().expect("the watch survived the restart");
    assert_eq!((delta.base_version, delta.version), (3, 4));
}

#[test]
fn many_updates_in_one_turn_are_kept_as_one_state_change_in_order_with_the_rest() {
    let mut a = tracked();
    let w1 = a.join("w1", "worker", &[]);
    a.take_changes();
    // One turn, as the driver applies a batch of inputs before it commits.
    let now = a.now;
    for epoch in 1..=100 {
        let request = update(json!({ "epoch": epoch }));
        a.engine.handle(now, Input::Request { conn: w1, request_id: epoch, request });
    }
    let w2 = ConnId(99);
    let request = agent("w2", "worker", &[]);
    a.engine.handle(now, Input::Register { conn: w2, request, new_token: "t".into(), connection: 0 });
    a.engine.handle(now, Input::Request { conn: w2, request_id: 0, request: Request::Deregister });
    let ready = a.engine.ready();
    let changes = ready.changes().to_vec();
    // w2 came and went within the turn: only its removal is handed over (nothing of it to keep).
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(matches!(&changes[0], Change::State { version: 100, state, .. } if *state == json!({ "epoch": 100 })));
    assert!(matches!(&changes[1], Change::AgentRemoved { agent_id, .. } if agent_id == "w2"));
    // Nothing of the turn can be sent before the commit; dropped uncommitted, it comes again.
    drop(ready);
    let ready = a.engine.ready();
    assert_eq!(ready.changes(), &changes[..], "changes not committed are handed over again");
    assert!(ready.committed().poll_output().is_some(), "the replies leave once committed");
    assert!(a.engine.ready().changes().is_empty(), "committed changes are handed over once");
    let mut untracked = Engine::new(Config::default());
    assert!(untracked.ready().changes().is_empty(), "nothing is recorded unless asked");
}

#[test]
fn a_barrier_in_progress_keeps_its_arrivals_and_releases_everyone_once_after_a_restart() {
    let mut a = tracked();
    let conns: Vec<_> = ["w1", "w2", "w3"].iter().map(|id| a.join(id, "worker", &[])).collect();
    let tokens: Vec<String> = conns.iter().map(|c| a.token(*c)).collect();
    let everyone = agents(&["w1", "w2", "w3"]);
    a.arrive(conns[1], "round-1", everyone.clone(), 10_000, "from w2");
    a.arrive(conns[0], "round-1", everyone.clone(), 10_000, "from w1");
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 1_000);

    let status = b.engine.sync_status("", "round-1").unwrap();
    assert_eq!((status.state, status.arrived.clone()), (SyncState::Waiting, vec!["w2".to_owned(), "w1".to_owned()]));
    let c: Vec<_> = ["w1", "w2", "w3"].iter().zip(&tokens).map(|(id, t)| resume(&mut b, id, "worker", t)).collect();
    // w1 and w2 send their arrival again (the client does so after reconnecting), w3 arrives.
    let again = [b.arrive(c[0], "round-1", everyone.clone(), 10_000, "ignored"), 0];
    let again = [again[0], b.arrive(c[1], "round-1", everyone.clone(), 10_000, "ignored")];
    assert!(again.iter().zip(&c).all(|(id, conn)| b.reply(*conn, *id).is_none()), "still waiting for w3");
    let last = b.arrive(c[2], "round-1", everyone, 10_000, "from w3");
    for (conn, id) in [(c[0], again[0]), (c[1], again[1]), (c[2], last)] {
        let outcome = sync_outcome(&b.reply(conn, id).expect("released"));
        let order: Vec<&str> = outcome.arrival_order.iter().map(|a| &**a).collect();
        assert_eq!(order, ["w2", "w1", "w3"], "the first arrivals' places stand");
        assert_eq!(&outcome.payloads[0][..], b"from w2", "and their payloads");
    }
    let kept_state = {
        kept.apply(b.take_changes());
        kept.points[&("default".to_owned(), "round-1".to_owned())].state
    };
    assert_eq!(kept_state, SyncState::Completed);
}

#[test]
fn finished_points_answer_late_arrivals_with_their_outcome_after_a_restart() {
    let mut a = tracked();
    let w1 = a.join("w1", "worker", &[]);
    let t1 = a.token(w1);
    a.arrive(w1, "r", agents(&["w1", "ghost"]), 100, "");
    a.advance_heartbeating(200, &[w1]);
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 50);
    let w1 = resume(&mut b, "w1", "worker", &t1);
    let id = b.arrive(w1, "r", agents(&["w1", "ghost"]), 100, "");
    match b.reply(w1, id) {
        Some(Reply::Error(CoreError::SyncTimeout { missing, .. })) => assert_eq!(missing, vec!["ghost"]),
        other => panic!("the recorded timeout, got {other:?}"),
    }
}

#[test]
fn agents_that_do_not_come_back_are_lost_when_their_fresh_lease_ends_and_their_barriers_fail() {
    let mut a = tracked();
    let (w1, _w2) = (a.join("w1", "worker", &[]), a.join("w2", "worker", &[]));
    let t1 = a.token(w1);
    a.arrive(w1, "r", agents(&["w1", "w2"]), 60_000, "");
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 100);
    let w1 = resume(&mut b, "w1", "worker", &t1);
    let again = b.arrive(w1, "r", agents(&["w1", "w2"]), 60_000, "");
    let lease = b.config().lease_ms();
    let until = b.now + lease + 1;
    b.advance_heartbeating(until, &[w1]);
    assert_eq!(b.status("w2"), AgentStatus::Lost);
    assert_eq!(b.status("w1"), AgentStatus::Active);
    assert!(matches!(b.reply(w1, again), Some(Reply::Error(CoreError::SyncAborted { .. }))));
}

#[test]
fn a_downtime_is_no_stall_and_leaves_the_fresh_leases_of_a_restart_as_they_are() {
    let mut a = tracked();
    let (w1, _w2) = (a.join("w1", "worker", &[]), a.join("w2", "worker", &[]));
    // A barrier whose deadline passes while the server is down: its timer comes back overdue.
    a.arrive(w1, "r", agents(&["w1", "w2"]), 1_000, "");
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 30_000);
    let restarted = b.now;
    let overdue = b.engine.next_deadline().expect("the barrier's deadline");
    assert!(overdue < restarted, "the deadline ({overdue}) passed during the downtime");
    // A shell dates a stall from its earliest deadline; the engine has just started, so none began.
    assert_eq!(b.engine.stall_began(overdue), restarted);
    b.engine.handle(restarted, Input::ServerStalled { since: overdue });
    let lease = b.config().lease_ms();
    b.advance_to(restarted + lease - 1);
    assert_eq!(b.status("w1"), AgentStatus::Active, "resumable with its token until its lease ends");
    let refused = b.try_register(agent("w1", "worker", &[]));
    assert!(matches!(b.close_error(refused), CoreError::AlreadyRegistered { .. }));
    b.advance_to(restarted + lease);
    assert_eq!(b.status("w1"), AgentStatus::Lost, "the downtime did not stretch the lease");
    // A client that never received its token (the stream broke before) can register the id again.
    let again = b.try_register(agent("w1", "worker", &[]));
    assert!(!b.is_closed(again), "{:?}", b.log(again));
    assert!(!b.registered(again).resumed);
}

#[test]
fn pauses_the_emergency_stop_and_the_audit_log_survive_a_restart() {
    let mut a = tracked();
    let (w1, _w2) = (a.join("w1", "worker", &[]), a.join("w2", "worker", &[]));
    let t1 = a.token(w1);
    a.admin_done(pause("w1"));
    a.admin_done(emergency_stop("drill"));
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 100);
    assert_eq!(b.engine.control().audit().entries().count(), 2);
    assert_eq!(b.engine.control().emergency().map(|e| e.reason.as_str()), Some("drill"));
    let w1 = resume(&mut b, "w1", "worker", &t1);
    assert!(matches!(b.call_err(w1, update(json!({ "x": 1 }))), CoreError::Paused(_)));
    b.admin_done(lockstep_core::AdminAction::ResumeAll);
    assert_eq!(b.engine.control().audit().entries().last().map(|e| e.seq), Some(3), "numbering goes on");
    let mut c = restart(&mut b, &mut kept, 100);
    assert!(c.engine.control().emergency().is_none() && c.engine.control().paused_agents().next().is_none());
    let w1 = resume(&mut c, "w1", "worker", &t1);
    assert_eq!(c.call(w1, update(json!({ "x": 1 }))), Reply::StateVersion(1));
}

#[test]
fn context_keys_come_back_with_their_versions_history_and_lifetimes() {
    use lockstep_core::context::{Expect, Lifetime, Op, Write};
    let write = |key: &str, op: Op, lifetime: Lifetime| {
        Request::ContextWrite(Write { namespace: String::new(), key: key.into(), op, expect: Expect::Any, lifetime })
    };
    let mut h = tracked();
    let mut kept = Kept::default();
    let a = h.join("a", "r", &[]);
    for n in 0..20 {
        h.call(a, write("k", Op::Patch(json!({ "n": n }).to_string()), Lifetime::Permanent));
    }
    h.call(a, write("bound", Op::Set("1".into()), Lifetime::Lease));
    h.call(a, write("ttl", Op::Set("1".into()), Lifetime::TtlMs(60_000)));
    h.call(a, write("gone", Op::Set("1".into()), Lifetime::Permanent));
    let Reply::ContextWritten(deleted) = h.call(a, write("gone", Op::Delete, Lifetime::Permanent)) else { panic!() };
    let history = h.engine.context_history("", "k").unwrap();
    let mut h2 = restart(&mut h, &mut kept, 10);
    assert_eq!(h2.engine.context_history("", "k").unwrap(), history, "every retained version, as it was");
    assert_eq!(h2.engine.context_get("", "bound", None).unwrap().owner.as_deref(), Some("a"));
    assert!(h2.engine.context_get("", "gone", None).is_err());
    // The numbering goes on after the deletion, not from the highest key left.
    let b = h2.join("b", "r", &[]);
    let Reply::ContextWritten(next) = h2.call(b, write("new", Op::Set("1".into()), Lifetime::Permanent)) else {
        panic!()
    };
    assert!(next.version > deleted.version);
    // The TTL still runs, and the lease-bound key goes with its writer, who never came back.
    h2.advance_heartbeating(h2.now + 60_000, &[b]);
    assert!(h2.engine.context_get("", "ttl", None).is_err());
    assert!(h2.engine.context_get("", "bound", None).is_err());
}

#[test]
fn tasks_come_back_whole_and_a_held_one_is_handed_out_again_and_completed_once() {
    use lockstep_core::context::{Expect, Lifetime, Op, Write};
    use lockstep_core::task::{Submit, TaskState};
    let submit = |kind: &str, deps: &[&str]| {
        Request::SubmitTask(Box::new(Submit {
            kind: kind.into(),
            input_json: "{}".into(),
            context_keys: vec!["persona".into()],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..Submit::default()
        }))
    };
    let mut h = tracked();
    let mut kept = Kept::default();
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
    let Reply::TaskSubmitted(first) = h.call(planner, submit("fetch", &[])) else { panic!() };
    let Reply::TaskSubmitted(second) = h.call(planner, submit("parse", &[&first])) else { panic!() };
    let Reply::TaskClaimed(Some(a)) = h.call(runner, Request::ClaimTask { kinds: vec![] }) else { panic!() };
    h.call_ok(runner, Request::CompleteTask { id: a.id.to_string(), attempt: a.attempt, output_json: "1".into() });
    let Reply::TaskClaimed(Some(held)) = h.call(runner, Request::ClaimTask { kinds: vec![] }) else { panic!() };
    assert_eq!(&*held.id, second.as_str());
    let mut h2 = restart(&mut h, &mut kept, 10);
    let done = h2.engine.task_get("", &first).unwrap();
    assert_eq!((done.state, done.output.clone()), (TaskState::Completed, Some(json!(1))));
    let again = h2.engine.task_get("", &second).unwrap();
    assert_eq!(
        (again.state, again.failures, again.pinned[0].value.clone()),
        (TaskState::Ready, 0, json!({"tone": "terse"}))
    );
    // The old holder comes back: its attempt was superseded; the new one completes, once.
    let runner = h2.join("runner2", "runner", &[]);
    let err = h2
        .call_err(runner, Request::CompleteTask { id: second.clone(), attempt: held.attempt, output_json: "2".into() });
    assert!(matches!(err, CoreError::TaskNotHeld { .. }), "{err}");
    let Reply::TaskClaimed(Some(b)) = h2.call(runner, Request::ClaimTask { kinds: vec![] }) else { panic!() };
    assert_eq!((&*b.id, b.attempt), (second.as_str(), held.attempt + 1));
    h2.call_ok(runner, Request::CompleteTask { id: second.clone(), attempt: b.attempt, output_json: "2".into() });
    let err =
        h2.call_err(runner, Request::CompleteTask { id: second.clone(), attempt: b.attempt, output_json: "3".into() });
    assert!(matches!(err, CoreError::TaskFinished { .. }), "{err}");
    // Numbering goes on.
    let Reply::TaskSubmitted(third) = h2.call(runner, submit("more", &[])) else { panic!() };
    assert!(third != first && third != second, "{third}");
}

#[test]
fn recorded_traces_come_back_with_their_outputs_lineage_and_counts_and_evicted_ones_stay_gone() {
    use lockstep_core::trace::{Lineage, OutputKind, Record, TraceOutput};
    use lockstep_core::{SessionCall, TraceEvent, TraceInput};
    let mut h = Harness::new(Config {
        traces: lockstep_core::trace::TraceSettings { max_traces: 2, ..Default::default() },
        ..Config::default()
    });
    h.engine.track_changes();
    let mut kept = Kept::default();
    let a = h.join("a", "r", &[]);
    let call =
        SessionCall { namespace: String::new(), agent_id: "a".into(), resume_token: h.registered(a).resume_token };
    let record = |h: &mut Harness, origin: u64, input: &str, out: &str, parents: Vec<String>| -> String {
        let output = TraceOutput::inline(OutputKind::Json, bytes::Bytes::copy_from_slice(out.as_bytes()));
        let record = Record {
            tool: "tool".into(),
            input: input.into(),
            inline: output.inline.as_ref().map(|b| b.to_vec()),
            output: TraceOutput { inline: None, ..output },
            lineage: Lineage { parents, context: vec![] },
            started_at: None,
            duration_ms: 3,
        };
        h.engine
            .handle(h.now, Input::Trace(TraceInput::Record { origin, call: call.clone(), record: Box::new(record) }));
        h.pump();
        match h.trace_events.pop() {
            Some(TraceEvent::Recorded { trace, new: true, .. }) => trace.id,
            other => panic!("{other:?}"),
        }
    };
    // A shell serving hits from an index of its own learns of every change.
    h.engine.track_trace_index();
    assert!(h.engine.take_trace_index().is_empty(), "nothing stored yet");
    let first = record(&mut h, 1, "1", "[1]", vec![]);
    let second = record(&mut h, 2, "2", "[2]", vec![first.clone()]);
    // A third evicts the least recently used, the first.
    let third = record(&mut h, 3, "3", "[3]", vec![]);
    let changed = h.engine.take_trace_index();
    let mut gone: Vec<String> = changed.iter().filter(|c| c.2.is_none()).map(|c| c.1.to_string()).collect();
    let mut stored: Vec<String> = changed.iter().filter_map(|c| c.2.as_ref()).map(|t| t.id.clone()).collect();
    stored.sort();
    gone.sort();
    let mut expected = vec![second.clone(), third.clone()];
    expected.sort();
    assert_eq!((gone, stored), (vec![first.clone()], expected));
    assert!(h.engine.take_trace_index().is_empty(), "each change is taken once");
    // A hit the shell served counts as the engine's own.
    let ns = h.engine.trace_show("", &second).unwrap().namespace;
    h.engine.handle(h.now, Input::Trace(TraceInput::Used { namespace: ns, id: second.clone() }));
    h.pump();
    assert_eq!((h.engine.trace_stats().hits, h.engine.trace_stats().misses), (1, 0));
    let h2 = restart(&mut h, &mut kept, 10);
    let stats = h2.engine.trace_stats();
    assert_eq!((stats.traces, stats.bytes), (2, 6));
    assert!(h2.engine.trace_show("", &first).is_err(), "an evicted trace stays evicted");
    let t = h2.engine.trace_show("", &second).unwrap();
    assert_eq!((t.output.inline.as_deref(), t.duration_ms, t.producer.as_str()), (Some(&b"[2]"[..]), 3, "a"));
    assert_eq!(h2.engine.trace_lineage("", &second).unwrap().parents, vec![(first, false)]);
    assert!(h2.engine.trace_show("", &third).is_ok());
}

#[test]
fn tick_controllers_and_buffers_come_back_and_tick_numbering_goes_on_without_repeats() {
    use lockstep_core::latency::{BufferSpec, Estimator};
    use lockstep_core::ticker::{LatePolicy, TickerSpec};
    use lockstep_core::AdminAction;
    let mut h = tracked();
    let mut kept = Kept::default();
    let consumer = h.join("consumer", "analytics", &["ticks"]);
    let a = h.join("a", "feed", &[]);
    let (consumer_token, a_token) = (h.token(consumer), h.token(a));
    let ticker = TickerSpec {
        namespace: String::new(),
        id: "bars".into(),
        inputs: vec!["trades".into()],
        output: "ticks".into(),
        period_ms: 100,
        lateness_ms: 0,
        idle_timeout_ms: 60_000,
        max_skew_ms: 0,
        late: LatePolicy::NextTick,
        min_sources: 0,
    };
    h.admin_done(AdminAction::CreateTicker(ticker.clone()));
    let buffer = BufferSpec {
        namespace: String::new(),
        id: "x".into(),
        topic: "pose".into(),
        pointer: "/x".into(),
        cadence_ms: 100,
        grace_ms: 0,
        estimator: Estimator::Linear,
        output: "pose.x".into(),
        max_provisional: 3,
    };
    h.admin_done(AdminAction::CreateBuffer(buffer));
    let event = |t: u64| Request::PublishEvent {
        topic: "trades".into(),
        payload: json!({"t": t}).to_string().into(),
        content_type: String::new(),
        event_time_ms: t,
    };
    h.call_ok(a, event(150));
    h.call_ok(a, event(250));
    let ticks = |h: &Harness, conn| -> Vec<u64> {
        h.deliveries(conn)
            .iter()
            .map(|d| serde_json::from_slice::<serde_json::Value>(&d.message.payload).unwrap()["tick"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ticks(&h, consumer), [1]);

    let mut h = restart(&mut h, &mut kept, 1_000);
    assert_eq!(h.engine.list_tickers("").unwrap().len(), 1);
    assert_eq!(h.engine.list_buffers("").unwrap().len(), 1);
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().spec, ticker);
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.next_tick, 2);
    let mut request = agent("consumer", "analytics", &["ticks"]);
    request.resume_token = consumer_token;
    let consumer = h.try_register(request);
    let a = resume(&mut h, "a", "feed", &a_token);
    // An event of tick 1 after the restart is late: tick 1 is not emitted a second time.
    h.call_ok(a, event(120));
    h.call_ok(a, event(260));
    h.call_ok(a, event(330));
    assert_eq!(ticks(&h, consumer), [2]);
    let stats = h.engine.ticker_status("", "bars").unwrap().stats;
    assert_eq!(stats.late_next_tick, 1);

    // A removal is kept too.
    h.admin_done(AdminAction::RemoveStream { kind: StreamKind::Buffer, namespace: String::new(), id: "x".into() });
    let h = restart(&mut h, &mut kept, 1_000);
    assert!(h.engine.list_buffers("").unwrap().is_empty());
    assert_eq!(h.engine.ticker_status("", "bars").unwrap().stats.next_tick, 3);
}

/// A store-kept topic's history is replayed after a restart as before, and its numbering goes on
/// without repeats; a memory-kept topic is not kept.
#[test]
fn store_kept_topic_history_replays_after_a_restart_and_numbering_goes_on() {
    use lockstep_core::history::{Gap, Keep, Replay, RetainRule};
    let mut config = Config::default();
    config.history.retain = vec![
        RetainRule { pattern: "s.>".into(), keep: Keep::Store, max_messages: 3, ..RetainRule::default() },
        RetainRule { pattern: "m".into(), ..RetainRule::default() },
    ];
    let mut a = Harness::new(config);
    a.engine.track_changes();
    let p = a.join("pub", "feed", &[]);
    let publish = |h: &mut Harness, conn, topic: &str, i: u32| {
        h.call_ok(
            conn,
            Request::Publish { topic: topic.into(), payload: i.to_string().into(), content_type: String::new() },
        )
    };
    for i in 1..=4 {
        publish(&mut a, p, "s.x", i);
        publish(&mut a, p, "m", i);
    }
    let mut kept = Kept::default();
    let mut b = restart(&mut a, &mut kept, 1_000);
    let topics = b.engine.history_topics("").unwrap();
    assert_eq!(topics.len(), 1, "{topics:?}");
    assert_eq!(
        (topics[0].topic.as_str(), topics[0].messages, topics[0].first_seq, topics[0].last_seq),
        ("s.x", 3, 2, 4)
    );
    let p = b.join("pub2", "feed", &[]);
    publish(&mut b, p, "s.x", 5);
    let late = b.join("late", "audit", &[]);
    b.call_ok(late, Request::Subscribe { pattern: "s.>".into(), replay: Replay::Last(10) });
    let mut got = Vec::new();
    for f in b.frames(late) {
        match f {
            Frame::HistoryGap(g) => got.push(format!("{g:?}")),
            Frame::Deliveries(batch) => got.extend(
                batch.iter().map(|d| format!("{}#{}={:?}", d.message.topic, d.message.topic_seq, d.message.payload)),
            ),
            _ => {}
        }
    }
    let gap = Gap { topic: "s.x".into(), first: 1, last: 2 };
    assert_eq!(got, [format!("{gap:?}"), "s.x#3=b\"3\"".into(), "s.x#4=b\"4\"".into(), "s.x#5=b\"5\"".into()]);
    // Trimmed rows are gone from what is kept too.
    let kept_topic = &kept.history[&("default".to_owned(), "s.x".to_owned())];
    assert_eq!(kept_topic.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4]);
}

/// A rule set an operator replaced is kept with its version: after a restart it is in force, not
/// the configuration's; a refused replacement changes nothing kept.
#[test]
fn a_replaced_intake_rule_set_comes_back_with_its_version() {
    use lockstep_core::AdminAction;
    let mut h = tracked();
    let mut kept = Kept::default();
    let rules = json!({"routes": [{"topic": "in", "rules": [{"name": "all", "target": "out"}]}]});
    h.admin_done(AdminAction::ReplaceIntake { rules_json: rules.to_string() });
    let refused = AdminAction::ReplaceIntake { rules_json: json!({"routes": [{"topic": "in"}]}).to_string() };
    assert!(matches!(h.admin_err(refused), lockstep_core::CoreError::Invalid { .. }));
    assert_eq!(h.engine.intake_status().version, 2);
    let mut h = restart(&mut h, &mut kept, 1_000);
    let status = h.engine.intake_status();
    let expected: lockstep_core::intake::RuleSet = serde_json::from_value(rules).unwrap();
    assert_eq!((status.version, status.set), (2, expected));
    let sink = h.join("sink", "analytics", &["out"]);
    let a = h.join("a", "feed", &[]);
    h.call_ok(a, Request::Publish { topic: "in".into(), payload: "{}".into(), content_type: String::new() });
    let got = h.deliveries(sink);
    assert_eq!(got.len(), 1);
    let envelope = got[0].message.intake.as_deref().expect("categorised");
    assert_eq!((&*envelope.from, &*envelope.rule, envelope.seq), ("in", "in/all", 1));
}

#[test]
fn synced_systems_come_back_with_dependencies_events_incidents_and_freshness() {
    use lockstep_core::io::SystemsCall as C;
    use lockstep_core::systems::{Criticality, Report, Status, SystemSpec};
    let spec = |name: &str, cadence_ms| SystemSpec {
        name: name.into(),
        cadence_ms,
        criticality: Criticality::High,
        ..Default::default()
    };
    let report = |system: &str, status| {
        C::Report(Report {
            system: system.into(),
            reporter: "collector".into(),
            status: Some(status),
            ..Default::default()
        })
    };
    let mut config = Config::default();
    config.systems.events_per_system = 2;
    let mut h = Harness::new(config);
    h.engine.track_changes();
    let mut kept = Kept::default();
    h.systems("ops", C::Register(spec("src", 10_000))).unwrap();
    h.systems("ops", C::Register(spec("dash", 60_000))).unwrap();
    h.systems("ops", C::Register(spec("old", 60_000))).unwrap();
    h.systems("ops", C::Depend { upstream: "src".into(), downstream: "dash".into(), weight: 0.5 }).unwrap();
    h.systems("ops", C::Depend { upstream: "old".into(), downstream: "dash".into(), weight: 1.0 }).unwrap();
    h.systems("ops", C::Retire { name: "old".into() }).unwrap();
    for t in [1_000, 2_000, 3_000] {
        h.now = t;
        h.systems("c", report("src", Status::Ok)).unwrap();
    }
    h.now = 4_000;
    let failed = h.systems("c", report("dash", Status::Failed)).unwrap().changes[0].1.id;
    h.systems("alice", C::Ack { id: failed }).unwrap();
    let mut h = restart(&mut h, &mut kept, 1_000);
    let t = h.engine.systems();
    // The last two events of src, its last success, the edge that stayed, the open incident.
    let src = t.get("src").unwrap();
    assert_eq!(
        (src.last_success, src.events.iter().map(|e| e.at).collect::<Vec<_>>()),
        (Some(3_000), vec![2_000, 3_000])
    );
    assert!(t.get("old").unwrap().retired_at.is_some());
    assert_eq!(t.dependencies(), [("src".to_string(), "dash".to_string(), 0.5)]);
    let open = t.incidents_by_priority(&Config::default().systems);
    assert_eq!((open.len(), open[0].id, open[0].acked_by.as_str()), (1, failed, "alice"));
    assert_eq!(t.risk("dash"), (1.0, 1.0));
    // Freshness goes on from the kept last success: src is stale at 3 000 + 10 000.
    h.advance_to(12_999);
    assert!(!h.engine.systems().get("src").unwrap().stale);
    h.advance_to(13_000);
    let open = h.engine.systems().incidents_by_priority(&Config::default().systems);
    assert_eq!(open.len(), 2);
    assert!(open.iter().any(|i| i.system == "src" && i.id > failed), "ids go on: {open:?}");
    // Recovery after the restart resolves the incident opened before it.
    let done = h.systems("c", report("dash", Status::Ok)).unwrap();
    assert_eq!((done.changes[0].1.id, done.changes[0].1.duration(0)), (failed, 9_000));
}

#[test]
fn trends_come_back_whole_with_the_events_taken_after_they_were_last_kept() {
    use lockstep_core::io::SystemsCall as C;
    use lockstep_core::systems::{Measure, Report, Status, SystemSpec};
    let report = |latency_ms: f64| {
        C::Report(Report {
            system: "src".into(),
            reporter: "collector".into(),
            status: Some(Status::Ok),
            latency: Some(Measure::new(latency_ms, "ms")),
            ..Default::default()
        })
    };
    let mut config = Config::default();
    // Trends are kept every 2 events.
    config.systems.events_per_system = 4;
    let mut h = Harness::new(config);
    h.engine.track_changes();
    let mut kept = Kept::default();
    h.systems("ops", C::Register(SystemSpec { name: "src".into(), cadence_ms: 1_000, ..Default::default() })).unwrap();
    for (i, latency) in [10.0, 20.0, 30.0, 40.0, 50.0].into_iter().enumerate() {
        h.now = 100 * (i as u64 + 1);
        h.systems("c", report(latency)).unwrap();
    }
    // Stale from 1 500 (cadence after the last success) until a success at 2 500.
    h.advance_to(2_000);
    assert!(h.engine.systems().get("src").unwrap().stale);
    h.now = 2_500;
    h.systems("c", report(60.0)).unwrap();
    h.now = 2_600;
    h.systems("c", report(70.0)).unwrap();
    let at = h.engine.systems_now(3_000);
    let before = h.engine.systems().trend("src", at).unwrap();
    assert_eq!(before.hour.events, 7);
    assert!((before.hour.attainment.unwrap() - (1.0 - 1_000.0 / 3_000.0)).abs() < 1e-9, "{before:?}");
    let h = restart(&mut h, &mut kept, 1_000);
    // The 7th event came after the trend was last kept (at the 6th): folded in again.
    let after = h.engine.systems().trend("src", at).unwrap();
    assert_eq!(after, before);
    // Of 10, 20, ... 70 ms: p50 is the 4th value, p99 the 6th (rank ⌊q × (n − 1)⌋), within 2 %.
    let q = after.hour.latency_ms;
    let near = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() <= want * lockstep_core::systems::trend::ALPHA;
    assert!(near(q.p50, 40.0) && near(q.p99, 60.0), "{q:?}");
    assert_eq!(h.engine.systems().get("src").unwrap().trend.folded, 7);
}
