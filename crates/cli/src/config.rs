//! The server's settings, read in layers: defaults, then the TOML file, then `LOCKSTEP_…`
//! environment variables, then command-line flags (a later layer wins, key by key).
//!
//! There is one description of the settings, [`ServerConfig`], which holds the engine's
//! [`lockstep_core::Config`]; both deserialize with serde, every field optional (a missing one
//! keeps its default) and unknown ones refused. Adding a setting means adding a field to one of
//! them: it is then settable from the file, and from the environment in its general form.
//!
//! How the layers meet: each layer writes values into one TOML document by key path
//! (`listen`, `engine.heartbeat_interval_ms`, `limits.max_interests`,
//! `breaker_roles.trader.failure_threshold`), and the document is deserialized once. A layering
//! crate could do the same, but this takes a few functions over the `toml` crate the file needs
//! anyway, keeps the file's error messages, and names the key of any bad value
//! (`serde_path_to_error`) whichever layer gave it.
//!
//! The file's layout (documented in the README): server keys at the top, the engine's own keys in
//! `[engine]`, and the engine's sections (`[limits]`, `[commands]`, `[health]`, `[breaker]`,
//! `[breaker_roles.NAME]`, `[breaker_agents.ID]`) at the top level too. [`ServerConfig`] nests
//! them all under `engine`, so before deserializing, the sections are moved into `[engine]`
//! (see [`nest_engine_sections`]); which keys are sections is read from [`Config`] itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use lockstep_core::Config;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The default address: loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

/// The default data directory, relative to where the server is started.
pub const DEFAULT_DATA_DIR: &str = "lockstep-data";

/// Environment variables of the general form `LOCKSTEP_<SECTION>__<KEY>` set any key of the file:
/// segments are separated by `__` and lowercased (`LOCKSTEP_LIMITS__MAX_INTERESTS=8`,
/// `LOCKSTEP_ENGINE__LOST_RETENTION_MS=60000`). Names without `__` are not read this way: the
/// documented ones (`LOCKSTEP_LISTEN`...) belong to `serve`'s flags.
const ENV_PREFIX: &str = "LOCKSTEP_";
const ENV_SEPARATOR: &str = "__";

/// Everything `lockstep serve` runs with. See docs/PROTOCOL.md for the engine's keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address agents connect to (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serve the Admin (operators') API here only, instead of on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// Require this token on every Admin call.
    pub admin_token: Option<String>,
    /// Serve /metrics, /healthz and /readyz over HTTP here; unset: no HTTP listener.
    pub http_listen: Option<SocketAddr>,
    /// Serve agent sessions over the lean transport here too (length-delimited protobuf frames
    /// over TCP, for agents on this host; no TLS); unset: gRPC only.
    pub lean_listen: Option<SocketAddr>,
    /// The file holding the secret tokens are signed with (at least 32 bytes): when set, every
    /// call on the agents' and operators' services must present a token (see docs/PROTOCOL.md,
    /// "Authentication"); unset: open access.
    pub token_secret_file: Option<PathBuf>,
    /// The one opt-in for listeners reachable beyond loopback without authentication (agents',
    /// operators' or HTTP); `http_public` is its former name, still read.
    #[serde(alias = "http_public")]
    pub allow_public: bool,
    /// Where durable state is kept (`DIR/lockstep.db`).
    pub data_dir: PathBuf,
    /// Where `lockstep backup` may write its copies (inside this directory); unset: the data
    /// directory.
    pub backup_dir: Option<PathBuf>,
    /// Keep nothing on disk.
    pub in_memory: bool,
    /// When a commit is durable.
    pub synchronous: Synchronous,
    /// How many connections are kept open, and for how long an unused one (`[connections]`).
    pub connections: lockstep_server::listener::ConnectionLimits,
    /// TLS on every listener (`[tls]`: `cert_file`, `key_file`, optional `client_ca_file` and
    /// `client_certificates`); unset: plain TCP.
    pub tls: Option<lockstep_server::tls::TlsFiles>,
    /// How log lines are written: `text` (for people; coloured only on a terminal) or `json`
    /// (one object per line, for log collectors).
    pub log_format: LogFormat,
    /// The engine's settings.
    pub engine: Config,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            admin_listen: None,
            admin_token: None,
            http_listen: None,
            lean_listen: None,
            token_secret_file: None,
            allow_public: false,
            data_dir: DEFAULT_DATA_DIR.into(),
            backup_dir: None,
            in_memory: false,
            synchronous: Synchronous::Normal,
            connections: Default::default(),
            tls: None,
            log_format: LogFormat::Text,
            engine: Config::default(),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields.
    Json,
}

/// When a commit is durable (SQLite's `synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a crash or kill of lockstep.
    #[default]
    #[serde(alias = "NORMAL")]
    Normal,
    /// Also survives a power loss, at the cost of an fsync per commit.
    #[serde(alias = "FULL")]
    Full,
}

impl From<Synchronous> for lockstep_server::Durability {
    fn from(s: Synchronous) -> Self {
        match s {
            Synchronous::Normal => lockstep_server::Durability::Normal,
            Synchronous::Full => lockstep_server::Durability::Full,
        }
    }
}

impl ServerConfig {
    /// Where the server keeps its state.
    pub fn storage(&self) -> lockstep_server::Storage {
        if self.in_memory {
            lockstep_server::Storage::InMemory
        } else {
            lockstep_server::Storage::DataDir { dir: self.data_dir.clone(), durability: self.synchronous.into() }
        }
    }

    /// The settings a document (in the file's layout, all layers applied) describes.
    pub fn from_document(document: Table) -> anyhow::Result<ServerConfig> {
        let nested = nest_engine_sections(document)?;
        serde_path_to_error::deserialize(Value::Table(nested)).map_err(|e| {
            // The key as the file spells it, and the message without toml's own (nested) key.
            let key = file_key(&e.path().to_string());
            anyhow::anyhow!("`{key}`: {}", e.into_inner().message())
        })
    }
}

/// The file at `path` as a document (its syntax checked; its keys are checked once every layer is
/// applied, by [`ServerConfig::from_document`]).
pub fn read_file(path: &Path) -> anyhow::Result<Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    text.parse().with_context(|| format!("invalid config file {}", path.display()))
}

/// `value` as a TOML value.
pub fn toml_value(value: impl Serialize) -> anyhow::Result<Value> {
    Value::try_from(value).context("not a configuration value")
}

/// Sets `key` (a dotted path in the file's layout) to `value` in `document`.
pub fn set(document: &mut Table, key: &str, value: impl Serialize) -> anyhow::Result<()> {
    let value = toml_value(value).with_context(|| format!("`{key}`"))?;
    let segments: Vec<&str> = key.split('.').collect();
    let (last, parents) = segments.split_last().expect("split gives at least one segment");
    let mut table = document;
    for segment in parents {
        let entry = table.entry(segment.to_string()).or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => bail!("`{key}`: `{segment}` is a value, not a section"),
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Applies the environment variables of the general form `LOCKSTEP_<SECTION>__<KEY>` among `vars`.
/// A value is read as a TOML value (a number, `true`, `[1, 2]`, `"quoted text"`), else as text.
pub fn apply_env(document: &mut Table, vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<()> {
    for (name, text) in vars {
        let Some(rest) = name.strip_prefix(ENV_PREFIX).filter(|rest| rest.contains(ENV_SEPARATOR)) else {
            continue;
        };
        let segments: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            bail!("{name}: every `__`-separated part must name a key");
        }
        set(document, &segments.join("."), env_value(&text)).with_context(|| format!("from {name}"))?;
    }
    Ok(())
}

/// `text` as a TOML value if it is one (`8`, `true`), else as text (`disconnect`, `0.0.0.0:7600`).
fn env_value(text: &str) -> Value {
    let parsed = format!("value = {text}").parse::<Table>().ok().filter(|t| t.len() == 1);
    parsed.and_then(|mut t| t.remove("value")).unwrap_or_else(|| Value::String(text.to_owned()))
}

/// The names of [`Config`]'s sections: its fields that are tables.
fn engine_sections() -> Vec<String> {
    let Ok(Value::Table(defaults)) = Value::try_from(Config::default()) else {
        unreachable!("the engine's settings are a TOML table")
    };
    defaults.into_iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k).collect()
}

/// Moves the engine's sections, written at the top level of the file, into `[engine]`, where
/// [`ServerConfig`] expects them.
fn nest_engine_sections(mut document: Table) -> anyhow::Result<Table> {
    let mut engine = match document.remove("engine") {
        None => Table::new(),
        Some(Value::Table(t)) => t,
        Some(_) => bail!("`engine` must be a section ([engine])"),
    };
    for section in engine_sections() {
        if let Some(value) = document.remove(&section) {
            if engine.insert(section.clone(), value).is_some() {
                bail!("`{section}` is given twice: as [{section}] and as [engine.{section}]");
            }
        }
    }
    document.insert("engine".into(), Value::Table(engine));
    Ok(document)
}

/// A key path of the nested document as the file spells it (`engine.limits.x` is `limits.x`).
fn file_key(path: &str) -> String {
    match path.strip_prefix("engine.") {
        Some(rest) if engine_sections().iter().any(|s| rest.split('.').next() == Some(s.as_str())) => rest.into(),
        _ => path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::OverflowPolicy;

    fn parse(text: &str) -> anyhow::Result<ServerConfig> {
        ServerConfig::from_document(text.parse().expect("valid TOML"))
    }

    fn table(value: impl Serialize) -> Table {
        match Value::try_from(value).unwrap() {
            Value::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn file_values_override_defaults() {
        let c = parse(
            "listen = \"127.0.0.1:9000\"\n[engine]\nheartbeat_interval_ms = 250\noverflow_policy = \"disconnect\"\n[limits]\nmax_interests = 8\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.engine.heartbeat_interval_ms, 250);
        assert_eq!(c.engine.overflow_policy, OverflowPolicy::Disconnect);
        assert_eq!(c.engine.limits.max_interests, 8);
        assert_eq!(c.engine.limits.max_topic_len, Config::default().limits.max_topic_len);
        assert_eq!(c.engine.queue_capacity, Config::default().queue_capacity);
        assert_eq!(parse("").unwrap(), ServerConfig::default());
    }

    #[test]
    fn breaker_settings_layer_global_role_and_agent() {
        let c = parse(
            "[breaker]\nfailure_threshold = 3\n[breaker_roles.trader]\nrecovery_delay_ms = 7\n[breaker_agents.scanner]\nfailure_threshold = 9\n",
        )
        .unwrap()
        .engine;
        assert_eq!(c.breaker.failure_threshold, 3);
        assert_eq!(c.breaker.recovery_delay_ms, Config::default().breaker.recovery_delay_ms);
        assert_eq!(c.breaker_for("trader", "t1").recovery_delay_ms, 7);
        assert_eq!(c.breaker_for("trader", "t1").failure_threshold, 3);
        assert_eq!(c.breaker_for("scanner", "scanner").failure_threshold, 9);
        let err = parse("[breaker]\nthreshold = 3\n").unwrap_err().to_string();
        assert!(err.contains("breaker.threshold") && err.contains("unknown field"), "{err}");
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\nlisten").expect("the README has an example file") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed");
        let c = parse(&readme[start..end]).expect("the README's example parses");
        c.engine.validate().unwrap();
        assert_eq!(c.engine.breaker.failure_threshold, 5);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        for (text, key) in [
            ("[engine]\nheartbeat = 5\n", "engine.heartbeat"),
            ("listen_on = \"127.0.0.1:1\"\n", "listen_on"),
            ("[limits]\nmax_foo = 1\n", "limits.max_foo"),
            ("[engine]\noverflow_policy = \"lose\"\n", "engine.overflow_policy"),
            ("[limits]\nmax_interests = \"many\"\n", "limits.max_interests"),
            ("[health]\nhistory_len = -1\n", "health.history_len"),
            ("synchronous = \"sometimes\"\n", "synchronous"),
            ("[breaker_roles.trader]\njitter = 1\n", "breaker_roles.trader.jitter"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
        let err = parse("[engine]\noverflow_policy = \"lose\"\n").unwrap_err().to_string();
        assert!(err.contains("drop_oldest") && err.contains("disconnect"), "the choices are named: {err}");
        let err = parse("[limits]\nmax_interests = 1\n[engine.limits]\nmax_interests = 2\n").unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
    }

    #[test]
    fn earlier_spellings_still_read() {
        let c = parse("synchronous = \"FULL\"\n[engine]\noverflow_policy = \"drop-oldest\"\n").unwrap();
        assert_eq!(c.synchronous, Synchronous::Full);
        assert_eq!(c.engine.overflow_policy, OverflowPolicy::DropOldest);
    }

    #[test]
    fn env_overrides_the_file_and_flags_override_env() {
        let mut document: Table =
            "[engine]\nqueue_capacity = 10\nlease_intervals = 4\n[limits]\nmax_interests = 8\n".parse().unwrap();
        apply_env(
            &mut document,
            env(&[
                ("LOCKSTEP_ENGINE__QUEUE_CAPACITY", "20"),
                ("LOCKSTEP_LIMITS__MAX_INTERESTS", "9"),
                ("LOCKSTEP_ENGINE__OVERFLOW_POLICY", "disconnect"),
                ("LOCKSTEP_BREAKER_ROLES__TRADER__FAILURE_THRESHOLD", "2"),
                // Not of the general form: left to the flags that own them, or to other commands.
                ("LOCKSTEP_ADDR", "127.0.0.1:1"),
                ("LOCKSTEP_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        set(&mut document, "engine.queue_capacity", 30u64).unwrap();
        let c = ServerConfig::from_document(document).unwrap().engine;
        assert_eq!(c.queue_capacity, 30, "the flag wins over the variable and the file");
        assert_eq!(c.limits.max_interests, 9, "the variable wins over the file");
        assert_eq!(c.lease_intervals, 4, "the file wins over the default");
        assert_eq!(c.overflow_policy, OverflowPolicy::Disconnect);
        assert_eq!(c.breaker_for("trader", "t").failure_threshold, 2);

        let mut document = Table::new();
        apply_env(&mut document, env(&[("LOCKSTEP_LIMITS__MAX_INTERESTS", "lots")])).unwrap();
        let err = ServerConfig::from_document(document).unwrap_err().to_string();
        assert!(err.contains("`limits.max_interests`"), "{err}");
        let err = apply_env(&mut Table::new(), env(&[("LOCKSTEP_LIMITS____X", "1")])).unwrap_err();
        assert!(err.to_string().contains("LOCKSTEP_LIMITS____X"), "{err}");
    }

    #[test]
    fn env_values_are_toml_values_or_text() {
        assert_eq!(env_value("8"), Value::Integer(8));
        assert_eq!(env_value("true"), Value::Boolean(true));
        assert_eq!(env_value("\"123\""), Value::String("123".into()));
        assert_eq!(env_value("0.0.0.0:7600"), Value::String("0.0.0.0:7600".into()));
        assert_eq!(env_value("1\nlisten = 2"), Value::String("1\nlisten = 2".into()));
    }

    /// Every field of the engine's settings, at any depth, is read from the file: a document with
    /// every value changed from its default, laid out as the file is, reads back as exactly that.
    #[test]
    fn every_setting_can_be_set_from_the_file() {
        let defaults = table(ServerConfig::default());
        let mut changed = defaults.clone();
        change_every_value(&mut changed);
        let overrides =
            table(lockstep_core::breaker::BreakerOverrides { failure_threshold: Some(2), ..Default::default() });
        let engine = changed["engine"].as_table_mut().unwrap();
        engine["breaker_roles"].as_table_mut().unwrap().insert("trader".into(), overrides.clone().into());
        engine["breaker_agents"].as_table_mut().unwrap().insert("scanner".into(), overrides.into());
        changed.insert("admin_listen".into(), "127.0.0.1:7700".into());
        changed.insert("admin_token".into(), "secret".into());
        changed.insert("http_listen".into(), "127.0.0.1:7680".into());
        changed.insert("backup_dir".into(), "/var/backups/lockstep".into());

        // The file's layout: the engine's sections at the top level, its own keys in [engine].
        let mut file = changed.clone();
        let mut engine = file.remove("engine").unwrap().as_table().unwrap().clone();
        for section in engine_sections() {
            file.insert(section.clone(), engine.remove(&section).unwrap());
        }
        file.insert("engine".into(), engine.into());
        let read = parse(&toml::to_string(&file).unwrap()).unwrap();

        assert_eq!(table(&read), changed);
        assert_ne!(read.engine, Config::default());
        assert_eq!(read.engine.breaker_for("trader", "t").failure_threshold, 2);
    }

    /// Changes every leaf of `table` from its default: numbers grow, flags flip, texts and
    /// choices take another value.
    fn change_every_value(table: &mut Table) {
        for (key, value) in table.iter_mut() {
            match value {
                Value::Table(t) => change_every_value(t),
                Value::Integer(n) => *n += 1,
                Value::Boolean(b) => *b = !*b,
                Value::String(_) => {
                    *value = match key.as_str() {
                        "listen" => "0.0.0.0:9000",
                        "data_dir" => "/var/lib/lockstep",
                        "synchronous" => "full",
                        "overflow_policy" => "disconnect",
                        "event_time_policy" => "flag",
                        "log_format" => "json",
                        other => panic!("add a changed value for the text setting `{other}`"),
                    }
                    .into()
                }
                // Topic history's retention rules: none by default, one here.
                Value::Array(rules) if key == "retain" => rules.push(
                    self::table(lockstep_core::history::RetainRule {
                        pattern: "market.>".into(),
                        keep: lockstep_core::history::Keep::Store,
                        max_age_ms: 60_000,
                        ..Default::default()
                    })
                    .into(),
                ),
                // Event-time streams declared in the file: none by default, one of each here.
                Value::Array(specs) if key == "tickers" => specs.push(spec::<lockstep_core::ticker::TickerSpec>(
                    "id = 'bars'\ninputs = ['market.>']\noutput = 'bars'\nperiod_ms = 1000",
                )),
                Value::Array(specs) if key == "buffers" => specs.push(spec::<lockstep_core::latency::BufferSpec>(
                    "id = 'arm-x'\ntopic = 'telemetry.arm'\npointer = '/pose/x'\ncadence_ms = 100\noutput = 'arm.x'",
                )),
                // The intake's rule set declared in the file: empty by default, a schema and a
                // route here.
                Value::Array(specs) if key == "schemas" => specs.push(spec::<lockstep_core::intake::SchemaSpec>(
                    "topic = 'intake'\nschema = { type = 'object', required = ['kind'] }\ndead_letter = 'intake.dead'",
                )),
                Value::Array(specs) if key == "routes" => specs.push(spec::<lockstep_core::intake::RouteSpec>(
                    "topic = 'intake'\nunmatched = 'intake.other'\nround_series = 'bus'\n\
                     [[rules]]\nname = 'md'\ntarget = 'market_data.{/symbol}'\n\
                     when = [{ pointer = '/kind', equals = 'tick' }, { pointer = '/px', min = 0, max = 1e9 }]",
                )),
                other => panic!("add a changed value for `{key}` ({other:?})"),
            }
        }
    }

    /// A definition as the file gives it, with every default it leaves out filled in.
    fn spec<T: serde::de::DeserializeOwned + Serialize>(text: &str) -> Value {
        self::table(toml::from_str::<T>(text).unwrap()).into()
    }
}
