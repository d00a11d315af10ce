"""A segment as the log cleaner may read it (edgebus/log/cleaner.py): what Partition.compaction_view
hands the cleaner. Apart from the cleaner so that the log can say it without importing the cleaner,
which a supervisor without compacted partitions to clean never loads (issue 16)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SegmentSnap:
    base_offset: int
    path: Path
    size: int  # bytes of whole batches at the time of the plan (an active one grows later)
    cleanable: bool  # sealed, fsynced, below the recovery point: may be rewritten
