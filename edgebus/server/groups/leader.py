"""Leader-assigned groups: Kafka's classic protocol, for members whose protocols edgebus's
assignors do not cover (faust's own assignor, "cooperative-sticky", any custom one).

The coordinator elects a real member as leader, hands it every member's protocol metadata in
its JoinGroup answer and waits (AWAITING_SYNC, Kafka's CompletingRebalance) for its SyncGroup
carrying every member's assignment; a follower's SyncGroup is parked until then. The bytes are
the clients' business: edgebus never decodes them (an incremental protocol such as
cooperative-sticky keeps its logic in the clients, as with Kafka's broker).

A mixin of Coordinator (coordinator.py), which runs the rest of the state machine.

Invariants:
- A group is leader-assigned or server-assigned from its first member until it is empty: a
  member that does not fit (a native member in a leader-assigned group, a Kafka member with no
  edgebus assignor in a server-assigned one, no protocol in common) is refused with
  InconsistentGroupProtocolError naming both sides; the group is untouched.
- The group is Stable only with the leader's assignments of the current generation; until then
  a follower's SyncGroup waits, commits are refused (RebalanceInProgressError) and, if the
  leader has not synced within the rebalance timeout, every member that has not sent its
  SyncGroup is removed and the group rebalances without it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from edgebus.errors import (
    InconsistentGroupProtocolError,
    InvalidRequestError,
    RebalanceInProgressError,
)
from edgebus.server.groups.assignors import ASSIGNORS, TP, choose
from edgebus.server.groups.model import ClassicJoinResponse, Group, Member, Offer, Reply, State

log = logging.getLogger("edgebus.groups")


def choose_protocol(offers: Sequence[Offer]) -> str | None:
    """Kafka's choice: among the protocols every member offers, the one most members prefer
    (each votes for its first candidate); ties go to the first member's order."""
    common = set(offers[0].names())
    for o in offers[1:]:
        common &= set(o.names())
    if not common:
        return None
    votes = Counter(next(n for n in o.names() if n in common) for o in offers)
    best = max(votes.values())
    return next(n for n in offers[0].names() if votes.get(n, 0) == best)


class LeaderAssigned:
    """The leader-assigned path of Coordinator (it supplies these attributes and methods)."""

    groups: dict[str, Group]
    clock: Callable[[], float]
    _next_valid: bool
    _member: Callable[..., tuple[Group, Member]]
    _check_generation: Callable[[Group, int], None]
    _alive: Callable[[Member], None]
    _remove: Callable[..., None]
    rebalances: int

    # --- join --------------------------------------------------------------------------------
    def _check_protocols(self, g: Group, member_id: str, assignors: tuple[str, ...],
                         requested: Sequence[str], offer: Offer | None) -> None:
        """Raise unless a member with these assignors / this offer may join g (and set the
        group's kind when it is the only member)."""
        others = [m for m in g.members.values() if m.member_id != member_id]
        if not others:
            if not assignors and offer is None:
                raise InvalidRequestError(
                    f"none of the assignors {list(requested)} is known; known: "
                    f"{sorted(ASSIGNORS)}")
            g.leader_assigned = not assignors
            return
        if g.leader_assigned:
            theirs = sorted({n for m in others if m.offer for n in m.offer.names()})
            if offer is None:
                raise InconsistentGroupProtocolError(
                    f"group {g.group_id} is assigned by its leader member (Kafka protocols "
                    f"{theirs}); a native member (assignors {list(requested)}) cannot join it")
            if offer.protocol_type != others[0].offer.protocol_type:  # type: ignore[union-attr]
                raise InconsistentGroupProtocolError(
                    f"protocol type {offer.protocol_type!r} differs from group {g.group_id}'s")
            if choose_protocol([*(m.offer for m in others if m.offer), offer]) is None:
                raise InconsistentGroupProtocolError(
                    f"protocols {list(offer.names())} have none in common with group "
                    f"{g.group_id}'s members ({theirs})")
            return
        mine = list(offer.names()) if offer is not None else list(requested)
        if not assignors:
            raise InconsistentGroupProtocolError(
                f"group {g.group_id} is assigned by edgebus (assignors "
                f"{sorted(set().union(*(m.assignors for m in others)))}); protocols {mine} are "
                "none of them, so this member cannot join it")
        if choose([*(m.assignors for m in others), assignors]) is None:
            raise InconsistentGroupProtocolError(
                f"assignors {list(assignors)} have none in common with group {g.group_id}'s "
                f"members ({sorted(set().union(*(m.assignors for m in others)))})")

    def _complete_leader(self, g: Group, now: float) -> None:
        members = list(g.members.values())  # join order: the first is leader if none is kept
        offers = [m.offer for m in members if m.offer is not None]
        protocol = choose_protocol(offers) if len(offers) == len(members) else None
        if protocol is None:  # _check_protocols keeps this from happening
            raise AssertionError(f"group {g.group_id}: members with no protocol in common")
        g.generation += 1
        g.assignor = protocol
        if g.leader not in g.members:
            g.leader = members[0].member_id
        g.state = State.AWAITING_SYNC
        g.blobs, g.assignment = {}, {}
        g.rebalance_deadline = g.initial_deadline = None
        g.sync_deadline = now + max(m.rebalance_timeout_ms for m in members) / 1000
        self._next_valid = False
        self.rebalances += 1
        log.info("group %s: generation %d with %d member(s), protocol %s, leader %s",
                 g.group_id, g.generation, len(members), protocol, g.leader)
        for m in members:
            m.deadline = now + m.session_timeout_ms / 1000
            reply, m.join_reply = m.join_reply, None
            if reply is not None:
                reply(self._classic_join_response(g, m))

    @staticmethod
    def _classic_join_response(g: Group, m: Member) -> ClassicJoinResponse:
        members = ([(o.member_id, o.offer.instance_id, o.offer.metadata(g.assignor))
                    for o in g.members.values() if o.offer is not None]
                   if m.member_id == g.leader else [])
        return ClassicJoinResponse(g.generation, m.member_id, g.assignor, g.leader, members)

    # --- sync --------------------------------------------------------------------------------
    def is_leader_assigned(self, group_id: str) -> bool:
        g = self.groups.get(group_id)
        return g is not None and g.leader_assigned

    def sync_classic(self, group_id: str, generation: int, member_id: str,
                     assignments: Mapping[str, bytes], reply: Reply,
                     decoded: Mapping[str, list[TP]] | None = None) -> None:
        """A SyncGroup in a leader-assigned group: answered with the member's bytes at once
        (Stable), when the leader's SyncGroup arrives (a follower's), or with an error.
        `decoded`: the assignments as partitions when the leader's bytes are Kafka's consumer
        protocol (for the operator views only)."""
        g, m = self._member(group_id, member_id)
        self._check_generation(g, generation)
        if g.state is State.PREPARING:
            raise RebalanceInProgressError(f"group {g.group_id} is rebalancing; join again")
        self._alive(m)
        if g.state is State.STABLE:
            reply(g.blobs.get(m.member_id, b""))
            return
        if m.sync_reply is not None:  # a retry: the newer request gets the answer
            m.sync_reply(RebalanceInProgressError("superseded by a newer SyncGroup"))
        m.sync_reply = reply
        self._next_valid = False
        if m.member_id != g.leader:
            return
        g.blobs = {mid: bytes(assignments.get(mid, b"")) for mid in g.members}
        g.assignment = {mid: list((decoded or {}).get(mid, [])) for mid in g.members}
        g.state = State.STABLE
        g.sync_deadline = None
        unknown = sorted(set(assignments) - set(g.members))
        log.info("group %s: generation %d assigned by leader %s%s", g.group_id, g.generation,
                 g.leader, f" (ignored assignments of non-members {unknown})" if unknown else "")
        now = self.clock()
        for o in g.members.values():
            o.deadline = now + o.session_timeout_ms / 1000
            r, o.sync_reply = o.sync_reply, None
            if r is not None:
                r(g.blobs[o.member_id])

    def _expire_sync(self, g: Group, now: float) -> None:
        """The leader did not sync in time: drop whoever has not synced, then rebalance."""
        if g.state is not State.AWAITING_SYNC or g.sync_deadline is None or now < g.sync_deadline:
            return
        g.sync_deadline = None
        late = [m for m in g.members.values() if m.sync_reply is None]
        for m in late:
            self._remove(g, m, "did not send SyncGroup within the rebalance timeout")

    def _cancel_syncs(self, g: Group, why: str) -> None:
        now = self.clock()
        for m in g.members.values():
            r, m.sync_reply = m.sync_reply, None
            if r is not None:  # it was waiting on us: its session runs from now
                m.deadline = now + m.session_timeout_ms / 1000
                r(RebalanceInProgressError(f"group {g.group_id} is rebalancing ({why}); join again"))

    def _classic_changed(self, g: Group, m: Member, offer: Offer | None) -> bool:
        """Kafka rebalances a Stable classic group when a member's protocols changed, and when
        the leader rejoins (it may have seen new topics or partitions)."""
        return m.offer != offer or m.member_id == g.leader

    def describe_blob(self, group_id: str, member_id: str) -> tuple[bytes, bytes] | None:
        """(metadata, assignment) of a leader-assigned group's member, as its client sent them."""
        g = self.groups.get(group_id)
        m = g.members.get(member_id) if g is not None else None
        if g is None or m is None or m.offer is None or not g.leader_assigned:
            return None
        meta = m.offer.metadata(g.assignor) if g.assignor in m.offer.names() else \
            m.offer.protocols[0][1]
        return meta, g.blobs.get(member_id, b"") if g.state is State.STABLE else b""
