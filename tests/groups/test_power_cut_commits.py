"""A power cut drops records that were written but not fsynced, while the group's commit of
them (always durable) survives: after recovery the group must get the records appended next,
neither skipping them (a commit past the log end) nor reading again what it had committed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.power_cut import NO_BACKGROUND_SYNC, durable_then_written, power_cut

pytestmark = pytest.mark.integration


def poll_all(c: Consumer, n: int | None = None, quiet_s: float = 1.0) -> list[Any]:
    """Records until n are there (or, without n, until none came for quiet_s)."""
    got: list[Any] = []
    deadline = time.monotonic() + 20
    last = time.monotonic()
    while time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=100).values():
            got.extend(recs)
            last = time.monotonic()
        if (n is not None and len(got) >= n) or (n is None and time.monotonic() - last > quiet_s):
            break
    return got


@pytest.mark.parametrize("torn", [0, 37], ids=["cut-at-batch-end", "torn-batch"])
def test_commit_past_the_log_end_after_a_power_cut(make_broker: Any, torn: int) -> None:
    b: EmbeddedBroker = make_broker(NO_BACKGROUND_SYNC).start()
    seg, synced = durable_then_written(b, "pc-commits", 100, 500)
    c = Consumer("pc-commits", group_id="pc-g", auto_offset_reset="earliest",
                 enable_auto_commit=False, socket=b.socket)
    assert len(poll_all(c, 600)) == 600
    c.commit()
    assert c.committed(TopicPartition("pc-commits", 0)) == 600
    c.close(autocommit=False)

    power_cut(b, seg, synced + torn)  # only what was fsynced is left
    # ...and the machine booted again: the run marker names another boot (edgebus/log/cleanstop.py).
    (b.data_dir / "running").write_text("another-boot\n")
    b.restart()
    assert "group(s) pc-g had committed up to 600" in b.log()

    with Producer(socket=b.socket, acks="durable") as p:
        for i in range(20):
            p.send("pc-commits", b"after-%d" % i)
        p.flush(30)
    c = Consumer("pc-commits", group_id="pc-g", auto_offset_reset="earliest",
                 enable_auto_commit=False, socket=b.socket)
    got = poll_all(c)
    c.close(autocommit=False)
    assert [r.value for r in got] == [b"after-%d" % i for i in range(20)]
    assert [r.offset for r in got] == list(range(100, 120))


def test_a_commit_past_the_log_end_stays_after_kill9(make_broker: Any) -> None:
    """Without the machine going down nothing written is lost, so a commit past the log end is
    the client's own (Kafka clients may commit any offset) and is kept."""
    b: EmbeddedBroker = make_broker().start()
    with Admin(socket=b.socket) as a:
        a.create_topic("pc-kept", partitions=1)
    c = Consumer(group_id="pc-kept-g", enable_auto_commit=False, socket=b.socket)
    c.assign([TopicPartition("pc-kept", 0)])
    c.commit({TopicPartition("pc-kept", 0): 50})  # beyond the (empty) log
    c.close(autocommit=False)
    b.kill9()
    b.restart()
    assert "had committed up to" not in b.log()
    c = Consumer(group_id="pc-kept-g", enable_auto_commit=False, socket=b.socket)
    try:
        assert c.committed(TopicPartition("pc-kept", 0)) == 50
    finally:
        c.close(autocommit=False)
