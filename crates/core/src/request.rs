//! Request/reply between agents: an agent asks a topic for an answer, exactly one of the agents
//! whose interests match the topic gets the request, and its answer comes back to the requester.
//!
//! The rules kept here:
//! * **Who answers.** The candidates are the live agents whose interests match the topic, other
//!   than the requester, that may act now (not paused, breaker not open), in id order. The one
//!   chosen is the first candidate after the one chosen last in the namespace, wrapping around
//!   ([`choose`]): requests on one topic rotate over its responders, and the choice depends on
//!   the inputs alone. No candidate: the request fails at once ([`CoreError::NoResponders`]).
//! * **How long.** Each request has a deadline (its timeout, or the configured default, capped by
//!   `limits.max_request_timeout_ms`) and one timer, removed with it: past it the requester gets
//!   [`CoreError::RequestTimeout`] naming the responder.
//! * **How many.** At most `limits.max_pending_requests_per_agent` per requester and
//!   `limits.max_pending_requests` in all wait for an answer at once ([`CoreError::Limit`]).
//! * **Who goes away.** A responder that leaves or loses its lease fails the requests it holds at
//!   once ([`CoreError::RequestAborted`]). A requester that goes away leaves its requests orphaned:
//!   the responder's answer is taken and dropped, and nothing is said when they time out.
//! * **Late answers.** An answer for a token nobody waits on any more (answered, timed out) is
//!   refused with [`CoreError::UnknownRequest`]; the responder's session goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::Limits;
use crate::error::CoreError;
use crate::io::Time;

/// The server's name for one request waiting for its answer, unique for the engine's lifetime.
pub type Token = u64;

/// One request waiting for its responder's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    pub ns: Arc<str>,
    pub requester: Arc<str>,
    /// The requester's id for the request: its answer is the reply with this id.
    pub request_id: u64,
    pub responder: Arc<str>,
    pub topic: Arc<str>,
    pub sent_at: Time,
    pub deadline: Time,
    /// The requester went away: nobody is told how this request ends.
    pub orphaned: bool,
}

/// An agent: (namespace, id).
type AgentKey = (Arc<str>, Arc<str>);

/// Every request waiting for an answer, indexed by requester and by responder so that an agent's
/// departure costs what it holds, not what everyone holds.
#[derive(Debug, Default)]
pub struct Requests {
    last_token: Token,
    /// By token: token order is arrival order, which keeps every scan deterministic.
    pending: BTreeMap<Token, PendingRequest>,
    /// The requests each requester has waiting (their number is what its limit counts).
    by_requester: HashMap<AgentKey, BTreeSet<Token>>,
    /// The requests each responder holds.
    by_responder: HashMap<AgentKey, BTreeSet<Token>>,
}

/// Files `token` under `key`.
fn index(map: &mut HashMap<AgentKey, BTreeSet<Token>>, key: AgentKey, token: Token) {
    map.entry(key).or_default().insert(token);
}

/// Takes `token` out from under `key`; an agent with nothing left is not kept.
fn unindex(map: &mut HashMap<AgentKey, BTreeSet<Token>>, key: AgentKey, token: Token) {
    if let Some(tokens) = map.get_mut(&key) {
        tokens.remove(&token);
        if tokens.is_empty() {
            map.remove(&key);
        }
    }
}

impl Requests {
    /// How many requests wait for an answer.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The request with this token, if it still waits.
    pub fn get(&self, token: Token) -> Option<&PendingRequest> {
        self.pending.get(&token)
    }

    /// Whether `requester` may open one more request under `limits`.
    pub fn check_room(&self, ns: &Arc<str>, requester: &Arc<str>, limits: &Limits) -> Result<(), CoreError> {
        if self.pending.len() >= limits.max_pending_requests {
            return Err(CoreError::Limit {
                what: "agent requests waiting for an answer",
                limit: limits.max_pending_requests as u64,
                hint: "wait for answers, shorten request timeouts, or raise limits.max_pending_requests",
            });
        }
        let mine = self.by_requester.get(&(ns.clone(), requester.clone())).map_or(0, BTreeSet::len);
        if mine >= limits.max_pending_requests_per_agent {
            return Err(CoreError::Limit {
                what: "agent requests waiting for an answer per agent",
                limit: limits.max_pending_requests_per_agent as u64,
                hint: "wait for answers before asking more, or raise limits.max_pending_requests_per_agent",
            });
        }
        Ok(())
    }

    /// Records a request (whose room was checked) and returns its token.
    pub fn open(&mut self, request: PendingRequest) -> Token {
        self.last_token += 1;
        let token = self.last_token;
        index(&mut self.by_requester, (request.ns.clone(), request.requester.clone()), token);
        index(&mut self.by_responder, (request.ns.clone(), request.responder.clone()), token);
        self.pending.insert(token, request);
        token
    }

    /// Takes the request `token` for `responder`'s answer; refused when no such request waits for
    /// this agent (answered, timed out, or never given to it).
    pub fn answer(&mut self, ns: &str, responder: &str, token: Token) -> Result<PendingRequest, CoreError> {
        match self.pending.get(&token) {
            Some(p) if &*p.ns == ns && &*p.responder == responder => Ok(self.remove(token).expect("present")),
            _ => Err(CoreError::UnknownRequest { token }),
        }
    }

    /// Takes the request `token` if its deadline has come.
    pub fn expire(&mut self, token: Token, now: Time) -> Option<PendingRequest> {
        self.pending.get(&token).filter(|p| p.deadline <= now)?;
        self.remove(token)
    }

    /// Takes every request `responder` holds, in token order.
    pub fn responder_gone(&mut self, ns: &Arc<str>, responder: &Arc<str>) -> Vec<(Token, PendingRequest)> {
        let tokens = self.by_responder.get(&(ns.clone(), responder.clone())).cloned().unwrap_or_default();
        tokens.into_iter().filter_map(|t| self.remove(t).map(|p| (t, p))).collect()
    }

    /// Marks every request of `requester` orphaned: it is not answered any more.
    pub fn requester_gone(&mut self, ns: &Arc<str>, requester: &Arc<str>) {
        let Some(tokens) = self.by_requester.get(&(ns.clone(), requester.clone())) else { return };
        for t in tokens {
            if let Some(p) = self.pending.get_mut(t) {
                p.orphaned = true;
            }
        }
    }

    fn remove(&mut self, token: Token) -> Option<PendingRequest> {
        let p = self.pending.remove(&token)?;
        unindex(&mut self.by_requester, (p.ns.clone(), p.requester.clone()), token);
        unindex(&mut self.by_responder, (p.ns.clone(), p.responder.clone()), token);
        Some(p)
    }
}

/// The responder among `candidates` (sorted by id): the first after `last` (the one chosen last
/// in the namespace), wrapping around to the first.
pub fn choose<'a>(candidates: impl IntoIterator<Item = &'a Arc<str>>, last: Option<&str>) -> Option<Arc<str>> {
    let mut first = None;
    for c in candidates {
        if last.is_none_or(|l| &**c > l) {
            return Some(c.clone());
        }
        first.get_or_insert(c);
    }
    first.cloned()
}

/// The timeout a request gets: the one asked for, or `default` for 0; refused over `max`.
pub fn timeout(requested: u64, default: u64, max: u64) -> Result<u64, CoreError> {
    match requested {
        0 => Ok(default),
        t if t > max => Err(CoreError::Invalid {
            what: "request timeout",
            reason: format!("{t} ms; the limit is {max} ms (limits.max_request_timeout_ms)"),
        }),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn pending(requester: &str, responder: &str) -> PendingRequest {
        PendingRequest {
            ns: "ns".into(),
            requester: requester.into(),
            request_id: 1,
            responder: responder.into(),
            topic: "t".into(),
            sent_at: 0,
            deadline: 100,
            orphaned: false,
        }
    }

    #[test]
    fn responders_rotate_in_id_order() {
        let c = ids(&["a", "b", "c"]);
        assert_eq!(choose(&c, None).as_deref(), Some("a"));
        assert_eq!(choose(&c, Some("a")).as_deref(), Some("b"));
        assert_eq!(choose(&c, Some("c")).as_deref(), Some("a"), "wraps around");
        // The last one chosen may have gone: the next in order takes its turn.
        assert_eq!(choose(&ids(&["a", "c"]), Some("b")).as_deref(), Some("c"));
        assert_eq!(choose(&ids(&[]), Some("b")), None);
    }

    #[test]
    fn limits_count_per_requester_and_in_all() {
        let limits = Limits { max_pending_requests_per_agent: 2, max_pending_requests: 3, ..Limits::default() };
        let mut r = Requests::default();
        let (ns, a, b) = (Arc::from("ns"), Arc::from("a"), Arc::from("b"));
        r.open(pending("a", "x"));
        let t = r.open(pending("a", "x"));
        assert!(matches!(r.check_room(&ns, &a, &limits), Err(CoreError::Limit { limit: 2, .. })));
        r.check_room(&ns, &b, &limits).unwrap();
        r.open(pending("b", "x"));
        assert!(matches!(r.check_room(&ns, &b, &limits), Err(CoreError::Limit { limit: 3, .. })));
        r.answer("ns", "x", t).unwrap();
        r.check_room(&ns, &a, &limits).unwrap();
    }

    #[test]
    fn only_the_responder_answers_and_only_once() {
        let mut r = Requests::default();
        let t = r.open(pending("a", "x"));
        assert_eq!(r.answer("ns", "y", t), Err(CoreError::UnknownRequest { token: t }));
        assert_eq!(r.answer("other", "x", t), Err(CoreError::UnknownRequest { token: t }));
        assert_eq!(r.answer("ns", "x", t).unwrap().requester.as_ref(), "a");
        assert_eq!(r.answer("ns", "x", t), Err(CoreError::UnknownRequest { token: t }));
        assert!(r.is_empty() && r.by_requester.is_empty() && r.by_responder.is_empty(), "nothing stays behind");
    }

    #[test]
    fn expiry_waits_for_the_deadline() {
        let mut r = Requests::default();
        let t = r.open(pending("a", "x"));
        assert_eq!(r.expire(t, 99), None);
        assert!(r.expire(t, 100).is_some());
        assert_eq!(r.expire(t, 200), None, "gone once expired");
    }

    #[test]
    fn a_responder_gone_takes_its_requests_and_a_requester_gone_orphans_its_own() {
        let mut r = Requests::default();
        let t1 = r.open(pending("a", "x"));
        let t2 = r.open(pending("b", "y"));
        let t3 = r.open(pending("b", "x"));
        let (ns, x, b) = (Arc::from("ns"), Arc::from("x"), Arc::from("b"));
        let gone: Vec<Token> = r.responder_gone(&ns, &x).into_iter().map(|(t, _)| t).collect();
        assert_eq!(gone, [t1, t3]);
        r.requester_gone(&ns, &b);
        assert!(r.get(t2).unwrap().orphaned);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_timeout_of_zero_is_the_default_and_over_the_limit_is_refused() {
        assert_eq!(timeout(0, 30, 100), Ok(30));
        assert_eq!(timeout(100, 30, 100), Ok(100));
        assert!(matches!(timeout(101, 30, 100), Err(CoreError::Invalid { what: "request timeout", .. })));
    }
}
