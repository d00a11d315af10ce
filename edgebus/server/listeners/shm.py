"""The supervisor's side of the shared-memory transport (docs/ARCHITECTURE.md, "Shared-memory rings"):
one link (`ShmLink`) here, the service that makes and polls them (`ShmTransport`) in
listeners/shm_transport.py.

A client that connected over the Unix socket may send SHM_ATTACH. The supervisor then makes one
memfd holding two rings (client -> supervisor requests, supervisor -> client responses) and three
eventfds, seals the memfd's size, and passes all four descriptors back with SCM_RIGHTS in the
attach response. From then on the rings carry the same frames as the socket; every request read
from a ring goes through the ordinary dispatch (LoopApi.dispatch), and every response for the connection
goes into the response ring (the socket keeps working for frames too large for a ring). The
common PRODUCE and its standing-fetch answer are served in C instead, by the data plane
(listeners/shm_plane.py), with the same bytes and state as that dispatch. Nothing is
ever named in /dev/shm, so a kill -9 of either side leaves nothing behind: the kernel frees the
memfd when its last descriptor and mapping go.

Lifecycle: the link lives exactly as long as the socket connection. The socket closing (the
kernel closes it when the client dies, kill -9 included) reaches `Loop.close`, which tells this
service (`connection_closed`): the eventfd leaves the selector, the mapping and descriptors are
released at once.

Wake-ups: a link whose frames come close together (edgebus/shm/spin.py: on average closer than
EDGEBUS_SHM_SPIN_GAP_US) is polled by the loop (spinning in C for short slices while the loop
has nothing else to do) for about two average gaps after its last frame, SPIN_NS at most; then,
or at once for a link whose frames come further apart (1,000 or 10,000 a second), or as soon
as the loop is idle with no core to spare (edgebus.shm.cpu_free), it announces it is asleep
(the ring's reader_waiting flag) and waits for the client's eventfd in the selector like any
socket.

Backpressure: a full response ring (a slow consumer) never blocks the loop. Responses queue on the
link, their bytes count against the connection's output bound (`Connection.out_bytes`), and while
the connection is over that bound the supervisor stops reading its request ring and its socket;
the producer on the other side then finds its request ring full and waits, alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus import tuning
from edgebus.shm.spin import Arrivals
from edgebus.tuning import SPIN_GAP_NS

if TYPE_CHECKING:
    from edgebus.server.listeners.shm_transport import ShmTransport
    from edgebus.server.listeners.stream import Connection

log = logging.getLogger("edgebus.shm")

# Ring sizes, spinning and fairness: edgebus/tuning.py holds each with its reason. A client may
# ask for any power of two in [MIN_RING_BYTES, MAX_RING_BYTES]; 0 gets DEFAULT_RING_BYTES.
DEFAULT_RING_BYTES = tuning.DEFAULT_RING_BYTES
SPIN_NS = tuning.SERVER_SPIN_NS
SPIN_SLICE_NS = tuning.SERVER_SPIN_SLICE_NS
MAX_READS_PER_TURN = tuning.SERVER_MAX_READS_PER_TURN

# The ring's C calls, bound once: a link's wake-up calls them directly instead of through
# edgebus.shm.ring.Ring's methods (a Python frame each; issue 16). Loaded on first attach.
_lib: Any = None
_ffi: Any = None
READ_MAX_FRAMES = READ_MAX_BYTES = 0  # edgebus.shm.ring's, set by load_ring


def load_ring() -> None:
    """Bind the ring's C calls (ShmTransport.attach: once, at the first attach)."""
    global _lib, _ffi, READ_MAX_FRAMES, READ_MAX_BYTES
    if _lib is not None:
        return
    from edgebus.shm import ring as R
    from edgebus.shm._ring import ffi, lib

    _lib, _ffi = lib, ffi
    READ_MAX_FRAMES, READ_MAX_BYTES = R.READ_MAX_FRAMES, R.READ_MAX_BYTES


class ShmLink:
    """One attached connection: its mapping, rings and eventfds (selector data for efd_sup)."""

    def __init__(self, transport: ShmTransport, conn: Connection, mapping: Any, req: Any,
                 resp: Any, efd_sup: int, efd_data: int, efd_space: int) -> None:
        self.t = transport
        self.api = transport.api
        self.dispatch = transport.api.dispatch  # bound once: called for every ring frame
        self.conn = conn
        self.mapping = mapping
        self.req = req  # client -> supervisor; we are its reader
        self.resp = resp  # supervisor -> client; we are its writer
        self.req_d, self.resp_d = req.d, resp.d  # their C descriptors (None once closed)
        self.max_frame = resp.max_frame
        # Frames too large for the ring, sent on the socket instead: a standing fetch ends after
        # such an answer (handlers/standing.py), as the client's rule expects.
        self.socket_frames = 0
        self.efd_sup = efd_sup  # we wait on it
        self.efd_data = efd_data  # we signal it after writing resp (if the client sleeps)
        self.efd_space = efd_space  # we signal it after reading req (if the client waits for room)
        self.pending: deque[bytes] = deque()  # responses that did not fit in the response ring
        self.last_active = time.monotonic_ns()
        self.arrivals = Arrivals()  # the gaps between request frames: whether to poll this ring
        self.spinning = True  # polled by the loop (reader_waiting clear) vs asleep on efd_sup
        self.closed = False
        # The connection's standing fetch (edgebus/server/handlers/standing.py): its correlation
        # id while armed, its parked entry, and what to call once queued answers reach the ring.
        self.standing: int | None = None
        self.standing_w: Any = None
        self.on_room: Any = None
        self.frames_in = 0
        self.frames_out = 0
        # The C data plane's grants ((topic, partition) -> shm_plane.Grant) and their C array.
        self.grants: dict[tuple[str, int], Any] = {}
        self.grant_ptrs: Any = None
        # The parked loop's view of the link (shm_park.py; None when it is off).
        self.park_c: Any = None
        self.park_id = -1
        # Ring bytes of the last frame written into resp (8-aligned, as ring.c places it): a
        # standing fetch answers while at most that much is unread (handlers/standing.py).
        self.last_entry = 0

    def __repr__(self) -> str:
        return f"shm-link({self.conn!r})"

    # --- supervisor -> client ------------------------------------------------------------------
    def queue(self, data: bytes) -> bool:
        """Connection.queue's hook: take a response frame. False = too big for the ring, so the
        caller sends it on the socket instead."""
        if self.closed:
            return True
        n = len(data)
        if n > self.max_frame:
            self.socket_frames += 1
            return False
        if not self.pending:
            # Ring.write inlined (one C call: the frame, and the eventfd write if the client
            # sleeps); cffi passes bytes to a char * as they are.
            rc = _lib.eb_write(self.resp_d, data if type(data) is bytes else _ffi.from_buffer(data),
                               n, self.efd_data)
            if rc == 1:
                self.frames_out += 1
                self.last_entry = (n + 7) & ~7
                return True
            if rc < 0:
                self.resp.write(data)  # raises the ValueError naming what is wrong
        self.pending.append(data)
        self.conn.out_bytes += len(data)  # counts against the connection's output bound
        self._want_space()
        return True

    def _want_space(self) -> None:
        # Ask the client to signal efd_sup when it frees room; if room appeared meanwhile, use it.
        while self.pending and self.resp.prepare_sleep_space(len(self.pending[0])):
            self._flush_pending()

    def _flush_pending(self) -> None:
        conn = self.conn
        while self.pending:
            data = self.pending[0]
            if not self.resp.write(data, self.efd_data):
                return
            self.pending.popleft()
            conn.out_bytes -= len(data)
            self.frames_out += 1
            self.last_entry = (len(data) + 7) & ~7

    # --- client -> supervisor ------------------------------------------------------------------
    def __call__(self, mask: int) -> None:
        """Selector data: the loop calls it when efd_sup is readable (the client wrote frames or
        freed response room)."""
        if not self.t.edge:  # edge-triggered (epoll): no read needed to re-arm the eventfd
            try:  # noqa: SIM105 (once per wake-up: contextlib.suppress costs more)
                os.eventfd_read(self.efd_sup)
            except BlockingIOError:
                pass
        self.service()
        if self.spinning:
            return
        # (Arrivals.window is 0 while the average gap is over SPIN_GAP_NS: not asked, then.)
        arrivals = self.arrivals
        if arrivals.gap <= SPIN_GAP_NS and arrivals.spin_ns(time.monotonic_ns(), SPIN_NS):
            self.t.wake(self)  # frames come close together: poll this ring from the loop a while
            return
        # Frames come far apart (or no core to spare for polling): served, stay asleep. The client
        # cleared reader_waiting when it signalled, so set it again (fence, re-check) or its next
        # frame would not wake us. Frames left unread because the connection is overloaded must
        # not be re-checked here (that spun forever: the whole loop hung); the link is polled by
        # the loop instead, as a link that overloads while busy is, and reads on once its
        # answers drain.
        while self.req_d is not None and _lib.eb_prepare_sleep_data(self.req_d):
            if not self.service():
                self.t.wake(self)
                break

    def service(self) -> bool:
        """Flush pending responses, then dispatch request frames. True if any work was done."""
        if self.closed:
            return False
        api = self.api
        conn = self.conn
        if self.pending or self.on_room is not None:
            self._room_side()
        worked = False
        lib, d = _lib, self.req_d
        plane = self.t.plane
        if (self.grants and plane is not None and not self.pending and not conn.overloaded
                and not conn.closed):
            # The C data plane serves the ring itself (shm_plane.py); a frame it consumed and
            # could not serve comes back for Python, then Python reads on as below.
            k = plane.serve_ring(self)
            if k:
                worked = True
                if not self._dispatch_all(plane.scratch[:k]):
                    return True
            else:
                if plane.took:
                    worked = True
                if plane.drained:
                    d = None  # found empty: spare the Python read below
        for _ in range(MAX_READS_PER_TURN if d is not None else 0):
            if conn.closed or conn.overloaded or self.closed:
                break
            # Ring.read inlined (its C calls without its Python frame): whole frames copied out.
            n = lib.eb_available(d, READ_MAX_BYTES, READ_MAX_FRAMES)
            if n <= 0:
                if n == 0 and lib.eb_readable(d):  # only padding before the next frame
                    lib.eb_read(d, _ffi.NULL, 0, READ_MAX_FRAMES, self.efd_space)
                    continue
                if n < 0:
                    self._corrupt("ring entries are inconsistent")
                    return True
                break
            buf = bytearray(n)
            if lib.eb_read(d, _ffi.from_buffer(buf), n, READ_MAX_FRAMES, self.efd_space) != n:
                self._corrupt("ring entries changed while being read")
                return True
            worked = True
            if not self._dispatch_all(buf):
                return True
            if not lib.eb_readable(d):  # nothing more: spare the empty read
                break
        if worked:
            self.last_active = now = time.monotonic_ns()
            self.arrivals.arrived(now)
            if conn.out and not conn.closed:
                conn.update_interest()  # a frame too large for the ring waits on the socket
        if conn.closed:
            api.close(conn)
        return worked

    def _room_side(self) -> None:
        """Flush pending responses into freed room; then a standing fetch held for room."""
        conn = self.conn
        was_over = conn.overloaded
        if self.pending:
            self._flush_pending()
            if self.pending:
                self._want_space()
            if was_over and not conn.overloaded and not conn.closed:
                self.api.resume(conn)  # room again: the socket side too (it may hold whole frames)
        if self.on_room is not None and not self.pending:
            on_room, self.on_room = self.on_room, None
            on_room(self)  # a standing fetch held until the consumer read (handlers/standing.py)

    def _corrupt(self, why: str) -> None:
        log.warning("%r: request ring is corrupt (%s); closing it", self, why)  # a hostile peer?
        self.api.close(self.conn)

    def _dispatch_all(self, buf: bytearray) -> bool:
        api = self.api
        dispatch = self.dispatch
        conn = self.conn
        mv = memoryview(buf)
        pos, end = 0, len(buf)
        unpack_len = F.FRAME_LENGTH.unpack_from
        unpack_head = F.REQUEST_HEADER_REST.unpack_from
        len_size, head_size = F.FRAME_LENGTH_SIZE, F.REQUEST_HEADER_SIZE
        plane = self.t.plane
        while pos < end:
            if self.grants and plane is not None and not self.pending:
                # the C data plane takes what it can (shm_plane.py); Python the frame it stops at
                pos = plane.serve(self, buf, pos)
                if pos >= end:
                    break
            n = unpack_len(buf, pos)[0]
            if n < F.REQUEST_MIN_LENGTH:
                log.warning("%r sent a frame of %d bytes, shorter than its header; closing it",
                            self, n)
                api.close(conn)
                return False
            key, ver, corr = unpack_head(buf, pos + len_size)
            self.frames_in += 1
            dispatch(conn, key, ver, corr, mv[pos + head_size : pos + len_size + n])
            pos += len_size + n
            if conn.closed:
                api.close(conn)
                return False
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.conn.out_bytes -= sum(len(d) for d in self.pending)
        self.pending.clear()
        for fd in (self.efd_sup, self.efd_data, self.efd_space):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.req = self.resp = self.req_d = self.resp_d = None
        self.standing = self.standing_w = self.on_room = None
        self.grants.clear()
        self.grant_ptrs = None
        self.mapping.close()
