"""The command interface: status, agents and sync diagnostics for an operator.

The seed's ``CommandInterface.handle_command(name, params)`` on lockstep. Status, the agent list and
sync-point diagnostics (list, diagnose, force complete, clean up) work against today's server; the
control-plane commands (pause, resume, restart, emergency stop, health, custom commands) need an API
the server does not have yet, and say so with ``lockstep.NotSupported``. An agent built on
``SynchronizedAgent`` already handles pause/resume/emergency stop when they reach it.

    python examples/commands.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import json

import lockstep
from _common import address


class Sentinel(lockstep.SynchronizedAgent):
    role = "risk"

    async def on_command(self, command: lockstep.Command) -> object:
        return {"agent": self.name, "command": command.name, "paused": self.paused}


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        commands = lockstep.CommandInterface(client)
        async with Sentinel("risk_sentinel", client) as sentinel, client.register("scanner", role="scanner") as scanner:
            status = await commands.handle_command("status")
            print("status:", json.dumps({k: status[k] for k in ("total_agents", "agents_by_role", "agents_by_status")}))
            listed = await commands.handle_command("list_agents")
            print("agents:", ", ".join(a["agent_id"] for a in listed["agents"]))

            # A stuck barrier: risk_sentinel waits for scanner, which never comes.
            stuck = asyncio.ensure_future(sentinel.sync("stuck_sync", {"risk_sentinel", "scanner"}, timeout=60))
            await asyncio.sleep(0.3)
            diagnosis = await commands.handle_command("diagnose", {"sync_id": "stuck_sync"})
            print("issues:", diagnosis["issues"])
            print("recommendations:", diagnosis["recommendations"])
            forced = await commands.handle_command("force_complete", {"sync_id": "stuck_sync"})
            result = await stuck
            print(f"force_complete: state={forced['state']}, waiter released (forced={result.forced})")
            print("cleanup:", await commands.handle_command("cleanup"))

            for name, params in [
                ("pause_agent", {"agent_id": "risk_sentinel"}),
                ("health", {}),
                ("send_command", {"agent_id": "scanner", "command": "rebalance_weights", "command_params": {"min_weight": 0.1}}),
            ]:
                try:
                    await commands.handle_command(name, params)
                except lockstep.NotSupported as exc:
                    print(f"{name}: not supported yet ({exc.message.split(':')[0]})")

            # In-process, the agent's own command handling works today.
            print("local:", await sentinel.handle_command("pause"))
            print("local:", await sentinel.handle_command("resume"))
            del scanner


if __name__ == "__main__":
    asyncio.run(main(address()))
