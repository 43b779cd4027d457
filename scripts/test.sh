#!/usr/bin/env bash
# Runs every test of lockstep: formatting and lints, the Rust suites (unit, property, end-to-end
# against a real server process) and the Python client's suite against a real server.
# Installs what it needs: cargo fetches the Rust side, apt-get tmux (for the monitor's test) and,
# with CI=true, chromium (for the dashboard's browser test, with npm's playwright-core); the
# Python script makes its own venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# A CI run builds once: incremental state would only take disk (~6 GB for this suite).
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# The end-to-end test of `lockstep monitor` runs it in a real terminal: tmux.
command -v tmux >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y tmux)
# The dashboard's browser test (crates/cli/tests/dashboard.rs) drives Debian's headless Chromium
# with playwright-core (no browser of its own; the version pinned by the lockfile). In CI (as
# root) both are installed here; elsewhere the test says what is missing and is skipped.
if [ "${CI:-}" = "true" ] && [ ! -x /usr/bin/chromium ]; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
if command -v npm >/dev/null && { [ "${CI:-}" = "true" ] || [ -x /usr/bin/chromium ]; }; then
  (cd crates/cli/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
# The workspace suite includes lockstep-sim: the whole-engine simulation and the fuzz corpus replayed
# through the fuzz targets' functions (docs/TESTING.md). The simulation runs 300 seeds here (100 in
# a bare `cargo test`; LOCKSTEP_SIM_SEEDS=N to choose). The fuzz build itself is too slow for CI;
# LOCKSTEP_FUZZ_SECONDS=N fuzzes each target for N seconds here as well.
LOCKSTEP_SIM_SEEDS="${LOCKSTEP_SIM_SEEDS:-300}" cargo test --workspace --locked

if [ -n "${LOCKSTEP_FUZZ_SECONDS:-}" ]; then
  echo "== fuzz"
  ./scripts/fuzz.sh "$LOCKSTEP_FUZZ_SECONDS"
fi

echo "== cargo test: client behaviour against a server that rewords every error message"
# Clients must decide by error reasons alone (docs/PROTOCOL.md, "Error reasons"): with
# LOCKSTEP_REWORD_ERRORS=1 the servers these tests start scramble every message and keep the reasons.
LOCKSTEP_REWORD_ERRORS=1 cargo test -p lockstep --locked --test e2e --test control --test stream --test request --test vote --test collective --test collective_shm --test group --test context --test tasks --test traces --test rounds --test streams --test history --test intake --test systems --test auth --test dashboard --test lean

if [ -f clients/python/scripts/test.sh ]; then
  echo "== python client"
  cargo build -p lockstep --locked
  LOCKSTEP_BIN="$PWD/target/debug/lockstep" bash clients/python/scripts/test.sh
  echo "== python client behaviour against a server that rewords every error message"
  LOCKSTEP_REWORD_ERRORS=1 LOCKSTEP_BIN="$PWD/target/debug/lockstep" bash clients/python/scripts/test.sh \
    tests/test_lifecycle.py tests/test_control.py tests/test_sync.py tests/test_request.py tests/test_vote.py tests/test_collective.py tests/test_group.py tests/test_context.py tests/test_tasks.py tests/test_traces.py tests/test_rounds.py tests/test_streams.py tests/test_history.py tests/test_delivery_error.py tests/test_compat_syncbus.py tests/test_intake.py tests/test_systems.py tests/test_auth.py tests/test_lean.py
fi
