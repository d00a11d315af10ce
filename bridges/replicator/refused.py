"""Partitions a target refuses for now, retried on a backoff (docs/REPLICATION.md, "NATS
JetStream": a subject no stream takes). Unlike a hold (a recreated source, a gap: until an
operator acts), a refusal can end by itself when the operator fixes the target (adds the subject
to the stream), so the link asks again: after RETRY_FIRST_S, doubling to RETRY_MAX_S, and the
other partitions ship meanwhile. Kept by the link across its sessions, so the backoff and the
log lines (one when a partition is refused, one when it recovers) do not start over at each.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

RETRY_FIRST_S = 5.0  # the link's topic refresh: no sooner
RETRY_MAX_S = 60.0


@dataclass
class _Retry:
    due: float
    wait: float


@dataclass
class Refused:
    """Keyed by partition (a link's up direction) or by subject (a wildcard rule's topics the
    supervisor refused to create: pull_wildcards.py)."""

    retries: dict[Hashable, _Retry] = field(default_factory=dict)

    def refuse(self, tp: Hashable, now: float | None = None) -> tuple[bool, float]:
        """Records a refusal of tp: (whether it is new, seconds until it is asked again)."""
        now = time.monotonic() if now is None else now
        old = self.retries.get(tp)
        wait = RETRY_FIRST_S if old is None else min(RETRY_MAX_S, old.wait * 2)
        self.retries[tp] = _Retry(now + wait, wait)
        return old is None, wait

    def due(self, now: float | None = None) -> list[Any]:
        """The refused partitions whose wait is over."""
        now = time.monotonic() if now is None else now
        return [tp for tp, r in self.retries.items() if r.due <= now]

    def is_due(self, key: Hashable, now: float | None = None) -> bool:
        r = self.retries.get(key)
        return r is not None and r.due <= (time.monotonic() if now is None else now)

    def clear(self, tp: Hashable) -> bool:
        """tp was taken: True when it had been refused (it recovered)."""
        return self.retries.pop(tp, None) is not None

    def forget_except(self, live: set[Any]) -> None:
        """Partitions gone from the source are not retried (bounded by what exists)."""
        for tp in [tp for tp in self.retries if tp not in live]:
            del self.retries[tp]
