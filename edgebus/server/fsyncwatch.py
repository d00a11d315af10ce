"""A stalled fsync made visible: a dying SD card can hold one fsync for seconds or minutes while
durable producers just wait.

The fsync thread (groupcommit.py) notes what it runs and since when, once per fsync; `FsyncWatch`
reads that from the loop's housekeeping timer, so the append path pays nothing. It logs one
WARNING when the running fsync passes `warn_s`, and one line when it ends; `edgebus status`
(its `disk:` line), the metric `edgebus_fsync_in_progress_seconds` and the systemd status line
show how long it has been running.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("edgebus.fsyncwatch")

# Longer than a healthy card's slowest fsync under load (tens to hundreds of ms), short enough
# that an operator hears of a stall before the producers' own timeouts do.
STALL_WARN_S = 5.0


class FsyncWatch:
    def __init__(self, committer: Any, warn_s: float = STALL_WARN_S) -> None:
        self.committer = committer
        self.warn_s = warn_s
        self._warned: tuple[str, float] | None = None  # the stalled fsync that was logged
        self.stalls = 0  # fsyncs that passed warn_s

    def running(self, now: float | None = None) -> tuple[str, float] | None:
        """What the fsync thread runs and for how many seconds, or None when it is idle."""
        r = self.committer.running
        if r is None:
            return None
        return r[0], (time.monotonic() if now is None else now) - r[1]

    def check(self, now: float) -> None:
        """From the housekeeping tick: the WARNING when a stall passes warn_s, a line at its end."""
        r = self.committer.running
        if self._warned is not None and r is not self._warned:
            what, t0 = self._warned
            self._warned = None
            # It ended when the next one began, or when the thread went idle.
            end = r[1] if r is not None else self.committer.idle_since
            log.warning("the fsync of %s ended after %.1f s", what, end - t0)
        if r is not None and r is not self._warned and now - r[1] >= self.warn_s:
            self._warned = r
            self.stalls += 1
            log.warning("the fsync of %s has been running for %.1f s: the disk (an SD card?) "
                        "stalls; durable producers wait for it (check `dmesg`)", r[0], now - r[1])

    def snapshot(self) -> dict[str, Any] | None:
        r = self.running()
        return None if r is None else {"what": r[0], "seconds": round(r[1], 1)}
