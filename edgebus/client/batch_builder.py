"""_Builder: one partition's batch being filled by edgebus.Producer (records encoded, not yet sent)."""

from __future__ import annotations

import math
import time
from typing import Any

from edgebus import format as F
from edgebus.client.types import AckOwner, BatchResult


class _Builder:
    __slots__ = ("attempts", "count", "created", "deadline", "first_ts", "max_ts", "order",
                 "partition", "records", "result", "size", "stamp", "topic")

    def __init__(self, topic: str, partition: int, owner: AckOwner | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[bytes] = []  # encoded records; an element may hold several (add_many)
        self.count = 0  # records in the batch
        self.size = F.BATCH_HEADER_SIZE
        self.first_ts = -1
        self.max_ts = -1
        self.result = BatchResult(topic, partition, owner)
        self.created = time.monotonic()
        self.deadline = math.inf  # while sent: when it is given up on (request/delivery timeout)
        self.attempts = 0  # retries so far
        self.stamp: tuple[int, int, int] | None = None  # idempotence: (producer id, epoch, sequence)
        self.order = 0  # when it was sealed (Producer._seal): resends keep their partition's order

    def add(self, rec: bytes, ts: int) -> int:
        if not self.records:
            self.first_ts = ts
        if ts > self.max_ts:
            self.max_ts = ts
        self.records.append(rec)
        self.size += len(rec)
        self.count += 1
        return self.count - 1

    def add_many(self, blob: Any, n: int, ts: int) -> int:
        """n records encoded back to back (the bulk path); the index of the first."""
        if not self.records:
            self.first_ts = ts
        if ts > self.max_ts:
            self.max_ts = ts
        self.records.append(blob)
        self.size += len(blob)
        self.count += n
        return self.count - n
