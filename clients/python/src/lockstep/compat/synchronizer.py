"""The seed's ``AgentSynchronizer`` and ``SynchronizedAgent`` on lockstep's barriers.

``AgentSynchronizer(timeout=30.0)`` is the agents' connection and default barrier timeout; a
``SynchronizedAgent(name, synchronizer)`` registers ``name`` with the server on its first
``sync_with_agents`` and meets the others at a server-side sync point. As in the seed, a sync that
times out or fails returns ``False`` (lockstep's typed errors — who was missing, why — are logged,
and raised by the native :meth:`lockstep.Agent.sync_with_agents`). The diagnostics
(``get_sync_status``, ``diagnose_sync_issues``, ``force_complete_sync``) are plain functions, as in
the seed, callable from inside a running event loop too; they ask the server on a thread of their own.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Dict, Iterable, List, Optional

from ..agent import Agent
from ..client import Client
from ..errors import FailedPrecondition, InvalidArgument, NotFound, SyncFailed
from ._connection import Connection, admin_metadata

__all__ = ["AgentSynchronizer", "SynchronizedAgent"]

log = logging.getLogger("lockstep.compat")

#: The role compat agents register with (lockstep requires one; the seed has none).
ROLE = "agent"


class AgentSynchronizer:
    """Coordinates sync points for :class:`SynchronizedAgent` s (the seed's class).

    Args:
        timeout: the barrier timeout in seconds (default 30, as in the seed).
        address: the server's ``host:port``; default ``$LOCKSTEP_ADDR``, else an embedded server.

    Raises:
        ValueError: ``timeout`` is not a positive number.
    """

    def __init__(self, timeout: float = 30.0, *, address: Optional[str] = None) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        """Seconds an agent waits at a sync point before ``sync_with_agents`` returns ``False``."""
        self.connection = Connection(address)
        self._client: Optional[Client] = None
        self._sessions: "Dict[str, asyncio.Task[Agent]]" = {}

    async def _session(self, name: str) -> Agent:
        """The session of agent ``name``, registered on first use (once, however many ask at once)."""
        client = await self.connection.client()
        if client is not self._client:
            self._client, self._sessions = client, {}
        task = self._sessions.get(name)
        if task is None or (task.done() and (task.exception() is not None or task.result().closed)):
            task = self._sessions[name] = asyncio.get_running_loop().create_task(_register(client, name))
        return await asyncio.shield(task)

    async def _sync(self, name: str, sync_id: str, agents: Iterable[str], timeout: Optional[float]) -> bool:
        if isinstance(agents, (str, bytes)):
            raise TypeError("agents must be a collection of agent names (a set or list), not one string")
        ids = list(agents)
        session = await self._session(name)
        try:
            await session.sync_with_agents(sync_id, ids, timeout=self.timeout if timeout is None else timeout)
            return True
        except (SyncFailed, InvalidArgument) as exc:
            log.warning("lockstep.compat: %s: sync '%s' failed: %s", name, sync_id, exc)
            return False

    # ------------------------------------------------------------------------------------------
    # the seed's diagnostics (plain functions)

    def get_sync_status(self, sync_id: str) -> Optional[Dict[str, Any]]:
        """The sync point's status (``state``, ``required``, ``arrived``, ``missing``, ``deadline_ms``...)
        as a dict, or ``None`` when the server has no such point."""

        async def call(client: Client) -> Optional[Dict[str, Any]]:
            try:
                return (await client.sync_status(sync_id)).to_dict()
            except NotFound:
                return None

        return self.connection.blocking(call)

    def diagnose_sync_issues(self, sync_id: str) -> Dict[str, Any]:
        """What is wrong with a sync point: ``{"sync_id", "status", "issues", "recommendations"}``
        (``status`` is ``None`` and ``issues`` says so for an unknown point)."""

        async def call(client: Client) -> Dict[str, Any]:
            try:
                diagnosis = (await client.diagnose_sync(sync_id)).to_dict()
            except NotFound:
                return {
                    "sync_id": sync_id,
                    "status": None,
                    "issues": [f"Sync point '{sync_id}' not found"],
                    "recommendations": ["Check that every agent uses the same sync point id",
                                        "Finished points are forgotten after cleanup"],
                }
            diagnosis["sync_id"] = sync_id
            return diagnosis

        return self.connection.blocking(call)

    def force_complete_sync(self, sync_id: str) -> bool:
        """Release everyone waiting at a stuck sync point (emergency recovery); ``False`` when
        there is no such point or it is not waiting. Uses ``$LOCKSTEP_ADMIN_TOKEN`` when set.

        Raises:
            Unauthenticated / PermissionDenied: the server wants an admin token (or another one).
        """

        async def call(client: Client) -> bool:
            try:
                await client.force_complete_sync(sync_id, metadata=admin_metadata())
                return True
            except (NotFound, FailedPrecondition) as exc:
                log.warning("lockstep.compat: cannot force sync point '%s': %s", sync_id, exc)
                return False

        return self.connection.blocking(call)

    def cleanup_completed_syncs(self) -> int:
        """Forget finished sync points (the diagnostic tool's ``--cleanup``); how many went.
        Uses ``$LOCKSTEP_ADMIN_TOKEN`` when set."""
        return self.connection.blocking(lambda client: client.cleanup_sync_points(metadata=admin_metadata()))

    def list_sync_points(self) -> List[Dict[str, Any]]:
        """Every sync point the server holds (the diagnostic tool's ``--list``), as dicts."""

        async def call(client: Client) -> List[Dict[str, Any]]:
            return [p.to_dict() for p in await client.sync_points()]

        return self.connection.blocking(call)

    async def close(self) -> None:
        """Deregister this synchronizer's agents and close its connection (lockstep's addition:
        otherwise they are lost when their leases run out after the script ends)."""
        self._sessions = {}
        self._client = None
        await self.connection.close()


async def _register(client: Client, name: str) -> Agent:
    return await client.register(name, role=ROLE)


class SynchronizedAgent:
    """An agent that meets others at sync points (the seed's base class; it may be used as is).

    Args:
        name: the agent's id on the server.
        synchronizer: the :class:`AgentSynchronizer` it syncs through.
    """

    def __init__(self, name: str, synchronizer: AgentSynchronizer) -> None:
        if not isinstance(synchronizer, AgentSynchronizer):
            raise TypeError(f"synchronizer must be an AgentSynchronizer, got {type(synchronizer).__name__}")
        self.name = name
        self.synchronizer = synchronizer

    def run(self) -> Any:
        """The agent's work; subclasses override it. The default does nothing and says so."""
        return {"status": "idle"}

    def validate_config(self) -> bool:
        """Whether the agent's configuration is valid; subclasses override it. Default ``True``."""
        return True

    async def sync_with_agents(self, sync_id: str, agents: Iterable[str], timeout: Optional[float] = None) -> bool:
        """Wait at ``sync_id`` until every agent of ``agents`` (this one is added) has arrived.

        Returns ``True`` when all arrived, ``False`` when the point timed out (after the
        synchronizer's ``timeout``, or ``timeout`` seconds), was aborted because a participant was
        lost or left, is defined otherwise by others, or the input is invalid (an empty id...).

        Raises:
            TypeError: ``agents`` is one string rather than a collection of names.
        """
        return await self.synchronizer._sync(self.name, sync_id, agents, timeout)

    async def close(self) -> None:
        """Deregister this agent (lockstep's addition)."""
        task = self.synchronizer._sessions.pop(self.name, None)
        if task is not None and task.done() and task.exception() is None:
            await task.result().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
