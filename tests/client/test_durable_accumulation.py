"""acks="durable" with linger_ms=0: while a partition's batches wait for their fsync, its next
records keep filling one batch (edgebus/client/producer.py, DURABLE_IN_FLIGHT), as Kafka's
accumulator does. Before, every record left as a batch of its own and a producer made at most
max_in_flight records durable per fsync. Real supervisor, both transports."""

from __future__ import annotations

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition

N = 3000


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_records_sent_while_a_durable_batch_waits_share_the_next_batch(broker, transport):
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("d", 2)
    p = Producer(socket=broker.socket, transport=transport, acks="durable", linger_ms=0)
    try:
        futures = [p.send("d", b"v%d" % i, partition=i % 2) for i in range(N)]
        offsets = [f.get(timeout=60).offset for f in futures]
        batches = p.metrics()["producer-metrics"]["batch-send-total"]
    finally:
        p.close(10)
    # Every record acknowledged as durable, in order, densely, per partition.
    assert offsets[0::2] == list(range(N // 2)) and offsets[1::2] == list(range(N // 2))
    # At most 2 batches a partition are out before the next records are held: far fewer
    # batches than records (before: exactly one batch per record).
    assert batches <= N // 4, f"{batches} batches for {N} records"
    c = Consumer(socket=broker.socket, transport="socket")
    tp = TopicPartition("d", 1)
    c.assign([tp])
    c.seek(tp, 0)
    got: list[bytes] = []
    while len(got) < N // 2:
        got += [r.value for rs in c.poll(2000).values() for r in rs]
    c.close()
    assert got == [b"v%d" % i for i in range(1, N, 2)]


@pytest.mark.integration
def test_a_held_batch_is_sent_by_flush_and_by_the_next_acknowledgement(broker):
    """A record held behind unacknowledged batches goes out when one of them is acknowledged,
    with no further send() to push it, and flush() returns only once it is durable."""
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("h", 1)
    p = Producer(socket=broker.socket, transport="socket", acks="durable", linger_ms=0)
    try:
        fs = [p.send("h", b"x%d" % i, partition=0) for i in range(50)]
        assert fs[-1].get(timeout=30).offset == 49  # nobody sent after it: an ack pushed it
        more = [p.send("h", b"y%d" % i, partition=0) for i in range(50)]
        p.flush(30)
        assert all(f.done() for f in more)
        assert [f.get(0).offset for f in more] == list(range(50, 100))
    finally:
        p.close(10)
