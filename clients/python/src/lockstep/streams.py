"""Event-time streams: tick controllers and latency buffers (see "Event-time streams" in
docs/PROTOCOL.md).

A tick controller takes the messages published on its input topic patterns with their event time
(``agent.publish(topic, payload, event_time_ms=...)``) and publishes tick ``k`` — the events with
time in ``[k*period, (k+1)*period)``, in event-time order — on its output topic once every active
source's watermark has passed the tick's end. A latency buffer publishes provisional values for an
overdue sample of a numeric series on ``<output>.provisional`` and the definitive samples, with the
errors of the provisional values they replace, on ``<output>.definitive``: listen to the latter for
definitive values only, to ``<output>.*`` for provisional values with corrections.

``client.streams()`` creates, reads and removes them; creating and removing is an operator's action
(the admin token when the server has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc.aio

from ._util import OperatorService
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

__all__ = ["BufferInfo", "Streams", "TickerInfo"]


def _fields(msg: Any) -> Dict[str, Any]:
    """A message's fields as a dict (absent optional fields as ``None``)."""
    out: Dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.has_presence and f.message_type is None and not msg.HasField(f.name):
            value = None
        elif not isinstance(value, (str, bytes)) and hasattr(value, "extend"):
            value = list(value)  # a repeated field
        out[f.name] = value
    return out


@dataclass(frozen=True)
class TickerInfo:
    """A tick controller: its definition (``spec``: id, inputs, output, period_ms, lateness_ms,
    idle_timeout_ms, max_skew_ms, late_policy, min_sources), counters (``stats``: events,
    ticks_emitted, corrections, late_dropped, late_next_tick, forced, idle_reports, skew_violations,
    skew_ms, refused, buffered_events, buffered_bytes, next_tick, watermark_ms) and sources (publisher,
    max_event_time_ms, watermark_ms, last_heard_ms, idle, events, lag_ms)."""

    spec: Dict[str, Any]
    stats: Dict[str, Any]
    sources: Tuple[Dict[str, Any], ...]

    @property
    def id(self) -> str:
        return str(self.spec["id"])

    @classmethod
    def from_proto(cls, t: Any) -> "TickerInfo":
        return cls(_fields(t.spec), _fields(t.stats), tuple(_fields(s) for s in t.sources))


@dataclass(frozen=True)
class BufferInfo:
    """A latency buffer: its definition (``spec``: id, topic, pointer, cadence_ms, grace_ms,
    estimator, output, max_provisional) and counters (``stats``: samples, provisional, settled,
    provisional_share, mean_abs_error, max_abs_error, invalid, stale, last_value, last_time_ms,
    outstanding)."""

    spec: Dict[str, Any]
    stats: Dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.spec["id"])

    @classmethod
    def from_proto(cls, b: Any) -> "BufferInfo":
        return cls(_fields(b.spec), _fields(b.stats))


class Streams(OperatorService):
    """Tick controllers and latency buffers of one namespace."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        namespace: str,
        *,
        token: Optional[str] = None,
        actor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> None:
        super().__init__(pb_grpc.StreamsStub(channel), token=token, actor=actor, timeout=timeout)
        self.namespace = namespace

    async def create_ticker(
        self,
        id: str,
        *,
        inputs: Sequence[str],
        output: str,
        period_ms: int,
        lateness_ms: int = 0,
        idle_timeout_ms: int = 0,
        max_skew_ms: int = 0,
        late_policy: str = "drop",
        min_sources: int = 0,
    ) -> str:
        """Create a tick controller; returns the server's account of it.

        ``late_policy`` is ``drop``, ``next_tick`` or ``correction``; ``idle_timeout_ms`` 0 means
        5000; ``max_skew_ms`` 0 means skew is not checked; no tick goes before ``min_sources``
        sources were heard from.

        Raises:
            AlreadyRegistered: a controller of that id exists (``STREAM_EXISTS``).
            InvalidArgument: a field is wrong (the message names it).
            ResourceExhausted: ``streams.max_tickers`` reached (``LIMIT``).
        """
        spec = pb.TickerSpec(
            namespace=self.namespace,
            id=id,
            inputs=list(inputs),
            output=output,
            period_ms=period_ms,
            lateness_ms=lateness_ms,
            idle_timeout_ms=idle_timeout_ms,
            max_skew_ms=max_skew_ms,
            late_policy=late_policy,
            min_sources=min_sources,
        )
        return str((await self._call("CreateTicker", spec)).detail)

    async def create_buffer(
        self,
        id: str,
        *,
        topic: str,
        pointer: str,
        cadence_ms: int,
        output: str,
        estimator: str = "hold_last",
        grace_ms: int = 0,
        max_provisional: int = 0,
    ) -> str:
        """Create a latency buffer for the numeric field at JSON pointer ``pointer`` of the
        messages on ``topic`` (a pattern), expected every ``cadence_ms``; ``estimator`` is
        ``hold_last``, ``linear`` or ``constant_velocity``; ``max_provisional`` 0 means 10."""
        spec = pb.BufferSpec(
            namespace=self.namespace,
            id=id,
            topic=topic,
            pointer=pointer,
            cadence_ms=cadence_ms,
            grace_ms=grace_ms,
            estimator=estimator,
            output=output,
            max_provisional=max_provisional,
        )
        return str((await self._call("CreateBuffer", spec)).detail)

    async def ticker(self, id: str) -> TickerInfo:
        """One controller (:class:`~lockstep.NotFound`, ``UNKNOWN_STREAM``, if there is none)."""
        ref = pb.StreamRef(namespace=self.namespace, kind="ticker", id=id)
        return TickerInfo.from_proto(await self._call("GetTicker", ref))

    async def buffer(self, id: str) -> BufferInfo:
        """One buffer (:class:`~lockstep.NotFound`, ``UNKNOWN_STREAM``, if there is none)."""
        ref = pb.StreamRef(namespace=self.namespace, kind="buffer", id=id)
        return BufferInfo.from_proto(await self._call("GetBuffer", ref))

    async def tickers(self) -> List[TickerInfo]:
        """Every controller of the namespace, by id."""
        resp = await self._call("ListTickers", pb.StreamListRequest(namespace=self.namespace))
        return [TickerInfo.from_proto(t) for t in resp.tickers]

    async def buffers(self) -> List[BufferInfo]:
        """Every buffer of the namespace, by id."""
        resp = await self._call("ListBuffers", pb.StreamListRequest(namespace=self.namespace))
        return [BufferInfo.from_proto(b) for b in resp.buffers]

    async def remove(self, kind: str, id: str) -> str:
        """Remove a controller (``kind="ticker"``) or buffer (``"buffer"``); what it held is not
        emitted."""
        ref = pb.StreamRef(namespace=self.namespace, kind=kind, id=id)
        return str((await self._call("Remove", ref)).detail)
