"""Plain data types returned by the lockstep client.

These are frozen dataclasses built from the protocol messages, so callers never handle protobuf
objects. Each has a ``from_proto`` constructor used by the client.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .errors import PayloadTooLarge
from .v1 import lockstep_pb2 as pb

__all__ = [
    "AgentStatus",
    "RegistryEventKind",
    "SyncState",
    "AgentInfo",
    "RegistryEvent",
    "Delivery",
    "Response",
    "IncomingRequest",
    "StateSnapshot",
    "StateView",
    "SyncResult",
    "SyncPointStatus",
    "SyncDiagnosis",
    "Limits",
    "ServerInfo",
    "Registration",
    "ControlKind",
    "ControlNotice",
    "Command",
    "AgentRef",
    "EmergencyStopInfo",
    "AuditEntry",
    "AuditLog",
    "AgentHealth",
    "HealthSample",
    "HealthReport",
    "VoteTally",
    "VoteOutcome",
    "BallotRecord",
    "VoteRecord",
    "VoteDiagnosis",
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
    LEFT = 3  #: deregistered (said goodbye), or forgotten after being lost
    STATUS = 4  #: status changed
    LOST = 5  #: lease expired
    BREAKER = 6  #: the agent's circuit breaker changed state (see ``agent.breaker_state``)

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


class ControlKind(enum.IntEnum):
    """What an operator did to an agent, as told by a :class:`ControlNotice`."""

    UNSPECIFIED = 0
    PAUSED = 1  #: this agent was paused: deliveries held; publish, update_state and sync refused
    RESUMED = 2  #: this agent was resumed; its held deliveries follow
    EMERGENCY_STOP = 3  #: every agent was paused at once
    RESUMED_ALL = 4  #: the emergency stop and every pause were lifted

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
    breaker_state: str = ""
    """The server's circuit breaker for this agent: ``closed``, ``open`` or ``half_open``."""
    breaker_opened: int = 0
    """How many times that breaker opened."""

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
            breaker_state=msg.breaker_state,
            breaker_opened=msg.breaker_opened,
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
            "breaker_state": self.breaker_state,
            "breaker_opened": self.breaker_opened,
        }


@dataclass(frozen=True)
class RegistryEvent:
    """A change in the registry: an agent joined, left, was lost, changed status, or its circuit
    breaker changed state."""

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


class _Payload:
    """Reading a ``payload`` by its ``content_type`` (deliveries, requests and responses)."""

    payload: bytes
    content_type: str

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
class IntakeEnvelope:
    """What the server stamps on a record its intake moved onto a category topic (the publisher
    stays in :attr:`Delivery.publisher`, as the record's data source)."""

    #: The intake's sequence number (from 1).
    seq: int
    #: The topic the record was published on.
    categorised_from: str
    #: The server time (ms) it was taken at.
    time_ms: int
    #: The open round of the route's round series; 0 when none.
    tick_id: int
    #: The rule that matched (``<route topic>/<rule name>``); empty when none did.
    rule: str

    @classmethod
    def from_proto(cls, msg: pb.Delivery) -> "IntakeEnvelope":
        return cls(msg.intake_seq, msg.categorised_from, msg.intake_time_ms, msg.tick_id, msg.intake_rule)


@dataclass(frozen=True)
class Delivery(_Payload):
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
    #: On a retained topic (live or replayed): the topic's sequence number for this message; 0 elsewhere.
    topic_seq: int = 0
    #: On a retained topic: the server time (ms) it was published at; 0 elsewhere.
    time_ms: int = 0
    #: A record the server's intake categorised: the envelope it stamped; ``None`` otherwise.
    intake: Optional["IntakeEnvelope"] = None

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
            topic_seq=msg.topic_seq,
            time_ms=msg.time_ms,
            intake=IntakeEnvelope.from_proto(msg) if msg.intake_seq else None,
        )


@dataclass(frozen=True)
class Response(_Payload):
    """The answer to :meth:`lockstep.Agent.request`; read it with ``.data``, ``.json()``, ``.text()``."""

    payload: bytes
    content_type: str = ""
    responder: str = ""
    """The agent that answered."""

    @classmethod
    def from_proto(cls, msg: pb.AgentResponse) -> "Response":
        return cls(payload=bytes(msg.payload), content_type=msg.content_type, responder=msg.responder)


@dataclass(frozen=True)
class ControlNotice:
    """An operator paused or resumed this agent, or stopped or resumed every agent.

    Read them with :meth:`lockstep.Agent.control_notices`; :attr:`lockstep.Agent.paused` follows them.
    """

    kind: ControlKind
    actor: str = ""
    """The operator who did it, as named in the audit log."""
    reason: str = ""
    """Why, for an emergency stop."""

    @classmethod
    def from_proto(cls, msg: pb.Control) -> "ControlNotice":
        return cls(kind=_enum(ControlKind, msg.kind), actor=msg.actor, reason=msg.reason)

    @property
    def pauses(self) -> bool:
        """True for a notice that holds the agent (``PAUSED``, ``EMERGENCY_STOP``)."""
        return self.kind in (ControlKind.PAUSED, ControlKind.EMERGENCY_STOP)

    def __str__(self) -> str:
        text = f"{self.kind} by '{self.actor}'" if self.actor else str(self.kind)
        return f"{text} ({self.reason})" if self.reason else text


class _Responder:
    """How a :class:`Command` or :class:`IncomingRequest` from the server is answered: the agent's send
    function, and whether it was."""

    __slots__ = ("send", "answered")

    def __init__(self, send: Callable[..., Awaitable[None]]) -> None:
        self.send = send
        self.answered = False


@dataclass(frozen=True)
class Command:
    """A command for an agent: its name, parameters and, for commands an operator sent through the
    server, their id and deadline.

    Commands from the server come from :meth:`lockstep.Agent.commands`; answer each exactly once,
    with :meth:`reply` or :meth:`fail`. Commands given to
    :meth:`lockstep.SynchronizedAgent.handle_command` in the agent's own process have no id and are
    answered by returning.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    sender: str = ""
    """Who sent it, when known (the protocol does not carry the operator's name to the agent)."""
    command_id: int = 0
    """The server's id for the command (0 for a local command)."""
    deadline_ms: int = 0
    """When the operator stops waiting, on the server's clock (milliseconds; 0 for a local command)."""
    _responder: Optional[_Responder] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, msg: pb.Command, responder: Optional[_Responder] = None) -> "Command":
        try:
            params = json.loads(msg.params_json) if msg.params_json else None
        except ValueError:
            params = None
        return cls(
            name=msg.command,
            params=params if isinstance(params, dict) else {},
            command_id=msg.command_id,
            deadline_ms=msg.deadline_ms,
            _responder=responder,
        )

    @property
    def answered(self) -> bool:
        """True once :meth:`reply` or :meth:`fail` succeeded."""
        return self._responder is not None and self._responder.answered

    async def reply(self, result: Any = None) -> None:
        """Answer the command with ``result``, any JSON-serialisable value (a ``str`` is a JSON string).

        Raises:
            InvalidArgument: ``result`` is not JSON-serialisable, or the server refused the answer:
                the command is no longer pending (it timed out, or the operator's call ended), or the
                result is larger than the server allows. Except for a late answer, the command is still
                pending and can be answered again.
            LockstepError: the command did not come from the server, or was already answered.
        """
        from .errors import InvalidArgument

        try:
            text = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"the result of command '{self.name}' is not JSON-serialisable: {exc}") from None
        await self._answer(text, None)

    async def fail(self, error: str) -> None:
        """Answer the command with an error: the operator's ``send_command`` raises
        :class:`~lockstep.CommandFailed` carrying ``error``. Raises as :meth:`reply` does."""
        await self._answer(None, str(error) or "the command failed")

    async def _answer(self, result_json: Optional[str], error: Optional[str]) -> None:
        from .errors import LockstepError

        responder = self._responder
        if responder is None:
            raise LockstepError(
                f"command '{self.name}' did not come from the server; a local command's result is what its handler returns"
            )
        if responder.answered:
            raise LockstepError(f"command '{self.name}' (id {self.command_id}) was already answered")
        await responder.send(self.command_id, result_json, error)
        responder.answered = True


@dataclass(frozen=True)
class IncomingRequest(_Payload):
    """Another agent's request for this one to answer, from :meth:`lockstep.Agent.requests`. Answer
    it once, with :meth:`respond` (or :meth:`refuse`), before ``deadline_ms``."""

    token: int
    topic: str
    payload: bytes
    content_type: str = ""
    requester: str = ""
    deadline_ms: int = 0
    """When the requester stops waiting, on the server's clock (milliseconds)."""
    _responder: Optional[_Responder] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, msg: pb.IncomingRequest, responder: _Responder) -> "IncomingRequest":
        return cls(
            token=msg.token,
            topic=msg.topic,
            payload=bytes(msg.payload),
            content_type=msg.content_type,
            requester=msg.requester,
            deadline_ms=msg.deadline_ms,
            _responder=responder,
        )

    async def respond(self, payload: Any = b"", *, content_type: Optional[str] = None) -> None:
        """Answer with ``payload`` (``bytes`` as they are, ``str`` as text, anything else as JSON).

        Raises:
            NotFound: the server no longer waits for this answer (reason ``UNKNOWN_REQUEST``: the
                request timed out); nothing else happens.
            PayloadTooLarge: the answer is over the server's limit; the request still waits.
        """
        from ._util import encode_payload

        data, ctype = encode_payload(payload, content_type)
        await self._answer(data, ctype, "")

    async def refuse(self, why: str) -> None:
        """Refuse the request: the requester gets :class:`~lockstep.RequestRefused` with ``why``."""
        await self._answer(b"", "", str(why) or "refused")

    async def _answer(self, payload: bytes, content_type: str, error: str) -> None:
        from .errors import LockstepError

        responder = self._responder
        if responder is None or responder.answered:
            raise LockstepError(f"request {self.token} on '{self.topic}' was already answered")
        await responder.send(self.token, payload, content_type, error)
        responder.answered = True


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

    An arrival made with ``summary=True`` gets only ``count``, ``digest`` and its own ``position``
    (``summary`` is true and ``arrival_order`` and ``payloads`` are empty). ``digest`` is the same
    for every participant of the point, however it was answered. ``position`` differs from one
    participant to the next and is left out of equality: every participant's result compares equal.

    ``late`` names the required participants that had not arrived when the point was released (the
    rest of a quorum point's set or role, or those a force-complete went without); a summary gives
    only ``late_count``.
    """

    sync_id: str
    arrival_order: Tuple[str, ...]
    payloads: Tuple[bytes, ...]
    forced: bool = False
    count: int = 0
    digest: int = 0
    summary: bool = False
    position: int = field(default=0, compare=False)
    late: Tuple[str, ...] = ()
    late_count: int = 0

    @classmethod
    def from_proto(cls, msg: pb.SyncResult, agent_id: str = "") -> "SyncResult":
        order = tuple(msg.arrival_order)
        if msg.summary:
            position = msg.position
        else:
            # A late participant of a quorum point is not in the order: it comes after it.
            position = order.index(agent_id) if agent_id in order else len(order)
        return cls(
            sync_id=msg.sync_id,
            arrival_order=order,
            payloads=tuple(bytes(p) for p in msg.payloads),
            forced=msg.forced,
            count=msg.count,
            digest=msg.digest,
            summary=msg.summary,
            position=position,
            late=tuple(msg.late),
            late_count=msg.late_count,
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
    #: k of a k-of-n point (``required_count`` is k); 0 if it has none.
    quorum: int = 0

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
            quorum=msg.quorum,
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
            "quorum": self.quorum,
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
class VoteTally:
    """One choice's share of a vote: its total weight and how many ballots chose it."""

    choice: str
    weight: float
    ballots: int


@dataclass(frozen=True)
class VoteOutcome:
    """A decided vote (or "no decision" with ``reason``), the same for every voter.

    ``directive`` is what to do: the winning option, or the first recommendation (a dict) of the
    winning group; ``None`` without a decision. ``tally`` lists the heaviest groups first.
    """

    vote_id: str
    question: str
    decided: bool
    choice: str = ""
    directive: Any = None
    reason: str = ""
    tally: Tuple[VoteTally, ...] = ()
    groups: int = 0
    ballots: int = 0
    abstentions: int = 0
    missing: int = 0
    total_weight: float = 0.0
    decided_at_ms: int = 0

    @classmethod
    def from_proto(cls, msg: pb.VoteOutcome) -> "VoteOutcome":
        return cls(
            vote_id=msg.vote_id,
            question=msg.question,
            decided=msg.decided,
            choice=msg.choice,
            directive=json.loads(msg.directive_json) if msg.directive_json else None,
            reason=msg.reason,
            tally=tuple(VoteTally(t.choice, t.weight, t.ballots) for t in msg.tally),
            groups=msg.groups,
            ballots=msg.ballots,
            abstentions=msg.abstentions,
            missing=msg.missing,
            total_weight=msg.total_weight,
            decided_at_ms=msg.decided_at_ms,
        )

    def __bool__(self) -> bool:
        return self.decided


@dataclass(frozen=True)
class BallotRecord:
    """One ballot in a vote's full record."""

    agent_id: str
    role: str
    choice: str
    abstained: bool
    abstain_reason: str
    confidence: Optional[float]
    weight: float
    veto: bool
    at_ms: int

    @classmethod
    def from_proto(cls, msg: pb.BallotRecord) -> "BallotRecord":
        return cls(
            agent_id=msg.agent_id,
            role=msg.role,
            choice=msg.choice,
            abstained=msg.abstained,
            abstain_reason=msg.abstain_reason,
            confidence=msg.confidence if msg.HasField("confidence") else None,
            weight=msg.weight,
            veto=msg.veto,
            at_ms=msg.at_ms,
        )


@dataclass(frozen=True)
class VoteRecord:
    """A vote's full record: every ballot, who is missing, who was lost, and the outcome."""

    vote_id: str
    question: str
    state: str
    opener: str
    participants: str
    policy: str
    weight: str
    topic: str
    required_count: int
    ballots: Tuple[BallotRecord, ...]
    missing: Tuple[str, ...]
    missing_count: int
    gone: Tuple[str, ...]
    created_at_ms: int
    deadline_ms: int
    finished_at_ms: int
    outcome: Optional[VoteOutcome]

    @classmethod
    def from_proto(cls, msg: pb.VoteRecord) -> "VoteRecord":
        return cls(
            vote_id=msg.vote_id,
            question=msg.question,
            state=msg.state,
            opener=msg.opener,
            participants=msg.participants,
            policy=msg.policy,
            weight=msg.weight,
            topic=msg.topic,
            required_count=msg.required_count,
            ballots=tuple(BallotRecord.from_proto(b) for b in msg.ballots),
            missing=tuple(msg.missing),
            missing_count=msg.missing_count,
            gone=tuple(msg.gone),
            created_at_ms=msg.created_at_ms,
            deadline_ms=msg.deadline_ms,
            finished_at_ms=msg.finished_at_ms,
            outcome=VoteOutcome.from_proto(msg.outcome) if msg.HasField("outcome") else None,
        )


@dataclass(frozen=True)
class VoteDiagnosis:
    """What the server thinks of a vote, and what to do about it."""

    status: VoteRecord
    issues: Tuple[str, ...] = ()
    recommendations: Tuple[str, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.VoteDiagnosis) -> "VoteDiagnosis":
        return cls(
            status=VoteRecord.from_proto(msg.status),
            issues=tuple(msg.issues),
            recommendations=tuple(msg.recommendations),
        )


@dataclass(frozen=True)
class Limits:
    """The server's configured limits (0: not announced by this server's version)."""

    #: The largest ``publish`` payload (the server's ``limits.max_payload_bytes``).
    max_message_bytes: int = 0
    max_topic_len: int = 0
    max_interests: int = 0
    max_agents_per_namespace: int = 0
    max_open_sync_points: int = 0
    queue_capacity: int = 0
    max_state_bytes: int = 0
    max_sync_participants: int = 0
    max_sync_timeout_ms: int = 0
    #: The largest ``update_state`` delta, in bytes of JSON text.
    max_delta_bytes: int = 0
    #: The largest payload a ``sync`` arrival may bring.
    max_sync_payload_bytes: int = 0
    #: The largest encoded gRPC message; a larger one would end the session's stream.
    max_grpc_message_bytes: int = 0
    #: The longest timeout an agent request may ask for.
    max_request_timeout_ms: int = 0
    #: Most agent requests one agent may have waiting for an answer at once.
    max_pending_requests_per_agent: int = 0

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
            max_delta_bytes=msg.max_delta_bytes,
            max_sync_payload_bytes=msg.max_sync_payload_bytes,
            max_grpc_message_bytes=msg.max_grpc_message_bytes,
            max_request_timeout_ms=msg.max_request_timeout_ms,
            max_pending_requests_per_agent=msg.max_pending_requests_per_agent,
        )

    def check(self, msg: pb.ClientMessage) -> None:
        """Raise :class:`~lockstep.PayloadTooLarge` if ``msg`` is over a limit (a limit of 0 is not
        checked): the payload it carries against its own limit, then the whole encoded message
        against the gRPC message cap."""
        kind = msg.WhichOneof("kind")
        checks: List[Tuple[str, int, int, str]] = []
        if kind == "publish":
            checks.append(("the payload", len(msg.publish.payload), self.max_message_bytes, "limits.max_payload_bytes"))
        elif kind in ("agent_request", "respond"):
            what = "the request payload" if kind == "agent_request" else "the response payload"
            size = len(getattr(msg, kind).payload)
            checks.append((what, size, self.max_message_bytes, "limits.max_payload_bytes"))
        elif kind == "update_state":
            size = len(msg.update_state.delta_json.encode("utf-8"))
            checks.append(("the state delta", size, self.max_delta_bytes, "limits.max_delta_bytes"))
        elif kind == "sync":
            checks.append(
                ("the sync payload", len(msg.sync.payload), self.max_sync_payload_bytes, "limits.max_sync_payload_bytes")
            )
        if self.max_grpc_message_bytes:
            checks.append(("the encoded message", msg.ByteSize(), self.max_grpc_message_bytes, "max_grpc_message_bytes"))
        for what, size, limit, setting in checks:
            if limit and size > limit:
                raise PayloadTooLarge(what, size, limit, setting)


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
    lean_port: int = 0
    """The port of the server's lean agent transport on its host (``lockstep serve --lean-listen``;
    ``client.register(..., transport="lean")``); 0 when it serves none."""

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
            lean_port=msg.lean_port,
        )


@dataclass(frozen=True)
class AgentRef:
    """An agent named by its namespace and id."""

    namespace: str
    agent_id: str

    @classmethod
    def from_proto(cls, msg: pb.AgentRef) -> "AgentRef":
        return cls(namespace=msg.namespace, agent_id=msg.agent_id)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.agent_id}" if self.namespace else self.agent_id


@dataclass(frozen=True)
class EmergencyStopInfo:
    """The emergency stop in force: who ordered it, why, and since when (server clock, ms)."""

    actor: str
    reason: str
    since_ms: int

    def to_dict(self) -> Dict[str, Any]:
        return {"actor": self.actor, "reason": self.reason, "since_ms": self.since_ms}


@dataclass(frozen=True)
class AuditEntry:
    """One line of the server's audit log: an operator's action or a command's outcome.

    ``outcome`` is ``ok``, ``refused``, ``unknown_agent``, ``agent_error``, ``timed_out`` or
    ``agent_gone``; ``detail`` says what happened (the result, the error...). ``command`` is the
    operation (``pause_agent``, ``emergency_stop``...) or the name of a command sent to an agent, in
    which case ``command_id`` is set. Texts are cut by the server to a bounded length.
    """

    seq: int
    at_ms: int
    actor: str
    command: str
    command_id: int = 0
    namespace: str = ""
    target: str = ""
    params: str = ""
    outcome: str = ""
    detail: str = ""

    @classmethod
    def from_proto(cls, msg: pb.AuditEntry) -> "AuditEntry":
        return cls(
            seq=msg.seq,
            at_ms=msg.at_ms,
            actor=msg.actor,
            command=msg.command,
            command_id=msg.command_id,
            namespace=msg.namespace,
            target=msg.target,
            params=msg.params,
            outcome=msg.outcome,
            detail=msg.detail,
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AuditLog:
    """The most recent audit entries, oldest first; ``dropped`` counts older ones the server no longer
    keeps. Iterable and indexable like its ``entries``."""

    entries: Tuple[AuditEntry, ...]
    dropped: int = 0

    @classmethod
    def from_proto(cls, msg: pb.AuditLogResponse) -> "AuditLog":
        return cls(entries=tuple(AuditEntry.from_proto(e) for e in msg.entries), dropped=msg.dropped)

    def __iter__(self) -> Iterator[AuditEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> AuditEntry:
        return self.entries[index]

    def to_dict(self) -> Dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "dropped": self.dropped}


@dataclass(frozen=True)
class AgentHealth:
    """One agent's health as the server judges it.

    ``status`` is ``healthy``, ``degraded``, ``stuck`` or ``unhealthy``, and ``issues`` say why in
    words. Times are on the server's clock (ms); ``last_progress_ms`` is the last acknowledgement,
    publish or state update.
    """

    namespace: str
    agent_id: str
    role: str = ""
    status: str = ""
    issues: Tuple[str, ...] = ()
    deliveries_succeeded: int = 0
    deliveries_failed: int = 0
    success_ratio: float = 1.0
    ack_p50_ms: int = 0
    ack_p99_ms: int = 0
    queue_depth: int = 0
    queue_high_water: int = 0
    dropped: int = 0
    breaker_state: str = ""
    breaker_since_ms: int = 0
    last_heartbeat_ms: int = 0
    last_progress_ms: int = 0

    @classmethod
    def from_proto(cls, msg: pb.AgentHealth) -> "AgentHealth":
        return cls(
            namespace=msg.namespace,
            agent_id=msg.agent_id,
            role=msg.role,
            status=msg.status,
            issues=tuple(msg.issues),
            deliveries_succeeded=msg.deliveries_succeeded,
            deliveries_failed=msg.deliveries_failed,
            success_ratio=msg.success_ratio,
            ack_p50_ms=msg.ack_p50_ms,
            ack_p99_ms=msg.ack_p99_ms,
            queue_depth=msg.queue_depth,
            queue_high_water=msg.queue_high_water,
            dropped=msg.dropped,
            breaker_state=msg.breaker_state,
            breaker_since_ms=msg.breaker_since_ms,
            last_heartbeat_ms=msg.last_heartbeat_ms,
            last_progress_ms=msg.last_progress_ms,
        )

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def to_dict(self) -> Dict[str, Any]:
        out = dict(self.__dict__)
        out["issues"] = list(self.issues)
        return out


@dataclass(frozen=True)
class HealthSample:
    """The system's health at one moment: ``healthy`` of ``total`` agents (``score`` = the ratio)."""

    at_ms: int
    score: float
    healthy: int
    total: int

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HealthReport:
    """Every agent's health (all namespaces) and the system's: ``score`` is healthy agents / all
    agents (1.0 with none), with counts by health and recent ``history``, oldest first."""

    agents: Tuple[AgentHealth, ...]
    score: float = 1.0
    healthy: int = 0
    degraded: int = 0
    stuck: int = 0
    unhealthy: int = 0
    history: Tuple[HealthSample, ...] = ()
    now_ms: int = 0

    @classmethod
    def from_proto(cls, msg: pb.HealthResponse) -> "HealthReport":
        return cls(
            agents=tuple(AgentHealth.from_proto(a) for a in msg.agents),
            score=msg.score,
            healthy=msg.healthy,
            degraded=msg.degraded,
            stuck=msg.stuck,
            unhealthy=msg.unhealthy,
            history=tuple(HealthSample(at_ms=h.at_ms, score=h.score, healthy=h.healthy, total=h.total) for h in msg.history),
            now_ms=msg.now_ms,
        )

    def get(self, agent_id: str, namespace: Optional[str] = None) -> Optional[AgentHealth]:
        """One agent's health (in ``namespace``, if given), or ``None``."""
        for a in self.agents:
            if a.agent_id == agent_id and (namespace is None or a.namespace == namespace):
                return a
        return None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict (what ``handle_command('health')`` returns)."""
        return {
            "score": self.score,
            "healthy": self.healthy,
            "degraded": self.degraded,
            "stuck": self.stuck,
            "unhealthy": self.unhealthy,
            "agents": [a.to_dict() for a in self.agents],
            "history": [h.to_dict() for h in self.history],
            "now_ms": self.now_ms,
        }


@dataclass(frozen=True)
class Registration:
    """What the server said when it accepted a registration."""

    namespace: str
    agent_id: str
    resume_token: str
    heartbeat_interval_ms: int
    lease_intervals: int
    resumed: bool = False
    #: The limits in force (all 0 from a server that predates announcing them).
    limits: Limits = Limits()
    #: Messages routed to the agent that it will never receive and had not been told of (dropped
    #: while its session was away, or as its queue overflowed with nothing after them).
    missed_messages: int = 0

    @classmethod
    def from_proto(cls, msg: pb.Registered) -> "Registration":
        return cls(
            namespace=msg.namespace,
            agent_id=msg.agent_id,
            resume_token=msg.resume_token,
            heartbeat_interval_ms=msg.heartbeat_interval_ms,
            lease_intervals=msg.lease_intervals,
            resumed=msg.resumed,
            limits=Limits.from_proto(msg.limits),
            missed_messages=msg.missed_messages,
        )

    @property
    def lease_seconds(self) -> float:
        """How long the server keeps this agent without a heartbeat before declaring it lost."""
        return self.heartbeat_interval_ms * self.lease_intervals / 1000.0

