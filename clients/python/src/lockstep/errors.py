"""Typed errors raised by the lockstep client.

Every error the server reports arrives as a gRPC status code and a message written for a person. The
client turns each into one exception class, so callers catch what they can handle::

    try:
        await agent.sync("checkpoint", {"a", "b"}, timeout=5)
    except lockstep.SyncTimeout as exc:
        print("never arrived:", exc.missing)

All classes derive from :class:`LockstepError`, which carries the server's ``message``, the gRPC
``code`` (a :class:`grpc.StatusCode`) and, for barrier failures, ``sync_id`` and ``missing``.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple, Type

import grpc

__all__ = [
    "LockstepError",
    "ConnectionLost",
    "SessionClosed",
    "Unavailable",
    "AlreadyRegistered",
    "InvalidArgument",
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
    "error_from_code",
    "error_from_rpc",
]

_CODES_BY_NUMBER: Dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The :class:`grpc.StatusCode` with this number (``UNKNOWN`` for numbers gRPC does not define)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


class LockstepError(Exception):
    """Base class of every error raised by the lockstep client.

    Attributes:
        message: the server's explanation (or the client's, for local failures).
        code: the gRPC status code the server answered with, if any.
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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.sync_id = sync_id
        self.missing: Tuple[str, ...] = tuple(missing)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = ""
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


class NotFound(LockstepError, LookupError):
    """No such agent or sync point."""

    default_code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(LockstepError):
    """The server wants credentials and none were sent (an ``Admin`` call without the server's admin
    token: pass ``token=`` to :meth:`lockstep.Client.admin`, or set ``$LOCKSTEP_ADMIN_TOKEN``)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LockstepError):
    """The credentials sent do not allow this operation (an ``Admin`` call with a token that is not the
    server's)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(LockstepError):
    """A server limit was hit (agents per namespace, open sync points, message or state size...)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BreakerOpen(ResourceExhausted):
    """The server's circuit breaker for this agent is open: it refuses work until it recovers."""


class FailedPrecondition(LockstepError):
    """The request is valid but the system is not in a state that allows it."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AgentPaused(FailedPrecondition):
    """An operator paused this agent, or ordered an emergency stop: until it is resumed the server
    refuses its publishes, state updates and sync arrivals. The message names who paused it and how
    to lift it; :attr:`emergency_stop` tells the two causes apart."""

    @property
    def emergency_stop(self) -> bool:
        """True when an emergency stop (every agent paused) is the cause, rather than this agent's own pause."""
        return "emergency stop" in self.message


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
    ) -> None:
        super().__init__(message, code=code)
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


def error_from_code(
    code: grpc.StatusCode,
    message: str,
    *,
    sync_id: str = "",
    missing: Iterable[str] = (),
    sync: bool = False,
) -> LockstepError:
    """Build the exception for a status ``code`` and the server's ``message``.

    ``sync=True`` selects the barrier errors (:class:`SyncTimeout`, :class:`SyncAborted`,
    :class:`SyncConflict`) for codes that mean a barrier failed.
    """
    missing = tuple(missing)
    cls: Optional[Type[LockstepError]] = None
    if code == grpc.StatusCode.FAILED_PRECONDITION and _is_pause_refusal(message):
        # Checked before the barrier errors: a paused agent's arrival is refused, not in conflict.
        cls = AgentPaused
    if cls is None and sync:
        cls = _SYNC_BY_CODE.get(code)
    if cls is None and code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        if "breaker" in message.lower():
            cls = BreakerOpen
    if cls is None:
        cls = _BY_CODE.get(code, LockstepError)
    if not message:
        message = f"lockstep server answered {code.name}"
    return cls(message, code=code, sync_id=sync_id, missing=missing)


def _is_pause_refusal(message: str) -> bool:
    """Whether a FAILED_PRECONDITION message is the server refusing a paused agent's action
    ("agent 'x' may not publish: operator 'y' paused it ..." or "... ordered an emergency stop ...")."""
    return " may not " in message and (" paused it" in message or "emergency stop" in message)


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
    err = error_from_code(code, message)
    err.__cause__ = exc
    return err
