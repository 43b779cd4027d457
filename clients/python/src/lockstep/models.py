"""Plain data types returned by the lockstep client.

These are frozen dataclasses built from the protocol messages, so callers never handle protobuf
objects. Each has a ``from_proto`` constructor used by the client.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .v1 import lockstep_pb2 as pb

__all__ = [
    "AgentStatus",
    "RegistryEventKind",
    "SyncState",
    "AgentInfo",
    "RegistryEvent",
    "Delivery",
    "StateSnapshot",
    "StateView",
    "SyncResult",
    "SyncPointStatus",
    "SyncDiagnosis",
    "Limits",
    "ServerInfo",
    "Registration",
]


class AgentStatus(enum.IntEnum):
    """An agent's status in the registry. ``LOST`` is set by the server when a lease expires."""

    UNSPECIFIED = 0
    ACTIVE = 1
    IDLE = 2
    BUSY = 3
    SYNCING = 4
    PAUSED = 5
    LOST = 6

    @classmethod
    def parse(cls, value: Union["AgentStatus", str, int]) -> "AgentStatus":
        """Accept an :class:`AgentStatus`, its name (``"busy"``, ``"AGENT_STATUS_BUSY"``) or number."""
        if isinstance(value, AgentStatus):
            return value
        if isinstance(value, int):
            return cls(value)
        name = str(value).strip().upper()
        if name.startswith("AGENT_STATUS_"):
            name = name[len("AGENT_STATUS_"):]
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown agent status {value!r}; use one of {[s.name.lower() for s in cls]}") from None

    def __str__(self) -> str:
        return self.name.lower()


class RegistryEventKind(enum.IntEnum):
    """What happened to an agent, as seen by :meth:`lockstep.Client.watch_registry`."""

    UNSPECIFIED = 0
    SNAPSHOT = 1  #: already registered when the watch began
    JOINED = 2
    LEFT = 3  #: deregistered or disconnected cleanly
    STATUS = 4  #: status changed
    LOST = 5  #: lease expired

    def __str__(self) -> str:
        return self.name.lower()


class SyncState(enum.IntEnum):
    """Where a sync point (barrier) stands."""

    UNSPECIFIED = 0
    WAITING = 1
    COMPLETED = 2
    FORCED = 3
    TIMED_OUT = 4
    FAILED = 5

    def __str__(self) -> str:
        return self.name.lower()


def _enum(cls: Any, value: int) -> Any:
    try:
        return cls(value)
    except ValueError:
        return cls(0)


@dataclass(frozen=True)
class AgentInfo:
    """One registered agent, as the registry sees it."""

    agent_id: str
    namespace: str = ""
    role: str = ""
    capabilities: Tuple[str, ...] = ()
    interests: Tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    status: AgentStatus = AgentStatus.UNSPECIFIED
    registered_at_ms: int = 0
    last_heartbeat_ms: int = 0
    state_version: int = 0
    queue_depth: int = 0
    dropped: int = 0
    delivered: int = 0

    @classmethod
    def from_proto(cls, msg: pb.AgentInfo) -> "AgentInfo":
        return cls(
            agent_id=msg.agent_id,
            namespace=msg.namespace,
            role=msg.role,
            capabilities=tuple(msg.capabilities),
            interests=tuple(msg.interests),
            metadata=dict(msg.metadata),
            status=_enum(AgentStatus, msg.status),
            registered_at_ms=msg.registered_at_ms,
            last_heartbeat_ms=msg.last_heartbeat_ms,
            state_version=msg.state_version,
            queue_depth=msg.queue_depth,
            dropped=msg.dropped,
            delivered=msg.delivered,
        )

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict (statuses as lower-case names)."""
        return {
            "agent_id": self.agent_id,
            "namespace": self.namespace,
            "role": self.role,
            "capabilities": list(self.capabilities),
            "interests": list(self.interests),
            "metadata": dict(self.metadata),
            "status": str(self.status),
            "registered_at_ms": self.registered_at_ms,
            "last_heartbeat_ms": self.last_heartbeat_ms,
            "state_version": self.state_version,
            "queue_depth": self.queue_depth,
            "dropped": self.dropped,
            "delivered": self.delivered,
        }


@dataclass(frozen=True)
class RegistryEvent:
    """A change in the registry: an agent joined, left, was lost, or changed status."""

    kind: RegistryEventKind
    agent: AgentInfo
    previous_status: AgentStatus = AgentStatus.UNSPECIFIED

    @classmethod
    def from_proto(cls, msg: pb.RegistryEvent) -> "RegistryEvent":
        return cls(
            kind=_enum(RegistryEventKind, msg.kind),
            agent=AgentInfo.from_proto(msg.agent),
            previous_status=_enum(AgentStatus, msg.previous_status),
        )


@dataclass(frozen=True)
class Delivery:
    """A message routed to this agent because one of its interests matched the topic.

    ``seq`` increases by one per message routed to this agent; ``missed_before`` > 0 says that many
    messages were dropped (the agent's queue overflowed) just before this one.
    """

    seq: int
    topic: str
    payload: bytes
    content_type: str = ""
    publisher: str = ""
    missed_before: int = 0

    @classmethod
    def from_proto(cls, msg: pb.Delivery, *, seq: int, missed_before: int = 0) -> "Delivery":
        """Build one delivery of a batch: ``seq`` and ``missed_before`` come from the batch."""
        return cls(
            seq=seq,
            topic=msg.topic,
            payload=bytes(msg.payload),
            content_type=msg.content_type,
            publisher=msg.publisher,
            missed_before=missed_before,
        )

    def text(self, encoding: str = "utf-8") -> str:
        """The payload decoded as text."""
        return self.payload.decode(encoding)

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    @property
    def data(self) -> Any:
        """The payload decoded by its content type: JSON values, text, or the raw bytes."""
        ctype = self.content_type.split(";")[0].strip().lower()
        if ctype == "application/json" or ctype.endswith("+json"):
            return self.json()
        if ctype.startswith("text/"):
            return self.text()
        return self.payload


@dataclass(frozen=True)
class StateSnapshot:
    """An agent's whole state at one version, from :meth:`lockstep.Client.get_state`."""

    agent_id: str
    version: int
    state: Dict[str, Any]


@dataclass(frozen=True)
class StateView:
    """A watched agent's state after a change, as yielded by :class:`lockstep.StateWatch`.

    ``state`` is the whole current state (a private copy), ``delta`` the merge patch that produced
    it (``None`` after a resync from a snapshot), ``removed`` is true when the agent left.
    """

    agent_id: str
    version: int
    state: Dict[str, Any]
    delta: Optional[Dict[str, Any]] = None
    removed: bool = False
    resynced: bool = False


@dataclass(frozen=True)
class SyncResult:
    """A completed barrier: who arrived, in order, and what each brought.

    ``payloads[i]`` is what ``arrival_order[i]`` sent. The object is truthy, so code written for
    ``success = await agent.sync_with_agents(...)`` keeps working.
    """

    sync_id: str
    arrival_order: Tuple[str, ...]
    payloads: Tuple[bytes, ...]
    forced: bool = False

    @classmethod
    def from_proto(cls, msg: pb.SyncResult) -> "SyncResult":
        return cls(
            sync_id=msg.sync_id,
            arrival_order=tuple(msg.arrival_order),
            payloads=tuple(bytes(p) for p in msg.payloads),
            forced=msg.forced,
        )

    @property
    def success(self) -> bool:
        """Always true: a failed barrier raises instead of returning."""
        return True

    def __bool__(self) -> bool:
        return True

    def payload_of(self, agent_id: str) -> bytes:
        """What ``agent_id`` brought to the barrier (``KeyError`` if it did not arrive)."""
        try:
            return self.payloads[self.arrival_order.index(agent_id)]
        except ValueError:
            raise KeyError(agent_id) from None

    def payload_map(self) -> Dict[str, bytes]:
        """``{agent_id: payload}`` for every arrival."""
        return dict(zip(self.arrival_order, self.payloads))


@dataclass(frozen=True)
class SyncPointStatus:
    """The state of one sync point, as the server reports it for diagnostics."""

    sync_id: str
    state: SyncState
    participants: str = ""
    required: Tuple[str, ...] = ()
    required_count: int = 0
    arrived: Tuple[str, ...] = ()
    missing: Tuple[str, ...] = ()
    created_at_ms: int = 0
    waiting_since_ms: int = 0
    deadline_ms: int = 0
    finished_at_ms: int = 0
    failure: str = ""
    now_ms: int = 0

    @classmethod
    def from_proto(cls, msg: pb.SyncPointStatus) -> "SyncPointStatus":
        return cls(
            sync_id=msg.sync_id,
            state=_enum(SyncState, msg.state),
            participants=msg.participants,
            required=tuple(msg.required),
            required_count=msg.required_count,
            arrived=tuple(msg.arrived),
            missing=tuple(msg.missing),
            created_at_ms=msg.created_at_ms,
            waiting_since_ms=msg.waiting_since_ms,
            deadline_ms=msg.deadline_ms,
            finished_at_ms=msg.finished_at_ms,
            failure=msg.failure,
            now_ms=msg.now_ms,
        )

    @property
    def waiting(self) -> bool:
        return self.state == SyncState.WAITING

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "sync_id": self.sync_id,
            "state": str(self.state),
            "participants": self.participants,
            "required": list(self.required),
            "required_count": self.required_count,
            "arrived": list(self.arrived),
            "missing": list(self.missing),
            "created_at_ms": self.created_at_ms,
            "waiting_since_ms": self.waiting_since_ms,
            "deadline_ms": self.deadline_ms,
            "finished_at_ms": self.finished_at_ms,
            "failure": self.failure,
            "now_ms": self.now_ms,
        }


@dataclass(frozen=True)
class SyncDiagnosis:
    """What the server thinks is wrong with a sync point, and what to do about it."""

    status: SyncPointStatus
    issues: Tuple[str, ...] = ()
    recommendations: Tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.SyncDiagnosis) -> "SyncDiagnosis":
        return cls(
            status=SyncPointStatus.from_proto(msg.status),
            issues=tuple(msg.issues),
            recommendations=tuple(msg.recommendations),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "status": self.status.to_dict(),
            "issues": list(self.issues),
            "recommendations": list(self.recommendations),
        }


@dataclass(frozen=True)
class Limits:
    """The server's configured limits."""

    max_message_bytes: int = 0
    max_topic_len: int = 0
    max_interests: int = 0
    max_agents_per_namespace: int = 0
    max_open_sync_points: int = 0
    queue_capacity: int = 0
    max_state_bytes: int = 0
    max_sync_participants: int = 0
    max_sync_timeout_ms: int = 0

    @classmethod
    def from_proto(cls, msg: pb.Limits) -> "Limits":
        return cls(
            max_message_bytes=msg.max_message_bytes,
            max_topic_len=msg.max_topic_len,
            max_interests=msg.max_interests,
            max_agents_per_namespace=msg.max_agents_per_namespace,
            max_open_sync_points=msg.max_open_sync_points,
            queue_capacity=msg.queue_capacity,
            max_state_bytes=msg.max_state_bytes,
            max_sync_participants=msg.max_sync_participants,
            max_sync_timeout_ms=msg.max_sync_timeout_ms,
        )


@dataclass(frozen=True)
class ServerInfo:
    """Server identity, timing, limits and traffic counters."""

    version: str
    now_ms: int
    heartbeat_interval_ms: int
    lease_intervals: int
    limits: Limits
    agents: int
    published: int
    delivered: int
    dropped: int

    @classmethod
    def from_proto(cls, msg: pb.ServerInfoResponse) -> "ServerInfo":
        return cls(
            version=msg.version,
            now_ms=msg.now_ms,
            heartbeat_interval_ms=msg.heartbeat_interval_ms,
            lease_intervals=msg.lease_intervals,
            limits=Limits.from_proto(msg.limits),
            agents=msg.agents,
            published=msg.published,
            delivered=msg.delivered,
            dropped=msg.dropped,
        )


@dataclass(frozen=True)
class Registration:
    """What the server said when it accepted a registration."""

    namespace: str
    agent_id: str
    resume_token: str
    heartbeat_interval_ms: int
    lease_intervals: int
    resumed: bool = False

    @classmethod
    def from_proto(cls, msg: pb.Registered) -> "Registration":
        return cls(
            namespace=msg.namespace,
            agent_id=msg.agent_id,
            resume_token=msg.resume_token,
            heartbeat_interval_ms=msg.heartbeat_interval_ms,
            lease_intervals=msg.lease_intervals,
            resumed=msg.resumed,
        )

    @property
    def lease_seconds(self) -> float:
        """How long the server keeps this agent without a heartbeat before declaring it lost."""
        return self.heartbeat_interval_ms * self.lease_intervals / 1000.0

