"""The seed usage guide's examples, run on lockstep through ``lockstep.compat``.

Each is the guide's code changed only where it cannot run as printed: the imports; names a snippet
assumes defined (``agent``, ``all_agents``, ``processor_agent``...); top-level ``await`` inside the
test's event loop; and the barrier example's agents run concurrently (one after another, the first
would wait for the others forever). Each asserts the result the guide implies.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, ServerProcess, python_env
from lockstep.compat import AgentStatus, AgentSynchronizer, SynchronizedAgent, SynchronizedAgentRegistry

# The guide's quick start, with its import changed (scripts.ai_agent.core.synchronizer → lockstep.compat)
# and its trailing spaces dropped.
QUICK_START = '''
import asyncio
from lockstep.compat import AgentSynchronizer, SynchronizedAgent

# Create synchronizer
synchronizer = AgentSynchronizer(timeout=30.0)

# Create agents
class MyAgent(SynchronizedAgent):
    def run(self):
        return {"status": "completed"}

    def validate_config(self):
        return True

    async def do_work_then_sync(self):
        # Do some work
        print(f"[{self.name}] Working...")
        await asyncio.sleep(1.0)

        # Sync with other agents
        other_agents = {"agent1", "agent2", "agent3"}
        success = await self.sync_with_agents("work_complete", other_agents)

        print(f"[{self.name}] Sync result: {success}")
        return success

# Usage
agent1 = MyAgent("agent1", synchronizer)
agent2 = MyAgent("agent2", synchronizer)
agent3 = MyAgent("agent3", synchronizer)

# Run coordinated work
async def main():
    tasks = [
        agent1.do_work_then_sync(),
        agent2.do_work_then_sync(),
        agent3.do_work_then_sync(),
    ]
    results = await asyncio.gather(*tasks)
    print(f"All agents completed: {all(results)}")

asyncio.run(main())
'''


@pytest.fixture
def addr(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compat classes find the test's server through ``LOCKSTEP_ADDR``."""
    monkeypatch.setenv("LOCKSTEP_ADDR", server.address)
    return server.address


def test_quick_start_prints_all_agents_completed(server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(QUICK_START)
    proc = subprocess.run([PYTHON, str(script)], env=python_env(server.address), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted(lines[:3]) == [f"[agent{i}] Working..." for i in (1, 2, 3)]
    assert sorted(lines[3:6]) == [f"[agent{i}] Sync result: True" for i in (1, 2, 3)]
    assert lines[6:] == ["All agents completed: True"]


async def test_registry_snippet(addr: str) -> None:
    # Create registry
    registry = SynchronizedAgentRegistry()

    # Register agents
    registered = await registry.register_agent(
        agent_id="worker_1",
        role="data_processor",
        sync_capabilities=["data_sync", "checkpoint_sync"]
    )

    # Update agent status
    updated = await registry.update_agent_status("worker_1", AgentStatus.SYNCING)

    # Find agents with specific capabilities
    sync_agents = await registry.get_agents_with_sync_capability("data_sync")

    # Agent heartbeat
    beat = await registry.heartbeat("worker_1")

    assert registered and updated and beat
    assert [a["agent_id"] for a in sync_agents] == ["worker_1"]
    worker = sync_agents[0]
    assert worker["role"] == "data_processor" and worker["status"] == "syncing"
    assert sorted(worker["sync_capabilities"]) == ["checkpoint_sync", "data_sync"]
    assert await registry.get_agents_with_sync_capability("model_sync") == []
    await registry.close()


async def test_barrier_example_agents_run_concurrently(addr: str) -> None:
    agents = ["agent1", "agent2", "agent3"]
    synchronizer = AgentSynchronizer()

    # All agents sync at the barrier (concurrently: one after another the first would wait forever)
    async def one(agent_name: str) -> bool:
        agent = SynchronizedAgent(agent_name, synchronizer)
        return await agent.sync_with_agents("barrier_point", set(agents))

    assert await asyncio.gather(*(one(a) for a in agents)) == [True, True, True]
    assert synchronizer.get_sync_status("barrier_point")["state"] == "completed"
    await synchronizer.close()


async def test_phase_example(addr: str) -> None:
    synchronizer = AgentSynchronizer(timeout=10.0)
    all_agents = {"collector", "processor", "aggregator"}

    async def phase_sync_example(agent: SynchronizedAgent) -> list:
        results = []
        # Phase 1: Data collection
        results.append(await agent.sync_with_agents("phase1_complete", all_agents))
        # Phase 2: Data processing
        results.append(await agent.sync_with_agents("phase2_complete", all_agents))
        # Phase 3: Result aggregation
        results.append(await agent.sync_with_agents("phase3_complete", all_agents))
        return results

    outcomes = await asyncio.gather(*(phase_sync_example(SynchronizedAgent(n, synchronizer)) for n in all_agents))
    assert outcomes == [[True, True, True]] * 3
    for phase in ("phase1_complete", "phase2_complete", "phase3_complete"):
        assert sorted(synchronizer.get_sync_status(phase)["arrived"]) == sorted(all_agents)
    await synchronizer.close()


async def test_subset_example(addr: str) -> None:
    synchronizer = AgentSynchronizer(timeout=10.0)

    async def subset_sync_example(processor_agent: SynchronizedAgent, storage_agent: SynchronizedAgent) -> list:
        # Only processing agents sync
        processing_agents = {"processor1", "processor2"}
        processed = processor_agent.sync_with_agents("processing_done", processing_agents)
        # Only storage agents sync
        storage_agents = {"storage1", "storage2"}
        stored = storage_agent.sync_with_agents("storage_ready", storage_agents)
        return list(await asyncio.gather(processed, stored))

    s = synchronizer
    results = await asyncio.gather(
        subset_sync_example(SynchronizedAgent("processor1", s), SynchronizedAgent("storage1", s)),
        subset_sync_example(SynchronizedAgent("processor2", s), SynchronizedAgent("storage2", s)),
    )
    assert results == [[True, True], [True, True]]
    assert sorted(s.get_sync_status("processing_done")["required"]) == ["processor1", "processor2"]
    assert sorted(s.get_sync_status("storage_ready")["required"]) == ["storage1", "storage2"]
    await synchronizer.close()


async def test_programmatic_diagnostics_from_inside_a_running_loop(addr: str) -> None:
    synchronizer = AgentSynchronizer(timeout=30.0)
    stuck = asyncio.ensure_future(SynchronizedAgent("early", synchronizer).sync_with_agents("stuck_sync_id", {"late"}))
    await _until(lambda: synchronizer.get_sync_status("stuck_sync_id") is not None)

    # Get sync point status
    status = synchronizer.get_sync_status("stuck_sync_id")
    assert status["state"] == "waiting" and status["missing"] == ["late"] and status["arrived"] == ["early"]

    # Diagnose issues
    diagnostics = synchronizer.diagnose_sync_issues("stuck_sync_id")
    assert any("late" in issue for issue in diagnostics["issues"]), diagnostics
    assert diagnostics["recommendations"]

    # Force complete stuck sync (emergency recovery): the waiting agent goes on
    assert synchronizer.force_complete_sync("stuck_sync_id") is True
    assert await asyncio.wait_for(stuck, 10) is True
    assert synchronizer.get_sync_status("stuck_sync_id")["state"] == "forced"
    assert synchronizer.force_complete_sync("stuck_sync_id") is False  # not waiting any more

    # Unknown points, as the seed's lookups answer them.
    assert synchronizer.get_sync_status("my_sync_id") is None
    unknown = synchronizer.diagnose_sync_issues("my_sync_id")
    assert unknown["status"] is None and unknown["issues"] and unknown["recommendations"]
    assert synchronizer.force_complete_sync("my_sync_id") is False
    assert synchronizer.cleanup_completed_syncs() == 1
    await synchronizer.close()


async def test_a_sync_that_times_out_returns_false(addr: str) -> None:
    synchronizer = AgentSynchronizer(timeout=0.3)
    agent = SynchronizedAgent("alone", synchronizer)
    assert await agent.sync_with_agents("never", {"alone", "absent"}) is False
    assert synchronizer.get_sync_status("never")["state"] == "timed_out"
    # A sync id names one round: arriving again at a finished point fails, too.
    assert await agent.sync_with_agents("never", {"alone", "absent"}) is False
    # Invalid input the seed's callers may pass: an empty id fails; one string is not a set.
    assert await agent.sync_with_agents("", {"alone"}) is False
    with pytest.raises(TypeError):
        await agent.sync_with_agents("x", "alone")
    await synchronizer.close()


def test_configuration_snippets() -> None:
    synchronizer = AgentSynchronizer(
        timeout=30.0  # Default timeout in seconds
    )
    registry = SynchronizedAgentRegistry(
        registry_path="./archive/EPOCH5/agents/registry.json"
    )
    assert synchronizer.timeout == 30.0 and AgentSynchronizer().timeout == 30.0
    assert registry.registry_path == "./archive/EPOCH5/agents/registry.json"
    for bad in (0, -1, float("nan"), "30"):
        with pytest.raises(ValueError):
            AgentSynchronizer(timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SynchronizedAgent("a", object())  # type: ignore[arg-type]
    plain = SynchronizedAgent("a", synchronizer)
    assert plain.validate_config() is True and plain.run() == {"status": "idle"} and plain.name == "a"


async def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not true in time"
        await asyncio.sleep(0.02)


async def test_the_readme_migration_guide_example_prints_what_its_comments_say(
    addr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", readme, re.M | re.S) if "lockstep.compat import" in b]
    assert len(blocks) == 1, "the migration guide has one compat example"
    namespace: dict = {}
    exec(compile(blocks[0], "README-migration", "exec"), namespace)
    await namespace["main"]()
    printed = capsys.readouterr().out.splitlines()
    # Each print's promised output is the comment beside it (or below it) in the README.
    promised = [c.strip() for c in re.findall(r"#\s*(\[.*\])\s*$", blocks[0], re.M)]
    assert printed == promised, (printed, promised)


def test_coroutines_and_plain_functions_are_split_as_the_seeds_use_them() -> None:
    import inspect

    from lockstep.compat import CommandInterface, HighPerformanceSyncBus

    awaited = [
        SynchronizedAgentRegistry.register_agent, SynchronizedAgentRegistry.update_agent_status,
        SynchronizedAgentRegistry.get_agents_with_sync_capability, SynchronizedAgentRegistry.heartbeat,
        SynchronizedAgent.sync_with_agents, HighPerformanceSyncBus.register_agent,
        HighPerformanceSyncBus.update_agent_state, HighPerformanceSyncBus.get_state, HighPerformanceSyncBus.tick,
        CommandInterface.handle_command,
    ]
    plain = [
        AgentSynchronizer.get_sync_status, AgentSynchronizer.diagnose_sync_issues,
        AgentSynchronizer.force_complete_sync, HighPerformanceSyncBus.attach,
        SynchronizedAgent.run, SynchronizedAgent.validate_config,
    ]
    assert [f.__qualname__ for f in awaited if not inspect.iscoroutinefunction(f)] == []
    assert [f.__qualname__ for f in plain if inspect.iscoroutinefunction(f)] == []
