"""One partition of a read request: FETCH's and REPLICA_FETCH's (docs/FORMAT.md 7.3, 7.9), in a
module of its own so that messages.py and replica_messages.py both take it without importing
each other. Re-exported by messages.py (M.FetchPartition)."""

from __future__ import annotations

from dataclasses import dataclass

from edgebus.protocol.codec import I32, I64, STR, Message


@dataclass
class FetchPartition(Message):
    topic: str
    partition: int
    offset: int
    max_bytes: int
    FIELDS = (("topic", STR), ("partition", I32), ("offset", I64), ("max_bytes", I32))
