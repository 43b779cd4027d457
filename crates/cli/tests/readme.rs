//! The README's Rust programs are `crates/client/examples/*.rs`, and they run against a real
//! server: a quick start that hangs or fails is a broken product.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::Server;

const README: &str = include_str!("../../../README.md");
const EXAMPLES: [&str; 3] = ["quick_start", "vote", "train"];

/// How long an example may take: each waits at most 10 s for anything (its own timeouts), so a
/// run past this has hung.
const HUNG_AFTER: Duration = Duration::from_secs(60);

fn example_source(name: &str) -> String {
    let path = format!("{}/../client/examples/{name}.rs", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced Rust blocks of `text`.
fn rust_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.starts_with("```rust") => current = Some(String::new()),
            Some(_) if line.starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_rust_block_of_the_readme_is_part_of_an_example() {
    let sources: Vec<String> = EXAMPLES.iter().map(|name| example_source(name)).collect();
    let blocks = rust_blocks(README);
    assert!(blocks.len() >= EXAMPLES.len(), "the README shows every example");
    for block in blocks {
        assert!(
            sources.iter().any(|source| source.contains(&block)),
            "this README block is in no example under crates/client/examples:\n{block}"
        );
    }
}

/// Runs a built example against `server` and returns its standard output.
fn run_example(server: &Server, name: &str) -> String {
    let exe_dir = PathBuf::from(env!("CARGO_BIN_EXE_lockstep")).parent().expect("target dir").join("examples");
    let exe = exe_dir.join(name);
    assert!(
        exe.exists(),
        "{} is not built: `cargo test --workspace` builds the examples (or `cargo build -p lockstep-client --examples`)",
        exe.display()
    );
    let child = Command::new(&exe)
        .env("LOCKSTEP_ADDR", &server.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let out = support::finish_within(child, HUNG_AFTER, &format!("example {name}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_readme_examples_run_against_a_real_server() {
    let server = Server::start(&[]);

    let out = run_example(&server, "quick_start");
    assert!(out.contains("market.btc.trades #"), "the agent receives its own publication:\n{out}");
    assert!(out.contains("released with [\"strategy-1\"]"), "the barrier releases:\n{out}");

    let out = run_example(&server, "vote");
    assert!(out.contains("directive \"buy\" (3 ballots, 0 missing)"), "stakes 3 + 2 of 6 buy:\n{out}");
    assert!(out.contains("executor received trades.directive:"), "the executor gets the directive:\n{out}");

    let out = run_example(&server, "train");
    for (step, last) in [(0, "0.5"), (1, "1.0"), (2, "1.5")] {
        assert!(out.contains(&format!("step {step}: mean gradient [2.0, 4.0, {last}]")), "step {step}:\n{out}");
    }
    assert!(out.contains("published version 1"), "{out}");
    assert!(
        out.contains("rank 2 of [\"worker-0\", \"worker-1\", \"worker-2\"]"),
        "the late worker joins third:\n{out}"
    );
    assert!(out.contains("late worker caught up: 12 bytes"), "{out}");
}
