"""The admin object and the seed's command interface: status, diagnostics, and the seed's command names."""

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
        assert status.paused == () and status.emergency_stop is None and status.pending_commands == 0
        assert status.by_status_on_server == {"busy": 1, "active": 2}
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


async def test_health_reports_every_agent(client: lockstep.Client) -> None:
    admin = client.admin()
    async with client.register("risk_sentinel", role="risk", interests=["risk.>"]) as sentinel, client.register(
        "scanner"
    ) as scanner:
        await scanner.publish("risk.var", {"var": 0.02}, confirm=True)
        await sentinel.next_delivery(timeout=5)
        report = await admin.health()
        assert {a.agent_id for a in report.agents} == {"risk_sentinel", "scanner"}
        assert report.healthy + report.degraded + report.stuck + report.unhealthy == 2
        assert 0.0 <= report.score <= 1.0 and report.now_ms > 0
        sentinel_health = report.get("risk_sentinel")
        assert sentinel_health is not None and sentinel_health.role == "risk"
        assert sentinel_health.breaker_state == "closed" and sentinel_health.namespace == "default"
        assert report.get("nobody") is None
        as_dict = await admin.handle_command("health")
        assert {a["agent_id"] for a in as_dict["agents"]} == {"risk_sentinel", "scanner"}
        assert isinstance(as_dict["agents"][0]["issues"], list)


async def test_restart_agent_closes_its_breaker(client: lockstep.Client) -> None:
    admin = client.admin()
    async with client.register("worker"):
        assert (await client.get_agent("worker")).breaker_state == "closed"
        detail = await admin.restart_agent("worker")
        assert "restarted" in detail and "closed" in detail
        assert (await admin.handle_command("restart_agent", {"agent_id": "worker"}))["agent_id"] == "worker"


async def test_command_interface_runs_the_seed_command_names(client: lockstep.Client) -> None:
    commands = lockstep.CommandInterface(client, actor="seed")
    for name in ("status", "pause_agent", "resume_agent", "emergency_stop", "health", "restart_agent",
                 "list_agents", "send_command", "sync_points", "diagnose", "force_complete", "cleanup",
                 "resume_all", "audit_log"):
        assert name in commands.commands
    for name in CONTROL_PLANE_COMMANDS:
        assert name in commands.commands
    assert (await commands.handle_command("list_agents"))["agents"] == []

    async with client.register("risk_sentinel", role="risk") as agent:
        async def answer() -> None:
            async for cmd in agent.commands():
                await cmd.reply({"rebalanced": cmd.params["min_weight"]})

        task = asyncio.ensure_future(answer())
        try:
            paused = await commands.handle_command("pause_agent", {"agent_id": "risk_sentinel"})
            assert paused["agent_id"] == "risk_sentinel" and "paused" in paused["detail"]
            status = await commands.handle_command("status")
            assert status["paused_agents"] == [{"namespace": "default", "agent_id": "risk_sentinel"}]
            assert status["agents_by_status"] == {"paused": 1}
            resumed = await commands.handle_command("resume_agent", {"agent_id": "risk_sentinel"})
            assert "resumed" in resumed["detail"]

            sent = await commands.handle_command(
                "send_command",
                {"agent_id": "risk_sentinel", "command": "rebalance_weights", "command_params": {"min_weight": 0.1},
                 "timeout": 5},
            )
            assert sent == {"agent_id": "risk_sentinel", "command": "rebalance_weights", "result": {"rebalanced": 0.1}}

            stopped = await commands.handle_command("emergency_stop", {"reason": "drill"})
            assert "emergency stop" in stopped["detail"]
            assert (await commands.handle_command("status"))["emergency_stop"]["reason"] == "drill"
            assert "lifted" in (await commands.handle_command("resume_all"))["detail"]

            log = await commands.handle_command("audit_log")
            assert {e["actor"] for e in log["entries"]} == {"seed"}
            assert [e["command"] for e in log["entries"]] == [
                "pause_agent", "resume_agent", "rebalance_weights", "emergency_stop", "resume_all"
            ]
        finally:
            task.cancel()

    with pytest.raises(lockstep.NotFound):
        await commands.handle_command("pause_agent", {"agent_id": "ghost"})
    with pytest.raises(lockstep.InvalidArgument) as info:
        await commands.handle_command("self_destruct")
    assert "known commands" in info.value.message
    with pytest.raises(lockstep.InvalidArgument):
        await commands.handle_command("pause_agent")  # no agent_id
    with pytest.raises(lockstep.InvalidArgument):
        await commands.handle_command("send_command", {"agent_id": "x"})  # no command
    with pytest.raises(lockstep.InvalidArgument):
        await commands.handle_command("diagnose")  # no sync_id
    info_dict = await commands.handle_command("server_info")
    assert info_dict["heartbeat_interval_ms"] > 0 and "queue_capacity" in info_dict["limits"]
