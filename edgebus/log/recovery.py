"""Partition recovery at open.

Invariant kept here: after recovery the log is a run of whole, valid batches with dense offsets;
a torn or corrupt tail is cut at the last whole valid batch, and nothing before the checkpointed
(fsynced) point is touched. Only bytes after that point are read; older segments are trusted and
merely listed (their indexes are loaded lazily, on first use).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edgebus import format as F
from edgebus.batch import validate_batch
from edgebus.errors import CorruptRecordError, RecordTooLargeError
from edgebus.log.checkpoint import RecoveryPoint
from edgebus.log.fileutil import unlink_quiet
from edgebus.log.index import OffsetIndex, TimeIndex
from edgebus.log.segment import (
    _NEVER,
    INDEX_SUFFIX,
    NAME_DIGITS,
    TIMEINDEX_SUFFIX,
    U32_MAX,
    Segment,
    parse_log_name,
    segment_stem,
)

# Scans read this much per pread: large enough that syscalls are rare, small enough for a Pi.
SCAN_CHUNK = 4 * 1024 * 1024
_LEFTOVER_SUFFIXES = (".tmp", ".deleted")


@dataclass
class RecoveryReport:
    partition: str
    full_scan: bool = False  # no usable checkpoint entry: every segment was scanned
    scanned_bytes: int = 0
    cut_file: str | None = None
    cut_position: int = 0
    cut_bytes: int = 0
    cut_reason: str | None = None
    deleted_segments: int = 0  # later segments dropped by the cut
    retention_segments: int = 0  # segments an interrupted retention pass had left behind
    rebuilt_indexes: int = 0
    removed_files: list[str] = field(default_factory=list)

    @property
    def anything_cut(self) -> bool:
        return self.cut_reason is not None or self.deleted_segments > 0

    def summary(self) -> str:
        parts = [f"scanned {self.scanned_bytes} bytes" + (" (full scan)" if self.full_scan else "")]
        if self.cut_reason:
            parts.append(f"cut {self.cut_bytes} bytes at byte {self.cut_position} of "
                         f"{self.cut_file} ({self.cut_reason})")
        if self.deleted_segments:
            parts.append(f"deleted {self.deleted_segments} later segment(s)")
        if self.retention_segments:
            parts.append(f"finished deleting {self.retention_segments} expired segment(s)")
        if self.rebuilt_indexes:
            parts.append(f"rebuilt {self.rebuilt_indexes} index(es)")
        if self.removed_files:
            parts.append(f"removed leftovers {', '.join(self.removed_files)}")
        return "; ".join(parts)


@dataclass
class RecoveredLog:
    segments: list[Segment]
    log_end_offset: int
    max_append_time: int
    synced: RecoveryPoint  # log_start_offset is filled in by the partition
    dirty: list[Segment]  # segments holding bytes past the synced point, or truncated
    dir_changed: bool
    report: RecoveryReport


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
    sizes, index_sizes = _list_dir(directory, report)
    bases = sorted(sizes)
    dir_changed = bool(report.removed_files)

    # Finish a retention pass that a crash interrupted: segments wholly below the log start.
    # Only for a checkpoint that matches these files, so a stale one can never delete data.
    if rp is not None and rp.segment_base in sizes and rp.log_start_offset <= rp.segment_base:
        while len(bases) > 1 and bases[1] <= rp.log_start_offset:
            Segment(directory, bases.pop(0), 0, log).delete()
            report.retention_segments += 1
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
        # A checkpoint past the end of its file means someone truncated it: trust nothing.
        if consistent and rp.position <= sizes[rp.segment_base]:
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
    cut_k: int | None = None
    cut: _Cut | None = None
    for k in range(start_i, len(segments)):
        seg = segments[k]
        pos = start_pos if k == start_i else 0
        if pos == 0 and seg.base_offset != expected:
            cut_k, cut = k, _Cut(0, f"segment named for offset {seg.base_offset} "
                                    f"but the log before it ends at offset {expected}", True)
            break
        _prepare_indexes(seg, pos, expected, interval, report)
        try:
            expected = _scan(seg, pos, expected, interval, report, prev_time)
        except _Cut as c:
            cut_k, cut = k, c
            if c.next_offset >= 0:
                expected = c.next_offset
            break
        finally:
            if seg.size > pos or pos == 0:
                dirty.append(seg)

    if cut is not None and cut_k is not None:
        _apply_cut(segments, cut_k, cut, report, dirty)
        dir_changed = dir_changed or report.deleted_segments > 0
    if not segments:
        segments.append(Segment.create(directory, expected, log))
        dir_changed = True

    # Write the index entries the scan added, and ready the last segment for appends.
    for seg in segments[start_i:]:
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


def _list_dir(
    directory: Path, report: RecoveryReport
) -> tuple[dict[int, int], dict[int, tuple[int | None, int | None]]]:
    """Sizes of the .log files by base offset, and of their index files; leftovers removed."""
    logs: dict[int, int] = {}
    idx: dict[int, list[int | None]] = {}
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
    return logs, {b: (v[0], v[1]) for b, v in idx.items()}


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
            if base != expected:
                raise _Cut(p, f"batch base offset {base}, expected {expected}")
            if base + info.record_count - 1 - seg.base_offset > U32_MAX:
                raise _Cut(p, "relative offset overflows u32")
            if prev_time[0] is not None and atime < prev_time[0]:
                raise _Cut(p, f"append time {atime} is before the previous {prev_time[0]}")
            seg.note_batch(p, base, atime, length, interval, persist=False)
            prev_time[0] = atime
            expected += info.record_count
            p += length
    except _Cut as c:
        seg.size = p
        c.next_offset = expected  # the offsets kept before the cut stay in the log
        raise
    return expected


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
