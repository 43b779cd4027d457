"""Operator operations: system status, sync diagnostics, and the control plane.

lockstep's v1 protocol answers status and sync-point diagnostics (list, status, diagnose, force
complete, clean up). It has no control-plane API yet: pausing, resuming and restarting agents, an
emergency stop, health reports and custom commands need the ``Admin`` service that a later protocol
version adds. Until then those methods raise :class:`~lockstep.NotSupported` with an explanation,
so code written against them fails loudly rather than silently doing nothing.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Mapping, NoReturn, Optional, Tuple, Union

from .errors import InvalidArgument, NotSupported
from .models import AgentInfo, AgentStatus, SyncDiagnosis, SyncPointStatus, SyncState
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Admin", "CommandInterface", "SystemStatus", "CONTROL_PLANE_COMMANDS"]

#: Operations that need the server's control-plane (Admin) service.
CONTROL_PLANE_COMMANDS = (
    "health",
    "pause_agent",
    "resume_agent",
    "restart_agent",
    "emergency_stop",
    "resume_all",
    "send_command",
)


def control_plane_available() -> bool:
    """Whether the generated protocol stubs include the control-plane (Admin) service."""
    return hasattr(pb_grpc, "AdminStub")


@dataclass(frozen=True)
class SystemStatus:
    """A summary of the server and of one namespace, built from ``ServerInfo`` and the registry."""

    address: str
    namespace: str
    server_version: str
    heartbeat_interval_ms: int
    lease_intervals: int
    agents_on_server: int
    agents: Tuple[AgentInfo, ...]
    by_status: Mapping[str, int] = field(default_factory=dict)
    by_role: Mapping[str, int] = field(default_factory=dict)
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    sync_points: Mapping[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> Tuple[str, ...]:
        """Ids of agents whose lease expired."""
        return tuple(a.agent_id for a in self.agents if a.status == AgentStatus.LOST)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict (what ``handle_command('status')`` returns)."""
        return {
            "address": self.address,
            "namespace": self.namespace,
            "server_version": self.server_version,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "lease_intervals": self.lease_intervals,
            "agents_on_server": self.agents_on_server,
            "total_agents": len(self.agents),
            "agents_by_status": dict(self.by_status),
            "agents_by_role": dict(self.by_role),
            "lost_agents": list(self.lost),
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "sync_points": dict(self.sync_points),
        }


class Admin:
    """Operator operations on one lockstep server, for the client's namespace.

    Get one with :meth:`lockstep.Client.admin`. ``token`` is sent as a bearer token with every
    call, for servers that require one.
    """

    def __init__(self, client: "Client", token: Optional[str] = None) -> None:
        self._client = client
        self.token = token

    @property
    def client(self) -> "Client":
        return self._client

    def _metadata(self) -> Optional[List[Tuple[str, str]]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else None

    def _control_plane(self, operation: str) -> NoReturn:
        if not control_plane_available():
            raise NotSupported(
                f"'{operation}' is a control-plane operation, and this lockstep server's protocol (v1) has no "
                "control-plane API yet: a later version adds the Admin service for health, pause/resume/restart, "
                "emergency stop and custom commands. Status, the registry and sync diagnostics work now."
            )
        raise NotSupported(  # pragma: no cover - only with newer stubs than this client knows
            f"'{operation}' needs the Admin service, which this version of the lockstep Python client cannot call "
            "yet; upgrade the client"
        )

    # ------------------------------------------------------------------------------------------
    # what v1 offers

    async def status(self) -> SystemStatus:
        """Server version, agents by status and role, traffic counters and sync points."""
        info = await self._client.server_info()
        agents = await self._client.list_agents()
        points = await self._client.sync_points(metadata=self._metadata())
        by_status = collections.Counter(str(a.status) for a in agents)
        by_role = collections.Counter(a.role or "(none)" for a in agents)
        by_state = collections.Counter(str(p.state) for p in points)
        return SystemStatus(
            address=self._client.address,
            namespace=self._client.namespace or "default",
            server_version=info.version,
            heartbeat_interval_ms=info.heartbeat_interval_ms,
            lease_intervals=info.lease_intervals,
            agents_on_server=info.agents,
            agents=tuple(agents),
            by_status=dict(by_status),
            by_role=dict(by_role),
            published=info.published,
            delivered=info.delivered,
            dropped=info.dropped,
            sync_points=dict(by_state),
        )

    async def list_agents(
        self,
        *,
        role: Optional[str] = None,
        capability: Optional[str] = None,
        status: Union[AgentStatus, str, None] = None,
    ) -> List[AgentInfo]:
        """The registered agents (see :meth:`lockstep.Client.list_agents`)."""
        return await self._client.list_agents(role=role, capability=capability, status=status)

    async def sync_points(self) -> List[SyncPointStatus]:
        """Every sync point the server holds in this namespace."""
        return await self._client.sync_points(metadata=self._metadata())

    async def sync_status(self, sync_id: str) -> SyncPointStatus:
        """One sync point's status."""
        return await self._client.sync_status(sync_id, metadata=self._metadata())

    async def diagnose(self, sync_id: str) -> SyncDiagnosis:
        """Issues and recommendations for one sync point."""
        return await self._client.diagnose_sync(sync_id, metadata=self._metadata())

    async def force_complete(self, sync_id: str) -> SyncPointStatus:
        """Release a stuck sync point now (emergency recovery); waiters get a ``forced`` result."""
        return await self._client.force_complete_sync(sync_id, metadata=self._metadata())

    async def cleanup(self) -> int:
        """Forget finished sync points; returns how many were removed."""
        return await self._client.cleanup_sync_points(metadata=self._metadata())

    # ------------------------------------------------------------------------------------------
    # the control plane (not in the v1 protocol)

    async def health(self) -> Dict[str, Any]:
        """Per-agent health scores and breaker states. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("health")

    async def pause_agent(self, agent_id: str) -> None:
        """Pause an agent. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("pause_agent")

    async def resume_agent(self, agent_id: str) -> None:
        """Resume a paused agent. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("resume_agent")

    async def restart_agent(self, agent_id: str) -> None:
        """Reset an agent's circuit breaker and restart it. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("restart_agent")

    async def emergency_stop(self) -> None:
        """Pause every agent at once. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("emergency_stop")

    async def resume_all(self) -> None:
        """Resume every agent after an emergency stop. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("resume_all")

    async def send_command(self, agent_id: str, command: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        """Send a custom command to an agent. Raises :class:`~lockstep.NotSupported` for now."""
        self._control_plane("send_command")

    # ------------------------------------------------------------------------------------------
    # the seed's command interface

    @property
    def commands(self) -> Tuple[str, ...]:
        """The command names :meth:`handle_command` accepts."""
        return tuple(sorted(self._handlers()))

    def _handlers(self) -> Dict[str, Callable[[Mapping[str, Any]], Awaitable[Any]]]:
        async def status(p: Mapping[str, Any]) -> Any:
            return (await self.status()).to_dict()

        async def list_agents(p: Mapping[str, Any]) -> Any:
            agents = await self.list_agents(role=p.get("role"), capability=p.get("capability"), status=p.get("status"))
            return {"agents": [a.to_dict() for a in agents], "total": len(agents)}

        async def server_info(p: Mapping[str, Any]) -> Any:
            info = await self._client.server_info()
            out = dict(info.__dict__)
            out["limits"] = dict(info.limits.__dict__)
            return out

        async def sync_points(p: Mapping[str, Any]) -> Any:
            points = await self.sync_points()
            return {"sync_points": [s.to_dict() for s in points], "waiting": sum(1 for s in points if s.state == SyncState.WAITING)}

        async def sync_status(p: Mapping[str, Any]) -> Any:
            return (await self.sync_status(_need(p, "sync_id"))).to_dict()

        async def diagnose(p: Mapping[str, Any]) -> Any:
            return (await self.diagnose(_need(p, "sync_id"))).to_dict()

        async def force_complete(p: Mapping[str, Any]) -> Any:
            return (await self.force_complete(_need(p, "sync_id"))).to_dict()

        async def cleanup(p: Mapping[str, Any]) -> Any:
            return {"removed": await self.cleanup()}

        async def health(p: Mapping[str, Any]) -> Any:
            return await self.health()

        async def pause_agent(p: Mapping[str, Any]) -> Any:
            return await self.pause_agent(_need(p, "agent_id"))

        async def resume_agent(p: Mapping[str, Any]) -> Any:
            return await self.resume_agent(_need(p, "agent_id"))

        async def restart_agent(p: Mapping[str, Any]) -> Any:
            return await self.restart_agent(_need(p, "agent_id"))

        async def emergency_stop(p: Mapping[str, Any]) -> Any:
            return await self.emergency_stop()

        async def resume_all(p: Mapping[str, Any]) -> Any:
            return await self.resume_all()

        async def send_command(p: Mapping[str, Any]) -> Any:
            return await self.send_command(_need(p, "agent_id"), _need(p, "command"), p.get("command_params") or {})

        return {
            "status": status,
            "health": health,
            "list_agents": list_agents,
            "pause_agent": pause_agent,
            "resume_agent": resume_agent,
            "restart_agent": restart_agent,
            "emergency_stop": emergency_stop,
            "resume_all": resume_all,
            "send_command": send_command,
            "server_info": server_info,
            "sync_points": sync_points,
            "list_sync_points": sync_points,
            "sync_status": sync_status,
            "diagnose": diagnose,
            "diagnose_sync": diagnose,
            "force_complete": force_complete,
            "force_complete_sync": force_complete,
            "cleanup": cleanup,
            "cleanup_sync_points": cleanup,
        }

    async def handle_command(self, name: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        """Run a command by name, as the seed's ``CommandInterface.handle_command`` did.

        Returns JSON-friendly data. Commands: ``status``, ``list_agents`` (params ``role``,
        ``capability``, ``status``), ``server_info``, ``sync_points``, ``sync_status`` /
        ``diagnose`` / ``force_complete`` (param ``sync_id``), ``cleanup``; and the control-plane
        commands ``health``, ``pause_agent`` / ``resume_agent`` / ``restart_agent`` (param
        ``agent_id``), ``emergency_stop``, ``resume_all``, ``send_command`` (params ``agent_id``,
        ``command``, ``command_params``), which raise :class:`~lockstep.NotSupported` for now.

        Raises:
            InvalidArgument: an unknown command or a missing parameter.
        """
        handler = self._handlers().get(name)
        if handler is None:
            raise InvalidArgument(f"unknown command '{name}'; known commands: {', '.join(self.commands)}")
        return await handler(dict(params or {}))


def _need(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if not value:
        raise InvalidArgument(f"this command needs the parameter '{key}'")
    return str(value)


class CommandInterface:
    """The seed's ``CommandInterface``: ``await CommandInterface(client).handle_command('status')``."""

    def __init__(self, client: "Union[Client, Admin]", token: Optional[str] = None) -> None:
        self.admin: Admin = client if isinstance(client, Admin) else client.admin(token=token)

    @property
    def commands(self) -> Tuple[str, ...]:
        """The command names accepted."""
        return self.admin.commands

    async def handle_command(self, name: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        """See :meth:`Admin.handle_command`."""
        return await self.admin.handle_command(name, params)
