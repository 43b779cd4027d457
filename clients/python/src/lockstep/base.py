"""A base class for long-running agents, in the style of the seed's ``SynchronizedAgent``."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._util import Opening, default_address
from .agent import Agent, Feed, Participants, StateWatch
from .client import DEFAULT_ROLE, Client, connect
from .errors import InvalidArgument, LockstepError, SessionClosed
from .models import AgentStatus, Command, ControlKind, ControlNotice, Delivery, StateSnapshot, StateView, SyncResult

__all__ = ["SynchronizedAgent", "AgentBase", "Command"]

log = logging.getLogger("lockstep")

_DEFAULT: Any = object()

#: Commands :meth:`SynchronizedAgent.handle_command` carries out itself before :meth:`on_command`.
BUILT_IN_COMMANDS = ("pause", "pause_agent", "resume", "resume_agent", "emergency_stop")

#: How long :meth:`SynchronizedAgent.stop` lets a command being handled finish and be answered.
_COMMAND_DRAIN_SECONDS = 5.0


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
    starts feeding :meth:`on_delivery`, :meth:`on_state` and :meth:`on_command`, calls
    :meth:`on_start`, then :meth:`work`; when ``work`` returns (or :meth:`stop` is called) it calls
    :meth:`on_stop`, deregisters, and returns what ``work`` returned. The default ``work`` just waits
    for :meth:`stop`, so an agent that only reacts needs no ``work`` at all.

    Operators: when the server pauses the agent (on its own or by an emergency stop),
    :attr:`is_paused` turns true, :meth:`on_pause` is called and deliveries wait; on resume,
    :meth:`on_resume`, and they go on. Commands sent with :meth:`lockstep.Admin.send_command` go to
    :meth:`handle_command`: ``pause`` (deliveries wait, status ``paused``), ``resume`` and
    ``emergency_stop`` (pause and stop) are built in; every command then goes to
    :meth:`on_command`, whose return value is the operator's result and whose exception is the
    operator's :class:`~lockstep.CommandFailed`. Commands are handled one at a time, in order.

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
        self._local_pause = False
        self.stopped = False
        """True once :meth:`stop` was called (or ``emergency_stop`` received)."""
        self.handler_errors = 0
        """How many times a hook raised; the agent logs it and goes on (a raising
        :meth:`on_delivery` is also reported to the server as a ``delivery_error``, a failure for
        this agent's circuit breaker)."""
        self.client: Optional[Client] = None
        self.agent: Optional[Agent] = None
        self.state_watch: Optional[StateWatch] = None
        self._own_client = False
        self._tasks: List["asyncio.Task[None]"] = []
        self._command_task: Optional["asyncio.Task[None]"] = None
        self._handling_command = False
        self._stop_event: Optional[asyncio.Event] = None
        self._resume_event: Optional[asyncio.Event] = None
        self._on_command_form: Optional[str] = None

    @property
    def paused(self) -> bool:
        """True while paused: by an operator through the server (on its own or by an emergency
        stop), or by a ``pause`` command. :meth:`on_delivery` is not called meanwhile."""
        return self._local_pause or (self.agent is not None and self.agent.paused)

    @property
    def is_paused(self) -> bool:
        """Same as :attr:`paused`."""
        return self.paused

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
        """Called for each message routed to this agent (not while paused). If it raises, the
        exception text goes to the server as a ``delivery_error``: a failure for this agent's
        circuit breaker (see :meth:`lockstep.Agent.report_delivery_error`)."""

    async def on_state(self, view: StateView) -> None:
        """Called for each change of a watched agent's state (see the ``watch`` attribute)."""

    async def on_command(self, name: str, params: Mapping[str, Any]) -> Any:
        """Called for every command after the built-in handling. Its return value (any JSON value) is
        the command's result; an exception fails the command, its text being what the operator gets.

        The default accepts the built-in commands (result ``None``) and fails every other. A subclass
        written for lockstep 0.1, whose ``on_command(self, command)`` takes one :class:`~lockstep.Command`,
        is called that way.
        """
        if name in BUILT_IN_COMMANDS:
            return None
        raise NotImplementedError(f"agent '{self.agent_id}' does not handle the command '{name}'")

    async def on_pause(self, notice: ControlNotice) -> None:
        """Called when an operator pauses this agent or stops every agent (``notice.kind`` is
        ``PAUSED`` or ``EMERGENCY_STOP``; ``notice.reason`` says why). Deliveries wait until resumed."""

    async def on_resume(self, notice: ControlNotice) -> None:
        """Called when an operator resumes this agent (``RESUMED``) or every agent (``RESUMED_ALL``)."""

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
            # Taken before anything else can run: no command or notice is missed (or refused).
            commands = self.agent.commands()
            notices = self.agent.control_notices()
            if self.watch is not None:
                self.state_watch = await self._open_watch(self.watch)
        except BaseException:
            await self._teardown()
            raise
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._delivery_loop()))
        if self.state_watch is not None:
            self._tasks.append(loop.create_task(self._state_loop(self.state_watch)))
        self._tasks.append(loop.create_task(self._control_loop(notices)))
        self._command_task = loop.create_task(self._command_loop(commands))
        self._tasks.append(self._command_task)
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
        command_task = self._command_task
        if self._handling_command and command_task is not None and command_task is not current:
            # Let the command being handled be answered (e.g. the `emergency_stop` that stops us).
            await asyncio.wait({command_task}, timeout=_COMMAND_DRAIN_SECONDS)
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
        """Return at once unless :attr:`paused`; then wait until resumed (or stopped)."""
        while self.paused and not self.stopped:
            if self._local_pause:
                if self._resume_event is None:
                    return
                await self._resume_event.wait()
            elif self.agent is not None:
                try:
                    await self.agent.wait_resumed()
                except SessionClosed:
                    return
            else:
                return

    async def _delivery_loop(self) -> None:
        assert self.agent is not None
        async for delivery in self.agent.deliveries():
            await self.wait_if_paused()
            if self.stopped:
                return
            try:
                await self.on_delivery(delivery)
            except Exception as exc:
                self.handler_errors += 1
                log.exception("lockstep: %s.on_delivery failed on %s #%d", self.agent_id, delivery.topic, delivery.seq)
                await self._report_delivery_error(delivery, exc)

    async def _report_delivery_error(self, delivery: Delivery, exc: Exception) -> None:
        """A processing error is a failure for this agent's circuit breaker on the server, as in
        the seed's SyncBus: enough of them isolate this agent, and only it."""
        if self.agent is None:
            return
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        try:
            await self.agent.report_delivery_error(delivery.seq, text)
        except LockstepError as err:
            log.warning("lockstep: %s could not report its failed delivery #%d: %s", self.agent_id, delivery.seq, err)

    async def _control_loop(self, notices: "Feed[ControlNotice]") -> None:
        async for notice in notices:
            if self.stopped:
                return
            hook = self.on_pause if notice.pauses else self.on_resume
            if notice.kind in (ControlKind.RESUMED, ControlKind.RESUMED_ALL) and self._local_pause:
                # The server set the registry status to active; this agent is still paused by a command.
                await self._try_status(AgentStatus.PAUSED)
            try:
                await hook(notice)
            except Exception:
                self.handler_errors += 1
                log.exception("lockstep: %s.%s failed", self.agent_id, hook.__name__)

    async def _command_loop(self, commands: "Feed[Command]") -> None:
        async for command in commands:
            self._handling_command = True
            try:
                await self._serve(command)
            finally:
                self._handling_command = False
            if self.stopped:
                return

    async def _serve(self, command: Command) -> None:
        """Handle one command from the server and answer it."""
        try:
            try:
                result = await self._handle(command)
            except Exception as exc:
                text = str(exc) or type(exc).__name__
                log.info("lockstep: %s: command '%s' failed: %s", self.agent_id, command.name, text)
                await command.fail(text)
                return
            try:
                await command.reply(result)
            except InvalidArgument as exc:
                if command.answered:
                    raise
                await command.fail(str(exc))
        except LockstepError as exc:
            log.warning("lockstep: %s could not answer command '%s' (id %d): %s", self.agent_id, command.name,
                        command.command_id, exc)

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
        """Apply a command in this process, as commands from the server are applied: ``pause`` (and
        ``pause_agent``: deliveries wait, status ``paused``), ``resume`` (``resume_agent``) and
        ``emergency_stop`` (pause, then stop the agent) are built in; every command (built-in or not)
        then goes to :meth:`on_command`, whose result is returned and whose exceptions propagate.

        These pauses are the agent's own, not the server's: the server does not hold its deliveries
        or refuse its actions. Operators pause agents with :meth:`lockstep.Admin.pause_agent`.
        """
        return await self._handle(Command(name=name, params=dict(params or {}), sender=sender))

    async def _handle(self, command: Command) -> Any:
        name = command.name
        if name in ("pause", "pause_agent"):
            await self._pause()
        elif name in ("resume", "resume_agent"):
            self._local_pause = False
            if self._resume_event is not None:
                self._resume_event.set()
            if not self.paused:
                await self._try_status(AgentStatus.ACTIVE)
        elif name == "emergency_stop":
            await self._pause()
            self.stopped = True
            if self._stop_event is not None:
                self._stop_event.set()
        if self._takes_command_object():
            return await self.on_command(command)  # type: ignore[call-arg,arg-type]
        return await self.on_command(name, command.params)

    def _takes_command_object(self) -> bool:
        """Whether ``on_command`` is the 0.1 form, ``on_command(self, command)``."""
        if self._on_command_form is None:
            form = "name_params"
            try:
                params = list(inspect.signature(self.on_command).parameters.values())
            except (TypeError, ValueError):  # pragma: no cover - builtins, odd callables
                params = []
            positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params):
                form = "command"
            self._on_command_form = form
        return self._on_command_form == "command"

    async def _pause(self) -> None:
        self._local_pause = True
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
