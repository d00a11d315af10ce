"""A second held batch in one lazy wait of a socket producer's reader is armed again (found by
review27): the first hold's one-shot arm fired, but the answer that fired it was taken by the
producer's own reap before the reader ran on; the next hold then found "armed already", did not
arm, and the held records waited for the lazy wait's end (ACK_UNASKED_S, 1 s by default; 30 s
here). The reader's step after its poll is held back by a gate (a proxy of its epoll) to open
the window a GIL hand-off opens on a loaded machine; SIGSTOP/SIGCONT of the real supervisor
order the answers."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client import lazy_acks
from edgebus.client.socket_acks import LazySocketChannel
from edgebus.testing import wait_for
from tests.frozen import sigstop


class GatedEp:
    def __init__(self, real) -> None:
        self.real = real
        self.gate_on = False
        self.returned = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()

    def poll(self, *a):
        self.entered.set()
        r = self.real.poll(*a)
        if self.gate_on:
            self.returned.set()
            self.release.wait(30)
        return r

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.integration
def test_a_second_hold_after_the_producer_took_the_arms_answer_is_armed_again(broker, monkeypatch) -> None:
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)
    topic = "arm-race"
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(topic, 1)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0)
    pid = broker.proc.pid
    stopped = False
    try:
        p.send(topic, b"warm", partition=0).get(5)
        ch = p._channel
        assert isinstance(ch, LazySocketChannel)
        gep = GatedEp(ch._ep)
        ch._ep = gep
        time.sleep(0.3)
        p.send(topic, b"next", partition=0)
        wait_for(lambda: ch._lazy_wait and not ch._pending and gep.entered.is_set(), 10,
                 "reader in lazy wait via the proxy", interval=0.005)
        gep.entered.clear()
        wait_for(lambda: gep.entered.is_set() or ch._lazy_wait, 10, "again", interval=0.005)
        sigstop(pid)
        stopped = True
        gep.gate_on = True
        futs = [p.send(topic, b"one", partition=0), p.send(topic, b"two", partition=0)]
        futs += [p.send(topic, b"h%d" % i, partition=0) for i in range(3)]  # held, arms
        os.kill(pid, signal.SIGCONT)
        stopped = False
        assert gep.returned.wait(10), "the arm did not fire"
        sigstop(pid)  # answers of one/two are in our socket; reader gated
        stopped = True
        time.sleep(0.2)
        # the producer's thread takes those answers (a future asked: _poll_acks' reap), not the
        # reader, whose arm they fired
        futs[0].done()
        futs[1].done()
        time.sleep(0.2)
        # the producer's next sends: the first reaps the answers (and sends the held batch),
        # then two unread requests hold the rest again
        futs += [p.send(topic, b"x%d" % i, partition=0) for i in range(6)]
        time.sleep(0.2)
        with p._cond:
            held = sum(b.count for b in p._open.values())
        assert held, "the second hold did not happen (the case this test makes)"
        gep.gate_on = False
        gep.entered.clear()
        gep.release.set()
        gep.entered.wait(2)
        time.sleep(0.1)  # the reader back in its lazy poll before the supervisor answers
        os.kill(pid, signal.SIGCONT)
        stopped = False
        c = Consumer(socket=broker.socket, transport="socket", auto_offset_reset="earliest")
        got: list[bytes] = []
        try:
            c.assign([TopicPartition(topic, 0)])
            # 20 s, under the 30 s a stranded record waits (ACK_UNASKED_S above): a loaded
            # machine may take seconds to answer the resumed requests; 5 s left little margin.
            deadline = time.monotonic() + 20
            while len(got) < 13 and time.monotonic() < deadline:
                recs = c.poll(500).get(TopicPartition(topic, 0), [])
                got += [r.value for r in recs]
        finally:
            c.close()
        with p._cond:
            held = sum(b.count for b in p._open.values())
        assert len(got) == 13, f"{13 - len(got)} records stranded for 20 s (held: {held})"
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        p.close(5)
