//! The README's training step, run against a real server by `crates/cli/tests/readme.rs`: two
//! workers average their gradients.
use lockstep_client::{AgentOptions, Client};

async fn step(agent: &lockstep_client::Agent, grads: &[f32], step: u64) -> Result<Vec<f32>, lockstep_client::Error> {
    use lockstep_client::{Collective, ReduceOp};
    let c = Collective::role(format!("grad-{step}"), "worker");
    agent.allreduce(&c, grads, ReduceOp::Mean).await
}

#[tokio::main]
async fn main() -> Result<(), lockstep_client::Error> {
    let address = std::env::var("LOCKSTEP_ADDR").unwrap_or_else(|_| "127.0.0.1:7600".into());
    let client = Client::connect(&address).await?;
    let w0 = client.register(AgentOptions::new("worker-0", "worker")).await?;
    let w1 = client.register(AgentOptions::new("worker-1", "worker")).await?;
    for s in 0..3u64 {
        let (g0, g1) = ([1.0, 2.0, s as f32], [3.0, 6.0, 1.0]);
        let (m0, m1) = tokio::join!(step(&w0, &g0, s), step(&w1, &g1, s));
        let (m0, m1) = (m0?, m1?);
        assert_eq!(m0, m1, "every worker holds the same mean");
        println!("step {s}: mean gradient {m0:?}");
    }
    Ok(())
}
