"""Replica groups against a real server: ranks in join order, events on the group's topic, a state
of several chunks (bytes, bytearray, memoryview) fetched whole by a late joiner with its checksum
verified, bad publishes and fetches refused by reason, and divergence named at an allreduce over
the group."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

import lockstep
from lockstep.group import GroupState, verify


def blob(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 256 for i in range(n))


async def agents(client: lockstep.Client, *ids: str) -> List[lockstep.Agent]:
    return [await client.register(i, role="worker") for i in ids]


async def test_a_late_joiner_fetches_the_current_version_with_its_checksum(client: lockstep.Client) -> None:
    observer = await client.register("observer", role="ops", interests=["lockstep.groups.>"])
    w1, w2, late = await agents(client, "w1", "w2", "late")
    try:
        m = await w1.join_group("model")
        assert (m.rank, m.members, m.state) == (0, ("w1",), None)
        m = await w2.join_group("model")
        assert (m.rank, m.members) == (1, ("w1", "w2"))
        params = blob(3 * 256 * 1024 + 5, 7)
        s = await w1.publish_group_state("model", bytearray(params))
        assert (s.version, s.size, s.checksum, s.published_by) == (1, len(params), lockstep.state_checksum(params), "w1")
        newer = blob(1000, 9)
        s2 = await w2.publish_group_state("model", memoryview(newer))
        assert s2.version == 2
        m = await late.join_group("model")
        assert m.rank == 2 and m.state is not None and m.state.version == 2
        got = await late.fetch_group_state("model")
        assert (got.state.version, got.state.checksum, got.data) == (2, s2.checksum, newer)
        [info] = await client.list_groups()
        assert (info.group_id, info.members, info.state, info.publishing) == ("model", ("w1", "w2", "late"), s2, "")
        events = []
        while len(events) < 5:
            d = await observer.next_delivery(timeout=10)
            e = lockstep.GroupEvent.from_delivery(d)
            if e is not None:
                events.append((e.event, e.agent, e.version))
        assert events == [("joined", "w1", 0), ("joined", "w2", 0), ("published", "w1", 1), ("published", "w2", 2), ("joined", "late", 2)]
        await w1.leave_group("model")
        assert (await late.join_group("model")).rank == 1
        with pytest.raises(lockstep.InvalidArgument):
            await late.leave_group("model", forget_state=True)  # w2 remains
        await w2.leave_group("model")
        await late.leave_group("model", forget_state=True)
        assert (await w1.join_group("model")).state is None, "forgotten with its state"
    finally:
        for a in (observer, w1, w2, late):
            await a.close()


async def test_bad_publishes_and_fetches_are_refused_by_reason(client: lockstep.Client) -> None:
    a, outsider = await agents(client, "a", "outsider")
    try:
        with pytest.raises(lockstep.NotFound) as e:
            await a.publish_group_state("g", b"x")
        assert e.value.reason == lockstep.Reason.UNKNOWN_GROUP
        await a.join_group("g")
        with pytest.raises(lockstep.NotFound) as e:
            await a.fetch_group_state("g")
        assert e.value.reason == lockstep.Reason.NO_GROUP_STATE
        await a.publish_group_state("g", b"v1")
        with pytest.raises(lockstep.FailedPrecondition) as e:
            await outsider.publish_group_state("g", b"x")
        assert e.value.reason == lockstep.Reason.NOT_GROUP_MEMBER
        with pytest.raises(lockstep.FailedPrecondition) as e:
            await outsider.fetch_group_state("g")
        assert e.value.reason == lockstep.Reason.NOT_GROUP_MEMBER
        with pytest.raises(lockstep.InvalidArgument):
            await a.publish_group_state("g", "text is not bytes")
        with pytest.raises(lockstep.InvalidArgument):
            await a.publish_group_state("g", [1, 2, 3])
        assert (await a.fetch_group_state("g")).data == b"v1"
    finally:
        await a.close()
        await outsider.close()


def test_fetched_bytes_that_do_not_match_their_checksum_are_refused() -> None:
    state = GroupState("g", 1, lockstep.state_checksum(b"abc"), 3)
    verify(state, b"abc")
    for damaged in (b"abd", b"abcd"):
        with pytest.raises(lockstep.GroupStateFailed) as e:
            verify(state, damaged)
        assert e.value.reason == lockstep.Reason.CHECKSUM_MISMATCH


async def test_an_allreduce_over_the_group_names_who_diverged(client: lockstep.Client) -> None:
    members = await agents(client, "r0", "r1", "r2")
    try:
        for m in members:
            await m.join_group("replicas")
        params = blob(64, 1)
        published = await members[0].publish_group_state("replicas", params)
        sums = [lockstep.state_checksum(params)] * 2 + [lockstep.state_checksum(b"drifted")]
        outcomes = await asyncio.gather(
            *(
                m.allreduce([float(i), 1.0], replica_group="replicas", checksum=s, with_outcome=True)
                for i, (m, s) in enumerate(zip(members, sums))
            )
        )
        for o in outcomes:
            assert o.result == [3.0, 3.0]
            assert o.diverged == ("r2",)
            assert o.reference_checksum == published.checksum
    finally:
        for m in members:
            await m.close()
