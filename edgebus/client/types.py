"""Small public value types and futures shared by the clients."""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, NoReturn, Protocol

from edgebus.errors import OperationTimeoutError

log = logging.getLogger("edgebus.producer")


class _Running(threading.local):
    """The producers whose send() callbacks this thread is running, innermost last (nested: a
    callback's send() may settle others). Pushed around each loop that runs callbacks
    (BatchResult.done, one_send.run_callbacks, which the C settling calls), not per callback:
    flush() and close() ask it (in_callback) because inside one of their own producer's callbacks
    they would wait for acknowledgements only this thread could take (Kafka's producer: flush()
    raises there, close() becomes close(0)). Per producer, as Kafka's check is (its own I/O
    thread): another producer's flush() in a callback waits for its own threads, and works."""

    def __init__(self) -> None:
        self.owners: list[object] = []


RUNNING = _Running()


def in_callback(owner: object) -> bool:
    """Whether this thread is running one of `owner`'s send() callbacks (_Running)."""
    return owner in RUNNING.owners


def run_rest(arg: object, rest: Iterator[Callable[[Any], object]],
             failed: BaseException) -> NoReturn:
    """A callback raised `failed`: run the callbacks after it (`rest`, the iterator the caller's
    loop was taking them from; an Exception logged) and raise the first BaseException that is not
    an Exception, `failed` or a later one's; else `failed`."""
    first = None if isinstance(failed, Exception) else failed
    for cb in rest:
        try:
            cb(arg)
        except Exception:
            log.exception("a send() callback raised; ignored")
        except BaseException as e:  # KeyboardInterrupt, SystemExit: the first is raised
            if first is None:
                first = e
            else:
                log.error("a send() callback raised %r after another's %r; logged", e, first)
    raise failed if first is None else first


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    topic: str
    partition: int
    offset: int  # -1 with acks="none"
    timestamp: int


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


def partition_for_key(key: bytes, partitions: int) -> int:
    """Stable across restarts and versions: CRC-32 (IEEE) of the key bytes, modulo the count.

    Changing this function would move keys between partitions; tests pin sample values.
    """
    return zlib.crc32(key) % partitions


class AckOwner(Protocol):
    """What a batch's result asks of the producer whose acknowledgements may be taken lazily
    (edgebus/client/lazy_acks.py): nobody is woken for them until someone asks."""

    _timed_acks: bool  # acknowledgements come unasked already: _callback_added need not be called
    # The lock of every BatchResult it owns: a lock made per batch was a C allocation and free
    # per one-record send; held only briefly (never across a callback or another result's lock).
    _results_lock: threading.Lock

    def _awaiting_acks(self) -> AbstractContextManager[None]:
        """Entered while a thread blocks on a result: acknowledgements are delivered as they come."""
        ...

    def _poll_acks(self) -> None:
        """Take the acknowledgements already there (a future is asked whether it is done)."""
        ...

    def _callback_added(self) -> None:
        """A callback waits for a result: acknowledgements must come without anyone asking."""
        ...


class BatchResult:
    """Completion of one produced batch, shared by the futures of its records."""

    __slots__ = ("_done", "_event", "_lock", "base_offset", "callbacks", "error", "owner",
                 "partition", "timestamp", "topic")

    def __init__(self, topic: str, partition: int, owner: AckOwner | None = None) -> None:
        # Asked when someone blocks on the result, asks whether it is done or adds a callback
        # (its acknowledgement may be in the ring or socket with nobody woken for it).
        self.owner = owner
        # The Event is made only when someone waits: making one costs ~4 us, more than the rest
        # of a one-record send, and most batches are never waited for one by one.
        self._event: threading.Event | None = None
        self._done = False
        # Invariant: a callback is either in `callbacks` when done() takes the list, or added
        # after done() set _done (and then run by add_callback itself): never both, never
        # neither. The same lock orders a waiter's Event against done(). The owner's, shared by
        # its results (AckOwner._results_lock).
        self._lock = threading.Lock() if owner is None else owner._results_lock
        self.topic = topic
        self.partition = partition
        self.base_offset = -1
        self.timestamp = -1
        self.error: BaseException | None = None
        self.callbacks: list = []

    def done(self, base_offset: int, timestamp: int, error: BaseException | None) -> None:
        with self._lock:
            self.base_offset = base_offset
            self.timestamp = timestamp
            self.error = error
            self._done = True
            if self._event is not None:
                self._event.set()
            callbacks, self.callbacks = self.callbacks, []
        if not callbacks:
            return
        rest = iter(callbacks)
        running = RUNNING.owners  # flush()/close() inside a callback must know (in_callback)
        running.append(self.owner)
        try:  # (around the loop, not in it: nothing added per callback)
            for cb in rest:
                cb(self)
        except BaseException as e:  # the later callbacks still run, then it is raised
            run_rest(self, rest, e)
        finally:
            running.pop()

    def add_callback(self, cb: Callable[[BatchResult], object]) -> None:
        """cb(self) once done: now (in this thread) if already done, else in done()'s thread."""
        with self._lock:
            pending = not self._done
            if pending:
                self.callbacks.append(cb)
        if not pending:
            cb(self)
            return
        owner = self.owner  # outside the lock: it may nudge the producer's reader
        if owner is not None and not owner._timed_acks:
            owner._callback_added()

    def wait(self, timeout: float | None) -> bool:
        if self._done:
            return True
        with self._lock:
            if self._done:
                return True
            if self._event is None:
                self._event = threading.Event()
            ev = self._event
        if self.owner is None:
            return ev.wait(timeout)
        with self.owner._awaiting_acks():
            return ev.wait(timeout)

    @property
    def is_done(self) -> bool:
        """Whether the outcome is known, taking an acknowledgement that came meanwhile."""
        if not self._done and self.owner is not None:
            self.owner._poll_acks()
        return self._done


class FutureRecordMetadata:
    """The future of one sent record: `.get(timeout)` gives its RecordMetadata or raises."""

    __slots__ = ("_batch", "_index", "_timestamp")

    def __init__(self, batch: BatchResult, index: int, timestamp: int) -> None:
        self._batch = batch
        self._index = index
        self._timestamp = timestamp

    def get(self, timeout: float | None = None) -> RecordMetadata:
        b = self._batch
        if not b.wait(timeout):
            raise OperationTimeoutError(f"no acknowledgement within {timeout} s")
        if b.error is not None:
            raise b.error
        offset = b.base_offset + self._index if b.base_offset >= 0 else -1
        return RecordMetadata(b.topic, b.partition, offset, self._timestamp)

    def done(self) -> bool:
        return self._batch.is_done

    def succeeded(self) -> bool:
        return self._batch.is_done and self._batch.error is None

    def failed(self) -> bool:
        return self._batch.is_done and self._batch.error is not None

    @property
    def exception(self) -> BaseException | None:
        b = self._batch
        return b.error if b.is_done else None

    # Callbacks (kafka-python's three): each runs once, on the producer's I/O thread when the
    # outcome arrives (or at once, in the caller's thread, if it is already known). Success
    # means appended at the producer's `acks` level ("written": in the log file; "durable":
    # fsynced; "none": sent, offset -1). An exception a callback raises is logged and ignored.
    def add_callback(self, fn: Callable[[RecordMetadata], object]) -> FutureRecordMetadata:
        """fn(metadata) if the record is acknowledged; not called if it fails."""
        return self.add_both(lambda r: None if isinstance(r, BaseException) else fn(r))

    def add_errback(self, fn: Callable[[BaseException], object]) -> FutureRecordMetadata:
        """fn(exception) if the record failed for good (after the producer's retries)."""
        return self.add_both(lambda r: fn(r) if isinstance(r, BaseException) else None)

    def add_both(self, fn: Callable[[RecordMetadata | BaseException], object]) -> FutureRecordMetadata:
        """fn(metadata) on success, fn(exception) on failure: the outcome, whichever it is."""
        def cb(_b: BatchResult) -> None:
            try:
                result: RecordMetadata | BaseException = self.get(0)
            except Exception as e:  # a lost connection can fail a batch with any error
                result = e
            fn(result)
        self._batch.add_callback(cb)
        return self


class FutureBatch:
    """The future of a send_batch call: `.get(timeout)` gives a RecordMetadata per record."""

    def __init__(self, parts: Sequence[tuple[BatchResult, int, Sequence[int]]], timestamps: list[int]) -> None:
        self._parts = parts  # (batch, first index in that batch, positions of its records in the call)
        self._timestamps = timestamps
        self.count = len(timestamps)

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[RecordMetadata | None] = [None] * self.count
        for b, first, positions in self._parts:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not b.wait(left):
                raise OperationTimeoutError(f"no acknowledgement within {timeout} s")
            if b.error is not None:
                raise b.error
            for i, pos in enumerate(positions):
                off = b.base_offset + first + i if b.base_offset >= 0 else -1
                out[pos] = RecordMetadata(b.topic, b.partition, off, self._timestamps[pos])
        return out  # type: ignore[return-value]

    def done(self) -> bool:
        return all(b.is_done for b, _, _ in self._parts)

    def add_callback(self, fn: Callable[[list[RecordMetadata]], object]) -> FutureBatch:
        """fn(list of RecordMetadata) if every record is acknowledged (FutureRecordMetadata)."""
        return self.add_both(lambda r: None if isinstance(r, BaseException) else fn(r))

    def add_errback(self, fn: Callable[[BaseException], object]) -> FutureBatch:
        """fn(the first exception) if any record failed for good."""
        return self.add_both(lambda r: fn(r) if isinstance(r, BaseException) else None)

    def add_both(self, fn: Callable[[list[RecordMetadata] | BaseException], object]) -> FutureBatch:
        """fn(list of RecordMetadata, or the first exception) once every record's batch is done:
        exactly once, on the producer's I/O thread (or now, if all are done already)."""
        left = [len(self._parts)]
        lock = threading.Lock()

        def cb(_b: BatchResult) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            try:
                result = self.get(0)
            except Exception as e:  # a lost connection can fail a batch with any error
                fn(e)
            else:
                fn(result)

        if not self._parts:
            fn([])
        for b, _, _ in self._parts:
            b.add_callback(cb)
        return self
