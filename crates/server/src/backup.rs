//! Backups beside the engine.
//!
//! Copying, checking and syncing a large database takes seconds; on the engine task that would stop
//! every input meanwhile (heartbeats unanswered, leases running out). So a backup runs on a blocking
//! thread of its own, reading the database file through its own read-only connection
//! ([`Store::backup_file`]): SQLite's WAL gives that reader one committed state while the driver
//! keeps committing its turns.
//!
//! The way through:
//!
//! 1. The `Admin.Backup` handler checks the path against the [`BackupDir`]: backups are written
//!    only inside one directory (`serve --backup-dir`, by default the data directory), so that
//!    an operator's call cannot make the server write wherever its own permissions reach.
//! 2. It asks this server's [`Backups`] for a [`BackupRequest`]; while
//!    another backup runs it is refused at once (`FAILED_PRECONDITION`): at most one backup at a
//!    time, so that operators cannot stack copies of a large database onto the disk.
//! 3. It hands the request to the driver (`Command::Backup`), which owns the store and so knows
//!    the database file, or knows there is none (`--in-memory`); the driver only calls
//!    [`BackupRequest::start`] with it.
//! 4. The copy runs on a blocking thread; the handler's call is answered when it ends, with the
//!    copy's size or why it failed. The request holds its place (the "one at a time" permit) until
//!    then, even if the operator's call was abandoned.
//!
//! Replica groups' state lives in files beside the database (`DIR/groups`, see [`crate::group`]),
//! so a backup to `FILE` also takes them, into the directory `FILE.groups` ([`groups_path`]): each
//! state file is hard-linked there (copied when the backup lies on another file system). That is a
//! consistent copy for free: the server never changes a state file in place, it writes a new one
//! and renames it over the old. The directory is written as `FILE.groups.partial` and renamed when
//! whole; a backup that cannot take the groups fails as a whole, its database copy removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lockstep_core::Reason;
use lockstep_proto::reason;
use lockstep_store::{Store, StoreError};
use tokio::sync::oneshot;
use tonic::{Code, Status};

/// What a backup answers: the copy's size in bytes, or why there is none.
pub type BackupAnswer = Result<u64, Status>;

/// Where backups may be written: inside one directory (or below it), named by its canonical path
/// so that neither `..` nor a symbolic link leads out of it.
#[derive(Clone, Debug, Default)]
pub struct BackupDir(Option<PathBuf>);

impl BackupDir {
    /// Backups go inside `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<BackupDir> {
        std::fs::create_dir_all(dir)?;
        Ok(BackupDir(Some(dir.canonicalize()?)))
    }

    /// No directory: the server keeps nothing on disk, and refuses every backup.
    pub fn none() -> BackupDir {
        BackupDir(None)
    }

    /// The file to write for a backup asked to `path`: the same file, through the backup
    /// directory's canonical path. Refused (`INVALID_ARGUMENT`) when `path` is relative, names no
    /// file, or lies outside the directory; `FAILED_PRECONDITION` when its directory is missing.
    pub fn target(&self, path: &Path) -> Result<PathBuf, Status> {
        let invalid = |message: String| reason::status(Code::InvalidArgument, Reason::InvalidArgument, message, []);
        if !path.is_absolute() {
            return Err(invalid(format!(
                "backup path '{}' is relative; give an absolute path on the server's machine",
                path.display()
            )));
        }
        let Some(dir) = &self.0 else { return Ok(path.to_path_buf()) };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(invalid(format!("backup path '{}' must name a file", path.display())));
        };
        let parent = parent.canonicalize().map_err(|e| {
            reason::status(
                Code::FailedPrecondition,
                Reason::BackupFailed,
                format!("cannot write a backup in {}: {e}", parent.display()),
                [],
            )
        })?;
        if !parent.starts_with(dir) {
            return Err(invalid(format!(
                "backups are written only inside the backup directory {} (serve --backup-dir; by default the data \
                 directory): '{}' is outside it",
                dir.display(),
                path.display()
            )));
        }
        Ok(parent.join(name))
    }
}

/// A server's backups: lets one run at a time.
#[derive(Clone, Debug, Default)]
pub struct Backups {
    running: Arc<AtomicBool>,
}

impl Backups {
    /// A request to copy the database to `path`, and where its answer will come; refused with
    /// `FAILED_PRECONDITION` while another backup of this server runs.
    /// `groups` is the directory of replica groups' state files, when the server keeps one.
    pub fn request(
        &self,
        path: PathBuf,
        groups: Option<PathBuf>,
    ) -> Result<(BackupRequest, oneshot::Receiver<BackupAnswer>), Status> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(reason::status(
                Code::FailedPrecondition,
                Reason::BackupFailed,
                "a backup is already running on this server (one at a time); try again once it has finished",
                [],
            ));
        }
        let permit = Permit(self.running.clone());
        let (done, answer) = oneshot::channel();
        Ok((BackupRequest { path, groups, permit, done }, answer))
    }
}

/// Marks a backup as running until dropped.
#[derive(Debug)]
struct Permit(Arc<AtomicBool>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A backup asked for and allowed, on its way to the driver. Dropped unstarted, it frees its place
/// and its caller is told the server is shutting down.
#[derive(Debug)]
pub struct BackupRequest {
    path: PathBuf,
    groups: Option<PathBuf>,
    permit: Permit,
    done: oneshot::Sender<BackupAnswer>,
}

impl BackupRequest {
    /// Copies `database` (the store's file; `None` when the server keeps nothing on disk) to the
    /// requested path on a blocking thread, beside the caller, and answers when it is done.
    /// Returns at once; must be called within a tokio runtime.
    pub fn start(self, database: Option<&Path>) {
        let BackupRequest { path, groups, permit, done } = self;
        let Some(database) = database.map(Path::to_path_buf) else {
            drop(permit);
            let _ = done.send(Err(reason::status(
                Code::FailedPrecondition,
                Reason::BackupFailed,
                "this server keeps its data in memory only (--in-memory): there is nothing to back up",
                [],
            )));
            return;
        };
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = copy(&database, &path, groups.as_deref());
            match &result {
                Ok(bytes) => tracing::info!(path = %path.display(), bytes, took = ?started.elapsed(), "backup written"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e.message(), "backup failed"),
            }
            // Free the place before answering: an operator who starts the next backup as soon as
            // this one is answered is not refused.
            drop(permit);
            let _ = done.send(result);
        });
    }
}

/// Writes the copy (the database, then the groups' state files) and returns its size.
fn copy(database: &Path, path: &Path, groups: Option<&Path>) -> BackupAnswer {
    let groups = groups.map(|from| (from, groups_path(path)));
    // Refused before anything is written, like an existing database copy.
    if let Some((_, to)) = &groups {
        for taken in [to.clone(), partial_dir(to)] {
            if std::fs::symlink_metadata(&taken).is_ok() {
                return Err(failed(format!("{} already exists; it is never overwritten", taken.display())));
            }
        }
    }
    Store::backup_file(database, path).map_err(|e| backup_status(&e))?;
    let database_bytes = std::fs::metadata(path).map(|m| m.len()).map_err(|e| failed(e.to_string()));
    let group_bytes = match &groups {
        Some((from, to)) => copy_groups(from, to)
            .map_err(|e| failed(format!("cannot copy the replica groups' state to {}: {e}", to.display()))),
        None => Ok(0),
    };
    match (database_bytes, group_bytes) {
        (Ok(d), Ok(g)) => Ok(d + g),
        (Err(e), _) | (_, Err(e)) => {
            // Whole or nothing: a database copy without its groups would restore them lost.
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Where a backup to `path` keeps the replica groups' state files: `path.groups`.
pub fn groups_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".groups");
    PathBuf::from(name)
}

fn partial_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Links (or copies) every state file of `from` into a new directory `to`, written beside it and
/// renamed when whole; returns the bytes taken. Nothing is written when there are no groups.
fn copy_groups(from: &Path, to: &Path) -> std::io::Result<u64> {
    let states: Vec<PathBuf> = match std::fs::read_dir(from) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == crate::group::STATE_EXTENSION))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if states.is_empty() {
        return Ok(0);
    }
    let partial = partial_dir(to);
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&partial)?;
    let result = (|| {
        let mut bytes = 0;
        for state in &states {
            let target = partial.join(state.file_name().expect("listed files have names"));
            let linked = match std::fs::hard_link(state, &target) {
                Ok(()) => Ok(()),
                // The group was forgotten since the listing: it is not in the backup.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => std::fs::copy(state, &target).and_then(|_| std::fs::File::open(&target)?.sync_all()),
            };
            linked?;
            bytes += std::fs::metadata(&target)?.len();
        }
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, to)?;
        std::fs::File::open(to.parent().unwrap_or(Path::new("/")))?.sync_all()?;
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

fn failed(message: String) -> Status {
    reason::status(Code::FailedPrecondition, Reason::BackupFailed, message, [])
}

/// The status for a failed backup: the operator has to change something (the path, the disk).
fn backup_status(e: &StoreError) -> Status {
    failed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_stay_inside_the_backup_directory() {
        let tmp = std::env::temp_dir().join(format!("lockstep-backup-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let dir = BackupDir::new(&tmp.join("backups")).unwrap();
        let canonical = tmp.join("backups").canonicalize().unwrap();
        assert_eq!(dir.target(&tmp.join("backups").join("copy.db")).unwrap(), canonical.join("copy.db"));
        std::fs::create_dir(tmp.join("backups").join("daily")).unwrap();
        assert!(dir.target(&tmp.join("backups/daily/1.db")).is_ok(), "below it too");
        for outside in [tmp.join("copy.db"), tmp.join("backups/../copy.db"), "/etc/lockstep.db".into()] {
            let refused = dir.target(&outside).unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{}", outside.display());
            assert!(refused.message().contains("backup directory"), "{}", refused.message());
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&tmp, tmp.join("backups/escape")).unwrap();
            let refused = dir.target(&tmp.join("backups/escape/copy.db")).unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "a symbolic link does not lead out");
        }
        assert_eq!(dir.target(Path::new("copy.db")).unwrap_err().code(), Code::InvalidArgument);
        let missing = dir.target(&tmp.join("backups/missing/copy.db")).unwrap_err();
        assert_eq!(missing.code(), Code::FailedPrecondition);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn one_backup_at_a_time() {
        let backups = Backups::default();
        let (first, _answer) = backups.request("/tmp/a.db".into(), None).unwrap();
        let refused = backups.request("/tmp/b.db".into(), None).unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().contains("already running"), "{}", refused.message());
        drop(first);
        assert!(backups.request("/tmp/b.db".into(), None).is_ok(), "a request dropped unstarted frees its place");
    }

    #[tokio::test]
    async fn an_in_memory_server_has_nothing_to_back_up() {
        let backups = Backups::default();
        let (request, answer) = backups.request("/tmp/never.db".into(), None).unwrap();
        request.start(None);
        let refused = answer.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().contains("--in-memory"), "{}", refused.message());
        assert!(backups.request("/tmp/never.db".into(), None).is_ok());
    }

    #[tokio::test]
    async fn a_backup_is_answered_with_its_size_and_frees_its_place() {
        let dir = std::env::temp_dir().join(format!("lockstep-server-backup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("data"), lockstep_store::Durability::Normal).unwrap();
        let backups = Backups::default();
        let target = dir.join("copy.db");

        let (request, answer) = backups.request(target.clone(), None).unwrap();
        request.start(Some(store.path()));
        let bytes = answer.await.unwrap().unwrap();
        assert_eq!(bytes, std::fs::metadata(&target).unwrap().len());

        // The place is free again; the existing copy is not overwritten.
        let (request, answer) = backups.request(target.clone(), None).unwrap();
        request.start(Some(store.path()));
        let refused = answer.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().contains("already exists"), "{}", refused.message());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
