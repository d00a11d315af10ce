"""REPLICA_FETCH's long poll (docs/FORMAT.md 7.9): the replicator's wake-up after an idle round
is the durable read it ships, not a FETCH whose batch it would read again."""

from __future__ import annotations

import threading

import pytest

from edgebus import Admin, BatchReader, Producer

from .conftest import wait_for

pytestmark = pytest.mark.integration


def test_a_long_poll_parks_then_answers_with_the_durable_batch(broker):
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", 2)
    got: dict = {}
    with BatchReader(broker.socket) as r:
        positions = {("t", 0): 0, ("t", 1): 0}
        # Nothing anywhere: the wait runs out and the answer has no data (and no error).
        empty = r.read_durable(positions, max_wait_ms=200)
        assert all(p.error is None and not p.data for p in empty.values())

        def poll() -> None:
            got.update(r.read_durable(positions, max_wait_ms=20_000))

        t = threading.Thread(target=poll)
        t.start()
        with Admin(socket=broker.socket) as a:  # parked, not answered: nothing to read yet
            wait_for(lambda: a.status()["parked_fetches"] == 1, what="the long poll to park")
        assert t.is_alive()
        with Producer(socket=broker.socket, acks="written") as p:
            md = p.send("t", b"wake up", partition=1).get(10)
        t.join(30)
        assert not t.is_alive()
    assert md.offset == 0
    one = got[("t", 1)]
    assert one.error is None and one.first_offset == 0 and one.next_offset == 1
    assert one.durable_end >= 1, "answered with durable data: synced first"
    assert [b.data for b in one.batches()] == [b.data for b in
                                               BatchReader(broker.socket).read("t", 1, 0)[0]]
    assert not got[("t", 0)].data
