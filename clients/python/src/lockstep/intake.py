"""The server's intake: validation and categorisation before routing (see "Intake" in
docs/PROTOCOL.md).

Every record an agent publishes passes the intake's rule set: a record failing the JSON Schema of
its topic is refused to its publisher with :class:`lockstep.SchemaViolation` (its
``schema_errors``: path and reason), and one a route categorises arrives on its category topic with
an :class:`lockstep.IntakeEnvelope` in :attr:`lockstep.Delivery.intake`. ``client.intake()`` reads
the rule set in force, its version and the counters, and replaces the set (an operator's action:
the admin token when the server has one; audited).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import grpc.aio

from ._util import OperatorService
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

__all__ = ["Intake", "IntakeStatus"]


@dataclass(frozen=True)
class IntakeStatus:
    """The rule set in force (``rules``: ``{"schemas": [...], "routes": [...]}``), its version (1:
    the configuration file's; each replacement takes the next) and the counters since the server
    started: ``validated``, ``refused``, ``refused_by_topic``, ``refused_by_publisher``
    (``namespace/agent``), ``dead_lettered``, ``categorised``, ``matched_by_rule``
    (``<route topic>/<rule name>``), ``unmatched``."""

    version: int
    rules: Dict[str, Any]
    validated: int
    refused: int
    refused_by_topic: Dict[str, int]
    refused_by_publisher: Dict[str, int]
    dead_lettered: int
    categorised: int
    matched_by_rule: Dict[str, int]
    unmatched: int

    @classmethod
    def from_proto(cls, i: Any) -> "IntakeStatus":
        def counts(items: Any) -> Dict[str, int]:
            return {c.key: c.count for c in items}

        return cls(
            version=i.version,
            rules=json.loads(i.rules_json or "{}"),
            validated=i.validated,
            refused=i.refused,
            refused_by_topic=counts(i.refused_by_topic),
            refused_by_publisher=counts(i.refused_by_publisher),
            dead_lettered=i.dead_lettered,
            categorised=i.categorised,
            matched_by_rule=counts(i.matched_by_rule),
            unmatched=i.unmatched,
        )


class Intake(OperatorService):
    """The server's intake rule set and counters."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: Optional[str] = None,
        actor: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> None:
        super().__init__(pb_grpc.IntakeStub(channel), token=token, actor=actor, timeout=timeout)

    async def status(self) -> IntakeStatus:
        """The rule set in force, its version and the counters."""
        return IntakeStatus.from_proto(await self._call("GetIntake", pb.IntakeRequest()))

    async def replace(self, rules: Dict[str, Any]) -> int:
        """Replace the whole rule set; returns the version it took.

        Raises:
            InvalidArgument: the set is invalid (the message names the place, e.g.
                ``routes[0].rules[1].target``); the set in force stays.
            Unauthenticated / PermissionDenied: the admin token is missing or wrong.
        """
        resp = await self._call("ReplaceIntake", pb.ReplaceIntakeRequest(rules_json=json.dumps(rules)))
        return int(resp.version)
