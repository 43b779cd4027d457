"""Publishing and interest-based routing."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

import lockstep
from conftest import eventually


async def _drain(agent: lockstep.Agent, settle: float = 0.3) -> List[lockstep.Delivery]:
    """Everything delivered to ``agent`` until nothing more arrives for ``settle`` seconds."""
    got = []
    while True:
        try:
            got.append(await agent.next_delivery(timeout=settle))
        except asyncio.TimeoutError:
            return got


async def test_routing_by_interest_with_wildcards(client: lockstep.Client) -> None:
    async with client.register("publisher") as pub, client.register(
        "risk_sentinel", interests=["execution_result", "risk_metrics.>"]
    ) as risk, client.register("scanner", interests=["market_data.*.trades"]) as scanner, client.register(
        "everything", interests=["all"]
    ) as everything, client.register(
        "rest", interests=["market_data.>"]
    ) as rest, client.register("nothing") as nothing:
        topics = [
            "execution_result",
            "risk_metrics.var.daily",
            "market_data.btc.trades",
            "market_data.btc.trades.large",
            "market_data.eth.quotes",
            "unrelated",
        ]
        for i, topic in enumerate(topics):
            await pub.publish(topic, {"i": i})

        assert [d.topic for d in await _drain(risk)] == ["execution_result", "risk_metrics.var.daily"]
        assert [d.topic for d in await _drain(scanner)] == ["market_data.btc.trades"]
        assert [d.topic for d in await _drain(rest)] == [
            "market_data.btc.trades",
            "market_data.btc.trades.large",
            "market_data.eth.quotes",
        ]
        everything_got = await _drain(everything)
        assert [d.topic for d in everything_got] == topics
        assert [d.json() for d in everything_got] == [{"i": i} for i in range(len(topics))]
        assert await _drain(nothing, settle=0.1) == []


async def test_deliveries_carry_publisher_sequence_and_content_type(client: lockstep.Client) -> None:
    async with client.register("src") as src, client.register("dst", interests=["t.>"]) as dst:
        await src.publish("t.json", {"a": 1})
        await src.publish("t.text", "hello")
        await src.publish("t.raw", b"\x00\xff")
        await src.publish("t.custom", b"<x/>", content_type="application/xml")
        got = await _drain(dst)
        assert [d.publisher for d in got] == ["src"] * 4
        seqs = [d.seq for d in got]
        assert seqs == list(range(seqs[0], seqs[0] + 4)), "per-agent sequence numbers are consecutive"
        assert all(d.missed_before == 0 for d in got)
        assert got[0].data == {"a": 1} and got[0].content_type == "application/json"
        assert got[1].data == "hello"
        assert got[2].payload == b"\x00\xff"
        assert got[3].content_type == "application/xml"


async def test_publisher_receives_its_own_matching_messages(client: lockstep.Client) -> None:
    async with client.register("echo", interests=["echo.*"]) as echo:
        await echo.publish("echo.1", "me")
        delivery = await echo.next_delivery(timeout=5)
        assert delivery.topic == "echo.1" and delivery.publisher == "echo"


async def test_async_iteration_over_deliveries(client: lockstep.Client) -> None:
    async with client.register("p") as p, client.register("c", interests=["n"]) as c:
        received = []

        async def consume() -> None:
            async for delivery in c.deliveries():
                received.append(delivery.json())
                if len(received) == 100:
                    return

        task = asyncio.ensure_future(consume())
        for i in range(100):
            await p.publish("n", i)
        await asyncio.wait_for(task, 10)
        assert received == list(range(100))


async def test_delivery_iterator_ends_when_agent_closes(client: lockstep.Client) -> None:
    agent = await client.register("short", interests=["x"])

    async def consume() -> int:
        n = 0
        async for _ in agent.deliveries():
            n += 1
        return n

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    await agent.close()
    assert await asyncio.wait_for(task, 5) == 0


async def test_bad_topics_are_refused(client: lockstep.Client) -> None:
    async with client.register("p") as p:
        with pytest.raises(lockstep.InvalidArgument):
            await p.publish("a.*.c", "x")
        with pytest.raises(lockstep.InvalidArgument):
            await p.publish("", "x")
        # refused by the server, reported as a typed error when confirmed
        with pytest.raises(lockstep.InvalidArgument) as info:
            await p.publish("a..b", "x", confirm=True)
        assert info.value.message


async def test_unconfirmed_publish_errors_reach_on_error(client: lockstep.Client) -> None:
    errors: List[lockstep.LockstepError] = []
    async with client.register("p", on_error=errors.append) as p:
        await p.publish("a..b", "x")
        await eventually(lambda: bool(errors), what="the server's error for request 0")
        assert isinstance(errors[0], lockstep.InvalidArgument)
        assert list(p.async_errors) == errors
        # the session is still usable
        await p.publish("fine", "x", confirm=True)


async def test_confirmed_publish_to_nobody_is_ok(client: lockstep.Client) -> None:
    async with client.register("p") as p:
        await p.publish("nobody.listens", {"x": 1}, confirm=True)
        info = await client.server_info()
        assert info.published >= 1


async def test_unread_deliveries_overflow_the_local_buffer_with_a_count(client: lockstep.Client) -> None:
    """Past ``delivery_buffer`` unread deliveries the oldest go, and the next one says how many."""
    async with client.register("p") as p, client.register("lazy", interests=["burst"], delivery_buffer=5) as lazy:
        for i in range(20):
            await p.publish("burst", i, confirm=True)
        await eventually(lambda: lazy.locally_dropped == 15, what="15 dropped locally")
        got = [await lazy.next_delivery(timeout=5) for _ in range(5)]
        assert [d.json() for d in got] == [15, 16, 17, 18, 19]
        assert got[0].missed_before == 15 and all(d.missed_before == 0 for d in got[1:])
        assert [d.seq for d in got] == list(range(got[0].seq, got[0].seq + 5))


SLOW_PUBLISHER = """
import asyncio, sys, lockstep
async def main():
    async with lockstep.connect(sys.argv[1]) as client:
        async with client.register("firehose") as agent:
            for i in range(int(sys.argv[2])):
                await agent.publish("flood", i.to_bytes(4, "big") + bytes(int(sys.argv[3])), confirm=True)
            print("done", flush=True)
asyncio.run(main())
"""


async def test_server_queue_overflow_is_reported_as_missed(server_factory) -> None:  # type: ignore[no-untyped-def]
    """A receiver that stops reading its stream loses the oldest messages at the server; the first
    message after the gap says how many, and nothing is lost without being counted."""
    import subprocess
    import time

    from conftest import PYTHON, python_env

    srv = server_factory("--queue-capacity", "8", "--heartbeat-interval-ms", "2000")
    total, size = 300, 64 * 1024
    async with lockstep.connect(srv.address) as client, client.register("stalled", interests=["flood"]) as stalled:
        proc = subprocess.Popen(
            [PYTHON, "-c", SLOW_PUBLISHER, srv.address, str(total), str(size)],
            env=python_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(3.0)  # block this event loop: the session stream is not read meanwhile
            assert proc.stdout is not None
            line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
            assert line.strip() == "done"
        finally:
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
        received = []
        while True:
            try:
                received.append(await stalled.next_delivery(timeout=1.0))
            except asyncio.TimeoutError:
                break
        numbers = [int.from_bytes(d.payload[:4], "big") for d in received]
        missed = sum(d.missed_before for d in received)
        assert len(received) + missed == total, "every message is delivered or counted as missed"
        assert missed > 0, "the stalled receiver's queue overflowed"
        assert numbers == sorted(numbers) and numbers[-1] == total - 1, "the newest survive, in order"
        for prev, cur in zip(received, received[1:]):
            assert cur.seq == prev.seq + 1 + cur.missed_before
        info = await client.get_agent("stalled")
        assert info.dropped == missed
