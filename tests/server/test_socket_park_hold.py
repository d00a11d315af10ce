"""A socket consumer that has not read its last answer is held, and answered, by C in the parked
wait (issue 16, sockplane28; edgebus/shm/sockplane.c, "C's own hold").

Before, each such episode cost the wait two returns to Python: the append that found SIOCOUTQ
not 0 (`to_python.standing`: Python's may_answer held the fetch), and the append once it was 0
(`w_ready`: Python's on_append answered from the log). Now C keeps the batches appended
meanwhile and sends them in one answer once the consumer has read, at an append or at its own
look (Python's recheck schedule: 2 ms, doubling up to 50 ms); the answer is the one Python gave
(read_fetch's whole batches from the held offset, within the fetch's byte limit). Real
supervisor, raw sockets, a consumer killed -9 while held."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin
from edgebus import format as F
from edgebus.batch import iter_batches
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.listeners import sock_plane
from tests.server.test_socket_plane import RawSock, _corr
from tests.shm.test_c_plane import RawLink, batch, plane_parked, produce_frame

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not sock_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "is switched off")]

EPISODES = 20
HELD = 3  # batches appended while the consumer has not read, per episode


def _park(sock: str) -> dict[str, Any]:
    with Admin(socket=sock, transport="socket") as a:
        return dict(a.status()["shm_plane"]["park"] or {})


def _records(body: bytes, topic: str) -> bytes:
    """The records of a one-partition FETCH answer (encode_fetched_one's layout)."""
    at = 4 + 2 + len(topic) + 4 + 2 + 2 + 8 + 8
    (n,) = struct.unpack_from("<i", body, at)
    return body[at + 4:at + 4 + n]


def _offsets(records: bytes) -> list[int]:
    out: list[int] = []
    for b in iter_batches(records):
        base = struct.unpack_from("<q", b, 0)[0]
        (count,) = F.U32.unpack_from(b, F.BATCH_RECORD_COUNT)
        out += range(base, base + count)
    return out


class Consumer:
    """A raw socket consumer with a standing fetch on `topic` partition 0 from offset 0."""

    def __init__(self, sock: str, topic: str, max_bytes: int = 1 << 20) -> None:
        self.raw = RawSock(sock)
        self.topic = topic
        self.corr = next(_corr)
        req = M.FetchRequest(30_000, 1, max_bytes, [M.FetchPartition(topic, 0, 0, max_bytes)])
        self.raw.send(ClientProtocol.encode_request(M.Api.FETCH_STANDING, self.corr, req))

    def answers(self) -> list[bytes]:
        """The records of each standing answer so far, in order."""
        return [_records(body, self.topic) for c, err, body in self.raw.frames
                if c == self.corr and err == 0]

    def offsets(self) -> list[int]:
        return [o for r in self.answers() for o in _offsets(r)]

    def read_to(self, end: int, timeout: float = 20.0) -> None:
        """Read until the answers reach offset `end` (exclusive)."""
        deadline = time.monotonic() + timeout
        while not (got := self.offsets()) or got[-1] < end - 1:
            assert time.monotonic() < deadline, f"answers reached {got[-1:] or None}, not {end - 1}"
            self.raw.until(len(self.raw.frames) + 1, timeout=deadline - time.monotonic())


class Producer:
    """A raw producer on a Unix socket, or on the rings (a ring producer's wake-ups feed a socket
    consumer's fetch in the same parked wait)."""

    def __init__(self, sock: str, topic: str, transport: str = "socket") -> None:
        self.raw: RawSock | RawLink = RawSock(sock) if transport == "socket" else RawLink(sock)
        self.topic = topic
        self.n = 0

    def send(self, k: int = 1) -> None:
        """k batches of one record, each acknowledged before the next is sent."""
        for _ in range(k):
            c = next(_corr)
            frame = produce_frame(c, self.topic, 1, batch([b"r%d" % self.n]))
            if isinstance(self.raw, RawSock):
                self.raw.send(frame)
            else:
                self.raw.send([frame])
            self.raw.wait({c})
            self.n += 1


def _start(sock: str, topic: str, max_bytes: int = 1 << 20, transport: str = "socket"
           ) -> tuple[Consumer, Producer]:
    with Admin(socket=sock, transport="socket") as a:
        a.create_topic(topic, 1)
    consumer = Consumer(sock, topic, max_bytes)
    deadline = time.monotonic() + 10
    while not plane_parked(sock):
        assert time.monotonic() < deadline, "the standing fetch was not parked"
        time.sleep(0.01)
    producer = Producer(sock, topic, transport)
    producer.send()  # Python's path: the grant; the parked wait serves the next ones
    consumer.read_to(1)
    return consumer, producer


def _log(data_dir: Path, topic: str) -> bytes:
    """The partition's log as stored (one segment here): the bytes every answer must carry."""
    [seg] = sorted((data_dir / f"{topic}-0").glob("*.log"))
    return seg.read_bytes()


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_a_socket_consumer_behind_is_held_and_answered_in_c(broker, transport: str) -> None:
    """From a socket producer's reads or a ring producer's wake-ups, both served in the wait."""
    consumer, producer = _start(broker.socket, "hold", transport=transport)
    try:
        before = _park(broker.socket)
        for e in range(EPISODES):
            producer.send()  # answered at once (the consumer had read everything), left unread
            producer.send(HELD)  # its consumer has not read: held
            consumer.raw.until(len(consumer.raw.frames) + 1)  # it reads (SIOCOUTQ 0)
            if e % 2 == 0:
                producer.send()  # the held batches and this one, answered at this append
            # (odd episodes: no append; answered at the hold's look, 2 ms on)
            consumer.read_to(producer.n)
        after = _park(broker.socket)
        standing = after["to_python"]["standing"] - before["to_python"]["standing"]
        # before: two returns per episode (the hold, the answer once read); now none but where
        # the wait returned for something else during an episode (its sync-back then hands
        # the hold to Python, as before)
        assert standing < EPISODES // 2, (standing, before, after)
        held = after["held_answers"] - before["held_answers"]
        assert held >= EPISODES // 2, (held, before, after)
        # Every offset once, in order; the answers carry exactly the log's bytes (read_fetch's
        # answer: whole stored batches, the append's stamps), several batches in a held one.
        assert consumer.offsets() == list(range(producer.n))
        assert b"".join(consumer.answers()) == _log(broker.data_dir, "hold")
        assert max(len(_offsets(r)) for r in consumer.answers()) >= HELD
    finally:
        consumer.raw.close()
        producer.raw.close()


def test_a_hold_past_the_fetchs_byte_limit_goes_to_python_cut_as_read_fetch_cuts(broker) -> None:
    """The held batches may not exceed read_fetch's limit (the fetch's max_bytes): past it the
    hold is Python's, whose answer carries whole batches up to it, and the next the rest."""
    one = len(batch([b"r0"]))
    limit = 3 * one + one // 2  # three batches fit, a fourth does not
    consumer, producer = _start(broker.socket, "limit", max_bytes=limit)
    try:
        for _ in range(5):
            producer.send()
            producer.send(7)  # held: past three, Python's
            consumer.read_to(producer.n)
        assert consumer.offsets() == list(range(producer.n))
        assert all(len(r) <= limit for r in consumer.answers())
        assert b"".join(consumer.answers()) == _log(broker.data_dir, "limit")
    finally:
        consumer.raw.close()
        producer.raw.close()


_HELD_CONSUMER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(bytes.fromhex(sys.argv[2]))
print("sent", flush=True)
sys.stdin.read()  # reads nothing from the socket until killed
"""


def test_a_consumer_killed_while_held_costs_nothing_else(broker) -> None:
    """kill -9 of a socket consumer whose fetch C holds: the producer goes on being answered,
    the supervisor closes the connection, and a new consumer reads every batch once."""
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic("gone", 1)
        clients = a.status()["connections"]
    corr = next(_corr)
    req = M.FetchRequest(30_000, 1, 1 << 20, [M.FetchPartition("gone", 0, 0, 1 << 20)])
    frame = ClientProtocol.encode_request(M.Api.FETCH_STANDING, corr, req)
    proc = subprocess.Popen([sys.executable, "-c", _HELD_CONSUMER, broker.socket, frame.hex()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    producer = None
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
        deadline = time.monotonic() + 10
        while not plane_parked(broker.socket):
            assert time.monotonic() < deadline, "the standing fetch was not parked"
            time.sleep(0.01)
        producer = Producer(broker.socket, "gone")
        producer.send(2)  # the first answered (never read), the second held
        held0 = _park(broker.socket)["held_answers"]
        producer.send(3)  # held in C (or by Python, had the wait returned meanwhile)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        producer.send(5)  # appended and answered as ever; the dead consumer's hold ends
        with Admin(socket=broker.socket, transport="socket") as a:
            deadline = time.monotonic() + 10
            while a.status()["connections"] > clients + 1:  # (the producer's, and Admin's own)
                assert time.monotonic() < deadline, "the killed consumer's connection stayed"
                time.sleep(0.02)
        assert _park(broker.socket)["held_answers"] == held0  # nothing sent to the dead one
        consumer = Consumer(broker.socket, "gone")
        try:
            consumer.read_to(producer.n)
            assert consumer.offsets() == list(range(producer.n))
        finally:
            consumer.raw.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if producer is not None:
            producer.raw.close()
