//! The lean agent transport's framing, shared by the server and the Rust client.
//!
//! A lean connection is a TCP connection carrying one agent session as frames instead of a gRPC
//! stream over HTTP/2: no HTTP/2 framing, no per-stream flow-control bookkeeping, and what is
//! ready when a side writes leaves in one `write` (docs/PROTOCOL.md, "The lean transport"). A
//! frame is
//!
//! ```text
//! kind:   u8               — MESSAGE (0), HELLO (0x80) or END (0x81)
//! length: u32, big-endian  — the payload's bytes
//! payload                  — a protobuf message
//! ```
//!
//! A MESSAGE frame is byte for byte a gRPC length-prefixed message (uncompressed), so both sides
//! hand MESSAGE frames to tonic's own encoder and decoder, exactly as a gRPC stream's: one
//! encoding and decoding of each message in the binary, whatever the transport. The client sends
//! one [`HELLO`] (a [`v1::LeanHello`]), then MESSAGEs carrying `ClientMessage`s, the first its
//! `register`; it ends the session by closing its side of the connection (after `deregister` to
//! leave at once). The server sends MESSAGEs carrying `ServerMessage`s and, last, one [`END`] (a
//! [`v1::LeanEnd`]: the status a gRPC session stream would end with) before it closes.

use bytes::{BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::LengthDelimitedCodec;

use crate::v1;

/// The version of the framing this crate speaks (`LeanHello.version`).
pub const VERSION: u32 = 1;

/// Either way: a `ClientMessage` (client → server) or a `ServerMessage` (server → client); the
/// frame is a gRPC length-prefixed message.
pub const MESSAGE: u8 = 0;
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
        let hello = v1::LeanHello { version: VERSION, token: "t".into() };
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
    fn a_payload_over_the_limit_is_refused() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, MESSAGE, &v1::LeanHello { version: 1, token: "x".repeat(100) });
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
