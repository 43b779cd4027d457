//! `lockstep topics`: the retained topics of a namespace (topic history), with how many messages
//! and bytes each keeps and its first and last sequence numbers.

use serde_json::json;

use crate::admin::Target;
use crate::table;

pub async fn run(t: Target) -> anyhow::Result<()> {
    let topics = t.client().await?.topics().await?;
    if t.json {
        let items: Vec<_> = topics
            .iter()
            .map(|x| {
                json!({
                    "topic": x.topic,
                    "messages": x.messages,
                    "bytes": x.bytes,
                    "first_seq": x.first_seq,
                    "last_seq": x.last_seq,
                    "rule": x.rule,
                    "stored": x.stored,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|x| {
            vec![
                x.topic.clone(),
                x.messages.to_string(),
                x.bytes.to_string(),
                x.first_seq.to_string(),
                x.last_seq.to_string(),
                x.rule.clone(),
                if x.stored { "store" } else { "memory" }.to_owned(),
            ]
        })
        .collect();
    print!("{}", table::render(&["TOPIC", "MESSAGES", "BYTES", "FIRST_SEQ", "LAST_SEQ", "RULE", "KEPT_IN"], &rows));
    println!("{} retained topic(s)", topics.len());
    Ok(())
}
