//! The `Rounds` service: series created and removed, rounds opened by client drivers (engine
//! inputs), and reads (queries on the engine). Participants take round inputs and answer on
//! their session.

use lockstep_core::io::{RoundCall, RoundDone};
use lockstep_proto::convert;
use lockstep_proto::round as wire;
use lockstep_proto::server::rounds_server::Rounds;
use lockstep_proto::v1;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::Service;
use crate::driver::{shutting_down, Command};

impl Service {
    /// Sends a round call to the engine and waits for its answer.
    async fn round_call(&self, call: RoundCall) -> Result<RoundDone, Status> {
        let (done, answer) = oneshot::channel();
        self.engine.send(Command::Round { call, done }).await?;
        answer.await.map_err(|_| shutting_down())?.map_err(|e| convert::status(&e))
    }

    /// Series `name` of `namespace` as it is now.
    async fn series_now(&self, namespace: String, name: String) -> Result<v1::RoundSeriesInfo, Status> {
        let status = self.engine.query(move |e, _| e.round_series_get(&namespace, &name)).await?;
        Ok(wire::series_info(&status, true))
    }
}

#[tonic::async_trait]
impl Rounds for Service {
    async fn create_series(
        &self,
        request: Request<v1::RoundSeriesSpec>,
    ) -> Result<Response<v1::RoundSeriesInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let spec = wire::spec(request.into_inner()).map_err(|e| convert::status(&e))?;
        let (namespace, name) = (spec.namespace.clone(), spec.name.clone());
        self.round_call(RoundCall::CreateSeries(Box::new(spec))).await?;
        Ok(Response::new(self.series_now(namespace, name).await?))
    }

    async fn open_round(&self, request: Request<v1::OpenRoundRequest>) -> Result<Response<v1::RoundOpened>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::OpenRoundRequest { namespace, series, round, input_json, driver } = request.into_inner();
        let done = self.round_call(RoundCall::OpenRound { namespace, series, round, input_json, driver }).await?;
        Ok(Response::new(v1::RoundOpened {
            round: done.round,
            deadline_ms: done.deadline,
            participants: done.participants,
        }))
    }

    async fn remove_series(
        &self,
        request: Request<v1::RoundSeriesRef>,
    ) -> Result<Response<v1::RoundSeriesInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::RoundSeriesRef { namespace, name } = request.into_inner();
        let before = self.series_now(namespace.clone(), name.clone()).await?;
        let done = self.round_call(RoundCall::RemoveSeries { namespace, series: name }).await?;
        Ok(Response::new(v1::RoundSeriesInfo { last_round: done.round, open_round: None, ..before }))
    }

    async fn list_series(
        &self,
        request: Request<v1::ListRoundSeriesRequest>,
    ) -> Result<Response<v1::ListRoundSeriesResponse>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let namespace = request.into_inner().namespace;
        let all = self.engine.query(move |e, _| e.round_series(&namespace)).await?;
        Ok(Response::new(v1::ListRoundSeriesResponse {
            series: all.iter().map(|s| wire::series_info(s, false)).collect(),
        }))
    }

    async fn get_series(&self, request: Request<v1::RoundSeriesRef>) -> Result<Response<v1::RoundSeriesInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::RoundSeriesRef { namespace, name } = request.into_inner();
        Ok(Response::new(self.series_now(namespace, name).await?))
    }

    async fn get_round(&self, request: Request<v1::GetRoundRequest>) -> Result<Response<v1::RoundInfo>, Status> {
        self.gate.namespace(&request, &request.get_ref().namespace)?;
        let v1::GetRoundRequest { namespace, series, round } = request.into_inner();
        let name = series.clone();
        let view = self.engine.query(move |e, _| e.round_get(&namespace, &series, round)).await?;
        Ok(Response::new(wire::round_info(&name, &view)))
    }
}
