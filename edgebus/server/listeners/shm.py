"""The supervisor's side of the shared-memory transport (docs/ARCHITECTURE.md, "Shared-memory rings").

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
import fcntl
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus import tuning
from edgebus.errors import InvalidRequestError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ServerProtocol
from edgebus.server.dispatch import NO_RESPONSE
from edgebus.server.service import LoopApi, Service
from edgebus.shm import cpu_free, unavailable_reason
from edgebus.shm.spin import Arrivals
from edgebus.tuning import SPIN_GAP_NS

if TYPE_CHECKING:
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
READ_MAX_FRAMES = READ_MAX_BYTES = 0  # edgebus.shm.ring's, set by _load_ring


def _load_ring() -> None:
    global _lib, _ffi, READ_MAX_FRAMES, READ_MAX_BYTES
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


class ShmTransport(Service):
    """All links of the supervisor: the SHM_ATTACH handler, and the rings polled by the loop."""

    polls_when_asked = True  # while some link is polled (spinning), not per paced wake-up

    def __init__(self, api: LoopApi) -> None:
        self.api = api
        self.links: dict[int, ShmLink] = {}  # conn id -> link
        self.spinning: dict[int, ShmLink] = {}  # links polled by the loop
        self.reason = unavailable_reason()
        if self.reason is not None:  # said once at start; clients then use the socket
            log.warning("shared-memory rings are off: %s", self.reason)
        self._ring_ptrs: Any = None  # cffi array of the spinning rings, rebuilt when they change
        self._ring_links: list[ShmLink] = []
        # The C data plane (listeners/shm_plane.py), set by the Broker when its module is built.
        self.plane: Any = None
        # The parked loop (listeners/shm_park.py), started with the plane at the first attach.
        self.park: Any = None
        # Links' eventfds are edge-triggered where the loop's selector allows (epoll): a wake-up
        # then costs no read(2) of the eventfd's count (which just grows; 2**64 writes away from
        # its limit). A stale count wakes nobody; a write while the loop runs is reported at its
        # next select, as with a level-triggered count.
        self.edge = True

    # --- SHM_ATTACH ------------------------------------------------------------------------------
    def attach(self, conn: Connection, corr: int, req: M.ShmAttachRequest) -> Any:
        if self.reason is not None:
            raise InvalidRequestError(f"shared memory is not available on this supervisor: {self.reason}")
        if conn.shm is not None:
            raise InvalidRequestError("this connection already has shared-memory rings")
        if conn.out:
            raise InvalidRequestError("SHM_ATTACH must be sent with no responses outstanding")
        from edgebus.shm import ring as R

        req_cap = _ring_size(req.request_ring_bytes)
        resp_cap = _ring_size(req.response_ring_bytes)
        resp_off = R.ring_bytes(req_cap)
        size = resp_off + R.ring_bytes(resp_cap)
        fds: list[int] = []
        mapping = None
        try:
            memfd = os.memfd_create(f"edgebus-{conn.pid}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            fds.append(memfd)
            os.ftruncate(memfd, size)
            # Sealed: the client can neither shrink the memfd (a SIGBUS in the supervisor) nor
            # grow it; F_SEAL_SEAL stops it from changing the seals.
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            mapping = R.Mapping(memfd, size)
            R.init_ring(mapping, 0, req_cap)
            R.init_ring(mapping, resp_off, resp_cap)
            for _ in range(3):
                fds.append(R.new_eventfd())
            resp = M.ShmAttachResponse(req_cap, resp_cap, resp_off, size, 4)
            data = ServerProtocol.encode_response(corr, resp)
            sent = socket.send_fds(conn.sock, [data], fds)
            if sent != len(data):  # a tiny frame on an idle socket: does not happen in practice
                raise OSError("short send of the SHM_ATTACH response")
        except OSError as e:
            if mapping is not None:
                mapping.close()
            for fd in fds:
                os.close(fd)
            log.warning("%r: SHM_ATTACH failed: %s", conn, e)
            if isinstance(e, BlockingIOError):
                conn.closed = True  # the stream may now hold half a frame
                return NO_RESPONSE
            raise InvalidRequestError(f"cannot set up shared memory: {e}") from None
        os.close(memfd)  # the mapping keeps the memory; the client got its own descriptor
        if _lib is None:
            _load_ring()
        plane = self.plane
        if plane is not None and not plane.ready():  # loaded at the first attach (shm_plane.py)
            self.plane = plane.data.plane = None
        if self.park is None and self.plane is not None:
            from edgebus.server.listeners.shm_park import Park

            self.park = Park.start(self.plane, self.api)  # (None: EDGEBUS_SHM_C_PARK=0)
        link = ShmLink(self, conn, mapping, R.Ring(mapping, 0, req_cap),
                       R.Ring(mapping, resp_off, resp_cap), fds[1], fds[2], fds[3])
        conn.shm = link
        self.links[conn.id] = link
        if not self.api.register_edge(link.efd_sup, link):
            self.edge = False  # the same for every link: the loop's selector decides
        if self.park is not None:
            self.park.add(link)  # served in the parked wait when fast (shm_park.py)
        self._set_spinning(link, True)
        log.debug("%r attached rings of %d + %d bytes", conn, req_cap, resp_cap)
        return NO_RESPONSE

    # --- loop hooks ------------------------------------------------------------------------------
    def wake(self, link: ShmLink) -> None:
        if not link.spinning and not link.closed:
            link.req.cancel_sleep_data()
            self._set_spinning(link, True)

    def poll(self, idle: bool) -> bool:
        """After each select: service the links being polled; put quiet ones to sleep. When
        idle (the loop has nothing else to do) wait in C for up to SPIN_SLICE_NS first when a
        core is free, and put every quiet link to sleep at once when none is. True while some
        link is still polled: the loop must not sleep in select."""
        if not self.spinning:
            return False
        # Nothing else to do and no core to spare: quiet links sleep now rather than being polled
        # by the loop until SPIN_NS passes (a poll in Python takes the core the peer needs).
        sleep_now = False
        if idle:
            if cpu_free(time.monotonic_ns()):  # spin only with a core to spare
                ptrs = self._ptrs()
                from edgebus.shm._ring import lib

                lib.eb_wait_any(ptrs, len(self._ring_links), SPIN_SLICE_NS)
            else:
                sleep_now = True
        now = time.monotonic_ns()
        for link in list(self.spinning.values()):
            if link.closed:
                self._set_spinning(link, False)
                continue
            if link.service():
                continue
            if sleep_now or now - link.last_active > link.arrivals.window(SPIN_NS):
                # Announce sleep, fence, re-check (the C side): data that raced in is served.
                if link.req.prepare_sleep_data():
                    link.service()
                else:
                    self._set_spinning(link, False)
        return bool(self.spinning)

    def _set_spinning(self, link: ShmLink, on: bool) -> None:
        link.spinning = on
        if on:
            self.spinning[link.conn.id] = link
        else:
            self.spinning.pop(link.conn.id, None)
        self._ring_ptrs = None
        self.api.want_poll(self, bool(self.spinning))

    def _ptrs(self) -> Any:
        if self._ring_ptrs is None:
            from edgebus.shm._ring import ffi

            self._ring_links = list(self.spinning.values())
            self._ring_ptrs = ffi.new("eb_ring *[]", [ln.req.d for ln in self._ring_links])
        return self._ring_ptrs

    def connection_closed(self, conn: Connection) -> None:
        """Reclaim the connection's rings at once (the socket is gone or going)."""
        link = self.links.pop(conn.id, None)
        if link is None:
            return
        self._set_spinning(link, False)
        if self.park is not None:
            self.park.remove(link)
        self.api.unregister(link.efd_sup)
        link.close()

    def stats(self) -> dict[str, Any]:
        return {"links": len(self.links), "spinning": len(self.spinning),
                "pending_responses": sum(len(ln.pending) for ln in self.links.values())}


def _ring_size(asked: int) -> int:
    if asked <= 0:
        return DEFAULT_RING_BYTES
    if asked & (asked - 1) or not F.MIN_RING_BYTES <= asked <= F.MAX_RING_BYTES:
        raise InvalidRequestError(
            f"ring size {asked} must be a power of two in {F.MIN_RING_BYTES}..{F.MAX_RING_BYTES}")
    return asked

