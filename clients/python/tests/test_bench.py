"""The benchmark script runs end to end and writes its JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import PYTHON, ServerProcess, python_env

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench.py"


def test_bench_quick_run_writes_json(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [PYTHON, str(BENCH), "--quick", "--addr", server.address, "--barrier-agents", "20", "--json", str(out)],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "barrier, 20 agents" in proc.stdout and "p99" in proc.stdout
    results = json.loads(out.read_text())
    assert [t["subscribers"] for t in results["throughput"]] == [1, 10]
    for run in results["throughput"]:
        assert run["delivered"] + run["dropped"] == run["messages"] * run["subscribers"]
        assert run["deliveries_per_sec"] > 0
    assert 0 < results["latency"]["p50_us"] <= results["latency"]["p99_us"]
    assert results["barrier"]["agents"] == 20 and results["barrier"]["p50_ms"] > 0
