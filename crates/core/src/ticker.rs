//! Event-time tick controllers: the rules that turn events published out of order by several
//! sources into ticks emitted in event-time order.
//!
//! A controller ([`Ticker`]) takes the events published on its input topic patterns. Tick `k`
//! holds the events whose event time lies in `[k·period, (k+1)·period)`; its number derives from
//! event time alone, so numbering continues across restarts without repeats. Each source (a
//! publisher) has a watermark: the largest event time it sent, minus the allowed lateness. The
//! controller's watermark is the smallest watermark of its active sources; a tick is emitted, its
//! events in event-time order (then arrival order), once that watermark reaches the tick's end. A
//! source silent for the idle timeout (server time) stops holding the watermark back and is
//! reported idle until it sends again. An event whose tick is already closed is late and follows
//! the controller's [`LatePolicy`]. Sources whose newest event times are further apart than the
//! allowed skew are reported (counted, and visible in [`TickerStats`]).
//!
//! Guarantees: a tick number is emitted at most once (corrections aside, which name the tick they
//! amend); every event taken is emitted exactly once, or counted as dropped; a controller holds at
//! most `max_buffered_events` events and `max_buffered_bytes` bytes of them (beyond, its oldest
//! open tick is emitted early and marked `forced`), so every tick fits one message. Nothing here
//! reads a clock: server time is an argument.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::io::Time;
use crate::topic::Pattern;

/// What happens to an event whose tick was already emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// The event is dropped and counted (`late_dropped`).
    #[default]
    Drop,
    /// The event goes into the next tick to be emitted, marked `late`.
    NextTick,
    /// A correction to the emitted tick is published at once, holding the late event.
    Correction,
}

impl LatePolicy {
    /// The policy named `text` (`drop`, `next_tick`, `correction`).
    pub fn parse(text: &str) -> Result<LatePolicy, CoreError> {
        match text {
            "" | "drop" => Ok(LatePolicy::Drop),
            "next_tick" | "next-tick" => Ok(LatePolicy::NextTick),
            "correction" => Ok(LatePolicy::Correction),
            other => {
                Err(CoreError::invalid("late policy", format!("'{other}' is not one of drop, next_tick, correction")))
            }
        }
    }

    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LatePolicy::Drop => "drop",
            LatePolicy::NextTick => "next_tick",
            LatePolicy::Correction => "correction",
        }
    }
}

fn default_idle_timeout() -> u64 {
    5_000
}

/// A tick controller's definition, from the TOML file (`[[streams.tickers]]`) or made at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickerSpec {
    /// The namespace whose publishes it takes (empty: `default`).
    #[serde(default)]
    pub namespace: String,
    /// The controller's name, unique in its namespace.
    pub id: String,
    /// Topic patterns of the events it takes (`*` one token, `>` the rest).
    pub inputs: Vec<String>,
    /// The topic its ticks are published on (corrections too).
    pub output: String,
    /// Tick length in event time, in milliseconds.
    pub period_ms: u64,
    /// How far behind its newest event a source's watermark stays, in milliseconds.
    #[serde(default)]
    pub lateness_ms: u64,
    /// A source silent this long (server time) stops holding the watermark back, in milliseconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// The largest spread between sources' newest event times before it is reported (0: never).
    #[serde(default)]
    pub max_skew_ms: u64,
    /// What happens to late events.
    #[serde(default)]
    pub late: LatePolicy,
    /// No tick is emitted (unless the buffer is full) before this many sources have been heard
    /// from: a source not heard from yet cannot hold the watermark back (0: no wait).
    #[serde(default)]
    pub min_sources: u32,
}

/// Bounds on controllers, from [`crate::streams::StreamSettings`].
#[derive(Clone, Copy, Debug)]
pub struct TickerLimits {
    pub max_sources: usize,
    pub max_buffered_events: usize,
    pub max_buffered_bytes: usize,
    pub max_period_ms: u64,
    pub max_topic_len: usize,
}

impl TickerSpec {
    /// Checks the definition; the error names the field at fault.
    pub fn validate(&self, limits: &TickerLimits) -> Result<Vec<Pattern>, CoreError> {
        crate::name::validate("ticker id", &self.id)?;
        if self.inputs.is_empty() {
            return Err(CoreError::invalid("ticker inputs", "name at least one topic pattern"));
        }
        if self.inputs.len() > 16 {
            return Err(CoreError::invalid(
                "ticker inputs",
                format!("{} patterns; the limit is 16", self.inputs.len()),
            ));
        }
        let patterns =
            self.inputs.iter().map(|p| Pattern::parse(p, limits.max_topic_len)).collect::<Result<Vec<_>, _>>()?;
        crate::topic::validate_topic(&self.output, limits.max_topic_len)?;
        if patterns.iter().any(|p| p.matches(&self.output)) {
            return Err(CoreError::invalid(
                "ticker output",
                format!(
                    "'{}' matches the controller's own inputs; publish ticks on a topic it does not take",
                    self.output
                ),
            ));
        }
        if self.period_ms == 0 || self.period_ms > limits.max_period_ms {
            return Err(CoreError::invalid(
                "ticker period_ms",
                format!("{} is not between 1 and {} (streams.max_period_ms)", self.period_ms, limits.max_period_ms),
            ));
        }
        if self.lateness_ms > limits.max_period_ms.saturating_mul(16) {
            return Err(CoreError::invalid("ticker lateness_ms", "must be at most 16 times streams.max_period_ms"));
        }
        if self.idle_timeout_ms == 0 {
            return Err(CoreError::invalid("ticker idle_timeout_ms", "must be at least 1"));
        }
        if self.min_sources as usize > limits.max_sources {
            return Err(CoreError::invalid(
                "ticker min_sources",
                format!("{} is over streams.max_sources ({})", self.min_sources, limits.max_sources),
            ));
        }
        Ok(patterns)
    }
}

/// One event held by a controller until its tick is emitted.
#[derive(Clone, Debug)]
struct Held {
    time: u64,
    /// Arrival order: breaks ties between equal event times.
    arrival: u64,
    /// The event's entry in a tick's `events` array, encoded once when it came.
    entry: Box<str>,
    late: bool,
}

/// An event as a controller takes it.
#[derive(Clone, Debug)]
pub struct Event<'a> {
    pub topic: &'a str,
    pub publisher: &'a str,
    /// Event time (ms since the Unix epoch, as the publisher gave it or the server's time).
    pub time: u64,
    pub payload: &'a Bytes,
}

/// A source as it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub publisher: String,
    /// The largest event time it sent.
    pub max_event_time_ms: u64,
    /// Its watermark (`max_event_time_ms - lateness_ms`).
    pub watermark_ms: u64,
    /// When it was last heard from (server time).
    pub last_heard_ms: Time,
    pub idle: bool,
    pub events: u64,
    /// How far its newest event time lies behind the newest of all active sources.
    pub lag_ms: u64,
}

/// What a controller did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TickerStats {
    /// Events taken (late ones included).
    pub events: u64,
    pub ticks_emitted: u64,
    pub corrections: u64,
    pub late_dropped: u64,
    /// Late events put into the next tick.
    pub late_next_tick: u64,
    /// Ticks emitted before the watermark reached their end because the buffer was full.
    pub forced: u64,
    /// Times a source went idle.
    pub idle_reports: u64,
    /// Times the spread between active sources went over `max_skew_ms`.
    pub skew_violations: u64,
    /// The spread between active sources' newest event times now.
    pub skew_ms: u64,
    /// Events refused: outside the event-time bounds, too large for a tick, or from a source over
    /// the source limit.
    pub refused: u64,
    /// Events buffered now, and their bytes.
    pub buffered_events: u64,
    pub buffered_bytes: u64,
    /// Every tick below this one is closed (emitted, or empty when the watermark passed it).
    pub next_tick: u64,
    /// The controller's watermark (`None` while it has no active source).
    pub watermark_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct Source {
    max_time: u64,
    last_heard: Time,
    idle: bool,
    events: u64,
}

/// A message a controller publishes: a tick or a correction, on its output topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emission {
    pub tick: u64,
    pub correction: bool,
    /// The JSON payload.
    pub payload: String,
}

/// One tick controller: its definition, sources, open ticks and counters.
#[derive(Debug)]
pub struct Ticker {
    spec: TickerSpec,
    patterns: Vec<Pattern>,
    limits: TickerLimits,
    sources: BTreeMap<Arc<str>, Source>,
    /// Open ticks by number, each with its events.
    open: BTreeMap<u64, Vec<Held>>,
    /// Events in `open`, and their bytes (kept, not counted on every event).
    held_events: usize,
    held_bytes: usize,
    /// Every event time below this is in a closed tick (a multiple of the period).
    closed_before: u64,
    arrivals: u64,
    stats: TickerStats,
    /// The spread was over the bound at the last event (a violation is counted when it goes over).
    skewed: bool,
}

impl Ticker {
    /// A controller for a checked definition. `closed_before` is where a restarted controller's
    /// earlier life left off (0 for a new one): ticks below it are not emitted again.
    pub fn new(spec: TickerSpec, limits: TickerLimits, closed_before: u64) -> Result<Ticker, CoreError> {
        let patterns = spec.validate(&limits)?;
        let closed_before = closed_before - closed_before % spec.period_ms;
        Ok(Ticker {
            spec,
            patterns,
            limits,
            sources: BTreeMap::new(),
            open: BTreeMap::new(),
            held_events: 0,
            held_bytes: 0,
            closed_before,
            arrivals: 0,
            stats: TickerStats { next_tick: 0, ..Default::default() },
            skewed: false,
        })
    }

    pub fn spec(&self) -> &TickerSpec {
        &self.spec
    }

    /// Whether the controller takes events published on `topic`.
    pub fn takes(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    /// Every event time below this lies in a closed tick (kept so that a restart goes on from it).
    pub fn closed_before(&self) -> u64 {
        self.closed_before
    }

    /// Goes on from where an earlier life of the controller left off (ticks below are closed).
    pub fn resume_from(&mut self, closed_before: u64) {
        self.closed_before = self.closed_before.max(closed_before - closed_before % self.spec.period_ms);
    }

    /// Counts an event refused before it reached the controller (outside the event-time bounds).
    pub fn refuse(&mut self) {
        self.stats.refused += 1;
    }

    /// Takes one event at server time `now`; returns what is to be published.
    pub fn ingest(&mut self, now: Time, event: &Event<'_>) -> Vec<Emission> {
        let period = self.spec.period_ms;
        let entry = entry_json(event);
        if entry.len() > self.limits.max_buffered_bytes {
            self.stats.refused += 1;
            return Vec::new();
        }
        if !self.sources.contains_key(event.publisher) && !self.make_room_for_source() {
            self.stats.refused += 1;
            return Vec::new();
        }
        let source = self.sources.entry(event.publisher.into()).or_insert(Source {
            max_time: event.time,
            last_heard: now,
            idle: false,
            events: 0,
        });
        source.max_time = source.max_time.max(event.time);
        source.last_heard = now;
        source.idle = false;
        source.events += 1;
        self.stats.events += 1;
        self.check_skew();

        let mut out = Vec::new();
        self.arrivals += 1;
        let mut held = Held { time: event.time, arrival: self.arrivals, entry, late: false };
        if event.time < self.closed_before {
            let tick = event.time / period;
            match self.spec.late {
                LatePolicy::Drop => self.stats.late_dropped += 1,
                LatePolicy::Correction => {
                    held.late = true;
                    self.stats.corrections += 1;
                    out.push(self.encode(tick, std::slice::from_ref(&held), true, false));
                }
                LatePolicy::NextTick => {
                    held.late = true;
                    self.stats.late_next_tick += 1;
                    self.hold(self.closed_before / period, held);
                }
            }
        } else {
            self.hold(event.time / period, held);
        }
        self.force_while_full(&mut out);
        self.advance(&mut out);
        out
    }

    /// Sources silent since `now - idle_timeout` go idle; returns the ticks that frees.
    pub fn check_idle(&mut self, now: Time) -> Vec<Emission> {
        let timeout = self.spec.idle_timeout_ms;
        let mut went_idle = false;
        for s in self.sources.values_mut().filter(|s| !s.idle) {
            if now.saturating_sub(s.last_heard) >= timeout {
                s.idle = true;
                went_idle = true;
                self.stats.idle_reports += 1;
            }
        }
        let mut out = Vec::new();
        if went_idle {
            self.check_skew();
            self.advance(&mut out);
        }
        out
    }

    /// When the next active source goes idle, if any.
    pub fn next_deadline(&self) -> Option<Time> {
        self.sources.values().filter(|s| !s.idle).map(|s| s.last_heard.saturating_add(self.spec.idle_timeout_ms)).min()
    }

    /// The controller's watermark: the smallest of its active sources' (`None` if none is active).
    pub fn watermark(&self) -> Option<u64> {
        self.sources.values().filter(|s| !s.idle).map(|s| s.max_time.saturating_sub(self.spec.lateness_ms)).min()
    }

    /// Its counters as they stand.
    pub fn stats(&self) -> TickerStats {
        let mut stats = self.stats.clone();
        stats.buffered_events = self.held_events as u64;
        stats.buffered_bytes = self.held_bytes as u64;
        stats.next_tick = self.closed_before / self.spec.period_ms;
        stats.watermark_ms = self.watermark();
        stats
    }

    /// Its sources, by publisher.
    pub fn sources(&self) -> Vec<SourceStatus> {
        let newest = self.sources.values().filter(|s| !s.idle).map(|s| s.max_time).max().unwrap_or(0);
        self.sources
            .iter()
            .map(|(p, s)| SourceStatus {
                publisher: p.to_string(),
                max_event_time_ms: s.max_time,
                watermark_ms: s.max_time.saturating_sub(self.spec.lateness_ms),
                last_heard_ms: s.last_heard,
                idle: s.idle,
                events: s.events,
                lag_ms: newest.saturating_sub(s.max_time),
            })
            .collect()
    }

    fn hold(&mut self, tick: u64, held: Held) {
        self.held_events += 1;
        self.held_bytes += held.entry.len() + 1;
        self.open.entry(tick).or_default().push(held);
    }

    /// Takes the oldest open tick out of the buffer.
    fn take_oldest(&mut self) -> Option<(u64, Vec<Held>)> {
        let (tick, events) = self.open.pop_first()?;
        self.held_events -= events.len();
        self.held_bytes -= events.iter().map(|h| h.entry.len() + 1).sum::<usize>();
        Some((tick, events))
    }

    /// A new source is about to come: at the limit, the idle source silent longest makes room.
    fn make_room_for_source(&mut self) -> bool {
        if self.sources.len() < self.limits.max_sources {
            return true;
        }
        let oldest = self.sources.iter().filter(|(_, s)| s.idle).min_by_key(|(_, s)| s.last_heard);
        match oldest.map(|(p, _)| p.clone()) {
            Some(p) => {
                self.sources.remove(&p);
                true
            }
            None => false,
        }
    }

    /// Emits the oldest open ticks early while the buffer is over its bounds.
    fn force_while_full(&mut self, out: &mut Vec<Emission>) {
        let period = self.spec.period_ms;
        loop {
            if self.held_events <= self.limits.max_buffered_events && self.held_bytes <= self.limits.max_buffered_bytes
            {
                return;
            }
            let Some((tick, events)) = self.take_oldest() else { return };
            self.stats.forced += 1;
            out.push(self.emit(tick, events, true));
            self.closed_before = self.closed_before.max((tick + 1).saturating_mul(period));
        }
    }

    /// Emits every open tick the watermark has passed.
    fn advance(&mut self, out: &mut Vec<Emission>) {
        if self.sources.len() < self.spec.min_sources as usize {
            return;
        }
        let period = self.spec.period_ms;
        let watermark = self.watermark();
        while let Some((&tick, _)) = self.open.first_key_value() {
            let end = (tick + 1).saturating_mul(period);
            // With no active source nothing holds the watermark back: every open tick goes.
            if watermark.is_some_and(|w| w < end) {
                break;
            }
            let (_, events) = self.take_oldest().expect("an open tick");
            out.push(self.emit(tick, events, false));
            self.closed_before = self.closed_before.max(end);
        }
        if let Some(w) = watermark {
            self.closed_before = self.closed_before.max(w - w % period);
        }
    }

    fn emit(&mut self, tick: u64, mut events: Vec<Held>, forced: bool) -> Emission {
        events.sort_by_key(|h| (h.time, h.arrival));
        self.stats.ticks_emitted += 1;
        self.encode(tick, &events, false, forced)
    }

    fn encode(&self, tick: u64, events: &[Held], correction: bool, forced: bool) -> Emission {
        let period = self.spec.period_ms;
        let mut payload = format!(
            "{{\"ticker\":{},\"tick\":{tick},\"start_ms\":{},\"end_ms\":{},\"correction\":{correction},\"forced\":{forced},\"events\":[",
            serde_json::Value::from(self.spec.id.as_str()),
            tick.saturating_mul(period),
            (tick + 1).saturating_mul(period),
        );
        for (i, h) in events.iter().enumerate() {
            if i > 0 {
                payload.push(',');
            }
            payload.push_str(&h.entry);
            if h.late {
                // Entries end with `}`: the flag goes inside.
                payload.pop();
                payload.push_str(",\"late\":true}");
            }
        }
        payload.push_str("]}");
        Emission { tick, correction, payload }
    }

    /// Counts the spread between active sources' newest event times going over the bound.
    fn check_skew(&mut self) {
        let active = self.sources.values().filter(|s| !s.idle).map(|s| s.max_time);
        let (lo, hi) = active.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let spread = hi.saturating_sub(lo.min(hi));
        self.stats.skew_ms = spread;
        let over = self.spec.max_skew_ms > 0 && spread > self.spec.max_skew_ms;
        if over && !self.skewed {
            self.stats.skew_violations += 1;
        }
        self.skewed = over;
    }
}

/// An event's entry in a tick: its topic, publisher, event time, and payload (as JSON when it is
/// JSON, else as text; bytes that are not UTF-8 are replaced).
fn entry_json(event: &Event<'_>) -> Box<str> {
    let mut entry = serde_json::json!({
        "topic": event.topic,
        "publisher": event.publisher,
        "event_time_ms": event.time,
    });
    match serde_json::from_slice::<serde_json::Value>(event.payload) {
        Ok(value) => entry["payload"] = value,
        Err(_) => entry["text"] = String::from_utf8_lossy(event.payload).into_owned().into(),
    }
    entry.to_string().into_boxed_str()
}

/// The late events and buffered ticks of a decoded tick payload, for tests and clients.
pub fn tick_events(payload: &[u8]) -> VecDeque<(String, u64)> {
    let value: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    value["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| (e["publisher"].as_str().unwrap_or("").to_owned(), e["event_time_ms"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TickerLimits {
        TickerLimits {
            max_sources: 4,
            max_buffered_events: 100,
            max_buffered_bytes: 64 * 1024,
            max_period_ms: 60_000,
            max_topic_len: 256,
        }
    }

    fn spec(late: LatePolicy) -> TickerSpec {
        TickerSpec {
            namespace: String::new(),
            id: "t".into(),
            inputs: vec!["in.>".into()],
            output: "ticks".into(),
            period_ms: 100,
            lateness_ms: 0,
            idle_timeout_ms: 1_000,
            max_skew_ms: 0,
            late,
            min_sources: 0,
        }
    }

    fn ev<'a>(publisher: &'a str, time: u64, payload: &'a Bytes) -> Event<'a> {
        Event { topic: "in.x", publisher, time, payload }
    }

    #[test]
    fn a_definition_is_checked_field_by_field() {
        let mut s = spec(LatePolicy::Drop);
        s.period_ms = 0;
        assert!(s.validate(&limits()).unwrap_err().to_string().contains("period_ms"));
        let mut s = spec(LatePolicy::Drop);
        s.output = "in.ticks".into();
        assert!(s.validate(&limits()).unwrap_err().to_string().contains("own inputs"));
        let mut s = spec(LatePolicy::Drop);
        s.inputs.clear();
        assert!(s.validate(&limits()).unwrap_err().to_string().contains("inputs"));
        assert_eq!(LatePolicy::parse("next_tick").unwrap(), LatePolicy::NextTick);
        assert!(LatePolicy::parse("later").is_err());
    }

    #[test]
    fn a_tick_goes_once_the_watermark_passes_its_end() {
        let mut t = Ticker::new(spec(LatePolicy::Drop), limits(), 0).unwrap();
        let p = Bytes::from_static(b"{\"v\":1}");
        assert!(t.ingest(0, &ev("a", 150, &p)).is_empty());
        assert!(t.ingest(0, &ev("a", 120, &p)).is_empty());
        let out = t.ingest(0, &ev("a", 200, &p));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tick, 1);
        let events: Vec<u64> = tick_events(out[0].payload.as_bytes()).into_iter().map(|e| e.1).collect();
        assert_eq!(events, vec![120, 150]);
        assert_eq!(t.stats().next_tick, 2);
    }

    #[test]
    fn the_buffer_bound_forces_the_oldest_tick_out() {
        let mut l = limits();
        l.max_buffered_events = 2;
        let mut t = Ticker::new(spec(LatePolicy::Drop), l, 0).unwrap();
        let p = Bytes::from_static(b"1");
        t.ingest(0, &ev("a", 10, &p));
        t.ingest(0, &ev("b", 20, &p));
        let out = t.ingest(0, &ev("b", 30, &p));
        assert_eq!(out.len(), 1);
        assert!(out[0].payload.contains("\"forced\":true"));
        assert_eq!(t.stats().forced, 1);
        // The forced tick is closed: an event for it now is late.
        t.ingest(0, &ev("a", 40, &p));
        assert_eq!(t.stats().late_dropped, 1);
    }

    #[test]
    fn nothing_goes_before_the_sources_expected_were_heard_from() {
        let mut s = spec(LatePolicy::Drop);
        s.min_sources = 2;
        let mut t = Ticker::new(s, limits(), 0).unwrap();
        let p = Bytes::from_static(b"1");
        assert!(t.ingest(0, &ev("a", 150, &p)).is_empty());
        assert!(t.ingest(0, &ev("a", 350, &p)).is_empty());
        // b's first event is not late: nothing was closed while it was not heard from.
        let out = t.ingest(0, &ev("b", 20, &p));
        assert!(out.is_empty());
        let out = t.ingest(0, &ev("b", 400, &p));
        assert_eq!(out.iter().map(|e| e.tick).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(t.stats().late_dropped, 0);
    }

    #[test]
    fn a_restarted_controller_does_not_emit_closed_ticks_again() {
        let mut t = Ticker::new(spec(LatePolicy::Drop), limits(), 250).unwrap();
        let p = Bytes::from_static(b"1");
        assert!(t.ingest(0, &ev("a", 150, &p)).is_empty());
        assert_eq!(t.stats().late_dropped, 1);
        assert_eq!(t.stats().next_tick, 2);
    }

    #[test]
    fn the_source_limit_makes_room_only_from_idle_sources() {
        let mut l = limits();
        l.max_sources = 1;
        let mut t = Ticker::new(spec(LatePolicy::Drop), l, 0).unwrap();
        let p = Bytes::from_static(b"1");
        t.ingest(0, &ev("a", 10, &p));
        t.ingest(0, &ev("b", 10, &p));
        assert_eq!(t.stats().refused, 1);
        t.check_idle(1_000);
        t.ingest(1_000, &ev("b", 10, &p));
        assert_eq!(t.sources().len(), 1);
        assert_eq!(t.sources()[0].publisher, "b");
    }
}
