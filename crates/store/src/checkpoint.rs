//! Checkpoints beside the writer.
//!
//! In WAL mode a commit appends to the log; a *checkpoint* copies the log back into the database
//! file and syncs it. SQLite runs one automatically inside the commit that crosses 1,000 pages, so
//! that commit — and with it the server's engine, which waits for its commit before it answers
//! anyone — pays for the copy and the fsync, and waits behind whatever else the disk is doing (a
//! backup writing hundreds of megabytes, for one). So the writer's automatic checkpoints are turned
//! off, and a thread of the store's own, with its own connection, checkpoints instead: passively
//! (never waiting for the writer or for readers), shortly after commits, and at most every
//! [`CHECKPOINT_INTERVAL`]. The log stays small, and no commit ever does a checkpoint's work.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// How often, at most, the log is checkpointed while commits come (about as often as SQLite's own
/// threshold of 1,000 pages is reached under a heavy write load, so checkpoints cost no more disk
/// work than before, only elsewhere).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The checkpointing thread of one store; stops (after a last checkpoint) when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (which the writer has open in WAL mode).
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Checkpointer> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(busy_timeout)?;
        let (nudge, nudges) = mpsc::sync_channel(1);
        let path: PathBuf = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("lockstep-checkpoint".into())
            .spawn(move || run(&conn, &path, &nudges))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer { nudge: Some(nudge), thread: Some(thread) })
    }

    /// Says that a commit happened: a checkpoint follows soon.
    pub(crate) fn committed(&self) {
        if let Some(nudge) = &self.nudge {
            // Full means a checkpoint is already due: nothing to add.
            if let Err(TrySendError::Disconnected(())) = nudge.try_send(()) {
                tracing::warn!("the checkpoint thread stopped; the write-ahead log is checkpointed at close only");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.nudge.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, path: &Path, nudges: &mpsc::Receiver<()>) {
    // Each round: wait for a commit, checkpoint, then let further commits gather for an interval
    // (the round after covers them); when the store closes, one last checkpoint.
    let mut pending = false;
    loop {
        if !pending && nudges.recv().is_err() {
            break;
        }
        checkpoint(conn, path);
        pending = false;
        let until = Instant::now() + CHECKPOINT_INTERVAL;
        loop {
            match nudges.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    checkpoint(conn, path);
                    return;
                }
            }
        }
    }
    checkpoint(conn, path);
}

fn checkpoint(conn: &Connection, path: &Path) {
    // PASSIVE: copies what it can without waiting for the writer or readers; what it cannot copy
    // yet (frames a reader still needs, like a backup's snapshot) waits for the next one.
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(path = %path.display(), error = %e, "a checkpoint failed; the next one tries again");
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::agent;
    use crate::{Change, Durability, Store, DB_FILE_NAME};

    #[test]
    fn commits_leave_checkpoints_to_the_stores_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Durability::Normal).unwrap();
        let auto: i64 = store.conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(auto, 0, "the writer never checkpoints inside a commit");
        let db = dir.path().join(DB_FILE_NAME);
        let before = std::fs::metadata(&db).unwrap().len();
        // About 4 MB of state: past SQLite's own threshold (1,000 pages).
        let mut record = agent("ns", "big");
        record.state_json = format!("{{\"blob\":\"{}\"}}", "x".repeat(4 << 20));
        store.apply(&[Change::UpsertAgent(record)]).unwrap();
        // The commit went to the log; the checkpoint thread copies it into the database file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&db).unwrap().len() < before + (4 << 20) {
            assert!(std::time::Instant::now() < deadline, "the log was never checkpointed into the database");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(store);
        let reopened = Store::open(dir.path(), Durability::Normal).unwrap();
        let loaded = reopened.load().unwrap();
        assert_eq!(loaded.agents.len(), 1);
        assert_eq!(loaded.agents[0].state_json.len(), (4 << 20) + 11);
    }
}
