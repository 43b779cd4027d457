"""Phase synchronisation: agents meet at the end of each phase of their work.

Faster agents wait for slower ones at every phase boundary, so no agent starts processing before all
have collected, and none aggregates before all have processed.

    python examples/phases.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import random

import lockstep
from _common import address

WORKERS = ["phase-w1", "phase-w2", "phase-w3", "phase-w4"]
PHASES = ["phase1_complete", "phase2_complete", "phase3_complete"]


class PhasedWorker(lockstep.SynchronizedAgent):
    role = "phase-worker"

    async def work(self) -> int:
        for phase in PHASES:
            await asyncio.sleep(random.uniform(0.05, 0.3))  # this phase's work
            await self.update_state({"phase": phase})
            result = await self.sync_with_agents(phase, WORKERS, timeout=30)
            if self.name == WORKERS[0]:
                print(f"{phase}: all {len(result.arrival_order)} workers done (last: {result.arrival_order[-1]})")
        return len(PHASES)


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        # The point ids are reused each run, so forget finished ones from an earlier run first.
        await client.cleanup_sync_points()
        done = await asyncio.gather(*(PhasedWorker(name, client).run() for name in WORKERS))
        print(f"phases completed per worker: {done}")
        await client.cleanup_sync_points()


if __name__ == "__main__":
    asyncio.run(main(address()))
