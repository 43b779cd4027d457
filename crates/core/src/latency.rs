//! Latency buffers (predictive sync): the rules that stand in for an overdue sample of a series
//! with an estimate, and settle the estimate when the real sample comes.
//!
//! A series ([`BufferSpec`]) is a numeric field (a JSON pointer) of the messages published on a
//! topic pattern, expected every `cadence_ms`. A sample's time is its event time (or the server's
//! time when it has none). When no sample came for `cadence_ms + grace_ms` of server time, the
//! buffer emits a provisional value for the next expected sample time — by hold-last, linear
//! extrapolation from the last two samples, or a constant-velocity estimate (a smoothed
//! velocity) — marked provisional, with its age (server time since the last real sample), and
//! again every cadence, at most `max_provisional` times in a row. When the definitive sample comes,
//! it is emitted with the provisional values it replaces (those expected up to half a cadence
//! after it) and the error of each against the truth interpolated between the two real samples
//! around it. Provisional values go on `<output>.provisional`, definitive samples on
//! `<output>.definitive`: a consumer wanting definitive values only listens to the latter, one
//! wanting provisional values with corrections listens to `<output>.*`.
//!
//! Guarantees: every definitive sample is delivered once (a sample older than the last one is
//! counted as stale and not delivered); every provisional value is settled by exactly one
//! definitive sample, whose message carries its error; statistics (provisional share, mean and
//! largest absolute error) are over settled values. Nothing here reads a clock.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::CoreError;
use crate::io::Time;
use crate::topic::Pattern;

/// How a provisional value is estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// The last real value.
    #[default]
    HoldLast,
    /// The line through the last two real samples, extended.
    Linear,
    /// The last value moved on at a velocity smoothed over the samples (half the newest slope
    /// plus half the previous estimate), which damps noise that linear extrapolation amplifies.
    ConstantVelocity,
}

impl Estimator {
    /// The estimator named `text` (`hold_last`, `linear`, `constant_velocity`).
    pub fn parse(text: &str) -> Result<Estimator, CoreError> {
        match text {
            "" | "hold_last" | "hold-last" => Ok(Estimator::HoldLast),
            "linear" => Ok(Estimator::Linear),
            "constant_velocity" | "constant-velocity" => Ok(Estimator::ConstantVelocity),
            other => Err(CoreError::invalid(
                "estimator",
                format!("'{other}' is not one of hold_last, linear, constant_velocity"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Estimator::HoldLast => "hold_last",
            Estimator::Linear => "linear",
            Estimator::ConstantVelocity => "constant_velocity",
        }
    }
}

fn default_max_provisional() -> u32 {
    10
}

/// A latency buffer's definition, from the TOML file (`[[streams.buffers]]`) or made at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSpec {
    /// The namespace whose publishes it takes (empty: `default`).
    #[serde(default)]
    pub namespace: String,
    /// The series' name, unique in its namespace.
    pub id: String,
    /// The topic pattern of its samples.
    pub topic: String,
    /// The JSON pointer (RFC 6901) of the numeric field, e.g. `/pose/x`.
    pub pointer: String,
    /// How often a sample is expected, in milliseconds.
    pub cadence_ms: u64,
    /// How long past the cadence a sample may be before it is overdue, in milliseconds.
    #[serde(default)]
    pub grace_ms: u64,
    #[serde(default)]
    pub estimator: Estimator,
    /// The topic prefix of its output (`<output>.provisional`, `<output>.definitive`).
    pub output: String,
    /// Most provisional values in a row before the buffer waits silently for a real sample.
    #[serde(default = "default_max_provisional")]
    pub max_provisional: u32,
}

impl BufferSpec {
    /// Checks the definition; the error names the field at fault.
    pub fn validate(&self, max_topic_len: usize, max_provisional: u32) -> Result<Pattern, CoreError> {
        crate::name::validate("buffer id", &self.id)?;
        let pattern = Pattern::parse(&self.topic, max_topic_len)?;
        if !self.pointer.is_empty() && !self.pointer.starts_with('/') {
            return Err(CoreError::invalid(
                "buffer pointer",
                format!("'{}' is not a JSON pointer: it must be empty or start with '/'", self.pointer),
            ));
        }
        for suffix in ["provisional", "definitive"] {
            let topic = format!("{}.{suffix}", self.output);
            crate::topic::validate_topic(&topic, max_topic_len)?;
            if pattern.matches(&topic) {
                return Err(CoreError::invalid(
                    "buffer output",
                    format!("'{topic}' matches the buffer's own topic; publish on a topic it does not take"),
                ));
            }
        }
        if self.cadence_ms == 0 || self.cadence_ms > 3_600_000 {
            return Err(CoreError::invalid("buffer cadence_ms", "must be between 1 and 3600000"));
        }
        if self.max_provisional == 0 || self.max_provisional > max_provisional {
            return Err(CoreError::invalid(
                "buffer max_provisional",
                format!("must be between 1 and {max_provisional} (streams.max_provisional)"),
            ));
        }
        Ok(pattern)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    time: u64,
    value: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Provisional {
    time: u64,
    value: f64,
}

/// A series' counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BufferStats {
    /// Definitive samples delivered.
    pub samples: u64,
    /// Provisional values emitted.
    pub provisional: u64,
    /// Provisional values settled by a definitive sample (their errors are in the means).
    pub settled: u64,
    /// `provisional / (provisional + samples)`.
    pub provisional_share: f64,
    pub mean_abs_error: f64,
    pub max_abs_error: f64,
    /// Messages whose field was missing or not a number.
    pub invalid: u64,
    /// Samples older than the last one, not delivered.
    pub stale: u64,
    /// The last definitive value and its time.
    pub last_value: Option<f64>,
    pub last_time_ms: Option<u64>,
    /// Provisional values waiting for their definitive sample.
    pub outstanding: u64,
}

/// What a buffer publishes.
#[derive(Clone, Debug, PartialEq)]
pub struct Emission {
    /// `provisional` or `definitive`: the last token of the topic.
    pub kind: &'static str,
    pub payload: String,
}

/// One latency buffer.
#[derive(Debug)]
pub struct Buffer {
    spec: BufferSpec,
    pattern: Pattern,
    last: Option<Sample>,
    prev: Option<Sample>,
    velocity: Option<f64>,
    /// Server time of the last definitive sample (or of the buffer's creation).
    last_arrival: Time,
    outstanding: Vec<Provisional>,
    error_sum: f64,
    stats: BufferStats,
    /// When the next provisional value is due (server time), if one is.
    due: Option<Time>,
}

impl Buffer {
    /// A buffer for a checked definition (see [`BufferSpec::validate`]).
    pub fn new(spec: BufferSpec, pattern: Pattern) -> Buffer {
        Buffer {
            spec,
            pattern,
            last: None,
            prev: None,
            velocity: None,
            last_arrival: 0,
            outstanding: Vec::new(),
            error_sum: 0.0,
            stats: BufferStats::default(),
            due: None,
        }
    }

    pub fn spec(&self) -> &BufferSpec {
        &self.spec
    }

    /// Whether the buffer takes messages published on `topic`.
    pub fn takes(&self, topic: &str) -> bool {
        self.pattern.matches(topic)
    }

    /// When a provisional value is due next (server time), if one is.
    pub fn next_deadline(&self) -> Option<Time> {
        self.due
    }

    /// Takes a message published at server time `now` with sample time `time`.
    pub fn sample(&mut self, now: Time, time: u64, payload: &[u8]) -> Option<Emission> {
        let value = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.pointer(&self.spec.pointer).and_then(serde_json::Value::as_f64))
            .filter(|v| v.is_finite());
        let Some(value) = value else {
            self.stats.invalid += 1;
            return None;
        };
        if self.last.is_some_and(|l| time <= l.time) {
            self.stats.stale += 1;
            return None;
        }
        let sample = Sample { time, value };
        // The provisional values this sample settles: those expected up to half a cadence after it.
        let horizon = time.saturating_add(self.spec.cadence_ms / 2);
        let (settled, kept): (Vec<Provisional>, Vec<Provisional>) =
            self.outstanding.iter().partition(|p| p.time <= horizon);
        self.outstanding = kept;
        let mut replaced = Vec::with_capacity(settled.len());
        for p in &settled {
            let truth = match self.last {
                Some(l) if p.time < time => interpolate(l, sample, p.time),
                _ => value,
            };
            let error = (p.value - truth).abs();
            self.error_sum += error;
            self.stats.settled += 1;
            self.stats.max_abs_error = self.stats.max_abs_error.max(error);
            replaced.push(json!({"time_ms": p.time, "value": p.value, "error": error}));
        }
        if let Some(l) = self.last {
            let slope = (value - l.value) / (time - l.time) as f64;
            self.velocity = Some(self.velocity.map_or(slope, |v| 0.5 * v + 0.5 * slope));
        }
        self.prev = self.last;
        self.last = Some(sample);
        self.last_arrival = now;
        self.stats.samples += 1;
        self.stats.last_value = Some(value);
        self.stats.last_time_ms = Some(time);
        self.due = Some(now.saturating_add(self.spec.cadence_ms).saturating_add(self.spec.grace_ms));
        let payload = json!({
            "series": self.spec.id,
            "provisional": false,
            "time_ms": time,
            "value": value,
            "replaced": replaced,
        });
        Some(Emission { kind: "definitive", payload: payload.to_string() })
    }

    /// At server time `now`: the provisional value due, if one is.
    pub fn overdue(&mut self, now: Time) -> Option<Emission> {
        let due = self.due.filter(|d| *d <= now)?;
        let last = self.last?;
        if self.outstanding.len() >= self.spec.max_provisional as usize {
            self.due = None;
            return None;
        }
        let time = last.time.saturating_add(self.spec.cadence_ms * (self.outstanding.len() as u64 + 1));
        let value = self.estimate(last, time);
        self.outstanding.push(Provisional { time, value });
        self.stats.provisional += 1;
        self.due = Some(due.saturating_add(self.spec.cadence_ms));
        let payload = json!({
            "series": self.spec.id,
            "provisional": true,
            "time_ms": time,
            "value": value,
            "age_ms": now.saturating_sub(self.last_arrival),
            "estimator": self.spec.estimator.as_str(),
        });
        Some(Emission { kind: "provisional", payload: payload.to_string() })
    }

    fn estimate(&self, last: Sample, at: u64) -> f64 {
        let dt = at.saturating_sub(last.time) as f64;
        match self.spec.estimator {
            Estimator::HoldLast => last.value,
            Estimator::Linear => match self.prev {
                Some(p) => last.value + (last.value - p.value) / (last.time - p.time) as f64 * dt,
                None => last.value,
            },
            Estimator::ConstantVelocity => last.value + self.velocity.unwrap_or(0.0) * dt,
        }
    }

    /// Its counters as they stand.
    pub fn stats(&self) -> BufferStats {
        let mut s = self.stats.clone();
        let total = s.provisional + s.samples;
        s.provisional_share = if total == 0 { 0.0 } else { s.provisional as f64 / total as f64 };
        s.mean_abs_error = if s.settled == 0 { 0.0 } else { self.error_sum / s.settled as f64 };
        s.outstanding = self.outstanding.len() as u64;
        s
    }

    /// The output topic of an emission.
    pub fn topic_of(&self, e: &Emission) -> Arc<str> {
        format!("{}.{}", self.spec.output, e.kind).into()
    }
}

fn interpolate(a: Sample, b: Sample, at: u64) -> f64 {
    let f = (at - a.time) as f64 / (b.time - a.time) as f64;
    a.value + (b.value - a.value) * f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(estimator: Estimator) -> BufferSpec {
        BufferSpec {
            namespace: String::new(),
            id: "x".into(),
            topic: "pose".into(),
            pointer: "/x".into(),
            cadence_ms: 100,
            grace_ms: 0,
            estimator,
            output: "pose.x".into(),
            max_provisional: 3,
        }
    }

    fn buffer(estimator: Estimator) -> Buffer {
        let s = spec(estimator);
        let p = s.validate(256, 100).unwrap();
        Buffer::new(s, p)
    }

    fn v(x: f64) -> Vec<u8> {
        format!("{{\"x\":{x}}}").into_bytes()
    }

    #[test]
    fn a_definition_is_checked_field_by_field() {
        let mut s = spec(Estimator::Linear);
        s.pointer = "x".into();
        assert!(s.validate(256, 100).unwrap_err().to_string().contains("pointer"));
        let mut s = spec(Estimator::Linear);
        s.output = "pose".into();
        s.topic = "pose.>".into();
        assert!(s.validate(256, 100).unwrap_err().to_string().contains("own topic"));
        let mut s = spec(Estimator::Linear);
        s.max_provisional = 0;
        assert!(s.validate(256, 100).is_err());
        assert_eq!(Estimator::parse("constant-velocity").unwrap(), Estimator::ConstantVelocity);
        assert!(Estimator::parse("kalman").is_err());
    }

    #[test]
    fn linear_extrapolation_is_settled_with_its_error() {
        let mut b = buffer(Estimator::Linear);
        b.sample(0, 0, &v(0.0)).unwrap();
        b.sample(100, 100, &v(1.0)).unwrap();
        assert_eq!(b.next_deadline(), Some(200));
        assert!(b.overdue(199).is_none());
        let p = b.overdue(200).unwrap();
        let p: serde_json::Value = serde_json::from_str(&p.payload).unwrap();
        assert_eq!(p["value"], 2.0);
        assert_eq!(p["time_ms"], 200);
        assert_eq!(p["age_ms"], 100);
        // The real sample for 200 comes late, with 2.5.
        let d = b.sample(250, 200, &v(2.5)).unwrap();
        let d: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
        assert_eq!(d["replaced"][0]["error"], 0.5);
        let s = b.stats();
        assert_eq!((s.samples, s.provisional, s.settled), (3, 1, 1));
        assert!((s.provisional_share - 0.25).abs() < 1e-9);
        assert_eq!(s.max_abs_error, 0.5);
    }

    #[test]
    fn provisional_values_stop_at_the_bound_and_bad_samples_are_counted() {
        let mut b = buffer(Estimator::HoldLast);
        b.sample(0, 0, &v(5.0));
        for t in [100, 200, 300] {
            assert!(b.overdue(t).is_some());
        }
        assert!(b.overdue(400).is_none());
        assert_eq!(b.next_deadline(), None);
        assert!(b.sample(410, 0, &v(1.0)).is_none());
        assert!(b.sample(410, 500, b"{\"y\":1}").is_none());
        let s = b.stats();
        assert_eq!((s.stale, s.invalid, s.outstanding), (1, 1, 3));
        // One sample at 400 settles those expected at 100..=400 against the line from 0 to 400.
        let d = b.sample(420, 400, &v(9.0)).unwrap();
        let d: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
        assert_eq!(d["replaced"].as_array().unwrap().len(), 3);
        assert_eq!(d["replaced"][0]["error"], 1.0);
        assert_eq!(b.stats().outstanding, 0);
    }
}
