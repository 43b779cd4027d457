"""How the compat classes reach a server: ``$LOCKSTEP_ADDR``, else one embedded server per process.

The seeds' classes are built without a server address (``AgentSynchronizer(timeout=30.0)``), some of
their methods are plain functions called from inside a running event loop
(``get_sync_status``), and a script may run several ``asyncio.run`` in turn. So a compat object
keeps a :class:`Connection`: a native :class:`~lockstep.Client` per event loop, opened on first use,
and a way to make one call from plain code on a thread of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

from ..client import Client, connect
from ..embedded import EmbeddedServer

T = TypeVar("T")

log = logging.getLogger("lockstep.compat")

_shared: Optional[EmbeddedServer] = None
_shared_env: Dict[str, str] = {}
_shared_lock = threading.Lock()


def server_address(env: Optional[Mapping[str, str]] = None) -> str:
    """``$LOCKSTEP_ADDR`` when set; otherwise the address of this process's embedded server,
    started now if needed (``lockstep serve --in-memory``, stopped when the process exits).

    ``env`` are settings for that server (``LOCKSTEP_<SECTION>__<KEY>`` variables) from the compat
    object that needs it: they apply if it starts the server; one already running with other
    values keeps its own, with a warning.
    """
    address = os.environ.get("LOCKSTEP_ADDR")
    if address:
        return address
    global _shared, _shared_env
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = EmbeddedServer(env=env)
            _shared_env = dict(env or {})
            atexit.register(_shared.stop)
        else:
            differing = {k: v for k, v in (env or {}).items() if _shared_env.get(k) != v}
            if differing:
                log.warning("lockstep.compat: the embedded server already runs; these settings do not apply: %s",
                            differing)
        return _shared.address


def admin_metadata() -> List[Tuple[str, str]]:
    """The ``authorization`` header for operators' calls when ``$LOCKSTEP_ADMIN_TOKEN`` is set."""
    token = os.environ.get("LOCKSTEP_ADMIN_TOKEN")
    return [("authorization", f"Bearer {token}")] if token else []


async def _open(address: str, options: Optional[Sequence[Tuple[str, Any]]]) -> Client:
    return await connect(address, options=options)


class Connection:
    """A native client per event loop, to ``address`` (default: :func:`server_address`), with
    extra gRPC channel ``options``."""

    def __init__(
        self,
        address: Optional[str] = None,
        *,
        options: Optional[Sequence[Tuple[str, Any]]] = None,
        embedded_env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._address = address
        self._options = list(options or ())
        self._embedded_env = dict(embedded_env or {})
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._opening: "Optional[asyncio.Task[Client]]" = None

    @property
    def address(self) -> str:
        """Where this connection goes (resolved, and an embedded server started, on first use)."""
        if self._address is None:
            self._address = server_address(self._embedded_env)
        return self._address

    async def client(self) -> Client:
        """The client of the running event loop, opened on first use. Concurrent first callers
        share one opening."""
        loop = asyncio.get_running_loop()
        task = self._opening
        if self._loop is not loop or task is None or (task.done() and (task.exception() or task.result().closed)):
            address = self.address
            self._loop = loop
            task = self._opening = loop.create_task(_open(address, self._options))
        return await asyncio.shield(task)

    def current(self) -> Optional[Client]:
        """The open client of the running loop, if any (no connection is made)."""
        task = self._opening
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if self._loop is loop and task is not None and task.done() and not task.exception():
            return task.result()
        return None

    async def close(self) -> None:
        """Close the running loop's client (deregistering every agent opened through it)."""
        client = self.current()
        self._opening = None
        self._loop = None
        if client is not None:
            await client.close()

    def blocking(self, call: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``call`` with a client of its own on a new thread, and wait for its result: a plain
        function may use the server even from inside a running event loop."""
        address = self.address  # resolved here: an embedded server is started from this thread
        box: List[Any] = []

        async def once() -> T:
            async with connect(address) as client:
                return await call(client)

        def run() -> None:
            try:
                box.append((True, asyncio.run(once())))
            except BaseException as exc:  # handed to the caller's thread
                box.append((False, exc))

        thread = threading.Thread(target=run, name="lockstep-compat-call", daemon=True)
        thread.start()
        thread.join()
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]
