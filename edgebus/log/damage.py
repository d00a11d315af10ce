"""Damage in the middle of a log, found by recovery: where the log resumes, and moving it aside.

Recovery (edgebus/log/recovery.py) scans batch by batch. At the first batch that fails its checks
it asks `find_resync` for the next whole batch that passes them (its CRC, a plausible header, an
append time not before the last good one, and a base offset that fits the damaged bytes), in the
rest of that segment and in the later ones:

- none: a **torn tail**. Nothing valid follows the damage, which is what a crash during a write
  leaves; recovery truncates at the last whole valid batch (recovery.py `_apply_cut`).
- one: **mid-log damage** (bit rot). `set_aside` copies every damaged byte range to a `.corrupt`
  file next to its segment (docs/FORMAT.md 4.5), makes the batches from the resync point on a
  segment of their own named for their base offset, and only then truncates the damaged bytes
  out of the log. The damaged offsets become a gap between two segments, which reads answer with
  CorruptRecordError (Partition.read); nothing that passes its CRC is deleted.

Crash safety: the copies and the new segment are written under `.tmp` names, fsynced and renamed,
and the directory fsynced, before any truncation (whose segments are then synced with the first
group commit). Recovery interrupted at any point finds the damage again: it then resumes at the
segment it had made, and the bytes it had copied out of the damaged one are kept aside a second
time (tests/log/test_log_damage.py); nothing is lost either way.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgebus import format as F
from edgebus.log.fileutil import FILE_MODE, fsync_dir
from edgebus.log.segment import Segment
from edgebus.log.segment_names import segment_stem

CORRUPT_SUFFIX = ".corrupt"
# Damaged ranges are searched and copied this much at a time: bounds recovery's memory on a Pi.
SEARCH_CHUNK = 4 * 1024 * 1024
_MAGIC = bytes([F.MAGIC])
# A batch with one record of the smallest size: no candidate shorter than this is looked at.
_MIN_BATCH = F.BATCH_HEADER_SIZE + F.RECORD_MIN_SIZE


def corrupt_name(segment_base: int, position: int) -> str:
    """`<segment base:020d>.<byte position>.corrupt` (docs/FORMAT.md 4.5)."""
    return f"{segment_stem(segment_base)}.{position}{CORRUPT_SUFFIX}"


@dataclass(frozen=True)
class Resync:
    """Where the log resumes after damage: segment index, byte position, base offset."""

    k: int
    position: int
    base_offset: int


def plausible_head(buf: bytes | memoryview, i: int, limit: int) -> tuple[int, int, int, int] | None:
    """(base offset, append time, length, crc) of a batch header at buf[i] that passes the
    supervisor's header checks and whose batch ends by `limit`, else None (no CRC yet)."""
    if i + F.BATCH_HEADER_SIZE > len(buf):
        return None
    base, atime, length, crc, magic, attrs, _r, count = F.BATCH_HEADER.unpack_from(buf, i)[:8]
    if (magic != F.MAGIC or attrs & 0x07 or count < 1 or length < _MIN_BATCH
            or length > F.MAX_BATCH_BYTES or i + length > limit
            or count * F.RECORD_MIN_SIZE > length - F.BATCH_HEADER_SIZE):
        return None
    return base, atime, length, crc


def _crc_ok(fd: int, buf: bytes, i: int, pos: int, length: int, crc: int) -> bool:
    """The CRC of the batch at buf[i] (file position pos + i), read again if it runs past buf."""
    data = memoryview(buf)[i : i + length] if i + length <= len(buf) else \
        memoryview(os.pread(fd, length, pos + i))
    return len(data) == length and zlib.crc32(data[F.CRC_START:]) == crc


def valid_batch_at(fd: int, position: int, size: int) -> tuple[int, int] | None:
    """(base offset, append time) of a whole valid batch at `position` of the file, else None."""
    head = os.pread(fd, F.BATCH_HEADER_SIZE, position)
    got = plausible_head(head, 0, size - position)
    if got is None or not _crc_ok(fd, head, 0, position, got[2], got[3]):
        return None
    return got[0], got[1]


def _search(fd: int, start: int, size: int,
            accept: Callable[[int, int, int], bool]) -> tuple[int, int] | None:
    """(position, base offset) of the first whole valid batch at or after `start` for which
    accept(position, base offset, append time) holds. Candidates are found by their magic byte,
    so garbage costs a `bytes.find` and a header check per 0x01 byte, a CRC only when the
    header is plausible. Reads SEARCH_CHUNK (plus a header) at a time."""
    pos = start
    while pos + _MIN_BATCH <= size:
        buf = os.pread(fd, min(SEARCH_CHUNK + F.BATCH_HEADER_SIZE, size - pos), pos)
        last = min(len(buf) - _MIN_BATCH, SEARCH_CHUNK - 1)  # candidates here: [0, last]
        i = 0
        while i <= last:
            m = buf.find(_MAGIC, i + F.BATCH_MAGIC, last + F.BATCH_MAGIC + 1)
            if m < 0:
                break
            i = m - F.BATCH_MAGIC
            got = plausible_head(buf, i, size - pos)
            if (got is not None and accept(pos + i, got[0], got[1])
                    and _crc_ok(fd, buf, i, pos, got[2], got[3])):
                return pos + i, got[0]
            i += 1
        pos += last + 1
    return None


def find_resync(segments: list[Segment], k: int, p: int, expected: int,
                min_time: int | None) -> Resync | None:
    """The first place after byte p of segments[k] where the log resumes: a whole valid batch
    that starts a later segment named at or past `expected`, or one inside a segment whose base
    offset lies in [expected, expected + damaged bytes / smallest record] (the damaged bytes
    held at most that many records) and below the next segment's name, and whose append time
    is not before min_time."""
    damaged_before = 0  # damaged bytes in the segments before the one searched
    for k2 in range(k, len(segments)):
        seg = segments[k2]
        fd = seg.open_readable()
        size = os.fstat(fd).st_size
        start = p + 1 if k2 == k else 0
        origin = p if k2 == k else -damaged_before  # damaged bytes at x are x - origin
        next_name = segments[k2 + 1].base_offset if k2 + 1 < len(segments) else None
        if k2 > k and seg.base_offset >= expected:
            # A file's name is where its offsets start, whatever its first batch says.
            got = valid_batch_at(fd, 0, size)
            if got is not None and (min_time is None or got[1] >= min_time):
                return Resync(k2, 0, seg.base_offset)
            start = 1

        def accept(x: int, base: int, atime: int, origin: int = origin,
                   next_name: int | None = next_name, name: int = seg.base_offset) -> bool:
            if base < expected or base > expected + (x - origin) // F.RECORD_MIN_SIZE:
                return False
            if base <= name:  # a batch inside a segment holds offsets after its first one
                return False
            if next_name is not None and base >= next_name:
                return False
            return min_time is None or atime >= min_time

        found = _search(fd, start, size, accept)
        if found is not None:
            return Resync(k2, found[0], found[1])
        damaged_before += size - (p if k2 == k else 0)
    return None


def _copy_out(src: Segment, start: int, end: int, dst: Path) -> None:
    """Bytes [start, end) of src's .log into a new file dst, fsynced, put in place by rename."""
    tmp = dst.with_name(dst.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        sfd = src.open_readable()
        pos = start
        while pos < end:
            n = os.copy_file_range(sfd, fd, min(SEARCH_CHUNK, end - pos), pos)
            if n <= 0:
                raise OSError(errno.EIO, f"copy from {src.log_path} made no progress at byte {pos}")
            pos += n
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dst)


@dataclass
class SetAside:
    """What set_aside did, for the WARNING line and the report."""

    files: list[str]
    bytes: int
    first_offset: int  # the damaged offsets are [first_offset, resume_offset)
    resume_offset: int
    new_segment: str | None


def set_aside(directory: Path, segments: list[Segment], k: int, p: int, expected: int,
              r: Resync, log: logging.Logger) -> tuple[SetAside, int, list[Segment]]:
    """Move the damage from byte p of segments[k] up to the resync point aside (see the module
    docstring). Returns what was done, the index of the segment where scanning goes on (it starts
    at the resync point), and the segments whose files changed."""
    pieces: list[tuple[Segment, int, int]] = []
    for k2 in range(k, r.k + 1):
        seg = segments[k2]
        size = os.fstat(seg.open_readable()).st_size
        lo = p if k2 == k else 0
        hi = r.position if k2 == r.k else size
        if hi > lo:
            pieces.append((seg, lo, hi))
    files = []
    for seg, lo, hi in pieces:
        name = corrupt_name(seg.base_offset, lo)
        _copy_out(seg, lo, hi, directory / name)
        files.append(name)
    changed: list[Segment] = []
    new_seg: Segment | None = None
    last = segments[r.k]
    if r.position > 0:
        # The batches from the resync point on become a segment named for their base offset.
        size = os.fstat(last.open_readable()).st_size
        _copy_out(last, r.position, size, directory / (segment_stem(r.base_offset) + ".log"))
        new_seg = Segment(directory, r.base_offset, size - r.position, log)
    fsync_dir(directory)  # the copies exist before any byte of the log goes
    # Now truncate: segments[k] keeps its bytes before p; the others up to the resync point lose
    # theirs. An emptied segment named at or past `expected` stays (empty): it marks its offsets
    # as damaged; one named before (out of place) goes.
    drop = []
    for k2 in range(k, r.k + 1):
        seg = segments[k2]
        if seg is last and r.position == 0:
            continue
        keep = p if k2 == k else 0
        if os.fstat(seg.open_readable()).st_size != keep:
            seg.truncate(keep)
        seg.size = keep
        seg.close_fd()
        changed.append(seg)
        if keep == 0 and seg.base_offset < expected:
            drop.append(seg)
    for seg in drop:
        seg.delete()
        segments.remove(seg)
        changed.remove(seg)
    if new_seg is None:
        nxt = segments.index(last)
    else:
        # Named between its damaged predecessor and the next segment (find_resync's bounds).
        nxt = bisect.bisect_left([s.base_offset for s in segments], r.base_offset)
        segments.insert(nxt, new_seg)
    done = SetAside(files, sum(hi - lo for _s, lo, hi in pieces), expected, r.base_offset,
                    new_seg.log_path.name if new_seg is not None else None)
    return done, nxt, changed
