"""Review findings: each test demonstrates one correctness bug. Tests marked (HEAD) in their
docstring fail on the committed code and pass on the working tree, where the bug was fixed while
the review ran; they stay as regression tests. All others fail on the working tree as reviewed.

Real supervisor processes (edgebus.testing.EmbeddedBroker), real clients, raw protocol frames where
a stock client cannot produce the situation. SIGSTOP/SIGCONT of the supervisor is used only to
order events deterministically (the kernel keeps queueing socket data and readiness meanwhile).
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from edgebus import batch as B
from edgebus import format as F
from edgebus.client.admin import Admin
from edgebus.client.consumer import Consumer
from edgebus.client.producer import Producer
from edgebus.client.types import TopicPartition
from edgebus.errors import OperationTimeoutError, ProtocolError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame, ServerProtocol
from edgebus.testing import EmbeddedBroker

REPO = Path(__file__).resolve().parents[2]


# --- helpers -----------------------------------------------------------------------------------
def admin(b: EmbeddedBroker) -> Admin:
    return Admin(socket=b.socket, transport="socket")


def raw(b: EmbeddedBroker) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b.socket)
    return s


def req(api: int, corr: int, body: M.Message) -> bytes:
    return ClientProtocol.encode_request(api, corr, body)


def one_batch(value: bytes = b"x") -> bytes:
    ts = time.time_ns() // 1_000_000
    return B.build_batch([B.encode_record(ts, None, value, ())], ts, ts)


def produce(topic: str, corr: int, acks: int, partition: int = 0, value: bytes = b"x") -> bytes:
    return req(M.Api.PRODUCE, corr, M.ProduceRequest(topic, partition, acks, one_batch(value)))


def read_frames(s: socket.socket, seconds: float, want: int | None = None) -> list[ResponseFrame]:
    """Every response frame that arrives within `seconds` (or until `want` frames)."""
    proto = ClientProtocol()
    out: list[ResponseFrame] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (want is None or len(out) < want):
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        proto.receive_data(data)
        while (f := proto.next_response()) is not None:
            out.append(f)
    return out


def inq(s: socket.socket) -> int:
    """Bytes waiting in our receive queue (FIONREAD), without reading them."""
    buf = array.array("i", [0])
    fcntl.ioctl(s.fileno(), 0x541B, buf)  # FIONREAD
    return buf[0]


def cpu_seconds(pid: int, over: float) -> float:
    p = psutil.Process(pid)
    t0 = p.cpu_times()
    time.sleep(over)
    t1 = p.cpu_times()
    return (t1.user + t1.system) - (t0.user + t0.system)


# --- 1. durable produce + delete topic in one loop turn: the supervisor dies --------------------
@pytest.mark.integration
def test_durable_produce_then_delete_topic_in_one_turn_kills_supervisor(broker):
    """GroupCommitter.start() calls begin_sync() on a partition that delete_topic abandoned in
    the same loop turn: ClosedError escapes serve_forever and the whole supervisor exits."""
    with admin(broker) as a:
        a.create_topic("doomed", 1)
    s = raw(broker)
    s.sendall(produce("doomed", 1, M.ACKS_DURABLE)
              + req(M.Api.DELETE_TOPIC, 2, M.DeleteTopicRequest("doomed")))
    read_frames(s, 1.0, want=2)
    time.sleep(0.5)
    assert broker.proc.poll() is None, (
        "the supervisor died after one client's PRODUCE(durable)+DELETE_TOPIC:\n"
        + broker.log()[-1500:])


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
    time.sleep(0.3)  # both accepted, the fetch parked
    pid = broker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        producer.sendall(produce("t", 1, M.ACKS_WRITTEN))  # ready first ...
        fetcher.close()  # ... then the parked fetcher's EOF
    finally:
        os.kill(pid, signal.SIGCONT)
    assert read_frames(producer, 5.0, want=1), "no produce answer"
    time.sleep(0.3)
    used = cpu_seconds(pid, 1.0)
    with admin(broker) as a:
        conns = a.status()["connections"]
    # Expected: the fetcher's connection is closed (admin + producer remain) and the loop idles.
    assert conns == 2 and used < 0.3, f"connections={conns}, supervisor CPU {used:.2f} s in 1 s"


# --- 3. durable answer queued without EVENT_WRITE interest is never sent ---------------------
@pytest.mark.integration
def test_durable_ack_that_does_not_fit_the_socket_is_never_sent(broker):
    """_answer_durable queues the response but never calls _update_interest: when the client's
    socket buffer is full, the answer sits in conn.out with no EVENT_WRITE registered and is sent
    only if the client happens to send another request. (acks=written answers do not stall: the
    _process path updates the interest.)"""
    with admin(broker) as a:
        a.create_topic("t", 1)
    s = raw(broker)
    size = len(ServerProtocol.encode_response(1, M.ProduceResponse("t", 0, 0, 0, 0)))
    sent = 0
    for i in range(20_000):
        s.sendall(produce("t", i + 1, M.ACKS_DURABLE))
        sent += 1
        deadline = time.monotonic() + 1.0
        while inq(s) < sent * size and time.monotonic() < deadline:
            time.sleep(0.0002)
        if inq(s) < sent * size:
            break  # our receive side is full: the supervisor had to queue this answer
    frames = read_frames(s, 5.0, want=sent)
    assert len(frames) == sent, f"{sent} durable produces, {len(frames)} answers ever arrived"


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
    time.sleep(0.3)
    with admin(broker) as a:
        a.delete_topic("t")
    answers = [f for f in read_frames(s, 1.5) if f.correlation_id == 7]
    assert len(answers) == 1, f"fetch corr=7 was answered {len(answers)} times"


# --- 5. a fetch response larger than any client accepts wedges a default Consumer ----------------
@pytest.mark.integration
def test_default_consumer_is_wedged_by_a_response_larger_than_its_frame_limit(tmp_path):
    """read_fetch gives every partition "at least one batch" while any budget remains, and the
    supervisor never caps max_bytes: with default consumer settings, two partitions of ~1 MB and
    one 16.5 MB batch make an 18.5 MB response, above ClientProtocol's limit (MAX_FRAME + 1 MiB).
    The consumer raises ProtocolError on every poll from then on."""
    b = EmbeddedBroker(tmp_path / "broker")
    b.start()
    try:
        with admin(b) as a:
            a.create_topic("big", 3, {"max_message_bytes": F.MAX_BATCH_BYTES})
        with Producer(socket=b.socket, transport="socket", batch_size=150_000, linger_ms=20,
                      max_request_size=F.MAX_FRAME_BYTES) as p:
            for part in (0, 1):
                for _ in range(12):
                    p.send("big", b"v" * 100_000, partition=part)
            p.send("big", b"B" * 16_500_000, partition=2)
            p.flush(30)
        c = Consumer("big", socket=b.socket, auto_offset_reset="earliest", transport="socket")
        try:
            try:
                got = c.poll(5000)
            except ProtocolError as e:
                pytest.fail(f"default Consumer.poll raised {e!r}")
            assert got
        finally:
            c.close()
    finally:
        b.cleanup()


# --- 6. a deserializer error loses the records before it --------------------------------------
@pytest.mark.integration
def test_deserializer_error_skips_records_taken_before_it(broker):
    """(HEAD) Consumer._take moved positions past the records deserialized before the failing
    one (`finally:`), but the exception meant they were never returned: never delivered.
    Fixed in the working tree during the review (all-or-nothing _take); regression test."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    with Producer(socket=broker.socket, transport="socket") as p:
        for i in range(10):
            p.send("t", str(i).encode(), partition=0)
        p.flush(10)
    failed: list[bytes] = []

    def vd(v: bytes) -> bytes:
        if v == b"3" and not failed:  # one transient failure
            failed.append(v)
            raise ValueError("cannot decode")
        return v

    c = Consumer("t", socket=broker.socket, auto_offset_reset="earliest", value_deserializer=vd,
                 transport="socket")
    got: list[bytes] = []
    try:
        for _ in range(5):
            try:
                for rs in c.poll(1000).values():
                    got += [r.value for r in rs]
            except ValueError:
                continue
    finally:
        c.close()
    assert sorted(got) == [str(i).encode() for i in range(10)], f"delivered {got}"


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
            md = f2.get(timeout=5)
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
        t0 = time.monotonic()
        p.flush(timeout=5)  # sits out its whole timeout (forever with timeout=None)
        took = time.monotonic() - t0
        assert f.succeeded()
        assert took < 3, f"flush() took {took:.1f} s; the record was acknowledged after ~0.5 s"
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
        time.sleep(3)
        done = f.done()
    finally:
        os.kill(pid, signal.SIGCONT)
        p.close(5)
    assert done, "3 s after send() with delivery_timeout_ms=500 the future is still unresolved"


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
        md = small.get(timeout=3)  # OperationTimeoutError: never sent
        assert md.offset >= 0
    finally:
        p.close(5)


# --- 11. Broker(notifier=None) busy-spins while idle ----------------------------------------------
@pytest.mark.integration
def test_broker_without_notifier_busy_spins_when_idle(tmp_path):
    """serve_forever starts next_watchdog at `now` and advances it only when a notifier exists:
    with Broker's default notifier=None the select timeout is 0 forever (100% CPU idle)."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from edgebus.log.manager import LogManager
        from edgebus.server.broker import Broker
        logs = LogManager(Path(sys.argv[1])); logs.open()
        b = Broker(logs, Path(sys.argv[2])); b.listen()
        print("ready", flush=True)
        b.serve_forever()
    """)
    sock = Path(f"/tmp/eb-review-{os.getpid()}.sock")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data"), str(sock)],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        used = cpu_seconds(proc.pid, 1.0)
        assert used < 0.2, f"idle supervisor loop used {used:.2f} s of CPU in 1 s"
    finally:
        proc.terminate()
        proc.wait(10)
        sock.unlink(missing_ok=True)


# --- 12. a response that cannot be encoded kills the supervisor -----------------------------------
@pytest.mark.integration
def test_status_of_a_700_partition_topic_kills_supervisor(broker):
    """Broker._dispatch encodes the handler's result outside its try: StatusResponse.json is a
    u16-length STR, so a status document above 64 KiB (here one topic of 700 partitions, within
    MAX_PARTITIONS=1024) raises ValueError out of serve_forever and the supervisor exits."""
    with admin(broker) as a:
        a.create_topic("wide", 700)
    with admin(broker) as a, contextlib.suppress(Exception):
        a.status()  # BrokerUnavailableError: the supervisor closed the connection (it died)
    time.sleep(0.5)
    assert broker.proc.poll() is None, "`edgebus status` killed the supervisor:\n" + broker.log()[-600:]


# --- 13. unbounded parked fetches per connection stall every producer ----------------------------
@pytest.mark.integration
def test_one_client_parking_many_fetches_stalls_other_producers(broker):
    """Nothing bounds parked fetches per connection (conn.parked is only counted), and on_append
    runs read_fetch (a pread) for every waiter of the partition: 30k pipelined long-poll fetches
    from one client make every append of every other client cost ~0.15 s of loop time."""
    with admin(broker) as a:
        a.create_topic("t", 1)
    p = Producer(socket=broker.socket, transport="socket", linger_ms=0)
    try:
        p.send("t", b"first").get(5)
        hostile = raw(broker)
        one = req(M.Api.FETCH, 1, M.FetchRequest(30_000, 1 << 30, 1, [M.FetchPartition("t", 0, 0, 1)]))
        hostile.sendall(one * 30_000)
        time.sleep(1.0)
        lat = []
        for _ in range(5):
            t0 = time.monotonic()
            p.send("t", b"x").get(30)
            lat.append(time.monotonic() - t0)
        lat.sort()
        assert lat[2] < 0.05, f"median produce latency {lat[2] * 1000:.0f} ms with one hostile client"
    finally:
        p.close(1)
