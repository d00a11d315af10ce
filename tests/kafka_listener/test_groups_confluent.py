"""Consumer groups through librdkafka (confluent-kafka): subscribe, commit, seek, a rebalance
between two real processes (one killed with SIGKILL), and one group shared by a native
`Consumer` and a Kafka consumer (partitions split, offsets shared)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer as KConsumer
from confluent_kafka import TopicPartition as KTP
from confluent_kafka.admin import AdminClient

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker, PipeLines
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

WAIT_S = 60  # upper bound on waiting for a group to settle (never a speed assertion)


def wait_for(cond: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def produce(broker: EmbeddedBroker, topic: str, per_partition: dict[int, int], start: int = 0) -> None:
    with Producer(socket=broker.socket) as p:
        for part, n in per_partition.items():
            for i in range(start, start + n):
                p.send(topic, f"{part}:{i}".encode(), partition=part)
        p.flush()


def kconsumer(broker: EmbeddedBroker, group: str, **extra: Any) -> KConsumer:
    return KConsumer({"bootstrap.servers": broker.kafka_bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False, **extra})


def drain(c: KConsumer, n: int) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            out.append(m)
    return out


def test_subscribe_commit_and_a_native_consumer_resumes(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=2)
    produce(kbroker, "t", {0: 5, 1: 5})
    c = kconsumer(kbroker, "g")
    c.subscribe(["t"])
    got = drain(c, 10)
    assert sorted(m.value() for m in got) == sorted(f"{p}:{i}".encode() for p in (0, 1) for i in range(5))
    c.commit(asynchronous=False)
    committed = c.committed([KTP("t", 0), KTP("t", 1)], timeout=15)
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 5), (1, 5)]
    c.close()
    with Admin(socket=kbroker.socket) as a:
        offs = a.list_group_offsets("g")
    assert {tp.partition: o.offset for tp, o in offs.items()} == {0: 5, 1: 5}
    # The same group, natively: it resumes where the Kafka consumer committed.
    produce(kbroker, "t", {0: 2}, start=5)
    with Consumer("t", group_id="g", socket=kbroker.socket, auto_offset_reset="earliest",
                  enable_auto_commit=False) as n:
        vals: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(vals) < 2 and time.monotonic() < deadline:
            vals += [r.value for recs in n.poll(500).values() for r in recs]
        assert vals == [b"0:5", b"0:6"]
        n.commit()
    # And back: a Kafka consumer of the group sees the native commit.
    c = kconsumer(kbroker, "g")
    assert [tp.offset for tp in c.committed([KTP("t", 0)], timeout=15)] == [7]
    c.close()


def test_seek_within_the_assignment(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t")
    produce(kbroker, "t", {0: 10})
    c = kconsumer(kbroker, "g")
    c.subscribe(["t"])
    first = drain(c, 10)
    assert [m.offset() for m in first] == list(range(10))
    c.seek(KTP("t", 0, 3))
    again = drain(c, 7)
    assert [m.offset() for m in again] == list(range(3, 10))
    c.close()


def test_native_and_kafka_consumers_split_a_group(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=2)
    native = Consumer("t", group_id="mixed", socket=kbroker.socket, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    try:
        native.poll(100)
        wait_for(lambda: native.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)},
                 "the native consumer to own both partitions")
        k = kconsumer(kbroker, "mixed")
        k.subscribe(["t"])
        # The Kafka member's join makes the native member rejoin; both end with one partition.
        def settled() -> bool:
            k.poll(0.1)
            native.poll(50)
            ka = {tp.partition for tp in k.assignment()}
            na = {tp.partition for tp in native.assignment()}
            return len(ka) == 1 and len(na) == 1 and ka | na == {0, 1}
        wait_for(settled, "the group to split its partitions")
        kpart = k.assignment()[0].partition
        npart = 1 - kpart
        # Kafka's admin view of the group shows both members, the native one too.
        ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
        desc = ac.describe_consumer_groups(["mixed"])["mixed"].result(15)
        owned = sorted((m.client_id.startswith("rdkafka"), [tp.partition for tp in m.assignment.topic_partitions])
                       for m in desc.members)
        assert owned == [(False, [npart]), (True, [kpart])]
        produce(kbroker, "t", {0: 3, 1: 3})
        got_k = drain(k, 3)
        assert {m.partition() for m in got_k} == {kpart}
        got_n: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while len(got_n) < 3 and time.monotonic() < deadline:
            got_n += [r for recs in native.poll(200).values() for r in recs]
        assert {r.partition for r in got_n} == {npart}
        # Offsets are one store: the Kafka member commits its partition, the native member its own.
        k.commit(asynchronous=False)
        native.commit()
        with Admin(socket=kbroker.socket) as a:
            offs = {tp.partition: o.offset for tp, o in a.list_group_offsets("mixed").items()}
        assert offs == {0: 3, 1: 3}
        k.close()
        wait_for(lambda: native.poll(50) is not None and len(native.assignment()) == 2,
                 "the native consumer to take both partitions back")
    finally:
        native.close()


CHILD = r"""
import json, sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "rb", "auto.offset.reset": "earliest",
              "session.timeout.ms": 60000, "heartbeat.interval.ms": 200})
def report(consumer, parts):  # the new assignment (librdkafka assigns it after this returns)
    print(json.dumps(sorted(tp.partition for tp in parts)), flush=True)
c.subscribe(["t"], on_assign=report)
while True:
    c.poll(0.1)
"""


def _child(broker: EmbeddedBroker) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, broker.kafka_bootstrap],
                            stdout=subprocess.PIPE, env=os.environ.copy())


class _Lines:
    """The assignments a child printed (PipeLines: never select() + readline())."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pipe = PipeLines(proc.stdout)
        self.seen: list[list[int]] = []

    def last(self) -> list[int] | None:
        self.seen += [json.loads(line) for line in self.pipe.read()]
        return self.seen[-1] if self.seen else None


@pytest.mark.crash
def test_rebalance_between_two_processes_and_a_kill(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=4)
    a, b = _child(kbroker), _child(kbroker)
    lines_a, lines_b = _Lines(a), _Lines(b)
    try:
        def split() -> bool:
            la, lb = lines_a.last(), lines_b.last()
            return la is not None and lb is not None and len(la) == 2 and len(lb) == 2 \
                and set(la) | set(lb) == {0, 1, 2, 3}
        wait_for(split, "two processes to split four partitions")
        os.kill(a.pid, signal.SIGKILL)  # no LeaveGroup: the closed connection removes it
        a.wait()
        wait_for(lambda: lines_b.last() == [0, 1, 2, 3],
                 "the survivor to take every partition")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.crash
def test_an_acknowledged_commit_survives_sigkill(kbroker: EmbeddedBroker) -> None:
    """Offsets committed through the Kafka listener are the native store's records: after a
    SIGKILL the supervisor replays `__consumer_offsets` and the last commit of each partition is
    what a Kafka client fetches. (SIGKILL keeps the page cache, so this checks the replay, not
    the fsync; power loss is the native store's test, tests/groups/test_commits.py.)"""
    create_topic(kbroker, "t", partitions=3)
    c = kconsumer(kbroker, "durable")
    offsets = [KTP("t", p, 100 + p) for p in range(3)]
    for round_ in range(5):
        done = c.commit(offsets=[KTP("t", tp.partition, tp.offset + round_) for tp in offsets],
                        asynchronous=False)
        assert all(tp.error is None for tp in done)
    c.close()
    kbroker.kill9()
    kbroker.start()
    c = kconsumer(kbroker, "durable")
    try:
        got = c.committed([KTP("t", p) for p in range(3)], timeout=30)
    finally:
        c.close()
    assert [(tp.partition, tp.offset) for tp in got] == [(p, 104 + p) for p in range(3)]
