"""Topic history: subscribe with replay, gap notices, and the listing of retained topics.

The server keeps the last messages of the topics its retention rules name (``[[history.retain]]`` in
its configuration). :meth:`lockstep.Agent.subscribe` adds an interest pattern and asks for what the
retained topics it matches kept — the ``last`` N messages, everything ``since_seq``, or everything
``since_time_ms`` — which arrives on :meth:`lockstep.Agent.deliveries` before the live messages,
in order, with no duplicate and no gap at the seam. Every delivery of a retained topic carries its
``topic_seq`` and the server time ``time_ms``. Where retention had already dropped messages the
replay asked for, a :class:`HistoryGap` says which (:meth:`lockstep.Agent.history_gaps`).
:meth:`lockstep.Client.topics` lists the retained topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .v1 import lockstep_pb2 as pb


@dataclass(frozen=True)
class HistoryGap:
    """Messages ``first_seq..=last_seq`` of ``topic`` were asked for but retention had dropped them
    (``first_seq`` is 0 when unknown: a replay by time)."""

    topic: str
    first_seq: int
    last_seq: int

    @classmethod
    def from_proto(cls, msg: pb.HistoryGap) -> "HistoryGap":
        return cls(topic=msg.topic, first_seq=msg.first_seq, last_seq=msg.last_seq)


@dataclass(frozen=True)
class TopicInfo:
    """One retained topic: the messages and bytes it keeps, its first kept and last given sequence
    numbers, the pattern of the rule keeping it, and whether it is kept in the store."""

    topic: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    rule: str
    stored: bool

    @classmethod
    def from_proto(cls, msg: pb.TopicInfo) -> "TopicInfo":
        return cls(
            topic=msg.topic,
            messages=msg.messages,
            bytes=msg.bytes,
            first_seq=msg.first_seq,
            last_seq=msg.last_seq,
            rule=msg.rule,
            stored=msg.stored,
        )


def subscribe_message(
    pattern: str, *, last: Optional[int] = None, since_seq: Optional[int] = None, since_time_ms: Optional[int] = None
) -> pb.ClientMessage:
    """The session message subscribing to ``pattern`` with at most one way of replay."""
    asked = [(k, v) for k, v in (("last", last), ("since_seq", since_seq), ("since_time_ms", since_time_ms)) if v is not None]
    if len(asked) > 1:
        raise ValueError(f"ask for one replay at most (last, since_seq or since_time_ms), not {[k for k, _ in asked]}")
    sub = pb.Subscribe(pattern=pattern)
    for key, value in asked:
        if value < 0:
            raise ValueError(f"{key} must not be negative")
        setattr(sub, key, value)
    return pb.ClientMessage(subscribe=sub)


#: Gap notices kept for the application at most; older ones are dropped first.
MAX_GAPS = 1024


def keep_gap(gaps: List[HistoryGap], gap: HistoryGap) -> None:
    """Adds ``gap`` to ``gaps``, dropping the oldest past :data:`MAX_GAPS`."""
    if len(gaps) >= MAX_GAPS:
        del gaps[0]
    gaps.append(gap)
