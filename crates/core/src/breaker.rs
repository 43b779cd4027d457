//! Circuit breakers: one per agent, so that an agent which stops acknowledging what it is sent is
//! isolated instead of dragging its peers down with it.
//!
//! ```text
//!          failure_threshold failures                the recovery delay has passed
//!          within failure_window_ms                  (poll)
//! Closed ─────────────────────────────► Open ─────────────────────────────────► HalfOpen
//!   ▲                                    ▲                                          │
//!   │                                    └── a probe failed, or the trial outlasted ┤
//!   │                                        probe_timeout_ms (the delay doubles)   │
//!   └──────────────────────── probe_successes successes ────────────────────────────┘
//! ```
//!
//! * **Closed**: traffic flows. Each failure is remembered with its time; when `failure_threshold`
//!   of them fall within the last `failure_window_ms`, the breaker opens. A success does not erase
//!   earlier failures: an agent failing four deliveries out of five must still trip.
//! * **Open**: nothing is sent. After the recovery delay the breaker lets probes through. The delay
//!   is `recovery_delay_ms × 2ⁿ`, n being the number of consecutive reopens (half-open back to
//!   open without closing in between), spread by ±`jitter_percent` so that agents which failed
//!   together do not all come back at the same instant, and never more than
//!   `max_recovery_delay_ms`. Outcomes recorded while open (late acknowledgements or timeouts of
//!   deliveries sent before it opened) are counted but change nothing.
//! * **HalfOpen**: traffic flows as probes. `probe_successes` successes close the breaker and forget
//!   the backoff; any failure reopens it. The whole trial must finish within `probe_timeout_ms` of
//!   entering half-open, otherwise the breaker reopens: no breaker stays half-open longer than that.
//! * An operator's **reset** (the `restart` command) closes the breaker at once and forgets both the
//!   failures and the backoff.
//!
//! Outcomes move the breaker when they are recorded; the passing of time moves it only in
//! [`Breaker::poll`], which the engine calls when the clock reaches [`Breaker::next_deadline`].
//! Every move is returned as a [`Transition`] for the engine to publish as an event.
//!
//! The core has no randomness, so jitter is drawn from a deterministic sequence seeded when the
//! breaker is created: the same seed and inputs always give the same delays.

use std::collections::VecDeque;
use std::fmt;

use crate::io::Time;

/// Most failures a breaker may be configured to wait for; it remembers at most that many times.
pub const MAX_FAILURE_THRESHOLD: u32 = 10_000;

/// How a breaker behaves. The engine resolves one per agent from the global settings and the
/// overrides of the agent's role and of the agent itself ([`resolve`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failures within `failure_window_ms` that open the breaker.
    pub failure_threshold: u32,
    /// Width of the sliding window in which failures are counted, in milliseconds.
    pub failure_window_ms: u64,
    /// Time from opening to the first probe, before backoff and jitter, in milliseconds.
    pub recovery_delay_ms: u64,
    /// The longest recovery delay, backoff and jitter included, in milliseconds.
    pub max_recovery_delay_ms: u64,
    /// How far jitter may move a recovery delay, in percent of it (0 to 100).
    pub jitter_percent: u32,
    /// Successes in half-open that close the breaker.
    pub probe_successes: u32,
    /// How long the half-open trial may last before the breaker reopens, in milliseconds.
    pub probe_timeout_ms: u64,
    /// A delivery not acknowledged within this many milliseconds counts as a failure. The breaker
    /// only records failures; the engine detects these timeouts with this setting.
    pub timeout_per_agent_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            failure_window_ms: 60_000,
            recovery_delay_ms: 30_000,
            max_recovery_delay_ms: 300_000,
            jitter_percent: 20,
            probe_successes: 3,
            probe_timeout_ms: 5_000,
            timeout_per_agent_ms: 5_000,
        }
    }
}

impl BreakerSettings {
    /// Checks the settings make sense together; the server refuses to start otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 || self.failure_threshold > MAX_FAILURE_THRESHOLD {
            return Err(format!("failure_threshold must be between 1 and {MAX_FAILURE_THRESHOLD}"));
        }
        for (name, value) in [
            ("failure_window_ms", self.failure_window_ms),
            ("recovery_delay_ms", self.recovery_delay_ms),
            ("probe_timeout_ms", self.probe_timeout_ms),
            ("timeout_per_agent_ms", self.timeout_per_agent_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_recovery_delay_ms < self.recovery_delay_ms {
            return Err(format!(
                "max_recovery_delay_ms ({}) must be at least recovery_delay_ms ({})",
                self.max_recovery_delay_ms, self.recovery_delay_ms
            ));
        }
        if self.jitter_percent > 100 {
            return Err("jitter_percent must be between 0 and 100".into());
        }
        if self.probe_successes == 0 {
            return Err("probe_successes must be at least 1".into());
        }
        Ok(())
    }
}

/// Changes to [`BreakerSettings`] for a role or one agent; `None` keeps the value underneath.
/// Read from the server's configuration file (`[breaker]`, `[breaker_roles.NAME]`...).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverrides {
    pub failure_threshold: Option<u32>,
    pub failure_window_ms: Option<u64>,
    pub recovery_delay_ms: Option<u64>,
    pub max_recovery_delay_ms: Option<u64>,
    pub jitter_percent: Option<u32>,
    pub probe_successes: Option<u32>,
    pub probe_timeout_ms: Option<u64>,
    pub timeout_per_agent_ms: Option<u64>,
}

impl BreakerOverrides {
    /// `base` with every value set here replacing its own.
    pub fn apply_to(&self, base: &BreakerSettings) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self.failure_threshold.unwrap_or(base.failure_threshold),
            failure_window_ms: self.failure_window_ms.unwrap_or(base.failure_window_ms),
            recovery_delay_ms: self.recovery_delay_ms.unwrap_or(base.recovery_delay_ms),
            max_recovery_delay_ms: self.max_recovery_delay_ms.unwrap_or(base.max_recovery_delay_ms),
            jitter_percent: self.jitter_percent.unwrap_or(base.jitter_percent),
            probe_successes: self.probe_successes.unwrap_or(base.probe_successes),
            probe_timeout_ms: self.probe_timeout_ms.unwrap_or(base.probe_timeout_ms),
            timeout_per_agent_ms: self.timeout_per_agent_ms.unwrap_or(base.timeout_per_agent_ms),
        }
    }
}

/// The settings of one agent: the global ones, then its role's overrides, then its own (the most
/// specific wins). Overrides are checked when they are configured, by validating what this returns
/// for them; the engine should refuse overrides whose result fails [`BreakerSettings::validate`].
pub fn resolve(
    global: &BreakerSettings,
    role: Option<&BreakerOverrides>,
    agent: Option<&BreakerOverrides>,
) -> BreakerSettings {
    let mut settings = global.clone();
    for overrides in [role, agent].into_iter().flatten() {
        settings = overrides.apply_to(&settings);
    }
    settings
}

/// The three states of a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Traffic flows; failures are counted.
    Closed,
    /// The agent is isolated until its probe time.
    Open,
    /// Traffic flows as probes that decide between closing and reopening.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What went wrong with one delivery (or request) to the agent, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A delivery was not acknowledged within `timeout_per_agent_ms`.
    AckTimeout,
    /// The agent answered a command with an error.
    AgentError,
    /// The agent's queue overflowed: it does not keep up with what it is sent.
    Overflow,
    /// The session ended with deliveries unacknowledged.
    Disconnected,
    /// The agent did not answer a tick round before it closed.
    RoundMissed,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::AckTimeout => "delivery not acknowledged in time",
            FailureKind::AgentError => "agent answered with an error",
            FailureKind::Overflow => "queue overflowed",
            FailureKind::Disconnected => "disconnected with deliveries unacknowledged",
            FailureKind::RoundMissed => "tick round not answered in time",
        }
    }
}

/// Why a breaker moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Closed → open: `failures` failures within `window_ms`, the last of them `last`.
    TooManyFailures { failures: u32, window_ms: u64, last: FailureKind },
    /// Open → half-open: the recovery delay of `delay_ms` passed.
    RecoveryDelayElapsed { delay_ms: u64 },
    /// Half-open → closed: `successes` probes succeeded.
    ProbesSucceeded { successes: u32 },
    /// Half-open → open: a probe failed.
    ProbeFailed(FailureKind),
    /// Half-open → open: only `successes` probes succeeded within `timeout_ms`.
    ProbeTimedOut { timeout_ms: u64, successes: u32 },
    /// Open or half-open → closed: an operator reset the breaker.
    Reset,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TooManyFailures { failures, window_ms, last } => {
                write!(f, "{failures} failures within {window_ms} ms, the last: {}", last.as_str())
            }
            Reason::RecoveryDelayElapsed { delay_ms } => write!(f, "recovery delay of {delay_ms} ms passed"),
            Reason::ProbesSucceeded { successes } => write!(f, "{successes} probes succeeded"),
            Reason::ProbeFailed(kind) => write!(f, "a probe failed: {}", kind.as_str()),
            Reason::ProbeTimedOut { timeout_ms, successes } => {
                write!(f, "probing did not succeed within {timeout_ms} ms ({successes} successes)")
            }
            Reason::Reset => f.write_str("reset by an operator"),
        }
    }
}

/// One move of a breaker, for the engine to publish as an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub at: Time,
    pub reason: Reason,
}

/// The text of the error an agent's open breaker causes (a command sent to it, a direct request).
/// The engine's `CoreError::BreakerOpen { agent, probe_at_ms, reason }` should display this.
pub fn open_message(agent: &str, probe_at_ms: Time, reason: &str) -> String {
    format!(
        "agent '{agent}' is isolated by its circuit breaker ({reason}); nothing is sent to it until it is \
         probed again at {probe_at_ms} ms (server clock). Check the agent's logs, or close the breaker now \
         with the `restart` command"
    )
}

/// The recovery delay after `reopens` consecutive reopens: `recovery_delay_ms × 2^reopens`, moved
/// by ±`jitter_percent` according to `draw` (any `u64`, spread uniformly), never above
/// `max_recovery_delay_ms` and never below 1 ms. Near the cap the jitter only shortens the delay, so
/// breakers at the cap still spread out instead of all probing at the cap.
pub fn recovery_delay(settings: &BreakerSettings, reopens: u32, draw: u64) -> u64 {
    let cap = settings.max_recovery_delay_ms;
    let base = match 1u64.checked_shl(reopens) {
        Some(factor) => settings.recovery_delay_ms.saturating_mul(factor),
        None => u64::MAX,
    }
    .min(cap);
    let spread = (u128::from(base) * u128::from(settings.jitter_percent.min(100)) / 100) as u64;
    let low = (base - spread).max(1);
    let high = base.saturating_add(spread).min(cap).max(low);
    low + draw % (high - low).saturating_add(1)
}

/// SplitMix64: a tiny, well-mixed sequence, so that seeds taken from a plain counter still give
/// unrelated jitter.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { probe_at: Time, delay_ms: u64 },
    HalfOpen { deadline: Time, successes: u32 },
}

/// The breaker of one agent.
#[derive(Clone, Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    phase: Phase,
    /// When the current state was entered.
    since: Time,
    /// While closed: the times of the latest failures still within the window, oldest first (fewer
    /// than `failure_threshold`, since reaching it opens the breaker).
    failures: VecDeque<Time>,
    consecutive_reopens: u32,
    opened_count: u64,
    /// Why the breaker last opened, while it is open or half-open.
    open_reason: Option<Reason>,
    jitter_state: u64,
    successes_total: u64,
    failures_total: u64,
}

impl Breaker {
    /// A closed breaker. `settings` must have passed [`BreakerSettings::validate`]. `jitter_seed`
    /// starts the breaker's jitter sequence: give each breaker a different one (a counter is fine).
    pub fn new(now: Time, settings: BreakerSettings, jitter_seed: u64) -> Self {
        Breaker {
            settings,
            phase: Phase::Closed,
            since: now,
            failures: VecDeque::new(),
            consecutive_reopens: 0,
            opened_count: 0,
            open_reason: None,
            jitter_state: jitter_seed,
            successes_total: 0,
            failures_total: 0,
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Replaces the settings (an override changed). They apply from the next decision on: a probe
    /// already scheduled keeps its time. `settings` must have passed [`BreakerSettings::validate`].
    pub fn set_settings(&mut self, settings: BreakerSettings) {
        let keep = (settings.failure_threshold as usize).saturating_sub(1);
        while self.failures.len() > keep {
            self.failures.pop_front();
        }
        self.settings = settings;
    }

    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// Whether deliveries may go to the agent now (closed, or half-open as probes). Call
    /// [`Breaker::poll`] first when the clock may have passed [`Breaker::next_deadline`].
    pub fn allows_traffic(&self) -> bool {
        !self.is_open()
    }

    /// While open: when the breaker will let probes through (for error messages).
    pub fn probe_at(&self) -> Option<Time> {
        match self.phase {
            Phase::Open { probe_at, .. } => Some(probe_at),
            _ => None,
        }
    }

    /// While open: the recovery delay chosen when it opened (backoff and jitter included).
    pub fn recovery_delay_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Open { delay_ms, .. } => Some(delay_ms),
            _ => None,
        }
    }

    /// While open or half-open: why the breaker last opened.
    pub fn open_reason(&self) -> Option<Reason> {
        self.open_reason
    }

    /// When [`Breaker::poll`] next has something to do: the probe time while open, the end of the
    /// trial while half-open, nothing while closed.
    pub fn next_deadline(&self) -> Option<Time> {
        match self.phase {
            Phase::Closed => None,
            Phase::Open { probe_at, .. } => Some(probe_at),
            Phase::HalfOpen { deadline, .. } => Some(deadline),
        }
    }

    /// When the current state was entered.
    pub fn since(&self) -> Time {
        self.since
    }

    /// How long the breaker has been in its current state at `now`.
    pub fn time_in_state(&self, now: Time) -> u64 {
        now.saturating_sub(self.since)
    }

    /// How many times the breaker has opened (from closed or from half-open).
    pub fn opened_count(&self) -> u64 {
        self.opened_count
    }

    /// Reopens from half-open since the breaker last closed; the exponent of the backoff.
    pub fn consecutive_reopens(&self) -> u32 {
        self.consecutive_reopens
    }

    /// Every success recorded, in any state.
    pub fn successes_total(&self) -> u64 {
        self.successes_total
    }

    /// Every failure recorded, in any state.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    /// While closed: the failures at `now` still within the window.
    pub fn recent_failures(&self, now: Time) -> usize {
        let window = self.settings.failure_window_ms;
        self.failures.iter().filter(|&&t| now.saturating_sub(t) < window).count()
    }

    /// A delivery to the agent succeeded (it was acknowledged in time).
    pub fn record_success(&mut self, now: Time) -> Option<Transition> {
        self.successes_total += 1;
        let Phase::HalfOpen { deadline, successes } = self.phase else {
            // Closed: failures stand (see the module docs). Open: a late acknowledgement of
            // something sent before opening proves nothing about the agent now.
            return None;
        };
        if now >= deadline {
            return self.poll(now);
        }
        let successes = successes + 1;
        if successes < self.settings.probe_successes {
            self.phase = Phase::HalfOpen { deadline, successes };
            return None;
        }
        let from = self.state();
        self.close(now);
        Some(Transition { from, to: BreakerState::Closed, at: now, reason: Reason::ProbesSucceeded { successes } })
    }

    /// A delivery to the agent failed.
    pub fn record_failure(&mut self, now: Time, kind: FailureKind) -> Option<Transition> {
        self.record_failure_unless_capped(now, kind, false)
    }

    /// Whether one more failure at `now` would open this (closed) breaker.
    pub fn would_open(&self, now: Time) -> bool {
        let window = self.settings.failure_window_ms;
        let recent = self.failures.iter().filter(|&&t| now.saturating_sub(t) < window).count() as u32;
        matches!(self.phase, Phase::Closed) && recent + 1 >= self.settings.failure_threshold
    }

    /// A delivery to the agent failed, at a moment when `capped` may forbid isolating one more
    /// agent: a closed breaker then remembers the failure but stays closed (the next failure asks
    /// again). A half-open breaker reopens regardless: its agent is isolated already.
    pub fn record_failure_unless_capped(&mut self, now: Time, kind: FailureKind, capped: bool) -> Option<Transition> {
        self.failures_total += 1;
        match self.phase {
            Phase::Closed => {
                let window = self.settings.failure_window_ms;
                while self.failures.front().is_some_and(|&t| now.saturating_sub(t) >= window) {
                    self.failures.pop_front();
                }
                self.failures.push_back(now);
                if capped && self.failures.len() > self.settings.failure_threshold as usize {
                    // Held closed by the cap: the threshold's worth of latest failures says enough.
                    self.failures.pop_front();
                }
                let failures = self.failures.len() as u32;
                (failures >= self.settings.failure_threshold && !capped)
                    .then(|| self.open(now, Reason::TooManyFailures { failures, window_ms: window, last: kind }))
            }
            Phase::Open { .. } => None,
            Phase::HalfOpen { deadline, .. } if now >= deadline => self.poll(now),
            Phase::HalfOpen { .. } => Some(self.open(now, Reason::ProbeFailed(kind))),
        }
    }

    /// Applies the passing of time at `now`: open → half-open once the probe time is reached,
    /// half-open → open once the trial has lasted `probe_timeout_ms`.
    pub fn poll(&mut self, now: Time) -> Option<Transition> {
        match self.phase {
            Phase::Open { probe_at, delay_ms } if now >= probe_at => {
                self.phase =
                    Phase::HalfOpen { deadline: now.saturating_add(self.settings.probe_timeout_ms), successes: 0 };
                self.since = now;
                Some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                    at: now,
                    reason: Reason::RecoveryDelayElapsed { delay_ms },
                })
            }
            Phase::HalfOpen { deadline, successes } if now >= deadline => {
                let timeout_ms = self.settings.probe_timeout_ms;
                Some(self.open(now, Reason::ProbeTimedOut { timeout_ms, successes }))
            }
            _ => None,
        }
    }

    /// An operator's restart: closes the breaker now and forgets failures and backoff.
    pub fn reset(&mut self, now: Time) -> Option<Transition> {
        let from = self.state();
        self.failures.clear();
        self.consecutive_reopens = 0;
        if from == BreakerState::Closed {
            return None;
        }
        self.close(now);
        Some(Transition { from, to: BreakerState::Closed, at: now, reason: Reason::Reset })
    }

    fn open(&mut self, now: Time, reason: Reason) -> Transition {
        let from = self.state();
        if from == BreakerState::HalfOpen {
            self.consecutive_reopens = self.consecutive_reopens.saturating_add(1);
        }
        let draw = splitmix64(&mut self.jitter_state);
        let delay_ms = recovery_delay(&self.settings, self.consecutive_reopens, draw);
        self.phase = Phase::Open { probe_at: now.saturating_add(delay_ms), delay_ms };
        self.since = now;
        self.failures.clear();
        self.opened_count += 1;
        self.open_reason = Some(reason);
        Transition { from, to: BreakerState::Open, at: now, reason }
    }

    fn close(&mut self, now: Time) {
        self.phase = Phase::Closed;
        self.since = now;
        self.failures.clear();
        self.consecutive_reopens = 0;
        self.open_reason = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED: u64 = 7;

    /// Defaults without jitter, so that times are exact.
    fn exact() -> BreakerSettings {
        BreakerSettings { jitter_percent: 0, ..BreakerSettings::default() }
    }

    fn fail(b: &mut Breaker, now: Time) -> Option<Transition> {
        b.record_failure(now, FailureKind::AckTimeout)
    }

    /// Opens a closed breaker at `now` with `failure_threshold` failures.
    fn trip(b: &mut Breaker, now: Time) -> Transition {
        for _ in 1..b.settings().failure_threshold {
            assert_eq!(fail(b, now), None);
        }
        fail(b, now).expect("the threshold-th failure opens the breaker")
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let s = BreakerSettings::default();
        assert_eq!(
            (s.failure_threshold, s.failure_window_ms, s.recovery_delay_ms, s.max_recovery_delay_ms),
            (5, 60_000, 30_000, 300_000)
        );
        assert_eq!(
            (s.probe_successes, s.probe_timeout_ms, s.timeout_per_agent_ms, s.jitter_percent),
            (3, 5_000, 5_000, 20)
        );
        s.validate().unwrap();
    }

    #[test]
    fn validate_refuses_settings_that_cannot_work() {
        let bad = [
            BreakerSettings { failure_threshold: 0, ..exact() },
            BreakerSettings { failure_threshold: MAX_FAILURE_THRESHOLD + 1, ..exact() },
            BreakerSettings { failure_window_ms: 0, ..exact() },
            BreakerSettings { recovery_delay_ms: 0, ..exact() },
            BreakerSettings { max_recovery_delay_ms: 29_999, ..exact() },
            BreakerSettings { jitter_percent: 101, ..exact() },
            BreakerSettings { probe_successes: 0, ..exact() },
            BreakerSettings { probe_timeout_ms: 0, ..exact() },
            BreakerSettings { timeout_per_agent_ms: 0, ..exact() },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }

    #[test]
    fn opens_after_threshold_failures_within_the_window() {
        let mut b = Breaker::new(0, exact(), SEED);
        assert!(b.allows_traffic());
        for t in 0..4 {
            assert_eq!(fail(&mut b, t * 1000), None);
        }
        assert_eq!(b.recent_failures(4000), 4);
        let t = fail(&mut b, 59_999).expect("fifth failure within 60 s");
        assert_eq!((t.from, t.to, t.at), (BreakerState::Closed, BreakerState::Open, 59_999));
        assert_eq!(t.reason, Reason::TooManyFailures { failures: 5, window_ms: 60_000, last: FailureKind::AckTimeout });
        assert!(b.is_open() && !b.allows_traffic());
        assert_eq!(b.probe_at(), Some(59_999 + 30_000));
        assert_eq!(b.next_deadline(), b.probe_at());
        assert_eq!(b.open_reason(), Some(t.reason));
        assert_eq!(b.opened_count(), 1);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut b = Breaker::new(0, exact(), SEED);
        for t in 0..4 {
            fail(&mut b, t);
        }
        // The failure at 0 left the window at 60_000: four remain in it, not five.
        assert_eq!(fail(&mut b, 60_000), None);
        assert_eq!(b.recent_failures(60_000), 4);
        assert_eq!(b.state(), BreakerState::Closed);
        // Spread-out failures never trip.
        let mut b = Breaker::new(0, exact(), SEED);
        for i in 0..100 {
            assert_eq!(fail(&mut b, i * 15_000), None);
        }
        assert!(fail(&mut b, 100 * 15_000 - 1).is_some(), "a burst still trips after a long quiet run");
    }

    #[test]
    fn a_success_while_closed_does_not_erase_failures() {
        let mut b = Breaker::new(0, exact(), SEED);
        for t in 0..4 {
            fail(&mut b, t);
            assert_eq!(b.record_success(t), None);
        }
        assert_eq!(b.recent_failures(10), 4);
        assert_eq!(b.successes_total(), 4);
        assert!(fail(&mut b, 10).is_some(), "four failures in five still trip");
    }

    #[test]
    fn open_becomes_half_open_after_the_recovery_delay() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 1000);
        assert_eq!(b.poll(30_999), None, "not before the probe time");
        assert!(b.is_open());
        let t = b.poll(31_000).unwrap();
        assert_eq!((t.from, t.to, t.at), (BreakerState::Open, BreakerState::HalfOpen, 31_000));
        assert_eq!(t.reason, Reason::RecoveryDelayElapsed { delay_ms: 30_000 });
        assert!(b.allows_traffic(), "probes flow while half-open");
        assert_eq!(b.next_deadline(), Some(36_000), "the trial ends probe_timeout_ms later");
        assert_eq!(
            b.open_reason(),
            Some(Reason::TooManyFailures { failures: 5, window_ms: 60_000, last: FailureKind::AckTimeout })
        );
    }

    #[test]
    fn outcomes_while_open_change_nothing() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        assert_eq!(b.record_success(10), None);
        assert_eq!(fail(&mut b, 20), None);
        assert_eq!(b.probe_at(), Some(30_000));
        // Even after the probe time, a late outcome waits for poll to move the breaker.
        assert_eq!(b.record_success(30_001), None);
        assert!(b.is_open());
        assert_eq!(b.failures_total(), 6);
    }

    #[test]
    fn probe_successes_close_the_breaker_and_forget_the_backoff() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        b.poll(30_000).unwrap();
        fail(&mut b, 30_001).unwrap(); // reopen: 60 s
        assert_eq!(b.consecutive_reopens(), 1);
        b.poll(90_001).unwrap();
        assert_eq!(b.record_success(90_002), None);
        assert_eq!(b.record_success(90_003), None);
        let t = b.record_success(90_004).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (BreakerState::HalfOpen, BreakerState::Closed, Reason::ProbesSucceeded { successes: 3 })
        );
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!((b.consecutive_reopens(), b.open_reason(), b.next_deadline()), (0, None, None));
        assert_eq!(b.recent_failures(90_004), 0, "a closed breaker starts afresh");
        // The next opening waits the base delay again.
        trip(&mut b, 100_000);
        assert_eq!(b.probe_at(), Some(130_000));
    }

    #[test]
    fn a_probe_failure_reopens_with_a_doubled_delay() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        b.poll(30_000).unwrap();
        b.record_success(30_001);
        let t = b.record_failure(30_002, FailureKind::AgentError).unwrap();
        assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
        assert_eq!(t.reason, Reason::ProbeFailed(FailureKind::AgentError));
        assert_eq!(b.recovery_delay_ms(), Some(60_000));
        assert_eq!(b.probe_at(), Some(90_002));
        assert_eq!(b.opened_count(), 2);
    }

    #[test]
    fn a_trial_that_outlasts_the_probe_timeout_reopens() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        b.poll(30_000).unwrap();
        b.record_success(31_000);
        assert_eq!(b.poll(34_999), None);
        let t = b.poll(35_000).unwrap();
        assert_eq!((t.from, t.to, t.at), (BreakerState::HalfOpen, BreakerState::Open, 35_000));
        assert_eq!(t.reason, Reason::ProbeTimedOut { timeout_ms: 5_000, successes: 1 });
        assert_eq!(b.probe_at(), Some(35_000 + 60_000));
    }

    #[test]
    fn an_outcome_after_the_trial_ended_reopens_instead_of_counting() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        b.poll(30_000).unwrap();
        b.record_success(30_001);
        b.record_success(30_002);
        // The deadline passed before the shell polled: the third success is too late.
        let t = b.record_success(35_000).unwrap();
        assert_eq!(t.reason, Reason::ProbeTimedOut { timeout_ms: 5_000, successes: 2 });
        assert!(b.is_open());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        let mut delays = vec![b.recovery_delay_ms().unwrap()];
        for _ in 0..6 {
            let now = b.probe_at().unwrap();
            b.poll(now).unwrap();
            fail(&mut b, now).unwrap();
            delays.push(b.recovery_delay_ms().unwrap());
        }
        assert_eq!(delays, [30_000, 60_000, 120_000, 240_000, 300_000, 300_000, 300_000]);
        assert_eq!(b.consecutive_reopens(), 6);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_under_the_cap() {
        let s = BreakerSettings::default();
        for reopens in 0..12 {
            let base = (30_000u64 << reopens).min(300_000);
            let (low, high) = (base - base / 5, (base + base / 5).min(300_000));
            let mut seen = std::collections::BTreeSet::new();
            let mut state = 1;
            for _ in 0..2000 {
                let d = recovery_delay(&s, reopens, splitmix64(&mut state));
                assert!((low..=high).contains(&d), "reopens {reopens}: {d} not in {low}..={high}");
                seen.insert(d);
            }
            assert!(seen.len() > 100, "jitter actually spreads the delays");
        }
        // Huge exponents saturate at the cap instead of overflowing.
        assert!(recovery_delay(&s, u32::MAX, u64::MAX) <= 300_000);
        let full = BreakerSettings { jitter_percent: 100, recovery_delay_ms: 1, ..s };
        assert!((1..=2).contains(&recovery_delay(&full, 0, 0)), "never below 1 ms");
    }

    #[test]
    fn jitter_is_deterministic_per_seed() {
        let run = |seed| {
            let mut b = Breaker::new(0, BreakerSettings::default(), seed);
            trip(&mut b, 0);
            b.probe_at().unwrap()
        };
        assert_eq!(run(1), run(1));
        // Breakers seeded from consecutive counter values still probe at different times.
        let times: std::collections::BTreeSet<_> = (0..20).map(run).collect();
        assert!(times.len() > 15, "{times:?}");
    }

    #[test]
    fn reset_closes_from_any_state_and_forgets_the_backoff() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 0);
        let t = b.reset(5).unwrap();
        assert_eq!((t.from, t.to, t.reason), (BreakerState::Open, BreakerState::Closed, Reason::Reset));
        assert_eq!(b.since(), 5);

        trip(&mut b, 10);
        b.poll(30_010).unwrap();
        fail(&mut b, 30_011).unwrap();
        b.poll(90_011).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let t = b.reset(90_012).unwrap();
        assert_eq!(t.from, BreakerState::HalfOpen);
        assert_eq!(b.consecutive_reopens(), 0);
        trip(&mut b, 100_000);
        assert_eq!(b.recovery_delay_ms(), Some(30_000), "backoff starts over after a reset");

        // Reset of a closed breaker moves nothing but forgets counted failures.
        let mut b = Breaker::new(0, exact(), SEED);
        fail(&mut b, 1);
        fail(&mut b, 2);
        assert_eq!(b.reset(3), None);
        assert_eq!(b.recent_failures(3), 0);
        assert_eq!(b.since(), 0);
    }

    #[test]
    fn counters_and_time_in_state() {
        let mut b = Breaker::new(100, exact(), SEED);
        assert_eq!(b.time_in_state(150), 50);
        trip(&mut b, 200);
        assert_eq!(b.time_in_state(1_200), 1_000);
        b.poll(30_200).unwrap();
        assert_eq!(b.time_in_state(30_300), 100);
        fail(&mut b, 30_300).unwrap();
        assert_eq!((b.opened_count(), b.failures_total()), (2, 6));
    }

    #[test]
    fn lowering_the_threshold_keeps_the_breaker_consistent() {
        let mut b = Breaker::new(0, exact(), SEED);
        for t in 0..4 {
            fail(&mut b, t);
        }
        b.set_settings(BreakerSettings { failure_threshold: 2, ..exact() });
        assert!(fail(&mut b, 5).is_some(), "the next failure trips under the new threshold");
    }

    #[test]
    fn overrides_layer_agent_over_role_over_global() {
        let global = BreakerSettings::default();
        let role =
            BreakerOverrides { failure_threshold: Some(10), probe_timeout_ms: Some(1_000), ..Default::default() };
        let agent = BreakerOverrides { failure_threshold: Some(2), ..Default::default() };
        let s = resolve(&global, Some(&role), Some(&agent));
        assert_eq!(s.failure_threshold, 2, "the agent's own value wins");
        assert_eq!(s.probe_timeout_ms, 1_000, "the role's value where the agent sets none");
        assert_eq!(s.recovery_delay_ms, 30_000, "the global value where neither does");
        assert_eq!(resolve(&global, None, None), global);
        assert_eq!(BreakerOverrides::default().apply_to(&global), global);
        let bad = BreakerOverrides { max_recovery_delay_ms: Some(1), ..Default::default() };
        assert!(resolve(&global, Some(&bad), None).validate().is_err());
    }

    #[test]
    fn open_message_says_who_why_and_when() {
        let mut b = Breaker::new(0, exact(), SEED);
        trip(&mut b, 1_000);
        let text = open_message("risk", b.probe_at().unwrap(), &b.open_reason().unwrap().to_string());
        assert!(text.contains("agent 'risk'"), "{text}");
        assert!(text.contains("5 failures within 60000 ms, the last: delivery not acknowledged in time"), "{text}");
        assert!(text.contains("31000 ms"), "{text}");
        assert!(text.contains("`restart`"), "{text}");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Advance(u64),
        Success,
        Failure,
        Poll,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..20_000).prop_map(Op::Advance),
            3 => Just(Op::Success),
            3 => Just(Op::Failure),
            3 => Just(Op::Poll),
            1 => Just(Op::Reset),
        ]
    }

    fn settings() -> impl Strategy<Value = BreakerSettings> {
        (1u32..5, 1u64..50_000, 1u64..5_000, 1u64..20, 0u32..=100, 1u32..4, 1u64..5_000).prop_map(
            |(threshold, window, delay, cap_factor, jitter, probes, probe_timeout)| BreakerSettings {
                failure_threshold: threshold,
                failure_window_ms: window,
                recovery_delay_ms: delay,
                max_recovery_delay_ms: delay * cap_factor,
                jitter_percent: jitter,
                probe_successes: probes,
                probe_timeout_ms: probe_timeout,
                timeout_per_agent_ms: 5_000,
            },
        )
    }

    proptest! {
        /// Whatever happens, a breaker that has been told the time is never half-open for longer
        /// than `probe_timeout_ms`, never waits longer than the cap to probe, and reports every move
        /// as a transition from the state it was in.
        #[test]
        fn never_stuck_half_open_and_never_past_the_cap(
            settings in settings(),
            seed in any::<u64>(),
            ops in prop::collection::vec(op(), 0..200),
        ) {
            settings.validate().unwrap();
            let mut b = Breaker::new(0, settings.clone(), seed);
            let mut now = 0u64;
            for op in ops {
                let before = b.state();
                let moved = match op {
                    Op::Advance(dt) => { now += dt; None }
                    Op::Success => b.record_success(now),
                    Op::Failure => b.record_failure(now, FailureKind::AckTimeout),
                    Op::Poll => b.poll(now),
                    Op::Reset => b.reset(now),
                };
                if let Some(t) = moved {
                    prop_assert_eq!(t.from, before);
                    prop_assert_eq!(t.to, b.state());
                    prop_assert_ne!(t.from, t.to);
                    prop_assert_eq!(t.at, now);
                    prop_assert_eq!(b.since(), now);
                } else {
                    prop_assert_eq!(before, b.state());
                }
                match b.state() {
                    BreakerState::Open => {
                        let delay = b.recovery_delay_ms().unwrap();
                        prop_assert!((1..=settings.max_recovery_delay_ms).contains(&delay));
                        prop_assert_eq!(b.probe_at(), Some(b.since() + delay));
                    }
                    BreakerState::HalfOpen => {
                        prop_assert!(b.next_deadline().unwrap() <= b.since() + settings.probe_timeout_ms);
                        if !matches!(op, Op::Advance(_)) {
                            prop_assert!(
                                b.time_in_state(now) < settings.probe_timeout_ms,
                                "half-open for {} ms after being told the time", b.time_in_state(now)
                            );
                        }
                    }
                    BreakerState::Closed => {
                        prop_assert!(b.recent_failures(now) < settings.failure_threshold as usize);
                        prop_assert_eq!(b.next_deadline(), None);
                    }
                }
            }
        }
    }
}
