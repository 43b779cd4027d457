//! The engine's side of shared context: writes from sessions and from clients, watch streams,
//! lifetimes (lease-bound keys go with their writer, TTLs fire on the engine's timers), the
//! server-maintained `system.*` keys, and what is kept. The rules themselves are in
//! [`crate::context`].

use std::sync::Arc;

use serde_json::json;

use super::{ConnRole, Engine, Timer, Touched};
use crate::breaker::BreakerState;
use crate::context::{self, Applied, ContextFeed, Read, Revision, Selector, Write, Writer, Written};
use crate::error::CoreError;
use crate::health::HealthCounts;
use crate::io::{ConnId, Output, Time};
use crate::name;

impl Engine {
    /// Applies a context write from `writer`, at `now`, and tells watchers.
    pub(super) fn context_write(
        &mut self,
        now: Time,
        ns: &str,
        writer: &Writer,
        write: &Write,
    ) -> Result<Written, CoreError> {
        let ns_key: Arc<str> = self.key(name::namespace_or_default(ns)?);
        let settings = &self.config.context;
        let applied = self.context.write(now, &ns_key, writer, write, settings, self.config.limits.max_namespaces)?;
        let expires_at = match write.lifetime {
            context::Lifetime::TtlMs(ms) if !applied.deleted => Some(now.saturating_add(ms)),
            _ => None,
        };
        let written = Written { version: applied.version, previous: applied.previous, expires_at };
        // Most writes have no TTL and had none: no timer to name.
        let timer = || Timer::ContextExpiry { ns: ns_key.clone(), key: applied.key.clone() };
        match expires_at {
            Some(at) => self.timers.set(timer(), at),
            None if applied.deleted || applied.expires_at.is_some() => self.timers.cancel(&timer()),
            None => {}
        }
        self.context_applied(applied);
        Ok(written)
    }

    /// A change was made: keep it, and queue it for every watcher it concerns.
    fn context_applied(&mut self, applied: Applied) {
        let system = context::is_system(&applied.key);
        if !system {
            let (ns, key) = (applied.namespace.clone(), applied.key.clone());
            self.touch(if applied.deleted {
                Touched::ContextRemoved(ns, key, applied.version)
            } else {
                Touched::ContextRevision(ns, key, applied.version)
            });
        }
        // System keys are read in every namespace: every watcher covering them hears of them.
        let watchers: Vec<ConnId> = if system {
            self.context_watchers.values().flatten().copied().collect()
        } else {
            self.context_watchers.get(&applied.namespace).cloned().unwrap_or_default()
        };
        for conn in watchers {
            let Some(ConnRole::ContextWatcher(feed, _)) = self.conns.get_mut(&conn) else { continue };
            if !feed.selector.matches(&applied.key) || feed.selector.covers_system() != system {
                continue;
            }
            feed.push(&applied);
            if !feed.notified {
                feed.notified = true;
                self.outputs.push_back(Output::Ready(conn));
            }
        }
    }

    /// Opens a context watch on `conn`.
    pub(super) fn watch_context(
        &mut self,
        conn: ConnId,
        namespace: &str,
        selector: Selector,
        from: u64,
    ) -> Result<(), CoreError> {
        if self.conns.contains_key(&conn) {
            return Err(CoreError::invalid("context watch", "this stream already carries a session or a watch"));
        }
        let ns: Arc<str> = self.key(name::namespace_or_default(namespace)?);
        match &selector {
            Selector::Key(k) => context::validate_key("context key", k, &self.config.context)?,
            Selector::Prefix(p) => context::validate_prefix(p, &self.config.context)?,
        }
        let max = self.config.context.max_watchers;
        if self.context_watcher_count >= max {
            return Err(CoreError::Limit {
                what: "context watchers",
                limit: max as u64,
                hint: "close context watches that are no longer read, or raise context.max_watchers",
            });
        }
        let resumed = self.context.resume(&ns, &selector, from);
        let mut feed = ContextFeed::new(ns.clone(), selector, resumed);
        // A watch always begins with a batch, empty or not: it tells the watcher where it stands.
        feed.notified = true;
        self.outputs.push_back(Output::Ready(conn));
        self.context_watchers.entry(ns).or_default().push(conn);
        self.context_watcher_count += 1;
        self.conns.insert(conn, ConnRole::ContextWatcher(Box::new(feed), true));
        Ok(())
    }

    /// The next batch for a context watcher.
    pub(super) fn context_frame(&mut self, conn: ConnId, max_items: usize) -> Option<crate::io::Frame> {
        let max_bytes = self.config.limits.frame_bytes();
        let Some(ConnRole::ContextWatcher(feed, first)) = self.conns.get_mut(&conn) else { return None };
        let context = &self.context;
        let ns = feed.ns.clone();
        let current = |key: &str| {
            let space = if context::is_system(key) { Some(context.system()) } else { context.space(&ns) };
            space.and_then(|s| s.get(key)).map(|e| (e.version(), e.current().value.clone()))
        };
        let batch = match feed.pop(max_items, max_bytes, current) {
            Some(batch) => Some(batch),
            // The first batch goes even when empty: the watcher learns the version to resume from.
            None if *first => {
                Some(crate::context::ContextBatch { reset: false, changes: Vec::new(), resume_from: feed.high() })
            }
            None => None,
        };
        *first = false;
        feed.notified = batch.is_some();
        batch.map(crate::io::Frame::Context)
    }

    /// A context watch stream ended.
    pub(super) fn context_watch_ended(&mut self, conn: ConnId, feed: &ContextFeed) {
        self.context_watcher_count -= 1;
        if let Some(conns) = self.context_watchers.get_mut(&feed.ns) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                self.context_watchers.remove(&feed.ns);
            }
        }
    }

    /// The agent was lost or left: the keys bound to its lease go.
    pub(super) fn context_agent_gone(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        for applied in self.context.agent_gone(ns, agent, &self.config.context) {
            if applied.expires_at.is_some() {
                self.timers.cancel(&Timer::ContextExpiry { ns: ns.clone(), key: applied.key.clone() });
            }
            self.context_applied(applied);
        }
    }

    /// A key's TTL timer fired.
    pub(super) fn context_expired(&mut self, now: Time, ns: &Arc<str>, key: &Arc<str>) {
        if let Some(applied) = self.context.expire(now, ns, key, &self.config.context) {
            self.context_applied(applied);
        }
    }

    /// The facts behind `system.*` may have changed: they are published at the end of the turn,
    /// at most once per `context.system_refresh_ms` (a change within that window waits for the
    /// next change or health sample), so that a burst of registrations costs one pass.
    pub(super) fn system_facts_changed(&mut self) {
        self.system_dirty = true;
    }

    /// At the end of a turn: publishes the facts if they changed and it is time.
    pub(super) fn publish_system_facts(&mut self, now: Time, force: bool) {
        let due =
            self.system_published.is_none_or(|at| now >= at.saturating_add(self.config.context.system_refresh_ms));
        if self.system_dirty && (due || force) {
            self.system_dirty = false;
            self.system_published = Some(now);
            self.refresh_system_facts(now);
        }
    }

    /// Publishes the system's facts as they are at `now` (each key changes only if its value does).
    pub(super) fn refresh_system_facts(&mut self, now: Time) {
        let value = self.system_health(now);
        if let Some(applied) = self.context.set_system(now, context::SYSTEM_HEALTH, value, &self.config.context) {
            self.context_applied(applied);
        }
    }

    /// `system.health`: the seed's fields, from the same assessment as the `health` command.
    fn system_health(&self, now: Time) -> serde_json::Value {
        let mut counts = HealthCounts::default();
        let (mut closed, mut open, mut half_open) = (0u64, 0u64, 0u64);
        for n in self.namespaces.values() {
            for a in n.agents.values().filter(|a| a.is_live()) {
                let mut health = a.health.clone();
                self.observe(now, a, &mut health);
                counts.add(health.report(now, &self.config.health).status);
                match a.breaker.state() {
                    BreakerState::Closed => closed += 1,
                    BreakerState::Open => open += 1,
                    BreakerState::HalfOpen => half_open += 1,
                }
            }
        }
        // Rounded so that the key changes when the share does, not with float noise.
        let score = (counts.score() * 10_000.0).round() / 10_000.0;
        json!({
            "health_score": score,
            "total_agents": counts.total(),
            "healthy_agents": counts.healthy,
            "degraded_agents": counts.degraded,
            "stuck_agents": counts.stuck,
            "unhealthy_agents": counts.unhealthy,
            "breakers_closed": closed,
            "breakers_open": open,
            "breakers_half_open": half_open,
        })
    }

    /// Takes back the kept keys, re-arming their TTLs.
    pub(super) fn restore_context(
        &mut self,
        images: Vec<crate::durable::ContextKeyImage>,
        revisions: Vec<(String, u64)>,
    ) -> Result<(), CoreError> {
        let ttls: Vec<(String, String, Time)> =
            images.iter().filter_map(|i| i.expires_at.map(|at| (i.namespace.clone(), i.key.clone(), at))).collect();
        self.context.restore(images, revisions, &self.config.context)?;
        for (ns, key, at) in ttls {
            self.timers.set(Timer::ContextExpiry { ns: ns.as_str().into(), key: key.as_str().into() }, at);
        }
        Ok(())
    }

    /// The change to keep for a key that took `version`, if it still retains it.
    pub(super) fn context_change(&self, ns: &str, key: &str, version: u64) -> Option<crate::durable::Change> {
        let entry = self.context.space(ns)?.get(key)?;
        let r = entry.history().find(|r| r.version == version)?;
        Some(crate::durable::Change::ContextRevision(Box::new(crate::durable::ContextKeyImage {
            namespace: ns.to_owned(),
            key: key.to_owned(),
            owner: entry.owner.as_deref().map(str::to_owned),
            expires_at: entry.expires_at,
            oldest_retained: entry.oldest(),
            revisions: vec![revision_image(r)],
        })))
    }

    // ---------------------------------------------------------------------------------------------
    // Reads

    /// `key` of `namespace` at `version` (a retained one), or its current value.
    pub fn context_get(&self, namespace: &str, key: &str, version: Option<u64>) -> Result<Read, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        self.context.read(ns, key, version, &self.config.context)
    }

    /// The current value of every key of `namespace` under `prefix` (empty: all), in key order.
    pub fn context_list(&self, namespace: &str, prefix: &str) -> Result<Vec<Read>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        self.context.list(ns, prefix, &self.config.context)
    }

    /// The retained versions of `key`, oldest first.
    pub fn context_history(&self, namespace: &str, key: &str) -> Result<Vec<Revision>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        self.context.history(ns, key, &self.config.context)
    }
}

/// A revision as it is kept.
fn revision_image(r: &Revision) -> crate::durable::ContextRevisionImage {
    crate::durable::ContextRevisionImage {
        version: r.version,
        value: (*r.value).clone(),
        patch: r.patch.clone(),
        at: r.at,
        writer: r.writer.to_string(),
        created: r.created,
    }
}
