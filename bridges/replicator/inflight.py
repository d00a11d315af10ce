"""One append in flight while the next batches are read: how a link keeps both nodes busy.

Without it a link is strictly serial: read from the source, send to the target, wait for the
target's answer (its write and, with `durable`, its fsync), read again; each node idles while
the other works. With a target that can send an append and take its answer later (`ship_begin`,
the peer target), the runner sends partition p's append, then reads the next batches from the
source while the target writes, and only then waits for the answer.

What does not change: at most one append is in flight on the link (a target of subjects with a
guard each, NATS, may have one per partition in flight, never two of one partition), and every
other request to the target (a gap, a heartbeat, consumer group commits, a cursor) waits until
they are answered (`settle`). The cursor stays what the target answered: the read made meanwhile
starts at the offset the append will end at if it succeeds (`position`), and is dropped when
the answer says otherwise (a failed append ends the session, and the next one reads every
cursor from the target as always).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridges.replicator.link_status import PartitionState


@dataclass
class Shipment:
    tp: tuple[str, int]
    ps: PartitionState
    start: int  # the cursor the append was sent at
    end: int  # where the target's log ends if it takes every batch (the read's next offset)
    nbytes: int
    finish: Callable[[], tuple[int, int]]  # waits: (the target's new end, batches already there)


class InFlight:
    """The link's shipments in flight: one at most, or, with a target that takes several
    partitions' shipments at once (`parallel_partitions`, the NATS target: each subject has its
    own guard), one per partition, up to MAX_PARALLEL."""

    def __init__(self) -> None:
        self.shipments: dict[tuple[str, int], Shipment] = {}  # in the order sent
        self.answered_at = time.monotonic()  # the last answer from the target

    def clear(self) -> None:
        """A new session: whatever was in flight went with the old connection."""
        self.shipments.clear()

    def add(self, s: Shipment) -> None:
        self.shipments[s.tp] = s

    def position(self, tp: tuple[str, int], cursor: int) -> int:
        """Where the next read of tp starts: past the batches in flight, if any."""
        s = self.shipments.get(tp)
        return s.end if s is not None else cursor

    def settle(self, cursors: dict[tuple[str, int], int], tp: tuple[str, int] | None = None
               ) -> None:
        """Wait for the answers to the shipments in flight (tp's only, when given), in the
        order they were sent, each error raised, and move each cursor to the end the target
        answered."""
        for key in [tp] if tp is not None else list(self.shipments):
            s = self.shipments.pop(key, None) if key is not None else None
            if s is None:
                continue
            end, dups = s.finish()
            self.answered_at = time.monotonic()
            ps = s.ps
            ps.landed(s.start, end, s.nbytes, dups)
            cursors[s.tp] = end
            if end >= ps.source_end:
                ps.caught_up_at = time.time()
