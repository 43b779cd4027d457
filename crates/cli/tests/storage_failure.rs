//! A write that the disk refuses: the server stops with a clear error, acknowledges nothing it could
//! not commit, and a server started again on the same directory has every acknowledged update.
//!
//! The disk fills up for real, as far as lockstep can tell: the server runs under a file-size limit
//! (`ulimit -f`, with SIGXFSZ ignored so that the write fails instead of killing the process), and
//! its database's write-ahead log grows into it.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_client::Client;
use serde_json::json;
use support::{free_listen_addr, opts, ScratchDir, Server};

/// The file-size limit, in 512-byte blocks: room for the new database and some commits.
const FILE_BLOCKS: u32 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_stops_the_server_without_losing_what_was_acknowledged() {
    let dir = ScratchDir::new("disk-full");
    let addr = free_listen_addr();
    let script = format!(
        "ulimit -f {FILE_BLOCKS}; trap '' XFSZ; exec '{}' serve --listen {addr} --data-dir '{}'",
        env!("CARGO_BIN_EXE_lockstep"),
        dir.path().display()
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .env("LOCKSTEP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");

    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match Client::connect(&addr).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("the limited server never listened: {e}"),
        }
    };
    let writer = client.register(opts("writer", "worker").reconnect_for(None)).await.expect("registers");
    // Each update replaces 4 KiB of state: the log grows by a few pages per commit.
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for n in 0..5_000u64 {
        let pad = format!("{n:0>4096}");
        match writer.update_state(&json!({ "n": n, "pad": pad })).await {
            Ok(version) => acknowledged.push((version, n)),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let refusal = refusal.expect("the disk filled up before 5,000 updates");
    let status = tokio::task::spawn_blocking(move || {
        let output = child.wait_with_output().expect("the server exits");
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    });
    let (status, stderr) = tokio::time::timeout(Duration::from_secs(20), status).await.expect("exits").unwrap();
    assert!(
        acknowledged.len() > 5,
        "some updates fit before the disk filled: {} ({refusal}); {stderr}",
        acknowledged.len()
    );
    assert!(!status.success(), "the server stops with a failure status; stderr: {stderr}");
    assert!(stderr.contains("could not store a change"), "says why it stopped: {stderr}");
    assert!(stderr.contains("lockstep.db"), "names the database: {stderr}");
    println!("after {} acknowledged updates the client saw: {refusal}", acknowledged.len());

    // Started again without the limit, the server has every acknowledged update.
    let server = Server::start_durable("127.0.0.1:0", dir.path(), &[]);
    let (version, state) = server.client().await.get_state("writer").await.expect("the writer is kept");
    let &(last_version, last_n) = acknowledged.last().expect("acknowledged updates");
    assert!(version >= last_version, "kept version {version} < acknowledged {last_version}");
    if version == last_version {
        assert_eq!(state["n"], json!(last_n), "the acknowledged value at that version");
    }
    drop(server);
    let store = lockstep_store::Store::open(dir.path(), lockstep_store::Durability::Normal).expect("opens");
    store.integrity_check().expect("the database is intact");
}
