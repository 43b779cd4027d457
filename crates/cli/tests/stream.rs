//! End-to-end: a session stream survives resets and bad messages. Raw gRPC sessions (bytes on the
//! wire, no client library) against a real `lockstep serve` process on loopback.
//!
//! * Only `deregister` removes an agent at once; a stream that is reset, cancelled or half-closed
//!   keeps the agent for its lease, and resuming with the token gets its state back.
//! * A message that is framed but not a valid `ClientMessage` is answered with `INVALID_ARGUMENT`
//!   and the session goes on; one over the message cap ends the stream with a status naming the
//!   limit (`MESSAGE_TOO_LARGE`), and the agent is kept as for any broken stream.
//! * The server announces its limits at registration, and the Rust client refuses over-limit
//!   requests before sending them.

mod support;

use std::time::Duration;

use bytes::{BufMut, Bytes};
use lockstep_client::{proto as v1, AgentFilter, Client, Error, Reason};
use prost::Message;
use serde_json::json;
use support::{opts, reworded, ScratchDir, Server};
use tokio::sync::mpsc;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

const T: Duration = Duration::from_secs(10);

/// A codec that sends bytes as they are (any bytes, valid protobuf or not) and reads
/// `ServerMessage`s.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct ServerMessageDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = v1::ServerMessage;
    type Encoder = RawEncoder;
    type Decoder = ServerMessageDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ServerMessageDecoder {
        ServerMessageDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ServerMessageDecoder {
    type Item = v1::ServerMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<v1::ServerMessage>, Status> {
        v1::ServerMessage::decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// A session stream spoken by hand: what is sent goes on the wire as given.
struct RawSession {
    /// The session's own connection, kept open for as long as the session is.
    _channel: tonic::transport::Channel,
    tx: Option<mpsc::Sender<Bytes>>,
    rx: Option<tonic::Streaming<v1::ServerMessage>>,
}

fn message(request_id: u64, kind: v1::client_message::Kind) -> Bytes {
    v1::ClientMessage { request_id, kind: Some(kind) }.encode_to_vec().into()
}

fn register(agent_id: &str, resume_token: &str) -> Bytes {
    let r = v1::Register {
        agent_id: agent_id.into(),
        role: "worker".into(),
        resume_token: resume_token.into(),
        ..Default::default()
    };
    message(0, v1::client_message::Kind::Register(r))
}

fn update(request_id: u64, delta_json: &str) -> Bytes {
    message(request_id, v1::client_message::Kind::UpdateState(v1::UpdateState { delta_json: delta_json.into() }))
}

impl RawSession {
    /// Opens a session on a connection of its own and sends `first`.
    async fn open(server: &Server, first: Bytes) -> RawSession {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .expect("connects");
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/lockstep.v1.Lockstep/Session");
        let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let inbound = grpc.streaming(request, path, RawCodec).await.expect("the call starts").into_inner();
        RawSession { _channel: channel, tx: Some(tx), rx: Some(inbound) }
    }

    /// Registers `agent_id` (presenting `resume_token`, if not empty).
    async fn register(server: &Server, agent_id: &str, resume_token: &str) -> (RawSession, v1::Registered) {
        let mut s = RawSession::open(server, register(agent_id, resume_token)).await;
        match s.next().await {
            Ok(Some(v1::server_message::Kind::Registered(r))) => (s, r),
            other => panic!("expected `registered`, got {other:?}"),
        }
    }

    async fn send(&self, bytes: Bytes) {
        self.tx.as_ref().expect("not half-closed").send(bytes).await.expect("the stream takes it");
    }

    /// The next server message: `Ok(None)` when the stream ended normally, `Err` with its status.
    async fn next(&mut self) -> Result<Option<v1::server_message::Kind>, Status> {
        let rx = self.rx.as_mut().expect("still reading");
        let m = tokio::time::timeout(T, rx.message()).await.expect("the server answers in time")?;
        Ok(m.and_then(|m| m.kind))
    }

    /// The next reply (skipping anything else the server sends).
    async fn reply(&mut self) -> v1::Reply {
        loop {
            match self.next().await {
                Ok(Some(v1::server_message::Kind::Reply(r))) => return r,
                Ok(Some(_)) => continue,
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }

    /// How the stream ends (skipping what comes before).
    async fn end(&mut self) -> Option<Status> {
        loop {
            match self.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    }

    /// Drops the call, as a cancelled or crashed caller does: the client's HTTP/2 stack resets the
    /// stream (RST_STREAM with CANCEL). The connection stays open.
    fn reset(mut self) {
        self.rx.take();
        self.tx.take();
    }

    /// Ends the sending side without a goodbye (END_STREAM), still reading.
    fn half_close(&mut self) {
        self.tx.take();
    }
}

fn error_of(reply: &v1::Reply) -> &v1::Error {
    match &reply.outcome {
        Some(v1::reply::Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn listed(client: &Client, agent_id: &str) -> Option<v1::AgentInfo> {
    client.list_agents(AgentFilter::default()).await.unwrap().into_iter().find(|a| a.agent_id == agent_id)
}

/// The next registry event about `agent_id`.
async fn next_event(
    events: &mut tonic::Streaming<v1::RegistryEvent>,
    agent_id: &str,
    within: Duration,
) -> v1::RegistryEvent {
    loop {
        let e = tokio::time::timeout(within, events.message())
            .await
            .unwrap_or_else(|_| panic!("an event about {agent_id} within {within:?}"))
            .expect("the watch goes on")
            .expect("open");
        if e.agent.as_ref().is_some_and(|a| a.agent_id == agent_id) {
            return e;
        }
    }
}

fn kind(e: &v1::RegistryEvent) -> v1::registry_event::Kind {
    v1::registry_event::Kind::try_from(e.kind).unwrap()
}

const HEARTBEAT_MS: u64 = 200;
const LEASE_INTERVALS: u64 = 3;

fn short_lease_server() -> Server {
    Server::start(&[
        "--heartbeat-interval-ms",
        &HEARTBEAT_MS.to_string(),
        "--lease-intervals",
        &LEASE_INTERVALS.to_string(),
    ])
}

#[tokio::test]
async fn a_reset_stream_keeps_the_agent_for_its_lease_and_the_token_resumes_it_with_its_state() {
    let server = short_lease_server();
    let client = server.client().await;
    let lease = Duration::from_millis(HEARTBEAT_MS * LEASE_INTERVALS);
    let mut events = client.watch_registry().await.unwrap();

    // `kept` is reset and resumed; `dropped` is reset and never comes back.
    let (mut kept, registered) = RawSession::register(&server, "kept", "").await;
    kept.send(update(1, r#"{"step":1}"#)).await;
    assert!(matches!(kept.reply().await.outcome, Some(v1::reply::Outcome::StateVersion(_))));
    let token = registered.resume_token;
    let (dropped, _) = RawSession::register(&server, "dropped", "").await;
    assert_eq!(kind(&next_event(&mut events, "dropped", T).await), v1::registry_event::Kind::Joined);

    kept.reset();
    dropped.reset();
    // Give the server time to see the resets (a removal would show at once), then come back.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    let (mut back, registered) = RawSession::register(&server, "kept", &token).await;
    assert!(registered.resumed, "the session was kept for its lease, so the token resumes it");
    assert_eq!(client.get_state("kept").await.unwrap(), (1, json!({"step": 1})), "with its state");
    back.send(update(2, r#"{"step":2}"#)).await;
    assert!(matches!(
        back.reply().await.outcome,
        Some(v1::reply::Outcome::StateVersion(v1::StateVersion { version: 2 }))
    ));

    // The agent that never came back was not removed: it is lost when its lease runs out.
    let after = next_event(&mut events, "dropped", lease + T).await;
    assert_eq!(kind(&after), v1::registry_event::Kind::Lost, "a reset is a broken stream, not a goodbye: {after:?}");
    assert_eq!(listed(&client, "dropped").await.map(|a| a.status), Some(v1::AgentStatus::Lost as i32));

    // A goodbye removes the agent at once.
    back.send(message(0, v1::client_message::Kind::Deregister(v1::Deregister {}))).await;
    assert!(back.end().await.is_none(), "the server ends the stream normally after a goodbye");
    assert!(listed(&client, "kept").await.is_none(), "gone at once");
}

#[tokio::test]
async fn a_half_closed_stream_without_goodbye_is_told_and_the_agent_kept() {
    let server = short_lease_server();
    let client = server.client().await;
    let (mut s, _) = RawSession::register(&server, "quiet", "").await;
    s.half_close();
    let status = s.end().await.expect("the server ends the stream with a status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(lockstep_proto::reason::of_status(&status), Some(Reason::InvalidArgument));
    assert!(reworded() || status.message().contains("deregister"), "{}", status.message());
    // Kept (active for its lease, then lost), not removed.
    assert!(listed(&client, "quiet").await.is_some(), "a half-close is not a goodbye");
}

#[tokio::test]
async fn the_rust_client_says_goodbye_when_it_closes_or_is_dropped() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let mut events = client.watch_registry().await.unwrap();
    let closed = client.register(opts("closed", "worker")).await.unwrap();
    closed.close().await.unwrap();
    assert!(listed(&client, "closed").await.is_none(), "gone once close returns");
    let dropped = client.register(opts("dropped", "worker")).await.unwrap();
    assert_eq!(kind(&next_event(&mut events, "dropped", T).await), v1::registry_event::Kind::Joined);
    drop(dropped);
    // Within the default lease (3 s) it would only be lost; a goodbye makes it leave.
    assert_eq!(kind(&next_event(&mut events, "dropped", T).await), v1::registry_event::Kind::Left);
}

#[tokio::test]
async fn undecodable_messages_are_answered_and_the_session_goes_on() {
    let server = Server::start(&[]);
    let (mut s, _) = RawSession::register(&server, "garbled", "").await;

    // A delta that is not UTF-8: framed correctly, undecodable.
    let mut bad = update(5, "{}").to_vec();
    let n = bad.len();
    bad[n - 2..].copy_from_slice(&[0xc3, 0x28]);
    s.send(bad.into()).await;
    let reply = s.reply().await;
    assert_eq!(reply.request_id, 5, "answered under its own id");
    let e = error_of(&reply);
    assert_eq!((e.code, e.reason.as_str()), (tonic::Code::InvalidArgument as i32, "INVALID_ARGUMENT"));
    assert!(reworded() || e.message.contains("UTF-8"), "{}", e.message);

    // Garbage after a readable id, then garbage without one (answered as id 0).
    s.send(Bytes::from_static(&[0x08, 0x07, 0x22, 0x7f, 0x01])).await;
    let reply = s.reply().await;
    assert_eq!((reply.request_id, error_of(&reply).reason.as_str()), (7, "INVALID_ARGUMENT"));
    s.send(Bytes::from_static(&[0xff, 0xff, 0xff])).await;
    let reply = s.reply().await;
    assert_eq!((reply.request_id, error_of(&reply).reason.as_str()), (0, "INVALID_ARGUMENT"));

    // The session is intact.
    s.send(update(8, r#"{"ok":true}"#)).await;
    let reply = s.reply().await;
    assert_eq!(reply.request_id, 8);
    assert_eq!(reply.outcome, Some(v1::reply::Outcome::StateVersion(v1::StateVersion { version: 1 })));
}

/// Small limits, so that going over them is cheap.
const SMALL_LIMITS: &str = "
[limits]
max_payload_bytes = 1024
max_delta_bytes = 512
max_state_bytes = 1024
max_sync_payload_bytes = 100
";

fn small_limits_server(dir: &ScratchDir) -> Server {
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, SMALL_LIMITS).unwrap();
    Server::start(&["--config", config.to_str().unwrap()])
}

#[tokio::test]
async fn a_message_over_the_cap_ends_the_stream_naming_the_limit_and_the_agent_is_kept() {
    let dir = ScratchDir::new("stream-cap");
    let server = small_limits_server(&dir);
    let (mut s, registered) = RawSession::register(&server, "big", "").await;
    let limits = registered.limits.expect("the registration tells the limits");
    assert_eq!((limits.max_message_bytes, limits.max_delta_bytes, limits.max_sync_payload_bytes), (1024, 512, 100));
    let cap = limits.max_grpc_message_bytes;
    assert_eq!(cap, 1024 + 64 * 1024);

    let p = v1::Publish { topic: "t".into(), payload: Bytes::from(vec![7; cap as usize + 1]), ..Default::default() };
    s.send(message(1, v1::client_message::Kind::Publish(p))).await;
    let status = s.end().await.expect("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(lockstep_proto::reason::of_status(&status), Some(Reason::MessageTooLarge));
    assert!(reworded() || status.message().contains(&cap.to_string()), "names the limit: {}", status.message());

    let (_back, again) = RawSession::register(&server, "big", &registered.resume_token).await;
    assert!(again.resumed, "the agent was kept, as for any broken stream");
}

#[tokio::test]
async fn the_rust_client_refuses_over_limit_requests_before_sending_them() {
    let dir = ScratchDir::new("stream-client-limits");
    let server = small_limits_server(&dir);
    let client = server.client().await;
    let agent = client.register(opts("careful", "worker")).await.unwrap();
    assert_eq!(agent.limits().map(|l| l.max_message_bytes), Some(1024));

    let err = agent.publish("t", vec![0u8; 1025]).await.unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge { what: "the payload", size: 1025, limit: 1024, setting: "limits.max_payload_bytes" }
    );
    let err = agent.update_state(&json!({ "k": "x".repeat(600) })).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 512, setting: "limits.max_delta_bytes", .. }), "{err:?}");
    let participants = lockstep_client::Participants::Count(1);
    let err = agent.sync("s", participants, T, vec![0u8; 101]).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 100, .. }), "{err:?}");

    // Nothing reached the server, and the session goes on.
    assert!(agent.take_errors().is_empty());
    assert_eq!(agent.update_state(&json!({ "k": "small" })).await.unwrap(), 1);
    agent.publish_confirmed("t", vec![0u8; 1024]).await.unwrap();
}
