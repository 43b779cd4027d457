"""Execution traces against a real server: record and look up (equal inputs written differently
hit), a lookup right after a record's acknowledgement hits and every hit is counted, large outputs
in chunks with lineage both ways, bad records refused with their reasons and
nothing stored, and 50 agents asking ``get_or_claim`` at once computing one output once."""

from __future__ import annotations

import asyncio

import pytest

import lockstep


async def test_record_lookup_lineage_and_bad_records(client: lockstep.Client) -> None:
    async with client.register("runner", role="tool") as agent:
        assert await client.traces.lookup("search.web", {"q": "btc", "n": 1}) is None
        parent = await agent.traces.record("search.web", {"q": "btc", "n": 1}, {"hits": ["a", "b"]})
        assert parent.new and parent.json and parent.producer == "runner"
        hit = await client.traces.lookup("search.web", {"n": 1.0, "q": "btc"})
        assert hit is not None and hit.info.id == parent.id and hit.json() == {"hits": ["a", "b"]}
        big = bytes(i % 251 for i in range(600_000))
        child = await agent.traces.record(
            "summarize", {"doc": 1}, big, parents=[parent.id], context=[("workspace.persona", 3)], duration_ms=7
        )
        got = await client.traces.get(child.id)
        assert got.output == big and got.info.duration_ms == 7
        assert (await client.traces.lineage(parent.id)).children == (child.id,)
        up = await client.traces.lineage(child.id)
        assert up.parents == ((parent.id, True),) and up.context == (("workspace.persona", 3),)
        assert not (await agent.traces.record("summarize", {"doc": 1}, big)).new

        before = await client.traces.stats()
        unknown = "0" * 64
        cases = [
            (agent.traces.record("bad tool", 1, 1), lockstep.InvalidArgument, lockstep.Reason.INVALID_ARGUMENT),
            (agent.traces.record("t", 1, 1, parents=[unknown]), lockstep.NotFound, lockstep.Reason.UNKNOWN_TRACE),
            (agent.traces.record("summarize", {"doc": 1}, b"x"), lockstep.FailedPrecondition, lockstep.Reason.TRACE_EXISTS),
            (client.traces.get(unknown), lockstep.NotFound, lockstep.Reason.UNKNOWN_TRACE),
        ]
        for call, kind, reason in cases:
            with pytest.raises(kind) as err:
                await call
            assert err.value.reason is reason, err.value
        after = await client.traces.stats()
        assert (after.traces, after.bytes) == (before.traces, before.bytes) == (2, before.bytes)


async def test_a_lookup_after_a_record_hits_and_every_hit_counts(client: lockstep.Client) -> None:
    async with client.register("runner", role="tool") as agent:
        before = await client.traces.stats()
        for n in range(5):
            await agent.traces.record("t.small", {"n": n}, {"out": n, "pad": "x" * 500})
            # The acknowledgement came: a lookup on another channel finds the trace (the small
            # output in one message, beside its info).
            hit = await client.traces.lookup("t.small", {"n": float(n)})
            assert hit is not None and hit.json() == {"out": n, "pad": "x" * 500}
        assert await client.traces.lookup("t.small", {"n": 99}) is None
        after = await client.traces.stats()
        assert (after.hits - before.hits, after.misses - before.misses) == (5, 1)


async def test_fifty_agents_compute_one_output_once(client: lockstep.Client) -> None:
    agents = [await client.register(f"a{i}", role="tool") for i in range(50)]
    computed = 0

    async def one(agent: lockstep.Agent) -> object:
        nonlocal computed
        got = await agent.traces.get_or_claim("llm.plan", {"prompt": "plan the week"})
        if isinstance(got, lockstep.TraceClaim):
            computed += 1
            out = {"plan": ["mon", "tue"], "by": agent.agent_id}
            await agent.traces.record("llm.plan", {"prompt": "plan the week"}, out)
            return out
        return got.json()

    try:
        outputs = await asyncio.gather(*(one(a) for a in agents))
        assert computed == 1
        assert all(o == outputs[0] for o in outputs)
        stats = await client.traces.stats()
        assert (stats.recorded, stats.claims, stats.waiters) == (1, 0, 0)
        # A claim held by another makes a record fail, and a wait has its limit.
        holder, other = agents[0], agents[1]
        assert isinstance(await holder.traces.get_or_claim("t", 2), lockstep.TraceClaim)
        with pytest.raises(lockstep.FailedPrecondition) as err:
            await other.traces.record("t", 2, 0)
        assert err.value.reason is lockstep.Reason.TRACE_CLAIMED
        with pytest.raises(lockstep.DeadlineExceeded) as waited:
            await other.traces.get_or_claim("t", 2, timeout=0.05)
        assert waited.value.reason is lockstep.Reason.TRACE_WAIT_TIMEOUT
        await holder.traces.release("t", 2)
        assert isinstance(await other.traces.get_or_claim("t", 2), lockstep.TraceClaim)
    finally:
        for a in agents:
            await a.close()
