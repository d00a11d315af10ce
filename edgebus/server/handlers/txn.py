"""The native APIs of idempotent and transactional producers: INIT_PRODUCER_ID,
ADD_PARTITIONS_TO_TXN, TXN_OFFSET_COMMIT, END_TXN, and the PRODUCE of a batch that carries a
producer id (docs/FORMAT.md 7.12).

They call the same state machines as the Kafka listener (server/txn/: ProducerStates for the
per-partition sequence checks, TxnCoordinator for transactions), so a native producer and a Kafka
one are fenced, deduplicated and made visible by one set of rules; the coordinator's Kafka error
numbers become edgebus errors here. Access control is the dispatcher's, as for every native API
(server/acl/checks.py: write on the topics a transaction adds, read on the group whose offsets it
commits, as the Kafka path asks).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.errors import (
    ConcurrentTransactionsError,
    CorruptRecordError,
    DuplicateSequenceError,
    EdgebusError,
    InvalidRequestError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    ProducerFencedError,
)
from edgebus.protocol import messages as M
from edgebus.server.dispatch import DEFERRED, NO_RESPONSE, Handler
from edgebus.server.txn import coordinator as C
from edgebus.server.txn import producers as P
from edgebus.server.txn import state as S

if TYPE_CHECKING:
    from edgebus.batch import BatchInfo
    from edgebus.server.durable import DurableAcks
    from edgebus.server.handlers.data import DataHandlers

log = logging.getLogger("edgebus.handlers")

# The coordinator's and the sequence checks' answers (Kafka's numbers) as edgebus errors.
_ERRORS: dict[int, tuple[type[EdgebusError], str]] = {
    P.OUT_OF_ORDER_SEQUENCE: (OutOfOrderSequenceError, "the batch's sequence number does not follow "
                              "its producer's last one in this partition"),
    P.DUPLICATE_SEQUENCE: (DuplicateSequenceError, "the batch was appended before (a resend older "
                           "than the batches the supervisor remembers); not appended again"),
    P.INVALID_PRODUCER_EPOCH: (ProducerFencedError, "a newer instance of this producer has started"),
    C.PRODUCER_FENCED: (ProducerFencedError, "a newer instance of this transactional id has started"),
    C.INVALID_TXN_STATE: (InvalidTxnStateError, "no open transaction of this producer has added "
                          "this partition"),
    C.INVALID_PRODUCER_ID_MAPPING: (InvalidTxnStateError, "the producer id is not the transactional "
                                    "id's (call init_transactions first)"),
    C.INVALID_TRANSACTION_TIMEOUT: (InvalidRequestError, f"transaction_timeout_ms must be 1.."
                                    f"{C.MAX_TIMEOUT_MS}"),
    C.CONCURRENT_TRANSACTIONS: (ConcurrentTransactionsError, "the previous transaction is still "
                                "being completed; try again"),
}
_HEADER_TAIL = F.BATCH_HEADER  # producer_id, base_sequence, producer_epoch are fields 10-12


def raise_for(code: int, what: str) -> None:
    """Raise the edgebus error for a coordinator or sequence-check answer (0: nothing)."""
    if code:
        cls, why = _ERRORS.get(code, (InvalidRequestError, f"refused (Kafka error {code})"))
        raise cls(f"{what}: {why}")


class TxnHandlers:
    """Loop thread only."""

    def __init__(self, coordinator: C.TxnCoordinator, producers: P.ProducerStates,
                 data: DataHandlers, durable: DurableAcks) -> None:
        self.coordinator = coordinator
        self.producers = producers
        self.data = data
        self.durable = durable
        # producer id -> transactional id, "" for none (a native PRODUCE carries the producer id
        # only; ids are never reused, so what is remembered stays true)
        self._tids: dict[int, str] = {}

    def table(self) -> dict[int, Handler]:
        return {int(M.Api.INIT_PRODUCER_ID): self.init_producer_id,
                int(M.Api.ADD_PARTITIONS_TO_TXN): self.add_partitions,
                int(M.Api.TXN_OFFSET_COMMIT): self.txn_offset_commit,
                int(M.Api.END_TXN): self.end_txn,
                int(M.Api.LIST_TRANSACTIONS): self.list_transactions}

    def _tid_of(self, pid: int) -> str | None:
        """The transactional id of producer `pid`; None for an idempotent producer."""
        tid = self._tids.get(pid)
        if tid is None:  # first batch since the start: the coordinator's state may know it
            tid = next((name for name, t in self.coordinator.state.txns.items()
                        if t.producer_id == pid), "")
            self._tids[pid] = tid  # "" remembered too: one look-up per producer, not per batch
        return tid or None

    # --- the APIs --------------------------------------------------------------------------------
    def init_producer_id(self, conn: Any, corr: int, req: M.InitProducerIdRequest) -> M.InitProducerIdResponse:
        if not req.transactional_id:  # idempotence alone: a new id, epoch 0
            return M.InitProducerIdResponse(self.producers.new_producer_id(), 0)
        err, pid, epoch = self.coordinator.init_producer(
            req.transactional_id, req.transaction_timeout_ms, req.producer_id, req.producer_epoch)
        raise_for(err, f"transactional id {req.transactional_id!r}")
        self._tids[pid] = req.transactional_id
        log.info("transactional id %r: producer %d epoch %d (by %r)", req.transactional_id, pid,
                 epoch, conn)
        return M.InitProducerIdResponse(pid, epoch)

    def add_partitions(self, conn: Any, corr: int, req: M.AddPartitionsToTxnRequest) -> M.Empty:
        keys = [(p.topic, p.partition) for p in req.partitions]
        if not keys:
            raise InvalidRequestError("ADD_PARTITIONS_TO_TXN names no partition")
        unusable: list[EdgebusError] = []

        def keep(e: EdgebusError) -> int:
            unusable.append(e)
            return -1

        res = self.coordinator.add_partitions(req.transactional_id, req.producer_id,
                                              req.producer_epoch, keys, keep)
        if unusable:
            raise unusable[0]  # an unknown topic or partition: none was added
        for (topic, part), code in res.items():
            raise_for(code, f"transactional id {req.transactional_id!r}, {topic}-{part}")
        return M.Empty()

    def txn_offset_commit(self, conn: Any, corr: int, req: M.TxnOffsetCommitRequest) -> M.Empty:
        what = f"transactional id {req.transactional_id!r}, group {req.group_id!r}"
        if not req.group_id:
            raise InvalidRequestError("TXN_OFFSET_COMMIT needs a group id")
        c = self.coordinator
        raise_for(c.add_offsets(req.transactional_id, req.producer_id, req.producer_epoch,
                                req.group_id), what)
        entries = [(o.topic, o.partition, o.offset, o.metadata) for o in req.offsets]
        for topic, part, off, _m in entries:
            if off < 0:
                raise InvalidRequestError(f"{what}: offset {off} of {topic}-{part} is negative")
        raise_for(c.txn_offsets(req.transactional_id, req.producer_id, req.producer_epoch,
                                req.group_id, entries), what)
        return M.Empty()

    def end_txn(self, conn: Any, corr: int, req: M.EndTxnRequest) -> M.Empty:
        raise_for(self.coordinator.end(req.transactional_id, req.producer_id, req.producer_epoch,
                                       bool(req.commit)),
                  f"transactional id {req.transactional_id!r}")
        return M.Empty()

    def list_transactions(self, conn: Any, corr: int, req: M.Empty) -> M.ListTransactionsResponse:
        now = time.monotonic()
        txns = [M.TxnInfo(tid, t.producer_id, t.epoch, t.state, t.timeout_ms,
                          int((now - t.began) * 1000) if t.state != S.EMPTY else -1,
                          [M.TxnPartitionInfo(k[0], k[1], off) for k, off in sorted(t.parts.items())],
                          sorted(t.offsets))
                for tid, t in sorted(self.coordinator.state.txns.items())]
        producers = [M.ProducerInfo(topic, part, pid, e.epoch, e.last_seq)
                     for topic, part, pid, e in self.producers.held()]
        return M.ListTransactionsResponse(txns, producers)

    # --- PRODUCE of a batch with a producer id (DataHandlers.produce_fields hands it here) --------
    def produce(self, conn: Any, corr: int, p: Any, acks: int, batch: Any, info: BatchInfo,
                encoded: bool) -> Any:
        """Check the batch against its producer's sequence (and transaction), then append it
        through produce_fields, or answer a resend with the offset it got the first time."""
        h = _HEADER_TAIL.unpack_from(batch, 0)
        attrs, pid, seq, epoch = h[5], h[10], h[11], h[12]
        where = f"{p.topic}-{p.partition}"
        if attrs & ~F.ATTR_TRANSACTIONAL:
            raise CorruptRecordError(f"batch attributes 0x{attrs:02x}: control batches are written "
                                     "only by the supervisor")
        if pid < 0 or seq < 0 or epoch < 0:
            raise InvalidRequestError(f"{where}: a batch of an idempotent or transactional producer "
                                      f"needs its producer id, epoch and base sequence (got {pid}, "
                                      f"{epoch}, {seq})")
        tid = self._tid_of(pid)
        if tid is not None:
            if not attrs & F.ATTR_TRANSACTIONAL:
                raise InvalidTxnStateError(f"{where}: producer {pid} of transactional id {tid!r} "
                                           "sent a batch outside its transaction")
            key = (p.topic, p.partition)
            raise_for(self.coordinator.check_produce(tid, pid, epoch, key),
                      f"transactional id {tid!r}, {where}")
            self.coordinator.before_append(tid, key, p.log_end_offset)
        elif attrs & F.ATTR_TRANSACTIONAL:
            raise InvalidTxnStateError(f"{where}: producer {pid} has no transactional id")
        count = info.record_count
        verdict = self.producers.check(p, pid, epoch, seq, count)
        if verdict is not P.APPEND:
            raise_for(verdict.error, f"{where}, producer {pid} epoch {epoch} sequence {seq}")
            return self._duplicate(conn, corr, p, acks, verdict.duplicate_of)
        base = p.log_end_offset  # offsets are dense: the batch is appended here
        result = self.data.produce_fields(conn, corr, p.topic, p.partition, acks, batch, encoded,
                                          info)
        self.producers.appended(p, pid, epoch, seq, count, base)
        return result

    def _duplicate(self, conn: Any, corr: int, p: Any, acks: int, base: int) -> Any:
        """A resend of a batch already appended: its first answer again (append time unknown:
        -1), at the acks level asked for."""
        if acks == M.ACKS_NONE:
            return NO_RESPONSE
        resp = M.ProduceResponse(p.topic, p.partition, base, -1, p.log_start_offset)
        if acks == M.ACKS_DURABLE:
            self.durable.add(conn, corr, p, resp)
            return DEFERRED
        return resp
