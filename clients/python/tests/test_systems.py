"""The sync monitor through ``client.systems()`` against a real server: the registry and units
converted to canonical ones; dependencies, a cycle refused naming it, risk propagated by the
documented rule, the blast radius in topological order, incidents in priority order and published
on ``systems.incidents``; a system nobody reports on going stale by itself; operators' actions with
the admin token (refused without it, audited); bad input and floods refused with their reasons."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Callable, Dict, List

import pytest

import lockstep

from conftest import REWORDED, ServerProcess, eventually

#: The longest wait for anything, on a busy machine.
T = 20.0
TOKEN = "systems-admin-token"
HOUR = 3_600_000

#: Two sources, three transforms, a dashboard: name -> (kind, criticality).
PIPELINE = {
    "src-a": ("dataset", "high"),
    "src-b": ("dataset", "medium"),
    "clean": ("pipeline", "medium"),
    "enrich": ("pipeline", "medium"),
    "report": ("pipeline", "high"),
    "dashboard": ("service", "critical"),
}
EDGES = [
    ("src-a", "clean", 1.0),
    ("src-b", "clean", 0.5),
    ("src-a", "enrich", 1.0),
    ("clean", "report", 0.5),
    ("enrich", "report", 1.0),
    ("report", "dashboard", 1.0),
]


async def pipeline(ops: lockstep.Systems) -> None:
    for name, (kind, criticality) in PIPELINE.items():
        await ops.register(name, kind=kind, criticality=criticality, cadence_ms=HOUR, tolerance_ms=60_000)
    for up, down, weight in EDGES:
        await ops.depend(up, down, weight)


async def risks(ops: lockstep.Systems) -> Dict[str, float]:
    return {s.name: s.risk for s in await ops.list()}


def close(got: Dict[str, float], want: Dict[str, float]) -> bool:
    return got.keys() == want.keys() and all(math.isclose(got[k], want[k], abs_tol=1e-9) for k in want)


async def test_registry_show_and_units_converted_to_canonical_ones(client: lockstep.Client) -> None:
    ops = client.systems()
    ack = await ops.register(
        "orders",
        kind="service",
        cadence_ms=HOUR,
        tolerance_ms=300_000,
        criticality="high",
        owner="core",
        metadata={"team": "core"},
        agents=["ingest-1"],
    )
    assert ack.changes == ()
    # The same definition again is a no-op; another one under the name is refused.
    await ops.register(
        "orders", kind="service", cadence_ms=HOUR, tolerance_ms=300_000, criticality="high", owner="core",
        metadata={"team": "core"}, agents=["ingest-1"],
    )
    with pytest.raises(lockstep.AlreadyRegistered) as exists:
        await ops.register("orders", kind="dataset", cadence_ms=HOUR)
    assert exists.value.reason is lockstep.Reason.SYSTEM_EXISTS

    info = (await ops.show("orders")).info
    assert info.spec == lockstep.SystemSpec(
        name="orders", kind="service", cadence_ms=HOUR, tolerance_ms=300_000, criticality="high", owner="core",
        metadata={"team": "core"}, agents=("ingest-1",),
    )
    assert (info.stale, info.last_success, info.last_status, info.retired_at) == (False, None, None, None)
    assert info.stale_at == info.registered_at + HOUR + 300_000
    assert (info.own_risk, info.risk, info.open_incidents) == (0.0, 0.0, ())

    # Units in the reporter's terms, kept in canonical ones; a bare number is the canonical unit.
    await ops.report(
        "orders", "ok", latency=(1.5, "s"), bytes=lockstep.Measure(2, "MiB"), records=(30, "rows"), drift=250
    )
    detail = await ops.show("orders")
    (event,) = detail.events
    assert (event.status, event.reporter) == ("ok", "orders"), "the reporter defaults to the system's name"
    assert (event.latency_ms, event.bytes, event.records, event.drift_ms) == (1500.0, 2_097_152.0, 30.0, 250.0)
    assert detail.info.last_success == event.at and detail.info.last_status == "ok"
    assert detail.info.stale_at == event.at + HOUR + 300_000
    # Trends: the one event in both windows, its latency within the sketch's 2 %.
    trends = detail.trends
    assert (trends.hour.events, trends.day.events, trends.direction) == (1, 1, "steady")
    assert trends.hour.latency_ms.p99 is not None and abs(trends.hour.latency_ms.p99 - 1500.0) <= 30.0
    assert trends.hour.drift_ms.p50 is not None and abs(trends.hour.drift_ms.p50 - 250.0) <= 5.0
    assert trends.hour.attainment == 1.0 and trends.hour.window_ms == HOUR
    # Degraded (0.5) beats drift beyond the tolerance (0.3); drift alone is 0.3.
    await ops.report("orders", "degraded", reporter="ingest-1", drift=(10, "min"))
    assert (await ops.show("orders")).info.own_risk == 0.5
    await ops.report("orders", "ok", reporter="ingest-1", drift=(6, "min"), bytes=(3, "KB"))
    info = (await ops.show("orders")).info
    assert (info.own_risk, info.last_drift_ms) == (0.3, 360_000.0)

    # An update keeps the state and the events.
    await ops.update("orders", kind="service", cadence_ms=HOUR, tolerance_ms=600_000, criticality="critical")
    detail = await ops.show("orders")
    assert (detail.info.spec.criticality, detail.info.spec.tolerance_ms, len(detail.events)) == ("critical", 600_000, 3)
    assert detail.info.own_risk == 0.0, "6 min of drift is within the new 10 min tolerance"
    assert [e.bytes for e in detail.events] == [2_097_152.0, None, 3000.0]

    # Listings follow the pages.
    for name in ("b-feed", "a-feed", "c-feed"):
        await ops.register(name, cadence_ms=HOUR)
    names = ["a-feed", "b-feed", "c-feed", "orders"]
    assert [s.name for s in await ops.list(page_size=1)] == names
    assert [s.name for s in await ops.list()] == names


async def test_bad_input_gets_its_reason_and_nothing_is_kept(client: lockstep.Client) -> None:
    ops = client.systems()
    await ops.register("ledger", cadence_ms=HOUR, criticality="low")

    with pytest.raises(lockstep.InvalidArgument) as unit:
        await ops.report("ledger", "ok", latency=(3, "fortnights"))
    assert unit.value.reason is lockstep.Reason.UNKNOWN_UNIT
    if not REWORDED:
        assert "fortnights" in str(unit.value) and "ms, s, min, h" in str(unit.value), "lists the known units"
    with pytest.raises(lockstep.InvalidArgument) as size_unit:
        await ops.report("ledger", "ok", bytes=(3, "kb"))
    assert size_unit.value.reason is lockstep.Reason.UNKNOWN_UNIT, "units are case-sensitive"
    if not REWORDED:
        assert "KiB" in str(size_unit.value)
    for bad in ((-1, "s"), (float("nan"), "ms"), (float("inf"), "")):
        with pytest.raises(lockstep.InvalidArgument) as measurement:
            await ops.report("ledger", "ok", drift=bad)
        assert measurement.value.reason is lockstep.Reason.BAD_MEASUREMENT, bad
    with pytest.raises(lockstep.InvalidArgument) as when:
        await ops.report("ledger", "ok", at=1)
    assert when.value.reason is lockstep.Reason.EVENT_TIME_OUT_OF_RANGE
    with pytest.raises(lockstep.InvalidArgument) as status:
        await ops.report("ledger", "")
    assert status.value.reason is lockstep.Reason.INVALID_ARGUMENT
    with pytest.raises(lockstep.InvalidArgument):
        await ops.report("ledger", "sideways")
    with pytest.raises(lockstep.NotFound) as unknown:
        await ops.report("nobody", "ok")
    assert unknown.value.reason is lockstep.Reason.UNKNOWN_SYSTEM
    with pytest.raises(lockstep.NotFound) as unknown:
        await ops.show("nobody")
    assert unknown.value.reason is lockstep.Reason.UNKNOWN_SYSTEM
    assert (await ops.show("ledger")).events == (), "nothing of a refused event is kept"

    # Types are checked before anything is sent.
    with pytest.raises(TypeError):
        await ops.report("ledger", "ok", latency="1.5s")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ops.report("ledger", "ok", latency=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ops.register("x", cadence_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ops.register("x", cadence_ms=HOUR, agents="one-agent")
    with pytest.raises(lockstep.InvalidArgument) as negative:
        await ops.register("x", cadence_ms=-1)
    assert negative.value.reason is None, "refused by the client: a negative count cannot travel"
    # The server checks the rules: a zero cadence, an unknown kind, a weight out of range.
    with pytest.raises(lockstep.InvalidArgument):
        await ops.register("x", cadence_ms=0)
    with pytest.raises(lockstep.InvalidArgument):
        await ops.register("x", cadence_ms=HOUR, kind="spreadsheet")
    await ops.register("ticks", cadence_ms=HOUR)
    with pytest.raises(lockstep.InvalidArgument):
        await ops.depend("ticks", "ledger", 1.5)
    assert [s.name for s in await ops.list()] == ["ledger", "ticks"]

    # Retired: events and dependencies naming it are refused; it stays listed as retired.
    await ops.retire("ticks")
    with pytest.raises(lockstep.FailedPrecondition) as retired:
        await ops.report("ticks", "ok")
    assert retired.value.reason is lockstep.Reason.SYSTEM_RETIRED
    with pytest.raises(lockstep.FailedPrecondition) as retired:
        await ops.depend("ticks", "ledger")
    assert retired.value.reason is lockstep.Reason.SYSTEM_RETIRED
    assert [s.name for s in await ops.list()] == ["ledger"]
    listed = {s.name: s for s in await ops.list(include_retired=True)}
    assert listed["ticks"].retired_at is not None and listed["ledger"].retired_at is None


async def test_a_flood_from_one_reporter_is_rate_limited(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    config = tmp_path / "lockstep.toml"
    config.write_text("[systems]\nmax_events_per_reporter_per_sec = 2\n")
    server = server_factory("--config", str(config))
    async with lockstep.connect(server.address) as client:
        ops = client.systems()
        await ops.register("ledger", cadence_ms=HOUR)
        # 20 at once, 2 a second allowed: at least 18 would have to be spread over 9 s to pass.
        outcomes = await asyncio.gather(
            *(ops.report("ledger", "ok", reporter="flood") for _ in range(20)), return_exceptions=True
        )
        limited = [o for o in outcomes if isinstance(o, BaseException)]
        taken = [o for o in outcomes if isinstance(o, lockstep.SystemsAck)]
        assert len(limited) + len(taken) == 20
        assert limited and taken, outcomes
        assert all(isinstance(e, lockstep.ResourceExhausted) for e in limited), limited
        assert all(e.reason is lockstep.Reason.EVENT_RATE_LIMITED for e in limited), limited  # type: ignore[union-attr]
        await ops.report("ledger", "ok", reporter="another")  # another reporter is not limited
        assert len((await ops.show("ledger")).events) == len(taken) + 1, "refused events are not kept"


async def test_dependencies_risk_blast_radius_and_incidents_in_priority_order(client: lockstep.Client) -> None:
    ops = client.systems()
    await pipeline(ops)
    watcher = await client.register("watcher", role="strategy", interests=[lockstep.INCIDENTS_TOPIC])
    heard: List[lockstep.IncidentChange] = []

    async def hear(n: int) -> None:
        while len(heard) < n:
            d = await watcher.next_delivery(timeout=T)
            assert d.topic == lockstep.INCIDENTS_TOPIC
            heard.append(lockstep.IncidentChange.from_delivery(d))

    deps = await ops.dependencies()
    assert [(d.upstream, d.downstream, d.weight) for d in deps] == sorted(EDGES)
    assert await ops.dependencies(page_size=2) == deps

    # A cycle is refused, naming it, and changes nothing.
    with pytest.raises(lockstep.InvalidArgument) as cycle:
        await ops.depend("dashboard", "src-b", 1.0)
    assert cycle.value.reason is lockstep.Reason.DEPENDENCY_CYCLE
    if not REWORDED:
        assert "dashboard -> src-b -> clean -> report -> dashboard" in str(cycle.value)
    assert await ops.dependencies() == deps
    with pytest.raises(lockstep.NotFound) as undeclared:
        await ops.undepend("src-b", "enrich")
    assert undeclared.value.reason is lockstep.Reason.UNKNOWN_DEPENDENCY
    # Declaring an edge again sets its weight.
    await ops.depend("src-b", "clean", 0.25)
    clean = await ops.show("clean")
    assert {(u.upstream, u.weight) for u in clean.upstreams} == {("src-a", 1.0), ("src-b", 0.25)}
    assert [(d.downstream, d.weight) for d in clean.downstreams] == [("report", 0.5)]
    await ops.depend("src-b", "clean", 0.5)

    # src-b fails: risk(s) = max(own(s), max over upstreams u of weight(u -> s) * risk(u)).
    ack = await ops.report("src-b", "failed", reporter="etl")
    ((change, opened),) = ((c.change, c.incident) for c in ack.changes)
    assert (change, opened.system, opened.cause, opened.count) == ("opened", "src-b", "failed", 1)
    assert close(
        await risks(ops),
        {"src-a": 0.0, "src-b": 1.0, "clean": 0.5, "enrich": 0.0, "report": 0.25, "dashboard": 0.25},
    )
    assert (await ops.show("clean")).info.own_risk == 0.0
    # At risk (>= 30 %): clean only; impact medium -> severity 3; score 10 x 2 + 2.
    (only,) = await ops.incidents()
    assert (only.id, only.severity, only.score, only.at_risk) == (opened.id, 3, 22, 1)
    assert (opened.severity, opened.score) == (3, 22), "assessed when it opened"

    # The blast radius: topological order, what each would inherit if src-b failed, its risk now.
    blast = await ops.blast_radius("src-b")
    assert [(i.system, i.criticality) for i in blast] == [
        ("clean", "medium"),
        ("report", "high"),
        ("dashboard", "critical"),
    ]
    assert [i.inherited for i in blast] == pytest.approx([0.5, 0.25, 0.25])
    assert [i.risk for i in blast] == pytest.approx([0.5, 0.25, 0.25])
    assert await ops.blast_radius("src-b", page_size=1) == blast
    order = [i.system for i in await ops.blast_radius("src-a")]
    assert sorted(order[:2]) == ["clean", "enrich"] and order[2:] == ["report", "dashboard"], "topological"
    assert await ops.blast_radius("dashboard") == []

    # src-a fails too: everything downstream is at full risk (the best path, never a sum).
    await ops.report("src-a", "failed")
    assert close(
        await risks(ops),
        {"src-a": 1.0, "src-b": 1.0, "clean": 1.0, "enrich": 1.0, "report": 1.0, "dashboard": 1.0},
    )
    # src-a puts all four at risk (severity 1, the critical dashboard among them): 10 x 3 + 2 + 2 +
    # 3 + 4 = 41. src-b still passes on only 0.5 to clean (and 0.25 beyond): what src-a puts at
    # risk is src-a's incident's, so src-b stays at severity 3, score 22.
    ranked = await ops.incidents()
    assert [(i.system, i.severity, i.score, i.at_risk) for i in ranked] == [
        ("src-a", 1, 41, 4),
        ("src-b", 3, 22, 1),
    ]
    assert all(i.open and i.duration_ms >= 0 for i in ranked)
    assert (await ops.show("clean")).info.open_incidents == ()
    assert (await ops.show("src-b")).info.open_incidents == (opened.id,)
    # A repeat is counted into the open incident.
    ack = await ops.report("src-b", "failed", reporter="etl")
    assert [(c.change, c.incident.id, c.incident.count) for c in ack.changes] == [("repeated", opened.id, 2)]

    # Recovery resolves it by itself, with its duration; src-a keeps clean at 1.0 through weight 1.
    ack = await ops.report("src-b", "ok", latency=(800, "ms"))
    ((change, resolved),) = ((c.change, c.incident) for c in ack.changes)
    assert (change, resolved.id, resolved.resolved_by) == ("resolved", opened.id, "auto")
    assert resolved.resolved_at is not None and resolved.duration_ms == resolved.resolved_at - resolved.opened_at
    assert (await ops.show("clean")).info.risk == 1.0
    everything = await ops.incidents(include_resolved=True)
    assert [(i.system, i.open) for i in everything] == [("src-a", True), ("src-b", False)]

    # Retiring src-a resolves its incident and removes its edges: its downstream falls back to 0.
    src_a = ranked[0].id
    ack = await ops.retire("src-a")
    assert [(c.change, c.incident.id, c.incident.resolved_by) for c in ack.changes] == [("resolved", src_a, "retired")]
    assert close(await risks(ops), {"src-b": 0.0, "clean": 0.0, "enrich": 0.0, "report": 0.0, "dashboard": 0.0})
    assert [(d.upstream, d.downstream, d.weight) for d in await ops.dependencies()] == sorted(
        e for e in EDGES if e[0] != "src-a"
    )

    # Every change was published for agents, in order.
    await hear(5)
    assert [(c.change, c.incident.system) for c in heard] == [
        ("opened", "src-b"),
        ("opened", "src-a"),
        ("repeated", "src-b"),
        ("resolved", "src-b"),
        ("resolved", "src-a"),
    ]
    assert heard[0].incident.id == opened.id and (heard[0].incident.severity, heard[0].incident.score) == (3, 22)
    assert heard[3].incident.duration_ms == resolved.duration_ms
    await watcher.close()


async def test_a_system_nobody_reports_on_goes_stale_by_itself(client: lockstep.Client) -> None:
    ops = client.systems()
    await ops.register("feed", cadence_ms=300, tolerance_ms=200, criticality="high")
    info = (await ops.show("feed")).info
    assert not info.stale and info.stale_at == info.registered_at + 500

    async def stale_incident() -> bool:
        return any(i.system == "feed" for i in await ops.incidents())

    await eventually(stale_incident, timeout=T, what="feed goes stale")
    (incident,) = await ops.incidents()
    assert (incident.cause, incident.count, incident.severity) == ("stale", 1, 2), "high, nothing downstream"
    assert incident.opened_at >= info.registered_at + 500
    if not REWORDED:
        assert "cadence 300 ms + tolerance 200 ms" in incident.detail
    info = (await ops.show("feed")).info
    assert (info.stale, info.stale_at, info.own_risk, info.open_incidents) == (True, None, 0.8, (incident.id,))

    ack = await ops.report("feed", "ok")
    assert [(c.change, c.incident.id, c.incident.resolved_by) for c in ack.changes] == [
        ("resolved", incident.id, "auto")
    ]
    info = (await ops.show("feed")).info
    assert not info.stale and info.own_risk == 0.0 and info.stale_at is not None


async def test_operators_act_on_incidents_with_the_admin_token_and_are_audited(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(admin_token=TOKEN)
    async with lockstep.connect(server.address) as client:
        anyone = client.systems()
        with pytest.raises(lockstep.Unauthenticated):
            await anyone.register("orders", cadence_ms=HOUR)
        with pytest.raises(lockstep.PermissionDenied):
            await client.systems("wrong-token").register("orders", cadence_ms=HOUR)
        ops = client.systems(TOKEN, actor="alice")
        await ops.register("orders", cadence_ms=HOUR, criticality="high")
        with pytest.raises(lockstep.Unauthenticated):
            await anyone.depend("orders", "orders")

        # Reporting and reading need no token.
        ack = await anyone.report("orders", "failed", reporter="ingest", latency=(1.5, "s"))
        ((change, opened),) = ((c.change, c.incident) for c in ack.changes)
        assert change == "opened"
        assert [i.id for i in await anyone.incidents()] == [opened.id]
        assert [s.name for s in await anyone.list()] == ["orders"]

        with pytest.raises(lockstep.Unauthenticated):
            await anyone.ack(opened.id)
        acked = await ops.ack(opened.id)
        assert (acked.acked_by, acked.open) == ("alice", True) and acked.acked_at is not None
        noted = await ops.note(opened.id, "failover to the replica")
        assert [(n.by, n.text) for n in noted.notes] == [("alice", "failover to the replica")]
        resolved = await ops.resolve(opened.id)
        assert (resolved.resolved_by, resolved.open) == ("alice", False)
        assert resolved.resolved_at is not None and resolved.duration_ms == resolved.resolved_at - resolved.opened_at

        for act in (ops.ack(opened.id), ops.note(opened.id, "again"), ops.resolve(opened.id)):
            with pytest.raises(lockstep.FailedPrecondition) as over:
                await act
            assert over.value.reason is lockstep.Reason.INCIDENT_RESOLVED
        with pytest.raises(lockstep.NotFound) as unknown:
            await ops.ack(opened.id + 1000)
        assert unknown.value.reason is lockstep.Reason.UNKNOWN_INCIDENT
        # The cause persists: its next occurrence opens a new incident.
        again = (await anyone.report("orders", "failed", reporter="ingest")).changes
        assert [(c.change, c.incident.id > opened.id) for c in again] == [("opened", True)]

        # The audit log names the operator for each action, and the server for incident changes.
        log = await client.admin(TOKEN).audit_log(100)
        entries = [(e.command, e.actor, e.outcome) for e in log.entries]
        for command in ("register_system", "ack_incident", "note_incident", "resolve_incident"):
            assert (command, "alice", "ok") in entries, (command, entries)
        assert ("incident_opened", "lockstep", "ok") in entries, entries
        assert ("ack_incident", "alice", "refused") in entries, "refusals are audited too"
