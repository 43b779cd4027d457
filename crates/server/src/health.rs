//! The standard gRPC health service (`grpc.health.v1.Health`), so that load balancers,
//! orchestrators and `grpcurl` can ask whether this port serves.
//!
//! What it answers, per port ([`Serving::service`] names what the port serves):
//! * `Check("")` and `Check(<a service of this port>)`: `SERVING` from the start until the engine
//!   stops (a graceful shutdown or a store failure), `NOT_SERVING` after;
//! * `Check(<anything else>)`: `NOT_FOUND`, naming what the port serves;
//! * `Watch(...)`: the status now, then each change; `NOT_SERVING` is the last message: the
//!   stream ends with it, so that an open watch never holds a graceful shutdown back (the
//!   transports wait for their open streams). A service this port does not serve is reported
//!   `SERVICE_UNKNOWN`, as the health protocol asks, and its watch likewise ends at the stop.
//!
//! lockstep serves the protocol itself rather than through `tonic-health`'s reporter, whose watches
//! only end when their client goes away.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The server's side of the health status: serving until [`Serving::stop`].
#[derive(Clone, Debug)]
pub struct Serving(Arc<watch::Sender<bool>>);

impl Default for Serving {
    fn default() -> Self {
        Serving(Arc::new(watch::Sender::new(true)))
    }
}

impl Serving {
    /// The health service of a port serving `services` (fully qualified gRPC names; the health
    /// and reflection services are added here).
    pub fn service(&self, services: &[&str]) -> HealthServer<HealthService> {
        let mut names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        names.extend(STANDARD_SERVICES.iter().map(|s| (*s).to_owned()));
        HealthServer::new(HealthService { serving: self.0.subscribe(), services: names.into() })
    }

    /// Whether the server still serves (until [`Serving::stop`]).
    pub fn is_serving(&self) -> bool {
        *self.0.borrow()
    }

    /// From now on every port answers `NOT_SERVING`, and open watches end.
    pub fn stop(&self) {
        self.0.send_replace(false);
    }
}

/// The services every port serves besides lockstep's own: this one and server reflection.
pub const STANDARD_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// One port's health service.
#[derive(Clone, Debug)]
pub struct HealthService {
    serving: watch::Receiver<bool>,
    /// What the port serves, by full name.
    services: Arc<[String]>,
}

impl HealthService {
    fn knows(&self, service: &str) -> bool {
        service.is_empty() || self.services.iter().any(|s| s == service)
    }
}

/// The status of a service the port does (`known`) or does not serve, while the server does
/// (`serving`) or does not.
fn status(known: bool, serving: bool) -> ServingStatus {
    match (known, serving) {
        (false, _) => ServingStatus::ServiceUnknown,
        (true, true) => ServingStatus::Serving,
        (true, false) => ServingStatus::NotServing,
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !self.knows(&service) {
            return Err(Status::not_found(format!(
                "unknown service '{service}': this port serves {} (or \"\" for the server as a whole)",
                self.services.join(", ")
            )));
        }
        Ok(Response::new(answer(status(true, *self.serving.borrow()))))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let known = self.knows(&request.into_inner().service);
        let updates = futures::stream::unfold(Some((self.serving.clone(), true)), move |state| async move {
            let (mut serving, first) = state?;
            // A dropped sender is a server that is gone: not serving either.
            let now = if first || serving.changed().await.is_ok() { *serving.borrow_and_update() } else { false };
            let next = now.then_some((serving, false));
            Some((Ok(answer(status(known, now))), next))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn check(service: &HealthService, name: &str) -> Result<i32, tonic::Code> {
        let request = Request::new(HealthCheckRequest { service: name.into() });
        service.check(request).await.map(|r| r.into_inner().status).map_err(|s| s.code())
    }

    async fn watch(service: &HealthService, name: &str) -> WatchStream {
        service.watch(Request::new(HealthCheckRequest { service: name.into() })).await.unwrap().into_inner()
    }

    async fn next(stream: &mut WatchStream) -> Option<i32> {
        stream.next().await.map(|r| r.unwrap().status)
    }

    fn admin_port(serving: &Serving) -> HealthService {
        HealthService { serving: serving.0.subscribe(), services: vec!["lockstep.v1.Admin".to_owned()].into() }
    }

    #[tokio::test]
    async fn a_port_serves_what_it_names_until_the_server_stops() {
        let serving = Serving::default();
        let admin = admin_port(&serving);
        assert_eq!(check(&admin, "").await, Ok(ServingStatus::Serving as i32));
        assert_eq!(check(&admin, "lockstep.v1.Admin").await, Ok(ServingStatus::Serving as i32));
        assert_eq!(check(&admin, "lockstep.v1.Lockstep").await, Err(tonic::Code::NotFound));
        serving.stop();
        assert_eq!(check(&admin, "").await, Ok(ServingStatus::NotServing as i32));
        assert_eq!(check(&admin, "lockstep.v1.Admin").await, Ok(ServingStatus::NotServing as i32));
    }

    #[tokio::test]
    async fn a_watch_reports_serving_then_ends_with_not_serving() {
        let serving = Serving::default();
        let admin = admin_port(&serving);
        let (mut whole, mut unknown) = (watch(&admin, "").await, watch(&admin, "nope").await);
        assert_eq!(next(&mut whole).await, Some(ServingStatus::Serving as i32));
        assert_eq!(next(&mut unknown).await, Some(ServingStatus::ServiceUnknown as i32));
        serving.stop();
        assert_eq!(next(&mut whole).await, Some(ServingStatus::NotServing as i32));
        assert_eq!(next(&mut whole).await, None, "the last message: the stream ends");
        assert_eq!(next(&mut unknown).await, Some(ServingStatus::ServiceUnknown as i32));
        assert_eq!(next(&mut unknown).await, None);
    }
}
