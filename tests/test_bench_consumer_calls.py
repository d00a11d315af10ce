"""bench/consumer_calls.py counts a real consumer's calls per poll and writes its report; the
counts also hold the consumer's quick poll (issue 16) to its size: one record's poll costs about
20 Python calls on either transport (52 on shm, 48 on the socket before it), so a change that
puts the general path's layers back on the common poll fails here. Counts, not time: the machine's
load does not move them (a slow run only gathers more records per poll, a call each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import consumer_calls

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_poll_of_one_record_costs_few_python_calls(transport: str) -> None:
    row = consumer_calls.one(transport, 300, 1.0, 0)
    assert row["records"] >= 300 and row["polls"] > 0
    # Each record beyond one per poll adds its Record's __init__ (one call).
    budget = 26 + 2 * (row["records_per_poll"] - 1)
    assert row["calls_per_poll"] <= budget, row


def test_report(tmp_path: Path) -> None:
    out = tmp_path / "calls.md"
    consumer_calls.main(["--rate", "300", "--duration", "0.5", "--transports", "shm",
                         "--out", str(out)])
    text = out.read_text()
    assert "| this | shm |" in text and "Python calls / poll" in text
