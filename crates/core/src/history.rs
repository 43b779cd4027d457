//! Topic history: what the server keeps of the messages published on retained topics, and how a
//! subscriber is replayed what was kept.
//!
//! * **Retention rules** come from the configuration (`[[history.retain]]`), each naming a topic
//!   pattern (the interest-pattern syntax) and its bounds: the last `max_messages`, at most
//!   `max_bytes` and at most `max_age_ms` of messages per topic, for at most `max_topics` topics,
//!   kept in memory only or in the store as well. A topic takes the first rule whose pattern
//!   matches it. The sum over rules of `max_topics × max_bytes` must fit
//!   `history.memory_budget_bytes`, or the configuration is refused naming the rule (every kept
//!   message is held in memory: replay is served from memory, the store is its durable copy).
//! * **Sequence numbers.** Every message published on a retained topic gets the topic's next
//!   sequence number (from 1, never repeated, continuing across restarts for store-kept topics)
//!   and the server's time; both travel with the message to every receiver, live or replayed.
//! * **Trimming.** A publish trims the oldest messages over the count and byte bounds; the engine's
//!   timers trim those over the age bound (time is an argument, as everywhere in the core).
//! * **Replay.** A [`Cursor`] holds, per retained topic a subscription matches, the next sequence
//!   number to hand out. [`History::drain`] takes the next messages in publication order (across
//!   topics), at most as many as the caller has room for, and reports a [`Gap`] where retention
//!   dropped what the cursor asked for. While a cursor covers a topic the engine routes nothing of
//!   it live to that subscriber: new messages are appended to the log and the cursor reads them
//!   from there, so the seam between replay and live delivery has no duplicate and no gap.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::io::{Message, Time};
use crate::topic::Pattern;

/// Where a rule's messages are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// In memory only: gone when the server stops.
    #[default]
    Memory,
    /// In memory and in the store: replayed after a restart, numbering continues.
    Store,
}

/// One retention rule (`[[history.retain]]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetainRule {
    /// The topics this rule keeps (interest-pattern syntax); required.
    pub pattern: String,
    /// Most messages kept per topic.
    pub max_messages: u64,
    /// Most bytes kept per topic (payload, topic, content type and publisher of each message).
    pub max_bytes: u64,
    /// Messages older than this are trimmed, in milliseconds (0: no age bound).
    pub max_age_ms: u64,
    /// Most topics this rule keeps at once; a publish on one more is refused (`LIMIT`).
    pub max_topics: u64,
    /// In memory only, or in the store as well.
    pub keep: Keep,
}

impl Default for RetainRule {
    fn default() -> Self {
        RetainRule {
            pattern: String::new(),
            max_messages: 1000,
            max_bytes: 1024 * 1024,
            max_age_ms: 0,
            max_topics: 16,
            keep: Keep::Memory,
        }
    }
}

/// The `[history]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySettings {
    /// Bytes all retained history may take at most: every rule's `max_topics × max_bytes`, summed.
    pub memory_budget_bytes: u64,
    /// Retention rules, first match wins.
    pub retain: Vec<RetainRule>,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings { memory_budget_bytes: 256 * 1024 * 1024, retain: Vec::new() }
    }
}

impl HistorySettings {
    /// Checks every rule and that together they fit the memory budget; the error names the rule.
    pub fn validate(&self, max_topic_len: usize) -> Result<(), String> {
        let mut total: u64 = 0;
        for (i, rule) in self.retain.iter().enumerate() {
            let name = format!("retain[{i}] (pattern '{}')", rule.pattern);
            Pattern::parse(&rule.pattern, max_topic_len).map_err(|e| format!("{name}: {e}"))?;
            for (field, value) in
                [("max_messages", rule.max_messages), ("max_bytes", rule.max_bytes), ("max_topics", rule.max_topics)]
            {
                if value == 0 {
                    return Err(format!("{name}: {field} must be at least 1"));
                }
            }
            let worst = rule.max_topics.saturating_mul(rule.max_bytes);
            total = total.saturating_add(worst);
            if total > self.memory_budget_bytes {
                return Err(format!(
                    "{name}: {} topics × {} bytes brings retained history to {total} bytes, over \
                     history.memory_budget_bytes ({}); lower its max_topics or max_bytes, or raise the budget",
                    rule.max_topics, rule.max_bytes, self.memory_budget_bytes
                ));
            }
        }
        Ok(())
    }
}

/// What a subscriber asks to be replayed, per retained topic its pattern matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replay {
    /// Nothing: live messages only.
    #[default]
    None,
    /// The last `n` messages of each topic.
    Last(u64),
    /// Every message with a sequence number of at least this.
    SinceSeq(u64),
    /// Every message published at or after this server time (ms).
    SinceTime(Time),
}

/// Messages a cursor asked for that retention had already dropped: sequence numbers
/// `first..=last` of `topic` (`first` is 0 when unknown: a replay by time, where the server no
/// longer knows when the dropped messages were published).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub topic: Arc<str>,
    pub first: u64,
    pub last: u64,
}

/// What [`History::drain`] hands out, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Drained {
    Message(Arc<Message>),
    Gap(Gap),
}

/// One subscriber's replay in progress: per topic, the next sequence number to hand out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    next: BTreeMap<Arc<str>, Position>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    next: u64,
    /// A gap found here has an unknown start (a replay by time).
    unknown_start: bool,
}

impl Cursor {
    /// Whether the cursor hands out `topic` (so the engine routes none of it live meanwhile).
    pub fn covers(&self, topic: &str) -> bool {
        self.next.contains_key(topic)
    }

    /// Takes in another cursor of the same subscriber: a topic both cover goes on from the
    /// earlier position.
    pub fn merge(&mut self, other: Cursor) {
        for (topic, pos) in other.next {
            self.next.entry(topic).and_modify(|p| p.next = p.next.min(pos.next)).or_insert(pos);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Keeps only the topics `keep` says (the subscriber dropped an interest: the topics no
    /// interest of it matches any more are replayed no further).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.next.retain(|topic, _| keep(topic));
    }
}

/// A message kept on a topic, with its place in the order of publication over every topic.
#[derive(Clone, Debug)]
struct Entry {
    ordinal: u64,
    message: Arc<Message>,
}

/// One retained topic.
#[derive(Debug)]
struct TopicLog {
    rule: usize,
    entries: VecDeque<Entry>,
    bytes: u64,
    /// The last sequence number given out (0: none yet).
    last_seq: u64,
    /// The server time of the newest message trimmed so far.
    trimmed_time: Option<Time>,
}

impl TopicLog {
    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.last_seq + 1, |e| e.message.topic_seq)
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        let first = self.entries.front()?.message.topic_seq;
        self.entries.get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }
}

/// The bytes a kept message counts for.
fn size_of(m: &Message) -> u64 {
    (m.payload.len() + m.topic.len() + m.content_type.len() + m.publisher.len()) as u64
}

/// One retained topic, as `lockstep topics` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    pub topic: String,
    pub messages: u64,
    pub bytes: u64,
    /// The oldest kept sequence number (the next one to come when nothing is kept).
    pub first_seq: u64,
    /// The last sequence number given out.
    pub last_seq: u64,
    /// The pattern of the rule keeping the topic.
    pub rule: String,
    pub keep: Keep,
}

/// A durable change of store-kept history, for the engine to hand to the shell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryChange {
    /// Keep this message (and the topic's last sequence number with it).
    Append(Box<KeptMessage>),
    /// Forget the topic's messages numbered below `before_seq`.
    Trim { namespace: String, topic: String, before_seq: u64 },
    /// Forget the topic and its messages (no store-keeping rule covers it any more).
    Forget { namespace: String, topic: String },
}

/// A message of a store-kept topic as it is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptMessage {
    pub namespace: String,
    pub topic: String,
    pub seq: u64,
    pub time: Time,
    pub publisher: String,
    pub content_type: String,
    pub payload: Bytes,
}

/// A store-kept topic as it is restored: its last sequence number and its kept messages, oldest
/// first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptTopic {
    pub namespace: String,
    pub topic: String,
    pub last_seq: u64,
    pub messages: Vec<KeptMessage>,
}

/// A message kept by [`History::append`].
#[derive(Debug)]
pub struct Appended {
    /// The message to route: stamped with its topic sequence number and time.
    pub message: Arc<Message>,
    /// When the topic's age timer must fire, if this message started it (the topic held nothing).
    pub age_timer: Option<Time>,
}

/// Every retained topic of every namespace.
#[derive(Debug, Default)]
pub struct History {
    rules: Vec<(Pattern, RetainRule)>,
    topics: BTreeMap<(Arc<str>, Arc<str>), TopicLog>,
    /// Topics each rule keeps now.
    per_rule: Vec<u64>,
    next_ordinal: u64,
    changes: Vec<HistoryChange>,
}

impl History {
    /// The history the settings describe (they passed [`HistorySettings::validate`]).
    pub fn new(settings: &HistorySettings, max_topic_len: usize) -> History {
        let rules: Vec<_> = settings
            .retain
            .iter()
            .map(|r| (Pattern::parse(&r.pattern, max_topic_len).expect("validated with the configuration"), r.clone()))
            .collect();
        History { per_rule: vec![0; rules.len()], rules, ..History::default() }
    }

    /// Whether any topic can be retained at all (no rules: publishing skips history entirely).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty()
    }

    fn rule_for(&self, topic: &str) -> Option<usize> {
        self.rules.iter().position(|(p, _)| p.matches(topic))
    }

    /// Takes a message published at `now` on `topic` of `ns`: on a retained topic it gets its
    /// sequence number and time and is kept (`Some`, the message to route, with the time its age
    /// timer must fire if it should be armed); `None` on a topic no rule retains. Refused when the
    /// topic would be one more than its rule's `max_topics`.
    pub fn append(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        topic: &str,
        payload: Bytes,
        content_type: &str,
        publisher: &Arc<str>,
    ) -> Result<Option<Appended>, CoreError> {
        let Some(rule) = self.rule_for(topic) else { return Ok(None) };
        let key = (ns.clone(), Arc::<str>::from(topic));
        if !self.topics.contains_key(&key) {
            let max = self.rules[rule].1.max_topics;
            if self.per_rule[rule] >= max {
                return Err(CoreError::Limit {
                    what: "retained topics of one history rule",
                    limit: max,
                    hint: "publish on a topic already retained, or raise the rule's max_topics (history.retain)",
                });
            }
            self.per_rule[rule] += 1;
            let log = TopicLog { rule, entries: VecDeque::new(), bytes: 0, last_seq: 0, trimmed_time: None };
            self.topics.insert(key.clone(), log);
        }
        let log = self.topics.get_mut(&key).expect("inserted");
        log.last_seq += 1;
        let mut message = Message::new(topic, payload, content_type, publisher.clone());
        message.topic_seq = log.last_seq;
        message.time = now;
        let message = Arc::new(message);
        let was_empty = log.entries.is_empty();
        log.bytes += size_of(&message);
        log.entries.push_back(Entry { ordinal: self.next_ordinal, message: message.clone() });
        self.next_ordinal += 1;
        let rule = &self.rules[log.rule].1;
        if rule.keep == Keep::Store {
            self.changes.push(HistoryChange::Append(Box::new(KeptMessage {
                namespace: ns.to_string(),
                topic: topic.to_owned(),
                seq: message.topic_seq,
                time: now,
                publisher: publisher.to_string(),
                content_type: content_type.to_owned(),
                payload: message.payload.clone(),
            })));
        }
        let (max_messages, max_bytes, max_age) = (rule.max_messages, rule.max_bytes, rule.max_age_ms);
        self.trim_while(&key, |log| log.entries.len() as u64 > max_messages || log.bytes > max_bytes);
        let timer = (max_age > 0 && was_empty).then(|| now.saturating_add(max_age));
        Ok(Some(Appended { message, age_timer: timer }))
    }

    /// Drops the oldest messages of `key` while `over` holds, recording the trim for the store.
    fn trim_while(&mut self, key: &(Arc<str>, Arc<str>), over: impl Fn(&TopicLog) -> bool) {
        let Some(log) = self.topics.get_mut(key) else { return };
        let mut trimmed = false;
        while !log.entries.is_empty() && over(log) {
            let e = log.entries.pop_front().expect("not empty");
            log.bytes -= size_of(&e.message);
            log.trimmed_time = Some(e.message.time);
            trimmed = true;
        }
        if trimmed && self.rules[log.rule].1.keep == Keep::Store {
            self.changes.push(HistoryChange::Trim {
                namespace: key.0.to_string(),
                topic: key.1.to_string(),
                before_seq: log.first_seq(),
            });
        }
    }

    /// Trims the messages of `topic` that are past their rule's age at `now`; returns when the
    /// oldest one left comes of age (for the engine's timer), if any is left.
    pub fn expire(&mut self, now: Time, ns: &Arc<str>, topic: &Arc<str>) -> Option<Time> {
        let key = (ns.clone(), topic.clone());
        let rule = self.topics.get(&key)?.rule;
        let max_age = self.rules[rule].1.max_age_ms;
        if max_age == 0 {
            return None;
        }
        self.trim_while(&key, |log| log.entries.front().is_some_and(|e| e.message.time.saturating_add(max_age) <= now));
        let oldest = self.topics.get(&key)?.entries.front()?.message.time;
        Some(oldest.saturating_add(max_age))
    }

    /// A cursor over every retained topic of `ns` that `pattern` matches, placed as `replay` asks.
    pub fn cursor(&self, ns: &Arc<str>, pattern: &Pattern, replay: Replay) -> Cursor {
        let mut cursor = Cursor::default();
        if replay == Replay::None {
            return cursor;
        }
        let range = (ns.clone(), Arc::<str>::from(""))..;
        for ((n, topic), log) in self.topics.range(range) {
            if n != ns {
                break;
            }
            if !pattern.matches(topic) {
                continue;
            }
            let end = log.last_seq + 1;
            let (next, unknown_start) = match replay {
                Replay::None => unreachable!("returned above"),
                Replay::Last(n) => (end.saturating_sub(n).max(1), false),
                Replay::SinceSeq(s) => (s.clamp(1, end), false),
                Replay::SinceTime(t) => {
                    let kept = log.entries.iter().find(|e| e.message.time >= t).map_or(end, |e| e.message.topic_seq);
                    // Something published at or after `t` was trimmed: the replay starts at the
                    // oldest seq, so that the gap before it is reported (its start unknown).
                    match log.trimmed_time {
                        Some(trimmed) if trimmed >= t => (log.first_seq().min(kept).saturating_sub(1).max(1), true),
                        _ => (kept, false),
                    }
                }
            };
            cursor.next.insert(topic.clone(), Position { next, unknown_start });
        }
        cursor
    }

    /// Hands out at most `max` messages of `cursor` (gaps besides), in the order they were
    /// published over all its topics. Returns whether the cursor has caught up with every topic
    /// it covers (then it is done: what comes next is live).
    pub fn drain(&self, ns: &Arc<str>, cursor: &mut Cursor, max: usize, out: &mut Vec<Drained>) -> bool {
        let mut taken = 0;
        loop {
            // Gaps first: a position retention has moved past.
            let mut best: Option<(u64, Arc<str>)> = None;
            let mut forgotten = Vec::new();
            for (topic, pos) in cursor.next.iter_mut() {
                let Some(log) = self.topics.get(&(ns.clone(), topic.clone())) else {
                    forgotten.push(topic.clone());
                    continue;
                };
                let first = log.first_seq();
                if pos.next < first {
                    let start = if pos.unknown_start { 0 } else { pos.next };
                    out.push(Drained::Gap(Gap { topic: topic.clone(), first: start, last: first - 1 }));
                    pos.next = first;
                    pos.unknown_start = false;
                }
                if let Some(e) = log.entry(pos.next) {
                    if best.as_ref().is_none_or(|(o, _)| e.ordinal < *o) {
                        best = Some((e.ordinal, topic.clone()));
                    }
                }
            }
            for t in forgotten {
                cursor.next.remove(&t);
            }
            let Some((_, topic)) = best else { return true };
            if taken >= max {
                return false;
            }
            let pos = cursor.next.get_mut(&topic).expect("chosen from the cursor");
            let log = &self.topics[&(ns.clone(), topic)];
            out.push(Drained::Message(log.entry(pos.next).expect("chosen").message.clone()));
            pos.next += 1;
            taken += 1;
        }
    }

    /// The durable changes of store-kept topics since the last call.
    pub fn take_changes(&mut self) -> Vec<HistoryChange> {
        std::mem::take(&mut self.changes)
    }

    /// Every retained topic of `ns`, by name.
    pub fn topics(&self, ns: &str) -> Vec<TopicView> {
        self.topics
            .iter()
            .filter(|((n, _), _)| &**n == ns)
            .map(|((_, topic), log)| {
                let rule = &self.rules[log.rule].1;
                TopicView {
                    topic: topic.to_string(),
                    messages: log.entries.len() as u64,
                    bytes: log.bytes,
                    first_seq: log.first_seq(),
                    last_seq: log.last_seq,
                    rule: rule.pattern.clone(),
                    keep: rule.keep,
                }
            })
            .collect()
    }

    /// Rebuilds store-kept topics at start, under the rules in force now: a topic no store-keeping
    /// rule covers any more is forgotten (and the store told), the others are trimmed to their
    /// rule's bounds at `now`. Returns the age timers to arm: (namespace, topic, when).
    pub fn restore(&mut self, now: Time, mut kept: Vec<KeptTopic>) -> Vec<(Arc<str>, Arc<str>, Time)> {
        // Publication order over every topic is rebuilt from the server times (then names).
        let mut all: Vec<(Time, usize, usize)> = Vec::new();
        for (t, topic) in kept.iter().enumerate() {
            for (i, m) in topic.messages.iter().enumerate() {
                all.push((m.time, t, i));
            }
        }
        all.sort_unstable();
        let mut ordinals: Vec<Vec<u64>> = kept.iter().map(|t| vec![0; t.messages.len()]).collect();
        for (ordinal, (_, t, i)) in all.into_iter().enumerate() {
            ordinals[t][i] = ordinal as u64;
        }
        self.next_ordinal = self.next_ordinal.max(ordinals.iter().flatten().map(|o| o + 1).max().unwrap_or(0));
        let mut timers = Vec::new();
        for (t, topic) in kept.iter_mut().enumerate() {
            let ns: Arc<str> = topic.namespace.as_str().into();
            let name: Arc<str> = topic.topic.as_str().into();
            let rule = self.rule_for(&topic.topic).filter(|&r| self.rules[r].1.keep == Keep::Store);
            let Some(rule) = rule.filter(|&r| self.per_rule[r] < self.rules[r].1.max_topics) else {
                self.changes
                    .push(HistoryChange::Forget { namespace: topic.namespace.clone(), topic: topic.topic.clone() });
                continue;
            };
            self.per_rule[rule] += 1;
            let mut log =
                TopicLog { rule, entries: VecDeque::new(), bytes: 0, last_seq: topic.last_seq, trimmed_time: None };
            for (i, m) in std::mem::take(&mut topic.messages).into_iter().enumerate() {
                let mut message = Message::new(&topic.topic, m.payload, &m.content_type, m.publisher.as_str().into());
                message.topic_seq = m.seq;
                message.time = m.time;
                log.last_seq = log.last_seq.max(m.seq);
                log.bytes += size_of(&message);
                log.entries.push_back(Entry { ordinal: ordinals[t][i], message: Arc::new(message) });
            }
            let key = (ns.clone(), name.clone());
            self.topics.insert(key.clone(), log);
            let r = &self.rules[rule].1;
            let (max_messages, max_bytes, max_age) = (r.max_messages, r.max_bytes, r.max_age_ms);
            self.trim_while(&key, |log| log.entries.len() as u64 > max_messages || log.bytes > max_bytes);
            if max_age > 0 {
                if let Some(at) = self.expire(now, &ns, &name) {
                    timers.push((ns, name, at));
                }
            }
        }
        timers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> RetainRule {
        RetainRule { pattern: pattern.into(), ..RetainRule::default() }
    }

    fn history(rules: Vec<RetainRule>) -> History {
        let settings = HistorySettings { retain: rules, ..HistorySettings::default() };
        settings.validate(256).unwrap();
        History::new(&settings, 256)
    }

    fn publish(h: &mut History, now: Time, topic: &str, payload: &str) -> Option<Arc<Message>> {
        let ns: Arc<str> = "default".into();
        h.append(now, &ns, topic, Bytes::from(payload.to_owned()), "", &"p".into()).unwrap().map(|a| a.message)
    }

    fn drain_all(h: &History, c: &mut Cursor) -> Vec<Drained> {
        let mut out = Vec::new();
        assert!(h.drain(&"default".into(), c, usize::MAX, &mut out));
        out
    }

    fn seqs(d: &[Drained]) -> Vec<(String, u64)> {
        d.iter()
            .filter_map(|d| match d {
                Drained::Message(m) => Some((m.topic.to_string(), m.topic_seq)),
                Drained::Gap(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_budget_overrun_is_refused_naming_the_rule() {
        let settings = HistorySettings {
            memory_budget_bytes: 1000,
            retain: vec![
                RetainRule { max_topics: 1, max_bytes: 600, ..rule("a.>") },
                RetainRule { max_topics: 1, max_bytes: 600, ..rule("b.>") },
            ],
        };
        let err = settings.validate(256).unwrap_err();
        assert!(err.contains("retain[1] (pattern 'b.>')") && err.contains("1200"), "{err}");
        let bad = HistorySettings { retain: vec![rule("a..b")], ..HistorySettings::default() };
        assert!(bad.validate(256).unwrap_err().contains("retain[0]"));
        let zero = HistorySettings { retain: vec![RetainRule { max_messages: 0, ..rule("a") }], ..Default::default() };
        assert!(zero.validate(256).unwrap_err().contains("max_messages"));
    }

    #[test]
    fn retained_topics_number_their_messages_and_others_are_untouched() {
        let mut h = history(vec![rule("market.>")]);
        assert_eq!(publish(&mut h, 5, "market.btc", "a").unwrap().topic_seq, 1);
        let second = publish(&mut h, 6, "market.btc", "b").unwrap();
        assert_eq!((second.topic_seq, second.time), (2, 6));
        assert_eq!(publish(&mut h, 7, "market.eth", "c").unwrap().topic_seq, 1);
        assert!(publish(&mut h, 8, "risk", "d").is_none());
        let topics = h.topics("default");
        assert_eq!(topics.len(), 2);
        assert_eq!((topics[0].messages, topics[0].first_seq, topics[0].last_seq), (2, 1, 2));
    }

    #[test]
    fn count_and_byte_bounds_trim_the_oldest() {
        let mut h = history(vec![
            RetainRule { max_messages: 3, ..rule("count") },
            RetainRule { max_bytes: 3 * (5 + 5 + 1), ..rule("bytes") },
        ]);
        for i in 0..5 {
            publish(&mut h, i, "count", "x");
            publish(&mut h, i, "bytes", "12345");
        }
        let t = h.topics("default");
        let bytes = t.iter().find(|v| v.topic == "bytes").unwrap();
        let count = t.iter().find(|v| v.topic == "count").unwrap();
        assert_eq!((count.messages, count.first_seq, count.last_seq), (3, 3, 5));
        assert_eq!((bytes.messages, bytes.bytes, bytes.first_seq), (3, 33, 3));
    }

    #[test]
    fn too_many_topics_for_a_rule_are_refused() {
        let mut h = history(vec![RetainRule { max_topics: 2, ..rule("t.*") }]);
        publish(&mut h, 0, "t.a", "x");
        publish(&mut h, 0, "t.b", "x");
        let err = h.append(0, &"default".into(), "t.c", Bytes::new(), "", &"p".into()).unwrap_err();
        assert!(matches!(err, CoreError::Limit { limit: 2, .. }), "{err}");
        // An existing topic still takes messages.
        assert_eq!(publish(&mut h, 0, "t.a", "y").unwrap().topic_seq, 2);
    }

    #[test]
    fn replay_last_since_seq_and_since_time_with_gaps() {
        let mut h = history(vec![RetainRule { max_messages: 3, ..rule("t") }]);
        for i in 1..=5 {
            publish(&mut h, i * 10, "t", "x");
        }
        let p = Pattern::parse("t", 256).unwrap();
        let ns: Arc<str> = "default".into();
        let last2 = drain_all(&h, &mut h.cursor(&ns, &p, Replay::Last(2)));
        assert_eq!(seqs(&last2), [("t".into(), 4), ("t".into(), 5)]);
        // Five asked for, three kept: a gap notice for 1..=2 first.
        let last5 = drain_all(&h, &mut h.cursor(&ns, &p, Replay::Last(5)));
        assert_eq!(last5[0], Drained::Gap(Gap { topic: "t".into(), first: 1, last: 2 }));
        assert_eq!(seqs(&last5).len(), 3);
        let since = drain_all(&h, &mut h.cursor(&ns, &p, Replay::SinceSeq(4)));
        assert_eq!(seqs(&since), [("t".into(), 4), ("t".into(), 5)]);
        assert!(drain_all(&h, &mut h.cursor(&ns, &p, Replay::SinceSeq(99))).is_empty());
        let by_time = drain_all(&h, &mut h.cursor(&ns, &p, Replay::SinceTime(40)));
        assert_eq!(seqs(&by_time), [("t".into(), 4), ("t".into(), 5)]);
        // Since time 15: message 2 (time 20) was trimmed, so a gap with an unknown start.
        let early = drain_all(&h, &mut h.cursor(&ns, &p, Replay::SinceTime(15)));
        assert_eq!(early[0], Drained::Gap(Gap { topic: "t".into(), first: 0, last: 2 }));
        assert_eq!(seqs(&early).len(), 3);
    }

    #[test]
    fn a_cursor_merges_topics_in_publication_order_and_is_paced() {
        let mut h = history(vec![rule("m.*")]);
        for (i, t) in ["m.a", "m.b", "m.a", "m.c", "m.b"].iter().enumerate() {
            publish(&mut h, i as u64, t, "x");
        }
        let ns: Arc<str> = "default".into();
        let mut c = h.cursor(&ns, &Pattern::parse("m.>", 256).unwrap(), Replay::SinceSeq(1));
        let mut out = Vec::new();
        assert!(!h.drain(&ns, &mut c, 2, &mut out));
        assert!(!h.drain(&ns, &mut c, 2, &mut out));
        // Published while the replay is under way: read from the log, in order.
        publish(&mut h, 9, "m.c", "y");
        assert!(h.drain(&ns, &mut c, 10, &mut out));
        let want: Vec<(String, u64)> =
            [("m.a", 1), ("m.b", 1), ("m.a", 2), ("m.c", 1), ("m.b", 2), ("m.c", 2)].map(|(t, s)| (t.into(), s)).into();
        assert_eq!(seqs(&out), want);
    }

    #[test]
    fn age_trims_by_the_clock_given() {
        let mut h = history(vec![RetainRule { max_age_ms: 100, ..rule("t") }]);
        let ns: Arc<str> = "default".into();
        let first = h.append(0, &ns, "t", Bytes::new(), "", &"p".into()).unwrap().unwrap();
        assert_eq!(first.age_timer, Some(100));
        publish(&mut h, 50, "t", "x");
        assert_eq!(h.expire(100, &ns, &"t".into()), Some(150));
        assert_eq!(h.topics("default")[0].first_seq, 2);
        assert_eq!(h.expire(150, &ns, &"t".into()), None);
        assert_eq!((h.topics("default")[0].messages, h.topics("default")[0].last_seq), (0, 2));
    }

    #[test]
    fn store_kept_topics_record_changes_and_restore_their_numbering() {
        let mut h = history(vec![RetainRule { keep: Keep::Store, max_messages: 2, ..rule("s") }]);
        for i in 0..3 {
            publish(&mut h, i, "s", "x");
        }
        let changes = h.take_changes();
        assert_eq!(changes.iter().filter(|c| matches!(c, HistoryChange::Append(_))).count(), 3);
        assert!(changes.contains(&HistoryChange::Trim {
            namespace: "default".into(),
            topic: "s".into(),
            before_seq: 2
        }));
        let kept = |seq| KeptMessage {
            namespace: "default".into(),
            topic: "s".into(),
            seq,
            time: seq,
            publisher: "p".into(),
            content_type: String::new(),
            payload: Bytes::from_static(b"x"),
        };
        let mut back = history(vec![RetainRule { keep: Keep::Store, max_messages: 2, ..rule("s") }]);
        let gone = KeptTopic { namespace: "default".into(), topic: "other".into(), last_seq: 1, messages: vec![] };
        let topic =
            KeptTopic { namespace: "default".into(), topic: "s".into(), last_seq: 3, messages: vec![kept(2), kept(3)] };
        back.restore(10, vec![gone, topic]);
        assert_eq!(publish(&mut back, 11, "s", "y").unwrap().topic_seq, 4);
        assert!(back
            .take_changes()
            .contains(&HistoryChange::Forget { namespace: "default".into(), topic: "other".into() }));
    }
}
