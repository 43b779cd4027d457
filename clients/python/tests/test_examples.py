"""Every example runs to completion against a real server and prints what it promises."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, List

import pytest

from conftest import PYTHON, REWORDED, ServerProcess, python_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, address: str, via_env: bool = False) -> str:
    args = [PYTHON, str(EXAMPLES / f"{name}.py")] + ([] if via_env else [address])
    proc = subprocess.run(
        args,
        env=python_env(address if via_env else None),
        cwd=str(EXAMPLES),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{name} failed ({proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def lines_with(output: str, text: str) -> List[str]:
    return [line for line in output.splitlines() if text in line]


def test_quick_start(server: ServerProcess) -> None:
    out = run_example("quick_start", server.address, via_env=True)
    assert len(lines_with(out, "Working...")) == 3
    results = lines_with(out, "Sync result: True")
    assert len(results) == 3
    assert len({line.split("arrival order")[1] for line in results}) == 1, "all three saw the same order"
    assert out.strip().endswith("All agents completed: True")


def test_barrier(server: ServerProcess) -> None:
    out = run_example("barrier", server.address)
    assert "arrival order: barrier-a, barrier-b, barrier-c" in out
    assert "barrier-c brought {'ready_at': 0.4}" in out
    released = [float(line.rsplit(" ", 1)[1].rstrip("s")) for line in lines_with(out, "released at")]
    assert len(released) == 3 and min(released) >= 0.3, "nobody is released before the last arrival"
    assert "timed out as expected; missing: barrier-c" in out


def test_phases(server: ServerProcess) -> None:
    out = run_example("phases", server.address)
    for phase in ("phase1_complete", "phase2_complete", "phase3_complete"):
        assert f"{phase}: all 4 workers done" in out
    assert "phases completed per worker: [3, 3, 3, 3]" in out
    # a second run reuses the same sync ids: the example cleans up after itself
    assert "phases completed per worker: [3, 3, 3, 3]" in run_example("phases", server.address)


def test_subset(server: ServerProcess) -> None:
    out = run_example("subset", server.address)
    assert "processing_done: processor1, processor2" in out
    assert "storage_ready: storage1, storage2" in out
    assert "all_storage_flushed (role storage): storage1, storage2" in out
    assert "any_two (count 2): processor1, storage2" in out


def test_registry(server: ServerProcess) -> None:
    out = run_example("registry", server.address)
    assert "agents with data_sync: archiver_1, worker_1" in out
    assert "data processors: worker_1 [syncing]" in out
    assert "registry: joined worker_1 (data_processor)" in out
    assert "registry: status worker_1 (data_processor) status=syncing" in out
    assert "registry: left archiver_1" in out
    assert "registered after leaving: 0" in out


def test_commands(server: ServerProcess) -> None:
    out = run_example("commands", server.address)
    assert '"total_agents": 2' in out
    assert "agents: risk_sentinel, scanner" in out
    assert "scanner" in lines_with(out, "issues:")[0]
    assert "force_complete: state=forced, waiter released (forced=True)" in out
    assert "cleanup: {'removed': 1}" in out
    # pause and resume reach the agent; its publish is refused meanwhile
    assert "scanner told: paused by 'example-operator'" in out
    assert "scanner publish refused: agent 'scanner' may not publish: operator 'example-operator' paused it" in out
    assert "scanner told: resumed by 'example-operator'" in out
    # the command round trip, an agent's error, and an agent that takes no commands
    assert "send_command rebalance_weights -> {'dropped': ['sol'], 'kept': ['btc', 'eth']}" in out
    assert "send_command set_limit to risk_sentinel failed: limit 5000000 is above the desk's maximum" in out
    assert "send_command rebalance_weights to scanner failed: agent 'scanner' does not handle commands" in out
    # the emergency stop reaches the SynchronizedAgent's hooks and the plain agent alike
    assert "risk_sentinel told: emergency_stop by 'example-operator' (drill)" in out
    assert "scanner told: emergency_stop by 'example-operator' (drill)" in out
    assert "risk_sentinel told: resumed_all by 'example-operator'" in out
    assert "resume_all: emergency stop lifted" in out
    health = lines_with(out, "health: score")[0]
    assert "risk_sentinel" in health and "scanner" in health and "(breaker closed)" in health
    # (an agent's hook may print after the heading: keep the entries only)
    audit = [line.split(": ", 1)[1] for line in out.split("audit log:")[1].splitlines() if line.startswith("  #")]
    assert audit == [
        # releasing a stuck point and cleaning up are operators' actions too
        "force_complete_sync stuck_sync -> ok",
        "cleanup_sync_points -> ok",
        "pause_agent scanner -> ok",
        "resume_agent scanner -> ok",
        "rebalance_weights risk_sentinel -> ok",
        "set_limit risk_sentinel -> agent_error",
        "rebalance_weights scanner -> agent_error",
        "emergency_stop -> ok",
        "resume_all -> ok",
    ]


def test_commands_with_an_admin_token_and_address(server_factory: Any) -> None:
    server = server_factory(admin_token="s3cret", admin_listen="127.0.0.1:0")
    env = python_env()
    env.update(LOCKSTEP_ADMIN_TOKEN="s3cret", LOCKSTEP_ADMIN_ADDR=server.admin_address)
    proc = subprocess.run(
        [PYTHON, str(EXAMPLES / "commands.py"), server.address],
        env=env,
        cwd=str(EXAMPLES),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "send_command rebalance_weights -> {'dropped': ['sol'], 'kept': ['btc', 'eth']}" in proc.stdout


def test_syncbus(server: ServerProcess) -> None:
    out = run_example("syncbus", server.address)
    assert "risk_sentinel     received risk_metrics.var, execution_result" in out
    assert "scanner           received market_data.btc, market_data.eth" in out
    assert "strategy_trainer  received trades, performance.daily" in out
    assert "sentiment" not in out, "nobody is interested in sentiment"
    scanner = lines_with(out, "monitor sees scanner")[0]
    assert "'confidence': 0.85" in scanner and "last_topic" not in scanner


def test_train(server: ServerProcess) -> None:
    out = run_example("train", server.address)
    assert "workers: 4 + 1 late (joined after step 30), steps: 60" in out
    assert "identical parameters on every worker: True (5 workers)" in out
    assert "diverged: nobody" in out
    assert "loss fell: True" in out
    # the model it fits: y = 2·x0 - 3·x1 + 0.5·x2 + 1
    fitted = [float(v) for v in lines_with(out, "parameters:")[0].split(":", 1)[1].split(",")]
    assert fitted == pytest.approx([2.0, -3.0, 0.5, 1.0], abs=0.1)


def test_handoff(fast_server: ServerProcess) -> None:
    out = run_example("handoff", fast_server.address)
    assert "planner submitted t1 (fetch), t2 (parse), t3 (summarize)" in out
    assert "runner-1 started tool.parse (t2, attempt 1)" in out
    assert "runner-1 killed in the middle of the parse" in out
    assert "planner heard: t2 failed (executor 'runner-1' lost its lease)" in out
    assert "parse completed by runner-2 on attempt 2" in out
    # The context as staged at submission (the persona's tone changed to chatty afterwards).
    assert "summary: [terse, for the board] reports/q3: quarterly numbers for atlas" in out
    found = lines_with(out, "planner-2 found the summary stored (produced by runner-2)")
    assert len(found) == 1 and "without running a task" in found[0]
    assert "traces: 3 stored, 1 hits" in out, "one trace per completed task; the lookup was a hit"
    lineage = out.split("lineage:\n", 1)[1].splitlines()
    assert [line.split(" {")[0].strip() for line in lineage[:3]] == ["tool.summarize", "tool.parse", "tool.fetch"]
    assert lineage[2].strip().startswith("tool.fetch {'url': 'reports/q3'} by runner-1")
    assert all("workspace.persona@v" in line and "workspace.meta@v" in line for line in lineage[:3])


def test_pipeline_monitor(server: ServerProcess) -> None:
    out = run_example("pipeline_monitor", server.address)
    assert "registered 6 systems and 6 dependencies:" in out
    assert "refused (DEPENDENCY_CYCLE): " in out
    if not REWORDED:
        assert "dashboard -> orders -> normalize -> revenue -> dashboard" in out, "the cycle is named"
    # Units as sent, kept in canonical units.
    assert "revenue    latency 0.05 min -> 3000 ms, bytes 2.5 MiB -> 2621440 B" in out
    assert "orders     latency 350 ms -> 350 ms, records 1200 rows -> 1200 records" in out
    # Nobody reports fx-rates: the server's timer makes it stale, cadence + tolerance after its last success.
    stale = lines_with(out, "fx-rates went stale by itself (stale=True)")
    assert len(stale) == 1 and "cadence 500 ms + tolerance 500 ms" in stale[0], out
    assert int(stale[0].split(" ms after its last success")[0].rsplit(" ", 1)[1]) >= 1000
    # Risk by the rule: max(own, weight x upstream risk); stale is 0.8, fx-rates -> normalize weighs 0.5.
    risks = out.split("\nrisk (own")[1:]
    assert len(risks) == 2
    first, second = (r.splitlines()[1:7] for r in risks)
    assert [" ".join(line.split()[:5]) for line in first] == [
        "orders own 0.00 risk 0.00",
        "fx-rates own 0.80 risk 0.80",
        "normalize own 0.00 risk 0.40",
        "enrich own 0.00 risk 0.00",
        "revenue own 0.00 risk 0.40",
        "dashboard own 0.00 risk 0.40",
    ]
    assert "<- 0.5 x fx-rates 0.80" in first[2]
    assert [" ".join(line.split()[:5]) for line in second] == [
        "orders own 0.00 risk 0.00",
        "fx-rates own 0.80 risk 0.80",
        "normalize own 1.00 risk 1.00",
        "enrich own 0.00 risk 0.00",
        "revenue own 0.00 risk 1.00",
        "dashboard own 0.00 risk 1.00",
    ], "a failure (1.0) does not add to the stale source's share: the best path counts"
    # The blast radius in topological order, each inheriting 0.5 if fx-rates failed.
    blast = out.split("blast radius of fx-rates", 1)[1].splitlines()[1:4]
    assert [line.split()[0] for line in blast] == ["normalize", "revenue", "dashboard"]
    assert all("inherits 0.50  risk now 0.40" in line for line in blast), blast
    # Priority: both severity 1 (the critical dashboard at risk); normalize's score 10x2 + 3 + 4 = 27
    # comes before fx-rates' 10x1 + 2 + 3 + 4 = 19, though it opened later.
    ranked = out.split("open incidents, most urgent first:\n", 1)[1].splitlines()[:2]
    assert ranked[0].startswith("  1. #"), ranked
    assert ranked[0].endswith("normalize failed: severity 1, score 27, 2 downstream at risk"), ranked
    assert ranked[1].startswith("  2. #"), ranked
    assert ranked[1].endswith("fx-rates stale: severity 1, score 19, 3 downstream at risk"), ranked
    assert "acknowledged by pipeline-operator" in out
    # The strategy heard every change on systems.incidents, pausing and resuming.
    heard = lines_with(out, "strategy heard:")
    assert [line.split(": ", 2)[1].split(" ", 2)[2] for line in heard] == [
        "opened", "opened", "acknowledged", "annotated", "resolved", "resolved"
    ], heard
    assert heard[0].endswith("fx-rates stale (severity 1, score 19) -> pausing")
    assert heard[-1].endswith("-> resuming")
    # Recovery resolves both, with their durations.
    for system, cause in (("fx-rates", "stale"), ("normalize", "failed")):
        resolved = lines_with(out, f"{system} recovered: incident #")
        assert len(resolved) == 1 and f"({cause}) resolved by auto after " in resolved[0], out
        assert float(resolved[0].rsplit("after ", 1)[1].rstrip(" s")) >= 0
    assert "open incidents: none" in out
    assert lines_with(out, "risk now:")[0].count(" 0.00") == 6


@pytest.mark.parametrize("name", ["quick_start", "barrier"])
def test_examples_fail_cleanly_without_a_server(name: str) -> None:
    proc = subprocess.run(
        [PYTHON, str(EXAMPLES / f"{name}.py"), "127.0.0.1:1"],
        env=python_env(),
        cwd=str(EXAMPLES),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "cannot reach a lockstep server at 127.0.0.1:1" in proc.stderr
