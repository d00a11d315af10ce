"""The parked loop (edgebus/server/listeners/shm_park.py, edgebus/shm/park.c): the loop's wait
done in C, serving granted shm links' wake-ups without a Python turn. Real supervisors and real
client processes:
- the same paced frames through a supervisor with the parked loop and one without
  (EDGEBUS_SHM_C_PARK=0): the same answers, files, records and counters;
- a socket producer and a Kafka client writing the same partition while an shm producer streams
  (the partition changes hands between C and Python every few records): offsets dense, each
  producer's records in its order, every acknowledged one where its answer said;
- kill -9 of the supervisor mid-stream, and of one of two shm producers mid-stream;
- rolls, retention, a config change and a topic deleted while an shm producer streams.
Every test also checks that the parked loop served wake-ups (`edgebus status`: shm_plane.park),
so that it is what was tested; no figure of time is asserted."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin
from edgebus.batch import iter_batches
from edgebus.errors import TopicExistsError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.listeners import shm_plane
from edgebus.testing import EmbeddedBroker, wait_for
from tests.shm.helpers import memfd_mappings
from tests.shm.test_c_plane import (
    RawLink,
    batch,
    counters,
    normalized_files,
    plane_parked,
    produce_frame,
    records,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "EDGEBUS_SHM_C_PLANE=0")]

ROOT = Path(__file__).resolve().parents[2]
NO_PARK = {"EDGEBUS_SHM_C_PARK": "0"}
CONFIG = {"segment_bytes": 2048, "index_interval_bytes": 300, "max_message_bytes": 1000}
_corr = itertools.count(1_000_000)


def park(sock: str) -> dict[str, int] | None:
    with Admin(socket=sock, transport="socket") as a:
        return a.status()["shm_plane"]["park"]  # type: ignore[no-any-return]


def parked_wakeups(sock: str) -> int:
    p = park(sock)
    return 0 if p is None else p["wakeups"]


def spawn(*args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-m", "tests.shm.workers", *args], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    line = p.stdout.readline()
    assert line.strip() == b"ready", p.stderr.read().decode()
    return p


def kill9(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(10)


def acked(path: Path) -> dict[int, bytes]:
    """offset -> value of every acknowledged record (a last line torn by a kill is skipped)."""
    out: dict[int, bytes] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and "." in parts[1]:
            out[int(parts[0])] = parts[1].encode()
    return out


def check_one_writer(log: list[tuple[int, bytes | None]], ack: dict[int, bytes],
                     start: int = 0) -> None:
    """What one writer gives: offsets dense from `start`, every value once, each producer's
    values in the order it sent them, every acknowledged record at the offset it was told."""
    offsets = [o for o, _ in log]
    assert offsets == list(range(start, start + len(offsets)))
    values = [v for _, v in log]
    assert all(v is not None for v in values)
    assert len(set(values)) == len(values), "a record was stored twice"
    by_tag: dict[bytes, list[int]] = {}
    for v in values:
        assert v is not None
        tag, seq = v.split(b".")
        by_tag.setdefault(tag, []).append(int(seq))
    for tag, seqs in by_tag.items():
        assert seqs == sorted(seqs), f"producer {tag!r}'s records out of order"
    got = dict(log)
    for off, v in ack.items():
        if off >= start:
            assert got.get(off) == v, f"acknowledged offset {off} ({v!r}) is not in the log"


def paced_frames(sock: str, topic: str, n: int, gap: float) -> list[tuple[int, Any]]:
    """One PRODUCE at a time on a raw link, each answered before the next and `gap` s after it
    (the supervisor goes back to sleep between them): the answers, in order."""
    link = RawLink(sock)
    out = []
    try:
        for i in range(n):
            corr = next(_corr)
            link.send([produce_frame(corr, topic, 1 if i % 5 else 0, batch([b"p%d" % i] * (1 + i % 3)))])
            if i % 5:
                link.wait({corr})
                code, ans = link.answers[corr]
                out.append((code, None if ans is None else (ans[0], ans[1], ans[2])))
            time.sleep(gap)
        sentinel = next(_corr)
        link.send([produce_frame(sentinel, topic, 1, batch([b"end"]))])
        link.wait({sentinel})
    finally:
        link.close()
    return out


def test_the_parked_loop_gives_what_the_python_turn_gives(tmp_path: Path) -> None:
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=NO_PARK)
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("pk", 1, config=CONFIG)
        got_on = paced_frames(on.socket, "pk", 150, 0.002)
        got_off = paced_frames(off.socket, "pk", 150, 0.002)
        assert got_on == got_off
        assert normalized_files(on.data_dir, "pk") == normalized_files(off.data_dir, "pk")
        assert records(on.socket, "pk") == records(off.socket, "pk")
        assert counters(on.socket, "pk") == counters(off.socket, "pk")
        assert parked_wakeups(on.socket) > 50, "the parked loop served nothing: nothing compared"
        assert park(off.socket) is None
    finally:
        on.cleanup()
        off.cleanup()


def test_socket_and_kafka_producers_share_a_partition_with_a_parked_shm_producer(
        tmp_path: Path) -> None:
    kafka = pytest.importorskip("confluent_kafka")
    b = EmbeddedBroker(tmp_path / "mix").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("mix", 1, config=CONFIG)
        files = {t: tmp_path / f"acked-{t}" for t in ("s", "u")}
        procs.append(spawn("produce_paced", b.socket, "mix", str(files["s"]), "s", "shm", "500"))
        procs.append(spawn("produce_paced", b.socket, "mix", str(files["u"]), "u", "socket", "3000"))
        # a Kafka client, in this process, between them
        kp = kafka.Producer({"bootstrap.servers": b.kafka_bootstrap, "linger.ms": 0,
                             "enable.idempotence": False, "retries": 0})
        k_acked: dict[int, bytes] = {}

        def done(err: Any, msg: Any) -> None:
            if err is None:
                k_acked[msg.offset()] = msg.value()

        for i in range(150):
            kp.produce("mix", value=b"k.%d" % i, partition=0, on_delivery=done)
            kp.poll(0)
            time.sleep(0.004)
        assert kp.flush(30) == 0
        wait_for(lambda: len(acked(files["s"])) > 300 and len(acked(files["u"])) > 50, 120,
                 "both producers to get acknowledgements")
        for p in procs:
            kill9(p)
        stats = park(b.socket)
        assert stats is not None and stats["wakeups"] > 100
        assert stats["returns_loop"] > 0  # the socket and Kafka appends, in Python, between
        ack = {**acked(files["s"]), **acked(files["u"]), **k_acked}
        assert len(k_acked) == 150
        log = records(b.socket, "mix")
        check_one_writer(log, ack)
        tags = {v.split(b".")[0] for _, v in log if v is not None}
        assert tags == {b"s", b"u", b"k"}
    finally:
        for p in procs:
            if p.poll() is None:
                kill9(p)
        b.cleanup()


def kill_9_mid_stream(tmp_path: Path, topic: str, transport: str,
                      served: Callable[[str], int]) -> None:
    """A paced producer on `transport` whose frames the parked wait serves (`served`, read from
    the supervisor's counters, past 100), then kill -9 of the supervisor mid-stream: after
    recovery every acknowledged record is there, once, in order (also
    tests/server/test_socket_park.py's, on the socket)."""
    b = EmbeddedBroker(tmp_path / "k9").start()
    prod = None
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic(topic, 1)
        path = tmp_path / "acked"
        prod = spawn("produce_paced", b.socket, topic, str(path), "s", transport, "300")
        wait_for(lambda: len(acked(path)) > 300, 120, "acknowledgements")
        assert served(b.socket) > 100
        wait_for(lambda: len(acked(path)) > 400, 120, "more acknowledgements")
        b.proc.send_signal(signal.SIGKILL)  # mid-stream: frames in flight
        b.proc.wait(10)
        kill9(prod)
        ack = acked(path)
        b.start()  # recovery
        log = records(b.socket, topic)
        check_one_writer(log, ack)
        assert len(log) >= len(ack) > 400
    finally:
        if prod is not None and prod.poll() is None:
            kill9(prod)
        b.cleanup()


def test_kill_9_of_the_supervisor_mid_stream_keeps_every_acknowledged_record(
        tmp_path: Path) -> None:
    kill_9_mid_stream(tmp_path, "k9", "shm", parked_wakeups)


def test_a_shm_producer_killed_mid_stream_leaves_the_other_streaming(tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "dies").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("dies", 1)
        pa, pb = tmp_path / "a", tmp_path / "b"
        procs.append(spawn("produce_paced", b.socket, "dies", str(pa), "a", "shm", "200"))
        procs.append(spawn("produce_paced", b.socket, "dies", str(pb), "b", "shm", "700"))
        wait_for(lambda: len(acked(pa)) > 300 and len(acked(pb)) > 100, 120, "acknowledgements")
        assert parked_wakeups(b.socket) > 100
        kill9(procs[0])  # its ring may hold frames unread
        wait_for(lambda: memfd_mappings(b.pid) == 1, 30,  # type: ignore[arg-type]
                 "the supervisor to unmap the dead producer's rings")
        before = len(acked(pb))
        wait_for(lambda: len(acked(pb)) > before + 100, 120,
                 "the other producer to go on being acknowledged")
        kill9(procs[1])
        check_one_writer(records(b.socket, "dies"), {**acked(pa), **acked(pb)})
    finally:
        for p in procs:
            if p.poll() is None:
                kill9(p)
        b.cleanup()


def test_rolls_retention_config_and_delete_while_a_parked_producer_streams(
        tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "ret", config={"log": {"retention_check_interval_ms": 100}}).start()
    prod = None
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("ret", 1, config={**CONFIG, "retention_bytes": 6000})
        path = tmp_path / "acked"
        prod = spawn("produce_paced", b.socket, "ret", str(path), "s", "shm", "300")
        wait_for(lambda: len(acked(path)) > 200, 120, "acknowledgements")
        with Admin(socket=b.socket, transport="socket") as a:
            a.alter_topic_config("ret", {"segment_bytes": 4096})  # while streaming
        n = len(acked(path))
        wait_for(lambda: len(acked(path)) > n + 200, 120, "acknowledgements after the change")
        assert parked_wakeups(b.socket) > 100
        kill9(prod)
        start = settled_log_start(b.socket, "ret")
        assert start > 0, "retention deleted nothing: the case was not tested"
        log = records_from(b.socket, "ret", start)
        # Retention runs every 100 ms and may still move the log start between the describe and
        # the read (1 run in 25 under load): the read then starts where the log does, never before.
        assert log and log[0][0] >= start, (start, log[:1])
        check_one_writer(log, acked(path), log[0][0])
        # deleted while streaming: the producer's next records fail, and nothing is granted to
        # a partition that is gone; created again, it starts from 0
        prod = spawn("produce_paced", b.socket, "ret", str(tmp_path / "acked2"), "t", "shm", "300")
        wait_for(lambda: len(acked(tmp_path / "acked2")) > 50, 120, "acknowledgements")
        with Admin(socket=b.socket, transport="socket") as a:
            a.delete_topic("ret")
            with contextlib.suppress(TopicExistsError):  # (if the producer's send made it)
                a.create_topic("ret", 1)
        p2 = tmp_path / "acked2"
        wait_for(lambda: (0, b"") in [(o, b"") for o, _ in acked_list(p2)], 120,
                 "the recreated topic to take records from offset 0")
        n = len(acked_list(p2))
        wait_for(lambda: len(acked_list(p2)) > n + 50, 120, "acknowledgements after the delete")
        kill9(prod)
        after = acked_list(p2)
        first = next(i for i, (o, _) in enumerate(after) if o == 0)
        check_one_writer(records(b.socket, "ret"), dict(after[first:]))
    finally:
        if prod is not None and prod.poll() is None:
            kill9(prod)
        b.cleanup()


def acked_list(path: Path) -> list[tuple[int, bytes]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and "." in parts[1]:
            out.append((int(parts[0]), parts[1].encode()))
    return out


def settled_log_start(sock: str, topic: str) -> int:
    """The partition's log start once retention has stopped moving it (the same in three
    describes 0.3 s apart: the producer is gone, so retention has a last segment to delete)."""
    seen: list[int] = []

    def settled() -> bool:
        with Admin(socket=sock, transport="socket") as a:
            seen.append(a.describe_topic(topic).partitions[0].log_start_offset)
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            return True
        time.sleep(0.3)
        return False

    wait_for(settled, 60, f"the log start of {topic} to settle (three equal describes)")
    return seen[-1]


def records_from(sock: str, topic: str, start: int) -> list[tuple[int, bytes | None]]:
    """The partition from `start` (its log start) to its end."""
    from edgebus import Consumer, TopicPartition

    c = Consumer(socket=sock, transport="shm", auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, start)
    end = c.end_offsets([tp])[tp]
    got: list[tuple[int, bytes | None]] = []
    deadline = time.monotonic() + 60
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(500).values():
            got += [(r.offset, r.value) for r in recs]
    c.close()
    return got



def _unread_standing_answers(sock: str, topic: str, n: int, size: int = 0) -> list[list[bytes]]:
    """A raw consumer link holds a standing fetch from offset 0 and reads nothing while a raw
    producer link sends `n` one-record batches (values of `size` bytes at least), each
    acknowledged before the next; then the consumer reads everything. Its answers, each as its
    batches, append times zeroed."""
    consumer, producer = RawLink(sock), RawLink(sock)
    try:
        corr = next(_corr)
        req = M.FetchRequest(30_000, 1, 1 << 20, [M.FetchPartition(topic, 0, 0, 1 << 20)])
        consumer.send([ClientProtocol.encode_request(M.Api.FETCH_STANDING, corr, req)])
        wait_for(lambda: plane_parked(sock), 10, "the standing fetch to be parked")
        for i in range(n):
            pc = next(_corr)
            producer.send([produce_frame(pc, topic, 1, batch([(b"u%d" % i).ljust(size, b".")]))])
            producer.wait({pc})
        out: list[list[bytes]] = []
        deadline = time.monotonic() + 20
        while sum(map(len, out)) < n:
            assert time.monotonic() < deadline, f"{sum(map(len, out))} of {n} batches answered"
            for r in consumer.rings.read(deadline):
                assert r.correlation_id == corr and r.error_code == 0
                body = bytes(r.body)
                at = 4 + 2 + len(topic) + 28  # the batches: after the partition's header
                batches = []
                for one in iter_batches(body[at:]):
                    b = bytearray(one)
                    b[8:16] = bytes(8)  # the append time (the wall clock's)
                    batches.append(bytes(b))
                out.append(batches)
        return out
    finally:
        consumer.close()
        producer.close()


# (EDGEBUS_SHM_STANDING_WINDOW, value bytes, answers written in C): the window of one answer
# (before tail28: the first answer is Python's, its append made the grant; the second found the
# first unread and was still written in C); small answers within the default window (every one
# after the first); answers of ~4.2 KiB, of which three are within the default 16 KiB window
# (the fourth unread is over it: that append goes to Python, which holds the fetch)
_WINDOWS = [("0", 0, 1), ("", 0, 11), ("", 4096, 3)]


@pytest.mark.parametrize(("window", "size", "in_c"), _WINDOWS)
def test_standing_answers_to_a_consumer_not_reading_equal_the_python_path(
        tmp_path: Path, window: str, size: int, in_c: int) -> None:
    """The C call answers the standing fetch while at most the window (the last answer, or
    tuning.STANDING_WINDOW if larger) is unread, then leaves it to Python, which holds it until
    the consumer reads: the same answers, grouped the same way, as with every frame in Python.
    Within the default window none is held (before tail28, with a window of one answer, the
    third and later were: fewer answers, and one written in C)."""
    env = {"EDGEBUS_SHM_STANDING_WINDOW": window} if window else {}
    on = EmbeddedBroker(tmp_path / "on").start(env=env)
    off = EmbeddedBroker(tmp_path / "off").start(env={"EDGEBUS_SHM_C_PLANE": "0", **env})
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("unread", 1)
        got_on = _unread_standing_answers(on.socket, "unread", 12, size)
        got_off = _unread_standing_answers(off.socket, "unread", 12, size)
        assert got_on == got_off
        # some answers held and sent together (the hold was tested), or one answer per batch
        assert (len(got_on) == 12) if in_c == 11 else (len(got_on) < 12)
        with Admin(socket=on.socket, transport="socket") as a:
            assert a.status()["shm_plane"]["standing_answers"] == in_c
    finally:
        on.cleanup()
        off.cleanup()
