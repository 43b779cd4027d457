//! Engine settings and limits. Every table and queue in the engine is bounded by one of these; the
//! defaults are documented in docs/PROTOCOL.md.
//!
//! [`Config`] is the one description of these settings: it deserializes straight from the server's
//! TOML file (every field is optional, a missing one keeps its default, an unknown one is refused),
//! and it serializes to the JSON the server records in its data directory. Adding a setting means
//! adding a field here (with its default and doc comment) and nothing else.

/// What happens when an agent's outbound message queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Drop the oldest queued message, count it, and tell the agent how many it missed.
    #[default]
    #[serde(alias = "drop-oldest")]
    DropOldest,
    /// End the agent's session: it is too slow to be served.
    Disconnect,
}

/// Size and count limits. A request that would exceed one is refused with `ResourceExhausted`
/// (counts) or `InvalidArgument` (sizes), never truncated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest published payload, in bytes.
    pub max_payload_bytes: usize,
    /// Longest topic or pattern, in bytes.
    pub max_topic_len: usize,
    /// Most interest patterns one agent may hold.
    pub max_interests: usize,
    /// Most capabilities one agent may declare.
    pub max_capabilities: usize,
    /// Most metadata entries one agent may carry.
    pub max_metadata_entries: usize,
    /// Longest metadata key or value, in bytes.
    pub max_metadata_len: usize,
    /// Most agents (live or lost) in one namespace.
    pub max_agents_per_namespace: usize,
    /// Most namespaces in use (holding agents, live or lost, or sync points). A namespace that
    /// holds nothing any more is forgotten and stops counting.
    pub max_namespaces: usize,
    /// Most sync points waiting at once in one namespace.
    pub max_open_sync_points: usize,
    /// Most finished sync points retained for diagnosis in one namespace (oldest evicted first).
    pub max_retained_sync_points: usize,
    /// Most participants in one sync point.
    pub max_sync_participants: usize,
    /// Largest payload an agent may bring to a sync point, in bytes.
    pub max_sync_payload_bytes: usize,
    /// Longest timeout a sync point may ask for, in milliseconds.
    pub max_sync_timeout_ms: u64,
    /// Largest agent state (serialized JSON), in bytes.
    pub max_state_bytes: usize,
    /// Largest state delta (JSON text), in bytes.
    pub max_delta_bytes: usize,
    /// Most state watches one agent may hold.
    pub max_watches: usize,
    /// Most registry events queued for one registry watcher (behind its snapshot) before it is
    /// disconnected.
    pub max_registry_backlog: usize,
    /// Most bytes of registry events (their approximate encoded size) queued for one registry
    /// watcher (behind its snapshot) before it is disconnected. Events are shared by all watchers,
    /// but each watcher's queue counts them in full.
    pub max_registry_backlog_bytes: usize,
    /// Most registry watchers (`WatchRegistry` streams) over every namespace.
    pub max_registry_watchers: usize,
    /// Most registry watchers of one namespace.
    pub max_registry_watchers_per_namespace: usize,
    /// Most replies and control frames queued for one agent before it is disconnected.
    pub max_control_backlog: usize,
    /// Longest timeout an agent request (request/reply) may ask for, in milliseconds.
    pub max_request_timeout_ms: u64,
    /// Most agent requests one agent may have waiting for an answer at once.
    pub max_pending_requests_per_agent: usize,
    /// Most agent requests waiting for an answer at once, over every namespace.
    pub max_pending_requests: usize,
    /// Most votes open at once in one namespace.
    pub max_open_votes: usize,
    /// Most finished votes retained for status and diagnosis in one namespace (oldest evicted
    /// first; each is kept `sync_retention_ms` at most).
    pub max_retained_votes: usize,
    /// Most options one vote may list; also the most groups an outcome's tally carries, and the
    /// most veto roles.
    pub max_vote_options: usize,
    /// Longest vote option or key field name, in bytes.
    pub max_vote_option_bytes: usize,
    /// Largest recommendation, abstention reason or question, in bytes.
    pub max_vote_ballot_bytes: usize,
    /// Largest array one member may bring to a collective, in bytes (elements × element size).
    pub max_collective_bytes: u64,
    /// Most collectives gathering or transferring at once in one namespace.
    pub max_open_collectives: usize,
    /// Most replica groups in one namespace.
    pub max_groups: usize,
    /// Most members of one replica group.
    pub max_group_members: usize,
    /// Largest state blob one replica group may publish, in bytes.
    pub max_group_state_bytes: u64,
    /// Bytes of replica group state the server holds at once: every group's current version and
    /// every publish in progress, over every namespace (the server keeps them in memory).
    pub max_group_state_total_bytes: u64,
}

/// Bytes one gRPC message may take beyond its largest payload or delta (ids, topic, metadata,
/// field tags, framing).
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

impl Limits {
    /// The largest gRPC message the server accepts or sends on a session: the largest payload,
    /// state delta or state (a watcher may be sent a whole state) plus [`MESSAGE_OVERHEAD`]. The
    /// transport cannot skip a larger client message, so one ends its stream (as a broken stream:
    /// the agent keeps its lease).
    pub fn max_message_bytes(&self) -> usize {
        self.frame_bytes().saturating_add(MESSAGE_OVERHEAD)
    }

    /// The bytes of items (deliveries with their topic and names, state changes with their JSON)
    /// one frame to an agent may carry: its largest single item, so that whatever is queued within
    /// the limits goes out in frames under [`Limits::max_message_bytes`] (the rest of the message
    /// cap is left for the frame's own fields).
    pub fn frame_bytes(&self) -> usize {
        self.max_payload_bytes.max(self.max_delta_bytes).max(self.max_state_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_topic_len: 256,
            max_interests: 64,
            max_capabilities: 64,
            max_metadata_entries: 64,
            max_metadata_len: 1024,
            max_agents_per_namespace: 100_000,
            max_namespaces: 1024,
            max_open_sync_points: 10_000,
            max_retained_sync_points: 10_000,
            max_sync_participants: 10_000,
            max_sync_payload_bytes: 64 * 1024,
            max_sync_timeout_ms: 24 * 3600 * 1000,
            max_state_bytes: 1024 * 1024,
            max_delta_bytes: 256 * 1024,
            max_watches: 1024,
            max_registry_backlog: 65_536,
            max_registry_backlog_bytes: 16 * 1024 * 1024,
            max_registry_watchers: 1024,
            max_registry_watchers_per_namespace: 256,
            max_control_backlog: 65_536,
            max_request_timeout_ms: 10 * 60 * 1000,
            max_pending_requests_per_agent: 1024,
            max_pending_requests: 65_536,
            max_open_votes: 256,
            max_retained_votes: 256,
            max_vote_options: 32,
            max_vote_option_bytes: 128,
            max_vote_ballot_bytes: 4096,
            max_collective_bytes: 1024 * 1024 * 1024,
            max_open_collectives: 1024,
            max_groups: 64,
            max_group_members: 1024,
            max_group_state_bytes: 256 * 1024 * 1024,
            max_group_state_total_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Everything that shapes the engine's behaviour.
///
/// Deserializing fills every missing field (at any depth) from [`Config::default`]; unknown fields
/// are refused. [`Config::validate`] then checks the values make sense together.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How often clients must heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How many heartbeat intervals may pass without a sign of life before an agent is `lost`.
    pub lease_intervals: u32,
    /// How long a lost agent stays listed (status `lost`) before it is forgotten, in milliseconds.
    pub lost_retention_ms: u64,
    /// Capacity of each agent's outbound message queue.
    pub queue_capacity: usize,
    /// What happens when that queue is full.
    pub overflow_policy: OverflowPolicy,
    /// Most messages sent to an agent and not yet acknowledged; the rest wait in its queue (under
    /// the overflow policy) for acknowledgements to make room. Bounds what a slow reader has
    /// waiting in transport buffers, and so the age of what it reads.
    pub max_in_flight: usize,
    /// Timeout of a sync point whose creator asked for none, in milliseconds.
    pub default_sync_timeout_ms: u64,
    /// How long a finished sync point is kept for diagnosis, in milliseconds.
    pub sync_retention_ms: u64,
    /// Timeout of an agent request whose requester asked for none, in milliseconds.
    pub default_request_timeout_ms: u64,
    /// Size and count limits.
    pub limits: Limits,
    /// Operator commands: in flight, timeouts, sizes, audit log.
    pub commands: crate::command::CommandSettings,
    /// How agent health is assessed, and how often system health is sampled.
    pub health: crate::health::HealthSettings,
    /// Circuit breakers: the global settings...
    pub breaker: crate::breaker::BreakerSettings,
    /// ...changed for every agent of a role...
    pub breaker_roles: std::collections::BTreeMap<String, crate::breaker::BreakerOverrides>,
    /// ...and for single agents (by id, in any namespace).
    pub breaker_agents: std::collections::BTreeMap<String, crate::breaker::BreakerOverrides>,
    /// The largest share of a namespace's live agents whose breakers may be open or half-open at
    /// once, in percent (at least one agent may always be isolated). A failure that would isolate
    /// one more is counted but does not open the breaker.
    pub breaker_max_isolated_percent: u32,
    /// Shared context: key, value and history limits.
    pub context: crate::context::ContextSettings,
    /// Task handoff: sizes, counts and defaults.
    pub tasks: crate::task::TaskSettings,
    /// Execution traces: output, input and store limits, retention.
    pub traces: crate::trace::TraceSettings,
    /// Tick rounds: sizes, counts, retention.
    pub rounds: crate::round::RoundSettings,
    /// Event-time streams: tick controllers and latency buffers, their limits and definitions.
    pub streams: crate::streams::StreamSettings,
    /// Topic history: retention rules by topic pattern and their memory budget.
    pub history: crate::history::HistorySettings,
    /// Intake: JSON Schemas and categorisation routes by topic pattern, and their limits.
    pub intake: crate::intake::IntakeSettings,
    /// The sync monitor: limits on systems, dependencies, events and incidents.
    pub systems: crate::systems::SystemsSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval_ms: 1000,
            lease_intervals: 3,
            lost_retention_ms: 5 * 60 * 1000,
            queue_capacity: 1024,
            max_in_flight: 2048,
            overflow_policy: OverflowPolicy::DropOldest,
            default_sync_timeout_ms: 30_000,
            sync_retention_ms: 10 * 60 * 1000,
            default_request_timeout_ms: 30_000,
            limits: Limits::default(),
            commands: crate::command::CommandSettings::default(),
            health: crate::health::HealthSettings::default(),
            breaker: crate::breaker::BreakerSettings::default(),
            breaker_roles: Default::default(),
            breaker_agents: Default::default(),
            breaker_max_isolated_percent: 10,
            context: crate::context::ContextSettings::default(),
            tasks: crate::task::TaskSettings::default(),
            traces: crate::trace::TraceSettings::default(),
            rounds: crate::round::RoundSettings::default(),
            streams: crate::streams::StreamSettings::default(),
            history: crate::history::HistorySettings::default(),
            intake: crate::intake::IntakeSettings::default(),
            systems: crate::systems::SystemsSettings::default(),
        }
    }
}

impl Config {
    /// The breaker settings of an agent: global, then its role's, then its own overrides.
    pub fn breaker_for(&self, role: &str, agent: &str) -> crate::breaker::BreakerSettings {
        crate::breaker::resolve(&self.breaker, self.breaker_roles.get(role), self.breaker_agents.get(agent))
    }

    /// How long an agent may stay silent before it is lost.
    pub fn lease_ms(&self) -> u64 {
        self.heartbeat_interval_ms.saturating_mul(u64::from(self.lease_intervals))
    }

    /// How far behind the server must fall before the shell reports it as stalled
    /// ([`Input::ServerStalled`](crate::Input::ServerStalled)): half the shortest time a client is
    /// given, the heartbeat interval or any acknowledgement timeout. Below that, the server's lag
    /// alone cannot make a client miss either; the report costs a pass over every agent, so it is
    /// not made for every late turn.
    pub fn stall_threshold_ms(&self) -> u64 {
        let ack_timeouts = std::iter::once(self.breaker.timeout_per_agent_ms).chain(
            self.breaker_roles.values().chain(self.breaker_agents.values()).filter_map(|o| o.timeout_per_agent_ms),
        );
        (ack_timeouts.fold(self.heartbeat_interval_ms, u64::min) / 2).max(1)
    }

    /// Checks the settings make sense together; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval_ms == 0 {
            return Err("heartbeat_interval_ms must be at least 1".into());
        }
        if self.lease_intervals == 0 {
            return Err("lease_intervals must be at least 1".into());
        }
        if !(1..=100).contains(&self.breaker_max_isolated_percent) {
            return Err("breaker_max_isolated_percent must be between 1 and 100".into());
        }
        if self.queue_capacity == 0 {
            return Err("queue_capacity must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        self.commands.validate()?;
        self.context.validate().map_err(|e| format!("context: {e}"))?;
        self.tasks.validate().map_err(|e| format!("tasks: {e}"))?;
        self.rounds.validate().map_err(|e| format!("rounds: {e}"))?;
        self.traces.validate().map_err(|e| format!("traces: {e}"))?;
        self.streams.validate(&self.limits).map_err(|e| format!("streams: {e}"))?;
        self.history.validate(self.limits.max_topic_len).map_err(|e| format!("history.{e}"))?;
        self.intake.validate(self.limits.max_topic_len).map_err(|e| format!("intake.{e}"))?;
        self.systems.validate().map_err(|e| format!("systems.{e}"))?;
        self.breaker.validate().map_err(|e| format!("breaker: {e}"))?;
        self.health.validate().map_err(|e| format!("health: {e}"))?;
        for (kind, map) in [("role", &self.breaker_roles), ("agent", &self.breaker_agents)] {
            for (name, overrides) in map {
                overrides
                    .apply_to(&self.breaker)
                    .validate()
                    .map_err(|e| format!("breaker for {kind} '{name}': {e}"))?;
            }
        }
        if self.default_sync_timeout_ms == 0 || self.default_sync_timeout_ms > self.limits.max_sync_timeout_ms {
            return Err(format!(
                "default_sync_timeout_ms must be between 1 and max_sync_timeout_ms ({})",
                self.limits.max_sync_timeout_ms
            ));
        }
        if self.default_request_timeout_ms == 0 || self.default_request_timeout_ms > self.limits.max_request_timeout_ms
        {
            return Err(format!(
                "default_request_timeout_ms must be between 1 and max_request_timeout_ms ({})",
                self.limits.max_request_timeout_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_cap_follows_the_largest_payload_delta_or_state() {
        let mut limits = Limits::default();
        assert_eq!(limits.max_message_bytes(), 1024 * 1024 + MESSAGE_OVERHEAD);
        limits.max_payload_bytes = 10;
        assert_eq!(limits.max_message_bytes(), limits.max_state_bytes + MESSAGE_OVERHEAD);
        limits.max_state_bytes = 20;
        assert_eq!(limits.max_message_bytes(), limits.max_delta_bytes + MESSAGE_OVERHEAD);
        limits.max_payload_bytes = 4 << 20;
        assert_eq!(limits.frame_bytes(), 4 << 20);
    }
}
