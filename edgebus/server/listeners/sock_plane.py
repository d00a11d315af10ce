"""The C data plane on Unix-socket connections (docs/ARCHITECTURE.md, "The C data plane").

What listeners/shm_plane.py does for a ring's wake-up, for a socket's read: a connection that
holds a grant (made, as for a link, when Python's path has just appended one of its plain
PRODUCEs) is read by one C call (edgebus/shm/sockplane.c eb_plane_sock_read), which recv(2)s
what Python's `Connection.on_event` would read, appends and answers, in order, the plain
PRODUCEs it can take (eb_plane_produce: the same checks, stamps and bytes as for a ring), answers
a socket or ring consumer's standing fetch parked at exactly that offset, and sends the call's
acks=written answers in one send(2). The frame it stops at goes to Python's dispatch alone, after
those answers, and the next call goes on after it (as ShmLink._dispatch_all does for a ring);
half a frame, a malformed one and more than a turn's worth of Python's go to the connection's
framing as ever. The grants, their checks before every call and the sync-back are the ring's
(shm_plane.Plane `_checked`, `_sync`): the loop stays the only writer of every partition.

Only a plain `Connection` on a Unix socket takes part (not TLS, not the Kafka or HTTP listeners,
whose connections have their own framing), and only while no answer is queued on it: answers
waiting in `Connection.out`, the connection over its output bound or awaiting a deferred answer
send its next read through Python's path. The start of a frame a read ended inside is carried
into the next call's buffer (CARRY_BYTES).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus import tuning
from edgebus.server.listeners import shm_plane
from edgebus.server.listeners.plane_grant import write_failed
from edgebus.server.listeners.stream import MAX_REQUESTS_PER_TURN, RECV_SIZE, Connection

if TYPE_CHECKING:
    from edgebus.server.listeners.shm_plane import Plane

log = logging.getLogger("edgebus.conn")

# The call's acks=written answers are gathered here and sent in one send(2); a call whose answers
# would not fit stops there (EB_PLANE_RING), sends them, and the next call goes on. An answer is
# at most 12 + 255 + 28 bytes: 64 KiB holds ~200 of the longest, ~1,300 of a short topic's.
OUT_BYTES = 64 * 1024
# Rests of standing answers a socket took only part of, per call: one answer (at most 8 KiB,
# plane.c EB_PLANE_ANSWER_MAX) for each of a link's grants (shm_plane.MAX_GRANTS).
REST_BYTES = 8 * 8192
# A read that ends inside a frame leaves its start in the connection's framing; the next read
# moves it to the front of the C call's buffer (one copy) when it is at most this long, so that
# a steady stream of pipelined frames stays in C. (A longer start is a large frame: Python's.)
CARRY_BYTES = 64 * 1024
# plane.c's EB_PLANE_FULL, _RING (here: the call's answer buffer is full), _WRITE
_WHY_FULL, _WHY_RING, _WHY_WRITE = 7, 9, 10
_EAGAIN = -errno.EAGAIN
_READ = selectors.EVENT_READ
_LEN, _HEAD = F.FRAME_LENGTH_SIZE, F.REQUEST_HEADER_SIZE
_unpack_len = F.FRAME_LENGTH.unpack_from
_unpack_head = F.REQUEST_HEADER_REST.unpack_from


class SockLink:
    """A Unix-socket connection's part in the plane: its grants (the fields `Plane` reads of a
    ShmLink: conn, grants, grant_ptrs, closed, pending, frames_in/out)."""

    __slots__ = ("conn", "fd", "frames_in", "frames_out", "grant_ptrs", "grants", "park_c",
                 "park_id", "sp")
    pending = ()  # (answers never wait here: a socket's wait in Connection.out)

    def __init__(self, sp: SocketPlane, conn: Connection) -> None:
        self.sp = sp
        self.conn = conn
        self.fd = conn.sock.fileno()
        self.grants: dict[tuple[str, int], Any] = {}
        self.grant_ptrs: Any = None
        self.frames_in = self.frames_out = 0
        self.park_c: Any = None  # its entry in the parked loop's table (shm_park.py), if any
        self.park_id = -1

    def __repr__(self) -> str:
        return f"sock-link({self.conn!r})"

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def read(self, buffered: int) -> bool:
        """Connection.on_event's read (the socket is readable, no answer is queued on the
        connection, `buffered` bytes of its stream wait in its framing: usually none, or the
        start of a frame the last read ended inside): one C call reads, serves what it can of
        those bytes and the new ones, and answers it; the rest goes to Python's framing and
        dispatch. False, having read nothing, when no grant survived its checks or more than
        CARRY_BYTES are buffered (Python's read then runs as ever)."""
        if buffered > CARRY_BYTES:
            return False
        sp = self.sp
        plane = sp.plane
        ptrs = plane._checked(self)
        n = len(self.grants)
        if not n:
            return False
        conn = self.conn
        if buffered:  # they come first: moved to the front of the read buffer
            sp.buf[:buffered] = conn.proto.frames.take()
        call = sp.call
        call.budget = plane.disk._budget
        call.frames = call.answers = 0
        got = _lib.eb_plane_sock_read(self.fd, sp.buf_p, buffered, RECV_SIZE, ptrs, n, call,
                                      sp.at)
        if got <= 0:
            if got == _EAGAIN:
                if buffered:
                    conn.proto.frames.feed(memoryview(sp.buf)[:buffered])  # back where they were
                return True
            if got < 0:
                log.info("%r read error: %s", conn, os.strerror(-got))
            conn.loop.close(conn)  # (0: EOF)
            return True
        return self._go_on(got, sp.at[0], 0)

    def resume(self, got: int, at: int) -> None:
        """The rest of a read the parked loop made and could not finish (shm_park.py: its
        answers the socket did not take are queued and its appends synced by then): EOF or an
        error, or the bytes from `at`, Python's as in `read`."""
        conn = self.conn
        if got <= 0:
            if got < 0:
                log.info("%r read error: %s", conn, os.strerror(-got))
            conn.loop.close(conn)
            return
        call = self.sp.call
        if call.why == _WHY_WRITE:  # (its unsent answers are queued, its appends synced)
            write_failed(self)
        self._go_on(got, at, 0, synced=True)

    def _go_on(self, got: int, at: int, took: int, synced: bool = False) -> bool:
        """After the read's first C call: the frames it stopped at dispatched by Python, the C
        call going on after each, until the read's bytes are served; the rest to the framing."""
        sp = self.sp
        plane = sp.plane
        call = sp.call
        conn = self.conn
        py = 0
        buf = sp.buf
        while True:
            frames = call.frames
            took += frames
            if synced:  # (the parked wait's read: Park._after did this)
                synced = False
            elif call.sent != call.out_len or call.why == _WHY_WRITE:
                self._after(call)  # the uncommon cases, then the sync-back
            elif frames:  # (_after's common case inlined: once per read)
                sp.frames += frames
                plane._sync(self, call)
            if at >= got or conn.closed or conn.out or conn.overloaded or conn.awaiting:
                break
            if not call.frames or (call.why != _WHY_RING and call.why != _WHY_FULL):
                # The frame the call stopped at is Python's (as ShmLink._dispatch_all gives it),
                # then the C call goes on after it; a frame cut short or malformed, and more than
                # a turn's worth of them, go to the framing below.
                if got - at < _LEN or py >= MAX_REQUESTS_PER_TURN:
                    break
                ln = _unpack_len(buf, at)[0]
                if ln < F.REQUEST_MIN_LENGTH or at + _LEN + ln > got:
                    break
                key, ver, corr = _unpack_head(buf, at + _LEN)
                py += 1
                # (a copy, as FrameBuffer.next_frame gives: the handler may keep or stamp it)
                conn.loop.dispatch(conn, key, ver, corr, memoryview(buf[at + _HEAD:at + _LEN + ln]))
                at += _LEN + ln
                if at >= got or conn.closed or conn.out or conn.overloaded or conn.awaiting:
                    break
            # (else its answers filled the call's buffer and went out whole, or a grant's room
            # per call was used up and is synced now: on in C)
            ptrs = plane._checked(self)
            n = len(self.grants)
            if not n:
                break
            call.budget = plane.disk._budget
            call.frames = call.answers = 0
            at = _lib.eb_plane_sock_serve(self.fd, sp.buf_p, at, got, ptrs, n, call)
        if conn.closed:
            conn.loop.close(conn)
            return True
        if at < got:  # Python's from here (feed copies: the buffer is the next read's)
            conn.proto.frames.feed(memoryview(buf)[at:got])
            conn.process()
            return True
        if (took or py) and conn.on_room is not None and not conn.out:
            conn._room()  # as process(): a request, so look at the connection's held answer again
        if conn.out or conn.overloaded or conn.awaiting or conn.events != _READ:
            conn.update_interest()  # e.g. answers the socket did not take: watch writability
        return True

    def unsent(self, call: Any) -> None:
        """The call's answers the socket did not take, queued on the connection (or, the peer
        gone, the connection marked closed, as Connection.queue's OSError does)."""
        sent = call.sent
        if sent != call.out_len:
            conn = self.conn
            if sent < 0:
                conn.closed = True
            else:
                rest = memoryview(bytes(self.sp.out[sent:call.out_len]))
                conn.out.append(rest)
                conn.out_bytes += len(rest)
                self.sp.short_sends += 1
            call.sent = call.out_len

    def close(self) -> None:
        """Its connection is closing (Connection.release): no grant, and out of the parked
        loop's table before the descriptor can be reused."""
        park = self.sp.plane.park
        if park is not None and self.park_c is not None:
            park.remove(self)  # (first: appends C made and no sync-back told yet are synced)
        self.grants.clear()

    def _after(self, call: Any) -> None:
        """After a call: the answers the socket did not take queued first (before anything the
        sync-back's on_append may queue on this connection), then the sync-back."""
        self.unsent(call)
        frames = call.frames
        if frames:
            self.sp.frames += frames
            self.sp.plane._sync(self, call)
        if call.why == _WHY_WRITE:  # as a ring's: offline unless the disk is full, then
            write_failed(self)  # Python's path retries the frame and reports


class SocketPlane:
    """The plane's socket half (one, held by the Plane as `sockets`): the read and answer
    buffers its calls share (loop thread only), and the links it made."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        # The C module, the calls and the buffers are made with the first SockLink (an idle
        # supervisor, or one whose clients all use the rings, loads and holds none of them).
        self.call: Any = None
        self.rest: Any = None
        self.out = self.buf = bytearray()
        self.buf_p: Any = None
        self.at: Any = None
        self.frames = 0  # PRODUCEs read from sockets, appended and answered in C
        self.short_sends = 0  # calls whose answers the socket took only part of (rest queued)

    def make_buffers(self) -> None:
        global _ffi, _lib
        _ffi, _lib = shm_plane._ffi, shm_plane._lib  # (loaded by plane.ready())
        self.call = _ffi.new("eb_plane_call *")
        # The rests of standing answers a consumer's socket took only part of, for this call
        # and the rings' (a ring producer answers socket consumers too; one call at a time;
        # until this is made, the rings' calls leave socket consumers to Python: rest NULL).
        self.rest = _ffi.new("char[]", REST_BYTES)
        for call in (self.call, self.plane.call):
            call.rest = self.rest
            call.rest_cap = REST_BYTES
        self.at = _ffi.new("int64_t *")
        self.out = bytearray(OUT_BYTES)
        self.call.out = _ffi.from_buffer(self.out)
        self.call.out_cap = OUT_BYTES
        self.buf = bytearray(RECV_SIZE)  # what one read takes, as Connection.recv
        self.buf_p = _ffi.from_buffer(self.buf)

    def link(self, conn: Any) -> SockLink | None:
        """The connection's SockLink, made at its first grant; None for a connection that does
        not take part (see the module's docstring)."""
        link = conn.plane_link
        if link is not None:
            return link
        if (type(conn) is not Connection or conn.dispatch_to is not None or conn.closed
                or type(conn.sock) is not socket.socket or conn.sock.family != socket.AF_UNIX):
            return None
        if self.buf_p is None:
            if not self.plane.ready():  # loads the C module (shm_plane.load), once
                return None
            self.make_buffers()
        link = conn.plane_link = SockLink(self, conn)
        from edgebus.server.listeners.shm_park import Park  # (the parked loop: once)

        park = Park.start(self.plane, conn.loop)
        if park is not None:
            park.add_sock(link)  # its reads served in the parked wait from now on
        return link


def queue_rest(g: Any, call: Any) -> None:
    """The rest of a standing answer the consumer's socket took only part of, queued on its
    Connection as Connection.queue queues what send took only part of (then the fetch is held,
    as push holds it, until that drains: its next append finds Connection.out not empty)."""
    c = g.c
    conn = g.w.conn
    rest = memoryview(_ffi.unpack(call.rest + c.w_rest_at, c.w_rest_len))
    c.w_rest_len = 0
    conn.out.append(rest)
    conn.out_bytes += len(rest)
    conn.update_interest()


def available() -> bool:
    """Whether sockets are served in C: the plane runs and EDGEBUS_SOCKET_C_PLANE is not 0."""
    return shm_plane.available() and tuning.SOCKET_C_PLANE


# shm_plane's, once SocketPlane.make_buffers has had them loaded (at the first granted connection)
_ffi: Any = None
_lib: Any = None
