"""A supervisor frozen for a test: SIGSTOP, then wait until every thread of it has stopped.
kill(2) returns once the signal is queued; on a loaded (virtual) machine a thread running on the
other CPU can go on for a moment after, reading one more request, and a test that counts what
stayed unread then counts one batch too many (seen once in tests/client/test_unread_hold.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from edgebus.testing import wait_for


def _all_stopped(pid: int) -> bool:
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        if state not in ("T", "t"):
            return False
    return True


def sigstop(pid: int) -> None:
    """SIGSTOP `pid` and return once all its threads are stopped (state T in /proc)."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: _all_stopped(pid), 10, f"process {pid} stopped after SIGSTOP")
