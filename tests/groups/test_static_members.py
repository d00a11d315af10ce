"""Static membership (edgebus/server/groups/static.py) in the coordinator, with a fake clock: a
member naming a `group.instance.id` keeps its place across its process's restart."""

from __future__ import annotations

import pytest

from edgebus.errors import FencedInstanceError
from edgebus.server.groups.coordinator import Coordinator, Offer, State
from tests.groups.coordinator_helpers import SESSION, Answer, Clock, hb, join, sync

pytestmark = pytest.mark.unit


def sjoin(coord: Coordinator, conn: int, instance: str | None, member_id: str = "",
          protocol: str = "range", assignors: tuple[str, ...] = ("range",)) -> Answer:
    return join(coord, conn, member_id, assignors=assignors,
                offer=Offer("consumer", ((protocol, b"md"),), instance))


def test_a_restart_within_the_session_takes_its_place_back_without_a_rebalance(
        coord: Coordinator, clock: Clock) -> None:
    a = sjoin(coord, 1, "kettle-a")
    b = sjoin(coord, 2, None)
    a = sjoin(coord, 1, "kettle-a", a.value.member_id)
    assert a.value.generation == b.value.generation == 2
    mine = sync(coord, a.value)
    theirs = sync(coord, b.value)
    assert len(mine) == len(theirs) == 2
    coord.connection_closed(1)  # SIGKILL: a static member outlives its connection
    g = coord.groups["g"]
    assert a.value.member_id in g.members and g.state is State.STABLE
    clock.advance(SESSION / 2)
    hb(coord, b.value)
    coord.tick()
    back = sjoin(coord, 3, "kettle-a")  # the new process: no member id, the same instance
    assert back.done and back.value.generation == 2 and back.value.member_id != a.value.member_id
    assert sync(coord, back.value) == mine  # its partitions, at once
    hb(coord, b.value)  # the other member noticed nothing: same generation, no rebalance
    assert coord.rebalances == 2
    with pytest.raises(FencedInstanceError, match="kettle-a"):  # the old process is fenced
        hb(coord, a.value)
    with pytest.raises(FencedInstanceError):
        sjoin(coord, 1, "kettle-a", a.value.member_id)
    # The new process's connection is the one that counts now.
    coord.connection_closed(1)
    assert back.value.member_id in g.members


def test_a_static_member_that_does_not_come_back_expires_with_its_session(
        coord: Coordinator, clock: Clock) -> None:
    a = sjoin(coord, 1, "kettle-a")
    b = join(coord, 2)
    sjoin(coord, 1, "kettle-a", a.value.member_id)
    coord.connection_closed(1)
    for _ in range(3):
        clock.advance(SESSION / 2)
        hb(coord, b.value) if coord.groups["g"].state is State.STABLE else None
        coord.tick()
    g = coord.groups["g"]
    assert a.value.member_id not in g.members and g.instances == {}
    b2 = join(coord, 2, b.value.member_id)
    assert b2.value.generation == 3 and sync(coord, b2.value) == [("t", p) for p in range(4)]


def test_a_leader_assigned_leader_comes_back_as_leader(coord: Coordinator) -> None:
    a = sjoin(coord, 1, "faust-1", protocol="faust", assignors=())
    got = Answer()
    coord.sync_classic("g", 1, a.value.member_id, {a.value.member_id: b"all"}, got)
    assert got.value == b"all"
    coord.connection_closed(1)
    back = sjoin(coord, 2, "faust-1", protocol="faust", assignors=())
    assert (back.value.generation, back.value.leader) == (1, back.value.member_id)
    again = Answer()
    coord.sync_classic("g", 1, back.value.member_id, {}, again)
    assert again.value == b"all"
    # Coming back with a protocol the group did not choose: a rebalance, not the old bytes.
    coord.connection_closed(2)
    other = sjoin(coord, 3, "faust-1", protocol="cooperative-sticky", assignors=())
    assert other.value.generation == 2 and other.value.protocol == "cooperative-sticky"
