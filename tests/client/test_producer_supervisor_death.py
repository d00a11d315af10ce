"""A producer whose supervisor is killed (kill -9) while it holds records back (issue 16).

A `linger_ms=0` producer keeps its next records in an open batch while the supervisor has not
read its earlier requests (docs/ARCHITECTURE.md, "Clients"); `acks="durable"` holds one while two
batches wait for their fsync. When the supervisor died meanwhile, the requests in flight failed
at once (the socket's hang-up), but the held records were "not yet sent": the I/O thread tried
to reconnect with backoff until `delivery_timeout_ms` (120 s by default; never with None) and
the caller heard nothing all that time. Now a plain producer fails them as soon as a connection
attempt finds no supervisor, with `BrokerUnavailableError` saying they were not sent; ordered
retries (`retries` > 0) still send them, in order, once the supervisor is back.

Real supervisor processes, really killed with SIGKILL; SIGSTOP only orders events (a stopped
supervisor reads nothing, so requests stay unread and the next records are held). Every wait is
bounded generously: `delivery_timeout_ms=None`, so the old code never failed the held records
at all and `get(60)` ended in OperationTimeoutError.
"""

from __future__ import annotations

import math
import os
import signal

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client.producer import DURABLE_IN_FLIGHT
from edgebus.errors import BrokerUnavailableError, OperationTimeoutError
from edgebus.testing import EmbeddedBroker, wait_for

MAX_SENDS = 500  # sends tried, the supervisor stopped, before one is held (the first few are)


def _topic(broker: EmbeddedBroker, name: str) -> None:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(name, 1)


def _send_until_held(p: Producer, topic: str) -> list[tuple[bytes, object]]:
    """Send records to a stopped supervisor until the producer holds one back (an open batch)."""
    sent = []
    for i in range(MAX_SENDS):
        v = b"r%d" % i
        sent.append((v, p.send(topic, v, partition=0)))
        if p._open:
            return sent
    raise AssertionError(f"no record held back in {MAX_SENDS} sends to a stopped supervisor")


def _kill9_stopped(broker: EmbeddedBroker) -> None:
    pid = broker.proc.pid
    os.kill(pid, signal.SIGKILL)
    os.kill(pid, signal.SIGCONT)
    broker.proc.wait()


def _log_values(broker: EmbeddedBroker, topic: str, transport: str) -> list[bytes]:
    c = Consumer(socket=broker.socket, transport=transport, auto_offset_reset="earliest")
    try:
        c.assign([TopicPartition(topic, 0)])
        out: list[bytes] = []
        while True:
            recs = c.poll(1000).get(TopicPartition(topic, 0), [])
            if not recs:
                return out
            out += [r.value for r in recs]
    finally:
        c.close()


def _outcome(fut: object) -> BaseException | None:
    try:
        fut.get(60)  # type: ignore[attr-defined]
    except OperationTimeoutError as e:
        raise AssertionError(f"a record's future did not resolve within 60 s: {e}") from None
    except BaseException as e:  # the outcome under test
        return e
    return None


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_held_records_fail_at_once_when_the_supervisor_is_killed(broker, transport):
    """Before: the held records stayed unresolved (delivery_timeout_ms=None; 120 s by default)
    while the I/O thread retried the dead socket. Now every record fails with
    BrokerUnavailableError: the one in flight as lost, the held ones as not sent. The record
    acknowledged before the kill is in the log afterwards, and nothing else (the stopped
    supervisor read nothing more).

    The test holds the producer's I/O lock from the first held send until the producer has
    seen the connection die, so that no thread can write the held records to the dying
    connection first (they would then fail as lost, in flight: also prompt, but not this case)."""
    topic = f"death-{transport}"
    _topic(broker, topic)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0, delivery_timeout_ms=None)
    try:
        assert p.send(topic, b"acked", partition=0).get(10).offset == 0
        ch = p._channel
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            first = p.send(topic, b"in-flight", partition=0)  # written, never read
            with p._io_lock:
                held = [p.send(topic, b"held-%d" % i, partition=0) for i in range(5)]
                with p._cond:
                    waiting = sum(b.count for b in [*p._open.values(), *p._ready])
                assert waiting == len(held), f"{waiting} of {len(held)} records held back"
                _kill9_stopped(broker)
                wait_for(lambda: ch.lost is not None, 60, "the producer to see the socket close")
        finally:
            if broker.proc.poll() is None:
                _kill9_stopped(broker)
        lost = _outcome(first)
        assert isinstance(lost, BrokerUnavailableError), lost
        errors = [_outcome(f) for f in held]
        assert all(isinstance(e, BrokerUnavailableError) and "not sent" in str(e)
                   for e in errors), errors
        assert p.metrics()["producer-metrics"]["record-error-total"] == 1 + len(held)
    finally:
        p.close(5)
    broker.start()
    assert _log_values(broker, topic, transport) == [b"acked"]


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_the_durable_hold_fails_at_once_when_the_supervisor_is_killed(broker, transport):
    """acks="durable": a partition with two batches waiting for their fsync keeps its next
    records in one open batch. Killed meanwhile, the supervisor answers none: the two fail as
    lost, the held batch as not sent (before: unresolved until delivery_timeout_ms)."""
    topic = f"durable-death-{transport}"
    _topic(broker, topic)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0, acks="durable",
                 delivery_timeout_ms=None)
    try:
        p.send(topic, b"acked", partition=0).get(10)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            sent = _send_until_held(p, topic)
            assert p._unacked.get((topic, 0), 0) >= DURABLE_IN_FLIGHT or p._in_flight
        finally:
            _kill9_stopped(broker)
        errors = [_outcome(f) for _, f in sent]
        assert all(isinstance(e, BrokerUnavailableError) for e in errors), errors
        # A send after the death finds no supervisor: it fails too, at once, not sent.
        late = _outcome(p.send(topic, b"late", partition=0))
        assert isinstance(late, BrokerUnavailableError) and "not sent" in str(late), late
    finally:
        p.close(5)


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_ordered_retries_send_the_held_records_once_the_supervisor_is_back(broker, transport):
    """retries > 0 promises to resend until the supervisor is back: every record is
    acknowledged after the restart and the log has each once, in the order sent (the stopped
    supervisor read none of them before it was killed, so none can be there twice)."""
    topic = f"death-retry-{transport}"
    _topic(broker, topic)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0, retries=math.inf,
                 delivery_timeout_ms=None, retry_backoff_ms=20, retry_backoff_max_ms=200)
    try:
        p.send(topic, b"acked", partition=0).get(10)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            sent = _send_until_held(p, topic)
        finally:
            _kill9_stopped(broker)
        # Records wait (retried) while nobody listens: none may fail meanwhile.
        wait_for(lambda: p.metrics()["producer-metrics"]["batch-retry-total"] > 0, 60,
                 "a retry of the batch in flight at the kill")
        assert not any(f.done() and f.failed() for _, f in sent)
        broker.start()
        errors = [_outcome(f) for _, f in sent]
        assert errors == [None] * len(sent), errors
    finally:
        p.close(5)
    assert _log_values(broker, topic, transport) == [b"acked"] + [v for v, _ in sent]
