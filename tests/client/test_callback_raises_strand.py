"""What a raising callback or a send that raises must not leave behind (a review's findings,
real supervisors, both transports):

- when a connection attempt finds no supervisor, every batch the producer holds fails at once; a
  user's errback raising KeyboardInterrupt on the first one ended that loop, and the batches after
  it (already off every table) never got an outcome: their futures never ended, flush() returned;
- a `linger_ms=0` send that raised after taking the acknowledgements (here: buffer_memory full)
  left a held batch waiting for the I/O thread's next deadline (request_timeout_ms) instead of the
  acknowledgements that came.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest

from edgebus import Admin, Producer
from edgebus.errors import BrokerUnavailableError
from edgebus.local_errors import OperationTimeoutError
from tests.frozen import sigstop


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_every_held_batch_fails_though_an_errback_raises(broker, transport, caplog):
    caplog.set_level(logging.CRITICAL)
    topic = f"strand-{transport}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 3)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=200)
    try:
        p.send(topic, b"warm", partition=0).get(10)
        os.kill(broker.proc.pid, signal.SIGKILL)
        broker.proc.wait()
        futures = [p.send(topic, b"x%d" % i, partition=i) for i in range(3)]

        def boom(e: BaseException) -> None:
            raise KeyboardInterrupt("a user's errback")

        futures[0].add_errback(boom)
        for f in futures:  # before: the two after the raising errback never ended
            with pytest.raises(BrokerUnavailableError):
                f.get(60)
        assert (p._in_flight, p._queued_bytes, len(p._ready), len(p._open)) == (0, 0, 0, 0)
    finally:
        p.close(5)


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_a_held_batch_goes_with_the_acknowledgements_after_a_send_that_raised(broker, transport):
    topic = f"heldraise-{transport}"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    # request_timeout_ms of 10 minutes: the I/O thread's own deadline is far past the wait below
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0, buffer_memory=4000,
                 max_block_ms=200, request_timeout_ms=600_000, delivery_timeout_ms=None)
    try:
        p.send(topic, b"warm", partition=0).get(10)
        pid = broker.proc.pid
        sigstop(pid)
        try:
            futures = [p.send(topic, b"r%d" % i, partition=0) for i in range(1, 4)]
            assert p._open, "the third record is held behind the two unread"
            with pytest.raises(OperationTimeoutError):
                p.send(topic, b"x" * 3990, partition=0)  # no room: raises after the reap
        finally:
            os.kill(pid, signal.SIGCONT)
        offsets = [f.get(60).offset for f in futures]  # before: the held one waited 10 minutes
        assert offsets == [1, 2, 3]
    finally:
        p.close(5)
