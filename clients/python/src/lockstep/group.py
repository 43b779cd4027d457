"""Replica groups: :meth:`lockstep.Agent.join_group`, :meth:`~lockstep.Agent.leave_group`,
:meth:`~lockstep.Agent.publish_group_state`, :meth:`~lockstep.Agent.fetch_group_state`, and the
groups' events (:meth:`GroupEvent.from_delivery`).

Ranks are join order (docs/PROTOCOL.md, "Replica groups"). A state blob (any bytes: parameters,
optimiser state) is published by one member at a time and becomes the group's next version once all
its bytes arrived and hashed to their SHA-256; a late joiner joins, then fetches the current
version, whose checksum this client verifies before handing the bytes over. Blobs may be
``bytes``, ``bytearray`` or ``memoryview`` (a numpy array's ``.data`` or ``tobytes()``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, List, Optional, Tuple, Union

import grpc

from .errors import GroupStateFailed, InvalidArgument, LockstepError, Reason, error_from_rpc
from .models import Delivery
from .v1 import lockstep_pb2 as pb

#: Largest chunk of a state's bytes (the server's limit).
CHUNK_BYTES = 256 * 1024

#: Every group's events are published on ``EVENT_PREFIX + group_id``.
EVENT_PREFIX = "lockstep.groups."

Blob = Union[bytes, bytearray, memoryview]


def checksum(data: Blob) -> str:
    """The SHA-256 (lowercase hex) of ``data``: a group state's checksum, as the server computes it."""
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


@dataclass(frozen=True)
class GroupState:
    """A version of a group's state (without its bytes)."""

    group_id: str
    version: int
    checksum: str
    size: int
    published_by: str = ""
    published_at_ms: int = 0

    @classmethod
    def from_proto(cls, s: pb.GroupState) -> "GroupState":
        return cls(s.group_id, s.version, s.checksum, s.size, s.published_by, s.published_at_ms)


@dataclass(frozen=True)
class GroupMembership:
    """This agent's place in a group it joined: its rank (join order), the members in rank order,
    and the current state version (``None`` while nothing is published)."""

    group_id: str
    rank: int
    members: Tuple[str, ...]
    state: Optional[GroupState]

    @classmethod
    def from_proto(cls, m: pb.GroupMembership) -> "GroupMembership":
        state = GroupState.from_proto(m.state) if m.HasField("state") else None
        return cls(m.group_id, m.rank, tuple(m.members), state)


@dataclass(frozen=True)
class GroupInfo:
    """A replica group as :meth:`lockstep.Client.list_groups` lists it: members in rank order, the
    current state version (``None`` while nothing is published), and who is publishing now."""

    group_id: str
    members: Tuple[str, ...]
    state: Optional[GroupState]
    publishing: str = ""

    @classmethod
    def from_proto(cls, g: pb.GroupInfo) -> "GroupInfo":
        state = GroupState.from_proto(g.state) if g.HasField("state") else None
        return cls(g.group_id, tuple(g.members), state, g.publishing)


@dataclass(frozen=True)
class GroupStateBlob:
    """A fetched version of a group's state: its description and its bytes (checksum verified)."""

    state: GroupState
    data: bytes


@dataclass(frozen=True)
class GroupEvent:
    """A change of a group, published on its topic ``lockstep.groups.<group_id>``: ``event`` is
    ``joined``, ``left``, ``lost`` or ``published``; ``members`` are those after the change."""

    group: str
    event: str
    agent: str
    members: Tuple[str, ...]
    version: int
    checksum: str

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> Optional["GroupEvent"]:
        """The group event a delivery carries, if it is one."""
        if not delivery.topic.startswith(EVENT_PREFIX):
            return None
        try:
            v = json.loads(delivery.payload)
            return cls(v["group"], v["event"], v["agent"], tuple(v["members"]), v["version"], v["checksum"])
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class CollectiveOutcome:
    """A collective's result, with the members whose presented state checksum diverged from
    ``reference_checksum`` (see ``checksum=`` of :meth:`lockstep.Agent.allreduce`)."""

    result: Any
    diverged: Tuple[str, ...]
    reference_checksum: str


def as_view(data: Any) -> memoryview:
    """``data`` as a byte view, refusing what is not bytes-like."""
    if isinstance(data, str):
        raise InvalidArgument("a group state is bytes, not str: encode it first")
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise InvalidArgument(
            f"a group state is bytes, bytearray or memoryview (numpy: array.tobytes()), not {type(data).__name__}"
        ) from None


async def publish(stub: Any, header: pb.GroupStateHeader, view: memoryview) -> GroupState:
    """Sends ``header`` and the bytes of ``view`` in chunks; the new version."""

    async def upload() -> AsyncIterator[pb.GroupStateUpload]:
        yield pb.GroupStateUpload(header=header)
        for at in range(0, len(view), CHUNK_BYTES):
            yield pb.GroupStateUpload(chunk=bytes(view[at : at + CHUNK_BYTES]))

    try:
        return GroupState.from_proto(await stub.PublishGroupState(upload()))
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, what="publish group state") from None


async def fetch(stub: Any, request: pb.FetchGroupStateRequest) -> GroupStateBlob:
    """The current version and its bytes, verified against its checksum."""
    state: Optional[GroupState] = None
    parts: List[bytes] = []
    try:
        async for msg in stub.FetchGroupState(request):
            if msg.WhichOneof("kind") == "state":
                state = GroupState.from_proto(msg.state)
            elif msg.WhichOneof("kind") == "chunk":
                parts.append(msg.chunk)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, what="fetch group state") from None
    if state is None:
        raise LockstepError("fetch group state: the server sent no state")
    data = b"".join(parts)
    verify(state, data)
    return GroupStateBlob(state, data)


def verify(state: GroupState, data: bytes) -> None:
    """Checks fetched bytes against their version's size and checksum."""
    got = checksum(data)
    if len(data) != state.size or got != state.checksum:
        raise GroupStateFailed(
            f"checksum mismatch for replica group {state.group_id!r}: version {state.version} should be "
            f"{state.size} bytes hashing to {state.checksum}, but {len(data)} bytes hashing to {got} arrived",
            code=grpc.StatusCode.INVALID_ARGUMENT,
            reason=Reason.CHECKSUM_MISMATCH,
        )
