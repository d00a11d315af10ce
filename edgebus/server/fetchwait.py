"""Long-poll fetches parked until enough bytes arrive or their wait runs out."""

from __future__ import annotations

import heapq
import itertools
import math
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

    def __init__(self, on_earlier: Callable[[], None] | None = None) -> None:
        # (topic, partition) -> the fetches parked on it; read directly by DataHandlers' produce
        # path, which looks for none there before calling on_append.
        self.by_partition: dict[tuple[str, int], set[ParkedFetch]] = {}
        self._deadlines: list[tuple[float, int, ParkedFetch]] = []
        self._seq = itertools.count()
        self.count = 0
        # The owner is a timer_static service (parking.py): the loop asks next_deadline() only
        # after a tick or when told, so a park calls on_earlier (LoopApi.deadline_changed) only
        # when its deadline is earlier than the one the loop was last told. A standing fetch's
        # re-arm per message parks later than that and costs the loop nothing (issue 16).
        self._on_earlier = on_earlier
        self._told = math.inf

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
        deadlines = self._deadlines
        if len(deadlines) > 64 and len(deadlines) > 2 * self.count:
            # Answered fetches stay in the heap until they reach its top; with no per-turn
            # next_deadline() popping them, a re-armed standing fetch would grow it by one per
            # message for its whole max_wait: drop them (amortized O(1) per park).
            deadlines = self._deadlines = [e for e in deadlines if not e[2].done]
            heapq.heapify(deadlines)
        d = w.deadline
        heapq.heappush(deadlines, (d, next(self._seq), w))
        self.count += 1
        w.conn.parked += 1
        if d < self._told:
            self._told = d
            if self._on_earlier is not None:
                self._on_earlier()

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
        if not self._deadlines:
            self._told = math.inf
            return None
        self._told = d = self._deadlines[0][0]
        return d

    def all(self) -> list[ParkedFetch]:
        """Every parked fetch once (a fetch on several partitions is indexed under each)."""
        return list({id(w): w for s in self.by_partition.values() for w in s}.values())
