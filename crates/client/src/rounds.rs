//! Tick rounds: a series of numbered rounds in which every participant gets the round's input
//! and answers with a JSON object; the server merges the answers into a shared context key and
//! publishes the result (see "Tick rounds" in docs/PROTOCOL.md).
//!
//! Participants take their inputs with [`Agent::rounds`] and answer each with
//! [`RoundInput::answer`]. Drivers and readers use [`RoundsClient`] (from
//! [`Client::rounds`](crate::Client::rounds)): create a series (server-driven with a cadence, or
//! client-driven), open rounds, list and show them.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use crate::Channel;
use futures::Stream;
use lockstep_proto::v1;
use lockstep_proto::v1::rounds_client::RoundsClient as Grpc;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Agent, Error};

/// Round inputs buffered for the application before it reads them; beyond that they are dropped
/// (and the rounds missed).
const ROUND_BUFFER: usize = 1024;

/// What the session's reader hands over: the round inputs for this agent. They are kept from the
/// start of the session, so that an input arriving before [`Agent::rounds`] is called is not lost.
pub(crate) struct RoundLink {
    tx: mpsc::Sender<v1::RoundInput>,
    rx: Mutex<Option<mpsc::Receiver<v1::RoundInput>>>,
}

impl Default for RoundLink {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(ROUND_BUFFER);
        RoundLink { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl RoundLink {
    /// A round input arrived.
    pub(crate) fn input(&self, input: v1::RoundInput) {
        if self.tx.try_send(input).is_err() {
            tracing::warn!("round input dropped: the application does not read its round inputs");
        }
    }
}

/// One round's input for this agent: answer it with [`RoundInput::answer`] before `deadline_ms`.
#[derive(Clone)]
pub struct RoundInput {
    pub series: String,
    pub round: u64,
    pub input: Value,
    /// Server clock (ms) at which the round closes without this agent's answer.
    pub deadline_ms: u64,
    agent: Agent,
}

impl std::fmt::Debug for RoundInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundInput")
            .field("series", &self.series)
            .field("round", &self.round)
            .field("input", &self.input)
            .field("deadline_ms", &self.deadline_ms)
            .finish()
    }
}

impl RoundInput {
    /// Answers the round with `output`, a JSON object merged as a merge patch; returns once the
    /// server took it. Refused answers change nothing: a closed round ([`Reason::RoundNotOpen`]),
    /// a second answer ([`Reason::RoundAnswered`]), not an object or too large
    /// ([`Reason::InvalidArgument`]).
    ///
    /// [`Reason::RoundNotOpen`]: crate::Reason::RoundNotOpen
    /// [`Reason::RoundAnswered`]: crate::Reason::RoundAnswered
    /// [`Reason::InvalidArgument`]: crate::Reason::InvalidArgument
    pub async fn answer(&self, output: &Value) -> Result<(), Error> {
        self.agent.answer_round(&self.series, self.round, output).await
    }
}

/// The round inputs for this agent, as an async stream (or with [`RoundInputs::next`]).
pub struct RoundInputs {
    agent: Agent,
    rx: mpsc::Receiver<v1::RoundInput>,
}

impl RoundInputs {
    /// The next round input; `None` once the session ended.
    pub async fn next(&mut self) -> Option<RoundInput> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for RoundInputs {
    type Item = RoundInput;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoundInput>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(r)) => match serde_json::from_str(&r.input_json) {
                    Ok(input) => {
                        let agent = self.agent.clone();
                        let (series, round, deadline_ms) = (r.series, r.round, r.deadline_ms);
                        return Poll::Ready(Some(RoundInput { series, round, input, deadline_ms, agent }));
                    }
                    // Left to its deadline: the server names this agent as missed.
                    Err(e) => tracing::warn!(error = %e, "undecodable round input"),
                },
                other => return other.map(|_| None),
            }
        }
    }
}

impl Agent {
    /// The round inputs for this agent (of every series it takes part in). Taken once; `None`
    /// afterwards. Inputs are kept from the start of the session until taken.
    pub fn rounds(&self) -> Option<RoundInputs> {
        let rx = self.round_link().rx.lock().expect("not poisoned").take()?;
        Some(RoundInputs { agent: self.clone(), rx })
    }

    /// Answers round `round` of `series` with `output` (a JSON object).
    pub async fn answer_round(&self, series: &str, round: u64, output: &Value) -> Result<(), Error> {
        let m = v1::RoundAnswer { series: series.to_owned(), round, output_json: output.to_string() };
        self.call_ok(v1::client_message::Kind::RoundAnswer(m)).await
    }
}

/// Who takes part in a series' rounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Participants {
    /// Exactly these agents.
    Agents(Vec<String>),
    /// Every live agent with this role when a round opens.
    Role(String),
}

/// A round series to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesSpec {
    pub name: String,
    pub participants: Participants,
    /// How long each round waits for answers.
    pub timeout_ms: u64,
    /// The context key the answers are merged into.
    pub context_key: String,
    /// The topic the merged result is published on (empty: none).
    pub topic: String,
    /// The server opens a round this often (0: rounds are opened with [`RoundsClient::open`]).
    pub cadence_ms: u64,
    /// `"agent_id"` (default, by agent id) or `"answer_order"`.
    pub merge_order: String,
    /// The input of server-driven rounds (default `{}`).
    pub input: Option<Value>,
}

impl SeriesSpec {
    /// A client-driven series of `participants`, merging into `context_key`.
    pub fn new(name: &str, participants: Participants, timeout_ms: u64, context_key: &str) -> Self {
        SeriesSpec {
            name: name.to_owned(),
            participants,
            timeout_ms,
            context_key: context_key.to_owned(),
            topic: String::new(),
            cadence_ms: 0,
            merge_order: String::new(),
            input: None,
        }
    }
}

/// Round series of a namespace, from anywhere: create, open rounds, remove, list and show.
#[derive(Clone)]
pub struct RoundsClient {
    grpc: Grpc<Channel>,
    namespace: String,
}

impl RoundsClient {
    pub(crate) fn new(channel: Channel, namespace: String, max_message: usize) -> Self {
        let grpc = Grpc::new(channel).max_decoding_message_size(max_message).max_encoding_message_size(max_message);
        RoundsClient { grpc, namespace }
    }

    /// Creates a series (the same spec again is a no-op).
    pub async fn create(&self, spec: &SeriesSpec) -> Result<v1::RoundSeriesInfo, Error> {
        let (agents, role) = match &spec.participants {
            Participants::Agents(ids) => (ids.clone(), String::new()),
            Participants::Role(r) => (Vec::new(), r.clone()),
        };
        let m = v1::RoundSeriesSpec {
            namespace: self.namespace.clone(),
            name: spec.name.clone(),
            agents,
            role,
            timeout_ms: spec.timeout_ms,
            context_key: spec.context_key.clone(),
            topic: spec.topic.clone(),
            cadence_ms: spec.cadence_ms,
            merge_order: spec.merge_order.clone(),
            input_json: spec.input.as_ref().map(Value::to_string).unwrap_or_default(),
        };
        Ok(self.grpc.clone().create_series(m).await?.into_inner())
    }

    /// Opens the next round of a client-driven series with `input`; `expected` is the round number
    /// the caller means to open (0: whichever is next).
    pub async fn open(&self, series: &str, input: &Value, expected: u64) -> Result<v1::RoundOpened, Error> {
        let m = v1::OpenRoundRequest {
            namespace: self.namespace.clone(),
            series: series.to_owned(),
            round: expected,
            input_json: input.to_string(),
            driver: String::new(),
        };
        Ok(self.grpc.clone().open_round(m).await?.into_inner())
    }

    /// Removes a series (its open round closes now).
    pub async fn remove(&self, series: &str) -> Result<v1::RoundSeriesInfo, Error> {
        let m = v1::RoundSeriesRef { namespace: self.namespace.clone(), name: series.to_owned() };
        Ok(self.grpc.clone().remove_series(m).await?.into_inner())
    }

    /// The series of the namespace, in name order (without their retained rounds).
    pub async fn list(&self) -> Result<Vec<v1::RoundSeriesInfo>, Error> {
        let m = v1::ListRoundSeriesRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().list_series(m).await?.into_inner().series)
    }

    /// One series with its open round and retained rounds.
    pub async fn series(&self, series: &str) -> Result<v1::RoundSeriesInfo, Error> {
        let m = v1::RoundSeriesRef { namespace: self.namespace.clone(), name: series.to_owned() };
        Ok(self.grpc.clone().get_series(m).await?.into_inner())
    }

    /// Round `round` of a series (0: the last opened), open or retained.
    pub async fn round(&self, series: &str, round: u64) -> Result<v1::RoundInfo, Error> {
        let m = v1::GetRoundRequest { namespace: self.namespace.clone(), series: series.to_owned(), round };
        Ok(self.grpc.clone().get_round(m).await?.into_inner())
    }
}
