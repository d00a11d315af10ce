"""`edgebus consume --group G --partition P --from-beginning` resumes at the group's committed
offset (--from-beginning applies only where the group has none, as --help says) and never moves
the group's commit back. (Found by following the README as a user: each run started again at
offset 0 and committed a lower offset than the group had.) The real CLI against a real
supervisor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def consume(sock: str, *args: str) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "consume", "t", "--socket", sock,
                        "--format", "%p:%o\\n", *args], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def committed(sock: str, group: str, partition: int) -> int | None:
    with Consumer(socket=sock, group_id=group, enable_auto_commit=False) as c:
        return c.committed(TopicPartition("t", partition))


def test_group_with_a_partition_resumes_from_its_commit(broker) -> None:
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", partitions=2)
    with Producer(socket=broker.socket) as p:
        for i in range(10):
            p.send("t", b"%d" % i, partition=0)
        p.flush()
    first = consume(broker.socket, "--group", "g", "--partition", "0", "--from-beginning",
                    "--max", "3")
    assert first == ["0:0", "0:1", "0:2"]
    assert committed(broker.socket, "g", 0) == 3
    again = consume(broker.socket, "--group", "g", "--partition", "0", "--from-beginning",
                    "--max", "3")
    assert again == ["0:3", "0:4", "0:5"]
    assert committed(broker.socket, "g", 0) == 6
    # The whole group (no --partition) resumes there too; a new group starts at the beginning.
    assert consume(broker.socket, "--group", "g", "--from-beginning", "--max", "2") == \
        ["0:6", "0:7"]
    assert consume(broker.socket, "--group", "new", "--partition", "0", "--from-beginning",
                   "--max", "1") == ["0:0"]
