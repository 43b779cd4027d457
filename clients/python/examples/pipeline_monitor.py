"""The sync monitor on a six-system pipeline where one source lags.

Two sources (``orders``, ``fx-rates``) feed three transforms (``normalize``, ``enrich``,
``revenue``) feeding a ``dashboard``. The operator registers them and their dependencies; the
healthy systems keep reporting ok syncs, with latencies in whatever units their jobs use. The
``fx-rates`` source stops syncing: nobody reports it, and the server marks it stale by itself once
its cadence and tolerance have passed, opening an incident. The example prints the staleness, each
system's propagated risk (``max(own, weight x upstream risk)``), the blast radius of the lagging
source, and — after ``normalize`` fails for want of fresh rates — the open incidents in priority
order. A strategy agent subscribed to ``systems.incidents`` hears every change and pauses while
anything is open. Then the source recovers, ``normalize`` runs again, and both incidents resolve,
with their durations.

With an admin token on the server, set ``$LOCKSTEP_ADMIN_TOKEN`` (registering systems and
dependencies is an operator's action).

    python examples/pipeline_monitor.py [HOST:PORT]
"""

from __future__ import annotations

import asyncio
from typing import Dict, Optional, Set, Tuple

import lockstep
from _common import address

#: name -> (kind, criticality, cadence ms, tolerance ms). fx-rates is expected every 500 ms, and
#: stale once 500 ms more have passed; the others have room to spare.
SYSTEMS: Dict[str, Tuple[str, str, int, int]] = {
    "orders": ("dataset", "high", 1_000, 9_000),
    "fx-rates": ("dataset", "low", 500, 500),
    "normalize": ("pipeline", "medium", 1_000, 9_000),
    "enrich": ("pipeline", "medium", 1_000, 9_000),
    "revenue": ("pipeline", "high", 1_000, 9_000),
    "dashboard": ("service", "critical", 1_000, 9_000),
}
#: upstream -> downstream, with the share of the upstream's risk the downstream inherits.
DEPENDENCIES = [
    ("orders", "normalize", 1.0),
    ("fx-rates", "normalize", 0.5),
    ("orders", "enrich", 1.0),
    ("normalize", "revenue", 1.0),
    ("enrich", "revenue", 1.0),
    ("revenue", "dashboard", 1.0),
]
#: What each job measures, in its own units (the server keeps ms, records and bytes).
MEASURES: Dict[str, Dict[str, lockstep.MeasureLike]] = {
    "orders": {"latency": (350, "ms"), "records": (1200, "rows")},
    "fx-rates": {"latency": (0.2, "s"), "records": (31, "records")},
    "normalize": {"latency": (2.5, "s"), "records": (1200, "records")},
    "enrich": {"latency": (1.2, "s"), "bytes": (640, "KB")},
    "revenue": {"latency": (0.05, "min"), "bytes": (2.5, "MiB")},
    "dashboard": {"latency": lockstep.Measure(0.4, "s")},
}
#: The longest wait for anything, on a busy machine.
WAIT = 20.0


async def sync(ops: lockstep.Systems, name: str, status: str = "ok") -> lockstep.SystemsAck:
    """One sync of ``name``'s job, reported with what it measured."""
    m = MEASURES[name]
    return await ops.report(
        name, status, latency=m.get("latency"), records=m.get("records"), bytes=m.get("bytes")
    )


async def keep_reporting(ops: lockstep.Systems, healthy: Set[str]) -> None:
    """The healthy jobs sync every 100 ms (``healthy`` may grow meanwhile)."""
    while True:
        for name in sorted(healthy):
            await sync(ops, name)
        await asyncio.sleep(0.1)


def amount(m: lockstep.MeasureLike) -> str:
    """``350 ms``, ``2.5 MiB``."""
    if isinstance(m, lockstep.Measure):
        value, unit = m.value, m.unit
    elif isinstance(m, tuple):
        value, unit = m
    else:
        value, unit = m, ""
    return f"{int(value) if float(value).is_integer() else value} {unit}"


def seconds(ms: int) -> str:
    return f"{ms / 1000:.2f} s"


def describe(i: lockstep.Incident) -> str:
    return f"#{i.id} {i.system} {i.cause}: severity {i.severity}, score {i.score}, {i.at_risk} downstream at risk"


class Strategy:
    """An agent that pauses while any incident is open (say, a strategy trading on the dashboard's
    revenue figures), told by the server on ``systems.incidents``."""

    def __init__(self, agent: lockstep.Agent) -> None:
        self.agent = agent
        self.open: Set[int] = set()

    async def hear(self) -> lockstep.IncidentChange:
        change = lockstep.IncidentChange.from_delivery(await self.agent.next_delivery(timeout=WAIT))
        i = change.incident
        was_open = bool(self.open)
        if change.change == "resolved":
            self.open.discard(i.id)
        else:
            self.open.add(i.id)
        if change.change == "opened":
            what = f"opened: {i.system} {i.cause} (severity {i.severity}, score {i.score})"
        elif change.change == "resolved":
            what = f"resolved: {i.system} {i.cause} after {seconds(i.duration_ms)}"
        else:
            what = f"{change.change}: {i.system} {i.cause}"
        if self.open and not was_open:
            what += " -> pausing"
        elif was_open and not self.open:
            what += " -> resuming"
        print(f"  strategy heard: incident #{i.id} {what}")
        return change


async def print_risk(ops: lockstep.Systems) -> None:
    systems = {s.name: s for s in await ops.list()}
    print("risk (own; propagated = max(own, weight x upstream risk)):")
    for name in SYSTEMS:
        s = systems[name]
        why = ""
        best: Optional[Tuple[float, str, float]] = None
        for up, down, weight in DEPENDENCIES:
            if down == name and weight * systems[up].risk > s.own_risk:
                candidate = (weight * systems[up].risk, up, weight)
                best = candidate if best is None or candidate > best else best
        if best is not None:
            why = f"  <- {best[2]:g} x {best[1]} {systems[best[1]].risk:.2f}"
        elif s.own_risk > 0:
            why = f"  ({'stale' if s.stale else s.last_status})"
        print(f"  {name:<10} own {s.own_risk:.2f}  risk {s.risk:.2f}{why}")


async def main(addr: str) -> None:
    async with lockstep.connect(addr) as client:
        ops = client.systems(actor="pipeline-operator")
        # Start afresh: retire what a previous run left (registering a name again starts it anew).
        for name in SYSTEMS:
            try:
                await ops.retire(name)
            except (lockstep.NotFound, lockstep.FailedPrecondition):
                pass  # never registered (UNKNOWN_SYSTEM), or retired already (SYSTEM_RETIRED)
        for name, (kind, criticality, cadence_ms, tolerance_ms) in SYSTEMS.items():
            await ops.register(
                name, kind=kind, criticality=criticality, cadence_ms=cadence_ms, tolerance_ms=tolerance_ms,
                owner="data-platform",
            )
        for up, down, weight in DEPENDENCIES:
            await ops.depend(up, down, weight)
        print(f"registered {len(SYSTEMS)} systems and {len(await ops.dependencies())} dependencies:")
        for d in await ops.dependencies():
            print(f"  {d.upstream} -> {d.downstream} (weight {d.weight:g})")
        try:
            await ops.depend("dashboard", "orders", 1.0)
        except lockstep.InvalidArgument as exc:
            print(f"refused ({exc.reason.value if exc.reason else '?'}): {exc.message}")

        async with client.register("strategy", role="strategy", interests=[lockstep.INCIDENTS_TOPIC]) as agent:
            strategy = Strategy(agent)
            # Every job syncs once; the server keeps the measurements in canonical units.
            for name in SYSTEMS:
                await sync(ops, name)
            print("first syncs, as sent -> as kept:")
            for name in SYSTEMS:
                event = (await ops.show(name)).events[-1]
                kept = {"latency": (event.latency_ms or 0, "ms"), "records": (event.records or 0, "records"),
                        "bytes": (event.bytes or 0, "B")}
                sent = ", ".join(f"{k} {amount(v)} -> {amount(kept[k])}" for k, v in MEASURES[name].items())
                print(f"  {name:<10} {sent}")

            healthy = {"orders", "enrich", "revenue", "dashboard"}
            reporting = asyncio.ensure_future(keep_reporting(ops, healthy))
            try:
                # fx-rates lags: its job stops syncing, and nobody tells the server so.
                spec = (await ops.show("fx-rates")).info.spec
                print(f"fx-rates stops syncing: stale {spec.cadence_ms + spec.tolerance_ms} ms after its last success")
                opened = await strategy.hear()
                lag = (await ops.show("fx-rates")).info
                since = opened.incident.opened_at - (lag.last_success or 0)
                print(f"fx-rates went stale by itself (stale={lag.stale}): incident #{opened.incident.id} opened "
                      f"{since} ms after its last success: {opened.incident.detail}")
                await print_risk(ops)
                print("blast radius of fx-rates (what each would inherit if it failed; its risk now):")
                for impact in await ops.blast_radius("fx-rates"):
                    print(f"  {impact.system:<10} {impact.criticality:<8} inherits {impact.inherited:.2f}  "
                          f"risk now {impact.risk:.2f}")

                # normalize's run refuses stale rates and fails.
                failed = await sync(ops, "normalize", "failed")
                print("normalize fails:", ", ".join(f"{c.change} incident #{c.incident.id}" for c in failed.changes))
                await strategy.hear()
                await print_risk(ops)
                print("open incidents, most urgent first:")
                ranked = await ops.incidents()
                for rank, incident in enumerate(ranked, 1):
                    print(f"  {rank}. {describe(incident)}")
                # The operator takes the most urgent one.
                top = await ops.ack(ranked[0].id)
                print(f"#{top.id} acknowledged by {top.acked_by}")
                await strategy.hear()
                top = await ops.note(top.id, "rerun once fx-rates is fresh")
                print(f"#{top.id} noted: {top.notes[-1].text!r} ({top.notes[-1].by})")
                await strategy.hear()

                # The source recovers and keeps syncing; normalize runs again.
                recovered = await sync(ops, "fx-rates")
                healthy.add("fx-rates")
                rerun = await sync(ops, "normalize")
                healthy.add("normalize")
                for c in recovered.changes + rerun.changes:
                    i = c.incident
                    print(f"{i.system} recovered: incident #{i.id} ({i.cause}) {c.change} by {i.resolved_by} "
                          f"after {seconds(i.duration_ms)}")
                for _ in recovered.changes + rerun.changes:
                    await strategy.hear()
                open_now = await ops.incidents()
                print("open incidents:", ", ".join(describe(i) for i in open_now) or "none")
                print("risk now:", ", ".join(f"{s.name} {s.risk:.2f}" for s in await ops.list()))
            finally:
                reporting.cancel()
                try:
                    await reporting
                except asyncio.CancelledError:
                    pass


if __name__ == "__main__":
    asyncio.run(main(address()))
