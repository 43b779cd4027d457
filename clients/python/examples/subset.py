"""Subset synchronisation: only the agents concerned wait for each other.

Processing agents sync among themselves and storage agents among themselves, at the same time,
without blocking each other; then every storage agent is awaited by role, and any two agents by
count.

    python examples/subset.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio

import lockstep
from _common import address

PROCESSORS = {"processor1", "processor2"}
STORAGE = {"storage1", "storage2"}


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        await client.cleanup_sync_points()
        processors = [await client.register(n, role="processor") for n in sorted(PROCESSORS)]
        storage = [await client.register(n, role="storage") for n in sorted(STORAGE)]
        try:
            done = await asyncio.gather(
                *(p.sync_with_agents("processing_done", PROCESSORS, timeout=10) for p in processors),
                *(s.sync_with_agents("storage_ready", STORAGE, timeout=10) for s in storage),
            )
            print("processing_done:", ", ".join(sorted(done[0].arrival_order)))
            print("storage_ready:", ", ".join(sorted(done[-1].arrival_order)))

            by_role = await asyncio.gather(*(s.sync("all_storage_flushed", role="storage", timeout=10) for s in storage))
            print("all_storage_flushed (role storage):", ", ".join(sorted(by_role[0].arrival_order)))

            anyone = await asyncio.gather(*(a.sync("any_two", 2, timeout=10) for a in (processors[0], storage[1])))
            print("any_two (count 2):", ", ".join(sorted(anyone[0].arrival_order)))
        finally:
            for agent in processors + storage:
                await agent.close()
        await client.cleanup_sync_points()


if __name__ == "__main__":
    asyncio.run(main(address()))
