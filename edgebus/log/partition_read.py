"""Reading a Partition: whole batches from an offset (typed errors at damage and gaps), the
last appended batch from memory, and the search by append time.

`_Reads` is a mixin of `Partition` (edgebus/log/partition.py, whose docstring gives the
invariants); the state it uses is declared in partition_state.py.
"""

from __future__ import annotations

import bisect
from typing import Literal, overload

from edgebus import format as F
from edgebus.errors import CorruptRecordError, OffsetOutOfRangeError
from edgebus.log.fileutil import storage_error
from edgebus.log.partition_state import _PartitionState


class _Reads(_PartitionState):
    """Partition's reads."""

    def tail_batch(self, offset: int) -> bytes | None:
        """The last batch `append` wrote (stamped), when it starts at `offset`, is still the log's
        last and was small enough to keep (TAIL_BATCH_BYTES); else None. What `read(offset, n,
        True)` would return then, for any n."""
        tail = self._tail
        if (tail is None or tail[0] != offset or tail[1] != self.log_end_offset or self._closed
                or offset < self.log_start_offset):
            return None
        return tail[2]

    @overload
    def read(self, offset: int, max_bytes: int, at_least_one: bool = True,
             view: Literal[False] = False) -> bytes: ...

    @overload
    def read(self, offset: int, max_bytes: int, at_least_one: bool,
             view: Literal[True]) -> bytes | memoryview: ...

    def read(self, offset: int, max_bytes: int, at_least_one: bool = True,
             view: bool = False) -> bytes | memoryview:
        """Whole batches from the one holding `offset`, up to max_bytes; with at_least_one, the
        first batch even if it alone exceeds max_bytes (so a huge batch still makes progress).
        view=True: a memoryview of the read buffer may come back instead of bytes copied out
        of it (a fetch answer, which copies the records into its response frame anyway).

        Damage is a typed error at its offsets, never records at wrong offsets: the read stops
        before a damaged batch or a gap (offsets whose batches recovery moved aside, between two
        segments), and a read that starts in one raises CorruptRecordError with `next_offset`,
        the first offset after it."""
        self._check_open()
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is out of range for {self.name}: log start "
                f"{self.log_start_offset}, log end {self.log_end_offset}"
            )
        if offset == self.log_end_offset:
            return b""
        tail = self._tail
        if tail is not None and tail[0] == offset and tail[1] == self.log_end_offset:
            # The last batch, nothing after it: what the segment read below would return.
            last = tail[2]
            return last if at_least_one or len(last) <= max_bytes else b""
        interval = self.config.index_interval_bytes
        segs = self._segments
        i = bisect.bisect_right(self._bases, offset) - 1
        parts: list[bytes | memoryview] = []
        budget = max(max_bytes, 0)
        try:
            while i < len(segs):
                seg = segs[i]
                try:
                    data, at_end, after = seg.read(offset, budget, at_least_one and not parts,
                                                   interval, view)
                except CorruptRecordError as e:
                    if parts:
                        break  # deliver what lies before the damage; the next read raises
                    raise self._damaged(offset, e) from None
                self._touch(seg)
                if not data and at_end and not parts:
                    raise self._gap(offset, after, i)
                if data:
                    parts.append(data)
                    budget -= len(data)
                if not at_end or budget < F.BATCH_HEADER_SIZE:
                    break
                i += 1
                if i < len(segs):
                    if segs[i].base_offset != after:
                        break  # a gap follows: stop before it
                    offset = after
        except OSError as e:
            raise storage_error(e, f"reading {self.name}") from e
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _damaged(self, offset: int, e: CorruptRecordError) -> CorruptRecordError:
        nxt = e.next_offset
        skip = f"; seek to {nxt} to skip it" if nxt is not None else ""
        return CorruptRecordError(f"{self.name} at offset {offset}: {e}{skip}", topic=self.topic,
                                  partition=self.partition, offset=offset, next_offset=nxt)

    def _gap(self, offset: int, start: int, i: int) -> CorruptRecordError:
        """`offset` lies past the last batch of segment i and before the next segment: offsets
        whose batches recovery moved aside (their segment ends early)."""
        nxt = self._bases[i + 1] if i + 1 < len(self._bases) else self.log_end_offset
        gap = next((g for g in self.gaps if g.start <= offset < g.end), None)
        if gap is not None:
            return CorruptRecordError(
                f"{self.name} at offset {offset}: {gap.describe()} (a mirror's gap record); "
                f"seek to {gap.end} to skip them", topic=self.topic, partition=self.partition,
                offset=offset, next_offset=gap.end)
        return CorruptRecordError(
            f"{self.name} at offset {offset}: offsets {start}..{nxt - 1} were damaged or lost on "
            f"disk (recovery's WARNING in the supervisor's log says which bytes it set aside in "
            f".corrupt files); seek to {nxt} to skip them",
            topic=self.topic, partition=self.partition, offset=offset, next_offset=nxt)

    def bytes_to_end(self, offset: int) -> int:
        """Bytes of log from the batch holding `offset` to the log end, from the segment sizes
        and the in-memory offset index, without reading: the position in offset's segment is
        the index entry at or before it (or a recently appended batch's exact start), so the
        figure is at most one index interval above the exact one. 0 at or past the log end."""
        if offset >= self.log_end_offset or self._closed:
            return 0
        segs = self._segments
        i = max(0, bisect.bisect_right(self._bases, offset) - 1)
        later = sum(s.size for s in segs[i + 1:])
        return later + segs[i].size - segs[i].position_at_most(offset)

    def at_end(self, offset: int) -> bool:
        """Whether read(offset, ...) would return no data and raise nothing, known without
        reading: `offset` is the log end of an open partition (a caught-up consumer's fetch)."""
        return offset == self.log_end_offset and not self._closed

    def offset_for_timestamp(self, ts_ms: int) -> tuple[int, int] | None:
        """(offset, append_time) of the first batch with append_time >= ts_ms, or None."""
        self._check_open()
        interval = self.config.index_interval_bytes
        segs = self._segments
        try:
            # Append times never decrease, so the segment is found by bisection.
            lo, hi = 0, len(segs)
            while lo < hi:
                mid = (lo + hi) // 2
                t = segs[mid].last_append_time(interval)
                self._touch(segs[mid])
                if t is not None and t >= ts_ms:
                    hi = mid
                else:
                    lo = mid + 1
            if lo == len(segs):
                return None
            found = segs[lo].find_time(ts_ms, interval)
            if found is not None and found[0] < self.log_start_offset:  # below DeleteRecords'
                return self.log_start_offset, found[1]
            return found
        except OSError as e:
            raise storage_error(e, f"searching {self.name} by time") from e

    def offset_of_max_timestamp(self) -> tuple[int, int] | None:
        """(offset, append_time) of the first batch with the largest append time (the last
        batch's: append times never decrease), or None for an empty log: Kafka's
        MAX_TIMESTAMP by edgebus's time, which is append time (offset_for_timestamp)."""
        self._check_open()
        if self.log_start_offset >= self.log_end_offset:
            return None
        interval = self.config.index_interval_bytes
        try:
            for seg in reversed(self._segments):
                t = seg.last_append_time(interval)
                self._touch(seg)
                if t is not None:
                    return self.offset_for_timestamp(t)
        except OSError as e:
            raise storage_error(e, f"searching {self.name} by time") from e
        return None
