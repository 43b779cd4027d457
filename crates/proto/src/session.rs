//! How the server reads a session stream: each client message is handed over as the bytes of its
//! gRPC message ([`RawClientMessage`]) and decoded by the session's reader, not by the transport.
//!
//! With tonic's usual codec, a message that is framed correctly but is not a valid `ClientMessage`
//! (garbage, a string that is not UTF-8) fails the whole stream: the reader stops and the agent
//! goes silent. Decoding in the reader instead turns such a message into an answer for that one
//! request (with its `request_id` when it can still be read, [`Undecodable`]) while the stream goes
//! on. [`Codec`] is the codec of every generated server: plain prost for everything else.

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use lockstep_core::Reason;
use prost::encoding::{self, DecodeContext, WireType};
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstEncoder;

use crate::v1;

/// One client message of a session, as it arrived: the bytes of one gRPC message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawClientMessage(pub Bytes);

/// A client message that is not a valid `ClientMessage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    /// The message's `request_id` when it could still be read (0 otherwise: its error is then
    /// sent as a reply with id 0, like any failed request that wanted no reply).
    pub request_id: u64,
    /// What is wrong, for the error the client gets.
    pub reason: String,
}

impl RawClientMessage {
    /// The message, decoded.
    pub fn decode(&self) -> Result<v1::ClientMessage, Undecodable> {
        v1::ClientMessage::decode(self.0.clone()).map_err(|e| Undecodable {
            request_id: request_id(&self.0),
            reason: format!("the message is not a valid lockstep.v1.ClientMessage ({e}); nothing was done"),
        })
    }
}

/// The `request_id` (field 1) of an encoded `ClientMessage`, read field by field until a field
/// cannot be read; 0 when it is not found. (prost writes fields in order, so the id comes first.)
fn request_id(mut buf: &[u8]) -> u64 {
    let mut found = 0;
    while buf.has_remaining() {
        let Ok((tag, wire_type)) = encoding::decode_key(&mut buf) else { break };
        if tag == 1 && wire_type == WireType::Varint {
            match encoding::decode_varint(&mut buf) {
                Ok(id) => found = id,
                Err(_) => break,
            }
        } else if encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default()).is_err() {
            break;
        }
    }
    found
}

/// How a generated server's codec reads one received gRPC message.
pub trait FromMessage: Sized {
    fn from_message(buf: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

/// Every request message but a session's is decoded by prost at once.
impl<M: Message + Default> FromMessage for M {
    fn from_message(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        M::decode(buf).map_err(|e| {
            let message = format!("the request is not a valid protobuf message of its type: {e}");
            crate::reason::status(Code::InvalidArgument, Reason::InvalidArgument, message, [])
        })
    }
}

/// A session's messages are kept as they came, for the reader to decode.
impl FromMessage for RawClientMessage {
    fn from_message(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        Ok(RawClientMessage(buf.copy_to_bytes(buf.remaining())))
    }
}

/// The codec of lockstep's generated servers: responses are encoded by prost; requests are read by
/// [`FromMessage`].
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: FromMessage + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// The decoder of [`Codec`].
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: FromMessage> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::from_message(buf).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(msg: &v1::ClientMessage) -> RawClientMessage {
        RawClientMessage(msg.encode_to_vec().into())
    }

    #[test]
    fn a_valid_message_decodes_as_itself() {
        let msg =
            v1::ClientMessage { request_id: 7, kind: Some(v1::client_message::Kind::Heartbeat(v1::Heartbeat {})) };
        assert_eq!(raw(&msg).decode(), Ok(msg));
    }

    #[test]
    fn a_string_that_is_not_utf8_is_refused_with_the_request_id() {
        let msg = v1::ClientMessage {
            request_id: 42,
            kind: Some(v1::client_message::Kind::UpdateState(v1::UpdateState { delta_json: "{}".into() })),
        };
        let mut bytes = msg.encode_to_vec();
        // The delta's two bytes are the message's last: make them an invalid UTF-8 sequence.
        let n = bytes.len();
        bytes[n - 2..].copy_from_slice(&[0xc3, 0x28]);
        let err = RawClientMessage(bytes.into()).decode().unwrap_err();
        assert_eq!(err.request_id, 42);
        assert!(err.reason.contains("UTF-8"), "{}", err.reason);
    }

    #[test]
    fn garbage_is_refused_and_its_id_found_when_it_can_be() {
        // Field 1 = 9, then a field whose length runs past the end.
        let err = RawClientMessage(Bytes::from_static(&[0x08, 0x09, 0x22, 0x7f, 0x01])).decode().unwrap_err();
        assert_eq!(err.request_id, 9);
        let err = RawClientMessage(Bytes::from_static(&[0xff, 0xff, 0xff])).decode().unwrap_err();
        assert_eq!(err.request_id, 0, "no id to be read");
        assert!(err.reason.contains("not a valid"), "{}", err.reason);
    }
}
