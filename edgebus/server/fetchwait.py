"""Long-poll fetches parked until enough bytes arrive or their wait runs out."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgebus.protocol.messages import FetchRequest


@dataclass(eq=False, slots=True)
class ParkedFetch:
    # Slots and no default_factory: a standing fetch makes one per answer (re-armed).
    conn: Any
    correlation_id: int
    request: FetchRequest
    deadline: float
    keys: Sequence[tuple[str, int]] = ()  # where FetchWaiters.park indexed it
    done: bool = False
    # A REPLICA_FETCH's long poll (handlers/replica.py): woken like a fetch, answered by this
    # (durable data only) instead of with FETCH's answer.
    respond: Callable[[], None] | None = None
    # A FETCH_STANDING's (handlers/standing.py): re-armed after its answer, re-parked silently
    # when its wait runs out; a suspended one (the consumer's ring is full) is indexed under no
    # partition, so appends pass it by until the consumer reads.
    standing: bool = False
    suspended: bool = False
    recheck_s: float = 0.0  # a suspended one's wait before it looks again by itself


class FetchWaiters:
    """Index of parked fetches by partition and by deadline."""

    def __init__(self) -> None:
        # (topic, partition) -> the fetches parked on it; read directly by DataHandlers' produce
        # path, which looks for none there before calling on_append.
        self.by_partition: dict[tuple[str, int], set[ParkedFetch]] = {}
        self._deadlines: list[tuple[float, int, ParkedFetch]] = []
        self._seq = itertools.count()
        self.count = 0

    def park(self, w: ParkedFetch) -> None:
        parts = w.request.partitions
        if w.suspended:
            w.keys = []
        elif len(parts) == 1:  # the usual case, without the list comprehension's call
            w.keys = [(parts[0].topic, parts[0].partition)]
        else:
            w.keys = [(p.topic, p.partition) for p in parts]
        for k in w.keys:
            self.by_partition.setdefault(k, set()).add(w)
        heapq.heappush(self._deadlines, (w.deadline, next(self._seq), w))
        self.count += 1
        w.conn.parked += 1

    def remove(self, w: ParkedFetch) -> None:
        if w.done:
            return
        w.done = True
        self.count -= 1
        w.conn.parked -= 1
        for k in w.keys:
            s = self.by_partition.get(k)
            if s is not None:
                s.discard(w)
                if not s:
                    del self.by_partition[k]

    def waiting_on(self, topic: str, partition: int) -> list[ParkedFetch]:
        s = self.by_partition.get((topic, partition))
        return list(s) if s else []

    def expired(self, now: float) -> list[ParkedFetch]:
        out = []
        while self._deadlines and (self._deadlines[0][0] <= now or self._deadlines[0][2].done):
            w = heapq.heappop(self._deadlines)[2]
            if not w.done:
                out.append(w)
        return out

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def all(self) -> list[ParkedFetch]:
        """Every parked fetch once (a fetch on several partitions is indexed under each)."""
        return list({id(w): w for s in self.by_partition.values() for w in s}.values())
