"""Collectives on numeric arrays: :meth:`lockstep.Agent.allreduce`, :meth:`~lockstep.Agent.broadcast`,
:meth:`~lockstep.Agent.allgather` and :meth:`~lockstep.Agent.reduce_scatter`.

Each call opens one ``Collective`` stream beside the agent's session, sends its header, then — once
the collective has started — its array once (little-endian, in chunks of 256 KiB, as fast as flow
control lets it) and receives the result once. Arrays may be Python lists, :class:`array.array` or numpy arrays (numpy is optional: it is
used only when the caller passes a numpy array); the result has the input's kind. Every member gets
the same bytes (the server reduces in rank order, left to right; see docs/PROTOCOL.md).

With ``shared_memory=True`` a member on the server's host asks for the shared-memory path (see
docs/PROTOCOL.md, "Shared memory"): when the server offers it (the agent came over loopback), the
array is written into a file the server created in /dev/shm, mapped with :mod:`mmap`, the stream
carries only small signals, and the result is read from shared memory once the collective is done
(for allreduce, broadcast and allgather from one region the server writes once for every member on
the path). The agent keeps its last regions mapped (:class:`Regions`) and names them in its next
call, which spares the kernel fresh pages. Members on either path mix in one collective and get the
same bytes. Ask for it only when this process can open the server's /dev/shm files (same host, same
user): a member that cannot map the offered file fails the collective.
"""

from __future__ import annotations

import array
import asyncio
import mmap
import os
import sys
from typing import Any, AsyncIterator, Dict, Optional, Sequence, Tuple, Union

import grpc

from .errors import InvalidArgument, LockstepError, error_from_rpc
from .v1 import lockstep_pb2 as pb

#: Bytes in every chunk but the last (the server's COLLECTIVE_CHUNK_BYTES).
CHUNK_BYTES = 256 * 1024

#: Bytes of the array written into shared memory between two signals.
SHM_STEP_BYTES = 1 << 20

#: A region kept mapped: (its id, the mapping).
Kept = Optional[Tuple[int, mmap.mmap]]


class Regions:
    """The shared-memory regions an agent keeps mapped between collectives: its own last region and
    the last shared result region. The result region is out of here while a call may read it, so
    that no other call of the agent names it (the server hands it over again only when every member
    names it, so never while one of them still reads it)."""

    def __init__(self) -> None:
        self.own: Kept = None
        self.result: Kept = None


def _map(path: str, size: int, region: int, kept: Kept) -> mmap.mmap:
    """Region ``region`` of ``size`` bytes: ``kept`` when ``path`` is empty (mapped before), else the
    file at ``path``."""
    if not path:
        if kept is not None and kept[0] == region and len(kept[1]) == size:
            return kept[1]
        raise LockstepError("collective: offered a shared-memory region this agent does not hold")
    fd = os.open(path, os.O_RDWR)
    try:
        if os.fstat(fd).st_size != size or size == 0:
            raise LockstepError(f"collective: {path} does not hold the {size} bytes offered")
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)

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


#: What the upload learns once the collective started: the stream path (``None``), the
#: shared-memory path (its own region, if any, and the offer), or an offer it cannot use.
_Path = Union[None, Tuple[Optional[mmap.mmap], pb.CollectiveSharedMemory], str]


async def run(
    stub: Any,
    header: pb.CollectiveHeader,
    payload: bytes,
    send: bool,
    itemsize: int,
    regions: Optional[Regions] = None,
) -> Tuple[bytes, Tuple[str, ...], str]:
    """Sends ``header`` and (if ``send``) ``payload`` — in chunks, or through shared memory when
    ``regions`` is given and the server offers it; returns the result's bytes, the members whose
    state checksum diverged, and the checksum they were compared with."""
    kept_result: Kept = None
    if regions is not None:
        header.shared_memory = True
        header.shm_region = regions.own[0] if regions.own else 0
        kept_result, regions.result = regions.result, None
        header.shm_result_region = kept_result[0] if kept_result else 0
    path: "asyncio.Future[_Path]" = asyncio.get_running_loop().create_future()

    async def upload() -> AsyncIterator[pb.CollectiveUpload]:
        yield pb.CollectiveUpload(header=header)
        # Nothing more until the collective started (the server reads no array before): a call
        # refused at once then has no chunk in flight when its status comes, which gRPC's C core
        # could report as "Internal error from Core" instead of the status.
        chosen = await path
        if isinstance(chosen, str):
            return  # the call is over, or ending the upload fails the collective: the outcome says why
        if chosen is not None:  # the shared-memory path
            own, offer = chosen
            view = memoryview(payload) if send else memoryview(b"")
            if len(view) and own is None:
                return
            for at in range(0, len(view), SHM_STEP_BYTES):
                part = view[at : at + SHM_STEP_BYTES]
                start = offer.array_offset + at
                own[start : start + len(part)] = part  # type: ignore[index]
                yield pb.CollectiveUpload(shm_written=pb.CollectiveShmWritten(written=at + len(part)))
            if not len(view):  # nothing to write (a broadcast's non-root): say it is mapped
                yield pb.CollectiveUpload(shm_written=pb.CollectiveShmWritten(written=0))
            return
        if send:
            view = memoryview(payload)
            for at in range(0, len(view), CHUNK_BYTES):
                yield pb.CollectiveUpload(chunk=pb.CollectiveChunk(data=bytes(view[at : at + CHUNK_BYTES])))

    call = stub.Collective(upload())
    result: Optional[bytearray] = None
    received = 0
    diverged: Tuple[Tuple[str, ...], str] = ((), "")
    shared: Optional[Tuple[Optional[mmap.mmap], mmap.mmap, pb.CollectiveSharedMemory]] = None
    unusable: Optional[LockstepError] = None
    try:
        async for msg in call:
            which = msg.WhichOneof("kind")
            if which == "started":
                result = bytearray(msg.started.result_length * itemsize)
                diverged = (tuple(msg.started.diverged), msg.started.reference_checksum)
                chosen: _Path = None
                if regions is not None and msg.started.HasField("shared_memory"):
                    offer = msg.started.shared_memory
                    try:
                        if offer.result_bytes != len(result):
                            raise LockstepError("collective: a shared-memory result of another size than the result")
                        own = None
                        if offer.size or offer.region or offer.array_bytes:
                            own = _map(offer.path, offer.size, offer.region, regions.own)
                        if offer.result_region:
                            into = _map(offer.result_path, offer.result_size, offer.result_region, kept_result)
                        elif own is not None:
                            into = own
                        else:
                            raise LockstepError("collective: offered no region for the result")
                        shared = (own, into, offer)
                        chosen = (own, offer)
                    except (OSError, LockstepError) as exc:
                        unusable = exc if isinstance(exc, LockstepError) else LockstepError(
                            f"collective: cannot map the collective's shared memory: {exc}"
                        )
                        chosen = "unusable"
                if not path.done():
                    path.set_result(chosen)
            elif which == "chunk":
                if result is None or msg.chunk.offset + len(msg.chunk.data) > len(result):
                    raise LockstepError("collective: a result chunk outside the result")
                result[msg.chunk.offset : msg.chunk.offset + len(msg.chunk.data)] = msg.chunk.data
                received += len(msg.chunk.data)
            elif which == "done":
                if result is None:
                    raise LockstepError("collective: the collective ended before it started")
                if shared is not None:
                    own, into, offer = shared
                    raw = into[offer.result_offset : offer.result_offset + offer.result_bytes]
                    if regions is not None:
                        if own is not None:
                            regions.own = (offer.region, own)
                        if offer.result_region:
                            kept_result = (offer.result_region, into)
                    return raw, diverged[0], diverged[1]
                if received != len(result):
                    raise LockstepError("collective: the result came incomplete")
                return bytes(result), diverged[0], diverged[1]
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, what="collective") from None
    finally:
        if not path.done():
            path.set_result("unusable")  # the call is over: the upload has nothing more to say
        if regions is not None and regions.result is None:
            regions.result = kept_result  # not read by this call any more
    raise unusable or LockstepError("collective: the server ended the stream without an outcome")


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
