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
//! **Shared memory.** Members that ask for it and connected over loopback get regions
//! ([`lockstep_proto::shm::SharedRegion`]: 0600 files in /dev/shm, or regions kept from their last
//! collective, see [`Pool`]), decided when the collective starts: each its own region for its
//! array, and for allreduce, broadcast and allgather (where every member gets the same result) one
//! **shared result region** that every shared-memory member maps and the exchange writes once, as
//! each piece of the result is ready ([`Transfer::deliver`]). For reduce-scatter (or when no
//! shared region can be made) a member's own region holds its result too, written by [`forward`]
//! from a queue of its own. A member's signals (`CollectiveShmWritten`) take the place of chunks:
//! each chunk they complete is `put` as a view of its region, through the same reduction as
//! streamed chunks. A member's own file is removed at its first signal, and in any case when its
//! call ends; the shared result file when the collective's last call ends. Signals are checked
//! (never beyond the array, never going back), and every read and write is bounds-checked.
//!
//! **One outcome.** A stream that breaks, ends early or sends a chunk of the wrong size is
//! reported to the engine ([`Input::CollectiveFault`]); when every result chunk has been handed to
//! every member's stream the exchange reports [`Input::CollectiveTransferred`]. The engine decides
//! once ([`CollectiveEvent::Finished`]) and the driver hands the outcome here: every member's
//! stream ends with `CollectiveDone` or with the same error status.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
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
/// rank, and (when it asked for shared memory from loopback and regions could be made) its part
/// of the shared-memory path.
type Assigned = Result<(Arc<Transfer>, u32, Option<Offered>), Status>;

type Queue = mpsc::Receiver<Result<v1::CollectiveDownload, Status>>;

/// An agent: (namespace, agent id).
type AgentKey = (String, String);

/// A region and its id.
type Region = (u64, Arc<SharedRegion>);

/// A region as offered: its id, mapping and file path (empty for a region handed over again,
/// which its holders have mapped).
type Offering = (u64, Arc<SharedRegion>, String);

/// What a call that may have the shared-memory path (it asked, over loopback) brings: its agent
/// and the regions it still holds mapped from earlier collectives (0: none).
struct ShmAsk {
    agent: AgentKey,
    region: u64,
    result_region: u64,
}

/// A call waiting for its collective to start: where to say so, its result stream, and its
/// shared-memory request.
type Waiting = (oneshot::Sender<Assigned>, Out, Option<ShmAsk>);

/// A shared-memory member's part of a collective, decided when it starts.
struct Offered {
    /// Its own region (id and mapping), when it has an array (or receives its result there).
    own: Option<Region>,
    /// What it is told.
    offer: v1::CollectiveSharedMemory,
    /// Its result pieces, to be written into its own region: none when the collective has a shared
    /// result region.
    queue: Option<Queue>,
}

/// The region that holds a collective's result for every shared-memory member.
struct SharedResult {
    id: u64,
    region: Arc<SharedRegion>,
    /// The agents it is offered to (they map it).
    holders: BTreeSet<AgentKey>,
}

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

/// Shared-memory regions between collectives, each with the agents that map it (besides the
/// server): for each set of holders at most one region of each [`Use`] (the last one they used:
/// clients keep only that one), at most [`POOL_MAX_BYTES`] in all, none unused for more than
/// [`POOL_IDLE`]. Reusing one saves the fresh pages a new file costs (the kernel clears every page
/// of it: more time than the collective's copies).
///
/// A region is handed over again only to a collective whose shared-memory members are exactly its
/// holders, each naming it in its header — which a client does only once it has finished reading
/// the region — so no member still reading an earlier result sees it overwritten.
#[derive(Default)]
struct Pool {
    by_id: HashMap<u64, Pooled>,
    bytes: u64,
}

/// What a kept region served as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// One member's own region (its array; its result without a shared result region).
    Own,
    /// A collective's shared result region.
    Result,
}

struct Pooled {
    use_: Use,
    holders: BTreeSet<AgentKey>,
    region: Arc<SharedRegion>,
    since: std::time::Instant,
}

/// Most bytes of shared-memory regions kept between collectives.
pub const POOL_MAX_BYTES: u64 = 1 << 30;

/// A kept region unused this long is let go (at the next return to the pool).
pub const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

impl Pool {
    /// Region `id` if it is kept for `use_`, mapped by exactly `holders` and at least `size` bytes
    /// long (taken out: one collective at a time uses it).
    fn take(&mut self, id: u64, use_: Use, holders: &BTreeSet<AgentKey>, size: u64) -> Option<Arc<SharedRegion>> {
        let fits =
            self.by_id.get(&id).is_some_and(|p| p.use_ == use_ && &p.holders == holders && p.region.len() >= size);
        if !fits {
            return None;
        }
        let p = self.by_id.remove(&id)?;
        self.bytes -= p.region.len();
        Some(p.region)
    }

    /// Keeps `region` (id `id`) as `holders`' region for `use_`, replacing the one they had, then
    /// lets go of idle regions and of the oldest while over [`POOL_MAX_BYTES`].
    fn give(&mut self, id: u64, use_: Use, holders: BTreeSet<AgentKey>, region: Arc<SharedRegion>) {
        let now = std::time::Instant::now();
        self.by_id.retain(|_, p| !(p.use_ == use_ && p.holders == holders) && now.duration_since(p.since) < POOL_IDLE);
        self.by_id.insert(id, Pooled { use_, holders, region, since: now });
        self.bytes = self.by_id.values().map(|p| p.region.len()).sum();
        while self.bytes > POOL_MAX_BYTES {
            let Some(oldest) = self.by_id.iter().min_by_key(|(_, p)| p.since).map(|(k, _)| *k) else {
                break;
            };
            if let Some(p) = self.by_id.remove(&oldest) {
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
                let n = members.len() as u32;
                let mut shared = self.shared_result(&spec, n, &calls, serial);
                let mut offered: Vec<Option<Offered>> = Vec::with_capacity(calls.len());
                let mut outs: Vec<Out> = Vec::with_capacity(calls.len());
                let mut holders = BTreeSet::new();
                for (rank, call) in calls.iter().enumerate() {
                    let (out, ask) = match call {
                        Some((_, out, ask)) => (out.clone(), ask.as_ref()),
                        // The call went away meanwhile; its fault is on its way to the engine.
                        None => (mpsc::channel(1).0, None),
                    };
                    let part = ask.and_then(|ask| self.offer(ask, &spec, rank as u32, n, serial, shared.as_ref()));
                    match part {
                        Some((own, offer)) if shared.is_some() => {
                            holders.insert(ask.expect("offered on request").agent.clone());
                            offered.push(Some(Offered { own, offer, queue: None }));
                            outs.push(out);
                        }
                        // Its results go through a queue of its own (as deep as a stream's),
                        // drained into its region by its call (see `forward`).
                        Some((own, offer)) => {
                            let (tx, rx) = mpsc::channel(RESULT_QUEUE);
                            offered.push(Some(Offered { own, offer, queue: Some(rx) }));
                            outs.push(tx);
                        }
                        None => {
                            offered.push(None);
                            outs.push(out);
                        }
                    }
                }
                if holders.is_empty() {
                    shared = None; // nobody maps it: its file goes with it
                }
                let streamed = offered.iter().map(|o| o.as_ref().is_none_or(|o| o.queue.is_some())).collect();
                let shared = shared.map(|(id, region, _)| SharedResult { id, region, holders });
                let transfer = Arc::new(Transfer::new(
                    namespace.to_string(),
                    collective_id.to_string(),
                    serial,
                    spec,
                    members,
                    Results { outs, streamed, shared },
                    (diverged, reference),
                ));
                for (rank, out) in transfer.results.outs.iter().enumerate() {
                    if offered[rank].is_some() {
                        continue; // its call says it started, with its regions
                    }
                    // A fresh channel: there is room for this first message.
                    let _ = out.try_send(Ok(down(Down::Started(transfer.started(rank as u32, None)))));
                }
                self.transfers.lock().expect("not poisoned").insert(serial, transfer.clone());
                for ((rank, call), part) in calls.into_iter().enumerate().zip(offered) {
                    if let Some((tx, ..)) = call {
                        let _ = tx.send(Ok((transfer.clone(), rank as u32, part)));
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
                    // Every holder has its result: the region is kept for their next collective.
                    // (A failed one's is not: pieces may still be on their way into it.)
                    if let (Ok(()), Some(r)) = (&result, &t.results.shared) {
                        self.pool.lock().expect("not poisoned").give(
                            r.id,
                            Use::Result,
                            r.holders.clone(),
                            r.region.clone(),
                        );
                    }
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

    /// The shared result region of a collective starting (id, mapping, file path; the path is
    /// empty for a region handed over again), or `None` when its members' results differ
    /// (reduce-scatter), none asked for shared memory, or no region can be made.
    fn shared_result(&self, spec: &CollectiveSpec, n: u32, calls: &[Option<Waiting>], serial: u64) -> Option<Offering> {
        if !matches!(
            spec.kind,
            CollectiveKind::Allreduce(_) | CollectiveKind::Broadcast { .. } | CollectiveKind::Allgather
        ) {
            return None;
        }
        let asks: Vec<&ShmAsk> = calls.iter().flatten().filter_map(|(_, _, ask)| ask.as_ref()).collect();
        let claimed = asks.first()?.result_region;
        let (_, size) = array_and_result_bytes(spec, 0, n);
        if size == 0 || size > MAX_REGION_BYTES {
            return None;
        }
        if claimed != 0 && asks.iter().all(|a| a.result_region == claimed) {
            let holders = asks.iter().map(|a| a.agent.clone()).collect();
            if let Some(r) = self.pool.lock().expect("not poisoned").take(claimed, Use::Result, &holders, size) {
                return Some((claimed, r, String::new()));
            }
        }
        self.create_region(size, serial, "result")
    }

    /// A shared-memory member's own region and what it is told, or `None` when it uses its
    /// stream (there is nothing to share, its region would be too large, or none can be made).
    /// `shared`: the collective's shared result region, if any (then its own region holds only its
    /// array, and none is needed without one).
    fn offer(
        &self,
        ask: &ShmAsk,
        spec: &CollectiveSpec,
        rank: u32,
        n: u32,
        serial: u64,
        shared: Option<&Offering>,
    ) -> Option<(Option<Region>, v1::CollectiveSharedMemory)> {
        let (array_bytes, result_bytes) = array_and_result_bytes(spec, rank, n);
        let size = match shared {
            Some(_) => array_bytes,
            None => array_bytes.checked_add(result_bytes)?,
        };
        let own = if size == 0 && shared.is_some() {
            None
        } else if size == 0 || size > MAX_REGION_BYTES {
            return None;
        } else {
            let holder = BTreeSet::from([ask.agent.clone()]);
            let kept = (ask.region != 0)
                .then(|| self.pool.lock().expect("not poisoned").take(ask.region, Use::Own, &holder, size))
                .flatten();
            Some(match kept {
                Some(r) => (ask.region, r, String::new()),
                None => self.create_region(size, serial, &rank.to_string())?,
            })
        };
        let (result_region, result_path, result_size, result_offset) = match shared {
            Some((id, r, path)) => (*id, path.clone(), r.len(), 0),
            None => (0, String::new(), 0, array_bytes),
        };
        let offer = v1::CollectiveSharedMemory {
            path: own.as_ref().map(|(_, _, path)| path.clone()).unwrap_or_default(),
            size: own.as_ref().map_or(0, |(_, r, _)| r.len()),
            array_offset: 0,
            array_bytes,
            result_offset,
            result_bytes,
            region: own.as_ref().map_or(0, |(id, ..)| *id),
            result_region,
            result_path,
            result_size,
        };
        Some((own.map(|(id, r, _)| (id, r)), offer))
    }

    /// A new region of `size` bytes in [`SHM_DIR`] (id, mapping, path), or `None` when the file
    /// system is short of room or the file cannot be made.
    fn create_region(&self, size: u64, serial: u64, label: &str) -> Option<Offering> {
        let dir = Path::new(SHM_DIR);
        if !has_room(dir, size) {
            return None;
        }
        let id = self.next_region.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{FILE_PREFIX}{}-{serial}-{label}-{:016x}", std::process::id(), rand::random::<u64>());
        match SharedRegion::create(dir, &name, size) {
            Ok(r) => {
                let path = r.path().to_string_lossy().into_owned();
                Some((id, Arc::new(r), path))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a shared-memory region; the member uses its stream");
                None
            }
        }
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

/// Where a collective's results go.
struct Results {
    /// Each member's result queue (its stream's, or its own to drain into its region).
    outs: Vec<Out>,
    /// `streamed[rank]`: rank receives result pieces through `outs[rank]` (not: the shared result
    /// region holds its result, and only `CollectiveDone` goes there).
    streamed: Vec<bool>,
    shared: Option<SharedResult>,
}

/// One collective's transfer.
pub struct Transfer {
    namespace: String,
    collective_id: String,
    serial: u64,
    spec: CollectiveSpec,
    members: Vec<Member>,
    results: Results,
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
        results: Results,
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
            results,
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
                self.deliver(i * chunk, data).await;
                self.completed(engine, None).await;
            }
            CollectiveKind::Allgather => {
                self.deliver(rank as u64 * self.spec.bytes() + i * chunk, data).await;
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
                    for (r, out) in self.results.outs.iter().enumerate() {
                        let (a, b) = CollectiveSpec::block(self.spec.length, r as u32, self.n() as u32);
                        let (from, to) = (a.max(lo), b.min(hi));
                        if from < to {
                            let part = result.slice(((from - lo) * size) as usize..((to - lo) * size) as usize);
                            self.send(out, (from - a) * size, part).await;
                        }
                    }
                } else {
                    self.deliver(i * chunk, result).await;
                }
                self.completed(engine, Some(i)).await;
            }
        }
    }

    /// Puts a piece of the result (the same for every member) at `offset`: once into the shared
    /// result region, if there is one, and to every member that receives pieces.
    async fn deliver(&self, offset: u64, data: Bytes) {
        if let Some(shared) = &self.results.shared {
            // In bounds by construction (the region holds the whole result); a failure would be a
            // bug here, and the members would read zeros: say so loudly.
            if let Err(e) = shared.region.write(offset, &data) {
                tracing::error!(error = %e, collective = %self.collective_id, "a result piece beyond the shared result region");
            }
        }
        for (out, streamed) in self.results.outs.iter().zip(&self.results.streamed) {
            if *streamed {
                self.send(out, offset, data.clone()).await;
            }
        }
    }

    /// Whether some member receives result pieces through its queue.
    fn any_streamed(&self) -> bool {
        self.results.streamed.iter().any(|s| *s)
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

impl Drop for Transfer {
    fn drop(&mut self) {
        // Every member's call has ended: whoever maps the shared result region has it mapped.
        if let Some(shared) = &self.results.shared {
            shared.region.remove();
        }
    }
}

/// Bytes rank `rank` of `n` sends and receives.
fn array_and_result_bytes(spec: &CollectiveSpec, rank: u32, n: u32) -> (u64, u64) {
    let array = if spec.sends(rank) { spec.bytes() } else { 0 };
    let result = spec.result_length(rank, n).saturating_mul(spec.dtype.size() as u64);
    (array, result)
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
    access: crate::auth::Access,
    mut inbound: Streaming<v1::CollectiveUpload>,
    out: Out,
    header_within: std::time::Duration,
    local: bool,
) {
    member(engine, access, &mut inbound, out, header_within, local).await;
    // The outcome is sent (or on its way): read on until the member ends its upload (see `drain`).
    drain(&mut inbound).await;
}

/// Reads what a caller still uploads until it ends its upload (at most [`DRAIN_WITHIN`]), rather
/// than drop the request: a dropped request can reset the stream before a refusal's trailers reach
/// a client still sending (its chunks in flight), and gRPC clients then report an internal error
/// instead of the status.
pub(crate) async fn drain<T: prost::Message + Default>(inbound: &mut Streaming<T>) {
    let _ = tokio::time::timeout(DRAIN_WITHIN, async { while let Ok(Some(_)) = inbound.message().await {} }).await;
}

/// Serves a client-streaming upload (a trace record, a replica group's state) with `serve`; when it
/// refuses, the refusal goes once the caller has ended its upload (see [`drain`]).
pub(crate) async fn answer_after_upload<T, R>(
    mut inbound: Streaming<T>,
    serve: impl for<'a> FnOnce(&'a mut Streaming<T>) -> futures::future::BoxFuture<'a, Result<R, Status>>,
) -> Result<R, Status>
where
    T: prost::Message + Default,
{
    let answer = serve(&mut inbound).await;
    if answer.is_err() {
        drain(&mut inbound).await;
    }
    answer
}

async fn member(
    engine: EngineHandle,
    access: crate::auth::Access,
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
    if let Err(denied) = access.act_as(&header.namespace, &header.agent_id) {
        return refuse(denied).await;
    }
    let wants_shm = header.shared_memory && local;
    let (claimed_region, claimed_result) = (header.shm_region, header.shm_result_region);
    let join = match join_from_wire(header) {
        Ok(j) => j,
        Err(e) => return refuse(convert::status(&e)).await,
    };
    let agent_key = (join.namespace.clone(), join.agent_id.clone());
    let exchange = engine.exchange();
    let origin = exchange.next_origin.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, rx) = oneshot::channel();
    let ask =
        wants_shm.then(|| ShmAsk { agent: agent_key.clone(), region: claimed_region, result_region: claimed_result });
    exchange.waiting.lock().expect("not poisoned").insert(origin, (tx, out.clone(), ask));
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
    let (transfer, rank, offered) = match assigned {
        Ok(Ok(a)) => a,
        Ok(Err(status)) => return refuse(status).await,
        Err(_) => return,
    };
    // A shared-memory member: the message saying it started, with its regions, and (without a
    // shared result region) its results drained from its queue into its own region. Its own file
    // is removed when this call ends, whatever the outcome (the mappings stay until unused).
    let mut shm = None;
    if let Some(Offered { own, offer, queue }) = offered {
        let started = transfer.started(rank, Some(offer.clone()));
        if out.send(Ok(down(Down::Started(started)))).await.is_err() {
            drop(queue);
            return fault("went away before the collective started".into()).await;
        }
        if let Some(queue) = queue {
            let into = own.as_ref().map(|(_, r)| (r.clone(), offer.result_offset, offer.result_bytes));
            tokio::spawn(forward(queue, into, out.clone()));
        }
        shm = Some((own, offer.array_bytes));
    }
    let _remove = shm.as_ref().and_then(|(own, _)| own.as_ref()).map(|(_, r)| RemoveOnDrop(r.clone()));
    let upload = async {
        match &shm {
            Some((own, array_bytes)) => {
                upload_shm(&engine, &transfer, rank, inbound, own.as_ref().map(|(_, r)| r), *array_bytes).await
            }
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
            let _ = transfer.results.outs[rank as usize].send(Ok(down(Down::Done(v1::CollectiveDone {})))).await;
            // Done and mapped by the member (its signals said so): kept for its next collective.
            // (A failed one is not: pieces may still be on their way into it.)
            if let (Some((Some((id, r)), _)), true) = (&shm, uploaded) {
                let holder = BTreeSet::from([agent_key]);
                exchange.pool.lock().expect("not poisoned").give(*id, Use::Own, holder, r.clone());
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
/// the start of its own region) is written, and the chunks it completes go into the transfer
/// straight from the region. A member with no array (a broadcast's non-root) signals 0 once: it has
/// mapped its regions. `Err` says why it broke off.
async fn upload_shm(
    engine: &EngineHandle,
    transfer: &Transfer,
    rank: u32,
    inbound: &mut Streaming<v1::CollectiveUpload>,
    region: Option<&Arc<SharedRegion>>,
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
        if let Some(region) = region {
            region.remove();
        }
        written = signalled;
        // A broadcast or allgather piece goes on to other members' queues, which may drain after
        // this member's next collective reuses the region: those get a copy. (Into the shared
        // result region it is written before `put` returns.)
        let forwarded = matches!(transfer.spec.kind, CollectiveKind::Broadcast { .. } | CollectiveKind::Allgather)
            && transfer.any_streamed();
        while next < total {
            let at = next * chunk;
            let due = (array_bytes - at).min(chunk);
            if at + due > written {
                break;
            }
            let region = region.ok_or("was given no region for its array")?;
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

    fn key(agent: &str) -> AgentKey {
        ("ns".to_owned(), agent.to_owned())
    }

    /// A kept region goes back only to the very agents that map it, for the same use, when large
    /// enough; each set of holders keeps one region per use.
    #[test]
    fn a_kept_region_goes_back_only_to_exactly_its_holders() {
        let dir = std::env::temp_dir().join(format!("lockstep-pool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let region = |name: &str| Arc::new(SharedRegion::create(&dir, name, 4096).unwrap());
        let abc: BTreeSet<AgentKey> = ["a", "b", "c"].map(key).into();
        let ab: BTreeSet<AgentKey> = ["a", "b"].map(key).into();
        let mut pool = Pool::default();
        pool.give(1, Use::Result, abc.clone(), region("r1"));
        assert!(pool.take(1, Use::Result, &ab, 16).is_none(), "c maps it too and may still read it");
        assert!(pool.take(1, Use::Own, &abc, 16).is_none(), "kept as a result region");
        assert!(pool.take(1, Use::Result, &abc, 4097).is_none(), "too small");
        assert!(pool.take(2, Use::Result, &abc, 16).is_none(), "another id");
        assert!(pool.take(1, Use::Result, &abc, 4096).is_some());
        assert!(pool.take(1, Use::Result, &abc, 4096).is_none(), "taken: one collective at a time");
        assert_eq!(pool.bytes, 0);
        // The same holders' next region of a use replaces their last; other uses and holders stay.
        pool.give(1, Use::Result, abc.clone(), region("r2"));
        pool.give(2, Use::Own, [key("a")].into(), region("r3"));
        pool.give(3, Use::Result, ab.clone(), region("r4"));
        pool.give(4, Use::Result, abc.clone(), region("r5"));
        assert!(pool.take(1, Use::Result, &abc, 16).is_none(), "replaced by region 4");
        assert_eq!(pool.bytes, 3 * 4096);
        assert!(pool.take(2, Use::Own, &[key("a")].into(), 16).is_some());
        assert!(pool.take(3, Use::Result, &ab, 16).is_some());
        assert!(pool.take(4, Use::Result, &abc, 16).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
