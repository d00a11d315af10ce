"""A segment's file names (docs/FORMAT.md: `<base_offset:020d>.log|.index|.timeindex`) and what
the log tells others about a segment: the one place those names are formatted and parsed."""

from __future__ import annotations

from typing import NamedTuple

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
NAME_DIGITS = 20


class SegmentInfo(NamedTuple):
    """What the log tells others about one of its segments (disk guard, offsets cleaner), so
    that nobody outside edgebus/log builds segment file names or scans partition directories."""

    base_offset: int
    name: str  # the .log file's name, for messages
    size: int  # bytes of whole batches
    mtime: float | None  # when the .log file was last written (None: it could not be read)


def segment_stem(base_offset: int) -> str:
    """The one place a segment's file name is formatted (docs/FORMAT.md: `<base_offset:020d>`)."""
    return f"{base_offset:0{NAME_DIGITS}d}"


def parse_log_name(name: str) -> int | None:
    """The base offset of a `<20 digits>.log` file name, else None."""
    stem, dot, ext = name.partition(".")
    if dot and "." + ext == LOG_SUFFIX and len(stem) == NAME_DIGITS and stem.isdigit():
        return int(stem)
    return None
