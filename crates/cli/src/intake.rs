//! `lockstep intake ...`: the server's intake from the command line — the rule set in force with
//! its version, the counters, and replacing the set from a file (an operator's action).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use lockstep_client::IntakeStatus;
use serde_json::{json, Value};

use crate::admin::OperatorTarget;
use crate::table;

#[derive(Args)]
pub struct IntakeArgs {
    #[command(subcommand)]
    command: IntakeCommand,
}

#[derive(Subcommand)]
enum IntakeCommand {
    /// The rule set in force (JSON) and its version.
    Show(OperatorTarget),
    /// Counters: validated, refused (by topic and publisher), dead-lettered, categorised (by
    /// rule), unmatched.
    Stats(OperatorTarget),
    /// Replace the whole rule set with FILE's: JSON (`{"schemas": [...], "routes": [...]}`) or
    /// TOML (`[[schemas]]`, `[[routes]]`). Refused whole, naming the place, if anything is wrong.
    Replace {
        file: PathBuf,
        #[command(flatten)]
        target: OperatorTarget,
    },
}

/// A rule set from a file: JSON, or TOML of the same shape.
fn read_rules(file: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match serde_json::from_str(&text) {
        Ok(v) => Ok(v),
        Err(json_error) => toml::from_str::<Value>(&text)
            .with_context(|| format!("{} is neither JSON ({json_error}) nor TOML", file.display())),
    }
}

fn counter_rows(s: &IntakeStatus) -> Vec<Vec<String>> {
    let st = &s.stats;
    let mut rows = vec![
        vec!["validated".into(), String::new(), st.validated.to_string()],
        vec!["refused".into(), String::new(), st.refused.to_string()],
    ];
    let each = |rows: &mut Vec<Vec<String>>, what: &str, map: &std::collections::BTreeMap<String, u64>| {
        rows.extend(map.iter().map(|(k, n)| vec![what.to_owned(), k.clone(), n.to_string()]));
    };
    each(&mut rows, "refused by topic", &st.refused_by_topic);
    each(&mut rows, "refused by publisher", &st.refused_by_publisher);
    rows.push(vec!["dead-lettered".into(), String::new(), st.dead_lettered.to_string()]);
    rows.push(vec!["categorised".into(), String::new(), st.categorised.to_string()]);
    each(&mut rows, "matched by rule", &st.matched_by_rule);
    rows.push(vec!["unmatched".into(), String::new(), st.unmatched.to_string()]);
    rows
}

pub async fn run(args: IntakeArgs) -> anyhow::Result<()> {
    match args.command {
        IntakeCommand::Show(t) => {
            let s = t.intake().await?.status().await?;
            if t.target.json {
                println!("{}", serde_json::to_string_pretty(&json!({ "version": s.version, "rules": s.rules }))?);
            } else {
                println!("version {}\n{}", s.version, serde_json::to_string_pretty(&s.rules)?);
            }
        }
        IntakeCommand::Stats(t) => {
            let s = t.intake().await?.status().await?;
            if t.target.json {
                let mut v = serde_json::to_value(&s.stats)?;
                v["version"] = json!(s.version);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("rule set version {}", s.version);
                print!("{}", table::render(&["COUNTER", "KEY", "COUNT"], &counter_rows(&s)));
            }
        }
        IntakeCommand::Replace { file, target } => {
            let version = target.intake().await?.replace(&read_rules(&file)?).await?;
            if target.target.json {
                println!("{}", json!({ "version": version }));
            } else {
                println!("intake rule set version {version} in force");
            }
        }
    }
    Ok(())
}
