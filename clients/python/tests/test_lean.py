"""The lean agent transport against a real server (``lockstep serve --lean-listen``): an agent
registered with ``transport="lean"`` meets gRPC agents on topics, at barriers, in requests and in
state watches; is refused with the same exceptions and reasons as over gRPC; carries its token;
resumes a broken connection with its resume token; leaves at once when closed. A client over TLS,
or a server without a lean listener, is refused with a clear error."""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
from pathlib import Path
from typing import AsyncIterator, Callable, List, Optional, Tuple

import grpc
import pytest

import lockstep
from lockstep import lean
from lockstep.errors import error_from_rpc
from lockstep.v1 import lockstep_pb2 as pb

from conftest import REWORDED, ServerProcess, eventually, lockstep_bin, start_server

SECRET = "python-lean-test-secret-of-at-least-32-bytes"


@pytest.fixture
def lean_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server that also serves the lean transport, on a free loopback port."""
    return server_factory("--lean-listen", "127.0.0.1:0")


@pytest.fixture
async def client(lean_server: ServerProcess) -> AsyncIterator[lockstep.Client]:
    """A client of :func:`lean_server` (in this module, in place of conftest's)."""
    async with lockstep.connect(lean_server.address) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lean_socket(agent: lockstep.Agent) -> "socket.socket":
    """The TCP socket under a lean agent's current session."""
    call = agent._call
    assert isinstance(call, lean.LeanCall)
    sock = call._writer.get_extra_info("socket")
    assert sock is not None
    return sock  # type: ignore[no-any-return]


async def test_a_lean_agent_meets_grpc_agents_on_topics(client: lockstep.Client) -> None:
    info = await client.server_info()
    assert info.lean_port > 0
    async with client.register("fast", role="worker", interests=["to.lean"], transport="lean") as fast, \
            client.register("slow", role="worker", interests=["to.grpc"]) as slow:
        assert (fast.transport, slow.transport) == ("lean", "grpc")
        assert fast.registration.agent_id == "fast" and fast.resume_token
        listed = {a.agent_id: a for a in await client.list_agents()}
        assert set(listed) == {"fast", "slow"} and listed["fast"].role == "worker"

        await slow.publish("to.lean", {"from": "grpc"}, confirm=True)
        got = await fast.next_delivery(timeout=5)
        assert (got.topic, got.data, got.publisher) == ("to.lean", {"from": "grpc"}, "slow")

        await fast.publish("to.grpc", "from lean", confirm=True)
        got = await slow.next_delivery(timeout=5)
        assert (got.topic, got.data, got.publisher) == ("to.grpc", "from lean", "fast")

        # Many messages queued at once leave in few writes and arrive whole and in order, both
        # ways; so does one larger than what the client gathers before writing.
        await asyncio.gather(*(fast.publish("to.grpc", f"m{i}") for i in range(300)))
        await fast.publish("to.grpc", "last", confirm=True)
        received = [(await slow.next_delivery(timeout=5)).data for _ in range(301)]
        assert received == [f"m{i}" for i in range(300)] + ["last"]
        big = bytes(range(256)) * 3000  # 768,000 bytes: several reads, more than one coalesced write
        await slow.publish("to.lean", big, confirm=True)
        await fast.publish("to.grpc", big, confirm=True)
        assert (await fast.next_delivery(timeout=5)).payload == big
        assert (await slow.next_delivery(timeout=5)).payload == big


async def test_a_barrier_and_requests_across_the_two_transports(client: lockstep.Client) -> None:
    async with client.register("lean-desk", role="desk", interests=["ask.lean"], transport="lean") as fast, \
            client.register("grpc-desk", role="desk", interests=["ask.grpc"]) as slow:
        a, b = await asyncio.gather(
            fast.sync("meet", {"lean-desk", "grpc-desk"}, timeout=10, payload=b"L"),
            slow.sync("meet", {"lean-desk", "grpc-desk"}, timeout=10, payload=b"G"),
        )
        assert a == b
        assert set(a.arrival_order) == {"lean-desk", "grpc-desk"}
        by_agent = dict(zip(a.arrival_order, a.payloads))
        assert by_agent == {"lean-desk": b"L", "grpc-desk": b"G"}

        async def answer(requests: "lockstep.Feed[lockstep.IncomingRequest]", prefix: str) -> None:
            async for req in requests:
                await req.respond(prefix + req.text(), content_type="text/plain")

        # Ended by closing their feeds, not by cancelling them: a task cancelled in the middle of
        # a gRPC call's write cancels the whole call (grpc.aio), which would end that session.
        feeds = [fast.requests(), slow.requests()]
        serving = [
            asyncio.ensure_future(answer(feeds[0], "lean says ")),
            asyncio.ensure_future(answer(feeds[1], "grpc says ")),
        ]
        try:
            # gRPC asks, the lean agent answers; and the other way round.
            response = await slow.request("ask.lean", "ping", timeout=10)
            assert (response.data, response.responder) == ("lean says ping", "lean-desk")
            response = await fast.request("ask.grpc", "pong", timeout=10)
            assert (response.data, response.responder) == ("grpc says pong", "grpc-desk")
        finally:
            for feed in feeds:
                feed.close()
            await asyncio.wait_for(asyncio.gather(*serving), 10)
        # A barrier by role, and one by count; a timeout names who is missing.
        x, y = await asyncio.gather(
            fast.sync("by-role", role="desk", timeout=10), slow.sync("by-role", role="desk", timeout=10)
        )
        assert x == y and set(x.arrival_order) == {"lean-desk", "grpc-desk"}
        x, y = await asyncio.gather(fast.sync("by-count", 2, timeout=10), slow.sync("by-count", 2, timeout=10))
        assert x == y and x.count == 2
        with pytest.raises(lockstep.SyncTimeout) as timed_out:
            await fast.sync("alone", {"lean-desk", "nobody"}, timeout=0.3)
        assert timed_out.value.missing == ("nobody",)


async def test_state_updates_and_watches_across_the_two_transports(client: lockstep.Client) -> None:
    async with client.register("lean-owner", transport="lean") as fast, client.register("grpc-owner") as slow:
        async with slow.watch_state(agent_id="lean-owner") as watch_fast, \
                fast.watch_state(agent_id="grpc-owner") as watch_slow:
            assert await fast.update_state({"epoch": 1, "nested": {"a": 1}}) == 1
            version = await fast.update_state({"nested": {"a": None, "b": 2}})
            seen = await watch_fast.wait_for_version("lean-owner", version, timeout=5)
            assert seen == {"epoch": 1, "nested": {"b": 2}}
            assert fast.state == {"epoch": 1, "nested": {"b": 2}} and fast.state_version == version
            snapshot = await client.get_state("lean-owner")
            assert (snapshot.version, snapshot.state) == (version, {"epoch": 1, "nested": {"b": 2}})

            version = await slow.update_state({"ready": True})
            assert await watch_slow.wait_for_version("grpc-owner", version, timeout=5) == {"ready": True}
            # The lean agent's mirror applies the deltas it receives on its session.
            version = await slow.update_state({"ready": None, "step": 2})
            assert await watch_slow.wait_for_version("grpc-owner", version, timeout=5) == {"step": 2}
            assert watch_slow.version("grpc-owner") == version


async def test_a_refusal_over_lean_is_the_refusal_over_grpc(client: lockstep.Client) -> None:
    async with client.register("taken"):
        refusals: List[lockstep.LockstepError] = []
        for transport in ("lean", "grpc"):
            with pytest.raises(lockstep.AlreadyRegistered) as refused:
                await client.register("taken", transport=transport)
            refusals.append(refused.value)
        over_lean, over_grpc = refusals
        assert over_lean.reason is over_grpc.reason is lockstep.Reason.ALREADY_REGISTERED
        assert over_lean.code == over_grpc.code
        assert REWORDED or over_lean.message == over_grpc.message

    invalid: List[lockstep.LockstepError] = []
    for transport in ("lean", "grpc"):
        with pytest.raises(lockstep.InvalidArgument) as refused:
            await client.register("not a valid id!", transport=transport)
        invalid.append(refused.value)
    assert type(invalid[0]) is type(invalid[1])
    assert invalid[0].reason is invalid[1].reason is lockstep.Reason.INVALID_ARGUMENT
    assert REWORDED or invalid[0].message == invalid[1].message
    # Neither refused registration left anything behind.
    assert await client.list_agents() == []

    # Refusals of requests on an open session are replies: the same on both transports.
    async with client.register("asker-l", transport="lean") as fast, client.register("asker-g") as slow:
        answers: List[lockstep.LockstepError] = []
        for agent in (fast, slow):
            with pytest.raises(lockstep.NoResponders) as nobody:
                await agent.request("nobody.listens", "?", timeout=10)
            answers.append(nobody.value)
        assert answers[0].reason is answers[1].reason is lockstep.Reason.NO_RESPONDERS
        assert answers[0].code == answers[1].code


async def test_an_unknown_transport_is_refused_at_once(client: lockstep.Client) -> None:
    with pytest.raises(lockstep.InvalidArgument) as refused:
        client.register("a", transport="quic")
    assert "quic" in str(refused.value)
    assert await client.list_agents() == []


async def test_a_server_without_a_lean_listener_is_named_as_the_reason(server: ServerProcess) -> None:
    async with lockstep.connect(server.address) as plain:
        assert (await plain.server_info()).lean_port == 0
        with pytest.raises(lockstep.NotSupported) as refused:
            await plain.register("a", transport="lean")
        assert "--lean-listen" in str(refused.value)
        assert await plain.list_agents() == []


async def test_a_client_over_tls_refuses_the_lean_transport(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    subprocess.run([str(lockstep_bin()), "certs", "--out", str(certs)], check=True, capture_output=True)
    # A TLS server may serve the lean transport on loopback; a TLS client still must not use it.
    server = server_factory(
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
        "--lean-listen", "127.0.0.1:0",
    )
    async with lockstep.connect(server.address, tls=lockstep.Tls(str(certs / "ca.pem"))) as secure:
        assert (await secure.server_info()).lean_port > 0
        with pytest.raises(lockstep.NotSupported) as refused:
            await secure.register("a", transport="lean")
        assert "TLS" in str(refused.value)
        assert await secure.list_agents() == []
        # The same client registers over gRPC.
        async with secure.register("a") as agent:
            assert agent.transport == "grpc"


async def test_a_session_taken_over_ends_the_lean_session_with_its_reason(client: lockstep.Client) -> None:
    first = await client.register("twin", transport="lean")
    second = await client.register("twin", resume_token=first.resume_token)
    await eventually(lambda: first.closed, timeout=5, what="the lean session ends")
    assert first.close_reason is not None
    assert first.close_reason.reason is lockstep.Reason.SESSION_TAKEN_OVER
    await asyncio.sleep(0.5)
    assert first.reconnects == 0, "a session taken over is not resumed"
    assert await second.update_state({"mine": True}) == 1
    await second.close()


async def test_a_broken_lean_connection_is_resumed_with_its_token(client: lockstep.Client) -> None:
    agent = await client.register("resilient", interests=["news"], transport="lean")
    async with client.register("source") as source:
        watch = await agent.watch_state(agent_id="source")
        await source.update_state({"v": 1})
        await watch.wait_for_version("source", 1, timeout=5)
        token = agent.resume_token
        before = agent._call

        # Break the connection under the session, as a network failure would.
        _lean_socket(agent).shutdown(socket.SHUT_RDWR)
        await eventually(lambda: agent.reconnects == 1, timeout=15, what="the lean session is resumed")
        assert not agent.closed and agent.close_reason is None
        assert agent.registration.resumed and agent.resume_token == token
        assert agent._call is not before and isinstance(agent._call, lean.LeanCall)
        assert {a.agent_id for a in await client.list_agents()} == {"resilient", "source"}

        # It keeps receiving messages and watched state, and its requests work.
        await source.publish("news", "after the break", confirm=True)
        got: List[str] = []
        while "after the break" not in got:
            got.append((await agent.next_delivery(timeout=5)).data)
        await source.update_state({"v": 2})
        assert await watch.wait_for_version("source", 2, timeout=5) == {"v": 2}
        assert await agent.update_state({"alive": True}) == 1
    await agent.close()
    assert agent.close_reason is None


async def test_a_lean_agent_resumes_after_the_server_restarts(tmp_path: Path) -> None:
    """The server is killed and started again on the same addresses and data: the lean agent's
    reconnection attempts are refused until it is back, then it resumes with its token."""
    address, lean_address = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    args = ("--listen", address, "--lean-listen", lean_address, "--data-dir", str(tmp_path / "data"))
    first = start_server(tmp_path, *args)
    second: Optional[ServerProcess] = None
    try:
        async with lockstep.connect(address) as client:
            agent = await client.register("survivor", interests=["news"], transport="lean")
            version = await agent.update_state({"epoch": 3})
            token = agent.resume_token
            first.kill()
            await asyncio.sleep(0.3)  # attempts meet a closed port meanwhile
            second = start_server(tmp_path, *args)
            await eventually(lambda: agent.reconnects == 1, timeout=20, what="the lean agent resumed")
            assert agent.registration.resumed and agent.resume_token == token
            assert agent.transport == "lean"
            snapshot = await client.get_state("survivor")
            assert (snapshot.version, snapshot.state) == (version, {"epoch": 3})
            async with client.register("publisher") as publisher:
                await publisher.publish("news", "after", confirm=True)
                assert (await agent.next_delivery(timeout=10)).data == "after"
            await agent.close()
            assert agent.close_reason is None
    finally:
        first.kill()
        if second is not None:
            second.terminate()


async def test_closing_a_lean_agent_removes_it_at_once(client: lockstep.Client) -> None:
    async with client.watch_registry() as events:
        agent = await client.register("leaving", transport="lean")
        joined = await events.next(timeout=5)
        assert (joined.kind, joined.agent.agent_id) == (lockstep.RegistryEventKind.JOINED, "leaving")
        call = agent._call
        await agent.close()
        assert agent.closed and agent.close_reason is None
        assert await client.list_agents() == [], "deregistered at once, not after a lease"
        left = await events.next(timeout=5)
        assert (left.kind, left.agent.agent_id) == (lockstep.RegistryEventKind.LEFT, "leaving")
        # The session's connection ended and is let go.
        assert isinstance(call, lean.LeanCall) and call.done() and not call.cancelled()
        with pytest.raises(lockstep.SessionClosed):
            await agent.publish("t", "x")


async def test_closing_the_client_closes_its_lean_agents(lean_server: ServerProcess) -> None:
    async with lockstep.connect(lean_server.address) as observer:
        owner = await lockstep.connect(lean_server.address)
        agents = [await owner.register(f"l{i}", transport="lean") for i in range(3)]
        assert len(await observer.list_agents()) == 3
        await owner.close()
        assert all(a.closed and a.close_reason is None for a in agents)
        assert await observer.list_agents() == []


async def test_a_lean_session_presents_the_clients_token(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    server = server_factory("--token-secret-file", str(secret_file), "--lean-listen", "127.0.0.1:0")
    token = subprocess.run(
        [str(lockstep_bin()), "token", "create", "--secret-file", str(secret_file), "--subject", "py",
         "--namespace", "team-a", "--publish", "jobs.>"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    async with lockstep.connect(server.address, namespace="team-a", token=token) as client:
        async with client.register("w", role="worker", transport="lean") as agent:
            await agent.publish("jobs.done", "x", confirm=True)
            # What the token allows is checked on the lean session as on a gRPC one.
            with pytest.raises(lockstep.PermissionDenied) as denied:
                await agent.publish("payroll.all", "x", confirm=True)
            assert denied.value.reason is lockstep.Reason.PUBLISH_DENIED
    async with lockstep.connect(server.address, namespace="team-b", token=token) as elsewhere:
        refusals = []
        for transport in ("lean", "grpc"):
            with pytest.raises(lockstep.PermissionDenied) as refused:
                await elsewhere.register("w", role="worker", transport=transport)
            refusals.append(refused.value.reason)
        assert refusals == [lockstep.Reason.NAMESPACE_DENIED] * 2

    # A hello without a token ends the connection as a gRPC call without one is refused: the END
    # frame's status becomes the same exception.
    port = (await _server_info(server.address, token)).lean_port
    call = await lean.LeanDialer("127.0.0.1", port).open()
    await call.write(pb.ClientMessage(register=pb.Register(namespace="team-a", agent_id="w", role="worker")))
    with pytest.raises(grpc.RpcError) as ended:
        await call.read()
    error = error_from_rpc(ended.value)
    assert isinstance(error, lockstep.Unauthenticated) and error.reason is lockstep.Reason.TOKEN_MISSING


async def _server_info(address: str, token: str) -> lockstep.ServerInfo:
    async with lockstep.connect(address, namespace="team-a", token=token) as c:
        return await c.server_info()


async def _raw_exchange(port: int, frames: List[Tuple[int, bytes]]) -> pb.LeanEnd:
    """Sends ``frames`` on a raw connection and reads to the server's END frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(lean.frame(kind, payload) for kind, payload in frames))
        await writer.drain()
        while True:
            kind, length = struct.unpack(">BI", await asyncio.wait_for(reader.readexactly(5), 10))
            payload = await asyncio.wait_for(reader.readexactly(length), 10)
            if kind == lean.END:
                return pb.LeanEnd.FromString(payload)
    finally:
        writer.close()


async def test_the_framing_is_the_servers(client: lockstep.Client) -> None:
    port = (await client.server_info()).lean_port
    hello = pb.LeanHello(version=lean.VERSION).SerializeToString()
    assert lean.frame(lean.HELLO, hello) == struct.pack(">BI", 0x80, len(hello)) + hello

    # A version the server does not speak, and a first frame that is not a hello.
    end = await _raw_exchange(port, [(lean.HELLO, pb.LeanHello(version=9).SerializeToString())])
    assert end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert REWORDED or "version" in end.message
    register = pb.ClientMessage(register=pb.Register(agent_id="raw", role="worker")).SerializeToString()
    end = await _raw_exchange(port, [(lean.MESSAGE, register)])
    assert end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]

    # A session ended normally: registered, then deregistered; the server sends an END with code
    # 0 and closes the connection.
    async def next_frame() -> Tuple[int, bytes]:
        kind, length = struct.unpack(">BI", await asyncio.wait_for(reader.readexactly(5), 10))
        return kind, await asyncio.wait_for(reader.readexactly(length), 10)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(lean.frame(lean.HELLO, hello) + lean.frame(lean.MESSAGE, register))
    kind, payload = await next_frame()
    assert kind == lean.MESSAGE
    registered = pb.ServerMessage.FromString(payload)
    assert registered.WhichOneof("kind") == "registered" and registered.registered.agent_id == "raw"
    assert [a.agent_id for a in await client.list_agents()] == ["raw"]
    writer.write(lean.frame(lean.MESSAGE, pb.ClientMessage(deregister=pb.Deregister()).SerializeToString()))
    kind, payload = await next_frame()
    assert kind == lean.END and pb.LeanEnd.FromString(payload).code == 0
    assert await asyncio.wait_for(reader.read(), 10) == b"", "the server closes the connection after END"
    writer.close()
    assert await client.list_agents() == []


async def test_a_connection_that_closes_without_end_reads_as_a_broken_stream() -> None:
    """Against a stand-in listener: the client says hello with its token and sends its messages
    as frames; a connection closed without an END frame is UNAVAILABLE with no reason (resumed,
    as a broken gRPC stream is); a listener that is gone cannot be dialled (Unavailable)."""
    received: "asyncio.Queue[Tuple[int, bytes]]" = asyncio.Queue()

    async def stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            kind, length = struct.unpack(">BI", await reader.readexactly(5))
            received.put_nowait((kind, await reader.readexactly(length)))
        registered = pb.ServerMessage(registered=pb.Registered(agent_id="a"))
        writer.write(lean.frame(lean.MESSAGE, registered.SerializeToString()))
        await writer.drain()
        writer.close()  # no END

    server = await asyncio.start_server(stand_in, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        call = await lean.LeanDialer("127.0.0.1", port, token="t0k").open()
        await call.write(pb.ClientMessage(register=pb.Register(agent_id="a", role="worker")))
        kind, payload = await asyncio.wait_for(received.get(), 5)
        assert kind == lean.HELLO and pb.LeanHello.FromString(payload) == pb.LeanHello(version=1, token="t0k")
        kind, payload = await asyncio.wait_for(received.get(), 5)
        assert kind == lean.MESSAGE and pb.ClientMessage.FromString(payload).register.agent_id == "a"
        first = await asyncio.wait_for(call.read(), 5)
        assert first.registered.agent_id == "a"
        with pytest.raises(grpc.RpcError) as broken:
            await asyncio.wait_for(call.read(), 5)
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        error = error_from_rpc(broken.value)
        assert isinstance(error, lockstep.Unavailable) and error.reason is None
        assert lockstep.recovery(error.reason) is lockstep.Recovery.RESUME
        assert call.done() and await call.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(asyncio.InvalidStateError):
            await call.write(pb.ClientMessage(heartbeat=pb.Heartbeat()))
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(lockstep.Unavailable) as unreachable:
        await lean.LeanDialer("127.0.0.1", port).open()
    assert f"127.0.0.1:{port}" in str(unreachable.value)
