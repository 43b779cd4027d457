//! # lockstep-client
//!
//! An async Rust client for lockstep.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lockstep_client::Error> {
//! use lockstep_client::{AgentOptions, Client, Participants};
//! use std::time::Duration;
//!
//! let client = Client::connect("127.0.0.1:7600").await?;
//! let agent = client
//!     .register(AgentOptions::new("strategy-1", "strategy").interests(["market.*.trades", "risk.>"]))
//!     .await?;
//! let mut deliveries = agent.deliveries().expect("taken once");
//! agent.publish("signals.strategy-1", &b"buy"[..]).await?;
//! agent.update_state(&serde_json::json!({"confidence": 0.8})).await?;
//! let round = agent
//!     .sync("round-1", Participants::Role("strategy".into()), Duration::from_secs(5), &b""[..])
//!     .await?;
//! println!("released with {:?}", round.arrival_order);
//! while let Some(d) = deliveries.recv().await {
//!     println!("{} -> {} bytes", d.topic, d.payload.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Heartbeats, delivery acknowledgements and state resynchronisation after a version gap happen
//! by themselves. When the connection breaks (or the server restarts), an agent reconnects by
//! itself — exponential backoff with jitter, for up to [`AgentOptions::reconnect_for`] — and
//! resumes its session with its resume token; if the server no longer knows it, it registers
//! again and renews its state watches. Requests in flight when the connection broke fail with
//! [`Error::SessionEnded`] (they may or may not have been carried out). Dropping every handle of an
//! [`Agent`] ends its session cleanly: it says goodbye (`deregister`), as [`Agent::close`] does. A
//! request over a limit the server announced at registration is refused before it is sent
//! ([`Error::TooLarge`], naming the limit).
//!
//! Every error the server reports carries a [`Reason`] ([`Error::reason`]): a stable name that
//! programs match on, since messages may be reworded. The [`Error`] variant is chosen by it, and so
//! is reconnection: [`recovery`] resumes after a broken connection, a lost lease, a slow-consumer
//! disconnect or a server going away, and gives up when another connection took the session over
//! or the server refused (the table is in docs/PROTOCOL.md, "Reconnection").

mod admin;
mod agent;
mod collective;
mod context;
mod error;
mod group;
mod history;
mod intake;
mod lean;
mod limits;
mod rounds;
mod streams;
pub mod systems;
mod tasks;
mod tls;
mod trace;
mod vote;

use std::time::Duration;

pub use admin::AdminClient;
use admin::Credentials;
pub use agent::{
    Agent, AgentOptions, ControlNotices, Deliveries, Delivery, IncomingCommand, IncomingCommands, IncomingRequest,
    IncomingRequests, IntakeEnvelope, Participants, Response, StateUpdate, StateUpdates, SyncResult, WatchTarget,
};
pub use collective::{Collective, CollectiveOutcome, DType, Element, Group, ReduceOp};
pub use context::{
    write_message as context_write_message, AgentContext, ContextClient, ContextWatch, ContextWrites,
    Entry as ContextEntry, Op as ContextOp, WriteOptions, Written,
};
pub use error::{recovery, Detail, Error, Reason, Recovery, SchemaError};
pub use group::{state_checksum, GroupEvent, GroupMembership, GroupState, GroupStateBlob, GROUP_EVENT_PREFIX};
pub use history::{HistoryGap, Replay};
pub use intake::{IntakeClient, IntakeStats, IntakeStatus};
pub use lockstep_proto::v1 as proto;
use lockstep_proto::v1;
use lockstep_proto::v1::lockstep_client::LockstepClient;
pub use rounds::{
    Participants as RoundParticipants, RoundInput, RoundInputs, RoundsClient, SeriesSpec as RoundSeriesSpec,
};
pub use streams::{StreamKind, StreamsClient};
pub use systems::{Dependency, SystemDetail, SystemStatus, SystemsAck, SystemsClient};
pub use tasks::{Assignment, Assignments, Pinned as PinnedContext, TaskEvents, TaskInfo, TaskSpec, TasksClient};
pub use tls::TlsOptions;
use tonic::transport::Endpoint;
pub use trace::{
    AgentTraces, Claim, Lineage, Output as TraceOutput, Trace, TraceInfo, TraceLineage, TraceStats, TracesClient,
};
pub use vote::{Ballot, Vote, VotePolicy, VoteWeight};

/// HTTP/2 flow-control windows, large so that a busy session never waits for window updates.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Largest message the client accepts from the server.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A connection to a lockstep server. Cheap to clone; clones share the connection used for
/// queries. Each agent registered with [`Client::register`] gets an HTTP/2 connection of its own;
/// agents registered with [`Client::register_shared`] share this one.
#[derive(Clone)]
pub struct Client {
    endpoint: Dialer,
    /// `channel`'s connection, for clients presenting other credentials on it (operators').
    raw: tonic::transport::Channel,
    addr: String,
    channel: Channel,
    grpc: LockstepClient<Channel>,
    namespace: String,
    /// The heartbeat of the agents sharing `channel`'s connection.
    beat: std::sync::Arc<agent::ConnectionBeat>,
    /// The lean connection shared by the agents registered with [`Client::register_lean_shared`].
    lean: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<lean::Mux>>>>,
}

/// A connection to the server that adds the caller's credentials (its token, when it has one) to
/// every call.
pub(crate) type Channel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credentials>;

/// Opens connections to one server, each presenting the same credentials.
#[derive(Clone)]
pub(crate) struct Dialer {
    endpoint: Endpoint,
    credentials: Credentials,
}

impl Dialer {
    /// A new connection.
    pub(crate) async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        Ok(self.present(self.endpoint.connect().await?, self.credentials.clone()))
    }

    /// `channel`, presenting `credentials`.
    fn present(&self, channel: tonic::transport::Channel, credentials: Credentials) -> Channel {
        tonic::service::interceptor::InterceptedService::new(channel, credentials)
    }
}

pub(crate) fn grpc_client(channel: Channel) -> LockstepClient<Channel> {
    LockstepClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

fn connect_error(addr: &str, e: tonic::transport::Error) -> Error {
    Error::Connect {
        addr: addr.to_owned(),
        reason: format!(
            "{}: is `lockstep serve` running there?",
            error::with_causes(e.to_string(), std::error::Error::source(&e))
        ),
    }
}

/// The request naming one sync point of `namespace`.
pub(crate) fn sync_request(namespace: &str, sync_id: &str) -> v1::SyncStatusRequest {
    v1::SyncStatusRequest { namespace: namespace.to_owned(), sync_id: sync_id.to_owned() }
}

/// How [`Client::connect_with`] connects: the token to present and TLS, both optional.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Presented as `authorization: Bearer <token>` on every call (see
    /// [`Client::connect_with_token`]).
    pub token: Option<String>,
    /// Connect over TLS, checking the server's certificate against this CA.
    pub tls: Option<TlsOptions>,
}

/// Filters for [`Client::list_agents`]; empty fields match anything.
#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    pub role: Option<String>,
    pub capability: Option<String>,
    pub status: Option<v1::AgentStatus>,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: impl AsRef<str>) -> Result<Client, Error> {
        Client::connect_with_token(addr, None).await
    }

    /// Connects to `addr` presenting `token` (`authorization: Bearer <token>`) on every call: on
    /// its queries, and on every agent's session (checked when the session opens) — for a server
    /// that requires tokens (`lockstep serve --token-secret-file`; mint them with
    /// `lockstep token create`). The operators' clients made from it present it too, unless given
    /// a token of their own.
    pub async fn connect_with_token(addr: impl AsRef<str>, token: Option<&str>) -> Result<Client, Error> {
        Client::connect_with(addr, ConnectOptions { token: token.map(str::to_owned), tls: None }).await
    }

    /// Connects to `addr` as `options` say: presenting a token, over TLS. With TLS, `addr` is
    /// `host:port` or `https://host:port`.
    pub async fn connect_with(addr: impl AsRef<str>, options: ConnectOptions) -> Result<Client, Error> {
        let addr = addr.as_ref();
        let credentials = Credentials::new(options.token.as_deref(), None)?;
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
        let refused = |reason: String| Error::Connect { addr: addr.to_owned(), reason };
        match (uri.split("://").next(), &options.tls) {
            (Some("https"), None) => {
                return Err(refused("an https:// address needs TLS options: the CA to check the server against".into()))
            }
            (Some("http"), Some(_)) => {
                return Err(refused("TLS options were given for an http:// address: use https:// or host:port".into()))
            }
            _ => {}
        }
        let mut endpoint = Endpoint::from_shared(uri).map_err(|e| refused(e.to_string()))?;
        if let Some(tls) = &options.tls {
            endpoint = endpoint.tls_config(tls.config()).map_err(|e| refused(e.to_string()))?;
        }
        let endpoint = endpoint
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // Collectives' result chunks (256 KiB) arrive in one frame rather than sixteen.
            .max_frame_size(1024 * 1024)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10));
        let endpoint = Dialer { endpoint, credentials };
        let raw = endpoint.endpoint.connect().await.map_err(|e| connect_error(addr, e))?;
        let channel = endpoint.present(raw.clone(), endpoint.credentials.clone());
        Ok(Client {
            raw,
            endpoint,
            addr: addr.to_owned(),
            grpc: grpc_client(channel.clone()),
            channel,
            namespace: String::new(),
            beat: std::sync::Arc::new(agent::ConnectionBeat::new()),
            lean: Default::default(),
        })
    }

    /// The same connection, addressing another namespace (empty: `default`).
    pub fn with_namespace(&self, namespace: impl Into<String>) -> Client {
        Client { namespace: namespace.into(), ..self.clone() }
    }

    /// Registers an agent and opens its session, on an HTTP/2 connection of its own: one agent's
    /// traffic never shares a connection's flow-control window or socket with another's. For many
    /// co-located agents, [`Client::register_shared`] uses one connection for all of them.
    pub async fn register(&self, options: AgentOptions) -> Result<Agent, Error> {
        let channel = self.endpoint.connect().await.map_err(|e| connect_error(&self.addr, e))?;
        Agent::open(channel, &self.namespace, options, None, agent::Transport::Grpc).await
    }

    /// Registers an agent whose session shares this client's connection with its queries and with
    /// every other agent registered this way: one HTTP/2 connection (and one server-side socket)
    /// for many co-located agents. The agents sharing it take turns to heartbeat: the server renews
    /// every session of a connection on one heartbeat, so a thousand idle agents cost one heartbeat
    /// per interval. A session that reconnects stays on this connection (it connects again by
    /// itself) but heartbeats on its own from then on.
    pub async fn register_shared(&self, options: AgentOptions) -> Result<Agent, Error> {
        let beat = Some(self.beat.clone());
        Agent::open(self.channel.clone(), &self.namespace, options, beat, agent::Transport::Grpc).await
    }

    /// Registers an agent whose session runs over the server's lean transport (`lockstep serve
    /// --lean-listen`): a TCP connection of its own carrying length-delimited protobuf frames
    /// instead of a gRPC stream, for agents on the server's host that want the lowest latency per
    /// message (docs/PROTOCOL.md, "The lean transport"). The agent behaves as one registered with
    /// [`Client::register`]; its queries use this client's connection. The lean listener is
    /// found with `ServerInfo` on the same host as this client's address; the transport has no
    /// TLS, so a client connected over TLS is refused.
    pub async fn register_lean(&self, options: AgentOptions) -> Result<Agent, Error> {
        let dialer = self.lean_dialer().await?;
        Agent::open(self.channel.clone(), &self.namespace, options, None, agent::Transport::Lean(dialer)).await
    }

    /// Registers an agent whose session runs over the server's lean transport on one connection
    /// shared with this client's (and its clones') other agents registered this way: each frame
    /// names its session, one write carries what every session has ready and one read what the
    /// server sent to all of them, so that many co-located agents cost a few system calls per round
    /// instead of one or more each (docs/PROTOCOL.md, "The lean transport"). The agents take turns
    /// to heartbeat, as with [`Client::register_shared`]. The sessions share the connection's
    /// order: an agent that stops reading what it is sent holds up the others once its buffer is
    /// full; give such an agent a connection of its own ([`Client::register_lean`]). When the
    /// connection breaks each session resumes by the reconnection policy on a new shared one.
    pub async fn register_lean_shared(&self, options: AgentOptions) -> Result<Agent, Error> {
        let dialer = self.lean_dialer().await?;
        let mux = {
            let mut shared = self.lean.lock().expect("lean connection lock");
            match shared.as_ref().filter(|mux| mux.serves(&dialer)) {
                Some(mux) => mux.clone(),
                None => shared.insert(std::sync::Arc::new(lean::Mux::new(dialer))).clone(),
            }
        };
        let beat = Some(mux.beat.clone());
        Agent::open(self.channel.clone(), &self.namespace, options, beat, agent::Transport::LeanShared(mux)).await
    }

    /// Where this client's lean sessions connect: the server's lean listener, found with
    /// `ServerInfo`, on the host this client reaches the server at.
    async fn lean_dialer(&self) -> Result<lean::Dialer, Error> {
        let refused = |reason: String| Error::Connect { addr: self.addr.clone(), reason };
        if self.endpoint.endpoint.uri().scheme_str() == Some("https") {
            return Err(refused("the lean transport has no TLS; register over gRPC (register) instead".into()));
        }
        let port = self.server_info().await?.lean_port;
        if port == 0 {
            return Err(refused("the server serves no lean transport (start it with --lean-listen)".into()));
        }
        let host = self.endpoint.endpoint.uri().host().unwrap_or("127.0.0.1").to_owned();
        Ok(lean::Dialer {
            addr: format!("{host}:{port}"),
            token: self.endpoint.credentials.token().unwrap_or_default(),
            max_message: MAX_MESSAGE,
        })
    }

    /// The operators' API on this connection, presenting `token` if the server requires one and
    /// naming the operator `actor` in the audit log. Forcing and cleaning up sync points
    /// ([`AdminClient::force_complete_sync`], [`AdminClient::cleanup_sync_points`]) are operators'
    /// actions too, served beside the agents' calls: they need the token as well.
    pub fn admin(&self, token: Option<&str>, actor: Option<&str>) -> Result<AdminClient, Error> {
        Ok(AdminClient::new(self.with_credentials(token, actor)?, self.namespace.clone()))
    }

    /// The operators' API of a server whose `Admin` service listens on its own address.
    pub async fn connect_admin(addr: &str, token: Option<&str>, actor: Option<&str>) -> Result<AdminClient, Error> {
        Client::connect(addr).await?.admin(token, actor)
    }

    /// This client's connection, presenting `token` (else this client's own) and naming `actor`.
    fn with_credentials(&self, token: Option<&str>, actor: Option<&str>) -> Result<Channel, Error> {
        Ok(self.endpoint.present(self.raw.clone(), self.endpoint.credentials.with(token, actor)?))
    }

    /// Agents matching `filter`, sorted by id (every page of the listing).
    pub async fn list_agents(&self, filter: AgentFilter) -> Result<Vec<v1::AgentInfo>, Error> {
        let req = v1::ListAgentsRequest {
            namespace: self.namespace.clone(),
            role: filter.role.unwrap_or_default(),
            capability: filter.capability.unwrap_or_default(),
            status: filter.status.map_or(0, |s| s as i32),
            ..Default::default()
        };
        every_page(|page_token| {
            let (mut grpc, req) = (self.grpc.clone(), v1::ListAgentsRequest { page_token, ..req.clone() });
            async move {
                let page = grpc.list_agents(req).await?.into_inner();
                Ok((page.agents, page.next_page_token))
            }
        })
        .await
    }

    /// Agents that declared `capability`.
    pub async fn agents_with_capability(&self, capability: &str) -> Result<Vec<v1::AgentInfo>, Error> {
        self.list_agents(AgentFilter { capability: Some(capability.to_owned()), ..Default::default() }).await
    }

    /// Registry changes: first one `Snapshot` event per agent already registered, then joins,
    /// leaves, status changes and lost leases as they happen.
    pub async fn watch_registry(&self) -> Result<tonic::Streaming<v1::RegistryEvent>, Error> {
        let req = v1::WatchRegistryRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().watch_registry(req).await?.into_inner())
    }

    /// Tasks of this namespace (see [`TasksClient`]).
    pub fn tasks(&self) -> TasksClient {
        TasksClient::new(self.channel.clone(), self.namespace.clone(), MAX_MESSAGE)
    }

    /// Tick round series of this namespace (see [`RoundsClient`]).
    pub fn rounds(&self) -> RoundsClient {
        RoundsClient::new(self.channel.clone(), self.namespace.clone(), MAX_MESSAGE)
    }

    /// Execution traces of this namespace, read from anywhere (see [`TracesClient`]).
    pub fn traces(&self) -> TracesClient {
        TracesClient::new(self.channel.clone(), self.namespace.clone())
    }

    /// Tick controllers and latency buffers of this namespace (see [`StreamsClient`]); `token`
    /// is the admin token creating and removing them needs when the server has one, `actor` the
    /// name the audit log gives the caller.
    pub fn streams(&self, token: Option<&str>, actor: Option<&str>) -> Result<StreamsClient, Error> {
        Ok(StreamsClient::new(self.with_credentials(token, actor)?, self.namespace.clone()))
    }

    /// The server's intake rule set and counters (see [`IntakeClient`]); `token` is the admin
    /// token replacing the set needs when the server has one, `actor` the name the audit log
    /// gives the caller.
    pub fn intake(&self, token: Option<&str>, actor: Option<&str>) -> Result<IntakeClient, Error> {
        Ok(IntakeClient::new(self.with_credentials(token, actor)?))
    }

    /// The server's sync monitor (see [`SystemsClient`]); `token` is the admin token changing
    /// the registry and acting on incidents needs when the server has one, `actor` the name the
    /// audit log gives the caller.
    pub fn systems(&self, token: Option<&str>, actor: Option<&str>) -> Result<SystemsClient, Error> {
        Ok(SystemsClient::new(self.with_credentials(token, actor)?))
    }

    /// Shared context of this namespace (see [`ContextClient`]).
    pub fn context(&self) -> ContextClient {
        ContextClient {
            grpc: lockstep_proto::v1::shared_context_client::SharedContextClient::new(self.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            namespace: self.namespace.clone(),
            writer: "client".into(),
        }
    }

    /// An agent's state and version.
    pub async fn get_state(&self, agent_id: &str) -> Result<(u64, serde_json::Value), Error> {
        agent::fetch_state(&mut self.grpc.clone(), &self.namespace, agent_id).await
    }

    /// Every sync point, waiting or retained, sorted by id (every page of the listing).
    pub async fn list_sync_points(&self) -> Result<Vec<v1::SyncPointStatus>, Error> {
        every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::ListSyncPointsRequest { namespace: self.namespace.clone(), page_token, page_size: 0 };
            async move {
                let page = grpc.list_sync_points(req).await?.into_inner();
                Ok((page.sync_points, page.next_page_token))
            }
        })
        .await
    }

    /// Collectives gathering or transferring in the namespace, with who is missing.
    pub async fn list_collectives(&self) -> Result<Vec<v1::CollectiveStatus>, Error> {
        let req = v1::ListCollectivesRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().list_collectives(req).await?.into_inner().collectives)
    }

    /// Replica groups of the namespace: members in rank order, current state version.
    pub async fn list_groups(&self) -> Result<Vec<v1::GroupInfo>, Error> {
        let req = v1::ListGroupsRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().list_groups(req).await?.into_inner().groups)
    }

    fn sync_request(&self, sync_id: &str) -> v1::SyncStatusRequest {
        sync_request(&self.namespace, sync_id)
    }

    /// One sync point's status.
    pub async fn sync_status(&self, sync_id: &str) -> Result<v1::SyncPointStatus, Error> {
        Ok(self.grpc.clone().sync_status(self.sync_request(sync_id)).await?.into_inner())
    }

    /// One sync point's status in plain language, with recommendations.
    pub async fn diagnose_sync(&self, sync_id: &str) -> Result<v1::SyncDiagnosis, Error> {
        Ok(self.grpc.clone().diagnose_sync(self.sync_request(sync_id)).await?.into_inner())
    }

    /// Every vote of the namespace, open or retained, with its full record.
    pub async fn list_votes(&self) -> Result<Vec<v1::VoteRecord>, Error> {
        let req = v1::ListVotesRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().list_votes(req).await?.into_inner().votes)
    }

    fn vote_request(&self, vote_id: &str) -> v1::VoteStatusRequest {
        v1::VoteStatusRequest { namespace: self.namespace.clone(), vote_id: vote_id.to_owned() }
    }

    /// One vote's full record: who voted what, who abstained, who never voted, the outcome.
    pub async fn vote_status(&self, vote_id: &str) -> Result<v1::VoteRecord, Error> {
        Ok(self.grpc.clone().vote_status(self.vote_request(vote_id)).await?.into_inner())
    }

    /// One vote in plain language, with recommendations.
    pub async fn diagnose_vote(&self, vote_id: &str) -> Result<v1::VoteDiagnosis, Error> {
        Ok(self.grpc.clone().diagnose_vote(self.vote_request(vote_id)).await?.into_inner())
    }

    /// Server version, clock, limits and counters.
    pub async fn server_info(&self) -> Result<v1::ServerInfoResponse, Error> {
        Ok(self.grpc.clone().server_info(v1::ServerInfoRequest {}).await?.into_inner())
    }
}

/// Follows a listing's pages: `fetch(token)` answers one page and the next page's token (empty
/// after the last), starting from the empty token.
async fn every_page<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, Error>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), Error>>,
{
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let (items, next) = fetch(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// The README's Rust quick start, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeQuickStart;
