"""Driving the group coordinator without sockets: a clock the test moves, a reply callback for each
parked request, and the requests members send. Used by test_coordinator.py,
test_leader_assigned.py and test_static_members.py; the `clock` and `coord` fixtures are in
conftest.py."""

from __future__ import annotations

from edgebus.protocol import groups as G
from edgebus.server.groups.coordinator import Coordinator, Offer

SESSION, REBALANCE = 1000, 3000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += ms / 1000


class Answer:
    """The reply callback of one parked JoinGroup."""

    def __init__(self) -> None:
        self.value = None

    def __call__(self, v) -> None:
        assert self.value is None, "answered twice"
        self.value = v

    @property
    def done(self) -> bool:
        return self.value is not None


def join(coord: Coordinator, conn: int, member_id: str = "", topics=("t",), assignors=("range",),
         group: str = "g", session: int = SESSION, offer: Offer | None = None) -> Answer:
    """A JoinGroup on connection `conn`; `offer`: a Kafka member's protocols."""
    a = Answer()
    coord.join(conn, 1000 + conn, G.JoinGroupRequest(group, member_id, f"c{conn}", session, REBALANCE,
                                                     list(topics), list(assignors)), a, offer)
    return a


def sync(coord: Coordinator, resp: G.JoinGroupResponse, group: str = "g") -> list[tuple[str, int]]:
    out = coord.sync(G.SyncGroupRequest(group, resp.generation, resp.member_id))
    return [(a.topic, p) for a in out.assignment for p in a.partitions]


def hb(coord: Coordinator, resp: G.JoinGroupResponse, group: str = "g") -> None:
    coord.heartbeat(G.HeartbeatRequest(group, resp.generation, resp.member_id))
