//! Votes: agents decide together, once.
//!
//! An agent opens a vote ([`VoteSpec`]): an id, a question, who votes (an explicit set, any N
//! agents, or every live agent holding a role when the vote opens — the sync point's
//! [`Participants`]), a deadline, a [`Policy`], where ballots' weights come from ([`WeightSource`]),
//! a quorum, veto roles, a [`TieRule`], the choices (listed options, or free JSON recommendations
//! grouped by the value of a declared key field) and the topic its outcome is published on.
//! Participants cast one ballot each: a choice with an optional confidence in [0, 1], or an
//! explicit abstention with a reason.
//!
//! This module owns every rule of a vote and guarantees:
//!
//! * **It decides at most once.** The vote is decided when every participant has cast a ballot or
//!   is gone (set and role votes), when N ballots are in (count votes), or at its deadline —
//!   whichever comes first. Its [`VoteOutcome`] is then fixed: later ballots are refused
//!   (`VOTE_CLOSED`), a repeated ballot from a voter is answered with the same outcome.
//! * **Everyone sees the same outcome.** Every waiting voter (and the opener, when it waits) is
//!   answered with the same `Arc<VoteOutcome>`, a few hundred bytes whatever the number of voters:
//!   the tally is per choice (at most `limits.max_vote_options` groups, the heaviest first), not per
//!   voter. The full record — who voted what, who abstained, who never voted — is read on demand
//!   ([`Vote::status`]).
//! * **A lost voter is missing, not a no.** A participant that is lost or leaves before voting is
//!   counted as missing; once nobody else can vote, the vote is decided at once.
//! * **The rules are deterministic.** Groups are ordered by weight, then by their first ballot;
//!   ties are settled by the declared [`TieRule`] only.
//!
//! The engine wires votes to the registry (roles, metadata, health), the clock (deadline and
//! retention timers), replies, the outcome's topic and the store; this module holds the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Limits;
use crate::error::CoreError;
use crate::io::{Reply, Time};
use crate::name;
use crate::registry::AgentStatus;
use crate::syncpoint::Participants;
use crate::topic;

/// How the winning choice is decided from the weights of the ballots cast (abstentions excluded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The heaviest choice wins.
    Plurality,
    /// The heaviest choice wins if it holds more than half of the weight cast.
    Majority,
    /// The heaviest choice wins if it holds at least `num/den` of the weight cast.
    Supermajority { num: u32, den: u32 },
    /// Every ballot (abstentions aside) names the same choice.
    Unanimity,
}

impl Policy {
    /// `plurality`, `majority`, `supermajority 2/3`, `unanimity`.
    pub fn describe(&self) -> String {
        match self {
            Policy::Plurality => "plurality".into(),
            Policy::Majority => "majority".into(),
            Policy::Supermajority { num, den } => format!("supermajority {num}/{den}"),
            Policy::Unanimity => "unanimity".into(),
        }
    }
}

/// Where a ballot's weight comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightSource {
    /// Every ballot weighs 1.
    Equal,
    /// The voter's metadata field of this name, a non-negative number.
    Metadata(String),
    /// The ballot's confidence (required on every choice ballot).
    Confidence,
    /// The voter's health when it votes: healthy 1, degraded 0.5, stuck 0.25, unhealthy 0.
    Health,
}

impl WeightSource {
    pub fn describe(&self) -> String {
        match self {
            WeightSource::Equal => "equal".into(),
            WeightSource::Metadata(field) => format!("metadata '{field}'"),
            WeightSource::Confidence => "confidence".into(),
            WeightSource::Health => "health".into(),
        }
    }
}

/// What happens when two or more choices are heaviest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieRule {
    /// No decision.
    NoDecision,
    /// The tied choice of the first voter (in agent id order) holding this role wins; no decision
    /// if no such voter chose one of the tied choices.
    Breaker(String),
}

/// What voters may choose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choices {
    /// One of these options.
    Options(Vec<String>),
    /// A free JSON object, grouped with the others by the value of its field `key_field`.
    Recommendations { key_field: String },
}

/// A vote as its opener describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteSpec {
    pub vote_id: String,
    pub question: String,
    pub participants: Participants,
    /// 0 means the configured default (`default_sync_timeout_ms`).
    pub timeout_ms: u64,
    pub policy: Policy,
    pub choices: Choices,
    pub weight: WeightSource,
    /// Fewer ballots than this (abstentions included): no decision.
    pub quorum_ballots: u32,
    /// Less weight cast than this (abstentions weigh nothing): no decision.
    pub quorum_weight: f64,
    /// Voters holding one of these roles may veto: a veto blocks any decision.
    pub veto_roles: Vec<String>,
    pub tie: TieRule,
    /// The outcome is published here, once; empty: not published.
    pub topic: String,
}

/// What a ballot says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BallotChoice {
    /// One of the listed options.
    Option(String),
    /// A JSON object (as text) carrying the vote's key field.
    Recommendation(String),
    /// No choice, and why.
    Abstain(String),
}

/// A ballot as a voter casts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BallotRequest {
    pub vote_id: String,
    pub choice: BallotChoice,
    /// In [0, 1]; required when the vote weighs by confidence.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Block the decision (only from a veto role).
    #[serde(default)]
    pub veto: bool,
}

/// What the engine knows of a voter when it casts its ballot.
#[derive(Clone, Copy, Debug)]
pub struct VoterFacts<'a> {
    pub role: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    /// Its health as a weight in [0, 1] (see [`WeightSource::Health`]).
    pub health: f64,
}

/// One ballot as recorded (and kept in the store).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ballot {
    pub agent_id: String,
    pub role: String,
    /// The group key: the option, or the key field's value as JSON text; empty for an abstention.
    pub key: String,
    /// The option as a JSON string, or the recommendation's JSON text; empty for an abstention.
    pub directive_json: String,
    /// Why the voter abstained; `None` for a choice.
    pub abstain_reason: Option<String>,
    pub confidence: Option<f64>,
    pub weight: f64,
    pub veto: bool,
    pub at: Time,
}

impl Ballot {
    pub fn is_abstention(&self) -> bool {
        self.abstain_reason.is_some()
    }
}

/// One choice's share of the vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TallyEntry {
    pub choice: String,
    pub weight: f64,
    pub ballots: u32,
}

/// The decision every voter receives, and the topic carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteOutcome {
    pub vote_id: String,
    pub question: String,
    pub decided: bool,
    /// The winning group's key (the option, or the key field's value as JSON text).
    pub choice: String,
    /// What to do: the winning option as a JSON string, or the first recommendation of the winning
    /// group; empty without a decision.
    pub directive_json: String,
    /// Why there is no decision; empty when decided.
    pub reason: String,
    /// The heaviest groups, heaviest first (at most `limits.max_vote_options`).
    pub tally: Vec<TallyEntry>,
    /// How many groups there were in all.
    pub groups: u32,
    /// Choice ballots.
    pub ballots: u32,
    pub abstentions: u32,
    /// Participants that never voted (lost ones included), or for a count vote how many ballots
    /// were lacking.
    pub missing: u32,
    /// The weight of every choice ballot.
    pub total_weight: f64,
    pub decided_at: Time,
}

impl VoteOutcome {
    /// The outcome as a JSON object (the published message's payload): the directive is embedded
    /// as JSON, not as text.
    pub fn as_json(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("serializable");
        let directive = serde_json::from_str(&self.directive_json).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("directive".into(), directive);
        }
        v
    }
}

/// Where a vote is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteState {
    Open,
    Decided,
    NoDecision,
}

impl VoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteState::Open => "open",
            VoteState::Decided => "decided",
            VoteState::NoDecision => "no_decision",
        }
    }
}

/// A vote as kept in the store, without its ballots (kept one by one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoteImage {
    pub namespace: String,
    pub spec: VoteSpec,
    pub opener: String,
    pub required: Vec<String>,
    /// Participants lost or gone before voting.
    pub gone: Vec<String>,
    pub created_at: Time,
    pub deadline: Time,
    pub state: VoteState,
    pub finished_at: Option<Time>,
    pub outcome: Option<VoteOutcome>,
    #[serde(default)]
    pub ballots: Vec<Ballot>,
}

/// Someone waiting for a vote's outcome: a voter, or the opener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    pub agent: Arc<str>,
    pub request_id: u64,
}

/// A vote just decided: who to answer, and what to publish where.
#[derive(Debug)]
pub struct Decision {
    pub namespace: Arc<str>,
    pub vote_id: Arc<str>,
    pub watchers: Vec<Watcher>,
    pub outcome: Arc<VoteOutcome>,
    pub topic: String,
    pub opener: Arc<str>,
    /// Finished votes of the namespace forgotten to keep within `limits.max_retained_votes`.
    pub evicted: Vec<Arc<str>>,
}

/// What a ballot or an opening led to.
#[derive(Debug)]
pub enum Cast {
    /// Recorded (at this place among the ballots, if new); wait for the outcome.
    Waiting { new_ballot: Option<u32> },
    /// This ballot decided the vote.
    Decided { position: u32, decision: Decision },
    /// The vote was decided already: answer with this.
    Finished(Reply),
}

/// What opening a vote led to.
#[derive(Debug)]
pub enum Opened {
    /// A new vote.
    New,
    /// The same vote opened again by its opener: its wait is re-attached.
    Reattached,
    /// Answer the opener with this now.
    Answer(Reply),
}

/// A vote's full record, for status and diagnosis.
#[derive(Clone, Debug, PartialEq)]
pub struct VoteStatus {
    pub vote_id: String,
    pub question: String,
    pub state: VoteState,
    pub opener: String,
    pub participants: String,
    pub policy: String,
    pub weight: String,
    pub topic: String,
    pub required_count: u32,
    /// Every ballot, abstentions included, in the order cast.
    pub ballots: Vec<Ballot>,
    /// Participants that have not voted (sorted); empty for count votes.
    pub missing: Vec<String>,
    /// How many ballots are lacking (for every kind of vote).
    pub missing_count: u32,
    /// Participants lost or gone before voting.
    pub gone: Vec<String>,
    pub created_at: Time,
    pub deadline: Time,
    pub finished_at: Option<Time>,
    pub outcome: Option<Arc<VoteOutcome>>,
}

/// A plain-language reading of a vote.
#[derive(Clone, Debug, PartialEq)]
pub struct VoteDiagnosis {
    pub status: VoteStatus,
    pub issues: Vec<String>,
    pub recommendations: Vec<String>,
}

/// One vote.
#[derive(Clone, Debug)]
pub struct Vote {
    spec: VoteSpec,
    opener: Arc<str>,
    required: BTreeSet<Arc<str>>,
    required_count: usize,
    ballots: Vec<Ballot>,
    gone: BTreeSet<Arc<str>>,
    watchers: Vec<Watcher>,
    created_at: Time,
    deadline: Time,
    state: VoteState,
    finished_at: Option<Time>,
    outcome: Option<Arc<VoteOutcome>>,
}

/// The health weight of a health status (see [`WeightSource::Health`]).
pub fn health_weight(status: crate::health::HealthStatus) -> f64 {
    use crate::health::HealthStatus as H;
    match status {
        H::Healthy => 1.0,
        H::Degraded => 0.5,
        H::Stuck => 0.25,
        H::Unhealthy => 0.0,
    }
}

fn check_len(what: &'static str, text: &str, max: usize) -> Result<(), CoreError> {
    if text.len() > max {
        return Err(CoreError::invalid(what, format!("{} bytes; the limit is {max}", text.len())));
    }
    Ok(())
}

impl VoteSpec {
    /// Checks the description against the limits, before anything is created.
    pub fn validate(&self, limits: &Limits) -> Result<(), CoreError> {
        name::validate("vote id", &self.vote_id)?;
        self.participants.validate(limits)?;
        check_len("vote question", &self.question, limits.max_vote_ballot_bytes)?;
        if self.timeout_ms > limits.max_sync_timeout_ms {
            return Err(CoreError::invalid(
                "vote timeout",
                format!(
                    "{} ms; the limit is {} ms (limits.max_sync_timeout_ms)",
                    self.timeout_ms, limits.max_sync_timeout_ms
                ),
            ));
        }
        match &self.choices {
            Choices::Options(options) => {
                if options.is_empty() || options.len() > limits.max_vote_options {
                    return Err(CoreError::invalid(
                        "vote options",
                        format!(
                            "{} options; between 1 and {} (limits.max_vote_options)",
                            options.len(),
                            limits.max_vote_options
                        ),
                    ));
                }
                let mut seen = BTreeSet::new();
                for o in options {
                    if o.is_empty() {
                        return Err(CoreError::invalid("vote options", "an option is empty"));
                    }
                    check_len("vote option", o, limits.max_vote_option_bytes)?;
                    if !seen.insert(o) {
                        return Err(CoreError::invalid("vote options", format!("'{o}' is listed twice")));
                    }
                }
            }
            Choices::Recommendations { key_field } => {
                if key_field.is_empty() {
                    return Err(CoreError::invalid("vote key field", "name the field that groups recommendations"));
                }
                check_len("vote key field", key_field, limits.max_vote_option_bytes)?;
            }
        }
        match self.policy {
            Policy::Supermajority { num, den } if den == 0 || num == 0 || num > den => {
                return Err(CoreError::invalid("vote policy", format!("supermajority {num}/{den}: needs 0 < k <= n")));
            }
            _ => {}
        }
        if let WeightSource::Metadata(field) = &self.weight {
            if field.is_empty() {
                return Err(CoreError::invalid("vote weight", "name the metadata field that holds the weight"));
            }
        }
        if !self.quorum_weight.is_finite() || self.quorum_weight < 0.0 {
            return Err(CoreError::invalid(
                "vote quorum weight",
                format!("{}: must be a number >= 0", self.quorum_weight),
            ));
        }
        if self.veto_roles.len() > limits.max_vote_options {
            return Err(CoreError::invalid("vote veto roles", format!("more than {}", limits.max_vote_options)));
        }
        for role in &self.veto_roles {
            name::validate("veto role", role)?;
        }
        if let TieRule::Breaker(role) = &self.tie {
            name::validate("tie-breaker role", role)?;
        }
        if !self.topic.is_empty() {
            topic::validate_topic(&self.topic, limits.max_topic_len)?;
        }
        Ok(())
    }
}

impl Vote {
    /// A new vote opened by `opener`. `required` is the resolved voter set (empty for a count).
    pub fn new(spec: VoteSpec, opener: Arc<str>, required: BTreeSet<Arc<str>>, now: Time, timeout_ms: u64) -> Self {
        let required_count = match &spec.participants {
            Participants::Count(n) => *n as usize,
            _ => required.len(),
        };
        Vote {
            spec,
            opener,
            required,
            required_count,
            ballots: Vec::new(),
            gone: BTreeSet::new(),
            watchers: Vec::new(),
            created_at: now,
            deadline: now.saturating_add(timeout_ms),
            state: VoteState::Open,
            finished_at: None,
            outcome: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.spec.vote_id
    }

    pub fn is_open(&self) -> bool {
        self.state == VoteState::Open
    }

    pub fn deadline(&self) -> Time {
        self.deadline
    }

    pub fn finished_at(&self) -> Option<Time> {
        self.finished_at
    }

    fn ballot_of(&self, agent: &str) -> Option<usize> {
        self.ballots.iter().position(|b| b.agent_id == agent)
    }

    fn is_count(&self) -> bool {
        matches!(self.spec.participants, Participants::Count(_))
    }

    fn describe_required(&self) -> String {
        match &self.spec.participants {
            Participants::Role(role) => {
                let names: Vec<&str> = self.required.iter().map(|r| &**r).collect();
                format!("role {role}: {{{}}}", names.join(", "))
            }
            other => other.describe(),
        }
    }

    /// The ballot `voter` casts, weighed and checked; `Err` leaves the vote as it was.
    fn make_ballot(
        &self,
        now: Time,
        agent: &str,
        req: &BallotRequest,
        voter: VoterFacts<'_>,
        limits: &Limits,
    ) -> Result<Ballot, CoreError> {
        let vote_id = &self.spec.vote_id;
        if let Some(c) = req.confidence {
            if !c.is_finite() || !(0.0..=1.0).contains(&c) {
                return Err(CoreError::BadConfidence { vote_id: vote_id.clone(), value: c.to_string() });
            }
        }
        if req.veto && !self.spec.veto_roles.iter().any(|r| r == voter.role) {
            return Err(CoreError::VetoNotAllowed {
                vote_id: vote_id.clone(),
                agent: agent.to_owned(),
                role: voter.role.to_owned(),
            });
        }
        let (key, directive_json, abstain_reason) = match (&req.choice, &self.spec.choices) {
            (BallotChoice::Abstain(reason), _) => {
                check_len("abstention reason", reason, limits.max_vote_ballot_bytes)?;
                (String::new(), String::new(), Some(reason.clone()))
            }
            (BallotChoice::Option(option), Choices::Options(options)) => {
                if !options.contains(option) {
                    return Err(CoreError::UnknownOption {
                        vote_id: vote_id.clone(),
                        option: option.clone(),
                        options: options.join(", "),
                    });
                }
                (option.clone(), Value::String(option.clone()).to_string(), None)
            }
            (BallotChoice::Recommendation(text), Choices::Recommendations { key_field }) => {
                check_len("recommendation", text, limits.max_vote_ballot_bytes)?;
                let bad = |reason: String| CoreError::BadBallot { vote_id: vote_id.clone(), reason };
                let value: Value =
                    serde_json::from_str(text).map_err(|e| bad(format!("the recommendation is not JSON: {e}")))?;
                let key = value.get(key_field).ok_or_else(|| {
                    bad(format!("the recommendation is not a JSON object with the field '{key_field}'"))
                })?;
                (key.to_string(), value.to_string(), None)
            }
            (BallotChoice::Option(option), Choices::Recommendations { key_field }) => {
                return Err(CoreError::BadBallot {
                    vote_id: vote_id.clone(),
                    reason: format!(
                        "this vote takes JSON recommendations keyed by '{key_field}', not the option '{option}'"
                    ),
                });
            }
            (BallotChoice::Recommendation(_), Choices::Options(options)) => {
                return Err(CoreError::BadBallot {
                    vote_id: vote_id.clone(),
                    reason: format!("this vote takes one of the options {}, not a recommendation", options.join(", ")),
                });
            }
        };
        let weight = if abstain_reason.is_some() {
            0.0
        } else {
            let bad_weight =
                |reason: String| CoreError::BadWeight { vote_id: vote_id.clone(), agent: agent.to_owned(), reason };
            match &self.spec.weight {
                WeightSource::Equal => 1.0,
                WeightSource::Health => voter.health,
                WeightSource::Confidence => req.confidence.ok_or_else(|| CoreError::BadConfidence {
                    vote_id: vote_id.clone(),
                    value: "none (this vote weighs ballots by confidence: give one)".into(),
                })?,
                WeightSource::Metadata(field) => {
                    let text = voter
                        .metadata
                        .get(field)
                        .ok_or_else(|| bad_weight(format!("the agent has no metadata field '{field}'")))?;
                    let w: f64 = text
                        .trim()
                        .parse()
                        .map_err(|_| bad_weight(format!("metadata '{field}' is '{text}', not a number")))?;
                    if !w.is_finite() || w < 0.0 {
                        return Err(bad_weight(format!(
                            "metadata '{field}' is {text}: a weight must be a number >= 0"
                        )));
                    }
                    w
                }
            }
        };
        Ok(Ballot {
            agent_id: agent.to_owned(),
            role: voter.role.to_owned(),
            key,
            directive_json,
            abstain_reason,
            confidence: req.confidence,
            weight,
            veto: req.veto,
            at: now,
        })
    }

    /// Records `agent`'s ballot. A ballot identical to the one it cast already re-attaches its
    /// request (a client resending after a reconnect); a different one is a double ballot.
    fn cast(
        &mut self,
        now: Time,
        watcher: Watcher,
        req: &BallotRequest,
        voter: VoterFacts<'_>,
        limits: &Limits,
    ) -> Result<Result<Option<u32>, Arc<VoteOutcome>>, CoreError> {
        let agent = watcher.agent.clone();
        let vote_id = self.spec.vote_id.clone();
        let earlier = self.ballot_of(&agent).map(|i| &self.ballots[i]);
        if earlier.is_some_and(|b| !self.repeats(b, req)) {
            return Err(CoreError::DoubleBallot { vote_id, agent: agent.to_string() });
        }
        if let Some(outcome) = &self.outcome {
            if earlier.is_some() {
                return Ok(Err(outcome.clone()));
            }
            return Err(CoreError::VoteClosed { vote_id, why: format!("it was decided ({})", self.state.as_str()) });
        }
        if !self.is_count() && !self.required.contains(&agent) {
            return Err(CoreError::NotAVoter {
                vote_id,
                agent: agent.to_string(),
                participants: self.describe_required(),
            });
        }
        if earlier.is_some() {
            self.watch(watcher);
            return Ok(Ok(None));
        }
        let ballot = self.make_ballot(now, &agent, req, voter, limits)?;
        if now >= self.deadline {
            return Err(CoreError::VoteClosed { vote_id, why: "its deadline passed".into() });
        }
        self.ballots.push(ballot);
        self.gone.remove(&agent);
        self.watch(watcher);
        Ok(Ok(Some(self.ballots.len() as u32 - 1)))
    }

    /// Whether `req` says what the recorded ballot `b` says (a resend, not a second ballot).
    fn repeats(&self, b: &Ballot, req: &BallotRequest) -> bool {
        let same_choice = match (&req.choice, &self.spec.choices) {
            (BallotChoice::Abstain(reason), _) => b.abstain_reason.as_ref() == Some(reason),
            (BallotChoice::Option(o), _) => !b.is_abstention() && b.key == *o,
            (BallotChoice::Recommendation(text), Choices::Recommendations { key_field }) => {
                let value: Option<Value> = serde_json::from_str(text).ok();
                !b.is_abstention()
                    && value.and_then(|v| v.get(key_field).map(Value::to_string)).as_ref() == Some(&b.key)
            }
            (BallotChoice::Recommendation(_), Choices::Options(_)) => false,
        };
        same_choice && b.veto == req.veto && b.confidence == req.confidence
    }

    fn watch(&mut self, watcher: Watcher) {
        if let Some(w) = self.watchers.iter_mut().find(|w| w.agent == watcher.agent) {
            w.request_id = watcher.request_id;
        } else {
            self.watchers.push(watcher);
        }
    }

    /// Whether nobody else can vote: every participant voted or is gone, or the count is reached.
    fn complete(&self) -> bool {
        if self.is_count() {
            return self.ballots.len() >= self.required_count;
        }
        self.required.iter().all(|r| self.gone.contains(r) || self.ballot_of(r).is_some())
    }

    fn missing_count(&self) -> u32 {
        if self.is_count() {
            self.required_count.saturating_sub(self.ballots.len()) as u32
        } else {
            self.required.iter().filter(|r| self.ballot_of(r).is_none()).count() as u32
        }
    }

    /// Counts the ballots and fixes the outcome; returns every watcher to answer.
    fn decide(&mut self, now: Time, max_tally: usize) -> (Vec<Watcher>, Arc<VoteOutcome>) {
        let outcome = Arc::new(self.tally(now, max_tally));
        self.state = if outcome.decided { VoteState::Decided } else { VoteState::NoDecision };
        self.finished_at = Some(now);
        self.outcome = Some(outcome.clone());
        (std::mem::take(&mut self.watchers), outcome)
    }

    /// The outcome the ballots cast so far give.
    fn tally(&self, now: Time, max_tally: usize) -> VoteOutcome {
        // Groups in order of their first ballot: (key, weight, ballots, first ballot).
        let mut groups: Vec<(String, f64, u32, usize)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut abstentions = 0u32;
        let mut total = 0.0f64;
        for (i, b) in self.ballots.iter().enumerate() {
            if b.is_abstention() {
                abstentions += 1;
                continue;
            }
            total += b.weight;
            let g = *index.entry(&b.key).or_insert_with(|| {
                groups.push((b.key.clone(), 0.0, 0, i));
                groups.len() - 1
            });
            groups[g].1 += b.weight;
            groups[g].2 += 1;
        }
        // Heaviest first; equal weights by their first ballot: the order is the same every time.
        groups.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.3.cmp(&b.3)));
        let ballots = self.ballots.len() as u32 - abstentions;
        let cast = self.ballots.len() as u32;
        let verdict = self.verdict(&groups, total, cast);
        let (decided, choice, directive_json, reason) = match verdict {
            Ok(g) => {
                let (key, _, _, first) = &groups[g];
                (true, key.clone(), self.ballots[*first].directive_json.clone(), String::new())
            }
            Err(reason) => (false, String::new(), String::new(), reason),
        };
        VoteOutcome {
            vote_id: self.spec.vote_id.clone(),
            question: self.spec.question.clone(),
            decided,
            choice,
            directive_json,
            reason,
            tally: groups
                .iter()
                .take(max_tally)
                .map(|(choice, weight, ballots, _)| TallyEntry {
                    choice: choice.clone(),
                    weight: *weight,
                    ballots: *ballots,
                })
                .collect(),
            groups: groups.len() as u32,
            ballots,
            abstentions,
            missing: self.missing_count(),
            total_weight: total,
            decided_at: now,
        }
    }

    /// The winning group (an index into `groups`, sorted heaviest first), or why there is none.
    fn verdict(&self, groups: &[(String, f64, u32, usize)], total: f64, cast: u32) -> Result<usize, String> {
        let spec = &self.spec;
        if cast < spec.quorum_ballots {
            return Err(format!("quorum not reached: {cast} ballot(s) of the {} required", spec.quorum_ballots));
        }
        if total < spec.quorum_weight {
            return Err(format!("quorum not reached: weight {total} of the {} required", spec.quorum_weight));
        }
        let vetoes: Vec<&str> = self.ballots.iter().filter(|b| b.veto).map(|b| b.agent_id.as_str()).collect();
        if !vetoes.is_empty() {
            return Err(format!("vetoed by {}", vetoes.join(", ")));
        }
        let Some(top) = groups.first() else {
            return Err("no ballot chose anything".into());
        };
        let tied: Vec<usize> = (0..groups.len()).take_while(|&g| groups[g].1 == top.1).collect();
        let winner = if tied.len() > 1 {
            let names = || tied.iter().map(|&g| groups[g].0.as_str()).collect::<Vec<_>>().join(", ");
            match &spec.tie {
                TieRule::NoDecision => return Err(format!("tie between {}", names())),
                TieRule::Breaker(role) => {
                    let mut breakers: Vec<&Ballot> =
                        self.ballots.iter().filter(|b| b.role == *role && !b.is_abstention()).collect();
                    breakers.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
                    let pick = breakers.iter().find_map(|b| tied.iter().copied().find(|&g| groups[g].0 == b.key));
                    match pick {
                        Some(g) => g,
                        None => {
                            return Err(format!(
                                "tie between {} and no voter of the tie-breaker role {role} chose one of them",
                                names()
                            ))
                        }
                    }
                }
            }
        } else {
            0
        };
        let w = groups[winner].1;
        let share = |w: f64| if total > 0.0 { format!("{:.1}%", w * 100.0 / total) } else { "0%".into() };
        match spec.policy {
            Policy::Plurality => Ok(winner),
            Policy::Majority if w * 2.0 > total => Ok(winner),
            Policy::Majority => Err(format!("no majority: {} holds {} of the weight cast", groups[winner].0, share(w))),
            Policy::Supermajority { num, den } if w * f64::from(den) >= total * f64::from(num) => Ok(winner),
            Policy::Supermajority { num, den } => Err(format!(
                "no supermajority of {num}/{den}: {} holds {} of the weight cast",
                groups[winner].0,
                share(w)
            )),
            Policy::Unanimity if groups.len() == 1 => Ok(winner),
            Policy::Unanimity => Err(format!("not unanimous: {} choices", groups.len())),
        }
    }

    /// The full record.
    pub fn status(&self) -> VoteStatus {
        let missing = if self.is_count() {
            Vec::new()
        } else {
            self.required.iter().filter(|r| self.ballot_of(r).is_none()).map(|r| r.to_string()).collect()
        };
        VoteStatus {
            vote_id: self.spec.vote_id.clone(),
            question: self.spec.question.clone(),
            state: self.state,
            opener: self.opener.to_string(),
            participants: self.describe_required(),
            policy: self.spec.policy.describe(),
            weight: self.spec.weight.describe(),
            topic: self.spec.topic.clone(),
            required_count: self.required_count as u32,
            ballots: self.ballots.clone(),
            missing,
            missing_count: self.missing_count(),
            gone: self.gone.iter().map(|g| g.to_string()).collect(),
            created_at: self.created_at,
            deadline: self.deadline,
            finished_at: self.finished_at,
            outcome: self.outcome.clone(),
        }
    }

    /// Reads the record in plain language. `agent_status` says what the registry knows of an
    /// agent (`None`: not registered).
    pub fn diagnose(&self, now: Time, agent_status: impl Fn(&str) -> Option<AgentStatus>) -> VoteDiagnosis {
        let status = self.status();
        let mut issues = Vec::new();
        let mut recs = Vec::new();
        match (&self.outcome, self.state) {
            (Some(o), VoteState::Decided) => {
                issues
                    .push(format!("none: decided '{}' with {} ballot(s), {} missing", o.choice, o.ballots, o.missing));
            }
            (Some(o), _) => {
                issues.push(format!("no decision: {}", o.reason));
                recs.push("open a new vote under a new id once the cause is fixed".into());
            }
            (None, _) => {
                let waited = now.saturating_sub(self.created_at);
                let budget = self.deadline.saturating_sub(self.created_at).max(1);
                issues.push(format!(
                    "open: {} of {} ballot(s) in after {waited} ms ({}% of the {budget} ms timeout)",
                    self.ballots.len(),
                    self.required_count,
                    waited * 100 / budget
                ));
                for agent in &status.missing {
                    match agent_status(agent) {
                        None => {
                            issues.push(format!("'{agent}' is not registered"));
                            recs.push(format!("start agent '{agent}', or check the vote names it correctly"));
                        }
                        Some(AgentStatus::Lost) => {
                            issues.push(format!("'{agent}' lost its lease: it counts as missing"));
                        }
                        Some(AgentStatus::Paused) => {
                            issues.push(format!("'{agent}' is paused"));
                            recs.push(format!("resume '{agent}' so it can vote"));
                        }
                        Some(s) => issues.push(format!("'{agent}' is registered ({}) but has not voted", s.as_str())),
                    }
                }
                if self.ballots.len() < self.spec.quorum_ballots as usize {
                    recs.push(format!(
                        "{} more ballot(s) are needed for the quorum of {}",
                        self.spec.quorum_ballots as usize - self.ballots.len(),
                        self.spec.quorum_ballots
                    ));
                }
            }
        }
        VoteDiagnosis { status, issues, recommendations: recs }
    }

    /// The image kept in the store (ballots apart).
    pub fn image(&self, namespace: &str) -> VoteImage {
        VoteImage {
            namespace: namespace.to_owned(),
            spec: self.spec.clone(),
            opener: self.opener.to_string(),
            required: self.required.iter().map(|r| r.to_string()).collect(),
            gone: self.gone.iter().map(|r| r.to_string()).collect(),
            created_at: self.created_at,
            deadline: self.deadline,
            state: self.state,
            finished_at: self.finished_at,
            outcome: self.outcome.as_deref().cloned(),
            ballots: Vec::new(),
        }
    }

    /// The ballot at `position`, for the store.
    pub fn ballot(&self, position: u32) -> Option<&Ballot> {
        self.ballots.get(position as usize)
    }

    /// The vote as it was kept. Voters restored have no request to answer until they cast again.
    pub fn restore(image: VoteImage) -> Result<Vote, String> {
        let timeout = image.deadline.saturating_sub(image.created_at);
        let mut vote = Vote::new(
            image.spec,
            image.opener.as_str().into(),
            image.required.iter().map(|r| Arc::from(r.as_str())).collect(),
            image.created_at,
            timeout,
        );
        vote.gone = image.gone.iter().map(|r| Arc::from(r.as_str())).collect();
        vote.ballots = image.ballots;
        vote.state = image.state;
        vote.finished_at = image.finished_at;
        vote.outcome = image.outcome.map(Arc::new);
        if (vote.state == VoteState::Open) != vote.outcome.is_none() {
            return Err(format!("state {} does not match its outcome", vote.state.as_str()));
        }
        Ok(vote)
    }
}

/// Every vote of every namespace, with the per-namespace bookkeeping of open and retained ones.
#[derive(Default)]
pub struct Votes {
    votes: BTreeMap<(Arc<str>, Arc<str>), Vote>,
    open: HashMap<Arc<str>, usize>,
    /// Finished votes per namespace, oldest first.
    finished: HashMap<Arc<str>, VecDeque<Arc<str>>>,
}

impl Votes {
    /// The vote, by keys the engine holds.
    pub fn get(&self, ns: &str, id: &str) -> Option<&Vote> {
        self.votes.get(&(Arc::from(ns), Arc::from(id)))
    }

    /// How many votes are open, over every namespace.
    pub fn open_count(&self) -> usize {
        self.open.values().sum()
    }

    /// Opens a vote (`timeout_ms` already resolved). Opening again the same vote, by the same
    /// opener and with the same description, re-attaches the opener's wait (a resend after a
    /// reconnect); anything else under a known id is refused.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        opener: &Arc<str>,
        spec: VoteSpec,
        timeout_ms: u64,
        required: BTreeSet<Arc<str>>,
        wait: Option<u64>,
        limits: &Limits,
    ) -> Result<Opened, CoreError> {
        let key = (ns.clone(), Arc::from(spec.vote_id.as_str()));
        if let Some(vote) = self.votes.get_mut(&key) {
            if vote.opener != *opener || vote.spec != spec {
                return Err(CoreError::VoteExists { vote_id: spec.vote_id });
            }
            return Ok(match (&vote.outcome, wait) {
                (Some(o), _) => Opened::Answer(Reply::Vote(o.clone())),
                (None, Some(request_id)) => {
                    vote.watch(Watcher { agent: opener.clone(), request_id });
                    Opened::Reattached
                }
                (None, None) => Opened::Answer(Reply::Ok),
            });
        }
        let open = self.open.get(ns).copied().unwrap_or(0);
        if open >= limits.max_open_votes {
            return Err(CoreError::Limit {
                what: "open votes",
                limit: limits.max_open_votes as u64,
                hint: "let open votes decide or time out, or raise limits.max_open_votes",
            });
        }
        let mut vote = Vote::new(spec, opener.clone(), required, now, timeout_ms);
        if let Some(request_id) = wait {
            vote.watch(Watcher { agent: opener.clone(), request_id });
        }
        self.votes.insert(key, vote);
        *self.open.entry(ns.clone()).or_default() += 1;
        Ok(Opened::New)
    }

    /// A role vote whose role nobody holds is decided at once (nobody can vote); the engine asks.
    pub fn decide_if_complete(&mut self, now: Time, ns: &Arc<str>, id: &str, limits: &Limits) -> Option<Decision> {
        let key = (ns.clone(), Arc::from(id));
        let vote = self.votes.get(&key)?;
        (vote.is_open() && vote.complete()).then(|| self.finish(now, key, limits))
    }

    /// Records a ballot from `watcher.agent`, answered (with `watcher.request_id`) on the decision.
    pub fn cast(
        &mut self,
        now: Time,
        ns: &Arc<str>,
        watcher: Watcher,
        req: &BallotRequest,
        voter: VoterFacts<'_>,
        limits: &Limits,
    ) -> Result<Cast, CoreError> {
        let key = (ns.clone(), Arc::from(req.vote_id.as_str()));
        let vote = self
            .votes
            .get_mut(&key)
            .ok_or_else(|| CoreError::UnknownVote { namespace: ns.to_string(), vote_id: req.vote_id.clone() })?;
        match vote.cast(now, watcher, req, voter, limits)? {
            Err(outcome) => Ok(Cast::Finished(Reply::Vote(outcome))),
            Ok(Some(position)) if vote.complete() => {
                Ok(Cast::Decided { position, decision: self.finish(now, key, limits) })
            }
            Ok(new_ballot) => Ok(Cast::Waiting { new_ballot }),
        }
    }

    /// The deadline: decides with the ballots in, if the vote is still open.
    pub fn expire(&mut self, now: Time, ns: &Arc<str>, id: &Arc<str>, limits: &Limits) -> Option<Decision> {
        let key = (ns.clone(), id.clone());
        let vote = self.votes.get(&key)?;
        (vote.is_open() && vote.deadline <= now).then(|| self.finish(now, key, limits))
    }

    /// `agent` was lost or left: in every open vote of `ns` it was to vote in and has not, it
    /// counts as missing; votes nobody else can vote in any more are decided, in id order.
    pub fn voter_gone(&mut self, now: Time, ns: &Arc<str>, agent: &Arc<str>, limits: &Limits) -> Vec<Decision> {
        let mut done = Vec::new();
        for (key, vote) in self.votes.range_mut((ns.clone(), Arc::from(""))..) {
            if key.0 != *ns {
                break;
            }
            if vote.is_open() && vote.required.contains(agent) && vote.ballot_of(agent).is_none() {
                vote.gone.insert(agent.clone());
                if vote.complete() {
                    done.push(key.clone());
                }
            }
        }
        done.into_iter().map(|key| self.finish(now, key, limits)).collect()
    }

    fn finish(&mut self, now: Time, key: (Arc<str>, Arc<str>), limits: &Limits) -> Decision {
        let vote = self.votes.get_mut(&key).expect("present");
        let (watchers, outcome) = vote.decide(now, limits.max_vote_options);
        let (topic, opener) = (vote.spec.topic.clone(), vote.opener.clone());
        let (ns, id) = key;
        if let Some(n) = self.open.get_mut(&ns) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&ns);
            }
        }
        let finished = self.finished.entry(ns.clone()).or_default();
        finished.push_back(id.clone());
        let mut evicted = Vec::new();
        while finished.len() > limits.max_retained_votes {
            if let Some(old) = finished.pop_front() {
                evicted.push(old);
            }
        }
        for old in &evicted {
            self.votes.remove(&(ns.clone(), old.clone()));
        }
        Decision { namespace: ns, vote_id: id, watchers, outcome, topic, opener, evicted }
    }

    /// Forgets a finished vote whose retention (`retention_ms` after it finished) has ended.
    pub fn retire(&mut self, now: Time, ns: &Arc<str>, id: &Arc<str>, retention_ms: u64) -> bool {
        let key = (ns.clone(), id.clone());
        let due =
            self.votes.get(&key).and_then(Vote::finished_at).is_some_and(|at| at.saturating_add(retention_ms) <= now);
        if due {
            self.votes.remove(&key);
            if let Some(f) = self.finished.get_mut(ns) {
                f.retain(|x| x != id);
                if f.is_empty() {
                    self.finished.remove(ns);
                }
            }
        }
        due
    }

    /// Every vote of a namespace, by id.
    pub fn list(&self, ns: &str) -> Vec<VoteStatus> {
        let ns: Arc<str> = ns.into();
        self.votes
            .range((ns.clone(), Arc::from(""))..)
            .take_while(|(k, _)| k.0 == ns)
            .map(|(_, v)| v.status())
            .collect()
    }

    /// One vote, or `UNKNOWN_VOTE`.
    pub fn find(&self, ns: &str, id: &str) -> Result<&Vote, CoreError> {
        self.get(ns, id).ok_or_else(|| CoreError::UnknownVote { namespace: ns.to_owned(), vote_id: id.to_owned() })
    }

    /// Rebuilds the votes kept; returns (namespace, id, deadline) of the open ones and
    /// (namespace, id, finished at) of the finished ones, oldest first, for the engine's timers.
    #[allow(clippy::type_complexity)]
    pub fn restore(
        &mut self,
        images: Vec<VoteImage>,
    ) -> Result<(Vec<(Arc<str>, Arc<str>, Time)>, Vec<(Arc<str>, Arc<str>, Time)>), CoreError> {
        let mut open = Vec::new();
        let mut finished = Vec::new();
        for image in images {
            let ns: Arc<str> = name::namespace_or_default(&image.namespace)?.into();
            let label = format!("vote '{}' of namespace '{ns}'", image.spec.vote_id);
            let vote = Vote::restore(image).map_err(|e| CoreError::invalid("stored data", format!("{label}: {e}")))?;
            let id: Arc<str> = vote.id().into();
            match vote.finished_at {
                None => {
                    *self.open.entry(ns.clone()).or_default() += 1;
                    open.push((ns.clone(), id.clone(), vote.deadline));
                }
                Some(at) => finished.push((ns.clone(), id.clone(), at)),
            }
            self.votes.insert((ns, id), vote);
        }
        finished.sort_by_key(|(_, _, at)| *at);
        for (ns, id, _) in &finished {
            self.finished.entry(ns.clone()).or_default().push_back(id.clone());
        }
        Ok((open, finished))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(participants: Participants, options: &[&str]) -> VoteSpec {
        VoteSpec {
            vote_id: "v".into(),
            question: "which?".into(),
            participants,
            timeout_ms: 0,
            policy: Policy::Plurality,
            choices: Choices::Options(options.iter().map(|s| s.to_string()).collect()),
            weight: WeightSource::Equal,
            quorum_ballots: 0,
            quorum_weight: 0.0,
            veto_roles: vec![],
            tie: TieRule::NoDecision,
            topic: "votes.out".into(),
        }
    }

    fn set(ids: &[&str]) -> (Participants, BTreeSet<Arc<str>>) {
        (Participants::Agents(ids.iter().map(|s| s.to_string()).collect()), ids.iter().map(|s| Arc::from(*s)).collect())
    }

    struct Fixture {
        votes: Votes,
        ns: Arc<str>,
        limits: Limits,
        meta: BTreeMap<String, String>,
    }

    impl Fixture {
        fn new(spec: VoteSpec, required: BTreeSet<Arc<str>>) -> Fixture {
            let mut f =
                Fixture { votes: Votes::default(), ns: "ns".into(), limits: Limits::default(), meta: BTreeMap::new() };
            spec.validate(&f.limits).unwrap();
            f.votes.open(0, &f.ns.clone(), &"opener".into(), spec, 1000, required, None, &f.limits.clone()).unwrap();
            f
        }

        fn cast_as(
            &mut self,
            agent: &str,
            role: &str,
            choice: BallotChoice,
            confidence: Option<f64>,
            veto: bool,
        ) -> Result<Cast, CoreError> {
            let req = BallotRequest { vote_id: "v".into(), choice, confidence, veto };
            let voter = VoterFacts { role, metadata: &self.meta, health: 1.0 };
            let ns = self.ns.clone();
            self.votes.cast(1, &ns, Watcher { agent: agent.into(), request_id: 7 }, &req, voter, &self.limits)
        }

        fn pick(&mut self, agent: &str, option: &str) -> Result<Cast, CoreError> {
            self.cast_as(agent, "r", BallotChoice::Option(option.into()), None, false)
        }
    }

    fn decided(cast: Result<Cast, CoreError>) -> Arc<VoteOutcome> {
        match cast.unwrap() {
            Cast::Decided { decision, .. } => decision.outcome,
            other => panic!("not decided: {other:?}"),
        }
    }

    #[test]
    fn plurality_decides_when_every_voter_is_in() {
        let (p, req) = set(&["a", "b", "c"]);
        let mut f = Fixture::new(spec(p, &["buy", "sell"]), req);
        assert!(matches!(f.pick("a", "buy").unwrap(), Cast::Waiting { new_ballot: Some(0) }));
        assert!(matches!(f.pick("b", "sell").unwrap(), Cast::Waiting { .. }));
        let o = decided(f.pick("c", "buy"));
        assert!(o.decided);
        assert_eq!(o.choice, "buy");
        assert_eq!(o.directive_json, "\"buy\"");
        assert_eq!(o.tally[0], TallyEntry { choice: "buy".into(), weight: 2.0, ballots: 2 });
        // Decided once: a repeat gets the same outcome, a newcomer is refused.
        assert!(matches!(f.pick("a", "buy").unwrap(), Cast::Finished(Reply::Vote(x)) if Arc::ptr_eq(&x, &o)));
    }

    #[test]
    fn ballots_are_checked() {
        let (p, req) = set(&["a", "b"]);
        let mut f = Fixture::new(spec(p, &["buy", "sell"]), req);
        assert_eq!(f.pick("z", "buy").unwrap_err().reason(), crate::Reason::NotAVoter);
        assert_eq!(f.pick("a", "hold").unwrap_err().reason(), crate::Reason::UnknownOption);
        let bad = f.cast_as("a", "r", BallotChoice::Option("buy".into()), Some(1.5), false);
        assert_eq!(bad.unwrap_err().reason(), crate::Reason::BadConfidence);
        let veto = f.cast_as("a", "r", BallotChoice::Option("buy".into()), None, true);
        assert_eq!(veto.unwrap_err().reason(), crate::Reason::VetoNotAllowed);
        f.pick("a", "buy").unwrap();
        assert!(matches!(f.pick("a", "buy").unwrap(), Cast::Waiting { new_ballot: None }), "a resend re-attaches");
        assert_eq!(f.pick("a", "sell").unwrap_err().reason(), crate::Reason::DoubleBallot);
    }

    #[test]
    fn weights_from_metadata_must_be_numbers_of_zero_or_more() {
        let (p, req) = set(&["a", "b"]);
        let mut s = spec(p, &["x", "y"]);
        s.weight = WeightSource::Metadata("stake".into());
        let mut f = Fixture::new(s, req);
        assert_eq!(f.pick("a", "x").unwrap_err().reason(), crate::Reason::BadWeight, "no field");
        f.meta.insert("stake".into(), "lots".into());
        assert_eq!(f.pick("a", "x").unwrap_err().reason(), crate::Reason::BadWeight, "not a number");
        f.meta.insert("stake".into(), "-2".into());
        assert_eq!(f.pick("a", "x").unwrap_err().reason(), crate::Reason::BadWeight, "negative");
        f.meta.insert("stake".into(), "3".into());
        f.pick("a", "x").unwrap();
        f.meta.insert("stake".into(), "2".into());
        let o = decided(f.pick("b", "y"));
        assert_eq!((o.choice.as_str(), o.total_weight), ("x", 5.0));
    }

    #[test]
    fn majority_supermajority_and_unanimity_have_thresholds() {
        for (policy, expect) in [
            (Policy::Plurality, true),
            (Policy::Majority, true),
            (Policy::Supermajority { num: 2, den: 3 }, true),
            (Policy::Supermajority { num: 3, den: 4 }, false),
            (Policy::Unanimity, false),
        ] {
            let (p, req) = set(&["a", "b", "c"]);
            let mut s = spec(p, &["x", "y"]);
            s.policy = policy.clone();
            let mut f = Fixture::new(s, req);
            f.pick("a", "x").unwrap();
            f.pick("b", "x").unwrap();
            let o = decided(f.pick("c", "y"));
            assert_eq!(o.decided, expect, "{policy:?}: {}", o.reason);
        }
    }

    #[test]
    fn ties_follow_the_declared_rule() {
        let (p, req) = set(&["a", "b"]);
        let mut f = Fixture::new(spec(p.clone(), &["x", "y"]), req.clone());
        f.pick("a", "x").unwrap();
        let o = decided(f.pick("b", "y"));
        assert!(!o.decided);
        assert!(o.reason.contains("tie between x, y"), "{}", o.reason);
        let mut s = spec(p, &["x", "y"]);
        s.tie = TieRule::Breaker("chair".into());
        let mut f = Fixture::new(s, req);
        f.pick("a", "x").unwrap();
        let o = decided(f.cast_as("b", "chair", BallotChoice::Option("y".into()), None, false));
        assert_eq!((o.decided, o.choice.as_str()), (true, "y"));
    }

    #[test]
    fn a_veto_and_a_quorum_block_the_decision() {
        let (p, req) = set(&["a", "b"]);
        let mut s = spec(p.clone(), &["x"]);
        s.veto_roles = vec!["risk".into()];
        let mut f = Fixture::new(s, req.clone());
        f.pick("a", "x").unwrap();
        let o = decided(f.cast_as("b", "risk", BallotChoice::Abstain("too risky".into()), None, true));
        assert!(o.reason.contains("vetoed by b"), "{}", o.reason);
        let mut s = spec(p, &["x"]);
        s.quorum_ballots = 2;
        let mut f = Fixture::new(s, req);
        f.pick("a", "x").unwrap();
        let ns = f.ns.clone();
        let d = f.votes.voter_gone(5, &ns, &"b".into(), &f.limits).pop().expect("decided: nobody else can vote");
        assert!(!d.outcome.decided);
        assert!(d.outcome.reason.contains("quorum"), "{}", d.outcome.reason);
        assert_eq!(d.outcome.missing, 1, "the lost voter is missing, not a no");
        assert_eq!(d.outcome.ballots, 1);
    }

    #[test]
    fn recommendations_group_by_their_key_field() {
        let (p, req) = set(&["a", "b", "c"]);
        let mut s = spec(p, &[]);
        s.choices = Choices::Recommendations { key_field: "action".into() };
        s.weight = WeightSource::Confidence;
        let mut f = Fixture::new(s, req);
        let rec = |t: &str| BallotChoice::Recommendation(t.into());
        assert_eq!(
            f.cast_as("a", "r", rec(r#"{"action":"buy","qty":5}"#), None, false).unwrap_err().reason(),
            crate::Reason::BadConfidence,
            "weighing by confidence needs one"
        );
        assert_eq!(
            f.cast_as("a", "r", rec(r#"{"qty":5}"#), Some(0.5), false).unwrap_err().reason(),
            crate::Reason::BadBallot
        );
        f.cast_as("a", "r", rec(r#"{"action":"buy","qty":5}"#), Some(0.5), false).unwrap();
        f.cast_as("b", "r", rec(r#"{"action":"sell","qty":1}"#), Some(0.9), false).unwrap();
        let o = decided(f.cast_as("c", "r", rec(r#"{"action":"buy","qty":7}"#), Some(0.6), false));
        assert_eq!(o.choice, "\"buy\"");
        let directive: Value = serde_json::from_str(&o.directive_json).unwrap();
        assert_eq!(directive["qty"], 5, "the first recommendation of the winning group");
    }

    #[test]
    fn count_votes_decide_at_n_and_the_deadline_decides_the_rest() {
        let mut f = Fixture::new(spec(Participants::Count(3), &["x"]), BTreeSet::new());
        f.pick("a", "x").unwrap();
        let ns = f.ns.clone();
        assert!(f.votes.expire(999, &ns, &"v".into(), &f.limits).is_none());
        let d = f.votes.expire(1000, &ns, &"v".into(), &f.limits).unwrap();
        assert_eq!((d.outcome.decided, d.outcome.missing), (true, 2));
        assert_eq!(d.watchers.len(), 1);
        assert_eq!(f.pick("b", "x").unwrap_err().reason(), crate::Reason::VoteClosed);
    }

    #[test]
    fn an_image_restores_the_same_vote() {
        let (p, req) = set(&["a", "b"]);
        let mut f = Fixture::new(spec(p, &["x"]), req);
        f.pick("a", "x").unwrap();
        let vote = f.votes.get("ns", "v").unwrap();
        let mut image = vote.image("ns");
        image.ballots = vec![vote.ballot(0).unwrap().clone()];
        let json = serde_json::to_string(&image).unwrap();
        let back = Vote::restore(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.status(), vote.status());
    }
}
