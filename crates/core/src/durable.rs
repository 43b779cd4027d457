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
//! open and finished with their arrivals, the audit log, operators' pauses and the emergency stop.
//! Ephemeral by design: messages in flight and queued deliveries (at-most-once), sessions'
//! connections, breaker states, health figures and operators' commands awaiting a reply.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::command::{AuditEntry, EmergencyStop};
use crate::error::CoreError;
use crate::io::{Time, WatchTarget};
use crate::registry::AgentStatus;
use crate::syncpoint::{Participants, SyncState};

/// One agent as it is kept.
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrivalImage {
    pub agent_id: String,
    pub payload: Bytes,
    pub at: Time,
}

/// One sync point as it is kept. In a [`Change::SyncPoint`] `arrivals` is empty (arrivals are
/// kept one by one, [`Change::Arrival`]); in a [`Restored`] it holds them all in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncPointImage {
    pub namespace: String,
    pub sync_id: String,
    pub participants: Participants,
    /// The resolved participant set (empty for a count).
    pub required: Vec<String>,
    pub created_at: Time,
    pub deadline: Time,
    pub state: SyncState,
    pub finished_at: Option<Time>,
    /// Why a timed-out or failed point failed (the error every waiter got).
    pub failure: Option<CoreError>,
    pub arrivals: Vec<ArrivalImage>,
}

/// An operator's pause of one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseImage {
    pub namespace: String,
    pub agent_id: String,
    pub actor: String,
    pub since: Time,
}

/// One change to durable state, with the value to keep.
#[derive(Clone, Debug, PartialEq)]
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
}

/// Everything the engine is rebuilt from at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    pub agents: Vec<AgentImage>,
    pub sync_points: Vec<SyncPointImage>,
    /// Oldest first; numbering continues after the last.
    pub audit: Vec<AuditEntry>,
    pub pauses: Vec<PauseImage>,
    pub emergency: Option<EmergencyStop>,
}
