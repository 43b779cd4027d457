//! The engine's side of topic history: stamping and keeping messages of retained topics as they
//! are published, subscriptions with replay, pacing replays into the agent's bounded queue, age
//! trimming on the engine's timers, and what is kept. The rules are in [`crate::history`].
//!
//! **Pacing.** A replay never pushes more into an agent's message queue than the queue has room
//! for (`queue_capacity` minus what is queued), so it can never make the queue drop a message. What
//! does not fit stays in the agent's cursor; each time the shell pulls a frame for the agent
//! ([`Engine::next_frame`]) the cursor refills the room the frame made. A replay of any length
//! thus moves at the pace the connection takes frames, within the same outbox and frame bounds as
//! live messages. While a cursor covers a topic, that topic's new messages reach the agent through
//! the cursor (they are in the log), so replayed and live messages meet with no duplicate and no
//! gap.

use std::sync::Arc;

use super::{Engine, Timer};
use crate::error::CoreError;
use crate::history::{Drained, Replay, TopicView};
use crate::io::{Frame, Message, Time};
use crate::name;
use crate::topic::Pattern;

impl Engine {
    /// The message to route for a publish on `topic`: stamped and kept when a rule retains the
    /// topic (arming its age timer when it starts one), plain otherwise.
    pub(super) fn history_message(
        &mut self,
        ns: &Arc<str>,
        publisher: &Arc<str>,
        topic: &str,
        payload: bytes::Bytes,
        content_type: &str,
    ) -> Result<Arc<Message>, CoreError> {
        if !self.topic_history.is_active() {
            return Ok(Arc::new(Message::new(topic, payload, content_type, publisher.clone())));
        }
        let now = self.now;
        match self.topic_history.append(now, ns, topic, payload.clone(), content_type, publisher)? {
            Some(crate::history::Appended { message, age_timer }) => {
                if let Some(at) = age_timer {
                    self.timers.set(Timer::HistoryAge { ns: ns.clone(), topic: message.topic.clone() }, at);
                }
                Ok(message)
            }
            None => Ok(Arc::new(Message::new(topic, payload, content_type, publisher.clone()))),
        }
    }

    /// `agent` subscribes to `pattern` (added to its interests if new) with `replay`. The caller
    /// replies, then calls [`Engine::replay_fill`], so the reply goes ahead of what is replayed.
    pub(super) fn subscribe(
        &mut self,
        ns: &Arc<str>,
        agent: &Arc<str>,
        pattern: &str,
        replay: Replay,
    ) -> Result<(), CoreError> {
        let limits = &self.config.limits;
        let pattern = Pattern::parse(pattern, limits.max_topic_len)?;
        let max = limits.max_interests;
        let n = self.namespaces.get_mut(ns).expect("a session's namespace exists");
        let a = n.agents.get_mut(agent).expect("a session's agent exists");
        let hint = "unsubscribe a pattern first, or raise limits.max_interests";
        if super::add_bounded(&mut a.interests, &pattern, max, "interest patterns of one agent", hint)? {
            n.routes.clear();
            self.touch(super::Touched::Agent(ns.clone(), agent.clone()));
        }
        let cursor = self.topic_history.cursor(ns, &pattern, replay);
        if !cursor.is_empty() {
            self.replays.entry((ns.clone(), agent.clone())).or_default().merge(cursor);
        }
        Ok(())
    }

    /// `agent` drops `pattern` from its interests.
    pub(super) fn unsubscribe(&mut self, ns: &Arc<str>, agent: &Arc<str>, pattern: &str) -> Result<(), CoreError> {
        let pattern = Pattern::parse(pattern, self.config.limits.max_topic_len)?;
        let Some(n) = self.namespaces.get_mut(ns) else { return Ok(()) };
        let a = n.agents.get_mut(agent).expect("a session's agent exists");
        let before = a.interests.len();
        a.interests.retain(|p| p != &pattern);
        if a.interests.len() == before {
            return Err(CoreError::invalid(
                "unsubscribe",
                format!("'{}' is not one of the agent's interest patterns", pattern.as_str()),
            ));
        }
        n.routes.clear();
        // A replay in progress goes on for the topics another interest still covers (their live
        // messages wait in it); the others are replayed no further.
        let key = (ns.clone(), agent.clone());
        if let Some(cursor) = self.replays.get_mut(&key) {
            cursor.retain(|topic| a.interests.iter().any(|p| p.matches(topic)));
            if cursor.is_empty() {
                self.replays.remove(&key);
            }
        }
        self.touch(super::Touched::Agent(ns.clone(), agent.clone()));
        Ok(())
    }

    /// Moves what fits of `agent`'s replay into its message queue (see the module documentation);
    /// the replay ends once it has caught up with every topic it covers.
    pub(super) fn replay_fill(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        let key = (ns.clone(), agent.clone());
        let Some(mut cursor) = self.replays.remove(&key) else { return };
        let capacity = self.config.queue_capacity;
        let Some(a) = self.agent(ns, agent) else { return };
        let room = capacity.saturating_sub(a.outbox.stats().queued);
        let mut out = Vec::new();
        let done = self.topic_history.drain(ns, &mut cursor, room, &mut out);
        let mut queued = false;
        for item in out {
            match item {
                Drained::Message(m) => {
                    let a = self.agent_mut(ns, agent).expect("checked above");
                    // Within the room left: never drops.
                    a.outbox.push_message(m);
                    self.counters.routed += 1;
                    queued = true;
                }
                Drained::Gap(gap) => self.send_fenced(ns, agent, Frame::HistoryGap(gap)),
            }
        }
        if queued {
            self.notify(ns, agent);
        }
        if !done {
            self.replays.insert(key, cursor);
        }
    }

    /// The agent's session ended: its replay is moot.
    pub(super) fn history_agent_gone(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        self.replays.remove(&(ns.clone(), agent.clone()));
    }

    /// The age timer of `topic` fired.
    pub(super) fn history_expire(&mut self, now: Time, ns: Arc<str>, topic: Arc<str>) {
        if let Some(at) = self.topic_history.expire(now, &ns, &topic) {
            self.timers.set(Timer::HistoryAge { ns, topic }, at);
        }
    }

    /// Rebuilds store-kept history at start.
    pub(super) fn history_restore(&mut self, now: Time, kept: Vec<crate::history::KeptTopic>) {
        for (ns, topic, at) in self.topic_history.restore(now, kept) {
            self.timers.set(Timer::HistoryAge { ns, topic }, at);
        }
    }

    /// Retained topics of `namespace`, by name.
    pub fn history_topics(&self, namespace: &str) -> Result<Vec<TopicView>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        Ok(self.topic_history.topics(ns))
    }
}
