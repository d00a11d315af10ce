"""A linger_ms=0 producer holds records back only while the supervisor is more than one request
behind (issue 16, p50 at 10,000 sends a second): a record sent while just the last request is
unread is written at once, and the supervisor reads both in one wake-up; holding it made it wait
for the last request's acknowledgement, a wake-up of the producer's reader and I/O threads, and
another wake-up of the supervisor. Behind two unread requests it is held as before
(tests/client/test_unread_hold.py: a stalled supervisor still gets few, full requests). On the
rings since lat16; on the socket since sockack27 (before, any unread byte held the next record:
SIOCOUTQ counts the kernel's buffers, so the socket tells the last request from the ones before
it by the answers, edgebus/client/socket_acks.py `unread`).

Real supervisor processes; SIGSTOP/SIGCONT only orders events (the stopped supervisor reads
nothing, so what is written stays unread in the ring).
"""

from __future__ import annotations

import os
import signal

import pytest

from edgebus.client.admin import Admin
from edgebus.client.consumer import Consumer
from edgebus.client.producer import Producer
from edgebus.client.types import TopicPartition
from tests.frozen import sigstop


def _batches(p: Producer) -> int:
    return int(p.metrics()["producer-metrics"]["batch-send-total"])


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_record_behind_one_unread_request_is_written_behind_two_held(broker, transport):
    """Before: the second record was held with the 50 after it (2 batches while the supervisor
    was stopped). Now: the first two are written, the 50 after them wait in one batch (3); all are
    acknowledged in order without flush(), and a consumer reads them in order."""
    topic = f"holdwindow-{transport}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        before = _batches(p)  # counted when acknowledged
        pid = broker.proc.pid
        sigstop(pid)  # nothing is read while stopped
        try:
            futures = [p.send(topic, b"one", partition=0),
                       p.send(topic, b"two", partition=0)]  # behind one unread request: written
            futures += [p.send(topic, b"%d" % i, partition=0) for i in range(50)]  # behind two
        finally:
            os.kill(pid, signal.SIGCONT)
        offsets = [f.get(timeout=10).offset for f in futures]  # no flush(): nothing stranded
        batches = _batches(p) - before
    finally:
        p.close(5)
    assert offsets == list(range(1, 53))
    assert batches == 3, f"{batches} batches for 52 records (one, two, then the 50 held)"
    c = Consumer(socket=broker.socket, transport=transport, auto_offset_reset="earliest")
    try:
        c.assign([TopicPartition(topic, 0)])
        got: list[bytes] = []
        while len(got) < 53:
            recs = c.poll(5000).get(TopicPartition(topic, 0), [])
            assert recs, f"no more records after {len(got)}"
            got += [r.value for r in recs]
    finally:
        c.close()
    assert got == [b"warm", b"one", b"two"] + [b"%d" % i for i in range(50)]
