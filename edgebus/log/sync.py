"""Group-commit fsync tickets.

The loop thread takes a ticket (Partition.begin_sync), a helper thread runs it (fsync of dup'ed
fds, so the loop may keep appending, rolling or deleting segments meanwhile), and the loop thread
then completes or fails it. A failed fsync is never retried into success: after an fsync error
the kernel may have dropped the dirty pages and a second fsync would report success (the
PostgreSQL 2018 lesson), so the partition goes offline instead.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field


@dataclass(eq=False)
class SyncTicket:
    fds: list[int]  # dups owned by the ticket; run() always closes them
    segment_base: int  # the point this ticket makes durable once run() succeeds ...
    position: int
    next_offset: int  # ... every offset below this one
    gen: int  # partition write generation when the ticket was taken
    segment_bases: list[int] = field(default_factory=list)  # segments whose writes it covers
    covers_dir: bool = False  # whether the partition directory is among the fds
    owner: object = None  # the Partition that issued it

    def run(self) -> None:
        """fsync every fd, close every fd, then raise the first OSError (if any)."""
        fds, self.fds = self.fds, []
        err: OSError | None = None
        for fd in fds:
            if err is None:
                try:
                    os.fsync(fd)
                except OSError as e:
                    err = e
            try:
                os.close(fd)
            except OSError as e:
                err = err or e
        if err is not None:
            raise err

    def discard(self) -> None:
        """Close the fds without syncing (a ticket that will not be run)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
