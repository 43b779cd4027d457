//! Conversions between tick rounds' wire messages and the engine's types (see
//! `lockstep_core::round`).

use lockstep_core::io::Request;
use lockstep_core::round::{Members, MergeOrder, OpenRound, RoundRecord, RoundView, SeriesSpec, SeriesStatus};
use lockstep_core::CoreError;

use crate::v1;

/// A `RoundAnswer` as the engine's request.
pub fn answer(a: v1::RoundAnswer) -> Request {
    Request::RoundAnswer { series: a.series, round: a.round, output_json: a.output_json }
}

/// A series spec from the wire: an explicit agent set, or a role when the set is empty.
pub fn spec(s: v1::RoundSeriesSpec) -> Result<SeriesSpec, CoreError> {
    let members = match (s.agents.is_empty(), s.role.is_empty()) {
        (false, true) => Members::Agents(s.agents),
        (true, false) => Members::Role(s.role),
        (false, false) => {
            return Err(CoreError::Invalid { what: "participants", reason: "name agents or a role, not both".into() })
        }
        (true, true) => {
            return Err(CoreError::Invalid { what: "participants", reason: "name agents or a role".into() })
        }
    };
    Ok(SeriesSpec {
        namespace: s.namespace,
        name: s.name,
        members,
        timeout_ms: s.timeout_ms,
        context_key: s.context_key,
        topic: s.topic,
        cadence_ms: s.cadence_ms,
        order: MergeOrder::parse(&s.merge_order)?,
        input_json: s.input_json,
    })
}

/// A series spec on the wire.
pub fn spec_info(s: &SeriesSpec) -> v1::RoundSeriesSpec {
    let (agents, role) = match &s.members {
        Members::Agents(ids) => (ids.clone(), String::new()),
        Members::Role(r) => (Vec::new(), r.clone()),
    };
    v1::RoundSeriesSpec {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        agents,
        role,
        timeout_ms: s.timeout_ms,
        context_key: s.context_key.clone(),
        topic: s.topic.clone(),
        cadence_ms: s.cadence_ms,
        merge_order: s.order.as_str().to_owned(),
        input_json: s.input_json.clone(),
    }
}

/// An open round on the wire.
pub fn open_info(series: &str, o: &OpenRound) -> v1::RoundInfo {
    v1::RoundInfo {
        series: series.to_owned(),
        round: o.round,
        open: true,
        driver: o.driver.clone(),
        opened_at_ms: o.opened_at,
        deadline_ms: o.deadline,
        participants: o.participants.clone(),
        answered: o
            .answers
            .iter()
            .map(|(a, _, at)| v1::RoundAnswerInfo { agent: a.to_string(), after_ms: at.saturating_sub(o.opened_at) })
            .collect(),
        missed: o.missed.iter().map(|m| v1::RoundMiss { agent: m.agent.clone(), why: m.why.clone() }).collect(),
        skipped: o.skipped.clone(),
        waiting: o.waiting.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// A closed round on the wire.
pub fn record_info(series: &str, r: &RoundRecord) -> v1::RoundInfo {
    v1::RoundInfo {
        series: series.to_owned(),
        round: r.round,
        open: false,
        driver: r.driver.clone(),
        opened_at_ms: r.opened_at,
        deadline_ms: 0,
        closed_at_ms: r.closed_at,
        closing: r.closing.as_str().to_owned(),
        participants: r.participants.clone(),
        answered: r
            .answered
            .iter()
            .map(|(a, after)| v1::RoundAnswerInfo { agent: a.clone(), after_ms: *after })
            .collect(),
        missed: r.missed.iter().map(|m| v1::RoundMiss { agent: m.agent.clone(), why: m.why.clone() }).collect(),
        skipped: r.skipped.clone(),
        context_version: r.context_version,
        merge_error: r.merge_error.clone(),
        waiting: Vec::new(),
    }
}

/// A round, open or closed, on the wire.
pub fn round_info(series: &str, view: &RoundView) -> v1::RoundInfo {
    match view {
        RoundView::Open(o) => open_info(series, o),
        RoundView::Closed(r) => record_info(series, r),
    }
}

/// A series on the wire; `retained` says whether its retained rounds go with it.
pub fn series_info(s: &SeriesStatus, retained: bool) -> v1::RoundSeriesInfo {
    let name = &s.spec.name;
    v1::RoundSeriesInfo {
        spec: Some(spec_info(&s.spec)),
        created_at_ms: s.created_at,
        last_round: s.last_round,
        next_tick_ms: s.next_tick.unwrap_or(0),
        open_round: s.open.as_ref().map(|o| open_info(name, o)),
        retained: if retained { s.retained.iter().map(|r| record_info(name, r)).collect() } else { Vec::new() },
    }
}
