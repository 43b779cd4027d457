//! End-to-end: the HTTP listener (`serve --http-listen`) as Prometheus, a load balancer and an
//! orchestrator use it, against a real `lockstep serve`, over plain HTTP/1.1 on loopback.
//!
//! * `/metrics` is OpenMetrics text naming the server's agents by namespace and status, its message
//!   and sync point counters, the driver's turns and, with a data directory, the store's commits and
//!   database size; `/healthz` and `/readyz` answer 200; anything else is 404.
//! * A listener beyond loopback is refused unless the operator opts in (`--allow-public`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use lockstep_client::Participants;
use support::{free_listen_addr, http_get as get, opts, sample, serve_fails, ScratchDir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_over_http() {
    let server = Server::start(&["--http-listen", "127.0.0.1:0"]);
    let client = server.client().await;
    let a = client.register(opts("a", "worker").interests(["feed"])).await.unwrap();
    let b = client.register(opts("b", "worker")).await.unwrap();
    for i in 0..10u32 {
        b.publish("feed", i.to_string()).await.unwrap();
    }
    b.publish_confirmed("feed", &b"last"[..]).await.unwrap();
    // a reads (and so acknowledges) what it was sent.
    let mut deliveries = a.deliveries().unwrap();
    for _ in 0..11 {
        tokio::time::timeout(Duration::from_secs(20), deliveries.recv()).await.unwrap().unwrap();
    }
    let both = || Participants::Agents(vec!["a".into(), "b".into()]);
    let (x, y) = tokio::join!(
        a.sync("gate", both(), Duration::from_secs(20), Bytes::new()),
        b.sync("gate", both(), Duration::from_secs(20), Bytes::new())
    );
    x.unwrap();
    y.unwrap();

    let (status, head, text) = get(&server.http_addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(head.contains("content-type: application/openmetrics-text"), "{head}");
    assert_eq!(sample(&text, "lockstep_agents{namespace=\"default\",status=\"active\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "lockstep_messages_published_total"), Some(11.0), "{text}");
    assert_eq!(sample(&text, "lockstep_messages_delivered_total"), Some(11.0), "{text}");
    assert_eq!(sample(&text, "lockstep_sync_points_total{outcome=\"completed\"}"), Some(1.0), "{text}");
    assert!(sample(&text, "lockstep_driver_turn_duration_seconds_count").is_some_and(|n| n > 0.0), "{text}");
    assert_eq!(sample(&text, "lockstep_barrier_wait_seconds_count"), Some(1.0), "{text}");
    assert!(sample(&text, "lockstep_barrier_wait_seconds_bucket{le=\"+Inf\"}") == Some(1.0), "{text}");
    // Acknowledgements travel after the reads: the histogram fills once they reach the server.
    let acked = || async {
        let (_, _, text) = get(&server.http_addr, "/metrics").await;
        sample(&text, "lockstep_delivery_ack_seconds_count").is_some_and(|n| n > 0.0)
    };
    assert!(support::eventually(Duration::from_secs(20), acked).await, "deliveries acknowledged are measured");
    assert!(!text.contains("lockstep_store_database_bytes"), "in memory there is no database:\n{text}");
    assert!(text.ends_with("# EOF\n"));

    assert_eq!(get(&server.http_addr, "/healthz").await.0, 200);
    let (status, _, body) = get(&server.http_addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(get(&server.http_addr, "/nothing-here").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_data_directory_the_store_is_measured() {
    let dir = ScratchDir::new("http-durable");
    let server = Server::start_durable(&free_listen_addr(), dir.path(), &["--http-listen", "127.0.0.1:0"]);
    let client = server.client().await;
    let agent = client.register(opts("writer", "worker")).await.unwrap();
    agent.update_state(&serde_json::json!({"pnl": 1})).await.unwrap();
    let (_, _, text) = get(&server.http_addr, "/metrics").await;
    assert!(sample(&text, "lockstep_store_database_bytes").is_some_and(|b| b > 0.0), "{text}");
    assert!(sample(&text, "lockstep_store_commit_duration_seconds_count").is_some_and(|n| n > 0.0), "{text}");
    assert_eq!(sample(&text, "lockstep_state_updates_total"), Some(1.0), "{text}");
}

#[test]
fn an_http_listener_beyond_loopback_needs_the_explicit_opt_in() {
    // Its endpoints ask for no token: an admin token does not make it safe to expose.
    let (refused, stderr) = serve_fails(&["--http-listen", "0.0.0.0:0", "--admin-token", "t"]);
    assert!(refused && stderr.contains("HTTP listener") && stderr.contains("allow_public"), "{stderr}");
    let open = Server::start(&["--http-listen", "0.0.0.0:0", "--allow-public"]);
    assert!(open.http_addr.starts_with("0.0.0.0:"), "{}", open.http_addr);
    // `--http-public` is the opt-in's former name, still accepted.
    let aliased = Server::start(&["--http-listen", "0.0.0.0:0", "--http-public"]);
    assert!(!aliased.http_addr.is_empty());
}
