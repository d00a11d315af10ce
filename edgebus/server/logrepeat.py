"""Bounds the lines one repeating event can put in the journal.

A client that loops (reconnecting with bad frames, over its connection limit) or a periodic job
that keeps failing (the recovery checkpoint on a filesystem gone read-only) would otherwise write
one line per attempt: tens of thousands a day that push everything else out of a gateway's small
journal. `RepeatFilter` on such a logger lets the first `burst` lines of each message through per
`window_s` (a message: its text with connection numbers, ports, pids and sizes masked, its level
and logger), holds back the rest, and adds to the next line it lets through how many were held
back and since when. Lines of different messages never hold each other back. A count still held
when its window ends is logged by `flush_held()` from the loop's housekeeping timer (a message
that stopped repeating would otherwise keep its count until it came back, maybe never).
"""

from __future__ import annotations

import logging
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

# Lines of one message let through per window: enough to see the first few clients or attempts
# (their pids and errors), few enough that a loop costs at most 30 lines an hour.
REPEAT_BURST = 5
REPEAT_WINDOW_S = 600.0
# What differs between two lines of one repeating event, masked in the key: numbers after '#',
# '=' or ':' (conn#12, pid=4242, 127.0.0.1:53124) and numbers of four digits or more (sizes,
# pids). What names the event stays (a user, a topic, SCRAM-SHA-256 against SCRAM-SHA-512).
_VARYING = re.compile(r"(?<=[#=:])\d+|\d{4,}")
# Distinct messages tracked; the format strings are the code's own, so this is never reached in
# practice, but a bound keeps the table small whatever happens.
MAX_KEYS = 256


@dataclass
class _Seen:
    window_start: float
    passed: int = 0
    held: int = 0
    held_since: float = 0.0  # wall clock of the first line held back
    last: logging.LogRecord | None = None  # the latest line held back (flush_held logs its text)


_FILTERS: weakref.WeakSet[RepeatFilter] = weakref.WeakSet()


def flush_held() -> None:
    """Log the held-back counts whose window has passed (from a timer, never per message)."""
    for f in list(_FILTERS):
        if f.holding:
            f.flush()


def set_window(window_s: float) -> None:
    """Tests only (server/testhooks.py): every filter's window, and new filters'."""
    global REPEAT_WINDOW_S
    REPEAT_WINDOW_S = window_s
    for f in list(_FILTERS):
        f.window_s = window_s


def bound_repeats(logger: logging.Logger, min_level: int = logging.DEBUG) -> logging.Logger:
    """Put a RepeatFilter on `logger` (once, however many modules share it). Records below
    `min_level` pass untouched (a logger whose INFO lines are rare events worth each line)."""
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        f = RepeatFilter(window_s=REPEAT_WINDOW_S, min_level=min_level)
        f.logger = logger
        logger.addFilter(f)
    return logger


class RepeatFilter(logging.Filter):
    def __init__(self, burst: int = REPEAT_BURST, window_s: float = REPEAT_WINDOW_S, *,
                 min_level: int = logging.DEBUG,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.min_level = min_level
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._wall = wall
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self.holding = 0  # messages with lines held back (flush_held skips the filter at 0)
        self.logger: logging.Logger | None = None  # where flush() logs; bound_repeats sets it
        _FILTERS.add(self)

    def flush(self) -> None:
        """Log, for each message whose window has passed with lines held back, how many."""
        now = self._clock()
        for key, seen in list(self._seen.items()):
            if not seen.held or now - seen.window_start < self.window_s or seen.last is None:
                continue
            del self._seen[key]  # its next line starts a new window, with no count to add
            self.holding -= 1
            last = seen.last
            rec = logging.LogRecord(last.name, last.levelno, last.pathname, last.lineno,
                                    "%s", (last.getMessage(),), None)
            _append(rec, f" [{seen.held} more line(s) like this since "
                         f"{time.strftime('%H:%M:%S', time.localtime(seen.held_since))} were "
                         "not logged; the last is shown]")
            if self.logger is not None:
                self.logger.callHandlers(rec)  # past the filters: this line is the count itself

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key = (record.name, record.levelno, _VARYING.sub("#", record.getMessage()))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or now - seen.window_start >= self.window_s:
            if seen is None and len(self._seen) >= MAX_KEYS:
                self._seen.clear()
                self.holding = 0
            held, since = (seen.held, seen.held_since) if seen is not None else (0, 0.0)
            if held:
                self.holding -= 1
            seen = self._seen[key] = _Seen(now)
            if held:
                _append(record, f" [{held} more line(s) like this since "
                                f"{time.strftime('%H:%M:%S', time.localtime(since))} were not "
                                "logged]")
        if seen.passed < self.burst:
            seen.passed += 1
            if seen.passed == self.burst:
                _append(record, f" [further lines like this are held back for "
                                f"{self.window_s:.0f} s; their count comes with the next one]")
            return True
        if not seen.held:
            seen.held_since = self._wall()
            self.holding += 1
        seen.held += 1
        seen.last = record
        return False


def _append(record: logging.LogRecord, text: str) -> None:
    # The message is formatted with its args later, so a literal '%' in `text` is escaped.
    record.msg = f"{record.msg}{text.replace('%', '%%')}" if record.args else \
        f"{record.msg}{text}"
