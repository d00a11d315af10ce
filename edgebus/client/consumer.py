"""edgebus.Consumer: assigned partitions, positions, long-poll fetches and decoding.

Without a group_id the consumer reads the partitions it is given (or every partition of the topics
named) from positions set by seek(), seek_to_timestamp() or auto_offset_reset.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from edgebus import batch as B
from edgebus import format as F
from edgebus.batch import Record
from edgebus.client.offsets import list_offsets
from edgebus.client.shm_channel import open_sync_channel
from edgebus.client.types import OffsetAndTimestamp, TopicPartition
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


class Consumer:
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

    # --- assignment and positions ----------------------------------------------------------------
    def partitions_for_topic(self, topic: str) -> set[int]:
        t = self._ch.request(M.Api.METADATA, M.MetadataRequest([topic])).topics[0]
        if t.error_code:
            raise error_for_code(t.error_code, t.error_message)
        return {p.partition for p in t.partitions}

    def topics(self) -> set[str]:
        return {t.name for t in self._ch.request(M.Api.METADATA, M.MetadataRequest([])).topics}

    def subscribe(self, topics: Iterable[str] | None = None, pattern: str | None = None,
                  listener: Any = None) -> None:
        if self._group is None:
            raise ValueError("subscribe() needs a group_id; use assign() for manual assignment")
        self._group.subscribe(topics, pattern, listener)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Manual assignment: replaces the current one; positions of kept partitions stay."""
        new = [TopicPartition(*tp) for tp in partitions]
        keep = set(new)
        for tp in list(self._positions):
            if tp not in keep:
                self._forget(tp)
        self._assigned = new
        self._paused &= keep  # a partition kept stays paused
        self._plan = self._quick = None
        self._tp_of = {tp: tp for tp in new}

    def _forget(self, tp: TopicPartition) -> None:
        self._positions.pop(tp, None)
        self._corrupt.pop(tp, None)
        self._buffer = deque(run for run in self._buffer if run[0] != tp)

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned now (by assign(), or by the group at its last rebalance)."""
        return set(self._assigned)

    def subscription(self) -> set[str] | None:
        """The topics subscribed to (for a pattern: the topics it matched at the last
        rebalance), or None without a subscription (manual assignment, or after unsubscribe)."""
        return self._group.subscription() if self._group is not None else None

    def unsubscribe(self) -> None:
        """Give up the subscription and every assigned partition, as kafka-python does. In a
        group: the positions are committed (with auto-commit), the listener's on_revoked runs,
        and the member leaves the group, so its partitions move to the others at once. The
        consumer stays open: subscribe() or assign() again to read on."""
        if self._group is not None:
            self._group.unsubscribe()
        self.assign([])

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching from these assigned partitions until resume(): poll() and iteration
        return no records of them. Their positions stay where the application got to, so
        records fetched but not yet returned are fetched again after resume(). A group member
        keeps heartbeating while paused, and a partition stays paused across a rebalance that
        leaves it assigned to this consumer."""
        tps = [TopicPartition(*tp) for tp in partitions]
        for tp in tps:
            if tp not in self._tp_of:
                raise ValueError(f"{tp} is not assigned to this consumer")
        for tp in tps:
            if tp not in self._paused:
                self._paused.add(tp)
                self._buffer = deque(run for run in self._buffer if run[0] != tp)
        self._plan = self._quick = None

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch again from paused partitions (partitions that are not paused are ignored)."""
        self._paused.difference_update(TopicPartition(*tp) for tp in partitions)
        self._plan = self._quick = None

    def paused(self) -> set[TopicPartition]:
        """The partitions paused by pause() and not resumed."""
        return set(self._paused)

    def _fetchable(self) -> list[TopicPartition]:
        if not self._paused:
            return self._assigned
        return [tp for tp in self._assigned if tp not in self._paused]

    def seek(self, partition: TopicPartition, offset: int) -> None:
        tp = TopicPartition(*partition)
        if tp not in self._assigned:
            raise ValueError(f"{tp} is not assigned to this consumer")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._forget(tp)
        self._positions[tp] = offset

    def _list(self, tps: Iterable[TopicPartition], ts: int) -> dict[TopicPartition, tuple[int, int]]:
        return list_offsets(self._ch, [(t, p, ts) for t, p in tps])

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp, (off, _) in self._list(partitions or self._assigned, M.EARLIEST).items():
            self.seek(tp, off)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp, (off, _) in self._list(partitions or self._assigned, M.LATEST).items():
            self.seek(tp, off)

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ts in timestamps.items():
            off, at = self._list([tp], ts)[TopicPartition(*tp)]
            out[TopicPartition(*tp)] = None if off < 0 else OffsetAndTimestamp(off, at)
        return out

    def seek_to_timestamp(self, timestamp_ms: int, *partitions: TopicPartition) -> None:
        """Position each partition at the first batch appended at or after timestamp_ms
        (the end of the log when there is none)."""
        tps = list(partitions or self._assigned)
        found = self._list(tps, timestamp_ms)
        ends = self._list([tp for tp, (off, _) in found.items() if off < 0], M.LATEST)
        for tp, (off, _) in found.items():
            self.seek(tp, off if off >= 0 else ends[tp][0])

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: o for tp, (o, _) in self._list(partitions, M.EARLIEST).items()}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: o for tp, (o, _) in self._list(partitions, M.LATEST).items()}

    def position(self, partition: TopicPartition) -> int:
        tp = TopicPartition(*partition)
        if tp not in self._positions:
            self._reset_missing([tp])
        return self._positions[tp]

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._highwater.get(TopicPartition(*partition))

    def _reset_missing(self, tps: list[TopicPartition] | None = None) -> None:
        missing = [tp for tp in (tps or self._assigned) if tp not in self._positions]
        if self._group is not None and missing:
            missing = self._group.fill_committed(missing)
        if not missing:
            return
        if self.auto_offset_reset == "none":
            raise OffsetOutOfRangeError(f"no position for {missing} and auto_offset_reset='none'")
        ts = M.EARLIEST if self.auto_offset_reset == "earliest" else M.LATEST
        for tp, (off, _) in self._list(missing, ts).items():
            self._positions[tp] = off

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
