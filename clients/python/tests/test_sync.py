"""Barriers: success, payloads, counts and roles, timeouts, lost participants, bad input, diagnostics."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import struct
import time
from typing import List

import pytest

import lockstep
from conftest import OWN_CONNECTION, PYTHON, REWORDED, ServerProcess, eventually, python_env


async def test_three_agents_meet_at_a_barrier(client: lockstep.Client) -> None:
    names = ["agent1", "agent2", "agent3"]
    agents = [await client.register(n) for n in names]
    try:
        async def arrive(agent: lockstep.Agent, delay: float) -> lockstep.SyncResult:
            await asyncio.sleep(delay)
            return await agent.sync("work_complete", set(names), timeout=10, payload={"from": agent.agent_id})

        started = time.monotonic()
        results = await asyncio.gather(*(arrive(a, 0.1 * i) for i, a in enumerate(agents)))
        assert time.monotonic() - started >= 0.2, "nobody leaves before the last arrives"
        assert all(results)
        first = results[0]
        assert list(first.arrival_order) == names
        assert all(r == first for r in results), "every waiter gets the same result"
        assert [p for p in first.payloads] == [b'{"from":"agent1"}', b'{"from":"agent2"}', b'{"from":"agent3"}']
        assert first.payload_of("agent2") == b'{"from":"agent2"}'
        assert not first.forced
    finally:
        for a in agents:
            await a.close()


async def test_a_quorum_barrier_releases_at_k_and_answers_the_late_at_once(client: lockstep.Client) -> None:
    names = ["q1", "q2", "q3"]
    agents = [await client.register(n, role="scanner") for n in names]
    try:
        with pytest.raises(lockstep.InvalidArgument):
            await agents[0].sync("scan", role="scanner", quorum=4, timeout=10)
        with pytest.raises(lockstep.InvalidArgument):
            await agents[0].sync("scan", role="scanner", quorum=0, timeout=10)
        results = await asyncio.gather(
            *(a.sync("scan", role="scanner", quorum=2, timeout=10, payload=a.agent_id) for a in agents[:2])
        )
        assert results[0] == results[1]
        assert sorted(results[0].arrival_order) == ["q1", "q2"]
        assert (results[0].late, results[0].late_count, results[0].count) == (("q3",), 1, 2)
        late = await agents[2].sync("scan", role="scanner", quorum=2, timeout=10)
        assert late == results[0], "the late participant gets the recorded outcome at once"
        assert late.position == 2
        status = await client.sync_status("scan")
        assert status.quorum == 2 and list(status.missing) == ["q3"]
    finally:
        for a in agents:
            await a.close()


def fnv1a64_digest(order, payloads) -> int:
    """The outcome digest as PROTOCOL.md defines it, computed independently of the server."""
    data = struct.pack("<Q", len(order))
    for agent_id, payload in zip(order, payloads):
        for part in (agent_id.encode(), payload):
            data += struct.pack("<Q", len(part)) + part
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


async def test_summary_arrivals_get_their_place_and_the_digest_of_the_whole_outcome(client: lockstep.Client) -> None:
    names = ["s0", "s1", "s2"]
    agents = [await client.register(n) for n in names]
    try:
        async def arrive(i: int, agent: lockstep.Agent) -> lockstep.SyncResult:
            # Arrive in the order of `names`: wait until the ones before are recorded.
            async def arrived() -> int:
                try:
                    return len((await client.sync_status("summed")).arrived)
                except lockstep.NotFound:
                    return 0

            while await arrived() < i:
                await asyncio.sleep(0.01)
            return await agent.sync("summed", 3, timeout=10, payload=f"p{i}", summary=i != 1)

        results = await asyncio.gather(*(arrive(i, a) for i, a in enumerate(agents)))
        full = results[1]
        assert not full.summary and list(full.arrival_order) == names and full.position == 1
        for i, r in enumerate(results):
            assert (r.count, r.digest, r.position) == (3, full.digest, i)
            if i != 1:
                assert r.summary and r.arrival_order == () and r.payloads == ()
        assert full.digest == fnv1a64_digest(full.arrival_order, full.payloads)
        assert results[0] == results[2], "summaries of one outcome compare equal whatever the position"
    finally:
        for a in agents:
            await a.close()


async def test_sync_with_agents_adds_the_caller(client: lockstep.Client) -> None:
    async with client.register("a") as a, client.register("b") as b:
        ra, rb = await asyncio.gather(
            a.sync_with_agents("pair", {"b"}, timeout=5), b.sync_with_agents("pair", ["a", "b"], timeout=5)
        )
        assert set(ra.arrival_order) == {"a", "b"} and ra == rb


async def test_count_and_role_barriers(client: lockstep.Client) -> None:
    workers = [await client.register(f"w{i}", role="worker") for i in range(4)]
    other = await client.register("boss", role="boss")
    try:
        counted = await asyncio.gather(*(w.sync("any-three", 3, timeout=5) for w in workers[:3]))
        assert len(counted[0].arrival_order) == 3 and len({r.arrival_order for r in counted}) == 1

        by_role = await asyncio.gather(*(w.sync("all-workers", role="worker", timeout=5) for w in workers))
        assert set(by_role[0].arrival_order) == {f"w{i}" for i in range(4)}
        assert "boss" not in by_role[0].arrival_order
    finally:
        for a in workers + [other]:
            await a.close()


async def test_timeout_names_the_missing_agents(client: lockstep.Client) -> None:
    async with client.register("early") as early, client.register("also-early") as also, client.register("late"):
        started = time.monotonic()
        outcomes = await asyncio.gather(
            early.sync("gate", ["early", "also-early", "late", "absent"], timeout=0.5),
            also.sync("gate", ["early", "also-early", "late", "absent"], timeout=0.5),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 5
        for exc in outcomes:
            assert isinstance(exc, lockstep.SyncTimeout), exc
            assert isinstance(exc, lockstep.SyncFailed)
            assert set(exc.missing) == {"late", "absent"}
            assert exc.sync_id == "gate"
            assert exc.message


async def test_a_hung_participant_aborts_the_barrier(fast_server: ServerProcess) -> None:
    """A participant that stops heartbeating (but keeps its connection) is lost; waiters learn who.

    The hung agent has a connection of its own: a heartbeat renews every session of its connection,
    so agents sharing one (one process's) live and die together.
    """
    async with lockstep.connect(fast_server.address) as client, lockstep.connect(fast_server.address, options=OWN_CONNECTION) as other:
        waiter = await client.register("waiter")
        hung = await other.register("hung")
        try:
            waiting = asyncio.ensure_future(waiter.sync("meet", ["waiter", "hung"], timeout=30))
            await asyncio.sleep(0.2)
            hung._suspend_heartbeats()
            started = time.monotonic()
            with pytest.raises(lockstep.SyncAborted) as info:
                await asyncio.wait_for(waiting, 10)
            assert list(info.value.missing) == ["hung"]
            assert time.monotonic() - started < 5, "the lease (3 x 100 ms) decides, not the barrier's timeout"
        finally:
            await waiter.close()
            await hung.close()


CRASHING_AGENT = """
import asyncio, sys, lockstep
async def main():
    client = await lockstep.connect(sys.argv[1])
    agent = await client.register("crasher")
    print("registered", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_a_killed_process_aborts_the_barrier(fast_server: ServerProcess) -> None:
    """A participant in another process is SIGKILLed: no deregistration, the lease runs out."""
    proc = subprocess.Popen(
        [PYTHON, "-c", CRASHING_AGENT, fast_server.address],
        stdout=subprocess.PIPE,
        env=python_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert line.strip() == "registered"
        async with lockstep.connect(fast_server.address) as client:
            async with client.register("survivor") as survivor:
                waiting = asyncio.ensure_future(survivor.sync("meet", ["survivor", "crasher"], timeout=30))
                await asyncio.sleep(0.2)
                proc.send_signal(signal.SIGKILL)
                with pytest.raises(lockstep.SyncAborted) as info:
                    await asyncio.wait_for(waiting, 10)
                assert list(info.value.missing) == ["crasher"]
                assert info.value.sync_id == "meet"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_a_participant_that_leaves_aborts_the_barrier(client: lockstep.Client) -> None:
    async with client.register("stayer") as stayer:
        leaver = await client.register("leaver")
        waiting = asyncio.ensure_future(stayer.sync("meet", ["stayer", "leaver"], timeout=30))
        await asyncio.sleep(0.2)
        await leaver.close()
        with pytest.raises(lockstep.SyncAborted) as info:
            await asyncio.wait_for(waiting, 10)
        assert list(info.value.missing) == ["leaver"]


async def test_bad_barrier_input_is_refused(client: lockstep.Client) -> None:
    async with client.register("me") as me, client.register("you") as you:
        with pytest.raises(lockstep.FailedPrecondition) as not_mine:
            await me.sync("not-mine", ["you", "them"], timeout=1)
        assert REWORDED or "not a participant" in not_mine.value.message
        assert not_mine.value.sync_id == "not-mine" and not_mine.value.reason is lockstep.Reason.NOT_A_PARTICIPANT
        with pytest.raises(lockstep.InvalidArgument):
            await me.sync("dups", ["me", "me", "you"], timeout=1)
        # the first arrival defines the point; a different definition is a conflict
        first = asyncio.ensure_future(me.sync("defined", ["me", "you"], timeout=5))
        await asyncio.sleep(0.2)
        with pytest.raises(lockstep.SyncConflict) as info:
            await you.sync("defined", ["me", "you", "them"], timeout=5)
        assert info.value.message
        result = await you.sync("defined", ["me", "you"], timeout=5)
        assert set(result.arrival_order) == {"me", "you"} and (await first) == result
        with pytest.raises(TypeError):
            await me.sync("x", "me")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await me.sync("x")


async def test_diagnostics_force_complete_and_cleanup(client: lockstep.Client) -> None:
    async with client.register("a") as a, client.register("b") as b:
        stuck = asyncio.ensure_future(a.sync("stuck", ["a", "b", "ghost"], timeout=30, payload="A"))
        arrived_b = asyncio.ensure_future(b.sync("stuck", ["a", "b", "ghost"], timeout=30))
        await eventually(lambda: _arrived(client, "stuck", 2), what="both arrivals recorded")

        status = await client.sync_status("stuck")
        assert status.state == lockstep.SyncState.WAITING and status.waiting
        assert set(status.arrived) == {"a", "b"} and list(status.missing) == ["ghost"]
        assert set(status.required) == {"a", "b", "ghost"} and status.required_count == 3
        assert status.deadline_ms > status.now_ms

        points = await client.sync_points()
        assert [p.sync_id for p in points] == ["stuck"]

        diagnosis = await client.diagnose_sync("stuck")
        assert diagnosis.status.sync_id == "stuck"
        assert diagnosis.issues, "a waiting point with a missing agent has an issue"
        assert any("ghost" in text for text in diagnosis.issues + diagnosis.recommendations)

        forced = await client.force_complete_sync("stuck")
        assert forced.state == lockstep.SyncState.FORCED
        ra, rb = await asyncio.wait_for(asyncio.gather(stuck, arrived_b), 5)
        assert ra.forced and rb.forced and ra == rb
        assert set(ra.arrival_order) == {"a", "b"} and ra.payload_of("a") == b"A"

        with pytest.raises(lockstep.NotFound):
            await client.sync_status("never-was")
        with pytest.raises(lockstep.NotFound):
            await client.diagnose_sync("never-was")
        with pytest.raises(lockstep.NotFound):
            await client.force_complete_sync("never-was")

        removed = await client.cleanup_sync_points()
        assert removed >= 1
        assert [p.sync_id for p in await client.sync_points() if p.sync_id == "stuck"] == []


async def _arrived(client: lockstep.Client, sync_id: str, n: int) -> bool:
    try:
        return len((await client.sync_status(sync_id)).arrived) >= n
    except lockstep.NotFound:
        return False


async def test_phases_in_sequence(client: lockstep.Client) -> None:
    names = [f"ph{i}" for i in range(5)]
    agents = [await client.register(n) for n in names]
    log: List[str] = []
    try:
        async def run(agent: lockstep.Agent) -> None:
            for phase in ("collect", "process", "aggregate"):
                log.append(f"{phase}:{agent.agent_id}")
                await agent.sync(f"{phase}_complete", names, timeout=10)

        await asyncio.gather(*(run(a) for a in agents))
        phases = [entry.split(":")[0] for entry in log]
        assert phases == ["collect"] * 5 + ["process"] * 5 + ["aggregate"] * 5
    finally:
        for a in agents:
            await a.close()
