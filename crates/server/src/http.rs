//! The HTTP listener (`--http-listen`), for what monitoring systems and orchestrators expect:
//!
//! * `GET /metrics`: Prometheus metrics in the OpenMetrics text format (see `metrics`);
//! * `GET /healthz`: 200 while the process serves HTTP at all (liveness);
//! * `GET /readyz`: 200 when the server takes sessions — the engine is turning (it answers a
//!   query within [`READY_WITHIN`]) and has not stopped (a graceful shutdown, or a store that can
//!   no longer commit, which stops it) — else 503 saying which;
//! * `GET /` and `GET /dashboard`: the live web dashboard, its live updates at
//!   `GET /dashboard/events` and its operator actions at `POST /dashboard/api/{action}` (see
//!   `dashboard`).
//!
//! What it guarantees: at most [`MAX_IN_FLIGHT`] requests are handled at once (more wait at the
//! socket); at most `http_limit::MAX_CONNECTIONS` connections are open (more are answered 503),
//! a client that takes nothing for `http_limit::WRITE_STALL` is disconnected and a connection
//! idle for `http_limit::IDLE` closed; a request body
//! is at most [`MAX_BODY_BYTES`] (more: 413); a scrape costs one engine query, never a pass per
//! agent on the engine's own time beyond counting them, and the dashboard one query per update
//! and view, whatever the number of pages. Binding beyond loopback is refused by `start` unless
//! the operator opts in (`allow_public`): its endpoints ask for no token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::driver::EngineHandle;
use crate::health::Serving;
use crate::metrics::Scrape;

/// How long the engine may take to answer before `/readyz` says it is not turning.
pub const READY_WITHIN: Duration = Duration::from_secs(2);

/// Requests handled at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// The largest request body read (the dashboard's actions); a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub engine: EngineHandle,
    pub serving: Serving,
    /// The database file, when the server keeps one.
    pub database: Option<PathBuf>,
    /// The dashboard's feeds and the Admin service its actions go through.
    pub dashboard: crate::dashboard::DashboardState,
}

/// The routes, bounded in requests in flight and in body size.
pub fn router(state: HttpState) -> Router {
    let dashboard = Router::new()
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/app.js", get(crate::dashboard::script))
        .route("/dashboard/app.css", get(crate::dashboard::style))
        .route("/dashboard/events", get(crate::dashboard::events))
        .route("/dashboard/api/{action}", post(crate::dashboard::action))
        .with_state(state.dashboard.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .with_state(state)
        .merge(dashboard)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let read = state
        .engine
        .query(|e, _| {
            let info = e.info();
            Ok((info.counters, e.agent_gauges(), e.control().audit().last_seq(), e.systems().gauges()))
        })
        .await;
    let (counters, agents, audit_entries, systems) = match read {
        Ok(read) => read,
        Err(status) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", status.message())).into_response(),
    };
    let database_bytes = state.database.as_ref().and_then(|path| std::fs::metadata(path).ok()).map(|m| m.len());
    let scrape = Scrape { counters, agents, audit_entries, database_bytes, systems };
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

/// Serves `router` on `listener` until `stopped` resolves, within the connection limits of
/// `http_limit`, over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    tls: Option<crate::tls::Tls>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics: Arc<crate::metrics::Metrics> = state.engine.shared_metrics();
    let listener = crate::http_limit::Limited::new(
        listener,
        crate::http_limit::MAX_CONNECTIONS,
        crate::http_limit::WRITE_STALL,
        crate::http_limit::IDLE,
        metrics,
    );
    match tls {
        None => axum::serve(listener, router(state)).with_graceful_shutdown(stopped).await,
        Some(tls) => {
            let listener = crate::tls::TlsListener::new(listener, &tls);
            axum::serve(listener, router(state)).with_graceful_shutdown(stopped).await
        }
    }
}
