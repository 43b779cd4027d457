//! Collectives on a manual clock: who takes part and in which rank, the deadline naming who never
//! joined, a lost member failing everyone at once, faults and completions reported by the exchange,
//! one outcome per collective whatever happens; and, as properties, that a reduction done chunk by
//! chunk (as the server's exchange does it) equals the reference reduction in the documented order.

mod harness;

use harness::Harness;
use lockstep_core::collective::{
    combine, finish, CollectiveEvent, CollectiveJoin, CollectiveKind, CollectiveSpec, DType, Group, ReduceOp,
};
use lockstep_core::{Config, ConnId, CoreError, Input, Reason};
use proptest::prelude::*;

fn spec() -> CollectiveSpec {
    CollectiveSpec { kind: CollectiveKind::Allreduce(ReduceOp::Sum), dtype: DType::F32, length: 16 }
}

fn call(h: &Harness, conn: ConnId, id: &str, group: Group, timeout_ms: u64) -> CollectiveJoin {
    let r = h.registered(conn);
    CollectiveJoin {
        namespace: r.namespace,
        agent_id: r.agent_id,
        resume_token: r.resume_token,
        collective_id: id.into(),
        group,
        spec: spec(),
        timeout_ms,
        state_checksum: None,
    }
}

fn abc() -> Group {
    Group::Agents(vec!["a".into(), "b".into(), "c".into()])
}

fn join(h: &mut Harness, origin: u64, join: CollectiveJoin) {
    h.engine.handle(h.now, Input::CollectiveJoin { origin, join });
    h.pump();
}

/// `conn`'s agent calls collective `id` (call `origin`).
fn enter(h: &mut Harness, origin: u64, conn: ConnId, id: &str, group: Group, timeout_ms: u64) {
    let c = call(h, conn, id, group, timeout_ms);
    join(h, origin, c);
}

/// The events since the last look.
fn events(h: &mut Harness) -> Vec<CollectiveEvent> {
    std::mem::take(&mut h.collective_events)
}

fn failure(events: &[CollectiveEvent]) -> (Vec<u64>, CoreError) {
    match events {
        [CollectiveEvent::Finished { origins, result: Err(e), .. }] => (origins.clone(), e.clone()),
        other => panic!("expected one failure, got {other:?}"),
    }
}

#[test]
fn it_starts_when_the_last_member_joins_with_ranks_in_list_order() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "w", &[])).collect();
    let group = Group::Agents(vec!["c".into(), "a".into(), "b".into()]);
    enter(&mut h, 1, conns[0], "x", group.clone(), 0);
    enter(&mut h, 2, conns[1], "x", group.clone(), 0);
    assert!(events(&mut h).is_empty());
    let listed = h.engine.list_collectives("").unwrap();
    assert_eq!(listed[0].missing, vec!["c"]);
    enter(&mut h, 3, conns[2], "x", group, 0);
    match events(&mut h).as_slice() {
        [CollectiveEvent::Start { members, .. }] => {
            let got: Vec<(u32, &str, u64)> = members.iter().map(|m| (m.rank, &*m.agent, m.origin)).collect();
            assert_eq!(got, vec![(0, "c", 3), (1, "a", 1), (2, "b", 2)]);
        }
        other => panic!("expected a start, got {other:?}"),
    }
}

#[test]
fn a_role_group_is_its_live_members_ranked_by_id() {
    let mut h = Harness::new(Config::default());
    let z = h.join("z", "worker", &[]);
    let m = h.join("m", "worker", &[]);
    let a = h.join("a", "worker", &[]);
    h.join("other", "observer", &[]);
    let role = Group::Role("worker".into());
    for (origin, conn) in [(1, z), (2, m), (3, a)] {
        enter(&mut h, origin, conn, "r", role.clone(), 0);
    }
    match events(&mut h).as_slice() {
        [CollectiveEvent::Start { members, .. }] => {
            let ids: Vec<&str> = members.iter().map(|m| &*m.agent).collect();
            assert_eq!(ids, vec!["a", "m", "z"]);
        }
        other => panic!("expected a start, got {other:?}"),
    }
}

#[test]
fn the_deadline_names_who_never_joined() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "w", &[])).collect();
    let t0 = h.now;
    enter(&mut h, 1, conns[0], "x", abc(), 1000);
    enter(&mut h, 2, conns[1], "x", abc(), 1000);
    h.advance_heartbeating(t0 + 999, &conns);
    assert!(events(&mut h).is_empty(), "not before the deadline");
    h.advance_heartbeating(t0 + 1000, &conns);
    let (origins, e) = failure(&events(&mut h));
    assert_eq!(origins, vec![1, 2]);
    assert_eq!(e.reason(), Reason::CollectiveTimeout);
    assert_eq!(e.missing_agents(), ["c"]);
    assert!(h.engine.list_collectives("").unwrap().is_empty(), "nothing is left behind");
}

#[test]
fn a_member_that_loses_its_lease_fails_everyone_at_once() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "w", &[])).collect();
    let t0 = h.now;
    enter(&mut h, 1, conns[0], "x", abc(), 600_000);
    enter(&mut h, 2, conns[1], "x", abc(), 600_000);
    // a and b keep heartbeating, c does not: its lease runs out long before the deadline.
    let lease = h.config().lease_ms();
    h.advance_heartbeating(t0 + lease + h.config().heartbeat_interval_ms, &conns[..2]);
    let (origins, e) = failure(&events(&mut h));
    assert_eq!(origins, vec![1, 2]);
    assert_eq!((e.reason(), e.agent()), (Reason::CollectiveAborted, Some("c")));
    assert!(e.to_string().contains("lost its lease"), "{e}");
}

#[test]
fn faults_and_completions_from_the_exchange_end_it_once() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "w", &[])).collect();
    for (i, conn) in conns.iter().enumerate() {
        enter(&mut h, 10 + i as u64, *conn, "x", abc(), 0);
    }
    let serial = match events(&mut h).as_slice() {
        [CollectiveEvent::Start { serial, .. }] => *serial,
        other => panic!("{other:?}"),
    };
    h.engine.handle(h.now, Input::CollectiveFault { origin: 11, reason: "broke off its transfer".into() });
    h.pump();
    let (origins, e) = failure(&events(&mut h));
    assert_eq!(origins, vec![10, 11, 12]);
    assert_eq!(e.agent(), Some("b"));
    // Late reports change nothing: the outcome was given.
    h.engine.handle(h.now, Input::CollectiveFault { origin: 12, reason: "went away".into() });
    let done = Input::CollectiveTransferred { namespace: "default".into(), collective_id: "x".into(), serial };
    h.engine.handle(h.now, done);
    h.pump();
    assert!(events(&mut h).is_empty());
    // A new round of the same id is a new collective, and completes.
    for (i, conn) in conns.iter().enumerate() {
        enter(&mut h, 20 + i as u64, *conn, "x", abc(), 0);
    }
    let serial2 = match events(&mut h).as_slice() {
        [CollectiveEvent::Start { serial, .. }] => *serial,
        other => panic!("{other:?}"),
    };
    assert_ne!(serial2, serial);
    let stale = Input::CollectiveTransferred { namespace: "default".into(), collective_id: "x".into(), serial };
    h.engine.handle(h.now, stale);
    h.pump();
    assert!(events(&mut h).is_empty(), "a report about the earlier round is not this round's");
    let done = Input::CollectiveTransferred { namespace: "default".into(), collective_id: "x".into(), serial: serial2 };
    h.engine.handle(h.now, done);
    h.pump();
    assert!(matches!(events(&mut h).as_slice(), [CollectiveEvent::Finished { result: Ok(()), .. }]));
    let counters = h.engine.info().counters;
    assert_eq!((counters.collectives_completed, counters.collectives_failed), (1, 1), "each round counted once");
}

#[test]
fn bad_calls_are_refused_alone_and_a_mismatch_fails_everyone() {
    let mut h = Harness::new(Config::default());
    let conns: Vec<ConnId> = ["a", "b", "c", "x"].iter().map(|id| h.join(id, "w", &[])).collect();
    let mut stolen = call(&h, conns[0], "x", abc(), 0);
    stolen.resume_token = "not-the-token".into();
    join(&mut h, 1, stolen);
    assert!(matches!(events(&mut h).as_slice(), [CollectiveEvent::Refused { origin: 1, .. }]));
    enter(&mut h, 2, conns[3], "x", abc(), 0);
    match events(&mut h).as_slice() {
        [CollectiveEvent::Refused { origin: 2, error }] => assert_eq!(error.reason(), Reason::NotCollectiveMember),
        other => panic!("{other:?}"),
    }
    assert!(h.engine.list_collectives("").unwrap().is_empty(), "an outsider's call leaves nothing behind");
    enter(&mut h, 3, conns[0], "x", abc(), 0);
    let mut other = call(&h, conns[1], "x", abc(), 0);
    other.spec.dtype = DType::F64;
    join(&mut h, 4, other);
    let got = events(&mut h);
    // The caller that differs is refused with the error; the others get it as the outcome.
    assert!(matches!(&got[0], CollectiveEvent::Finished { origins, result: Err(e), .. }
        if origins == &vec![3] && e.reason() == Reason::CollectiveMismatch && e.agent() == Some("b")));
    assert!(matches!(&got[1], CollectiveEvent::Refused { origin: 4, error } if error.agent() == Some("b")));
}

// -------------------------------------------------------------------------------------------------
// Properties

/// The reference: element by element, `((x0 ∘ x1) ∘ x2) ∘ ...`, then `mean` divides by n.
fn reference_f32(op: ReduceOp, arrays: &[Vec<f32>]) -> Vec<f32> {
    let n = arrays.len();
    (0..arrays[0].len())
        .map(|k| {
            let mut acc = arrays[0][k];
            for a in &arrays[1..] {
                let y = a[k];
                acc = match op {
                    ReduceOp::Sum | ReduceOp::Mean => acc + y,
                    ReduceOp::Product => acc * y,
                    ReduceOp::Min => {
                        if acc.is_nan() || y.is_nan() {
                            if acc.is_nan() {
                                acc
                            } else {
                                y
                            }
                        } else {
                            acc.min(y)
                        }
                    }
                    ReduceOp::Max => {
                        if acc.is_nan() || y.is_nan() {
                            if acc.is_nan() {
                                acc
                            } else {
                                y
                            }
                        } else {
                            acc.max(y)
                        }
                    }
                };
            }
            if op == ReduceOp::Mean {
                acc / n as f32
            } else {
                acc
            }
        })
        .collect()
}

fn reference_i64(op: ReduceOp, arrays: &[Vec<i64>]) -> Vec<i64> {
    let n = arrays.len() as i64;
    (0..arrays[0].len())
        .map(|k| {
            let mut acc = arrays[0][k];
            for a in &arrays[1..] {
                acc = match op {
                    ReduceOp::Sum | ReduceOp::Mean => acc.wrapping_add(a[k]),
                    ReduceOp::Product => acc.wrapping_mul(a[k]),
                    ReduceOp::Min => acc.min(a[k]),
                    ReduceOp::Max => acc.max(a[k]),
                };
            }
            if op == ReduceOp::Mean {
                acc / n
            } else {
                acc
            }
        })
        .collect()
}

/// Reduces as the exchange does: chunk by chunk (`chunk` elements), each chunk folded in rank
/// order with [`combine`] and finished with [`finish`].
fn chunked(dtype: DType, op: ReduceOp, arrays: &[Vec<u8>], chunk: usize) -> Vec<u8> {
    let bytes = chunk * dtype.size();
    let mut out = Vec::new();
    let len = arrays[0].len();
    let mut at = 0;
    while at < len {
        let end = (at + bytes).min(len);
        let mut acc = arrays[0][at..end].to_vec();
        for a in &arrays[1..] {
            combine(dtype, op, &mut acc, &a[at..end]);
        }
        finish(dtype, op, &mut acc, arrays.len());
        out.extend_from_slice(&acc);
        at = end;
    }
    out
}

fn op() -> impl Strategy<Value = ReduceOp> {
    prop_oneof![
        Just(ReduceOp::Sum),
        Just(ReduceOp::Mean),
        Just(ReduceOp::Min),
        Just(ReduceOp::Max),
        Just(ReduceOp::Product)
    ]
}

fn f32_value() -> impl Strategy<Value = f32> {
    prop_oneof![8 => -1e6f32..1e6f32, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY), 1 => Just(-0.0f32), 1 => Just(1e30f32)]
}

proptest! {
    #[test]
    fn an_f32_allreduce_equals_the_reference_in_rank_order(
        op in op(),
        (n, len) in (1usize..6, 1usize..64),
        chunk in 1usize..20,
        seed in proptest::collection::vec(f32_value(), 6 * 64),
    ) {
        let arrays: Vec<Vec<f32>> = (0..n).map(|r| seed[r * len..(r + 1) * len].to_vec()).collect();
        let encoded: Vec<Vec<u8>> = arrays.iter().map(|a| a.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let got = chunked(DType::F32, op, &encoded, chunk);
        let want = reference_f32(op, &arrays);
        // Bitwise, except that a NaN's sign and payload are the processor's choice (the server
        // computes each element once, so every member still gets the same bytes).
        for (k, (g, w)) in got.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).zip(want).enumerate() {
            prop_assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "element {}: {} vs {}", k, g, w);
        }
    }

    #[test]
    fn an_i64_allreduce_equals_the_reference_in_rank_order(
        op in op(),
        arrays in (1usize..6, 1usize..40).prop_flat_map(|(n, len)| proptest::collection::vec(proptest::collection::vec(any::<i64>(), len), n)),
        chunk in 1usize..20,
    ) {
        let encoded: Vec<Vec<u8>> = arrays.iter().map(|a| a.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let got = chunked(DType::I64, op, &encoded, chunk);
        let want: Vec<u8> = reference_i64(op, &arrays).iter().flat_map(|x| x.to_le_bytes()).collect();
        prop_assert_eq!(got, want);
    }

    /// Whatever order members join, fail, leave or time out in, a collective ends at most once,
    /// and every call that joined it is told the same outcome exactly once.
    #[test]
    fn a_collective_ends_once_for_everyone(steps in proptest::collection::vec((0u8..5, 0usize..3), 1..20)) {
        let mut h = Harness::new(Config::default());
        let conns: Vec<ConnId> = ["a", "b", "c"].iter().map(|id| h.join(id, "w", &[])).collect();
        let mut next_origin = 1;
        for (what, who) in steps {
            match what {
                0 | 1 => {
                    enter(&mut h, next_origin, conns[who], "p", abc(), 5_000);
                    next_origin += 1;
                }
                2 => {
                    h.engine.handle(h.now, Input::CollectiveFault { origin: (who as u64) + 1, reason: "broke".into() });
                    h.pump();
                }
                3 => {
                    let serial = h.collective_events.iter().find_map(|e| match e {
                        CollectiveEvent::Start { serial, .. } => Some(*serial),
                        _ => None,
                    });
                    if let Some(serial) = serial {
                        let done = Input::CollectiveTransferred { namespace: "default".into(), collective_id: "p".into(), serial };
                        h.engine.handle(h.now, done);
                        h.pump();
                    }
                }
                _ => {
                    let t = h.now + 2_000;
                    h.advance_heartbeating(t, &conns);
                }
            }
        }
        let mut told = std::collections::HashMap::<u64, usize>::new();
        let mut finished = std::collections::HashSet::new();
        for e in &h.collective_events {
            match e {
                CollectiveEvent::Finished { serial, origins, .. } => {
                    prop_assert!(finished.insert(*serial), "serial {} finished twice", serial);
                    for o in origins {
                        *told.entry(*o).or_default() += 1;
                    }
                }
                CollectiveEvent::Refused { origin, .. } => *told.entry(*origin).or_default() += 1,
                CollectiveEvent::Start { .. } => {}
            }
        }
        prop_assert!(told.values().all(|n| *n == 1), "a call told twice: {:?}", told);
    }
}
