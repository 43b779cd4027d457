//! Listeners and the connections they accept.
//!
//! What the server guarantees about connections, whatever clients do:
//! * every accepted socket has Nagle's algorithm off (TCP_NODELAY): small frames — an
//!   acknowledgement, a command, a barrier release — leave at once instead of waiting for the
//!   peer's delayed ACK (~40 ms on Linux);
//! * at most [`ConnectionLimits::max_total`] connections are open at once, and at most
//!   [`ConnectionLimits::max_per_peer`] from one IP address; a connection over either limit is
//!   closed as soon as it is accepted (and logged), so one client cannot take every file descriptor;
//! * a connection that carries no request within [`ConnectionLimits::first_request_within_ms`] of
//!   being accepted is closed: idle sockets do not pile up;
//! * when the process runs out of file descriptors (or the system of memory for sockets), the
//!   accept loop waits and retries with a growing pause instead of spinning on the error, and
//!   accepts again as soon as descriptors are free.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;

/// Connections that may wait to be accepted (the kernel caps it at `net.core.somaxconn`): enough
/// for thousands of agents connecting at once, each on its own connection.
const LISTEN_BACKLOG: u32 = 4096;

/// The first pause of the accept loop when the process is out of file descriptors; it doubles up
/// to [`MAX_ACCEPT_PAUSE`] while the condition lasts.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// How many connections the server keeps open, and how long one may stay unused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Most connections open at once (agents', operators' and registry watchers' alike).
    pub max_total: usize,
    /// Most connections open at once from one IP address.
    pub max_per_peer: usize,
    /// A connection that has carried no request this many milliseconds after it was accepted is
    /// closed.
    pub first_request_within_ms: u64,
    /// A session stream whose first message (`register`) has not arrived this many milliseconds
    /// after it was opened is ended with `DEADLINE_EXCEEDED` (reason `NOT_REGISTERED`).
    pub register_within_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // The benchmarks connect 10,000 agents, each on its own connection, from one loopback
        // address; the default file descriptor limit of this kind of host is 20,000.
        ConnectionLimits {
            max_total: 16_384,
            max_per_peer: 12_288,
            first_request_within_ms: 10_000,
            register_within_ms: 10_000,
        }
    }
}

impl ConnectionLimits {
    /// Checks the values make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_total == 0 || self.max_per_peer == 0 {
            return Err("connections: max_total and max_per_peer must be at least 1".into());
        }
        if self.first_request_within_ms == 0 || self.register_within_ms == 0 {
            return Err("connections: first_request_within_ms and register_within_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Binds `addr` with a backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted server can take its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How many connections are open, in all and per peer address. Shared by the listeners of one
/// server (the agents' and the operators'), so that the limits hold for the server as a whole.
#[derive(Debug, Default)]
pub struct Counts {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Counts {
    /// Counts a new connection from `peer` if the limits allow it.
    fn admit(&self, peer: IpAddr, limits: &ConnectionLimits) -> Result<(), &'static str> {
        let mut open = self.open.lock().expect("not poisoned");
        let (total, per_peer) = &mut *open;
        let from_peer = per_peer.get(&peer).copied().unwrap_or(0);
        if *total >= limits.max_total {
            return Err("connections.max_total");
        }
        if from_peer >= limits.max_per_peer {
            return Err("connections.max_per_peer");
        }
        *total += 1;
        per_peer.insert(peer, from_peer + 1);
        Ok(())
    }

    fn release(&self, peer: IpAddr) {
        let mut open = self.open.lock().expect("not poisoned");
        let (total, per_peer) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&peer);
            }
        }
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.open.lock().expect("not poisoned").0
    }
}

/// What every request on a connection can see of it (as a request extension): marking it used
/// lifts its deadline for a first request. The last clone to go releases its place in the counts.
#[derive(Clone, Debug)]
pub struct ConnInfo(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// Unique among the connections this process accepts (from 1).
    id: u64,
    peer: SocketAddr,
    used: AtomicBool,
    counts: Arc<Counts>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.counts.release(self.peer.ip());
    }
}

impl ConnInfo {
    /// The connection has carried a request.
    pub fn mark_used(&self) {
        self.0.used.store(true, Ordering::Relaxed);
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.0.peer
    }

    /// The connection's id, unique in this process: sessions with the same id share a connection.
    pub fn id(&self) -> u64 {
        self.0.id
    }
}

/// The connection a request came on, over plain TCP or TLS.
pub fn conn_info(extensions: &tonic::Extensions) -> Option<&ConnInfo> {
    extensions
        .get::<ConnInfo>()
        .or_else(|| extensions.get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>().map(|tls| tls.get_ref()))
}

/// A server-wide interceptor marking the connection of every request as used.
pub fn mark_used(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(info) = conn_info(request.extensions()) {
        info.mark_used();
    }
    Ok(request)
}

/// An accepted connection: the socket, its place in the counts, and its deadline for a first
/// request.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    info: ConnInfo,
    first_request: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    /// What is known of the connection: its id, its peer, whether it carried a request.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.first_request.as_mut() {
            if this.info.0.used.load(Ordering::Relaxed) {
                this.first_request = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(peer = %this.info.peer(), "closing a connection that carried no request");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request on this connection")));
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Whether an accept error means the process or the system is out of resources (retrying at once
/// would fail again), rather than a problem with the one connection.
fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM (Linux and the BSDs agree on EMFILE, ENFILE and ENOMEM).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// A warning that is logged at most once a second, with how many were held back meanwhile.
struct Throttled {
    last: Option<tokio::time::Instant>,
    held: u64,
}

impl Throttled {
    fn warn(&mut self, what: impl FnOnce(u64)) {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.held += 1;
            return;
        }
        what(std::mem::take(&mut self.held));
        self.last = Some(now);
    }
}

/// The connections `listener` accepts, within `limits` counted in `counts`.
pub fn accepted(
    listener: TcpListener,
    limits: ConnectionLimits,
    counts: Arc<Counts>,
) -> impl Stream<Item = io::Result<Connection>> {
    struct Loop {
        listener: TcpListener,
        limits: ConnectionLimits,
        counts: Arc<Counts>,
        refused: Throttled,
        starved: Throttled,
    }
    let state = Loop {
        listener,
        limits,
        counts,
        refused: Throttled { last: None, held: 0 },
        starved: Throttled { last: None, held: 0 },
    };
    futures::stream::unfold(state, |mut s| async move {
        let mut pause = FIRST_ACCEPT_PAUSE;
        loop {
            let (stream, peer) = match s.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) if out_of_resources(&e) => {
                    s.starved.warn(|held| {
                        tracing::warn!(error = %e, earlier = held, "cannot accept connections: out of resources; retrying")
                    });
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                    continue;
                }
                // About this one connection (reset before it was accepted...): the caller goes on.
                Err(e) => return Some((Err(e), s)),
            };
            pause = FIRST_ACCEPT_PAUSE;
            if let Err(limit) = s.counts.admit(peer.ip(), &s.limits) {
                s.refused.warn(|held| {
                    tracing::warn!(%peer, limit, earlier = held, "connection refused: too many connections open")
                });
                drop(stream);
                continue;
            }
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
            }
            static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let shared = Shared { id, peer, used: AtomicBool::new(false), counts: s.counts.clone() };
            let info = ConnInfo(Arc::new(shared));
            let within = Duration::from_millis(s.limits.first_request_within_ms);
            let first_request = Some(Box::pin(tokio::time::sleep(within)));
            return Some((Ok(Connection { stream, info, first_request }), s));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;
    use tokio_stream::StreamExt as _;

    fn limits(max_total: usize, max_per_peer: usize) -> ConnectionLimits {
        ConnectionLimits { max_total, max_per_peer, first_request_within_ms: 60_000, register_within_ms: 60_000 }
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(accepted(listener, limits(10, 10), Arc::default()));
        let client = TcpStream::connect(addr).await.unwrap();
        let server_side = incoming.next().await.expect("a connection").expect("accepted");
        assert!(server_side.stream.nodelay().unwrap(), "TCP_NODELAY must be set on the server's side");
        assert_eq!(server_side.info.peer(), client.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_port_in_use_cannot_be_bound_again() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(bind(listener.local_addr().unwrap()).is_err());
    }

    #[tokio::test]
    async fn connections_over_the_per_peer_limit_are_closed_and_room_comes_back() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let mut incoming = Box::pin(accepted(listener, limits(10, 2), counts.clone()));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        assert_eq!(counts.total(), 2);
        // The third is accepted by the kernel, then closed by the server: the client reads EOF.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let next = tokio::spawn(async move {
            let c = incoming.next().await;
            (c, incoming)
        });
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut byte)).await.expect("closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        // Once one of the two goes, a new connection is admitted.
        drop(first);
        assert_eq!(counts.total(), 1);
        let _d = TcpStream::connect(addr).await.unwrap();
        let (admitted, _incoming) = tokio::time::timeout(Duration::from_secs(10), next).await.unwrap().unwrap();
        let _fourth = admitted.expect("a connection").expect("admitted");
        assert_eq!(counts.total(), 2);
    }

    #[tokio::test]
    async fn the_total_limit_holds_across_peers() {
        let counts = Counts::default();
        let l = limits(2, 2);
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert!(counts.admit(a, &l).is_ok());
        assert!(counts.admit(b, &l).is_ok());
        assert_eq!(counts.admit(b, &l), Err("connections.max_total"));
        counts.release(a);
        assert!(counts.admit(b, &l).is_ok());
        assert_eq!(counts.admit(b, &l), Err("connections.max_total"));
    }

    #[tokio::test]
    async fn an_unused_connection_is_closed_at_its_deadline_and_a_used_one_is_not() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits { first_request_within_ms: 200, ..limits(10, 10) };
        let mut incoming = Box::pin(accepted(listener, limits, Arc::default()));
        let _idle_client = TcpStream::connect(addr).await.unwrap();
        let mut idle = incoming.next().await.unwrap().unwrap();
        let _used_client = TcpStream::connect(addr).await.unwrap();
        let mut used = incoming.next().await.unwrap().unwrap();
        used.info.mark_used();
        let mut buf = [0u8; 8];
        let closed = idle.read(&mut buf).await;
        assert_eq!(closed.unwrap_err().kind(), io::ErrorKind::TimedOut);
        // The used one is still waiting for bytes well past the deadline.
        let waited = tokio::time::timeout(Duration::from_millis(600), used.read(&mut buf)).await;
        assert!(waited.is_err(), "a used connection has no deadline: {waited:?}");
    }

    #[test]
    fn out_of_descriptors_is_told_from_a_failed_connection() {
        assert!(out_of_resources(&io::Error::from_raw_os_error(24)));
        assert!(out_of_resources(&io::Error::from_raw_os_error(23)));
        assert!(!out_of_resources(&io::Error::from(io::ErrorKind::ConnectionAborted)));
    }
}
