"""bench/compare.py: best figure per side, ratios that read "above 1 is faster", flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import compare

pytestmark = pytest.mark.unit


def _report(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    results = []
    for system, mode, value in rows:
        r = {"system": system, "api": "send", "size": 100, "topology": "1->1", "mode": mode}
        r.update({"msgs_per_s": value} if mode == "throughput" else {"p50_us": value, "p99_us": value * 4})
        results.append(r)
    path.write_text(json.dumps({"results": results}))
    return path


def test_best_of_each_side_and_flags(tmp_path: Path) -> None:
    b1 = _report(tmp_path / "b1.json", [("edgebus-shm", "throughput", 100.0), ("edgebus-shm", "latency", 200.0),
                                        ("unix-socket", "throughput", 1000.0)])
    b2 = _report(tmp_path / "b2.json", [("edgebus-shm", "throughput", 120.0), ("edgebus-shm", "latency", 250.0),
                                        ("unix-socket", "throughput", 1000.0)])
    a1 = _report(tmp_path / "a1.json", [("edgebus-shm", "throughput", 110.0), ("edgebus-shm", "latency", 100.0),
                                        ("unix-socket", "throughput", 500.0)])
    text, slower = compare.compare([b1, b2], [a1], 5.0)
    # throughput: best before 120, after 110 -> 0.917, flagged; latency: 200 -> 100 is 2x faster
    assert "| edgebus-shm | send | 100 | 1->1 | msgs_per_s | 120.0 | 110.0 | 0.917 | slower by more than 5% |" in text
    assert "| edgebus-shm | send | 100 | 1->1 | p50_us | 200.0 | 100.0 | 2.000 |  |" in text
    assert "(a peer: the machine moved)" in text  # the peer halved: not counted against edgebus
    assert slower == 1


def test_cli_writes_the_table(tmp_path: Path) -> None:
    b = _report(tmp_path / "b.json", [("edgebus-shm", "throughput", 100.0)])
    a = _report(tmp_path / "a.json", [("edgebus-shm", "throughput", 99.0)])
    out = tmp_path / "cmp.md"
    assert compare.main(["--before", str(b), "--after", str(a), "--out", str(out)]) == 0
    assert "| 0.990 |  |" in out.read_text() and "slower by more than 5%: 0" in out.read_text()
