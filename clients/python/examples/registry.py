"""The registry: register agents with roles and capabilities, find them, follow their status.

The seed's ``SynchronizedAgentRegistry`` on lockstep: registration is the agent's session, heartbeats
are automatic, and status changes are seen by anyone watching the registry.

    python examples/registry.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio

import lockstep
from _common import address


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        async with client.watch_registry() as events:

            async def follow() -> None:
                async for event in events:
                    agent = event.agent
                    print(f"  registry: {event.kind} {agent.agent_id} ({agent.role}) status={agent.status}")

            follower = asyncio.ensure_future(follow())

            worker = await client.register(
                "worker_1", role="data_processor", capabilities=["data_sync", "checkpoint_sync"], metadata={"zone": "eu"}
            )
            archiver = await client.register("archiver_1", role="storage", capabilities=["data_sync", "archive"])
            await worker.set_status(lockstep.AgentStatus.SYNCING)

            sync_agents = await client.agents_with_capability("data_sync")
            print("agents with data_sync:", ", ".join(sorted(a.agent_id for a in sync_agents)))
            processors = await client.list_agents(role="data_processor")
            print("data processors:", ", ".join(f"{a.agent_id} [{a.status}]" for a in processors))
            syncing = await client.list_agents(status="syncing")
            print("syncing now:", ", ".join(a.agent_id for a in syncing))

            await worker.close()
            await archiver.close()
            await asyncio.sleep(0.3)  # let the follower print the departures
            follower.cancel()
        print("registered after leaving:", len(await client.list_agents()))


if __name__ == "__main__":
    asyncio.run(main(address()))
