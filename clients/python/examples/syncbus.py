"""Interest-based routing and delta state updates (the seed's HighPerformanceSyncBus).

A data pipeline publishes categorised market data; each agent receives only the topics it declared
interest in. Agents share state by sending only what changed (merge-patch deltas), and a console
monitor watches every agent's state converge.

    python examples/syncbus.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
from typing import Dict, List

import lockstep
from _common import address

INTERESTS = {
    "risk_sentinel": ["execution_result", "risk_metrics.>"],
    "scanner": ["market_data.*", "scanner_data"],
    "strategy_trainer": ["trades", "performance.>"],
}

TICKS = [
    ("market_data.btc", {"price": 64000}),
    ("risk_metrics.var", {"var": 0.02}),
    ("trades", {"side": "buy", "qty": 1}),
    ("market_data.eth", {"price": 3100}),
    ("execution_result", {"order": 1, "filled": True}),
    ("performance.daily", {"pnl": 12.5}),
    ("sentiment", {"score": 0.3}),  # nobody is interested
]


async def main(addr: str) -> Dict[str, List[str]]:
    async with lockstep.connect(addr) as client:
        agents = {name: await client.register(name, role="trading", interests=topics) for name, topics in INTERESTS.items()}
        pipeline = await client.register("data_pipeline", role="pipeline")
        monitor = await client.register("console_monitor", role="monitor")
        try:
            watch = await monitor.watch_state(role="trading")
            for topic, data in TICKS:
                await pipeline.publish(topic, data)

            received: Dict[str, List[str]] = {}
            for name, agent in agents.items():
                got = []
                while True:
                    try:
                        delivery = await agent.next_delivery(timeout=0.5)
                    except asyncio.TimeoutError:
                        break
                    got.append(delivery.topic)
                    # Only what changed goes to the server: a delta, not the whole state.
                    await agent.update_state({"last_topic": delivery.topic, "seen": len(got)})
                received[name] = got
                print(f"{name:17} received {', '.join(got)}")

            await agents["scanner"].update_state({"confidence": 0.85})
            await agents["scanner"].update_state({"last_topic": None})  # null deletes a member

            states = await watch.wait_until(
                lambda s: s.get("scanner", {}).get("confidence") == 0.85 and "last_topic" not in s.get("scanner", {}),
                timeout=10,
            )
            for name in sorted(states):
                print(f"monitor sees {name:17} v{watch.version(name)} {states[name]}")
            return received
        finally:
            for agent in [*agents.values(), pipeline, monitor]:
                await agent.close()


if __name__ == "__main__":
    asyncio.run(main(address()))
