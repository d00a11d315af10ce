"""Log compaction: keep the latest record of each key in a topic's sealed segments.

A cleaning of one partition has two halves:

1. **Off the loop** (a background thread, `edgebus/server/cleaning.py`), from a `CleanPlan` the
   loop took: read every segment of the plan through its own file descriptors (so nothing the
   loop owns is shared: retention may delete a file meanwhile, the fd keeps it readable), build
   the map key -> latest offset over all of them (the active segment's stable prefix included,
   since its records supersede older ones), then rewrite each sealed segment that has something to
   drop into `<segment>.log.cleaned.tmp`, fsynced. The I/O is paced by a `Throttle`.
2. **On the loop** (`Partition.replace_segment`): swap the cleaned file in by one rename.

What a cleaned segment holds (docs/FORMAT.md 4.8): every batch whose records all survive, byte for
byte (its CRC and producer fields untouched); for a batch that loses records, one new batch per
run of surviving records, at their original offsets and with their original bytes; and for each
run of removed offsets one **compacted-away batch** (a 64-byte header, attributes bit 3, with
record_count = the run's length and no records). Offsets therefore stay dense in every file, so
every reader, index, recovery check and the replica mirror work unchanged; a consumer receives no
records for those offsets and moves past them.

Rules: a record is dropped when a later record of the same key exists (in any segment of the
plan); a tombstone (null value) that is the latest of its key is dropped once its batch's append
time is older than `delete_retention_ms`; records in batches appended less than
`min_compaction_lag_ms` ago, and records without a key, are always kept. The active segment is
never rewritten.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import CorruptRecordError
from edgebus.log.cleanable import SegmentSnap
from edgebus.log.fileutil import FILE_MODE, unlink_quiet

CLEANED_SUFFIX = ".cleaned.tmp"  # ends in .tmp: recovery deletes a half-written one
READ_CHUNK = 1024 * 1024
MAX_KEYS = 2_000_000  # a plan whose keys exceed this is not cleaned (and says so)

_PREFIX = F.RECORD_PREFIX  # record_length, timestamp, key_length


@dataclass(frozen=True)
class CleanPlan:
    topic: str
    partition: int
    segments: tuple[SegmentSnap, ...]  # oldest first, the active one last
    now_ms: int
    delete_retention_ms: int
    min_compaction_lag_ms: int


@dataclass
class Cleaned:
    """One rewritten segment, ready for Partition.replace_segment."""

    base_offset: int
    cleaned_path: Path
    source_size: int
    new_size: int
    records_removed: int
    tombstones_removed: int


@dataclass
class CleanResult:
    topic: str
    partition: int
    segments: list[Cleaned] = field(default_factory=list)
    bytes_read: int = 0
    bytes_written: int = 0
    keys: int = 0
    # The earliest time a kept tombstone becomes removable (ms), or None: when to clean again
    # although nothing new was written.
    next_tombstone_expiry_ms: int | None = None
    skipped: str = ""  # why nothing was done, when that is not "nothing to drop"


class Throttle:
    """A token bucket over bytes read and written, so the cleaner never takes an SD card's
    whole bandwidth; stop() makes every wait end at once with CleaningStopped."""

    def __init__(self, bytes_per_s: int) -> None:
        self.rate = max(1, bytes_per_s)
        self.burst = max(READ_CHUNK, self.rate // 4)
        self.tokens = float(self.burst)
        self.at = time.monotonic()
        self.stopped = threading.Event()

    def spend(self, n: int) -> None:
        while True:
            if self.stopped.is_set():
                raise CleaningStopped()
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= min(n, self.burst):
                self.tokens -= n
                return
            self.stopped.wait((min(n, self.burst) - self.tokens) / self.rate)

    def set_rate(self, bytes_per_s: int) -> None:
        """A new rate from the next spend() on (a reload, from the loop thread: each field is
        one store, and spend() caps the tokens at the new burst)."""
        self.rate = max(1, bytes_per_s)
        self.burst = max(READ_CHUNK, self.rate // 4)

    def stop(self) -> None:
        self.stopped.set()


class CleaningStopped(Exception):
    """The supervisor is stopping: the cleaning is abandoned (its temp file removed)."""


def _batches(snap: SegmentSnap, throttle: Throttle, counter: list[int]) -> Iterator[bytes]:
    """The whole batches of a segment snapshot, read sequentially through a private fd."""
    fd = os.open(snap.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos, buf, bstart = 0, b"", 0
        while pos < snap.size:
            off = pos - bstart
            if off + F.BATCH_HEADER_SIZE > len(buf) or off + F.BATCH_PREFIX.unpack_from(buf, off)[2] > len(buf):
                want = min(max(READ_CHUNK, _length_at(fd, pos)), snap.size - pos)
                throttle.spend(want)
                buf = os.pread(fd, want, pos)
                counter[0] += len(buf)
                bstart, off = pos, 0
                if len(buf) < F.BATCH_HEADER_SIZE:
                    raise CorruptRecordError(f"{snap.path}: torn batch at byte {pos}")
            length = F.BATCH_PREFIX.unpack_from(buf, off)[2]
            if length < F.BATCH_HEADER_SIZE or off + length > len(buf):
                raise CorruptRecordError(f"{snap.path}: bad batch length {length} at byte {pos}")
            yield buf[off : off + length]
            pos += length
    finally:
        os.close(fd)


def _length_at(fd: int, pos: int) -> int:
    head = os.pread(fd, F.BATCH_PREFIX_SIZE, pos)
    return F.BATCH_PREFIX.unpack(head)[2] if len(head) == F.BATCH_PREFIX_SIZE else 0


def _records(batch: bytes) -> Iterator[tuple[int, int, bytes | None, bool, int]]:
    """(start, end, key, is_tombstone, timestamp) of each record of a whole batch; the batch's
    CRC is checked first, so the lengths are the producer's (checked at produce)."""
    B.validate_batch(batch)
    if B.is_compacted(batch) or batch[F.BATCH_ATTRIBUTES] & (F.ATTR_TRANSACTIONAL | F.ATTR_CONTROL):
        # A transaction's batches and markers are kept whole and supersede nothing: whether a
        # transactional record counts depends on its marker (docs/FORMAT.md 9.4).
        return
    count = F.BATCH_HEADER.unpack_from(batch, 0)[7]
    pos = F.BATCH_HEADER_SIZE
    i32 = F.I32  # value_length
    for _ in range(count):
        rlen, ts, klen = _PREFIX.unpack_from(batch, pos)
        p = pos + _PREFIX.size
        key = None
        if klen >= 0:
            key = batch[p : p + klen]
            p += klen
        vlen = i32.unpack_from(batch, p)[0]
        end = pos + F.RECORD_LENGTH_SIZE + rlen
        yield pos, end, key, vlen < 0, ts
        pos = end


def key_map(plan: CleanPlan, throttle: Throttle, counter: list[int]) -> dict[bytes, int]:
    """key -> the offset of its latest record, over every segment of the plan."""
    latest: dict[bytes, int] = {}
    for snap in plan.segments:
        for batch in _batches(snap, throttle, counter):
            off = F.BATCH_PREFIX.unpack_from(batch, 0)[0]
            for _s, _e, key, _t, _ts in _records(batch):
                if key is not None:
                    latest[key] = off
                off += 1
            if len(latest) > MAX_KEYS:
                raise _TooManyKeys(len(latest))
    return latest


class _TooManyKeys(Exception):
    pass


class _Writer:
    """The cleaned segment's bytes, written as they come (paced), with the pending run of
    removed offsets merged into one compacted-away batch."""

    def __init__(self, path: Path, throttle: Throttle) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        self.throttle = throttle
        self.size = 0
        self.gap: list[int] | None = None  # [base, count, append_time]

    def keep(self, data: bytes | bytearray) -> None:
        self._flush_gap()
        self.throttle.spend(len(data))
        mv = memoryview(data)
        while mv:
            n = os.write(self.fd, mv)
            mv = mv[n:]
        self.size += len(data)

    def drop(self, offset: int, count: int, append_time: int) -> None:
        if self.gap is not None and self.gap[0] + self.gap[1] == offset:
            self.gap[1] += count
        else:
            self._flush_gap()
            self.gap = [offset, count, append_time]

    def _flush_gap(self) -> None:
        if self.gap is not None:
            base, count, atime = self.gap
            self.gap = None
            self.keep(B.build_compacted(base, count, atime, atime, atime))

    def finish(self) -> int:
        self._flush_gap()
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        return self.size

    def abandon(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        unlink_quiet(self.path)


def _rebuilt(batch: bytes, records: list[tuple[int, int, int]], base: int, append_time: int) -> bytes:
    """A new batch of some of `batch`'s records (start, end, timestamp), consecutive offsets from
    `base`: their bytes as they were, a new header and CRC."""
    first_ts = records[0][2]
    max_ts = max(r[2] for r in records)
    out = bytearray(B.build_batch([batch[s:e] for s, e, _ in records], first_ts, max_ts))
    B.stamp_batch(out, base, append_time)
    return bytes(out)


def clean_segment(snap: SegmentSnap, latest: dict[bytes, int], plan: CleanPlan,
                  throttle: Throttle, counter: list[int], expiry: list[int | None]
                  ) -> Cleaned | None:
    """Rewrite one sealed segment without its dropped records; None when nothing is dropped
    (no file written)."""
    tomb_cutoff = plan.now_ms - plan.delete_retention_ms
    lag_cutoff = plan.now_ms - plan.min_compaction_lag_ms
    path = snap.path.with_name(snap.path.name + CLEANED_SUFFIX)
    w = _Writer(path, throttle)
    removed = tombstones = 0
    try:
        for batch in _batches(snap, throttle, counter):
            base, atime = F.BATCH_PREFIX.unpack_from(batch, 0)[:2]
            if B.is_compacted(batch):
                w.drop(base, F.BATCH_HEADER.unpack_from(batch, 0)[7], atime)
                continue
            kept: list[tuple[int, int, int]] = []
            run_base = base
            changed = False
            off = base
            for s, e, key, tomb, ts in _records(batch):
                drop = False
                if key is not None and atime <= lag_cutoff:
                    if latest.get(key, off) != off:
                        drop = True
                    elif tomb:
                        if atime <= tomb_cutoff:
                            drop = True
                            tombstones += 1
                        else:
                            due = atime + plan.delete_retention_ms
                            expiry[0] = due if expiry[0] is None else min(expiry[0], due)
                if drop:
                    changed = True
                    removed += 1
                    if kept:
                        w.keep(_rebuilt(batch, kept, run_base, atime))
                        kept = []
                    w.drop(off, 1, atime)
                else:
                    if not kept:
                        run_base = off
                    kept.append((s, e, ts))
                off += 1
            if not changed:
                w.keep(batch)  # whole: its own bytes, CRC and producer fields
            elif kept:
                w.keep(_rebuilt(batch, kept, run_base, atime))
        if removed == 0 and not _merges_gaps(snap, w):
            w.abandon()
            return None
        size = w.finish()
    except BaseException:
        w.abandon()
        raise
    return Cleaned(snap.base_offset, path, snap.size, size, removed, tombstones)


def _merges_gaps(snap: SegmentSnap, w: _Writer) -> bool:
    """Whether a rewrite without removals still shrinks the file (adjacent compacted-away
    batches merged into one)."""
    return w.size + (F.BATCH_HEADER_SIZE if w.gap is not None else 0) < snap.size


def clean(plan: CleanPlan, throttle: Throttle) -> CleanResult:
    """Run a whole plan (off the loop). The cleaned files are left for the loop to swap in."""
    result = CleanResult(plan.topic, plan.partition)
    counter = [0]
    try:
        latest = key_map(plan, throttle, counter)
    except _TooManyKeys as e:
        result.skipped = f"more than {MAX_KEYS} keys ({e.args[0]}+): not compacted"
        result.bytes_read = counter[0]
        return result
    result.keys = len(latest)
    expiry: list[int | None] = [None]
    try:
        for snap in plan.segments:
            if not snap.cleanable:
                continue
            done = clean_segment(snap, latest, plan, throttle, counter, expiry)
            if done is not None:
                result.segments.append(done)
                result.bytes_written += done.new_size
    except BaseException:
        for c in result.segments:
            unlink_quiet(c.cleaned_path)
        raise
    result.bytes_read = counter[0]
    result.next_tombstone_expiry_ms = expiry[0]
    return result
