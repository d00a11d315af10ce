"""One partition of a topic: a run of segments in `data_dir/<topic>-<partition>/`, the last active.

Used from the supervisor's loop thread only, except SyncTicket.run (a helper thread).

Invariants:
- offsets are dense and never reused: log_end_offset only grows, and survives every segment being
  deleted because the active segment's file name carries its base offset;
- append times never decrease within the partition (the clock of a Pi may jump back);
- the recovery point only advances after a successful fsync of everything before it, and never
  again after a failed one (the partition goes offline instead).

`Partition` is opened, described and closed here; its parts are mixins, a module each: appending
(partition_append.py), reading (partition_read.py), fsync and the recovery point
(partition_durability.py), retention and compaction (partition_retention.py), on the state and
helpers they share (partition_state.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

from edgebus.errors import EdgebusError
from edgebus.log import gaps
from edgebus.log.checkpoint import RecoveryPoint
from edgebus.log.fileutil import DIR_MODE, storage_error
from edgebus.log.gaps import Gap
from edgebus.log.log_start import read_log_start
from edgebus.log.partition_append import TAIL_BATCH_BYTES as TAIL_BATCH_BYTES
from edgebus.log.partition_append import _Appends
from edgebus.log.partition_durability import _Durability
from edgebus.log.partition_read import _Reads
from edgebus.log.partition_retention import _Retention
from edgebus.log.partition_state import MAX_OPEN_READ_FDS as MAX_OPEN_READ_FDS
from edgebus.log.recovery import recover
from edgebus.log.recovery_report import RecoveryReport
from edgebus.log.segment import Segment
from edgebus.log.segment_names import SegmentInfo
from edgebus.log.topic_config import TopicConfig


class Partition(_Appends, _Reads, _Durability, _Retention):
    """One partition's log (the module docstring says how it is kept). Its fields, public ones
    included (topic, partition, path, config, log_start_offset, log_end_offset, offline, gaps,
    recovery_report), are declared in partition_state.py."""

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
        self.offline_reason: str | None = None
        self.offline_errno: str | None = None
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
    def max_append_time(self) -> int:
        """The latest append time stamped (ms; -1 before any): later appends get at least it."""
        return self._max_append_time

    @property
    def synced_offset(self) -> int:
        """Every offset below this one is fsynced (what acks="durable" may acknowledge)."""
        return self._synced[2]

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
