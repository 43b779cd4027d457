"""lockstep: a coordination server for multi-agent systems — the Python client.

Agents connect to a ``lockstep serve`` process and use it to find each other (a registry with
leases kept alive by heartbeats), receive only the messages they are interested in (topics with
wildcard interests), share their state as JSON merge-patch deltas, and meet at barriers::

    import asyncio, lockstep

    async def main():
        async with lockstep.connect("127.0.0.1:7600") as client:
            async with client.register("scanner", role="scanner", interests=["market.>"]) as agent:
                await agent.update_state({"status": "scanning"})
                result = await agent.sync("ready", {"scanner"}, timeout=5)
                print(result.arrival_order)

    asyncio.run(main())

See the package README for the full API and for the mapping from the seed APIs.
"""

from __future__ import annotations

from ._util import DEFAULT_ADDRESS, default_address
from .admin import Admin, CommandInterface, SystemStatus
from .agent import Agent, Feed, StateWatch
from .base import AgentBase, Command, SynchronizedAgent
from .client import Client, RegistryWatch, connect
from .embedded import EmbeddedServer, ServerNotFound
from .group import (
    CollectiveOutcome,
    GroupEvent,
    GroupInfo,
    GroupMembership,
    GroupState,
    GroupStateBlob,
)
from .group import checksum as state_checksum
from .context import AgentContext, Context, ContextBatch, ContextChange, ContextEntry, ContextWatch, ContextWritten
from .rounds import RoundInfo, RoundInput, Rounds, RoundSeries
from .history import HistoryGap, TopicInfo
from .tasks import Assignment, PinnedContext, TaskEvent, TaskInfo, Tasks, TaskWork
from .streams import BufferInfo, Streams, TickerInfo
from .intake import Intake, IntakeStatus
from .traces import AgentTraces, Trace, TraceClaim, TraceInfo, TraceLineage, TraceStats, Traces
from .errors import (
    AgentPaused,
    AlreadyRegistered,
    BreakerOpen,
    CommandAborted,
    CommandError,
    CommandFailed,
    CommandTimeout,
    ConnectionLost,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LockstepError,
    NotFound,
    NoResponders,
    NotSupported,
    PayloadTooLarge,
    PermissionDenied,
    Reason,
    Recovery,
    RequestAborted,
    RequestFailed,
    RequestRefused,
    CollectiveFailed,
    CollectiveMismatch,
    NotCollectiveMember,
    CollectiveTimeout,
    CollectiveAborted,
    GroupStateFailed,
    ContextConflict,
    SchemaViolation,
    RequestTimeout,
    ResourceExhausted,
    SessionClosed,
    SyncAborted,
    SyncConflict,
    SyncFailed,
    SyncTimeout,
    Unauthenticated,
    Unavailable,
    recovery,
)
from .merge import apply_merge_patch
from .models import (
    AgentHealth,
    AgentInfo,
    AgentRef,
    AgentStatus,
    AuditEntry,
    AuditLog,
    ControlKind,
    ControlNotice,
    Delivery,
    IntakeEnvelope,
    EmergencyStopInfo,
    HealthReport,
    IncomingRequest,
    HealthSample,
    Limits,
    Registration,
    RegistryEvent,
    RegistryEventKind,
    Response,
    ServerInfo,
    StateSnapshot,
    StateView,
    SyncDiagnosis,
    SyncPointStatus,
    SyncResult,
    SyncState,
    BallotRecord,
    VoteDiagnosis,
    VoteOutcome,
    VoteRecord,
    VoteTally,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "DEFAULT_ADDRESS",
    "default_address",
    "connect",
    "Client",
    "EmbeddedServer",
    "ServerNotFound",
    "Agent",
    "StateWatch",
    "Feed",
    "RegistryWatch",
    "AgentContext",
    "Context",
    "ContextBatch",
    "ContextChange",
    "ContextEntry",
    "ContextWatch",
    "ContextWritten",
    "HistoryGap",
    "TopicInfo",
    "Assignment",
    "PinnedContext",
    "TaskEvent",
    "TaskInfo",
    "Tasks",
    "TaskWork",
    "RoundInfo",
    "RoundInput",
    "Rounds",
    "RoundSeries",
    "ContextConflict",
    "SchemaViolation",
    "Intake",
    "IntakeStatus",
    "IntakeEnvelope",
    "Traces",
    "Streams",
    "TickerInfo",
    "BufferInfo",
    "AgentTraces",
    "Trace",
    "TraceClaim",
    "TraceInfo",
    "TraceLineage",
    "TraceStats",
    "SynchronizedAgent",
    "AgentBase",
    "Command",
    "Admin",
    "CommandInterface",
    "SystemStatus",
    "apply_merge_patch",
    # data
    "AgentHealth",
    "AgentInfo",
    "AgentRef",
    "AgentStatus",
    "AuditEntry",
    "AuditLog",
    "ControlKind",
    "ControlNotice",
    "Delivery",
    "IncomingRequest",
    "Response",
    "EmergencyStopInfo",
    "HealthReport",
    "HealthSample",
    "Limits",
    "Registration",
    "RegistryEvent",
    "RegistryEventKind",
    "ServerInfo",
    "StateSnapshot",
    "StateView",
    "SyncDiagnosis",
    "SyncPointStatus",
    "SyncResult",
    "VoteOutcome",
    "VoteTally",
    "VoteRecord",
    "BallotRecord",
    "VoteDiagnosis",
    "SyncState",
    # errors
    "LockstepError",
    "AgentPaused",
    "AlreadyRegistered",
    "BreakerOpen",
    "CommandAborted",
    "CommandError",
    "CommandFailed",
    "CommandTimeout",
    "ConnectionLost",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "NoResponders",
    "NotSupported",
    "PayloadTooLarge",
    "RequestAborted",
    "RequestFailed",
    "RequestRefused",
    "CollectiveFailed",
    "CollectiveMismatch",
    "NotCollectiveMember",
    "CollectiveTimeout",
    "CollectiveAborted",
    "GroupStateFailed",
    "CollectiveOutcome",
    "GroupEvent",
    "GroupInfo",
    "GroupMembership",
    "GroupState",
    "GroupStateBlob",
    "state_checksum",
    "RequestTimeout",
    "PermissionDenied",
    "ResourceExhausted",
    "SessionClosed",
    "SyncAborted",
    "SyncConflict",
    "SyncFailed",
    "SyncTimeout",
    "Reason",
    "Recovery",
    "recovery",
    "Unauthenticated",
    "Unavailable",
]
