//! The `Streams` service: tick controllers and latency buffers. Creating and removing one is an
//! operator's action (the admin token when the server has one; audited), carried out by the
//! engine; reads are queries on the engine.

use lockstep_core::{AdminAction, AdminOutcome};
use lockstep_proto::server::streams_server::Streams;
use lockstep_proto::{convert, streams, v1};
use tonic::{Request, Response, Status};

use super::Service;
use crate::admin::actor;
use crate::driver::unexpected;

impl Service {
    /// Carries out a stream action in `namespace` for the caller (checked first: see
    /// `crate::auth::Gate::admin`).
    async fn stream_action<T>(
        &self,
        request: Request<T>,
        (what, namespace): (&str, &str),
        action: impl FnOnce(T) -> Result<AdminAction, lockstep_core::CoreError>,
    ) -> Result<Response<v1::StreamAck>, Status> {
        self.gate.admin(&request, what, Some(namespace))?;
        let actor = actor(&request);
        let action = action(request.into_inner()).map_err(|e| convert::status(&e))?;
        match self.engine.admin(actor, action).await? {
            AdminOutcome::Done(detail) => Ok(Response::new(v1::StreamAck { detail })),
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl Streams for Service {
    async fn create_ticker(&self, request: Request<v1::TickerSpec>) -> Result<Response<v1::StreamAck>, Status> {
        let ns = request.get_ref().namespace.clone();
        self.stream_action(request, ("CreateTicker", &ns), |s| streams::ticker_spec(s).map(AdminAction::CreateTicker))
            .await
    }

    async fn create_buffer(&self, request: Request<v1::BufferSpec>) -> Result<Response<v1::StreamAck>, Status> {
        let ns = request.get_ref().namespace.clone();
        self.stream_action(request, ("CreateBuffer", &ns), |s| streams::buffer_spec(s).map(AdminAction::CreateBuffer))
            .await
    }

    async fn get_ticker(&self, request: Request<v1::StreamRef>) -> Result<Response<v1::TickerInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let view = self.engine.query(move |e, _| e.ticker_status(&r.namespace, &r.id)).await?;
        Ok(Response::new(streams::ticker_info(&view)))
    }

    async fn get_buffer(&self, request: Request<v1::StreamRef>) -> Result<Response<v1::BufferInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let view = self.engine.query(move |e, _| e.buffer_status(&r.namespace, &r.id)).await?;
        Ok(Response::new(streams::buffer_info(&view)))
    }

    async fn list_tickers(&self, request: Request<v1::StreamListRequest>) -> Result<Response<v1::TickerList>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let ns = request.into_inner().namespace;
        let views = self.engine.query(move |e, _| e.list_tickers(&ns)).await?;
        Ok(Response::new(v1::TickerList { tickers: views.iter().map(streams::ticker_info).collect() }))
    }

    async fn list_buffers(&self, request: Request<v1::StreamListRequest>) -> Result<Response<v1::BufferList>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let ns = request.into_inner().namespace;
        let views = self.engine.query(move |e, _| e.list_buffers(&ns)).await?;
        Ok(Response::new(v1::BufferList { buffers: views.iter().map(streams::buffer_info).collect() }))
    }

    async fn remove(&self, request: Request<v1::StreamRef>) -> Result<Response<v1::StreamAck>, Status> {
        let ns = request.get_ref().namespace.clone();
        self.stream_action(request, ("RemoveStream", &ns), |r| {
            Ok(AdminAction::RemoveStream { kind: streams::kind(&r.kind)?, namespace: r.namespace, id: r.id })
        })
        .await
    }
}
