"""Quick start: three agents do some work, then meet at a barrier.

The seed usage guide's first example, on lockstep. Run a server (``lockstep serve``) and then::

    python examples/quick_start.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import random

import lockstep
from _common import address

AGENTS = {"agent1", "agent2", "agent3"}


class MyAgent(lockstep.SynchronizedAgent):
    """Works for a moment, then waits until all three agents are done."""

    async def work(self) -> lockstep.SyncResult:
        print(f"[{self.name}] Working...")
        await asyncio.sleep(random.uniform(0.1, 0.5))
        result = await self.sync_with_agents("work_complete", AGENTS, timeout=30)
        print(f"[{self.name}] Sync result: {bool(result)} (arrival order {', '.join(result.arrival_order)})")
        return result


async def main(addr: str) -> bool:
    async with lockstep.connect(addr) as client:
        agents = [MyAgent(name, client) for name in sorted(AGENTS)]
        results = await asyncio.gather(*(agent.run() for agent in agents))
        ok = all(results)
        print(f"All agents completed: {ok}")
        return ok


if __name__ == "__main__":
    raise SystemExit(0 if asyncio.run(main(address())) else 1)
