//! Durable state: what the engine keeps across a restart, and the changes that keep it current.
//!
//! The engine is pure, so it does not write anything itself. When the shell asks it to
//! ([`Engine::track_changes`](crate::Engine::track_changes)), it records which durable things each
//! input touched, and [`Engine::take_changes`](crate::Engine::take_changes) hands them over as
//! [`Change`]s carrying the current values, in the order they happened. The shell commits them in
//! one transaction before it lets any frame produced by the same inputs leave: nothing is
//! acknowledged that a crash could lose. At start the shell gives the engine what it loaded as a
//! [`Restored`] ([`Engine::restore`](crate::Engine::restore)).
//!
//! Durable: agents (profile, last status, resume token, state and version, watches), sync points
//! open and finished with their arrivals, the audit log, operators' pauses and the emergency stop,
//! votes, context keys with their retained versions and lifetimes, tasks (submissions with their
//! pinned context, attempts, outputs and errors), the sync monitor's systems (their last events,
//! dependencies, open and recent incidents). The server-maintained
//! `system.*` context keys are not kept: they are facts of the running server.
//! Ephemeral by design: messages in flight and queued deliveries (at-most-once), sessions'
//! connections, breaker states, health figures and operators' commands awaiting a reply.
//!
//! Every image, and every value it holds, serializes with serde: the shell stores them without
//! a format of its own. The serialized forms are what data directories hold, so they only ever
//! change compatibly (a new field needs a default): watch targets are texts `agent:<id>`,
//! `role:<role>` or `all`; participants `{"agents":[..]}`, `{"count":n}` or `{"role":".."}`; a
//! failed point's failure `{"timeout":{..}}` or `{"aborted":{..}}`; statuses, states and outcomes
//! their snake_case names (the same as their `as_str`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::{AuditEntry, EmergencyStop};
use crate::error::CoreError;
use crate::io::{Time, WatchTarget};
use crate::registry::AgentStatus;
use crate::syncpoint::{Participants, SyncState};
use crate::vote::{Ballot, VoteImage};

/// One agent as it is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentImage {
    pub namespace: String,
    pub agent_id: String,
    pub role: String,
    pub capabilities: Vec<String>,
    /// Interest patterns as the agent wrote them.
    pub interests: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The last status; `Lost` for an agent whose lease had run out.
    pub status: AgentStatus,
    pub resume_token: String,
    pub registered_at: Time,
    pub state: Value,
    pub state_version: u64,
    pub watches: Vec<WatchTarget>,
}

/// One arrival at a sync point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrivalImage {
    pub agent_id: String,
    #[serde(with = "payload_bytes")]
    pub payload: Bytes,
    pub at: Time,
}

/// One sync point as it is kept. In a [`Change::SyncPoint`] `arrivals` is empty (arrivals are
/// kept one by one, [`Change::Arrival`]); in a [`Restored`] it holds them all in arrival order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncPointImage {
    pub namespace: String,
    pub sync_id: String,
    pub participants: Participants,
    /// k of a k-of-n point (absent in images kept before quorums existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// The resolved participant set (empty for a count).
    pub required: Vec<String>,
    pub created_at: Time,
    pub deadline: Time,
    pub state: SyncState,
    pub finished_at: Option<Time>,
    /// Why a timed-out or failed point failed (the error every waiter got).
    pub failure: Option<SyncFailure>,
    pub arrivals: Vec<ArrivalImage>,
}

/// An operator's pause of one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseImage {
    /// Defaults to empty: pauses stored before the image was kept whole held only `actor` and
    /// `since`, and the store's key names the agent.
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub agent_id: String,
    pub actor: String,
    pub since: Time,
}

/// One change to durable state, with the value to keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The agent was registered, or its profile, status or watches changed: keep all of it.
    Agent(AgentImage),
    /// The agent's state changed (the frequent case: only the document and its version).
    State { namespace: String, agent_id: String, state: Value, version: u64 },
    /// The agent left the registry.
    AgentRemoved { namespace: String, agent_id: String },
    /// The sync point was created or finished (its arrivals are not in the image).
    SyncPoint(SyncPointImage),
    /// An agent arrived at a sync point; `position` is its place in the arrival order.
    Arrival { namespace: String, sync_id: String, position: u32, arrival: ArrivalImage },
    /// The sync point was removed (retention ended, cleanup).
    SyncPointRemoved { namespace: String, sync_id: String },
    /// An entry was added to the audit log.
    Audit(AuditEntry),
    /// An operator paused the agent.
    Paused(PauseImage),
    /// The agent's own pause was lifted (or it left, which forgets its pause).
    Unpaused { namespace: String, agent_id: String },
    /// The emergency stop started (`Some`) or was lifted (`None`).
    EmergencyStop(Option<EmergencyStop>),
    /// A vote opened or decided (its ballots apart).
    Vote(Box<VoteImage>),
    /// A ballot cast; `position` is its place among the vote's ballots (they are only appended).
    Ballot { namespace: String, vote_id: String, position: u32, ballot: Ballot },
    /// A finished vote forgotten (its retention ended, or it was evicted).
    VoteRemoved { namespace: String, vote_id: String },
    /// A context key took a new version: keep the version (in `revisions`, alone) and the key's
    /// lifetime, and forget its versions older than `oldest_retained`.
    ContextRevision(Box<ContextKeyImage>),
    /// A context key was deleted at `version` (the namespace's numbering goes on from there).
    ContextRemoved { namespace: String, key: String, version: u64 },
    /// A task was submitted or changed: keep it whole.
    Task(Box<crate::task::TaskImage>),
    /// A finished task was forgotten.
    TaskRemoved { namespace: String, id: String },
    /// A trace was recorded or its pins changed: keep it as it is now (its inline output with it).
    TracePut(Box<crate::trace::Trace>),
    /// A trace was evicted.
    TraceRemoved { namespace: String, id: String },
    // Tick rounds.
    /// A round series was created, opened a round or closed one: keep it whole.
    RoundSeries(Box<crate::round::SeriesImage>),
    /// A round series was removed.
    RoundSeriesRemoved { namespace: String, name: String },
    // --- event-time streams
    /// A tick controller or latency buffer was created, or a controller closed ticks: keep it.
    Stream(Box<crate::streams::StreamImage>),
    /// A tick controller or latency buffer was removed.
    StreamRemoved { kind: crate::streams::StreamKind, namespace: String, id: String },
    /// A store-kept topic's history changed (see [`crate::history`]).
    History(crate::history::HistoryChange),
    /// The intake's rule set was replaced (see [`crate::intake`]): keep it and its version.
    Intake(Box<crate::intake::IntakeImage>),
    // --- sync monitor (see [`crate::systems`])
    /// A synced system was registered, updated, retired or changed state: keep it (without its
    /// events).
    SystemPut(Box<crate::systems::SystemImage>),
    /// A synced system took event number `seq`: keep it, and at most the last `keep` of the
    /// system's events.
    SystemEvent { system: String, seq: u64, event: Box<crate::systems::Event>, keep: u64 },
    /// A synced system's trends changed enough to keep them (see `systems::trend`).
    SystemTrend { system: String, trend: Box<crate::systems::trend::Trend> },
    /// A dependency was declared or reweighted (`Some(weight)`), or removed (`None`).
    Dependency { upstream: String, downstream: String, weight: Option<f64> },
    /// An incident opened or changed (resolved included): keep it, and at most the last `keep`
    /// resolved incidents.
    Incident { incident: Box<crate::systems::Incident>, keep: u64 },
}

/// One retained version of a context key as it is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextRevisionImage {
    pub version: u64,
    pub value: Value,
    /// The merge patch from the previous version, when one says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    pub at: Time,
    pub writer: String,
    /// This version created the key.
    #[serde(default)]
    pub created: bool,
}

/// One context key as it is kept. In a [`Change::ContextRevision`] `revisions` holds the new
/// version alone; in a [`Restored`] every retained one, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextKeyImage {
    pub namespace: String,
    pub key: String,
    /// The agent whose lease the key is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    pub oldest_retained: u64,
    pub revisions: Vec<ContextRevisionImage>,
}

/// Everything the engine is rebuilt from at start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    pub agents: Vec<AgentImage>,
    pub sync_points: Vec<SyncPointImage>,
    /// Oldest first; numbering continues after the last.
    pub audit: Vec<AuditEntry>,
    pub pauses: Vec<PauseImage>,
    pub emergency: Option<EmergencyStop>,
    /// Votes, open and finished, each with its ballots in order.
    #[serde(default)]
    pub votes: Vec<VoteImage>,
    /// Context keys with their retained versions.
    #[serde(default)]
    pub context: Vec<ContextKeyImage>,
    /// Each namespace's last context version given out (it may be a deletion's).
    #[serde(default)]
    pub context_revisions: Vec<(String, u64)>,
    /// Tasks, whole.
    #[serde(default)]
    pub tasks: Vec<crate::task::TaskImage>,
    /// Each namespace's last task submission number.
    #[serde(default)]
    pub task_seqs: Vec<(String, u64)>,
    /// Execution traces (those whose output is kept beside the engine only when their bytes are
    /// there).
    #[serde(default)]
    pub traces: Vec<crate::trace::Trace>,
    /// Tick round series, with their numbering and retained rounds.
    #[serde(default)]
    pub rounds: Vec<crate::round::SeriesImage>,
    /// Tick controllers and latency buffers (definitions made at run time; where every
    /// controller's numbering stands).
    #[serde(default)]
    pub streams: Vec<crate::streams::StreamImage>,
    /// Store-kept topics of the history, with their kept messages.
    #[serde(default)]
    pub history: Vec<crate::history::KeptTopic>,
    /// The intake's rule set as an operator last replaced it (none: the file's is in force).
    #[serde(default)]
    pub intake: Option<crate::intake::IntakeImage>,
    /// The sync monitor's systems (see [`crate::systems`]).
    #[serde(default)]
    pub systems: Vec<crate::systems::SystemImage>,
    /// Their kept events: (system, number, event), in number order per system.
    #[serde(default)]
    pub system_events: Vec<(String, u64, crate::systems::Event)>,
    /// Dependencies: (upstream, downstream, weight).
    #[serde(default)]
    pub dependencies: Vec<(String, String, f64)>,
    /// Incidents, open and resolved.
    #[serde(default)]
    pub incidents: Vec<crate::systems::Incident>,
    /// Systems' trends as last kept: (system, trend).
    #[serde(default)]
    pub system_trends: Vec<(String, crate::systems::trend::Trend)>,
}

/// Why a sync point failed, as it is kept: the [`CoreError`] its waiters got, without the point's
/// id (the point carries it). [`SyncFailure::into_error`] gives the same error back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncFailure {
    /// The deadline passed ([`CoreError::SyncTimeout`]).
    Timeout { waited_ms: u64, missing: Vec<String>, missing_count: u32 },
    /// The point was abandoned ([`CoreError::SyncAborted`], or any other error, kept by its text).
    Aborted { reason: String, missing: Vec<String> },
}

impl SyncFailure {
    /// The kept form of the error a point failed with.
    pub fn of(error: &CoreError) -> SyncFailure {
        match error {
            CoreError::SyncTimeout { waited_ms, missing, missing_count, .. } => {
                SyncFailure::Timeout { waited_ms: *waited_ms, missing: missing.clone(), missing_count: *missing_count }
            }
            CoreError::SyncAborted { reason, missing, .. } => {
                SyncFailure::Aborted { reason: reason.clone(), missing: missing.clone() }
            }
            other => SyncFailure::Aborted { reason: other.to_string(), missing: Vec::new() },
        }
    }

    /// The error the waiters of point `sync_id` got.
    pub fn into_error(self, sync_id: &str) -> CoreError {
        let sync_id = sync_id.to_owned();
        match self {
            SyncFailure::Timeout { waited_ms, missing, missing_count } => {
                CoreError::SyncTimeout { sync_id, waited_ms, missing, missing_count }
            }
            SyncFailure::Aborted { reason, missing } => CoreError::SyncAborted { sync_id, reason, missing },
        }
    }
}

/// A watch target's kept text: `agent:<id>`, `role:<role>` or `all` (its serde form).
impl From<WatchTarget> for String {
    fn from(target: WatchTarget) -> String {
        match target {
            WatchTarget::Agent(id) => format!("agent:{id}"),
            WatchTarget::Role(role) => format!("role:{role}"),
            WatchTarget::All => "all".into(),
        }
    }
}

/// Reads a watch target's kept text.
impl TryFrom<String> for WatchTarget {
    type Error = String;

    fn try_from(text: String) -> Result<WatchTarget, String> {
        match text.split_once(':') {
            Some(("agent", id)) => Ok(WatchTarget::Agent(id.into())),
            Some(("role", role)) => Ok(WatchTarget::Role(role.into())),
            None if text == "all" => Ok(WatchTarget::All),
            _ => Err(format!("unknown watch '{text}': expected agent:<id>, role:<role> or all")),
        }
    }
}

/// Serde for [`Bytes`] as a byte string (the `bytes` crate's own serde support is a feature this
/// workspace does not turn on for one field).
mod payload_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(payload: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(payload)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::AuditOutcome;
    use serde_json::json;

    #[test]
    fn names_serialize_as_their_kept_texts() {
        let statuses = [
            AgentStatus::Active,
            AgentStatus::Idle,
            AgentStatus::Busy,
            AgentStatus::Syncing,
            AgentStatus::Paused,
            AgentStatus::Lost,
        ];
        for status in statuses {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(status.as_str()));
        }
        let states =
            [SyncState::Waiting, SyncState::Completed, SyncState::Forced, SyncState::TimedOut, SyncState::Failed];
        for state in states {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(state.as_str()));
        }
        let outcomes = [
            AuditOutcome::Ok,
            AuditOutcome::Refused,
            AuditOutcome::UnknownAgent,
            AuditOutcome::AgentError,
            AuditOutcome::TimedOut,
            AuditOutcome::AgentGone,
        ];
        for outcome in outcomes {
            assert_eq!(serde_json::to_value(outcome).unwrap(), json!(outcome.as_str()));
        }
    }

    #[test]
    fn watch_targets_and_participants_keep_their_stored_shapes() {
        for (target, text) in [
            (WatchTarget::Agent("w2".into()), "agent:w2"),
            (WatchTarget::Role("r".into()), "role:r"),
            (WatchTarget::All, "all"),
        ] {
            assert_eq!(serde_json::to_value(&target).unwrap(), json!(text));
            assert_eq!(serde_json::from_value::<WatchTarget>(json!(text)).unwrap(), target);
        }
        assert!(serde_json::from_value::<WatchTarget>(json!("team:x")).is_err());
        for (participants, shape) in [
            (Participants::Agents(vec!["a".into()]), json!({"agents": ["a"]})),
            (Participants::Count(3), json!({"count": 3})),
            (Participants::Role("trader".into()), json!({"role": "trader"})),
        ] {
            assert_eq!(serde_json::to_value(&participants).unwrap(), shape);
            assert_eq!(serde_json::from_value::<Participants>(shape).unwrap(), participants);
        }
    }

    #[test]
    fn a_failure_gives_back_the_error_its_waiters_got() {
        let timeout =
            CoreError::SyncTimeout { sync_id: "s".into(), waited_ms: 9, missing: vec!["b".into()], missing_count: 1 };
        let kept = SyncFailure::of(&timeout);
        assert_eq!(
            serde_json::to_value(&kept).unwrap(),
            json!({"timeout": {"waited_ms": 9, "missing": ["b"], "missing_count": 1}})
        );
        assert_eq!(kept.into_error("s"), timeout);
        let other = CoreError::NotRegistered;
        assert_eq!(
            SyncFailure::of(&other).into_error("s"),
            CoreError::SyncAborted { sync_id: "s".into(), reason: other.to_string(), missing: vec![] }
        );
    }

    #[test]
    fn an_arrival_round_trips_with_its_payload() {
        let arrival = ArrivalImage { agent_id: "a".into(), payload: Bytes::from_static(b"\x00\xffp"), at: 4 };
        let text = serde_json::to_string(&arrival).unwrap();
        assert_eq!(serde_json::from_str::<ArrivalImage>(&text).unwrap(), arrival);
    }
}
