//! The group store: where replica groups' state blobs move and are kept, beside the engine.
//!
//! The engine decides who may publish or fetch a group's state and which version is current
//! ([`lockstep_core::replica_group`]); it never sees the bytes. A `PublishGroupState` call is
//! served by [`publish`]: its header becomes an [`Input::GroupPublish`]; once the engine gives the
//! go, the bytes are read (chunks of at most 256 KiB, each within `idle` of the last), hashed with
//! SHA-256 as they come, checked against the header's size and (if given) checksum, and then
//! reported with [`Input::GroupPublished`]. Only when the engine answers `Published` do the bytes
//! become the group's current version here, in the same step: a publish that breaks off, is
//! refused or whose publisher is lost first leaves the previous version current, and a fetch never
//! sees half of one. A `FetchGroupState` call ([`fetch`]) asks the engine, then streams the
//! current version: its `GroupState` first, then its bytes (shared, not copied).
//!
//! **Memory.** The current version of every group is held here, plus the bytes of publishes in
//! progress; the engine bounds them together (`limits.max_group_state_total_bytes`).
//!
//! **Durability.** With a data directory each current version is also kept in
//! `DIR/groups/` (one `.state` file per group: a JSON header line, then the bytes), written under a
//! temporary name, synced and renamed into place before the publisher is answered; at start they
//! are read back, checked against their checksums and handed to the engine
//! ([`lockstep_core::Engine::restore_group`]). Members are not kept: they join again.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lockstep_core::replica_group::StateVersion;
use lockstep_core::{CoreError, GroupOutput, Input};
use lockstep_proto::group::{fetch_call, publish_call, state as state_to_wire, Checksum, GROUP_CHUNK_BYTES};
use lockstep_proto::v1;
use lockstep_proto::v1::group_state_download::Kind as Down;
use lockstep_proto::v1::group_state_upload::Kind as Up;
use lockstep_proto::{convert, group};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tonic::{Status, Streaming};

use crate::driver::{Command, EngineHandle};

/// One version of one group's state, with its bytes.
pub struct Blob {
    pub state: StateVersion,
    pub chunks: Vec<Bytes>,
}

/// The extension of a group's state file in `DIR/groups`.
pub const STATE_EXTENSION: &str = "state";

/// A group's key here: (namespace, group id).
type Key = (String, String);

/// Calls waiting for the engine, bytes waiting to become current, and the current versions.
#[derive(Default)]
pub struct GroupStore {
    next_origin: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<GroupOutput>>>,
    /// Bytes of publishes reported complete, until the engine makes them current.
    received: Mutex<HashMap<u64, Vec<Bytes>>>,
    current: Mutex<HashMap<Key, Arc<Blob>>>,
    /// `DIR/groups` when the server keeps a data directory.
    dir: Mutex<Option<PathBuf>>,
}

impl GroupStore {
    /// Carries out what the engine decided (called by the driver after the turn's commit).
    pub fn apply(&self, out: GroupOutput) {
        let origin = match &out {
            GroupOutput::Refused { origin, .. }
            | GroupOutput::PublishGo { origin }
            | GroupOutput::FetchGo { origin, .. } => *origin,
            GroupOutput::Forgotten { namespace, group_id } => return self.forget(namespace, group_id),
            GroupOutput::Published { origin, namespace, group_id, state } => {
                let chunks = self.received.lock().expect("not poisoned").remove(origin).unwrap_or_default();
                let blob = Arc::new(Blob { state: state.clone(), chunks });
                let key = (namespace.to_string(), group_id.to_string());
                self.current.lock().expect("not poisoned").insert(key, blob);
                *origin
            }
        };
        if let GroupOutput::Refused { origin, .. } = &out {
            self.received.lock().expect("not poisoned").remove(origin);
        }
        if let Some(tx) = self.waiting.lock().expect("not poisoned").remove(&origin) {
            let _ = tx.send(out);
        }
    }

    /// Drops a forgotten group's bytes, and its file off the driver's thread (removing a large
    /// file may take a while).
    fn forget(&self, namespace: &str, group_id: &str) {
        self.current.lock().expect("not poisoned").remove(&(namespace.to_owned(), group_id.to_owned()));
        if let Some(dir) = self.dir() {
            let path = dir.join(format!("{}.{STATE_EXTENSION}", file_name(namespace, group_id)));
            tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(file = %path.display(), error = %e, "could not remove a forgotten group's state");
                    }
                }
            });
        }
    }

    /// The current version of a group, if the store has one.
    pub fn current(&self, namespace: &str, group_id: &str) -> Option<Arc<Blob>> {
        self.current.lock().expect("not poisoned").get(&(namespace.to_owned(), group_id.to_owned())).cloned()
    }

    /// Keeps current versions in `dir` from now on, and takes the versions it holds: they are
    /// returned (namespace, group id, state) for the engine.
    pub fn open_dir(&self, dir: PathBuf) -> std::io::Result<Vec<(String, String, StateVersion)>> {
        std::fs::create_dir_all(&dir)?;
        let mut restored = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            match path.extension().and_then(|e| e.to_str()) {
                Some(STATE_EXTENSION) => {}
                // A temporary file left by a crash mid-write: its version was never answered.
                Some("partial") => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                _ => continue,
            }
            match read_state_file(&path) {
                Ok((header, blob)) => {
                    restored.push((header.namespace.clone(), header.group_id.clone(), blob.state.clone()));
                    self.current
                        .lock()
                        .expect("not poisoned")
                        .insert((header.namespace, header.group_id), Arc::new(blob));
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "a replica group's state file is unreadable; it is left out")
                }
            }
        }
        *self.dir.lock().expect("not poisoned") = Some(dir);
        Ok(restored)
    }

    /// The directory the current versions are kept in, when the server keeps a data directory.
    pub fn dir(&self) -> Option<PathBuf> {
        self.dir.lock().expect("not poisoned").clone()
    }

    /// Sends `input` to the engine and waits for its answer about call `origin`.
    async fn ask(&self, engine: &EngineHandle, origin: u64, input: Input) -> Result<GroupOutput, Status> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("not poisoned").insert(origin, tx);
        engine.send(Command::Input(input)).await?;
        rx.await.map_err(|_| Status::unavailable("the server is shutting down"))
    }

    fn origin(&self) -> u64 {
        self.next_origin.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The header line of a state file.
#[derive(Serialize, Deserialize)]
struct FileHeader {
    namespace: String,
    group_id: String,
    version: u64,
    checksum: String,
    size: u64,
    published_by: String,
    published_at: u64,
}

/// The file name of a group's state: the SHA-256 of its key, so any namespace and id make a safe
/// name.
fn file_name(namespace: &str, group_id: &str) -> String {
    let mut c = Checksum::default();
    c.update(namespace.as_bytes());
    c.update(&[0]);
    c.update(group_id.as_bytes());
    c.finish()
}

fn write_state_file(dir: &Path, namespace: &str, group_id: &str, blob: &Blob) -> std::io::Result<()> {
    let s = &blob.state;
    let header = FileHeader {
        namespace: namespace.to_owned(),
        group_id: group_id.to_owned(),
        version: s.version,
        checksum: s.checksum.clone(),
        size: s.size,
        published_by: s.published_by.clone(),
        published_at: s.published_at,
    };
    let name = file_name(namespace, group_id);
    let partial = dir.join(format!("{name}.v{}.partial", s.version));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    serde_json::to_writer(&mut f, &header)?;
    f.write_all(b"\n")?;
    for c in &blob.chunks {
        f.write_all(c)?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    let target = dir.join(format!("{name}.{STATE_EXTENSION}"));
    // A later version may have been written meanwhile (publishes answer in turn, files are
    // written beside): never replace it with an older one.
    if read_header(&target).is_ok_and(|h| h.version >= s.version) {
        return std::fs::remove_file(&partial);
    }
    std::fs::rename(&partial, &target)?;
    std::fs::File::open(dir)?.sync_all()
}

fn read_header(path: &Path) -> std::io::Result<FileHeader> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

fn read_state_file(path: &Path) -> std::io::Result<(FileHeader, Blob)> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let header: FileHeader = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    let mut chunks = Vec::new();
    let mut sum = Checksum::default();
    let mut left = header.size;
    while left > 0 {
        let mut buf = vec![0u8; left.min(GROUP_CHUNK_BYTES as u64) as usize];
        r.read_exact(&mut buf)?;
        sum.update(&buf);
        left -= buf.len() as u64;
        chunks.push(Bytes::from(buf));
    }
    if r.read(&mut [0u8; 1])? != 0 {
        return Err(std::io::Error::other("longer than its header says"));
    }
    let checksum = sum.finish();
    if checksum != header.checksum {
        return Err(std::io::Error::other(format!("its bytes hash to {checksum}, not {}", header.checksum)));
    }
    let state = StateVersion {
        version: header.version,
        checksum: header.checksum.clone(),
        size: header.size,
        published_by: header.published_by.clone(),
        published_at: header.published_at,
    };
    Ok((header, Blob { state, chunks }))
}

/// Serves one `PublishGroupState` call to its end (in a task of its own, so that a caller going
/// away midway still tells the engine, which then keeps the previous version). A refusal goes once
/// the caller has ended its upload.
pub async fn publish(
    engine: EngineHandle,
    access: crate::auth::Access,
    inbound: Streaming<v1::GroupStateUpload>,
    idle: Duration,
) -> Result<v1::GroupState, Status> {
    crate::collective::answer_after_upload(inbound, |inbound| Box::pin(publish_upload(engine, access, inbound, idle)))
        .await
}

async fn publish_upload(
    engine: EngineHandle,
    access: crate::auth::Access,
    inbound: &mut Streaming<v1::GroupStateUpload>,
    idle: Duration,
) -> Result<v1::GroupState, Status> {
    let header = match tokio::time::timeout(idle, inbound.message()).await {
        Err(_) => return Err(Status::deadline_exceeded("no group state header came in time")),
        Ok(Ok(Some(v1::GroupStateUpload { kind: Some(Up::Header(h)) }))) => h,
        Ok(Ok(_)) => {
            let e =
                CoreError::Invalid { what: "group state call", reason: "the first message must be its header".into() };
            return Err(convert::status(&e));
        }
        Ok(Err(s)) => return Err(s),
    };
    access.act_as(&header.namespace, &header.agent_id)?;
    let store = engine.groups().clone();
    let origin = store.origin();
    let call = publish_call(&header);
    match store.ask(&engine, origin, Input::GroupPublish { origin, call, size: header.size }).await? {
        GroupOutput::PublishGo { .. } => {}
        GroupOutput::Refused { error, .. } => return Err(convert::status(&error)),
        _ => return Err(Status::internal("unexpected answer to a publish")),
    }
    let received = receive(inbound, header.size, idle, |m: v1::GroupStateUpload| match m.kind {
        Some(Up::Chunk(c)) => Some(c),
        _ => None,
    })
    .await;
    let result = match received {
        Ok((chunks, checksum)) => {
            if !header.checksum.is_empty() && header.checksum != checksum {
                let e = CoreError::ChecksumMismatch {
                    group_id: header.group_id.clone(),
                    what: format!("the bytes received hash to {checksum}, but the header says {}", header.checksum),
                };
                // The engine abandons the publish; the caller learns why.
                let input =
                    Input::GroupPublished { origin, result: Err("its bytes did not match its checksum".into()) };
                let _ = store.ask(&engine, origin, input).await;
                return Err(convert::status(&e));
            }
            store.received.lock().expect("not poisoned").insert(origin, chunks);
            Ok(checksum)
        }
        Err(why) => Err(why),
    };
    match store.ask(&engine, origin, Input::GroupPublished { origin, result }).await? {
        GroupOutput::Published { namespace, group_id, state, .. } => {
            if let (Some(dir), Some(blob)) = (store.dir(), store.current(&namespace, &group_id)) {
                let (ns, id) = (namespace.to_string(), group_id.to_string());
                let written = tokio::task::spawn_blocking(move || write_state_file(&dir, &ns, &id, &blob)).await;
                if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
                    tracing::error!(group = %group_id, error = %e, "could not keep a replica group's state on disk");
                    return Err(Status::unavailable(format!(
                        "version {} of replica group '{group_id}' is current, but could not be kept on disk: {e}",
                        state.version
                    )));
                }
            }
            Ok(state_to_wire(&group_id, &state))
        }
        GroupOutput::Refused { error, .. } => Err(convert::status(&error)),
        _ => Err(Status::internal("unexpected answer to a publish")),
    }
}

/// Reads `size` bytes of chunks (each message's chunk as `chunk` finds it; `None`: the message is
/// not a chunk); their checksum, or why the upload broke off. Serves replica groups' state and
/// traces' outputs alike.
pub(crate) async fn receive<M>(
    inbound: &mut Streaming<M>,
    size: u64,
    idle: Duration,
    chunk: fn(M) -> Option<Bytes>,
) -> Result<(Vec<Bytes>, String), String> {
    let mut chunks = Vec::new();
    let mut sum = Checksum::default();
    let mut got = 0u64;
    while got < size {
        let chunk = match tokio::time::timeout(idle, inbound.message()).await {
            Err(_) => return Err(format!("no chunk came for {} ms after {got} of {size} bytes", idle.as_millis())),
            Ok(Ok(Some(m))) => match chunk(m) {
                Some(c) => c,
                None => return Err(format!("sent something other than a chunk after {got} of {size} bytes")),
            },
            Ok(Ok(None)) => return Err(format!("ended its stream after {got} of {size} bytes")),
            Ok(Err(s)) => return Err(format!("broke off after {got} of {size} bytes ({})", s.message())),
        };
        if chunk.is_empty() || chunk.len() > GROUP_CHUNK_BYTES || got + chunk.len() as u64 > size {
            return Err(format!(
                "sent a chunk of {} bytes after {got} of {size} (chunks are 1 to {GROUP_CHUNK_BYTES} bytes, no more than announced)",
                chunk.len()
            ));
        }
        sum.update(&chunk);
        got += chunk.len() as u64;
        chunks.push(chunk);
    }
    Ok((chunks, sum.finish()))
}

/// Serves one `FetchGroupState` call: the engine's go, then the current version's messages.
pub async fn fetch(
    engine: EngineHandle,
    request: v1::FetchGroupStateRequest,
) -> Result<Vec<v1::GroupStateDownload>, Status> {
    let store = engine.groups().clone();
    let origin = store.origin();
    let call = fetch_call(request);
    let (namespace, group_id) = match store.ask(&engine, origin, Input::GroupFetch { origin, call }).await? {
        GroupOutput::FetchGo { namespace, group_id, .. } => (namespace, group_id),
        GroupOutput::Refused { error, .. } => return Err(convert::status(&error)),
        _ => return Err(Status::internal("unexpected answer to a fetch")),
    };
    let blob = store
        .current(&namespace, &group_id)
        .ok_or_else(|| convert::status(&CoreError::NoGroupState { group_id: group_id.to_string() }))?;
    let first = v1::GroupStateDownload { kind: Some(Down::State(group::state(&group_id, &blob.state))) };
    let chunks = blob.chunks.iter().map(|c| v1::GroupStateDownload { kind: Some(Down::Chunk(c.clone())) });
    Ok(std::iter::once(first).chain(chunks).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bytes = vec![7u8; GROUP_CHUNK_BYTES + 10];
        let state = StateVersion {
            version: 3,
            checksum: Checksum::of(&bytes),
            size: bytes.len() as u64,
            published_by: "a".into(),
            published_at: 5,
        };
        let blob = Blob { state: state.clone(), chunks: vec![Bytes::from(bytes)] };
        write_state_file(dir.path(), "ns", "g", &blob).expect("written");
        let older = Blob { state: StateVersion { version: 2, ..state.clone() }, chunks: blob.chunks.clone() };
        write_state_file(dir.path(), "ns", "g", &older).expect("an older version is not kept");
        let store = GroupStore::default();
        let restored = store.open_dir(dir.path().to_path_buf()).expect("opened");
        assert_eq!(restored, vec![("ns".to_owned(), "g".to_owned(), state)]);
        assert_eq!(
            store.current("ns", "g").expect("kept").chunks.iter().map(|c| c.len()).sum::<usize>(),
            GROUP_CHUNK_BYTES + 10
        );
        // One byte changed: the file is left out.
        let path = dir.path().join(format!("{}.state", file_name("ns", "g")));
        let mut raw = std::fs::read(&path).expect("read");
        *raw.last_mut().expect("bytes") = 8;
        std::fs::write(&path, raw).expect("write");
        assert!(GroupStore::default().open_dir(dir.path().to_path_buf()).expect("opened").is_empty());
    }
}
