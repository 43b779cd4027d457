"""Collectives against a real server: allreduce, broadcast, allgather and reduce_scatter over Python
lists, array.array and (when installed) numpy arrays; every member gets the same result; a member
calling with another length is named; a missing member is named at the deadline."""

from __future__ import annotations

import array
import asyncio
import struct
from typing import Any, List

import pytest

import lockstep
from conftest import eventually
from lockstep.v1 import lockstep_pb2 as pb

IDS = ["w0", "w1", "w2"]


async def members(client: lockstep.Client) -> List[lockstep.Agent]:
    return [await client.register(i, role="worker") for i in IDS]


async def close(agents: List[lockstep.Agent]) -> None:
    for a in agents:
        await a.close()


def f32(values: List[float]) -> List[float]:
    """The values as f32 would hold them."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


async def test_lists_every_op_and_the_same_result_for_everyone(client: lockstep.Client) -> None:
    agents = await members(client)
    try:
        data = [[1.5, -2.0, 3.25], [0.5, 4.0, -1.0], [2.0, 1.0, 0.75]]
        expected = {
            "sum": [4.0, 3.0, 3.0],
            "mean": [4.0 / 3, 1.0, 1.0],
            "min": [0.5, -2.0, -1.0],
            "max": [2.0, 4.0, 3.25],
            "product": [1.5, -8.0, -2.4375],
        }
        for op, want in expected.items():
            got = await asyncio.gather(*(a.allreduce(d, op=op, group=IDS) for a, d in zip(agents, data)))
            assert got[0] == got[1] == got[2], "every member gets the same result"
            assert got[0] == pytest.approx(want)
            assert isinstance(got[0], list)
        ints = await asyncio.gather(*(a.allreduce([i, 10 * i], op="sum", group=IDS) for i, a in enumerate(agents)))
        assert ints == [[3, 30]] * 3 and all(isinstance(v, int) for v in ints[0])
        gathered = await asyncio.gather(*(a.allgather([i, -i], role="worker") for i, a in enumerate(agents)))
        assert gathered == [[0, 0, 1, -1, 2, -2]] * 3
        bcast = await asyncio.gather(*(a.broadcast([float(i)] * 4, root=2, group=IDS) for i, a in enumerate(agents)))
        assert bcast == [[2.0] * 4] * 3
        scattered = await asyncio.gather(
            *(a.reduce_scatter(list(range(6)), op="sum", group=IDS, dtype="i32") for a in agents)
        )
        assert scattered == [[0, 3], [6, 9], [12, 15]]
    finally:
        await close(agents)


async def test_array_array_in_f32_and_results_of_the_same_kind(client: lockstep.Client) -> None:
    agents = await members(client)
    try:
        data = [array.array("f", [0.1 * (i + 1)] * 5) for i in range(3)]
        got = await asyncio.gather(*(a.allreduce(d, group=IDS) for a, d in zip(agents, data)))
        assert all(isinstance(g, array.array) and g.typecode == "f" for g in got)
        # rank order, in f32: ((0.1 + 0.2) + 0.3)
        s = f32([f32([0.1])[0] + f32([0.2])[0]])[0]
        assert list(got[0]) == f32([s + f32([0.3])[0]] * 5)
        assert got[0] == got[1] == got[2]
    finally:
        await close(agents)


async def test_numpy_arrays_when_installed(client: lockstep.Client) -> None:
    np = pytest.importorskip("numpy")
    agents = await members(client)
    try:
        data = [np.arange(300_000, dtype=np.float32) * (i + 1) for i in range(3)]
        got: List[Any] = await asyncio.gather(*(a.allreduce(d, op="mean", group=IDS) for a, d in zip(agents, data)))
        assert got[0].dtype == np.float32
        assert np.array_equal(got[0], got[1]) and np.array_equal(got[1], got[2])
        assert np.allclose(got[0], np.arange(300_000, dtype=np.float32) * 2)
    finally:
        await close(agents)


async def test_another_length_is_named_and_a_missing_member_is_named_at_the_deadline(client: lockstep.Client) -> None:
    agents = await members(client)
    try:
        first = asyncio.ensure_future(agents[0].allreduce([1.0, 2.0], group=IDS, collective_id="odd"))

        async def w0_joined() -> bool:
            # The first call defines the collective: w1's call, with another length, is the odd one.
            resp = await client._stub.ListCollectives(pb.ListCollectivesRequest(namespace=client.namespace))
            return any(c.collective_id == "odd" and "w0" not in c.missing for c in resp.collectives)

        await eventually(w0_joined, what="w0 joined collective 'odd'")
        with pytest.raises(lockstep.CollectiveMismatch) as second:
            await agents[1].allreduce([1.0, 2.0, 3.0], group=IDS, collective_id="odd")
        with pytest.raises(lockstep.CollectiveMismatch) as other:
            await first
        assert second.value.agent == other.value.agent == "w1"
        assert second.value.reason is lockstep.Reason.COLLECTIVE_MISMATCH
        with pytest.raises(lockstep.CollectiveTimeout) as late:
            await asyncio.gather(
                *(a.allreduce([1.0], group=IDS, collective_id="late", timeout=0.5) for a in agents[:2])
            )
        assert late.value.missing == ("w2",)
        with pytest.raises(lockstep.NotCollectiveMember):
            await agents[2].allreduce([1.0], group=["w0", "w1"], collective_id="outside")
    finally:
        await close(agents)


def _server_shm_files(pid: int) -> List[str]:
    import os

    prefix = f"lockstep-shm-{pid}-"
    try:
        return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except FileNotFoundError:
        return []


async def test_shared_memory_members_get_the_same_bytes_as_stream_members(
    client: lockstep.Client, server: Any
) -> None:
    """Members asking for shared memory (offered: they came over loopback) and members on the stream
    mix in one collective and get the same results, over several rounds (the regions kept from the
    last round are handed over again), for every kind; no file of the server is left in /dev/shm."""
    agents = await members(client)
    try:
        n = 3 * 65536 + 5  # several chunks and signals, the last partial
        data = [array.array("f", [float((k * 7 + i) % 23) - 11.0 for k in range(n)]) for i in range(3)]
        for shm in ([True, True, True], [True, False, True]):
            for round_ in range(3):
                got = await asyncio.gather(
                    *(a.allreduce(d, op="sum", group=IDS, shared_memory=s) for a, d, s in zip(agents, data, shm))
                )
                stream = await asyncio.gather(*(a.allreduce(d, op="sum", group=IDS) for a, d in zip(agents, data)))
                assert got[0] == got[1] == got[2] == stream[0], f"round {round_}, shared memory {shm}"
                assert isinstance(got[0], array.array) and len(got[0]) == n
                # The shared-memory path was taken: the agents keep its regions for the next round.
                assert all(a._shm_regions.own is not None for a, s in zip(agents, shm) if s)
                assert all(a._shm_regions.result is not None for a, s in zip(agents, shm) if s)
            bcast = await asyncio.gather(
                *(a.broadcast(d, root=1, group=IDS, shared_memory=s) for a, d, s in zip(agents, data, shm))
            )
            assert bcast == [data[1]] * 3
            gathered = await asyncio.gather(
                *(a.allgather([i, -i], group=IDS, shared_memory=s) for i, (a, s) in enumerate(zip(agents, shm)))
            )
            assert gathered == [[0, 0, 1, -1, 2, -2]] * 3
            scattered = await asyncio.gather(
                *(a.reduce_scatter(list(range(6)), group=IDS, dtype="i32", shared_memory=s) for a, s in zip(agents, shm))
            )
            assert scattered == [[0, 3], [6, 9], [12, 15]]
        await eventually(lambda: not _server_shm_files(server.proc.pid), what="the server's /dev/shm files removed")
    finally:
        await close(agents)
