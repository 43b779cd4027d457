"""The SynchronizedAgent base class."""

from __future__ import annotations

import asyncio
from typing import Any, List

import lockstep
from conftest import ServerProcess, eventually


class Collector(lockstep.SynchronizedAgent):
    interests = ["jobs.>"]
    role = "collector"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.got: List[Any] = []
        self.views: List[lockstep.StateView] = []
        self.commands: List[str] = []
        self.started = False
        self.stopped_hook = False

    async def on_start(self) -> None:
        self.started = True

    async def on_delivery(self, delivery: lockstep.Delivery) -> None:
        if delivery.data == "boom":
            raise RuntimeError("a handler bug")
        self.got.append(delivery.data)

    async def on_state(self, view: lockstep.StateView) -> None:
        self.views.append(view)

    async def on_command(self, command: lockstep.Command) -> Any:
        self.commands.append(command.name)
        return {"ok": command.name}

    async def on_stop(self) -> None:
        self.stopped_hook = True


async def test_hooks_pause_resume_and_emergency_stop(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as client:
        agent = Collector("collector-1", client, watch={"role": "feeder"})
        runner = asyncio.ensure_future(agent.run())
        await eventually(lambda: agent.started, what="on_start")
        assert agent.name == "collector-1"
        info = await client.get_agent("collector-1")
        assert info.role == "collector" and list(info.interests) == ["jobs.>"]

        async with client.register("feeder", role="feeder") as feeder:
            await feeder.publish("jobs.1", {"n": 1})
            await feeder.publish("jobs.2", "boom")  # a failing handler is counted, not fatal
            await feeder.publish("jobs.3", {"n": 3})
            await eventually(lambda: agent.got == [{"n": 1}, {"n": 3}], what="deliveries handled")
            assert agent.handler_errors == 1

            await feeder.update_state({"load": 0.5})
            await eventually(lambda: any(v.state == {"load": 0.5} for v in agent.views), what="on_state")

            assert await agent.handle_command("pause") == {"ok": "pause"}
            assert agent.paused
            assert (await client.get_agent("collector-1")).status == lockstep.AgentStatus.PAUSED
            await feeder.publish("jobs.4", {"n": 4})
            await asyncio.sleep(0.3)
            assert agent.got == [{"n": 1}, {"n": 3}], "no deliveries are handled while paused"
            await agent.handle_command("resume")
            await eventually(lambda: agent.got[-1:] == [{"n": 4}], what="held delivery handled after resume")
            assert (await client.get_agent("collector-1")).status == lockstep.AgentStatus.ACTIVE

            await agent.handle_command("emergency_stop")
            assert await asyncio.wait_for(runner, 5) is None
            assert agent.stopped and agent.stopped_hook
            assert agent.commands == ["pause", "resume", "emergency_stop"]
        assert await client.list_agents() == []


class Worker(lockstep.SynchronizedAgent):
    async def work(self) -> Any:
        await asyncio.sleep(0.05)
        return await self.sync_with_agents("work_complete", {"w1", "w2", "w3"}, timeout=10)


async def test_run_returns_what_work_returns(server: ServerProcess) -> None:
    # each agent opens its own connection from an address, as a separate process would
    results = await asyncio.gather(*(Worker(f"w{i}", server.address).run() for i in (1, 2, 3)))
    assert all(results)
    assert set(results[0].arrival_order) == {"w1", "w2", "w3"}
    async with lockstep.connect(server.address) as client:
        assert await client.list_agents() == []


async def test_async_context_manager_form(client: lockstep.Client) -> None:
    async with lockstep.SynchronizedAgent("plain", client, role="r") as agent:
        version = await agent.update_state({"x": 1})
        assert version == 1
        assert (await agent.get_state()).state == {"x": 1}
        await agent.set_status("idle")
        assert (await client.get_agent("plain")).status == lockstep.AgentStatus.IDLE
    assert await client.list_agents() == []
