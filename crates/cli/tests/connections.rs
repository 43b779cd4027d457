//! End-to-end: the server bounds the connections it keeps — per peer address, unused ones, session
//! streams that never register — and keeps serving when it runs out of file descriptors.

mod support;

use std::time::Duration;

use lockstep_client::{proto as v1, Reason};
use support::{eventually, opts, Server};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

/// Waits until the server closes `socket` (EOF or reset), for at most `within`.
async fn closed_by_server(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // The server's HTTP/2 preface; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether a new client can connect and register an agent within `within` (retrying).
async fn an_agent_registers_within(server: &Server, within: Duration) -> bool {
    eventually(within, || async {
        match lockstep_client::Client::connect(&server.addr).await {
            Ok(client) => client.register(opts("after", "worker")).await.is_ok(),
            Err(_) => false,
        }
    })
    .await
}

/// A server whose `[connections]` section is `section`, and the directory holding its file.
fn server_with_connections(label: &str, section: &str) -> (Server, support::ScratchDir) {
    let dir = support::ScratchDir::new(label);
    let config = dir.join("lockstep.toml");
    std::fs::write(&config, format!("[connections]\n{section}\n")).unwrap();
    (Server::start(&["--config", config.to_str().unwrap()]), dir)
}

#[tokio::test]
async fn connections_past_the_per_peer_limit_are_closed_and_room_comes_back() {
    let (server, _dir) = server_with_connections("connections-limit", "max_per_peer = 3");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&server.addr).await.unwrap());
    }
    // The fourth from the same address is closed at once.
    let mut fourth = TcpStream::connect(&server.addr).await.unwrap();
    assert!(closed_by_server(&mut fourth, T).await, "a connection past the limit is closed");
    // The three held ones are still open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for socket in &mut held {
        let mut buf = [0u8; 64];
        let open = tokio::time::timeout(Duration::from_millis(100), socket.read(&mut buf)).await;
        assert!(!matches!(open, Ok(Ok(0)) | Ok(Err(_))), "a connection within the limit stays open: {open:?}");
    }
    // Once they go, an agent can connect and register.
    drop(held);
    let registered = an_agent_registers_within(&server, T).await;
    assert!(registered, "room came back when the held connections closed");
}

#[tokio::test]
async fn a_connection_that_carries_no_request_is_closed_and_a_used_one_is_not() {
    let (server, _dir) = server_with_connections("connections-idle", "first_request_within_ms = 300");
    let mut idle = TcpStream::connect(&server.addr).await.unwrap();
    assert!(closed_by_server(&mut idle, T).await, "an idle connection is closed after its deadline");
    // An agent's connection carries its session: it outlives the deadline many times over.
    let client = server.client().await;
    let agent = client.register(opts("worker", "worker")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    agent.update_state(&serde_json::json!({"still": "here"})).await.unwrap();
}

#[tokio::test]
async fn a_session_that_never_registers_is_ended_with_a_reason() {
    let (server, _dir) = server_with_connections("connections-register", "register_within_ms = 300");
    let (_tx, rx) = tokio::sync::mpsc::channel::<v1::ClientMessage>(1);
    let mut raw = v1::lockstep_client::LockstepClient::connect(format!("http://{}", server.addr)).await.unwrap();
    let ended = tokio::time::timeout(T, async {
        let mut inbound = raw.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        loop {
            if inbound.message().await?.is_none() {
                return Ok::<(), tonic::Status>(());
            }
        }
    })
    .await
    .expect("the server ends the stream");
    let status = ended.expect_err("with an error status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(lockstep_client::Error::from(status).reason(), Some(Reason::NotRegistered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_waits_instead_of_spinning_and_recovers() {
    // 64 descriptors: the server's own (runtime, listener, stdio) and a few dozen connections.
    let server = Server::start_with_fd_limit(64, &[]);
    let mut held = Vec::new();
    for _ in 0..100 {
        // Connections past the limit stay in the listen backlog, not accepted.
        held.push(TcpStream::connect(&server.addr).await.unwrap());
    }
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // utime and stime, in clock ticks (fields 14 and 15 of the whole line).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu() - before;
    // A spinning accept loop burns a whole core (about 200 ticks in 2 s, less on a busy machine);
    // one that waits uses next to nothing.
    assert!(used < 30, "the server used {used} clock ticks of CPU in 2 s while out of descriptors");
    // Descriptors come back: the server accepts again and serves an agent.
    drop(held);
    let registered = an_agent_registers_within(&server, T).await;
    assert!(registered, "the server serves again once descriptors are free");
}
