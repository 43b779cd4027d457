//! `lockstep bench`'s task handoff scenario (`task-handoff`): one submitter and 20 executors
//! asking for work; the submitter keeps at most one task per executor outstanding, so the figures
//! are the handoff's, not a queue's. Measured with one clock (this process): from the submitter's
//! call to an executor holding the task (the submit time travels in the input), and from the
//! executor's completion call to the submitter holding the `completed` event (the completion time
//! travels in the output).

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use lockstep_client::{AgentOptions, Client, TaskSpec};
use serde_json::json;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

/// How long the submitter waits for the next event before it fails.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The two measures: submit → held, completion → submitter knows.
pub struct Handoff {
    pub executors: usize,
    pub tasks: u64,
    pub elapsed: Duration,
    pub assigned: Histogram<u64>,
    pub completed: Histogram<u64>,
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// Runs `tasks` tasks through `executors` executors on the server at `addr`.
pub async fn measure(addr: &str, executors: usize, tasks: u64) -> anyhow::Result<Handoff> {
    let client = Client::connect(addr).await?.with_namespace("bench-task-handoff");
    let epoch = Instant::now();
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<u64>();
    let mut runners = Vec::new();
    for i in 0..executors {
        let agent = client.register(AgentOptions::new(format!("executor-{i}"), "executor")).await?;
        let mut work = agent.tasks(["bench"], 0).await?;
        let held_tx = held_tx.clone();
        runners.push(tokio::spawn(async move {
            while let Some(a) = work.next().await {
                let submitted = a.input["t"].as_u64().unwrap_or(0);
                let _ = held_tx.send(micros(epoch).saturating_sub(submitted));
                a.complete(&json!({ "d": micros(epoch) })).await?;
            }
            anyhow::Ok(agent)
        }));
    }
    drop(held_tx);
    let submitter = client.register(AgentOptions::new("submitter", "planner")).await?;
    let mut events = submitter.task_events().context("task events are taken once")?;
    // Events are read (and timed) as they come, beside the submissions: each completion frees a
    // place in the window.
    let window = Arc::new(Semaphore::new(executors));
    let reader = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut completed = crate::bench::hist();
            while completed.len() < tasks {
                let e = tokio::time::timeout(EVENT_WAIT, events.recv())
                    .await
                    .with_context(|| format!("no task event within {EVENT_WAIT:?} ({} completed)", completed.len()))?
                    .context("the submitter's session ended")?;
                if e.kind == "completed" {
                    let output: serde_json::Value = serde_json::from_str(&e.output_json)?;
                    let at = output["d"].as_u64().unwrap_or(0);
                    completed.record(micros(epoch).saturating_sub(at).max(1))?;
                    window.add_permits(1);
                } else if e.kind == "dead_lettered" {
                    anyhow::bail!("task {} was dead-lettered: {}", e.id, e.error);
                }
            }
            anyhow::Ok(completed)
        })
    };
    let start = Instant::now();
    for _ in 0..tasks {
        window.acquire().await?.forget();
        let spec = TaskSpec::new("bench", json!({ "t": micros(epoch) }));
        submitter.submit_task(&spec).await?;
    }
    let completed = reader.await??;
    let elapsed = start.elapsed();
    let mut assigned = crate::bench::hist();
    while let Ok(us) = held_rx.try_recv() {
        assigned.record(us.max(1))?;
    }
    for r in runners {
        r.abort();
    }
    Ok(Handoff { executors, tasks, elapsed, assigned, completed })
}
