"""Tick rounds: the SyncBus ``tick()`` as a server primitive (see "Tick rounds" in docs/PROTOCOL.md).

A round series asks every participant with the same input, takes one JSON object from each, and
closes when all answered or at its timeout, naming who did not; the answers are merged into a shared
context key by merge patch in a declared order and the result is published on the series' topic.
A participant iterates its round inputs and answers each::

    async for tick in agent.rounds():
        await tick.answer({agent.agent_id: decide(tick.input)})

``client.rounds`` creates series (driven by the server with ``cadence_ms``, or opened by a client
with :meth:`Rounds.open`), removes them, and lists and shows them with their retained rounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, List, Optional

from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .agent import Agent, Feed
    from .client import Client

__all__ = ["RoundInfo", "RoundInput", "Rounds", "RoundSeries"]

ROUND_BUFFER = 1024
"""Round inputs kept for an agent before the application reads them (older ones are dropped)."""


class RoundInput:
    """One round's input for this agent: answer it once with :meth:`answer` before ``deadline_ms``."""

    def __init__(self, agent: "Agent", m: Any) -> None:
        self._agent = agent
        self.series: str = m.series
        self.round: int = m.round
        self.input: Any = json.loads(m.input_json) if m.input_json else {}
        self.deadline_ms: int = m.deadline_ms
        """Server clock: the round closes without this agent's answer then."""

    def __repr__(self) -> str:
        return f"RoundInput(series={self.series!r}, round={self.round}, input={self.input!r})"

    async def answer(self, output: Any) -> None:
        """Answers with ``output``, a JSON object merged as a merge patch. Refused, changing nothing:
        ``ROUND_NOT_OPEN`` (the round closed), ``ROUND_ANSWERED`` (a second answer),
        ``INVALID_ARGUMENT`` (not an object, or too large)."""
        await self._agent.answer_round(self.series, self.round, output)


class RoundLink:
    """An agent's side of tick rounds: its round inputs, kept from the start of the session."""

    def __init__(self, agent: "Agent") -> None:
        from .agent import Feed

        self._agent = agent
        self.feed: "Feed[RoundInput]" = Feed("round inputs", maxlen=ROUND_BUFFER)

    def on_message(self, kind: str, msg: Any) -> bool:
        """Takes a round input; ``False`` for any other frame."""
        if kind != "round_input":
            return False
        if not self.feed.closed:
            self.feed._push(RoundInput(self._agent, msg.round_input))
        return True

    def end(self) -> None:
        self.feed._end()


@dataclass(frozen=True)
class RoundInfo:
    """One round, open or closed, as the ``Rounds`` service shows it."""

    series: str
    round: int
    open: bool
    driver: str
    opened_at_ms: int
    deadline_ms: int
    closed_at_ms: int
    closing: str
    """``complete`` or ``timeout`` once closed."""
    participants: List[str]
    answered: List[str]
    """In merge order once closed."""
    missed: List[dict]
    """``{"agent", "why"}`` for each participant that did not answer."""
    skipped: List[str]
    waiting: List[str]
    context_version: int

    @classmethod
    def from_proto(cls, r: Any) -> "RoundInfo":
        return cls(
            series=r.series,
            round=r.round,
            open=r.open,
            driver=r.driver,
            opened_at_ms=r.opened_at_ms,
            deadline_ms=r.deadline_ms,
            closed_at_ms=r.closed_at_ms,
            closing=r.closing,
            participants=list(r.participants),
            answered=[a.agent for a in r.answered],
            missed=[{"agent": m.agent, "why": m.why} for m in r.missed],
            skipped=list(r.skipped),
            waiting=list(r.waiting),
            context_version=r.context_version,
        )


@dataclass(frozen=True)
class RoundSeries:
    """A round series: its spec, last round, open round and (from :meth:`Rounds.series`) retained
    rounds."""

    name: str
    agents: List[str]
    role: str
    timeout_ms: int
    context_key: str
    topic: str
    cadence_ms: int
    merge_order: str
    last_round: int
    open_round: Optional[RoundInfo]
    retained: List[RoundInfo] = field(default_factory=list)

    @classmethod
    def from_proto(cls, s: Any) -> "RoundSeries":
        spec = s.spec
        return cls(
            name=spec.name,
            agents=list(spec.agents),
            role=spec.role,
            timeout_ms=spec.timeout_ms,
            context_key=spec.context_key,
            topic=spec.topic,
            cadence_ms=spec.cadence_ms,
            merge_order=spec.merge_order,
            last_round=s.last_round,
            open_round=RoundInfo.from_proto(s.open_round) if s.HasField("open_round") else None,
            retained=[RoundInfo.from_proto(r) for r in s.retained],
        )


class Rounds:
    """Round series of a client's namespace, through the ``Rounds`` service (``client.rounds``)."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._stub = pb_grpc.RoundsStub(client._channel)  # type: ignore[no-untyped-call]

    @property
    def _ns(self) -> str:
        return self._client.namespace

    async def create(
        self,
        name: str,
        *,
        timeout_ms: int,
        context_key: str,
        agents: Iterable[str] = (),
        role: str = "",
        topic: str = "",
        cadence_ms: int = 0,
        merge_order: str = "",
        input: Any = None,
    ) -> RoundSeries:
        """Creates a series of ``agents`` (or of every agent with ``role``). With ``cadence_ms`` the
        server opens a round that often with ``input``; otherwise :meth:`open` does. The same spec
        again is a no-op; another spec under the name is ``ROUND_SERIES_EXISTS``."""
        spec = pb.RoundSeriesSpec(
            namespace=self._ns,
            name=name,
            agents=list(agents),
            role=role,
            timeout_ms=timeout_ms,
            context_key=context_key,
            topic=topic,
            cadence_ms=cadence_ms,
            merge_order=merge_order,
            input_json="" if input is None else json.dumps(input),
        )
        return RoundSeries.from_proto(await self._client._call(self._stub.CreateSeries, spec))

    async def open(self, series: str, input: Any, *, round: int = 0, driver: str = "") -> int:
        """Opens the next round of a client-driven series with ``input``; returns its number.
        ``round`` is the number the caller means to open (0: the next); ``ROUND_IN_PROGRESS``
        while a round of the series is open."""
        req = pb.OpenRoundRequest(
            namespace=self._ns, series=series, round=round, input_json=json.dumps(input), driver=driver
        )
        return int((await self._client._call(self._stub.OpenRound, req)).round)

    async def remove(self, series: str) -> None:
        """Removes a series (its open round closes now with the answers it has)."""
        await self._client._call(self._stub.RemoveSeries, pb.RoundSeriesRef(namespace=self._ns, name=series))

    async def list(self) -> List[RoundSeries]:
        """The series of the namespace, in name order (without their retained rounds)."""
        resp = await self._client._call(self._stub.ListSeries, pb.ListRoundSeriesRequest(namespace=self._ns))
        return [RoundSeries.from_proto(s) for s in resp.series]

    async def series(self, series: str) -> RoundSeries:
        """One series with its open round and retained rounds (``UNKNOWN_ROUND_SERIES``)."""
        req = pb.RoundSeriesRef(namespace=self._ns, name=series)
        return RoundSeries.from_proto(await self._client._call(self._stub.GetSeries, req))

    async def round(self, series: str, round: int = 0) -> RoundInfo:
        """Round ``round`` of a series (0: the last opened), open or retained."""
        req = pb.GetRoundRequest(namespace=self._ns, series=series, round=round)
        return RoundInfo.from_proto(await self._client._call(self._stub.GetRound, req))
