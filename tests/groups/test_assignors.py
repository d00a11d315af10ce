"""The assignors: every partition once, only to subscribers, deterministic, balanced; sticky keeps
what members had."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus.server.groups.assignors import (
    ASSIGNORS,
    AssignInput,
    Subscription,
    choose,
    range_assign,
    roundrobin_assign,
    sticky_assign,
)

pytestmark = pytest.mark.unit


def inp(members: dict[str, set[str]], partitions: dict[str, int], previous=None) -> AssignInput:
    return AssignInput({m: Subscription(frozenset(t)) for m, t in members.items()}, partitions,
                       previous or {})


def check_complete(a: AssignInput, out: dict) -> None:
    assert set(out) == set(a.members)
    seen = {}
    for m, tps in out.items():
        for tp in tps:
            assert tp not in seen, f"{tp} assigned to {seen[tp]} and {m}"
            seen[tp] = m
            assert tp[0] in a.members[m].topics, f"{m} got {tp} without subscribing"
    wanted = {(t, p) for m in a.members.values() for t in m.topics for p in range(a.partitions.get(t, 0))}
    assert set(seen) == wanted


def spread(out: dict) -> int:
    sizes = [len(v) for v in out.values()]
    return max(sizes) - min(sizes)


@st.composite
def inputs(draw):
    topics = {f"t{i}": draw(st.integers(0, 9)) for i in range(draw(st.integers(1, 3)))}
    names = draw(st.lists(st.sampled_from([f"m{i}" for i in range(8)]), min_size=1, max_size=6,
                          unique=True))
    members = {m: set(draw(st.lists(st.sampled_from(sorted(topics)), min_size=1, unique=True)))
               for m in names}
    prev_pool = [(t, p) for t, n in topics.items() for p in range(n + 2)]  # incl. vanished ones
    previous = {m: draw(st.lists(st.sampled_from(prev_pool), max_size=5)) if prev_pool else []
                for m in names}
    return inp(members, topics, previous)


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@settings(max_examples=300, deadline=None)
@given(a=inputs())
def test_every_partition_exactly_once_and_deterministic(name: str, a: AssignInput) -> None:
    out = ASSIGNORS[name](a)
    check_complete(a, out)
    # Same input, members given in another order: same answer.
    shuffled = list(a.members.items())
    random.Random(7).shuffle(shuffled)
    again = ASSIGNORS[name](AssignInput(dict(shuffled), dict(a.partitions), dict(a.previous)))
    assert again == out


@pytest.mark.parametrize("name", ["roundrobin", "sticky"])
@settings(max_examples=200, deadline=None)
@given(n_members=st.integers(1, 7), parts=st.lists(st.integers(0, 12), min_size=1, max_size=3))
def test_balanced_with_one_subscription(name: str, n_members: int, parts: list[int]) -> None:
    topics = {f"t{i}": n for i, n in enumerate(parts)}
    a = inp({f"m{i}": set(topics) for i in range(n_members)}, topics)
    assert spread(ASSIGNORS[name](a)) <= 1


def test_range_is_contiguous_per_topic() -> None:
    a = inp({"a": {"t"}, "b": {"t"}, "c": {"t"}}, {"t": 7})
    assert range_assign(a) == {"a": [("t", 0), ("t", 1), ("t", 2)], "b": [("t", 3), ("t", 4)],
                               "c": [("t", 5), ("t", 6)]}
    six = range_assign(inp({"a": {"t"}, "b": {"t"}, "c": {"t"}}, {"t": 6}))
    assert spread(six) == 0


def test_roundrobin_deals_across_topics() -> None:
    a = inp({"a": {"x", "y"}, "b": {"x", "y"}}, {"x": 3, "y": 3})
    out = roundrobin_assign(a)
    assert out == {"a": [("x", 0), ("x", 2), ("y", 1)], "b": [("x", 1), ("y", 0), ("y", 2)]}


def test_missing_topic_and_no_members() -> None:
    assert range_assign(inp({"a": {"nope"}}, {})) == {"a": []}
    assert sticky_assign(inp({}, {"t": 3})) == {}


def moved(before: dict, after: dict) -> int:
    owner = {tp: m for m, tps in before.items() for tp in tps}
    return sum(1 for m, tps in after.items() for tp in tps if owner.get(tp, m) != m)


def test_sticky_keeps_ownership_when_a_member_joins() -> None:
    topics = {"t": 6}
    three = {m: {"t"} for m in ("a", "b", "c")}
    # Not the order a fresh assignment would give: stickiness, not the id order, must decide.
    first = {"a": [("t", 4), ("t", 5)], "b": [("t", 0), ("t", 1)], "c": [("t", 2), ("t", 3)]}
    four = {**three, "d": {"t"}}
    second = sticky_assign(inp(four, topics, first))
    check_complete(inp(four, topics), second)
    assert spread(second) <= 1
    assert moved(first, second) == 1  # 6 over 4 is 2, 2, 1, 1: one partition moves, to d
    assert len(second["d"]) == 1
    for m in ("a", "b", "c"):
        assert set(second[m]) <= set(first[m])  # nobody gained someone else's partition


def test_sticky_keeps_ownership_when_a_member_leaves() -> None:
    topics = {"t": 6}
    before = {"a": [("t", 4), ("t", 5)], "b": [("t", 0), ("t", 1)], "c": [("t", 2), ("t", 3)]}
    after = sticky_assign(inp({"a": {"t"}, "b": {"t"}}, topics, before))
    assert set(before["a"]) <= set(after["a"]) and set(before["b"]) <= set(after["b"])
    assert spread(after) == 0


def test_sticky_uses_reported_ownership_after_a_coordinator_restart() -> None:
    owned = {"a": (("t", 2), ("t", 3)), "b": (("t", 0), ("t", 1))}
    a = AssignInput({m: Subscription(frozenset({"t"}), owned[m]) for m in owned}, {"t": 4}, {})
    assert sticky_assign(a) == {"a": [("t", 2), ("t", 3)], "b": [("t", 0), ("t", 1)]}
    assert range_assign(a) == {"a": [("t", 0), ("t", 1)], "b": [("t", 2), ("t", 3)]}


def test_sticky_duplicate_claims_go_to_one_member() -> None:
    before = {"a": [("t", 0), ("t", 1)], "b": [("t", 1), ("t", 2)]}
    out = sticky_assign(inp({"a": {"t"}, "b": {"t"}}, {"t": 4}, before))
    check_complete(inp({"a": {"t"}, "b": {"t"}}, {"t": 4}), out)
    assert ("t", 1) in out["a"] and ("t", 2) in out["b"]


def test_choose_common_assignor_by_preference() -> None:
    assert choose([["range", "sticky"], ["sticky", "range"]]) == "range"  # tie: by name
    assert choose([["sticky", "range"], ["sticky"]]) == "sticky"
    assert choose([["range"], ["roundrobin"]]) is None
    assert choose([["nope", "roundrobin"]]) == "roundrobin"
