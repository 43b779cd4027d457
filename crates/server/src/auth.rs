//! Authentication at the gRPC edge: who is calling, and whether what it asks is allowed.
//!
//! With a token secret configured ([`Gate::new`] with a [`Key`]), every call on the agents' and
//! operators' services must present `authorization: Bearer <token>`: a token signed with that
//! secret (see [`lockstep_core::auth`]), or the server's admin token, which stands for an operator
//! allowed everything. The [`Gate::interceptor`] checks the token once per call (for a session,
//! once, when its stream opens) and leaves the caller's [`Access`] in the request's extensions;
//! each handler then asks the gate whether the namespace, agent or action it serves is allowed
//! ([`Gate::namespace`], [`Gate::read_state`], [`Gate::admin`]...), and a session's messages are
//! checked one by one ([`Access::session_request`]). Refusals are `UNAUTHENTICATED` (no token, a
//! token that does not verify or has expired) or `PERMISSION_DENIED` (a valid token that does not
//! allow it), each with its stable reason.
//!
//! A session refused for its token is refused by [`SessionGate`] only once its first message (the
//! registration) has arrived: a client writes that message as it opens the stream, and a refusal
//! that overtakes the write makes some clients (gRPC's C core, under Python's client) report their
//! own failed write, INTERNAL, instead of the refusal.
//!
//! Without a secret nothing is asked of agents (open access, allowed only on loopback unless the
//! operator opts in; see `start`), and operators' actions check the admin token as before, when
//! one is set. The health and reflection services stay open either way: they reveal no data.

use std::convert::Infallible;
use std::sync::Arc;

use lockstep_core::auth::{Denial, Key, Principal, TokenError};
use lockstep_core::{Reason, RegisterRequest, Request as SessionRequest, WatchTarget};
use lockstep_proto::reason;
use tonic::codegen::{http, Body, BoxFuture, Context, Pin, Poll, Service};
use tonic::{Code, Request, Status};

use crate::admin::AdminToken;

/// Who a call comes from, as its token says (kept in the request's extensions).
#[derive(Clone, Debug)]
pub enum Access {
    /// The server requires no token: everything is allowed (operators' actions still check the
    /// admin token, when one is set).
    Open,
    /// The server's admin token was presented: everything is allowed.
    Root,
    /// A verified token.
    Principal(Arc<Principal>),
}

/// The status of a refusal.
pub(crate) fn denied(denial: &Denial) -> Status {
    let mut metadata = Vec::new();
    if let Denial::Namespace { namespace } = denial {
        metadata.push(("namespace", namespace.clone()));
    }
    reason::status(Code::PermissionDenied, denial.reason(), denial.to_string(), metadata)
}

fn unauthenticated(error: &TokenError) -> Status {
    reason::status(Code::Unauthenticated, error.reason(), error.to_string(), [])
}

impl Access {
    /// The access of a call that passed the [`Gate::interceptor`] (open when the server requires
    /// no token).
    pub fn of<T>(request: &Request<T>) -> Access {
        request.extensions().get::<Access>().cloned().unwrap_or(Access::Open)
    }

    fn check(&self, rule: impl FnOnce(&Principal) -> Result<(), Denial>) -> Result<(), Status> {
        match self {
            Access::Open | Access::Root => Ok(()),
            Access::Principal(p) => rule(p).map_err(|d| denied(&d)),
        }
    }

    /// May the caller act in `namespace`?
    pub fn namespace(&self, namespace: &str) -> Result<(), Status> {
        self.check(|p| p.namespace(namespace))
    }

    /// May the caller act as agent `agent_id` of `namespace` (a collective member, a group's
    /// publisher, a trace's recorder)?
    pub fn act_as(&self, namespace: &str, agent_id: &str) -> Result<(), Status> {
        self.check(|p| p.namespace(namespace).and_then(|()| p.act_as(agent_id)))
    }

    /// May the caller register this session? Checked before the engine sees it.
    pub fn register(&self, r: &RegisterRequest) -> Result<(), Denial> {
        match self {
            Access::Open | Access::Root => Ok(()),
            Access::Principal(p) => p.register(&r.namespace, &r.agent_id, &r.role, &r.interests),
        }
    }

    /// Whether a registered session's request is allowed, for an agent `agent_id` (its own
    /// identity, checked at registration): `Err` names what is denied.
    pub fn session_request(&self, agent_id: &str, request: &SessionRequest) -> Result<(), Denial> {
        let Access::Principal(p) = self else { return Ok(()) };
        match request {
            SessionRequest::Publish { topic, .. }
            | SessionRequest::PublishEvent { topic, .. }
            | SessionRequest::AgentRequest { topic, .. } => p.publish(topic),
            SessionRequest::Subscribe { pattern, .. } => p.subscribe(pattern),
            SessionRequest::Watch(WatchTarget::Agent(other)) if other != agent_id => p.read_state(other),
            SessionRequest::Watch(WatchTarget::Role(role)) => p.read_states(&format!("of role '{role}'")),
            SessionRequest::Watch(WatchTarget::All) => p.read_states("of the whole namespace"),
            _ => Ok(()),
        }
    }
}

/// What the server requires of callers: its token secret (if any) and its admin token (if any).
#[derive(Clone, Default)]
pub struct Gate {
    key: Option<Arc<Key>>,
    admin_token: AdminToken,
}

impl Gate {
    /// A gate verifying tokens with `key` (none: open access), and taking `admin_token` (if set)
    /// as an operator's credential.
    pub fn new(key: Option<Key>, admin_token: AdminToken) -> Self {
        Gate { key: key.map(Arc::new), admin_token }
    }

    /// Whether tokens are required.
    pub fn required(&self) -> bool {
        self.key.is_some()
    }

    /// Checks the token of a call and leaves its [`Access`] in the request's extensions.
    pub fn authenticate(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.key.is_none() {
            return Ok(request);
        }
        let Some(value) = request.metadata().get("authorization") else {
            return Err(unauthenticated(&TokenError::Missing));
        };
        let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return Err(unauthenticated(&TokenError::Invalid(
                "the `authorization` header must be `Bearer <token>`".into(),
            )));
        };
        let access = self.access(Some(token))?;
        request.extensions_mut().insert(access);
        Ok(request)
    }

    /// What `token` allows (`None` or empty: no token was presented), as for a call presenting it:
    /// how the lean transport checks the token of its `LeanHello`.
    pub fn access(&self, token: Option<&str>) -> Result<Access, Status> {
        let Some(key) = &self.key else { return Ok(Access::Open) };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(unauthenticated(&TokenError::Missing));
        };
        if self.admin_token.matches(token) {
            return Ok(Access::Root);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Access::Principal(Arc::new(key.verify(token, now).map_err(|e| unauthenticated(&e))?)))
    }

    /// The interceptor of every service that needs a caller: marks its connection as used (see
    /// `listener`), then [`Gate::authenticate`]s it.
    pub fn interceptor(&self) -> Edge {
        Edge(self.clone())
    }

    /// May the caller act in `namespace`?
    pub fn namespace<T>(&self, request: &Request<T>, namespace: &str) -> Result<(), Status> {
        Access::of(request).namespace(namespace)
    }

    /// May the caller read what concerns every namespace (server-wide counts)?
    pub fn every_namespace<T>(&self, request: &Request<T>) -> Result<(), Status> {
        Access::of(request).check(|p| {
            if p.every_namespace() {
                Ok(())
            } else {
                Err(Denial::Namespace { namespace: lockstep_core::auth::EVERY_NAMESPACE.into() })
            }
        })
    }

    /// May the caller read the state of `agent_id` in `namespace`?
    pub fn read_state<T>(&self, request: &Request<T>, namespace: &str, agent_id: &str) -> Result<(), Status> {
        Access::of(request).check(|p| p.namespace(namespace).and_then(|()| p.read_state(agent_id)))
    }

    /// May the caller use the operators' action `action` in `namespace` (`None`: one concerning the
    /// whole server)? With tokens required: the admin token, or a token allowing it. Without: the
    /// admin token when one is set, else anyone.
    pub fn admin<T>(&self, request: &Request<T>, action: &str, namespace: Option<&str>) -> Result<(), Status> {
        if self.key.is_none() {
            return self.admin_token.check(request.metadata());
        }
        match Access::of(request) {
            Access::Root => Ok(()),
            Access::Principal(p) => p.admin(action, namespace).map_err(|d| denied(&d)),
            // Not through the interceptor: refuse rather than let an unchecked call through.
            Access::Open => Err(reason::status(
                Code::Unauthenticated,
                Reason::TokenMissing,
                "no token was checked for this call",
                [],
            )),
        }
    }
}

/// The path of the agents' session stream, the one call [`SessionGate`] looks at.
const SESSION_PATH: &str = "/lockstep.v1.Lockstep/Session";

/// Wraps the agents' service (`S`, already behind [`Gate::interceptor`]): a session stream whose
/// token the gate refuses is answered with the refusal after its first message arrived (or after
/// `wait`, the time a session has to register), never before. Every other call, and every session
/// the gate lets through, goes to `S` untouched.
#[derive(Clone)]
pub struct SessionGate<S> {
    inner: S,
    gate: Gate,
    wait: std::time::Duration,
}

impl<S> SessionGate<S> {
    /// `inner` behind this gate's check of sessions, a refused one held for at most `wait`.
    pub fn new(inner: S, gate: Gate, wait: std::time::Duration) -> Self {
        SessionGate { inner, gate, wait }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for SessionGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<tonic::body::Body>> for SessionGate<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() == SESSION_PATH {
            let headers = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
            let probe = Request::from_parts(headers, http::Extensions::new(), ());
            if let Err(refusal) = self.gate.authenticate(probe) {
                let wait = self.wait;
                return Box::pin(async move {
                    let mut body = request.into_body();
                    // Whatever arrives (a message, the end, an error, nothing in time), the answer
                    // is the refusal.
                    let _ =
                        tokio::time::timeout(wait, std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))).await;
                    Ok(refusal.into_http())
                });
            }
        }
        let answer = self.inner.call(request);
        Box::pin(async move { answer.await.map(|response| response.map(tonic::body::Body::new)) })
    }
}

/// The interceptor made by [`Gate::interceptor`].
#[derive(Clone)]
pub struct Edge(Gate);

impl tonic::service::Interceptor for Edge {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.authenticate(crate::listener::mark_used(request)?)
    }
}

#[cfg(test)]
mod tests {
    use lockstep_core::auth::Claims;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn call(gate: &Gate, bearer: Option<&str>) -> Result<Request<()>, Status> {
        let mut r = Request::new(());
        if let Some(v) = bearer {
            r.metadata_mut().insert("authorization", format!("Bearer {v}").parse().unwrap());
        }
        gate.authenticate(r)
    }

    fn token(claims: Claims) -> String {
        Key::new(SECRET).unwrap().sign(&claims).unwrap()
    }

    fn gate() -> Gate {
        Gate::new(Some(Key::new(SECRET).unwrap()), AdminToken::new(Some("root-token".into())))
    }

    #[test]
    fn without_a_key_calls_pass_and_carry_no_principal() {
        let open = Gate::default();
        let r = call(&open, None).unwrap();
        assert!(matches!(Access::of(&r), Access::Open));
        assert!(open.namespace(&r, "anything").is_ok());
        assert!(open.admin(&r, "PauseAgent", Some("a")).is_ok(), "no admin token set: open as before");
    }

    #[test]
    fn missing_and_bad_tokens_are_unauthenticated_with_their_reason() {
        let g = gate();
        let missing = call(&g, None).unwrap_err();
        assert_eq!((missing.code(), reason::of_status(&missing)), (Code::Unauthenticated, Some(Reason::TokenMissing)));
        let bad = call(&g, Some("x.y.z")).unwrap_err();
        assert_eq!((bad.code(), reason::of_status(&bad)), (Code::Unauthenticated, Some(Reason::TokenInvalid)));
        let expired =
            call(&g, Some(&token(Claims { sub: "x".into(), exp: Some(1), ..Claims::default() }))).unwrap_err();
        assert_eq!(reason::of_status(&expired), Some(Reason::TokenExpired));
    }

    #[test]
    fn a_principal_is_held_to_its_namespaces_and_the_admin_token_to_nothing() {
        let g = gate();
        let a = call(&g, Some(&token(Claims { sub: "a".into(), namespaces: vec!["a".into()], ..Claims::default() })))
            .unwrap();
        assert!(g.namespace(&a, "a").is_ok());
        let no = g.namespace(&a, "b").unwrap_err();
        assert_eq!((no.code(), reason::of_status(&no)), (Code::PermissionDenied, Some(Reason::NamespaceDenied)));
        assert_eq!(reason::named(&no, "namespace"), "b");
        assert_eq!(reason::of_status(&g.admin(&a, "PauseAgent", Some("a")).unwrap_err()), Some(Reason::AdminDenied));
        assert!(g.every_namespace(&a).is_err());
        let root = call(&g, Some("root-token")).unwrap();
        assert!(g.namespace(&root, "b").is_ok());
        assert!(g.admin(&root, "EmergencyStop", None).is_ok());
    }

    #[test]
    fn session_requests_are_held_to_the_patterns_and_state_permission() {
        let g = gate();
        let claims = Claims {
            sub: "a1".into(),
            namespaces: vec!["a".into()],
            agent: Some("a1".into()),
            publish: vec!["out.>".into()],
            subscribe: vec!["in.*".into()],
            ..Claims::default()
        };
        let access = Access::of(&call(&g, Some(&token(claims))).unwrap());
        let publish = |topic: &str| SessionRequest::Publish {
            topic: topic.into(),
            payload: Default::default(),
            content_type: String::new(),
        };
        assert!(access.session_request("a1", &publish("out.x")).is_ok());
        assert_eq!(access.session_request("a1", &publish("in.x")).unwrap_err().reason(), Reason::PublishDenied);
        let sub = |p: &str| SessionRequest::Subscribe { pattern: p.into(), replay: Default::default() };
        assert!(access.session_request("a1", &sub("in.x")).is_ok());
        assert_eq!(access.session_request("a1", &sub("in.>")).unwrap_err().reason(), Reason::SubscribeDenied);
        let watch = |t| SessionRequest::Watch(t);
        assert!(access.session_request("a1", &watch(WatchTarget::Agent("a1".into()))).is_ok());
        assert!(access.session_request("a1", &watch(WatchTarget::Agent("a2".into()))).is_err());
        assert!(access.session_request("a1", &watch(WatchTarget::All)).is_err());
        assert!(access.session_request("a1", &SessionRequest::Heartbeat).is_ok());
    }
}
