"""A standing fetch pushes its next answer while its consumer has up to the unread window
(EDGEBUS_SHM_STANDING_WINDOW) of earlier answers still in its ring (issue 16: pushed only once
the consumer had read them all, a record appended meanwhile waited for the consumer's read, the
supervisor's wake-up on it and the consumer's second wake-up). Real supervisor and clients; the
answer to a standing fetch parked on the partition is written during the append, before the
producer's acknowledgement, so the ring is looked at once the acknowledgement is in."""

from __future__ import annotations

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration


def test_an_append_is_pushed_while_the_consumer_has_not_read_the_last_answer(broker):
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("sw", 1)
    tp = TopicPartition("sw", 0)
    c = Consumer(socket=broker.socket, transport="shm", auto_offset_reset="earliest",
                 fetch_max_wait_ms=200)
    c.assign([tp])
    try:
        with Producer(socket=broker.socket, transport="shm", linger_ms=0) as p:
            p.send("sw", b"0", partition=0).get(10)
            got = []
            while not got:  # arms the standing fetch (its successor waits at offset 1)
                got += c.poll(500).get(tp, [])
            ring = c._ch._rings.resp  # the consumer's response ring, read by nothing now
            assert ring.used() == 0
            p.send("sw", b"1", partition=0).get(10)
            one = ring.used()
            assert one > 0  # answered at once: the ring was empty
            p.send("sw", b"2", partition=0).get(10)
            # Before: held (suspended) until the consumer read the answer with record 1.
            assert ring.used() > one
        while len(got) < 3:
            recs = c.poll(5000).get(tp, [])
            assert recs, f"no more records after {len(got)}"
            got += recs
    finally:
        c.close()
    assert [r.value for r in got] == [b"0", b"1", b"2"]
    assert [r.offset for r in got] == [0, 1, 2]


def test_window_zero_holds_the_answer_until_the_consumer_read(make_broker):
    """EDGEBUS_SHM_STANDING_WINDOW=0: the earlier rule, answers one at a time."""
    broker = make_broker(None).start(env={"EDGEBUS_SHM_STANDING_WINDOW": "0"})
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("sw0", 1)
    tp = TopicPartition("sw0", 0)
    c = Consumer(socket=broker.socket, transport="shm", auto_offset_reset="earliest",
                 fetch_max_wait_ms=200)
    c.assign([tp])
    try:
        with Producer(socket=broker.socket, transport="shm", linger_ms=0) as p:
            p.send("sw0", b"0", partition=0).get(10)
            got = []
            while not got:
                got += c.poll(500).get(tp, [])
            ring = c._ch._rings.resp
            p.send("sw0", b"1", partition=0).get(10)
            one = ring.used()
            p.send("sw0", b"2", partition=0).get(10)
            assert ring.used() == one > 0  # held: the consumer has not read the first
        while len(got) < 3:
            recs = c.poll(5000).get(tp, [])
            assert recs, f"no more records after {len(got)}"
            got += recs
    finally:
        c.close()
    assert [r.value for r in got] == [b"0", b"1", b"2"]
