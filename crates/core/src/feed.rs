//! What waits to be sent to one registry watcher.
//!
//! A registry event is built once and shared (`Arc`) by every watcher of its namespace: a status
//! change of an agent carrying large metadata costs one copy, not one per watcher. Each watcher's
//! queue is bounded twice, in events (`limits.max_registry_backlog`) and in bytes
//! (`limits.max_registry_backlog_bytes`, each event counted at its approximate encoded size, as if
//! it were the watcher's own): a watcher that lets either fill up is too slow to be served and is
//! disconnected (it may watch again for a fresh snapshot). The snapshot a watch begins with is not
//! counted: it is bounded by the namespace's own size, and is what the watcher asked for.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::config::Limits;
use crate::io::{Frame, RegistryEvent};

/// Bytes counted for an event besides its strings (field tags, numbers, the queue's own pointer).
const EVENT_OVERHEAD: usize = 64;

/// Bytes counted for each string of an event besides its text (tag and length).
const STRING_OVERHEAD: usize = 4;

/// The approximate encoded size of an event: what its bytes cost the watcher's queue.
pub fn event_bytes(event: &RegistryEvent) -> usize {
    let a = &event.agent;
    let strings = [&a.namespace, &a.agent_id, &a.role]
        .into_iter()
        .chain(&a.capabilities)
        .chain(&a.interests)
        .chain(a.metadata.iter().flat_map(|(k, v)| [k, v]));
    EVENT_OVERHEAD + strings.map(|s| s.len() + STRING_OVERHEAD).sum::<usize>()
}

/// A watcher's queue was full: it must be disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// `limits.max_registry_backlog` events were waiting.
    Events(usize),
    /// The event would take the queue over `limits.max_registry_backlog_bytes`.
    Bytes(usize),
}

/// One registry watcher's queue.
#[derive(Debug)]
pub struct RegistryFeed {
    /// The namespace watched.
    pub ns: Arc<str>,
    /// The snapshot, sent first.
    snapshot: VecDeque<Arc<RegistryEvent>>,
    /// Events behind the snapshot, each with the bytes it counts for.
    events: VecDeque<(Arc<RegistryEvent>, usize)>,
    /// Sum of the bytes of `events`.
    bytes: usize,
    /// The shell was told this watcher has frames and has not drained them yet.
    pub notified: bool,
}

impl RegistryFeed {
    /// A feed beginning with `snapshot` (one event per registered agent).
    pub fn new(ns: Arc<str>, snapshot: Vec<RegistryEvent>) -> Self {
        RegistryFeed {
            ns,
            snapshot: snapshot.into_iter().map(Arc::new).collect(),
            events: VecDeque::new(),
            bytes: 0,
            notified: false,
        }
    }

    /// Queues a shared event of `bytes` ([`event_bytes`]), or says the watcher is too slow.
    pub fn push(&mut self, event: &Arc<RegistryEvent>, bytes: usize, limits: &Limits) -> Result<(), Overflow> {
        if self.events.len() >= limits.max_registry_backlog {
            return Err(Overflow::Events(limits.max_registry_backlog));
        }
        if self.bytes.saturating_add(bytes) > limits.max_registry_backlog_bytes {
            return Err(Overflow::Bytes(limits.max_registry_backlog_bytes));
        }
        self.events.push_back((event.clone(), bytes));
        self.bytes += bytes;
        Ok(())
    }

    /// The next frame to send: the snapshot first, then events in order.
    pub fn pop(&mut self) -> Option<Frame> {
        if let Some(e) = self.snapshot.pop_front() {
            return Some(Frame::Registry(e));
        }
        let (e, bytes) = self.events.pop_front()?;
        self.bytes -= bytes;
        Some(Frame::Registry(e))
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_empty() && self.events.is_empty()
    }

    /// Bytes of the events waiting behind the snapshot.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AgentStatus, AgentView, RegistryEventKind};

    fn event(id: &str, metadata_bytes: usize) -> RegistryEvent {
        let metadata = [("k".to_owned(), "v".repeat(metadata_bytes))].into_iter().collect();
        let agent = AgentView {
            namespace: "ns".into(),
            agent_id: id.into(),
            role: "r".into(),
            capabilities: vec![],
            interests: vec![],
            metadata,
            status: AgentStatus::Active,
            registered_at: 0,
            last_heartbeat: 0,
            state_version: 0,
            queue_depth: 0,
            dropped: 0,
            delivered: 0,
            breaker: crate::BreakerState::Closed,
            breaker_opened: 0,
        };
        RegistryEvent { kind: RegistryEventKind::Status, agent, previous_status: None }
    }

    #[test]
    fn an_events_size_counts_its_strings() {
        let small = event_bytes(&event("a", 0));
        assert_eq!(event_bytes(&event("a", 1000)), small + 1000);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_events_but_not_its_snapshot() {
        let limits = Limits { max_registry_backlog: 3, max_registry_backlog_bytes: 5000, ..Limits::default() };
        let mut feed = RegistryFeed::new("ns".into(), (0..10).map(|i| event(&i.to_string(), 4000)).collect());
        let big = Arc::new(event("big", 2000));
        let bytes = event_bytes(&big);
        feed.push(&big, bytes, &limits).unwrap();
        feed.push(&big, bytes, &limits).unwrap();
        assert_eq!(feed.push(&big, bytes, &limits), Err(Overflow::Bytes(5000)));
        assert_eq!(feed.bytes(), 2 * bytes);
        // One body for all: the queue holds pointers to the same event.
        assert_eq!(Arc::strong_count(&big), 3);

        let small = Arc::new(event("small", 0));
        let mut feed = RegistryFeed::new("ns".into(), vec![]);
        for _ in 0..3 {
            feed.push(&small, event_bytes(&small), &limits).unwrap();
        }
        assert_eq!(feed.push(&small, event_bytes(&small), &limits), Err(Overflow::Events(3)));
        while feed.pop().is_some() {}
        assert!(feed.is_empty());
        assert_eq!(feed.bytes(), 0, "sent events no longer count");
    }

    #[test]
    fn the_snapshot_goes_first() {
        let limits = Limits::default();
        let mut feed = RegistryFeed::new("ns".into(), vec![event("a", 0)]);
        let later = Arc::new(event("b", 0));
        feed.push(&later, event_bytes(&later), &limits).unwrap();
        let ids: Vec<String> = std::iter::from_fn(|| feed.pop())
            .map(|f| match f {
                Frame::Registry(e) => e.agent.agent_id.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
