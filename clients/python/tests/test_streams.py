"""Event-time streams against a real server: a tick controller emits the events of two sources in
event-time order with a correction for a late one; a latency buffer stands in for an overdue sample
with a provisional value and settles it with its error; bad input is refused with its reason."""

from __future__ import annotations

import time
from typing import Any, Callable, List

import pytest

import lockstep

from conftest import REWORDED, ServerProcess

#: The longest wait for anything, on a busy machine.
T = 20.0


async def next_on(agent: lockstep.Agent, topic: str) -> Any:
    while True:
        d = await agent.next_delivery(timeout=T)
        if d.topic == topic:
            return d.json()


def events(tick: Any) -> List[tuple]:
    return [(e["publisher"], e["event_time_ms"]) for e in tick["events"]]


async def test_ticks_in_event_time_order_with_a_correction(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(admin_token="s3cret")
    async with lockstep.connect(server.address) as client:
        consumer = await client.register("consumer", interests=["ticks.>"])
        a = await client.register("a")
        b = await client.register("b")
        with pytest.raises(lockstep.Unauthenticated):
            await client.streams().create_ticker("bars", inputs=["trades.>"], output="ticks.bars", period_ms=100)
        streams = client.streams("s3cret", actor="ops")
        created = await streams.create_ticker(
            "bars",
            inputs=["trades.>"],
            output="ticks.bars",
            period_ms=100,
            lateness_ms=200,
            late_policy="correction",
            min_sources=2,
        )
        assert created == "created ticker 'bars'"
        base = (int(time.time() * 1000) - 5_000) // 1_000 * 1_000
        for agent, offset in [(a, 130), (b, 20), (a, 10), (b, 150), (a, 400), (b, 400)]:
            await agent.publish("trades.btc", {"t": offset}, event_time_ms=base + offset, confirm=True)
        # Watermark 200: ticks base/100 and base/100 + 1 go, in order, their events sorted.
        first = await next_on(consumer, "ticks.bars")
        second = await next_on(consumer, "ticks.bars")
        assert (first["tick"], events(first)) == (base // 100, [("a", base + 10), ("b", base + 20)])
        assert (second["tick"], events(second)) == (base // 100 + 1, [("a", base + 130), ("b", base + 150)])
        assert first["events"][0]["payload"] == {"t": 10}
        # A late event: a correction naming its tick.
        await a.publish("trades.btc", {"t": 50}, event_time_ms=base + 50, confirm=True)
        fix = await next_on(consumer, "ticks.bars")
        assert (fix["tick"], fix["correction"], events(fix)) == (base // 100, True, [("a", base + 50)])

        info = await streams.ticker("bars")
        assert info.stats["events"] == 7 and info.stats["ticks_emitted"] == 2 and info.stats["corrections"] == 1
        assert sorted(s["publisher"] for s in info.sources) == ["a", "b"]
        assert [t.id for t in await streams.tickers()] == ["bars"]

        # Bad input: precise reasons, nothing applied.
        with pytest.raises(lockstep.AlreadyRegistered) as exists:
            await streams.create_ticker("bars", inputs=["x"], output="y", period_ms=1)
        assert exists.value.reason is lockstep.Reason.STREAM_EXISTS
        with pytest.raises(lockstep.InvalidArgument) as bad:
            await streams.create_ticker("loop", inputs=[">"], output="ticks", period_ms=100)
        if not REWORDED:
            assert "own inputs" in str(bad.value)
        with pytest.raises(lockstep.NotFound) as unknown:
            await streams.ticker("nope")
        assert unknown.value.reason is lockstep.Reason.UNKNOWN_STREAM
        with pytest.raises(lockstep.InvalidArgument) as far:
            await a.publish("trades.btc", {}, event_time_ms=base + 3_600_000, confirm=True)
        assert far.value.reason is lockstep.Reason.EVENT_TIME_OUT_OF_RANGE
        assert (await streams.ticker("bars")).stats["events"] == 7
        assert await streams.remove("ticker", "bars") == "removed ticker 'bars'"
        assert await streams.tickers() == []


async def test_a_buffer_fills_an_overdue_sample_and_settles_it(client: lockstep.Client) -> None:
    eager = await client.register("eager", interests=["arm.x.*"])
    robot = await client.register("robot")
    streams = client.streams()
    await streams.create_buffer(
        "arm-x", topic="telemetry.arm", pointer="/pose/x", cadence_ms=100, grace_ms=50, output="arm.x", estimator="linear"
    )
    start = int(time.time() * 1000) - 1_000
    for t in (start, start + 100):
        await robot.publish("telemetry.arm", {"pose": {"x": (t - start) / 100}}, event_time_ms=t, confirm=True)
    p = await next_on(eager, "arm.x.provisional")
    assert p["provisional"] is True and p["time_ms"] == start + 200 and p["value"] == 2.0
    await robot.publish("telemetry.arm", {"pose": {"x": 2.5}}, event_time_ms=start + 200, confirm=True)
    d = None
    while d is None or d["value"] != 2.5:
        d = await next_on(eager, "arm.x.definitive")
    assert d["replaced"][0]["time_ms"] == start + 200 and d["replaced"][0]["error"] == 0.5
    info = await streams.buffer("arm-x")
    assert info.stats["samples"] == 3 and info.stats["max_abs_error"] >= 0.5
    assert 0 < info.stats["provisional_share"] < 1
    assert info.spec["estimator"] == "linear"
