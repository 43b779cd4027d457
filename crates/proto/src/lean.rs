//! The lean agent transport's framing, shared by the server and the Rust client.
//!
//! A lean connection is a TCP connection carrying agent sessions as frames instead of gRPC
//! streams over HTTP/2: no HTTP/2 framing, no per-stream flow-control bookkeeping, and what is
//! ready when a side writes leaves in one `write` (docs/PROTOCOL.md, "The lean transport"). A
//! frame is
//!
//! ```text
//! kind:   u8               — see the constants below
//! length: u32, big-endian  — the payload's bytes
//! payload
//! ```
//!
//! The client sends one [`HELLO`] (a [`v1::LeanHello`]) first. Then the connection carries one
//! session, or many when the hello asks to multiplex:
//!
//! * **One session.** A [`MESSAGE`] frame is byte for byte a gRPC length-prefixed message
//!   (uncompressed), so both sides hand MESSAGE frames to tonic's own encoder and decoder, exactly
//!   as a gRPC stream's: one encoding and decoding of each message in the binary, whatever the
//!   transport. The client sends MESSAGEs carrying `ClientMessage`s, the first its `register`; it
//!   ends the session by closing its side of the connection (after `deregister` to leave at
//!   once). The server sends MESSAGEs carrying `ServerMessage`s and, last, one [`END`] (a
//!   [`v1::LeanEnd`]: the status a gRPC session stream would end with) before it closes.
//! * **Multiplexed.** Every frame's payload starts with a big-endian `u32` session id chosen by
//!   the client. A [`SESSION_DATA`] frame carries the next bytes of that session's stream, as a
//!   gRPC stream's body would: gRPC length-prefixed messages, which a frame may cut anywhere (at
//!   most [`SESSION_CHUNK`] bytes per frame, so that one session's large message does not hold
//!   the connection's other sessions for long). The first SESSION_DATA of an id (empty, from the
//!   Rust client) opens a session, and the ids of new sessions increase;
//!   [`SESSION_CLOSE`] (client → server, no more bytes) ends its side as closing the connection
//!   ends a lone session's; [`SESSION_END`] (server → client, a [`v1::LeanEnd`]) is its last
//!   frame. The sessions share the connection's order: one whose reader stops holds the others
//!   up once its buffer is full.
use std::pin::Pin;

use bytes::{BufMut, BytesMut};
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;

use crate::v1;

/// The version of the framing this crate speaks (`LeanHello.version`).
pub const VERSION: u32 = 1;

/// Either way: a `ClientMessage` (client → server) or a `ServerMessage` (server → client); the
/// frame is a gRPC length-prefixed message.
pub const MESSAGE: u8 = 0;
/// Multiplexed, either way: a session id, then the next bytes of that session's stream.
pub const SESSION_DATA: u8 = 0x01;
/// Multiplexed, client → server: a session id; the session sends nothing more.
pub const SESSION_CLOSE: u8 = 0x02;
/// Multiplexed, server → client, a session's last frame: a session id, then a [`v1::LeanEnd`].
pub const SESSION_END: u8 = 0x82;
/// Client → server, first frame: a [`v1::LeanHello`].
pub const HELLO: u8 = 0x80;
/// Server → client, last frame: a [`v1::LeanEnd`].
pub const END: u8 = 0x81;

/// Bytes of a frame's header: the kind and the length.
pub const HEADER_BYTES: usize = 5;

/// Appends one frame of `kind` carrying `message` to `buf`.
pub fn put_frame(buf: &mut BytesMut, kind: u8, message: &impl Message) {
    let len = message.encoded_len();
    buf.reserve(HEADER_BYTES + len);
    buf.put_u8(kind);
    buf.put_u32(len as u32);
    message.encode_raw(buf);
}

/// Most bytes of a session's stream one [`SESSION_DATA`] frame carries.
pub const SESSION_CHUNK: usize = 64 * 1024;

/// Bytes of a session id at the start of a multiplexed frame's payload.
pub const SESSION_ID_BYTES: usize = 4;

/// Appends [`SESSION_DATA`] frames carrying `data` for `session` to `buf`, cut into pieces of at
/// most [`SESSION_CHUNK`] bytes.
/// An empty `data` makes one empty frame (which opens a session).
pub fn put_session_data(buf: &mut BytesMut, session: u32, data: &[u8]) {
    if data.is_empty() {
        put_session_header(buf, SESSION_DATA, session, 0);
    }
    for piece in data.chunks(SESSION_CHUNK) {
        put_session_header(buf, SESSION_DATA, session, piece.len());
        buf.put_slice(piece);
    }
}

/// Appends `message` for `session` to `buf` as the next bytes of the session's stream: a gRPC
/// length-prefixed message (a [`MESSAGE`] frame) in [`SESSION_DATA`] frames.
pub fn put_session_message(buf: &mut BytesMut, session: u32, message: &impl Message) {
    let framed = HEADER_BYTES + message.encoded_len();
    if framed <= SESSION_CHUNK {
        put_session_header(buf, SESSION_DATA, session, framed);
        put_frame(buf, MESSAGE, message);
    } else {
        let mut whole = BytesMut::with_capacity(framed);
        put_frame(&mut whole, MESSAGE, message);
        put_session_data(buf, session, &whole);
    }
}

/// Appends a [`SESSION_CLOSE`] (no message) or [`SESSION_END`] frame for `session` to `buf`.
pub fn put_session_frame(buf: &mut BytesMut, kind: u8, session: u32, message: Option<&v1::LeanEnd>) {
    let len = message.map_or(0, Message::encoded_len);
    put_session_header(buf, kind, session, len);
    if let Some(m) = message {
        m.encode_raw(buf);
    }
}

fn put_session_header(buf: &mut BytesMut, kind: u8, session: u32, len: usize) {
    buf.reserve(HEADER_BYTES + SESSION_ID_BYTES + len);
    buf.put_u8(kind);
    buf.put_u32((SESSION_ID_BYTES + len) as u32);
    buf.put_u32(session);
}

/// A whole multiplexed frame's session id and the rest of its payload (`None`: no room for an id).
pub fn session_payload(frame: BytesMut) -> Option<(u32, bytes::Bytes)> {
    let mut payload = payload(frame);
    if payload.len() < SESSION_ID_BYTES {
        return None;
    }
    let id = payload.split_to(SESSION_ID_BYTES);
    Some((u32::from_be_bytes([id[0], id[1], id[2], id[3]]), payload))
}

/// The longest payload of a multiplexed frame: a session id and a chunk (a [`SESSION_END`]'s
/// status is far shorter).
pub const MAX_SESSION_PAYLOAD: usize = SESSION_ID_BYTES + SESSION_CHUNK;

/// A session's outbound, as a multiplexed connection's writer takes it: items that `put` turns into
/// the session's frames.
pub type Outbound<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// A session handed to a multiplexed connection's writer: its id when the writer should open it
/// (see [`write_sessions`]), and its outbound.
pub type Opened<T> = (Option<u32>, Outbound<T>);

/// The bytes a multiplexed connection's writer gathers before it writes, when more are ready.
pub const COALESCE_BYTES: usize = 256 * 1024;

/// Writes what the sessions of a multiplexed connection send: every item of every session handed
/// in through `opened`, appended to one buffer by `put`, everything ready when the writer wakes
/// in one `write` (up to [`COALESCE_BYTES`] gathered first). A session handed in with its id
/// (the client's side) first gets an empty [`SESSION_DATA`] frame at once, which opens it: so
/// sessions open in the order they were handed in, whichever of them then sends first. Returns
/// once `opened` is closed and every session's outbound has ended (after shutting the writer
/// down), or a write failed.
pub async fn write_sessions<T, W: AsyncWrite + Unpin>(
    mut opened: mpsc::UnboundedReceiver<Opened<T>>,
    mut wr: W,
    mut put: impl FnMut(&mut BytesMut, T),
) -> std::io::Result<()> {
    let mut all = futures::stream::SelectAll::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut more = true;
    loop {
        tokio::select! {
            session = opened.recv(), if more => match session {
                Some((opens, session)) => {
                    if let Some(id) = opens {
                        put_session_data(&mut buf, id, &[]);
                    }
                    all.push(session);
                }
                None => more = false,
            },
            Some(item) = all.next(), if !all.is_empty() => put(&mut buf, item),
            else => break,
        }
        while buf.len() < COALESCE_BYTES {
            match all.next().now_or_never() {
                Some(Some(item)) => put(&mut buf, item),
                _ => break,
            }
        }
        if !buf.is_empty() {
            wr.write_all(&buf).await?;
            buf.clear();
        }
    }
    wr.shutdown().await
}

/// The codec that cuts a connection's bytes into whole frames, header included, refusing a
/// payload over `max_message` bytes (its error is an `InvalidData` I/O error).
pub fn codec(max_message: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(1)
        .length_field_length(4)
        .num_skip(0)
        // The frame handed over is the header and the payload.
        .length_adjustment(HEADER_BYTES as isize)
        .max_frame_length(max_message)
        .new_codec()
}

/// A whole frame's kind (`None` for no frame at all).
pub fn kind(frame: &[u8]) -> Option<u8> {
    frame.first().copied()
}

/// A whole frame's payload.
pub fn payload(mut frame: BytesMut) -> bytes::Bytes {
    frame.split_off(HEADER_BYTES.min(frame.len())).freeze()
}

/// The status a gRPC stream would end with, as the last frame of a lean session.
pub fn end(status: &tonic::Status) -> v1::LeanEnd {
    v1::LeanEnd {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: bytes::Bytes::copy_from_slice(status.details()),
    }
}

/// The status an [`END`] frame carries (code 0: a normal end).
pub fn status(end: v1::LeanEnd) -> tonic::Status {
    tonic::Status::with_details(tonic::Code::from_i32(end.code), end.message, end.details)
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn a_frame_is_its_kind_its_length_and_its_message() {
        let hello = v1::LeanHello { version: VERSION, token: "t".into(), multiplex: false };
        let mut buf = BytesMut::new();
        put_frame(&mut buf, HELLO, &hello);
        put_frame(&mut buf, MESSAGE, &v1::Heartbeat {});
        assert_eq!(buf[0], HELLO);
        assert_eq!(u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize, hello.encoded_len());
        let mut codec = codec(1024);
        let first = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(kind(&first), Some(HELLO));
        assert_eq!(v1::LeanHello::decode(payload(first)).unwrap(), hello);
        let second = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((kind(&second), second.len()), (Some(MESSAGE), HEADER_BYTES));
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn multiplexed_data_is_cut_into_chunks_that_name_their_session() {
        let data: Vec<u8> = (0..SESSION_CHUNK + 10).map(|i| i as u8).collect();
        let mut buf = BytesMut::new();
        put_session_data(&mut buf, 7, &data);
        put_session_frame(&mut buf, SESSION_CLOSE, 7, None);
        let end = v1::LeanEnd { code: 5, message: "gone".into(), details: Default::default() };
        put_session_frame(&mut buf, SESSION_END, 9, Some(&end));
        let mut codec = codec(MAX_SESSION_PAYLOAD);
        let mut got = Vec::new();
        let mut frame = |kind_wanted: u8| {
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(kind(&frame), Some(kind_wanted));
            session_payload(frame).unwrap()
        };
        for _ in 0..2 {
            let (id, piece) = frame(SESSION_DATA);
            assert_eq!(id, 7);
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, data, "the pieces join into the bytes sent");
        assert_eq!(frame(SESSION_CLOSE), (7, bytes::Bytes::new()));
        let (id, payload) = frame(SESSION_END);
        assert_eq!((id, v1::LeanEnd::decode(payload).unwrap()), (9, end));
        assert_eq!(session_payload(BytesMut::from(&[SESSION_DATA, 0, 0, 0, 2, 1, 2][..])), None);
    }

    #[test]
    fn a_session_message_is_a_grpc_message_in_data_frames_however_long() {
        for token in ["t".to_owned(), "x".repeat(SESSION_CHUNK)] {
            let hello = v1::LeanHello { version: VERSION, token, multiplex: true };
            let mut buf = BytesMut::new();
            put_session_message(&mut buf, 3, &hello);
            let mut codec = codec(MAX_SESSION_PAYLOAD);
            let mut stream = BytesMut::new();
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                assert_eq!(kind(&frame), Some(SESSION_DATA));
                let (id, piece) = session_payload(frame).unwrap();
                assert_eq!(id, 3);
                stream.extend_from_slice(&piece);
            }
            let mut alone = BytesMut::new();
            put_frame(&mut alone, MESSAGE, &hello);
            assert_eq!(stream, alone, "the session's bytes are the message's gRPC framing");
        }
    }

    #[test]
    fn a_payload_over_the_limit_is_refused() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, MESSAGE, &v1::LeanHello { version: 1, token: "x".repeat(100), multiplex: false });
        let err = codec(10).decode(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_end_frame_carries_the_status_and_its_details() {
        let status = tonic::Status::with_details(tonic::Code::NotFound, "gone", bytes::Bytes::from_static(b"\x01\x02"));
        let back = super::status(end(&status));
        assert_eq!((back.code(), back.message(), back.details()), (tonic::Code::NotFound, "gone", &b"\x01\x02"[..]));
    }
}
