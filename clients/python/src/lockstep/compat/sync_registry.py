"""The seed's ``SynchronizedAgentRegistry``: registering agents, and acting for them, by agent id.

The registry lives in the server (durable with a data directory), not in a JSON file: a
``SynchronizedAgentRegistry`` registers each agent with a session of its own on the registry's
connection and then acts on its behalf — status, heartbeats — as the seed's registry does. Such an
agent's lease is renewed by :meth:`SynchronizedAgentRegistry.heartbeat` (and by anything else the
registry sends on the same connection), not by itself: an agent nobody heartbeats within the
server's lease (``heartbeat_interval_ms × lease_intervals``, 3 s by default) is declared lost,
as the seed's registry marks silent agents, and stays lost until :meth:`heartbeat` is called for
it again, which registers it anew. ``auto_heartbeat=True`` keeps them alive instead.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Optional, Union

from ..agent import Agent
from ..client import Client
from ..errors import AlreadyRegistered, LockstepError, Reason, SessionClosed
from ..models import AgentInfo, AgentStatus
from ._connection import Connection

__all__ = ["AgentStatus", "SynchronizedAgentRegistry"]

log = logging.getLogger("lockstep.compat")

#: A connection of the registry's own: the server renews every session of a connection on one
#: heartbeat, so the registry's agents must not share one with agents that heartbeat by themselves.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def agent_row(info: AgentInfo) -> Dict[str, Any]:
    """A registry entry as the seed shows it (``sync_capabilities``, ``last_heartbeat`` in seconds)
    with lockstep's fields beside it."""
    row = info.to_dict()
    row["sync_capabilities"] = list(info.capabilities)
    row["last_heartbeat"] = info.last_heartbeat_ms / 1000.0
    return row


class SynchronizedAgentRegistry:
    """Agent discovery and health through the server's registry (the seed's class).

    Args:
        registry_path: accepted for the seed's callers; unused — the registry is the server's.
        address: the server's ``host:port``; default ``$LOCKSTEP_ADDR``, else an embedded server.
        auto_heartbeat: let the sessions renew their leases by themselves (default: only
            :meth:`heartbeat` does, as in the seed).
    """

    def __init__(
        self,
        registry_path: Optional[str] = None,
        *,
        address: Optional[str] = None,
        auto_heartbeat: bool = False,
    ) -> None:
        self.registry_path = registry_path
        self.auto_heartbeat = auto_heartbeat
        self.connection = Connection(address, options=OWN_CONNECTION)
        self._agents: Dict[str, Agent] = {}

    async def _client(self) -> Client:
        return await self.connection.client()

    def _live(self, agent_id: str) -> Optional[Agent]:
        agent = self._agents.get(agent_id)
        return None if agent is None or agent.closed else agent

    async def register_agent(self, agent_id: str, role: str, sync_capabilities: Iterable[str] = ()) -> bool:
        """Register ``agent_id`` with its ``role`` and ``sync_capabilities``; ``True`` once it is.

        Registering an agent this registry already holds again is a no-op (``True``); ``False`` when
        another live session holds the id.

        Raises:
            InvalidArgument: (a ``ValueError``) a bad id, role or capability.
            TypeError: ``sync_capabilities`` is one string rather than a list.
        """
        if isinstance(sync_capabilities, (str, bytes)):
            raise TypeError("sync_capabilities must be a list of capability names, not one string")
        if self._live(agent_id) is not None:
            return True
        client = await self._client()
        try:
            agent = await client.register(
                agent_id, role=role, capabilities=list(sync_capabilities), heartbeats=self.auto_heartbeat
            )
        except AlreadyRegistered as exc:
            log.warning("lockstep.compat: cannot register '%s': %s", agent_id, exc)
            return False
        self._agents[agent_id] = agent
        return True

    async def unregister_agent(self, agent_id: str) -> bool:
        """Deregister an agent this registry registered; ``False`` if it holds none of that id."""
        agent = self._agents.pop(agent_id, None)
        if agent is None:
            return False
        await agent.close()
        return True

    async def update_agent_status(self, agent_id: str, status: Union[AgentStatus, str]) -> bool:
        """Set an agent's status (``AgentStatus.SYNCING`` or its name); ``False`` when this registry
        holds no live agent of that id.

        Raises:
            ValueError: an unknown status, or ``LOST`` (only the server sets it).
        """
        parsed = AgentStatus.parse(status)
        agent = self._live(agent_id)
        if agent is None:
            return False
        try:
            await agent.set_status(parsed)
        except SessionClosed:
            return False
        return True

    async def heartbeat(self, agent_id: str) -> bool:
        """Renew the agent's lease now; ``False`` when this registry holds no agent of that id.

        An agent the server declared lost (nobody heartbeat it within a lease) is registered again,
        with the role and capabilities it had, as the seed's heartbeat revives a silent agent.
        """
        ended = self._agents.get(agent_id)
        reason = ended.close_reason.reason if ended is not None and ended.close_reason is not None else None
        if ended is not None and ended.closed and reason is Reason.LEASE_EXPIRED:
            return await self.register_agent(agent_id, ended.role, ended.capabilities)
        agent = self._live(agent_id)
        if agent is None:
            return False
        try:
            await agent.heartbeat()
        except LockstepError as exc:
            log.warning("lockstep.compat: heartbeat of '%s' failed: %s", agent_id, exc)
            return False
        return True

    async def get_agents_with_sync_capability(self, capability: str) -> List[Dict[str, Any]]:
        """Every registered agent (of any registry or client) that declared ``capability``, as
        registry entries (``agent_id``, ``role``, ``sync_capabilities``, ``status``,
        ``last_heartbeat``...)."""
        client = await self._client()
        return [agent_row(a) for a in await client.agents_with_capability(capability)]

    async def get_agent(self, agent_id: str) -> Optional[Dict[str, Any]]:
        """One agent's registry entry, or ``None``."""
        client = await self._client()
        for info in await client.list_agents():
            if info.agent_id == agent_id:
                return agent_row(info)
        return None

    async def list_agents(self) -> List[Dict[str, Any]]:
        """Every registered agent's entry."""
        client = await self._client()
        return [agent_row(a) for a in await client.list_agents()]

    async def close(self) -> None:
        """Deregister this registry's agents and close its connection (lockstep's addition)."""
        self._agents.clear()
        await self.connection.close()
