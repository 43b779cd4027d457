"""The lean agent transport from the client's side: an agent session over one plain TCP connection
of length-delimited frames instead of a gRPC stream (``lockstep serve --lean-listen``;
docs/PROTOCOL.md, "The lean transport"), for agents on the server's host.

This module owns the framing and :class:`LeanCall`, which stands in for the ``grpc.aio``
stream-stream call of a gRPC session: the agent's session code writes ``ClientMessage``\\ s, reads
``ServerMessage``\\ s, half-closes and cancels it exactly as it does the gRPC call, and the call ends
with the same statuses (an END frame carries the status the gRPC stream would have ended with, its
details included), so that errors, their reasons and the reconnection policy are those of a gRPC
session. Queries (state reads, listings) still go over the client's gRPC connection.

A frame is::

    kind:   u8               - MESSAGE (0), HELLO (0x80) or END (0x81)
    length: u32, big-endian  - the payload's bytes
    payload                  - a protobuf message

A MESSAGE frame is byte for byte a gRPC length-prefixed message (uncompressed).

The client sends one HELLO (a ``LeanHello``), then MESSAGEs carrying ``ClientMessage``\\ s, the
first its ``register``; it ends the session by closing its side of the connection (after
``deregister`` to leave at once). The server sends MESSAGEs carrying ``ServerMessage``\\ s and,
last, one END (a ``LeanEnd``). A connection that closes without an END, or breaks, ends the call
with ``UNAVAILABLE``: the agent resumes it as it resumes a broken gRPC stream.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import grpc
import grpc.aio

from .errors import Unavailable, status_code
from .v1 import lockstep_pb2 as pb

__all__ = ["VERSION", "HELLO", "MESSAGE", "END", "LeanCall", "LeanDialer", "frame"]

#: The version of the framing this client speaks (``LeanHello.version``).
VERSION = 1

#: Either way: a ``ClientMessage`` (client to server) or a ``ServerMessage`` (server to client).
MESSAGE = 0
#: Client to server, first frame: a ``LeanHello``.
HELLO = 0x80
#: Server to client, last frame: a ``LeanEnd``.
END = 0x81

_HEADER = struct.Struct(">BI")

#: The bytes gathered before they are handed to the socket at once, when the application queues
#: more than that within one turn of the event loop: bounds the buffer and the wait of the first.
COALESCE_BYTES = 256 * 1024

#: How long opening the connection may take (a loopback connection opens at once; this bounds a
#: host that does not answer).
CONNECT_TIMEOUT = 10.0

#: What the reader buffers before it stops reading the socket (asyncio's default is 64 KiB: larger
#: means fewer pauses under a burst of deliveries).
_READ_LIMIT = 1024 * 1024

#: Where the status details (a serialized ``google.rpc.Status``) travel in gRPC's trailers; an END
#: frame's details are put there so that ``errors.error_from_rpc`` reads them as it reads gRPC's.
_DETAILS_KEY = "grpc-status-details-bin"

# What grpc.aio says of a call used after it ended, and of a cancelled one, for the same messages.
_ALREADY_FINISHED = "RPC already finished."
_HALF_CLOSED = "RPC is half closed after calling done_writing."
_LOCALLY_CANCELLED = "Locally cancelled by application!"


def frame(kind: int, payload: bytes) -> bytes:
    """One frame of ``kind`` carrying ``payload`` (a serialized protobuf message)."""
    return _HEADER.pack(kind, len(payload)) + payload


@dataclass(frozen=True)
class LeanDialer:
    """Where and how an agent opens its lean connections: the server's lean listener and the
    token the HELLO presents (empty: none). The same for every session of the agent, so that a
    resumed session comes back the way the first one came."""

    host: str
    port: int
    token: str = ""

    @property
    def address(self) -> str:
        """``host:port`` of the lean listener."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def open(self) -> "LeanCall":
        """Open a connection and say hello; the session's first message (its ``register``) is
        the caller's to write.

        Raises:
            Unavailable: the connection could not be opened (the server is down, or no longer
                serves the lean transport there): an agent resuming its session tries again.
        """
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=_READ_LIMIT), CONNECT_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise Unavailable(
                f"cannot reach the lean transport of the lockstep server at {self.address}: "
                f"{str(exc) or 'no answer within %gs' % CONNECT_TIMEOUT}"
            ) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Frames are small and each is awaited by someone: never hold one back for Nagle.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not a TCP socket (never, from open_connection)
                pass
        call = LeanCall(reader, writer, self.address)
        hello = pb.LeanHello(version=VERSION, token=self.token)
        # Buffered: it leaves with the registration, in one write.
        call._put(HELLO, hello.SerializeToString())
        return call


class LeanCall:
    """One lean connection carrying one agent session, used as the agent uses a ``grpc.aio``
    stream-stream call of ``Lockstep.Session``.

    :meth:`write` queues a ``ClientMessage`` (what is queued within one turn of the event loop
    leaves in one write), :meth:`read` returns the next ``ServerMessage`` or ``grpc.aio.EOF``
    after a normal END, :meth:`done_writing` half-closes, :meth:`cancel` closes. A call that ended
    with an error raises it as a :class:`grpc.aio.AioRpcError` whose code, details and trailing
    ``grpc-status-details-bin`` are the END frame's, so that ``errors.error_from_rpc`` makes of it
    the exception a gRPC session would have raised; a connection that broke or closed without an
    END ends it with ``UNAVAILABLE``. :meth:`code`, :meth:`details` and
    :meth:`trailing_metadata` wait for the end (reading what is left) as gRPC's do.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._loop = asyncio.get_running_loop()
        self.address = address
        """``host:port`` of the server's lean listener."""
        self._out = bytearray()
        self._flush_scheduled = False
        self._half_closed = False
        self._reading = False
        self._cancelled = False
        # The call's final status once it ended: (code, message, details).
        self._status: Optional[Tuple[grpc.StatusCode, str, bytes]] = None
        self._ended = asyncio.Event()

    def __repr__(self) -> str:
        state = "open" if self._status is None else self._status[0].name
        return f"<lockstep.lean.LeanCall {self.address} {state}>"

    # ------------------------------------------------------------------------------------------
    # writing

    def _put(self, kind: int, payload: bytes) -> None:
        """Queues one frame; it leaves with everything else queued in this turn of the loop."""
        self._out += _HEADER.pack(kind, len(payload))
        self._out += payload
        if len(self._out) >= COALESCE_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        # Handed over, not copied: the transport may keep it until the socket takes it.
        data, self._out = self._out, bytearray()
        # A closed transport counts (and after a few, logs) every write it is given: the reading
        # side reports the broken connection instead.
        if not self._transport.is_closing():
            self._writer.write(data)

    async def write(self, message: pb.ClientMessage) -> None:
        """Queue ``message`` for the server.

        Raises:
            asyncio.InvalidStateError: the call has ended, or :meth:`done_writing` was called (as
                a gRPC call does).
            grpc.aio.AioRpcError: ``UNAVAILABLE``: the connection broke.
        """
        if self._status is not None:
            raise asyncio.InvalidStateError(_ALREADY_FINISHED)
        if self._half_closed:
            raise asyncio.InvalidStateError(_HALF_CLOSED)
        if self._transport.is_closing():
            raise self._error(grpc.StatusCode.UNAVAILABLE, "the lean connection is closed", b"")
        self._put(MESSAGE, message.SerializeToString())
        if self._transport.get_write_buffer_size():
            # The socket did not take everything: wait while the transport is over its high-water
            # mark, so that a fast writer is held back by the connection rather than by memory.
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                broke = f"the lean connection broke: {str(exc) or type(exc).__name__}"
                raise self._error(grpc.StatusCode.UNAVAILABLE, broke, b"") from None

    async def done_writing(self) -> None:
        """Send what is queued and close the connection's write side: the end of the session's
        stream (after a ``deregister``, the agent leaves at once). Nothing once the call ended."""
        if self._status is not None or self._half_closed:
            return
        self._half_closed = True
        self._flush()
        if not self._transport.is_closing() and self._writer.can_write_eof():
            try:
                self._writer.write_eof()
            except OSError:
                pass  # the reading side reports the broken connection

    def cancel(self) -> bool:
        """Close the connection at once, as cancelling a gRPC call resets its stream: the server
        sees the session's stream break (its lease is kept). A read then raises
        :class:`asyncio.CancelledError`, as grpc.aio's does. False if the call had ended."""
        if self._status is not None:
            return False
        self._cancelled = True
        self._end(grpc.StatusCode.CANCELLED, _LOCALLY_CANCELLED, b"")
        return True

    def cancelled(self) -> bool:
        """True once :meth:`cancel` ended the call."""
        return self._cancelled

    def done(self) -> bool:
        """True once the call ended (END read, connection closed or broken, cancelled)."""
        return self._status is not None

    # ------------------------------------------------------------------------------------------
    # reading

    async def read(self) -> Any:
        """The next ``ServerMessage``, or ``grpc.aio.EOF`` when the server ended the session
        normally (END with code 0).

        Raises:
            grpc.aio.AioRpcError: the session ended with an error: the END frame's status, or
                ``UNAVAILABLE`` for a connection that broke or closed without an END.
            asyncio.CancelledError: the call was cancelled.
        """
        if self._status is None:
            if self._reading:
                raise RuntimeError("a lean call is read by one reader at a time")
            self._reading = True
            try:
                message = await self._read_message()
            finally:
                self._reading = False
            if message is not None:
                return message
        return self._read_after_end()

    def _read_after_end(self) -> Any:
        assert self._status is not None
        if self._cancelled:
            raise asyncio.CancelledError()
        code, message, details = self._status
        if code == grpc.StatusCode.OK:
            return grpc.aio.EOF
        raise self._error(code, message, details)

    async def _read_message(self) -> Optional[pb.ServerMessage]:
        """The next message, or ``None`` once the call has ended (its status then set)."""
        try:
            kind, length = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
            payload = await self._reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as exc:
            self._unavailable(
                "the lean connection broke: it closed in the middle of a frame"
                if exc.partial
                else "the lean connection closed without ending the session"
            )
            return None
        except (ConnectionError, OSError) as exc:
            self._unavailable(f"the lean connection broke: {str(exc) or type(exc).__name__}")
            return None
        except asyncio.CancelledError:
            # As grpc.aio does: a reader cancelled while waiting cancels the call (the connection
            # may be in the middle of a frame, so it cannot be read further anyway).
            self.cancel()
            raise
        try:
            if kind == MESSAGE:
                message: pb.ServerMessage = pb.ServerMessage.FromString(payload)
                return message
            if kind == END:
                end = pb.LeanEnd.FromString(payload)
                self._end(status_code(end.code), end.message, bytes(end.details))
                return None
        except Exception as exc:  # protobuf's DecodeError, whichever implementation raises it
            what = "ServerMessage" if kind == MESSAGE else "LeanEnd"
            self._unavailable(f"the lean connection broke: an undecodable {what} ({exc})")
            return None
        self._unavailable(f"the lean connection broke: a frame of unknown kind {kind}")
        return None

    def _unavailable(self, message: str) -> None:
        """Ends the call as a broken gRPC stream ends, so that the session is resumed; nothing if
        it ended already (a cancelled call's connection then reads as closed)."""
        if self._status is None:
            self._end(grpc.StatusCode.UNAVAILABLE, message, b"")

    def _end(self, code: grpc.StatusCode, message: str, details: bytes) -> None:
        """Records the call's final status and lets the connection go: nothing more is sent on
        an ended session, and the server has closed (or is closing) its side."""
        self._status = (code, message, details)
        self._out.clear()
        self._ended.set()
        if self._cancelled:
            self._transport.abort()  # what is still buffered is dropped, as a reset stream's is
        else:
            self._writer.close()

    async def _wait_end(self) -> Tuple[grpc.StatusCode, str, bytes]:
        """The final status, reading (and dropping) what is left when no one else reads."""
        while self._status is None:
            if self._reading:
                await self._ended.wait()
            else:
                self._reading = True
                try:
                    await self._read_message()
                finally:
                    self._reading = False
        return self._status

    def _error(self, code: grpc.StatusCode, message: str, details: bytes) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), _trailers(details), message)

    # ------------------------------------------------------------------------------------------
    # the status, as a grpc.aio call reports it

    async def code(self) -> grpc.StatusCode:
        """The status code the call ended with (waits for the end)."""
        return (await self._wait_end())[0]

    async def details(self) -> str:
        """The status message the call ended with (waits for the end)."""
        return (await self._wait_end())[1]

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """Always empty: a lean connection has no headers."""
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        """The END frame's details as gRPC's ``grpc-status-details-bin`` (waits for the end)."""
        return _trailers((await self._wait_end())[2])


def _trailers(details: bytes) -> grpc.aio.Metadata:
    return grpc.aio.Metadata((_DETAILS_KEY, details)) if details else grpc.aio.Metadata()
