"""Idempotent producers: producer ids, and per-partition sequence checks.

One implementation for both front ends: the Kafka listener (server/kafka/produce.py) and the
native PRODUCE of an idempotent or transactional edgebus.Producer (server/handlers/txn.py).

A producer with enable.idempotence numbers its batches per partition (base_sequence, counting
records). A batch is taken only if it continues its producer's last sequence; a retry of one of
the producer's last batches (the client did not get the answer) is a duplicate and answered with
the offset it got the first time, without appending; anything else is refused with
OUT_OF_ORDER_SEQUENCE_NUMBER. The producer id, epoch and base sequence are stored in the edgebus
batch header (docs/FORMAT.md 2.1), so after a restart the state is rebuilt from the log itself:
a SIGKILL between the append and the answer, then the client's retry, does not duplicate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edgebus import format as F

log = logging.getLogger("edgebus.txn")

# Batches remembered per producer and partition for duplicate detection: librdkafka and the Java
# client keep at most 5 requests in flight with idempotence; a batch split for max_message_bytes
# counts once per piece, hence more.
REMEMBERED_BATCHES = 32
# Bytes read per step when rebuilding a partition's producer state from its log.
SCAN_CHUNK = 1024 * 1024
SEQ_MOD = 2**31  # sequences wrap at i32

# Verdicts, as Kafka's error numbers (the Kafka front end answers them as they are; the native one
# raises edgebus errors for them: server/handlers/txn.py).
OUT_OF_ORDER_SEQUENCE = 45
DUPLICATE_SEQUENCE = 46
INVALID_PRODUCER_EPOCH = 47


@dataclass
class ProducerEntry:
    epoch: int
    last_seq: int  # sequence of the last record taken
    # (first sequence, base offset) of the last batches taken, oldest first
    batches: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=REMEMBERED_BATCHES))


class Verdict:
    """check()'s answer: append (ok), a duplicate with its original offset, or an error code."""

    __slots__ = ("duplicate_of", "error")

    def __init__(self, error: int = 0, duplicate_of: int = -1) -> None:
        self.error = error
        self.duplicate_of = duplicate_of


APPEND = Verdict()


class ProducerStates:
    """Loop thread only."""

    def __init__(self) -> None:
        self._last_pid = 0
        # (topic, partition) -> producer id -> entry; a partition is loaded from its log first
        self._parts: dict[tuple[str, int], dict[int, ProducerEntry]] = {}

    def new_producer_id(self) -> int:
        """Ids grow with the clock (ms * 1000 + a counter), so a restarted supervisor never
        hands out an id an earlier run gave (unless the clock went back by the whole uptime)."""
        pid = max(self._last_pid + 1, time.time_ns() // 1_000_000 * 1000)
        self._last_pid = pid
        return pid

    def forget(self, topic: str) -> None:
        """A topic was deleted (or recreated): its producers start over."""
        for key in [k for k in self._parts if k[0] == topic]:
            del self._parts[key]

    def held(self) -> list[tuple[str, int, int, ProducerEntry]]:
        """(topic, partition, producer id, entry) of every producer state in memory (partitions
        written, or loaded from their log, since the start), for `edgebus txn list`."""
        return [(key[0], key[1], pid, e) for key, state in sorted(self._parts.items())
                for pid, e in sorted(state.items())]

    def of_partition(self, p: Any) -> dict[int, ProducerEntry]:
        """producer id -> state in partition `p` (read from its log the first time), for
        Kafka's DescribeProducers."""
        return self._load(p)

    def _load(self, p: Any) -> dict[int, ProducerEntry]:
        key = (p.topic, p.partition)
        state = self._parts.get(key)
        if state is None:
            state = self._parts[key] = scan_partition(p)
        return state

    def check(self, p: Any, pid: int, epoch: int, base_seq: int, count: int) -> Verdict:
        """Whether a batch of producer `pid` may be appended to partition `p`."""
        if pid < 0:
            return APPEND
        e = self._load(p).get(pid)
        if e is None:
            return APPEND  # a new producer (or one whose batches retention removed)
        if epoch < e.epoch:
            return Verdict(INVALID_PRODUCER_EPOCH)
        if epoch > e.epoch:
            return APPEND if base_seq == 0 else Verdict(OUT_OF_ORDER_SEQUENCE)
        for first, base in e.batches:
            if first == base_seq:
                return Verdict(duplicate_of=base)
        if base_seq == (e.last_seq + 1) % SEQ_MOD:
            return APPEND
        behind = (e.last_seq - base_seq) % SEQ_MOD < SEQ_MOD // 2
        return Verdict(DUPLICATE_SEQUENCE if behind else OUT_OF_ORDER_SEQUENCE)

    def appended(self, p: Any, pid: int, epoch: int, base_seq: int, count: int, base_offset: int) -> None:
        if pid < 0:
            return
        state = self._load(p)
        _record(state, pid, epoch, base_seq, count, base_offset)


def _record(state: dict[int, ProducerEntry], pid: int, epoch: int, base_seq: int, count: int,
            base_offset: int) -> None:
    e = state.get(pid)
    if e is None or epoch != e.epoch:
        e = state[pid] = ProducerEntry(epoch, -1)
    e.last_seq = (base_seq + count - 1) % SEQ_MOD
    e.batches.append((base_seq, base_offset))


def scan_partition(p: Any) -> dict[int, ProducerEntry]:
    """The producer state of a partition from its batch headers: the last two segments (a
    producer retries only its latest batches, which lie there unless a roll came in between
    and a whole segment filled since; docs/KAFKA.md)."""
    state: dict[int, ProducerEntry] = {}
    bases = p.segment_bases
    start = max(p.log_start_offset, bases[-2] if len(bases) >= 2 else p.log_start_offset)
    off, end = start, p.log_end_offset
    header = F.BATCH_HEADER
    t0 = time.monotonic()
    while off < end:
        data = p.read(off, SCAN_CHUNK, at_least_one=True)
        if not data:
            break
        view = memoryview(data)
        pos = 0
        while pos + F.BATCH_HEADER_SIZE <= len(view):
            (base, _at, length, _crc, _m, _a, _r, count, _ft, _mt, pid, base_seq, epoch,
             _r2) = header.unpack_from(view, pos)
            if length < F.BATCH_HEADER_SIZE or pos + length > len(view):
                break
            if pid >= 0 and base_seq >= 0:
                _record(state, pid, epoch, base_seq, count, base)
            pos += length
            off = base + count
        if pos == 0:
            break
    if state:
        log.info("%s-%d: producer state of %d idempotent producer(s) rebuilt from the log in %.3f s",
                 p.topic, p.partition, len(state), time.monotonic() - t0)
    return state
