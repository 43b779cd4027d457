"""The server's sync monitor: the systems its users keep in sync, the dependencies between them,
their freshness and risk, and the incidents on them (see "Sync monitor" in docs/PROTOCOL.md).

``client.systems(token, actor=...)`` gives a :class:`Systems` handle::

    ops = client.systems("admin-token", actor="alice")
    await ops.register("prices", kind="dataset", cadence_ms=60_000, tolerance_ms=30_000, criticality="high")
    await ops.register("report", kind="pipeline", cadence_ms=3_600_000, criticality="critical")
    await ops.depend("prices", "report", 0.5)
    await ops.report("prices", "ok", latency=(1.5, "s"), bytes=Measure(2, "MiB"))
    for incident in await ops.incidents():      # the open ones, most urgent first
        print(incident.system, incident.cause, incident.severity, incident.score)

Reading and reporting are open to any caller of every namespace (anyone on a server without
tokens); registering, updating and retiring systems, declaring dependencies and acting on incidents
are operators' actions: the admin token when the server has one, audited under ``actor``.

The server decides the rules: kinds (``dataset``, ``pipeline``, ``service``, ``agent_group``),
criticalities (``low`` < ``medium`` < ``high`` < ``critical``), statuses (``ok``, ``degraded``,
``failed``) and units are checked there, and a refusal raises the client's error for its reason
(``UNKNOWN_UNIT`` listing the known units, ``DEPENDENCY_CYCLE`` naming the cycle, ``SYSTEM_RETIRED``,
``UNKNOWN_SYSTEM``, ``EVENT_RATE_LIMITED``, ``INCIDENT_RESOLVED``...). Measurements are given in the
reporter's unit, as a :class:`Measure`, a ``(value, unit)`` pair, or a bare number in the canonical
unit (``ms`` for drift and latency, ``records``, ``B``); the server keeps them in canonical units.
Times are Unix milliseconds; listings follow the server's pages and return everything.

Every incident change is also published on topic ``systems.incidents`` of the default namespace:
:meth:`IncidentChange.from_delivery` reads one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import grpc.aio

from ._util import OperatorService
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .models import Delivery

__all__ = [
    "Dependency",
    "Impact",
    "Incident",
    "IncidentChange",
    "IncidentNote",
    "INCIDENTS_TOPIC",
    "Measure",
    "MeasureLike",
    "Quantiles",
    "SyncEvent",
    "SystemDetail",
    "SystemInfo",
    "SystemSpec",
    "Systems",
    "SystemsAck",
    "Trends",
    "TrendWindow",
]

#: The topic of the default namespace on which the server publishes every incident change.
INCIDENTS_TOPIC = "systems.incidents"

_UINT64 = 2**64


@dataclass(frozen=True)
class Measure:
    """A measurement in the reporter's unit (``""``: the canonical one). Drift and latency take
    ``ms``, ``s``, ``min``, ``h``; records ``records``, ``rows``; bytes ``B``, ``KB``, ``MB``,
    ``GB``, ``TB`` (powers of 1000), ``KiB``, ``MiB``, ``GiB`` (powers of 1024). The server converts
    it, and refuses an unknown unit (``UNKNOWN_UNIT``, the message listing the known ones) or a
    negative, NaN or infinite value (``BAD_MEASUREMENT``)."""

    value: float
    unit: str = ""


#: What a report's measurement may be given as.
MeasureLike = Union[Measure, Tuple[float, str], float, int]


def _measure(field: str, m: Optional[MeasureLike]) -> Optional[pb.Measure]:
    """``m`` for the wire (``None``: not measured). Only the types are checked here."""
    if m is None:
        return None
    if isinstance(m, Measure):
        value, unit = m.value, m.unit
    elif isinstance(m, tuple):
        if len(m) != 2:
            raise TypeError(f"{field} must be a Measure, a (value, unit) pair or a number, not a {len(m)}-tuple")
        value, unit = m
    else:
        value, unit = m, ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"the value of {field} must be a number, not {type(value).__name__}")
    if not isinstance(unit, str):
        raise TypeError(f"the unit of {field} must be a string, not {type(unit).__name__}")
    return pb.Measure(value=float(value), unit=unit)


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, not {type(value).__name__}")
    return value


def _whole(field: str, value: Any) -> int:
    """A count of milliseconds (or an id) for a uint64 field: the server checks its range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be a whole number, not {type(value).__name__}")
    if not 0 <= value < _UINT64:
        # Nothing outside [0, 2^64) can travel: the field is unsigned.
        from .errors import InvalidArgument

        raise InvalidArgument(f"{field} must be between 0 and {_UINT64 - 1}, not {value}")
    return value


def _weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"weight must be a number, not {type(value).__name__}")
    return float(value)


def _some(t: int) -> Optional[int]:
    return t if t else None


def _optional(msg: Any, name: str) -> Optional[float]:
    return float(getattr(msg, name)) if msg.HasField(name) else None


@dataclass(frozen=True)
class SystemSpec:
    """A system's definition: ``kind`` (``dataset``, ``pipeline``, ``service``, ``agent_group``),
    how often it is expected to sync (``cadence_ms``), how much later a sync may come before it is
    stale (``tolerance_ms``, also the drift beyond which it is lagging), ``criticality`` (``low``,
    ``medium``, ``high``, ``critical``), ``owner``, ``metadata`` and the agents tied to it
    (``agent`` in the default namespace or ``namespace/agent``: a tied agent's lost lease is a
    failed event of the system)."""

    name: str
    kind: str
    cadence_ms: int
    tolerance_ms: int
    criticality: str
    owner: str
    metadata: Dict[str, str]
    agents: Tuple[str, ...]

    @classmethod
    def from_proto(cls, s: Any) -> "SystemSpec":
        return cls(
            name=s.name,
            kind=s.kind or "dataset",
            cadence_ms=s.cadence_ms,
            tolerance_ms=s.tolerance_ms,
            criticality=s.criticality or "medium",
            owner=s.owner,
            metadata=dict(s.metadata),
            agents=tuple(s.agents),
        )


@dataclass(frozen=True)
class SystemInfo:
    """A system as the monitor knows it now: its definition, freshness and risk.

    ``own_risk`` is from its own state (failed 1.0, stale 0.8, degraded 0.5, drift beyond its
    tolerance 0.3; 0 otherwise and when retired); ``risk`` is propagated: the larger of its own
    and, for each upstream, the impact weight times the upstream's risk. ``stale_at`` is when it
    goes stale without a success (``None`` once stale or retired); ``last_success``,
    ``retired_at``, ``last_status`` and ``last_drift_ms`` are ``None`` until there is one."""

    spec: SystemSpec
    registered_at: int
    updated_at: int
    retired_at: Optional[int]
    last_success: Optional[int]
    last_status: Optional[str]
    last_drift_ms: Optional[float]
    stale: bool
    stale_at: Optional[int]
    own_risk: float
    risk: float
    open_incidents: Tuple[int, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def from_proto(cls, i: Any) -> "SystemInfo":
        return cls(
            spec=SystemSpec.from_proto(i.spec),
            registered_at=i.registered_at,
            updated_at=i.updated_at,
            retired_at=_some(i.retired_at),
            last_success=_some(i.last_success),
            last_status=i.last_status or None,
            last_drift_ms=_optional(i, "last_drift_ms"),
            stale=i.stale,
            stale_at=_some(i.stale_at),
            own_risk=i.own_risk,
            risk=i.risk,
            open_incidents=tuple(i.open_incidents),
        )


@dataclass(frozen=True)
class Dependency:
    """``downstream`` is fed by ``upstream`` and inherits ``weight`` (in (0, 1]) times its risk."""

    upstream: str
    downstream: str
    weight: float

    @classmethod
    def from_proto(cls, d: Any) -> "Dependency":
        return cls(d.upstream, d.downstream, d.weight)


@dataclass(frozen=True)
class SyncEvent:
    """A sync event as the server keeps it, in canonical units (``ms``, records, bytes): when the
    sync happened (``at``) and when the server received it, by whom, its status, and what was
    measured (``None``: not reported)."""

    at: int
    received: int
    reporter: str
    status: str
    drift_ms: Optional[float]
    latency_ms: Optional[float]
    records: Optional[float]
    bytes: Optional[float]

    @classmethod
    def from_proto(cls, e: Any) -> "SyncEvent":
        return cls(
            at=e.at,
            received=e.received,
            reporter=e.reporter,
            status=e.status,
            drift_ms=_optional(e, "drift_ms"),
            latency_ms=_optional(e, "latency_ms"),
            records=_optional(e, "records"),
            bytes=_optional(e, "bytes"),
        )


@dataclass(frozen=True)
class Quantiles:
    """p50, p95 and p99 (``None``: no data), each within 2 % of a value of the data at that rank."""

    p50: Optional[float]
    p95: Optional[float]
    p99: Optional[float]

    @classmethod
    def from_proto(cls, q: Any) -> "Quantiles":
        return cls(_optional(q, "p50"), _optional(q, "p95"), _optional(q, "p99"))


@dataclass(frozen=True)
class TrendWindow:
    """One window of a system's trends: its events, latency and drift quantiles (ms), and the
    share of the window the system was fresh (``attainment``; ``None`` for a window of no time)."""

    window_ms: int
    events: int
    latency_ms: Quantiles
    drift_ms: Quantiles
    attainment: Optional[float]

    @classmethod
    def from_proto(cls, w: Any) -> "TrendWindow":
        return cls(
            window_ms=w.window_ms,
            events=w.events,
            latency_ms=Quantiles.from_proto(w.latency_ms),
            drift_ms=Quantiles.from_proto(w.drift_ms),
            attainment=_optional(w, "attainment"),
        )


@dataclass(frozen=True)
class Trends:
    """A system's trends over the last hour and the last day, and its ``direction``
    (``improving``, ``steady`` or ``worsening``: the rule is under "Trends" in docs/PROTOCOL.md)."""

    hour: TrendWindow
    day: TrendWindow
    direction: str

    @classmethod
    def from_proto(cls, t: Any) -> "Trends":
        return cls(TrendWindow.from_proto(t.hour), TrendWindow.from_proto(t.day), t.direction)


@dataclass(frozen=True)
class SystemDetail:
    """One system (``info``), its upstreams and downstreams with their weights, its kept events,
    oldest first, and its trends."""

    info: SystemInfo
    upstreams: Tuple[Dependency, ...]
    downstreams: Tuple[Dependency, ...]
    events: Tuple[SyncEvent, ...]
    trends: Trends

    @classmethod
    def from_proto(cls, d: Any) -> "SystemDetail":
        return cls(
            info=SystemInfo.from_proto(d.system),
            upstreams=tuple(Dependency.from_proto(u) for u in d.upstreams),
            downstreams=tuple(Dependency.from_proto(u) for u in d.downstreams),
            events=tuple(SyncEvent.from_proto(e) for e in d.events),
            trends=Trends.from_proto(d.trends),
        )


@dataclass(frozen=True)
class Impact:
    """One system of a blast radius: the risk it would inherit if the system asked about failed
    (``inherited``: the best product of weights along a path) and its propagated risk now."""

    system: str
    criticality: str
    inherited: float
    risk: float

    @classmethod
    def from_proto(cls, i: Any) -> "Impact":
        return cls(i.system, i.criticality, i.inherited, i.risk)


@dataclass(frozen=True)
class IncidentNote:
    """An operator's note on an incident."""

    at: int
    by: str
    text: str


@dataclass(frozen=True)
class Incident:
    """An incident on a system: ``cause`` ``stale`` or ``failed``; ``count`` occurrences counted
    into it since ``opened_at`` (the last at ``last_seen``, described by ``detail``); who
    acknowledged it and when; operators' notes; when and by whom it was resolved (``auto``: the
    system recovered; ``retired``; or the operator).

    ``severity`` (1, the most severe, to 4), ``score`` (higher first within a severity) and
    ``at_risk`` (downstream systems at risk) are as assessed when listed, or when the change was
    made. ``duration_ms`` is how long it has been open, or was until resolved.
    """

    id: int
    system: str
    cause: str
    opened_at: int
    count: int
    last_seen: int
    detail: str
    acked_by: str
    acked_at: Optional[int]
    notes: Tuple[IncidentNote, ...]
    resolved_at: Optional[int]
    resolved_by: str
    severity: int
    score: int
    at_risk: int
    duration_ms: int

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @classmethod
    def from_proto(cls, i: Any) -> "Incident":
        return cls(
            id=i.id,
            system=i.system,
            cause=i.cause,
            opened_at=i.opened_at,
            count=i.count,
            last_seen=i.last_seen,
            detail=i.detail,
            acked_by=i.acked_by,
            acked_at=_some(i.acked_at),
            notes=tuple(IncidentNote(n.at, n.by, n.text) for n in i.notes),
            resolved_at=_some(i.resolved_at),
            resolved_by=i.resolved_by,
            severity=i.severity,
            score=i.score,
            at_risk=i.at_risk,
            duration_ms=i.duration_ms,
        )

    @classmethod
    def from_json(cls, o: Mapping[str, Any]) -> "Incident":
        """An incident as published on :data:`INCIDENTS_TOPIC`. The published form carries no
        duration: ``duration_ms`` is ``resolved_at - opened_at`` once resolved, else 0."""
        resolved_at = o.get("resolved_at") or None
        opened_at = int(o["opened_at"])
        return cls(
            id=int(o["id"]),
            system=str(o["system"]),
            cause=str(o["cause"]),
            opened_at=opened_at,
            count=int(o.get("count", 1)),
            last_seen=int(o.get("last_seen", opened_at)),
            detail=str(o.get("detail", "")),
            acked_by=str(o.get("acked_by", "")),
            acked_at=o.get("acked_at") or None,
            notes=tuple(IncidentNote(int(n["at"]), str(n["by"]), str(n["text"])) for n in o.get("notes", ())),
            resolved_at=resolved_at,
            resolved_by=str(o.get("resolved_by", "")),
            severity=int(o.get("severity", 0)),
            score=int(o.get("score", 0)),
            at_risk=int(o.get("at_risk", 0)),
            duration_ms=int(resolved_at) - opened_at if resolved_at else 0,
        )


@dataclass(frozen=True)
class IncidentChange:
    """What happened to an incident: ``change`` is ``opened``, ``repeated``, ``resolved``,
    ``acknowledged`` or ``annotated``."""

    change: str
    incident: Incident

    @classmethod
    def from_proto(cls, c: Any) -> "IncidentChange":
        return cls(c.change, Incident.from_proto(c.incident))

    @classmethod
    def from_json(cls, payload: Union[str, bytes, Mapping[str, Any]]) -> "IncidentChange":
        """A change as published on :data:`INCIDENTS_TOPIC`: ``{"change": ..., "incident": {...}}``."""
        o = payload if isinstance(payload, Mapping) else json.loads(payload)
        return cls(str(o["change"]), Incident.from_json(o["incident"]))

    @classmethod
    def from_delivery(cls, delivery: "Delivery") -> "IncidentChange":
        """The change a delivery of :data:`INCIDENTS_TOPIC` carries."""
        return cls.from_json(delivery.payload)


@dataclass(frozen=True)
class SystemsAck:
    """What a change or a report did: ``detail`` in words, and the incidents it opened, repeated
    or resolved (``changes``)."""

    detail: str
    changes: Tuple[IncidentChange, ...]

    @classmethod
    def from_proto(cls, a: Any) -> "SystemsAck":
        return cls(a.detail, tuple(IncidentChange.from_proto(c) for c in a.changes))


class Systems(OperatorService):
    """The server's sync monitor (``client.systems(token, actor=...)``)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: Optional[str] = None,
        actor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> None:
        super().__init__(
            pb_grpc.SystemsStub(channel), token=token, actor=actor, timeout=timeout  # type: ignore[no-untyped-call]
        )

    # ----- the registry (operators' actions)

    @staticmethod
    def _spec(
        name: str,
        kind: str,
        cadence_ms: int,
        tolerance_ms: int,
        criticality: str,
        owner: str,
        metadata: Optional[Mapping[str, str]],
        agents: Iterable[str],
    ) -> pb.SystemSpec:
        if isinstance(agents, str):
            raise TypeError("agents must be a collection of agent names, not one string")
        meta = dict(metadata or {})
        for k, v in meta.items():
            _text("a metadata key", k)
            _text(f"metadata '{k}'", v)
        return pb.SystemSpec(
            name=_text("name", name),
            kind=_text("kind", kind),
            cadence_ms=_whole("cadence_ms", cadence_ms),
            tolerance_ms=_whole("tolerance_ms", tolerance_ms),
            criticality=_text("criticality", criticality),
            owner=_text("owner", owner),
            metadata=meta,
            agents=[_text("an agent", a) for a in agents],
        )

    async def register(
        self,
        name: str,
        *,
        cadence_ms: int,
        tolerance_ms: int = 0,
        kind: str = "dataset",
        criticality: str = "medium",
        owner: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        agents: Iterable[str] = (),
    ) -> SystemsAck:
        """Register a system (see :class:`SystemSpec`). The same definition again is a no-op.

        Raises:
            AlreadyRegistered: another definition is registered under the name (``SYSTEM_EXISTS``:
                use :meth:`update`).
            InvalidArgument: a field is wrong (the message names it).
            Unauthenticated / PermissionDenied: the server's admin token is missing / wrong.
        """
        spec = self._spec(name, kind, cadence_ms, tolerance_ms, criticality, owner, metadata, agents)
        return SystemsAck.from_proto(await self._call("Register", spec))

    async def update(
        self,
        name: str,
        *,
        cadence_ms: int,
        tolerance_ms: int = 0,
        kind: str = "dataset",
        criticality: str = "medium",
        owner: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        agents: Iterable[str] = (),
    ) -> SystemsAck:
        """Replace the definition of an active system, keeping its state and events
        (``NotFound``, ``UNKNOWN_SYSTEM``; ``FailedPrecondition``, ``SYSTEM_RETIRED``)."""
        spec = self._spec(name, kind, cadence_ms, tolerance_ms, criticality, owner, metadata, agents)
        return SystemsAck.from_proto(await self._call("Update", spec))

    async def retire(self, name: str) -> SystemsAck:
        """Retire a system: its open incidents are resolved (``resolved_by`` ``retired``), its
        dependencies removed both ways; it stays listed as retired, and registering the name again
        starts it anew."""
        return SystemsAck.from_proto(await self._call("Retire", pb.SystemRef(name=_text("name", name))))

    async def depend(self, upstream: str, downstream: str, weight: float = 1.0) -> SystemsAck:
        """Declare that ``downstream`` is fed by ``upstream``, with an impact weight in (0, 1]
        (again: sets the weight). Both must be active.

        Raises:
            InvalidArgument: the edge would close a cycle (``DEPENDENCY_CYCLE``; the message names
                it, e.g. ``report -> src-a -> clean -> report``), or the weight is out of range.
            NotFound / FailedPrecondition: a system is unknown (``UNKNOWN_SYSTEM``) / retired
                (``SYSTEM_RETIRED``).
        """
        req = pb.DependencyRequest(
            upstream=_text("upstream", upstream), downstream=_text("downstream", downstream), weight=_weight(weight)
        )
        return SystemsAck.from_proto(await self._call("Depend", req))

    async def undepend(self, upstream: str, downstream: str) -> SystemsAck:
        """Remove a dependency (``NotFound``, ``UNKNOWN_DEPENDENCY``, if it is not declared)."""
        req = pb.DependencyRequest(upstream=_text("upstream", upstream), downstream=_text("downstream", downstream))
        return SystemsAck.from_proto(await self._call("Undepend", req))

    # ----- events (open to every caller of every namespace)

    async def report(
        self,
        system: str,
        status: str,
        *,
        reporter: Optional[str] = None,
        at: int = 0,
        drift: Optional[MeasureLike] = None,
        latency: Optional[MeasureLike] = None,
        records: Optional[MeasureLike] = None,
        bytes: Optional[MeasureLike] = None,
    ) -> SystemsAck:
        """Report a sync of ``system``: ``status`` ``ok``, ``degraded`` (both successes) or
        ``failed``, when it happened (``at``, Unix ms; 0: now), and what was measured, each in the
        reporter's unit (a :class:`Measure`, a ``(value, unit)`` pair, or a number in the canonical
        unit). ``reporter`` names who reports (the per-reporter rate limit counts by it; default:
        the system's name). The answer's ``changes`` are the incidents the event opened, repeated
        or resolved.

        Raises:
            InvalidArgument: ``UNKNOWN_UNIT`` (the message lists the known units),
                ``BAD_MEASUREMENT`` (negative, not finite, too large once converted),
                ``EVENT_TIME_OUT_OF_RANGE`` (``at`` too far from the server's clock), or a bad
                status or reporter; nothing of the event is kept.
            NotFound / FailedPrecondition: ``UNKNOWN_SYSTEM`` / ``SYSTEM_RETIRED``.
            ResourceExhausted: ``EVENT_RATE_LIMITED``: the reporter sent more events this second
                than the server takes (``systems.max_events_per_reporter_per_sec``).
        """
        system = _text("system", system)
        req = pb.SyncEventReport(
            system=system,
            reporter=_text("reporter", system if reporter is None else reporter),
            status=_text("status", status),
            at=_whole("at", at),
        )
        for field, m in (("drift", drift), ("latency", latency), ("records", records), ("bytes", bytes)):
            wire = _measure(field, m)
            if wire is not None:
                getattr(req, field).CopyFrom(wire)
        return SystemsAck.from_proto(await self._call("Report", req))

    # ----- reads (open to every caller of every namespace)

    async def list(self, *, include_retired: bool = False, page_size: int = 0) -> List[SystemInfo]:
        """Every active system (and the retired ones if asked), by name. ``page_size`` is how many
        the server sends a page (0: its default); the whole listing is returned either way."""
        req = pb.SystemListRequest(include_retired=include_retired, page_size=_whole("page_size", page_size))
        out: List[SystemInfo] = []
        while True:
            resp = await self._call("List", req)
            out.extend(SystemInfo.from_proto(s) for s in resp.systems)
            if not resp.next_page_token:
                return out
            req.page_token = resp.next_page_token

    async def show(self, name: str) -> SystemDetail:
        """One system with its neighbours and kept events (``NotFound``, ``UNKNOWN_SYSTEM``)."""
        return SystemDetail.from_proto(await self._call("Show", pb.SystemRef(name=_text("name", name))))

    async def blast_radius(self, name: str, *, page_size: int = 0) -> List[Impact]:
        """What depends on ``name``, transitively, in topological order, with the risk each would
        inherit if it failed and its risk now."""
        req = pb.BlastRadiusRequest(name=_text("name", name), page_size=_whole("page_size", page_size))
        out: List[Impact] = []
        while True:
            resp = await self._call("BlastRadius", req)
            out.extend(Impact.from_proto(i) for i in resp.impacts)
            if not resp.next_page_token:
                return out
            req.page_token = resp.next_page_token

    async def dependencies(self, *, page_size: int = 0) -> List[Dependency]:
        """Every dependency, by upstream then downstream."""
        req = pb.DependenciesRequest(page_size=_whole("page_size", page_size))
        out: List[Dependency] = []
        while True:
            resp = await self._call("Dependencies", req)
            out.extend(Dependency.from_proto(d) for d in resp.dependencies)
            if not resp.next_page_token:
                return out
            req.page_token = resp.next_page_token

    async def incidents(self, *, include_resolved: bool = False, page_size: int = 0) -> List[Incident]:
        """The open incidents in priority order — severity (1 first), then score (higher first),
        then age (older first), then id — each assessed now; then, if asked, the kept resolved
        ones, oldest first."""
        req = pb.IncidentsRequest(include_resolved=include_resolved, page_size=_whole("page_size", page_size))
        out: List[Incident] = []
        while True:
            resp = await self._call("Incidents", req)
            out.extend(Incident.from_proto(i) for i in resp.incidents)
            if not resp.next_page_token:
                return out
            req.page_token = resp.next_page_token

    # ----- incidents (operators' actions)

    async def ack(self, id: int) -> Incident:
        """Acknowledge an open incident (again: the latest counts); returns it after.

        Raises:
            NotFound: ``UNKNOWN_INCIDENT`` (never opened, or resolved and no longer kept).
            FailedPrecondition: ``INCIDENT_RESOLVED``.
        """
        return Incident.from_proto(await self._call("AckIncident", pb.IncidentRef(id=_whole("id", id))))

    async def note(self, id: int, text: str) -> Incident:
        """Annotate an open incident (1 to 1024 bytes; the last 32 notes are kept)."""
        req = pb.IncidentNoteRequest(id=_whole("id", id), text=_text("text", text))
        return Incident.from_proto(await self._call("NoteIncident", req))

    async def resolve(self, id: int) -> Incident:
        """Resolve an open incident by hand (``resolved_by`` is the operator); if its cause
        persists, its next occurrence opens a new one."""
        return Incident.from_proto(await self._call("ResolveIncident", pb.IncidentRef(id=_whole("id", id))))
