//! Writing: a batch of [`Change`]s in one transaction.
//!
//! [`Store::apply`] is the unit of acknowledgement: when it returns `Ok`, every change of the batch
//! is committed (and durable as the store's [`Durability`](crate::Durability) says); when it
//! returns an error, none of them is. Statements are compiled once and kept (`prepare_cached`), so
//! the hot path — a state update — costs one indexed `UPDATE` plus the batch's single commit.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Transaction, TransactionBehavior};
use serde_json::Value;

use crate::error::{classify, StoreError};
use crate::records::{
    AgentRecord, ArrivalRecord, AuditRecord, BallotRecord, Change, ConfigRecord, SyncPointRecord, VoteRecord,
};
use crate::store::Store;

const UPSERT_AGENT: &str = "
    INSERT INTO agents (namespace, agent_id, role, capabilities_json, interests_json, metadata_json, status,
                        resume_token, registered_at_ms, state_json, state_version, watches_json, paused)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
    ON CONFLICT (namespace, agent_id) DO UPDATE SET
        role = excluded.role, capabilities_json = excluded.capabilities_json,
        interests_json = excluded.interests_json, metadata_json = excluded.metadata_json,
        status = excluded.status, resume_token = excluded.resume_token,
        registered_at_ms = excluded.registered_at_ms, state_json = excluded.state_json,
        state_version = excluded.state_version, watches_json = excluded.watches_json, paused = excluded.paused";
const UPDATE_STATE: &str =
    "UPDATE agents SET state_json = ?3, state_version = ?4 WHERE namespace = ?1 AND agent_id = ?2";
const SET_AGENT_STATUS: &str = "UPDATE agents SET status = ?3, paused = ?4 WHERE namespace = ?1 AND agent_id = ?2";
const DELETE_AGENT: &str = "DELETE FROM agents WHERE namespace = ?1 AND agent_id = ?2";
// An upsert, not INSERT OR REPLACE: REPLACE deletes the old row first, which would cascade to the
// point's arrivals.
const UPSERT_SYNC_POINT: &str = "
    INSERT INTO sync_points (namespace, sync_id, participants_json, required_json, created_at_ms, deadline_ms,
                             state, finished_at_ms, result_json)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (namespace, sync_id) DO UPDATE SET
        participants_json = excluded.participants_json, required_json = excluded.required_json,
        created_at_ms = excluded.created_at_ms, deadline_ms = excluded.deadline_ms, state = excluded.state,
        finished_at_ms = excluded.finished_at_ms, result_json = excluded.result_json";
const ADD_ARRIVAL: &str =
    "INSERT INTO sync_arrivals (namespace, sync_id, agent_id, position, payload, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const DELETE_SYNC_POINT: &str = "DELETE FROM sync_points WHERE namespace = ?1 AND sync_id = ?2";
const APPEND_AUDIT: &str = "
    INSERT INTO audit_log (seq, at_ms, actor, command, command_id, namespace, target, params, outcome, detail)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const COUNT_AUDIT: &str = "SELECT count(*) FROM audit_log";
// Drops the oldest `?1` entries by sequence number (no assumption that numbers are contiguous).
// It walks only the entries it drops: finding the newest `capacity` instead (ORDER BY seq DESC
// OFFSET capacity) walked every kept entry at every audited batch.
const TRIM_AUDIT: &str = "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log ORDER BY seq LIMIT ?1)";
const SET_CONFIG: &str = "
    INSERT INTO config (key, value_json) VALUES (?1, ?2)
    ON CONFLICT (key) DO UPDATE SET value_json = excluded.value_json";
const DELETE_CONFIG: &str = "DELETE FROM config WHERE key = ?1";
// An upsert (not REPLACE, which would cascade to the ballots).
const UPSERT_VOTE: &str = "
    INSERT INTO votes (namespace, vote_id, vote_json, created_at_ms, finished_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (namespace, vote_id) DO UPDATE SET
        vote_json = excluded.vote_json, created_at_ms = excluded.created_at_ms, finished_at_ms = excluded.finished_at_ms";
const ADD_BALLOT: &str = "
    INSERT INTO vote_ballots (namespace, vote_id, agent_id, position, ballot_json, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPSERT_CONTEXT_KEY: &str = "
    INSERT INTO context_keys (namespace, key, meta_json) VALUES (?1, ?2, ?3)
    ON CONFLICT (namespace, key) DO UPDATE SET meta_json = excluded.meta_json";
const ADD_CONTEXT_VERSION: &str =
    "INSERT OR REPLACE INTO context_versions (namespace, key, version, revision_json) VALUES (?1, ?2, ?3, ?4)";
const TRIM_CONTEXT_VERSIONS: &str = "DELETE FROM context_versions WHERE namespace = ?1 AND key = ?2 AND version < ?3";
const PUT_TRACE: &str = "INSERT OR REPLACE INTO traces (namespace, id, meta_json, inline) VALUES (?1, ?2, ?3, ?4)";
const DELETE_TRACE: &str = "DELETE FROM traces WHERE namespace = ?1 AND id = ?2";
// Rows rewritten whole, often (a series every round, a system every event, its trends), are
// upserts: INSERT OR REPLACE deletes the row and inserts it again under a new rowid, which dirties
// the old row's page, the last page and the key's index page; an upsert rewrites the row where it
// is, and dirties only its page.
const PUT_ROUND_SERIES: &str = "
    INSERT INTO round_series (namespace, name, series_json) VALUES (?1, ?2, ?3)
    ON CONFLICT (namespace, name) DO UPDATE SET series_json = excluded.series_json";
const DELETE_ROUND_SERIES: &str = "DELETE FROM round_series WHERE namespace = ?1 AND name = ?2";
const PUT_HISTORY_MESSAGE: &str = "
    INSERT OR REPLACE INTO history_messages (namespace, topic, seq, at_ms, publisher, content_type, payload)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const SET_HISTORY_TOPIC: &str = "
    INSERT INTO history_topics (namespace, topic, last_seq) VALUES (?1, ?2, ?3)
    ON CONFLICT (namespace, topic) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)";
const TRIM_HISTORY: &str = "DELETE FROM history_messages WHERE namespace = ?1 AND topic = ?2 AND seq < ?3";
const DELETE_HISTORY_MESSAGES: &str = "DELETE FROM history_messages WHERE namespace = ?1 AND topic = ?2";
const DELETE_HISTORY_TOPIC: &str = "DELETE FROM history_topics WHERE namespace = ?1 AND topic = ?2";
const DELETE_CONTEXT_KEY: &str = "DELETE FROM context_keys WHERE namespace = ?1 AND key = ?2";
const SET_CONTEXT_NAMESPACE: &str = "
    INSERT INTO context_namespaces (namespace, last_version) VALUES (?1, ?2)
    ON CONFLICT (namespace) DO UPDATE SET last_version = max(last_version, excluded.last_version)";
const PUT_TASK: &str = "
    INSERT INTO tasks (namespace, task_id, seq, task_json) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (namespace, task_id) DO UPDATE SET seq = excluded.seq, task_json = excluded.task_json";
const SET_TASK_NAMESPACE: &str = "
    INSERT INTO task_namespaces (namespace, last_seq) VALUES (?1, ?2)
    ON CONFLICT (namespace) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)";
const DELETE_TASK: &str = "DELETE FROM tasks WHERE namespace = ?1 AND task_id = ?2";
const DELETE_VOTE: &str = "DELETE FROM votes WHERE namespace = ?1 AND vote_id = ?2";
const PUT_SYSTEM: &str = "
    INSERT INTO systems (name, system_json) VALUES (?1, ?2)
    ON CONFLICT (name) DO UPDATE SET system_json = excluded.system_json";
const PUT_SYSTEM_EVENT: &str = "INSERT OR REPLACE INTO system_events (system, seq, event_json) VALUES (?1, ?2, ?3)";
const TRIM_SYSTEM_EVENTS: &str = "DELETE FROM system_events WHERE system = ?1 AND seq <= ?2";
const PUT_SYSTEM_TREND: &str = "
    INSERT INTO system_trends (system, trend_json) VALUES (?1, ?2)
    ON CONFLICT (system) DO UPDATE SET trend_json = excluded.trend_json";
const PUT_DEPENDENCY: &str =
    "INSERT OR REPLACE INTO system_dependencies (upstream, downstream, weight) VALUES (?1, ?2, ?3)";
const DELETE_DEPENDENCY: &str = "DELETE FROM system_dependencies WHERE upstream = ?1 AND downstream = ?2";
const PUT_INCIDENT: &str = "INSERT OR REPLACE INTO system_incidents (id, resolved, incident_json) VALUES (?1, ?2, ?3)";
const TRIM_INCIDENTS: &str = "
    DELETE FROM system_incidents WHERE resolved = 1 AND id NOT IN
        (SELECT id FROM system_incidents WHERE resolved = 1 ORDER BY id DESC LIMIT ?1)";

impl Store {
    /// Applies `batch` in order, in one transaction: all of it is committed, or none of it.
    ///
    /// Acknowledge what the batch stands for only after this returns `Ok`. On an error the
    /// database is as it was before the call and the store stays usable (a full disk or a lock may
    /// clear); the error says which change failed and why.
    pub fn apply(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let write_error = |what: &str| {
            let what = what.to_owned();
            move |e| classify(path, e, |path, source| StoreError::Write { path, what, source })
        };
        // IMMEDIATE takes the write lock at the start, so a lock held elsewhere fails the batch
        // before any work rather than at the commit.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write_error("the batch (starting its transaction)"))?;
        let mut appended: u64 = 0;
        for change in batch {
            write(&tx, path, change)?;
            appended += u64::from(matches!(change, Change::AppendAudit(_)));
        }
        let audit_rows = if appended > 0 {
            // Counted once (with this batch's entries), then kept: the store is the only writer
            // of the audit log.
            let rows = match self.audit_rows {
                Some(rows) => rows + appended,
                None => tx
                    .query_row(COUNT_AUDIT, [], |row| row.get::<_, i64>(0))
                    .map_err(write_error("the audit log (counting its entries)"))? as u64,
            };
            let excess = rows.saturating_sub(u64::try_from(self.audit_capacity).unwrap_or(u64::MAX));
            let dropped = if excess == 0 {
                0
            } else {
                tx.prepare_cached(TRIM_AUDIT)
                    .and_then(|mut stmt| stmt.execute([i64::try_from(excess).unwrap_or(i64::MAX)]))
                    .map_err(write_error("the audit log (dropping its oldest entries)"))?
            };
            Some(rows - dropped as u64)
        } else {
            self.audit_rows
        };
        tx.commit().map_err(write_error("the batch (committing it)"))?;
        // Only a committed batch changes the count (a failed one left the log as it was).
        self.audit_rows = audit_rows;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed();
        }
        Ok(())
    }
}

/// Writes one change inside the batch's transaction.
fn write(tx: &Transaction<'_>, path: &Path, change: &Change) -> Result<(), StoreError> {
    // Messages are built only on failure: the hot path formats nothing.
    let fail = |e, what: String| classify(path, e, |path, source| StoreError::Write { path, what, source });
    match change {
        Change::UpsertAgent(a) => {
            upsert_agent(tx, a).map_err(|e| e.into_store_error(path, || agent_name(&a.namespace, &a.agent_id)))
        }
        Change::UpdateState { namespace, agent_id, state_json, state_version } => {
            let what = || format!("the state of {}", agent_name(namespace, agent_id));
            let version = int(*state_version, || format!("the state version of {}", agent_name(namespace, agent_id)))?;
            let changed = tx
                .prepare_cached(UPDATE_STATE)
                .and_then(|mut stmt| stmt.execute(params![namespace, agent_id, state_json, version]))
                .map_err(|e| fail(e, what()))?;
            found(changed, path, what)
        }
        Change::SetAgentStatus { namespace, agent_id, status, paused } => {
            let what = || format!("the status of {}", agent_name(namespace, agent_id));
            let changed = tx
                .prepare_cached(SET_AGENT_STATUS)
                .and_then(|mut stmt| stmt.execute(params![namespace, agent_id, status, paused]))
                .map_err(|e| fail(e, what()))?;
            found(changed, path, what)
        }
        Change::DeleteAgent { namespace, agent_id } => tx
            .prepare_cached(DELETE_AGENT)
            .and_then(|mut stmt| stmt.execute(params![namespace, agent_id]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", agent_name(namespace, agent_id)))),
        Change::UpsertSyncPoint(p) => {
            upsert_sync_point(tx, p).map_err(|e| e.into_store_error(path, || point_name(&p.namespace, &p.sync_id)))
        }
        Change::AddArrival(a) => add_arrival(tx, a).map_err(|e| {
            e.into_store_error(path, || {
                format!("the arrival of agent '{}' at {}", a.agent_id, point_name(&a.namespace, &a.sync_id))
            })
        }),
        Change::DeleteSyncPoint { namespace, sync_id } => tx
            .prepare_cached(DELETE_SYNC_POINT)
            .and_then(|mut stmt| stmt.execute(params![namespace, sync_id]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", point_name(namespace, sync_id)))),
        Change::AppendAudit(a) => {
            append_audit(tx, a).map_err(|e| e.into_store_error(path, || format!("audit entry {}", a.seq)))
        }
        Change::SetConfig(ConfigRecord { key, value_json }) => tx
            .prepare_cached(SET_CONFIG)
            .and_then(|mut stmt| stmt.execute(params![key, value_json]))
            .map(drop)
            .map_err(|e| fail(e, format!("setting '{key}'"))),
        Change::UpsertVote(v) => {
            upsert_vote(tx, v).map_err(|e| e.into_store_error(path, || vote_name(&v.namespace, &v.vote_id)))
        }
        Change::AddBallot(b) => add_ballot(tx, b).map_err(|e| {
            e.into_store_error(path, || {
                format!("the ballot of agent '{}' in {}", b.agent_id, vote_name(&b.namespace, &b.vote_id))
            })
        }),
        Change::DeleteVote { namespace, vote_id } => tx
            .prepare_cached(DELETE_VOTE)
            .and_then(|mut stmt| stmt.execute(params![namespace, vote_id]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", vote_name(namespace, vote_id)))),
        Change::PutContextVersion { key, version, oldest_retained } => {
            put_context_version(tx, key, version, *oldest_retained)
                .map_err(|e| e.into_store_error(path, || context_name(&key.namespace, &key.key)))
        }
        Change::DeleteContextKey { namespace, key, version } => {
            let what = || format!("the removal of {}", context_name(namespace, key));
            let v = int(*version, what)?;
            tx.prepare_cached(DELETE_CONTEXT_KEY)
                .and_then(|mut stmt| stmt.execute(params![namespace, key]))
                .and_then(|_| tx.prepare_cached(SET_CONTEXT_NAMESPACE)?.execute(params![namespace, v]))
                .map(drop)
                .map_err(|e| fail(e, what()))
        }
        Change::PutTask(t) => {
            let what = || task_name(&t.namespace, &t.task_id);
            let seq = int(t.seq, what)?;
            tx.prepare_cached(PUT_TASK)
                .and_then(|mut stmt| stmt.execute(params![t.namespace, t.task_id, seq, t.task_json]))
                .and_then(|_| tx.prepare_cached(SET_TASK_NAMESPACE)?.execute(params![t.namespace, seq]))
                .map(drop)
                .map_err(|e| fail(e, what()))
        }
        Change::DeleteTask { namespace, task_id } => tx
            .prepare_cached(DELETE_TASK)
            .and_then(|mut stmt| stmt.execute(params![namespace, task_id]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", task_name(namespace, task_id)))),
        Change::PutTrace(t) => tx
            .prepare_cached(PUT_TRACE)
            .and_then(|mut stmt| stmt.execute(params![t.namespace, t.id, t.meta_json, t.inline]))
            .map(drop)
            .map_err(|e| fail(e, trace_name(&t.namespace, &t.id))),
        Change::DeleteTrace { namespace, id } => tx
            .prepare_cached(DELETE_TRACE)
            .and_then(|mut stmt| stmt.execute(params![namespace, id]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", trace_name(namespace, id)))),
        Change::PutSystem { name, system_json } => tx
            .prepare_cached(PUT_SYSTEM)
            .and_then(|mut stmt| stmt.execute(params![name, system_json]))
            .map(drop)
            .map_err(|e| fail(e, format!("system '{name}'"))),
        Change::PutSystemEvent { system, seq, event_json, keep } => {
            let what = || format!("event {seq} of system '{system}'");
            let (n, below) = (int(*seq, what)?, int(seq.saturating_sub(*keep), what)?);
            tx.prepare_cached(PUT_SYSTEM_EVENT)
                .and_then(|mut stmt| stmt.execute(params![system, n, event_json]))
                .and_then(|_| tx.prepare_cached(TRIM_SYSTEM_EVENTS)?.execute(params![system, below]))
                .map(drop)
                .map_err(|e| fail(e, what()))
        }
        Change::PutSystemTrend { system, trend_json } => tx
            .prepare_cached(PUT_SYSTEM_TREND)
            .and_then(|mut stmt| stmt.execute(params![system, trend_json]))
            .map(drop)
            .map_err(|e| fail(e, format!("the trends of system '{system}'"))),
        Change::PutDependency { upstream, downstream, weight } => tx
            .prepare_cached(PUT_DEPENDENCY)
            .and_then(|mut stmt| stmt.execute(params![upstream, downstream, weight]))
            .map(drop)
            .map_err(|e| fail(e, format!("dependency '{upstream}' -> '{downstream}'"))),
        Change::DeleteDependency { upstream, downstream } => tx
            .prepare_cached(DELETE_DEPENDENCY)
            .and_then(|mut stmt| stmt.execute(params![upstream, downstream]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of dependency '{upstream}' -> '{downstream}'"))),
        Change::PutIncident { id, resolved, incident_json, keep } => {
            let what = || format!("incident {id}");
            let (n, keep) = (int(*id, what)?, int((*keep).max(1), what)?);
            tx.prepare_cached(PUT_INCIDENT)
                .and_then(|mut stmt| stmt.execute(params![n, resolved, incident_json]))
                .and_then(|_| if *resolved { tx.prepare_cached(TRIM_INCIDENTS)?.execute(params![keep]) } else { Ok(0) })
                .map(drop)
                .map_err(|e| fail(e, what()))
        }
        Change::PutRoundSeries(r) => tx
            .prepare_cached(PUT_ROUND_SERIES)
            .and_then(|mut stmt| stmt.execute(params![r.namespace, r.name, r.series_json]))
            .map(drop)
            .map_err(|e| fail(e, round_series_name(&r.namespace, &r.name))),
        Change::DeleteRoundSeries { namespace, name } => tx
            .prepare_cached(DELETE_ROUND_SERIES)
            .and_then(|mut stmt| stmt.execute(params![namespace, name]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", round_series_name(namespace, name)))),
        Change::PutHistoryMessage(m) => {
            let what = || history_name(&m.namespace, &m.topic);
            let (seq, at) = (int(m.seq, what)?, int(m.at_ms, what)?);
            tx.prepare_cached(PUT_HISTORY_MESSAGE)
                .and_then(|mut stmt| {
                    stmt.execute(params![m.namespace, m.topic, seq, at, m.publisher, m.content_type, m.payload])
                })
                .and_then(|_| tx.prepare_cached(SET_HISTORY_TOPIC)?.execute(params![m.namespace, m.topic, seq]))
                .map(drop)
                .map_err(|e| fail(e, what()))
        }
        Change::TrimHistory { namespace, topic, before_seq } => {
            let before = int(*before_seq, || history_name(namespace, topic))?;
            tx.prepare_cached(TRIM_HISTORY)
                .and_then(|mut stmt| stmt.execute(params![namespace, topic, before]))
                .map(drop)
                .map_err(|e| fail(e, format!("the trimming of {}", history_name(namespace, topic))))
        }
        Change::DeleteHistoryTopic { namespace, topic } => tx
            .prepare_cached(DELETE_HISTORY_MESSAGES)
            .and_then(|mut stmt| stmt.execute(params![namespace, topic]))
            .and_then(|_| tx.prepare_cached(DELETE_HISTORY_TOPIC)?.execute(params![namespace, topic]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of {}", history_name(namespace, topic)))),
        Change::DeleteConfig { key } => tx
            .prepare_cached(DELETE_CONFIG)
            .and_then(|mut stmt| stmt.execute(params![key]))
            .map(drop)
            .map_err(|e| fail(e, format!("the removal of setting '{key}'"))),
    }
}

fn upsert_agent(tx: &Transaction<'_>, a: &AgentRecord) -> Result<(), RecordError> {
    let registered_at = int(a.registered_at_ms, || format!("registered_at_ms of agent '{}'", a.agent_id))?;
    let version = int(a.state_version, || format!("state_version of agent '{}'", a.agent_id))?;
    tx.prepare_cached(UPSERT_AGENT)?.execute(params![
        a.namespace,
        a.agent_id,
        a.role,
        list_json(&a.capabilities),
        list_json(&a.interests),
        map_json(&a.metadata),
        a.status,
        a.resume_token,
        registered_at,
        a.state_json,
        version,
        list_json(&a.watches),
        a.paused,
    ])?;
    Ok(())
}

fn upsert_sync_point(tx: &Transaction<'_>, p: &SyncPointRecord) -> Result<(), RecordError> {
    let created = int(p.created_at_ms, || format!("created_at_ms of sync point '{}'", p.sync_id))?;
    let deadline = int(p.deadline_ms, || format!("deadline_ms of sync point '{}'", p.sync_id))?;
    let finished =
        p.finished_at_ms.map(|t| int(t, || format!("finished_at_ms of sync point '{}'", p.sync_id))).transpose()?;
    tx.prepare_cached(UPSERT_SYNC_POINT)?.execute(params![
        p.namespace,
        p.sync_id,
        p.participants_json,
        list_json(&p.required),
        created,
        deadline,
        p.state,
        finished,
        p.result_json,
    ])?;
    Ok(())
}

fn put_context_version(
    tx: &Transaction<'_>,
    key: &crate::records::ContextKeyRecord,
    version: &crate::records::ContextVersionRecord,
    oldest_retained: u64,
) -> Result<(), RecordError> {
    let v = int(version.version, || format!("version of {}", context_name(&key.namespace, &key.key)))?;
    let oldest = int(oldest_retained, || format!("oldest version of {}", context_name(&key.namespace, &key.key)))?;
    tx.prepare_cached(UPSERT_CONTEXT_KEY)?.execute(params![key.namespace, key.key, key.meta_json])?;
    tx.prepare_cached(ADD_CONTEXT_VERSION)?.execute(params![
        version.namespace,
        version.key,
        v,
        version.revision_json
    ])?;
    tx.prepare_cached(TRIM_CONTEXT_VERSIONS)?.execute(params![key.namespace, key.key, oldest])?;
    Ok(())
}

fn upsert_vote(tx: &Transaction<'_>, v: &VoteRecord) -> Result<(), RecordError> {
    let created = int(v.created_at_ms, || format!("created_at_ms of vote '{}'", v.vote_id))?;
    let finished =
        v.finished_at_ms.map(|t| int(t, || format!("finished_at_ms of vote '{}'", v.vote_id))).transpose()?;
    tx.prepare_cached(UPSERT_VOTE)?.execute(params![v.namespace, v.vote_id, v.vote_json, created, finished])?;
    Ok(())
}

fn add_ballot(tx: &Transaction<'_>, b: &BallotRecord) -> Result<(), RecordError> {
    let at = int(b.at_ms, || format!("at_ms of the ballot of agent '{}'", b.agent_id))?;
    tx.prepare_cached(ADD_BALLOT)?.execute(params![
        b.namespace,
        b.vote_id,
        b.agent_id,
        b.position,
        b.ballot_json,
        at
    ])?;
    Ok(())
}

fn add_arrival(tx: &Transaction<'_>, a: &ArrivalRecord) -> Result<(), RecordError> {
    let at = int(a.at_ms, || format!("at_ms of the arrival of agent '{}'", a.agent_id))?;
    tx.prepare_cached(ADD_ARRIVAL)?.execute(params![a.namespace, a.sync_id, a.agent_id, a.position, a.payload, at])?;
    Ok(())
}

fn append_audit(tx: &Transaction<'_>, a: &AuditRecord) -> Result<(), RecordError> {
    let seq = int(a.seq, || "the seq of an audit entry".into())?;
    let at = int(a.at_ms, || format!("at_ms of audit entry {}", a.seq))?;
    let command_id = a.command_id.map(|id| int(id, || format!("command_id of audit entry {}", a.seq))).transpose()?;
    tx.prepare_cached(APPEND_AUDIT)?.execute(params![
        seq,
        at,
        a.actor,
        a.command,
        command_id,
        a.namespace,
        a.target,
        a.params,
        a.outcome,
        a.detail,
    ])?;
    Ok(())
}

/// Why writing one record failed: a value SQLite cannot hold, or SQLite itself.
enum RecordError {
    Range(StoreError),
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for RecordError {
    fn from(e: rusqlite::Error) -> Self {
        RecordError::Sqlite(e)
    }
}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> Self {
        RecordError::Range(e)
    }
}

impl RecordError {
    fn into_store_error(self, path: &Path, what: impl FnOnce() -> String) -> StoreError {
        match self {
            RecordError::Range(e) => e,
            RecordError::Sqlite(e) => {
                classify(path, e, |path, source| StoreError::Write { path, what: what(), source })
            }
        }
    }
}

/// `Missing` when an update matched no row: the engine updated something it never stored, and
/// acknowledging it would lose it.
fn found(changed: usize, path: &Path, what: impl FnOnce() -> String) -> Result<(), StoreError> {
    if changed == 0 {
        Err(StoreError::Missing { path: path.to_path_buf(), what: what() })
    } else {
        Ok(())
    }
}

/// SQLite integers are signed 64-bit; a larger `u64` is refused rather than wrapped.
fn int(value: u64, what: impl FnOnce() -> String) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what: what(), value })
}

fn list_json(items: &[String]) -> String {
    Value::Array(items.iter().cloned().map(Value::String).collect()).to_string()
}

fn map_json(map: &BTreeMap<String, String>) -> String {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()).to_string()
}

pub(crate) fn agent_name(namespace: &str, agent_id: &str) -> String {
    format!("agent '{agent_id}' of namespace '{namespace}'")
}

pub(crate) fn history_name(namespace: &str, topic: &str) -> String {
    format!("the history of topic '{topic}' of namespace '{namespace}'")
}

pub(crate) fn trace_name(namespace: &str, id: &str) -> String {
    format!("trace '{id}' of namespace '{namespace}'")
}

pub(crate) fn context_name(namespace: &str, key: &str) -> String {
    format!("context key '{key}' of namespace '{namespace}'")
}

pub(crate) fn round_series_name(namespace: &str, name: &str) -> String {
    format!("round series '{name}' of namespace '{namespace}'")
}

pub(crate) fn task_name(namespace: &str, task_id: &str) -> String {
    format!("task '{task_id}' of namespace '{namespace}'")
}

pub(crate) fn vote_name(namespace: &str, vote_id: &str) -> String {
    format!("vote '{vote_id}' of namespace '{namespace}'")
}

pub(crate) fn point_name(namespace: &str, sync_id: &str) -> String {
    format!("sync point '{sync_id}' of namespace '{namespace}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, StoreOptions};
    use crate::testutil::*;

    fn store() -> Store {
        Store::open_in_memory().unwrap()
    }

    #[test]
    fn an_empty_batch_commits_nothing() {
        let mut store = store();
        store.apply(&[]).unwrap();
        assert_eq!(store.load().unwrap(), crate::Snapshot::default());
    }

    #[test]
    fn agents_are_inserted_replaced_updated_and_deleted() {
        let mut store = store();
        store.apply(&[Change::UpsertAgent(agent("ns", "a")), Change::UpsertAgent(agent("ns", "b"))]).unwrap();

        let mut changed = agent("ns", "a");
        changed.role = "planner".into();
        changed.capabilities = vec!["plan".into(), "route".into()];
        changed.metadata.insert("zone".into(), "2".into());
        changed.watches = vec!["all".into()];
        store
            .apply(&[
                Change::UpsertAgent(changed.clone()),
                Change::UpdateState {
                    namespace: "ns".into(),
                    agent_id: "a".into(),
                    state_json: r#"{"x":1}"#.into(),
                    state_version: 7,
                },
                Change::SetAgentStatus {
                    namespace: "ns".into(),
                    agent_id: "a".into(),
                    status: "paused".into(),
                    paused: true,
                },
                Change::DeleteAgent { namespace: "ns".into(), agent_id: "b".into() },
                // Deleting what is not stored is not an error (the engine may forget twice).
                Change::DeleteAgent { namespace: "ns".into(), agent_id: "never".into() },
            ])
            .unwrap();
        changed.state_json = r#"{"x":1}"#.into();
        changed.state_version = 7;
        changed.status = "paused".into();
        changed.paused = true;
        assert_eq!(store.load().unwrap().agents, vec![changed]);
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let mut store = store();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        let before = store.load().unwrap();
        let err = store
            .apply(&[
                Change::UpsertAgent(agent("ns", "b")),
                Change::SetConfig(ConfigRecord { key: "k".into(), value_json: "1".into() }),
                // The engine updates an agent it never stored: the batch must not be acknowledged.
                Change::UpdateState {
                    namespace: "ns".into(),
                    agent_id: "ghost".into(),
                    state_json: "{}".into(),
                    state_version: 1,
                },
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("agent 'ghost' of namespace 'ns'"), "{err}");
        assert_eq!(store.load().unwrap(), before);

        let err = store
            .apply(&[
                Change::UpsertAgent(agent("ns", "c")),
                Change::SetAgentStatus {
                    namespace: "other".into(),
                    agent_id: "a".into(),
                    status: "idle".into(),
                    paused: false,
                },
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        assert_eq!(store.load().unwrap(), before);
    }

    #[test]
    fn numbers_beyond_sqlite_integers_are_refused() {
        let mut store = store();
        let mut a = agent("ns", "a");
        a.state_version = u64::MAX;
        let err = store.apply(&[Change::UpsertAgent(a)]).unwrap_err();
        assert!(matches!(err, StoreError::OutOfRange { value: u64::MAX, .. }), "{err}");
        assert!(store.load().unwrap().agents.is_empty());
    }

    #[test]
    fn sync_points_keep_their_arrivals_when_updated_and_drop_them_when_deleted() {
        let mut store = store();
        store
            .apply(&[
                Change::UpsertSyncPoint(point("ns", "s")),
                // Recorded out of order: loading returns arrival order.
                Change::AddArrival(arrival("ns", "s", "b", 1)),
                Change::AddArrival(arrival("ns", "s", "a", 0)),
            ])
            .unwrap();
        let mut finished = point("ns", "s");
        finished.state = "completed".into();
        finished.finished_at_ms = Some(900);
        finished.result_json = Some(r#"{"order":["a","b"]}"#.into());
        store.apply(&[Change::UpsertSyncPoint(finished.clone())]).unwrap();

        let points = store.load().unwrap().sync_points;
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].point, finished);
        let order: Vec<&str> = points[0].arrivals.iter().map(|a| a.agent_id.as_str()).collect();
        assert_eq!(order, ["a", "b"], "an upsert must not drop the arrivals");

        store.apply(&[Change::DeleteSyncPoint { namespace: "ns".into(), sync_id: "s".into() }]).unwrap();
        assert!(store.load().unwrap().sync_points.is_empty());
        let left: i64 = store.conn.query_row("SELECT COUNT(*) FROM sync_arrivals", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "arrivals go with their point");
    }

    #[test]
    fn arrivals_must_belong_to_a_stored_point_and_come_once() {
        let mut store = store();
        let err = store.apply(&[Change::AddArrival(arrival("ns", "nowhere", "a", 0))]).unwrap_err();
        assert!(matches!(err, StoreError::Write { .. }), "{err}");
        assert!(err.to_string().contains("sync point 'nowhere'"), "{err}");

        store
            .apply(&[Change::UpsertSyncPoint(point("ns", "s")), Change::AddArrival(arrival("ns", "s", "a", 0))])
            .unwrap();
        let err = store.apply(&[Change::AddArrival(arrival("ns", "s", "a", 1))]).unwrap_err();
        assert!(err.to_string().contains("arrival of agent 'a'"), "{err}");
        assert_eq!(store.load().unwrap().sync_points[0].arrivals.len(), 1);
    }

    #[test]
    fn the_audit_log_keeps_the_newest_entries_up_to_its_capacity() {
        let mut store = store();
        store.audit_capacity = 3;
        store.apply(&[Change::AppendAudit(audit(1)), Change::AppendAudit(audit(2))]).unwrap();
        assert_eq!(store.load().unwrap().audit.len(), 2);
        store
            .apply(&[Change::AppendAudit(audit(3)), Change::AppendAudit(audit(4)), Change::AppendAudit(audit(6))])
            .unwrap();
        let seqs: Vec<u64> = store.load().unwrap().audit.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [3, 4, 6]);

        // A sequence number used twice is an engine bug, refused with the batch.
        let err = store.apply(&[Change::AppendAudit(audit(6))]).unwrap_err();
        assert!(err.to_string().contains("audit entry 6"), "{err}");
        assert_eq!(store.load().unwrap().audit, vec![audit(3), audit(4), audit(6)]);
        // The refused batch left the count as it was: the next entry drops exactly the oldest.
        store.apply(&[Change::AppendAudit(audit(8))]).unwrap();
        let seqs: Vec<u64> = store.load().unwrap().audit.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [4, 6, 8]);

        // A capacity beyond what SQLite counts keeps everything.
        store.audit_capacity = usize::MAX;
        store.apply(&[Change::AppendAudit(audit(7))]).unwrap();
        assert_eq!(store.load().unwrap().audit.len(), 4);
    }

    #[test]
    fn a_log_reopened_with_a_smaller_capacity_is_cut_to_it_at_the_next_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let open = |capacity| {
            let options = StoreOptions { audit_capacity: capacity, ..StoreOptions::new(Durability::Normal) };
            Store::open_with(tmp.path(), options).unwrap()
        };
        let mut store = open(10);
        store.apply(&(1..=6).map(|seq| Change::AppendAudit(audit(seq))).collect::<Vec<_>>()).unwrap();
        drop(store);
        let mut store = open(3);
        assert_eq!(store.load().unwrap().audit.len(), 6, "opening drops nothing");
        store.apply(&[Change::AppendAudit(audit(7))]).unwrap();
        let seqs: Vec<u64> = store.load().unwrap().audit.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [5, 6, 7]);
    }

    #[test]
    fn a_round_series_put_again_replaces_the_kept_one() {
        let mut store = store();
        let series = |namespace: &str, json: &str| {
            Change::PutRoundSeries(crate::records::RoundSeriesRecord {
                namespace: namespace.into(),
                name: "ticks".into(),
                series_json: json.into(),
            })
        };
        store.apply(&[series("a", "{\"round\":1}"), series("b", "{\"round\":1}")]).unwrap();
        store.apply(&[series("a", "{\"round\":2}")]).unwrap();
        let kept: Vec<(String, String)> =
            store.load().unwrap().round_series.into_iter().map(|r| (r.namespace, r.series_json)).collect();
        assert_eq!(kept, [("a".into(), "{\"round\":2}".into()), ("b".into(), "{\"round\":1}".into())]);
    }

    #[test]
    fn settings_are_set_replaced_and_removed() {
        let mut store = store();
        let set =
            |key: &str, value: &str| Change::SetConfig(ConfigRecord { key: key.into(), value_json: value.into() });
        store.apply(&[set("breaker", r#"{"failures":3}"#), set("ns.alpha", "{}")]).unwrap();
        store.apply(&[set("breaker", r#"{"failures":5}"#), Change::DeleteConfig { key: "ns.alpha".into() }]).unwrap();
        assert_eq!(
            store.load().unwrap().config,
            vec![ConfigRecord { key: "breaker".into(), value_json: r#"{"failures":5}"#.into() }]
        );
    }
}
