"""Notices a wall clock that is behind the log's append times.

Append times never go backwards within a partition (docs/FORMAT.md 2.1): a batch appended while
the clock reads earlier than the partition's latest append time is stamped with that time. That
is right for a clock stepped back by seconds, but a board without a real-time clock that once ran
with a clock far in the future (a wrong RTC, a bad NTP answer, later corrected) holds every new
append time at that future moment: retention by time deletes nothing until the clock gets there,
time-based segment rolls stop, and seeks by timestamp land at the end. Nothing else shows it, so
this check says it once in the log (and again when it is over) and in `edgebus status` and the
metrics. The fix is the operator's: wait, or move the affected topics' data (docs/OPERATIONS.md).
A clock that reads before any edgebus release was never set; that is said once too (retention's
side of it is in edgebus/log/partition_retention.py, UNSET_CLOCK_BEFORE_MS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from edgebus.log.partition_retention import UNSET_CLOCK_BEFORE_MS

log = logging.getLogger("edgebus.clock")

# Below this, the clock being behind is NTP's ordinary stepping and not worth a line.
CLOCK_BEHIND_WARN_MS = 60_000


class ClockCheck:
    def __init__(self) -> None:
        self.behind_ms = 0  # how far the clock is behind the latest append time (0: not behind)
        self.partition = ""  # the partition with the latest append time, while behind
        self.unset = False  # the clock reads before UNSET_CLOCK_BEFORE_MS

    def check(self, partitions: Iterable[Any], now_ms: int) -> None:
        unset = now_ms < UNSET_CLOCK_BEFORE_MS
        if unset and not self.unset:
            log.warning("the clock reads %s, so it was never set (no real-time clock, no NTP "
                        "yet?): records appended now get that time; retention will age them by "
                        "the first append after the clock is set, not delete them at once",
                        time.strftime("%Y-%m-%d %H:%M", time.gmtime(now_ms / 1000)))
        elif self.unset and not unset:
            log.info("the clock is set now")
        self.unset = unset
        latest, name = -1, ""
        for p in partitions:
            if p.max_append_time > latest:
                latest, name = p.max_append_time, p.name
        behind = latest - now_ms
        if behind > CLOCK_BEHIND_WARN_MS:
            if not self.behind_ms:
                log.warning("the clock is %s behind the latest append time in the log (%s): new "
                            "records are stamped with that time until the clock passes it, and "
                            "retention by time deletes none of them until then (a clock that was "
                            "set in the future, then corrected?)", _span(behind), name)
            self.behind_ms, self.partition = behind, name
        elif self.behind_ms:
            log.info("the clock has passed the latest append time in the log; append times "
                     "follow the clock again")
            self.behind_ms, self.partition = 0, ""

    def snapshot(self) -> dict[str, Any]:
        return {"behind_log_ms": self.behind_ms, "partition": self.partition,
                "unset": self.unset}


def _span(ms: int) -> str:
    s = ms / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"
