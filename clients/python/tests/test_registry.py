"""Registration, the registry queries, and registry watches."""

from __future__ import annotations

import asyncio

import pytest

import lockstep
from conftest import ServerProcess, eventually


async def test_register_and_list(client: lockstep.Client) -> None:
    async with client.register(
        "worker_1",
        role="data_processor",
        capabilities=["data_sync", "checkpoint_sync"],
        interests=["jobs.>"],
        metadata={"zone": "eu"},
    ) as agent:
        assert agent.agent_id == "worker_1"
        assert agent.namespace == "default"
        assert agent.registration.heartbeat_interval_ms > 0
        assert agent.registration.lease_intervals > 0
        assert agent.resume_token
        agents = await client.list_agents()
        assert [a.agent_id for a in agents] == ["worker_1"]
        info = agents[0]
        assert info.role == "data_processor"
        assert set(info.capabilities) == {"data_sync", "checkpoint_sync"}
        assert list(info.interests) == ["jobs.>"]
        assert dict(info.metadata) == {"zone": "eu"}
        assert info.status == lockstep.AgentStatus.ACTIVE
        assert (await client.get_agent("worker_1")).role == "data_processor"
    # leaving the block deregistered it
    await eventually(lambda: _no_agents(client), what="worker_1 deregistered")


async def _no_agents(client: lockstep.Client) -> bool:
    return not await client.list_agents()


async def test_a_listing_larger_than_one_message_comes_in_pages(client: lockstep.Client) -> None:
    # Twelve agents with the most metadata allowed take about 1.5 MiB to list: several pages.
    metadata = {f"{k:02}" + "k" * 1022: "v" * 1024 for k in range(64)}
    agents = [await client.register(f"big-{i:02}", role="worker", metadata=metadata) for i in range(12)]
    try:
        listed = await client.list_agents(role="worker")
        assert [a.agent_id for a in listed] == [f"big-{i:02}" for i in range(12)]
        assert all(len(a.metadata) == 64 for a in listed)
    finally:
        for agent in agents:
            await agent.close()


async def test_duplicate_id_is_refused(client: lockstep.Client) -> None:
    async with client.register("dup"):
        with pytest.raises(lockstep.AlreadyRegistered) as info:
            await client.register("dup")
        assert "dup" in info.value.message
    # once the first one left, the id is free again
    async with client.register("dup") as again:
        assert again.agent_id == "dup"


async def test_resume_token_takes_the_session_over(client: lockstep.Client) -> None:
    first = await client.register("phoenix", role="r")
    second = await client.register("phoenix", role="r", resume_token=first.resume_token)
    try:
        assert second.registration.resumed
        await eventually(lambda: first.closed, what="the old session ends when taken over")
        assert [a.agent_id for a in await client.list_agents()] == ["phoenix"]
        assert await second.update_state({"alive": True}) >= 1
    finally:
        await second.close()
        await first.close()


async def test_invalid_ids_and_patterns_are_refused(client: lockstep.Client) -> None:
    with pytest.raises(lockstep.InvalidArgument):
        await client.register("bad id with spaces")
    with pytest.raises(lockstep.InvalidArgument):
        await client.register("")
    with pytest.raises(lockstep.InvalidArgument):
        await client.register("x" * 129)
    with pytest.raises(lockstep.InvalidArgument):
        await client.register("ok", interests=["a.b*.c"])
    with pytest.raises(lockstep.InvalidArgument):
        await client.register("ok", interests=["a.>.c"])
    assert await client.list_agents() == []


async def test_filters_and_capabilities(client: lockstep.Client) -> None:
    async with client.register("p1", role="processor", capabilities=["data_sync"]) as p1, client.register(
        "p2", role="processor", capabilities=["checkpoint_sync"]
    ), client.register("s1", role="storage", capabilities=["data_sync", "archive"]):
        assert {a.agent_id for a in await client.list_agents(role="processor")} == {"p1", "p2"}
        assert {a.agent_id for a in await client.agents_with_capability("data_sync")} == {"p1", "s1"}
        assert {a.agent_id for a in await client.list_agents(role="processor", capability="data_sync")} == {"p1"}
        assert await client.list_agents(role="nobody") == []
        await p1.set_status(lockstep.AgentStatus.SYNCING)
        assert [a.agent_id for a in await client.list_agents(status="syncing")] == ["p1"]
        assert (await client.get_agent("p1")).status == lockstep.AgentStatus.SYNCING
        assert {a.agent_id for a in await client.list_agents(status=lockstep.AgentStatus.ACTIVE)} == {"p2", "s1"}


async def test_unknown_agent_is_not_found(client: lockstep.Client) -> None:
    with pytest.raises(lockstep.NotFound):
        await client.get_agent("ghost")
    with pytest.raises(lockstep.NotFound):
        await client.get_state("ghost")


async def test_namespaces_are_separate(server: ServerProcess) -> None:
    async with lockstep.connect(server.address, namespace="team-a") as a, lockstep.connect(
        server.address, namespace="team-b"
    ) as b:
        async with a.register("same-id") as in_a, b.register("same-id") as in_b:
            assert in_a.namespace == "team-a" and in_b.namespace == "team-b"
            assert [x.agent_id for x in await a.list_agents()] == ["same-id"]
            assert [x.namespace for x in await b.list_agents()] == ["team-b"]


async def test_watch_registry_sees_joins_status_and_leaves(client: lockstep.Client) -> None:
    early = await client.register("early", role="r")
    events = client.watch_registry()
    try:
        first = await events.next(timeout=5)
        assert first.kind == lockstep.RegistryEventKind.SNAPSHOT and first.agent.agent_id == "early"

        late = await client.register("late", role="r")
        joined = await events.next(timeout=5)
        assert joined.kind == lockstep.RegistryEventKind.JOINED and joined.agent.agent_id == "late"

        await late.set_status("busy")
        status = await events.next(timeout=5)
        assert status.kind == lockstep.RegistryEventKind.STATUS
        assert status.agent.agent_id == "late" and status.agent.status == lockstep.AgentStatus.BUSY
        assert status.previous_status == lockstep.AgentStatus.ACTIVE

        await late.close()
        left = await events.next(timeout=5)
        assert left.kind == lockstep.RegistryEventKind.LEFT and left.agent.agent_id == "late"
    finally:
        await events.close()
        await early.close()


async def test_watch_registry_reports_lost_agents(fast_server: ServerProcess) -> None:
    async with lockstep.connect(fast_server.address) as client:
        agent = await client.register("sleepy")
        async with client.watch_registry() as events:
            snapshot = await events.next(timeout=5)
            assert snapshot.kind == lockstep.RegistryEventKind.SNAPSHOT
            agent._suspend_heartbeats()
            lost = await events.next(timeout=5)
            assert lost.kind == lockstep.RegistryEventKind.LOST and lost.agent.agent_id == "sleepy"
        await agent.close()


async def test_watch_registry_as_async_iterator(client: lockstep.Client) -> None:
    seen = []

    async def follow() -> None:
        async for event in client.watch_registry():
            seen.append((event.kind, event.agent.agent_id))
            if len(seen) == 2:
                return

    task = asyncio.ensure_future(follow())
    await asyncio.sleep(0.2)
    async with client.register("a1"), client.register("a2"):
        await asyncio.wait_for(task, 5)
    assert seen == [(lockstep.RegistryEventKind.JOINED, "a1"), (lockstep.RegistryEventKind.JOINED, "a2")]
