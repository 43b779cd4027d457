//! End-to-end: execution traces against a real `lockstep serve` on loopback.
//!
//! * An agent records tool calls (JSON and large byte outputs, with lineage); lookups with the
//!   same input written differently hit, others miss; lineage answers both ways; bad records are
//!   refused with their reasons and nothing of them is stored.
//! * 50 agents asking `get_or_claim` for the same missing output at once: exactly one computes
//!   it, every other receives the recorded trace; a claim passes on when its holder gives up or
//!   leaves.
//! * Retention evicts the least recently used outputs past the configured bytes, counted.
//! * Lookups' hits served beside the engine: a lookup after a record's acknowledgement hits, one
//!   after an eviction misses, every hit is counted and uses its trace; a small output comes in
//!   one message to callers that read it there, in chunks to the others.
//! * Acknowledged records (inline and beside the database) survive a SIGKILL of the server.
//! * The CLI shows stats, a trace and its lineage.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockstep_client::{proto as v1, Claim, Error, Lineage, Reason, TraceOutput};
use serde_json::json;
use support::{free_listen_addr, opts, ScratchDir, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_lookup_lineage_and_bad_records() {
    let server = Server::start(&[]);
    let client = server.client().await.with_namespace("team");
    let agent = client.register(opts("runner", "tool")).await.unwrap();
    let traces = agent.traces();

    assert_eq!(traces.lookup("search.web", &json!({"q": "btc", "n": 1})).await.unwrap(), None);
    let parent = traces
        .record_json("search.web", &json!({"q": "btc", "n": 1}), &json!({"hits": ["a", "b"]}), Lineage::default())
        .await
        .unwrap();
    assert!(parent.new && parent.json && parent.producer == "runner", "{parent:?}");
    // The same input written differently finds it; the output comes back as recorded.
    let hit = client.traces().lookup("search.web", &json!({"n": 1.0, "q": "btc"})).await.unwrap().expect("a hit");
    assert_eq!(hit.info.id, parent.id);
    assert_eq!(hit.json().unwrap(), json!({"hits": ["a", "b"]}));
    assert_eq!(client.traces().lookup("search.web", &json!({"q": "eth", "n": 1})).await.unwrap(), None);
    // Another namespace does not see it.
    assert_eq!(server.client().await.traces().lookup("search.web", &json!({"q": "btc", "n": 1})).await.unwrap(), None);

    // A large output (kept beside the engine, in chunks) with lineage.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let lineage = Lineage::parents([parent.id.clone()]).with_context("workspace.persona", 3);
    let child = traces
        .record("summarize", &json!({"doc": 1}), TraceOutput::bytes(big.clone()).took(12), lineage)
        .await
        .unwrap();
    let got = client.traces().get(&child.id).await.unwrap();
    assert_eq!(got.output.as_ref(), &big[..]);
    assert_eq!((got.info.duration_ms, got.info.parents.clone()), (12, vec![parent.id.clone()]));
    let down = client.traces().lineage(&parent.id).await.unwrap();
    assert_eq!(down.children, vec![child.id.clone()]);
    let up = client.traces().lineage(&child.id).await.unwrap();
    assert_eq!(up.parents, vec![v1::TraceParent { id: parent.id.clone(), stored: true }]);
    assert_eq!(up.context, vec![v1::TraceContextRef { key: "workspace.persona".into(), version: 3 }]);
    // Recording it again is harmless; another output for it is refused.
    let again =
        traces.record("summarize", &json!({"doc": 1}), TraceOutput::bytes(big.clone()), Lineage::default()).await;
    assert!(!again.unwrap().new);

    let before = client.traces().stats().await.unwrap();
    let unknown = "0".repeat(64);
    let bad = [
        (
            traces.record_json("bad tool", &json!(1), &json!(1), Lineage::default()).await.unwrap_err(),
            Reason::InvalidArgument,
        ),
        (
            traces.record_json("t", &json!(1), &json!(1), Lineage::parents([unknown.clone()])).await.unwrap_err(),
            Reason::UnknownTrace,
        ),
        (
            traces
                .record("summarize", &json!({"doc": 1}), TraceOutput::bytes(&b"other"[..]), Lineage::default())
                .await
                .unwrap_err(),
            Reason::TraceExists,
        ),
        (client.traces().get(&unknown).await.unwrap_err(), Reason::UnknownTrace),
        (client.traces().lineage(&unknown).await.unwrap_err(), Reason::UnknownTrace),
    ];
    for (e, reason) in bad {
        assert_eq!(e.reason(), Some(reason), "{e:?}");
    }
    // At the wire: an output over the limit is refused before its bytes are sent, and bytes that
    // do not hash to the header's SHA-256 are refused whole.
    let mut raw = v1::traces_client::TracesClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap(),
    );
    let session =
        v1::TraceSession { namespace: "team".into(), agent_id: "runner".into(), resume_token: agent.resume_token() };
    let header = |size: u64, sha256: &str| v1::TraceHeader {
        session: Some(session.clone()),
        tool: "raw".into(),
        input_json: "1".into(),
        size,
        sha256: sha256.into(),
        ..Default::default()
    };
    let up = |h: v1::TraceHeader, chunk: &'static [u8]| {
        tokio_stream::iter([
            v1::TraceUpload { kind: Some(v1::trace_upload::Kind::Header(h)) },
            v1::TraceUpload { kind: Some(v1::trace_upload::Kind::Chunk(bytes::Bytes::from_static(chunk))) },
        ])
    };
    let too_large = raw.record(up(header(65 * 1024 * 1024, &unknown), b"x")).await.unwrap_err();
    assert_eq!(Error::from(too_large).reason(), Some(Reason::TraceTooLarge));
    let mismatch = raw.record(up(header(3, &lockstep_client::state_checksum(b"abd")), b"abc")).await.unwrap_err();
    assert_eq!(Error::from(mismatch).reason(), Some(Reason::TraceHashMismatch));
    let after = client.traces().stats().await.unwrap();
    assert_eq!((after.traces, after.bytes, after.recorded), (before.traces, before.bytes, before.recorded));
    assert_eq!(after.traces, 2);
    assert!(after.hits >= 2 && after.misses >= 3, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_compute_one_output_once() {
    let server = Server::start(&[]);
    let client = server.client().await;
    let mut agents = Vec::new();
    for i in 0..50 {
        agents.push(Arc::new(client.register_shared(opts(&format!("a{i}"), "tool")).await.unwrap()));
    }
    let computed = Arc::new(AtomicUsize::new(0));
    let input = json!({"prompt": "plan the week"});
    let mut tasks = Vec::new();
    for a in &agents {
        let (a, computed, input) = (a.clone(), computed.clone(), input.clone());
        tasks.push(tokio::spawn(async move {
            match a.traces().get_or_claim("llm.plan", &input).await.unwrap() {
                Claim::Compute { .. } => {
                    computed.fetch_add(1, Ordering::SeqCst);
                    let out = json!({"plan": ["mon", "tue"], "by": a.id()});
                    a.traces().record_json("llm.plan", &input, &out, Lineage::default()).await.unwrap();
                    out
                }
                Claim::Hit(t) => t.json().unwrap(),
            }
        }));
    }
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap());
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1, "computed exactly once");
    assert!(outputs.iter().all(|o| *o == outputs[0]), "every agent has the one output");
    let stats = client.traces().stats().await.unwrap();
    assert_eq!((stats.recorded, stats.claims, stats.waiters), (1, 0, 0));

    // A claim passes on: a gives up, b gets it; b leaves, c gets it.
    let key = json!({"q": 2});
    let (a, c) = (agents[0].clone(), agents[2].clone());
    let b = client.register_shared(opts("b", "tool")).await.unwrap();
    assert!(matches!(a.traces().get_or_claim("t", &key).await.unwrap(), Claim::Compute { .. }));
    let (kb, kc) = (key.clone(), key.clone());
    let waiters = |n: u64| {
        let client = client.clone();
        async move {
            support::eventually(Duration::from_secs(20), || async {
                client.traces().stats().await.unwrap().waiters == n
            })
            .await
        }
    };
    // Waiters get the claim in the order they came: b first, then c.
    let bw = tokio::spawn(async move { b.traces().get_or_claim_within("t", &kb, 30_000).await.map(|c| (c, b)) });
    assert!(waiters(1).await);
    let cw = tokio::spawn(async move { c.traces().get_or_claim_within("t", &kc, 30_000).await });
    assert!(waiters(2).await);
    // Another agent may not record what a holds.
    let e = agents[3].traces().record_json("t", &key, &json!(0), Lineage::default()).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::TraceClaimed));
    a.traces().release("t", &key).await.unwrap();
    let (claim, b) = bw.await.unwrap().unwrap();
    assert!(matches!(claim, Claim::Compute { .. }), "{claim:?}");
    b.close().await.unwrap();
    assert!(matches!(cw.await.unwrap().unwrap(), Claim::Compute { .. }));
    // A wait has a limit, named by its reason.
    let e = agents[4].traces().get_or_claim_within("t", &key, 50).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::TraceWaitTimeout));
}

/// A server keeping at most `total` bytes of outputs of at most `each` (inline up to 1000), a
/// client of it and an agent recording.
async fn with_retention(
    name: &str,
    total: u64,
    each: u64,
) -> (ScratchDir, Server, lockstep_client::Client, lockstep_client::Agent) {
    let dir = ScratchDir::new(name);
    let config = dir.join("lockstep.toml");
    let traces = format!("[traces]\nmax_total_bytes = {total}\nmax_output_bytes = {each}\ninline_bytes = 1000\n");
    std::fs::write(&config, traces).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let client = server.client().await;
    let agent = client.register(opts("r", "tool")).await.unwrap();
    (dir, server, client, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_evicts_least_recently_used_past_the_bytes() {
    let (_dir, _server, client, agent) = with_retention("traces-retention", 250_000, 100_000).await;
    let out = |n: u8| TraceOutput::bytes(vec![n; 100_000]);
    for n in 0..2u8 {
        agent.traces().record("t", &json!(n), out(n), Lineage::default()).await.unwrap();
    }
    // 0 is used again, so 1 is the least recently used when 2 needs room.
    assert!(client.traces().lookup("t", &json!(0)).await.unwrap().is_some());
    agent.traces().record("t", &json!(2), out(2), Lineage::default()).await.unwrap();
    assert!(client.traces().lookup("t", &json!(1)).await.unwrap().is_none(), "evicted");
    for n in [0u8, 2] {
        let t = client.traces().lookup("t", &json!(n)).await.unwrap().expect("kept");
        assert!(t.output.iter().all(|b| *b == n) && t.output.len() == 100_000);
    }
    let stats = client.traces().stats().await.unwrap();
    assert_eq!((stats.traces, stats.bytes, stats.evictions), (2, 200_000, 1));
    let e = agent.traces().record("t", &json!(9), TraceOutput::bytes(vec![0; 100_001]), Lineage::default()).await;
    assert_eq!(e.unwrap_err().reason(), Some(Reason::TraceTooLarge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_served_beside_the_engine_follow_records_and_evictions_and_are_counted() {
    let (_dir, server, client, agent) = with_retention("traces-index", 3000, 1000).await;
    let out = |n: u8| TraceOutput::bytes(vec![n; 900]);
    // A lookup sent after a record's acknowledgement (on another connection) finds it.
    for n in 0..3u8 {
        agent.traces().record("t", &json!({"n": n}), out(n), Lineage::default()).await.unwrap();
        let hit = client.traces().lookup("t", &json!({"n": n})).await.unwrap().expect("a hit right after the record");
        assert_eq!(hit.output.as_ref(), &[n; 900][..]);
    }
    // Used again, 0 is kept; 1 is now the least recently used and goes when 3 needs room.
    assert!(client.traces().lookup("t", &json!({"n": 0.0})).await.unwrap().is_some());
    agent.traces().record("t", &json!({"n": 3}), out(3), Lineage::default()).await.unwrap();
    assert_eq!(client.traces().lookup("t", &json!({"n": 1})).await.unwrap(), None, "evicted: no longer served");
    for n in [0u8, 2, 3] {
        let hit = client.traces().lookup("t", &json!({"n": n})).await.unwrap().expect("kept");
        assert_eq!(hit.output.as_ref(), &[n; 900][..]);
    }
    // Every hit was counted by the engine before its answer went, and the one miss.
    let stats = client.traces().stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses, stats.evictions, stats.traces, stats.bytes), (7, 1, 1, 3, 2700));

    // At the wire: a caller that reads the output beside the info gets one message; one that
    // does not (an older client) gets the info, then the output in a chunk.
    let mut raw = v1::traces_client::TracesClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap(),
    );
    for inline_output in [true, false] {
        let r = v1::TraceLookupRequest {
            namespace: String::new(),
            tool: "t".into(),
            input_json: r#"{"n":2}"#.into(),
            inline_output,
        };
        let mut down = raw.lookup(r).await.unwrap().into_inner();
        let mut messages = Vec::new();
        while let Some(m) = down.message().await.unwrap() {
            messages.push(m);
        }
        let info = match &messages[0].kind {
            Some(v1::trace_download::Kind::Info(info)) => info.clone(),
            other => panic!("the info first, not {other:?}"),
        };
        assert_eq!(info.size, 900);
        if inline_output {
            assert_eq!(messages.len(), 1, "one message");
            assert_eq!(messages[0].output.as_ref(), &[2u8; 900][..]);
        } else {
            assert_eq!(messages.len(), 2, "the info, then one chunk");
            assert!(messages[0].output.is_empty());
            assert_eq!(messages[1].kind, Some(v1::trace_download::Kind::Chunk(bytes::Bytes::from(vec![2u8; 900]))));
        }
    }
    assert_eq!(client.traces().stats().await.unwrap().hits, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_sigkill() {
    let dir = ScratchDir::new("traces-kill");
    let listen = free_listen_addr();
    let mut server = Server::start_durable(&listen, dir.path(), &[]);
    let client = server.client().await;
    let agent = client.register(opts("r", "tool")).await.unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let small =
        agent.traces().record_json("small", &json!({"a": 1}), &json!({"ok": true}), Lineage::default()).await.unwrap();
    let large = agent
        .traces()
        .record("large", &json!({"b": 2}), TraceOutput::bytes(big.clone()), Lineage::parents([small.id.clone()]))
        .await
        .unwrap();
    server.kill();
    let server = Server::start_durable(&listen, dir.path(), &[]);
    let traces = server.client().await.traces();
    assert_eq!(
        traces.lookup("small", &json!({"a": 1})).await.unwrap().expect("kept").json().unwrap(),
        json!({"ok": true})
    );
    let got = traces.get(&large.id).await.unwrap();
    assert_eq!(got.output.as_ref(), &big[..]);
    assert_eq!(traces.lineage(&small.id).await.unwrap().children, vec![large.id.clone()]);
    assert_eq!(traces.stats().await.unwrap().traces, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_stats_a_trace_and_its_lineage() {
    let server = Server::start(&[]);
    let agent = server.client().await.register(opts("r", "tool")).await.unwrap();
    let p = agent.traces().record_json("fetch", &json!({"u": 1}), &json!([1, 2]), Lineage::default()).await.unwrap();
    let c = agent
        .traces()
        .record_json("parse", &json!({"u": 1}), &json!({}), Lineage::parents([p.id.clone()]))
        .await
        .unwrap();
    let (ok, out, err) = server.cli_async(&["traces", "stats", "--json"]).await;
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["traces"], 2, "{out}");
    let (ok, out, err) = server.cli_async(&["traces", "show", &p.id, "--json"]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((shown["tool"].as_str(), &shown["output"]), (Some("fetch"), &json!([1, 2])), "{out}");
    let (ok, out, err) = server.cli_async(&["traces", "lineage", &p.id]).await;
    assert!(ok && out.contains(&c.id), "{out} {err}");
    let (ok, _, err) = server.cli_async(&["traces", "show", &"0".repeat(64)]).await;
    assert!(!ok && !err.is_empty());
}
