"""Agent state: merge-patch deltas, versions, watches that converge, and gap healing."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

import lockstep
from lockstep.v1 import lockstep_pb2 as pb


async def test_deltas_merge_and_versions_increase(client: lockstep.Client) -> None:
    async with client.register("trader") as trader:
        v1 = await trader.update_state({"confidence": 0.5, "position": {"btc": 1, "eth": 2}})
        v2 = await trader.update_state({"confidence": 0.85, "position": {"eth": None}})
        v3 = await trader.update_state('{"last_signal": "BUY"}')
        assert 0 < v1 < v2 < v3
        expected = {"confidence": 0.85, "position": {"btc": 1}, "last_signal": "BUY"}
        snapshot = await client.get_state("trader")
        assert snapshot.version == v3 and snapshot.state == expected
        assert trader.state == expected and trader.state_version == v3
        assert (await trader.get_state()).state == expected
        info = await client.get_agent("trader")
        assert info.state_version == v3


async def test_state_deltas_must_be_objects(client: lockstep.Client) -> None:
    async with client.register("a") as a:
        with pytest.raises(lockstep.InvalidArgument):
            await a.update_state("[1, 2]")
        with pytest.raises(lockstep.InvalidArgument):
            await a.update_state("{not json")
        assert (await client.get_state("a")).version == 0


async def test_watch_one_agent_converges(client: lockstep.Client) -> None:
    async with client.register("owner") as owner, client.register("watcher") as watcher:
        await owner.update_state({"a": 1, "nested": {"x": 1}})
        async with watcher.watch_state(agent_id="owner") as watch:
            # the current state arrives first, as a snapshot
            first = await watch.next(timeout=5)
            assert first.agent_id == "owner" and first.state == {"a": 1, "nested": {"x": 1}} and first.version == 1
            await owner.update_state({"b": 2})
            await owner.update_state({"nested": {"x": None, "y": 2}})
            last = await owner.update_state({"a": None})
            final = await watch.wait_for_version("owner", last, timeout=5)
            assert final == {"b": 2, "nested": {"y": 2}}
            assert watch.get("owner") == final and watch.version("owner") == last
            assert final == (await client.get_state("owner")).state


async def test_watch_views_carry_deltas(client: lockstep.Client) -> None:
    async with client.register("o") as owner, client.register("w") as watcher:
        watch = await watcher.watch_state(agent_id="o")
        initial = await watch.next(timeout=5)
        assert initial.version == 0 and initial.state == {}
        await owner.update_state({"k": 1})
        view = await watch.next(timeout=5)
        assert view.version == 1 and view.state == {"k": 1} and view.delta == {"k": 1} and not view.removed
        await watch.close()
        assert watch.closed


async def test_watch_by_role_and_all(client: lockstep.Client) -> None:
    async with client.register("t1", role="trader") as t1, client.register("t2", role="trader") as t2, client.register(
        "r1", role="risk"
    ) as r1, client.register("monitor", role="ops") as monitor:
        traders = await monitor.watch_state(role="trader")
        everyone = await monitor.watch_state(all=True)
        await t1.update_state({"pnl": 1})
        await t2.update_state({"pnl": 2})
        await r1.update_state({"var": 3})
        await traders.wait_until(lambda s: s.get("t1") == {"pnl": 1} and s.get("t2") == {"pnl": 2}, timeout=5)
        await everyone.wait_until(
            lambda s: s.get("t1") == {"pnl": 1} and s.get("t2") == {"pnl": 2} and s.get("r1") == {"var": 3}, timeout=5
        )
        await asyncio.sleep(0.2)
        assert "r1" not in traders.states, "a role watch shows only that role"
        await traders.close()
        await everyone.close()


async def test_role_watch_picks_up_agents_that_join_later(client: lockstep.Client) -> None:
    async with client.register("monitor") as monitor:
        watch = await monitor.watch_state(role="worker")
        await monitor.watch_state(agent_id="monitor")  # a second watch, so roles must be told apart
        async with client.register("late-worker", role="worker") as late, client.register("other", role="x") as other:
            await late.update_state({"step": 1})
            await other.update_state({"step": 9})
            states = await watch.wait_until(lambda s: s.get("late-worker") == {"step": 1}, timeout=5)
            assert "other" not in states


async def test_watch_sees_an_agent_leave(client: lockstep.Client) -> None:
    async with client.register("watcher") as watcher:
        leaver = await client.register("leaver", role="temp")
        await leaver.update_state({"x": 1})
        watch = await watcher.watch_state(role="temp")
        await watch.wait_until(lambda s: s.get("leaver") == {"x": 1}, timeout=5)
        await leaver.close()
        removed = None
        while removed is None:
            view = await watch.next(timeout=5)
            if view.removed:
                removed = view
        assert removed.agent_id == "leaver"
        assert "leaver" not in watch.states


async def test_many_updates_converge_for_a_slow_watcher(client: lockstep.Client) -> None:
    """A watcher that does not read for a while still ends at the owner's exact state."""
    async with client.register("busy") as busy, client.register("slow") as slow:
        watch = await slow.watch_state(agent_id="busy")
        rng = random.Random(7)
        expected: dict = {}
        last = 0
        for i in range(300):
            key = f"k{rng.randrange(20)}"
            value = None if rng.random() < 0.2 else {"i": i, "sub": {"v": rng.randrange(5)}}
            delta = {key: value}
            expected = lockstep.apply_merge_patch(expected, delta)
            last = await busy.update_state(delta)
        final = await watch.wait_for_version("busy", last, timeout=10)
        assert final == expected
        assert final == (await client.get_state("busy")).state


async def test_a_gap_in_versions_is_healed_from_a_snapshot(client: lockstep.Client) -> None:
    """If a change arrives whose base version is not the one the mirror has, the client refetches."""
    async with client.register("src") as src, client.register("dst") as dst:
        watch = await dst.watch_state(agent_id="src")
        await src.update_state({"a": 1})
        await watch.wait_for_version("src", 1, timeout=5)
        # The server moves on to version 3 ...
        await src.update_state({"b": 2})
        await src.update_state({"c": 3})
        await watch.wait_for_version("src", 3, timeout=5)
        resyncs = dst.resyncs
        # ... and a change claiming to start from version 7 shows up: a gap the client must heal.
        await src.update_state({"d": 4})
        await src.update_state({"e": 5})
        dst._on_change(pb.StateChange(agent_id="src", base_version=7, version=8, delta_json=json.dumps({"bogus": True})))
        final = await watch.wait_until(lambda s: s.get("src", {}).get("e") == 5, timeout=5)
        assert final["src"] == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
        assert dst.resyncs == resyncs + 1
        assert watch.version("src") == 5


async def test_unwatch_stops_updates(client: lockstep.Client) -> None:
    async with client.register("o") as owner, client.register("w") as watcher:
        watch = await watcher.watch_state(agent_id="o")
        await watch.wait_for_version("o", 0, timeout=5)
        await watch.close()
        await owner.update_state({"x": 1})
        fresh = await watcher.watch_state(agent_id="o")
        view = await fresh.next(timeout=5)
        assert view.state == {"x": 1} and view.version == 1
        with pytest.raises(asyncio.TimeoutError):
            await fresh.next(timeout=0.3)
