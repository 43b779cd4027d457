//! The lean agent transport from the client's side: agent sessions over plain TCP connections of
//! frames (`lockstep_proto::lean`; docs/PROTOCOL.md, "The lean transport"), for agents on the
//! server's host: one session per connection ([`Client::register_lean`](crate::Client::register_lean))
//! or a client's agents multiplexed on one ([`Client::register_lean_shared`](crate::Client::register_lean_shared)).
//!
//! The session behaves as one over gRPC — same messages, same replies, same errors, same
//! reconnection — and is read by the same code: the connection's MESSAGE frames (gRPC
//! length-prefixed messages) and its END frame (the session's status, made the trailers a gRPC
//! stream ends with) are handed to tonic's own decoder as a response body. Each message costs a
//! frame header instead of an HTTP/2 frame and stream bookkeeping, and everything the agent has
//! queued when its writer wakes leaves in one write. On a shared connection each session's bytes
//! travel in frames naming it, one writer gathers what every session has queued into one write and
//! one reader hands each session its bytes: a thousand co-located agents cost a few writes and
//! reads where they would cost a thousand. Queries still go over the client's gRPC connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body, Frame};
use lockstep_proto::{lean, v1};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tonic::codec::{Codec as _, Streaming};
use tonic::Status;

use crate::Error;

/// Where and how to open lean connections.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    /// `host:port` of the server's lean listener.
    pub addr: String,
    /// The token to present (empty: none).
    pub token: String,
    /// Largest message accepted from the server.
    pub max_message: usize,
}

impl Dialer {
    /// Opens a connection and says hello; what the session sends goes into the returned sender
    /// (the connection's write side closes when it is dropped), what the server sends comes out
    /// of the stream, as from a gRPC session stream.
    pub(crate) async fn open(&self) -> Result<(Streaming<v1::ServerMessage>, mpsc::Sender<v1::ClientMessage>), Error> {
        let (rd, wr) = self.dial(false).await?;
        let (tx, rx) = mpsc::channel(crate::agent::OUTBOUND_BUFFER);
        tokio::spawn(write(rx, wr));
        let frames = FramedRead::new(rd, lean::codec(self.max_message)).map(lone_session_frame);
        Ok((self.streaming(Inbound::new(frames)), tx))
    }

    /// Connects and says hello.
    async fn dial(&self, multiplex: bool) -> Result<(OwnedReadHalf, OwnedWriteHalf), Error> {
        let refused = |reason: String| Error::Connect { addr: self.addr.clone(), reason };
        let stream = TcpStream::connect(&self.addr).await.map_err(|e| refused(format!("lean transport: {e}")))?;
        stream.set_nodelay(true).map_err(|e| refused(format!("lean transport: cannot set TCP_NODELAY: {e}")))?;
        let (rd, mut wr) = stream.into_split();
        let mut hello = BytesMut::new();
        let token = self.token.clone();
        lean::put_frame(&mut hello, lean::HELLO, &v1::LeanHello { version: lean::VERSION, token, multiplex });
        wr.write_all(&hello).await.map_err(|e| refused(format!("lean transport: {e}")))?;
        Ok((rd, wr))
    }

    /// A session's stream from the server, read from `body` by tonic's decoder as a gRPC
    /// response's.
    fn streaming<B>(&self, body: B) -> Streaming<v1::ServerMessage>
    where
        B: Body<Data = Bytes, Error = Status> + Send + 'static,
    {
        let decoder = tonic_prost::ProstCodec::<v1::ClientMessage, v1::ServerMessage>::default().decoder();
        Streaming::new_response(decoder, body, tonic::codegen::http::StatusCode::OK, None, Some(self.max_message))
    }
}

/// One lean connection shared by a client's agents, each session's frames naming it: dialled when
/// the first agent registers, and again for the next session once it broke.
pub(crate) struct Mux {
    dialer: Dialer,
    current: tokio::sync::Mutex<Option<Arc<MuxConn>>>,
    /// The heartbeat of the agents sharing the connection (the server renews every session of a
    /// connection on one heartbeat).
    pub(crate) beat: Arc<crate::agent::ConnectionBeat>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux").field("addr", &self.dialer.addr).finish_non_exhaustive()
    }
}

/// Chunks of a session's stream the shared connection's reader holds for the session before it
/// waits for the session's reader (and so holds up the connection's other sessions).
const SESSION_BUFFER: usize = 64;

/// Where the shared connection's reader hands each session its stream's bytes (`None` once the
/// connection broke: no session can open on it any more).
type Sessions = Arc<Mutex<Option<HashMap<u32, mpsc::Sender<Frame<Bytes>>>>>>;

/// A shared connection: its sessions' inbound ends, and where a new session hands its outbound.
struct MuxConn {
    next_id: AtomicU32,
    sessions: Sessions,
    /// New sessions in the order of their ids (the writer opens each at once, in that order).
    opened: mpsc::UnboundedSender<lean::Opened<(u32, Option<v1::ClientMessage>)>>,
}

impl Mux {
    pub(crate) fn new(dialer: Dialer) -> Mux {
        Mux { dialer, current: tokio::sync::Mutex::new(None), beat: Arc::new(crate::agent::ConnectionBeat::new()) }
    }

    /// Whether this shares connections with `dialer`'s server as `dialer` would reach it.
    pub(crate) fn serves(&self, dialer: &Dialer) -> bool {
        (&self.dialer.addr, &self.dialer.token) == (&dialer.addr, &dialer.token)
    }

    /// Opens a session on the shared connection (dialling it first if there is none, or it broke),
    /// as [`Dialer::open`] opens one on a connection of its own.
    pub(crate) async fn open(&self) -> Result<(Streaming<v1::ServerMessage>, mpsc::Sender<v1::ClientMessage>), Error> {
        let mut current = self.current.lock().await;
        // A connection dialled just now that cannot take a session broke at once: say so rather
        // than dial again and again.
        for dialled in [false, true] {
            if let Some(conn) = current.as_ref() {
                let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
                let (in_tx, in_rx) = mpsc::channel(SESSION_BUFFER);
                let registered = conn.sessions.lock().expect("sessions lock").as_mut().map(|s| s.insert(id, in_tx));
                let (tx, rx) = mpsc::channel(crate::agent::OUTBOUND_BUFFER);
                // The session's messages, then its end (SESSION_CLOSE) once it drops its sender.
                let outbound = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(move |m| (id, Some(m)))
                    .chain(futures::stream::iter([(id, None)]));
                if registered.is_some() && conn.opened.send((Some(id), Box::pin(outbound))).is_ok() {
                    let frames = tokio_stream::wrappers::ReceiverStream::new(in_rx).map(Ok);
                    return Ok((self.dialer.streaming(Inbound::new(frames)), tx));
                }
                if dialled {
                    break;
                }
            }
            // No connection yet, or it broke: dial the next.
            let (rd, wr) = self.dialer.dial(true).await?;
            let sessions: Sessions = Arc::new(Mutex::new(Some(HashMap::new())));
            let (opened, opened_rx) = mpsc::unbounded_channel();
            tokio::spawn(write_sessions(opened_rx, wr));
            tokio::spawn(read_sessions(FramedRead::new(rd, lean::codec(lean::MAX_SESSION_PAYLOAD)), sessions.clone()));
            *current = Some(Arc::new(MuxConn { next_id: AtomicU32::new(0), sessions, opened }));
        }
        Err(Error::Connect {
            addr: self.dialer.addr.clone(),
            reason: "lean transport: the shared connection closed as it opened".into(),
        })
    }
}

/// Reads a shared connection: each SESSION_DATA to its session, each SESSION_END as the trailers
/// that end its stream. When the connection breaks, every session still open sees its stream end
/// without trailers (a broken stream, resumed by the reconnection policy).
async fn read_sessions(mut frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>, sessions: Sessions) {
    while let Some(Ok(frame)) = frames.next().await {
        let kind = lean::kind(&frame);
        let Some((id, payload)) = lean::session_payload(frame) else { break };
        let (frame, last) = match kind {
            Some(lean::SESSION_DATA) => (Frame::data(payload), false),
            Some(lean::SESSION_END) => match end_frame(payload) {
                Ok(frame) => (frame, true),
                Err(_) => break,
            },
            _ => break,
        };
        let session = {
            let mut sessions = sessions.lock().expect("sessions lock");
            let Some(sessions) = sessions.as_mut() else { break };
            if last {
                sessions.remove(&id)
            } else {
                sessions.get(&id).cloned()
            }
        };
        if let Some(tx) = session {
            // A session whose stream was dropped has nobody to read what is left of it.
            let _ = tx.send(frame).await;
        }
    }
    // Dropping the senders breaks every session's stream; no new one opens here.
    sessions.lock().expect("sessions lock").take();
}

/// Writes what the sessions of a shared connection send (each message in SESSION_DATA frames of its
/// session, a SESSION_CLOSE when the session drops its sender, everything queued in one write)
/// until the connection is forgotten and its sessions have ended, or a write fails (the reader
/// reports the broken connection to every session).
async fn write_sessions(
    opened: mpsc::UnboundedReceiver<lean::Opened<(u32, Option<v1::ClientMessage>)>>,
    wr: OwnedWriteHalf,
) {
    let _ = lean::write_sessions(opened, wr, |buf, (id, message)| match message {
        Some(m) => lean::put_session_message(buf, id, &m),
        None => lean::put_session_frame(buf, lean::SESSION_CLOSE, id, None),
    })
    .await;
}

/// What a broken lean connection ends a session with.
fn broke(why: String) -> Status {
    Status::unavailable(format!("the lean connection broke: {why}"))
}

/// An END's `LeanEnd` as the trailers a gRPC stream ends with.
fn end_frame(payload: Bytes) -> Result<Frame<Bytes>, Status> {
    let end = v1::LeanEnd::decode(payload).map_err(|e| broke(format!("undecodable LeanEnd ({e})")))?;
    let mut trailers = tonic::codegen::http::HeaderMap::new();
    lean::status(end).add_header(&mut trailers).map(|()| Frame::trailers(trailers))
}

/// Writes what the session sends until the session drops its sender, then closes the
/// connection's write side (the server takes that as the end of the session's stream).
async fn write(mut rx: mpsc::Receiver<v1::ClientMessage>, mut wr: OwnedWriteHalf) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        lean::put_frame(&mut buf, lean::MESSAGE, &first);
        while buf.len() < lean::COALESCE_BYTES {
            match rx.try_recv() {
                Ok(m) => lean::put_frame(&mut buf, lean::MESSAGE, &m),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            // The reading side reports the broken connection.
            return;
        }
        buf.clear();
    }
    let _ = wr.shutdown().await;
}

/// A session's stream from the server as the body of a gRPC response, for tonic's decoder: its
/// frames (the bytes of its messages) until the trailers made of its END, or an error. A source
/// that ends before the END (the connection broke, or closed without ending the session) ends it
/// with UNAVAILABLE, so that the session is resumed as a broken gRPC stream is.
struct Inbound<S> {
    frames: S,
    ended: bool,
}

impl<S> Inbound<S> {
    fn new(frames: S) -> Self {
        Inbound { frames, ended: false }
    }
}

impl<S: Stream<Item = Result<Frame<Bytes>, Status>> + Unpin> Body for Inbound<S> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = std::task::ready!(this.frames.poll_next_unpin(cx))
            .unwrap_or_else(|| Err(broke("it closed without ending the session".into())));
        this.ended = !frame.as_ref().is_ok_and(Frame::is_data);
        Poll::Ready(Some(frame))
    }
}

/// A frame of a connection carrying one session: a MESSAGE's bytes, or the END as trailers.
fn lone_session_frame(frame: std::io::Result<BytesMut>) -> Result<Frame<Bytes>, Status> {
    match frame {
        Ok(frame) if lean::kind(&frame) == Some(lean::MESSAGE) => Ok(Frame::data(frame.freeze())),
        Ok(frame) if lean::kind(&frame) == Some(lean::END) => end_frame(lean::payload(frame)),
        Ok(frame) => Err(broke(format!("a frame of unknown kind {:?}", lean::kind(&frame)))),
        Err(e) => Err(broke(e.to_string())),
    }
}
