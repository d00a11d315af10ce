"""Open each hand-made broken segment in tests/data/segments (see its README.md)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from logtest_helpers import append, open_partition, read_all

from edgebus.log import TopicConfig

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data" / "segments"
BATCH = 112  # bytes per batch in these files

# file -> (log end offset after recovery, bytes cut, words in the warning)
CASES = {
    "torn-header.log": (6, 12, "torn batch header"),
    "torn-body.log": (6, 70, "incomplete batch"),
    "bad-crc.log": (4, 2 * BATCH, "CRC mismatch"),
    "bad-length.log": (4, BATCH, "impossible batch length 10"),
    "huge-length.log": (4, BATCH, "impossible batch length 4294967295"),
    "offset-gap.log": (4, BATCH, "base offset 7, expected 4"),
    "zero-tail.log": (6, 4096, "impossible batch length 0"),
    "bad-magic.log": (2, BATCH, "magic"),
    "first-batch-corrupt.log": (0, 2 * BATCH, "CRC mismatch"),
    "empty.log": (0, 0, None),
}


def test_every_data_file_has_a_case_and_a_readme_line() -> None:
    files = sorted(p.name for p in DATA.glob("*.log"))
    assert files == sorted(CASES)
    readme = (DATA / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in files)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_segment(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    end, cut, why = CASES[name]
    d = tmp_path / "t-0"
    d.mkdir()
    shutil.copy(DATA / name, d / f"{0:020d}.log")
    with caplog.at_level(logging.WARNING, logger="edgebus.log"):
        p = open_partition(d, TopicConfig(), None)
    assert p.log_end_offset == end
    report = p.recovery_report
    assert report is not None
    if why is None:
        assert not report.anything_cut and not caplog.records
    else:
        assert report.cut_bytes == cut and why in (report.cut_reason or "")
        assert len(caplog.records) == 1 and why in caplog.text
    assert [v for _, v in read_all(p)] == [f"r{i}".encode() for i in range(end)]
    assert append(p, [b"next"], 5_000)[0] == end
    p.close()
