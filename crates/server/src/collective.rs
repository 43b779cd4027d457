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

/// What a member's call learns from the engine before its transfer starts.
type Assigned = Result<(Arc<Transfer>, u32), Status>;

/// Calls waiting for their collective to start, and transfers in progress.
#[derive(Default)]
pub struct Exchange {
    next_origin: AtomicU64,
    waiting: Mutex<HashMap<u64, (oneshot::Sender<Assigned>, Out)>>,
    transfers: Mutex<HashMap<u64, Arc<Transfer>>>,
}

impl Exchange {
    /// Carries out what the engine decided (called by the driver after the turn's commit).
    pub fn apply(&self, event: CollectiveEvent) {
        match event {
            CollectiveEvent::Refused { origin, error } => {
                if let Some((tx, _)) = self.waiting.lock().expect("not poisoned").remove(&origin) {
                    let _ = tx.send(Err(convert::status(&error)));
                }
            }
            CollectiveEvent::Start { namespace, collective_id, serial, spec, members, diverged, reference } => {
                let mut waiting = self.waiting.lock().expect("not poisoned");
                let calls: Vec<_> = members.iter().map(|m| waiting.remove(&m.origin)).collect();
                drop(waiting);
                let n = members.len() as u32;
                let outs: Vec<Out> = calls
                    .iter()
                    .map(|c| match c {
                        Some((_, out)) => out.clone(),
                        // The call went away meanwhile; its fault is on its way to the engine.
                        None => mpsc::channel(1).0,
                    })
                    .collect();
                let transfer = Arc::new(Transfer::new(
                    namespace.to_string(),
                    collective_id.to_string(),
                    serial,
                    spec,
                    members,
                    outs,
                ));
                for (rank, out) in transfer.outs.iter().enumerate() {
                    let started = v1::CollectiveStarted {
                        rank: rank as u32,
                        members: transfer.members.iter().map(|m| m.agent.to_string()).collect(),
                        result_length: spec.result_length(rank as u32, n),
                        diverged: diverged.clone(),
                        reference_checksum: reference.clone(),
                    };
                    // A fresh channel: there is room for this first message.
                    let _ = out.try_send(Ok(down(Down::Started(started))));
                }
                self.transfers.lock().expect("not poisoned").insert(serial, transfer.clone());
                for (rank, call) in calls.into_iter().enumerate() {
                    if let Some((tx, _)) = call {
                        let _ = tx.send(Ok((transfer.clone(), rank as u32)));
                    }
                }
            }
            CollectiveEvent::Finished { serial, origins, result } => {
                let result = result.map_err(|e| self.explain(serial, e));
                {
                    let mut waiting = self.waiting.lock().expect("not poisoned");
                    for o in &origins {
                        if let Some((tx, _)) = waiting.remove(o) {
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
}

impl Transfer {
    fn new(
        namespace: String,
        collective_id: String,
        serial: u64,
        spec: CollectiveSpec,
        members: Vec<Member>,
        outs: Vec<Out>,
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
        }
    }

    fn n(&self) -> usize {
        self.members.len()
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

/// Serves one member's `Collective` call: its header joins, its chunks go into the transfer, and
/// `out` gets the result and the outcome. Returns when the call is over.
pub async fn serve_member(
    engine: EngineHandle,
    mut inbound: Streaming<v1::CollectiveUpload>,
    out: Out,
    header_within: std::time::Duration,
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
    let join = match join_from_wire(header) {
        Ok(j) => j,
        Err(e) => return refuse(convert::status(&e)).await,
    };
    let exchange = engine.exchange();
    let origin = exchange.next_origin.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, rx) = oneshot::channel();
    exchange.waiting.lock().expect("not poisoned").insert(origin, (tx, out.clone()));
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
    let (transfer, rank) = match assigned {
        Ok(Ok(a)) => a,
        Ok(Err(status)) => return refuse(status).await,
        Err(_) => return,
    };
    let upload = upload(&engine, &transfer, rank, &mut inbound);
    let failure = tokio::select! {
        r = upload => r.err(),
        s = transfer.failed() => return refuse(s).await,
    };
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
            let _ = out.send(Ok(down(Down::Done(v1::CollectiveDone {})))).await;
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
