"""bench/acl_compare.py: the alternated rounds of `python -m bench --acl --repeat N` and the
median on/off ratios it reports."""

from __future__ import annotations

from typing import Any

import pytest

from bench import acl_compare

pytestmark = pytest.mark.unit

SYSTEMS: list[tuple[str, str, Any, Any]] = [
    ("edgebus-shm", "batch", "a", True), ("edgebus-shm-acl", "batch", "b", True),
    ("edgebus-shm", "send", "c", True), ("edgebus-shm-acl", "send", "d", True),
    ("unix-socket", "batch", "e", False),
]


def test_rounds_alternate_the_pairs_and_run_peers_once() -> None:
    plan = acl_compare.rounds(SYSTEMS, 3)
    assert [(r, s[0][8:] or "off", s[1]) for r, s in plan if s[0].startswith("edgebus")] == [
        (0, "shm", "batch"), (0, "shm-acl", "batch"), (0, "shm", "send"), (0, "shm-acl", "send"),
        (1, "shm-acl", "batch"), (1, "shm", "batch"), (1, "shm-acl", "send"), (1, "shm", "send"),
        (2, "shm", "batch"), (2, "shm-acl", "batch"), (2, "shm", "send"), (2, "shm-acl", "send"),
    ]
    assert [r for r, s in plan if s[0] == "unix-socket"] == [0]
    assert acl_compare.rounds(SYSTEMS, 1) == [(0, s) for s in SYSTEMS]


def _row(system: str, rnd: int, mps: int, cpu: float) -> dict[str, Any]:
    return {"system": system, "api": "batch", "size": 100, "topology": "1->1", "mode": "throughput",
            "round": rnd, "msgs_per_s": mps, "supervisor_us_per_msg": cpu}


def test_median_of_the_rounds_ratios() -> None:
    rows = [_row("edgebus-shm", 0, 1000, 0.20), _row("edgebus-shm-acl", 0, 900, 0.22),
            _row("edgebus-shm-acl", 1, 1000, 0.20), _row("edgebus-shm", 1, 1000, 0.20),
            _row("edgebus-shm", 2, 1000, 0.25), _row("edgebus-shm-acl", 2, 1100, 0.20),
            _row("unix-socket", 0, 5000, 0.0)]
    [s] = acl_compare.summarize(rows)
    assert s["rounds"] == 3
    assert s["throughput"] == {"median": 1.0, "min": 0.9, "max": 1.1, "each": [0.9, 1.0, 1.1]}
    assert s["sup_cpu"]["median"] == 1.0 and s["sup_cpu"]["each"] == [1.1, 1.0, 0.8]
    [note] = acl_compare.notes([s])
    assert note.startswith("ACL on/off edgebus-shm batch 100 B 1->1 throughput, median of 3 ")
    assert "throughput x1.000 (range 0.900-1.100)" in note
    assert "supervisor CPU per message x1.000 (range 0.800-1.100)" in note


def test_a_case_missing_one_side_is_left_out() -> None:
    assert acl_compare.summarize([_row("edgebus-shm-acl", 0, 900, 0.2)]) == []
