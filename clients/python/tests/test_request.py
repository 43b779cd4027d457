"""Request/reply between agents against a real server: one responder answers, nobody can answer,
a silent responder times out, and a late answer is refused cleanly."""

from __future__ import annotations

import asyncio
import time

import pytest

import lockstep
from conftest import REWORDED


async def answer_all(agent: lockstep.Agent, prefix: str) -> None:
    """Answer every request with its payload behind ``prefix``."""
    async for req in agent.requests():
        await req.respond(prefix + req.text(), content_type="text/plain")


async def test_a_request_is_answered_by_the_one_responder(client: lockstep.Client) -> None:
    async with client.register("asker", role="desk", interests=["quotes.>"]) as asker, client.register(
        "pricer", role="pricer", interests=["quotes.*"]
    ) as pricer:
        serving = asyncio.ensure_future(answer_all(pricer, "price of "))
        try:
            response = await asker.request("quotes.get", "ACME", timeout=10)
            assert response == lockstep.Response(b"price of ACME", "text/plain", "pricer")
            assert response.data == "price of ACME"
            json_answer = await asker.request("quotes.get", {"symbol": "XYZ"})
            assert json_answer.responder == "pricer" and json_answer.text() == 'price of {"symbol":"XYZ"}'
        finally:
            serving.cancel()


async def test_no_responders_fails_at_once(client: lockstep.Client) -> None:
    async with client.register("asker", role="desk", interests=["quotes.>"]) as asker:
        started = time.monotonic()
        with pytest.raises(lockstep.NoResponders) as refused:
            await asker.request("quotes.get", "ACME", timeout=600)
        assert time.monotonic() - started < 10, "refused at once, not at the timeout"
        assert refused.value.reason is lockstep.Reason.NO_RESPONDERS
        assert isinstance(refused.value, lockstep.RequestFailed)
        assert REWORDED or "quotes.get" in refused.value.message
        # An agent that listens on the topic but does not take requests refuses them at once.
        async with client.register("listener", role="feed", interests=["quotes.>"]):
            with pytest.raises(lockstep.RequestRefused) as refused_by_listener:
                await asker.request("quotes.get", "ACME", timeout=600)
            assert refused_by_listener.value.reason is lockstep.Reason.REQUEST_REFUSED


async def test_a_silent_responder_times_out_and_its_late_answer_is_refused(client: lockstep.Client) -> None:
    async with client.register("asker", role="desk") as asker, client.register(
        "slow", role="pricer", interests=["quotes.>"]
    ) as slow:
        requests = slow.requests()
        timeout = 0.3
        started = time.monotonic()
        asking = asyncio.ensure_future(asker.request("quotes.get", "ACME", timeout=timeout))
        held = await requests.next(timeout=10)
        assert (held.requester, held.topic, held.text()) == ("asker", "quotes.get", "ACME")
        with pytest.raises(lockstep.RequestTimeout) as timed_out:
            await asking
        assert time.monotonic() - started >= timeout
        assert timed_out.value.reason is lockstep.Reason.REQUEST_TIMEOUT
        assert isinstance(timed_out.value, lockstep.DeadlineExceeded)
        assert REWORDED or "'slow'" in timed_out.value.message

        with pytest.raises(lockstep.NotFound) as late:
            await held.respond("too late")
        assert late.value.reason is lockstep.Reason.UNKNOWN_REQUEST
        # The responder's session goes on: it answers the next request.
        asking = asyncio.ensure_future(asker.request("quotes.get", "XYZ", timeout=10))
        await (await requests.next(timeout=10)).respond("42")
        assert (await asking).text() == "42"
        assert not slow.closed
