"""Records too large for the consumer's response ring (a topic whose max_message_bytes is over
the ring's max_frame, 2 MiB of the default 4 MiB ring): the supervisor sends such an answer on the
socket, and the client reads the ring before the socket. Its standing fetch, re-armed after the
large answer, put the next answer in the ring, so the consumer took that first and its position
moved past the large records: they were skipped, silently (found by wr31: of 2,100 and 3,000 KiB
records between small ones, offsets 3 and 4 never came). Now a standing fetch ends with an answer
that goes on the socket, and the client, which knows it by the answer's size, arms a new one
after it. Real supervisor, real producer and consumer; the replayed case and the live one (the
consumer waiting at the end of the log when the large record comes)."""

from __future__ import annotations

import pytest

from edgebus import Admin, Producer, TopicPartition
from tests.standing import consumer, read_offsets

pytestmark = pytest.mark.integration

KiB = 1024
# Small, just under the ring's max_frame, just over it, far over, and small again: the answers
# around each large one come in the ring.
SIZES = [1, 1900 * KiB, 2040 * KiB, 2100 * KiB, 3000 * KiB, 1, 5, 2500 * KiB, 7, 4000 * KiB, 9]


def _topic(broker: object, name: str) -> None:
    with Admin(socket=broker.socket) as a:  # type: ignore[attr-defined]
        a.create_topic(name, 1, config={"max_message_bytes": 8 * 1024 * KiB})


def _producer(broker: object) -> Producer:
    return Producer(socket=broker.socket, linger_ms=0,  # type: ignore[attr-defined]
                    max_request_size=6 * 1024 * KiB)


def _value(i: int, size: int) -> bytes:
    return bytes([65 + i]) * size


def test_large_records_replayed_through_the_rings_all_arrive_in_order(broker):
    topic = "large-replay"
    _topic(broker, topic)
    with _producer(broker) as p:
        for i, size in enumerate(SIZES):
            p.send(topic, _value(i, size), partition=0).get(60)
    c = consumer(broker, topic, "shm")
    tp = TopicPartition(topic, 0)
    got: list[tuple[int, int, int]] = []
    try:
        assert c._ch.using_shm
        for _ in range(200):  # a bound for a stuck consumer (the assert says what is missing)
            if len(got) >= len(SIZES):
                break
            got += [(r.offset, len(r.value), r.value[0]) for r in c.poll(500).get(tp, [])]
    finally:
        c.close()
    assert [o for o, _, _ in got] == list(range(len(SIZES))), got
    assert [(n, b) for _, n, b in got] == [(s, 65 + i) for i, s in enumerate(SIZES)]


def test_large_records_sent_while_the_consumer_waits_at_the_end_all_arrive(broker):
    topic = "large-live"
    _topic(broker, topic)
    c = consumer(broker, topic, "shm")
    tp = TopicPartition(topic, 0)
    offsets: list[int] = []
    try:
        assert c._ch.using_shm
        with _producer(broker) as p:
            n = 0
            for large in (2100 * KiB, 3000 * KiB, 2040 * KiB, 4000 * KiB):
                # The consumer waits at the end of the log (its standing fetch parked): the large
                # record's append answers it, on the socket, and the small one's right after it
                # comes in the ring, before the consumer has read either.
                read_offsets(c, tp, n, offsets)
                p.send(topic, _value(n, large), partition=0).get(60)
                p.send(topic, _value(n + 1, 3), partition=0).get(60)
                n += 2
            read_offsets(c, tp, n, offsets)
    finally:
        c.close()
    assert offsets == list(range(8)), offsets
