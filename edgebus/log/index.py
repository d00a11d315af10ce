"""Sparse per-segment indexes: offset -> file position, and append time -> offset.

Each is a plain append-only file of fixed-size entries (edgebus.format.OFFSET_INDEX_ENTRY and
TIME_INDEX_ENTRY) mirrored in two in-memory arrays for bisecting. Indexes are derived data: when a
file is missing or fails its checks it is rebuilt from the log, so they are never trusted blindly.
"""

from __future__ import annotations

import bisect
import contextlib
import operator
import os
import sys
from array import array
from itertools import islice
from pathlib import Path
from typing import ClassVar, Self

from edgebus import format as F
from edgebus.log.fileutil import FILE_MODE, read_file, write_all

# An index holds at most one entry per batch; this bounds what we read from disk for one.
MAX_INDEX_FILE_BYTES = 1 << 30


def _increasing(a: array[int], strict: bool) -> bool:
    op = operator.lt if strict else operator.le
    return all(map(op, a, islice(a, 1, None)))


class IndexFile:
    """Entries of (key, value) with keys sorted, appended with os.write as they are added."""

    entry: ClassVar = F.OFFSET_INDEX_ENTRY
    key_code: ClassVar[str] = "I"
    value_code: ClassVar[str] = "I"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys = array(self.key_code)
        self.values = array(self.value_code)
        self.fd: int | None = None  # open only while entries are being appended
        self.persisted: int | None = 0  # entries known to be in the file; None = unknown

    def __len__(self) -> int:
        return len(self.keys)

    # --- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, segment_size: int) -> tuple[Self, str | None]:
        """The index in `path` and None, or an empty index and the reason the file is unusable."""
        idx = cls(path)
        try:
            data = read_file(path, MAX_INDEX_FILE_BYTES)
        except FileNotFoundError:
            idx.persisted = None
            return idx, "missing"
        if len(data) % cls.entry.size:
            idx.persisted = None
            return idx, f"size {len(data)} is not a multiple of {cls.entry.size}"
        idx._parse(data)
        reason = idx._check(segment_size)
        if reason:
            bad = cls(path)
            bad.persisted = None
            return bad, reason
        idx.persisted = len(idx.keys)
        return idx, None

    def _parse(self, data: bytes) -> None:
        for k, v in self.entry.iter_unpack(data):
            self.keys.append(k)
            self.values.append(v)

    def _check(self, segment_size: int) -> str | None:
        raise NotImplementedError

    # --- appending --------------------------------------------------------------------------

    def open_for_append(self) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)

    def append(self, key: int, value: int) -> None:
        """Add an entry in memory and on disk. On a write error the file is cut back and the
        entry dropped: the index is sparse, so a missing entry only makes a lookup walk farther."""
        assert self.fd is not None
        before = len(self.keys) * self.entry.size
        try:
            write_all(self.fd, self.entry.pack(key, value))
        except OSError:
            # If this fails too, the misaligned file fails its size check at the next load.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, before)
            raise
        self.keys.append(key)
        self.values.append(value)
        if self.persisted is not None:
            self.persisted += 1

    def append_many(self, keys: list[int], values: list[int]) -> None:
        """`append` of each pair in order, in one write: the same file bytes. On a write error
        the file is cut back and none of them is added."""
        assert self.fd is not None
        before = len(self.keys) * self.entry.size
        pack = self.entry.pack
        try:
            write_all(self.fd, b"".join(pack(k, v) for k, v in zip(keys, values, strict=True)))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, before)
            raise
        self.keys.extend(keys)
        self.values.extend(values)
        if self.persisted is not None:
            self.persisted += len(keys)

    def keep(self, n: int) -> None:
        """Keep the first n entries, in memory and on disk."""
        if n >= len(self.keys):
            return
        del self.keys[n:]
        del self.values[n:]
        if self.persisted is None or self.persisted <= n:
            return  # the file is rewritten or extended later
        self.persisted = n
        size = n * self.entry.size
        if self.fd is not None:
            os.ftruncate(self.fd, size)
        else:
            try:
                os.truncate(self.path, size)
            except FileNotFoundError:
                self.persisted = None

    def _pack(self, start: int) -> bytes:
        pack = self.entry.pack
        pairs = zip(self.keys[start:], self.values[start:], strict=True)
        return b"".join(pack(k, v) for k, v in pairs)

    def rewrite(self) -> None:
        """Write the in-memory entries as the whole file (after a rebuild)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
        self._write(self._pack(0), os.O_TRUNC)

    def flush(self) -> None:
        """Bring the file up to the in-memory entries: append the new ones, or rewrite it all
        when its contents are unknown."""
        if self.persisted is None:
            self.rewrite()
            return
        if self.persisted == len(self.keys):
            return
        self._write(self._pack(self.persisted), os.O_APPEND)

    def _write(self, data: bytes, flag: int) -> None:
        """data to the open file, or to the file opened for this write only with `flag`
        (O_TRUNC: the whole file, O_APPEND: its end); then all entries are in the file."""
        if self.fd is not None:
            write_all(self.fd, data)
        else:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | flag, FILE_MODE)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        self.persisted = len(self.keys)

    def clear(self) -> None:
        self.keys = array(self.key_code)
        self.values = array(self.value_code)
        self.persisted = None

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class OffsetIndex(IndexFile):
    """key = batch base offset relative to the segment, value = file position of the batch."""

    entry = F.OFFSET_INDEX_ENTRY

    def _parse(self, data: bytes) -> None:
        # Fast path: the file is an array of u32 pairs.
        a = array("I")
        a.frombytes(data)
        if sys.byteorder != "little":
            a.byteswap()
        self.keys = a[0::2]
        self.values = a[1::2]

    def _check(self, segment_size: int) -> str | None:
        if not _increasing(self.keys, strict=True):
            return "offsets are not increasing"
        if not _increasing(self.values, strict=True):
            return "positions are not increasing"
        if self.values and self.values[-1] >= segment_size:
            return f"position {self.values[-1]} is past the segment end {segment_size}"
        return None

    def lookup(self, rel_offset: int) -> tuple[int, int]:
        """(relative offset, position) of the last entry at or before rel_offset, else (0, 0)."""
        i = bisect.bisect_right(self.keys, rel_offset) - 1
        if i < 0:
            return 0, 0
        return self.keys[i], self.values[i]

    def keep_below_position(self, position: int) -> None:
        self.keep(bisect.bisect_left(self.values, position))


class TimeIndex(IndexFile):
    """key = batch append time (ms), value = batch base offset relative to the segment."""

    entry = F.TIME_INDEX_ENTRY
    key_code = "q"

    def _check(self, segment_size: int) -> str | None:
        if not _increasing(self.keys, strict=False):
            return "append times go backwards"
        if not _increasing(self.values, strict=True):
            return "offsets are not increasing"
        return None

    def before(self, ts_ms: int) -> int | None:
        """Relative offset of the last entry with append time < ts_ms, or None."""
        i = bisect.bisect_left(self.keys, ts_ms) - 1
        return self.values[i] if i >= 0 else None

    def keep_below_offset(self, rel_offset: int) -> None:
        self.keep(bisect.bisect_left(self.values, rel_offset))
