"""How much a link's up direction reads at once and how fast it may ship: the read's bytes,
each partition's share of them by its rule's weight and priority class, and the bandwidth cap
(max_bytes_per_s) as a token bucket (docs/REPLICATION.md: **Priorities**, **The bandwidth cap**).
"""

from __future__ import annotations

import threading
import time

from bridges.replicator.config import LinkConfig

# One read of all partitions: bounded memory, and below the mmap threshold of every process it
# crosses (edgebus/heap.py: half of EDGEBUS_HEAP_KEEP_MIB, 4 MiB by default) with room for the
# copies each makes of it, so the source's answer, this process's buffers and the peer's append
# frame reuse freed heap. At 4 MiB each of them got fresh pages from the kernel, three page
# faults per page of data on the source (bench/results/replication-1k.md).
READ_BYTES = 2 * 1024 * 1024
MIN_READ_BYTES = 64 * 1024  # per partition: more than any batch header, so every read moves


class ReadBudget:
    def __init__(self, cfg: LinkConfig, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self._tokens = float(cfg.max_bytes_per_s or 0)  # the bandwidth cap's bucket
        self._refilled = time.monotonic()

    def priority(self, tp: tuple[str, int]) -> int:
        rule = self.cfg.rule_for(tp[0])
        return rule.priority if rule is not None else 0

    def shares(self, part: list[tuple[str, int]], budget: int) -> dict[tuple[str, int], int]:
        """Each partition's cap in one read of its class: the read's bytes split by weight
        (with a backlog everywhere, bytes shipped go in proportion), and at most batch_bytes
        (batching by size: the most one append carries)."""
        weights = {tp: (r.weight if (r := self.cfg.rule_for(tp[0])) is not None else 1)
                   for tp in part}
        total = sum(weights.values())
        return {tp: max(1, min(self.cfg.batch_bytes, budget * w // total))
                for tp, w in weights.items()}

    def read_bytes(self, partitions: int) -> int:
        """Bytes one read asks for: with a bandwidth cap, about a quarter second's worth, so a
        higher class waits at most that long behind a lower one's shipment."""
        cap = self.cfg.max_bytes_per_s
        if cap is None:
            return READ_BYTES
        return max(MIN_READ_BYTES, min(READ_BYTES, cap // 4))

    def throttle(self, nbytes: int) -> None:
        """The link's bandwidth cap, a token bucket of one second's worth: wait until `nbytes`
        may go (a batch larger than a second's worth goes alone, then pays its debt)."""
        cap = self.cfg.max_bytes_per_s
        if cap is None:
            return
        now = time.monotonic()
        self._tokens = min(float(cap), self._tokens + (now - self._refilled) * cap)
        self._refilled = now
        if self._tokens < min(nbytes, cap):
            self.stop.wait((min(nbytes, cap) - self._tokens) / cap)
            now = time.monotonic()
            self._tokens += (now - self._refilled) * cap
            self._refilled = now
        self._tokens -= nbytes

    def give_back(self, saved: int) -> None:
        """The cap is on the wire: what compression saved goes back to the bucket."""
        cap = self.cfg.max_bytes_per_s
        if cap is not None:
            self._tokens = min(float(cap), self._tokens + max(0, saved))
