//! The trace store: where traces' output bytes move and are kept, beside the engine.
//!
//! The engine owns every rule of traces ([`lockstep_core::trace`]): the index, claims and
//! waiters, retention, counts. It holds small outputs itself (up to `traces.inline_bytes`, kept in
//! the database with the trace); larger ones are kept here, as **blobs** under a name this store
//! gives them, and the engine only keeps the name.
//!
//! A `Record` call ([`record`]) reads the header, asks the engine whether the record may go ahead
//! ([`TraceInput::Check`]: nothing changes), reads the bytes (chunks of at most 256 KiB, SHA-256 as
//! they come, checked against the header's hash), keeps them — in `DIR/traces/NAME.out` (written
//! under a temporary name, synced, renamed, directory synced) with a data directory, in memory
//! otherwise — and only then records the trace ([`TraceInput::Record`]), which the engine checks
//! again and commits. So an acknowledged trace's bytes are on disk before its row is committed; a
//! record refused at that point (or a same trace already stored) drops its blob, and a blob left
//! by a crash before the commit is removed at the next start ([`TraceStore::open_dir`]), while a
//! committed trace whose blob is missing is forgotten ([`Engine::retain_trace_blobs`]).
//!
//! Reads (`Lookup`, `Get`, `GetOrClaim`) are engine inputs (a hit counts and uses the trace); the
//! answer carries the trace, and this store hands the bytes along: inline ones from the trace,
//! others from memory or from the file, opened when the engine's answer arrives so that an
//! eviction right after cannot take them away mid-stream.
//!
//! A `Lookup`'s hit on a trace whose output is inline is served beside the engine, from this
//! store's **index** ([`TraceStore::hit`]): the traces the engine holds with their outputs inline,
//! kept current by the driver after each turn's commit and before anything of the turn is
//! answered ([`TraceStore::index`]), so a lookup sent after a record's acknowledgement finds the
//! trace, and one sent after an eviction does not. The hit is noted before the call is answered
//! and handed to the engine by the driver before its next input ([`TraceInput::Used`]: no engine
//! turn of its own), which counts it and uses the trace for retention as its own lookup would; so
//! whatever is sent after the answer (a stats call, a record that evicts) comes after it. Anything else — a miss, bad input, an output kept as a blob —
//! goes to the engine as before.
//!
//! [`Engine::retain_trace_blobs`]: lockstep_core::Engine::retain_trace_blobs

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use lockstep_core::trace::{Trace, TraceSettings};
use lockstep_core::{CoreError, Input, TraceEvent, TraceInput};
use lockstep_proto::trace::{self as wire, TRACE_CHUNK_BYTES};
use lockstep_proto::v1::trace_download::Kind as Down;
use lockstep_proto::v1::trace_upload::Kind as Up;
use lockstep_proto::{convert, v1};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use crate::driver::{Command, EngineHandle};
use crate::grpc::BoxStream;

/// Where an answered trace's bytes are.
pub enum Body {
    /// In the trace itself (inline), or held in memory: the chunks.
    Chunks(Vec<Bytes>),
    /// In a file (opened when the answer came).
    File(std::fs::File),
}

/// The engine's answer to one call, with the bytes of a trace it found.
pub struct Answer {
    pub event: TraceEvent,
    pub body: Option<Body>,
}

/// Calls waiting for the engine, and the blobs kept.
pub struct TraceStore {
    next_origin: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Blobs held in memory (no data directory).
    memory: Mutex<HashMap<String, Arc<Vec<Bytes>>>>,
    /// `DIR/traces` when the server keeps a data directory.
    dir: Mutex<Option<PathBuf>>,
    /// Outputs up to this size go inline (the engine's `traces.inline_bytes`).
    inline_bytes: AtomicUsize,
    /// Makes blob names unique within this process (with the time, across restarts).
    blob_seq: AtomicU64,
    /// Lookups' hits served beside the engine (see the module doc).
    index: RwLock<Index>,
    /// Hits served from the index that the engine has not been told of yet (namespace, id), and
    /// how many (read without the lock).
    used: Mutex<Vec<(String, String)>>,
    used_waiting: AtomicUsize,
}

/// At most this many hits served from the index wait for the driver's next input; past it a
/// hit is handed to the engine at once (which also wakes the driver).
pub const MAX_USES_WAITING: usize = 1024;

/// The traces whose outputs the engine keeps inline, as of the last committed turn.
#[derive(Default)]
struct Index {
    /// The engine's settings, to check and canonicalise a lookup as it does.
    settings: TraceSettings,
    /// Namespace → trace id → the answer to a hit.
    hits: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Hit>>>,
}

/// A lookup's answer for one indexed trace: made once, when the trace is recorded or changed.
pub struct Hit {
    pub info: v1::TraceInfo,
    /// The whole output (inline: at most `traces.inline_bytes`).
    pub output: Bytes,
}

impl Hit {
    /// The download of this hit: one message with the output beside the info when the caller
    /// reads it there (`inline_output`), else the info, then the output in chunks.
    pub fn download(&self, inline_output: bool) -> BoxStream<v1::TraceDownload> {
        let info = Some(Down::Info(self.info.clone()));
        let messages = if inline_output || self.output.is_empty() {
            let output = if inline_output { self.output.clone() } else { Bytes::new() };
            vec![v1::TraceDownload { kind: info, output }]
        } else {
            std::iter::once(v1::TraceDownload { kind: info, output: Bytes::new() })
                .chain(chunked(&self.output).into_iter().map(chunk))
                .collect()
        };
        Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))
    }
}

impl Default for TraceStore {
    fn default() -> Self {
        TraceStore {
            next_origin: AtomicU64::new(0),
            waiting: Mutex::default(),
            memory: Mutex::default(),
            dir: Mutex::default(),
            inline_bytes: AtomicUsize::new(lockstep_core::trace::TraceSettings::default().inline_bytes),
            blob_seq: AtomicU64::new(0),
            index: RwLock::default(),
            used: Mutex::default(),
            used_waiting: AtomicUsize::new(0),
        }
    }
}

impl TraceStore {
    /// The engine's trace settings: outputs up to `traces.inline_bytes` are recorded inline from
    /// now on, and lookups served from the index are checked as the engine checks them.
    pub fn set_settings(&self, settings: &TraceSettings) {
        self.inline_bytes.store(settings.inline_bytes, Ordering::Relaxed);
        self.index.write().expect("not poisoned").settings = settings.clone();
    }

    /// Brings the index up to date with the traces the engine changed (each as stored now, or
    /// gone); called by the driver after each turn's commit, before the turn's answers.
    pub fn index(&self, changed: Vec<(Arc<str>, Arc<str>, Option<Trace>)>) {
        if changed.is_empty() {
            return;
        }
        // Made before taking the lock: lookups wait only for the map's updates.
        let changed: Vec<_> = changed
            .into_iter()
            .map(|(ns, id, trace)| {
                let hit = trace.and_then(|t| {
                    let output = t.output.inline.clone()?;
                    Some(Arc::new(Hit { info: wire::info(&t, false), output }))
                });
                (ns, id, hit)
            })
            .collect();
        let mut index = self.index.write().expect("not poisoned");
        for (ns, id, hit) in changed {
            match hit {
                Some(hit) => {
                    index.hits.entry(ns).or_default().insert(id, hit);
                }
                None => {
                    if let Some(space) = index.hits.get_mut(&*ns) {
                        space.remove(&*id);
                        if space.is_empty() {
                            index.hits.remove(&*ns);
                        }
                    }
                }
            }
        }
    }

    /// Notes a hit served from the index, for the driver to hand to the engine before its next
    /// input ([`TraceStore::take_used`]): the hit costs no engine turn of its own, and anything
    /// sent after the lookup's answer still reaches the engine after it. Gives the hit back when
    /// [`MAX_USES_WAITING`] already wait: the caller hands it to the engine itself.
    pub fn note_used(&self, namespace: String, id: String) -> Option<(String, String)> {
        let mut used = self.used.lock().expect("not poisoned");
        if used.len() >= MAX_USES_WAITING {
            return Some((namespace, id));
        }
        used.push((namespace, id));
        self.used_waiting.store(used.len(), Ordering::Release);
        None
    }

    /// The hits served from the index since the last call, in the order they were served.
    pub fn take_used(&self) -> Vec<(String, String)> {
        if self.used_waiting.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut used = self.used.lock().expect("not poisoned");
        self.used_waiting.store(0, Ordering::Release);
        std::mem::take(&mut *used)
    }

    /// A lookup's hit from the index: the trace of `tool` on `input` in `namespace` if the engine
    /// holds it with its output inline, with the namespace and id to report its use under.
    /// `None` sends the lookup to the engine (a miss, bad input, or an output kept as a blob).
    pub fn hit(&self, namespace: &str, tool: &str, input: &str) -> Option<(String, String, Arc<Hit>)> {
        let ns = lockstep_core::name::namespace_or_default(namespace).ok()?;
        let index = self.index.read().expect("not poisoned");
        let space = index.hits.get(ns)?;
        lockstep_core::trace::validate_tool(tool, &index.settings).ok()?;
        let canonical = lockstep_core::trace::canonical_input(input, &index.settings).ok()?;
        let id = lockstep_core::trace::trace_id(tool, &canonical);
        let hit = space.get(id.as_str())?.clone();
        Some((ns.to_owned(), id, hit))
    }

    /// Carries out what the engine decided (called by the driver after the turn's commit).
    pub fn apply(&self, event: TraceEvent) {
        let origin = match &event {
            TraceEvent::Evicted(e) => {
                if let Some(blob) = &e.blob {
                    self.drop_blob(blob);
                }
                return;
            }
            // The call waits on: its next answer (the trace, the claim, or why not) goes to it.
            TraceEvent::Waiting { .. } => return,
            TraceEvent::Found { origin, .. }
            | TraceEvent::Miss { origin }
            | TraceEvent::Claimed { origin, .. }
            | TraceEvent::Go { origin, .. }
            | TraceEvent::Recorded { origin, .. }
            | TraceEvent::Released { origin }
            | TraceEvent::Refused { origin, .. } => *origin,
        };
        let Some(tx) = self.waiting.lock().expect("not poisoned").remove(&origin) else { return };
        let body = match &event {
            TraceEvent::Found { trace, .. } => match self.body(trace) {
                Ok(body) => Some(body),
                Err(e) => {
                    tracing::error!(trace = %trace.id, error = %e, "a trace's output could not be read");
                    let error = CoreError::UnknownTrace { namespace: trace.namespace.clone(), id: trace.id.clone() };
                    let _ = tx.send(Answer { event: TraceEvent::Refused { origin, error }, body: None });
                    return;
                }
            },
            _ => None,
        };
        let _ = tx.send(Answer { event, body });
    }

    /// The bytes of a trace the engine answered with.
    fn body(&self, trace: &Trace) -> std::io::Result<Body> {
        if let Some(bytes) = &trace.output.inline {
            return Ok(Body::Chunks(chunked(bytes)));
        }
        let blob = trace.output.blob.as_deref().unwrap_or_default();
        if let Some(chunks) = self.memory.lock().expect("not poisoned").get(blob) {
            return Ok(Body::Chunks(chunks.to_vec()));
        }
        match self.dir() {
            Some(dir) => Ok(Body::File(std::fs::File::open(dir.join(format!("{blob}.out")))?)),
            None => Err(std::io::Error::other(format!("blob {blob} is not held"))),
        }
    }

    /// Drops a blob no trace references (its file off the driver's thread).
    fn drop_blob(&self, blob: &str) {
        self.memory.lock().expect("not poisoned").remove(blob);
        if let Some(dir) = self.dir() {
            let path = dir.join(format!("{blob}.out"));
            tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(file = %path.display(), error = %e, "could not remove an evicted trace's output");
                    }
                }
            });
        }
    }

    /// Keeps blobs in `dir` from now on; returns the names of the blobs it holds (files from a
    /// crash mid-write are removed).
    pub fn open_dir(&self, dir: PathBuf) -> std::io::Result<HashSet<String>> {
        std::fs::create_dir_all(&dir)?;
        let mut present = HashSet::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("out") => {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        present.insert(stem.to_owned());
                    }
                }
                Some("partial") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        *self.dir.lock().expect("not poisoned") = Some(dir);
        Ok(present)
    }

    /// Removes the blobs in the directory that no trace references (left by a crash between a
    /// blob's write and its trace's commit).
    pub fn remove_unreferenced(&self, present: &HashSet<String>, referenced: &HashSet<String>) -> usize {
        let Some(dir) = self.dir() else { return 0 };
        let mut removed = 0;
        for name in present.difference(referenced) {
            if std::fs::remove_file(dir.join(format!("{name}.out"))).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn dir(&self) -> Option<PathBuf> {
        self.dir.lock().expect("not poisoned").clone()
    }

    fn origin(&self) -> u64 {
        self.next_origin.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends `input` (made for the call's origin) to the engine and waits for its answer.
    async fn ask(&self, engine: &EngineHandle, origin: u64, input: TraceInput) -> Result<Answer, Status> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("not poisoned").insert(origin, tx);
        engine.send(Command::Input(Input::Trace(input))).await?;
        rx.await.map_err(|_| Status::unavailable("the server is shutting down"))
    }

    /// Keeps `chunks` as a new blob; its name.
    async fn keep(&self, id: &str, origin: u64, chunks: Vec<Bytes>) -> std::io::Result<String> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let seq = self.blob_seq.fetch_add(1, Ordering::Relaxed);
        // The id's first 32 hex digits say whose it is; time and sequence make it unique.
        let name = format!("{}-{nanos:x}-{seq:x}-{origin:x}", &id[..32.min(id.len())]);
        match self.dir() {
            None => {
                self.memory.lock().expect("not poisoned").insert(name.clone(), Arc::new(chunks));
            }
            Some(dir) => {
                let n = name.clone();
                tokio::task::spawn_blocking(move || write_blob(&dir, &n, &chunks))
                    .await
                    .map_err(std::io::Error::other)??;
            }
        }
        Ok(name)
    }
}

fn chunked(bytes: &Bytes) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(TRACE_CHUNK_BYTES)
        .map(|i| bytes.slice(i..(i + TRACE_CHUNK_BYTES).min(bytes.len())))
        .collect()
}

fn write_blob(dir: &Path, name: &str, chunks: &[Bytes]) -> std::io::Result<()> {
    let partial = dir.join(format!("{name}.partial"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    for c in chunks {
        f.write_all(c)?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&partial, dir.join(format!("{name}.out")))?;
    std::fs::File::open(dir)?.sync_all()
}

/// A call waiting in the engine that is told to stop waiting if its caller goes away first (a
/// claim it was given then passes on).
struct CancelOnDrop {
    engine: EngineHandle,
    origin: u64,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.traces().waiting.lock().expect("not poisoned").remove(&self.origin);
            let (engine, origin) = (self.engine.clone(), self.origin);
            tokio::spawn(async move {
                let _ = engine.send(Command::Input(Input::Trace(TraceInput::Cancel { origin }))).await;
            });
        }
    }
}

/// Serves one `Record` call to its end (in a task of its own, so that a caller going away midway
/// leaves nothing half done).
pub async fn record(
    engine: EngineHandle,
    access: crate::auth::Access,
    inbound: Streaming<v1::TraceUpload>,
    idle: Duration,
) -> Result<v1::TraceInfo, Status> {
    crate::collective::answer_after_upload(inbound, |inbound| Box::pin(record_upload(engine, access, inbound, idle)))
        .await
}

async fn record_upload(
    engine: EngineHandle,
    access: crate::auth::Access,
    inbound: &mut Streaming<v1::TraceUpload>,
    idle: Duration,
) -> Result<v1::TraceInfo, Status> {
    let header = match tokio::time::timeout(idle, inbound.message()).await {
        Err(_) => return Err(Status::deadline_exceeded("no trace header came in time")),
        Ok(Ok(Some(v1::TraceUpload { kind: Some(Up::Header(h)) }))) => h,
        Ok(Ok(_)) => {
            let e = CoreError::Invalid { what: "trace record", reason: "the first message must be its header".into() };
            return Err(convert::status(&e));
        }
        Ok(Err(s)) => return Err(s),
    };
    let session = header.session.clone().unwrap_or_default();
    access.act_as(&session.namespace, &session.agent_id)?;
    let store = engine.traces().clone();
    let call = wire::session(header.session.clone());
    let mut rec = wire::record(&header, header.sha256.to_ascii_lowercase());
    // Checked as a blob (the bytes are not here yet); the record proper says where they are.
    rec.output.blob = Some(String::new());
    let origin = store.origin();
    let id = match store
        .ask(&engine, origin, TraceInput::Check { origin, call: call.clone(), record: Box::new(rec.clone()) })
        .await?
    {
        Answer { event: TraceEvent::Go { id, .. }, .. } => id,
        Answer { event: TraceEvent::Refused { error, .. }, .. } => return Err(convert::status(&error)),
        _ => return Err(Status::internal("unexpected answer to a trace check")),
    };
    let (chunks, sha) = crate::group::receive(inbound, header.size, idle, |m: v1::TraceUpload| match m.kind {
        Some(Up::Chunk(c)) => Some(c),
        _ => None,
    })
    .await
    .map_err(|why| convert::status(&CoreError::Invalid { what: "trace output", reason: why }))?;
    if sha != rec.output.sha256 {
        let what = format!("the bytes received hash to {sha}, but the header says {}", header.sha256);
        return Err(convert::status(&CoreError::TraceHashMismatch { id, what }));
    }
    let blob = if header.size as usize <= store.inline_bytes.load(Ordering::Relaxed) {
        let mut all = Vec::with_capacity(header.size as usize);
        chunks.iter().for_each(|c| all.extend_from_slice(c));
        rec.inline = Some(all);
        rec.output.blob = None;
        None
    } else {
        let name = store.keep(&id, origin, chunks).await.map_err(|e| {
            tracing::error!(trace = %id, error = %e, "could not keep a trace's output");
            Status::unavailable(format!("the output of trace '{id}' could not be kept: {e}"))
        })?;
        rec.output.blob = Some(name.clone());
        Some(name)
    };
    let origin = store.origin();
    let answer = store.ask(&engine, origin, TraceInput::Record { origin, call, record: Box::new(rec) }).await;
    let (result, keep_blob) = match answer {
        Ok(Answer { event: TraceEvent::Recorded { trace, new, .. }, .. }) => (Ok(wire::info(&trace, new)), new),
        Ok(Answer { event: TraceEvent::Refused { error, .. }, .. }) => (Err(convert::status(&error)), false),
        Ok(_) => (Err(Status::internal("unexpected answer to a trace record")), false),
        Err(s) => (Err(s), true),
    };
    if let (Some(name), false) = (&blob, keep_blob) {
        store.drop_blob(name);
    }
    result
}

/// What a read call streams back: the trace's info, then its bytes.
pub type Download = BoxStream<v1::TraceDownload>;

/// Asks the engine (`input`, made for `origin`) and streams its answer: a miss, a claim, or a
/// trace with its bytes. `wait` keeps a call that waits for a claim cancellable;
/// `inline_output`: the caller reads an inline output beside the info (see [`Hit::download`]).
pub async fn read(
    engine: EngineHandle,
    origin: u64,
    input: TraceInput,
    wait: bool,
    inline_output: bool,
) -> Result<Download, Status> {
    let store = engine.traces().clone();
    let mut guard = CancelOnDrop { engine: engine.clone(), origin, armed: false };
    let (tx, rx) = oneshot::channel();
    store.waiting.lock().expect("not poisoned").insert(origin, tx);
    engine.send(Command::Input(Input::Trace(input))).await?;
    guard.armed = wait;
    let answer = rx.await.map_err(|_| Status::unavailable("the server is shutting down"))?;
    guard.armed = false;
    let one = |kind| -> Download {
        Box::pin(tokio_stream::once(Ok(v1::TraceDownload { kind: Some(kind), output: Bytes::new() })))
    };
    match answer.event {
        TraceEvent::Miss { .. } => Ok(one(Down::Miss(v1::TraceMiss {}))),
        TraceEvent::Claimed { id, .. } => Ok(one(Down::Claim(v1::TraceClaim { id }))),
        TraceEvent::Found { trace, .. } => {
            if let Some(output) = trace.output.inline.clone() {
                return Ok(Hit { info: wire::info(&trace, false), output }.download(inline_output));
            }
            let first = v1::TraceDownload { kind: Some(Down::Info(wire::info(&trace, false))), output: Bytes::new() };
            Ok(stream_body(first, answer.body, trace.output.size))
        }
        TraceEvent::Refused { error, .. } => Err(convert::status(&error)),
        _ => Err(Status::internal("unexpected answer to a trace read")),
    }
}

fn chunk(c: Bytes) -> v1::TraceDownload {
    v1::TraceDownload { kind: Some(Down::Chunk(c)), output: Bytes::new() }
}

/// `first`, then the body's chunks: from memory as they are, from a file as the caller takes them.
fn stream_body(first: v1::TraceDownload, body: Option<Body>, size: u64) -> Download {
    match body {
        None | Some(Body::Chunks(_)) if size == 0 => Box::pin(tokio_stream::once(Ok(first))),
        Some(Body::Chunks(chunks)) => {
            Box::pin(tokio_stream::iter(std::iter::once(first).chain(chunks.into_iter().map(chunk)).map(Ok)))
        }
        Some(Body::File(mut file)) => {
            let (out, down) = mpsc::channel(4);
            // Read on a blocking thread, one chunk at a time, as the caller takes them.
            tokio::task::spawn_blocking(move || {
                if out.blocking_send(Ok(first)).is_err() {
                    return;
                }
                let mut left = size;
                while left > 0 {
                    let mut buf = vec![0u8; left.min(TRACE_CHUNK_BYTES as u64) as usize];
                    if let Err(e) = file.read_exact(&mut buf) {
                        let _ = out
                            .blocking_send(Err(Status::data_loss(format!("a trace's output could not be read: {e}"))));
                        return;
                    }
                    left -= buf.len() as u64;
                    if out.blocking_send(Ok(chunk(Bytes::from(buf)))).is_err() {
                        return;
                    }
                }
            });
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(down))
        }
        None => Box::pin(tokio_stream::once(Err(Status::internal("a trace was answered without its output")))),
    }
}

/// The origin for a new read call.
pub fn next_origin(engine: &EngineHandle) -> u64 {
    engine.traces().origin()
}

/// Releases a claim.
pub async fn release(engine: EngineHandle, r: v1::TraceClaimRequest) -> Result<v1::TraceReleased, Status> {
    let store = engine.traces().clone();
    let origin = store.origin();
    let input = TraceInput::Release { origin, call: wire::session(r.session), tool: r.tool, input: r.input_json };
    match store.ask(&engine, origin, input).await?.event {
        TraceEvent::Released { .. } => Ok(v1::TraceReleased {}),
        TraceEvent::Refused { error, .. } => Err(convert::status(&error)),
        _ => Err(Status::internal("unexpected answer to a release")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_served_wait_in_order_up_to_a_bound() {
        let store = TraceStore::default();
        assert!(store.take_used().is_empty());
        for i in 0..MAX_USES_WAITING {
            assert_eq!(store.note_used("ns".into(), i.to_string()), None);
        }
        // Past the bound the caller is given the hit back, to hand to the engine itself.
        assert_eq!(store.note_used("ns".into(), "x".into()), Some(("ns".to_owned(), "x".to_owned())));
        let used = store.take_used();
        assert_eq!(used.len(), MAX_USES_WAITING);
        assert_eq!(
            (used[0].1.as_str(), used[MAX_USES_WAITING - 1].1.clone()),
            ("0", (MAX_USES_WAITING - 1).to_string())
        );
        assert!(store.take_used().is_empty(), "each hit is handed over once");
        assert_eq!(store.note_used("ns".into(), "y".into()), None);
        assert_eq!(store.take_used(), vec![("ns".to_owned(), "y".to_owned())]);
    }

    #[test]
    fn blobs_are_written_whole_and_leftovers_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = TraceStore::default();
        assert!(store.open_dir(dir.path().to_path_buf()).expect("opened").is_empty());
        let bytes = Bytes::from(vec![3u8; TRACE_CHUNK_BYTES + 5]);
        write_blob(dir.path(), "b1", &chunked(&bytes)).expect("written");
        std::fs::write(dir.path().join("b2.partial"), b"half").expect("written");
        let store = TraceStore::default();
        let present = store.open_dir(dir.path().to_path_buf()).expect("opened");
        assert_eq!(present, HashSet::from(["b1".to_owned()]));
        assert!(!dir.path().join("b2.partial").exists(), "a half-written blob is removed");
        assert_eq!(std::fs::read(dir.path().join("b1.out")).expect("read").len(), TRACE_CHUNK_BYTES + 5);
        assert_eq!(store.remove_unreferenced(&present, &HashSet::new()), 1);
        assert!(!dir.path().join("b1.out").exists());
    }
}
