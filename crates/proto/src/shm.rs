//! Shared-memory regions for collective members on the server's host: the one module of lockstep
//! allowed `unsafe` code (to read and write a memory-mapped file).
//!
//! A member that asks for it and connects over loopback gets, for one collective, a file in
//! [`SHM_DIR`] that the server creates (new, mode 0600: only processes of the server's user can
//! open it) and maps; the member maps it too, writes its array at the start of it and says so
//! over its stream; the server reads the array from there and writes the member's result after
//! it (see docs/PROTOCOL.md, "Shared memory"). This module owns the file and the mapping:
//! creating, opening, bounds-checked reads and writes, and removing the file (when the
//! collective ends, or when the owning [`SharedRegion`] is dropped, whichever comes first).
//!
//! # Safety of the mapping
//!
//! The mapping is [`MmapRaw`]: memmap2 hands out raw pointers only, and the references made here
//! are short-lived and bounds-checked against the mapping's length. Two hazards remain, and the
//! protocol excludes them for every process that keeps to it:
//!
//! * **Concurrent modification.** Each byte range has one writer at a time: the member writes its
//!   array region and only then signals it (`CollectiveShmWritten`); the server reads a range only
//!   after the signal covering it, and the member does not touch it again until the collective
//!   ended. The server writes each range of the result region (a member's own, or the one shared
//!   by a collective's members) once, before it sends `CollectiveDone`; the members read it only
//!   after `CollectiveDone`, and a shared result region is written again only for a collective
//!   whose members all said they no longer read it. A process that breaks the
//!   rule can only change the *values* read (any byte pattern is a valid `u8`, and nothing here or
//!   in the reduction depends on values for memory safety): it garbles its own collective's
//!   numbers, nothing else.
//! * **Truncation.** Touching a page beyond a file's end raises SIGBUS. The file is created at its
//!   final size and never resized by the server; only a process of the server's own user can open
//!   it (0600), and such a process can as well signal or trace the server: shrinking the file is no
//!   new power. Regions are offered only to peers on loopback (the server checks) and only while
//!   the file system holds at least twice the file's size free ([`has_room`]), so that writing the
//!   pages does not meet a full tmpfs.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

/// Where the server creates the files (a tmpfs on Linux: the pages are memory, never disk).
pub const SHM_DIR: &str = "/dev/shm";

/// The prefix of every file the server creates: `lockstep-shm-<server pid>-...`.
pub const FILE_PREFIX: &str = "lockstep-shm-";

/// A byte range outside a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bytes [{offset}, {offset}+{len}) are outside the shared region of {size} bytes")]
pub struct OutOfRange {
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

/// A mapped shared-memory file.
#[derive(Debug)]
pub struct SharedRegion {
    map: MmapRaw,
    path: PathBuf,
    /// The creator removes the file; an opener leaves it alone.
    owner: bool,
    removed: AtomicBool,
}

impl SharedRegion {
    /// Creates `dir/name` (it must not exist), mode 0600, `size` bytes (zero-filled, not yet
    /// backed by pages), and maps it. `size` must not be zero.
    pub fn create(dir: &Path, name: &str, size: u64) -> io::Result<SharedRegion> {
        if size == 0 || name.contains('/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty region or a bad name"));
        }
        let path = dir.join(name);
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
        let region = (|| {
            file.set_len(size)?;
            SharedRegion::map(&file, path.clone(), true)
        })();
        if region.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        region
    }

    /// Opens and maps an existing region file of `size` bytes (what a member does with the path
    /// the server offered).
    pub fn open(path: &Path, size: u64) -> io::Result<SharedRegion> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len != size || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds {len} bytes where {size} were offered", path.display()),
            ));
        }
        SharedRegion::map(&file, path.to_owned(), false)
    }

    fn map(file: &File, path: PathBuf, owner: bool) -> io::Result<SharedRegion> {
        let map = MmapRaw::map_raw(file)?;
        Ok(SharedRegion { map, path, owner, removed: AtomicBool::new(false) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    fn check(&self, offset: u64, len: u64) -> Result<(usize, usize), OutOfRange> {
        let size = self.len();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok((offset as usize, len as usize)),
            _ => Err(OutOfRange { offset, len, size }),
        }
    }

    /// Copies `data` in at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let (at, len) = self.check(offset, data.len() as u64)?;
        // SAFETY: `at + len` is within the mapping (checked), which lives as long as `self`; the
        // source is a Rust slice, which cannot overlap a range only this protocol's writer
        // touches (see the module's notes on concurrent modification and truncation).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(at), len) };
        Ok(())
    }

    /// Copies `len` bytes from `offset` into a new vector.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, OutOfRange> {
        Ok(self.slice(offset, len)?.to_vec())
    }

    /// Calls `f` with the bytes `[offset, offset + len)`, borrowed for the call only.
    pub fn with<R>(&self, offset: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, OutOfRange> {
        Ok(f(self.slice(offset, len)?))
    }

    fn slice(&self, offset: u64, len: u64) -> Result<&[u8], OutOfRange> {
        let (at, len) = self.check(offset, len)?;
        // SAFETY: in bounds (checked) of a mapping that lives as long as `self`; the range is not
        // written while it is read, by the protocol (see the module's notes).
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), len) })
    }

    /// The bytes `[offset, offset + len)` as [`Bytes`] that keep the region mapped (no copy: the
    /// server hands a member's chunks to the reduction this way).
    pub fn bytes(self: &Arc<Self>, offset: u64, len: u64) -> Result<Bytes, OutOfRange> {
        self.check(offset, len)?;
        Ok(Bytes::from_owner(View { region: self.clone(), offset, len }))
    }

    /// Removes the file (the creator's only; mappings stay valid until dropped). Idempotent.
    pub fn remove(&self) {
        if self.owner && !self.removed.swap(true, Ordering::AcqRel) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A range of a region, owned (for [`Bytes::from_owner`]).
struct View {
    region: Arc<SharedRegion>,
    offset: u64,
    len: u64,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // Checked when the view was made; a region never changes size.
        self.region.slice(self.offset, self.len).unwrap_or(&[])
    }
}

/// Whether `dir`'s file system has at least twice `size` bytes free.
pub fn has_room(dir: &Path, size: u64) -> bool {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize) / 2 >= size,
        Err(_) => false,
    }
}

/// Removes the region files of server processes that no longer run (left behind by a crash):
/// names `lockstep-shm-<pid>-...` whose `<pid>` has no `/proc` entry. Returns how many.
pub fn remove_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(FILE_PREFIX)).and_then(|r| r.split('-').next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of the test's own: tests run in parallel, and one removing its directory must
    /// not remove another's files.
    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lockstep-shm-test-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_region_is_shared_bounds_checked_private_and_removed() {
        let d = dir("shared");
        let made = Arc::new(SharedRegion::create(&d, "r1", 16).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(made.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(SharedRegion::create(&d, "r1", 16).is_err(), "never reuses a file");
        assert!(SharedRegion::open(made.path(), 15).is_err(), "the size must be the offered one");
        let opened = SharedRegion::open(made.path(), 16).unwrap();
        opened.write(4, &[1, 2, 3]).unwrap();
        assert_eq!(made.read(4, 4).unwrap(), vec![1, 2, 3, 0]);
        assert_eq!(&made.bytes(5, 2).unwrap()[..], &[2, 3]);
        assert_eq!(made.write(15, &[1, 2]), Err(OutOfRange { offset: 15, len: 2, size: 16 }));
        assert!(made.read(u64::MAX, 2).is_err());
        assert!(made.bytes(17, 0).is_err());
        drop(opened);
        let path = made.path().to_owned();
        made.remove();
        assert!(!path.exists());
        // The mapping outlives the file.
        assert_eq!(made.read(4, 1).unwrap(), vec![1]);
        assert!(SharedRegion::create(&d, "empty", 0).is_err());
        let dropped = SharedRegion::create(&d, "r2", 1).unwrap();
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists(), "dropping the creator's region removes its file");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_files_of_gone_processes_are_removed() {
        let d = dir("stale");
        // Pid 0 never has a /proc entry; ours does.
        std::fs::write(d.join(format!("{FILE_PREFIX}0-1-0-x")), b"").unwrap();
        let ours = d.join(format!("{FILE_PREFIX}{}-1-0-x", std::process::id()));
        std::fs::write(&ours, b"").unwrap();
        std::fs::write(d.join("other"), b"").unwrap();
        assert_eq!(remove_stale(&d), 1);
        assert!(ours.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
