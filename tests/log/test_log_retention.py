"""Retention by time and by size, and the disk-full drop-oldest hook."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from logtest_helpers import append, log_files, open_partition, read_all, values_of

from edgebus.errors import OffsetOutOfRangeError
from edgebus.log import Partition, TopicConfig

pytestmark = pytest.mark.unit

HOUR = 3600 * 1000


def fill(p: Partition, batches: int, t0: int, step: int = 1) -> None:
    for i in range(batches):
        append(p, values_of(3, 20, i * 3), t0 + i * step)


def test_retention_by_time_deletes_whole_old_segments(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=1000, retention_ms=HOUR)
    p = open_partition(tmp_path / "t-0", cfg)
    fill(p, 30, t0=0, step=1000)  # one batch per second
    nsegs, end = p.segment_count, p.log_end_offset
    assert p.apply_retention(now_ms=HOUR) == 0, "nothing is older than an hour yet"
    # At now = 1h + 12.5 s, batches appended before 12.5 s are expired.
    deleted = p.apply_retention(now_ms=HOUR + 12_500)
    assert deleted >= 1 and p.segment_count == nsegs - deleted
    assert p.log_end_offset == end
    first = log_files(p.path)[0]
    assert p.log_start_offset == int(first.name[:20]) > 0
    # Nothing left behind has expired batches only, and every deleted batch had expired.
    assert p.log_start_offset <= 3 * 13
    with pytest.raises(OffsetOutOfRangeError, match=f"log start {p.log_start_offset}"):
        p.read(p.log_start_offset - 1, 100)
    assert read_all(p)[0][0] == p.log_start_offset


def test_retention_uses_append_time_not_producer_time(tmp_path: Path) -> None:
    from edgebus.batch import build_batch, encode_record, validate_batch

    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=200, retention_ms=HOUR))
    far_future = 10**13  # a producer with a broken clock
    for _ in range(5):
        b = bytearray(build_batch([encode_record(far_future, None, b"x" * 50, [])],
                                  far_future, far_future))
        p.append(b, validate_batch(b), 1_000)
    assert p.segment_count > 1
    assert p.apply_retention(now_ms=1_000 + 2 * HOUR) == 5 - 1 + 1
    assert p.log_start_offset == p.log_end_offset == 5


def test_all_expired_keeps_log_end_offset_across_reopen(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=1000, retention_ms=HOUR)
    d = tmp_path / "t-0"
    p = open_partition(d, cfg)
    fill(p, 20, t0=0)
    end = p.log_end_offset
    p.apply_retention(now_ms=10 * HOUR)
    assert (p.log_start_offset, p.log_end_offset, p.segment_count, p.size_bytes) == (end, end, 1, 0)
    assert [f.name for f in log_files(d)] == [f"{end:020d}.log"]
    assert p.read(end, 100) == b""
    with pytest.raises(OffsetOutOfRangeError):
        p.read(0, 100)
    p.close()
    for rp in (p.recovery_point(), None):  # with or without a checkpoint
        q = open_partition(d, cfg, rp)
        assert (q.log_start_offset, q.log_end_offset) == (end, end)
        q.close()
    q = open_partition(d, cfg, q.recovery_point())
    assert append(q, [b"new"], 20 * HOUR)[0] == end, "offsets are never reused"


def test_retention_by_bytes(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=1000, retention_ms=-1, retention_bytes=3000)
    p = open_partition(tmp_path / "t-0", cfg)
    fill(p, 60, t0=0)
    deleted = p.apply_retention(now_ms=10**12)
    assert deleted > 0
    sizes = [f.stat().st_size for f in log_files(p.path)]
    assert sum(sizes) >= 3000, "never below retention_bytes"
    assert sum(sizes) - sizes[0] < 3000, "deleting one more would go below"
    assert p.size_bytes == sum(sizes)
    assert read_all(p)[0][0] == p.log_start_offset
    assert p.apply_retention(now_ms=10**12) == 0


def test_retention_bytes_never_deletes_the_active_segment(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(retention_ms=-1, retention_bytes=0))
    fill(p, 5, t0=0)
    assert p.apply_retention(now_ms=0) == 0
    assert p.log_start_offset == 0


def test_keep_forever(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=500, retention_ms=-1))
    fill(p, 20, t0=0)
    assert p.apply_retention(now_ms=10**15) == 0


def test_retention_after_reopen_uses_lazily_read_times(tmp_path: Path) -> None:
    cfg = TopicConfig(segment_bytes=1000, retention_ms=HOUR)
    d = tmp_path / "t-0"
    p = open_partition(d, cfg)
    fill(p, 30, t0=0, step=1000)
    p.close()
    p = open_partition(d, cfg, p.recovery_point())
    before = p.segment_count
    assert p.apply_retention(now_ms=HOUR + 12_500) >= 1
    assert p.segment_count < before and p.log_start_offset <= 39


def test_changed_config_applies(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=1000, retention_ms=-1))
    fill(p, 30, t0=0)
    n = p.segment_count
    p.config = replace(p.config, retention_bytes=1)
    assert p.apply_retention(0) == n - 1
    assert p.segment_count == 1


def test_delete_oldest_segment(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=1000))
    fill(p, 12, t0=0)
    n = p.segment_count
    assert n > 1
    first_len = len(read_all(p))
    assert p.delete_oldest_segment()
    assert p.segment_count == n - 1 and len(read_all(p)) < first_len
    while p.delete_oldest_segment():
        pass
    assert p.segment_count == 1, "the active segment is never dropped"
