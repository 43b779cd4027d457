//! The `Intake` service: the rule set records pass before routing (see `lockstep_core::intake`).
//! Replacing it is an operator's action (the admin token when the server has one; audited),
//! carried out by the engine; reading it is a query on the engine.

use lockstep_core::{AdminAction, AdminOutcome};
use lockstep_proto::server::intake_server::Intake;
use lockstep_proto::v1;
use tonic::{Request, Response, Status};

use super::Service;
use crate::admin::actor;
use crate::driver::unexpected;

#[tonic::async_trait]
impl Intake for Service {
    async fn get_intake(&self, request: Request<v1::IntakeRequest>) -> Result<Response<v1::IntakeInfo>, Status> {
        // The rule set is the whole server's.
        self.gate.every_namespace(&request)?;
        let view = self.engine.query(|e, _| Ok(e.intake_status())).await?;
        Ok(Response::new(lockstep_proto::intake::intake_info(&view)))
    }

    async fn replace_intake(
        &self,
        request: Request<v1::ReplaceIntakeRequest>,
    ) -> Result<Response<v1::IntakeAck>, Status> {
        self.gate.admin(&request, "ReplaceIntake", None)?;
        let actor = actor(&request);
        let rules_json = request.into_inner().rules_json;
        match self.engine.admin(actor, AdminAction::ReplaceIntake { rules_json }).await? {
            AdminOutcome::Done(detail) => {
                let version = self.engine.query(|e, _| Ok(e.intake_status().version)).await?;
                Ok(Response::new(v1::IntakeAck { version, detail }))
            }
            other => Err(unexpected(&other)),
        }
    }
}
