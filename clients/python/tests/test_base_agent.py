"""The SynchronizedAgent base class."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List, Mapping

import pytest

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
        self.notices: List[lockstep.ControlNotice] = []
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

    async def on_command(self, name: str, params: Mapping[str, Any]) -> Any:
        self.commands.append(name)
        if name == "explode":
            raise ValueError(f"cannot explode with {dict(params)}")
        if name == "unserialisable":
            return {1, 2}
        return {"ok": name, "paused": self.is_paused, **params}

    async def on_pause(self, notice: lockstep.ControlNotice) -> None:
        self.notices.append(notice)

    async def on_resume(self, notice: lockstep.ControlNotice) -> None:
        self.notices.append(notice)

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

            assert await agent.handle_command("pause") == {"ok": "pause", "paused": True}
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


async def test_operators_reach_the_agent_through_the_server(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as client:
        admin = client.admin(actor="ops")
        agent = Collector("collector-2", client)
        runner = asyncio.ensure_future(agent.run())
        await eventually(lambda: agent.started, what="on_start")
        async with client.register("feeder", role="feeder") as feeder:
            # commands go to on_command; its return value is the result
            result = await admin.send_command("collector-2", "rebalance", {"min_weight": 0.1}, timeout=5)
            assert result == {"ok": "rebalance", "paused": False, "min_weight": 0.1}
            # its exception is the operator's CommandFailed, quickly
            started = time.monotonic()
            with pytest.raises(lockstep.CommandFailed) as failed:
                await admin.send_command("collector-2", "explode", {"n": 1}, timeout=20)
            assert failed.value.agent_error == "cannot explode with {'n': 1}"
            assert time.monotonic() - started < 2
            with pytest.raises(lockstep.CommandFailed) as bad_result:
                await admin.send_command("collector-2", "unserialisable", timeout=5)
            assert "not JSON-serialisable" in bad_result.value.agent_error

            # the server pauses it: is_paused, on_pause, deliveries wait
            await admin.pause_agent("collector-2")
            await eventually(lambda: agent.is_paused and len(agent.notices) == 1, what="paused by the server")
            assert agent.notices[0].kind == lockstep.ControlKind.PAUSED and agent.notices[0].actor == "ops"
            await feeder.publish("jobs.held", {"n": 10}, confirm=True)
            await asyncio.sleep(0.3)
            assert agent.got == []
            # still commandable while paused
            assert (await admin.send_command("collector-2", "status", timeout=5))["paused"] is True
            with pytest.raises(lockstep.AgentPaused):
                await agent.update_state({"x": 1})

            await admin.resume_agent("collector-2")
            await eventually(lambda: agent.got == [{"n": 10}], what="held delivery handled after resume")
            assert not agent.is_paused and agent.notices[-1].kind == lockstep.ControlKind.RESUMED

            await admin.emergency_stop("drill")
            await eventually(lambda: agent.is_paused and agent.notices[-1].kind == lockstep.ControlKind.EMERGENCY_STOP)
            assert agent.notices[-1].reason == "drill"
            await admin.resume_all()
            await eventually(lambda: not agent.is_paused and agent.notices[-1].kind == lockstep.ControlKind.RESUMED_ALL)

            # the built-in emergency_stop, sent as a command, is answered before the agent stops
            assert await admin.send_command("collector-2", "emergency_stop", timeout=5) == {
                "ok": "emergency_stop",
                "paused": True,
            }
            assert await asyncio.wait_for(runner, 5) is None
            assert agent.stopped and agent.stopped_hook
            assert agent.handler_errors == 0
            assert agent.commands == ["rebalance", "explode", "unserialisable", "status", "emergency_stop"]
        assert await client.list_agents() == []


class Plain(lockstep.SynchronizedAgent):
    pass


class OldStyle(lockstep.SynchronizedAgent):
    """Written for lockstep 0.1: on_command takes one Command."""

    async def on_command(self, command: lockstep.Command) -> Any:  # type: ignore[override]
        return {"name": command.name, "params": dict(command.params), "id": command.command_id}


async def test_default_and_old_style_command_handlers(client: lockstep.Client) -> None:
    admin = client.admin()
    async with Plain("plain", client), OldStyle("old", client):
        with pytest.raises(lockstep.CommandFailed) as info:
            await admin.send_command("plain", "rebalance", timeout=5)
        assert info.value.agent_error == "agent 'plain' does not handle the command 'rebalance'"
        assert await admin.send_command("plain", "resume", timeout=5) is None  # built in

        result = await admin.send_command("old", "rebalance", {"w": 1}, timeout=5)
        assert result["name"] == "rebalance" and result["params"] == {"w": 1} and result["id"] > 0
