"""A plain producer without callbacks takes its acknowledgements when asked (issue 16, prodack16):
its reader's unsignalled wait has no timer, so a steady sender's reader is not woken at all, and
every way of learning an outcome still learns it: a future's done() (and succeeded(), failed(),
exception), a callback added later, get() from a thread that blocked before the connection was
opened, the I/O thread's request timeout (an answered record is not timed out), the supervisor's
death (every record in flight gets an outcome with nobody asking). Producers whose records wait
for an acknowledgement before they are sent (ordered retries) still get them unasked.

Real supervisor processes, real kill -9; counts (the reader's voluntary context switches, from
/proc), not times.
"""

from __future__ import annotations

import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client import lazy_acks
from edgebus.client.shm_channel import ShmAsyncChannel
from edgebus.client.socket_acks import LazySocketChannel
from edgebus.errors import EdgebusError
from edgebus.testing import wait_for
from tests.held import abandon, written_and_held

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("transport", ["shm", "socket"])]


def _switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def _topic(broker, name: str) -> str:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(name, 1)
    return name


def _lazy_channel(p: Producer, transport: str) -> ShmAsyncChannel | LazySocketChannel:
    ch = p._channel
    assert isinstance(ch, ShmAsyncChannel if transport == "shm" else LazySocketChannel)
    return ch


def test_a_steady_sender_without_callbacks_does_not_wake_its_reader(broker, transport,
                                                                   monkeypatch) -> None:
    """Before: the reader's unsignalled wait ended ACK_LAZY_GAPS send gaps after the last send,
    at most STEADY_S (20 ms): with sends 10 ms apart it woke about every second send (n = 100:
    ~50 switches) to take what the sends had not. Now it has no timer (ACK_UNASKED_S aside, made
    long here): woken only for a record held behind a request the supervisor has not read yet,
    which the test rules out."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)  # the bound's own wake-ups aside
    topic = _topic(broker, f"asked-steady-{transport}")
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        ch = _lazy_channel(p, transport)
        tid = ch._reader.native_id
        assert tid is not None
        time.sleep(0.3)  # get()'s hurry window (URGENT_S, 0.1 s: every answer wakes) is over
        n = 100
        before = _switches(tid)
        futs = []
        for i in range(n):
            futs.append(p.send(topic, b"%d" % i, partition=0))
            # The supervisor has read it before the next send: no record is held behind it
            # (a hold wakes the reader for its one acknowledgement, by design; on a loaded
            # machine that is most of the wake-ups this test would count).
            wait_for(lambda: not ch.unread(), 10, "the supervisor to read the request",
                     interval=0.0005)
            time.sleep(0.01)
        woken = _switches(tid) - before
        offsets = [f.get(10).offset for f in futs]
    finally:
        p.close(5)
    assert offsets == list(range(1, n + 1))
    assert woken <= n // 10, f"the reader was woken {woken} times for {n} sends"


def test_done_sees_an_acknowledgement_nobody_was_woken_for(broker, transport, monkeypatch) -> None:
    """The sends stop and nobody blocks: done() takes the acknowledgement itself (the reader
    sleeps on, without a timer), and so do succeeded(), exception and a batch's done()."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)
    topic = _topic(broker, f"asked-done-{transport}")
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        fut = p.send(topic, b"one", partition=0)
        batch = p.send_batch(topic, [b"a", b"b"], partition=0)
        wait_for(fut.done, 10, "done() of a record acknowledged with nobody woken",
                 interval=0.01)
        assert fut.succeeded() and not fut.failed() and fut.exception is None
        wait_for(batch.done, 10, "done() of a batch", interval=0.01)
        assert fut.get(0).offset == 1
        assert [m.offset for m in batch.get(0)] == [2, 3]
        assert p.metrics()["producer-metrics"]["record-send-total"] == 4
    finally:
        p.close(5)


def test_a_callback_added_later_runs_with_nobody_asking(broker, transport, monkeypatch) -> None:
    """The record's acknowledgement waits with nobody woken for it; a callback added then must
    run without a send, a get() or a flush (the reader's waits are timed from then on)."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)  # only the callback may end the wait
    topic = _topic(broker, f"asked-callback-{transport}")
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        time.sleep(0.3)  # get()'s hurry window (URGENT_S) is over ...
        p.send(topic, b"next", partition=0)  # ... and this answer ends the signalled wait
        ch = _lazy_channel(p, transport)
        wait_for(lambda: ch._lazy_wait, 10, "the reader in its unsignalled wait", interval=0.005)
        fut = p.send(topic, b"late", partition=0)
        time.sleep(0.1)  # the acknowledgement is there by now; nobody takes it
        assert not fut._batch._done  # (before: the reader's timer had delivered it)
        ran = threading.Event()
        got: list[int] = []
        fut.add_callback(lambda md: (got.append(md.offset), ran.set()))
        assert ran.wait(10), "the callback never ran"
        assert got == [2]
        # later callbacks of later records run unasked too (timed waits from now on)
        again = threading.Event()
        p.send(topic, b"last", partition=0).add_callback(lambda md: again.set())
        assert again.wait(10)
    finally:
        p.close(5)


def test_a_thread_blocked_before_the_connection_opened_gets_its_answer(broker, transport,
                                                                      monkeypatch) -> None:
    """get() blocks while the record lingers and the data connection is not open yet: the
    channel opened later must count that waiter (the producer's count is shared with it), or
    its reader would wait, untimed, for someone to ask."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)
    topic = _topic(broker, f"asked-early-{transport}")
    p = Producer(socket=broker.socket, transport=transport, linger_ms=300)
    try:
        assert p._channel is None
        fut = p.send(topic, b"early", partition=0)
        assert fut.get(10).offset == 0
    finally:
        p.close(5)


def test_an_answered_record_is_not_timed_out(broker, transport, monkeypatch) -> None:
    """The I/O thread's request timeout comes while the record's answer waits with nobody woken
    for it: it takes the answers first, so the record succeeds instead of failing."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)
    topic = _topic(broker, f"asked-timeout-{transport}")
    # 3 s, not 200 ms: the answer must come before the timeouts for this case to exist, and a
    # supervisor late by 0.3 s (SIGSTOPped that long, as a loaded machine deschedules it) made
    # the 200 ms timeout fail the record, rightly, as unanswered.
    timeout_s = 3.0
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0,
                 request_timeout_ms=timeout_s * 1000, delivery_timeout_ms=timeout_s * 1000)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        sent = time.monotonic()
        fut = p.send(topic, b"quiet", partition=0)
        # Appended is answered (the answer goes in the same turn), seen on another connection.
        with Admin(socket=broker.socket, transport="socket") as a:
            wait_for(lambda: a.describe_topic(topic).partitions[0].log_end_offset == 2, 60,
                     "the record's append")
        assert time.monotonic() - sent < timeout_s, "answered after the timeouts: no case here"
        time.sleep(max(0.0, sent + timeout_s + 0.4 - time.monotonic()))  # past both, unasked
        assert fut.get(5).offset == 1  # OperationTimeoutError: timed out although answered
    finally:
        p.close(5)


def test_the_supervisors_death_settles_records_nobody_asked_about(broker, transport,
                                                                  monkeypatch) -> None:
    """kill -9 while records are in flight and nobody asks: the reader's untimed wait ends on
    the connection's hang-up and the channel is lost, every record acknowledged (a prefix, in
    order) or failed."""
    monkeypatch.setattr(lazy_acks, "ACK_UNASKED_S", 30.0)  # the hang-up, not the bound
    topic = _topic(broker, f"asked-dies-{transport}")
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        ch = _lazy_channel(p, transport)
        futs = []
        for i in range(20):
            futs.append(p.send(topic, b"%d" % i, partition=0))
            time.sleep(0.001)
        broker.kill9()
        sent, _held = written_and_held(p, ch, futs)  # the held ones wait for a reconnection
        assert all(f._batch._done for f in sent), "a record in flight was left without an outcome"
        outcomes = [f.get(0).offset if f.succeeded() else type(f.exception).__name__
                    for f in sent]
    finally:
        abandon(p)
    acked = [o for o in outcomes if isinstance(o, int)]
    assert acked == list(range(1, len(acked) + 1))
    assert all(isinstance(f.exception, EdgebusError) for f in sent if not f.succeeded())


def test_ordered_retries_send_a_held_record_with_nobody_asking(broker, transport) -> None:
    """With ordered retries one batch of a partition is in flight at a time: the next waits
    for its acknowledgement, which nobody asks for here. Such a producer keeps the timed waits,
    so the held record reaches the log anyway."""
    topic = _topic(broker, f"asked-ordered-{transport}")
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0, retries=3)
    try:
        p.send(topic, b"warm", partition=0).get(5)
        for i in range(2):
            p.send(topic, b"held-%d" % i, partition=0)  # the second waits for the first's ack
        with Consumer(socket=broker.socket, auto_offset_reset="earliest") as c:
            c.assign([TopicPartition(topic, 0)])
            seen: list[bytes] = []

            def got_all() -> bool:
                for recs in c.poll(200).values():
                    seen.extend(r.value for r in recs)
                return len(seen) == 3

            wait_for(got_all, 10, "both records in the log with nobody asking")
        assert seen == [b"warm", b"held-0", b"held-1"]
    finally:
        p.close(5)
