//! The lean agent transport from the client's side: an agent session over one plain TCP
//! connection of frames (`lockstep_proto::lean`; docs/PROTOCOL.md, "The lean transport"), for
//! agents on the server's host ([`Client::register_lean`](crate::Client::register_lean)).
//!
//! The session behaves as one over gRPC — same messages, same replies, same errors, same
//! reconnection — and is read by the same code: the connection's MESSAGE frames (gRPC
//! length-prefixed messages) and its END frame (the session's status, made the trailers a gRPC
//! stream ends with) are handed to tonic's own decoder as a response body. Each message costs a
//! frame header instead of an HTTP/2 frame and stream bookkeeping, and everything the agent has
//! queued when its writer wakes leaves in one write. Queries still go over the client's gRPC
//! connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body::{Body, Frame};
use lockstep_proto::{lean, v1};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tonic::codec::{Codec as _, Streaming};
use tonic::Status;

use crate::Error;

/// The bytes a writer gathers before it writes, when more messages are queued than that.
const COALESCE_BYTES: usize = 256 * 1024;

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
        let refused = |reason: String| Error::Connect { addr: self.addr.clone(), reason };
        let stream = TcpStream::connect(&self.addr).await.map_err(|e| refused(format!("lean transport: {e}")))?;
        stream.set_nodelay(true).map_err(|e| refused(format!("lean transport: cannot set TCP_NODELAY: {e}")))?;
        let (rd, mut wr) = stream.into_split();
        let mut hello = BytesMut::new();
        lean::put_frame(&mut hello, lean::HELLO, &v1::LeanHello { version: lean::VERSION, token: self.token.clone() });
        wr.write_all(&hello).await.map_err(|e| refused(format!("lean transport: {e}")))?;
        let (tx, rx) = mpsc::channel(crate::agent::OUTBOUND_BUFFER);
        tokio::spawn(write(rx, wr));
        let body = Inbound { frames: FramedRead::new(rd, lean::codec(self.max_message)), ended: false };
        let decoder = tonic_prost::ProstCodec::<v1::ClientMessage, v1::ServerMessage>::default().decoder();
        Ok((
            Streaming::new_response(decoder, body, tonic::codegen::http::StatusCode::OK, None, Some(self.max_message)),
            tx,
        ))
    }
}

/// Writes what the session sends until the session drops its sender, then closes the
/// connection's write side (the server takes that as the end of the session's stream).
async fn write(mut rx: mpsc::Receiver<v1::ClientMessage>, mut wr: tokio::net::tcp::OwnedWriteHalf) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        lean::put_frame(&mut buf, lean::MESSAGE, &first);
        while buf.len() < COALESCE_BYTES {
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

/// A lean connection's frames as the body of a gRPC response: MESSAGE frames as they are, the
/// END frame as trailers. A connection that breaks, or closes without an END, ends it with
/// UNAVAILABLE, so that the session is resumed as a broken gRPC stream is.
struct Inbound {
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    ended: bool,
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let broke = |why: String| Status::unavailable(format!("the lean connection broke: {why}"));
        let frame = match std::task::ready!(this.frames.poll_next_unpin(cx)) {
            Some(Ok(frame)) if lean::kind(&frame) == Some(lean::MESSAGE) => {
                return Poll::Ready(Some(Ok(Frame::data(frame.freeze()))))
            }
            Some(Ok(frame)) if lean::kind(&frame) == Some(lean::END) => match v1::LeanEnd::decode(lean::payload(frame))
            {
                Ok(end) => {
                    let mut trailers = tonic::codegen::http::HeaderMap::new();
                    lean::status(end).add_header(&mut trailers).map(|()| Frame::trailers(trailers))
                }
                Err(e) => Err(broke(format!("undecodable LeanEnd ({e})"))),
            },
            Some(Ok(frame)) => Err(broke(format!("a frame of unknown kind {:?}", lean::kind(&frame)))),
            Some(Err(e)) => Err(broke(e.to_string())),
            None => Err(broke("it closed without ending the session".into())),
        };
        this.ended = true;
        Poll::Ready(Some(frame))
    }
}
