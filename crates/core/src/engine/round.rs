//! The engine's side of tick rounds: series created and removed by clients, rounds opened by the
//! server's cadence timer or by a client, inputs sent to the participants' sessions, answers
//! taken, rounds closed (all answered, deadline, participants gone), misses counted by the
//! breakers, answers merged into shared context through its write path, the merged result
//! published on the series' topic, and what is kept. The rules themselves are in
//! [`crate::round`].

use std::sync::Arc;

use bytes::Bytes;

use super::{Engine, Timer, Touched};
use crate::breaker::FailureKind;
use crate::context::{Expect, Lifetime, Op, Write, Writer};
use crate::durable::Change;
use crate::error::CoreError;
use crate::io::{Frame, Reply, RoundCall, RoundDone, Time};
use crate::name;
use crate::round::{self, MemberFact, Members, RoundView, Series, SeriesImage, SeriesStatus};

/// A series' key in the engine: (namespace, name).
type SeriesKey = (Arc<str>, Arc<str>);

impl Engine {
    /// A client's call on round series.
    pub(super) fn round_call(&mut self, now: Time, call: RoundCall) -> Result<RoundDone, CoreError> {
        match call {
            RoundCall::CreateSeries(spec) => self.create_series(now, *spec),
            RoundCall::OpenRound { namespace, series, round, input_json, driver } => {
                let key = self.series_key(&namespace, &series)?;
                let s = &self.rounds[&key];
                if s.spec.cadence_ms > 0 {
                    return Err(CoreError::invalid(
                        "round opening",
                        format!("series '{series}' is driven by the server every {} ms", s.spec.cadence_ms),
                    ));
                }
                s.check_open(round)?;
                let settings = &self.config.rounds;
                let input =
                    round::parse_json("round input", &input_json, settings.max_input_bytes, "rounds.max_input_bytes")?;
                let driver = if driver.is_empty() { "client".to_owned() } else { driver };
                name::validate("round driver", &driver)?;
                Ok(self.open_round(now, &key, &driver, input.to_string().into()))
            }
            RoundCall::RemoveSeries { namespace, series } => {
                let key = self.series_key(&namespace, &series)?;
                if self.rounds[&key].open.is_some() {
                    self.close_round(now, &key);
                }
                let s = self.rounds.remove(&key).expect("looked up");
                self.timers.cancel(&Timer::RoundTick { ns: key.0.clone(), series: key.1.clone() });
                self.touch(Touched::RoundSeries(key.0, key.1));
                Ok(RoundDone { round: s.last_round, deadline: 0, participants: Vec::new() })
            }
        }
    }

    /// The key of an existing series.
    fn series_key(&self, namespace: &str, series: &str) -> Result<SeriesKey, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        name::validate("round series name", series)?;
        self.rounds
            .get_key_value(&(Arc::from(ns), Arc::from(series)))
            .map(|(k, _)| k.clone())
            .ok_or_else(|| CoreError::UnknownRoundSeries { namespace: ns.to_owned(), series: series.to_owned() })
    }

    fn create_series(&mut self, now: Time, mut spec: round::SeriesSpec) -> Result<RoundDone, CoreError> {
        let ns = self.key(name::namespace_or_default(&spec.namespace)?);
        let input = spec.validate(&self.config.rounds, &self.config.context, self.config.limits.max_topic_len)?;
        spec.namespace = ns.to_string();
        let key: SeriesKey = (ns.clone(), spec.name.as_str().into());
        if let Some(existing) = self.rounds.get(&key) {
            // Creating the same series again is a no-op: a driver may declare it at every start.
            if existing.spec == spec {
                return Ok(RoundDone { round: existing.last_round, deadline: 0, participants: Vec::new() });
            }
            return Err(CoreError::RoundSeriesExists { series: spec.name });
        }
        let max = self.config.rounds.max_series_per_namespace;
        if self.rounds.keys().filter(|(n, _)| *n == ns).count() >= max {
            return Err(CoreError::Limit {
                what: "round series in the namespace",
                limit: max as u64,
                hint: "remove series that are no longer driven, or raise rounds.max_series_per_namespace",
            });
        }
        let series = Series::new(spec, &input, now);
        if let Some(at) = series.next_tick {
            self.timers.set(Timer::RoundTick { ns: key.0.clone(), series: key.1.clone() }, at);
        }
        self.rounds.insert(key.clone(), series);
        self.touch(Touched::RoundSeries(key.0, key.1));
        Ok(RoundDone { round: 0, deadline: 0, participants: Vec::new() })
    }

    /// How each member of a series stands now.
    fn member_facts(&self, ns: &Arc<str>, members: &Members) -> Vec<(Arc<str>, MemberFact)> {
        let n = self.namespaces.get(ns);
        let fact = |a: &crate::registry::Agent| {
            if !a.is_live() {
                MemberFact::Lost
            } else if a.breaker.is_open() || self.control.is_paused(ns, &a.id) {
                MemberFact::Held
            } else {
                MemberFact::Ready
            }
        };
        match members {
            Members::Agents(ids) => ids
                .iter()
                .map(|id| {
                    let f = n.and_then(|n| n.agents.get(id.as_str())).map_or(MemberFact::Absent, fact);
                    (Arc::from(id.as_str()), f)
                })
                .collect(),
            Members::Role(role) => n
                .map(|n| {
                    n.agents
                        .values()
                        .filter(|a| *a.role == **role && a.is_live())
                        .map(|a| (a.id.clone(), fact(a)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Opens the next round of `key` with `input`: every participant gets it on its session.
    fn open_round(&mut self, now: Time, key: &SeriesKey, driver: &str, input: Arc<str>) -> RoundDone {
        let members = self.rounds[key].spec.members.clone();
        let facts = self.member_facts(&key.0, &members);
        let s = self.rounds.get_mut(key).expect("the series exists");
        let asked = s.open(now, driver, input.clone(), facts);
        let open = s.open.as_ref().expect("just opened");
        let (round, deadline) = (open.round, open.deadline);
        let participants = open.participants.clone();
        self.timers.set(Timer::RoundDeadline { ns: key.0.clone(), series: key.1.clone() }, deadline);
        for agent in asked {
            let frame = Frame::RoundInput { series: key.1.clone(), round, input: input.clone(), deadline };
            self.send_fenced(&key.0, &agent, frame);
        }
        // The number is kept now: a restart never gives it out again.
        self.touch(Touched::RoundSeries(key.0.clone(), key.1.clone()));
        if self.rounds[key].complete() {
            self.close_round(now, key);
        }
        RoundDone { round, deadline, participants }
    }

    /// Closes the open round of `key` at `now` with the answers it has.
    fn close_round(&mut self, now: Time, key: &SeriesKey) {
        self.timers.cancel(&Timer::RoundDeadline { ns: key.0.clone(), series: key.1.clone() });
        let Some(s) = self.rounds.get_mut(key) else { return };
        let Some((mut record, patches, missed)) = s.close(now) else { return };
        let (context_key, topic) = (s.spec.context_key.clone(), s.spec.topic.clone());
        // Every miss of a registered agent is a failure for its breaker, within the isolation cap.
        for agent in missed {
            let agent: Arc<str> = agent.into();
            let capped = self.isolation_capped(now, &key.0, &agent);
            let transition = self
                .agent_mut(&key.0, &agent)
                .and_then(|a| a.breaker.record_failure_unless_capped(now, FailureKind::RoundMissed, capped));
            if let Some(t) = transition {
                self.breaker_moved(&key.0, &agent, t);
            }
        }
        let base = self.context.space(&key.0).and_then(|sp| sp.get(&context_key)).map(|e| e.current().value.clone());
        let merged = round::merge(base.as_deref(), &patches);
        let write = Write {
            namespace: key.0.to_string(),
            key: context_key,
            op: Op::Set(merged.to_string()),
            expect: Expect::Any,
            lifetime: Lifetime::Permanent,
        };
        let writer = Writer { name: format!("round:{}", key.1).into(), agent: None };
        match self.context_write(now, &key.0.clone(), &writer, &write) {
            Ok(w) => record.context_version = w.version,
            Err(e) => record.merge_error = e.to_string(),
        }
        if !topic.is_empty() && self.namespaces.contains_key(&key.0) {
            let limit = self.config.limits.max_payload_bytes;
            let mut payload = round::result_message(&key.1, &record, Some(&merged)).to_string();
            if payload.len() > limit {
                // The value is in the context key; the notice alone goes.
                payload = round::result_message(&key.1, &record, None).to_string();
            }
            // The result is published by the series itself; refused only if too large even so.
            let _ = self.publish(&key.0, &key.1, &topic, Bytes::from(payload), "application/json");
        }
        let settings = self.config.rounds.clone();
        if let Some(s) = self.rounds.get_mut(key) {
            s.retain(record, &settings);
        }
        self.touch(Touched::RoundSeries(key.0.clone(), key.1.clone()));
    }

    /// The deadline of a series' open round came.
    pub(super) fn round_deadline(&mut self, now: Time, ns: &Arc<str>, series: &Arc<str>) {
        let key = (ns.clone(), series.clone());
        if self.rounds.get(&key).and_then(|s| s.open.as_ref()).is_some_and(|o| o.deadline <= now) {
            self.close_round(now, &key);
        }
    }

    /// A server-driven series' round is due: the previous one closes if it is still open (its
    /// deadline is not later), and the next opens with the series' input.
    pub(super) fn round_tick(&mut self, now: Time, ns: &Arc<str>, series: &Arc<str>) {
        let key = (ns.clone(), series.clone());
        let Some(s) = self.rounds.get_mut(&key) else { return };
        let due = s.next_tick.unwrap_or(now);
        if let Some(next) = s.schedule_after(due, now) {
            self.timers.set(Timer::RoundTick { ns: ns.clone(), series: series.clone() }, next);
        }
        if self.rounds[&key].open.is_some() {
            self.close_round(now, &key);
        }
        let input = self.rounds[&key].input.clone();
        self.open_round(now, &key, "server", input);
    }

    /// An agent's answer to a round.
    pub(super) fn round_answer(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        agent: &Arc<str>,
        series: &str,
        round: u64,
        output_json: &str,
    ) -> Result<Reply, CoreError> {
        let key = self.series_key(ns, series)?;
        let settings = &self.config.rounds;
        let s = self.rounds.get_mut(&key).expect("looked up");
        s.answer(now, agent, round, output_json, settings)?;
        if s.complete() {
            self.close_round(now, &key);
        }
        Ok(Reply::Ok)
    }

    /// `agent` left or was lost: the open rounds waiting for it miss it now.
    pub(super) fn rounds_agent_gone(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, why: &str) {
        let mut done = Vec::new();
        for (key, s) in self.rounds.iter_mut().filter(|((n, _), _)| n == ns) {
            if s.participant_gone(agent, why) && s.complete() {
                done.push(key.clone());
            }
        }
        for key in done {
            self.close_round(now, &key);
        }
    }

    /// The change to keep for a series touched: its image, or its removal.
    pub(super) fn round_change(&self, ns: &Arc<str>, name: &Arc<str>) -> Change {
        match self.rounds.get(&(ns.clone(), name.clone())) {
            Some(s) => Change::RoundSeries(Box::new(s.image())),
            None => Change::RoundSeriesRemoved { namespace: ns.to_string(), name: name.to_string() },
        }
    }

    /// Takes back the kept series; server-driven ones tick again from `now`.
    pub(super) fn restore_rounds(&mut self, now: Time, images: Vec<SeriesImage>) -> Result<(), CoreError> {
        for image in images {
            let ns = self.key(name::namespace_or_default(&image.spec.namespace)?);
            name::validate("round series name", &image.spec.name)?;
            let s = Series::restore(image, now, &self.config.rounds);
            let key: SeriesKey = (ns, s.spec.name.as_str().into());
            if let Some(at) = s.next_tick {
                self.timers.set(Timer::RoundTick { ns: key.0.clone(), series: key.1.clone() }, at);
            }
            self.rounds.insert(key, s);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Reads

    /// The round series of `namespace`, in name order.
    pub fn round_series(&self, namespace: &str) -> Result<Vec<SeriesStatus>, CoreError> {
        let ns = name::namespace_or_default(namespace)?;
        Ok(self.rounds.iter().filter(|((n, _), _)| **n == *ns).map(|(_, s)| SeriesStatus::from(s)).collect())
    }

    /// Series `series` of `namespace`.
    pub fn round_series_get(&self, namespace: &str, series: &str) -> Result<SeriesStatus, CoreError> {
        let key = self.series_key(namespace, series)?;
        Ok(SeriesStatus::from(&self.rounds[&key]))
    }

    /// Round `round` of a series (0: its last), open or retained.
    pub fn round_get(&self, namespace: &str, series: &str, round: u64) -> Result<RoundView, CoreError> {
        let key = self.series_key(namespace, series)?;
        let s = &self.rounds[&key];
        let round = if round == 0 { s.last_round } else { round };
        s.find(round).ok_or_else(|| CoreError::RoundNotOpen {
            series: series.to_owned(),
            round,
            state: if round > s.last_round {
                format!("not opened yet; the last round opened is {}", s.last_round)
            } else {
                format!("no longer retained (the last {} closed rounds are kept)", self.config.rounds.retained)
            },
        })
    }
}
