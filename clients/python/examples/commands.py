"""The command interface: an operator pauses agents, stops everyone, and sends commands that agents answer.

The seed's ``CommandInterface.handle_command(name, params)`` on lockstep's ``Admin`` service. A
``SynchronizedAgent`` answers commands with ``on_command`` and is told when it is paused and resumed;
an agent that never asked for commands refuses them at once. Sync-point diagnostics and the audit
log show what happened. If the server wants an admin token, set ``$LOCKSTEP_ADMIN_TOKEN``; if it
serves Admin on a separate address (``--admin-listen``), set ``$LOCKSTEP_ADMIN_ADDR``.

    python examples/commands.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

import lockstep
from _common import address


class Sentinel(lockstep.SynchronizedAgent):
    role = "risk"

    async def on_command(self, name: str, params: Mapping[str, Any]) -> Any:
        if name == "rebalance_weights":
            floor = float(params.get("min_weight", 0.0))
            weights = {"btc": 0.6, "eth": 0.35, "sol": 0.05}
            kept = {k: w for k, w in weights.items() if w >= floor}
            return {"kept": sorted(kept), "dropped": sorted(set(weights) - set(kept))}
        if name == "set_limit":
            raise ValueError(f"limit {params.get('limit')} is above the desk's maximum of 1000000")
        return await super().on_command(name, params)

    async def on_pause(self, notice: lockstep.ControlNotice) -> None:
        print(f"  risk_sentinel told: {notice}")

    async def on_resume(self, notice: lockstep.ControlNotice) -> None:
        print(f"  risk_sentinel told: {notice}")


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        commands = lockstep.CommandInterface(client, actor="example-operator")
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

            # Pause: the agent is told, its deliveries wait, and its own actions are refused.
            notices = scanner.control_notices()
            print("pause_agent:", (await commands.handle_command("pause_agent", {"agent_id": "scanner"}))["detail"])
            print("scanner told:", await notices.next(timeout=5))
            try:
                await scanner.publish("market_data.btc", {"price": 64000}, confirm=True)
            except lockstep.AgentPaused as exc:
                print("scanner publish refused:", exc.message.split(";")[0])
            print("resume_agent:", (await commands.handle_command("resume_agent", {"agent_id": "scanner"}))["detail"])
            print("scanner told:", await notices.next(timeout=5))

            # Commands: the agent's answer comes back to the operator.
            sent = await commands.handle_command(
                "send_command",
                {"agent_id": "risk_sentinel", "command": "rebalance_weights", "command_params": {"min_weight": 0.1}},
            )
            print("send_command rebalance_weights ->", sent["result"])
            for agent_id, command, params in [
                ("risk_sentinel", "set_limit", {"limit": 5000000}),
                ("scanner", "rebalance_weights", {}),  # scanner never asked for commands
            ]:
                try:
                    await commands.admin.send_command(agent_id, command, params, timeout=5)
                except lockstep.CommandFailed as exc:
                    print(f"send_command {command} to {agent_id} failed: {exc.agent_error}")

            # Emergency stop: everyone is paused until resume_all.
            print("emergency_stop:", (await commands.handle_command("emergency_stop", {"reason": "drill"}))["detail"])
            print("scanner told:", await notices.next(timeout=5))
            print("resume_all:", (await commands.handle_command("resume_all"))["detail"])
            print("scanner told:", await notices.next(timeout=5))

            health = await commands.handle_command("health")
            print(f"health: score {health['score']:.2f},", ", ".join(
                f"{a['agent_id']} {a['status']} (breaker {a['breaker_state']})" for a in health["agents"]
            ))

            print("audit log:")
            for entry in (await commands.handle_command("audit_log", {"limit": 20}))["entries"]:
                target = f" {entry['target']}" if entry["target"] else ""
                print(f"  #{entry['seq']} {entry['actor']}: {entry['command']}{target} -> {entry['outcome']}")


if __name__ == "__main__":
    asyncio.run(main(address()))
