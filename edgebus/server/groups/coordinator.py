"""The group coordinator: membership, generations and rebalances. No sockets and no disk here.

The supervisor's loop feeds it requests, connection closes and the clock; it answers through
`reply` callbacks (a JoinGroup is parked until its rebalance completes; in a leader-assigned
group a follower's SyncGroup until the leader's) or by raising an EdgebusError. Tests drive it
with a fake clock. The requests are here; the clock's part, removals and rebalances are
rebalance.py's, leader-assigned groups leader.py's, static members static.py's (mixins).

Two kinds of group, fixed by the first member of an empty group:
- server-assigned (native members, and Kafka members offering range/roundrobin/sticky): the
  coordinator computes the assignment, so a completed join is at once Stable;
- leader-assigned (Kafka members whose protocols edgebus does not know: faust,
  cooperative-sticky): Kafka's classic protocol, leader.py; a completed join waits in
  CompletingRebalance for the leader's SyncGroup.

States (Kafka's names):

    state                event                                       next
    Empty                JoinGroup                                   PreparingRebalance
    PreparingRebalance   every member has a parked JoinGroup         Stable (generation + 1),
                                                                     leader-assigned:
                                                                     CompletingRebalance (gen + 1)
    PreparingRebalance   rebalance deadline: drop members not joined as above, or Empty if none
    CompletingRebalance  the leader's SyncGroup (assignments)        Stable
    CompletingRebalance  rebalance deadline: drop members not synced PreparingRebalance
    Stable, Completing.  new member, changed subscription/protocols,
                         leader rejoined (leader-assigned), member
                         left / died / session expired               PreparingRebalance
    any                  last member gone                            Empty (generation + 1)

Invariants:
- `generation` only grows, also across an emptied group and a restart (`last_generation`);
  SyncGroup, Heartbeat and OffsetCommit are accepted only with the group's current generation
  (IllegalGenerationError otherwise), so a member that missed a rebalance cannot commit for
  partitions that may have moved.
- A member is removed at once when the connection that sent its JoinGroup closes (the process
  died; a static member, static.py, stays until its session expires), and after
  `session_timeout_ms` without a heartbeat, sync or commit (a frozen process), except while its
  JoinGroup or SyncGroup is parked (it is waiting on us, not dead).
- Every member of a server-assigned Stable group has exactly the partitions `assignment` gives
  it, and each subscribed partition belongs to at most one member. A leader-assigned group's
  members get exactly the bytes its leader sent for the current generation (leader.py).
- A member never joins a group of the other kind (InconsistentGroupProtocolError), and a group
  never holds more than MAX_GROUP_MEMBERS (GroupFullError).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from edgebus.errors import (
    GroupFullError,
    IllegalGenerationError,
    InvalidRequestError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from edgebus.protocol import groups as G
from edgebus.server.groups.assignors import ASSIGNORS, TP
from edgebus.server.groups.leader import LeaderAssigned
from edgebus.server.groups.model import (
    ClassicJoinResponse,
    Group,
    Member,
    Offer,
    Reply,
    State,
    by_topic,
    check_group_id,
    check_timeouts,
)
from edgebus.server.groups.rebalance import Rebalances
from edgebus.server.groups.static import StaticMembers

log = logging.getLogger("edgebus.groups")

__all__ = ["Coordinator", "Group", "Member", "Offer", "State", "by_topic", "check_group_id"]


class Coordinator(Rebalances, LeaderAssigned, StaticMembers):
    def __init__(
        self,
        partitions_of: Callable[[str], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_rebalance_delay_ms: int = 0,
        max_groups: int = G.MAX_GROUPS,
        last_generation: Callable[[str], int] = lambda _group_id: 0,
    ) -> None:
        self.partitions_of = partitions_of  # topic -> partition count, 0 if it does not exist
        # group -> the highest generation its durable commits carry (the offset store), so that
        # generations keep counting across supervisor restarts as well as emptied groups.
        self.last_generation = last_generation
        # Emptied (forgotten) groups' generations, at most max_groups of them, oldest dropped
        # first: a group created again goes on counting from there, as Kafka's does.
        self._ended: dict[str, int] = {}
        self.clock = clock
        self.initial_delay = initial_rebalance_delay_ms / 1000
        self.max_groups = max_groups
        self.groups: dict[str, Group] = {}
        self._by_conn: dict[int, set[tuple[str, str]]] = {}
        self._next: float | None = None
        # Called when the next deadline may have moved (GroupHandlers: LoopApi.deadline_changed).
        self.on_timer: Callable[[], None] | None = None
        self._next_valid = False
        self.rebalances = 0

    @property
    def _next_valid(self) -> bool:
        return self._valid

    @_next_valid.setter
    def _next_valid(self, valid: bool) -> None:
        # Everything that may move a timer clears it (here and in the mixins): the loop is told,
        # so that it asks next_deadline() then only, not on every turn (issue 16).
        self._valid = valid
        if not valid and self.on_timer is not None:
            self.on_timer()

    # --- requests --------------------------------------------------------------------------------
    def join(self, conn_id: int, pid: int, req: G.JoinGroupRequest, reply: Reply,
             offer: Offer | None = None) -> None:
        """Park the join until the rebalance completes (reply may run before this returns).
        `offer`: a Kafka member's protocols; with no edgebus assignor among them the group is
        leader-assigned (leader.py)."""
        check_group_id(req.group_id)
        check_timeouts(req)
        assignors = tuple(a for a in req.assignors if a in ASSIGNORS)
        if not assignors and offer is None:
            raise InvalidRequestError(
                f"none of the assignors {req.assignors} is known; known: {sorted(ASSIGNORS)}")
        now = self.clock()
        g = self.groups.get(req.group_id)
        if g is None:
            if len(self.groups) >= self.max_groups:
                raise InvalidRequestError(f"the coordinator already holds {self.max_groups} groups")
            g = Group(req.group_id, generation=max(self._ended.get(req.group_id, 0),
                                                   self.last_generation(req.group_id)))
        back = offer is not None and offer.instance_id in g.instances  # static: a place kept
        if not req.member_id and not back and len(g.members) >= G.MAX_GROUP_MEMBERS:
            raise GroupFullError(f"group {g.group_id} already has {G.MAX_GROUP_MEMBERS} members")
        kept = g.instances.get(offer.instance_id, "") if back and offer and offer.instance_id else ""
        self._check_protocols(g, req.member_id or kept, assignors, req.assignors, offer)
        self.groups.setdefault(g.group_id, g)
        topics = frozenset(req.topics)
        owned = tuple(sorted((tp.topic, p) for tp in req.owned for p in tp.partitions))
        self._next_valid = False
        if req.member_id:
            m = g.members.get(req.member_id)
            if m is None:
                self._check_fenced(g, req.member_id)
                raise UnknownMemberError(
                    f"member {req.member_id} is not in group {g.group_id} (it was removed after "
                    "its session expired or its connection closed); join again as a new member")
            changed = (self._classic_changed(g, m, offer) if g.leader_assigned
                       else m.topics != topics or m.assignors != assignors)
            self._move_conn(g, m, conn_id)
            m.pid, m.client_id = pid, req.client_id
            m.session_timeout_ms = req.session_timeout_ms
            m.rebalance_timeout_ms = req.rebalance_timeout_ms
            m.topics, m.assignors, m.owned, m.offer = topics, assignors, owned, offer
            m.deadline = now + m.session_timeout_ms / 1000
            if m.join_reply is not None:  # a retry (the client gave up waiting): answer the old one
                m.join_reply(RebalanceInProgressError("superseded by a newer JoinGroup"))
            m.join_reply = None
            # Unchanged: the current generation again (a follower that lost its answer while
            # the leader assigns gets it again too; a leader rejoining always counts as changed).
            if g.state in (State.STABLE, State.AWAITING_SYNC) and not changed:
                reply(self._join_response(g, m))
                return
            m.join_reply = reply
            if g.state is State.PREPARING:
                self._maybe_complete(g, now)
            else:
                self._prepare(g, now, f"member {m.member_id} rejoined")
            return
        if self._take_over(g, conn_id, pid, req, offer, topics, assignors, owned, reply, now):
            return
        member_id = f"{req.client_id or 'member'}-{os.urandom(6).hex()}"
        m = Member(member_id, req.client_id, conn_id, pid, req.session_timeout_ms,
                   req.rebalance_timeout_ms, topics, assignors, owned,
                   now + req.session_timeout_ms / 1000, reply, offer)
        g.members[member_id] = m
        self._note_instance(g, m)
        self._by_conn.setdefault(conn_id, set()).add((g.group_id, member_id))
        log.info("group %s: member %s joined (pid %d)", g.group_id, member_id, pid)
        if g.state is State.PREPARING:
            self._maybe_complete(g, now)
        else:
            self._prepare(g, now, f"member {member_id} joined")

    def sync(self, req: G.SyncGroupRequest) -> G.SyncGroupResponse:
        g, m = self._member(req.group_id, req.member_id)
        self._check_generation(g, req.generation)
        if g.state is State.PREPARING:
            raise RebalanceInProgressError(f"group {g.group_id} is rebalancing; join again")
        self._alive(m)
        return G.SyncGroupResponse(by_topic(g.assignment.get(m.member_id, [])))

    def heartbeat(self, req: G.HeartbeatRequest) -> None:
        g, m = self._member(req.group_id, req.member_id)
        self._check_generation(g, req.generation)
        self._alive(m)
        if g.state is State.PREPARING:
            raise RebalanceInProgressError(f"group {g.group_id} is rebalancing; join again")

    def leave(self, req: G.LeaveGroupRequest) -> None:
        g, m = self._member(req.group_id, req.member_id)
        self._remove(g, m, "left the group")

    def check_commit(self, group_id: str, generation: int, member_id: str) -> None:
        """Raise unless this client may commit offsets for the group now."""
        check_group_id(group_id)
        g = self.groups.get(group_id)
        if generation == G.NO_GENERATION and not member_id:
            if g is not None and g.members:
                raise UnknownMemberError(
                    f"group {group_id} has active members; only they may commit its offsets")
            return
        g, m = self._member(group_id, member_id)
        self._check_generation(g, generation)
        if g.state is State.AWAITING_SYNC:  # as Kafka: no commits until the leader assigned
            raise RebalanceInProgressError(f"group {g.group_id} awaits its leader's assignment")
        self._alive(m)

    def check_txn_commit(self, group_id: str, generation: int, member_id: str) -> None:
        """TxnOffsetCommit v3+ (KIP-447), as Kafka: a member id given must be a member's, a
        generation given (>= 0) the group's current one, so that a zombie's transaction cannot
        commit offsets of partitions that moved; a producer that gives neither is not checked."""
        g = self.groups.get(group_id)
        if member_id:
            g, _m = self._member(group_id, member_id)
        if generation >= 0:
            current = g.generation if g is not None else max(
                self._ended.get(group_id, 0), self.last_generation(group_id))
            if generation != current:
                raise IllegalGenerationError(
                    f"generation {generation} of group {group_id} is stale (the group is at "
                    f"generation {current}): the transaction's consumer missed a rebalance")

    def is_empty(self, group_id: str) -> bool:
        g = self.groups.get(group_id)
        return g is None or not g.members

    # --- events from the loop --------------------------------------------------------------------
    def connection_closed(self, conn_id: int) -> None:
        """The connection's process is gone (or gave up on it): its members die at once."""
        for gid, mid in sorted(self._by_conn.pop(conn_id, ())):
            g = self.groups.get(gid)
            m = g.members.get(mid) if g is not None else None
            if g is not None and m is not None and not self._keeps_place(g, m):
                m.join_reply = m.sync_reply = None  # nobody is left to answer
                self._remove(g, m, "connection closed", conn_gone=True)

    def topic_changed(self, topic: str) -> None:
        """A topic was created or deleted: rebalance the Stable groups whose members subscribe
        to it, so that its partitions are handed out (or taken back) without waiting for the
        members to notice. A leader-assigned group's leader watches the metadata itself and
        rejoins, as with Kafka, so it is left alone (faust makes topics it subscribes to)."""
        now = self.clock()
        for g in list(self.groups.values()):
            if g.state is State.STABLE and not g.leader_assigned \
                    and any(topic in m.topics for m in g.members.values()):
                self._prepare(g, now, f"topic {topic} was created or deleted")

    # --- views -----------------------------------------------------------------------------------
    def owner_of(self, group_id: str) -> dict[TP, str]:
        g = self.groups.get(group_id)
        if g is None or g.state is not State.STABLE:
            return {}
        return {tp: mid for mid, tps in g.assignment.items() for tp in tps}

    # --- internals -------------------------------------------------------------------------------
    def _member(self, group_id: str, member_id: str) -> tuple[Group, Member]:
        g = self.groups.get(group_id)
        m = g.members.get(member_id) if g is not None else None
        if g is None or m is None:
            if g is not None:
                self._check_fenced(g, member_id)
            raise UnknownMemberError(
                f"member {member_id or '(none)'} is not in group {group_id} (removed after its "
                "session expired, its connection closed or it left); join again")
        return g, m

    @staticmethod
    def _check_generation(g: Group, generation: int) -> None:
        if generation != g.generation:
            raise IllegalGenerationError(
                f"generation {generation} of group {g.group_id} is stale (the group is at "
                f"generation {g.generation}): it rebalanced and the partitions may now belong to "
                "another member; join again before committing")

    def _alive(self, m: Member) -> None:
        m.deadline = self.clock() + m.session_timeout_ms / 1000
        self._next_valid = False

    def _move_conn(self, g: Group, m: Member, conn_id: int) -> None:
        if m.conn_id == conn_id:
            return
        s = self._by_conn.get(m.conn_id)
        if s is not None:
            s.discard((g.group_id, m.member_id))
            if not s:
                del self._by_conn[m.conn_id]
        m.conn_id = conn_id
        self._by_conn.setdefault(conn_id, set()).add((g.group_id, m.member_id))

    def _join_response(self, g: Group, m: Member) -> G.JoinGroupResponse | ClassicJoinResponse:
        if g.leader_assigned:
            return self._classic_join_response(g, m)
        return G.JoinGroupResponse(g.generation, m.member_id, g.assignor, sorted(g.members))
