"""Connecting, clean shutdown on both sides, and resuming a broken session."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Callable, List, Optional, Set

import pytest

import lockstep
from conftest import ServerProcess, eventually, start_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connecting_to_nothing_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(lockstep.Unavailable) as info:
        await lockstep.connect(f"127.0.0.1:{_free_port()}", connect_timeout=1.0)
    assert time.monotonic() - started < 5
    assert "lockstep" in info.value.message


async def test_awaitable_and_context_manager_forms(server: ServerProcess) -> None:
    client = await lockstep.connect(server.address)
    agent = await client.register("plain")
    assert [a.agent_id for a in await client.list_agents()] == ["plain"]
    assert client.agents == [agent]
    await agent.close()
    await agent.close()  # idempotent
    assert agent.closed and client.agents == []
    with pytest.raises(lockstep.SessionClosed):
        await agent.publish("t", "x")
    with pytest.raises(lockstep.SessionClosed):
        await agent.update_state({"x": 1})
    await client.close()
    assert client.closed
    async with await lockstep.connect(server.address) as again:
        assert await again.list_agents() == []


async def test_closing_the_client_deregisters_its_agents(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as observer:
        client = await lockstep.connect(server.address)
        agents = [await client.register(f"a{i}") for i in range(5)]
        async with observer.watch_registry() as events:
            for _ in range(5):
                assert (await events.next(timeout=5)).kind == lockstep.RegistryEventKind.SNAPSHOT
            await client.close()
            left = {(await events.next(timeout=5)).agent.agent_id for _ in range(5)}
            assert left == {f"a{i}" for i in range(5)}
        assert all(a.closed and a.close_reason is None for a in agents)
        assert await observer.list_agents() == []


async def test_pending_requests_fail_when_the_agent_closes(client: lockstep.Client) -> None:
    async with client.register("other"):
        agent = await client.register("closer")
        waiting = asyncio.ensure_future(agent.sync("never", ["closer", "other"], timeout=30))
        await asyncio.sleep(0.2)
        await agent.close()
        with pytest.raises(lockstep.SessionClosed):
            await asyncio.wait_for(waiting, 5)


async def test_server_shutdown_ends_sessions_cleanly(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory()
    client = await lockstep.connect(srv.address)
    try:
        agent = await client.register("bystander", reconnect=False)
        other = await client.register("other", reconnect=False)
        waiting = asyncio.ensure_future(agent.sync("never", ["bystander", "other", "x"], timeout=60))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, srv.terminate)
        assert code == 0, f"lockstep serve exited with {code} on SIGTERM\n{srv.log()[-2000:]}"
        with pytest.raises(lockstep.LockstepError):
            await asyncio.wait_for(waiting, 10)
        await eventually(lambda: agent.closed and other.closed, what="sessions end when the server stops")
        assert agent.close_reason is not None
        with pytest.raises(lockstep.LockstepError):
            await agent.publish("t", "x")
    finally:
        await client.close()


class Proxy:
    """A loopback TCP proxy whose connections can be cut, to break sessions from the outside."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: Optional[asyncio.AbstractServer] = None
        self.transports: Set[asyncio.StreamWriter] = set()
        self.handlers: Set["asyncio.Task[None]"] = set()
        self.port = 0
        self.refusing = False
        """While set, new connections are closed at once (the server is out of reach)."""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.transports.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in list(self.transports):
            w.transport.abort()
        self.transports.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


async def test_a_session_taken_over_stays_ended(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as client:
        first = await client.register("twin")
        second = await client.register("twin", resume_token=first.resume_token)
        await eventually(lambda: first.closed, timeout=5, what="the first session ends")
        assert first.close_reason is not None and first.close_reason.reason is lockstep.Reason.SESSION_TAKEN_OVER
        # It never reconnects: that would take the session back from the second connection.
        await asyncio.sleep(0.5)  # ten times the first reconnection delay
        assert first.reconnects == 0
        assert await second.update_state({"still": "mine"}) == 1
        await second.close()


async def test_a_broken_stream_is_resumed(server: ServerProcess) -> None:
    proxy = Proxy(server.port)
    await proxy.start()
    try:
        async with lockstep.connect(server.address) as direct, lockstep.connect(f"127.0.0.1:{proxy.port}") as client:
            agent = await client.register("resilient", interests=["news"])
            watch = await agent.watch_state(agent_id="source")
            async with direct.register("source") as source:
                await source.update_state({"v": 1})
                await watch.wait_for_version("source", 1, timeout=5)
                token = agent.resume_token

                proxy.cut()
                await eventually(lambda: agent.reconnects == 1, timeout=15, what="the session is resumed")
                assert not agent.closed
                assert agent.registration.resumed and agent.resume_token == token
                assert {a.agent_id for a in await direct.list_agents()} == {"resilient", "source"}

                # it still receives messages and state after the resume
                await source.publish("news", "after the break", confirm=True)
                got: List[str] = []
                while "after the break" not in got:
                    got.append((await agent.next_delivery(timeout=5)).data)
                await source.update_state({"v": 2})
                assert (await watch.wait_for_version("source", 2, timeout=5)) == {"v": 2}
            await agent.close()
            assert agent.close_reason is None
    finally:
        await proxy.close()


async def test_an_agent_lost_while_out_of_reach_learns_on_resuming_what_it_missed(
    server_factory: Callable[..., ServerProcess]
) -> None:
    """Messages queued for an agent out of reach are dropped when its lease runs out; when it comes
    back and resumes, the server tells it how many at once, though nothing more is published."""
    server = server_factory("--heartbeat-interval-ms", "200")
    proxy = Proxy(server.port)
    await proxy.start()
    try:
        async with lockstep.connect(server.address) as direct, lockstep.connect(f"127.0.0.1:{proxy.port}") as client:
            agent = await client.register("far", interests=["jobs"])
            async with direct.register("publisher") as publisher:
                proxy.refusing = True
                proxy.cut()

                async def far() -> lockstep.AgentInfo:
                    return next(a for a in await direct.list_agents() if a.agent_id == "far")

                # Until the server noticed the stream is gone, what it routes goes out on the broken
                # stream: publish until messages wait in the queue.
                published = 0
                while (await far()).queue_depth < 2:
                    assert published < 100, "messages never queued for the agent out of reach"
                    await publisher.publish("jobs", f"while away {published}", confirm=True)
                    published += 1
                queued = (await far()).queue_depth

                async def far_is_lost() -> bool:
                    return (await far()).status is lockstep.AgentStatus.LOST

                await eventually(far_is_lost, timeout=15, what="the agent's lease runs out")
                proxy.refusing = False
                await eventually(lambda: agent.reconnects == 1, timeout=30, what="the session is resumed")
                assert agent.registration.resumed
                assert agent.missed_while_away == queued
                await publisher.publish("jobs", "after", confirm=True)
                delivery = await agent.next_delivery(timeout=10)
                assert (delivery.data, delivery.missed_before) == ("after", 0)
    finally:
        await proxy.close()


async def test_an_agent_resumes_after_the_server_is_killed_and_restarted_on_its_data(tmp_path: Path) -> None:
    """SIGKILL the server, start another on the same address and data directory: the agent comes
    back by itself with its token, its state and version, and its barrier arrival still counts."""
    data, address = tmp_path / "data", f"127.0.0.1:{_free_port()}"
    args = ("--listen", address, "--data-dir", str(data))
    first = start_server(tmp_path, *args)
    second: Optional[ServerProcess] = None
    try:
        async with lockstep.connect(address) as client:
            agent = await client.register("keeper", role="trainer")
            peer = await client.register("peer", role="trainer")
            version = await agent.update_state({"epoch": 3})
            token = agent.resume_token
            waiting = asyncio.ensure_future(agent.sync_with_agents("checkpoint", ["keeper", "peer"], timeout=30))
            await eventually(
                lambda: _arrived(client, "checkpoint", ["keeper"]), timeout=10, what="keeper waits at the barrier"
            )

            first.kill()
            second = start_server(tmp_path, *args)
            await eventually(lambda: agent.reconnects == 1 and peer.reconnects == 1, timeout=20, what="both resumed")
            assert agent.registration.resumed and agent.resume_token == token
            snapshot = await client.get_state("keeper")
            assert (snapshot.version, snapshot.state) == (version, {"epoch": 3})
            assert await agent.update_state({"epoch": 4}) == version + 1

            await peer.sync_with_agents("checkpoint", ["keeper", "peer"], timeout=30)
            result = await asyncio.wait_for(waiting, 30)
            assert result.arrival_order == ("keeper", "peer")
            await agent.close()
            await peer.close()
    finally:
        first.kill()
        if second is not None:
            second.terminate()


async def _arrived(client: lockstep.Client, sync_id: str, agents: List[str]) -> bool:
    try:
        return list((await client.sync_status(sync_id)).arrived) == agents
    except lockstep.NotFound:
        return False


async def test_over_limit_requests_are_refused_before_sending(client: lockstep.Client) -> None:
    agent = await client.register("big")
    limits = agent.registration.limits
    assert limits.max_message_bytes == 1024 * 1024
    assert limits.max_grpc_message_bytes == 1024 * 1024 + 64 * 1024, "announced at registration"
    # A 1.2 MB publish, once enough to silence the session: refused here, naming the limit.
    with pytest.raises(lockstep.PayloadTooLarge) as info:
        await agent.publish("t", b"x" * 1_200_000)
    err = info.value
    assert (err.size, err.limit, err.setting) == (1_200_000, limits.max_message_bytes, "limits.max_payload_bytes")
    assert isinstance(err, lockstep.InvalidArgument) and str(limits.max_message_bytes) in str(err)
    with pytest.raises(lockstep.PayloadTooLarge) as info:
        await agent.update_state({"k": "x" * limits.max_delta_bytes})
    assert info.value.setting == "limits.max_delta_bytes"
    with pytest.raises(lockstep.PayloadTooLarge) as info:
        await agent.sync("s", 1, payload=b"x" * (limits.max_sync_payload_bytes + 1))
    assert info.value.limit == limits.max_sync_payload_bytes
    # Nothing was sent, and the session goes on.
    assert await agent.update_state({"k": "small"}) == 1
    await agent.publish("t", b"x" * limits.max_message_bytes, confirm=True)
    assert not agent.async_errors
