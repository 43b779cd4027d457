//! The `SharedContext` service: reads are queries on the engine, writes and watches are engine
//! inputs. Agents usually write on their session (`ContextWrite` there binds a key to their
//! lease); this service serves everyone else (tools, operators, the CLI).

use lockstep_core::context::Selector;
use lockstep_core::{Frame, Input};
use lockstep_proto::convert;
use lockstep_proto::server::shared_context_server::SharedContext;
use lockstep_proto::v1;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::{BoxStream, Service};
use crate::driver::{shutting_down, Command, ConnSink};

fn context_frame(frame: Frame) -> Option<v1::ContextBatch> {
    convert::context_batch(frame)
}

#[tonic::async_trait]
impl SharedContext for Service {
    async fn get(&self, request: Request<v1::ContextGetRequest>) -> Result<Response<v1::ContextValue>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let read = self.engine.query(move |e, _| e.context_get(&r.namespace, &r.key, r.version)).await?;
        Ok(Response::new(convert::context_value(&read)))
    }

    async fn list(
        &self,
        request: Request<v1::ContextListRequest>,
    ) -> Result<Response<v1::ContextListResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::ContextListRequest { namespace, prefix, page_token, page_size } = request.into_inner();
        let reads = self.engine.query(move |e, _| e.context_list(&namespace, &prefix)).await?;
        let (values, next_page_token) =
            crate::page::page(&reads, |r| &r.key, &page_token, page_size, self.page_bytes(), convert::context_value);
        Ok(Response::new(v1::ContextListResponse { values, next_page_token }))
    }

    async fn history(
        &self,
        request: Request<v1::ContextGetRequest>,
    ) -> Result<Response<v1::ContextHistoryResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let versions = self
            .engine
            .query(move |e, _| {
                let current = e.context_get(&r.namespace, &r.key, None)?;
                let history = e.context_history(&r.namespace, &r.key)?;
                Ok(history
                    .iter()
                    .map(|rev| v1::ContextValue {
                        key: r.key.clone(),
                        version: rev.version,
                        value_json: rev.value.to_string(),
                        at_ms: rev.at,
                        writer: rev.writer.to_string(),
                        current_version: current.version,
                        expires_at_ms: current.expires_at.unwrap_or(0),
                        owner: current.owner.clone().unwrap_or_default(),
                        patch_json: rev.patch.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(v1::ContextHistoryResponse { versions }))
    }

    async fn write(&self, request: Request<v1::ContextWriteRequest>) -> Result<Response<v1::ContextWritten>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let write = r.write.ok_or_else(|| Status::invalid_argument("a context write needs `write`"))?;
        let write = convert::context_write(r.namespace, write).map_err(|e| convert::status(&e))?;
        let writer = if r.writer.is_empty() { "client".to_owned() } else { r.writer };
        lockstep_core::name::validate("writer", &writer).map_err(|e| convert::status(&e))?;
        let (done, answer) = oneshot::channel();
        self.engine.send(Command::ContextWrite { writer, write, done }).await?;
        let written = answer.await.map_err(|_| shutting_down())?.map_err(|e| convert::status(&e))?;
        Ok(Response::new(convert::context_written(&written)))
    }

    type WatchStream = BoxStream<v1::ContextBatch>;

    async fn watch(&self, request: Request<v1::ContextWatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        use v1::context_watch_request::Target;
        let r = request.into_inner();
        let selector = match r.target {
            Some(Target::Key(k)) => Selector::Key(k),
            Some(Target::Prefix(p)) => Selector::Prefix(p),
            None => Selector::Prefix(String::new()),
        };
        let (conn, stream) = self.open(ConnSink::Context, context_frame).await?;
        let input = Input::WatchContext { conn, namespace: r.namespace, selector, from: r.from_version };
        self.engine.send(Command::Input(input)).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}
