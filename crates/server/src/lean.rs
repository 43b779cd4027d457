//! The lean agent transport: agent sessions over plain TCP frames instead of gRPC streams (the
//! framing is `lockstep_proto::lean`; docs/PROTOCOL.md, "The lean transport").
//!
//! Each accepted connection carries one session. It goes through the same listener rules as the
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
//! `write` each time. The transport has no TLS: with TLS configured, `start` accepts it on
//! loopback only.

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
use tokio::sync::oneshot;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tonic::codec::{Codec as _, EncodeBody, SingleMessageCompressionOverride, Streaming};
use tonic::{Code, Status};

use crate::auth::Gate;
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
    let access = match hello.and_then(|token| gate.access(Some(&token))) {
        Ok(access) => access,
        Err(refusal) => return end_with(&mut wr, &refusal).await,
    };
    info.mark_used();
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
    let body = EncodeBody::new_server(codec.encoder(), out, None, SingleMessageCompressionOverride::default(), None);
    if let Err(e) = write_session(body, &mut wr).await {
        tracing::debug!(peer = %info.peer(), error = %e, "a lean connection could not be written");
    }
    // The session is over: stop reading the connection too, so that the socket closes.
    let _ = closed_tx.send(());
}

/// The token of a lean connection's first frame, which must be a `LeanHello` of this version.
fn hello(frame: BytesMut) -> Result<String, Status> {
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
    Ok(hello.token)
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

/// Writes what the session sends until it ends: the encoder's buffers as they come (each holds
/// every message that was ready), then the session's status as the END frame.
async fn write_session(
    body: EncodeBody<
        impl tonic::codec::Encoder<Item = v1::ServerMessage, Error = Status>,
        BoxStream<v1::ServerMessage>,
    >,
    wr: &mut WriteHalf<Connection>,
) -> io::Result<()> {
    let mut body = std::pin::pin!(body);
    let status = loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => wr.write_all(&data).await?,
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    break trailers.as_ref().and_then(Status::from_header_map).unwrap_or_else(|| Status::ok(""));
                }
            },
            Some(Err(status)) => break status,
            None => break Status::ok(""),
        }
    };
    let mut end = BytesMut::new();
    lean::put_frame(&mut end, lean::END, &lean::end(&status));
    wr.write_all(&end).await?;
    wr.shutdown().await
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
