"""One partition of a topic: a run of segments in `data_dir/<topic>-<partition>/`, the last active.

Used from the supervisor's loop thread only, except SyncTicket.run (a helper thread).

Invariants:
- offsets are dense and never reused: log_end_offset only grows, and survives every segment being
  deleted because the active segment's file name carries its base offset;
- append times never decrease within the partition (the clock of a Pi may jump back);
- the recovery point only advances after a successful fsync of everything before it, and never
  again after a failed one (the partition goes offline instead).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

from edgebus import format as F
from edgebus.batch import BatchInfo
from edgebus.errors import (
    ClosedError,
    CorruptRecordError,
    EdgebusError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    ReplicaDivergedError,
    StorageError,
)
from edgebus.log import gaps
from edgebus.log.checkpoint import RecoveryPoint
from edgebus.log.cleaner import SegmentSnap
from edgebus.log.fileutil import DIR_MODE, DISK_FULL_ERRNOS, storage_error, unlink_quiet
from edgebus.log.gaps import Gap
from edgebus.log.log_start import read_log_start, write_log_start
from edgebus.log.recovery import RecoveryReport, recover
from edgebus.log.segment import U32_MAX, Segment, SegmentInfo
from edgebus.log.sync import SyncTicket
from edgebus.log.topic_config import TopicConfig

_stamp_into = F.BATCH_STAMP.pack_into  # the supervisor's fields (outside the CRC), in place

# Read fds kept open per partition for old segments (least recently used are closed first).
MAX_OPEN_READ_FDS = 8
# The last batch a producer appended is kept (copied) when at most this large: a consumer's fetch
# that arrives just after the append (a socket consumer's next FETCH, a standing fetch re-armed
# after its consumer fell one batch behind) reads it from memory instead of with pread and the
# segment's scan. Small: it bounds what each partition holds for good (1,000 partitions: 4 MiB
# at most), and the one-record requests this is for are far below it.
TAIL_BATCH_BYTES = 4 * 1024


class Partition:
    topic: str
    partition: int
    path: Path
    config: TopicConfig
    log_start_offset: int  # first offset still on disk
    log_end_offset: int  # next offset to assign
    offline: bool  # set after an I/O failure; appends then raise StorageError

    def __init__(
        self, path: Path, topic: str, partition: int, config: TopicConfig,
        segments: list[Segment], log_end_offset: int, max_append_time: int,
        synced: RecoveryPoint, dirty: list[Segment], dir_changed: bool, dir_fd: int,
        log: logging.Logger, report: RecoveryReport | None = None,
    ) -> None:
        self.path = path
        self.topic = topic
        self.partition = partition
        self.config = config
        self.name = f"{topic}-{partition}"
        self._log = log
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        # DeleteRecords' floor inside the first segment (log_start.py); 0 when none.
        self._start_floor = read_log_start(path, log) or 0
        self.log_start_offset = min(max(segments[0].base_offset, self._start_floor),
                                    log_end_offset)
        self.log_end_offset = log_end_offset
        self._max_append_time = max_append_time
        self.offline = False
        self._closed = False
        self._dir_fd = dir_fd
        # Write generations: every change bumps _gen; a ticket covers changes up to its gen.
        self._gen = 1
        self._unsynced: dict[int, Segment] = {}
        for seg in dirty:
            seg.last_write_gen = self._gen
            self._unsynced[seg.base_offset] = seg
        self._dir_dirty_gen = self._gen if dir_changed else 0
        self._dir_synced_gen = 0
        self._synced = (synced.segment_base, synced.position, synced.next_offset)
        self._lru: OrderedDict[int, Segment] = OrderedDict()
        self.recovery_report = report
        # A mirror's recorded gaps: offsets its source never shipped (edgebus/log/gaps.py).
        self.gaps: list[Gap] = gaps.load(path)
        # (base offset, log end after it, its stamped bytes) of the last batch `append` wrote,
        # if small: valid while the log end is still that one (see `read`).
        self._tail: tuple[int, int, bytes] | None = None

    @classmethod
    def open(
        cls, path: Path | str, topic: str, partition: int, config: TopicConfig,
        recovery_point: RecoveryPoint | None = None, log: logging.Logger | None = None,
    ) -> Partition:
        """Open the partition directory (creating it if needed) and run recovery."""
        path = Path(path)
        log = log or logging.getLogger("edgebus.log")
        name = f"{topic}-{partition}"
        try:
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            rec = recover(path, name, recovery_point, config.index_interval_bytes, log)
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise storage_error(e, f"recovering {name} in {path}") from e
        return cls(
            path, topic, partition, config, rec.segments, rec.log_end_offset,
            rec.max_append_time, rec.synced, rec.dirty, rec.dir_changed, dir_fd, log, rec.report,
        )

    def __repr__(self) -> str:
        return (f"Partition({self.name}, start={self.log_start_offset}, "
                f"end={self.log_end_offset}, segments={len(self._segments)})")

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def segment_bases(self) -> list[int]:
        """Base offsets of the segments, oldest first (the last is the active one)."""
        return list(self._bases)

    def oldest_segment(self) -> SegmentInfo | None:
        """The oldest segment, or None when it is the active one (nothing may be dropped)."""
        if len(self._segments) <= 1:
            return None
        seg = self._segments[0]
        try:
            mtime: float | None = os.stat(seg.log_path).st_mtime
        except OSError:
            mtime = None
        return SegmentInfo(seg.base_offset, seg.log_path.name, seg.size, mtime)

    @property
    def synced_offset(self) -> int:
        """Every offset below this one is fsynced (what acks="durable" may acknowledge)."""
        return self._synced[2]

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    # --- writing ----------------------------------------------------------------------------

    def append(
        self, batch: bytearray | memoryview | bytes, info: BatchInfo, now_ms: int
    ) -> tuple[int, int]:
        """Stamp and append one validated batch; return (base_offset, append_time).

        The stamp is written into `batch` itself when it is writable (no copy); a read-only
        buffer is copied first."""
        n = len(batch)
        if self._closed or self.offline or n != info.length:
            self._writable(batch, info)  # raises what is wrong
        cfg = self.config
        if n > cfg.max_message_bytes:
            raise RecordTooLargeError(
                f"batch of {n} bytes exceeds max_message_bytes={cfg.max_message_bytes}"
                f" of topic {self.topic}"
            )
        count = info.record_count
        append_time = now_ms if now_ms > self._max_append_time else self._max_append_time
        seg = self._segments[-1]  # the active one
        if seg.size and self._should_roll(seg, n, count, append_time):
            self._roll()
        base = self.log_end_offset
        t = type(batch)
        if t is not bytearray and (batch.readonly if t is memoryview  # type: ignore[union-attr]
                                   else memoryview(batch).readonly):
            batch = bytearray(batch)  # bytes, or a read-only view: stamp a copy
        _stamp_into(batch, 0, base, append_time)  # batch.stamp_batch, without the call
        self._write(batch, base, append_time, count)
        self._tail = (base, base + count, bytes(batch)) if n <= TAIL_BATCH_BYTES else None
        return base, append_time

    def tail_batch(self, offset: int) -> bytes | None:
        """The last batch `append` wrote (stamped), when it starts at `offset`, is still the log's
        last and was small enough to keep (TAIL_BATCH_BYTES); else None. What `read(offset, n,
        True)` would return then, for any n."""
        tail = self._tail
        if (tail is None or tail[0] != offset or tail[1] != self.log_end_offset or self._closed
                or offset < self.log_start_offset):
            return None
        return tail[2]

    def append_replica(self, batch: bytes | bytearray | memoryview, info: BatchInfo) -> bool:
        """Append one validated batch of a mirror exactly as its source stamped it (offsets and
        append time kept). True if appended; False if the mirror already holds this very batch
        (same offset, length and CRC: a resend after a lost answer). Raises ReplicaDivergedError
        when it holds other bytes there, OffsetOutOfRangeError when the batch would leave a gap.

        Invariant: a mirror's log is a prefix of its source's, batch for batch; the replicator's
        cursor is this partition's log end (docs/REPLICATION.md)."""
        n = self._writable(batch, info)
        base = info.base_offset
        if base < self.log_end_offset:
            self._check_same(batch, info)
            return False
        if base > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"replica batch at offset {base} would leave a gap in {self.name}, whose log end "
                f"is {self.log_end_offset}")
        count = info.record_count
        seg = self._segments[-1]
        if seg.size and self._should_roll(seg, n, count, info.append_time):
            self._roll()
        self._write(batch, base, max(info.append_time, self._max_append_time), count)
        return True

    def append_gap(self, start: int, end: int, reason: int, now_ms: int) -> bool:
        """Record that a mirror's offsets start..end-1 will never come (its source deleted them
        before they were shipped, or they were past the link's max_age) and move the log end to
        `end`, so the mirror's offsets stay its source's. True if recorded; False if this very
        gap is already recorded (a resend). The record is durable before the log end moves: a
        crash in between leaves the record and the old log end, and the resend completes it.

        Invariant: the offsets a mirror skips are exactly those of its gap records."""
        self._check_open()
        if self.offline:
            raise StorageError(f"{self.name} is offline after an I/O error")
        if end <= start:
            raise InvalidRequestError(f"a gap needs start < end, got {start}..{end}")
        if start < self.log_end_offset:
            if any(g.start == start and g.end == end for g in self.gaps):
                return False
            raise ReplicaDivergedError(
                f"{self.name} holds offsets up to {self.log_end_offset - 1}: no gap "
                f"{start}..{end - 1} can be recorded there")
        if start > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"a gap from offset {start} would leave offsets {self.log_end_offset}..{start - 1} "
                f"of {self.name} unaccounted for")
        new = [*self.gaps, Gap(start, end, now_ms, reason)]
        try:
            gaps.store(self.path, new)
        except OSError as e:
            raise storage_error(e, f"recording a gap of {self.name}") from e
        self.gaps = new
        old_end, self.log_end_offset = self.log_end_offset, end
        try:
            self._roll()  # the next batch goes to a segment named for `end`
        except EdgebusError:
            self.log_end_offset = old_end
            raise
        self._log.warning("%s: gap recorded: %s", self.name, new[-1].describe())
        return True

    def _writable(self, batch: bytes | bytearray | memoryview, info: BatchInfo) -> int:
        """The batch's length, once the partition may take it and its header agrees."""
        if self._closed:
            self._check_open()
        if self.offline:
            raise StorageError(f"{self.name} is offline after an I/O error")
        n = len(batch)
        if n != info.length:
            raise CorruptRecordError(f"batch is {n} bytes but its header says {info.length}")
        return n

    def _check_same(self, batch: bytes | bytearray | memoryview, info: BatchInfo) -> None:
        """ReplicaDivergedError unless the batch at info.base_offset is this one."""
        if info.base_offset < self.log_start_offset:
            return  # retention already dropped it here too: nothing left to compare
        gap = next((g for g in self.gaps if g.start <= info.base_offset < g.end), None)
        if gap is not None:
            raise ReplicaDivergedError(
                f"{self.name} holds no batch at offset {info.base_offset}: {gap.describe()} "
                "(a gap record)")
        have = memoryview(self.read(info.base_offset, info.length, True))
        if len(have) < F.BATCH_HEADER_SIZE:
            raise ReplicaDivergedError(f"{self.name} holds no batch at offset {info.base_offset}")
        b0, _, l0, c0 = F.BATCH_OUTSIDE_CRC.unpack_from(have, 0)
        b1, _, l1, c1 = F.BATCH_OUTSIDE_CRC.unpack_from(batch, 0)
        if (b0, l0, c0) != (b1, l1, c1):
            raise ReplicaDivergedError(
                f"{self.name} holds a different batch at offset {info.base_offset}: base offset "
                f"{b0}, {l0} bytes, CRC {c0:#010x} here; base offset {b1}, {l1} bytes, CRC "
                f"{c1:#010x} sent")

    def _write(self, batch: bytes | bytearray | memoryview, base: int, append_time: int,
               count: int) -> None:
        """Write one stamped batch at the log end of the active segment and index it."""
        n = len(batch)
        seg = self._active
        pos = seg.size
        try:
            seg.write(batch)
        except OSError as e:
            self._undo_write(seg, pos, e)
            raise storage_error(e, f"appending to {seg.log_path}") from e
        self._gen += 1
        seg.last_write_gen = self._gen
        self._unsynced[seg.base_offset] = seg
        err = seg.note_batch(pos, base, append_time, n, self.config.index_interval_bytes, True)
        if err is not None:
            self._log.warning("%s: index entry for offset %d skipped: %s", self.name, base, err)
        self.log_end_offset = base + count
        self._max_append_time = append_time

    def _should_roll(self, seg: Segment, n: int, count: int, append_time: int) -> bool:
        cfg = self.config
        if seg.size + n > cfg.segment_bytes:
            return True
        first = seg.first_append_time
        if first is not None and append_time - first > cfg.segment_ms:
            return True
        return self.log_end_offset + count - 1 - seg.base_offset > U32_MAX

    def _undo_write(self, seg: Segment, pos: int, err: OSError) -> None:
        """Cut a failed append back so that no partial batch stays in the file."""
        try:
            assert seg.fd is not None
            os.ftruncate(seg.fd, pos)
        except OSError as e:
            self._go_offline(f"cannot cut a failed append back to byte {pos}: {e}")
        seg.size = pos
        self._gen += 1
        seg.last_write_gen = self._gen
        self._unsynced[seg.base_offset] = seg
        if err.errno not in DISK_FULL_ERRNOS:
            self._go_offline(f"write error: {err}")

    def _roll(self) -> None:
        old = self._active
        try:
            new = Segment.create(self.path, self.log_end_offset, self._log)
        except OSError as e:
            raise storage_error(e, f"rolling a new segment of {self.name}") from e
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._dir_changed()
        old.forget_recent()
        if old.base_offset not in self._unsynced:
            old.close_index_writers()
            self._touch(old)

    def _dir_changed(self) -> None:
        self._gen += 1
        self._dir_dirty_gen = self._gen

    def _go_offline(self, why: str) -> None:
        if not self.offline:
            self.offline = True
            self._log.error("%s is offline: %s; restart the supervisor to run recovery",
                            self.name, why)

    # --- reading ----------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, at_least_one: bool = True) -> bytes:
        """Whole batches from the one holding `offset`, up to max_bytes; with at_least_one, the
        first batch even if it alone exceeds max_bytes (so a huge batch still makes progress).

        Damage is a typed error at its offsets, never records at wrong offsets: the read stops
        before a damaged batch or a gap (offsets whose batches recovery moved aside, between two
        segments), and a read that starts in one raises CorruptRecordError with `next_offset`,
        the first offset after it."""
        self._check_open()
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range for {self.name}: log start "
                f"{self.log_start_offset}, log end {self.log_end_offset}"
            )
        if offset == self.log_end_offset:
            return b""
        tail = self._tail
        if tail is not None and tail[0] == offset and tail[1] == self.log_end_offset:
            # The last batch, nothing after it: what the segment read below would return.
            data = tail[2]
            return data if at_least_one or len(data) <= max_bytes else b""
        interval = self.config.index_interval_bytes
        segs = self._segments
        i = bisect.bisect_right(self._bases, offset) - 1
        parts: list[bytes] = []
        budget = max(max_bytes, 0)
        try:
            while i < len(segs):
                seg = segs[i]
                try:
                    data, at_end, after = seg.read(offset, budget, at_least_one and not parts,
                                                   interval)
                except CorruptRecordError as e:
                    if parts:
                        break  # deliver what lies before the damage; the next read raises
                    raise self._damaged(offset, e) from None
                self._touch(seg)
                if not data and at_end and not parts:
                    raise self._gap(offset, after, i)
                if data:
                    parts.append(data)
                    budget -= len(data)
                if not at_end or budget < F.BATCH_HEADER_SIZE:
                    break
                i += 1
                if i < len(segs):
                    if segs[i].base_offset != after:
                        break  # a gap follows: stop before it
                    offset = after
        except OSError as e:
            raise storage_error(e, f"reading {self.name}") from e
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _damaged(self, offset: int, e: CorruptRecordError) -> CorruptRecordError:
        nxt = e.next_offset
        skip = f"; seek to {nxt} to skip it" if nxt is not None else ""
        return CorruptRecordError(f"{self.name} at offset {offset}: {e}{skip}", topic=self.topic,
                                  partition=self.partition, offset=offset, next_offset=nxt)

    def _gap(self, offset: int, start: int, i: int) -> CorruptRecordError:
        """`offset` lies past the last batch of segment i and before the next segment: offsets
        whose batches recovery moved aside (their segment ends early)."""
        nxt = self._bases[i + 1] if i + 1 < len(self._bases) else self.log_end_offset
        gap = next((g for g in self.gaps if g.start <= offset < g.end), None)
        if gap is not None:
            return CorruptRecordError(
                f"{self.name} at offset {offset}: {gap.describe()} (a mirror's gap record); "
                f"seek to {gap.end} to skip them", topic=self.topic, partition=self.partition,
                offset=offset, next_offset=gap.end)
        return CorruptRecordError(
            f"{self.name} at offset {offset}: offsets {start}..{nxt - 1} were damaged or lost on "
            f"disk (recovery's WARNING in the supervisor's log says which bytes it set aside in "
            f".corrupt files); seek to {nxt} to skip them",
            topic=self.topic, partition=self.partition, offset=offset, next_offset=nxt)

    def at_end(self, offset: int) -> bool:
        """Whether read(offset, ...) would return no data and raise nothing, known without
        reading: `offset` is the log end of an open partition (a caught-up consumer's fetch)."""
        return offset == self.log_end_offset and not self._closed

    def offset_for_timestamp(self, ts_ms: int) -> tuple[int, int] | None:
        """(offset, append_time) of the first batch with append_time >= ts_ms, or None."""
        self._check_open()
        interval = self.config.index_interval_bytes
        segs = self._segments
        try:
            # Append times never decrease, so the segment is found by bisection.
            lo, hi = 0, len(segs)
            while lo < hi:
                mid = (lo + hi) // 2
                t = segs[mid].last_append_time(interval)
                self._touch(segs[mid])
                if t is not None and t >= ts_ms:
                    hi = mid
                else:
                    lo = mid + 1
            if lo == len(segs):
                return None
            found = segs[lo].find_time(ts_ms, interval)
            if found is not None and found[0] < self.log_start_offset:  # below DeleteRecords'
                return self.log_start_offset, found[1]
            return found
        except OSError as e:
            raise storage_error(e, f"searching {self.name} by time") from e

    def _touch(self, seg: Segment) -> None:
        """Keep at most MAX_OPEN_READ_FDS read fds of clean old segments open."""
        if seg is self._active or seg.base_offset in self._unsynced or seg.fd is None:
            return
        self._lru[seg.base_offset] = seg
        self._lru.move_to_end(seg.base_offset)
        while len(self._lru) > MAX_OPEN_READ_FDS:
            _, old = self._lru.popitem(last=False)
            old.close_fd()

    # --- durability -------------------------------------------------------------------------

    def begin_sync(self) -> SyncTicket | None:
        """A ticket fsyncing every change not yet covered by a completed sync, or None if there
        is none. Also None when offline: nothing can become durable any more, so callers must
        check `offline` before acknowledging (a None is not a success then)."""
        self._check_open()
        if self.offline:
            return None
        return self._ticket(all_indexes=False)

    def _ticket(self, all_indexes: bool) -> SyncTicket | None:
        """all_indexes (at close): the active segment's index files too, even if clean."""
        dir_dirty = self._dir_dirty_gen > self._dir_synced_gen
        if not self._unsynced and not dir_dirty and not all_indexes:
            return None
        segs = dict(self._unsynced)
        if all_indexes:
            segs.setdefault(self._active.base_offset, self._active)
        fds: list[int] = []
        try:
            for seg in segs.values():
                # Index files are derived data, checked and rebuilt at recovery: the active
                # segment's are fsynced only at close, a rolled segment's once after its roll.
                fds.extend(seg.dup_fds(all_indexes or seg is not self._active))
            if dir_dirty:
                fds.append(os.dup(self._dir_fd))
        except OSError as e:
            SyncTicket(fds, 0, 0, 0, 0).discard()
            raise storage_error(e, f"preparing an fsync of {self.name}") from e
        active = self._active
        return SyncTicket(
            fds, active.base_offset, active.size, self.log_end_offset, self._gen,
            list(self._unsynced), dir_dirty, self,
        )

    def complete_sync(self, ticket: SyncTicket) -> None:
        """The ticket ran without error: advance the synced point."""
        if ticket.owner is not self:
            raise ValueError("ticket belongs to another partition")
        if self.offline or self._closed:
            return  # never turn anything into success after a failure
        point = (ticket.segment_base, ticket.position)
        # A ticket whose segment retention deleted meanwhile covers nothing that is left.
        if point > self._synced[:2] and ticket.segment_base >= self.log_start_offset:
            self._synced = (ticket.segment_base, ticket.position, ticket.next_offset)
        for base in ticket.segment_bases:
            seg = self._unsynced.get(base)
            if seg is not None and seg.last_write_gen <= ticket.gen:
                del self._unsynced[base]
                if seg is not self._active:
                    seg.close_index_writers()
                    self._touch(seg)
        if ticket.covers_dir:
            self._dir_synced_gen = max(self._dir_synced_gen, ticket.gen)

    def fail_sync(self, ticket: SyncTicket, err: OSError) -> None:
        """The ticket's fsync failed: the partition goes offline (never retried into success)."""
        ticket.discard()
        self._go_offline(f"fsync failed: {err}")

    def recovery_point(self) -> RecoveryPoint:
        seg_base, position, next_offset = self._synced
        return RecoveryPoint(seg_base, position, next_offset, self.log_start_offset,
                             self._max_append_time)

    # --- compaction (edgebus/log/cleaner.py) ------------------------------------------------

    def compaction_view(self) -> list[SegmentSnap]:
        """The segments as the cleaner may read them, oldest first, the active one last (its
        bytes so far). Cleanable: sealed, fsynced and wholly below the recovery point, so the
        checkpoint never points into a file that a cleaning rewrites."""
        self._check_open()
        active = self._active
        return [SegmentSnap(s.base_offset, s.log_path, s.size,
                            s is not active and s.base_offset < self._synced[0]
                            and s.base_offset not in self._unsynced)
                for s in self._segments]

    def replace_segment(self, base_offset: int, cleaned: Path, source_size: int) -> bool:
        """Swap a sealed segment for its cleaned copy, by one rename; False (and the copy
        deleted) when the segment changed meanwhile (deleted by retention, or not cleanable any
        more). Its index files are deleted first: a crash then leaves either file with no index,
        and indexes are rebuilt from the log (lazily, on the first read)."""
        self._check_open()
        i = bisect.bisect_left(self._bases, base_offset)
        seg = self._segments[i] if i < len(self._segments) else None
        if (seg is None or seg.base_offset != base_offset or seg is self._active
                or seg.size != source_size or base_offset >= self._synced[0]
                or base_offset in self._unsynced or self.offline):
            unlink_quiet(cleaned)
            return False
        try:
            unlink_quiet(seg.index_path)
            unlink_quiet(seg.timeindex_path)
            seg.close()
            self._lru.pop(base_offset, None)
            os.rename(cleaned, seg.log_path)
            size = os.stat(seg.log_path).st_size
        except OSError as e:
            unlink_quiet(cleaned)
            raise storage_error(e, f"swapping in the cleaned segment of {self.name}") from e
        self._segments[i] = Segment(self.path, base_offset, size, self._log)
        self._dir_changed()  # the next sync ticket fsyncs the directory (the fsync thread)
        return True

    # --- retention --------------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole old segments by time and by size; return how many were deleted. Only
        when the topic's cleanup_policy includes "delete" (a compacted topic keeps its keys)."""
        self._check_open()
        cfg = self.config
        deleted = 0
        if not cfg.expires:
            return 0
        try:
            if cfg.retention_ms >= 0:
                cutoff = now_ms - cfg.retention_ms
                while True:
                    oldest = self._segments[0]
                    # The largest append time, not producer timestamps: a producer with a
                    # far-future clock cannot keep (or expire) data.
                    t = oldest.last_append_time(cfg.index_interval_bytes)
                    self._touch(oldest)
                    if t is None and oldest.size == 0 and len(self._segments) > 1:
                        # Emptied by recovery (its batches moved aside): it marks their offsets
                        # as damaged, and goes with the segment after it.
                        t = self._segments[1].last_append_time(cfg.index_interval_bytes)
                        self._touch(self._segments[1])
                        if t is None or t >= cutoff:
                            break
                        self._delete_oldest()
                        deleted += 1
                        continue
                    if t is None or t >= cutoff:
                        break
                    if len(self._segments) == 1:
                        self._roll()  # all expired: an empty active segment keeps log_end_offset
                    self._delete_oldest()
                    deleted += 1
            if cfg.retention_bytes >= 0:
                while (len(self._segments) > 1
                       and self.size_bytes - self._segments[0].size >= cfg.retention_bytes):
                    self._delete_oldest()
                    deleted += 1
        except OSError as e:
            raise storage_error(e, f"applying retention to {self.name}") from e
        return deleted

    def delete_records(self, offset: int) -> int:
        """Move the log start up to `offset` (Kafka's DeleteRecords): offsets below it are no
        longer readable, and segments wholly below it are deleted. The new start is stored
        durably before this returns (log_start.py). Returns the log start."""
        self._check_open()
        if offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"cannot delete records of {self.name} up to {offset}: the log ends at "
                f"{self.log_end_offset}")
        if offset <= self.log_start_offset:
            return self.log_start_offset
        try:
            write_log_start(self.path, offset)
            self._start_floor = offset
            self.log_start_offset = offset
            while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
                self._delete_oldest()
        except OSError as e:
            raise storage_error(e, f"deleting records of {self.name} below {offset}") from e
        return self.log_start_offset

    def delete_oldest_segment(self) -> bool:
        """Delete the oldest segment unless it is the active one (disk-full drop-oldest)."""
        self._check_open()
        if len(self._segments) <= 1:
            return False
        try:
            self._delete_oldest()
        except OSError as e:
            raise storage_error(e, f"deleting the oldest segment of {self.name}") from e
        return True

    def _delete_oldest(self) -> None:
        seg = self._segments[0]
        seg.delete()
        del self._segments[0]
        del self._bases[0]
        self._unsynced.pop(seg.base_offset, None)
        self._lru.pop(seg.base_offset, None)
        first = self._segments[0].base_offset
        self.log_start_offset = max(first, self._start_floor)
        self._dir_changed()
        if self._synced[0] < first:
            # The synced point was in the deleted segment: nothing left is known to be synced.
            self._synced = (first, 0, first)

    # --- closing ----------------------------------------------------------------------------

    def close(self, sync: bool = True) -> None:
        """fsync what is unsynced (unless sync=False or offline), then close every fd."""
        if self._closed:
            return
        err: EdgebusError | None = None
        if sync and not self.offline:
            ticket = self._ticket(all_indexes=True)
            if ticket is not None:
                try:
                    ticket.run()
                except OSError as e:
                    self.fail_sync(ticket, e)
                    err = storage_error(e, f"fsync of {self.name} at close")
                else:
                    self.complete_sync(ticket)
        self._close_fds()
        if err is not None:
            raise err

    def abandon(self) -> None:
        """Close every fd without syncing: what kill -9 does. For crash tests."""
        if not self._closed:
            self._close_fds()

    def _close_fds(self) -> None:
        self._closed = True
        for seg in self._segments:
            with contextlib.suppress(OSError):
                seg.close()
        self._lru.clear()
        with contextlib.suppress(OSError):
            os.close(self._dir_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"partition {self.name} is closed")
