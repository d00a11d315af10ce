"""Partition assignment strategies, run by the coordinator when a rebalance completes.

Every assignor is a pure function of its inputs: members are visited in sorted member-id order and
partitions in (topic, partition) order, so the same inputs always give the same assignment.

Invariants (checked by tests/groups/test_assignors.py for every assignor):
- every partition of every subscribed topic is assigned to exactly one member subscribed to it;
- a member is only given partitions of topics it subscribes to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

TP = tuple[str, int]
Assignment = dict[str, list[TP]]


@dataclass(frozen=True)
class Subscription:
    topics: frozenset[str]
    owned: tuple[TP, ...] = ()  # what the member held before, as it reported it (sticky only)


@dataclass
class AssignInput:
    members: Mapping[str, Subscription]
    partitions: Mapping[str, int]  # topic -> partition count (missing topics are absent)
    previous: Mapping[str, Sequence[TP]] = field(default_factory=dict)  # coordinator's last result


def _empty(inp: AssignInput) -> Assignment:
    return {m: [] for m in sorted(inp.members)}


def _subscribers(inp: AssignInput) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in sorted(inp.members):
        for t in inp.members[m].topics:
            if inp.partitions.get(t, 0) > 0:
                out.setdefault(t, []).append(m)
    return out


def range_assign(inp: AssignInput) -> Assignment:
    """Kafka's RangeAssignor: per topic, contiguous ranges; the first members get one extra."""
    out = _empty(inp)
    for topic, members in sorted(_subscribers(inp).items()):
        n = inp.partitions[topic]
        per, extra = divmod(n, len(members))
        start = 0
        for i, m in enumerate(members):
            count = per + (1 if i < extra else 0)
            out[m].extend((topic, p) for p in range(start, start + count))
            start += count
    return out


def roundrobin_assign(inp: AssignInput) -> Assignment:
    """Kafka's RoundRobinAssignor: all partitions in order, dealt to members in turn, skipping a
    member that does not subscribe to the partition's topic."""
    out = _empty(inp)
    members = sorted(inp.members)
    if not members:
        return out
    subs = _subscribers(inp)
    i = 0
    for topic in sorted(subs):
        eligible = set(subs[topic])
        for p in range(inp.partitions[topic]):
            while members[i % len(members)] not in eligible:
                i += 1
            out[members[i % len(members)]].append((topic, p))
            i += 1
    return out


def sticky_assign(inp: AssignInput) -> Assignment:
    """Balanced like round-robin, but every member keeps as much of what it had as balance allows.

    1. Each member keeps its previous partitions that still exist and that it still subscribes to
       (a partition claimed by two members goes to the first in member-id order).
    2. Members above their share give back their highest-numbered extras.
    3. Unassigned partitions go, one by one, to the least-loaded eligible member.
    4. While some member has two or more partitions more than an eligible peer, one moves.
    """
    members = sorted(inp.members)
    out = _empty(inp)
    if not members:
        return out
    subs = _subscribers(inp)
    valid = {(t, p) for t in subs for p in range(inp.partitions[t])}
    owner: dict[TP, str] = {}
    for m in members:
        prev = list(inp.previous.get(m, ())) or list(inp.members[m].owned)
        for t, p in sorted({(t, p) for t, p in prev}):
            tp = (t, p)
            if tp in valid and tp not in owner and t in inp.members[m].topics:
                owner[tp] = m
                out[m].append(tp)
    # 2. Quotas: with P partitions and M members, P % M members may hold ceil(P/M), others floor.
    total = len(valid)
    floor, extra = divmod(total, len(members))
    by_kept = sorted(members, key=lambda m: (-len(out[m]), m))
    quota = {m: floor + (1 if i < extra else 0) for i, m in enumerate(by_kept)}
    for m in members:
        out[m].sort()
        while len(out[m]) > quota[m]:
            del owner[out[m].pop()]
    # 3. Hand out what nobody holds.
    for tp in sorted(valid - owner.keys()):
        m = min(subs[tp[0]], key=lambda x: (len(out[x]), x))
        out[m].append(tp)
        owner[tp] = m
    # 4. Heterogeneous subscriptions can leave a member loaded while an eligible peer is not.
    for _ in range(total * len(members) + 1):
        if not _move_one(out, subs):
            break
    for m in members:
        out[m].sort()
    return out


def _move_one(out: Assignment, subs: Mapping[str, list[str]]) -> bool:
    """Move one partition from a member to an eligible one holding two or more fewer."""
    for src in sorted(out, key=lambda m: (-len(out[m]), m)):
        for tp in sorted(out[src], reverse=True):
            dst = min(subs[tp[0]], key=lambda x: (len(out[x]), x))
            if len(out[dst]) + 1 < len(out[src]):
                out[src].remove(tp)
                out[dst].append(tp)
                return True
    return False


ASSIGNORS: dict[str, Callable[[AssignInput], Assignment]] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "sticky": sticky_assign,
}


def choose(preferences: Sequence[Sequence[str]]) -> str | None:
    """The assignor every member supports, ranked by the members' preference order summed (ties
    broken by name); None when the members have none in common."""
    common = set(ASSIGNORS)
    for prefs in preferences:
        common &= set(prefs)
    if not common:
        return None
    return min(common, key=lambda a: (sum(list(p).index(a) for p in preferences), a))
