"""Parked (long-poll) fetches: a peer gone before its answer, a waiter on two partitions, many
parked fetches from one client.

Moved from tests/review/test_review_findings.py (the review that found these bugs); each test
failed on the code it was written against. Real supervisor processes; SIGSTOP/SIGCONT only orders
events deterministically (the kernel keeps queueing socket data meanwhile). A fetch is known to be
parked from the supervisor's status, not from a pause (0.3 s was not always enough under load).
"""

from __future__ import annotations

import os
import signal

import pytest

from edgebus.client.producer import Producer
from edgebus.protocol import messages as M
from edgebus.server.handlers.data import MAX_PARKED_FETCHES_PER_CONNECTION
from edgebus.testing import wait_for
from tests.server.rawclient import admin, cpu_seconds, produce, raw, read_frames, req


def parked(broker, connections: int) -> bool:
    """`connections` connections besides the asking Admin's, and one fetch parked among them."""
    with admin(broker) as a:
        st = a.status()
    return st["connections"] == connections + 1 and \
        sum(c["parked_fetches"] for c in st["clients"]) == 1


# --- 2. a peer gone before its parked fetch is answered: leaked connection, 100% CPU ---------
@pytest.mark.integration
def test_peer_gone_before_parked_fetch_answer_leaks_connection_and_spins(broker):
    """on_append answers a parked fetch whose client has just closed: send() gets EPIPE,
    Connection.queue sets closed=True, nobody calls Broker._close, and the loop skips READ events
    of closed connections: the EOF stays readable forever (busy loop) and the connection leaks."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    fetcher = raw(broker)
    fetcher.sendall(req(M.Api.FETCH, 1, M.FetchRequest(
        20_000, 1, 1 << 20, [M.FetchPartition("t", 0, 0, 1 << 20)])))
    producer = raw(broker)
    wait_for(lambda: parked(broker, 2), 30, "both accepted, the fetch parked")
    pid = broker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        producer.sendall(produce("t", 1, M.ACKS_WRITTEN))  # ready first ...
        fetcher.close()  # ... then the parked fetcher's EOF
    finally:
        os.kill(pid, signal.SIGCONT)
    assert read_frames(producer, 30.0, want=1), "no produce answer"

    def connections() -> int:
        with admin(broker) as a:
            return int(a.status()["connections"])

    # Expected: the fetcher's connection is closed (admin + producer remain) and the loop idles
    # (a busy loop takes most of a core: CPU time, not the machine's speed).
    wait_for(lambda: connections() == 2, 30, "the gone fetcher's connection closed")
    used = cpu_seconds(pid, 1.0)
    assert used < 0.3, f"supervisor CPU {used:.2f} s in 1 s"


# --- 4. a parked fetch on two partitions is answered twice ------------------------------------
@pytest.mark.integration
def test_parked_fetch_on_two_partitions_is_answered_twice_on_delete_topic(broker):
    """FetchWaiters.all() lists a waiter once per partition; delete_topic (and _shutdown) call
    complete_fetch for each listing, and complete_fetch sends even when the waiter is done."""
    with admin(broker) as a:
        a.create_topic("t", 2)
    s = raw(broker)
    s.sendall(req(M.Api.FETCH, 7, M.FetchRequest(
        20_000, 1, 1 << 20, [M.FetchPartition("t", 0, 0, 1 << 20),
                             M.FetchPartition("t", 1, 0, 1 << 20)])))
    wait_for(lambda: parked(broker, 1), 30, "the fetch parked")
    with admin(broker) as a:
        a.delete_topic("t")
    # A second answer would be sent in the delete's own dispatch, before the Admin's answer: once
    # the first is here, whatever else there is has arrived too (a short read takes it).
    answers = [f for f in read_frames(s, 30, want=1) + read_frames(s, 0.5)
               if f.correlation_id == 7]
    assert len(answers) == 1, f"fetch corr=7 was answered {len(answers)} times"


# --- 13. unbounded parked fetches per connection stall every producer ----------------------------
@pytest.mark.integration
def test_one_client_parking_many_fetches_stalls_other_producers(broker):
    """Nothing bounded parked fetches per connection (conn.parked was only counted), and on_append
    runs read_fetch (a pread) for every waiter of the partition: 30k pipelined long-poll fetches
    from one client made every append of every other client cost ~0.15 s of loop time. Checked
    by what causes it, not by the time (this asserted a median produce latency < 50 ms, a figure
    a loaded machine moves): once the supervisor has read a thousand of those fetches, it holds
    at most MAX_PARKED_FETCHES_PER_CONNECTION of them parked (the rest answered at once), and
    the other client's produces are acknowledged."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0)
    try:
        p.send("t", b"first").get(5)
        hostile = raw(broker)
        one = req(M.Api.FETCH, 1, M.FetchRequest(30_000, 1 << 30, 1, [M.FetchPartition("t", 0, 0, 1)]))
        hostile.sendall(one * 30_000)

        def hostile_read() -> dict | None:
            with admin(broker) as a:
                c = max(a.status()["clients"], key=lambda c: c["requests"])
            return c if c["requests"] >= 1000 else None

        # A thousand empty answers (~60 kB) fit the socket's buffers: it gets there unread.
        c = wait_for(hostile_read, 60, "the supervisor to read the hostile client's fetches")
        assert c["parked_fetches"] <= MAX_PARKED_FETCHES_PER_CONNECTION, c
        with admin(broker) as a:
            assert a.status()["parked_fetches"] <= MAX_PARKED_FETCHES_PER_CONNECTION
        for _ in range(5):
            p.send("t", b"x").get(30)
    finally:
        p.close(1)
