"""The caller's half of edgebus.Producer: records into per-partition batches, and at
linger_ms=0 the batches sent from the caller's thread.

`_Accumulator` is a mixin of `Producer` (edgebus/client/producer.py, whose module docstring
describes batching, ordered retries and the durable hold), as Kafka's RecordAccumulator is the
producer's: `_append` adds a record to its partition's open batch (a `_Builder`,
edgebus/client/batch_builder.py), rolling and sealing batches (`_seal`) by size, with
backpressure on `buffer_memory` (`_wait_for_room`); `send_batch` adds many at once;
`_take_for_inline_send` / `_send_inline` send sealed batches from the caller's thread at
linger_ms=0 (the I/O thread's half is `_Delivery`, edgebus/client/delivery.py). The
attributes below are set by `Producer.__init__`; they are declared here so that mypy checks
their use.
"""

from __future__ import annotations

import random
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.client.batch_builder import _Builder
from edgebus.client.channel import AsyncChannel
from edgebus.client.shm_channel import ShmAsyncChannel
from edgebus.client.types import BatchResult, FutureBatch
from edgebus.errors import ClosedError, OperationTimeoutError, RecordTooLargeError

Headers = Sequence[tuple[str, bytes | None]]


def _as_bytes(v: Any, what: str) -> bytes | None:
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    raise TypeError(f"{what} must be bytes, str or None (or set a {what}_serializer), "
                    f"got {type(v).__name__}")


class _Accumulator:
    """Producer's methods that fill, seal and (at linger_ms=0) send batches."""

    # Set by Producer.__init__ (settings).
    linger: float
    batch_size: int
    max_request_size: int
    buffer_memory: int
    max_block: float
    max_in_flight: int
    key_serializer: Callable[[Any], bytes] | None
    value_serializer: Callable[[Any], bytes] | None
    # Set by Producer.__init__ (state, under _cond unless said otherwise); see there.
    _ordered: bool
    _hold_at: int
    _cond: threading.Condition
    _io_lock: threading.Lock
    _open: dict[tuple[str, int], _Builder]
    _ready: deque[_Builder]
    _queued_bytes: int
    _blocked: int
    _in_flight: int
    _sealed: int
    _closed: bool
    _drain_held: bool
    _unacked: dict[tuple[str, int], int]
    _partitions: dict[str, int]
    _record_max: dict[str, int]
    _batch_max: dict[str, int]
    _sticky: dict[str, int]
    _channel: AsyncChannel | ShmAsyncChannel | None
    # Defined by Producer and _Delivery (edgebus/client/delivery.py).
    _choose: Callable[[str, bytes | None, int | None], int]
    _waiting: Callable[[tuple[str, int], float], bool]
    _pop_ready: Callable[[], list[_Builder]]
    _send_todo: Callable[[list[_Builder]], bool]
    # AckOwner's (edgebus/client/types.py: the owner of each batch's result), from Producer and
    # _Delivery.
    _timed_acks: bool
    _results_lock: threading.Lock
    _awaiting_acks: Callable[..., Any]
    _poll_acks: Callable[[], None]
    _callback_added: Callable[[], None]

    def send_batch(
        self,
        topic: str,
        values: Sequence[Any],
        keys: Sequence[Any] | None = None,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        record_headers: Sequence[Headers | None] | None = None,
    ) -> FutureBatch:
        """Send many records in one call; cheaper per record than send(). One future for all.

        `headers` are given to every record; `record_headers[i]`, when given, to record i instead.
        The records of one call that go to one partition travel in one batch when together they
        fit in `batch_size` (an open batch of that partition that they would overflow is sealed
        first): they are appended, or fail, together and in order.
        """
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        if record_headers is not None and len(record_headers) != len(values):
            raise ValueError(f"{len(record_headers)} header lists for {len(values)} values")
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else int(timestamp_ms)
        if (keys is None and record_headers is None and not headers
                and self.value_serializer is None and values):
            bulk = B.encode_plain_values(values, ts)  # None unless every value is plain bytes
            if bulk is not None:
                fb = self._send_batch_bulk(topic, partition, ts, *bulk)
                if not self.linger:
                    self._send_now()
                return fb
        hdrs = headers or ()
        timestamps = [ts] * len(values)
        enc = B.encode_record
        vs = self.value_serializer
        by_part: dict[int, list[tuple[int, bytes]]] = {}
        for i, v in enumerate(values):
            if vs is not None and v is not None:
                v = vs(v)
            k = None if keys is None else keys[i]
            if k is not None and self.key_serializer is not None:
                k = self.key_serializer(k)
            k = _as_bytes(k, "key")
            p = self._choose(topic, k, partition)
            h = hdrs if record_headers is None else (record_headers[i] or ())
            rec = enc(ts, k, _as_bytes(v, "value"), h)
            self._check_size(topic, len(rec))
            by_part.setdefault(p, []).append((i, rec))
        parts: list[tuple[BatchResult, int, list[int]]] = []
        with self._cond:
            # Room for the whole call before any of it is appended, and no wait after: a wait
            # that timed out (or met close()) part-way would raise with records taken in (a
            # caller's retry would store them twice). A call larger than buffer_memory goes
            # once the buffer is empty, as one record larger than it does.
            try:
                if not self.linger:
                    self._reap_first()
                self._wait_for_room(sum(len(rec) for items in by_part.values() for _, rec in items))
            except BaseException:
                self._reap_first_failed()
                raise
            for p, items in by_part.items():
                self._make_room(topic, p, sum(len(rec) for _, rec in items), wait=False)
                cur: BatchResult | None = None
                for i, rec in items:
                    b, idx = self._append(topic, p, rec, ts, wait=False)
                    if b.result is not cur:
                        cur = b.result
                        parts.append((cur, idx, []))
                    parts[-1][2].append(i)
        if not self.linger:
            self._send_now()
        return FutureBatch(parts, timestamps)

    def _send_batch_bulk(self, topic: str, partition: int | None, ts: int, blob: bytearray,
                         sizes: list[int]) -> FutureBatch:
        """send_batch of values only, encoded by C in one go: per batch, not per record, work.
        Same batching rules as the general path (one batch if they fit, else full batches)."""
        p = self._choose(topic, None, partition)
        self._check_size(topic, max(sizes))
        n = len(sizes)
        cum: list[int] = []  # cum[i] = bytes before record i; made only when records must split
        mv = memoryview(blob)
        parts: list[tuple[BatchResult, int, Sequence[int]]] = []
        key = (topic, p)
        with self._cond:
            try:
                if not self.linger:
                    self._reap_first()
                self._make_room(topic, p, len(blob))
            except BaseException:
                self._reap_first_failed()
                raise
            if self._closed:
                raise ClosedError("the producer is closed")
            i = 0
            while i < n:
                b = self._open.get(key)
                if b is None:
                    b = self._open[key] = _Builder(topic, p, self)
                room = self._batch_max[topic] - b.size
                if i == 0 and len(blob) <= room:
                    j = n  # all fit: the common case needs no per-record sums
                else:
                    if not cum:
                        cum = list(accumulate(sizes, initial=0))
                    j = bisect_right(cum, cum[i] + room, i + 1) - 1  # records i..j-1 fit
                if j <= i:
                    if b.count:
                        self._seal(key, b)
                        continue
                    j = i + 1  # a record larger than batch_size travels alone
                chunk = mv if j == n and i == 0 else mv[cum[i] : cum[j]]
                first = b.add_many(chunk, j - i, ts)
                self._queued_bytes += len(chunk)
                parts.append((b.result, first, range(i, j)))
                i = j
                if b.size >= self._batch_max[topic] or i < n:
                    self._seal(key, b)
                elif first == 0 and self.linger:
                    self._cond.notify()  # the sender must learn this batch's linger deadline
        return FutureBatch(parts, [ts] * n)

    def _send_now(self) -> None:
        """linger_ms=0: seal what is open and send ready batches from the caller's thread. A
        hand-off to the I/O thread would cost a thread wake-up (tens of microseconds) per send;
        if that thread is sending right now, it takes these batches next instead."""
        with self._cond:
            todo = self._take_for_inline_send()
        if todo is not None:
            self._send_inline(todo)

    def _take_for_inline_send(self) -> list[_Builder] | None:
        """Under self._cond: seal every open batch. Then either take the I/O lock (never waited
        for here, so the lock order I/O lock -> _cond elsewhere cannot deadlock) and return the
        batches for the caller to send, or, when whoever holds it may not look again, wake the
        I/O thread, which sends as soon as the lock is free, and return None."""
        # The acknowledgements that came since the last send were taken by the caller before
        # it appended (_reap_first). This thread looks at every open batch below, so a hold's
        # wake-up of the I/O thread is not needed.
        self._drain_held = False
        got = self._io_lock.acquire(blocking=False)
        for key, b in list(self._open.items()):
            if self._ordered and self._waiting(key, time.monotonic()):
                continue  # it keeps filling until its partition may send again
            if self._hold_at and self._unacked.get(key, 0) >= self._hold_at:
                continue  # durable: it keeps filling until an acknowledgement comes
            if self._in_flight >= self.max_in_flight:
                # No request could go now: it keeps filling (as Kafka's accumulator does), and
                # the I/O thread seals it when an acknowledgement frees a slot. Sealed here, each
                # record would wait in line as a batch of its own, sent one per acknowledgement.
                # The acknowledgements are awaited now: not collected lazily (shm).
                ch = self._channel  # once: close() may drop it meanwhile (not under _cond)
                if ch is not None:
                    ch.hurry()
                continue
            if self._held_behind_unread():
                continue
            self._seal(key, b, notify=not got)
        if not got:
            self._cond.notify()
            return None
        return self._pop_ready()

    def _reap_first(self) -> None:
        """Under self._cond, before a send appends its records: deliver the acknowledgements
        the channel's reader is not being woken for (lazy acknowledgements: ShmAsyncChannel.reap,
        LazySocketChannel.reap) instead of waking it for each; their callbacks run in this
        thread. Before the append, never after: a callback's BaseException (KeyboardInterrupt)
        then leaves the send with nothing of its records done, so a send that raises has not
        sent them (send()'s contract: a caller may send them again). A hold's wake-up of the
        I/O thread is not needed: the caller looks at every open batch next
        (_take_for_inline_send; Producer.send inlines this)."""
        self._drain_held = False
        ch = self._channel
        if ch is not None:
            ch.reap()

    def _reap_first_failed(self) -> None:
        """Under self._cond: a send raised between _reap_first (which cleared _drain_held: the
        caller looks at the open batches next) and _take_for_inline_send (a callback's exception
        in the reap, buffer_memory full, close()). Its look will not come: a held batch goes with
        the next acknowledgement again, and the I/O thread looks now (it holds or sends it);
        before, it waited for that thread's next deadline, request_timeout_ms."""
        if not self.linger:
            self._drain_held = True
            self._cond.notify_all()

    def _held_behind_unread(self) -> bool:
        """Under self._cond, at linger_ms=0 (the caller's inline send, and the I/O thread on any
        wake-up): whether an open batch keeps filling because the supervisor has not yet read
        the request before our last one (ShmAsyncChannel.unread, LazySocketChannel.unread). It
        would wait behind them anyway, so it goes with the next send that finds an
        acknowledgement come, or as soon as the reader delivers one (_finish wakes the I/O
        thread: _drain_held). A supervisor that falls behind thus gets fewer, fuller requests
        instead of one per record. The reader is hurried for that one acknowledgement only: a
        URGENT_S window of them made every acknowledgement a wake-up on a loaded machine."""
        if not (self._in_flight and self._unread()):
            return False
        self._drain_held = True
        ch = self._channel  # close() may have dropped it since _unread() looked
        if ch is not None:
            ch.hurry(once=True)
        return True

    def _unread(self) -> bool:
        """Whether the supervisor has yet to read a request this producer wrote (the request
        ring's head and tail; on the socket, SIOCOUTQ)."""
        ch = self._channel
        return ch is not None and ch.unread()

    def _send_inline(self, todo: list[_Builder]) -> None:
        """With self._io_lock held (by _take_for_inline_send); releases it."""
        try:
            if todo and not self._send_todo(todo):
                with self._cond:
                    self._cond.notify()  # not connected: the I/O thread retries with backoff
        finally:
            self._io_lock.release()

    def _make_room(self, topic: str, p: int, total: int, wait: bool = True) -> None:
        """Under self._cond, before appending `total` bytes of records to (topic, p) in one go:
        wait for buffer memory for all of them (so that _append does not release the lock midway,
        letting the sender seal a half-filled batch; not wait: the caller did), and seal an open
        batch they would overflow."""
        if wait:
            self._wait_for_room(total)
        b = self._open.get((topic, p))
        if b is not None and b.records and b.size + total > self._batch_max[topic]:
            self._seal((topic, p), b)

    def _wait_for_room(self, nbytes: int) -> None:
        """Under self._cond: backpressure while buffer_memory cannot take nbytes more (the
        supervisor is slower than the caller, or unreachable), for at most max_block_ms."""
        deadline = None
        while self._queued_bytes + nbytes > self.buffer_memory and self._queued_bytes > 0:
            if self._closed:
                raise ClosedError("the producer is closed")
            deadline = deadline or time.monotonic() + self.max_block
            left = deadline - time.monotonic()
            if left <= 0:
                raise OperationTimeoutError(
                    f"{self._queued_bytes} bytes are waiting to be sent; buffer_memory is full")
            self._wait_for_memory(left)

    def _check_size(self, topic: str, n: int) -> None:
        limit = self._record_max.get(topic, self.max_request_size)
        if n + F.BATCH_HEADER_SIZE > limit:
            what = "max_request_size" if limit == self.max_request_size else \
                f"the max_message_bytes of topic {topic!r}"
            raise RecordTooLargeError(
                f"record of {n} bytes (with a {F.BATCH_HEADER_SIZE}-byte batch header) exceeds "
                f"{what} ({limit} bytes)")

    def _append(self, topic: str, p: int, rec: bytes, ts: int, wait: bool = True
                ) -> tuple[_Builder, int]:
        """Under self._cond: add rec to the open batch of (topic, p), rolling batches as needed
        (not wait: the caller made room for it, and for the records of its call before it)."""
        if self._closed:
            raise ClosedError("the producer is closed")
        if wait and self._queued_bytes + len(rec) > self.buffer_memory:
            self._wait_for_room(len(rec))
        key = (topic, p)
        limit = self._batch_max[topic]
        b = self._open.get(key)
        if b is not None and b.size + len(rec) > limit and b.records:
            self._seal(key, b)
            b = None
        if b is None:
            b = self._open[key] = _Builder(topic, p, self)
        idx = b.add(rec, ts)
        self._queued_bytes += len(rec)
        if b.size >= limit:
            self._seal(key, b)
        elif len(b.records) == 1 and self.linger:
            self._cond.notify()  # the sender must learn this batch's linger deadline
        return b, idx

    def _seal(self, key: tuple[str, int], b: _Builder, notify: bool = True) -> None:
        del self._open[key]
        self._sealed += 1
        b.order = self._sealed
        self._ready.append(b)
        if self._hold_at:
            self._unacked[key] = self._unacked.get(key, 0) + 1
        if self._sticky.get(b.topic) == b.partition:
            n = self._partitions.get(b.topic, 1)
            self._sticky[b.topic] = random.randrange(n)
        if notify:
            self._cond.notify()

    def _wait_for_memory(self, timeout: float) -> None:
        """Under self._cond: a caller blocked on buffer_memory (counted, so _finish wakes it)."""
        self._blocked += 1
        try:
            with self._awaiting_acks():
                self._cond.wait(timeout)
        finally:
            self._blocked -= 1
