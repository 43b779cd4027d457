"""Processing errors trip circuit breakers: a Python agent whose handler raises reports a
``delivery_error`` (with the exception text), and the server isolates that agent only."""

from __future__ import annotations

import asyncio
from typing import List

import lockstep
from conftest import eventually

#: The server's default ``breaker.failure_threshold``.
FAILURE_THRESHOLD = 5


class Failing(lockstep.SynchronizedAgent):
    """Raises on every message, as a handler with a bug would."""

    interests = ["jobs.>"]

    async def on_delivery(self, delivery: lockstep.Delivery) -> None:
        raise ValueError(f"cannot parse job #{delivery.seq}")


class Working(lockstep.SynchronizedAgent):
    interests = ["jobs.>"]

    def __init__(self, agent_id: str, client: lockstep.Client) -> None:
        super().__init__(agent_id, client)
        self.seen: List[str] = []

    async def on_delivery(self, delivery: lockstep.Delivery) -> None:
        self.seen.append(delivery.text())


async def test_a_raising_handler_opens_only_its_own_breaker(client: lockstep.Client) -> None:
    bad = Failing("bad", client)
    peers = [Working("good1", client), Working("good2", client)]
    for a in (bad, *peers):
        await a.start()
    producer = await client.register("producer")
    try:
        for i in range(FAILURE_THRESHOLD):
            await producer.publish("jobs.new", f"job {i}", confirm=True)

        async def bad_isolated() -> bool:
            return (await client.get_agent("bad")).breaker_state == "open"

        await eventually(bad_isolated, timeout=10, what="the failing agent's breaker opens")
        assert bad.handler_errors == FAILURE_THRESHOLD
        expected = [f"job {i}" for i in range(FAILURE_THRESHOLD)]
        for peer in peers:
            await eventually(lambda p=peer: p.seen == expected, what=f"{peer.agent_id} gets every job")
            info = await client.get_agent(peer.agent_id)
            assert info.breaker_state == "closed" and info.breaker_opened == 0

        # While open, the isolated agent's own writes are refused; its peers' are not.
        assert bad.agent is not None
        try:
            await bad.agent.update_state({"x": 1})
        except lockstep.FailedPrecondition as exc:
            assert exc.reason == lockstep.Reason.BREAKER_OPEN
        else:
            raise AssertionError("an agent with an open breaker may not update its state")
        assert peers[0].agent is not None
        assert await peers[0].agent.update_state({"x": 1}) >= 1
    finally:
        for a in (bad, *peers):
            await a.stop()
        await producer.close()


async def test_report_delivery_error_counts_one_failure_each(client: lockstep.Client) -> None:
    agent = await client.register("reporter", interests=["jobs.>"])
    other = await client.register("other", interests=["jobs.>"])
    producer = await client.register("producer")
    await producer.publish("jobs.one", "x", confirm=True)
    delivery = await agent.next_delivery(timeout=10)
    # One short of the threshold leaves the breaker closed: each report is one failure, not more.
    for _ in range(FAILURE_THRESHOLD - 1):
        await agent.report_delivery_error(delivery.seq, "RuntimeError: boom " + "x" * 5000)
    assert (await client.get_agent("reporter")).breaker_state == "closed"
    await agent.report_delivery_error(delivery.seq, "RuntimeError: boom")
    assert (await client.get_agent("reporter")).breaker_state == "open"
    assert (await client.get_agent("other")).breaker_state == "closed"
    await asyncio.gather(agent.close(), other.close(), producer.close())
