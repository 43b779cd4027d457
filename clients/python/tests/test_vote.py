"""Votes against a real server: one outcome for every voter and the opener, one directive on the
topic, bad ballots refused with their reasons, a lost voter counted as missing, and the full
record on demand; and the trading example runs to completion."""

from __future__ import annotations

import asyncio
import time

import pytest

import lockstep
from conftest import OWN_CONNECTION, ServerProcess
from test_examples import run_example


async def test_a_weighted_vote_gives_everyone_one_outcome_and_one_directive(client: lockstep.Client) -> None:
    stakes = {"s1": "5", "s2": "3", "s3": "3"}
    async with client.register("desk", role="desk") as desk, client.register(
        "executor", role="executor", interests=["trades.directive"]
    ) as executor:
        voters = [await client.register(v, role="strategy", metadata={"stake": s}) for v, s in stakes.items()]
        try:
            opening = asyncio.ensure_future(
                desk.vote(
                    "trade-1",
                    "ACME?",
                    list(stakes),
                    options=["buy", "sell"],
                    weight="metadata",
                    weight_field="stake",
                    topic="trades.directive",
                    timeout=60,
                )
            )
            for _ in range(200):
                try:
                    await client.vote_status("trade-1")
                    break
                except lockstep.NotFound:
                    await asyncio.sleep(0.02)
            with pytest.raises(lockstep.InvalidArgument) as bad:
                await voters[0].cast("trade-1", "short")
            assert bad.value.reason is lockstep.Reason.UNKNOWN_OPTION
            with pytest.raises(lockstep.InvalidArgument) as bad:
                await voters[0].cast("trade-1", "buy", confidence=1.5)
            assert bad.value.reason is lockstep.Reason.BAD_CONFIDENCE
            with pytest.raises(lockstep.FailedPrecondition) as bad:
                await executor.cast("trade-1", "buy")
            assert bad.value.reason is lockstep.Reason.NOT_A_VOTER
            outcomes = await asyncio.gather(
                voters[0].cast("trade-1", "buy"), voters[1].cast("trade-1", "sell"), voters[2].abstain("trade-1", "no view")
            )
            opened = await asyncio.wait_for(opening, 20)
            assert all(o == opened for o in outcomes), "every voter and the opener get the same outcome"
            assert opened.decided and opened.directive == "buy", opened
            assert (opened.ballots, opened.abstentions, opened.total_weight) == (2, 1, 8.0)
            with pytest.raises(lockstep.FailedPrecondition) as bad:
                await voters[1].cast("trade-1", "buy")
            assert bad.value.reason is lockstep.Reason.DOUBLE_BALLOT
            directive = await executor.next_delivery(timeout=10)
            assert directive.topic == "trades.directive" and directive.publisher == "desk"
            assert directive.json()["directive"] == "buy"
            record = await client.vote_status("trade-1")
            assert record.state == "decided"
            assert {b.agent_id: (b.choice, b.abstained) for b in record.ballots} == {
                "s1": ("buy", False),
                "s2": ("sell", False),
                "s3": ("", True),
            }
            assert [v.vote_id for v in await client.list_votes()] == ["trade-1"]
        finally:
            for v in voters:
                await v.close()


async def test_recommendations_are_grouped_by_their_key_field(client: lockstep.Client) -> None:
    async with client.register("a", role="strategy") as a, client.register("b", role="strategy") as b:
        await a.vote("recs", "what?", 2, key_field="action", weight="confidence", wait=False, timeout=30)
        with pytest.raises(lockstep.InvalidArgument) as bad:
            await a.cast("recs", recommendation={"qty": 1}, confidence=0.5)
        assert bad.value.reason is lockstep.Reason.BAD_BALLOT
        first, second = await asyncio.gather(
            a.cast("recs", recommendation={"action": "buy", "qty": 5}, confidence=0.9),
            b.cast("recs", recommendation={"action": "sell", "qty": 2}, confidence=0.4),
        )
        assert first == second and first.directive == {"action": "buy", "qty": 5}


async def test_a_lost_voter_is_missing_not_a_no(fast_server: ServerProcess) -> None:
    # s3 has a connection of its own: a heartbeat renews every session of its connection.
    async with lockstep.connect(fast_server.address) as client, lockstep.connect(fast_server.address, options=OWN_CONNECTION) as other:
        async with client.register("s1", role="strategy") as s1, client.register("s2", role="strategy") as s2:
            s3 = await other.register("s3", role="strategy")
            await s1.vote("t", "go?", ["s1", "s2", "s3"], options=["go", "stop"], policy="majority", wait=False, timeout=60)
            started = time.monotonic()
            casting = asyncio.gather(s1.cast("t", "go"), s2.cast("t", "go"))
            # s3 hangs: its lease runs out after about 0.3 s, and it never votes.
            s3._suspend_heartbeats()
            a, b = await asyncio.wait_for(casting, 30)
            assert a == b and a.decided and a.missing == 1, a
            assert time.monotonic() - started < 30
            record = await client.vote_status("t")
            assert record.missing == ("s3",) and record.gone == ("s3",)


def test_the_trading_vote_example(server: ServerProcess) -> None:
    out = run_example("vote", server.address)
    assert "directive: sell" in out, out
    assert "executor executed: sell" in out, out
    assert "every strategy saw the same outcome: True" in out, out
