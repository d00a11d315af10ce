"""bench/consumer_wakes.py splits a real paced consumer's CPU per message into wake-ups per
message and CPU per wake-up, for one tree or crossed trees, with and without SCHED_IDLE
spinners: every record arrives, the figures are consistent with each other, and the report holds
a row per case and a median per kind of case. Counts and consistency, not time."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import consumer_wakes

pytestmark = pytest.mark.integration

TREE = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_one_case_measures_the_consumer_of_the_tree_given(transport: str) -> None:
    row = consumer_wakes.one(transport, str(TREE), 1000, 0.5)
    assert row["received"] == 500, row  # every record, through the consumer process
    assert 0 < row["wakeups"] <= 2, row  # it slept between records: at most a few per record
    # CPU per message = wake-ups per message x CPU per wake-up
    assert row["us_per_wakeup"] * row["wakeups"] == pytest.approx(row["consumer_us"], rel=0.05)
    assert 0 <= row["kernel_share"] <= 1 and row["requests_per_record"] > 0, row
    assert row["producer_us"] > 0 and row["supervisor_us"] > 0 and row["p50_us"] > 0, row


def test_report_alternates_the_spinner_counts(tmp_path: Path) -> None:
    out = tmp_path / "wakes.md"
    consumer_wakes.main(["--trees", str(TREE), "--rate", "1000", "--duration", "0.5",
                         "--rounds", "1", "--transports", "shm", "--spinners", "0,1",
                         "--out", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0 | shm |")]
    assert len(rows) == 2 and {r.split(" | ")[4] for r in rows} == {"0", "1"}, text
    assert "Medians over the rounds" in text and "--spinners 0,1" in text
