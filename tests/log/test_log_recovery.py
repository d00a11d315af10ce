"""Recovery on real files: reopen, crash, torn and corrupt tails, broken indexes, checkpoints."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from logtest_helpers import append, log_files, open_partition, read_all, read_survivors, sync, values_of

from edgebus import format as F
from edgebus.log import Partition, RecoveryPoint, TopicConfig

pytestmark = pytest.mark.unit

CFG = TopicConfig(segment_bytes=1000, index_interval_bytes=100)


def fill(p: Partition, batches: int, start: int = 0) -> list[bytes]:
    vals = []
    for i in range(start, start + batches):
        v = values_of(3, 20, i * 3)
        append(p, v, 1_000 + i)
        vals.extend(v)
    return vals


def seg_path(d: Path, base: int, ext: str = ".log") -> Path:
    return d / f"{base:020d}{ext}"


def assert_continues(p: Partition, vals: list[bytes]) -> None:
    """The log holds exactly `vals` and the next append gets the next dense offset."""
    assert [v for _, v in read_all(p)] == vals
    base, _ = append(p, [b"next"], 9_999)
    assert base == len(vals)
    assert [v for _, v in read_all(p)][-1] == b"next"


def test_clean_reopen_scans_nothing(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 50)
    p.close()
    rp = p.recovery_point()
    assert (rp.next_offset, rp.position) == (150, seg_path(d, rp.segment_base).stat().st_size)
    p = open_partition(d, CFG, rp)
    assert p.recovery_report is not None
    assert p.recovery_report.scanned_bytes == 0 and not p.recovery_report.full_scan
    assert p.begin_sync() is None, "nothing to sync after a clean start"
    assert_continues(p, vals)


def test_crash_without_close_keeps_everything(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 20)
    rp = sync(p)
    vals += fill(p, 30, start=20)  # written, never synced; the process "dies"
    p.abandon()
    p = open_partition(d, CFG, rp)
    assert p.recovery_report is not None and p.recovery_report.scanned_bytes > 0
    assert not p.recovery_report.anything_cut
    assert_continues(p, vals)
    # And with no checkpoint at all: a full scan finds the same.
    p.abandon()
    p = open_partition(d, CFG, None)
    assert p.recovery_report is not None and p.recovery_report.full_scan
    assert [v for _, v in read_all(p)] == [*vals, b"next"]


def _last_batch_case(tmp_path: Path) -> tuple[Path, RecoveryPoint, int, int, list[bytes]]:
    src = tmp_path / "src" / "t-0"
    p = open_partition(src, TopicConfig(segment_bytes=10_000, index_interval_bytes=100))
    vals = fill(p, 8)
    rp = sync(p)
    start = p.size_bytes
    append(p, values_of(3, 20, 99), 2_000)
    end = p.size_bytes
    p.close()
    return src, rp, start, end, vals


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_truncate_last_batch_at_every_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, with_checkpoint: bool
) -> None:
    src, rp, start, end, vals = _last_batch_case(tmp_path)
    for cut in range(start, end):
        d = tmp_path / f"c{cut}" / "t-0"
        shutil.copytree(src, d)
        os.truncate(seg_path(d, 0), cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgebus.log"):
            p = open_partition(d, TopicConfig(segment_bytes=10_000, index_interval_bytes=100),
                               rp if with_checkpoint else None)
        assert p.log_end_offset == len(vals), f"cut at {cut}"
        assert seg_path(d, 0).stat().st_size == start
        if cut > start:
            msgs = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and r.name.startswith("edgebus.")]
            assert len(msgs) == 1 and f"{cut - start} bytes cut" in msgs[0], msgs
            assert "t-0" in msgs[0] and f"at byte {start}" in msgs[0]
        assert_continues(p, vals)
        p.close()


def test_flipped_byte_in_last_batch_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, rp, start, end, vals = _last_batch_case(tmp_path)
    # Bytes 0..15 are the stamp (base offset, append time), outside the CRC: a whole batch with
    # a bad stamp is restamped, not cut (see test_damaged_stamp_is_restamped).
    positions = [i for i in range(start, end) if not 0 <= i - start < 16]
    for pos in positions:
        d = tmp_path / f"f{pos}" / "t-0"
        shutil.copytree(src, d)
        data = bytearray(seg_path(d, 0).read_bytes())
        data[pos] ^= 0xFF
        seg_path(d, 0).write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgebus.log"):
            p = open_partition(d, CFG, rp)
        assert p.log_end_offset == len(vals), f"flip at {pos - start}"
        warnings = [r for r in caplog.records
                    if r.levelno == logging.WARNING and r.name.startswith("edgebus.")]
        assert len(warnings) == 1 and "cut" in warnings[0].getMessage()
        assert_continues(p, vals)
        p.close()


# From a checkpoint the time of the batch before is not known, so only a full scan can tell
# that an append time went backwards.
@pytest.mark.parametrize(("field", "with_checkpoint"),
                         [("append_time", False), ("base_offset", False), ("base_offset", True)])
def test_damaged_stamp_is_restamped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, field: str, with_checkpoint: bool
) -> None:
    """The stamp lies outside the CRC: a whole, valid batch with a backwards append time or an
    out-of-sequence base offset keeps its records, restamped from the sequence (it used to be
    cut, which deleted bytes that pass their CRC)."""
    src, rp, start, _end, vals = _last_batch_case(tmp_path)
    d = tmp_path / "t" / "t-0"
    shutil.copytree(src, d)
    at = F.BATCH_APPEND_TIME if field == "append_time" else F.BATCH_BASE_OFFSET
    with open(seg_path(d, 0), "r+b") as f:
        f.seek(start + at)
        f.write((-5).to_bytes(8, "little", signed=True))
    with caplog.at_level(logging.WARNING, logger="edgebus.log"):
        p = open_partition(d, CFG, rp if with_checkpoint else None)
    last = values_of(3, 20, 99)
    assert p.log_end_offset == len(vals) + 3
    assert "restamped" in caplog.text and p.recovery_report is not None
    assert p.recovery_report.restamped == 1 and not p.recovery_report.anything_cut
    assert [v for _, v in read_all(p)] == vals + last
    head = F.BATCH_STAMP.unpack(seg_path(d, 0).read_bytes()[start : start + 16])
    assert head[0] == len(vals) and head[1] >= 1_007  # the time of the batch before it
    assert_continues(p, vals + last)


def test_garbage_after_the_last_batch_is_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 20)
    rp = sync(p)
    p.abandon()
    active = log_files(d)[-1]
    size = active.stat().st_size
    for junk in (os.urandom(3), os.urandom(500), b"\x00" * 4096):
        with open(active, "ab") as f:
            f.write(junk)
        with caplog.at_level(logging.WARNING, logger="edgebus.log"):
            p = open_partition(d, CFG, rp)
        assert f"{len(junk)} bytes cut" in caplog.text
        assert active.stat().st_size == size
        assert [v for _, v in read_all(p)] == vals
        p.abandon()
        caplog.clear()


def test_corrupt_first_batch_of_a_middle_segment_keeps_later_segments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mid-log damage (item 6 of issue 14): it used to cut here and delete every later segment."""
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 40)
    p.abandon()
    segs = log_files(d)
    assert len(segs) >= 4
    victim = segs[1]
    data = bytearray(victim.read_bytes())
    data[F.BATCH_HEADER_SIZE + 5] ^= 0x01  # first batch of the second segment
    victim.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="edgebus.log"):
        p = open_partition(d, CFG, None)
    first = int(victim.name[:20])
    damaged = range(first, first + 3)  # the first batch of the victim: 3 records
    assert p.log_end_offset == len(vals)
    assert log_files(d)[:2] == segs[:2] and victim.stat().st_size == 0  # emptied, kept
    assert set(segs[2:]) <= set(log_files(d))  # nothing later deleted
    assert "CRC" in caplog.text and "moved aside" in caplog.text
    aside = d / f"{victim.name[:20]}.0.corrupt"
    assert aside.read_bytes() == bytes(data[: len(aside.read_bytes())])
    survivors, refused = read_survivors(p)
    assert refused == [(first, first + 3)]
    assert survivors == [(o, v) for o, v in enumerate(vals) if o not in damaged]
    assert append(p, [b"next"], 9_999)[0] == len(vals)


def test_missing_middle_segment_is_a_gap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 40)
    p.abandon()
    segs = log_files(d)
    segs[2].unlink()
    with caplog.at_level(logging.WARNING, logger="edgebus.log"):
        p = open_partition(d, CFG, None)
    gone = range(int(segs[2].name[:20]), int(segs[3].name[:20]))
    # The later segments stay (they used to be deleted); the missing offsets are refused.
    assert p.log_end_offset == len(vals)
    assert f"offsets {gone.start}..{gone.stop - 1} are missing" in caplog.text
    survivors, refused = read_survivors(p)
    assert refused == [(gone.start, gone.stop)]
    assert survivors == [(o, v) for o, v in enumerate(vals) if o not in gone]
    assert append(p, [b"next"], 9_999)[0] == len(vals)


@pytest.mark.parametrize("damage", ["missing", "odd-size", "backwards", "past-end", "shifted"])
def test_broken_old_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 40)
    p.close()
    rp = p.recovery_point()
    idx = seg_path(d, 0, ".index")
    good = idx.read_bytes()
    entries = list(F.OFFSET_INDEX_ENTRY.iter_unpack(good))
    assert len(entries) >= 3
    if damage == "missing":
        idx.unlink()
    elif damage == "odd-size":
        idx.write_bytes(good[:-3])
    elif damage == "backwards":
        idx.write_bytes(good[8:16] + good[0:8] + good[16:])
    elif damage == "past-end":
        idx.write_bytes(good + F.OFFSET_INDEX_ENTRY.pack(99, 10**6))
    elif damage == "shifted":  # plausible-looking entries that point at the wrong batches
        idx.write_bytes(b"".join(F.OFFSET_INDEX_ENTRY.pack(r + 3, pos) for r, pos in entries))
    p = open_partition(d, CFG, rp)
    assert [v for _, v in read_all(p, max_bytes=1)] == vals
    for off in range(0, 9):
        assert read_all(p, start=off)[0][0] == off
    p.close()
    assert idx.read_bytes() == good, "the rebuilt index equals the one written while appending"


def test_broken_active_index_is_rebuilt_at_open(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 40)
    rp = sync(p)
    p.close()
    active = log_files(d)[-1]
    idx = active.with_suffix(".index")
    good = idx.read_bytes()
    idx.write_bytes(b"\x07" * 13)
    p = open_partition(d, CFG, rp)
    assert p.recovery_report is not None and p.recovery_report.rebuilt_indexes == 1
    assert [v for _, v in read_all(p, max_bytes=1)] == vals
    p.close()
    assert idx.read_bytes() == good


def test_index_entries_past_a_torn_tail_are_dropped(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    cfg = TopicConfig(segment_bytes=100_000, index_interval_bytes=0)
    p = open_partition(d, cfg)
    vals = fill(p, 10)
    rp = sync(p)
    keep = p.size_bytes
    fill(p, 10, start=10)
    p.abandon()
    # Power loss: the unsynced log bytes are gone, but the index kept its entries.
    os.truncate(seg_path(d, 0), keep + 7)
    p = open_partition(d, cfg, rp)
    assert p.log_end_offset == len(vals)
    p.close()
    entries = list(F.OFFSET_INDEX_ENTRY.iter_unpack(seg_path(d, 0, ".index").read_bytes()))
    times = list(F.TIME_INDEX_ENTRY.iter_unpack(seg_path(d, 0, ".timeindex").read_bytes()))
    assert len(entries) == len(times) == 10
    assert all(pos < keep for _, pos in entries)


def test_checkpoint_past_end_of_file_falls_back_to_full_scan(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 40)
    p.close()
    rp = p.recovery_point()
    bogus = RecoveryPoint(rp.segment_base, rp.position + 500, rp.next_offset + 9, 0, 0)
    p = open_partition(d, CFG, bogus)
    assert p.recovery_report is not None and p.recovery_report.full_scan
    assert_continues(p, vals)


def test_checkpoint_for_missing_segment_falls_back_to_full_scan(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 10)
    p.close()
    p = open_partition(d, CFG, RecoveryPoint(10**6, 5, 10**6 + 1, 0, 0))
    assert p.recovery_report is not None and p.recovery_report.full_scan
    assert_continues(p, vals)


def test_empty_dir_starts_at_the_checkpointed_offset(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG, RecoveryPoint(500, 0, 500, 500, 7_000))
    assert (p.log_start_offset, p.log_end_offset) == (500, 500)
    assert append(p, [b"x"], 10) == (500, 7_000)
    assert [f.name for f in log_files(d)] == [f"{500:020d}.log"]


def test_leftovers_are_removed(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 5)
    p.close()
    (d / f"{777:020d}.index").write_bytes(b"x" * 8)  # its .log is gone
    (d / f"{777:020d}.timeindex").write_bytes(b"")
    (d / "00000000000000000000.log.tmp").write_bytes(b"junk")
    p = open_partition(d, CFG, p.recovery_point())
    assert p.recovery_report is not None
    assert sorted(p.recovery_report.removed_files) == sorted(
        [f"{777:020d}.index", f"{777:020d}.timeindex", "00000000000000000000.log.tmp"]
    )
    assert sorted(x.name for x in d.iterdir()) == [
        f"{0:020d}.index", f"{0:020d}.log", f"{0:020d}.timeindex"
    ]
    assert_continues(p, vals)


def test_stale_checkpoint_never_deletes_segments(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, CFG)
    vals = fill(p, 30)
    p.abandon()
    # An entry left from an older topic of the same name: its log start is far ahead.
    stale = RecoveryPoint(5_000, 40, 5_010, 4_000, 0)
    p = open_partition(d, CFG, stale)
    assert p.log_start_offset == 0 and p.recovery_report is not None
    assert p.recovery_report.retention_segments == 0 and p.recovery_report.full_scan
    assert_continues(p, vals)
