"""The data plane: PRODUCE, FETCH, LIST_OFFSETS, and the fetches parked for data (long-poll).

A handler returns a response body (or an encoded frame), raises an EdgebusError (sent as an error
response), or returns DEFERRED when the answer comes later (durable acks, parked fetches); see
edgebus/server/dispatch.py. As a service, the parked fetches' deadlines are its timer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.batch import produced_batch
from edgebus.errors import (
    EdgebusError,
    InvalidRequestError,
    InvalidTopicError,
    MirrorReadOnlyError,
    RecordTooLargeError,
    ServerBusyError,
    ShuttingDownError,
    UnknownTopicError,
)
from edgebus.fastpath.fetch import encode_fetched_one
from edgebus.fastpath.produce import encode_produce_response
from edgebus.log.manager import LogManager
from edgebus.protocol import messages as M
from edgebus.server.dispatch import DEFERRED, NO_RESPONSE
from edgebus.server.durable import DurableAcks
from edgebus.server.fetchwait import FetchWaiters, ParkedFetch
from edgebus.server.handlers.standing import StandingFetches, sent_on_socket
from edgebus.server.parking import ParkingService
from edgebus.server.service import LoopApi
from edgebus.server.stats import Stats

if TYPE_CHECKING:
    from edgebus.server.disk import DiskGuard
    from edgebus.server.listeners.stream import Connection

log = logging.getLogger("edgebus.handlers")

# A consumer needs one parked fetch at a time; more from one connection only cost every append a
# read per waiter (a client pipelining thousands could slow every producer), so extra ones are
# answered at once instead of parked.
MAX_PARKED_FETCHES_PER_CONNECTION = 8
# The top byte of a batch's producer_id (i64, little-endian): 0xFF for -1 (no producer id), below
# 0x80 for any id. With the attributes byte (0 for a plain batch) it tells the produce path in two
# byte reads whether a batch needs the idempotence and transaction checks (handlers/txn.py).
_PRODUCER_ID_TOP = F.BATCH_PRODUCER_ID + 7


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_time_ns = time.time_ns
_ACKS = frozenset((M.ACKS_NONE, M.ACKS_WRITTEN, M.ACKS_DURABLE))


def _no_sequenced(*args: Any) -> Any:
    raise InvalidRequestError("this supervisor takes no batches with a producer id")


class DataHandlers(ParkingService):
    def __init__(self, api: LoopApi, logs: LogManager, disk: DiskGuard, durable: DurableAcks,
                 stats: Stats, *, max_fetch_wait_ms: int = 30_000) -> None:
        self.api = api
        self.logs = logs
        self.disk = disk
        self.durable = durable
        self.stats = stats
        self.max_fetch_wait_ms = max_fetch_wait_ms
        self.waiters = FetchWaiters(api.deadline_changed)
        # (partition, bytes read) -> what a native fetch may see: set by the transaction
        # coordinator (txn/coordinator.py) to stop at the last stable offset and hide aborted records.
        self.txn_filter: Callable[[Any, bytes | memoryview], bytes | memoryview] | None = None
        # A batch with a producer id or the transactional bit goes to the sequence and
        # transaction checks (handlers/txn.py TxnHandlers.produce; set by the Broker).
        self.sequenced: Callable[..., Any] = _no_sequenced
        # Something was appended since the last periodic flush (housekeeping.py reads and clears).
        self.dirty = False
        # (listener, the partitions it listens to): each listener is called with the partition
        # after an append to one of its partitions (the Kafka listener's parked fetches, keyed by
        # their FetchWaiters.by_partition, which it keeps current). Per partition, so that
        # appends to the others keep the native fast paths (`listened`: the C data plane's
        # standing answers and parked appends, shm_plane.py, shm_park.py).
        self.append_listeners: list[tuple[Callable[[Any], None], Container[tuple[str, int]]]] = []
        self.standing = StandingFetches(self)  # FETCH_STANDING (handlers/standing.py)
        # The shm C data plane (listeners/shm_plane.py Plane), when it runs: told of each plain
        # PRODUCE this path appends, so that the link's next ones to the partition go in C.
        self.plane: Any = None

    # --- data plane ------------------------------------------------------------------------------
    def produce(self, conn: Any, corr: int, req: M.ProduceRequest) -> Any:
        return self.produce_fields(conn, corr, req.topic, req.partition, req.acks, req.batch, False)

    def produce_fields(self, conn: Any, corr: int, topic: str, partition: int, acks: int, batch: Any,
                       encoded: bool = True, built: B.BatchInfo | None = None) -> Any:
        """PRODUCE from the request's fields (the dispatcher's fast path decodes them without the
        dataclass). With `encoded`, an acks=written answer is returned as its whole response
        frame (bytes, queued as it is) instead of a ProduceResponse."""
        if self.api.stopping:
            raise ShuttingDownError("the supervisor is shutting down")
        if acks not in _ACKS:
            raise InvalidRequestError(f"acks must be 0, 1 or 2, got {acks}")
        if topic.startswith("__"):  # only the supervisor writes its internal topics
            raise InvalidTopicError(f"{topic!r} is an internal topic")
        p = self.logs.partition(topic, partition)
        cfg = p.config
        if cfg.mirror_of:
            raise MirrorReadOnlyError(
                f"topic {topic!r} is a mirror of {cfg.mirror_of}: only its replication link "
                "writes it")
        if batch is None:  # BYTES may be null on the wire; a PRODUCE without a batch is meaningless
            raise InvalidRequestError("PRODUCE carries a null batch (length -1); send one whole record batch")
        if built is None:
            # Header, CRC and records in one C call; when it refuses (or is not built) the
            # Python checks run in their usual order and their errors say what is wrong.
            info = produced_batch(batch, cfg.max_message_bytes)
            if info is None:
                info = B.validate_batch(batch, max_bytes=cfg.max_message_bytes, compacted_ok=False)
                if batch[F.BATCH_ATTRIBUTES] or batch[_PRODUCER_ID_TOP] != 0xFF:
                    return self.sequenced(conn, corr, p, acks, batch, info, encoded)
                B.check_records(batch, info)  # records that do not decode would fail every reader
            elif batch[F.BATCH_ATTRIBUTES] or batch[_PRODUCER_ID_TOP] != 0xFF:
                # an idempotent or transactional producer's: checked, then appended with `built`
                return self.sequenced(conn, corr, p, acks, batch, info, encoded)
        else:  # built by the supervisor itself (the Kafka listener): its CRC is right by construction
            if built.length > cfg.max_message_bytes:
                raise RecordTooLargeError(f"batch of {built.length} bytes exceeds the limit of "
                                          f"{cfg.max_message_bytes} bytes")
            info = built
            B.check_records(batch, info)  # records that do not decode would fail every reader
        base, atime = self.disk.append(p, batch, info, _time_ns() // 1_000_000)  # server/disk.py
        # Stats.appended's work, without the call (once per one-record PRODUCE)
        stats = self.stats
        count = info.record_count
        stats.records_in += count
        stats.bytes_in += info.length
        t = stats.topic_in.get(topic)
        if t is None:
            t = stats.topic_in[topic] = [0, 0]
        t[0] += count
        t[1] += info.length
        if (topic, partition) in self.waiters.by_partition or (
                self.append_listeners and self.listened((topic, partition))):
            self.on_append(p, batch, base, atime)
        else:
            self.dirty = True  # on_append's work when nobody waits on the partition
        if self.plane is not None and acks != M.ACKS_DURABLE and built is None:
            self.plane.granted(conn, p)  # the link's next PRODUCEs here may go in C (shm_plane.py)
        if acks == M.ACKS_WRITTEN and encoded:
            try:
                return encode_produce_response(corr, topic, partition, base, atime, p.log_start_offset)
            except Exception:  # unusual values: the generic codec below gives its own result or error
                pass
        if acks == M.ACKS_NONE:
            return NO_RESPONSE
        resp = M.ProduceResponse(topic, partition, base, atime, p.log_start_offset)
        if acks == M.ACKS_DURABLE:
            self.durable.add(conn, corr, p, resp)
            return DEFERRED
        return resp

    def fetch_standing(self, conn: Any, corr: int, req: M.FetchRequest) -> Any:
        self.standing.start(conn, corr, req)
        return DEFERRED

    def fetch(self, conn: Any, corr: int, req: M.FetchRequest) -> Any:
        if getattr(getattr(conn, "shm", None) or conn, "standing", None) is not None:
            self.standing.end(conn)  # a FETCH replaces the connection's standing fetch
        bad = req.max_bytes <= 0
        for fp in req.partitions:  # a loop, not any(): no generator's calls per FETCH
            if fp.max_bytes <= 0:
                bad = True
        if bad:
            raise InvalidRequestError("fetch max_bytes must be positive")
        wait = min(req.max_wait_ms, self.max_fetch_wait_ms)
        parkable = (wait > 0 and not self.api.stopping
                    and conn.parked < MAX_PARKED_FETCHES_PER_CONNECTION)
        if parkable and req.min_bytes > 0 and self._all_at_end(req):
            # What read_fetch would find: no data and no error, so total 0 < min_bytes: park.
            self.park_fetch(conn, corr, req, wait)
            return DEFERRED
        if self.api.output_budget_used:  # a parked fetch above costs nothing; an answer might
            raise self._busy()
        frame = self._fetch_tail(corr, req)
        if frame is not None:
            return frame
        resp, total = self.read_fetch(req)
        errors = any(p.error_code for p in resp.partitions)
        if total >= req.min_bytes or errors or not parkable:
            return resp
        self.park_fetch(conn, corr, req, wait)
        return DEFERRED

    def _all_at_end(self, req: M.FetchRequest) -> bool:
        """Whether every partition of the fetch exists and is asked for at its log end (the fetch a
        caught-up consumer parks), checked without building a response."""
        try:
            for fp in req.partitions:
                if not self.logs.partition(fp.topic, fp.partition).at_end(fp.offset):
                    return False
        except EdgebusError:
            return False
        return True

    def fetch_appended(self, corr: int, req: M.FetchRequest, p: Any, batch: Any, base: int,
                       append_time: int) -> bytes | None:
        """The response frame that answers the parked fetch `req` right after `batch` (stamped with
        `base`, `append_time`) was appended to `p`, built from the batch instead of re-reading it;
        None when read_fetch must decide. Equal to read_fetch's answer when used: a fetch of
        one partition at the batch's base offset reads the batch holding that offset and, as the
        first partition of its response, takes it whole whatever the byte limits (at_least_one),
        and nothing follows it in the log. tests/test_fastpath_server.py compares the two."""
        return self._from_batch(corr, req, p, batch, base, append_time)

    def _from_batch(self, corr: int, req: M.FetchRequest, p: Any, batch: Any, base: int,
                    append_time: int) -> bytes | None:
        """fetch_appended's answer (also _fetch_tail's, for the batch the partition kept)."""
        parts = req.partitions
        if len(parts) != 1:
            return None
        fp = parts[0]
        if (fp.offset != base or fp.partition != p.partition or fp.topic != p.topic
                or len(batch) < req.min_bytes or req.max_bytes <= 0 or fp.max_bytes <= 0
                or p.log_end_offset <= base):
            return None
        if batch[F.BATCH_ATTRIBUTES] & (F.ATTR_TRANSACTIONAL | F.ATTR_CONTROL):
            return None  # a transaction's: read_fetch decides what is visible
        if self.txn_filter is not None and self.txn_filter(p, batch) is not batch:
            # A transaction open (or aborted) on the partition: the batch may lie past the
            # last stable offset, which read_fetch's filter stops at. The filter returns its
            # input itself when no transaction touched the partition (the usual case).
            return None
        if F.BATCH_STAMP.unpack_from(batch, 0) != (base, append_time):
            return None  # not stamped in place (the log copied a read-only buffer): read it
        try:
            return encode_fetched_one(corr, fp.topic, fp.partition, p.log_end_offset,
                                      p.log_start_offset, batch)
        except Exception:  # unusual values: the read-based path gives its own result or error
            return None

    def _fetch_tail(self, corr: int, req: M.FetchRequest) -> bytes | None:
        """The answer to a fetch of one partition at the last batch a producer appended there,
        which the partition keeps (Partition.tail_batch): built from it as `fetch_appended`
        builds an answer from the batch just appended (the same checks, so equal to
        read_fetch's answer), without the read and the response objects. A consumer's next
        fetch that arrives just after the append (on the socket, most of them at 1,000/s)
        takes this path; None when read_fetch must decide."""
        parts = req.partitions
        if len(parts) != 1:
            return None
        fp = parts[0]
        try:
            p = self.logs.partition(fp.topic, fp.partition)
        except EdgebusError:
            return None
        batch = p.tail_batch(fp.offset)
        if batch is None:
            return None
        base, append_time = F.BATCH_STAMP.unpack_from(batch, 0)
        frame = self._from_batch(corr, req, p, batch, base, append_time)
        if frame is not None:
            self.stats.batch_sent(p.topic, batch)
        return frame

    # --- fetch long-poll -------------------------------------------------------------------------
    def park_fetch(self, conn: Connection, corr: int, req: M.FetchRequest, wait_ms: int) -> None:
        self.waiters.park(ParkedFetch(conn, corr, req, time.monotonic() + wait_ms / 1000))

    def complete_fetch(self, w: ParkedFetch) -> None:
        if w.done:  # answered already (e.g. listed under two of its partitions)
            return
        self.waiters.remove(w)
        if w.conn.closed:
            return
        if w.standing and not self.api.stopping:
            self.standing.expired(w)  # a standing fetch's wait ends in silence: parked again
            return
        if w.respond is not None:
            w.respond()
            return
        if self.api.output_budget_used:
            self.api.answer(w.conn, w.correlation_id, self._busy())
            return
        resp, _ = self.read_fetch(w.request)
        self.api.answer(w.conn, w.correlation_id, resp)

    def _busy(self) -> EdgebusError:
        """The answer to a fetch while the queued answers of all connections are at
        limits.max_output_total_bytes (counted: `edgebus status`, metrics)."""
        self.stats.refused_fetches_output_budget += 1
        return ServerBusyError("the supervisor's answers waiting to be read by clients reached "
                               "limits.max_output_total_bytes; fetch again shortly")

    def listened(self, key: tuple[str, int]) -> bool:
        """Whether an append listener listens to the partition `key`."""
        return any(key in keys for _, keys in self.append_listeners)

    def on_append(self, p: Any, batch: Any = None, base: int = -1, append_time: int = -1) -> None:
        """Data was appended to `p`: answer the fetches parked on it that now have enough. With
        the one `batch` just appended (stamped `base`, `append_time`), a fetch asking for
        exactly that batch is answered from its bytes instead of reading them back."""
        self.dirty = True
        if self.append_listeners:
            key = (p.topic, p.partition)
            for listener, keys in tuple(self.append_listeners):  # (one may leave: kafka/fetch.py)
                if key in keys:
                    listener(p)
        parked = self.waiters.by_partition.get((p.topic, p.partition))  # waiting_on, inlined
        if not parked or self.api.output_budget_used:
            return  # parked fetches wait (costing nothing) until room or their deadline
        waiting = list(parked)
        for w in waiting:
            if w.standing:
                if batch is not None and self.standing.push(w, p, batch, base, append_time):
                    continue  # answered from the batch and re-armed in place (the common case)
                if not self.standing.may_answer(w):
                    continue  # held until its consumer read the answers before
            if w.respond is not None:  # a replicator's long poll: any append wakes it
                self.waiters.remove(w)
                if not w.conn.closed:
                    w.respond()
                continue
            if batch is not None:
                frame = self.fetch_appended(w.correlation_id, w.request, p, batch, base,
                                            append_time)
                if frame is not None:
                    self.waiters.remove(w)
                    if not w.conn.closed:
                        self.stats.batch_sent(p.topic, batch)
                        before = sent_on_socket(w.conn) if w.standing else -1
                        # LoopApi.answer of an encoded frame, without its two calls
                        w.conn.queue(frame)
                        w.conn.update_interest()
                        if w.standing:
                            self.standing.answered(w, None, batch, base, before)
                    continue
            resp, total = self.read_fetch(w.request)
            if total >= w.request.min_bytes:
                self.waiters.remove(w)
                before = sent_on_socket(w.conn) if w.standing else -1
                self.api.answer(w.conn, w.correlation_id, resp)
                if w.standing:
                    self.standing.answered(w, resp, socket_before=before)

    def read_fetch(self, req: M.FetchRequest) -> tuple[M.FetchResponse, int]:
        # Bounded whatever the client asks, so the response fits the client's frame limit; only
        # the first batch of the response may exceed what is left (a huge batch still progresses).
        remaining = min(req.max_bytes, F.MAX_FETCH_RESPONSE_BYTES)
        out = []
        total = 0
        for fp in req.partitions:
            try:
                p = self.logs.partition(fp.topic, fp.partition)
                # view: the records go into the response frame by one copy (the encoder's
                # join), not two (the log's slice of its read buffer, then the join)
                data = (p.read(fp.offset, min(fp.max_bytes, remaining), total == 0, view=True)
                        if remaining > 0 else b"")
                if data and self.txn_filter is not None:
                    data = self.txn_filter(p, data)
                total += len(data)
                remaining -= len(data)
                out.append(M.FetchedPartition(fp.topic, fp.partition, 0, "", p.log_end_offset,
                                              p.log_start_offset, data))
            except EdgebusError as e:
                hw = ls = -1
                try:
                    p = self.logs.partition(fp.topic, fp.partition)
                    hw, ls = p.log_end_offset, p.log_start_offset
                except EdgebusError:
                    pass
                out.append(M.FetchedPartition(fp.topic, fp.partition, e.code, str(e), hw, ls, b""))
        return M.FetchResponse(out), total

    def list_offsets(self, conn: Any, corr: int, req: M.ListOffsetsRequest) -> M.ListOffsetsResponse:
        out = []
        for lp in req.partitions:
            try:
                p = self.logs.partition(lp.topic, lp.partition)
                if conn.node is not None and not p.config.mirror_of.startswith(f"{conn.node}/"):
                    raise UnknownTopicError(f"unknown topic {lp.topic!r}")  # not this link's
                if lp.timestamp == M.LATEST:
                    off, ts = p.log_end_offset, -1
                elif lp.timestamp == M.EARLIEST:
                    off, ts = p.log_start_offset, -1
                elif lp.timestamp < 0:
                    raise InvalidRequestError(f"timestamp {lp.timestamp} is not valid")
                else:
                    found = p.offset_for_timestamp(lp.timestamp)
                    off, ts = found if found is not None else (-1, -1)
                out.append(M.ListedOffset(lp.topic, lp.partition, 0, "", off, ts))
            except EdgebusError as e:
                out.append(M.ListedOffset(lp.topic, lp.partition, e.code, str(e), -1, -1))
        return M.ListOffsetsResponse(out)
