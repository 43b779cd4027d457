"""The connection to a lockstep server: registration, registry queries, state and sync diagnostics."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import grpc
import grpc.aio

from ._util import Opening, default_address
from .errors import InvalidArgument, LockstepError, NotSupported, Unavailable, error_from_rpc
from .models import (
    AgentInfo,
    AgentStatus,
    RegistryEvent,
    ServerInfo,
    StateSnapshot,
    SyncDiagnosis,
    SyncPointStatus,
    VoteDiagnosis,
    VoteRecord,
)
from .group import GroupInfo
from .tls import Tls, open_channel
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .admin import Admin
    from .tasks import Tasks
    from .traces import Traces
    from .streams import Streams
    from .intake import Intake
    from .systems import Systems
    from .agent import Agent
    from .context import Context
    from .history import TopicInfo
    from .embedded import EmbeddedServer
    from .lean import LeanDialer

__all__ = ["Client", "RegistryWatch", "connect"]

log = logging.getLogger("lockstep")

Metadata = Sequence[Tuple[str, str]]

#: The role an agent registers with when none is given (the server requires one).
DEFAULT_ROLE = "agent"


def _normalize_address(address: str) -> str:
    for scheme in ("grpc://", "http://", "dns:///"):
        if address.startswith(scheme):
            address = address[len(scheme):]
    return address.rstrip("/")


def _host_of(address: str) -> str:
    """The host of a ``host:port`` address (``[::1]:7600`` gives ``::1``)."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def channel_options(extra: Optional[Sequence[Tuple[str, Any]]] = None) -> List[Tuple[str, Any]]:
    """The gRPC channel options every lockstep connection uses, then ``extra``."""
    opts: List[Tuple[str, Any]] = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        ("grpc.enable_retries", 0),
    ]
    opts.extend(extra or ())
    return opts


def connect(
    address: Optional[str] = None,
    *,
    namespace: str = "",
    timeout: Optional[float] = 10.0,
    connect_timeout: float = 5.0,
    sync_timeout: Optional[float] = None,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
    embedded: bool = False,
    token: Optional[str] = None,
    tls: "Optional[Tls]" = None,
) -> "Opening[Client]":
    """Connect to a lockstep server.

    ``address`` is ``host:port`` (default: ``$LOCKSTEP_ADDR`` or ``127.0.0.1:7600``). Use it either
    way::

        client = await lockstep.connect("127.0.0.1:7600")
        ...
        await client.close()

        async with lockstep.connect("127.0.0.1:7600") as client:
            ...

    Args:
        namespace: the namespace every call of this client works in (empty: the server's default).
        timeout: deadline in seconds for each unary call (registry, state, diagnostics); ``None`` for none.
        connect_timeout: how long to wait for the server to accept the connection; past it
            :class:`~lockstep.Unavailable` is raised.
        sync_timeout: the default barrier timeout in seconds for agents of this client (``None``: the
            server's default).
        options: extra gRPC channel options.
        embedded: start a private server for this client (``lockstep serve --in-memory`` on a free
            loopback port; the binary is ``$LOCKSTEP_BIN``, on ``PATH``, or next to the package)
            and stop it when the client closes; ``address`` must not be given then. See
            :class:`lockstep.EmbeddedServer`.
        token: for a server that requires tokens (``lockstep serve --token-secret-file``; mint
            one with ``lockstep token create``): sent as ``authorization: Bearer <token>`` on
            every call of this client and of its agents' sessions (default ``$LOCKSTEP_TOKEN``).
            An admin token given to :meth:`Client.admin` takes its place on the operators' calls.
        tls: connect over TLS (:class:`lockstep.Tls`: the CA to check the server against, and the
            client certificate for a server that asks for one); default from ``$LOCKSTEP_TLS_CA``,
            ``$LOCKSTEP_TLS_CERT`` and ``$LOCKSTEP_TLS_KEY``, else plain TCP. An admin on a separate
            address connects the same way.

    Raises:
        Unavailable: the server could not be reached within ``connect_timeout``.
        ServerNotFound: ``embedded`` and no server binary was found (the message says how to get one).
    """
    if embedded and address is not None:
        raise TypeError("give either an address or embedded=True, not both")
    if embedded and tls is not None:
        raise TypeError("an embedded server listens on loopback without TLS: give no tls with embedded=True")

    async def _open() -> Client:
        server: "Optional[EmbeddedServer]" = None
        if embedded:
            from .embedded import EmbeddedServer

            # Started from this thread (a few milliseconds): the server is tied to it.
            server = EmbeddedServer()
        try:
            client = await _connect_to(server.address if server else address, namespace, timeout, connect_timeout,
                                       sync_timeout, options, token,
                                       None if server else (tls if tls is not None else Tls.from_env()))
        except BaseException:
            if server is not None:
                server.stop()
            raise
        client._embedded = server
        return client

    return Opening(_open)


def _with_token(details: Any, bearer: str) -> Any:
    """``details`` with ``authorization: <bearer>`` added, unless the call brings its own (an
    operator's admin token)."""
    pairs = list(details.metadata or ())
    if any(k == "authorization" for k, _ in pairs):
        return details
    pairs.append(("authorization", bearer))
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, grpc.aio.Metadata(*pairs), details.credentials, details.wait_for_ready
    )


class _Bearer:
    """What the four token interceptors share: the header value they add."""

    def __init__(self, bearer: str) -> None:
        self._bearer = bearer

    def _details(self, details: Any) -> Any:
        return _with_token(details, self._bearer)


class _TokenUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _TokenUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _TokenStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _TokenStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def _token_interceptors(token: str) -> List[Any]:
    """Interceptors sending ``token`` on every kind of call."""
    bearer = f"Bearer {token}"
    return [_TokenUnaryUnary(bearer), _TokenUnaryStream(bearer), _TokenStreamUnary(bearer), _TokenStreamStream(bearer)]


async def _connect_to(
    address: Optional[str],
    namespace: str,
    timeout: Optional[float],
    connect_timeout: float,
    sync_timeout: Optional[float],
    options: Optional[Sequence[Tuple[str, Any]]],
    token: Optional[str] = None,
    tls: "Optional[Tls]" = None,
) -> "Client":
    """Open a channel to ``address`` (over TLS when ``tls`` is given) and wait until the server
    accepts it."""
    addr = _normalize_address(address or default_address())
    token = token if token is not None else os.environ.get("LOCKSTEP_TOKEN") or None
    interceptors = _token_interceptors(token) if token else None
    channel = open_channel(addr, channel_options(options), tls, interceptors)
    try:
        await asyncio.wait_for(channel.channel_ready(), connect_timeout)
    except asyncio.TimeoutError:
        await channel.close()
        hint = ("over TLS: does the server trust this client's certificate, and this client the server's CA?"
                if tls is not None else "if it serves TLS, connect with tls=lockstep.Tls(...)")
        raise Unavailable(
            f"cannot reach a lockstep server at {addr} within {connect_timeout:g}s "
            f"(is `lockstep serve` running there? {hint})"
        ) from None
    except BaseException:
        await channel.close()
        raise
    return Client(channel, addr, namespace=namespace, timeout=timeout, sync_timeout=sync_timeout, tls=tls, token=token)


class Client:
    """A connection to one lockstep server, shared by any number of agents.

    Create it with :func:`lockstep.connect`. Registering an agent (:meth:`register`) opens that
    agent's session stream; the other methods are one-shot queries that need no session.
    Closing the client closes (deregisters) every agent it registered.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        *,
        namespace: str = "",
        timeout: Optional[float] = 10.0,
        sync_timeout: Optional[float] = None,
        tls: "Optional[Tls]" = None,
        token: Optional[str] = None,
    ) -> None:
        self._channel = channel
        self.tls = tls
        """How this client connected over TLS (``None``: plain TCP)."""
        # Presented by lean sessions in their hello (gRPC calls carry it through interceptors).
        self._token = token or ""
        self._stub = pb_grpc.LockstepStub(channel)  # type: ignore[no-untyped-call]
        self._context: "Optional[Context]" = None
        self._tasks: "Optional[Tasks]" = None
        self.address = address
        """The ``host:port`` this client is connected to."""
        self.namespace = namespace
        """The namespace this client works in (empty: the server's default)."""
        self.timeout = timeout
        """Deadline in seconds for unary calls."""
        self.sync_timeout = sync_timeout
        """Default barrier timeout in seconds for :meth:`lockstep.Agent.sync` (``None``: server default)."""
        self._agents: "List[Agent]" = []
        self._watches: "List[RegistryWatch]" = []
        self._admins: "List[Admin]" = []
        self._closed = False
        self._embedded: "Optional[EmbeddedServer]" = None

    # ------------------------------------------------------------------------------------------
    # lifecycle

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def embedded_server(self) -> "Optional[EmbeddedServer]":
        """The private server this client started (``connect(embedded=True)``), else ``None``."""
        return self._embedded

    @property
    def agents(self) -> "List[Agent]":
        """The agents registered through this client that are still open."""
        return [a for a in self._agents if not a.closed]

    async def close(self) -> None:
        """Deregister every agent of this client, end registry watches, close admins' own
        connections, and close the connection (and stop the client's embedded server, if any)."""
        if self._closed:
            return
        self._closed = True
        agents = list(self._agents)
        if agents:
            await asyncio.gather(*(a.close() for a in agents), return_exceptions=True)
        for w in list(self._watches):
            w._cancel()
        for admin in list(self._admins):
            await admin.close()
        await self._channel.close()
        if self._embedded is not None:
            self._embedded.stop()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<lockstep.Client {self.address} namespace={self.namespace or 'default'!r}>"

    # ------------------------------------------------------------------------------------------
    # agents

    def register(
        self,
        agent_id: str,
        *,
        role: str = DEFAULT_ROLE,
        capabilities: Iterable[str] = (),
        interests: Iterable[str] = (),
        metadata: Optional[Mapping[str, str]] = None,
        resume_token: str = "",
        delivery_buffer: int = 65536,
        reconnect: bool = True,
        on_error: Optional[Callable[[LockstepError], Any]] = None,
        heartbeats: bool = True,
        transport: 'Literal["grpc", "lean"]' = "grpc",
    ) -> "Opening[Agent]":
        """Register an agent and open its session.

        Use it either way::

            agent = await client.register("scanner", interests=["market.>"])
            ...
            await agent.close()          # deregisters

            async with client.register("scanner", interests=["market.>"]) as agent:
                ...

        Args:
            agent_id: unique within the namespace while the agent is registered.
            role: what kind of agent this is (``"trader"``); barriers and watches can address every
                agent of a role. The server requires one; it defaults to ``"agent"``.
            capabilities: what the agent can do; :meth:`agents_with_capability` finds agents by them.
            interests: topic patterns this agent receives: ``a.b.c``, ``*`` for one token, ``>`` for
                the rest, or ``all``.
            metadata: free-form string pairs shown in the registry.
            resume_token: take over a live session of the same id (after a reconnect or restart).
            delivery_buffer: deliveries held locally while the application is not reading them;
                beyond it the oldest are dropped and counted in the next delivery's ``missed_before``.
            reconnect: resume the session with its resume token if the stream breaks.
            on_error: called with errors the server reports for requests that wanted no reply
                (``publish`` without ``confirm``). Default: logged as warnings.
            heartbeats: renew the lease by itself every heartbeat interval (default). With
                ``False`` the agent lives as long as something renews it within each lease:
                :meth:`Agent.heartbeat`, or any other message of the agent. A lease lost that way
                ends the session for good (``close_reason`` says so): it is not resumed.
            transport: how the session reaches the server. ``"grpc"`` (default): a stream on this
                client's connection. ``"lean"``: the server's lean transport (``lockstep serve
                --lean-listen``), a plain TCP connection of the agent's own carrying
                length-delimited protobuf frames instead of a gRPC stream, for agents on the
                server's host that want the lowest latency per message (docs/PROTOCOL.md, "The
                lean transport"). The agent behaves exactly as over gRPC (same messages, errors
                and resumption); its queries still use this client's connection. The lean
                listener is found with :meth:`server_info` on this client's host; the transport
                has no TLS.

        Raises:
            AlreadyRegistered: another live session holds ``agent_id``.
            InvalidArgument: a bad id, role, pattern or metadata; or an unknown ``transport``.
            ResourceExhausted: a server limit (agents per namespace, interests) was hit.
            NotSupported: ``transport="lean"`` on a client connected over TLS, or to a server
                that serves no lean transport.
        """
        from .agent import Agent

        if transport not in ("grpc", "lean"):
            raise InvalidArgument(f"unknown transport {transport!r}: 'grpc' or 'lean'")

        async def _open() -> Agent:
            if self._closed:
                raise LockstepError("the client is closed")
            lean = await self._lean_dialer() if transport == "lean" else None
            request = pb.Register(
                namespace=self.namespace,
                agent_id=agent_id,
                role=role,
                capabilities=list(capabilities),
                interests=list(interests),
                metadata=dict(metadata or {}),
                resume_token=resume_token,
            )
            agent = await Agent._open(
                self,
                request,
                delivery_buffer=delivery_buffer,
                reconnect=reconnect,
                on_error=on_error,
                heartbeats=heartbeats,
                lean=lean,
            )
            self._agents.append(agent)
            return agent

        return Opening(_open)

    async def _lean_dialer(self) -> "LeanDialer":
        """Where this client's lean sessions connect: the port the server advertises, on the host
        of this client's address, presenting this client's token."""
        from .lean import LeanDialer

        if self.tls is not None:
            raise NotSupported(
                "the lean transport has no TLS and this client is connected over TLS; "
                "register over gRPC (transport='grpc') instead"
            )
        port = (await self.server_info()).lean_port
        if port == 0:
            raise NotSupported(
                f"the server at {self.address} serves no lean transport (start it with --lean-listen)"
            )
        return LeanDialer(host=_host_of(self.address), port=port, token=self._token)

    def _forget(self, agent: "Agent") -> None:
        try:
            self._agents.remove(agent)
        except ValueError:
            pass

    # ------------------------------------------------------------------------------------------
    # unary calls

    async def _every_page(self, method: Any, request: Any, items: str) -> List[Any]:
        """Every item of a paged listing: ``request`` sent again with each ``next_page_token``."""
        out: List[Any] = []
        while True:
            resp = await self._call(method, request)
            out.extend(getattr(resp, items))
            if not resp.next_page_token:
                return out
            request.page_token = resp.next_page_token

    async def _call(self, method: Any, request: Any, *, metadata: Optional[Metadata] = None) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, what=f"lockstep server at {self.address}") from None

    async def list_agents(
        self,
        *,
        role: Optional[str] = None,
        capability: Optional[str] = None,
        status: Union[AgentStatus, str, None] = None,
    ) -> List[AgentInfo]:
        """The agents registered in this client's namespace, optionally filtered.

        Args:
            role: only agents with this role.
            capability: only agents that declared this capability.
            status: only agents in this status (an :class:`AgentStatus` or its name, e.g. ``"busy"``).
        """
        req = pb.ListAgentsRequest(
            namespace=self.namespace,
            role=role or "",
            capability=capability or "",
            status=int(AgentStatus.parse(status)) if status is not None else 0,  # type: ignore[arg-type]
        )
        agents: List[AgentInfo] = []
        while True:  # every page of the listing
            resp = await self._call(self._stub.ListAgents, req)
            agents.extend(AgentInfo.from_proto(a) for a in resp.agents)
            if not resp.next_page_token:
                return agents
            req.page_token = resp.next_page_token

    async def agents_with_capability(self, capability: str) -> List[AgentInfo]:
        """Agents that declared ``capability`` (the seed registry's ``get_agents_with_sync_capability``)."""
        return await self.list_agents(capability=capability)

    async def get_agent(self, agent_id: str) -> AgentInfo:
        """One agent's registry entry.

        Raises:
            NotFound: no agent with this id is registered.
        """
        from .errors import NotFound

        for info in await self.list_agents():
            if info.agent_id == agent_id:
                return info
        raise NotFound(f"no agent '{agent_id}' is registered in namespace '{self.namespace or 'default'}'")

    @property
    def tasks(self) -> "Tasks":
        """Tasks of this client's namespace (see :class:`lockstep.Tasks`)."""
        from .tasks import Tasks

        if self._tasks is None:
            self._tasks = Tasks(self)
        return self._tasks

    @property
    def rounds(self) -> "Rounds":
        """Tick round series of this client's namespace (see :class:`lockstep.Rounds`)."""
        from .rounds import Rounds

        return Rounds(self)

    @property
    def traces(self) -> "Traces":
        """Execution traces of this client's namespace, read from anywhere (see :class:`lockstep.Traces`)."""
        from .traces import Traces

        return Traces(self._channel, self.namespace)

    def streams(self, token: Optional[str] = None, *, actor: Optional[str] = None) -> "Streams":
        """Tick controllers and latency buffers of this client's namespace (see
        :class:`lockstep.Streams`); ``token`` is the admin token creating and removing them needs
        when the server has one (default ``$LOCKSTEP_ADMIN_TOKEN``), ``actor`` the caller's name in
        the audit log."""
        from .streams import Streams

        return Streams(self._channel, self.namespace, token=token, actor=actor, timeout=self.timeout)

    def intake(self, token: Optional[str] = None, *, actor: Optional[str] = None) -> "Intake":
        """The server's intake rule set and counters (see :class:`lockstep.Intake`); ``token`` is
        the admin token replacing the set needs when the server has one (default
        ``$LOCKSTEP_ADMIN_TOKEN``), ``actor`` the caller's name in the audit log."""
        from .intake import Intake

        return Intake(self._channel, token=token, actor=actor, timeout=self.timeout)

    def systems(self, token: Optional[str] = None, *, actor: Optional[str] = None) -> "Systems":
        """The server's sync monitor: synced systems, their dependencies, freshness, risk and
        incidents (see :class:`lockstep.Systems`). Reading and reporting are open; registering,
        declaring dependencies and acting on incidents are operators' actions: ``token`` is the
        admin token they need when the server has one (default ``$LOCKSTEP_ADMIN_TOKEN``),
        ``actor`` the caller's name in the audit log."""
        from .systems import Systems

        return Systems(self._channel, token=token, actor=actor, timeout=self.timeout)

    @property
    def context(self) -> "Context":
        """Shared context of this client's namespace (see :class:`lockstep.Context`)."""
        from .context import Context

        if self._context is None:
            self._context = Context(self)
        return self._context

    async def topics(self, *, metadata: Optional[Metadata] = None) -> "List[TopicInfo]":
        """The retained topics of this namespace (topic history), by name: the messages and bytes
        each keeps, its first and last sequence numbers, its rule, whether it is stored."""
        from .history import TopicInfo

        stub = pb_grpc.HistoryStub(self._channel)  # type: ignore[no-untyped-call]
        req = pb.ListTopicsRequest(namespace=self.namespace)
        topics: List[TopicInfo] = []
        while True:  # every page of the listing
            resp = await self._call(stub.ListTopics, req, metadata=metadata)
            topics.extend(TopicInfo.from_proto(t) for t in resp.topics)
            if not resp.next_page_token:
                return topics
            req.page_token = resp.next_page_token

    def watch_registry(self) -> "RegistryWatch":
        """Follow registry changes as they happen.

        The watch first yields a ``SNAPSHOT`` event per agent already registered, then ``JOINED``,
        ``LEFT``, ``STATUS`` and ``LOST`` events. With ``async with`` the watch is live on entering
        the block (see :meth:`RegistryWatch.started`)::

            async with client.watch_registry() as events:
                async for event in events:
                    print(event.kind, event.agent.agent_id, event.agent.status)
        """
        call = self._stub.WatchRegistry(pb.WatchRegistryRequest(namespace=self.namespace))
        watch = RegistryWatch(self, call)
        self._watches.append(watch)
        return watch

    async def get_state(self, agent_id: str) -> StateSnapshot:
        """An agent's whole state and its version.

        Raises:
            NotFound: no agent with this id is registered.
        """
        import json

        resp = await self._call(self._stub.GetState, pb.GetStateRequest(namespace=self.namespace, agent_id=agent_id))
        state = json.loads(resp.state_json) if resp.state_json else {}
        return StateSnapshot(agent_id=resp.agent_id or agent_id, version=resp.version, state=state)

    async def server_info(self) -> ServerInfo:
        """The server's version, clock, heartbeat settings, limits and counters."""
        return ServerInfo.from_proto(await self._call(self._stub.ServerInfo, pb.ServerInfoRequest()))

    async def sync_points(self, *, metadata: Optional[Metadata] = None) -> List[SyncPointStatus]:
        """Every sync point the server still holds in this namespace (waiting or finished)."""
        req = pb.ListSyncPointsRequest(namespace=self.namespace)
        points: List[SyncPointStatus] = []
        while True:  # every page of the listing
            resp = await self._call(self._stub.ListSyncPoints, req, metadata=metadata)
            points.extend(SyncPointStatus.from_proto(s) for s in resp.sync_points)
            if not resp.next_page_token:
                return points
            req.page_token = resp.next_page_token

    async def sync_status(self, sync_id: str, *, metadata: Optional[Metadata] = None) -> SyncPointStatus:
        """One sync point's status (``get_sync_status`` in the seed API).

        Raises:
            NotFound: no such sync point.
        """
        resp = await self._call(
            self._stub.SyncStatus, pb.SyncStatusRequest(namespace=self.namespace, sync_id=sync_id), metadata=metadata
        )
        return SyncPointStatus.from_proto(resp)

    async def list_votes(self, *, metadata: Optional[Metadata] = None) -> List[VoteRecord]:
        """Every vote of the namespace, open or retained, with its full record."""
        resp = await self._call(self._stub.ListVotes, pb.ListVotesRequest(namespace=self.namespace), metadata=metadata)
        return [VoteRecord.from_proto(v) for v in resp.votes]

    async def list_groups(self, *, metadata: Optional[Metadata] = None) -> List[GroupInfo]:
        """The namespace's replica groups: members in rank order, current state version."""
        resp = await self._call(self._stub.ListGroups, pb.ListGroupsRequest(namespace=self.namespace), metadata=metadata)
        return [GroupInfo.from_proto(g) for g in resp.groups]

    async def vote_status(self, vote_id: str, *, metadata: Optional[Metadata] = None) -> VoteRecord:
        """One vote's full record: who voted what, who abstained, who never voted, the outcome.

        Raises:
            NotFound: no such vote (``UNKNOWN_VOTE``).
        """
        resp = await self._call(
            self._stub.VoteStatus, pb.VoteStatusRequest(namespace=self.namespace, vote_id=vote_id), metadata=metadata
        )
        return VoteRecord.from_proto(resp)

    async def diagnose_vote(self, vote_id: str, *, metadata: Optional[Metadata] = None) -> VoteDiagnosis:
        """What is wrong with a vote and what to do."""
        resp = await self._call(
            self._stub.DiagnoseVote, pb.VoteStatusRequest(namespace=self.namespace, vote_id=vote_id), metadata=metadata
        )
        return VoteDiagnosis.from_proto(resp)

    async def diagnose_sync(self, sync_id: str, *, metadata: Optional[Metadata] = None) -> SyncDiagnosis:
        """What is wrong with a sync point and what to do (``diagnose_sync_issues`` in the seed API).

        Raises:
            NotFound: no such sync point.
        """
        resp = await self._call(
            self._stub.DiagnoseSync, pb.SyncStatusRequest(namespace=self.namespace, sync_id=sync_id), metadata=metadata
        )
        return SyncDiagnosis.from_proto(resp)

    async def force_complete_sync(self, sync_id: str, *, metadata: Optional[Metadata] = None) -> SyncPointStatus:
        """Release everyone waiting at a stuck sync point now; their results say ``forced``.

        An operator's action (audited): on a server with an admin token, call it through
        :meth:`admin` (or pass ``metadata=[("authorization", "Bearer <token>")]``).

        Raises:
            NotFound: no such sync point.
            FailedPrecondition: the point is not waiting any more.
            Unauthenticated / PermissionDenied: the server's admin token is missing / wrong.
        """
        resp = await self._call(
            self._stub.ForceCompleteSync,
            pb.SyncStatusRequest(namespace=self.namespace, sync_id=sync_id),
            metadata=metadata,
        )
        return SyncPointStatus.from_proto(resp)

    async def cleanup_sync_points(self, *, metadata: Optional[Metadata] = None) -> int:
        """Forget finished sync points; returns how many were removed.

        An operator's action (audited), like :meth:`force_complete_sync`: it needs the server's
        admin token when it has one.
        """
        resp = await self._call(
            self._stub.CleanupSyncPoints, pb.CleanupSyncPointsRequest(namespace=self.namespace), metadata=metadata
        )
        return int(resp.removed)

    def admin(
        self,
        token: Optional[str] = None,
        *,
        actor: Optional[str] = None,
        address: Optional[str] = None,
    ) -> "Admin":
        """Operator operations: status, pausing and commanding agents, the audit log, sync diagnostics
        (see :class:`lockstep.Admin`).

        Args:
            token: the server's admin token (``--admin-token``), sent with every call; default
                ``$LOCKSTEP_ADMIN_TOKEN``.
            actor: the operator's name in the server's audit log (letters, digits, ``_-.:@/``).
            address: where the server serves its ``Admin`` API when started with ``--admin-listen``;
                default ``$LOCKSTEP_ADMIN_ADDR``, else this client's connection.

        Raises:
            InvalidArgument: ``actor`` is not a valid name.
        """
        from .admin import Admin

        admin = Admin(self, token=token, actor=actor, address=address)
        if admin._own_channel is not None:
            self._admins.append(admin)
        return admin

    def _forget_admin(self, admin: "Admin") -> None:
        try:
            self._admins.remove(admin)
        except ValueError:
            pass


class _StreamWatch:
    """An open server stream the client ends when it closes (registry and context watches)."""

    def __init__(self, client: Client, call: Any) -> None:
        self._client = client
        self._call = call
        self._closed = False

    def _cancel(self) -> None:
        self._closed = True
        self._call.cancel()

    async def close(self) -> None:
        """Stop watching."""
        self._cancel()
        try:
            self._client._watches.remove(self)
        except ValueError:
            pass


class RegistryWatch(_StreamWatch):
    """An open registry watch: an async iterator of :class:`~lockstep.RegistryEvent`.

    Also an async context manager; :meth:`close` ends it.
    """

    def __aiter__(self) -> AsyncIterator[RegistryEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RegistryEvent]:
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    return
                yield RegistryEvent.from_proto(msg)
        except asyncio.CancelledError:
            if self._closed:
                return
            raise
        except grpc.RpcError as exc:
            if self._closed or exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise error_from_rpc(exc, what=f"lockstep server at {self._client.address}") from None

    async def next(self, timeout: Optional[float] = None) -> RegistryEvent:
        """The next event (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        try:
            msg = await asyncio.wait_for(self._call.read(), timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, what=f"lockstep server at {self._client.address}") from None
        if msg is grpc.aio.EOF:
            raise LockstepError("the registry watch ended")
        return RegistryEvent.from_proto(msg)


    async def started(self) -> None:
        """Wait until the server has accepted the watch.

        Registry changes the server handles after this are reported as they happen (``JOINED``,
        ...); agents registered before it appear in the initial ``SNAPSHOT`` events. Entering the
        watch with ``async with`` waits for this.
        """
        try:
            await self._call.initial_metadata()
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, what=f"lockstep server at {self._client.address}") from None

    async def __aenter__(self) -> "RegistryWatch":
        await self.started()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

