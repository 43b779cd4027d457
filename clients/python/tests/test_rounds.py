"""Tick rounds against a real server: a server-driven round merges the answers into a context key,
publishes the result and names the hung participant at its timeout; a client-driven round closes
once everyone answered; bad answers are refused with their reasons and change nothing."""

from __future__ import annotations

import json

import pytest

import lockstep


async def test_a_server_driven_round_merges_answers_and_names_the_hung_agent(client: lockstep.Client) -> None:
    async with client.register("monitor", role="monitor", interests=["ticks.>"]) as monitor, client.register(
        "alpha", role="strategy"
    ) as alpha, client.register("beta", role="strategy") as beta, client.register("hung", role="strategy") as hung:
        await client.rounds.create(
            "tick", role="strategy", timeout_ms=300, cadence_ms=600, context_key="strategies.merged",
            topic="ticks.strategies", input={"market": "btc"},
        )
        for k in (1, 2):
            for agent in (alpha, beta):
                tick = await agent.rounds().next(timeout=20)
                assert (tick.series, tick.round, tick.input) == ("tick", k, {"market": "btc"})
                await tick.answer({"signals": {agent.agent_id: k}})
            taken = await hung.rounds().next(timeout=20)
            assert taken.round == k, "the hung agent is asked, and never answers"
            result = json.loads((await monitor.next_delivery(timeout=20)).payload)
            assert (result["round"], result["closing"]) == (k, "timeout")
            assert result["answered"] == ["alpha", "beta"]
            assert result["missed"] == [{"agent": "hung", "why": "timeout"}]
            assert result["value"]["signals"] == {"alpha": k, "beta": k}
            assert result["closed_at_ms"] - result["opened_at_ms"] >= 300
        assert (await client.context.get("strategies.merged")).value["signals"] == {"alpha": 2, "beta": 2}
        with pytest.raises(lockstep.FailedPrecondition) as late:
            await hung.answer_round("tick", 1, {"late": True})
        assert late.value.reason is lockstep.Reason.ROUND_NOT_OPEN
        first = await client.rounds.round("tick", 1)
        assert first.missed == [{"agent": "hung", "why": "timeout"}]
        await client.rounds.remove("tick")


async def test_a_client_driven_round_closes_when_all_answered_and_bad_answers_change_nothing(
    client: lockstep.Client,
) -> None:
    async with client.register("a", role="voter") as a, client.register("b", role="voter") as b, client.register(
        "outsider", role="x"
    ) as outsider:
        await client.rounds.create("poll", agents=["a", "b"], timeout_ms=60_000, context_key="poll.result")
        with pytest.raises(lockstep.AlreadyRegistered) as exists:
            await client.rounds.create("poll", agents=["a"], timeout_ms=5, context_key="poll.result")
        assert exists.value.reason is lockstep.Reason.ROUND_SERIES_EXISTS
        assert await client.rounds.open("poll", {"q": "go?"}, round=1) == 1
        with pytest.raises(lockstep.FailedPrecondition) as busy:
            await client.rounds.open("poll", {})
        assert busy.value.reason is lockstep.Reason.ROUND_IN_PROGRESS
        ta = await a.rounds().next(timeout=20)
        tb = await b.rounds().next(timeout=20)
        for call, error, reason in [
            (outsider.answer_round("poll", 1, {}), lockstep.FailedPrecondition, lockstep.Reason.NOT_A_ROUND_PARTICIPANT),
            (a.answer_round("nope", 1, {}), lockstep.NotFound, lockstep.Reason.UNKNOWN_ROUND_SERIES),
            (a.answer_round("poll", 1, [1]), lockstep.InvalidArgument, lockstep.Reason.INVALID_ARGUMENT),
            (a.answer_round("poll", 2, {}), lockstep.FailedPrecondition, lockstep.Reason.ROUND_NOT_OPEN),
        ]:
            with pytest.raises(error) as refused:
                await call
            assert refused.value.reason is reason
        await tb.answer({"b": "yes"})
        assert (await client.rounds.round("poll", 1)).waiting == ["a"]
        await ta.answer({"a": "no"})
        with pytest.raises(lockstep.FailedPrecondition) as again:
            await ta.answer({"a": "again"})
        assert again.value.reason is lockstep.Reason.ROUND_NOT_OPEN
        closed = await client.rounds.round("poll", 1)
        assert (closed.open, closed.closing, closed.answered) == (False, "complete", ["a", "b"])
        assert (await client.context.get("poll.result")).value == {"a": "no", "b": "yes"}
        series = await client.rounds.series("poll")
        assert (series.last_round, [r.round for r in series.retained]) == (1, [1])
