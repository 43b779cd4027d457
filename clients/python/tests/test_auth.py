"""Tokens against a real server that requires them (``lockstep serve --token-secret-file``): the
client sends its token on queries and on its agents' sessions; without one, or with one signed by
another secret, calls are refused as unauthenticated; a token limited to a namespace and to topics
is refused elsewhere, each refusal with its reason."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, List

import pytest

import lockstep

from conftest import ServerProcess, lockstep_bin

SECRET = "python-test-secret-of-at-least-32-bytes"


def mint(secret_file: Path, *flags: str) -> str:
    """A token made by ``lockstep token create`` (the operators' way)."""
    args: List[str] = [str(lockstep_bin()), "token", "create", "--secret-file", str(secret_file), *flags]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def secured(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> "tuple[ServerProcess, Path]":
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    return server_factory("--token-secret-file", str(secret_file)), secret_file


async def test_the_client_sends_its_token_on_queries_and_sessions(secured: "tuple[ServerProcess, Path]") -> None:
    server, secret_file = secured
    token = mint(
        secret_file, "--subject", "py", "--namespace", "team-a", "--publish", "jobs.>", "--subscribe", "jobs.*"
    )
    async with lockstep.connect(server.address, namespace="team-a", token=token) as client:
        agent = await client.register("py-1", role="worker", interests=["jobs.new"])
        await agent.publish("jobs.done", b"x")
        agents = await client.list_agents()
        assert [a.agent_id for a in agents] == ["py-1"]
        # The session was checked against the token's topics: a publish elsewhere is refused.
        with pytest.raises(lockstep.PermissionDenied) as denied:
            await agent.publish("payroll.all", b"x", confirm=True)
        assert denied.value.reason is lockstep.Reason.PUBLISH_DENIED
    # ... and so is another namespace, on a query and on a registration.
    async with lockstep.connect(server.address, namespace="team-b", token=token) as elsewhere:
        with pytest.raises(lockstep.PermissionDenied) as query:
            await elsewhere.list_agents()
        assert query.value.reason is lockstep.Reason.NAMESPACE_DENIED
        with pytest.raises(lockstep.PermissionDenied) as session:
            await elsewhere.register("py-9", role="worker")
        assert session.value.reason is lockstep.Reason.NAMESPACE_DENIED


async def test_no_token_and_a_foreign_token_are_unauthenticated(
    secured: "tuple[ServerProcess, Path]", tmp_path: Path
) -> None:
    server, _ = secured
    async with lockstep.connect(server.address, namespace="team-a") as client:
        with pytest.raises(lockstep.Unauthenticated) as missing:
            await client.list_agents()
        assert missing.value.reason is lockstep.Reason.TOKEN_MISSING
        with pytest.raises(lockstep.Unauthenticated):
            await client.register("py-2", role="worker")
    foreign_secret = tmp_path / "foreign"
    foreign_secret.write_text("another-secret-that-is-long-enough-too")
    foreign = mint(foreign_secret, "--subject", "py", "--namespace", "team-a")
    async with lockstep.connect(server.address, namespace="team-a", token=foreign) as client:
        with pytest.raises(lockstep.Unauthenticated) as invalid:
            await client.list_agents()
        assert invalid.value.reason is lockstep.Reason.TOKEN_INVALID


async def test_a_refused_registration_is_unauthenticated_every_time(secured: "tuple[ServerProcess, Path]") -> None:
    # The refusal of a session must not overtake the registration the client writes as it opens
    # the stream (gRPC's C core would then report INTERNAL): over many tries, every one is refused
    # with its reason, on a connection already in use.
    server, _ = secured
    async with lockstep.connect(server.address, namespace="team-a") as client:
        with pytest.raises(lockstep.Unauthenticated):
            await client.list_agents()
        for i in range(40):
            with pytest.raises(lockstep.Unauthenticated) as refused:
                await client.register(f"py-{i}", role="worker")
            assert refused.value.reason is lockstep.Reason.TOKEN_MISSING
