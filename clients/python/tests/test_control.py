"""The operators' interface against a real server: pausing, emergency stop, commands, tokens, the
separate admin address and the audit log."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List

import pytest

import lockstep
from conftest import REWORDED, ServerProcess, eventually


async def serve_commands(agent: lockstep.Agent, seen: List[lockstep.Command]) -> None:
    """Answer commands the way a small agent would: echo, fail, or never answer."""
    async for cmd in agent.commands():
        seen.append(cmd)
        if cmd.name == "echo":
            await cmd.reply({"agent": agent.agent_id, "params": dict(cmd.params)})
        elif cmd.name == "fail":
            await cmd.fail("the model refused: weights out of range")
        elif cmd.name == "ignore":
            pass  # never answered: the operator's timeout decides
        else:
            await cmd.reply(cmd.params.get("value"))


async def test_pause_holds_deliveries_and_refuses_actions_until_resumed(client: lockstep.Client) -> None:
    admin = client.admin(actor="alice")
    async with client.register("worker", role="worker", interests=["jobs.>"]) as worker, client.register(
        "feeder", role="feeder"
    ) as feeder:
        notices = worker.control_notices()
        async with worker.watch_state(agent_id="feeder") as watch:
            await feeder.update_state({"batch": 0})
            await watch.wait_for_version("feeder", 1, timeout=5)

            detail = await admin.pause_agent("worker")
            assert "paused" in detail
            notice = await notices.next(timeout=5)
            assert notice.kind == lockstep.ControlKind.PAUSED and notice.actor == "alice" and notice.pauses
            assert worker.paused and worker.pause_notice == notice and not worker.emergency_stopped
            assert (await client.get_agent("worker")).status == lockstep.AgentStatus.PAUSED
            assert "already paused" in await admin.pause_agent("worker")

            # its own actions are refused, saying who paused it
            with pytest.raises(lockstep.AgentPaused) as refused:
                await worker.publish("jobs.x", "from a paused agent", confirm=True)
            assert isinstance(refused.value, lockstep.FailedPrecondition)
            assert REWORDED or "operator 'alice' paused it" in refused.value.message
            assert refused.value.reason is lockstep.Reason.PAUSED and not refused.value.emergency_stop
            with pytest.raises(lockstep.AgentPaused):
                await worker.update_state({"busy": True})
            with pytest.raises(lockstep.AgentPaused):  # not a SyncConflict: the arrival was refused
                await worker.sync("alone", 1, timeout=5)
            await worker.publish("jobs.y", "unconfirmed")  # refused asynchronously, reported
            await eventually(lambda: any(isinstance(e, lockstep.AgentPaused) for e in worker.async_errors))

            # what is sent to it meanwhile is held, state changes included
            for n in range(1, 4):
                await feeder.publish(f"jobs.{n}", {"n": n}, confirm=True)
                last = await feeder.update_state({"batch": n, f"part{n}": True})
            with pytest.raises(asyncio.TimeoutError):
                await worker.next_delivery(timeout=0.5)
            assert watch.version("feeder") == 1

            status = await admin.status()
            assert lockstep.AgentRef("default", "worker") in status.paused
            assert status.emergency_stop is None and status.by_status_on_server.get("paused") == 1

            assert "resumed" in await admin.resume_agent("worker")
            notice = await notices.next(timeout=5)
            assert notice.kind == lockstep.ControlKind.RESUMED and not notice.pauses
            assert not worker.paused
            got = [(await worker.next_delivery(timeout=5)).data for _ in range(3)]
            assert got == [{"n": 1}, {"n": 2}, {"n": 3}], "held deliveries follow, in order"
            state = await watch.wait_for_version("feeder", last, timeout=5)
            assert state == {"batch": 3, "part1": True, "part2": True, "part3": True}
            await worker.publish("jobs.z", "running again", confirm=True)
            assert "was not paused" in await admin.resume_agent("worker")


async def test_wait_resumed_returns_when_an_operator_resumes(client: lockstep.Client) -> None:
    admin = client.admin()
    async with client.register("sleeper") as agent:
        await agent.wait_resumed(timeout=1)  # not paused: returns at once
        await admin.pause_agent("sleeper")
        await eventually(lambda: agent.paused)
        waiter = asyncio.ensure_future(agent.wait_resumed(timeout=5))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await admin.resume_agent("sleeper")
        await asyncio.wait_for(waiter, 5)
        assert not agent.paused


async def test_pausing_an_unknown_agent_is_not_found(client: lockstep.Client) -> None:
    admin = client.admin()
    for call in (admin.pause_agent("ghost"), admin.resume_agent("ghost"), admin.restart_agent("ghost")):
        with pytest.raises(lockstep.NotFound) as info:
            await call
        assert REWORDED or "ghost" in info.value.message
        assert info.value.reason is lockstep.Reason.UNKNOWN_AGENT
    with pytest.raises(lockstep.InvalidArgument):
        await admin.pause_agent("not a name")


async def test_emergency_stop_pauses_everyone_until_resume_all(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as default_ns, lockstep.connect(
        server.address, namespace="other"
    ) as other_ns:
        admin = default_ns.admin(actor="ops")
        async with default_ns.register("a", interests=["t"]) as a, other_ns.register("b") as b, default_ns.register(
            "c"
        ) as c:
            notices_a, notices_b = a.control_notices(), b.control_notices()
            assert "3 agent(s) paused" in await admin.emergency_stop("market halted")
            for notices, agent in ((notices_a, a), (notices_b, b)):
                notice = await notices.next(timeout=5)
                assert notice.kind == lockstep.ControlKind.EMERGENCY_STOP
                assert notice.actor == "ops" and notice.reason == "market halted"
                assert agent.paused and agent.emergency_stopped
            with pytest.raises(lockstep.AgentPaused) as info:
                await b.update_state({"x": 1})
            assert info.value.emergency_stop and (REWORDED or "emergency stop" in info.value.message)
            with pytest.raises(lockstep.AgentPaused):
                await b.publish("t", "x", confirm=True)

            status = await admin.status()
            assert status.emergency_stop is not None
            assert status.emergency_stop.actor == "ops" and status.emergency_stop.reason == "market halted"
            assert status.to_dict()["emergency_stop"]["reason"] == "market halted"
            assert "already" in await admin.emergency_stop("again")

            # resuming one agent does not lift the stop
            assert "emergency stop still holds" in await admin.resume_agent("a")
            with pytest.raises(lockstep.AgentPaused):
                await a.publish("t", "x", confirm=True)

            # an agent that registers during the stop is paused from the start, and told
            async with default_ns.register("latecomer") as late:
                await eventually(lambda: late.paused, what="latecomer told about the stop")
                assert late.pause_notice is not None
                assert late.pause_notice.kind == lockstep.ControlKind.EMERGENCY_STOP

            assert "emergency stop lifted" in await admin.resume_all()
            for notices, agent in ((notices_a, a), (notices_b, b)):
                notice = await notices.next(timeout=5)
                assert notice.kind == lockstep.ControlKind.RESUMED_ALL
                assert not agent.paused and not agent.emergency_stopped
            await b.update_state({"after": "resume_all"})
            await c.publish("t", {"after": "resume_all"}, confirm=True)
            assert (await a.next_delivery(timeout=5)).data == {"after": "resume_all"}
            assert (await admin.status()).emergency_stop is None


async def test_send_command_round_trip_and_its_failures(client: lockstep.Client) -> None:
    admin = client.admin(actor="alice")
    seen: List[lockstep.Command] = []
    async with client.register("risk_sentinel", role="risk") as agent:
        server_task = asyncio.ensure_future(serve_commands(agent, seen))
        try:
            result = await admin.send_command("risk_sentinel", "echo", {"min_weight": 0.1, "names": ["a", "b"]}, timeout=5)
            assert result == {"agent": "risk_sentinel", "params": {"min_weight": 0.1, "names": ["a", "b"]}}
            command = seen[-1]
            assert command.name == "echo" and command.command_id > 0 and command.deadline_ms > 0
            # the server's acknowledgement of the agent's reply may arrive after the operator's result
            await eventually(lambda: command.answered, what="the reply acknowledged")

            # any JSON value comes back, null included
            for value in (None, 3, "text", [1, {"x": None}], True):
                assert await admin.send_command("risk_sentinel", "value", {"value": value}, timeout=5) == value
            assert await admin.send_command("risk_sentinel", "value") is None  # no params, the server's default timeout

            with pytest.raises(lockstep.CommandFailed) as failed:
                await admin.send_command("risk_sentinel", "fail", timeout=5)
            assert failed.value.agent_error == "the model refused: weights out of range"
            assert failed.value.agent_id == "risk_sentinel" and failed.value.command == "fail"
            assert failed.value.command_id > 0 and "weights out of range" in failed.value.message
            assert isinstance(failed.value, lockstep.CommandError)

            started = time.monotonic()
            with pytest.raises(lockstep.CommandTimeout) as late:
                await admin.send_command("risk_sentinel", "ignore", timeout=0.3)
            assert 0.25 <= time.monotonic() - started < 3
            assert isinstance(late.value, TimeoutError) and isinstance(late.value, lockstep.DeadlineExceeded)
            assert REWORDED or "did not answer" in late.value.message
            assert late.value.reason is lockstep.Reason.COMMAND_TIMEOUT
            # an answer after the timeout is refused, and the command stays failed
            ignored = seen[-1]
            with pytest.raises(lockstep.InvalidArgument) as refused:
                await ignored.reply("too late")
            assert (REWORDED or "no command" in refused.value.message) and not ignored.answered

            with pytest.raises(lockstep.NotFound):
                await admin.send_command("nobody", "echo", timeout=1)
            with pytest.raises(lockstep.InvalidArgument):
                await admin.send_command("risk_sentinel", "not a name", timeout=1)
            with pytest.raises(lockstep.InvalidArgument):
                await admin.send_command("risk_sentinel", "echo", ["not", "an", "object"], timeout=1)  # type: ignore[arg-type]

            # a paused agent can still be commanded
            await admin.pause_agent("risk_sentinel")
            assert await admin.send_command("risk_sentinel", "value", {"value": "paused but listening"}, timeout=5)
            await admin.resume_agent("risk_sentinel")
        finally:
            server_task.cancel()


async def test_a_command_is_aborted_when_its_agent_leaves(client: lockstep.Client) -> None:
    admin = client.admin()
    agent = await client.register("leaver")
    commands = agent.commands()
    pending = asyncio.ensure_future(admin.send_command("leaver", "long_job", timeout=10))
    command = await commands.next(timeout=5)
    assert command.name == "long_job"
    await agent.close()
    with pytest.raises(lockstep.CommandAborted) as info:
        await asyncio.wait_for(pending, 5)
    assert (REWORDED or "went away" in info.value.message) and info.value.agent_id == "leaver"
    assert info.value.reason is lockstep.Reason.COMMAND_ABORTED


async def test_an_agent_that_never_asked_for_commands_refuses_them_at_once(client: lockstep.Client) -> None:
    admin = client.admin()
    async with client.register("deaf") as agent:
        started = time.monotonic()
        with pytest.raises(lockstep.CommandFailed) as info:
            await admin.send_command("deaf", "rebalance", {"x": 1}, timeout=20)
        assert time.monotonic() - started < 2, "answered at once, not at the timeout"
        assert info.value.agent_error == "agent 'deaf' does not handle commands"
        assert agent.commands_refused == 1

        # closing the feed stops taking commands again
        feed = agent.commands()
        assert agent.commands() is feed
        feed.close()
        with pytest.raises(lockstep.CommandFailed):
            await admin.send_command("deaf", "rebalance", timeout=20)


async def test_a_local_command_cannot_be_answered_through_the_server() -> None:
    command = lockstep.Command(name="pause")
    with pytest.raises(lockstep.LockstepError) as info:
        await command.reply(None)
    assert "did not come from the server" in info.value.message


async def test_admin_token_is_required_and_checked(server_factory: Any) -> None:
    server = server_factory(admin_token="s3cret")
    async with lockstep.connect(server.address) as client:
        async with client.register("a"):  # agents need no token
            with pytest.raises(lockstep.Unauthenticated) as missing:
                await client.admin().status()
            assert REWORDED or "admin token" in missing.value.message
            assert missing.value.reason is lockstep.Reason.ADMIN_TOKEN_MISSING
            with pytest.raises(lockstep.PermissionDenied):
                await client.admin(token="guess").pause_agent("a")
            with pytest.raises(lockstep.PermissionDenied):
                await client.admin(token="guess").send_command("a", "x", timeout=1)
            admin = client.admin(token="s3cret", actor="carol")
            assert (await admin.status()).agents_on_server == 1
            assert "paused" in await admin.pause_agent("a")
            assert "resumed" in await admin.resume_agent("a")
            # sync diagnostics belong to the agents' service: no token needed there
            assert await client.admin().sync_points() == []
            # ... but forcing and cleaning up sync points are operators' actions: they need it
            with pytest.raises(lockstep.Unauthenticated):
                await client.cleanup_sync_points()
            with pytest.raises(lockstep.Unauthenticated):
                await client.admin().force_complete("stuck")
            with pytest.raises(lockstep.PermissionDenied):
                await client.admin(token="guess").cleanup()
            assert await admin.cleanup() == 0


async def test_admin_token_from_the_environment(server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_factory(admin_token="from-env")
    async with lockstep.connect(server.address) as client:
        monkeypatch.setenv("LOCKSTEP_ADMIN_TOKEN", "from-env")
        assert (await client.admin().status()).agents_on_server == 0
        with pytest.raises(lockstep.Unauthenticated):
            await client.admin(token="").status()  # an explicit empty token sends none


async def test_admin_on_a_separate_address(server_factory: Any) -> None:
    server = server_factory(admin_listen="127.0.0.1:0")
    assert server.admin_address != server.address
    async with lockstep.connect(server.address) as client:
        async with client.register("a") as agent:
            # the agents' address does not serve Admin: a clear NotSupported for every call, naming the way out
            plain = client.admin()
            for call in (plain.pause_agent("a"), plain.health(), plain.restart_agent("a"), plain.status(),
                         plain.send_command("a", "x", timeout=1), plain.audit_log()):
                with pytest.raises(lockstep.NotSupported) as info:
                    await call
                assert "--admin-listen" in info.value.message and "address=" in info.value.message

            async with client.admin(address=server.admin_address, actor="dave") as admin:
                assert admin.address == server.admin_address
                notices = agent.control_notices()
                await admin.pause_agent("a")
                assert (await notices.next(timeout=5)).actor == "dave"
                await admin.resume_agent("a")
                status = await admin.status()  # Admin on its address, the registry on the agents'
                assert status.agents_on_server == 1 and len(status.agents) == 1

            # from the environment, as the lockstep CLI reads it
            import os

            os.environ["LOCKSTEP_ADMIN_ADDR"] = server.admin_address
            try:
                assert client.admin().address == server.admin_address
            finally:
                del os.environ["LOCKSTEP_ADMIN_ADDR"]
    # the admin address serves no agents. (A unary call says so reliably; registering there opens a
    # stream, which grpcio sometimes ends with INTERNAL "Internal error from Core" instead.)
    async with lockstep.connect(server.admin_address) as wrong:
        with pytest.raises(lockstep.NotSupported) as info:
            await wrong.list_agents()
        assert "serves only the Admin API" in info.value.message


async def test_the_audit_log_lists_what_operators_did(client: lockstep.Client) -> None:
    admin = client.admin(actor="erin")
    async with client.register("target") as agent:
        task = asyncio.ensure_future(serve_commands(agent, []))
        try:
            await admin.pause_agent("target")
            await admin.resume_agent("target")
            await admin.send_command("target", "echo", {"k": 1}, timeout=5)
            with pytest.raises(lockstep.CommandFailed):
                await admin.send_command("target", "fail", timeout=5)
            with pytest.raises(lockstep.CommandTimeout):
                await admin.send_command("target", "ignore", timeout=0.2)
            await admin.emergency_stop("drill")
            await admin.resume_all()
            with pytest.raises(lockstep.NotFound):
                await admin.pause_agent("ghost")
            await client.admin(actor="frank").restart_agent("target")
        finally:
            task.cancel()

    log = await admin.audit_log()
    assert log.dropped == 0
    rows = [(e.actor, e.command, e.target, e.outcome) for e in log]
    assert rows == [
        ("erin", "pause_agent", "target", "ok"),
        ("erin", "resume_agent", "target", "ok"),
        ("erin", "echo", "target", "ok"),
        ("erin", "fail", "target", "agent_error"),
        ("erin", "ignore", "target", "timed_out"),
        ("erin", "emergency_stop", "", "ok"),
        ("erin", "resume_all", "", "ok"),
        ("erin", "pause_agent", "ghost", "unknown_agent"),
        ("frank", "restart_agent", "target", "ok"),
    ]
    echo = log[2]
    assert echo.command_id > 0 and echo.namespace == "default" and '"k":1' in echo.params
    assert "result" in echo.detail and log[3].detail == "the model refused: weights out of range"
    assert log[5].params == "drill"
    assert [e.seq for e in log] == sorted(e.seq for e in log)
    last_two = await admin.audit_log(limit=2)
    assert [e.command for e in last_two] == ["pause_agent", "restart_agent"]
    assert (await admin.handle_command("audit_log", {"limit": 1}))["entries"][0]["actor"] == "frank"


async def test_an_unnamed_operator_is_recorded_as_operator(client: lockstep.Client) -> None:
    async with client.register("x"):
        await client.admin().pause_agent("x")
    assert (await client.admin().audit_log(limit=1))[0].actor == "operator"
    with pytest.raises(lockstep.InvalidArgument):
        client.admin(actor="two words")
