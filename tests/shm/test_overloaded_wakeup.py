"""A wake-up of an overloaded shared-memory link must not hang the supervisor's loop.

An overloaded connection's request ring is not read (backpressure) until its answers drain. If
the link was asleep when its eventfd fired (the client signalled, or a stale count), the loop
served it, then re-armed the sleep in a loop "while data is there", serving again: with the
ring full and nothing read, that loop never ended and the whole supervisor hung (found while
running tests/shm/test_transport.py::test_a_slow_consumer_stalls_only_itself, which failed
about one run in five with "no answer to SHM_ATTACH").
"""

from __future__ import annotations

import os
import time

import pytest

from edgebus import Admin, Producer
from edgebus.client.channel import connect
from edgebus.client.shm_rings import attach
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from tests.shm.helpers import read_answers

pytestmark = pytest.mark.integration


def test_waking_an_overloaded_sleeping_link_does_not_hang_the_loop(make_broker):
    b = make_broker({"limits": {"max_output_buffer_bytes": 1 << 20}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("slow", 1)
    with Producer(socket=b.socket) as p:
        p.send_batch("slow", [b"x" * 1000] * 100)
        p.flush(10)
    sock = connect(b.socket)
    link = attach(sock, 64 * 1024, 64 * 1024)
    fetch = M.FetchRequest(0, 1, 100_000, [M.FetchPartition("slow", 0, 0, 100_000)])
    time.sleep(0.2)  # the link goes to sleep (no traffic for longer than its spin window)
    # A burst of fetches written without a wake-up (wake_fd -1), then one wake-up: the
    # supervisor, woken on a sleeping link, reads until the answers overload the connection,
    # with requests left in the ring.
    corr = 0
    while link.req.write(ClientProtocol.encode_request(M.Api.FETCH, corr + 1, fetch), -1):
        corr += 1
    os.eventfd_write(link.efd_sup, 1)
    with Admin(socket=b.socket) as a:  # the loop still serves everyone else
        assert "slow" in a.list_topics()
    # The slow client reads at last: every request it wrote is answered (reading resumed).
    assert read_answers(link, corr) == corr
    link.close()
    sock.close()
