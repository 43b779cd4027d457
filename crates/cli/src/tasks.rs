//! `lockstep tasks list|show|retry|dead-letter|queues`: task handoff from the command line.

use clap::{Args, Subcommand};
use lockstep_client::{proto as v1, TaskInfo};
use serde_json::{json, Value};

use crate::admin::{OperatorTarget, Target};
use crate::table;

#[derive(Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Tasks in submission order.
    List {
        /// Only tasks in this state: waiting, ready, assigned, running, completed, dead_lettered.
        #[arg(long)]
        state: Option<String>,
        /// Only tasks of this type.
        #[arg(long = "type")]
        kind: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// One task, whole: input, pinned context, holder, output, every attempt's error.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Retry a dead-lettered task (its attempts count from zero again). An operator's action:
    /// needs the admin token when the server has one; audited.
    Retry {
        id: String,
        #[command(flatten)]
        target: OperatorTarget,
    },
    /// The dead-letter list, with every attempt's error.
    DeadLetter {
        #[command(flatten)]
        target: Target,
    },
    /// Task queues per namespace and type, with the age of the oldest ready task.
    Queues {
        #[command(flatten)]
        target: Target,
    },
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A task as `--json` prints it.
pub fn task_json(t: &TaskInfo) -> Value {
    json!({
        "id": t.id, "type": t.r#type, "state": t.state, "priority": t.priority, "input": json_of(&t.input_json),
        "pinned": t.pinned.iter().map(|p| json!({"key": p.key, "version": p.version, "value": json_of(&p.value_json)})).collect::<Vec<_>>(),
        "role": t.role, "capabilities": t.capabilities, "depends_on": t.depends_on, "submitter": t.submitter,
        "submitted_at_ms": t.submitted_at_ms, "attempt": t.attempt, "failures": t.failures,
        "max_attempts": t.max_attempts, "timeout_ms": t.timeout_ms, "holder": t.holder, "deadline_ms": t.deadline_ms,
        "output": if t.output_json.is_empty() { Value::Null } else { json_of(&t.output_json) },
        "finished_at_ms": t.finished_at_ms,
        "errors": t.errors.iter().map(|e| json!({"attempt": e.attempt, "agent": e.agent, "error": e.error, "at_ms": e.at_ms})).collect::<Vec<_>>(),
    })
}

fn print_tasks(tasks: &[TaskInfo], json: bool, errors: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&tasks.iter().map(task_json).collect::<Vec<_>>())?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let last =
                if errors { t.errors.last().map(|e| e.error.clone()).unwrap_or_default() } else { t.holder.clone() };
            vec![t.id.clone(), t.r#type.clone(), t.state.clone(), t.attempt.to_string(), t.submitter.clone(), last]
        })
        .collect();
    let last = if errors { "LAST ERROR" } else { "HOLDER" };
    print!("{}", table::render(&["ID", "TYPE", "STATE", "ATTEMPT", "SUBMITTER", last], &rows));
    Ok(())
}

fn print_task(t: &TaskInfo) {
    println!(
        "task {} ({}) — {}, attempt {}, {} failed of at most {}",
        t.id, t.r#type, t.state, t.attempt, t.failures, t.max_attempts
    );
    println!("  submitted by {} at {} ms, priority {}", t.submitter, t.submitted_at_ms, t.priority);
    println!("  input: {}", t.input_json);
    for p in &t.pinned {
        println!("  pinned {} v{}: {}", p.key, p.version, p.value_json);
    }
    if !t.depends_on.is_empty() {
        println!("  depends on: {}", t.depends_on.join(", "));
    }
    if !t.holder.is_empty() {
        println!("  holder: {} (deadline {} ms)", t.holder, t.deadline_ms);
    }
    if !t.output_json.is_empty() {
        println!("  output: {}", t.output_json);
    }
    for e in &t.errors {
        println!("  attempt {} by {}: {}", e.attempt, if e.agent.is_empty() { "-" } else { &e.agent }, e.error);
    }
}

fn queue_json(q: &v1::TaskQueue) -> Value {
    json!({
        "namespace": q.namespace, "type": q.r#type, "waiting": q.waiting, "ready": q.ready, "held": q.held,
        "completed": q.completed, "dead_lettered": q.dead_lettered, "oldest_ready_age_ms": q.oldest_ready_age_ms,
    })
}

pub async fn run(args: TasksArgs) -> anyhow::Result<()> {
    match args.command {
        TasksCommand::List { state, kind, target } => {
            let tasks = target.client().await?.tasks();
            let list = tasks.list(state.as_deref().unwrap_or(""), kind.as_deref().unwrap_or("")).await?;
            print_tasks(&list, target.json, false)?;
        }
        TasksCommand::Show { id, target } => {
            let t = target.client().await?.tasks().get(&id).await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&task_json(&t))?);
            } else {
                print_task(&t);
            }
        }
        TasksCommand::Retry { id, target } => {
            let t = target.admin().await?.retry_task(&id).await?;
            if target.target.json {
                println!("{}", serde_json::to_string_pretty(&task_json(&t))?);
            } else {
                println!("task {} is {} again", t.id, t.state);
            }
        }
        TasksCommand::DeadLetter { target } => {
            let list = target.client().await?.tasks().dead_letters().await?;
            print_tasks(&list, target.json, true)?;
        }
        TasksCommand::Queues { target } => {
            let queues = target.client().await?.tasks().queues().await?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&queues.iter().map(queue_json).collect::<Vec<_>>())?);
            } else {
                let rows: Vec<Vec<String>> = queues
                    .iter()
                    .map(|q| {
                        let n = |x: u64| x.to_string();
                        vec![
                            q.namespace.clone(),
                            q.r#type.clone(),
                            n(q.waiting),
                            n(q.ready),
                            n(q.held),
                            n(q.completed),
                            n(q.dead_lettered),
                            format!("{} ms", q.oldest_ready_age_ms),
                        ]
                    })
                    .collect();
                let headers = ["NAMESPACE", "TYPE", "WAITING", "READY", "HELD", "DONE", "DEAD", "OLDEST READY"];
                print!("{}", table::render(&headers, &rows));
            }
        }
    }
    Ok(())
}
