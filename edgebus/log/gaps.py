"""Gap records of a mirror partition (docs/FORMAT.md 4.9, docs/REPLICATION.md "Gaps").

A mirror keeps its source's offsets. When offsets were never shipped (the source's retention
deleted them first, or they were older than the link's max_age), the mirror's log end jumps
over them and this file says which offsets, when and why: a gap is recorded, never silent.

The file `replica-gaps` in the partition directory is a run of 32-byte entries, replaced whole
(atomic_write) when a gap is added: gaps are rare, and a crash leaves the old or the new file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from edgebus import format as F
from edgebus.log.fileutil import atomic_write, read_file

GAPS_FILE = "replica-gaps"
# Reason codes (u8 on disk and on the wire; numbers never change).
GAP_RETENTION, GAP_MAX_AGE = 1, 2
GAP_REASONS = {GAP_RETENTION: "retention", GAP_MAX_AGE: "max_age"}
# A partition with this many gap records is a mis-configured link; the file stays small.
MAX_GAP_RECORDS = 65536
_CRC_COVERS = F.REPLICA_GAP_ENTRY.size - 4


@dataclass(frozen=True)
class Gap:
    start: int  # first offset not shipped
    end: int  # the offset the mirror resumed at (exclusive end of the gap)
    recorded_ms: int
    reason: int  # GAP_RETENTION | GAP_MAX_AGE

    @property
    def records(self) -> int:
        return self.end - self.start

    def describe(self) -> str:
        why = {GAP_RETENTION: "deleted by the source's retention before they were shipped",
               GAP_MAX_AGE: "older than the link's max_age, not shipped"}.get(
                   self.reason, f"not shipped (reason {self.reason})")
        return f"offsets {self.start}..{self.end - 1} were {why}"


def encode(gap: Gap) -> bytes:
    head = F.REPLICA_GAP_ENTRY.pack(gap.start, gap.end, gap.recorded_ms, gap.reason, 0, 0, 0)
    return head[:_CRC_COVERS] + (zlib.crc32(head[:_CRC_COVERS])).to_bytes(4, "little")


def load(directory: Path) -> list[Gap]:
    """Every whole entry with a good CRC, in file order (a damaged entry is skipped: the gap it
    named is still visible as a gap between segments, only its reason is lost)."""
    path = directory / GAPS_FILE
    if not path.exists():
        return []
    data = read_file(path, MAX_GAP_RECORDS * F.REPLICA_GAP_ENTRY.size)
    out = []
    size = F.REPLICA_GAP_ENTRY.size
    for pos in range(0, len(data) - size + 1, size):
        start, end, ms, reason, _, _, crc = F.REPLICA_GAP_ENTRY.unpack_from(data, pos)
        if crc == zlib.crc32(data[pos : pos + _CRC_COVERS]) and start < end:
            out.append(Gap(start, end, ms, reason))
    return out


def store(directory: Path, gaps: list[Gap]) -> None:
    """Replace the file with `gaps` (written, fsynced, renamed, directory fsynced)."""
    atomic_write(directory / GAPS_FILE, b"".join(encode(g) for g in gaps[-MAX_GAP_RECORDS:]))
