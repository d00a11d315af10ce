"""The producer's one-record send() in C (edgebus/onestep.c, edgebus/client/c_send.py; issue 16).

Real supervisor processes and real producer threads; counts, not times. The C Sender is what
`producer.send` is when the extension is built; everything it does not cover goes to
Producer.send unchanged (the hand-over), and with EDGEBUS_PRODUCER_C_SEND=0 a producer process
runs the Python path only (tests/client/test_send_c.py compares the bytes of the three paths).
"""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.client import c_send
from edgebus.errors import (
    EdgebusError,
    OperationTimeoutError,
    RecordTooLargeError,
    UnknownPartitionError,
)
from edgebus.testing import wait_for

needs_cext = pytest.mark.skipif(not c_send.AVAILABLE,
                                reason="edgebus._onestep is not built, or EDGEBUS_PRODUCER_C_SEND=0")
TRANSPORTS = ["shm", "socket"]


def _topic(broker, name: str, partitions: int = 1, **configs: object) -> str:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(name, partitions, config=configs)
    return name


def _read_all(broker, topic: str, n: int, partition: int = 0) -> list:
    with Consumer(socket=broker.socket, transport="socket") as c:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, 0)
        got: list = []
        for _ in range(400):
            for rs in c.poll(timeout_ms=200).values():
                got += rs
            if len(got) >= n:
                break
    return got


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_paced_sends_are_made_in_c_with_under_one_python_call_each(broker, transport) -> None:
    """A paced plain send() is made by the C Sender, and the sending thread runs less than one
    Python call per send (the Python one-step send ran four: tests/client/test_fast_send.py);
    offsets, timestamps and the metrics are the Python path's."""
    topic = _topic(broker, f"paced-{transport}")
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        assert type(p.send).__name__ == "Sender"
        for _ in range(50):
            p.send(topic, b"w" * 100, partition=0)
            time.sleep(0.001)
        p.flush(10)
        c0, py0 = p.send.counts()  # type: ignore[attr-defined]
        calls = [0]

        def prof(frame, event, arg):
            if event == "call":
                calls[0] += 1

        futs = []
        sys.setprofile(prof)
        try:
            for i in range(1000):
                futs.append(p.send(topic, b"%04d" % i, partition=0, timestamp_ms=1_000 + i))
                time.sleep(0.001)  # paced: the supervisor has read each request before the next
        finally:
            sys.setprofile(None)
        c1, py1 = p.send.counts()  # type: ignore[attr-defined]
        p.flush(10)
        metas = [f.get(10) for f in futs]
        counts = p.metrics()["producer-metrics"]
    # The rest were held while the supervisor was behind (a loaded machine): the general path,
    # some thirty Python calls each at most; a send made in C runs about 0.5 (the reap's).
    assert c1 - c0 >= 500, (c1 - c0, py1 - py0)
    assert calls[0] < 1.5 * (c1 - c0) + 30 * (py1 - py0)
    assert [m.offset for m in metas] == list(range(50, 1050))
    assert [m.timestamp for m in metas] == [1_000 + i for i in range(1000)]
    assert counts["record-send-total"] == 1050 and counts["record-error-total"] == 0
    got = _read_all(broker, topic, 1050)
    assert [(r.value, r.timestamp) for r in got[50:1050]] == [(b"%04d" % i, 1_000 + i) for i in range(1000)]


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_callbacks_run_once_in_order_and_futures_answer(broker, transport) -> None:
    """Callbacks added to futures of C sends run once each, in send order, in whichever thread
    settles them (the C walk, a reap, the reader thread); get() gives the offsets."""
    topic = _topic(broker, f"cb-{transport}")
    seen: list[int] = []
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        futs = []
        for i in range(500):
            f = p.send(topic, b"%d" % i, partition=0)
            f.add_callback(lambda md, i=i: seen.append(i))
            futs.append(f)
            if i % 7 == 0:
                time.sleep(0.001)
        p.flush(10)
        offsets = [f.get(10).offset for f in futs]
        made_in_c = p.send.counts()[0]  # type: ignore[attr-defined]
    assert made_in_c > 0
    assert seen == list(range(500))
    assert offsets == list(range(500))


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sends_from_threads_with_flush_lose_and_repeat_nothing(broker, transport) -> None:
    """Four threads send while a fifth flushes and a sixth asks for metrics: every record is
    acknowledged once, with dense offsets, and each thread's records keep their order; each
    send was made by one path, and the C Sender still makes a send whose conditions hold.

    How many of the threads' sends C made is the machine's speed's: under qemu (~50x slower)
    each may find the supervisor two requests behind and go to Python (1 run in 3 had none),
    so it is not asserted here; that C makes the sends it can is (_send_when_quiet)."""
    topic = _topic(broker, f"threads-{transport}")
    per = 1500
    results: dict[int, list] = {}
    with Producer(socket=broker.socket, transport=transport, linger_ms=0,
                  request_timeout_ms=QUIET_TIMEOUT_MS) as p:
        stop = threading.Event()

        def sender(t: int) -> None:
            futs = []
            for i in range(per):
                futs.append(p.send(topic, b"%d:%d" % (t, i), partition=0))
                time.sleep(0.0005)  # paced: some sends find nothing held and go in C
            results[t] = [f.get(30) for f in futs]

        def flusher() -> None:
            while not stop.is_set():
                p.flush(30)
                p.metrics()
                time.sleep(0.001)

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(4)]
        fl = threading.Thread(target=flusher)
        fl.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        fl.join()
        p.flush(30)
        made_in_c, made_in_py = p.send.counts()  # type: ignore[attr-defined]
        counts = p.metrics()["producer-metrics"]
        assert made_in_c + made_in_py == 4 * per, (made_in_c, made_in_py)
        last = _send_when_quiet(p, topic, b"last").get(10).offset  # after the kicks, if any
    offsets = sorted(m.offset for ms in results.values() for m in ms)
    assert offsets == list(range(4 * per))
    assert counts["record-send-total"] == 4 * per and counts["record-error-total"] == 0
    got = _read_all(broker, topic, last + 1)
    for t in range(4):
        mine = [r.value for r in got if r.value.startswith(b"%d:" % t)]
        assert mine == [b"%d:%d" % (t, i) for i in range(per)]
    assert got[-1].value == b"last"


# A request timeout no test reaches: the I/O thread's next wake-up (the oldest deadline) is not
# during the test, so it cannot take the producer's lock in the middle of a quiet send.
QUIET_TIMEOUT_MS = 600_000


def _quiet(p: Producer) -> bool:
    """Whether nothing but this thread can change what the C Sender looks at before its next
    send: nothing in flight, open or ready; nobody in the producer's mutex, its I/O lock or the
    channel's lock; the I/O thread asleep until a deadline (finite: after a send's; none that a
    new send's deadline precedes, so the send wakes nobody), with no wake-up pending."""
    ch = p._channel
    if ch is None or ch.lost is not None or p._in_flight or p._open or p._ready:
        return False
    if not 0 < p._sender_wake_at < math.inf:  # awake (0), or nothing to wait for yet (inf)
        return False
    if p._io_lock.locked() or ch._lock.locked():
        return False
    if not p._mutex.acquire(blocking=False):  # an RLock: held by another thread (a reader
        return False  # settling the last acknowledgement, after its future was set)
    p._mutex.release()
    return True


def _send_when_quiet(p: Producer, topic: str, value: bytes):  # type: ignore[no-untyped-def]
    """A send once the C Sender's conditions hold (_quiet); asserts that C made it."""
    for _ in range(100):
        ok = wait_for(lambda: _quiet(p) or (p._sender_wake_at == math.inf and not p._in_flight),
                      30, "the producer quiet")
        if _quiet(p):
            break
        # The I/O thread sleeps with nothing to wait for: a send (which wakes it) gives it
        # its deadline; once it has slept again with that one, the next send wakes nobody.
        assert ok
        p.send(topic, b"kick", partition=0).get(30)
    else:
        raise AssertionError("the producer never became quiet")
    c0, py0 = p.send.counts()  # type: ignore[attr-defined]
    f = p.send(topic, value, partition=0)
    c1, py1 = p.send.counts()  # type: ignore[attr-defined]
    assert (c1 - c0, py1 - py0) == (1, 0), "a send whose conditions held went to Python"
    return f


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_send_whose_conditions_hold_is_made_in_c(broker, transport) -> None:
    """With the producer quiet before each send (_quiet: what the C Sender needs, and nothing
    that could change it meanwhile), every send is made in C, however slow the machine: the
    claim that the threads test above leaves to its timing."""
    topic = _topic(broker, f"quiet-{transport}")
    with Producer(socket=broker.socket, transport=transport, linger_ms=0,
                  request_timeout_ms=QUIET_TIMEOUT_MS) as p:
        p.send(topic, b"warm", partition=0).get(30)  # the partition's metadata
        last = [_send_when_quiet(p, topic, b"%d" % i).get(30).offset for i in range(20)][-1]
    got = [r.value for r in _read_all(broker, topic, last + 1) if r.value != b"kick"]
    assert got == [b"warm"] + [b"%d" % i for i in range(20)]


def _hold(lock, held: threading.Event, release: threading.Event) -> None:
    with lock:
        held.set()
        release.wait(30)


def _send_into(p: Producer, topic: str, out: list) -> None:
    out.append(p.send(topic, b"during", partition=0))


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_held_mutex_or_io_lock_hands_the_send_to_python(broker, transport) -> None:
    """While another thread holds the producer's mutex (or its I/O lock) the C Sender changes
    nothing and hands the call to Producer.send, which waits for the lock as before."""
    topic = _topic(broker, f"handover-{transport}")
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        p.send(topic, b"first", partition=0).get(10)
        for lock in (p._mutex, p._io_lock):
            c0, py0 = p.send.counts()  # type: ignore[attr-defined]
            held, release = threading.Event(), threading.Event()
            t = threading.Thread(target=_hold, args=(lock, held, release))
            t.start()
            held.wait(10)
            out: list = []
            s = threading.Thread(target=_send_into, args=(p, topic, out))
            s.start()
            s.join(0.3)  # it may wait for the lock (the mutex) or queue (the I/O lock)
            release.set()
            t.join()
            s.join(10)
            assert out and out[0].get(10).offset >= 1
            c1, py1 = p.send.counts()  # type: ignore[attr-defined]
            assert (c1 - c0, py1 - py0) == (0, 1)
        p.send(topic, b"after", partition=0).get(10)
    assert [r.value for r in _read_all(broker, topic, 4)] == [b"first", b"during", b"during", b"after"]


@needs_cext
@pytest.mark.integration
def test_errors_and_other_arguments_are_the_python_paths(broker) -> None:
    """What the C Sender does not make (another type, a serializer, headers, no partition
    known yet, keywords it does not know) is Producer.send's: the same results and errors."""
    topic = _topic(broker, "args")
    big = _topic(broker, "args-small", max_message_bytes=200)
    with Producer(socket=broker.socket, linger_ms=0) as p:
        with pytest.raises(TypeError, match="value must be bytes"):
            p.send(topic, 123)
        with pytest.raises(UnknownPartitionError):
            p.send(topic, b"x", partition=3)
        with pytest.raises(TypeError):
            p.send(topic, b"x", nonsense=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            p.send(topic, b"x", value=b"y")  # type: ignore[misc]
        with pytest.raises(RecordTooLargeError):
            p.send(big, b"x" * 300, partition=0)
        fs = [p.send(topic, "text", partition=0), p.send(topic, bytearray(b"ba"), key="k"),
              p.send(topic=topic, value=b"kw", partition=0, timestamp_ms=5),
              p.send(topic, b"h", headers=[("a", b"1")], partition=0), p.send(topic, None, partition=0)]
        p.value_serializer = lambda v: json.dumps(v).encode()
        fs.append(p.send(topic, {"a": 1}, partition=0))
        p.flush(10)
        assert all(f.succeeded() for f in fs)
    got = _read_all(broker, topic, len(fs))
    assert [r.value for r in got] == [b"text", b"ba", b"kw", b"h", None, b'{"a": 1}']
    assert got[1].key == b"k" and got[2].timestamp == 5 and got[3].headers == [("a", b"1")]


@needs_cext
def test_a_subclass_that_overrides_send_keeps_it(broker) -> None:
    class Mine(Producer):
        def send(self, *a, **k):  # type: ignore[no-untyped-def]
            return super().send(*a, **k)

    with Mine(socket=broker.socket, linger_ms=0) as p:
        assert "send" not in vars(p)
    with Producer(socket=broker.socket, linger_ms=0) as p:
        assert "send" in vars(p)
    with Producer(socket=broker.socket, linger_ms=5) as p:
        assert "send" not in vars(p)  # not a one-step producer: no C Sender


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_hundred_thousand_sends_leak_no_references(broker, transport) -> None:
    """200,000 sends through the C Sender and its acknowledgement walk: the references to the
    value, key and topic objects it was given, the number of objects the collector tracks and
    the process's RSS are where they were after the first 20,000."""
    topic = _topic(broker, f"leak-{transport}", retention_bytes=64 * 1024 * 1024)
    value, key = b"v" * 100, b"key"
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        def burst(n: int) -> None:
            for i in range(n):
                p.send(topic, value, key=key, partition=0)
                if i % 4 == 3:
                    p.flush(30)  # the supervisor keeps up: sends stay one-step (the C path)

        burst(20_000)
        p.flush(30)
        gc.collect()
        refs = (sys.getrefcount(value), sys.getrefcount(key), sys.getrefcount(topic))
        objs, rss = len(gc.get_objects()), _rss_kib()
        burst(200_000)
        p.flush(30)
        gc.collect()
        made_in_c = p.send.counts()[0]  # type: ignore[attr-defined]
        assert (sys.getrefcount(value), sys.getrefcount(key), sys.getrefcount(topic)) == refs
        assert len(gc.get_objects()) - objs < 1_000
        assert _rss_kib() - rss < 8 * 1024  # KiB; a leaked future per send alone would be ~40 MiB
    assert made_in_c > 40_000  # at least the first send after each flush (more on a quiet machine)


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_python_path_alone_with_the_switch_off(broker, transport) -> None:
    """EDGEBUS_PRODUCER_C_SEND=0: a producer process's send() is Producer.send, and its records
    are the same as the C Sender's."""
    topic = _topic(broker, f"switch-{transport}")
    code = (
        "import sys, edgebus\n"
        "from edgebus import Producer\n"
        "from edgebus.client import fast_acks\n"
        "p = Producer(socket=sys.argv[1], transport=sys.argv[2], linger_ms=0)\n"
        "assert 'send' not in vars(p), 'the C Sender is installed'\n"
        "assert fast_acks.deliver is fast_acks.py_deliver\n"
        "fs = [p.send(sys.argv[3], b'%d' % i, partition=0, timestamp_ms=i) for i in range(300)]\n"
        "p.flush(10)\n"
        "print(sum(f.get(10).offset for f in fs))\n"
        "p.close()\n")
    env = {**os.environ, "EDGEBUS_PRODUCER_C_SEND": "0"}
    out = subprocess.run([sys.executable, "-c", code, broker.socket, transport, topic], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == sum(range(300))
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        fs = []
        for i in range(300):
            fs.append(p.send(topic, b"%d" % i, partition=0, timestamp_ms=i))
            p.flush(10)  # each one-step: the supervisor keeps up
        assert p.send.counts()[0] > 0  # type: ignore[attr-defined]
    got = _read_all(broker, topic, 600)
    assert [(r.value, r.timestamp) for r in got] == [(b"%d" % i, i) for i in range(300)] * 2


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_threads_sending_to_two_topics_while_collections_switch_threads(broker, transport) -> None:
    """Two threads send to two topics while every allocation runs a collection whose callback
    lets the other thread run (gc threshold 1, time.sleep(0)): a collection inside the C
    Sender's allocations switches threads between its choice of the partition's class and
    PRODUCE prefix and its write, so each send must use its own (not the cache the other
    thread just changed): every record is in its own topic, in order."""
    topics = [_topic(broker, f"gc-{transport}-{i}") for i in range(2)]
    n = 600
    results: dict[int, list] = {}
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        def sender(i: int) -> None:
            futs = []
            for k in range(n):
                futs.append(p.send(topics[i], b"%d:%d" % (i, k), partition=0))
                time.sleep(0.0002)  # some sends find nothing held: the C path
            results[i] = [f.get(30) for f in futs]

        def yield_(phase: str, info: dict) -> None:
            if phase == "start":
                time.sleep(0.00005)  # lets the other thread run (and send) here

        old = gc.get_threshold()
        gc.callbacks.append(yield_)
        gc.set_threshold(1, 1, 1)
        try:
            threads = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            gc.set_threshold(*old)
            gc.callbacks.remove(yield_)
        p.flush(30)
        counts = p.send.counts()  # type: ignore[attr-defined]
    assert sum(counts) == 2 * n
    for i in range(2):
        assert [m.topic for m in results[i]] == [topics[i]] * n
        got = _read_all(broker, topics[i], n)
        assert [r.value for r in got] == [b"%d:%d" % (i, k) for k in range(n)]


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_keyed_sends_are_made_in_c_on_the_keys_partitions(broker, transport) -> None:
    """A keyed send without a partition is made in C too, on partition_for_key's partition
    (zlib.crc32 of the key modulo the count; keys must not move between the two paths): every
    record lands where the Python path would have put it, in send order per partition."""
    from edgebus.client.types import partition_for_key
    topic = _topic(broker, f"keyed-{transport}", partitions=3)
    keys = [b"kettle-%d" % i for i in range(60)] + [b"", b"\x00" * 40, bytes(range(256))]
    with Producer(socket=broker.socket, transport=transport, linger_ms=0) as p:
        futs = [(k, p.send(topic, b"v" + k, key=k)) for k in keys]
        p.flush(10)
        placed = [(k, f.get(10).partition) for k, f in futs]
        made_in_c = p.send.counts()[0]  # type: ignore[attr-defined]
    assert made_in_c > 0
    assert placed == [(k, partition_for_key(k, 3)) for k in keys]
    for part in range(3):
        want = [b"v" + k for k in keys if partition_for_key(k, 3) == part]
        assert [r.value for r in _read_all(broker, topic, len(want), part)] == want


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_limits_changed_after_start_bind_the_c_sends(broker, transport) -> None:
    """max_in_flight and buffer_memory set on a running producer bind its C sends as they bind
    Producer.send's: the C Sender read copies made when it was installed (before: two of the
    five sends made in C, the hold window of one unread request letting the second go, and the
    over-full buffer's record taken)."""
    topic = _topic(broker, f"limits-{transport}")
    with Producer(socket=broker.socket, transport=transport, linger_ms=0, max_block_ms=300) as p:
        p.send(topic, b"warm", partition=0).get(10)
        p.max_in_flight = 1
        os.kill(broker.pid, signal.SIGSTOP)  # nothing answered: the first send stays in flight
        try:
            c0, py0 = p.send.counts()  # type: ignore[attr-defined]
            futs = [p.send(topic, b"%d" % i, partition=0) for i in range(5)]
            c1, py1 = p.send.counts()  # type: ignore[attr-defined]
            assert (c1 - c0, py1 - py0) == (1, 4)
            assert p._in_flight == 1  # the other four wait in a batch for the answer
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert [f.get(10).offset for f in futs] == [1, 2, 3, 4, 5]
        p.max_in_flight = 32
        p.buffer_memory = 200  # one 100-byte record (122 bytes queued) fits, two do not
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            c0, _ = p.send.counts()  # type: ignore[attr-defined]
            first = p.send(topic, b"a" * 100, partition=0)
            with pytest.raises(OperationTimeoutError, match="buffer_memory is full"):
                p.send(topic, b"b" * 100, partition=0)
            assert p.send.counts()[0] - c0 == 1  # type: ignore[attr-defined]
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert first.get(10).offset == 6
    assert [r.value for r in _read_all(broker, topic, 7)][-1] == b"a" * 100


@needs_cext
@pytest.mark.integration
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failed_allocation_in_a_c_send_raises_memory_error_and_loses_nothing(broker,
                                                                              transport) -> None:
    """Each allocation of a C send and of the acknowledgements' intake it makes at REAP_AT in
    flight (edgebus/onestep.c, the checks its test switch `_fail_allocation` counts) made to
    fail in turn: the send raises MemoryError, or returns a future (a failed intake ends the
    connection, whose loss fails what it had in flight); every future ends, with its record at
    its offset or an error; nothing stays counted in flight or queued; the value given holds no
    reference more than before. Before: a failed allocation after the write left the record out
    of the in-flight count (its answer then made the count negative: flush never finished), and
    one in the intake's settling dropped the answers it had taken (their futures never ended)."""
    from edgebus import _onestep
    topic = _topic(broker, f"nomem-{transport}")
    # Made per run, not a constant of the function (b"m" * 100 is folded into one, shared by
    # both transports' runs): a reference the other run still held when this one counted (its
    # threads ending late on a loaded machine, or its garbage) went away during this run
    # (3 == 4 under load: one FEWER at the end, no leak).
    value = b"".join([b"m"] * 100)
    with Producer(socket=broker.socket, transport=transport, linger_ms=0, retries=0) as p:
        p.send(topic, b"warm", partition=0).get(10)
        p.send(topic, b"warm", partition=0)  # the first C send makes the channel's handles
        time.sleep(0.15)  # get()'s hurry window over: answers wait for a send's reap
        refs = sys.getrefcount(value)
        futs: list = []
        raised = failed = k = misses = 0
        while k < 200:
            for _ in range(4):  # paced: at the trial, REAP_AT or more in flight, answered
                futs.append(p.send(topic, value, partition=0))
                time.sleep(0.002)
            hits0 = _onestep._fail_allocation(k)[1]
            try:
                futs.append(p.send(topic, value, partition=0))
            except MemoryError:
                raised += 1
            finally:
                hit = _onestep._fail_allocation(-1)[1] > hits0
            failed += hit
            if hit:
                k, misses = k + 1, 0
                continue
            # No k-th check in this send: past the last allocation checked, or (loaded machine)
            # the answers had not come in the 8 ms paced, so its intake had nothing to allocate
            # for (CI-like load: 6 hits, then a miss at the intake's first). The same k again.
            misses += 1
            if misses == 5:
                break  # five sends in a row: past the last
        else:
            pytest.fail("a send checks more than 200 allocations")
        offsets = []
        errors: list[BaseException] = []
        for f in futs:
            try:
                offsets.append(f.get(15).offset)
            except OperationTimeoutError:
                raise  # no outcome: a lost record
            except (EdgebusError, MemoryError) as e:
                errors.append(e)  # an outcome: the loss of the connection a failed intake ended
        p.flush(15)
        assert (p._in_flight, p._queued_bytes, p._sent) == (0, 0, {})
        # A failed future keeps its exception, and that its traceback, whose frames (the send's,
        # e.g. Producer._send_held where a loaded run's sends went) hold the value given: the
        # futures' reference, not a leak (under load 3 == 2 on the socket, 2 in 30 trials; the
        # count came back with the futures dropped, and 0 in 60 with the tracebacks cleared).
        seen: set[int] = set()
        for x in errors:
            err: BaseException | None = x
            while err is not None and id(err) not in seen:
                seen.add(id(err))
                err.__traceback__ = None
                err = err.__cause__ or err.__context__
        gc.collect()  # a reference the collector can free (this run's garbage) is no leak
        assert sys.getrefcount(value) == refs
        p.send(topic, b"last", partition=0).get(10)
    assert raised > 0 and failed >= raised and failed > 8, (raised, failed)
    got = {r.offset: r.value for r in _read_all(broker, topic, max(offsets) + 2)}
    assert all(got[o] == value for o in offsets)
