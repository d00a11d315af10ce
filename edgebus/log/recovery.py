"""Partition recovery at open.

Invariant kept here: after recovery each segment is a run of whole, valid batches with dense
offsets from its name, and nothing before the checkpointed (fsynced) point is touched. Only bytes
after that point are read; older segments are trusted and merely listed (their indexes are loaded
lazily, on first use). Nothing that passes its CRC is deleted:

- a batch that passes its CRC but whose stamp (base offset, append time: outside the CRC) is out
  of sequence is restamped in place with the value the sequence gives;
- at the first batch that fails its checks, edgebus/log/damage.py looks for the next valid batch.
  None (a **torn tail**: nothing valid after the damage): truncate at the last whole valid batch.
  One (**mid-log damage**): the damaged bytes go to a `.corrupt` file, the later batches stay
  readable at their offsets, and the damaged offsets become a gap that reads refuse with
  CorruptRecordError.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edgebus import format as F
from edgebus.batch import validate_batch
from edgebus.errors import CorruptRecordError, RecordTooLargeError
from edgebus.log.checkpoint import RecoveryPoint
from edgebus.log.damage import CORRUPT_SUFFIX, find_resync, set_aside
from edgebus.log.fileutil import FILE_MODE, unlink_quiet
from edgebus.log.index import OffsetIndex, TimeIndex
from edgebus.log.recovery_report import RecoveredLog, RecoveryReport
from edgebus.log.segment import _NEVER, U32_MAX, Segment
from edgebus.log.segment_names import INDEX_SUFFIX, NAME_DIGITS, TIMEINDEX_SUFFIX, parse_log_name, segment_stem

# Scans read this much per pread: large enough that syscalls are rare, small enough for a Pi.
SCAN_CHUNK = 4 * 1024 * 1024
_LEFTOVER_SUFFIXES = (".tmp", ".deleted")


class _Cut(Exception):
    def __init__(self, position: int, reason: str, whole_segment: bool = False) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason
        self.whole_segment = whole_segment  # the segment itself is out of place: drop it too
        self.next_offset = -1  # set by _scan: the next offset after the last batch kept


def recover(
    directory: Path, name: str, rp: RecoveryPoint | None, interval: int, log: logging.Logger
) -> RecoveredLog:
    report = RecoveryReport(name)
    sizes, index_sizes, corrupt = _list_dir(directory, report)
    bases = sorted(sizes)
    dir_changed = bool(report.removed_files)

    # Finish a retention pass that a crash interrupted: segments wholly below the log start.
    # Only for a checkpoint that matches these files, so a stale one can never delete data.
    if rp is not None and rp.segment_base in sizes and rp.log_start_offset <= rp.segment_base:
        while len(bases) > 1 and bases[1] <= rp.log_start_offset:
            Segment(directory, bases.pop(0), 0, log).delete()
            report.retention_segments += 1
            dir_changed = True
    # Damaged bytes set aside go with the retention of their offsets (at the next start).
    for cname, cbase in corrupt:
        if not bases or cbase < bases[0]:
            unlink_quiet(directory / cname)
            report.removed_files.append(cname)
            dir_changed = True

    if not bases:
        # Nothing on disk: start where the checkpoint says the log ended (offsets are never reused).
        base = max(rp.next_offset, rp.log_start_offset) if rp else 0
        seg = Segment.create(directory, base, log)
        synced = RecoveryPoint(base, 0, base, base, -1)
        max_time = rp.max_append_time if rp else -1
        return RecoveredLog([seg], base, max_time, synced, [], True, report)

    segments = [Segment(directory, b, sizes[b], log) for b in bases]
    start_i, start_pos, expected = 0, 0, bases[0]
    report.full_scan = True
    if rp is not None and rp.segment_base in sizes:
        k = bases.index(rp.segment_base)
        consistent = rp.next_offset >= rp.segment_base and (
            rp.position > 0 or rp.next_offset == rp.segment_base
        )
        # A checkpoint past the end of its file means someone truncated it, and one that does
        # not point at the batch holding its next offset belongs to other bytes: trust nothing
        # (restamping from it would shift every later offset).
        if (consistent and rp.position <= sizes[rp.segment_base]
                and _starts_at(directory, rp, sizes[rp.segment_base])):
            start_i, start_pos, expected = k, rp.position, rp.next_offset
            report.full_scan = False
    synced = (
        RecoveryPoint(rp.segment_base, rp.position, rp.next_offset, 0, -1)
        if rp is not None and not report.full_scan
        else RecoveryPoint(bases[0], 0, bases[0], 0, -1)
    )

    # Trusted segments: only a cheap size check of their indexes (bad ones are rebuilt lazily).
    for seg in segments[:start_i]:
        isz, tsz = index_sizes.get(seg.base_offset, (None, None))
        if isz is not None and isz % F.OFFSET_INDEX_ENTRY.size:
            unlink_quiet(seg.index_path)
        if tsz is not None and tsz % F.TIME_INDEX_ENTRY.size:
            unlink_quiet(seg.timeindex_path)

    dirty: list[Segment] = []
    prev_time: list[int | None] = [None]
    k = start_i
    while k < len(segments):
        seg = segments[k]
        pos = start_pos if k == start_i else 0
        cut: _Cut | None = None
        if pos == 0 and seg.base_offset > expected:
            # Offsets with no bytes at all (a lost segment file): a gap, like damage set aside.
            log.warning("recovery of %s: offsets %d..%d are missing (no segment holds them); "
                        "reads of them are refused as damaged", name, expected,
                        seg.base_offset - 1)
            report.damaged_offsets.append((expected, seg.base_offset))
            expected = seg.base_offset
        if pos == 0 and seg.base_offset < expected:
            cut = _Cut(0, f"segment named for offset {seg.base_offset} but the log before it "
                          f"ends at offset {expected}", True)
        else:
            _prepare_indexes(seg, pos, expected, interval, report)
            try:
                expected = _scan(seg, pos, expected, interval, report, prev_time)
            except _Cut as c:
                cut = c
                expected = c.next_offset
            finally:
                if seg.size > pos or pos == 0:
                    dirty.append(seg)
        if cut is None:
            k += 1
            continue
        found = find_resync(segments, k, cut.position, expected, prev_time[0])
        if found is None:  # a torn tail: nothing valid follows
            _apply_cut(segments, k, cut, report, dirty)
            dir_changed = dir_changed or report.deleted_segments > 0
            break
        done, k, changed = set_aside(directory, segments, k, cut.position, expected, found, log)
        for s in changed:
            if s.index is None:
                _prepare_indexes(s, 0, s.base_offset, interval, report)
            if s not in dirty:
                dirty.append(s)
        dirty = [s for s in dirty if s in segments]
        dir_changed = True
        report.set_aside += done.files
        report.set_aside_bytes += done.bytes
        report.damaged_offsets.append((done.first_offset, done.resume_offset))
        log.warning(
            "recovery of %s: damage at byte %d of %s (%s); %d bytes moved aside to %s; "
            "offsets %d..%d are lost and refused to readers as damaged; the log resumes at "
            "offset %d%s", name, cut.position, seg.log_path.name, cut.reason, done.bytes,
            ", ".join(done.files) or "nothing", done.first_offset, done.resume_offset - 1,
            done.resume_offset, f" in {done.new_segment}" if done.new_segment else "",
        )
        expected = found.base_offset
    if not segments:
        segments.append(Segment.create(directory, expected, log))
        dir_changed = True

    # Write the index entries the scan added, and ready the last segment for appends.
    for seg in segments[start_i:]:
        if seg.index is None:  # an empty segment passed over while looking past damage
            _prepare_indexes(seg, 0, seg.base_offset, interval, report)
        assert seg.index is not None and seg.timeindex is not None
        seg.index.flush()
        seg.timeindex.flush()
    active = segments[-1]
    active.open_writable()
    active.open_index_writers()
    active.read_first_append_time()
    max_time = rp.max_append_time if rp else -1
    last = active.last_append_time(interval)
    if last is None and len(segments) > 1:
        last = segments[-2].last_append_time(interval)
    if last is not None:
        max_time = max(max_time, last)
    for seg in dirty:
        if seg is not active and seg in segments:
            seg.close_index_writers()
    dirty = [s for s in dirty if s in segments]
    if report.anything_cut:
        start = segments[0].base_offset
        kept = f"kept offsets {start}..{expected - 1}" if expected > start else "kept no offsets"
        log.warning(
            "recovery of %s cut %s at byte %d: %d bytes cut (%s); %d later segment(s) deleted; %s",
            name, report.cut_file, report.cut_position, report.cut_bytes, report.cut_reason,
            report.deleted_segments, kept,
        )
    return RecoveredLog(segments, expected, max_time, synced, dirty, dir_changed, report)


def _starts_at(directory: Path, rp: RecoveryPoint, size: int) -> bool:
    """Whether the checkpoint's position is the end of its file or a batch stamped with its
    next offset (a checkpoint of other bytes, e.g. a recreated topic, is not)."""
    if rp.position >= size:
        return True
    fd = os.open(directory / (segment_stem(rp.segment_base) + ".log"), os.O_RDONLY)
    try:
        head = os.pread(fd, F.BATCH_STAMP.size, rp.position)
    finally:
        os.close(fd)
    return len(head) == F.BATCH_STAMP.size and F.BATCH_STAMP.unpack(head)[0] == rp.next_offset


def _list_dir(
    directory: Path, report: RecoveryReport
) -> tuple[dict[int, int], dict[int, tuple[int | None, int | None]], list[tuple[str, int]]]:
    """Sizes of the .log files by base offset, and of their index files; the .corrupt files
    (name, segment base); leftovers removed."""
    logs: dict[int, int] = {}
    idx: dict[int, list[int | None]] = {}
    corrupt: list[tuple[str, int]] = []
    strays: list[os.DirEntry[str]] = []
    with os.scandir(directory) as it:
        for e in it:
            base = parse_log_name(e.name)
            if base is not None:
                logs[base] = e.stat().st_size
                continue
            stem, _, ext = e.name.partition(".")
            if len(stem) == NAME_DIGITS and stem.isdigit() and "." + ext in (
                INDEX_SUFFIX, TIMEINDEX_SUFFIX,
            ):
                slot = 0 if "." + ext == INDEX_SUFFIX else 1
                idx.setdefault(int(stem), [None, None])[slot] = e.stat().st_size
            elif e.name.endswith(_LEFTOVER_SUFFIXES):
                strays.append(e)
            elif e.name.endswith(CORRUPT_SUFFIX) and len(stem) == NAME_DIGITS and stem.isdigit():
                corrupt.append((e.name, int(stem)))
    for e in strays:
        unlink_quiet(Path(e.path))
        report.removed_files.append(e.name)
    for base in list(idx):
        if base not in logs:  # an index whose log was deleted (a crash mid-delete)
            for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
                path = directory / (segment_stem(base) + suffix)
                if path.exists():
                    unlink_quiet(path)
                    report.removed_files.append(path.name)
            del idx[base]
    return logs, {b: (v[0], v[1]) for b, v in idx.items()}, corrupt


def _prepare_indexes(
    seg: Segment, pos: int, expected: int, interval: int, report: RecoveryReport
) -> None:
    """Indexes for a segment about to be scanned from `pos`: entries before `pos` are kept (or
    rebuilt from the trusted bytes if unusable); the scan re-adds the rest."""
    if pos == 0:
        seg.index, seg.timeindex = OffsetIndex(seg.index_path), TimeIndex(seg.timeindex_path)
        seg.index.persisted = seg.timeindex.persisted = None  # old contents: rewrite after the scan
        seg.bytes_since_index = _NEVER
        return
    idx, why = OffsetIndex.load(seg.index_path, seg.size)
    tidx, twhy = TimeIndex.load(seg.timeindex_path, seg.size)
    if why or twhy or not idx or not tidx:
        seg.rebuild_indexes(interval, end=pos)
        report.rebuilt_indexes += 1
        return
    idx.keep_below_position(pos)
    tidx.keep_below_offset(expected - seg.base_offset)
    seg.index, seg.timeindex = idx, tidx
    seg.bytes_since_index = pos - idx.values[-1] if idx else _NEVER


def _scan(
    seg: Segment, pos: int, expected: int, interval: int, report: RecoveryReport,
    prev_time: list[int | None],
) -> int:
    """Validate every batch from `pos` to the end of the file; return the next offset, or raise
    _Cut at the first bad batch. Reads SCAN_CHUNK bytes per pread."""
    fd = seg.open_readable()
    size = os.fstat(fd).st_size
    seg.size = size
    report.scanned_bytes += max(size - pos, 0)
    p = pos
    buf = b""
    bstart = pos
    try:
        while p < size:
            off = p - bstart
            if off + F.BATCH_PREFIX_SIZE > len(buf):
                buf = os.pread(fd, min(SCAN_CHUNK, size - p), p)
                bstart, off = p, 0
                if len(buf) < F.BATCH_PREFIX_SIZE:
                    raise _Cut(p, f"torn batch header, {size - p} bytes left")
            base, atime, length = F.BATCH_PREFIX.unpack_from(buf, off)
            if length < F.BATCH_HEADER_SIZE or length > F.MAX_BATCH_BYTES:
                raise _Cut(p, f"impossible batch length {length}")
            if p + length > size:
                raise _Cut(p, f"incomplete batch, {size - p} of {length} bytes")
            if off + length > len(buf):
                buf = os.pread(fd, max(length, min(SCAN_CHUNK, size - p)), p)
                bstart, off = p, 0
                if len(buf) < length:
                    raise _Cut(p, "short read")
            try:
                info = validate_batch(memoryview(buf)[off : off + length], F.MAX_BATCH_BYTES)
            except (CorruptRecordError, RecordTooLargeError) as e:
                raise _Cut(p, str(e)) from None
            if expected + info.record_count - 1 - seg.base_offset > U32_MAX:
                raise _Cut(p, "relative offset overflows u32")
            # The stamp lies outside the CRC; the batch itself is whole and valid, and its place
            # in the sequence gives the values: restamp rather than lose it.
            new_time = atime if prev_time[0] is None or atime >= prev_time[0] else prev_time[0]
            if base != expected or new_time != atime:
                _restamp(seg, p, expected, new_time)
                report.restamped += 1
                seg.log.warning(
                    "recovery of %s: the batch at byte %d of %s is whole but stamped base offset "
                    "%d, append time %d; restamped %d, %d", seg.log_path.parent.name, p,
                    seg.log_path.name, base, atime, expected, new_time)
                atime = new_time
            seg.note_batch(p, expected, atime, length, interval, persist=False)
            prev_time[0] = atime
            expected += info.record_count
            p += length
    except _Cut as c:
        seg.size = p
        c.next_offset = expected  # the offsets kept before the cut stay in the log
        raise
    return expected


def _restamp(seg: Segment, position: int, base_offset: int, append_time: int) -> None:
    # Its own fd: pwrite on the segment's O_APPEND fd would append instead.
    fd = os.open(seg.log_path, os.O_WRONLY, FILE_MODE)
    try:
        os.pwrite(fd, F.BATCH_STAMP.pack(base_offset, append_time), position)
    finally:
        os.close(fd)


def _apply_cut(
    segments: list[Segment], k: int, cut: _Cut, report: RecoveryReport, dirty: list[Segment]
) -> None:
    seg = segments[k]
    on_disk = os.fstat(seg.open_readable()).st_size
    later = segments[k + 1 :]
    report.cut_file = seg.log_path.name
    report.cut_position = cut.position
    report.cut_reason = cut.reason
    report.cut_bytes = on_disk - cut.position + sum(os.path.getsize(s.log_path) for s in later)
    drop = later
    if cut.whole_segment:
        drop = segments[k:]
    else:
        seg.truncate(cut.position)
        if seg not in dirty:
            dirty.append(seg)
    for s in drop:
        s.delete()
        report.deleted_segments += 1
    del segments[len(segments) - len(drop) :]
