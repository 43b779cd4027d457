//! The `Tasks` service: reads are queries on the engine; event watches are engine inputs, and
//! operators' retries are admin actions (token checked, audited). Agents submit, take and report tasks on their session.

use lockstep_core::task::TaskState;
use lockstep_core::{AdminAction, AdminOutcome, CoreError, Frame, Input};
use lockstep_proto::convert;
use lockstep_proto::server::tasks_server::Tasks;
use lockstep_proto::v1;
use tonic::{Request, Response, Status};

use super::{BoxStream, Service};
use crate::admin::actor;
use crate::driver::{unexpected, Command, ConnSink};

fn task_frame(frame: Frame) -> Option<v1::TaskEvent> {
    match frame {
        Frame::TaskEvent(e) => Some(lockstep_proto::task::event(&e)),
        _ => None,
    }
}

#[tonic::async_trait]
impl Tasks for Service {
    async fn get(&self, request: Request<v1::TaskGetRequest>) -> Result<Response<v1::TaskInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let task = self.engine.query(move |e, _| e.task_get(&r.namespace, &r.id)).await?;
        Ok(Response::new(lockstep_proto::task::info(&task)))
    }

    async fn list(&self, request: Request<v1::TaskListRequest>) -> Result<Response<v1::TaskListResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::TaskListRequest { namespace, state, r#type, page_token, page_size } = request.into_inner();
        let state = match state.as_str() {
            "" => None,
            s => Some(TaskState::parse(s).ok_or_else(|| {
                convert::status(&CoreError::Invalid {
                    what: "state",
                    reason: format!("'{s}' is none of waiting, ready, assigned, running, completed, dead_lettered"),
                })
            })?),
        };
        let kind = (!r#type.is_empty()).then_some(r#type);
        let tasks = self.engine.query(move |e, _| e.task_list(&namespace, state, kind.as_deref())).await?;
        // Pages by submission number, zero-padded so that they sort as text.
        let keyed: Vec<(String, lockstep_core::task::TaskImage)> =
            tasks.into_iter().map(|t| (format!("{:020}", t.seq), t)).collect();
        let (tasks, next_page_token) = crate::page::page(
            &keyed,
            |(k, _)| k,
            &page_token,
            page_size,
            self.page_bytes(),
            |(_, t)| lockstep_proto::task::info(t),
        );
        Ok(Response::new(v1::TaskListResponse { tasks, next_page_token }))
    }

    /// An operator's action: the admin token is checked and the retry audited.
    async fn retry(&self, request: Request<v1::TaskGetRequest>) -> Result<Response<v1::TaskInfo>, Status> {
        self.gate.admin(&request, "RetryTask", Some(&request.get_ref().namespace))?;
        let actor = actor(&request);
        let v1::TaskGetRequest { namespace, id } = request.into_inner();
        let action = AdminAction::RetryTask { namespace: namespace.clone(), id: id.clone() };
        match self.engine.admin(actor, action).await? {
            AdminOutcome::Done(_) => {}
            other => return Err(unexpected(&other)),
        }
        let task = self.engine.query(move |e, _| e.task_get(&namespace, &id)).await?;
        Ok(Response::new(lockstep_proto::task::info(&task)))
    }

    type WatchStream = BoxStream<v1::TaskEvent>;

    async fn watch(&self, request: Request<v1::TaskWatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let (conn, stream) = self.open(ConnSink::Tasks, task_frame).await?;
        self.engine.send(Command::Input(Input::WatchTasks { conn, namespace: r.namespace })).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn queues(
        &self,
        request: Request<v1::TaskQueuesRequest>,
    ) -> Result<Response<v1::TaskQueuesResponse>, Status> {
        // Queues of every namespace.
        self.gate.every_namespace(&request)?;
        let queues = self
            .engine
            .query(|e, now| Ok(e.task_queues().iter().map(|q| lockstep_proto::task::queue(q, now)).collect()))
            .await?;
        Ok(Response::new(v1::TaskQueuesResponse { queues }))
    }
}
