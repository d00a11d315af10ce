"""edgebus.Producer: batching, partitioning and acknowledgement futures (kafka-python's names).

Records are encoded in the caller's thread into per-partition batches; one I/O thread sends a batch
when it reaches `batch_size` or has waited `linger_ms`, pipelining up to `max_in_flight` requests
on one connection. A lost connection fails the in-flight batches (their outcome is unknown) and
the next batch reconnects. The I/O thread's half is `_Delivery` (edgebus/client/delivery.py);
filling, sealing and (at linger_ms=0) sending batches from the caller's thread is
`_Accumulator` (edgebus/client/accumulator.py); a batch being filled is a `_Builder`
(edgebus/client/batch_builder.py).

Ordered retries (`retries` > 0; Kafka's `retries` with `max.in.flight.requests.per.connection=1`
per partition): a batch that fails with a retriable error (a lost connection, a request timeout,
the supervisor shutting down, a full disk) goes back to the front of its partition and is sent
again after `retry_backoff_ms` (doubling, with jitter, up to `retry_backoff_max_ms`), before
anything newer of that partition; each partition then has at most one batch in flight, and its
next batch keeps filling (up to `batch_size`) while it waits, as Kafka's accumulator does. So the
order per partition, and so per key, survives retries; a record is appended at least once (a
batch whose connection died may have been written: resending it can duplicate it, never lose or
reorder it). An idempotent producer (`enable_idempotence`, `transactional_id`) may have up to
`max_in_flight_per_partition` (default and most 5, as Kafka) batches of a partition in flight:
their sequence numbers make the supervisor refuse any that does not follow the last one appended
(OutOfOrderSequenceError, nothing appended) and answer a resend of one it has with its offset.
When one fails, the ones after it fail too (the same lost connection) or are refused as out of
order; all go back in their order, the first is resent alone, and pipelining resumes once it is
acknowledged (edgebus/client/delivery.py). Other partitions keep moving meanwhile.
`delivery_timeout_ms` (None: no limit) bounds the whole time from send() to the outcome;
`request_timeout_ms` bounds one unanswered request (the connection is then dropped and the
batches in flight fail, or are retried).

Durable sends without lingering (`acks="durable"`, any `linger_ms`): an acknowledgement waits for
the fsync, so a partition whose records each left as a batch of their own had at most
`max_in_flight` records per fsync (7,500 records/s at linger_ms=0). As Kafka's accumulator does
while its in-flight requests wait, a partition with DURABLE_IN_FLIGHT batches unacknowledged keeps
its next records in one open batch (up to `batch_size`), sent as soon as one of them is
acknowledged: one fsync then covers everything that arrived meanwhile, and no record waits for
more than about two fsyncs. `flush()` and `close()` send it at once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.client import c_send
from edgebus.client.accumulator import Headers, _Accumulator, _as_bytes
from edgebus.client.batch_builder import _Builder
from edgebus.client.channel import AsyncChannel, SyncChannel, resolve_socket
from edgebus.client.delivery import _Delivery
from edgebus.client.fast_send import _FastSend
from edgebus.client.shm_channel import ShmAsyncChannel, check_transport
from edgebus.client.txn import TransactionalProducer
from edgebus.client.types import (
    FutureRecordMetadata,
    in_callback,
    partition_for_key,
)
from edgebus.errors import (
    IllegalStateError,
    OperationTimeoutError,
    UnknownPartitionError,
    error_for_code,
)
from edgebus.heap import keep_freed_heap
from edgebus.protocol import messages as M

log = logging.getLogger("edgebus.producer")

# acks="durable": batches per partition sent and not yet acknowledged before its next records are
# held back to fill one batch (module docstring). Two: one being fsynced while the next is
# written, so that the group commit after it covers the next one at once.
DURABLE_IN_FLIGHT = 2
# An idempotent producer's batches in flight per partition at most (Kafka's limit with
# idempotence: max.in.flight.requests.per.connection <= 5). Their sequence numbers keep them in
# order and resends free of duplicates; the supervisor remembers 32 batches per producer and
# partition (server/txn/producers.py), so every resend of these is recognised.
IDEMPOTENT_IN_FLIGHT = 5
# Bytes per batch by default. The supervisor's work is per batch, so small batches cost it CPU
# per record: at 64 KiB the benchmark's send_batch moved ~40% less than at 256 KiB with ~20% more
# supervisor CPU per record (bench/results/defaults.md). An open batch grows only as records come.
DEFAULT_BATCH_SIZE = 256 * 1024


class Producer(_Delivery, _Accumulator, _FastSend, TransactionalProducer):
    """Sends records to the supervisor; kafka-python's names and meanings where they fit.

    `acks`: what a successful future promises ("none": nothing, no answer; "written": in the log
    file; "durable": fsynced; README "Acknowledgements"). A future succeeds only at that level,
    and fails with the error otherwise (`future.add_callback` / `add_errback` / `add_both`).
    `retries` > 0 turns on ordered retries (module docstring): the mode for a producer that must
    not lose or reorder what it was given, like the MQTT bridge (`retries=math.inf`,
    `delivery_timeout_ms=None`: retry until the supervisor is back).
    `enable_idempotence=True`: resends never duplicate (ordered retries, retried until
    delivery_timeout_ms; up to `max_in_flight_per_partition` batches of a partition in flight,
    1..5, default 5); `transactional_id`: transactions (init_transactions, begin_transaction,
    commit_transaction, abort_transaction, send_offsets_to_transaction; edgebus/client/txn.py).
    """

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        acks: str | int = "written",
        linger_ms: float = 5,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_request_size: int = 1024 * 1024,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: float = 60_000,
        max_in_flight: int = 32,
        delivery_timeout_ms: float | None = 120_000,
        request_timeout_ms: float = 30_000,
        retries: float = 0,
        retry_backoff_ms: float = 100,
        retry_backoff_max_ms: float = 1000,
        reconnect_backoff_ms: float = 50,
        reconnect_backoff_max_ms: float = 2000,
        key_serializer: Callable[[Any], bytes] | None = None,
        value_serializer: Callable[[Any], bytes] | None = None,
        transport: str = "auto",
        enable_idempotence: bool = False,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        max_in_flight_per_partition: int = IDEMPOTENT_IN_FLIGHT,
    ) -> None:
        idempotent = enable_idempotence or transactional_id is not None
        if not 1 <= max_in_flight_per_partition <= IDEMPOTENT_IN_FLIGHT:
            raise ValueError(f"max_in_flight_per_partition must be 1..{IDEMPOTENT_IN_FLIGHT}, got "
                             f"{max_in_flight_per_partition!r}")
        if idempotent:
            if acks in ("none", 0):
                raise ValueError("an idempotent or transactional producer needs acks 'written' or 'durable'")
            retries = retries or math.inf  # ordered retries: resends are what it makes safe
        if retries < 0 or retry_backoff_ms <= 0 or retry_backoff_max_ms < retry_backoff_ms:
            raise ValueError("need retries >= 0 and 0 < retry_backoff_ms <= retry_backoff_max_ms")
        if request_timeout_ms <= 0 or (delivery_timeout_ms is not None and delivery_timeout_ms <= 0):
            raise ValueError("request_timeout_ms and delivery_timeout_ms must be positive")
        if isinstance(acks, str):
            if acks not in M.ACKS_BY_NAME:
                raise ValueError(f"acks must be one of none, written, durable; got {acks!r}")
            acks = M.ACKS_BY_NAME[acks]
        elif acks not in (0, 1, 2):
            raise ValueError(f"acks must be 0, 1 or 2; got {acks!r}")
        keep_freed_heap()  # batch-sized buffers reuse heap pages (edgebus/heap.py)
        self.acks = acks
        self.linger = linger_ms / 1000
        self.batch_size = batch_size
        self.max_request_size = max_request_size
        self.buffer_memory = buffer_memory
        self.max_block = max_block_ms / 1000
        self.max_in_flight = max_in_flight
        self.delivery_timeout = math.inf if delivery_timeout_ms is None else delivery_timeout_ms / 1000
        self.request_timeout = request_timeout_ms / 1000
        self.retries = retries
        self.retry_backoff = retry_backoff_ms / 1000
        self.retry_backoff_max = retry_backoff_max_ms / 1000
        # Ordered retries: at most one batch in flight per partition, or up to
        # max_in_flight_per_partition for an idempotent producer (module docstring).
        self._ordered = retries > 0
        self._per_partition = max_in_flight_per_partition if idempotent else 1
        self._busy: dict[tuple[str, int], int] = {}  # batches in flight per partition (ordered)
        self._sealed = 0  # batches sealed so far: each batch's `order`
        self._retry_at: dict[tuple[str, int], float] = {}  # partitions waiting out a backoff
        self._counts = {"record-send-total": 0, "record-retry-total": 0, "record-error-total": 0,
                        "batch-send-total": 0, "batch-retry-total": 0}
        self.backoff = reconnect_backoff_ms / 1000
        self.backoff_max = reconnect_backoff_max_ms / 1000
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer
        self.path = resolve_socket(socket)
        # "auto" (shared-memory rings when available), "shm" or "socket" (edgebus/client/shm_channel.py)
        self.transport = check_transport(transport)
        self._meta = SyncChannel(self.path)
        self._meta_lock = threading.Lock()
        self._partitions: dict[str, int] = {}
        # Per topic: the largest record and the largest batch it takes (its max_message_bytes
        # bounds both), so that a batch is never refused as a whole for being too large.
        self._record_max: dict[str, int] = {}
        self._batch_max: dict[str, int] = {}
        self._sticky: dict[str, int] = {}
        # _cond's lock, by name: `with self._mutex` is one C call, `with self._cond` two Python
        # calls around it (the one-step send takes it twice per record: fast_send.py).
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        self._open: dict[tuple[str, int], _Builder] = {}
        self._ready: deque[_Builder] = deque()
        self._queued_bytes = 0
        self._blocked = 0  # callers waiting in _wait_for_memory
        self._in_flight = 0
        self._sent: dict[int, _Builder] = {}  # batches sent and not yet answered, oldest first
        # When the I/O thread's current wait ends (monotonic; inf: no deadline; 0: not waiting, so
        # it looks at _sent before it waits again). A batch sent with a delivery deadline before
        # this must wake it; later ones need not (one wake-up per batch was most of the I/O
        # thread's cost at linger_ms=0).
        self._sender_wake_at = 0.0
        self._flushing = 0
        self._closed = False
        self._close_now = False  # close() inside a callback: the I/O thread fails what is left
        self._shut = False  # a close() from outside a callback has finished
        self._channel: AsyncChannel | ShmAsyncChannel | None = None
        self._channel_gone = False  # close() took the channel: a send after it must not open one
        # acks="durable": sealed, unacknowledged batches per partition; at DURABLE_IN_FLIGHT its
        # open batch is held (keeps filling) instead of sealed at its linger deadline. Ordered
        # mode with one batch in flight per partition holds a partition's next batch already;
        # an idempotent producer's (more in flight) is held as in unordered mode.
        self._hold_at = DURABLE_IN_FLIGHT if acks == M.ACKS_DURABLE and (
            not self._ordered or self._per_partition > DURABLE_IN_FLIGHT) else 0
        self._unacked: dict[tuple[str, int], int] = {}
        # Whether acknowledgements must come without anyone asking (AckOwner, lazy_acks.py), so
        # that the channel's reader collects them on a timer: once a callback is registered on a
        # future, and from the start when records wait for an acknowledgement before they are
        # sent (ordered retries, idempotence, the durable hold), which nobody else would ask for.
        self._timed_acks = self._ordered or idempotent or bool(self._hold_at)
        self._ack_waiters = [0]  # threads blocked on acknowledgements (_awaiting_acks)
        self._ack_waiters_lock = threading.Lock()
        self._results_lock = threading.Lock()  # every BatchResult's (AckOwner, client/types.py)
        # linger_ms=0: an open batch is held while the supervisor has not read our last request
        # (_take_for_inline_send); the next acknowledgement must then wake the I/O thread.
        self._drain_held = False
        # Held while popping ready batches and sending them, by the I/O thread or (linger_ms=0)
        # by a caller sending inline: batches leave in the order they were sealed.
        self._io_lock = threading.Lock()
        # Fail fast with a clear error when the supervisor is not there.
        self._meta.request(M.Api.API_VERSIONS, M.ApiVersionsRequest())
        # Idempotence and transactions (edgebus/client/txn.py): _seq, _txn (None: a plain producer)
        self._start_idempotence(idempotent, transactional_id, transaction_timeout_ms)
        self._init_fast_send()  # one-step sends (edgebus/client/fast_send.py)
        c_send.install(self)  # ... in one C call when it can (edgebus/client/c_send.py)
        self._thread = threading.Thread(target=self._sender, name="edgebus-producer", daemon=True)
        self._thread.start()

    # --- metadata --------------------------------------------------------------------------------
    def partitions_for(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is not None:
            return n
        with self._meta_lock:
            resp = self._meta.request(M.Api.METADATA, M.MetadataRequest([topic]))
        t = resp.topics[0]
        if t.error_code:
            raise error_for_code(t.error_code, t.error_message)
        limit = self.max_request_size
        for c in t.configs:
            if c.name == "max_message_bytes":
                limit = min(limit, int(c.value))
        self._record_max[topic] = limit
        self._batch_max[topic] = min(self.batch_size, limit)
        self._partitions[topic] = n = len(t.partitions)
        return n

    def _choose(self, topic: str, key: bytes | None, partition: int | None) -> int:
        n = self.partitions_for(topic)
        if partition is not None:
            if not 0 <= partition < n:
                raise UnknownPartitionError(f"topic {topic!r} has partitions 0..{n - 1}, not {partition}")
        elif key is not None:
            partition = partition_for_key(key, n)
        else:
            partition = self._sticky.get(topic)
            if partition is None:
                partition = self._sticky[topic] = random.randrange(n)
        if self._txn is not None:  # a transaction adds each partition before writing there
            self._txn.before_send(topic, partition)
        return partition

    # --- sending ---------------------------------------------------------------------------------
    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        if self.value_serializer is not None and value is not None:
            value = self.value_serializer(value)
        if self.key_serializer is not None and key is not None:
            key = self.key_serializer(key)
        if value is not None and value.__class__ is not bytes:
            value = _as_bytes(value, "value")
        if key is not None and key.__class__ is not bytes:
            key = _as_bytes(key, "key")
        n = self._partitions.get(topic)
        if n is None or self._txn is not None:
            p = self._choose(topic, key, partition)
        elif partition is not None and 0 <= partition < n:
            p = partition  # _choose's answer, without its two calls
        else:
            # likewise, the sticky partition of a record without a key
            sticky = self._sticky.get(topic) if partition is None and key is None else None
            p = self._choose(topic, key, partition) if sticky is None else sticky
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else int(timestamp_ms)
        if self._fast and not headers:
            fut = self._send_one(topic, p, key, value, ts)
            if fut is not None:
                return fut
        rec = B.encode_record(ts, key, value, headers or ())
        if len(rec) + F.BATCH_HEADER_SIZE > self._record_max[topic]:
            self._check_size(topic, len(rec))  # raises
        with self._cond:
            # The acknowledgements that came, taken before the append (_reap_first): a callback
            # raising in it raises here with nothing of this record done.
            self._drain_held = False
            try:
                ch = self._channel
                if ch is not None:
                    ch.reap()
                b, idx = self._append(topic, p, rec, ts)
            except BaseException:
                self._reap_first_failed()
                raise
            fut = FutureRecordMetadata(b.result, idx, ts)
            if self.linger:
                return fut
            todo = self._take_for_inline_send()  # in the same lock hold: one fewer per record
        if todo is not None:
            self._send_inline(todo)
        return fut

    def _send_held(self, topic: str, p: int, key: bytes | None, value: bytes | None,
                   ts: int) -> FutureRecordMetadata:
        """send()'s general path for a record without headers at linger_ms=0 (the same lines as
        send()'s tail): the C Sender's hand-over (edgebus/onestep_send.c) for a record it found must
        wait or batch (the supervisor behind, batches open or ready, a lock taken, no channel),
        without send()'s argument handling and _send_one again."""
        rec = B.encode_record(ts, key, value, ())
        if len(rec) + F.BATCH_HEADER_SIZE > self._record_max[topic]:
            self._check_size(topic, len(rec))  # raises
        with self._cond:
            try:
                self._reap_first()
                b, idx = self._append(topic, p, rec, ts)
            except BaseException:
                self._reap_first_failed()
                raise
            fut = FutureRecordMetadata(b.result, idx, ts)
            todo = self._take_for_inline_send()  # linger_ms=0: only such producers have a Sender
        if todo is not None:
            self._send_inline(todo)
        return fut

    def _poll_acks(self) -> None:
        """A future is asked whether it is done (AckOwner): take the acknowledgements that came
        with nobody woken for them. Any thread, no lock held (the channel's reap orders takers)."""
        ch = self._channel
        if ch is not None and self._in_flight:
            ch.reap(force=True)

    def _callback_added(self) -> None:
        """AckOwner: callbacks must run without anyone asking; the channel's reader times its
        unsignalled waits from now on (this channel's and every later one's)."""
        self._timed_acks = True
        ch = self._channel
        if ch is not None:
            ch.want_callbacks()

    def metrics(self) -> dict[str, dict[str, float]]:
        """Counters in kafka-python's shape ({"producer-metrics": {name: value}}): records and
        batches acknowledged (`record-send-total`, `batch-send-total`), records failed for good
        (`record-error-total`), sent again (`record-retry-total`, `batch-retry-total`), and
        whether the data connection is open (`connection-count`, 0 or 1; it opens at the
        first send)."""
        self._poll_acks()  # acknowledgements nobody was woken for count too
        with self._cond:
            out: dict[str, float] = dict(self._counts)
        ch = self._channel
        out["connection-count"] = 1 if ch is not None and ch.lost is None else 0
        return {"producer-metrics": out}

    # --- lifecycle -------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait for its acknowledgements. Not inside one of this
        producer's callbacks (IllegalStateError, as Kafka's IllegalStateException): they run in
        the threads that take acknowledgements (the reader, the I/O thread, a send's reap, with
        the producer's mutex held), so a wait there could only time out or hang."""
        if in_callback(self):
            raise IllegalStateError(
                "flush() inside a send() callback is not permitted: it would wait for "
                "acknowledgements that only the thread running the callback can take")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._open or self._ready or self._in_flight:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise OperationTimeoutError(f"flush did not finish within {timeout} s")
                    with self._awaiting_acks():  # per wait: the channel may be replaced meanwhile
                        self._cond.wait(left)
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Send what is buffered, wait for its acknowledgements (up to `timeout`), and close. A
        transaction still open is aborted (as Kafka's producer does): commit it first to keep it.

        Inside one of this producer's callbacks it waits for nothing (Kafka's close(0) there, with
        a WARNING): waiting would hang or time out (flush()), and the thread running the callback
        may be the one close() joins. The I/O thread then fails what is not yet acknowledged
        (ClosedError) and closes the connection (_close_now); a later close() from outside a
        callback waits for that. An open transaction is not aborted there (that is a request
        and a wait too): the supervisor aborts it after transaction_timeout_ms."""
        if self._shut:
            return
        if in_callback(self):
            if not self._closed:
                log.warning("close() inside a send() callback: closing without waiting (as "
                            "close(0)); records not yet acknowledged fail with ClosedError")
                with self._cond:  # an RLock: the callback may run with it held
                    self._close_now = True
                    self._closed = True
                    self._cond.notify_all()
            return
        # closed already (from a callback, or another close() under way): nothing to wait for
        closing = self._closed
        try:
            if not closing:
                self._abort_on_close(timeout)
                self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join(timeout=5)
            # A send() in another thread is not writing to it meanwhile (the one-step send
            # writes to the ring from the caller's thread); a writer stuck past the wait (its
            # ring full, the supervisor stopped) is ended by the close instead.
            got = self._io_lock.acquire(timeout=5)
            ch, self._channel = self._channel, None
            self._channel_gone = True  # no send reconnects from here on (_ensure_channel)
            if got:
                self._io_lock.release()
            if ch is not None:
                ch.close()
            # If the wait above ran out (its batches were going to a supervisor too slow to
            # take them), the I/O thread now fails what is left at once and ends: close() does
            # not return with it still running.
            self._thread.join(timeout=5)
            self._meta.close()
            self._shut = True

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
