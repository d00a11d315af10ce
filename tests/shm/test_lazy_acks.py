"""Lazy acknowledgements on the shared-memory producer channel: while a producer sends steadily
and nobody waits, its reader collects acknowledgements every ACK_LAZY_S instead of being woken per
response; anyone who waits hurries them. Nothing may be lost or left unresolved either way."""

from __future__ import annotations

import time

import pytest

from edgebus import Admin, Producer
from edgebus.client import lazy_acks
from edgebus.client.shm_channel import ShmAsyncChannel

pytestmark = pytest.mark.integration


def _producer(broker, **kw) -> Producer:
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", 1)
    return Producer(socket=broker.socket, transport="shm", linger_ms=0, **kw)


def test_steady_sends_resolve_every_callback_with_dense_offsets(broker) -> None:
    p = _producer(broker)
    got: dict[int, int] = {}
    n = 3000
    for i in range(n):
        p.send("t", b"v%d" % i, partition=0).add_callback(lambda md, i=i: got.__setitem__(i, md.offset))
        if i % 50 == 0:
            time.sleep(0.0005)  # steady, not one burst: the reader goes lazy between sends
    p.flush(30)
    assert isinstance(p._channel, ShmAsyncChannel)
    assert sorted(got) == list(range(n))
    assert [got[i] for i in range(n)] == list(range(n))
    p.close()


def test_waiting_on_a_future_ends_a_lazy_wait(broker, monkeypatch) -> None:
    # A lazy wait far longer than the get() timeout: only the nudge from hurry() can end it in time.
    monkeypatch.setattr(lazy_acks, "ACK_LAZY_S", 30.0)
    monkeypatch.setattr(lazy_acks, "URGENT_S", 0.0)  # every wait must nudge, not ride on a window
    p = _producer(broker)
    for i in range(20):
        p.send("t", b"x", partition=0)
        time.sleep(0.002)
        fut = p.send("t", b"y", partition=0)
        time.sleep(0.002)  # the reader is now in its unsignalled 30 s wait
        md = fut.get(5)  # OperationTimeoutError here means the reader was not nudged
        assert md.offset == 2 * i + 1
    p.close(10)


def test_flush_and_close_do_not_wait_out_a_lazy_wait(broker, monkeypatch) -> None:
    monkeypatch.setattr(lazy_acks, "ACK_LAZY_S", 30.0)
    p = _producer(broker)
    futs = [p.send("t", b"z", partition=0) for _ in range(100)]
    p.flush(5)  # OperationTimeoutError if flush did not hurry the reader
    assert [f.get(0).offset for f in futs] == list(range(100))
    p.close(5)


def test_lazy_acks_off_still_deliver(broker, monkeypatch) -> None:
    monkeypatch.setattr(lazy_acks, "ACK_LAZY_S", 0.0)
    p = _producer(broker)
    assert [p.send("t", b"w", partition=0).get(5).offset for _ in range(50)] == list(range(50))
    p.close()


def test_a_waiter_is_hurried_until_its_acknowledgement_comes(broker, monkeypatch) -> None:
    # The nudge of get() comes while the record still lingers unsent: the reader wakes, finds
    # nothing and must not go back to an unsignalled wait while get() still waits (it did when
    # hurrying was one nudge plus a time window: the acknowledgement then sat out the 30 s).
    monkeypatch.setattr(lazy_acks, "ACK_LAZY_S", 30.0)
    monkeypatch.setattr(lazy_acks, "URGENT_S", 0.0)
    monkeypatch.setattr(lazy_acks, "STEADY_S", 3600.0)  # every wait would be a lazy one
    with Admin(socket=broker.socket) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport="shm", linger_ms=300)
    p.send("t", b"x", partition=0)
    p.flush(5)
    assert isinstance(p._channel, ShmAsyncChannel)
    for i in range(3):
        fut = p.send("t", b"y", partition=0)  # lingers 300 ms: sent well after get() nudged
        assert fut.get(5).offset == i + 1  # OperationTimeoutError: the waiter was forgotten
    p.close(5)
