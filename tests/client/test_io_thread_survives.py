"""A user callback's KeyboardInterrupt in one of the producer's own threads has nobody to be
raised to. Met where a dead connection fails what it had in flight (the reader thread's end,
`Dispatcher._lose`), it ended that loop: the other requests in flight got no outcome from it.
Met in the I/O thread (an expiry, a reap, an acks=0 send), it ended the thread: every later batch
stayed unsent and flush() waited forever. Now both log it at ERROR and go on. A real supervisor,
SIGSTOPped so that the batches in flight expire (which thread fails them is a race: either way
each gets its outcome once); both transports.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest

from edgebus import Admin, Consumer, Producer
from edgebus.errors import EdgebusError
from edgebus.testing import wait_for
from tests.frozen import sigstop


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_callback_raising_in_the_producers_threads_stops_nothing(broker, transport, caplog):
    topic = f"iothread-{transport}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 2)
    caplog.set_level(logging.ERROR)
    # linger_ms > 0: the I/O thread sends and expires, not the caller's thread
    p = Producer(socket=broker.socket, transport=transport, linger_ms=5,
                 delivery_timeout_ms=500, request_timeout_ms=500)
    ran: list[tuple[int, str]] = []

    def errback(part: int):
        def boom(e: BaseException) -> None:
            ran.append((part, type(e).__name__))
            raise KeyboardInterrupt(f"a user's errback, partition {part}")
        return boom

    try:
        p.send(topic, b"warm", partition=0).get(10)
        pid = broker.proc.pid
        sigstop(pid)
        try:
            lost = [p.send(topic, b"expires-%d" % i, partition=i) for i in (0, 1)]
            for i, f in enumerate(lost):
                f.add_errback(errback(i))
            for f in lost:
                with pytest.raises(EdgebusError):
                    f.get(30)  # failed at the delivery timeout (the connection is dropped)
            wait_for(lambda: any("callback raised" in r.getMessage() for r in caplog.records),
                     30, "the ERROR line about the raising errback")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert sorted(part for part, _ in ran) == [0, 1], ran
        assert p._thread.is_alive(), "the I/O thread ended"
        after = p.send(topic, b"after", partition=0)
        p.flush(30)  # before, when the I/O thread had ended: never
        assert after.get(0).offset >= 1
    finally:
        p.close(10)
    with Consumer(topic, socket=broker.socket, transport="socket",
                  auto_offset_reset="earliest") as c:
        seen: list[bytes] = []
        for _ in range(100):
            seen += [bytes(r.value) for rs in c.poll(timeout_ms=200).values() for r in rs]
            if b"after" in seen:
                break
    assert seen.count(b"warm") == 1 and seen.count(b"after") == 1, seen
