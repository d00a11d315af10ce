"""bench/hops.py: a record's hops from the three processes' stamps (the producer's batches in
order, the supervisor's PRODUCE dispatches in order, the consumer's answers matched to the
supervisor's by correlation id and occurrence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import hops as H
from edgebus.protocol import messages as M

pytestmark = pytest.mark.unit

US = 1000  # stamps are ns


def _write(d: Path, role: str, events: list[tuple[int, int, int, int, int]]) -> None:
    (d / f"{role}-1.ev").write_bytes(b"".join(H._EV.pack(*e) for e in events))


def test_hops_of_a_held_record_and_of_one_answered_inside_the_append(tmp_path: Path) -> None:
    produce, fetch = int(M.Api.PRODUCE), int(M.Api.FETCH_STANDING)
    # Record 0 sent at 100 us, written alone; record 1 sent at 120 us, held, written with 2 at 300.
    _write(tmp_path, "prod", [
        (H.PB, 105 * US, 1, 0, 0), (H.PW, 110 * US, 1, 0, 0),
        (H.PB, 300 * US, 2, 0, 0), (H.PW, 310 * US, 2, 0, 0)])
    _write(tmp_path, "sup", [
        (H.SD, 50 * US, 2, fetch, 9), (H.SE, 51 * US, 2, fetch, 9),  # the consumer's connection
        (H.SD, 150 * US, 1, produce, 5), (H.SQ, 160 * US, 2, 9, 0), (H.SE, 170 * US, 1, produce, 5),
        # the second PRODUCE: no fetch parked, answered later
        (H.SD, 400 * US, 1, produce, 6), (H.SE, 420 * US, 1, produce, 6),
        (H.SQ, 500 * US, 2, 9, 0)])
    _write(tmp_path, "cons", [
        (H.CF, 200 * US, 9, 0, 0), (H.CR, 220 * US, 0, 0, 100 * US),
        (H.CF, 600 * US, 9, 1, 2), (H.CR, 650 * US, 1, 1, 120 * US),
        (H.CR, 650 * US, 2, 2, 290 * US)])
    r = H.analyse(str(tmp_path), "shm", 100, 10_000)
    assert r["records"] == 3 and r["batches"] == 2 and r["answers"] == 2
    # sorted by total: record 0 (120 us), record 2 (360 us), record 1 (530 us)
    p50 = r["p50"]  # the middle record: 2, sent at 290 us
    assert p50["total_us"] == 360
    assert (p50["held"], p50["write"], p50["sup_wake"], p50["append"], p50["to_answer"],
            p50["cons_wake"], p50["decode"]) == (10, 10, 90, 20, 80, 100, 50)
    assert r["p99"]["total_us"] == 530  # record 1: held 180 us behind record 0's request
    assert r["p99"]["held"] == 180
    md = H.render([{**r, "round": 0, "variant": "after"}], ["--rounds", "1"])
    assert any(line.startswith("| 0 | shm | after | 100 | p50 | 360.0 |") for line in md)


def test_an_answer_inside_the_dispatch_ends_the_append_hop(tmp_path: Path) -> None:
    produce, fetch = int(M.Api.PRODUCE), int(M.Api.FETCH_STANDING)
    _write(tmp_path, "prod", [(H.PB, 105 * US, 1, 0, 0), (H.PW, 110 * US, 1, 0, 0)])
    _write(tmp_path, "sup", [
        (H.SD, 50 * US, 2, fetch, 9),
        (H.SD, 150 * US, 1, produce, 5), (H.SQ, 160 * US, 2, 9, 0), (H.SE, 170 * US, 1, produce, 5)])
    _write(tmp_path, "cons", [(H.CF, 200 * US, 9, 0, 0), (H.CR, 220 * US, 0, 0, 100 * US)])
    hop = H.analyse(str(tmp_path), "shm", 100, 10_000)["p50"]
    assert (hop["append"], hop["to_answer"], hop["cons_wake"], hop["decode"]) == (10, 0, 40, 20)
