"""Reads check that batch offsets run in sequence (issue 14, item 3), on real files.

base_offset lies outside the CRC and a sealed segment is not rescanned at start (the checkpoint
covers it), so a flipped byte there used to be served: records at wrong offsets, or for a
segment's first batch an internal error on every read. Now the read serves every batch before it
and refuses the damaged batch's offsets with CorruptRecordError naming the partition and offset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from logtest_helpers import append, log_files, open_partition, read_survivors, records, values_of

from edgebus import format as F
from edgebus.errors import CorruptRecordError
from edgebus.log import Partition, RecoveryPoint, TopicConfig

pytestmark = pytest.mark.unit

CFG = TopicConfig(segment_bytes=1000, index_interval_bytes=100)
PER_BATCH = 3


def build(d: Path) -> tuple[list[bytes], list[tuple[int, int, int]], RecoveryPoint]:
    """A cleanly closed log of 40 batches over several segments; (values, per batch its
    segment base, byte position and first offset, the checkpoint the close leaves)."""
    p = open_partition(d, CFG)
    vals: list[bytes] = []
    where = []
    for i in range(40):
        seg_base = p.segment_bases[-1]
        v = values_of(PER_BATCH, 20, i * PER_BATCH)
        pos = sum(f.stat().st_size for f in log_files(d) if int(f.name[:20]) == seg_base)
        base, _ = append(p, v, 1_000 + i)
        if p.segment_bases[-1] != seg_base:  # this append rolled
            seg_base, pos = p.segment_bases[-1], 0
        where.append((seg_base, pos, base))
        vals.extend(v)
    p.close()
    return vals, where, p.recovery_point()


def reopen(d: Path, rp: RecoveryPoint) -> Partition:
    """Reopen with the checkpoint of a clean close: nothing is rescanned."""
    p = open_partition(d, CFG, rp)
    assert p.recovery_report is not None and p.recovery_report.scanned_bytes == 0
    return p


def flip(d: Path, seg_base: int, position: int) -> None:
    path = d / f"{seg_base:020d}.log"
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(data)


@pytest.mark.parametrize("which", ["middle", "first-of-segment", "last-of-segment"])
@pytest.mark.parametrize("byte", range(8))
def test_flipped_base_offset_in_a_sealed_segment(tmp_path: Path, which: str, byte: int) -> None:
    src = tmp_path / "src" / "t-0"
    vals, where, rp = build(src)
    bases = sorted({w[0] for w in where})
    seg = bases[2]
    in_seg = [w for w in where if w[0] == seg]
    victim = {"middle": in_seg[len(in_seg) // 2], "first-of-segment": in_seg[0],
              "last-of-segment": in_seg[-1]}[which]
    d = tmp_path / "t-0"
    shutil.copytree(src, d)
    flip(d, seg, victim[1] + F.BATCH_BASE_OFFSET + byte)
    p = reopen(d, rp)
    damaged = range(victim[2], victim[2] + PER_BATCH)
    survivors, refused = read_survivors(p)
    assert refused == [(damaged.start, damaged.stop)]
    assert survivors == [(o, v) for o, v in enumerate(vals) if o not in damaged]
    # Every offset of the batch is refused, with the partition and the offset in the error.
    for off in damaged:
        with pytest.raises(CorruptRecordError) as e:
            p.read(off, 1 << 20)
        assert (e.value.topic, e.value.partition, e.value.offset) == ("t", 0, off)
        assert e.value.next_offset == damaged.stop and "t-0" in str(e.value)
    # A read from before it stops before it, with every record at its own offset.
    start = max(damaged.start - 2 * PER_BATCH, 0)
    got = records(p.read(start, 1 << 20), "t", 0, start)
    assert [r.offset for r in got] == list(range(start, damaged.start))
    # Offsets by time still come from the sequence, not from the damaged stamp.
    found = p.offset_for_timestamp(1_000 + where.index(victim) + 1)
    assert found is not None and found[0] == damaged.stop
    assert append(p, [b"next"], 9_999)[0] == len(vals)
    p.close()


def test_the_index_is_rebuilt_once_then_trusted(tmp_path: Path) -> None:
    """The first refusal rebuilds the segment's index from the record counts (the entry may
    have been stale); later reads refuse at once, without rebuilding again."""
    d = tmp_path / "t-0"
    vals, where, rp = build(d)
    victim = next(w for w in where if w[0] == sorted({w[0] for w in where})[1])
    flip(d, victim[0], victim[1] + 3)
    p = reopen(d, rp)
    idx = d / f"{victim[0]:020d}.index"
    for _ in range(3):
        with pytest.raises(CorruptRecordError):
            p.read(victim[2], 100)
        mtime = idx.stat().st_mtime_ns
    with pytest.raises(CorruptRecordError):
        p.read(victim[2], 100)
    assert idx.stat().st_mtime_ns == mtime
    assert len(read_survivors(p)[0]) == len(vals) - PER_BATCH
    p.close()
