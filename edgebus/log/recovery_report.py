"""What recovery found in one partition (recovery.py): the report (its summary is the start-up
log line's, manager.py) and the recovered log the partition opens with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgebus.log.checkpoint import RecoveryPoint
    from edgebus.log.segment import Segment


@dataclass
class RecoveryReport:
    partition: str
    full_scan: bool = False  # no usable checkpoint entry: every segment was scanned
    scanned_bytes: int = 0
    cut_file: str | None = None
    cut_position: int = 0
    cut_bytes: int = 0
    cut_reason: str | None = None
    deleted_segments: int = 0  # later segments dropped by the cut (they held no valid batch)
    restamped: int = 0  # batches whose base offset or append time was rewritten
    set_aside: list[str] = field(default_factory=list)  # .corrupt files written
    set_aside_bytes: int = 0
    damaged_offsets: list[tuple[int, int]] = field(default_factory=list)  # [start, end) ranges
    retention_segments: int = 0  # segments an interrupted retention pass had left behind
    rebuilt_indexes: int = 0
    removed_files: list[str] = field(default_factory=list)

    @property
    def anything_cut(self) -> bool:
        return self.cut_reason is not None or self.deleted_segments > 0

    def summary(self) -> str:
        parts = [f"scanned {self.scanned_bytes} bytes" + (" (full scan)" if self.full_scan else "")]
        if self.cut_reason:
            parts.append(f"cut {self.cut_bytes} bytes at byte {self.cut_position} of "
                         f"{self.cut_file} ({self.cut_reason})")
        if self.deleted_segments:
            parts.append(f"deleted {self.deleted_segments} later segment(s)")
        if self.restamped:
            parts.append(f"restamped {self.restamped} batch(es)")
        if self.set_aside:
            parts.append(f"moved {self.set_aside_bytes} damaged bytes aside to "
                         f"{', '.join(self.set_aside)}")
        if self.retention_segments:
            parts.append(f"finished deleting {self.retention_segments} expired segment(s)")
        if self.rebuilt_indexes:
            parts.append(f"rebuilt {self.rebuilt_indexes} index(es)")
        if self.removed_files:
            parts.append(f"removed leftovers {', '.join(self.removed_files)}")
        return "; ".join(parts)


@dataclass
class RecoveredLog:
    segments: list[Segment]
    log_end_offset: int
    max_append_time: int
    synced: RecoveryPoint  # log_start_offset is filled in by the partition
    dirty: list[Segment]  # segments holding bytes past the synced point, or truncated
    dir_changed: bool
    report: RecoveryReport
