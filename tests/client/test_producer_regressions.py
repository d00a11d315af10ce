"""Producer: raising callbacks, flush() and close() against batches in flight, the delivery
timeout of a sent batch, linger_ms=0 with concurrent callers.

Moved from tests/review/test_review_findings.py (the review that found these bugs); each test
failed on the code it was written against. Real supervisor processes; SIGSTOP/SIGCONT only orders
events deterministically (the kernel keeps queueing socket data meanwhile).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from edgebus.client.consumer import Consumer
from edgebus.client.producer import Producer
from edgebus.client.types import TopicPartition
from edgebus.errors import OperationTimeoutError
from edgebus.testing import wait_for
from tests.server.rawclient import admin  # the three files were one review's


# --- 7. a user callback that raises ---------------------------------------------------------------
@pytest.mark.integration
def test_raising_callback_fails_other_written_batches(broker):
    """(HEAD) BatchResult.done runs user callbacks on the reader thread without a guard: the
    exception ended AsyncChannel._read_loop, which then failed every other in-flight batch with
    the user's exception although the supervisor wrote them. Fixed in the working tree during the
    review (_finish catches callback exceptions); regression test."""
    with admin(broker) as a:
        a.create_topic("t", 2)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=50)
    try:
        f1 = p.send("t", b"a", partition=0)
        f1.add_callback(lambda md: 1 / 0)
        f2 = p.send("t", b"b", partition=1)
        try:
            md = f2.get(timeout=30)  # the fault raises at once; 30 s bounds a loaded machine
        except ZeroDivisionError:
            c = Consumer(socket=broker.socket, transport="socket")
            c.assign([TopicPartition("t", 1)])
            c.seek(TopicPartition("t", 1), 0)
            on_disk = [r.value for rs in c.poll(2000).values() for r in rs]
            c.close()
            pytest.fail(f"f2 failed with the other record's callback error; partition 1 holds {on_disk}")
        assert md.offset == 0
    finally:
        p.close(1)


@pytest.mark.integration
def test_raising_callback_makes_flush_hang(broker):
    """(HEAD) The exception left _finish before its notify_all: a flush() already waiting was
    never woken although nothing was pending any more. Fixed in the working tree during the
    review; regression test."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0)
    try:
        p.send("t", b"warm").get(5)
        pid = broker.proc.pid
        os.kill(pid, signal.SIGSTOP)  # so that flush() is waiting when the answer comes
        threading.Timer(0.5, os.kill, (pid, signal.SIGCONT)).start()
        f = p.send("t", b"a")
        f.add_callback(lambda md: 1 / 0)
        # Without a timeout, the hang is forever: the flush must end (the record is acknowledged
        # after ~0.5 s; 60 s is only how long the test waits to call it a hang).
        flush = threading.Thread(target=p.flush, daemon=True)
        flush.start()
        flush.join(60)
        assert not flush.is_alive(), "flush() was never woken although nothing was pending"
        assert f.succeeded()
    finally:
        p.close(1)


# --- 7b. flush() returns while a batch is between _pop_ready and _in_flight += 1 ----------------
@pytest.mark.integration
def test_flush_returns_before_the_batch_is_sent(broker):
    """(HEAD) The I/O thread pops ready batches under _cond but counted them in _in_flight only
    later, in _send_batch, after connecting (the reader thread's start releases the GIL) and
    building the batch. A flush() looking in between saw _open, _ready and _in_flight all empty
    and returned with the record neither sent nor acknowledged: on HEAD 29 of 30 fresh producers.
    Fixed in the working tree during the review (_pop_ready counts popped batches); this is
    the regression test."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    early = 0
    for _ in range(30):
        p = Producer(socket=broker.socket, transport="socket", linger_ms=20)
        try:
            f = p.send("t", b"a")
            p.flush(timeout=10)
            early += not f.done()
        finally:
            p.close(5)
    assert early == 0, f"flush() returned before the acknowledgement in {early} of 30 producers"


# --- 8. close(timeout) after a flush timeout: in-flight futures never resolve -------------------
@pytest.mark.integration
def test_close_after_flush_timeout_leaves_in_flight_future_unresolved(broker):
    """AsyncChannel.close() sets _closed before the reader exits, and the reader then drops its
    pending callbacks (`if not self._closed`). The in-flight batch's future is never resolved,
    the sender thread never exits (it waits for _in_flight == 0), and close() also spends its
    5 s join on it."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0)
    p.send("t", b"warm").get(5)
    pid = broker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        f = p.send("t", b"x")
        with pytest.raises(OperationTimeoutError):
            p.close(timeout=0.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while not f.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f.done(), "the in-flight future of a closed producer never resolves"


# --- 9. delivery_timeout_ms does not bound in-flight batches ------------------------------------
@pytest.mark.integration
def test_delivery_timeout_does_not_bound_in_flight_batch(broker):
    """delivery_timeout is only checked when a connection attempt fails (_requeue_or_expire):
    against a hung supervisor (socket open, no answers) a sent batch never fails."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0, delivery_timeout_ms=500)
    p.send("t", b"warm").get(5)
    pid = broker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        f = p.send("t", b"x")
        # Waited for, not a fixed 3 s: it ends once delivery_timeout_ms has passed (~0.5 s).
        done = wait_for(f.done, 10, "the future of a batch in flight to a hung supervisor, with "
                        "delivery_timeout_ms=500, to end", interval=0.01)
    finally:
        os.kill(pid, signal.SIGCONT)
        p.close(5)
    assert done


# --- 10. linger_ms=0: a record stranded when another caller holds the I/O lock -------------------
@pytest.mark.integration
def test_linger0_record_is_stranded_while_another_caller_sends(broker):
    """(Intermediate working tree) _send_now returned when the I/O lock was busy, trusting its
    holder to take the new batch; the holder may be another caller's _send_now, which never looks
    again, and once _finish stopped calling notify_all on every ack nothing woke the I/O thread:
    the record stayed in _open until a later send()/flush(). HEAD was saved by the notify_all;
    the working tree now seals and notifies in _send_now. Regression test for that pair."""
    with admin(broker) as a:
        a.create_topic("t", 1, {"max_message_bytes": 4 << 20})
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0,
                 max_request_size=4 << 20, batch_size=8 << 20)
    try:
        p.send("t", b"warm").get(5)
        pid = broker.proc.pid
        os.kill(pid, signal.SIGSTOP)  # the big send below blocks in sendall, holding the I/O lock
        try:
            big = threading.Thread(target=lambda: p.send("t", b"x" * (3 << 20)), daemon=True)
            big.start()
            deadline = time.monotonic() + 5
            while not p._io_lock.locked() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            small = p.send("t", b"small")
        finally:
            os.kill(pid, signal.SIGCONT)
        big.join(10)
        md = small.get(timeout=30)  # OperationTimeoutError: never sent (3 MB go first)
        assert md.offset >= 0
    finally:
        p.close(5)


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_linger0_records_fill_one_batch_while_max_in_flight_are_out(broker, transport):
    """linger_ms=0 sealed every record as a batch of its own even when no request could go
    (max_in_flight out): at 10,000 one-record sends a second on a loaded machine the records then
    waited in line, one batch sent per acknowledgement, and fell behind without bound (seconds of
    latency). They now keep filling one batch, sent when an acknowledgement frees a slot, with no
    flush() needed. Before: 202 batches for 202 records."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport=transport, linger_ms=0, max_in_flight=1)
    try:
        p.send("t", b"warm").get(5)
        pid = broker.proc.pid
        os.kill(pid, signal.SIGSTOP)  # the first record's acknowledgement cannot come
        try:
            futures = [p.send("t", str(i).encode()) for i in range(201)]
        finally:
            os.kill(pid, signal.SIGCONT)
        offsets = [f.get(timeout=10).offset for f in futures]  # no flush(): nothing is stranded
        batches = p.metrics()["producer-metrics"]["batch-send-total"]
    finally:
        p.close(5)
    assert offsets == list(range(1, 202))
    assert batches <= 4, f"{batches} batches for 202 records"
