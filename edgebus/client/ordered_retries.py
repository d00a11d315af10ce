"""Ordered retries of edgebus.Producer: which partition may send now, and a failed batch put
back before its partition's newer ones.

`_OrderedRetries` is a mixin of `Producer` (edgebus/client/producer.py, whose module docstring
describes ordered retries and idempotence), used by its I/O-thread half `_Delivery`
(edgebus/client/delivery.py): with `retries` > 0 each partition has at most `_per_partition`
batches in flight (`_waiting`, `_not_busy`), a batch that fails with a retriable error goes
back to the front of its partition after a backoff (`_retry`, `_requeue`), and an idempotent
producer's batch refused as out of order follows its predecessor's resend (`_resequenced`).
The attributes below are set by `Producer.__init__`; they are declared here so that mypy
checks their use.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from edgebus.backoff import backoff_delay
from edgebus.client.batch_builder import _Builder
from edgebus.errors import OutOfOrderSequenceError

if TYPE_CHECKING:
    from edgebus.client.txn import Sequencer

log = logging.getLogger("edgebus.producer")


class _OrderedRetries:
    """Producer's methods for ordered retries (module docstring)."""

    # Set by Producer.__init__ (settings).
    retries: float
    retry_backoff: float
    retry_backoff_max: float
    delivery_timeout: float
    # Set by Producer.__init__ (state, under _cond).
    _per_partition: int
    _busy: dict[tuple[str, int], int]
    _retry_at: dict[tuple[str, int], float]
    _counts: dict[str, int]
    _cond: threading.Condition
    _ready: deque[_Builder]
    _closed: bool
    # Defined by TransactionalProducer (edgebus/client/txn.py).
    _seq: Sequencer | None

    def _waiting(self, key: tuple[str, int], now: float) -> bool:
        """Ordered mode: the partition may not send now: it has _per_partition batches in
        flight, waits out a retry backoff, or has a batch to resend (its retry is pending until
        one succeeds) and batches still in flight, whose answers come first (a resend goes out
        alone, so that it cannot overtake them)."""
        n = self._busy.get(key, 0)
        if n >= self._per_partition:
            return True
        at = self._retry_at.get(key)
        return at is not None and (at > now or n > 0)

    def _not_busy(self, key: tuple[str, int]) -> None:
        """Under self._cond: one batch of the partition is no longer in flight."""
        n = self._busy.pop(key, 0) - 1
        if n > 0:
            self._busy[key] = n

    def _requeue(self, b: _Builder) -> None:
        """Under self._cond: a batch back into the ready queue, before its partition's later
        batches (sealed after it) and after its earlier ones: batches of one partition fail in the
        order they were sent (answers come in order), so their resends keep that order."""
        ready = self._ready
        pos = 0
        for i, x in enumerate(ready):
            if x.partition == b.partition and x.topic == b.topic:
                if x.order > b.order:
                    pos = i
                    break
                pos = i + 1
        ready.insert(pos, b)

    def _ordered_ready(self, now: float) -> tuple[bool, float | None]:
        """Under self._cond, ordered mode: is a ready batch sendable now; else the earliest end
        of a backoff that holds one back (None: they wait for batches in flight)."""
        due = None
        seen: set[tuple[str, int]] = set()  # a partition's first ready batch decides for it
        for b in self._ready:
            key = (b.topic, b.partition)
            if key in seen:
                continue
            seen.add(key)
            if not self._waiting(key, now):
                return True, None
            if self._busy.get(key):
                continue  # its answers come first
            at = self._retry_at[key]
            due = at if due is None else min(due, at)
        return False, due

    def _retry(self, b: _Builder, err: BaseException) -> bool:
        """Under self._cond, ordered mode: put a failed batch back at the front of its partition
        (before its newer batches) if the error is retriable and retries and the delivery timeout
        allow; False to fail it."""
        now = time.monotonic()
        key = (b.topic, b.partition)
        if not (getattr(err, "retriable", False) or self._resequenced(key, b, err)) \
                or b.attempts >= self.retries or self._closed \
                or now - b.created >= self.delivery_timeout:
            return False
        delay = backoff_delay(b.attempts, self.retry_backoff, self.retry_backoff_max)
        b.attempts += 1
        b.deadline = math.inf
        self._retry_at[key] = now + delay
        self._requeue(b)
        self._counts["batch-retry-total"] += 1
        self._counts["record-retry-total"] += b.count
        log.log(logging.WARNING if b.attempts == 1 else logging.DEBUG,
                "sending %d record(s) to %s-%d again in %.3f s (retry %d): %s: %s", b.count,
                b.topic, b.partition, delay, b.attempts, type(err).__name__, err)
        self._cond.notify_all()  # the I/O thread learns the backoff's end
        return True

    def _resequenced(self, key: tuple[str, int], b: _Builder, err: BaseException) -> bool:
        """An idempotent producer's batch refused as out of order (so not appended) because an
        earlier batch of its partition, in flight with it, was not appended: retried after that
        one's resend, or, if that one failed for good (a hole in the sequence), stamped anew
        under the producer's next id (Sequencer.restamp)."""
        if self._seq is None or not isinstance(err, OutOfOrderSequenceError):
            return False
        return key in self._retry_at or self._seq.restamp(b)
