"""The transaction coordinator (Kafka's semantics; docs/KAFKA.md, docs/FORMAT.md 9.4), shared by
the Kafka listener (server/kafka/txn.py) and the native APIs (server/handlers/txn.py).

InitProducerId with a transactional id gives the id's producer id and the next epoch (fencing
every older instance: their requests get PRODUCER_FENCED / INVALID_PRODUCER_EPOCH) and aborts a
transaction the previous instance left open. AddPartitionsToTxn and AddOffsetsToTxn begin a
transaction; Produce with the transactional id appends batches marked transactional (edgebus
attributes bit 4); TxnOffsetCommit keeps consumer offsets that take effect only if the
transaction commits; EndTxn writes a control batch (bit 5: Kafka's commit or abort marker) into
every partition the transaction wrote. A partition's last stable offset is the first offset of
its oldest open transaction; read_committed fetches stop there and list the aborted
transactions so clients drop their records. A transaction open longer than its
transaction.timeout.ms is aborted by the coordinator (and its producer's epoch bumped).

Answers are Kafka's error numbers (0: done): the Kafka front end sends them as they are, the
native one raises the edgebus error for each (server/handlers/txn.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import EdgebusError
from edgebus.protocol import messages as M
from edgebus.server.handlers.data import now_ms
from edgebus.server.service import Parts, Service
from edgebus.server.txn.mark import built_info, mark, up_to
from edgebus.server.txn.producers import ProducerStates
from edgebus.server.txn.state import (
    EMPTY,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
    PartKey,
    Txn,
    TxnState,
)

log = logging.getLogger("edgebus.txn")

PRODUCER_FENCED = 90
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
CONCURRENT_TRANSACTIONS = 51
MAX_TIMEOUT_MS = 15 * 60 * 1000  # Kafka's transaction.max.timeout.ms default
CHECK_EVERY_S = 0.5  # how often open transactions are checked against their timeout
CONTROL_ABORT, CONTROL_COMMIT = 0, 1
_CONTROL_KEY = F.KAFKA_CONTROL_KEY  # Kafka's control record key: version 0, type
_CONTROL_VALUE = F.KAFKA_CONTROL_VALUE  # version 0, coordinator epoch


def control_batch(pid: int, epoch: int, commit: bool) -> bytearray:
    """An edgebus batch of one control record (Kafka's end-transaction marker)."""
    ts = now_ms()
    rec = B.encode_record(ts, _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT),
                          _CONTROL_VALUE.pack(0, 0), ())
    batch = bytearray(B.build_batch([rec], ts, ts, pid, -1, epoch))
    mark(batch, F.ATTR_TRANSACTIONAL | F.ATTR_CONTROL)
    return batch


class TxnCoordinator(Service):
    """Loop thread only. `parts` has the supervisor's `logs`, `data` and `groups` (the Broker)."""

    def __init__(self, parts: Parts, producers: ProducerStates) -> None:
        self.ctx = parts
        self.producers = producers
        self.state = TxnState.load(parts.logs.data_dir, time.monotonic())
        self._next_check = time.monotonic() + CHECK_EVERY_S
        if self.state.txns or self.state.aborted:
            self._filter_fetches()
        for tid, t in list(self.state.txns.items()):
            if t.state in (PREPARE_COMMIT, PREPARE_ABORT):  # killed while writing markers
                log.info("transaction %r: completing its %s after a restart", tid, t.state)
                self._complete(t)
        self.state.save()

    def _filter_fetches(self) -> None:
        """Native fetches see only committed data from here on (until then no transaction was
        ever known, and a fetch pays nothing for this)."""
        self.ctx.data.txn_filter = self.native_view

    # --- the loop ---
    def next_deadline(self) -> float | None:
        # Idle is idle: a timer only while a transaction is open.
        txns = self.state.txns
        if txns and any(t.state == ONGOING for t in txns.values()):
            return self._next_check
        return None

    def tick(self, now: float) -> None:
        self._next_check = now + CHECK_EVERY_S
        for tid, t in list(self.state.txns.items()):
            if t.state == ONGOING and now - t.began > t.timeout_ms / 1000:
                log.warning("transaction %r of producer %d epoch %d open for more than %d ms: "
                            "aborting it", tid, t.producer_id, t.epoch, t.timeout_ms)
                t.epoch += 1  # fence the producer that left it open
                self._end(t, commit=False)

    def topic_deleted(self, topic: str) -> None:
        """Forget what producers and transactions hold of a deleted topic (AdminHandlers calls
        this for the native, Kafka and HTTP deletes): a re-created topic of the same name starts
        with no producer sequences and no transaction of the old one. The idempotence state is
        rebuilt from the log at a restart (none is left of a deleted topic); the transactions'
        is saved here, so a restart does not bring it back."""
        self.producers.forget(topic)
        if self.state.forget_topic(topic):
            self.state.save()

    # --- what Produce and Fetch ask ---
    def check_produce(self, tid: str, pid: int, epoch: int, key: PartKey) -> int:
        """0 if producer (pid, epoch) of `tid` may append to partition `key`, else the error."""
        t = self.state.txns.get(tid)
        if t is None or t.producer_id != pid:
            return INVALID_PRODUCER_ID_MAPPING
        if epoch != t.epoch:
            return INVALID_PRODUCER_EPOCH
        if t.state != ONGOING or key not in t.parts:
            return INVALID_TXN_STATE
        return 0

    def before_append(self, tid: str, key: PartKey, next_offset: int) -> None:
        """Record the transaction's first offset in the partition, durably, before its batch is
        appended (so a restart can never take it for committed data)."""
        t = self.state.txns[tid]
        if t.parts.get(key, -1) < 0:
            t.parts[key] = next_offset
            self.state.save()

    def last_stable_offset(self, key: PartKey, high_watermark: int) -> int:
        return self.state.last_stable_offset(key, high_watermark)

    def aborted_between(self, key: PartKey, start: int, end: int) -> list[tuple[int, int]]:
        return self.state.aborted_between(key, start, end)

    def native_view(self, p: Any, data: bytes | memoryview) -> bytes | memoryview:
        """What a native fetch of `data` (whole batches from partition `p`) may see: batches
        before the last stable offset, aborted transactions' batches as compacted-away batches
        (the native Consumer steps over those: docs/FORMAT.md 4.8, 9.4)."""
        key = (p.topic, p.partition)
        st = self.state
        aborted = st.aborted.get(key)
        if not aborted and not any(key in t.parts for t in st.txns.values()):
            return data  # the usual case: no transaction ever touched this partition, or all done
        data = up_to(data, st.last_stable_offset(key, p.log_end_offset))
        if not aborted:
            return data
        out: list[bytes] = []
        view = memoryview(data)
        pos = 0
        while pos + F.BATCH_HEADER_SIZE <= len(view):
            h = F.BATCH_HEADER.unpack_from(view, pos)
            base, atime, length, attrs, count, first_ts, max_ts, pid = (
                h[0], h[1], h[2], h[5], h[7], h[8], h[9], h[10])
            if (attrs & F.ATTR_TRANSACTIONAL and not attrs & F.ATTR_CONTROL
                    and any(a == pid and first <= base < marker for a, first, marker in aborted)):
                out.append(B.build_compacted(base, count, atime, first_ts, max_ts))
            else:
                out.append(bytes(view[pos : pos + length]))
            pos += length
        return b"".join(out)

    # --- the APIs ---
    def init_producer(self, tid: str, timeout_ms: int, pid: int, epoch: int) -> tuple[int, int, int]:
        """(error, producer id, epoch) for InitProducerId with a transactional id."""
        if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
            return INVALID_TRANSACTION_TIMEOUT, -1, -1
        t = self.state.txns.get(tid)
        if t is None:
            self._filter_fetches()
            t = self.state.txns[tid] = Txn(self.producers.new_producer_id(), 0, timeout_ms)
        else:
            if pid >= 0 and (pid != t.producer_id or epoch != t.epoch):
                return PRODUCER_FENCED, -1, -1  # KIP-360: only the current instance may bump
            if t.state == ONGOING:
                log.info("transaction %r: a new instance of its producer aborts the open one", tid)
                t.epoch += 1
                self._end(t, commit=False)
            if t.epoch >= 32766:  # epochs are i16: a new producer id starts over
                t.producer_id, t.epoch = self.producers.new_producer_id(), -1
            t.epoch += 1
            t.timeout_ms = timeout_ms
            t.ended = ""  # Kafka: Empty again after InitProducerId
        self.state.save()
        return 0, t.producer_id, t.epoch

    def _current(self, tid: str, pid: int, epoch: int) -> tuple[int, Txn | None]:
        t = self.state.txns.get(tid)
        if t is None or t.producer_id != pid:
            return INVALID_PRODUCER_ID_MAPPING, None
        if epoch != t.epoch:
            return PRODUCER_FENCED, None
        if t.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return CONCURRENT_TRANSACTIONS, None
        return 0, t

    def _begin(self, t: Txn) -> None:
        if t.state == EMPTY:
            t.state, t.began, t.ended = ONGOING, time.monotonic(), ""

    def add_partitions(self, tid: str, pid: int, epoch: int, keys: list[PartKey],
                       code_of: Callable[[EdgebusError], int]) -> dict[PartKey, int]:
        """Error per partition (0: added); `code_of` gives the front end's number for a
        partition that cannot be used (an unknown topic...)."""
        err, t = self._current(tid, pid, epoch)
        out: dict[PartKey, int] = {}
        for key in keys:
            code = err
            if t is not None:
                try:
                    self.ctx.logs.partition(*key)
                except EdgebusError as e:
                    code = code_of(e)
            out[key] = code
        if t is not None and not any(out.values()):
            self._begin(t)
            new = [k for k in keys if k not in t.parts]
            for k in new:
                t.parts[k] = -1
            if new:
                self.state.save()
        return out

    def add_offsets(self, tid: str, pid: int, epoch: int, group: str) -> int:
        err, t = self._current(tid, pid, epoch)
        if t is not None:
            self._begin(t)
            t.offsets.setdefault(group, [])
        return err

    def txn_offsets(self, tid: str, pid: int, epoch: int, group: str,
                    entries: list[tuple[Any, ...]]) -> int:
        err, t = self._current(tid, pid, epoch)
        if t is None:
            return err
        if t.state != ONGOING or group not in t.offsets:
            return INVALID_TXN_STATE
        mine = {(e[0], e[1]): e for e in t.offsets[group]}
        mine.update({(e[0], e[1]): e for e in entries})
        t.offsets[group] = list(mine.values())
        self.state.save()
        return 0

    def pending_offsets(self, group: str) -> set[tuple[str, int]]:
        """The (topic, partition)s of `group` with transactional offsets not yet committed or
        aborted: OffsetFetch with require_stable answers them UNSTABLE_OFFSET_COMMIT."""
        out: set[tuple[str, int]] = set()
        for t in self.state.txns.values():
            if t.state != EMPTY:
                out.update((e[0], e[1]) for e in t.offsets.get(group, ()))
        return out

    def end(self, tid: str, pid: int, epoch: int, commit: bool) -> int:
        err, t = self._current(tid, pid, epoch)
        if t is None:
            return err
        if t.state == EMPTY:
            # Kafka answers a retried EndTxn of a finished transaction with success; an EndTxn
            # with nothing begun is a client's commit of an empty transaction: nothing to do.
            return 0
        self._end(t, commit)
        return 0

    def _end(self, t: Txn, commit: bool) -> None:
        t.state = PREPARE_COMMIT if commit else PREPARE_ABORT
        self.state.save()
        self._complete(t)

    def _complete(self, t: Txn) -> None:
        """Write the markers of a prepared transaction, apply (or drop) its offsets, save."""
        commit = t.state == PREPARE_COMMIT
        for key, first in t.parts.items():
            if first < 0:
                continue  # added but never written: no marker needed
            try:
                p = self.ctx.logs.partition(*key)
                marker = p.log_end_offset
                self.ctx.data.produce_fields(None, 0, key[0], key[1], M.ACKS_WRITTEN,
                                             (b := control_batch(t.producer_id, t.epoch, commit)),
                                             False, built_info(b))
            except EdgebusError as e:  # a deleted topic, a full disk: the marker cannot be written
                log.warning("transaction marker for %s-%d not written (%s)", key[0], key[1], e)
                continue
            if not commit:
                lst = self.state.aborted.setdefault(key, [])
                if (t.producer_id, first) not in [(a[0], a[1]) for a in lst]:
                    lst.append((t.producer_id, first, marker))
                self.state.prune(key, p.log_start_offset)
        if commit:
            gh = self.ctx.groups
            for group, entries in t.offsets.items():
                if entries:
                    try:
                        gp = gh.store.commit(group, entries, -1, now_ms())
                        gh.data.on_append(gp)
                    except EdgebusError as e:
                        log.warning("transactional offsets of group %r not committed (%s)", group, e)
        t.state, t.parts, t.offsets = EMPTY, {}, {}
        t.ended = "commit" if commit else "abort"
        self.state.save()
