//! `lockstep votes list|status|diagnose`: votes open and decided, with the full record (who voted
//! what, who abstained, who never voted) read from the server on demand.

use clap::{Args, Subcommand};
use lockstep_client::proto as v1;
use serde_json::{json, Value};

use crate::admin::Target;
use crate::table;

#[derive(Args)]
pub struct VotesArgs {
    #[command(subcommand)]
    command: VotesCommand,
}

#[derive(Subcommand)]
enum VotesCommand {
    /// Every vote, open or retained.
    List(Target),
    /// One vote: its ballots, who is missing, its outcome.
    Status(VoteIdArgs),
    /// One vote explained, with recommendations.
    Diagnose(VoteIdArgs),
}

#[derive(Args)]
struct VoteIdArgs {
    /// The vote id.
    id: String,
    #[command(flatten)]
    target: Target,
}

fn outcome_json(o: &v1::VoteOutcome) -> Value {
    json!({
        "decided": o.decided, "choice": o.choice,
        "directive": serde_json::from_str::<Value>(&o.directive_json).unwrap_or(Value::Null),
        "reason": (!o.reason.is_empty()).then_some(&o.reason),
        "tally": o.tally.iter().map(|t| json!({"choice": t.choice, "weight": t.weight, "ballots": t.ballots})).collect::<Vec<_>>(),
        "groups": o.groups, "ballots": o.ballots, "abstentions": o.abstentions, "missing": o.missing,
        "total_weight": o.total_weight, "decided_at_ms": o.decided_at_ms,
    })
}

/// A vote's record as JSON (`--json`).
pub fn vote_json(v: &v1::VoteRecord) -> Value {
    let ballots: Vec<Value> = v
        .ballots
        .iter()
        .map(|b| {
            json!({
                "agent_id": b.agent_id, "role": b.role,
                "choice": (!b.abstained).then_some(&b.choice),
                "abstained": b.abstained, "abstain_reason": b.abstained.then_some(&b.abstain_reason),
                "confidence": b.confidence, "weight": b.weight, "veto": b.veto, "at_ms": b.at_ms,
            })
        })
        .collect();
    json!({
        "vote_id": v.vote_id, "question": v.question, "state": v.state, "opener": v.opener,
        "participants": v.participants, "policy": v.policy, "weight": v.weight, "topic": v.topic,
        "required_count": v.required_count, "ballots": ballots, "missing": v.missing,
        "missing_count": v.missing_count, "gone": v.gone, "created_at_ms": v.created_at_ms,
        "deadline_ms": v.deadline_ms, "finished_at_ms": (v.finished_at_ms > 0).then_some(v.finished_at_ms),
        "outcome": v.outcome.as_ref().map(outcome_json),
    })
}

fn print_record(v: &v1::VoteRecord) {
    println!("vote          {}", v.vote_id);
    println!("question      {}", v.question);
    println!("state         {}", v.state);
    println!("opened by     {}", v.opener);
    println!("participants  {}", v.participants);
    println!("policy        {} (weights: {})", v.policy, v.weight);
    if !v.topic.is_empty() {
        println!("topic         {}", v.topic);
    }
    println!("ballots       {} of {}", v.ballots.len(), v.required_count);
    let rows: Vec<Vec<String>> = v
        .ballots
        .iter()
        .map(|b| {
            let choice = if b.abstained { format!("(abstained: {})", b.abstain_reason) } else { b.choice.clone() };
            let confidence = b.confidence.map_or_else(String::new, |c| format!("{c}"));
            vec![
                b.agent_id.clone(),
                choice,
                format!("{}", b.weight),
                confidence,
                if b.veto { "veto".into() } else { String::new() },
            ]
        })
        .collect();
    if !rows.is_empty() {
        print!("{}", table::render(&["AGENT", "CHOICE", "WEIGHT", "CONFIDENCE", "VETO"], &rows));
    }
    if v.missing_count > 0 {
        let who = if v.missing.is_empty() { String::new() } else { format!(": {}", v.missing.join(", ")) };
        println!("missing       {}{who}", v.missing_count);
    }
    if !v.gone.is_empty() {
        println!("gone          {}", v.gone.join(", "));
    }
    if let Some(o) = &v.outcome {
        if o.decided {
            println!("decided       {} (directive {})", o.choice, o.directive_json);
        } else {
            println!("no decision   {}", o.reason);
        }
    }
}

pub async fn run(args: VotesArgs) -> anyhow::Result<()> {
    match args.command {
        VotesCommand::List(t) => {
            let votes = t.client().await?.list_votes().await?;
            if t.json {
                println!("{}", serde_json::to_string_pretty(&votes.iter().map(vote_json).collect::<Vec<_>>())?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = votes
                .iter()
                .map(|v| {
                    let result = v.outcome.as_ref().map_or_else(String::new, |o| {
                        if o.decided {
                            o.choice.clone()
                        } else {
                            format!("none: {}", o.reason)
                        }
                    });
                    vec![
                        v.vote_id.clone(),
                        v.state.clone(),
                        format!("{}/{}", v.ballots.len(), v.required_count),
                        v.missing_count.to_string(),
                        result,
                    ]
                })
                .collect();
            print!("{}", table::render(&["VOTE_ID", "STATE", "BALLOTS", "MISSING", "OUTCOME"], &rows));
            println!("{} vote(s)", votes.len());
        }
        VotesCommand::Status(a) => {
            let v = a.target.client().await?.vote_status(&a.id).await?;
            if a.target.json {
                println!("{}", serde_json::to_string_pretty(&vote_json(&v))?);
            } else {
                print_record(&v);
            }
        }
        VotesCommand::Diagnose(a) => {
            let d = a.target.client().await?.diagnose_vote(&a.id).await?;
            let status = d.status.unwrap_or_default();
            if a.target.json {
                let v = json!({"status": vote_json(&status), "issues": d.issues, "recommendations": d.recommendations});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_record(&status);
                crate::admin::print_diagnosis(&d.issues, &d.recommendations);
            }
        }
    }
    Ok(())
}
