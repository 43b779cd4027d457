//! Shared context: versioned JSON values under dot-separated keys, per namespace.
//!
//! [`Client::context`](crate::Client::context) reads, writes and watches from anywhere;
//! [`Agent::context`](crate::Agent::context) writes on the agent's session, where a key may be
//! bound to the agent's lease. Every write may compare-and-set on the key's version
//! ([`WriteOptions::expected_version`]; 0 means "must not exist"); a conflict is
//! [`Error::Conflict`](crate::Error::Conflict) carrying the current version.

use std::collections::BTreeMap;

use crate::Channel;
use lockstep_proto::v1;
use lockstep_proto::v1::shared_context_client::SharedContextClient;
use serde_json::Value;

use crate::Error;

/// What a write does: `SetJson`, `PatchJson` or `Delete(true)`.
pub use lockstep_proto::v1::context_write::Op;

/// How a write goes: compare-and-set, and the key's lifetime from then on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `None`: write whatever is there; `Some(0)`: the key must not exist; `Some(v)`: it must be at
    /// version `v`.
    pub expected_version: Option<u64>,
    /// Delete the key when the writing agent is lost or leaves (agents' writes only).
    pub lease: bool,
    /// Delete the key this many milliseconds after the write.
    pub ttl_ms: Option<u64>,
}

impl WriteOptions {
    /// Compare-and-set on `version` (0: must not exist).
    pub fn expect(version: u64) -> Self {
        WriteOptions { expected_version: Some(version), ..Default::default() }
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The key's new version.
    pub version: u64,
    /// Its version before (0: it did not exist).
    pub previous_version: u64,
}

/// A key's value at a version.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub version: u64,
    pub value: Value,
    pub writer: String,
    pub at_ms: u64,
    pub current_version: u64,
    /// The merge patch that made this version (in a history, when one did).
    pub patch: Option<Value>,
}

fn entry(v: v1::ContextValue) -> Result<Entry, Error> {
    let parse = |text: &str| serde_json::from_str(text).map_err(|e| Error::Input(format!("server sent bad JSON: {e}")));
    Ok(Entry {
        value: parse(&v.value_json)?,
        patch: if v.patch_json.is_empty() { None } else { Some(parse(&v.patch_json)?) },
        key: v.key,
        version: v.version,
        writer: v.writer,
        at_ms: v.at_ms,
        current_version: v.current_version,
    })
}

/// The wire form of a write (for raw sessions).
pub fn write_message(key: &str, op: Op, options: &WriteOptions) -> v1::ContextWrite {
    use v1::context_write::Lifetime;
    let lifetime = match (options.lease, options.ttl_ms) {
        (true, _) => Some(Lifetime::Lease(true)),
        (false, Some(ms)) => Some(Lifetime::TtlMs(ms)),
        _ => None,
    };
    v1::ContextWrite { key: key.to_owned(), op: Some(op), expected_version: options.expected_version, lifetime }
}

pub(crate) fn written(w: v1::ContextWritten) -> Written {
    Written { version: w.version, previous_version: w.previous_version }
}

/// Shared context of one namespace, through the `SharedContext` service.
#[derive(Clone)]
pub struct ContextClient {
    pub(crate) grpc: SharedContextClient<Channel>,
    pub(crate) namespace: String,
    /// Kept in the keys' histories as the writer.
    pub(crate) writer: String,
}

impl ContextClient {
    /// The same, writing under another name (kept in the keys' histories).
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    /// The key's current value.
    pub async fn get(&self, key: &str) -> Result<Entry, Error> {
        self.get_version_opt(key, None).await
    }

    /// A retained version of the key.
    pub async fn get_version(&self, key: &str, version: u64) -> Result<Entry, Error> {
        self.get_version_opt(key, Some(version)).await
    }

    async fn get_version_opt(&self, key: &str, version: Option<u64>) -> Result<Entry, Error> {
        let req = v1::ContextGetRequest { namespace: self.namespace.clone(), key: key.to_owned(), version };
        entry(self.grpc.clone().get(req).await?.into_inner())
    }

    /// Every key under `prefix` (empty: all, the server's `system.*` keys included), in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, Error> {
        let values = crate::every_page(|page_token| {
            let mut grpc = self.grpc.clone();
            let req = v1::ContextListRequest {
                namespace: self.namespace.clone(),
                prefix: prefix.to_owned(),
                page_token,
                page_size: 0,
            };
            async move {
                let page = grpc.list(req).await?.into_inner();
                Ok((page.values, page.next_page_token))
            }
        })
        .await?;
        values.into_iter().map(entry).collect()
    }

    /// The key's retained versions, oldest first.
    pub async fn history(&self, key: &str) -> Result<Vec<Entry>, Error> {
        let req = v1::ContextGetRequest { namespace: self.namespace.clone(), key: key.to_owned(), version: None };
        self.grpc.clone().history(req).await?.into_inner().versions.into_iter().map(entry).collect()
    }

    /// Watches one key, from `from_version` (0: its current value first).
    pub async fn watch(&self, key: &str, from_version: u64) -> Result<ContextWatch, Error> {
        self.open_watch(v1::context_watch_request::Target::Key(key.to_owned()), from_version).await
    }

    /// Watches a key and every key under it (empty: every key of the namespace).
    pub async fn watch_prefix(&self, prefix: &str, from_version: u64) -> Result<ContextWatch, Error> {
        self.open_watch(v1::context_watch_request::Target::Prefix(prefix.to_owned()), from_version).await
    }

    async fn open_watch(&self, target: v1::context_watch_request::Target, from: u64) -> Result<ContextWatch, Error> {
        let req =
            v1::ContextWatchRequest { namespace: self.namespace.clone(), target: Some(target), from_version: from };
        let stream = self.grpc.clone().watch(req).await?.into_inner();
        Ok(ContextWatch { stream, view: BTreeMap::new(), resume_from: from })
    }
}

/// Shared context written on an agent's session: the agent is the writer, its namespace the
/// keys', and a key may be bound to its lease ([`WriteOptions::lease`]).
pub struct AgentContext<'a> {
    pub(crate) agent: &'a crate::Agent,
}

impl ContextWrites for AgentContext<'_> {
    async fn write(&self, key: &str, op: Op, options: &WriteOptions) -> Result<Written, Error> {
        self.agent.context_write(write_message(key, op, options)).await.map(written)
    }
}

impl ContextWrites for ContextClient {
    /// A lease needs an agent: use [`crate::Agent::context`].
    async fn write(&self, key: &str, op: Op, options: &WriteOptions) -> Result<Written, Error> {
        let req = v1::ContextWriteRequest {
            namespace: self.namespace.clone(),
            writer: self.writer.clone(),
            write: Some(write_message(key, op, options)),
        };
        Ok(written(self.grpc.clone().write(req).await?.into_inner()))
    }
}

/// Writes to shared context: [`ContextWrites::write`] with any options, and its usual forms.
pub trait ContextWrites: Sync {
    /// Any write (`op`: set, patch or delete), with its options.
    fn write(
        &self,
        key: &str,
        op: Op,
        options: &WriteOptions,
    ) -> impl std::future::Future<Output = Result<Written, Error>> + Send;

    /// Replaces the key's value.
    fn set(&self, key: &str, value: &Value) -> impl std::future::Future<Output = Result<Written, Error>> + Send {
        let op = Op::SetJson(value.to_string());
        async move { self.write(key, op, &WriteOptions::default()).await }
    }

    /// Applies an RFC 7386 merge patch to the key's value (`{}` if absent).
    fn patch(&self, key: &str, patch: &Value) -> impl std::future::Future<Output = Result<Written, Error>> + Send {
        let op = Op::PatchJson(patch.to_string());
        async move { self.write(key, op, &WriteOptions::default()).await }
    }

    /// Replaces the key's value if it is at `expected_version` (0: if it does not exist).
    fn cas(
        &self,
        key: &str,
        expected_version: u64,
        value: &Value,
    ) -> impl std::future::Future<Output = Result<Written, Error>> + Send {
        let op = Op::SetJson(value.to_string());
        async move { self.write(key, op, &WriteOptions::expect(expected_version)).await }
    }

    /// Deletes the key.
    fn delete(&self, key: &str) -> impl std::future::Future<Output = Result<Written, Error>> + Send {
        async move { self.write(key, Op::Delete(true), &WriteOptions::default()).await }
    }
}

/// A context watch: batches of changes, applied to a view of the keys it covers.
pub struct ContextWatch {
    stream: tonic::Streaming<v1::ContextBatch>,
    view: BTreeMap<String, (u64, Value)>,
    resume_from: u64,
}

impl ContextWatch {
    /// The next batch, once applied to [`ContextWatch::view`]; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<v1::ContextBatch, Error>> {
        let batch = match self.stream.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return None,
            Err(status) => return Some(Err(status.into())),
        };
        if let Err(e) = self.apply(&batch) {
            return Some(Err(e));
        }
        Some(Ok(batch))
    }

    fn apply(&mut self, batch: &v1::ContextBatch) -> Result<(), Error> {
        if batch.reset {
            self.view.clear();
        }
        for c in &batch.changes {
            if c.deleted {
                self.view.remove(&c.key);
                continue;
            }
            let value: Value = serde_json::from_str(&c.value_json)
                .map_err(|e| Error::Input(format!("server sent bad JSON for '{}': {e}", c.key)))?;
            if c.base_version == 0 {
                self.view.insert(c.key.clone(), (c.version, value));
            } else {
                let slot = self.view.entry(c.key.clone()).or_insert((0, Value::Null));
                lockstep_core::state::apply(&mut slot.1, &value);
                slot.0 = c.version;
            }
        }
        self.resume_from = batch.resume_from;
        Ok(())
    }

    /// The keys as this watch has them: (version, value).
    pub fn view(&self) -> &BTreeMap<String, (u64, Value)> {
        &self.view
    }

    /// The version to resume from (with [`ContextClient::watch`]'s `from_version`) to miss nothing.
    pub fn resume_from(&self) -> u64 {
        self.resume_from
    }
}
