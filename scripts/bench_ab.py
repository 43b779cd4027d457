#!/usr/bin/env python3
"""Compares two `lockstep` binaries with `lockstep bench`, alternating them in one session.

    python3 scripts/bench_ab.py OLD NEW --runs 3 --out DIR [-- BENCH_ARGS...]
    python3 scripts/bench_ab.py --compare DIR

Runs `OLD bench --json DIR/old-K.json BENCH_ARGS`, then the same with NEW, K = 1..runs, so that a
noisy stretch of a shared machine falls on both. Then, per row (scenario and N), the median of
each binary's runs and the change: the rate (higher is better, but for `idle-agents`, the server's
CPU, and `memory-return`, its memory: lower is better) and p50/p99 (lower is better). A row that
got worse by more than `--limit` percent (default 10) is marked WORSE, and also `noise` when the
change is smaller than the spread of either binary's own runs (max - min over the median: what the
machine varies for one binary). The exit code is 0 either way (the table is the result).
`--compare DIR` prints the table again from DIR's files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

#: Rows whose RATE column is a cost (CPU percent, MiB held): lower is better.
LOWER_RATE_IS_BETTER = {"idle-agents", "memory-return"}

Key = Tuple[str, int, int]


def rows_by_key(path: Path) -> Dict[Key, dict]:
    """A run's rows keyed by (scenario, N, how many rows of that scenario and N came before)."""
    seen: Dict[Tuple[str, int], int] = defaultdict(int)
    rows: Dict[Key, dict] = {}
    for row in json.loads(path.read_text())["rows"]:
        base = (row["scenario"], row["n"])
        rows[(*base, seen[base])] = row
        seen[base] += 1
    return rows


METRICS = ("rate", "p50_us", "p99_us")


def summaries(paths: List[Path]) -> Dict[Key, Dict[str, Tuple[float, float]]]:
    """Per row and measure: the median of the runs and their spread in percent of it."""
    runs = [rows_by_key(p) for p in paths]
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    out: Dict[Key, Dict[str, Tuple[float, float]]] = {}
    for k in keys:
        out[k] = {}
        for m in METRICS:
            values = [float(r[k][m]) for r in runs]
            median = statistics.median(values)
            spread = (max(values) - min(values)) / median * 100 if median else 0.0
            out[k][m] = (median, spread)
    return out


def change(metric: str, scenario: str, old: float, new: float) -> float:
    """How much worse NEW is than OLD, in percent (negative: better)."""
    if old == 0:
        return 0.0
    higher_is_better = metric == "rate" and scenario not in LOWER_RATE_IS_BETTER
    return (old - new) / old * 100 if higher_is_better else (new - old) / old * 100


def compare(out: Path, limit: float) -> int:
    old, new = summaries(sorted(out.glob("old-*.json"))), summaries(sorted(out.glob("new-*.json")))
    worse = beyond_noise = 0
    print(f"{'SCENARIO':<34} {'N':>6} {'METRIC':<7} {'OLD':>12} {'NEW':>12} {'WORSE BY':>9} {'SPREAD':>7}")
    for key in old:
        if key not in new:
            continue
        scenario, n, _ = key
        for metric in METRICS:
            (a, spread_a), (b, spread_b) = old[key][metric], new[key][metric]
            if a == 0 and b == 0:
                continue
            pct, spread = change(metric, scenario, a, b), max(spread_a, spread_b)
            mark = ""
            if pct > limit:
                worse += 1
                beyond_noise += pct > spread
                mark = "  WORSE" + (" (noise)" if pct <= spread else "")
            print(f"{scenario:<34} {n:>6} {metric:<7} {a:>12.1f} {b:>12.1f} {pct:>8.1f}% {spread:>6.0f}%{mark}")
    print(f"{worse} measure(s) worse by more than {limit:.0f} %, {beyond_noise} of them by more than the runs' spread")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", nargs="?", help="the binary before the change")
    parser.add_argument("new", nargs="?", help="the binary after it")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="where the runs' JSON files go")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="only print the table of DIR's runs")
    parser.add_argument("--limit", type=float, default=10.0, help="percent worse that marks a row")
    args, bench_args = parser.parse_known_args()
    if bench_args[:1] == ["--"]:
        bench_args = bench_args[1:]
    if args.compare:
        return compare(args.compare, args.limit)
    if not (args.old and args.new and args.out):
        parser.error("OLD, NEW and --out are needed (or --compare DIR)")
    args.out.mkdir(parents=True, exist_ok=True)
    for k in range(1, args.runs + 1):
        for label, binary in (("old", args.old), ("new", args.new)):
            target = args.out / f"{label}-{k}.json"
            print(f"== run {k}/{args.runs}: {label} ({binary})", file=sys.stderr, flush=True)
            subprocess.run([binary, "bench", "--json", str(target), *bench_args], check=True)
    return compare(args.out, args.limit)


if __name__ == "__main__":
    sys.exit(main())
