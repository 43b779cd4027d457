//! Prometheus metrics, in the OpenMetrics text format (through `prometheus-client`, the
//! Prometheus project's Rust client), served at `/metrics` by the HTTP listener (`http`).
//!
//! Two sources: what the driver measures as it runs — each turn's duration and the commands
//! waiting when it began, each store commit's duration ([`Metrics`], shared with the driver) — and
//! what the engine counts, read once per scrape by a query ([`Scrape`]): agents by namespace and
//! status, messages published, delivered and dropped, gap notices, state updates, sync points,
//! votes, collectives and tasks by outcome, breaker transitions, outbound queues, audit log
//! entries, the sync monitor's systems, open incidents and events; plus the database file's size.
//! Names start with `lockstep_`; the list is in docs/PROTOCOL.md ("HTTP listener").

use std::time::Duration;

use lockstep_core::distribution::Distribution;
use lockstep_core::engine::{AgentGauges, Counters};
use lockstep_core::systems::SystemsGauges;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// What the driver measures (cheap to update: a histogram observation per turn).
#[derive(Debug)]
pub struct Metrics {
    turn_seconds: Histogram,
    backlog: Gauge,
    commit_seconds: Histogram,
    /// The HTTP listener's and the dashboard's clients (see `http_limit` and `dashboard`).
    http: HttpCounters,
}

/// What the HTTP listener counts of its clients: each a counter, bumped by the listener's tasks.
#[derive(Debug, Default)]
struct HttpCounters {
    /// Dashboard snapshots a page did not get because a newer one replaced them first.
    coalesced: Counter,
    /// Connections closed because their client took nothing written for the write stall.
    dropped: Counter,
    /// Connections refused past the connection limit.
    refused: Counter,
    /// Dashboard event streams refused past their limit.
    streams_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        // 25 µs to ~0.8 s, doubling: a turn or a commit outside that range is rare and still counted.
        let buckets = || exponential_buckets(0.000_025, 2.0, 16);
        Metrics {
            turn_seconds: Histogram::new(buckets()),
            backlog: Gauge::default(),
            commit_seconds: Histogram::new(buckets()),
            http: HttpCounters::default(),
        }
    }
}

impl Metrics {
    /// A driver turn took `took`; `backlog` commands were waiting when it began.
    pub fn turn(&self, took: Duration, backlog: usize) {
        self.turn_seconds.observe(took.as_secs_f64());
        self.backlog.set(backlog as i64);
    }

    /// A store commit took `took`.
    pub fn commit(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// `n` dashboard snapshots were skipped for a page that was slower than its feed.
    pub fn dashboard_coalesced(&self, n: u64) {
        self.http.coalesced.inc_by(n);
    }

    /// How many dashboard snapshots were skipped so far.
    pub fn dashboard_coalesced_total(&self) -> u64 {
        self.http.coalesced.get()
    }

    /// An HTTP client that took nothing for the write stall was disconnected.
    pub fn http_client_dropped(&self) {
        self.http.dropped.inc();
    }

    /// How many HTTP clients were disconnected for stalling.
    pub fn http_clients_dropped_total(&self) -> u64 {
        self.http.dropped.get()
    }

    /// A connection past the HTTP listener's limit was refused.
    pub fn http_connection_refused(&self) {
        self.http.refused.inc();
    }

    /// A dashboard event stream past its limit was refused.
    pub fn dashboard_stream_refused(&self) {
        self.http.streams_refused.inc();
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut registry = Registry::with_prefix("lockstep");
        let agents = Family::<Vec<(String, String)>, Gauge>::default();
        for (namespace, status, count) in &scrape.agents.by_status {
            let labels = vec![("namespace".to_owned(), namespace.clone()), ("status".to_owned(), (*status).to_owned())];
            agents.get_or_create(&labels).set(*count as i64);
        }
        registry.register("agents", "Registered agents, by namespace and status", agents);
        let c = &scrape.counters;
        let counters = [
            ("messages_published", "Messages published", c.published),
            ("messages_delivered", "Messages routed to a receiver's queue", c.routed),
            ("messages_dropped", "Messages dropped (full queue, isolated receiver), reported as gaps", c.dropped),
            ("state_updates", "Agent state updates applied", c.state_updates),
            ("breaker_transitions", "Circuit breaker transitions", c.breaker_transitions),
            ("breakers_opened", "Circuit breakers opened", c.breakers_opened),
            ("audit_entries", "Operator actions and commands recorded in the audit log", scrape.audit_entries),
            ("gap_notices", "Delivery frames that told their receiver how many messages it lost", c.gap_notices),
        ];
        for (name, help, value) in counters {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }
        let s = &scrape.systems;
        let by_outcome: [(&str, &str, Outcomes); 5] = [
            (
                "sync_points",
                "Sync points finished, by outcome",
                &[("completed", c.syncs_completed), ("failed", c.syncs_failed)],
            ),
            (
                "votes",
                "Votes ended, by outcome (decided with a choice, or ended without one)",
                &[("decided", c.votes_decided), ("undecided", c.votes_undecided)],
            ),
            (
                "collectives",
                "Collectives finished, by outcome",
                &[("completed", c.collectives_completed), ("failed", c.collectives_failed)],
            ),
            (
                "tasks",
                "Task outcomes: completions, failed attempts (retried or dead-lettered after), dead letters",
                &[
                    ("completed", c.tasks_completed),
                    ("attempt_failed", c.task_attempts_failed),
                    ("dead_lettered", c.tasks_dead_lettered),
                ],
            ),
            (
                "system_events",
                "Sync events reported to the sync monitor: taken, or refused by the per-reporter rate limit",
                &[("accepted", s.events_accepted), ("rate_limited", s.events_rate_limited)],
            ),
        ];
        for (name, help, outcomes) in by_outcome {
            let family = Family::<Vec<(String, String)>, Counter>::default();
            for (outcome, value) in outcomes {
                family.get_or_create(&vec![("outcome".to_owned(), (*outcome).to_owned())]).inc_by(*value);
            }
            registry.register(name, help, family);
        }
        let gauges = [
            ("outbound_queued", "Messages waiting in agents' outbound queues", scrape.agents.queued),
            ("outbound_queue_deepest", "The deepest agent outbound queue now", scrape.agents.deepest_queue),
            ("outbound_queue_high_water", "The deepest any agent outbound queue has been", scrape.agents.high_water),
        ];
        let synced = Family::<Vec<(String, String)>, Gauge>::default();
        for (state, count) in [("fresh", s.fresh), ("stale", s.stale)] {
            synced.get_or_create(&vec![("state".to_owned(), state.to_owned())]).set(count as i64);
        }
        registry.register("synced_systems", "Active systems of the sync monitor, by freshness", synced);
        let gauges = gauges.into_iter().chain([(
            "system_incidents_open",
            "Open incidents of the sync monitor",
            s.open_incidents,
        )]);
        for (name, help, value) in gauges.chain(scrape.database_bytes.map(|bytes| {
            ("store_database_bytes", "Size of the SQLite database file (without its write-ahead log)", bytes)
        })) {
            let gauge = Gauge::<i64>::default();
            gauge.set(value as i64);
            registry.register(name, help, gauge);
        }
        registry.register(
            "barrier_wait_seconds",
            "Sync points released: from the first arrival to the release (engine clock, ms resolution)",
            Seconds(c.barrier_wait),
        );
        registry.register(
            "delivery_ack_seconds",
            "Delivery batches acknowledged: from sent to acknowledged (engine clock, ms resolution)",
            Seconds(c.delivery_ack),
        );
        registry.register(
            "driver_turn_duration_seconds",
            "Driver wake-ups, from waking to sent (the inputs' turn, and the turn of timers still due after it)",
            self.turn_seconds.clone(),
        );
        registry.register("driver_input_backlog", "Commands waiting when the last turn began", self.backlog.clone());
        registry.register(
            "store_commit_duration_seconds",
            "Store commits of a turn's changes (data directory only)",
            self.commit_seconds.clone(),
        );
        let http = &self.http;
        for (name, help, counter) in [
            (
                "dashboard_updates_coalesced",
                "Dashboard snapshots a slow page skipped because a newer one replaced them",
                &http.coalesced,
            ),
            (
                "http_clients_dropped",
                "HTTP connections closed because their client took nothing written to it for the write stall",
                &http.dropped,
            ),
            (
                "http_connections_refused",
                "HTTP connections refused (503) past the listener's connection limit",
                &http.refused,
            ),
            (
                "dashboard_streams_refused",
                "Dashboard event streams refused (503) past their limit",
                &http.streams_refused,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String does not fail");
        text
    }
}

/// A counter family's samples: (outcome label, count).
type Outcomes<'a> = &'a [(&'a str, u64)];

/// An engine distribution (milliseconds) as a Prometheus histogram in seconds.
#[derive(Debug)]
struct Seconds(Distribution);

impl EncodeMetric for Seconds {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> =
            self.0.buckets().map(|(bound, n)| (bound.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0), n)).collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_ms() as f64 / 1000.0, self.0.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What the engine counts, read for one scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub counters: Counters,
    pub agents: AgentGauges,
    pub audit_entries: u64,
    /// The database file's size; `None` in memory.
    pub database_bytes: Option<u64>,
    /// The sync monitor's counts.
    pub systems: SystemsGauges,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_labels_and_values() {
        let metrics = Metrics::default();
        metrics.turn(Duration::from_micros(300), 7);
        metrics.commit(Duration::from_millis(2));
        let mut barrier_wait = Distribution::default();
        barrier_wait.record(3);
        barrier_wait.record(1_500);
        let scrape = Scrape {
            counters: Counters {
                published: 12,
                routed: 30,
                dropped: 1,
                syncs_completed: 4,
                gap_notices: 3,
                votes_decided: 5,
                collectives_failed: 6,
                tasks_dead_lettered: 7,
                barrier_wait,
                ..Counters::default()
            },
            agents: AgentGauges {
                by_status: vec![("default".into(), "active", 3), ("desk".into(), "lost", 1)],
                queued: 5,
                deepest_queue: 4,
                high_water: 9,
            },
            audit_entries: 2,
            database_bytes: Some(4096),
            systems: SystemsGauges {
                fresh: 5,
                stale: 2,
                open_incidents: 3,
                events_accepted: 40,
                events_rate_limited: 6,
            },
        };
        let text = metrics.render(&scrape);
        for line in [
            "lockstep_agents{namespace=\"default\",status=\"active\"} 3",
            "lockstep_agents{namespace=\"desk\",status=\"lost\"} 1",
            "lockstep_messages_published_total 12",
            "lockstep_messages_delivered_total 30",
            "lockstep_messages_dropped_total 1",
            "lockstep_sync_points_total{outcome=\"completed\"} 4",
            "lockstep_gap_notices_total 3",
            "lockstep_votes_total{outcome=\"decided\"} 5",
            "lockstep_votes_total{outcome=\"undecided\"} 0",
            "lockstep_collectives_total{outcome=\"failed\"} 6",
            "lockstep_tasks_total{outcome=\"dead_lettered\"} 7",
            "lockstep_tasks_total{outcome=\"completed\"} 0",
            "lockstep_audit_entries_total 2",
            "lockstep_outbound_queue_high_water 9",
            "lockstep_store_database_bytes 4096",
            "lockstep_synced_systems{state=\"fresh\"} 5",
            "lockstep_synced_systems{state=\"stale\"} 2",
            "lockstep_system_incidents_open 3",
            "lockstep_system_events_total{outcome=\"accepted\"} 40",
            "lockstep_system_events_total{outcome=\"rate_limited\"} 6",
            "lockstep_driver_input_backlog 7",
            "lockstep_driver_turn_duration_seconds_count 1",
            "lockstep_store_commit_duration_seconds_count 1",
            "lockstep_barrier_wait_seconds_count 2",
            "lockstep_barrier_wait_seconds_sum 1.503",
            "lockstep_barrier_wait_seconds_bucket{le=\"0.005\"} 1",
            "lockstep_barrier_wait_seconds_bucket{le=\"2.0\"} 2",
            "lockstep_barrier_wait_seconds_bucket{le=\"+Inf\"} 2",
            "lockstep_delivery_ack_seconds_count 0",
            "lockstep_dashboard_updates_coalesced_total 0",
            "lockstep_http_clients_dropped_total 0",
            "lockstep_http_connections_refused_total 0",
            "lockstep_dashboard_streams_refused_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        let in_memory = metrics.render(&Scrape::default());
        assert!(!in_memory.contains("store_database_bytes"), "no database, no size: {in_memory}");
    }
}
