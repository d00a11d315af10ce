"""The recovery checkpoint: per partition, the point up to which the log is known to be fsynced.

Recovery trusts everything before that point and scans only what follows, which keeps start-up
fast with a large log. The file is ASCII text, one partition per line, ending in a CRC-32 line so
that a torn or edited file is detected and ignored (every partition is then fully scanned):

    edgebus-recovery-checkpoint 1
    <entry count>
    <topic> <partition> <log_start> <segment_base> <position> <next_offset> <max_append_time>
    ...
    crc32 <8 lowercase hex digits: zlib.crc32 of every byte before this line>

It is replaced atomically (write a temporary file, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from edgebus.log.crc_trailer import seal, unseal
from edgebus.log.fileutil import atomic_write, read_file, storage_error

CHECKPOINT_FILE = "recovery-checkpoint"
MAGIC_LINE = "edgebus-recovery-checkpoint 1"
# One line per partition of at most ~320 bytes; this bounds what we read at start-up.
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
_FIELDS = 7


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    """The synced point of a partition: every byte of segment `segment_base` before `position`,
    and every earlier segment, is fsynced and valid; `next_offset` is the offset that follows."""

    segment_base: int
    position: int
    next_offset: int
    log_start_offset: int
    max_append_time: int = -1  # largest append time stamped so far; keeps stamps monotonic


PartitionKey = tuple[str, int]


def encode_checkpoint(points: dict[PartitionKey, RecoveryPoint]) -> bytes:
    lines = [MAGIC_LINE, str(len(points))]
    for (topic, part), p in sorted(points.items()):
        lines.append(
            f"{topic} {part} {p.log_start_offset} {p.segment_base} {p.position} "
            f"{p.next_offset} {p.max_append_time}"
        )
    body = ("\n".join(lines) + "\n").encode("ascii")
    return seal(body)


def decode_checkpoint(data: bytes) -> dict[PartitionKey, RecoveryPoint]:
    """Parse a checkpoint file; ValueError with the reason when it is torn or malformed."""
    body = unseal(data)
    lines = body.decode("ascii").split("\n")
    if lines[-1] != "":
        raise ValueError("body does not end with a newline")
    lines.pop()
    if not lines or lines[0] != MAGIC_LINE:
        raise ValueError("unknown header line")
    if len(lines) < 2 or not lines[1].isdigit() or int(lines[1]) != len(lines) - 2:
        raise ValueError("entry count does not match the lines")
    points: dict[PartitionKey, RecoveryPoint] = {}
    for line in lines[2:]:
        parts = line.split(" ")
        if len(parts) != _FIELDS:
            raise ValueError(f"entry has {len(parts)} fields, expected {_FIELDS}")
        topic = parts[0]
        nums = [int(x) for x in parts[1:]]
        part, log_start, seg_base, position, next_offset, max_time = nums
        if min(part, log_start, seg_base, position, next_offset) < 0:
            raise ValueError(f"negative value in entry for {topic}-{part}")
        points[(topic, part)] = RecoveryPoint(seg_base, position, next_offset, log_start, max_time)
    return points


def read_checkpoint(data_dir: Path, log: logging.Logger) -> dict[PartitionKey, RecoveryPoint]:
    """The checkpoint's points; {} (and so a full scan) when it is missing, torn or malformed."""
    path = data_dir / CHECKPOINT_FILE
    try:
        data = read_file(path, MAX_CHECKPOINT_BYTES)
    except FileNotFoundError:
        log.info("no recovery checkpoint in %s; every partition will be scanned", data_dir)
        return {}
    except Exception as e:  # an unreadable checkpoint only costs a full scan
        log.warning("cannot read %s (%s); every partition will be scanned", path, e)
        return {}
    try:
        return decode_checkpoint(data)
    except (ValueError, UnicodeDecodeError) as e:
        log.warning("ignoring recovery checkpoint %s: %s; every partition will be scanned", path, e)
        return {}


def write_checkpoint(data_dir: Path, data: bytes) -> None:
    atomic_write(data_dir / CHECKPOINT_FILE, data)


class CheckpointWriter:
    """The data directory's checkpoint as the supervisor writes it (LogManager): skipped when
    unchanged (SD cards wear). It may be written from the supervisor's fsync thread: snapshots
    are numbered on the loop thread (number()), and an older snapshot never overwrites a newer
    one on disk."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._last: bytes | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._written_seq = 0

    def number(self) -> int:
        """The next snapshot's number (loop thread)."""
        self._seq += 1
        return self._seq

    def write(self, data: bytes, seq: int | None = None) -> None:
        """Atomically write `data` (thread-safe); with seq, skipped when a newer snapshot is
        already on disk."""
        with self._lock:
            if seq is not None and seq <= self._written_seq:
                return
            if data != self._last:
                try:
                    write_checkpoint(self.data_dir, data)
                except OSError as e:
                    raise storage_error(e, "writing the recovery checkpoint") from e
                self._last = data
            if seq is not None:
                self._written_seq = seq
