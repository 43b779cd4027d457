//! The wire side of execution traces: the chunk size of an output's bytes, and the conversions
//! between the engine's trace types and their messages.

use lockstep_core::io::SessionCall;
use lockstep_core::trace::{ContextRef, Lineage, LineageView, OutputKind, Record, Trace, TraceOutput, TraceStats};

use crate::v1;

/// Largest chunk of an output's bytes (as for replica groups' state).
pub const TRACE_CHUNK_BYTES: usize = crate::group::GROUP_CHUNK_BYTES;

/// The engine's session call for a trace call's session.
pub fn session(s: Option<v1::TraceSession>) -> SessionCall {
    let s = s.unwrap_or_default();
    SessionCall { namespace: s.namespace, agent_id: s.agent_id, resume_token: s.resume_token }
}

/// The engine's record for a header; the output's bytes and blob are the caller's to fill in.
pub fn record(h: &v1::TraceHeader, sha256: String) -> Record {
    Record {
        tool: h.tool.clone(),
        input: h.input_json.clone(),
        output: TraceOutput {
            kind: if h.json { OutputKind::Json } else { OutputKind::Bytes },
            size: h.size,
            sha256,
            blob: None,
            inline: None,
        },
        inline: None,
        lineage: Lineage {
            parents: h.parents.clone(),
            context: h.context.iter().map(|c| ContextRef { key: c.key.clone(), version: c.version }).collect(),
        },
        started_at: (h.started_at_ms > 0).then_some(h.started_at_ms),
        duration_ms: h.duration_ms,
    }
}

fn context_refs(refs: &[ContextRef]) -> Vec<v1::TraceContextRef> {
    refs.iter().map(|c| v1::TraceContextRef { key: c.key.clone(), version: c.version }).collect()
}

/// A trace on the wire (without its output's bytes).
pub fn info(t: &Trace, new: bool) -> v1::TraceInfo {
    v1::TraceInfo {
        namespace: t.namespace.clone(),
        id: t.id.clone(),
        tool: t.tool.clone(),
        input_json: t.input.clone(),
        json: t.output.kind == OutputKind::Json,
        size: t.output.size,
        sha256: t.output.sha256.clone(),
        producer: t.producer.clone(),
        recorded_at_ms: t.recorded_at,
        started_at_ms: t.started_at.unwrap_or(0),
        duration_ms: t.duration_ms,
        parents: t.lineage.parents.clone(),
        context: context_refs(&t.lineage.context),
        pins: t.pins.iter().cloned().collect(),
        new,
    }
}

/// The store's counters on the wire.
pub fn stats(s: &TraceStats) -> v1::TraceStats {
    v1::TraceStats {
        traces: s.traces,
        bytes: s.bytes,
        hits: s.hits,
        misses: s.misses,
        evictions: s.evictions,
        recorded: s.recorded,
        claims: s.claims,
        waiters: s.waiters,
        pinned: s.pinned,
    }
}

/// A lineage on the wire.
pub fn lineage(t: &Trace, l: &LineageView) -> v1::TraceLineage {
    v1::TraceLineage {
        trace: Some(info(t, false)),
        parents: l.parents.iter().map(|(id, stored)| v1::TraceParent { id: id.clone(), stored: *stored }).collect(),
        context: context_refs(&l.context),
        children: l.children.clone(),
    }
}
