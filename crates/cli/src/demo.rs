//! `lockstep demo`: an embedded server and a simulated trading swarm, narrated round by round.
//!
//! Each round has two phases, each closed by a barrier of the whole swarm:
//! 1. *data*: the scanner publishes market data; on release every agent has what was published
//!    before it (a release is a fence);
//! 2. *decide*: strategies read the data they are interested in, update their state with deltas and
//!    publish orders; the risk sentinel watches the strategies' state and publishes limits; each
//!    brings its decision to the barrier as a payload, and everyone receives all of them.
//!
//! After the last round the server drives a few tick rounds (the SyncBus `tick()`): every strategy
//! is asked for its book, the answers are merged into the context key `strategies.book` and the
//! merged result is published on `ticks.strategies`.
//! The market topics are retained (topic history): once the market closes, an auditor that joins
//! late is replayed every trade, with its topic sequence number, before anything live.
//! Then an intake desk: the operator installs a rule set (a JSON Schema on `intake`, routes by
//! JSON-pointer predicates onto category topics) and a feed publishes mixed records to `intake`;
//! a bad one is refused with the schema's errors and copied to `intake.dead`, the others arrive on
//! `market_data.<symbol>`, `execution_result`, `risk_metrics` and `scanner_data` with the envelope
//! the server stamped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use lockstep_client::{
    Agent, AgentOptions, Client, Participants, Replay, RoundParticipants, RoundSeriesSpec, WatchTarget,
};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::table;

#[derive(Args)]
pub struct DemoArgs {
    /// Rounds to run.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Pause between rounds, in milliseconds, so a person can follow.
    #[arg(long, default_value_t = 250)]
    pause_ms: u64,
    /// Seed of the simulated market.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const SYMBOLS: [&str; 3] = ["btc", "eth", "sol"];
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// Server-driven tick rounds after the barrier rounds: how many, how often, how long each waits.
const TICKS: u64 = 3;
const TICK_CADENCE_MS: u64 = 200;
const TICK_TIMEOUT_MS: u64 = 150;

/// A strategy: its name and the topics it cares about.
const STRATEGIES: [(&str, &[&str]); 3] = [
    ("momentum", &["market.*.trades", "risk.limits"]),
    ("mean-revert", &["market.btc.>", "risk.limits"]),
    ("pairs", &["market.eth.trades", "market.sol.trades", "risk.limits"]),
];

/// A line of narration: (round, agent, text).
type Say = mpsc::UnboundedSender<(u32, String, String)>;

fn everyone() -> Participants {
    let mut ids = vec!["scanner".to_owned(), "risk_sentinel".to_owned()];
    ids.extend(STRATEGIES.iter().map(|(name, _)| format!("strategy-{name}")));
    Participants::Agents(ids)
}

async fn phase(
    agent: &Agent,
    round: u32,
    name: &str,
    payload: impl Into<Bytes>,
) -> anyhow::Result<lockstep_client::SyncResult> {
    Ok(agent.sync(&format!("round-{round}/{name}"), everyone(), BARRIER_TIMEOUT, payload).await?)
}

async fn scanner(client: Client, rounds: u32, seed: u64, pause: Duration, say: Say) -> anyhow::Result<()> {
    let agent = client.register(AgentOptions::new("scanner", "scanner").capabilities(["market_data"])).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut prices: BTreeMap<&str, f64> = [("btc", 64_000.0), ("eth", 3_000.0), ("sol", 140.0)].into();
    for round in 1..=rounds {
        let mut published = 0;
        for sym in SYMBOLS {
            let p = prices.get_mut(sym).expect("known symbol");
            *p *= 1.0 + rng.random_range(-0.01..0.01);
            let tick = json!({"symbol": sym, "price": (*p * 100.0).round() / 100.0, "round": round});
            agent.publish_as(&format!("market.{sym}.trades"), tick.to_string(), "application/json").await?;
            published += 1;
        }
        if !round.is_multiple_of(2) {
            agent.publish_as("market.btc.book", json!({"bids": 12, "asks": 9}).to_string(), "application/json").await?;
            published += 1;
        }
        agent.update_state(&json!({"tick_id": round})).await?;
        let shown: Vec<String> = prices.iter().map(|(s, p)| format!("{s} {p:.2}")).collect();
        say.send((round, "scanner".into(), format!("published {published} messages: {}", shown.join("  "))))?;
        let started = Instant::now();
        let data = phase(&agent, round, "data", Bytes::new()).await?;
        say.send((
            round,
            "barrier".into(),
            format!(
                "round-{round}/data released {} agents after {:.1} ms",
                data.arrival_order.len(),
                started.elapsed().as_secs_f64() * 1000.0
            ),
        ))?;
        phase(&agent, round, "decide", Bytes::new()).await?;
        tokio::time::sleep(pause).await;
    }
    agent.close().await?;
    Ok(())
}

/// Returns the bytes of the deltas it sent and of the full states they stand for.
async fn strategy(
    client: Client,
    name: &'static str,
    interests: &'static [&'static str],
    rounds: u32,
    say: Say,
    ticking: mpsc::UnboundedSender<()>,
    mut ticks_over: watch::Receiver<bool>,
) -> anyhow::Result<(usize, usize)> {
    let id = format!("strategy-{name}");
    let agent = client
        .register(AgentOptions::new(&id, "strategy").interests(interests.iter().copied()).capabilities(["trading"]))
        .await?;
    let mut deliveries = agent.deliveries().expect("taken once");
    let (mut pnl, mut position, mut limit) = (0.0f64, 0i64, 5i64);
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    let (mut state, mut delta_bytes, mut full_bytes) = (json!({"strategy": name, "symbols": interests}), 0, 0);
    agent.update_state(&state).await?;
    for round in 1..=rounds {
        phase(&agent, round, "data", Bytes::new()).await?;
        let (mut seen, mut topics) = (0, Vec::new());
        let mut signal = ("HOLD", 0.5f64);
        while let Some(d) = deliveries.try_recv() {
            seen += 1;
            topics.push(d.topic.clone());
            let v: Value = serde_json::from_slice(&d.payload).unwrap_or(Value::Null);
            if d.topic == "risk.limits" {
                limit = v["max_position"].as_i64().unwrap_or(limit);
                continue;
            }
            let (Some(sym), Some(price)) = (v["symbol"].as_str(), v["price"].as_f64()) else { continue };
            if let Some(prev) = last.insert(sym.to_owned(), price) {
                let change = (price - prev) / prev;
                let follows = name != "mean-revert";
                let buy = (change > 0.0) == follows;
                signal = (if buy { "BUY" } else { "SELL" }, (0.5 + change.abs() * 40.0).min(0.99));
                pnl += change * position as f64 * 100.0;
            }
        }
        match signal.0 {
            "BUY" if position < limit => position += 1,
            "SELL" if position > -limit => position -= 1,
            _ => {}
        }
        let delta = json!({"confidence": (signal.1 * 100.0).round() / 100.0, "last_signal": signal.0, "pnl": (pnl * 100.0).round() / 100.0, "position": position});
        let version = agent.update_state(&delta).await?;
        lockstep_core::state::apply(&mut state, &delta);
        delta_bytes += delta.to_string().len();
        full_bytes += state.to_string().len();
        if signal.0 != "HOLD" {
            agent.publish(&format!("execution.orders.{id}"), json!({"side": signal.0, "qty": 1}).to_string()).await?;
        }
        topics.dedup();
        say.send((
            round,
            id.clone(),
            format!(
                "saw {seen} msgs on {}  → {} conf {:.2} pos {position:+} pnl {pnl:+.2} (state v{version})",
                if topics.is_empty() { "-".into() } else { topics.join(",") },
                signal.0,
                signal.1
            ),
        ))?;
        let decided = phase(&agent, round, "decide", format!("{} {position:+}", signal.0)).await?;
        if name == "momentum" {
            let decisions: Vec<String> = decided
                .arrival_order
                .iter()
                .zip(&decided.payloads)
                .filter(|(_, p)| !p.is_empty())
                .map(|(a, p)| format!("{a}={}", String::from_utf8_lossy(p)))
                .collect();
            say.send((
                round,
                "barrier".into(),
                format!("round-{round}/decide released; payloads exchanged: {}", decisions.join(", ")),
            ))?;
        }
    }
    // Tick rounds: answer each with this strategy's book until the ticks are over.
    let mut ticks = agent.rounds().expect("taken once");
    ticking.send(())?;
    loop {
        tokio::select! {
            tick = ticks.next() => {
                let Some(tick) = tick else { break };
                tick.answer(&json!({ "books": { id.as_str(): { "position": position, "pnl": (pnl * 100.0).round() / 100.0 } } })).await?;
            }
            _ = ticks_over.changed() => break,
        }
    }
    agent.close().await?;
    Ok((delta_bytes, full_bytes))
}

async fn sentinel(client: Client, rounds: u32, say: Say) -> anyhow::Result<()> {
    let agent = client
        .register(
            AgentOptions::new("risk_sentinel", "risk").interests(["execution.>", "risk.>"]).capabilities(["risk"]),
        )
        .await?;
    agent.watch_state(WatchTarget::Role("strategy".into())).await?;
    let mut deliveries = agent.deliveries().expect("taken once");
    let mut commands = agent.commands().expect("taken once");
    let mut last_exposure = 0;
    for round in 1..=rounds {
        phase(&agent, round, "data", Bytes::new()).await?;
        let decided = phase(&agent, round, "decide", Bytes::new()).await?;
        let mut orders = 0;
        while let Some(d) = deliveries.try_recv() {
            orders += usize::from(d.topic.starts_with("execution.orders."));
        }
        // After the release the views hold every strategy's state as of its arrival.
        let mut exposure = 0i64;
        for id in decided.arrival_order.iter().filter(|a| a.starts_with("strategy-")) {
            if let Some((_, state)) = agent.view(id) {
                exposure += state["position"].as_i64().unwrap_or(0).abs();
            }
        }
        last_exposure = exposure;
        let max_position = if exposure > 6 { 2 } else { 5 };
        agent.publish_as("risk.limits", json!({"max_position": max_position}).to_string(), "application/json").await?;
        agent.update_state(&json!({"exposure": exposure, "max_position": max_position})).await?;
        say.send((
            round,
            "risk_sentinel".into(),
            format!("saw {orders} orders; total exposure {exposure} → risk.limits max_position {max_position}"),
        ))?;
    }
    // Before leaving, answer the operator's report request (the narration is over for us).
    drop(say);
    if let Ok(Some(cmd)) = tokio::time::timeout(BARRIER_TIMEOUT, commands.recv()).await {
        let answer = match cmd.command.as_str() {
            "report" => Ok(json!({"exposure": last_exposure, "rounds": rounds})),
            other => Err(format!("unknown command '{other}'")),
        };
        cmd.reply(answer).await?;
    }
    agent.close().await?;
    Ok(())
}

/// A recorder whose disk is full during the first rounds: it reports every delivery it cannot
/// store, its circuit breaker opens, and closes again once it copes.
async fn recorder(client: Client, failing_rounds: u64, mut done: watch::Receiver<bool>) -> anyhow::Result<()> {
    let agent = client.register(AgentOptions::new("recorder", "recorder").interests(["market.>"])).await?;
    let mut deliveries = agent.deliveries().expect("taken once");
    loop {
        tokio::select! {
            d = deliveries.recv() => {
                let Some(d) = d else { break };
                let round = serde_json::from_slice::<Value>(&d.payload).ok().and_then(|v| v["round"].as_u64()).unwrap_or(0);
                if round <= failing_rounds {
                    agent.report_delivery_error(d.seq, "disk full").await?;
                }
            }
            _ = done.changed() => break,
        }
    }
    agent.close().await?;
    Ok(())
}

/// Narrates every circuit breaker transition, until `done`; says on `recovered` when the
/// recorder's breaker has closed again (after its narration, so that it is never cut off).
async fn watch_breakers(
    client: Client,
    say: Say,
    mut done: watch::Receiver<bool>,
    recovered: oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let mut recovered = Some(recovered);
    let mut events = client.watch_registry().await?;
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            e = events.message() => {
                let Some(e) = e? else { break };
                if e.kind != lockstep_client::proto::registry_event::Kind::Breaker as i32 {
                    continue;
                }
                let Some(a) = e.agent else { continue };
                let before = last.insert(a.agent_id.clone(), a.breaker_state.clone()).unwrap_or_else(|| "closed".into());
                say.send((0, "breaker".into(), format!("{}: {before} → {}", a.agent_id, a.breaker_state)))?;
                if a.agent_id == "recorder" && a.breaker_state == "closed" && before != "closed" {
                    if let Some(tx) = recovered.take() {
                        let _ = tx.send(());
                    }
                }
            }
            _ = done.changed() => break,
        }
    }
    Ok(())
}

/// Prints the narration, a header per round; round 0 lines belong to no round.
async fn narrate(mut heard: mpsc::UnboundedReceiver<(u32, String, String)>) {
    let mut current = 0;
    while let Some((round, who, text)) = heard.recv().await {
        if round != current && round != 0 {
            current = round;
            println!("\n── round {round} ──────────────────────────────────────────────");
        }
        println!("  {who:<22} {text}");
    }
}

/// The server drives `TICKS` tick rounds of every strategy and publishes each merged result.
async fn tick_rounds(client: &Client, say: &Say) -> anyhow::Result<()> {
    let monitor = client.register(AgentOptions::new("tick-monitor", "monitor").interests(["ticks.>"])).await?;
    let mut results = monitor.deliveries().expect("taken once");
    let mut spec =
        RoundSeriesSpec::new("tick", RoundParticipants::Role("strategy".into()), TICK_TIMEOUT_MS, "strategies.book");
    spec.topic = "ticks.strategies".into();
    spec.cadence_ms = TICK_CADENCE_MS;
    client.rounds().create(&spec).await?;
    for _ in 0..TICKS {
        let d = tokio::time::timeout(BARRIER_TIMEOUT, results.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the tick monitor's session ended"))?;
        let r: Value = serde_json::from_slice(&d.payload)?;
        let books: Vec<String> = r["value"]["books"]
            .as_object()
            .map(|b| b.iter().map(|(id, v)| format!("{id} {:+}", v["position"].as_i64().unwrap_or(0))).collect())
            .unwrap_or_default();
        say.send((
            0,
            "tick".into(),
            format!(
                "round {} {} in {} ms: {} answered, missed {}; strategies.book v{}: {}",
                r["round"],
                r["closing"].as_str().unwrap_or("?"),
                r["closed_at_ms"].as_u64().unwrap_or(0).saturating_sub(r["opened_at_ms"].as_u64().unwrap_or(0)),
                r["answered"].as_array().map_or(0, Vec::len),
                r["missed"].as_array().filter(|m| !m.is_empty()).map_or("nobody".into(), |m| format!("{m:?}")),
                r["context_version"],
                books.join(", ")
            ),
        ))?;
    }
    client.rounds().remove("tick").await?;
    monitor.close().await?;
    Ok(())
}

/// Breakers tuned so that a person sees one open and close within the demo.
/// An auditor joins after the market closed and asks for every trade kept: they are replayed in
/// order, each with its topic sequence number. Returns how many it got.
async fn late_auditor(client: Client, rounds: u32, say: Say) -> anyhow::Result<usize> {
    let agent = client.register(AgentOptions::new("auditor", "audit")).await?;
    let mut deliveries = agent.deliveries().expect("taken once");
    agent.subscribe("market.*.trades", Replay::SinceSeq(1)).await?;
    let expected = rounds as usize * SYMBOLS.len();
    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..expected {
        let d = tokio::time::timeout(BARRIER_TIMEOUT, deliveries.recv()).await?.ok_or(anyhow::anyhow!("ended"))?;
        per_topic.entry(d.topic.clone()).or_default().push(d.topic_seq);
    }
    let shown: Vec<String> = per_topic
        .iter()
        .map(|(t, seqs)| format!("{t} #{}..#{}", seqs.first().unwrap_or(&0), seqs.last().unwrap_or(&0)))
        .collect();
    say.send((0, "auditor".into(), format!("joined late; replayed {expected} trades: {}", shown.join(", "))))?;
    agent.close().await?;
    Ok(expected)
}

/// The intake's rule set the demo's operator installs: a schema for every record of `intake`,
/// and a route sorting them by kind (see "Intake" in docs/PROTOCOL.md).
fn intake_rules() -> Value {
    json!({
        "schemas": [{
            "topic": "intake",
            "dead_letter": "intake.dead",
            "schema": {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string"}}}
        }],
        "routes": [{
            "topic": "intake",
            "unmatched": "intake.unmatched",
            "rules": [
                {"name": "market", "target": "market_data.{/symbol}",
                 "when": [{"pointer": "/kind", "equals": "tick"}, {"pointer": "/symbol", "exists": true}]},
                {"name": "execution", "target": "execution_result",
                 "when": [{"pointer": "/kind", "one_of": ["fill", "cancel"]}]},
                {"name": "risk", "target": "risk_metrics", "when": [{"pointer": "/var", "min": 0, "max": 1}]},
                {"name": "scanner", "target": "scanner_data", "when": [{"pointer": "/kind", "equals": "scan"}]}
            ]
        }]
    })
}

/// The intake desk: records published to `intake` are validated and sorted onto category topics
/// by the server; a bad one is refused to its publisher and copied to the dead-letter topic.
/// Returns how many records the desk heard.
async fn intake_desk(client: &Client, say: &Say) -> anyhow::Result<usize> {
    let version = client.intake(None, Some("demo-operator"))?.replace(&intake_rules()).await?;
    say.send((0, "operator".into(), format!("installed intake rules v{version}: a schema on intake, 4 categories")))?;
    let desk = client
        .register(AgentOptions::new("intake-desk", "sink").interests([
            "market_data.>",
            "execution_result",
            "risk_metrics",
            "scanner_data",
            "intake.dead",
        ]))
        .await?;
    let mut heard = desk.deliveries().expect("taken once");
    let feed = client.register(AgentOptions::new("feed", "feed")).await?;
    let records = [
        json!({"kind": "tick", "symbol": "BTC", "px": 64_210.5}),
        json!({"kind": "fill", "order": "o-17", "qty": 2}),
        json!({"kind": "risk", "var": 0.12}),
        json!({"kind": "scan", "pattern": "breakout", "symbol": "eth"}),
        json!({"symbol": "sol", "px": "n/a"}),
    ];
    for record in &records {
        match feed.publish_confirmed("intake", record.to_string()).await {
            Ok(()) => {}
            Err(lockstep_client::Error::SchemaViolation { errors, .. }) => {
                let at = |path: &str| if path.is_empty() { "the record".to_owned() } else { path.to_owned() };
                let why: Vec<String> = errors.iter().map(|e| format!("{}: {}", at(&e.path), e.reason)).collect();
                say.send((0, "feed".into(), format!("refused {record}: {}", why.join("; "))))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for _ in 0..records.len() {
        let d = tokio::time::timeout(BARRIER_TIMEOUT, heard.recv()).await?.ok_or(anyhow::anyhow!("ended"))?;
        let how = match &d.intake {
            Some(e) => format!("#{} from {} by rule {}", e.seq, e.categorised_from, e.rule),
            None => "dead-letter copy, as published".into(),
        };
        say.send((0, "intake-desk".into(), format!("{} ← {} ({how})", d.topic, String::from_utf8_lossy(&d.payload))))?;
    }
    desk.close().await?;
    feed.close().await?;
    Ok(records.len())
}

/// Breakers tuned so that a person sees one open and close within the demo; market data retained
/// for late joiners.
fn demo_config() -> lockstep_core::Config {
    let history = lockstep_core::history::HistorySettings {
        retain: vec![lockstep_core::history::RetainRule {
            pattern: "market.>".into(),
            max_messages: 1000,
            max_topics: 8,
            ..Default::default()
        }],
        ..Default::default()
    };
    lockstep_core::Config {
        history,
        breaker: lockstep_core::breaker::BreakerSettings {
            failure_threshold: 3,
            recovery_delay_ms: 500,
            max_recovery_delay_ms: 2_000,
            probe_successes: 1,
            probe_timeout_ms: 1_500,
            timeout_per_agent_ms: 1_000,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let options =
        lockstep_server::Options { engine: demo_config(), ..lockstep_server::Options::new("127.0.0.1:0".parse()?) };
    let server = lockstep_server::start(options).await?;
    let addr = server.local_addr().to_string();
    println!(
        "lockstep demo: embedded server on {addr}; {} rounds, each closed by a two-phase barrier of the whole swarm\n",
        args.rounds
    );
    let client = Client::connect(&addr).await?;
    let (say, heard) = mpsc::unbounded_channel();
    let (finish, done) = watch::channel(false);
    let (recovered_tx, recovered) = oneshot::channel();
    let breakers = tokio::spawn(watch_breakers(client.clone(), say.clone(), done.clone(), recovered_tx));
    let recording = tokio::spawn(recorder(client.clone(), 2, done));
    let mut strategies = Vec::new();
    let (ticking, mut ready) = mpsc::unbounded_channel();
    let (end_ticks, ticks_over) = watch::channel(false);
    for (name, interests) in STRATEGIES {
        let (ticking, ticks_over) = (ticking.clone(), ticks_over.clone());
        let run = strategy(client.clone(), name, interests, args.rounds, say.clone(), ticking, ticks_over);
        strategies.push(tokio::spawn(run));
    }
    drop(ticking);
    let risk = tokio::spawn(sentinel(client.clone(), args.rounds, say.clone()));
    // Everyone else is registered before the market opens, so the first barrier's set is known.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let agents = client.list_agents(Default::default()).await?;
    for a in &agents {
        println!(
            "joined  {:<22} role {:<9} interests {}",
            a.agent_id,
            a.role,
            if a.interests.is_empty() { "-".into() } else { a.interests.join(" ") }
        );
    }
    let market = tokio::spawn(scanner(
        client.clone(),
        args.rounds,
        args.seed,
        Duration::from_millis(args.pause_ms),
        say.clone(),
    ));
    let narrator = tokio::spawn(narrate(heard));
    market.await??;
    late_auditor(client.clone(), args.rounds, say.clone()).await?;
    intake_desk(&client, &say).await?;
    let admin = client.admin(None, Some("demo-operator"))?;
    let report = admin.send_command("risk_sentinel", "report", &json!({}), BARRIER_TIMEOUT).await?;
    say.send((0, "operator".into(), format!("→ risk_sentinel: command 'report' answered {report}")))?;
    risk.await??;
    for _ in STRATEGIES {
        ready.recv().await.ok_or_else(|| anyhow::anyhow!("a strategy ended before the tick rounds"))?;
    }
    tick_rounds(&client, &say).await?;
    let _ = end_ticks.send(true);
    let (mut delta_bytes, mut full_bytes) = (0, 0);
    for t in strategies {
        let (d, f) = t.await??;
        delta_bytes += d;
        full_bytes += f;
    }
    // The recorder copes again: wait (bounded) until its breaker's closing has been told.
    let _ = tokio::time::timeout(BARRIER_TIMEOUT, recovered).await;
    let _ = finish.send(true);
    breakers.await??;
    recording.await??;
    drop(say);
    narrator.await?;
    println!("\nsync points:");
    let points = client.list_sync_points().await?;
    let rows: Vec<Vec<String>> = points
        .iter()
        .rev()
        .take(4)
        .map(|p| {
            vec![
                p.sync_id.clone(),
                crate::admin::sync_state_name(p.state),
                format!("{}/{}", p.arrived.len(), p.required_count),
            ]
        })
        .collect();
    print!("{}", table::render(&["SYNC_ID", "STATE", "ARRIVED"], &rows));
    println!("({} in all, kept for diagnosis: try `lockstep sync list` against a `lockstep serve`)", points.len());
    let info = client.server_info().await?;
    println!(
        "\nserver: {} messages published, {} routed, {} dropped\nstate: the strategies sent {delta_bytes} B of deltas where full states would have been {full_bytes} B ({:.0} %)",
        info.published,
        info.delivered,
        info.dropped,
        delta_bytes as f64 * 100.0 / full_bytes.max(1) as f64
    );
    server.shutdown().await?;
    println!("demo finished");
    Ok(())
}
