"""kafka-python's consumer idioms against a real supervisor: iteration with the default
consumer_timeout_ms (issue 14, item 10), pause/resume/paused, unsubscribe, subscription() and
assignment() (item 19)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, RebalanceListener, TopicPartition

pytestmark = pytest.mark.integration

GROUP_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def produce(sock: str, topic: str, partition: int, values: list[bytes]) -> None:
    with Producer(socket=sock) as p:
        for v in values:
            p.send(topic, v, partition=partition)
        p.flush()


def poll_all(c: Consumer, want: int, timeout: float = 30.0) -> list[Any]:
    """Poll until `want` records came (or fail after timeout)."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"got {len(got)} of {want} records"
        for recs in c.poll(timeout_ms=500).values():
            got += recs
    return got


def test_iterating_with_the_default_consumer_timeout_yields_records(broker):
    """`for record in consumer:` with consumer_timeout_ms left at its default (infinity) crashed
    with OverflowError before the first fetch."""
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=1)
    produce(broker.socket, "t", 0, [b"a", b"b", b"c"])
    with Consumer("t", socket=broker.socket, auto_offset_reset="earliest") as c:
        assert c.consumer_timeout_ms == float("inf")
        got = []
        for record in c:
            got.append(record.value)
            if len(got) == 3:
                break
    assert got == [b"a", b"b", b"c"]


def test_iteration_waits_for_records_that_come_later(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=1)
    timer = threading.Timer(1.0, produce, (broker.socket, "t", 0, [b"late"]))
    with Consumer("t", socket=broker.socket, auto_offset_reset="earliest") as c:
        timer.start()
        try:
            record = next(iter(c))
        finally:
            timer.join()
    assert record.value == b"late"


def test_poll_with_an_infinite_timeout_returns_the_first_records(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=1)
    produce(broker.socket, "t", 0, [b"x"])
    with Consumer("t", socket=broker.socket, auto_offset_reset="earliest") as c:
        got = c.poll(timeout_ms=float("inf"))
    assert [r.value for recs in got.values() for r in recs] == [b"x"]


def test_pause_stops_one_partition_and_resume_continues_where_the_application_was(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=2)
    p0, p1 = TopicPartition("t", 0), TopicPartition("t", 1)
    produce(broker.socket, "t", 0, [b"a0", b"a1", b"a2", b"a3"])
    produce(broker.socket, "t", 1, [b"b0", b"b1"])
    with Consumer(socket=broker.socket, auto_offset_reset="earliest") as c:
        c.assign([p0])
        first = c.poll(timeout_ms=5000, max_records=1)  # a0 returned, a1..a3 fetched and buffered
        assert [r.value for r in first[p0]] == [b"a0"]
        c.assign([p0, p1])
        c.pause(p0)
        assert c.paused() == {p0}
        got = poll_all(c, 2)
        assert [(r.partition, r.value) for r in got] == [(1, b"b0"), (1, b"b1")]
        assert c.poll(timeout_ms=300) == {}  # p0 stays quiet while paused
        assert c.position(p0) == 1
        c.resume(p0)
        assert c.paused() == set()
        got = poll_all(c, 3)
        assert [(r.partition, r.offset, r.value) for r in got] == [
            (0, 1, b"a1"), (0, 2, b"a2"), (0, 3, b"a3")]


def test_every_partition_paused_polls_nothing_until_resumed(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=1)
    produce(broker.socket, "t", 0, [b"v"])
    tp = TopicPartition("t", 0)
    with Consumer("t", socket=broker.socket, auto_offset_reset="earliest",
                  consumer_timeout_ms=300) as c:
        c.pause(tp)
        assert c.poll(timeout_ms=300) == {}
        assert list(c) == []  # iteration ends after consumer_timeout_ms, nothing returned
        c.resume(tp)
        assert [r.value for r in c] == [b"v"]


def test_pause_of_a_partition_not_assigned_is_an_error(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=1)
    with Consumer("t", socket=broker.socket) as c, pytest.raises(ValueError, match="not assigned"):
        c.pause(TopicPartition("t", 5))


def test_manual_assignment_has_no_subscription_and_unsubscribe_clears_it(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=2)
    with Consumer("t", socket=broker.socket) as c:
        assert c.assignment() == {TopicPartition("t", 0), TopicPartition("t", 1)}
        assert c.subscription() is None
        c.pause(TopicPartition("t", 0))
        c.unsubscribe()
        assert c.assignment() == set()
        assert c.paused() == set()
        assert c.poll(timeout_ms=100) == {}


class Revocations(RebalanceListener):
    def __init__(self) -> None:
        self.revoked: list[list[TopicPartition]] = []

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        self.revoked.append(sorted(revoked))


def test_group_subscription_assignment_and_unsubscribe(broker):
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("orders-eu", partitions=2)
        admin.create_topic("orders-us", partitions=1)
        admin.create_topic("other", partitions=1)
        produce(broker.socket, "orders-eu", 0, [b"e0", b"e1"])
        produce(broker.socket, "orders-us", 0, [b"u0"])
        listener = Revocations()
        c = Consumer(group_id="g", socket=broker.socket, auto_offset_reset="earliest",
                     **GROUP_OPTIONS)
        try:
            assert c.subscription() is None
            c.subscribe(pattern=r"orders-.*", listener=listener)
            got = poll_all(c, 3)
            assert sorted(r.value for r in got) == [b"e0", b"e1", b"u0"]
            assert c.subscription() == {"orders-eu", "orders-us"}
            everything = {TopicPartition("orders-eu", 0), TopicPartition("orders-eu", 1),
                          TopicPartition("orders-us", 0)}
            assert c.assignment() == everything
            assert [m.member_id for m in admin.describe_group("g").members]

            c.unsubscribe()
            assert c.assignment() == set()
            assert c.subscription() is None
            assert listener.revoked == [sorted(everything)]
            # It left the group at once (no session timeout to wait for), with its positions
            # committed by auto-commit on the way out.
            assert admin.describe_group("g").members == []
            assert admin.list_group_offsets("g")[TopicPartition("orders-eu", 0)].offset == 2
            assert admin.list_group_offsets("g")[TopicPartition("orders-us", 0)].offset == 1
            assert c.poll(timeout_ms=200) == {}

            # Subscribed again, it joins as a new member and goes on from the commits.
            c.subscribe(["orders-us", "other"])
            assert c.subscription() == {"orders-us", "other"}
            produce(broker.socket, "orders-us", 0, [b"u1"])
            got = poll_all(c, 1)
            assert [r.value for r in got] == [b"u1"]
            assert c.assignment() == {TopicPartition("orders-us", 0), TopicPartition("other", 0)}
            assert len(admin.describe_group("g").members) == 1
        finally:
            c.close()


def test_a_paused_group_member_keeps_its_partitions(broker):
    """Paused, a member still heartbeats: it stays in the group past its session timeout."""
    with Admin(socket=broker.socket) as admin:
        admin.create_topic("t", partitions=1)
        produce(broker.socket, "t", 0, [b"a"])
        tp = TopicPartition("t", 0)
        with Consumer("t", group_id="g", socket=broker.socket, auto_offset_reset="earliest",
                      **GROUP_OPTIONS) as c:
            assert [r.value for r in poll_all(c, 1)] == [b"a"]
            c.pause(tp)
            produce(broker.socket, "t", 0, [b"b"])
            deadline = time.monotonic() + GROUP_OPTIONS["session_timeout_ms"] / 1000 + 2
            while time.monotonic() < deadline:
                assert c.poll(timeout_ms=500) == {}
            assert c.assignment() == {tp}
            assert c.paused() == {tp}
            generation = admin.describe_group("g").generation
            c.resume(tp)
            assert [r.value for r in poll_all(c, 1)] == [b"b"]
            assert admin.describe_group("g").generation == generation
