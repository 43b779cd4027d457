//! Property: whatever an agent's outbox holds within the documented limits, every frame it is sent
//! encodes under the transport's message cap (`Limits::max_message_bytes`), and nothing queued is
//! lost on the way. (Two large messages or two large states used to share one frame over the
//! cap, which ended the receiver's stream.)

use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::io::{Frame, Message};
use lockstep_core::outbox::Outbox;
use lockstep_core::{Limits, OverflowPolicy};
use lockstep_proto::convert;
use proptest::prelude::*;
use prost::Message as _;
use serde_json::{json, Value};

/// The most items the server puts in one frame (`lockstep_server::driver::MAX_BATCH`).
const MAX_BATCH: usize = 256;

/// What is offered to the outbox: a routed message, or a watched agent's state change.
#[derive(Clone, Debug)]
enum Offer {
    /// A message of `payload` bytes (as a share of the payload limit) with names of the given lengths.
    Message { payload_share: f64, topic_len: usize, publisher_len: usize, content_type_len: usize },
    /// A delta of `share` of the delta limit for watched agent `agent`.
    Delta { agent: u8, share: f64 },
    /// A snapshot of watched agent `agent`, whose state takes `share` of the state limit.
    Snapshot { agent: u8, share: f64 },
}

fn offer() -> impl Strategy<Value = Offer> {
    prop_oneof![
        (0.0..=1.0f64, 1..=256usize, 1..=128usize, 0..=256usize).prop_map(|(s, t, p, c)| Offer::Message {
            payload_share: s,
            topic_len: t,
            publisher_len: p,
            content_type_len: c
        }),
        (0..8u8, 0.0..=1.0f64).prop_map(|(agent, share)| Offer::Delta { agent, share }),
        (0..8u8, 0.0..=1.0f64).prop_map(|(agent, share)| Offer::Snapshot { agent, share }),
    ]
}

/// A JSON object whose compact text is about `bytes` long (never over).
fn object_of(key: &str, bytes: usize) -> Value {
    json!({ key: "x".repeat(bytes.saturating_sub(key.len() + 8)) })
}

fn limits() -> impl Strategy<Value = Limits> {
    (1024..=(2usize << 20), 512..=(512usize << 10), 1024..=(2usize << 20)).prop_map(|(payload, delta, state)| Limits {
        max_payload_bytes: payload,
        max_delta_bytes: delta,
        max_state_bytes: state,
        ..Limits::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_frame_fits_the_message_cap(limits in limits(), offers in prop::collection::vec(offer(), 1..40)) {
        let cap = limits.max_message_bytes();
        let mut outbox = Outbox::new(10_000, 10_000, OverflowPolicy::DropOldest);
        let mut states: Vec<Value> = vec![json!({}); 8];
        let mut sent_messages = 0u64;
        let mut versions = [0u64; 8];
        for offer in &offers {
            match *offer {
                Offer::Message { payload_share, topic_len, publisher_len, content_type_len } => {
                    let payload = Bytes::from(vec![1u8; (limits.max_payload_bytes as f64 * payload_share) as usize]);
                    let message = Message::new(&"t".repeat(topic_len), payload, &"c".repeat(content_type_len), "p".repeat(publisher_len).into());
                    outbox.push_message(Arc::new(message));
                    sent_messages += 1;
                }
                Offer::Delta { agent, share } => {
                    let delta = object_of(&format!("k{}", versions[agent as usize]), (limits.max_delta_bytes as f64 * share) as usize);
                    versions[agent as usize] += 1;
                    outbox.push_state_delta(&agent_id(agent), versions[agent as usize], &delta);
                }
                Offer::Snapshot { agent, share } => {
                    states[agent as usize] = object_of("all", (limits.max_state_bytes as f64 * share) as usize);
                    outbox.push_state_snapshot(&agent_id(agent));
                }
            }
        }
        let mut received_messages = 0u64;
        while let Some(frame) = outbox.next_frame(MAX_BATCH, limits.frame_bytes(), |id| {
            let i: usize = id[1..].parse().unwrap();
            Some((versions[i], states[i].clone()))
        }) {
            if let Frame::Deliveries(batch) = &frame {
                received_messages += batch.len() as u64;
            }
            let encoded = convert::server_message(frame).expect("a session frame").encoded_len();
            prop_assert!(encoded <= cap, "a frame of {} bytes over the cap of {}", encoded, cap);
        }
        prop_assert_eq!(received_messages, sent_messages);
    }
}

fn agent_id(i: u8) -> Arc<str> {
    format!("a{i}").into()
}
