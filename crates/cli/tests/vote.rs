//! End-to-end: votes against a real `lockstep serve` on loopback.
//!
//! * Three strategies with stakes in their metadata vote on a trade; every voter and the opener
//!   get the same outcome, an executor subscribed to the directive topic gets it once, and the CLI
//!   (`lockstep votes list|status|diagnose --json`) shows who voted what.
//! * Bad ballots get their reasons: a non-participant, an unknown option, a weight that is not a
//!   number, a second different ballot.
//! * A voter that goes silent is lost at its lease and counted as missing; the vote decides
//!   without it, long before its deadline.
//! * A vote in progress survives a SIGKILL of the server: the ballots are kept, the voters'
//!   waits are carried over, and the vote decides once.

mod support;

use std::time::{Duration, Instant};

use lockstep_client::{proto as v1, Agent, Ballot, Participants, Reason, Vote, VotePolicy, VoteWeight};
use serde_json::{json, Value};
use support::{eventually, free_listen_addr, opts, ScratchDir, Server};

const T: Duration = Duration::from_secs(20);

fn strategies() -> Participants {
    Participants::Agents(vec!["s1".into(), "s2".into(), "s3".into()])
}

/// Casts in a task, so that several voters wait at once.
fn cast(agent: &Agent, vote_id: &'static str, ballot: Ballot) -> tokio::task::JoinHandle<v1::VoteOutcome> {
    let agent = agent.clone();
    tokio::spawn(async move {
        tokio::time::timeout(T, agent.cast(vote_id, ballot)).await.expect("decided in time").expect("an outcome")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_vote_gives_everyone_one_outcome_and_the_executor_one_directive() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let desk = client.register(opts("desk", "desk")).await.unwrap();
    let executor = client.register(opts("executor", "executor").interests(["trades.directive"])).await.unwrap();
    let mut directives = executor.deliveries().unwrap();
    let mut voters = Vec::new();
    for (id, stake) in [("s1", "5"), ("s2", "3"), ("s3", "3")] {
        voters.push(client.register(opts(id, "strategy").metadata("stake", stake)).await.unwrap());
    }
    let outsider = client.register(opts("outsider", "strategy").metadata("stake", "lots")).await.unwrap();
    let vote = Vote::new("trade-1", "what to do with ACME?", strategies(), ["buy", "sell", "hold"])
        .policy(VotePolicy::Plurality)
        .weight(VoteWeight::Metadata("stake".into()))
        .topic("trades.directive")
        .timeout(Duration::from_secs(60));
    let opener = {
        let (desk, vote) = (desk.clone(), vote.clone());
        tokio::spawn(async move { desk.vote(&vote).await })
    };
    assert!(eventually(T, || async { client.vote_status("trade-1").await.is_ok() }).await, "the vote is opened");

    // Bad ballots are refused with their reasons and leave the vote as it was.
    let err = outsider.cast("trade-1", Ballot::option("buy")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NotAVoter), "{err:?}");
    let err = voters[0].cast("trade-1", Ballot::option("short")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::UnknownOption), "{err:?}");
    let err = voters[0].cast("trade-1", Ballot::option("buy").confidence(2.0)).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::BadConfidence), "{err:?}");
    let err = voters[0].cast("nope", Ballot::option("buy")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::UnknownVote), "{err:?}");

    // s1 (stake 5) buys, s2 and s3 (3 each) sell: sell wins by weight 6 to 5.
    let a = cast(&voters[0], "trade-1", Ballot::option("buy"));
    assert!(eventually(T, || async { client.vote_status("trade-1").await.unwrap().ballots.len() == 1 }).await);
    let err = voters[0].cast("trade-1", Ballot::option("sell")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::DoubleBallot), "{err:?}");
    let (_, out, _) = server.cli_async(&["votes", "status", "trade-1", "--json"]).await;
    let record: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(record["state"], "open");
    assert_eq!(record["missing"], json!(["s2", "s3"]));
    let b = cast(&voters[1], "trade-1", Ballot::option("sell"));
    let c = cast(&voters[2], "trade-1", Ballot::option("sell"));
    let outcomes = [a.await.unwrap(), b.await.unwrap(), c.await.unwrap()];
    let opened = tokio::time::timeout(T, opener).await.unwrap().unwrap().unwrap();
    for o in &outcomes {
        assert_eq!(o, &opened, "every voter and the opener get the same outcome");
    }
    assert!(opened.decided);
    assert_eq!((opened.choice.as_str(), opened.directive_json.as_str()), ("sell", "\"sell\""));
    assert_eq!((opened.total_weight, opened.ballots, opened.missing), (11.0, 3, 0));
    assert_eq!(opened.tally[0], v1::VoteTally { choice: "sell".into(), weight: 6.0, ballots: 2 });

    let d = tokio::time::timeout(T, directives.recv()).await.expect("the directive arrives").unwrap();
    assert_eq!(
        (d.topic.as_str(), d.publisher.as_str(), d.content_type.as_str()),
        ("trades.directive", "desk", "application/json")
    );
    let directive: Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(directive["directive"], "sell");
    assert_eq!(directive["vote_id"], "trade-1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(directives.try_recv().is_none(), "published once");

    // A weight that is not a number is refused; the full record is there on demand.
    let bad = client.register(opts("s4", "strategy").metadata("stake", "lots")).await.unwrap();
    let v2 =
        Vote::new("trade-2", "again?", Participants::Count(2), ["buy"]).weight(VoteWeight::Metadata("stake".into()));
    desk.open_vote(&v2).await.unwrap();
    let err = bad.cast("trade-2", Ballot::option("buy")).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::BadWeight), "{err:?}");
    let (ok, out, err) = server.cli_async(&["votes", "list", "--json"]).await;
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|v| v["vote_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["trade-1", "trade-2"]);
    let first = &list[0];
    assert_eq!(first["state"], "decided");
    assert_eq!(first["outcome"]["directive"], "sell");
    // s2 and s3 voted at the same time: in either order.
    let who: std::collections::BTreeSet<(String, String)> = first["ballots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["agent_id"].as_str().unwrap().to_owned(), b["choice"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("s1", "buy"), ("s2", "sell"), ("s3", "sell")].map(|(a, c)| (a.to_owned(), c.to_owned()));
    assert_eq!(who, expected.into_iter().collect());
    let (ok, out, _) = server.cli_async(&["votes", "diagnose", "trade-2", "--json"]).await;
    assert!(ok);
    let d: Value = serde_json::from_str(&out).unwrap();
    assert!(d["issues"][0].as_str().unwrap().starts_with("open: 0 of 2"), "{d}");
    let (ok, out, _) = server.cli_async(&["votes", "list"]).await;
    assert!(ok && out.contains("trade-1") && out.contains("2 vote(s)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_voter_counts_as_missing_and_the_vote_decides_at_its_lease() {
    // Leases of 3 × 100 ms; the vote's own deadline is 60 s.
    let server = Server::start(&["--heartbeat-interval-ms", "100"]);
    let client = server.client().await;
    let s1 = client.register(opts("s1", "strategy")).await.unwrap();
    let s2 = client.register(opts("s2", "strategy")).await.unwrap();
    // A raw session that registers and then goes silent (no heartbeats), like a hung process.
    let _silent = support::silent_session(&server.addr, "s3", "strategy").await;

    let vote = Vote::new("t", "go?", strategies(), ["go", "stop"])
        .policy(VotePolicy::Majority)
        .timeout(Duration::from_secs(60));
    s1.open_vote(&vote).await.unwrap();
    let started = Instant::now();
    let a = cast(&s1, "t", Ballot::option("go"));
    let b = cast(&s2, "t", Ballot::option("go"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "decided at the lease, not the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(a, b);
    assert!(a.decided, "a lost voter is missing, not a no: {}", a.reason);
    assert_eq!((a.choice.as_str(), a.ballots, a.missing), ("go", 2, 1));
    let record = client.vote_status("t").await.unwrap();
    assert_eq!(record.missing, ["s3"]);
    assert_eq!(record.gone, ["s3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_in_progress_survives_a_restart_and_decides_once() {
    let dir = ScratchDir::new("vote");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let mut voters = Vec::new();
    for id in ["s1", "s2", "s3"] {
        voters.push(client.register(opts(id, "strategy")).await.unwrap());
    }
    let vote = Vote::new("keep", "go?", strategies(), ["go", "stop"]).timeout(Duration::from_secs(120));
    voters[0].open_vote(&vote).await.unwrap();
    let a = cast(&voters[0], "keep", Ballot::option("go"));
    let b = cast(&voters[1], "keep", Ballot::option("stop"));
    assert!(eventually(T, || async { client.vote_status("keep").await.is_ok_and(|r| r.ballots.len() == 2) }).await);

    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &["--synchronous", "full"]);
    let client = server.client().await;
    let record = client.vote_status("keep").await.expect("the vote was kept");
    assert_eq!(record.state, "open");
    let mut kept: Vec<&str> = record.ballots.iter().map(|b| b.agent_id.as_str()).collect();
    kept.sort_unstable();
    assert_eq!(kept, ["s1", "s2"], "both ballots were kept (cast at the same time: in either order)");
    assert!(!a.is_finished() && !b.is_finished(), "decided before everyone voted");

    let c = cast(&voters[2], "keep", Ballot::option("go"));
    let outcomes = [a.await.unwrap(), b.await.unwrap(), c.await.unwrap()];
    assert!(outcomes.iter().all(|o| *o == outcomes[0]), "{outcomes:?}");
    assert_eq!((outcomes[0].choice.as_str(), outcomes[0].ballots), ("go", 3), "each ballot counted once");
    let record = client.vote_status("keep").await.unwrap();
    assert_eq!(record.state, "decided");
    assert_eq!(record.ballots.len(), 3);
}
