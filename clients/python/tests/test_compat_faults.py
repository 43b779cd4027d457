"""lockstep.compat under faults and without a server: a compat process killed mid-sync leaves the
server consistent (its arrival stands, the agent is lost, the point releases the others as for any
lost agent that had arrived); registry agents live by their heartbeats; the embedded server (item 2); the
seed's diagnostic tool."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import lockstep
from conftest import PYTHON, ServerProcess, eventually, lockstep_bin, python_env
from lockstep.compat import AgentSynchronizer, SynchronizedAgentRegistry

MID_SYNC = """
import asyncio
from lockstep.compat import AgentSynchronizer, SynchronizedAgent

async def main():
    synchronizer = AgentSynchronizer(timeout=60.0)
    await SynchronizedAgent("victim", synchronizer).sync_with_agents("kill_point", {"victim", "peer"})
    print("released")

asyncio.run(main())
"""


async def test_a_compat_process_killed_mid_sync_resolves_as_a_lost_agent(fast_server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "mid_sync.py"
    script.write_text(MID_SYNC)
    proc = subprocess.Popen([PYTHON, str(script)], env=python_env(fast_server.address), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        async with lockstep.connect(fast_server.address) as client:

            async def victim_waits() -> bool:
                try:
                    return (await client.sync_status("kill_point")).arrived == ("victim",)
                except lockstep.NotFound:
                    return False

            await eventually(victim_waits, timeout=20, what="the compat agent waits at the point")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

            async def victim_lost() -> bool:
                agents = {a.agent_id: a for a in await client.list_agents()}
                return "victim" not in agents or agents["victim"].status == lockstep.AgentStatus.LOST

            # The lease is 3 × 100 ms; then the victim is lost like any agent that dies.
            await eventually(victim_lost, timeout=10, what="the killed agent is lost")
            # An arrival, once made, stands (as for any lost agent): the point still waits, consistent,
            # and releases the peer when it comes, with the victim's arrival first.
            status = await client.sync_status("kill_point")
            assert status.waiting and status.arrived == ("victim",) and status.missing == ("peer",), status
            async with client.register("peer") as peer:
                result = await peer.sync("kill_point", {"victim", "peer"}, timeout=5)
                assert result.arrival_order == ("victim", "peer")
            assert (await client.sync_status("kill_point")).state == lockstep.SyncState.COMPLETED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        proc.stdout.close()
        proc.stderr.close()
    assert "released" not in out


async def test_registry_agents_live_by_their_heartbeats(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    interval_ms, intervals = 250, 4
    srv = server_factory("--heartbeat-interval-ms", str(interval_ms), "--lease-intervals", str(intervals))
    monkeypatch.setenv("LOCKSTEP_ADDR", srv.address)
    lease = interval_ms * intervals / 1000.0
    registry = SynchronizedAgentRegistry()
    assert await registry.register_agent("worker_1", "data_processor", ["data_sync"])
    assert await registry.register_agent("worker_1", "data_processor", ["data_sync"])  # again: a no-op
    # Heartbeats, twenty per lease, keep it alive past one and a half leases...
    for _ in range(30):
        assert await registry.heartbeat("worker_1")
        await asyncio.sleep(lease / 20)
    assert (await registry.get_agent("worker_1"))["status"] == "active"

    # ...and without them the server declares it lost, as the seed's registry marks silent agents,
    # even while another agent of the same process heartbeats by itself.
    async with lockstep.connect(srv.address) as other_client, other_client.register("busy_neighbour"):

        async def gone() -> bool:
            entry = await registry.get_agent("worker_1")
            return entry is None or entry["status"] == "lost"

        await eventually(gone, timeout=10 * lease, what="an agent nobody heartbeats is lost")
        assert (await registry.get_agent("busy_neighbour"))["status"] == "active"
        # It stays lost: its session is not resumed behind the registry's back...
        await asyncio.sleep(lease / 2)
        assert await gone(), await registry.get_agent("worker_1")
        assert await registry.update_agent_status("worker_1", "syncing") is False
    # ...until a heartbeat revives it, with the role and capabilities it had.
    assert await registry.heartbeat("worker_1")
    revived = await registry.get_agent("worker_1")
    assert revived is not None and revived["status"] == "active" and revived["role"] == "data_processor", revived
    assert revived["sync_capabilities"] == ["data_sync"], revived
    assert await registry.unregister_agent("worker_1")
    assert await registry.heartbeat("worker_1") is False
    assert await registry.heartbeat("nobody") is False
    assert await registry.update_agent_status("nobody", "syncing") is False
    with pytest.raises(ValueError):
        await registry.update_agent_status("worker_1", "exploding")
    with pytest.raises(TypeError):
        await registry.register_agent("w2", "r", "data_sync")
    with pytest.raises(ValueError):
        await registry.register_agent("bad id!", "r", [])
    await registry.close()


async def test_connect_embedded_starts_and_stops_a_private_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_BIN", str(lockstep_bin()))
    async with lockstep.connect(embedded=True) as client:
        server = client.embedded_server
        assert server is not None and server.running and server.address.startswith("127.0.0.1:")
        async with client.register("solo") as agent:
            assert await agent.sync("alone", {"solo"}, timeout=5)
    assert not server.running
    with pytest.raises(TypeError):
        lockstep.connect("127.0.0.1:1", embedded=True)


async def test_no_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCKSTEP_BIN", str(tmp_path / "missing"))
    with pytest.raises(lockstep.ServerNotFound, match="LOCKSTEP_BIN"):
        await lockstep.connect(embedded=True)
    monkeypatch.delenv("LOCKSTEP_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(lockstep.ServerNotFound, match="cargo build"):
        await lockstep.connect(embedded=True)
    # A binary that is not a lockstep server: the start fails, saying so, and nothing is left running.
    monkeypatch.setenv("LOCKSTEP_BIN", "/bin/true")
    with pytest.raises(lockstep.LockstepError, match="did not start"):
        await lockstep.connect(embedded=True)


def test_a_binary_next_to_the_package_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lockstep.embedded as embedded

    package = tmp_path / "lockstep"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "lockstep").symlink_to(lockstep_bin())
    monkeypatch.setattr(embedded, "__file__", str(package / "embedded.py"))
    monkeypatch.delenv("LOCKSTEP_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert embedded.find_server_binary() == package / "bin" / "lockstep"
    server = embedded.EmbeddedServer()
    try:
        assert server.running and server.address.startswith("127.0.0.1:")
    finally:
        server.stop()
    assert not server.running


EMBEDDED_SCRIPT = """
import asyncio, os
from lockstep.compat import AgentSynchronizer, SynchronizedAgent, server_address
from lockstep.compat import _connection

async def main():
    synchronizer = AgentSynchronizer(timeout=5.0)
    ok = await SynchronizedAgent("solo", synchronizer).sync_with_agents("start", {"solo"})
    print(ok, synchronizer.get_sync_status("start")["state"], _connection._shared.proc.pid, flush=True)

asyncio.run(main())
"""


def test_compat_classes_start_an_embedded_server_without_lockstep_addr(tmp_path: Path) -> None:
    proc = subprocess.run(_without_addr(tmp_path, EMBEDDED_SCRIPT), env=_env_without_addr(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ok, state, pid = proc.stdout.split()
    assert (ok, state) == ("True", "completed")
    _wait_gone(int(pid), "the embedded server outlived its script")


KILLED_WITH_SERVER = """
import time
from lockstep.compat import server_address
from lockstep.compat import _connection

server_address()
print(_connection._shared.proc.pid, flush=True)
time.sleep(60)
"""


def test_a_killed_script_takes_its_embedded_server_with_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(_without_addr(tmp_path, KILLED_WITH_SERVER), env=_env_without_addr(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert _alive(pid)
    proc.kill()  # SIGKILL: no atexit runs
    proc.wait()
    proc.stdout.close()
    _wait_gone(pid, "the embedded server outlived its killed script")


def _without_addr(tmp_path: Path, source: str) -> List[str]:
    """The command running ``source`` as a script."""
    script = tmp_path / "script.py"
    script.write_text(source)
    return [PYTHON, str(script)]


def _env_without_addr() -> Dict[str, str]:
    """No ``LOCKSTEP_ADDR``: the compat classes start their embedded server with the test's binary."""
    env = python_env()
    env.pop("LOCKSTEP_ADDR", None)
    env["LOCKSTEP_BIN"] = str(lockstep_bin())
    return env


def _wait_gone(pid: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes: read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_the_diagnostic_tool_takes_the_seed_flags(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOCKSTEP_ADDR", server.address)
    from lockstep.compat import SynchronizedAgent
    from lockstep.compat.sync_diagnostic import main

    async def timed_out_point() -> bool:
        synchronizer = AgentSynchronizer(timeout=0.2)
        ok = await SynchronizedAgent("a", synchronizer).sync_with_agents("my_sync_point", {"a", "b"})
        return ok

    assert asyncio.run(timed_out_point()) is False  # its agent "a" stays registered until its lease ends

    # The entry point, as the seed's users run it.
    listing = subprocess.run([PYTHON, "-m", "lockstep.compat.sync_diagnostic", "--list"],
                             env=python_env(server.address), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "my_sync_point: timed_out (1/2 arrived) missing: b" in listing.stdout

    def run(*args: str) -> "tuple[int, str, str]":
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("--stats")
    assert code == 0 and "Sync points: 1" in out and "timed_out: 1" in out
    code, out, _ = run("--diagnose", "my_sync_point")
    assert code == 0 and "Issues:" in out and "Recommendations:" in out
    assert "b" in out.split("Issues:")[1]
    code, out, _ = run("--registry")
    assert code == 0 and ("a: role=agent status=" in out or "No agents registered." in out)
    code, out, _ = run("--monitor", "--interval", "0.05", "--count", "2")
    assert code == 0 and out.count("Sync points (1):") == 2
    code, out, _ = run("--cleanup")
    assert code == 0 and "Cleaned up 1 completed sync point(s)." in out
    assert "No sync points." in run("--list")[1]
    code, _, err = run("--diagnose", "nope")
    assert code == 1 and "error:" in err
    assert run()[0] == 2  # no flag: the help


async def test_operators_calls_send_the_admin_token(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server_factory(admin_token="s3cret")
    monkeypatch.setenv("LOCKSTEP_ADDR", srv.address)
    synchronizer = AgentSynchronizer(timeout=30.0)
    from lockstep.compat import SynchronizedAgent

    waiting = asyncio.ensure_future(SynchronizedAgent("early", synchronizer).sync_with_agents("stuck", {"late"}))

    async def arrived() -> bool:
        status = synchronizer.get_sync_status("stuck")  # a query: no token needed
        return status is not None and status["arrived"] == ["early"]

    await eventually(arrived, what="the agent waits at the point")
    with pytest.raises(lockstep.Unauthenticated):
        synchronizer.force_complete_sync("stuck")
    monkeypatch.setenv("LOCKSTEP_ADMIN_TOKEN", "wrong")
    with pytest.raises(lockstep.PermissionDenied):
        synchronizer.cleanup_completed_syncs()
    monkeypatch.setenv("LOCKSTEP_ADMIN_TOKEN", "s3cret")
    assert synchronizer.force_complete_sync("stuck") is True
    assert await asyncio.wait_for(waiting, 10) is True
    assert synchronizer.cleanup_completed_syncs() == 1
    await synchronizer.close()


BUS_WITH_ITS_BREAKER = """
import asyncio
from lockstep.compat import HighPerformanceSyncBus, CommandInterface

class Broken:
    async def update(self, data):
        raise RuntimeError("no model")

async def main():
    syncbus = HighPerformanceSyncBus(circuit_config={'failure_threshold': 2})
    syncbus.attach('broken', Broken())
    syncbus.attach('fine', type('Fine', (), {'update': lambda self, data: {'ok': True}})())
    for _ in range(2):
        await syncbus.tick()
    rows = (await CommandInterface(syncbus).handle_command('list_agents'))['agents']
    print(sorted((a['agent_id'], a['circuit_open']) for a in rows))

asyncio.run(main())
"""


def test_an_embedded_server_started_by_the_bus_gets_its_circuit_config(tmp_path: Path) -> None:
    proc = subprocess.run(_without_addr(tmp_path, BUS_WITH_ITS_BREAKER), env=_env_without_addr(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Two failures open the breaker (the server's default would want five).
    assert proc.stdout.strip() == "[('broken', True), ('fine', False)]"
