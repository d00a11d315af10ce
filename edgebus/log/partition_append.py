"""Appending to a Partition: local batches (stamped here), a mirror's batches (as their source
stamped them) and a mirror's gap records; rolling to a new segment, and undoing a failed write.

`_Appends` is a mixin of `Partition` (edgebus/log/partition.py, whose docstring gives the
invariants); the state it uses is declared in partition_state.py.
"""

from __future__ import annotations

import os

from edgebus import format as F
from edgebus.batch import BatchInfo
from edgebus.errors import (
    CorruptRecordError,
    EdgebusError,
    InvalidRequestError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    ReplicaDivergedError,
)
from edgebus.log import gaps
from edgebus.log.fileutil import DISK_FULL_ERRNOS, errno_text, storage_error
from edgebus.log.gaps import Gap
from edgebus.log.partition_state import _PartitionState
from edgebus.log.segment import U32_MAX, Segment

_stamp_into = F.BATCH_STAMP.pack_into  # the supervisor's fields (outside the CRC), in place

# The last batch a producer appended is kept (copied) when at most this large: a consumer's fetch
# that arrives just after the append (a socket consumer's next FETCH, a standing fetch re-armed
# after its consumer fell one batch behind) reads it from memory instead of with pread and the
# segment's scan. Small: it bounds what each partition holds for good (1,000 partitions: 4 MiB
# at most), and the one-record requests this is for are far below it.
TAIL_BATCH_BYTES = 4 * 1024


class _Appends(_PartitionState):
    """Partition's appends."""

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
        base = self.log_end_offset
        # _should_roll's tests, without the call (one-record appends make this the common path)
        if seg.size and (seg.size + n > cfg.segment_bytes
                         or (seg.first_append_time is not None
                             and append_time - seg.first_append_time > cfg.segment_ms)
                         or base + count - 1 - seg.base_offset > U32_MAX):
            self._roll()
            seg = self._segments[-1]
        t = type(batch)
        if t is not bytearray and (batch.readonly if t is memoryview  # type: ignore[union-attr]
                                   else memoryview(batch).readonly):
            batch = bytearray(batch)  # bytes, or a read-only view: stamp a copy
        _stamp_into(batch, 0, base, append_time)  # batch.stamp_batch, without the call
        # _write, with the segment's write and index note in one call (Segment.append_batch)
        pos = seg.size
        try:
            err = seg.append_batch(batch, base, append_time, cfg.index_interval_bytes)
        except OSError as e:
            self._undo_write(seg, pos, e)
            if self.offline:  # the file and errno, as every later append will say
                raise self._offline_error() from e
            raise storage_error(e, f"appending to {seg.log_path}") from e
        self._gen = gen = self._gen + 1
        seg.last_write_gen = gen
        self._unsynced[seg.base_offset] = seg
        if err is not None:
            self._log.warning("%s: index entry for offset %d skipped: %s", self.name, base, err)
        self.log_end_offset = base + count
        self._max_append_time = append_time
        self._tail = (base, base + count, bytes(batch)) if n <= TAIL_BATCH_BYTES else None
        return base, append_time

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
            raise self._offline_error()
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
            raise self._offline_error()
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
            if self.offline:  # the file and errno, as every later append will say
                raise self._offline_error() from e
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
        """Cut a failed append back so that no partial batch stays in the file; any error but
        a full disk takes the partition offline (write_failed)."""
        try:
            assert seg.fd is not None
            os.ftruncate(seg.fd, pos)
        except OSError as e:
            self._go_offline(f"cannot cut a failed append back to byte {pos} of {seg.log_path}: "
                             f"{errno_text(e.errno)}", e.errno)
        seg.size = pos
        self._gen += 1
        seg.last_write_gen = self._gen
        self._unsynced[seg.base_offset] = seg
        self.write_failed(err.errno)

    def write_failed(self, err: int | None) -> None:
        """A write to the active segment failed with errno `err` (cut back by the caller: this
        path, or the C data plane). A full disk (ENOSPC, EDQUOT) is retriable: the partition
        stays online and the producer gets DiskFullError. Any other error (EIO from a failing
        card, EROFS) takes it offline until a restart, whose recovery checks the tail: a write
        that failed once may have left anything in the page cache or on the card, and a retry
        that succeeds proves nothing about the bytes before it. So nothing is acknowledged
        after it (durable waiters of earlier batches fail too: their fsync would cover the
        failed range)."""
        if err in DISK_FULL_ERRNOS:
            return
        self._go_offline(f"write error on {self._active.log_path}: {errno_text(err)}", err)

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
