#!/usr/bin/env bash
# Runs every test of lockstep: formatting and lints, the Rust suites (unit, property, end-to-end
# against a real server process) and the Python client's suite against a real server.
# Installs what it needs: cargo fetches the Rust side; the Python script makes its own venv.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

if [ -f clients/python/scripts/test.sh ]; then
  echo "== python client"
  cargo build -p lockstep --locked
  LOCKSTEP_BIN="$PWD/target/debug/lockstep" bash clients/python/scripts/test.sh
fi
