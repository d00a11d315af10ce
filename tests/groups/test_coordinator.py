"""The coordinator's state machine, driven without sockets: a fake clock, fake connections."""

from __future__ import annotations

import pytest

from edgebus.errors import (
    IllegalGenerationError,
    InvalidRequestError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from edgebus.protocol import groups as G
from edgebus.server.groups.coordinator import Coordinator, State
from tests.groups.coordinator_helpers import REBALANCE, SESSION, Clock, hb, join, sync

pytestmark = pytest.mark.unit


@pytest.fixture
def partition_counts() -> dict[str, int]:
    return {"t": 6, "u": 2}


def test_single_member_gets_everything_at_once(coord: Coordinator) -> None:
    a = join(coord, 1)
    assert a.done and a.value.generation == 1
    assert sync(coord, a.value) == [("t", p) for p in range(6)]
    assert coord.groups["g"].state is State.STABLE
    hb(coord, a.value)


def two_members(coord: Coordinator) -> tuple[G.JoinGroupResponse, G.JoinGroupResponse]:
    a = join(coord, 1)
    b = join(coord, 2)
    assert not b.done and coord.groups["g"].state is State.PREPARING
    with pytest.raises(RebalanceInProgressError):
        hb(coord, a.value)
    a2 = join(coord, 1, a.value.member_id)
    assert a2.done and b.done
    assert a2.value.generation == b.value.generation == 2
    return a2.value, b.value


def test_second_member_triggers_a_rebalance_and_splits_the_partitions(coord: Coordinator) -> None:
    ra, rb = two_members(coord)
    pa, pb = sync(coord, ra), sync(coord, rb)
    assert len(pa) == len(pb) == 3 and not set(pa) & set(pb)
    assert sorted(pa + pb) == [("t", p) for p in range(6)]


def test_stale_generation_is_refused_everywhere(coord: Coordinator) -> None:
    first = join(coord, 1).value
    ra, _ = two_members_from(coord, first)
    with pytest.raises(IllegalGenerationError, match="generation 1 of group g is stale"):
        coord.check_commit("g", first.generation, first.member_id)
    with pytest.raises(IllegalGenerationError):
        hb(coord, first)
    with pytest.raises(IllegalGenerationError):
        sync(coord, first)
    coord.check_commit("g", ra.generation, ra.member_id)  # the current one is fine


def two_members_from(coord: Coordinator, first: G.JoinGroupResponse):
    b = join(coord, 2)
    a2 = join(coord, 1, first.member_id)
    return a2.value, b.value


def test_connection_close_removes_the_member_at_once(coord: Coordinator) -> None:
    ra, rb = two_members(coord)
    coord.connection_closed(2)
    assert rb.member_id not in coord.groups["g"].members
    with pytest.raises(RebalanceInProgressError):
        hb(coord, ra)
    again = join(coord, 1, ra.member_id)
    assert again.value.generation == 3
    assert sync(coord, again.value) == [("t", p) for p in range(6)]
    with pytest.raises(UnknownMemberError):
        hb(coord, rb)


def test_session_timeout_removes_a_silent_member(coord: Coordinator, clock: Clock) -> None:
    ra, rb = two_members(coord)
    assert coord.next_deadline() == pytest.approx(clock.t + SESSION / 1000)
    clock.advance(SESSION * 0.6)
    hb(coord, ra)  # only a heartbeats
    coord.tick()
    assert rb.member_id in coord.groups["g"].members
    clock.advance(SESSION * 0.6)
    hb(coord, ra)
    coord.tick()  # b has been silent for 1.2 sessions
    assert ra.member_id in coord.groups["g"].members
    assert rb.member_id not in coord.groups["g"].members
    assert coord.groups["g"].state is State.PREPARING
    for _ in range(4):  # a stays alive past its session by heartbeating (until the rebalance
        # deadline, 3 s after it began, which test_member_that_does_not_rejoin_... covers)
        clock.advance(SESSION * 0.6)
        with pytest.raises(RebalanceInProgressError):
            hb(coord, ra)
        coord.tick()
    assert ra.member_id in coord.groups["g"].members


def test_member_that_does_not_rejoin_is_dropped_at_the_rebalance_deadline(
        coord: Coordinator, clock: Clock) -> None:
    ra, rb = two_members(coord)
    c = join(coord, 3)  # rebalance: a and b must rejoin
    a = join(coord, 1, ra.member_id)
    # b keeps heartbeating (alive, but stuck in its loop) and never rejoins.
    while clock.t < 100 + REBALANCE / 1000 + 1 and not c.done:
        clock.advance(200)
        with pytest.raises(RebalanceInProgressError):
            hb(coord, rb)
        coord.tick()
    assert c.done and a.done and c.value.generation == 3
    assert sorted(coord.groups["g"].members) == sorted([ra.member_id, c.value.member_id])
    with pytest.raises(UnknownMemberError):
        hb(coord, rb)


def test_a_parked_join_outlives_its_session(coord: Coordinator, clock: Clock) -> None:
    ra = join(coord, 1).value
    b = join(coord, 2)
    # a never answers; b waits far longer than its own session without being expired.
    clock.advance(SESSION * 0.9)
    coord.tick()
    assert not b.done
    clock.advance(SESSION * 0.2)
    coord.tick()  # a's session is over: a is removed, and b's join completes alone
    assert b.done and b.value.generation == 2 and ra.member_id not in coord.groups["g"].members
    assert sync(coord, b.value) == [("t", p) for p in range(6)]


def test_leave_and_the_last_leave_empties_the_group(coord: Coordinator) -> None:
    ra, rb = two_members(coord)
    coord.leave(G.LeaveGroupRequest("g", rb.member_id))
    a = join(coord, 1, ra.member_id)
    assert a.value.generation == 3
    coord.leave(G.LeaveGroupRequest("g", ra.member_id))
    assert "g" not in coord.groups and coord.is_empty("g")
    assert coord.next_deadline() is None  # idle: no timer at all


def test_unknown_members(coord: Coordinator) -> None:
    with pytest.raises(UnknownMemberError):
        join(coord, 1, "ghost")
    with pytest.raises(UnknownMemberError):
        coord.heartbeat(G.HeartbeatRequest("g", 1, "ghost"))
    with pytest.raises(UnknownMemberError):
        coord.leave(G.LeaveGroupRequest("nope", "ghost"))


def test_commit_without_membership_only_while_empty(coord: Coordinator) -> None:
    coord.check_commit("g", G.NO_GENERATION, "")
    r = join(coord, 1).value
    with pytest.raises(UnknownMemberError, match="active members"):
        coord.check_commit("g", G.NO_GENERATION, "")
    coord.check_commit("g", r.generation, r.member_id)


def test_rejoin_without_changes_keeps_the_generation(coord: Coordinator) -> None:
    r = join(coord, 1).value
    again = join(coord, 1, r.member_id)
    assert again.done and again.value.generation == r.generation
    changed = join(coord, 1, r.member_id, topics=("t", "u"))
    assert changed.done and changed.value.generation == r.generation + 1
    assert sync(coord, changed.value) == [("t", p) for p in range(6)] + [("u", 0), ("u", 1)]


def test_a_member_may_move_to_a_new_connection(coord: Coordinator) -> None:
    r = join(coord, 1).value
    join(coord, 7, r.member_id)  # rejoined over another connection
    coord.connection_closed(1)
    assert r.member_id in coord.groups["g"].members
    coord.connection_closed(7)
    assert "g" not in coord.groups


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"group": ""}, "group id is empty"),
    ({"group": "x" * 256}, "at most 255"),
    ({"session": 10}, "session_timeout_ms 10 is outside"),
    ({"assignors": ("fancy",)}, "none of the assignors"),
])
def test_invalid_joins(coord: Coordinator, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        join(coord, 1, **kwargs)


def test_members_must_share_an_assignor(coord: Coordinator) -> None:
    join(coord, 1, assignors=("range",))
    with pytest.raises(InvalidRequestError, match="none in common"):
        join(coord, 2, assignors=("roundrobin",))
    b = join(coord, 3, assignors=("roundrobin", "range"))
    assert not b.done


def test_initial_delay_gathers_members_into_one_generation(clock: Clock) -> None:
    coord = Coordinator(lambda t: 6, clock=clock, initial_rebalance_delay_ms=500)
    a, b = join(coord, 1), join(coord, 2)
    assert not a.done and coord.next_deadline() == pytest.approx(clock.t + 0.5)
    clock.advance(499)
    coord.tick()
    assert not a.done
    clock.advance(2)
    coord.tick()
    assert a.value.generation == b.value.generation == 1
    assert len(sync(coord, a.value)) == len(sync(coord, b.value)) == 3


def test_groups_are_independent(coord: Coordinator) -> None:
    a = join(coord, 1, group="one")
    b = join(coord, 1, group="two")
    assert a.value.generation == b.value.generation == 1
    coord.connection_closed(1)
    assert not coord.groups


def test_group_limit(clock: Clock) -> None:
    coord = Coordinator(lambda t: 1, clock=clock, max_groups=2)
    join(coord, 1, group="a")
    join(coord, 1, group="b")
    with pytest.raises(InvalidRequestError, match="2 groups"):
        join(coord, 1, group="c")


def test_topic_change_rebalances_its_subscribers_only(coord: Coordinator) -> None:
    a = join(coord, 1, topics=("t",)).value
    b = join(coord, 2, group="other", topics=("u",)).value
    coord.topic_changed("u")
    hb(coord, a)  # group g does not subscribe to u
    with pytest.raises(RebalanceInProgressError):
        hb(coord, b, group="other")


def test_a_retried_join_supersedes_the_parked_one(coord: Coordinator) -> None:
    a, _b = two_members(coord)
    join(coord, 3)  # rebalance: a and b must rejoin
    parked = join(coord, 1, a.member_id)
    assert not parked.done  # b has not rejoined yet
    retry = join(coord, 9, a.member_id)  # the client gave up and retried on a new connection
    assert isinstance(parked.value, RebalanceInProgressError) and not retry.done
    coord.connection_closed(1)  # the old connection no longer owns the member
    assert a.member_id in coord.groups["g"].members
