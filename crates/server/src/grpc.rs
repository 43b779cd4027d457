//! The gRPC service: turns calls into driver commands and answers into responses. It holds no
//! product state; every decision is the engine's.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use lockstep_core::{AdminAction, AdminOutcome, AgentQuery, ConnId, CoreError, Frame, Input, Reason};
use lockstep_proto::convert::{self, SessionMessage};
use lockstep_proto::reason;
use lockstep_proto::server::lockstep_server::Lockstep;
use lockstep_proto::session::RawClientMessage;
use lockstep_proto::v1;
use rand::Rng;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::admin::actor;
use crate::auth::{Access, Gate};
use crate::driver::{unexpected, Command, ConnSink, ConnStream, EngineHandle, Signal, CONN_CHANNEL_FRAMES};
use crate::page::page;

mod context;
mod history;
mod intake;
mod rounds;
mod streams;
mod systems;
mod tasks;
mod trace;

/// The lockstep gRPC service.
#[derive(Clone)]
pub struct Service {
    engine: EngineHandle,
    next_conn: Arc<AtomicU64>,
    /// The transport's cap on one gRPC message (named when a client goes over it).
    max_message_bytes: usize,
    /// How long a new session stream may take to send its `register`.
    register_within: std::time::Duration,
    /// What callers must present (see `crate::auth`): checked by every handler for the
    /// namespace it serves, and on the operators' actions this service serves
    /// (`ForceCompleteSync`, `CleanupSyncPoints`, creating streams, replacing the intake rules).
    pub(crate) gate: Gate,
    /// The port of the lean agent transport (`crate::lean`), told by `ServerInfo` (0: none).
    lean_port: u16,
}

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Service {
    /// The service, for a transport that reads gRPC messages of at most `max_message_bytes`; a
    /// session stream that sends no `register` within `register_within` is ended with
    /// `DEADLINE_EXCEEDED` (reason `NOT_REGISTERED`); callers are held to what `gate` allows.
    pub fn new(
        engine: EngineHandle,
        max_message_bytes: usize,
        register_within: std::time::Duration,
        gate: Gate,
    ) -> Self {
        Service {
            engine,
            next_conn: Arc::new(AtomicU64::new(1)),
            max_message_bytes,
            register_within,
            gate,
            lean_port: 0,
        }
    }

    /// The same service, telling clients (in `ServerInfo`) that the lean transport listens on `port`.
    pub fn with_lean_port(self, port: u16) -> Self {
        Service { lean_port: port, ..self }
    }

    /// The bytes of items one page of a listing may carry: the message cap less what it leaves
    /// for everything but the items.
    fn page_bytes(&self) -> usize {
        self.max_message_bytes.saturating_sub(lockstep_core::config::MESSAGE_OVERHEAD).max(1)
    }

    async fn open<T>(
        &self,
        sink: impl FnOnce(mpsc::Sender<Result<Frame, Status>>) -> ConnSink,
        convert: fn(Frame) -> Option<T>,
    ) -> Result<(ConnId, ConnStream<T>), Status> {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(CONN_CHANNEL_FRAMES);
        let blocked = Arc::new(AtomicBool::new(false));
        self.engine.send(Command::Open { conn, sink: sink(tx), blocked: blocked.clone() }).await?;
        Ok((conn, ConnStream::new(rx, conn, blocked, self.engine.signals(), convert)))
    }
}

impl Service {
    /// Opens a session whose client messages come from `inbound` (a gRPC stream's, or a lean
    /// connection's read through the same decoder), on client connection
    /// `connection` (0: not known), for a caller with `access`: what the server sends it comes
    /// out of the stream returned, which ends with the status the session ended with.
    pub(crate) async fn open_session(
        &self,
        inbound: Streaming<RawClientMessage>,
        connection: u64,
        access: Access,
    ) -> Result<ConnStream<v1::ServerMessage>, Status> {
        let mut first_error = None;
        let (conn, stream) = self
            .open(
                |tx| {
                    first_error = Some(tx.clone());
                    ConnSink::Session(tx)
                },
                convert::server_message,
            )
            .await?;
        let first_error = first_error.expect("set by open");
        let reader = read_session(
            conn,
            inbound,
            self.engine.clone(),
            first_error,
            self.max_message_bytes,
            self.register_within,
            (connection, access),
        );
        tokio::spawn(reader);
        Ok(stream)
    }

    /// The transport's cap on one message.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }
}

fn registry_frame(frame: Frame) -> Option<v1::RegistryEvent> {
    match frame {
        Frame::Registry(e) => Some(convert::registry_event(&e)),
        _ => None,
    }
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a session's client messages and feeds them to the driver until the stream ends. Each
/// message waits for room in the driver's intake before the next is read, so a client sending
/// faster than the engine applies is slowed by its own connection's flow control; acknowledgements
/// alone go ahead as a signal (see `Signal::Acked`).
///
/// Messages are decoded here ([`RawClientMessage`]): one that is not a valid `ClientMessage` is
/// answered with `INVALID_ARGUMENT` and the stream goes on. However the stream ends — reset,
/// cancelled, broken, half-closed — the agent is not removed (only `deregister` does that): it
/// keeps its lease and may resume, and the driver ends the response with a status that says why.
async fn read_session(
    conn: ConnId,
    mut inbound: Streaming<RawClientMessage>,
    engine: EngineHandle,
    first_error: mpsc::Sender<Result<Frame, Status>>,
    max_message_bytes: usize,
    register_within: std::time::Duration,
    (connection, access): (u64, Access),
) {
    let gone = || {
        let _ = engine.signals().send(Signal::Gone(conn));
    };
    // Ends the stream with `status` before anything was registered.
    let refuse = |status: Status| {
        let (tx, signals) = (first_error.clone(), engine.signals());
        async move {
            let _ = tx.send(Err(status)).await;
            let _ = signals.send(Signal::Gone(conn));
        }
    };
    // The first message must register the agent, and soon: a stream that never registers would
    // hold its connection open for nothing.
    let Ok(first) = tokio::time::timeout(register_within, inbound.message()).await else {
        let ms = register_within.as_millis();
        let message =
            format!("the session sent no register message within {ms} ms of opening (connections.register_within_ms)");
        return refuse(reason::status(Code::DeadlineExceeded, Reason::NotRegistered, message, [])).await;
    };
    let request = match first {
        Ok(Some(raw)) => match raw.decode().map_err(|u| CoreError::Invalid { what: "message", reason: u.reason }) {
            Ok(msg) => match convert::session_message(msg.kind) {
                Ok(SessionMessage::Register(r)) => r,
                Ok(SessionMessage::Request(_)) => return refuse(convert::status(&CoreError::NotRegistered)).await,
                Err(e) => return refuse(convert::status(&e)).await,
            },
            Err(e) => return refuse(convert::status(&e)).await,
        },
        Ok(None) => return gone(),
        Err(broken) => return refuse(stream_broke(&broken, max_message_bytes, NOTHING_REGISTERED)).await,
    };
    // The token was checked when the stream opened; what it allows is checked here, before the
    // engine sees the registration, and for each request after it.
    if let Err(denial) = access.register(&request) {
        return refuse(crate::auth::denied(&denial)).await;
    }
    // The session's agent for good: a second `register` on it is refused by the engine.
    let agent_id = request.agent_id.clone();
    drop(first_error);
    let register = Input::Register { conn, request, new_token: new_token(), connection };
    if engine.send(Command::Input(register)).await.is_err() {
        return;
    }
    // Whether the client said goodbye: its stream's end is then the session's normal end, not a
    // broken stream, even when the end is read before the engine has removed the agent.
    let mut said_goodbye = false;
    // The session's latest acknowledgement not yet taken by the driver (0: none).
    let acked = Arc::new(AtomicU64::new(0));
    // When the session's last sign of life went to the driver ahead of the intake (sent only for
    // a message that has to wait for room in it).
    let mut signed: Option<tokio::time::Instant> = None;
    // Signs of life and acknowledgements go ahead of the intake, as signals.
    let signals = engine.signals();
    let status = loop {
        match inbound.message().await {
            Ok(Some(raw)) => {
                let read_at = tokio::time::Instant::now();
                let input = match raw.decode() {
                    Ok(msg) => {
                        let request_id = msg.request_id;
                        match convert::session_message(msg.kind) {
                            Ok(SessionMessage::Request(request)) => {
                                match (access.session_request(&agent_id, &request), request) {
                                    // Acknowledgements skip the intake: under load they would wait
                                    // behind other clients' requests while the server holds back
                                    // this agent's deliveries for them (`engine.max_in_flight`) and
                                    // its breaker counts them late. Only the latest counts, so they
                                    // are merged into one signal per session at a time.
                                    (Ok(()), lockstep_core::Request::Ack { up_to }) if up_to > 0 => {
                                        if acked.fetch_max(up_to, Ordering::AcqRel) == 0 {
                                            let _ = signals.send(Signal::Acked { conn, up_to: acked.clone() });
                                        }
                                        continue;
                                    }
                                    (Ok(()), request) => {
                                        said_goodbye |= matches!(request, lockstep_core::Request::Deregister);
                                        Input::Request { conn, request_id, request }
                                    }
                                    (Err(denial), _) => Input::Refused { conn, request_id, denial },
                                }
                            }
                            Ok(SessionMessage::Register(r)) => match access.register(&r) {
                                Ok(()) => Input::Register { conn, request: r, new_token: String::new(), connection },
                                Err(denial) => Input::Refused { conn, request_id, denial },
                            },
                            Err(error) => Input::Malformed { conn, request_id, reason: malformed_reason(error) },
                        }
                    }
                    Err(u) => Input::Malformed { conn, request_id: u.request_id, reason: u.reason },
                };
                // A message that must wait for room in the intake renews the leases of its
                // connection's sessions as of its read, however long it then waits (see
                // `lockstep_core::lease`); one that has room renews them when the engine takes it,
                // soon enough, without a signal of its own.
                let sign_of_life = || {
                    if connection != 0 && signed.is_none_or(|t| read_at.duration_since(t) >= SIGN_OF_LIFE_EVERY) {
                        signed = Some(read_at);
                        let _ = signals.send(Signal::Alive { connection, at: read_at });
                    }
                };
                if engine.send_or_else(Command::Input(input), sign_of_life).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                // A half-close, and also a reset: tonic reports a cancelled request stream as
                // its normal end (so does hyper for RST_STREAM(NO_ERROR)).
                if said_goodbye {
                    break Status::ok("the agent deregistered");
                }
                tracing::debug!(conn = conn.0, "a session stream ended without deregister");
                break ended_without_goodbye();
            }
            Err(broken) => {
                tracing::debug!(conn = conn.0, status = %broken, "a session stream broke");
                break stream_broke(&broken, max_message_bytes, LEASE_KEPT);
            }
        }
    };
    let _ = engine.send(Command::Ended { conn, status }).await;
}

/// A session's messages waiting for room in the intake are reported as signs of life ahead of it
/// at most this often.
const SIGN_OF_LIFE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// What becomes of a session whose stream broke after it registered.
const LEASE_KEPT: &str = "the agent keeps its lease and may resume with its resume token on a new stream";
/// ... and before.
const NOTHING_REGISTERED: &str = "nothing was registered";

/// What a session's stream is ended with when the client's side ended without `deregister`: a
/// half-close, or a reset (gRPC reports a cancelled call as an end of the stream, too). The agent
/// keeps its lease; a client that is still reading learns how to leave or come back.
fn ended_without_goodbye() -> Status {
    let message = format!(
        "the session's stream ended without `deregister`: {LEASE_KEPT}; send `deregister` before closing to leave at once"
    );
    reason::status(Code::InvalidArgument, Reason::InvalidArgument, message, [])
}

/// What a session's stream is ended with when the transport could not read the client's next
/// message: one over the message cap (the transport cannot skip it), or a broken frame. What
/// becomes of the session (`consequence`) is as for any broken stream.
fn stream_broke(broken: &Status, max_message_bytes: usize, consequence: &str) -> Status {
    if broken.code() == Code::OutOfRange {
        // tonic's own refusal of a message over `max_decoding_message_size`.
        let message = format!(
            "a message was over the server's limit of {max_message_bytes} bytes per gRPC message ({}), and the \
             stream cannot go on past it: {consequence}. Send smaller messages (the limits are in `registered`)",
            broken.message()
        );
        return reason::status(Code::ResourceExhausted, Reason::MessageTooLarge, message, []);
    }
    let message = format!(
        "the session's stream broke and cannot be read further ({}: {}): {consequence}",
        broken.code(),
        broken.message()
    );
    reason::status(Code::InvalidArgument, Reason::InvalidArgument, message, [])
}

/// Why a message could not be decoded, in the words the engine will answer with.
fn malformed_reason(error: CoreError) -> String {
    match error {
        CoreError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn query(namespace: &str, role: String, capability: String, status: i32) -> Result<(String, AgentQuery), Status> {
    let status = match status {
        0 => None,
        s => Some(convert::status_from_wire(s).map_err(|e| convert::status(&e))?),
    };
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok((namespace.to_owned(), AgentQuery { role: some(role), capability: some(capability), status }))
}

#[tonic::async_trait]
impl Lockstep for Service {
    type SessionStream = BoxStream<v1::ServerMessage>;
    type WatchRegistryStream = BoxStream<v1::RegistryEvent>;
    type CollectiveStream = BoxStream<v1::CollectiveDownload>;

    async fn collective(
        &self,
        request: Request<Streaming<v1::CollectiveUpload>>,
    ) -> Result<Response<Self::CollectiveStream>, Status> {
        let (out, results) = mpsc::channel(crate::collective::RESULT_QUEUE);
        // Only a caller on this host may be offered shared memory.
        let local = crate::listener::conn_info(request.extensions())
            .is_some_and(|c| c.peer().ip().to_canonical().is_loopback());
        let access = Access::of(&request);
        let member = crate::collective::serve_member(
            self.engine.clone(),
            access,
            request.into_inner(),
            out,
            self.register_within,
            local,
        );
        tokio::spawn(member);
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(results))))
    }

    async fn publish_group_state(
        &self,
        request: Request<Streaming<v1::GroupStateUpload>>,
    ) -> Result<Response<v1::GroupState>, Status> {
        // In a task of its own: a caller that goes away midway still has its publish ended.
        let access = Access::of(&request);
        let call = crate::group::publish(self.engine.clone(), access, request.into_inner(), self.register_within);
        let state = tokio::spawn(call).await.map_err(|_| Status::internal("the publish task failed"))??;
        Ok(Response::new(state))
    }

    type FetchGroupStateStream = BoxStream<v1::GroupStateDownload>;

    async fn fetch_group_state(
        &self,
        request: Request<v1::FetchGroupStateRequest>,
    ) -> Result<Response<Self::FetchGroupStateStream>, Status> {
        let r = request.get_ref();
        Access::of(&request).act_as(&r.namespace, &r.agent_id)?;
        let messages = crate::group::fetch(self.engine.clone(), request.into_inner()).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))))
    }

    async fn list_groups(
        &self,
        request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let ns = request.into_inner().namespace;
        let groups = self
            .engine
            .query(move |e, _| Ok(e.list_groups(&ns)?.iter().map(lockstep_proto::group::info).collect()))
            .await?;
        Ok(Response::new(v1::ListGroupsResponse { groups }))
    }

    async fn list_collectives(
        &self,
        request: Request<v1::ListCollectivesRequest>,
    ) -> Result<Response<v1::ListCollectivesResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let ns = request.into_inner().namespace;
        let collectives = self
            .engine
            .query(move |e, now| {
                Ok(e.list_collectives(&ns)?.iter().map(|c| lockstep_proto::collective::status(c, now)).collect())
            })
            .await?;
        Ok(Response::new(v1::ListCollectivesResponse { collectives }))
    }

    async fn session(
        &self,
        request: Request<Streaming<RawClientMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // Sessions of one client connection renew one another's leases (0: not known).
        let connection = crate::listener::conn_info(request.extensions()).map_or(0, |c| c.id());
        let access = Access::of(&request);
        let stream = self.open_session(request.into_inner(), connection, access).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_agents(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let (ns, q) = query(&r.namespace, r.role, r.capability, r.status)?;
        let agents = self.engine.query(move |e, _| e.list_agents(&ns, &q)).await?;
        let (agents, next_page_token) =
            page(&agents, |a| &a.agent_id, &r.page_token, r.page_size, self.page_bytes(), convert::agent_info);
        Ok(Response::new(v1::ListAgentsResponse { agents, next_page_token }))
    }

    async fn watch_registry(
        &self,
        request: Request<v1::WatchRegistryRequest>,
    ) -> Result<Response<Self::WatchRegistryStream>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let namespace = request.into_inner().namespace;
        let (conn, stream) = self.open(ConnSink::Registry, registry_frame).await?;
        self.engine.send(Command::Input(Input::WatchRegistry { conn, namespace })).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_state(&self, request: Request<v1::GetStateRequest>) -> Result<Response<v1::GetStateResponse>, Status> {
        let asked = request.get_ref();
        self.gate.read_state(&request, &asked.namespace, &asked.agent_id)?;
        let r = request.into_inner();
        let agent_id = r.agent_id.clone();
        let (version, state) = self.engine.query(move |e, _| e.get_state(&r.namespace, &r.agent_id)).await?;
        Ok(Response::new(v1::GetStateResponse { agent_id, version, state_json: state.to_string() }))
    }

    async fn list_sync_points(
        &self,
        request: Request<v1::ListSyncPointsRequest>,
    ) -> Result<Response<v1::ListSyncPointsResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let ns = r.namespace.clone();
        let (points, now) = self.engine.query(move |e, now| e.list_sync_points(&ns).map(|ps| (ps, now))).await?;
        let (sync_points, next_page_token) = page(
            &points,
            |p| &p.sync_id,
            &r.page_token,
            r.page_size,
            self.page_bytes(),
            |p| convert::sync_status(p, now),
        );
        Ok(Response::new(v1::ListSyncPointsResponse { sync_points, next_page_token }))
    }

    async fn sync_status(
        &self,
        request: Request<v1::SyncStatusRequest>,
    ) -> Result<Response<v1::SyncPointStatus>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let status = self
            .engine
            .query(move |e, now| e.sync_status(&r.namespace, &r.sync_id).map(|s| convert::sync_status(&s, now)))
            .await?;
        Ok(Response::new(status))
    }

    async fn diagnose_sync(
        &self,
        request: Request<v1::SyncStatusRequest>,
    ) -> Result<Response<v1::SyncDiagnosis>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let d = self
            .engine
            .query(move |e, now| e.diagnose_sync(now, &r.namespace, &r.sync_id).map(|d| convert::diagnosis(&d, now)))
            .await?;
        Ok(Response::new(d))
    }

    async fn list_votes(
        &self,
        request: Request<v1::ListVotesRequest>,
    ) -> Result<Response<v1::ListVotesResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let ns = request.into_inner().namespace;
        let votes = self
            .engine
            .query(move |e, _| e.list_votes(&ns).map(|vs| vs.iter().map(convert::vote_record).collect()))
            .await?;
        Ok(Response::new(v1::ListVotesResponse { votes }))
    }

    async fn vote_status(&self, request: Request<v1::VoteStatusRequest>) -> Result<Response<v1::VoteRecord>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let record = self
            .engine
            .query(move |e, _| e.vote_status(&r.namespace, &r.vote_id).map(|s| convert::vote_record(&s)))
            .await?;
        Ok(Response::new(record))
    }

    async fn diagnose_vote(
        &self,
        request: Request<v1::VoteStatusRequest>,
    ) -> Result<Response<v1::VoteDiagnosis>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let d = self
            .engine
            .query(move |e, now| e.diagnose_vote(now, &r.namespace, &r.vote_id).map(|d| convert::vote_diagnosis(&d)))
            .await?;
        Ok(Response::new(d))
    }

    async fn force_complete_sync(
        &self,
        request: Request<v1::SyncStatusRequest>,
    ) -> Result<Response<v1::SyncPointStatus>, Status> {
        self.gate.admin(&request, "ForceCompleteSync", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let r = request.into_inner();
        let action = AdminAction::ForceCompleteSync { namespace: r.namespace, sync_id: r.sync_id };
        let status = match self.engine.admin(actor, action).await? {
            AdminOutcome::SyncForced(status) => status,
            other => return Err(unexpected(&other)),
        };
        // Forced now: its finishing time is the engine's clock at the moment it was released.
        let now = status.finished_at.unwrap_or(status.waiting_since);
        Ok(Response::new(convert::sync_status(&status, now)))
    }

    async fn cleanup_sync_points(
        &self,
        request: Request<v1::CleanupSyncPointsRequest>,
    ) -> Result<Response<v1::CleanupSyncPointsResponse>, Status> {
        self.gate.admin(&request, "CleanupSyncPoints", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let namespace = request.into_inner().namespace;
        let removed = match self.engine.admin(actor, AdminAction::CleanupSyncPoints { namespace }).await? {
            AdminOutcome::Cleaned(removed) => removed,
            other => return Err(unexpected(&other)),
        };
        Ok(Response::new(v1::CleanupSyncPointsResponse { removed: removed as u32 }))
    }

    async fn server_info(
        &self,
        _request: Request<v1::ServerInfoRequest>,
    ) -> Result<Response<v1::ServerInfoResponse>, Status> {
        let lean_port = u32::from(self.lean_port);
        let info = self
            .engine
            .query(move |e, now| {
                let info = e.info();
                let c = e.config();
                Ok(v1::ServerInfoResponse {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    now_ms: now,
                    heartbeat_interval_ms: c.heartbeat_interval_ms,
                    lease_intervals: c.lease_intervals,
                    limits: Some(convert::limits(&c.limits, c.queue_capacity)),
                    agents: info.agents as u64,
                    published: info.counters.published,
                    delivered: info.counters.routed,
                    dropped: info.counters.dropped,
                    lean_port,
                })
            })
            .await?;
        Ok(Response::new(info))
    }
}
