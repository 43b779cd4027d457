"""Small helpers shared by the client modules."""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable, Generator, Generic, Optional, Tuple, Type, TypeVar, Union

__all__ = ["OperatorService", "Opening", "encode_payload", "to_json_text", "timeout_ms", "DEFAULT_ADDRESS", "default_address"]

#: Where ``lockstep serve`` listens unless told otherwise.
DEFAULT_ADDRESS = "127.0.0.1:7600"


def default_address() -> str:
    """``$LOCKSTEP_ADDR`` if set, else :data:`DEFAULT_ADDRESS`."""
    return os.environ.get("LOCKSTEP_ADDR") or DEFAULT_ADDRESS


T = TypeVar("T")


class Opening(Generic[T]):
    """Something being opened: ``await`` it for the object, or use it with ``async with``.

    ``obj = await opening`` returns the opened object (the caller closes it);
    ``async with opening as obj:`` closes it on leaving the block.
    """

    __slots__ = ("_factory", "_obj")

    def __init__(self, factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = factory
        self._obj: Optional[T] = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._factory().__await__()

    async def __aenter__(self) -> T:
        self._obj = await self._factory()
        return self._obj

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Any) -> None:
        obj = self._obj
        self._obj = None
        if obj is not None:
            await obj.close()  # type: ignore[attr-defined]


def encode_payload(payload: Any, content_type: Optional[str] = None) -> Tuple[bytes, str]:
    """Turn a payload into bytes and a content type.

    ``bytes`` go as they are (``application/octet-stream`` unless told), ``str`` as UTF-8
    (``text/plain; charset=utf-8``), anything else as JSON (``application/json``).
    """
    if payload is None:
        return b"", content_type or ""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_type if content_type is not None else "application/octet-stream"
    if isinstance(payload, str):
        return payload.encode("utf-8"), content_type if content_type is not None else "text/plain; charset=utf-8"
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return data, content_type if content_type is not None else "application/json"


def to_json_text(value: Union[str, bytes, Any]) -> str:
    """A JSON document as text: strings and bytes are taken as already-encoded JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def timeout_ms(timeout: Optional[float]) -> int:
    """Seconds (``None`` for the server's default) to whole milliseconds, at least 1 when positive."""
    if timeout is None:
        return 0
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    ms = int(round(timeout * 1000))
    return max(ms, 1) if timeout > 0 else 0


class OperatorService:
    """A gRPC service some of whose calls are operators' actions: every call carries the admin
    token (default ``$LOCKSTEP_ADMIN_TOKEN``) and the caller's name for the audit log, when given."""

    def __init__(self, stub: Any, *, token: Optional[str], actor: Optional[str], timeout: Optional[float]) -> None:
        self._stub = stub
        self._token = os.environ.get("LOCKSTEP_ADMIN_TOKEN") if token is None else token
        self._actor = actor
        self._timeout = timeout

    def _metadata(self) -> Optional[list]:
        metadata = []
        if self._token:
            metadata.append(("authorization", f"Bearer {self._token}"))
        if self._actor:
            metadata.append(("x-lockstep-actor", self._actor))
        return metadata or None

    async def _call(self, method: str, request: Any) -> Any:
        import grpc

        from .errors import error_from_rpc

        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
