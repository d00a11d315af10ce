"""Partitions a target refuses for now, retried on a backoff (docs/REPLICATION.md, "NATS
JetStream": a subject no stream takes). Unlike a hold (a recreated source, a gap: until an
operator acts), a refusal can end by itself when the operator fixes the target (adds the subject
to the stream), so the link asks again: after RETRY_FIRST_S, doubling to RETRY_MAX_S, and the
other partitions ship meanwhile. Kept by the link across its sessions, so the backoff and the
log lines (one when a partition is refused, one when it recovers) do not start over at each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

RETRY_FIRST_S = 5.0  # the link's topic refresh: no sooner
RETRY_MAX_S = 60.0


@dataclass
class _Retry:
    due: float
    wait: float


@dataclass
class Refused:
    retries: dict[tuple[str, int], _Retry] = field(default_factory=dict)

    def refuse(self, tp: tuple[str, int], now: float | None = None) -> tuple[bool, float]:
        """Records a refusal of tp: (whether it is new, seconds until it is asked again)."""
        now = time.monotonic() if now is None else now
        old = self.retries.get(tp)
        wait = RETRY_FIRST_S if old is None else min(RETRY_MAX_S, old.wait * 2)
        self.retries[tp] = _Retry(now + wait, wait)
        return old is None, wait

    def due(self, now: float | None = None) -> list[tuple[str, int]]:
        """The refused partitions whose wait is over."""
        now = time.monotonic() if now is None else now
        return [tp for tp, r in self.retries.items() if r.due <= now]

    def clear(self, tp: tuple[str, int]) -> bool:
        """tp was taken: True when it had been refused (it recovered)."""
        return self.retries.pop(tp, None) is not None

    def forget_except(self, live: set[tuple[str, int]]) -> None:
        """Partitions gone from the source are not retried (bounded by what exists)."""
        for tp in [tp for tp in self.retries if tp not in live]:
            del self.retries[tp]
