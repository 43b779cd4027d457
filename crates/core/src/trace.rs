//! Execution traces: the stored outputs of tool calls, so that an agent loads a prior output
//! instead of computing it again ("state handover").
//!
//! Owns the rules of the trace store:
//!
//! * **Identity.** A trace is the output of one tool on one input. Its id is the SHA-256 (lowercase
//!   hex) of the tool name and the input's **canonical** JSON ([`canonical`]: object keys sorted, no
//!   insignificant whitespace, one form per number), so equal inputs written differently find the
//!   same trace. Traces are kept per namespace.
//! * **Recording.** [`Traces::record`] checks everything first (tool name, input size and depth,
//!   output size, lineage: parents must be stored traces of the namespace, claims) and then applies
//!   the record whole, or nothing. Recording a trace that exists with the same output (by its
//!   SHA-256) is answered with the stored trace (a retry is harmless); with another output it is
//!   refused ([`CoreError::TraceExists`]): a trace never changes once recorded.
//! * **Claims.** [`Traces::get_or_claim`] makes concurrent agents compute one output once: the
//!   first asker of a missing trace gets the claim, later ones wait. The claim is tied to the
//!   holder's session: when the holder records, every waiter receives the trace; when it gives the
//!   claim up, or its session is lost or leaves, the next live waiter gets the claim. While an agent
//!   holds a claim, only it may record that trace. Waiters wait at most their `wait_ms`.
//! * **Retention.** Every output counts towards `max_total_bytes` and `max_traces`; a trace older
//!   than `max_age_ms` (since it was recorded) goes. Eviction takes the least recently used first
//!   (recording and every read use a trace) and never a **protected** trace: one pinned by an owner
//!   (such as an open task, [`Traces::pin`]) or in the lineage of a pinned trace. A record that
//!   cannot make room without evicting a protected trace is refused; nothing is evicted for it.
//! * **Lineage**: the parent traces and the context key versions an output was computed from;
//!   queries go both ways ([`Traces::lineage`]).
//!
//! Output bytes above `inline_bytes` are not held here: the shell keeps them beside the engine
//! under the `blob` name it chose, and this module tells it when a blob is no longer referenced
//! ([`Evicted`]). Smaller outputs (and those of engine-internal callers, such as a task's JSON
//! output) are kept inline.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::CoreError;
use crate::io::Time;

/// Limits and retention of the trace store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceSettings {
    /// Largest output of one trace, in bytes.
    pub max_output_bytes: u64,
    /// Outputs kept in all, in bytes; least recently used unprotected traces go past it.
    pub max_total_bytes: u64,
    /// Most traces kept in all.
    pub max_traces: usize,
    /// A trace older than this (since it was recorded), in milliseconds, goes unless protected.
    pub max_age_ms: u64,
    /// Longest tool name, in bytes.
    pub max_tool_bytes: usize,
    /// Largest input (its canonical JSON text), in bytes.
    pub max_input_bytes: usize,
    /// Deepest nesting of arrays and objects in an input.
    pub max_input_depth: usize,
    /// Most parent traces and most context versions in one lineage (each).
    pub max_lineage: usize,
    /// Outputs up to this size are kept in the engine and the database; larger ones beside.
    pub inline_bytes: usize,
    /// Most `get_or_claim` calls waiting at once, over every trace.
    pub max_waiters: usize,
    /// Longest wait a `get_or_claim` may ask for, in milliseconds (also the default).
    pub max_wait_ms: u64,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            max_output_bytes: 64 * 1024 * 1024,
            max_total_bytes: 1024 * 1024 * 1024,
            max_traces: 100_000,
            max_age_ms: 7 * 24 * 3600 * 1000,
            max_tool_bytes: 128,
            max_input_bytes: 64 * 1024,
            max_input_depth: 32,
            max_lineage: 64,
            inline_bytes: 64 * 1024,
            max_waiters: 4096,
            max_wait_ms: 300_000,
        }
    }
}

impl TraceSettings {
    /// Checks the settings make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_traces == 0 || self.max_total_bytes == 0 || self.max_tool_bytes == 0 || self.max_age_ms == 0 {
            return Err("max_traces, max_total_bytes, max_tool_bytes and max_age_ms must be at least 1".into());
        }
        if self.max_output_bytes > self.max_total_bytes {
            return Err("max_output_bytes must not exceed max_total_bytes".into());
        }
        if self.max_input_depth == 0 || self.max_input_depth > 128 {
            return Err("max_input_depth must be between 1 and 128 (the JSON parser's own nesting limit)".into());
        }
        Ok(())
    }
}

/// The canonical JSON text of `value`: object keys sorted by their UTF-8 bytes, no whitespace,
/// integers written as integers (a float with no fraction within ±2^53 is written as the
/// integer, `-0.0` as `0`), other floats in their shortest round-trip form. Equal values give equal
/// text, so equal inputs hash equal.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Value::Number(n) => {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            match n.as_f64() {
                Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() <= EXACT => {
                    out.push_str(&(f as i64).to_string())
                }
                _ => out.push_str(&n.to_string()),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A trace's id: SHA-256 of the tool name, a zero byte, and the canonical input.
pub fn trace_id(tool: &str, canonical_input: &str) -> String {
    let mut h = Sha256::new();
    h.update(tool.as_bytes());
    h.update([0u8]);
    h.update(canonical_input.as_bytes());
    hex(&h.finalize())
}

/// Checks a tool name: dot-separated segments of letters, digits, `_` and `-`.
pub fn validate_tool(tool: &str, settings: &TraceSettings) -> Result<(), CoreError> {
    if tool.is_empty() {
        return Err(CoreError::invalid("tool name", "must not be empty"));
    }
    if tool.len() > settings.max_tool_bytes {
        return Err(CoreError::invalid(
            "tool name",
            format!("{} bytes; the limit is {} (traces.max_tool_bytes)", tool.len(), settings.max_tool_bytes),
        ));
    }
    crate::context::segments("tool name", tool)
}

/// Parses an input's JSON text and returns its canonical text, under the size and depth limits.
pub fn canonical_input(text: &str, settings: &TraceSettings) -> Result<String, CoreError> {
    if text.len() > settings.max_input_bytes.saturating_mul(4) {
        return Err(CoreError::invalid(
            "trace input",
            format!(
                "{} bytes of JSON text; the limit is {} (traces.max_input_bytes)",
                text.len(),
                settings.max_input_bytes
            ),
        ));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| CoreError::invalid("trace input", format!("not JSON: {e}")))?;
    let depth = crate::context::depth(&value);
    if depth > settings.max_input_depth {
        return Err(CoreError::invalid(
            "trace input",
            format!("nests {depth} levels deep; the limit is {} (traces.max_input_depth)", settings.max_input_depth),
        ));
    }
    let canon = canonical(&value);
    if canon.len() > settings.max_input_bytes {
        return Err(CoreError::invalid(
            "trace input",
            format!(
                "{} bytes canonical; the limit is {} (traces.max_input_bytes)",
                canon.len(),
                settings.max_input_bytes
            ),
        ));
    }
    Ok(canon)
}

/// What an output is: opaque bytes, or JSON text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    #[default]
    Bytes,
    Json,
}

/// A context key's version an output was computed from (in the trace's namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContextRef {
    pub key: String,
    pub version: u64,
}

/// What an output was computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// Ids of parent traces (of the same namespace).
    #[serde(default)]
    pub parents: Vec<String>,
    /// Context key versions read.
    #[serde(default)]
    pub context: Vec<ContextRef>,
}

/// A trace's output: its size and SHA-256, and where its bytes are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOutput {
    pub kind: OutputKind,
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// The shell's name for the bytes kept beside the engine; `None`: they are `inline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// The bytes, for outputs kept in the engine (kept in the database's own column, not in the
    /// metadata's JSON).
    #[serde(skip)]
    pub inline: Option<Bytes>,
}

impl TraceOutput {
    /// An output kept in the engine: `bytes` of `kind`, hashed here. Engine-internal callers (a
    /// task's JSON output) record through this.
    pub fn inline(kind: OutputKind, bytes: Bytes) -> Self {
        TraceOutput { kind, size: bytes.len() as u64, sha256: sha256_hex(&bytes), blob: None, inline: Some(bytes) }
    }
}

/// A tool call to record: what an agent (or the engine, for a completed task) reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub tool: String,
    /// The input's JSON text (canonicalised here).
    pub input: String,
    pub output: TraceOutput,
    /// The output's bytes when they are kept inline (`output.inline` is set from them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<Vec<u8>>,
    #[serde(default)]
    pub lineage: Lineage,
    /// When the computation started (engine time), if the producer says; and how long it took.
    #[serde(default)]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub duration_ms: u64,
}

/// A stored trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub namespace: String,
    pub id: String,
    pub tool: String,
    /// The canonical input.
    pub input: String,
    pub output: TraceOutput,
    /// The agent that recorded it.
    pub producer: String,
    pub recorded_at: Time,
    #[serde(default)]
    pub started_at: Option<Time>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub lineage: Lineage,
    /// Owners that pin it (open tasks...).
    #[serde(default)]
    pub pins: BTreeSet<String>,
}

/// Who asks: an agent's live session in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asker {
    pub namespace: Arc<str>,
    pub agent: Arc<str>,
}

/// What [`Traces::get_or_claim`] came to.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// The trace is stored: here it is.
    Hit(Box<Trace>),
    /// The asker holds the claim: compute and record it.
    Claimed { id: String },
    /// Another agent holds the claim; the asker waits until `deadline`.
    Wait { id: String, holder: String, deadline: Time },
}

/// What a change of claims or a record tells waiting callers.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// Waiter `origin` receives the trace.
    Found { origin: u64, trace: Box<Trace> },
    /// Waiter `origin` now holds the claim on `id`.
    Claimed { origin: u64, id: String },
    /// Waiter `origin` stops waiting with this error.
    Failed { origin: u64, error: CoreError },
}

/// A trace gone from the store (retention): its blob, if it had one, may be dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub namespace: String,
    pub id: String,
    pub blob: Option<String>,
}

/// What a record did.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub trace: Box<Trace>,
    /// False when the same trace was stored already (the record changed nothing).
    pub new: bool,
    /// Traces evicted to make room.
    pub evicted: Vec<Evicted>,
    /// Waiters answered by it.
    pub notices: Vec<Notice>,
}

/// Counters of the trace store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStats {
    pub traces: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub recorded: u64,
    pub claims: u64,
    pub waiters: u64,
    pub pinned: u64,
}

/// One direction of a lineage query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineageView {
    /// Parent traces (ids), each with whether it is still stored.
    pub parents: Vec<(String, bool)>,
    /// Context key versions read.
    pub context: Vec<ContextRef>,
    /// Stored traces that name this one as a parent.
    pub children: Vec<String>,
}

type Key = (Arc<str>, Arc<str>);

struct Entry {
    trace: Trace,
    /// Place in the least-recently-used order.
    used: (Time, u64),
}

struct Waiter {
    origin: u64,
    agent: Arc<str>,
    since: Time,
    deadline: Time,
}

struct Claim {
    holder: Arc<str>,
    /// The call that holds it (a waiter's origin, or the first asker's).
    origin: u64,
    waiters: VecDeque<Waiter>,
}

/// The trace store's rules and state (see the module doc).
#[derive(Default)]
pub struct Traces {
    traces: HashMap<Key, Entry>,
    /// (namespace, parent id) → ids of stored traces naming it as a parent.
    children: HashMap<Key, BTreeSet<Arc<str>>>,
    /// Least recently used first.
    lru: BTreeMap<(Time, u64), Key>,
    /// Oldest recorded first.
    by_age: BTreeSet<(Time, Key)>,
    use_seq: u64,
    claims: HashMap<Key, Claim>,
    /// Waiting call → the claim it waits on.
    waiting: HashMap<u64, Key>,
    total_bytes: u64,
    /// Traces with at least one pin, and each owner's pins (namespace, owner → ids): so that
    /// unpinning and finding what is protected never walk every trace.
    pinned: BTreeSet<Key>,
    pins_by_owner: HashMap<(Arc<str>, String), BTreeSet<Arc<str>>>,
    hits: u64,
    misses: u64,
    evictions: u64,
    recorded: u64,
}

impl Traces {
    /// The stored trace `id` of `namespace` (not counted as a use).
    pub fn peek(&self, namespace: &str, id: &str) -> Option<&Trace> {
        self.traces.get(&key(namespace, id)).map(|e| &e.trace)
    }

    /// Looks a trace up by tool and input, counting a hit or a miss and using it.
    pub fn lookup(
        &mut self,
        now: Time,
        namespace: &str,
        tool: &str,
        input: &str,
        settings: &TraceSettings,
    ) -> Result<Option<Trace>, CoreError> {
        validate_tool(tool, settings)?;
        let canon = canonical_input(input, settings)?;
        let id = trace_id(tool, &canon);
        Ok(self.get(now, namespace, &id))
    }

    /// The trace `id`, counting a hit or a miss and using it.
    pub fn get(&mut self, now: Time, namespace: &str, id: &str) -> Option<Trace> {
        let k = key(namespace, id);
        match self.traces.contains_key(&k) {
            true => {
                self.hits += 1;
                self.touch(now, &k);
                self.traces.get(&k).map(|e| e.trace.clone())
            }
            false => {
                self.misses += 1;
                None
            }
        }
    }

    /// A hit on trace `id` served beside the engine (see [`crate::io::TraceInput::Used`]): counted,
    /// and the trace used, if it is still stored (it may have been evicted since).
    pub fn used(&mut self, now: Time, namespace: &str, id: &str) {
        self.hits += 1;
        self.touch(now, &key(namespace, id));
    }

    /// The (namespace, id) of every stored trace.
    pub fn keys(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.traces.keys().map(|(ns, id)| (ns, id))
    }

    fn touch(&mut self, now: Time, k: &Key) {
        self.use_seq += 1;
        let used = (now, self.use_seq);
        if let Some(e) = self.traces.get_mut(k) {
            self.lru.remove(&e.used);
            e.used = used;
            self.lru.insert(used, k.clone());
        }
    }

    /// Returns the stored trace, or gives `asker` the claim to compute it, or makes it wait
    /// (`origin` names the call; `wait_ms` 0 means the longest wait allowed).
    #[allow(clippy::too_many_arguments)]
    pub fn get_or_claim(
        &mut self,
        now: Time,
        origin: u64,
        asker: &Asker,
        tool: &str,
        input: &str,
        wait_ms: u64,
        settings: &TraceSettings,
    ) -> Result<ClaimOutcome, CoreError> {
        validate_tool(tool, settings)?;
        let canon = canonical_input(input, settings)?;
        let id = trace_id(tool, &canon);
        if wait_ms > settings.max_wait_ms {
            return Err(CoreError::invalid(
                "wait_ms",
                format!("{wait_ms} ms; the limit is {} ms (traces.max_wait_ms)", settings.max_wait_ms),
            ));
        }
        let k = key(&asker.namespace, &id);
        if let Some(trace) = self.get(now, &asker.namespace, &id) {
            return Ok(ClaimOutcome::Hit(Box::new(trace)));
        }
        match self.claims.get_mut(&k) {
            None => {
                self.claims.insert(k, Claim { holder: asker.agent.clone(), origin, waiters: VecDeque::new() });
                Ok(ClaimOutcome::Claimed { id })
            }
            // Asking again for a claim one holds: it is still one's own.
            Some(c) if c.holder == asker.agent => {
                c.origin = origin;
                Ok(ClaimOutcome::Claimed { id })
            }
            Some(c) => {
                if self.waiting.len() >= settings.max_waiters {
                    return Err(CoreError::Limit {
                        what: "get_or_claim calls waiting",
                        limit: settings.max_waiters as u64,
                        hint: "retry later, or raise traces.max_waiters",
                    });
                }
                let wait = if wait_ms == 0 { settings.max_wait_ms } else { wait_ms };
                let deadline = now.saturating_add(wait);
                c.waiters.push_back(Waiter { origin, agent: asker.agent.clone(), since: now, deadline });
                let holder = c.holder.to_string();
                self.waiting.insert(origin, k);
                Ok(ClaimOutcome::Wait { id, holder, deadline })
            }
        }
    }

    /// Call `origin` stops waiting (it timed out, or its caller went away); if it held a claim,
    /// the claim passes on. `timed_out` answers the waiter with a timeout.
    pub fn cancel(&mut self, now: Time, origin: u64, timed_out: bool) -> Vec<Notice> {
        let mut notices = Vec::new();
        if let Some(k) = self.waiting.remove(&origin) {
            if let Some(c) = self.claims.get_mut(&k) {
                if let Some(pos) = c.waiters.iter().position(|w| w.origin == origin) {
                    let w = c.waiters.remove(pos).expect("present");
                    if timed_out {
                        let error = CoreError::TraceWaitTimeout {
                            id: k.1.to_string(),
                            holder: c.holder.to_string(),
                            waited_ms: now.saturating_sub(w.since),
                        };
                        notices.push(Notice::Failed { origin, error });
                    }
                }
            }
            return notices;
        }
        let held: Vec<Key> = self.claims.iter().filter(|(_, c)| c.origin == origin).map(|(k, _)| k.clone()).collect();
        for k in held {
            self.pass_claim(&k, &mut notices);
        }
        notices
    }

    /// The holder gives up its claim on (`tool`, `input`): the next waiter gets it.
    pub fn release(
        &mut self,
        asker: &Asker,
        tool: &str,
        input: &str,
        settings: &TraceSettings,
    ) -> Result<Vec<Notice>, CoreError> {
        validate_tool(tool, settings)?;
        let id = trace_id(tool, &canonical_input(input, settings)?);
        let k = key(&asker.namespace, &id);
        match self.claims.get(&k) {
            Some(c) if c.holder == asker.agent => {
                let mut notices = Vec::new();
                self.pass_claim(&k, &mut notices);
                Ok(notices)
            }
            Some(c) => Err(CoreError::TraceClaimed { id, holder: c.holder.to_string() }),
            None => Err(CoreError::invalid("trace release", format!("no claim is held on trace '{id}'"))),
        }
    }

    /// The holder of the claim on `k` let go: the first waiter takes it, or the claim ends.
    fn pass_claim(&mut self, k: &Key, notices: &mut Vec<Notice>) {
        let Some(c) = self.claims.get_mut(k) else { return };
        match c.waiters.pop_front() {
            Some(w) => {
                self.waiting.remove(&w.origin);
                c.holder = w.agent;
                c.origin = w.origin;
                notices.push(Notice::Claimed { origin: w.origin, id: k.1.to_string() });
            }
            None => {
                self.claims.remove(k);
            }
        }
    }

    /// The agent's session is gone: its claims pass on, its waits end (answered with
    /// [`CoreError::UnknownAgent`]).
    pub fn agent_gone(&mut self, namespace: &str, agent: &str) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut keys: Vec<Key> = self.claims.keys().filter(|k| &*k.0 == namespace).cloned().collect();
        keys.sort();
        for k in keys {
            let Some(c) = self.claims.get_mut(&k) else { continue };
            let mine: Vec<u64> = c.waiters.iter().filter(|w| &*w.agent == agent).map(|w| w.origin).collect();
            c.waiters.retain(|w| &*w.agent != agent);
            // Their calls end: the session they waited for is gone.
            for origin in mine {
                self.waiting.remove(&origin);
                let error = CoreError::UnknownAgent { namespace: namespace.to_owned(), agent: agent.to_owned() };
                notices.push(Notice::Failed { origin, error });
            }
            if &*c.holder == agent {
                self.pass_claim(&k, &mut notices);
            }
        }
        notices
    }

    /// The earliest deadline of a waiting call, with its origin.
    pub fn waits(&self) -> impl Iterator<Item = (u64, Time)> + '_ {
        self.claims.values().flat_map(|c| c.waiters.iter().map(|w| (w.origin, w.deadline)))
    }

    /// Checks a record could be applied now (nothing changes); returns the trace id.
    pub fn check(&self, asker: &Asker, record: &Record, settings: &TraceSettings) -> Result<String, CoreError> {
        self.prepare(asker, record, settings).map(|p| p.id)
    }

    fn prepare(&self, asker: &Asker, record: &Record, settings: &TraceSettings) -> Result<Prepared, CoreError> {
        validate_tool(&record.tool, settings)?;
        let canon = canonical_input(&record.input, settings)?;
        let id = trace_id(&record.tool, &canon);
        let size = record.output.size;
        if size > settings.max_output_bytes {
            return Err(CoreError::TraceTooLarge { id, size, limit: settings.max_output_bytes });
        }
        let l = &record.lineage;
        if l.parents.len() > settings.max_lineage || l.context.len() > settings.max_lineage {
            return Err(CoreError::invalid(
                "trace lineage",
                format!(
                    "{} parents and {} context versions; the limit is {} each (traces.max_lineage)",
                    l.parents.len(),
                    l.context.len(),
                    settings.max_lineage
                ),
            ));
        }
        for p in &l.parents {
            if *p == id {
                return Err(CoreError::invalid("trace lineage", "a trace cannot be its own parent"));
            }
            if !self.traces.contains_key(&key(&asker.namespace, p)) {
                return Err(CoreError::UnknownTrace { namespace: asker.namespace.to_string(), id: p.clone() });
            }
        }
        for c in &l.context {
            crate::context::validate_key("lineage context key", &c.key, &crate::context::ContextSettings::default())?;
        }
        if record.output.sha256.len() != 64 || !record.output.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CoreError::invalid("trace output", "its sha256 must be 64 hex digits"));
        }
        match (&record.output.blob, &record.inline) {
            (None, Some(b)) if b.len() as u64 == size => {
                if sha256_hex(b) != record.output.sha256.to_ascii_lowercase() {
                    return Err(CoreError::TraceHashMismatch {
                        id,
                        what: format!("the output's bytes hash to {}, not {}", sha256_hex(b), record.output.sha256),
                    });
                }
            }
            (None, Some(b)) => {
                return Err(CoreError::invalid(
                    "trace output",
                    format!("{} bytes inline, but its size says {size}", b.len()),
                ))
            }
            (Some(_), None) => {}
            (None, None) => {
                return Err(CoreError::invalid("trace output", "neither its bytes nor the name of its blob were given"))
            }
            (Some(_), Some(_)) => return Err(CoreError::invalid("trace output", "both inline bytes and a blob")),
        }
        let k = key(&asker.namespace, &id);
        if let Some(e) = self.traces.get(&k) {
            if e.trace.output.sha256 == record.output.sha256.to_ascii_lowercase() {
                return Ok(Prepared { id, canon, existing: true, evict: Vec::new() });
            }
            return Err(CoreError::TraceExists {
                id,
                stored: e.trace.output.sha256.clone(),
                given: record.output.sha256.clone(),
            });
        }
        if let Some(c) = self.claims.get(&k) {
            if c.holder != asker.agent {
                return Err(CoreError::TraceClaimed { id, holder: c.holder.to_string() });
            }
        }
        let keep: HashSet<Key> = l.parents.iter().map(|p| key(&asker.namespace, p)).collect();
        let evict = self.plan_room(size, 1, &keep, settings)?;
        Ok(Prepared { id, canon, existing: false, evict })
    }

    /// Which traces go (least recently used unprotected first) to make room for `bytes` more in
    /// `count` more traces; an error if that cannot be done.
    fn plan_room(
        &self,
        bytes: u64,
        count: usize,
        keep: &HashSet<Key>,
        settings: &TraceSettings,
    ) -> Result<Vec<Key>, CoreError> {
        let mut total = self.total_bytes + bytes;
        let mut n = self.traces.len() + count;
        if total <= settings.max_total_bytes && n <= settings.max_traces {
            return Ok(Vec::new());
        }
        let protected = self.protected();
        let mut evict = Vec::new();
        for k in self.lru.values() {
            if total <= settings.max_total_bytes && n <= settings.max_traces {
                break;
            }
            if protected.contains(k) || keep.contains(k) {
                continue;
            }
            total -= self.traces[k].trace.output.size;
            n -= 1;
            evict.push(k.clone());
        }
        if total > settings.max_total_bytes || n > settings.max_traces {
            return Err(CoreError::Limit {
                what: "trace store (traces.max_total_bytes / traces.max_traces; the rest is pinned)",
                limit: settings.max_total_bytes,
                hint: "unpin traces (finish the tasks that pin them), or raise traces.max_total_bytes",
            });
        }
        Ok(evict)
    }

    /// Pinned traces and every trace in their lineage.
    fn protected(&self) -> HashSet<Key> {
        let mut out = HashSet::new();
        let mut todo: Vec<Key> = self.pinned.iter().cloned().collect();
        while let Some(k) = todo.pop() {
            if !out.insert(k.clone()) {
                continue;
            }
            if let Some(e) = self.traces.get(&k) {
                todo.extend(e.trace.lineage.parents.iter().map(|p| (k.0.clone(), Arc::from(p.as_str()))));
            }
        }
        out
    }

    /// Records a trace produced by `asker` at `now` (see the module doc): all of it, or nothing.
    pub fn record(
        &mut self,
        now: Time,
        asker: &Asker,
        mut record: Record,
        settings: &TraceSettings,
    ) -> Result<Recorded, CoreError> {
        let p = self.prepare(asker, &record, settings)?;
        let k = key(&asker.namespace, &p.id);
        if p.existing {
            self.touch(now, &k);
            let trace = Box::new(self.traces[&k].trace.clone());
            return Ok(Recorded { trace, new: false, evicted: Vec::new(), notices: Vec::new() });
        }
        let evicted = p.evict.iter().filter_map(|k| self.remove(k)).collect();
        let mut output = record.output;
        output.sha256 = output.sha256.to_ascii_lowercase();
        if let Some(bytes) = record.inline.take() {
            output.inline = Some(Bytes::from(bytes));
        }
        let trace = Trace {
            namespace: asker.namespace.to_string(),
            id: p.id,
            tool: record.tool,
            input: p.canon,
            output,
            producer: asker.agent.to_string(),
            recorded_at: now,
            started_at: record.started_at,
            duration_ms: record.duration_ms,
            lineage: record.lineage,
            pins: BTreeSet::new(),
        };
        self.recorded += 1;
        self.insert(now, trace.clone());
        let mut notices = Vec::new();
        if let Some(c) = self.claims.remove(&k) {
            for w in c.waiters {
                self.waiting.remove(&w.origin);
                notices.push(Notice::Found { origin: w.origin, trace: Box::new(trace.clone()) });
            }
        }
        Ok(Recorded { trace: Box::new(trace), new: true, evicted, notices })
    }

    fn insert(&mut self, now: Time, trace: Trace) {
        let k = key(&trace.namespace, &trace.id);
        for p in &trace.lineage.parents {
            self.children.entry(key(&trace.namespace, p)).or_default().insert(k.1.clone());
        }
        self.total_bytes += trace.output.size;
        for owner in &trace.pins {
            self.pins_by_owner.entry((k.0.clone(), owner.clone())).or_default().insert(k.1.clone());
        }
        if !trace.pins.is_empty() {
            self.pinned.insert(k.clone());
        }
        self.use_seq += 1;
        let used = (now.max(trace.recorded_at), self.use_seq);
        self.lru.insert(used, k.clone());
        self.by_age.insert((trace.recorded_at, k.clone()));
        self.traces.insert(k, Entry { trace, used });
    }

    fn remove(&mut self, k: &Key) -> Option<Evicted> {
        let e = self.traces.remove(k)?;
        self.lru.remove(&e.used);
        self.by_age.remove(&(e.trace.recorded_at, k.clone()));
        self.total_bytes -= e.trace.output.size;
        for owner in &e.trace.pins {
            let ok = (k.0.clone(), owner.clone());
            if let Some(ids) = self.pins_by_owner.get_mut(&ok) {
                ids.remove(&k.1);
                if ids.is_empty() {
                    self.pins_by_owner.remove(&ok);
                }
            }
        }
        self.pinned.remove(k);
        for p in &e.trace.lineage.parents {
            let pk = key(&k.0, p);
            if let Some(set) = self.children.get_mut(&pk) {
                set.remove(&k.1);
                if set.is_empty() {
                    self.children.remove(&pk);
                }
            }
        }
        self.evictions += 1;
        Some(Evicted { namespace: e.trace.namespace, id: e.trace.id, blob: e.trace.output.blob })
    }

    /// Evicts the unprotected traces older than `max_age_ms` at `now`.
    pub fn expire(&mut self, now: Time, settings: &TraceSettings) -> Vec<Evicted> {
        let protected = self.protected();
        let old: Vec<Key> = self
            .by_age
            .iter()
            .take_while(|(at, _)| at.saturating_add(settings.max_age_ms) <= now)
            .filter(|(_, k)| !protected.contains(k))
            .map(|(_, k)| k.clone())
            .collect();
        old.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// When the next unprotected trace comes of age, if one will.
    pub fn next_expiry(&self, settings: &TraceSettings) -> Option<Time> {
        let protected = self.protected();
        self.by_age.iter().find(|(_, k)| !protected.contains(k)).map(|(at, _)| at.saturating_add(settings.max_age_ms))
    }

    /// `owner` pins trace `id` (it and its lineage are not evicted until unpinned); `false` if
    /// there is no such trace.
    pub fn pin(&mut self, namespace: &str, id: &str, owner: &str) -> bool {
        let k = key(namespace, id);
        let Some(e) = self.traces.get_mut(&k) else { return false };
        e.trace.pins.insert(owner.to_owned());
        self.pins_by_owner.entry((k.0.clone(), owner.to_owned())).or_default().insert(k.1.clone());
        self.pinned.insert(k);
        true
    }

    /// `owner` unpins every trace of `namespace` it pinned; returns their ids.
    pub fn unpin(&mut self, namespace: &str, owner: &str) -> Vec<String> {
        let Some(ids) = self.pins_by_owner.remove(&(Arc::from(namespace), owner.to_owned())) else { return Vec::new() };
        let mut unpinned = Vec::with_capacity(ids.len());
        for id in ids {
            let k = (Arc::from(namespace), id);
            if let Some(e) = self.traces.get_mut(&k) {
                e.trace.pins.remove(owner);
                if e.trace.pins.is_empty() {
                    self.pinned.remove(&k);
                }
                unpinned.push(k.1.to_string());
            }
        }
        unpinned
    }

    /// What trace `id` was computed from, and what was computed from it.
    pub fn lineage(&self, namespace: &str, id: &str) -> Result<LineageView, CoreError> {
        let e = self
            .traces
            .get(&key(namespace, id))
            .ok_or_else(|| CoreError::UnknownTrace { namespace: namespace.to_owned(), id: id.to_owned() })?;
        let parents =
            e.trace.lineage.parents.iter().map(|p| (p.clone(), self.traces.contains_key(&key(namespace, p)))).collect();
        let children = self
            .children
            .get(&key(namespace, id))
            .map(|s| s.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        Ok(LineageView { parents, context: e.trace.lineage.context.clone(), children })
    }

    /// The store's counters.
    pub fn stats(&self) -> TraceStats {
        TraceStats {
            traces: self.traces.len() as u64,
            bytes: self.total_bytes,
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            recorded: self.recorded,
            claims: self.claims.len() as u64,
            waiters: self.waiting.len() as u64,
            pinned: self.pinned.len() as u64,
        }
    }

    /// Forgets the traces whose output is kept beside the engine under a blob name `present`
    /// does not know (their bytes did not survive: a crash between the commit and the answer);
    /// returns them, and the blob names still referenced.
    pub fn retain_blobs(&mut self, present: impl Fn(&str) -> bool) -> (Vec<Evicted>, HashSet<String>) {
        let lost: Vec<Key> = self
            .traces
            .iter()
            .filter(|(_, e)| e.trace.output.blob.as_deref().is_some_and(|b| !present(b)))
            .map(|(k, _)| k.clone())
            .collect();
        let gone: Vec<Evicted> = lost.iter().filter_map(|k| self.remove(k)).collect();
        self.evictions -= gone.len() as u64;
        let kept = self.traces.values().filter_map(|e| e.trace.output.blob.clone()).collect();
        (gone, kept)
    }

    /// Takes back the kept traces (a restart); they count as used when recorded.
    pub fn restore(&mut self, traces: Vec<Trace>) {
        let mut traces = traces;
        traces.sort_by(|a, b| (a.recorded_at, &a.namespace, &a.id).cmp(&(b.recorded_at, &b.namespace, &b.id)));
        for t in traces {
            let at = t.recorded_at;
            self.insert(at, t);
        }
    }
}

struct Prepared {
    id: String,
    canon: String,
    existing: bool,
    evict: Vec<Key>,
}

fn key(namespace: &str, id: &str) -> Key {
    (Arc::from(namespace), Arc::from(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn asker(agent: &str) -> Asker {
        Asker { namespace: "ns".into(), agent: agent.into() }
    }

    fn rec(tool: &str, input: &str, out: &[u8], parents: &[&str]) -> Record {
        let output = TraceOutput::inline(OutputKind::Bytes, Bytes::copy_from_slice(out));
        Record {
            tool: tool.into(),
            input: input.into(),
            output: TraceOutput { inline: None, ..output },
            inline: Some(out.to_vec()),
            lineage: Lineage { parents: parents.iter().map(|p| p.to_string()).collect(), context: vec![] },
            started_at: None,
            duration_ms: 0,
        }
    }

    #[test]
    fn equal_inputs_are_canonical_alike() {
        let a: Value = serde_json::from_str(r#"{ "b": [1.0, 2.5, -0.0], "a": {"y": 1, "x": "é"} }"#).unwrap();
        let b = json!({"a": {"x": "é", "y": 1}, "b": [1, 2.5, 0]});
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&b), r#"{"a":{"x":"é","y":1},"b":[1,2.5,0]}"#);
        assert_ne!(canonical(&json!({"a": 1})), canonical(&json!({"a": "1"})));
        let s = TraceSettings::default();
        assert_eq!(
            trace_id("t", &canonical_input(r#"{"q":1,"p":2}"#, &s).unwrap()),
            trace_id("t", &canonical_input(r#"{"p": 2.0, "q": 1}"#, &s).unwrap())
        );
    }

    #[test]
    fn bad_tool_names_and_inputs_are_refused() {
        let s = TraceSettings::default();
        for bad in ["", "a..b", "a b", "é"] {
            assert!(validate_tool(bad, &s).is_err(), "{bad}");
        }
        validate_tool("search.web_v2-x", &s).unwrap();
        assert!(canonical_input("{not json", &s).is_err());
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(canonical_input(&deep, &s).unwrap_err().to_string().contains("levels deep"));
    }

    #[test]
    fn record_then_lookup_hits_and_counts() {
        let s = TraceSettings::default();
        let mut t = Traces::default();
        assert!(t.lookup(0, "ns", "tool", "{}", &s).unwrap().is_none());
        let r = t.record(1, &asker("a"), rec("tool", r#"{"x":1}"#, b"out", &[]), &s).unwrap();
        assert!(r.new);
        let hit = t.lookup(2, "ns", "tool", r#"{ "x" : 1.0 }"#, &s).unwrap().expect("hit");
        assert_eq!(hit.output.inline.as_deref(), Some(&b"out"[..]));
        assert_eq!(hit.producer, "a");
        assert!(t.lookup(2, "other", "tool", r#"{"x":1}"#, &s).unwrap().is_none(), "per namespace");
        let st = t.stats();
        assert_eq!((st.hits, st.misses, st.traces, st.bytes), (1, 2, 1, 3));
        // The same record again changes nothing; another output is refused.
        assert!(!t.record(3, &asker("b"), rec("tool", r#"{"x":1}"#, b"out", &[]), &s).unwrap().new);
        let e = t.record(3, &asker("b"), rec("tool", r#"{"x":1}"#, b"other", &[]), &s).unwrap_err();
        assert!(matches!(e, CoreError::TraceExists { .. }), "{e}");
    }

    #[test]
    fn bad_records_change_nothing() {
        let s = TraceSettings { max_output_bytes: 4, ..Default::default() };
        let mut t = Traces::default();
        let e = t.record(1, &asker("a"), rec("tool", "1", b"toolong", &[]), &s).unwrap_err();
        assert!(matches!(e, CoreError::TraceTooLarge { size: 7, limit: 4, .. }), "{e}");
        let e = t.record(1, &asker("a"), rec("tool", "1", b"ok", &["0".repeat(64).as_str()]), &s).unwrap_err();
        assert!(matches!(e, CoreError::UnknownTrace { .. }), "{e}");
        let mut r = rec("tool", "1", b"ok", &[]);
        r.output.sha256 = sha256_hex(b"no");
        let e = t.record(1, &asker("a"), r, &s).unwrap_err();
        assert!(matches!(e, CoreError::TraceHashMismatch { .. }), "{e}");
        assert!(t.record(1, &asker("a"), rec("bad tool", "1", b"ok", &[]), &s).is_err());
        assert_eq!(t.stats().traces, 0);
        assert_eq!(t.stats().bytes, 0);
    }

    #[test]
    fn one_claim_then_waiters_receive_the_trace() {
        let s = TraceSettings::default();
        let mut t = Traces::default();
        let id = match t.get_or_claim(0, 1, &asker("a"), "tool", "2", 0, &s).unwrap() {
            ClaimOutcome::Claimed { id } => id,
            other => panic!("{other:?}"),
        };
        for (origin, agent) in [(2, "b"), (3, "c")] {
            assert!(matches!(
                t.get_or_claim(0, origin, &asker(agent), "tool", "2", 1000, &s).unwrap(),
                ClaimOutcome::Wait { ref holder, deadline: 1000, .. } if holder == "a"
            ));
        }
        // Another agent may not record what a holds.
        let e = t.record(1, &asker("b"), rec("tool", "2", b"x", &[]), &s).unwrap_err();
        assert!(matches!(e, CoreError::TraceClaimed { ref holder, .. } if holder == "a"), "{e}");
        let r = t.record(1, &asker("a"), rec("tool", "2", b"x", &[]), &s).unwrap();
        assert_eq!(r.trace.id, id);
        let found: Vec<u64> =
            r.notices.iter().map(|n| if let Notice::Found { origin, .. } = n { *origin } else { 0 }).collect();
        assert_eq!(found, vec![2, 3]);
        assert_eq!(t.stats().claims, 0);
        assert_eq!(t.stats().waiters, 0);
    }

    #[test]
    fn a_lost_holder_passes_the_claim_to_the_next_live_waiter() {
        let s = TraceSettings::default();
        let mut t = Traces::default();
        t.get_or_claim(0, 1, &asker("a"), "tool", "2", 0, &s).unwrap();
        t.get_or_claim(0, 2, &asker("b"), "tool", "2", 0, &s).unwrap();
        t.get_or_claim(0, 3, &asker("c"), "tool", "2", 0, &s).unwrap();
        // b leaves first: its wait ends, answered; then a is lost: c gets the claim.
        let n = t.agent_gone("ns", "b");
        assert!(matches!(&n[..], [Notice::Failed { origin: 2, error: CoreError::UnknownAgent { .. } }]), "{n:?}");
        let n = t.agent_gone("ns", "a");
        assert!(matches!(&n[..], [Notice::Claimed { origin: 3, .. }]), "{n:?}");
        // c gives up: nobody waits, the claim ends.
        assert!(t.release(&asker("c"), "tool", "2", &s).unwrap().is_empty());
        assert!(matches!(t.get_or_claim(0, 4, &asker("d"), "tool", "2", 0, &s).unwrap(), ClaimOutcome::Claimed { .. }));
        // A caller that went away while holding it passes it on as well.
        t.get_or_claim(0, 5, &asker("e"), "tool", "2", 0, &s).unwrap();
        let n = t.cancel(1, 4, false);
        assert!(matches!(&n[..], [Notice::Claimed { origin: 5, .. }]), "{n:?}");
        let n = t.cancel(1, 99, true);
        assert!(n.is_empty());
    }

    #[test]
    fn eviction_is_lru_and_spares_pinned_lineage() {
        let s = TraceSettings { max_total_bytes: 10, max_output_bytes: 10, ..Default::default() };
        let mut t = Traces::default();
        let a = t.record(1, &asker("x"), rec("t", "1", b"aaa", &[]), &s).unwrap().trace.id;
        let b = t.record(2, &asker("x"), rec("t", "2", b"bbb", &[&a]), &s).unwrap().trace.id;
        let c = t.record(3, &asker("x"), rec("t", "3", b"ccc", &[]), &s).unwrap().trace.id;
        assert!(t.pin("ns", &b, "task-1"));
        // 9 bytes stored; 3 more need one to go: a and b are protected (b pinned, a its parent), so c.
        let r = t.record(4, &asker("x"), rec("t", "4", b"ddd", &[]), &s).unwrap();
        assert_eq!(r.evicted.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![c.clone()]);
        // Nothing unprotected is left but d (just used): 4 more bytes cannot be made room for… except d.
        let e = t.record(5, &asker("x"), rec("t", "5", b"eeeeeeeeee", &[]), &s).unwrap_err();
        assert!(matches!(e, CoreError::Limit { .. }), "{e}");
        assert_eq!(t.stats().traces, 3, "a refused record evicts nothing");
        assert_eq!(t.lineage("ns", &a).unwrap().children, vec![b.clone()]);
        assert_eq!(t.lineage("ns", &b).unwrap().parents, vec![(a.clone(), true)]);
        assert_eq!(t.unpin("ns", "task-1"), vec![b.clone()]);
        // Unpinned, a (least recently used) goes first; b's lineage says so.
        t.lookup(6, "ns", "t", "2", &s).unwrap();
        let r = t.record(7, &asker("x"), rec("t", "6", b"fff", &[]), &s).unwrap();
        assert_eq!(r.evicted.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![a.clone()]);
        assert_eq!(t.lineage("ns", &b).unwrap().parents, vec![(a, false)]);
        assert_eq!(t.stats().evictions, 2);
    }

    #[test]
    fn a_hit_served_beside_counts_and_uses_the_trace() {
        let s = TraceSettings { max_total_bytes: 6, max_output_bytes: 6, ..Default::default() };
        let mut t = Traces::default();
        let a = t.record(1, &asker("x"), rec("t", "1", b"aaa", &[]), &s).unwrap().trace.id;
        let b = t.record(2, &asker("x"), rec("t", "2", b"bbb", &[]), &s).unwrap().trace.id;
        assert_eq!(t.keys().count(), 2);
        // a, the older, is used: b is now the least recently used and goes first.
        t.used(3, "ns", &a);
        assert_eq!(t.stats().hits, 1);
        let r = t.record(4, &asker("x"), rec("t", "3", b"ccc", &[]), &s).unwrap();
        assert_eq!(r.evicted.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![b.clone()]);
        // A hit served just before an eviction still counts; nothing else changes.
        t.used(5, "ns", &b);
        assert_eq!((t.stats().hits, t.stats().misses, t.stats().traces), (2, 0, 2));
    }

    #[test]
    fn old_traces_expire_unless_pinned() {
        let s = TraceSettings { max_age_ms: 100, ..Default::default() };
        let mut t = Traces::default();
        let a = t.record(0, &asker("x"), rec("t", "1", b"a", &[]), &s).unwrap().trace.id;
        t.record(50, &asker("x"), rec("t", "2", b"b", &[]), &s).unwrap();
        t.pin("ns", &a, "o");
        assert_eq!(t.next_expiry(&s), Some(150));
        assert!(t.expire(120, &s).is_empty());
        assert_eq!(t.expire(150, &s).len(), 1);
        assert_eq!(t.next_expiry(&s), None);
        t.unpin("ns", "o");
        assert_eq!(t.expire(150, &s).len(), 1);
        assert_eq!(t.stats().traces, 0);
    }
}
