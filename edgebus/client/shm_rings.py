"""The client's end of the shared-memory rings: attaching them and moving frames through them.

Setup (`attach`): on a freshly connected Unix socket send SHM_ATTACH, receive its response
together with four file descriptors (SCM_RIGHTS): the memfd holding both rings and three eventfds.
Then requests go into the request ring and responses come from the response ring; the socket
stays open to notice the supervisor's death at once (it becomes readable with EOF) and to carry
frames too large for a ring. `connect_rings` falls back to the plain socket when rings cannot be
had (edgebus/client/shm_channel.py says when that is allowed).

Waiting: while responses have been coming close together (edgebus/shm/spin.py) spin in C for
about two of their average gaps (SPIN_NS at most), then, or at once when they come further
apart, announce the sleep (the ring's waiting flag), re-check, and block in epoll on the
eventfd (edge-triggered: no read of its count per wake-up) and the socket together. The
constants are in edgebus/tuning.py.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

from edgebus import format as F
from edgebus.client.channel import connect
from edgebus.errors import (
    BrokerUnavailableError,
    EdgebusError,
    OperationTimeoutError,
    ShuttingDownError,
    TooManyConnectionsError,
    TransportUnavailableError,
)
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame
from edgebus.shm import unavailable_reason
from edgebus.shm.spin import SharedArrivals
from edgebus.tuning import DEFAULT_RING_BYTES, SPIN_GAP_NS, SPIN_NS

log = logging.getLogger("edgebus.client.shm")

_RECV = 1024 * 1024


def ring_bytes_for(max_frame: int) -> int:
    """The smallest allowed power-of-two ring whose max frame (capacity / 2) holds max_frame."""
    n = DEFAULT_RING_BYTES
    while n // 2 < max_frame and n < F.MAX_RING_BYTES:
        n *= 2
    return n


_HEAD = F.RESPONSE_HEADER_SIZE  # length, correlation id, error code; the body follows
_LEN = F.FRAME_LENGTH_SIZE  # the length counts the bytes after itself


def split_frames(buf: Any) -> list[ResponseFrame]:
    """The whole response frames read from the response ring (docs/FORMAT.md 7.2: a frame is
    its header, RESPONSE_HEADER, then its body), their bodies views into buf."""
    out: list[ResponseFrame] = []
    mv = memoryview(buf)
    pos, end = 0, len(buf)
    unpack = F.RESPONSE_HEADER.unpack_from
    while pos < end:
        n, corr, err = unpack(buf, pos)
        out.append(ResponseFrame(corr, err, mv[pos + _HEAD : pos + _LEN + n]))
        pos += _LEN + n
    return out


class ShmRings:
    """The client's end of one attached connection: socket, mapping, rings, eventfds.

    Thread use: one reader (of the response ring) and one writer (of the request ring) at a time;
    callers serialise each side. close() only after both have stopped (it unmaps).
    """

    def __init__(self, sock: socket.socket, resp: M.ShmAttachResponse, fds: list[int]) -> None:
        from edgebus.shm import ring as R

        memfd, self.efd_sup, self.efd_data, self.efd_space = fds
        try:
            self.mapping = R.Mapping(memfd, resp.map_bytes)
        finally:
            os.close(memfd)  # the mapping keeps the memory
        self.sock = sock
        self.req = R.Ring(self.mapping, 0, resp.request_ring_bytes)
        # The request ring's writer state (eb_sender: the head before our last request), and
        # produce(prefix, plen, key, klen, value, vlen, ts, corr, api, wake_fd, hold) -> 1
        # written, 0 no room, 2 declined (hold, and the supervisor more than one request
        # behind), < 0 not written: a one-record PRODUCE built straight into the ring
        # (edgebus/shm/produce.c), the C function bound to it (ShmAsyncChannel.send_record).
        self.sender = R.ffi.new("eb_sender *")
        self.produce = functools.partial(R.lib.eb_ring_produce, self.req.d, self.sender)
        # The request ring's head and tail (C calls bound to it): how far behind the supervisor's
        # reading is (ShmAsyncChannel.behind).
        self.req_head = functools.partial(R.lib.eb_head, self.req.d)
        self.req_tail = functools.partial(R.lib.eb_tail, self.req.d)
        self.resp = R.Ring(self.mapping, resp.response_ring_offset, resp.response_ring_bytes)
        # The response ring's waiting-side C calls, bound to it (read(): no Python layer each).
        self._resp_readable = functools.partial(R.lib.eb_readable, self.resp.d)
        self._resp_prepare = functools.partial(R.lib.eb_prepare_sleep_data, self.resp.d)
        self._resp_cancel = functools.partial(R.lib.eb_cancel_sleep_data, self.resp.d)
        self.proto = ClientProtocol()  # frames that arrive on the socket (too large for the ring)
        # An answer whose body is longer than this came on the socket (its frame is larger than
        # the ring's max_frame): a standing fetch ends after one (handlers/standing.py).
        self.big_body = self.resp.max_frame - _HEAD
        # The reader waits in epoll with efd_data edge-triggered: each write by the supervisor
        # (or a nudge) wakes it once, with no read(2) of the count to re-arm it (one system call
        # less per wake-up; the count just grows, 2**64 writes away from its limit). The socket
        # stays level-triggered: its bytes are read when it is ready.
        self._rpoll = select.epoll(2)
        self._rpoll.register(self.efd_data, select.EPOLLIN | select.EPOLLET)
        self._rpoll.register(sock.fileno(), select.EPOLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(self.efd_space, select.POLLIN)
        # A writer only watches for the supervisor's death; the socket's data is the reader's
        # (another thread in a producer), so it must not consume it.
        self._wpoll.register(sock.fileno(), select.POLLRDHUP)
        self.eof = False
        self.closed = False
        # Bytes came on the socket and may hold frames: looked at only then (_take).
        self.from_socket = False
        # The gaps between responses: whether to spin for the next. Its counters are C memory:
        # the one-call take (edgebus/shm/take.c) notes its arrivals there too.
        self.arrivals = SharedArrivals()
        # The consumer's one-call wait, take and plan of its next response (edgebus/shm/take.c
        # eb_take_plan, used by edgebus/client/quick_take.py): this ring, the reader's epoll, the
        # data eventfd, the supervisor's wake-up eventfd.
        self.take_args = (self.resp.d, self._rpoll.fileno(), self.efd_data, self.efd_sup)

    # --- writing requests ------------------------------------------------------------------------
    def write(self, frame: bytes, deadline: float | None = None) -> None:
        """Put one request frame, waiting for room (this producer only: backpressure)."""
        req = self.req
        if len(frame) > req.max_frame:
            # Too big for the ring: the socket carries it. Callers that pipeline keep frames
            # within the ring (ring_bytes_for); for one-at-a-time callers order is trivially kept.
            self.sock.sendall(frame)
            return
        efd = self.efd_sup
        while not req.write(frame, efd):
            if self.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            if req.wait_space(len(frame), SPIN_NS) or req.prepare_sleep_space(len(frame)):
                continue
            self._sleep(self._wpoll, self.efd_space, deadline, reader=False)

    # --- reading responses -----------------------------------------------------------------------
    def read(self, deadline: float | None, spin_ns: int = SPIN_NS, lazy_s: float = 0.0
             ) -> list[ResponseFrame]:
        """Response frames (ring and socket), waiting until at least one or the deadline.
        lazy_s: instead, wait once for at most lazy_s without asking the supervisor to signal
        (it then skips the eventfd write per response), and return what came, maybe nothing; a
        write to efd_data by this process (a nudge) or the socket ends the wait early."""
        resp = self.resp
        if lazy_s:
            out = self._take()
            if not out and not self.eof:
                self._sleep(self._rpoll, self.efd_data, time.monotonic() + lazy_s, reader=True)
                out = self._take()
            if not out and self.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            return out
        arrivals = self.arrivals
        readable = self._resp_readable
        while True:
            # An empty ring (a paced reader's every first look) is one C call, not _take's
            # two Python calls and two C calls.
            if readable() or self.from_socket:
                out = self._take()
                if out:
                    return out
            if self.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            # Arrivals.spin_ns is 0 while frames come further apart than SPIN_GAP_NS (a paced
            # consumer's every wait): asked only otherwise, two calls less per wake-up.
            spin = arrivals.spin_ns(time.monotonic_ns(), spin_ns) \
                if arrivals.gap <= SPIN_GAP_NS else 0
            if spin and resp.wait_data(spin):
                continue
            if self._resp_prepare():
                continue
            try:
                if not self._sleep(self._rpoll, self.efd_data, deadline, reader=True):
                    return []
            finally:
                self._resp_cancel()

    def wait_lazy(self, until: float) -> None:
        """Sleep without announcing it (the supervisor sees no waiting reader and does not
        signal) until `until` (monotonic), a nudge (a write to efd_data by this process) or the
        socket; at once when a frame is already there."""
        if not self.eof and not self.resp.readable() and not self.proto.frames.buffered():
            self._sleep(self._rpoll, self.efd_data, until, reader=True)

    def take_ring(self) -> list[ResponseFrame]:
        """The response frames in the ring now, without waiting, and not the socket's (the
        reader thread's alone): for a producer taking its acknowledgements at its next send.
        Callers serialise it with the reader's read()/take() (one reader of a ring at a time)."""
        buf = self.resp.read(self.efd_sup)
        return [] if buf is None else split_frames(buf)

    def take(self) -> list[ResponseFrame]:
        """The response frames there now (ring and socket), without waiting."""
        return self._take()

    def _take(self) -> list[ResponseFrame]:
        buf = self.resp.read(self.efd_sup)  # take_ring's work, without its call
        out = [] if buf is None else split_frames(buf)
        if self.from_socket:  # frames too large for the ring come on the socket
            proto = self.proto
            while (f := proto.next_response()) is not None:
                out.append(f)
            self.from_socket = proto.frames.buffered() > 0
        if out:
            self.arrivals.arrived(time.monotonic_ns())
        return out

    def _sleep(self, poller: Any, efd: int, deadline: float | None, reader: bool) -> bool:
        """Block until efd or the socket is ready. False on the deadline. The reader's poller is
        an epoll (seconds, efd edge-triggered), the writer's a poll (milliseconds)."""
        if deadline is None:
            timeout = None if not reader else -1.0
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timeout = left if reader else left * 1000
        for fd, _ev in poller.poll(timeout):
            if fd == efd:
                if not reader:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(efd)
            elif reader:
                self._recv_socket()
            else:
                self.eof = True  # POLLRDHUP/POLLHUP: the supervisor closed the connection
        return True

    def _recv_socket(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        self.proto.receive_data(data)
        self.from_socket = True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._rpoll.close()
        for fd in (self.efd_sup, self.efd_data, self.efd_space):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.req = self.resp = None  # type: ignore[assignment]
        self.mapping.close()


def attach(sock: socket.socket, request_ring_bytes: int = 0, response_ring_bytes: int = 0,
           timeout: float = 10.0) -> ShmRings:
    """SHM_ATTACH on a freshly connected socket (nothing else outstanding on it)."""
    req = M.ShmAttachRequest(request_ring_bytes, response_ring_bytes)
    sock.sendall(ClientProtocol.encode_request(M.Api.SHM_ATTACH, 0, req))
    proto = ClientProtocol()
    fds: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while (frame := proto.next_response()) is None:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data, got, _flags, _addr = socket.recv_fds(sock, 4096, 4)
            except TimeoutError:
                raise OperationTimeoutError("no answer to SHM_ATTACH") from None
            finally:
                sock.settimeout(None)
            fds.extend(got)
            if not data:
                raise BrokerUnavailableError("the supervisor closed the connection during SHM_ATTACH")
            proto.receive_data(data)
        resp = ClientProtocol.decode_body(M.Api.SHM_ATTACH, frame)  # raises the typed error
        if len(fds) != 4 or resp.fd_count != 4:
            raise BrokerUnavailableError(f"SHM_ATTACH passed {len(fds)} descriptors, expected 4")
        if proto.frames.buffered():
            raise BrokerUnavailableError("unexpected bytes after the SHM_ATTACH response")
        rings = ShmRings(sock, resp, fds)
        fds = []
        return rings
    finally:
        for fd in fds:
            os.close(fd)


def connect_rings(path: Path, transport: str, request_ring_bytes: int = 0
                  ) -> tuple[socket.socket, ShmRings | None]:
    """A connected socket, with rings attached when they can be had (see the module doc)."""
    sock = connect(path)
    reason = unavailable_reason()
    if reason is None:
        try:
            return sock, attach(sock, request_ring_bytes, DEFAULT_RING_BYTES)
        except (TooManyConnectionsError, ShuttingDownError):
            sock.close()  # the supervisor refused the connection itself: another one would be too
            raise
        except (EdgebusError, OSError) as e:
            sock.close()
            reason = f"SHM_ATTACH failed: {e}"
            if transport == "shm":
                raise BrokerUnavailableError(f"shared memory with {path}: {reason}") from None
            sock = connect(path)  # the old stream's state is unknown: start clean
    elif transport == "shm":
        sock.close()
        raise TransportUnavailableError(f"transport='shm' but {reason}")
    if not _said_no_c_module[0] and "not built" in reason:
        # Once per process: an install without a compiler is a choice to be told about, not a
        # fault to repeat on every connection.
        _said_no_c_module[0] = True
        log.warning("edgebus runs without its C module (%s): using the Unix socket, not "
                    "shared-memory rings", reason)
    else:
        log.debug("using the socket transport to %s: %s", path, reason)
    return sock, None


_said_no_c_module = [False]
