"""Operator operations: system status, pausing and commanding agents, the audit log, and sync diagnostics.

The server's ``Admin`` service pauses and resumes agents, stops and resumes everyone at once (an
emergency stop), delivers commands to agents and waits for their answers, reports status and keeps
an audit log of all of it. A server started with ``--admin-token`` wants that token with every call;
one started with ``--admin-listen`` serves ``Admin`` on that address only. Sync-point diagnostics
(list, status, diagnose, force complete, clean up) belong to the agents' service and need neither.

It also reports every agent's health and closes circuit breakers (``restart_agent``). A server
without the ``Admin`` service, or without one of its calls, answers ``UNIMPLEMENTED``: the call raises
:class:`~lockstep.NotSupported` saying so.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Type, Union

import grpc
import grpc.aio

from ._util import timeout_ms
from .errors import (
    CommandAborted,
    CommandError,
    CommandFailed,
    CommandTimeout,
    DeadlineExceeded,
    InvalidArgument,
    LockstepError,
    NotSupported,
    Reason,
    error_from_rpc,
)
from .models import (
    AgentInfo,
    AgentRef,
    AgentStatus,
    AuditLog,
    EmergencyStopInfo,
    HealthReport,
    SyncDiagnosis,
    SyncPointStatus,
    SyncState,
)
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client
    from .tasks import TaskInfo

__all__ = ["Admin", "CommandInterface", "SystemStatus", "CONTROL_PLANE_COMMANDS"]

#: Commands that go through the server's ``Admin`` service.
CONTROL_PLANE_COMMANDS = (
    "status",
    "health",
    "pause_agent",
    "resume_agent",
    "restart_agent",
    "emergency_stop",
    "resume_all",
    "send_command",
    "audit_log",
)

#: The metadata key naming the operator in the server's audit log.
ACTOR_HEADER = "x-lockstep-actor"

_DEFAULT: Any = object()

#: How long past a command's own timeout the client waits for the server's answer.
_COMMAND_GRACE = 10.0


def _valid_name(value: str) -> bool:
    """The server's rule for names (actors, agents...): 1-128 ASCII letters, digits and ``_-.:@/``."""
    return 0 < len(value) <= 128 and all(c.isascii() and (c.isalnum() or c in "_-.:@/") for c in value)


@dataclass(frozen=True)
class SystemStatus:
    """The server's status (``Admin.Status``) with a summary of this client's namespace.

    Server-wide: ``agents_on_server``, ``by_status_on_server``, ``paused`` (agents paused on their
    own, in every namespace), ``emergency_stop``, ``pending_commands`` and the traffic counters.
    For the namespace: ``agents``, ``by_status``, ``by_role`` and ``sync_points`` (by state).
    """

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
    by_status_on_server: Mapping[str, int] = field(default_factory=dict)
    paused: Tuple[AgentRef, ...] = ()
    emergency_stop: Optional[EmergencyStopInfo] = None
    pending_commands: int = 0
    now_ms: int = 0

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
            "agents_by_status_on_server": dict(self.by_status_on_server),
            "total_agents": len(self.agents),
            "agents_by_status": dict(self.by_status),
            "agents_by_role": dict(self.by_role),
            "lost_agents": list(self.lost),
            "paused_agents": [{"namespace": r.namespace, "agent_id": r.agent_id} for r in self.paused],
            "emergency_stop": self.emergency_stop.to_dict() if self.emergency_stop is not None else None,
            "pending_commands": self.pending_commands,
            "published": self.published,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "sync_points": dict(self.sync_points),
        }


class Admin:
    """Operator operations on one lockstep server, for the client's namespace.

    Get one with :meth:`lockstep.Client.admin`::

        admin = client.admin(token="s3cret", actor="alice")
        await admin.pause_agent("scanner")
        result = await admin.send_command("risk_sentinel", "rebalance_weights", {"min_weight": 0.1}, timeout=5)

    ``token`` is sent with every call as ``authorization: Bearer <token>`` (default
    ``$LOCKSTEP_ADMIN_TOKEN``; ``""`` sends none). ``actor`` names the operator in the server's audit
    log (default: the server records ``operator``). ``address`` is where the server serves ``Admin``
    when it was started with ``--admin-listen`` (default ``$LOCKSTEP_ADMIN_ADDR``, else the client's
    own connection); the admin then has its own connection, closed by :meth:`close` or with the client.

    Agents are addressed in the client's namespace; an emergency stop and ``resume_all`` act on
    every namespace.
    """

    def __init__(
        self,
        client: "Client",
        token: Optional[str] = None,
        *,
        actor: Optional[str] = None,
        address: Optional[str] = None,
    ) -> None:
        from .client import _normalize_address, channel_options
        from .tls import open_channel

        if actor is not None and not _valid_name(actor):
            raise InvalidArgument(
                f"actor name {actor!r} is not valid: use 1 to 128 letters, digits and _ - . : @ /"
            )
        self._client = client
        self.token: Optional[str] = os.environ.get("LOCKSTEP_ADMIN_TOKEN") if token is None else token
        """The admin token sent with every call (``None`` or empty: none)."""
        self.actor = actor
        """The operator's name in the audit log (``None``: the server records ``operator``)."""
        target = address if address is not None else os.environ.get("LOCKSTEP_ADMIN_ADDR", "")
        target = _normalize_address(target) if target else client.address
        self.address = target
        """Where this admin sends its ``Admin`` calls."""
        self._own_channel: Optional[grpc.aio.Channel] = None
        if target != client.address:
            self._own_channel = open_channel(target, channel_options(), client.tls)
        self._stub = pb_grpc.AdminStub(self._own_channel or client._channel)  # type: ignore[no-untyped-call]

    @property
    def client(self) -> "Client":
        return self._client

    async def close(self) -> None:
        """Close this admin's own connection, if it has one (a separate admin address)."""
        channel, self._own_channel = self._own_channel, None
        if channel is not None:
            await channel.close()
        self._client._forget_admin(self)

    async def __aenter__(self) -> "Admin":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<lockstep.Admin {self.address} actor={self.actor or 'operator'!r}>"

    def _metadata(self) -> Optional[List[Tuple[str, str]]]:
        metadata = []
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        if self.actor:
            metadata.append((ACTOR_HEADER, self.actor))
        return metadata or None

    async def _call(self, operation: str, method: str, request: Any, *, timeout: Optional[float] = _DEFAULT) -> Any:
        """Make an ``Admin`` call; a server without the service raises :class:`NotSupported`."""
        deadline = self._client.timeout if timeout is _DEFAULT else timeout
        try:
            return await getattr(self._stub, method)(request, timeout=deadline, metadata=self._metadata())
        except grpc.RpcError as exc:
            error = error_from_rpc(exc, what=f"lockstep admin API at {self.address}")
        if isinstance(error, NotSupported):
            raise NotSupported(
                f"'{operation}' needs the server's Admin service, and the lockstep server at {self.address} does not "
                f"offer it (or its {method} call) there: the server predates it, or serves Admin on a separate "
                "address (`lockstep serve --admin-listen ADDR`: pass client.admin(address=ADDR))",
                code=error.code,
            ) from None
        raise error

    # ------------------------------------------------------------------------------------------
    # status

    async def status(self) -> SystemStatus:
        """The server's status (paused agents, emergency stop, pending commands, counters) with this
        namespace's agents by status and role and its sync points by state."""
        resp = await self._call("status", "Status", pb.StatusRequest())
        info = await self._client.server_info()
        agents = await self._client.list_agents()
        points = await self._client.sync_points(metadata=self._metadata())
        by_status = collections.Counter(str(a.status) for a in agents)
        by_role = collections.Counter(a.role or "(none)" for a in agents)
        by_state = collections.Counter(str(p.state) for p in points)
        stop = None
        if resp.emergency_stop:
            stop = EmergencyStopInfo(
                actor=resp.emergency_actor, reason=resp.emergency_reason, since_ms=resp.emergency_since_ms
            )
        return SystemStatus(
            address=self._client.address,
            namespace=self._client.namespace or "default",
            server_version=info.version,
            heartbeat_interval_ms=info.heartbeat_interval_ms,
            lease_intervals=info.lease_intervals,
            agents_on_server=resp.agents,
            agents=tuple(agents),
            by_status=dict(by_status),
            by_role=dict(by_role),
            published=resp.published,
            delivered=resp.delivered,
            dropped=resp.dropped,
            sync_points=dict(by_state),
            by_status_on_server=dict(resp.agents_by_status),
            paused=tuple(AgentRef.from_proto(r) for r in resp.paused),
            emergency_stop=stop,
            pending_commands=resp.pending_commands,
            now_ms=resp.now_ms,
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

    async def audit_log(self, limit: Optional[int] = None) -> AuditLog:
        """The most recent ``limit`` entries of the server's audit log, oldest first (``None``: the
        server's default, 100): every pause, resume, emergency stop, ``resume_all`` and command, with
        who did it and how it ended, refusals included."""
        if limit is not None and not 0 <= limit < 2**32:
            raise InvalidArgument(f"limit must be between 0 and {2**32 - 1}, not {limit}")
        resp = await self._call("audit_log", "AuditLog", pb.AuditLogRequest(limit=limit or 0))
        return AuditLog.from_proto(resp)

    # ------------------------------------------------------------------------------------------
    # pausing

    def _ref(self, agent_id: str) -> pb.AgentRef:
        return pb.AgentRef(namespace=self._client.namespace, agent_id=agent_id)

    async def pause_agent(self, agent_id: str) -> str:
        """Pause an agent: the server holds its deliveries (state changes it watches coalesce) and
        refuses its publishes, state updates and sync arrivals until it is resumed. The agent is told
        (:attr:`lockstep.Agent.paused`). Returns what the server did, in words.

        Raises:
            NotFound: no such agent in this namespace.
        """
        return str((await self._call("pause_agent", "PauseAgent", self._ref(agent_id))).detail)

    async def resume_agent(self, agent_id: str) -> str:
        """Lift an agent's pause; its held deliveries follow. During an emergency stop this lifts only
        the agent's own pause: it stays stopped until :meth:`resume_all`. Returns what happened.

        Raises:
            NotFound: no such agent in this namespace.
        """
        return str((await self._call("resume_agent", "ResumeAgent", self._ref(agent_id))).detail)

    async def emergency_stop(self, reason: str = "") -> str:
        """Pause every agent of every namespace at once; each is told, with ``reason``. Until
        :meth:`resume_all`, every publish, state update and sync arrival is refused. Returns what happened."""
        return str((await self._call("emergency_stop", "EmergencyStop", pb.EmergencyStopRequest(reason=reason))).detail)

    async def resume_all(self) -> str:
        """Lift the emergency stop and every agent's own pause; held deliveries follow. Returns what happened."""
        return str((await self._call("resume_all", "ResumeAll", pb.ResumeAllRequest())).detail)

    # ------------------------------------------------------------------------------------------
    # commands

    async def send_command(
        self,
        agent_id: str,
        command: str,
        params: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """Send ``command`` with ``params`` (a JSON object) to an agent and wait for its answer.

        The agent receives it from :meth:`lockstep.Agent.commands` (or as
        :meth:`lockstep.SynchronizedAgent.on_command`) and answers with a result, which this returns
        (any JSON value, decoded), or with an error. Paused agents can be commanded.

        Args:
            timeout: seconds to wait for the answer; ``None`` for the server's default (30 s unless
                configured otherwise).

        Raises:
            CommandFailed: the agent answered with an error; ``.agent_error`` is its text.
            CommandTimeout: no answer within ``timeout``.
            CommandAborted: the agent went away before answering.
            NotFound: no such agent in this namespace.
            InvalidArgument: a bad command name, ``params`` not a JSON object, or a timeout above the
                server's limit.
            ResourceExhausted: too many commands are waiting for answers on the server.
        """
        if params is None:
            params_json = ""
        elif isinstance(params, Mapping):
            try:
                params_json = json.dumps(dict(params), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"the params of command '{command}' are not JSON-serialisable: {exc}") from None
        else:
            raise InvalidArgument(f"command params must be a mapping (a JSON object) or None, not {type(params).__name__}")
        request = pb.SendCommandRequest(
            namespace=self._client.namespace,
            agent_id=agent_id,
            command=command,
            params_json=params_json,
            timeout_ms=timeout_ms(timeout),
        )
        # The server answers at the command's deadline; the call's own deadline only guards against
        # a server that never does. Without a timeout the server's default applies, unknown here.
        guard = None if not timeout else timeout + _COMMAND_GRACE
        try:
            resp = await self._call("send_command", "SendCommand", request, timeout=guard)
        except LockstepError as exc:
            # The server's COMMAND_TIMEOUT, or this call's own guard expiring (no reason: the server
            # never answered), is a timeout; COMMAND_ABORTED an abort. Anything else is raised as is.
            if exc.reason is Reason.COMMAND_TIMEOUT or (exc.reason is None and isinstance(exc, DeadlineExceeded)):
                cls: Type[CommandError] = CommandTimeout
            elif exc.reason is Reason.COMMAND_ABORTED:
                cls = CommandAborted
            else:
                raise
            raise cls(exc.message, code=exc.code, agent_id=agent_id, command=command, reason=exc.reason) from None
        if resp.WhichOneof("outcome") == "agent_error":
            raise CommandFailed(
                f"agent '{agent_id}' failed command '{command}' (id {resp.command_id}): {resp.agent_error}",
                agent_error=resp.agent_error,
                agent_id=agent_id,
                command=command,
                command_id=resp.command_id,
            )
        return json.loads(resp.result_json) if resp.result_json else None

    # ------------------------------------------------------------------------------------------
    # health and circuit breakers

    async def health(self) -> HealthReport:
        """Every agent's health (all namespaces: ``healthy``, ``degraded``, ``stuck`` or ``unhealthy``,
        with the issues in words, delivery and acknowledgement figures, breaker state) and the
        system's score with its recent history."""
        return HealthReport.from_proto(await self._call("health", "Health", pb.HealthRequest()))

    async def restart_agent(self, agent_id: str) -> str:
        """Close an agent's circuit breaker and forget its failures, so that its deliveries flow
        again. Returns what the server did, in words.

        Raises:
            NotFound: no such agent in this namespace.
            NotSupported: the server has no restart call (one older than its circuit breakers).
        """
        return str((await self._call("restart_agent", "RestartAgent", self._ref(agent_id))).detail)

    # ------------------------------------------------------------------------------------------
    # sync diagnostics (the agents' service)

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

    async def retry_task(self, id: str) -> "TaskInfo":
        """Make a dead-lettered task ready again, its attempts counted from zero (audited)."""
        return await self._client.tasks.retry(id, metadata=self._metadata())

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
            return (await self.health()).to_dict()

        async def pause_agent(p: Mapping[str, Any]) -> Any:
            agent_id = _need(p, "agent_id")
            return {"agent_id": agent_id, "detail": await self.pause_agent(agent_id)}

        async def resume_agent(p: Mapping[str, Any]) -> Any:
            agent_id = _need(p, "agent_id")
            return {"agent_id": agent_id, "detail": await self.resume_agent(agent_id)}

        async def restart_agent(p: Mapping[str, Any]) -> Any:
            agent_id = _need(p, "agent_id")
            return {"agent_id": agent_id, "detail": await self.restart_agent(agent_id)}

        async def emergency_stop(p: Mapping[str, Any]) -> Any:
            return {"detail": await self.emergency_stop(str(p.get("reason") or ""))}

        async def resume_all(p: Mapping[str, Any]) -> Any:
            return {"detail": await self.resume_all()}

        async def send_command(p: Mapping[str, Any]) -> Any:
            agent_id, command = _need(p, "agent_id"), _need(p, "command")
            timeout = p.get("timeout")
            result = await self.send_command(
                agent_id, command, p.get("command_params"), timeout=float(timeout) if timeout is not None else None
            )
            return {"agent_id": agent_id, "command": command, "result": result}

        async def audit_log(p: Mapping[str, Any]) -> Any:
            limit = p.get("limit")
            return (await self.audit_log(int(limit) if limit is not None else None)).to_dict()

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
            "audit_log": audit_log,
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

        Returns JSON-friendly data. Commands and their parameters:

        * ``status``; ``health``; ``list_agents`` (``role``, ``capability``, ``status``);
          ``server_info``; ``audit_log`` (``limit``);
        * ``pause_agent`` / ``resume_agent`` / ``restart_agent`` (``agent_id``) → ``{"agent_id", "detail"}``;
          ``emergency_stop`` (``reason``) and ``resume_all`` → ``{"detail"}``;
        * ``send_command`` (``agent_id``, ``command``, ``command_params``, ``timeout`` in seconds) →
          ``{"agent_id", "command", "result"}``;
        * ``sync_points``, ``sync_status`` / ``diagnose`` / ``force_complete`` (``sync_id``), ``cleanup``.

        Errors are raised as by the methods they stand for (``send_command`` raises
        :class:`~lockstep.CommandFailed` and so on).

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
    """The seed's ``CommandInterface``: ``await CommandInterface(client).handle_command('status')``.

    ``token``, ``actor`` and ``address`` are passed to :meth:`lockstep.Client.admin`.
    """

    def __init__(
        self,
        client: "Union[Client, Admin]",
        token: Optional[str] = None,
        *,
        actor: Optional[str] = None,
        address: Optional[str] = None,
    ) -> None:
        self.admin: Admin = client if isinstance(client, Admin) else client.admin(token=token, actor=actor, address=address)

    @property
    def commands(self) -> Tuple[str, ...]:
        """The command names accepted."""
        return self.admin.commands

    async def handle_command(self, name: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        """See :meth:`Admin.handle_command`."""
        return await self.admin.handle_command(name, params)
