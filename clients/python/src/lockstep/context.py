"""Shared context: versioned JSON values under dot-separated keys, per namespace.

``client.context`` reads, writes and watches the keys of the client's namespace. Every write may
compare-and-set on the key's version (``expected_version``; 0 means "must not exist"); a conflict
raises :class:`~lockstep.ContextConflict` carrying ``current_version``. Watches are async iterators
of batches, coalesced per key for a slow watcher, and resume from a version without loss (see
"Shared context" in docs/PROTOCOL.md).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, List, Optional, Tuple

import grpc
import grpc.aio

from .client import _StreamWatch
from .errors import LockstepError, error_from_rpc
from .merge import apply_merge_patch
from .v1 import lockstep_pb2 as pb
from .v1 import lockstep_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # pragma: no cover
    from .agent import Agent
    from .client import Client

__all__ = ["AgentContext", "Context", "ContextBatch", "ContextChange", "ContextEntry", "ContextWatch", "ContextWritten"]


@dataclass(frozen=True)
class ContextWritten:
    """What a write did."""

    version: int
    """The key's new version (a deletion's own version)."""
    previous_version: int
    """Its version before (0: it did not exist)."""
    expires_at_ms: int = 0
    """For a TTL, when the key expires (server clock)."""


@dataclass(frozen=True)
class ContextEntry:
    """A key's value at a version."""

    key: str
    version: int
    value: Any
    writer: str
    at_ms: int
    current_version: int
    expires_at_ms: int = 0
    owner: str = ""
    patch: Any = None
    """In a history: the merge patch that made this version, when one did."""

    @classmethod
    def from_proto(cls, v: Any) -> "ContextEntry":
        return cls(
            key=v.key,
            version=v.version,
            value=json.loads(v.value_json),
            writer=v.writer,
            at_ms=v.at_ms,
            current_version=v.current_version,
            expires_at_ms=v.expires_at_ms,
            owner=v.owner,
            patch=json.loads(v.patch_json) if v.patch_json else None,
        )


@dataclass(frozen=True)
class ContextChange:
    """One key's change as a watcher receives it."""

    key: str
    base_version: int
    """0: ``value`` is the whole value (a snapshot); else a merge patch on the value at this version."""
    version: int
    value: Any
    deleted: bool
    gap: bool
    """A snapshot because the resume version was older than the key's retained history."""


@dataclass(frozen=True)
class ContextBatch:
    """A batch of changes; ``resume_from`` is where to resume to miss nothing after it."""

    reset: bool
    changes: Tuple[ContextChange, ...]
    resume_from: int


#: The seed's global-state names that lockstep spells as keys of its own.
_SEED_NAMES = {"system_health": "system.health"}


class Context:
    """Shared context of a client's namespace (``client.context``)."""

    def __init__(self, client: "Client", writer: str = "client") -> None:
        self._client = client
        self._stub = pb_grpc.SharedContextStub(client._channel)  # type: ignore[no-untyped-call]
        self.writer = writer
        """Kept in the keys' histories as the writer."""

    @property
    def _ns(self) -> str:
        return self._client.namespace

    async def get(self, key: str, *, version: Optional[int] = None) -> ContextEntry:
        """The key's current value, or a retained ``version`` of it.

        Raises:
            NotFound: no such key (``UNKNOWN_CONTEXT_KEY``) or version (``UNKNOWN_CONTEXT_VERSION``).
        """
        req = pb.ContextGetRequest(namespace=self._ns, key=key)
        if version is not None:
            req.version = version
        return ContextEntry.from_proto(await self._client._call(self._stub.Get, req))

    async def get_state(self, name: str) -> Any:
        """The seed's ``syncbus.get_state(name)``: the current value of a global-state entry (the
        key ``name``); ``"system_health"`` reads the server's ``system.health``.

        Raises:
            NotFound: no such entry.
        """
        key = _SEED_NAMES.get(name, name)
        return (await self.get(key)).value

    async def list(self, prefix: str = "") -> List[ContextEntry]:
        """Every key under ``prefix`` (empty: all, the server's ``system.*`` keys included)."""
        req = pb.ContextListRequest(namespace=self._ns, prefix=prefix)
        return [ContextEntry.from_proto(v) for v in await self._client._every_page(self._stub.List, req, "values")]

    async def history(self, key: str) -> List[ContextEntry]:
        """The key's retained versions, oldest first."""
        resp = await self._client._call(self._stub.History, pb.ContextGetRequest(namespace=self._ns, key=key))
        return [ContextEntry.from_proto(v) for v in resp.versions]

    async def set(
        self,
        key: str,
        value: Any,
        *,
        expected_version: Optional[int] = None,
        ttl_ms: Optional[int] = None,
        lease: bool = False,
    ) -> ContextWritten:
        """Replace the key's value (compare-and-set with ``expected_version``; 0: must not exist).

        ``ttl_ms``: delete the key this long after the write. ``lease``: delete it when the writing
        agent is lost or leaves — only an agent's own writes (``agent.context``) can be bound to
        its lease; the server refuses it here with ``INVALID_ARGUMENT``.
        """
        write = pb.ContextWrite(key=key, set_json=json.dumps(value))
        return await self._write(write, expected_version, ttl_ms, lease)

    async def patch(
        self,
        key: str,
        patch: Any,
        *,
        expected_version: Optional[int] = None,
        ttl_ms: Optional[int] = None,
        lease: bool = False,
    ) -> ContextWritten:
        """Apply an RFC 7386 merge patch to the key's value (``{}`` if it is absent); the options as
        for :meth:`set`."""
        write = pb.ContextWrite(key=key, patch_json=json.dumps(patch))
        return await self._write(write, expected_version, ttl_ms, lease)

    async def cas(self, key: str, expected_version: int, value: Any) -> ContextWritten:
        """Replace the key's value if it is at ``expected_version`` (0: if it does not exist).

        Raises:
            ContextConflict: it is not; ``current_version`` says where it is.
        """
        return await self.set(key, value, expected_version=expected_version)

    async def delete(self, key: str, *, expected_version: Optional[int] = None) -> ContextWritten:
        """Delete the key."""
        return await self._write(pb.ContextWrite(key=key, delete=True), expected_version, None, False)

    async def _write(
        self, write: Any, expected_version: Optional[int], ttl_ms: Optional[int], lease: bool
    ) -> ContextWritten:
        if expected_version is not None:
            write.expected_version = expected_version
        if ttl_ms is not None:
            write.ttl_ms = ttl_ms
        if lease:
            write.lease = True
        w = await self._send(write)
        return ContextWritten(w.version, w.previous_version, w.expires_at_ms)

    async def _send(self, write: Any) -> Any:
        req = pb.ContextWriteRequest(namespace=self._ns, writer=self.writer, write=write)
        return await self._client._call(self._stub.Write, req)

    def watch(self, key: str, *, from_version: int = 0) -> "ContextWatch":
        """Watch one key (from ``from_version``; 0: its current value first)."""
        return self._watch(pb.ContextWatchRequest(namespace=self._ns, key=key, from_version=from_version))

    def watch_prefix(self, prefix: str = "", *, from_version: int = 0) -> "ContextWatch":
        """Watch a key and every key under it (empty: every key of the namespace)."""
        return self._watch(pb.ContextWatchRequest(namespace=self._ns, prefix=prefix, from_version=from_version))

    def _watch(self, req: Any) -> "ContextWatch":
        watch = ContextWatch(self._client, self._stub.Watch(req), req.from_version)
        self._client._watches.append(watch)
        return watch


class AgentContext(Context):
    """Shared context of an agent's namespace, written as the agent on its session
    (``agent.context``): the agent is the writer kept in the keys' histories, and a write may be
    bound to the agent's lease (``lease=True``: the key is deleted when the agent is lost or leaves).
    Reads and watches are those of :class:`Context`."""

    def __init__(self, agent: "Agent") -> None:
        super().__init__(agent.client, writer=agent.agent_id)
        self._agent = agent

    @property
    def _ns(self) -> str:
        return self._agent.namespace

    async def _send(self, write: Any) -> Any:
        reply = await self._agent._request(pb.ClientMessage(context_write=write))
        self._agent._raise_if_error(reply)
        if reply.WhichOneof("outcome") != "context_written":
            raise LockstepError(f"unexpected answer to a context write: {reply.WhichOneof('outcome')}")
        return reply.context_written


class ContextWatch(_StreamWatch):
    """An open context watch: an async iterator of :class:`ContextBatch`, each applied to
    :attr:`view` before it is yielded. Also an async context manager; :meth:`close` ends it."""

    def __init__(self, client: "Client", call: Any, from_version: int) -> None:
        super().__init__(client, call)
        self.view: Dict[str, Tuple[int, Any]] = {}
        """The keys as this watch has them: ``key -> (version, value)``."""
        self.resume_from = from_version
        """The version to resume from (``from_version``) to miss nothing."""

    def __aiter__(self) -> AsyncIterator[ContextBatch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[ContextBatch]:
        while True:
            try:
                yield await self.next()
            except _Ended:
                return

    async def next(self, timeout: Optional[float] = None) -> ContextBatch:
        """The next batch (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        try:
            msg = await asyncio.wait_for(self._call.read(), timeout)
        except asyncio.CancelledError:
            if self._closed:
                raise _Ended() from None
            raise
        except grpc.RpcError as exc:
            if self._closed or exc.code() == grpc.StatusCode.CANCELLED:
                raise _Ended() from None
            raise error_from_rpc(exc, what=f"lockstep server at {self._client.address}") from None
        if msg is grpc.aio.EOF:
            raise _Ended()
        batch = ContextBatch(
            reset=msg.reset,
            resume_from=msg.resume_from,
            changes=tuple(
                ContextChange(
                    key=c.key,
                    base_version=c.base_version,
                    version=c.version,
                    value=None if c.deleted else json.loads(c.value_json),
                    deleted=c.deleted,
                    gap=c.gap,
                )
                for c in msg.changes
            ),
        )
        self._apply(batch)
        return batch

    def _apply(self, batch: ContextBatch) -> None:
        if batch.reset:
            self.view.clear()
        for c in batch.changes:
            if c.deleted:
                self.view.pop(c.key, None)
            elif c.base_version == 0:
                self.view[c.key] = (c.version, c.value)
            else:
                _, old = self.view.get(c.key, (0, None))
                self.view[c.key] = (c.version, apply_merge_patch(old, c.value))
        self.resume_from = batch.resume_from

    async def __aenter__(self) -> "ContextWatch":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _Ended(LockstepError):
    """The watch stream ended (closed, or the server ended it)."""

    def __init__(self) -> None:
        super().__init__("the context watch ended")
