//! Opening the database: where it lives, how it is configured, and what is refused.
//!
//! [`Store::open`] owns `DIR/lockstep.db`. Guarantees:
//!
//! * **A file that exists is never initialised anew.** A new database is built beside the final
//!   name (`lockstep.db.new`), fully migrated, synced, then renamed into place; so an existing
//!   `lockstep.db` that holds no lockstep schema (empty, truncated to nothing, another program's
//!   file) is damage and is refused, never silently reset.
//! * **Refusals before any write.** The schema version is read first: a database newer than this
//!   code is refused untouched. Then `PRAGMA quick_check` runs; a damaged file is refused with a
//!   message naming it and suggesting a backup. A read-only file or directory is refused at open
//!   (the write lock is taken and released once), not at the first acknowledgement.
//! * **Configuration.** WAL journal, `synchronous` per [`Durability`], foreign keys enforced, a
//!   busy timeout, and a cap on the WAL file's size once checkpointed.
//! * **Migrations** run at open, each in its own transaction (see [`crate::schema`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, MAIN_DB};

use crate::error::{classify, StoreError};
use crate::schema::{self, Migration, MIGRATIONS};

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "lockstep.db";

/// Where a new database is built before it is renamed to [`DB_FILE_NAME`].
const NEW_DB_FILE_NAME: &str = "lockstep.db.new";

/// Audit entries kept by default (the engine's default audit capacity).
pub const DEFAULT_AUDIT_CAPACITY: usize = 10_000;

/// How long a write waits for a lock held by another connection before failing with
/// [`StoreError::Busy`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Once checkpointed, the WAL file is truncated to at most this many bytes (a burst of writes can
/// grow it; this keeps the disk use bounded afterwards).
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Prepared statements kept per connection: every statement of `apply` and `load` stays compiled.
const STATEMENT_CACHE: usize = 32;

/// What a commit survives. Both survive a crash or kill of the lockstep process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a crash of lockstep; a power loss or OS crash may
    /// lose the last commits (never corrupting the file). No fsync per commit.
    Normal,
    /// `synchronous=FULL`: a commit also survives a power loss or OS crash, at the cost of an
    /// fsync of the WAL per commit.
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// How to open a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Audit entries kept: each batch that appends to the audit log drops the oldest beyond this
    /// (at least 1).
    pub audit_capacity: usize,
    /// How long a write waits for another connection's lock.
    pub busy_timeout: Duration,
}

impl StoreOptions {
    /// The defaults, with this durability.
    pub fn new(durability: Durability) -> Self {
        StoreOptions { durability, audit_capacity: DEFAULT_AUDIT_CAPACITY, busy_timeout: DEFAULT_BUSY_TIMEOUT }
    }
}

/// lockstep's durable state in one SQLite database. One `Store` is the only writer; it is `Send`
/// (not `Sync`): keep it on the task or thread that commits.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    /// The database file (`:memory:` for an in-memory store), for messages.
    pub(crate) path: PathBuf,
    pub(crate) audit_capacity: usize,
    /// Entries in the audit log, counted by the first batch that appends to it and kept current
    /// since, so that dropping the oldest costs what is dropped (`None`: not counted yet).
    pub(crate) audit_rows: Option<u64>,
    /// Checkpoints the write-ahead log beside the writer (`None` in memory).
    pub(crate) checkpointer: Option<crate::checkpoint::Checkpointer>,
}

impl Store {
    /// Opens `dir/lockstep.db`, creating the directory and the database if needed, and upgrades its
    /// schema to [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::new(durability))
    }

    /// [`Store::open`] with every option.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_at(dir, &options, MIGRATIONS, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    /// A store that lives in memory only, at the current schema (for tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = PathBuf::from(":memory:");
        let open_error = |path, source| StoreError::Open { path, source };
        let mut conn = Connection::open_in_memory().map_err(|e| classify(&path, e, open_error))?;
        configure(&conn, &path, Durability::Normal)?;
        schema::migrate(&mut conn, &path, MIGRATIONS)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Store { conn, path, audit_capacity: DEFAULT_AUDIT_CAPACITY, audit_rows: None, checkpointer: None })
    }

    /// Opens with only `migrations` known (tests open at an older version this way) and SQLite
    /// `flags` (tests simulate a read-only file this way).
    pub(crate) fn open_at(
        dir: &Path,
        options: &StoreOptions,
        migrations: &[Migration],
        flags: OpenFlags,
    ) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE_NAME);
        ensure_dir(dir)?;
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // SQLite would replay a write-ahead log left without its database onto the new,
                // empty file: a mix of old pages and new schema.
                let wal = dir.join(format!("{DB_FILE_NAME}-wal"));
                if fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(StoreError::Corrupt {
                        path,
                        detail: format!(
                            "the file is missing but its write-ahead log {} is there: the database was moved or \
                             deleted without it",
                            wal.display()
                        ),
                    });
                }
                create(dir, &path, migrations)?
            }
            Err(source) => return Err(StoreError::Access { path, source }),
        }
        let open_error = |path, source| StoreError::Open { path, source };
        // Without SQLITE_OPEN_CREATE: the file was made above, and must not be recreated empty if it
        // vanished since.
        let mut conn = Connection::open_with_flags(&path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| classify(&path, e, open_error))?;
        conn.busy_timeout(options.busy_timeout).map_err(|e| classify(&path, e, open_error))?;

        // Read the version before anything that could write: a newer database is left untouched.
        let found = schema::version(&conn).map_err(|e| classify(&path, e, open_error))?;
        let supported = migrations.len() as u32;
        if found > supported {
            return Err(StoreError::NewerSchema { path, found, supported });
        }
        check(&conn, &path, "quick_check")?;
        if found == 0 {
            return Err(StoreError::Corrupt {
                path,
                detail: "the file holds no lockstep schema: it is empty, was truncated, or belongs to another program"
                    .into(),
            });
        }
        // SQLite falls back to read-only when the file is not writable; the server must know now,
        // not when it first tries to acknowledge something.
        if conn.is_readonly(MAIN_DB).map_err(|e| classify(&path, e, open_error))? {
            return Err(StoreError::ReadOnly { path });
        }
        configure(&conn, &path, options.durability)?;
        // A writable file in a read-only directory opens and reads fine (no -wal file can be
        // made); taking the write lock finds out now rather than at the first acknowledgement.
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").map_err(|e| classify(&path, e, open_error))?;
        schema::migrate(&mut conn, &path, migrations)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Commits never checkpoint; the store's own thread does (see `crate::checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(|e| classify(&path, e, open_error))?;
        let checkpointer = crate::checkpoint::Checkpointer::start(&path, options.busy_timeout)
            .map_err(|e| classify(&path, e, open_error))?;
        Ok(Store {
            conn,
            path,
            audit_capacity: options.audit_capacity.max(1),
            audit_rows: None,
            checkpointer: Some(checkpointer),
        })
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's schema version (after open, always [`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::version(&self.conn).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            what: "the schema version".into(),
            source,
        })
    }

    /// Runs SQLite's full `PRAGMA integrity_check` and `PRAGMA foreign_key_check`. Slower than the
    /// quick check done at open (it verifies every index too); for crash tests and operators.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        check(&self.conn, &self.path, "integrity_check")?;
        let read_error = |path, source| StoreError::Read { path, what: "the foreign key check".into(), source };
        let mut stmt =
            self.conn.prepare("PRAGMA foreign_key_check").map_err(|e| classify(&self.path, e, read_error))?;
        let violations = stmt
            .query_map([], |row| {
                Ok(format!(
                    "a row of {} refers to a missing {} row",
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(2)?
                ))
            })
            .and_then(|rows| rows.take(5).collect::<Result<Vec<_>, _>>())
            .map_err(|e| classify(&self.path, e, read_error))?;
        if violations.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("foreign key check: {}", violations.join("; ")),
            })
        }
    }

    /// Closes the database, checkpointing the WAL into the main file. Dropping the store does the
    /// same but cannot report a failure.
    pub fn close(self) -> Result<(), StoreError> {
        let path = self.path;
        self.conn.close().map_err(|(_, e)| {
            classify(&path, e, |path, source| StoreError::Write { path, what: "the final checkpoint".into(), source })
        })
    }
}

/// Creates the data directory if needed; refuses a path that is not a directory.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    let create_error = |source: std::io::Error| StoreError::Create { dir: dir.to_path_buf(), source: source.into() };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(create_error(std::io::Error::other("the path is a file, not a directory"))),
        Err(_) => fs::create_dir_all(dir).map_err(create_error),
    }
}

/// Builds a new database at `path`: migrated under a temporary name, synced, renamed into place.
fn create(dir: &Path, path: &Path, migrations: &[Migration]) -> Result<(), StoreError> {
    let create_error =
        |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Create { dir: dir.to_path_buf(), source };
    let new = dir.join(NEW_DB_FILE_NAME);
    // A leftover from an interrupted creation was never renamed into place, so nothing in it was
    // ever acknowledged: start it over.
    remove_database_files(&new).map_err(|e| create_error(e.into()))?;
    let sqlite_error = |e: rusqlite::Error| classify(&new, e, |_, source| create_error(source.into()));
    let mut conn = Connection::open(&new).map_err(sqlite_error)?;
    configure(&conn, &new, Durability::Full)?;
    schema::migrate(&mut conn, &new, migrations)?;
    conn.close().map_err(|(_, e)| sqlite_error(e))?;
    fs::File::open(&new).and_then(|f| f.sync_all()).map_err(|e| create_error(e.into()))?;
    fs::rename(&new, path).map_err(|e| create_error(e.into()))?;
    sync_dir(dir).map_err(|e| create_error(e.into()))
}

/// Removes a database file and its WAL and shared-memory files, if present.
fn remove_database_files(db: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        match fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals renames itself.
        let _ = dir;
        Ok(())
    }
}

/// Sets the connection's pragmas. `journal_mode` is stored in the file; the others are per
/// connection, hence set at every open.
fn configure(conn: &Connection, path: &Path, durability: Durability) -> Result<(), StoreError> {
    let fail = |e| classify(path, e, |path, source| StoreError::Open { path, source });
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(fail)?;
    // An in-memory database has no WAL ("memory"); a file must get one.
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StoreError::WalUnavailable { path: path.to_path_buf(), mode });
    }
    conn.pragma_update(None, "synchronous", durability.pragma()).map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(fail)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT).map_err(fail)?;
    Ok(())
}

/// Runs `PRAGMA quick_check` or `integrity_check`; anything but a single `ok` is damage.
pub(crate) fn check(conn: &Connection, path: &Path, pragma: &str) -> Result<(), StoreError> {
    let read_error = |path, source| StoreError::Read { path, what: format!("the {pragma}"), source };
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}")).map_err(|e| classify(path, e, read_error))?;
    // The first few problems are enough to say the file is damaged and where.
    let found = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.take(5).collect::<Result<Vec<_>, _>>())
        .map_err(|e| classify(path, e, read_error))?;
    if found.len() == 1 && found[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt { path: path.to_path_buf(), detail: format!("{pragma} found: {}", found.join("; ")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;
    use crate::testutil::*;
    use crate::{Change, SCHEMA_VERSION};

    fn pragma<T: rusqlite::types::FromSql>(store: &Store, name: &str) -> T {
        store.conn.pragma_query_value(None, name, |row| row.get(0)).unwrap()
    }

    #[test]
    fn open_creates_the_directory_and_a_configured_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("lockstep");
        let store = Store::open(&dir, Durability::Normal).unwrap();
        assert_eq!(store.path(), dir.join(DB_FILE_NAME));
        assert!(dir.join(DB_FILE_NAME).is_file());
        assert!(!dir.join(NEW_DB_FILE_NAME).exists(), "the temporary file is renamed into place");
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(pragma::<String>(&store, "journal_mode"), "wal");
        assert_eq!(pragma::<i64>(&store, "synchronous"), 1, "NORMAL");
        assert_eq!(pragma::<i64>(&store, "foreign_keys"), 1);
        assert_eq!(pragma::<i64>(&store, "busy_timeout"), 5000);
        store.close().unwrap();

        let store = Store::open(&dir, Durability::Full).unwrap();
        assert_eq!(pragma::<i64>(&store, "synchronous"), 2, "FULL");
    }

    #[test]
    fn an_interrupted_creation_is_started_over() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(NEW_DB_FILE_NAME), b"half-written by a crashed start").unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        assert_eq!(store.load().unwrap().agents.len(), 1);
        assert!(!tmp.path().join(NEW_DB_FILE_NAME).exists());
    }

    #[test]
    fn data_survives_reopening_and_a_crash_without_close() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        store.close().unwrap();

        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store
            .apply(&[Change::UpdateState {
                namespace: "ns".into(),
                agent_id: "a".into(),
                state_json: r#"{"step":2}"#.into(),
                state_version: 2,
            }])
            .unwrap();
        // A crash: the connection is never closed, so the commit is only in the WAL, never
        // checkpointed into the main file.
        std::mem::forget(store);
        assert!(fs::metadata(tmp.path().join("lockstep.db-wal")).unwrap().len() > 0);

        let store = Store::open(tmp.path(), Durability::Normal).unwrap();
        let agents = store.load().unwrap().agents;
        assert_eq!(agents.len(), 1);
        assert_eq!((agents[0].state_json.as_str(), agents[0].state_version), (r#"{"step":2}"#, 2));
        store.integrity_check().unwrap();
    }

    #[test]
    fn a_v1_database_is_upgraded_with_its_data_intact() {
        let tmp = tempfile::tempdir().unwrap();
        let options = StoreOptions::new(Durability::Normal);
        let store = Store::open_at(tmp.path(), &options, &MIGRATIONS[..1], OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        // Rows as the v1 schema has them (no pause flag, no audit log).
        store
            .conn
            .execute_batch(
                r#"
                INSERT INTO agents VALUES ('ns', 'a', 'trader', '["buy"]', '["market.>"]', '{"region":"eu"}',
                    'busy', 'token-a', 10, '{"pos":1}', 3, '["agent:b"]');
                INSERT INTO sync_points VALUES ('ns', 'round-1', '{"count":2}', '[]', 20, 5020, 'waiting', NULL, NULL);
                INSERT INTO sync_arrivals VALUES ('ns', 'round-1', 'a', 0, x'0102', 25);
                INSERT INTO config VALUES ('breaker', '{"failures":5}');
                "#,
            )
            .unwrap();
        store.close().unwrap();

        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let snapshot = store.load().unwrap();
        let expected_agent = AgentRecord {
            namespace: "ns".into(),
            agent_id: "a".into(),
            role: "trader".into(),
            capabilities: vec!["buy".into()],
            interests: vec!["market.>".into()],
            metadata: [("region".to_string(), "eu".to_string())].into(),
            status: "busy".into(),
            resume_token: "token-a".into(),
            registered_at_ms: 10,
            state_json: r#"{"pos":1}"#.into(),
            state_version: 3,
            watches: vec!["agent:b".into()],
            paused: false,
        };
        assert_eq!(snapshot.agents, vec![expected_agent]);
        assert_eq!(snapshot.sync_points.len(), 1);
        assert_eq!(snapshot.sync_points[0].point.deadline_ms, 5020);
        assert_eq!(snapshot.sync_points[0].arrivals[0].payload, vec![1, 2]);
        assert_eq!(
            snapshot.config,
            vec![ConfigRecord { key: "breaker".into(), value_json: r#"{"failures":5}"#.into() }]
        );
        assert!(snapshot.audit.is_empty());
        assert!(snapshot.votes.is_empty());

        // What v2 and v3 add works on the upgraded file.
        store
            .apply(&[
                Change::SetAgentStatus {
                    namespace: "ns".into(),
                    agent_id: "a".into(),
                    status: "paused".into(),
                    paused: true,
                },
                Change::AppendAudit(audit(1)),
                Change::UpsertVote(crate::VoteRecord {
                    namespace: "ns".into(),
                    vote_id: "v".into(),
                    vote_json: "{}".into(),
                    created_at_ms: 30,
                    finished_at_ms: None,
                }),
                Change::AddBallot(crate::BallotRecord {
                    namespace: "ns".into(),
                    vote_id: "v".into(),
                    agent_id: "a".into(),
                    position: 0,
                    ballot_json: "{}".into(),
                    at_ms: 31,
                }),
            ])
            .unwrap();
        let snapshot = store.load().unwrap();
        assert!(snapshot.agents[0].paused);
        assert_eq!(snapshot.audit, vec![audit(1)]);
        assert_eq!(snapshot.votes.len(), 1);
        assert_eq!(snapshot.votes[0].ballots[0].at_ms, 31);
        // A ballot goes with its vote.
        store.apply(&[Change::DeleteVote { namespace: "ns".into(), vote_id: "v".into() }]).unwrap();
        let left: i64 = store.conn.query_row("SELECT COUNT(*) FROM vote_ballots", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_newer_database_is_refused_and_left_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        store.close().unwrap();
        let file = tmp.path().join(DB_FILE_NAME);
        let before = fs::read(&file).unwrap();

        let err = Store::open(tmp.path(), Durability::Normal).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, supported, .. } if supported == SCHEMA_VERSION),
            "{err}"
        );
        assert!(err.to_string().contains("Upgrade lockstep"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), before, "the file must not be touched");
    }

    #[test]
    fn a_garbage_file_is_refused_with_a_message_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(DB_FILE_NAME);
        // Not a SQLite header: deterministic noise.
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        fs::write(&file, &garbage).unwrap();

        let err = Store::open(tmp.path(), Durability::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&file.display().to_string()) && message.contains("restore a backup"), "{message}");
        assert_eq!(fs::read(&file).unwrap(), garbage, "a damaged file is never reset");
    }

    #[test]
    fn a_truncated_database_is_refused_never_reset() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        // Enough rows for many pages.
        let batch: Vec<Change> = (0..200)
            .map(|i| {
                let mut a = agent("ns", &format!("agent-{i}"));
                a.state_json = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1000));
                Change::UpsertAgent(a)
            })
            .collect();
        store.apply(&batch).unwrap();
        store.close().unwrap();
        let file = tmp.path().join(DB_FILE_NAME);
        let full = fs::read(&file).unwrap();
        assert!(full.len() > 100_000);

        for keep in [0, 50, 4096, full.len() / 2] {
            fs::write(&file, &full[..keep]).unwrap();
            let err = Store::open(tmp.path(), Durability::Normal).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "truncated to {keep} bytes: {err}");
            assert_eq!(fs::metadata(&file).unwrap().len(), keep as u64, "truncated to {keep} bytes: file changed");
        }
    }

    #[test]
    fn a_write_ahead_log_without_its_database_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        let wal = tmp.path().join("lockstep.db-wal");
        let log = fs::read(&wal).unwrap();
        std::mem::forget(store);
        fs::remove_file(tmp.path().join(DB_FILE_NAME)).unwrap();
        fs::write(&wal, &log).unwrap();

        let err = Store::open(tmp.path(), Durability::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("write-ahead log"), "{err}");
        assert!(!tmp.path().join(DB_FILE_NAME).exists(), "no new database over a stray log");
    }

    #[test]
    fn a_data_directory_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let not_a_dir = tmp.path().join("data");
        fs::write(&not_a_dir, b"").unwrap();
        let err = Store::open(&not_a_dir, Durability::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Create { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&not_a_dir.display().to_string()) && message.contains("not a directory"), "{message}");
        assert_eq!(fs::read(&not_a_dir).unwrap(), b"", "the file is left alone");

        // A directory that cannot be created (its parent is a file).
        let err = Store::open(&not_a_dir.join("sub"), Durability::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Create { .. }), "{err}");
    }

    #[test]
    fn a_read_only_database_is_refused_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        Store::open(tmp.path(), Durability::Normal).unwrap().close().unwrap();
        // Tests run as root here, where chmod does not stop writes; SQLite's read-only open is what a
        // file without write permission gets, so open that way to produce the same condition.
        let options = StoreOptions::new(Durability::Normal);
        let err = Store::open_at(tmp.path(), &options, MIGRATIONS, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        assert!(err.to_string().contains("write access"), "{err}");
    }

    /// Real permissions, for a developer who is not root. Root bypasses them (CI runs as root), so
    /// there this test has nothing to check; the simulated tests around it cover the same paths.
    #[cfg(unix)]
    #[test]
    fn a_read_only_file_or_directory_is_refused_at_open_when_permissions_apply() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        Store::open(&dir, Durability::Normal).unwrap().close().unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        let enforced = fs::write(dir.join("probe"), b"").is_err();
        if enforced {
            // A writable file in a read-only directory: no -wal file can be created.
            let err = Store::open(&dir, Durability::Normal).unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
            // A read-only file.
            fs::set_permissions(dir.join(DB_FILE_NAME), fs::Permissions::from_mode(0o444)).unwrap();
            let err = Store::open(&dir, Durability::Normal).unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_write_refused_as_read_only_is_reported_and_rolled_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        // As above, chmod cannot stop root: `query_only` makes SQLite refuse writes with the same
        // SQLITE_READONLY a read-only file or file system gives.
        store.conn.pragma_update(None, "query_only", true).unwrap();
        let err = store.apply(&[Change::UpsertAgent(agent("ns", "b"))]).unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
        store.conn.pragma_update(None, "query_only", false).unwrap();
        assert_eq!(store.load().unwrap().agents, vec![agent("ns", "a")]);
    }

    #[test]
    fn a_full_disk_is_reported_and_nothing_of_the_batch_is_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        // A database that may not grow behaves as a full disk: SQLite answers SQLITE_FULL.
        let pages: i64 = pragma(&store, "page_count");
        store.conn.pragma_update(None, "max_page_count", pages).unwrap();
        let batch: Vec<Change> = (0..50)
            .map(|i| {
                let mut a = agent("ns", &format!("big-{i}"));
                a.state_json = format!(r#"{{"blob":"{}"}}"#, "y".repeat(4000));
                Change::UpsertAgent(a)
            })
            .collect();
        let err = store.apply(&batch).unwrap_err();
        assert!(matches!(err, StoreError::Full { .. }), "{err}");
        assert!(err.to_string().contains("free some space"), "{err}");
        assert_eq!(store.load().unwrap().agents, vec![agent("ns", "a")], "nothing of the failed batch");

        // Once there is room again the store goes on.
        store.conn.pragma_update(None, "max_page_count", 1_000_000).unwrap();
        store.apply(&batch).unwrap();
        assert_eq!(store.load().unwrap().agents.len(), 51);
        store.integrity_check().unwrap();
    }

    #[test]
    fn a_lock_held_by_another_process_is_reported_as_busy() {
        let tmp = tempfile::tempdir().unwrap();
        let holder = Store::open(tmp.path(), Durability::Normal).unwrap();
        let options = StoreOptions { busy_timeout: Duration::from_millis(20), ..StoreOptions::new(Durability::Normal) };
        let mut other = Store::open_with(tmp.path(), options).unwrap();
        holder.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = other.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("no other lockstep server"), "{err}");
        holder.conn.execute_batch("ROLLBACK").unwrap();
        other.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
    }

    #[test]
    fn integrity_check_passes_a_sound_database_and_names_a_broken_reference() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path(), Durability::Normal).unwrap();
        store
            .apply(&[Change::UpsertSyncPoint(point("ns", "s")), Change::AddArrival(arrival("ns", "s", "a", 0))])
            .unwrap();
        store.integrity_check().unwrap();

        // An arrival whose point is gone can only be made with foreign keys off (another tool).
        store
            .conn
            .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM sync_points; PRAGMA foreign_keys = ON;")
            .unwrap();
        let err = store.integrity_check().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("sync_arrivals"), "{err}");
    }

    #[test]
    fn an_in_memory_store_works_like_a_file() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.path(), Path::new(":memory:"));
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        assert_eq!(store.load().unwrap().agents, vec![agent("ns", "a")]);
        store.integrity_check().unwrap();
        store.close().unwrap();
    }
}
