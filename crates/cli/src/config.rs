//! The server's settings: defaults, then a TOML file, then environment variables and flags (the
//! last one given wins).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use lockstep_core::breaker::BreakerOverrides;
use lockstep_core::{Config, OverflowPolicy};
use serde::Deserialize;

/// The default address: loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

/// The default data directory, relative to where the server is started.
pub const DEFAULT_DATA_DIR: &str = "lockstep-data";

/// The durability named by `synchronous` (`normal` when not given).
pub fn durability(name: Option<&str>) -> anyhow::Result<lockstep_server::Durability> {
    match name.unwrap_or("normal") {
        "normal" | "NORMAL" => Ok(lockstep_server::Durability::Normal),
        "full" | "FULL" => Ok(lockstep_server::Durability::Full),
        other => bail!("synchronous must be `normal` or `full`, not `{other}`"),
    }
}

/// The TOML file. Every field is optional; see docs/PROTOCOL.md for what each one bounds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    /// Where durable state is kept (see `serve --data-dir`).
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep nothing on disk.
    pub in_memory: Option<bool>,
    /// `normal` or `full` (see `serve --synchronous`).
    pub synchronous: Option<String>,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Circuit breaker settings for every agent...
    #[serde(default)]
    pub breaker: BreakerOverrides,
    /// ...changed per role (`[breaker_roles.trader]`)...
    #[serde(default)]
    pub breaker_roles: std::collections::BTreeMap<String, BreakerOverrides>,
    /// ...and per agent id (`[breaker_agents.scanner]`).
    #[serde(default)]
    pub breaker_agents: std::collections::BTreeMap<String, BreakerOverrides>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub heartbeat_interval_ms: Option<u64>,
    pub lease_intervals: Option<u32>,
    pub lost_retention_ms: Option<u64>,
    pub queue_capacity: Option<usize>,
    pub overflow_policy: Option<String>,
    pub default_sync_timeout_ms: Option<u64>,
    pub sync_retention_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_payload_bytes: Option<usize>,
    pub max_topic_len: Option<usize>,
    pub max_interests: Option<usize>,
    pub max_capabilities: Option<usize>,
    pub max_metadata_entries: Option<usize>,
    pub max_agents_per_namespace: Option<usize>,
    pub max_namespaces: Option<usize>,
    pub max_open_sync_points: Option<usize>,
    pub max_retained_sync_points: Option<usize>,
    pub max_sync_participants: Option<usize>,
    pub max_sync_payload_bytes: Option<usize>,
    pub max_sync_timeout_ms: Option<u64>,
    pub max_state_bytes: Option<usize>,
    pub max_delta_bytes: Option<usize>,
    pub max_watches: Option<usize>,
}

/// Parses an overflow policy name.
pub fn overflow_policy(name: &str) -> anyhow::Result<OverflowPolicy> {
    match name {
        "drop_oldest" | "drop-oldest" => Ok(OverflowPolicy::DropOldest),
        "disconnect" => Ok(OverflowPolicy::Disconnect),
        other => bail!("unknown overflow policy '{other}': use drop_oldest or disconnect"),
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The engine configuration this file describes, on top of the defaults.
    pub fn engine_config(&self) -> anyhow::Result<Config> {
        let mut c = Config::default();
        let e = &self.engine;
        macro_rules! set {
            ($target:expr, $value:expr) => {
                if let Some(v) = $value {
                    $target = v;
                }
            };
        }
        set!(c.heartbeat_interval_ms, e.heartbeat_interval_ms);
        set!(c.lease_intervals, e.lease_intervals);
        set!(c.lost_retention_ms, e.lost_retention_ms);
        set!(c.queue_capacity, e.queue_capacity);
        set!(c.default_sync_timeout_ms, e.default_sync_timeout_ms);
        set!(c.sync_retention_ms, e.sync_retention_ms);
        if let Some(p) = &e.overflow_policy {
            c.overflow_policy = overflow_policy(p)?;
        }
        let l = &self.limits;
        let t = &mut c.limits;
        set!(t.max_payload_bytes, l.max_payload_bytes);
        set!(t.max_topic_len, l.max_topic_len);
        set!(t.max_interests, l.max_interests);
        set!(t.max_capabilities, l.max_capabilities);
        set!(t.max_metadata_entries, l.max_metadata_entries);
        set!(t.max_agents_per_namespace, l.max_agents_per_namespace);
        set!(t.max_namespaces, l.max_namespaces);
        set!(t.max_open_sync_points, l.max_open_sync_points);
        set!(t.max_retained_sync_points, l.max_retained_sync_points);
        set!(t.max_sync_participants, l.max_sync_participants);
        set!(t.max_sync_payload_bytes, l.max_sync_payload_bytes);
        set!(t.max_sync_timeout_ms, l.max_sync_timeout_ms);
        set!(t.max_state_bytes, l.max_state_bytes);
        set!(t.max_delta_bytes, l.max_delta_bytes);
        set!(t.max_watches, l.max_watches);
        c.breaker = self.breaker.apply_to(&c.breaker);
        c.breaker_roles = self.breaker_roles.clone();
        c.breaker_agents = self.breaker_agents.clone();
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults() {
        let f: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[engine]\nheartbeat_interval_ms = 250\noverflow_policy = \"disconnect\"\n[limits]\nmax_interests = 8\n",
        )
        .unwrap();
        let c = f.engine_config().unwrap();
        assert_eq!(f.listen.unwrap().port(), 9000);
        assert_eq!(c.heartbeat_interval_ms, 250);
        assert_eq!(c.overflow_policy, OverflowPolicy::Disconnect);
        assert_eq!(c.limits.max_interests, 8);
        assert_eq!(c.queue_capacity, Config::default().queue_capacity);
    }

    #[test]
    fn breaker_settings_layer_global_role_and_agent() {
        let f: FileConfig = toml::from_str(
            "[breaker]\nfailure_threshold = 3\n[breaker_roles.trader]\nrecovery_delay_ms = 7\n[breaker_agents.scanner]\nfailure_threshold = 9\n",
        )
        .unwrap();
        let c = f.engine_config().unwrap();
        assert_eq!(c.breaker.failure_threshold, 3);
        assert_eq!(c.breaker_for("trader", "t1").recovery_delay_ms, 7);
        assert_eq!(c.breaker_for("trader", "t1").failure_threshold, 3);
        assert_eq!(c.breaker_for("scanner", "scanner").failure_threshold, 9);
        assert!(toml::from_str::<FileConfig>("[breaker]\nthreshold = 3\n").is_err());
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\nlisten").expect("the README has an example file") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed");
        let f: FileConfig = toml::from_str(&readme[start..end]).expect("the README's example parses");
        f.engine_config().unwrap().validate().unwrap();
        assert_eq!(f.breaker.failure_threshold, Some(5));
    }

    #[test]
    fn unknown_keys_and_policies_are_refused() {
        assert!(toml::from_str::<FileConfig>("[engine]\nheartbeat = 5\n").is_err());
        let f: FileConfig = toml::from_str("[engine]\noverflow_policy = \"lose\"\n").unwrap();
        assert!(f.engine_config().unwrap_err().to_string().contains("unknown overflow policy"));
    }
}
