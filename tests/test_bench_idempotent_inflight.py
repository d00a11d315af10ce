"""bench/idempotent_inflight.py runs its producers (this tree's variants) against a real
supervisor: every variant sends every record and the same number of batches (the bench compares
only the depth of pipelining). Nothing here asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import idempotent_inflight

pytestmark = pytest.mark.integration


def test_every_variant_sends_the_same_batches(tmp_path: Path) -> None:
    out = tmp_path / "inflight"
    assert idempotent_inflight.main(["--records", "20000", "--rounds", "1", "--acks", "written",
                                     "--batch-size", "16384", "--out", str(out)]) == 0
    doc = json.loads(out.with_name("inflight.json").read_text())
    rows = doc["rows"]
    assert sorted(r["variant"] for r in rows) == ["plain", "plain5", "pp1", "pp5"]
    assert all(r["records"] == 20000 for r in rows)
    assert len({r["batches"] for r in rows}) == 1, rows
    assert "| written | pp5 |" in out.with_name("inflight.md").read_text()
