//! Messages encoded by hand so that fan-out copies no more than it must.
//!
//! On the wire these are exactly the messages of the .proto file (a length-delimited submessage, a
//! `string` and a `bytes` field are the same bytes), but they keep parts as shared bytes:
//! * [`Deliveries`] keeps its items as already-encoded `Delivery` messages: the server encodes each
//!   routed message once and every receiver's batch shares those bytes;
//! * [`SyncResult`] is encoded once per released barrier and shared by every waiter's reply, and
//!   the client keeps the arrival order as byte slices of the received buffer (a barrier of N
//!   agents sends N names to each of N waiters).

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

/// A barrier's outcome (the `SyncResult` message). On the server, `encoded` carries the whole
/// message, encoded once; decoding fills the fields, keeping names as UTF-8 byte slices.
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug)]
pub struct SyncResult {
    pub encoded: Option<Bytes>,
    pub sync_id: String,
    /// UTF-8 agent ids, in arrival order (empty in a summary).
    pub arrival_order: Vec<Bytes>,
    pub payloads: Vec<Bytes>,
    pub forced: bool,
    /// How many agents arrived.
    pub count: u32,
    /// The outcome's digest (see `SyncOutcome::digest_of` in the core).
    pub digest: u64,
    /// Only the count, digest and position: `arrival_order` and `payloads` are left out.
    pub summary: bool,
    /// The receiving agent's place in the arrival order, from 0 (set in a summary only).
    pub position: u32,
    /// UTF-8 ids of the required participants that had not arrived at the release (empty in a
    /// summary).
    pub late: Vec<Bytes>,
    /// How many were late.
    pub late_count: u32,
}

impl SyncResult {
    /// This message's encoding, made once to be shared by every reply that carries it.
    pub fn encode_once(&self) -> Bytes {
        self.encode_to_vec().into()
    }

    /// The arrival order as text (ids that are not UTF-8, which the server never sends, are
    /// replaced lossily).
    pub fn arrival_order_strings(&self) -> Vec<String> {
        strings(&self.arrival_order)
    }

    /// The late participants as text.
    pub fn late_strings(&self) -> Vec<String> {
        strings(&self.late)
    }
}

fn strings(ids: &[Bytes]) -> Vec<String> {
    ids.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
}

impl Message for SyncResult {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(encoded) = &self.encoded {
            buf.put_slice(encoded);
            return;
        }
        if !self.sync_id.is_empty() {
            encoding::string::encode(1, &self.sync_id, buf);
        }
        encoding::bytes::encode_repeated(2, &self.arrival_order, buf);
        encoding::bytes::encode_repeated(3, &self.payloads, buf);
        if self.forced {
            encoding::bool::encode(4, &self.forced, buf);
        }
        if self.count != 0 {
            encoding::uint32::encode(5, &self.count, buf);
        }
        if self.digest != 0 {
            encoding::fixed64::encode(6, &self.digest, buf);
        }
        if self.summary {
            encoding::bool::encode(7, &self.summary, buf);
        }
        if self.position != 0 {
            encoding::uint32::encode(8, &self.position, buf);
        }
        encoding::bytes::encode_repeated(9, &self.late, buf);
        if self.late_count != 0 {
            encoding::uint32::encode(10, &self.late_count, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.sync_id, buf, ctx),
            2 => encoding::bytes::merge_repeated(wire_type, &mut self.arrival_order, buf, ctx),
            3 => encoding::bytes::merge_repeated(wire_type, &mut self.payloads, buf, ctx),
            4 => encoding::bool::merge(wire_type, &mut self.forced, buf, ctx),
            5 => encoding::uint32::merge(wire_type, &mut self.count, buf, ctx),
            6 => encoding::fixed64::merge(wire_type, &mut self.digest, buf, ctx),
            7 => encoding::bool::merge(wire_type, &mut self.summary, buf, ctx),
            8 => encoding::uint32::merge(wire_type, &mut self.position, buf, ctx),
            9 => encoding::bytes::merge_repeated(wire_type, &mut self.late, buf, ctx),
            10 => encoding::uint32::merge(wire_type, &mut self.late_count, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        if let Some(encoded) = &self.encoded {
            return encoded.len();
        }
        let id = if self.sync_id.is_empty() { 0 } else { encoding::string::encoded_len(1, &self.sync_id) };
        let forced = if self.forced { encoding::bool::encoded_len(4, &self.forced) } else { 0 };
        let count = if self.count != 0 { encoding::uint32::encoded_len(5, &self.count) } else { 0 };
        let digest = if self.digest != 0 { encoding::fixed64::encoded_len(6, &self.digest) } else { 0 };
        let summary = if self.summary { encoding::bool::encoded_len(7, &self.summary) } else { 0 };
        let position = if self.position != 0 { encoding::uint32::encoded_len(8, &self.position) } else { 0 };
        let late_count = if self.late_count != 0 { encoding::uint32::encoded_len(10, &self.late_count) } else { 0 };
        id + encoding::bytes::encoded_len_repeated(2, &self.arrival_order)
            + encoding::bytes::encoded_len_repeated(3, &self.payloads)
            + forced
            + count
            + digest
            + summary
            + position
            + encoding::bytes::encoded_len_repeated(9, &self.late)
            + late_count
    }

    fn clear(&mut self) {
        *self = SyncResult::default();
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
            ..Default::default()
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

    /// The SyncResult of the .proto file, field for field.
    #[derive(Clone, PartialEq, ::prost::Message)]
    struct ProtoSyncResult {
        #[prost(string, tag = "1")]
        sync_id: String,
        #[prost(string, repeated, tag = "2")]
        arrival_order: Vec<String>,
        #[prost(bytes = "vec", repeated, tag = "3")]
        payloads: Vec<Vec<u8>>,
        #[prost(bool, tag = "4")]
        forced: bool,
        #[prost(uint32, tag = "5")]
        count: u32,
        #[prost(fixed64, tag = "6")]
        digest: u64,
        #[prost(bool, tag = "7")]
        summary: bool,
        #[prost(uint32, tag = "8")]
        position: u32,
        #[prost(string, repeated, tag = "9")]
        late: Vec<String>,
        #[prost(uint32, tag = "10")]
        late_count: u32,
    }

    #[test]
    fn sync_result_matches_the_proto_definition_on_the_wire() {
        let payloads = vec![Bytes::from_static(b"x"), Bytes::new()];
        let full = SyncResult {
            sync_id: "round-1".into(),
            arrival_order: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            payloads: payloads.clone(),
            forced: true,
            count: 2,
            digest: u64::MAX - 1,
            late: vec![Bytes::from_static(b"c")],
            late_count: 1,
            ..Default::default()
        };
        let encoded = full.encode_once();
        let standard = ProtoSyncResult::decode(encoded.clone()).unwrap();
        assert_eq!(standard.sync_id, "round-1");
        assert_eq!(standard.arrival_order, vec!["a", "b"]);
        assert_eq!(standard.payloads, vec![b"x".to_vec(), vec![]]);
        assert!(standard.forced);
        assert_eq!((standard.count, standard.digest, standard.summary, standard.position), (2, u64::MAX - 1, false, 0));
        assert_eq!((&standard.late[..], standard.late_count), (&["c".to_owned()][..], 1));
        let shared = SyncResult { encoded: Some(encoded.clone()), ..Default::default() };
        assert_eq!(shared.encode_to_vec(), encoded.to_vec(), "the cached encoding is sent as is");
        let ours = SyncResult::decode(encoded).unwrap();
        assert_eq!(ours.arrival_order_strings(), vec!["a", "b"]);
        assert_eq!(ours.late_strings(), vec!["c"]);
        assert_eq!(ours.payloads, payloads);
        assert_eq!(ours.encoded_len(), standard.encoded_len());
        assert_eq!(SyncResult { encoded: None, ..ours }, full);

        let summary = SyncResult {
            sync_id: "r".into(),
            count: 1000,
            digest: 7,
            summary: true,
            position: 999,
            ..Default::default()
        };
        let bytes = summary.encode_to_vec();
        assert_eq!(bytes.len(), summary.encoded_len());
        let standard = ProtoSyncResult::decode(&bytes[..]).unwrap();
        assert_eq!((standard.count, standard.digest, standard.summary, standard.position), (1000, 7, true, 999));
        assert!(standard.arrival_order.is_empty());
        assert_eq!(SyncResult::decode(&bytes[..]).unwrap(), summary);
    }
}
