"""Reading whole batches from one segment (Segment.read, segment.py): from the index entry (or
recent batch) before the offset, the headers walked to the batch holding it, then whole batches up
to the budget, each checked against the offsets the record counts before it give (segment.py's
invariant: a batch stamped out of sequence is never served as records at wrong offsets).
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgebus import format as F
from edgebus.errors import CorruptRecordError

if TYPE_CHECKING:
    from edgebus.log.segment import Segment

HEAD_SIZE = F.BATCH_SCAN_SIZE
_SCAN = F.BATCH_SCAN  # base_offset, length, record_count


class StaleIndex(Exception):
    """An index entry does not point at the batch it names."""


def _corrupt_batch(path: Path, first: int, count: int, stored: int) -> CorruptRecordError:
    """The error for a batch whose stored base offset is not its place in the sequence."""
    return CorruptRecordError(
        f"{path.name}: the batch holding offsets {first}..{first + count - 1} is stamped with "
        f"base offset {stored} (damaged on disk)", offset=first, next_offset=first + count,
    )


def read_batches(seg: Segment, offset: int, max_bytes: int, at_least_one: bool,
                 interval: int, view: bool = False) -> tuple[bytes | memoryview, bool, int]:
    """Segment.read's work, its indexes loaded: StaleIndex when the first index entry used does
    not point at the batch it names (Segment.read rebuilds them and reads again). view: the
    answer may be a memoryview of the read buffer (a fetch answer copies it into its response
    anyway: the slice would be a second copy of up to max_bytes)."""
    assert seg.index is not None
    fd = seg.open_readable()
    size = seg.size
    rel = offset - seg.base_offset
    rels = seg._recent_rels
    exact = 0
    if rels and rel >= rels[0]:  # a recent batch: its exact start
        i = bisect.bisect_right(rels, rel) - 1
        rel, pos = rels[i], seg._recent_pos[i]
        exact = _whole_recent(seg._recent_pos, i, pos, size, max_bytes)
    else:
        rel, pos = seg.index.lookup(rel)
    want = exact or max_bytes + interval + F.BATCH_HEADER_SIZE
    buf = os.pread(fd, min(want, size - pos), pos)
    bstart, i = pos, 0
    expect = seg.base_offset + rel  # the offset of the batch at bstart + i, by the counts
    first = True
    # 1. Skip to the batch holding `offset` (at most about one index interval of headers).
    while True:
        if bstart + i >= size:
            return b"", True, expect
        if i + HEAD_SIZE > len(buf):
            bstart, i = bstart + i, 0
            buf = os.pread(fd, min(want, size - bstart), bstart)
            if len(buf) < HEAD_SIZE:
                raise CorruptRecordError(f"{seg.log_path} is shorter than expected")
        base, length, count = _SCAN.unpack_from(buf, i)
        if length < F.BATCH_HEADER_SIZE:
            if first and not seg._index_derived:
                raise StaleIndex  # an index of other bytes (e.g. before a cleaning's swap)
            raise CorruptRecordError(f"{seg.log_path}: bad batch length {length}")
        if base != expect:
            if first and not seg._index_derived:
                raise StaleIndex
            if expect + count > offset:
                raise _corrupt_batch(seg.log_path, expect, count, base)
        first = False
        if expect + count > offset:
            break
        expect += count
        i += length
    # 2. Take whole batches up to max_bytes; re-read once if the buffer ran out first.
    first_pos, first_len, first_expect = bstart + i, length, expect
    # An exact read ends where a batch ends and the next would not fit: the buffer is the limit
    # (reaching its end is not running out), so the whole buffer is the answer, with no copy.
    limit = len(buf) if exact and bstart == pos and i == 0 else size - bstart
    j, more, expect = _take(buf, i, max_bytes, at_least_one, limit, expect)
    if more:
        buf = os.pread(fd, min(size - first_pos, max(max_bytes, first_len)), first_pos)
        bstart, i = first_pos, 0
        j, _, expect = _take(buf, 0, max_bytes, at_least_one, size - bstart, first_expect)
    if j == i and at_least_one:
        raise CorruptRecordError(f"{seg.log_path}: batch at byte {first_pos} is cut short")
    data: bytes | memoryview = buf if i == 0 and j == len(buf) else (
        memoryview(buf)[i:j] if view else buf[i:j])
    return data, bstart + j >= size, expect


def _whole_recent(starts: list[int], i: int, pos: int, size: int, max_bytes: int) -> int:
    """The bytes from recent batch i (at `pos`) to the end of the last whole batch that fits
    max_bytes, known from where the recent batches start (and the segment's size, where the
    last ends); 0 when not even batch i fits (the general read decides). A read of exactly
    these is the answer itself: the general read takes max_bytes plus an index interval and
    copies the answer out of it (1 MiB a fetch for a consumer keeping up)."""
    limit = pos + max_bytes
    if size <= limit:
        return size - pos
    m = bisect.bisect_right(starts, limit) - 1  # the last recent start at or before the limit
    return starts[m] - pos if m > i else 0


def _take(buf: bytes, i: int, max_bytes: int, at_least_one: bool, limit: int,
          expect: int) -> tuple[int, bool, int]:
    """End index of the whole batches from buf[i] (whose offset is `expect`) that fit max_bytes
    and run in sequence, whether the buffer ended before the budget or `limit` (the segment
    end, relative to buf) did, and the offset after the batches taken. A batch stamped out of
    sequence ends the run: the read that starts at it raises."""
    j = i
    total = 0
    n = len(buf)
    while j < limit:
        if j + HEAD_SIZE > n:
            return j, True, expect
        base, length, count = _SCAN.unpack_from(buf, j)
        if length < F.BATCH_HEADER_SIZE:
            raise CorruptRecordError(f"bad batch length {length} while reading")
        if base != expect and j > i:
            return j, False, expect
        if total + length > max_bytes and (total or not at_least_one):
            return j, False, expect
        if j + length > n:
            return j, True, expect
        total += length
        j += length
        expect += count
    return j, False, expect
