"""A base class for long-running agents, in the style of the seed's ``SynchronizedAgent``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._util import Opening, default_address
from .agent import Agent, Participants, StateWatch
from .client import DEFAULT_ROLE, Client, connect
from .errors import LockstepError
from .models import AgentStatus, Delivery, StateSnapshot, StateView, SyncResult

__all__ = ["SynchronizedAgent", "AgentBase", "Command"]

log = logging.getLogger("lockstep")

_DEFAULT: Any = object()


@dataclass(frozen=True)
class Command:
    """A command for an agent: its name, parameters, and who sent it (if known)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    sender: str = ""


class SynchronizedAgent:
    """Base class for an agent that runs until stopped, reacting to deliveries, state and commands.

    Subclass it and override the hooks you need::

        class Scanner(lockstep.SynchronizedAgent):
            interests = ["market.>"]

            async def on_delivery(self, delivery):
                await self.update_state({"last_tick": delivery.json()})

            async def work(self):
                await asyncio.sleep(1.0)
                return await self.sync_with_agents("work_complete", {"scanner", "trader"})

        result = await Scanner("scanner", "127.0.0.1:7600").run()

    ``run()`` connects (when given an address rather than a :class:`~lockstep.Client`), registers,
    starts feeding :meth:`on_delivery` and :meth:`on_state`, calls :meth:`on_start`, then
    :meth:`work`; when ``work`` returns (or :meth:`stop` is called) it calls :meth:`on_stop`,
    deregisters, and returns what ``work`` returned. The default ``work`` just waits for
    :meth:`stop`, so an agent that only reacts to deliveries needs no ``work`` at all.

    Commands: :meth:`handle_command` handles ``pause`` (deliveries wait, status ``paused``),
    ``resume`` and ``emergency_stop`` (pause and stop) itself, then passes every command to
    :meth:`on_command`. lockstep's v1 protocol carries no commands from the server yet; until it
    does, commands reach an agent through :meth:`handle_command` in its own process.

    Class attributes ``role``, ``capabilities``, ``interests``, ``metadata`` and ``watch`` give
    defaults that the constructor's keywords override. ``watch`` is ``"all"``,
    ``{"role": "x"}`` or ``{"agent_id": "y"}``: whose state changes reach :meth:`on_state`.
    """

    role: str = ""
    capabilities: Sequence[str] = ()
    interests: Sequence[str] = ()
    metadata: Mapping[str, str] = {}
    watch: Union[str, Mapping[str, str], None] = None

    def __init__(
        self,
        agent_id: str,
        connection: Union[Client, str, None] = None,
        *,
        role: Optional[str] = None,
        capabilities: Optional[Iterable[str]] = None,
        interests: Optional[Iterable[str]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        watch: Union[str, Mapping[str, str], None] = _DEFAULT,
    ) -> None:
        self.agent_id = agent_id
        self._connection = connection
        if role is not None:
            self.role = role
        if capabilities is not None:
            self.capabilities = tuple(capabilities)
        if interests is not None:
            self.interests = tuple(interests)
        if metadata is not None:
            self.metadata = dict(metadata)
        if watch is not _DEFAULT:
            self.watch = watch
        self.paused = False
        """True while paused (``pause`` or ``emergency_stop``): :meth:`on_delivery` is not called."""
        self.stopped = False
        """True once :meth:`stop` was called (or ``emergency_stop`` received)."""
        self.handler_errors = 0
        """How many times a hook raised; the agent logs it and goes on."""
        self.client: Optional[Client] = None
        self.agent: Optional[Agent] = None
        self.state_watch: Optional[StateWatch] = None
        self._own_client = False
        self._tasks: List["asyncio.Task[None]"] = []
        self._stop_event: Optional[asyncio.Event] = None
        self._resume_event: Optional[asyncio.Event] = None

    @property
    def name(self) -> str:
        """The agent id (the seed called it ``name``)."""
        return self.agent_id

    # ------------------------------------------------------------------------------------------
    # hooks

    async def on_start(self) -> None:
        """Called once registered, before :meth:`work`."""

    async def work(self) -> Any:
        """The agent's main job; its return value is what :meth:`run` returns. Default: wait for :meth:`stop`."""
        assert self._stop_event is not None
        await self._stop_event.wait()
        return None

    async def on_delivery(self, delivery: Delivery) -> None:
        """Called for each message routed to this agent (not while paused)."""

    async def on_state(self, view: StateView) -> None:
        """Called for each change of a watched agent's state (see the ``watch`` attribute)."""

    async def on_command(self, command: Command) -> Any:
        """Called for every command after the built-in handling; its return value is the command's result."""
        return None

    async def on_stop(self) -> None:
        """Called when the agent stops, before it deregisters."""

    # ------------------------------------------------------------------------------------------
    # driving

    async def start(self) -> None:
        """Connect if needed, register, and start feeding the hooks. :meth:`run` calls it."""
        if self.agent is not None:
            return
        self._stop_event = asyncio.Event()
        self._resume_event = asyncio.Event()
        self._resume_event.set()
        if isinstance(self._connection, Client):
            self.client = self._connection
        else:
            self.client = await connect(self._connection or default_address())
            self._own_client = True
        try:
            self.agent = await self.client.register(
                self.agent_id,
                role=self.role or DEFAULT_ROLE,
                capabilities=list(self.capabilities),
                interests=list(self.interests),
                metadata=dict(self.metadata),
            )
            if self.watch is not None:
                self.state_watch = await self._open_watch(self.watch)
        except BaseException:
            await self._teardown()
            raise
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._delivery_loop()))
        if self.state_watch is not None:
            self._tasks.append(loop.create_task(self._state_loop(self.state_watch)))
        await self.on_start()

    def _open_watch(self, spec: Union[str, Mapping[str, str]]) -> "Opening[StateWatch]":
        assert self.agent is not None
        if spec == "all":
            return self.agent.watch_state(all=True)
        if isinstance(spec, Mapping):
            if "role" in spec:
                return self.agent.watch_state(role=spec["role"])
            if "agent_id" in spec:
                return self.agent.watch_state(agent_id=spec["agent_id"])
        raise ValueError(f"watch must be 'all', {{'role': ...}} or {{'agent_id': ...}}, not {spec!r}")

    async def run(self) -> Any:
        """Start, run :meth:`work`, stop; returns what ``work`` returned."""
        await self.start()
        try:
            return await self.work()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop feeding the hooks, call :meth:`on_stop`, deregister (and close an own connection)."""
        if self.stopped and self.agent is None:
            return
        self.stopped = True
        if self._stop_event is not None:
            self._stop_event.set()
        if self._resume_event is not None:
            self._resume_event.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self.agent is not None and not self.agent.closed:
            try:
                await self.on_stop()
            except Exception:
                self.handler_errors += 1
                log.exception("lockstep: %s.on_stop failed", self.agent_id)
        await self._teardown()

    async def _teardown(self) -> None:
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        others = [t for t in tasks if t is not current]
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        if self.agent is not None:
            await self.agent.close()
        self.agent = None
        if self._own_client and self.client is not None:
            await self.client.close()
            self.client = None

    async def __aenter__(self) -> "SynchronizedAgent":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` is called or an emergency stop arrives."""
        assert self._stop_event is not None, "start() the agent first"
        await self._stop_event.wait()

    async def wait_if_paused(self) -> None:
        """Return at once unless paused; then wait until resumed (or stopped)."""
        if self._resume_event is not None:
            await self._resume_event.wait()

    async def _delivery_loop(self) -> None:
        assert self.agent is not None
        async for delivery in self.agent.deliveries():
            await self.wait_if_paused()
            if self.stopped:
                return
            try:
                await self.on_delivery(delivery)
            except Exception:
                self.handler_errors += 1
                log.exception("lockstep: %s.on_delivery failed on %s #%d", self.agent_id, delivery.topic, delivery.seq)

    async def _state_loop(self, watch: StateWatch) -> None:
        async for view in watch:
            if self.stopped:
                return
            try:
                await self.on_state(view)
            except Exception:
                self.handler_errors += 1
                log.exception("lockstep: %s.on_state failed for %s", self.agent_id, view.agent_id)

    # ------------------------------------------------------------------------------------------
    # commands

    async def handle_command(self, name: str, params: Optional[Mapping[str, Any]] = None, *, sender: str = "") -> Any:
        """Apply a command: ``pause``, ``resume`` and ``emergency_stop`` are built in; every command
        (built-in or not) then goes to :meth:`on_command`, whose result is returned."""
        command = Command(name=name, params=dict(params or {}), sender=sender)
        if name in ("pause", "pause_agent"):
            await self._pause()
        elif name in ("resume", "resume_agent"):
            self.paused = False
            if self._resume_event is not None:
                self._resume_event.set()
            await self._try_status(AgentStatus.ACTIVE)
        elif name == "emergency_stop":
            await self._pause()
            self.stopped = True
            if self._stop_event is not None:
                self._stop_event.set()
        return await self.on_command(command)

    async def _pause(self) -> None:
        self.paused = True
        if self._resume_event is not None:
            self._resume_event.clear()
        await self._try_status(AgentStatus.PAUSED)

    async def _try_status(self, status: AgentStatus) -> None:
        if self.agent is None or self.agent.closed:
            return
        try:
            await self.agent.set_status(status)
        except LockstepError as exc:
            log.warning("lockstep: %s could not set its status to %s: %s", self.agent_id, status, exc)

    # ------------------------------------------------------------------------------------------
    # what an agent does (delegated to its session)

    def _session(self) -> Agent:
        if self.agent is None:
            raise LockstepError(f"agent '{self.agent_id}' is not running; call start() or run() first")
        return self.agent

    async def publish(self, topic: str, payload: Any = b"", *, content_type: Optional[str] = None) -> None:
        """See :meth:`lockstep.Agent.publish`."""
        await self._session().publish(topic, payload, content_type=content_type)

    async def update_state(self, delta: Union[Dict[str, Any], str]) -> int:
        """See :meth:`lockstep.Agent.update_state`."""
        return await self._session().update_state(delta)

    async def set_status(self, status: Union[AgentStatus, str]) -> None:
        """See :meth:`lockstep.Agent.set_status`."""
        await self._session().set_status(status)

    async def get_state(self, agent_id: Optional[str] = None) -> StateSnapshot:
        """See :meth:`lockstep.Agent.get_state`."""
        return await self._session().get_state(agent_id)

    async def sync(
        self,
        sync_id: str,
        participants: Optional[Participants] = None,
        *,
        role: Optional[str] = None,
        timeout: Optional[float] = _DEFAULT,
        payload: Any = b"",
    ) -> SyncResult:
        """See :meth:`lockstep.Agent.sync`."""
        session = self._session()
        if timeout is _DEFAULT:
            return await session.sync(sync_id, participants, role=role, payload=payload)
        return await session.sync(sync_id, participants, role=role, timeout=timeout, payload=payload)

    async def sync_with_agents(
        self,
        sync_id: str,
        agents: Iterable[str],
        timeout: Optional[float] = _DEFAULT,
        payload: Any = b"",
    ) -> SyncResult:
        """See :meth:`lockstep.Agent.sync_with_agents`."""
        session = self._session()
        if timeout is _DEFAULT:
            return await session.sync_with_agents(sync_id, agents, payload=payload)
        return await session.sync_with_agents(sync_id, agents, timeout=timeout, payload=payload)


#: Another name for :class:`SynchronizedAgent`.
AgentBase = SynchronizedAgent
