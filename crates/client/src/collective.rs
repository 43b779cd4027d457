//! Collectives on numeric arrays from a Rust agent: [`Agent::allreduce`], [`Agent::broadcast`],
//! [`Agent::allgather`] and [`Agent::reduce_scatter`].
//!
//! Each call opens one `Collective` stream beside the agent's session, sends its header and its
//! array once (in chunks of 256 KiB, as fast as the server's flow control lets it), and receives
//! the result once. The result is the same bytes for every member (the server reduces in rank
//! order, left to right; see docs/PROTOCOL.md, "Collectives"); a failure is the same error for
//! every member ([`Error::CollectiveFailed`] naming the member concerned, or who is missing).
//!
//! **Shared memory.** A call made with [`Collective::shared_memory`] asks the server for the
//! same-host path: when the server offers it (the agent is connected over loopback), the array is
//! written into a file the server created in /dev/shm and mapped by both, the stream carries only
//! small signals, and the result is read from shared memory once the collective is done — for
//! allreduce, broadcast and allgather from one region the server writes once for every member on
//! the path (docs/PROTOCOL.md, "Shared memory"). When the server does not offer it, the call uses the
//! stream as usual. The results are the same bytes either way. Ask for it only when this process
//! can open the server's /dev/shm files (same host, same user, same /dev/shm): a member that cannot
//! map the offered file fails the collective.

use std::time::Duration;

use bytes::Bytes;
use lockstep_core::collective::{CollectiveJoin, CollectiveKind, CollectiveSpec};
pub use lockstep_core::collective::{DType, Group, ReduceOp};
use lockstep_proto::collective::{join_to_wire, COLLECTIVE_CHUNK_BYTES};
use lockstep_proto::shm::SharedRegion;
use lockstep_proto::v1;
use lockstep_proto::v1::collective_download::Kind as Down;
use lockstep_proto::v1::collective_upload::Kind as Up;

use crate::{Agent, Error};

/// An element type collectives carry: `f32`, `f64`, `i32`, `i64` (little-endian on the wire).
pub trait Element: Copy + Default + Send + Sync + 'static + sealed::Sealed {
    /// The wire's name for it.
    const DTYPE: DType;
    /// Appends `values` to `out`, little-endian.
    fn encode(values: &[Self], out: &mut Vec<u8>);
    /// Reads little-endian values into `out` (as many as `bytes` holds).
    fn decode_into(bytes: &[u8], out: &mut [Self]);
    /// Appends the little-endian values `bytes` holds to `out`.
    fn decode_extend(bytes: &[u8], out: &mut Vec<Self>);
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = $d;
            fn encode(values: &[Self], out: &mut Vec<u8>) {
                // Sized first, then filled in fixed-size pieces: the loop compiles to a plain
                // copy on little-endian machines (no capacity check per element).
                const N: usize = std::mem::size_of::<$t>();
                let start = out.len();
                out.resize(start + values.len() * N, 0);
                for (o, v) in out[start..].chunks_exact_mut(N).zip(values) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            fn decode_into(bytes: &[u8], out: &mut [Self]) {
                for (v, b) in out.iter_mut().zip(bytes.chunks_exact(std::mem::size_of::<$t>())) {
                    *v = <$t>::from_le_bytes(b.try_into().expect("element size"));
                }
            }
            fn decode_extend(bytes: &[u8], out: &mut Vec<Self>) {
                let values = bytes.chunks_exact(std::mem::size_of::<$t>());
                out.extend(values.map(|b| <$t>::from_le_bytes(b.try_into().expect("element size"))));
            }
        }
    };
}

element!(f32, DType::F32);
element!(f64, DType::F64);
element!(i32, DType::I32);
element!(i64, DType::I64);

/// Which collective a call joins: its id (every member uses the same; a new id per round), its
/// group, and how long to wait for everyone (zero: the server's default).
#[derive(Clone, Debug)]
pub struct Collective {
    pub id: String,
    pub group: Group,
    pub timeout: Duration,
    /// A checksum of this member's state, presented to the others (see [`Collective::checksum`]).
    pub state_checksum: Option<String>,
    /// Ask for the same-host shared-memory path (see the module's notes).
    pub shared_memory: bool,
}

impl Collective {
    /// The collective `id` of these agents, ranked in this order.
    pub fn agents<S: Into<String>>(id: impl Into<String>, agents: impl IntoIterator<Item = S>) -> Self {
        Collective {
            id: id.into(),
            group: Group::Agents(agents.into_iter().map(Into::into).collect()),
            timeout: Duration::ZERO,
            state_checksum: None,
            shared_memory: false,
        }
    }

    /// The collective `id` of the members of replica group `group_id`, in the group's ranks.
    pub fn replica(id: impl Into<String>, group_id: impl Into<String>) -> Self {
        Collective {
            id: id.into(),
            group: Group::Replica(group_id.into()),
            timeout: Duration::ZERO,
            state_checksum: None,
            shared_memory: false,
        }
    }

    /// Presents a checksum of this member's state (e.g. [`crate::state_checksum`] of its
    /// parameters): members whose checksum diverges are named in [`CollectiveOutcome::diverged`].
    pub fn checksum(mut self, checksum: impl Into<String>) -> Self {
        self.state_checksum = Some(checksum.into());
        self
    }

    /// The collective `id` of every live agent with `role`, ranked by agent id.
    pub fn role(id: impl Into<String>, role: impl Into<String>) -> Self {
        Collective {
            id: id.into(),
            group: Group::Role(role.into()),
            timeout: Duration::ZERO,
            state_checksum: None,
            shared_memory: false,
        }
    }

    /// With a deadline for joining and transfer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Asking (or not) for the same-host shared-memory path.
    pub fn shared_memory(mut self, yes: bool) -> Self {
        self.shared_memory = yes;
        self
    }
}

impl Agent {
    /// The element-wise reduction (`op`) of every member's `data`, in rank order; every member
    /// gets the same result. Every member must pass arrays of the same length and type.
    pub async fn allreduce<T: Element>(&self, c: &Collective, data: &[T], op: ReduceOp) -> Result<Vec<T>, Error> {
        Ok(self.allreduce_outcome(c, data, op).await?.result)
    }

    /// As [`Agent::allreduce`], with who diverged (see [`Collective::checksum`]).
    pub async fn allreduce_outcome<T: Element>(
        &self,
        c: &Collective,
        data: &[T],
        op: ReduceOp,
    ) -> Result<CollectiveOutcome<T>, Error> {
        self.collective(c, CollectiveKind::Allreduce(op), data, true).await
    }

    /// Rank `root`'s array for everyone. Every member passes an array of the same length; only
    /// the root's contents are sent.
    pub async fn broadcast<T: Element>(&self, c: &Collective, root: u32, data: &[T]) -> Result<Vec<T>, Error> {
        let (.., agent, _) = self.collective_parts();
        let is_root = match &c.group {
            Group::Agents(ids) => ids.get(root as usize).is_some_and(|id| *id == agent),
            // A role's or replica group's ranks are the server's; it sends the root's array only.
            Group::Role(_) | Group::Replica(_) => true,
        };
        Ok(self.collective(c, CollectiveKind::Broadcast { root }, data, is_root).await?.result)
    }

    /// Every member's array, concatenated in rank order.
    pub async fn allgather<T: Element>(&self, c: &Collective, data: &[T]) -> Result<Vec<T>, Error> {
        Ok(self.collective(c, CollectiveKind::Allgather, data, true).await?.result)
    }

    /// This member's block of the reduction: rank r of n gets elements `[r·L/n, (r+1)·L/n)`.
    pub async fn reduce_scatter<T: Element>(&self, c: &Collective, data: &[T], op: ReduceOp) -> Result<Vec<T>, Error> {
        Ok(self.collective(c, CollectiveKind::ReduceScatter(op), data, true).await?.result)
    }

    async fn collective<T: Element>(
        &self,
        c: &Collective,
        kind: CollectiveKind,
        data: &[T],
        send: bool,
    ) -> Result<CollectiveOutcome<T>, Error> {
        let (mut grpc, namespace, agent_id, resume_token) = self.collective_parts();
        let join = CollectiveJoin {
            namespace,
            agent_id,
            resume_token,
            collective_id: c.id.clone(),
            group: c.group.clone(),
            spec: CollectiveSpec { kind, dtype: T::DTYPE, length: data.len() as u64 },
            timeout_ms: c.timeout.as_millis().min(u64::MAX as u128) as u64,
            state_checksum: c.state_checksum.clone(),
        };
        let mut header = join_to_wire(&join);
        header.shared_memory = c.shared_memory;
        let kept = if c.shared_memory { self.kept_region() } else { None };
        header.shm_region = kept.as_ref().map_or(0, |(id, _)| *id);
        // Out of the agent while this call may read it, so that no other call names it.
        let kept_result = if c.shared_memory { self.take_result_region() } else { None };
        header.shm_result_region = kept_result.as_ref().map_or(0, |(id, _)| *id);
        let header = v1::CollectiveUpload { kind: Some(Up::Header(header)) };
        // The array is encoded a chunk at a time as the transport takes it (flow control paces
        // it), so a large array is neither copied whole nor encoded in one long stretch that
        // would hold up the agent's heartbeats. A broadcast member that is not the root sends its
        // header alone. A call that asked for shared memory waits for the start to learn which
        // path it has.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(header).await.map_err(|_| protocol("the upload closed"))?;
        let (path_tx, path_rx) = tokio::sync::oneshot::channel::<Path>();
        let asked = c.shared_memory;
        let produce = async move {
            let shared = match asked {
                true => match path_rx.await {
                    Ok(Path::Shared(shared)) => Some(shared),
                    Ok(Path::Stream) | Err(_) => None,
                    // Ending the upload fails the collective; the outcome comes on the results.
                    Ok(Path::Unusable) => return,
                },
                false => None,
            };
            let up = |kind| v1::CollectiveUpload { kind: Some(kind) };
            match shared {
                Some(shared) => {
                    // Written a step at a time, each step signalled: the server reduces what is
                    // written while the rest is being written.
                    let offer = &shared.offer;
                    let array = if send { data } else { &[] };
                    let mut written = 0u64;
                    let mut buf = Vec::with_capacity(SHM_STEP_BYTES);
                    for part in array.chunks(SHM_STEP_BYTES / T::DTYPE.size()) {
                        buf.clear();
                        T::encode(part, &mut buf);
                        let wrote = shared.region.as_ref().map(|r| r.write(offer.array_offset + written, &buf));
                        if !matches!(wrote, Some(Ok(()))) {
                            return; // an offer that does not hold the array: the receiver says so
                        }
                        written += buf.len() as u64;
                        let signal = v1::CollectiveShmWritten { written };
                        if tx.send(up(Up::ShmWritten(signal))).await.is_err() {
                            return;
                        }
                        // The channel may take every signal at once: let the heartbeats run.
                        tokio::task::yield_now().await;
                    }
                    // Nothing to write (a broadcast's non-root): say the region is mapped.
                    if written == 0 && tx.send(up(Up::ShmWritten(v1::CollectiveShmWritten { written }))).await.is_err()
                    {
                        return;
                    }
                }
                None if send => {
                    for part in data.chunks(COLLECTIVE_CHUNK_BYTES / T::DTYPE.size()) {
                        let mut bytes = Vec::with_capacity(COLLECTIVE_CHUNK_BYTES);
                        T::encode(part, &mut bytes);
                        let chunk = v1::CollectiveChunk { data: Bytes::from(bytes) };
                        if tx.send(up(Up::Chunk(chunk))).await.is_err() {
                            return; // the call ended: its outcome says why
                        }
                    }
                }
                None => {}
            }
            // Held open until the outcome: ending the upload early is not leaving.
            tx.closed().await;
        };
        let consume = async move {
            let received = async {
                let mut results = grpc.collective(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
                receive::<T>(&mut results, path_tx, (kept, kept_result.clone())).await
            };
            let (outcome, used) = match received.await {
                Ok(r) => r,
                Err(e) => {
                    // Not read by this call any more, whatever happened to it.
                    if let Some(k) = kept_result {
                        self.keep_result_region(k);
                    }
                    return Err(e);
                }
            };
            if let Some((id, region)) = used.0 {
                self.keep_region(id, region);
            }
            if let Some(k) = used.1.or(kept_result) {
                self.keep_result_region(k);
            }
            Ok(outcome)
        };
        tokio::pin!(consume);
        tokio::select! {
            r = &mut consume => return r,
            // The transport let go of the upload (the call is ending): the outcome follows.
            () = produce => {}
        }
        consume.await
    }
}

/// A collective's result, and the members whose state checksum diverged (see
/// [`Collective::checksum`]; the rule is in docs/PROTOCOL.md, "Replica groups").
#[derive(Clone, Debug, PartialEq)]
pub struct CollectiveOutcome<T> {
    pub result: Vec<T>,
    /// Members whose presented checksum differs from `reference_checksum`, in rank order.
    pub diverged: Vec<String>,
    /// What the checksums were compared with (empty: nothing to compare).
    pub reference_checksum: String,
}

/// Bytes of the array written into shared memory between two signals.
const SHM_STEP_BYTES: usize = 1 << 20;

/// The path a call's array takes, once the collective started.
enum Path {
    Shared(Shared),
    Stream,
    /// Offered a region this process cannot map.
    Unusable,
}

/// A shared-memory member's regions, as the server offered them: its own (for its array; none
/// when it has no array and a shared result region) and the one its result is in (its own, or
/// the collective's shared result region).
struct Shared {
    region: Option<std::sync::Arc<SharedRegion>>,
    result: std::sync::Arc<SharedRegion>,
    offer: v1::CollectiveSharedMemory,
}

type Kept = Option<(u64, std::sync::Arc<SharedRegion>)>;

/// Reads a collective's result and outcome from its stream; tells the producer (`path`) whether
/// it has a shared-memory region, once the collective started. `kept`: the regions this agent
/// holds from before (its own, a shared result region). Returns the result and the regions used
/// (to keep).
async fn receive<T: Element>(
    results: &mut tonic::Streaming<v1::CollectiveDownload>,
    path: tokio::sync::oneshot::Sender<Path>,
    kept: (Kept, Kept),
) -> Result<(CollectiveOutcome<T>, (Kept, Kept)), Error> {
    let size = T::DTYPE.size();
    let mut result: Option<Vec<T>> = None;
    let mut diverged = (Vec::new(), String::new());
    let mut received = 0usize;
    let mut expected = 0usize;
    let mut path = Some(path);
    let mut shared: Option<(Shared, v1::CollectiveSharedMemory)> = None;
    // Why an offered region could not be used: the upload ends, which fails the collective for
    // everyone; the collective's outcome (that failure, or an earlier one) is what this call says.
    let mut unusable: Option<Error> = None;
    loop {
        let Some(msg) = results.message().await? else {
            return Err(unusable.unwrap_or_else(|| {
                Error::SessionEnded("the server ended the collective's stream without an outcome".into())
            }));
        };
        match msg.kind {
            Some(Down::Started(s)) => {
                let len = usize::try_from(s.result_length)
                    .map_err(|_| Error::Input("the result does not fit in memory".into()))?;
                // Pieces from the stream land anywhere in it; a shared-memory result is read in
                // order at the end, into a vector not filled beforehand (no pass over it for
                // nothing: at 16 MiB that costs as much as the copy).
                let shm = s.shared_memory.is_some();
                result = Some(if shm { Vec::with_capacity(len) } else { vec![T::default(); len] });
                expected = len;
                diverged = (s.diverged, s.reference_checksum);
                let mut chosen = Path::Stream;
                if let Some(offer) = s.shared_memory {
                    match map_offer(&offer, &kept, s.result_length.saturating_mul(size as u64)) {
                        Ok((region, result)) => {
                            let mapped =
                                Shared { region: region.clone(), result: result.clone(), offer: offer.clone() };
                            chosen = Path::Shared(mapped);
                            shared = Some((Shared { region, result, offer: offer.clone() }, offer));
                        }
                        Err(e) => {
                            unusable = Some(e);
                            chosen = Path::Unusable;
                        }
                    }
                }
                if let Some(p) = path.take() {
                    let _ = p.send(chosen);
                }
            }
            Some(Down::Chunk(piece)) => {
                let out = result.as_mut().ok_or_else(|| protocol("a result chunk came before the start"))?;
                let at = usize::try_from(piece.offset).ok().filter(|at| at % size == 0 && piece.data.len() % size == 0);
                let at = at.ok_or_else(|| protocol("a result chunk not aligned to elements"))? / size;
                let end = at.checked_add(piece.data.len() / size).filter(|e| *e <= out.len());
                let end = end.ok_or_else(|| protocol("a result chunk beyond the result"))?;
                T::decode_into(&piece.data, &mut out[at..end]);
                received += piece.data.len() / size;
            }
            Some(Down::Done(_)) => {
                let mut out = result.ok_or_else(|| protocol("the collective ended before it started"))?;
                if let Some((Shared { result: r, .. }, offer)) = &shared {
                    // A step at a time, yielding between steps: a large result is not decoded in one
                    // stretch that would hold up the agent's heartbeats on this thread.
                    let total = (expected * size) as u64;
                    let mut at = 0;
                    while at < total {
                        let step = (total - at).min(SHM_STEP_BYTES as u64);
                        r.with(offer.result_offset + at, step, |bytes| T::decode_extend(bytes, &mut out))
                            .map_err(|_| protocol("a shared-memory result region beyond the file"))?;
                        at += step;
                        tokio::task::yield_now().await;
                    }
                    received = out.len();
                }
                if received != expected || out.len() != expected {
                    return Err(protocol("the result came incomplete"));
                }
                let outcome = CollectiveOutcome { result: out, diverged: diverged.0, reference_checksum: diverged.1 };
                let used = match shared {
                    Some((s, offer)) => {
                        let result = (offer.result_region != 0).then_some((offer.result_region, s.result));
                        (s.region.map(|r| (offer.region, r)), result)
                    }
                    None => (None, None),
                };
                return Ok((outcome, used));
            }
            None => return Err(protocol("an empty message")),
        }
    }
}

/// The regions an offer names, mapped: its own (none when it has none) and the one its result is
/// in. A region is the one this agent kept (an offer without a path) or the offered file.
fn map_offer(
    offer: &v1::CollectiveSharedMemory,
    kept: &(Kept, Kept),
    result_bytes: u64,
) -> Result<(Option<std::sync::Arc<SharedRegion>>, std::sync::Arc<SharedRegion>), Error> {
    if offer.result_bytes != result_bytes {
        return Err(protocol("a shared-memory result region of another size than the result"));
    }
    let own = match (offer.size, offer.region) {
        (0, 0) if offer.result_region != 0 && offer.array_bytes == 0 => None,
        _ => Some(map_region(&offer.path, offer.size, offer.region, &kept.0)?),
    };
    let result = match (offer.result_region, &own) {
        (0, Some(own)) => own.clone(),
        (0, None) => return Err(protocol("offered no region for the result")),
        (id, _) => map_region(&offer.result_path, offer.result_size, id, &kept.1)?,
    };
    Ok((own, result))
}

/// Region `id` of `size` bytes: `kept` when `path` is empty (the agent mapped it before), else the
/// file at `path`.
fn map_region(path: &str, size: u64, id: u64, kept: &Kept) -> Result<std::sync::Arc<SharedRegion>, Error> {
    match kept {
        Some((k, r)) if path.is_empty() && *k == id && r.len() == size => Ok(r.clone()),
        _ if path.is_empty() => Err(protocol("offered a region this agent does not hold")),
        _ => SharedRegion::open(std::path::Path::new(path), size)
            .map(std::sync::Arc::new)
            .map_err(|e| Error::Input(format!("cannot map the collective's shared memory {path}: {e}"))),
    }
}

fn protocol(what: &str) -> Error {
    Error::Other { code: tonic::Code::Internal, message: format!("collective: {what}").into() }
}
