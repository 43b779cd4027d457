//! Event-time streams: the settings and the table of tick controllers ([`crate::ticker`]) and
//! latency buffers ([`crate::latency`]), their limits, and the bounds on event times.
//!
//! Owns: which controllers and buffers exist (by namespace and id, at most `max_tickers` and
//! `max_buffers` over every namespace), the check of a publisher's event time against the server's
//! clock (`event_time_future_ms`, `event_time_past_ms`: refused or flagged per
//! `event_time_policy`), and the definitions the TOML file declares (`[[streams.tickers]]`,
//! `[[streams.buffers]]`), which exist from the start. The rules of each are in their modules; the
//! engine wires them to publishes and timers (`engine/streams.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::latency::{Buffer, BufferSpec};
use crate::ticker::{Ticker, TickerLimits, TickerSpec};

/// What happens to a publish whose event time lies outside the bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTimePolicy {
    /// The publish is refused (`EVENT_TIME_OUT_OF_RANGE`).
    #[default]
    Refuse,
    /// The message is routed, but no controller or buffer takes it (each counts it as refused).
    Flag,
}

/// Limits and definitions of tick controllers and latency buffers (`[streams]` in the TOML file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// Most tick controllers, over every namespace.
    pub max_tickers: usize,
    /// Most sources (publishers) one controller tracks; beyond, the idle source silent longest
    /// makes room, and an event from a new source is refused when none is idle.
    pub max_sources: usize,
    /// Most events one controller holds in open ticks; beyond, its oldest open tick is emitted
    /// early (`forced`).
    pub max_buffered_events: usize,
    /// Most bytes (of their tick entries) one controller holds; likewise. At most
    /// `limits.max_payload_bytes` less 1 KiB (a tick's header) whatever it says: a tick is one
    /// message.
    pub max_buffered_bytes: usize,
    /// Longest tick period, in milliseconds.
    pub max_period_ms: u64,
    /// Most latency buffers, over every namespace.
    pub max_buffers: usize,
    /// Largest `max_provisional` a buffer may declare.
    pub max_provisional: u32,
    /// How far ahead of the server's clock an event time may be, in milliseconds.
    pub event_time_future_ms: u64,
    /// How far behind the server's clock an event time may be, in milliseconds.
    pub event_time_past_ms: u64,
    /// What happens to an event time outside those bounds.
    pub event_time_policy: EventTimePolicy,
    /// Controllers that exist from the start.
    pub tickers: Vec<TickerSpec>,
    /// Buffers that exist from the start.
    pub buffers: Vec<BufferSpec>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_tickers: 64,
            max_sources: 256,
            max_buffered_events: 100_000,
            max_buffered_bytes: 512 * 1024,
            max_period_ms: 3_600_000,
            max_buffers: 1024,
            max_provisional: 100,
            event_time_future_ms: 60_000,
            event_time_past_ms: 24 * 3_600_000,
            event_time_policy: EventTimePolicy::Refuse,
            tickers: Vec::new(),
            buffers: Vec::new(),
        }
    }
}

/// Room left in a tick's message for its header and the message's envelope.
pub const TICK_HEADER_BYTES: usize = 1024;

impl StreamSettings {
    /// Checks the settings and every declared definition; the server refuses to start otherwise,
    /// naming the definition at fault.
    pub fn validate(&self, limits: &crate::config::Limits) -> Result<(), String> {
        if self.max_sources == 0 || self.max_buffered_events == 0 || self.max_period_ms == 0 {
            return Err("max_sources, max_buffered_events and max_period_ms must be at least 1".into());
        }
        let mut streams = Streams::default();
        for spec in &self.tickers {
            streams.create_ticker(spec.clone(), self, limits, 0).map_err(|e| format!("ticker '{}': {e}", spec.id))?;
        }
        for spec in &self.buffers {
            streams.create_buffer(spec.clone(), self, limits).map_err(|e| format!("buffer '{}': {e}", spec.id))?;
        }
        Ok(())
    }

    /// The bounds on one controller.
    pub fn ticker_limits(&self, limits: &crate::config::Limits) -> TickerLimits {
        TickerLimits {
            max_sources: self.max_sources,
            max_buffered_events: self.max_buffered_events,
            // A tick is one message: its entries leave room for its header under the payload limit.
            max_buffered_bytes: self.max_buffered_bytes.min(limits.max_payload_bytes.saturating_sub(TICK_HEADER_BYTES)),
            max_period_ms: self.max_period_ms,
            max_topic_len: limits.max_topic_len,
        }
    }

    /// Whether `event_time` (ms since the Unix epoch) is within the bounds around `unix_now`.
    pub fn check_event_time(&self, event_time: u64, unix_now: u64) -> Result<(), CoreError> {
        let earliest = unix_now.saturating_sub(self.event_time_past_ms);
        let latest = unix_now.saturating_add(self.event_time_future_ms);
        if event_time < earliest || event_time > latest {
            return Err(CoreError::EventTimeOutOfRange { event_time, server_time: unix_now, earliest, latest });
        }
        Ok(())
    }
}

/// Which kind of stream object an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Ticker,
    Buffer,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Ticker => "ticker",
            StreamKind::Buffer => "buffer",
        }
    }
}

/// A controller as listed: its definition, counters and sources.
#[derive(Clone, Debug, PartialEq)]
pub struct TickerView {
    pub spec: TickerSpec,
    pub stats: crate::ticker::TickerStats,
    pub sources: Vec<crate::ticker::SourceStatus>,
}

/// A buffer as listed: its definition and counters.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferView {
    pub spec: crate::latency::BufferSpec,
    pub stats: crate::latency::BufferStats,
}

/// A controller or buffer as it is kept: its definition, whether the settings declare it, and
/// (controllers) where its numbering stands, so that a restart emits no tick number again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamImage {
    pub kind: StreamKind,
    pub namespace: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<TickerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferSpec>,
    /// Declared in the settings: restored only while they still declare it.
    #[serde(default)]
    pub declared: bool,
    /// Every event time below this is in a closed tick.
    #[serde(default)]
    pub closed_before: u64,
}

type Key = (Arc<str>, Arc<str>);

/// Every controller and buffer, by (namespace, id).
#[derive(Debug, Default)]
pub struct Streams {
    tickers: BTreeMap<Key, Ticker>,
    buffers: BTreeMap<Key, Buffer>,
}

fn key(namespace: &str, id: &str) -> Result<Key, CoreError> {
    let ns = crate::name::namespace_or_default(namespace)?;
    Ok((ns.into(), id.into()))
}

impl Streams {
    /// Whether there is nothing to feed (the publish path skips the streams then).
    pub fn is_empty(&self) -> bool {
        self.tickers.is_empty() && self.buffers.is_empty()
    }

    /// Creates a controller; `closed_before` is where an earlier life of it left off.
    pub fn create_ticker(
        &mut self,
        spec: TickerSpec,
        settings: &StreamSettings,
        limits: &crate::config::Limits,
        closed_before: u64,
    ) -> Result<Key, CoreError> {
        let k = key(&spec.namespace, &spec.id)?;
        if self.tickers.contains_key(&k) {
            return Err(CoreError::StreamExists { kind: "ticker", id: spec.id });
        }
        if self.tickers.len() >= settings.max_tickers {
            return Err(CoreError::Limit {
                what: "tick controllers",
                limit: settings.max_tickers as u64,
                hint: "remove controllers no longer used, or raise streams.max_tickers",
            });
        }
        let ticker = Ticker::new(spec, settings.ticker_limits(limits), closed_before)?;
        self.tickers.insert(k.clone(), ticker);
        Ok(k)
    }

    /// Creates a buffer.
    pub fn create_buffer(
        &mut self,
        spec: BufferSpec,
        settings: &StreamSettings,
        limits: &crate::config::Limits,
    ) -> Result<Key, CoreError> {
        let k = key(&spec.namespace, &spec.id)?;
        let pattern = spec.validate(limits.max_topic_len, settings.max_provisional)?;
        if self.buffers.contains_key(&k) {
            return Err(CoreError::StreamExists { kind: "buffer", id: spec.id });
        }
        if self.buffers.len() >= settings.max_buffers {
            return Err(CoreError::Limit {
                what: "latency buffers",
                limit: settings.max_buffers as u64,
                hint: "remove buffers no longer used, or raise streams.max_buffers",
            });
        }
        self.buffers.insert(k.clone(), Buffer::new(spec, pattern));
        Ok(k)
    }

    /// Removes a controller or buffer.
    pub fn remove(&mut self, kind: StreamKind, namespace: &str, id: &str) -> Result<Key, CoreError> {
        let k = key(namespace, id)?;
        let found = match kind {
            StreamKind::Ticker => self.tickers.remove(&k).is_some(),
            StreamKind::Buffer => self.buffers.remove(&k).is_some(),
        };
        if !found {
            return Err(CoreError::UnknownStream { kind: kind.as_str(), namespace: k.0.to_string(), id: id.into() });
        }
        Ok(k)
    }

    pub fn ticker(&self, namespace: &str, id: &str) -> Result<&Ticker, CoreError> {
        let k = key(namespace, id)?;
        self.tickers.get(&k).ok_or_else(|| CoreError::UnknownStream {
            kind: "ticker",
            namespace: k.0.to_string(),
            id: id.into(),
        })
    }

    pub fn buffer(&self, namespace: &str, id: &str) -> Result<&Buffer, CoreError> {
        let k = key(namespace, id)?;
        self.buffers.get(&k).ok_or_else(|| CoreError::UnknownStream {
            kind: "buffer",
            namespace: k.0.to_string(),
            id: id.into(),
        })
    }

    /// How `kind` `id` of `namespace` is kept, if it exists.
    pub fn image(&self, kind: StreamKind, namespace: &str, id: &str, declared: bool) -> Option<StreamImage> {
        let mut image = StreamImage {
            kind,
            namespace: namespace.into(),
            id: id.into(),
            ticker: None,
            buffer: None,
            declared,
            closed_before: 0,
        };
        match kind {
            StreamKind::Ticker => {
                let t = self.ticker(namespace, id).ok()?;
                image.ticker = Some(t.spec().clone());
                image.closed_before = t.closed_before();
            }
            StreamKind::Buffer => image.buffer = Some(self.buffer(namespace, id).ok()?.spec().clone()),
        }
        Some(image)
    }

    /// Takes back what was kept: controllers and buffers made at run time are made again (those
    /// the settings declared exist already, and are not made again once the settings drop them);
    /// every controller goes on from where its numbering stood.
    pub fn restore(
        &mut self,
        images: Vec<StreamImage>,
        settings: &StreamSettings,
        limits: &crate::config::Limits,
    ) -> Result<(), CoreError> {
        for image in images {
            let k = key(&image.namespace, &image.id)?;
            match (image.kind, image.ticker, image.buffer) {
                (StreamKind::Ticker, Some(spec), _) => match self.tickers.get_mut(&k) {
                    Some(t) => t.resume_from(image.closed_before),
                    None if !image.declared => {
                        self.create_ticker(spec, settings, limits, image.closed_before)?;
                    }
                    None => {}
                },
                (StreamKind::Buffer, _, Some(spec)) if !image.declared && !self.buffers.contains_key(&k) => {
                    self.create_buffer(spec, settings, limits)?;
                }
                (StreamKind::Buffer, _, Some(_)) => {}
                _ => return Err(CoreError::invalid("stored stream", format!("'{}' has no definition", image.id))),
            }
        }
        Ok(())
    }

    pub fn ticker_mut(&mut self, k: &Key) -> Option<&mut Ticker> {
        self.tickers.get_mut(k)
    }

    pub fn buffer_mut(&mut self, k: &Key) -> Option<&mut Buffer> {
        self.buffers.get_mut(k)
    }

    /// The controllers of `namespace` (every namespace when `None`), in id order.
    pub fn tickers<'a>(&'a self, namespace: Option<&'a str>) -> impl Iterator<Item = (&'a Key, &'a Ticker)> + 'a {
        self.tickers.iter().filter(move |(k, _)| namespace.is_none_or(|n| &*k.0 == n))
    }

    /// The buffers of `namespace` (every namespace when `None`), in id order.
    pub fn buffers<'a>(&'a self, namespace: Option<&'a str>) -> impl Iterator<Item = (&'a Key, &'a Buffer)> + 'a {
        self.buffers.iter().filter(move |(k, _)| namespace.is_none_or(|n| &*k.0 == n))
    }

    /// The controllers and buffers of `namespace` that take `topic`.
    pub fn takers(&self, namespace: &str, topic: &str) -> (Vec<Key>, Vec<Key>) {
        let tickers = self.tickers(Some(namespace)).filter(|(_, t)| t.takes(topic)).map(|(k, _)| k.clone()).collect();
        let buffers = self.buffers(Some(namespace)).filter(|(_, b)| b.takes(topic)).map(|(k, _)| k.clone()).collect();
        (tickers, buffers)
    }
}
