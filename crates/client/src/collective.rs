//! Collectives on numeric arrays from a Rust agent: [`Agent::allreduce`], [`Agent::broadcast`],
//! [`Agent::allgather`] and [`Agent::reduce_scatter`].
//!
//! Each call opens one `Collective` stream beside the agent's session, sends its header and its
//! array once (in chunks of 256 KiB, as fast as the server's flow control lets it), and receives
//! the result once. The result is the same bytes for every member (the server reduces in rank
//! order, left to right; see docs/PROTOCOL.md, "Collectives"); a failure is the same error for
//! every member ([`Error::CollectiveFailed`] naming the member concerned, or who is missing).

use std::time::Duration;

use bytes::Bytes;
use lockstep_core::collective::{CollectiveJoin, CollectiveKind, CollectiveSpec};
pub use lockstep_core::collective::{DType, Group, ReduceOp};
use lockstep_proto::collective::{join_to_wire, COLLECTIVE_CHUNK_BYTES};
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
                out.reserve(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            fn decode_into(bytes: &[u8], out: &mut [Self]) {
                for (v, b) in out.iter_mut().zip(bytes.chunks_exact(std::mem::size_of::<$t>())) {
                    *v = <$t>::from_le_bytes(b.try_into().expect("element size"));
                }
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
}

impl Collective {
    /// The collective `id` of these agents, ranked in this order.
    pub fn agents<S: Into<String>>(id: impl Into<String>, agents: impl IntoIterator<Item = S>) -> Self {
        Collective {
            id: id.into(),
            group: Group::Agents(agents.into_iter().map(Into::into).collect()),
            timeout: Duration::ZERO,
            state_checksum: None,
        }
    }

    /// The collective `id` of the members of replica group `group_id`, in the group's ranks.
    pub fn replica(id: impl Into<String>, group_id: impl Into<String>) -> Self {
        Collective {
            id: id.into(),
            group: Group::Replica(group_id.into()),
            timeout: Duration::ZERO,
            state_checksum: None,
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
        Collective { id: id.into(), group: Group::Role(role.into()), timeout: Duration::ZERO, state_checksum: None }
    }

    /// With a deadline for joining and transfer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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
        let header = v1::CollectiveUpload { kind: Some(Up::Header(join_to_wire(&join))) };
        // The array is encoded a chunk at a time as the transport takes it (flow control paces
        // it), so a large array is neither copied whole nor encoded in one long stretch that
        // would hold up the agent's heartbeats. A broadcast member that is not the root sends its
        // header alone.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tx.send(header).await.map_err(|_| protocol("the upload closed"))?;
        let per_chunk = COLLECTIVE_CHUNK_BYTES / T::DTYPE.size();
        let produce = async move {
            if send {
                for part in data.chunks(per_chunk) {
                    let mut bytes = Vec::with_capacity(COLLECTIVE_CHUNK_BYTES);
                    T::encode(part, &mut bytes);
                    let chunk = v1::CollectiveChunk { data: Bytes::from(bytes) };
                    if tx.send(v1::CollectiveUpload { kind: Some(Up::Chunk(chunk)) }).await.is_err() {
                        return; // the call ended: its outcome says why
                    }
                }
            }
            // Held open until the outcome: ending the upload early is not leaving.
            tx.closed().await;
        };
        let consume = async move {
            let mut results = grpc.collective(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            receive::<T>(&mut results).await
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

/// Reads a collective's result and outcome from its stream.
async fn receive<T: Element>(
    results: &mut tonic::Streaming<v1::CollectiveDownload>,
) -> Result<CollectiveOutcome<T>, Error> {
    let size = T::DTYPE.size();
    let mut result: Option<Vec<T>> = None;
    let mut diverged = (Vec::new(), String::new());
    let mut received = 0usize;
    loop {
        let Some(msg) = results.message().await? else {
            return Err(Error::SessionEnded("the server ended the collective's stream without an outcome".into()));
        };
        match msg.kind {
            Some(Down::Started(s)) => {
                let len = usize::try_from(s.result_length)
                    .map_err(|_| Error::Input("the result does not fit in memory".into()))?;
                result = Some(vec![T::default(); len]);
                diverged = (s.diverged, s.reference_checksum);
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
                let out = result.ok_or_else(|| protocol("the collective ended before it started"))?;
                if received != out.len() {
                    return Err(protocol("the result came incomplete"));
                }
                return Ok(CollectiveOutcome { result: out, diverged: diverged.0, reference_checksum: diverged.1 });
            }
            None => return Err(protocol("an empty message")),
        }
    }
}

fn protocol(what: &str) -> Error {
    Error::Other { code: tonic::Code::Internal, message: format!("collective: {what}").into() }
}
