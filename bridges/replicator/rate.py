"""A partition's shipping rate for status (records/s, bytes/s over the last WINDOW_S seconds).

The link's counters (link.py PartitionState) are running totals; main.py samples them about once
a second, and the rate is the difference between the newest sample and the one about a window
ago. An idle partition's rate falls to 0 within a window; a new session (whose counters start
over) starts a new history.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 10.0


class Rate:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque()  # (time, records, bytes)

    def sample(self, now: float, records: int, nbytes: int) -> None:
        if self._samples and records < self._samples[-1][1]:
            self._samples.clear()  # a new session: its counters start over
        self._samples.append((now, records, nbytes))
        # Keep one sample at least a window old (the baseline), none older.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def per_s(self) -> tuple[float, float]:
        """(records/s, bytes/s); 0 until two samples exist."""
        if len(self._samples) < 2:
            return 0.0, 0.0
        t0, r0, b0 = self._samples[0]
        t1, r1, b1 = self._samples[-1]
        dt = t1 - t0
        return ((r1 - r0) / dt, (b1 - b0) / dt) if dt > 0 else (0.0, 0.0)
