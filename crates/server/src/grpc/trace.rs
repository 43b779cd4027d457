//! The `Traces` service: records stream in through the trace store (`crate::trace`), reads are
//! engine inputs whose answers stream the output back; stats and lineage are queries.

use lockstep_core::{Input, TraceInput};
use lockstep_proto::server::traces_server::Traces;
use lockstep_proto::{trace as wire, v1};
use tonic::{Request, Response, Status, Streaming};

use super::{BoxStream, Service};
use crate::driver::Command;
use crate::trace::{next_origin, read};

#[tonic::async_trait]
impl Traces for Service {
    async fn record(&self, request: Request<Streaming<v1::TraceUpload>>) -> Result<Response<v1::TraceInfo>, Status> {
        // In a task of its own: a caller that goes away midway leaves nothing half done.
        let access = crate::auth::Access::of(&request);
        let call = crate::trace::record(self.engine.clone(), access, request.into_inner(), self.register_within);
        let info = tokio::spawn(call).await.map_err(|_| Status::internal("the record task failed"))??;
        Ok(Response::new(info))
    }

    type LookupStream = BoxStream<v1::TraceDownload>;

    async fn lookup(&self, request: Request<v1::TraceLookupRequest>) -> Result<Response<Self::LookupStream>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        // A hit on an inline output is answered here, from the index (see `crate::trace`); it is
        // noted before the answer goes, and the engine hears of it before its next input, so
        // counters and retention stay its own.
        let store = self.engine.traces();
        if let Some((namespace, id, hit)) = store.hit(&r.namespace, &r.tool, &r.input_json) {
            if let Some((namespace, id)) = store.note_used(namespace, id) {
                self.engine.send(Command::Input(Input::Trace(TraceInput::Used { namespace, id }))).await?;
            }
            return Ok(Response::new(hit.download(r.inline_output)));
        }
        let origin = next_origin(&self.engine);
        let input = TraceInput::Lookup { origin, namespace: r.namespace, tool: r.tool, input: r.input_json };
        Ok(Response::new(read(self.engine.clone(), origin, input, false, r.inline_output).await?))
    }

    type GetStream = BoxStream<v1::TraceDownload>;

    async fn get(&self, request: Request<v1::TraceGetRequest>) -> Result<Response<Self::GetStream>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let origin = next_origin(&self.engine);
        let input = TraceInput::Get { origin, namespace: r.namespace, id: r.id };
        Ok(Response::new(read(self.engine.clone(), origin, input, false, false).await?))
    }

    type GetOrClaimStream = BoxStream<v1::TraceDownload>;

    async fn get_or_claim(
        &self,
        request: Request<v1::TraceClaimRequest>,
    ) -> Result<Response<Self::GetOrClaimStream>, Status> {
        let session = request.get_ref().session.clone().unwrap_or_default();
        crate::auth::Access::of(&request).act_as(&session.namespace, &session.agent_id)?;
        let r = request.into_inner();
        let origin = next_origin(&self.engine);
        let call = wire::session(r.session);
        let input = TraceInput::GetOrClaim { origin, call, tool: r.tool, input: r.input_json, wait_ms: r.wait_ms };
        Ok(Response::new(read(self.engine.clone(), origin, input, true, false).await?))
    }

    async fn release(&self, request: Request<v1::TraceClaimRequest>) -> Result<Response<v1::TraceReleased>, Status> {
        let session = request.get_ref().session.clone().unwrap_or_default();
        crate::auth::Access::of(&request).act_as(&session.namespace, &session.agent_id)?;
        Ok(Response::new(crate::trace::release(self.engine.clone(), request.into_inner()).await?))
    }

    async fn stats(&self, request: Request<v1::TraceStatsRequest>) -> Result<Response<v1::TraceStats>, Status> {
        // Counts over every namespace.
        self.gate.every_namespace(&request)?;
        let stats = self.engine.query(|e, _| Ok(e.trace_stats())).await?;
        Ok(Response::new(wire::stats(&stats)))
    }

    async fn lineage(&self, request: Request<v1::TraceGetRequest>) -> Result<Response<v1::TraceLineage>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let lineage = self
            .engine
            .query(move |e, _| {
                let trace = e.trace_show(&r.namespace, &r.id)?;
                let lineage = e.trace_lineage(&r.namespace, &r.id)?;
                Ok(wire::lineage(&trace, &lineage))
            })
            .await?;
        Ok(Response::new(lineage))
    }
}
