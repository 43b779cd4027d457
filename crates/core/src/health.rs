//! Health: how well each agent is doing, and how the system as a whole is doing over time.
//!
//! [`AgentHealth`] gathers what the engine observes about one agent — delivery outcomes and
//! acknowledgement latencies, its queue, its breaker, its heartbeats and its signs of progress — and
//! [`AgentHealth::assess`] reads them into a [`HealthStatus`] with the [`HealthIssue`]s behind it.
//! Every issue has a severity and the status is the worst of them:
//!
//! | issue | status |
//! | --- | --- |
//! | breaker open | `Unhealthy` |
//! | silent: no heartbeat for longer than `silent_after_ms` | `Unhealthy` |
//! | stuck: deliveries pending and no progress (acknowledgement, state update, publish) for longer than `stuck_after_ms` | `Stuck` |
//! | breaker half-open | `Degraded` |
//! | recent success ratio below `min_success_percent` (once `min_samples` outcomes are known) | `Degraded` |
//! | messages dropped recently | `Degraded` |
//! | queue at least `queue_full_percent` full | `Degraded` |
//! | recent p99 acknowledgement latency above `slow_ack_p99_ms` | `Degraded` |
//! | none of these | `Healthy` |
//!
//! "Recent" figures decay: every `decay_interval_ms` they are halved, so an old failure weighs less
//! and less and a recovered agent becomes healthy again. Lifetime totals are kept beside them.
//!
//! Memory is fixed per agent: counters and a [`LatencyHistogram`] of 77 buckets. The system's
//! health is the share of healthy agents; [`HealthHistory`] keeps the last `history_len` samples of
//! it, one every `sample_interval_ms`, to show the trend.
//!
//! Nothing here reads a clock: every method takes `now`.

use std::collections::VecDeque;
use std::fmt;

use crate::breaker::BreakerState;
use crate::io::Time;

/// The thresholds of the health rules (see the module table).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// An agent with deliveries pending and no progress for longer than this is stuck.
    pub stuck_after_ms: u64,
    /// An agent not heard from for longer than this is unhealthy.
    pub silent_after_ms: u64,
    /// Below this recent success ratio, in percent, an agent is degraded.
    pub min_success_percent: u32,
    /// The success ratio counts only once this many recent outcomes are known.
    pub min_samples: u64,
    /// A queue at least this full, in percent of its capacity, degrades its agent.
    pub queue_full_percent: u32,
    /// A recent p99 acknowledgement latency above this, in milliseconds, degrades its agent.
    pub slow_ack_p99_ms: u64,
    /// Recent figures are halved this often, in milliseconds.
    pub decay_interval_ms: u64,
    /// How often the system's health is sampled into its history, in milliseconds.
    pub sample_interval_ms: u64,
    /// How many samples the history keeps (the oldest goes first).
    pub history_len: usize,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            stuck_after_ms: 30_000,
            silent_after_ms: 10_000,
            min_success_percent: 90,
            min_samples: 10,
            queue_full_percent: 80,
            slow_ack_p99_ms: 1_000,
            decay_interval_ms: 60_000,
            sample_interval_ms: 5_000,
            history_len: 60,
        }
    }
}

impl HealthSettings {
    /// Checks the settings make sense; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("stuck_after_ms", self.stuck_after_ms),
            ("silent_after_ms", self.silent_after_ms),
            ("decay_interval_ms", self.decay_interval_ms),
            ("sample_interval_ms", self.sample_interval_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.min_success_percent > 100 || self.queue_full_percent > 100 {
            return Err("min_success_percent and queue_full_percent must be between 0 and 100".into());
        }
        if self.history_len == 0 || self.history_len > 100_000 {
            return Err("history_len must be between 1 and 100000".into());
        }
        Ok(())
    }
}

/// How an agent is doing, from best to worst (the order is the severity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    Healthy,
    /// Working, but something is off: slow, failing now and then, dropping, or on probation.
    Degraded,
    /// Alive (it heartbeats) but not making progress on what it was sent.
    Stuck,
    /// Isolated by its breaker, or not heard from.
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Stuck => "stuck",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One reason an agent is not healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthIssue {
    BreakerOpen { since: Time },
    Silent { for_ms: u64 },
    Stuck { for_ms: u64, pending: u64 },
    BreakerHalfOpen { since: Time },
    LowSuccessRatio { percent: u32, samples: u64 },
    Dropping { recent: u64 },
    QueueFilling { depth: u64, capacity: u64 },
    SlowAcks { p99_ms: u64 },
}

impl HealthIssue {
    /// The status this issue alone gives an agent.
    pub fn severity(&self) -> HealthStatus {
        match self {
            HealthIssue::BreakerOpen { .. } | HealthIssue::Silent { .. } => HealthStatus::Unhealthy,
            HealthIssue::Stuck { .. } => HealthStatus::Stuck,
            _ => HealthStatus::Degraded,
        }
    }
}

impl fmt::Display for HealthIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthIssue::BreakerOpen { since } => write!(f, "circuit breaker open since {since} ms"),
            HealthIssue::Silent { for_ms } => write!(f, "not heard from for {for_ms} ms"),
            HealthIssue::Stuck { for_ms, pending } => {
                write!(f, "alive but no progress for {for_ms} ms with {pending} deliveries pending")
            }
            HealthIssue::BreakerHalfOpen { since } => write!(f, "circuit breaker probing since {since} ms"),
            HealthIssue::LowSuccessRatio { percent, samples } => {
                write!(f, "only {percent}% of the last ~{samples} deliveries succeeded")
            }
            HealthIssue::Dropping { recent } => write!(f, "~{recent} messages dropped recently (queue overflow)"),
            HealthIssue::QueueFilling { depth, capacity } => write!(f, "queue {depth} of {capacity} full"),
            HealthIssue::SlowAcks { p99_ms } => write!(f, "p99 acknowledgement latency {p99_ms} ms"),
        }
    }
}

/// Values below this many milliseconds have a bucket each.
const EXACT_BELOW: u64 = 4;
/// Buckets per power of two above that; a value is reported at most 25 % above its true value.
const SUB_BUCKETS: u64 = 4;
/// Latencies from this many milliseconds (about 17 minutes) on share the last bucket.
pub const LATENCY_CEILING_MS: u64 = 1 << 20;
const BUCKETS: usize = (EXACT_BELOW + (20 - 2) * SUB_BUCKETS + 1) as usize;

/// A log-scale histogram of latencies in milliseconds: exact below 4 ms, then four buckets per power
/// of two up to [`LATENCY_CEILING_MS`], then one bucket for everything above. Fixed size; a count
/// that would overflow halves every bucket instead, which keeps the percentiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u32; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: [0; BUCKETS] }
    }
}

impl LatencyHistogram {
    fn index(ms: u64) -> usize {
        if ms < EXACT_BELOW {
            return ms as usize;
        }
        if ms >= LATENCY_CEILING_MS {
            return BUCKETS - 1;
        }
        let power = u64::from(63 - ms.leading_zeros()); // 2..=19
        let sub = (ms >> (power - 2)) & (SUB_BUCKETS - 1);
        (EXACT_BELOW + (power - 2) * SUB_BUCKETS + sub) as usize
    }

    /// The largest value bucket `index` holds (for the last bucket: the ceiling, meaning "at least").
    fn upper_bound(index: usize) -> u64 {
        let i = index as u64;
        if i < EXACT_BELOW {
            return i;
        }
        if index == BUCKETS - 1 {
            return LATENCY_CEILING_MS;
        }
        let power = (i - EXACT_BELOW) / SUB_BUCKETS + 2;
        let sub = (i - EXACT_BELOW) % SUB_BUCKETS;
        let width = 1u64 << (power - 2);
        (1u64 << power) + sub * width + width - 1
    }

    pub fn record(&mut self, ms: u64) {
        let i = Self::index(ms);
        if self.buckets[i] == u32::MAX {
            self.halve(1);
        }
        self.buckets[i] += 1;
    }

    /// How many values are counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|&c| u64::from(c)).sum()
    }

    /// The value at or below which a `quantile` (0.0 to 1.0) of the counted values fall, rounded up
    /// to its bucket's upper bound; `None` when nothing is counted.
    pub fn percentile(&self, quantile: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(Self::upper_bound(i));
            }
        }
        Some(LATENCY_CEILING_MS)
    }

    /// Halves every count `times` times (older values weigh less).
    pub fn halve(&mut self, times: u32) {
        for c in &mut self.buckets {
            *c = c.checked_shr(times).unwrap_or(0);
        }
    }
}

/// What the engine knows of an agent's queue when it reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueObservation {
    /// Messages waiting in the queue.
    pub depth: u64,
    /// The queue's capacity.
    pub capacity: u64,
    /// The most messages the queue ever held.
    pub high_water: u64,
    /// Messages dropped since the agent registered (a running total).
    pub dropped: u64,
    /// Deliveries the agent has not acknowledged yet: queued, or sent and unacknowledged.
    pub pending: u64,
}

/// The verdict on one agent and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub status: HealthStatus,
    /// Worst first.
    pub issues: Vec<HealthIssue>,
}

/// Everything known about one agent's health, for the `health` command and the dashboard.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub issues: Vec<HealthIssue>,
    pub deliveries_succeeded: u64,
    pub deliveries_failed: u64,
    /// Lifetime share of successful deliveries (1.0 before any).
    pub success_ratio: f64,
    /// Decayed share of recent successful deliveries; `None` before any.
    pub recent_success_ratio: Option<f64>,
    pub ack_p50_ms: Option<u64>,
    pub ack_p99_ms: Option<u64>,
    pub queue: QueueObservation,
    pub breaker: BreakerState,
    pub breaker_since: Time,
    pub last_heartbeat: Time,
    pub last_progress: Time,
}

/// The health figures of one agent.
#[derive(Clone, Debug)]
pub struct AgentHealth {
    decay_interval_ms: u64,
    /// Recent figures are decayed up to this time (a multiple of the interval after creation).
    decayed_to: Time,
    succeeded: u64,
    failed: u64,
    recent_succeeded: u64,
    recent_failed: u64,
    recent_dropped: u64,
    latency: LatencyHistogram,
    queue: QueueObservation,
    /// Since when deliveries have been pending without interruption.
    pending_since: Option<Time>,
    breaker: BreakerState,
    breaker_since: Time,
    last_heartbeat: Time,
    last_progress: Time,
}

impl AgentHealth {
    /// A new agent registered at `now` (which counts as a heartbeat and as progress). Only
    /// `settings.decay_interval_ms` is kept; the thresholds are read when assessing.
    pub fn new(now: Time, settings: &HealthSettings) -> Self {
        AgentHealth {
            decay_interval_ms: settings.decay_interval_ms.max(1),
            decayed_to: now,
            succeeded: 0,
            failed: 0,
            recent_succeeded: 0,
            recent_failed: 0,
            recent_dropped: 0,
            latency: LatencyHistogram::default(),
            queue: QueueObservation::default(),
            pending_since: None,
            breaker: BreakerState::Closed,
            breaker_since: now,
            last_heartbeat: now,
            last_progress: now,
        }
    }

    /// Any sign of life from the agent.
    pub fn heartbeat(&mut self, now: Time) {
        self.last_heartbeat = self.last_heartbeat.max(now);
    }

    /// The agent did something useful: updated its state or published. (Acknowledgements count
    /// through [`AgentHealth::delivery_succeeded`].)
    pub fn progress(&mut self, now: Time) {
        self.heartbeat(now);
        self.last_progress = self.last_progress.max(now);
    }

    /// A delivery was acknowledged `latency_ms` after it was sent.
    pub fn delivery_succeeded(&mut self, now: Time, latency_ms: u64) {
        self.decay(now);
        self.succeeded += 1;
        self.recent_succeeded += 1;
        self.latency.record(latency_ms);
        self.progress(now);
    }

    /// A delivery failed (not acknowledged in time, or the session ended with it outstanding).
    pub fn delivery_failed(&mut self, now: Time) {
        self.decay(now);
        self.failed += 1;
        self.recent_failed += 1;
    }

    /// The agent's queue as the engine sees it at `now`.
    pub fn observe_queue(&mut self, now: Time, queue: QueueObservation) {
        self.decay(now);
        self.recent_dropped += queue.dropped.saturating_sub(self.queue.dropped);
        self.pending_since = match (queue.pending, self.pending_since) {
            (0, _) => None,
            (_, None) => Some(now),
            (_, since) => since,
        };
        self.queue = queue;
    }

    /// The agent's breaker entered `state` at `since`.
    pub fn observe_breaker(&mut self, state: BreakerState, since: Time) {
        self.breaker = state;
        self.breaker_since = since;
    }

    pub fn last_heartbeat(&self) -> Time {
        self.last_heartbeat
    }

    pub fn last_progress(&self) -> Time {
        self.last_progress
    }

    /// Halvings of the recent figures due at `now` and not yet applied.
    fn pending_halvings(&self, now: Time) -> u64 {
        now.saturating_sub(self.decayed_to) / self.decay_interval_ms
    }

    fn decay(&mut self, now: Time) {
        let periods = self.pending_halvings(now);
        if periods == 0 {
            return;
        }
        let times = periods.min(64) as u32;
        for value in [&mut self.recent_succeeded, &mut self.recent_failed, &mut self.recent_dropped] {
            *value = value.checked_shr(times).unwrap_or(0);
        }
        self.latency.halve(times);
        self.decayed_to += periods * self.decay_interval_ms;
    }

    /// The recent figures as they stand at `now` (decay applied without changing `self`).
    fn recent(&self, now: Time) -> (u64, u64, u64, LatencyHistogram) {
        let times = self.pending_halvings(now).min(64) as u32;
        let shr = |v: u64| v.checked_shr(times).unwrap_or(0);
        let mut latency = self.latency.clone();
        latency.halve(times);
        (shr(self.recent_succeeded), shr(self.recent_failed), shr(self.recent_dropped), latency)
    }

    /// Applies the rules of the module table at `now`.
    pub fn assess(&self, now: Time, settings: &HealthSettings) -> Assessment {
        let (ok, failed, dropped, latency) = self.recent(now);
        let mut issues = Vec::new();
        match self.breaker {
            BreakerState::Open => issues.push(HealthIssue::BreakerOpen { since: self.breaker_since }),
            BreakerState::HalfOpen => issues.push(HealthIssue::BreakerHalfOpen { since: self.breaker_since }),
            BreakerState::Closed => {}
        }
        let silent_for = now.saturating_sub(self.last_heartbeat);
        if silent_for > settings.silent_after_ms {
            issues.push(HealthIssue::Silent { for_ms: silent_for });
        }
        if let Some(pending_since) = self.pending_since {
            // Progress before the deliveries arrived says nothing about them.
            let for_ms = now.saturating_sub(pending_since.max(self.last_progress));
            if for_ms > settings.stuck_after_ms {
                issues.push(HealthIssue::Stuck { for_ms, pending: self.queue.pending });
            }
        }
        let samples = ok + failed;
        if samples > 0 && samples >= settings.min_samples {
            let percent = (ok * 100 / samples) as u32;
            if percent < settings.min_success_percent {
                issues.push(HealthIssue::LowSuccessRatio { percent, samples });
            }
        }
        if dropped > 0 {
            issues.push(HealthIssue::Dropping { recent: dropped });
        }
        let (depth, capacity) = (self.queue.depth, self.queue.capacity);
        if capacity > 0 && u128::from(depth) * 100 >= u128::from(capacity) * u128::from(settings.queue_full_percent) {
            issues.push(HealthIssue::QueueFilling { depth, capacity });
        }
        if let Some(p99_ms) = latency.percentile(0.99).filter(|&p| p > settings.slow_ack_p99_ms) {
            issues.push(HealthIssue::SlowAcks { p99_ms });
        }
        issues.sort_by_key(|i| std::cmp::Reverse(i.severity()));
        let status = issues.first().map_or(HealthStatus::Healthy, HealthIssue::severity);
        Assessment { status, issues }
    }

    /// The status alone.
    pub fn status(&self, now: Time, settings: &HealthSettings) -> HealthStatus {
        self.assess(now, settings).status
    }

    /// Everything known, with the verdict, at `now`.
    pub fn report(&self, now: Time, settings: &HealthSettings) -> HealthReport {
        let Assessment { status, issues } = self.assess(now, settings);
        let (ok, failed, _, latency) = self.recent(now);
        let total = self.succeeded + self.failed;
        HealthReport {
            status,
            issues,
            deliveries_succeeded: self.succeeded,
            deliveries_failed: self.failed,
            success_ratio: if total == 0 { 1.0 } else { self.succeeded as f64 / total as f64 },
            recent_success_ratio: (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64),
            ack_p50_ms: latency.percentile(0.5),
            ack_p99_ms: latency.percentile(0.99),
            queue: self.queue,
            breaker: self.breaker,
            breaker_since: self.breaker_since,
            last_heartbeat: self.last_heartbeat,
            last_progress: self.last_progress,
        }
    }
}

/// How many agents are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthCounts {
    pub healthy: u64,
    pub degraded: u64,
    pub stuck: u64,
    pub unhealthy: u64,
}

impl HealthCounts {
    pub fn add(&mut self, status: HealthStatus) {
        match status {
            HealthStatus::Healthy => self.healthy += 1,
            HealthStatus::Degraded => self.degraded += 1,
            HealthStatus::Stuck => self.stuck += 1,
            HealthStatus::Unhealthy => self.unhealthy += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.healthy + self.degraded + self.stuck + self.unhealthy
    }

    /// The system's health: healthy agents / all agents (1.0 with no agents: nothing is wrong).
    pub fn score(&self) -> f64 {
        match self.total() {
            0 => 1.0,
            total => self.healthy as f64 / total as f64,
        }
    }
}

impl FromIterator<HealthStatus> for HealthCounts {
    fn from_iter<I: IntoIterator<Item = HealthStatus>>(statuses: I) -> Self {
        let mut counts = HealthCounts::default();
        for status in statuses {
            counts.add(status);
        }
        counts
    }
}

/// The system's health at one time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSample {
    pub at: Time,
    pub counts: HealthCounts,
}

impl HealthSample {
    pub fn score(&self) -> f64 {
        self.counts.score()
    }
}

/// The last `history_len` samples of the system's health, one per `sample_interval_ms`.
#[derive(Clone, Debug)]
pub struct HealthHistory {
    interval_ms: u64,
    capacity: usize,
    samples: VecDeque<HealthSample>,
    next_at: Time,
}

impl HealthHistory {
    /// An empty history whose first sample is due at `now`.
    pub fn new(now: Time, settings: &HealthSettings) -> Self {
        HealthHistory {
            interval_ms: settings.sample_interval_ms.max(1),
            capacity: settings.history_len.max(1),
            samples: VecDeque::new(),
            next_at: now,
        }
    }

    /// When the next sample is due; the engine wakes then to count its agents' statuses.
    pub fn next_deadline(&self) -> Time {
        self.next_at
    }

    /// Records `counts` if a sample is due at `now` (at most one per call; samples stay on the
    /// interval's grid even when the engine is woken late). Returns whether it was recorded.
    pub fn sample(&mut self, now: Time, counts: HealthCounts) -> bool {
        if now < self.next_at {
            return false;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(HealthSample { at: now, counts });
        let missed = (now - self.next_at) / self.interval_ms;
        self.next_at += (missed + 1) * self.interval_ms;
        true
    }

    /// Oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &HealthSample> {
        self.samples.iter()
    }

    pub fn latest(&self) -> Option<&HealthSample> {
        self.samples.back()
    }

    /// The change of the score over the history (latest − oldest): above 0 improving, below 0
    /// worsening; `None` with fewer than two samples.
    pub fn trend(&self) -> Option<f64> {
        match (self.samples.front(), self.samples.back()) {
            (Some(first), Some(last)) if self.samples.len() > 1 => Some(last.score() - first.score()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSettings {
        HealthSettings::default()
    }

    fn status(h: &AgentHealth, now: Time) -> HealthStatus {
        h.status(now, &settings())
    }

    /// An agent alive at `now` (so that silence does not mask the rule under test).
    fn alive(h: &mut AgentHealth, now: Time) -> &mut AgentHealth {
        h.heartbeat(now);
        h
    }

    #[test]
    fn a_new_agent_is_healthy() {
        let h = AgentHealth::new(0, &settings());
        let r = h.report(0, &settings());
        assert_eq!(r.status, HealthStatus::Healthy);
        assert!(r.issues.is_empty());
        assert_eq!((r.success_ratio, r.recent_success_ratio, r.ack_p99_ms), (1.0, None, None));
        settings().validate().unwrap();
        assert!(HealthSettings { history_len: 0, ..settings() }.validate().is_err());
        assert!(HealthSettings { stuck_after_ms: 0, ..settings() }.validate().is_err());
        assert!(HealthSettings { min_success_percent: 101, ..settings() }.validate().is_err());
    }

    #[test]
    fn an_open_breaker_is_unhealthy_and_half_open_is_degraded() {
        let mut h = AgentHealth::new(0, &settings());
        h.observe_breaker(BreakerState::Open, 5);
        let a = h.assess(10, &settings());
        assert_eq!(a.status, HealthStatus::Unhealthy);
        assert_eq!(a.issues, vec![HealthIssue::BreakerOpen { since: 5 }]);
        h.observe_breaker(BreakerState::HalfOpen, 20);
        assert_eq!(status(&h, 21), HealthStatus::Degraded);
        h.observe_breaker(BreakerState::Closed, 30);
        assert_eq!(status(&h, 31), HealthStatus::Healthy);
    }

    #[test]
    fn silence_is_unhealthy() {
        let mut h = AgentHealth::new(0, &settings());
        assert_eq!(status(&h, 10_000), HealthStatus::Healthy, "exactly at the limit is still fine");
        let a = h.assess(10_001, &settings());
        assert_eq!((a.status, a.issues), (HealthStatus::Unhealthy, vec![HealthIssue::Silent { for_ms: 10_001 }]));
        h.heartbeat(10_001);
        assert_eq!(status(&h, 10_002), HealthStatus::Healthy);
    }

    #[test]
    fn heartbeating_without_progress_while_deliveries_wait_is_stuck() {
        let mut h = AgentHealth::new(0, &settings());
        // Long idle with nothing pending is fine...
        alive(&mut h, 100_000);
        assert_eq!(status(&h, 100_000), HealthStatus::Healthy);
        // ...and the stuck clock starts when deliveries start waiting, not at the last progress.
        h.observe_queue(100_000, QueueObservation { depth: 3, capacity: 100, pending: 3, ..Default::default() });
        alive(&mut h, 130_000);
        assert_eq!(status(&h, 130_000), HealthStatus::Healthy);
        alive(&mut h, 130_001);
        let a = h.assess(130_001, &settings());
        assert_eq!(a.status, HealthStatus::Stuck);
        assert_eq!(a.issues, vec![HealthIssue::Stuck { for_ms: 30_001, pending: 3 }]);
        // An acknowledgement is progress.
        h.delivery_succeeded(130_002, 5);
        assert_eq!(status(&h, 130_002), HealthStatus::Healthy);
        // So are a state update or a publish.
        alive(&mut h, 170_000);
        assert_eq!(status(&h, 170_000), HealthStatus::Stuck);
        h.progress(170_001);
        assert_eq!(status(&h, 170_001), HealthStatus::Healthy);
        // Nothing pending any more: not stuck however long it stays quiet.
        h.observe_queue(170_002, QueueObservation { capacity: 100, ..Default::default() });
        alive(&mut h, 500_000);
        assert_eq!(status(&h, 500_000), HealthStatus::Healthy);
    }

    #[test]
    fn a_silent_stuck_agent_is_unhealthy_first() {
        let mut h = AgentHealth::new(0, &settings());
        h.observe_queue(0, QueueObservation { depth: 1, capacity: 10, pending: 1, ..Default::default() });
        let a = h.assess(40_000, &settings());
        assert_eq!(a.status, HealthStatus::Unhealthy);
        assert_eq!(a.issues.len(), 2);
        assert!(matches!(a.issues[0], HealthIssue::Silent { .. }), "worst first: {:?}", a.issues);
        assert!(matches!(a.issues[1], HealthIssue::Stuck { .. }));
    }

    #[test]
    fn a_low_success_ratio_degrades_once_there_are_enough_samples() {
        let mut h = AgentHealth::new(0, &settings());
        for _ in 0..8 {
            h.delivery_failed(1);
        }
        assert_eq!(status(&h, 1), HealthStatus::Healthy, "8 outcomes are too few to judge");
        for _ in 0..12 {
            h.delivery_succeeded(2, 1);
        }
        let a = h.assess(2, &settings());
        assert_eq!(a.issues, vec![HealthIssue::LowSuccessRatio { percent: 60, samples: 20 }]);
        assert_eq!(a.status, HealthStatus::Degraded);
        // 90 % is enough.
        let mut h = AgentHealth::new(0, &settings());
        h.delivery_failed(1);
        for _ in 0..9 {
            h.delivery_succeeded(1, 1);
        }
        assert_eq!(status(&h, 1), HealthStatus::Healthy);
    }

    #[test]
    fn old_failures_fade_and_the_agent_recovers() {
        let s = settings();
        let mut h = AgentHealth::new(0, &s);
        for _ in 0..50 {
            h.delivery_failed(0);
        }
        assert_eq!(status(&h, 0), HealthStatus::Degraded);
        // Six minutes later the 50 recent failures have halved to 0; 20 successes dominate.
        for _ in 0..20 {
            alive(&mut h, 360_000).delivery_succeeded(360_000, 1);
        }
        let r = h.report(360_000, &s);
        assert_eq!(r.status, HealthStatus::Healthy);
        assert_eq!(r.recent_success_ratio, Some(1.0));
        assert!((r.success_ratio - 20.0 / 70.0).abs() < 1e-9, "the lifetime ratio keeps everything");
        assert_eq!((r.deliveries_succeeded, r.deliveries_failed), (20, 50));
    }

    #[test]
    fn assessing_applies_due_decay_without_recording_anything() {
        let s = settings();
        let mut h = AgentHealth::new(0, &s);
        for _ in 0..40 {
            h.delivery_failed(0);
        }
        assert_eq!(alive(&mut h, 59_999).status(59_999, &s), HealthStatus::Degraded);
        // 40 halved six times is 0: too few samples left to judge.
        assert_eq!(alive(&mut h, 360_000).status(360_000, &s), HealthStatus::Healthy);
    }

    #[test]
    fn drops_degrade_until_they_fade() {
        let s = settings();
        let mut h = AgentHealth::new(0, &s);
        h.observe_queue(0, QueueObservation { capacity: 100, dropped: 0, ..Default::default() });
        h.observe_queue(10, QueueObservation { capacity: 100, dropped: 4, high_water: 100, ..Default::default() });
        assert_eq!(h.assess(10, &s).issues, vec![HealthIssue::Dropping { recent: 4 }]);
        // The running total does not count twice.
        h.observe_queue(20, QueueObservation { capacity: 100, dropped: 4, high_water: 100, ..Default::default() });
        assert_eq!(h.assess(20, &s).issues, vec![HealthIssue::Dropping { recent: 4 }]);
        assert_eq!(alive(&mut h, 180_000).status(180_000, &s), HealthStatus::Healthy);
        assert_eq!(h.report(180_000, &s).queue.high_water, 100);
    }

    #[test]
    fn a_filling_queue_degrades() {
        let mut h = AgentHealth::new(0, &settings());
        h.observe_queue(0, QueueObservation { depth: 79, capacity: 100, pending: 79, ..Default::default() });
        assert_eq!(status(&h, 0), HealthStatus::Healthy);
        h.observe_queue(0, QueueObservation { depth: 80, capacity: 100, pending: 80, ..Default::default() });
        assert_eq!(h.assess(0, &settings()).issues, vec![HealthIssue::QueueFilling { depth: 80, capacity: 100 }]);
    }

    #[test]
    fn slow_acknowledgements_degrade() {
        let mut h = AgentHealth::new(0, &settings());
        for _ in 0..99 {
            h.delivery_succeeded(0, 10);
        }
        h.delivery_succeeded(0, 5_000);
        assert_eq!(status(&h, 0), HealthStatus::Healthy, "one slow ack in 100 is above p99");
        h.delivery_succeeded(0, 5_000);
        let r = h.report(0, &settings());
        assert_eq!(r.status, HealthStatus::Degraded);
        assert_eq!(r.ack_p50_ms, Some(11), "10 ms is reported as its bucket's upper bound");
        let p99 = r.ack_p99_ms.unwrap();
        assert!((5_000..=6_250).contains(&p99), "{p99}");
        assert_eq!(r.issues, vec![HealthIssue::SlowAcks { p99_ms: p99 }]);
    }

    #[test]
    fn histogram_buckets_are_exact_low_and_within_a_quarter_above() {
        for v in (0..4).chain([4, 5, 7, 8, 9, 100, 1_000, 65_535, 65_536, LATENCY_CEILING_MS - 1]) {
            let i = LatencyHistogram::index(v);
            let upper = LatencyHistogram::upper_bound(i);
            assert!(upper >= v, "{v} in bucket {i} with upper bound {upper}");
            assert!(upper as f64 <= v as f64 * 1.25 + 1e-9 || v < 4, "{v}: {upper} more than 25 % above");
            if i > 0 {
                assert!(LatencyHistogram::upper_bound(i - 1) < v, "{v} belongs in an earlier bucket");
            }
        }
        assert_eq!(LatencyHistogram::index(LATENCY_CEILING_MS * 10), BUCKETS - 1);
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentile(0.5), None);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.percentile(1.0), Some(111), "100 lies in the bucket 96..=111");
        h.record(u64::MAX);
        assert_eq!(h.percentile(1.0), Some(LATENCY_CEILING_MS));
    }

    #[test]
    fn histogram_counts_never_overflow() {
        let mut h = LatencyHistogram::default();
        h.buckets[3] = u32::MAX;
        h.buckets[10] = 2;
        h.record(3);
        assert_eq!(h.buckets[3], u32::MAX / 2 + 1);
        assert_eq!(h.buckets[10], 1, "the shape is kept");
    }

    #[test]
    fn system_health_is_the_share_of_healthy_agents() {
        let counts: HealthCounts = [
            HealthStatus::Healthy,
            HealthStatus::Healthy,
            HealthStatus::Healthy,
            HealthStatus::Degraded,
            HealthStatus::Stuck,
            HealthStatus::Unhealthy,
        ]
        .into_iter()
        .collect();
        assert_eq!((counts.healthy, counts.degraded, counts.stuck, counts.unhealthy, counts.total()), (3, 1, 1, 1, 6));
        assert_eq!(counts.score(), 0.5);
        assert_eq!(HealthCounts::default().score(), 1.0, "no agents, nothing wrong");
    }

    #[test]
    fn history_samples_on_its_interval_keeps_the_last_ones_and_shows_the_trend() {
        let s = HealthSettings { sample_interval_ms: 1_000, history_len: 3, ..settings() };
        let mut history = HealthHistory::new(0, &s);
        let counts = |healthy, unhealthy| HealthCounts { healthy, unhealthy, ..Default::default() };
        assert_eq!(history.trend(), None);
        assert!(history.sample(0, counts(1, 1)));
        assert!(!history.sample(999, counts(2, 0)), "not due yet");
        assert_eq!(history.next_deadline(), 1_000);
        assert!(history.sample(1_000, counts(2, 0)));
        // Woken late: one sample, and the next stays on the grid.
        assert!(history.sample(3_500, counts(2, 0)));
        assert_eq!(history.next_deadline(), 4_000);
        assert!(history.sample(4_000, counts(0, 2)));
        let at: Vec<Time> = history.samples().map(|s| s.at).collect();
        assert_eq!(at, [1_000, 3_500, 4_000], "bounded: the oldest went first");
        assert_eq!(history.latest().unwrap().score(), 0.0);
        assert_eq!(history.trend(), Some(-1.0));
    }
}
