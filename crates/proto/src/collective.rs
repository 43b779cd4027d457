//! The wire side of collectives: the chunk size every member and the server agree on, and the
//! conversions between a `CollectiveHeader` and the engine's [`CollectiveJoin`].

use lockstep_core::collective::{
    CollectiveJoin, CollectiveKind, CollectiveSpec, CollectiveStatus, DType, Group, Phase, ReduceOp,
};
use lockstep_core::{CoreError, Time};

use crate::v1;

/// Bytes in every chunk of a member's array but the last (a multiple of every element size, and
/// well under the server's gRPC message cap). Members and server must agree: the server reduces
/// chunk *i* of every member together and refuses a chunk of another size.
pub const COLLECTIVE_CHUNK_BYTES: usize = 256 * 1024;

fn invalid(reason: impl Into<String>) -> CoreError {
    CoreError::Invalid { what: "collective header", reason: reason.into() }
}

/// The engine's element type for a wire one.
pub fn dtype_from_wire(d: i32) -> Result<DType, CoreError> {
    match v1::ElementType::try_from(d) {
        Ok(v1::ElementType::F32) => Ok(DType::F32),
        Ok(v1::ElementType::F64) => Ok(DType::F64),
        Ok(v1::ElementType::I32) => Ok(DType::I32),
        Ok(v1::ElementType::I64) => Ok(DType::I64),
        _ => Err(invalid(format!("dtype {d} is not one of f32, f64, i32, i64"))),
    }
}

/// The wire's element type for an engine one.
pub fn dtype_to_wire(d: DType) -> v1::ElementType {
    match d {
        DType::F32 => v1::ElementType::F32,
        DType::F64 => v1::ElementType::F64,
        DType::I32 => v1::ElementType::I32,
        DType::I64 => v1::ElementType::I64,
    }
}

/// The wire's reduction for an engine one.
pub fn op_to_wire(op: ReduceOp) -> v1::ReduceOp {
    match op {
        ReduceOp::Sum => v1::ReduceOp::Sum,
        ReduceOp::Mean => v1::ReduceOp::Mean,
        ReduceOp::Min => v1::ReduceOp::Min,
        ReduceOp::Max => v1::ReduceOp::Max,
        ReduceOp::Product => v1::ReduceOp::Product,
    }
}

fn op_from_wire(op: i32) -> Result<ReduceOp, CoreError> {
    match v1::ReduceOp::try_from(op) {
        Ok(v1::ReduceOp::Sum) => Ok(ReduceOp::Sum),
        Ok(v1::ReduceOp::Mean) => Ok(ReduceOp::Mean),
        Ok(v1::ReduceOp::Min) => Ok(ReduceOp::Min),
        Ok(v1::ReduceOp::Max) => Ok(ReduceOp::Max),
        Ok(v1::ReduceOp::Product) => Ok(ReduceOp::Product),
        _ => Err(invalid(format!("op {op} is not one of sum, mean, min, max, product"))),
    }
}

/// The engine's join for a header.
pub fn join_from_wire(h: v1::CollectiveHeader) -> Result<CollectiveJoin, CoreError> {
    let kind = match v1::CollectiveKind::try_from(h.kind) {
        Ok(v1::CollectiveKind::Allreduce) => CollectiveKind::Allreduce(op_from_wire(h.op)?),
        Ok(v1::CollectiveKind::Broadcast) => CollectiveKind::Broadcast { root: h.root },
        Ok(v1::CollectiveKind::Allgather) => CollectiveKind::Allgather,
        Ok(v1::CollectiveKind::ReduceScatter) => CollectiveKind::ReduceScatter(op_from_wire(h.op)?),
        _ => {
            return Err(invalid(format!(
                "kind {} is not one of allreduce, broadcast, allgather, reduce_scatter",
                h.kind
            )))
        }
    };
    let group = match h.group {
        Some(g) if !g.agents.is_empty() => {
            if !g.role.is_empty() {
                return Err(invalid("the group names both agents and a role; name one"));
            }
            Group::Agents(g.agents)
        }
        Some(g) if !g.role.is_empty() => {
            if !g.replica_group.is_empty() {
                return Err(invalid("the group names both a role and a replica group; name one"));
            }
            Group::Role(g.role)
        }
        Some(g) if !g.replica_group.is_empty() => Group::Replica(g.replica_group),
        _ => return Err(invalid("no group: name the member agents, a role or a replica group")),
    };
    if let (CollectiveKind::Broadcast { root }, Group::Agents(ids)) = (kind, &group) {
        if root as usize >= ids.len() {
            return Err(invalid(format!("broadcast root rank {root} is not a rank of a group of {}", ids.len())));
        }
    }
    Ok(CollectiveJoin {
        namespace: h.namespace,
        agent_id: h.agent_id,
        resume_token: h.resume_token,
        collective_id: h.collective_id,
        group,
        spec: CollectiveSpec { kind, dtype: dtype_from_wire(h.dtype)?, length: h.length },
        timeout_ms: h.timeout_ms,
        state_checksum: (!h.state_checksum.is_empty()).then_some(h.state_checksum),
    })
}

/// The header for a join (what clients send).
pub fn join_to_wire(j: &CollectiveJoin) -> v1::CollectiveHeader {
    let (kind, op, root) = match j.spec.kind {
        CollectiveKind::Allreduce(op) => (v1::CollectiveKind::Allreduce, op_to_wire(op), 0),
        CollectiveKind::Broadcast { root } => (v1::CollectiveKind::Broadcast, v1::ReduceOp::Unspecified, root),
        CollectiveKind::Allgather => (v1::CollectiveKind::Allgather, v1::ReduceOp::Unspecified, 0),
        CollectiveKind::ReduceScatter(op) => (v1::CollectiveKind::ReduceScatter, op_to_wire(op), 0),
    };
    let group = match &j.group {
        Group::Agents(ids) => v1::CollectiveGroup { agents: ids.clone(), ..Default::default() },
        Group::Role(role) => v1::CollectiveGroup { role: role.clone(), ..Default::default() },
        Group::Replica(id) => v1::CollectiveGroup { replica_group: id.clone(), ..Default::default() },
    };
    v1::CollectiveHeader {
        namespace: j.namespace.clone(),
        agent_id: j.agent_id.clone(),
        resume_token: j.resume_token.clone(),
        collective_id: j.collective_id.clone(),
        group: Some(group),
        kind: kind as i32,
        dtype: dtype_to_wire(j.spec.dtype) as i32,
        op: op as i32,
        root,
        length: j.spec.length,
        timeout_ms: j.timeout_ms,
        state_checksum: j.state_checksum.clone().unwrap_or_default(),
        shared_memory: false,
        shm_region: 0,
        shm_result_region: 0,
    }
}

/// A collective's status for listings, at `now`.
pub fn status(s: &CollectiveStatus, now: Time) -> v1::CollectiveStatus {
    v1::CollectiveStatus {
        collective_id: s.collective_id.clone(),
        description: s.spec.describe(),
        group: s.group.clone(),
        members: s.members.clone(),
        missing: s.missing.clone(),
        phase: match s.phase {
            Phase::Gathering => "gathering",
            Phase::Transferring => "transferring",
        }
        .to_owned(),
        waiting_ms: now.saturating_sub(s.created_at),
        deadline_in_ms: s.deadline.saturating_sub(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_bad_ones_are_refused() {
        let j = CollectiveJoin {
            namespace: "ns".into(),
            agent_id: "a".into(),
            resume_token: "t".into(),
            collective_id: "c".into(),
            group: Group::Agents(vec!["a".into(), "b".into()]),
            spec: CollectiveSpec { kind: CollectiveKind::ReduceScatter(ReduceOp::Max), dtype: DType::I64, length: 9 },
            timeout_ms: 5,
            state_checksum: Some("abc".into()),
        };
        assert_eq!(join_from_wire(join_to_wire(&j)).expect("valid"), j);
        let mut h = join_to_wire(&j);
        h.dtype = 9;
        assert!(join_from_wire(h).unwrap_err().to_string().contains("dtype 9"));
        let mut h = join_to_wire(&j);
        h.kind = v1::CollectiveKind::Broadcast as i32;
        h.root = 2;
        assert!(join_from_wire(h).unwrap_err().to_string().contains("root rank 2"));
        let mut h = join_to_wire(&j);
        h.group = None;
        assert!(join_from_wire(h).is_err());
    }
}
