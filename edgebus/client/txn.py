"""Idempotent and transactional producers: the state edgebus.Producer keeps for them.

`Sequencer` (enable_idempotence=True): the producer id the supervisor gave (INIT_PRODUCER_ID) and
the next sequence number per partition. A batch gets its (producer id, epoch, base sequence) the
first time it is sent and keeps them through every resend, so a resend of a batch that was
appended (the answer was lost with the connection, or the supervisor was killed after the append)
is recognised and answered with its first offset instead of being appended again. The producer
runs in ordered mode (up to 5 batches in flight per partition, sent and resent in sequence order,
retried until delivery_timeout_ms), so sequences arrive in order. A batch that fails for good
leaves a hole in its partition's sequence: the next batch starts over with a new producer id
(Kafka's epoch bump for idempotent producers), and so do the batches that were in flight behind
it (refused as out of order, so never appended: `restamp`).

`TransactionalProducer` (transactional_id="..."): confluent-kafka's method names. A transaction
adds each partition it writes before the first record goes there (ADD_PARTITIONS_TO_TXN, in the
caller's thread), commits consumer offsets with it (TXN_OFFSET_COMMIT), and ends with END_TXN
after every batch is acknowledged. Misuse gets InvalidTxnStateError; a newer instance of the same
transactional id (or the supervisor aborting a transaction open past its timeout) makes this one
fenced: ProducerFencedError from then on. close() aborts an open transaction, as Kafka's
producer does: its records never become visible to read_committed consumers. A producer that
cannot (killed, or the supervisor unreachable until close's timeout) leaves it to the next
instance's init_transactions() or to the transaction's timeout, which abort it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.backoff import backoff_delay
from edgebus.errors import (
    BrokerUnavailableError,
    EdgebusError,
    InvalidTxnStateError,
    OperationTimeoutError,
    ProducerFencedError,
)
from edgebus.protocol import messages as M

if TYPE_CHECKING:
    from edgebus.client.channel import SyncChannel

log = logging.getLogger("edgebus.producer")

# Transaction states of the client (what may be called when).
UNINITIALIZED, READY, IN_TRANSACTION, FENCED = "uninitialized", "ready", "in transaction", "fenced"
SEQ_MOD = 2**31  # sequences wrap at i32, as the supervisor counts them
TRANSACTIONAL = F.ATTR_TRANSACTIONAL  # the attributes bit of a transactional producer's batch


class Sequencer:
    """Producer id, epoch and per-partition sequences. Thread-safe (callers' threads add
    partitions; the I/O thread stamps and finishes batches)."""

    def __init__(self, meta: SyncChannel, meta_lock: threading.Lock, retry_for: float,
                 transactional_id: str = "", transaction_timeout_ms: int = 60_000) -> None:
        self._meta = meta
        self._meta_lock = meta_lock
        self.retry_for = retry_for
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.producer_id = -1
        self.epoch = -1
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._renew = False  # a batch failed for good: a new producer id before the next batch

    def control(self, api: int, body: Any) -> Any:
        """A control request, sent again while the supervisor is away or busy (retriable
        errors) for up to `retry_for` seconds: each is safe to repeat."""
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            try:
                with self._meta_lock:
                    return self._meta.request(api, body)
            except EdgebusError as e:
                if not e.retriable or time.monotonic() >= deadline:
                    raise
            time.sleep(backoff_delay(attempt, 0.05, 1.0))
            attempt += 1

    def init(self) -> None:
        """INIT_PRODUCER_ID: a producer id (and, with a transactional id, its next epoch)."""
        r = self.control(M.Api.INIT_PRODUCER_ID, M.InitProducerIdRequest(
            self.transactional_id, self.transaction_timeout_ms, self.producer_id, self.epoch))
        with self._lock:
            self.producer_id, self.epoch = r.producer_id, r.producer_epoch
            self._next.clear()
            self._renew = False

    def batch_parts(self, b: Any) -> tuple[list[bytes], int]:
        """The batch's bytes with its producer id, epoch and base sequence: given the first time
        it is sent (in send order), kept for resends; a
        transactional producer's marked transactional."""
        if b.stamp is None:
            if self._renew and not self.transactional_id:
                try:
                    self.init()  # the I/O thread: an error fails (and retries) b
                except EdgebusError as e:
                    raise BrokerUnavailableError(f"cannot get a new producer id: {e}") from e
            with self._lock:
                key = (b.topic, b.partition)
                seq = self._next.get(key, 0)
                self._next[key] = (seq + b.count) % SEQ_MOD
                b.stamp = (self.producer_id, self.epoch, seq)
        pid, epoch, seq = b.stamp
        return B.batch_parts(b.records, b.first_ts, b.max_ts, pid, seq, epoch, record_count=b.count,
                             attributes=TRANSACTIONAL if self.transactional_id else 0)

    def restamp(self, b: Any) -> bool:
        """A batch refused as out of order (not appended) whose producer id has a hole before
        it (an earlier batch failed for good): it gets a new stamp when next sent, under the next
        producer id. Not for a transactional producer: its transaction cannot commit anyway."""
        with self._lock:
            if self.transactional_id or b.stamp is None:
                return False
            if not (self._renew or b.stamp[0] != self.producer_id):
                return False
            b.stamp = None
            return True

    def failed(self, b: Any, err: BaseException) -> None:
        """A batch failed for good (after its retries): its sequence numbers are a hole."""
        if b.stamp is not None:
            with self._lock:
                if b.stamp[0] == self.producer_id:
                    self._renew = True


def _offsets(offsets: Any) -> list[M.TxnOffset]:
    """{TopicPartition: offset or OffsetAndMetadata} or [objects with .topic .partition .offset
    (confluent-kafka's TopicPartition)] as TXN_OFFSET_COMMIT entries."""
    out = []
    if isinstance(offsets, Mapping):
        for tp, v in offsets.items():
            off = v if isinstance(v, int) else v.offset
            meta = "" if isinstance(v, int) else (getattr(v, "metadata", "") or "")
            out.append(M.TxnOffset(tp[0], int(tp[1]), int(off), meta))
    else:
        for tp in offsets:
            out.append(M.TxnOffset(tp.topic, int(tp.partition), int(tp.offset),
                                   getattr(tp, "metadata", None) or ""))
    return out


class TransactionalProducer:
    """The transaction methods of edgebus.Producer (confluent-kafka's names), and what its
    sending path calls of Sequencer and Transactions."""

    _seq: Sequencer | None
    _txn: Transactions | None
    _meta: SyncChannel
    _meta_lock: threading.Lock
    max_block: float

    def _start_idempotence(self, idempotent: bool, transactional_id: str | None,
                           transaction_timeout_ms: int) -> None:
        self._seq = self._txn = None
        if idempotent:
            self._seq = Sequencer(self._meta, self._meta_lock, self.max_block,
                                  transactional_id or "", transaction_timeout_ms)
            if transactional_id is None:
                self._seq.init()  # an idempotent producer has its id from the start
            else:
                self._txn = Transactions(self, self._seq)

    def _failed_for_good(self, b: Any, err: BaseException) -> None:
        """A batch failed after its retries: a hole in its sequence; its transaction cannot
        commit."""
        if self._seq is not None:
            self._seq.failed(b, err)
        if self._txn is not None:
            self._txn.batch_failed(err)

    def _transactions(self) -> Transactions:
        if self._txn is None:
            raise InvalidTxnStateError("this producer has no transactional_id")
        return self._txn

    def init_transactions(self, timeout: float | None = None) -> None:
        """Register the transactional id: fences every older instance (their writes fail with
        ProducerFencedError) and aborts a transaction one left open. Call once, first."""
        self._transactions().init()

    def begin_transaction(self) -> None:
        self._transactions().begin()

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any,
                                    timeout: float | None = None) -> None:
        """Commit a consumer group's offsets with the transaction (consume-transform-produce):
        `offsets` as for Consumer.commit ({TopicPartition: next offset}) or a list of objects
        with .topic .partition .offset; `group_metadata` a group id or a Consumer."""
        self._transactions().send_offsets(offsets, group_metadata)

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send everything buffered, wait for every acknowledgement, then commit. If a record of
        the transaction failed, the commit raises its error: call abort_transaction()."""
        self._transactions().end(True, timeout)

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._transactions().end(False, timeout)

    def _abort_on_close(self, timeout: float | None) -> None:
        """close() with a transaction open: abort it (Kafka's producer does). A failure is
        logged, not raised: close() still closes, and the transaction's timeout aborts it."""
        t = self._txn
        if t is None or t.state != IN_TRANSACTION:
            return
        log.warning("closing transactional producer %r with a transaction open: aborting it",
                    t.seq.transactional_id)
        try:
            t.end(False, timeout)
        except EdgebusError as e:
            log.warning("close(): could not abort the open transaction of %r (%s); the "
                        "supervisor aborts it after transaction_timeout_ms=%d",
                        t.seq.transactional_id, e, t.seq.transaction_timeout_ms)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """`with producer.transaction(): ...` begins, and commits at the end (aborts if the
        block raises)."""
        t = self._transactions()
        t.begin()
        try:
            yield
        except BaseException:
            if t.state == IN_TRANSACTION:
                t.end(False, None)
            raise
        t.end(True, None)


class Transactions:
    """One transactional producer's transaction state (client side)."""

    def __init__(self, producer: Any, seq: Sequencer) -> None:
        self.producer = producer
        self.seq = seq
        self.state = UNINITIALIZED
        self._parts: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self.error: BaseException | None = None  # a batch of this transaction failed

    def _fail(self, e: BaseException) -> None:
        if isinstance(e, ProducerFencedError):
            self.state = FENCED

    def _request(self, api: int, body: Any) -> Any:
        try:
            return self.seq.control(api, body)
        except ProducerFencedError as e:
            self._fail(e)
            raise

    def _need(self, state: str, what: str) -> None:
        if self.state == FENCED:
            raise ProducerFencedError(f"{what}: a newer instance of transactional id "
                                      f"{self.seq.transactional_id!r} has started")
        if self.state != state:
            raise InvalidTxnStateError(f"{what} needs the producer {state}, it is {self.state}"
                                       + (" (call init_transactions() first)"
                                          if self.state == UNINITIALIZED else ""))

    def init(self) -> None:
        if self.state not in (UNINITIALIZED, READY):
            raise InvalidTxnStateError(f"init_transactions() while {self.state}")
        try:
            self.seq.init()
        except ProducerFencedError as e:
            self._fail(e)
            raise
        self.state = READY

    def begin(self) -> None:
        self._need(READY, "begin_transaction()")
        with self._lock:
            self._parts.clear()
            self.error = None
            self.state = IN_TRANSACTION

    def before_send(self, topic: str, partition: int) -> None:
        """From send(): only inside a transaction; a partition new to it is added first."""
        if self.state != IN_TRANSACTION:
            self._need(IN_TRANSACTION, f"send() to {topic}-{partition}")
        key = (topic, partition)
        if key in self._parts:
            return
        with self._lock:
            if key not in self._parts:
                s = self.seq
                self._request(M.Api.ADD_PARTITIONS_TO_TXN, M.AddPartitionsToTxnRequest(
                    s.transactional_id, s.producer_id, s.epoch, [M.TxnPartition(topic, partition)]))
                self._parts.add(key)

    def batch_failed(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        self._fail(err)

    def send_offsets(self, offsets: Any, group: Any) -> None:
        self._need(IN_TRANSACTION, "send_offsets_to_transaction()")
        group_id = group if isinstance(group, str) else getattr(group, "group_id", None)
        if not group_id:
            raise ValueError("send_offsets_to_transaction() needs a group id or a Consumer with one")
        s = self.seq
        self._request(M.Api.TXN_OFFSET_COMMIT, M.TxnOffsetCommitRequest(
            s.transactional_id, s.producer_id, s.epoch, group_id, _offsets(offsets)))

    def end(self, commit: bool, timeout: float | None) -> None:
        what = "commit_transaction()" if commit else "abort_transaction()"
        self._need(IN_TRANSACTION, what)
        try:
            self.producer.flush(timeout)
        except OperationTimeoutError:
            if commit:
                raise
        if commit and self.error is not None:
            raise InvalidTxnStateError(f"{what}: a record of the transaction failed ({self.error}); "
                                       "abort_transaction() it") from self.error
        s = self.seq
        self._request(M.Api.END_TXN, M.EndTxnRequest(s.transactional_id, s.producer_id, s.epoch,
                                                     1 if commit else 0))
        self.state = READY

