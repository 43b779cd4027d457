//! The engine's side of event-time streams: publishes feed the tick controllers and latency
//! buffers of their topic; what those emit is published on their output topics (by the
//! controller, as publisher `ticker/<id>` or `buffer/<id>`); idle sources and overdue samples are
//! found on the engine's timers; operators and clients create and remove them as admin actions
//! (audited). The rules are in [`crate::ticker`], [`crate::latency`] and [`crate::streams`].
//!
//! Only agents' publishes feed them, never what a controller or buffer publishes, so no output can
//! loop back into an input.

use std::sync::Arc;

use bytes::Bytes;

use super::{Engine, Timer};
use crate::command::{AuditEntry, AuditOutcome};
use crate::error::CoreError;
use crate::io::{AdminAction, Time};
use crate::streams::{BufferView, EventTimePolicy, StreamKind, TickerView};
use crate::ticker::Event;

type Key = (Arc<str>, Arc<str>);

impl Engine {
    /// Tells the engine the Unix time (ms) at which its clock read 0, so that publishers' event
    /// times can be checked against the server's clock. The shell calls it once, at start.
    pub fn set_clock_origin(&mut self, unix_ms: u64) {
        self.clock_origin_unix_ms = unix_ms;
    }

    /// The change that keeps a controller or buffer as it is now.
    pub(super) fn stream_change(&self, kind: StreamKind, ns: &str, id: &str) -> Option<crate::durable::Change> {
        let declared = self.is_declared(kind, ns, id);
        self.streams.image(kind, ns, id, declared).map(|i| crate::durable::Change::Stream(Box::new(i)))
    }

    /// Whether the settings declare `kind` `id` of `ns`.
    fn is_declared(&self, kind: StreamKind, ns: &str, id: &str) -> bool {
        let same = |namespace: &str, i: &str| crate::name::namespace_or_default(namespace).ok() == Some(ns) && i == id;
        match kind {
            StreamKind::Ticker => self.config.streams.tickers.iter().any(|t| same(&t.namespace, &t.id)),
            StreamKind::Buffer => self.config.streams.buffers.iter().any(|b| same(&b.namespace, &b.id)),
        }
    }

    /// Takes back the kept controllers and buffers.
    pub(super) fn restore_streams(&mut self, images: Vec<crate::streams::StreamImage>) -> Result<(), CoreError> {
        self.streams.restore(images, &self.config.streams, &self.config.limits)
    }

    /// The Unix time (ms) at which the engine's clock read 0.
    pub fn clock_origin(&self) -> u64 {
        self.clock_origin_unix_ms
    }

    /// The server's time as Unix ms.
    fn unix_now(&self, now: Time) -> u64 {
        self.clock_origin_unix_ms.saturating_add(now)
    }

    /// Creates the controllers and buffers the settings declare (checked by `Config::validate`).
    pub(super) fn declare_streams(&mut self) {
        let settings = self.config.streams.clone();
        for spec in settings.tickers.iter().cloned() {
            let _ = self.streams.create_ticker(spec, &settings, &self.config.limits, 0);
        }
        for spec in settings.buffers.iter().cloned() {
            let _ = self.streams.create_buffer(spec, &settings, &self.config.limits);
        }
    }

    /// A publish carrying an event time: checked against the bounds, routed, then taken.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_event(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        publisher: &Arc<str>,
        topic: &str,
        payload: Bytes,
        content_type: &str,
        event_time: u64,
    ) -> Result<(), CoreError> {
        let in_bounds = self.config.streams.check_event_time(event_time, self.unix_now(now));
        if let Err(e) = &in_bounds {
            if self.config.streams.event_time_policy == EventTimePolicy::Refuse {
                return Err(e.clone());
            }
        }
        self.intake_publish(now, ns, publisher, topic, payload.clone(), content_type)?;
        if in_bounds.is_ok() {
            self.streams_ingest(now, ns, publisher, topic, &payload, Some(event_time));
        } else {
            // Flagged: routed as an ordinary message, counted by every controller it was meant for.
            let (tickers, _) = self.streams.takers(ns, topic);
            for k in tickers {
                if let Some(t) = self.streams.ticker_mut(&k) {
                    t.refuse();
                }
            }
        }
        Ok(())
    }

    /// A message was published by an agent: the controllers and buffers of its topic take it, at
    /// its event time or, without one, at the server's time.
    pub(super) fn streams_ingest(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        publisher: &Arc<str>,
        topic: &str,
        payload: &Bytes,
        event_time: Option<u64>,
    ) {
        if self.streams.is_empty() {
            return;
        }
        let time = event_time.unwrap_or_else(|| self.unix_now(now));
        let (tickers, buffers) = self.streams.takers(ns, topic);
        for k in tickers {
            let Some(t) = self.streams.ticker_mut(&k) else { continue };
            let out = t.ingest(now, &Event { topic, publisher, time, payload });
            let (output, deadline) = (t.spec().output.clone(), t.next_deadline());
            self.emit_ticks(&k, &output, out);
            self.arm_stream(Timer::TickerIdle { ns: k.0, id: k.1 }, deadline);
        }
        for k in buffers {
            let Some(b) = self.streams.buffer_mut(&k) else { continue };
            let out = b.sample(now, time, payload).map(|e| (b.topic_of(&e), e));
            let deadline = b.next_deadline();
            if let Some((topic, e)) = out {
                self.emit_stream(&k, "buffer", &topic, e.payload);
            }
            self.arm_stream(Timer::BufferDue { ns: k.0, id: k.1 }, deadline);
        }
    }

    fn arm_stream(&mut self, timer: Timer, at: Option<Time>) {
        match at {
            Some(at) => self.timers.set(timer, at),
            None => self.timers.cancel(&timer),
        }
    }

    fn emit_ticks(&mut self, k: &Key, output: &str, out: Vec<crate::ticker::Emission>) {
        // Ticks closed: where the numbering stands is kept before they go (persist before send).
        if out.iter().any(|e| !e.correction) {
            self.touch_stream(super::Touched::Stream(StreamKind::Ticker, k.0.clone(), k.1.clone()));
        }
        for e in out {
            self.emit_stream(k, "ticker", output, e.payload);
        }
    }

    /// Publishes what a controller or buffer emitted, on its namespace (if anyone is there).
    fn emit_stream(&mut self, (ns, id): &Key, kind: &str, topic: &str, payload: String) {
        if !self.namespaces.contains_key(ns) {
            return;
        }
        let publisher: Arc<str> = format!("{kind}/{id}").into();
        // Within the limits by construction (`streams.max_buffered_bytes` leaves room for a
        // tick's header under the payload limit; a buffer's message is small).
        let _ = self.publish(ns, &publisher, topic, Bytes::from(payload), "application/json");
    }

    /// Records a durable change of a controller or buffer once per turn.
    fn touch_stream(&mut self, touched: super::Touched) {
        let seen = self.changes.as_ref().is_some_and(|log| log.touched.contains(&touched));
        if !seen {
            self.touch(touched);
        }
    }

    /// A controller's idle timer fired.
    pub(super) fn ticker_idle(&mut self, now: Time, k: Key) {
        let Some(t) = self.streams.ticker_mut(&k) else { return };
        let out = t.check_idle(now);
        let (output, deadline) = (t.spec().output.clone(), t.next_deadline());
        self.emit_ticks(&k, &output, out);
        self.arm_stream(Timer::TickerIdle { ns: k.0, id: k.1 }, deadline);
    }

    /// A buffer's provisional value may be due.
    pub(super) fn buffer_due(&mut self, now: Time, k: Key) {
        let Some(b) = self.streams.buffer_mut(&k) else { return };
        let out = b.overdue(now).map(|e| (b.topic_of(&e), e));
        let deadline = b.next_deadline();
        if let Some((topic, e)) = out {
            self.emit_stream(&k, "buffer", &topic, e.payload);
        }
        self.arm_stream(Timer::BufferDue { ns: k.0, id: k.1 }, deadline);
    }

    /// Creates or removes a controller or buffer (an admin action, audited).
    pub(super) fn streams_admin(&mut self, now: Time, actor: &str, action: AdminAction) -> Result<String, CoreError> {
        let settings = &self.config.streams;
        let limits = &self.config.limits;
        let (command, ns, id, result) = match action {
            AdminAction::CreateTicker(spec) => {
                let (ns, id) = (spec.namespace.clone(), spec.id.clone());
                let r = self.streams.create_ticker(spec, settings, limits, 0).map(|k| {
                    self.touch(super::Touched::Stream(StreamKind::Ticker, k.0, k.1));
                    format!("created ticker '{id}'")
                });
                ("create_ticker", ns, id, r)
            }
            AdminAction::CreateBuffer(spec) => {
                let (ns, id) = (spec.namespace.clone(), spec.id.clone());
                let r = self.streams.create_buffer(spec, settings, limits).map(|k| {
                    self.touch(super::Touched::Stream(StreamKind::Buffer, k.0, k.1));
                    format!("created buffer '{id}'")
                });
                ("create_buffer", ns, id, r)
            }
            AdminAction::RemoveStream { kind, namespace, id } => {
                let r = self.streams.remove(kind, &namespace, &id).map(|k| {
                    let timer = match kind {
                        StreamKind::Ticker => Timer::TickerIdle { ns: k.0.clone(), id: k.1.clone() },
                        StreamKind::Buffer => Timer::BufferDue { ns: k.0.clone(), id: k.1.clone() },
                    };
                    self.timers.cancel(&timer);
                    self.touch(super::Touched::StreamRemoved(kind, k.0, k.1));
                    format!("removed {} '{id}'", kind.as_str())
                });
                ("remove_stream", namespace, id, r)
            }
            _ => unreachable!("only stream actions come here"),
        };
        let outcome = if result.is_ok() { AuditOutcome::Ok } else { AuditOutcome::Refused };
        let detail = match &result {
            Ok(d) => d.clone(),
            Err(e) => e.to_string(),
        };
        self.control.record(AuditEntry::new(now, actor, command, outcome).target(&ns, &id).detail(detail));
        result
    }

    // ---------------------------------------------------------------------------------------------
    // Reads

    /// The controllers of `namespace` (empty: `default`), in id order.
    pub fn list_tickers(&self, namespace: &str) -> Result<Vec<TickerView>, CoreError> {
        let ns = crate::name::namespace_or_default(namespace)?;
        Ok(self
            .streams
            .tickers(Some(ns))
            .map(|(_, t)| TickerView { spec: t.spec().clone(), stats: t.stats(), sources: t.sources() })
            .collect())
    }

    /// One controller.
    pub fn ticker_status(&self, namespace: &str, id: &str) -> Result<TickerView, CoreError> {
        let t = self.streams.ticker(namespace, id)?;
        Ok(TickerView { spec: t.spec().clone(), stats: t.stats(), sources: t.sources() })
    }

    /// The buffers of `namespace`.
    pub fn list_buffers(&self, namespace: &str) -> Result<Vec<BufferView>, CoreError> {
        let ns = crate::name::namespace_or_default(namespace)?;
        Ok(self
            .streams
            .buffers(Some(ns))
            .map(|(_, b)| BufferView { spec: b.spec().clone(), stats: b.stats() })
            .collect())
    }

    /// One buffer.
    pub fn buffer_status(&self, namespace: &str, id: &str) -> Result<BufferView, CoreError> {
        let b = self.streams.buffer(namespace, id)?;
        Ok(BufferView { spec: b.spec().clone(), stats: b.stats() })
    }
}
