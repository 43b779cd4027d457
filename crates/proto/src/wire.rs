//! `Deliveries`, encoded by hand so that fan-out copies no more than it must.
//!
//! On the wire this is exactly the `Deliveries` message of the .proto file (a length-delimited
//! `Delivery` and a `bytes` field are the same bytes), but its items are kept as already-encoded
//! `Delivery` messages. The server encodes each routed message once and every receiver's batch
//! shares those bytes; the Rust client decodes items without copying payloads.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::v1;

/// A batch of deliveries: `items[i]` (an encoded [`v1::Delivery`]) has sequence number
/// `first_seq + i`; `missed_before` messages were dropped right before `items[0]`.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct Deliveries {
    pub first_seq: u64,
    pub missed_before: u64,
    pub items: Vec<Bytes>,
}

impl Deliveries {
    /// The items, decoded.
    pub fn decode_items(&self) -> Result<Vec<v1::Delivery>, DecodeError> {
        self.items.iter().map(|b| v1::Delivery::decode(b.clone())).collect()
    }
}

impl Message for Deliveries {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.first_seq != 0 {
            encoding::uint64::encode(1, &self.first_seq, buf);
        }
        if self.missed_before != 0 {
            encoding::uint64::encode(2, &self.missed_before, buf);
        }
        encoding::bytes::encode_repeated(3, &self.items, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.first_seq, buf, ctx),
            2 => encoding::uint64::merge(wire_type, &mut self.missed_before, buf, ctx),
            3 => encoding::bytes::merge_repeated(wire_type, &mut self.items, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let seq = if self.first_seq != 0 { encoding::uint64::encoded_len(1, &self.first_seq) } else { 0 };
        let missed = if self.missed_before != 0 { encoding::uint64::encoded_len(2, &self.missed_before) } else { 0 };
        seq + missed + encoding::bytes::encoded_len_repeated(3, &self.items)
    }

    fn clear(&mut self) {
        *self = Deliveries::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes as the message the .proto file describes, both ways.
    #[test]
    fn matches_the_proto_definition_on_the_wire() {
        let item = v1::Delivery {
            topic: "a.b".into(),
            payload: Bytes::from_static(b"xyz"),
            content_type: "t".into(),
            publisher: "p".into(),
        };
        let ours = Deliveries { first_seq: 7, missed_before: 2, items: vec![item.encode_to_vec().into(); 2] };
        let bytes = ours.encode_to_vec();
        assert_eq!(bytes.len(), ours.encoded_len());
        // Decode as a generic message with a repeated submessage, field by field.
        let mut buf = &bytes[..];
        let mut items: Vec<v1::Delivery> = Vec::new();
        let (mut first_seq, mut missed) = (0u64, 0u64);
        while buf.has_remaining() {
            let (tag, wt) = encoding::decode_key(&mut buf).unwrap();
            match tag {
                1 => encoding::uint64::merge(wt, &mut first_seq, &mut buf, DecodeContext::default()).unwrap(),
                2 => encoding::uint64::merge(wt, &mut missed, &mut buf, DecodeContext::default()).unwrap(),
                3 => encoding::message::merge_repeated(wt, &mut items, &mut buf, DecodeContext::default()).unwrap(),
                _ => panic!("unexpected field {tag}"),
            }
        }
        assert_eq!((first_seq, missed), (7, 2));
        assert_eq!(items, vec![item.clone(), item]);
        let back = Deliveries::decode(&bytes[..]).unwrap();
        assert_eq!(back, ours);
        assert_eq!(back.decode_items().unwrap().len(), 2);
    }
}
