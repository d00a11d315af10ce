"""How a group's state moves (a mixin of Coordinator, coordinator.py): the clock's part (tick:
expired sessions, rebalance and sync deadlines; next_deadline for the loop), a member's removal,
and a rebalance from PreparingRebalance to its next generation. The state table and the
invariants are coordinator.py's; a leader-assigned group's completion is leader.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgebus.errors import UnknownMemberError
from edgebus.server.groups.assignors import ASSIGNORS, AssignInput, Subscription, choose
from edgebus.server.groups.model import Group, Member, State

log = logging.getLogger("edgebus.groups")


class Rebalances:
    """Coordinator's timers, removals and rebalances (it supplies these attributes and methods)."""

    groups: dict[str, Group]
    clock: Callable[[], float]
    partitions_of: Callable[[str], int]
    max_groups: int
    initial_delay: float
    rebalances: int
    _by_conn: dict[int, set[tuple[str, str]]]
    _ended: dict[str, int]
    _next: float | None
    _next_valid: bool
    _join_response: Callable[[Group, Member], Any]
    _forget_instance: Callable[[Group, Member], None]
    _cancel_syncs: Callable[[Group, str], None]
    _expire_sync: Callable[[Group, float], None]
    _complete_leader: Callable[[Group, float], None]

    def tick(self, now: float | None = None) -> None:
        """Expire sessions and finish rebalances whose deadlines passed."""
        now = self.clock() if now is None else now
        nxt = self.next_deadline()
        if nxt is None or now < nxt:
            return
        self._next_valid = False
        for g in list(self.groups.values()):
            for m in list(g.members.values()):
                if m.join_reply is None and m.sync_reply is None and now >= m.deadline:
                    self._remove(g, m, f"session timed out ({m.session_timeout_ms} ms without a "
                                       "heartbeat)")
            self._expire_sync(g, now)
            if g.state is not State.PREPARING:
                continue
            if g.rebalance_deadline is not None and now >= g.rebalance_deadline:
                for m in [m for m in g.members.values() if m.join_reply is None]:
                    self._remove(g, m, "did not rejoin within the rebalance timeout",
                                 rebalance=False)
                g.initial_deadline = None
                self._maybe_complete(g, now)
            elif g.initial_deadline is not None and now >= g.initial_deadline:
                g.initial_deadline = None
                self._maybe_complete(g, now)

    def next_deadline(self) -> float | None:
        """When tick() next has work (monotonic seconds), or None."""
        if not self._next_valid:
            times: list[float] = []
            for g in self.groups.values():
                times.extend(m.deadline for m in g.members.values()
                             if m.join_reply is None and m.sync_reply is None)
                if g.state is State.AWAITING_SYNC and g.sync_deadline is not None:
                    times.append(g.sync_deadline)
                if g.state is State.PREPARING:
                    times.extend(t for t in (g.rebalance_deadline, g.initial_deadline)
                                 if t is not None)
            self._next = min(times) if times else None
            self._next_valid = True
        return self._next

    def _remove(self, g: Group, m: Member, reason: str, *, conn_gone: bool = False,
                rebalance: bool = True) -> None:
        self._next_valid = False
        del g.members[m.member_id]
        self._forget_instance(g, m)
        if not conn_gone:
            s = self._by_conn.get(m.conn_id)
            if s is not None:
                s.discard((g.group_id, m.member_id))
                if not s:
                    del self._by_conn[m.conn_id]
        for r in (m.join_reply, m.sync_reply):
            if r is not None:
                r(UnknownMemberError(f"member {m.member_id} was removed: {reason}"))
        m.join_reply = m.sync_reply = None
        g.assignment.pop(m.member_id, None)
        log.info("group %s: member %s %s", g.group_id, m.member_id, reason)
        if not g.members:
            if g.state is not State.EMPTY:
                g.generation += 1
            g.state, g.assignment, g.assignor = State.EMPTY, {}, ""
            g.sync_deadline = None
            g.rebalance_deadline = g.initial_deadline = None
            log.info("group %s is empty (generation %d)", g.group_id, g.generation)
            # Forgotten but for its generation: its offsets live in the store, and the next
            # members' generations go on from this one, so that a zombie of an old generation
            # (OffsetCommit, TxnOffsetCommit) is never taken for a current member.
            del self.groups[g.group_id]
            self._ended.pop(g.group_id, None)
            self._ended[g.group_id] = g.generation
            if len(self._ended) > self.max_groups:
                del self._ended[next(iter(self._ended))]
        elif rebalance and g.state in (State.STABLE, State.AWAITING_SYNC):
            self._prepare(g, self.clock(), f"member {m.member_id} {reason}")
        elif rebalance and g.state is State.PREPARING:
            self._maybe_complete(g, self.clock())

    def _prepare(self, g: Group, now: float, reason: str) -> None:
        if g.state is State.EMPTY and self.initial_delay > 0:
            g.initial_deadline = now + self.initial_delay
        self._cancel_syncs(g, reason)
        g.state = State.PREPARING
        g.sync_deadline = None
        g.rebalance_deadline = now + max(m.rebalance_timeout_ms for m in g.members.values()) / 1000
        self._next_valid = False
        log.info("group %s: rebalancing (%s)", g.group_id, reason)
        self._maybe_complete(g, now)

    def _maybe_complete(self, g: Group, now: float) -> None:
        if g.state is not State.PREPARING:
            return
        if not g.members:
            return
        if g.initial_deadline is not None and now < g.initial_deadline:
            return
        if any(m.join_reply is None for m in g.members.values()):
            return
        self._complete(g, now)

    def _complete(self, g: Group, now: float) -> None:
        if g.leader_assigned:
            self._complete_leader(g, now)
            return
        members = dict(sorted(g.members.items()))
        g.generation += 1
        g.assignor = choose([m.assignors for m in members.values()]) or "range"
        topics = sorted(set().union(*(m.topics for m in members.values())))
        counts = {t: n for t in topics if (n := self.partitions_of(t)) > 0}
        inp = AssignInput({mid: Subscription(m.topics, m.owned) for mid, m in members.items()},
                          counts, {mid: tuple(tps) for mid, tps in g.assignment.items()})
        g.assignment = ASSIGNORS[g.assignor](inp)
        g.state = State.STABLE
        g.rebalance_deadline = g.initial_deadline = None
        self._next_valid = False
        self.rebalances += 1
        log.info("group %s: generation %d with %d member(s), assignor %s", g.group_id,
                 g.generation, len(members), g.assignor)
        for m in members.values():
            m.deadline = now + m.session_timeout_ms / 1000
            reply, m.join_reply = m.join_reply, None
            if reply is not None:
                reply(self._join_response(g, m))
