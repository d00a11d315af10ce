"""Standing fetches (FETCH_STANDING, docs/FORMAT.md 7.13) with a real supervisor and real clients,
each case on the rings and on the Unix socket: one request serves many answers, order and
completeness, flow control when the consumer stops reading, a consumer SIGKILLed with one armed
(the socket's own cases: tests/server/test_socket_standing.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import psutil
import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.server.handlers.standing import SOCKET_ANSWER_CAP
from edgebus.testing import wait_for
from tests.server.rawclient import inq
from tests.standing import consumer, parked_conn, read_offsets, status

pytestmark = pytest.mark.integration


@pytest.fixture(params=["shm", "socket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_one_request_serves_an_answer_per_record(broker, transport):
    """Records sent one at a time, each read before the next is sent: every answer comes from the
    one standing fetch, on the rings and on the socket, so the consumer's request count stays
    flat (with one fetch per answer, the socket's behaviour before, it grows by one per record)."""
    topic = f"sf-{transport}"
    with Admin(socket=broker.socket) as a:
        a.create_topic(topic, 1)
    tp = TopicPartition(topic, 0)
    c = consumer(broker, topic, transport)
    got: list[int] = []
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        p.send(topic, b"first", partition=0).get(10)
        read_offsets(c, tp, 1, got)
        before = int(parked_conn(broker)["requests"])
        for i in range(1, 120):
            p.send(topic, str(i).encode(), partition=0).get(10)
            read_offsets(c, tp, i + 1, got)
    assert got == list(range(120))
    extra = int(parked_conn(broker)["requests"]) - before
    hits = c._ch.fetch_ahead_hits
    assert c._ch.using_shm == (transport == "shm")
    c.close()
    assert hits >= 100, f"only {hits} answers came from the standing fetch"
    assert extra <= 10, f"the consumer sent {extra} requests for 119 answers"


def test_a_consumer_that_stops_reading_holds_a_bounded_amount(broker, transport):
    """The consumer arms a standing fetch, then does not poll while ~12 MiB are produced, and
    once it polls again gets every record, in order, once. Meanwhile the supervisor holds the
    answers: on the rings nothing beyond what the consumer's 4 MiB response ring holds (the
    fetch is suspended, nothing queued behind it on the link); on the socket what is queued
    stays within one answer, what waits in the socket within the kernel's send buffer, and the
    supervisor's memory does not grow by the 12 MiB."""
    topic = f"sfc-{transport}"
    with Admin(socket=broker.socket) as a:
        a.create_topic(topic, 1)
    tp = TopicPartition(topic, 0)
    c = consumer(broker, topic, transport)
    value = b"v" * 4000
    sup = psutil.Process(broker.pid)
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        p.send(topic, value, partition=0).get(10)
        first = []
        while not first:
            first += c.poll(500).get(tp, [])
        rss_before = sup.memory_info().rss
        for _ in range(12):  # 12 x 256 records of 4 KB: ~12 MiB, three rings' worth
            p.send_batch(topic, [value] * 256, partition=0)
        p.flush(30)
    if transport == "shm":
        # Nothing but what fits the ring: no answers queued behind it on the link.
        assert parked_conn(broker)["output_bytes"] == 0
    else:
        time.sleep(0.3)  # let the supervisor push what flow control allows (nothing is timed)
        held = parked_conn(broker)
        rss_after = sup.memory_info().rss
        waiting = inq(c._ch._sock)
        assert held["output_bytes"] <= SOCKET_ANSWER_CAP + 64 * 1024, held
        assert waiting < 2 * 1024 * 1024, f"{waiting} bytes wait in the consumer's socket"
        assert rss_after - rss_before < 8 * 1024 * 1024, (rss_before, rss_after)
    offsets = read_offsets(c, tp, 1 + 12 * 256, [r.offset for r in first], seconds=60)
    c.close()
    assert offsets == list(range(1 + 12 * 256))


def _kill_me_consumer(sock: str, transport: str, topic: str, ready: Any) -> None:
    c = Consumer(socket=sock, transport=transport, auto_offset_reset="earliest",
                 fetch_max_wait_ms=200)
    c.assign([TopicPartition(topic, 0)])
    n = 0
    while True:
        n += sum(len(v) for v in c.poll(200).values())
        if n:
            ready.set()


def test_a_consumer_sigkilled_with_a_standing_fetch_leaves_nothing(broker, transport):
    topic = f"sfk-{transport}"
    with Admin(socket=broker.socket) as a:
        a.create_topic(topic, 1)
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_kill_me_consumer, args=(broker.socket, transport, topic, ready),
                        daemon=True)
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        child.start()
        try:
            p.send(topic, b"go", partition=0).get(10)
            assert ready.wait(30)
            for i in range(2000):  # answers in flight while it dies
                p.send(topic, str(i).encode(), partition=0)
                if i == 1000:
                    os.kill(child.pid, signal.SIGKILL)
            p.flush(30)
        finally:
            child.join(10)
    wait_for(lambda: not [c for c in status(broker)["clients"] if c["pid"] == child.pid], 30,
             "the killed consumer's connection closed")
    wait_for(lambda: status(broker)["parked_fetches"] == 0, 30, "no parked fetch left")
    # Everything is still served: a new consumer reads every record in order.
    tp = TopicPartition(topic, 0)
    c = consumer(broker, topic, transport)
    offsets = read_offsets(c, tp, 2001, [])
    c.close()
    assert offsets == list(range(2001))

