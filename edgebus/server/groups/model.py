"""The coordinator's data: a group, its members and its states (no logic beyond checks of a
request's own fields). coordinator.py runs the state machine; leader.py the leader-assigned path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgebus.errors import InvalidRequestError
from edgebus.protocol import groups as G
from edgebus.server.groups.assignors import TP

Reply = Callable[[Any], None]  # called with a response or an EdgebusError


class State(StrEnum):
    EMPTY = "Empty"
    PREPARING = "PreparingRebalance"
    AWAITING_SYNC = "CompletingRebalance"  # leader-assigned groups only: waiting for the leader
    STABLE = "Stable"


@dataclass(frozen=True)
class Offer:
    """A Kafka member's classic protocols, passed through opaquely: (name, metadata) in its order
    of preference. Only leader-assigned groups use the bytes; edgebus never decodes them."""

    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    instance_id: str | None = None  # group.instance.id (static membership)
    # The member's address as Kafka's DescribeGroups shows it ("/127.0.0.1"): its connection's
    # peer at its last JoinGroup. Not compared: a member rejoining from another port is unchanged.
    client_host: str = field(default="", compare=False)

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.protocols)

    def metadata(self, name: str) -> bytes:
        return next(md for n, md in self.protocols if n == name)


@dataclass(eq=False)
class Member:
    member_id: str
    client_id: str
    conn_id: int
    pid: int
    session_timeout_ms: int
    rebalance_timeout_ms: int
    topics: frozenset[str]
    assignors: tuple[str, ...]
    owned: tuple[TP, ...]
    deadline: float  # monotonic seconds: removed after this without a sign of life
    join_reply: Reply | None = None  # set while its JoinGroup is parked
    offer: Offer | None = None  # a Kafka member's protocols (leader-assigned groups need them)
    sync_reply: Reply | None = None  # AWAITING_SYNC: a follower's SyncGroup parked for the leader


@dataclass(eq=False)
class Group:
    group_id: str
    state: State = State.EMPTY
    generation: int = 0
    assignor: str = ""  # server-assigned: edgebus's assignor; leader-assigned: the protocol name
    members: dict[str, Member] = field(default_factory=dict)
    assignment: dict[str, list[TP]] = field(default_factory=dict)  # of the current generation
    rebalance_deadline: float | None = None  # PreparingRebalance: give up waiting at this time
    initial_deadline: float | None = None  # new group: wait this long for more members
    # Leader-assigned (classic Kafka) groups: fixed by the first member of an empty group.
    leader_assigned: bool = False
    leader: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict)  # the leader's opaque assignments
    sync_deadline: float | None = None  # AWAITING_SYNC: the leader must sync by then
    instances: dict[str, str] = field(default_factory=dict)  # group.instance.id -> member id
    fenced: dict[str, str] = field(default_factory=dict)  # replaced member id -> instance id


@dataclass(frozen=True)
class ClassicJoinResponse:
    """JoinGroup's answer in a leader-assigned group: the leader gets every member's metadata
    for the chosen protocol, a follower an empty list."""

    generation: int
    member_id: str
    protocol: str
    leader: str
    members: list[tuple[str, str | None, bytes]]  # (member id, instance id, metadata)


def check_group_id(group_id: str) -> None:
    if not group_id:
        raise InvalidRequestError("group id is empty")
    if len(group_id) > G.MAX_GROUP_ID:
        raise InvalidRequestError(
            f"group id is {len(group_id)} characters, at most {G.MAX_GROUP_ID}")


def check_timeouts(req: G.JoinGroupRequest) -> None:
    if not G.MIN_SESSION_TIMEOUT_MS <= req.session_timeout_ms <= G.MAX_SESSION_TIMEOUT_MS:
        raise InvalidRequestError(
            f"session_timeout_ms {req.session_timeout_ms} is outside "
            f"[{G.MIN_SESSION_TIMEOUT_MS}, {G.MAX_SESSION_TIMEOUT_MS}]")
    if not G.MIN_SESSION_TIMEOUT_MS <= req.rebalance_timeout_ms <= G.MAX_REBALANCE_TIMEOUT_MS:
        raise InvalidRequestError(
            f"rebalance_timeout_ms {req.rebalance_timeout_ms} is outside "
            f"[{G.MIN_SESSION_TIMEOUT_MS}, {G.MAX_REBALANCE_TIMEOUT_MS}]")


def by_topic(tps: Iterable[TP]) -> list[G.TopicPartitions]:
    out: dict[str, list[int]] = {}
    for t, p in sorted(tps):
        out.setdefault(t, []).append(p)
    return [G.TopicPartitions(t, ps) for t, ps in out.items()]
