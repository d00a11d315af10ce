"""Open each hand-made broken segment in tests/data/segments (see its README.md)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from logtest_helpers import append, open_partition, read_survivors

from edgebus.log import TopicConfig

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data" / "segments"
BATCH = 112  # bytes per batch in these files

# file -> (log end offset after recovery, torn-tail bytes cut, words in the warnings,
#          damaged bytes set aside, offset ranges refused as damaged)
CASES = {
    "torn-header.log": (6, 12, "torn batch header", 0, []),
    "torn-body.log": (6, 70, "incomplete batch", 0, []),
    "bad-crc.log": (8, 0, "CRC mismatch", BATCH, [(4, 6)]),
    "bad-length.log": (4, BATCH, "impossible batch length 10", 0, []),
    "huge-length.log": (4, BATCH, "impossible batch length 4294967295", 0, []),
    "offset-gap.log": (6, 0, "stamped base offset 7", 0, []),
    "zero-tail.log": (6, 4096, "impossible batch length 0", 0, []),
    "bad-magic.log": (2, BATCH, "magic", 0, []),
    "first-batch-corrupt.log": (4, 0, "CRC mismatch", BATCH, [(0, 2)]),
    "empty.log": (0, 0, None, 0, []),
    "zeroed-middle.log": (12, 0, "impossible batch length 0", 2 * BATCH, [(4, 8)]),
    "rot-then-torn.log": (6, 40, "CRC mismatch", BATCH, [(2, 4)]),
}


def test_every_data_file_has_a_case_and_a_readme_line() -> None:
    files = sorted(p.name for p in DATA.glob("*.log"))
    assert files == sorted(CASES)
    readme = (DATA / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in files)


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_segment(tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture) -> None:
    end, cut, why, aside, refused = CASES[name]
    d = tmp_path / "t-0"
    d.mkdir()
    shutil.copy(DATA / name, d / f"{0:020d}.log")
    with caplog.at_level(logging.WARNING, logger="edgebus.log"):
        p = open_partition(d, TopicConfig(), None)
    assert p.log_end_offset == end
    report = p.recovery_report
    assert report is not None
    # Only edgebus's lines: a Kafka client thread left by an earlier test in this worker logs too.
    ours = [r for r in caplog.records if r.name.startswith("edgebus.")]
    if why is None:
        assert not report.anything_cut and not ours
    else:
        assert report.cut_bytes == cut and why in caplog.text
        assert len(ours) == 1 + bool(cut and aside)  # one line per thing done
    assert report.set_aside_bytes == aside
    assert sum(f.stat().st_size for f in d.glob("*.corrupt")) == aside
    survivors, got_refused = read_survivors(p)
    lost = {o for a, b in refused for o in range(a, b)}
    assert survivors == [(i, f"r{i}".encode()) for i in range(end) if i not in lost]
    assert got_refused == refused
    assert append(p, [b"next"], 5_000)[0] == end
    p.close()
