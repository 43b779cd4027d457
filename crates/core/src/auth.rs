//! Who may do what: signed tokens and the permissions they carry.
//!
//! A token is a JSON Web Token (RFC 7519, compact form) signed with HMAC-SHA-256 (`HS256`) under a
//! secret the server is configured with ([`Key`]). Its claims ([`Claims`]) name the namespaces the
//! bearer may act in (`*`: every one), optionally the agent id and role it is bound to, the topic
//! patterns it may publish on and subscribe to (in the spirit of NATS's permissions), and whether
//! it may read other agents' state, act for other agent ids (a registry that registers and
//! heartbeats agents on their behalf), and use operators' actions. A verified token is a
//! [`Principal`]; its methods say whether an action is allowed, or which [`Denial`] refuses it.
//!
//! What it guarantees: a token is accepted only if its signature verifies (in constant time, by the
//! RustCrypto `hmac` crate), its header says `HS256` (no other algorithm, so no algorithm
//! confusion), it is not expired or not yet valid at the time given, and its claims are all known
//! and valid (an unknown or misspelt claim is refused rather than ignored, since an ignored
//! restriction would widen access). Permissions are deny-by-default: an absent list allows
//! nothing. This module does no I/O and reads no clock: the time is an argument.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::Reason;
use crate::topic::Pattern;

/// The longest token accepted, in bytes (larger ones are refused before any decoding).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The most entries of each list a token may carry (namespaces, publish and subscribe patterns).
pub const MAX_TOKEN_ENTRIES: usize = 64;

/// The shortest secret a server accepts, in bytes (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The namespace a call that names none acts in.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace entry that stands for every namespace.
pub const EVERY_NAMESPACE: &str = "*";

/// The longest pattern or topic in a token (the engine's own limit on interest patterns).
const MAX_PATTERN_BYTES: usize = 256;

/// The only header lockstep writes and accepts.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token says of its bearer. Field names are the JSON claims; `sub`, `exp`, `nbf`, `iat`,
/// `iss`, `aud` and `jti` are the registered JWT claims (only `exp` and `nbf` are checked).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Who the bearer is (recorded as the actor of its operators' actions).
    pub sub: String,
    /// The namespaces the bearer may act in; `*` for every one.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The agent id the bearer is bound to: it may register only as this agent, and read only its
    /// own state, unless `act_for_others` / `read_state` say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The role the bearer is bound to: it may register only with this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Topic patterns the bearer may publish on (and send requests to).
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns the bearer may subscribe to: a subscription is allowed when one of these covers it.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// May read other agents' state (`GetState` of another agent, watches of others).
    #[serde(default)]
    pub read_state: bool,
    /// May register and act as agent ids (and roles) other than the one it is bound to.
    #[serde(default)]
    pub act_for_others: bool,
    /// May use operators' actions (the `Admin` service, forcing and cleaning sync points, creating
    /// streams, replacing the intake rules) in its namespaces; those that concern the whole server
    /// need every namespace (`*`) too.
    #[serde(default)]
    pub admin: bool,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Token id (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Why a token was not accepted: the caller is not authenticated (`UNAUTHENTICATED`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token was presented: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token expired at {exp} (seconds since the Unix epoch); it is now {now}")]
    Expired { exp: u64, now: u64 },
    #[error("the token is not valid before {nbf} (seconds since the Unix epoch); it is now {now}")]
    NotYetValid { nbf: u64, now: u64 },
}

impl TokenError {
    /// The stable reason sent with the refusal.
    pub fn reason(&self) -> Reason {
        match self {
            TokenError::Missing => Reason::TokenMissing,
            TokenError::Invalid(_) => Reason::TokenInvalid,
            TokenError::Expired { .. } | TokenError::NotYetValid { .. } => Reason::TokenExpired,
        }
    }
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::Invalid(why.into())
}

/// A signing and verifying key (the shared secret of `HS256`).
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from a secret of at least [`MIN_SECRET_BYTES`] bytes (surrounding whitespace, such as
    /// a file's last newline, is not part of it).
    pub fn new(secret: &[u8]) -> Result<Key, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the token secret is {} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `head -c 32 /dev/urandom | base64`)",
                secret.len()
            ));
        }
        Ok(Key(secret.to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// A signed token carrying `claims` (checked first, as a server would).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        Principal::new(claims.clone())?;
        let body = serde_json::to_vec(claims).map_err(|e| invalid(e.to_string()))?;
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(body));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{signing_input}.{signature}"))
    }

    /// The principal a token stands for at `now_secs` (seconds since the Unix epoch), or why not.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Principal, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!("it is {} bytes; the limit is {MAX_TOKEN_BYTES}", token.len())));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JSON Web Token (three base64url parts separated by dots)"));
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid("its signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(&token.as_bytes()[..header.len() + 1 + body.len()]);
        // Checked before anything else is read, so that nothing unsigned is ever interpreted.
        mac.verify_slice(&signature).map_err(|_| invalid("its signature does not verify with this server's key"))?;
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| invalid("its header is not base64url"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| invalid("its header is not JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(invalid("its algorithm is not HS256, the only one this server accepts"));
        }
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid("its claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|e| invalid(format!("its claims: {e}")))?;
        if let Some(exp) = claims.exp.filter(|&exp| now_secs >= exp) {
            return Err(TokenError::Expired { exp, now: now_secs });
        }
        if let Some(nbf) = claims.nbf.filter(|&nbf| now_secs < nbf) {
            return Err(TokenError::NotYetValid { nbf, now: now_secs });
        }
        Principal::new(claims)
    }
}

/// What was refused a principal (`PERMISSION_DENIED`), naming it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Denial {
    #[error("the token does not allow namespace '{namespace}'")]
    Namespace { namespace: String },
    #[error("the token does not allow publishing on '{topic}'")]
    Publish { topic: String },
    #[error("the token does not allow subscribing to '{pattern}'")]
    Subscribe { pattern: String },
    #[error("the token is bound to {bound}; it does not allow acting as {asked}")]
    Agent { bound: String, asked: String },
    #[error("the token does not allow reading the state of agent(s) {agents}")]
    ReadState { agents: String },
    #[error("the token does not allow the operators' action {action}")]
    Admin { action: String },
}

impl Denial {
    /// The stable reason sent with the refusal.
    pub fn reason(&self) -> Reason {
        match self {
            Denial::Namespace { .. } => Reason::NamespaceDenied,
            Denial::Publish { .. } => Reason::PublishDenied,
            Denial::Subscribe { .. } => Reason::SubscribeDenied,
            Denial::Agent { .. } => Reason::AgentDenied,
            Denial::ReadState { .. } => Reason::StateReadDenied,
            Denial::Admin { .. } => Reason::AdminDenied,
        }
    }
}

/// The bearer of a verified token: its claims, with the patterns parsed.
#[derive(Clone, Debug)]
pub struct Principal {
    claims: Claims,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
}

fn patterns(what: &str, list: &[String]) -> Result<Vec<Pattern>, TokenError> {
    if list.len() > MAX_TOKEN_ENTRIES {
        return Err(invalid(format!("{} {what} patterns; the limit is {MAX_TOKEN_ENTRIES}", list.len())));
    }
    list.iter()
        .map(|p| Pattern::parse(p, MAX_PATTERN_BYTES).map_err(|e| invalid(format!("{what} pattern: {e}"))))
        .collect()
}

impl Principal {
    /// The principal of these claims, if they are valid.
    pub fn new(claims: Claims) -> Result<Principal, TokenError> {
        if claims.namespaces.len() > MAX_TOKEN_ENTRIES {
            return Err(invalid(format!("{} namespaces; the limit is {MAX_TOKEN_ENTRIES}", claims.namespaces.len())));
        }
        for ns in claims.namespaces.iter().filter(|n| *n != EVERY_NAMESPACE) {
            crate::name::validate("namespace", ns).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(agent) = &claims.agent {
            crate::name::validate("agent id", agent).map_err(|e| invalid(e.to_string()))?;
        }
        let publish = patterns("publish", &claims.publish)?;
        let subscribe = patterns("subscribe", &claims.subscribe)?;
        Ok(Principal { claims, publish, subscribe })
    }

    /// The claims it was made from.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Whether it may act in every namespace.
    pub fn every_namespace(&self) -> bool {
        self.claims.namespaces.iter().any(|n| n == EVERY_NAMESPACE)
    }

    /// May it act in `namespace`?
    pub fn namespace(&self, namespace: &str) -> Result<(), Denial> {
        // Calls that leave the namespace empty mean the default one.
        let namespace = if namespace.is_empty() { DEFAULT_NAMESPACE } else { namespace };
        if self.every_namespace() || self.claims.namespaces.iter().any(|n| n == namespace) {
            Ok(())
        } else {
            Err(Denial::Namespace { namespace: namespace.to_owned() })
        }
    }

    /// May it register (or act as) `agent_id` with `role` in `namespace`, subscribed to `interests`?
    pub fn register(&self, namespace: &str, agent_id: &str, role: &str, interests: &[String]) -> Result<(), Denial> {
        self.namespace(namespace)?;
        self.act_as(agent_id)?;
        if let Some(bound) = self.claims.role.as_deref().filter(|r| *r != role && !self.claims.act_for_others) {
            return Err(Denial::Agent { bound: format!("role '{bound}'"), asked: format!("role '{role}'") });
        }
        interests.iter().try_for_each(|i| self.subscribe(i))
    }

    /// May it act as agent `agent_id` (register it, heartbeat it)?
    pub fn act_as(&self, agent_id: &str) -> Result<(), Denial> {
        match self.claims.agent.as_deref() {
            Some(bound) if bound != agent_id && !self.claims.act_for_others => {
                Err(Denial::Agent { bound: format!("agent '{bound}'"), asked: format!("agent '{agent_id}'") })
            }
            _ => Ok(()),
        }
    }

    /// May it publish on (or send a request to) `topic`?
    pub fn publish(&self, topic: &str) -> Result<(), Denial> {
        if self.publish.iter().any(|p| p.matches(topic)) {
            Ok(())
        } else {
            Err(Denial::Publish { topic: topic.to_owned() })
        }
    }

    /// May it subscribe to `pattern`? (A pattern that does not parse is left to the engine, which
    /// refuses it as invalid; it is denied here only if no permission could cover it.)
    pub fn subscribe(&self, pattern: &str) -> Result<(), Denial> {
        let allowed = match Pattern::parse(pattern, usize::MAX) {
            Ok(asked) => self.subscribe.iter().any(|p| p.covers(&asked)),
            Err(_) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(Denial::Subscribe { pattern: pattern.to_owned() })
        }
    }

    /// May it read the state of `agent_id` (an agent of a namespace it may act in)? Its own, when
    /// it is bound to that agent; any other only with `read_state`.
    pub fn read_state(&self, agent_id: &str) -> Result<(), Denial> {
        if self.claims.read_state || self.claims.agent.as_deref() == Some(agent_id) {
            Ok(())
        } else {
            Err(Denial::ReadState { agents: format!("'{agent_id}'") })
        }
    }

    /// May it read the state of several agents at once (a watch of a role or of everyone)?
    pub fn read_states(&self, which: &str) -> Result<(), Denial> {
        if self.claims.read_state {
            Ok(())
        } else {
            Err(Denial::ReadState { agents: which.to_owned() })
        }
    }

    /// May it use the operators' action `action`, in `namespace` (`None`: one that concerns the
    /// whole server, which needs every namespace)?
    pub fn admin(&self, action: &str, namespace: Option<&str>) -> Result<(), Denial> {
        let scoped = match namespace {
            Some(ns) => self.namespace(ns).is_ok(),
            None => self.every_namespace(),
        };
        if self.claims.admin && scoped {
            Ok(())
        } else {
            Err(Denial::Admin { action: action.to_owned() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> Key {
        Key::new(SECRET).unwrap()
    }

    fn agent_a() -> Claims {
        Claims {
            sub: "a1".into(),
            namespaces: vec!["a".into()],
            agent: Some("a1".into()),
            publish: vec!["orders.>".into()],
            subscribe: vec!["orders.*".into(), "news.>".into()],
            ..Claims::default()
        }
    }

    fn principal(c: Claims) -> Principal {
        key().verify(&key().sign(&c).unwrap(), 100).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims() {
        let p = principal(agent_a());
        assert_eq!(p.claims(), &agent_a());
    }

    #[test]
    fn a_short_secret_is_refused_and_whitespace_is_not_part_of_it() {
        assert!(Key::new(b"short").unwrap_err().contains("at least 32"));
        let padded = Key::new(b"  0123456789abcdef0123456789abcdef\n").unwrap();
        let token = key().sign(&agent_a()).unwrap();
        assert!(padded.verify(&token, 0).is_ok());
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_invalid() {
        let token = key().sign(&agent_a()).unwrap();
        let other = Key::new(b"another secret of thirty-two bytes!!").unwrap();
        assert!(matches!(other.verify(&token, 0), Err(TokenError::Invalid(_))));
        // A body swapped for one granting every namespace keeps the old signature: refused.
        let (head, rest) = token.split_once('.').unwrap();
        let sig = rest.rsplit_once('.').unwrap().1;
        let forged = serde_json::to_vec(&Claims { namespaces: vec!["*".into()], ..agent_a() }).unwrap();
        let forged = format!("{head}.{}.{sig}", URL_SAFE_NO_PAD.encode(forged));
        assert!(matches!(key().verify(&forged, 0), Err(TokenError::Invalid(_))));
        for bad in ["x", "a.b", "a.b.c.d", "%%.%%.%%"] {
            assert!(matches!(key().verify(bad, 0), Err(TokenError::Invalid(_))), "{bad}");
        }
        assert_eq!(key().verify("", 0).unwrap_err(), TokenError::Missing);
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(key().verify(&huge, 0), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn another_algorithm_is_refused_even_when_signed() {
        // `none` and friends: a correctly MACed token whose header names another algorithm.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&agent_a()).unwrap());
        let mut mac = key().mac();
        mac.update(format!("{header}.{body}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let err = key().verify(&format!("{header}.{body}.{sig}"), 0).unwrap_err();
        assert!(err.to_string().contains("HS256"), "{err}");
    }

    #[test]
    fn expiry_and_not_before_are_checked_at_the_time_given() {
        let token = key().sign(&Claims { exp: Some(50), nbf: Some(10), ..agent_a() }).unwrap();
        assert!(key().verify(&token, 10).is_ok());
        assert!(key().verify(&token, 49).is_ok());
        assert_eq!(key().verify(&token, 50).unwrap_err(), TokenError::Expired { exp: 50, now: 50 });
        assert_eq!(key().verify(&token, 9).unwrap_err().reason(), Reason::TokenExpired);
    }

    #[test]
    fn unknown_claims_and_invalid_entries_are_refused() {
        let body = URL_SAFE_NO_PAD.encode(r#"{"sub":"x","namespaces":["a"],"publsh":[">"]}"#);
        let header = URL_SAFE_NO_PAD.encode(HEADER);
        let mut mac = key().mac();
        mac.update(format!("{header}.{body}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let err = key().verify(&format!("{header}.{body}.{sig}"), 0).unwrap_err();
        assert!(err.to_string().contains("publsh"), "{err}");
        assert!(key().sign(&Claims { publish: vec!["a.>.b".into()], ..agent_a() }).is_err());
        assert!(key().sign(&Claims { namespaces: vec!["bad name".into()], ..agent_a() }).is_err());
        let many = (0..=MAX_TOKEN_ENTRIES).map(|i| format!("n{i}")).collect();
        assert!(key().sign(&Claims { namespaces: many, ..agent_a() }).is_err());
    }

    #[test]
    fn namespaces_are_deny_by_default_and_star_means_every_one() {
        let p = principal(agent_a());
        assert!(p.namespace("a").is_ok());
        assert!(p.namespace("").is_err(), "an empty namespace is the default one");
        assert!(principal(Claims { namespaces: vec!["default".into()], ..agent_a() }).namespace("").is_ok());
        assert_eq!(p.namespace("b").unwrap_err().reason(), Reason::NamespaceDenied);
        let none = principal(Claims { namespaces: vec![], ..agent_a() });
        assert!(none.namespace("a").is_err());
        let all = principal(Claims { namespaces: vec!["*".into()], ..agent_a() });
        assert!(all.namespace("b").is_ok());
    }

    #[test]
    fn publish_and_subscribe_follow_the_patterns() {
        let p = principal(agent_a());
        assert!(p.publish("orders.new").is_ok());
        assert!(p.publish("orders.eu.new").is_ok());
        assert_eq!(p.publish("news.x").unwrap_err().reason(), Reason::PublishDenied);
        assert!(p.subscribe("orders.new").is_ok());
        assert!(p.subscribe("orders.*").is_ok());
        assert!(p.subscribe("news.>").is_ok());
        assert!(p.subscribe("news.a.b").is_ok());
        assert_eq!(p.subscribe("orders.>").unwrap_err().reason(), Reason::SubscribeDenied);
        assert!(p.subscribe(">").is_err());
        assert!(p.subscribe("not a pattern").is_err());
        let silent = principal(Claims { publish: vec![], subscribe: vec![], ..agent_a() });
        assert!(silent.publish("orders.new").is_err());
        assert!(silent.subscribe("orders.new").is_err());
    }

    #[test]
    fn a_bound_agent_acts_only_as_itself_unless_allowed() {
        let p = principal(agent_a());
        assert!(p.register("a", "a1", "any", &["orders.x".into()]).is_ok());
        assert_eq!(p.register("a", "a2", "any", &[]).unwrap_err().reason(), Reason::AgentDenied);
        assert_eq!(p.register("b", "a1", "any", &[]).unwrap_err().reason(), Reason::NamespaceDenied);
        assert_eq!(p.register("a", "a1", "any", &[">".into()]).unwrap_err().reason(), Reason::SubscribeDenied);
        let registry = principal(Claims { act_for_others: true, ..agent_a() });
        assert!(registry.register("a", "a2", "any", &[]).is_ok());
        let unbound = principal(Claims { agent: None, ..agent_a() });
        assert!(unbound.act_as("whoever").is_ok());
        let role = principal(Claims { agent: None, role: Some("worker".into()), ..agent_a() });
        assert!(role.register("a", "w1", "worker", &[]).is_ok());
        assert_eq!(role.register("a", "w1", "boss", &[]).unwrap_err().reason(), Reason::AgentDenied);
    }

    #[test]
    fn state_is_readable_only_as_its_own_agent_or_with_read_state() {
        let p = principal(agent_a());
        assert!(p.read_state("a1").is_ok());
        assert_eq!(p.read_state("a2").unwrap_err().reason(), Reason::StateReadDenied);
        assert!(p.read_states("role 'x'").is_err());
        let reader = principal(Claims { read_state: true, ..agent_a() });
        assert!(reader.read_state("a2").is_ok());
        assert!(reader.read_states("everyone").is_ok());
    }

    #[test]
    fn admin_needs_the_flag_and_the_namespace_or_every_namespace_for_global_actions() {
        assert_eq!(principal(agent_a()).admin("PauseAgent", Some("a")).unwrap_err().reason(), Reason::AdminDenied);
        let ops_a = principal(Claims { admin: true, ..agent_a() });
        assert!(ops_a.admin("PauseAgent", Some("a")).is_ok());
        assert!(ops_a.admin("PauseAgent", Some("b")).is_err());
        assert!(ops_a.admin("EmergencyStop", None).is_err());
        let root = principal(Claims { admin: true, namespaces: vec!["*".into()], ..agent_a() });
        assert!(root.admin("EmergencyStop", None).is_ok());
        assert!(root.admin("PauseAgent", Some("b")).is_ok());
    }
}
