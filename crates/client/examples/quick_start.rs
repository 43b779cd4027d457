//! The README's Rust quick start, run against a real server by `crates/cli/tests/readme.rs`.
use lockstep_client::{AgentOptions, Client, Participants, WatchTarget};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), lockstep_client::Error> {
    let address = std::env::var("LOCKSTEP_ADDR").unwrap_or_else(|_| "127.0.0.1:7600".into());
    let client = Client::connect(&address).await?;
    let agent = client
        .register(
            AgentOptions::new("strategy-1", "strategy")
                .capabilities(["trading"])
                .interests(["market.*.trades", "risk.limits"]),
        )
        .await?;
    let mut deliveries = agent.deliveries().expect("taken once");

    // Share state as deltas; watch others' state.
    agent.update_state(&serde_json::json!({"confidence": 0.8, "last_signal": "BUY"})).await?;
    agent.watch_state(WatchTarget::Role("risk".into())).await?;

    // Publish; every agent interested in the topic receives it (the publisher included).
    agent.publish("market.btc.trades", &b"BUY 1 @ 64000"[..]).await?;
    if let Some(d) = deliveries.recv().await {
        println!("{} #{}: {} bytes (missed before: {})", d.topic, d.seq, d.payload.len(), d.missed_before);
    }

    // Meet the other strategies (here it is the only one), exchanging a small payload.
    let round =
        agent.sync("round-1", Participants::Role("strategy".into()), Duration::from_secs(10), &b"ready"[..]).await?;
    println!("released with {:?}", round.arrival_order);

    agent.close().await // deregisters
}
