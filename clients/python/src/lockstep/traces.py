"""Execution traces: stored outputs of tool calls, found by tool and input, so that an agent loads a
prior output instead of computing it again.

``client.traces`` reads from anywhere (``lookup``, ``get``, ``stats``, ``lineage``);
``agent.traces`` also records (``record``) and asks for an output or the claim to compute it
(``get_or_claim``): concurrent agents asking for the same missing output compute it once — the first
gets a :class:`TraceClaim`, the others wait and receive the :class:`Trace` once it is recorded.
Inputs are JSON values; equal values find the same trace however they are written. Outputs are
bytes or JSON, sent in chunks of 256 KiB with their SHA-256, which both sides check (see "Execution
traces" in docs/PROTOCOL.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, List, Optional, Tuple, Union

import grpc
import grpc.aio

from .errors import InvalidArgument, LockstepError, Reason, error_from_rpc
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .agent import Agent
    from .client import Client

__all__ = ["AgentTraces", "Trace", "TraceClaim", "TraceInfo", "TraceLineage", "TraceStats", "Traces"]

#: Largest chunk of an output's bytes (the server's limit).
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class TraceInfo:
    """A trace's description (without its output)."""

    namespace: str
    id: str
    tool: str
    input: Any
    """The input, parsed back from its canonical JSON."""
    json: bool
    size: int
    sha256: str
    producer: str
    recorded_at_ms: int
    duration_ms: int
    parents: Tuple[str, ...]
    context: Tuple[Tuple[str, int], ...]
    pins: Tuple[str, ...] = ()
    new: bool = False

    @classmethod
    def from_proto(cls, i: Any) -> "TraceInfo":
        return cls(
            i.namespace,
            i.id,
            i.tool,
            json.loads(i.input_json) if i.input_json else None,
            i.json,
            i.size,
            i.sha256,
            i.producer,
            i.recorded_at_ms,
            i.duration_ms,
            tuple(i.parents),
            tuple((c.key, c.version) for c in i.context),
            tuple(i.pins),
            i.new,
        )


@dataclass(frozen=True)
class Trace:
    """A trace with its output (its SHA-256 checked)."""

    info: TraceInfo
    output: bytes

    def json(self) -> Any:
        """The output as JSON."""
        return json.loads(self.output)


@dataclass(frozen=True)
class TraceClaim:
    """This agent holds the claim on trace ``id``: compute the output and :meth:`AgentTraces.record`
    it (or :meth:`AgentTraces.release` the claim)."""

    id: str


@dataclass(frozen=True)
class TraceStats:
    """The store's counters (over every namespace)."""

    traces: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    recorded: int
    claims: int
    waiters: int
    pinned: int


@dataclass(frozen=True)
class TraceLineage:
    """What a trace was computed from (``parents``: id and whether it is still stored; ``context``:
    key and version) and what was computed from it (``children``)."""

    trace: TraceInfo
    parents: Tuple[Tuple[str, bool], ...]
    context: Tuple[Tuple[str, int], ...]
    children: Tuple[str, ...] = field(default=())


def _input_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _download(call: Any, what: str) -> Union[None, Trace, TraceClaim]:
    info: Optional[TraceInfo] = None
    parts: List[bytes] = []
    try:
        async for msg in call:
            kind = msg.WhichOneof("kind")
            if kind == "miss":
                return None
            if kind == "claim":
                return TraceClaim(msg.claim.id)
            if kind == "info":
                info = TraceInfo.from_proto(msg.info)
                # A lookup's inline output comes with the info (else, or from an older server, in
                # chunks).
                if msg.output:
                    parts.append(msg.output)
            elif kind == "chunk":
                parts.append(msg.chunk)
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, what=what) from None
    if info is None:
        raise LockstepError(f"{what}: the server sent no trace")
    data = b"".join(parts)
    got = hashlib.sha256(data).hexdigest()
    if len(data) != info.size or got != info.sha256:
        raise InvalidArgument(
            f"the output of trace {info.id!r} should be {info.size} bytes hashing to {info.sha256}, "
            f"but {len(data)} bytes hashing to {got} arrived",
            code=grpc.StatusCode.INVALID_ARGUMENT,
            reason=Reason.TRACE_HASH_MISMATCH,
        )
    return Trace(info, data)


class Traces:
    """Traces of a client's namespace, read from anywhere (``client.traces``)."""

    def __init__(self, channel: Any, namespace: str) -> None:
        self._stub = pb_grpc.TracesStub(channel)  # type: ignore[no-untyped-call]
        self._namespace = namespace

    async def lookup(self, tool: str, input: Any) -> Optional[Trace]:
        """The stored output of ``tool`` on ``input`` (a JSON value), or ``None`` (a miss)."""
        request = pb.TraceLookupRequest(
            namespace=self._namespace, tool=tool, input_json=_input_json(input), inline_output=True
        )
        found = await _download(self._stub.Lookup(request), "trace lookup")
        return found if isinstance(found, Trace) else None

    async def get(self, id: str) -> Trace:
        """The trace ``id`` (``NotFound`` with reason ``UNKNOWN_TRACE`` if it is not stored)."""
        found = await _download(self._stub.Get(pb.TraceGetRequest(namespace=self._namespace, id=id)), "trace get")
        if not isinstance(found, Trace):
            raise LockstepError("trace get: the server sent no trace")
        return found

    async def stats(self) -> TraceStats:
        """The store's counters: traces, bytes, hits, misses, evictions, claims and waiters."""
        try:
            s = await self._stub.Stats(pb.TraceStatsRequest())
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="trace stats") from None
        return TraceStats(s.traces, s.bytes, s.hits, s.misses, s.evictions, s.recorded, s.claims, s.waiters, s.pinned)

    async def lineage(self, id: str) -> TraceLineage:
        """What trace ``id`` was computed from, and what was computed from it."""
        try:
            l = await self._stub.Lineage(pb.TraceGetRequest(namespace=self._namespace, id=id))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="trace lineage") from None
        return TraceLineage(
            TraceInfo.from_proto(l.trace),
            tuple((p.id, p.stored) for p in l.parents),
            tuple((c.key, c.version) for c in l.context),
            tuple(l.children),
        )


class AgentTraces(Traces):
    """Traces as an agent uses them (``agent.traces``): reads, claims and records as its session."""

    def __init__(self, agent: "Agent") -> None:
        super().__init__(agent._client._channel, agent.namespace)
        self._agent = agent

    def _session(self) -> Any:
        a = self._agent
        return pb.TraceSession(namespace=a.namespace, agent_id=a.agent_id, resume_token=a.resume_token)

    async def get_or_claim(self, tool: str, input: Any, *, timeout: Optional[float] = None) -> Union[Trace, TraceClaim]:
        """The stored output (a :class:`Trace`), or the claim to compute it (a :class:`TraceClaim`).
        While another agent holds the claim this waits — at most ``timeout`` seconds (``None``: the
        server's longest, ``traces.max_wait_ms``; past it ``DeadlineExceeded`` with reason
        ``TRACE_WAIT_TIMEOUT``) — and returns the trace it records, or the claim if it gives up or
        its session goes."""
        wait_ms = 0 if timeout is None else max(1, int(timeout * 1000))
        request = pb.TraceClaimRequest(session=self._session(), tool=tool, input_json=_input_json(input), wait_ms=wait_ms)
        found = await _download(self._stub.GetOrClaim(request), "get_or_claim")
        if found is None:
            raise LockstepError("get_or_claim: the server answered with a miss")
        return found

    async def release(self, tool: str, input: Any) -> None:
        """Gives up the claim on ``tool`` and ``input``: the next waiting agent gets it."""
        request = pb.TraceClaimRequest(session=self._session(), tool=tool, input_json=_input_json(input))
        try:
            await self._stub.Release(request)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="trace release") from None

    async def record(
        self,
        tool: str,
        input: Any,
        output: Any,
        *,
        parents: Iterable[str] = (),
        context: Iterable[Tuple[str, int]] = (),
        duration_ms: int = 0,
    ) -> TraceInfo:
        """Records this agent's call of ``tool`` on ``input`` with its ``output`` (``bytes``: opaque;
        anything else: JSON) and lineage (``parents``: trace ids; ``context``: (key, version)
        pairs). Returns the stored trace (``new`` is ``False`` when the same one was stored)."""
        if isinstance(output, (bytes, bytearray, memoryview)):
            data, is_json = bytes(output), False
        else:
            data, is_json = _input_json(output).encode(), True
        header = pb.TraceHeader(
            session=self._session(),
            tool=tool,
            input_json=_input_json(input),
            json=is_json,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            parents=list(parents),
            context=[pb.TraceContextRef(key=k, version=v) for k, v in context],
            duration_ms=duration_ms,
        )

        async def upload() -> AsyncIterator[Any]:
            yield pb.TraceUpload(header=header)
            for at in range(0, len(data), CHUNK_BYTES):
                yield pb.TraceUpload(chunk=data[at : at + CHUNK_BYTES])

        try:
            info = await self._stub.Record(upload())
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="trace record") from None
        return TraceInfo.from_proto(info)
