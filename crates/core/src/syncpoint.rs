//! Sync points: barriers where agents meet before going on.
//!
//! A sync point is created by its first arrival, which also defines who must come: an explicit set
//! of agents, any N agents, or every agent holding a role when the point is created, optionally with
//! a quorum k (k of the set or role suffice). Later arrivals must describe it the same way. When the
//! last required participant (or the k-th, with a quorum) arrives, every waiter is
//! released at once with the same [`SyncOutcome`] (arrival order and what each one brought, and a
//! digest of both); a waiter that asked for a summary is answered with the count, the digest and its
//! own place instead, so a round of N summary waiters costs O(N) bytes rather than O(N²). On the
//! deadline every waiter gets `DeadlineExceeded` naming who never arrived; a required participant
//! that is lost or leaves fails the point at once with `Aborted` (with a quorum: once fewer than k
//! can still arrive). A finished point answers repeated arrivals with its recorded outcome until it
//! is cleaned up; the outcome of a quorum point names the participants that had not arrived as late,
//! and a late participant that arrives afterwards gets that outcome at once.
//!
//! This module holds the rules of one point; the engine wires points to the registry and clock.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Limits;
use crate::durable::{ArrivalImage, SyncFailure, SyncPointImage};
use crate::error::CoreError;
use crate::io::{Reply, Time};
use crate::name;
use crate::registry::AgentStatus;

/// Who must arrive at a sync point. Kept as `{"agents":[..]}`, `{"count":n}` or `{"role":".."}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Participants {
    /// Exactly these agents (subset sync). The arriving agent must be one of them.
    Agents(Vec<String>),
    /// Any N distinct agents.
    Count(u32),
    /// Every live agent with this role when the point is created.
    Role(String),
}

impl Participants {
    /// Checks names, duplicates and sizes.
    pub fn validate(&self, limits: &Limits) -> Result<(), CoreError> {
        let max = limits.max_sync_participants;
        match self {
            Participants::Agents(ids) => {
                if ids.is_empty() {
                    return Err(CoreError::invalid("participants", "the agent set is empty"));
                }
                if ids.len() > max {
                    return Err(CoreError::invalid(
                        "participants",
                        format!("{} agents; the limit is {max}", ids.len()),
                    ));
                }
                let mut seen = BTreeSet::new();
                for id in ids {
                    name::validate("participant agent id", id)?;
                    if !seen.insert(id.as_str()) {
                        return Err(CoreError::invalid("participants", format!("agent '{id}' is listed twice")));
                    }
                }
                Ok(())
            }
            Participants::Count(n) => {
                if *n == 0 || *n as usize > max {
                    return Err(CoreError::invalid(
                        "participants",
                        format!("count must be between 1 and {max}, got {n}"),
                    ));
                }
                Ok(())
            }
            Participants::Role(role) => name::validate("participant role", role),
        }
    }

    /// A short description for messages: `{a, b}`, `any 3`, `role trader`.
    pub fn describe(&self) -> String {
        match self {
            Participants::Agents(ids) => {
                let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
                sorted.sort_unstable();
                format!("{{{}}}", sorted.join(", "))
            }
            Participants::Count(n) => format!("any {n}"),
            Participants::Role(role) => format!("role {role}"),
        }
    }

    /// [`Participants::describe`] with a quorum: `2 of {a, b, c}`.
    pub fn describe_quorum(&self, quorum: Option<u32>) -> String {
        match quorum {
            Some(k) => format!("{k} of {}", self.describe()),
            None => self.describe(),
        }
    }

    /// Checks a quorum against the participants it applies to: a set or a role (resolved, at the
    /// point's creation, to `resolved` agents), at least 1 and at most their number.
    pub fn validate_quorum(&self, quorum: Option<u32>, resolved: usize) -> Result<(), CoreError> {
        let Some(k) = quorum else { return Ok(()) };
        let of = match self {
            Participants::Count(_) => {
                return Err(CoreError::invalid(
                    "quorum",
                    "a quorum applies to a set of agents or a role; a count point is already released by any N",
                ))
            }
            Participants::Agents(ids) => format!("the {} agents of the set", ids.len()),
            Participants::Role(role) => format!("the {resolved} live agents of role {role}"),
        };
        if k == 0 || k as usize > resolved {
            return Err(CoreError::invalid("quorum", format!("{k} must be between 1 and {of}")));
        }
        Ok(())
    }
}

/// Who must arrive, as a point keeps it. An explicit set is the point's `required` set itself, so
/// that its ids are not kept twice: a point is kept for its whole retention after it finishes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Agents,
    Count(u32),
    Role(String),
}

/// What every waiter of a completed point receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    pub sync_id: String,
    /// Who arrived, in order.
    pub arrival_order: Vec<Arc<str>>,
    /// `payloads[i]` is what `arrival_order[i]` brought.
    pub payloads: Vec<Bytes>,
    /// Required participants that had not arrived when the point was released (the rest of a
    /// quorum point's set or role, or those a force-complete went without), sorted.
    pub late: Vec<Arc<str>>,
    /// Released by an operator's force-complete rather than by every participant arriving.
    pub forced: bool,
    /// [`SyncOutcome::digest_of`] the arrival order and payloads: waiters that were answered with a
    /// summary compare it to know they saw the same outcome.
    pub digest: u64,
    /// The protocol layer's encoding of this outcome, made once and shared by every waiter's reply
    /// (the engine never reads it).
    pub wire: std::sync::OnceLock<Bytes>,
}

/// Where a sync point is in its life (serialized as its [`SyncState::as_str`] name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    Waiting,
    Completed,
    Forced,
    TimedOut,
    Failed,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Waiting => "waiting",
            SyncState::Completed => "completed",
            SyncState::Forced => "forced",
            SyncState::TimedOut => "timed_out",
            SyncState::Failed => "failed",
        }
    }

    /// The state named by [`SyncState::as_str`].
    pub fn parse(name: &str) -> Option<SyncState> {
        [SyncState::Waiting, SyncState::Completed, SyncState::Forced, SyncState::TimedOut, SyncState::Failed]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl SyncOutcome {
    /// A stable 64-bit digest (FNV-1a) of an outcome's arrival order and payloads, each
    /// length-prefixed so that no two different outcomes are one byte string. Not a cryptographic
    /// hash: it tells honest participants whether they saw the same outcome.
    pub fn digest_of<'a>(arrivals: impl ExactSizeIterator<Item = (&'a str, &'a [u8])>) -> u64 {
        use std::hash::Hasher;
        let mut h = fnv::FnvHasher::default();
        h.write(&(arrivals.len() as u64).to_le_bytes());
        for (agent, payload) in arrivals {
            for part in [agent.as_bytes(), payload] {
                h.write(&(part.len() as u64).to_le_bytes());
                h.write(part);
            }
        }
        h.finish()
    }

    /// How many agents arrived.
    pub fn count(&self) -> u32 {
        self.arrival_order.len() as u32
    }
}

/// An agent waiting at a point, the request to answer when it is released, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub agent: Arc<str>,
    pub request_id: u64,
    /// Where it arrived, from 0; the outcome's count for a late arrival at a quorum point, which is
    /// not in the arrival order.
    pub position: u32,
    /// It asked for a summary rather than the whole outcome.
    pub summary: bool,
}

impl Waiter {
    /// The reply this waiter gets for `outcome`: the whole of it, or its summary.
    pub fn reply(&self, outcome: &Arc<SyncOutcome>) -> Reply {
        if self.summary {
            Reply::SyncSummary { outcome: outcome.clone(), position: self.position }
        } else {
            Reply::Sync(outcome.clone())
        }
    }
}

#[derive(Clone, Debug)]
struct Arrival {
    agent: Arc<str>,
    payload: Bytes,
    request_id: u64,
    summary: bool,
    at: Time,
}

/// What an arrival led to.
#[derive(Debug, PartialEq)]
pub enum Arrived {
    /// Recorded; wait for the others.
    Waiting,
    /// This arrival completed the point: answer every waiter with the outcome.
    Released { waiters: Vec<Waiter>, outcome: Arc<SyncOutcome> },
    /// The point had already finished: answer this arrival with the recorded result.
    AlreadyFinished(Reply),
}

/// Every waiter and the one answer they all get.
pub type Release = (Vec<Waiter>, Result<Arc<SyncOutcome>, CoreError>);

/// A snapshot of a point for status and diagnosis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    pub sync_id: String,
    pub state: SyncState,
    pub participants: String,
    /// k of a k-of-n point.
    pub quorum: Option<u32>,
    pub required: Vec<String>,
    pub required_count: u32,
    pub arrived: Vec<String>,
    pub missing: Vec<String>,
    pub created_at: Time,
    pub waiting_since: Time,
    pub deadline: Time,
    pub finished_at: Option<Time>,
    pub failure: Option<String>,
}

/// A plain-language reading of a point's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    pub status: SyncStatus,
    pub issues: Vec<String>,
    pub recommendations: Vec<String>,
}

/// One barrier.
#[derive(Clone, Debug)]
pub struct SyncPoint {
    id: String,
    kind: Kind,
    /// With a quorum k, the point is released when k of `required` have arrived.
    quorum: Option<u32>,
    /// The resolved set for explicit and role points; empty for counts.
    required: BTreeSet<Arc<str>>,
    /// How many arrivals release the point: the count, the quorum, or the whole set.
    required_count: usize,
    /// Participants of a quorum point that were lost or left before arriving, while enough others
    /// could still arrive (kept in memory only: after a restart they count as able to arrive).
    gone: BTreeSet<Arc<str>>,
    /// Arrivals with their requests, until the point is released: then its outcome holds who
    /// arrived and what each brought, and `arrived_at` when (a point that timed out or failed
    /// keeps its arrivals).
    arrivals: Vec<Arrival>,
    arrived_at: Vec<Time>,
    state: SyncState,
    created_at: Time,
    deadline: Time,
    finished_at: Option<Time>,
    /// The error boxed: most points complete, and a finished point is kept for its retention.
    result: Option<Result<Arc<SyncOutcome>, Box<CoreError>>>,
    /// The most bytes of ids and payloads the outcome may carry (see [`SyncPoint::limit_outcome`]).
    max_outcome_bytes: usize,
    /// The outcome's bytes known so far, framing included: the required ids, and what each
    /// arrival brought (with its id, for a count).
    outcome_bytes: usize,
}

/// What each id or payload adds to an outcome beyond its bytes: field tags and length prefixes.
const OUTCOME_ITEM_FRAMING: usize = 16;

impl SyncPoint {
    /// A new, empty point. `required` is the resolved participant set (empty for a count);
    /// `quorum` has been checked with [`Participants::validate_quorum`].
    pub fn new(
        id: String,
        participants: Participants,
        quorum: Option<u32>,
        required: BTreeSet<Arc<str>>,
        now: Time,
        timeout_ms: u64,
    ) -> Self {
        let outcome_bytes = required.iter().map(|r| r.len() + OUTCOME_ITEM_FRAMING).sum();
        let kind = match participants {
            Participants::Agents(_) => Kind::Agents,
            Participants::Count(n) => Kind::Count(n),
            Participants::Role(role) => Kind::Role(role),
        };
        let required_count = match (&kind, quorum) {
            (Kind::Count(n), _) => *n as usize,
            (_, Some(k)) => k as usize,
            _ => required.len(),
        };
        SyncPoint {
            id,
            kind,
            quorum,
            required,
            required_count,
            gone: BTreeSet::new(),
            arrivals: Vec::new(),
            arrived_at: Vec::new(),
            state: SyncState::Waiting,
            created_at: now,
            deadline: now.saturating_add(timeout_ms),
            finished_at: None,
            result: None,
            max_outcome_bytes: usize::MAX,
            outcome_bytes,
        }
    }

    /// Bounds the bytes of ids and payloads the outcome may carry: every participant receives the
    /// whole outcome in one message, so an arrival that could take it over `bytes` is refused
    /// (set by the engine from `Limits::frame_bytes` before each arrival).
    pub fn limit_outcome(&mut self, bytes: usize) {
        self.max_outcome_bytes = bytes;
    }

    /// What an arrival of `agent` with `payload_len` bytes adds to the outcome's bytes (its id
    /// too for a count, whose ids are not known beforehand).
    fn outcome_share(&self, agent: &str, payload_len: usize) -> usize {
        let id = match self.kind {
            Kind::Count(_) => agent.len() + OUTCOME_ITEM_FRAMING,
            _ => 0,
        };
        id + payload_len + OUTCOME_ITEM_FRAMING
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who must arrive, as the first arrival defined it (an explicit set sorted).
    pub fn participants(&self) -> Participants {
        match &self.kind {
            Kind::Agents => Participants::Agents(self.required.iter().map(|r| r.to_string()).collect()),
            Kind::Count(n) => Participants::Count(*n),
            Kind::Role(role) => Participants::Role(role.clone()),
        }
    }

    /// Whether `requested` describes this point as its first arrival did (an explicit set in any
    /// order; validated sets hold no id twice).
    fn defined_as(&self, requested: &Participants) -> bool {
        match (&self.kind, requested) {
            (Kind::Agents, Participants::Agents(ids)) => {
                ids.len() == self.required.len() && ids.iter().all(|id| self.required.contains(id.as_str()))
            }
            (Kind::Count(n), Participants::Count(m)) => n == m,
            (Kind::Role(a), Participants::Role(b)) => a == b,
            _ => false,
        }
    }

    pub fn state(&self) -> SyncState {
        self.state
    }

    pub fn is_waiting(&self) -> bool {
        self.state == SyncState::Waiting
    }

    /// When the point times out (if still waiting).
    pub fn deadline(&self) -> Time {
        self.deadline
    }

    /// When the point finished, if it has.
    pub fn finished_at(&self) -> Option<Time> {
        self.finished_at
    }

    /// Whether `agent` must arrive for the point to complete and has not yet.
    pub fn awaits(&self, agent: &str) -> bool {
        self.is_waiting() && self.required.contains(agent) && !self.has_arrived(agent)
    }

    fn has_arrived(&self, agent: &str) -> bool {
        self.arrived().any(|a| &**a == agent)
    }

    /// The agents that arrived, in order.
    fn arrived(&self) -> impl Iterator<Item = &Arc<str>> {
        let released = match &self.result {
            Some(Ok(outcome)) => &outcome.arrival_order[..],
            _ => &[],
        };
        self.arrivals.iter().map(|a| &a.agent).chain(released)
    }

    /// Records `waiter.agent` arriving with `payload`; `waiter.request_id` is answered on release,
    /// with a summary if `waiter.summary` (its `position` is ignored: the point assigns it).
    pub fn arrive(
        &mut self,
        now: Time,
        waiter: Waiter,
        payload: Bytes,
        requested: &Participants,
        requested_quorum: Option<u32>,
    ) -> Result<Arrived, CoreError> {
        let Waiter { agent, request_id, summary, .. } = waiter;
        let agent = &agent;
        if let Some(result) = &self.result {
            let place = match result {
                Ok(o) => o.arrival_order.iter().position(|a| a == agent),
                Err(_) => None,
            };
            // A late participant of a quorum point is answered with the outcome it missed.
            let place = match (result, place) {
                (Ok(o), None) if self.quorum.is_some() && self.required.contains(agent) => Some(o.arrival_order.len()),
                _ => place,
            };
            return match (result, place) {
                (Ok(outcome), Some(position)) => {
                    let waiter = Waiter { agent: agent.clone(), request_id, position: position as u32, summary };
                    Ok(Arrived::AlreadyFinished(waiter.reply(outcome)))
                }
                (Err(e), _) => Ok(Arrived::AlreadyFinished(Reply::Error((**e).clone()))),
                (Ok(_), None) => {
                    Err(CoreError::SyncFinished { sync_id: self.id.clone(), outcome: self.state.as_str().into() })
                }
            };
        }
        if !self.defined_as(requested) || self.quorum != requested_quorum {
            return Err(CoreError::SyncMismatch {
                sync_id: self.id.clone(),
                existing: self.participants().describe_quorum(self.quorum),
                requested: requested.describe_quorum(requested_quorum),
            });
        }
        if !matches!(self.kind, Kind::Count(_)) && !self.required.contains(agent) {
            return Err(CoreError::NotAParticipant {
                sync_id: self.id.clone(),
                agent: agent.to_string(),
                participants: self.describe_required(),
            });
        }
        if let Some(earlier) = self.arrivals.iter_mut().find(|a| a.agent == *agent) {
            // A repeated arrival (a client resending after a reconnect) re-attaches the waiter; the
            // first arrival's place and payload stand.
            earlier.request_id = request_id;
            earlier.summary = summary;
            return Ok(Arrived::Waiting);
        }
        let share = self.outcome_share(agent, payload.len());
        if self.outcome_bytes.saturating_add(share) > self.max_outcome_bytes {
            return Err(CoreError::Limit {
                what:
                    "bytes of a sync point's outcome (the ids and payloads every participant receives in one message)",
                limit: self.max_outcome_bytes as u64,
                hint: "bring smaller payloads (or references to data kept elsewhere), or meet in smaller groups",
            });
        }
        self.outcome_bytes += share;
        self.arrivals.push(Arrival { agent: agent.clone(), payload, request_id, summary, at: now });
        if self.arrivals.len() >= self.required_count {
            let (waiters, outcome) = self.finish(now, SyncState::Completed);
            return Ok(Arrived::Released { waiters, outcome });
        }
        Ok(Arrived::Waiting)
    }

    fn finish(&mut self, now: Time, state: SyncState) -> (Vec<Waiter>, Arc<SyncOutcome>) {
        let outcome = Arc::new(SyncOutcome {
            sync_id: self.id.clone(),
            arrival_order: self.arrivals.iter().map(|a| a.agent.clone()).collect(),
            payloads: self.arrivals.iter().map(|a| a.payload.clone()).collect(),
            late: self.required.iter().filter(|r| !self.has_arrived(r)).cloned().collect(),
            forced: state == SyncState::Forced,
            digest: SyncOutcome::digest_of(self.arrivals.iter().map(|a| (&*a.agent, &a.payload[..]))),
            wire: std::sync::OnceLock::new(),
        });
        let waiters = self.waiters();
        self.close(now, state, Ok(outcome.clone()));
        // The point is kept for its retention: the outcome holds who arrived and what each
        // brought, so only when is kept beside it.
        // (Collected from a borrow: collecting from the vector itself would reuse its allocation.)
        self.arrived_at = self.arrivals.iter().map(|a| a.at).collect();
        self.arrivals = Vec::new();
        (waiters, outcome)
    }

    fn close(&mut self, now: Time, state: SyncState, result: Result<Arc<SyncOutcome>, CoreError>) {
        self.state = state;
        self.finished_at = Some(now);
        self.result = Some(result.map_err(Box::new));
        // Kept for its retention as it is now: no room for arrivals that will not come.
        self.arrivals.shrink_to_fit();
        self.gone = BTreeSet::new();
    }

    fn waiters(&self) -> Vec<Waiter> {
        let waiter = |(i, a): (usize, &Arrival)| Waiter {
            agent: a.agent.clone(),
            request_id: a.request_id,
            position: i as u32,
            summary: a.summary,
        };
        self.arrivals.iter().enumerate().map(waiter).collect()
    }

    /// Required participants that have not arrived, sorted.
    pub fn missing(&self) -> Vec<String> {
        self.required.iter().filter(|r| !self.has_arrived(r)).map(|r| r.to_string()).collect()
    }

    fn describe_required(&self) -> String {
        let of = match &self.kind {
            Kind::Role(role) => {
                let names: Vec<&str> = self.required.iter().map(|r| &**r).collect();
                format!("role {role}: {{{}}}", names.join(", "))
            }
            _ => self.participants().describe(),
        };
        match self.quorum {
            Some(k) => format!("{k} of {of}"),
            None => of,
        }
    }

    /// Times the point out if it is still waiting at `now`.
    pub fn expire(&mut self, now: Time) -> Option<Release> {
        if !self.is_waiting() || now < self.deadline {
            return None;
        }
        let error = CoreError::SyncTimeout {
            sync_id: self.id.clone(),
            waited_ms: now.saturating_sub(self.created_at),
            missing: self.missing(),
            missing_count: (self.required_count.saturating_sub(self.arrivals.len())) as u32,
        };
        self.close(now, SyncState::TimedOut, Err(error.clone()));
        Some((self.waiters(), Err(error)))
    }

    /// Fails the point because required participant `agent` is gone (`why`: "lost its lease"...).
    pub fn participant_gone(&mut self, now: Time, agent: &str, why: &str) -> Option<Release> {
        if !self.awaits(agent) {
            return None;
        }
        let mut reason = format!("required participant '{agent}' {why} before arriving");
        let mut missing = vec![agent.to_owned()];
        if let Some(k) = self.quorum {
            self.gone.insert(agent.into());
            let can_arrive = self.arrivals.len()
                + self.required.iter().filter(|r| self.awaits(r) && !self.gone.contains(*r)).count();
            if can_arrive >= k as usize {
                return None;
            }
            reason.push_str(&format!(": only {can_arrive} of the {k} the quorum needs can still arrive"));
            missing = self.gone.iter().filter(|g| self.awaits(g)).map(|g| g.to_string()).collect();
        }
        let error = CoreError::SyncAborted { sync_id: self.id.clone(), reason, missing };
        self.close(now, SyncState::Failed, Err(error.clone()));
        Some((self.waiters(), Err(error)))
    }

    /// An operator releases every current waiter now, with what has arrived so far.
    pub fn force_complete(&mut self, now: Time) -> Result<(Vec<Waiter>, Arc<SyncOutcome>), CoreError> {
        if !self.is_waiting() {
            return Err(CoreError::SyncFinished { sync_id: self.id.clone(), outcome: self.state.as_str().into() });
        }
        Ok(self.finish(now, SyncState::Forced))
    }

    /// A snapshot of the point.
    /// When the point was created (its first arrival).
    pub fn created_at(&self) -> Time {
        self.created_at
    }

    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            sync_id: self.id.clone(),
            state: self.state,
            participants: self.describe_required(),
            quorum: self.quorum,
            required: self.required.iter().map(|r| r.to_string()).collect(),
            required_count: self.required_count as u32,
            arrived: self.arrived().map(|a| a.to_string()).collect(),
            missing: self.missing(),
            created_at: self.created_at,
            waiting_since: self
                .arrivals
                .first()
                .map(|a| a.at)
                .or(self.arrived_at.first().copied())
                .unwrap_or(self.created_at),
            deadline: self.deadline,
            finished_at: self.finished_at,
            failure: match &self.result {
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            },
        }
    }

    /// The point as it is kept (without its arrivals, which are kept one by one).
    pub fn image(&self, namespace: &str) -> SyncPointImage {
        SyncPointImage {
            namespace: namespace.to_owned(),
            sync_id: self.id.clone(),
            participants: self.participants(),
            quorum: self.quorum,
            required: self.required.iter().map(|r| r.to_string()).collect(),
            created_at: self.created_at,
            deadline: self.deadline,
            state: self.state,
            finished_at: self.finished_at,
            failure: match &self.result {
                Some(Err(e)) => Some(SyncFailure::of(e)),
                _ => None,
            },
            arrivals: Vec::new(),
        }
    }

    /// The arrival at `position` in the arrival order, as it is kept, if it is `agent`'s.
    pub fn arrival_image(&self, position: u32, agent: &str) -> Option<ArrivalImage> {
        let p = position as usize;
        let (id, payload, at) = match (&self.result, self.arrivals.get(p)) {
            (_, Some(a)) => (&a.agent, &a.payload, a.at),
            (Some(Ok(o)), None) => (o.arrival_order.get(p)?, o.payloads.get(p)?, *self.arrived_at.get(p)?),
            _ => return None,
        };
        (&**id == agent).then(|| ArrivalImage { agent_id: id.to_string(), payload: payload.clone(), at })
    }

    /// How many agents have arrived.
    pub fn arrival_count(&self) -> usize {
        self.arrived().count()
    }

    /// Rebuilds a kept point. Restored arrivals have no request to answer (request id 0): their
    /// agents send their arrival again when they reconnect, which re-attaches them. A finished
    /// point gets back the outcome its waiters got.
    pub fn restore(image: SyncPointImage) -> Result<SyncPoint, String> {
        let required: BTreeSet<Arc<str>> = image.required.iter().map(|r| Arc::from(r.as_str())).collect();
        let mut point = SyncPoint::new(image.sync_id, image.participants, image.quorum, required, image.created_at, 0);
        point.deadline = image.deadline;
        point.arrivals = image
            .arrivals
            .into_iter()
            .map(|a| Arrival {
                agent: a.agent_id.as_str().into(),
                payload: a.payload,
                request_id: 0,
                summary: false,
                at: a.at,
            })
            .collect();
        point.outcome_bytes +=
            point.arrivals.iter().map(|a| point.outcome_share(&a.agent, a.payload.len())).sum::<usize>();
        if image.state == SyncState::Waiting {
            return Ok(point);
        }
        let at = image.finished_at.ok_or_else(|| format!("sync point '{}' finished at no time", point.id))?;
        match (image.state, image.failure) {
            (SyncState::Completed | SyncState::Forced, _) => {
                point.finish(at, image.state);
            }
            (state, Some(failure)) => {
                let error = failure.into_error(&point.id);
                point.close(at, state, Err(error))
            }
            (state, None) => return Err(format!("sync point '{}' is {} but has no failure", point.id, state.as_str())),
        }
        Ok(point)
    }

    /// Reads the status in plain language. `agent_status` tells what the registry knows of an agent
    /// (`None`: not registered); `live_agents` is how many live agents the namespace has.
    pub fn diagnose(
        &self,
        now: Time,
        agent_status: impl Fn(&str) -> Option<AgentStatus>,
        live_agents: usize,
    ) -> Diagnosis {
        let status = self.status();
        let mut issues = Vec::new();
        let mut recs = Vec::new();
        match self.state {
            SyncState::Completed => {
                issues.push("none: every participant arrived".to_owned());
                recs.push("nothing to do; `cleanup` removes finished sync points before their retention ends".into());
            }
            SyncState::Forced => {
                issues.push(format!(
                    "released by force with {} of {} participants",
                    self.arrival_count(),
                    self.required_count
                ));
                if !status.missing.is_empty() {
                    recs.push(format!(
                        "find out why {} never arrived before relying on this round's results",
                        status.missing.join(", ")
                    ));
                }
            }
            SyncState::TimedOut | SyncState::Failed => {
                issues.push(status.failure.clone().unwrap_or_default());
                recs.push("start a new round under a new sync id once the missing agents are running (or `cleanup` and reuse this id)".into());
            }
            SyncState::Waiting => {
                let waited = now.saturating_sub(status.waiting_since);
                let budget = self.deadline.saturating_sub(self.created_at).max(1);
                issues.push(format!(
                    "waiting for {} of {} participants for {waited} ms ({}% of the {budget} ms timeout)",
                    self.required_count.saturating_sub(self.arrivals.len()),
                    self.required_count,
                    waited * 100 / budget
                ));
                if waited * 2 > budget {
                    recs.push("more than half the timeout has passed: consider a longer timeout if the participants are known to be slow".into());
                }
            }
        }
        if self.is_waiting() {
            for agent in &status.missing {
                match agent_status(agent) {
                    None => {
                        issues.push(format!("'{agent}' is not registered"));
                        recs.push(format!("start agent '{agent}', or check the sync point names it correctly (same namespace, same spelling)"));
                    }
                    Some(AgentStatus::Lost) => {
                        issues.push(format!("'{agent}' lost its lease"));
                        recs.push(format!("check the process and network of '{agent}'"));
                    }
                    Some(AgentStatus::Paused) => {
                        issues.push(format!("'{agent}' is paused"));
                        recs.push(format!("resume '{agent}' so it can arrive"));
                    }
                    Some(other) => {
                        issues.push(format!("'{agent}' is registered ({}) but has not arrived", other.as_str()));
                        recs.push(format!(
                            "check the logs of '{agent}': it may still be working, or waiting at another sync id"
                        ));
                    }
                }
            }
            if let Kind::Count(n) = self.kind {
                if live_agents < n as usize {
                    issues.push(format!("the namespace has {live_agents} live agents but this point needs {n}"));
                    recs.push("start more agents, or force-complete the point if fewer are enough".into());
                }
            }
            if !self.arrivals.is_empty() && !status.missing.is_empty() {
                recs.push(
                    "`force-complete` releases the agents already waiting, if the round can go on without the others"
                        .into(),
                );
            }
        }
        Diagnosis { status, issues, recommendations: recs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;
    use proptest::prelude::*;

    fn arc(s: &str) -> Arc<str> {
        s.into()
    }

    /// `agent` arriving with request `request_id`, wanting the whole outcome.
    fn w(agent: &str, request_id: u64) -> Waiter {
        Waiter { agent: arc(agent), request_id, position: 0, summary: false }
    }

    /// `agent` arriving with request `request_id`, wanting a summary.
    fn summary(agent: &str, request_id: u64) -> Waiter {
        Waiter { summary: true, ..w(agent, request_id) }
    }

    fn explicit(ids: &[&str]) -> (Participants, BTreeSet<Arc<str>>) {
        (Participants::Agents(ids.iter().map(|s| s.to_string()).collect()), ids.iter().map(|s| arc(s)).collect())
    }

    #[test]
    fn releases_everyone_with_the_same_outcome_when_the_last_arrives() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        assert_eq!(sp.arrive(1, w("b", 10), Bytes::from_static(b"B"), &p, None).unwrap(), Arrived::Waiting);
        assert_eq!(sp.arrive(2, w("a", 11), Bytes::new(), &p, None).unwrap(), Arrived::Waiting);
        assert_eq!(sp.missing(), vec!["c"]);
        let Arrived::Released { waiters, outcome } =
            sp.arrive(3, w("c", 12), Bytes::from_static(b"C"), &p, None).unwrap()
        else {
            panic!("should release")
        };
        assert_eq!(waiters.iter().map(|w| w.request_id).collect::<Vec<_>>(), vec![10, 11, 12]);
        assert_eq!(outcome.arrival_order, vec![arc("b"), arc("a"), arc("c")]);
        assert_eq!(outcome.payloads[0], Bytes::from_static(b"B"));
        assert_eq!(sp.state(), SyncState::Completed);
    }

    #[test]
    fn an_arrival_that_could_take_the_outcome_over_its_limit_is_refused_and_changes_nothing() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        // Three one-byte ids and their framing, and room for 100 bytes of payloads.
        let ids = 3 * (1 + OUTCOME_ITEM_FRAMING);
        sp.limit_outcome(ids + 100 + 3 * OUTCOME_ITEM_FRAMING);
        assert_eq!(sp.arrive(1, w("a", 10), Bytes::from(vec![1; 60]), &p, None).unwrap(), Arrived::Waiting);
        let err = sp.arrive(2, w("b", 11), Bytes::from(vec![2; 60]), &p, None).unwrap_err();
        assert_eq!(err.reason(), Reason::Limit, "{err}");
        assert_eq!((sp.arrival_count(), sp.missing()), (1, vec!["b".to_string(), "c".to_string()]));
        // Smaller, it fits; and a repeated arrival is never refused.
        assert_eq!(sp.arrive(3, w("b", 12), Bytes::from(vec![2; 20]), &p, None).unwrap(), Arrived::Waiting);
        assert_eq!(sp.arrive(4, w("a", 13), Bytes::from(vec![1; 60]), &p, None).unwrap(), Arrived::Waiting);
        assert!(matches!(sp.arrive(5, w("c", 14), Bytes::new(), &p, None).unwrap(), Arrived::Released { .. }));

        // A set whose ids alone could not fit is refused at its first arrival.
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("t".into(), p.clone(), None, req, 0, 1000);
        sp.limit_outcome(ids - 1);
        assert_eq!(sp.arrive(1, w("a", 1), Bytes::new(), &p, None).unwrap_err().reason(), Reason::Limit);
    }

    #[test]
    fn a_summary_waiter_gets_its_place_and_the_digest_everyone_shares() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        sp.arrive(1, summary("b", 10), Bytes::from_static(b"B"), &p, None).unwrap();
        sp.arrive(2, w("a", 11), Bytes::new(), &p, None).unwrap();
        let Arrived::Released { waiters, outcome } = sp.arrive(3, summary("c", 12), Bytes::new(), &p, None).unwrap()
        else {
            panic!("should release")
        };
        let replies: Vec<Reply> = waiters.iter().map(|w| w.reply(&outcome)).collect();
        assert_eq!(
            replies,
            vec![
                Reply::SyncSummary { outcome: outcome.clone(), position: 0 },
                Reply::Sync(outcome.clone()),
                Reply::SyncSummary { outcome: outcome.clone(), position: 2 },
            ]
        );
        assert_eq!(outcome.count(), 3);
        // A repeated arrival after the release is answered the way it asks now, at its own place.
        assert_eq!(
            sp.arrive(9, summary("a", 13), Bytes::new(), &p, None).unwrap(),
            Arrived::AlreadyFinished(Reply::SyncSummary { outcome: outcome.clone(), position: 1 })
        );
        assert_eq!(
            sp.arrive(9, w("c", 14), Bytes::new(), &p, None).unwrap(),
            Arrived::AlreadyFinished(Reply::Sync(outcome))
        );
    }

    #[test]
    fn the_digest_depends_on_order_names_and_payloads_only() {
        let digest = |arrivals: &[(&str, &[u8])]| SyncOutcome::digest_of(arrivals.iter().copied());
        let base = digest(&[("a", b"1"), ("b", b"")]);
        assert_eq!(base, digest(&[("a", b"1"), ("b", b"")]), "the same outcome has the same digest");
        assert_ne!(base, digest(&[("b", b""), ("a", b"1")]), "order counts");
        assert_ne!(base, digest(&[("a", b""), ("b", b"1")]), "who brought what counts");
        // Length prefixes: moving a byte across the boundary of a name and a payload is a change.
        assert_ne!(digest(&[("ab", b"")]), digest(&[("a", b"b")]));
        assert_ne!(digest(&[]), digest(&[("", b"")]));
        // Fixed, so that a digest means the same thing across releases of the server.
        assert_eq!(digest(&[("a", b"1")]), 0x2d31_ddcd_27d7_de34, "{:#x}", digest(&[("a", b"1")]));
    }

    #[test]
    fn timeout_names_who_never_arrived() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        sp.arrive(1, w("a", 1), Bytes::new(), &p, None).unwrap();
        assert!(sp.expire(999).is_none());
        let (waiters, result) = sp.expire(1000).unwrap();
        assert_eq!(waiters.len(), 1);
        let err = result.unwrap_err();
        assert_eq!(err.missing_agents(), ["b", "c"]);
        assert_eq!(sp.state(), SyncState::TimedOut);
        // A late arrival learns the same failure.
        assert_eq!(
            sp.arrive(1500, w("b", 2), Bytes::new(), &p, None).unwrap(),
            Arrived::AlreadyFinished(Reply::Error(err))
        );
    }

    #[test]
    fn lost_participant_fails_the_point_at_once() {
        let (p, req) = explicit(&["a", "b"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 60_000);
        sp.arrive(1, w("a", 1), Bytes::new(), &p, None).unwrap();
        assert!(sp.participant_gone(5, "a", "lost its lease").is_none(), "an arrived agent does not fail the point");
        let (_, result) = sp.participant_gone(5, "b", "lost its lease").unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Aborted);
        assert!(err.to_string().contains("'b' lost its lease"), "{err}");
    }

    #[test]
    fn arrivals_must_agree_on_the_definition() {
        let (p, req) = explicit(&["a", "b"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        let other = Participants::Count(2);
        assert!(matches!(sp.arrive(1, w("a", 1), Bytes::new(), &other, None), Err(CoreError::SyncMismatch { .. })));
        // Same set in another order is the same definition.
        let reordered = Participants::Agents(vec!["b".into(), "a".into()]);
        assert_eq!(sp.arrive(1, w("a", 1), Bytes::new(), &reordered, None).unwrap(), Arrived::Waiting);
        assert!(matches!(sp.arrive(1, w("z", 1), Bytes::new(), &p, None), Err(CoreError::NotAParticipant { .. })));
    }

    #[test]
    fn a_quorum_point_releases_at_k_names_the_rest_late_and_answers_them_at_once() {
        let (p, req) = explicit(&["a", "b", "c", "d"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), Some(2), req, 0, 1000);
        assert_eq!(sp.arrive(1, w("c", 1), Bytes::from_static(b"C"), &p, Some(2)).unwrap(), Arrived::Waiting);
        let Arrived::Released { waiters, outcome } = sp.arrive(2, w("a", 2), Bytes::new(), &p, Some(2)).unwrap() else {
            panic!("the second of a 2-of-4 point releases it")
        };
        assert_eq!(waiters.len(), 2);
        assert_eq!(outcome.arrival_order, vec![arc("c"), arc("a")]);
        assert_eq!(outcome.late, vec![arc("b"), arc("d")]);
        assert_eq!(sp.state(), SyncState::Completed);
        // A late participant gets the outcome at once, placed after the arrival order.
        assert_eq!(
            sp.arrive(3, summary("d", 3), Bytes::new(), &p, Some(2)).unwrap(),
            Arrived::AlreadyFinished(Reply::SyncSummary { outcome: outcome.clone(), position: 2 })
        );
        assert_eq!(
            sp.arrive(3, w("b", 4), Bytes::new(), &p, Some(2)).unwrap(),
            Arrived::AlreadyFinished(Reply::Sync(outcome.clone()))
        );
        // An agent outside the set is still refused.
        assert!(matches!(sp.arrive(4, w("z", 5), Bytes::new(), &p, Some(2)), Err(CoreError::SyncFinished { .. })));
        assert_eq!(sp.status().participants, "2 of {a, b, c, d}");
        assert_eq!(sp.status().required_count, 2);
    }

    #[test]
    fn a_released_point_keeps_who_arrived_once_in_its_outcome() {
        let (p, req) = explicit(&["c", "a", "b"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        for (i, agent) in ["b", "c"].into_iter().enumerate() {
            let payload = Bytes::from(format!("from {agent}"));
            assert_eq!(sp.arrive(10 + i as u64, w(agent, 1), payload, &p, None).unwrap(), Arrived::Waiting);
        }
        // Any order of the same set is the same definition; the kept definition is the set, sorted.
        let reordered = explicit(&["b", "c", "a"]).0;
        let Arrived::Released { outcome, .. } = sp.arrive(12, w("a", 2), "from a".into(), &reordered, None).unwrap()
        else {
            panic!("the last of the set releases the point")
        };
        assert_eq!(sp.participants(), explicit(&["a", "b", "c"]).0);
        assert!(sp.arrivals.is_empty(), "the outcome holds the arrivals; the point keeps only their times");
        assert_eq!(sp.arrived_at, [10, 11, 12]);
        assert_eq!(sp.arrival_count(), 3);
        let status = sp.status();
        assert_eq!(
            (status.arrived, status.missing, status.waiting_since),
            (vec!["b".into(), "c".into(), "a".into()], vec![], 10)
        );
        for (position, agent) in ["b", "c", "a"].into_iter().enumerate() {
            let image = sp.arrival_image(position as u32, agent).expect("kept");
            assert_eq!((image.agent_id.as_str(), image.at), (agent, 10 + position as u64));
            assert_eq!(image.payload, outcome.payloads[position]);
            assert!(sp.arrival_image(position as u32, "z").is_none(), "another agent's place");
        }
        assert!(sp.arrival_image(3, "a").is_none());
    }

    #[test]
    fn a_quorum_is_part_of_the_definition_and_must_fit_its_set() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), Some(2), req, 0, 1000);
        let Err(CoreError::SyncMismatch { existing, requested, .. }) = sp.arrive(1, w("a", 1), Bytes::new(), &p, None)
        else {
            panic!("a point without the quorum is another definition")
        };
        assert_eq!((existing.as_str(), requested.as_str()), ("2 of {a, b, c}", "{a, b, c}"));
        assert!(matches!(sp.arrive(1, w("a", 1), Bytes::new(), &p, Some(3)), Err(CoreError::SyncMismatch { .. })));

        assert!(p.validate_quorum(Some(3), 3).is_ok());
        for bad in [0, 4] {
            let err = p.validate_quorum(Some(bad), 3).unwrap_err();
            assert_eq!(err.code(), crate::ErrorCode::InvalidArgument);
            assert!(err.to_string().contains("between 1 and the 3 agents of the set"), "{err}");
        }
        let role = Participants::Role("trader".into());
        let err = role.validate_quorum(Some(3), 2).unwrap_err();
        assert!(err.to_string().contains("the 2 live agents of role trader"), "{err}");
        let err = Participants::Count(3).validate_quorum(Some(2), 0).unwrap_err();
        assert!(err.to_string().contains("a count point is already released by any N"), "{err}");
        assert!(Participants::Count(3).validate_quorum(None, 0).is_ok());
    }

    #[test]
    fn a_quorum_point_outlives_lost_participants_while_k_can_still_arrive() {
        let (p, req) = explicit(&["a", "b", "c", "d"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), Some(3), req, 0, 60_000);
        sp.arrive(1, w("a", 1), Bytes::new(), &p, Some(3)).unwrap();
        assert!(sp.participant_gone(2, "b", "lost its lease").is_none(), "a, c and d can still make 3");
        assert!(sp.is_waiting());
        let (waiters, result) = sp.participant_gone(3, "c", "left").expect("only a and d can arrive now");
        assert_eq!(waiters.len(), 1);
        let err = result.unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Aborted);
        assert!(err.to_string().contains("only 2 of the 3 the quorum needs can still arrive"), "{err}");
        assert_eq!(err.missing_agents(), ["b", "c"]);
    }

    #[test]
    fn a_quorum_point_that_a_lost_participant_did_not_fail_releases_without_it() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), Some(2), req, 0, 60_000);
        assert!(sp.participant_gone(1, "b", "lost its lease").is_none());
        sp.arrive(2, w("a", 1), Bytes::new(), &p, Some(2)).unwrap();
        let Arrived::Released { outcome, .. } = sp.arrive(3, w("c", 2), Bytes::new(), &p, Some(2)).unwrap() else {
            panic!("a and c are the quorum")
        };
        assert_eq!(outcome.late, vec![arc("b")]);
    }

    #[test]
    fn a_restored_quorum_point_keeps_its_quorum_and_outcome() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), Some(2), req, 0, 1000);
        sp.arrive(1, w("a", 1), Bytes::new(), &p, Some(2)).unwrap();
        let waiting =
            SyncPoint::restore(SyncPointImage { arrivals: vec![sp.arrival_image(0, "a").unwrap()], ..sp.image("ns") })
                .unwrap();
        assert_eq!(waiting.status(), sp.status());
        let Arrived::Released { outcome, .. } = sp.arrive(2, w("b", 2), Bytes::new(), &p, Some(2)).unwrap() else {
            panic!("released")
        };
        let image = SyncPointImage {
            arrivals: (0..2).map(|i| sp.arrival_image(i, ["a", "b"][i as usize]).unwrap()).collect(),
            ..sp.image("ns")
        };
        assert_eq!(image.quorum, Some(2));
        let mut restored = SyncPoint::restore(image).unwrap();
        assert_eq!(
            restored.arrive(5, w("c", 3), Bytes::new(), &p, Some(2)).unwrap(),
            Arrived::AlreadyFinished(Reply::Sync(outcome)),
            "the late participant gets the outcome the others got"
        );
    }

    #[test]
    fn count_points_take_any_distinct_agents() {
        let p = Participants::Count(2);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, BTreeSet::new(), 0, 1000);
        assert_eq!(sp.arrive(1, w("x", 1), Bytes::new(), &p, None).unwrap(), Arrived::Waiting);
        assert_eq!(
            sp.arrive(1, w("x", 2), Bytes::new(), &p, None).unwrap(),
            Arrived::Waiting,
            "a repeat does not count twice"
        );
        assert!(matches!(sp.arrive(2, w("y", 3), Bytes::new(), &p, None).unwrap(), Arrived::Released { .. }));
    }

    #[test]
    fn force_complete_releases_current_waiters() {
        let (p, req) = explicit(&["a", "b"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        sp.arrive(1, w("a", 1), Bytes::new(), &p, None).unwrap();
        let (waiters, outcome) = sp.force_complete(2).unwrap();
        assert_eq!(waiters.len(), 1);
        assert!(outcome.forced);
        assert!(sp.force_complete(3).is_err());
    }

    #[test]
    fn participants_are_validated() {
        let l = Limits::default();
        assert!(Participants::Agents(vec!["a".into(), "a".into()])
            .validate(&l)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(Participants::Agents(vec![]).validate(&l).is_err());
        assert!(Participants::Count(0).validate(&l).is_err());
        assert!(Participants::Role("bad role".into()).validate(&l).is_err());
        Participants::Count(3).validate(&l).unwrap();
    }

    #[test]
    fn diagnosis_explains_missing_agents() {
        let (p, req) = explicit(&["a", "b", "c"]);
        let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
        sp.arrive(1, w("a", 1), Bytes::new(), &p, None).unwrap();
        let d = sp.diagnose(
            800,
            |id| {
                if id == "b" {
                    Some(AgentStatus::Lost)
                } else {
                    None
                }
            },
            2,
        );
        let text = d.issues.join("\n");
        assert!(text.contains("'b' lost its lease"), "{text}");
        assert!(text.contains("'c' is not registered"), "{text}");
        assert!(d.recommendations.iter().any(|r| r.contains("longer timeout")));
        assert!(d.recommendations.iter().any(|r| r.contains("force-complete")));
    }

    proptest! {
        /// Whatever the order and repetition of arrivals, a barrier never releases before every
        /// required participant arrived, and releases each waiter exactly once with the same result.
        #[test]
        fn barrier_releases_once_and_only_when_complete(
            n in 1usize..8,
            arrivals in prop::collection::vec(0usize..10, 0..40),
        ) {
            let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
            let p = Participants::Agents(names.clone());
            let req = names.iter().map(|s| arc(s)).collect();
            let mut sp = SyncPoint::new("s".into(), p.clone(), None, req, 0, 1000);
            let mut arrived = BTreeSet::new();
            let mut released: Vec<(Vec<Waiter>, Arc<SyncOutcome>)> = vec![];
            for (t, i) in arrivals.iter().enumerate() {
                let agent = arc(&format!("a{i}"));
                match sp.arrive(t as u64, Waiter { agent: agent.clone(), request_id: t as u64 + 1, position: 0, summary: false }, Bytes::new(), &p, None) {
                    Ok(Arrived::Released { waiters, outcome }) => {
                        arrived.insert(agent.clone());
                        prop_assert_eq!(arrived.len(), n, "released before everyone arrived");
                        released.push((waiters, outcome));
                    }
                    Ok(Arrived::Waiting) => { arrived.insert(agent); }
                    Ok(Arrived::AlreadyFinished(r)) => prop_assert!(matches!(r, Reply::Sync(_))),
                    Err(CoreError::NotAParticipant { .. }) => prop_assert!(*i >= n),
                    Err(CoreError::SyncFinished { .. }) => prop_assert!(*i >= n || !released.is_empty()),
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            prop_assert!(released.len() <= 1, "released twice");
            if let Some((waiters, outcome)) = released.first() {
                let mut agents: Vec<&str> = waiters.iter().map(|w| &*w.agent).collect();
                agents.sort_unstable();
                agents.dedup();
                prop_assert_eq!(agents.len(), n, "each waiter exactly once");
                prop_assert_eq!(waiters.len(), n);
                prop_assert_eq!(outcome.arrival_order.len(), n);
            } else {
                prop_assert!(arrived.len() < n);
            }
        }
    }
}
