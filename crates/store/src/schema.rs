//! The schema and its migrations.
//!
//! The schema version lives in SQLite's `PRAGMA user_version` (0 = no lockstep schema). Migration
//! `i` (1-based) takes a database from version `i - 1` to `i`; each runs in its own transaction
//! together with the version bump, so a crash or error mid-upgrade leaves the database at the
//! previous version, never in between. Migrations are append-only: a released one is never edited,
//! a change is a new migration. A database newer than [`SCHEMA_VERSION`] is refused untouched.
//! Migrations run with foreign keys enforced: one that rebuilds a table (SQLite's copy-and-rename
//! procedure) must keep `sync_arrivals` pointing at existing points.
//!
//! * **v1** — the registry, agent state and sync points: `agents`, `sync_points`, `sync_arrivals`
//!   (cascading from their point), `config`.
//! * **v2** — the control plane: operators' pauses survive a restart (`agents.paused`, 0 for every
//!   existing agent) and the audit log of operator actions is kept (`audit_log`, keyed by the
//!   engine's audit sequence number).
//! * **v3** — votes: `votes` and `vote_ballots` (cascading from their vote).
//! * **v4 (context)** — shared context: `context_keys` (a key's lifetime), `context_versions` (its
//!   retained versions, cascading from their key) and `context_namespaces` (each namespace's last
//!   version given out, so that numbering goes on after deletions).
//! * **v5 (tasks)** — task handoff: `tasks` (each task whole, as the engine's JSON) and
//!   `task_namespaces` (each namespace's last submission number, so that numbering goes on past
//!   forgotten tasks).
//! * **v7 (history)** — topic history: `history_topics` (each store-kept topic's last sequence
//!   number, so numbering goes on after a restart even when nothing is kept) and
//!   `history_messages` (the kept messages).
//! * **v6 (traces)** — execution traces: `traces`, one row per trace (its metadata as the engine's
//!   JSON, and its output's bytes when they are kept inline; larger outputs are kept beside the
//!   database).
//! * **v7** — reserved for topic history (built on another branch; empty here).
//! * **v8 (rounds)** — tick rounds: `round_series`, one row per series (its spec, last round
//!   number and retained rounds, as the engine's JSON).
//! * **v9 (systems)** — the sync monitor: `systems` (each synced system without its events, as the
//!   engine's JSON), `system_events` (its last events by number), `system_dependencies` (edges
//!   with their weight) and `system_incidents` (open incidents and the most recent resolved ones;
//!   the highest id stays, so ids go on after a restart).
//! * **v10 (system trends)** — `system_trends`: each synced system's trends (rolling quantile
//!   sketches and stale time, as the engine's JSON), kept every so many events.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{classify, StoreError};

/// One schema step: the SQL that takes the database from `version - 1` to `version`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Migration {
    pub version: u32,
    pub sql: &'static str,
}

/// Every migration, in order. `MIGRATIONS[i].version == i + 1`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        // Agents are rowid tables keyed by a unique (namespace, agent_id): state documents can be
        // kilobytes, and SQLite advises against WITHOUT ROWID for rows that large.
        sql: "
            CREATE TABLE agents (
                namespace         TEXT NOT NULL,
                agent_id          TEXT NOT NULL,
                role              TEXT NOT NULL,
                capabilities_json TEXT NOT NULL,   -- JSON array of strings
                interests_json    TEXT NOT NULL,   -- JSON array of topic patterns
                metadata_json     TEXT NOT NULL,   -- JSON object of strings
                status            TEXT NOT NULL,
                resume_token      TEXT NOT NULL,
                registered_at_ms  INTEGER NOT NULL,
                state_json        TEXT NOT NULL,
                state_version     INTEGER NOT NULL,
                watches_json      TEXT NOT NULL,   -- JSON array of serialized watch targets
                PRIMARY KEY (namespace, agent_id)
            );
            CREATE TABLE sync_points (
                namespace         TEXT NOT NULL,
                sync_id           TEXT NOT NULL,
                participants_json TEXT NOT NULL,
                required_json     TEXT NOT NULL,   -- JSON array of agent ids
                created_at_ms     INTEGER NOT NULL,
                deadline_ms       INTEGER NOT NULL,
                state             TEXT NOT NULL,
                finished_at_ms    INTEGER,
                result_json       TEXT,
                PRIMARY KEY (namespace, sync_id)
            );
            -- An agent arrives at a point once; `position` is its place in the arrival order.
            CREATE TABLE sync_arrivals (
                namespace TEXT NOT NULL,
                sync_id   TEXT NOT NULL,
                agent_id  TEXT NOT NULL,
                position  INTEGER NOT NULL,
                payload   BLOB NOT NULL,
                at_ms     INTEGER NOT NULL,
                PRIMARY KEY (namespace, sync_id, position),
                UNIQUE (namespace, sync_id, agent_id),
                FOREIGN KEY (namespace, sync_id) REFERENCES sync_points (namespace, sync_id) ON DELETE CASCADE
            );
            CREATE TABLE config (
                key        TEXT PRIMARY KEY NOT NULL,
                value_json TEXT NOT NULL
            );
        ",
    },
    Migration {
        version: 2,
        sql: "
            ALTER TABLE agents ADD COLUMN paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1));
            -- `seq` is the engine's audit sequence number (it aliases the rowid: appends are cheap
            -- and trimming the oldest is a range delete).
            CREATE TABLE audit_log (
                seq        INTEGER PRIMARY KEY,
                at_ms      INTEGER NOT NULL,
                actor      TEXT NOT NULL,
                command    TEXT NOT NULL,
                command_id INTEGER,
                namespace  TEXT NOT NULL,
                target     TEXT NOT NULL,
                params     TEXT NOT NULL,
                outcome    TEXT NOT NULL,
                detail     TEXT NOT NULL
            );
        ",
    },
    Migration {
        version: 3,
        sql: "
            CREATE TABLE votes (
                namespace      TEXT NOT NULL,
                vote_id        TEXT NOT NULL,
                vote_json      TEXT NOT NULL,   -- description, state and outcome, as the engine keeps them
                created_at_ms  INTEGER NOT NULL,
                finished_at_ms INTEGER,
                PRIMARY KEY (namespace, vote_id)
            );
            -- A voter casts one ballot per vote; `position` is its place in the order cast.
            CREATE TABLE vote_ballots (
                namespace   TEXT NOT NULL,
                vote_id     TEXT NOT NULL,
                agent_id    TEXT NOT NULL,
                position    INTEGER NOT NULL,
                ballot_json TEXT NOT NULL,
                at_ms       INTEGER NOT NULL,
                PRIMARY KEY (namespace, vote_id, position),
                UNIQUE (namespace, vote_id, agent_id),
                FOREIGN KEY (namespace, vote_id) REFERENCES votes (namespace, vote_id) ON DELETE CASCADE
            );
        ",
    },
    // The shared context migration.
    Migration {
        version: 4,
        sql: "
            CREATE TABLE context_keys (
                namespace TEXT NOT NULL,
                key       TEXT NOT NULL,
                meta_json TEXT NOT NULL,   -- lifetime: owner, expiry
                PRIMARY KEY (namespace, key)
            );
            -- One row per retained version; `version` is the namespace's number for the change.
            CREATE TABLE context_versions (
                namespace     TEXT NOT NULL,
                key           TEXT NOT NULL,
                version       INTEGER NOT NULL,
                revision_json TEXT NOT NULL,   -- value, patch, writer, time
                PRIMARY KEY (namespace, key, version),
                FOREIGN KEY (namespace, key) REFERENCES context_keys (namespace, key) ON DELETE CASCADE
            );
            CREATE TABLE context_namespaces (
                namespace    TEXT PRIMARY KEY NOT NULL,
                last_version INTEGER NOT NULL
            );
        ",
    },
    // The task handoff migration.
    Migration {
        version: 5,
        sql: "
            CREATE TABLE tasks (
                namespace TEXT NOT NULL,
                task_id   TEXT NOT NULL,
                seq       INTEGER NOT NULL,   -- submission number in the namespace
                task_json TEXT NOT NULL,      -- the task whole: input, pinned context, attempts, output
                PRIMARY KEY (namespace, task_id)
            );
            CREATE TABLE task_namespaces (
                namespace TEXT PRIMARY KEY NOT NULL,
                last_seq  INTEGER NOT NULL
            );
        ",
    },
    // The execution traces migration.
    Migration {
        version: 6,
        sql: "
            CREATE TABLE traces (
                namespace   TEXT NOT NULL,
                id          TEXT NOT NULL,
                meta_json   TEXT NOT NULL,
                inline      BLOB,
                PRIMARY KEY (namespace, id)
            );
        ",
    },
    // The topic history migration.
    Migration {
        version: 7,
        sql: "
            CREATE TABLE history_topics (
                namespace TEXT NOT NULL,
                topic     TEXT NOT NULL,
                last_seq  INTEGER NOT NULL,   -- numbering goes on from here after a restart
                PRIMARY KEY (namespace, topic)
            );
            CREATE TABLE history_messages (
                namespace    TEXT NOT NULL,
                topic        TEXT NOT NULL,
                seq          INTEGER NOT NULL,
                at_ms        INTEGER NOT NULL,
                publisher    TEXT NOT NULL,
                content_type TEXT NOT NULL,
                payload      BLOB NOT NULL,
                PRIMARY KEY (namespace, topic, seq)
            );
        ",
    },
    // The tick rounds migration: each round series whole (its spec, its last round number, its
    // retained rounds), rewritten when a round opens or closes.
    Migration {
        version: 8,
        sql: "
            CREATE TABLE round_series (
                namespace   TEXT NOT NULL,
                name        TEXT NOT NULL,
                series_json TEXT NOT NULL,
                PRIMARY KEY (namespace, name)
            );
        ",
    },
    // The sync monitor migration: systems whole but for their events, which are rows of their own
    // (one per event, the oldest beyond a system's bound dropped as new ones come).
    Migration {
        version: 9,
        sql: "
            CREATE TABLE systems (
                name        TEXT PRIMARY KEY,
                system_json TEXT NOT NULL
            );
            CREATE TABLE system_events (
                system     TEXT NOT NULL,
                seq        INTEGER NOT NULL,
                event_json TEXT NOT NULL,
                PRIMARY KEY (system, seq)
            );
            CREATE TABLE system_dependencies (
                upstream   TEXT NOT NULL,
                downstream TEXT NOT NULL,
                weight     TEXT NOT NULL,   -- the weight as the engine wrote it (exact round trip)
                PRIMARY KEY (upstream, downstream)
            );
            CREATE TABLE system_incidents (
                id            INTEGER PRIMARY KEY,
                resolved      INTEGER NOT NULL,
                incident_json TEXT NOT NULL
            );
        ",
    },
    // Trends of the sync monitor's systems: one row per system, replaced as it changes.
    Migration {
        version: 10,
        sql: "
            CREATE TABLE system_trends (
                system     TEXT PRIMARY KEY,
                trend_json TEXT NOT NULL
            );
        ",
    },
];

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The database's schema version (`PRAGMA user_version`).
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies every migration of `migrations` above the database's version, each in its own
/// transaction. The caller has already refused databases newer than `migrations`.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<(), StoreError> {
    let current = version(conn).map_err(|e| classify(path, e, |path, source| StoreError::Open { path, source }))?;
    for migration in migrations.iter().filter(|m| m.version > current) {
        let from = migration.version - 1;
        let fail = |e: rusqlite::Error| {
            classify(path, e, |path, source| StoreError::Migration { path, from, version: migration.version, source })
        };
        // IMMEDIATE takes the write lock up front, so a concurrent opener waits instead of both
        // reading version N and then racing to upgrade.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        tx.execute_batch(migration.sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", migration.version).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The latest schema version: the one place to change when a migration is added.
    const LATEST: u32 = 10;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
        }
        assert_eq!(SCHEMA_VERSION, LATEST);
    }

    #[test]
    fn migrating_step_by_step_reaches_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        migrate(&mut conn, path, &MIGRATIONS[..1]).unwrap();
        assert_eq!(version(&conn).unwrap(), 1);
        // v1 has no audit log and no pause column yet.
        assert!(conn.prepare("SELECT seq FROM audit_log").is_err());
        migrate(&mut conn, path, MIGRATIONS).unwrap();
        assert_eq!(version(&conn).unwrap(), LATEST);
        conn.prepare("SELECT series_json FROM round_series").unwrap();
        conn.prepare("SELECT event_json FROM system_events").unwrap();
        conn.prepare("SELECT incident_json FROM system_incidents").unwrap();
        conn.prepare("SELECT task_json FROM tasks").unwrap();
        conn.prepare("SELECT last_seq FROM history_topics").unwrap();
        conn.prepare("SELECT payload FROM history_messages").unwrap();
        conn.prepare("SELECT meta_json, inline FROM traces").unwrap();
        conn.prepare("SELECT revision_json FROM context_versions").unwrap();
        conn.prepare("SELECT seq FROM audit_log").unwrap();
        conn.prepare("SELECT paused FROM agents").unwrap();
        conn.prepare("SELECT ballot_json FROM vote_ballots").unwrap();
        // Running again is a no-op.
        migrate(&mut conn, path, MIGRATIONS).unwrap();
        assert_eq!(version(&conn).unwrap(), LATEST);
    }

    #[test]
    fn a_failing_migration_is_rolled_back_whole() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        migrate(&mut conn, path, &MIGRATIONS[..1]).unwrap();
        conn.execute("INSERT INTO config (key, value_json) VALUES ('k', '1')", []).unwrap();
        // The first statement of this step succeeds, the second fails: neither may remain.
        let broken = [
            MIGRATIONS[0],
            Migration { version: 2, sql: "CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);" },
        ];
        let err = migrate(&mut conn, path, &broken).unwrap_err();
        assert!(matches!(err, StoreError::Migration { from: 1, version: 2, .. }), "{err}");
        assert!(err.to_string().contains("still at version 1"), "{err}");
        assert_eq!(version(&conn).unwrap(), 1);
        assert!(conn.prepare("SELECT x FROM extra").is_err(), "the half-done step must be rolled back");
        let value: String = conn.query_row("SELECT value_json FROM config WHERE key = 'k'", [], |r| r.get(0)).unwrap();
        assert_eq!(value, "1");
    }
}
