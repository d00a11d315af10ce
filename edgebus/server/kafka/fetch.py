"""Kafka Fetch (v4-v12) with long poll, and ListOffsets (v1-v10).

Fetch reads whole edgebus batches (Partition.read, bounded by the partition's and the request's
max bytes; the first batch whole whatever the bounds, as Kafka does) and converts each into an
uncompressed Kafka batch (records.py). A fetch with fewer than min_bytes parks until an append
to one of its partitions (DataHandlers' append listeners) or its max wait (bounded by
limits.max_fetch_wait_ms): the same FetchWaiters as native fetches. Fetch sessions (KIP-227) are
not kept: every answer says session 0, so clients send full fetches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus import format as F
from edgebus.errors import EdgebusError
from edgebus.server.fetchwait import FetchWaiters, ParkedFetch
from edgebus.server.kafka import errcodes as E
from edgebus.server.kafka.apis import DEFERRED
from edgebus.server.kafka.codec import build, kafka_error, response_module
from edgebus.server.kafka.hot import FetchPart, fetch_response
from edgebus.server.kafka.leader_epochs import epochs_of, stamp
from edgebus.server.kafka.records import edgebus_to_kafka
from edgebus.server.parking import ParkingService
from edgebus.server.txn.mark import up_to

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

FETCH, LIST_OFFSETS = 1, 2
# As DataHandlers: a consumer needs one parked fetch at a time.
MAX_PARKED_PER_CONNECTION = 8
LATEST, EARLIEST, MAX_TIMESTAMP = -1, -2, -3
# Tiered storage's specs (v8, v9): with no remote tier the local log start is the log start,
# and nothing is tiered (Kafka answers offset -1 for LATEST_TIERED then).
EARLIEST_LOCAL, LATEST_TIERED = -4, -5


@dataclass(frozen=True, slots=True)
class _TP:
    topic: str
    partition: int


@dataclass(slots=True)
class _Plan:
    """What FetchWaiters needs of a request (.partitions of .topic/.partition), plus the Kafka
    request and its header for the answer."""

    partitions: list[_TP]
    header: Any
    request: Any


class KafkaFetches(ParkingService):
    """Parked Kafka fetches: answered when an append brings min_bytes, or at their deadline."""

    def __init__(self, ctx: KafkaContext) -> None:
        self.ctx = ctx
        self.waiters = FetchWaiters(ctx.api.deadline_changed)
        # on_append is one of DataHandlers' append listeners only while a Kafka fetch is parked,
        # and then only for the partitions parked fetches wait on (its key set is the waiters'
        # own index, kept current by park and remove): a listener's partitions' appends go
        # through Python (shm_park's py_after, no standing answers in C: shm_plane). Registered
        # for all partitions, from the first Kafka connection on, it doubled the supervisor's
        # CPU per native message (fullgap26); for all partitions while a Kafka fetch was parked
        # (which a live Kafka consumer nearly always has), it sent every native partition's
        # appends to Python while a Kafka consumer read any topic (sup27).
        self._listener = (self.on_append, self.waiters.by_partition)
        self._listening = False

    def _listen(self) -> None:
        if not self._listening:
            self.ctx.data.append_listeners.append(self._listener)
            self._listening = True

    def _unlisten_if_idle(self) -> None:
        if self._listening and not self.waiters.count:
            self.ctx.data.append_listeners.remove(self._listener)
            self._listening = False

    def on_append(self, p: Any) -> None:
        if self.ctx.api.output_budget_used:
            return  # parked fetches wait (costing nothing) until room or their deadline
        for w in self.waiters.waiting_on(p.topic, p.partition):
            plan: _Plan = w.request  # type: ignore[assignment]
            topics, total, out, _ = read(self.ctx, plan.request)
            if total >= plan.request.min_bytes:
                self.waiters.remove(w)
                answer(self.ctx, w.conn, plan.header, topics, out)
        self._unlisten_if_idle()

    def complete_fetch(self, w: ParkedFetch) -> None:
        if w.done:
            return
        self.waiters.remove(w)
        self._unlisten_if_idle()
        plan: _Plan = w.request  # type: ignore[assignment]
        topics, _, out, _ = read(self.ctx, plan.request)
        answer(self.ctx, w.conn, plan.header, topics, out)

    def connection_closed(self, conn: Connection) -> None:
        super().connection_closed(conn)
        self._unlisten_if_idle()

    def park(self, conn: Connection, header: Any, req: Any, wait_ms: int) -> None:
        plan = _Plan([_TP(t.topic, fp.partition) for t in req.topics for fp in t.partitions], header, req)
        self.waiters.park(ParkedFetch(conn, header.correlation_id, plan,  # type: ignore[arg-type]
                                      time.monotonic() + wait_ms / 1000))
        self._listen()


def fetches(ctx: KafkaContext) -> KafkaFetches:
    f: KafkaFetches = ctx.parts["fetches"]
    return f


Topics = list[tuple[str, list[FetchPart]]]


def answer(ctx: KafkaContext, conn: Connection, header: Any, topics: Topics,
           out: list[tuple[str, bytes]]) -> None:
    """Send a deferred Fetch answer and count the stored bytes it carries (status, metrics)."""
    if conn.closed:
        return
    for topic, data in out:
        ctx.stats.bytes_sent(topic, data)
    ctx.api.answer(conn, header.correlation_id,
                   fetch_response(header.request_api_version, header.correlation_id, topics))


def fetch(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    wait = min(int(req.max_wait.total_seconds() * 1000), ctx.data.max_fetch_wait_ms)
    topics, total, out, errors = read(ctx, req)
    if (total >= req.min_bytes or wait <= 0 or ctx.api.stopping
            or conn.parked >= MAX_PARKED_PER_CONNECTION or errors):
        for topic, data in out:
            ctx.stats.bytes_sent(topic, data)
        return fetch_response(header.request_api_version, header.correlation_id, topics)
    fetches(ctx).park(conn, header, req, wait)
    return DEFERRED


def read(ctx: KafkaContext, req: Any) -> tuple[Topics, int, list[tuple[str, bytes]], bool]:
    """(the answer's topics for hot.fetch_response, record bytes in them, the stored bytes they
    carry by topic, whether a partition has an error)."""
    remaining = min(max(req.max_bytes, 1), F.MAX_FETCH_RESPONSE_BYTES)
    total = 0
    topics: Topics = []
    txn = ctx.parts.get("txn")
    epochs = epochs_of(ctx)
    committed = getattr(req, "isolation_level", 0) == 1
    out: list[tuple[str, bytes]] = []
    errors = False
    for t in req.topics:
        parts: list[FetchPart] = []
        for fp in t.partitions:
            err, records = 0, b""
            hw = ls = lso = -1
            aborted: list[tuple[int, int]] | None = None
            try:
                p = ctx.logs.partition(t.topic, fp.partition)
                hw, ls = p.log_end_offset, p.log_start_offset
                lso = txn.last_stable_offset((t.topic, fp.partition), hw) if txn else hw
                end = lso if committed else hw  # read_committed stops at the last stable offset
                ep = epochs.of(p) if epochs.table else None
                if ep is not None and 0 <= getattr(fp, "current_leader_epoch", -1) < ep.current:
                    # A client that has not seen the bump (leader_epochs.py): it refreshes its
                    # metadata, sees the new epoch and validates its position (KIP-320). A
                    # larger epoch than ours (a deleted topic's) is served: see leader_epochs.
                    err = E.FENCED_LEADER_EPOCH
                elif remaining > 0 and fp.fetch_offset < end:
                    data = p.read(fp.fetch_offset, min(max(fp.partition_max_bytes, 1), remaining),
                                  at_least_one=total == 0)
                    if committed and data:
                        data = up_to(data, end)
                        aborted = list(txn.aborted_between((t.topic, fp.partition),
                                                           fp.fetch_offset, end)) if txn else []
                    if data:
                        records = stamp(edgebus_to_kafka(data), ep)
                        total += len(records)
                        remaining -= len(records)
                        out.append((t.topic, data))
                elif fp.fetch_offset > hw:
                    err = int(ErrorCode.offset_out_of_range)
            except EdgebusError as e:
                err = int(kafka_error(e))
            errors = errors or err != 0
            parts.append((fp.partition, err, hw, lso, ls, aborted, records))
        topics.append((t.topic, parts))
    return topics, total, out, errors


def list_offsets(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    """LATEST (-1): the log end; EARLIEST (-2): the log start; MAX_TIMESTAMP (-3): the first
    batch with the largest append time; a timestamp: the first offset whose record time is at
    or after it (-1 when none, and with read_committed when it is not below the last stable
    offset); EARLIEST_LOCAL (-4, v8) the log start and LATEST_TIERED (-5, v9) -1, as a Kafka
    broker without a remote tier answers. v7-v10 have v6's fields (v10 adds a timeout for reads
    from a remote tier: none here, nothing waits), so one answer serves every version."""
    mod = response_module(LIST_OFFSETS, header.request_api_version)
    epochs = epochs_of(ctx)
    topics = []
    for t in req.topics:
        parts = []
        for lp in t.partitions:
            err, off, ts, epoch = ErrorCode.none, -1, -1, -1
            try:
                p = ctx.logs.partition(t.name, lp.partition_index)
                if lp.timestamp == LATEST:
                    off = p.log_end_offset
                    if getattr(req, "isolation_level", 0) == 1 and "txn" in ctx.parts:
                        off = ctx.parts["txn"].last_stable_offset((t.name, lp.partition_index), off)
                elif lp.timestamp in (EARLIEST, EARLIEST_LOCAL):
                    off = p.log_start_offset
                elif lp.timestamp == LATEST_TIERED:
                    pass  # offset -1, timestamp -1
                elif lp.timestamp < 0 and lp.timestamp != MAX_TIMESTAMP:
                    err = ErrorCode.invalid_request
                else:  # MAX_TIMESTAMP: KIP-734 (v7), by append time as a timestamp is
                    found = (p.offset_of_max_timestamp() if lp.timestamp == MAX_TIMESTAMP
                             else p.offset_for_timestamp(lp.timestamp))
                    # read_committed finds nothing at or past the last stable offset, as in
                    # Kafka: an open transaction's records are not there for it yet.
                    if (found is not None and getattr(req, "isolation_level", 0) == 1
                            and "txn" in ctx.parts and found[0] >= ctx.parts["txn"]
                            .last_stable_offset((t.name, lp.partition_index), p.log_end_offset)):
                        found = None
                    if found is not None:
                        off, ts = found
                if off >= 0:  # the epoch of the record there (the current one at the log end)
                    ep = epochs.of(p) if epochs.table else None
                    epoch = 0 if ep is None else (ep.current if off >= p.log_end_offset
                                                  else ep.epoch_at(off))
            except EdgebusError as e:
                err = kafka_error(e)
            parts.append(build(mod.ListOffsetsPartitionResponse, partition_index=lp.partition_index,
                               error_code=err, timestamp=ts, offset=off,
                               old_style_offsets=(off,) if off >= 0 else (), leader_epoch=epoch))
        topics.append(build(mod.ListOffsetsTopicResponse, name=t.name, partitions=tuple(parts)))
    return build(mod.ListOffsetsResponse, topics=tuple(topics))
