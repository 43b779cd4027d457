//! Execution traces: stored outputs of tool calls, found by tool and input, so that an agent loads
//! a prior output instead of computing it again.
//!
//! [`Agent::traces`](crate::Agent::traces) records (`record`, `record_json`), looks up
//! (`lookup`), and asks for an output or the claim to compute it (`get_or_claim`: concurrent
//! agents asking for the same missing output compute it once — the first gets
//! [`Claim::Compute`], the others wait and receive the trace once it is recorded).
//! [`Client::traces`](crate::Client::traces) reads from anywhere (lookup, get, stats, lineage).
//! Outputs travel in chunks of 256 KiB; their SHA-256 is checked on both sides.

use crate::Channel;
use bytes::Bytes;
use lockstep_proto::group::Checksum;
use lockstep_proto::trace::TRACE_CHUNK_BYTES;
use lockstep_proto::v1;
use lockstep_proto::v1::trace_download::Kind as Down;
use lockstep_proto::v1::trace_upload::Kind as Up;
use lockstep_proto::v1::traces_client::TracesClient as Grpc;
use serde_json::Value;

use crate::{Agent, Detail, Error, Reason};

/// A trace's description (without its output).
pub type TraceInfo = v1::TraceInfo;

/// The store's counters.
pub type TraceStats = v1::TraceStats;

/// What a trace was computed from, and what was computed from it.
pub type TraceLineage = v1::TraceLineage;

/// A trace with its output, whose SHA-256 was checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub info: TraceInfo,
    pub output: Bytes,
}

impl Trace {
    /// The output as JSON.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_slice(&self.output).map_err(|e| Error::Input(format!("the output is not JSON: {e}")))
    }
}

/// What [`AgentTraces::get_or_claim`] answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// The output is stored (or was recorded while waiting): use it.
    Hit(Box<Trace>),
    /// This agent holds the claim: compute the output and record it (or release the claim).
    Compute { id: String },
}

/// What an output was computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Ids of the parent traces.
    pub parents: Vec<String>,
    /// Context keys and the versions read.
    pub context: Vec<(String, u64)>,
}

impl Lineage {
    /// Computed from these traces.
    pub fn parents<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        Lineage { parents: ids.into_iter().map(Into::into).collect(), context: Vec::new() }
    }

    /// Also computed from context `key` at `version`.
    pub fn with_context(mut self, key: impl Into<String>, version: u64) -> Self {
        self.context.push((key.into(), version));
        self
    }
}

/// An output to record: bytes, or JSON; with how long it took to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub bytes: Bytes,
    pub json: bool,
    pub duration_ms: u64,
}

impl Output {
    /// Opaque bytes.
    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        Output { bytes: bytes.into(), json: false, duration_ms: 0 }
    }

    /// A JSON value (its compact text).
    pub fn json(value: &Value) -> Self {
        Output { bytes: Bytes::from(value.to_string()), json: true, duration_ms: 0 }
    }

    /// It took `ms` to compute.
    pub fn took(mut self, ms: u64) -> Self {
        self.duration_ms = ms;
        self
    }
}

fn grpc(channel: Channel) -> Grpc<Channel> {
    Grpc::new(channel).max_decoding_message_size(crate::MAX_MESSAGE).max_encoding_message_size(crate::MAX_MESSAGE)
}

/// Reads a download: `Ok(None)` for a miss, the trace (checked), or a claim.
async fn download(mut stream: tonic::Streaming<v1::TraceDownload>) -> Result<Option<Claim>, Error> {
    let mut info: Option<TraceInfo> = None;
    let mut bytes = Vec::new();
    while let Some(msg) = stream.message().await? {
        match msg.kind {
            Some(Down::Miss(_)) => return Ok(None),
            Some(Down::Claim(c)) => return Ok(Some(Claim::Compute { id: c.id })),
            Some(Down::Info(i)) => {
                let size =
                    usize::try_from(i.size).map_err(|_| Error::Input("the output does not fit in memory".into()))?;
                bytes.reserve_exact(size);
                // A lookup's inline output comes with the info (servers that do not send it
                // there send it in chunks).
                bytes.extend_from_slice(&msg.output);
                info = Some(i);
            }
            Some(Down::Chunk(c)) => bytes.extend_from_slice(&c),
            None => {}
        }
    }
    let info = info.ok_or_else(|| Error::SessionEnded(Detail::new("the server sent no trace", None)))?;
    let got = Checksum::of(&bytes);
    if bytes.len() as u64 != info.size || got != info.sha256 {
        let message = format!(
            "the output of trace '{}' should be {} bytes hashing to {}, but {} bytes hashing to {got} arrived",
            info.id,
            info.size,
            info.sha256,
            bytes.len()
        );
        return Err(Error::InvalidArgument(Detail::new(message, Some(Reason::TraceHashMismatch))));
    }
    Ok(Some(Claim::Hit(Box::new(Trace { info, output: Bytes::from(bytes) }))))
}

fn hit(claim: Option<Claim>) -> Result<Option<Trace>, Error> {
    match claim {
        None => Ok(None),
        Some(Claim::Hit(t)) => Ok(Some(*t)),
        Some(Claim::Compute { .. }) => Err(Error::Input("the server answered a read with a claim".into())),
    }
}

/// Reads traces of one namespace from anywhere (no session needed).
#[derive(Clone)]
pub struct TracesClient {
    grpc: Grpc<Channel>,
    namespace: String,
}

impl TracesClient {
    pub(crate) fn new(channel: Channel, namespace: String) -> Self {
        TracesClient { grpc: grpc(channel), namespace }
    }

    /// The stored output of `tool` on `input`, or `None` (a miss). Equal inputs find the same
    /// trace however their JSON is written.
    pub async fn lookup(&self, tool: &str, input: &Value) -> Result<Option<Trace>, Error> {
        let r = v1::TraceLookupRequest {
            namespace: self.namespace.clone(),
            tool: tool.to_owned(),
            input_json: input.to_string(),
            inline_output: true,
        };
        hit(download(self.grpc.clone().lookup(r).await?.into_inner()).await?)
    }

    /// The trace `id` (`NotFound` with reason `UNKNOWN_TRACE` if it is not stored).
    pub async fn get(&self, id: &str) -> Result<Trace, Error> {
        let r = v1::TraceGetRequest { namespace: self.namespace.clone(), id: id.to_owned() };
        hit(download(self.grpc.clone().get(r).await?.into_inner()).await?)?
            .ok_or_else(|| Error::Input("the server answered a get with a miss".into()))
    }

    /// The store's counters (over every namespace).
    pub async fn stats(&self) -> Result<TraceStats, Error> {
        Ok(self.grpc.clone().stats(v1::TraceStatsRequest {}).await?.into_inner())
    }

    /// What trace `id` was computed from, and what was computed from it.
    pub async fn lineage(&self, id: &str) -> Result<TraceLineage, Error> {
        let r = v1::TraceGetRequest { namespace: self.namespace.clone(), id: id.to_owned() };
        Ok(self.grpc.clone().lineage(r).await?.into_inner())
    }
}

/// Traces as an agent uses them: reads, claims and records in its namespace, as its session.
pub struct AgentTraces<'a> {
    pub(crate) agent: &'a Agent,
}

impl AgentTraces<'_> {
    fn reader(&self) -> TracesClient {
        TracesClient::new(self.agent.channel(), self.agent.namespace().to_owned())
    }

    fn session(&self) -> v1::TraceSession {
        v1::TraceSession {
            namespace: self.agent.namespace().to_owned(),
            agent_id: self.agent.id().to_owned(),
            resume_token: self.agent.resume_token(),
        }
    }

    /// The stored output of `tool` on `input`, or `None`.
    pub async fn lookup(&self, tool: &str, input: &Value) -> Result<Option<Trace>, Error> {
        self.reader().lookup(tool, input).await
    }

    /// The trace `id`.
    pub async fn get(&self, id: &str) -> Result<Trace, Error> {
        self.reader().get(id).await
    }

    /// What trace `id` was computed from, and what was computed from it.
    pub async fn lineage(&self, id: &str) -> Result<TraceLineage, Error> {
        self.reader().lineage(id).await
    }

    /// The stored output, or the claim to compute it; while another agent holds the claim this
    /// waits (at most the server's `traces.max_wait_ms`) and returns the trace it records, or the
    /// claim if that agent gives up or goes.
    pub async fn get_or_claim(&self, tool: &str, input: &Value) -> Result<Claim, Error> {
        self.get_or_claim_within(tool, input, 0).await
    }

    /// As [`AgentTraces::get_or_claim`], waiting at most `wait_ms` (0: the server's longest);
    /// past it the error's reason is `TRACE_WAIT_TIMEOUT`.
    pub async fn get_or_claim_within(&self, tool: &str, input: &Value, wait_ms: u64) -> Result<Claim, Error> {
        let r = v1::TraceClaimRequest {
            session: Some(self.session()),
            tool: tool.to_owned(),
            input_json: input.to_string(),
            wait_ms,
        };
        let stream = grpc(self.agent.channel()).get_or_claim(r).await?.into_inner();
        download(stream).await?.ok_or_else(|| Error::Input("the server answered a claim with a miss".into()))
    }

    /// Gives up the claim on `tool` and `input`: the next waiting agent gets it.
    pub async fn release(&self, tool: &str, input: &Value) -> Result<(), Error> {
        let r = v1::TraceClaimRequest {
            session: Some(self.session()),
            tool: tool.to_owned(),
            input_json: input.to_string(),
            wait_ms: 0,
        };
        grpc(self.agent.channel()).release(r).await?;
        Ok(())
    }

    /// Records this agent's call of `tool` on `input` with its output and lineage; the answer is
    /// the stored trace (`new` false when the same trace was stored already).
    pub async fn record(
        &self,
        tool: &str,
        input: &Value,
        output: Output,
        lineage: Lineage,
    ) -> Result<TraceInfo, Error> {
        let bytes = output.bytes;
        let header = v1::TraceHeader {
            session: Some(self.session()),
            tool: tool.to_owned(),
            input_json: input.to_string(),
            json: output.json,
            size: bytes.len() as u64,
            sha256: Checksum::of(&bytes),
            parents: lineage.parents,
            context: lineage.context.into_iter().map(|(key, version)| v1::TraceContextRef { key, version }).collect(),
            started_at_ms: 0,
            duration_ms: output.duration_ms,
        };
        let first = v1::TraceUpload { kind: Some(Up::Header(header)) };
        // Slices of the one buffer: nothing is copied before the transport encodes it.
        let chunks = (0..bytes.len())
            .step_by(TRACE_CHUNK_BYTES)
            .map(move |at| bytes.slice(at..(at + TRACE_CHUNK_BYTES).min(bytes.len())))
            .map(|c| v1::TraceUpload { kind: Some(Up::Chunk(c)) });
        let upload = tokio_stream::iter(std::iter::once(first).chain(chunks));
        Ok(grpc(self.agent.channel()).record(upload).await?.into_inner())
    }

    /// Records a JSON output.
    pub async fn record_json(
        &self,
        tool: &str,
        input: &Value,
        output: &Value,
        lineage: Lineage,
    ) -> Result<TraceInfo, Error> {
        self.record(tool, input, Output::json(output), lineage).await
    }
}
