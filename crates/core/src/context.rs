//! Shared context: per namespace, keys holding JSON values, versioned, compared-and-set, watched.
//!
//! Owns the rules of keyed shared state:
//!
//! * **Keys** are dot-separated names (`workspace.persona`): segments of ASCII letters, digits,
//!   `_` and `-`, at most `max_key_bytes` in all. Keys under `system.` are kept by the server
//!   ([`SYSTEM_PREFIX`]): every namespace reads the same ones, and no client may write them.
//! * **Versions.** Each namespace numbers its changes 1, 2, 3...: a change (set, merge patch,
//!   delete) takes the next number, which becomes the key's version. So a key's versions only grow,
//!   even across a delete and a re-creation, and one number says how far a watcher of many keys
//!   has come (it resumes from it). A write may say which version it expects
//!   ([`Expect`]): the key's current version, or that the key must not exist; otherwise nothing
//!   is changed and the conflict names the current version.
//! * **History.** Each key keeps its last `history_depth` versions (values, and the patch that made
//!   each), so that a read can ask for a retained version, and a watcher that resumes gets the
//!   changes it missed as one delta. A deletion forgets the key's history; the namespace remembers
//!   its last `max_tombstones` deletions so that a resumed watcher is told of them.
//! * **Lifetimes.** A write makes the key permanent, bound to its writer's lease (deleted when the
//!   writer is lost or leaves), or living `ttl_ms` (deleted when it expires; the engine's timer
//!   fires it, with time as an argument here).
//! * **Watches** ([`ContextFeed`]) cover a key or a prefix and are coalesced per key exactly like
//!   agent state: one pending entry per key, patches composed ([`crate::state::compose`]), a
//!   snapshot where composition is not exact. Each batch says from which version a watcher
//!   resumes without missing anything.
//! * **Limits**: key length, value size (JSON text), JSON depth, keys per namespace, history depth:
//!   a write over one is refused whole; nothing is partially applied.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CoreError;
use crate::io::Time;
use crate::state;

/// Keys under this prefix are maintained by the server and read-only for clients.
pub const SYSTEM_PREFIX: &str = "system";

/// The key of the system's health facts.
pub const SYSTEM_HEALTH: &str = "system.health";

/// Limits and retention of shared context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextSettings {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value (its JSON text), in bytes; also the largest patch.
    pub max_value_bytes: usize,
    /// Deepest nesting of arrays and objects in a value or patch (a scalar is depth 0).
    pub max_depth: usize,
    /// Most keys in one namespace.
    pub max_keys_per_namespace: usize,
    /// Versions each key retains (the current one included), for reads by version and resumes.
    pub history_depth: usize,
    /// Deletions each namespace remembers for resumed watchers.
    pub max_tombstones: usize,
    /// Longest time to live a write may ask for, in milliseconds.
    pub max_ttl_ms: u64,
    /// Most context watches open at once, over every namespace.
    pub max_watchers: usize,
    /// How soon after a change of the facts the server-maintained `system.*` keys follow, in
    /// milliseconds (changes closer together are published together).
    pub system_refresh_ms: u64,
}

impl Default for ContextSettings {
    fn default() -> Self {
        ContextSettings {
            max_key_bytes: 256,
            max_value_bytes: 256 * 1024,
            max_depth: 32,
            max_keys_per_namespace: 100_000,
            history_depth: 16,
            max_tombstones: 4096,
            max_ttl_ms: 30 * 24 * 3600 * 1000,
            max_watchers: 1024,
            system_refresh_ms: 100,
        }
    }
}

impl ContextSettings {
    /// Checks the settings make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_depth == 0 || self.max_key_bytes == 0 || self.max_keys_per_namespace == 0 {
            return Err("history_depth, max_key_bytes and max_keys_per_namespace must be at least 1".into());
        }
        if self.max_depth == 0 || self.max_depth > 128 {
            return Err("max_depth must be between 1 and 128 (the JSON parser's own nesting limit)".into());
        }
        if self.system_refresh_ms == 0 {
            return Err("system_refresh_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Checks `key` is a valid key (`what` names the field in the error): dot-separated segments of
/// letters, digits, `_` and `-`.
pub fn validate_key(what: &'static str, key: &str, settings: &ContextSettings) -> Result<(), CoreError> {
    if key.is_empty() {
        return Err(CoreError::invalid(what, "must not be empty"));
    }
    validate_path(what, key, settings)
}

/// Checks a watch prefix: empty (every key) or a key.
pub fn validate_prefix(prefix: &str, settings: &ContextSettings) -> Result<(), CoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path("context prefix", prefix, settings)
}

fn validate_path(what: &'static str, key: &str, settings: &ContextSettings) -> Result<(), CoreError> {
    if key.len() > settings.max_key_bytes {
        let start: String = key.chars().take(16).collect();
        return Err(CoreError::invalid(
            what,
            format!(
                "'{start}…' is {} bytes; the limit is {} (context.max_key_bytes)",
                key.len(),
                settings.max_key_bytes
            ),
        ));
    }
    segments(what, key)
}

/// Checks `name` is dot-separated segments of ASCII letters, digits, `_` and `-` (context keys,
/// tool names).
pub(crate) fn segments(what: &'static str, name: &str) -> Result<(), CoreError> {
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(CoreError::invalid(what, format!("'{name}' has an empty segment; write a.b.c")));
        }
        if let Some(bad) = segment.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(CoreError::invalid(
                what,
                format!("'{name}' contains {bad:?}; use dot-separated segments of letters, digits, _ and -"),
            ));
        }
    }
    Ok(())
}

/// Whether `key` is kept by the server.
pub fn is_system(key: &str) -> bool {
    key == SYSTEM_PREFIX || key.strip_prefix(SYSTEM_PREFIX).is_some_and(|rest| rest.starts_with('.'))
}

/// How deep `value` nests arrays and objects (a scalar is 0).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses JSON text under the size and depth limits.
fn parse(what: &'static str, text: &str, settings: &ContextSettings) -> Result<Value, CoreError> {
    if text.len() > settings.max_value_bytes {
        return Err(CoreError::invalid(
            what,
            format!("{} bytes; the limit is {} (context.max_value_bytes)", text.len(), settings.max_value_bytes),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| CoreError::invalid(what, format!("not JSON: {e}")))?;
    check_depth(what, &value, settings)?;
    Ok(value)
}

fn check_depth(what: &'static str, value: &Value, settings: &ContextSettings) -> Result<(), CoreError> {
    let d = depth(value);
    if d > settings.max_depth {
        return Err(CoreError::invalid(
            what,
            format!("nests {d} levels deep; the limit is {} (context.max_depth)", settings.max_depth),
        ));
    }
    Ok(())
}

/// What a write expects of the key before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must not exist (create only).
    Absent,
    /// The key must be at exactly this version.
    Version(u64),
}

impl Expect {
    /// The wire form: `None` any, `Some(0)` absent, `Some(v)` version `v`.
    pub fn from_wire(expected: Option<u64>) -> Expect {
        match expected {
            None => Expect::Any,
            Some(0) => Expect::Absent,
            Some(v) => Expect::Version(v),
        }
    }
}

/// How long a written key lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifetime {
    /// Until deleted.
    #[default]
    Permanent,
    /// Until its writer (an agent's session) is lost or leaves.
    Lease,
    /// This many milliseconds from the write.
    TtlMs(u64),
}

/// What a write does to the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Replace the value with this JSON text.
    Set(String),
    /// Apply this RFC 7386 merge patch (JSON text) to the value (to `{}` if the key is absent).
    Patch(String),
    /// Remove the key.
    Delete,
}

/// One write to a key, as a client asks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// Empty means the default namespace.
    pub namespace: String,
    pub key: String,
    pub op: Op,
    pub expect: Expect,
    pub lifetime: Lifetime,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The key's new version (for a delete, the version the deletion took).
    pub version: u64,
    /// The key's version before, 0 if it did not exist.
    pub previous: u64,
    /// For a TTL, when the key expires.
    pub expires_at: Option<Time>,
}

/// Who writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    /// Shown in the history: an agent id, or the client's name for itself.
    pub name: Arc<str>,
    /// The writing agent, when the write comes from a session (a lease binding needs one).
    pub agent: Option<Arc<str>>,
}

/// One retained version of a key.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    pub version: u64,
    pub value: Arc<Value>,
    /// The merge patch that made this version from the previous one; `None` when no patch can say
    /// it (the key was created, or replaced by an object).
    pub patch: Option<Value>,
    pub at: Time,
    pub writer: Arc<str>,
    /// This version created the key (it did not exist before).
    pub created: bool,
}

/// One key.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Oldest first; the last is the current version. Never empty.
    history: VecDeque<Revision>,
    /// Bound to this agent's lease.
    pub owner: Option<Arc<str>>,
    pub expires_at: Option<Time>,
}

impl Entry {
    pub fn current(&self) -> &Revision {
        self.history.back().expect("an entry has a version")
    }

    pub fn version(&self) -> u64 {
        self.current().version
    }

    /// The retained versions, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &Revision> {
        self.history.iter()
    }

    /// The oldest retained version.
    pub fn oldest(&self) -> u64 {
        self.history.front().map_or(0, |r| r.version)
    }
}

/// A change made to a key, for the engine to tell watchers and the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub namespace: Arc<str>,
    pub key: Arc<str>,
    pub version: u64,
    pub previous: u64,
    /// The delta from `previous`, when a merge patch can say it.
    pub delta: Option<Value>,
    pub deleted: bool,
    /// The key had a TTL timer that must go (it was deleted or rewritten without one).
    pub expires_at: Option<Time>,
}

/// The keys of one namespace.
#[derive(Debug, Default)]
pub struct Space {
    entries: BTreeMap<Arc<str>, Entry>,
    /// The last version given out here.
    revision: u64,
    /// Recent deletions (version, key), oldest first.
    tombstones: VecDeque<(u64, Arc<str>)>,
    /// Deletions at or below this version may have been forgotten (evicted tombstones, or
    /// deletions before a restart): a watcher resuming from before it must start afresh.
    forgotten: u64,
    /// Keys bound to each agent's lease.
    bound: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Space {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.revision == 0
    }

    /// Keys matching `selector`, in key order.
    pub fn matching<'a>(&'a self, selector: &'a Selector) -> impl Iterator<Item = (&'a Arc<str>, &'a Entry)> + 'a {
        let start: &str = match selector {
            Selector::Key(k) | Selector::Prefix(k) => k.as_str(),
        };
        self.entries
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| match selector {
                Selector::Key(want) => k.as_ref() == want.as_str(),
                Selector::Prefix(p) => k.starts_with(p.as_str()),
            })
            .filter(move |(k, _)| selector.matches(k))
    }

    fn unbind(&mut self, key: &Arc<str>, owner: Option<&Arc<str>>) {
        if let Some(owner) = owner {
            if let Some(keys) = self.bound.get_mut(owner) {
                keys.remove(key);
                if keys.is_empty() {
                    self.bound.remove(owner);
                }
            }
        }
    }

    fn remove(&mut self, key: &Arc<str>, max_tombstones: usize) -> Option<(u64, Entry)> {
        let entry = self.entries.remove(key)?;
        self.unbind(key, entry.owner.as_ref());
        self.revision += 1;
        self.tombstones.push_back((self.revision, key.clone()));
        while self.tombstones.len() > max_tombstones {
            let (v, _) = self.tombstones.pop_front().expect("over the limit");
            self.forgotten = self.forgotten.max(v);
        }
        Some((self.revision, entry))
    }
}

/// What a watch covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// Exactly this key.
    Key(String),
    /// This key and every key under it (`a` covers `a` and `a.b`, not `ab`); empty: every key.
    Prefix(String),
}

impl Selector {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Selector::Key(k) => k == key,
            Selector::Prefix(p) => {
                p.is_empty()
                    || key.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            }
        }
    }

    /// Whether this selects server-maintained keys, which live apart from every namespace with a
    /// numbering of their own: a watch covers either them or its namespace's keys, never both, so
    /// that one version says where it stands. (The empty prefix selects the namespace's keys.)
    pub fn covers_system(&self) -> bool {
        match self {
            Selector::Key(k) | Selector::Prefix(k) => is_system(k),
        }
    }
}

/// A key's value at a version, as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    pub key: String,
    pub version: u64,
    pub value: Arc<Value>,
    pub at: Time,
    pub writer: String,
    /// The current version (equal to `version` unless an older one was asked for).
    pub current: u64,
    pub expires_at: Option<Time>,
    /// The agent whose lease the key is bound to.
    pub owner: Option<String>,
}

/// Every namespace's keys, and the server's own.
#[derive(Debug, Default)]
pub struct Context {
    spaces: HashMap<Arc<str>, Space>,
    /// `system.*`, the same for every namespace.
    system: Space,
}

impl Context {
    pub fn space(&self, ns: &str) -> Option<&Space> {
        self.spaces.get(ns)
    }

    pub fn system(&self) -> &Space {
        &self.system
    }

    /// Namespaces holding keys (or that held some: their numbering continues).
    pub fn namespaces(&self) -> impl Iterator<Item = (&Arc<str>, &Space)> {
        self.spaces.iter()
    }

    /// The space a key of `ns` lives in.
    fn space_of(&self, ns: &str, key: &str) -> Option<&Space> {
        if is_system(key) {
            Some(&self.system)
        } else {
            self.spaces.get(ns)
        }
    }

    /// Applies `write` from `writer` at `now`. All or nothing: a refused write changes nothing.
    /// `max_namespaces` bounds how many namespaces may hold keys.
    pub fn write(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        writer: &Writer,
        write: &Write,
        settings: &ContextSettings,
        max_namespaces: usize,
    ) -> Result<Applied, CoreError> {
        validate_key("context key", &write.key, settings)?;
        if is_system(&write.key) {
            return Err(CoreError::ContextReadOnly { key: write.key.clone() });
        }
        let expires_at = match write.lifetime {
            Lifetime::TtlMs(0) => return Err(CoreError::invalid("ttl", "must be at least 1 ms")),
            Lifetime::TtlMs(ms) if ms > settings.max_ttl_ms => {
                return Err(CoreError::invalid(
                    "ttl",
                    format!("{ms} ms; the limit is {} ms (context.max_ttl_ms)", settings.max_ttl_ms),
                ))
            }
            Lifetime::TtlMs(ms) => Some(now.saturating_add(ms)),
            Lifetime::Lease if writer.agent.is_none() => {
                return Err(CoreError::invalid(
                    "lifetime",
                    "a key bound to a lease must be written by an agent on its session",
                ))
            }
            _ => None,
        };
        if matches!(write.op, Op::Delete) && write.lifetime != Lifetime::Permanent {
            return Err(CoreError::invalid("lifetime", "a deletion takes no lifetime"));
        }
        // Parse and check before looking at the key: bad input is refused the same either way.
        let incoming = match &write.op {
            Op::Set(text) => Some(parse("context value", text, settings)?),
            Op::Patch(text) => Some(parse("context patch", text, settings)?),
            Op::Delete => None,
        };
        if !self.spaces.contains_key(&**ns) && self.spaces.len() >= max_namespaces {
            return Err(CoreError::Limit {
                what: "namespaces holding context keys",
                limit: max_namespaces as u64,
                hint: "delete the keys of a namespace no longer used",
            });
        }
        let space = self.spaces.entry(ns.clone()).or_default();
        // A key written before keeps its name (one allocation per key, not per write).
        let (key, current) = match space.entries.get_key_value(write.key.as_str()) {
            Some((key, entry)) => (key.clone(), Some(entry)),
            None => (Arc::from(write.key.as_str()), None),
        };
        let previous = current.map_or(0, Entry::version);
        let conflict = match write.expect {
            Expect::Any => false,
            Expect::Absent => current.is_some(),
            Expect::Version(v) => previous != v,
        };
        if conflict {
            let expected = match write.expect {
                Expect::Version(v) => v,
                _ => 0,
            };
            return Err(CoreError::ContextConflict { key: write.key.clone(), expected, current: previous });
        }
        let Some(incoming) = incoming else {
            let Some((version, entry)) = space.remove(&key, settings.max_tombstones) else {
                return Err(CoreError::UnknownContextKey { namespace: ns.to_string(), key: write.key.clone() });
            };
            return Ok(Applied {
                namespace: ns.clone(),
                key,
                version,
                previous,
                delta: None,
                deleted: true,
                expires_at: entry.expires_at,
            });
        };
        let (value, delta) = match &write.op {
            Op::Patch(_) => {
                let mut value = current.map_or(Value::Object(Default::default()), |e| (*e.current().value).clone());
                state::apply(&mut value, &incoming);
                // A patch on a new key is its creation: watchers get the whole value.
                let delta = current.is_some().then_some(incoming);
                (value, delta)
            }
            _ => {
                // A replacement by a non-object is a merge patch too; by an object it is not (a
                // patch merges into what is there).
                let delta = (current.is_some() && !incoming.is_object()).then(|| incoming.clone());
                (incoming, delta)
            }
        };
        if !matches!(write.op, Op::Set(_)) {
            let bytes = serde_json::to_string(&value).map_or(usize::MAX, |t| t.len());
            if bytes > settings.max_value_bytes {
                return Err(CoreError::invalid(
                    "context value",
                    format!(
                        "the patched value would be {bytes} bytes; the limit is {} (context.max_value_bytes)",
                        settings.max_value_bytes
                    ),
                ));
            }
            check_depth("context value", &value, settings)?;
        }
        if current.is_none() && space.entries.len() >= settings.max_keys_per_namespace {
            return Err(CoreError::Limit {
                what: "context keys in the namespace",
                limit: settings.max_keys_per_namespace as u64,
                hint: "delete keys no longer needed, or bind them to a lease or a TTL",
            });
        }
        // Checked: from here on the write happens.
        space.revision += 1;
        let version = space.revision;
        let owner = (write.lifetime == Lifetime::Lease).then(|| writer.agent.clone()).flatten();
        let revision = Revision {
            version,
            value: Arc::new(value),
            patch: delta.clone(),
            at: now,
            writer: writer.name.clone(),
            created: current.is_none(),
        };
        let old_expiry;
        match space.entries.get_mut(&key) {
            Some(entry) => {
                entry.history.push_back(revision);
                while entry.history.len() > settings.history_depth {
                    entry.history.pop_front();
                }
                old_expiry = entry.expires_at;
                let old_owner = std::mem::replace(&mut entry.owner, owner.clone());
                entry.expires_at = expires_at;
                if old_owner != owner {
                    space.unbind(&key, old_owner.as_ref());
                }
            }
            None => {
                old_expiry = None;
                space.entries.insert(
                    key.clone(),
                    Entry { history: VecDeque::from([revision]), owner: owner.clone(), expires_at },
                );
            }
        }
        if let Some(owner) = owner {
            space.bound.entry(owner).or_default().insert(key.clone());
        }
        Ok(Applied {
            namespace: ns.clone(),
            key,
            version,
            previous,
            delta,
            deleted: false,
            expires_at: old_expiry.filter(|_| expires_at.is_none()),
        })
    }

    /// Reads `key` of `ns`, at `version` if given (a retained one), else the current one.
    pub fn read(
        &self,
        ns: &str,
        key: &str,
        version: Option<u64>,
        settings: &ContextSettings,
    ) -> Result<Read, CoreError> {
        validate_key("context key", key, settings)?;
        let unknown = || CoreError::UnknownContextKey { namespace: ns.to_owned(), key: key.to_owned() };
        let entry = self.space_of(ns, key).and_then(|s| s.get(key)).ok_or_else(unknown)?;
        let current = entry.version();
        let revision = match version {
            None => entry.current(),
            Some(v) => {
                entry.history.iter().find(|r| r.version == v).ok_or_else(|| CoreError::UnknownContextVersion {
                    key: key.to_owned(),
                    version: v,
                    retained: entry.history.iter().map(|r| r.version).collect(),
                })?
            }
        };
        Ok(Read {
            key: key.to_owned(),
            version: revision.version,
            value: revision.value.clone(),
            at: revision.at,
            writer: revision.writer.to_string(),
            current,
            expires_at: entry.expires_at,
            owner: entry.owner.as_deref().map(str::to_owned),
        })
    }

    /// The retained versions of `key`, oldest first.
    pub fn history(&self, ns: &str, key: &str, settings: &ContextSettings) -> Result<Vec<Revision>, CoreError> {
        validate_key("context key", key, settings)?;
        let entry = self
            .space_of(ns, key)
            .and_then(|s| s.get(key))
            .ok_or_else(|| CoreError::UnknownContextKey { namespace: ns.to_owned(), key: key.to_owned() })?;
        Ok(entry.history.iter().cloned().collect())
    }

    /// The current value of every key of `ns` under `prefix` (the server's included), in key order.
    pub fn list(&self, ns: &str, prefix: &str, settings: &ContextSettings) -> Result<Vec<Read>, CoreError> {
        validate_prefix(prefix, settings)?;
        let selector = Selector::Prefix(prefix.into());
        let mut out = Vec::new();
        let system = prefix.is_empty() || is_system(prefix);
        let spaces = [Some(&self.system).filter(|_| system), self.spaces.get(ns)];
        for space in spaces.into_iter().flatten() {
            for (key, entry) in space.matching(&selector) {
                let r = entry.current();
                out.push(Read {
                    key: key.to_string(),
                    version: r.version,
                    value: r.value.clone(),
                    at: r.at,
                    writer: r.writer.to_string(),
                    current: r.version,
                    expires_at: entry.expires_at,
                    owner: entry.owner.as_deref().map(str::to_owned),
                });
            }
        }
        Ok(out)
    }

    /// Deletes every key bound to `agent`'s lease in `ns` (it was lost or left).
    pub fn agent_gone(&mut self, ns: &str, agent: &str, settings: &ContextSettings) -> Vec<Applied> {
        let Some(ns_key) = self.spaces.get_key_value(ns).map(|(k, _)| k.clone()) else { return Vec::new() };
        let space = self.spaces.get_mut(ns).expect("present");
        let Some(keys) = space.bound.remove(agent) else { return Vec::new() };
        let mut keys: Vec<Arc<str>> = keys.into_iter().collect();
        // Deterministic order: versions are given out in key order.
        keys.sort_unstable();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some((version, entry)) = space.remove(&key, settings.max_tombstones) {
                out.push(Applied {
                    namespace: ns_key.clone(),
                    key,
                    previous: entry.version(),
                    version,
                    delta: None,
                    deleted: true,
                    expires_at: entry.expires_at,
                });
            }
        }
        out
    }

    /// Deletes `key` of `ns` if its TTL has run out at `now`.
    pub fn expire(&mut self, now: Time, ns: &str, key: &str, settings: &ContextSettings) -> Option<Applied> {
        let ns_key = self.spaces.get_key_value(ns)?.0.clone();
        let space = self.spaces.get_mut(ns)?;
        let entry = space.entries.get(key)?;
        if entry.expires_at.is_none_or(|at| at > now) {
            return None;
        }
        let key: Arc<str> = entry_key(&space.entries, key)?;
        let previous = space.entries.get(&key).map_or(0, Entry::version);
        let (version, _) = space.remove(&key, settings.max_tombstones)?;
        Some(Applied { namespace: ns_key, key, version, previous, delta: None, deleted: true, expires_at: None })
    }

    /// Sets the server-maintained `key` to `value` if it differs; `None` when nothing changed.
    pub fn set_system(&mut self, now: Time, key: &str, value: Value, settings: &ContextSettings) -> Option<Applied> {
        debug_assert!(is_system(key));
        let space = &mut self.system;
        let key: Arc<str> = entry_key(&space.entries, key).unwrap_or_else(|| key.into());
        let previous = match space.entries.get(&key) {
            Some(e) if *e.current().value == value => return None,
            Some(e) => e.version(),
            None => 0,
        };
        space.revision += 1;
        let version = space.revision;
        let delta = (previous > 0).then(|| merge_diff(&space.entries[&key].current().value, &value)).flatten();
        let revision = Revision {
            version,
            value: Arc::new(value),
            patch: delta.clone(),
            at: now,
            writer: "lockstep".into(),
            created: previous == 0,
        };
        let entry = space.entries.entry(key.clone()).or_insert_with(|| Entry {
            history: VecDeque::new(),
            owner: None,
            expires_at: None,
        });
        entry.history.push_back(revision);
        while entry.history.len() > settings.history_depth {
            entry.history.pop_front();
        }
        Some(Applied {
            namespace: SYSTEM_PREFIX.into(),
            key,
            version,
            previous,
            delta,
            deleted: false,
            expires_at: None,
        })
    }

    /// What a watcher resuming from `from` (0: from nothing) must be sent first: the changes of
    /// the keys it covers since then, or snapshots, and whether it must drop its view first.
    pub fn resume(&self, ns: &str, selector: &Selector, from: u64) -> Resumed {
        let mut resumed = Resumed::default();
        let space = if selector.covers_system() { Some(&self.system) } else { self.spaces.get(ns) };
        resumed.watermark = space.map_or(0, |s| s.revision);
        // Nothing here, yet the watcher has seen versions: they were another server's.
        resumed.reset = from > 0 && space.is_none();
        if let Some(space) = space {
            // Deletions the watcher may not know of were forgotten (or it comes from the future:
            // another server, a lost data directory): it must start afresh.
            let fresh = from == 0 || from < space.forgotten || from > space.revision;
            resumed.reset |= from > 0 && fresh;
            for (key, entry) in space.matching(selector) {
                let pending = if fresh {
                    Pending::Snapshot { since: from, gap: from > 0 }
                } else if entry.version() <= from {
                    continue;
                } else {
                    catch_up(entry, from)
                };
                resumed.pending.push((key.clone(), pending));
            }
            if !fresh {
                for (version, key) in space.tombstones.iter().filter(|(v, k)| *v > from && selector.matches(k)) {
                    if !space.entries.contains_key(key) {
                        resumed.pending.push((key.clone(), Pending::Removed { since: from, version: *version }));
                    }
                }
            }
        }
        resumed
    }

    /// Takes back what a store kept: keys with their retained versions, and each namespace's last
    /// version given out. Fails, naming the key, if something kept is not valid any more.
    pub fn restore(
        &mut self,
        images: Vec<crate::durable::ContextKeyImage>,
        revisions: Vec<(String, u64)>,
        settings: &ContextSettings,
    ) -> Result<(), CoreError> {
        for (ns, revision) in revisions {
            let space = self.spaces.entry(ns.as_str().into()).or_default();
            space.revision = space.revision.max(revision);
        }
        for image in images {
            let bad = |e: &dyn std::fmt::Display| {
                CoreError::invalid(
                    "stored data",
                    format!("context key '{}' of namespace '{}': {e}", image.key, image.namespace),
                )
            };
            validate_key("context key", &image.key, settings).map_err(|e| bad(&e))?;
            if image.revisions.is_empty() {
                return Err(bad(&"no version kept"));
            }
            let key: Arc<str> = image.key.as_str().into();
            let space = self.spaces.entry(image.namespace.as_str().into()).or_default();
            let mut history: VecDeque<Revision> = image
                .revisions
                .into_iter()
                .map(|r| Revision {
                    version: r.version,
                    value: Arc::new(r.value),
                    patch: r.patch,
                    at: r.at,
                    writer: r.writer.into(),
                    created: r.created,
                })
                .collect();
            history.make_contiguous().sort_by_key(|r| r.version);
            while history.len() > settings.history_depth {
                history.pop_front();
            }
            let owner: Option<Arc<str>> = image.owner.map(|o| o.into());
            if let Some(o) = &owner {
                space.bound.entry(o.clone()).or_default().insert(key.clone());
            }
            let version = history.back().map_or(0, |r| r.version);
            space.revision = space.revision.max(version);
            space.entries.insert(key, Entry { history, owner, expires_at: image.expires_at });
        }
        // Deletions before the restart are not kept: a watcher resuming from before now starts afresh.
        for space in self.spaces.values_mut() {
            space.forgotten = space.revision;
        }
        Ok(())
    }
}

fn entry_key(entries: &BTreeMap<Arc<str>, Entry>, key: &str) -> Option<Arc<str>> {
    entries.get_key_value(key).map(|(k, _)| k.clone())
}

/// A merge patch taking object `from` to object `to`, when one can (both objects).
fn merge_diff(from: &Value, to: &Value) -> Option<Value> {
    let (Value::Object(a), Value::Object(b)) = (from, to) else {
        return (!to.is_object()).then(|| to.clone());
    };
    let mut patch = serde_json::Map::new();
    for (k, old) in a {
        match b.get(k) {
            None => {
                patch.insert(k.clone(), Value::Null);
            }
            Some(new) if new != old => {
                // Nested objects are replaced whole by their new value only if that is not an
                // object; otherwise recurse.
                let inner = match (old, new) {
                    (Value::Object(_), Value::Object(_)) => merge_diff(old, new)?,
                    (_, Value::Object(_)) => return None,
                    _ => new.clone(),
                };
                patch.insert(k.clone(), inner);
            }
            _ => {}
        }
    }
    for (k, new) in b {
        if !a.contains_key(k) {
            if new.is_null() {
                return None;
            }
            patch.insert(k.clone(), new.clone());
        }
    }
    Some(Value::Object(patch))
}

/// The pending entry that brings a watcher from version `from` to the key's current version.
fn catch_up(entry: &Entry, from: u64) -> Pending {
    let current = entry.version();
    // The version the watcher holds: the newest retained one at or before `from`.
    let Some(base_index) = entry.history.iter().rposition(|r| r.version <= from) else {
        let oldest = entry.history.front().expect("never empty");
        // Created after `from` with nothing older kept: the whole value is news, not a gap.
        return Pending::Snapshot { since: from, gap: !oldest.created };
    };
    let base = entry.history[base_index].version;
    let mut delta: Option<Value> = None;
    for r in entry.history.iter().skip(base_index + 1) {
        let Some(patch) = &r.patch else {
            return Pending::Snapshot { since: from, gap: false };
        };
        delta = match delta {
            None => Some(patch.clone()),
            Some(d) => match state::compose(&d, patch) {
                Some(c) => Some(c),
                None => return Pending::Snapshot { since: from, gap: false },
            },
        };
    }
    match delta {
        Some(delta) => Pending::Delta { since: from, base_version: base, version: current, delta },
        None => Pending::Snapshot { since: from, gap: false },
    }
}

/// What a resumed watch starts with.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The watcher's view must be dropped first (deletions it may not know of were forgotten).
    pub reset: bool,
    pub pending: Vec<(Arc<str>, Pending)>,
    /// The newest version of the namespace (and the server's keys) when the watch began.
    pub watermark: u64,
}

/// One key's change waiting for a watcher; `since` is the last version of the key's changes the
/// watcher is known to have (so resuming from it misses nothing of this key).
#[derive(Clone, Debug, PartialEq)]
pub enum Pending {
    /// Apply `delta` to the key's value at `base_version` to reach `version`.
    Delta { since: u64, base_version: u64, version: u64, delta: Value },
    /// Send the key's whole current value; `gap`: the watcher asked to resume from a version older
    /// than the key's retained history.
    Snapshot { since: u64, gap: bool },
    /// The key was deleted (at `version`).
    Removed { since: u64, version: u64 },
}

impl Pending {
    fn since(&self) -> u64 {
        match self {
            Pending::Delta { since, .. } | Pending::Snapshot { since, .. } | Pending::Removed { since, .. } => *since,
        }
    }
}

/// One key's change as a watcher receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContextChange {
    pub key: Arc<str>,
    /// The version the watcher's value must be at (or after) for `value` to apply as a merge
    /// patch; 0: `value` is the whole value (a snapshot).
    pub base_version: u64,
    pub version: u64,
    /// A merge patch, or the whole value (snapshot); null when deleted.
    pub value: Value,
    pub deleted: bool,
    /// A snapshot sent because the watcher resumed from before the key's retained history.
    pub gap: bool,
}

/// A batch of changes for one watcher.
#[derive(Clone, Debug, PartialEq)]
pub struct ContextBatch {
    /// Drop every key of the view before applying this batch (first batch of a resume that could
    /// not be served as changes).
    pub reset: bool,
    pub changes: Vec<ContextChange>,
    /// Resume from this version to miss nothing sent after this batch.
    pub resume_from: u64,
}

/// What waits to be sent to one context watcher: one pending entry per key, coalesced like agent
/// state (bounded by the keys it covers, so a slow watcher is never cut off, only caught up).
#[derive(Debug)]
pub struct ContextFeed {
    pub ns: Arc<str>,
    pub selector: Selector,
    pending: HashMap<Arc<str>, Pending>,
    order: VecDeque<Arc<str>>,
    reset: bool,
    /// The newest version pushed to (or current at the start of) this feed.
    high: u64,
    /// The shell was told this watcher has frames and has not drained them yet.
    pub notified: bool,
}

impl ContextFeed {
    /// A feed starting as `resumed` says.
    pub fn new(ns: Arc<str>, selector: Selector, resumed: Resumed) -> Self {
        let mut feed = ContextFeed {
            ns,
            selector,
            pending: HashMap::new(),
            order: VecDeque::new(),
            reset: resumed.reset,
            high: resumed.watermark,
            notified: false,
        };
        for (key, pending) in resumed.pending {
            feed.put(key, pending);
        }
        feed
    }

    fn put(&mut self, key: Arc<str>, pending: Pending) {
        if self.pending.insert(key.clone(), pending).is_none() {
            self.order.push_back(key);
        }
    }

    /// Queues a change, coalescing it with what waits for the same key.
    pub fn push(&mut self, change: &Applied) {
        self.high = self.high.max(change.version);
        let next = match (self.pending.get(&change.key), change.deleted, &change.delta) {
            (_, true, _) => {
                let since = self.pending.get(&change.key).map_or(change.version - 1, Pending::since);
                Pending::Removed { since, version: change.version }
            }
            (None, false, Some(delta)) => Pending::Delta {
                since: change.version - 1,
                base_version: change.previous,
                version: change.version,
                delta: delta.clone(),
            },
            (None, false, None) => Pending::Snapshot { since: change.version - 1, gap: false },
            (Some(Pending::Delta { since, base_version, delta: earlier, .. }), false, Some(delta)) => {
                match state::compose(earlier, delta) {
                    Some(delta) => {
                        Pending::Delta { since: *since, base_version: *base_version, version: change.version, delta }
                    }
                    None => Pending::Snapshot { since: *since, gap: false },
                }
            }
            (Some(Pending::Snapshot { since, gap }), false, _) => Pending::Snapshot { since: *since, gap: *gap },
            (Some(p), false, _) => Pending::Snapshot { since: p.since(), gap: false },
        };
        self.put(change.key.clone(), next);
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty() && !self.reset
    }

    /// The newest version this feed has heard of: where a watcher that received everything resumes.
    pub fn high(&self) -> u64 {
        self.high
    }

    /// Keys with a change waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The next batch of at most `max_items` changes and at most `max_bytes` of them (keys and
    /// JSON text, as [`change_bytes`] counts), but at least one: so a batch stays under the
    /// transport's message cap whatever is pending. A coalesced delta larger than `max_bytes` goes
    /// as the value itself. `current` gives a key's (version, value).
    pub fn pop(
        &mut self,
        max_items: usize,
        max_bytes: usize,
        current: impl Fn(&str) -> Option<(u64, Arc<Value>)>,
    ) -> Option<ContextBatch> {
        if self.is_empty() {
            return None;
        }
        let snapshot = |key: &Arc<str>, gap: bool| {
            current(key).map(|(version, value)| ContextChange {
                key: key.clone(),
                base_version: 0,
                version,
                value: (*value).clone(),
                deleted: false,
                gap,
            })
        };
        let mut changes = Vec::with_capacity(self.order.len().min(max_items));
        let mut bytes = 0usize;
        while changes.len() < max_items.max(1) {
            let Some(key) = self.order.pop_front() else { break };
            let Some(pending) = self.pending.remove(&key) else { continue };
            let change = match &pending {
                Pending::Delta { base_version, version, delta, .. } => {
                    let change = ContextChange {
                        key: key.clone(),
                        base_version: *base_version,
                        version: *version,
                        value: delta.clone(),
                        deleted: false,
                        gap: false,
                    };
                    // Deletions inside a coalesced delta leave nulls that can outgrow the value.
                    match change_bytes(&change) > max_bytes {
                        true => snapshot(&key, false).unwrap_or(change),
                        false => change,
                    }
                }
                Pending::Snapshot { gap, .. } => match snapshot(&key, *gap) {
                    Some(change) => change,
                    None => continue,
                },
                Pending::Removed { version, .. } => ContextChange {
                    key: key.clone(),
                    base_version: 0,
                    version: *version,
                    value: Value::Null,
                    deleted: true,
                    gap: false,
                },
            };
            let size = change_bytes(&change);
            if !changes.is_empty() && bytes.saturating_add(size) > max_bytes {
                // The next batch's first: put back as it was.
                self.pending.insert(key.clone(), pending);
                self.order.push_front(key);
                break;
            }
            bytes = bytes.saturating_add(size);
            changes.push(change);
        }
        let resume_from = self.pending.values().map(Pending::since).min().unwrap_or(self.high);
        let reset = std::mem::take(&mut self.reset);
        Some(ContextBatch { reset, changes, resume_from })
    }
}

/// The bytes a change takes in a batch: its key, its JSON text, and a bound for the field tags and
/// numbers around them.
pub fn change_bytes(change: &ContextChange) -> usize {
    change.key.len() + if change.deleted { 0 } else { state::json_len(&change.value) } + 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn settings() -> ContextSettings {
        ContextSettings::default()
    }

    fn ns() -> Arc<str> {
        "ns".into()
    }

    fn client() -> Writer {
        Writer { name: "cli".into(), agent: None }
    }

    fn agent(id: &str) -> Writer {
        Writer { name: id.into(), agent: Some(id.into()) }
    }

    fn w(key: &str, op: Op, expect: Expect) -> Write {
        Write { namespace: "ns".into(), key: key.into(), op, expect, lifetime: Lifetime::Permanent }
    }

    fn set(key: &str, v: Value) -> Write {
        w(key, Op::Set(v.to_string()), Expect::Any)
    }

    fn patch(key: &str, v: Value) -> Write {
        w(key, Op::Patch(v.to_string()), Expect::Any)
    }

    fn apply(c: &mut Context, now: Time, write: &Write) -> Result<Applied, CoreError> {
        c.write(now, &ns(), &client(), write, &settings(), 1024)
    }

    fn value(c: &Context, key: &str) -> Value {
        (*c.read("ns", key, None, &settings()).unwrap().value).clone()
    }

    #[test]
    fn keys_are_dot_separated_names() {
        let s = settings();
        for good in ["a", "workspace.persona", "a-b.c_d.9"] {
            validate_key("k", good, &s).unwrap();
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "é", "a/b"] {
            assert!(validate_key("k", bad, &s).is_err(), "{bad}");
        }
        let long = "a".repeat(s.max_key_bytes + 1);
        let e = validate_key("k", &long, &s).unwrap_err();
        assert!(e.to_string().contains("max_key_bytes"), "{e}");
    }

    #[test]
    fn every_change_takes_the_next_version_of_the_namespace() {
        let mut c = Context::default();
        assert_eq!(apply(&mut c, 1, &set("a", json!({"x": 1}))).unwrap().version, 1);
        assert_eq!(apply(&mut c, 2, &set("b", json!(2))).unwrap().version, 2);
        let p = apply(&mut c, 3, &patch("a", json!({"y": 2}))).unwrap();
        assert_eq!((p.previous, p.version, p.delta), (1, 3, Some(json!({"y": 2}))));
        assert_eq!(value(&c, "a"), json!({"x": 1, "y": 2}));
        let d = apply(&mut c, 4, &w("a", Op::Delete, Expect::Any)).unwrap();
        assert!(d.deleted);
        assert_eq!(d.version, 4);
        // Re-created, the key goes on from the namespace's numbering: versions never repeat.
        assert_eq!(apply(&mut c, 5, &set("a", json!(0))).unwrap().version, 5);
    }

    #[test]
    fn compare_and_set_on_the_version() {
        let mut c = Context::default();
        apply(&mut c, 0, &w("k", Op::Set("1".into()), Expect::Absent)).unwrap();
        let e = apply(&mut c, 0, &w("k", Op::Set("2".into()), Expect::Absent)).unwrap_err();
        assert_eq!(e, CoreError::ContextConflict { key: "k".into(), expected: 0, current: 1 });
        let e = apply(&mut c, 0, &w("k", Op::Set("2".into()), Expect::Version(7))).unwrap_err();
        assert_eq!(e, CoreError::ContextConflict { key: "k".into(), expected: 7, current: 1 });
        assert_eq!(value(&c, "k"), json!(1), "nothing applied");
        assert_eq!(apply(&mut c, 0, &w("k", Op::Patch("{}".into()), Expect::Version(1))).unwrap().version, 2);
        let e = apply(&mut c, 0, &w("gone", Op::Set("1".into()), Expect::Version(3))).unwrap_err();
        assert_eq!(e, CoreError::ContextConflict { key: "gone".into(), expected: 3, current: 0 });
        assert!(matches!(
            apply(&mut c, 0, &w("gone", Op::Delete, Expect::Any)),
            Err(CoreError::UnknownContextKey { .. })
        ));
    }

    #[test]
    fn bad_input_changes_nothing() {
        let mut c = Context::default();
        let s = ContextSettings { max_value_bytes: 64, max_depth: 3, max_keys_per_namespace: 2, ..settings() };
        let write = |c: &mut Context, w: &Write| c.write(0, &ns(), &client(), w, &s, 1024);
        write(&mut c, &set("a", json!({"n": 1}))).unwrap();
        let too_big = set("a", json!("x".repeat(100)));
        assert!(write(&mut c, &too_big).unwrap_err().to_string().contains("max_value_bytes"));
        let too_deep = set("a", json!({"a": {"b": {"c": {"d": 1}}}}));
        assert!(write(&mut c, &too_deep).unwrap_err().to_string().contains("4 levels"));
        // A patch that is small itself but grows the value past the limit.
        write(&mut c, &set("b", json!({"p": "x".repeat(40)}))).unwrap();
        assert!(write(&mut c, &patch("b", json!({"q": "y".repeat(30)}))).is_err());
        assert!(write(&mut c, &w("a", Op::Set("{nope".into()), Expect::Any)).is_err());
        assert!(matches!(write(&mut c, &set("system.health", json!(1))), Err(CoreError::ContextReadOnly { .. })));
        assert!(matches!(write(&mut c, &set("c", json!(1))), Err(CoreError::Limit { .. })));
        assert_eq!(c.space("ns").unwrap().revision(), 2, "no refused write took a version");
        assert_eq!(value(&c, "a"), json!({"n": 1}));
    }

    #[test]
    fn history_is_bounded_and_reads_ask_for_retained_versions() {
        let mut c = Context::default();
        let s = ContextSettings { history_depth: 3, ..settings() };
        for i in 1..=5 {
            c.write(i, &ns(), &client(), &patch("k", json!({ "i": i })), &s, 1024).unwrap();
        }
        let versions: Vec<u64> = c.history("ns", "k", &s).unwrap().iter().map(|r| r.version).collect();
        assert_eq!(versions, [3, 4, 5]);
        assert_eq!(*c.read("ns", "k", Some(4), &s).unwrap().value, json!({"i": 4}));
        assert_eq!(c.read("ns", "k", Some(4), &s).unwrap().current, 5);
        let e = c.read("ns", "k", Some(1), &s).unwrap_err();
        assert_eq!(e, CoreError::UnknownContextVersion { key: "k".into(), version: 1, retained: vec![3, 4, 5] });
    }

    #[test]
    fn lease_bound_keys_go_with_their_writer() {
        let mut c = Context::default();
        let s = settings();
        let mut bound = set("a.x", json!(1));
        bound.lifetime = Lifetime::Lease;
        assert!(c.write(0, &ns(), &client(), &bound, &s, 8).is_err(), "only an agent has a lease");
        c.write(0, &ns(), &agent("w"), &bound, &s, 8).unwrap();
        bound.key = "a.y".into();
        c.write(0, &ns(), &agent("w"), &bound, &s, 8).unwrap();
        c.write(0, &ns(), &agent("w"), &set("a.z", json!(1)), &s, 8).unwrap();
        // Rewritten without a lease by someone else: no longer bound.
        c.write(0, &ns(), &agent("v"), &set("a.y", json!(2)), &s, 8).unwrap();
        let gone = c.agent_gone("ns", "w", &s);
        assert_eq!(gone.iter().map(|a| &*a.key).collect::<Vec<_>>(), ["a.x"]);
        assert!(gone[0].deleted);
        assert!(c.read("ns", "a.x", None, &s).is_err());
        assert!(c.read("ns", "a.y", None, &s).is_ok());
        assert!(c.agent_gone("ns", "w", &s).is_empty());
    }

    #[test]
    fn a_ttl_key_expires_at_its_time_and_not_before() {
        let mut c = Context::default();
        let s = settings();
        let mut ttl = set("t", json!(1));
        ttl.lifetime = Lifetime::TtlMs(100);
        let written = c.write(1000, &ns(), &client(), &ttl, &s, 8).unwrap();
        assert_eq!(c.read("ns", "t", None, &s).unwrap().expires_at, Some(1100));
        assert!(written.expires_at.is_none());
        assert!(c.expire(1099, "ns", "t", &s).is_none());
        let gone = c.expire(1100, "ns", "t", &s).unwrap();
        assert!(gone.deleted);
        assert!(c.read("ns", "t", None, &s).is_err());
        // Rewritten permanent before it expires: the old expiry is reported, to be disarmed.
        c.write(0, &ns(), &client(), &ttl, &s, 8).unwrap();
        let permanent = c.write(1, &ns(), &client(), &set("t", json!(2)), &s, 8).unwrap();
        assert_eq!(permanent.expires_at, Some(100));
        assert!(c.expire(5000, "ns", "t", &s).is_none());
        ttl.lifetime = Lifetime::TtlMs(s.max_ttl_ms + 1);
        assert!(c.write(0, &ns(), &client(), &ttl, &s, 8).is_err());
    }

    #[test]
    fn prefixes_cover_the_key_and_what_is_under_it() {
        let p = Selector::Prefix("a.b".into());
        assert!(p.matches("a.b") && p.matches("a.b.c"));
        assert!(!p.matches("a.bc") && !p.matches("a"));
        assert!(Selector::Prefix("".into()).matches("x"));
        let mut c = Context::default();
        for k in ["a", "a.b", "a.b.c", "a.bc", "b"] {
            apply(&mut c, 0, &set(k, json!(1))).unwrap();
        }
        let keys: Vec<String> = c.list("ns", "a.b", &settings()).unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["a.b", "a.b.c"]);
    }

    fn drain(feed: &mut ContextFeed, c: &Context) -> Vec<ContextBatch> {
        std::iter::from_fn(|| {
            feed.pop(100, usize::MAX, |k| {
                c.space("ns").and_then(|s| s.get(k)).map(|e| (e.version(), e.current().value.clone()))
            })
        })
        .collect()
    }

    #[test]
    fn a_slow_watcher_gets_one_coalesced_delta_per_key() {
        let mut c = Context::default();
        apply(&mut c, 0, &set("k", json!({"a": 1}))).unwrap();
        let mut feed = ContextFeed::new(ns(), Selector::Key("k".into()), c.resume("ns", &Selector::Key("k".into()), 1));
        assert!(feed.is_empty());
        for p in [json!({"b": 2}), json!({"a": null}), json!({"c": {"d": 1}})] {
            feed.push(&apply(&mut c, 0, &patch("k", p)).unwrap());
        }
        let batches = drain(&mut feed, &c);
        assert_eq!(batches.len(), 1);
        let change = &batches[0].changes[0];
        assert_eq!((change.base_version, change.version), (1, 4));
        assert_eq!(change.value, json!({"a": null, "b": 2, "c": {"d": 1}}));
        assert_eq!(batches[0].resume_from, 4);
    }

    #[test]
    fn a_replacement_by_an_object_is_sent_as_a_snapshot() {
        let mut c = Context::default();
        apply(&mut c, 0, &set("k", json!({"a": 1}))).unwrap();
        let sel = Selector::Prefix("".into());
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 1));
        feed.push(&apply(&mut c, 0, &patch("k", json!({"b": 1}))).unwrap());
        feed.push(&apply(&mut c, 0, &set("k", json!({"z": 0}))).unwrap());
        let change = &drain(&mut feed, &c)[0].changes[0];
        assert_eq!((change.base_version, change.version, &change.value), (0, 3, &json!({"z": 0})));
    }

    #[test]
    fn resuming_sends_what_was_missed_or_a_snapshot_past_the_history() {
        let s = ContextSettings { history_depth: 3, ..settings() };
        let mut c = Context::default();
        let write = |c: &mut Context, w: &Write| c.write(0, &ns(), &client(), w, &s, 8).unwrap();
        write(&mut c, &set("p.a", json!({"n": 0}))); // 1
        write(&mut c, &set("p.b", json!(1))); // 2
        write(&mut c, &set("p.gone", json!(1))); // 3
        for i in 1..=4 {
            write(&mut c, &patch("p.a", json!({ "n": i }))); // 4..=7
        }
        write(&mut c, &w("p.gone", Op::Delete, Expect::Any)); // 8
        let sel = Selector::Prefix("p".into());
        // From 5: p.a's history (5, 6, 7) covers it; p.gone's deletion is remembered.
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 5));
        let batch = drain(&mut feed, &c).remove(0);
        assert!(!batch.reset);
        let a = batch.changes.iter().find(|ch| &*ch.key == "p.a").unwrap();
        assert_eq!((a.base_version, a.version, &a.value, a.gap), (5, 7, &json!({"n": 4}), false));
        let gone = batch.changes.iter().find(|ch| &*ch.key == "p.gone").unwrap();
        assert!(gone.deleted);
        assert!(!batch.changes.iter().any(|ch| &*ch.key == "p.b"), "unchanged since 5");
        assert_eq!(batch.resume_from, 8);
        // From 2: p.a's history starts at 5, so it comes whole and the watcher is told.
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 2));
        let batch = drain(&mut feed, &c).remove(0);
        let a = batch.changes.iter().find(|ch| &*ch.key == "p.a").unwrap();
        assert_eq!((a.base_version, a.version, a.gap), (0, 7, true));
        // From the future (another server's numbering): start afresh.
        let feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 99));
        assert!(feed.reset);
    }

    #[test]
    fn forgotten_deletions_make_a_resume_start_afresh() {
        let s = ContextSettings { max_tombstones: 1, ..settings() };
        let mut c = Context::default();
        for k in ["a", "b", "c"] {
            c.write(0, &ns(), &client(), &set(k, json!(1)), &s, 8).unwrap();
        }
        c.write(0, &ns(), &client(), &w("a", Op::Delete, Expect::Any), &s, 8).unwrap(); // 4
        c.write(0, &ns(), &client(), &w("b", Op::Delete, Expect::Any), &s, 8).unwrap(); // 5, evicts 4
        let sel = Selector::Prefix("".into());
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 3));
        let batch = drain(&mut feed, &c).remove(0);
        assert!(batch.reset);
        assert_eq!(batch.changes.iter().map(|ch| &*ch.key).collect::<Vec<_>>(), ["c"]);
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 4));
        let batch = drain(&mut feed, &c).remove(0);
        assert!(!batch.reset);
        assert_eq!(batch.changes.iter().map(|ch| (&*ch.key, ch.deleted)).collect::<Vec<_>>(), [("b", true)]);
    }

    #[test]
    fn the_resume_point_never_passes_a_change_still_waiting() {
        let mut c = Context::default();
        let sel = Selector::Prefix("".into());
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 0));
        feed.push(&apply(&mut c, 0, &set("a", json!(1))).unwrap()); // 1
        feed.push(&apply(&mut c, 0, &set("b", json!(1))).unwrap()); // 2
        feed.push(&apply(&mut c, 0, &set("a", json!(2))).unwrap()); // 3, coalesced into a's place
        let first = feed
            .pop(1, usize::MAX, |k| c.space("ns").unwrap().get(k).map(|e| (e.version(), e.current().value.clone())));
        let first = first.unwrap();
        assert_eq!(first.changes[0].version, 3);
        assert_eq!(first.resume_from, 1, "b (version 2) has not gone yet");
        let second = drain(&mut feed, &c).remove(0);
        assert_eq!(second.resume_from, 3);
    }

    #[test]
    fn a_batch_is_bounded_by_bytes_and_always_carries_one_change() {
        let mut c = Context::default();
        let sel = Selector::Prefix("".into());
        let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 0));
        for k in ["a", "b", "c"] {
            feed.push(&apply(&mut c, 0, &set(k, json!("x".repeat(500)))).unwrap());
        }
        let current = |k: &str| c.space("ns").unwrap().get(k).map(|e| (e.version(), e.current().value.clone()));
        // Room for two changes of ~570 bytes (value, key, framing): one per batch at 1,000.
        let sizes: Vec<usize> = std::iter::from_fn(|| feed.pop(100, 1_000, current)).map(|b| b.changes.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        for k in ["a", "b"] {
            feed.push(&apply(&mut c, 0, &set(k, json!("y".repeat(500)))).unwrap());
        }
        let current = |k: &str| c.space("ns").unwrap().get(k).map(|e| (e.version(), e.current().value.clone()));
        let batch = feed.pop(100, 10, current).expect("a change waits");
        assert_eq!(batch.changes.len(), 1, "a budget below one change still sends it");
        assert_eq!(batch.resume_from, batch.changes[0].version, "b, still waiting, holds the resume point back");
    }

    #[test]
    fn system_keys_change_only_when_their_value_does() {
        let mut c = Context::default();
        let s = settings();
        let first = c.set_system(0, SYSTEM_HEALTH, json!({"a": 1, "b": 2}), &s).unwrap();
        assert_eq!((first.previous, first.delta.clone()), (0, None));
        assert!(c.set_system(1, SYSTEM_HEALTH, json!({"a": 1, "b": 2}), &s).is_none());
        let next = c.set_system(2, SYSTEM_HEALTH, json!({"a": 1, "b": 3}), &s).unwrap();
        assert_eq!(next.delta, Some(json!({"b": 3})));
        // Every namespace reads them.
        assert_eq!(*c.read("any", SYSTEM_HEALTH, None, &s).unwrap().value, json!({"a": 1, "b": 3}));
        assert_eq!(c.list("other", "system", &s).unwrap().len(), 1);
    }

    fn small_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![Just(Value::Null), any::<i8>().prop_map(|i| json!(i)), "[a-c]".prop_map(Value::String)];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop::collection::btree_map("[a-c]", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest! {
        /// Whatever the writes, a watcher that applies what it is sent (deltas on its view,
        /// snapshots replacing it) ends with exactly the keys' values, and a watcher that resumes
        /// from any batch's resume point ends the same.
        #[test]
        fn a_watchers_view_converges(ops in prop::collection::vec((0..3usize, 0..3usize, small_value()), 1..30), cut in 0..30usize) {
            let keys = ["k.a", "k.b", "k.c"];
            let s = ContextSettings { history_depth: 4, ..settings() };
            let mut c = Context::default();
            let sel = Selector::Prefix("k".into());
            let mut feed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, 0));
            let mut view: BTreeMap<String, Value> = BTreeMap::new();
            let mut resume_from = 0;
            let mut later = None;
            for (i, (kind, k, v)) in ops.iter().enumerate() {
                let write = match kind {
                    0 => set(keys[*k], v.clone()),
                    1 => patch(keys[*k], v.clone()),
                    _ => w(keys[*k], Op::Delete, Expect::Any),
                };
                if let Ok(applied) = c.write(0, &ns(), &client(), &write, &s, 8) {
                    feed.push(&applied);
                }
                if i % 3 == 0 {
                    for batch in drain(&mut feed, &c) {
                        apply_batch(&mut view, &batch);
                        resume_from = batch.resume_from;
                    }
                }
                if i == cut {
                    later = Some((view.clone(), resume_from));
                }
            }
            for batch in drain(&mut feed, &c) {
                apply_batch(&mut view, &batch);
            }
            let truth: BTreeMap<String, Value> =
                c.list("ns", "k", &s).unwrap().into_iter().map(|r| (r.key, (*r.value).clone())).collect();
            prop_assert_eq!(&view, &truth);
            if let Some((mut old, from)) = later {
                let mut resumed = ContextFeed::new(ns(), sel.clone(), c.resume("ns", &sel, from));
                for batch in drain(&mut resumed, &c) {
                    apply_batch(&mut old, &batch);
                }
                prop_assert_eq!(&old, &truth);
            }
        }
    }

    fn apply_batch(view: &mut BTreeMap<String, Value>, batch: &ContextBatch) {
        if batch.reset {
            view.clear();
        }
        for ch in &batch.changes {
            if ch.deleted {
                view.remove(&*ch.key);
            } else if ch.base_version == 0 {
                view.insert(ch.key.to_string(), ch.value.clone());
            } else {
                let v = view.entry(ch.key.to_string()).or_insert(Value::Null);
                state::apply(v, &ch.value);
            }
        }
    }
}
