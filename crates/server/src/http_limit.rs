//! Limits of the HTTP listener's connections, so that no HTTP client can hold the server's
//! resources for long: at most [`MAX_CONNECTIONS`] connections at once — one more is answered
//! `503 Service Unavailable` with `Retry-After` and closed at once — and a connection whose client
//! takes nothing written to it for [`WRITE_STALL`] is closed (a dashboard page that cannot keep
//! up, a scraper that stopped reading), counted in `lockstep_http_clients_dropped_total`; one
//! that neither sends nor takes anything for [`IDLE`] (a connection opened and left, or kept alive
//! between requests) is closed too, so that idle connections cannot hold every slot.
//!
//! The limits live in the listener ([`Limited`], an `axum::serve::Listener`): each accepted
//! connection carries its slot ([`Conn`]) and gives it back when it closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may refuse everything written to it before it is closed.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// How long a connection may go without a byte read or written before it is closed (a dashboard
/// page's stream is written to twice a second, so only idle connections reach it).
pub const IDLE: Duration = Duration::from_secs(30);

/// What a connection past the limit is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Retry-After: 1\r\nConnection: close\r\nContent-Length: 60\r\n\r\n\
too many HTTP connections to this server: retry in a moment\n";

/// A listener that admits at most `max` connections at once.
pub struct Limited {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    stall: Duration,
    idle: Duration,
    metrics: Arc<Metrics>,
}

impl Limited {
    pub fn new(listener: TcpListener, max: usize, stall: Duration, idle: Duration, metrics: Arc<Metrics>) -> Self {
        Limited { listener, slots: Arc::new(Semaphore::new(max)), stall, idle, metrics }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Conn<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "the HTTP listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return (Conn::new(stream, slot, self.stall, self.idle, self.metrics.clone()), addr),
                Err(_) => {
                    self.metrics.http_connection_refused();
                    // Told why on its own task, bounded in time: the listener goes on accepting.
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            stream.write_all(REFUSAL).await?;
                            stream.shutdown().await
                        })
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An admitted connection: its stream, its slot, and the clocks of its stalled writes and of
/// its idleness.
pub struct Conn<S> {
    stream: S,
    _slot: OwnedSemaphorePermit,
    stall: Duration,
    /// Set when a write could not proceed; cleared by the next that does.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Duration,
    /// Due `idle` after the last byte read or written; checked while a read waits.
    idle_until: Pin<Box<tokio::time::Sleep>>,
    metrics: Arc<Metrics>,
}

impl<S> Conn<S> {
    pub fn new(stream: S, slot: OwnedSemaphorePermit, stall: Duration, idle: Duration, metrics: Arc<Metrics>) -> Self {
        let idle_until = Box::pin(tokio::time::sleep(idle));
        Conn { stream, _slot: slot, stall, stalled: None, idle, idle_until, metrics }
    }

    /// Something moved: the idle clock starts again.
    fn active(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.idle_until.as_mut().reset(next);
    }

    /// Passes a write's readiness on; a write pending for longer than `stall` fails instead, and
    /// the server closes the connection.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            self.active();
            return poll;
        }
        let stall = self.stall;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.metrics.http_client_dropped();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took nothing for {} s", stall.as_secs_f64()),
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.idle_until.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nothing read or written for {} s", self.idle.as_secs_f64()),
                ))),
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Short, so that the tests take a moment (the listener's is [`WRITE_STALL`]).
    const STALL: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_client_that_takes_nothing_is_dropped_after_the_stall_and_its_slot_freed() {
        let slots = Arc::new(Semaphore::new(1));
        let metrics = Arc::new(Metrics::default());
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = Conn::new(near, slots.clone().try_acquire_owned().unwrap(), STALL, IDLE, metrics.clone());
        // The client reads a little, then stops: writes go on until the pipe is full...
        conn.write_all(&[7; 64]).await.unwrap();
        let mut first = [0; 16];
        far.read_exact(&mut first).await.unwrap();
        conn.write_all(&[7; 16]).await.unwrap();
        // ...and then one waits; past the stall it fails.
        let started = tokio::time::Instant::now();
        let error = conn.write_all(&[7; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= STALL, "not before the stall: {:?}", started.elapsed());
        assert_eq!(metrics.http_clients_dropped_total(), 1);
        drop(conn);
        assert_eq!(slots.available_permits(), 1, "the slot is free again");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_a_busy_one_kept() {
        let slots = Arc::new(Semaphore::new(2));
        let metrics = Arc::new(Metrics::default());
        let idle = Duration::from_millis(300);
        let (near, _far) = tokio::io::duplex(64);
        let mut left = Conn::new(near, slots.clone().try_acquire_owned().unwrap(), STALL, idle, metrics.clone());
        let started = tokio::time::Instant::now();
        let error = left.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= idle, "not before: {:?}", started.elapsed());
        let (near, mut far) = tokio::io::duplex(64);
        let mut busy = Conn::new(near, slots.try_acquire_owned().unwrap(), STALL, idle, metrics);
        let talker = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(idle / 2).await;
                far.write_all(b"x").await.unwrap();
            }
            far
        });
        for _ in 0..4 {
            assert_eq!(busy.read(&mut [0; 8]).await.unwrap(), 1, "a byte every half idle period keeps it open");
        }
        drop(talker.await.unwrap());
    }

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    }

    #[tokio::test]
    async fn a_client_that_reads_slowly_is_kept() {
        let slots = Arc::new(Semaphore::new(1));
        let metrics = Arc::new(Metrics::default());
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = Conn::new(near, slots.try_acquire_owned().unwrap(), STALL, IDLE, metrics.clone());
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0; 64];
            while got < 640 {
                // Slower than the writer, never as slow as the stall.
                tokio::time::sleep(STALL / 3).await;
                got += far.read(&mut buf).await.unwrap();
            }
            got
        });
        conn.write_all(&[1; 640]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 640);
        assert_eq!(metrics.http_clients_dropped_total(), 0);
    }
}
