"""An idempotent producer with several batches of one partition in flight (up to 5, as Kafka):
answers lost with the connection while batches are pipelined, a supervisor SIGKILLed mid-stream,
and a batch refused for good with batches behind it. Every acknowledged record is there exactly
once and in order. Real supervisor, a real proxy that cuts the connection, real kill -9."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import RecordTooLargeError
from tests.txn.cutproxy import CutProxy
from tests.txn.test_idempotent_native import stream_through_kill9, topic, values

pytestmark = [pytest.mark.integration, pytest.mark.crash]


def pipelining(sock: str, per_partition: int, transport: str = "socket",
               batch_size: int = 16384) -> Producer:
    # linger_ms=0 and records sent without waiting: each send may leave as a batch of its own
    # while the ones before it are still unanswered.
    return Producer(socket=sock, transport=transport, linger_ms=0, enable_idempotence=True,
                    retry_backoff_ms=10, retry_backoff_max_ms=100, delivery_timeout_ms=None,
                    max_in_flight_per_partition=per_partition, batch_size=batch_size)


SMALL = b"small" * 16


@pytest.mark.parametrize("per_partition", [5, 1])
def test_answers_lost_while_batches_are_in_flight(broker, tmp_path: Path, per_partition: int) -> None:
    """Every 7th PRODUCE answer is lost (the proxy cuts the connection after the append), with
    several batches of the partition unanswered at that moment: each is resent, in order, and
    the supervisor answers the ones it has with their first offset."""
    topic(broker)
    proxy = CutProxy(broker.socket, tmp_path / "p.sock", every=7)
    # One record per batch (batch_size): many answers, so many cuts.
    p = pipelining(str(tmp_path / "p.sock"), per_partition, batch_size=80)
    n = 600
    try:
        futs = [p.send("t", b"v%d" % i, partition=0) for i in range(n)]
        offsets = [f.get(120).offset for f in futs]
    finally:
        p.close(30)
        proxy.close()
    assert proxy.cuts >= 20
    if per_partition > 1:
        assert proxy.max_outstanding > 1, "the batches went one at a time"
    else:
        assert proxy.max_outstanding == 1
    assert values(broker) == [b"v%d" % i for i in range(n)]
    assert offsets == list(range(n))


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_supervisor_sigkilled_with_batches_in_flight(broker, transport: str) -> None:
    topic(broker)
    stream_through_kill9(broker, pipelining(broker.socket, 5, transport), 4000, kills=2,
                         pause_every=200)


def test_batches_behind_one_refused_for_good_start_a_new_sequence(broker) -> None:
    """Two batches of a partition leave together; the supervisor refuses the first for good (too
    large: the topic's limit was lowered after the producer read it), so the second does not
    follow the last sequence it has (refused as out of order, nothing appended). The second is
    stamped anew under the producer's next id and appended; the producer goes on."""
    topic(broker)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=50, enable_idempotence=True,
                 batch_size=1000, retry_backoff_ms=10, retry_backoff_max_ms=100)
    try:
        assert p.send("t", b"first", partition=0).get(30).offset == 0
        with Admin(socket=broker.socket) as a:
            a.alter_topic_config("t", {"max_message_bytes": "500"})
        # One call, three batches (batch_size): the first two are sealed in one go (the third
        # waits for linger_ms), so they leave back to back on one connection.
        fut = p.send_batch("t", [b"x" * 900, SMALL, b"z" * 900], partition=0)
        with pytest.raises(RecordTooLargeError):
            fut.get(30)
        assert p.send("t", b"after", partition=0).get(30).offset >= 1
    finally:
        p.close(10)
    got = values(broker)
    assert got[0] == b"first" and got[-1] == b"after" and b"x" * 900 not in got
    assert got.count(SMALL) == 1
