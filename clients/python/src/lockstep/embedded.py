"""A private lockstep server for scripts: ``lockstep serve --in-memory`` on a free loopback port.

``lockstep.connect(embedded=True)`` starts one and stops it when the client closes; the seed-API
classes of :mod:`lockstep.compat` share one per process when ``LOCKSTEP_ADDR`` is not set. The
binary is ``$LOCKSTEP_BIN``, else ``lockstep`` on ``PATH``, else one shipped next to this package's
modules (``lockstep/bin/lockstep`` or ``lockstep/lockstep``). Nothing is written to disk:
everything the server held is gone when it stops.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import List, Mapping, Optional

from .errors import LockstepError

__all__ = ["EmbeddedServer", "ServerNotFound", "find_server_binary"]

_LISTENING = re.compile(r"^lockstep listening on (\S+:\d+)\s*$")

#: How long a starting server may take to print its address.
STARTUP_TIMEOUT = 30.0


class ServerNotFound(LockstepError):
    """No ``lockstep`` server binary was found to start an embedded server with."""


def find_server_binary() -> Path:
    """The ``lockstep`` binary an embedded server runs: ``$LOCKSTEP_BIN``, ``PATH``, or next to
    the package.

    Raises:
        ServerNotFound: none of them has one; the message says how to get one.
    """
    env = os.environ.get("LOCKSTEP_BIN")
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ServerNotFound(f"LOCKSTEP_BIN is {env}, which is not an executable file")
    on_path = shutil.which("lockstep")
    if on_path:
        return Path(on_path)
    here = Path(__file__).resolve().parent
    for candidate in (here / "bin" / "lockstep", here / "lockstep"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerNotFound(
        "no lockstep server binary to start an embedded server with: build one from the lockstep "
        "repository (`cargo build --release -p lockstep`, then put target/release/lockstep on PATH or "
        "set LOCKSTEP_BIN to it), or run `lockstep serve` yourself and set LOCKSTEP_ADDR to its address"
    )


class EmbeddedServer:
    """One running ``lockstep serve --in-memory --listen 127.0.0.1:0``; :meth:`stop` ends it.

    Args:
        env: extra environment variables for the server (e.g. ``LOCKSTEP_BREAKER__FAILURE_THRESHOLD``).
        args: extra ``lockstep serve`` flags.
    """

    def __init__(self, *, env: Optional[Mapping[str, str]] = None, args: Optional[List[str]] = None) -> None:
        binary = find_server_binary()
        # The server stops when its input closes, i.e. when this process ends, even by SIGKILL.
        cmd = [str(binary), "serve", "--in-memory", "--listen", "127.0.0.1:0", "--stop-with-stdin", *(args or [])]
        full_env = dict(os.environ)
        full_env.update(env or {})
        # The private server is ours alone: it listens on loopback, so no admin token is needed.
        for name in ("LOCKSTEP_ADMIN_TOKEN", "LOCKSTEP_ADMIN_LISTEN", "LOCKSTEP_LISTEN", "LOCKSTEP_DATA_DIR", "LOCKSTEP_CONFIG"):
            if name not in (env or {}):
                full_env.pop(name, None)
        # No code runs in the child before exec (preexec_fn is not safe in a process with threads,
        # and a gRPC client always has some): the pipe on its input, held only here, ties the
        # server's life to this process instead.
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.address = self._read_address()
        """The ``host:port`` the server listens on."""

    def _read_address(self) -> str:
        found: List[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            found.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        match = _LISTENING.match(found[0]) if found else None
        if match is None:
            self.stop()
            raise LockstepError(f"the embedded lockstep server did not start (its first line: {found[:1]!r})")
        return match.group(1)

    @property
    def running(self) -> bool:
        """True until the server exits."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds). Idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stdin):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def __repr__(self) -> str:
        return f"<lockstep.EmbeddedServer {self.address} running={self.running}>"
