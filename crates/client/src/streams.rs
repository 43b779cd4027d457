//! Event-time streams: tick controllers and latency buffers, created, read and removed from
//! anywhere. Agents feed them by publishing ([`Agent::publish_at`](crate::Agent::publish_at) gives
//! the event time) and read what they emit by their interests: a controller's ticks on its output
//! topic, a buffer's definitive samples on `<output>.definitive` and its provisional values on
//! `<output>.provisional` (`<output>.*` for both).

use crate::Channel;
use lockstep_proto::v1;
use lockstep_proto::v1::streams_client::StreamsClient as Grpc;

use crate::Error;

/// Which kind of stream object a call names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Ticker,
    Buffer,
}

impl StreamKind {
    fn as_str(self) -> &'static str {
        match self {
            StreamKind::Ticker => "ticker",
            StreamKind::Buffer => "buffer",
        }
    }
}

/// A handle on a server's `Streams` service, for one namespace.
#[derive(Clone)]
pub struct StreamsClient {
    grpc: Grpc<Channel>,
    namespace: String,
}

impl StreamsClient {
    /// On `channel`, which carries the caller's credentials (see `Client::streams`).
    pub(crate) fn new(channel: Channel, namespace: String) -> Self {
        StreamsClient { grpc: Grpc::new(channel), namespace }
    }

    fn reference(&self, kind: StreamKind, id: &str) -> v1::StreamRef {
        v1::StreamRef { namespace: self.namespace.clone(), kind: kind.as_str().into(), id: id.into() }
    }

    /// Creates a tick controller (in this client's namespace when `spec` names none); returns the
    /// server's account of it. Fails with `STREAM_EXISTS`, `INVALID_ARGUMENT` (naming the field),
    /// or `LIMIT`.
    pub async fn create_ticker(&self, mut spec: v1::TickerSpec) -> Result<String, Error> {
        if spec.namespace.is_empty() {
            spec.namespace = self.namespace.clone();
        }
        Ok(self.grpc.clone().create_ticker(spec).await?.into_inner().detail)
    }

    /// Creates a latency buffer, likewise.
    pub async fn create_buffer(&self, mut spec: v1::BufferSpec) -> Result<String, Error> {
        if spec.namespace.is_empty() {
            spec.namespace = self.namespace.clone();
        }
        Ok(self.grpc.clone().create_buffer(spec).await?.into_inner().detail)
    }

    /// A controller with its counters and sources (`UNKNOWN_STREAM`).
    pub async fn ticker(&self, id: &str) -> Result<v1::TickerInfo, Error> {
        Ok(self.grpc.clone().get_ticker(self.reference(StreamKind::Ticker, id)).await?.into_inner())
    }

    /// A buffer with its counters (`UNKNOWN_STREAM`).
    pub async fn buffer(&self, id: &str) -> Result<v1::BufferInfo, Error> {
        Ok(self.grpc.clone().get_buffer(self.reference(StreamKind::Buffer, id)).await?.into_inner())
    }

    /// Every controller of the namespace, by id.
    pub async fn tickers(&self) -> Result<Vec<v1::TickerInfo>, Error> {
        let req = v1::StreamListRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().list_tickers(req).await?.into_inner().tickers)
    }

    /// Every buffer of the namespace, by id.
    pub async fn buffers(&self) -> Result<Vec<v1::BufferInfo>, Error> {
        let req = v1::StreamListRequest { namespace: self.namespace.clone() };
        Ok(self.grpc.clone().list_buffers(req).await?.into_inner().buffers)
    }

    /// Removes a controller or buffer (`UNKNOWN_STREAM`); what it held is not emitted.
    pub async fn remove(&self, kind: StreamKind, id: &str) -> Result<String, Error> {
        Ok(self.grpc.clone().remove(self.reference(kind, id)).await?.into_inner().detail)
    }
}
