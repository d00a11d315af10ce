"""A callback that sends (Kafka's own pattern: react to an acknowledgement with the next record)
against a real supervisor, with whatever send path the producer has by default (the C Sender
when built). The producer's mutex is an RLock, so a callback's send() re-enters it and counts its
record in flight while the settling that ran the callback is still under way. Before the fix the
C settling (edgebus/onestep_settle.c) then stored the counts it had read before the callbacks:
`_in_flight` and `_queued_bytes` went negative (socket -158 / -4,536, shm -13 / -810 in a
review's run of 200 records) and flush() never returned. Counts, not times.
"""

from __future__ import annotations

import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client.types import RecordMetadata


def _values(broker, topic: str, n: int) -> list[bytes]:
    got: list[bytes] = []
    with Consumer(socket=broker.socket, transport="socket") as c:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        for _ in range(400):
            for rs in c.poll(timeout_ms=200).values():
                got += [r.value for r in rs]
            if len(got) >= n:
                break
    return got


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_records_sent_from_callbacks_are_counted_once_and_flush_ends(broker, transport):
    topic = f"cbsend-{transport}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0)
    children = []
    threads: set[str] = set()
    lock = threading.Lock()

    def send_child(md: RecordMetadata) -> None:
        with lock:
            threads.add(threading.current_thread().name)
        children.append(p.send(topic, b"child-%d" % md.offset, partition=0))

    try:
        for i in range(200):
            p.send(topic, b"parent-%d" % i, partition=0).add_callback(send_child)
            if i % 10 == 0:
                time.sleep(0.002)  # answers come between sends: settled by sends and the reader
        p.flush(60)
        assert len(children) == 200
        assert all(f.done() for f in children)
        assert (p._in_flight, p._queued_bytes) == (0, 0), "counts left after flush()"
        sent = p.metrics()["producer-metrics"]["record-send-total"]
        assert sent == 400, f"{sent} records counted as sent, 400 were"
    finally:
        p.close(5)
    values = _values(broker, topic, 400)
    assert len(values) == 400, f"{len(values)} records in the log, 400 sent"
    parents = [v for v in values if v.startswith(b"parent-")]
    assert parents == [b"parent-%d" % i for i in range(200)], "parents once each, in order"
    # each parent's child names the parent's offset (a fresh topic: the offset is the index)
    want = {b"child-%d" % off for off, v in enumerate(values) if v.startswith(b"parent-")}
    assert sorted(v for v in values if v.startswith(b"child-")) == sorted(want)
