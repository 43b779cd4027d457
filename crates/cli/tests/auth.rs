//! End-to-end: authentication and permissions against a real `lockstep serve --token-secret-file`.
//!
//! * The isolation matrix: every RPC of every service (agents', shared context, tasks, traces,
//!   rounds, streams, history, intake, sync monitor, operators') is called as every kind of
//!   principal — no token, a token signed with another secret, an agent of namespace `a`, an agent
//!   of `a` limited to a few topics and bound to another id, an operator token, the server's admin
//!   token, a principal of every namespace without operators' rights — against namespaces `a` and
//!   `b`, and each outcome is the one the table says: allowed (whatever the call then answers),
//!   refused as unauthenticated, or denied with the reason naming what.
//! * Inside a session: publishes, subscriptions and watches are held to the token's patterns and
//!   state permission, refused with their reason while the session goes on; what is denied is not
//!   delivered.
//! * Tokens are minted with `lockstep token create`, as an operator would.

mod support;

use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use lockstep_client::{AgentOptions, Client, Error, WatchTarget};
use lockstep_core::Reason;
use lockstep_proto::v1;
use support::{opts, ScratchDir, Server};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const SECRET: &str = "an isolation-test secret of more than 32 bytes";
const ROOT: &str = "the-admin-token";
/// The longest any one call may take on a busy machine (calls answer at once).
const CALL_WITHIN: Duration = Duration::from_secs(20);

/// A token made by `lockstep token create` with `flags`, signed with the secret in `secret_file`.
fn mint(secret_file: &Path, flags: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["token", "create", "--secret-file", secret_file.to_str().unwrap()])
        .args(flags)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The kinds of caller.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    Forged,
    AgentA,
    LimitedA,
    Operator,
    Root,
    Cross,
}

const EVERYONE: [Who; 7] = [Who::Nobody, Who::Forged, Who::AgentA, Who::LimitedA, Who::Operator, Who::Root, Who::Cross];

/// The tokens of a server started with `secret_file` (and `ROOT` as its admin token).
fn tokens(dir: &ScratchDir, secret_file: &Path) -> Vec<(Who, Option<String>)> {
    let foreign = dir.join("foreign-secret");
    std::fs::write(&foreign, "a different secret, also more than 32 bytes").unwrap();
    EVERYONE
        .iter()
        .map(|&who| {
            let token = match who {
                Who::Nobody => None,
                Who::Forged => Some(mint(&foreign, &["--subject", "forger", "--namespace", "*", "--admin"])),
                Who::AgentA => Some(mint(
                    secret_file,
                    &["--subject", "a1", "--namespace", "a", "--agent", "a1", "--publish", ">", "--subscribe", ">"],
                )),
                Who::LimitedA => Some(mint(
                    secret_file,
                    &[
                        "--subject",
                        "a2",
                        "--namespace",
                        "a",
                        "--agent",
                        "a2",
                        "--publish",
                        "allowed.>",
                        "--subscribe",
                        "allowed.*",
                    ],
                )),
                Who::Operator => Some(mint(
                    secret_file,
                    &[
                        "--subject",
                        "ops",
                        "--namespace",
                        "*",
                        "--admin",
                        "--read-state",
                        "--act-for-others",
                        "--publish",
                        ">",
                        "--subscribe",
                        ">",
                    ],
                )),
                Who::Root => Some(ROOT.to_owned()),
                Who::Cross => Some(mint(
                    secret_file,
                    &[
                        "--subject",
                        "registry",
                        "--namespace",
                        "*",
                        "--read-state",
                        "--act-for-others",
                        "--publish",
                        ">",
                        "--subscribe",
                        ">",
                    ],
                )),
            };
            (who, token)
        })
        .collect()
}

/// What a call needs beyond a valid token.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Any valid token.
    Anyone,
    /// The namespace.
    Namespace,
    /// The namespace, and to read agent `a1`'s state (its own, or `read_state`).
    ReadStateOfA1,
    /// The namespace, and to act as agent `a1` (bound to it, or `act_for_others`).
    ActAsA1,
    /// Every namespace (server-wide reads).
    EveryNamespace,
    /// Operators' rights in the namespace.
    Admin,
    /// Operators' rights over every namespace.
    AdminGlobal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// Past authentication and permissions (the call may still fail for its own reasons).
    Allowed,
    Unauthenticated(Reason),
    Denied(Reason),
}

fn expected(who: Who, rule: Rule, ns: &str) -> Outcome {
    use Outcome::*;
    let in_a = ns == "a";
    match (who, rule) {
        (Who::Nobody, _) => Unauthenticated(Reason::TokenMissing),
        (Who::Forged, _) => Unauthenticated(Reason::TokenInvalid),
        (Who::Operator | Who::Root, _) => Allowed,
        (Who::Cross, Rule::Admin | Rule::AdminGlobal) => Denied(Reason::AdminDenied),
        (Who::Cross, _) => Allowed,
        // The agents of namespace `a`.
        (_, Rule::Anyone) => Allowed,
        (_, Rule::Admin | Rule::AdminGlobal) => Denied(Reason::AdminDenied),
        (_, Rule::EveryNamespace) => Denied(Reason::NamespaceDenied),
        (_, _) if !in_a => Denied(Reason::NamespaceDenied),
        (_, Rule::Namespace) => Allowed,
        (Who::AgentA, Rule::ReadStateOfA1 | Rule::ActAsA1) => Allowed,
        (_, Rule::ReadStateOfA1) => Denied(Reason::StateReadDenied),
        (_, Rule::ActAsA1) => Denied(Reason::AgentDenied),
    }
}

fn outcome_of_status(status: &Status) -> Outcome {
    let reason = lockstep_proto::reason::of_status(status);
    match status.code() {
        Code::Unauthenticated => Outcome::Unauthenticated(reason.expect("a reason")),
        Code::PermissionDenied => Outcome::Denied(reason.expect("a reason")),
        _ => Outcome::Allowed,
    }
}

fn outcome_of_error(error: &Error) -> Outcome {
    match error {
        Error::Unauthenticated(_) => Outcome::Unauthenticated(error.reason().expect("a reason")),
        Error::PermissionDenied(_) => Outcome::Denied(error.reason().expect("a reason")),
        _ => Outcome::Allowed,
    }
}

/// Presents a token on every call.
#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(request)
    }
}

type Ch = InterceptedService<Channel, Bearer>;

/// Every service's client, presenting one caller's token.
#[derive(Clone)]
struct Clients {
    addr: String,
    token: Option<String>,
    lockstep: v1::lockstep_client::LockstepClient<Ch>,
    admin: v1::admin_client::AdminClient<Ch>,
    context: v1::shared_context_client::SharedContextClient<Ch>,
    tasks: v1::tasks_client::TasksClient<Ch>,
    traces: v1::traces_client::TracesClient<Ch>,
    rounds: v1::rounds_client::RoundsClient<Ch>,
    streams: v1::streams_client::StreamsClient<Ch>,
    history: v1::history_client::HistoryClient<Ch>,
    intake: v1::intake_client::IntakeClient<Ch>,
    systems: v1::systems_client::SystemsClient<Ch>,
}

impl Clients {
    async fn new(addr: &str, token: Option<String>) -> Clients {
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let ch = InterceptedService::new(channel, Bearer(token.clone()));
        Clients {
            addr: addr.to_owned(),
            token,
            lockstep: v1::lockstep_client::LockstepClient::new(ch.clone()),
            admin: v1::admin_client::AdminClient::new(ch.clone()),
            context: v1::shared_context_client::SharedContextClient::new(ch.clone()),
            tasks: v1::tasks_client::TasksClient::new(ch.clone()),
            traces: v1::traces_client::TracesClient::new(ch.clone()),
            rounds: v1::rounds_client::RoundsClient::new(ch.clone()),
            streams: v1::streams_client::StreamsClient::new(ch.clone()),
            history: v1::history_client::HistoryClient::new(ch.clone()),
            intake: v1::intake_client::IntakeClient::new(ch.clone()),
            systems: v1::systems_client::SystemsClient::new(ch),
        }
    }
}

type Call = fn(Clients, String) -> BoxFuture<'static, Outcome>;

/// A unary (or server-streaming) call's outcome.
async fn unary<T>(call: impl std::future::Future<Output = Result<T, Status>>) -> Outcome {
    match call.await {
        Ok(_) => Outcome::Allowed,
        Err(status) => outcome_of_status(&status),
    }
}

/// A client-streaming call's outcome: `first` is all it sends.
macro_rules! upload {
    ($client:expr, $method:ident, $first:expr) => {{
        let mut client = $client;
        unary(client.$method(tokio_stream::iter(vec![$first]))).await
    }};
}

fn session(ns: &str) -> Option<v1::TraceSession> {
    Some(v1::TraceSession { namespace: ns.into(), agent_id: "a1".into(), resume_token: "not-a-token".into() })
}

/// Every RPC, with what it needs. The session comes first and the operators' emergency stop is
/// undone by the next row.
fn table() -> Vec<(&'static str, Rule, Call)> {
    use Rule::*;
    vec![
        ("Lockstep.Session", ActAsA1, |c, ns| {
            Box::pin(async move {
                let client = Client::connect_with_token(&c.addr, c.token.as_deref()).await.unwrap().with_namespace(ns);
                match client.register(opts("a1", "r")).await {
                    Ok(agent) => {
                        let _ = agent.close().await;
                        Outcome::Allowed
                    }
                    Err(e) => outcome_of_error(&e),
                }
            })
        }),
        ("Lockstep.ListAgents", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.list_agents(v1::ListAgentsRequest { namespace: ns, ..Default::default() })).await
            })
        }),
        ("Lockstep.WatchRegistry", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.lockstep.watch_registry(v1::WatchRegistryRequest { namespace: ns })).await })
        }),
        ("Lockstep.GetState", ReadStateOfA1, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.get_state(v1::GetStateRequest { namespace: ns, agent_id: "a1".into() })).await
            })
        }),
        ("Lockstep.ListSyncPoints", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.list_sync_points(v1::ListSyncPointsRequest { namespace: ns, ..Default::default() }))
                    .await
            })
        }),
        ("Lockstep.SyncStatus", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.sync_status(v1::SyncStatusRequest { namespace: ns, sync_id: "s".into() })).await
            })
        }),
        ("Lockstep.DiagnoseSync", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.diagnose_sync(v1::SyncStatusRequest { namespace: ns, sync_id: "s".into() })).await
            })
        }),
        ("Lockstep.ForceCompleteSync", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.force_complete_sync(v1::SyncStatusRequest { namespace: ns, sync_id: "s".into() }))
                    .await
            })
        }),
        ("Lockstep.CleanupSyncPoints", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.cleanup_sync_points(v1::CleanupSyncPointsRequest { namespace: ns })).await
            })
        }),
        ("Lockstep.ServerInfo", Anyone, |mut c, _| {
            Box::pin(async move { unary(c.lockstep.server_info(v1::ServerInfoRequest {})).await })
        }),
        ("Lockstep.ListVotes", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.lockstep.list_votes(v1::ListVotesRequest { namespace: ns })).await })
        }),
        ("Lockstep.VoteStatus", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.vote_status(v1::VoteStatusRequest { namespace: ns, vote_id: "v".into() })).await
            })
        }),
        ("Lockstep.DiagnoseVote", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.lockstep.diagnose_vote(v1::VoteStatusRequest { namespace: ns, vote_id: "v".into() })).await
            })
        }),
        ("Lockstep.Collective", ActAsA1, |c, ns| {
            Box::pin(async move {
                let header = v1::CollectiveHeader {
                    namespace: ns,
                    agent_id: "a1".into(),
                    resume_token: "not-a-token".into(),
                    collective_id: "c".into(),
                    ..Default::default()
                };
                let up = v1::CollectiveUpload { kind: Some(v1::collective_upload::Kind::Header(header)) };
                let mut client = c.lockstep;
                match client.collective(tokio_stream::iter(vec![up])).await {
                    Err(status) => outcome_of_status(&status),
                    // The refusal comes on the answer stream.
                    Ok(answer) => match answer.into_inner().message().await {
                        Err(status) => outcome_of_status(&status),
                        Ok(_) => Outcome::Allowed,
                    },
                }
            })
        }),
        ("Lockstep.ListCollectives", Namespace, |mut c, ns| {
            Box::pin(
                async move { unary(c.lockstep.list_collectives(v1::ListCollectivesRequest { namespace: ns })).await },
            )
        }),
        ("Lockstep.PublishGroupState", ActAsA1, |c, ns| {
            Box::pin(async move {
                let header = v1::GroupStateHeader {
                    namespace: ns,
                    agent_id: "a1".into(),
                    resume_token: "not-a-token".into(),
                    group_id: "g".into(),
                    size: 0,
                    checksum: String::new(),
                };
                upload!(
                    c.lockstep,
                    publish_group_state,
                    v1::GroupStateUpload { kind: Some(v1::group_state_upload::Kind::Header(header)) }
                )
            })
        }),
        ("Lockstep.FetchGroupState", ActAsA1, |mut c, ns| {
            Box::pin(async move {
                let r = v1::FetchGroupStateRequest {
                    namespace: ns,
                    agent_id: "a1".into(),
                    resume_token: "not-a-token".into(),
                    group_id: "g".into(),
                };
                unary(c.lockstep.fetch_group_state(r)).await
            })
        }),
        ("Lockstep.ListGroups", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.lockstep.list_groups(v1::ListGroupsRequest { namespace: ns })).await })
        }),
        ("SharedContext.Get", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.context.get(v1::ContextGetRequest { namespace: ns, key: "k".into(), version: None })).await
            })
        }),
        ("SharedContext.List", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.context.list(v1::ContextListRequest { namespace: ns, ..Default::default() })).await
            })
        }),
        ("SharedContext.History", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.context.history(v1::ContextGetRequest { namespace: ns, key: "k".into(), version: None })).await
            })
        }),
        ("SharedContext.Write", Namespace, |mut c, ns| {
            Box::pin(async move {
                let write = v1::ContextWrite {
                    key: "k".into(),
                    op: Some(v1::context_write::Op::SetJson("1".into())),
                    ..Default::default()
                };
                unary(c.context.write(v1::ContextWriteRequest {
                    namespace: ns,
                    writer: "w".into(),
                    write: Some(write),
                }))
                .await
            })
        }),
        ("SharedContext.Watch", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.context.watch(v1::ContextWatchRequest { namespace: ns, ..Default::default() })).await
            })
        }),
        ("Tasks.Get", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.tasks.get(v1::TaskGetRequest { namespace: ns, id: "t".into() })).await })
        }),
        ("Tasks.List", Namespace, |mut c, ns| {
            Box::pin(
                async move { unary(c.tasks.list(v1::TaskListRequest { namespace: ns, ..Default::default() })).await },
            )
        }),
        ("Tasks.Retry", Admin, |mut c, ns| {
            Box::pin(async move { unary(c.tasks.retry(v1::TaskGetRequest { namespace: ns, id: "t".into() })).await })
        }),
        ("Tasks.Watch", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.tasks.watch(v1::TaskWatchRequest { namespace: ns })).await })
        }),
        ("Tasks.Queues", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.tasks.queues(v1::TaskQueuesRequest {})).await })
        }),
        ("Traces.Record", ActAsA1, |c, ns| {
            Box::pin(async move {
                let header = v1::TraceHeader {
                    session: session(&ns),
                    tool: "t".into(),
                    input_json: "{}".into(),
                    ..Default::default()
                };
                upload!(c.traces, record, v1::TraceUpload { kind: Some(v1::trace_upload::Kind::Header(header)) })
            })
        }),
        ("Traces.Lookup", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.traces.lookup(v1::TraceLookupRequest {
                    namespace: ns,
                    tool: "t".into(),
                    input_json: "{}".into(),
                    inline_output: false,
                }))
                .await
            })
        }),
        ("Traces.Get", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.traces.get(v1::TraceGetRequest { namespace: ns, id: "x".into() })).await })
        }),
        ("Traces.GetOrClaim", ActAsA1, |mut c, ns| {
            Box::pin(async move {
                let r = v1::TraceClaimRequest {
                    session: session(&ns),
                    tool: "t".into(),
                    input_json: "{}".into(),
                    wait_ms: 1,
                };
                unary(c.traces.get_or_claim(r)).await
            })
        }),
        ("Traces.Release", ActAsA1, |mut c, ns| {
            Box::pin(async move {
                let r = v1::TraceClaimRequest {
                    session: session(&ns),
                    tool: "t".into(),
                    input_json: "{}".into(),
                    wait_ms: 1,
                };
                unary(c.traces.release(r)).await
            })
        }),
        ("Traces.Stats", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.traces.stats(v1::TraceStatsRequest {})).await })
        }),
        ("Traces.Lineage", Namespace, |mut c, ns| {
            Box::pin(
                async move { unary(c.traces.lineage(v1::TraceGetRequest { namespace: ns, id: "x".into() })).await },
            )
        }),
        ("Rounds.CreateSeries", Namespace, |mut c, ns| {
            // No agents and no role: refused as invalid once past the permissions.
            Box::pin(async move {
                unary(c.rounds.create_series(v1::RoundSeriesSpec {
                    namespace: ns,
                    name: "s".into(),
                    ..Default::default()
                }))
                .await
            })
        }),
        ("Rounds.OpenRound", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.rounds.open_round(v1::OpenRoundRequest {
                    namespace: ns,
                    series: "s".into(),
                    ..Default::default()
                }))
                .await
            })
        }),
        ("Rounds.RemoveSeries", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.rounds.remove_series(v1::RoundSeriesRef { namespace: ns, name: "s".into() })).await
            })
        }),
        ("Rounds.ListSeries", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.rounds.list_series(v1::ListRoundSeriesRequest { namespace: ns })).await })
        }),
        ("Rounds.GetSeries", Namespace, |mut c, ns| {
            Box::pin(
                async move { unary(c.rounds.get_series(v1::RoundSeriesRef { namespace: ns, name: "s".into() })).await },
            )
        }),
        ("Rounds.GetRound", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.rounds.get_round(v1::GetRoundRequest { namespace: ns, series: "s".into(), round: 1 })).await
            })
        }),
        ("Streams.CreateTicker", Admin, |mut c, ns| {
            // No inputs: refused as invalid once past the permissions.
            Box::pin(async move {
                unary(c.streams.create_ticker(v1::TickerSpec { namespace: ns, id: "t".into(), ..Default::default() }))
                    .await
            })
        }),
        ("Streams.CreateBuffer", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.streams.create_buffer(v1::BufferSpec { namespace: ns, id: "b".into(), ..Default::default() }))
                    .await
            })
        }),
        ("Streams.GetTicker", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.streams.get_ticker(v1::StreamRef { namespace: ns, kind: String::new(), id: "t".into() })).await
            })
        }),
        ("Streams.GetBuffer", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.streams.get_buffer(v1::StreamRef { namespace: ns, kind: String::new(), id: "b".into() })).await
            })
        }),
        ("Streams.ListTickers", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.streams.list_tickers(v1::StreamListRequest { namespace: ns })).await })
        }),
        ("Streams.ListBuffers", Namespace, |mut c, ns| {
            Box::pin(async move { unary(c.streams.list_buffers(v1::StreamListRequest { namespace: ns })).await })
        }),
        ("Streams.Remove", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.streams.remove(v1::StreamRef { namespace: ns, kind: "ticker".into(), id: "t".into() })).await
            })
        }),
        ("History.ListTopics", Namespace, |mut c, ns| {
            Box::pin(async move {
                unary(c.history.list_topics(v1::ListTopicsRequest { namespace: ns, ..Default::default() })).await
            })
        }),
        ("Intake.GetIntake", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.intake.get_intake(v1::IntakeRequest {})).await })
        }),
        ("Intake.ReplaceIntake", AdminGlobal, |mut c, _| {
            // Not JSON: refused as invalid once past the permissions (the rules stay as they are).
            Box::pin(async move {
                unary(c.intake.replace_intake(v1::ReplaceIntakeRequest { rules_json: "not json".into() })).await
            })
        }),
        // The sync monitor is the whole server's: reading and reporting need every namespace,
        // changes are operators' actions. Each call names nothing that exists, so an allowed one
        // is refused past the permissions and changes nothing.
        ("Systems.Register", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.systems.register(v1::SystemSpec::default())).await })
        }),
        ("Systems.Update", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.systems.update(v1::SystemSpec::default())).await })
        }),
        ("Systems.Retire", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.systems.retire(v1::SystemRef { name: "nothing".into() })).await })
        }),
        ("Systems.Depend", AdminGlobal, |mut c, _| {
            Box::pin(async move {
                let r = v1::DependencyRequest { upstream: "x".into(), downstream: "y".into(), weight: 1.0 };
                unary(c.systems.depend(r)).await
            })
        }),
        ("Systems.Undepend", AdminGlobal, |mut c, _| {
            Box::pin(async move {
                let r = v1::DependencyRequest { upstream: "x".into(), downstream: "y".into(), weight: 1.0 };
                unary(c.systems.undepend(r)).await
            })
        }),
        ("Systems.Report", EveryNamespace, |mut c, _| {
            Box::pin(async move {
                let r = v1::SyncEventReport { system: "nothing".into(), status: "ok".into(), ..Default::default() };
                unary(c.systems.report(r)).await
            })
        }),
        ("Systems.List", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.systems.list(v1::SystemListRequest::default())).await })
        }),
        ("Systems.Show", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.systems.show(v1::SystemRef { name: "nothing".into() })).await })
        }),
        ("Systems.BlastRadius", EveryNamespace, |mut c, _| {
            Box::pin(async move {
                let r = v1::BlastRadiusRequest { name: "nothing".into(), ..Default::default() };
                unary(c.systems.blast_radius(r)).await
            })
        }),
        ("Systems.Dependencies", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.systems.dependencies(v1::DependenciesRequest::default())).await })
        }),
        ("Systems.Incidents", EveryNamespace, |mut c, _| {
            Box::pin(async move { unary(c.systems.incidents(v1::IncidentsRequest::default())).await })
        }),
        ("Systems.AckIncident", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.systems.ack_incident(v1::IncidentRef { id: 999 })).await })
        }),
        ("Systems.NoteIncident", AdminGlobal, |mut c, _| {
            Box::pin(async move {
                unary(c.systems.note_incident(v1::IncidentNoteRequest { id: 999, text: "n".into() })).await
            })
        }),
        ("Systems.ResolveIncident", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.systems.resolve_incident(v1::IncidentRef { id: 999 })).await })
        }),
        ("Admin.Status", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.admin.status(v1::StatusRequest {})).await })
        }),
        ("Admin.Health", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.admin.health(v1::HealthRequest {})).await })
        }),
        ("Admin.PauseAgent", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.admin.pause_agent(v1::AgentRef { namespace: ns, agent_id: "nobody".into() })).await
            })
        }),
        ("Admin.ResumeAgent", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.admin.resume_agent(v1::AgentRef { namespace: ns, agent_id: "nobody".into() })).await
            })
        }),
        ("Admin.RestartAgent", Admin, |mut c, ns| {
            Box::pin(async move {
                unary(c.admin.restart_agent(v1::AgentRef { namespace: ns, agent_id: "nobody".into() })).await
            })
        }),
        ("Admin.EmergencyStop", AdminGlobal, |mut c, _| {
            Box::pin(
                async move { unary(c.admin.emergency_stop(v1::EmergencyStopRequest { reason: "drill".into() })).await },
            )
        }),
        ("Admin.ResumeAll", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.admin.resume_all(v1::ResumeAllRequest {})).await })
        }),
        ("Admin.SendCommand", Admin, |mut c, ns| {
            Box::pin(async move {
                let r = v1::SendCommandRequest {
                    namespace: ns,
                    agent_id: "nobody".into(),
                    command: "x".into(),
                    timeout_ms: 1,
                    ..Default::default()
                };
                unary(c.admin.send_command(r)).await
            })
        }),
        ("Admin.AuditLog", AdminGlobal, |mut c, _| {
            Box::pin(async move { unary(c.admin.audit_log(v1::AuditLogRequest { limit: 1 })).await })
        }),
        ("Admin.Backup", AdminGlobal, |mut c, _| {
            // An in-memory server without a backup directory: refused once past the permissions.
            Box::pin(async move { unary(c.admin.backup(v1::BackupRequest { path: "copy.db".into() })).await })
        }),
    ]
}

fn secured() -> (Server, ScratchDir, std::path::PathBuf) {
    let dir = ScratchDir::new("auth");
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let server = Server::start(&["--token-secret-file", secret_file.to_str().unwrap(), "--admin-token", ROOT]);
    (server, dir, secret_file)
}

#[tokio::test]
async fn every_rpc_as_every_principal_against_every_namespace() {
    let (server, dir, secret_file) = secured();
    let mut callers = Vec::new();
    for (who, token) in tokens(&dir, &secret_file) {
        callers.push((who, Clients::new(&server.addr, token).await));
    }
    let table = table();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (rpc, rule, call) in &table {
        for (who, clients) in &callers {
            for ns in ["a", "b"] {
                let got = tokio::time::timeout(CALL_WITHIN, call(clients.clone(), ns.to_owned()))
                    .await
                    .unwrap_or_else(|_| panic!("{rpc} as {who:?} in {ns} did not answer within {CALL_WITHIN:?}"));
                let want = expected(*who, *rule, ns);
                checked += 1;
                if got != want {
                    wrong.push(format!("{rpc} as {who:?} in namespace {ns}: {got:?}, expected {want:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {checked} outcomes differ:\n{}", wrong.len(), wrong.join("\n"));
    // 10 services' RPCs (all of them: a new RPC must be added here), 7 callers, 2 namespaces.
    assert_eq!(table.len(), 75);
    assert_eq!(checked, 75 * 7 * 2);
}

#[tokio::test]
async fn a_session_is_held_to_its_tokens_topics_and_state_permission() {
    let (server, _dir, secret_file) = secured();
    let limited = mint(
        &secret_file,
        &["--subject", "a2", "--namespace", "a", "--agent", "a2", "--publish", "allowed.>", "--subscribe", "allowed.*"],
    );
    let listener = mint(&secret_file, &["--subject", "a1", "--namespace", "a", "--agent", "a1", "--subscribe", ">"]);
    let connect = |token: String| {
        let addr = server.addr.clone();
        async move { Client::connect_with_token(&addr, Some(&token)).await.unwrap().with_namespace("a") }
    };
    let (limited_client, listener_client) = (connect(limited).await, connect(listener).await);

    // Registration: interests beyond the token's patterns, and another agent id, are refused.
    let wide = AgentOptions::new("a2", "r").interests([">"]);
    let err = limited_client.register(wide).await.err().expect("refused");
    assert_eq!(err.reason(), Some(Reason::SubscribeDenied), "{err}");
    let err = limited_client.register(opts("a3", "r")).await.err().expect("refused");
    assert_eq!(err.reason(), Some(Reason::AgentDenied), "{err}");

    let hearer = listener_client.register(AgentOptions::new("a1", "r").interests([">"])).await.unwrap();
    let agent = limited_client.register(AgentOptions::new("a2", "r").interests(["allowed.x"])).await.unwrap();
    // Each refusal names what, and the session goes on.
    let err = agent.publish_confirmed("secret.x", "no").await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PublishDenied), "{err}");
    let err = agent.subscribe(">", lockstep_client::Replay::None).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::SubscribeDenied), "{err}");
    let err = agent.watch_state(WatchTarget::Agent("a1".into())).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::StateReadDenied), "{err}");
    agent.watch_state(WatchTarget::Agent("a2".into())).await.expect("its own state");
    agent.subscribe("allowed.y", lockstep_client::Replay::None).await.expect("within allowed.*");
    agent.publish_confirmed("allowed.x", "yes").await.expect("within allowed.>");
    // Only the allowed publish was delivered.
    let mut deliveries = hearer.deliveries().expect("deliveries");
    let first = tokio::time::timeout(CALL_WITHIN, deliveries.recv()).await.expect("a delivery").expect("open");
    assert_eq!(first.topic, "allowed.x");
    assert_eq!((&first.payload[..], first.publisher.as_str()), (&b"yes"[..], "a2"));
    agent.publish_confirmed("allowed.z", "after").await.unwrap();
    let second = tokio::time::timeout(CALL_WITHIN, deliveries.recv()).await.expect("a delivery").expect("open");
    assert_eq!(second.topic, "allowed.z", "nothing denied came between");
    hearer.close().await.unwrap();
}

#[tokio::test]
async fn an_expired_token_is_refused_and_tokens_change_nothing_without_a_secret() {
    let (server, _dir, secret_file) = secured();
    let expired = {
        let key = lockstep_core::auth::Key::new(std::fs::read(&secret_file).unwrap().as_slice()).unwrap();
        let claims = lockstep_core::auth::Claims {
            sub: "late".into(),
            namespaces: vec!["a".into()],
            exp: Some(1),
            ..Default::default()
        };
        key.sign(&claims).unwrap()
    };
    let client = Client::connect_with_token(&server.addr, Some(&expired)).await.unwrap().with_namespace("a");
    let err = client.list_agents(Default::default()).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::TokenExpired), "{err}");
    // The CLI's query commands present `--auth-token` (or LOCKSTEP_TOKEN).
    let reader = mint(&secret_file, &["--subject", "cli", "--namespace", "a"]);
    let (ok, out, err) = server.cli(&["agents", "-n", "a", "--json", "--auth-token", &reader]);
    assert!(ok && out.trim_start().starts_with('['), "{out}\n{err}");
    let (ok, _, err) = server.cli(&["agents", "-n", "b", "--auth-token", &reader]);
    assert!(!ok && !err.is_empty(), "namespace b is not the token's: {err}");
    let (ok, _, _) = server.cli(&["agents", "-n", "a"]);
    assert!(!ok, "no token: refused");
    // A server without a secret is open on loopback, as before.
    let open = Server::start(&[]);
    let client = Client::connect(&open.addr).await.unwrap().with_namespace("b");
    client.register(opts("anyone", "r")).await.expect("open access");
}
