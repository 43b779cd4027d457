//! End-to-end: agent sessions over the lean transport (`lockstep serve --lean-listen`,
//! `Client::register_lean`) behave as gRPC sessions do — they meet gRPC agents on topics, at
//! barriers and in requests, carry tokens, end with the same errors, resume after the server
//! restarts — and the lean listener refuses what is not its protocol with a clear END frame.
//! Agents sharing one multiplexed lean connection (`Client::register_lean_shared`) keep their
//! sessions apart: each gets its own deliveries, replies and end.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use lockstep_client::{AgentFilter, Error, Participants, Reason};
use lockstep_proto::{lean, v1};
use prost::Message;
use support::{eventually, opts, ScratchDir, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn lean_server(extra: &[&str]) -> Server {
    Server::start(&[&["--lean-listen", "127.0.0.1:0"], extra].concat())
}

#[tokio::test]
async fn lean_and_grpc_agents_meet_on_topics_at_barriers_and_in_requests() {
    let server = lean_server(&[]);
    let client = server.client().await;
    let lean = client.register_lean(opts("lean", "worker").interests(["to.lean", "ask.lean"])).await.unwrap();
    let grpc = client.register(opts("grpc", "worker").interests(["to.grpc"])).await.unwrap();

    // Both ways on topics.
    let (mut at_lean, mut at_grpc) = (lean.deliveries().unwrap(), grpc.deliveries().unwrap());
    grpc.publish_confirmed("to.lean", &b"from grpc"[..]).await.unwrap();
    lean.publish_confirmed("to.grpc", &b"from lean"[..]).await.unwrap();
    let d = tokio::time::timeout(T, at_lean.recv()).await.unwrap().unwrap();
    assert_eq!((d.topic.as_str(), &d.payload[..], d.publisher.as_str()), ("to.lean", &b"from grpc"[..], "grpc"));
    let d = tokio::time::timeout(T, at_grpc.recv()).await.unwrap().unwrap();
    assert_eq!((&d.payload[..], d.publisher.as_str()), (&b"from lean"[..], "lean"));

    // A barrier of the two.
    let everyone = Participants::Count(2);
    let (a, b) =
        tokio::join!(lean.sync("meet", everyone.clone(), T, &b"l"[..]), grpc.sync("meet", everyone, T, &b"g"[..]));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.count, b.count), (2, 2));
    assert_eq!(a.arrival_order, b.arrival_order);

    // A request answered over the lean session.
    let mut requests = lean.requests().unwrap();
    let responder = tokio::spawn(async move {
        let r = requests.recv().await.expect("a request");
        let echo = [&b"echo: "[..], &r.payload[..]].concat();
        r.respond(echo).await.expect("answered");
    });
    let answer = grpc.request("ask.lean", &b"ping"[..], T).await.unwrap();
    assert_eq!(&answer.payload[..], b"echo: ping");
    responder.await.unwrap();

    // State written over lean is read over gRPC.
    lean.update_state(&serde_json::json!({"step": 7})).await.unwrap();
    let (_, state) = client.get_state("lean").await.unwrap();
    assert_eq!(state["step"], 7);
}

#[tokio::test]
async fn a_lean_session_is_refused_with_the_same_errors_as_a_grpc_one() {
    let server = lean_server(&[]);
    let client = server.client().await;
    let _held = client.register(opts("taken", "worker")).await.unwrap();
    let over_lean = client.register_lean(opts("taken", "worker")).await.err().expect("refused over lean");
    let over_grpc = client.register(opts("taken", "worker")).await.err().expect("refused over gRPC");
    assert_eq!(over_lean.reason(), over_grpc.reason());
    assert_eq!(over_lean.reason(), Some(Reason::AlreadyRegistered));

    let invalid = client.register_lean(opts("not a valid id!", "worker")).await.err().expect("refused");
    assert!(matches!(invalid, Error::InvalidArgument(_)), "{invalid:?}");
}

#[tokio::test]
async fn closing_a_lean_agent_removes_it_at_once() {
    let server = lean_server(&[]);
    let client = server.client().await;
    let agent = client.register_lean(opts("leaving", "worker")).await.unwrap();
    assert_eq!(client.list_agents(AgentFilter::default()).await.unwrap().len(), 1);
    let handle = agent.clone();
    agent.close().await.unwrap();
    assert!(client.list_agents(AgentFilter::default()).await.unwrap().is_empty(), "deregistered at once");
    assert!(matches!(handle.ended(), Some(Error::SessionEnded(_))), "ended normally: {:?}", handle.ended());

    // A client that says goodbye and closes its side at once (as the Python client does) gets the
    // normal end too, however the two are read.
    let addr = lean_addr(&client).await;
    let hello = (lean::HELLO, v1::LeanHello { version: 1, token: String::new(), multiplex: false }.encode_to_vec());
    let goodbye =
        v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Deregister(v1::Deregister {})) };
    for k in 0..5 {
        let frames =
            [hello.clone(), (lean::MESSAGE, register(&format!("brief-{k}"))), (lean::MESSAGE, goodbye.encode_to_vec())];
        let end = exchange_then(&mut TcpStream::connect(&addr).await.unwrap(), &frames, true).await;
        assert_eq!(end.code, 0, "{end:?}");
    }
    assert!(client.list_agents(AgentFilter::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_server_without_a_lean_listener_is_named_as_the_reason() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let refused = client.register_lean(opts("a", "worker")).await.err().expect("refused");
    assert!(matches!(&refused, Error::Connect { reason, .. } if reason.contains("--lean-listen")), "{refused}");
}

#[tokio::test]
async fn a_lean_agent_resumes_its_session_after_the_server_restarts() {
    let dir = ScratchDir::new("lean-resume");
    let (listen, lean_listen) = (support::free_listen_addr(), support::free_listen_addr());
    let data = dir.path().to_str().unwrap().to_owned();
    let flags = ["--lean-listen", &lean_listen];
    let mut server = Server::start_durable(&listen, dir.path(), &flags);
    let client = server.client().await;
    let agent = client.register_lean(opts("survivor", "worker").interests(["news"])).await.unwrap();
    let mut deliveries = agent.deliveries().unwrap();
    let sharing = client.register_lean_shared(opts("sharing", "worker").interests(["news"])).await.unwrap();
    let mut shared_deliveries = sharing.deliveries().unwrap();
    server.kill();
    let server = Server::start_durable(&listen, std::path::Path::new(&data), &flags);
    let client = server.client().await;
    let publisher = client.register(opts("publisher", "feed")).await.unwrap();
    // The agent reconnects by itself over lean; once it is back, what is published reaches it.
    let listed = || async {
        let agents = client.list_agents(AgentFilter::default()).await.unwrap();
        ["survivor", "sharing"].iter().all(|id| agents.iter().any(|a| a.agent_id == *id))
    };
    assert!(eventually(T, listed).await, "both lean agents came back");
    publisher.publish_confirmed("news", &b"after"[..]).await.unwrap();
    for deliveries in [&mut deliveries, &mut shared_deliveries] {
        let d = tokio::time::timeout(T, deliveries.recv()).await.expect("in time").expect("the session lives");
        assert_eq!(&d.payload[..], b"after");
    }
    assert!(agent.ended().is_none(), "{:?}", agent.ended());
    assert!(sharing.ended().is_none(), "{:?}", sharing.ended());
}

#[tokio::test]
async fn agents_sharing_a_lean_connection_keep_their_sessions_apart() {
    let server = lean_server(&[]);
    let client = server.client().await;
    const N: u32 = 40;
    let mut agents = Vec::new();
    for j in 0..N {
        let options = opts(&format!("s{j}"), "worker").interests([format!("to.s{j}"), "to.all".to_owned()]);
        agents.push(client.register_lean_shared(options).await.unwrap());
    }
    // Clones of the client share the connection too.
    agents.push(client.clone().register_lean_shared(opts("clone", "worker")).await.unwrap());
    let lean_port = client.server_info().await.unwrap().lean_port;
    assert_eq!(connections_to(lean_port as u16), 1, "every agent on one lean connection");

    // Many registering at once: whichever sends first, each session opens.
    let other = server.client().await.with_namespace("crowd");
    let crowd = (0..200).map(|j| other.register_lean_shared(opts(&format!("c{j}"), "worker")));
    let crowd = tokio::time::timeout(T, futures::future::join_all(crowd)).await.expect("all registered in time");
    let refused: Vec<String> = crowd.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(connections_to(lean_port as u16), 2, "one more connection, for the other client");
    drop(crowd);

    // Each gets what is published to it alone, and what is published to all, nothing else.
    let publisher = client.register(opts("publisher", "feed")).await.unwrap();
    let mut inboxes: Vec<_> = agents[..N as usize].iter().map(|a| a.deliveries().unwrap()).collect();
    for j in 0..N {
        publisher.publish_confirmed(&format!("to.s{j}"), format!("for s{j}").into_bytes()).await.unwrap();
    }
    publisher.publish_confirmed("to.all", &b"for all"[..]).await.unwrap();
    for (j, inbox) in inboxes.iter_mut().enumerate() {
        let own = tokio::time::timeout(T, inbox.recv()).await.unwrap().unwrap();
        assert_eq!(own.payload, format!("for s{j}").into_bytes());
        let all = tokio::time::timeout(T, inbox.recv()).await.unwrap().unwrap();
        assert_eq!(&all.payload[..], b"for all");
        assert!(inbox.try_recv().is_none(), "s{j} got nothing else");
    }

    // A barrier of them all, each answered on its own session; replies to requests too.
    let rounds = agents.iter().map(|a| a.sync("all", Participants::Count(N + 1), T, a.id().as_bytes().to_vec()));
    let outcomes = futures::future::join_all(rounds).await;
    for outcome in outcomes {
        let outcome = outcome.unwrap();
        assert_eq!(outcome.count, N + 1);
    }
    let writes = agents.iter().map(|a| a.update_state_json(serde_json::json!({"me": a.id()}).to_string()));
    let versions = futures::future::join_all(writes).await;
    assert!(versions.into_iter().all(|v| v.unwrap() >= 1));
    let (_, state) = client.get_state("s7").await.unwrap();
    assert_eq!(state["me"], "s7");

    // One leaves; the others keep their sessions on the connection.
    agents.remove(3).close().await.unwrap();
    let ids: Vec<String> =
        client.list_agents(AgentFilter::default()).await.unwrap().into_iter().map(|a| a.agent_id).collect();
    assert!(!ids.contains(&"s3".to_owned()) && ids.contains(&"s4".to_owned()), "{ids:?}");
    publisher.publish_confirmed("to.all", &b"again"[..]).await.unwrap();
    let d = tokio::time::timeout(T, inboxes[4].recv()).await.unwrap().unwrap();
    assert_eq!(&d.payload[..], b"again");
    assert!(agents.iter().all(|a| a.ended().is_none()));
}

/// Established TCP connections of this machine to loopback port `port` (from `/proc/net/tcp`).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && fields[3] == "01"
        })
        .count()
}

#[tokio::test]
async fn a_multiplexed_connection_opens_and_ends_each_session_apart() {
    let server = lean_server(&[]);
    let client = server.client().await;
    let addr = lean_addr(&client).await;
    let mut raw = TcpStream::connect(&addr).await.unwrap();
    let hello = v1::LeanHello { version: 1, token: String::new(), multiplex: true };
    let mut out = BytesMut::new();
    lean::put_frame(&mut out, lean::HELLO, &hello);
    let message = |kind| v1::ClientMessage { request_id: 0, kind: Some(kind) };
    let register = |id: &str| {
        message(v1::client_message::Kind::Register(v1::Register {
            agent_id: id.into(),
            role: "worker".into(),
            ..Default::default()
        }))
    };
    lean::put_session_message(&mut out, 1, &register("m1"));
    lean::put_session_message(&mut out, 2, &register("m2"));
    // Session 3 opens without registering: only it is refused.
    lean::put_session_message(&mut out, 3, &message(v1::client_message::Kind::Heartbeat(v1::Heartbeat {})));
    raw.write_all(&out).await.unwrap();
    let mut reader = SessionFrames::default();
    let (mut registered, mut refused) = (Vec::new(), None);
    while registered.len() < 2 || refused.is_none() {
        match reader.next(&mut raw).await {
            (id, SessionFrame::Message(m)) if matches!(m.kind, Some(v1::server_message::Kind::Registered(_))) => {
                registered.push(id)
            }
            (id, SessionFrame::End(end)) => refused = Some((id, end.code)),
            _ => {}
        }
    }
    registered.sort();
    assert_eq!(registered, [1, 2]);
    assert_eq!(refused, Some((3, tonic::Code::InvalidArgument as i32)));

    // A new session must have a higher id than those opened before it: one that has not is told.
    out.clear();
    lean::put_session_message(&mut out, 0, &register("late"));
    raw.write_all(&out).await.unwrap();
    loop {
        if let (0, SessionFrame::End(end)) = reader.next(&mut raw).await {
            assert_eq!(end.code, tonic::Code::InvalidArgument as i32, "{end:?}");
            assert!(support::reworded() || end.message.contains("must increase"), "{}", end.message);
            break;
        }
    }
    eventually(T, || async { client.list_agents(AgentFilter::default()).await.unwrap().len() == 2 }).await;

    // Session 1 says goodbye and closes its side: it ends normally, alone.
    out.clear();
    lean::put_session_message(&mut out, 1, &message(v1::client_message::Kind::Deregister(v1::Deregister {})));
    lean::put_session_frame(&mut out, lean::SESSION_CLOSE, 1, None);
    raw.write_all(&out).await.unwrap();
    loop {
        if let (1, SessionFrame::End(end)) = reader.next(&mut raw).await {
            assert_eq!(end.code, 0, "{end:?}");
            break;
        }
    }
    let ids: Vec<String> =
        client.list_agents(AgentFilter::default()).await.unwrap().into_iter().map(|a| a.agent_id).collect();
    assert_eq!(ids, ["m2"]);

    // A frame that is not a session's breaks the connection: m2's stream breaks, its lease is kept.
    out.clear();
    lean::put_frame(&mut out, lean::MESSAGE, &v1::Heartbeat {});
    raw.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(T, raw.read_to_end(&mut rest)).await.expect("the server closes it");
    assert!(closed.is_ok(), "{closed:?}");
    let ids: Vec<String> =
        client.list_agents(AgentFilter::default()).await.unwrap().into_iter().map(|a| a.agent_id).collect();
    assert_eq!(ids, ["m2"], "kept for its lease");
}

#[tokio::test]
async fn a_multiplexed_connection_refuses_a_session_past_its_limit() {
    let server = lean_server(&[]);
    let client = server.client().await;
    let mut raw = TcpStream::connect(lean_addr(&client).await).await.unwrap();
    let mut out = BytesMut::new();
    lean::put_frame(&mut out, lean::HELLO, &v1::LeanHello { version: 1, token: String::new(), multiplex: true });
    // Sessions that have opened and sent the first byte of a message: open, waiting for the rest.
    const LIMIT: u32 = 10_000;
    for id in 0..=LIMIT {
        lean::put_session_data(&mut out, id, &[0]);
    }
    raw.write_all(&out).await.unwrap();
    let mut reader = SessionFrames::default();
    let (id, frame) = reader.next(&mut raw).await;
    let SessionFrame::End(end) = frame else { panic!("the first frame back is an END") };
    assert_eq!((id, end.code), (LIMIT, tonic::Code::ResourceExhausted as i32), "{end:?}");
    assert!(support::reworded() || end.message.contains("10000"), "{}", end.message);
}

/// What a multiplexed connection's server side sent one session.
enum SessionFrame {
    Message(v1::ServerMessage),
    End(v1::LeanEnd),
}

/// Reads a multiplexed connection's frames, joining each session's bytes into whole messages.
#[derive(Default)]
struct SessionFrames {
    buf: BytesMut,
    streams: std::collections::HashMap<u32, BytesMut>,
    ready: std::collections::VecDeque<(u32, SessionFrame)>,
}

impl SessionFrames {
    async fn next(&mut self, raw: &mut TcpStream) -> (u32, SessionFrame) {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return next;
            }
            while self.buf.len() >= lean::HEADER_BYTES {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() < lean::HEADER_BYTES + len {
                    break;
                }
                let frame = self.buf.split_to(lean::HEADER_BYTES + len);
                let kind = lean::kind(&frame);
                let (id, payload) = lean::session_payload(frame).expect("a session id");
                if kind == Some(lean::SESSION_END) {
                    self.ready.push_back((id, SessionFrame::End(v1::LeanEnd::decode(payload).unwrap())));
                    continue;
                }
                assert_eq!(kind, Some(lean::SESSION_DATA));
                let stream = self.streams.entry(id).or_default();
                stream.extend_from_slice(&payload);
                while stream.len() >= 5 {
                    let len = u32::from_be_bytes(stream[1..5].try_into().unwrap()) as usize;
                    if stream.len() < 5 + len {
                        break;
                    }
                    let m = stream.split_to(5 + len).split_off(5);
                    self.ready.push_back((id, SessionFrame::Message(v1::ServerMessage::decode(m).unwrap())));
                }
            }
            if self.ready.is_empty() {
                let n =
                    tokio::time::timeout(T, raw.read_buf(&mut self.buf)).await.expect("the server answers").unwrap();
                assert!(n > 0, "the connection closed");
            }
        }
    }
}

#[tokio::test]
async fn a_lean_session_presents_its_token() {
    let dir = ScratchDir::new("lean-token");
    let secret = dir.join("secret");
    std::fs::write(&secret, "a lean-transport test secret of more than 32 bytes").unwrap();
    let token = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args([
                "token",
                "create",
                "--secret-file",
                secret.to_str().unwrap(),
                "--subject",
                "a",
                "--namespace",
                "default",
                "--agent",
                "a",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let server = lean_server(&["--token-secret-file", secret.to_str().unwrap()]);
    let with = lockstep_client::Client::connect_with_token(&server.addr, Some(&token)).await.unwrap();
    with.register_lean(opts("a", "worker")).await.expect("a valid token registers");

    // Without a token the hello is refused as a gRPC call without one is.
    let mut raw = TcpStream::connect(lean_addr(&with).await).await.unwrap();
    let end = exchange(
        &mut raw,
        &[(lean::HELLO, v1::LeanHello { version: 1, token: String::new(), multiplex: false }.encode_to_vec())],
    )
    .await;
    assert_eq!(end.code, tonic::Code::Unauthenticated as i32, "{end:?}");
}

/// The lean listener's address, as the server tells it.
async fn lean_addr(client: &lockstep_client::Client) -> String {
    format!("127.0.0.1:{}", client.server_info().await.unwrap().lean_port)
}

/// Sends `frames` on a raw lean connection and reads until the server's END frame.
async fn exchange(raw: &mut TcpStream, frames: &[(u8, Vec<u8>)]) -> v1::LeanEnd {
    exchange_then(raw, frames, false).await
}

/// [`exchange`], closing the connection's write side after the frames when `half_close`.
async fn exchange_then(raw: &mut TcpStream, frames: &[(u8, Vec<u8>)], half_close: bool) -> v1::LeanEnd {
    let mut out = Vec::new();
    for (kind, payload) in frames {
        out.push(*kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }
    raw.write_all(&out).await.unwrap();
    if half_close {
        raw.shutdown().await.unwrap();
    }
    let mut buf = BytesMut::new();
    loop {
        while buf.len() >= lean::HEADER_BYTES {
            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < lean::HEADER_BYTES + len {
                break;
            }
            let frame = buf.split_to(lean::HEADER_BYTES + len);
            if lean::kind(&frame) == Some(lean::END) {
                return v1::LeanEnd::decode(lean::payload(frame)).unwrap();
            }
        }
        let n = tokio::time::timeout(T, raw.read_buf(&mut buf)).await.expect("the server answers").unwrap();
        assert!(n > 0, "the connection closed without an END frame");
    }
}

fn register(id: &str) -> Vec<u8> {
    let register = v1::Register { agent_id: id.into(), role: "worker".into(), ..Default::default() };
    v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Register(register)) }.encode_to_vec()
}

#[tokio::test]
async fn the_lean_listener_refuses_what_is_not_its_protocol_with_a_clear_end() {
    let dir = ScratchDir::new("lean-limits");
    let file = dir.join("lockstep.toml");
    std::fs::write(&file, "[limits]\nmax_payload_bytes = 1024\n").unwrap();
    let server = lean_server(&["--config", file.to_str().unwrap()]);
    let client = server.client().await;
    let addr = lean_addr(&client).await;
    assert_eq!(server.lean_addr, addr, "serve prints the address ServerInfo tells");
    let hello = || (lean::HELLO, v1::LeanHello { version: 1, token: String::new(), multiplex: false }.encode_to_vec());

    // A first frame that is not a hello.
    let end = exchange(&mut TcpStream::connect(&addr).await.unwrap(), &[(lean::MESSAGE, register("a"))]).await;
    assert_eq!(end.code, tonic::Code::InvalidArgument as i32);
    assert!(support::reworded() || end.message.contains("HELLO"), "{}", end.message);

    // A version this server does not speak.
    let v9 = v1::LeanHello { version: 9, token: String::new(), multiplex: false }.encode_to_vec();
    let end = exchange(&mut TcpStream::connect(&addr).await.unwrap(), &[(lean::HELLO, v9)]).await;
    assert_eq!(end.code, tonic::Code::InvalidArgument as i32);
    assert!(support::reworded() || end.message.contains("version"), "{}", end.message);

    // A session whose first message is not a registration.
    let heartbeat =
        v1::ClientMessage { request_id: 0, kind: Some(v1::client_message::Kind::Heartbeat(v1::Heartbeat::default())) }
            .encode_to_vec();
    let end = exchange(&mut TcpStream::connect(&addr).await.unwrap(), &[hello(), (lean::MESSAGE, heartbeat)]).await;
    assert_eq!(end.code, tonic::Code::InvalidArgument as i32, "{end:?}");
    assert!(support::reworded() || end.message.contains("register"), "{}", end.message);

    // A frame over the message cap ends the session as an oversized gRPC message does, and the
    // agent keeps its lease (it may resume).
    let over = vec![0u8; 2 * 1024 * 1024];
    let end = exchange(
        &mut TcpStream::connect(&addr).await.unwrap(),
        &[hello(), (lean::MESSAGE, register("big")), (lean::MESSAGE, over)],
    )
    .await;
    assert_eq!(end.code, tonic::Code::ResourceExhausted as i32, "{end:?}");
    let agents = client.list_agents(AgentFilter::default()).await.unwrap();
    assert!(agents.iter().any(|a| a.agent_id == "big"), "the agent is kept for its lease");
}

#[test]
fn a_lean_listener_beyond_loopback_needs_authentication() {
    let (failed, stderr) = support::serve_fails(&["--lean-listen", "0.0.0.0:0"]);
    assert!(failed);
    assert!(stderr.contains("lean agents' listener"), "{stderr}");
}
