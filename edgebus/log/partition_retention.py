"""Removing old data from a Partition: retention by time and size, Kafka's DeleteRecords, the
disk-full drop of the oldest segment, and the cleaner's view and swap of compacted segments
(edgebus/log/cleaner.py).

`_Retention` is a mixin of `Partition` (edgebus/log/partition.py, whose docstring gives the
invariants); the state it uses is declared in partition_state.py.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

from edgebus.errors import OffsetOutOfRangeError
from edgebus.log.cleanable import SegmentSnap  # not the cleaner: made at first use
from edgebus.log.fileutil import storage_error, unlink_quiet
from edgebus.log.log_start import write_log_start
from edgebus.log.partition_state import _PartitionState
from edgebus.log.segment import Segment

# Append times before this were stamped by a clock that was never set: a board without a
# real-time clock starts at 1970 (or its image's date) and stays there while no NTP server is
# reachable, often the very outage during which it records the most. Retention by time must not
# read those times as the records' age, or setting the clock deletes them all at once; such a
# segment is aged by the first append time after it that a set clock made (the records are no
# older than that), and kept while there is none. 2025-01-01, before any edgebus release.
UNSET_CLOCK_BEFORE_MS = 1_735_689_600_000


class _Retention(_PartitionState):
    """Partition's retention, DeleteRecords and compaction hooks."""

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
                    t = self._retention_time(0, cfg.index_interval_bytes,
                                             now_ms >= UNSET_CLOCK_BEFORE_MS)
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

    def _retention_time(self, i: int, interval: int, clock_set: bool) -> int | None:
        """The append time that ages segment i for retention (see UNSET_CLOCK_BEFORE_MS). While
        the clock itself is unset, every time is of the same unset clock: taken as it is."""
        t = self._segments[i].last_append_time(interval)
        self._touch(self._segments[i])
        if t is None or t >= UNSET_CLOCK_BEFORE_MS or not clock_set:
            return t
        for seg in self._segments[i + 1:]:
            later = seg.last_append_time(interval)
            self._touch(seg)
            if later is not None and later >= UNSET_CLOCK_BEFORE_MS:
                return later
        return None  # no append since with a set clock: keep it

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
