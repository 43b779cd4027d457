//! The `History` service: retained topics, listed in pages (a query on the engine, like the other
//! listings). Subscriptions with replay travel on the agent's session (see
//! `lockstep_core::history`).

use lockstep_proto::server::history_server::History;
use lockstep_proto::v1;
use tonic::{Request, Response, Status};

use super::Service;

#[tonic::async_trait]
impl History for Service {
    async fn list_topics(
        &self,
        request: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::ListTopicsRequest { namespace, page_token, page_size } = request.into_inner();
        let topics = self.engine.query(move |e, _| e.history_topics(&namespace)).await?;
        let (topics, next_page_token) = crate::page::page(
            &topics,
            |t| &t.topic,
            &page_token,
            page_size,
            self.page_bytes(),
            lockstep_proto::history::topic_info,
        );
        Ok(Response::new(v1::ListTopicsResponse { topics, next_page_token }))
    }
}
