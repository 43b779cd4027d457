"""Fixtures: a real ``lockstep serve`` on a free loopback port, and clients connected to it.

The server binary is ``$LOCKSTEP_BIN``, or ``<repo>/target/debug/lockstep`` (``cargo build`` makes it).
The operator settings a developer may have in the environment (``LOCKSTEP_ADMIN_TOKEN``,
``LOCKSTEP_ADMIN_LISTEN``, ``LOCKSTEP_ADMIN_ADDR``) are kept away from the servers and clients the
tests start: a test asks for them explicitly (``server_factory(admin_token=..., admin_listen=...)``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, List, Optional

import pytest

import lockstep

PYTHON_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = PYTHON_ROOT.parent.parent
LISTENING = re.compile(r"^lockstep listening on (\S+:\d+)\s*$")
ADMIN_LISTENING = re.compile(r"^lockstep admin listening on (\S+:\d+)\s*$")
#: Whether the servers started here reword every error message (``LOCKSTEP_REWORD_ERRORS=1``, which
#: they inherit): tests then skip assertions on a message's words; those on reasons and behaviour hold.
REWORDED = os.environ.get("LOCKSTEP_REWORD_ERRORS") == "1"

# gRPC shares one TCP connection among a process's channels to the same server, and the server
# renews every session of a connection on one heartbeat: a test that needs an agent to go silent on
# its own gives it a connection of its own with this channel option.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]

#: Environment variables that change how servers and admins authenticate or where Admin is served.
ADMIN_ENV = (
    "LOCKSTEP_ADMIN_TOKEN",
    "LOCKSTEP_ADMIN_LISTEN",
    "LOCKSTEP_ADMIN_ADDR",
    "LOCKSTEP_TOKEN",
    "LOCKSTEP_TOKEN_SECRET_FILE",
)


def lockstep_bin() -> Path:
    """The server binary the tests run."""
    return Path(os.environ.get("LOCKSTEP_BIN") or REPO_ROOT / "target" / "debug" / "lockstep")


class ServerProcess:
    """One running ``lockstep serve``."""

    def __init__(
        self,
        proc: "subprocess.Popen[str]",
        address: str,
        log_path: Path,
        args: List[str],
        *,
        admin_address: Optional[str] = None,
        admin_token: Optional[str] = None,
    ) -> None:
        self.proc = proc
        self.address = address
        self.admin_address = admin_address or address
        """Where the server serves ``Admin``: ``address`` unless started with ``admin_listen``."""
        self.admin_token = admin_token
        """The token ``Admin`` calls need, if the server was given one."""
        self.log_path = log_path
        self.args = args

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait for a graceful exit; returns the exit code (kills after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"lockstep serve did not exit within {timeout}s of SIGTERM\n{self.log()[-4000:]}")
            finally:
                self._close_pipe()
        self._close_pipe()
        return int(self.proc.returncode)

    def _close_pipe(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipe()


def start_server(
    log_dir: Path,
    *extra: str,
    admin_token: Optional[str] = None,
    admin_listen: Optional[str] = None,
    startup_timeout: float = 30.0,
) -> ServerProcess:
    """Start ``lockstep serve --listen 127.0.0.1:0 EXTRA...`` and wait for its listening line.

    ``admin_token`` adds ``--admin-token``; ``admin_listen`` (e.g. ``"127.0.0.1:0"``) adds
    ``--admin-listen`` and waits for the second line, ``lockstep admin listening on ADDR``.
    """
    binary = lockstep_bin()
    if not binary.exists():
        pytest.fail(
            f"the lockstep server binary is missing: {binary}. Build it (cargo build) or set LOCKSTEP_BIN.",
            pytrace=False,
        )
    log_path = log_dir / f"lockstep-{uuid.uuid4().hex[:8]}.log"
    listen = [] if "--listen" in extra else ["--listen", "127.0.0.1:0"]
    args = [str(binary), "serve", *listen, *extra]
    if "--data-dir" not in extra:
        args.append("--in-memory")  # nothing written to the working directory
    if admin_token is not None:
        args += ["--admin-token", admin_token]
    if admin_listen is not None:
        args += ["--admin-listen", admin_listen]
    env = {k: v for k, v in os.environ.items() if k not in ADMIN_ENV}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, text=True, bufsize=1, env=env
        )
    wanted = 2 if admin_listen is not None else 1
    lines: List[str] = []

    def read_lines() -> None:
        assert proc.stdout is not None
        for _ in range(wanted):
            line = proc.stdout.readline()
            lines.append(line)
            if not line:
                return

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    reader.join(startup_timeout)
    got = list(lines)
    match = LISTENING.match(got[0]) if got else None
    admin_match = ADMIN_LISTENING.match(got[1]) if len(got) > 1 else None
    if not match or (admin_listen is not None and not admin_match):
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        pytest.fail(
            f"lockstep serve did not print its listening line(s) within {startup_timeout}s "
            f"(got {got!r}, exit status {proc.returncode})\n"
            + log_path.read_text(errors="replace")[-4000:],
            pytrace=False,
        )
    return ServerProcess(
        proc,
        match.group(1),
        log_path,
        args,
        admin_address=admin_match.group(1) if admin_match else None,
        admin_token=admin_token,
    )


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Admins in the tests get their token and address from the test, not from the environment."""
    for name in ADMIN_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra flags (``server_factory("--heartbeat-interval-ms", "100")``) and
    admin options (``server_factory(admin_token="s3cret", admin_listen="127.0.0.1:0")``); all stop at the end."""
    started: List[ServerProcess] = []

    def factory(*extra: str, admin_token: Optional[str] = None, admin_listen: Optional[str] = None) -> ServerProcess:
        srv = start_server(tmp_path, *extra, admin_token=admin_token, admin_listen=admin_listen)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        try:
            srv.terminate()
        except AssertionError:
            pass


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with default settings."""
    return server_factory()


@pytest.fixture
def fast_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with a 100 ms heartbeat interval and a 3-interval lease (agents are lost in ~0.3 s)."""
    return server_factory("--heartbeat-interval-ms", "100", "--lease-intervals", "3")


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[lockstep.Client]:
    async with lockstep.connect(server.address) as c:
        yield c


async def eventually(
    check: Callable[[], "asyncio.Future[bool] | bool"], timeout: float = 5.0, interval: float = 0.02, what: str = ""
) -> None:
    """Poll ``check`` (sync or async) until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or check}")
        await asyncio.sleep(interval)


def python_env(address: Optional[str] = None) -> dict:
    """An environment for Python subprocesses that import this package from the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ADMIN_ENV}
    src = str(PYTHON_ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if address:
        env["LOCKSTEP_ADDR"] = address
    return env


PYTHON = sys.executable
