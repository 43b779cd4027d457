"""Barrier synchronisation: nobody goes on until everyone has arrived.

Agents arrive at different times and each brings a payload; every agent gets the same result, with
the arrival order and everyone's payload. Then a barrier that one agent never reaches times out, and
the error names the missing agent.

    python examples/barrier.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import json
import time

import lockstep
from _common import address

NAMES = ["barrier-a", "barrier-b", "barrier-c"]


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        agents = [await client.register(name, role="barrier-demo") for name in NAMES]
        try:
            start = time.monotonic()

            async def arrive(agent: lockstep.Agent, delay: float) -> lockstep.SyncResult:
                await asyncio.sleep(delay)
                print(f"[{agent.agent_id}] arrives after {delay:.1f}s")
                result = await agent.sync("barrier_point", NAMES, timeout=10, payload={"ready_at": round(delay, 1)})
                print(f"[{agent.agent_id}] released at {time.monotonic() - start:.1f}s")
                return result

            results = await asyncio.gather(*(arrive(a, 0.2 * i) for i, a in enumerate(agents)))
            assert all(r == results[0] for r in results)
            print("arrival order:", ", ".join(results[0].arrival_order))
            for who, payload in results[0].payload_map().items():
                print(f"  {who} brought {json.loads(payload)}")

            # A barrier that 'barrier-c' never reaches.
            try:
                await asyncio.gather(*(a.sync("incomplete", NAMES, timeout=0.5) for a in agents[:2]))
            except lockstep.SyncTimeout as exc:
                print(f"timed out as expected; missing: {', '.join(exc.missing)}")
        finally:
            for agent in agents:
                await agent.close()


if __name__ == "__main__":
    asyncio.run(main(address()))
