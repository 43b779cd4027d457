"""TLS against a real server that serves it with client certificates (``lockstep serve
--tls-cert --tls-key --tls-client-ca``), with certificates made by ``lockstep certs``: a client
presenting a certificate of the CA registers agents, publishes, meets at a barrier and reaches the
operators' own listener; a client without a certificate, or over plain TCP, is refused; the
settings can come from the environment as the ``lockstep`` command reads them."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Callable, Tuple

import pytest

import lockstep

from conftest import ServerProcess, lockstep_bin


def make_certs(out: Path) -> Path:
    """``lockstep certs --out OUT`` (the operators' way)."""
    subprocess.run([str(lockstep_bin()), "certs", "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def mutual(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> Tuple[ServerProcess, Path]:
    certs = make_certs(tmp_path / "certs")
    server = server_factory(
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
        "--tls-client-ca", str(certs / "ca.pem"), admin_listen="127.0.0.1:0",
    )
    return server, certs


def with_certificate(certs: Path) -> lockstep.Tls:
    return lockstep.Tls(str(certs / "ca.pem"), str(certs / "client.pem"), str(certs / "client.key"))


async def test_a_client_of_the_ca_works_over_tls_on_both_listeners(mutual: Tuple[ServerProcess, Path]) -> None:
    server, certs = mutual
    async with lockstep.connect(server.address, tls=with_certificate(certs)) as client:
        a = await client.register("a", role="worker", interests=["feed"])
        b = await client.register("b", role="worker")
        await b.publish("feed", b"over tls", confirm=True)

        async def first() -> bytes:
            async for delivery in a.deliveries():
                return bytes(delivery.data)
            raise AssertionError("the deliveries ended")

        assert await asyncio.wait_for(first(), 20) == b"over tls"
        x, y = await asyncio.gather(a.sync("gate", ["a", "b"], timeout=20), b.sync("gate", ["a", "b"], timeout=20))
        assert len(x.arrival_order) == 2 and y.arrival_order == x.arrival_order
        # The operators' listener is reached with the same TLS settings.
        status = await client.admin(address=server.admin_address).status()
        assert {agent.agent_id for agent in status.agents} == {"a", "b"}


async def test_without_a_client_certificate_or_over_plain_tcp_calls_are_refused(
    mutual: Tuple[ServerProcess, Path]
) -> None:
    server, certs = mutual
    # The handshake fails, so the channel never becomes ready.
    with pytest.raises(lockstep.Unavailable, match="does the server trust this client's certificate"):
        async with lockstep.connect(server.address, tls=lockstep.Tls(str(certs / "ca.pem")),
                                    connect_timeout=2) as client:
            await client.list_agents()
    with pytest.raises(lockstep.Unavailable, match="if it serves TLS"):
        async with lockstep.connect(server.address, connect_timeout=2) as client:
            await client.list_agents()
    # And the server goes on serving those who present one.
    async with lockstep.connect(server.address, tls=with_certificate(certs)) as client:
        assert await client.list_agents() == []


async def test_tls_settings_come_from_the_environment(
    mutual: Tuple[ServerProcess, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, certs = mutual
    monkeypatch.setenv("LOCKSTEP_TLS_CA", str(certs / "ca.pem"))
    monkeypatch.setenv("LOCKSTEP_TLS_CERT", str(certs / "client.pem"))
    monkeypatch.setenv("LOCKSTEP_TLS_KEY", str(certs / "client.key"))
    async with lockstep.connect(server.address) as client:
        assert client.tls == with_certificate(certs)
        await client.register("from-env", role="worker")
        assert [a.agent_id for a in await client.list_agents()] == ["from-env"]


def test_unreadable_files_and_half_an_identity_are_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cert_file and key_file"):
        lockstep.Tls(str(tmp_path / "ca.pem"), cert_file=str(tmp_path / "client.pem"))
    with pytest.raises(OSError, match="cannot read the CA certificate file"):
        lockstep.Tls(str(tmp_path / "missing.pem")).credentials()
