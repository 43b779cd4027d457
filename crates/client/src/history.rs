//! Topic history: subscribe with replay, gap notices, and the listing of retained topics.
//!
//! [`Agent::subscribe`](crate::Agent::subscribe) adds an interest pattern and asks for what the
//! retained topics it matches kept ([`Replay`]): those messages arrive on
//! [`Agent::deliveries`](crate::Agent::deliveries) before the live ones, in order, each carrying
//! its topic sequence number and server time ([`Delivery::topic_seq`](crate::Delivery::topic_seq),
//! [`Delivery::time_ms`](crate::Delivery::time_ms)). Where retention had already dropped messages
//! the replay asked for, a [`HistoryGap`] says which ([`Agent::history_gaps`](crate::Agent::history_gaps)).
//! [`Client::topics`](crate::Client::topics) lists the retained topics.

use std::sync::Mutex;

use lockstep_proto::v1;

use crate::{Agent, Client, Error};

/// What a subscription asks to be replayed, per retained topic its pattern matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Replay {
    /// Live messages only.
    #[default]
    None,
    /// The last N messages.
    Last(u64),
    /// Every message with a topic sequence number of at least this.
    SinceSeq(u64),
    /// Every message published at or after this server time (ms).
    SinceTimeMs(u64),
}

impl Replay {
    fn wire(self) -> Option<v1::subscribe::Replay> {
        use v1::subscribe::Replay as R;
        match self {
            Replay::None => None,
            Replay::Last(n) => Some(R::Last(n)),
            Replay::SinceSeq(s) => Some(R::SinceSeq(s)),
            Replay::SinceTimeMs(t) => Some(R::SinceTimeMs(t)),
        }
    }
}

/// Messages `first_seq..=last_seq` of `topic` were asked for but retention had dropped them
/// (`first_seq` is 0 when unknown: a replay by time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryGap {
    pub topic: String,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// What the session reader and the agent share about history: gap notices received, and the
/// patterns subscribed to (subscribed again, live only, when a reconnection finds a new session).
#[derive(Debug, Default)]
pub(crate) struct HistoryLink {
    gaps: Mutex<Vec<HistoryGap>>,
    patterns: Mutex<Vec<String>>,
}

/// Gap notices kept for the application at most; older ones are dropped first.
const MAX_GAPS: usize = 1024;

impl HistoryLink {
    pub(crate) fn gap(&self, g: v1::HistoryGap) {
        let mut gaps = self.gaps.lock().expect("not poisoned");
        if gaps.len() >= MAX_GAPS {
            gaps.remove(0);
        }
        gaps.push(HistoryGap { topic: g.topic, first_seq: g.first_seq, last_seq: g.last_seq });
    }

    /// The subscriptions to make again on a new session (without replay: the application decides
    /// what to ask for after a loss, from the sequence numbers it saw).
    pub(crate) fn resubscribe(&self) -> Vec<v1::Subscribe> {
        let patterns = self.patterns.lock().expect("not poisoned");
        patterns.iter().map(|p| v1::Subscribe { pattern: p.clone(), replay: None }).collect()
    }
}

impl Agent {
    /// Adds `pattern` to this agent's interests and replays what the retained topics it matches
    /// kept, as `replay` asks, before any live message of those topics. Returns once the server
    /// took the subscription (the replayed messages follow on [`Agent::deliveries`]).
    pub async fn subscribe(&self, pattern: &str, replay: Replay) -> Result<(), Error> {
        lockstep_core::topic::Pattern::parse(pattern, usize::MAX)
            .map_err(|e| Error::InvalidArgument(e.to_string().into()))?;
        let s = v1::Subscribe { pattern: pattern.to_owned(), replay: replay.wire() };
        self.call_ok(v1::client_message::Kind::Subscribe(s)).await?;
        let mut patterns = self.history_link().patterns.lock().expect("not poisoned");
        if !patterns.iter().any(|p| p == pattern) {
            patterns.push(pattern.to_owned());
        }
        Ok(())
    }

    /// Removes `pattern` from this agent's interests (a replay in progress goes on only for the
    /// topics another interest still matches).
    pub async fn unsubscribe(&self, pattern: &str) -> Result<(), Error> {
        let u = v1::Unsubscribe { pattern: pattern.to_owned() };
        self.call_ok(v1::client_message::Kind::Unsubscribe(u)).await?;
        self.history_link().patterns.lock().expect("not poisoned").retain(|p| p != pattern);
        Ok(())
    }

    /// The gap notices received since the last call, in the order they came.
    pub fn history_gaps(&self) -> Vec<HistoryGap> {
        std::mem::take(&mut *self.history_link().gaps.lock().expect("not poisoned"))
    }
}

impl Client {
    /// The retained topics of this namespace, with their counts, bytes and sequence numbers.
    pub async fn topics(&self) -> Result<Vec<v1::TopicInfo>, Error> {
        let grpc = v1::history_client::HistoryClient::new(self.channel.clone());
        let namespace = self.namespace.clone();
        crate::every_page(|page_token| {
            let mut grpc = grpc.clone();
            let req = v1::ListTopicsRequest { namespace: namespace.clone(), page_token, page_size: 0 };
            async move {
                let page = grpc.list_topics(req).await?.into_inner();
                Ok((page.topics, page.next_page_token))
            }
        })
        .await
    }
}
