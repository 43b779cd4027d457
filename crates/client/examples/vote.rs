//! The README's vote, run against a real server by `crates/cli/tests/readme.rs`.
use lockstep_client::{AgentOptions, Ballot, Client, Participants, Vote, VotePolicy, VoteWeight};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), lockstep_client::Error> {
    let address = std::env::var("LOCKSTEP_ADDR").unwrap_or_else(|_| "127.0.0.1:7600".into());
    let client = Client::connect(&address).await?;
    let desk = client.register(AgentOptions::new("desk", "desk")).await?;
    let executor = client.register(AgentOptions::new("executor", "executor").interests(["trades.directive"])).await?;
    let mut directives = executor.deliveries().expect("taken once");
    let mut strategies = Vec::new();
    for (id, stake) in [("momentum", "3"), ("value", "1"), ("arbitrage", "2")] {
        strategies.push(client.register(AgentOptions::new(id, "strategy").metadata("stake", stake)).await?);
    }

    let vote =
        Vote::new("trade-1", "what to do with ACME?", Participants::Role("strategy".into()), ["buy", "sell", "hold"])
            .policy(VotePolicy::Majority)
            .weight(VoteWeight::Metadata("stake".into()))
            .quorum_ballots(2)
            .tie_breaker("lead")
            .topic("trades.directive")
            .timeout(Duration::from_secs(10));
    desk.open_vote(&vote).await?;

    // Each strategy casts its ballot and waits for the outcome: the same one for every voter.
    let (a, b, c) = tokio::join!(
        strategies[0].cast("trade-1", Ballot::option("buy").confidence(0.8)),
        strategies[1].cast("trade-1", Ballot::option("sell")),
        strategies[2].cast("trade-1", Ballot::option("buy")),
    );
    let outcome = a?;
    assert_eq!((b?, c?), (outcome.clone(), outcome.clone()));
    if outcome.decided {
        println!("directive {} ({} ballots, {} missing)", outcome.directive_json, outcome.ballots, outcome.missing);
    } else {
        println!("no decision: {}", outcome.reason);
    }

    // The executor acts on the directive, published once on the vote's topic.
    if let Some(d) = directives.recv().await {
        println!("executor received {}: {}", d.topic, String::from_utf8_lossy(&d.payload));
    }
    Ok(())
}
