//! The live web dashboard served on the HTTP listener (`/dashboard`): one page (HTML, CSS and
//! JavaScript embedded in the binary, nothing fetched from elsewhere) fed by server-sent events,
//! and the operators' actions it offers as HTTP POST endpoints.
//!
//! What it owns and guarantees:
//! * **One feed per watched view.** Pages watching the same namespace with the same state fields
//!   share one [`Feed`]: a task that reads the engine once every [`UPDATE_EVERY`] (one query,
//!   whatever the number of pages) and publishes the newest [`Snapshot`] as JSON, serialized once,
//!   into a `watch` channel. The task ends when its last page goes. The engine never waits on a
//!   page: nothing the engine does depends on what a page reads or how fast.
//! * **Coalescing.** A page is sent the newest snapshot when its connection can take one; the
//!   snapshots it missed meanwhile are skipped (counted in
//!   `lockstep_dashboard_updates_coalesced_total`), so a slow page holds at most one snapshot,
//!   never a queue. A page whose connection takes nothing for [`crate::http_limit::WRITE_STALL`]
//!   is disconnected by the listener (`lockstep_http_clients_dropped_total`).
//! * **Bounded.** At most [`MAX_STREAMS`] event streams at once (more get 503), at most
//!   [`MAX_AGENTS`] agents and [`MAX_FIELDS`] state fields per snapshot, each field's value cut to
//!   [`MAX_FIELD_CHARS`] characters.
//! * **Actions through the Admin service.** Pause, resume, restart, emergency stop and resume-all
//!   are calls of [`AdminService`] itself, with the same admin token check and the same actor
//!   header (`x-lockstep-actor`), so they are carried out and audited exactly like the gRPC calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use lockstep_core::{CoreError, Engine, Time};
use lockstep_proto::server::admin_server::Admin;
use lockstep_proto::{convert, reason, v1};
use serde_json::{json, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::admin::AdminService;
use crate::auth::Gate;
use crate::driver::EngineHandle;

/// How often a feed reads the engine and pushes a snapshot to its pages.
pub const UPDATE_EVERY: Duration = Duration::from_millis(500);

/// Event streams (open pages) at once; more are refused with 503.
pub const MAX_STREAMS: usize = 16;

/// Agents per snapshot; a namespace with more shows the first ones by id and says how many.
pub const MAX_AGENTS: usize = 5_000;

/// State fields a page may ask for.
pub const MAX_FIELDS: usize = 8;

/// Characters of a state field's value sent (longer values are cut).
pub const MAX_FIELD_CHARS: usize = 48;

/// Audit entries per snapshot (the newest).
pub const AUDIT_ENTRIES: usize = 50;

/// Samples of the message counters kept for the rate plot (one per update: a minute).
pub const RATE_SAMPLES: usize = 120;

/// The page and its assets.
const PAGE: &str = include_str!("../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/app.css");

/// What a page watches: a namespace and the state fields shown as columns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct View {
    pub namespace: String,
    pub fields: Vec<String>,
}

impl View {
    /// Reads `namespace=N&fields=a,b` (both optional), or says what is wrong.
    pub fn parse(query: Option<&str>) -> Result<View, String> {
        let mut view = View { namespace: String::new(), fields: Vec::new() };
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| format!("the value of {key} is not valid UTF-8"))?;
            match key {
                "namespace" => view.namespace = value,
                "fields" => {
                    view.fields = value.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect()
                }
                _ => {}
            }
        }
        lockstep_core::name::namespace_or_default(&view.namespace).map_err(|e| e.to_string())?;
        if view.fields.len() > MAX_FIELDS {
            return Err(format!("at most {MAX_FIELDS} state fields can be shown, {} were asked", view.fields.len()));
        }
        if let Some(f) = view.fields.iter().find(|f| f.len() > 64) {
            return Err(format!("the state field name '{}…' is longer than 64 bytes", &f[..32.min(f.len())]));
        }
        view.fields.dedup();
        Ok(view)
    }
}

/// `%XX` and `+` decoding of a query value; `None` when the bytes are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// One snapshot, serialized once for every page of its feed.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Counts up by one per snapshot of the feed: a page that sees a jump skipped some.
    pub seq: u64,
    pub json: Arc<str>,
}

/// The feeds, and the event streams' limit.
pub struct Dashboard {
    engine: EngineHandle,
    feeds: Mutex<HashMap<View, Arc<watch::Sender<Snapshot>>>>,
    streams: Arc<Semaphore>,
}

impl Dashboard {
    pub fn new(engine: EngineHandle) -> Self {
        Dashboard { engine, feeds: Mutex::default(), streams: Arc::new(Semaphore::new(MAX_STREAMS)) }
    }

    /// A receiver of `view`'s snapshots, starting its feed if none runs.
    fn subscribe(self: &Arc<Self>, view: View) -> watch::Receiver<Snapshot> {
        let mut feeds = self.feeds.lock().expect("not poisoned");
        if let Some(tx) = feeds.get(&view) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Snapshot { seq: 0, json: Arc::from("") });
        let tx = Arc::new(tx);
        feeds.insert(view.clone(), tx.clone());
        tokio::spawn(feed(self.clone(), view, tx));
        rx
    }

    /// Forgets `view`'s feed if no page watches it; says whether it did.
    fn retire(&self, view: &View, tx: &watch::Sender<Snapshot>) -> bool {
        let mut feeds = self.feeds.lock().expect("not poisoned");
        // Checked under the lock: a page subscribing meanwhile found the feed and keeps it.
        if tx.receiver_count() > 0 {
            return false;
        }
        feeds.remove(view);
        true
    }
}

/// A feed's loop: a snapshot every [`UPDATE_EVERY`] while a page watches.
async fn feed(dashboard: Arc<Dashboard>, view: View, tx: Arc<watch::Sender<Snapshot>>) {
    let mut rates = VecDeque::with_capacity(RATE_SAMPLES);
    let mut seq = 0;
    let mut tick = tokio::time::interval(UPDATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if tx.receiver_count() == 0 && dashboard.retire(&view, &tx) {
            return;
        }
        let fields = view.fields.clone();
        let namespace = view.namespace.clone();
        let read = dashboard.engine.query(move |e, now| Ok(read(e, now, &namespace, &fields))).await;
        let Ok(mut raw) = read else {
            // The engine stopped: the server is going away, and so are the pages.
            dashboard.feeds.lock().expect("not poisoned").remove(&view);
            return;
        };
        if rates.len() == RATE_SAMPLES {
            rates.pop_front();
        }
        rates.push_back(raw["counters"].clone());
        raw["rates"] = Value::Array(rates.iter().cloned().collect());
        seq += 1;
        raw["seq"] = json!(seq);
        tx.send_replace(Snapshot { seq, json: Arc::from(raw.to_string()) });
    }
}

/// Everything a page shows of `namespace`, read in one engine query (an invalid namespace was
/// refused before a feed started).
pub fn read(e: &Engine, now: Time, namespace: &str, fields: &[String]) -> Value {
    let ns = lockstep_core::name::namespace_or_default(namespace).unwrap_or("default");
    let control = e.control();
    let health = e.health(now);
    // The namespace's own counts; the score's history is the engine's, over every namespace.
    let mut counts = lockstep_core::health::HealthCounts::default();
    let health_of: HashMap<&str, &str> = health
        .agents
        .iter()
        .filter(|(n, ..)| n == ns)
        .inspect(|(.., r)| counts.add(r.status))
        .map(|(_, id, _, r)| (id.as_str(), r.status.as_str()))
        .collect();
    let agents = e.list_agents(ns, &Default::default()).unwrap_or_default();
    let total = agents.len();
    let rows: Vec<Value> = agents
        .iter()
        .take(MAX_AGENTS)
        .map(|a| {
            let state = if fields.is_empty() { None } else { e.get_state(ns, &a.agent_id).ok().map(|(_, s)| s) };
            let values: Vec<Value> =
                fields.iter().map(|f| field_text(state.as_ref().and_then(|s| s.get(f.as_str())))).collect();
            json!({
                "id": a.agent_id,
                "role": a.role,
                "status": a.status.as_str(),
                "paused": control.is_paused(ns, &a.agent_id),
                "health": health_of.get(a.agent_id.as_str()).copied().unwrap_or("?"),
                "breaker": a.breaker.as_str(),
                "queue": a.queue_depth,
                "delivered": a.delivered,
                "dropped": a.dropped,
                "fields": values,
            })
        })
        .collect();
    let waiting = |points: Result<Vec<lockstep_core::SyncStatus>, CoreError>| -> Vec<Value> {
        let mut points: Vec<_> =
            points.unwrap_or_default().into_iter().filter(|s| s.state == lockstep_core::SyncState::Waiting).collect();
        points.sort_by_key(|s| (s.created_at, s.sync_id.clone()));
        points
            .iter()
            .map(|s| {
                json!({
                    "kind": "sync",
                    "id": s.sync_id,
                    "arrived": s.arrived.len(),
                    "required": s.required_count,
                    "missing": s.missing,
                    "waiting_ms": now.saturating_sub(s.created_at),
                })
            })
            .collect()
    };
    let mut sync_points = waiting(e.list_sync_points(ns));
    sync_points.extend(e.list_collectives(ns).unwrap_or_default().iter().map(|c| {
        let c = lockstep_proto::collective::status(c, now);
        json!({
            "kind": "collective",
            "id": c.collective_id,
            "arrived": c.members.len().saturating_sub(c.missing.len()),
            "required": c.members.len(),
            "missing": c.missing,
            "waiting_ms": c.waiting_ms,
        })
    }));
    // Open tick rounds wait for their participants' answers as barriers wait for arrivals.
    sync_points.extend(
        e.round_series(ns)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| lockstep_proto::round::series_info(s, false).open_round)
            .map(|r| {
                json!({
                    "kind": "round",
                    "id": format!("{} #{}", r.series, r.round),
                    "arrived": r.answered.len(),
                    "required": r.participants.len(),
                    "missing": r.waiting,
                    "waiting_ms": now.saturating_sub(r.opened_at_ms),
                })
            }),
    );
    let votes: Vec<Value> = e
        .list_votes(ns)
        .unwrap_or_default()
        .iter()
        .map(convert::vote_record)
        .map(|v| {
            json!({
                "id": v.vote_id,
                "question": v.question,
                "state": v.state,
                "ballots": v.ballots.len(),
                "required": v.required_count,
                "missing": v.missing,
                "age_ms": now.saturating_sub(v.created_at_ms),
            })
        })
        .collect();
    let tasks: Vec<Value> = e
        .task_queues()
        .into_iter()
        .filter(|q| q.namespace == ns)
        .map(|q| {
            json!({
                "kind": q.kind,
                "waiting": q.waiting,
                "ready": q.ready,
                "held": q.held,
                "completed": q.completed,
                "dead_lettered": q.dead_lettered,
                "oldest_ready_ms": q.oldest_ready_at.map(|at| now.saturating_sub(at)),
            })
        })
        .collect();
    let audit = control.audit();
    let mut entries: Vec<Value> = audit
        .entries()
        .rev()
        .take(AUDIT_ENTRIES)
        .map(convert::audit_entry)
        .map(|a| {
            json!({
                "seq": a.seq,
                "at_ms": a.at_ms,
                "actor": a.actor,
                "command": a.command,
                "namespace": a.namespace,
                "target": a.target,
                "outcome": a.outcome,
                "detail": a.detail,
            })
        })
        .collect();
    entries.reverse();
    let info = e.info();
    let stop = control.emergency();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "namespace": ns,
        "now_ms": now,
        "fields": fields,
        "agents": rows,
        "agents_total": total,
        "sync_points": sync_points,
        "votes": votes,
        "tasks": tasks,
        "health": {
            "score": counts.score(),
            "healthy": counts.healthy,
            "degraded": counts.degraded,
            "stuck": counts.stuck,
            "unhealthy": counts.unhealthy,
            "history": health.history.iter().map(|s| json!([s.at, s.score()])).collect::<Vec<_>>(),
        },
        "counters": {
            "at_ms": now,
            "published": info.counters.published,
            "delivered": info.counters.routed,
            "dropped": info.counters.dropped,
        },
        "emergency": stop.map(|s| json!({"actor": s.actor, "reason": s.reason, "since_ms": s.since})),
        "audit": entries,
        "audit_dropped": audit.dropped(),
    })
}

/// A state field's value as shown in a cell: strings as they are, anything else as JSON, cut.
fn field_text(value: Option<&Value>) -> Value {
    let text = match value {
        None => return Value::Null,
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    if text.chars().count() <= MAX_FIELD_CHARS {
        Value::String(text)
    } else {
        Value::String(text.chars().take(MAX_FIELD_CHARS - 1).chain(['…']).collect())
    }
}

/// What the dashboard's handlers read.
#[derive(Clone)]
pub struct DashboardState {
    pub dashboard: Arc<Dashboard>,
    pub admin: AdminService,
    /// Who may act: the admin token, or with tokens required a token allowing the action.
    pub gate: Gate,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// `GET /dashboard`.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // Nothing is loaded from elsewhere, and no other site may frame the page.
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
        ],
        body,
    )
        .into_response()
}

/// An error answer: `{"reason": R, "message": M}` (the reason as in docs/PROTOCOL.md, or an
/// HTTP-only one: `TOO_MANY_STREAMS`, `BAD_REQUEST`, `UNSUPPORTED_MEDIA_TYPE`).
fn refusal(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({"reason": reason, "message": message.into()}).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /dashboard/events?namespace=N&fields=a,b`: server-sent events, one `snapshot` event per
/// update (see docs/PROTOCOL.md, "Dashboard").
pub async fn events(State(state): State<DashboardState>, RawQuery(query): RawQuery) -> Response {
    let view = match View::parse(query.as_deref()) {
        Ok(view) => view,
        Err(message) => return refusal(StatusCode::BAD_REQUEST, "BAD_REQUEST", message),
    };
    let Ok(permit) = state.dashboard.streams.clone().try_acquire_owned() else {
        state.metrics.dashboard_stream_refused();
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_STREAMS",
            format!("at most {MAX_STREAMS} dashboard pages can watch at once; close one and reload"),
        );
    };
    let rx = state.dashboard.subscribe(view);
    let stream = updates(rx, permit, state.metrics.clone());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// The newest snapshot each time the page's connection can take one, skipping (and counting)
/// those it missed. The stream permit is held as long as the stream lives.
fn updates(
    rx: watch::Receiver<Snapshot>,
    permit: OwnedSemaphorePermit,
    metrics: Arc<crate::metrics::Metrics>,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> + Send {
    futures::stream::unfold((rx, permit, 0u64), move |(mut rx, permit, last)| {
        let metrics = metrics.clone();
        async move {
            loop {
                {
                    let snapshot = rx.borrow_and_update();
                    if snapshot.seq > last {
                        let skipped = if last == 0 { 0 } else { snapshot.seq - last - 1 };
                        metrics.dashboard_coalesced(skipped);
                        let event =
                            Event::default().event("snapshot").id(snapshot.seq.to_string()).data(&*snapshot.json);
                        let seq = snapshot.seq;
                        drop(snapshot);
                        return Some((Ok(event), (rx, permit, seq)));
                    }
                }
                // The feed ended (the server is stopping): so does the stream.
                rx.changed().await.ok()?;
            }
        }
    })
}

/// The body of an action on an agent.
#[derive(serde::Deserialize)]
struct AgentAction {
    #[serde(default)]
    namespace: String,
    agent_id: String,
}

/// The body of an emergency stop.
#[derive(serde::Deserialize)]
struct StopAction {
    #[serde(default)]
    reason: String,
}

/// `POST /dashboard/api/{action}` with a JSON body: `pause`, `resume`, `restart` (`{"namespace",
/// "agent_id"}`), `emergency-stop` (`{"reason"}`), `resume-all` (`{}`). The admin token (or, with
/// tokens required, a token allowing the action), when the
/// server has one, as `Authorization: Bearer <token>`; the actor as `X-Lockstep-Actor`.
pub async fn action(
    State(state): State<DashboardState>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A JSON body only: a form another site posts cannot carry one without asking first (CORS),
    // so the actions cannot be triggered from a page of another origin.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the action as JSON (Content-Type: application/json)",
        );
    }
    let metadata = tonic::metadata::MetadataMap::from_headers(headers);
    // Checked before the body is read: a caller without a valid token learns nothing else. The
    // action itself checks what the token allows, as it does for a gRPC call.
    let checked = state.gate.authenticate(tonic::Request::from_parts(metadata, Default::default(), ()));
    let (metadata, extensions) = match checked {
        Ok(r) if state.gate.required() => {
            let (metadata, extensions, ()) = r.into_parts();
            (metadata, extensions)
        }
        Ok(r) => match state.gate.admin(&r, "dashboard", None) {
            Ok(()) => {
                let (metadata, extensions, ()) = r.into_parts();
                (metadata, extensions)
            }
            Err(status) => return status_response(&status),
        },
        Err(status) => return status_response(&status),
    };
    let agent = || {
        serde_json::from_slice::<AgentAction>(&body)
            .map(|a| v1::AgentRef { namespace: a.namespace, agent_id: a.agent_id })
            .map_err(|e| format!("the body is not {{\"namespace\", \"agent_id\"}}: {e}"))
    };
    let admin = &state.admin;
    let answer = match action.as_str() {
        "pause" | "resume" | "restart" => {
            let target = match agent() {
                Ok(target) => tonic::Request::from_parts(metadata.clone(), extensions.clone(), target),
                Err(message) => return refusal(StatusCode::BAD_REQUEST, "BAD_REQUEST", message),
            };
            match action.as_str() {
                "pause" => admin.pause_agent(target).await,
                "resume" => admin.resume_agent(target).await,
                _ => admin.restart_agent(target).await,
            }
        }
        "emergency-stop" => match serde_json::from_slice::<StopAction>(&body) {
            Ok(s) => {
                admin
                    .emergency_stop(tonic::Request::from_parts(
                        metadata.clone(),
                        extensions.clone(),
                        v1::EmergencyStopRequest { reason: s.reason },
                    ))
                    .await
            }
            Err(e) => {
                return refusal(StatusCode::BAD_REQUEST, "BAD_REQUEST", format!("the body is not {{\"reason\"}}: {e}"))
            }
        },
        "resume-all" => {
            admin
                .resume_all(tonic::Request::from_parts(metadata.clone(), extensions.clone(), v1::ResumeAllRequest {}))
                .await
        }
        other => {
            return refusal(
                StatusCode::NOT_FOUND,
                "BAD_REQUEST",
                format!("no action '{other}': pause, resume, restart, emergency-stop or resume-all"),
            )
        }
    };
    match answer {
        Ok(ack) => {
            let body = json!({"detail": ack.into_inner().detail}).to_string();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(status) => status_response(&status),
    }
}

/// A gRPC status as an HTTP answer: the nearest HTTP status, the reason and the message.
fn status_response(status: &tonic::Status) -> Response {
    use tonic::Code;
    let code = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let reason = reason::of_status(status).map_or("UNKNOWN", |r| r.as_str());
    refusal(code, reason, status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_read_from_the_query_and_checked() {
        let v = View::parse(Some("namespace=desk&fields=pnl,%20last_signal,+x")).unwrap();
        assert_eq!(v.namespace, "desk");
        assert_eq!(v.fields, ["pnl", "last_signal", "x"]);
        assert_eq!(View::parse(None).unwrap(), View { namespace: String::new(), fields: vec![] });
        assert!(View::parse(Some("namespace=a%20b")).unwrap_err().contains("namespace"));
        let many = format!("fields={}", (0..9).map(|i| format!("f{i}")).collect::<Vec<_>>().join(","));
        assert!(View::parse(Some(&many)).unwrap_err().contains("at most 8"));
        assert!(View::parse(Some("fields=%FF")).is_err(), "not UTF-8");
        assert_eq!(percent_decode("100%").unwrap(), "100%", "a lone % stays");
    }

    #[test]
    fn field_values_are_text_and_cut() {
        assert_eq!(field_text(None), Value::Null);
        assert_eq!(field_text(Some(&json!("buy"))), json!("buy"));
        assert_eq!(field_text(Some(&json!(0.5))), json!("0.5"));
        let long = field_text(Some(&json!("x".repeat(100))));
        assert_eq!(long.as_str().unwrap().chars().count(), MAX_FIELD_CHARS);
        assert!(long.as_str().unwrap().ends_with('…'));
    }

    #[tokio::test]
    async fn a_slow_page_gets_the_newest_snapshot_and_the_skipped_ones_are_counted() {
        use futures::StreamExt;
        let (tx, rx) = watch::channel(Snapshot { seq: 0, json: Arc::from("") });
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let permits = Arc::new(Semaphore::new(1));
        let permit = permits.clone().try_acquire_owned().unwrap();
        let mut stream = Box::pin(updates(rx, permit, metrics.clone()));
        tx.send_replace(Snapshot { seq: 1, json: Arc::from("{\"n\":1}") });
        assert!(stream.next().await.unwrap().is_ok());
        // The page reads nothing while three more are published: it is sent only the last.
        for n in 2..=4 {
            tx.send_replace(Snapshot { seq: n, json: Arc::from(format!("{{\"n\":{n}}}")) });
        }
        assert!(stream.next().await.unwrap().is_ok());
        assert_eq!(metrics.dashboard_coalesced_total(), 2, "snapshots 2 and 3 were skipped");
        assert_eq!(permits.available_permits(), 0, "the stream holds its permit");
        drop(tx);
        assert!(stream.next().await.is_none(), "the stream ends with its feed");
        drop(stream);
        assert_eq!(permits.available_permits(), 1, "and gives its permit back");
    }
}
