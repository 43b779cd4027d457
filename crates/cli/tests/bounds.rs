//! End-to-end: the server's tables are bounded, and what is gone frees its place. Namespaces that
//! hold nothing are forgotten (registry watches of made-up namespaces never use up the namespace
//! limit), registry watchers are capped, and a watcher that never reads is cut off by the bytes
//! queued for it, while the others go on.

mod support;

use std::time::Duration;

use lockstep_client::{proto as v1, Client, Error, Reason};
use support::{eventually, opts, reworded, ScratchDir, Server};

const T: Duration = Duration::from_secs(10);

/// A server whose `[limits]` are `limits` (TOML lines).
fn server_with_limits(dir: &ScratchDir, limits: &str) -> Server {
    let file = dir.join("lockstep.toml");
    std::fs::write(&file, format!("[limits]\n{limits}\n")).unwrap();
    Server::start(&["--config", file.to_str().unwrap()])
}

/// Opens a registry watch expected to be refused, and returns the refusal.
async fn refused_watch(client: &Client) -> Error {
    let outcome = tokio::time::timeout(T, async {
        let mut events = client.watch_registry().await?;
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ended without an error"),
                Err(status) => return Err::<(), Error>(status.into()),
            }
        }
    })
    .await
    .expect("the refusal comes at once");
    outcome.unwrap_err()
}

fn assert_limit(err: &Error, what: &str) {
    assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
    assert_eq!(err.reason(), Some(Reason::Limit), "{err:?}");
    assert!(reworded() || err.to_string().contains(what), "{err}");
}

#[tokio::test]
async fn namespaces_held_by_nothing_never_use_up_the_namespace_limit() {
    let dir = ScratchDir::new("bounds-namespaces");
    let server = server_with_limits(&dir, "max_namespaces = 2");
    let client = server.client().await;
    // Watches of twenty made-up namespaces, kept open: they used to take every namespace's place.
    let mut watches = Vec::new();
    for i in 0..20 {
        watches.push(client.with_namespace(format!("made-up-{i}")).watch_registry().await.unwrap());
    }
    let _in_default = client.register(opts("a", "worker")).await.expect("`default` is still free");
    let in_b = client.with_namespace("b").register(opts("a", "worker")).await.unwrap();
    let Err(err) = client.with_namespace("c").register(opts("a", "worker")).await else {
        panic!("a third namespace in use was accepted");
    };
    assert_limit(&err, "namespaces");
    drop(watches);

    // The last agent of `b` leaves: `b` holds nothing, and `c` can take its place.
    in_b.close().await.unwrap();
    let c = client.with_namespace("c");
    assert!(eventually(T, || async { c.register(opts("a", "worker")).await.is_ok() }).await);
}

#[tokio::test]
async fn registry_watchers_are_capped_per_namespace_and_in_total() {
    let dir = ScratchDir::new("bounds-watchers");
    let server = server_with_limits(&dir, "max_registry_watchers = 3\nmax_registry_watchers_per_namespace = 2");
    let client = server.client().await;
    let first = client.watch_registry().await.unwrap();
    let _second = client.watch_registry().await.unwrap();
    assert_limit(&refused_watch(&client).await, "registry watchers per namespace");
    let _other = client.with_namespace("other").watch_registry().await.unwrap();
    assert_limit(&refused_watch(&client.with_namespace("third")).await, "registry watchers");

    // A watch that ends frees its place: a new one is accepted (it hears an agent join) once the
    // server has seen the old one go.
    drop(first);
    let third = client.with_namespace("third");
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let accepted = eventually(T, || async {
        let mut events = third.watch_registry().await.unwrap();
        let id = format!("probe-{}", attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let _probe = third.register(opts(&id, "probe")).await.unwrap();
        matches!(tokio::time::timeout(T, events.message()).await, Ok(Ok(Some(_))))
    })
    .await;
    assert!(accepted, "no watch accepted after one ended");
}

#[tokio::test]
async fn a_registry_watcher_that_never_reads_is_cut_off_by_bytes_while_the_others_go_on() {
    const TOGGLES: usize = 200;
    let dir = ScratchDir::new("bounds-backlog");
    let server = server_with_limits(&dir, "max_registry_backlog_bytes = 262144");
    // Each watcher on a connection of its own: the stalled ones hold only their own windows.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(server.client().await.watch_registry().await.unwrap());
    }
    let mut reader = server.client().await.watch_registry().await.unwrap();
    let counting = tokio::spawn(async move {
        let mut statuses = 0;
        while statuses < TOGGLES {
            let event = reader.message().await.expect("the reader is never cut off").expect("not ended");
            statuses += usize::from(event.kind == v1::registry_event::Kind::Status as i32);
        }
        statuses
    });

    // An agent carrying the largest metadata allowed (64 entries of 1 KiB) toggles its status.
    let mut options = opts("big", "worker");
    for i in 0..64 {
        options = options.metadata(format!("key-{i:02}"), "x".repeat(1024));
    }
    let big = server.client().await.register(options).await.unwrap();
    for i in 0..TOGGLES {
        let status = if i % 2 == 0 { v1::AgentStatus::Busy } else { v1::AgentStatus::Idle };
        big.set_status(status).await.unwrap();
    }
    assert_eq!(tokio::time::timeout(T, counting).await.expect("the reader got every event").unwrap(), TOGGLES);

    for mut events in stalled {
        let mut received = 0;
        let err: Error = loop {
            match tokio::time::timeout(T, events.message()).await.expect("the stream ends") {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("ended without an error after {received} events"),
                Err(status) => break status.into(),
            }
        };
        assert_limit(&err, "bytes of registry events");
        assert!(received < TOGGLES, "cut off before the end, after {received} events");
    }
    big.set_status(v1::AgentStatus::Active).await.expect("the agent is unaffected");
}
