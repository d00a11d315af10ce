"""The I/O-thread half of edgebus.Producer: sending sealed batches, acknowledgements, retries.

`_Delivery` is a mixin of `Producer` (edgebus/client/producer.py, whose module docstring describes
batching, ordered retries and the durable hold): `_sender` is the I/O thread; it seals batches at
their linger deadline, pipelines them on one connection (`_send_todo`), and `_finish` /
`_retry` settle each outcome (ordered retries: `_OrderedRetries`, edgebus/client/ordered_retries.py,
its base). The attributes below are set by `Producer.__init__`; they are declared here so that
mypy checks their use.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.backoff import backoff_delay
from edgebus.client.batch_builder import _Builder
from edgebus.client.channel import AsyncChannel
from edgebus.client.ordered_retries import _OrderedRetries
from edgebus.client.shm_channel import ShmAsyncChannel, open_async_channel
from edgebus.errors import (
    BrokerUnavailableError,
    ClosedError,
    EdgebusError,
    OperationTimeoutError,
)
from edgebus.fastpath.produce import produce_body_parts, produce_result
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ResponseFrame

if TYPE_CHECKING:
    from edgebus.client.txn import Sequencer

log = logging.getLogger("edgebus.producer")


def finish_all(finish: Callable[..., None], batches: list[Any], err: BaseException,
               **kw: Any) -> None:
    """Fail every batch (`_finish`), then raise the first BaseException a user's callback
    raised on the way (KeyboardInterrupt): one raising callback must not leave the batches after
    it with no outcome, taken off every table (their futures never ended, flush() returned)."""
    failed: BaseException | None = None
    for b in batches:
        try:
            finish(b, -1, -1, err, **kw)
        except BaseException as e:
            if failed is None:
                failed = e
    if failed is not None:
        raise failed


class _Delivery(_OrderedRetries):
    """The I/O thread's methods of Producer; the state they share with its front half."""

    # Set by Producer.__init__ (settings).
    acks: int
    linger: float
    max_in_flight: int
    max_request_size: int
    delivery_timeout: float
    request_timeout: float
    retries: float
    retry_backoff: float
    retry_backoff_max: float
    backoff: float
    backoff_max: float
    path: Path
    transport: str
    # Set by Producer.__init__ (state, under _cond unless said otherwise).
    _ordered: bool
    _busy: dict[tuple[str, int], int]
    _per_partition: int
    _retry_at: dict[tuple[str, int], float]
    _counts: dict[str, int]
    _cond: threading.Condition
    _open: dict[tuple[str, int], _Builder]
    _ready: deque[_Builder]
    _queued_bytes: int
    _blocked: int
    _in_flight: int
    _sent: dict[int, _Builder]
    _sender_wake_at: float
    _flushing: int
    _closed: bool
    _close_now: bool  # close() inside a callback: fail what is left and end (_close_in_callback)
    _channel: AsyncChannel | ShmAsyncChannel | None  # replaced under _io_lock
    _channel_gone: bool  # close() took it (under _io_lock): never opened again
    _hold_at: int
    _unacked: dict[tuple[str, int], int]
    _drain_held: bool
    _io_lock: threading.Lock
    _timed_acks: bool
    _ack_waiters: list[int]  # threads in _awaiting_acks (one count, shared with the channel)
    _ack_waiters_lock: threading.Lock
    # Defined by Producer (front half) and TransactionalProducer (edgebus/client/txn.py).
    _seal: Callable[..., None]
    _held_behind_unread: Callable[[], bool]
    _seq: Sequencer | None
    _failed_for_good: Callable[[Any, BaseException], None]

    @contextlib.contextmanager
    def _awaiting_acks(self) -> Iterator[None]:
        """Entered while a thread blocks on acknowledgements: the channel delivers each at once
        until it leaves (hurry's window alone can run out before a descheduled reader looks).
        Counted by the producer, whose count every channel shares (share_waiters): a wait
        that began before the channel was opened, or before a reconnection, counts there too."""
        with self._ack_waiters_lock:
            self._ack_waiters[0] += 1
        try:
            ch = self._channel  # after the count: a channel opened since has seen it
            if ch is not None:
                ch.hurry()  # a wait under way is nudged; the next ones see the count
            yield
        finally:
            with self._ack_waiters_lock:
                self._ack_waiters[0] -= 1

    # --- I/O thread ------------------------------------------------------------------------------
    def _sender(self) -> None:
        """The I/O thread. A user callback's BaseException (KeyboardInterrupt, SystemExit) met
        here (an expiry's, a reap's, an acks=0 send's) has nobody to be raised to: logged, and the
        thread goes on, as the reader does (dispatch._read_loop) and as Kafka's I/O thread does
        with its callbacks' exceptions; ending it left every later batch unsent and flush()
        waiting forever. The loop takes up from the state it left (every batch is settled,
        requeued or still where it was).

        An ordinary Exception here is edgebus's own (a callback's is caught in _finish): a bug,
        or an OSError nobody expected. It used to end the thread, with the same result. Logged at
        ERROR with its traceback and the loop goes on after a pause (Kafka's Sender: "Uncaught
        error in kafka producer I/O thread", and goes on), rather than failing every pending
        batch and refusing later sends: a transient fault (EMFILE while reconnecting, say) then
        costs a delay, not every record the producer holds and the producer itself, and no batch
        is lost either way, since where a step holds batches it puts them back or fails them
        before the error leaves it (_send_todo), and the loop's other steps move batches between
        tables only under _cond, whole. The pause (doubling from reconnect_backoff_ms to
        reconnect_backoff_max_ms while the errors follow each other) keeps a persistent bug from
        spinning a core and flooding the log; its records still end at their delivery timeout."""
        errors = 0
        last = -math.inf
        while True:
            try:
                self._sender_loop()
                return
            except Exception as e:
                now = time.monotonic()
                errors = errors + 1 if now - last < 10 * self.backoff_max else 1
                last = now
                pause = backoff_delay(errors - 1, self.backoff, self.backoff_max)
                log.error("uncaught error in the producer's I/O thread (%r); going on in %.2f s",
                          e, pause, exc_info=e)
                time.sleep(pause)
            except BaseException as e:
                log.error("a callback raised %r in the producer's I/O thread; logged, sending "
                          "goes on", e, exc_info=e)

    def _sender_loop(self) -> None:
        attempt = 0  # failed connection attempts in a row
        while True:
            expired = False
            with self._cond:
                while True:
                    if self._close_now:
                        break
                    now = time.monotonic()
                    next_due = None
                    for key, b in list(self._open.items()):
                        if (self._hold_at and self._unacked.get(key, 0) >= self._hold_at
                                and not (self._flushing or self._closed)):
                            continue  # durable: held until an acknowledgement (it wakes us)
                        due = b.created + self.linger
                        if self._ordered and self._waiting(key, now):
                            # Kept open (and filling) until its partition may send; the end of
                            # the in-flight batch wakes this thread, a backoff's end is a due.
                            if self._busy.get(key):
                                continue
                            due = max(due, self._retry_at[key])
                        if self._flushing or self._closed:
                            self._seal(key, b)
                        elif not self.linger and self._held_behind_unread():
                            # Woken for anything else (a new batch's deadline, notified when the
                            # sender's send ran; late on a loaded machine, in the middle of a
                            # burst), it must hold what the senders hold: sealed, the held
                            # batch left split in two (issue hold30).
                            continue
                        elif due <= now:
                            self._seal(key, b)
                        elif next_due is None or due < next_due:
                            next_due = due
                    if self._sent:
                        # Request and delivery timeouts bound batches already sent too: a
                        # supervisor that stopped answering (socket open) must not hold futures
                        # forever.
                        oldest = self._oldest_deadline()
                        ch = self._channel
                        if oldest <= now and ch is not None:
                            # Answers nobody was woken for (lazy_acks.py) are not overdue.
                            ch.reap(force=True)
                            oldest = self._oldest_deadline() if self._sent else math.inf
                        if oldest <= now:
                            expired = True
                            break
                        next_due = oldest if next_due is None else min(next_due, oldest)
                    if self._ready and self._in_flight < self.max_in_flight:
                        if not self._ordered:
                            break
                        sendable, backoff_end = self._ordered_ready(now)
                        if sendable:
                            break
                        if backoff_end is not None:
                            next_due = backoff_end if next_due is None else min(next_due, backoff_end)
                    if self._closed and not self._ready and not self._in_flight:
                        return
                    self._sender_wake_at = math.inf if next_due is None else next_due
                    # With batches ready, max_in_flight are out: their acknowledgements are
                    # awaited; so are they while closing (this thread ends once they come, and
                    # nobody else may ask for them: lazy_acks.py).
                    try:
                        with self._awaiting_acks() if self._ready or self._closed \
                                else contextlib.nullcontext():
                            self._cond.wait(None if next_due is None else max(0.0, next_due - now))
                    finally:
                        self._sender_wake_at = 0.0
            if self._close_now:
                self._close_in_callback()
                return
            if expired:
                # Dropping the connection fails every in-flight batch (outcome unknown; retried
                # in ordered mode while the delivery timeout allows); the next batch reconnects.
                with self._io_lock:
                    ch, self._channel = self._channel, None
                if ch is not None:
                    log.warning("no acknowledgement within request_timeout_ms=%d or "
                                "delivery_timeout_ms=%s; reconnecting",
                                int(self.request_timeout * 1000), self._delivery_ms())
                    ch.close()
                with self._cond:  # whatever the transport did not fail on close
                    err = OperationTimeoutError(
                        f"no acknowledgement within request_timeout_ms="
                        f"{int(self.request_timeout * 1000)} or delivery_timeout_ms="
                        f"{self._delivery_ms()}")
                    finish_all(self._finish, list(self._sent.values()), err)  # retried if
                    # ordered mode allows
                continue
            with self._io_lock:
                with self._cond:
                    todo = self._pop_ready()
                if not todo:
                    continue  # a caller sent them inline (linger_ms=0)
                if not self._send_todo(todo):
                    if self._channel_gone:
                        # close() took the channel: _send_todo failed these, and the rest fail
                        # likewise at once, not one backoff apart (the thread outlived close()
                        # by minutes with hundreds of batches left).
                        continue
                    time.sleep(backoff_delay(attempt, self.backoff, self.backoff_max))
                    attempt += 1
                    continue
            attempt = 0

    def _close_in_callback(self) -> None:
        """The I/O thread's end after close() inside a callback (Producer.close; Kafka's close(0)
        from a callback, whose Sender then fails what is left): what was sent fails with a
        ClosedError saying it may have been written, what was not (open, ready or waiting out a
        backoff) with one saying it was not sent; then the connection is closed (its reader
        ends). Under the I/O lock, so no send is writing meanwhile (and none opens a channel
        after it: _channel_gone), as close() takes it: waited for 5 s at most, since a writer
        stuck on a full ring (the supervisor stopped) is ended by the channel's close instead,
        its batches then failed by _send_todo. The channel is closed after both locks are let
        go, as its reader may need the mutex to finish a callback before it can end."""
        sent_err = ClosedError("the producer was closed inside a send() callback before this "
                               "batch was acknowledged (it may have been written)")
        unsent_err = ClosedError("not sent: the producer was closed inside a send() callback "
                                 "(close() there does not wait)")
        ch = None
        try:
            got = self._io_lock.acquire(timeout=5)
            try:
                ch, self._channel = self._channel, None
                self._channel_gone = True
                with self._cond:
                    for key, b in list(self._open.items()):
                        self._seal(key, b, notify=False)
                    unsent = list(self._ready)
                    self._ready.clear()
                    try:
                        finish_all(self._finish, list(self._sent.values()), sent_err)
                    finally:
                        finish_all(self._finish, unsent, unsent_err, in_flight=False)
                        self._cond.notify_all()  # a close() from outside waits for this thread
            finally:
                if got:
                    self._io_lock.release()
        finally:
            # Also when a callback of the batches failed above raised (KeyboardInterrupt): the
            # channel is ours alone now (taken off the producer), and nobody else would close it.
            if ch is not None:
                ch.close()

    def _pop_ready(self) -> list[_Builder]:
        """Under self._cond (and self._io_lock): the batches to send now, oldest first. They
        count as in flight from here on, so a flush() looking before they are sent still waits
        for them. Ordered mode: up to _per_partition in flight per partition (1, or more for an
        idempotent producer), none of a partition that waits out a backoff, or that has a batch
        to resend while others are in flight; the others stay, in order."""
        todo: list[_Builder] = []
        if not self._ordered:
            while self._ready and self._in_flight + len(todo) < self.max_in_flight:
                todo.append(self._ready.popleft())
        else:
            now = time.monotonic()
            keep: deque[_Builder] = deque()
            # Partitions found unable to send: their later batches stay too, in order (and the
            # scan of a long queue costs a set look-up per batch).
            blocked: set[tuple[str, int]] = set()
            while self._ready and self._in_flight + len(todo) < self.max_in_flight:
                b = self._ready.popleft()
                key = (b.topic, b.partition)
                if key not in blocked and not self._waiting(key, now):
                    self._busy[key] = self._busy.get(key, 0) + 1
                    todo.append(b)
                else:
                    blocked.add(key)
                    keep.append(b)
            keep.extend(self._ready)
            self._ready = keep
        self._in_flight += len(todo)
        return todo

    def _oldest_deadline(self) -> float:
        """Under self._cond: the earliest deadline of the batches in flight. They are sent with
        deadlines in order, except retried ones (their delivery deadline may come first)."""
        if not self._ordered:
            return next(iter(self._sent.values())).deadline
        return min(b.deadline for b in self._sent.values())

    def _delivery_ms(self) -> str:
        return "None" if self.delivery_timeout == math.inf else str(int(self.delivery_timeout * 1000))

    def _send_todo(self, todo: list[_Builder]) -> bool:
        """Under self._io_lock: send in order. False when no connection could be made (the
        batches are requeued or expired)."""
        try:
            ch = self._ensure_channel()
        except (BrokerUnavailableError, ClosedError) as e:
            # Closed: they fail (never requeued). No supervisor to take them (its socket refuses
            # or is gone: it died, kill -9 included): a plain producer fails them now, saying
            # they were not sent, instead of trying again until delivery_timeout_ms with
            # nobody told (records held back behind requests of a connection that died with
            # the supervisor waited that long: 120 s by default). Ordered retries wait for it.
            # Its subclasses (an untrusted socket, transport='shm' without rings) are not
            # retriable: they fail the batches at once, with their own type, below.
            if type(e) is BrokerUnavailableError and not self._ordered:
                e = BrokerUnavailableError(f"not sent: {e}")
                self._requeue_or_expire(todo, e, popped=True, unreachable=True)
            else:
                self._requeue_or_expire(todo, e, popped=True)
            return False
        except Exception as e:
            # Not a refusal: an error opening the channel nobody expected (EMFILE, ENOMEM, a
            # bug). It used to leave these counted in flight, never sent (flush() waited
            # forever, and the I/O thread ended: _sender). They go back to the front, in order,
            # for the caller's backoff and next attempt (or fail at their delivery timeout).
            log.error("could not open a connection to the supervisor (%r); trying again after "
                      "a backoff", e, exc_info=e)
            self._requeue_or_expire(todo, BrokerUnavailableError(f"not sent: {e!r}"),
                                    popped=True)
            return False
        for i, b in enumerate(todo):
            try:
                self._send_batch(ch, b)
            except BrokerUnavailableError as e:
                # Its write failed, so the supervisor has none of it (dispatch.unwritten): it
                # fails, saying not sent; the ones after it were never tried, so retry them
                # (also when one of its callbacks raises: none may stay counted, never sent).
                try:
                    with self._cond:
                        self._finish(b, -1, -1, e)
                finally:
                    self._requeue_or_expire(todo[i + 1 :], e, popped=True)
                break
            except Exception as e:
                # edgebus's own (a callback's Exception is caught in _finish), raised while
                # encoding or writing this batch: whether its request was written, or half of
                # it, is unknown, so the connection is dropped (a half frame must not be
                # followed by others) and this batch gets a lost connection's outcome (failed,
                # saying it may have been written; retried in ordered mode); the ones after it
                # were not tried and go back to the front. Before, all of them stayed counted
                # in flight, never sent or settled, and flush() waited forever.
                log.error("internal error sending a batch to %s-%d (%r); dropping the "
                          "connection", b.topic, b.partition, e, exc_info=e)
                err = BrokerUnavailableError(
                    f"the connection was dropped after an internal error ({e!r}); the batch "
                    f"may have been written")
                self._channel = None  # under _io_lock (the caller's)
                try:
                    ch.close()  # what it has in flight fails (retried in ordered mode)
                    with self._cond:
                        # Failed by the close if its request was registered; else still counted
                        # (in _sent or not) and nowhere else: not requeued by the close.
                        if not b.result._done and (id(b) in self._sent
                                                   or all(r is not b for r in self._ready)):
                            self._finish(b, -1, -1, err)
                finally:
                    self._requeue_or_expire(todo[i + 1 :], err, popped=True)
                return False
            except BaseException:
                # A callback's (acks=0: a batch is settled here once written): the ones after
                # it were not tried; back to the front for the I/O thread, then raised.
                self._requeue_or_expire(
                    todo[i + 1 :], BrokerUnavailableError("not sent: a callback raised first"),
                    popped=True)
                raise
        return True

    def _ensure_channel(self) -> AsyncChannel | ShmAsyncChannel:
        if self._channel_gone:  # a send that raced close(): no new connection after it
            raise ClosedError("the producer is closed")
        ch = self._channel
        if ch is None or ch.lost is not None:
            if ch is not None:
                self._channel = None  # closed: nothing may use it (hurry()) if reconnecting fails
                ch.close()
            ch = open_async_channel(self.path, self.transport, self.max_request_size)
            if not self._timed_acks:
                ch.only_when_asked()
            self._channel = ch
            # After the assignment: a thread that blocked, or added the first callback, while
            # the channel was being opened has either seen it or is seen here.
            ch.share_waiters(self._ack_waiters, self._ack_waiters_lock)
            if self._timed_acks:
                ch.want_callbacks()
        return ch

    def _requeue_or_expire(self, batches: list[_Builder], err: BaseException,
                           popped: bool = False, unreachable: bool = False) -> None:
        """Put unsent batches back at the front (or fail them once expired). popped: they came
        from _pop_ready and so are counted in _in_flight. unreachable: no supervisor took the
        connection (a plain producer: they fail now, and so do the batches still waiting)."""
        now = time.monotonic()
        with self._cond:
            if popped:
                self._in_flight -= len(batches)
                self._cond.notify_all()  # a flush() may be waiting on that count
                for b in batches:
                    self._not_busy((b.topic, b.partition))
            # A connection that cannot work (transport='shm' without rings, an untrusted socket)
            # fails the batches now: waiting out delivery_timeout would change nothing.
            hopeless = unreachable or not getattr(err, "retriable", True)
            if unreachable:
                # Everything else this producer holds waited for the same supervisor: open
                # batches (the linger_ms=0 hold behind unread or unanswered requests, the
                # durable hold, a lingering batch) and sealed ones; they fail with these, in
                # seal order, rather than one connection attempt (and backoff) each.
                for key, b in list(self._open.items()):
                    self._seal(key, b, notify=False)
                batches = [*batches, *self._ready]
                self._ready.clear()
            done = []
            for b in batches:
                if hopeless or now - b.created > self.delivery_timeout or self._closed:
                    done.append(b)
                else:
                    self._requeue(b)
            finish_all(self._finish, done, err, in_flight=False)

    def _send_batch(self, ch: AsyncChannel | ShmAsyncChannel, b: _Builder) -> None:
        if self._seq is None:
            parts, size = B.batch_parts(b.records, b.first_ts, b.max_ts, record_count=b.count)
        else:
            parts, size = self._seq.batch_parts(b)
        req = produce_body_parts(b.topic, b.partition, self.acks, parts, size)
        # Counted in _in_flight since _pop_ready; a BrokerUnavailableError goes to the caller,
        # which finishes the batch.
        if self.acks == M.ACKS_NONE:
            ch.send(M.Api.PRODUCE, req, None)
            with self._cond:
                self._finish(b, -1, b.max_ts, None)
            return

        def done(frame: ResponseFrame | None, err: BaseException | None) -> None:
            base, ts = -1, -1
            if frame is not None:
                try:
                    base, ts = produce_result(frame)
                except EdgebusError as e:
                    err = e
            with self._cond:
                self._finish(b, base, ts, err)

        with self._cond:
            b.deadline = min(b.created + self.delivery_timeout,
                             time.monotonic() + self.request_timeout)
            self._sent[id(b)] = b
            if b.deadline < self._sender_wake_at:
                self._cond.notify_all()  # the I/O thread must learn this batch's deadline
        ch.send(M.Api.PRODUCE, req, done)

    def _finish(self, b: _Builder, base: int, ts: int, err: BaseException | None,
                in_flight: bool = True) -> None:
        """Under self._cond."""
        if b.result._done:  # is_done without the property's call (once per acknowledgement)
            return
        if in_flight:
            self._in_flight -= 1
        self._sent.pop(id(b), None)
        held = False
        if self._hold_at:
            key = (b.topic, b.partition)
            n = self._unacked.pop(key, 0) - 1
            if n > 0:
                self._unacked[key] = n
            held = key in self._open  # its next records wait for this: send them now
        if self._ordered:
            key = (b.topic, b.partition)
            if in_flight:
                self._not_busy(key)
            if err is not None and self._retry(b, err):
                return
            self._retry_at.pop(key, None)
            self._cond.notify_all()  # its partition may send again (the I/O thread looks)
        if err is not None and self._seq is not None:
            self._failed_for_good(b, err)
        self._queued_bytes -= b.size - F.BATCH_HEADER_SIZE
        if err is None:
            self._counts["record-send-total"] += b.count
            self._counts["batch-send-total"] += 1
        else:
            self._counts["record-error-total"] += b.count
        try:
            b.result.done(base, ts, err)  # runs the user's callbacks
        except Exception:
            # A user callback's exception must not fail other batches or stop the I/O threads.
            log.exception("a send() callback raised; ignored")
        finally:
            # Wake only who can use this: waiters for memory or a flush, the I/O thread when
            # batches wait for in-flight room or it is closing. (Waking it on every
            # acknowledgement cost a thread wake-up per batch while it had nothing to do; it waits
            # with batches ready only while max_in_flight are out.)
            if self._drain_held:
                self._drain_held = False
                held = bool(self._open)
            if self._blocked or self._flushing or self._closed or held or (
                    (self._ready or self._open) and self._in_flight + 1 >= self.max_in_flight):
                self._cond.notify_all()
