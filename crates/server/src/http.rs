//! The HTTP listener (`--http-listen`), for what monitoring systems and orchestrators expect:
//!
//! * `GET /metrics`: Prometheus metrics in the OpenMetrics text format (see `metrics`);
//! * `GET /healthz`: 200 while the process serves HTTP at all (liveness);
//! * `GET /readyz`: 200 when the server takes sessions — the engine is turning (it answers a
//!   query within [`READY_WITHIN`]) and has not stopped (a graceful shutdown, or a store that can
//!   no longer commit, which stops it) — else 503 saying which.
//!
//! What it guarantees: at most [`MAX_IN_FLIGHT`] requests are handled at once (more wait at the
//! socket); requests carry no body it reads; a scrape costs one engine query, never a pass per
//! agent on the engine's own time beyond counting them. Binding beyond loopback is refused by
//! `start` unless the operator opts in (`allow_public`): its endpoints ask for no token.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::driver::EngineHandle;
use crate::health::Serving;
use crate::metrics::Scrape;

/// How long the engine may take to answer before `/readyz` says it is not turning.
pub const READY_WITHIN: Duration = Duration::from_secs(2);

/// Requests handled at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub engine: EngineHandle,
    pub serving: Serving,
    /// The database file, when the server keeps one.
    pub database: Option<PathBuf>,
}

/// The routes, bounded in requests in flight.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let read = state
        .engine
        .query(|e, _| {
            let info = e.info();
            Ok((info.counters, e.agent_gauges(), e.control().audit().last_seq()))
        })
        .await;
    let (counters, agents, audit_entries) = match read {
        Ok(read) => read,
        Err(status) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", status.message())).into_response(),
    };
    let database_bytes = state.database.as_ref().and_then(|path| std::fs::metadata(path).ok()).map(|m| m.len());
    let scrape = Scrape { counters, agents, audit_entries, database_bytes };
    let text = state.engine.metrics().render(&scrape);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if !state.serving.is_serving() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: the server is stopping\n");
    }
    match tokio::time::timeout(READY_WITHIN, state.engine.query(|_, _| Ok(()))).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the engine has stopped\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the engine did not answer in time\n"),
    }
}

/// Serves `router` on `listener` until `stopped` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(stopped).await
}
