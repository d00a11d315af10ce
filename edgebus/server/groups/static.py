"""Static membership (Kafka's KIP-345, `group.instance.id`): a member that names an instance
keeps its place across a restart of its process. A mixin of Coordinator (coordinator.py).

- Its connection closing does not remove it: it stays, holding its partitions, until its session
  times out (`session.timeout.ms`), so a restart within the session costs no rebalance.
- A JoinGroup with no member id and a known instance id takes the old member over: a new member
  id, the old one's place, partitions (or leader-assigned bytes) and leadership; the old member
  id is fenced (FencedInstanceError, for a process still alive with it). In a Stable
  group whose choice of assignor or protocol it does not change, the answer is the current
  generation at once, with no rebalance (as Kafka does; other members notice nothing). A parked
  request of the replaced member is answered UnknownMemberError.

Invariant: an instance id names at most one member of a group (`Group.instances`), and only a
member that is in the group.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from edgebus.errors import FencedInstanceError, UnknownMemberError
from edgebus.protocol import groups as G
from edgebus.server.groups.assignors import TP, choose
from edgebus.server.groups.model import Group, Member, Offer, Reply, State

log = logging.getLogger("edgebus.groups")

# Replaced member ids a group remembers, to fence their processes (FencedInstanceError, as
# Kafka's FENCED_INSTANCE_ID) rather than let them rejoin and take the instance back: bounds what
# a restart loop leaves behind.
MAX_FENCED = 64


class StaticMembers:
    """The static-membership part of Coordinator (it supplies these attributes and methods)."""

    _by_conn: dict[int, set[tuple[str, str]]]
    _next_valid: bool
    _join_response: Callable[[Group, Member], Any]
    _prepare: Callable[[Group, float, str], None]
    _maybe_complete: Callable[[Group, float], None]

    def _take_over(self, g: Group, conn_id: int, pid: int, req: G.JoinGroupRequest,
                   offer: Offer | None, topics: frozenset[str], assignors: tuple[str, ...],
                   owned: tuple[TP, ...], reply: Reply, now: float) -> bool:
        """A new JoinGroup naming a known instance: take its member over (True), or False when
        the instance is not in the group (the caller adds a new member)."""
        iid = offer.instance_id if offer is not None else None
        m = g.members.get(g.instances.get(iid, "")) if iid else None
        if m is None:
            return False
        old = m.member_id
        for r in (m.join_reply, m.sync_reply):
            if r is not None:
                r(UnknownMemberError(f"member {old} was replaced by a new process of instance "
                                     f"{iid}"))
        m.join_reply = m.sync_reply = None
        s = self._by_conn.get(m.conn_id)
        if s is not None:
            s.discard((g.group_id, old))
            if not s:
                del self._by_conn[m.conn_id]
        new = f"{req.client_id or 'member'}-{os.urandom(6).hex()}"
        g.members = {new if k == old else k: v for k, v in g.members.items()}  # keeps join order
        m.member_id, m.conn_id, m.pid, m.client_id = new, conn_id, pid, req.client_id
        self._by_conn.setdefault(conn_id, set()).add((g.group_id, new))
        assert iid is not None
        g.instances[iid] = new
        g.fenced[old] = iid
        while len(g.fenced) > MAX_FENCED:
            del g.fenced[next(iter(g.fenced))]
        if old in g.assignment:
            g.assignment[new] = g.assignment.pop(old)
        if old in g.blobs:
            g.blobs[new] = g.blobs.pop(old)
        if g.leader == old:
            g.leader = new
        if g.leader_assigned:  # the protocol stays chosen only if the new process offers it
            same = offer is not None and g.assignor in offer.names()
        else:
            same = m.topics == topics and choose(
                [*(o.assignors for o in g.members.values() if o is not m), assignors]) == g.assignor
        m.session_timeout_ms, m.rebalance_timeout_ms = req.session_timeout_ms, req.rebalance_timeout_ms
        m.topics, m.assignors, m.owned, m.offer = topics, assignors, owned, offer
        m.deadline = now + m.session_timeout_ms / 1000
        self._next_valid = False
        log.info("group %s: instance %s came back as member %s (was %s)", g.group_id, iid, new, old)
        if g.state is State.STABLE and same:
            reply(self._join_response(g, m))
            return True
        m.join_reply = reply
        if g.state is State.PREPARING:
            self._maybe_complete(g, now)
        else:
            self._prepare(g, now, f"instance {iid} came back with other protocols")
        return True

    @staticmethod
    def _check_fenced(g: Group, member_id: str) -> None:
        iid = g.fenced.get(member_id)
        if iid is not None:
            raise FencedInstanceError(
                f"member {member_id} of group {g.group_id} was replaced by a newer process of "
                f"instance {iid}")

    @staticmethod
    def _keeps_place(g: Group, m: Member) -> bool:
        """A static member outlives its connection (until its session expires)."""
        if m.offer is None or m.offer.instance_id is None:
            return False
        m.join_reply = m.sync_reply = None  # nobody is left to answer
        log.info("group %s: static member %s (instance %s) lost its connection; it keeps its "
                 "partitions until its session expires", g.group_id, m.member_id,
                 m.offer.instance_id)
        return True

    @staticmethod
    def _forget_instance(g: Group, m: Member) -> None:
        iid = m.offer.instance_id if m.offer is not None else None
        if iid is not None and g.instances.get(iid) == m.member_id:
            del g.instances[iid]

    @staticmethod
    def _note_instance(g: Group, m: Member) -> None:
        iid = m.offer.instance_id if m.offer is not None else None
        if iid is not None:
            g.instances[iid] = m.member_id

    def member_of_instance(self, group_id: str, instance_id: str) -> str:
        """The member id of a static member ("" if none): LeaveGroup may name the instance."""
        g = getattr(self, "groups", {}).get(group_id)
        return g.instances.get(instance_id, "") if g is not None else ""
