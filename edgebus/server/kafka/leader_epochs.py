"""Kafka leader epochs on a single-node broker (KIP-101, KIP-320; docs/KAFKA.md "Leader epochs").

A Kafka leader epoch numbers a run of a partition's log that one leader wrote: clients remember
the epoch of the records they read (the batch header's partition leader epoch) and commit it with
their offsets; when the epoch advances they ask OffsetForLeaderEpoch where their epoch ended, and
a position past that end was truncated away (it read records that are gone).

edgebus is one node, so leadership never moves; what a new epoch means here is the same thing it
protects against in Kafka: **the log may have lost its tail**, so offsets from that point on
may be reused by different records. A partition's epoch is bumped at start, at the log end
recovery left, when

- recovery cut the partition's tail (a torn or damaged last batch, docs/FORMAT.md 4.1), or
- the previous run ended with the machine going down (or unknown: edgebus/log/cleanstop.py),
  when records written but not yet fsynced may be gone even where recovery has nothing to cut.

A partition never bumped is epoch 0 from offset 0 (nothing is stored for it). A deleted and
re-created topic is a new topic (a new topic id, as in Kafka) and starts at epoch 0 again.

The history is the file `data_dir/kafka-leader-epochs` (docs/FORMAT.md 4.11): per partition the
(epoch, start offset) pairs of its bumps, keyed with the topic's incarnation so that a re-created
topic never inherits a deleted one's. It is written whole (atomic_write) at start, once, when
something was bumped, and read at start; the Kafka handlers then only look it up (loop thread).
This module imports nothing of kio: the supervisor runs it at start, before any Kafka client.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebus.log.cleanstop import MACHINE_DOWN, UNKNOWN
from edgebus.log.crc_trailer import seal, unseal
from edgebus.log.fileutil import atomic_write, read_file

log = logging.getLogger("edgebus.kafka")

EPOCHS_FILE = "kafka-leader-epochs"
MAGIC_LINE = "edgebus-kafka-leader-epochs 1"
# Bumps kept per partition: each is a power cut or a cut tail, so 64 is years of them. Past it
# the oldest go; a client positioned in an epoch older than every kept one is answered with the
# first kept epoch's start (Kafka's answer for an epoch below its cache), which may be late.
MAX_EPOCHS_PER_PARTITION = 64
# Bounded read at start: a line is at most ~270 bytes (200-character topic name).
MAX_EPOCHS_FILE_BYTES = 64 * 1024 * 1024
UNDEFINED = -1  # Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET
_NO_INCARNATION = "-"  # a topic made before incarnations existed
_FIELDS = 5

TP = tuple[str, int]


@dataclass
class PartitionEpochs:
    """One partition's bumps. Invariant: `epochs` strictly increasing, every one >= 1, and
    `starts` (their start offsets) non-decreasing; epoch 0 runs from offset 0 to starts[0]."""

    incarnation: str
    epochs: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    @property
    def current(self) -> int:
        return self.epochs[-1] if self.epochs else 0

    def bump(self, at: int) -> int:
        """A new epoch starting at offset `at` (the log end after a cut): the epochs that started
        at or after it are dropped first, as Kafka truncates its epoch cache, so that an older
        epoch's end is the cut and never an offset that no longer holds its records."""
        new = self.current + 1
        while self.starts and self.starts[-1] >= at:
            self.epochs.pop()
            self.starts.pop()
        self.epochs.append(new)
        self.starts.append(at)
        del self.epochs[:-MAX_EPOCHS_PER_PARTITION], self.starts[:-MAX_EPOCHS_PER_PARTITION]
        return new

    def epoch_at(self, offset: int) -> int:
        """The epoch the record at `offset` was written in."""
        i = bisect.bisect_right(self.starts, offset)
        # Before the first kept bump: epoch 0 (after more than MAX_EPOCHS_PER_PARTITION bumps
        # the oldest records read as 0 too; asked for its end, epoch 0 ends at the first kept).
        return self.epochs[i - 1] if i else 0

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        """(epoch, end offset) answering OffsetForLeaderEpoch for `epoch`, Kafka's rules
        (LeaderEpochFileCache.endOffsetFor): the current epoch ends at the log end; an older
        one at the start of the first later epoch, with the largest known epoch not above it;
        an unknown or future one is (-1, -1)."""
        if epoch < 0 or epoch > self.current:
            return UNDEFINED, UNDEFINED
        if epoch == self.current:
            return epoch, log_end
        i = bisect.bisect_right(self.epochs, epoch)  # the first epoch above `epoch`
        end = self.starts[i]
        if i == 0:  # below every kept bump: epoch 0 (or one dropped past the bound) ends there
            return epoch, end
        return self.epochs[i - 1], end


class LeaderEpochs:
    """Every partition's leader epochs (loop thread after start)."""

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.path = Path(data_dir) / EPOCHS_FILE if data_dir is not None else None
        self.table: dict[TP, PartitionEpochs] = {}

    # --- lookups (the Kafka handlers) ----------------------------------------------------------
    def of(self, p: Any) -> PartitionEpochs | None:
        """The bumps of partition `p` (a log Partition), None when it was never bumped."""
        if not self.table:  # the usual case: no partition ever lost its tail
            return None
        e = self.table.get((p.topic, p.partition))
        if e is None or e.incarnation != (p.config.incarnation or _NO_INCARNATION):
            return None  # never bumped, or bumped in a deleted topic of the same name
        return e

    def current(self, p: Any) -> int:
        e = self.of(p)
        return e.current if e is not None else 0

    def end_offset_for(self, p: Any, epoch: int) -> tuple[int, int]:
        e = self.of(p)
        if e is None:
            return (0, p.log_end_offset) if epoch == 0 else (UNDEFINED, UNDEFINED)
        return e.end_offset_for(epoch, p.log_end_offset)

    # --- start ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the file; a torn or malformed one is logged and ignored (every partition epoch 0,
        which only loses truncation detection for positions read before it)."""
        if self.path is None:
            return
        try:
            data = read_file(self.path, MAX_EPOCHS_FILE_BYTES)
        except FileNotFoundError:
            return
        except Exception as e:
            log.error("cannot read %s (%s): Kafka leader epochs start again at 0", self.path, e)
            return
        try:
            self.table = decode(data)
        except (ValueError, UnicodeDecodeError) as e:
            log.error("ignoring %s: %s; Kafka leader epochs start again at 0", self.path, e)

    def bump_at_start(self, logs: Any) -> list[str]:
        """Bump every partition whose tail may be gone (module docstring), at its log end now
        (call before anything is appended); write the file if anything changed. Returns the
        partitions bumped ("topic-partition epoch N at offset M")."""
        self.load()
        stop = getattr(logs, "previous_stop", "clean")
        machine_down = stop in (MACHINE_DOWN, UNKNOWN)
        topics = logs.topics()
        bumped = []
        for p in logs.all_partitions():
            if p.topic.startswith("__"):
                continue  # internal: never served to Kafka clients
            rep = getattr(p, "recovery_report", None)
            if not (machine_down or (rep is not None and rep.anything_cut)):
                continue
            inc = p.config.incarnation or _NO_INCARNATION
            e = self.table.get((p.topic, p.partition))
            if e is None or e.incarnation != inc:
                e = self.table[(p.topic, p.partition)] = PartitionEpochs(inc)
            at = p.log_end_offset
            n = e.bump(at)
            bumped.append(f"{p.topic}-{p.partition} epoch {n} at offset {at}")
        live = {(t, i): cfg.incarnation or _NO_INCARNATION for t, cfg in topics.items()
                for i in range(cfg.partitions)}
        stale = [k for k, e in self.table.items() if live.get(k) != e.incarnation]
        for k in stale:  # deleted topics' (and re-created ones' old) histories
            del self.table[k]
        if (bumped or stale) and self.path is not None:
            try:
                atomic_write(self.path, encode(self.table))
            except OSError as e:  # served from memory this run; a later start may not know them
                log.error("cannot write %s (%s): the leader epochs bumped now are served but "
                          "not kept for the next start", self.path, e)
        if bumped:
            why = ("the previous run ended with the machine going down" if machine_down
                   else "recovery cut their tails")
            log.warning("Kafka leader epochs bumped (%s; Kafka consumers positioned past the "
                        "new log end are moved back to it): %s", why, ", ".join(bumped[:20])
                        + (f" and {len(bumped) - 20} more" if len(bumped) > 20 else ""))
        return bumped


def encode(table: dict[TP, PartitionEpochs]) -> bytes:
    lines = [MAGIC_LINE]
    rows: list[str] = []
    for (topic, part), e in sorted(table.items()):
        rows.extend(f"{topic} {part} {e.incarnation} {ep} {start}"
                    for ep, start in zip(e.epochs, e.starts, strict=True))
    lines.append(str(len(rows)))
    lines.extend(rows)
    body = ("\n".join(lines) + "\n").encode("ascii")
    return seal(body)


def decode(data: bytes) -> dict[TP, PartitionEpochs]:
    """Parse the file; ValueError saying what is wrong when it is torn or malformed."""
    body = unseal(data)
    lines = body.decode("ascii").split("\n")
    if lines.pop() != "" or not lines or lines[0] != MAGIC_LINE:
        raise ValueError("unknown header line")
    if len(lines) < 2 or not lines[1].isdigit() or int(lines[1]) != len(lines) - 2:
        raise ValueError("entry count does not match the lines")
    table: dict[TP, PartitionEpochs] = {}
    for line in lines[2:]:
        parts = line.split(" ")
        if len(parts) != _FIELDS:
            raise ValueError(f"entry has {len(parts)} fields, expected {_FIELDS}")
        topic, inc = parts[0], parts[2]
        part, epoch, start = int(parts[1]), int(parts[3]), int(parts[4])
        e = table.setdefault((topic, part), PartitionEpochs(inc))
        if (min(part, start) < 0 or epoch < 1 or e.incarnation != inc
                or (e.epochs and (epoch <= e.epochs[-1] or start < e.starts[-1]))):
            raise ValueError(f"entry out of order or out of range: {line!r}")
        e.epochs.append(epoch)
        e.starts.append(start)
    return table


def stamp(records: bytes, e: PartitionEpochs | None) -> bytes:
    """Fetched Kafka batches (records.edgebus_to_kafka's output) with each batch's partition
    leader epoch (bytes 12-15, outside the CRC) set to the epoch it was written in. Unchanged
    (epoch 0 everywhere, as converted) for a partition never bumped."""
    if e is None or not records:
        return records
    out = bytearray(records)
    pos = 0
    n = len(out)
    while pos + 16 <= n:  # (a batch's header reaches past its epoch; never a part batch)
        base = int.from_bytes(out[pos : pos + 8], "big", signed=True)
        length = int.from_bytes(out[pos + 8 : pos + 12], "big", signed=True)
        out[pos + 12 : pos + 16] = e.epoch_at(base).to_bytes(4, "big", signed=True)
        pos += 12 + length
    return bytes(out)


def epochs_of(ctx: Any) -> LeaderEpochs:
    """The context's epochs (an empty table where the front end made none: tests' contexts)."""
    e: LeaderEpochs | None = ctx.parts.get("epochs")
    if e is None:
        e = ctx.parts["epochs"] = LeaderEpochs()
    return e
