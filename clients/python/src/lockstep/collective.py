"""Collectives on numeric arrays: :meth:`lockstep.Agent.allreduce`, :meth:`~lockstep.Agent.broadcast`,
:meth:`~lockstep.Agent.allgather` and :meth:`~lockstep.Agent.reduce_scatter`.

Each call opens one ``Collective`` stream beside the agent's session, sends its header and its array
once (little-endian, in chunks of 256 KiB, as fast as flow control lets it) and receives the result
once. Arrays may be Python lists, :class:`array.array` or numpy arrays (numpy is optional: it is
used only when the caller passes a numpy array); the result has the input's kind. Every member gets
the same bytes (the server reduces in rank order, left to right; see docs/PROTOCOL.md).

This client always uses the stream: it never asks for the same-host shared-memory path (the Rust
client does, with ``Collective::shared_memory``); both kinds of member mix in one collective.
"""

from __future__ import annotations

import array
import sys
from typing import Any, AsyncIterator, Dict, Optional, Sequence, Tuple

import grpc

from .errors import InvalidArgument, LockstepError, error_from_rpc
from .v1 import lockstep_pb2 as pb

#: Bytes in every chunk but the last (the server's COLLECTIVE_CHUNK_BYTES).
CHUNK_BYTES = 256 * 1024

#: dtype name -> (wire enum, array.array typecode candidates, numpy dtype string)
_DTYPES: Dict[str, Tuple[int, str, str]] = {
    "f32": (pb.ELEMENT_TYPE_F32, "f", "<f4"),
    "f64": (pb.ELEMENT_TYPE_F64, "d", "<f8"),
    "i32": (pb.ELEMENT_TYPE_I32, "i", "<i4"),
    "i64": (pb.ELEMENT_TYPE_I64, "q", "<i8"),
}
_NUMPY_NAMES = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64"}
_ARRAY_CODES = {("f", 4): "f32", ("d", 8): "f64"}
_OPS = {
    "sum": pb.REDUCE_OP_SUM,
    "mean": pb.REDUCE_OP_MEAN,
    "min": pb.REDUCE_OP_MIN,
    "max": pb.REDUCE_OP_MAX,
    "product": pb.REDUCE_OP_PRODUCT,
    "prod": pb.REDUCE_OP_PRODUCT,
}


def _is_numpy(data: Any) -> bool:
    return type(data).__module__ == "numpy" and hasattr(data, "dtype")


def encode(data: Any, dtype: Optional[str]) -> Tuple[str, bytes, int, str]:
    """(dtype, little-endian bytes, element count, kind of input) for a list, array.array or numpy array."""
    if _is_numpy(data):
        name = dtype or _NUMPY_NAMES.get(str(data.dtype))
        if name not in _DTYPES:
            raise InvalidArgument(f"collectives carry f32, f64, i32 or i64 arrays, not numpy {data.dtype}")
        flat = data.reshape(-1).astype(_DTYPES[name][2], copy=False)
        return name, flat.tobytes(), int(flat.size), "numpy"
    if isinstance(data, array.array):
        name = dtype or _ARRAY_CODES.get((data.typecode, data.itemsize))
        if name is None and data.typecode in "bhilq" + "BHILQ":
            name = "i32" if data.itemsize <= 4 else "i64"
        if name not in _DTYPES:
            raise InvalidArgument(f"collectives carry f32, f64, i32 or i64 arrays, not array('{data.typecode}')")
        values: Sequence[Any] = data
        kind = "array"
    else:
        values = list(data)
        name = dtype or ("f64" if any(isinstance(v, float) for v in values) else "i64")
        if name not in _DTYPES:
            raise InvalidArgument(f"dtype must be one of f32, f64, i32, i64, not {name!r}")
        kind = "list"
    typed = array.array(_DTYPES[name][1], values)
    if sys.byteorder != "little":
        typed.byteswap()
    return name, typed.tobytes(), len(typed), kind


def decode(name: str, raw: bytes, kind: str) -> Any:
    """The result in the input's kind."""
    if kind == "numpy":
        import numpy  # only reached when the caller passed a numpy array

        return numpy.frombuffer(raw, dtype=_DTYPES[name][2]).copy()
    typed = array.array(_DTYPES[name][1])
    typed.frombytes(raw)
    if sys.byteorder != "little":
        typed.byteswap()
    return typed if kind == "array" else typed.tolist()


async def run(
    stub: Any,
    header: pb.CollectiveHeader,
    payload: bytes,
    send: bool,
    itemsize: int,
) -> Tuple[bytes, Tuple[str, ...], str]:
    """Sends ``header`` and (if ``send``) ``payload`` in chunks; returns the result's bytes, the
    members whose state checksum diverged, and the checksum they were compared with."""

    async def upload() -> AsyncIterator[pb.CollectiveUpload]:
        yield pb.CollectiveUpload(header=header)
        if send:
            view = memoryview(payload)
            for at in range(0, len(view), CHUNK_BYTES):
                yield pb.CollectiveUpload(chunk=pb.CollectiveChunk(data=bytes(view[at : at + CHUNK_BYTES])))

    call = stub.Collective(upload())
    result: Optional[bytearray] = None
    received = 0
    diverged: Tuple[Tuple[str, ...], str] = ((), "")
    try:
        async for msg in call:
            which = msg.WhichOneof("kind")
            if which == "started":
                result = bytearray(msg.started.result_length * itemsize)
                diverged = (tuple(msg.started.diverged), msg.started.reference_checksum)
            elif which == "chunk":
                if result is None or msg.chunk.offset + len(msg.chunk.data) > len(result):
                    raise LockstepError("collective: a result chunk outside the result")
                result[msg.chunk.offset : msg.chunk.offset + len(msg.chunk.data)] = msg.chunk.data
                received += len(msg.chunk.data)
            elif which == "done":
                if result is None or received != len(result):
                    raise LockstepError("collective: the result came incomplete")
                return bytes(result), diverged[0], diverged[1]
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, what="collective") from None
    raise LockstepError("collective: the server ended the stream without an outcome")


def header(
    *,
    namespace: str,
    agent_id: str,
    resume_token: str,
    collective_id: str,
    group: Optional[Sequence[str]],
    role: Optional[str],
    replica_group: Optional[str] = None,
    state_checksum: Optional[str] = None,
    kind: int,
    dtype: str,
    op: str,
    root: int,
    length: int,
    timeout: Optional[float],
) -> pb.CollectiveHeader:
    """The header of a collective call."""
    if sum(x is not None for x in (group, role, replica_group)) != 1:
        raise InvalidArgument(
            "name the collective's members: group=[agent ids], role='...' or replica_group='...'"
        )
    if op not in _OPS:
        raise InvalidArgument(f"op must be one of sum, mean, min, max, product, not {op!r}")
    members = pb.CollectiveGroup(agents=list(group or ()), role=role or "", replica_group=replica_group or "")
    return pb.CollectiveHeader(
        namespace=namespace,
        agent_id=agent_id,
        resume_token=resume_token,
        collective_id=collective_id,
        group=members,
        kind=kind,
        dtype=_DTYPES[dtype][0],
        op=_OPS[op],
        root=root,
        length=length,
        timeout_ms=int((timeout or 0) * 1000),
        state_checksum=state_checksum or "",
    )


def itemsize(dtype: str) -> int:
    return 4 if dtype in ("f32", "i32") else 8
