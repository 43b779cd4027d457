//! The registry: who is connected, as what, in what status.
//!
//! An agent is known by (namespace, agent id). It carries its role, capabilities, interest patterns,
//! metadata and status, a lease while it has a session, its JSON state and its outbox. Its goodbye
//! (`deregister`) removes it at once; a stream that ends otherwise leaves it its lease, and a lost
//! lease leaves it listed as `lost` (state kept, so it can come back) until `lost_retention` passes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::breaker::Breaker;
use crate::config::{Config, Limits};
use crate::durable::AgentImage;
use crate::error::CoreError;
use crate::io::{ConnId, RegisterRequest, Time, WatchTarget};
use crate::lease::Lease;
use crate::name;
use crate::outbox::Outbox;
use crate::topic::Pattern;

/// What an agent is doing. Agents set every status but `lost`, which only the server sets.
/// Serialized as its [`AgentStatus::as_str`] name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Active,
    Idle,
    Busy,
    Syncing,
    Paused,
    Lost,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Idle => "idle",
            AgentStatus::Busy => "busy",
            AgentStatus::Syncing => "syncing",
            AgentStatus::Paused => "paused",
            AgentStatus::Lost => "lost",
        }
    }

    /// The status named by [`AgentStatus::as_str`].
    pub fn parse(name: &str) -> Option<AgentStatus> {
        use AgentStatus::*;
        [Active, Idle, Busy, Syncing, Paused, Lost].into_iter().find(|s| s.as_str() == name)
    }
}

/// What kind of registry change happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryEventKind {
    /// Already registered when the watch began.
    Snapshot,
    Joined,
    /// Deregistered (its goodbye), or forgotten after being lost.
    Left,
    Status,
    Lost,
    /// The agent's circuit breaker changed state (see `AgentView::breaker`).
    Breaker,
}

/// A read-only view of an agent, for listings and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    pub namespace: String,
    pub agent_id: String,
    pub role: String,
    pub capabilities: Vec<String>,
    pub interests: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub status: AgentStatus,
    pub registered_at: Time,
    pub last_heartbeat: Time,
    pub state_version: u64,
    pub queue_depth: u64,
    pub dropped: u64,
    pub delivered: u64,
    pub breaker: crate::breaker::BreakerState,
    /// How many times its breaker has opened.
    pub breaker_opened: u64,
}

/// Filters for listing agents; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentQuery {
    pub role: Option<String>,
    pub capability: Option<String>,
    pub status: Option<AgentStatus>,
}

impl AgentQuery {
    pub(crate) fn matches(&self, agent: &Agent) -> bool {
        self.role.as_deref().is_none_or(|r| *agent.role == *r)
            && self.capability.as_deref().is_none_or(|c| agent.capabilities.iter().any(|x| x == c))
            && self.status.is_none_or(|s| agent.status == s)
    }
}

/// A live connection to an agent.
#[derive(Debug)]
pub(crate) struct Session {
    /// `None` while the stream is broken and the lease still runs (the agent may resume).
    pub conn: Option<ConnId>,
    pub lease: Lease,
}

/// One registered agent.
#[derive(Debug)]
pub(crate) struct Agent {
    pub id: Arc<str>,
    pub role: Arc<str>,
    pub capabilities: Vec<String>,
    pub interests: Vec<Pattern>,
    pub metadata: BTreeMap<String, String>,
    pub status: AgentStatus,
    pub registered_at: Time,
    pub last_heartbeat: Time,
    /// `None` once lost.
    pub session: Option<Session>,
    /// Presented by a reconnecting client to take the agent's session back (kept while lost).
    pub resume_token: String,
    /// When a lost agent is forgotten.
    pub lost_at: Option<Time>,
    pub state: Value,
    pub state_version: u64,
    pub watches: Vec<WatchTarget>,
    pub outbox: Outbox,
    /// Isolates the agent when deliveries to it keep failing.
    pub breaker: Breaker,
    /// Delivery batches handed to the connection and not yet acknowledged: (last seq, sent at).
    pub unacked: std::collections::VecDeque<(u64, Time)>,
    /// An acknowledgement-deadline timer is pending for this agent.
    pub ack_timer: bool,
    /// Deliveries, acknowledgement latency, signs of life and of progress.
    pub health: crate::health::AgentHealth,
    /// While an operator holds the agent (status `paused`): the status it had chosen, restored on
    /// resume.
    pub status_when_resumed: Option<AgentStatus>,
}

/// The validated parts of a registration.
#[derive(Debug)]
pub(crate) struct Profile {
    pub role: Arc<str>,
    pub capabilities: Vec<String>,
    pub interests: Vec<Pattern>,
    pub metadata: BTreeMap<String, String>,
}

impl Profile {
    /// Validates what a registration declares.
    pub fn from_request(req: &RegisterRequest, limits: &Limits) -> Result<Profile, CoreError> {
        name::validate("agent id", &req.agent_id)?;
        name::validate("role", &req.role)?;
        if req.capabilities.len() > limits.max_capabilities {
            return Err(CoreError::invalid(
                "capabilities",
                format!("{} given; the limit is {}", req.capabilities.len(), limits.max_capabilities),
            ));
        }
        for c in &req.capabilities {
            name::validate("capability", c)?;
        }
        if req.interests.len() > limits.max_interests {
            return Err(CoreError::invalid(
                "interests",
                format!("{} patterns given; the limit is {}", req.interests.len(), limits.max_interests),
            ));
        }
        let interests =
            req.interests.iter().map(|p| Pattern::parse(p, limits.max_topic_len)).collect::<Result<Vec<_>, _>>()?;
        if req.metadata.len() > limits.max_metadata_entries {
            return Err(CoreError::invalid(
                "metadata",
                format!("{} entries; the limit is {}", req.metadata.len(), limits.max_metadata_entries),
            ));
        }
        let mut metadata = BTreeMap::new();
        for (k, v) in &req.metadata {
            if k.is_empty() || k.len() > limits.max_metadata_len || v.len() > limits.max_metadata_len {
                return Err(CoreError::invalid(
                    "metadata",
                    format!(
                        "keys must be 1 to {} bytes and values at most {} bytes (key '{}')",
                        limits.max_metadata_len,
                        limits.max_metadata_len,
                        k.chars().take(32).collect::<String>()
                    ),
                ));
            }
            if metadata.insert(k.clone(), v.clone()).is_some() {
                return Err(CoreError::invalid("metadata", format!("key '{k}' appears twice")));
            }
        }
        let mut capabilities = req.capabilities.clone();
        capabilities.sort();
        capabilities.dedup();
        Ok(Profile { role: req.role.as_str().into(), capabilities, interests, metadata })
    }
}

impl Agent {
    pub fn new(
        id: Arc<str>,
        profile: Profile,
        now: Time,
        session: Session,
        resume_token: String,
        config: &Config,
        jitter_seed: u64,
    ) -> Self {
        let breaker = Breaker::new(now, config.breaker_for(&profile.role, &id), jitter_seed);
        Agent {
            id,
            role: profile.role,
            capabilities: profile.capabilities,
            interests: profile.interests,
            metadata: profile.metadata,
            status: AgentStatus::Active,
            registered_at: now,
            last_heartbeat: now,
            session: Some(session),
            resume_token,
            lost_at: None,
            state: Value::Object(Map::new()),
            state_version: 0,
            watches: Vec::new(),
            outbox: Outbox::new(config.queue_capacity, config.max_in_flight, config.overflow_policy),
            breaker,
            unacked: Default::default(),
            ack_timer: false,
            health: crate::health::AgentHealth::new(now, &config.health),
            status_when_resumed: None,
        }
    }

    /// Rebuilds a kept agent, its profile validated again as at registration. A live agent gets a
    /// session without a connection and a fresh lease (`lease`): time to reconnect and resume. A
    /// lost one counts its retention from `now`.
    pub fn restore(
        image: &AgentImage,
        now: Time,
        lease: Option<Lease>,
        config: &Config,
        jitter_seed: u64,
    ) -> Result<Agent, CoreError> {
        let request = RegisterRequest {
            agent_id: image.agent_id.clone(),
            role: image.role.clone(),
            capabilities: image.capabilities.clone(),
            interests: image.interests.clone(),
            metadata: image.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ..Default::default()
        };
        let profile = Profile::from_request(&request, &config.limits)?;
        let session = Session { conn: None, lease: lease.unwrap_or_else(|| Lease::new(now, 0)) };
        let mut agent = Agent::new(
            image.agent_id.as_str().into(),
            profile,
            now,
            session,
            image.resume_token.clone(),
            config,
            jitter_seed,
        );
        agent.registered_at = image.registered_at;
        agent.state = image.state.clone();
        agent.state_version = image.state_version;
        agent.watches = image.watches.clone();
        agent.status = image.status;
        if lease.is_none() || image.status == AgentStatus::Lost {
            agent.session = None;
            agent.status = AgentStatus::Lost;
            agent.lost_at = Some(now);
        }
        Ok(agent)
    }

    /// The agent as it is kept.
    pub fn image(&self, namespace: &str) -> AgentImage {
        AgentImage {
            namespace: namespace.to_owned(),
            agent_id: self.id.to_string(),
            role: self.role.to_string(),
            capabilities: self.capabilities.clone(),
            interests: self.interest_texts(),
            metadata: self.metadata.clone(),
            status: self.status,
            resume_token: self.resume_token.clone(),
            registered_at: self.registered_at,
            state: self.state.clone(),
            state_version: self.state_version,
            watches: self.watches.clone(),
        }
    }

    /// Takes a new profile (a re-registration keeps state, version and outbox).
    pub fn apply_profile(&mut self, profile: Profile) {
        self.role = profile.role;
        self.capabilities = profile.capabilities;
        self.interests = profile.interests;
        self.metadata = profile.metadata;
    }

    /// The interest patterns as the agent wrote them.
    fn interest_texts(&self) -> Vec<String> {
        self.interests.iter().map(|p| p.as_str().to_owned()).collect()
    }

    pub fn conn(&self) -> Option<ConnId> {
        self.session.as_ref().and_then(|s| s.conn)
    }

    /// The connection to tell that this agent has frames to send, if it must be told now: once,
    /// until the shell has drained them, and never while nothing can go out.
    pub fn announce(&mut self) -> Option<ConnId> {
        if self.outbox.notified || !self.outbox.has_frames() {
            return None;
        }
        let conn = self.conn()?;
        self.outbox.notified = true;
        Some(conn)
    }

    pub fn is_live(&self) -> bool {
        self.session.is_some()
    }

    /// Whether this agent wants messages on `topic`.
    pub fn interested_in(&self, topic: &str) -> bool {
        self.is_live() && self.interests.iter().any(|p| p.matches(topic))
    }

    /// Whether `token` is this agent's resume token.
    pub fn token_matches(&self, token: &str) -> bool {
        !token.is_empty() && token == self.resume_token
    }

    /// Whether a watch by `watcher` covers this agent.
    pub fn watched_by(&self, target: &WatchTarget) -> bool {
        match target {
            WatchTarget::Agent(id) => **id == *self.id,
            WatchTarget::Role(role) => **role == *self.role,
            WatchTarget::All => true,
        }
    }

    pub fn view(&self, namespace: &str) -> AgentView {
        let stats = self.outbox.stats();
        AgentView {
            namespace: namespace.to_owned(),
            agent_id: self.id.to_string(),
            role: self.role.to_string(),
            capabilities: self.capabilities.clone(),
            interests: self.interest_texts(),
            metadata: self.metadata.clone(),
            status: self.status,
            registered_at: self.registered_at,
            last_heartbeat: self.last_heartbeat,
            state_version: self.state_version,
            queue_depth: stats.queued as u64,
            dropped: stats.dropped,
            delivered: stats.delivered,
            breaker: self.breaker.state(),
            breaker_opened: self.breaker.opened_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RegisterRequest {
        RegisterRequest {
            agent_id: "a1".into(),
            role: "trader".into(),
            capabilities: vec!["x".into(), "x".into()],
            interests: vec!["market.>".into()],
            ..Default::default()
        }
    }

    #[test]
    fn profile_validates_every_field() {
        let l = Limits::default();
        let p = Profile::from_request(&req(), &l).unwrap();
        assert_eq!(p.capabilities, vec!["x"], "duplicate capabilities collapse");
        let mut r = req();
        r.interests = vec!["a..b".into()];
        assert!(Profile::from_request(&r, &l).is_err());
        let mut r = req();
        r.role = String::new();
        assert!(Profile::from_request(&r, &l).unwrap_err().to_string().contains("role"));
        let mut r = req();
        r.interests = (0..65).map(|i| format!("t{i}")).collect();
        assert!(Profile::from_request(&r, &l).unwrap_err().to_string().contains("limit is 64"));
        let mut r = req();
        r.metadata = vec![("k".into(), "1".into()), ("k".into(), "2".into())];
        assert!(Profile::from_request(&r, &l).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn queries_filter_by_role_capability_and_status() {
        let config = Config::default();
        let session = Session { conn: None, lease: Lease::new(0, 10) };
        let profile = Profile::from_request(&req(), &config.limits).unwrap();
        let agent = Agent::new("a1".into(), profile, 0, session, "token".into(), &config, 1);
        assert!(AgentQuery::default().matches(&agent));
        assert!(AgentQuery { role: Some("trader".into()), ..Default::default() }.matches(&agent));
        assert!(!AgentQuery { role: Some("risk".into()), ..Default::default() }.matches(&agent));
        assert!(AgentQuery { capability: Some("x".into()), ..Default::default() }.matches(&agent));
        assert!(!AgentQuery { status: Some(AgentStatus::Busy), ..Default::default() }.matches(&agent));
        assert!(agent.interested_in("market.btc"));
        assert!(!agent.interested_in("risk"));
    }
}
