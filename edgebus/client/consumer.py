"""edgebus.Consumer: assigned partitions, positions (client/consumer_positions.py), long-poll
fetches and decoding.

Without a group_id the consumer reads the partitions it is given (or every partition of the topics
named) from positions set by seek(), seek_to_timestamp() or auto_offset_reset.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.batch import Record
from edgebus.client.consumer_positions import ConsumerPositions
from edgebus.client.shm_channel import open_sync_channel
from edgebus.client.types import TopicPartition
from edgebus.errors import (
    ClosedError,
    CorruptRecordError,
    EdgebusError,
    OffsetOutOfRangeError,
    UnknownPartitionError,
    UnknownTopicError,
    error_for_code,
)
from edgebus.fastpath.fetch import FetchPlan
from edgebus.fastpath.strings import wire_str
from edgebus.heap import keep_freed_heap
from edgebus.protocol import messages as M

_RESETS = ("earliest", "latest", "none")
_GONE = (UnknownTopicError.code, UnknownPartitionError.code)
# With nothing to fetch (no assignment yet, or every partition paused) a poll re-checks its group
# and its deadline this often instead of spinning.
IDLE_RECHECK_S = 0.1


class Consumer(ConsumerPositions):
    def __init__(
        self,
        *topics: str,
        group_id: str | None = None,
        socket: str | os.PathLike[str] | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 8 * 1024 * 1024,
        max_partition_fetch_bytes: int = 1024 * 1024,
        max_poll_records: int = 500,
        consumer_timeout_ms: float = float("inf"),
        key_deserializer: Callable[[bytes], Any] | None = None,
        value_deserializer: Callable[[bytes], Any] | None = None,
        transport: str = "auto",
        **group_options: Any,
    ) -> None:
        if auto_offset_reset not in _RESETS:
            raise ValueError(f"auto_offset_reset must be one of {_RESETS}, got {auto_offset_reset!r}")
        keep_freed_heap()  # batch-sized buffers reuse heap pages (edgebus/heap.py)
        self.auto_offset_reset = auto_offset_reset
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.max_poll_records = max_poll_records
        self.consumer_timeout_ms = consumer_timeout_ms
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self.group_id = group_id
        # transport: "auto" (shared-memory rings when available), "shm" or "socket".
        self._ch = open_sync_channel(socket, transport=transport, fetches=True)
        self._ch.request(M.Api.API_VERSIONS, M.ApiVersionsRequest())
        self._assigned: list[TopicPartition] = []
        # Assigned partitions not fetched until resume() (kafka-python's pause); a subset of
        # _assigned, and none of them has records in _buffer.
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._highwater: dict[TopicPartition, int] = {}
        # Fetched records not yet returned, as runs of one partition: [tp, records, taken], where
        # records[taken:] are still to return. Per fetched partition one run, so taking costs a
        # slice per run, not work per record.
        # Invariant: no run is empty (records[taken:] holds at least one record).
        self._buffer: deque[list[Any]] = deque()
        self._plan: FetchPlan | None = None  # the FETCH body for _fetchable() and the limits
        # The common case's fast path (_quick_fetch): with one partition to fetch, (tp, the wire
        # prefix of an answer for it) once a fetch planned it; None whenever _plan is reset.
        self._quick: tuple[TopicPartition, bytes] | None = None
        # Damage met in a partition, raised once the records fetched before it are returned (see
        # _fetch). Invariant: each error names the offset right after the partition's buffered
        # records (its position once they are taken); seek() and assign() drop it.
        self._corrupt: dict[TopicPartition, CorruptRecordError] = {}
        self._tp_of: dict[tuple[str, int], TopicPartition] = {}  # (topic, partition) -> assigned tp
        self._closed = False
        self._group: Any = None
        if group_id is not None:
            from edgebus.client.group import GroupMembership

            self._group = GroupMembership(self, group_id, enable_auto_commit=enable_auto_commit,
                                          **group_options)
            if topics:
                self.subscribe(list(topics))
        else:
            if group_options:
                raise TypeError(f"unexpected options without group_id: {sorted(group_options)}")
            if topics:
                self.assign([TopicPartition(t, p) for t in topics for p in
                             sorted(self.partitions_for_topic(t))])

    # --- fetching --------------------------------------------------------------------------------
    def poll(self, timeout_ms: float = 0, max_records: int | None = None,
             update_offsets: bool = True) -> dict[TopicPartition, list[Record]]:
        """Records from the assigned partitions, waiting up to timeout_ms for the first one."""
        if self._closed:
            raise ClosedError("the consumer is closed")
        limit = max_records or self.max_poll_records
        try:
            self._fill(time.monotonic() + timeout_ms / 1000)
        except (EdgebusError, OSError, ValueError):
            if self._closed:  # close() in another thread ended the fetch under way
                raise ClosedError("the consumer is closed") from None
            raise
        return self._take(limit) if self._buffer else {}

    def _fill(self, deadline: float) -> None:
        """Fetch until records are buffered or the deadline passes."""
        while True:
            if self._group is not None:
                self._group.poll()
            fetchable = self._assigned if not self._paused else self._fetchable()
            if not self._buffer and fetchable:
                # The deadline may be infinite (consumer_timeout_ms's default): no int() of it.
                left_ms = (deadline - time.monotonic()) * 1000
                wait = self.fetch_max_wait_ms if left_ms >= self.fetch_max_wait_ms \
                    else int(left_ms) if left_ms > 0 else 0
                if self._quick is None or not self._quick_fetch(wait, deadline):
                    self._fetch(wait)
            if self._buffer:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not fetchable:
                time.sleep(min(left, IDLE_RECHECK_S))

    def _take(self, limit: int) -> dict[TopicPartition, list[Record]]:
        """Up to limit buffered records by partition; positions move past them. All or nothing:
        when a deserializer fails, every record stays buffered and no position moves."""
        buf = self._buffer
        kd, vd = self.key_deserializer, self.value_deserializer
        if len(buf) == 1 and kd is None and vd is None:  # one partition's run: the usual poll
            tp, recs, i = buf[0]
            if i == 0 and len(recs) <= limit:
                buf.clear()
                self._positions[tp] = recs[-1].offset + 1
                return {tp: recs}
        taken = []  # (tp, records); a run taken whole is returned as is, without a copy
        left = limit
        for run in buf:
            tp, recs, i = run
            k = min(len(recs) - i, left)
            if k <= 0:
                break
            taken.append((tp, recs if i == 0 and k == len(recs) else recs[i : i + k]))
            left -= k
            if not left:
                break
        if kd is not None or vd is not None:
            recs = [r for _tp, rs in taken for r in rs]
            keys = [kd(r.key) if kd is not None and r.key is not None else r.key for r in recs]
            vals = [vd(r.value) if vd is not None and r.value is not None else r.value for r in recs]
            for r, k, v in zip(recs, keys, vals, strict=True):
                r.key, r.value = k, v
        out: dict[TopicPartition, list[Record]] = {}
        for tp, rs in taken:  # the runs taken are the first ones, in order
            run = buf[0]
            run[2] += len(rs)
            if run[2] == len(run[1]):
                buf.popleft()
            got = out.get(tp)
            if got is None:
                out[tp] = rs
            else:
                got += rs
        positions = self._positions
        for tp, rs in out.items():
            positions[tp] = rs[-1].offset + 1
        return out

    def _fetch(self, max_wait_ms: int) -> None:
        """One FETCH; its records go to the buffer. A partition's damage (a batch failing its
        CRC or its structure here, or a CorruptRecordError from the supervisor) costs only that
        partition's records from the damage on: everything before it is buffered, and the error
        is raised once the buffer is empty (at once if it is), with the offset to seek past."""
        if self._corrupt:  # called with an empty buffer: the damage is next
            raise self._corrupt.pop(next(iter(self._corrupt)))
        positions = self._positions
        fetchable = self._fetchable()
        try:
            offsets = [positions[tp] for tp in fetchable]
        except KeyError:
            self._reset_missing(fetchable)
            offsets = [positions[tp] for tp in fetchable]
        limits = (self.fetch_min_bytes, self.fetch_max_bytes, self.max_partition_fetch_bytes)
        plan = self._plan
        if plan is None or plan.limits != limits:
            plan = self._plan = FetchPlan(fetchable, *limits)
            self._quick = None
            if len(fetchable) == 1 and hasattr(self._ch, "standing_records"):
                one = fetchable[0]
                self._quick = (one, F.ARRAY_COUNT.pack(1) + wire_str(one.topic)
                               + F.I32.pack(one.partition))
        body = plan.body(max_wait_ms, offsets)
        resp = self._ch.request(M.Api.FETCH, body, timeout=max_wait_ms / 1000 + 30)
        tp_of = self._tp_of
        for fp in resp.partitions:
            tp = tp_of.get((fp.topic, fp.partition))
            if tp is None or tp not in positions or tp in self._paused:
                continue  # unassigned or paused meanwhile
            if fp.error_code == OffsetOutOfRangeError.code:
                self._out_of_range(tp, fp)
                continue
            if fp.error_code in _GONE and self._group is not None and self._group.partition_gone(tp):
                continue  # topic deleted under a subscription: the group rebalances without it
            pos = positions[tp]
            if fp.error_code == CorruptRecordError.code:  # the message names the offsets
                self._corrupt[tp] = CorruptRecordError(
                    fp.error_message, topic=tp.topic, partition=tp.partition, offset=pos)
                continue
            if fp.error_code:
                raise error_for_code(fp.error_code, fp.error_message)
            self._highwater[tp] = fp.high_watermark
            if not fp.records:
                continue
            recs: list[Record] = []
            end = pos
            try:
                for batch in B.iter_batches(fp.records):
                    got = B.decode_batch(batch, tp.topic, tp.partition, pos)
                    base, _len, count = F.BATCH_SCAN.unpack_from(batch, 0)
                    end = base + count
                    if not recs:
                        recs = got
                    else:
                        recs += got
            except CorruptRecordError as e:  # the records before the bad batch still count
                self._corrupt[tp] = _damaged(tp, recs[-1].offset + 1 if recs else pos, str(e))
            if recs:
                self._buffer.append([tp, recs, 0])
            elif end > pos and tp not in self._corrupt:
                # Only offsets a compacted topic's cleaner removed (docs/FORMAT.md 4.8): move
                # past them, or the next fetch would return the same empty batches.
                self._positions[tp] = end
        if self._corrupt and not self._buffer:
            raise self._corrupt.pop(next(iter(self._corrupt)))

    def _quick_fetch(self, max_wait_ms: int, deadline: float) -> bool:
        """The common poll, in few Python calls: the one partition's standing fetch is armed
        from its position, and its answers carry plain records (no error, damage, headers or
        null values); ShmSyncChannel.standing_records waits and decodes them in C. False when
        that does not hold: the caller's _fetch then does the same fetch the general way."""
        tp, want = self._quick  # type: ignore[misc]
        pos = self._positions.get(tp)
        plan = self._plan
        if pos is None or self._corrupt or plan is None or plan.limits != (
                self.fetch_min_bytes, self.fetch_max_bytes, self.max_partition_fetch_bytes):
            return False
        got = self._ch.standing_records(plan, pos, max_wait_ms, deadline,  # type: ignore[attr-defined]
                                        want, tp.topic, tp.partition, Record)
        if got is None:
            return False
        recs, hw = got
        if recs:
            self._highwater[tp] = hw
            self._buffer.append([tp, recs, 0])
        return True

    def _out_of_range(self, tp: TopicPartition, fp: M.FetchedPartition) -> None:
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(fp.error_message)
        # Below the log start (retention deleted it) or past the end (log truncated by recovery).
        self._positions[tp] = fp.log_start_offset if self.auto_offset_reset == "earliest" or \
            self._positions[tp] < fp.log_start_offset else fp.high_watermark

    # --- iteration, commits, lifecycle -----------------------------------------------------------
    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        if not self._buffer:
            deadline = time.monotonic() + self.consumer_timeout_ms / 1000
            outage = 0
            while True:
                try:
                    self._fill(deadline)
                    break
                except EdgebusError as e:
                    # A `for record in consumer:` loop waits out a restart of the supervisor, as
                    # kafka-python's does a broker's: the next fetch reconnects (a group member
                    # rejoins). poll() raises instead, and leaves the choice to its caller.
                    if not e.retriable or time.monotonic() >= deadline:
                        raise
                    outage = self._wait_out(e, outage, deadline)
            if not self._buffer:
                raise StopIteration
        return next(iter(self._take(1).values()))[0]

    def _wait_out(self, error: EdgebusError, outage: int, deadline: float) -> int:
        """Sleep before the next attempt of an iteration (the first failure is logged)."""
        import logging

        from edgebus.backoff import backoff_delay

        if outage == 0:
            logging.getLogger("edgebus.consumer").warning("%s; retrying", error)
        time.sleep(max(0.0, min(backoff_delay(outage, 0.1, 5.0), deadline - time.monotonic())))
        return outage + 1

    def commit(self, offsets: dict[TopicPartition, Any] | None = None) -> None:
        if self._group is None:
            raise ValueError("commit() needs a group_id")
        self._group.commit(offsets)

    def commit_async(self, offsets: dict[TopicPartition, Any] | None = None,
                     callback: Callable[..., None] | None = None) -> Any:
        if self._group is None:
            raise ValueError("commit_async() needs a group_id")
        return self._group.commit_async(offsets, callback)

    def committed(self, partition: TopicPartition) -> int | None:
        if self._group is None:
            raise ValueError("committed() needs a group_id")
        return self._group.committed(TopicPartition(*partition))

    def close(self, autocommit: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._group is not None:
                self._group.close(autocommit)
        finally:
            self._ch.shut()  # waits out a poll in another thread before unmapping its rings

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _damaged(tp: TopicPartition, offset: int, why: str) -> CorruptRecordError:
    return CorruptRecordError(
        f"{tp.topic}-{tp.partition} at offset {offset}: the batch holding it is damaged ({why}); "
        f"the records before it were delivered; seek to {offset + 1} to skip it",
        topic=tp.topic, partition=tp.partition, offset=offset)
