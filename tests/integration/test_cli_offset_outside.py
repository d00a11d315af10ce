"""`edgebus consume --partition P --offset O` with O outside the partition's log says what the
log holds and where it starts: past the end it waits at the end, below the log start (records
deleted) it starts at the oldest record, where the consumer's reset policy used to jump to the
end and print nothing at all. (Found by following the README as a user.) The real CLI against a
real supervisor; the records are deleted with confluent-kafka's DeleteRecords."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin, Producer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def consume(sock: str, offset: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "consume", "t", "--socket",
                           sock, "--partition", "0", "--offset", str(offset), "-e", "--format",
                           "%o\\n"], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_an_offset_outside_the_log_is_said_and_clamped(broker) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    with Admin(socket=broker.socket) as a:
        a.create_topic("t", partitions=1)
    with Producer(socket=broker.socket) as p:
        for i in range(10):
            p.send("t", b"%d" % i, partition=0)
        p.flush()
    past = consume(broker.socket, 99)
    assert past.returncode == 0 and past.stdout == "", past.stderr
    assert "t-0 holds offsets 0..9, not 99; starting at 10" in past.stderr
    inside = consume(broker.socket, 7)
    assert inside.stdout.split() == ["7", "8", "9"] and "holds" not in inside.stderr

    ac = AdminClient({"bootstrap.servers": broker.kafka_bootstrap})
    next(iter(ac.delete_records([TopicPartition("t", 0, 4)]).values())).result(15)
    below = consume(broker.socket, 2)
    assert below.stdout.split() == [str(o) for o in range(4, 10)], below.stderr
    assert "t-0 holds offsets 4..9, not 2; starting at 4" in below.stderr
