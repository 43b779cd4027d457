#!/usr/bin/env bash
# Runs every test of lockstep: formatting and lints, the Rust suites (unit, property, end-to-end
# against a real server process) and the Python client's suite against a real server.
# Installs what it needs: cargo fetches the Rust side, apt-get tmux (for the monitor's test); the
# Python script makes its own venv.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# The end-to-end test of `lockstep monitor` runs it in a real terminal: tmux.
command -v tmux >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y tmux)
cargo test --workspace --locked

if [ -f clients/python/scripts/test.sh ]; then
  echo "== python client"
  cargo build -p lockstep --locked
  LOCKSTEP_BIN="$PWD/target/debug/lockstep" bash clients/python/scripts/test.sh
fi
