#!/usr/bin/env python3
"""Benchmark lockstep from the Python client.

Measures, on a loopback server:

* publish -> deliver throughput, one publisher to one subscriber and to a fan-out of subscribers;
* publish -> deliver latency (p50/p99), one message in flight at a time;
* barrier latency with 100 agents (all arrive at once; time until every one is released).

Prints a table, and writes the numbers as JSON with ``--json FILE``. Uses the server at ``--addr``,
or starts ``lockstep serve`` itself (``--bin``, ``$LOCKSTEP_BIN`` or ``<repo>/target/debug/lockstep``)
on a free port and stops it afterwards::

    python clients/python/bench/bench.py
    python clients/python/bench/bench.py --addr 127.0.0.1:7600 --json bench-results.json
    python clients/python/bench/bench.py --quick    # a few seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent.parent
try:
    import lockstep
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(HERE.parent / "src"))
    import lockstep


def percentile(values: List[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def start_server(binary: str, extra: List[str]) -> Tuple["subprocess.Popen[str]", str]:
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--in-memory", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.match(r"^lockstep listening on (\S+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"lockstep serve did not start (printed {line!r})")
    return proc, match.group(1)


async def bench_throughput(client: lockstep.Client, messages: int, subscribers: int, payload_bytes: int) -> Dict[str, Any]:
    tag = f"tp{subscribers}"
    publisher = await client.register(f"{tag}-pub", role="bench")
    subs = [await client.register(f"{tag}-sub{i}", role="bench", interests=[f"{tag}.>"]) for i in range(subscribers)]
    payload = b"x" * payload_bytes
    try:
        async def consume(agent: lockstep.Agent) -> Tuple[int, int]:
            got = missed = 0
            async for delivery in agent.deliveries():
                got += 1
                missed += delivery.missed_before
                if got + missed >= messages:
                    break
            return got, missed

        consumers = [asyncio.ensure_future(consume(s)) for s in subs]
        started = time.perf_counter()
        for i in range(messages):
            await publisher.publish(f"{tag}.data", payload)
        published = time.perf_counter()
        counts = await asyncio.wait_for(asyncio.gather(*consumers), 300)
        finished = time.perf_counter()
        delivered = sum(c[0] for c in counts)
        dropped = sum(c[1] for c in counts)
        elapsed = finished - started
        return {
            "subscribers": subscribers,
            "messages": messages,
            "payload_bytes": payload_bytes,
            "seconds": round(elapsed, 4),
            "publish_rate": round(messages / (published - started), 1),
            "delivered": delivered,
            "dropped": dropped,
            "deliveries_per_sec": round(delivered / elapsed, 1),
        }
    finally:
        for agent in [publisher, *subs]:
            await agent.close()


async def bench_latency(client: lockstep.Client, samples: int, payload_bytes: int) -> Dict[str, Any]:
    publisher = await client.register("lat-pub", role="bench")
    subscriber = await client.register("lat-sub", role="bench", interests=["lat.ping"])
    filler = b"x" * max(0, payload_bytes - 8)
    try:
        latencies: List[float] = []
        for i in range(samples + 50):
            await publisher.publish("lat.ping", struct.pack("<d", time.perf_counter()) + filler)
            delivery = await subscriber.next_delivery(timeout=10)
            sent = struct.unpack("<d", delivery.payload[:8])[0]
            if i >= 50:  # warm-up
                latencies.append((time.perf_counter() - sent) * 1e6)
        return {
            "samples": samples,
            "payload_bytes": payload_bytes,
            "p50_us": round(percentile(latencies, 50), 1),
            "p99_us": round(percentile(latencies, 99), 1),
            "max_us": round(max(latencies), 1),
            "mean_us": round(statistics.fmean(latencies), 1),
        }
    finally:
        await publisher.close()
        await subscriber.close()


async def bench_barrier(client: lockstep.Client, agents: int, rounds: int) -> Dict[str, Any]:
    members = [await client.register(f"bar-{i:03d}", role="bench-barrier") for i in range(agents)]
    ids = [m.agent_id for m in members]
    try:
        durations: List[float] = []
        for r in range(rounds + 2):
            sync_id = f"bench-barrier-{os.getpid()}-{r}"
            started = time.perf_counter()
            results = await asyncio.gather(*(m.sync(sync_id, ids, timeout=60) for m in members))
            elapsed = (time.perf_counter() - started) * 1e3
            assert all(len(res.arrival_order) == agents for res in results)
            if r >= 2:  # warm-up
                durations.append(elapsed)
        await client.cleanup_sync_points()
        return {
            "agents": agents,
            "rounds": rounds,
            "p50_ms": round(percentile(durations, 50), 2),
            "p99_ms": round(percentile(durations, 99), 2),
            "max_ms": round(max(durations), 2),
        }
    finally:
        await asyncio.gather(*(m.close() for m in members))


def print_table(results: Dict[str, Any]) -> None:
    rows: List[Tuple[str, str]] = []
    for tp in results["throughput"]:
        rows.append(
            (
                f"publish->deliver, 1 -> {tp['subscribers']} ({tp['messages']} x {tp['payload_bytes']} B)",
                f"{tp['deliveries_per_sec']:,.0f} deliveries/s (publish {tp['publish_rate']:,.0f}/s, dropped {tp['dropped']})",
            )
        )
    lat = results["latency"]
    rows.append(
        (
            f"publish->deliver latency ({lat['samples']} samples)",
            f"p50 {lat['p50_us']:,.0f} us   p99 {lat['p99_us']:,.0f} us   max {lat['max_us']:,.0f} us",
        )
    )
    bar = results["barrier"]
    rows.append(
        (
            f"barrier, {bar['agents']} agents ({bar['rounds']} rounds)",
            f"p50 {bar['p50_ms']:,.2f} ms   p99 {bar['p99_ms']:,.2f} ms   max {bar['max_ms']:,.2f} ms",
        )
    )
    width = max(len(r[0]) for r in rows)
    print(f"lockstep Python client benchmark (server {results['server_version']} at {results['address']})")
    print("-" * (width + 60))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


async def run(args: argparse.Namespace, address: str) -> Dict[str, Any]:
    async with lockstep.connect(address) as client:
        info = await client.server_info()
        throughput = [
            await bench_throughput(client, args.messages, 1, args.payload_bytes),
            await bench_throughput(client, max(1, args.messages // args.fanout), args.fanout, args.payload_bytes),
        ]
        latency = await bench_latency(client, args.latency_samples, args.payload_bytes)
        barrier = await bench_barrier(client, args.barrier_agents, args.barrier_rounds)
        return {
            "address": address,
            "server_version": info.version,
            "python": platform.python_version(),
            "throughput": throughput,
            "latency": latency,
            "barrier": barrier,
        }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark lockstep from the Python client.")
    parser.add_argument("--addr", help="server address (default: start one)")
    parser.add_argument("--bin", default=os.environ.get("LOCKSTEP_BIN") or str(REPO_ROOT / "target" / "debug" / "lockstep"))
    parser.add_argument("--messages", type=int, default=20000, help="messages for the throughput runs")
    parser.add_argument("--fanout", type=int, default=10, help="subscribers in the fan-out run")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--barrier-agents", type=int, default=100)
    parser.add_argument("--barrier-rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke test")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.latency_samples, args.barrier_rounds = 1000, 100, 3

    proc = None
    address = args.addr
    if not address:
        # Deliveries must not be dropped while the publisher outruns the subscriber.
        proc, address = start_server(args.bin, ["--queue-capacity", str(max(args.messages, 1024))])
    try:
        results = asyncio.run(run(args, address))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
