//! Whatever clients and operators send, in whatever order, the engine neither panics nor loses its
//! footing: random sessions of valid and invalid requests, undecodable messages, operators'
//! actions, disconnects and clock jumps, collectives and replica groups, on a manual clock, through the same turns as the server
//! (every turn ends with `ready`, and outputs and frames come only from the committed turn).
//!
//! The step vocabulary ([`step`]) and the run with its invariants ([`run`]) are also the engine's
//! fuzz target: `crates/sim` includes this file and drives the same generators from libFuzzer's
//! bytes (see docs/TESTING.md).

use bytes::Bytes;
use lockstep_core::collective::{
    CollectiveEvent, CollectiveJoin, CollectiveKind, CollectiveSpec, DType, Group, ReduceOp,
};
use lockstep_core::command::CommandReply;
use lockstep_core::history::{Replay, RetainRule};
use lockstep_core::{
    AdminAction, AgentQuery, Config, ConnId, Engine, Frame, GroupOutput, Input, Limits, Output, Participants,
    RegisterRequest, Request, WatchTarget,
};
use proptest::prelude::*;

/// Names drawn from a small pool so that requests collide, with some invalid ones mixed in.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "c", "d", "risk", "trader"]).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("bad name".to_owned()),
        1 => Just("é".repeat(70)),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "m.btc",
            "m.eth.t",
            "risk",
            "a.b.c",
            "",
            "a..b",
            "x.*",
            "x.>",
            " ",
            "lockstep.groups.>"
        ])
        .prop_map(String::from),
        "[a-c.*>]{0,8}",
    ]
}

fn participants() -> impl Strategy<Value = Participants> {
    prop_oneof![
        prop::collection::vec(name(), 0..5).prop_map(Participants::Agents),
        (0u32..6).prop_map(Participants::Count),
        name().prop_map(Participants::Role),
    ]
}

fn target() -> impl Strategy<Value = WatchTarget> {
    prop_oneof![name().prop_map(WatchTarget::Agent), name().prop_map(WatchTarget::Role), Just(WatchTarget::All)]
}

/// A context write of any kind, good or bad: keys that collide, values and patches that are not
/// JSON or too deep, CAS on any version, every lifetime, the server's own keys.
fn context_write() -> impl Strategy<Value = lockstep_core::ContextWrite> {
    use lockstep_core::context::{Expect, Lifetime, Op};
    let key = prop::sample::select(vec!["k", "k.a", "k.b", "j", "system.health", "bad key", "", "a..b"]);
    let json = prop::sample::select(vec![
        "{}",
        "{\"x\":1}",
        "{\"x\":{\"y\":null}}",
        "[1]",
        "null",
        "3",
        "{nope",
        "[[[[[[1]]]]]]",
    ]);
    let op = prop_oneof![
        json.clone().prop_map(|j| Op::Set(j.to_owned())),
        json.prop_map(|j| Op::Patch(j.to_owned())),
        Just(Op::Delete),
    ];
    let expect = prop_oneof![Just(Expect::Any), Just(Expect::Absent), (1u64..12).prop_map(Expect::Version)];
    let lifetime = prop_oneof![
        Just(Lifetime::Permanent),
        Just(Lifetime::Lease),
        prop_oneof![Just(0u64), 1u64..3_000, Just(1u64 << 40)].prop_map(Lifetime::TtlMs),
    ];
    (key, op, expect, lifetime, prop_oneof![Just(String::new()), name()]).prop_map(
        |(key, op, expect, lifetime, namespace)| lockstep_core::ContextWrite {
            namespace,
            key: key.to_owned(),
            op,
            expect,
            lifetime,
        },
    )
}

/// Task handoff's session requests, on a few ids so that they meet.
fn task_request() -> impl Strategy<Value = Request> {
    use lockstep_core::task::Submit;
    let id = || prop::sample::select(vec!["", "t1", "t2", "x", "bad id"]).prop_map(String::from);
    let kinds =
        || prop::collection::vec(prop::sample::select(vec!["tool", "other", "bad kind"]).prop_map(String::from), 0..2);
    let submit = (
        id(),
        prop::sample::select(vec!["tool", "other", "bad kind"]),
        prop::sample::select(vec!["{}", "1", "{bad"]),
        prop::collection::vec(prop::sample::select(vec!["k", "k.a", "nope"]).prop_map(String::from), 0..2),
        prop::collection::vec(id(), 0..3),
        prop_oneof![Just(0u64), 1u64..3_000, Just(u64::MAX)],
        prop_oneof![Just(0u32), 1u32..3, Just(u32::MAX)],
        prop::sample::select(vec!["", "worker", "nobody"]),
    )
        .prop_map(|(id, kind, input, context_keys, depends_on, timeout_ms, max_attempts, role)| {
            Request::SubmitTask(Box::new(Submit {
                id,
                kind: kind.into(),
                input_json: input.into(),
                context_keys,
                role: role.into(),
                timeout_ms,
                max_attempts,
                depends_on,
                ..Submit::default()
            }))
        });
    let report =
        (id(), 0u32..4, prop::sample::select(vec!["", "1", "{bad"]), 0u8..3).prop_map(|(id, attempt, text, which)| {
            match which {
                0 => Request::StartTask { id, attempt },
                1 => Request::CompleteTask { id, attempt, output_json: text.into() },
                _ => Request::FailTask { id, attempt, error: text.into() },
            }
        });
    prop_oneof![
        3 => submit,
        1 => (kinds(), prop_oneof![Just(0u32), 1u32..3, Just(u32::MAX)])
            .prop_map(|(kinds, max_in_flight)| Request::TaskWork { kinds, max_in_flight }),
        1 => Just(Request::StopTaskWork),
        2 => kinds().prop_map(|kinds| Request::ClaimTask { kinds }),
        3 => report,
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Heartbeat),
        context_write().prop_map(Request::ContextWrite),
        task_request(),
        (topic(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(topic, p)| Request::Publish {
            topic,
            payload: Bytes::from(p),
            content_type: String::new()
        }),
        prop_oneof![
            Just("{}".to_owned()),
            Just("{\"x\":1}".to_owned()),
            Just("{\"x\":{\"y\":null}}".to_owned()),
            Just("{\"x\":{\"z\":[1,2]}}".to_owned()),
            Just("[1]".to_owned()),
            Just("null".to_owned()),
            Just("{not json".to_owned()),
            Just(String::new()),
        ]
        .prop_map(|delta_json| Request::UpdateState { delta_json }),
        prop::sample::select(vec![
            lockstep_core::AgentStatus::Active,
            lockstep_core::AgentStatus::Busy,
            lockstep_core::AgentStatus::Paused,
            lockstep_core::AgentStatus::Lost,
        ])
        .prop_map(Request::SetStatus),
        target().prop_map(Request::Watch),
        target().prop_map(Request::Unwatch),
        (
            name(),
            participants(),
            prop_oneof![Just(0u64), 1u64..5_000, Just(u64::MAX)],
            any::<bool>(),
            prop::option::of(prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)])
        )
            .prop_map(|(sync_id, participants, timeout_ms, summary, quorum)| Request::Sync {
                sync_id,
                participants,
                timeout_ms,
                payload: Bytes::new(),
                summary,
                quorum,
            }),
        any::<u64>().prop_map(|up_to| Request::Ack { up_to }),
        Just(Request::Deregister),
        (0u64..20, prop::sample::select(vec!["", "x"]))
            .prop_map(|(seq, reason)| Request::DeliveryError { seq, reason: reason.into() }),
        (0u64..4, any::<bool>(), prop::sample::select(vec!["", "1", "{\"ok\":true}", "{bad"])).prop_map(
            |(command_id, ok, text)| Request::CommandResult {
                command_id,
                reply: if ok { CommandReply::Result(text.into()) } else { CommandReply::Error(text.into()) },
            }
        ),
        (topic(), prop::collection::vec(any::<u8>(), 0..16), prop_oneof![Just(0u64), 1u64..5_000, Just(u64::MAX)])
            .prop_map(|(topic, p, timeout_ms)| Request::AgentRequest {
                topic,
                payload: Bytes::from(p),
                content_type: String::new(),
                timeout_ms,
            }),
        name().prop_map(|group_id| Request::JoinGroup { group_id }),
        (
            prop::sample::select(vec!["m.>", "m.*", "risk", "all", "a..b", ""]),
            prop_oneof![
                Just(Replay::None),
                (0u64..8).prop_map(Replay::Last),
                (0u64..8).prop_map(Replay::SinceSeq),
                (0u64..2_000).prop_map(Replay::SinceTime),
            ],
        )
            .prop_map(|(pattern, replay)| Request::Subscribe { pattern: pattern.into(), replay }),
        prop::sample::select(vec!["m.>", "risk", "nope"]).prop_map(|p| Request::Unsubscribe { pattern: p.into() }),
        (name(), any::<bool>()).prop_map(|(group_id, forget_state)| Request::LeaveGroup { group_id, forget_state }),
        (0u64..6, prop::collection::vec(any::<u8>(), 0..16), prop::sample::select(vec!["", "cannot"])).prop_map(
            |(token, p, error)| Request::Respond {
                token,
                payload: Bytes::from(p),
                content_type: String::new(),
                error: error.into(),
            }
        ),
    ]
}

/// Every operator action, aimed at names that collide with the agents' and sync points'.
fn admin_action() -> impl Strategy<Value = AdminAction> {
    let ns = || prop_oneof![4 => Just(String::new()), 1 => name()];
    prop_oneof![
        (ns(), name()).prop_map(|(namespace, agent_id)| AdminAction::PauseAgent { namespace, agent_id }),
        (ns(), name()).prop_map(|(namespace, agent_id)| AdminAction::ResumeAgent { namespace, agent_id }),
        (ns(), name()).prop_map(|(namespace, agent_id)| AdminAction::RestartAgent { namespace, agent_id }),
        name().prop_map(|reason| AdminAction::EmergencyStop { reason }),
        Just(AdminAction::ResumeAll),
        (
            ns(),
            name(),
            name(),
            prop::sample::select(vec!["", "{}", "[1]", "{bad", "null"]),
            prop_oneof![Just(0u64), 1u64..5_000, Just(u64::MAX)]
        )
            .prop_map(|(namespace, agent_id, command, params, timeout_ms)| AdminAction::SendCommand {
                namespace,
                agent_id,
                command,
                params_json: params.into(),
                timeout_ms
            }),
        (ns(), name()).prop_map(|(namespace, sync_id)| AdminAction::ForceCompleteSync { namespace, sync_id }),
        ns().prop_map(|namespace| AdminAction::CleanupSyncPoints { namespace }),
        (ns(), prop::sample::select(vec!["", "t1", "t2", "bad id"]))
            .prop_map(|(namespace, id)| AdminAction::RetryTask { namespace, id: id.into() }),
    ]
}

/// One thing that happens to the engine.
#[derive(Clone, Debug)]
pub enum Step {
    Register {
        conn: u64,
        agent: String,
        role: String,
        interests: Vec<String>,
        token: bool,
    },
    Request {
        conn: u64,
        id: u64,
        request: Request,
    },
    /// The stream ends, after a goodbye (`deregister`) or without one.
    Disconnect {
        conn: u64,
        goodbye: bool,
    },
    WatchRegistry {
        conn: u64,
        ns: String,
    },
    Advance(u64),
    /// The server could not run for this long: time passes without timers firing, then it says so.
    Stall(u64),
    Drain {
        conn: u64,
        max: usize,
    },
    Malformed {
        conn: u64,
        id: u64,
    },
    Admin(AdminAction),
    /// A context write from a client outside any session.
    ContextWrite(lockstep_core::ContextWrite),
    /// A context watch on a stream of its own (`conn` + 200), resuming from `from`.
    WatchContext {
        conn: u64,
        selector: lockstep_core::Selector,
        from: u64,
    },
    /// Pull what waits for a context watch stream.
    DrainContext {
        conn: u64,
        max: usize,
    },
    Query {
        sync_id: String,
        which: u8,
    },
    /// A collective call from the agent `agent`, presenting the token of the session on `conn`.
    Collective {
        conn: u64,
        agent: String,
        id: String,
        group: Group,
        spec: CollectiveSpec,
        timeout_ms: u64,
    },
    /// The exchange reports a call's fault (by origin), or a collective's transfer done.
    CollectiveFault(u64),
    CollectiveTransferred {
        id: String,
        serial: u64,
    },
    /// A replica group call from the agent `agent`, presenting the token of the session on
    /// `conn`: a publish of `size` bytes, or (`size` None) a fetch.
    GroupCall {
        conn: u64,
        agent: String,
        group: String,
        size: Option<u64>,
    },
    /// The group store reports publish `origin`'s bytes complete (`ok`) or broken off.
    GroupPublished {
        origin: u64,
        ok: bool,
    },
}

fn group_step() -> impl Strategy<Value = Step> {
    let size = prop::option::of(prop_oneof![Just(0u64), 1u64..200, Just(u64::MAX)]);
    prop_oneof![
        3 => (1u64..8, name(), name(), size).prop_map(|(conn, agent, group, size)| Step::GroupCall { conn, agent, group, size }),
        2 => (1u64..20, any::<bool>()).prop_map(|(origin, ok)| Step::GroupPublished { origin, ok }),
    ]
}

fn collective_spec() -> impl Strategy<Value = CollectiveSpec> {
    let op = prop_oneof![Just(ReduceOp::Sum), Just(ReduceOp::Mean), Just(ReduceOp::Max)];
    let kind = prop_oneof![
        op.clone().prop_map(CollectiveKind::Allreduce),
        (0u32..4).prop_map(|root| CollectiveKind::Broadcast { root }),
        Just(CollectiveKind::Allgather),
        op.prop_map(CollectiveKind::ReduceScatter),
    ];
    let dtype = prop_oneof![Just(DType::F32), Just(DType::I64)];
    (kind, dtype, prop_oneof![Just(0u64), 1u64..4, Just(u64::MAX)]).prop_map(|(kind, dtype, length)| CollectiveSpec {
        kind,
        dtype,
        length,
    })
}

fn collective_step() -> impl Strategy<Value = Step> {
    let group = prop_oneof![prop::collection::vec(name(), 0..4).prop_map(Group::Agents), name().prop_map(Group::Role),];
    let timeout = prop_oneof![Just(0u64), 1u64..5_000, Just(u64::MAX)];
    prop_oneof![
        4 => (1u64..8, name(), prop_oneof![Just("x".to_owned()), name()], group, collective_spec(), timeout)
            .prop_map(|(conn, agent, id, group, spec, timeout_ms)| Step::Collective { conn, agent, id, group, spec, timeout_ms }),
        1 => (1u64..20).prop_map(Step::CollectiveFault),
        1 => (prop_oneof![Just("x".to_owned()), name()], 0u64..6).prop_map(|(id, serial)| Step::CollectiveTransferred { id, serial }),
    ]
}

/// Any step, valid or not, on names that collide.
pub fn step() -> impl Strategy<Value = Step> {
    let conn = 1u64..8;
    prop_oneof![
        3 => (conn.clone(), name(), name(), prop::collection::vec(topic(), 0..3), any::<bool>())
            .prop_map(|(conn, agent, role, interests, token)| Step::Register { conn, agent, role, interests, token }),
        8 => (conn.clone(), 0u64..4, request()).prop_map(|(conn, id, request)| Step::Request { conn, id, request }),
        1 => (conn.clone(), any::<bool>()).prop_map(|(conn, goodbye)| Step::Disconnect { conn, goodbye }),
        1 => (conn.clone(), prop_oneof![Just(String::new()), name()]).prop_map(|(conn, ns)| Step::WatchRegistry { conn, ns }),
        2 => prop_oneof![0u64..50, 1_000u64..10_000, Just(400_000u64)].prop_map(Step::Advance),
        1 => prop_oneof![1u64..1_000, 1_000u64..20_000].prop_map(Step::Stall),
        3 => (conn.clone(), 1usize..8).prop_map(|(conn, max)| Step::Drain { conn, max }),
        1 => (conn.clone(), 0u64..4).prop_map(|(conn, id)| Step::Malformed { conn, id }),
        2 => admin_action().prop_map(Step::Admin),
        1 => (name(), 0u8..4).prop_map(|(sync_id, which)| Step::Query { sync_id, which }),
        3 => collective_step(),
        2 => group_step(),
        2 => context_write().prop_map(Step::ContextWrite),
        1 => (
            conn.clone(),
            prop_oneof![
                prop::sample::select(vec!["k", "k.a", "system.health", "bad key"]).prop_map(|k| lockstep_core::Selector::Key(k.into())),
                prop::sample::select(vec!["", "k", "system", "a..b"]).prop_map(|p| lockstep_core::Selector::Prefix(p.into())),
            ],
            prop_oneof![Just(0u64), 1u64..20, Just(1u64 << 40)],
        )
            .prop_map(|(conn, selector, from)| Step::WatchContext { conn, selector, from }),
        2 => (conn.clone(), 1usize..4).prop_map(|(conn, max)| Step::DrainContext { conn, max }),
    ]
}

/// Small limits, so that a short run reaches them.
pub fn small_config() -> Config {
    // Retained topics (topic history): replays, trims by count and age, a topic limit.
    let history = lockstep_core::history::HistorySettings {
        retain: vec![
            RetainRule { pattern: "m.*".into(), max_messages: 3, max_age_ms: 500, max_topics: 1, ..Default::default() },
            RetainRule { pattern: "risk".into(), max_bytes: 40, ..Default::default() },
        ],
        ..Default::default()
    };
    Config {
        history,
        queue_capacity: 4,
        lost_retention_ms: 20_000,
        sync_retention_ms: 30_000,
        default_request_timeout_ms: 5_000,
        context: lockstep_core::ContextSettings {
            max_keys_per_namespace: 3,
            history_depth: 2,
            max_tombstones: 2,
            max_depth: 4,
            max_ttl_ms: 10_000,
            max_watchers: 3,
            ..Default::default()
        },
        limits: Limits {
            max_agents_per_namespace: 5,
            max_namespaces: 3,
            max_open_sync_points: 3,
            max_retained_sync_points: 2,
            max_watches: 2,
            max_registry_backlog: 8,
            max_control_backlog: 8,
            max_sync_timeout_ms: 10_000,
            max_request_timeout_ms: 10_000,
            max_pending_requests_per_agent: 2,
            max_pending_requests: 4,
            max_groups: 2,
            max_group_members: 3,
            max_group_state_bytes: 100,
            max_group_state_total_bytes: 150,
            ..Limits::default()
        },
        ..Config::default()
    }
}

proptest! {
    // 300 cases by default; PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_input_sequence_panics_the_engine(steps in prop::collection::vec(step(), 1..120)) {
        run(steps)?;
    }
}

/// Applies `steps` to a new engine on the manual clock, checking the engine's bounds after every
/// step and, once time has run far past every deadline, that everyone asking was answered once and
/// that nothing is left behind.
pub fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut engine = Engine::new(small_config());
    engine.track_changes();
    let mut now = 0u64;
    let mut closed = std::collections::HashSet::new();
    // Operators' actions asked (by origin) and the answers each got.
    let mut asked = 0u64;
    let mut answers: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut watches = 0;
    // Collective calls made (their origins are 1..=calls) and how many outcomes each got.
    let mut calls = 0u64;
    let mut told: std::collections::BTreeMap<u64, usize> = Default::default();
    // Replica group calls and reports made, and the group store's answers (one each, at once).
    let (mut group_calls, mut group_inputs, mut group_answers) = (0u64, 0usize, 0usize);
    // Context writes from clients (origins 1..=writes) and the answers each got.
    let mut writes = 0u64;
    let mut written: std::collections::BTreeMap<u64, usize> = Default::default();
    let mut context_watches = std::collections::HashSet::new();
    for s in steps {
        match s {
            Step::Register { conn, agent, role, interests, token } => {
                let request = RegisterRequest {
                    agent_id: agent,
                    role,
                    interests,
                    resume_token: if token { format!("t{conn}") } else { String::new() },
                    ..Default::default()
                };
                // Sessions 0-1, 2-3, ... share a client connection (0 is shared with nothing).
                let (conn, new_token, connection) = (ConnId(conn), format!("t{conn}"), conn / 2);
                engine.handle(now, Input::Register { conn, request, new_token, connection });
            }
            Step::Request { conn, id, request } => {
                engine.handle(now, Input::Request { conn: ConnId(conn), request_id: id, request })
            }
            Step::Disconnect { conn, goodbye } => {
                if goodbye {
                    let request = Request::Deregister;
                    engine.handle(now, Input::Request { conn: ConnId(conn), request_id: 0, request });
                }
                engine.handle(now, Input::Disconnected { conn: ConnId(conn) });
            }
            Step::WatchRegistry { conn, ns } => {
                watches += 1;
                engine.handle(now, Input::WatchRegistry { conn: ConnId(conn + 100), namespace: ns });
            }
            Step::Advance(ms) => {
                now += ms;
                while let Some(d) = engine.next_deadline().filter(|d| *d <= now) {
                    engine.handle_timeout(d);
                }
            }
            Step::Stall(ms) => {
                let since = engine.next_deadline().unwrap_or(now).min(now);
                now += ms;
                engine.handle(now, Input::ServerStalled { since });
            }
            Step::Drain { conn, max } => {
                let mut out = engine.ready().committed();
                while let Some(frame) = out.next_frame(ConnId(conn), max) {
                    if let Frame::Deliveries(batch) = &frame {
                        prop_assert!(batch.len() <= max);
                        for w in batch.windows(2) {
                            prop_assert_eq!(w[1].seq, w[0].seq + 1, "a batch is consecutive");
                        }
                    }
                }
            }
            Step::Malformed { conn, id } => {
                engine.handle(now, Input::Malformed { conn: ConnId(conn), request_id: id, reason: "garbage".into() });
            }
            Step::Collective { conn, agent, id, group, spec, timeout_ms } => {
                calls += 1;
                let join = CollectiveJoin {
                    namespace: String::new(),
                    agent_id: agent,
                    resume_token: format!("t{conn}"),
                    collective_id: id,
                    group,
                    spec,
                    timeout_ms,
                    state_checksum: None,
                };
                engine.handle(now, Input::CollectiveJoin { origin: calls, join });
            }
            Step::GroupCall { conn, agent, group, size } => {
                group_calls += 1;
                group_inputs += 1;
                let call = lockstep_core::GroupCall {
                    namespace: String::new(),
                    agent_id: agent,
                    resume_token: format!("t{conn}"),
                    group_id: group,
                };
                let origin = group_calls;
                engine.handle(
                    now,
                    match size {
                        Some(size) => Input::GroupPublish { origin, call, size },
                        None => Input::GroupFetch { origin, call },
                    },
                );
            }
            Step::GroupPublished { origin, ok } => {
                group_inputs += 1;
                let result = if ok { Ok("c".to_owned()) } else { Err("broke".to_owned()) };
                engine.handle(now, Input::GroupPublished { origin, result });
            }
            Step::CollectiveFault(origin) => {
                engine.handle(now, Input::CollectiveFault { origin, reason: "broke".into() });
            }
            Step::CollectiveTransferred { id, serial } => {
                let input = Input::CollectiveTransferred { namespace: "default".into(), collective_id: id, serial };
                engine.handle(now, input);
            }
            Step::ContextWrite(write) => {
                writes += 1;
                engine.handle(now, Input::ContextWrite { origin: writes, writer: "cli".into(), write });
            }
            Step::WatchContext { conn, selector, from } => {
                if context_watches.insert(conn) {
                    let input =
                        Input::WatchContext { conn: ConnId(conn + 200), namespace: String::new(), selector, from };
                    engine.handle(now, input);
                }
            }
            Step::DrainContext { conn, max } => {
                let mut out = engine.ready().committed();
                while let Some(frame) = out.next_frame(ConnId(conn + 200), max) {
                    let Frame::Context(batch) = frame else { panic!("a context watch got {frame:?}") };
                    prop_assert!(batch.changes.len() <= max);
                }
            }
            Step::Admin(action) => {
                asked += 1;
                engine.handle(now, Input::Admin { origin: asked, actor: "ops".into(), action });
            }
            Step::Query { sync_id, which } => {
                let _ = match which {
                    0 => engine.diagnose_sync(now, "", &sync_id).map(|_| ()),
                    1 => engine.sync_status("default", &sync_id).map(|_| ()),
                    2 => engine.get_state("", &sync_id).map(|_| ()),
                    _ => Ok(engine.health(now)).map(|_| ()),
                };
            }
        }
        let mut out = engine.ready().committed();
        while let Some(output) = out.poll_output() {
            match output {
                Output::Close(conn, _) => {
                    closed.insert(conn);
                }
                Output::AdminDone { origin, .. } => *answers.entry(origin).or_default() += 1,
                Output::Collective(CollectiveEvent::Refused { origin, .. }) => *told.entry(origin).or_default() += 1,
                Output::Collective(CollectiveEvent::Finished { origins, .. }) => {
                    for o in origins {
                        *told.entry(o).or_default() += 1;
                    }
                }
                // Forgetting a group's state (a member leaving with `forget_state`) answers no call.
                Output::Group(GroupOutput::Forgotten { .. }) => {}
                Output::Group(_) => group_answers += 1,
                Output::ContextDone { origin, .. } => *written.entry(origin).or_default() += 1,
                // No step makes round calls (crates/core/tests/rounds.rs has their tests).
                Output::RoundDone { .. } => prop_assert!(false, "no round call was made"),
                // Nor sync monitor calls (crates/core/tests/systems.rs has their tests).
                Output::SystemsDone { .. } => prop_assert!(false, "no sync monitor call was made"),
                // This fuzz sends no trace calls (crates/core/src/trace.rs has their tests).
                Output::Trace(_) | Output::Ready(_) | Output::Collective(CollectiveEvent::Start { .. }) => {}
            }
        }
        // The engine's own bookkeeping stays within its limits.
        let agents = engine.list_agents("", &AgentQuery::default()).unwrap();
        prop_assert!(agents.len() <= 5);
        for a in &agents {
            prop_assert!(a.queue_depth <= 4);
        }
        prop_assert!(engine.list_sync_points("").unwrap().len() <= 3 + 2);
        prop_assert!(engine.info().pending_requests <= 4);
        prop_assert_eq!(group_answers, group_inputs, "every group call and report is answered at once");
        let groups = engine.list_groups("").unwrap();
        prop_assert!(groups.len() <= 2);
        prop_assert!(groups.iter().all(|g| g.members.len() <= 3));
        // A task is held exactly when it has a holder, completed exactly when it has an output.
        for t in engine.task_list("", None, None).unwrap() {
            use lockstep_core::task::TaskState as S;
            prop_assert_eq!(matches!(t.state, S::Assigned | S::Running), t.holder.is_some(), "{:?}", t);
            prop_assert_eq!(t.state == S::Completed, t.output.is_some(), "{:?}", t);
            prop_assert!(t.failures <= t.max_attempts, "{:?}", t);
        }
        let held: u64 = groups.iter().filter_map(|g| g.state.as_ref()).map(|s| s.size).sum();
        prop_assert!(held <= 150, "{} bytes of group state held", held);
    }
    // However the run went, every operator is answered exactly once: commands still waiting end
    // by their timeout or their agent's lease.
    // The first ten minutes fire every timer at its own instant; the rest of two days goes by in
    // steps of ten minutes, each timer then found up to a step late (as after a stall). Firing
    // every health sample of two days one by one was most of a run's time and checked no more.
    const MINUTE: u64 = 60 * 1000;
    let exact_until = now + 10 * MINUTE;
    while let Some(d) = engine.next_deadline().filter(|d| *d <= exact_until) {
        engine.handle_timeout(d);
    }
    now = exact_until;
    for _ in 0..(2 * 24 * 60 - 10) / 10 {
        now += 10 * MINUTE;
        while engine.next_deadline().is_some_and(|d| d <= now) {
            engine.handle_timeout(now);
        }
    }
    let mut out = engine.ready().committed();
    while let Some(output) = out.poll_output() {
        match output {
            Output::AdminDone { origin, .. } => *answers.entry(origin).or_default() += 1,
            Output::Collective(CollectiveEvent::Refused { origin, .. }) => *told.entry(origin).or_default() += 1,
            Output::Collective(CollectiveEvent::Finished { origins, .. }) => {
                for o in origins {
                    *told.entry(o).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let expected: std::collections::BTreeMap<u64, usize> = (1..=asked).map(|o| (o, 1)).collect();
    prop_assert_eq!(answers, expected, "each operator action is answered once");
    let expected: std::collections::BTreeMap<u64, usize> = (1..=calls).map(|o| (o, 1)).collect();
    prop_assert_eq!(told, expected, "each collective call is told its outcome once");
    let expected: std::collections::BTreeMap<u64, usize> = (1..=writes).map(|o| (o, 1)).collect();
    prop_assert_eq!(written, expected, "each context write is answered once");
    // Every writer is gone: no key is bound to a lease any more, and every TTL has run out.
    for key in engine.context_list("", "").unwrap() {
        prop_assert!(key.owner.is_none() && key.expires_at.is_none(), "{key:?} outlived its lifetime");
    }
    // Everything is gone by now (agents lost and forgotten, points past their retention): so
    // are their timers and namespaces. Only the health sample's timer remains, and only
    // namespaces a registry watch still holds.
    let info = engine.info();
    prop_assert_eq!(info.agents, 0);
    prop_assert_eq!(info.timers, 1, "timers left behind");
    prop_assert_eq!(info.pending_requests, 0, "requests left behind");
    // A replica group's state outlives its members, and keeps its namespace.
    let held = usize::from(!engine.list_groups("").unwrap().is_empty());
    prop_assert!(info.namespaces <= watches + held, "{} namespaces, {} watches", info.namespaces, watches);
    Ok(())
}
