"""Shared context against a real server: set, patch, compare-and-set with the current version on
conflict, reads of retained versions, bad input refused with its reasons and nothing applied, a
prefix watch that converges and resumes from its version, TTLs, and ``system.health``."""

from __future__ import annotations

import asyncio
import json

import pytest

import lockstep


async def test_set_patch_cas_and_versions(client: lockstep.Client) -> None:
    ctx = client.context
    first = await ctx.cas("workspace.persona", 0, {"tone": "terse"})
    assert first.previous_version == 0
    with pytest.raises(lockstep.ContextConflict) as conflict:
        await ctx.cas("workspace.persona", 0, {})
    assert conflict.value.current_version == first.version
    assert conflict.value.reason is lockstep.Reason.CONTEXT_CONFLICT
    second = await ctx.patch("workspace.persona", {"lang": "en"})
    now = await ctx.get("workspace.persona")
    assert (now.version, now.value) == (second.version, {"tone": "terse", "lang": "en"})
    assert (await ctx.get("workspace.persona", version=first.version)).value == {"tone": "terse"}
    history = await ctx.history("workspace.persona")
    assert [h.version for h in history] == [first.version, second.version]
    assert history[1].patch == {"lang": "en"}
    keys = [e.key for e in await ctx.list("workspace")]
    assert keys == ["workspace.persona"]


async def test_bad_input_is_refused_with_its_reason_and_nothing_is_applied(client: lockstep.Client) -> None:
    ctx = client.context
    base = await ctx.set("k", {"n": 1})
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    cases = [
        (ctx.set("bad key", 1), lockstep.InvalidArgument, lockstep.Reason.INVALID_ARGUMENT),
        (ctx.set("k", deep), lockstep.InvalidArgument, lockstep.Reason.INVALID_ARGUMENT),
        (ctx.set("k", "x" * (300 * 1024)), lockstep.InvalidArgument, lockstep.Reason.INVALID_ARGUMENT),
        (ctx.set("system.health", {}), lockstep.FailedPrecondition, lockstep.Reason.CONTEXT_READ_ONLY),
        (ctx.get("no.such.key"), lockstep.NotFound, lockstep.Reason.UNKNOWN_CONTEXT_KEY),
        (ctx.get("k", version=999), lockstep.NotFound, lockstep.Reason.UNKNOWN_CONTEXT_VERSION),
    ]
    for call, kind, reason in cases:
        with pytest.raises(kind) as err:
            await call
        assert err.value.reason is reason, err.value
    assert (await ctx.get("k")).version == base.version, "nothing applied"


async def test_a_prefix_watch_converges_and_resumes(client: lockstep.Client) -> None:
    ctx = client.context
    await ctx.set("market.acme", {"px": 1})
    watch = ctx.watch_prefix("market")
    first = await watch.next(timeout=10)
    assert [c.key for c in first.changes] == ["market.acme"]
    for px in range(2, 31):
        await ctx.patch("market.acme", {"px": px})
    await ctx.set("other", 1)
    while watch.view.get("market.acme", (0, None))[1] != {"px": 30}:
        await watch.next(timeout=10)
    assert "other" not in watch.view
    resume, kept = watch.resume_from, dict(watch.view)
    await watch.close()
    await ctx.patch("market.acme", {"seen": True})
    await ctx.set("market.beta", {"px": 7})
    again = ctx.watch_prefix("market", from_version=resume)
    async with again:
        batch = await again.next(timeout=10)
        acme = next(c for c in batch.changes if c.key == "market.acme")
        assert acme.base_version == kept["market.acme"][0], "one delta on the version it had"
        again.view.update(kept)
        again.view["market.acme"] = (acme.version, lockstep.apply_merge_patch(kept["market.acme"][1], acme.value))
        assert again.view["market.acme"][1] == {"px": 30, "seen": True}
        assert any(c.key == "market.beta" and c.base_version == 0 for c in batch.changes)


async def test_a_ttl_key_expires(client: lockstep.Client) -> None:
    ctx = client.context
    written = await ctx.set("lock.job", "me", expected_version=0, ttl_ms=300)
    assert written.expires_at_ms > 0
    for _ in range(200):
        try:
            await ctx.get("lock.job")
        except lockstep.NotFound:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the key did not expire")
    await ctx.cas("lock.job", 0, "someone else")


async def test_system_health_counts_the_agents(client: lockstep.Client) -> None:
    async with client.register("a1", role="worker"), client.register("a2", role="worker"):
        for _ in range(200):
            health = (await client.context.get("system.health")).value
            if health["total_agents"] == 2:
                break
            await asyncio.sleep(0.05)
        assert health["healthy_agents"] == 2 and health["health_score"] == 1.0, json.dumps(health)
        assert "breakers_open" in health
        # The seed's spelling: syncbus.get_state('system_health').
        seed = await client.context.get_state("system_health")
        assert seed["total_agents"] == 2 and seed["health_score"] >= 0.8


async def test_an_agents_lease_bound_key_goes_with_it(client: lockstep.Client) -> None:
    ctx = client.context
    with pytest.raises(lockstep.InvalidArgument) as outside:
        await ctx.set("worker.lock", "me", lease=True)
    assert outside.value.reason is lockstep.Reason.INVALID_ARGUMENT, "a lease needs an agent's session"
    async with client.register("holder", role="worker") as agent:
        held = await agent.context.set("worker.lock", {"by": "holder"}, expected_version=0, lease=True)
        kept = await agent.context.patch("worker.note", {"by": "holder"})
        with pytest.raises(lockstep.ContextConflict) as taken:
            await agent.context.set("worker.lock", {"by": "other"}, expected_version=0, lease=True)
        assert taken.value.current_version == held.version
        entry = await ctx.get("worker.lock")
        assert entry.value == {"by": "holder"} and entry.owner == "holder"
        assert (await ctx.history("worker.note"))[-1].writer == "holder", "the agent is the writer"
    # The agent left (deregistered): its lease-bound key went with it; the other stays.
    with pytest.raises(lockstep.NotFound):
        await ctx.get("worker.lock")
    assert (await ctx.get("worker.note")).version == kept.version
