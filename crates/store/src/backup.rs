//! Online backups: a consistent copy of the live database in one self-contained file.
//!
//! The copy is taken with SQLite's online backup API, all pages in one step, so it is the state
//! after one commit (and the store's `apply` needs `&mut self`, so no batch can run meanwhile). It
//! is written beside the target as `NAME.partial`, checked with `quick_check`, switched out of WAL
//! mode (one file, nothing beside it), synced, and only then renamed to the target: a failed backup
//! never leaves a half-written file under the target's name nor damages an older backup there.
//! Restore by stopping the server and putting the copy in the data directory as `lockstep.db`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use crate::error::StoreError;
use crate::store::{check, sync_dir, Store};

impl Store {
    /// Copies the database to a new file at `path`; refuses if a file is already there
    /// ([`StoreError::BackupExists`]).
    pub fn backup_to(&self, path: &Path) -> Result<(), StoreError> {
        self.backup(path, false)
    }

    /// Copies the database to `path`, replacing a file already there (only once the new copy is
    /// complete and checked).
    pub fn backup_replacing(&self, path: &Path) -> Result<(), StoreError> {
        self.backup(path, true)
    }

    fn backup(&self, path: &Path, replace: bool) -> Result<(), StoreError> {
        let exists = || fs::symlink_metadata(path).is_ok();
        if !replace && exists() {
            return Err(StoreError::BackupExists { path: path.to_path_buf() });
        }
        let fail =
            |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Backup { path: path.to_path_buf(), source };
        let partial = partial_path(path).ok_or_else(|| {
            fail(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the backup path must name a file").into())
        })?;
        // A leftover of an interrupted backup is worthless.
        match fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e.into())),
            _ => {}
        }
        let result = self.copy_to(&partial).and_then(|()| {
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
    fn copy_to(&self, partial: &Path) -> Result<(), StoreError> {
        let fail = |source: rusqlite::Error| StoreError::Backup { path: partial.to_path_buf(), source: source.into() };
        let mut dst = Connection::open(partial).map_err(fail)?;
        {
            let backup = Backup::new(&self.conn, &mut dst).map_err(fail)?;
            // -1: every page in one step, under one read lock: a single commit's state.
            loop {
                match backup.step(-1).map_err(fail)? {
                    StepResult::Done => break,
                    StepResult::More => continue,
                    _ => return Err(StoreError::Busy { path: self.path.clone() }),
                }
            }
        }
        // The copy carries the source's WAL flag; a backup is better as one file with nothing
        // beside it. `Store::open` switches it back to WAL when it is restored.
        dst.pragma_update_and_check(None, "journal_mode", "DELETE", |_| Ok(())).map_err(fail)?;
        check(&dst, partial, "quick_check")?;
        dst.close().map_err(|(_, e)| fail(e))
    }
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
