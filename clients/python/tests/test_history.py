"""Topic history against a real server started with retention rules: a late subscriber gets what a
retained topic kept and then live messages, each topic sequence number once and in order, stamped
with the server's time; a replay asking for more than was kept gets a gap notice; bad subscriptions
are refused with their reason; ``Client.topics`` lists counts and sequence numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable, List

import pytest

import lockstep

RULES = """
[[history.retain]]
pattern = "market.>"
max_messages = 10000
max_topics = 4

[[history.retain]]
pattern = "alerts"
max_messages = 5
"""


@pytest.fixture
def history_server(server_factory: Callable[..., object], tmp_path: Path) -> object:
    config = tmp_path / "lockstep.toml"
    config.write_text(RULES)
    return server_factory("--config", str(config))


async def take(agent: lockstep.Agent, n: int) -> List[lockstep.Delivery]:
    return [await agent.next_delivery(timeout=10) for _ in range(n)]


async def test_late_subscriber_gets_history_then_live_once_each_in_order(history_server: object) -> None:
    async with lockstep.connect(history_server.address) as client:  # type: ignore[attr-defined]
        async with client.register("feed", role="feed") as feed, client.register("late", role="strategy") as late:
            for i in range(1, 201):
                await feed.publish("market.btc", str(i).encode())
            await feed.publish("market.btc", b"201", confirm=True)

            async def more() -> None:
                for i in range(202, 401):
                    await feed.publish("market.btc", str(i).encode())

            publishing = asyncio.create_task(more())
            await late.subscribe("market.>", since_seq=1)
            await publishing
            got = await take(late, 400)
            assert [d.topic_seq for d in got] == list(range(1, 401))
            assert all(d.payload == str(d.topic_seq).encode() and d.publisher == "feed" for d in got)
            assert got[0].time_ms > 0 and all(a.time_ms <= b.time_ms for a, b in zip(got, got[1:]))
            assert late.history_gaps() == []

            # `alerts` keeps 5: the last 8 asked for, the 3 dropped reported first.
            for i in range(1, 9):
                await feed.publish("alerts", str(i).encode())
            await feed.publish("untracked", b"x", confirm=True)
            async with client.register("other", role="strategy") as other:
                await other.subscribe("alerts", last=8)
                assert [d.topic_seq for d in await take(other, 5)] == [4, 5, 6, 7, 8]
                assert other.history_gaps() == [lockstep.HistoryGap("alerts", 1, 3)]

                with pytest.raises(lockstep.InvalidArgument) as err:
                    await other.subscribe("a..b")
                assert err.value.reason is lockstep.Reason.INVALID_ARGUMENT
                with pytest.raises(lockstep.InvalidArgument) as err:
                    await other.unsubscribe("never.subscribed")
                assert err.value.reason is lockstep.Reason.INVALID_ARGUMENT
                with pytest.raises(ValueError):
                    await other.subscribe("alerts", last=1, since_seq=1)

            topics = await client.topics()
            assert [(t.topic, t.messages, t.first_seq, t.last_seq, t.stored) for t in topics] == [
                ("alerts", 5, 4, 8, False),
                ("market.btc", 400, 1, 400, False),
            ]
