//! Collectives on numeric arrays: allreduce, broadcast, allgather, reduce-scatter.
//!
//! This module owns the *coordination* of a collective, never its bytes: who the members are and
//! their ranks, that every member calls it the same way, the deadline naming who is missing, the
//! failure of everyone when a member is lost, leaves or breaks off its transfer, and the single
//! outcome (completed, or failed with one reason given to every member). The arrays themselves move
//! beside the engine (the server's exchange), which reports back how the transfer ended; that
//! report is an input like any other, so the outcome is decided once, here.
//!
//! The rules kept here:
//! * **Group and ranks.** A collective is created by its first join, which names the group: an
//!   explicit list of agents (ranks are the list's order), a role (every live agent holding the
//!   role at that moment, ranks in agent-id order) or a replica group (its members at that moment,
//!   in the group's ranks; see [`crate::replica_group`]). Later joins must name the same group.
//! * **Divergence.** A member may present a checksum of its state with its join; when the
//!   collective starts, the members whose checksum diverges are named to every member
//!   ([`crate::replica_group::diverged`] has the rule). It is a warning, not a failure.
//! * **Same call everywhere.** Kind, element type, reduction, root and length must match the first
//!   join's; a member that differs fails the collective for every member with
//!   [`CoreError::CollectiveMismatch`] naming it (nobody waits for a timeout). An agent outside the
//!   group is refused alone ([`CoreError::NotCollectiveMember`]); so is a second join by a member.
//! * **Deadline.** One per collective, covering gathering and transfer; past it every member gets
//!   [`CoreError::CollectiveTimeout`] naming who never joined (or, once all joined, the members
//!   whose transfer had not finished are named by the exchange's report).
//! * **Lost members.** A member that loses its lease, leaves, or whose transfer breaks fails the
//!   collective for everyone at once with [`CoreError::CollectiveAborted`] naming it.
//! * **Reduction order** (applied by the exchange, fixed here): element-wise, left to right in rank
//!   order, `((x0 ∘ x1) ∘ x2) ∘ ...`; `mean` is that sum divided by the member count (integers:
//!   wrapping sum, division truncating toward zero). So every member receives the same bytes.
//!
//! Collectives are not durable: a transfer in flight cannot outlive the process that carries it.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Limits;
use crate::error::CoreError;
use crate::io::Time;
use crate::name;

/// Element type of a collective's arrays (little-endian on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }
}

/// How allreduce and reduce-scatter combine the members' elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Mean,
    Min,
    Max,
    Product,
}

impl ReduceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Product => "product",
        }
    }
}

/// Which collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    /// Every member gets the element-wise reduction of every member's array.
    Allreduce(ReduceOp),
    /// Every member gets the array of the member with rank `root`; the others bring none.
    Broadcast { root: u32 },
    /// Every member gets every member's array, concatenated in rank order.
    Allgather,
    /// The reduction is split into one block per rank (rank r gets elements
    /// `[r·L/n, (r+1)·L/n)`, integer division) and each member gets its own block.
    ReduceScatter(ReduceOp),
}

impl CollectiveKind {
    /// `allreduce(sum)`, `broadcast(root 2)`, ...
    pub fn describe(&self) -> String {
        match self {
            CollectiveKind::Allreduce(op) => format!("allreduce({})", op.as_str()),
            CollectiveKind::Broadcast { root } => format!("broadcast(root {root})"),
            CollectiveKind::Allgather => "allgather".to_owned(),
            CollectiveKind::ReduceScatter(op) => format!("reduce_scatter({})", op.as_str()),
        }
    }
}

/// What a member's call says about the arrays: must be the same for every member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveSpec {
    pub kind: CollectiveKind,
    pub dtype: DType,
    /// Elements in each member's array (for a broadcast: in the root's).
    pub length: u64,
}

impl CollectiveSpec {
    /// `allreduce(sum) of f32 × 1024`.
    pub fn describe(&self) -> String {
        format!("{} of {} × {}", self.kind.describe(), self.dtype.as_str(), self.length)
    }

    /// Bytes each member's array takes.
    pub fn bytes(&self) -> u64 {
        self.length.saturating_mul(self.dtype.size() as u64)
    }

    /// The element range `[start, end)` of the reduction that rank `rank` of `n` receives in a
    /// reduce-scatter.
    pub fn block(length: u64, rank: u32, n: u32) -> (u64, u64) {
        let at = |r: u64| ((r as u128 * length as u128) / n.max(1) as u128) as u64;
        (at(rank as u64), at(rank as u64 + 1))
    }

    /// Elements rank `rank` of `n` receives.
    pub fn result_length(&self, rank: u32, n: u32) -> u64 {
        match self.kind {
            CollectiveKind::Allreduce(_) | CollectiveKind::Broadcast { .. } => self.length,
            CollectiveKind::Allgather => self.length.saturating_mul(n as u64),
            CollectiveKind::ReduceScatter(_) => {
                let (a, b) = Self::block(self.length, rank, n);
                b - a
            }
        }
    }

    /// Whether rank `rank` sends an array (in a broadcast only the root does).
    pub fn sends(&self, rank: u32) -> bool {
        match self.kind {
            CollectiveKind::Broadcast { root } => root == rank,
            _ => true,
        }
    }
}

/// Who takes part. Kept as `{"agents":[..]}` or `{"role":".."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// These agents; rank i is the i-th.
    Agents(Vec<String>),
    /// Every live agent with this role when the collective is created, ranked by agent id.
    Role(String),
    /// The members of this replica group when the collective is created, in the group's ranks.
    Replica(String),
}

impl Group {
    /// Checks names, duplicates and size.
    pub fn validate(&self, limits: &Limits) -> Result<(), CoreError> {
        match self {
            Group::Agents(ids) => {
                if ids.is_empty() {
                    return Err(CoreError::invalid("group", "the agent list is empty"));
                }
                if ids.len() > limits.max_sync_participants {
                    let max = limits.max_sync_participants;
                    return Err(CoreError::invalid("group", format!("{} agents; the limit is {max}", ids.len())));
                }
                let mut seen = BTreeSet::new();
                for id in ids {
                    name::validate("group agent id", id)?;
                    if !seen.insert(id.as_str()) {
                        return Err(CoreError::invalid("group", format!("agent '{id}' is listed twice")));
                    }
                }
                Ok(())
            }
            Group::Role(role) => name::validate("group role", role),
            Group::Replica(id) => name::validate("replica group id", id),
        }
    }

    /// `[a, b, c]` or `role worker`.
    pub fn describe(&self) -> String {
        match self {
            Group::Agents(ids) => format!("[{}]", ids.join(", ")),
            Group::Role(role) => format!("role {role}"),
            Group::Replica(id) => format!("replica group {id}"),
        }
    }
}

/// A member's request to take part, as the shell hands it over (see
/// [`Input::CollectiveJoin`](crate::Input::CollectiveJoin)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveJoin {
    pub namespace: String,
    pub agent_id: String,
    /// The session's resume token: proves the caller is the agent's live session.
    pub resume_token: String,
    pub collective_id: String,
    pub group: Group,
    pub spec: CollectiveSpec,
    /// 0 means the configured default (`default_sync_timeout_ms`).
    pub timeout_ms: u64,
    /// A checksum of the member's state, to be compared with the others' (see
    /// [`crate::replica_group::diverged`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_checksum: Option<String>,
}

impl CollectiveJoin {
    /// Checks what can be checked without the engine's tables.
    pub fn validate(&self, limits: &Limits) -> Result<(), CoreError> {
        name::validate("collective id", &self.collective_id)?;
        if self.state_checksum.as_ref().is_some_and(|c| c.is_empty() || c.len() > MAX_CHECKSUM_LEN) {
            return Err(CoreError::invalid(
                "state checksum",
                format!("must be 1 to {MAX_CHECKSUM_LEN} bytes (a SHA-256 in hex is 64)"),
            ));
        }
        self.group.validate(limits)?;
        if self.spec.length == 0 {
            return Err(CoreError::invalid("collective array", "is empty; bring at least one element"));
        }
        if self.spec.bytes() > limits.max_collective_bytes {
            return Err(CoreError::invalid(
                "collective array",
                format!(
                    "{} bytes; the limit is {} (limits.max_collective_bytes)",
                    self.spec.bytes(),
                    limits.max_collective_bytes
                ),
            ));
        }
        if self.timeout_ms > limits.max_sync_timeout_ms {
            return Err(CoreError::invalid(
                "timeout",
                format!(
                    "{} ms; the limit is {} ms (limits.max_sync_timeout_ms)",
                    self.timeout_ms, limits.max_sync_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Longest state checksum a member may present.
pub const MAX_CHECKSUM_LEN: usize = 128;

/// One member of a started collective.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub rank: u32,
    pub agent: Arc<str>,
    /// The shell's name for the member's call.
    pub origin: u64,
}

/// Where a collective is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for members to join.
    Gathering,
    /// Every member joined; the arrays are moving.
    Transferring,
}

/// What a join came to.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// Waiting for the others.
    Waiting,
    /// The last member joined: the transfer starts with these members, in rank order.
    Start(Vec<Member>),
    /// The join is refused; the collective goes on without it.
    Refused(CoreError),
    /// The collective fails for every member (and the joiner) with this error.
    Failed(CoreError),
}

/// One collective in progress.
#[derive(Clone, Debug)]
pub struct Collective {
    pub id: Arc<str>,
    /// The engine's number for this collective, unique for its lifetime: reports from the exchange
    /// about an earlier collective of the same id are told apart by it.
    pub serial: u64,
    pub group: Group,
    /// Members in rank order.
    pub members: Vec<Arc<str>>,
    pub spec: CollectiveSpec,
    /// The first member to join (whose call the others must match).
    pub first: Arc<str>,
    /// `joined[rank]` is the member's call, once it joined.
    pub joined: Vec<Option<u64>>,
    /// `checksums[rank]`: the state checksum the member presented, if any.
    pub checksums: Vec<Option<String>>,
    pub created_at: Time,
    pub deadline: Time,
    pub phase: Phase,
}

/// A collective's status for listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CollectiveStatus {
    pub collective_id: String,
    pub spec: CollectiveSpec,
    pub group: String,
    pub members: Vec<String>,
    /// Members that have not joined yet (in rank order).
    pub missing: Vec<String>,
    pub phase: Phase,
    pub created_at: Time,
    pub deadline: Time,
}

impl Collective {
    /// A collective created by `first`'s join; `members` is the resolved group in rank order.
    pub fn new(
        join: &CollectiveJoin,
        serial: u64,
        members: Vec<Arc<str>>,
        first: Arc<str>,
        now: Time,
        deadline: Time,
    ) -> Self {
        let joined = vec![None; members.len()];
        Collective {
            checksums: vec![None; members.len()],
            id: join.collective_id.as_str().into(),
            serial,
            group: join.group.clone(),
            members,
            spec: join.spec,
            first,
            joined,
            created_at: now,
            deadline,
            phase: Phase::Gathering,
        }
    }

    /// Ranks members in the order the rules give: the list's order, agent ids sorted for a role
    /// (`live_with_role` is every live agent holding it), or a replica group's ranks
    /// (`replica_members`).
    pub fn resolve(
        group: &Group,
        live_with_role: impl FnOnce(&str) -> Vec<Arc<str>>,
        replica_members: impl FnOnce(&str) -> Vec<Arc<str>>,
    ) -> Vec<Arc<str>> {
        match group {
            Group::Agents(ids) => ids.iter().map(|id| Arc::from(id.as_str())).collect(),
            Group::Role(role) => {
                let mut ids = live_with_role(role);
                ids.sort_unstable();
                ids
            }
            Group::Replica(id) => replica_members(id),
        }
    }

    fn rank_of(&self, agent: &str) -> Option<usize> {
        self.members.iter().position(|m| &**m == agent)
    }

    /// `agent`'s call (`origin`) joins.
    pub fn join(&mut self, agent: &Arc<str>, origin: u64, join: &CollectiveJoin) -> Joined {
        let id = self.id.to_string();
        let Some(rank) = self.rank_of(agent) else {
            return Joined::Refused(CoreError::NotCollectiveMember {
                collective_id: id,
                agent: agent.to_string(),
                members: self.members.join(", "),
            });
        };
        let mismatch = |what: String| {
            Joined::Failed(CoreError::CollectiveMismatch { collective_id: id.clone(), agent: agent.to_string(), what })
        };
        if join.group != self.group {
            return mismatch(format!(
                "named the group {}, but '{}' named {}",
                join.group.describe(),
                self.first,
                self.group.describe()
            ));
        }
        if join.spec != self.spec {
            return mismatch(format!(
                "called {}, but '{}' called {}",
                join.spec.describe(),
                self.first,
                self.spec.describe()
            ));
        }
        if self.phase != Phase::Gathering || self.joined[rank].is_some() {
            return Joined::Refused(CoreError::invalid(
                "collective",
                format!("agent '{agent}' already joined collective '{id}'; use a new id for a new round"),
            ));
        }
        self.joined[rank] = Some(origin);
        self.checksums[rank] = join.state_checksum.clone();
        if self.joined.iter().all(Option::is_some) {
            self.phase = Phase::Transferring;
            return Joined::Start(self.started_members());
        }
        Joined::Waiting
    }

    fn started_members(&self) -> Vec<Member> {
        self.members
            .iter()
            .zip(&self.joined)
            .enumerate()
            .filter_map(|(rank, (agent, origin))| {
                origin.map(|origin| Member { rank: rank as u32, agent: agent.clone(), origin })
            })
            .collect()
    }

    /// The calls that joined (to tell them the outcome).
    pub fn origins(&self) -> Vec<u64> {
        self.joined.iter().flatten().copied().collect()
    }

    /// Members that have not joined yet, in rank order.
    pub fn missing(&self) -> Vec<String> {
        self.members.iter().zip(&self.joined).filter(|(_, o)| o.is_none()).map(|(m, _)| m.to_string()).collect()
    }

    /// The deadline passed (`stragglers`: who the exchange says has not finished sending, when
    /// every member joined).
    pub fn timed_out(&self, now: Time, stragglers: Vec<String>) -> CoreError {
        let joined_all = self.phase == Phase::Transferring;
        let missing = if joined_all { stragglers } else { self.missing() };
        CoreError::CollectiveTimeout {
            collective_id: self.id.to_string(),
            waited_ms: now.saturating_sub(self.created_at),
            missing,
            joined_all,
        }
    }

    /// `agent` went away (`why`): the failure of everyone, if it is a member.
    pub fn member_gone(&self, agent: &str, why: &str) -> Option<CoreError> {
        self.rank_of(agent).map(|_| CoreError::CollectiveAborted {
            collective_id: self.id.to_string(),
            agent: agent.to_owned(),
            why: why.to_owned(),
        })
    }

    /// The member that made call `origin`, if any.
    pub fn member_of(&self, origin: u64) -> Option<&Arc<str>> {
        self.joined.iter().position(|o| *o == Some(origin)).map(|rank| &self.members[rank])
    }

    pub fn status(&self) -> CollectiveStatus {
        CollectiveStatus {
            collective_id: self.id.to_string(),
            spec: self.spec,
            group: self.group.describe(),
            members: self.members.iter().map(|m| m.to_string()).collect(),
            missing: self.missing(),
            phase: self.phase,
            created_at: self.created_at,
            deadline: self.deadline,
        }
    }
}

/// What the engine tells the shell's exchange about collectives.
#[derive(Clone, Debug, PartialEq)]
pub enum CollectiveEvent {
    /// The call `origin` is refused; nothing else changes.
    Refused { origin: u64, error: CoreError },
    /// Every member joined: move the arrays between these members (rank order). `diverged` names
    /// the members whose state checksum differs from `reference` (see
    /// [`crate::replica_group::diverged`]).
    Start {
        namespace: Arc<str>,
        collective_id: Arc<str>,
        serial: u64,
        spec: CollectiveSpec,
        members: Vec<Member>,
        diverged: Vec<String>,
        reference: String,
    },
    /// The collective `serial` ended, the same way for every call in `origins` (which includes
    /// calls not yet started): completed, or failed with this error.
    Finished { serial: u64, origins: Vec<u64>, result: Result<(), CoreError> },
}

/// A collective's key: (namespace, id).
pub type Key = (Arc<str>, Arc<str>);

/// Every collective in progress, with the calls that joined them.
#[derive(Debug, Default)]
pub struct Collectives {
    last_serial: u64,
    /// By key: key order keeps every scan deterministic.
    open: std::collections::BTreeMap<Key, Collective>,
    /// The collective each joined call belongs to.
    by_origin: std::collections::HashMap<u64, Key>,
}

impl Collectives {
    /// The next serial number.
    pub fn next_serial(&mut self) -> u64 {
        self.last_serial += 1;
        self.last_serial
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Collective> {
        self.open.get_mut(key)
    }

    /// Open collectives in namespace `ns`.
    pub fn count_in(&self, ns: &str) -> usize {
        self.in_namespace(ns).count()
    }

    /// The open collectives of `ns`, in id order.
    pub fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Collective> + 'a {
        self.open.iter().filter(move |((n, _), _)| &**n == ns).map(|(_, c)| c)
    }

    pub fn insert(&mut self, key: Key, c: Collective) {
        self.open.insert(key, c);
    }

    /// Notes that call `origin` joined the collective `key`.
    pub fn joined(&mut self, origin: u64, key: Key) {
        self.by_origin.insert(origin, key);
    }

    /// The collective call `origin` joined.
    pub fn key_of(&self, origin: u64) -> Option<&Key> {
        self.by_origin.get(&origin)
    }

    /// Ends the collective `key` with `result` (its calls are forgotten).
    pub fn finish(&mut self, key: &Key, result: Result<(), CoreError>) -> Option<CollectiveEvent> {
        let c = self.open.remove(key)?;
        let origins = c.origins();
        for o in &origins {
            self.by_origin.remove(o);
        }
        // One that nobody joined (its creator was refused) has nobody to tell.
        (!origins.is_empty()).then_some(CollectiveEvent::Finished { serial: c.serial, origins, result })
    }

    /// The collectives of `ns` that `agent` is a member of, and the failure each gets as it goes
    /// away (`why`).
    pub fn member_gone(&self, ns: &str, agent: &str, why: &str) -> Vec<(Key, CoreError)> {
        self.open
            .iter()
            .filter(|((n, _), _)| &**n == ns)
            .filter_map(|(k, c)| c.member_gone(agent, why).map(|e| (k.clone(), e)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

// -------------------------------------------------------------------------------------------------
// The reduction itself: the one definition of the documented order, used by the server's exchange
// and by the tests' reference.

macro_rules! fold {
    ($acc:expr, $next:expr, $t:ty, $f:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        for (a, b) in $acc.chunks_exact_mut(N).zip($next.chunks_exact(N)) {
            let x = <$t>::from_le_bytes(a.try_into().expect("N bytes"));
            let y = <$t>::from_le_bytes(b.try_into().expect("N bytes"));
            let f: fn($t, $t) -> $t = $f;
            a.copy_from_slice(&f(x, y).to_le_bytes());
        }
    }};
}

macro_rules! fold_op {
    ($acc:expr, $next:expr, $op:expr, $t:ty, float) => {
        match $op {
            ReduceOp::Sum | ReduceOp::Mean => fold!($acc, $next, $t, |x, y| x + y),
            ReduceOp::Product => fold!($acc, $next, $t, |x, y| x * y),
            // NaN propagates: the result does not depend on where a NaN stood.
            ReduceOp::Min => fold!($acc, $next, $t, |x, y| if x.is_nan() {
                x
            } else if y.is_nan() {
                y
            } else {
                x.min(y)
            }),
            ReduceOp::Max => fold!($acc, $next, $t, |x, y| if x.is_nan() {
                x
            } else if y.is_nan() {
                y
            } else {
                x.max(y)
            }),
        }
    };
    ($acc:expr, $next:expr, $op:expr, $t:ty, int) => {
        match $op {
            ReduceOp::Sum | ReduceOp::Mean => fold!($acc, $next, $t, |x, y| x.wrapping_add(y)),
            ReduceOp::Product => fold!($acc, $next, $t, |x, y| x.wrapping_mul(y)),
            ReduceOp::Min => fold!($acc, $next, $t, |x, y| x.min(y)),
            ReduceOp::Max => fold!($acc, $next, $t, |x, y| x.max(y)),
        }
    };
}

macro_rules! scale {
    ($acc:expr, $t:ty, $n:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        let n = $n as $t;
        for a in $acc.chunks_exact_mut(N) {
            let x = <$t>::from_le_bytes(a.try_into().expect("N bytes"));
            a.copy_from_slice(&(x / n).to_le_bytes());
        }
    }};
}

/// Combines `next` into `acc` element-wise (`acc = acc ∘ next`), both little-endian arrays of
/// `dtype` of the same length. Folding ranks 0, 1, 2, ... in turn is the documented order.
pub fn combine(dtype: DType, op: ReduceOp, acc: &mut [u8], next: &[u8]) {
    match dtype {
        DType::F32 => fold_op!(acc, next, op, f32, float),
        DType::F64 => fold_op!(acc, next, op, f64, float),
        DType::I32 => fold_op!(acc, next, op, i32, int),
        DType::I64 => fold_op!(acc, next, op, i64, int),
    }
}

/// Finishes a reduction over `members` arrays: `mean` divides the sum by the member count
/// (integers truncate toward zero); the other operations are done.
pub fn finish(dtype: DType, op: ReduceOp, acc: &mut [u8], members: usize) {
    if op != ReduceOp::Mean {
        return;
    }
    match dtype {
        DType::F32 => scale!(acc, f32, members),
        DType::F64 => scale!(acc, f64, members),
        DType::I32 => scale!(acc, i32, members),
        DType::I64 => scale!(acc, i64, members),
    }
}

/// The reduction of `arrays` (rank order) in the documented order: a new array.
pub fn reduce(dtype: DType, op: ReduceOp, arrays: &[&[u8]]) -> Vec<u8> {
    let Some((first, rest)) = arrays.split_first() else {
        return Vec::new();
    };
    let mut acc = first.to_vec();
    for next in rest {
        combine(dtype, op, &mut acc, next);
    }
    finish(dtype, op, &mut acc, arrays.len());
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(agent: &str, group: Group, spec: CollectiveSpec) -> CollectiveJoin {
        CollectiveJoin {
            namespace: "ns".into(),
            agent_id: agent.into(),
            resume_token: "t".into(),
            collective_id: "c".into(),
            group,
            spec,
            timeout_ms: 0,
            state_checksum: None,
        }
    }

    fn spec() -> CollectiveSpec {
        CollectiveSpec { kind: CollectiveKind::Allreduce(ReduceOp::Sum), dtype: DType::F32, length: 4 }
    }

    fn abc() -> (Group, Collective) {
        let group = Group::Agents(vec!["b".into(), "a".into(), "c".into()]);
        let j = join("b", group.clone(), spec());
        let members = Collective::resolve(&group, |_| unreachable!(), |_| unreachable!());
        (group, Collective::new(&j, 1, members, "b".into(), 0, 1000))
    }

    #[test]
    fn ranks_follow_the_list_or_sorted_ids_for_a_role() {
        let (_, c) = abc();
        assert_eq!(c.members, vec![Arc::from("b"), "a".into(), "c".into()]);
        let by_role = Collective::resolve(
            &Group::Role("w".into()),
            |_| vec!["z".into(), "m".into(), "a".into()],
            |_| unreachable!(),
        );
        assert_eq!(by_role, vec![Arc::from("a"), "m".into(), "z".into()]);
    }

    #[test]
    fn starts_when_the_last_member_joins_with_members_in_rank_order() {
        let (group, mut c) = abc();
        assert_eq!(c.join(&"a".into(), 11, &join("a", group.clone(), spec())), Joined::Waiting);
        assert_eq!(c.missing(), vec!["b", "c"]);
        assert_eq!(c.join(&"c".into(), 12, &join("c", group.clone(), spec())), Joined::Waiting);
        let Joined::Start(members) = c.join(&"b".into(), 10, &join("b", group, spec())) else { panic!("not started") };
        let got: Vec<(u32, &str, u64)> = members.iter().map(|m| (m.rank, &*m.agent, m.origin)).collect();
        assert_eq!(got, vec![(0, "b", 10), (1, "a", 11), (2, "c", 12)]);
        assert_eq!(c.phase, Phase::Transferring);
    }

    #[test]
    fn a_different_call_fails_everyone_naming_the_member() {
        let (group, mut c) = abc();
        let mut other = spec();
        other.length = 5;
        let Joined::Failed(e) = c.join(&"a".into(), 11, &join("a", group.clone(), other)) else { panic!() };
        assert_eq!(e.agent(), Some("a"));
        assert!(e.to_string().contains("f32 × 5") && e.to_string().contains("f32 × 4"), "{e}");
        other = spec();
        other.dtype = DType::I32;
        assert!(matches!(
            c.join(&"a".into(), 11, &join("a", group, other)),
            Joined::Failed(CoreError::CollectiveMismatch { .. })
        ));
        let Joined::Failed(e) = c.join(&"a".into(), 11, &join("a", Group::Role("w".into()), spec())) else { panic!() };
        assert!(e.to_string().contains("role w"), "{e}");
    }

    #[test]
    fn outsiders_and_second_joins_are_refused_alone() {
        let (group, mut c) = abc();
        assert!(matches!(
            c.join(&"x".into(), 20, &join("x", group.clone(), spec())),
            Joined::Refused(CoreError::NotCollectiveMember { .. })
        ));
        assert_eq!(c.join(&"a".into(), 11, &join("a", group.clone(), spec())), Joined::Waiting);
        assert!(matches!(c.join(&"a".into(), 21, &join("a", group, spec())), Joined::Refused(_)));
        assert_eq!(c.origins(), vec![11]);
    }

    #[test]
    fn timeouts_name_who_never_joined_and_losses_name_the_member() {
        let (group, mut c) = abc();
        c.join(&"a".into(), 11, &join("a", group, spec()));
        let e = c.timed_out(1000, Vec::new());
        assert_eq!(e.missing_agents(), ["b", "c"]);
        assert!(e.to_string().contains("never joined: b, c"), "{e}");
        assert!(c.member_gone("x", "left").is_none());
        let e = c.member_gone("c", "lost its lease").expect("a member");
        assert_eq!(e.agent(), Some("c"));
    }

    #[test]
    fn reduce_scatter_blocks_cover_the_array_once() {
        for (len, n) in [(10u64, 3u32), (2, 4), (0, 2), (1024, 8)] {
            let mut next = 0;
            for r in 0..n {
                let (a, b) = CollectiveSpec::block(len, r, n);
                assert_eq!(a, next);
                next = b;
            }
            assert_eq!(next, len);
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reductions_fold_left_to_right_in_rank_order() {
        let (a, b, c) = (f32s(&[1e8, 1.0, -2.0]), f32s(&[-1e8, 2.0, 5.0]), f32s(&[1.0, 3.0, 0.5]));
        // ((1e8 + -1e8) + 1) = 1, whereas 1e8 + (-1e8 + 1) = 0 in f32: the order is visible.
        assert_eq!(reduce(DType::F32, ReduceOp::Sum, &[&a, &b, &c]), f32s(&[1.0, 6.0, 3.5]));
        assert_eq!(reduce(DType::F32, ReduceOp::Max, &[&a, &b, &c]), f32s(&[1e8, 3.0, 5.0]));
        assert_eq!(reduce(DType::F32, ReduceOp::Min, &[&a, &b, &c]), f32s(&[-1e8, 1.0, -2.0]));
        assert_eq!(reduce(DType::F32, ReduceOp::Mean, &[&a, &b, &c]), f32s(&[1.0 / 3.0, 2.0, 3.5 / 3.0]));
        let ints = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (x, y) = (ints(&[i64::MAX, -7, 3]), ints(&[1, 2, -4]));
        assert_eq!(reduce(DType::I64, ReduceOp::Sum, &[&x, &y]), ints(&[i64::MIN, -5, -1]));
        assert_eq!(reduce(DType::I64, ReduceOp::Mean, &[&x, &y]), ints(&[i64::MIN / 2, -2, 0]));
        assert_eq!(reduce(DType::I64, ReduceOp::Product, &[&x, &y]), ints(&[i64::MAX, -14, -12]));
    }
}
