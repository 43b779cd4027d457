//! The lean agent transport: agent sessions over plain TCP frames instead of gRPC streams (the
//! framing is `lockstep_proto::lean`; docs/PROTOCOL.md, "The lean transport").
//!
//! Each accepted connection carries one session, or many when its hello asks to multiplex (one
//! client's co-located agents on one connection). It goes through the same listener rules as the
//! gRPC listeners (`crate::listener`: TCP_NODELAY, connection limits, a first frame within
//! `connections.first_request_within_ms`), must open with a `LeanHello` whose token the gate
//! checks as it checks a gRPC call's, and is then read by the same session reader as a gRPC
//! session stream (`grpc::Service::open_session`): the engine cannot tell the two apart, and
//! every rule of sessions (registration deadline, tokens per request, flow control through the
//! driver's intake, leases kept when the connection breaks) holds for both.
//!
//! What differs is the path of a frame: no HTTP/2 framing and stream bookkeeping. A MESSAGE frame
//! is a gRPC length-prefixed message, so the connection's frames are handed to tonic's own decoder
//! and the session's messages are encoded by tonic's own encoder (`EncodeBody`, as for a gRPC
//! response), which gathers every message ready when the writer wakes into one buffer: one
//! `write` each time. On a multiplexed connection every session's stream is read and encoded the
//! same way; the frames of all sessions are cut from one reader, and one writer gathers what every
//! session has ready into one `write`. The transport has no TLS: with TLS configured, `start` accepts it on
//! loopback only.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::{Body, Frame};
use lockstep_core::Reason;
use lockstep_proto::session::{Codec, RawClientMessage};
use lockstep_proto::v1;
use lockstep_proto::{lean, reason};
use prost::Message;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tonic::codec::{Codec as _, EncodeBody, SingleMessageCompressionOverride, Streaming};
use tonic::{Code, Status};

use crate::auth::{Access, Gate};
use crate::grpc::{BoxStream, Service};
use crate::listener::Connection;

/// Serves lean connections from `incoming` until `stop` completes.
pub async fn serve(
    incoming: impl Stream<Item = io::Result<Connection>>,
    service: Service,
    gate: Gate,
    stop: impl Future<Output = ()>,
) {
    let incoming = incoming.take_until(stop);
    tokio::pin!(incoming);
    while let Some(accepted) = incoming.next().await {
        match accepted {
            Ok(conn) => {
                tokio::spawn(connection(conn, service.clone(), gate.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "the lean listener could not accept a connection"),
        }
    }
}

/// One lean connection: its hello, then its session until either side ends it.
async fn connection(conn: Connection, service: Service, gate: Gate) {
    let info = conn.info().clone();
    let (rd, mut wr) = tokio::io::split(conn);
    let max_message = service.max_message_bytes();
    let mut frames = FramedRead::new(rd, lean::codec(max_message));
    // Until the hello arrives the listener's first-request deadline closes a silent connection.
    let hello = match frames.next().await {
        Some(Ok(frame)) => hello(frame),
        Some(Err(e)) => Err(broken(&e, max_message)),
        None => return,
    };
    let (access, multiplex) = match hello.and_then(|h| Ok((gate.access(Some(&h.token))?, h.multiplex))) {
        Ok(accepted) => accepted,
        Err(refusal) => return end_with(&mut wr, &refusal).await,
    };
    info.mark_used();
    if multiplex {
        return multiplexed(frames, wr, service, access, info.id()).await;
    }
    let (closed_tx, closed) = oneshot::channel();
    // The session's reader gets a tonic stream, as for a gRPC session (the same decoder, the same
    // message cap and its refusal).
    let mut codec = Codec::<v1::ServerMessage, RawClientMessage>::default();
    let body = Inbound { frames, max_message, closed, done: false };
    let inbound = Streaming::new_request(codec.decoder(), body, None, Some(max_message));
    let out = match service.open_session(inbound, info.id(), access).await {
        Ok(out) => out,
        Err(refusal) => return end_with(&mut wr, &refusal).await,
    };
    let out: BoxStream<v1::ServerMessage> = Box::pin(out);
    if let Err(e) = write_session(encoded(out), &mut wr).await {
        tracing::debug!(peer = %info.peer(), error = %e, "a lean connection could not be written");
    }
    // The session is over: stop reading the connection too, so that the socket closes.
    let _ = closed_tx.send(());
}

/// A lean connection's first frame, which must be a `LeanHello` of this version.
fn hello(frame: BytesMut) -> Result<v1::LeanHello, Status> {
    let refuse = |why: String| reason::status(Code::InvalidArgument, Reason::InvalidArgument, why, []);
    if lean::kind(&frame) != Some(lean::HELLO) {
        return Err(refuse(format!(
            "a lean connection must open with a HELLO frame (kind {:#x}) carrying a lockstep.v1.LeanHello",
            lean::HELLO
        )));
    }
    let hello = v1::LeanHello::decode(lean::payload(frame))
        .map_err(|e| refuse(format!("the HELLO frame is not a valid lockstep.v1.LeanHello ({e})")))?;
    if hello.version != lean::VERSION {
        return Err(refuse(format!(
            "this server speaks version {} of the lean transport; the client asked for {}",
            lean::VERSION,
            hello.version
        )));
    }
    Ok(hello)
}

/// Ends a connection whose session never opened with `status`.
async fn end_with(wr: &mut WriteHalf<Connection>, status: &Status) {
    let mut buf = BytesMut::new();
    lean::put_frame(&mut buf, lean::END, &lean::end(status));
    let _ = wr.write_all(&buf).await;
    let _ = wr.shutdown().await;
}

/// What a frame that cannot be read means: a payload over the message cap (reported as tonic
/// reports one, so that the session reader names the limit), or a broken connection.
fn broken(e: &io::Error, max_message: usize) -> Status {
    if e.kind() == io::ErrorKind::InvalidData {
        Status::out_of_range(format!("a lean frame's payload was longer than {max_message} bytes"))
    } else {
        Status::unavailable(format!("the lean connection could not be read: {e}"))
    }
}

/// What a session sends, as it goes on the connection: the next bytes of its stream (gRPC
/// length-prefixed messages, every one ready when the encoder was polled), then its status.
enum Piece {
    Data(Bytes),
    End(Status),
}

/// A session's messages as [`Piece`]s: tonic's encoder (as for a gRPC response) gathers every
/// message ready into one buffer; the status the session ends with comes last.
fn encoded(out: BoxStream<v1::ServerMessage>) -> impl Stream<Item = Piece> + Send {
    let mut codec = Codec::<v1::ServerMessage, RawClientMessage>::default();
    let body = EncodeBody::new_server(codec.encoder(), out, None, SingleMessageCompressionOverride::default(), None);
    futures::stream::unfold(Some(Box::pin(body)), |body| async move {
        let mut body = body?;
        let status = match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => return Some((Piece::Data(data), Some(body))),
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    trailers.as_ref().and_then(Status::from_header_map).unwrap_or_else(|| Status::ok(""))
                }
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        Some((Piece::End(status), None))
    })
}

/// Writes what a lone session sends until it ends (each piece in one `write`), then the
/// session's status as the END frame.
async fn write_session(pieces: impl Stream<Item = Piece>, wr: &mut WriteHalf<Connection>) -> io::Result<()> {
    let mut pieces = std::pin::pin!(pieces);
    let mut status = Status::ok("");
    while let Some(piece) = pieces.next().await {
        match piece {
            Piece::Data(data) => wr.write_all(&data).await?,
            Piece::End(end) => status = end,
        }
    }
    let mut end = BytesMut::new();
    lean::put_frame(&mut end, lean::END, &lean::end(&status));
    wr.write_all(&end).await?;
    wr.shutdown().await
}

/// Chunks of a session's stream a multiplexed connection holds for the session while it opens
/// or reads slowly; past them the connection's reader waits (TCP then holds the client back).
const SESSION_BUFFER: usize = 16;

/// Sessions one multiplexed connection may have open at once; a session opened past it ends at
/// once with RESOURCE_EXHAUSTED (reason LIMIT).
pub const MAX_SESSIONS_PER_CONNECTION: usize = 10_000;

/// A multiplexed lean connection after its hello: opens a session for each new session id, hands
/// each SESSION_DATA to its session's reader, ends a session's inbound stream at SESSION_CLOSE,
/// and writes what every session sends. When the connection closes or breaks, every session's
/// stream ends as a broken gRPC stream does (leases kept; clients resume).
async fn multiplexed(
    mut frames: FramedRead<ReadHalf<Connection>, LengthDelimitedCodec>,
    wr: WriteHalf<Connection>,
    service: Service,
    access: Access,
    connection: u64,
) {
    frames.decoder_mut().set_max_frame_length(lean::MAX_SESSION_PAYLOAD);
    let (opened_tx, opened) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_sessions(opened, wr));
    let mut sessions: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    // Ids of new sessions increase, so that a late frame of a session that ended opens nothing.
    let mut next_new = 0u32;
    let why = loop {
        let frame = match frames.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break e.to_string(),
            None => break "closed by the client".to_owned(),
        };
        let kind = lean::kind(&frame);
        let Some((id, data)) = lean::session_payload(frame) else {
            break "a multiplexed frame without a session id".to_owned();
        };
        match kind {
            Some(lean::SESSION_DATA) => {
                if !sessions.contains_key(&id) && id >= next_new {
                    next_new = id.wrapping_add(1);
                    if sessions.len() >= MAX_SESSIONS_PER_CONNECTION {
                        // Sessions the server ended may not have been closed by the client yet.
                        sessions.retain(|_, tx| !tx.is_closed());
                    }
                    if sessions.len() >= MAX_SESSIONS_PER_CONNECTION {
                        let _ = opened_tx.send((None, tagged(id, refused(too_many_sessions()))));
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(SESSION_BUFFER);
                    sessions.insert(id, tx);
                    tokio::spawn(open(id, rx, service.clone(), access.clone(), connection, opened_tx.clone()));
                }
                let Some(tx) = sessions.get(&id) else {
                    // A late frame of a session that ended, or a new session out of order: end it
                    // (again), so that a client that broke the order hears why.
                    let _ = opened_tx.send((None, tagged(id, refused(not_open(id, next_new)))));
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if tx.send(data).await.is_err() {
                    // The session is over: what it was still sent has nobody to read it.
                    sessions.remove(&id);
                }
            }
            Some(lean::SESSION_CLOSE) => {
                sessions.remove(&id);
            }
            other => break format!("a frame of kind {:#x} on a multiplexed connection", other.unwrap_or_default()),
        }
    };
    tracing::debug!(sessions = sessions.len(), why, "a multiplexed lean connection stopped being read");
    // Every session still open sees its stream break; the writer ends once each has ended.
    drop((sessions, opened_tx));
    if let Ok(Err(e)) = writer.await {
        tracing::debug!(error = %e, "a multiplexed lean connection could not be written");
    }
}

/// Opens session `id` of a multiplexed connection, reading its stream's bytes from `rx`, and
/// hands what it sends to the connection's writer (a refusal: only its END).
async fn open(
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    service: Service,
    access: Access,
    connection: u64,
    writer: mpsc::UnboundedSender<lean::Opened<(u32, Piece)>>,
) {
    let mut codec = Codec::<v1::ServerMessage, RawClientMessage>::default();
    let body = SessionInbound { rx };
    let max_message = service.max_message_bytes();
    let inbound = Streaming::new_request(codec.decoder(), body, None, Some(max_message));
    let pieces: Pieces = match service.open_session(inbound, connection, access).await {
        Ok(out) => Box::pin(encoded(Box::pin(out))),
        Err(refusal) => refused(refusal),
    };
    let _ = writer.send((None, tagged(id, pieces)));
}

/// Session `id`'s pieces, each naming it, for the connection's writer.
fn tagged(id: u32, pieces: Pieces) -> lean::Outbound<(u32, Piece)> {
    Box::pin(pieces.map(move |piece| (id, piece)))
}

type Pieces = Pin<Box<dyn Stream<Item = Piece> + Send>>;

/// What a session refused before it opened sends: its END.
fn refused(status: Status) -> Pieces {
    Box::pin(futures::stream::iter([Piece::End(status)]))
}

fn not_open(id: u32, next_new: u32) -> Status {
    let why = format!(
        "session {id} is not open on this multiplexed lean connection: it ended, or it was opened after session {} (the ids of new sessions must increase)",
        next_new.wrapping_sub(1)
    );
    reason::status(Code::InvalidArgument, Reason::InvalidArgument, why, [])
}

fn too_many_sessions() -> Status {
    let why = format!(
        "a multiplexed lean connection carries at most {MAX_SESSIONS_PER_CONNECTION} sessions at once; open another connection"
    );
    reason::status(Code::ResourceExhausted, Reason::Limit, why, [])
}

/// Writes what the sessions of a multiplexed connection send (each piece as SESSION_DATA or
/// SESSION_END frames of its session, everything ready in one `write`) until no session is left
/// and none can open.
async fn write_sessions(
    opened: mpsc::UnboundedReceiver<lean::Opened<(u32, Piece)>>,
    wr: WriteHalf<Connection>,
) -> io::Result<()> {
    lean::write_sessions(opened, wr, |buf, (id, piece)| match piece {
        Piece::Data(data) => lean::put_session_data(buf, id, &data),
        Piece::End(status) => lean::put_session_frame(buf, lean::SESSION_END, id, Some(&lean::end(&status))),
    })
    .await
}

/// A multiplexed session's stream, as the body of a gRPC request for tonic's decoder: the bytes
/// of its SESSION_DATA frames, until SESSION_CLOSE or the connection's end (the sender dropped).
struct SessionInbound {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for SessionInbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.get_mut().rx.poll_recv(cx).map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

/// A lean session's client messages as the body of a gRPC request, for tonic's decoder: its
/// MESSAGE frames (each a gRPC length-prefixed message), until the client closes its side or
/// the session's writer is done (`closed`).
struct Inbound {
    frames: FramedRead<ReadHalf<Connection>, LengthDelimitedCodec>,
    max_message: usize,
    closed: oneshot::Receiver<()>,
    done: bool,
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.done || Pin::new(&mut this.closed).poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(this.frames.poll_next_unpin(cx)) {
            None => {
                this.done = true;
                return Poll::Ready(None);
            }
            Some(Err(e)) => Err(broken(&e, this.max_message)),
            Some(Ok(frame)) if lean::kind(&frame) == Some(lean::MESSAGE) => Ok(Frame::data(frame.freeze())),
            Some(Ok(frame)) => Err(Status::invalid_argument(format!(
                "a lean frame of kind {:#x} where a MESSAGE (kind {:#x}) was expected",
                lean::kind(&frame).unwrap_or_default(),
                lean::MESSAGE
            ))),
        };
        Poll::Ready(Some(frame))
    }
}
