//! Intake: validation and categorisation of published records before routing.
//!
//! Owns the intake rule set ([`RuleSet`]) and its rules:
//!
//! * **Schemas.** Per topic pattern, a JSON Schema (any draft the `jsonschema` crate knows; no
//!   remote or file references). A record published on a topic that a schema covers must be JSON
//!   and valid against it (the first schema whose pattern matches applies). A record that fails is
//!   refused to its publisher with the schema errors (instance path as a JSON pointer, and reason;
//!   at most `intake.max_reported_errors`), counted per topic and per publisher, and copied to the
//!   schema's `dead_letter` topic when it names one. Nothing of a refused record is routed.
//! * **Routes (the categoriser).** Per intake topic pattern, ordered rules: the first rule whose
//!   predicates all hold (JSON pointer predicates: `equals`, `exists`, `one_of`, numeric `min` /
//!   `max`) sends the record to its `target` topic instead of the intake topic. A target may take a
//!   pointer's value: `market_data.{/symbol}` (a string or integer value, lowercased; a value that
//!   is missing or does not make a valid topic makes the rule not match). A record that matches no
//!   rule goes to the route's `unmatched` topic, or stays on the intake topic when it names none;
//!   either way it is counted as unmatched. A categorised record is checked against the schema of
//!   its category topic too (when one covers it).
//! * **Envelope.** A categorised record carries an envelope set by the server ([`Envelope`]): the
//!   intake's sequence number (one numbering per server, from 1), the server time, the round
//!   number when the route names a round series with an open round, the intake topic and the rule.
//!   The publisher stays the record's data source. The payload is never rewritten.
//! * **Versions.** A rule set is compiled once ([`Intake::compile`]): every schema, pattern,
//!   pointer and target is checked, and the first problem is named by its place
//!   (`schemas[1].schema: ...`, `routes[0].rules[2].when[0].pointer: ...`); a set with a problem is
//!   refused whole and the one in force stays. Each accepted replacement takes the next version.
//!
//! A record is read in place ([`crate::json_tape`]), and one that every check passes is decided
//! without building its `serde_json::Value`; any other is decided again from its `Value`, which
//! names the errors of a refusal. Both readings give the same verdict and the same routing.
//!
//! Deterministic: no clock (time is an argument) and no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::error::CoreError;
use crate::json_tape::{Parsed, Tape, TapeJson, TapeNode};
use crate::topic::{validate_topic, Pattern};
use jsonschema::json::Node as _;

/// Limits of the intake and the rule set the TOML file declares (`[intake]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeSettings {
    /// Most schemas in a rule set.
    pub max_schemas: usize,
    /// Most routes in a rule set, and most rules in one route.
    pub max_rules: usize,
    /// Largest schema, as compact JSON text, in bytes.
    pub max_schema_bytes: usize,
    /// Most schema errors a refusal reports (the count of all of them is in the message).
    pub max_reported_errors: usize,
    /// Most publishers whose refusals are counted one by one; beyond, they are counted under `*`.
    pub max_counted_publishers: usize,
    /// Schemas in force from the start (until an operator replaces the set).
    pub schemas: Vec<SchemaSpec>,
    /// Routes in force from the start.
    pub routes: Vec<RouteSpec>,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        IntakeSettings {
            max_schemas: 64,
            max_rules: 256,
            max_schema_bytes: 64 * 1024,
            max_reported_errors: 8,
            max_counted_publishers: 1024,
            schemas: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl IntakeSettings {
    /// The rule set the file declares.
    pub fn rule_set(&self) -> RuleSet {
        RuleSet { schemas: self.schemas.clone(), routes: self.routes.clone() }
    }

    /// Checks the limits and the declared rule set; the server refuses to start otherwise, naming
    /// the place of the problem.
    pub fn validate(&self, max_topic_len: usize) -> Result<(), String> {
        if self.max_reported_errors == 0 {
            return Err("max_reported_errors must be at least 1".into());
        }
        Intake::compile(self.rule_set(), 1, self, max_topic_len).map(|_| ()).map_err(|e| match e {
            CoreError::Invalid { reason, .. } => reason,
            other => other.to_string(),
        })
    }
}

/// A rule set: schemas and routes. The shape of `[[intake.schemas]]` / `[[intake.routes]]` in the
/// TOML file and of a replacement sent through the admin API (as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSet {
    pub schemas: Vec<SchemaSpec>,
    pub routes: Vec<RouteSpec>,
}

impl RuleSet {
    /// The set as JSON text (the shape a replacement is sent in).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A JSON Schema for the topics of a pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// Topic pattern (`a.b`, `*` one token, `>` the rest).
    pub topic: String,
    /// The schema (a JSON object, or a boolean).
    pub schema: Value,
    /// Where a refused record is copied (as published, by its publisher); none: it is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// The categoriser of an intake topic pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Intake topic pattern.
    pub topic: String,
    /// Tried in order; the first that matches decides.
    pub rules: Vec<RuleSpec>,
    /// Where a record no rule matches goes; none: it stays on the topic it was published on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<String>,
    /// A round series (see [`crate::round`]) of the publisher's namespace: while one of its rounds
    /// is open, categorised records carry its number as their tick id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_series: Option<String>,
}

/// One categorisation rule: all its predicates hold (none: always) → `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Named in counters and envelopes; by default `rule<index>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub when: Vec<Predicate>,
    /// Category topic; `{/pointer}` takes a value of the record.
    pub target: String,
}

/// A test of the value at a JSON pointer. Exactly one kind: `equals`, `exists`, `one_of`, or a
/// numeric range (`min` and/or `max`, inclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// RFC 6901 JSON pointer (`/symbol`, `/fill/qty`; empty: the whole record).
    pub pointer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Number>,
}

/// One compiled predicate.
#[derive(Clone, Debug)]
enum Test {
    Equals(Value),
    Exists(bool),
    OneOf(Vec<Value>),
    Range(Option<f64>, Option<f64>),
}

impl Predicate {
    fn compile(&self) -> Result<Test, String> {
        check_pointer(&self.pointer).map_err(|e| format!("pointer: {e}"))?;
        let range = self.min.is_some() || self.max.is_some();
        let kinds = [self.equals.is_some(), self.exists.is_some(), self.one_of.is_some(), range];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("needs exactly one of equals, exists, one_of, or a range (min and/or max)".into());
        }
        Ok(if let Some(v) = &self.equals {
            Test::Equals(v.clone())
        } else if let Some(e) = self.exists {
            Test::Exists(e)
        } else if let Some(vs) = &self.one_of {
            if vs.is_empty() {
                return Err("one_of: needs at least one value".into());
            }
            Test::OneOf(vs.clone())
        } else {
            let (min, max) = (self.min.as_ref().and_then(Number::as_f64), self.max.as_ref().and_then(Number::as_f64));
            if let (Some(a), Some(b)) = (min, max) {
                if a > b {
                    return Err(format!("min {a} is above max {b}"));
                }
            }
            Test::Range(min, max)
        })
    }
}

impl Test {
    fn holds(&self, v: Option<&Value>) -> bool {
        match self {
            Test::Equals(want) => v.is_some_and(|v| json_eq(v, want)),
            Test::Exists(want) => v.is_some() == *want,
            Test::OneOf(wants) => v.is_some_and(|v| wants.iter().any(|w| json_eq(v, w))),
            Test::Range(min, max) => {
                v.and_then(Value::as_f64).is_some_and(|x| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m))
            }
        }
    }
}

/// Equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!("'{p}' is not a JSON pointer (it starts with '/', or is empty for the whole record)"));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("'{p}': '~' must be followed by 0 or 1"));
        }
    }
    Ok(())
}

/// A target topic: literal pieces and pointers whose values fill the gaps.
#[derive(Clone, Debug)]
enum Piece {
    Text(String),
    Pointer(String),
}

fn parse_target(target: &str, max_topic_len: usize) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = target;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or_else(|| format!("'{target}': '{{' without '}}'"))? + open;
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let pointer = &rest[open + 1..close];
        if pointer.is_empty() {
            return Err(format!("'{target}': '{{}}' names no pointer"));
        }
        check_pointer(pointer)?;
        pieces.push(Piece::Pointer(pointer.to_owned()));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("'{target}': '}}' without '{{'"));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
        validate_topic(target, max_topic_len).map_err(|e| e.to_string())?;
    }
    Ok(pieces)
}

fn fill_target(pieces: &[Piece], record: Record<'_>, max_topic_len: usize) -> Option<String> {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Pointer(ptr) => match record.pointer(ptr)?.as_ref() {
                Value::String(s) => out.push_str(&s.to_lowercase()),
                Value::Number(n) if n.is_i64() || n.is_u64() => out.push_str(&n.to_string()),
                _ => return None,
            },
        }
    }
    validate_topic(&out, max_topic_len).ok().map(|()| out)
}

/// A record as the rules read it: in place, or as a `serde_json::Value` (the two read alike).
#[derive(Clone, Copy)]
enum Record<'r> {
    InPlace(TapeNode<'r>),
    Value(&'r Value),
}

impl<'r> Record<'r> {
    /// The value at JSON pointer `ptr`.
    fn pointer(&self, ptr: &str) -> Option<Cow<'r, Value>> {
        match self {
            Record::InPlace(node) => node.pointer(ptr).map(|n| n.to_value()),
            Record::Value(v) => v.pointer(ptr).map(Cow::Borrowed),
        }
    }
}

/// A record that passed every check: how many schemas checked it, and where it goes.
struct Pass {
    validated: u64,
    to: Destination,
}

enum Destination {
    /// No route covers its topic.
    AsPublished,
    /// Route `.0` covers it and no rule matched.
    Unmatched(usize),
    Category {
        route: usize,
        target: String,
        rule: Arc<str>,
    },
}

struct CompiledSchema {
    pattern: Pattern,
    /// Checks a record as a `serde_json::Value`, and names its errors.
    validator: jsonschema::Validator,
    /// The same schema over a record read in place (see [`crate::json_tape`]).
    on_tapes: jsonschema::Validator<TapeJson>,
    dead_letter: Option<Arc<str>>,
}

struct CompiledRule {
    name: Arc<str>,
    when: Vec<(String, Test)>,
    target: Vec<Piece>,
}

struct CompiledRoute {
    pattern: Pattern,
    rules: Vec<CompiledRule>,
    unmatched: Option<Arc<str>>,
    round_series: Option<String>,
}

/// One schema error: where in the record (a JSON pointer) and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub reason: String,
}

/// Why a record was refused: its topic, its errors (at most `max_reported_errors`) and how many
/// there were in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub topic: String,
    pub violations: Vec<Violation>,
    pub total: usize,
    /// Where a copy goes.
    pub dead_letter: Option<Arc<str>>,
}

impl Refusal {
    /// The error the publisher gets.
    pub fn error(&self) -> CoreError {
        CoreError::SchemaViolation { topic: self.topic.clone(), violations: self.violations.clone(), total: self.total }
    }
}

/// What the server stamps on a categorised record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The intake's numbering (one per server, from 1; never repeated while the server runs).
    pub seq: u64,
    /// The server time the record was taken.
    pub time: u64,
    /// The open round of the route's round series, 0 when none.
    pub tick: u64,
    /// The topic the record was published on.
    pub from: Arc<str>,
    /// The rule that matched; empty when none did.
    pub rule: Arc<str>,
}

/// Where a record goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub topic: String,
    /// Present when a route took the record.
    pub envelope: Option<Envelope>,
    /// The route's round series, for the engine to fill `envelope.tick`.
    pub round_series: Option<String>,
}

/// Counters of the intake since the server started (a replacement of the rule set keeps them;
/// rules are counted by `<route topic>/<rule name>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IntakeStats {
    /// Records checked against a schema.
    pub validated: u64,
    /// Records refused, in all, per topic and per publisher (`namespace/agent`).
    pub refused: u64,
    pub refused_by_topic: BTreeMap<String, u64>,
    pub refused_by_publisher: BTreeMap<String, u64>,
    /// Refused records copied to a dead-letter topic.
    pub dead_lettered: u64,
    /// Records a rule categorised, in all and per rule.
    pub categorised: u64,
    pub matched_by_rule: BTreeMap<String, u64>,
    /// Records of an intake topic no rule matched.
    pub unmatched: u64,
}

/// The rule set in force, compiled, with its version and counters.
#[derive(Default)]
pub struct Intake {
    version: u64,
    set: RuleSet,
    schemas: Vec<CompiledSchema>,
    routes: Vec<CompiledRoute>,
    seq: u64,
    stats: IntakeStats,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").field("version", &self.version).field("set", &self.set).finish()
    }
}

fn invalid(reason: String) -> CoreError {
    CoreError::Invalid { what: "intake rule set", reason }
}

impl Intake {
    /// Compiles `set` as version `version`: every schema, pattern, pointer and target checked, the
    /// first problem named by its place.
    pub fn compile(
        set: RuleSet,
        version: u64,
        limits: &IntakeSettings,
        max_topic_len: usize,
    ) -> Result<Intake, CoreError> {
        if set.schemas.len() > limits.max_schemas {
            return Err(invalid(format!(
                "schemas: {} schemas, at most {} (intake.max_schemas)",
                set.schemas.len(),
                limits.max_schemas
            )));
        }
        if set.routes.len() > limits.max_rules {
            return Err(invalid(format!(
                "routes: {} routes, at most {} (intake.max_rules)",
                set.routes.len(),
                limits.max_rules
            )));
        }
        let topic = |place: &str, t: &str| {
            validate_topic(t, max_topic_len).map_err(|e| invalid(format!("{place}: {e}"))).map(|()| Arc::<str>::from(t))
        };
        let mut schemas = Vec::with_capacity(set.schemas.len());
        for (i, s) in set.schemas.iter().enumerate() {
            let place = format!("schemas[{i}]");
            let pattern =
                Pattern::parse(&s.topic, max_topic_len).map_err(|e| invalid(format!("{place}.topic: {e}")))?;
            let bytes = s.schema.to_string().len();
            if bytes > limits.max_schema_bytes {
                return Err(invalid(format!(
                    "{place}.schema: {bytes} bytes, at most {} (intake.max_schema_bytes)",
                    limits.max_schema_bytes
                )));
            }
            let schema_error = |e: jsonschema::ValidationError| {
                invalid(format!("{place}.schema{}: {e}", pointer_suffix(&e.instance_path().to_string())))
            };
            let validator = jsonschema::validator_for(&s.schema).map_err(schema_error)?;
            let on_tapes = jsonschema::options_for::<TapeJson>().build(&s.schema).map_err(schema_error)?;
            let dead_letter =
                s.dead_letter.as_deref().map(|t| topic(&format!("{place}.dead_letter"), t)).transpose()?;
            if let Some(dl) = &dead_letter {
                if pattern.matches(dl) {
                    return Err(invalid(format!("{place}.dead_letter: '{dl}' is covered by the schema itself")));
                }
            }
            schemas.push(CompiledSchema { pattern, validator, on_tapes, dead_letter });
        }
        let mut routes = Vec::with_capacity(set.routes.len());
        for (i, r) in set.routes.iter().enumerate() {
            let place = format!("routes[{i}]");
            let pattern =
                Pattern::parse(&r.topic, max_topic_len).map_err(|e| invalid(format!("{place}.topic: {e}")))?;
            if r.rules.len() > limits.max_rules {
                return Err(invalid(format!(
                    "{place}.rules: {} rules, at most {} (intake.max_rules)",
                    r.rules.len(),
                    limits.max_rules
                )));
            }
            let mut rules = Vec::with_capacity(r.rules.len());
            for (j, rule) in r.rules.iter().enumerate() {
                let place = format!("{place}.rules[{j}]");
                let when = rule
                    .when
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        p.compile()
                            .map(|t| (p.pointer.clone(), t))
                            .map_err(|e| invalid(format!("{place}.when[{k}].{e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let target =
                    parse_target(&rule.target, max_topic_len).map_err(|e| invalid(format!("{place}.target: {e}")))?;
                let name = if rule.name.is_empty() { format!("rule{j}") } else { rule.name.clone() };
                rules.push(CompiledRule { name: format!("{}/{name}", r.topic).into(), when, target });
            }
            let unmatched = r.unmatched.as_deref().map(|t| topic(&format!("{place}.unmatched"), t)).transpose()?;
            routes.push(CompiledRoute { pattern, rules, unmatched, round_series: r.round_series.clone() });
        }
        Ok(Intake { version, set, schemas, routes, seq: 0, stats: IntakeStats::default() })
    }

    /// Takes `next` in place of the set in force; numbering and counters go on.
    pub fn replace(&mut self, mut next: Intake) {
        next.seq = self.seq;
        next.stats = std::mem::take(&mut self.stats);
        *self = next;
    }

    /// The version of the set in force (1: the file's, unless a replacement was kept).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The set in force, as given.
    pub fn rule_set(&self) -> &RuleSet {
        &self.set
    }

    pub fn stats(&self) -> &IntakeStats {
        &self.stats
    }

    /// Whether any rule applies at all (the publish path skips the intake otherwise).
    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty() && self.routes.is_empty()
    }

    /// Takes a record published on `topic` by `publisher` (`(namespace, agent)`) at `now`: checks
    /// it, then categorises it. `Ok(None)`: no rule concerns it, route it as published.
    pub fn take(
        &mut self,
        now: u64,
        publisher: (&str, &str),
        topic: &str,
        payload: &[u8],
        limits: &IntakeSettings,
        max_topic_len: usize,
    ) -> Result<Option<Routed>, Refusal> {
        let (schema, route) = (self.schema_of(topic), self.route_of(topic));
        if schema.is_none() && route.is_none() {
            return Ok(None);
        }
        // Most records pass: read in place, such a record is decided without building its `Value`.
        if let Parsed::Tape(tape) = Tape::parse(payload) {
            if let Some(pass) = self.passes(tape.root(), schema, route, max_topic_len) {
                return Ok(self.apply(now, topic, pass));
            }
        }
        // Not JSON, a name given twice, or refused: the record as a `Value` decides, and names the
        // errors of a refusal.
        self.take_value(now, publisher, (topic, payload), (schema, route), limits, max_topic_len)
    }

    /// [`Intake::take`] reading the record as a `serde_json::Value`, given the schema and the route
    /// covering its topic.
    fn take_value(
        &mut self,
        now: u64,
        publisher: (&str, &str),
        (topic, payload): (&str, &[u8]),
        (schema, route): (Option<usize>, Option<usize>),
        limits: &IntakeSettings,
        max_topic_len: usize,
    ) -> Result<Option<Routed>, Refusal> {
        let record: Option<Value> = serde_json::from_slice(payload).ok();
        if let Some(i) = schema {
            self.check(i, topic, publisher, record.as_ref(), limits)?;
        }
        let Some(r) = route else { return Ok(None) };
        let Some(record) = record else {
            // Not JSON and no schema asked for it: no predicate can hold.
            return Ok(Some(self.unmatched(now, r, topic)));
        };
        let Some((target, rule)) = self.pick(r, Record::Value(&record), max_topic_len) else {
            return Ok(Some(self.unmatched(now, r, topic)));
        };
        if let Some(i) = self.schema_of(&target) {
            self.check(i, &target, publisher, Some(&record), limits)?;
        }
        Ok(Some(self.categorised(now, r, topic, target, rule)))
    }

    /// The schema covering `topic`: the first whose pattern matches.
    fn schema_of(&self, topic: &str) -> Option<usize> {
        self.schemas.iter().position(|s| s.pattern.matches(topic))
    }

    /// The route covering `topic`: the first whose pattern matches.
    fn route_of(&self, topic: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.pattern.matches(topic))
    }

    /// What becomes of a record read in place that every check passes; `None` when one does not
    /// (the caller reads the record as a `Value` to name the errors). Changes nothing.
    fn passes(
        &self,
        record: TapeNode<'_>,
        schema: Option<usize>,
        route: Option<usize>,
        max_topic_len: usize,
    ) -> Option<Pass> {
        let valid = |i: usize| self.schemas[i].on_tapes.is_valid(record);
        if schema.is_some_and(|i| !valid(i)) {
            return None;
        }
        let validated = u64::from(schema.is_some());
        let Some(r) = route else { return Some(Pass { validated, to: Destination::AsPublished }) };
        let Some((target, rule)) = self.pick(r, Record::InPlace(record), max_topic_len) else {
            return Some(Pass { validated, to: Destination::Unmatched(r) });
        };
        let target_schema = self.schema_of(&target);
        if target_schema.is_some_and(|i| !valid(i)) {
            return None;
        }
        let validated = validated + u64::from(target_schema.is_some());
        Some(Pass { validated, to: Destination::Category { route: r, target, rule } })
    }

    /// Counts and routes a record that passed.
    fn apply(&mut self, now: u64, topic: &str, pass: Pass) -> Option<Routed> {
        self.stats.validated += pass.validated;
        match pass.to {
            Destination::AsPublished => None,
            Destination::Unmatched(r) => Some(self.unmatched(now, r, topic)),
            Destination::Category { route, target, rule } => Some(self.categorised(now, route, topic, target, rule)),
        }
    }

    /// The first rule of route `r` whose predicates all hold, with the target it names.
    fn pick(&self, r: usize, record: Record<'_>, max_topic_len: usize) -> Option<(String, Arc<str>)> {
        self.routes[r].rules.iter().find_map(|rule| {
            rule.when
                .iter()
                .all(|(ptr, t)| t.holds(record.pointer(ptr).as_deref()))
                .then(|| fill_target(&rule.target, record, max_topic_len).map(|t| (t, rule.name.clone())))
                .flatten()
        })
    }

    fn categorised(&mut self, now: u64, r: usize, topic: &str, target: String, rule: Arc<str>) -> Routed {
        self.stats.categorised += 1;
        *self.stats.matched_by_rule.entry(rule.to_string()).or_default() += 1;
        let round_series = self.routes[r].round_series.clone();
        Routed { topic: target, envelope: Some(self.envelope(now, topic, rule)), round_series }
    }

    fn envelope(&mut self, now: u64, from: &str, rule: Arc<str>) -> Envelope {
        self.seq += 1;
        Envelope { seq: self.seq, time: now, tick: 0, from: from.into(), rule }
    }

    fn unmatched(&mut self, now: u64, r: usize, topic: &str) -> Routed {
        self.stats.unmatched += 1;
        let route = &self.routes[r];
        let (target, round_series) = (route.unmatched.clone(), route.round_series.clone());
        match target {
            Some(t) => {
                Routed { topic: t.to_string(), envelope: Some(self.envelope(now, topic, "".into())), round_series }
            }
            None => Routed { topic: topic.to_owned(), envelope: None, round_series: None },
        }
    }

    fn check(
        &mut self,
        i: usize,
        topic: &str,
        (ns, agent): (&str, &str),
        record: Option<&Value>,
        limits: &IntakeSettings,
    ) -> Result<(), Refusal> {
        self.stats.validated += 1;
        let s = &self.schemas[i];
        let (violations, total) = match record {
            None => (vec![Violation { path: String::new(), reason: "the record is not JSON".into() }], 1),
            Some(v) if s.validator.is_valid(v) => return Ok(()),
            Some(v) => {
                let mut all = s
                    .validator
                    .iter_errors(v)
                    .map(|e| Violation { path: e.instance_path().to_string(), reason: e.to_string() });
                let shown: Vec<Violation> = all.by_ref().take(limits.max_reported_errors).collect();
                let total = shown.len() + all.count();
                (shown, total)
            }
        };
        let refusal = Refusal { topic: topic.to_owned(), violations, total, dead_letter: s.dead_letter.clone() };
        self.stats.refused += 1;
        *self.stats.refused_by_topic.entry(topic.to_owned()).or_default() += 1;
        // Named only on a refusal: the accepted path allocates nothing for it.
        let publisher = format!("{ns}/{agent}");
        let counted = &mut self.stats.refused_by_publisher;
        let known = counted.contains_key(&publisher) || counted.len() < limits.max_counted_publishers;
        *counted.entry(if known { publisher } else { "*".into() }).or_default() += 1;
        if refusal.dead_letter.is_some() {
            self.stats.dead_lettered += 1;
        }
        Err(refusal)
    }
}

fn pointer_suffix(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!(" at {p}")
    }
}

/// The rule set in force, its version and the counters (the `Intake` service's answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeView {
    pub version: u64,
    pub set: RuleSet,
    pub stats: IntakeStats,
}

/// A replacement rule set as it is kept durably (a setting): the set and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeImage {
    pub version: u64,
    pub set: RuleSet,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> IntakeSettings {
        IntakeSettings::default()
    }

    fn set(v: Value) -> RuleSet {
        serde_json::from_value(v).expect("rule set")
    }

    fn compiled(v: Value) -> Intake {
        Intake::compile(set(v), 1, &settings(), 256).expect("compiles")
    }

    fn take(i: &mut Intake, topic: &str, record: Value) -> Result<Option<Routed>, Refusal> {
        i.take(7, ("default", "a"), topic, record.to_string().as_bytes(), &settings(), 256)
    }

    fn market() -> Intake {
        compiled(json!({
            "schemas": [{"topic": "intake", "schema": {"type": "object", "required": ["kind"],
                "properties": {"kind": {"type": "string"}, "px": {"type": "number"}}}, "dead_letter": "dead"}],
            "routes": [{"topic": "intake", "unmatched": "other", "rules": [
                {"name": "md", "when": [{"pointer": "/kind", "equals": "tick"}, {"pointer": "/symbol", "exists": true}],
                 "target": "market_data.{/symbol}"},
                {"name": "exec", "when": [{"pointer": "/kind", "one_of": ["fill", "cancel"]}], "target": "execution_result"},
                {"name": "risk", "when": [{"pointer": "/var", "min": 0, "max": 1}], "target": "risk_metrics"},
            ]}]
        }))
    }

    #[test]
    fn a_record_failing_its_schema_is_refused_with_path_and_reason_and_counted() {
        let mut i = market();
        let r = take(&mut i, "intake", json!({"kind": 3, "px": "x"})).unwrap_err();
        assert_eq!(r.topic, "intake");
        assert_eq!(r.total, 2);
        let paths: Vec<&str> = r.violations.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"/kind") && paths.contains(&"/px"), "{paths:?}");
        assert!(r.violations.iter().all(|v| !v.reason.is_empty()));
        assert_eq!(r.dead_letter.as_deref(), Some("dead"));
        assert!(matches!(r.error(), CoreError::SchemaViolation { total: 2, .. }));
        let missing = take(&mut i, "intake", json!({})).unwrap_err();
        assert_eq!(missing.violations[0].path, "");
        let not_json = i.take(7, ("default", "b"), "intake", b"not json", &settings(), 256).unwrap_err();
        assert_eq!(not_json.violations[0].reason, "the record is not JSON");
        let s = i.stats();
        assert_eq!((s.validated, s.refused, s.dead_lettered), (3, 3, 3));
        assert_eq!(s.refused_by_topic["intake"], 3);
        assert_eq!((s.refused_by_publisher["default/a"], s.refused_by_publisher["default/b"]), (2, 1));
    }

    #[test]
    fn a_topic_under_a_schema_only_passes_valid_records_and_names_the_errors_of_the_others() {
        // No route: valid records are checked in place, the others as values.
        let mut i = compiled(json!({"schemas": [{"topic": "px", "schema": {"type": "object", "required": ["px"],
            "properties": {"px": {"type": "number", "minimum": 0}}}}]}));
        let mut publish = |bytes: &[u8]| i.take(7, ("default", "a"), "px", bytes, &settings(), 256);
        assert_eq!(publish(br#"{"px": 1.5, "note": "caf\u00e9"}"#), Ok(None));
        let refused = publish(br#"{"px": -1}"#).unwrap_err();
        assert_eq!((refused.violations[0].path.as_str(), refused.total), ("/px", 1));
        assert_eq!(publish(b"[1, 2").unwrap_err().violations[0].reason, "the record is not JSON");
        // A name given twice: the last value counts, as for any JSON value.
        assert_eq!(publish(br#"{"px": -1, "px": 2}"#), Ok(None));
        assert_eq!(publish(br#"{"px": 2, "px": -1}"#).unwrap_err().violations[0].path, "/px");
        let s = i.stats();
        assert_eq!((s.validated, s.refused), (5, 3));
    }

    proptest::proptest! {
        /// Records read in place end as they end read as values: the same verdict, errors,
        /// routing, envelopes and counters.
        #[test]
        fn reading_in_place_decides_as_reading_a_value(records in proptest::collection::vec(record(), 1..12)) {
            let (mut fast, mut reference) = (market_with_category_schema(), market_with_category_schema());
            for (topic, bytes) in &records {
                let by_tape = fast.take(7, ("default", "a"), topic, bytes, &settings(), 256);
                let covering = (reference.schema_of(topic), reference.route_of(topic));
                let by_value = reference.take_value(7, ("default", "a"), (topic, bytes), covering, &settings(), 256);
                proptest::prop_assert_eq!(by_tape, by_value, "{} on {}", String::from_utf8_lossy(bytes), topic);
            }
            proptest::prop_assert_eq!(fast.stats(), reference.stats());
        }
    }

    /// The market rule set, with a schema on one category topic and one on a topic no route reads.
    fn market_with_category_schema() -> Intake {
        compiled(json!({
            "schemas": [
                {"topic": "intake", "schema": {"type": "object", "required": ["kind"],
                    "properties": {"kind": {"type": "string"}, "px": {"type": "number"}}}, "dead_letter": "dead"},
                {"topic": "market_data.*", "schema": {"required": ["px"], "properties": {"px": {"minimum": 0}}}},
                {"topic": "plain", "schema": {"type": "array", "items": {"type": "integer"}}}
            ],
            "routes": [{"topic": "intake", "rules": [
                {"name": "md", "when": [{"pointer": "/kind", "equals": "tick"}, {"pointer": "/symbol", "exists": true}],
                 "target": "market_data.{/symbol}"},
                {"name": "exec", "when": [{"pointer": "/kind", "one_of": ["fill", "cancel"]}], "target": "execution_result"},
                {"name": "risk", "when": [{"pointer": "/var", "min": 0, "max": 1}], "target": "risk_metrics"},
            ]}, {"topic": "loose", "unmatched": "other", "rules": [
                {"name": "first", "when": [{"pointer": "/0", "equals": 1}], "target": "first.{/1}"}]}]
        }))
    }

    /// A topic and a record: mostly JSON near the rules' shapes, some not JSON, some naming a
    /// member twice.
    fn record() -> impl proptest::strategy::Strategy<Value = (String, Vec<u8>)> {
        use proptest::prelude::*;
        let topic = prop_oneof![Just("intake"), Just("plain"), Just("loose"), Just("elsewhere")];
        let scalar = prop_oneof![
            Just(json!("tick")),
            Just(json!("fill")),
            Just(json!("BTC")),
            Just(json!("Eth")),
            Just(json!(1)),
            Just(json!(-3)),
            Just(json!(0.5)),
            Just(json!(2.0)),
            Just(json!(null)),
            Just(json!(true)),
            Just(json!("")),
        ];
        let member = (prop_oneof![Just("kind"), Just("symbol"), Just("px"), Just("var"), Just("n")], scalar.clone());
        let object = proptest::collection::vec(member, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).to_string());
        let array = proptest::collection::vec(scalar, 0..4).prop_map(|a| Value::Array(a).to_string());
        let text = prop_oneof![
            6 => object,
            2 => array,
            1 => Just(r#"{"kind": 1, "kind": "tick", "symbol": "X1"}"#.to_owned()),
            1 => Just(r#"{"kind": "tick", "symbol": "ok", "px": 1, "px": -1}"#.to_owned()),
            1 => Just("{not json".to_owned()),
        ];
        (topic, text).prop_map(|(t, x)| (t.to_owned(), x.into_bytes()))
    }

    #[test]
    fn reported_errors_are_capped_but_all_are_counted() {
        let limits = IntakeSettings { max_reported_errors: 1, ..settings() };
        let mut i = Intake::compile(
            set(json!({"schemas": [{"topic": "t", "schema": {"required": ["a", "b", "c"]}}]})),
            1,
            &limits,
            256,
        )
        .unwrap();
        let r = i.take(0, ("ns", "p"), "t", b"{}", &limits, 256).unwrap_err();
        assert_eq!((r.violations.len(), r.total), (1, 3));
    }

    #[test]
    fn each_predicate_kind_categorises_and_the_first_matching_rule_wins() {
        let mut i = market();
        let md = take(&mut i, "intake", json!({"kind": "tick", "symbol": "BTC"})).unwrap().unwrap();
        assert_eq!(md.topic, "market_data.btc");
        let env = md.envelope.unwrap();
        assert_eq!((env.seq, env.time, &*env.from, &*env.rule), (1, 7, "intake", "intake/md"));
        // `exists` fails: on to the next rules, none of which match → unmatched.
        let un = take(&mut i, "intake", json!({"kind": "tick"})).unwrap().unwrap();
        assert_eq!((un.topic.as_str(), un.envelope.unwrap().seq), ("other", 2));
        assert_eq!(take(&mut i, "intake", json!({"kind": "cancel"})).unwrap().unwrap().topic, "execution_result");
        assert_eq!(take(&mut i, "intake", json!({"kind": "r", "var": 0.5})).unwrap().unwrap().topic, "risk_metrics");
        assert_eq!(take(&mut i, "intake", json!({"kind": "r", "var": 1})).unwrap().unwrap().topic, "risk_metrics");
        assert_eq!(take(&mut i, "intake", json!({"kind": "r", "var": 1.5})).unwrap().unwrap().topic, "other");
        assert_eq!(take(&mut i, "intake", json!({"kind": "r", "var": "0.5"})).unwrap().unwrap().topic, "other");
        // A pointer value that makes no topic: the rule does not match.
        assert_eq!(take(&mut i, "intake", json!({"kind": "tick", "symbol": "a b"})).unwrap().unwrap().topic, "other");
        let s = i.stats();
        assert_eq!((s.categorised, s.unmatched), (4, 4));
        assert_eq!(s.matched_by_rule["intake/risk"], 2);
        // Topics no rule covers pass untouched.
        assert_eq!(take(&mut i, "elsewhere", json!("anything")), Ok(None));
    }

    #[test]
    fn without_an_unmatched_topic_a_record_stays_on_the_intake_topic() {
        let mut i = compiled(
            json!({"routes": [{"topic": "in.>", "rules": [{"when": [{"pointer": "/a", "equals": 1.0}], "target": "one"}]}]}),
        );
        assert_eq!(take(&mut i, "in.x", json!({"a": 1})).unwrap().unwrap().topic, "one");
        let stay = take(&mut i, "in.x", json!({"a": 2})).unwrap().unwrap();
        assert_eq!((stay.topic.as_str(), stay.envelope), ("in.x", None));
        assert_eq!(i.stats().unmatched, 1);
    }

    #[test]
    fn a_categorised_record_meets_its_category_schema_too() {
        let mut i = compiled(json!({
            "schemas": [{"topic": "cat", "schema": {"required": ["x"]}}],
            "routes": [{"topic": "in", "rules": [{"target": "cat"}]}]
        }));
        let r = take(&mut i, "in", json!({"y": 1})).unwrap_err();
        assert_eq!(r.topic, "cat");
        assert!(take(&mut i, "in", json!({"x": 1})).is_ok());
    }

    #[test]
    fn an_invalid_rule_set_is_refused_naming_the_place() {
        let place = |v: Value| match Intake::compile(set(v), 2, &settings(), 256) {
            Err(CoreError::Invalid { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(place(json!({"schemas": [{"topic": "a", "schema": {}}, {"topic": "b", "schema": {"type": "nope"}}]}))
            .starts_with("schemas[1].schema"));
        assert!(place(json!({"schemas": [{"topic": "a..b", "schema": {}}]})).starts_with("schemas[0].topic"));
        assert!(place(json!({"schemas": [{"topic": "a", "schema": {"$ref": "http://example.com/s.json"}}]}))
            .starts_with("schemas[0].schema"));
        assert!(place(json!({"routes": [{"topic": "in", "rules": [{"target": "x"}, {"when": [{"pointer": "a", "exists": true}], "target": "x"}]}]}))
            .starts_with("routes[0].rules[1].when[0].pointer"));
        assert!(place(json!({"routes": [{"topic": "in", "rules": [{"when": [{"pointer": "/a", "exists": true, "equals": 1}], "target": "x"}]}]}))
            .starts_with("routes[0].rules[0].when[0]"));
        assert!(place(json!({"routes": [{"topic": "in", "rules": [{"when": [{"pointer": "/a", "min": 2, "max": 1}], "target": "x"}]}]}))
            .contains("above max"));
        assert!(place(json!({"routes": [{"topic": "in", "rules": [{"target": "md.{/s"}]}]}))
            .starts_with("routes[0].rules[0].target"));
        assert!(place(json!({"routes": [{"topic": "in", "rules": [{"target": "bad topic"}]}]}))
            .starts_with("routes[0].rules[0].target"));
        assert!(place(json!({"schemas": [{"topic": "a.>", "schema": {}, "dead_letter": "a.dead"}]}))
            .starts_with("schemas[0].dead_letter"));
        let few = IntakeSettings { max_schemas: 1, ..settings() };
        assert!(Intake::compile(
            set(json!({"schemas": [{"topic": "a", "schema": {}}, {"topic": "b", "schema": {}}]})),
            1,
            &few,
            256
        )
        .is_err());
    }

    #[test]
    fn a_replacement_keeps_numbering_and_counters() {
        let mut i = market();
        take(&mut i, "intake", json!({"kind": "fill"})).unwrap();
        let next = Intake::compile(
            set(json!({"routes": [{"topic": "intake", "rules": [{"target": "all"}]}]})),
            2,
            &settings(),
            256,
        )
        .unwrap();
        i.replace(next);
        assert_eq!(i.version(), 2);
        let r = take(&mut i, "intake", json!({"kind": 1})).unwrap().unwrap();
        assert_eq!((r.topic.as_str(), r.envelope.unwrap().seq), ("all", 2));
        assert_eq!(i.stats().categorised, 2);
    }
}
