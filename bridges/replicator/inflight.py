"""One append in flight while the next batches are read: how a link keeps both nodes busy.

Without it a link is strictly serial: read from the source, send to the target, wait for the
target's answer (its write and, with `durable`, its fsync), read again; each node idles while
the other works. With a target that can send an append and take its answer later (`ship_begin`,
the peer target), the runner sends partition p's append, then reads the next batches from the
source while the target writes, and only then waits for the answer.

What does not change: at most one append is in flight on the link, and every other request to
the target (the next append, a gap, a heartbeat, consumer group commits, a cursor) waits until
it is answered (`settle`). The cursor stays what the target answered: the read made meanwhile
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
    from bridges.replicator.link import PartitionState


@dataclass
class Shipment:
    tp: tuple[str, int]
    ps: PartitionState
    start: int  # the cursor the append was sent at
    end: int  # where the target's log ends if it takes every batch (the read's next offset)
    nbytes: int
    finish: Callable[[], tuple[int, int]]  # waits: (the target's new end, batches already there)


class InFlight:
    """The link's shipment in flight, if any."""

    def __init__(self) -> None:
        self.shipment: Shipment | None = None
        self.answered_at = time.monotonic()  # the last answer from the target

    def clear(self) -> None:
        """A new session: whatever was in flight went with the old connection."""
        self.shipment = None

    def position(self, tp: tuple[str, int], cursor: int) -> int:
        """Where the next read of tp starts: past the batches in flight, if any."""
        s = self.shipment
        return s.end if s is not None and s.tp == tp else cursor

    def settle(self, cursors: dict[tuple[str, int], int]) -> None:
        """Wait for the answer to the append in flight (its error raised) and move the cursor
        to the end the target answered."""
        s, self.shipment = self.shipment, None
        if s is None:
            return
        end, dups = s.finish()
        self.answered_at = time.monotonic()
        ps = s.ps
        ps.shipped_records += end - s.start
        ps.shipped_bytes += s.nbytes
        if ps.lag_bytes >= 0:
            ps.lag_bytes = max(0, ps.lag_bytes - s.nbytes)
        ps.appends += 1
        ps.duplicates += dups
        cursors[s.tp] = ps.cursor = end
        if end >= ps.source_end:
            ps.caught_up_at = time.time()
