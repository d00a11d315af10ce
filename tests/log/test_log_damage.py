"""Mid-log damage at recovery, on real files (issue 14, item 6).

Bit rot past the recovery checkpoint used to make recovery cut the log there and delete every
later segment. Now the damaged bytes are set aside in a `.corrupt` file, every batch that passes
its CRC stays readable at its offset, the damaged offsets are refused with CorruptRecordError, and
the next append continues after the old log end. A torn tail (nothing valid after the damage) is
still truncated: tests/log/test_log_recovery.py cuts the last batch at every byte.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from logtest_helpers import append, log_files, open_partition, read_survivors, sync, values_of

from edgebus import format as F
from edgebus.log import Partition, RecoveryPoint, TopicConfig

pytestmark = pytest.mark.unit

CFG = TopicConfig(segment_bytes=1000, index_interval_bytes=100)
PER_BATCH = 3


def crashed_log(d: Path, batches: int = 40, synced: int = 5) -> tuple[list[bytes], list, RecoveryPoint]:
    """`batches` batches over several segments, a checkpoint after the first `synced`, then a
    crash (nothing closed). Returns the values, per batch (segment base, position, offset,
    length), and the checkpoint."""
    p = open_partition(d, CFG)
    vals: list[bytes] = []
    where = []
    rp = None
    for i in range(batches):
        before = p.segment_bases[-1]
        size = (d / f"{before:020d}.log").stat().st_size
        v = values_of(PER_BATCH, 20, i * PER_BATCH)
        base, _ = append(p, v, 1_000 + i)
        seg = p.segment_bases[-1]
        pos = size if seg == before else 0
        length = (d / f"{seg:020d}.log").stat().st_size - pos
        where.append((seg, pos, base, length))
        vals.extend(v)
        if i == synced - 1:
            rp = sync(p)
    p.abandon()
    assert rp is not None
    return vals, where, rp


def seg_file(d: Path, base: int) -> Path:
    return d / f"{base:020d}.log"


def damage(d: Path, seg: int, pos: int, xor: int = 0xFF) -> bytes:
    path = seg_file(d, seg)
    data = bytearray(path.read_bytes())
    data[pos] ^= xor
    path.write_bytes(data)
    return bytes(data)


def expect_refused(p: Partition, vals: list[bytes], lost: range, old_end: int) -> None:
    survivors, refused = read_survivors(p)
    assert refused == [(lost.start, lost.stop)]
    assert survivors == [(o, v) for o, v in enumerate(vals) if o not in lost]
    assert p.log_end_offset == old_end
    assert append(p, [b"next"], 99_999)[0] == old_end  # dense after the old log end
    assert read_survivors(p)[0][-1] == (old_end, b"next")


def test_flip_any_byte_of_a_middle_batch_past_the_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: damage past the checkpoint in a segment with later segments after it.
    Every byte the CRC covers, and the length and CRC fields: exactly that batch is lost."""
    src = tmp_path / "src" / "t-0"
    vals, where, rp = crashed_log(src)
    bases = sorted({w[0] for w in where})
    in_seg = [w for w in where if w[0] == bases[2]]
    seg, pos, first, length = in_seg[1]
    assert pos > 0 and in_seg[-1][1] > pos, "a batch in the middle of its segment"
    lost = range(first, first + PER_BATCH)
    for i in range(F.BATCH_LENGTH, length):
        d = tmp_path / f"b{i}" / "t-0"
        shutil.copytree(src, d)
        data = damage(d, seg, pos + i)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgebus.log"):
            p = open_partition(d, CFG, rp)
        assert p.recovery_report is not None and not p.recovery_report.anything_cut
        # Every segment stays; the batches after the damage became a segment of their own.
        assert set(log_files(d)) == {seg_file(d, b) for b in [*bases, lost.stop]}
        aside = d / f"{seg:020d}.{pos}.corrupt"
        assert aside.read_bytes() == data[pos : pos + length], f"byte {i}"
        msgs = [r.getMessage() for r in caplog.records if r.name.startswith("edgebus.")]
        assert len(msgs) == 1 and "moved aside" in msgs[0] and aside.name in msgs[0]
        assert f"offsets {lost.start}..{lost.stop - 1} are lost" in msgs[0]
        expect_refused(p, vals, lost, len(vals))
        p.close()


def test_full_scan_and_a_second_recovery_agree(tmp_path: Path) -> None:
    """Without a checkpoint the same damage gives the same log; recovering the result again
    moves nothing more aside and keeps the gap."""
    d = tmp_path / "t-0"
    vals, where, _rp = crashed_log(d)
    seg, pos, first, _length = where[17]
    damage(d, seg, pos + F.BATCH_HEADER_SIZE + 3)
    p = open_partition(d, CFG, None)
    lost = range(first, first + PER_BATCH)
    survivors, refused = read_survivors(p)
    assert refused == [(lost.start, lost.stop)] and len(survivors) == len(vals) - PER_BATCH
    p.abandon()
    corrupt = sorted(d.glob("*.corrupt"))
    p = open_partition(d, CFG, None)
    assert sorted(d.glob("*.corrupt")) == corrupt
    assert p.recovery_report is not None and not p.recovery_report.set_aside
    expect_refused(p, vals, lost, len(vals))
    p.close()


def test_zeroed_range_across_a_segment_boundary(tmp_path: Path) -> None:
    """Unwritten extents after a power loss: zeros from inside one segment into the next. The
    log resumes at the first whole batch after them (here inside the next segment, which is
    split there); each segment's damaged bytes get their own .corrupt file."""
    d = tmp_path / "t-0"
    vals, where, rp = crashed_log(d)
    bases = sorted({w[0] for w in where})
    a = [w for w in where if w[0] == bases[3]]
    b = [w for w in where if w[0] == bases[4]]
    start, resume = a[2], b[2]
    sa, sb = seg_file(d, bases[3]), seg_file(d, bases[4])
    da, db = sa.read_bytes(), sb.read_bytes()
    sa.write_bytes(da[: start[1]] + bytes(len(da) - start[1]))
    sb.write_bytes(bytes(resume[1]) + db[resume[1] :])
    p = open_partition(d, CFG, rp)
    expect_refused(p, vals, range(start[2], resume[2]), len(vals))
    assert (d / f"{bases[3]:020d}.{start[1]}.corrupt").stat().st_size == len(da) - start[1]
    assert (d / f"{bases[4]:020d}.0.corrupt").stat().st_size == resume[1]
    assert sa.stat().st_size == start[1] and sb.stat().st_size == 0  # emptied, kept
    assert seg_file(d, resume[2]).read_bytes() == db[resume[1] :]  # the split
    p.close()


def test_recovery_interrupted_after_setting_aside_finds_the_same_log(tmp_path: Path) -> None:
    """Recovery killed after writing the .corrupt copy and the split segment but before
    truncating: the next recovery finds the damage again; nothing is lost and the log is the
    same (the bytes the first attempt had copied out are kept aside a second time)."""
    src = tmp_path / "src" / "t-0"
    vals, where, rp = crashed_log(src)
    seg, pos, first, _length = where[22]
    damage(src, seg, pos + F.BATCH_HEADER_SIZE + 7)
    done = tmp_path / "done" / "t-0"
    shutil.copytree(src, done)
    open_partition(done, CFG, rp).close()
    new = [f for f in done.iterdir() if f.suffix in (".log", ".corrupt")
           and not (src / f.name).exists()]
    assert {f.suffix for f in new} == {".log", ".corrupt"}
    for f in new:  # the interrupted state: the copies exist, the damaged segment is whole
        shutil.copy(f, src / f.name)
    p = open_partition(src, CFG, rp)
    expect_refused(p, vals, range(first, first + PER_BATCH), len(vals))
    p.close()


def test_whole_segment_damaged_then_retention(tmp_path: Path) -> None:
    """A segment whose every byte is damaged is emptied and kept: its offsets are refused as
    damaged (not out of range), and retention deletes it together with the segment after it."""
    d = tmp_path / "t-0"
    vals, where, _rp = crashed_log(d)
    bases = sorted({w[0] for w in where})
    victim = seg_file(d, bases[0])
    victim.write_bytes(bytes(victim.stat().st_size))
    p = open_partition(d, CFG, None)
    assert p.log_start_offset == 0 and victim.stat().st_size == 0
    expect_refused(p, vals, range(0, bases[1]), len(vals))
    times = {w[0]: 1_000 + i for i, w in enumerate(where)}  # last append time per segment
    # Retention up to (not including) the second segment's last batch keeps both.
    cfg = TopicConfig(segment_bytes=1000, index_interval_bytes=100, retention_ms=10)
    p.config = cfg
    assert p.apply_retention(times[bases[1]] + 10) == 0 and p.log_start_offset == 0
    assert p.apply_retention(times[bases[1]] + 11) == 2
    assert p.log_start_offset == bases[2]
    p.close()


def test_an_empty_segment_between_the_damage_and_the_resync_point(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    vals, where, rp = crashed_log(d)
    bases = sorted({w[0] for w in where})
    a = [w for w in where if w[0] == bases[3]]
    sa = seg_file(d, bases[3])
    sa.write_bytes(sa.read_bytes()[: a[1][1]] + bytes(sa.stat().st_size - a[1][1]))
    seg_file(d, bases[4] - 1).write_bytes(b"")  # an empty segment inside the damaged offsets
    p = open_partition(d, CFG, rp)
    expect_refused(p, vals, range(a[1][2], bases[4]), len(vals))
    p.close()


def test_a_checkpoint_of_other_bytes_is_not_trusted(tmp_path: Path) -> None:
    """A checkpoint whose position does not hold its next offset (other bytes: a topic deleted
    and made again) falls back to a full scan instead of restamping every later batch."""
    d = tmp_path / "t-0"
    vals, where, _rp = crashed_log(d)
    seg, pos, first, _length = where[2]
    stale = RecoveryPoint(seg, pos, first + 1000, 0, 0)
    p = open_partition(d, CFG, stale)
    assert p.recovery_report is not None and p.recovery_report.full_scan
    assert p.recovery_report.restamped == 0
    assert read_survivors(p) == (list(enumerate(vals)), [])
    p.close()


def test_the_corrupt_file_name_is_documented() -> None:
    from edgebus.log.damage import corrupt_name

    assert corrupt_name(780, 4096) == "00000000000000000780.4096.corrupt"
    doc = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    assert "<base_offset:020d>.<position>.corrupt" in doc and "### 4.5 Damaged bytes" in doc
