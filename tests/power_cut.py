"""A power cut made by hand, for the tests that need one (tests/groups/test_power_cut_commits.py,
tests/service/test_unclean_start.py): records acknowledged as durable, then more acknowledged
only as written, then the supervisor killed and its segment cut back to what was fsynced."""

from __future__ import annotations

import os
from pathlib import Path

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker

# No background fsync during the test: what acks="written" appended stays unsynced, so cutting
# the segment back to its size after the last durable ack is what a power cut can leave.
NO_BACKGROUND_SYNC = {"log": {"flush_interval_ms": 3_600_000, "checkpoint_interval_ms": 3_600_000}}


def durable_then_written(b: EmbeddedBroker, topic: str, durable: int,
                         written: int) -> tuple[Path, int]:
    """`topic` made with one partition, `durable` records (b"durable-<i>") acknowledged as
    fsynced, then `written` (b"written-<i>") acknowledged as written only: the partition's
    segment file and its size when the last durable record was acknowledged."""
    with Admin(socket=b.socket) as a:
        a.create_topic(topic, partitions=1)
    with Producer(socket=b.socket, acks="durable") as p:
        for i in range(durable):
            p.send(topic, b"durable-%d" % i)
        p.flush(30)
    seg = b.data_dir / f"{topic}-0" / "00000000000000000000.log"
    synced = seg.stat().st_size
    with Producer(socket=b.socket, acks="written") as p:
        for i in range(written):
            p.send(topic, b"written-%d" % i)
        p.flush(30)
    return seg, synced


def power_cut(b: EmbeddedBroker, seg: Path, size: int) -> None:
    """kill -9 the supervisor and cut `seg` back to `size` bytes: what a power cut can leave
    (a size past the fsynced one leaves a torn batch)."""
    b.kill9()
    os.truncate(seg, size)
