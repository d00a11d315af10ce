"""Producer: ordered retries (a failed batch is resent before anything newer of its partition),
per-topic batch limits (a batch is never refused as a whole for its size), and callbacks that
say success or failure (kafka-python's add_callback / add_errback / add_both).

Real supervisor processes; SIGSTOP orders the events (a batch is written to the connection and
stays unanswered), then SIGKILL loses it with the connection, and a restart brings the
supervisor back on the same data directory and socket.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, RecordMetadata, TopicPartition
from edgebus.errors import BrokerUnavailableError, OperationTimeoutError, RecordTooLargeError

pytestmark = [pytest.mark.integration, pytest.mark.crash]

TRANSPORTS = ["socket", "shm"]


def _topic(broker, name: str = "t", partitions: int = 1, **config: int) -> None:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(name, partitions, config=config or None)


def _values(broker, topic: str = "t", partition: int = 0) -> list[bytes]:
    with Consumer(socket=broker.socket, auto_offset_reset="earliest") as c:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek_to_beginning()
        out: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = c.poll(timeout_ms=200, max_records=1000)
            if not got and out:
                break
            out.extend(r.value for recs in got.values() for r in recs)
        return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_lost_batch_is_resent_before_anything_newer_of_its_partition(broker, transport):
    _topic(broker)
    p = Producer(socket=broker.socket, linger_ms=0, transport=transport, retries=math.inf,
                 retry_backoff_ms=20, retry_backoff_max_ms=200, delivery_timeout_ms=None)
    try:
        p.send("t", b"a0", partition=0).get(10)
        os.kill(broker.pid, signal.SIGSTOP)
        lost = p.send("t", b"a1", partition=0)  # sent, never read: lost with the supervisor
        time.sleep(0.2)
        later = [p.send("t", b"a%d" % i, partition=0) for i in (2, 3, 4)]  # wait behind a1
        broker.kill9()
        broker.start()
        metas = [f.get(30) for f in [lost, *later]]
        assert [m.offset for m in metas] == [1, 2, 3, 4]
        assert _values(broker) == [b"a0", b"a1", b"a2", b"a3", b"a4"]
        counts = p.metrics()["producer-metrics"]
        assert counts["record-retry-total"] >= 1
        assert counts["record-error-total"] == 0
    finally:
        p.close(10)


def test_without_retries_the_lost_batch_fails_and_newer_ones_go_on(broker):
    """The default (retries=0), for contrast: the lost batch's outcome is unknown, so it fails."""
    _topic(broker)
    p = Producer(socket=broker.socket, linger_ms=0, transport="socket")
    try:
        p.send("t", b"a0", partition=0).get(10)
        os.kill(broker.pid, signal.SIGSTOP)
        lost = p.send("t", b"a1", partition=0)
        time.sleep(0.2)
        broker.kill9()
        broker.start()
        with pytest.raises(BrokerUnavailableError):
            lost.get(30)
        assert p.send("t", b"a2", partition=0).get(30).offset == 1
    finally:
        p.close(10)


def test_ordered_retries_batch_what_waits_behind_a_partition_in_flight(broker):
    """While a partition has a batch in flight, its next records gather in one batch (Kafka's
    accumulator), instead of one batch per record with linger_ms=0."""
    _topic(broker)
    p = Producer(socket=broker.socket, linger_ms=0, transport="socket", retries=3)
    try:
        p.send("t", b"first", partition=0).get(10)
        os.kill(broker.pid, signal.SIGSTOP)
        first = p.send("t", b"x", partition=0)
        time.sleep(0.1)
        rest = [p.send("t", b"y%d" % i, partition=0) for i in range(50)]
        os.kill(broker.pid, signal.SIGCONT)
        offsets = [f.get(10).offset for f in [first, *rest]]
        assert offsets == list(range(1, 52))
        assert p.metrics()["producer-metrics"]["batch-send-total"] == 3
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        p.close(10)


def test_delivery_timeout_ends_the_retries(broker):
    _topic(broker)
    p = Producer(socket=broker.socket, linger_ms=0, transport="socket", retries=math.inf,
                 retry_backoff_ms=20, retry_backoff_max_ms=50, delivery_timeout_ms=800)
    try:
        p.send("t", b"a0", partition=0).get(10)
        broker.kill9()
        f = p.send("t", b"a1", partition=0)
        with pytest.raises((BrokerUnavailableError, OperationTimeoutError)):
            f.get(30)
    finally:
        if broker.proc is None:
            broker.start()
        p.close(10)


def test_an_unanswered_request_is_retried_after_request_timeout(broker):
    """A supervisor that stops answering (socket open): the connection is dropped after
    request_timeout_ms and the batch sent again; with at-least-once, it may then be there twice
    (the stopped supervisor still had it to read), never missing, never out of order."""
    _topic(broker)
    p = Producer(socket=broker.socket, linger_ms=0, transport="socket", retries=math.inf,
                 retry_backoff_ms=20, request_timeout_ms=300, delivery_timeout_ms=None)
    try:
        p.send("t", b"first", partition=0).get(10)
        os.kill(broker.pid, signal.SIGSTOP)
        f = p.send("t", b"a0", partition=0)
        time.sleep(1.0)
        os.kill(broker.pid, signal.SIGCONT)
        f.get(30)
        p.send("t", b"a1", partition=0).get(30)
        got = _values(broker)
        assert got[0] == b"first" and got[-1] == b"a1" and set(got[1:-1]) == {b"a0"}, got
        assert p.metrics()["producer-metrics"]["record-retry-total"] >= 1
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        p.close(10)


def test_batches_respect_the_topic_max_message_bytes(broker):
    """A record larger than the topic takes fails at send(); smaller ones that together exceed
    it travel in several batches instead of one refused batch."""
    _topic(broker, max_message_bytes=4096)
    with Producer(socket=broker.socket, linger_ms=50, transport="socket") as p:
        with pytest.raises(RecordTooLargeError, match="max_message_bytes"):
            p.send("t", b"x" * 5000)
        futures = [p.send("t", b"v" * 300, partition=0) for _ in range(40)]
        assert [f.get(10).offset for f in futures] == list(range(40))
        fb = p.send_batch("t", [b"w" * 300] * 40, partition=0)
        assert [m.offset for m in fb.get(10)] == list(range(40, 80))


def test_callbacks_say_success_or_failure(broker):
    _topic(broker)
    p = Producer(socket=broker.socket, linger_ms=0, transport="socket")
    got: list[tuple[str, object]] = []
    done = threading.Event()

    def record(kind: str):
        def fn(x: object) -> None:
            got.append((kind, x))
            if len(got) >= 4:
                done.set()
        return fn

    try:
        ok = p.send("t", b"ok", partition=0)
        ok.add_callback(record("ok")).add_errback(record("err")).add_both(record("both"))
        ok.get(10)
        os.kill(broker.pid, signal.SIGSTOP)
        bad = p.send("t", b"bad", partition=0)
        bad.add_callback(record("ok")).add_errback(record("err")).add_both(record("both"))
        time.sleep(0.1)
        broker.kill9()
        assert done.wait(10)
        kinds = [k for k, _ in got]
        assert sorted(kinds[:2]) == ["both", "ok"] and sorted(kinds[2:]) == ["both", "err"]
        assert all(isinstance(x, RecordMetadata) for _, x in got[:2])
        assert all(isinstance(x, BrokerUnavailableError) for _, x in got[2:])
    finally:
        if broker.proc is None:
            broker.start()
        p.close(10)
