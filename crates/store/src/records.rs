//! The rows the store keeps, the changes that write them, and the snapshot that reads them all.
//!
//! These are plain data, independent of the engine's types: the engine (or the server between
//! them) converts its registry, sync points, audit log and settings into records when it persists
//! them and back when it starts. Fields named `*_json` hold JSON text that the store keeps as it
//! is given; list and map fields are stored as JSON by the store itself. Times are milliseconds on
//! the server's clock, as the engine counts them.

use std::collections::BTreeMap;

/// One registered agent: its profile, status, resume token, state and watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentRecord {
    pub namespace: String,
    pub agent_id: String,
    pub role: String,
    pub capabilities: Vec<String>,
    /// Interest patterns, as the agent registered them.
    pub interests: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// `active`, `idle`, `busy`, `syncing`, `paused` or `lost`.
    pub status: String,
    /// Lets the agent take its session back after a restart.
    pub resume_token: String,
    pub registered_at_ms: u64,
    /// The agent's JSON state document.
    pub state_json: String,
    pub state_version: u64,
    /// The agent's state watches, each serialized by the engine (e.g. `agent:x`, `role:y`, `all`).
    pub watches: Vec<String>,
    /// Held by an operator (schema v2; agents stored by v1 read as not paused).
    pub paused: bool,
}

/// One sync point, without its arrivals (see [`ArrivalRecord`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncPointRecord {
    pub namespace: String,
    pub sync_id: String,
    /// Who must arrive, as the engine serializes it.
    pub participants_json: String,
    /// The resolved set of required agents (empty for count points).
    pub required: Vec<String>,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    /// `waiting`, `completed`, `forced`, `timed_out` or `failed`.
    pub state: String,
    pub finished_at_ms: Option<u64>,
    /// The recorded outcome or failure of a finished point.
    pub result_json: Option<String>,
}

/// One agent's arrival at a sync point. `position` is its place in the arrival order (0 first);
/// an agent arrives at a point at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArrivalRecord {
    pub namespace: String,
    pub sync_id: String,
    pub agent_id: String,
    pub position: u32,
    pub payload: Vec<u8>,
    pub at_ms: u64,
}

/// One entry of the operators' audit log (schema v2). `seq` is the engine's audit sequence number;
/// it must grow with every entry and never repeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub command: String,
    pub command_id: Option<u64>,
    /// Empty for server-wide actions.
    pub namespace: String,
    /// The target agent; empty for server-wide actions.
    pub target: String,
    pub params: String,
    pub outcome: String,
    pub detail: String,
}

/// One setting (circuit breaker settings, per-namespace configuration, an emergency stop...): a key
/// and its JSON value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigRecord {
    pub key: String,
    pub value_json: String,
}

/// One vote (schema v3), without its ballots (see [`BallotRecord`]). The vote's description,
/// state and outcome are the engine's JSON, kept as it is given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoteRecord {
    pub namespace: String,
    pub vote_id: String,
    pub vote_json: String,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

/// One ballot of a vote (schema v3). `position` is its place among the vote's ballots (0 first);
/// an agent casts at most one ballot per vote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BallotRecord {
    pub namespace: String,
    pub vote_id: String,
    pub agent_id: String,
    pub position: u32,
    pub ballot_json: String,
    pub at_ms: u64,
}

/// One shared context key (schema v4): its lifetime, as the engine's JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextKeyRecord {
    pub namespace: String,
    pub key: String,
    pub meta_json: String,
}

/// One retained version of a context key (schema v4), as the engine's JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextVersionRecord {
    pub namespace: String,
    pub key: String,
    pub version: u64,
    pub revision_json: String,
}

/// A context key as loaded, with its versions oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedContextKey {
    pub key: ContextKeyRecord,
    pub versions: Vec<ContextVersionRecord>,
}

/// One task (schema v5), whole, as the engine's JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    pub namespace: String,
    pub task_id: String,
    /// Its submission number in the namespace.
    pub seq: u64,
    pub task_json: String,
}

/// One execution trace (schema v6): its metadata as the engine's JSON, and its output's bytes
/// when they are kept inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceRecord {
    pub namespace: String,
    pub id: String,
    pub meta_json: String,
    pub inline: Option<Vec<u8>>,
}

/// One tick round series (schema v8), whole, as the engine's JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundSeriesRecord {
    pub namespace: String,
    pub name: String,
    pub series_json: String,
}
/// One kept message of a store-kept topic (schema v7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryMessageRecord {
    pub namespace: String,
    pub topic: String,
    pub seq: u64,
    pub at_ms: u64,
    pub publisher: String,
    pub content_type: String,
    pub payload: Vec<u8>,
}

/// One change to durable state. A batch of changes is applied in one transaction by
/// [`Store::apply`](crate::Store::apply), in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Inserts the agent or replaces every field of it.
    UpsertAgent(AgentRecord),
    /// The hot path: a new state document and version for a stored agent. Fails with
    /// [`StoreError::Missing`](crate::StoreError::Missing) if the agent is not stored.
    UpdateState { namespace: String, agent_id: String, state_json: String, state_version: u64 },
    /// A stored agent's status and pause flag. Fails with `Missing` if the agent is not stored.
    SetAgentStatus { namespace: String, agent_id: String, status: String, paused: bool },
    /// Forgets the agent; nothing happens if it is not stored.
    DeleteAgent { namespace: String, agent_id: String },
    /// Inserts the sync point or replaces its fields, keeping its arrivals.
    UpsertSyncPoint(SyncPointRecord),
    /// Records an arrival at a stored sync point.
    AddArrival(ArrivalRecord),
    /// Forgets the sync point and its arrivals; nothing happens if it is not stored.
    DeleteSyncPoint { namespace: String, sync_id: String },
    /// Appends to the audit log; the oldest entries beyond the store's audit capacity are dropped in
    /// the same transaction.
    AppendAudit(AuditRecord),
    /// Sets a setting.
    SetConfig(ConfigRecord),
    /// Removes a setting; nothing happens if it is not stored.
    DeleteConfig { key: String },
    /// Inserts the vote or replaces its fields, keeping its ballots.
    UpsertVote(VoteRecord),
    /// Records a ballot of a stored vote.
    AddBallot(BallotRecord),
    /// Forgets the vote and its ballots; nothing happens if it is not stored.
    DeleteVote { namespace: String, vote_id: String },
    /// A context key's new version: inserts or updates the key, adds the version, and forgets the
    /// key's versions older than `oldest_retained`.
    PutContextVersion { key: ContextKeyRecord, version: ContextVersionRecord, oldest_retained: u64 },
    /// Forgets a context key and its versions (nothing happens if it is not stored), and records
    /// `version`, the deletion's, as its namespace's last if it is higher.
    DeleteContextKey { namespace: String, key: String, version: u64 },
    /// Inserts or replaces a task, and records its submission number as its namespace's last if
    /// it is higher.
    PutTask(TaskRecord),
    /// Forgets a task; nothing happens if it is not stored.
    DeleteTask { namespace: String, task_id: String },
    /// Inserts the trace or replaces it.
    PutTrace(TraceRecord),
    /// Forgets a trace; nothing happens if it is not stored.
    DeleteTrace { namespace: String, id: String },
    /// Inserts or replaces a round series.
    PutRoundSeries(RoundSeriesRecord),
    /// Forgets a round series; nothing happens if it is not stored.
    DeleteRoundSeries { namespace: String, name: String },
    // --- Topic history (schema v7) ---
    /// Keeps a message of a store-kept topic, and its seq as the topic's last if it is higher.
    PutHistoryMessage(HistoryMessageRecord),
    /// Forgets a topic's messages numbered below `before_seq` (its last seq stays).
    TrimHistory { namespace: String, topic: String, before_seq: u64 },
    /// Forgets a topic, its last seq and its messages.
    DeleteHistoryTopic { namespace: String, topic: String },
    // --- sync monitor (schema v9) ---
    /// Inserts or replaces a synced system.
    PutSystem { name: String, system_json: String },
    /// Keeps event `seq` of `system`, and forgets the system's events numbered `seq - keep` and
    /// below.
    PutSystemEvent { system: String, seq: u64, event_json: String, keep: u64 },
    /// Inserts or replaces a system's trends (schema v10).
    PutSystemTrend { system: String, trend_json: String },
    /// Inserts or replaces a dependency with its weight (as text).
    PutDependency { upstream: String, downstream: String, weight: String },
    /// Forgets a dependency; nothing happens if it is not stored.
    DeleteDependency { upstream: String, downstream: String },
    /// Inserts or replaces an incident; a resolved one also forgets the resolved incidents beyond
    /// the newest `keep` (at least 1: the highest id stays).
    PutIncident { id: u64, resolved: bool, incident_json: String, keep: u64 },
}

/// A vote as loaded, with its ballots in the order cast.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedVote {
    pub vote: VoteRecord,
    pub ballots: Vec<BallotRecord>,
}

/// A sync point as loaded, with its arrivals in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedSyncPoint {
    pub point: SyncPointRecord,
    pub arrivals: Vec<ArrivalRecord>,
}

/// Everything the store holds, read in one transaction: what the engine rebuilds itself from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Ordered by namespace, then agent id.
    pub agents: Vec<AgentRecord>,
    /// Ordered by namespace, then sync id.
    pub sync_points: Vec<LoadedSyncPoint>,
    /// The newest entries kept, oldest first. The engine continues numbering after the last `seq`.
    pub audit: Vec<AuditRecord>,
    /// Ordered by key.
    pub config: Vec<ConfigRecord>,
    /// Ordered by namespace, then vote id (schema v3).
    pub votes: Vec<LoadedVote>,
    /// Ordered by namespace, then key (schema v4).
    pub context: Vec<LoadedContextKey>,
    /// Each namespace's last context version recorded by a deletion (schema v4).
    pub context_namespaces: Vec<(String, u64)>,
    /// Ordered by namespace, then submission number (schema v5).
    pub tasks: Vec<TaskRecord>,
    /// Each namespace's last task submission number (schema v5).
    pub task_namespaces: Vec<(String, u64)>,
    /// Ordered by namespace, then id (schema v6).
    pub traces: Vec<TraceRecord>,
    /// Ordered by namespace, then name (schema v8).
    pub round_series: Vec<RoundSeriesRecord>,
    /// Each store-kept topic's last sequence number: (namespace, topic, last seq), ordered (schema v7).
    pub history_topics: Vec<(String, String, u64)>,
    /// Ordered by namespace, topic, then seq (schema v7).
    pub history_messages: Vec<HistoryMessageRecord>,
    /// Synced systems: (name, system JSON), ordered by name (schema v9).
    pub systems: Vec<(String, String)>,
    /// Their events: (system, seq, event JSON), ordered by system then seq (schema v9).
    pub system_events: Vec<(String, u64, String)>,
    /// Dependencies: (upstream, downstream, weight text), ordered (schema v9).
    pub dependencies: Vec<(String, String, String)>,
    /// Incidents as JSON, ordered by id (schema v9).
    pub incidents: Vec<String>,
    /// Systems' trends: (system, trend JSON), ordered by system (schema v10).
    pub system_trends: Vec<(String, String)>,
}
