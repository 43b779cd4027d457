//! The rules of the command interface: who is paused, which commands to agents are in flight, and
//! the audit log of everything operators did.
//!
//! * **Pausing.** An operator pauses one agent, or every agent at once with an emergency stop. A
//!   paused agent may still heartbeat, acknowledge, read, watch, answer commands and leave; it may
//!   not act on the others: publishing, updating its state and arriving at a sync point ([`Gated`])
//!   are refused with a [`Refusal`] that says why and how to lift it. Its deliveries are held (the
//!   engine keeps them in its outbox) until it is resumed. An emergency stop holds until
//!   `resume_all`, which also lifts every individual pause; resuming one agent during an emergency
//!   stop lifts its own pause, but it stays stopped.
//! * **Commands.** An operator sends a named command with JSON parameters (an object, or null) to
//!   an agent. The table gives it an id and keeps it until the agent replies (a result or an
//!   error), its timeout passes, or the agent goes away: each ends it with a distinct
//!   [`CommandOutcome`]. A command to an unknown agent, with a bad name or parameters, or beyond
//!   `max_in_flight` is refused at once. Operators may command paused agents.
//! * **Audit.** Every operator action and every command's outcome, refusals included, is an
//!   [`AuditEntry`] in a ring of `audit_capacity` entries: when it is full the oldest entry goes and
//!   is counted, never silently.
//!
//! One [`ControlPlane`] serves the whole server: emergency stops cover every namespace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::durable::PauseImage;
use crate::error::CoreError;
use crate::io::Time;
use crate::name;

/// Limits of the command interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandSettings {
    /// Most commands waiting for a reply at once, over all agents.
    pub max_in_flight: usize,
    /// Timeout of a command sent without one, in milliseconds.
    pub default_timeout_ms: u64,
    /// Longest timeout a command may ask for, in milliseconds.
    pub max_timeout_ms: u64,
    /// Largest parameters (JSON text), in bytes.
    pub max_params_bytes: usize,
    /// Largest result an agent may reply with (JSON text), in bytes.
    pub max_result_bytes: usize,
    /// Longest error message an agent may reply with, in bytes.
    pub max_error_bytes: usize,
    /// Entries the audit log keeps (the oldest goes first).
    pub audit_capacity: usize,
    /// Longest text (parameters, results, reasons) kept in an audit entry, in characters.
    pub audit_summary_chars: usize,
}

impl Default for CommandSettings {
    fn default() -> Self {
        CommandSettings {
            max_in_flight: 1024,
            default_timeout_ms: 30_000,
            max_timeout_ms: 10 * 60 * 1000,
            max_params_bytes: 64 * 1024,
            max_result_bytes: 1024 * 1024,
            max_error_bytes: 4096,
            audit_capacity: 10_000,
            audit_summary_chars: 200,
        }
    }
}

impl CommandSettings {
    /// Checks the settings make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 || self.audit_capacity == 0 {
            return Err("max_in_flight and audit_capacity must be at least 1".into());
        }
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return Err(format!("default_timeout_ms must be between 1 and max_timeout_ms ({})", self.max_timeout_ms));
        }
        Ok(())
    }
}

/// What a paused agent may not do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gated {
    Publish,
    UpdateState,
    SyncArrive,
    /// Ask another agent for an answer (request/reply).
    Request,
    /// Open a vote or cast a ballot.
    Vote,
    /// Write shared context.
    Context,
    /// Submit tasks, or ask for or claim work.
    Tasks,
    /// Record traces, or claim one to compute.
    Traces,
}

impl Gated {
    pub fn as_str(self) -> &'static str {
        match self {
            Gated::Publish => "publish",
            Gated::UpdateState => "update its state",
            Gated::SyncArrive => "arrive at a sync point",
            Gated::Request => "send requests",
            Gated::Vote => "open votes or cast ballots",
            Gated::Context => "write shared context",
            Gated::Tasks => "submit or take tasks",
            Gated::Traces => "record or claim traces",
        }
    }
}

/// Who stopped everything, when and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmergencyStop {
    pub actor: String,
    pub since: Time,
    pub reason: String,
}

/// Why an agent is paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseCause {
    /// An operator paused this agent.
    Paused { actor: String, since: Time },
    /// An emergency stop pauses every agent.
    EmergencyStop(EmergencyStop),
}

/// A paused agent's action refused. The engine's `CoreError::Paused(Refusal)` should display it
/// as is and map to `FailedPrecondition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub namespace: String,
    pub agent: String,
    pub action: Gated,
    pub cause: PauseCause,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (agent, action) = (&self.agent, self.action.as_str());
        match &self.cause {
            PauseCause::Paused { actor, since } => write!(
                f,
                "agent '{agent}' may not {action}: operator '{actor}' paused it at {since} ms; messages for it \
                 are held until an operator resumes it (`resume_agent {agent}`)"
            ),
            PauseCause::EmergencyStop(EmergencyStop { actor, since, reason }) => write!(
                f,
                "agent '{agent}' may not {action}: operator '{actor}' ordered an emergency stop at {since} ms \
                 ({reason}); every agent is paused, and publishes, state updates and sync arrivals are refused \
                 until an operator runs `resume_all`"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// What resuming one agent did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// It was paused and runs again: release its held deliveries.
    Resumed,
    /// It was not paused.
    WasNotPaused,
    /// Its own pause is lifted, but an emergency stop still holds it.
    StillStopped,
}

/// What `resume_all` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumedAll {
    /// An emergency stop was lifted: every agent runs again.
    pub emergency_lifted: bool,
    /// Agents whose own pause was lifted, as (namespace, agent).
    pub agents: Vec<(Arc<str>, Arc<str>)>,
}

/// The id the table gives a command, unique for the life of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub u64);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An operator's command for an agent, as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandRequest {
    /// An opaque number the caller uses to route the outcome back (the shell's reply handle).
    pub origin: u64,
    /// Who sends it, for the audit log.
    pub actor: String,
    /// The target's namespace; empty means the default one.
    pub namespace: String,
    pub agent: String,
    /// The command's name (a valid [`name`]).
    pub command: String,
    /// Parameters as JSON text: an object, `null`, or empty (meaning `null`).
    pub params_json: String,
    /// 0 means `default_timeout_ms`.
    pub timeout_ms: u64,
}

/// A command waiting for its agent's reply.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingCommand {
    pub id: CommandId,
    pub origin: u64,
    pub actor: String,
    pub namespace: Arc<str>,
    pub agent: Arc<str>,
    pub command: String,
    /// An object or null.
    pub params: Value,
    pub sent_at: Time,
    pub deadline: Time,
}

/// An agent's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CommandReply {
    /// The command succeeded with this result (JSON text; empty means `null`).
    Result(String),
    /// The command failed; the agent says why.
    Error(String),
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandOutcome {
    /// The agent carried it out.
    Completed(Value),
    /// The agent answered with an error.
    AgentError(String),
    /// No reply within the timeout.
    TimedOut { waited_ms: u64 },
    /// The agent's session ended before it replied.
    AgentGone { reason: String },
}

/// A command that ended, for the engine to answer its origin (and tell the agent's breaker).
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub command: PendingCommand,
    pub outcome: CommandOutcome,
    pub at: Time,
}

/// How an audited action ended (serialized as its [`AuditOutcome::as_str`] name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done (an operator action), or completed by the agent (a command).
    Ok,
    /// Refused before anything happened (invalid, over a limit).
    Refused,
    /// The target agent is not registered.
    UnknownAgent,
    AgentError,
    TimedOut,
    AgentGone,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Refused => "refused",
            AuditOutcome::UnknownAgent => "unknown_agent",
            AuditOutcome::AgentError => "agent_error",
            AuditOutcome::TimedOut => "timed_out",
            AuditOutcome::AgentGone => "agent_gone",
        }
    }

    /// The outcome named by [`AuditOutcome::as_str`].
    pub fn parse(name: &str) -> Option<AuditOutcome> {
        use AuditOutcome::*;
        [Ok, Refused, UnknownAgent, AgentError, TimedOut, AgentGone].into_iter().find(|o| o.as_str() == name)
    }
}

/// One line of the audit log. Texts are cut to `audit_summary_chars` (ending in `…`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Position in the log since the server started; a gap means entries were dropped.
    pub seq: u64,
    pub at: Time,
    pub actor: String,
    /// `pause_agent`, `emergency_stop`..., or the name of a command sent to an agent.
    pub command: String,
    /// Set for commands sent to an agent.
    pub command_id: Option<CommandId>,
    /// The target's namespace; empty for server-wide actions.
    pub namespace: String,
    /// The target agent; empty for server-wide actions.
    pub target: String,
    pub params: String,
    pub outcome: AuditOutcome,
    /// The result, the error, or what happened.
    pub detail: String,
}

impl AuditEntry {
    /// An entry for `actor` doing `command` at `at`, with nothing else said yet.
    pub fn new(at: Time, actor: &str, command: &str, outcome: AuditOutcome) -> Self {
        AuditEntry {
            seq: 0,
            at,
            actor: actor.to_owned(),
            command: command.to_owned(),
            command_id: None,
            namespace: String::new(),
            target: String::new(),
            params: String::new(),
            outcome,
            detail: String::new(),
        }
    }

    pub fn target(mut self, namespace: &str, agent: &str) -> Self {
        self.namespace = namespace.to_owned();
        self.target = agent.to_owned();
        self
    }

    pub fn params(mut self, params: impl Into<String>) -> Self {
        self.params = params.into();
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// `text` cut to `max_chars` characters, marked with `…` when cut.
pub fn summarize(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some(_) => {
            let keep: String = text.chars().take(max_chars.saturating_sub(1)).collect();
            format!("{keep}…")
        }
    }
}

/// The last `capacity` audit entries.
#[derive(Clone, Debug)]
pub struct AuditLog {
    capacity: usize,
    summary_chars: usize,
    entries: VecDeque<AuditEntry>,
    next_seq: u64,
    dropped: u64,
}

impl AuditLog {
    pub fn new(capacity: usize, summary_chars: usize) -> Self {
        AuditLog { capacity: capacity.max(1), summary_chars, entries: VecDeque::new(), next_seq: 1, dropped: 0 }
    }

    /// Appends `entry` (its texts cut to size), dropping and counting the oldest when full.
    /// Returns the entry's sequence number.
    pub fn record(&mut self, mut entry: AuditEntry) -> u64 {
        let max = self.summary_chars;
        for text in [&mut entry.actor, &mut entry.command, &mut entry.target, &mut entry.params, &mut entry.detail] {
            if text.len() > max {
                *text = summarize(text, max);
            }
        }
        entry.seq = self.next_seq;
        self.next_seq += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
        self.next_seq - 1
    }

    /// Takes back entries kept from an earlier run (their numbers unchanged, put in order);
    /// numbering continues after the last of them.
    pub fn restore(&mut self, mut entries: Vec<AuditEntry>) {
        // The log stays in sequence order, which `since` relies on.
        entries.sort_by_key(|e| e.seq);
        for entry in entries {
            self.next_seq = self.next_seq.max(entry.seq + 1);
            if self.entries.len() == self.capacity {
                self.entries.pop_front();
            }
            self.entries.push_back(entry);
        }
    }

    /// The sequence number of the newest entry (0 when none was ever recorded).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &AuditEntry> {
        self.entries.iter()
    }

    /// Entries after sequence number `seq` (for a reader catching up).
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &AuditEntry> {
        // Found by bisection: the store and the engine ask every turn, and a scan of a full log
        // (10,000 entries by default) was most of a turn's time under a steady load.
        let first = self.entries.partition_point(|e| e.seq <= seq);
        self.entries.range(first..)
    }

    /// Entries dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Who paused one agent, and when.
#[derive(Clone, Debug)]
struct Pause {
    actor: String,
    since: Time,
}

/// Pauses, pending commands and the audit log of one server.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    settings: CommandSettings,
    emergency: Option<EmergencyStop>,
    /// namespace → agent → its own pause.
    paused: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Pause>>,
    pending: BTreeMap<CommandId, PendingCommand>,
    deadlines: BTreeSet<(Time, CommandId)>,
    next_id: u64,
    audit: AuditLog,
}

impl ControlPlane {
    /// `settings` must have passed [`CommandSettings::validate`].
    pub fn new(settings: CommandSettings) -> Self {
        let audit = AuditLog::new(settings.audit_capacity, settings.audit_summary_chars);
        ControlPlane {
            settings,
            emergency: None,
            paused: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_id: 1,
            audit,
        }
    }

    pub fn settings(&self) -> &CommandSettings {
        &self.settings
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Records an operator action the engine carried out itself (`status`, `health`, `restart`...).
    pub fn record(&mut self, entry: AuditEntry) -> u64 {
        self.audit.record(entry)
    }

    // ----- pausing -----

    /// Checks the target of a pause or resume; refusals are audited.
    fn pause_target<'a>(
        &mut self,
        now: Time,
        actor: &str,
        command: &str,
        namespace: &'a str,
        agent: &str,
        is_registered: impl FnOnce(&str, &str) -> bool,
    ) -> Result<&'a str, CoreError> {
        let checked = name::namespace_or_default(namespace).and_then(|ns| {
            name::validate("agent id", agent)?;
            if is_registered(ns, agent) {
                Ok(ns)
            } else {
                Err(CoreError::UnknownAgent { namespace: ns.to_owned(), agent: agent.to_owned() })
            }
        });
        if let Err(e) = &checked {
            let outcome = match e {
                CoreError::UnknownAgent { .. } => AuditOutcome::UnknownAgent,
                _ => AuditOutcome::Refused,
            };
            self.audit
                .record(AuditEntry::new(now, actor, command, outcome).target(namespace, agent).detail(e.to_string()));
        }
        checked
    }

    /// Pauses one agent: true if this paused it, false if it already was. `is_registered(namespace,
    /// agent)` asks the registry.
    pub fn pause(
        &mut self,
        now: Time,
        actor: &str,
        namespace: &str,
        agent: &str,
        is_registered: impl FnOnce(&str, &str) -> bool,
    ) -> Result<bool, CoreError> {
        let ns = self.pause_target(now, actor, "pause_agent", namespace, agent, is_registered)?;
        let agents = self.paused.entry(ns.into()).or_default();
        let newly = !agents.contains_key(agent);
        if newly {
            agents.insert(agent.into(), Pause { actor: actor.to_owned(), since: now });
        }
        let detail = if newly { "paused" } else { "already paused" };
        self.audit
            .record(AuditEntry::new(now, actor, "pause_agent", AuditOutcome::Ok).target(ns, agent).detail(detail));
        Ok(newly)
    }

    /// Lifts one agent's own pause.
    pub fn resume(
        &mut self,
        now: Time,
        actor: &str,
        namespace: &str,
        agent: &str,
        is_registered: impl FnOnce(&str, &str) -> bool,
    ) -> Result<Resumed, CoreError> {
        let ns = self.pause_target(now, actor, "resume_agent", namespace, agent, is_registered)?;
        let was_paused = self.unpause(ns, agent);
        let resumed = match (was_paused, &self.emergency) {
            (_, Some(_)) => Resumed::StillStopped,
            (true, None) => Resumed::Resumed,
            (false, None) => Resumed::WasNotPaused,
        };
        let detail = match resumed {
            Resumed::Resumed => "resumed",
            Resumed::WasNotPaused => "was not paused",
            Resumed::StillStopped => "own pause lifted; still held by the emergency stop until `resume_all`",
        };
        self.audit
            .record(AuditEntry::new(now, actor, "resume_agent", AuditOutcome::Ok).target(ns, agent).detail(detail));
        Ok(resumed)
    }

    fn unpause(&mut self, ns: &str, agent: &str) -> bool {
        let Some(agents) = self.paused.get_mut(ns) else { return false };
        let was = agents.remove(agent).is_some();
        if agents.is_empty() {
            self.paused.remove(ns);
        }
        was
    }

    /// Pauses every agent at once. Returns whether this started a stop (false: one already held,
    /// and its first actor and reason stand).
    pub fn emergency_stop(&mut self, now: Time, actor: &str, reason: &str) -> bool {
        let started = self.emergency.is_none();
        if started {
            let reason = summarize(reason, self.settings.audit_summary_chars);
            let reason = if reason.is_empty() { "no reason given".to_owned() } else { reason };
            self.emergency = Some(EmergencyStop { actor: actor.to_owned(), since: now, reason });
        }
        let detail = if started { "every agent paused" } else { "already stopped" };
        self.audit
            .record(AuditEntry::new(now, actor, "emergency_stop", AuditOutcome::Ok).params(reason).detail(detail));
        started
    }

    /// Lifts the emergency stop and every agent's own pause: every agent runs again.
    pub fn resume_all(&mut self, now: Time, actor: &str) -> ResumedAll {
        let emergency_lifted = self.emergency.take().is_some();
        let agents: Vec<(Arc<str>, Arc<str>)> = std::mem::take(&mut self.paused)
            .into_iter()
            .flat_map(|(ns, agents)| agents.into_keys().map(move |a| (ns.clone(), a)))
            .collect();
        let detail = format!(
            "{}{} individually paused agent(s) resumed",
            if emergency_lifted { "emergency stop lifted; " } else { "" },
            agents.len()
        );
        self.audit.record(AuditEntry::new(now, actor, "resume_all", AuditOutcome::Ok).detail(detail));
        ResumedAll { emergency_lifted, agents }
    }

    /// The emergency stop in force, if any.
    pub fn emergency(&self) -> Option<&EmergencyStop> {
        self.emergency.as_ref()
    }

    /// Whether the agent's deliveries are held and its [`Gated`] actions refused.
    pub fn is_paused(&self, namespace: &str, agent: &str) -> bool {
        self.emergency.is_some() || self.paused.get(namespace).is_some_and(|a| a.contains_key(agent))
    }

    /// Whether the agent may do `action` now; the refusal says why not and how to lift it.
    pub fn check(&self, namespace: &str, agent: &str, action: Gated) -> Result<(), Refusal> {
        let cause = if let Some(stop) = &self.emergency {
            PauseCause::EmergencyStop(stop.clone())
        } else if let Some(pause) = self.paused.get(namespace).and_then(|a| a.get(agent)) {
            PauseCause::Paused { actor: pause.actor.clone(), since: pause.since }
        } else {
            return Ok(());
        };
        Err(Refusal { namespace: namespace.to_owned(), agent: agent.to_owned(), action, cause })
    }

    /// Every agent's own pause, sorted by namespace and agent (what is kept across a restart).
    pub fn pauses(&self) -> Vec<PauseImage> {
        self.paused
            .iter()
            .flat_map(|(ns, agents)| {
                agents.iter().map(move |(agent, p)| PauseImage {
                    namespace: ns.to_string(),
                    agent_id: agent.to_string(),
                    actor: p.actor.clone(),
                    since: p.since,
                })
            })
            .collect()
    }

    /// Takes back what was kept from an earlier run: the audit log, pauses and emergency stop.
    pub fn restore(&mut self, audit: Vec<AuditEntry>, pauses: Vec<PauseImage>, emergency: Option<EmergencyStop>) {
        self.audit.restore(audit);
        for p in pauses {
            let pause = Pause { actor: p.actor, since: p.since };
            self.paused.entry(p.namespace.as_str().into()).or_default().insert(p.agent_id.as_str().into(), pause);
        }
        self.emergency = emergency;
    }

    /// Agents paused by their own pause, as (namespace, agent).
    pub fn paused_agents(&self) -> impl Iterator<Item = (&str, &str)> {
        self.paused.iter().flat_map(|(ns, agents)| agents.keys().map(move |a| (&**ns, &**a)))
    }

    /// Forgets the agent's own pause (it deregistered; a lost agent keeps it, so that it comes back
    /// paused).
    pub fn forget_agent(&mut self, namespace: &str, agent: &str) {
        self.unpause(namespace, agent);
    }

    // ----- commands -----

    /// Checks and queues a command; the engine then sends the returned command to its agent.
    /// `is_registered(namespace, agent)` asks the registry. Refusals are audited.
    pub fn send_command(
        &mut self,
        now: Time,
        request: CommandRequest,
        is_registered: impl FnOnce(&str, &str) -> bool,
    ) -> Result<&PendingCommand, CoreError> {
        let checked = self.check_request(&request, is_registered).map(|(ns, p, t)| (Arc::<str>::from(ns), p, t));
        let (namespace, params, timeout_ms) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                let outcome = match e {
                    CoreError::UnknownAgent { .. } => AuditOutcome::UnknownAgent,
                    _ => AuditOutcome::Refused,
                };
                let entry = AuditEntry::new(now, &request.actor, &request.command, outcome)
                    .target(&request.namespace, &request.agent)
                    .params(summarize(&request.params_json, self.settings.audit_summary_chars))
                    .detail(e.to_string());
                self.audit.record(entry);
                return Err(e);
            }
        };
        let id = CommandId(self.next_id);
        self.next_id += 1;
        let deadline = now.saturating_add(timeout_ms);
        let command = PendingCommand {
            id,
            origin: request.origin,
            actor: request.actor,
            namespace,
            agent: request.agent.into(),
            command: request.command,
            params,
            sent_at: now,
            deadline,
        };
        self.deadlines.insert((deadline, id));
        Ok(self.pending.entry(id).or_insert(command))
    }

    /// The namespace, parameters and timeout of a valid request, or why it is refused.
    fn check_request<'a>(
        &self,
        request: &'a CommandRequest,
        is_registered: impl FnOnce(&str, &str) -> bool,
    ) -> Result<(&'a str, Value, u64), CoreError> {
        let s = &self.settings;
        let ns = name::namespace_or_default(&request.namespace)?;
        name::validate("agent id", &request.agent)?;
        name::validate("command", &request.command)?;
        if request.params_json.len() > s.max_params_bytes {
            return Err(CoreError::invalid(
                "command params",
                format!("{} bytes; the limit is {}", request.params_json.len(), s.max_params_bytes),
            ));
        }
        let params = if request.params_json.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&request.params_json)
                .map_err(|e| CoreError::invalid("command params", format!("not valid JSON: {e}")))?
        };
        if !(params.is_object() || params.is_null()) {
            return Err(CoreError::invalid("command params", "must be a JSON object or null"));
        }
        let timeout_ms = match request.timeout_ms {
            0 => s.default_timeout_ms,
            t if t > s.max_timeout_ms => {
                return Err(CoreError::invalid(
                    "command timeout",
                    format!("{t} ms; the limit is {} ms", s.max_timeout_ms),
                ))
            }
            t => t,
        };
        if !is_registered(ns, &request.agent) {
            return Err(CoreError::UnknownAgent { namespace: ns.to_owned(), agent: request.agent.clone() });
        }
        if self.pending.len() >= s.max_in_flight {
            return Err(CoreError::Limit {
                what: "commands in flight",
                limit: s.max_in_flight as u64,
                hint: "wait for pending commands to be answered or to time out",
            });
        }
        Ok((ns, params, timeout_ms))
    }

    /// The agent `agent` of `namespace` answers command `id`. A reply that does not fit (unknown
    /// id, not the target, malformed or oversized result) is refused and the command stays pending,
    /// so that the agent can correct it before the timeout.
    pub fn reply(
        &mut self,
        now: Time,
        namespace: &str,
        agent: &str,
        id: CommandId,
        reply: CommandReply,
    ) -> Result<Finished, CoreError> {
        let s = &self.settings;
        let Some(command) = self.pending.get(&id) else {
            return Err(CoreError::invalid(
                "command reply",
                format!("no command {id} is pending (it timed out, was already answered, or never existed)"),
            ));
        };
        if &*command.namespace != namespace || &*command.agent != agent {
            return Err(CoreError::invalid(
                "command reply",
                format!("command {id} was sent to '{}', not to '{agent}'", command.agent),
            ));
        }
        let outcome = match reply {
            CommandReply::Result(text) if text.len() > s.max_result_bytes => {
                return Err(CoreError::invalid(
                    "command result",
                    format!("{} bytes; the limit is {}", text.len(), s.max_result_bytes),
                ));
            }
            CommandReply::Result(text) if text.trim().is_empty() => CommandOutcome::Completed(Value::Null),
            CommandReply::Result(text) => CommandOutcome::Completed(
                serde_json::from_str(&text)
                    .map_err(|e| CoreError::invalid("command result", format!("not valid JSON: {e}")))?,
            ),
            CommandReply::Error(message) if message.len() > s.max_error_bytes => {
                return Err(CoreError::invalid(
                    "command error",
                    format!("{} bytes; the limit is {}", message.len(), s.max_error_bytes),
                ));
            }
            CommandReply::Error(message) => CommandOutcome::AgentError(message),
        };
        Ok(self.finish(now, id, outcome).expect("the command is pending"))
    }

    /// Ends every command whose timeout has passed at `now`.
    pub fn expire(&mut self, now: Time) -> Vec<Finished> {
        let due: Vec<(Time, CommandId)> = self.deadlines.iter().take_while(|(at, _)| *at <= now).copied().collect();
        due.into_iter()
            .filter_map(|(_, id)| {
                let sent_at = self.pending.get(&id)?.sent_at;
                self.finish(now, id, CommandOutcome::TimedOut { waited_ms: now.saturating_sub(sent_at) })
            })
            .collect()
    }

    /// Ends every command pending for an agent whose session ended (`reason`: "deregistered",
    /// "lost its lease"...).
    pub fn agent_gone(&mut self, now: Time, namespace: &str, agent: &str, reason: &str) -> Vec<Finished> {
        let ids: Vec<CommandId> =
            self.pending.values().filter(|c| &*c.namespace == namespace && &*c.agent == agent).map(|c| c.id).collect();
        ids.into_iter()
            .filter_map(|id| self.finish(now, id, CommandOutcome::AgentGone { reason: reason.to_owned() }))
            .collect()
    }

    fn finish(&mut self, now: Time, id: CommandId, outcome: CommandOutcome) -> Option<Finished> {
        let command = self.pending.remove(&id)?;
        self.deadlines.remove(&(command.deadline, id));
        let max = self.settings.audit_summary_chars;
        let (kind, detail) = match &outcome {
            CommandOutcome::Completed(v) => (AuditOutcome::Ok, format!("result: {}", summarize(&v.to_string(), max))),
            CommandOutcome::AgentError(e) => (AuditOutcome::AgentError, e.clone()),
            CommandOutcome::TimedOut { waited_ms } => {
                (AuditOutcome::TimedOut, format!("no reply within {waited_ms} ms"))
            }
            CommandOutcome::AgentGone { reason } => {
                (AuditOutcome::AgentGone, format!("agent {reason} before replying"))
            }
        };
        let mut entry = AuditEntry::new(now, &command.actor, &command.command, kind)
            .target(&command.namespace, &command.agent)
            .params(summarize(&command.params.to_string(), max))
            .detail(detail);
        entry.command_id = Some(id);
        self.audit.record(entry);
        Some(Finished { command, outcome, at: now })
    }

    /// When [`ControlPlane::expire`] next has work to do.
    pub fn next_deadline(&self) -> Option<Time> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Commands waiting for a reply, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &PendingCommand> {
        self.pending.values()
    }

    pub fn pending_command(&self, id: CommandId) -> Option<&PendingCommand> {
        self.pending.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn anyone(_: &str, _: &str) -> bool {
        true
    }

    fn nobody(_: &str, _: &str) -> bool {
        false
    }

    fn plane() -> ControlPlane {
        ControlPlane::new(CommandSettings::default())
    }

    fn request(agent: &str, command: &str, params: &str) -> CommandRequest {
        CommandRequest {
            origin: 77,
            actor: "ops".into(),
            agent: agent.into(),
            command: command.into(),
            params_json: params.into(),
            ..Default::default()
        }
    }

    fn last(p: &ControlPlane) -> &AuditEntry {
        p.audit().entries().next_back().expect("an audit entry")
    }

    #[test]
    fn defaults_are_valid() {
        CommandSettings::default().validate().unwrap();
        assert!(CommandSettings { max_in_flight: 0, ..Default::default() }.validate().is_err());
        assert!(CommandSettings { default_timeout_ms: 0, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn a_paused_agent_may_not_act_but_others_may() {
        let mut p = plane();
        assert!(p.pause(10, "ops", "", "a", anyone).unwrap());
        assert!(!p.pause(11, "ops", "default", "a", anyone).unwrap(), "pausing twice changes nothing");
        assert!(p.is_paused("default", "a"));
        assert!(!p.is_paused("default", "b"));
        assert!(!p.is_paused("other", "a"), "pauses are per namespace");
        for action in [Gated::Publish, Gated::UpdateState, Gated::SyncArrive] {
            let refusal = p.check("default", "a", action).unwrap_err();
            assert_eq!(refusal.cause, PauseCause::Paused { actor: "ops".into(), since: 10 });
            let text = refusal.to_string();
            assert!(text.contains(action.as_str()) && text.contains("resume_agent a"), "{text}");
        }
        p.check("default", "b", Gated::Publish).unwrap();
        assert_eq!(p.paused_agents().collect::<Vec<_>>(), [("default", "a")]);

        assert_eq!(p.resume(20, "ops", "", "a", anyone).unwrap(), Resumed::Resumed);
        assert_eq!(p.resume(21, "ops", "", "a", anyone).unwrap(), Resumed::WasNotPaused);
        p.check("default", "a", Gated::Publish).unwrap();
    }

    #[test]
    fn pausing_checks_its_target() {
        let mut p = plane();
        let e = p.pause(0, "ops", "", "ghost", nobody).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(last(&p).outcome, AuditOutcome::UnknownAgent);
        let e = p.resume(0, "ops", "", "bad name", anyone).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert_eq!((last(&p).command.as_str(), last(&p).outcome), ("resume_agent", AuditOutcome::Refused));
        assert_eq!(p.paused_agents().count(), 0);
    }

    #[test]
    fn an_emergency_stop_pauses_everyone_until_resume_all() {
        let mut p = plane();
        p.pause(1, "ops", "", "a", anyone).unwrap();
        assert!(p.emergency_stop(5, "chief", "runaway losses"));
        assert!(!p.emergency_stop(6, "other", "again"), "the first stop stands");
        assert_eq!(p.emergency().unwrap().actor, "chief");
        for (ns, agent) in [("default", "a"), ("default", "b"), ("prod", "z")] {
            assert!(p.is_paused(ns, agent));
            let text = p.check(ns, agent, Gated::SyncArrive).unwrap_err().to_string();
            assert!(text.contains("emergency stop") && text.contains("runaway losses"), "{text}");
            assert!(text.contains("`resume_all`"), "{text}");
        }
        // Resuming one agent lifts its own pause, but the stop still holds it.
        assert_eq!(p.resume(7, "ops", "", "a", anyone).unwrap(), Resumed::StillStopped);
        assert!(p.check("default", "a", Gated::Publish).is_err());

        p.pause(8, "ops", "prod", "z", anyone).unwrap();
        let resumed = p.resume_all(9, "chief");
        assert!(resumed.emergency_lifted);
        assert_eq!(resumed.agents, vec![(Arc::from("prod"), Arc::from("z"))], "individual pauses are lifted too");
        assert!(!p.is_paused("prod", "z") && !p.is_paused("default", "a"));
        assert!(p.emergency().is_none());
        assert_eq!(p.resume_all(10, "chief"), ResumedAll::default(), "nothing left to resume");
    }

    #[test]
    fn a_deregistered_agent_is_forgotten() {
        let mut p = plane();
        p.pause(1, "ops", "", "a", anyone).unwrap();
        p.forget_agent("default", "a");
        assert!(!p.is_paused("default", "a"));
    }

    #[test]
    fn a_command_completes_with_the_agents_result() {
        let mut p = plane();
        let sent =
            p.send_command(100, request("trainer", "rebalance_weights", r#"{"min_weight": 0.1}"#), anyone).unwrap();
        let id = sent.id;
        assert_eq!((sent.origin, &*sent.agent, &*sent.namespace), (77, "trainer", "default"));
        assert_eq!(sent.params, json!({"min_weight": 0.1}));
        assert_eq!(sent.deadline, 100 + 30_000);
        assert_eq!(p.next_deadline(), Some(30_100));
        assert!(p.audit().is_empty(), "audited when it ends");

        let done = p.reply(150, "default", "trainer", id, CommandReply::Result(r#"{"ok": true}"#.into())).unwrap();
        assert_eq!(done.outcome, CommandOutcome::Completed(json!({"ok": true})));
        assert_eq!((done.command.id, done.at), (id, 150));
        assert_eq!(p.pending().count(), 0);
        assert_eq!(p.next_deadline(), None);
        let entry = last(&p);
        assert_eq!(
            (entry.command.as_str(), entry.target.as_str(), entry.outcome),
            ("rebalance_weights", "trainer", AuditOutcome::Ok)
        );
        assert_eq!(entry.command_id, Some(id));
        assert_eq!(entry.params, r#"{"min_weight":0.1}"#);
        assert_eq!(entry.detail, r#"result: {"ok":true}"#);
        // A second reply finds nothing pending.
        let e = p.reply(160, "default", "trainer", id, CommandReply::Result(String::new())).unwrap_err();
        assert!(e.to_string().contains("no command 1 is pending"), "{e}");
    }

    #[test]
    fn an_agent_error_is_its_own_outcome() {
        let mut p = plane();
        let id = p.send_command(0, request("a", "flush", ""), anyone).unwrap().id;
        let done = p.reply(5, "default", "a", id, CommandReply::Error("disk full".into())).unwrap();
        assert_eq!(done.outcome, CommandOutcome::AgentError("disk full".into()));
        assert_eq!((last(&p).outcome, last(&p).detail.as_str()), (AuditOutcome::AgentError, "disk full"));
    }

    #[test]
    fn commands_time_out() {
        let mut p = plane();
        let mut r = request("a", "slow", "null");
        r.timeout_ms = 1_000;
        let first = p.send_command(0, r.clone(), anyone).unwrap().id;
        let second = p.send_command(500, r, anyone).unwrap().id;
        assert!(p.expire(999).is_empty());
        let expired = p.expire(1_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].command.id, first);
        assert_eq!(expired[0].outcome, CommandOutcome::TimedOut { waited_ms: 1_000 });
        assert_eq!(p.next_deadline(), Some(1_500));
        assert_eq!(last(&p).outcome, AuditOutcome::TimedOut);
        // A reply after the timeout is refused: the operator already has its answer.
        assert!(p.reply(1_001, "default", "a", first, CommandReply::Result("1".into())).is_err());
        assert_eq!(p.expire(5_000)[0].command.id, second);
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn commands_of_an_agent_that_goes_end_at_once() {
        let mut p = plane();
        let a1 = p.send_command(0, request("a", "x", ""), anyone).unwrap().id;
        let b = p.send_command(0, request("b", "x", ""), anyone).unwrap().id;
        let a2 = p.send_command(0, request("a", "y", ""), anyone).unwrap().id;
        let gone = p.agent_gone(10, "default", "a", "lost its lease");
        assert_eq!(gone.iter().map(|f| f.command.id).collect::<Vec<_>>(), [a1, a2]);
        assert_eq!(gone[0].outcome, CommandOutcome::AgentGone { reason: "lost its lease".into() });
        assert_eq!(last(&p).detail, "agent lost its lease before replying");
        assert_eq!(p.pending().map(|c| c.id).collect::<Vec<_>>(), [b]);
        assert_eq!(p.next_deadline(), Some(30_000));
    }

    #[test]
    fn a_command_to_an_unknown_agent_is_refused_and_audited() {
        let mut p = plane();
        let e = p.send_command(3, request("ghost", "x", ""), nobody).unwrap_err();
        assert_eq!(e, CoreError::UnknownAgent { namespace: "default".into(), agent: "ghost".into() });
        let entry = last(&p);
        assert_eq!((entry.outcome, entry.target.as_str(), entry.at), (AuditOutcome::UnknownAgent, "ghost", 3));
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn bad_commands_are_refused() {
        let mut p = plane();
        let big = format!(r#"{{"x": "{}"}}"#, "y".repeat(64 * 1024));
        let cases = [
            request("a", "bad name", ""),
            request("a", "", ""),
            request("bad agent", "x", ""),
            request("a", "x", "[1, 2]"),
            request("a", "x", "42"),
            request("a", "x", "{not json"),
            request("a", "x", &big),
            CommandRequest { timeout_ms: 10 * 60 * 1000 + 1, ..request("a", "x", "") },
            CommandRequest { namespace: "bad ns".into(), ..request("a", "x", "") },
        ];
        for r in cases {
            let e = p.send_command(0, r.clone(), anyone).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{r:?}: {e}");
            assert_eq!(last(&p).outcome, AuditOutcome::Refused);
            assert!(last(&p).params.chars().count() <= 200, "audit texts are cut");
        }
        assert_eq!(p.pending().count(), 0);
        assert_eq!(p.audit().len(), 9);
    }

    #[test]
    fn commands_in_flight_are_bounded() {
        let mut p = ControlPlane::new(CommandSettings { max_in_flight: 2, ..Default::default() });
        let first = p.send_command(0, request("a", "x", ""), anyone).unwrap().id;
        p.send_command(0, request("a", "x", ""), anyone).unwrap();
        let e = p.send_command(0, request("a", "x", ""), anyone).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ResourceExhausted);
        p.reply(1, "default", "a", first, CommandReply::Result(String::new())).unwrap();
        let third = p.send_command(2, request("a", "x", ""), anyone).unwrap().id;
        assert_eq!(third, CommandId(3), "ids are never reused; refusals take none");
    }

    #[test]
    fn replies_must_come_from_the_target_and_fit() {
        let mut p =
            ControlPlane::new(CommandSettings { max_result_bytes: 10, max_error_bytes: 5, ..Default::default() });
        let id = p.send_command(0, request("a", "x", ""), anyone).unwrap().id;
        let e = p.reply(1, "default", "b", id, CommandReply::Result("1".into())).unwrap_err();
        assert!(e.to_string().contains("was sent to 'a', not to 'b'"), "{e}");
        assert!(p.reply(1, "other", "a", id, CommandReply::Result("1".into())).is_err(), "same id, other namespace");
        assert!(p.reply(1, "default", "a", id, CommandReply::Result("{bad".into())).is_err());
        assert!(p.reply(1, "default", "a", id, CommandReply::Result("[1,2,3,4,5,6]".into())).is_err());
        assert!(p.reply(1, "default", "a", id, CommandReply::Error("too long".into())).is_err());
        assert!(p.pending_command(id).is_some(), "a refused reply leaves the command pending");
        assert!(p.audit().is_empty(), "refused replies are the agent's mistake, not an operator action");
        p.reply(2, "default", "a", id, CommandReply::Result("[1]".into())).unwrap();
    }

    #[test]
    fn operators_may_command_paused_agents() {
        let mut p = plane();
        p.emergency_stop(0, "ops", "");
        assert_eq!(p.emergency().unwrap().reason, "no reason given");
        p.send_command(1, request("a", "flatten_positions", ""), anyone).unwrap();
    }

    #[test]
    fn a_restored_audit_log_is_in_sequence_order_and_numbering_goes_on() {
        let mut log = AuditLog::new(3, 10);
        let entry = |seq| AuditEntry { seq, ..AuditEntry::new(0, "ops", "status", AuditOutcome::Ok) };
        log.restore(vec![entry(8), entry(5), entry(7), entry(6)]);
        assert_eq!(log.entries().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
        assert_eq!(log.since(6).map(|e| e.seq).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(log.record(entry(0)), 9);
    }

    #[test]
    fn the_audit_log_is_bounded_and_counts_what_it_drops() {
        let mut log = AuditLog::new(3, 10);
        for i in 0..5 {
            let seq =
                log.record(AuditEntry::new(i, "ops", "status", AuditOutcome::Ok).detail("x".repeat(i as usize * 5)));
            assert_eq!(seq, i + 1);
        }
        assert_eq!(log.len(), 3);
        assert_eq!(log.dropped(), 2);
        assert_eq!(log.entries().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        let since = |seq| log.since(seq).map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(since(4), [5]);
        // From before the oldest kept entry, from an entry's own number, and from the newest.
        assert_eq!((since(0), since(3), since(5), since(9)), (vec![3, 4, 5], vec![4, 5], vec![], vec![]));
        let cut = &log.entries().last().unwrap().detail;
        assert_eq!((cut.chars().count(), cut.ends_with('…')), (10, true));
    }

    #[test]
    fn every_operator_action_is_audited() {
        let mut p = plane();
        p.pause(1, "alice", "", "a", anyone).unwrap();
        p.resume(2, "alice", "", "a", anyone).unwrap();
        p.emergency_stop(3, "bob", "market halt");
        p.resume_all(4, "bob");
        p.record(
            AuditEntry::new(5, "carol", "restart_agent", AuditOutcome::Ok)
                .target("default", "a")
                .detail("breaker reset"),
        );
        let log: Vec<(Time, &str, &str, &str)> =
            p.audit().entries().map(|e| (e.at, e.actor.as_str(), e.command.as_str(), e.target.as_str())).collect();
        assert_eq!(
            log,
            [
                (1, "alice", "pause_agent", "a"),
                (2, "alice", "resume_agent", "a"),
                (3, "bob", "emergency_stop", ""),
                (4, "bob", "resume_all", ""),
                (5, "carol", "restart_agent", "a"),
            ]
        );
        let stop = p.audit().entries().nth(2).unwrap();
        assert_eq!(stop.params, "market halt");
    }

    #[test]
    fn summaries_cut_on_character_boundaries() {
        assert_eq!(summarize("héllo", 10), "héllo");
        assert_eq!(summarize("héllo", 3), "hé…");
        assert_eq!(summarize("ééééé", 5), "ééééé");
        assert_eq!(summarize("abc", 0), "…");
    }
}
