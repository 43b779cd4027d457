#!/usr/bin/env bash
# Runs lockstep's coverage-guided fuzz targets (fuzz/, cargo-fuzz with libFuzzer) for SECONDS each
# (default 60): `scripts/fuzz.sh [SECONDS] [TARGET...]`, targets `session_frame` and
# `engine_steps` by default. Each run starts from the corpus kept in fuzz/corpus/<target>; what it
# finds new goes to $CARGO_TARGET_DIR/fuzz-corpus/<target> (not into the repository: add an input to
# fuzz/corpus by hand, or `cargo fuzz cmin`, when it is worth keeping). A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script; `cargo fuzz run <target> <file>` replays it, and
# `cargo test -p lockstep-sim --test corpus` replays the kept corpus without a fuzzing build.
#
# cargo fuzz builds with nightly-only flags (sanitizers, coverage instrumentation); stable rustc
# accepts them with RUSTC_BOOTSTRAP=1, which this script sets for the fuzz build only.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(session_frame engine_steps)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
scratch="${CARGO_TARGET_DIR:-$PWD/fuzz/target}/fuzz-corpus"

echo "== cargo fuzz build"
(cd fuzz && cargo fuzz build)
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$scratch/$target"
  # -timeout: one input taking over 10 s is a hang, reported like a crash.
  (cd fuzz && cargo fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1)
done
