"""edgebus.Consumer's assignment and positions: assign, subscribe, pause and resume, seek and the
offset look-ups (ListOffsets), and the reset of a partition without a position
(auto_offset_reset, or the group's committed offset). Mixed into Consumer (client/consumer.py),
whose state it uses; the fetch path reads the same fields."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from edgebus.client.channel import SyncChannel
from edgebus.client.offsets import list_offsets
from edgebus.client.types import OffsetAndTimestamp, TopicPartition
from edgebus.errors import CorruptRecordError, OffsetOutOfRangeError, error_for_code
from edgebus.fastpath.fetch import FetchPlan
from edgebus.protocol import messages as M


class ConsumerPositions:
    # Consumer's, set in its __init__ (what each holds is said there).
    _ch: SyncChannel
    _group: Any
    auto_offset_reset: str
    _assigned: list[TopicPartition]
    _paused: set[TopicPartition]
    _positions: dict[TopicPartition, int]
    _highwater: dict[TopicPartition, int]
    _buffer: deque[list[Any]]
    _plan: FetchPlan | None
    _quick: tuple[TopicPartition, bytes] | None
    _corrupt: dict[TopicPartition, CorruptRecordError]
    _tp_of: dict[tuple[str, int], TopicPartition]

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
