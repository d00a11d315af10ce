"""What every part of a Partition shares: its state, and the few helpers all parts use.

`Partition` (edgebus/log/partition.py) is this base and four parts, a mixin each: appending
(partition_append.py), reading (partition_read.py), fsync and the recovery point
(partition_durability.py), retention and compaction (partition_retention.py). The attributes are
set by `Partition.__init__`; they are declared here so that mypy checks each part's use of them.
Used from the supervisor's loop thread only.
"""

from __future__ import annotations

import errno
import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from edgebus.errors import ClosedError, StorageError
from edgebus.log.gaps import Gap
from edgebus.log.recovery_report import RecoveryReport
from edgebus.log.segment import Segment
from edgebus.log.topic_config import TopicConfig

# Read fds kept open per partition for old segments (least recently used are closed first).
MAX_OPEN_READ_FDS = 8


class _PartitionState:
    """The fields of a Partition and the helpers its parts share."""

    topic: str
    partition: int
    path: Path
    config: TopicConfig
    name: str  # "<topic>-<partition>", for messages
    log_start_offset: int  # first offset still on disk
    log_end_offset: int  # next offset to assign
    offline: bool  # set after an I/O failure; appends then raise StorageError
    offline_reason: str | None  # why, naming the file and errno (status, the producers' error)
    offline_errno: str | None  # that errno's name ("EIO", "EROFS"; None: not an errno)
    recovery_report: RecoveryReport | None
    gaps: list[Gap]  # a mirror's recorded gaps: offsets its source never shipped (gaps.py)
    _log: logging.Logger
    _segments: list[Segment]  # oldest first, the last the active one
    _bases: list[int]  # their base offsets
    _start_floor: int  # DeleteRecords' floor inside the first segment (log_start.py); 0 when none
    _max_append_time: int
    _closed: bool
    _dir_fd: int
    _gen: int  # write generation: every change bumps it; a sync ticket covers changes up to its gen
    _unsynced: dict[int, Segment]  # base offset -> segment with writes not yet fsynced
    _dir_dirty_gen: int
    _dir_synced_gen: int
    _synced: tuple[int, int, int]  # (segment base, position, next offset) fsynced
    _lru: OrderedDict[int, Segment]  # clean old segments with an open read fd
    _tail: tuple[int, int, bytes] | None  # the last batch `append` wrote, if small (see `read`)

    if TYPE_CHECKING:  # each defined by one part (partition_read.py, partition_append.py)
        def read(self, offset: int, max_bytes: int, at_least_one: bool = True) -> bytes: ...
        def _roll(self) -> None: ...

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    def _touch(self, seg: Segment) -> None:
        """Keep at most MAX_OPEN_READ_FDS read fds of clean old segments open."""
        if seg is self._active or seg.base_offset in self._unsynced or seg.fd is None:
            return
        self._lru[seg.base_offset] = seg
        self._lru.move_to_end(seg.base_offset)
        while len(self._lru) > MAX_OPEN_READ_FDS:
            _, old = self._lru.popitem(last=False)
            old.close_fd()

    def _dir_changed(self) -> None:
        self._gen += 1
        self._dir_dirty_gen = self._gen

    def _go_offline(self, why: str, err: int | None = None) -> None:
        if not self.offline:
            self.offline = True
            self.offline_reason = why
            self.offline_errno = errno.errorcode.get(err, str(err)) if err else None
            self._log.error("%s is offline: %s; restart the supervisor to run recovery",
                            self.name, why)

    def _offline_error(self) -> StorageError:
        """What an append to an offline partition raises: the first failure, named."""
        return StorageError(f"{self.name} is offline after an I/O error: {self.offline_reason}")

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"partition {self.name} is closed")
