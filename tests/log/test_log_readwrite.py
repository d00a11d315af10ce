"""Append and read on real files: rolls, every offset, max_bytes, time lookup, ranges."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from logtest_helpers import append, log_files, make_batch, open_partition, read_all, records, values_of

from edgebus import format as F
from edgebus.batch import iter_batches, validate_batch
from edgebus.errors import ClosedError, OffsetOutOfRangeError, RecordTooLargeError
from edgebus.log import TopicConfig

pytestmark = pytest.mark.unit

SMALL = TopicConfig(segment_bytes=1000, index_interval_bytes=100)


def fill(p, batches: int, per_batch: int = 3, size: int = 20, t0: int = 1_000) -> list[bytes]:
    vals = []
    for i in range(batches):
        v = values_of(per_batch, size, i * per_batch)
        append(p, v, t0 + i)
        vals.extend(v)
    return vals


def test_empty_partition(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0")
    assert (p.log_start_offset, p.log_end_offset, p.segment_count, p.size_bytes) == (0, 0, 1, 0)
    assert p.read(0, 100) == b""
    assert p.offset_for_timestamp(0) is None
    assert [f.name for f in log_files(tmp_path / "t-0")] == ["00000000000000000000.log"]
    p.close()


@pytest.mark.parametrize("interval", [0, 100, 4096])
def test_round_trip_across_rolls(tmp_path: Path, interval: int) -> None:
    cfg = TopicConfig(segment_bytes=1000, index_interval_bytes=interval)
    p = open_partition(tmp_path / "t-0", cfg)
    vals = fill(p, 60)
    assert p.log_end_offset == 180
    assert p.segment_count > 5
    assert all(f.stat().st_size <= 1000 for f in log_files(tmp_path / "t-0"))
    assert [v for _, v in read_all(p)] == vals
    assert p.size_bytes == sum(f.stat().st_size for f in log_files(tmp_path / "t-0"))
    p.close()


def test_read_at_every_offset_returns_the_batch_holding_it(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", SMALL)
    vals = fill(p, 40)
    for off in range(p.log_end_offset):
        for max_bytes in (1, 150, 700, 5000):
            data = p.read(off, max_bytes)
            batches = list(iter_batches(data))
            assert sum(len(b) for b in batches) == len(data), "only whole batches"
            first = validate_batch(batches[0])
            assert first.base_offset <= off < first.base_offset + first.record_count
            assert len(data) <= max_bytes or len(batches) == 1
            recs = records(data, min_offset=off)
            assert [r.value for r in recs] == vals[off : off + len(recs)]
            assert recs[0].offset == off
    p.close()


def test_max_bytes_cuts_at_whole_batches_and_crosses_segments(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", SMALL)
    fill(p, 40)
    one = len(p.read(0, 1))
    assert len(p.read(0, one)) == one
    assert len(p.read(0, one * 2 - 1)) == one
    assert len(p.read(0, one * 5)) == one * 5
    # A big budget returns batches from several segments in one read.
    data = p.read(0, 100_000)
    assert len(data) == p.size_bytes


def test_batch_larger_than_max_bytes_still_progresses(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=10_000))
    append(p, [b"x" * 5000])
    append(p, [b"y" * 10])
    data = p.read(0, 100)
    assert [r.value for r in records(data)] == [b"x" * 5000]
    assert p.read(1, 100_000) == bytes(p.read(1, 100))


def test_oversized_batch_gets_its_own_segment(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=200))
    append(p, [b"a"])
    append(p, [b"b" * 1000])  # bigger than segment_bytes: rolls, then fills a segment alone
    append(p, [b"c"])
    assert p.segment_count == 3
    assert [v for _, v in read_all(p)] == [b"a", b"b" * 1000, b"c"]


def test_read_out_of_range(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", SMALL)
    fill(p, 5)
    assert p.read(15, 100) == b""
    with pytest.raises(OffsetOutOfRangeError, match="log start 0, log end 15"):
        p.read(16, 100)
    with pytest.raises(OffsetOutOfRangeError):
        p.read(-1, 100)


def test_append_stamps_offsets_and_monotonic_time(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", SMALL)
    assert append(p, values_of(2), now_ms=5_000) == (0, 5_000)
    # The clock jumps back: the append time must not.
    assert append(p, values_of(3), now_ms=1_000) == (2, 5_000)
    assert append(p, values_of(1), now_ms=6_000) == (5, 6_000)
    heads = [validate_batch(b) for b in iter_batches(p.read(0, 10_000))]
    assert [(h.base_offset, h.append_time) for h in heads] == [(0, 5000), (2, 5000), (5, 6000)]
    p.close()
    p = open_partition(tmp_path / "t-0", SMALL)
    assert append(p, values_of(1), now_ms=10) == (6, 6_000), "max append time survives reopen"


def test_record_too_large(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(max_message_bytes=200))
    b = make_batch([b"x" * 300])
    with pytest.raises(RecordTooLargeError):
        p.append(b, validate_batch(b), 1)
    assert p.log_end_offset == 0


def test_roll_by_segment_ms(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_ms=1_000))
    append(p, [b"a"], now_ms=10_000)
    append(p, [b"b"], now_ms=11_000)
    assert p.segment_count == 1
    append(p, [b"c"], now_ms=11_001)
    assert p.segment_count == 2
    assert [f.name[:20] for f in log_files(p.path)] == [f"{0:020d}", f"{2:020d}"]


def test_offset_for_timestamp(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", SMALL)
    for i in range(40):
        append(p, values_of(3, 20, i * 3), now_ms=1_000 + 10 * i)
    assert p.offset_for_timestamp(0) == (0, 1_000)
    assert p.offset_for_timestamp(1_000) == (0, 1_000)
    assert p.offset_for_timestamp(1_001) == (3, 1_010)
    for i in range(40):
        assert p.offset_for_timestamp(1_000 + 10 * i) == (3 * i, 1_000 + 10 * i)
        assert p.offset_for_timestamp(995 + 10 * i) == (3 * i, 1_000 + 10 * i)
    assert p.offset_for_timestamp(1_000 + 10 * 39 + 1) is None
    p.close()
    p = open_partition(tmp_path / "t-0", SMALL)  # lazily loaded indexes give the same answers
    assert p.offset_for_timestamp(1_205) == (63, 1_210)


def test_closed_partition_refuses_work(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0")
    p.close()
    with pytest.raises(ClosedError):
        p.read(0, 1)
    with pytest.raises(ClosedError):
        append(p, [b"x"])


def test_index_files_are_sparse_and_point_at_batches(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(index_interval_bytes=300))
    fill(p, 30)
    p.close()
    seg = tmp_path / "t-0" / f"{0:020d}"
    index = seg.with_suffix(".index").read_bytes()
    entries = list(F.OFFSET_INDEX_ENTRY.iter_unpack(index))
    tentries = list(F.TIME_INDEX_ENTRY.iter_unpack(seg.with_suffix(".timeindex").read_bytes()))
    log = seg.with_suffix(".log").read_bytes()
    assert 1 < len(entries) < 30
    assert entries[0] == (0, 0)
    for (rel, pos), (t, trel) in zip(entries, tentries, strict=True):
        base, atime, _ = F.BATCH_PREFIX.unpack_from(log, pos)
        assert (base, atime, trel) == (rel, t, rel)
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(entries)]
    assert all(g >= 300 for g in gaps)


def test_append_accepts_read_only_buffers(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0")
    raw = bytes(make_batch([b"a", b"b"]))
    assert p.append(raw, validate_batch(raw), 5) == (0, 5)
    assert p.append(memoryview(raw), validate_batch(raw), 6) == (2, 6)
    assert [v for _, v in read_all(p)] == [b"a", b"b", b"a", b"b"]
