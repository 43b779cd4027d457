//! Helpers of the collectives' end-to-end tests (collective.rs, collective_shm.rs).

use std::time::Duration;

use lockstep_client::{Agent, Collective, Element, Error, ReduceOp};
use lockstep_core::collective::reduce;

use super::{opts, Server};

/// How long one collective of a test may take.
pub const T: Duration = Duration::from_secs(20);

/// Registers `ids` with `role`, in order.
pub async fn members(server: &Server, ids: &[&str], role: &str) -> Vec<Agent> {
    let client = server.client().await;
    let mut agents = Vec::new();
    for id in ids {
        agents.push(client.register(opts(id, role)).await.expect("registers"));
    }
    agents
}

/// Runs `f` on every agent at once and returns their results in order.
pub async fn all<R, F, Fut>(agents: &[Agent], f: F) -> Vec<Result<R, Error>>
where
    R: Send + 'static,
    F: Fn(usize, Agent) -> Fut,
    Fut: std::future::Future<Output = Result<R, Error>> + Send + 'static,
{
    let tasks: Vec<_> = agents.iter().enumerate().map(|(i, a)| tokio::spawn(f(i, a.clone()))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(tokio::time::timeout(T, t).await.expect("finishes in time").expect("no panic"));
    }
    out
}

/// `v` little-endian, as on the wire.
pub fn bytes_of<E: Element>(v: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    E::encode(v, &mut out);
    out
}

/// Member i's array: values that make the order of a float sum visible.
pub fn data<E: Element>(i: usize, len: usize, make: fn(f64) -> E) -> Vec<E> {
    (0..len)
        .map(|k| make(((k * 7 + i * 13) % 23) as f64 * if (k + i).is_multiple_of(3) { -1e3 } else { 0.37 }))
        .collect()
}

/// Whether member i asks for shared memory.
pub type Asks = fn(usize) -> bool;

/// Every collective for type `E` among `agents`, member i asking for shared memory when
/// `shm(i)`; every result checked bitwise against the reference.
pub async fn every_op_for<E: Element + PartialEq + std::fmt::Debug>(
    agents: &[Agent],
    tag: &str,
    len: usize,
    shm: Asks,
    make: fn(f64) -> E,
) {
    let n = agents.len();
    let ids: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let inputs: Vec<Vec<E>> = (0..n).map(|i| data(i, len, make)).collect();
    let encoded: Vec<Vec<u8>> = inputs.iter().map(|v| bytes_of(v)).collect();
    let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    let call = |id: String| {
        let ids = ids.clone();
        move |i: usize| Collective::agents(id.clone(), ids.clone()).shared_memory(shm(i))
    };
    for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Min, ReduceOp::Max, ReduceOp::Product] {
        let c = call(format!("{tag}-{op:?}"));
        let results = all(agents, |i, a| {
            let (c, x) = (c(i), inputs[i].clone());
            async move { a.allreduce(&c, &x, op).await }
        })
        .await;
        let expected = reduce(E::DTYPE, op, &refs);
        for r in results {
            assert_eq!(bytes_of(&r.expect("allreduce completes")), expected, "{tag} {op:?}");
        }
        let c = call(format!("{tag}-rs-{op:?}"));
        let results = all(agents, |i, a| {
            let (c, x) = (c(i), inputs[i].clone());
            async move { a.reduce_scatter(&c, &x, op).await }
        })
        .await;
        let size = E::DTYPE.size();
        for (r, result) in results.into_iter().enumerate() {
            let (a, b) = lockstep_core::collective::CollectiveSpec::block(len as u64, r as u32, n as u32);
            assert_eq!(
                bytes_of(&result.expect("reduce_scatter completes")),
                expected[a as usize * size..b as usize * size],
                "{tag} reduce_scatter {op:?}"
            );
        }
    }
    let c = call(format!("{tag}-bcast"));
    let results = all(agents, |i, a| {
        let (c, x) = (c(i), inputs[i].clone());
        async move { a.broadcast(&c, 1, &x).await }
    })
    .await;
    for r in results {
        assert_eq!(r.expect("broadcast completes"), inputs[1], "{tag} broadcast");
    }
    let c = call(format!("{tag}-gather"));
    let results = all(agents, |i, a| {
        let (c, x) = (c(i), inputs[i].clone());
        async move { a.allgather(&c, &x).await }
    })
    .await;
    let concatenated: Vec<E> = inputs.concat();
    for r in results {
        assert_eq!(r.expect("allgather completes"), concatenated, "{tag} allgather");
    }
}
