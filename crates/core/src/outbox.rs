//! Everything waiting to be sent to one agent, under the rules that keep it bounded and honest.
//!
//! * Control frames (registration, replies) are never dropped; if more than
//!   `max_control_backlog` pile up the agent is too slow to serve and is disconnected.
//! * While the agent is paused (held), only control frames go out; messages queue under the usual
//!   policy and state changes keep coalescing, so it catches up on resume with state converged.
//! * A reply is a fence: it is sent only after every message and state change queued before it.
//!   So a barrier's release reaches each participant after the messages published, and the state
//!   changes made, before the barrier's last arrival. So is another agent's request: it reaches
//!   its responder after the messages routed to it before the request.
//! * Routed messages go through a queue of `capacity`. When it is full the overflow policy decides:
//!   drop the oldest (counted, and the next message sent carries `missed_before`), or disconnect.
//!   Sequence numbers are assigned on entry, so a receiver also sees a gap in `seq`.
//! * At most `max_in_flight` messages are in flight: sent and not yet acknowledged. Past that, messages
//!   wait in the queue (where the overflow policy applies to them) until acknowledgements make
//!   room, so that what a slow reader has not taken stays here, where it is counted and reported,
//!   instead of piling up in transport buffers where it only ages. A new connection starts with
//!   nothing in flight.
//! * State changes of watched agents are coalesced per watched agent: one pending entry each, the
//!   patches composed, or replaced by a snapshot where composition cannot be exact. Their number is
//!   bounded by the number of agents watched.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use crate::config::OverflowPolicy;
use crate::io::{Delivery, Frame, Message, Reply, StateChange};
use crate::state;

/// What happened when a message was offered to a full queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; nothing lost.
    Queued,
    /// Queued after dropping the oldest queued message.
    DroppedOldest,
    /// The queue is full and the policy is `disconnect`: the message was not queued.
    Overflow,
}

/// A pending state change for one watched agent.
#[derive(Clone, Debug, PartialEq)]
enum Pending {
    /// Apply `delta` on top of `base_version` to reach `version`.
    Delta { base_version: u64, version: u64, delta: Value },
    /// Send the owner's full state at the time of flushing (composition was not exact).
    Snapshot,
    /// The owner left.
    Removed { version: u64 },
}

/// Counters a health view reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub queued: usize,
    pub high_water: usize,
    pub delivered: u64,
    pub dropped: u64,
    pub acked: u64,
}

/// One agent's outbound side.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    max_in_flight: usize,
    policy: OverflowPolicy,
    /// Frames with their fence: `Some(seq)` waits for messages up to `seq` and pending state.
    control: VecDeque<(Frame, Option<u64>)>,
    messages: VecDeque<Delivery>,
    next_seq: u64,
    missed: u64,
    states: HashMap<Arc<str>, Pending>,
    state_order: VecDeque<Arc<str>>,
    stats: OutboxStats,
    /// The engine announced `Ready` for this outbox and the shell has not drained it since.
    pub(crate) notified: bool,
    /// Paused: hold everything but control frames.
    held: bool,
    /// The sequence number of the last message sent, and of the last one the agent acknowledged
    /// (or that was sent before its current connection): the difference is what is in flight.
    sent_through: u64,
    acked_through: u64,
}

impl Outbox {
    /// A queue of `capacity` messages under `policy`, sending at most `max_in_flight` ahead of
    /// the agent's acknowledgements.
    pub fn new(capacity: usize, max_in_flight: usize, policy: OverflowPolicy) -> Self {
        Outbox {
            capacity,
            max_in_flight,
            policy,
            control: VecDeque::new(),
            messages: VecDeque::new(),
            next_seq: 1,
            missed: 0,
            states: HashMap::new(),
            state_order: VecDeque::new(),
            stats: OutboxStats::default(),
            notified: false,
            held: false,
            sent_through: 0,
            acked_through: 0,
        }
    }

    /// Whether anything waits to be sent now.
    pub fn has_frames(&self) -> bool {
        let messages = !self.messages.is_empty() && self.in_flight_room() > 0;
        !self.control.is_empty() || (!self.held && (messages || !self.state_order.is_empty()))
    }

    /// How many more messages may be sent before acknowledgements come back. (Sequence numbers
    /// dropped between two sent batches count as in flight until an acknowledgement passes them:
    /// the bound errs on the safe side.)
    fn in_flight_room(&self) -> usize {
        let in_flight = self.sent_through.saturating_sub(self.acked_through);
        self.max_in_flight.saturating_sub(usize::try_from(in_flight).unwrap_or(usize::MAX))
    }

    /// The agent's session moved to a new connection: what was in flight on the old one will never
    /// be acknowledged.
    pub fn new_connection(&mut self) {
        self.acked_through = self.sent_through;
    }

    /// Holds (paused) or releases deliveries and state changes.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    /// Queues a control frame that goes ahead of queued deliveries (a notice, a command).
    pub fn push_urgent(&mut self, frame: Frame) {
        self.control.push_back((frame, None));
    }

    /// Number of control frames waiting.
    pub fn control_backlog(&self) -> usize {
        self.control.len()
    }

    pub fn stats(&self) -> OutboxStats {
        OutboxStats { queued: self.messages.len(), ..self.stats }
    }

    /// Queues a control frame ahead of everything else, fenced by nothing (a registration).
    pub fn push_control_front(&mut self, frame: Frame) {
        self.control.push_front((frame, None));
    }

    /// The session ended for good (lease lost): pending replies and state changes are moot, and
    /// queued messages are dropped (counted, and reported as a gap if the agent comes back).
    /// Returns how many messages were dropped.
    pub fn end_session(&mut self) -> u64 {
        self.control.clear();
        self.states.clear();
        self.state_order.clear();
        self.discard_messages()
    }

    /// Queues a reply, to be sent after everything queued before it (never dropped).
    pub fn push_reply(&mut self, request_id: u64, reply: Reply) {
        self.push_fenced(Frame::Reply { request_id, reply });
    }

    /// Queues a control frame (a reply, an agent request) to be sent after everything queued
    /// before it (never dropped).
    pub fn push_fenced(&mut self, frame: Frame) {
        let fence = self.next_seq - 1;
        self.control.push_back((frame, Some(fence)));
    }

    /// Whether the first control frame may go now, and otherwise how many queued messages must go
    /// before it.
    fn control_waits_for(&self) -> Option<usize> {
        let (_, fence) = self.control.front()?;
        // While held nothing moves, so fences cannot be waited for (the replies are refusals).
        let Some(fence) = fence.filter(|_| !self.held) else { return Some(0) };
        let messages = self.messages.iter().take_while(|d| d.seq <= fence).count();
        Some(if messages == 0 && !self.state_order.is_empty() { usize::MAX } else { messages })
    }

    /// Offers a routed message.
    pub fn push_message(&mut self, message: Arc<Message>) -> Enqueued {
        let mut outcome = Enqueued::Queued;
        if self.messages.len() >= self.capacity {
            if self.policy == OverflowPolicy::Disconnect {
                // Not queued, so lost to this agent: like any dropped message it takes a sequence
                // number and is reported before the next message, so nothing is dropped silently.
                self.next_seq += 1;
                self.missed += 1;
                self.stats.dropped += 1;
                return Enqueued::Overflow;
            }
            let dropped = self.messages.pop_front().expect("a full queue has a front");
            // Everything missed before the dropped message, and the message itself, is now missed
            // before whatever follows it.
            let gap = dropped.missed_before + 1;
            match self.messages.front_mut() {
                Some(next) => next.missed_before += gap,
                None => self.missed += gap,
            }
            self.stats.dropped += 1;
            outcome = Enqueued::DroppedOldest;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let missed_before = std::mem::take(&mut self.missed);
        self.messages.push_back(Delivery { seq, message, missed_before });
        self.stats.high_water = self.stats.high_water.max(self.messages.len());
        outcome
    }

    /// Counts a message routed to this agent while nothing may be sent to it (its breaker is
    /// open) as dropped: it takes a sequence number and is reported before the next message.
    pub fn drop_routed(&mut self) {
        self.next_seq += 1;
        self.missed += 1;
        self.stats.dropped += 1;
    }

    /// Takes the gap the next queued message would report, when nothing is queued (with messages
    /// queued, a gap after them must be reported after them, and stays for the next message).
    pub fn take_trailing_gap(&mut self) -> u64 {
        if self.messages.is_empty() {
            std::mem::take(&mut self.missed)
        } else {
            0
        }
    }

    /// Drops every queued message (the session ended), counting them as dropped and remembering the
    /// gap so that a resumed session is told.
    /// Returns how many were dropped.
    pub fn discard_messages(&mut self) -> u64 {
        let n = self.messages.len() as u64;
        let carried: u64 = self.messages.iter().map(|d| d.missed_before).sum();
        self.messages.clear();
        self.missed += n + carried;
        self.stats.dropped += n;
        n
    }

    /// Records that the owner `agent` changed its state from `version - 1` to `version` by `delta`.
    pub fn push_state_delta(&mut self, agent: &Arc<str>, version: u64, delta: &Value) {
        let next = match self.states.get(agent) {
            None => Pending::Delta { base_version: version - 1, version, delta: delta.clone() },
            Some(Pending::Delta { base_version, delta: earlier, .. }) => match state::compose(earlier, delta) {
                Some(delta) => Pending::Delta { base_version: *base_version, version, delta },
                None => Pending::Snapshot,
            },
            Some(Pending::Snapshot) => Pending::Snapshot,
            // The owner came back after leaving: the watcher needs its full state again.
            Some(Pending::Removed { .. }) => Pending::Snapshot,
        };
        self.put_state(agent, next);
    }

    /// Asks for the owner's full state to be sent (a new watch, or a resync).
    pub fn push_state_snapshot(&mut self, agent: &Arc<str>) {
        self.put_state(agent, Pending::Snapshot);
    }

    /// Records that the owner left; anything pending for it is moot.
    pub fn push_state_removed(&mut self, agent: &Arc<str>, version: u64) {
        self.put_state(agent, Pending::Removed { version });
    }

    /// Forgets pending changes of `agent` (the watch ended).
    pub fn forget_state(&mut self, agent: &str) {
        if self.states.remove(agent).is_some() {
            self.state_order.retain(|a| &**a != agent);
        }
    }

    /// Sets the one pending entry of `agent`; it keeps its place in line if it already had one
    /// (so the line never holds an agent twice and stays bounded by the agents watched).
    fn put_state(&mut self, agent: &Arc<str>, pending: Pending) {
        if self.states.insert(agent.clone(), pending).is_none() {
            self.state_order.push_back(agent.clone());
        }
    }

    /// Acknowledges deliveries up to `seq` (counted for health, and making room in flight).
    pub fn ack(&mut self, up_to: u64) {
        let up_to = up_to.min(self.next_seq.saturating_sub(1));
        if up_to > self.stats.acked {
            self.stats.acked = up_to;
        }
        self.acked_through = self.acked_through.max(up_to.min(self.sent_through));
    }

    /// The next frame to send: a control frame whose fence is passed, else pending state changes,
    /// else messages (only those ahead of a waiting control frame). A batch holds at most
    /// `max_items`, and at most `max_bytes` of items as [`item_bytes`] and [`change_bytes`] count
    /// them, but always one: so every frame stays under the transport's message cap whatever is
    /// queued (see `Limits::frame_bytes`). `snapshot` gives an owner's (version, state) for snapshot
    /// entries.
    pub fn next_frame(
        &mut self,
        max_items: usize,
        max_bytes: usize,
        mut snapshot: impl FnMut(&str) -> Option<(u64, Value)>,
    ) -> Option<Frame> {
        let waits_for = self.control_waits_for();
        if waits_for == Some(0) {
            return self.control.pop_front().map(|(frame, _)| frame);
        }
        if self.held {
            return None;
        }
        if !self.state_order.is_empty() {
            let mut changes = Vec::with_capacity(self.state_order.len().min(max_items));
            let mut bytes = 0usize;
            while changes.len() < max_items {
                let Some(agent) = self.state_order.pop_front() else {
                    break;
                };
                let Some(pending) = self.states.remove(&agent) else {
                    continue;
                };
                let mut change = match &pending {
                    Pending::Delta { base_version, version, delta } => StateChange {
                        agent_id: agent.clone(),
                        base_version: *base_version,
                        version: *version,
                        delta: delta.clone(),
                        removed: false,
                    },
                    Pending::Snapshot => match snapshot(&agent) {
                        Some((version, full)) => StateChange {
                            agent_id: agent.clone(),
                            base_version: 0,
                            version,
                            delta: full,
                            removed: false,
                        },
                        None => continue,
                    },
                    Pending::Removed { version } => StateChange {
                        agent_id: agent.clone(),
                        base_version: 0,
                        version: *version,
                        delta: Value::Null,
                        removed: true,
                    },
                };
                let mut size = change_bytes(&change);
                if size > max_bytes && matches!(pending, Pending::Delta { .. }) {
                    // A composed delta can outgrow the state it leads to (keys set and deleted
                    // again leave their nulls): the state itself is within its limit.
                    if let Some((version, full)) = snapshot(&agent) {
                        change = StateChange {
                            agent_id: agent.clone(),
                            base_version: 0,
                            version,
                            delta: full,
                            removed: false,
                        };
                        size = change_bytes(&change);
                    }
                }
                if !changes.is_empty() && bytes.saturating_add(size) > max_bytes {
                    // Next frame's first: put back as it was (a snapshot is taken again then).
                    self.states.insert(agent.clone(), pending);
                    self.state_order.push_front(agent);
                    break;
                }
                bytes = bytes.saturating_add(size);
                changes.push(change);
            }
            if !changes.is_empty() {
                return Some(Frame::StateChanges(changes));
            }
        }
        let room = self.in_flight_room();
        if !self.messages.is_empty() && room > 0 {
            let max_items = max_items.min(waits_for.unwrap_or(usize::MAX)).min(room).max(1);
            // A batch ends before the next gap, so its sequence numbers are consecutive, and before
            // the item that would take it over `max_bytes`.
            let mut bytes = 0usize;
            let mut n = 0;
            for (i, d) in self.messages.iter().take(max_items).enumerate() {
                let size = item_bytes(d);
                if i > 0 && (d.missed_before > 0 || bytes.saturating_add(size) > max_bytes) {
                    break;
                }
                bytes = bytes.saturating_add(size);
                n = i + 1;
            }
            let batch: Vec<Delivery> = self.messages.drain(..n).collect();
            self.stats.delivered += n as u64;
            self.sent_through = batch.last().map_or(self.sent_through, |d| d.seq);
            return Some(Frame::Deliveries(batch));
        }
        None
    }
}

/// What a frame's field tags and numbers add per item, beyond the bytes [`item_bytes`] and
/// [`change_bytes`] name: a generous bound (a protobuf tag and length prefix are at most a few
/// bytes each, sequence numbers and versions at most ten).
const ITEM_FRAMING: usize = 64;

/// The bytes a delivery takes in a frame, framing included.
pub fn item_bytes(d: &Delivery) -> usize {
    let m = &d.message;
    m.payload.len() + m.topic.len() + m.content_type.len() + m.publisher.len() + ITEM_FRAMING
}

/// The bytes a state change takes in a frame, framing included.
pub fn change_bytes(c: &StateChange) -> usize {
    c.agent_id.len() + if c.removed { 0 } else { state::json_len(&c.delta) } + ITEM_FRAMING
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn msg(i: u32) -> Arc<Message> {
        Arc::new(Message::new("t", Bytes::from(i.to_be_bytes().to_vec()), "", "p".into()))
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_as_well_as_by_count_and_always_carries_one() {
        let mut o = Outbox::new(100, 1024, OverflowPolicy::DropOldest);
        let big = |i: u8| Arc::new(Message::new("t", Bytes::from(vec![i; 600]), "", "p".into()));
        for i in 0..3 {
            o.push_message(big(i));
        }
        let one = item_bytes(&Delivery { seq: 0, message: big(0), missed_before: 0 });
        // Room for two items: a batch of two, then the third alone.
        let Some(Frame::Deliveries(first)) = o.next_frame(100, 2 * one, |_| None) else { panic!() };
        assert_eq!(first.len(), 2);
        // A budget below one item still sends it: an item within the limits always goes out.
        let Some(Frame::Deliveries(second)) = o.next_frame(100, 10, |_| None) else { panic!() };
        assert_eq!((second.len(), second[0].seq), (1, 3));

        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        o.push_state_delta(&a, 1, &json!({"x": "1".repeat(500)}));
        o.push_state_delta(&b, 1, &json!({"y": "2".repeat(500)}));
        let Some(Frame::StateChanges(changes)) = o.next_frame(100, 700, |_| None) else { panic!() };
        assert_eq!(changes.len(), 1, "the second change waits for the next frame");
        let Some(Frame::StateChanges(changes)) = o.next_frame(100, 700, |_| None) else { panic!() };
        assert_eq!((changes.len(), &*changes[0].agent_id), (1, "b"));
    }

    #[test]
    fn a_composed_delta_larger_than_a_frame_is_sent_as_the_state_itself() {
        let mut o = Outbox::new(100, 1024, OverflowPolicy::DropOldest);
        let a: Arc<str> = "a".into();
        // Keys set and deleted again leave their nulls in the composed delta.
        for v in 1..=50u64 {
            o.push_state_delta(&a, v, &json!({ format!("key-{v}"): null }));
        }
        let Some(Frame::StateChanges(changes)) = o.next_frame(100, 200, |_| Some((50, json!({"kept": 1})))) else {
            panic!()
        };
        assert_eq!((changes[0].base_version, changes[0].version, &changes[0].delta), (0, 50, &json!({"kept": 1})));
    }

    /// Takes every frame, acknowledging each batch as a reading agent does.
    fn drain(o: &mut Outbox) -> Vec<Delivery> {
        let mut out = vec![];
        while let Some(f) = o.next_frame(100, usize::MAX, |_| None) {
            match f {
                Frame::Deliveries(d) => {
                    o.ack(d.last().expect("a batch has an item").seq);
                    out.extend(d);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn no_more_than_the_capacity_is_in_flight_until_acknowledged() {
        let mut o = Outbox::new(3, 3, OverflowPolicy::DropOldest);
        for i in 0..3 {
            o.push_message(msg(i));
        }
        let Some(Frame::Deliveries(first)) = o.next_frame(2, usize::MAX, |_| None) else { panic!() };
        assert_eq!(first.len(), 2);
        o.push_message(msg(3));
        let Some(Frame::Deliveries(second)) = o.next_frame(100, usize::MAX, |_| None) else { panic!() };
        assert_eq!(second.iter().map(|d| d.seq).collect::<Vec<_>>(), [3], "one more fills the flight");
        assert!(!o.has_frames(), "messages wait for acknowledgements, and nothing is announced");
        assert!(o.next_frame(100, usize::MAX, |_| None).is_none());
        // Waiting, they are under the queue's policy: the oldest goes, and is reported.
        for i in 4..7 {
            o.push_message(msg(i));
        }
        // A reply fenced behind them waits as they do.
        o.push_reply(9, Reply::Ok);
        assert!(o.next_frame(100, usize::MAX, |_| None).is_none());
        o.ack(2);
        assert!(o.has_frames());
        let Some(Frame::Deliveries(third)) = o.next_frame(100, usize::MAX, |_| None) else { panic!() };
        assert_eq!(third.iter().map(|d| (d.seq, d.missed_before)).collect::<Vec<_>>(), [(5, 1), (6, 0)]);
        // 3, 5 and 6 are in flight (and 4, dropped between two batches, is counted with them
        // until an acknowledgement passes it).
        assert!(o.next_frame(100, usize::MAX, |_| None).is_none());
        // A new connection starts with nothing in flight: what was sent on the old one is gone.
        o.new_connection();
        let Some(Frame::Deliveries(fourth)) = o.next_frame(100, usize::MAX, |_| None) else { panic!() };
        assert_eq!(fourth.iter().map(|d| d.seq).collect::<Vec<_>>(), [7]);
        let Some(Frame::Reply { request_id: 9, .. }) = o.next_frame(100, usize::MAX, |_| None) else { panic!() };
        // An acknowledgement past what was sent makes no more room than what was sent.
        o.push_message(msg(7));
        o.ack(1_000);
        assert_eq!(drain(&mut o).iter().map(|d| d.seq).collect::<Vec<_>>(), [8]);
    }

    #[test]
    fn drop_oldest_counts_and_reports_the_gap() {
        let mut o = Outbox::new(3, 1024, OverflowPolicy::DropOldest);
        for i in 0..5 {
            o.push_message(msg(i));
        }
        let got = drain(&mut o);
        assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(got[0].missed_before, 2, "the first message after the gap tells how many were lost");
        assert_eq!(got[1].missed_before + got[2].missed_before, 0);
        assert_eq!(o.stats().dropped, 2);
        assert_eq!(o.stats().delivered, 3);
        assert_eq!(o.stats().high_water, 3);
    }

    #[test]
    fn reported_gaps_always_add_up_to_dropped() {
        let mut o = Outbox::new(2, 1024, OverflowPolicy::DropOldest);
        let mut received = vec![];
        for i in 0..50 {
            o.push_message(msg(i));
            if i % 7 == 0 {
                received.extend(drain(&mut o));
            }
        }
        received.extend(drain(&mut o));
        let missed: u64 = received.iter().map(|d| d.missed_before).sum();
        assert_eq!(missed + received.len() as u64, 50);
        assert_eq!(missed, o.stats().dropped);
        // seq gaps agree with missed_before
        let mut expected = 1;
        for d in &received {
            assert_eq!(d.seq, expected + d.missed_before);
            expected = d.seq + 1;
        }
    }

    #[test]
    fn batches_never_span_a_gap() {
        // Under the disconnect policy a refused message leaves a gap in the middle of the queue.
        let mut o = Outbox::new(2, 1024, OverflowPolicy::Disconnect);
        o.push_message(msg(0)); // seq 1
        o.push_message(msg(1)); // seq 2
        assert_eq!(o.push_message(msg(2)), Enqueued::Overflow); // seq 3, missed
        o.push_message(msg(3)); // still full: seq 4 missed too
        let Some(Frame::Deliveries(first)) = o.next_frame(1, usize::MAX, |_| None) else { panic!() };
        assert_eq!(first.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1]);
        o.push_message(msg(4)); // seq 5, after a gap of 2
        let Some(Frame::Deliveries(second)) = o.next_frame(100, usize::MAX, |_| None) else { panic!() };
        assert_eq!(second.iter().map(|d| (d.seq, d.missed_before)).collect::<Vec<_>>(), vec![(2, 0)]);
        o.ack(2);
        let Some(Frame::Deliveries(third)) = o.next_frame(100, usize::MAX, |_| None) else { panic!() };
        assert_eq!(third.iter().map(|d| (d.seq, d.missed_before)).collect::<Vec<_>>(), vec![(5, 2)]);
    }

    #[test]
    fn disconnect_policy_refuses_at_the_limit() {
        let mut o = Outbox::new(2, 1024, OverflowPolicy::Disconnect);
        assert_eq!(o.push_message(msg(0)), Enqueued::Queued);
        assert_eq!(o.push_message(msg(1)), Enqueued::Queued);
        assert_eq!(o.push_message(msg(2)), Enqueued::Overflow);
    }

    #[test]
    fn discarded_messages_are_reported_on_the_next_delivery() {
        let mut o = Outbox::new(4, 1024, OverflowPolicy::DropOldest);
        o.push_message(msg(0));
        o.push_message(msg(1));
        o.discard_messages();
        o.push_message(msg(2));
        let got = drain(&mut o);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].seq, got[0].missed_before), (3, 2));
    }

    #[test]
    fn state_deltas_coalesce_per_agent() {
        let mut o = Outbox::new(4, 1024, OverflowPolicy::DropOldest);
        let a: Arc<str> = "a".into();
        o.push_state_delta(&a, 1, &json!({"x": 1}));
        o.push_state_delta(&a, 2, &json!({"y": 2}));
        o.push_state_delta(&a, 3, &json!({"x": null}));
        let Some(Frame::StateChanges(changes)) = o.next_frame(10, usize::MAX, |_| None) else { panic!() };
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].base_version, changes[0].version), (0, 3));
        assert_eq!(changes[0].delta, json!({"x": null, "y": 2}));
    }

    #[test]
    fn inexpressible_composition_becomes_a_snapshot() {
        let mut o = Outbox::new(4, 1024, OverflowPolicy::DropOldest);
        let a: Arc<str> = "a".into();
        o.push_state_delta(&a, 5, &json!({"n": 1}));
        o.push_state_delta(&a, 6, &json!({"n": {"k": 1}}));
        let Some(Frame::StateChanges(changes)) =
            o.next_frame(10, usize::MAX, |_| Some((6, json!({"n": {"k": 1}, "z": 0}))))
        else {
            panic!()
        };
        assert_eq!((changes[0].base_version, changes[0].version), (0, 6));
        assert_eq!(changes[0].delta, json!({"n": {"k": 1}, "z": 0}));
    }

    #[test]
    fn a_reply_waits_for_what_was_queued_before_it() {
        let mut o = Outbox::new(8, 1024, OverflowPolicy::DropOldest);
        let a: Arc<str> = "a".into();
        o.push_message(msg(0));
        o.push_message(msg(1));
        o.push_state_delta(&a, 1, &json!({"x": 1}));
        o.push_reply(7, Reply::Ok);
        o.push_message(msg(2)); // after the reply
        assert!(matches!(o.next_frame(10, usize::MAX, |_| None), Some(Frame::StateChanges(_))));
        let Some(Frame::Deliveries(before)) = o.next_frame(10, usize::MAX, |_| None) else { panic!() };
        assert_eq!(before.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2], "only what came before the reply");
        assert!(matches!(o.next_frame(10, usize::MAX, |_| None), Some(Frame::Reply { request_id: 7, .. })));
        let Some(Frame::Deliveries(after)) = o.next_frame(10, usize::MAX, |_| None) else { panic!() };
        assert_eq!(after[0].seq, 3);
        assert!(o.next_frame(10, usize::MAX, |_| None).is_none());
        assert!(!o.has_frames());
    }

    #[test]
    fn a_held_outbox_sends_only_control_frames_and_catches_up_on_release() {
        let mut o = Outbox::new(8, 1024, OverflowPolicy::DropOldest);
        let a: Arc<str> = "a".into();
        o.set_held(true);
        o.push_message(msg(0));
        o.push_state_delta(&a, 1, &json!({"x": 1}));
        o.push_reply(1, Reply::Ok);
        o.push_state_delta(&a, 2, &json!({"y": 2}));
        assert!(
            matches!(o.next_frame(10, usize::MAX, |_| None), Some(Frame::Reply { request_id: 1, .. })),
            "replies are not fenced while held"
        );
        assert!(o.next_frame(10, usize::MAX, |_| None).is_none());
        assert!(!o.has_frames());
        o.set_held(false);
        assert!(o.has_frames());
        let Some(Frame::StateChanges(c)) = o.next_frame(10, usize::MAX, |_| None) else { panic!() };
        assert_eq!(
            (c[0].base_version, c[0].version, &c[0].delta),
            (0, 2, &json!({"x": 1, "y": 2})),
            "coalesced while held"
        );
        assert!(matches!(o.next_frame(10, usize::MAX, |_| None), Some(Frame::Deliveries(_))));
    }

    #[test]
    fn registration_goes_before_everything() {
        let mut o = Outbox::new(8, 1024, OverflowPolicy::DropOldest);
        o.push_message(msg(0));
        o.push_reply(1, Reply::Ok);
        o.push_control_front(Frame::Reply { request_id: 99, reply: Reply::Ok });
        assert!(matches!(o.next_frame(10, usize::MAX, |_| None), Some(Frame::Reply { request_id: 99, .. })));
    }
}
