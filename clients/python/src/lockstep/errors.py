"""Typed errors raised by the lockstep client.

Every error the server reports arrives as a gRPC status code and a message written for a person. The
client turns each into one exception class, so callers catch what they can handle::

    try:
        await agent.sync("checkpoint", {"a", "b"}, timeout=5)
    except lockstep.SyncTimeout as exc:
        print("never arrived:", exc.missing)

All classes derive from :class:`LockstepError`, which carries the server's ``message``, the gRPC
``code`` (a :class:`grpc.StatusCode`), the ``reason`` (a :class:`Reason`: which failure it is, by a
stable name) and, for barrier failures, ``sync_id`` and ``missing``. The class of an error and
whether a broken session is resumed (:func:`recovery`) are decided by the reason, never by the
message, whose wording may change.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Type

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Reason",
    "Recovery",
    "recovery",
    "LockstepError",
    "ConnectionLost",
    "SessionClosed",
    "Unavailable",
    "AlreadyRegistered",
    "InvalidArgument",
    "SchemaViolation",
    "NotFound",
    "Unauthenticated",
    "PermissionDenied",
    "ResourceExhausted",
    "BreakerOpen",
    "FailedPrecondition",
    "AgentPaused",
    "DeadlineExceeded",
    "NotSupported",
    "CommandError",
    "CommandFailed",
    "CommandTimeout",
    "CommandAborted",
    "SyncFailed",
    "SyncTimeout",
    "SyncAborted",
    "SyncConflict",
    "RequestFailed",
    "NoResponders",
    "RequestTimeout",
    "RequestAborted",
    "RequestRefused",
    "error_from_code",
    "error_from_rpc",
]

class Reason(str, enum.Enum):
    """Which failure an error is: the stable names the server sends with every error (the
    ``reason`` of a reply's ``Error`` and of the ``google.rpc.ErrorInfo`` in a status's details,
    domain ``lockstep``). See "Error reasons" in docs/PROTOCOL.md."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNKNOWN_AGENT = "UNKNOWN_AGENT"
    UNKNOWN_SYNC_POINT = "UNKNOWN_SYNC_POINT"
    ALREADY_REGISTERED = "ALREADY_REGISTERED"
    ALREADY_REGISTERED_HERE = "ALREADY_REGISTERED_HERE"
    NOT_REGISTERED = "NOT_REGISTERED"
    LIMIT = "LIMIT"
    SYNC_MISMATCH = "SYNC_MISMATCH"
    NOT_A_PARTICIPANT = "NOT_A_PARTICIPANT"
    SYNC_FINISHED = "SYNC_FINISHED"
    SYNC_TIMEOUT = "SYNC_TIMEOUT"
    SYNC_ABORTED = "SYNC_ABORTED"
    SESSION_TAKEN_OVER = "SESSION_TAKEN_OVER"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    PAUSED = "PAUSED"
    EMERGENCY_STOP = "EMERGENCY_STOP"
    BREAKER_OPEN = "BREAKER_OPEN"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    SERVER_SHUTTING_DOWN = "SERVER_SHUTTING_DOWN"
    STORE_FAILED = "STORE_FAILED"
    ADMIN_TOKEN_MISSING = "ADMIN_TOKEN_MISSING"
    ADMIN_TOKEN_WRONG = "ADMIN_TOKEN_WRONG"
    COMMAND_TIMEOUT = "COMMAND_TIMEOUT"
    COMMAND_ABORTED = "COMMAND_ABORTED"
    BACKUP_FAILED = "BACKUP_FAILED"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    NO_RESPONDERS = "NO_RESPONDERS"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    REQUEST_ABORTED = "REQUEST_ABORTED"
    REQUEST_REFUSED = "REQUEST_REFUSED"
    UNKNOWN_REQUEST = "UNKNOWN_REQUEST"
    UNKNOWN_VOTE = "UNKNOWN_VOTE"
    VOTE_EXISTS = "VOTE_EXISTS"
    NOT_A_VOTER = "NOT_A_VOTER"
    DOUBLE_BALLOT = "DOUBLE_BALLOT"
    VOTE_CLOSED = "VOTE_CLOSED"
    UNKNOWN_OPTION = "UNKNOWN_OPTION"
    BAD_WEIGHT = "BAD_WEIGHT"
    BAD_CONFIDENCE = "BAD_CONFIDENCE"
    BAD_BALLOT = "BAD_BALLOT"
    VETO_NOT_ALLOWED = "VETO_NOT_ALLOWED"
    COLLECTIVE_MISMATCH = "COLLECTIVE_MISMATCH"
    NOT_COLLECTIVE_MEMBER = "NOT_COLLECTIVE_MEMBER"
    COLLECTIVE_TIMEOUT = "COLLECTIVE_TIMEOUT"
    COLLECTIVE_ABORTED = "COLLECTIVE_ABORTED"
    UNKNOWN_GROUP = "UNKNOWN_GROUP"
    NOT_GROUP_MEMBER = "NOT_GROUP_MEMBER"
    GROUP_BUSY = "GROUP_BUSY"
    GROUP_PUBLISH_ABORTED = "GROUP_PUBLISH_ABORTED"
    NO_GROUP_STATE = "NO_GROUP_STATE"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    CONTEXT_CONFLICT = "CONTEXT_CONFLICT"
    UNKNOWN_CONTEXT_KEY = "UNKNOWN_CONTEXT_KEY"
    UNKNOWN_CONTEXT_VERSION = "UNKNOWN_CONTEXT_VERSION"
    CONTEXT_READ_ONLY = "CONTEXT_READ_ONLY"
    UNKNOWN_TASK = "UNKNOWN_TASK"
    TASK_EXISTS = "TASK_EXISTS"
    TASK_CYCLE = "TASK_CYCLE"
    TASK_NOT_HELD = "TASK_NOT_HELD"
    TASK_FINISHED = "TASK_FINISHED"
    TASK_IN_FLIGHT_LIMIT = "TASK_IN_FLIGHT_LIMIT"
    TASK_NOT_DEAD_LETTERED = "TASK_NOT_DEAD_LETTERED"
    UNKNOWN_TRACE = "UNKNOWN_TRACE"
    TRACE_EXISTS = "TRACE_EXISTS"
    TRACE_CLAIMED = "TRACE_CLAIMED"
    TRACE_TOO_LARGE = "TRACE_TOO_LARGE"
    TRACE_HASH_MISMATCH = "TRACE_HASH_MISMATCH"
    TRACE_WAIT_TIMEOUT = "TRACE_WAIT_TIMEOUT"
    UNKNOWN_ROUND_SERIES = "UNKNOWN_ROUND_SERIES"
    ROUND_SERIES_EXISTS = "ROUND_SERIES_EXISTS"
    NOT_A_ROUND_PARTICIPANT = "NOT_A_ROUND_PARTICIPANT"
    ROUND_NOT_OPEN = "ROUND_NOT_OPEN"
    ROUND_ANSWERED = "ROUND_ANSWERED"
    ROUND_IN_PROGRESS = "ROUND_IN_PROGRESS"
    # --- event-time streams
    EVENT_TIME_OUT_OF_RANGE = "EVENT_TIME_OUT_OF_RANGE"
    STREAM_EXISTS = "STREAM_EXISTS"
    UNKNOWN_STREAM = "UNKNOWN_STREAM"
    # --- intake
    SCHEMA_VIOLATION = "SCHEMA_VIOLATION"
    # Authentication and permissions (tokens).
    TOKEN_MISSING = "TOKEN_MISSING"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    NAMESPACE_DENIED = "NAMESPACE_DENIED"
    PUBLISH_DENIED = "PUBLISH_DENIED"
    SUBSCRIBE_DENIED = "SUBSCRIBE_DENIED"
    AGENT_DENIED = "AGENT_DENIED"
    STATE_READ_DENIED = "STATE_READ_DENIED"
    ADMIN_DENIED = "ADMIN_DENIED"
    # --- sync monitor
    UNKNOWN_SYSTEM = "UNKNOWN_SYSTEM"
    SYSTEM_RETIRED = "SYSTEM_RETIRED"
    SYSTEM_EXISTS = "SYSTEM_EXISTS"
    UNKNOWN_UNIT = "UNKNOWN_UNIT"
    BAD_MEASUREMENT = "BAD_MEASUREMENT"
    DEPENDENCY_CYCLE = "DEPENDENCY_CYCLE"
    UNKNOWN_DEPENDENCY = "UNKNOWN_DEPENDENCY"
    UNKNOWN_INCIDENT = "UNKNOWN_INCIDENT"
    INCIDENT_RESOLVED = "INCIDENT_RESOLVED"
    EVENT_RATE_LIMITED = "EVENT_RATE_LIMITED"

    @classmethod
    def parse(cls, name: str) -> Optional["Reason"]:
        """The reason with this wire name; ``None`` for an empty or unknown one (a newer server's)."""
        try:
            return cls(name)
        except ValueError:
            return None


class Recovery(enum.Enum):
    """What a client does after its session ended (the reconnection policy of docs/PROTOCOL.md)."""

    RESUME = "resume"
    """Open a new session presenting the resume token, backing off between attempts."""
    GIVE_UP = "give_up"
    """The session stays ended: report the error."""


#: Reasons after which a session is resumed; every other reason gives up.
_RESUME_AFTER = frozenset(
    {
        Reason.LEASE_EXPIRED,
        Reason.SLOW_CONSUMER,
        Reason.SERVER_SHUTTING_DOWN,
        Reason.STORE_FAILED,
        # The stream could not read past an oversized message; the session itself was kept.
        Reason.MESSAGE_TOO_LARGE,
    }
)


def recovery(reason: Optional[Reason]) -> Recovery:
    """The policy: what to do when a session ends, or an attempt to resume it fails, with ``reason``
    (``None``: no reason came, i.e. the connection broke or the server could not be reached).

    A session taken over by another connection gives up (resuming would take it back from them);
    so does every refusal another attempt would meet again.
    """
    if reason is None or reason in _RESUME_AFTER:
        return Recovery.RESUME
    return Recovery.GIVE_UP


_CODES_BY_NUMBER: Dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The :class:`grpc.StatusCode` with this number (``UNKNOWN`` for numbers gRPC does not define)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


class LockstepError(Exception):
    """Base class of every error raised by the lockstep client.

    Attributes:
        message: the server's explanation (or the client's, for local failures).
        code: the gRPC status code the server answered with, if any.
        reason: which failure it is (a :class:`Reason`), or ``None`` for failures without one (a
            broken connection, the client's own checks, a server that predates reasons).
        sync_id: the sync point concerned, for barrier failures.
        missing: agents that never arrived at (or were lost from) a barrier; empty otherwise.
    """

    #: The gRPC status this class stands for, used when an error is built without one.
    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        sync_id: str = "",
        missing: Sequence[str] = (),
        reason: Optional[Reason] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.reason = reason
        self.sync_id = sync_id
        self.missing: Tuple[str, ...] = tuple(missing)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = ""
        if self.reason is not None:
            extra += f", reason={self.reason.value}"
        if self.sync_id:
            extra += f", sync_id={self.sync_id!r}"
        if self.missing:
            extra += f", missing={list(self.missing)!r}"
        return f"{type(self).__name__}({self.message!r}, code={self.code.name}{extra})"


class Unavailable(LockstepError, ConnectionError):
    """The server could not be reached (not running, wrong address, network down)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class ConnectionLost(Unavailable):
    """The session stream broke while a request was outstanding; its outcome is unknown."""


class SessionClosed(LockstepError):
    """The agent's session was closed (deregistered) before or while the request was made."""

    default_code = grpc.StatusCode.CANCELLED


class AlreadyRegistered(LockstepError):
    """Another live session holds this agent id (and no valid resume token was given)."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(LockstepError, ValueError):
    """The server refused the request's content (bad id, pattern, topic, JSON, participants...)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class SchemaViolation(InvalidArgument):
    """A published record is not JSON or fails the JSON Schema of its topic (``SCHEMA_VIOLATION``);
    nothing of it was routed.

    Attributes:
        schema_errors: ``(path, reason)`` pairs: where in the record (a JSON pointer, "" for the
            whole record) and why; at most ``intake.max_reported_errors`` of them.
    """

    schema_errors: Tuple[Tuple[str, str], ...] = ()


class PayloadTooLarge(InvalidArgument):
    """Refused before sending: a request over a limit the server announced at registration.
    Nothing was sent and the session goes on.

    Attributes:
        what: what is too large (``"the payload"``, ``"the state delta"``, ...).
        size: its size, in bytes.
        limit: the server's limit, in bytes.
        setting: the server's setting that sets the limit (``limits.max_payload_bytes``...).
    """

    def __init__(self, what: str, size: int, limit: int, setting: str) -> None:
        super().__init__(
            f"{what} of {size} bytes is over the server's limit of {limit} bytes ({setting}); nothing was sent"
        )
        self.what = what
        self.size = size
        self.limit = limit
        self.setting = setting


class NotFound(LockstepError, LookupError):
    """No such agent or sync point."""

    default_code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(LockstepError):
    """The server wants credentials and none were sent, or they do not verify (an ``Admin`` call
    without the server's admin token: pass ``token=`` to :meth:`lockstep.Client.admin`, or set
    ``$LOCKSTEP_ADMIN_TOKEN``; a call to a server requiring tokens without a valid one: pass
    ``token=`` to :func:`lockstep.connect`; ``.reason`` says which)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LockstepError):
    """The credentials sent do not allow this operation (an ``Admin`` call with a token that is not the
    server's; a token that does not allow the namespace, topic, agent or action: ``.reason`` says
    which, e.g. ``NAMESPACE_DENIED``)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(LockstepError):
    """A server limit was hit (agents per namespace, open sync points, message or state size...)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(LockstepError):
    """The request is valid but the system is not in a state that allows it."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class BreakerOpen(ResourceExhausted, FailedPrecondition):
    """The server's circuit breaker for this agent is open: it refuses work until it recovers (the
    server answers ``FAILED_PRECONDITION``, reason ``BREAKER_OPEN``)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AgentPaused(FailedPrecondition):
    """An operator paused this agent, or ordered an emergency stop: until it is resumed the server
    refuses its publishes, state updates and sync arrivals. The message names who paused it and how
    to lift it; :attr:`emergency_stop` tells the two causes apart."""

    @property
    def emergency_stop(self) -> bool:
        """True when an emergency stop (every agent paused) is the cause, rather than this agent's own pause."""
        return self.reason is Reason.EMERGENCY_STOP


class DeadlineExceeded(LockstepError, TimeoutError):
    """A call ran out of time."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotSupported(LockstepError):
    """The server does not offer this operation.

    Raised by every ``Admin`` call to a server without the ``Admin`` service or that call (an older
    one, or one that serves ``Admin`` on a separate address: ``lockstep serve --admin-listen``), and for
    any call a server answers with ``UNIMPLEMENTED``.
    """

    default_code = grpc.StatusCode.UNIMPLEMENTED


class CommandError(LockstepError):
    """A command sent with :meth:`lockstep.Admin.send_command` did not produce a result.

    Base class of :class:`CommandFailed`, :class:`CommandTimeout` and :class:`CommandAborted`.

    Attributes:
        agent_id: the agent the command was sent to.
        command: the command's name.
        command_id: the server's id for the command (as in the audit log), when the server said it.
    """

    default_code = grpc.StatusCode.ABORTED

    def __init__(
        self,
        message: str,
        *,
        code: Optional[grpc.StatusCode] = None,
        agent_id: str = "",
        command: str = "",
        command_id: int = 0,
        reason: Optional[Reason] = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        self.agent_id = agent_id
        self.command = command
        self.command_id = command_id


class CommandFailed(CommandError):
    """The agent answered the command with an error; :attr:`agent_error` is its text.

    The call itself succeeded (the server delivered the command and the agent replied), so
    :attr:`code` is ``UNKNOWN``: the failure is the agent's, not the server's.
    """

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        agent_error: str = "",
        code: Optional[grpc.StatusCode] = None,
        agent_id: str = "",
        command: str = "",
        command_id: int = 0,
    ) -> None:
        super().__init__(message, code=code, agent_id=agent_id, command=command, command_id=command_id)
        self.agent_error = agent_error
        """What the agent said went wrong."""


class CommandTimeout(CommandError, DeadlineExceeded):
    """The agent did not answer the command within its timeout. The server has stopped waiting: a late
    answer from the agent is refused."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class CommandAborted(CommandError):
    """The agent went away (deregistered, or lost its lease) before answering the command."""

    default_code = grpc.StatusCode.ABORTED


class SyncFailed(LockstepError):
    """A barrier did not complete. ``missing`` names the agents that caused it, ``sync_id`` the point."""

    default_code = grpc.StatusCode.ABORTED


class SyncTimeout(SyncFailed, TimeoutError):
    """A barrier's deadline passed; ``missing`` lists the required agents that never arrived."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class SyncAborted(SyncFailed):
    """A required participant was lost (lease expired) or left; ``missing`` names it."""

    default_code = grpc.StatusCode.ABORTED


class SyncConflict(SyncFailed, FailedPrecondition):
    """The arrival does not fit the sync point: it was defined with other participants, this agent is
    not one of them, or the point already finished (use a new id for a new round)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class RequestFailed(LockstepError):
    """A request to other agents (:meth:`lockstep.Agent.request`) got no answer. Base class of
    :class:`NoResponders`, :class:`RequestTimeout`, :class:`RequestAborted` and
    :class:`RequestRefused`; the responder concerned, when there was one, is named in the message."""

    default_code = grpc.StatusCode.ABORTED


class NoResponders(RequestFailed):
    """No other live agent interested in the topic could take the request (none registered, or all
    paused or isolated). Raised at once; retry later, once a responder has joined."""

    default_code = grpc.StatusCode.UNAVAILABLE


class RequestTimeout(RequestFailed, DeadlineExceeded):
    """The responder did not answer within the request's timeout (the message names it)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class RequestAborted(RequestFailed):
    """The responder left, or lost its lease, before answering."""

    default_code = grpc.StatusCode.ABORTED


class RequestRefused(RequestFailed):
    """The responder refused the request (its text is in the message)."""

    default_code = grpc.StatusCode.ABORTED


class CollectiveFailed(LockstepError):
    """A collective (:meth:`lockstep.Agent.allreduce` and the others) was refused or failed, the
    same way for every member. Base class of :class:`CollectiveMismatch`,
    :class:`NotCollectiveMember`, :class:`CollectiveTimeout` and :class:`CollectiveAborted`.

    Attributes:
        agent: the member the error names (the mismatched, outside, lost or broken one), if any.
        missing: who never joined (or had not finished sending) at the deadline.
    """

    agent: str = ""


class CollectiveMismatch(CollectiveFailed, FailedPrecondition):
    """A member (``agent``) called the collective with another group, kind, type, op, root or length."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class NotCollectiveMember(CollectiveFailed, FailedPrecondition):
    """The caller is not in the collective's group."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class CollectiveTimeout(CollectiveFailed, DeadlineExceeded):
    """The collective's deadline passed; ``missing`` never joined (or had not finished sending)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class CollectiveAborted(CollectiveFailed):
    """A member (``agent``) was lost, left, or broke off its transfer."""

    default_code = grpc.StatusCode.ABORTED


class GroupStateFailed(LockstepError):
    """A replica group's state did not move: a publish broke off (``GROUP_PUBLISH_ABORTED``; the
    previous version stays current), or bytes did not match their checksum (``CHECKSUM_MISMATCH``:
    refused by the server on a publish, or found by this client on a fetch)."""

    default_code = grpc.StatusCode.ABORTED
class ContextConflict(FailedPrecondition):
    """A context compare-and-set found the key at another version.

    Attributes:
        current_version: the key's current version (0: it does not exist). Read it again and retry.
    """

    current_version: int = 0


_BY_CODE: Dict[grpc.StatusCode, Type[LockstepError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: SessionClosed,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyRegistered,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: NotSupported,
}

_SYNC_BY_CODE: Dict[grpc.StatusCode, Type[LockstepError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: SyncTimeout,
    grpc.StatusCode.ABORTED: SyncAborted,
    grpc.StatusCode.FAILED_PRECONDITION: SyncConflict,
    grpc.StatusCode.CANCELLED: SyncAborted,
}

#: The exception of each reason; a reason not listed (BACKUP_FAILED) takes its code's class.
_BY_REASON: Dict[Reason, Type[LockstepError]] = {
    Reason.INVALID_ARGUMENT: InvalidArgument,
    Reason.NOT_REGISTERED: InvalidArgument,
    Reason.ALREADY_REGISTERED_HERE: InvalidArgument,
    Reason.UNKNOWN_AGENT: NotFound,
    Reason.UNKNOWN_SYNC_POINT: NotFound,
    Reason.ALREADY_REGISTERED: AlreadyRegistered,
    Reason.LIMIT: ResourceExhausted,
    Reason.SLOW_CONSUMER: ResourceExhausted,
    Reason.MESSAGE_TOO_LARGE: ResourceExhausted,
    Reason.SYNC_MISMATCH: SyncConflict,
    Reason.NOT_A_PARTICIPANT: SyncConflict,
    Reason.SYNC_FINISHED: SyncConflict,
    Reason.SYNC_TIMEOUT: SyncTimeout,
    Reason.SYNC_ABORTED: SyncAborted,
    Reason.SESSION_TAKEN_OVER: Unavailable,
    Reason.LEASE_EXPIRED: Unavailable,
    Reason.SERVER_SHUTTING_DOWN: Unavailable,
    Reason.STORE_FAILED: Unavailable,
    Reason.PAUSED: AgentPaused,
    Reason.EMERGENCY_STOP: AgentPaused,
    Reason.BREAKER_OPEN: BreakerOpen,
    Reason.ADMIN_TOKEN_MISSING: Unauthenticated,
    Reason.ADMIN_TOKEN_WRONG: PermissionDenied,
    Reason.COMMAND_TIMEOUT: CommandTimeout,
    Reason.COMMAND_ABORTED: CommandAborted,
    Reason.NO_RESPONDERS: NoResponders,
    Reason.REQUEST_TIMEOUT: RequestTimeout,
    Reason.REQUEST_ABORTED: RequestAborted,
    Reason.REQUEST_REFUSED: RequestRefused,
    Reason.UNKNOWN_REQUEST: NotFound,
    # Votes: the class says what kind of failure, `.reason` which one.
    Reason.UNKNOWN_VOTE: NotFound,
    Reason.VOTE_EXISTS: FailedPrecondition,
    Reason.NOT_A_VOTER: FailedPrecondition,
    Reason.DOUBLE_BALLOT: FailedPrecondition,
    Reason.VOTE_CLOSED: FailedPrecondition,
    Reason.VETO_NOT_ALLOWED: FailedPrecondition,
    Reason.UNKNOWN_OPTION: InvalidArgument,
    Reason.BAD_WEIGHT: InvalidArgument,
    Reason.BAD_CONFIDENCE: InvalidArgument,
    Reason.BAD_BALLOT: InvalidArgument,
    Reason.COLLECTIVE_MISMATCH: CollectiveMismatch,
    Reason.NOT_COLLECTIVE_MEMBER: NotCollectiveMember,
    Reason.COLLECTIVE_TIMEOUT: CollectiveTimeout,
    Reason.COLLECTIVE_ABORTED: CollectiveAborted,
    # Replica groups.
    Reason.UNKNOWN_GROUP: NotFound,
    Reason.NO_GROUP_STATE: NotFound,
    Reason.NOT_GROUP_MEMBER: FailedPrecondition,
    Reason.GROUP_BUSY: FailedPrecondition,
    Reason.GROUP_PUBLISH_ABORTED: GroupStateFailed,
    Reason.CHECKSUM_MISMATCH: GroupStateFailed,
    Reason.CONTEXT_CONFLICT: ContextConflict,
    Reason.UNKNOWN_CONTEXT_KEY: NotFound,
    Reason.UNKNOWN_CONTEXT_VERSION: NotFound,
    Reason.CONTEXT_READ_ONLY: FailedPrecondition,
    # Task handoff.
    Reason.UNKNOWN_TASK: NotFound,
    Reason.TASK_EXISTS: AlreadyRegistered,
    Reason.TASK_CYCLE: InvalidArgument,
    Reason.TASK_NOT_HELD: FailedPrecondition,
    Reason.TASK_FINISHED: FailedPrecondition,
    Reason.TASK_IN_FLIGHT_LIMIT: ResourceExhausted,
    Reason.TASK_NOT_DEAD_LETTERED: FailedPrecondition,
    # Execution traces.
    Reason.UNKNOWN_TRACE: NotFound,
    Reason.TRACE_EXISTS: FailedPrecondition,
    Reason.TRACE_CLAIMED: FailedPrecondition,
    Reason.TRACE_TOO_LARGE: ResourceExhausted,
    Reason.TRACE_HASH_MISMATCH: InvalidArgument,
    Reason.TRACE_WAIT_TIMEOUT: DeadlineExceeded,
    Reason.UNKNOWN_ROUND_SERIES: NotFound,
    Reason.ROUND_SERIES_EXISTS: AlreadyRegistered,
    Reason.NOT_A_ROUND_PARTICIPANT: FailedPrecondition,
    Reason.ROUND_NOT_OPEN: FailedPrecondition,
    Reason.ROUND_ANSWERED: FailedPrecondition,
    Reason.ROUND_IN_PROGRESS: FailedPrecondition,
    # --- event-time streams
    Reason.EVENT_TIME_OUT_OF_RANGE: InvalidArgument,
    Reason.STREAM_EXISTS: AlreadyRegistered,
    Reason.UNKNOWN_STREAM: NotFound,
    # --- intake
    Reason.SCHEMA_VIOLATION: SchemaViolation,
    # Tokens: missing or not valid, or valid but not allowing what was asked.
    Reason.TOKEN_MISSING: Unauthenticated,
    Reason.TOKEN_INVALID: Unauthenticated,
    Reason.TOKEN_EXPIRED: Unauthenticated,
    Reason.NAMESPACE_DENIED: PermissionDenied,
    Reason.PUBLISH_DENIED: PermissionDenied,
    Reason.SUBSCRIBE_DENIED: PermissionDenied,
    Reason.AGENT_DENIED: PermissionDenied,
    Reason.STATE_READ_DENIED: PermissionDenied,
    Reason.ADMIN_DENIED: PermissionDenied,
    # --- sync monitor
    Reason.UNKNOWN_SYSTEM: NotFound,
    Reason.SYSTEM_RETIRED: FailedPrecondition,
    Reason.SYSTEM_EXISTS: AlreadyRegistered,
    Reason.UNKNOWN_UNIT: InvalidArgument,
    Reason.BAD_MEASUREMENT: InvalidArgument,
    Reason.DEPENDENCY_CYCLE: InvalidArgument,
    Reason.UNKNOWN_DEPENDENCY: NotFound,
    Reason.UNKNOWN_INCIDENT: NotFound,
    Reason.INCIDENT_RESOLVED: FailedPrecondition,
    Reason.EVENT_RATE_LIMITED: ResourceExhausted,
}


def error_from_code(
    code: grpc.StatusCode,
    message: str,
    *,
    sync_id: str = "",
    missing: Iterable[str] = (),
    sync: bool = False,
    reason: Optional[Reason] = None,
) -> LockstepError:
    """Build the exception for a status ``code``, the server's ``message`` and its ``reason``.

    The reason chooses the class. Without one (a broken connection, a server that predates
    reasons) the code does, and ``sync=True`` selects the barrier errors (:class:`SyncTimeout`,
    :class:`SyncAborted`, :class:`SyncConflict`) for codes that mean a barrier failed.
    """
    missing = tuple(missing)
    cls: Optional[Type[LockstepError]] = _BY_REASON.get(reason) if reason is not None else None
    if cls is None and sync and reason is None:
        cls = _SYNC_BY_CODE.get(code)
    if cls is None:
        cls = _BY_CODE.get(code, LockstepError)
    if not message:
        message = f"lockstep server answered {code.name}"
    if issubclass(cls, CommandError):
        return cls(message, code=code, reason=reason)
    return cls(message, code=code, sync_id=sync_id, missing=missing, reason=reason)


#: The trailing metadata key of a status's details (a serialized ``google.rpc.Status``).
_DETAILS_KEY = "grpc-status-details-bin"


def error_info_from_rpc(exc: Any) -> Optional[Any]:
    """A failed call's ``google.rpc.ErrorInfo`` of domain ``lockstep`` (reason and metadata), if any."""
    try:
        metadata = exc.trailing_metadata() or ()
    except Exception:  # a call that never reached the server has no trailers
        return None
    for key, value in metadata:
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == "lockstep":
                return info
    return None


def reason_from_rpc(exc: Any) -> Optional[Reason]:
    """The reason in a failed call's ``google.rpc.ErrorInfo`` (domain ``lockstep``), if any."""
    info = error_info_from_rpc(exc)
    return Reason.parse(info.reason) if info is not None else None


def error_from_rpc(exc: grpc.RpcError, *, what: str = "") -> LockstepError:
    """Convert a failed gRPC call into the matching :class:`LockstepError`."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else ""
    message = details or ""
    if code == grpc.StatusCode.UNAVAILABLE and what:
        message = f"{what}: {message}" if message else what
    if code == grpc.StatusCode.UNIMPLEMENTED and not message:
        message = (
            f"{what or 'the lockstep server'} does not implement this call "
            "(an older server, or an address that serves only the Admin API: `lockstep serve --admin-listen`)"
        )
    info = error_info_from_rpc(exc)
    reason = Reason.parse(info.reason) if info is not None else None
    err = error_from_code(code, message, reason=reason)
    if isinstance(err, CollectiveFailed) and info is not None:
        # A collective's failure names its member and who is missing in the ErrorInfo.
        err.agent = info.metadata.get("agent", "")
        err.missing = tuple(m for m in info.metadata.get("missing", "").split(",") if m)
    if isinstance(err, ContextConflict) and info is not None:
        err.current_version = int(info.metadata.get("current_version", "0") or 0)
    err.__cause__ = exc
    return err



async def final_status(call: Any) -> grpc.aio.AioRpcError:
    """The status an ended streaming ``call`` carries, as an error for :func:`error_from_rpc`.

    A failed write or read may report less than the call's own status (a write refused with
    "the RPC has already finished" says nothing of why).
    """
    return grpc.aio.AioRpcError(
        await call.code(), await call.initial_metadata(), await call.trailing_metadata(), await call.details()
    )
