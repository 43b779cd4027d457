"""The intake against a real server: a record failing its topic's schema is refused with the schema
errors (path and reason) and copied to the dead-letter topic; records are categorised with the
server's envelope; the rule set is replaced at run time (versioned; an invalid set is refused naming
the place, and the set in force stays); counters are read back."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

import lockstep

from conftest import REWORDED, ServerProcess

#: The longest wait for anything, on a busy machine.
T = 20.0

CONFIG = """
[[intake.schemas]]
topic = "intake"
dead_letter = "intake.dead"
schema = { type = "object", required = ["kind"], properties = { px = { type = "number" } } }

[[intake.routes]]
topic = "intake"
unmatched = "intake.unmatched"

[[intake.routes.rules]]
name = "market"
target = "market_data.{/symbol}"
when = [{ pointer = "/kind", equals = "tick" }]
"""


async def test_validation_categorisation_and_replacement(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = tmp_path / "intake.toml"
    config.write_text(CONFIG)
    server = server_factory("--config", str(config), admin_token="s3cret")
    async with lockstep.connect(server.address) as client:
        sink = await client.register("sink", interests=["market_data.>", "intake.>", "scanner_data"])
        feed = await client.register("feed")

        with pytest.raises(lockstep.SchemaViolation) as bad:
            await feed.publish("intake", {"px": "high"}, confirm=True)
        assert bad.value.reason is lockstep.Reason.SCHEMA_VIOLATION
        assert sorted(path for path, _ in bad.value.schema_errors) == ["", "/px"]
        assert all(reason for _, reason in bad.value.schema_errors)
        if not REWORDED:
            assert "/px" in str(bad.value)
        dead = await sink.next_delivery(timeout=T)
        assert (dead.topic, dead.json(), dead.intake) == ("intake.dead", {"px": "high"}, None)

        await feed.publish("intake", {"kind": "tick", "symbol": "ETH", "px": 1.5}, confirm=True)
        d = await sink.next_delivery(timeout=T)
        assert (d.topic, d.publisher) == ("market_data.eth", "feed")
        assert d.intake is not None
        assert (d.intake.seq, d.intake.categorised_from, d.intake.rule, d.intake.tick_id) == (
            1,
            "intake",
            "intake/market",
            0,
        )
        await feed.publish("intake", {"kind": "other"}, confirm=True)
        assert (await sink.next_delivery(timeout=T)).topic == "intake.unmatched"

        with pytest.raises(lockstep.Unauthenticated):
            await client.intake().replace({"routes": []})
        intake = client.intake("s3cret", actor="ops")
        rules = {"routes": [{"topic": "intake", "rules": [{"name": "scan", "target": "scanner_data"}]}]}
        assert await intake.replace(rules) == 2
        with pytest.raises(lockstep.InvalidArgument) as invalid:
            await intake.replace({"routes": [{"topic": "intake", "rules": [{"target": "a b"}]}]})
        assert invalid.value.reason is lockstep.Reason.INVALID_ARGUMENT
        if not REWORDED:
            assert "routes[0].rules[0].target" in str(invalid.value)
        # The old schema is gone; the new route applies.
        await feed.publish("intake", {"px": "anything"}, confirm=True)
        moved = await sink.next_delivery(timeout=T)
        assert (moved.topic, moved.intake.rule if moved.intake else None) == ("scanner_data", "intake/scan")

        status = await intake.status()
        assert status.version == 2
        assert status.rules["routes"][0]["rules"][0]["name"] == "scan"
        assert (status.validated, status.refused, status.dead_lettered) == (3, 1, 1)
        assert status.refused_by_topic == {"intake": 1}
        assert status.refused_by_publisher == {"default/feed": 1}
        assert (status.categorised, status.unmatched) == (2, 1)
        assert status.matched_by_rule == {"intake/market": 1, "intake/scan": 1}
