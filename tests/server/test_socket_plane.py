"""The C data plane on Unix-socket connections (edgebus/server/listeners/sock_plane.py,
edgebus/shm/sockplane.c) against Python's path: two real supervisors, one with the plane (the
default) and one with EDGEBUS_SOCKET_C_PLANE=0, are sent the same PRODUCE frames on raw Unix
sockets, pipelined several per read, and must give the same answer frames (byte for byte, the
clock's append time aside), the same log, index and time-index files and the same records.
Also: standing fetches of socket consumers answered from socket and ring producers, frames cut
across reads, a producer that does not read its answers (the socket's send buffer fills), a
topic deleted while granted, an ACL reload, kill -9 right after acknowledgements, hostile frames.
The ring's own cases: tests/shm/test_c_plane.py (whose helpers these reuse)."""

from __future__ import annotations

import itertools
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebus import Admin
from edgebus.client.shm_rings import attach
from edgebus.errors import AuthorizationError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.listeners import sock_plane
from edgebus.testing import EmbeddedBroker
from tests.shm.test_c_plane import (
    CONFIG,
    HOSTILE_IDS,
    RawLink,
    batch,
    counters,
    hostile_frames,
    normalized_files,
    plane_parked,
    produce_frame,
    records,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sock_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "is switched off")]

OFF = {"EDGEBUS_SOCKET_C_PLANE": "0"}
_corr = itertools.count(1)


def socket_frames(sock: str, what: str = "frames") -> int:
    with Admin(socket=sock, transport="socket") as a:
        return int(a.status()["socket_plane"][what])


def standing_answers(sock: str) -> int:
    with Admin(socket=sock, transport="socket") as a:
        return int(a.status()["shm_plane"]["standing_answers"])


def _zero_atime(body: bytes) -> bytes:
    """A PRODUCE answer's body with its append time (the clock's) zeroed."""
    n = struct.unpack_from("<H", body)[0]
    b = bytearray(body)
    at = 2 + n + 4 + 8  # topic, partition, base offset
    b[at:at + 8] = bytes(8)
    return bytes(b)


class RawSock:
    """A bare Unix-socket connection: frames sent as given, answer frames collected in order."""

    def __init__(self, sock_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock_path)
        self.proto = ClientProtocol()
        self.frames: list[tuple[int, int, bytes]] = []  # (corr, error code, body) as they came

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait(self, corrs: set[int], timeout: float = 20.0) -> None:
        """Read until every one of `corrs` has an answer."""
        deadline = time.monotonic() + timeout
        while not corrs <= {c for c, _, _ in self.frames}:
            assert time.monotonic() < deadline, \
                f"no answer to {corrs - {c for c, _, _ in self.frames}}"
            self._read(deadline)

    def until(self, n: int, timeout: float = 10.0) -> None:
        """Read until `n` answer frames have come."""
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            assert time.monotonic() < deadline, f"{len(self.frames)} answers, not {n}"
            self._read(deadline)

    def _read(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        assert data, "the supervisor closed the connection"
        self.proto.receive_data(data)
        while (r := self.proto.next_response()) is not None:
            self.frames.append((r.correlation_id, r.error_code, bytes(r.body)))

    def close(self) -> None:
        self.sock.close()


# One op: (topic: 0 the main one, 1 a second one, 2 one that does not exist; acks; values;
# bad CRC), as tests/shm/test_c_plane.py's, sent in chunks of one sendall each (pipelined),
# each ending with an acks=written sentinel.
_value = st.binary(min_size=0, max_size=400)
_op = st.tuples(st.sampled_from([0, 0, 0, 0, 1, 2]), st.sampled_from([0, 1, 1, 1, 2]),
                st.lists(_value, min_size=1, max_size=3), st.sampled_from([False] * 7 + [True]))
_chunks = st.lists(st.lists(_op, min_size=1, max_size=8), min_size=1, max_size=6)


def run_ops(sock: str, topics: list[str], chunks: list[list[Any]]
            ) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]]:
    """Send the chunks on one raw socket. The answers other than durable acks in the order they
    came (position in the sequence, error code, body with the append time zeroed), and the
    durable ones (answered by group commit, whenever it runs) sorted by position."""
    conn = RawSock(sock)
    try:
        pos_of: dict[int, int] = {}
        durable: set[int] = set()
        pos = 0
        for chunk in chunks:
            frames, wait = [], set()
            for t, acks, values, bad in chunk:
                corr = next(_corr)
                pos_of[corr] = pos
                pos += 1
                frames.append(produce_frame(corr, topics[t], acks, batch(values, bad)))
                if acks:
                    wait.add(corr)
                if acks == 2:
                    durable.add(corr)
            sentinel = next(_corr)
            pos_of[sentinel] = pos
            pos += 1
            frames.append(produce_frame(sentinel, topics[0], 1, batch([b"s"])))
            conn.send(b"".join(frames))
            conn.wait(wait | {sentinel})
        out = [(pos_of[c], err, _zero_atime(body) if err == 0 else body)
               for c, err, body in conn.frames]
        return ([o for o, (c, _, _) in zip(out, conn.frames, strict=True) if c not in durable],
                sorted(o for o, (c, _, _) in zip(out, conn.frames, strict=True) if c in durable))
    finally:
        conn.close()


def test_the_socket_plane_gives_what_the_python_path_gives(tmp_path: Path) -> None:
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=OFF)
    seq = itertools.count()
    try:
        @settings(max_examples=8, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(_chunks)
        def check(chunks: list[list[Any]]) -> None:
            i = next(seq)
            topics = [f"sq{i}", f"sq{i}b", f"sq{i}-missing"]
            for b in (on, off):
                with Admin(socket=b.socket, transport="socket") as a:
                    a.create_topic(topics[0], 1, config=CONFIG)
                    a.create_topic(topics[1], 1, config=CONFIG)
            got_on = run_ops(on.socket, topics, chunks)
            got_off = run_ops(off.socket, topics, chunks)
            assert got_on == got_off
            for t in topics[:2]:
                assert normalized_files(on.data_dir, t) == normalized_files(off.data_dir, t)
                assert records(on.socket, t) == records(off.socket, t)
                assert counters(on.socket, t) == counters(off.socket, t)

        check()
        assert socket_frames(on.socket) > 0, "the plane took no frame: nothing was compared"
        assert socket_frames(off.socket) == 0
    finally:
        on.cleanup()
        off.cleanup()


def test_bursts_and_frames_cut_across_reads_equal_the_python_path(tmp_path: Path) -> None:
    """Hundreds of frames in one write (more than one C call appends to a partition, so the
    sync-back runs between calls on one read), then frames cut at every few bytes so that reads
    end inside a frame (its start goes to Python's framing, and the C call resumes after)."""
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=OFF)
    try:
        got = []
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("cut", 1)
            conn = RawSock(b.socket)
            try:
                for i in range(3):  # Python's path grants the connection first
                    conn.send(produce_frame(900 + i, "cut", 1, batch([b"first %d" % i])))
                    conn.wait({900 + i})
                frames = [produce_frame(1000 + i, "cut", 1, batch([b"burst %d" % i]))
                          for i in range(300)]
                conn.send(b"".join(frames))
                conn.wait({1000 + i for i in range(300)})
                data = b"".join(produce_frame(2000 + i, "cut", 1, batch([b"cut %d" % i]))
                                for i in range(60))
                for at in range(0, len(data), 37):
                    conn.send(data[at:at + 37])
                    time.sleep(0.0005)  # (mostly separate reads)
                conn.wait({2000 + i for i in range(60)})
                got.append([(c, e, _zero_atime(body)) for c, e, body in conn.frames])
            finally:
                conn.close()
        assert got[0] == got[1]
        assert [c for c, _, _ in got[0]] == ([900, 901, 902] + [1000 + i for i in range(300)]
                                             + [2000 + i for i in range(60)])
        assert normalized_files(on.data_dir, "cut") == normalized_files(off.data_dir, "cut")
        assert records(on.socket, "cut") == records(off.socket, "cut")
        assert socket_frames(on.socket) > 250
    finally:
        on.cleanup()
        off.cleanup()


def test_a_producer_that_does_not_read_its_answers_loses_none(broker) -> None:
    """40,000 acks=written PRODUCEs sent before any answer is read: the supervisor's sends of
    the C call's answers go short and then find the socket full (the rest waits in
    Connection.out, and further reads go through Python's path until it drains); once the
    producer reads, every answer is there, in order, offsets dense."""
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("unread", 1)
    conn = RawSock(broker.socket)
    n = 40_000
    try:
        b = batch([b"u"])
        warm = [produce_frame(next(_corr), "unread", 1, b) for _ in range(3)]  # grant it first
        conn.send(b"".join(warm))
        conn.wait({struct.unpack_from("<I", f, 8)[0] for f in warm})
        first = next(_corr)
        frames = b"".join(produce_frame(first + i, "unread", 1, b) for i in range(n))
        for _ in range(n):
            next(_corr)
        conn.sock.settimeout(60)
        conn.send(frames)  # the supervisor keeps reading while its answers pile up
        conn.wait({first + i for i in range(n)}, timeout=120)
    finally:
        conn.close()
    got = conn.frames[3:]
    assert [c for c, _, _ in got] == [first + i for i in range(n)]
    assert all(e == 0 for _, e, _ in got)
    offsets = [struct.unpack_from("<q", body, 2 + len("unread") + 4)[0] for _, _, body in got]
    assert offsets == list(range(3, 3 + n))
    assert socket_frames(broker.socket) > 1000
    assert socket_frames(broker.socket, "short_sends") > 0, "the socket never filled: not tested"


def _standing(sock: str, topic: str, ring_producer: bool, sizes: list[int],
              gap: float = 0.0) -> list[bytes]:
    """A raw socket consumer holds a standing fetch on `topic` from offset 0; a raw producer (a
    socket, or a shm link) sends one record per size, each after the consumer has read the
    answer before (and `gap` s more: the supervisor back in its wait); the consumer's answer
    bodies, append times zeroed."""
    consumer = RawSock(sock)
    producer: Any = RawLink(sock) if ring_producer else RawSock(sock)
    try:
        corr = next(_corr)
        req = M.FetchRequest(30_000, 1, 1 << 20, [M.FetchPartition(topic, 0, 0, 1 << 20)])
        consumer.send(ClientProtocol.encode_request(M.Api.FETCH_STANDING, corr, req))
        deadline = time.monotonic() + 10
        while not plane_parked(sock):
            assert time.monotonic() < deadline, "the standing fetch was not parked"
            time.sleep(0.01)
        for i, size in enumerate(sizes):
            pc = next(_corr)
            f = produce_frame(pc, topic, 1, batch([bytes([65 + i % 26]) * size]))
            if ring_producer:
                producer.send([f])
            else:
                producer.send(f)
            producer.wait({pc})
            consumer.until(i + 1)
            if gap:
                time.sleep(gap)
        out = []
        for c, err, body in consumer.frames:
            assert c == corr and err == 0
            b = bytearray(body)
            at = 4 + 2 + len(topic) + 28  # the batch: after the count, topic, partition's run
            b[at + 8:at + 16] = bytes(8)  # the batch's append time
            out.append(bytes(b))
        return out
    finally:
        consumer.close()
        producer.close()


@pytest.mark.parametrize("ring_producer", [False, True], ids=["socket-producer", "ring-producer"])
def test_socket_standing_answers_from_the_plane_equal_the_python_path(
        tmp_path: Path, ring_producer: bool) -> None:
    """StandingFetches.push's answer on a socket, byte for byte, whether C writes it (from a
    socket producer's read or a ring producer's wake-up) or Python does (the plane off:
    EDGEBUS_SHM_C_PLANE=0 turns both halves off); rolls and index entries send some appends
    through Python."""
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env={"EDGEBUS_SHM_C_PLANE": "0"})
    sizes = [10, 100, 0, 500, 900, 33, 1, 700, 250, 64] * 2
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("sst", 1, config=CONFIG)
        got_on = _standing(on.socket, "sst", ring_producer, sizes)
        got_off = _standing(off.socket, "sst", ring_producer, sizes)
        assert len(got_on) == len(sizes)
        assert got_on == got_off
        assert standing_answers(on.socket) >= 5
        assert standing_answers(off.socket) == 0
        assert records(on.socket, "sst") == records(off.socket, "sst")
        assert counters(on.socket, "sst") == counters(off.socket, "sst")
    finally:
        on.cleanup()
        off.cleanup()


def test_a_ring_consumer_is_answered_from_a_socket_producer(broker) -> None:
    """The other way round: a socket producer's batches answer a shm link's standing fetch in C."""
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("s2r", 1)
    consumer, producer = RawLink(broker.socket), RawSock(broker.socket)
    try:
        corr = next(_corr)
        req = M.FetchRequest(30_000, 1, 1 << 20, [M.FetchPartition("s2r", 0, 0, 1 << 20)])
        consumer.send([ClientProtocol.encode_request(M.Api.FETCH_STANDING, corr, req)])
        deadline = time.monotonic() + 10
        while not plane_parked(broker.socket):
            assert time.monotonic() < deadline, "the standing fetch was not parked"
            time.sleep(0.01)
        for i in range(20):
            pc = next(_corr)
            producer.send(produce_frame(pc, "s2r", 1, batch([b"v%d" % i])))
            producer.wait({pc})
            deadline = time.monotonic() + 10
            while len(consumer.frames) <= i:
                assert time.monotonic() < deadline, f"no answer for record {i}"
                for r in consumer.rings.read(deadline):
                    consumer.frames.append((r.correlation_id, r.error_code, bytes(r.body)))
    finally:
        consumer.close()
        producer.close()
    assert [c for c, _, _ in consumer.frames] == [corr] * 20
    assert standing_answers(broker.socket) >= 10
    assert socket_frames(broker.socket) >= 10
    assert records(broker.socket, "s2r") == [(i, b"v%d" % i) for i in range(20)]


def _send(conn: RawSock, topic: str, value: bytes) -> tuple[int, bytes]:
    corr = next(_corr)
    conn.send(produce_frame(corr, topic, 1, batch([value])))
    conn.wait({corr})
    _, err, body = next(f for f in conn.frames if f[0] == corr)
    return err, body


def _offset(body: bytes) -> int:
    n = struct.unpack_from("<H", body)[0]
    return int(struct.unpack_from("<q", body, 2 + n + 4)[0])


def test_a_topic_deleted_while_granted_is_refused_then_served_anew(broker) -> None:
    conn = RawSock(broker.socket)
    try:
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic("sgone", 1)
        assert [_offset(_send(conn, "sgone", b"%d" % i)[1]) for i in range(3)] == [0, 1, 2]
        assert socket_frames(broker.socket) >= 2  # the second and third went through the plane
        with Admin(socket=broker.socket, transport="socket") as a:
            a.delete_topic("sgone")
        err, _ = _send(conn, "sgone", b"after delete")
        assert err != 0  # unknown topic: the grant did not outlive its partition
        with Admin(socket=broker.socket, transport="socket") as a:
            a.create_topic("sgone", 1)
        assert [_offset(_send(conn, "sgone", b"again%d" % i)[1]) for i in range(3)] == [0, 1, 2]
    finally:
        conn.close()
    assert records(broker.socket, "sgone") == [(0, b"again0"), (1, b"again1"), (2, b"again2")]


def test_an_acl_reload_revokes_a_socket_grant_at_the_next_frame(make_broker: Any) -> None:
    b = make_broker({"acl": {"file": "acl.yaml"}}).start()
    cfg = Path(b.config_path)
    with Admin(socket=b.socket, transport="socket") as a:
        a.create_topic("sacl", 1)
    conn = RawSock(b.socket)

    def reload(*args: str, n: int) -> None:
        r = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "acl", *args, "--config",
                            str(cfg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        with Admin(socket=b.socket, transport="socket") as a:
            deadline = time.monotonic() + 30
            while a.status()["acl"]["reloads"] < n:
                assert time.monotonic() < deadline, "the supervisor did not reload"
                time.sleep(0.05)

    try:
        assert [_offset(_send(conn, "sacl", b"%d" % i)[1]) for i in range(3)] == [0, 1, 2]
        assert socket_frames(b.socket) == 2
        reload("add", "--deny", "user:root", "write", "topic:sacl", n=1)
        err, _ = _send(conn, "sacl", b"denied")
        assert err == AuthorizationError.code
        reload("remove", "--deny", "user:root", "write", "topic:sacl", n=2)
        assert [_offset(_send(conn, "sacl", b"again%d" % i)[1]) for i in range(3)] == [3, 4, 5]
        assert socket_frames(b.socket) == 4  # granted anew after Python's path took "again0"
    finally:
        conn.close()
    assert [v for _, v in records(b.socket, "sacl")] == [
        b"0", b"1", b"2", b"again0", b"again1", b"again2"]


def test_everything_acknowledged_through_the_socket_plane_survives_kill_9(tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "crash").start()
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("sk9", 1)
        conn = RawSock(b.socket)
        corrs = []
        for i in range(200):
            corr = next(_corr)
            corrs.append(corr)
            conn.send(produce_frame(corr, "sk9", 1, batch([b"r%d" % i])))
            if i < 100:  # one by one, then pipelined
                conn.wait({corr})
        conn.wait(set(corrs))
        assert socket_frames(b.socket) > 100
        by_corr = {c: body for c, _, body in conn.frames}
        acked = {_offset(by_corr[c]): b"r%d" % i for i, c in enumerate(corrs)}
        assert sorted(acked) == list(range(200))
        b.proc.send_signal(signal.SIGKILL)  # right after the last acknowledgement
        b.proc.wait(10)
        conn.close()
        b.start()  # recovery
        assert dict(records(b.socket, "sk9")) == acked
    finally:
        b.cleanup()


@pytest.mark.parametrize("bad", hostile_frames("shostile"), ids=HOSTILE_IDS)
def test_hostile_frames_on_a_granted_socket_close_it_and_nothing_else(broker, bad) -> None:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("shostile", 1)
    conn = RawSock(broker.socket)
    other = RawSock(broker.socket)
    try:
        for i in range(3):  # Python's path grants the connection, the plane takes the next two
            assert _offset(_send(conn, "shostile", b"ok")[1]) == i
        assert socket_frames(broker.socket) == 2
        conn.send(bad(next(_corr)))
        conn.sock.settimeout(10)
        while conn.sock.recv(4096):  # an error answer may come first; then the close
            pass
        assert _offset(_send(other, "shostile", b"other")[1]) == 3  # others are served on
    finally:
        conn.close()
        other.close()
    assert records(broker.socket, "shostile") == [(0, b"ok"), (1, b"ok"), (2, b"ok"), (3, b"other")]


def test_after_shm_attach_the_socket_read_is_pythons_and_answers_go_to_the_ring(broker) -> None:
    """A connection granted on the socket that then attaches rings: every answer goes to its
    response ring from then on (Connection.queue's rule), including the answer to a PRODUCE it
    still sends on the socket, so the socket plane (which answers on the socket) must not read
    it any more."""
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("sattach", 1)
    conn = RawSock(broker.socket)
    try:
        for i in range(3):  # granted on the socket; the plane takes the second and third
            assert _offset(_send(conn, "sattach", b"s%d" % i)[1]) == i
        assert socket_frames(broker.socket) == 2
        rings = attach(conn.sock)
        corr = next(_corr)
        conn.send(produce_frame(corr, "sattach", 1, batch([b"on the socket"])))
        deadline = time.monotonic() + 10
        got: list[Any] = []
        while not got:
            assert time.monotonic() < deadline, "no answer in the response ring"
            got = rings.take_ring()
            time.sleep(0.001)
        assert [r.correlation_id for r in got] == [corr]
        with pytest.raises(BlockingIOError):
            conn.sock.recv(4096, socket.MSG_DONTWAIT)  # nothing came on the socket
        assert socket_frames(broker.socket) == 2
        rings.close()
    finally:
        conn.close()
    assert [v for _, v in records(broker.socket, "sattach")] == [b"s0", b"s1", b"s2", b"on the socket"]
