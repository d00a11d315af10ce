"""Retention through the running supervisor, and what consumers see below the log start."""

from __future__ import annotations

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import OffsetOutOfRangeError
from edgebus.testing import wait_for

pytestmark = pytest.mark.integration


def fill(socket: str, topic: str, n: int, size: int = 1000) -> None:
    with Producer(socket=socket, linger_ms=0, batch_size=1) as p:
        for i in range(n):
            p.send(topic, f"{i:06d}".encode() + b"x" * size)


@pytest.fixture
def fast_retention(make_broker):
    b = make_broker({"log": {"retention_check_interval_ms": 100}})
    b.start()
    return b


def test_retention_by_bytes_and_out_of_range(fast_retention):
    b = fast_retention
    with Admin(socket=b.socket) as a:
        a.create_topic("rb", 1, {"segment_bytes": 8192, "retention_bytes": 20000})
        fill(b.socket, "rb", 100)
        # Retention removes segments over several passes; once the log is within its bound it
        # stops (nothing more is written), so the state read after that holds for the reads below.
        part = wait_for(lambda: next((q for q in [a.describe_topic("rb").partitions[0]]
                                      if q.log_start_offset > 0 and q.size_bytes <= 20000 + 8192),
                                     None),
                        60, "retention by bytes to bring the log within 20000 + one segment")
    assert part.log_end_offset == 100
    tp = TopicPartition("rb", 0)
    strict = Consumer(socket=b.socket, auto_offset_reset="none")
    strict.assign([tp])
    strict.seek(tp, 0)
    with pytest.raises(OffsetOutOfRangeError, match="log start"):
        strict.poll(1000)
    strict.close()
    c = Consumer(socket=b.socket, auto_offset_reset="earliest")
    c.assign([tp])
    c.seek(tp, 0)
    recs = c.poll(30_000).get(tp, [])  # returns at the first records (30 s: a loaded machine)
    c.close()
    assert recs and recs[0].offset == part.log_start_offset
    assert recs[0].value.startswith(f"{part.log_start_offset:06d}".encode())


def test_retention_by_time_keeps_offsets(fast_retention):
    b = fast_retention
    with Admin(socket=b.socket) as a:
        a.create_topic("rt", 1, {"segment_bytes": 4096, "retention_ms": 300})
        fill(b.socket, "rt", 30)
        wait_for(lambda: a.describe_topic("rt").partitions[0].log_start_offset == 30, 60,
                 "retention by time to remove every record")
    with Producer(socket=b.socket) as p:
        assert p.send("rt", b"new").get(5).offset == 30, "offsets must never be reused"
    b.restart()
    with Admin(socket=b.socket) as a:
        part = a.describe_topic("rt").partitions[0]
    assert part.log_end_offset == 31
