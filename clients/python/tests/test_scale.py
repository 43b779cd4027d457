"""Many agents in one process."""

from __future__ import annotations

import asyncio
import time

import lockstep
from conftest import ServerProcess

N = 60


async def test_sixty_concurrent_agents_publish_watch_and_meet(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as client:
        agents = await asyncio.gather(
            *(client.register(f"agent-{i:02d}", role="swarm", interests=["swarm.broadcast", f"swarm.direct.{i:02d}"])
              for i in range(N))
        )
        try:
            assert len(await client.list_agents(role="swarm")) == N

            # everyone broadcasts once; everyone receives all N broadcasts
            await asyncio.gather(*(a.publish("swarm.broadcast", {"from": a.agent_id}) for a in agents))

            async def collect(agent: lockstep.Agent) -> set:
                seen = set()
                while len(seen) < N:
                    delivery = await agent.next_delivery(timeout=20)
                    seen.add(delivery.json()["from"])
                return seen

            everyone = {a.agent_id for a in agents}
            received = await asyncio.gather(*(collect(a) for a in agents))
            assert all(r == everyone for r in received)

            # direct messages reach exactly their addressee
            await agents[0].publish("swarm.direct.42", "just for 42")
            assert (await agents[42].next_delivery(timeout=10)).data == "just for 42"
            assert agents[41].pending_deliveries == 0

            # every agent updates its state; one watcher converges on all of them
            async with agents[0].watch_state(role="swarm") as watch:
                await asyncio.gather(*(a.update_state({"step": 1, "id": a.agent_id}) for a in agents))
                states = await watch.wait_until(
                    lambda s: len(s) == N and all(v.get("step") == 1 for v in s.values()), timeout=20
                )
                assert set(states) == everyone

            # and all of them meet at one barrier, twice
            for round_ in range(2):
                started = time.monotonic()
                results = await asyncio.gather(*(a.sync(f"all-{round_}", role="swarm", timeout=30) for a in agents))
                assert len(results[0].arrival_order) == N
                assert all(r == results[0] for r in results)
                assert time.monotonic() - started < 30
        finally:
            await asyncio.gather(*(a.close() for a in agents))
        assert await client.list_agents() == []
