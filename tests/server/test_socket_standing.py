"""Standing fetches on the Unix socket (FETCH_STANDING, docs/FORMAT.md 7.13) with a real
supervisor and real clients: the switch that turns them off, a supervisor that refuses them,
a consumer that falls behind (SIOCOUTQ), seeks and new assignments, and the raw frames. The
cases shared with the rings (one request for many answers, a consumer that stops reading, one
SIGKILLed) run on both in tests/shm/test_standing_fetch.py; a group rebalance:
tests/groups/test_socket_standing.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import format as F
from edgebus.fastpath.standing import next_fetch
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from tests.proxy import Proxy, read_exactly
from tests.server.rawclient import raw, read_frames, req
from tests.standing import consumer, read_offsets, status

pytestmark = pytest.mark.integration


_CHILD = """
import sys, time
from edgebus import Consumer, TopicPartition
tp = TopicPartition("ssoff", 0)
c = Consumer(socket=sys.argv[1], transport="socket", auto_offset_reset="earliest",
             fetch_max_wait_ms=200)
c.assign([tp])
got = 0
print("ready", flush=True)
while got < int(sys.argv[2]):
    got += len(c.poll(500).get(tp, []))
    print(got, flush=True)
c.close()
"""


def test_the_switch_turns_it_off(broker):
    """EDGEBUS_SHM_STANDING_FETCH=0 in a consumer's process: one FETCH per answer on the socket
    again (the request count grows with the answers), every record still delivered."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("ssoff", 1)
    env = {**os.environ, "EDGEBUS_SHM_STANDING_FETCH": "0"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, broker.socket, "40"], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with Producer(socket=broker.socket, transport="socket", linger_ms=0) as p:
            for i in range(40):
                p.send("ssoff", str(i).encode(), partition=0).get(10)
                while int(child.stdout.readline()) <= i:  # each record read before the next
                    pass
                if i == 0:
                    before = _requests_of(broker, child.pid)
                elif i == 38:  # the child still waits for the last one: still connected
                    after = _requests_of(broker, child.pid)
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert after - before >= 35, f"{after - before} requests for 38 answers with the switch off"


class _OldSupervisor(Proxy):
    """Relays a Unix socket, answering for a supervisor that predates socket standing fetches:
    every FETCH_STANDING is passed on with min_bytes 0, which the supervisor refuses with
    InvalidRequestError, as one before this feature refused any on a socket."""

    def __init__(self, target: str, path: Path) -> None:
        super().__init__(target, path)
        self.standing = self.fetches = 0

    def pump(self, src: socket.socket, dst: socket.socket, to_target: bool,
             link: dict[str, Any]) -> None:
        if not to_target:
            return super().pump(src, dst, to_target, link)
        while True:
            head = read_exactly(src, F.FRAME_LENGTH_SIZE)
            frame = bytearray(head + read_exactly(src, F.FRAME_LENGTH.unpack(head)[0]))
            api = F.REQUEST_HEADER.unpack_from(frame, 0)[1]
            if api == M.Api.FETCH_STANDING:
                self.standing += 1
                F.FETCH_REQUEST_RUN.pack_into(frame, F.REQUEST_HEADER.size, *(
                    v if i != 1 else 0 for i, v in enumerate(
                        F.FETCH_REQUEST_RUN.unpack_from(frame, F.REQUEST_HEADER.size))))
            elif api == M.Api.FETCH:
                self.fetches += 1
            dst.sendall(frame)


def test_a_supervisor_that_refuses_it_on_a_socket_gets_fetches(broker, tmp_path):
    """The consumer's first FETCH_STANDING is refused (InvalidRequestError: what a supervisor
    before socket standing fetches answers): it sends FETCH from then on, and loses nothing."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("ssold", 1)
    proxy = _OldSupervisor(broker.socket, tmp_path / "old.sock")
    tp = TopicPartition("ssold", 0)
    try:
        c = Consumer(socket=proxy.address, transport="socket", auto_offset_reset="earliest",
                     fetch_max_wait_ms=200)
        c.assign([tp])
        got: list[int] = []
        with Producer(socket=broker.socket, transport="socket", linger_ms=0) as p:
            for i in range(30):
                p.send("ssold", str(i).encode(), partition=0).get(10)
                read_offsets(c, tp, i + 1, got)
        c.close()
    finally:
        proxy.close()
    assert got == list(range(30))
    assert proxy.standing == 1, f"{proxy.standing} standing fetches after the refusal"
    assert proxy.fetches >= 30


def _requests_of(broker: Any, pid: int) -> int:
    (conn,) = [c for c in status(broker)["clients"] if c["pid"] == pid]
    return int(conn["requests"])


def test_a_consumer_that_falls_behind_gets_one_answer_for_what_came_meanwhile(broker):
    """While the consumer has not taken the last answer off its socket (SIOCOUTQ not 0), the
    supervisor holds the next one: 300 records sent one at a time while it does not poll come
    in a few answers, not 300 frames (as they would if every append were pushed), in order."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("ssb", 1)
    tp = TopicPartition("ssb", 0)
    c = consumer(broker, "ssb", "socket")
    with Producer(socket=broker.socket, transport="socket", linger_ms=0) as p:
        p.send("ssb", b"first", partition=0).get(10)
        offsets: list[int] = []
        while not offsets:
            offsets += [r.offset for r in c.poll(500).get(tp, [])]
        hits_before = c._ch.fetch_ahead_hits
        for i in range(300):
            p.send("ssb", str(i).encode(), partition=0).get(10)
    read_offsets(c, tp, 301, offsets)
    answers = c._ch.fetch_ahead_hits - hits_before
    c.close()
    assert offsets == list(range(301))
    assert answers <= 10, f"{answers} answers for 300 records sent while the consumer did not read"


def test_seeks_and_assignments_between_polls_are_honoured(broker):
    """A seek or a new assignment is a request the standing fetch did not guess: the consumer
    sends FETCH (which ends the standing fetch at the supervisor), drops the answers still on
    their way, and the next standing fetch starts from the new position."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("ssa", 2)
    with Producer(socket=broker.socket, batch_size=2048) as p:
        for part in (0, 1):
            for i in range(50):
                p.send_batch("ssa", [f"{part}:{i}:{j}".encode() for j in range(100)],
                             partition=part)
        p.flush(10)
    tp0, tp1 = TopicPartition("ssa", 0), TopicPartition("ssa", 1)
    c = Consumer(socket=broker.socket, transport="socket", auto_offset_reset="earliest",
                 max_partition_fetch_bytes=2000)
    c.assign([tp0])
    deadline = time.monotonic() + 60
    for tp, target in [(tp0, 0), (tp0, 4000), (tp0, 100), (tp1, 4900), (tp0, 2500), (tp1, 10)]:
        if tp not in c.assignment():
            c.assign([tp])  # the other partition only: nothing more of the old one comes
        c.seek(tp, target)
        want = list(range(target, min(target + 2500, 5000)))
        got: list[tuple[int, int]] = []
        while len(got) < len(want) and time.monotonic() < deadline:
            got += [(t.partition, r.offset) for t, recs in c.poll(500).items() for r in recs]
        assert got[: len(want)] == [(tp.partition, o) for o in want]
    hits = c._ch.fetch_ahead_hits
    c.close()
    assert hits > 0, "the standing fetch never answered a poll"


def test_raw_frames_several_answers_under_one_id(broker):
    """At the byte level: one FETCH_STANDING on a plain Unix socket is answered once per append
    under its one correlation id, each answer the successor's (edgebus/fastpath/standing.py),
    and a FETCH on the same connection ends it."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("ssw", 1)
    s = raw(broker)
    try:
        fetch = M.FetchRequest(5000, 1, 1 << 20, [M.FetchPartition("ssw", 0, 0, 1 << 20)])
        s.sendall(req(M.Api.FETCH_STANDING, 7, fetch))
        with Producer(socket=broker.socket, linger_ms=0) as p:
            for i in range(3):
                p.send("ssw", str(i).encode(), partition=0).get(10)
                (frame,) = read_frames(s, 10, want=1)
                assert frame.correlation_id == 7 and frame.error_code == 0
                resp = ClientProtocol.decode_body(M.Api.FETCH, frame)
                nxt = next_fetch(fetch, resp, fetch.max_wait_ms)
                assert nxt is not None and nxt.partitions[0].offset == i + 1
                fetch = nxt
            s.sendall(req(M.Api.FETCH, 8, M.FetchRequest(0, 0, 4096,
                                                         [M.FetchPartition("ssw", 0, 3, 4096)])))
            (frame,) = read_frames(s, 10, want=1)
            assert frame.correlation_id == 8
            p.send("ssw", b"after", partition=0).get(10)
        assert read_frames(s, 0.3) == [], "the standing fetch went on after a FETCH"
    finally:
        s.close()

