"""A one-record send() in one step when nothing has to wait for it (issue 16).

At linger_ms=0 a send() used to encode the record, open a batch, seal it, pop it as ready, build
the batch header and its CRC, the PRODUCE body and the frame, and pass it through the channel's
layers to the ring or the socket: some fifty Python calls per record, run cache-cold between
two paced sends. When a record would leave at once anyway (nothing open or ready, a slot in
flight, buffer memory free, a plain producer: no ordered retries, no idempotence or
transaction, acks="written"), `_send_one` does the same in one lock hold and one channel call,
which builds, writes and sends the frame with one C call (the rings: edgebus/shm/produce.c
eb_ring_produce, which also makes the "has the supervisor read our last request" check and
rings the doorbell; the socket: edgebus/sock_send.c eb_sock_produce). Its bytes are the
general path's (tests/client/test_send_c.py, tests/client/test_fast_send.py compare them); the
batch it sends is one in flight like any other (a `_OneSend`: edgebus/client/one_send.py), so
acknowledgements, timeouts, a lost connection, flush() and close() treat it as any other.
Anything else, or a supervisor that has not read the last request yet (on the rings: the one
before it; the record then waits in an open batch, as the general path's hold does), takes the
general path (edgebus/client/producer.py).

Acknowledgements are taken in bulk: a send looks at the response ring (or the socket) only once
REAP_AT of its requests are unanswered; meanwhile the channel's reader collects them when its
unsignalled wait ends (edgebus/client/lazy_acks.py), so neither a syscall nor a wake-up is spent
per acknowledgement.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.client.batch_builder import _Builder
from edgebus.client.one_send import _OneSend, new_future, one_send_class, run_callbacks
from edgebus.client.record_frames import FAST_MAX_RECORD, produce_frame
from edgebus.client.types import FutureRecordMetadata
from edgebus.errors import BrokerUnavailableError, EdgebusError
from edgebus.fastpath.produce import _prefix, produce_result
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ResponseFrame

if TYPE_CHECKING:
    from edgebus.client.channel import AsyncChannel
    from edgebus.client.shm_channel import ShmAsyncChannel


# Unanswered requests before a send takes the acknowledgements itself. Below it they wait for the
# reader's next look (its unsignalled wait ends ACK_LAZY_GAPS send gaps after the last send); at
# it, one look takes them all. Well below max_in_flight (32 by default), at which sends would
# hold records back.
REAP_AT = 4
_HEADER = F.BATCH_HEADER_SIZE
_new = object.__new__
_monotonic = time.monotonic
_RECORD_FIXED = 22  # a record's bytes besides its key and value (docs/FORMAT.md 2.2)


class _FastSend:
    """Producer's one-step send (module docstring); state is Producer's, set in __init__."""

    # Set by Producer.__init__ / _Delivery (see there).
    acks: int
    linger: float
    max_in_flight: int
    buffer_memory: int
    delivery_timeout: float
    request_timeout: float
    _ordered: bool
    _hold_at: int
    _seq: Any
    _cond: threading.Condition
    _mutex: threading.RLock
    _io_lock: threading.Lock
    _open: dict[tuple[str, int], _Builder]
    _ready: deque[_Builder]
    _sent: dict[int, _Builder]
    _in_flight: int
    _queued_bytes: int
    _closed: bool
    _blocked: int
    _flushing: int
    _drain_held: bool
    _counts: dict[str, int]
    _record_max: dict[str, int]
    _sender_wake_at: float
    _channel: AsyncChannel | ShmAsyncChannel | None
    _finish: Callable[..., None]
    _timed_acks: bool
    _results_lock: threading.Lock
    _awaiting_acks: Callable[..., Any]
    _poll_acks: Callable[[], None]
    _callback_added: Callable[[], None]

    def _init_fast_send(self) -> None:
        # Whether _send_one may be used at all (the conditions that never change).
        self._fast = (produce_frame is not None and not self.linger and not self._ordered
                      and self._seq is None and not self._hold_at and self.acks == M.ACKS_WRITTEN)
        self._first_deadline = min(self.delivery_timeout, self.request_timeout)
        # Per partition: the class of its one-step sends (one_send.py), the PRODUCE body's start
        self._one_classes: dict[tuple[str, int], tuple[type[_OneSend], bytes]] = {}

    def _one_class(self, topic: str, p: int) -> tuple[type[_OneSend], bytes]:
        """The class of the one-step sends to (topic, p) and their PRODUCE body's start, made
        once per partition (also the C Sender's: edgebus/client/c_send.py)."""
        got = self._one_classes.get((topic, p))
        if got is None:
            got = self._one_classes[(topic, p)] = (
                one_send_class(self, topic, p, self._first_deadline),
                _prefix(topic, p, self.acks))
        return got

    def _one_step_done(self, b: _OneSend, frame: ResponseFrame | None,
                       err: BaseException | None) -> None:
        """A one-step send's outcome, one at a time: a lost connection, an error, or an answer
        the bulk walk (fast_acks.deliver) did not take. Any thread; takes the lock."""
        base, t = -1, -1
        if frame is not None:
            try:
                base, t = produce_result(frame)
            except EdgebusError as e:
                err = e
        with self._mutex:
            self._finish(b, base, t, err)

    def _one_step_acked(self, acked: list[tuple[_OneSend, int, int]]) -> None:
        """Successful answers to one-step sends, in response order (fast_acks.deliver): what
        `_finish` and `BatchResult.done` do for each, for all of them in one lock hold. Only a
        plain producer sends in one step (no ordered retries, idempotence or durable hold), so
        only their common part is needed. Any thread."""
        header = F.BATCH_HEADER_SIZE
        failed: BaseException | None = None
        with self._mutex:
            first_in_flight = self._in_flight
            sent, n, queued = self._sent, 0, 0
            lock = self._results_lock  # every result's (AckOwner)
            for r, base, ts in acked:  # r: the batch and its result (one_send.py)
                if r._done:
                    continue  # already settled (timed out, or the connection failed it)
                sent.pop(id(r), None)
                n += 1
                queued += r.size
                with lock:  # BatchResult.done, inline; its invariant with add_callback
                    r.base_offset = base
                    r.timestamp = ts
                    r._done = True
                    ev, cbs = r._event, r.callbacks
                    if cbs:
                        r.callbacks = ()
                if ev is not None or cbs:
                    # A callback's BaseException (KeyboardInterrupt) is raised once every
                    # record is settled and counted: each still gets its outcome.
                    try:
                        run_callbacks(r, ev, cbs)
                    except BaseException as e:  # raised below, after the counts
                        failed = failed or e
            self._in_flight -= n
            self._queued_bytes -= queued - n * header
            counts = self._counts
            counts["record-send-total"] += n
            counts["batch-send-total"] += n
            # _finish's wake-ups (see there): who can use the room these acknowledgements made
            held = False
            if self._drain_held:
                self._drain_held = False
                held = bool(self._open)
            if self._blocked or self._flushing or self._closed or held or (
                    (self._ready or self._open) and first_in_flight >= self.max_in_flight):
                self._cond.notify_all()
        if failed is not None:
            raise failed

    def _send_one(self, topic: str, p: int, key: bytes | None, value: bytes | None,
                  ts: int) -> FutureRecordMetadata | None:
        """Send one record now as a batch of its own; None when the general path must take it
        (nothing was done then)."""
        size = _RECORD_FIXED + (len(key) if key else 0) + (len(value) if value else 0)
        ch = self._channel
        if ch is None or size > FAST_MAX_RECORD or size + _HEADER > self._record_max[topic]:
            return None  # open or ready batches are looked at under the lock below
        io_lock = self._io_lock
        if not io_lock.acquire(False):
            return None  # the I/O thread is sending: the general path queues behind it
        try:
            with self._mutex:
                if (self._closed or self._open or self._ready or ch is not self._channel
                        or ch.lost is not None or self._in_flight >= self.max_in_flight
                        or self._queued_bytes + size > self.buffer_memory):
                    return None
                if self._in_flight >= REAP_AT:
                    ch.reap()  # their callbacks run here, under _cond (re-entrant)
                # The batch and its result in one object, no Python __init__ (one_send.py); what
                # is the same for every record of the partition is its class's.
                got = self._one_classes.get((topic, p))
                if got is None:
                    got = self._one_classes[(topic, p)] = (
                        one_send_class(self, topic, p, self._first_deadline),
                        _prefix(topic, p, self.acks))
                cls, pre = got
                b = cls()
                b.size = size + _HEADER
                b.first_ts = ts
                now = _monotonic()
                b.deadline = now + self._first_deadline
                hold = self._in_flight > 0
                self._in_flight += 1
                self._queued_bytes += size
                self._sent[id(b)] = b
                if b.deadline < self._sender_wake_at:
                    self._cond.notify_all()  # the I/O thread must learn this batch's deadline
            try:
                # open_async_channel's channels all have it (LazySocketChannel, ShmAsyncChannel);
                # the batch is the request's callback (_OneSend.__call__, fast_acks.py)
                sent = ch.send_record(pre, key, value, ts, b, hold, now)  # type: ignore[union-attr]
            except BrokerUnavailableError as e:
                with self._mutex:
                    self._finish(b, -1, -1, e)  # its write failed (not sent): failed, as the general path does
                return new_future(b, ts)
            except BaseException:
                # Another record's callback raised in the reap send_record runs before writing
                # (LazySocketChannel.unwritten): this one was not written, so it is not counted
                # either. Written (then pending), its answer or the connection's loss settles it.
                if getattr(ch, "unwritten", None) is b:
                    ch.unwritten = None  # type: ignore[union-attr]
                    with self._mutex:
                        self._in_flight -= 1
                        self._queued_bytes -= size
                        del self._sent[id(b)]
                        self._cond.notify_all()  # a flush() may have waited for it alone
                raise
            if not sent:  # the supervisor has our last request unread: hold this one back
                with self._mutex:
                    self._in_flight -= 1
                    self._queued_bytes -= size
                    del self._sent[id(b)]
                return None
            f = _new(FutureRecordMetadata)  # one_send.new_future, inline
            f._batch, f._index, f._timestamp = b, 0, ts
            return f
        finally:
            io_lock.release()
