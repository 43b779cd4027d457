//! Reading everything back: the [`Snapshot`] the engine rebuilds itself from at start.
//!
//! Every table is read in one read transaction, so the snapshot is the state after one commit. A
//! stored value that does not decode (a list column that is not a JSON list, a negative time) is
//! reported as [`StoreError::BadRecord`], never skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::{Connection, Row};

use crate::apply::{agent_name, context_name, history_name, point_name, task_name, vote_name};
use crate::error::{classify, StoreError};
use crate::records::{
    AgentRecord, ArrivalRecord, AuditRecord, BallotRecord, ConfigRecord, LoadedSyncPoint, LoadedVote, Snapshot,
    SyncPointRecord, VoteRecord,
};
use crate::store::Store;

impl Store {
    /// Reads every record: agents, sync points with their arrivals in arrival order, the audit log
    /// (oldest first) and the settings.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let path = self.path.as_path();
        let tx = self.conn.unchecked_transaction().map_err(read_error(path, "the database"))?;
        let snapshot = Snapshot {
            agents: read_agents(&tx, path)?,
            sync_points: read_sync_points(&tx, path)?,
            audit: read_audit(&tx, path)?,
            config: read_config(&tx, path)?,
            votes: read_votes(&tx, path)?,
            context: read_context(&tx, path)?,
            context_namespaces: query(
                &tx,
                path,
                "the context namespaces",
                "SELECT namespace, last_version FROM context_namespaces ORDER BY namespace",
                |row| {
                    let namespace: String = row.get(0)?;
                    let name = format!("the context of namespace '{namespace}'");
                    let v = uint(path, &name, "last_version", row.get(1)?)?;
                    Ok((namespace, v))
                },
            )?,
            tasks: query(
                &tx,
                path,
                "the tasks",
                "SELECT namespace, task_id, seq, task_json FROM tasks ORDER BY namespace, seq",
                |row| {
                    let (namespace, task_id): (String, String) = (row.get(0)?, row.get(1)?);
                    let seq = uint(path, &task_name(&namespace, &task_id), "seq", row.get(2)?)?;
                    Ok(crate::records::TaskRecord { namespace, task_id, seq, task_json: row.get(3)? })
                },
            )?,
            task_namespaces: query(
                &tx,
                path,
                "the task namespaces",
                "SELECT namespace, last_seq FROM task_namespaces ORDER BY namespace",
                |row| {
                    let namespace: String = row.get(0)?;
                    let name = format!("the tasks of namespace '{namespace}'");
                    let v = uint(path, &name, "last_seq", row.get(1)?)?;
                    Ok((namespace, v))
                },
            )?,
            traces: query(
                &tx,
                path,
                "the traces",
                "SELECT namespace, id, meta_json, inline FROM traces ORDER BY namespace, id",
                |row| {
                    Ok(crate::records::TraceRecord {
                        namespace: row.get(0)?,
                        id: row.get(1)?,
                        meta_json: row.get(2)?,
                        inline: row.get(3)?,
                    })
                },
            )?,
            systems: query(
                &tx,
                path,
                "the synced systems",
                "SELECT name, system_json FROM systems ORDER BY name",
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?,
            system_events: query(
                &tx,
                path,
                "the synced systems' events",
                "SELECT system, seq, event_json FROM system_events ORDER BY system, seq",
                |row| {
                    let system: String = row.get(0)?;
                    let seq = uint(path, &format!("an event of system '{system}'"), "seq", row.get(1)?)?;
                    Ok((system, seq, row.get(2)?))
                },
            )?,
            dependencies: query(
                &tx,
                path,
                "the dependencies",
                "SELECT upstream, downstream, weight FROM system_dependencies ORDER BY upstream, downstream",
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?,
            incidents: query(
                &tx,
                path,
                "the incidents",
                "SELECT incident_json FROM system_incidents ORDER BY id",
                |row| Ok(row.get(0)?),
            )?,
            system_trends: query(
                &tx,
                path,
                "the synced systems' trends",
                "SELECT system, trend_json FROM system_trends ORDER BY system",
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?,
            round_series: query(
                &tx,
                path,
                "the round series",
                "SELECT namespace, name, series_json FROM round_series ORDER BY namespace, name",
                |row| {
                    Ok(crate::records::RoundSeriesRecord {
                        namespace: row.get(0)?,
                        name: row.get(1)?,
                        series_json: row.get(2)?,
                    })
                },
            )?,
            history_topics: query(
                &tx,
                path,
                "the history topics",
                "SELECT namespace, topic, last_seq FROM history_topics ORDER BY namespace, topic",
                |row| {
                    let (namespace, topic): (String, String) = (row.get(0)?, row.get(1)?);
                    let last = uint(path, &history_name(&namespace, &topic), "last_seq", row.get(2)?)?;
                    Ok((namespace, topic, last))
                },
            )?,
            history_messages: query(
                &tx,
                path,
                "the history messages",
                "SELECT namespace, topic, seq, at_ms, publisher, content_type, payload FROM history_messages \
                 ORDER BY namespace, topic, seq",
                |row| {
                    let (namespace, topic): (String, String) = (row.get(0)?, row.get(1)?);
                    let name = history_name(&namespace, &topic);
                    Ok(crate::records::HistoryMessageRecord {
                        seq: uint(path, &name, "seq", row.get(2)?)?,
                        at_ms: uint(path, &name, "at_ms", row.get(3)?)?,
                        publisher: row.get(4)?,
                        content_type: row.get(5)?,
                        payload: row.get(6)?,
                        namespace,
                        topic,
                    })
                },
            )?,
        };
        // Read-only: ending the transaction by rollback is the same as by commit.
        drop(tx);
        Ok(snapshot)
    }
}

fn read_error<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| classify(path, e, |path, source| StoreError::Read { path, what: what.into(), source })
}

/// Why a row could not be decoded: SQLite failed to read it, or a value in it is bad.
enum DecodeError {
    Sqlite(rusqlite::Error),
    Bad(StoreError),
}

impl From<rusqlite::Error> for DecodeError {
    fn from(e: rusqlite::Error) -> Self {
        DecodeError::Sqlite(e)
    }
}

impl From<StoreError> for DecodeError {
    fn from(e: StoreError) -> Self {
        DecodeError::Bad(e)
    }
}

/// Runs `sql` and decodes each row with `decode`.
fn query<T>(
    conn: &Connection,
    path: &Path,
    what: &'static str,
    sql: &str,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(read_error(path, what))?;
    let mut rows = stmt.query([]).map_err(read_error(path, what))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(read_error(path, what))? {
        match decode(row) {
            Ok(record) => out.push(record),
            Err(DecodeError::Sqlite(e)) => return Err(read_error(path, what)(e)),
            Err(DecodeError::Bad(e)) => return Err(e),
        }
    }
    Ok(out)
}

fn read_agents(conn: &Connection, path: &Path) -> Result<Vec<AgentRecord>, StoreError> {
    query(
        conn,
        path,
        "the agents",
        "SELECT namespace, agent_id, role, capabilities_json, interests_json, metadata_json, status, resume_token,
                registered_at_ms, state_json, state_version, watches_json, paused
         FROM agents ORDER BY namespace, agent_id",
        |row| {
            let namespace: String = row.get(0)?;
            let agent_id: String = row.get(1)?;
            let name = agent_name(&namespace, &agent_id);
            Ok(AgentRecord {
                role: row.get(2)?,
                capabilities: list(path, &name, "capabilities_json", &row.get::<_, String>(3)?)?,
                interests: list(path, &name, "interests_json", &row.get::<_, String>(4)?)?,
                metadata: map(path, &name, "metadata_json", &row.get::<_, String>(5)?)?,
                status: row.get(6)?,
                resume_token: row.get(7)?,
                registered_at_ms: uint(path, &name, "registered_at_ms", row.get(8)?)?,
                state_json: row.get(9)?,
                state_version: uint(path, &name, "state_version", row.get(10)?)?,
                watches: list(path, &name, "watches_json", &row.get::<_, String>(11)?)?,
                paused: row.get(12)?,
                namespace,
                agent_id,
            })
        },
    )
}

fn read_sync_points(conn: &Connection, path: &Path) -> Result<Vec<LoadedSyncPoint>, StoreError> {
    let points = query(
        conn,
        path,
        "the sync points",
        "SELECT namespace, sync_id, participants_json, required_json, created_at_ms, deadline_ms, state,
                finished_at_ms, result_json
         FROM sync_points ORDER BY namespace, sync_id",
        |row| {
            let namespace: String = row.get(0)?;
            let sync_id: String = row.get(1)?;
            let name = point_name(&namespace, &sync_id);
            let finished: Option<i64> = row.get(7)?;
            Ok(SyncPointRecord {
                participants_json: row.get(2)?,
                required: list(path, &name, "required_json", &row.get::<_, String>(3)?)?,
                created_at_ms: uint(path, &name, "created_at_ms", row.get(4)?)?,
                deadline_ms: uint(path, &name, "deadline_ms", row.get(5)?)?,
                state: row.get(6)?,
                finished_at_ms: finished.map(|t| uint(path, &name, "finished_at_ms", t)).transpose()?,
                result_json: row.get(8)?,
                namespace,
                sync_id,
            })
        },
    )?;
    let arrivals = query(
        conn,
        path,
        "the sync point arrivals",
        "SELECT namespace, sync_id, agent_id, position, payload, at_ms
         FROM sync_arrivals ORDER BY namespace, sync_id, position",
        |row| {
            let (namespace, sync_id, agent_id): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let name = format!("the arrival of agent '{agent_id}' at {}", point_name(&namespace, &sync_id));
            Ok(ArrivalRecord {
                position: row.get(3)?,
                payload: row.get(4)?,
                at_ms: uint(path, &name, "at_ms", row.get(5)?)?,
                namespace,
                sync_id,
                agent_id,
            })
        },
    )?;
    let mut by_point: HashMap<(String, String), Vec<ArrivalRecord>> = HashMap::new();
    for a in arrivals {
        by_point.entry((a.namespace.clone(), a.sync_id.clone())).or_default().push(a);
    }
    let loaded = points
        .into_iter()
        .map(|point| {
            let arrivals = by_point.remove(&(point.namespace.clone(), point.sync_id.clone())).unwrap_or_default();
            LoadedSyncPoint { point, arrivals }
        })
        .collect();
    // Foreign keys make this impossible unless the file was edited with them off.
    if let Some(((namespace, sync_id), _)) = by_point.into_iter().next() {
        return Err(StoreError::BadRecord {
            path: path.to_path_buf(),
            what: "sync_arrivals".into(),
            detail: format!("arrivals for {}, which is not stored", point_name(&namespace, &sync_id)),
        });
    }
    Ok(loaded)
}

fn read_context(conn: &Connection, path: &Path) -> Result<Vec<crate::records::LoadedContextKey>, StoreError> {
    use crate::records::{ContextKeyRecord, ContextVersionRecord, LoadedContextKey};
    let keys = query(
        conn,
        path,
        "the context keys",
        "SELECT namespace, key, meta_json FROM context_keys ORDER BY namespace, key",
        |row| Ok(ContextKeyRecord { namespace: row.get(0)?, key: row.get(1)?, meta_json: row.get(2)? }),
    )?;
    let versions = query(
        conn,
        path,
        "the context versions",
        "SELECT namespace, key, version, revision_json FROM context_versions ORDER BY namespace, key, version",
        |row| {
            let (namespace, key): (String, String) = (row.get(0)?, row.get(1)?);
            let name = context_name(&namespace, &key);
            Ok(ContextVersionRecord {
                version: uint(path, &name, "version", row.get(2)?)?,
                revision_json: row.get(3)?,
                namespace,
                key,
            })
        },
    )?;
    let mut by_key: HashMap<(String, String), Vec<ContextVersionRecord>> = HashMap::new();
    for v in versions {
        by_key.entry((v.namespace.clone(), v.key.clone())).or_default().push(v);
    }
    Ok(keys
        .into_iter()
        .map(|key| {
            let versions = by_key.remove(&(key.namespace.clone(), key.key.clone())).unwrap_or_default();
            LoadedContextKey { key, versions }
        })
        .collect())
}

fn read_votes(conn: &Connection, path: &Path) -> Result<Vec<LoadedVote>, StoreError> {
    let votes = query(
        conn,
        path,
        "the votes",
        "SELECT namespace, vote_id, vote_json, created_at_ms, finished_at_ms FROM votes ORDER BY namespace, vote_id",
        |row| {
            let (namespace, vote_id): (String, String) = (row.get(0)?, row.get(1)?);
            let name = vote_name(&namespace, &vote_id);
            let finished: Option<i64> = row.get(4)?;
            Ok(VoteRecord {
                vote_json: row.get(2)?,
                created_at_ms: uint(path, &name, "created_at_ms", row.get(3)?)?,
                finished_at_ms: finished.map(|t| uint(path, &name, "finished_at_ms", t)).transpose()?,
                namespace,
                vote_id,
            })
        },
    )?;
    let ballots = query(
        conn,
        path,
        "the vote ballots",
        "SELECT namespace, vote_id, agent_id, position, ballot_json, at_ms
         FROM vote_ballots ORDER BY namespace, vote_id, position",
        |row| {
            let (namespace, vote_id, agent_id): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let name = format!("the ballot of agent '{agent_id}' in {}", vote_name(&namespace, &vote_id));
            Ok(BallotRecord {
                position: row.get(3)?,
                ballot_json: row.get(4)?,
                at_ms: uint(path, &name, "at_ms", row.get(5)?)?,
                namespace,
                vote_id,
                agent_id,
            })
        },
    )?;
    let mut by_vote: HashMap<(String, String), Vec<BallotRecord>> = HashMap::new();
    for b in ballots {
        by_vote.entry((b.namespace.clone(), b.vote_id.clone())).or_default().push(b);
    }
    let loaded = votes
        .into_iter()
        .map(|vote| {
            let ballots = by_vote.remove(&(vote.namespace.clone(), vote.vote_id.clone())).unwrap_or_default();
            LoadedVote { vote, ballots }
        })
        .collect();
    Ok(loaded)
}

fn read_audit(conn: &Connection, path: &Path) -> Result<Vec<AuditRecord>, StoreError> {
    query(
        conn,
        path,
        "the audit log",
        "SELECT seq, at_ms, actor, command, command_id, namespace, target, params, outcome, detail
         FROM audit_log ORDER BY seq",
        |row| {
            let seq: i64 = row.get(0)?;
            let name = format!("audit entry {seq}");
            let command_id: Option<i64> = row.get(4)?;
            Ok(AuditRecord {
                seq: uint(path, &name, "seq", seq)?,
                at_ms: uint(path, &name, "at_ms", row.get(1)?)?,
                actor: row.get(2)?,
                command: row.get(3)?,
                command_id: command_id.map(|id| uint(path, &name, "command_id", id)).transpose()?,
                namespace: row.get(5)?,
                target: row.get(6)?,
                params: row.get(7)?,
                outcome: row.get(8)?,
                detail: row.get(9)?,
            })
        },
    )
}

fn read_config(conn: &Connection, path: &Path) -> Result<Vec<ConfigRecord>, StoreError> {
    query(conn, path, "the settings", "SELECT key, value_json FROM config ORDER BY key", |row| {
        Ok(ConfigRecord { key: row.get(0)?, value_json: row.get(1)? })
    })
}

fn bad(path: &Path, record: &str, column: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::BadRecord {
        path: path.to_path_buf(),
        what: format!("{column} of {record}"),
        detail: detail.to_string(),
    }
}

fn list(path: &Path, record: &str, column: &str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| bad(path, record, column, format_args!("not a JSON list of strings: {e}")))
}

fn map(path: &Path, record: &str, column: &str, text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|e| bad(path, record, column, format_args!("not a JSON object of strings: {e}")))
}

fn uint(path: &Path, record: &str, column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| bad(path, record, column, format_args!("{value} is negative")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::Change;

    #[test]
    fn load_returns_every_record_in_a_stable_order() {
        let mut store = Store::open_in_memory().unwrap();
        let mut rich = agent("beta", "z");
        rich.metadata.insert("gpu".into(), "a100".into());
        rich.paused = true;
        store
            .apply(&[
                Change::UpsertAgent(rich.clone()),
                Change::UpsertAgent(agent("alpha", "b")),
                Change::UpsertAgent(agent("alpha", "a")),
                Change::UpsertSyncPoint(point("beta", "s1")),
                Change::UpsertSyncPoint(point("alpha", "s2")),
                Change::AddArrival(arrival("alpha", "s2", "a", 0)),
                Change::AppendAudit(audit(2)),
                Change::AppendAudit(audit(1)),
                Change::SetConfig(ConfigRecord { key: "z".into(), value_json: "1".into() }),
                Change::SetConfig(ConfigRecord { key: "a".into(), value_json: "2".into() }),
            ])
            .unwrap();
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.agents, vec![agent("alpha", "a"), agent("alpha", "b"), rich]);
        assert_eq!(
            snapshot.sync_points,
            vec![
                LoadedSyncPoint { point: point("alpha", "s2"), arrivals: vec![arrival("alpha", "s2", "a", 0)] },
                LoadedSyncPoint { point: point("beta", "s1"), arrivals: vec![] },
            ]
        );
        assert_eq!(snapshot.audit, vec![audit(1), audit(2)]);
        let keys: Vec<&str> = snapshot.config.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["a", "z"]);
    }

    #[test]
    fn a_value_that_does_not_decode_is_reported_not_skipped() {
        let mut store = Store::open_in_memory().unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        store.conn.execute("UPDATE agents SET capabilities_json = 'not json'", []).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StoreError::BadRecord { .. }) && err.is_corruption(), "{err}");
        let message = err.to_string();
        assert!(message.contains("capabilities_json of agent 'a' of namespace 'ns'"), "{message}");

        store.conn.execute("UPDATE agents SET capabilities_json = '[]', registered_at_ms = -1", []).unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("registered_at_ms") && err.to_string().contains("-1 is negative"), "{err}");
    }
}

#[cfg(test)]
mod systems_tests {
    use crate::{Change, Store};

    #[test]
    fn synced_systems_events_dependencies_incidents_and_trends_are_kept_within_their_bounds() {
        let mut store = Store::open_in_memory().unwrap();
        let mut batch = vec![Change::PutSystem { name: "src".into(), system_json: "{\"v\":1}".into() }];
        for seq in 1..=5 {
            batch.push(Change::PutSystemEvent { system: "src".into(), seq, event_json: format!("{seq}"), keep: 2 });
        }
        batch.push(Change::PutDependency { upstream: "src".into(), downstream: "dash".into(), weight: "0.5".into() });
        batch.push(Change::PutDependency { upstream: "src".into(), downstream: "gone".into(), weight: "1".into() });
        batch.push(Change::DeleteDependency { upstream: "src".into(), downstream: "gone".into() });
        for id in 1..=4 {
            let resolved = id != 2;
            batch.push(Change::PutIncident { id, resolved, incident_json: format!("{id}"), keep: 2 });
        }
        batch.push(Change::PutSystem { name: "src".into(), system_json: "{\"v\":2}".into() });
        batch.push(Change::PutSystemTrend { system: "src".into(), trend_json: "{\"t\":1}".into() });
        batch.push(Change::PutSystemTrend { system: "src".into(), trend_json: "{\"t\":2}".into() });
        store.apply(&batch).unwrap();
        let s = store.load().unwrap();
        assert_eq!(s.systems, [("src".to_string(), "{\"v\":2}".to_string())]);
        assert_eq!(s.system_events, [("src".to_string(), 4, "4".to_string()), ("src".to_string(), 5, "5".to_string())]);
        assert_eq!(s.dependencies, [("src".to_string(), "dash".to_string(), "0.5".to_string())]);
        // The open incident stays; of the resolved ones, the newest two (the highest id among them).
        assert_eq!(s.incidents, ["2", "3", "4"]);
        // A system's trends: the last written.
        assert_eq!(s.system_trends, [("src".to_string(), "{\"t\":2}".to_string())]);
    }
}
