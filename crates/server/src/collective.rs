//! The exchange: where the arrays of collectives move, beside the engine.
//!
//! The engine decides who takes part, when a collective starts and how it ends
//! ([`lockstep_core::collective`]); it never sees an array. Each member's `Collective` call is a
//! gRPC stream served by [`serve_member`]: the call's header becomes an
//! [`Input::CollectiveJoin`], and once the engine says `Start`, the member's chunks are read from
//! its stream and combined here, chunk by chunk:
//!
//! * **allreduce / reduce-scatter**: chunk *i* of every rank is kept until all are present, then
//!   reduced in rank order ([`lockstep_core::collective::combine`], the one definition of the
//!   documented order) into one shared buffer, which every member's stream sends (reduce-scatter:
//!   the part of it that falls in the member's block);
//! * **broadcast**: the root's chunk *i* goes to every member as it comes;
//! * **allgather**: rank r's chunk *i* goes to every member at its place in the concatenation.
//!
//! **Memory budget.** A member may put chunk *i* only while *i* < (chunks fully reduced so far) +
//! [`WINDOW_CHUNKS`], and its result stream buffers at most [`RESULT_QUEUE`] messages; until it
//! has room, nothing more is read from its stream, so HTTP/2 flow control holds the sender back
//! (at most the stream window, 4 MiB, waits in the transport each way). So a collective of n
//! members holds at most about n × ([`WINDOW_CHUNKS`] + [`RESULT_QUEUE`]) × 256 KiB of arrays here
//! (n × 4 MiB), plus n × 2 × 4 MiB of transport windows (received and not yet read, sent and not yet
//! acknowledged), whatever the array size: n × 12 MiB in all (see [`budget_bytes`]).
//!
//! **Shared memory.** A member that asks for it and connected over loopback gets a region
//! ([`lockstep_proto::shm::SharedRegion`]: a 0600 file in /dev/shm, or its agent's region kept from
//! its last collective, see [`Pool`]) holding its array and then its result. Its signals
//! (`CollectiveShmWritten`) take the place of chunks: each chunk they complete is `put` as a view of
//! the region, through the same reduction as streamed chunks. Its results go through a queue of its
//! own, which [`forward`] drains into the region, passing on only `CollectiveDone`. The file is
//! removed at the member's first signal, and in any case when its call ends. Signals are checked
//! (never beyond the array, never going back), and every read and write is bounds-checked.
//!
//! **One outcome.** A stream that breaks, ends early or sends a chunk of the wrong size is
//! reported to the engine ([`Input::CollectiveFault`]); when every result chunk has been handed to
//! every member's stream the exchange reports [`Input::CollectiveTransferred`]. The engine decides
//! once ([`CollectiveEvent::Finished`]) and the driver hands the outcome here: every member's
//! stream ends with `CollectiveDone` or with the same error status.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lockstep_core::collective::{combine, finish, CollectiveEvent, CollectiveKind, CollectiveSpec, Member};
use lockstep_core::{CoreError, Input};
use lockstep_proto::collective::{join_from_wire, COLLECTIVE_CHUNK_BYTES};
use lockstep_proto::convert;
use lockstep_proto::shm::{has_room, SharedRegion, FILE_PREFIX, SHM_DIR};
use lockstep_proto::v1;
use lockstep_proto::v1::collective_download::Kind as Down;
use lockstep_proto::v1::collective_upload::Kind as Up;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Status, Streaming};

use crate::driver::{Command, EngineHandle};

/// Chunk indices a member may be ahead of the slowest (allreduce and reduce-scatter).
pub const WINDOW_CHUNKS: u64 = 8;

/// Messages buffered on each member's result stream.
pub const RESULT_QUEUE: usize = 8;

/// Bytes of arrays the exchange holds at most for a collective of `members` (not counting the
/// transport's flow-control windows).
pub fn budget_bytes(members: usize) -> u64 {
    members as u64 * (WINDOW_CHUNKS + RESULT_QUEUE as u64) * COLLECTIVE_CHUNK_BYTES as u64
}

type Out = mpsc::Sender<Result<v1::CollectiveDownload, Status>>;

/// What a member's call learns from the engine before its transfer starts: the transfer, its
/// rank, and (when it asked for shared memory from loopback) the queue its result pieces come
/// through, to be written into its region rather than sent.
type Assigned = Result<(Arc<Transfer>, u32, Option<Queue>), Status>;

type Queue = mpsc::Receiver<Result<v1::CollectiveDownload, Status>>;

/// A call waiting for its collective to start: where to say so, its result stream, and whether it
/// may have the shared-memory path.
type Waiting = (oneshot::Sender<Assigned>, Out, bool);

/// Calls waiting for their collective to start, and transfers in progress.
#[derive(Default)]
pub struct Exchange {
    next_origin: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
    transfers: Mutex<HashMap<u64, Arc<Transfer>>>,
    /// Shared-memory regions kept for their agents' next collectives.
    pool: Mutex<Pool>,
    next_region: AtomicU64,
}

/// Shared-memory regions between collectives: at most one per agent (the last one it used, mapped
/// by it and by the server, its file already removed), at most [`POOL_MAX_BYTES`] in all, none
/// unused for more than [`POOL_IDLE`]. Reusing one saves the fresh pages a new file costs (the
/// kernel clears every page of it: more time than the collective's copies).
#[derive(Default)]
struct Pool {
    by_agent: HashMap<(String, String), Pooled>,
    bytes: u64,
}

struct Pooled {
    id: u64,
    region: Arc<SharedRegion>,
    since: std::time::Instant,
}

/// Most bytes of shared-memory regions kept between collectives.
pub const POOL_MAX_BYTES: u64 = 1 << 30;

/// A kept region unused this long is let go (at the next return to the pool).
pub const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

impl Pool {
    /// Agent `key`'s region `id` if it is kept and holds at least `size` bytes (taken out: one
    /// collective at a time uses it).
    fn take(&mut self, key: &(String, String), id: u64, size: u64) -> Option<(u64, Arc<SharedRegion>)> {
        let fits = self.by_agent.get(key).is_some_and(|p| p.id == id && p.region.len() >= size);
        if !fits {
            return None;
        }
        let p = self.by_agent.remove(key)?;
        self.bytes -= p.region.len();
        Some((p.id, p.region))
    }

    /// Keeps `region` as agent `key`'s (replacing the one it had), then lets go of idle regions
    /// and of the oldest while over [`POOL_MAX_BYTES`].
    fn give(&mut self, key: (String, String), id: u64, region: Arc<SharedRegion>) {
        let now = std::time::Instant::now();
        self.bytes += region.len();
        if let Some(old) = self.by_agent.insert(key, Pooled { id, region, since: now }) {
            self.bytes -= old.region.len();
        }
        self.by_agent.retain(|_, p| now.duration_since(p.since) < POOL_IDLE);
        self.bytes = self.by_agent.values().map(|p| p.region.len()).sum();
        while self.bytes > POOL_MAX_BYTES {
            let Some(oldest) = self.by_agent.iter().min_by_key(|(_, p)| p.since).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(p) = self.by_agent.remove(&oldest) {
                self.bytes -= p.region.len();
            }
        }
    }
}

impl Exchange {
    /// Carries out what the engine decided (called by the driver after the turn's commit).
    pub fn apply(&self, event: CollectiveEvent) {
        match event {
            CollectiveEvent::Refused { origin, error } => {
                if let Some((tx, ..)) = self.waiting.lock().expect("not poisoned").remove(&origin) {
                    let _ = tx.send(Err(convert::status(&error)));
                }
            }
            CollectiveEvent::Start { namespace, collective_id, serial, spec, members, diverged, reference } => {
                let mut waiting = self.waiting.lock().expect("not poisoned");
                let calls: Vec<_> = members.iter().map(|m| waiting.remove(&m.origin)).collect();
                drop(waiting);
                // A shared-memory member's results go through a queue of its own (as deep as a
                // stream's), drained into its region by its call (see `forward`).
                let mut queues: Vec<Option<Queue>> = Vec::with_capacity(calls.len());
                let outs: Vec<Out> = calls
                    .iter()
                    .map(|c| match c {
                        Some((_, _, true)) => {
                            let (tx, rx) = mpsc::channel(RESULT_QUEUE);
                            queues.push(Some(rx));
                            tx
                        }
                        Some((_, out, false)) => {
                            queues.push(None);
                            out.clone()
                        }
                        // The call went away meanwhile; its fault is on its way to the engine.
                        None => {
                            queues.push(None);
                            mpsc::channel(1).0
                        }
                    })
                    .collect();
                let transfer = Arc::new(Transfer::new(
                    namespace.to_string(),
                    collective_id.to_string(),
                    serial,
                    spec,
                    members,
                    outs,
                    (diverged, reference),
                ));
                for (rank, out) in transfer.outs.iter().enumerate() {
                    if queues[rank].is_some() {
                        continue; // its call says it started, with its region
                    }
                    // A fresh channel: there is room for this first message.
                    let _ = out.try_send(Ok(down(Down::Started(transfer.started(rank as u32, None)))));
                }
                self.transfers.lock().expect("not poisoned").insert(serial, transfer.clone());
                for ((rank, call), queue) in calls.into_iter().enumerate().zip(queues) {
                    if let Some((tx, ..)) = call {
                        let _ = tx.send(Ok((transfer.clone(), rank as u32, queue)));
                    }
                }
            }
            CollectiveEvent::Finished { serial, origins, result } => {
                let result = result.map_err(|e| self.explain(serial, e));
                {
                    let mut waiting = self.waiting.lock().expect("not poisoned");
                    for o in &origins {
                        if let Some((tx, ..)) = waiting.remove(o) {
                            let _ = tx.send(Err(result.clone().err().unwrap_or_else(|| Status::internal("ended"))));
                        }
                    }
                }
                if let Some(t) = self.transfers.lock().expect("not poisoned").remove(&serial) {
                    t.outcome.send_replace(Some(result));
                }
            }
        }
    }

    /// The status for a failure; a timeout during the transfer names the members that had not
    /// finished sending (the engine does not see the transfer).
    fn explain(&self, serial: u64, mut e: CoreError) -> Status {
        if let CoreError::CollectiveTimeout { missing, joined_all: true, .. } = &mut e {
            if let Some(t) = self.transfers.lock().expect("not poisoned").get(&serial) {
                *missing = t
                    .members
                    .iter()
                    .zip(&t.sent_all)
                    .filter(|(_, done)| !done.load(Ordering::Relaxed))
                    .map(|(m, _)| m.agent.to_string())
                    .collect();
            }
        }
        convert::status(&e)
    }

    /// Transfers in progress (for tests and metrics).
    pub fn transfers(&self) -> usize {
        self.transfers.lock().expect("not poisoned").len()
    }
}

fn down(kind: Down) -> v1::CollectiveDownload {
    v1::CollectiveDownload { kind: Some(kind) }
}

/// Chunks of one chunk index waiting for the other ranks, and which indices are done.
struct Slots {
    pending: HashMap<u64, Vec<Option<Bytes>>>,
    done: BTreeSet<u64>,
    prefix: u64,
}

/// One collective's transfer.
pub struct Transfer {
    namespace: String,
    collective_id: String,
    serial: u64,
    spec: CollectiveSpec,
    members: Vec<Member>,
    outs: Vec<Out>,
    slots: Mutex<Slots>,
    /// Chunk indices fully reduced, from 0 on (members wait on it to stay within the window).
    prefix: watch::Sender<u64>,
    /// Chunk completions still to come before the transfer is done.
    remaining: AtomicU64,
    /// `sent_all[rank]`: the member sent its whole array.
    sent_all: Vec<AtomicBool>,
    /// The engine's decision: done, or failed with a status.
    outcome: watch::Sender<Option<Result<(), Status>>>,
    /// Members whose presented state checksum diverged, and what they were compared with (told
    /// to every member at the start).
    diverged: Vec<String>,
    reference: String,
}

impl Transfer {
    fn new(
        namespace: String,
        collective_id: String,
        serial: u64,
        spec: CollectiveSpec,
        members: Vec<Member>,
        outs: Vec<Out>,
        (diverged, reference): (Vec<String>, String),
    ) -> Self {
        let n = members.len() as u64;
        let chunks = chunks(spec.bytes());
        let remaining = match spec.kind {
            CollectiveKind::Allgather => chunks * n,
            _ => chunks,
        };
        Transfer {
            namespace,
            collective_id,
            serial,
            spec,
            sent_all: members.iter().map(|_| AtomicBool::new(false)).collect(),
            members,
            outs,
            slots: Mutex::new(Slots { pending: HashMap::new(), done: BTreeSet::new(), prefix: 0 }),
            prefix: watch::Sender::new(0),
            remaining: AtomicU64::new(remaining),
            outcome: watch::Sender::new(None),
            diverged,
            reference,
        }
    }

    fn n(&self) -> usize {
        self.members.len()
    }

    /// The message telling rank `rank` the collective started (and, for a shared-memory member,
    /// where its region is).
    fn started(&self, rank: u32, shared_memory: Option<v1::CollectiveSharedMemory>) -> v1::CollectiveStarted {
        v1::CollectiveStarted {
            rank,
            members: self.members.iter().map(|m| m.agent.to_string()).collect(),
            result_length: self.spec.result_length(rank, self.n() as u32),
            diverged: self.diverged.clone(),
            reference_checksum: self.reference.clone(),
            shared_memory,
        }
    }

    /// Bytes rank `rank` sends and receives.
    fn array_and_result_bytes(&self, rank: u32) -> (u64, u64) {
        let array = if self.spec.sends(rank) { self.spec.bytes() } else { 0 };
        let result = self.spec.result_length(rank, self.n() as u32).saturating_mul(self.spec.dtype.size() as u64);
        (array, result)
    }

    /// Waits until the engine decided; `Err` with the status when the collective failed.
    async fn failed(&self) -> Status {
        let mut rx = self.outcome.subscribe();
        loop {
            if let Some(Err(s)) = rx.borrow_and_update().as_ref() {
                return s.clone();
            }
            if rx.changed().await.is_err() {
                return Status::unavailable("the exchange stopped");
            }
        }
    }

    /// Takes rank `rank`'s chunk `i` (the caller stops on failure: see [`serve_member`]).
    async fn put(&self, engine: &EngineHandle, rank: u32, i: u64, data: Bytes) {
        let size = self.spec.dtype.size() as u64;
        let chunk = COLLECTIVE_CHUNK_BYTES as u64;
        match self.spec.kind {
            CollectiveKind::Broadcast { .. } => {
                for out in &self.outs {
                    self.send(out, i * chunk, data.clone()).await;
                }
                self.completed(engine, None).await;
            }
            CollectiveKind::Allgather => {
                let at = rank as u64 * self.spec.bytes() + i * chunk;
                for out in &self.outs {
                    self.send(out, at, data.clone()).await;
                }
                self.completed(engine, None).await;
            }
            CollectiveKind::Allreduce(op) | CollectiveKind::ReduceScatter(op) => {
                let mut prefix = self.prefix.subscribe();
                while i >= *prefix.borrow_and_update() + WINDOW_CHUNKS {
                    if prefix.changed().await.is_err() {
                        return;
                    }
                }
                let all = {
                    let mut slots = self.slots.lock().expect("not poisoned");
                    let n = self.n();
                    let entry = slots.pending.entry(i).or_insert_with(|| vec![None; n]);
                    entry[rank as usize] = Some(data);
                    if entry.iter().all(Option::is_some) {
                        slots.pending.remove(&i)
                    } else {
                        None
                    }
                };
                let Some(all) = all else { return };
                // Rank order, left to right: the documented order, the same bytes for everyone.
                let mut acc = all[0].as_ref().expect("all present").to_vec();
                for next in &all[1..] {
                    combine(self.spec.dtype, op, &mut acc, next.as_ref().expect("all present"));
                }
                finish(self.spec.dtype, op, &mut acc, all.len());
                drop(all);
                let result = Bytes::from(acc);
                if let CollectiveKind::ReduceScatter(_) = self.spec.kind {
                    let (lo, hi) = (i * chunk / size, (i * chunk + result.len() as u64) / size);
                    for (r, out) in self.outs.iter().enumerate() {
                        let (a, b) = CollectiveSpec::block(self.spec.length, r as u32, self.n() as u32);
                        let (from, to) = (a.max(lo), b.min(hi));
                        if from < to {
                            let part = result.slice(((from - lo) * size) as usize..((to - lo) * size) as usize);
                            self.send(out, (from - a) * size, part).await;
                        }
                    }
                } else {
                    for out in &self.outs {
                        self.send(out, i * chunk, result.clone()).await;
                    }
                }
                self.completed(engine, Some(i)).await;
            }
        }
    }

    /// Hands a result piece to one member's stream, unless the collective failed meanwhile.
    async fn send(&self, out: &Out, offset: u64, data: Bytes) {
        let piece = down(Down::Chunk(v1::CollectiveResultChunk { offset, data }));
        tokio::select! {
            _ = out.send(Ok(piece)) => {}
            _ = self.failed() => {}
        }
    }

    /// One chunk (index `i` for reductions) went to every member.
    async fn completed(&self, engine: &EngineHandle, i: Option<u64>) {
        if let Some(i) = i {
            let mut slots = self.slots.lock().expect("not poisoned");
            slots.done.insert(i);
            let mut p = slots.prefix;
            while slots.done.remove(&p) {
                p += 1;
            }
            slots.prefix = p;
            self.prefix.send_replace(p);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.transferred(engine).await;
        }
    }

    async fn transferred(&self, engine: &EngineHandle) {
        let input = Input::CollectiveTransferred {
            namespace: self.namespace.clone(),
            collective_id: self.collective_id.clone(),
            serial: self.serial,
        };
        let _ = engine.send(Command::Input(input)).await;
    }
}

/// Chunks an array of `bytes` is sent in.
fn chunks(bytes: u64) -> u64 {
    bytes.div_ceil(COLLECTIVE_CHUNK_BYTES as u64)
}

/// How long a call that has its outcome keeps reading what its member still uploads.
const DRAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one member's `Collective` call: its header joins, its chunks go into the transfer, and
/// `out` gets the result and the outcome. `local`: the caller connected over loopback (only then
/// may it have the shared-memory path). Returns when the call is over.
pub async fn serve_member(
    engine: EngineHandle,
    mut inbound: Streaming<v1::CollectiveUpload>,
    out: Out,
    header_within: std::time::Duration,
    local: bool,
) {
    member(engine, &mut inbound, out, header_within, local).await;
    // The outcome is sent (or on its way): read on until the member ends its upload rather than
    // drop the request, which can reset the stream before the outcome's trailers reach a client
    // still sending (a refused member's chunks are in flight), and gRPC clients then report an
    // internal error instead of the outcome.
    let _ = tokio::time::timeout(DRAIN_WITHIN, async { while let Ok(Some(_)) = inbound.message().await {} }).await;
}

async fn member(
    engine: EngineHandle,
    inbound: &mut Streaming<v1::CollectiveUpload>,
    out: Out,
    header_within: std::time::Duration,
    local: bool,
) {
    let refuse = |s: Status| {
        let out = out.clone();
        async move {
            let _ = out.send(Err(s)).await;
        }
    };
    let header = match tokio::time::timeout(header_within, inbound.message()).await {
        Err(_) => return refuse(Status::deadline_exceeded("no collective header came in time")).await,
        Ok(Ok(Some(v1::CollectiveUpload { kind: Some(Up::Header(h)) }))) => h,
        Ok(Ok(Some(_))) => {
            let e =
                CoreError::Invalid { what: "collective call", reason: "the first message must be its header".into() };
            return refuse(convert::status(&e)).await;
        }
        Ok(Ok(None)) | Ok(Err(_)) => return,
    };
    let wants_shm = header.shared_memory && local;
    let claimed_region = header.shm_region;
    let join = match join_from_wire(header) {
        Ok(j) => j,
        Err(e) => return refuse(convert::status(&e)).await,
    };
    let agent_key = (join.namespace.clone(), join.agent_id.clone());
    let exchange = engine.exchange();
    let origin = exchange.next_origin.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, rx) = oneshot::channel();
    exchange.waiting.lock().expect("not poisoned").insert(origin, (tx, out.clone(), wants_shm));
    if engine.send(Command::Input(Input::CollectiveJoin { origin, join })).await.is_err() {
        return;
    }
    let fault = |reason: String| {
        let engine = engine.clone();
        async move {
            let _ = engine.send(Command::Input(Input::CollectiveFault { origin, reason })).await;
        }
    };
    // Until the engine starts it, the member can only go away.
    let assigned = tokio::select! {
        a = rx => a,
        _ = out.closed() => {
            exchange.waiting.lock().expect("not poisoned").remove(&origin);
            return fault("went away before the collective started".into()).await;
        }
    };
    let (transfer, rank, queue) = match assigned {
        Ok(Ok(a)) => a,
        Ok(Err(status)) => return refuse(status).await,
        Err(_) => return,
    };
    // A shared-memory member: its region (or none, if it cannot be made: then the stream), the
    // message saying it started, and its results drained from the queue into the region. The file
    // is removed when this call ends, whatever the outcome (the mappings stay until unused).
    let mut region = None;
    if let Some(queue) = queue {
        region = offer_region(exchange, &transfer, rank, &agent_key, claimed_region);
        let offer = region.as_ref().map(|(r, offer)| (r.clone(), offer.clone()));
        let started = transfer.started(rank, offer.as_ref().map(|(_, o)| o.clone()));
        if out.send(Ok(down(Down::Started(started)))).await.is_err() {
            drop(queue);
            return fault("went away before the collective started".into()).await;
        }
        tokio::spawn(forward(queue, offer.map(|(r, o)| (r, o.result_offset, o.result_bytes)), out.clone()));
    }
    let _remove = region.as_ref().map(|(r, _)| RemoveOnDrop(r.clone()));
    let upload = async {
        match &region {
            Some((r, offer)) => upload_shm(&engine, &transfer, rank, inbound, r, offer.array_bytes).await,
            None => upload(&engine, &transfer, rank, inbound).await,
        }
    };
    let failure = tokio::select! {
        r = upload => r.err(),
        s = transfer.failed() => return refuse(s).await,
    };
    let uploaded = failure.is_none();
    if let Some(reason) = failure {
        fault(reason).await;
    } else {
        transfer.sent_all[rank as usize].store(true, Ordering::Relaxed);
    }
    // Wait for the engine's decision; a member that goes away meanwhile fails everyone.
    let mut outcome = transfer.outcome.subscribe();
    let decided = loop {
        if let Some(o) = outcome.borrow_and_update().clone() {
            break o;
        }
        tokio::select! {
            changed = outcome.changed() => if changed.is_err() { return },
            _ = out.closed() => {
                fault("went away before receiving the whole result".into()).await;
                // The engine's decision follows; nobody is left to read it here.
                return;
            }
        }
    };
    match decided {
        Ok(()) => {
            // Through the member's result queue: a shared-memory member's pieces are all in its
            // region before it learns it is done.
            let _ = transfer.outs[rank as usize].send(Ok(down(Down::Done(v1::CollectiveDone {})))).await;
            // Done and mapped by the member (its signals said so): kept for its next collective.
            // (A failed one is not: pieces may still be on their way into it.)
            if let (Some((r, offer)), true) = (&region, uploaded) {
                exchange.pool.lock().expect("not poisoned").give(agent_key, offer.region, r.clone());
            }
        }
        Err(s) => refuse(s).await,
    }
}

/// Reads rank `rank`'s array from its stream into the transfer; `Err` says why it broke off.
async fn upload(
    engine: &EngineHandle,
    transfer: &Transfer,
    rank: u32,
    inbound: &mut Streaming<v1::CollectiveUpload>,
) -> Result<(), String> {
    if !transfer.spec.sends(rank) {
        return Ok(());
    }
    let bytes = transfer.spec.bytes();
    let total = chunks(bytes);
    for i in 0..total {
        let chunk = match inbound.message().await {
            Ok(Some(v1::CollectiveUpload { kind: Some(Up::Chunk(c)) })) => c.data,
            Ok(Some(v1::CollectiveUpload { kind: Some(Up::ShmWritten(_)) })) => {
                return Err(format!("signalled shared memory it was not given, where chunk {i} of its array was due"))
            }
            Ok(Some(_)) => return Err(format!("sent something other than chunk {i} of its array")),
            Ok(None) => return Err(format!("ended its stream after {i} of {total} chunks of its array")),
            Err(s) => return Err(format!("broke off its transfer after {i} of {total} chunks ({})", s.message())),
        };
        let due = (bytes - i * COLLECTIVE_CHUNK_BYTES as u64).min(COLLECTIVE_CHUNK_BYTES as u64);
        if chunk.len() as u64 != due {
            return Err(format!(
                "sent {} bytes as chunk {i} where {due} were due (chunks are {COLLECTIVE_CHUNK_BYTES} bytes, the last one shorter)",
                chunk.len()
            ));
        }
        transfer.put(engine, rank, i, chunk).await;
    }
    Ok(())
}

/// Most bytes of one member's region (its array and its result): beyond it, the member uses the
/// stream. 2 GiB: a 1 GiB array (`limits.max_collective_bytes`' default) and its allreduce.
pub const MAX_REGION_BYTES: u64 = 2 << 30;

/// Creates rank `rank`'s region (array, then result) in [`SHM_DIR`], or `None` when there is
/// nothing to share, it would be too large, the file system is short of room or the file cannot
/// be made (the member then uses its stream).
fn offer_region(
    exchange: &Exchange,
    transfer: &Transfer,
    rank: u32,
    agent: &(String, String),
    claimed: u64,
) -> Option<(Arc<SharedRegion>, v1::CollectiveSharedMemory)> {
    let (array_bytes, result_bytes) = transfer.array_and_result_bytes(rank);
    let size = array_bytes.checked_add(result_bytes)?;
    let offer = |path: String, size: u64, region: u64| v1::CollectiveSharedMemory {
        path,
        size,
        array_offset: 0,
        array_bytes,
        result_offset: array_bytes,
        result_bytes,
        region,
    };
    if size == 0 || size > MAX_REGION_BYTES {
        return None;
    }
    if claimed != 0 {
        if let Some((id, r)) = exchange.pool.lock().expect("not poisoned").take(agent, claimed, size) {
            let len = r.len();
            return Some((r, offer(String::new(), len, id)));
        }
    }
    let dir = std::path::Path::new(SHM_DIR);
    if !has_room(dir, size) {
        return None;
    }
    let id = exchange.next_region.fetch_add(1, Ordering::Relaxed) + 1;
    let name = format!("{FILE_PREFIX}{}-{}-{rank}-{:016x}", std::process::id(), transfer.serial, rand::random::<u64>());
    match SharedRegion::create(dir, &name, size) {
        Ok(r) => {
            let o = offer(r.path().to_string_lossy().into_owned(), size, id);
            Some((Arc::new(r), o))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a shared-memory region; the member uses its stream");
            None
        }
    }
}

/// Removes a region's file when the call that offered it ends.
struct RemoveOnDrop(Arc<SharedRegion>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// Drains a shared-memory member's result queue: result pieces are written into its region
/// (`[result_offset, result_offset + result_bytes)`), everything else goes on to its stream.
/// Without a region (none could be made) everything goes on to the stream. Keeps draining after
/// the stream closed, so that nobody waits on a member that went away.
async fn forward(mut queue: Queue, region: Option<(Arc<SharedRegion>, u64, u64)>, out: Out) {
    let mut open = true;
    while let Some(msg) = queue.recv().await {
        let msg = match (&region, msg) {
            (Some((r, at, len)), Ok(v1::CollectiveDownload { kind: Some(Down::Chunk(piece)) })) => {
                let fits = piece.offset.checked_add(piece.data.len() as u64).is_some_and(|end| end <= *len);
                match fits.then(|| r.write(at + piece.offset, &piece.data)) {
                    Some(Ok(())) => continue,
                    _ => Err(Status::internal("a result piece beyond the member's result region")),
                }
            }
            (_, msg) => msg,
        };
        if open && out.send(msg).await.is_err() {
            open = false;
        }
    }
}

/// Reads a shared-memory member's signals: each says how much of its array (`array_bytes`, from
/// the region's start) is written, and the chunks it completes go into the transfer straight from
/// the region. A member with no array (a broadcast's non-root) signals 0 once: it has mapped the
/// region. `Err` says why it broke off.
async fn upload_shm(
    engine: &EngineHandle,
    transfer: &Transfer,
    rank: u32,
    inbound: &mut Streaming<v1::CollectiveUpload>,
    region: &Arc<SharedRegion>,
    array_bytes: u64,
) -> Result<(), String> {
    let total = chunks(array_bytes);
    let chunk = COLLECTIVE_CHUNK_BYTES as u64;
    let (mut written, mut next) = (0u64, 0u64);
    loop {
        let signalled = match inbound.message().await {
            Ok(Some(v1::CollectiveUpload { kind: Some(Up::ShmWritten(w)) })) => w.written,
            Ok(Some(_)) => {
                return Err(format!(
                    "sent something other than a shared-memory signal after {written} of {array_bytes} bytes of its array"
                ))
            }
            Ok(None) => {
                return Err(format!(
                    "ended its stream after signalling {written} of {array_bytes} bytes of its array in shared memory"
                ))
            }
            Err(s) => {
                return Err(format!(
                    "broke off its transfer after signalling {written} of {array_bytes} bytes of its array in shared memory ({})",
                    s.message()
                ))
            }
        };
        if signalled > array_bytes {
            return Err(format!(
                "signalled {signalled} bytes of its array written in shared memory, beyond its array of {array_bytes} bytes"
            ));
        }
        if signalled < written {
            return Err(format!(
                "signalled {signalled} bytes of its array written in shared memory after signalling {written}"
            ));
        }
        // Mapped by the member now: the file is no longer needed (the mappings keep the memory).
        region.remove();
        written = signalled;
        // A broadcast or allgather piece goes on to other members' queues, which may drain after
        // this member's next collective reuses the region: those get a copy.
        let forwarded = matches!(transfer.spec.kind, CollectiveKind::Broadcast { .. } | CollectiveKind::Allgather);
        while next < total {
            let at = next * chunk;
            let due = (array_bytes - at).min(chunk);
            if at + due > written {
                break;
            }
            let mut data = region.bytes(at, due).map_err(|e| e.to_string())?;
            if forwarded {
                data = Bytes::copy_from_slice(&data);
            }
            transfer.put(engine, rank, next, data).await;
            next += 1;
        }
        if written == array_bytes {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_does_not_grow_with_the_array() {
        assert_eq!(budget_bytes(8), 8 * 16 * 256 * 1024);
        assert_eq!(chunks(0), 0);
        assert_eq!(chunks(1), 1);
        assert_eq!(chunks(COLLECTIVE_CHUNK_BYTES as u64 * 3), 3);
    }
}
