"""The seed's ``HighPerformanceSyncBus`` on lockstep (its ``CommandInterface`` is in :mod:`.command_interface`).

The bus registers each agent with the server (interests default to ``['all']``, as in the seed)
and keeps its session, acting for it: ``update_agent_state`` is the seed's shallow ``dict.update``
(sent as the merge patch that has that effect), ``tick()`` is a round of the server's tick rounds
— every registered, attached agent whose breaker is not open is asked, its ``update(data)`` called
with the global state filtered by its interests under ``timeout_per_agent``, and the returned
dicts merged by the server into the global state (the shared-context key ``context_key``) —
and ``get_state(name)`` reads that global state, or ``system_health`` from the server's
``system.health`` key. The circuit breakers are the server's: an agent whose ``update`` raises
reports a ``delivery_error``, one that does not answer in time is a miss, and either counts as a
failure for its breaker; the bus asks the server whether a circuit is open.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
import uuid
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Mapping, Optional

from ..agent import Agent
from ..client import Client
from ..errors import ContextConflict, FailedPrecondition, LockstepError, NotFound
from ..merge import merge_patch_between
from ..models import Command
from ..rounds import RoundInput
from ._connection import Connection

__all__ = ["DEFAULT_CIRCUIT_CONFIG", "HighPerformanceSyncBus"]

log = logging.getLogger("lockstep.compat")

#: The seed's circuit breaker settings, which are also the server's defaults (``[breaker]``:
#: ``failure_threshold = 5``, ``recovery_delay_ms = 30000``, ``timeout_per_agent_ms = 5000``).
DEFAULT_CIRCUIT_CONFIG: Dict[str, float] = {"failure_threshold": 5, "recovery_delay": 30, "timeout_per_agent": 5.0}

#: Messages kept per agent in :attr:`HighPerformanceSyncBus.update_queues` (the seed's queue size).
UPDATE_QUEUE_SIZE = 100

#: The role the bus registers its agents with (lockstep requires one).
ROLE = "syncbus"

#: How many times ``update_state`` tries its compare-and-set before it gives up.
_CAS_ATTEMPTS = 5

#: How often ``tick()`` looks whether its round has closed.
_POLL_SECONDS = 0.01


def _check_circuit_config(config: Mapping[str, Any]) -> Dict[str, float]:
    unknown = set(config) - set(DEFAULT_CIRCUIT_CONFIG)
    if unknown:
        raise ValueError(f"unknown circuit_config keys {sorted(unknown)}; known: {sorted(DEFAULT_CIRCUIT_CONFIG)}")
    merged = {**DEFAULT_CIRCUIT_CONFIG, **config}
    for key, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"circuit_config['{key}'] must be a positive number, got {value!r}")
    if merged["failure_threshold"] != int(merged["failure_threshold"]):
        raise ValueError(f"circuit_config['failure_threshold'] must be a whole number, got {merged['failure_threshold']!r}")
    return merged


def breaker_env(config: Mapping[str, float]) -> Dict[str, str]:
    """The server's ``[breaker]`` settings for ``circuit_config``, as environment variables."""
    return {
        "LOCKSTEP_BREAKER__FAILURE_THRESHOLD": str(int(config["failure_threshold"])),
        "LOCKSTEP_BREAKER__RECOVERY_DELAY_MS": str(int(round(config["recovery_delay"] * 1000))),
        "LOCKSTEP_BREAKER__TIMEOUT_PER_AGENT_MS": str(int(round(config["timeout_per_agent"] * 1000))),
    }


class HighPerformanceSyncBus:
    """Interest-based routing, delta updates, ticks and health on a lockstep server (the seed's class).

    Args:
        address: the server's ``host:port``; default ``$LOCKSTEP_ADDR``, else an embedded server.
        circuit_config: the seed's settings; ``timeout_per_agent`` bounds each agent's ``update``
            in :meth:`tick`. ``failure_threshold`` and ``recovery_delay`` are the server's breaker
            settings (its ``[breaker]`` section), whose defaults are the seed's: an embedded server
            the bus starts gets all three; a running server (``$LOCKSTEP_ADDR``) keeps its own.
        context_key: the shared-context key holding the global state that ticks merge into.
        series: the name of the bus's tick round series (default: unique per bus).

    Raises:
        ValueError: an unknown or non-positive ``circuit_config`` value.
    """

    def __init__(
        self,
        *,
        address: Optional[str] = None,
        circuit_config: Optional[Mapping[str, Any]] = None,
        context_key: str = "syncbus.state",
        series: Optional[str] = None,
    ) -> None:
        self.circuit_config = _check_circuit_config(circuit_config or {})
        self.context_key = context_key
        self.series = series or f"syncbus.tick.{uuid.uuid4().hex[:12]}"
        # An embedded server this bus starts gets the bus's breaker settings.
        self.connection = Connection(address, embedded_env=breaker_env(self.circuit_config))
        self.agents: Dict[str, Any] = {}
        """Attached agent instances by name (:meth:`attach`)."""
        self.subscriptions: Dict[str, List[str]] = {}
        """Each registered agent's interests."""
        self.update_queues: Dict[str, Deque[Dict[str, Any]]] = {}
        """Messages routed to each registered agent by its interests (``topic``, ``data``,
        ``publisher``, ``seq``), the last :data:`UPDATE_QUEUE_SIZE` kept, as in the seed. The bus
        reads (and so acknowledges) them for its agents, whose breakers would otherwise count them
        as unacknowledged."""
        self.tick_count = 0
        self.performance_metrics: Dict[str, Any] = {
            "ticks": 0,
            "tick_timeouts": 0,
            "updates": 0,
            "update_failures": 0,
            "circuit_breaker_activations": 0,
            "agent_restarts": 0,
        }
        self._sessions: Dict[str, Agent] = {}
        self._workers: "List[asyncio.Task[None]]" = []
        self._series_agents: Optional[List[str]] = None

    # ------------------------------------------------------------------------------------------
    # agents

    def attach(self, name: str, instance: Any) -> None:
        """Attach an agent object: :meth:`tick` calls its ``update(data)`` (a plain or async
        method returning a dict). A plain function, callable inside a running event loop."""
        self.agents[name] = instance

    async def _client(self) -> Client:
        return await self.connection.client()

    async def register_agent(self, agent_id: str, interests: Optional[List[str]] = None) -> None:
        """Register ``agent_id`` with its data ``interests`` (default ``['all']``); registering
        an agent this bus already registered does nothing, as in the seed.

        Raises:
            AlreadyRegistered: another live session (not this bus) holds the id.
            InvalidArgument: a bad id or interest pattern.
        """
        if agent_id in self.subscriptions and not self._sessions[agent_id].closed:
            return
        if isinstance(interests, (str, bytes)):
            raise TypeError("interests must be a list of names, not one string")
        wanted = list(interests) if interests else ["all"]
        client = await self._client()
        agent = await client.register(agent_id, role=ROLE, interests=wanted)
        self.subscriptions[agent_id] = wanted
        self._sessions[agent_id] = agent
        self.update_queues[agent_id] = deque(maxlen=UPDATE_QUEUE_SIZE)
        loop = asyncio.get_running_loop()
        self._workers.append(loop.create_task(self._serve_deliveries(agent_id, agent)))
        self._workers.append(loop.create_task(self._serve_rounds(agent_id, agent)))
        self._workers.append(loop.create_task(self._serve_commands(agent_id, agent)))

    def _session(self, agent_id: str) -> Optional[Agent]:
        agent = self._sessions.get(agent_id)
        return agent if agent is not None and not agent.closed else None

    async def _is_circuit_open(self, agent_id: str) -> bool:
        """Whether the server's circuit breaker isolates the agent now."""
        client = await self._client()
        try:
            return (await client.get_agent(agent_id)).breaker_state == "open"
        except NotFound:
            return False

    async def is_circuit_open(self, agent_id: str) -> bool:
        """Whether the server's circuit breaker for ``agent_id`` is open."""
        return await self._is_circuit_open(agent_id)

    async def update_agent_state(self, agent_id: str, state_delta: Dict[str, Any]) -> None:
        """Only update what changed: the seed's ``agent_state.update(state_delta)`` — each top-level
        member replaces the old one whole (nested objects are not merged). Ignored, with a warning,
        for an agent this bus has not registered or whose circuit is open. A ``None`` member removes
        the key (a state holds no ``null``; reading the key gives ``None`` either way).

        Raises:
            TypeError: ``state_delta`` is not a dict.
        """
        if not isinstance(state_delta, dict):
            raise TypeError(f"state_delta must be a dict, got {type(state_delta).__name__}")
        agent = self._session(agent_id)
        if agent is None:
            log.warning("lockstep.compat: agent %s is not registered on this bus, ignoring update", agent_id)
            return
        if await self._is_circuit_open(agent_id):
            log.warning("lockstep.compat: agent %s circuit open, ignoring update", agent_id)
            return
        old = agent.state
        patch = merge_patch_between(old, {**old, **state_delta})
        if not patch:
            return
        try:
            await agent.update_state(patch)
            self.performance_metrics["updates"] += 1
        except FailedPrecondition as exc:  # the breaker opened meanwhile, or the agent is paused
            self.performance_metrics["update_failures"] += 1
            log.warning("lockstep.compat: update of %s refused: %s", agent_id, exc)

    async def get_agent_state(self, agent_id: str) -> Dict[str, Any]:
        """An agent's state as the server holds it (lockstep's addition; ``{}`` for an unknown agent)."""
        client = await self._client()
        try:
            return (await client.get_state(agent_id)).state
        except NotFound:
            return {}

    # ------------------------------------------------------------------------------------------
    # global state

    async def _global_state(self, client: Client) -> Dict[str, Any]:
        try:
            value = (await client.context.get(self.context_key)).value
        except NotFound:
            return {}
        return value if isinstance(value, dict) else {}

    async def get_state(self, name: str) -> Any:
        """A global-state entry (``None`` if absent). ``'system_health'`` is the server's
        ``system.health``: ``health_score``, ``total_agents``, ``healthy_agents`` (and lockstep's
        finer counts), with the bus's ``performance_metrics`` and ``last_update``."""
        client = await self._client()
        if name == "system_health":
            health = dict((await client.context.get("system.health")).value)
            # The seed's exact share (the server rounds its own to four places).
            total, healthy = int(health.get("total_agents", 0)), int(health.get("healthy_agents", 0))
            health["health_score"] = healthy / total if total > 0 else 1.0
            health["performance_metrics"] = await self.metrics()
            health["last_update"] = time.time()
            return health
        return (await self._global_state(client)).get(name)

    async def metrics(self) -> Dict[str, Any]:
        """The bus's ``performance_metrics``, with ``circuit_breaker_activations`` — how many times
        the server opened its agents' breakers — brought up to date."""
        client = await self._client()
        opened = sum(a.breaker_opened for a in await client.list_agents() if a.agent_id in self.subscriptions)
        self.performance_metrics["circuit_breaker_activations"] = opened
        return dict(self.performance_metrics)

    async def update_state(self, name: str, value: Any) -> None:
        """Set one global-state entry (the seed's ``update_state``), replacing it whole. Written with
        compare-and-set, retried when a tick or another writer changed the state meanwhile.

        Raises:
            ContextConflict: the state changed under every one of the attempts.
        """
        client = await self._client()
        for attempt in range(_CAS_ATTEMPTS):
            try:
                entry = await client.context.get(self.context_key)
            except NotFound:
                await client.context.patch(self.context_key, {name: value})
                return
            old = entry.value if isinstance(entry.value, dict) else {}
            try:
                await client.context.cas(self.context_key, entry.version, {**old, name: value})
                return
            except ContextConflict:
                if attempt == _CAS_ATTEMPTS - 1:
                    raise

    @staticmethod
    def _filter_data_by_interests(categorized_data: Dict[str, Any], interests: List[str]) -> Dict[str, Any]:
        """The seed's filter: everything for ``'all'``, else the entries named by the interests."""
        if "all" in interests:
            return dict(categorized_data)
        return {i: categorized_data[i] for i in interests if i in categorized_data}

    # ------------------------------------------------------------------------------------------
    # ticks

    async def _ensure_series(self, client: Client, members: List[str]) -> None:
        if self._series_agents == members:
            return
        if self._series_agents is not None:
            try:
                await client.rounds.remove(self.series)
            except NotFound:
                pass
        timeout_ms = int(self.circuit_config["timeout_per_agent"] * 1000)
        await client.rounds.create(self.series, timeout_ms=timeout_ms, context_key=self.context_key, agents=members)
        self._series_agents = members

    async def tick(self) -> None:
        """One tick: a round of the server's tick rounds over the registered, attached agents
        (attached ones not registered yet are registered with ``['all']``). Each is called with
        its interests' share of the global state and ``timeout_per_agent`` to answer; the server
        merges the answers into the global state (by agent id) and counts a miss or an error as a
        failure for that agent's breaker. Returns once the round has closed."""
        self.tick_count += 1
        client = await self._client()
        for name, instance in list(self.agents.items()):
            if self._session(name) is None and hasattr(instance, "update"):
                await self.register_agent(name)
        members = sorted(a for a in self.agents if self._session(a) is not None)
        if not members:
            return
        await self._ensure_series(client, members)
        number = await client.rounds.open(self.series, await self._global_state(client), driver="syncbus")
        deadline = time.monotonic() + self.circuit_config["timeout_per_agent"] + 5.0
        while True:
            info = await client.rounds.round(self.series, number)
            if not info.open or time.monotonic() > deadline:
                break
            await asyncio.sleep(_POLL_SECONDS)
        self.performance_metrics["ticks"] += 1
        if info.closing == "timeout":
            self.performance_metrics["tick_timeouts"] += 1
            log.error("lockstep.compat: tick %d timed out; missed: %s", self.tick_count, info.missed)

    async def _serve_deliveries(self, agent_id: str, agent: Agent) -> None:
        """Keeps the agent's deliveries in its update queue (reading acknowledges them)."""
        queue = self.update_queues[agent_id]
        async for delivery in agent.deliveries():
            queue.append({"topic": delivery.topic, "data": delivery.data, "publisher": delivery.publisher,
                          "seq": delivery.seq})

    async def _serve_rounds(self, agent_id: str, agent: Agent) -> None:
        """Answers the agent's round inputs with its instance's ``update(data)``."""
        async for tick in agent.rounds():
            await self._answer(agent_id, agent, tick)

    async def _answer(self, agent_id: str, agent: Agent, tick: RoundInput) -> None:
        instance = self.agents.get(agent_id)
        update: Optional[Callable[[Dict[str, Any]], Any]] = getattr(instance, "update", None)
        if update is None:
            await _quietly(tick.answer({}))
            return
        data = self._filter_data_by_interests(tick.input if isinstance(tick.input, dict) else {},
                                              self.subscriptions.get(agent_id, ["all"]))
        try:
            result = update(data)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, self.circuit_config["timeout_per_agent"])
            if result is None:
                result = {}
            if not isinstance(result, dict):
                raise TypeError(f"update() returned {type(result).__name__}, not a dict")
        except asyncio.TimeoutError:
            # No answer: the round misses the agent, a failure for its breaker.
            log.warning("lockstep.compat: %s.update timed out in tick round %d", agent_id, tick.round)
            return
        except Exception as exc:
            log.exception("lockstep.compat: %s.update failed in tick round %d", agent_id, tick.round)
            await _quietly(agent.report_delivery_error(0, f"update() failed: {type(exc).__name__}: {exc}"))
            await _quietly(tick.answer({}))
            return
        await _quietly(tick.answer(result))

    async def _serve_commands(self, agent_id: str, agent: Agent) -> None:
        """Commands sent to a bus agent go to its instance's ``command_queue`` (the seed's
        ``send_command``); ``pause`` / ``resume`` / ``emergency_stop`` also set its ``is_paused``."""
        async for command in agent.commands():
            await _quietly(self._take_command(agent_id, command))

    async def _take_command(self, agent_id: str, command: Command) -> None:
        instance = self.agents.get(agent_id)
        queue = getattr(instance, "command_queue", None)
        if command.name in ("pause", "emergency_stop", "resume") and hasattr(instance, "is_paused"):
            instance.is_paused = command.name != "resume"  # type: ignore[union-attr]
        if queue is None:
            if hasattr(instance, "is_paused") and command.name in ("pause", "emergency_stop", "resume"):
                await command.reply({"queued": False, "applied": True})
                return
            await command.fail(f"agent '{agent_id}' has no command_queue")
            return
        queue.append({"command": command.name, "params": dict(command.params), "timestamp": time.time()})
        await command.reply({"queued": True})

    async def close(self) -> None:
        """Deregister the bus's agents, remove its tick series and close its connection
        (lockstep's addition)."""
        for task in self._workers:
            task.cancel()
        self._workers = []
        client = self.connection.current()
        if client is not None and self._series_agents is not None:
            await _quietly(client.rounds.remove(self.series))
        self._series_agents = None
        self._sessions.clear()
        self.subscriptions.clear()
        self.update_queues.clear()
        await self.connection.close()


async def _quietly(call: Awaitable[Any]) -> None:
    """Answers that may come too late (a round closed, a session ended) are logged, not raised."""
    try:
        await call
    except LockstepError as exc:
        log.info("lockstep.compat: %s", exc)
