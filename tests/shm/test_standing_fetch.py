"""Standing fetches (FETCH_STANDING, docs/FORMAT.md 7.13) with a real supervisor and real clients:
one request serves many answers, order and completeness, flow control when the consumer stops
reading, a consumer SIGKILLed with one armed (on the Unix socket:
tests/server/test_socket_standing.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration


def _status(broker: Any) -> dict[str, Any]:
    with Admin(socket=broker.socket, transport="socket") as a:
        return a.status()


def _until(check: Any, what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def _consumer(broker: Any, topic: str, transport: str = "shm", **kw: Any) -> Consumer:
    c = Consumer(socket=broker.socket, transport=transport, auto_offset_reset="earliest",
                 fetch_max_wait_ms=200, **kw)
    c.assign([TopicPartition(topic, 0)])
    return c


def test_one_request_serves_an_answer_per_record(broker):
    """Records sent one at a time, each read before the next is sent: every answer comes from the
    one standing fetch, so the consumer's request count stays flat (with one fetch per answer it
    grows by one per record)."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("sf", 1)
    tp = TopicPartition("sf", 0)
    c = _consumer(broker, "sf")
    got: list[int] = []
    with Producer(socket=broker.socket, transport="shm", linger_ms=0) as p:
        p.send("sf", b"first", partition=0).get(10)
        while not got:
            got += [r.offset for r in c.poll(500).get(tp, [])]
        requests_after_first = _conn_requests(broker)
        for i in range(1, 120):
            p.send("sf", str(i).encode(), partition=0).get(10)
            deadline = time.monotonic() + 30
            while len(got) <= i and time.monotonic() < deadline:
                got += [r.offset for r in c.poll(500).get(tp, [])]
    assert got == list(range(120))
    extra = _conn_requests(broker) - requests_after_first
    hits = c._ch.fetch_ahead_hits
    c.close()
    assert hits >= 100, f"only {hits} answers came from the fetch sent ahead"
    assert extra <= 10, f"the consumer sent {extra} requests for 119 answers"


def _conn_requests(broker: Any) -> int:
    """Requests of the consumer's connection: the one with a parked (standing) fetch."""
    conns = [c for c in _status(broker)["clients"] if c["parked_fetches"]]
    assert len(conns) == 1, conns
    return int(conns[0]["requests"])


def test_a_consumer_that_stops_reading_holds_at_most_its_ring(broker):
    """The consumer arms a standing fetch, then does not poll while far more than its 4 MiB
    response ring is produced: the supervisor queues nothing beyond what the ring holds (the
    fetch is suspended), and once the consumer polls again it gets every record, in order."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("sfc", 1)
    tp = TopicPartition("sfc", 0)
    c = _consumer(broker, "sfc")
    value = b"v" * 4000
    with Producer(socket=broker.socket, transport="shm", linger_ms=0) as p:
        p.send("sfc", value, partition=0).get(10)
        first = []
        while not first:
            first += c.poll(500).get(tp, [])
        for _ in range(12):  # 12 x 256 records of 4 KB: ~12 MiB, three rings' worth
            p.send_batch("sfc", [value] * 256, partition=0)
        p.flush(30)
    held = [x for x in _status(broker)["clients"] if x["parked_fetches"]]
    assert len(held) == 1
    # Nothing but what fits the ring: no answers queued behind it on the link.
    assert held[0]["output_bytes"] == 0, held
    offsets = [r.offset for r in first]
    deadline = time.monotonic() + 60
    while len(offsets) < 1 + 12 * 256 and time.monotonic() < deadline:
        offsets += [r.offset for r in c.poll(500).get(tp, [])]
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


# The standing fetch on the rings and on the Unix socket (tests/server/test_socket_standing.py
# has the socket's own flow-control cases).
@pytest.mark.parametrize("transport", ["shm", "socket"])
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
    _until(lambda: not [c for c in _status(broker)["clients"] if c["pid"] == child.pid],
           "the killed consumer's connection closed")
    _until(lambda: _status(broker)["parked_fetches"] == 0, "no parked fetch left")
    # Everything is still served: a new consumer reads every record in order.
    tp = TopicPartition(topic, 0)
    c = _consumer(broker, topic, transport)
    offsets: list[int] = []
    deadline = time.monotonic() + 30
    while len(offsets) < 2001 and time.monotonic() < deadline:
        offsets += [r.offset for r in c.poll(500).get(tp, [])]
    c.close()
    assert offsets == list(range(2001))

