"""The seed's ``CommandInterface``: operators' commands for a :class:`HighPerformanceSyncBus`.

``handle_command`` takes the seed's command names and returns the seed's result shapes (rows of
``list_agents`` carry ``circuit_open``); the work is done by the server's ``Admin`` service
(pausing, resuming, restarting breakers, the emergency stop, commands answered by the agents), with
``$LOCKSTEP_ADMIN_TOKEN`` when the server wants one.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Optional

from ..admin import Admin
from ..errors import CommandError, FailedPrecondition, InvalidArgument, NotFound, Reason
from ..models import AgentInfo
from .syncbus import HighPerformanceSyncBus

__all__ = ["CommandInterface"]


class CommandInterface:
    """Human-system interaction with a bus (the seed's class): ``await
    CommandInterface(syncbus).handle_command('status')``.

    Operators' calls go through the server's ``Admin`` service with ``token`` (default
    ``$LOCKSTEP_ADMIN_TOKEN``). An unknown command, a missing parameter or a refusal by the server
    is returned as ``{'error': text, 'reason': lockstep's reason}`` rather than raised.
    """

    def __init__(self, syncbus: HighPerformanceSyncBus, token: Optional[str] = None) -> None:
        if not isinstance(syncbus, HighPerformanceSyncBus):
            raise TypeError(f"syncbus must be a HighPerformanceSyncBus, got {type(syncbus).__name__}")
        self.syncbus = syncbus
        self._token = token
        self._admin: Optional[Admin] = None
        self.command_handlers: Dict[str, Callable[[Dict[str, Any]], Awaitable[Dict[str, Any]]]] = {
            "status": self._get_status,
            "pause_agent": self._pause_agent,
            "resume_agent": self._resume_agent,
            "emergency_stop": self._emergency_stop,
            "health": self._get_health_report,
            "restart_agent": self._restart_agent,
            "list_agents": self._list_agents,
            "send_command": self._send_command_to_agent,
        }

    async def _admin_api(self) -> Admin:
        client = await self.syncbus._client()
        if self._admin is None or self._admin.client is not client:
            self._admin = client.admin(token=self._token)
        return self._admin

    async def handle_command(self, command: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Run one of the seed's commands: ``status``, ``pause_agent``, ``resume_agent``,
        ``emergency_stop``, ``health``, ``restart_agent``, ``list_agents``, ``send_command``
        (``agent_id``, ``command``, ``command_params``)."""
        handler = self.command_handlers.get(command)
        if handler is None:
            return {"error": f"Unknown command: {command}", "reason": "UNKNOWN_COMMAND",
                    "available_commands": sorted(self.command_handlers)}
        try:
            return await handler(dict(params or {}))
        except (InvalidArgument, NotFound, FailedPrecondition, CommandError) as exc:
            return {"error": str(exc), "reason": exc.reason.value if exc.reason else ""}

    async def _get_status(self, params: Dict[str, Any]) -> Dict[str, Any]:
        status = (await (await self._admin_api()).status()).to_dict()
        status["tick_count"] = self.syncbus.tick_count
        status["bus_agents"] = sorted(self.syncbus.subscriptions)
        status["performance_metrics"] = await self.syncbus.metrics()
        return status

    async def _agent_action(self, params: Dict[str, Any], action: str) -> Dict[str, Any]:
        agent_id = params.get("agent_id")
        if not agent_id:
            raise InvalidArgument(f"'{action}' needs the parameter 'agent_id'", reason=Reason.INVALID_ARGUMENT)
        admin = await self._admin_api()
        detail = await getattr(admin, action)(str(agent_id))
        if action == "restart_agent":
            self.syncbus.performance_metrics["agent_restarts"] += 1
        return {"success": True, "agent_id": agent_id, "detail": detail}

    async def _pause_agent(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return await self._agent_action(params, "pause_agent")

    async def _resume_agent(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return await self._agent_action(params, "resume_agent")

    async def _restart_agent(self, params: Dict[str, Any]) -> Dict[str, Any]:
        return await self._agent_action(params, "restart_agent")

    async def _emergency_stop(self, params: Dict[str, Any]) -> Dict[str, Any]:
        detail = await (await self._admin_api()).emergency_stop(str(params.get("reason") or "emergency_stop command"))
        return {"success": True, "detail": detail}

    async def _get_health_report(self, params: Dict[str, Any]) -> Dict[str, Any]:
        report = (await (await self._admin_api()).health()).to_dict()
        report["system_health"] = await self.syncbus.get_state("system_health")
        return report

    async def _list_agents(self, params: Dict[str, Any]) -> Dict[str, Any]:
        agents = await (await self._admin_api()).list_agents()
        return {"agents": [_agent_row(a) for a in agents], "total": len(agents)}

    async def _send_command_to_agent(self, params: Dict[str, Any]) -> Dict[str, Any]:
        agent_id, command = params.get("agent_id"), params.get("command")
        if not agent_id or not command:
            raise InvalidArgument(
                "'send_command' needs the parameters 'agent_id' and 'command'", reason=Reason.INVALID_ARGUMENT
            )
        result = await (await self._admin_api()).send_command(str(agent_id), str(command), params.get("command_params"))
        return {"success": True, "agent_id": agent_id, "command": command, "result": result}


def _agent_row(info: AgentInfo) -> Dict[str, Any]:
    """An agent as the seed's ``list_agents`` shows it: ``circuit_open`` beside lockstep's fields."""
    row = info.to_dict()
    row["circuit_open"] = info.breaker_state == "open"
    return row
