//! # lockstep-server
//!
//! The tokio shell around [`lockstep_core::Engine`]: a gRPC service ([`grpc`]) whose handlers only
//! forward commands to one driver task ([`driver`]) that owns the engine, its clock and every
//! connection's outbound channel. [`start`] runs a server on a listener and hands back its address
//! and a shutdown handle; the `lockstep serve` command, the demo, the benchmark and the end-to-end
//! tests all run the server through it.

pub mod driver;
pub mod grpc;

use std::net::SocketAddr;

use lockstep_core::{Config, Engine};
use lockstep_proto::v1::lockstep_server::LockstepServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long shutdown waits for clients to close their connections after their streams ended.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// HTTP/2 flow-control windows: large enough that a busy stream is never paused waiting for a
/// window update (the engine's queues, not the transport, decide what happens to a slow reader).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Bytes allowed in one gRPC message beyond the largest payload (topic, headers, framing).
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A running server.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningServer {
    /// The address the server accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends every stream with `Unavailable`, and waits for the server to finish:
    /// at most [`SHUTDOWN_GRACE`] for clients to close their connections, then it closes them.
    pub async fn shutdown(mut self) -> Result<(), tonic::transport::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                // Every stream was already told the server is going; only idle connections remain.
                self.task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (port 0 picks a free port) and starts serving with `config`.
pub async fn start(addr: SocketAddr, config: Config) -> Result<RunningServer, StartError> {
    config.validate().map_err(StartError::Config)?;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let max_message = config.limits.max_payload_bytes.max(config.limits.max_delta_bytes) + MESSAGE_OVERHEAD;

    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (transport_stop_tx, transport_stop_rx) = oneshot::channel::<()>();
    // Shutdown order: the driver stops first and ends every open stream, then the transport,
    // which waits for open streams, can finish.
    tokio::spawn(async move {
        driver::run(Engine::new(config), commands_rx, async {
            let _ = shutdown_rx.await;
        })
        .await;
        let _ = transport_stop_tx.send(());
    });

    let service = LockstepServer::new(grpc::Service::new(commands_tx))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = transport_stop_rx.await;
            })
            .await;
        result
    });
    Ok(RunningServer { addr, shutdown: Some(shutdown_tx), task })
}
