"""The seed's sync diagnostic tool on a lockstep server: ``python -m lockstep.compat.sync_diagnostic``.

Flags as in the seed: ``--list`` (sync points), ``--stats`` (counts by state), ``--monitor``
(``--list`` again every ``--interval`` seconds; ``--count N`` stops after N views), ``--diagnose
ID`` (issues and recommendations), ``--registry`` (registered agents), ``--cleanup`` (forget
finished points; sends ``$LOCKSTEP_ADMIN_TOKEN`` when set). The server is ``$LOCKSTEP_ADDR``
(``--address`` overrides it), else an embedded one, which holds nothing until agents use it.
Exit status: 0, or 1 when the server refused (an unknown sync point for ``--diagnose``...).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from typing import List, Optional, Sequence

from ..client import Client, connect
from ..errors import LockstepError
from ..models import SyncPointStatus
from ._connection import admin_metadata, server_address


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lockstep.compat.sync_diagnostic",
        description="Monitor and debug synchronization on a lockstep server (the seed's sync_diagnostic.py).",
    )
    p.add_argument("--list", action="store_true", help="list active sync points")
    p.add_argument("--stats", action="store_true", help="show sync statistics")
    p.add_argument("--monitor", action="store_true", help="monitor sync points in real time")
    p.add_argument("--diagnose", metavar="ID", help="diagnose a specific sync point")
    p.add_argument("--registry", action="store_true", help="show agent registry status")
    p.add_argument("--cleanup", action="store_true", help="clean up completed sync points")
    p.add_argument("--address", help="the server's host:port (default $LOCKSTEP_ADDR, else an embedded server)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between --monitor views (default 2)")
    p.add_argument("--count", type=int, default=0, help="stop --monitor after this many views (default: never)")
    return p


def _point_line(p: SyncPointStatus) -> str:
    arrived = len(p.arrived)
    need = p.required_count or len(p.required)
    line = f"{p.sync_id}: {p.state} ({arrived}/{need} arrived)"
    if p.missing:
        line += f" missing: {', '.join(p.missing)}"
    if p.failure:
        line += f" [{p.failure}]"
    return line


async def _list(client: Client) -> List[str]:
    points = await client.sync_points()
    if not points:
        return ["No sync points."]
    return [f"Sync points ({len(points)}):"] + ["  " + _point_line(p) for p in points]


async def _stats(client: Client) -> List[str]:
    points = await client.sync_points()
    by_state = collections.Counter(str(p.state) for p in points)
    agents = await client.list_agents()
    lines = [f"Sync points: {len(points)}"]
    lines += [f"  {state}: {by_state[state]}" for state in sorted(by_state)]
    lines.append(f"Agents: {len(agents)}")
    return lines


async def _diagnose(client: Client, sync_id: str) -> List[str]:
    d = await client.diagnose_sync(sync_id)
    lines = [_point_line(d.status), "Issues:"]
    lines += [f"  - {i}" for i in d.issues] or ["  (none)"]
    lines.append("Recommendations:")
    lines += [f"  - {r}" for r in d.recommendations] or ["  (none)"]
    return lines


async def _registry(client: Client) -> List[str]:
    agents = await client.list_agents()
    if not agents:
        return ["No agents registered."]
    lines = [f"Agents ({len(agents)}):"]
    for a in agents:
        caps = ", ".join(a.capabilities) or "-"
        lines.append(f"  {a.agent_id}: role={a.role} status={a.status} breaker={a.breaker_state} capabilities={caps}")
    return lines


async def _run(args: argparse.Namespace) -> int:
    async with connect(args.address or server_address()) as client:
        try:
            if args.list:
                print("\n".join(await _list(client)))
            if args.stats:
                print("\n".join(await _stats(client)))
            if args.diagnose:
                print("\n".join(await _diagnose(client, args.diagnose)))
            if args.registry:
                print("\n".join(await _registry(client)))
            if args.cleanup:
                removed = await client.cleanup_sync_points(metadata=admin_metadata())
                print(f"Cleaned up {removed} completed sync point(s).")
            if args.monitor:
                views = 0
                while True:
                    print(time.strftime("[%H:%M:%S]"), "\n".join(await _list(client)), flush=True)
                    views += 1
                    if args.count and views >= args.count:
                        break
                    await asyncio.sleep(args.interval)
        except LockstepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the tool; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.list or args.stats or args.monitor or args.diagnose or args.registry or args.cleanup):
        parser.print_help()
        return 2
    if args.interval <= 0 or args.count < 0:
        parser.error("--interval must be positive and --count not negative")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
