"""The supervisor freezes its start-up heap once it listens (edgebus/server/gcpolicy.py, issue 16:
a full collection of that heap on the event loop is a pause of tens of milliseconds on a small
board), and says so in its status; EDGEBUS_GC_FREEZE=0 leaves the heap in the collections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


def _gc(b: EmbeddedBroker) -> dict[str, Any]:
    with Admin(socket=b.socket, transport="socket") as a:
        doc: dict[str, Any] = a.status()["gc"]
    return doc


def test_the_started_supervisor_has_frozen_its_heap_once(broker: EmbeddedBroker) -> None:
    before = _gc(broker)
    # The modules and the config at least: thousands of objects, out of every later collection.
    assert before["frozen"] > 5_000
    assert len(before["collections"]) == 3 and len(before["collected"]) == 3
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("gc-freeze", 1)
    with Producer(socket=broker.socket, linger_ms=0) as p:
        for i in range(500):
            p.send("gc-freeze", b"%d" % i, partition=0)
        p.flush(30)
    c = Consumer(socket=broker.socket, auto_offset_reset="earliest")
    c.assign([TopicPartition("gc-freeze", 0)])
    got = 0
    for _ in range(100):
        got += sum(len(r) for r in c.poll(200).values())
        if got >= 500:
            break
    c.close()
    assert got == 500
    after = _gc(broker)
    # Frozen once, at the start: traffic adds nothing to it and does not thaw it (a frozen
    # object that reference counting frees, a replaced dict, leaves it: a few).
    assert before["frozen"] * 0.9 < after["frozen"] <= before["frozen"]
    assert all(a >= b for a, b in zip(after["collections"], before["collections"], strict=True))


def test_gc_freeze_0_leaves_the_heap_in_the_collections(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    b = make_broker().start(env={"EDGEBUS_GC_FREEZE": "0"})
    try:
        assert _gc(b)["frozen"] == 0
    finally:
        b.stop()
