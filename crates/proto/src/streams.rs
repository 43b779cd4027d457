//! Event-time streams on the wire: tick controller and latency buffer definitions, both ways, and
//! their status (see the `Streams` service).

use lockstep_core::latency::{BufferSpec, Estimator};
use lockstep_core::streams::{BufferView, StreamKind, TickerView};
use lockstep_core::ticker::{LatePolicy, TickerSpec};
use lockstep_core::CoreError;

use crate::v1;

/// A controller's definition from the wire (0 means the default for the idle timeout).
pub fn ticker_spec(s: v1::TickerSpec) -> Result<TickerSpec, CoreError> {
    Ok(TickerSpec {
        namespace: s.namespace,
        id: s.id,
        inputs: s.inputs,
        output: s.output,
        period_ms: s.period_ms,
        lateness_ms: s.lateness_ms,
        idle_timeout_ms: if s.idle_timeout_ms == 0 { 5_000 } else { s.idle_timeout_ms },
        max_skew_ms: s.max_skew_ms,
        late: LatePolicy::parse(&s.late_policy)?,
        min_sources: s.min_sources,
    })
}

/// A buffer's definition from the wire (0 means the default for `max_provisional`).
pub fn buffer_spec(s: v1::BufferSpec) -> Result<BufferSpec, CoreError> {
    Ok(BufferSpec {
        namespace: s.namespace,
        id: s.id,
        topic: s.topic,
        pointer: s.pointer,
        cadence_ms: s.cadence_ms,
        grace_ms: s.grace_ms,
        estimator: Estimator::parse(&s.estimator)?,
        output: s.output,
        max_provisional: if s.max_provisional == 0 { 10 } else { s.max_provisional },
    })
}

/// The kind a `StreamRef` names.
pub fn kind(text: &str) -> Result<StreamKind, CoreError> {
    match text {
        "ticker" => Ok(StreamKind::Ticker),
        "buffer" => Ok(StreamKind::Buffer),
        other => {
            Err(CoreError::Invalid { what: "stream kind", reason: format!("'{other}' is neither ticker nor buffer") })
        }
    }
}

fn ticker_spec_wire(s: &TickerSpec) -> v1::TickerSpec {
    v1::TickerSpec {
        namespace: s.namespace.clone(),
        id: s.id.clone(),
        inputs: s.inputs.clone(),
        output: s.output.clone(),
        period_ms: s.period_ms,
        lateness_ms: s.lateness_ms,
        idle_timeout_ms: s.idle_timeout_ms,
        max_skew_ms: s.max_skew_ms,
        late_policy: s.late.as_str().into(),
        min_sources: s.min_sources,
    }
}

fn buffer_spec_wire(s: &BufferSpec) -> v1::BufferSpec {
    v1::BufferSpec {
        namespace: s.namespace.clone(),
        id: s.id.clone(),
        topic: s.topic.clone(),
        pointer: s.pointer.clone(),
        cadence_ms: s.cadence_ms,
        grace_ms: s.grace_ms,
        estimator: s.estimator.as_str().into(),
        output: s.output.clone(),
        max_provisional: s.max_provisional,
    }
}

/// A controller with its counters and sources.
pub fn ticker_info(v: &TickerView) -> v1::TickerInfo {
    let s = &v.stats;
    v1::TickerInfo {
        spec: Some(ticker_spec_wire(&v.spec)),
        stats: Some(v1::TickerStats {
            events: s.events,
            ticks_emitted: s.ticks_emitted,
            corrections: s.corrections,
            late_dropped: s.late_dropped,
            late_next_tick: s.late_next_tick,
            forced: s.forced,
            idle_reports: s.idle_reports,
            skew_violations: s.skew_violations,
            skew_ms: s.skew_ms,
            refused: s.refused,
            buffered_events: s.buffered_events,
            buffered_bytes: s.buffered_bytes,
            next_tick: s.next_tick,
            watermark_ms: s.watermark_ms,
        }),
        sources: v
            .sources
            .iter()
            .map(|src| v1::TickerSource {
                publisher: src.publisher.clone(),
                max_event_time_ms: src.max_event_time_ms,
                watermark_ms: src.watermark_ms,
                last_heard_ms: src.last_heard_ms,
                idle: src.idle,
                events: src.events,
                lag_ms: src.lag_ms,
            })
            .collect(),
    }
}

/// A buffer with its counters.
pub fn buffer_info(v: &BufferView) -> v1::BufferInfo {
    let s = &v.stats;
    v1::BufferInfo {
        spec: Some(buffer_spec_wire(&v.spec)),
        stats: Some(v1::BufferStats {
            samples: s.samples,
            provisional: s.provisional,
            settled: s.settled,
            provisional_share: s.provisional_share,
            mean_abs_error: s.mean_abs_error,
            max_abs_error: s.max_abs_error,
            invalid: s.invalid,
            stale: s.stale,
            last_value: s.last_value,
            last_time_ms: s.last_time_ms,
            outstanding: s.outstanding,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_travel_both_ways_with_their_defaults() {
        let wire = v1::TickerSpec {
            id: "bars".into(),
            inputs: vec!["trades.>".into()],
            output: "ticks".into(),
            period_ms: 100,
            late_policy: "correction".into(),
            ..Default::default()
        };
        let spec = ticker_spec(wire.clone()).unwrap();
        assert_eq!(spec.idle_timeout_ms, 5_000);
        assert_eq!(spec.late, LatePolicy::Correction);
        assert_eq!(ticker_spec(ticker_spec_wire(&spec)).unwrap(), spec);
        let bad = v1::TickerSpec { late_policy: "later".into(), ..wire };
        assert!(ticker_spec(bad).unwrap_err().to_string().contains("late policy"));
        let b =
            buffer_spec(v1::BufferSpec { id: "x".into(), estimator: "linear".into(), ..Default::default() }).unwrap();
        assert_eq!((b.estimator, b.max_provisional), (Estimator::Linear, 10));
        assert_eq!(buffer_spec(buffer_spec_wire(&b)).unwrap(), b);
        assert!(kind("queue").is_err());
    }
}
