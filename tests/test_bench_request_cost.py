"""bench/request_cost.py runs both ways and writes its report: in-process (every transport and
case, each count in a process of its own, against this checkout as its own base) and against a
real supervisor (one short count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import request_cost

pytestmark = pytest.mark.unit

HERE = Path(request_cost.__file__).resolve().parent.parent


def test_inproc_report(tmp_path: Path) -> None:
    out = tmp_path / "rc"
    assert request_cost.main(["--inproc", "--rounds", "1", "--requests", "50", "--base", str(HERE),
                              "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert {(r["supervisor"], r["transport"], r["case"]) for r in rows} == {
        (s, t, c) for s in ("base", "this") for t in ("shm", "socket")
        for c in ("produce", "produce+answer")}
    assert all(r["us"] > 0 for r in rows)
    assert "this/base" in out.with_suffix(".md").read_text()


def test_real_supervisor_report(tmp_path: Path) -> None:
    out = tmp_path / "rc"
    assert request_cost.main(["--rounds", "1", "--requests", "30", "--rate", "500",
                              "--transports", "shm", "--cases", "produce+answer",
                              "--out", str(out)]) == 0
    (row,) = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert row["us"] > 0 and row["sleeps"] >= 0
