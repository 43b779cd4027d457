//! Trends of one system: rolling p50/p95/p99 of its sync latency and drift, its freshness-SLO
//! attainment over the last hour and the last day, and a direction by a stated rule.
//!
//! * **Quantiles** come from a [`Sketch`]: the DDSketch mapping (a value `v` goes to bin
//!   `ceil(log_γ v)`, γ = (1 + α)/(1 − α)), so every quantile it answers is within a relative
//!   error of [`ALPHA`] (2 %) of a value of the data at that rank. Its store is sparse (only the
//!   bins seen, sorted), which keeps a system's day of trends to a few KiB: the dense store of the
//!   maintained DDSketch crate takes at least 1 KiB per non-empty sketch, some 260 MB for 10,000
//!   systems over a day.
//! * **Windows** are rings of buckets by the time a sync happened: the last hour in 5-minute
//!   buckets, the last day in 1-hour buckets. A window holds the buckets that start within its
//!   length of now, the current partial one included: it covers its length less up to one bucket.
//! * **Freshness-SLO attainment** of a window: the share of its time the system was fresh, from
//!   the time it was registered if that is later (stale time is counted from the moment the
//!   system was due, cadence + tolerance after its last success, until a success arrives).
//! * **Direction** compares the last hour with the last day (see [`direction`]).
//!
//! What is kept survives a restart with the system (see `Systems::restore`): the events taken
//! after the trend was last kept are folded in again from the system's kept events.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::Time;

/// The relative error bound of every quantile a [`Sketch`] answers.
pub const ALPHA: f64 = 0.02;

/// Values below this (in the canonical unit) count as zero.
const MIN_VALUE: f64 = 1e-3;

/// 5 minutes: the buckets of the hour window.
pub const HOUR_BUCKET_MS: Time = 300_000;
/// 1 hour: the buckets of the day window.
pub const DAY_BUCKET_MS: Time = 3_600_000;
/// The hour window.
pub const HOUR_MS: Time = 3_600_000;
/// The day window.
pub const DAY_MS: Time = 86_400_000;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// A quantile sketch with a relative error bound of [`ALPHA`] and a sparse store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    /// (bin, count), sorted by bin.
    bins: Vec<(i16, u32)>,
    zeros: u32,
}

impl Sketch {
    fn key(v: f64) -> i16 {
        // Values are finite, ≥ MIN_VALUE and at most ~1.8e308: the key stays within ±18,000.
        (v.ln() / gamma().ln()).ceil() as i16
    }

    /// The value a bin stands for: within α of every value in it.
    fn value(key: i16) -> f64 {
        let g = gamma();
        2.0 * g.powi(i32::from(key)) / (g + 1.0)
    }

    /// Adds a value (non-negative and finite: the monitor refuses others before).
    pub fn add(&mut self, v: f64) {
        if v.is_nan() || v < MIN_VALUE {
            self.zeros = self.zeros.saturating_add(1);
            return;
        }
        let key = Self::key(v);
        match self.bins.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => self.bins[i].1 = self.bins[i].1.saturating_add(1),
            Err(i) => self.bins.insert(i, (key, 1)),
        }
    }

    /// How many values it holds.
    pub fn count(&self) -> u64 {
        u64::from(self.zeros) + self.bins.iter().map(|(_, c)| u64::from(*c)).sum::<u64>()
    }
}

/// Quantiles of several sketches together.
#[derive(Default)]
struct Merged {
    bins: BTreeMap<i16, u64>,
    zeros: u64,
}

impl Merged {
    fn add(&mut self, s: &Sketch) {
        self.zeros += u64::from(s.zeros);
        for (k, c) in &s.bins {
            *self.bins.entry(*k).or_default() += u64::from(*c);
        }
    }

    fn count(&self) -> u64 {
        self.zeros + self.bins.values().sum::<u64>()
    }

    /// The value at quantile `q` (0..=1): that of rank ⌊q × (n − 1)⌋, within α.
    fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q * (n - 1) as f64).floor() as u64;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (k, c) in &self.bins {
            seen += c;
            if seen > rank {
                return Some(Sketch::value(*k));
            }
        }
        self.bins.keys().next_back().map(|k| Sketch::value(*k))
    }

    fn quantiles(&self) -> Quantiles {
        Quantiles { p50: self.quantile(0.5), p95: self.quantile(0.95), p99: self.quantile(0.99) }
    }
}

/// One bucket of a window's ring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    start: Time,
    latency: Sketch,
    drift: Sketch,
    events: u32,
    /// Time within the bucket the system was stale.
    stale_ms: u64,
}

/// The buckets of one window, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Ring {
    buckets: VecDeque<Bucket>,
}

impl Ring {
    /// The bucket of time `t` (buckets `width` wide), made if missing; `None` when `t` is
    /// before what the ring keeps (`span` before `newest`).
    fn bucket(&mut self, t: Time, width: Time, span: Time, newest: Time) -> Option<&mut Bucket> {
        // Buckets too old for the window go.
        while self.buckets.front().is_some_and(|b| b.start.saturating_add(span) < newest) {
            self.buckets.pop_front();
        }
        let start = t - t % width;
        if start.saturating_add(span) < newest {
            return None;
        }
        let i = match self.buckets.binary_search_by_key(&start, |b| b.start) {
            Ok(i) => i,
            Err(i) => {
                self.buckets.insert(i, Bucket { start, ..Bucket::default() });
                i
            }
        };
        self.buckets.get_mut(i)
    }

    /// The buckets within `span` of `now`.
    fn within(&self, now: Time, span: Time) -> impl Iterator<Item = &Bucket> {
        self.buckets.iter().filter(move |b| b.start.saturating_add(span) >= now)
    }
}

/// p50, p95 and p99 (none without data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// What one window says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    pub window_ms: Time,
    /// Events reported in the window.
    pub events: u64,
    pub latency_ms: Quantiles,
    pub drift_ms: Quantiles,
    /// Share of the window the system was fresh (none for a window of no time yet).
    pub attainment: Option<f64>,
}

/// Which way a system is going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Improving,
    #[default]
    Steady,
    Worsening,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Improving => "improving",
            Direction::Steady => "steady",
            Direction::Worsening => "worsening",
        }
    }
}

/// A system's trends as shown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrendView {
    pub hour: WindowStats,
    pub day: WindowStats,
    pub direction: Direction,
}

/// Fewest events in the last hour for its quantiles to count in the direction.
pub const MIN_EVENTS_FOR_DIRECTION: u64 = 5;
/// A p95 this many times the day's (or more) is worse; its inverse (or less) is better.
pub const WORSE_RATIO: f64 = 1.25;
/// An attainment this much below the day's (or more) is worse; as much above is better.
pub const ATTAINMENT_MARGIN: f64 = 0.05;

/// The direction rule: the last hour against the last day.
///
/// * **worsening** if the hour's attainment is [`ATTAINMENT_MARGIN`] or more below the day's, or,
///   with at least [`MIN_EVENTS_FOR_DIRECTION`] events in the hour, its p95 latency or p95 drift
///   is [`WORSE_RATIO`] times the day's or more;
/// * else **improving** if the attainment is that much above the day's, or (with as many events)
///   a p95 is at most the day's divided by the ratio;
/// * else **steady**.
pub fn direction(hour: &WindowStats, day: &WindowStats) -> Direction {
    let mut worse = false;
    let mut better = false;
    if let (Some(h), Some(d)) = (hour.attainment, day.attainment) {
        worse |= h <= d - ATTAINMENT_MARGIN;
        better |= h >= d + ATTAINMENT_MARGIN;
    }
    if hour.events >= MIN_EVENTS_FOR_DIRECTION {
        for (h, d) in [(hour.latency_ms.p95, day.latency_ms.p95), (hour.drift_ms.p95, day.drift_ms.p95)] {
            if let (Some(h), Some(d)) = (h, d) {
                worse |= h >= d * WORSE_RATIO && h > 0.0;
                better |= h <= d / WORSE_RATIO && d > 0.0;
            }
        }
    }
    match (worse, better) {
        (true, _) => Direction::Worsening,
        (false, true) => Direction::Improving,
        (false, false) => Direction::Steady,
    }
}

/// The trends of one system.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    hour: Ring,
    day: Ring,
    /// Since when it is stale (when it was due), while it is.
    stale_since: Option<Time>,
    /// The newest time seen (events, stale time): what the rings keep is measured from it.
    newest: Time,
    /// The number of the last event folded in.
    pub folded: u64,
    /// `folded` when the trend was last kept.
    pub kept: u64,
}

impl Trend {
    fn each_ring(&mut self, t: Time, f: impl Fn(&mut Bucket)) {
        self.newest = self.newest.max(t);
        let newest = self.newest;
        if let Some(b) = self.hour.bucket(t, HOUR_BUCKET_MS, HOUR_MS, newest) {
            f(b);
        }
        if let Some(b) = self.day.bucket(t, DAY_BUCKET_MS, DAY_MS, newest) {
            f(b);
        }
    }

    /// Folds in event number `seq`, which happened at `at` (its latency and drift in ms).
    pub fn add(&mut self, seq: u64, at: Time, latency_ms: Option<f64>, drift_ms: Option<f64>) {
        self.each_ring(at, |b| {
            b.events = b.events.saturating_add(1);
            if let Some(l) = latency_ms {
                b.latency.add(l);
            }
            if let Some(d) = drift_ms {
                b.drift.add(d);
            }
        });
        self.folded = self.folded.max(seq);
    }

    /// The system went stale; it was due at `since`.
    pub fn went_stale(&mut self, since: Time) {
        self.stale_since.get_or_insert(since);
    }

    /// The system is fresh again at `now`: its stale time is counted into the buckets.
    pub fn went_fresh(&mut self, now: Time) {
        if let Some(since) = self.stale_since.take() {
            self.count_stale(since, now);
        }
    }

    /// Counts `[from, to)` as stale time, bucket by bucket (at most a day of it: older time is
    /// outside every window).
    fn count_stale(&mut self, from: Time, to: Time) {
        let from = from.max(to.saturating_sub(DAY_MS + DAY_BUCKET_MS));
        for (width, span) in [(HOUR_BUCKET_MS, HOUR_MS), (DAY_BUCKET_MS, DAY_MS)] {
            let mut t = from;
            while t < to {
                let end = (t - t % width + width).min(to);
                self.newest = self.newest.max(end);
                let newest = self.newest;
                let ring = if width == HOUR_BUCKET_MS { &mut self.hour } else { &mut self.day };
                if let Some(b) = ring.bucket(t, width, span, newest) {
                    b.stale_ms += end - t;
                }
                t = end;
            }
        }
    }

    fn window(&self, ring: &Ring, span: Time, now: Time, since: Time) -> WindowStats {
        let (mut latency, mut drift) = (Merged::default(), Merged::default());
        let (mut events, mut stale) = (0u64, 0u64);
        for b in ring.within(now, span) {
            latency.add(&b.latency);
            drift.add(&b.drift);
            events += u64::from(b.events);
            stale += b.stale_ms;
        }
        let start = now.saturating_sub(span).max(since);
        if let Some(s) = self.stale_since {
            stale += now.saturating_sub(s.max(start));
        }
        let observed = now.saturating_sub(start);
        let attainment = (observed > 0).then(|| (1.0 - stale as f64 / observed as f64).clamp(0.0, 1.0));
        WindowStats {
            window_ms: span,
            events,
            latency_ms: latency.quantiles(),
            drift_ms: drift.quantiles(),
            attainment,
        }
    }

    /// The trends at `now` of a system registered at `since`.
    pub fn view(&self, now: Time, since: Time) -> TrendView {
        let hour = self.window(&self.hour, HOUR_MS, now, since);
        let day = self.window(&self.day, DAY_MS, now, since);
        let direction = direction(&hour, &day);
        TrendView { hour, day, direction }
    }

    /// Whether enough has changed since it was last kept that it should be kept now: `keep`
    /// events folded in (the events after it are kept one by one and folded in again after a
    /// restart, as long as fewer than the system's kept events came since).
    pub fn due(&self, keep: u64) -> bool {
        self.folded.saturating_sub(self.kept) >= keep.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_are_within_the_relative_error_bound() {
        let mut values: Vec<f64> = (0..5_000).map(|i| 0.5 + ((i * 7919) % 10_007) as f64 * 1.7).collect();
        let mut s = Sketch::default();
        for v in &values {
            s.add(*v);
        }
        values.sort_by(f64::total_cmp);
        let mut m = Merged::default();
        m.add(&s);
        for q in [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let (got, want) = (m.quantile(q).unwrap(), exact(&values, q));
            assert!((got - want).abs() <= ALPHA * want + 1e-9, "q{q}: {got} vs {want}");
        }
        assert!(s.bins.len() < 600, "sparse: {} bins for 5,000 values over four orders", s.bins.len());
    }

    #[test]
    fn zeros_and_empty_sketches() {
        let mut s = Sketch::default();
        let mut m = Merged::default();
        m.add(&s);
        assert_eq!(m.quantile(0.5), None);
        s.add(0.0);
        s.add(0.0);
        s.add(10.0);
        let mut m = Merged::default();
        m.add(&s);
        assert_eq!(m.quantile(0.5), Some(0.0));
        assert!((m.quantile(1.0).unwrap() - 10.0).abs() <= 0.2);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn the_hour_window_forgets_what_the_day_window_keeps() {
        let mut t = Trend::default();
        let t0 = 1_000 * DAY_MS;
        // Ten slow syncs two hours ago, ten fast ones now.
        for i in 0..10 {
            t.add(i + 1, t0 - 2 * HOUR_MS, Some(1_000.0), None);
        }
        for i in 0..10 {
            t.add(i + 11, t0, Some(10.0), None);
        }
        let v = t.view(t0, 0);
        assert_eq!((v.hour.events, v.day.events), (10, 20));
        assert!((v.hour.latency_ms.p99.unwrap() - 10.0).abs() <= 0.2);
        assert!((v.day.latency_ms.p99.unwrap() - 1_000.0).abs() <= 20.0);
        assert_eq!(v.direction, Direction::Improving, "the hour's p95 is far below the day's");
        assert_eq!(t.folded, 20);
    }

    #[test]
    fn attainment_counts_stale_time_from_when_the_system_was_due() {
        let mut t = Trend::default();
        let since = 10 * DAY_MS;
        let now = since + 10 * HOUR_MS;
        // Stale for the last 30 minutes of the first hour, fresh since.
        t.went_stale(since + HOUR_MS - 30 * 60_000);
        t.went_fresh(since + HOUR_MS);
        let v = t.view(now, since);
        assert_eq!(v.hour.attainment, Some(1.0));
        let day = v.day.attainment.unwrap();
        assert!((day - 0.95).abs() < 1e-9, "half an hour of ten: {day}");
        // Stale now, for 15 minutes: it counts up to now, and the hour is worse than the day.
        t.went_stale(now - 15 * 60_000);
        let v = t.view(now, since);
        assert!((v.hour.attainment.unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(v.direction, Direction::Worsening);
    }

    #[test]
    fn a_window_younger_than_its_length_counts_from_the_registration() {
        let t = Trend::default();
        let v = t.view(5_000, 1_000);
        assert_eq!(v.day.attainment, Some(1.0));
        assert_eq!(t.view(1_000, 1_000).day.attainment, None);
        assert_eq!(v.direction, Direction::Steady);
    }

    #[test]
    fn old_buckets_are_dropped_and_a_long_stale_spell_costs_at_most_a_day() {
        let mut t = Trend::default();
        t.went_stale(0);
        t.went_fresh(30 * DAY_MS);
        assert!(
            t.day.buckets.len() <= 26 && t.hour.buckets.len() <= 14,
            "{} {}",
            t.day.buckets.len(),
            t.hour.buckets.len()
        );
        t.add(1, 31 * DAY_MS, Some(5.0), None);
        assert!(t.day.buckets.iter().all(|b| b.start + DAY_MS >= 30 * DAY_MS));
    }

    #[test]
    fn the_direction_rule() {
        let w = |events, p95: f64, attainment| WindowStats {
            events,
            latency_ms: Quantiles { p95: Some(p95), ..Default::default() },
            attainment: Some(attainment),
            ..Default::default()
        };
        assert_eq!(direction(&w(10, 130.0, 1.0), &w(100, 100.0, 1.0)), Direction::Worsening);
        assert_eq!(direction(&w(10, 120.0, 1.0), &w(100, 100.0, 1.0)), Direction::Steady);
        assert_eq!(direction(&w(10, 70.0, 1.0), &w(100, 100.0, 1.0)), Direction::Improving);
        assert_eq!(direction(&w(4, 500.0, 1.0), &w(100, 100.0, 1.0)), Direction::Steady, "too few events");
        assert_eq!(direction(&w(4, 100.0, 0.9), &w(100, 100.0, 0.99)), Direction::Worsening);
        assert_eq!(direction(&w(10, 70.0, 0.5), &w(100, 100.0, 0.99)), Direction::Worsening, "worse wins");
    }

    #[test]
    fn it_is_due_to_be_kept_after_enough_events() {
        let mut t = Trend::default();
        t.add(3, 0, None, None);
        assert!(!t.due(5));
        t.add(5, 0, None, None);
        assert!(t.due(5));
        t.kept = t.folded;
        assert!(!t.due(5));
    }
}
