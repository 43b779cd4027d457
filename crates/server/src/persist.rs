//! Between the engine and the store: the engine's durable [`Change`]s become store records, and a
//! loaded [`Snapshot`](store::Snapshot) becomes what the engine is [`Restored`] from.
//!
//! The store keeps rows with columns; the values it keeps as JSON text are the core's images and
//! values serialized with serde (their stored shapes are described in `lockstep_core::durable`),
//! so this module only decides which value goes in which column. Settings: `emergency_stop` (an
//! [`EmergencyStop`]), `pause:<namespace>/<agent>` (a [`PauseImage`]), `clock_origin_unix_ms` and
//! `engine_settings`, `stream:<kind>:<namespace>/<id>` (a tick controller or latency buffer), `intake_rules` (the
//! intake's replaced rule set). Anything stored that does not decode is refused with the record named, never
//! skipped.

use lockstep_core::command::{AuditEntry, AuditOutcome, CommandId, EmergencyStop};
use lockstep_core::durable::{AgentImage, ArrivalImage, Change, PauseImage, Restored, SyncPointImage};
use lockstep_core::vote::VoteImage;
use lockstep_core::{AgentStatus, SyncState, Time, WatchTarget};
use lockstep_store as store;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The setting holding the Unix time (ms) at which this data directory's clock reads zero.
pub const CLOCK_ORIGIN: &str = "clock_origin_unix_ms";
/// The setting holding the engine settings (breakers, limits, leases...) the server last started
/// with: a record for operators and backups; the configuration file stays their source.
pub const ENGINE_SETTINGS: &str = "engine_settings";
/// The setting holding the emergency stop in force.
const EMERGENCY_STOP: &str = "emergency_stop";
/// Settings `pause:<namespace>/<agent>` hold operators' pauses of single agents.
const PAUSE_PREFIX: &str = "pause:";
/// Settings `stream:<kind>:<namespace>/<id>` hold tick controllers and latency buffers (a
/// [`StreamImage`](lockstep_core::streams::StreamImage)): a handful of small records, kept beside
/// the pauses rather than in tables of their own.
const STREAM_PREFIX: &str = "stream:";
/// The setting holding the intake's rule set as an operator last replaced it (an
/// [`IntakeImage`](lockstep_core::intake::IntakeImage): the set and its version).
const INTAKE_RULES: &str = "intake_rules";

/// A stored record that cannot be turned back into engine state.
#[derive(Debug, thiserror::Error)]
#[error("the data directory holds a record lockstep cannot use ({record}): {reason}")]
pub struct BadRecord {
    pub record: String,
    pub reason: String,
}

fn bad(record: impl Into<String>, reason: impl Into<String>) -> BadRecord {
    BadRecord { record: record.into(), reason: reason.into() }
}

/// `value` as the JSON text the store keeps. The core's images hold nothing JSON cannot express
/// (string keys, finite numbers), so this cannot fail.
fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("durable values serialize to JSON")
}

/// Reads the JSON text of `record`'s column `what`.
fn decode<T: DeserializeOwned>(record: &dyn Fn() -> String, what: &str, text: &str) -> Result<T, BadRecord> {
    serde_json::from_str(text).map_err(|e| bad(record(), format!("its {what} '{text}': {e}")))
}

/// The store changes that keep `changes`, in order.
pub fn to_store(changes: &[Change]) -> Vec<store::Change> {
    changes.iter().map(change).collect()
}

fn change(c: &Change) -> store::Change {
    match c {
        // The frequent change: written from the engine's document without copying it first.
        Change::State { namespace, agent_id, state, version } => store::Change::UpdateState {
            namespace: namespace.clone(),
            agent_id: agent_id.clone(),
            state_json: json_text(state),
            state_version: *version,
        },
        other => owned_change(other.clone()),
    }
}

fn owned_change(c: Change) -> store::Change {
    match c {
        Change::Agent(a) => store::Change::UpsertAgent(agent_record(a)),
        Change::State { namespace, agent_id, state, version } => {
            store::Change::UpdateState { namespace, agent_id, state_json: json_text(&state), state_version: version }
        }
        Change::AgentRemoved { namespace, agent_id } => store::Change::DeleteAgent { namespace, agent_id },
        Change::SyncPoint(p) => store::Change::UpsertSyncPoint(sync_point_record(p)),
        Change::Arrival { namespace, sync_id, position, arrival } => store::Change::AddArrival(store::ArrivalRecord {
            namespace,
            sync_id,
            agent_id: arrival.agent_id,
            position,
            payload: arrival.payload.to_vec(),
            at_ms: arrival.at,
        }),
        Change::SyncPointRemoved { namespace, sync_id } => store::Change::DeleteSyncPoint { namespace, sync_id },
        Change::Audit(e) => store::Change::AppendAudit(store::AuditRecord {
            seq: e.seq,
            at_ms: e.at,
            actor: e.actor,
            command: e.command,
            command_id: e.command_id.map(|c| c.0),
            namespace: e.namespace,
            target: e.target,
            params: e.params,
            outcome: e.outcome.as_str().to_owned(),
            detail: e.detail,
        }),
        Change::Paused(p) => setting(&pause_key(&p.namespace, &p.agent_id), &p),
        Change::Unpaused { namespace, agent_id } => {
            store::Change::DeleteConfig { key: pause_key(&namespace, &agent_id) }
        }
        Change::EmergencyStop(None) => store::Change::DeleteConfig { key: EMERGENCY_STOP.into() },
        Change::EmergencyStop(Some(stop)) => setting(EMERGENCY_STOP, &stop),
        Change::Stream(image) => setting(&stream_key(image.kind, &image.namespace, &image.id), &*image),
        Change::StreamRemoved { kind, namespace, id } => {
            store::Change::DeleteConfig { key: stream_key(kind, &namespace, &id) }
        }
        Change::Vote(v) => store::Change::UpsertVote(store::VoteRecord {
            namespace: v.namespace.clone(),
            vote_id: v.spec.vote_id.clone(),
            created_at_ms: v.created_at,
            finished_at_ms: v.finished_at,
            vote_json: json_text(&*v),
        }),
        Change::Ballot { namespace, vote_id, position, ballot } => store::Change::AddBallot(store::BallotRecord {
            namespace,
            vote_id,
            agent_id: ballot.agent_id.clone(),
            position,
            at_ms: ballot.at,
            ballot_json: json_text(&ballot),
        }),
        Change::VoteRemoved { namespace, vote_id } => store::Change::DeleteVote { namespace, vote_id },
        Change::ContextRevision(image) => {
            let image = *image;
            let meta = ContextMeta { owner: image.owner, expires_at: image.expires_at };
            let revision = image.revisions.into_iter().next_back().expect("a context change carries its version");
            store::Change::PutContextVersion {
                key: store::ContextKeyRecord {
                    namespace: image.namespace.clone(),
                    key: image.key.clone(),
                    meta_json: json_text(&meta),
                },
                version: store::ContextVersionRecord {
                    namespace: image.namespace,
                    key: image.key,
                    version: revision.version,
                    revision_json: json_text(&revision),
                },
                oldest_retained: image.oldest_retained,
            }
        }
        Change::Task(task) => store::Change::PutTask(store::TaskRecord {
            namespace: task.namespace.clone(),
            task_id: task.id.clone(),
            seq: task.seq,
            task_json: json_text(&*task),
        }),
        Change::TaskRemoved { namespace, id } => store::Change::DeleteTask { namespace, task_id: id },
        Change::ContextRemoved { namespace, key, version } => {
            store::Change::DeleteContextKey { namespace, key, version }
        }
        Change::TracePut(trace) => store::Change::PutTrace(store::TraceRecord {
            namespace: trace.namespace.clone(),
            id: trace.id.clone(),
            meta_json: json_text(&*trace),
            inline: trace.output.inline.as_ref().map(|b| b.to_vec()),
        }),
        Change::TraceRemoved { namespace, id } => store::Change::DeleteTrace { namespace, id },
        Change::RoundSeries(series) => store::Change::PutRoundSeries(store::RoundSeriesRecord {
            namespace: series.spec.namespace.clone(),
            name: series.spec.name.clone(),
            series_json: json_text(&*series),
        }),
        Change::RoundSeriesRemoved { namespace, name } => store::Change::DeleteRoundSeries { namespace, name },
        Change::History(change) => history_change(change),
        Change::Intake(image) => setting(INTAKE_RULES, &*image),
        Change::SystemPut(image) => {
            store::Change::PutSystem { name: image.spec.name.clone(), system_json: json_text(&*image) }
        }
        Change::SystemEvent { system, seq, event, keep } => {
            store::Change::PutSystemEvent { system, seq, event_json: json_text(&*event), keep }
        }
        Change::SystemTrend { system, trend } => {
            store::Change::PutSystemTrend { system, trend_json: json_text(&*trend) }
        }
        Change::Dependency { upstream, downstream, weight: Some(w) } => {
            store::Change::PutDependency { upstream, downstream, weight: json_text(&w) }
        }
        Change::Dependency { upstream, downstream, weight: None } => {
            store::Change::DeleteDependency { upstream, downstream }
        }
        Change::Incident { incident, keep } => store::Change::PutIncident {
            id: incident.id,
            resolved: incident.resolved_at.is_some(),
            incident_json: json_text(&*incident),
            keep,
        },
    }
}

/// A change of store-kept topic history as the store keeps it.
fn history_change(change: lockstep_core::history::HistoryChange) -> store::Change {
    use lockstep_core::history::HistoryChange;
    match change {
        HistoryChange::Append(m) => store::Change::PutHistoryMessage(store::HistoryMessageRecord {
            namespace: m.namespace,
            topic: m.topic,
            seq: m.seq,
            at_ms: m.time,
            publisher: m.publisher,
            content_type: m.content_type,
            payload: m.payload.to_vec(),
        }),
        HistoryChange::Trim { namespace, topic, before_seq } => {
            store::Change::TrimHistory { namespace, topic, before_seq }
        }
        HistoryChange::Forget { namespace, topic } => store::Change::DeleteHistoryTopic { namespace, topic },
    }
}

/// A context key's lifetime, as `context_keys.meta_json` keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContextMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<Time>,
}

/// A setting holding `value`.
pub fn setting(key: &str, value: &impl Serialize) -> store::Change {
    store::Change::SetConfig(store::ConfigRecord { key: key.into(), value_json: json_text(value) })
}

fn stream_key(kind: lockstep_core::streams::StreamKind, namespace: &str, id: &str) -> String {
    format!("{STREAM_PREFIX}{}:{namespace}/{id}", kind.as_str())
}

fn pause_key(namespace: &str, agent: &str) -> String {
    format!("{PAUSE_PREFIX}{namespace}/{agent}")
}

fn agent_record(a: AgentImage) -> store::AgentRecord {
    store::AgentRecord {
        paused: a.status == AgentStatus::Paused,
        state_json: json_text(&a.state),
        namespace: a.namespace,
        agent_id: a.agent_id,
        role: a.role,
        capabilities: a.capabilities,
        interests: a.interests,
        metadata: a.metadata,
        status: a.status.as_str().to_owned(),
        resume_token: a.resume_token,
        registered_at_ms: a.registered_at,
        state_version: a.state_version,
        watches: a.watches.into_iter().map(String::from).collect(),
    }
}

/// A sync point's participants as the store keeps them: `{"agents":[..]}`, `{"count":n}` or
/// `{"role":".."}`, with `"quorum":k` beside for a k-of-n point (so rows written before quorums
/// existed read as they are, and are written back the same).
#[derive(Serialize, serde::Deserialize)]
struct StoredParticipants {
    #[serde(flatten)]
    participants: lockstep_core::Participants,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quorum: Option<u32>,
}

fn sync_point_record(p: SyncPointImage) -> store::SyncPointRecord {
    store::SyncPointRecord {
        participants_json: json_text(&StoredParticipants { participants: p.participants, quorum: p.quorum }),
        result_json: p.failure.as_ref().map(json_text),
        namespace: p.namespace,
        sync_id: p.sync_id,
        required: p.required,
        created_at_ms: p.created_at,
        deadline_ms: p.deadline,
        state: p.state.as_str().to_owned(),
        finished_at_ms: p.finished_at,
    }
}

/// What the engine starts from, the data directory's clock origin if it has one, and the latest
/// time any record mentions (the restarted clock must not run behind it).
pub struct Loaded {
    pub restored: Restored,
    pub clock_origin: Option<u64>,
    pub latest: Time,
    /// The engine settings recorded at the last start, as JSON.
    pub engine_settings: Option<Value>,
}

/// Decodes everything the store loaded.
pub fn from_store(snapshot: store::Snapshot) -> Result<Loaded, BadRecord> {
    let mut latest: Time = 0;
    let mut restored = Restored::default();
    for a in snapshot.agents {
        latest = latest.max(a.registered_at_ms);
        restored.agents.push(agent_image(a)?);
    }
    for p in snapshot.sync_points {
        latest = latest.max(p.point.created_at_ms).max(p.point.finished_at_ms.unwrap_or(0));
        latest = p.arrivals.iter().fold(latest, |l, a| l.max(a.at_ms));
        restored.sync_points.push(sync_point_image(p)?);
    }
    for v in snapshot.votes {
        let record = || format!("vote '{}' of namespace '{}'", v.vote.vote_id, v.vote.namespace);
        let mut image: VoteImage = decode(&record, "vote_json", &v.vote.vote_json)?;
        latest = latest.max(v.vote.created_at_ms).max(v.vote.finished_at_ms.unwrap_or(0));
        for b in v.ballots {
            latest = latest.max(b.at_ms);
            image.ballots.push(decode(&record, "ballot_json", &b.ballot_json)?);
        }
        restored.votes.push(image);
    }
    for k in snapshot.context {
        let record = || format!("context key '{}' of namespace '{}'", k.key.key, k.key.namespace);
        let meta: ContextMeta = decode(&record, "meta_json", &k.key.meta_json)?;
        let mut revisions = Vec::with_capacity(k.versions.len());
        for v in &k.versions {
            let revision: lockstep_core::durable::ContextRevisionImage =
                decode(&record, "revision_json", &v.revision_json)?;
            latest = latest.max(revision.at);
            revisions.push(revision);
        }
        restored.context.push(lockstep_core::durable::ContextKeyImage {
            oldest_retained: revisions.first().map_or(0, |r| r.version),
            namespace: k.key.namespace,
            key: k.key.key,
            owner: meta.owner,
            expires_at: meta.expires_at,
            revisions,
        });
    }
    restored.context_revisions = snapshot.context_namespaces;
    for t in snapshot.tasks {
        let record = || format!("task '{}' of namespace '{}'", t.task_id, t.namespace);
        let image: lockstep_core::task::TaskImage = decode(&record, "task_json", &t.task_json)?;
        latest = latest.max(image.submitted_at).max(image.finished_at.unwrap_or(0));
        restored.tasks.push(image);
    }
    restored.task_seqs = snapshot.task_namespaces;
    for t in snapshot.traces {
        let record = || format!("trace '{}' of namespace '{}'", t.id, t.namespace);
        let mut trace: lockstep_core::trace::Trace = decode(&record, "meta_json", &t.meta_json)?;
        latest = latest.max(trace.recorded_at);
        trace.output.inline = t.inline.map(bytes::Bytes::from);
        restored.traces.push(trace);
    }
    for r in snapshot.round_series {
        let record = || format!("round series '{}' of namespace '{}'", r.name, r.namespace);
        let image: lockstep_core::round::SeriesImage = decode(&record, "series_json", &r.series_json)?;
        latest = latest.max(image.retained.last().map_or(image.created_at, |k| k.closed_at));
        restored.rounds.push(image);
    }
    // The sync monitor's times are Unix milliseconds, not the engine's clock: not in `latest`.
    for (name, json) in snapshot.systems {
        restored.systems.push(decode(&|| format!("system '{name}'"), "system_json", &json)?);
    }
    for (system, seq, json) in snapshot.system_events {
        let event = decode(&|| format!("event {seq} of system '{system}'"), "event_json", &json)?;
        restored.system_events.push((system, seq, event));
    }
    for (upstream, downstream, weight) in snapshot.dependencies {
        let w: f64 = decode(&|| format!("dependency '{upstream}' -> '{downstream}'"), "weight", &weight)?;
        restored.dependencies.push((upstream, downstream, w));
    }
    for json in snapshot.incidents {
        restored.incidents.push(decode(&|| "an incident".to_string(), "incident_json", &json)?);
    }
    for (system, json) in snapshot.system_trends {
        let trend = decode(&|| format!("the trends of system '{system}'"), "trend_json", &json)?;
        restored.system_trends.push((system, trend));
    }
    restored.history = snapshot
        .history_topics
        .into_iter()
        .map(|(namespace, topic, last_seq)| lockstep_core::history::KeptTopic {
            namespace,
            topic,
            last_seq,
            messages: Vec::new(),
        })
        .collect();
    // Both listings are ordered by (namespace, topic): each topic's messages follow in seq order.
    let mut topics = restored.history.iter_mut().peekable();
    for m in snapshot.history_messages {
        latest = latest.max(m.at_ms);
        while topics
            .peek()
            .is_some_and(|t| (t.namespace.as_str(), t.topic.as_str()) < (m.namespace.as_str(), m.topic.as_str()))
        {
            topics.next();
        }
        let Some(topic) = topics.peek_mut().filter(|t| t.namespace == m.namespace && t.topic == m.topic) else {
            let record = format!("message {} of topic '{}' of namespace '{}'", m.seq, m.topic, m.namespace);
            return Err(bad(record, "a kept message of a topic with no last sequence number"));
        };
        topic.messages.push(lockstep_core::history::KeptMessage {
            seq: m.seq,
            time: m.at_ms,
            publisher: m.publisher,
            content_type: m.content_type,
            payload: m.payload.into(),
            namespace: m.namespace,
            topic: m.topic,
        });
    }
    for e in snapshot.audit {
        latest = latest.max(e.at_ms);
        let outcome = AuditOutcome::parse(&e.outcome)
            .ok_or_else(|| bad(format!("audit entry {}", e.seq), format!("unknown outcome '{}'", e.outcome)))?;
        restored.audit.push(AuditEntry {
            seq: e.seq,
            at: e.at_ms,
            actor: e.actor,
            command: e.command,
            command_id: e.command_id.map(CommandId),
            namespace: e.namespace,
            target: e.target,
            params: e.params,
            outcome,
            detail: e.detail,
        });
    }
    let (mut clock_origin, mut engine_settings) = (None, None);
    for c in snapshot.config {
        let record = || format!("setting '{}'", c.key);
        if c.key == ENGINE_SETTINGS {
            engine_settings = Some(decode(&record, "value", &c.value_json)?);
        } else if c.key == CLOCK_ORIGIN {
            clock_origin = Some(decode(&record, "number of milliseconds", &c.value_json)?);
        } else if c.key == EMERGENCY_STOP {
            restored.emergency = Some(decode::<EmergencyStop>(&record, "value", &c.value_json)?);
        } else if let Some(target) = c.key.strip_prefix(PAUSE_PREFIX) {
            let (namespace, agent) = target.split_once('/').ok_or_else(|| bad(record(), "needs namespace/agent"))?;
            let mut pause: PauseImage = decode(&record, "value", &c.value_json)?;
            // The key names the agent (older records hold only `actor` and `since`).
            (pause.namespace, pause.agent_id) = (namespace.into(), agent.into());
            restored.pauses.push(pause);
        } else if c.key.starts_with(STREAM_PREFIX) {
            restored.streams.push(decode(&record, "value", &c.value_json)?);
        } else if c.key == INTAKE_RULES {
            restored.intake = Some(decode(&record, "value", &c.value_json)?);
        }
    }
    Ok(Loaded { restored, clock_origin, latest, engine_settings })
}

fn agent_image(a: store::AgentRecord) -> Result<AgentImage, BadRecord> {
    let record = || format!("agent '{}' of namespace '{}'", a.agent_id, a.namespace);
    let status =
        AgentStatus::parse(&a.status).ok_or_else(|| bad(record(), format!("unknown status '{}'", a.status)))?;
    let state = decode(&record, "state", &a.state_json)?;
    let watches = a
        .watches
        .iter()
        .map(|w| WatchTarget::try_from(w.clone()).map_err(|e| bad(record(), e)))
        .collect::<Result<_, _>>()?;
    Ok(AgentImage {
        namespace: a.namespace,
        agent_id: a.agent_id,
        role: a.role,
        capabilities: a.capabilities,
        interests: a.interests,
        metadata: a.metadata,
        status,
        resume_token: a.resume_token,
        registered_at: a.registered_at_ms,
        state,
        state_version: a.state_version,
        watches,
    })
}

fn sync_point_image(loaded: store::LoadedSyncPoint) -> Result<SyncPointImage, BadRecord> {
    let p = loaded.point;
    let record = || format!("sync point '{}' of namespace '{}'", p.sync_id, p.namespace);
    let StoredParticipants { participants, quorum } = decode(&record, "participants", &p.participants_json)?;
    let state = SyncState::parse(&p.state).ok_or_else(|| bad(record(), format!("unknown state '{}'", p.state)))?;
    let failure = p.result_json.as_deref().map(|text| decode(&record, "failure", text)).transpose()?;
    Ok(SyncPointImage {
        namespace: p.namespace,
        sync_id: p.sync_id,
        participants,
        quorum,
        required: p.required,
        created_at: p.created_at_ms,
        deadline: p.deadline_ms,
        state,
        finished_at: p.finished_at_ms,
        failure,
        arrivals: loaded
            .arrivals
            .into_iter()
            .map(|a| ArrivalImage { agent_id: a.agent_id, payload: a.payload.into(), at: a.at_ms })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lockstep_core::durable::SyncFailure;
    use lockstep_core::{CoreError, Participants};
    use serde_json::json;

    fn agent() -> AgentImage {
        AgentImage {
            namespace: "lab".into(),
            agent_id: "w1".into(),
            role: "worker".into(),
            capabilities: vec!["gpu".into()],
            interests: vec!["jobs.>".into()],
            metadata: [("zone".to_owned(), "a".to_owned())].into(),
            status: AgentStatus::Busy,
            resume_token: "tok".into(),
            registered_at: 5,
            state: json!({"epoch": 3}),
            state_version: 7,
            watches: vec![WatchTarget::Agent("w2".into()), WatchTarget::Role("r".into()), WatchTarget::All],
        }
    }

    fn point(state: SyncState, failure: Option<CoreError>) -> SyncPointImage {
        SyncPointImage {
            namespace: "lab".into(),
            sync_id: "round-1".into(),
            participants: Participants::Agents(vec!["w1".into(), "w2".into()]),
            quorum: None,
            required: vec!["w1".into(), "w2".into()],
            created_at: 10,
            deadline: 1010,
            state,
            finished_at: (state != SyncState::Waiting).then_some(20),
            failure: failure.as_ref().map(SyncFailure::of),
            arrivals: Vec::new(),
        }
    }

    /// Applies `changes` to a real in-memory store and loads it back.
    fn round_trip(changes: Vec<Change>) -> Loaded {
        let mut s = store::Store::open_in_memory().unwrap();
        s.apply(&to_store(&changes)).unwrap();
        from_store(s.load().unwrap()).unwrap()
    }

    #[test]
    fn synced_systems_events_dependencies_and_incidents_come_back_as_kept() {
        use lockstep_core::systems::{Cause, Event, Incident, Status, SystemImage, SystemSpec};
        let image = SystemImage {
            spec: SystemSpec { name: "src".into(), cadence_ms: 1000, ..Default::default() },
            registered_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            retired_at: None,
            last_success: Some(1_700_000_001_000),
            last_status: Some(Status::Ok),
            last_drift_ms: Some(0.1),
            stale: false,
            event_seq: 1,
            events_from: 0,
        };
        let event = Event {
            at: 1_700_000_001_000,
            received: 1_700_000_001_001,
            reporter: "c".into(),
            status: Status::Ok,
            drift_ms: Some(0.1),
            latency_ms: Some(1.0 / 3.0),
            records: None,
            bytes: Some(5.0),
        };
        let incident = Incident {
            id: 7,
            system: "src".into(),
            cause: Cause::Stale,
            opened_at: 1,
            count: 2,
            last_seen: 3,
            detail: "d".into(),
            acked_by: "ops".into(),
            acked_at: Some(2),
            notes: Vec::new(),
            resolved_at: None,
            resolved_by: String::new(),
            severity: 2,
            score: 30,
            at_risk: 1,
        };
        let loaded = round_trip(vec![
            Change::SystemPut(Box::new(image.clone())),
            Change::SystemEvent { system: "src".into(), seq: 1, event: Box::new(event.clone()), keep: 10 },
            Change::Dependency { upstream: "src".into(), downstream: "dash".into(), weight: Some(0.1 + 0.2) },
            Change::Incident { incident: Box::new(incident.clone()), keep: 10 },
        ]);
        let r = loaded.restored;
        assert_eq!(r.systems, [image]);
        assert_eq!(r.system_events, [("src".to_string(), 1, event)]);
        // Weights come back exactly, not rounded.
        assert_eq!(r.dependencies, [("src".to_string(), "dash".to_string(), 0.1 + 0.2)]);
        assert_eq!(r.incidents, [incident]);
    }

    #[test]
    fn agents_points_arrivals_pauses_and_stops_come_back_as_they_were_kept() {
        let arrival = ArrivalImage { agent_id: "w1".into(), payload: Bytes::from_static(b"p"), at: 12 };
        let timeout = CoreError::SyncTimeout {
            sync_id: "round-1".into(),
            waited_ms: 1000,
            missing: vec!["w2".into()],
            missing_count: 1,
        };
        let stop = EmergencyStop { actor: "ops".into(), since: 30, reason: "drill".into() };
        let pause = PauseImage { namespace: "lab".into(), agent_id: "w1".into(), actor: "ops".into(), since: 25 };
        let loaded = round_trip(vec![
            Change::Agent(agent()),
            Change::State { namespace: "lab".into(), agent_id: "w1".into(), state: json!({"epoch": 4}), version: 8 },
            Change::SyncPoint(point(SyncState::Waiting, None)),
            Change::Arrival {
                namespace: "lab".into(),
                sync_id: "round-1".into(),
                position: 0,
                arrival: arrival.clone(),
            },
            Change::SyncPoint(point(SyncState::TimedOut, Some(timeout.clone()))),
            Change::Paused(pause.clone()),
            Change::EmergencyStop(Some(stop.clone())),
            Change::Audit(AuditEntry::new(40, "ops", "pause_agent", AuditOutcome::Ok).target("lab", "w1")),
        ]);
        let r = loaded.restored;
        let mut expected = agent();
        expected.state = json!({"epoch": 4});
        expected.state_version = 8;
        assert_eq!(r.agents, vec![expected]);
        let mut expected_point = point(SyncState::TimedOut, Some(timeout));
        expected_point.arrivals = vec![arrival];
        assert_eq!(r.sync_points, vec![expected_point]);
        assert_eq!(r.pauses, vec![pause]);
        assert_eq!(r.emergency, Some(stop));
        assert_eq!(r.audit.len(), 1);
        assert_eq!(r.audit[0].outcome, AuditOutcome::Ok);
        assert_eq!(loaded.latest, 40);
    }

    #[test]
    fn lifting_pauses_and_the_stop_and_removing_things_removes_them() {
        let stop = EmergencyStop { actor: "ops".into(), since: 30, reason: "drill".into() };
        let pause = PauseImage { namespace: "lab".into(), agent_id: "w1".into(), actor: "ops".into(), since: 25 };
        let loaded = round_trip(vec![
            Change::Agent(agent()),
            Change::SyncPoint(point(SyncState::Waiting, None)),
            Change::Paused(pause),
            Change::EmergencyStop(Some(stop)),
            Change::Unpaused { namespace: "lab".into(), agent_id: "w1".into() },
            Change::EmergencyStop(None),
            Change::AgentRemoved { namespace: "lab".into(), agent_id: "w1".into() },
            Change::SyncPointRemoved { namespace: "lab".into(), sync_id: "round-1".into() },
        ]);
        assert_eq!(loaded.restored, Restored::default());
    }

    #[test]
    fn an_aborted_point_keeps_its_reason() {
        let aborted =
            CoreError::SyncAborted { sync_id: "round-1".into(), reason: "w2 left".into(), missing: vec!["w2".into()] };
        let loaded = round_trip(vec![Change::SyncPoint(point(SyncState::Failed, Some(aborted.clone())))]);
        let kept = loaded.restored.sync_points[0].failure.clone().expect("a failure");
        assert_eq!(kept.into_error("round-1"), aborted);
    }

    #[test]
    fn the_engine_settings_and_clock_origin_are_read_back() {
        let mut s = store::Store::open_in_memory().unwrap();
        let settings = lockstep_core::Config::default();
        s.apply(&[setting(ENGINE_SETTINGS, &settings), setting(CLOCK_ORIGIN, &1_700_000_000_000u64)]).unwrap();
        let loaded = from_store(s.load().unwrap()).unwrap();
        assert_eq!(loaded.engine_settings, Some(serde_json::to_value(&settings).unwrap()));
        assert_eq!(loaded.engine_settings.unwrap()["breaker"]["failure_threshold"], json!(5));
        assert_eq!(loaded.clock_origin, Some(1_700_000_000_000));
    }

    #[test]
    fn records_that_do_not_decode_are_refused_by_name() {
        let mut s = store::Store::open_in_memory().unwrap();
        let mut record = agent_record(agent());
        record.status = "sleeping".into();
        s.apply(&[store::Change::UpsertAgent(record)]).unwrap();
        let err = from_store(s.load().unwrap()).err().expect("refused");
        assert!(err.to_string().contains("agent 'w1' of namespace 'lab'"), "{err}");
        assert!(err.to_string().contains("sleeping"), "{err}");
    }

    /// Records exactly as earlier releases wrote them (their JSON texts were built by hand) still
    /// load, and what is written now for them is the same text.
    #[test]
    fn records_in_the_stored_shapes_load_and_are_written_the_same() {
        let participants = [
            (r#"{"agents":["w1","w2"]}"#, Participants::Agents(vec!["w1".into(), "w2".into()])),
            (r#"{"count":3}"#, Participants::Count(3)),
            (r#"{"role":"r"}"#, Participants::Role("r".into())),
        ];
        let quorums = [None, None, None, Some(2)];
        let participants = [
            participants[0].clone(),
            participants[1].clone(),
            participants[2].clone(),
            (
                r#"{"agents":["w1","w2","w3"],"quorum":2}"#,
                Participants::Agents(vec!["w1".into(), "w2".into(), "w3".into()]),
            ),
        ];
        let failures = [
            (
                r#"{"timeout":{"waited_ms":1000,"missing":["w2"],"missing_count":1}}"#,
                CoreError::SyncTimeout {
                    sync_id: "p0".into(),
                    waited_ms: 1000,
                    missing: vec!["w2".into()],
                    missing_count: 1,
                },
            ),
            (
                r#"{"aborted":{"reason":"w2 left","missing":["w2"]}}"#,
                CoreError::SyncAborted { sync_id: "p1".into(), reason: "w2 left".into(), missing: vec!["w2".into()] },
            ),
        ];
        let mut record = agent_record(agent());
        record.watches = vec!["agent:w2".into(), "role:r".into(), "all".into()];
        record.state_json = r#"{"epoch":3}"#.into();
        let mut changes = vec![store::Change::UpsertAgent(record.clone())];
        for (i, (text, _)) in participants.iter().enumerate() {
            let result_json = failures.get(i).map(|(f, _)| f.to_string());
            changes.push(store::Change::UpsertSyncPoint(store::SyncPointRecord {
                namespace: "lab".into(),
                sync_id: format!("p{i}"),
                participants_json: text.to_string(),
                state: if result_json.is_some() { "failed" } else { "waiting" }.into(),
                finished_at_ms: result_json.is_some().then_some(20),
                result_json,
                ..Default::default()
            }));
        }
        let stop = r#"{"actor":"ops","since":30,"reason":"drill"}"#;
        let pause = r#"{"actor":"ops","since":25}"#;
        for (key, value) in [(EMERGENCY_STOP, stop), ("pause:lab/w1", pause), (CLOCK_ORIGIN, "1700000000000")] {
            changes.push(store::Change::SetConfig(store::ConfigRecord { key: key.into(), value_json: value.into() }));
        }
        let mut s = store::Store::open_in_memory().unwrap();
        s.apply(&changes).unwrap();
        let loaded = from_store(s.load().unwrap()).unwrap();

        let r = &loaded.restored;
        assert_eq!(r.agents, vec![agent()]);
        assert_eq!(agent_record(agent()), record, "an agent is written as it was");
        for (i, (text, expected)) in participants.iter().enumerate() {
            let point = &r.sync_points[i];
            assert_eq!(&point.participants, expected);
            assert_eq!(point.quorum, quorums[i]);
            let failure = point.failure.clone().map(|f| f.into_error(&point.sync_id));
            assert_eq!(failure.as_ref(), failures.get(i).map(|(_, e)| e));
            let written = sync_point_record(point.clone());
            assert_eq!(written.participants_json, *text, "participants are written as they were");
            assert_eq!(written.result_json.as_deref(), failures.get(i).map(|(f, _)| *f));
        }
        let expected_stop = EmergencyStop { actor: "ops".into(), since: 30, reason: "drill".into() };
        assert_eq!(r.emergency.as_ref(), Some(&expected_stop));
        let store::Change::SetConfig(written) = change(&Change::EmergencyStop(Some(expected_stop))) else {
            panic!("a setting")
        };
        assert_eq!(
            serde_json::from_str::<Value>(&written.value_json).unwrap(),
            serde_json::from_str::<Value>(stop).unwrap()
        );
        let expected_pause =
            PauseImage { namespace: "lab".into(), agent_id: "w1".into(), actor: "ops".into(), since: 25 };
        assert_eq!(r.pauses, vec![expected_pause]);
        assert_eq!(loaded.clock_origin, Some(1_700_000_000_000));
    }

    #[test]
    fn a_pause_is_kept_whole_and_named_by_its_key() {
        let pause = PauseImage { namespace: "lab".into(), agent_id: "w1".into(), actor: "ops".into(), since: 25 };
        let store::Change::SetConfig(record) = change(&Change::Paused(pause.clone())) else { panic!("a setting") };
        assert_eq!(record.key, "pause:lab/w1");
        assert_eq!(serde_json::from_str::<PauseImage>(&record.value_json).unwrap(), pause);
    }
}
