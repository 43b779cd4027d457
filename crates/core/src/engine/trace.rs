//! The engine's side of execution traces: calls from the shell's trace store (whose callers prove
//! their session with its resume token), waits on the engine's timers, claims passed on when a
//! session goes, retention on a timer, and what is kept. The rules are in [`crate::trace`].

use std::sync::Arc;

use super::{Engine, Timer, Touched};
use crate::command::Gated;
use crate::durable::Change;
use crate::error::CoreError;
use crate::io::{Output, SessionCall, Time, TraceEvent, TraceInput};
use crate::trace::{Asker, ClaimOutcome, Evicted, LineageView, Notice, Record, Recorded, Trace, TraceStats};

impl Engine {
    /// Carries out one call on the trace store.
    pub(super) fn trace_input(&mut self, now: Time, input: TraceInput) {
        let settings = &self.config.traces;
        let event = match input {
            TraceInput::Lookup { origin, namespace, tool, input } => {
                let found = crate::name::namespace_or_default(&namespace)
                    .and_then(|ns| self.traces.lookup(now, ns, &tool, &input, settings));
                match found {
                    Ok(Some(trace)) => TraceEvent::Found { origin, trace: Box::new(trace) },
                    Ok(None) => TraceEvent::Miss { origin },
                    Err(error) => TraceEvent::Refused { origin, error },
                }
            }
            TraceInput::Get { origin, namespace, id } => match crate::name::namespace_or_default(&namespace) {
                Ok(ns) => match self.traces.get(now, ns, &id) {
                    Some(trace) => TraceEvent::Found { origin, trace: Box::new(trace) },
                    None => {
                        TraceEvent::Refused { origin, error: CoreError::UnknownTrace { namespace: ns.to_owned(), id } }
                    }
                },
                Err(error) => TraceEvent::Refused { origin, error },
            },
            TraceInput::GetOrClaim { origin, call, tool, input, wait_ms } => {
                match self.trace_get_or_claim(now, origin, &call, &tool, &input, wait_ms) {
                    Ok(event) => event,
                    Err(error) => TraceEvent::Refused { origin, error },
                }
            }
            TraceInput::Check { origin, call, record } => {
                let checked =
                    self.trace_writer(&call).and_then(|a| self.traces.check(&a, &record, &self.config.traces));
                match checked {
                    Ok(id) => TraceEvent::Go { origin, id },
                    Err(error) => TraceEvent::Refused { origin, error },
                }
            }
            TraceInput::Record { origin, call, record } => {
                match self.trace_writer(&call).and_then(|a| self.trace_record(now, &a, *record)) {
                    Ok(r) => TraceEvent::Recorded { origin, trace: r.trace, new: r.new },
                    Err(error) => TraceEvent::Refused { origin, error },
                }
            }
            TraceInput::Release { origin, call, tool, input } => {
                let released =
                    self.trace_asker(&call).and_then(|a| self.traces.release(&a, &tool, &input, &self.config.traces));
                match released {
                    Ok(notices) => {
                        self.trace_notices(notices);
                        TraceEvent::Released { origin }
                    }
                    Err(error) => TraceEvent::Refused { origin, error },
                }
            }
            TraceInput::Used { namespace, id } => {
                self.traces.used(now, &namespace, &id);
                return;
            }
            TraceInput::Cancel { origin } => {
                self.timers.cancel(&Timer::TraceWait { origin });
                let notices = self.traces.cancel(now, origin, false);
                self.trace_notices(notices);
                return;
            }
        };
        self.outputs.push_back(Output::Trace(event));
    }

    /// The caller's live session.
    fn trace_asker(&self, call: &SessionCall) -> Result<Asker, CoreError> {
        let (namespace, agent) = self.live_caller(&call.namespace, &call.agent_id, &call.resume_token, "trace call")?;
        Ok(Asker { namespace, agent })
    }

    /// The agent of a call that records or claims a trace: refused while it is paused (or
    /// everything is stopped), like its other writes. Lookups, reads and releases stay open.
    fn trace_writer(&self, call: &SessionCall) -> Result<Asker, CoreError> {
        let asker = self.trace_asker(call)?;
        self.control.check(&asker.namespace, &asker.agent, Gated::Traces)?;
        Ok(asker)
    }

    fn trace_get_or_claim(
        &mut self,
        now: Time,
        origin: u64,
        call: &SessionCall,
        tool: &str,
        input: &str,
        wait_ms: u64,
    ) -> Result<TraceEvent, CoreError> {
        let asker = self.trace_writer(call)?;
        Ok(match self.traces.get_or_claim(now, origin, &asker, tool, input, wait_ms, &self.config.traces)? {
            ClaimOutcome::Hit(trace) => TraceEvent::Found { origin, trace },
            ClaimOutcome::Claimed { id } => TraceEvent::Claimed { origin, id },
            ClaimOutcome::Wait { id, holder, deadline } => {
                self.timers.set(Timer::TraceWait { origin }, deadline);
                TraceEvent::Waiting { origin, id, holder }
            }
        })
    }

    /// Records a trace produced by `asker`: the one entry point for agents' tool calls (through
    /// [`TraceInput::Record`]) and for the engine's own producers (a completed task's output,
    /// recorded inline with [`crate::trace::TraceOutput::inline`]).
    pub(crate) fn trace_record(&mut self, now: Time, asker: &Asker, record: Record) -> Result<Recorded, CoreError> {
        let mut recorded = self.traces.record(now, asker, record, &self.config.traces)?;
        if recorded.new {
            self.touch(Touched::Trace(asker.namespace.clone(), Arc::from(recorded.trace.id.as_str())));
        }
        let evicted = std::mem::take(&mut recorded.evicted);
        self.traces_evicted(evicted);
        let notices = std::mem::take(&mut recorded.notices);
        self.trace_notices(notices);
        self.arm_trace_retention();
        Ok(recorded)
    }

    /// `owner` (an open task) pins trace `id`: it and its lineage are kept until unpinned.
    pub(crate) fn trace_pin(&mut self, ns: &Arc<str>, id: &str, owner: &str) -> bool {
        let pinned = self.traces.pin(ns, id, owner);
        if pinned {
            self.touch(Touched::Trace(ns.clone(), Arc::from(id)));
            self.arm_trace_retention();
        }
        pinned
    }

    /// `owner` unpins every trace of `ns` it pinned (a task closed).
    pub(crate) fn trace_unpin(&mut self, ns: &Arc<str>, owner: &str) {
        for id in self.traces.unpin(ns, owner) {
            self.touch(Touched::Trace(ns.clone(), Arc::from(id.as_str())));
        }
        self.arm_trace_retention();
    }

    fn traces_evicted(&mut self, evicted: Vec<Evicted>) {
        for e in evicted {
            self.touch(Touched::Trace(Arc::from(e.namespace.as_str()), Arc::from(e.id.as_str())));
            self.outputs.push_back(Output::Trace(TraceEvent::Evicted(e)));
        }
    }

    /// Answers the waiters a change of claims concerns.
    fn trace_notices(&mut self, notices: Vec<Notice>) {
        for n in notices {
            let event = match n {
                Notice::Found { origin, trace } => {
                    self.timers.cancel(&Timer::TraceWait { origin });
                    TraceEvent::Found { origin, trace }
                }
                Notice::Claimed { origin, id } => {
                    self.timers.cancel(&Timer::TraceWait { origin });
                    TraceEvent::Claimed { origin, id }
                }
                Notice::Failed { origin, error } => {
                    self.timers.cancel(&Timer::TraceWait { origin });
                    TraceEvent::Refused { origin, error }
                }
            };
            self.outputs.push_back(Output::Trace(event));
        }
    }

    /// A waiter's time ran out.
    pub(super) fn trace_wait_over(&mut self, now: Time, origin: u64) {
        let notices = self.traces.cancel(now, origin, true);
        self.trace_notices(notices);
    }

    /// The agent's session is gone: its claims pass on and its waits end.
    pub(super) fn traces_agent_gone(&mut self, ns: &Arc<str>, agent: &Arc<str>) {
        let notices = self.traces.agent_gone(ns, agent);
        self.trace_notices(notices);
    }

    /// Retention by age: evicts what came of age, and arms the timer for the next.
    pub(super) fn trace_retention(&mut self, now: Time) {
        let evicted = self.traces.expire(now, &self.config.traces);
        self.traces_evicted(evicted);
        self.arm_trace_retention();
    }

    fn arm_trace_retention(&mut self) {
        match self.traces.next_expiry(&self.config.traces) {
            Some(at) => self.timers.set(Timer::TraceRetention, at),
            None => self.timers.cancel(&Timer::TraceRetention),
        }
    }

    /// The change to keep for trace `id` of `ns`: as it is now, or its removal.
    pub(super) fn trace_change(&self, ns: &str, id: &str) -> Change {
        match self.traces.peek(ns, id) {
            Some(t) => Change::TracePut(Box::new(t.clone())),
            None => Change::TraceRemoved { namespace: ns.to_owned(), id: id.to_owned() },
        }
    }

    /// Takes back the kept traces.
    pub(super) fn restore_traces(&mut self, traces: Vec<Trace>) {
        self.traces.restore(traces);
        self.arm_trace_retention();
    }

    /// At start, once the shell knows which output blobs it holds (`present`): traces whose blob
    /// is missing are forgotten (their record was never answered). Returns the blob names still
    /// referenced, so the shell can drop the others.
    pub fn retain_trace_blobs(
        &mut self,
        present: &std::collections::HashSet<String>,
    ) -> std::collections::HashSet<String> {
        let (gone, kept) = self.traces.retain_blobs(|b| present.contains(b));
        for e in gone {
            self.touch(Touched::Trace(Arc::from(e.namespace.as_str()), Arc::from(e.id.as_str())));
        }
        self.arm_trace_retention();
        kept
    }

    /// From now on, remembers which traces change (recorded, pinned or unpinned, evicted), for a
    /// shell that serves lookups' hits from an index of its own ([`Engine::take_trace_index`]);
    /// every trace stored now counts as changed.
    pub fn track_trace_index(&mut self) {
        self.trace_index = Some(self.traces.keys().map(|(ns, id)| (ns.clone(), id.clone())).collect());
    }

    /// The traces changed since the last call, each once: as stored now (`Some`), or gone
    /// (`None`). Empty unless [`Engine::track_trace_index`] was called.
    pub fn take_trace_index(&mut self) -> Vec<(Arc<str>, Arc<str>, Option<Trace>)> {
        let Some(changed) = self.trace_index.as_mut() else { return Vec::new() };
        if changed.is_empty() {
            return Vec::new();
        }
        let mut changed = std::mem::take(changed);
        changed.sort_unstable();
        changed.dedup();
        changed
            .into_iter()
            .map(|(ns, id)| {
                let trace = self.traces.peek(&ns, &id).cloned();
                (ns, id, trace)
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------------
    // Reads

    /// The trace store's counters.
    pub fn trace_stats(&self) -> TraceStats {
        self.traces.stats()
    }

    /// The trace `id` of `namespace` as stored (a read: not counted as a use).
    pub fn trace_show(&self, namespace: &str, id: &str) -> Result<Trace, CoreError> {
        let ns = crate::name::namespace_or_default(namespace)?;
        self.traces
            .peek(ns, id)
            .cloned()
            .ok_or_else(|| CoreError::UnknownTrace { namespace: ns.to_owned(), id: id.to_owned() })
    }

    /// What trace `id` was computed from, and what was computed from it.
    pub fn trace_lineage(&self, namespace: &str, id: &str) -> Result<LineageView, CoreError> {
        let ns = crate::name::namespace_or_default(namespace)?;
        self.traces.lineage(ns, id)
    }
}
