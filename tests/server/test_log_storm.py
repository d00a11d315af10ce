"""No message storm in a year of journal: a client that loops on bad frames used to cost one
WARNING line per connection (200 lines in a second in an operator trial, ~36,000 an hour for a
client retrying every 100 ms). Now each message passes REPEAT_BURST times per window, and the next
one that passes says how many were held back."""

from __future__ import annotations

import logging
import socket

from edgebus.server.logrepeat import REPEAT_BURST, RepeatFilter
from edgebus.testing import EmbeddedBroker

BAD_FRAME = b"\x7f\xff\xff\xff" + b"x" * 12  # a length far past the frame limit


def test_a_client_looping_on_bad_frames_logs_a_few_lines(broker: EmbeddedBroker) -> None:
    for _ in range(60):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(broker.socket)
            s.sendall(BAD_FRAME)
            s.settimeout(10)
            while s.recv(4096):  # the supervisor answers, then closes: the line is written
                pass
    lines = [ln for ln in broker.log().splitlines() if "sent a bad frame" in ln]
    assert len(lines) == REPEAT_BURST, lines
    assert "further lines like this are held back" in lines[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_held_back_lines_are_counted_in_the_next_window() -> None:
    clock = Clock()
    f = RepeatFilter(burst=2, window_s=60, clock=clock, wall=clock)
    logger = logging.getLogger("edgebus.test.logstorm")
    records = []

    def emit(msg: str, *args: object) -> None:
        r = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, None)
        if f.filter(r):
            records.append(r.getMessage())

    for i in range(10):
        emit("conn#%d(pid=%d) sent 100%% garbage", i, 4000 + i)
    emit("user %s: SCRAM-SHA-256 refused", "alice")  # other messages pass
    emit("user %s: SCRAM-SHA-512 refused", "alice")
    emit("user %s: SCRAM-SHA-512 refused", "bob")
    assert records == ["conn#0(pid=4000) sent 100% garbage",
                       "conn#1(pid=4001) sent 100% garbage [further lines like this are held back "
                       "for 60 s; their count comes with the next one]",
                       "user alice: SCRAM-SHA-256 refused", "user alice: SCRAM-SHA-512 refused",
                       "user bob: SCRAM-SHA-512 refused"]
    clock.now += 60
    emit("conn#%d(pid=%d) sent 100%% garbage", 10, 4010)
    assert records[-1].startswith("conn#10(pid=4010) sent 100% garbage [8 more line(s) like this "
                                  "since ")
    assert records[-1].endswith(" were not logged]")


def test_lines_below_the_minimum_level_pass() -> None:
    f = RepeatFilter(burst=1, min_level=logging.WARNING)
    logger = logging.getLogger("edgebus.test.logstorm")
    info = [f.filter(logger.makeRecord(logger.name, logging.INFO, __file__, 1, "created %s",
                                       (i,), None)) for i in range(5)]
    warn = [f.filter(logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "bad pid=%s",
                                       (i,), None)) for i in range(5)]
    assert info == [True] * 5 and warn == [True, False, False, False, False]
