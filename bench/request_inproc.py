"""bench.request_cost --inproc: the supervisor's request path driven in-process, without the
loop's wait and wake-up, so the Python (and the syscalls it makes) per request is measured
steadily, to tenths of a microsecond.

An in-process Broker (as tests/test_fastpath_server.py builds one) with real connections: on
`shm`, each attached with SHM_ATTACH (real memfd rings and eventfds); on `socket`, a socketpair.
One iteration is what a supervisor does for one one-record PRODUCE (acks=written) at a low
rate: the producer's frame is written into the request ring (or the socket) by this process
standing in for the client, then the supervisor's own entry point runs (ShmLink's selector
callback, or Connection.on_event): read, dispatch, validate, append with write(2), the
acknowledgement into the response ring (or socket). With `produce+answer`, a caught-up consumer
waits too (a standing fetch, re-armed by the supervisor after each answer, on either transport,
as the real consumer's fetch-ahead sends it; until stop 24 the socket's consumer here sent a
FETCH per answer, the client before its socket standing fetch), and the append also answers it. The
clients sleep between requests as they do at 1,000/s (their rings' reader_waiting flag raised),
so the supervisor's ring writes also pay their eventfd writes.

Only the supervisor's calls are timed (this thread's CPU time around them, so that being
preempted on a shared machine is not counted); the client's ring and socket work is outside the
count. What this leaves out: the selector's wait and the kernel's
wake-up of the supervisor (the real-process mode of bench.request_cost counts those).
"""

from __future__ import annotations

import contextlib
import cProfile
import ctypes
import io
import os
import pstats
import selectors
import socket
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from edgebus import batch as B
from edgebus.fastpath.produce import produce_body
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.broker import Broker
from edgebus.server.listeners.stream import Connection

PAYLOAD = b"x" * 100
TOPIC = "rc"


def _request(api: int, corr: int, body: bytes) -> bytes:
    return struct.pack("<iHHI", 8 + len(body), api, 0, corr) + body


class InprocBroker:
    """A Broker in this process on `root` with one topic, its loop not running (the caller calls
    the supervisor's entry points), and real connections to it: a socketpair each, attached to
    shared-memory rings (SHM_ATTACH: real memfd rings and eventfds) when asked. Also the rig of
    tests/shm/test_standing_push.py."""

    def __init__(self, root: Path, topic: str, config: TopicConfig) -> None:
        self.logs = LogManager(root / "data")
        self.logs.open()
        self.logs.create_topic(topic, config)
        self.b = Broker(self.logs, root / "s.sock")
        self.socks: list[socket.socket] = []

    def connect(self, shm: bool) -> tuple[Connection, socket.socket]:
        """A connection registered with the loop as an accepted one is, and the client's end."""
        a, peer = socket.socketpair()
        a.setblocking(False)
        self.socks += [a, peer]
        c = Connection(a, self.b.loop)
        c.id = len(self.socks)
        self.b.loop.conns[c.id] = c
        self.b.loop.sel.register(a, selectors.EVENT_READ, c.on_event)
        if shm:
            self.b.shm.attach(c, 1, M.ShmAttachRequest(0, 0))
            _msg, fds, _flags, _addr = socket.recv_fds(peer, 1 << 16, 8)
            for fd in fds:
                os.close(fd)  # this process reaches the rings through the supervisor's mapping
        return c, peer

    def close(self) -> None:
        self.b.durable.close()
        for c in list(self.b.loop.conns.values()):
            self.b.shm.connection_closed(c)
        self.logs.close()
        self.b.loop.sel.close()
        for s in self.socks:
            s.close()


class Rig:
    """One in-process supervisor, a producer connection and (optionally) a consumer's."""

    def __init__(self, transport: str, answer: bool) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="ebrc-")
        self.srv = InprocBroker(Path(self.dir.name), TOPIC, TopicConfig(partitions=1))
        self.b = self.srv.b
        self.transport = transport
        self.prod, self.prod_peer = self._conn()
        self.cons = self.cons_peer = None
        self.corr = 100
        self._rbuf = bytearray(1 << 20)
        if answer:
            self.cons, self.cons_peer = self._conn()
            self._consumer_fetch()

    def _conn(self) -> tuple[Connection, socket.socket]:
        c, peer = self.srv.connect(self.transport == "shm")
        if self.transport == "shm":
            link = c.shm
            self.b.shm._set_spinning(link, False)  # asleep: the 1,000/s case
            link.req.prepare_sleep_data()
        return c, peer

    def _consumer_fetch(self) -> None:
        """The consumer's standing fetch from offset 0 (FETCH_STANDING, on either transport, as
        the real consumer's fetch-ahead sends it), once, not timed: the supervisor re-arms it
        after every answer, so the consumer sends nothing more."""
        assert self.cons is not None and self.cons_peer is not None
        req = M.FetchRequest(500, 1, 1 << 20, [M.FetchPartition(TOPIC, 0, 0, 1 << 20)])
        frame = ClientProtocol.encode_request(int(M.Api.FETCH_STANDING), 7, req)
        self._client_send(self.cons, self.cons_peer, frame)
        self._serve(self.cons)
        if self.transport == "shm":
            self.cons.shm.resp.prepare_sleep_data()  # the consumer sleeps on its ring

    def _client_send(self, conn: Connection, peer: socket.socket, frame: bytes) -> None:
        if self.transport == "shm":
            if not conn.shm.req.write(frame, conn.shm.efd_sup):
                raise RuntimeError("request ring full")
        else:
            peer.sendall(frame)

    def _serve(self, conn: Connection) -> None:
        """The supervisor's entry point for the connection, as its selector calls it."""
        if self.transport == "shm":
            conn.shm(selectors.EVENT_READ)
        else:
            conn.on_event(selectors.EVENT_READ)

    def _client_read(self, conn: Connection, peer: socket.socket) -> bytes:
        if self.transport == "shm":
            got = conn.shm.resp.read(conn.shm.efd_space)
            if got is None:
                raise RuntimeError("no answer in the response ring")
            conn.shm.resp.prepare_sleep_data()  # and sleeps again
            _drain(conn.shm.efd_data)
            return bytes(got)
        # Into a buffer kept for it: a fresh 1 MiB receive buffer per answer made the heap give
        # memory back and take it again, page faults that landed in the supervisor's count.
        n = peer.recv_into(self._rbuf)
        return bytes(self._rbuf[:n])

    def iteration(self, frame: bytes) -> int:
        """One request; the supervisor's nanoseconds for it."""
        self._client_send(self.prod, self.prod_peer, frame)
        t0 = time.thread_time_ns()
        self._serve(self.prod)
        spent = time.thread_time_ns() - t0
        ack = self._client_read(self.prod, self.prod_peer)
        if len(ack) < 12:
            raise RuntimeError("short acknowledgement")
        if self.cons is not None:
            assert self.cons_peer is not None
            # The standing fetch's answer, pushed by the append. On the socket, reading it is all
            # the consumer does (the supervisor sees the read through SIOCOUTQ at the next
            # append); on shm its read of the ring signals the supervisor's eventfd.
            self._client_read(self.cons, self.cons_peer)
            if self.transport == "shm":
                _drain(self.cons.shm.efd_sup)
        if self.transport == "shm":
            _drain(self.prod.shm.efd_sup)
        return spent

    def close(self) -> None:
        self.srv.close()
        self.dir.cleanup()


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)


def produce_frame(corr: int) -> bytes:
    batch = B.build_batch([B.encode_record(1, None, PAYLOAD, [])], 1, 1)
    return produce_body(TOPIC, 0, M.ACKS_WRITTEN, batch).frame(corr)


def _steady_heap() -> None:
    """glibc: no trimming of the heap's top and no mmap for the receive buffers. In this one
    process the supervisor's 256 KiB socket receive buffer, shrunk to the bytes received, left
    the heap's top free, so glibc gave it back and took it again on the next receive: page
    faults on every request that the real supervisor (a different heap) does not have (bench
    .request_cost counts its faults: none), and that came and went with unrelated changes to
    what the process keeps allocated."""
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD


def run(transport: str, case: str, requests: int, profile: bool = False) -> dict[str, Any]:
    _steady_heap()
    rig = Rig(transport, case == "produce+answer")
    try:
        frame = produce_frame(5)
        for _ in range(200):  # warm: caches, the first index entries
            rig.iteration(frame)
        prof = cProfile.Profile() if profile else None
        times = []
        if prof is not None:
            prof.enable()
        for _ in range(requests):
            times.append(rig.iteration(frame))
        if prof is not None:
            prof.disable()
    finally:
        rig.close()
    times.sort()
    # The median, and the fastest tenth's upper bound: the count least disturbed by what else
    # runs on a shared machine (cache and core contention add to some requests, never subtract).
    out: dict[str, Any] = {"us": statistics.median(times) / 1e3,
                           "p10_us": times[len(times) // 10] / 1e3,
                           "mean_us": statistics.fmean(times) / 1e3}
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        out["profile"] = s.getvalue()
    return out



if __name__ == "__main__":
    # python bench/request_inproc.py TRANSPORT CASE REQUESTS [profile], started by
    # bench.request_cost --inproc from the working directory of the checkout to measure (so that
    # its edgebus is the one imported): prints the result as JSON.
    import json
    import sys

    a = sys.argv[1:]
    print(json.dumps(run(a[0], a[1], int(a[2]), len(a) > 3 and a[3] == "profile")))
