//! Between the engine and the store: the engine's durable [`Change`]s become store records, and a
//! loaded [`Snapshot`] becomes what the engine is [`Restored`] from.
//!
//! The formats of the columns the store keeps as text are decided here, in one place: watch
//! targets `agent:<id>`, `role:<role>` or `all`; participants `{"agents":[..]}`, `{"count":n}` or
//! `{"role":".."}`; a failed point's error `{"timeout":{..}}` or `{"aborted":{..}}`; settings
//! `emergency_stop`, `pause:<namespace>/<agent>`, `clock_origin_unix_ms` and `engine_settings`,
//! each JSON. Anything
//! stored that does not decode is refused with the record named, never skipped.

use lockstep_core::command::{AuditEntry, AuditOutcome, CommandId, EmergencyStop};
use lockstep_core::durable::{AgentImage, ArrivalImage, Change, PauseImage, Restored, SyncPointImage};
use lockstep_core::{AgentStatus, CoreError, Participants, SyncState, Time, WatchTarget};
use lockstep_store as store;
use serde_json::{json, Value};

/// The setting holding the Unix time (ms) at which this data directory's clock reads zero.
pub const CLOCK_ORIGIN: &str = "clock_origin_unix_ms";
/// The setting holding the engine settings (breakers, limits, leases...) the server last started
/// with: a record for operators and backups; the configuration file stays their source.
pub const ENGINE_SETTINGS: &str = "engine_settings";
/// The setting holding the emergency stop in force.
const EMERGENCY_STOP: &str = "emergency_stop";
/// Settings `pause:<namespace>/<agent>` hold operators' pauses of single agents.
const PAUSE_PREFIX: &str = "pause:";

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

/// The store changes that keep `changes`, in order.
pub fn to_store(changes: Vec<Change>) -> Vec<store::Change> {
    changes.into_iter().map(change).collect()
}

fn change(c: Change) -> store::Change {
    match c {
        Change::Agent(a) => store::Change::UpsertAgent(agent_record(a)),
        Change::State { namespace, agent_id, state, version } => {
            store::Change::UpdateState { namespace, agent_id, state_json: state.to_string(), state_version: version }
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
        Change::Paused(p) => store::Change::SetConfig(store::ConfigRecord {
            key: pause_key(&p.namespace, &p.agent_id),
            value_json: json!({ "actor": p.actor, "since": p.since }).to_string(),
        }),
        Change::Unpaused { namespace, agent_id } => {
            store::Change::DeleteConfig { key: pause_key(&namespace, &agent_id) }
        }
        Change::EmergencyStop(None) => store::Change::DeleteConfig { key: EMERGENCY_STOP.into() },
        Change::EmergencyStop(Some(stop)) => store::Change::SetConfig(store::ConfigRecord {
            key: EMERGENCY_STOP.into(),
            value_json: json!({ "actor": stop.actor, "since": stop.since, "reason": stop.reason }).to_string(),
        }),
    }
}

/// A setting holding `value`.
pub fn setting(key: &str, value: &impl serde::Serialize) -> store::Change {
    let value_json = serde_json::to_string(value).expect("settings serialize to JSON");
    store::Change::SetConfig(store::ConfigRecord { key: key.into(), value_json })
}

fn pause_key(namespace: &str, agent: &str) -> String {
    format!("{PAUSE_PREFIX}{namespace}/{agent}")
}

fn agent_record(a: AgentImage) -> store::AgentRecord {
    store::AgentRecord {
        paused: a.status == AgentStatus::Paused,
        namespace: a.namespace,
        agent_id: a.agent_id,
        role: a.role,
        capabilities: a.capabilities,
        interests: a.interests,
        metadata: a.metadata,
        status: a.status.as_str().to_owned(),
        resume_token: a.resume_token,
        registered_at_ms: a.registered_at,
        state_json: a.state.to_string(),
        state_version: a.state_version,
        watches: a.watches.iter().map(watch_text).collect(),
    }
}

fn watch_text(w: &WatchTarget) -> String {
    match w {
        WatchTarget::Agent(id) => format!("agent:{id}"),
        WatchTarget::Role(role) => format!("role:{role}"),
        WatchTarget::All => "all".into(),
    }
}

fn parse_watch(text: &str) -> Option<WatchTarget> {
    match text.split_once(':') {
        Some(("agent", id)) => Some(WatchTarget::Agent(id.into())),
        Some(("role", role)) => Some(WatchTarget::Role(role.into())),
        None if text == "all" => Some(WatchTarget::All),
        _ => None,
    }
}

fn sync_point_record(p: SyncPointImage) -> store::SyncPointRecord {
    let participants = match &p.participants {
        Participants::Agents(ids) => json!({ "agents": ids }),
        Participants::Count(n) => json!({ "count": n }),
        Participants::Role(role) => json!({ "role": role }),
    };
    let result = p.failure.as_ref().map(|e| match e {
        CoreError::SyncTimeout { waited_ms, missing, missing_count, .. } => {
            json!({ "timeout": { "waited_ms": waited_ms, "missing": missing, "missing_count": missing_count } })
        }
        CoreError::SyncAborted { reason, missing, .. } => {
            json!({ "aborted": { "reason": reason, "missing": missing } })
        }
        other => json!({ "aborted": { "reason": other.to_string(), "missing": [] } }),
    });
    store::SyncPointRecord {
        namespace: p.namespace,
        sync_id: p.sync_id,
        participants_json: participants.to_string(),
        required: p.required,
        created_at_ms: p.created_at,
        deadline_ms: p.deadline,
        state: p.state.as_str().to_owned(),
        finished_at_ms: p.finished_at,
        result_json: result.map(|r| r.to_string()),
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
        let value: Value = serde_json::from_str(&c.value_json).map_err(|e| bad(record(), e.to_string()))?;
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
        let time = |field: &str| value.get(field).and_then(Value::as_u64);
        if c.key == ENGINE_SETTINGS {
            engine_settings = Some(value);
        } else if c.key == CLOCK_ORIGIN {
            clock_origin = Some(value.as_u64().ok_or_else(|| bad(record(), "not a number of milliseconds"))?);
        } else if c.key == EMERGENCY_STOP {
            let (Some(actor), Some(since), Some(reason)) = (text("actor"), time("since"), text("reason")) else {
                return Err(bad(record(), "needs actor, since and reason"));
            };
            restored.emergency = Some(EmergencyStop { actor, since, reason });
        } else if let Some(target) = c.key.strip_prefix(PAUSE_PREFIX) {
            let (Some((namespace, agent)), Some(actor), Some(since)) =
                (target.split_once('/'), text("actor"), time("since"))
            else {
                return Err(bad(record(), "needs namespace/agent, actor and since"));
            };
            restored.pauses.push(PauseImage { namespace: namespace.into(), agent_id: agent.into(), actor, since });
        }
    }
    Ok(Loaded { restored, clock_origin, latest, engine_settings })
}

fn agent_image(a: store::AgentRecord) -> Result<AgentImage, BadRecord> {
    let record = || format!("agent '{}' of namespace '{}'", a.agent_id, a.namespace);
    let status =
        AgentStatus::parse(&a.status).ok_or_else(|| bad(record(), format!("unknown status '{}'", a.status)))?;
    let state: Value = serde_json::from_str(&a.state_json).map_err(|e| bad(record(), format!("its state: {e}")))?;
    let watches = a
        .watches
        .iter()
        .map(|w| parse_watch(w).ok_or_else(|| bad(record(), format!("unknown watch '{w}'"))))
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
    let participants: Value =
        serde_json::from_str(&p.participants_json).map_err(|e| bad(record(), format!("its participants: {e}")))?;
    let participants = if let Some(ids) = participants.get("agents").and_then(Value::as_array) {
        let ids = ids.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>();
        Participants::Agents(ids.ok_or_else(|| bad(record(), "participant ids must be strings"))?)
    } else if let Some(n) = participants.get("count").and_then(Value::as_u64) {
        Participants::Count(u32::try_from(n).map_err(|_| bad(record(), "participant count too large"))?)
    } else if let Some(role) = participants.get("role").and_then(Value::as_str) {
        Participants::Role(role.to_owned())
    } else {
        return Err(bad(record(), format!("participants '{}' name no agents, count or role", p.participants_json)));
    };
    let state = SyncState::parse(&p.state).ok_or_else(|| bad(record(), format!("unknown state '{}'", p.state)))?;
    let failure = match &p.result_json {
        None => None,
        Some(text) => Some(failure(&p.sync_id, text).ok_or_else(|| bad(record(), format!("its failure '{text}'")))?),
    };
    Ok(SyncPointImage {
        namespace: p.namespace,
        sync_id: p.sync_id,
        participants,
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

fn failure(sync_id: &str, text: &str) -> Option<CoreError> {
    let value: Value = serde_json::from_str(text).ok()?;
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.get("missing")?.as_array()?.iter().map(|m| m.as_str().map(str::to_owned)).collect()
    };
    let sync_id = sync_id.to_owned();
    if let Some(t) = value.get("timeout") {
        return Some(CoreError::SyncTimeout {
            sync_id,
            waited_ms: t.get("waited_ms")?.as_u64()?,
            missing: strings(t)?,
            missing_count: u32::try_from(t.get("missing_count")?.as_u64()?).ok()?,
        });
    }
    let a = value.get("aborted")?;
    Some(CoreError::SyncAborted { sync_id, reason: a.get("reason")?.as_str()?.to_owned(), missing: strings(a)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
            required: vec!["w1".into(), "w2".into()],
            created_at: 10,
            deadline: 1010,
            state,
            finished_at: (state != SyncState::Waiting).then_some(20),
            failure,
            arrivals: Vec::new(),
        }
    }

    /// Applies `changes` to a real in-memory store and loads it back.
    fn round_trip(changes: Vec<Change>) -> Loaded {
        let mut s = store::Store::open_in_memory().unwrap();
        s.apply(&to_store(changes)).unwrap();
        from_store(s.load().unwrap()).unwrap()
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
        assert_eq!(loaded.restored.sync_points[0].failure, Some(aborted));
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
}
