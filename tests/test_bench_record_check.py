"""bench/record_check.py (the produce-time record check's cost) runs and writes its report."""

from __future__ import annotations

import json

import pytest

from bench import record_check

pytestmark = pytest.mark.unit


def test_the_report_is_written(tmp_path) -> None:
    assert record_check.main(["--rounds", "1", "--records", "10", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "record_check.json").read_text())["results"]
    assert len(rows) == len(record_check.shapes(10))
    assert all(0 < r["check_us"] < r["produce_path_checked_us"] for r in rows)
