//! Every way the store can fail, typed, each with a message that names the file and says what to do.
//!
//! SQLite reports a handful of conditions that need a person rather than a retry — a damaged file,
//! a read-only file or directory, a full disk, another process holding the lock — and those get
//! their own variants (see `classify`) so that the server can refuse to start, or refuse to
//! acknowledge, with a precise message. A failed [`Store::apply`](crate::Store::apply) always
//! leaves the database as it was before the batch: nothing is ever half-written or silently reset.

use std::path::PathBuf;

use rusqlite::ErrorCode;
use thiserror::Error;

/// A failure of the store. Messages name the database file and the action that fixes the problem.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A new database could not be created in the data directory (missing permissions, the path is a
    /// file, the disk is read-only...).
    #[error(
        "cannot create a lockstep database in {}: {source}; check that the directory exists or can be created \
         and that the user running lockstep may write to it",
        dir.display()
    )]
    Create {
        dir: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The database file could not be looked at (before SQLite opens it).
    #[error(
        "cannot access {}: {source}; check that the data directory path is right (a directory, not a file) and \
         that the user running lockstep may read it",
        path.display()
    )]
    Access {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open the file, for a reason not covered by a more specific variant.
    #[error(
        "cannot open the lockstep database {}: {source}; check that the path is right and that the user \
         running lockstep may read and write the file and its directory",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The file is not a lockstep database, or is damaged (garbage, truncated, failed integrity check).
    #[error(
        "the lockstep database {} is damaged or is not a lockstep database ({detail}); lockstep will not use it. \
         Stop the server, move the file (and any {}-wal and -shm files beside it) aside, and restore a backup \
         into its place, or start with an empty data directory",
        path.display(), crate::DB_FILE_NAME
    )]
    Corrupt { path: PathBuf, detail: String },

    /// The file was written by a newer lockstep, whose schema this one does not know. It was not touched.
    #[error(
        "the lockstep database {} has schema version {found}, but this lockstep knows versions up to {supported} only: \
         it was written by a newer lockstep. Upgrade lockstep to use it (the file was left untouched)",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: u32, supported: u32 },

    /// A migration failed; its transaction was rolled back, so the database is still at `from`.
    #[error(
        "upgrading the lockstep database {} from schema version {from} to {version} failed: {source}; \
         the upgrade was rolled back and the database is still at version {from}",
        path.display()
    )]
    Migration {
        path: PathBuf,
        from: u32,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },

    /// SQLite could not switch the file to write-ahead logging, which lockstep needs for its commits.
    #[error(
        "SQLite could not put the lockstep database {} in WAL mode (it stays in '{mode}' mode); keep the data \
         directory on a local file system that supports shared memory",
        path.display()
    )]
    WalUnavailable { path: PathBuf, mode: String },

    /// The file, its directory, or the connection is read-only.
    #[error(
        "the lockstep database {} is read-only; give the user running lockstep write access to the file \
         and to its directory (SQLite writes -wal and -shm files beside it), and check that the file \
         system is not mounted read-only",
        path.display()
    )]
    ReadOnly { path: PathBuf },

    /// The disk (or the database's configured size limit) is full. The failed write was rolled back.
    #[error(
        "no space left to write {}: the disk, or the database's size limit, is full; free some space and \
         try again (the failed write was rolled back: nothing of it is stored)",
        path.display()
    )]
    Full { path: PathBuf },

    /// Another connection held the lock for longer than the busy timeout.
    #[error(
        "the lockstep database {} is locked by another process; make sure no other lockstep server (or tool) \
         is using this data directory",
        path.display()
    )]
    Busy { path: PathBuf },

    /// One change of a batch could not be written; the whole batch was rolled back.
    #[error("cannot store {what} in {}: {source}; the whole batch was rolled back", path.display())]
    Write {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },

    /// A change updates a record that is not stored; the whole batch was rolled back.
    #[error(
        "cannot update {what}: it is not stored in {} (write the whole record first); the whole batch was rolled back",
        path.display()
    )]
    Missing { path: PathBuf, what: String },

    /// Reading the database failed.
    #[error("cannot read {what} from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },

    /// A stored value does not decode (a JSON column that is not JSON, a negative time...).
    #[error(
        "{what} in {} holds an invalid value ({detail}); the file was changed outside lockstep or is damaged: \
         restore a backup",
        path.display()
    )]
    BadRecord { path: PathBuf, what: String, detail: String },

    /// A number does not fit SQLite's signed 64-bit integers.
    #[error(
        "{what} is {value}, larger than the largest storable value ({}); nothing of the batch was stored",
        i64::MAX
    )]
    OutOfRange { what: String, value: u64 },

    /// A backup would overwrite an existing file and was not asked to.
    #[error("a file already exists at {}; choose another backup path, or ask to replace it", path.display())]
    BackupExists { path: PathBuf },

    /// The file a backup is first written to (`NAME.partial`, beside the target) already exists:
    /// another backup to the same path is being written, or one was interrupted. It is left alone.
    #[error(
        "{} already exists: another backup to this path is being written, or one was interrupted (then remove it); \
         it was left as it was",
        path.display()
    )]
    BackupPartialExists { path: PathBuf },

    /// Taking a backup failed; an existing file at `path` was left as it was.
    #[error("backing up to {} failed: {source}; any file already at that path was left as it was", path.display())]
    Backup {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// True if the failure says the database file itself is unusable (refuse to start on it).
    pub fn is_corruption(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. } | StoreError::BadRecord { .. })
    }
}

/// Maps a SQLite error to the variant that tells a person what to do, or to `otherwise` for errors
/// that are specific to the operation (a constraint, a bad statement).
pub(crate) fn classify(
    path: &std::path::Path,
    error: rusqlite::Error,
    otherwise: impl FnOnce(PathBuf, rusqlite::Error) -> StoreError,
) -> StoreError {
    let path = path.to_path_buf();
    match error.sqlite_error_code() {
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path },
        Some(ErrorCode::DiskFull) => StoreError::Full { path },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { path },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt { path, detail: error.to_string() }
        }
        _ => otherwise(path, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn conditions_a_person_must_fix_get_their_own_variant() {
        let path = std::path::Path::new("/data/lockstep.db");
        let other = |path, source| StoreError::Open { path, source };
        assert!(matches!(
            classify(path, sqlite_error(rusqlite::ffi::SQLITE_READONLY), other),
            StoreError::ReadOnly { .. }
        ));
        assert!(matches!(classify(path, sqlite_error(rusqlite::ffi::SQLITE_FULL), other), StoreError::Full { .. }));
        assert!(matches!(classify(path, sqlite_error(rusqlite::ffi::SQLITE_BUSY), other), StoreError::Busy { .. }));
        assert!(matches!(
            classify(path, sqlite_error(rusqlite::ffi::SQLITE_NOTADB), other),
            StoreError::Corrupt { .. }
        ));
        assert!(matches!(
            classify(path, sqlite_error(rusqlite::ffi::SQLITE_CORRUPT), other),
            StoreError::Corrupt { .. }
        ));
        assert!(matches!(classify(path, sqlite_error(rusqlite::ffi::SQLITE_CANTOPEN), other), StoreError::Open { .. }));
    }

    #[test]
    fn messages_name_the_file_and_the_fix() {
        let path = PathBuf::from("/data/lockstep.db");
        let newer = StoreError::NewerSchema { path: path.clone(), found: 7, supported: 2 }.to_string();
        assert!(newer.contains("/data/lockstep.db") && newer.contains("Upgrade lockstep") && newer.contains('7'));
        let corrupt = StoreError::Corrupt { path: path.clone(), detail: "file is not a database".into() };
        assert!(corrupt.is_corruption());
        let corrupt = corrupt.to_string();
        assert!(corrupt.contains("/data/lockstep.db") && corrupt.contains("restore a backup"), "{corrupt}");
        let full = StoreError::Full { path }.to_string();
        assert!(full.contains("free some space") && full.contains("nothing of it is stored"), "{full}");
    }
}
