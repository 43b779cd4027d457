//! The README's training steps, run against a real server by `crates/cli/tests/readme.rs`: two
//! workers average their gradients, publish their parameters as a replica group's state, and a
//! third worker joins late, catches up from that state and takes part in the next step.
use lockstep_client::{AgentOptions, Client};

async fn step(agent: &lockstep_client::Agent, grads: &[f32], step: u64) -> Result<Vec<f32>, lockstep_client::Error> {
    use lockstep_client::{Collective, ReduceOp};
    let c = Collective::role(format!("grad-{step}"), "worker");
    agent.allreduce(&c, grads, ReduceOp::Mean).await
}

async fn catch_up(agent: &lockstep_client::Agent) -> Result<Vec<u8>, lockstep_client::Error> {
    let membership = agent.join_group("model").await?;
    println!("rank {} of {:?}", membership.rank, membership.members);
    let current = agent.fetch_group_state("model").await?; // its SHA-256 is checked here
    Ok(current.bytes.to_vec())
}

async fn replica_step(
    agent: &lockstep_client::Agent,
    params: &[u8],
    grads: &[f32],
    step: u64,
) -> Result<Vec<f32>, lockstep_client::Error> {
    use lockstep_client::{state_checksum, Collective, ReduceOp};
    let c = Collective::replica(format!("step-{step}"), "model").checksum(state_checksum(params));
    let out = agent.allreduce_outcome(&c, grads, ReduceOp::Mean).await?;
    assert!(out.diverged.is_empty(), "replicas that diverged: {:?}", out.diverged);
    Ok(out.result)
}

/// Parameters as the bytes of a replica group's state.
fn to_bytes(params: &[f32]) -> Vec<u8> {
    params.iter().flat_map(|p| p.to_le_bytes()).collect()
}

#[tokio::main]
async fn main() -> Result<(), lockstep_client::Error> {
    use lockstep_client::state_checksum;
    let address = std::env::var("LOCKSTEP_ADDR").unwrap_or_else(|_| "127.0.0.1:7600".into());
    let client = Client::connect(&address).await?;
    let w0 = client.register(AgentOptions::new("worker-0", "worker")).await?;
    let w1 = client.register(AgentOptions::new("worker-1", "worker")).await?;
    let mut params = vec![0.0f32; 3];
    for s in 0..3u64 {
        let (g0, g1) = ([1.0, 2.0, s as f32], [3.0, 6.0, 1.0]);
        let (m0, m1) = tokio::join!(step(&w0, &g0, s), step(&w1, &g1, s));
        let (m0, m1) = (m0?, m1?);
        assert_eq!(m0, m1, "every worker holds the same mean");
        println!("step {s}: mean gradient {m0:?}");
        params.iter_mut().zip(&m0).for_each(|(p, g)| *p -= 0.1 * g);
    }

    // The two form a replica group; one publishes the parameters they hold.
    w0.join_group("model").await?;
    w1.join_group("model").await?;
    let published = w0.publish_group_state("model", to_bytes(&params)).await?;
    println!("published version {}", published.version);

    // A third worker joins late and catches up; then the three meet at step 3 (a collective over
    // a replica group is over its members when the first call comes: after the join).
    let w2 = client.register(AgentOptions::new("worker-2", "worker")).await?;
    let fetched = catch_up(&w2).await?;
    assert_eq!(fetched, to_bytes(&params), "the late worker holds the published parameters");
    let grads = [1.0f32, 1.0, 1.0];
    let held = to_bytes(&params);
    let (a, b, c) = tokio::join!(
        replica_step(&w0, &held, &grads, 3),
        replica_step(&w1, &held, &grads, 3),
        replica_step(&w2, &fetched, &grads, 3),
    );
    let (a, b, c) = (a?, b?, c?);
    assert!(a == b && b == c, "every replica holds the same mean");
    println!("late worker caught up: {} bytes, checksum {}, nobody diverged", fetched.len(), state_checksum(&fetched));
    Ok(())
}
