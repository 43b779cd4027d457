//! Online backups: a consistent copy of the live database in one self-contained file.
//!
//! Two ways to take one:
//!
//! * [`Store::backup_file`] copies a database file that a [`Store`] elsewhere (another thread, the
//!   server's engine task) keeps writing, from a **read-only connection of its own**. In WAL mode a
//!   reader sees one committed state for as long as its read transaction lasts while the writer
//!   goes on committing, so the copy never holds up the writer, nor the writer the copy. This is
//!   what the server uses: the engine keeps applying and committing inputs during a backup.
//! * [`Store::backup_to`] copies through the store's own connection (its `apply` needs `&mut
//!   self`, so nothing is written meanwhile); for tests and in-memory stores.
//!
//! Either way the pages are copied with SQLite's online backup API **in one step** (`step(-1)`):
//! one read transaction, hence the state after exactly one commit. (A backup stepped a few pages
//! at a time would start over whenever another connection commits, and might never finish under
//! load.) The copy is written beside the target as `NAME.partial`, checked with `quick_check`,
//! switched out of WAL mode (one file, nothing beside it), synced, and only then renamed to the
//! target: a failed backup never leaves a half-written file under the target's name nor damages an
//! older backup there, and an existing file is never overwritten unless asked
//! ([`Store::backup_replacing`]). `NAME.partial` is created new, readable and writable by its owner
//! only (mode 0600: a backup holds every agent's state and resume token), and a file already there
//! is refused, never deleted: it may be another backup being written. Restore by stopping the
//! server and putting the copy in the data directory as `lockstep.db`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::{classify, StoreError};
use crate::store::{check, sync_dir, Store, DEFAULT_BUSY_TIMEOUT};

impl Store {
    /// Copies the database to a new file at `path`; refuses if a file is already there
    /// ([`StoreError::BackupExists`]).
    pub fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        write_backup(&self.conn, &self.path, path, false)
    }

    /// Copies the database to `path`, replacing a file already there (only once the new copy is
    /// complete and checked).
    pub fn backup_replacing(&self, path: &Path) -> Result<(), StoreError> {
        write_backup(&self.conn, &self.path, path, true)
    }

    /// Copies the lockstep database file `database` (such as the [`Store::path`] of a store that
    /// keeps committing meanwhile) to a new file at `path`, reading it through a read-only
    /// connection of its own: the copy is the state of one commit, and the writer is never
    /// blocked. Refuses if a file is already at `path` ([`StoreError::BackupExists`]).
    pub fn backup_file(database: &Path, path: &Path) -> Result<(), StoreError> {
        let open_error = |path, source| StoreError::Open { path, source };
        // Without SQLITE_OPEN_CREATE: a missing database is an error, never an empty copy.
        let source =
            Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| classify(database, e, open_error))?;
        // A WAL reader waits only in rare moments (the log being reset, recovered); bounded.
        source.busy_timeout(DEFAULT_BUSY_TIMEOUT).map_err(|e| classify(database, e, open_error))?;
        write_backup(&source, database, path, false)
    }
}

/// Writes a copy of `source` (the database at `source_path`, for messages) to `path`: beside it
/// first, checked and synced, then renamed into place.
fn write_backup(source: &Connection, source_path: &Path, path: &Path, replace: bool) -> Result<(), StoreError> {
    let exists = || fs::symlink_metadata(path).is_ok();
    if !replace && exists() {
        return Err(StoreError::BackupExists { path: path.to_path_buf() });
    }
    let fail =
        |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Backup { path: path.to_path_buf(), source };
    let partial = partial_path(path).ok_or_else(|| {
        fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the backup path must name a file").into())
    })?;
    create_private(&partial).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => StoreError::BackupPartialExists { path: partial.clone() },
        _ => fail(e.into()),
    })?;
    let result = copy_to(source, source_path, &partial).and_then(|()| {
        fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(|e| fail(e.into()))?;
        // Checked again just before the rename: a file may have appeared while copying.
        if !replace && exists() {
            return Err(StoreError::BackupExists { path: path.to_path_buf() });
        }
        fs::rename(&partial, path).map_err(|e| fail(e.into()))?;
        sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            .map_err(|e| fail(e.into()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Writes the whole database into a new file at `partial` and checks it.
fn copy_to(source: &Connection, source_path: &Path, partial: &Path) -> Result<(), StoreError> {
    let fail = |source: rusqlite::Error| StoreError::Backup { path: partial.to_path_buf(), source: source.into() };
    let mut dst = Connection::open(partial).map_err(fail)?;
    {
        let backup = Backup::new(source, &mut dst).map_err(fail)?;
        // -1: every page in one step, under one read transaction: a single commit's state.
        loop {
            match backup.step(-1).map_err(fail)? {
                StepResult::Done => break,
                StepResult::More => continue,
                _ => return Err(StoreError::Busy { path: source_path.to_path_buf() }),
            }
        }
    }
    // The copy carries the source's WAL flag; a backup is better as one file with nothing
    // beside it. `Store::open` switches it back to WAL when it is restored.
    dst.pragma_update_and_check(None, "journal_mode", "DELETE", |_| Ok(())).map_err(fail)?;
    check(&dst, partial, "quick_check")?;
    dst.close().map_err(|(_, e)| fail(e))
}

/// Creates a new, empty file at `path` that only its owner may read and write; fails if anything is
/// there already. SQLite then writes the copy into it (an empty file is an empty database).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// `DIR/NAME.partial` for `DIR/NAME`.
fn partial_path(path: &Path) -> Option<PathBuf> {
    let mut name: OsString = path.file_name()?.to_owned();
    name.push(".partial");
    Some(path.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{Change, Durability, DB_FILE_NAME};

    fn populated(dir: &Path) -> Store {
        let mut store = Store::open(dir, Durability::Normal).unwrap();
        store
            .apply(&[
                Change::UpsertAgent(agent("ns", "a")),
                Change::UpsertSyncPoint(point("ns", "s")),
                Change::AddArrival(arrival("ns", "s", "a", 0)),
                Change::AppendAudit(audit(1)),
                Change::SetConfig(crate::ConfigRecord { key: "k".into(), value_json: "true".into() }),
            ])
            .unwrap();
        store
    }

    #[test]
    fn a_backup_opens_as_a_store_with_the_same_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let store = populated(&tmp.path().join("live"));
        let restore_dir = tmp.path().join("restored");
        fs::create_dir(&restore_dir).unwrap();
        let copy = restore_dir.join(DB_FILE_NAME);
        store.backup_to(&copy).unwrap();
        assert!(!restore_dir.join("lockstep.db.partial").exists());
        assert!(!restore_dir.join("lockstep.db-wal").exists(), "a backup is one self-contained file");

        let restored = Store::open(&restore_dir, Durability::Normal).unwrap();
        let snapshot = restored.load().unwrap();
        assert_eq!(snapshot, store.load().unwrap());
        assert_eq!(snapshot.agents.len(), 1);
        restored.integrity_check().unwrap();
    }

    #[test]
    fn an_existing_file_is_replaced_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = populated(&tmp.path().join("live"));
        let target = tmp.path().join("backup.db");
        fs::write(&target, b"an older backup").unwrap();

        let err = store.backup_to(&target).unwrap_err();
        assert!(matches!(err, StoreError::BackupExists { .. }), "{err}");
        assert!(err.to_string().contains("backup.db"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"an older backup");

        store.apply(&[Change::UpsertAgent(agent("ns", "b"))]).unwrap();
        store.backup_replacing(&target).unwrap();
        let copy = Connection::open(&target).unwrap();
        let agents: i64 = copy.query_row("SELECT COUNT(*) FROM agents", [], |r| r.get(0)).unwrap();
        assert_eq!(agents, 2);
    }

    #[test]
    fn a_failed_backup_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let target = tmp.path().join("missing-dir").join("backup.db");
        let err = store.backup_to(&target).unwrap_err();
        assert!(matches!(err, StoreError::Backup { .. }), "{err}");
        assert!(!tmp.path().join("missing-dir").exists());
    }

    /// Two agents whose states a writer always changes together, in one transaction.
    fn pair_update(version: u64) -> Vec<Change> {
        ["a", "b"]
            .iter()
            .map(|id| Change::UpdateState {
                namespace: "ns".into(),
                agent_id: (*id).into(),
                state_json: format!(r#"{{"version":{version}}}"#),
                state_version: version,
            })
            .collect()
    }

    #[test]
    fn a_backup_beside_a_committing_writer_completes_with_one_commits_state() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;

        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(&tmp.path().join("live"), Durability::Normal).unwrap();
        // Bulk, so that the copy takes a while: 24 MB of states.
        let bulk = "x".repeat(1_000_000);
        let mut changes: Vec<Change> = (0..24)
            .map(|i| {
                Change::UpsertAgent(crate::AgentRecord {
                    state_json: format!(r#"{{"bulk":"{bulk}"}}"#),
                    ..agent("bulk", &format!("b{i}"))
                })
            })
            .collect();
        changes.extend(["a", "b"].map(|id| Change::UpsertAgent(agent("ns", id))));
        store.apply(&changes).unwrap();
        let database = store.path().to_path_buf();

        // The writer commits both agents' next version in one transaction, as fast as it can.
        let (stop, committed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(1)));
        let writer = std::thread::spawn({
            let (stop, committed) = (stop.clone(), committed.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    let next = committed.load(Ordering::SeqCst) + 1;
                    store.apply(&pair_update(next)).unwrap();
                    committed.store(next, Ordering::SeqCst);
                }
                store
            }
        });
        while committed.load(Ordering::SeqCst) < 10 {
            std::thread::yield_now();
        }
        let target = tmp.path().join("copy.db");
        let before = committed.load(Ordering::SeqCst);
        Store::backup_file(&database, &target).unwrap();
        let after = committed.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        let store = writer.join().unwrap();
        assert!(after > before, "the writer was held up during the backup ({before} commits before, {after} after)");

        let restore_dir = tmp.path().join("restored");
        fs::create_dir(&restore_dir).unwrap();
        fs::rename(&target, restore_dir.join(DB_FILE_NAME)).unwrap();
        let restored = Store::open(&restore_dir, Durability::Normal).unwrap();
        restored.integrity_check().unwrap();
        let snapshot = restored.load().unwrap();
        let version = |id: &str| {
            let a = snapshot.agents.iter().find(|a| a.namespace == "ns" && a.agent_id == id).unwrap();
            assert_eq!(a.state_json, format!(r#"{{"version":{}}}"#, a.state_version));
            a.state_version
        };
        // One commit's state: both agents at the same version, one committed during the backup.
        assert_eq!(version("a"), version("b"));
        assert!((before..=after).contains(&version("a")), "{} not in {before}..={after}", version("a"));
        assert_eq!(snapshot.agents.len(), 26);
        assert!(snapshot.agents.iter().filter(|a| a.namespace == "bulk").all(|a| a.state_json.len() > 1_000_000));
        // The live database goes on, unharmed.
        let live = store.load().unwrap().agents.iter().find(|a| a.agent_id == "a").unwrap().state_version;
        assert!(live >= after, "{live} < {after}");
    }

    #[test]
    fn a_backup_from_the_file_keeps_the_guarantees() {
        let tmp = tempfile::tempdir().unwrap();
        let store = populated(&tmp.path().join("live"));
        let target = tmp.path().join("backup.db");
        fs::write(&target, b"an older backup").unwrap();
        let err = Store::backup_file(store.path(), &target).unwrap_err();
        assert!(matches!(err, StoreError::BackupExists { .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"an older backup");

        let missing = tmp.path().join("nowhere").join(DB_FILE_NAME);
        let err = Store::backup_file(&missing, &tmp.path().join("other.db")).unwrap_err();
        assert!(err.to_string().contains("nowhere"), "{err}");
        assert!(!tmp.path().join("other.db").exists() && !tmp.path().join("other.db.partial").exists());
        assert!(!missing.exists(), "a backup never creates its source");

        let copy = tmp.path().join("copy.db");
        Store::backup_file(store.path(), &copy).unwrap();
        assert!(!tmp.path().join("copy.db.partial").exists());
        let copy = Connection::open(&copy).unwrap();
        let mode: String = copy.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete", "a backup is one self-contained file");
        let agents: i64 = copy.query_row("SELECT COUNT(*) FROM agents", [], |r| r.get(0)).unwrap();
        assert_eq!(agents, 1);
    }

    #[test]
    fn a_backup_is_private_and_never_deletes_a_partial_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = populated(&tmp.path().join("live"));
        let target = tmp.path().join("copy.db");
        let partial = tmp.path().join("copy.db.partial");
        fs::write(&partial, b"another backup being written").unwrap();
        let err = Store::backup_file(store.path(), &target).unwrap_err();
        assert!(matches!(err, StoreError::BackupPartialExists { .. }), "{err}");
        assert!(err.to_string().contains("copy.db.partial"), "{err}");
        assert_eq!(fs::read(&partial).unwrap(), b"another backup being written", "left as it was");
        assert!(!target.exists());

        fs::remove_file(&partial).unwrap();
        Store::backup_file(store.path(), &target).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a backup is readable by its owner only, not {mode:o}");
        }
    }

    #[test]
    fn an_in_memory_store_can_be_backed_up() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open_in_memory().unwrap();
        store.apply(&[Change::UpsertAgent(agent("ns", "a"))]).unwrap();
        store.backup_to(&tmp.path().join(DB_FILE_NAME)).unwrap();
        let restored = Store::open(tmp.path(), Durability::Full).unwrap();
        assert_eq!(restored.load().unwrap().agents, vec![agent("ns", "a")]);
    }
}
