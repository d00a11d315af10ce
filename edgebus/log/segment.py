"""One log segment: `<base_offset:020d>.log` plus its `.index` and `.timeindex`.

Batches are trusted here: they were validated when appended or when recovery scanned them. Reads
walk batch headers (edgebus.format.BATCH_PREFIX plus the record count) inside one pread buffer.

Invariant checked on every read: the batches of a segment hold dense offsets from its base (the
file name), so each batch's offsets follow from the record counts before it. `base_offset` lies
outside the CRC, so a flipped bit there is caught only by comparing it with that sequence: a read
answers CorruptRecordError for the batch whose stored base disagrees (and serves the batches
before it), never records at wrong offsets. One comparison per batch header, no record decoded.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from edgebus import format as F
from edgebus.errors import CorruptRecordError
from edgebus.log.fileutil import FILE_MODE, unlink_quiet, write_rest
from edgebus.log.index import OffsetIndex, TimeIndex
from edgebus.log.segment_names import (  # noqa: F401 (SegmentInfo, parse_log_name: their old path)
    INDEX_SUFFIX,
    LOG_SUFFIX,
    NAME_DIGITS,
    TIMEINDEX_SUFFIX,
    SegmentInfo,
    parse_log_name,
    segment_stem,
)
from edgebus.log.segment_read import HEAD_SIZE, StaleIndex, read_batches

# Enough of a batch header to walk: base offset, append time, length, and the record count.
_COUNT = F.U32  # record_count, read at F.BATCH_RECORD_COUNT
# Header-only walks read this much at a time: many small batches per pread, little waste on big
# ones.
WALK_CHUNK = 64 * 1024
U32_MAX = 2**32 - 1
_NEVER = sys.maxsize  # bytes_since_index of an empty segment: its first batch is always indexed
# Batches appended last whose exact position a segment remembers (see Segment._recent_rels).
RECENT_BATCHES = 64


class BatchHead(NamedTuple):
    position: int
    base_offset: int
    append_time: int
    length: int
    record_count: int


class Segment:
    # Invariant: `size` is the byte length of whole, valid batches in the .log file.
    def __init__(self, directory: Path, base_offset: int, size: int, log: logging.Logger) -> None:
        stem = segment_stem(base_offset)
        self.base_offset = base_offset
        self.log_path = directory / (stem + LOG_SUFFIX)
        self.index_path = directory / (stem + INDEX_SUFFIX)
        self.timeindex_path = directory / (stem + TIMEINDEX_SUFFIX)
        self.size = size
        self.log = log
        self.fd: int | None = None
        self.writable = False
        self.index: OffsetIndex | None = None  # None until loaded (lazily for old segments)
        self.timeindex: TimeIndex | None = None
        self.first_append_time: int | None = None  # known for the active segment
        self.max_append_time: int | None = None  # None = not computed yet, or empty
        self.bytes_since_index = _NEVER
        self.last_write_gen = 0  # partition write generation of the last change to this segment
        # The last appended batches' relative offsets and positions (at most 2 * RECENT_BATCHES),
        # so a read near the end (a consumer just behind the producer) starts at its batch
        # instead of walking headers from the sparse index entry before it.
        # Invariant: each pair is the start of a whole batch below `size`; cleared on truncate
        # and index rebuilds. Live appends only (recovery leaves it empty).
        self._recent_rels: list[int] = []
        self._recent_pos: list[int] = []
        # The index was rebuilt from this file's record counts by this process, so an entry that
        # disagrees with the batch it points at means a damaged base offset, not a stale index.
        self._index_derived = False

    def __repr__(self) -> str:
        return f"Segment({self.log_path.name}, size={self.size})"

    @classmethod
    def create(cls, directory: Path, base_offset: int, log: logging.Logger) -> Segment:
        seg = cls(directory, base_offset, 0, log)
        try:
            seg.open_writable(truncate=True)
            seg.index = OffsetIndex(seg.index_path)
            seg.timeindex = TimeIndex(seg.timeindex_path)
            seg.open_index_writers(truncate=True)
        except OSError:
            with contextlib.suppress(OSError):
                seg.delete()  # leave no half-made segment behind
            raise
        return seg

    # --- file descriptors -------------------------------------------------------------------

    def open_writable(self, truncate: bool = False) -> int:
        if self.fd is None or not self.writable:
            self.close_fd()
            flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
            self.fd = os.open(self.log_path, flags, FILE_MODE)
            self.writable = True
        return self.fd

    def open_readable(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.log_path, os.O_RDONLY)
            self.writable = False
        return self.fd

    def open_index_writers(self, truncate: bool = False) -> None:
        assert self.index is not None and self.timeindex is not None
        for idx in (self.index, self.timeindex):
            idx.open_for_append()
            if truncate:
                idx.keep(0)
                assert idx.fd is not None
                os.ftruncate(idx.fd, 0)

    def close_index_writers(self) -> None:
        for idx in (self.index, self.timeindex):
            if idx is not None:
                idx.close()

    def close_fd(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.writable = False
            os.close(fd)

    def close(self) -> None:
        self.close_fd()
        self.close_index_writers()

    def dup_fds(self, with_indexes: bool) -> list[int]:
        """Duplicates of the .log fd, and of the open index fds if asked (for a sync ticket that
        runs on another thread while this thread may close the originals)."""
        fds = []
        self.open_readable()  # the .log must be in every ticket that covers this segment
        index_fds = (
            (None if self.index is None else self.index.fd,
             None if self.timeindex is None else self.timeindex.fd)
            if with_indexes else ()
        )
        try:
            for fd in (self.fd, *index_fds):
                if fd is not None:
                    fds.append(os.dup(fd))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def delete(self) -> None:
        """Close and unlink; the .log goes first so that a crash leaves no segment without it."""
        self.close()
        unlink_quiet(self.log_path)
        unlink_quiet(self.index_path)
        unlink_quiet(self.timeindex_path)

    # --- writing ----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to the .log; on OSError the caller cuts back with truncate()."""
        assert self.fd is not None and self.writable
        n = len(data)
        done = os.write(self.fd, data)  # one call for the whole batch, nearly always
        if done != n:
            write_rest(self.fd, data, done)
        self.size += n

    def append_batch(self, data: bytes | bytearray | memoryview, base_offset: int,
                     append_time: int, interval: int) -> OSError | None:
        """`write` then `note_batch(..., persist=True)` of a live append, as one call: the
        produce path's common case (no index entry due) costs no further call. OSError from the
        write (the caller cuts back with truncate()); returns note_batch's index error, if any."""
        assert self.fd is not None and self.writable
        pos = self.size
        n = len(data)
        done = os.write(self.fd, data)  # one call for the whole batch, nearly always
        if done != n:
            write_rest(self.fd, data, done)
        self.size = pos + n
        rels = self._recent_rels
        if (self.bytes_since_index >= interval or self.first_append_time is None
                or len(rels) >= 2 * RECENT_BATCHES):
            return self.note_batch(pos, base_offset, append_time, n, interval, True)
        # note_batch's work when no index entry is due and the recent lists have room
        self.max_append_time = append_time
        rels.append(base_offset - self.base_offset)
        self._recent_pos.append(pos)
        self.bytes_since_index += n
        return None

    def truncate(self, size: int) -> None:
        fd = self.open_writable()
        self.forget_recent()
        os.ftruncate(fd, size)
        self.size = size

    def forget_recent(self) -> None:
        """Drop the recent batch positions (the partition does when this segment stops being the
        active one, so old segments hold no such lists)."""
        self._recent_rels.clear()
        self._recent_pos.clear()

    def note_batch(
        self, position: int, base_offset: int, append_time: int, length: int, interval: int,
        persist: bool,
    ) -> OSError | None:
        """Account for a batch just written or scanned: times, and a sparse index entry when
        `interval` bytes have passed since the last one. Returns an index write error, if any
        (the batch itself is safe; a missing sparse entry only lengthens a lookup)."""
        if self.first_append_time is None:
            self.first_append_time = append_time
        self.max_append_time = append_time
        if persist:  # a live append: remember where it starts
            rels = self._recent_rels
            if len(rels) >= 2 * RECENT_BATCHES:
                del rels[:RECENT_BATCHES]
                del self._recent_pos[:RECENT_BATCHES]
            rels.append(base_offset - self.base_offset)
            self._recent_pos.append(position)
        err = None
        if self.bytes_since_index >= interval:
            assert self.index is not None and self.timeindex is not None
            rel = base_offset - self.base_offset
            if persist:
                err = self.index_entry(rel, position, append_time)
                if err is None:
                    self.bytes_since_index = 0
            else:
                self.index.keys.append(rel)
                self.index.values.append(position)
                self.timeindex.keys.append(append_time)
                self.timeindex.values.append(rel)
                self.bytes_since_index = 0
        if err is None:
            self.bytes_since_index += length
        return err

    def index_entry(self, rel: int, position: int, append_time: int) -> OSError | None:
        """Append one sparse entry to both index files (a live append's, from note_batch or the
        C data plane's sync-back). Returns the write error, if any, with the pair kept
        consistent (the batch itself is safe; a missing entry only lengthens a lookup)."""
        assert self.index is not None and self.timeindex is not None
        try:
            self.index.append(rel, position)
            self.timeindex.append(append_time, rel)
        except OSError as e:
            if len(self.timeindex) < len(self.index):  # keep the pair consistent
                self.index.keep(len(self.index) - 1)
            return e
        return None

    # --- indexes ----------------------------------------------------------------------------

    def ensure_indexes(self, interval: int) -> None:
        """Load the index files (lazily, on first use); rebuild them from the log if unusable."""
        if self.index is not None and self.timeindex is not None:
            return
        idx, why = OffsetIndex.load(self.index_path, self.size)
        tidx, twhy = TimeIndex.load(self.timeindex_path, self.size)
        if not why and not twhy and self.size and (not idx or not tidx):
            why = "empty index for a non-empty segment"
        self.index, self.timeindex = idx, tidx
        if why or twhy:
            if self.size:
                self.log.info("rebuilding indexes of %s: %s", self.log_path, why or twhy)
            self.rebuild_indexes(interval)

    def rebuild_indexes(self, interval: int, end: int | None = None) -> None:
        """Rebuild both indexes from the trusted batches in [0, end) and rewrite their files.
        Entries carry each batch's offset as the record counts give it (the segment's base plus
        the counts before it), not its stored base offset, which may be damaged."""
        if self.index is None or self.timeindex is None:
            self.index = OffsetIndex(self.index_path)
            self.timeindex = TimeIndex(self.timeindex_path)
        self.index.clear()
        self.timeindex.clear()
        self.forget_recent()
        self.bytes_since_index = _NEVER
        expect = self.base_offset
        for h in self.walk(0, end):
            self.note_batch(h.position, expect, h.append_time, h.length, interval, False)
            expect += h.record_count
        self.index.rewrite()
        self.timeindex.rewrite()
        self._index_derived = True

    # --- reading ----------------------------------------------------------------------------

    def walk(self, start: int = 0, end: int | None = None) -> Iterator[BatchHead]:
        """Headers of the trusted batches in [start, end), read in WALK_CHUNK preads."""
        fd = self.open_readable()
        end = self.size if end is None else end
        pos = start
        buf = b""
        bstart = start
        while pos < end:
            off = pos - bstart
            if off + HEAD_SIZE > len(buf):
                buf = os.pread(fd, min(WALK_CHUNK, end - pos), pos)
                bstart, off = pos, 0
                if len(buf) < HEAD_SIZE:
                    raise CorruptRecordError(f"{self.log_path}: torn batch header at byte {pos}")
            base, atime, length = F.BATCH_PREFIX.unpack_from(buf, off)
            count = _COUNT.unpack_from(buf, off + F.BATCH_RECORD_COUNT)[0]
            if length < F.BATCH_HEADER_SIZE or pos + length > end:
                raise CorruptRecordError(
                    f"{self.log_path}: bad batch length {length} at byte {pos}"
                )
            yield BatchHead(pos, base, atime, length, count)
            pos += length

    def read(
        self, offset: int, max_bytes: int, at_least_one: bool, interval: int, view: bool = False
    ) -> tuple[bytes | memoryview, bool, int]:
        """Whole batches from the one holding `offset`, up to max_bytes (at least one batch if
        at_least_one). Returns (data, whether the data reaches the end of this segment, the
        offset after the data). No data with the end reached: `offset` lies past the last batch
        of this segment. Stops before a batch whose stored base offset is out of sequence, and
        raises CorruptRecordError when that batch holds `offset`. view: the data may be a
        memoryview of the read buffer rather than bytes copied out of it."""
        self.ensure_indexes(interval)
        try:
            return read_batches(self, offset, max_bytes, at_least_one, interval, view)
        except StaleIndex:
            self.log.warning("index of %s points at the wrong batch; rebuilding", self.log_path)
            self.rebuild_indexes(interval)
            return read_batches(self, offset, max_bytes, at_least_one, interval, view)

    def position_at_most(self, offset: int) -> int:
        """A byte position at or before the batch holding `offset`, from memory only: a recent
        batch's exact start, else the offset index entry before it (0 when the index is not
        loaded: an old segment not read since the start)."""
        rel = offset - self.base_offset
        rels = self._recent_rels
        if rels and rel >= rels[0]:
            return self._recent_pos[bisect.bisect_right(rels, rel) - 1]
        if self.index is None:
            return 0
        return min(self.index.lookup(rel)[1], self.size)

    def find_time(self, ts_ms: int, interval: int) -> tuple[int, int] | None:
        """(base offset, append time) of the first batch with append time >= ts_ms."""
        self.ensure_indexes(interval)
        assert self.index is not None and self.timeindex is not None
        rel = self.timeindex.before(ts_ms)
        rel, start = (0, 0) if rel is None else self.index.lookup(rel)
        expect = self.base_offset + rel  # offsets by the record counts (a stored one may be damaged)
        for h in self.walk(start):
            if h.append_time >= ts_ms:
                return expect, h.append_time
            expect += h.record_count
        return None

    def last_append_time(self, interval: int) -> int | None:
        """Append time of the last batch (the largest: append times never decrease), computed
        by walking headers from the last index entry, and cached."""
        if self.max_append_time is None and self.size:
            self.ensure_indexes(interval)
            assert self.index is not None
            pos = self.index.lookup(U32_MAX)[1]
            for h in self.walk(pos):
                self.max_append_time = h.append_time
        return self.max_append_time

    def read_first_append_time(self) -> int | None:
        if self.first_append_time is None and self.size >= HEAD_SIZE:
            head = os.pread(self.open_readable(), F.BATCH_PREFIX_SIZE, 0)
            if len(head) == F.BATCH_PREFIX_SIZE:
                self.first_append_time = F.BATCH_PREFIX.unpack(head)[1]
        return self.first_append_time
