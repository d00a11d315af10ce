"""The count of lines held back by logrepeat.py used to come only with the next line of the same
message: a client that looped on bad frames and then stopped left its count untold, maybe for
ever. Now the loop's housekeeping timer logs it once the window has passed. A real supervisor,
with its window shortened by the test hook (server/testhooks.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from edgebus.server.logrepeat import REPEAT_BURST
from edgebus.testing import EmbeddedBroker, wait_for

BAD_FRAME = b"\x7f\xff\xff\xff" + b"x" * 12  # a length far past the frame limit
HELD = 7


def test_held_back_count_is_logged_when_the_window_ends(tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "broker", config={"log": {"flush_interval_ms": 100}}).start(
        env={"EDGEBUS_TEST_HOOKS": "1", "EDGEBUS_TEST_REPEAT_WINDOW_S": "3"})
    try:
        for _ in range(REPEAT_BURST + HELD):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(b.socket)
                s.sendall(BAD_FRAME)
                s.settimeout(10)
                while s.recv(4096):  # the supervisor answers, then closes: the line is written
                    pass
        # No further bad frame: the count must come from the timer alone.
        wait_for(lambda: "more line(s) like this since" in b.log(), 30, "the held-back count")
        lines = [ln for ln in b.log().splitlines() if "sent a bad frame" in ln]
        assert len(lines) == REPEAT_BURST + 1, lines
        assert f"[{HELD} more line(s) like this since" in lines[-1], lines[-1]
    finally:
        b.kill9()
        b.cleanup()
