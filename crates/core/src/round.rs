//! Tick rounds: a series of numbered rounds, each handing one input to every participant and
//! merging their answers into a shared context key (the SyncBus `tick()`).
//!
//! Owns the rules of a round series ([`Series`]):
//!
//! * **Who takes part.** A series names its participants as an explicit set of agent ids or as a
//!   role ([`Members`]), resolved when each round opens: the live members whose breaker is closed
//!   (or half-open) and who are not paused are *expected*; members isolated by their breaker or
//!   paused are *skipped* (named, not counted as misses); members of an explicit set that are not
//!   registered or are lost are *missed at once*.
//! * **Who drives.** A series with a `cadence_ms` is driven by the server: round k + 1 opens
//!   `cadence_ms` after round k was due (no drift; ticks the server could not run on time are
//!   skipped, not bunched). A series without one is driven by its clients: each open names the
//!   input, and may name the round number it expects to open (a second driver racing it is
//!   refused). At most one round of a series is open at once; `cadence_ms >= timeout_ms`, so a
//!   server-driven round always closes before the next is due.
//! * **When a round closes.** When every expected participant has answered, or at its deadline
//!   (`timeout_ms` after it opened), whichever comes first, with the answers it has. A participant
//!   that leaves or is lost while the round is open is missed at once. Every miss of a registered
//!   agent counts as a failure for its circuit breaker (the engine applies the isolation cap).
//! * **Answers.** One per participant and round, a JSON object (a merge patch) of at most
//!   `rounds.max_output_bytes`. An answer to a round that is not open (closed, or not opened yet)
//!   is refused with the round's state; a second answer is refused; nothing is partially applied.
//! * **Merge.** At close, the answers are applied as RFC 7386 merge patches to the series' context
//!   key (to `{}` when absent) in the series' declared [`MergeOrder`]: by agent id (byte order), or
//!   by answer order (the order the server took them in). The result is written once, through the
//!   context write path (one version per round; watchers and history see it).
//! * **Numbering and retention.** Rounds are numbered 1, 2, 3... per series; the last number is
//!   kept durably when a round opens, so numbering goes on after a restart without repeats (a round
//!   open at a crash is not retried: its number is used). The last `rounds.retained` closed rounds
//!   of each series are kept for diagnosis ([`RoundRecord`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CoreError;
use crate::io::Time;
use crate::name;

/// Limits of tick rounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundSettings {
    /// Most round series in one namespace.
    pub max_series_per_namespace: usize,
    /// Closed rounds each series keeps for diagnosis.
    pub retained: usize,
    /// Largest answer (its JSON text), in bytes.
    pub max_output_bytes: usize,
    /// Largest round input (its JSON text), in bytes.
    pub max_input_bytes: usize,
    /// Most agents in an explicit participant set.
    pub max_participants: usize,
    /// Longest per-round timeout, in milliseconds.
    pub max_timeout_ms: u64,
    /// Shortest cadence of a server-driven series, in milliseconds.
    pub min_cadence_ms: u64,
}

impl Default for RoundSettings {
    fn default() -> Self {
        RoundSettings {
            max_series_per_namespace: 64,
            retained: 32,
            max_output_bytes: 64 * 1024,
            max_input_bytes: 64 * 1024,
            max_participants: 1024,
            max_timeout_ms: 10 * 60 * 1000,
            min_cadence_ms: 10,
        }
    }
}

impl RoundSettings {
    /// Checks the settings make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_series_per_namespace == 0 || self.retained == 0 || self.max_participants == 0 {
            return Err("max_series_per_namespace, retained and max_participants must be at least 1".into());
        }
        if self.max_output_bytes == 0 || self.max_input_bytes == 0 || self.max_timeout_ms == 0 {
            return Err("max_output_bytes, max_input_bytes and max_timeout_ms must be at least 1".into());
        }
        if self.min_cadence_ms == 0 {
            return Err("min_cadence_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Who takes part in a series' rounds. Kept as `{"agents":[..]}` or `{"role":".."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Members {
    /// Exactly these agents.
    Agents(Vec<String>),
    /// Every live agent with this role when a round opens.
    Role(String),
}

/// In which order a round's answers are merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeOrder {
    /// By agent id, in byte order: the same answers give the same result whatever their timing.
    #[default]
    AgentId,
    /// In the order the server took the answers: a later answer wins a conflict.
    AnswerOrder,
}

impl MergeOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeOrder::AgentId => "agent_id",
            MergeOrder::AnswerOrder => "answer_order",
        }
    }

    /// Parses the wire name (`""` is the default, by agent id).
    pub fn parse(s: &str) -> Result<MergeOrder, CoreError> {
        match s {
            "" | "agent_id" => Ok(MergeOrder::AgentId),
            "answer_order" => Ok(MergeOrder::AnswerOrder),
            other => Err(CoreError::invalid("merge order", format!("'{other}' is neither agent_id nor answer_order"))),
        }
    }
}

/// A round series as its creator declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesSpec {
    /// Empty means the default namespace.
    pub namespace: String,
    /// The series' name (a name: letters, digits, `_`, `-`, `.`, `:`...).
    pub name: String,
    pub members: Members,
    /// How long each round waits for answers, from its opening.
    pub timeout_ms: u64,
    /// The context key the answers are merged into.
    pub context_key: String,
    /// The topic the merged result is published on (empty: none; context watchers still see it).
    #[serde(default)]
    pub topic: String,
    /// The server opens a round every `cadence_ms` (0: clients open the rounds).
    #[serde(default)]
    pub cadence_ms: u64,
    #[serde(default)]
    pub order: MergeOrder,
    /// The input of server-driven rounds (JSON text; empty: `{}`).
    #[serde(default)]
    pub input_json: String,
}

/// Parses JSON text of at most `max` bytes (`what` names it, `limit` the setting).
pub fn parse_json(what: &'static str, text: &str, max: usize, limit: &str) -> Result<Value, CoreError> {
    if text.len() > max {
        return Err(CoreError::invalid(what, format!("{} bytes; the limit is {max} ({limit})", text.len())));
    }
    if text.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| CoreError::invalid(what, format!("not JSON: {e}")))
}

impl SeriesSpec {
    /// Checks every field; the input is returned parsed.
    pub fn validate(
        &self,
        settings: &RoundSettings,
        context: &crate::context::ContextSettings,
        max_topic_len: usize,
    ) -> Result<Value, CoreError> {
        name::validate("round series name", &self.name)?;
        match &self.members {
            Members::Agents(ids) => {
                if ids.is_empty() {
                    return Err(CoreError::invalid("participants", "the agent set is empty"));
                }
                if ids.len() > settings.max_participants {
                    return Err(CoreError::invalid(
                        "participants",
                        format!(
                            "{} agents; the limit is {} (rounds.max_participants)",
                            ids.len(),
                            settings.max_participants
                        ),
                    ));
                }
                let mut seen = BTreeSet::new();
                for id in ids {
                    name::validate("participant agent id", id)?;
                    if !seen.insert(id.as_str()) {
                        return Err(CoreError::invalid("participants", format!("agent '{id}' is listed twice")));
                    }
                }
            }
            Members::Role(role) => name::validate("participant role", role)?,
        }
        if self.timeout_ms == 0 || self.timeout_ms > settings.max_timeout_ms {
            return Err(CoreError::invalid(
                "round timeout",
                format!(
                    "{} ms; it must be between 1 and {} ms (rounds.max_timeout_ms)",
                    self.timeout_ms, settings.max_timeout_ms
                ),
            ));
        }
        if self.cadence_ms != 0 {
            if self.cadence_ms < settings.min_cadence_ms {
                return Err(CoreError::invalid(
                    "round cadence",
                    format!(
                        "{} ms; the shortest is {} ms (rounds.min_cadence_ms)",
                        self.cadence_ms, settings.min_cadence_ms
                    ),
                ));
            }
            if self.cadence_ms < self.timeout_ms {
                return Err(CoreError::invalid(
                    "round cadence",
                    format!(
                        "{} ms is shorter than the round timeout ({} ms): a round must close before the next opens",
                        self.cadence_ms, self.timeout_ms
                    ),
                ));
            }
        }
        crate::context::validate_key("round context key", &self.context_key, context)?;
        if crate::context::is_system(&self.context_key) {
            return Err(CoreError::invalid("round context key", "keys under system. are kept by the server"));
        }
        if !self.topic.is_empty() {
            crate::topic::validate_topic(&self.topic, max_topic_len)?;
        }
        parse_json("round input", &self.input_json, settings.max_input_bytes, "rounds.max_input_bytes")
    }
}

/// A member that took no part in a round, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    pub agent: String,
    /// `timeout`, `not registered`, `lost its lease`, `left`...
    pub why: String,
}

/// How a round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closing {
    /// Nobody was left to wait for before the deadline: every participant asked answered or went
    /// away (those that went away are among the missed).
    Complete,
    /// The deadline passed with answers missing.
    Timeout,
}

impl Closing {
    pub fn as_str(self) -> &'static str {
        match self {
            Closing::Complete => "complete",
            Closing::Timeout => "timeout",
        }
    }
}

/// A closed round, as kept for diagnosis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    /// Who opened it: `server` (cadence) or the client's name.
    pub driver: String,
    pub opened_at: Time,
    pub closed_at: Time,
    pub closing: Closing,
    /// The agents asked to answer, in id order.
    pub participants: Vec<String>,
    /// Who answered, in merge order, with when (ms after the opening).
    pub answered: Vec<(String, u64)>,
    pub missed: Vec<Missed>,
    /// Members skipped at the opening (breaker open, or paused), in id order.
    pub skipped: Vec<String>,
    /// The context key's version the merge wrote (0: not written).
    pub context_version: u64,
    /// Why the merge could not be written (empty: it was).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub merge_error: String,
}

/// The round open now.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRound {
    pub round: u64,
    pub driver: String,
    pub opened_at: Time,
    pub deadline: Time,
    pub input: Arc<str>,
    /// Asked and not yet answered.
    pub waiting: BTreeSet<Arc<str>>,
    /// Every agent asked (in id order).
    pub participants: Vec<String>,
    /// Answers in the order taken: (agent, patch, when).
    pub answers: Vec<(Arc<str>, Value, Time)>,
    pub missed: Vec<Missed>,
    pub skipped: Vec<String>,
}

/// One round series: its spec, its numbering, its open round and its retained ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub spec: SeriesSpec,
    pub created_at: Time,
    pub last_round: u64,
    /// When the server opens the next round (server-driven series).
    pub next_tick: Option<Time>,
    pub open: Option<OpenRound>,
    /// Closed rounds, oldest first, at most `rounds.retained`.
    pub retained: VecDeque<RoundRecord>,
    /// The input of server-driven rounds.
    pub input: Arc<str>,
}

/// A series as it is kept (its open round apart: its number is `last_round`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesImage {
    pub spec: SeriesSpec,
    pub created_at: Time,
    pub last_round: u64,
    #[serde(default)]
    pub next_tick: Option<Time>,
    #[serde(default)]
    pub retained: Vec<RoundRecord>,
}

/// What a round needs to know of a member when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberFact {
    /// Live and free to act: it is asked.
    Ready,
    /// Live but isolated by its breaker or paused: skipped.
    Held,
    /// Lost (its lease ran out).
    Lost,
    /// Not registered.
    Absent,
}

impl Series {
    /// A new series created at `now` (its spec validated, `input` its parsed input).
    pub fn new(spec: SeriesSpec, input: &Value, now: Time) -> Series {
        let next_tick = (spec.cadence_ms > 0).then_some(now);
        Series {
            spec,
            created_at: now,
            last_round: 0,
            next_tick,
            open: None,
            retained: VecDeque::new(),
            input: input.to_string().into(),
        }
    }

    /// The series back from its image; a server-driven one ticks next at `now` at the earliest.
    pub fn restore(image: SeriesImage, now: Time, settings: &RoundSettings) -> Series {
        let input = parse_json("round input", &image.spec.input_json, usize::MAX, "")
            .unwrap_or_else(|_| Value::Object(Default::default()));
        let mut retained: VecDeque<RoundRecord> = image.retained.into();
        while retained.len() > settings.retained {
            retained.pop_front();
        }
        let next_tick = (image.spec.cadence_ms > 0).then(|| image.next_tick.unwrap_or(now).max(now));
        Series {
            spec: image.spec,
            created_at: image.created_at,
            last_round: image.last_round,
            next_tick,
            open: None,
            retained,
            input: input.to_string().into(),
        }
    }

    /// The image to keep.
    pub fn image(&self) -> SeriesImage {
        SeriesImage {
            spec: self.spec.clone(),
            created_at: self.created_at,
            last_round: self.last_round,
            next_tick: self.next_tick,
            retained: self.retained.iter().cloned().collect(),
        }
    }

    /// Checks a client may open round `expected` (0: the next) now.
    pub fn check_open(&self, expected: u64) -> Result<(), CoreError> {
        if let Some(open) = &self.open {
            return Err(CoreError::RoundInProgress {
                series: self.spec.name.clone(),
                round: open.round,
                deadline: open.deadline,
            });
        }
        let next = self.last_round + 1;
        if expected != 0 && expected != next {
            return Err(CoreError::invalid(
                "round number",
                format!("series '{}' opens round {next} next, not {expected}", self.spec.name),
            ));
        }
        Ok(())
    }

    /// Opens the next round at `now`; `facts` says how each member stands. Returns the agents to
    /// ask. The round may already be complete (nobody to ask): see [`Series::complete`].
    pub fn open(
        &mut self,
        now: Time,
        driver: &str,
        input: Arc<str>,
        members: impl IntoIterator<Item = (Arc<str>, MemberFact)>,
    ) -> Vec<Arc<str>> {
        self.last_round += 1;
        let mut waiting = BTreeSet::new();
        let (mut skipped, mut missed) = (Vec::new(), Vec::new());
        let sorted: BTreeMap<Arc<str>, MemberFact> = members.into_iter().collect();
        for (agent, fact) in sorted {
            match fact {
                MemberFact::Ready => {
                    waiting.insert(agent);
                }
                MemberFact::Held => skipped.push(agent.to_string()),
                MemberFact::Lost => missed.push(Missed { agent: agent.to_string(), why: "lost its lease".into() }),
                MemberFact::Absent => missed.push(Missed { agent: agent.to_string(), why: "not registered".into() }),
            }
        }
        let asked: Vec<Arc<str>> = waiting.iter().cloned().collect();
        self.open = Some(OpenRound {
            round: self.last_round,
            driver: driver.to_owned(),
            opened_at: now,
            deadline: now.saturating_add(self.spec.timeout_ms),
            input,
            waiting,
            participants: asked.iter().map(|a| a.to_string()).collect(),
            answers: Vec::new(),
            missed,
            skipped,
        });
        asked
    }

    /// Takes `agent`'s answer to `round` at `now`.
    pub fn answer(
        &mut self,
        now: Time,
        agent: &Arc<str>,
        round: u64,
        output_json: &str,
        settings: &RoundSettings,
    ) -> Result<(), CoreError> {
        let series = &self.spec.name;
        let open = match &mut self.open {
            Some(open) if open.round == round => open,
            open => {
                let state = match open {
                    Some(o) if round > o.round => format!("not opened yet; round {} is open", o.round),
                    _ if round > self.last_round => {
                        format!("not opened yet; the last round opened is {}", self.last_round)
                    }
                    _ => match self.retained.iter().find(|r| r.round == round) {
                        Some(r) => format!(
                            "closed at {} ms ({}{})",
                            r.closed_at,
                            r.closing.as_str(),
                            if r.missed.iter().any(|m| m.agent == **agent) {
                                ", and this answer was missed"
                            } else {
                                ""
                            }
                        ),
                        None => "closed".to_owned(),
                    },
                };
                return Err(CoreError::RoundNotOpen { series: series.clone(), round, state });
            }
        };
        if !open.participants.iter().any(|p| **p == **agent) {
            return Err(CoreError::NotARoundParticipant { series: series.clone(), round, agent: agent.to_string() });
        }
        if !open.waiting.contains(agent) {
            return Err(CoreError::RoundAnswered { series: series.clone(), round, agent: agent.to_string() });
        }
        let patch = parse_json("round output", output_json, settings.max_output_bytes, "rounds.max_output_bytes")?;
        if !patch.is_object() {
            return Err(CoreError::invalid("round output", "must be a JSON object (it is merged as a merge patch)"));
        }
        open.waiting.remove(agent);
        open.answers.push((agent.clone(), patch, now));
        Ok(())
    }

    /// `agent` went away (`why`) while a round was open: it is missed at once. Whether it was
    /// waited for.
    pub fn participant_gone(&mut self, agent: &Arc<str>, why: &str) -> bool {
        let Some(open) = &mut self.open else { return false };
        if !open.waiting.remove(agent) {
            return false;
        }
        open.missed.push(Missed { agent: agent.to_string(), why: why.to_owned() });
        true
    }

    /// Whether the open round has every answer it waits for.
    pub fn complete(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.waiting.is_empty())
    }

    /// Closes the open round at `now`: the missing participants, and the answers' patches in merge
    /// order. The record is finished by [`Series::retain`] once the merge is written.
    pub fn close(&mut self, now: Time) -> Option<(RoundRecord, Vec<Value>, Vec<String>)> {
        let mut open = self.open.take()?;
        let closing = if open.waiting.is_empty() { Closing::Complete } else { Closing::Timeout };
        let timed_out: Vec<String> = open.waiting.iter().map(|a| a.to_string()).collect();
        for agent in &timed_out {
            open.missed.push(Missed { agent: agent.clone(), why: "timeout".into() });
        }
        open.missed.sort_by(|a, b| a.agent.cmp(&b.agent));
        if self.spec.order == MergeOrder::AgentId {
            open.answers.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let answered =
            open.answers.iter().map(|(a, _, at)| (a.to_string(), at.saturating_sub(open.opened_at))).collect();
        let patches = open.answers.into_iter().map(|(_, p, _)| p).collect();
        let missed_agents = open.missed.iter().map(|m| m.agent.clone()).collect();
        let record = RoundRecord {
            round: open.round,
            driver: open.driver,
            opened_at: open.opened_at,
            closed_at: now,
            closing,
            participants: open.participants,
            answered,
            missed: open.missed,
            skipped: open.skipped,
            context_version: 0,
            merge_error: String::new(),
        };
        Some((record, patches, missed_agents))
    }

    /// Keeps a closed round, forgetting the oldest past `rounds.retained`.
    pub fn retain(&mut self, record: RoundRecord, settings: &RoundSettings) {
        self.retained.push_back(record);
        while self.retained.len() > settings.retained {
            self.retained.pop_front();
        }
    }

    /// The next server tick after the one due at `due`, skipping those already past at `now`.
    pub fn schedule_after(&mut self, due: Time, now: Time) -> Option<Time> {
        let cadence = self.spec.cadence_ms;
        if cadence == 0 {
            return None;
        }
        let mut next = due.saturating_add(cadence);
        if next <= now {
            // Ticks the server could not run on time are skipped, not run in a burst.
            let behind = (now - next) / cadence + 1;
            next = next.saturating_add(behind.saturating_mul(cadence));
        }
        self.next_tick = Some(next);
        self.next_tick
    }

    /// The round `round`: open, or retained.
    pub fn find(&self, round: u64) -> Option<RoundView> {
        if let Some(o) = self.open.as_ref().filter(|o| o.round == round) {
            return Some(RoundView::Open(o.clone()));
        }
        self.retained.iter().find(|r| r.round == round).cloned().map(RoundView::Closed)
    }
}

/// A round as a read shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum RoundView {
    Open(OpenRound),
    Closed(RoundRecord),
}

/// Applies `patches` in order to `base` (an absent key: `{}`): the merged value.
pub fn merge(base: Option<&Value>, patches: &[Value]) -> Value {
    let mut value = base.cloned().unwrap_or_else(|| Value::Object(Default::default()));
    for p in patches {
        crate::state::apply(&mut value, p);
    }
    value
}

/// A series' status for listings.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesStatus {
    pub spec: SeriesSpec,
    pub created_at: Time,
    pub last_round: u64,
    pub next_tick: Option<Time>,
    pub open: Option<OpenRound>,
    pub retained: Vec<RoundRecord>,
}

impl From<&Series> for SeriesStatus {
    fn from(s: &Series) -> Self {
        SeriesStatus {
            spec: s.spec.clone(),
            created_at: s.created_at,
            last_round: s.last_round,
            next_tick: s.next_tick,
            open: s.open.clone(),
            retained: s.retained.iter().cloned().collect(),
        }
    }
}

/// The merged result of a round as it is published on the series' topic (JSON).
pub fn result_message(series: &str, record: &RoundRecord, value: Option<&Value>) -> Value {
    let mut m = serde_json::json!({
        "series": series,
        "round": record.round,
        "closing": record.closing.as_str(),
        "opened_at_ms": record.opened_at,
        "closed_at_ms": record.closed_at,
        "answered": record.answered.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        "missed": record.missed,
        "skipped": record.skipped,
        "context_version": record.context_version,
    });
    if let Some(v) = value {
        m["value"] = v.clone();
    }
    if !record.merge_error.is_empty() {
        m["merge_error"] = Value::String(record.merge_error.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(order: MergeOrder) -> SeriesSpec {
        SeriesSpec {
            namespace: String::new(),
            name: "tick".into(),
            members: Members::Agents(vec!["a".into(), "b".into(), "c".into()]),
            timeout_ms: 100,
            context_key: "ticks.merged".into(),
            topic: "ticks".into(),
            cadence_ms: 0,
            order,
            input_json: String::new(),
        }
    }

    fn open(s: &mut Series, now: Time) -> Vec<Arc<str>> {
        let members = ["a", "b", "c"].map(|a| (Arc::from(a), MemberFact::Ready));
        s.open(now, "client", "{}".into(), members)
    }

    #[test]
    fn answers_merge_in_the_declared_order() {
        let settings = RoundSettings::default();
        for (order, expect) in [(MergeOrder::AgentId, "c"), (MergeOrder::AnswerOrder, "a")] {
            let mut s = Series::new(spec(order), &json!({}), 0);
            open(&mut s, 0);
            for agent in ["c", "b", "a"] {
                let out = json!({"winner": agent, agent: 1}).to_string();
                s.answer(5, &Arc::from(agent), 1, &out, &settings).unwrap();
            }
            assert!(s.complete());
            let (record, patches, missed) = s.close(5).unwrap();
            assert_eq!(record.closing, Closing::Complete);
            assert!(missed.is_empty());
            let merged = merge(Some(&json!({"old": true})), &patches);
            assert_eq!(merged, json!({"old": true, "winner": expect, "a": 1, "b": 1, "c": 1}), "{order:?}");
        }
    }

    #[test]
    fn a_silent_participant_is_missed_at_the_timeout_and_late_answers_are_refused() {
        let settings = RoundSettings::default();
        let mut s = Series::new(spec(MergeOrder::AgentId), &json!({}), 0);
        open(&mut s, 10);
        s.answer(20, &"a".into(), 1, "{\"x\":1}", &settings).unwrap();
        s.answer(20, &"b".into(), 1, "{\"y\":1}", &settings).unwrap();
        assert!(!s.complete());
        let (record, _, missed) = s.close(110).unwrap();
        s.retain(record.clone(), &settings);
        assert_eq!(record.closing, Closing::Timeout);
        assert_eq!(missed, vec!["c".to_string()]);
        assert_eq!(record.missed, vec![Missed { agent: "c".into(), why: "timeout".into() }]);
        assert_eq!(record.answered, vec![("a".into(), 10), ("b".into(), 10)]);
        let late = s.answer(120, &"c".into(), 1, "{}", &settings).unwrap_err();
        assert!(
            matches!(&late, CoreError::RoundNotOpen { round: 1, state, .. } if state.contains("timeout")),
            "{late}"
        );
        let early = s.answer(120, &"c".into(), 5, "{}", &settings).unwrap_err();
        assert!(early.to_string().contains("not opened yet"), "{early}");
    }

    #[test]
    fn bad_answers_change_nothing() {
        let settings = RoundSettings { max_output_bytes: 16, ..RoundSettings::default() };
        let mut s = Series::new(spec(MergeOrder::AgentId), &json!({}), 0);
        open(&mut s, 0);
        let e = s.answer(1, &"z".into(), 1, "{}", &settings).unwrap_err();
        assert!(matches!(e, CoreError::NotARoundParticipant { .. }), "{e}");
        let e = s.answer(1, &"a".into(), 1, "[1]", &settings).unwrap_err();
        assert!(e.to_string().contains("JSON object"), "{e}");
        let e = s.answer(1, &"a".into(), 1, &json!({"long": "0123456789abcdef"}).to_string(), &settings).unwrap_err();
        assert!(e.to_string().contains("rounds.max_output_bytes"), "{e}");
        s.answer(1, &"a".into(), 1, "{}", &settings).unwrap();
        let e = s.answer(2, &"a".into(), 1, "{}", &settings).unwrap_err();
        assert!(matches!(e, CoreError::RoundAnswered { .. }), "{e}");
        assert_eq!(s.open.as_ref().unwrap().answers.len(), 1);
    }

    #[test]
    fn members_that_are_gone_or_held_are_named_at_the_opening() {
        let mut s = Series::new(spec(MergeOrder::AgentId), &json!({}), 0);
        let asked = s.open(
            0,
            "server",
            "{}".into(),
            [("c".into(), MemberFact::Absent), ("b".into(), MemberFact::Held), ("a".into(), MemberFact::Lost)],
        );
        assert!(asked.is_empty());
        assert!(s.complete());
        let (record, _, missed) = s.close(0).unwrap();
        assert_eq!(record.skipped, vec!["b".to_string()]);
        assert_eq!(missed, vec!["a".to_string(), "c".to_string()]);
        assert_eq!(record.missed[1].why, "not registered");
    }

    #[test]
    fn cadence_skips_ticks_it_could_not_run_and_specs_are_checked() {
        let settings = RoundSettings::default();
        let mut sp = spec(MergeOrder::AgentId);
        sp.cadence_ms = 100;
        let mut s = Series::new(sp.clone(), &json!({}), 0);
        assert_eq!(s.schedule_after(0, 10), Some(100));
        assert_eq!(s.schedule_after(100, 450), Some(500));
        let ctx = crate::context::ContextSettings::default();
        sp.cadence_ms = 50;
        let e = sp.validate(&settings, &ctx, 256).unwrap_err();
        assert!(e.to_string().contains("shorter than the round timeout"), "{e}");
        sp.cadence_ms = 0;
        sp.members = Members::Agents(vec!["a".into(), "a".into()]);
        assert!(sp.validate(&settings, &ctx, 256).unwrap_err().to_string().contains("listed twice"));
        sp.members = Members::Role("r".into());
        sp.context_key = "system.x".into();
        assert!(sp.validate(&settings, &ctx, 256).is_err());
    }

    #[test]
    fn retention_is_bounded() {
        let settings = RoundSettings { retained: 2, ..RoundSettings::default() };
        let mut s = Series::new(spec(MergeOrder::AgentId), &json!({}), 0);
        for k in 0..5 {
            open(&mut s, k * 10);
            let (record, _, _) = s.close(k * 10 + 1).unwrap();
            s.retain(record, &settings);
        }
        assert_eq!(s.retained.iter().map(|r| r.round).collect::<Vec<_>>(), vec![4, 5]);
        let back = Series::restore(s.image(), 100, &settings);
        assert_eq!(back.last_round, 5);
        assert!(back.find(3).is_none() && back.find(5).is_some());
    }
}
