"""Leader-assigned groups (edgebus/server/groups/leader.py) in the coordinator, driven without
sockets: a fake clock, fake connections, opaque protocol bytes as faust or a cooperative client
would send them."""

from __future__ import annotations

import pytest

from edgebus.errors import (
    GroupFullError,
    IllegalGenerationError,
    InconsistentGroupProtocolError,
    InvalidRequestError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from edgebus.protocol import groups as G
from edgebus.server.groups.coordinator import Coordinator, Offer, State
from edgebus.server.groups.leader import choose_protocol
from edgebus.server.groups.model import ClassicJoinResponse
from tests.groups.coordinator_helpers import REBALANCE, SESSION, Answer, Clock, join

pytestmark = pytest.mark.unit


def kjoin(coord: Coordinator, conn: int, member_id: str = "",
          protocols: tuple[tuple[str, bytes], ...] = (("faust", b"meta"),),
          assignors: tuple[str, ...] = ()) -> Answer:
    """A Kafka member's JoinGroup: its protocols as an Offer; `assignors` the edgebus ones its
    protocol names map onto (none for faust's)."""
    return join(coord, conn, member_id, assignors=assignors,
                offer=Offer("consumer", tuple((n, m + b"-%d" % conn) for n, m in protocols)))


def ksync(coord: Coordinator, r: ClassicJoinResponse, blobs: dict[str, bytes] | None = None
          ) -> Answer:
    a = Answer()
    coord.sync_classic("g", r.generation, r.member_id, blobs or {}, a)
    return a


def test_protocol_choice_follows_kafkas_vote() -> None:
    o = [Offer("consumer", (("a", b""), ("b", b""))), Offer("consumer", (("b", b""), ("a", b""))),
         Offer("consumer", (("b", b""), ("c", b"")))]
    assert choose_protocol(o) == "b"  # the only common one
    assert choose_protocol(o[:2]) == "a"  # a tie: the first member's order
    assert choose_protocol([o[0], Offer("consumer", (("c", b""),))]) is None


def test_the_leader_assigns_and_followers_wait_for_it(coord: Coordinator, clock: Clock) -> None:
    a = kjoin(coord, 1)
    assert isinstance(a.value, ClassicJoinResponse)
    assert (a.value.generation, a.value.protocol, a.value.leader) == (1, "faust", a.value.member_id)
    assert a.value.members == [(a.value.member_id, None, b"meta-1")]
    g = coord.groups["g"]
    assert g.state is State.AWAITING_SYNC and g.leader_assigned
    # No commit until the leader has assigned.
    with pytest.raises(RebalanceInProgressError):
        coord.check_commit("g", 1, a.value.member_id)
    assert ksync(coord, a.value, {a.value.member_id: b"all"}).value == b"all"
    assert g.state is State.STABLE
    coord.check_commit("g", 1, a.value.member_id)

    # A second member: the leader rejoins, stays leader, and alone sees both metadata.
    b = kjoin(coord, 2)
    assert not b.done and g.state is State.PREPARING
    with pytest.raises(RebalanceInProgressError):
        coord.heartbeat(G.HeartbeatRequest("g", 1, a.value.member_id))
    a2 = kjoin(coord, 1, a.value.member_id)
    assert a2.value.leader == a.value.member_id == a2.value.member_id
    assert {m for m, _, _ in a2.value.members} == {a.value.member_id, b.value.member_id}
    assert dict((m, md) for m, _, md in a2.value.members)[b.value.member_id] == b"meta-2"
    assert b.value.members == [] and b.value.generation == 2
    # The follower's SyncGroup waits for the leader's; then each gets its own bytes, opaque.
    fb = ksync(coord, b.value)
    assert not fb.done
    coord.heartbeat(G.HeartbeatRequest("g", 2, b.value.member_id))  # fine while it waits
    fa = ksync(coord, a2.value, {a.value.member_id: b"\x00first", b.value.member_id: b"\x01second",
                                 "nobody": b"ignored"})
    assert (fa.value, fb.value) == (b"\x00first", b"\x01second")
    # A late SyncGroup of a Stable group gets the same bytes at once.
    assert ksync(coord, b.value).value == b"\x01second"
    with pytest.raises(IllegalGenerationError):
        ksync(coord, ClassicJoinResponse(
            1, b.value.member_id, "faust", a.value.member_id, []))


def test_a_leader_that_never_syncs_is_dropped_and_the_group_rebalances(
        coord: Coordinator, clock: Clock) -> None:
    a = kjoin(coord, 1)
    ksync(coord, a.value, {a.value.member_id: b"x"})
    b = kjoin(coord, 2)
    a2 = kjoin(coord, 1, a.value.member_id)
    fb = ksync(coord, b.value)
    assert a2.value.leader == a.value.member_id
    # The leader hangs: heartbeats from it keep its session, but not past the rebalance timeout.
    for _ in range(REBALANCE // 500):
        clock.advance(500)
        coord.heartbeat(G.HeartbeatRequest("g", 2, a.value.member_id))
        coord.tick()
    clock.advance(1)
    coord.tick()
    g = coord.groups["g"]
    assert a.value.member_id not in g.members
    # The waiting follower is told to rejoin; it rejoins alone and leads generation 3.
    assert isinstance(fb.value, RebalanceInProgressError)
    assert g.state is State.PREPARING
    b2 = kjoin(coord, 2, b.value.member_id)
    assert (b2.value.generation, b2.value.leader) == (3, b.value.member_id)


def test_a_leader_whose_process_dies_mid_sync_hands_over(coord: Coordinator) -> None:
    a = kjoin(coord, 1)
    ksync(coord, a.value, {a.value.member_id: b"x"})
    b = kjoin(coord, 2)
    kjoin(coord, 1, a.value.member_id)
    fb = ksync(coord, b.value)
    coord.connection_closed(1)  # the leader's process was killed before its SyncGroup
    assert isinstance(fb.value, RebalanceInProgressError)
    b2 = kjoin(coord, 2, b.value.member_id)
    assert b2.value.leader == b.value.member_id and b2.value.members[0][2] == b"meta-2"
    assert ksync(coord, b2.value, {b.value.member_id: b"mine"}).value == b"mine"


def test_members_that_do_not_fit_are_refused_with_both_sides_named(coord: Coordinator) -> None:
    kjoin(coord, 1)
    with pytest.raises(InconsistentGroupProtocolError, match=r"leader member.*\['faust'\].*native"):
        join(coord, 2)  # a native member (edgebus's assignors only)
    with pytest.raises(InconsistentGroupProtocolError, match=r"\['cooperative-sticky'\].*none in common"):
        kjoin(coord, 3, protocols=(("cooperative-sticky", b""),))
    # The other way round: a server-assigned group refuses a faust member.
    join(coord, 4, group="native")
    a = Answer()
    with pytest.raises(InconsistentGroupProtocolError, match=r"assigned by edgebus.*\['faust'\]"):
        coord.join(5, 1005, G.JoinGroupRequest("native", "", "c5", SESSION, REBALANCE, ["t"], []),
                   a, Offer("consumer", (("faust", b""),)))
    assert len(coord.groups["g"].members) == 1 and len(coord.groups["native"].members) == 1
    # A native member with no assignor edgebus knows, in a new group: as before.
    with pytest.raises(InvalidRequestError, match="none of the assignors"):
        join(coord, 6, group="new", assignors=("fancy",))


def test_a_kafka_member_with_a_known_protocol_keeps_server_assignment(coord: Coordinator) -> None:
    """A member offering "range" and "cooperative-sticky" makes a server-assigned group, which a
    native member may join (test_groups_confluent.py does this with real clients)."""
    a = kjoin(coord, 1, protocols=(("range", b"m"), ("cooperative-sticky", b"m")),
              assignors=("range",))
    assert not isinstance(a.value, ClassicJoinResponse) and a.value.assignor == "range"
    assert not coord.groups["g"].leader_assigned
    n = join(coord, 2)
    assert not n.done  # a rebalance with both


def test_a_full_group_is_refused_with_its_own_error(coord: Coordinator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(G, "MAX_GROUP_MEMBERS", 8)  # the bound is read at each join
    for i in range(8):
        kjoin(coord, i)
    with pytest.raises(GroupFullError, match="already has 8 members"):
        kjoin(coord, 99)
    a = kjoin(coord, 0, coord.groups["g"].leader)  # a member already in may rejoin
    assert a.done


def test_a_removed_member_cannot_sync(coord: Coordinator) -> None:
    a = kjoin(coord, 1)
    coord.leave(G.LeaveGroupRequest("g", a.value.member_id))
    with pytest.raises(UnknownMemberError):
        ksync(coord, a.value)


def test_the_kafka_listener_answers_the_new_errors_with_kafkas_codes() -> None:
    from edgebus.server.kafka import errcodes as E

    assert E.code_of(GroupFullError("full")) == 81  # GROUP_MAX_SIZE_REACHED
    assert E.code_of(InconsistentGroupProtocolError("no")) == E.INCONSISTENT_GROUP_PROTOCOL


def test_a_follower_rejoining_while_the_leader_assigns_gets_the_same_generation(
        coord: Coordinator) -> None:
    a = kjoin(coord, 1)
    ksync(coord, a.value, {a.value.member_id: b"x"})
    b = kjoin(coord, 2)
    a2 = kjoin(coord, 1, a.value.member_id)
    assert coord.groups["g"].state is State.AWAITING_SYNC
    b2 = kjoin(coord, 2, b.value.member_id)  # its answer was lost: asked again, unchanged
    assert (b2.value.generation, b2.value.leader) == (2, a.value.member_id)
    assert coord.groups["g"].state is State.AWAITING_SYNC and coord.rebalances == 2
    fb = ksync(coord, b2.value)
    ksync(coord, a2.value, {b.value.member_id: b"y"})
    assert fb.value == b"y"


def test_topic_changes_are_the_leaders_business(coord: Coordinator) -> None:
    """faust creates topics it subscribes to; Kafka's coordinator does not rebalance for that
    (the leader watches the metadata and rejoins), and neither does edgebus's."""
    a = kjoin(coord, 1)
    ksync(coord, a.value, {a.value.member_id: b"x"})
    coord.topic_changed("t")
    assert coord.groups["g"].state is State.STABLE and coord.rebalances == 1
