"""A registered agent: its session stream, deliveries, state, watches, barriers, and what operators
tell it (pauses, commands)."""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import logging
import random
import time
import zlib
from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Deque,
    Dict,
    Generic,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

import grpc
import grpc.aio

from . import collective as _collective
from . import group as _group
from . import rounds as _rounds
from . import history as _history
from . import tasks as _tasks
from ._util import Opening, encode_payload, timeout_ms, to_json_text
from .errors import (
    ConnectionLost,
    ContextConflict,
    InvalidArgument,
    LockstepError,
    SchemaViolation,
    NotFound,
    Reason,
    Recovery,
    SessionClosed,
    error_from_code,
    error_from_rpc,
    final_status,
    recovery,
    status_code,
)
from .merge import apply_merge_patch
from .models import (
    AgentStatus,
    Command,
    ControlKind,
    ControlNotice,
    Delivery,
    IncomingRequest,
    Registration,
    Response,
    StateSnapshot,
    StateView,
    SyncResult,
    VoteOutcome,
    _Responder,
)
from .v1 import lockstep_pb2 as pb

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client
    from .context import AgentContext
    from .lean import LeanDialer
    from .traces import AgentTraces

__all__ = ["Agent", "StateWatch", "Feed", "Participants"]

log = logging.getLogger("lockstep")

#: What :meth:`Agent.sync` accepts as participants: a collection of agent ids or a count.
Participants = Union[Iterable[str], int]

_DEFAULT: Any = object()
Selector = Tuple[str, str]  # ("agent", id) | ("role", role) | ("all", "")

T = TypeVar("T")

#: Control notices kept for a reader of :meth:`Agent.control_notices` that falls behind.
_NOTICE_BUFFER = 1000

#: The longest error text an agent sends for a command (the server's default limit is 4096 bytes).
_MAX_COMMAND_ERROR_BYTES = 4000

#: The longest reason :meth:`Agent.report_delivery_error` sends (the exception text of a failed
#: handler can be long; the breaker needs only to know that, and roughly why, it failed).
MAX_DELIVERY_ERROR_CHARS = 1000


def _selector_message(selector: Selector, cls: Any) -> Any:
    kind, value = selector
    if kind == "agent":
        return cls(agent_id=value)
    if kind == "role":
        return cls(role=value)
    return cls(all=True)


class Agent:
    """One registered agent and its session with the server.

    Obtain one with :meth:`lockstep.Client.register`. While it is open the agent sends heartbeats on
    its own, so the server keeps its lease; :meth:`close` (or leaving its ``async with`` block)
    deregisters it. If the stream breaks, the agent resumes its session with its resume token
    (``reconnect=True``, the default); requests outstanding at that moment fail with
    :class:`~lockstep.ConnectionLost`.

    Messages routed to the agent are read with :meth:`deliveries`; its own state is changed with
    :meth:`update_state` and other agents' state followed with :meth:`watch_state`; barriers are
    :meth:`sync` (also spelled :meth:`sync_with_agents`).

    Operators reach the agent through the server: :attr:`paused` and :meth:`control_notices` follow
    their pauses and emergency stops, and :meth:`commands` yields the commands they send.

    The session runs over a gRPC stream on the client's connection, or over the server's lean
    transport (``client.register(..., transport="lean")``: a TCP connection of its own, see
    :mod:`lockstep.lean`); the agent behaves the same either way (:attr:`transport` says which).
    """

    def __init__(
        self,
        client: "Client",
        request: pb.Register,
        *,
        delivery_buffer: int = 65536,
        reconnect: bool = True,
        on_error: Optional[Callable[[LockstepError], Any]] = None,
        heartbeats: bool = True,
        lean: "Optional[LeanDialer]" = None,
    ) -> None:
        self._client = client
        self._register_msg = request
        # Where the lean transport's connections go; None: the session is a gRPC stream.
        self._lean = lean
        self._reg: Optional[Registration] = None
        self._call: Any = None
        self._loop = asyncio.get_running_loop()
        self._write_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[pb.Reply]"] = {}
        # Requests sent again, with the same id, on a resumed session (sync arrivals, which the server
        # re-attaches rather than doing twice) instead of failing when the connection breaks.
        self._resend: Dict[int, pb.ClientMessage] = {}
        self._connected = asyncio.Event()
        self._reconnect = reconnect
        self._on_error = on_error
        self._runner: Optional["asyncio.Task[None]"] = None
        self._heartbeat: Optional["asyncio.Task[None]"] = None
        self._heartbeats_suspended = not heartbeats
        self._background: Set["asyncio.Task[Any]"] = set()
        # Rounds of collectives called without an id, per group: the next id of each.
        self._collective_rounds: Dict[str, int] = {}
        # Shared-memory regions kept mapped between collectives (see lockstep.collective).
        self._shm_regions = _collective.Regions()
        self._closing = False
        self._closed = False
        self.close_reason: Optional[LockstepError] = None
        """Why the session ended, when the server or the network ended it (``None`` after :meth:`close`)."""
        self.async_errors: Deque[LockstepError] = collections.deque(maxlen=100)
        """The latest errors the server reported for requests that wanted no reply."""
        self.reconnects = 0
        """How many times the session was resumed after its stream broke."""
        self.missed_while_away = 0
        """How many messages routed to this agent it will never receive because they were dropped
        while its session was away (the server discards a lost agent's queue) or as its queue
        overflowed with nothing after them, as the server reported when the session registered or
        resumed; summed over the agent's life. Losses between messages are reported with the next
        delivery instead (``Delivery.missed_before``)."""

        # deliveries
        self._deliveries: Deque[Delivery] = collections.deque()
        self._delivery_event = asyncio.Event()
        self._delivery_cap = max(1, delivery_buffer)
        self._consumed_seq = 0
        self._acked_seq = 0
        self._acked_at = 0.0
        self.locally_dropped = 0
        """Deliveries dropped by this client because the application did not read them in time."""

        # own state, as confirmed by the server
        self._own_state: Dict[str, Any] = {}
        self._own_version = 0

        # watched state
        self._watches: List[StateWatch] = []
        self._states: Dict[str, Dict[str, Any]] = {}
        self._versions: Dict[str, int] = {}
        self._resyncing: Dict[str, List[pb.StateChange]] = {}
        self._roles: Dict[str, str] = {}
        self._roles_wanted: Set[str] = set()
        self._role_task: Optional["asyncio.Task[None]"] = None
        self.resyncs = 0
        """How many times a watched agent's state was refetched after a gap in its versions."""

        # what operators said
        self._own_pause: Optional[ControlNotice] = None
        self._emergency: Optional[ControlNotice] = None
        self._running = asyncio.Event()
        self._running.set()
        self._notice_feeds: List[Feed[ControlNotice]] = []
        self._command_feed: Optional[Feed[Command]] = None
        self.commands_refused = 0
        """Commands answered with an error because the application was not taking commands."""
        self._request_feed: Optional[Feed[IncomingRequest]] = None
        self._tasks = _tasks.TaskLink(self)
        self._rounds = _rounds.RoundLink(self)
        # Topic history: gap notices received, and the patterns subscribed to (again on a new session).
        self._history_gaps: List[_history.HistoryGap] = []
        self._subscriptions: List[str] = []
        self.requests_refused = 0
        """Other agents' requests refused because the application was not taking requests."""

    # ------------------------------------------------------------------------------------------
    # opening and the session loop

    @classmethod
    async def _open(
        cls,
        client: "Client",
        request: pb.Register,
        *,
        delivery_buffer: int,
        reconnect: bool,
        on_error: Optional[Callable[[LockstepError], Any]],
        heartbeats: bool = True,
        lean: "Optional[LeanDialer]" = None,
    ) -> "Agent":
        agent = cls(
            client,
            request,
            delivery_buffer=delivery_buffer,
            reconnect=reconnect,
            on_error=on_error,
            heartbeats=heartbeats,
            lean=lean,
        )
        agent._call, agent._reg = await agent._start_session(request)
        agent._count_missed(agent._reg)
        agent._connected.set()
        agent._runner = agent._loop.create_task(agent._run())
        return agent

    async def _start_session(self, request: pb.Register) -> Tuple[Any, Registration]:
        # Over gRPC a call on the client's channel; over the lean transport a connection of its
        # own, which reads, writes and ends as the call does (lockstep.lean.LeanCall), so that
        # everything below and the whole session treat both alike. A lean connection that cannot
        # be opened raises Unavailable, which a resumption retries.
        call = self._client._stub.Session() if self._lean is None else await self._lean.open()
        try:
            await call.write(pb.ClientMessage(register=request))
            first = await call.read()
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The call has ended (a refusal ends it at once): its own status says why.
            status = await final_status(call)
            call.cancel()
            if status.code() == grpc.StatusCode.OK:
                raise ConnectionLost("the server ended the session before it was registered") from None
            raise error_from_rpc(status, what=f"lockstep server at {self._client.address}") from None
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "registered":
            call.cancel()
            raise LockstepError("the server ended the session without answering the registration")
        return call, Registration.from_proto(first.registered)

    async def _run(self) -> None:
        error: Optional[LockstepError] = None
        try:
            while True:
                self._heartbeat = self._loop.create_task(self._heartbeat_loop())
                error, resumable = await self._read_loop(self._call)
                self._heartbeat.cancel()
                if self._closing:
                    error = None
                    break
                self._connected.clear()
                lost = ConnectionLost(
                    f"the session of agent '{self.agent_id}' broke: {error or 'the server ended it'}"
                )
                # An agent that renews its lease only when asked (heartbeats off) and lost it was
                # silent as its owner let it be: resuming would undo the loss its silence meant.
                silenced = self._heartbeats_suspended and error is not None and error.reason is Reason.LEASE_EXPIRED
                resuming = bool(self._reconnect and resumable and not silenced)
                self._fail_pending(lost, keep=self._resend if resuming else ())
                if error is None:
                    error = LockstepError(f"the server ended the session of agent '{self.agent_id}'")
                if not resuming:
                    break
                if not await self._resume():
                    break
                error = None
                for msg in list(self._resend.values()):
                    try:
                        await self._send(msg)
                    except LockstepError:
                        break  # the new session broke too: the read loop finds out
        except asyncio.CancelledError:
            pass
        finally:
            self._finish(None if self._closing else error)

    async def _read_loop(self, call: Any) -> Tuple[Optional[LockstepError], bool]:
        """Dispatch server messages until the stream ends: (error or None, whether to resume)."""
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    return None, False
                self._dispatch(msg)
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
            # The reconnection policy decides by the reason alone: a session taken over by another
            # connection stays ended (or the two would take it from each other in turn), a broken
            # connection or a server going away is resumed.
            return error, recovery(error.reason) is Recovery.RESUME
        except asyncio.InvalidStateError:
            return ConnectionLost("the session stream ended"), True

    def _count_missed(self, reg: Registration) -> None:
        if reg.missed_messages:
            self.missed_while_away += reg.missed_messages
            log.warning("lockstep: %d messages routed to agent '%s' were dropped while its session was away",
                        reg.missed_messages, self.agent_id)

    async def _resume(self) -> bool:
        reg = self._reg
        assert reg is not None
        # Long enough for a server to be restarted (the Rust client's default is the same minute).
        window = max(2.0 * reg.lease_seconds, 60.0)
        deadline = time.monotonic() + window
        delay = 0.05
        request = pb.Register()
        request.CopyFrom(self._register_msg)
        request.resume_token = reg.resume_token
        while not self._closing and time.monotonic() < deadline:
            try:
                call, new_reg = await self._start_session(request)
            except (ConnectionLost, LockstepError) as exc:
                # The same policy judges a failed attempt: a refusal stops, an unreachable server is retried.
                if recovery(exc.reason) is Recovery.GIVE_UP:
                    log.warning("lockstep: agent '%s' cannot resume its session: %s", self.agent_id, exc)
                    return False
                # Exponential backoff with ±25 % jitter, so that many agents do not retry in step.
                await asyncio.sleep(delay * random.uniform(0.75, 1.25))
                delay = min(delay * 2, 2.0)
                continue
            if self._closing:
                call.cancel()
                return False
            self._call = call
            self._reg = new_reg
            self.reconnects += 1
            self._count_missed(new_reg)
            if not new_reg.resumed:
                # A new session: the server starts this agent afresh, and tells it first if it is paused.
                self._consumed_seq = self._acked_seq = 0
                self._own_state, self._own_version = {}, 0
                self._own_pause = self._emergency = None
                self._running.set()
            self._connected.set()
            for selector in self._distinct_selectors():
                try:
                    await self._send(pb.ClientMessage(watch_state=_selector_message(selector, pb.WatchState)))
                except LockstepError:
                    pass
            if not new_reg.resumed:
                # Likewise the subscriptions, live only: what to replay after a loss is the
                # application's choice, from the topic sequence numbers it saw.
                for pattern in self._subscriptions:
                    try:
                        await self._send(pb.ClientMessage(subscribe=pb.Subscribe(pattern=pattern)))
                    except LockstepError:
                        pass
            # The work asked for is asked again: a restarted server does not keep it.
            await self._tasks.resumed()
            log.info(
                "lockstep: agent '%s' %s its session", self.agent_id, "resumed" if new_reg.resumed else "re-registered"
            )
            return True
        return False

    def _finish(self, error: Optional[LockstepError]) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.close_reason = error
        self._fail_pending(error or SessionClosed(f"agent '{self.agent_id}' is closed"))
        self._connected.set()
        self._delivery_event.set()
        self._running.set()
        for w in list(self._watches):
            w._end()
        for feed in list(self._notice_feeds):
            feed._end()
        if self._command_feed is not None:
            self._command_feed._end()
        if self._request_feed is not None:
            self._request_feed._end()
        self._tasks.end()
        self._rounds.end()
        for task in list(self._background):
            task.cancel()
        if self._role_task is not None:
            self._role_task.cancel()
        self._client._forget(self)
        if error is not None:
            log.warning("lockstep: session of agent '%s' ended: %s", self.agent_id, error)

    def _fail_pending(self, error: LockstepError, keep: Iterable[int] = ()) -> None:
        """Fails the requests in flight (they may or may not have been carried out), except ``keep``."""
        kept = set(keep)
        pending = self._pending
        self._pending = {rid: fut for rid, fut in pending.items() if rid in kept}
        for rid, fut in pending.items():
            if rid not in kept and not fut.done():
                fut.set_exception(error)

    async def _heartbeat_loop(self) -> None:
        reg = self._reg
        assert reg is not None
        interval = (reg.heartbeat_interval_ms or 1000) / 1000.0
        beat = pb.ClientMessage(heartbeat=pb.Heartbeat())
        try:
            while True:
                await asyncio.sleep(interval)
                if self._heartbeats_suspended:
                    return
                await self._send(beat)
                await self._flush_ack()
        except LockstepError:
            return

    # ------------------------------------------------------------------------------------------
    # sending and replies

    async def _send(self, msg: pb.ClientMessage) -> None:
        if self._reg is not None:
            # Over a limit the server announced: refused here, naming it (PayloadTooLarge), rather
            # than refused by the server — or, over the message cap, ending the session's stream.
            self._reg.limits.check(msg)
        if not self._connected.is_set() and not self._closed:
            await self._connected.wait()
        if self._closed and self.close_reason is not None:
            raise ConnectionLost(f"the session of agent '{self.agent_id}' has ended: {self.close_reason}")
        if self._closed or (self._closing and msg.WhichOneof("kind") not in ("deregister", "ack")):
            raise SessionClosed(f"agent '{self.agent_id}' is closed")
        call = self._call
        async with self._write_lock:
            try:
                await call.write(msg)
            except grpc.RpcError as exc:
                raise ConnectionLost(f"the session of agent '{self.agent_id}' broke: {exc.details() or exc.code()}") from None
            except asyncio.InvalidStateError:
                raise ConnectionLost(f"the session of agent '{self.agent_id}' has ended") from None

    async def _request(
        self, msg: pb.ClientMessage, *, deadline: Optional[float] = None, resend: bool = False
    ) -> pb.Reply:
        request_id = next(self._ids)
        msg.request_id = request_id
        fut: "asyncio.Future[pb.Reply]" = self._loop.create_future()
        self._pending[request_id] = fut
        if resend:
            self._resend[request_id] = msg
        try:
            await self._send(msg)
            if deadline is None:
                return await fut
            return await asyncio.wait_for(fut, deadline)
        finally:
            self._pending.pop(request_id, None)
            self._resend.pop(request_id, None)

    def _raise_if_error(self, reply: pb.Reply, *, sync: bool = False) -> None:
        if reply.WhichOneof("outcome") == "error":
            raise self._error(reply.error, sync=sync)

    @staticmethod
    def _error(err: pb.Error, *, sync: bool = False) -> LockstepError:
        error = error_from_code(
            status_code(err.code),
            err.message,
            sync_id=err.sync_id,
            missing=list(err.missing_agents),
            sync=sync or bool(err.sync_id),
            reason=Reason.parse(err.reason),
        )
        if isinstance(error, ContextConflict):
            error.current_version = err.current_version
        if isinstance(error, SchemaViolation):
            error.schema_errors = tuple((e.path, e.reason) for e in err.schema_errors)
        return error

    def _dispatch(self, msg: pb.ServerMessage) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "deliveries":
            self._on_deliveries(msg.deliveries)
        elif kind == "reply":
            reply = msg.reply
            if reply.request_id == 0:
                if reply.WhichOneof("outcome") == "error":
                    self._report(self._error(reply.error))
                return
            fut = self._pending.pop(reply.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)
        elif kind == "state_changes":
            for change in msg.state_changes.items:
                self._on_change(change)
        elif kind == "control":
            self._on_control(ControlNotice.from_proto(msg.control))
        elif kind == "command":
            self._on_command(msg.command)
        elif kind == "incoming_request":
            self._on_incoming_request(msg.incoming_request)
        elif kind == "history_gap":
            _history.keep_gap(self._history_gaps, _history.HistoryGap.from_proto(msg.history_gap))
        elif kind == "registered":
            log.debug("lockstep: unexpected second 'registered' for agent '%s'", self.agent_id)
        elif kind is not None:
            self._tasks.on_message(kind, msg) or self._rounds.on_message(kind, msg)

    def _report(self, error: LockstepError) -> None:
        self.async_errors.append(error)
        if self._on_error is not None:
            try:
                result = self._on_error(error)
                if asyncio.iscoroutine(result):
                    self._spawn(result)
            except Exception:  # pragma: no cover - user callback
                log.exception("lockstep: on_error callback failed")
        else:
            log.warning("lockstep: agent '%s': server reported: %s", self.agent_id, error)

    def _spawn(self, coro: Any) -> "asyncio.Task[Any]":
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------------------------------------
    # identity

    @property
    def client(self) -> "Client":
        """The client this agent was registered through."""
        return self._client

    @property
    def registration(self) -> Registration:
        """What the server answered to the registration (ids, resume token, heartbeat settings)."""
        assert self._reg is not None
        return self._reg

    @property
    def agent_id(self) -> str:
        """This agent's id."""
        return self._reg.agent_id if self._reg is not None and self._reg.agent_id else self._register_msg.agent_id

    @property
    def name(self) -> str:
        """This agent's id (the seed API called it ``name``)."""
        return self.agent_id

    @property
    def namespace(self) -> str:
        """The namespace this agent lives in."""
        return self._reg.namespace if self._reg is not None else self._register_msg.namespace

    @property
    def role(self) -> str:
        """The role this agent registered with."""
        return self._register_msg.role

    @property
    def capabilities(self) -> List[str]:
        """The capabilities this agent registered with."""
        return list(self._register_msg.capabilities)

    @property
    def context(self) -> "AgentContext":
        """Shared context of this agent's namespace, written as this agent on its session; writes
        may be bound to its lease (see :class:`lockstep.AgentContext`)."""
        from .context import AgentContext

        return AgentContext(self)

    @property
    def traces(self) -> "AgentTraces":
        """Execution traces as this agent: lookups, claims and records (see :class:`lockstep.AgentTraces`)."""
        from .traces import AgentTraces

        return AgentTraces(self)

    @property
    def resume_token(self) -> str:
        """Pass it as ``resume_token`` to :meth:`lockstep.Client.register` to take this session over."""
        return self.registration.resume_token

    @property
    def transport(self) -> str:
        """How the session reaches the server: ``"grpc"`` (a stream on the client's connection) or
        ``"lean"`` (the server's lean transport)."""
        return "grpc" if self._lean is None else "lean"

    @property
    def closed(self) -> bool:
        """True once the session has ended (closed here, or ended by the server)."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<lockstep.Agent {self.agent_id!r} namespace={self.namespace!r} {state}>"

    # ------------------------------------------------------------------------------------------
    # publishing and deliveries

    async def publish(
        self,
        topic: str,
        payload: Any = b"",
        *,
        content_type: Optional[str] = None,
        confirm: bool = False,
        event_time_ms: Optional[int] = None,
    ) -> None:
        """Publish a message on ``topic`` to every agent whose interests match it.

        ``event_time_ms`` (ms since the Unix epoch) is the event's time: tick controllers and
        latency buffers place the message by it (see :class:`lockstep.Streams`). A time too far from
        the server's clock is refused (``EVENT_TIME_OUT_OF_RANGE``) or flagged, per the server's
        ``streams.event_time_policy``.

        ``payload`` may be ``bytes`` (sent as is), ``str`` (UTF-8 text) or any JSON-serialisable
        value (sent as ``application/json``); ``content_type`` overrides the inferred type.

        By default the message is sent without waiting for the server; if the server refuses it, the
        error goes to the agent's ``on_error`` callback (and :attr:`async_errors`). With
        ``confirm=True`` this waits for the server's answer and raises the error instead.

        Raises:
            InvalidArgument: an empty topic or one with wildcards (checked locally), or (with
                ``confirm``) anything else the server refuses.
            PayloadTooLarge: the payload is over the server's announced limit (checked locally;
                nothing is sent).
        """
        _check_topic(topic)
        data, ctype = encode_payload(payload, content_type)
        publish = pb.Publish(topic=topic, payload=data, content_type=ctype)
        if event_time_ms is not None:
            publish.event_time_ms = event_time_ms
        msg = pb.ClientMessage(publish=publish)
        if confirm:
            self._raise_if_error(await self._request(msg))
        else:
            await self._send(msg)

    def _on_deliveries(self, batch: pb.Deliveries) -> None:
        queue = self._deliveries
        for i, item in enumerate(batch.items):
            missed = batch.missed_before if i == 0 else 0
            queue.append(Delivery.from_proto(item, seq=batch.first_seq + i, missed_before=missed))
            if len(queue) > self._delivery_cap:
                oldest = queue.popleft()
                head = queue[0]
                queue[0] = replace(head, missed_before=head.missed_before + oldest.missed_before + 1)
                self.locally_dropped += 1
                if oldest.seq > self._consumed_seq:
                    self._consumed_seq = oldest.seq
        self._delivery_event.set()

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Messages routed to this agent, in order, until the agent is closed::

            async for delivery in agent.deliveries():
                print(delivery.topic, delivery.data)

        Deliveries read are acknowledged to the server in batches. A delivery whose
        ``missed_before`` is non-zero follows that many messages that were dropped because the
        agent did not keep up.
        """
        while True:
            if self._deliveries:
                delivery = self._deliveries.popleft()
                if delivery.seq > self._consumed_seq:
                    self._consumed_seq = delivery.seq
                yield delivery
                continue
            await self._maybe_ack()
            if self._deliveries:
                continue  # more arrived while the ack was being sent
            if self._closed:
                return
            self._delivery_event.clear()
            await self._delivery_event.wait()

    async def next_delivery(self, timeout: Optional[float] = None) -> Delivery:
        """The next delivery, waiting up to ``timeout`` seconds (``asyncio.TimeoutError`` after).

        Raises:
            SessionClosed: the agent was closed and nothing is left to read.
        """

        async def _next() -> Delivery:
            while True:
                if self._deliveries:
                    delivery = self._deliveries.popleft()
                    if delivery.seq > self._consumed_seq:
                        self._consumed_seq = delivery.seq
                    if not self._deliveries:
                        self._spawn(self._maybe_ack())
                    return delivery
                if self._closed:
                    raise SessionClosed(f"agent '{self.agent_id}' is closed")
                self._delivery_event.clear()
                await self._delivery_event.wait()

        return await asyncio.wait_for(_next(), timeout)

    @property
    def pending_deliveries(self) -> int:
        """Deliveries received and not read yet."""
        return len(self._deliveries)

    async def _maybe_ack(self) -> None:
        """Acknowledge what was read, but not more often than every 256 deliveries or 100 ms
        (the heartbeat flushes the rest): acknowledgements are for the server's accounting."""
        pending = self._consumed_seq - self._acked_seq
        if pending >= 256 or (pending > 0 and time.monotonic() - self._acked_at >= 0.1):
            await self._flush_ack()

    async def _flush_ack(self) -> None:
        upto = self._consumed_seq
        if upto <= self._acked_seq or self._closed or not self._connected.is_set():
            return
        self._acked_seq = upto
        self._acked_at = time.monotonic()
        try:
            await self._send(pb.ClientMessage(ack=pb.Ack(up_to_seq=upto)))
        except LockstepError:
            pass

    async def heartbeat(self) -> None:
        """Renew this agent's lease now. The session does it by itself every heartbeat interval;
        an agent whose automatic heartbeats are off (``register(..., heartbeats=False)``) lives
        only as long as it calls this within each lease."""
        await self._send(pb.ClientMessage(heartbeat=pb.Heartbeat()))

    async def report_delivery_error(self, seq: int, reason: str) -> None:
        """Tell the server this agent could not process delivery ``seq``, and why.

        It counts as a failure for this agent's circuit breaker, as a batch not acknowledged in time
        does (enough of them isolate the agent until it recovers; its peers are not affected), and
        acknowledges the delivery. :class:`lockstep.SynchronizedAgent` sends it, with the exception
        text, whenever :meth:`~lockstep.SynchronizedAgent.on_delivery` raises. ``reason`` is cut to
        :data:`MAX_DELIVERY_ERROR_CHARS` characters.
        """
        text = reason[:MAX_DELIVERY_ERROR_CHARS]
        reply = await self._request(pb.ClientMessage(delivery_error=pb.DeliveryError(seq=seq, reason=text)))
        self._raise_if_error(reply)

    # ------------------------------------------------------------------------------------------
    # own state and status

    async def update_state(self, delta: Union[Dict[str, Any], str, bytes]) -> int:
        """Change this agent's state with a JSON merge patch (RFC 7386) and return the new version.

        Members of ``delta`` replace those of the state, nested objects merge, and ``None`` deletes::

            await agent.update_state({"confidence": 0.85, "position": {"btc": 2}})
            await agent.update_state({"position": None})

        Raises:
            InvalidArgument: ``delta`` is not a JSON object, or the server refused it.
            ResourceExhausted: the state would exceed the server's size limit.
        """
        text = to_json_text(delta)
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(f"state delta is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidArgument("a state delta must be a JSON object (a merge patch)")
        reply = await self._request(pb.ClientMessage(update_state=pb.UpdateState(delta_json=text)))
        self._raise_if_error(reply)
        if reply.WhichOneof("outcome") != "state_version":
            raise LockstepError(f"unexpected answer to update_state: {reply.WhichOneof('outcome')}")
        version = int(reply.state_version.version)
        if version > self._own_version:
            self._own_state = apply_merge_patch(self._own_state, parsed)
            self._own_version = version
        return version

    # The seed SyncBus spelled it this way.
    update_agent_state = update_state

    @property
    def state(self) -> Dict[str, Any]:
        """This agent's own state as confirmed by the server (a copy)."""
        return copy.deepcopy(self._own_state)

    @property
    def state_version(self) -> int:
        """The version of :attr:`state`."""
        return self._own_version

    async def set_status(self, status: Union[AgentStatus, str]) -> None:
        """Set this agent's status in the registry (``"active"``, ``"idle"``, ``"busy"``, ``"syncing"``, ``"paused"``)."""
        value = AgentStatus.parse(status)
        message = pb.ClientMessage(set_status=pb.SetStatus(status=value.value))  # type: ignore[arg-type]
        reply = await self._request(message)
        self._raise_if_error(reply)

    async def get_state(self, agent_id: Optional[str] = None) -> StateSnapshot:
        """Any agent's whole state and version (this agent's by default), fetched from the server."""
        return await self._client.get_state(agent_id or self.agent_id)

    # ------------------------------------------------------------------------------------------
    # pauses and emergency stops

    def _on_control(self, notice: ControlNotice) -> None:
        kind = notice.kind
        if kind == ControlKind.PAUSED:
            self._own_pause = notice
        elif kind == ControlKind.RESUMED:
            self._own_pause = None
        elif kind == ControlKind.EMERGENCY_STOP:
            self._emergency = notice
        elif kind == ControlKind.RESUMED_ALL:
            self._own_pause = self._emergency = None
        if self.paused:
            self._running.clear()
        else:
            self._running.set()
        log.info("lockstep: agent '%s': %s", self.agent_id, notice)
        for feed in list(self._notice_feeds):
            feed._push(notice)

    @property
    def paused(self) -> bool:
        """True while an operator holds this agent: paused on its own, or by an emergency stop.

        While paused its deliveries and the state changes it watches are held by the server (and
        follow on resume), and :meth:`publish`, :meth:`update_state` and :meth:`sync` are refused with
        :class:`~lockstep.AgentPaused`. It may still read, watch, heartbeat, answer commands and
        leave. The server tells the agent right after registering if it is paused already; this
        property follows its notices, so it may lag the server by the time a message takes.
        """
        return self._own_pause is not None or self._emergency is not None

    @property
    def pause_notice(self) -> Optional[ControlNotice]:
        """The notice that holds this agent (the emergency stop's if there is one), or ``None``."""
        return self._emergency or self._own_pause

    @property
    def emergency_stopped(self) -> bool:
        """True while an emergency stop holds every agent (lifted only by ``resume_all``)."""
        return self._emergency is not None

    async def wait_resumed(self, timeout: Optional[float] = None) -> None:
        """Return at once unless :attr:`paused`; then wait until an operator resumes this agent.

        Raises:
            asyncio.TimeoutError: still paused after ``timeout`` seconds.
            SessionClosed: the agent was closed while paused.
        """

        async def _wait() -> None:
            while self.paused:
                if self._closed:
                    raise SessionClosed(f"agent '{self.agent_id}' was closed while paused")
                await self._running.wait()

        await asyncio.wait_for(_wait(), timeout)

    def control_notices(self) -> "Feed[ControlNotice]":
        """Every :class:`~lockstep.ControlNotice` the server sends this agent from now on::

            async for notice in agent.control_notices():
                print(notice.kind, notice.actor, notice.reason)   # paused, resumed, emergency_stop...

        Each call opens its own feed (close it with ``close()`` or ``async with``), which ends when the
        agent closes. A reader that falls behind keeps the latest 1,000 notices.
        """
        feed: Feed[ControlNotice] = Feed("control notices", maxlen=_NOTICE_BUFFER, on_close=self._drop_notice_feed)
        if self._closed:
            feed._end()
        else:
            self._notice_feeds.append(feed)
        return feed

    def _drop_notice_feed(self, feed: "Feed[Any]") -> None:
        try:
            self._notice_feeds.remove(feed)
        except ValueError:
            pass

    # ------------------------------------------------------------------------------------------
    # request/reply between agents

    # ------------------------------------------------------------------------------------------
    # Collectives (see lockstep.collective)

    async def allreduce(
        self,
        array: Any,
        op: str = "sum",
        *,
        group: Optional[Sequence[str]] = None,
        role: Optional[str] = None,
        replica_group: Optional[str] = None,
        collective_id: Optional[str] = None,
        timeout: Optional[float] = None,
        dtype: Optional[str] = None,
        checksum: Optional[str] = None,
        with_outcome: bool = False,
        shared_memory: bool = False,
    ) -> Any:
        """The element-wise reduction (``op``: sum, mean, min, max, product) of every member's
        ``array``, in rank order; every member gets the same result, of its input's kind (list,
        :class:`array.array` or numpy array). Members are ``group`` (ranks in its order) or every
        live agent with ``role`` (ranked by id). ``collective_id`` defaults to the next round of
        this group (every member must make the same sequence of calls). Raises
        :class:`~lockstep.CollectiveFailed` subclasses naming the member or who is missing.

        ``replica_group`` instead names a replica group: its members, in its ranks. ``checksum``
        presents a checksum of this member's state (:func:`lockstep.state_checksum` of its
        parameters, for example); with ``with_outcome=True`` the answer is a
        :class:`~lockstep.CollectiveOutcome` whose ``diverged`` names the members whose checksum
        differs from the group's published version (or from the majority's).

        ``shared_memory=True`` (every collective method takes it) asks for the same-host
        shared-memory path: arrays and results in /dev/shm instead of the stream, when the server
        offers it (see :mod:`lockstep.collective`)."""
        return await self._collective(
            pb.COLLECTIVE_KIND_ALLREDUCE,
            array,
            op,
            0,
            group,
            role,
            collective_id,
            timeout,
            dtype,
            replica_group=replica_group,
            checksum=checksum,
            with_outcome=with_outcome,
            shared_memory=shared_memory,
        )

    async def broadcast(
        self,
        array: Any,
        root: int = 0,
        *,
        group: Optional[Sequence[str]] = None,
        role: Optional[str] = None,
        collective_id: Optional[str] = None,
        timeout: Optional[float] = None,
        dtype: Optional[str] = None,
        shared_memory: bool = False,
    ) -> Any:
        """Rank ``root``'s array for every member. Every member passes an array of the same length
        and type; only the root's contents are sent."""
        return await self._collective(
            pb.COLLECTIVE_KIND_BROADCAST, array, "sum", root, group, role, collective_id, timeout, dtype,
            shared_memory=shared_memory,
        )

    async def allgather(
        self,
        array: Any,
        *,
        group: Optional[Sequence[str]] = None,
        role: Optional[str] = None,
        collective_id: Optional[str] = None,
        timeout: Optional[float] = None,
        dtype: Optional[str] = None,
        shared_memory: bool = False,
    ) -> Any:
        """Every member's array, concatenated in rank order."""
        return await self._collective(
            pb.COLLECTIVE_KIND_ALLGATHER, array, "sum", 0, group, role, collective_id, timeout, dtype,
            shared_memory=shared_memory,
        )

    async def reduce_scatter(
        self,
        array: Any,
        op: str = "sum",
        *,
        group: Optional[Sequence[str]] = None,
        role: Optional[str] = None,
        collective_id: Optional[str] = None,
        timeout: Optional[float] = None,
        dtype: Optional[str] = None,
        shared_memory: bool = False,
    ) -> Any:
        """This member's block of the reduction: rank r of n gets elements ``[r*L//n, (r+1)*L//n)``."""
        return await self._collective(
            pb.COLLECTIVE_KIND_REDUCE_SCATTER, array, op, 0, group, role, collective_id, timeout, dtype,
            shared_memory=shared_memory,
        )

    async def _collective(
        self,
        kind: int,
        data: Any,
        op: str,
        root: int,
        group: Optional[Sequence[str]],
        role: Optional[str],
        collective_id: Optional[str],
        timeout: Optional[float],
        dtype: Optional[str],
        *,
        replica_group: Optional[str] = None,
        checksum: Optional[str] = None,
        with_outcome: bool = False,
        shared_memory: bool = False,
    ) -> Any:
        name, payload, length, shape = _collective.encode(data, dtype)
        if collective_id is None:
            if replica_group is not None:
                members = "replica " + replica_group
            else:
                members = ",".join(group) if group is not None else "role " + str(role)
            key = f"{kind}:{members}"
            n = self._collective_rounds.get(key, 0) + 1
            self._collective_rounds[key] = n
            # A digest stable across processes (str hashes are salted per process).
            collective_id = f"auto-{zlib.crc32(key.encode()):08x}-{n}"
        h = _collective.header(
            namespace=self.namespace,
            agent_id=self.agent_id,
            resume_token=self.resume_token,
            collective_id=collective_id,
            group=group,
            role=role,
            replica_group=replica_group,
            state_checksum=checksum,
            kind=kind,
            dtype=name,
            op=op,
            root=root,
            length=length,
            timeout=timeout,
        )
        send = kind != pb.COLLECTIVE_KIND_BROADCAST or group is None or (root < len(group) and group[root] == self.agent_id)
        regions = self._shm_regions if shared_memory else None
        raw, diverged, reference = await _collective.run(
            self._client._stub, h, payload, send, _collective.itemsize(name), regions
        )
        result = _collective.decode(name, raw, shape)
        return _group.CollectiveOutcome(result, diverged, reference) if with_outcome else result

    # ------------------------------------------------------------------------------------------
    # Topic history (see lockstep.history)

    async def subscribe(
        self,
        pattern: str,
        *,
        last: Optional[int] = None,
        since_seq: Optional[int] = None,
        since_time_ms: Optional[int] = None,
    ) -> None:
        """Adds ``pattern`` to this agent's interests and replays what the retained topics it matches
        kept — per topic the ``last`` N messages, everything ``since_seq``, or everything published
        ``since_time_ms`` (server clock) — before any live message of those topics, in order, with no
        duplicate and no gap at the seam. Returns once the server took the subscription; the
        messages follow on :meth:`deliveries`, each with its ``topic_seq`` and ``time_ms``. Where
        retention had already dropped what was asked for, :meth:`history_gaps` says which.

        Raises:
            InvalidArgument: a bad pattern (``INVALID_ARGUMENT``).
            ResourceExhausted: past the server's ``limits.max_interests`` (``LIMIT``).
        """
        msg = _history.subscribe_message(pattern, last=last, since_seq=since_seq, since_time_ms=since_time_ms)
        self._raise_if_error(await self._request(msg))
        if pattern not in self._subscriptions:
            self._subscriptions.append(pattern)

    async def unsubscribe(self, pattern: str) -> None:
        """Removes ``pattern`` from this agent's interests (a replay in progress goes on only for the
        topics another interest still matches)."""
        self._raise_if_error(await self._request(pb.ClientMessage(unsubscribe=pb.Unsubscribe(pattern=pattern))))
        if pattern in self._subscriptions:
            self._subscriptions.remove(pattern)

    def history_gaps(self) -> "List[_history.HistoryGap]":
        """The gap notices received since the last call, in the order they came."""
        gaps, self._history_gaps = self._history_gaps, []
        return gaps

    # Replica groups (see lockstep.group)

    async def join_group(self, group_id: str) -> "_group.GroupMembership":
        """Joins replica group ``group_id`` (created by its first join). Ranks are join order;
        joining again keeps the rank. The answer says the members and the current state version
        (``state`` is ``None`` while nothing is published): a late joiner then calls
        :meth:`fetch_group_state`. The group's events are published on
        ``lockstep.groups.<group_id>``: register with that interest to receive them."""
        reply = await self._request(pb.ClientMessage(join_group=pb.JoinGroup(group_id=group_id)))
        self._raise_if_error(reply)
        if reply.WhichOneof("outcome") != "group_membership":
            raise LockstepError(f"join_group: unexpected reply {reply.WhichOneof('outcome')}")
        return _group.GroupMembership.from_proto(reply.group_membership)

    async def leave_group(self, group_id: str, *, forget_state: bool = False) -> None:
        """Leaves replica group ``group_id`` (the members after it move down one rank). A group's
        state outlives its members; with ``forget_state=True`` the last member forgets the group
        and its state (``InvalidArgument`` while other members remain)."""
        leave = pb.LeaveGroup(group_id=group_id, forget_state=forget_state)
        self._raise_if_error(await self._request(pb.ClientMessage(leave_group=leave)))

    async def publish_group_state(self, group_id: str, data: Any) -> "_group.GroupState":
        """Publishes ``data`` (``bytes``, ``bytearray`` or ``memoryview``) as the group's next state
        version; this agent must be a member. Returns that version once it is the current one. The
        bytes go in chunks of 256 KiB beside the session, with their SHA-256, which the server
        checks. A publish that breaks off leaves the previous version current."""
        view = _group.as_view(data)
        header = pb.GroupStateHeader(
            namespace=self.namespace,
            agent_id=self.agent_id,
            resume_token=self.resume_token,
            group_id=group_id,
            size=len(view),
            checksum=_group.checksum(view),
        )
        return await _group.publish(self._client._stub, header, view)

    async def fetch_group_state(self, group_id: str) -> "_group.GroupStateBlob":
        """The group's current state version and its bytes (this agent must be a member), after
        checking they hash to the version's checksum (:class:`~lockstep.GroupStateFailed` with
        reason ``CHECKSUM_MISMATCH`` if not)."""
        request = pb.FetchGroupStateRequest(
            namespace=self.namespace, agent_id=self.agent_id, resume_token=self.resume_token, group_id=group_id
        )
        return await _group.fetch(self._client._stub, request)

    async def request(
        self,
        topic: str,
        payload: Any = b"",
        *,
        timeout: Optional[float] = None,
        content_type: Optional[str] = None,
    ) -> Response:
        """Ask the agents interested in ``topic`` for an answer: exactly one of them (the next in
        turn, never this agent) gets the request, and its answer is returned as a
        :class:`~lockstep.Response` (``payload`` encoded as for :meth:`publish`).

        ``timeout`` is in seconds (``None``: the server's default, 30 s).

        Raises:
            NoResponders: at once, when no other agent can take it (retry later).
            RequestTimeout: the responder did not answer in time (the message names it).
            RequestAborted: the responder left or lost its lease before answering.
            RequestRefused: the responder refused the request.
            InvalidArgument: an empty topic or one with wildcards (checked locally), or a timeout
                over the server's limit.
            PayloadTooLarge: the payload is over the server's announced limit (nothing is sent).
        """
        _check_topic(topic)
        data, ctype = encode_payload(payload, content_type)
        ask = pb.AgentRequest(topic=topic, payload=data, content_type=ctype, timeout_ms=timeout_ms(timeout))
        reply = await self._request(pb.ClientMessage(agent_request=ask))
        self._raise_if_error(reply)
        if reply.WhichOneof("outcome") != "agent_response":
            raise LockstepError(f"unexpected answer to request: {reply.WhichOneof('outcome')}")
        return Response.from_proto(reply.agent_response)

    # ------------------------------------------------------------------------------------------
    # task handoff (see tasks.py)

    async def submit_task(self, type: str, input: Any, **options: Any) -> str:
        """Submits a task; returns its id. ``options``: ``id``, ``context_keys`` (pinned at their
        current versions), ``role``, ``capabilities``, ``priority``, ``timeout_ms``,
        ``max_attempts``, ``depends_on`` (it runs once those are completed, with their outputs);
        see :func:`lockstep.tasks.submit_message`."""
        msg = _tasks.submit_message(type, input, **options)
        reply = await self._tasks.call(pb.ClientMessage(submit_task=msg))
        return str(reply.task_submitted.id)

    def tasks(self, types: Iterable[str] = (), *, max_in_flight: int = 0) -> "_tasks.TaskWork":
        """Asks for work: an async iterator of :class:`~lockstep.Assignment` for tasks of ``types``
        (none: any) this agent may take, at most ``max_in_flight`` held at once (0: the server's
        limit). Asking again replaces the request and ends the previous iterator."""
        return _tasks.TaskWork(self._tasks, pb.TaskWork(types=list(types), max_in_flight=max_in_flight))

    async def claim_task(self, types: Iterable[str] = ()) -> "Optional[_tasks.Assignment]":
        """Claims the best ready task of ``types`` (none: any) this agent can take, if one is
        ready. Past the agent's in-flight limit: ``TASK_IN_FLIGHT_LIMIT``."""
        reply = await self._tasks.call(pb.ClientMessage(claim_task=pb.ClaimTask(types=list(types))))
        claimed = reply.task_claimed
        return _tasks.Assignment(self, claimed.assignment) if claimed.HasField("assignment") else None

    def rounds(self) -> "Feed[_rounds.RoundInput]":
        """The tick round inputs for this agent (kept from the start of the session)::

            async for tick in agent.rounds():
                await tick.answer({"signal": decide(tick.input)})
        """
        return self._rounds.feed

    async def answer_round(self, series: str, round: int, output: Any) -> None:
        """Answers round ``round`` of ``series`` with ``output`` (a JSON object)."""
        msg = pb.RoundAnswer(series=series, round=round, output_json=json.dumps(output))
        await self._tasks.call(pb.ClientMessage(round_answer=msg))

    def task_events(self) -> "Feed[_tasks.TaskEvent]":
        """The events of the tasks this agent submits (from now on; read them)."""
        return self._tasks.events()

    def requests(self) -> "Feed[IncomingRequest]":
        """Other agents' requests for this one to answer (:meth:`request`)::

            async for req in agent.requests():
                await req.respond({"price": 42})

        Answer each :class:`~lockstep.IncomingRequest` once, with ``respond(payload)`` or
        ``refuse(why)``. Until the application calls this, the agent refuses every request it is
        given, so that requesters learn it at once instead of at their timeout. Every call returns
        the same feed while it is open; closing it stops taking requests (those not yet read are
        refused).
        """
        feed = self._request_feed
        if feed is None or feed.closed:
            feed = Feed("requests", on_close=self._requests_closed)
            if self._closed:
                feed._end()
            self._request_feed = feed
        return feed

    def _on_incoming_request(self, msg: Any) -> None:
        request = IncomingRequest.from_proto(msg, _Responder(self._answer_request))
        feed = self._request_feed
        if feed is not None and not feed.closed:
            feed._push(request)
        else:
            self._spawn(self._refuse_request(request, f"agent '{self.agent_id}' does not answer requests"))

    def _requests_closed(self, feed: "Feed[Any]") -> None:
        if self._closed:
            return  # the server fails the requests a departed responder held
        for request in feed._take_all():
            self._spawn(self._refuse_request(request, f"agent '{self.agent_id}' stopped answering requests"))

    async def _refuse_request(self, request: IncomingRequest, why: str) -> None:
        self.requests_refused += 1
        try:
            await request.refuse(why)
        except LockstepError as exc:
            log.debug("lockstep: agent '%s' could not refuse request %d: %s", self.agent_id, request.token, exc)

    async def _answer_request(self, token: int, payload: bytes, content_type: str, error: str) -> None:
        answer = pb.Respond(token=token, payload=payload, content_type=content_type, error=error)
        self._raise_if_error(await self._request(pb.ClientMessage(respond=answer)))

    # ------------------------------------------------------------------------------------------
    # commands from operators

    def commands(self) -> "Feed[Command]":
        """The commands operators send this agent (:meth:`lockstep.Admin.send_command`)::

            async for cmd in agent.commands():
                if cmd.name == "rebalance":
                    await cmd.reply({"moved": 3})
                else:
                    await cmd.fail(f"unknown command {cmd.name!r}")

        Answer each :class:`~lockstep.Command` once, with ``reply(result)`` or ``fail(why)``; the
        operator waits until then or until the command's timeout. Until the application calls this,
        the agent answers every command with an error ("does not handle commands"), so that operators
        learn it at once instead of at their timeout; calling it makes the agent take commands from
        then on. Every call returns the same feed while it is open; closing it stops taking commands
        (those not yet read are answered with an error).
        """
        feed = self._command_feed
        if feed is None or feed.closed:
            feed = Feed("commands", on_close=self._commands_closed)
            if self._closed:
                feed._end()
            self._command_feed = feed
        return feed

    def _on_command(self, msg: Any) -> None:
        command = Command.from_proto(msg, _Responder(self._answer_command))
        feed = self._command_feed
        if feed is not None and not feed.closed:
            feed._push(command)
        else:
            self._spawn(self._refuse_command(command, f"agent '{self.agent_id}' does not handle commands"))

    def _commands_closed(self, feed: "Feed[Any]") -> None:
        if self._closed:
            return  # the server ends the agent's pending commands itself
        for command in feed._take_all():
            self._spawn(self._refuse_command(command, f"agent '{self.agent_id}' stopped taking commands"))

    async def _refuse_command(self, command: Command, why: str) -> None:
        self.commands_refused += 1
        try:
            await command.fail(why)
        except LockstepError as exc:
            log.debug("lockstep: agent '%s' could not refuse command %d: %s", self.agent_id, command.command_id, exc)

    async def _answer_command(self, command_id: int, result_json: Optional[str], error: Optional[str]) -> None:
        result = pb.CommandResult(command_id=command_id)
        if error is not None:
            data = error.encode("utf-8")
            if len(data) > _MAX_COMMAND_ERROR_BYTES:
                error = data[: _MAX_COMMAND_ERROR_BYTES - 3].decode("utf-8", "ignore") + "…"
            result.error = error
        else:
            result.result_json = result_json or "null"
        self._raise_if_error(await self._request(pb.ClientMessage(command_result=result)))

    # ------------------------------------------------------------------------------------------
    # watching others' state

    def watch_state(
        self,
        agent_id: Optional[str] = None,
        *,
        role: Optional[str] = None,
        all: bool = False,
    ) -> "Opening[StateWatch]":
        """Follow the state of one agent, of every agent with a role, or of every agent.

        Returns a :class:`StateWatch`: a local mirror that converges to the watched agents' state,
        and an async iterator of :class:`~lockstep.StateView` as they change. The server first sends
        each watched agent's current state. Gaps in the versions (deltas dropped or coalesced) are
        healed by refetching a snapshot, so the mirror always converges::

            async with agent.watch_state(role="trader") as traders:
                async for view in traders:
                    print(view.agent_id, view.version, view.state)

        Give exactly one of ``agent_id``, ``role`` or ``all=True``.
        """
        given = [x for x in (agent_id, role) if x is not None] + ([True] if all else [])
        if len(given) != 1:
            raise TypeError("watch_state needs exactly one of agent_id=, role= or all=True")
        selector: Selector
        if agent_id is not None:
            selector = ("agent", agent_id)
        elif role is not None:
            selector = ("role", role)
        else:
            selector = ("all", "")

        async def _open() -> StateWatch:
            if self._closed:
                raise SessionClosed(f"agent '{self.agent_id}' is closed")
            watch = StateWatch(self, selector)
            if selector[0] == "role":
                try:
                    for info in await self._client.list_agents(role=selector[1]):
                        self._roles[info.agent_id] = info.role
                except LockstepError:
                    pass
            self._watches.append(watch)
            for aid in list(self._states):
                if self._matches(selector, aid) is True:
                    watch._push(self._view(aid, delta=None))
            try:
                reply = await self._request(pb.ClientMessage(watch_state=_selector_message(selector, pb.WatchState)))
                self._raise_if_error(reply)
            except BaseException:
                self._watches.remove(watch)
                watch._end()
                raise
            return watch

        return Opening(_open)

    def _distinct_selectors(self) -> List[Selector]:
        seen: List[Selector] = []
        for w in self._watches:
            if w.selector not in seen:
                seen.append(w.selector)
        return seen

    async def _unwatch(self, watch: "StateWatch") -> None:
        if watch in self._watches:
            self._watches.remove(watch)
        if self._closed or watch.selector in self._distinct_selectors():
            return
        try:
            reply = await self._request(
                pb.ClientMessage(unwatch_state=_selector_message(watch.selector, pb.UnwatchState))
            )
            self._raise_if_error(reply)
        except (SessionClosed, ConnectionLost):
            pass
        if not self._watches:
            self._states.clear()
            self._versions.clear()

    def _matches(self, selector: Selector, agent_id: str) -> Optional[bool]:
        kind, value = selector
        if kind == "all":
            return True
        if kind == "agent":
            return value == agent_id
        role = self._roles.get(agent_id)
        if role is None:
            return None
        return role == value

    def _view(self, agent_id: str, *, delta: Optional[Dict[str, Any]], resynced: bool = False) -> StateView:
        return StateView(
            agent_id=agent_id,
            version=self._versions.get(agent_id, 0),
            state=copy.deepcopy(self._states.get(agent_id, {})),
            delta=delta,
            resynced=resynced,
        )

    def _emit(self, view: StateView) -> None:
        unknown_role = False
        for w in self._watches:
            match = self._matches(w.selector, view.agent_id)
            if match is None:
                unknown_role = True
            elif match:
                w._push(view)
        if unknown_role and not view.removed:
            self._roles_wanted.add(view.agent_id)
            if self._role_task is None or self._role_task.done():
                self._role_task = self._loop.create_task(self._resolve_roles())
        if view.removed:
            self._roles.pop(view.agent_id, None)

    async def _resolve_roles(self) -> None:
        attempts = 0
        while self._roles_wanted and not self._closed:
            wanted, self._roles_wanted = self._roles_wanted, set()
            try:
                agents = await self._client.list_agents()
            except LockstepError as exc:
                attempts += 1
                if attempts > 5:
                    log.warning("lockstep: cannot learn agents' roles for a role watch: %s", exc)
                    return
                self._roles_wanted |= wanted
                await asyncio.sleep(0.1 * attempts)
                continue
            for info in agents:
                self._roles[info.agent_id] = info.role
            for aid in wanted:
                role = self._roles.get(aid)
                if role is None or aid not in self._versions:
                    continue
                view = self._view(aid, delta=None)
                for w in self._watches:
                    if w.selector == ("role", role):
                        w._push(view)

    def _on_change(self, change: pb.StateChange, *, may_resync: bool = True) -> None:
        aid = change.agent_id
        held = self._resyncing.get(aid)
        if held is not None:
            held.append(change)
            return
        known = self._versions.get(aid)
        if change.removed:
            if known is not None and change.version and change.version < known:
                return
            self._states.pop(aid, None)
            self._versions.pop(aid, None)
            self._emit(StateView(agent_id=aid, version=change.version, state={}, delta=None, removed=True))
            return
        try:
            delta = json.loads(change.delta_json) if change.delta_json else {}
        except ValueError:
            log.warning("lockstep: undecodable state delta for '%s'; refetching its state", aid)
            self._start_resync(aid, [])
            return
        if change.base_version == 0:
            # A snapshot: replace the view with the delta applied to an empty object.
            if known is not None and change.version < known:
                return
            self._states[aid] = apply_merge_patch({}, delta)
            self._versions[aid] = change.version
            self._emit(self._view(aid, delta=delta if isinstance(delta, dict) else None))
            return
        if known is not None and change.base_version == known:
            self._states[aid] = apply_merge_patch(self._states.get(aid, {}), delta)
            self._versions[aid] = change.version
            self._emit(self._view(aid, delta=delta if isinstance(delta, dict) else None))
            return
        if known is not None and change.version <= known:
            return  # already have it (or newer, from a snapshot)
        if not may_resync:
            log.warning(
                "lockstep: dropping a state change of '%s' (%d->%d) that does not follow its snapshot (version %d)",
                aid,
                change.base_version,
                change.version,
                known if known is not None else 0,
            )
            return
        self._start_resync(aid, [change])

    def _start_resync(self, agent_id: str, held: List[pb.StateChange]) -> None:
        self._resyncing[agent_id] = held
        self._spawn(self._resync(agent_id))

    async def _resync(self, agent_id: str) -> None:
        self.resyncs += 1
        # Changes held before the snapshot is asked for are older than it: they may only apply on top of
        # it, never trigger another refetch (which would loop if the server kept sending them).
        triggers = len(self._resyncing.get(agent_id, []))
        snapshot: Optional[StateSnapshot] = None
        gone = False
        for attempt in range(5):
            try:
                snapshot = await self._client.get_state(agent_id)
                break
            except NotFound:
                gone = True
                break
            except LockstepError as exc:
                if attempt == 4:
                    log.warning("lockstep: cannot refetch the state of '%s': %s", agent_id, exc)
                await asyncio.sleep(0.05 * (attempt + 1))
        held = self._resyncing.pop(agent_id, [])
        if gone:
            self._states.pop(agent_id, None)
            self._versions.pop(agent_id, None)
            self._emit(StateView(agent_id=agent_id, version=0, state={}, removed=True, resynced=True))
        elif snapshot is not None and snapshot.version >= self._versions.get(agent_id, 0):
            self._states[agent_id] = snapshot.state
            self._versions[agent_id] = snapshot.version
            self._emit(self._view(agent_id, delta=None, resynced=True))
        for i, change in enumerate(held):
            self._on_change(change, may_resync=i >= triggers)

    # ------------------------------------------------------------------------------------------
    # barriers

    async def sync(
        self,
        sync_id: str,
        participants: Optional[Participants] = None,
        *,
        role: Optional[str] = None,
        timeout: Optional[float] = _DEFAULT,
        payload: Any = b"",
        summary: bool = False,
        quorum: Optional[int] = None,
    ) -> SyncResult:
        """Wait at barrier ``sync_id`` until its participants have all arrived.

        ``participants`` is a collection of agent ids (which must include this agent), or an ``int``
        (any that many agents); or give ``role=`` to wait for every agent registered with that role
        when the point is created. Every waiter gets the same :class:`~lockstep.SyncResult`, with the
        arrival order and what each participant brought in ``payload`` (bytes, text, or JSON)::

            result = await agent.sync("phase1_complete", {"a", "b", "c"}, timeout=30)
            result = await agent.sync("quorum", 3)
            result = await agent.sync("traders_ready", role="trader", payload={"pnl": 1.5})
            result = await agent.sync("scan", role="scanner", quorum=2)   # 2 of the role suffice

        Args:
            timeout: seconds to wait; ``None`` for the server's default (the client's
                ``sync_timeout`` when not given).
            summary: be released with a summary (``count``, ``digest`` and this agent's
                ``position``) instead of every arrival and payload; a release of N such waiters
                costs the server O(N) bytes instead of O(N²).
            quorum: k of n over a set or a role: the point is released once ``quorum`` of them
                have arrived, and the result's ``late`` names the others; a late participant that
                arrives afterwards gets the same result at once (its ``position`` is ``count``).
                Every arrival must give the same quorum.

        Raises:
            SyncTimeout: the deadline passed; ``.missing`` names who never arrived.
            SyncAborted: a required participant was lost or left; ``.missing`` names it.
            SyncConflict: the point already exists with other participants.
            InvalidArgument: bad input, e.g. duplicate ids, or this agent not among them.
        """
        if timeout is _DEFAULT:
            timeout = self._client.sync_timeout
        arrive = pb.SyncArrive(sync_id=sync_id, timeout_ms=timeout_ms(timeout), summary=summary)
        if quorum is not None:
            if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
                raise InvalidArgument(f"quorum must be a whole number of at least 1, got {quorum!r}")
            arrive.quorum = quorum
        data, _ = encode_payload(payload)
        arrive.payload = data
        if role is not None:
            if participants is not None:
                raise TypeError("give either participants or role=, not both")
            arrive.role = role
        elif participants is None:
            raise TypeError("name the participants: a collection of agent ids, a count, or role=")
        elif isinstance(participants, bool):
            raise TypeError("participants must be agent ids or a count, not a bool")
        elif isinstance(participants, int):
            arrive.count = participants
        elif isinstance(participants, (str, bytes)):
            raise TypeError("participants must be a collection of agent ids (a set or list), not one string")
        else:
            arrive.agents.ids.extend(list(participants))
        # The server answers at the deadline; the local guard only catches a server that never does.
        guard = None if not timeout else timeout + 5.0 + 3.0 * self.registration.heartbeat_interval_ms / 1000.0
        try:
            # A connection lost while waiting does not fail the arrival: it is sent again on the
            # resumed session, where the server re-attaches it (or answers with the outcome).
            reply = await self._request(pb.ClientMessage(sync=arrive), deadline=guard, resend=True)
        except asyncio.TimeoutError:
            from .errors import SyncTimeout

            raise SyncTimeout(
                f"no answer from the server for sync point '{sync_id}' {guard:.1f}s after arriving",
                sync_id=sync_id,
            ) from None
        self._raise_if_error(reply, sync=True)
        if reply.WhichOneof("outcome") != "sync_result":
            raise LockstepError(f"unexpected answer to sync: {reply.WhichOneof('outcome')}")
        return SyncResult.from_proto(reply.sync_result, self.agent_id)

    async def vote(
        self,
        vote_id: str,
        question: str,
        participants: Optional[Participants] = None,
        *,
        role: Optional[str] = None,
        options: Optional[Iterable[str]] = None,
        key_field: str = "",
        policy: str = "plurality",
        supermajority: Tuple[int, int] = (2, 3),
        weight: str = "equal",
        weight_field: str = "",
        quorum_ballots: int = 0,
        quorum_weight: float = 0.0,
        veto_roles: Iterable[str] = (),
        tie_breaker_role: str = "",
        topic: str = "",
        timeout: Optional[float] = _DEFAULT,
        wait: bool = True,
    ) -> Optional[VoteOutcome]:
        """Open vote ``vote_id`` and (with ``wait``) wait for its :class:`~lockstep.VoteOutcome`.

        ``participants`` (agent ids or a count) or ``role=`` name who votes, as for :meth:`sync`.
        Ballots choose one of ``options``, or, with no options, are JSON objects grouped by their
        field ``key_field``. ``policy`` is ``plurality``, ``majority``, ``supermajority`` (at least
        ``supermajority = (k, n)`` of the weight cast) or ``unanimity``; ``weight`` is ``equal``,
        ``metadata`` (the voter's metadata field ``weight_field``), ``confidence`` or ``health``.
        Below ``quorum_ballots`` ballots or ``quorum_weight`` weight, a veto from one of
        ``veto_roles``, or a tie (settled by the first voter of ``tie_breaker_role`` if given):
        no decision. The outcome is published once on ``topic`` when given::

            outcome = await desk.vote("trade-1", "what now?", role="strategy",
                                      options=["buy", "sell"], weight="metadata",
                                      weight_field="stake", topic="trades.directive")

        With ``wait=False`` it returns ``None`` once the vote is open.

        Raises:
            InvalidArgument: a bad description (no options and no key field, a bad policy...).
            FailedPrecondition: ``VOTE_EXISTS``, the id is taken by another vote.
        """
        if timeout is _DEFAULT:
            timeout = self._client.sync_timeout
        policies = {"plurality": 0, "majority": 1, "supermajority": 2, "unanimity": 3}
        weights = {"equal": 0, "metadata": 1, "confidence": 2, "health": 3}
        if policy not in policies:
            raise InvalidArgument(f"unknown policy '{policy}': use one of {', '.join(policies)}")
        if weight not in weights:
            raise InvalidArgument(f"unknown weight '{weight}': use one of {', '.join(weights)}")
        msg = pb.OpenVote(
            vote_id=vote_id,
            question=question,
            timeout_ms=timeout_ms(timeout),
            policy=policies[policy],
            supermajority_num=supermajority[0],
            supermajority_den=supermajority[1],
            options=list(options or ()),
            key_field=key_field,
            weight=weights[weight],
            weight_field=weight_field,
            quorum_ballots=quorum_ballots,
            quorum_weight=quorum_weight,
            veto_roles=list(veto_roles),
            tie_breaker_role=tie_breaker_role,
            topic=topic,
            wait=wait,
        )
        if role is not None:
            if participants is not None:
                raise TypeError("give either participants or role=, not both")
            msg.role = role
        elif participants is None:
            raise TypeError("name the voters: a collection of agent ids, a count, or role=")
        elif isinstance(participants, bool) or isinstance(participants, (str, bytes)):
            raise TypeError("participants must be a collection of agent ids or a count")
        elif isinstance(participants, int):
            msg.count = participants
        else:
            msg.agents.ids.extend(list(participants))
        # Resent after a reconnect: the server re-attaches the same opening (or answers with the
        # outcome).
        reply = await self._request(pb.ClientMessage(open_vote=msg), deadline=self._vote_guard(timeout), resend=True)
        self._raise_if_error(reply)
        if reply.WhichOneof("outcome") == "vote_outcome":
            return VoteOutcome.from_proto(reply.vote_outcome)
        return None

    async def cast(
        self,
        vote_id: str,
        option: Optional[str] = None,
        *,
        recommendation: Any = None,
        confidence: Optional[float] = None,
        veto: bool = False,
        timeout: Optional[float] = _DEFAULT,
    ) -> VoteOutcome:
        """Cast a ballot in ``vote_id`` — one of its options, or a ``recommendation`` (a dict
        carrying the vote's key field) — and wait for the outcome, the same for every voter.

        Raises:
            FailedPrecondition: ``NOT_A_VOTER``, ``DOUBLE_BALLOT``, ``VOTE_CLOSED``, ``VETO_NOT_ALLOWED``
                (see ``.reason``).
            InvalidArgument: ``UNKNOWN_OPTION``, ``BAD_WEIGHT``, ``BAD_CONFIDENCE``, ``BAD_BALLOT``.
            NotFound: ``UNKNOWN_VOTE``.
        """
        if (option is None) == (recommendation is None):
            raise TypeError("give exactly one of option or recommendation=")
        ballot = pb.CastBallot(vote_id=vote_id, veto=veto)
        if option is not None:
            ballot.option = option
        else:
            ballot.recommendation_json = to_json_text(recommendation)
        if confidence is not None:
            ballot.confidence = confidence
        return await self._cast(ballot, timeout)

    async def abstain(self, vote_id: str, reason: str, *, veto: bool = False, timeout: Optional[float] = _DEFAULT) -> VoteOutcome:
        """Abstain in ``vote_id``, saying why, and wait for the outcome."""
        return await self._cast(pb.CastBallot(vote_id=vote_id, abstain_reason=reason, veto=veto), timeout)

    def _vote_guard(self, timeout: Optional[float]) -> Optional[float]:
        # The server decides at the deadline; the local guard only catches a server that never does.
        return None if not timeout else timeout + 5.0 + 3.0 * self.registration.heartbeat_interval_ms / 1000.0

    async def _cast(self, ballot: pb.CastBallot, timeout: Optional[float]) -> VoteOutcome:
        if timeout is _DEFAULT:
            timeout = self._client.sync_timeout
        # Resent after a reconnect: the server takes the same ballot again without counting it twice.
        reply = await self._request(pb.ClientMessage(cast_ballot=ballot), deadline=self._vote_guard(timeout), resend=True)
        self._raise_if_error(reply)
        if reply.WhichOneof("outcome") != "vote_outcome":
            raise LockstepError(f"unexpected answer to a ballot: {reply.WhichOneof('outcome')}")
        return VoteOutcome.from_proto(reply.vote_outcome)

    async def sync_with_agents(
        self,
        sync_id: str,
        agents: Iterable[str],
        timeout: Optional[float] = _DEFAULT,
        payload: Any = b"",
    ) -> SyncResult:
        """The seed API's barrier: wait at ``sync_id`` for every agent in ``agents``.

        Like :meth:`sync` with an explicit set, except that this agent is added to the set if it is
        not in it already. Returns a (truthy) :class:`~lockstep.SyncResult`; failures raise
        :class:`~lockstep.SyncTimeout` / :class:`~lockstep.SyncFailed` rather than returning False.
        """
        ids = list(dict.fromkeys(agents))
        if self.agent_id not in ids:
            ids.append(self.agent_id)
        return await self.sync(sync_id, ids, timeout=timeout, payload=payload)

    # ------------------------------------------------------------------------------------------
    # closing

    async def close(self, timeout: float = 5.0) -> None:
        """Deregister the agent and end its session. Idempotent.

        Outstanding requests fail with :class:`~lockstep.SessionClosed`; delivery iterators and
        state watches end.
        """
        if self._closed:
            if self._runner is not None and not self._runner.done():
                await asyncio.wait({self._runner}, timeout=timeout)
            return
        if self._closing:
            if self._runner is not None:
                await asyncio.wait({self._runner}, timeout=timeout)
            return
        self._closing = True
        runner = self._runner
        if self._connected.is_set():
            await self._flush_ack_closing()
            try:
                await self._send(pb.ClientMessage(deregister=pb.Deregister()))
                async with self._write_lock:
                    await self._call.done_writing()
            except (LockstepError, grpc.RpcError, asyncio.InvalidStateError):
                pass
        if runner is not None and not runner.done():
            if not self._connected.is_set():
                runner.cancel()
            done, _ = await asyncio.wait({runner}, timeout=timeout)
            if not done:
                self._call.cancel()
                runner.cancel()
                await asyncio.wait({runner}, timeout=1.0)
        self._finish(None)

    # The seed registry's name for leaving.
    deregister = close

    async def _flush_ack_closing(self) -> None:
        upto = self._consumed_seq
        if upto > self._acked_seq:
            self._acked_seq = upto
            try:
                await self._send(pb.ClientMessage(ack=pb.Ack(up_to_seq=upto)))
            except LockstepError:
                pass

    async def __aenter__(self) -> "Agent":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------
    # fault injection for tests and drills

    def _suspend_heartbeats(self) -> None:
        """Stop sending heartbeats but keep the stream open: the server will declare the agent lost.

        Used to rehearse a hung agent. Also stops automatic resumption.
        """
        self._heartbeats_suspended = True
        self._reconnect = False

    def _abort(self) -> None:
        """Break the stream without deregistering, as a crashed process would."""
        self._reconnect = False
        if self._call is not None:
            self._call.cancel()


def _check_topic(topic: str) -> None:
    """Refuses an empty topic or one with wildcards (which belong in interest patterns)."""
    if not topic:
        raise InvalidArgument("topic must not be empty")
    if "*" in topic or ">" in topic:
        raise InvalidArgument(
            f"topic '{topic}' contains a wildcard; wildcards belong in interest patterns, not in published topics"
        )


class Feed(Generic[T]):
    """Items the server sends an agent, in order: an async iterator (also an async context manager
    that closes it). :meth:`lockstep.Agent.commands` and :meth:`lockstep.Agent.control_notices`
    return one. Iteration ends when the feed or its agent is closed.
    """

    def __init__(
        self,
        what: str,
        *,
        maxlen: Optional[int] = None,
        on_close: Optional[Callable[["Feed[Any]"], None]] = None,
    ) -> None:
        self._what = what
        self._items: Deque[T] = collections.deque(maxlen=maxlen)
        self._event = asyncio.Event()
        self._ended = False
        self._on_close = on_close

    def _push(self, item: T) -> None:
        self._items.append(item)
        self._event.set()

    def _end(self) -> None:
        self._ended = True
        self._event.set()

    def _take_all(self) -> List[T]:
        items = list(self._items)
        self._items.clear()
        return items

    @property
    def closed(self) -> bool:
        """True once the feed (or its agent) was closed."""
        return self._ended

    @property
    def pending(self) -> int:
        """Items received and not read yet."""
        return len(self._items)

    def __aiter__(self) -> "Feed[T]":
        return self

    async def __anext__(self) -> T:
        while True:
            if self._items:
                return self._items.popleft()
            if self._ended:
                raise StopAsyncIteration
            self._event.clear()
            await self._event.wait()

    async def next(self, timeout: Optional[float] = None) -> T:
        """The next item (``asyncio.TimeoutError`` after ``timeout`` seconds; ``SessionClosed`` once
        closed and empty)."""

        async def _next() -> T:
            try:
                return await self.__anext__()
            except StopAsyncIteration:
                raise SessionClosed(f"the {self._what} feed is closed") from None

        return await asyncio.wait_for(_next(), timeout)

    def close(self) -> None:
        """Stop receiving: the iteration ends."""
        if self._ended and self._on_close is None:
            return
        self._end()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    async def __aenter__(self) -> "Feed[T]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class StateWatch:
    """An open state watch: a converging local mirror of the watched agents' state.

    Iterate it for :class:`~lockstep.StateView` objects as the state changes; when the reader falls
    behind, consecutive changes of one agent are coalesced into its latest view (``delta`` is then
    ``None``). Read the mirror any time with :attr:`states`, :meth:`get` and :meth:`version`, or wait
    for a condition with :meth:`wait_until`. Close it (or leave its ``async with`` block) to stop
    watching.
    """

    def __init__(self, agent: Agent, selector: Selector) -> None:
        self._agent = agent
        self.selector: Selector = selector
        """What is watched: ``("agent", id)``, ``("role", role)`` or ``("all", "")``."""
        self._views: Dict[str, StateView] = {}
        self._unread: "collections.OrderedDict[str, StateView]" = collections.OrderedDict()
        self._event = asyncio.Event()
        self._changed = asyncio.Event()
        self._ended = False

    def _push(self, view: StateView) -> None:
        if view.removed:
            self._views.pop(view.agent_id, None)
        else:
            self._views[view.agent_id] = view
        previous = self._unread.pop(view.agent_id, None)
        if previous is not None and not view.removed:
            view = replace(view, delta=None)
        self._unread[view.agent_id] = view
        self._event.set()
        self._changed.set()

    def _end(self) -> None:
        self._ended = True
        self._event.set()
        self._changed.set()

    @property
    def closed(self) -> bool:
        """True once the watch (or its agent) was closed."""
        return self._ended

    def __aiter__(self) -> AsyncIterator[StateView]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StateView]:
        while True:
            if self._unread:
                _, view = self._unread.popitem(last=False)
                yield view
                continue
            if self._ended:
                return
            self._event.clear()
            await self._event.wait()

    async def next(self, timeout: Optional[float] = None) -> StateView:
        """The next view (``asyncio.TimeoutError`` after ``timeout`` seconds, ``SessionClosed`` once closed)."""

        async def _next() -> StateView:
            while True:
                if self._unread:
                    return self._unread.popitem(last=False)[1]
                if self._ended:
                    raise SessionClosed("the state watch is closed")
                self._event.clear()
                await self._event.wait()

        return await asyncio.wait_for(_next(), timeout)

    @property
    def states(self) -> Dict[str, Dict[str, Any]]:
        """``{agent_id: state}`` for every watched agent currently known (copies)."""
        return {aid: copy.deepcopy(v.state) for aid, v in self._views.items()}

    @property
    def versions(self) -> Dict[str, int]:
        """``{agent_id: version}`` for every watched agent currently known."""
        return {aid: v.version for aid, v in self._views.items()}

    def get(self, agent_id: str) -> Optional[Dict[str, Any]]:
        """One watched agent's state (a copy), or ``None`` if unknown."""
        view = self._views.get(agent_id)
        return copy.deepcopy(view.state) if view is not None else None

    def version(self, agent_id: str) -> int:
        """One watched agent's state version (0 if unknown)."""
        view = self._views.get(agent_id)
        return view.version if view is not None else 0

    async def wait_until(
        self,
        predicate: Callable[[Dict[str, Dict[str, Any]]], bool],
        timeout: Optional[float] = None,
    ) -> Dict[str, Dict[str, Any]]:
        """Wait until ``predicate(states)`` is true and return those states.

        Raises:
            asyncio.TimeoutError: not true within ``timeout`` seconds.
            SessionClosed: the watch was closed first.
        """

        async def _wait() -> Dict[str, Dict[str, Any]]:
            while True:
                states = self.states
                if predicate(states):
                    return states
                if self._ended:
                    raise SessionClosed("the state watch is closed")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout)

    async def wait_for_version(self, agent_id: str, version: int, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Wait until ``agent_id``'s state is at ``version`` or later, and return it."""
        states = await self.wait_until(lambda _: self.version(agent_id) >= version, timeout)
        return states.get(agent_id, {})

    async def close(self) -> None:
        """Stop watching (tells the server unless another open watch has the same target)."""
        if self._ended and self not in self._agent._watches:
            return
        self._end()
        await self._agent._unwatch(self)

    async def __aenter__(self) -> "StateWatch":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
