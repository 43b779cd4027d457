"""The admin object and the seed's command interface."""

from __future__ import annotations

import asyncio

import pytest

import lockstep
from lockstep.admin import CONTROL_PLANE_COMMANDS


async def test_status_summarises_server_and_registry(client: lockstep.Client) -> None:
    admin = client.admin(token="secret")
    async with client.register("t1", role="trader") as t1, client.register("t2", role="trader"), client.register(
        "r1", role="risk"
    ):
        await t1.set_status("busy")
        await t1.publish("nowhere", "x", confirm=True)
        status = await admin.status()
        assert status.server_version
        assert status.namespace == "default" and status.address == client.address
        assert status.heartbeat_interval_ms > 0 and status.lease_intervals > 0
        assert len(status.agents) == 3 and status.agents_on_server >= 3
        assert status.by_role == {"trader": 2, "risk": 1}
        assert status.by_status == {"busy": 1, "active": 2}
        assert status.published >= 1
        as_dict = await admin.handle_command("status")
        assert as_dict["total_agents"] == 3 and as_dict["agents_by_role"] == {"trader": 2, "risk": 1}


async def test_admin_lists_agents_and_runs_sync_diagnostics(client: lockstep.Client) -> None:
    admin = client.admin()
    async with client.register("a", capabilities=["gpu"]) as a, client.register("b"):
        assert [x.agent_id for x in await admin.list_agents(capability="gpu")] == ["a"]
        listed = await admin.handle_command("list_agents", {"capability": "gpu"})
        assert listed["total"] == 1 and listed["agents"][0]["agent_id"] == "a"

        waiting = asyncio.ensure_future(a.sync("stuck", ["a", "b"], timeout=30))
        await asyncio.sleep(0.2)
        points = await admin.handle_command("sync_points")
        assert points["waiting"] == 1 and points["sync_points"][0]["sync_id"] == "stuck"
        diagnosis = await admin.handle_command("diagnose", {"sync_id": "stuck"})
        assert diagnosis["status"]["missing"] == ["b"] and diagnosis["issues"]
        assert (await admin.sync_status("stuck")).arrived == ("a",)
        forced = await admin.handle_command("force_complete", {"sync_id": "stuck"})
        assert forced["state"] == "forced"
        result = await asyncio.wait_for(waiting, 5)
        assert result.forced and result.arrival_order == ("a",)
        cleaned = await admin.handle_command("cleanup")
        assert cleaned["removed"] >= 1
        assert await admin.sync_points() == []
        with pytest.raises(lockstep.NotFound):
            await admin.diagnose("stuck")


async def test_control_plane_operations_say_they_are_not_supported(client: lockstep.Client) -> None:
    admin = client.admin(token="t")
    async with client.register("risk_sentinel"):
        calls = [
            admin.health(),
            admin.pause_agent("risk_sentinel"),
            admin.resume_agent("risk_sentinel"),
            admin.restart_agent("risk_sentinel"),
            admin.emergency_stop(),
            admin.resume_all(),
            admin.send_command("risk_sentinel", "rebalance_weights", {"min_weight": 0.1}),
        ]
        for call in calls:
            with pytest.raises(lockstep.NotSupported) as info:
                await call
            assert "control-plane" in info.value.message
        # the agent was left alone
        assert (await client.get_agent("risk_sentinel")).status == lockstep.AgentStatus.ACTIVE


async def test_command_interface_accepts_the_seed_command_names(client: lockstep.Client) -> None:
    commands = lockstep.CommandInterface(client)
    for name in ("status", "pause_agent", "resume_agent", "emergency_stop", "health", "restart_agent",
                 "list_agents", "send_command", "sync_points", "diagnose", "force_complete", "cleanup"):
        assert name in commands.commands
    assert (await commands.handle_command("list_agents"))["agents"] == []
    for name in CONTROL_PLANE_COMMANDS:
        params = {"agent_id": "x", "command": "c"}
        with pytest.raises(lockstep.NotSupported):
            await commands.handle_command(name, params)
    with pytest.raises(lockstep.InvalidArgument) as info:
        await commands.handle_command("self_destruct")
    assert "known commands" in info.value.message
    with pytest.raises(lockstep.InvalidArgument):
        await commands.handle_command("pause_agent")  # no agent_id
    with pytest.raises(lockstep.InvalidArgument):
        await commands.handle_command("diagnose")  # no sync_id
    info_dict = await commands.handle_command("server_info")
    assert info_dict["heartbeat_interval_ms"] > 0 and "queue_capacity" in info_dict["limits"]
