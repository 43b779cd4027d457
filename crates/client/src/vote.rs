//! Votes from the client's side: describing a vote ([`Vote`]), opening it, casting a [`Ballot`],
//! and waiting for the outcome — the same `VoteOutcome` for every voter. The rules (policies,
//! weights, quorum, vetoes, ties) are the server's; see "Votes" in docs/PROTOCOL.md.

use std::time::Duration;

use lockstep_proto::v1;
use serde_json::Value;

use crate::agent::{unexpected, Agent, Participants};
use crate::Error;

/// How a vote picks its winner from the weight of the ballots cast (abstentions excluded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VotePolicy {
    /// The heaviest choice wins.
    Plurality,
    /// The heaviest choice wins with more than half of the weight cast.
    Majority,
    /// The heaviest choice wins with at least `k/n` of the weight cast.
    Supermajority(u32, u32),
    /// Every ballot names the same choice.
    Unanimity,
}

/// Where a ballot's weight comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteWeight {
    /// 1 per ballot.
    Equal,
    /// The voter's metadata field of this name (a number >= 0).
    Metadata(String),
    /// The ballot's confidence.
    Confidence,
    /// The voter's health: healthy 1, degraded 0.5, stuck 0.25, unhealthy 0.
    Health,
}

/// A vote's description, built step by step; plurality over equal weights, no quorum, no veto,
/// a tie is no decision, the server's default timeout, and no topic unless set.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote(v1::OpenVote);

impl Vote {
    /// A vote on `question` among `participants`, choosing among `options` (none: free JSON
    /// recommendations, see [`Vote::key_field`]).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        vote_id: &str,
        question: &str,
        participants: Participants,
        options: I,
    ) -> Self {
        use v1::open_vote::Participants as P;
        let participants = match participants {
            Participants::Agents(ids) => P::Agents(v1::AgentIds { ids }),
            Participants::Count(n) => P::Count(n),
            Participants::Role(r) => P::Role(r),
        };
        Vote(v1::OpenVote {
            vote_id: vote_id.to_owned(),
            question: question.to_owned(),
            participants: Some(participants),
            options: options.into_iter().map(Into::into).collect(),
            ..Default::default()
        })
    }

    /// Recommendations (JSON objects) are grouped by the value of this field.
    pub fn key_field(mut self, field: &str) -> Self {
        self.0.key_field = field.to_owned();
        self
    }

    pub fn policy(mut self, policy: VotePolicy) -> Self {
        use v1::open_vote::Policy as P;
        let (p, num, den) = match policy {
            VotePolicy::Plurality => (P::Plurality, 0, 0),
            VotePolicy::Majority => (P::Majority, 0, 0),
            VotePolicy::Supermajority(k, n) => (P::Supermajority, k, n),
            VotePolicy::Unanimity => (P::Unanimity, 0, 0),
        };
        self.0.policy = p as i32;
        (self.0.supermajority_num, self.0.supermajority_den) = (num, den);
        self
    }

    pub fn weight(mut self, weight: VoteWeight) -> Self {
        use v1::open_vote::Weight as W;
        let (w, field) = match weight {
            VoteWeight::Equal => (W::Equal, String::new()),
            VoteWeight::Metadata(f) => (W::Metadata, f),
            VoteWeight::Confidence => (W::Confidence, String::new()),
            VoteWeight::Health => (W::Health, String::new()),
        };
        self.0.weight = w as i32;
        self.0.weight_field = field;
        self
    }

    /// Fewer ballots than this (abstentions included): no decision.
    pub fn quorum_ballots(mut self, n: u32) -> Self {
        self.0.quorum_ballots = n;
        self
    }

    /// Less weight cast than this: no decision.
    pub fn quorum_weight(mut self, w: f64) -> Self {
        self.0.quorum_weight = w;
        self
    }

    /// Voters holding one of these roles may veto.
    pub fn veto_roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.0.veto_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// A tie is settled by the choice of the first voter (by id) holding this role.
    pub fn tie_breaker(mut self, role: &str) -> Self {
        self.0.tie_breaker_role = role.to_owned();
        self
    }

    /// The outcome is published once on this topic (JSON).
    pub fn topic(mut self, topic: &str) -> Self {
        self.0.topic = topic.to_owned();
        self
    }

    /// Decided with the ballots in when this has passed (zero: the server's default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        self
    }

    pub fn id(&self) -> &str {
        &self.0.vote_id
    }
}

/// One ballot: a choice or an abstention, with an optional confidence and veto.
#[derive(Clone, Debug, PartialEq)]
pub struct Ballot(v1::CastBallot);

impl Ballot {
    fn of(choice: v1::cast_ballot::Choice) -> Self {
        Ballot(v1::CastBallot { choice: Some(choice), ..Default::default() })
    }

    /// One of the vote's options.
    pub fn option(option: &str) -> Self {
        Ballot::of(v1::cast_ballot::Choice::Option(option.to_owned()))
    }

    /// A free JSON recommendation (an object carrying the vote's key field).
    pub fn recommendation(value: &Value) -> Self {
        Ballot::of(v1::cast_ballot::Choice::RecommendationJson(value.to_string()))
    }

    /// No choice, and why.
    pub fn abstain(reason: &str) -> Self {
        Ballot::of(v1::cast_ballot::Choice::AbstainReason(reason.to_owned()))
    }

    /// How sure the voter is, in [0, 1].
    pub fn confidence(mut self, confidence: f64) -> Self {
        self.0.confidence = Some(confidence);
        self
    }

    /// Blocks the decision (voters of a veto role only).
    pub fn veto(mut self) -> Self {
        self.0.veto = true;
        self
    }
}

fn outcome(reply: v1::reply::Outcome) -> Result<v1::VoteOutcome, Error> {
    match reply {
        v1::reply::Outcome::VoteOutcome(o) => Ok(o),
        v1::reply::Outcome::Error(e) => Err(e.into()),
        other => Err(unexpected(other)),
    }
}

impl Agent {
    /// Opens a vote and returns at once; voters learn of it from the application (a vote id
    /// agreed on, or a message). Opening the same vote again is harmless.
    pub async fn open_vote(&self, vote: &Vote) -> Result<(), Error> {
        let open = v1::OpenVote { wait: false, ..vote.0.clone() };
        match self.call_with(v1::client_message::Kind::OpenVote(open), true).await? {
            v1::reply::Outcome::Ok(_) | v1::reply::Outcome::VoteOutcome(_) => Ok(()),
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Opens a vote and waits for its outcome (decided, or "no decision" with the reason).
    pub async fn vote(&self, vote: &Vote) -> Result<v1::VoteOutcome, Error> {
        let open = v1::OpenVote { wait: true, ..vote.0.clone() };
        // A connection lost while waiting does not fail the wait: the opening is sent again and
        // the server re-attaches it (or answers with the outcome).
        outcome(self.call_with(v1::client_message::Kind::OpenVote(open), true).await?)
    }

    /// Casts a ballot and waits for the vote's outcome, the same for every voter.
    pub async fn cast(&self, vote_id: &str, ballot: Ballot) -> Result<v1::VoteOutcome, Error> {
        let cast = v1::CastBallot { vote_id: vote_id.to_owned(), ..ballot.0 };
        // Resent after a reconnect: the server takes the same ballot again without counting it
        // twice.
        outcome(self.call_with(v1::client_message::Kind::CastBallot(cast), true).await?)
    }

    /// Abstains, saying why, and waits for the vote's outcome.
    pub async fn abstain(&self, vote_id: &str, reason: &str) -> Result<v1::VoteOutcome, Error> {
        self.cast(vote_id, Ballot::abstain(reason)).await
    }
}
