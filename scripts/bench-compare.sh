#!/usr/bin/env bash
# Compares two lockstep binaries with `lockstep bench`, alternating them ROUNDS times in one
# session (the machine is shared and noisy: only runs taken side by side compare), then prints
# each row's median for both and the new one's median relative to the old.
#
#   scripts/bench-compare.sh OLD_BIN NEW_BIN [ROUNDS] [-- extra bench arguments]
#   scripts/bench-compare.sh /tmp/old/lockstep target/release/lockstep 3 -- --seconds 3
#
# Results (every run's JSON and the summary) go to $BENCH_OUT (default ./bench-compare).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
shift $(( $# >= 3 ? 3 : $# ))
[ "${1:-}" = "--" ] && shift
out=${BENCH_OUT:-bench-compare}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    echo "== round $round: $which ($bin)" >&2
    "$bin" bench --json "$out/$which-$round.json" "$@" >/dev/null
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {w: [json.load(open(f"{out}/{w}-{r}.json"))["rows"] for r in range(1, rounds + 1)] for w in ("old", "new")}
key = lambda row: (row["scenario"], row["n"])
def medians(which):
    by = {}
    for rows in runs[which]:
        for row in rows:
            by.setdefault(key(row), []).append(row)
    return {k: {f: statistics.median(r[f] for r in v) for f in ("rate", "p50_us", "p99_us")} for k, v in by.items()}
old, new = medians("old"), medians("new")
print(f"| scenario | N | old rate | new rate | new/old | old p50 ms | new p50 ms | old p99 ms | new p99 ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for k in old:
    if k not in new:
        continue
    o, n = old[k], new[k]
    ratio = n["rate"] / o["rate"] if o["rate"] else float("nan")
    print(f"| {k[0]} | {k[1]} | {o['rate']:,.0f} | {n['rate']:,.0f} | {ratio:.2f} | {o['p50_us']/1000:.2f} | "
          f"{n['p50_us']/1000:.2f} | {o['p99_us']/1000:.2f} | {n['p99_us']/1000:.2f} |")
PY
