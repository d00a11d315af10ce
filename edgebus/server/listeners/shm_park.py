"""The parked loop: the loop's wait done in C, serving granted shm links and granted Unix-socket
connections without a Python turn (docs/ARCHITECTURE.md, "The C data plane"; edgebus/shm/park.c).

With the C data plane on (shm_plane.py, sock_plane.py) a steady producer's frame still cost the
loop a Python turn: the wake-up, the grant checks, the C call, the sync-back. Here, when the loop
would sleep (nothing polled, nothing pending), it calls `wait` instead of epoll.poll, and C
waits on the loop's own epoll (one epoll_wait per wake-up; every descriptor stays registered
there by Python as ever, and C's table `byfd` says which are links): it serves the wake-ups of
shm links and the reads of socket connections Python marked `fast` as their own callbacks would
(eb_plane_ring then sleep announced again; eb_plane_sock_read), and comes back for anything
else: the loop's other descriptors, the deadline, a signal, or a link that needs Python (not
fast, a declined frame, a sync-back due, frames close enough together to poll, an append that
someone else waits on and C did not answer, a socket read C could not finish).

Ownership, kept by where the calls are: C serves a link only inside `wait`, which the loop
thread calls in place of its epoll wait, so no Python of the supervisor's runs between C's
appends; `_after`, the first thing after each call, queues what C left unsent (rests of standing
answers a consumer's socket took only part of, a socket's answers it did not take), then syncs
back every link C served (Plane.sync: partition, segment, statistics, counters, parked fetches
told) before any other Python runs, and `_before`, right before each call, checks every grant
again (Plane._checked: ACL, config, retention, roll, delete, disk guard, stop, all looked at
directly). So every change Python makes to a partition happens between a sync-back and the next
check, as with the per-wake-up call.
"""

from __future__ import annotations

import math
import time
from selectors import EVENT_READ
from typing import TYPE_CHECKING, Any

from edgebus import tuning
from edgebus.server.handlers.standing import RECHECK_S, SOCKET_RECHECK_MAX_S
from edgebus.server.listeners import shm_plane, sock_plane
from edgebus.shm.spin import GAP_CAP_NS
from edgebus.tuning import SPIN_GAP_NS

if TYPE_CHECKING:
    from edgebus.server.listeners.shm import ShmLink
    from edgebus.server.listeners.shm_plane import Plane
    from edgebus.server.listeners.sock_plane import SockLink
    from edgebus.server.service import LoopApi

_LOOP, _TIMEOUT, _PYTHON, _EINTR, _ERROR = 0, 1, 2, 3, 4  # park.c's EB_PARK_*
# park.c's EB_TO_PY_*: why a link's wake-up went to Python (`edgebus status`)
_TO_PY = ("not_fast", "declined", "ring", "after_append", "spin", "standing", "socket")
_READ = EVENT_READ


class Park:
    """The C call's state and its table of links (one, held by the Plane once a ring link
    attached or a socket connection was granted: `start`)."""

    def __init__(self, plane: Plane, api: LoopApi, main_fd: int) -> None:
        ffi, lib = shm_plane._ffi, shm_plane._lib
        self.ffi, self.lib = ffi, lib
        self.plane = plane
        self.api = api
        P = self.P = ffi.new("eb_park *")
        P.main_fd = main_fd
        P.deadline_ns = -1
        P.spin_gap_ns = SPIN_GAP_NS
        P.gap_cap_ns = GAP_CAP_NS
        P.scratch = plane._scratch_p
        P.cap = shm_plane.SCRATCH_BYTES
        P.max_frames = shm_plane.RING_FRAMES
        P.k_link = P.s_fd = -1
        # C's own holds of socket consumers' fetches look at SIOCOUTQ on Python's schedule
        P.hold_ns = int(RECHECK_S * 1e9)
        P.hold_max_ns = int(SOCKET_RECHECK_MAX_S * 1e9)
        # The call every serve uses: the socket plane's once it has made its buffers (`_before`
        # switches to it), until then one without buffers (socket consumers left to Python).
        self.call = P.call = ffi.new("eb_plane_call *")
        self._sock_ready = False
        self.fds = lib.EB_PARK_FDS
        self.links: dict[int, Any] = {}  # park id -> ShmLink or SockLink
        self.socks: dict[int, SockLink] = {}  # socket fd -> its SockLink, while in byfd
        # Links that hold grants (Plane.granted tells): the only ones `_before` looks at, so
        # that idle links cost a turn nothing. A link leaves when its grants are gone.
        self.granted: dict[int, Any] = {}
        plane.on_grant = self._on_grant
        self.returns = [0, 0, 0, 0, 0]  # eb_park_wait's returns by why (`edgebus status`)
        self._next = 0

    @classmethod
    def start(cls, plane: Plane, api: LoopApi) -> Park | None:
        """The loop waits in C from now on (at the first shm attach or granted socket), if its
        selector is an epoll and EDGEBUS_SHM_C_PARK is not 0."""
        if plane.park is None and tuning.C_PARK:
            main_fd = api.park_fd()
            if main_fd >= 0:
                plane.park = cls(plane, api, main_fd)
                api.set_parked(plane.park.wait)
        return plane.park

    # --- links -----------------------------------------------------------------------------------
    def _new(self, link: Any, fd: int) -> Any:
        c = link.park_c = self.ffi.new("eb_park_link *")
        c.id = link.park_id = self._next
        c.fd = fd
        self._next += 1
        self.links[c.id] = link
        if fd < self.fds:  # (a higher descriptor is served by its Python callback)
            self.P.byfd[fd] = c
        return c

    def add(self, link: ShmLink) -> None:
        """A new ring link: its eventfd (registered edge-triggered in the loop's epoll by
        ShmTransport, the link its callback) is C's to serve when fast."""
        c = self._new(link, link.efd_sup)
        c.req, c.resp = link.req_d, link.resp_d
        c.efd_space, c.efd_data = link.efd_space, link.efd_data

    def add_sock(self, link: SockLink) -> None:
        """A socket connection's first grant (sock_plane.py): its socket is C's to read when
        fast; it counts as granted from now on."""
        c = self._new(link, link.fd)
        c.sock = 1
        self.socks[link.fd] = link
        self.granted[link.park_id] = link

    def _on_grant(self, link: ShmLink) -> None:
        if link.park_c is not None:
            self.granted[link.park_id] = link

    def remove(self, link: Any) -> None:
        """Before the link's descriptor is closed (or, a socket's, when its connection closes):
        out of C's table, its last appends synced."""
        self.granted.pop(link.park_id, None)
        if self.links.pop(link.park_id, None) is not None:
            c = link.park_c
            if c.fd < self.fds and self.P.byfd[c.fd] == c:
                self.P.byfd[c.fd] = self.ffi.NULL
            if c.sock:
                self.socks.pop(c.fd, None)
            if c.frames:  # closed during `_after` (another link's on_append): its appends stay
                self.plane.sync(link, c.frames, c.answers)
                if c.sock:
                    link.sp.frames += c.frames
                c.frames = c.answers = 0
            link.park_c = None

    # --- the loop's wait -------------------------------------------------------------------------
    def wait(self, deadline: float) -> list[tuple[int, int]]:
        """Loop.run's wait when it would sleep until `deadline` (monotonic s, inf: none): the
        loop's ready descriptors as epoll.poll gives them, after C served what it could."""
        P = self.P
        P.deadline_ns = -1 if deadline == math.inf else int(deadline * 1e9)
        self._before()
        self.lib.eb_park_wait(P)
        self._after()
        why = P.why
        self.returns[why] += 1
        if why == _ERROR:
            raise OSError(P.err, "epoll_wait failed in the parked loop")
        n = P.nev
        if not n:
            return []  # timeout, links served, or a signal (its handler runs now)
        fds, masks = P.ev_fd, P.ev_mask
        return [(fds[i], masks[i]) for i in range(n)]

    def _before(self) -> None:
        """Mark each link fast when C may serve it, its grants checked now."""
        plane = self.plane
        P = self.P
        P.budget = plane.disk._budget
        if not self._sock_ready:
            sp = plane.sockets
            if sp is not None and sp.buf_p is not None:  # the socket plane's buffers, made
                self.call = P.call = sp.call
                P.sbuf, P.scap = sp.buf_p, len(sp.buf)
                self._sock_ready = True
        data = plane.data
        waiters = data.waiters.by_partition
        listened = data.listened if data.append_listeners else None
        # Invariant: each partition is granted to one fast link at most. Every grant holds its
        # own copy of the partition's append state (log end, segment size, ...), made current
        # only here; two links appending to one partition in one wait would both write the
        # same offsets. A link sharing a partition with a fast one is served by Python, which
        # runs only after the sync-back.
        taken: set[tuple[str, int]] = set()
        for link in list(self.granted.values()):
            c = link.park_c
            conn = link.conn
            if not link.grants:
                c.fast = 0
                if not c.sock:  # (a socket's stays: a grant comes back without telling)
                    del self.granted[link.park_id]
                continue
            if c.sock:
                # what Connection.on_event asks before SockLink.read, and: nothing buffered
                # (C reads from the start of a frame), no held answer to look at after a request
                if (conn.closed or conn.plane_link is not link or conn.out or conn.overloaded
                        or conn.awaiting or conn.events != _READ or conn.on_room is not None
                        or conn.shm is not None or conn.proto.frames.buffered()):
                    c.fast = 0
                    continue
            elif link.pending or link.on_room is not None or link.spinning \
                    or conn.overloaded or conn.closed or link.closed:
                c.fast = 0
                continue
            ptrs = plane._checked(link)
            n = len(link.grants)
            if not n or not taken.isdisjoint(link.grants):
                c.fast = 0
                continue
            taken.update(link.grants)
            c.grants, c.ng, c.fast = ptrs, n, 1
            # an append someone else waits on goes to Python (on_append): a parked fetch that is
            # not the armed standing one, or an append listener of that partition (Kafka's)
            after = False
            if waiters or listened is not None:
                for key, g in link.grants.items():
                    if (g.w is None and key in waiters) or (listened is not None and listened(key)):
                        after = True
                        break
            c.py_after = after
            if not c.sock:
                a = link.arrivals
                c.arr_last, c.arr_gap = a.last, a.gap

    def _after(self) -> None:
        """What C left unsent queued first, then every link C served synced back, then the links
        and the socket read it left to Python served."""
        P = self.P
        plane = self.plane
        plane.disk._budget = P.budget
        call = self.call
        if call.rest_len:
            # Standing answers a consumer's socket took only part of (sockplane.c): their rest
            # is queued before anything the sync-back's on_append may queue on that connection.
            for link in list(self.granted.values()):
                for g in link.grants.values():
                    if g.c.w_rest_len:
                        sock_plane.queue_rest(g, call)
            call.rest_len = 0
        s_link = None
        if P.s_fd >= 0:
            s_link = self.socks.get(P.s_fd)
            if s_link is not None:
                s_link.unsent(call)  # its answers the socket did not take, before any other
        now = 0
        # (only granted links are ever fast; a copy: a sync-back's on_append may close a
        # connection, and with it a link)
        for link in list(self.granted.values()):
            c = link.park_c
            if c is None:  # closed by an earlier link's sync-back
                continue
            frames = c.frames
            if not frames and not c.answers:
                continue
            plane.sync(link, frames, c.answers)
            c.frames = c.answers = 0
            if c.sock:
                link.sp.frames += frames
                continue
            now = now or time.monotonic_ns()
            a = link.arrivals
            a.last, a.gap = c.arr_last, c.arr_gap
            link.last_active = now
        nout = P.nout
        if nout:
            k_link, out = P.k_link, [P.out[i] for i in range(nout)]
            # A copy of the declined frame now: a wake-up below (or Python's path in the
            # socket read's rest) may reuse the scratch.
            kframe = plane.scratch[: P.k] if k_link >= 0 else None
        if s_link is not None:
            s_link.resume(P.s_got, P.s_at)  # the rest of its read: Python's, as SockLink.read's
        if not nout:
            return
        for pid in out:
            ln = self.links.get(pid)
            if ln is None:
                continue
            ln.park_c.queued = 0
            if ln.closed:
                continue
            plane.offline_failed(ln)
            # the frame C consumed and declined: Python's dispatch, first
            if pid == k_link and kframe is not None and not ln._dispatch_all(kframe):
                continue
            ln(EVENT_READ)  # its wake-up as the loop's epoll would have called it

    def stats(self) -> dict[str, Any]:
        """`edgebus status`: wake-ups and socket reads served in C without a Python turn, and
        the waits' returns."""
        r = self.returns
        t = self.P.to_py
        return {"wakeups": int(self.P.served), "socket_reads": int(self.P.sock_reads),
                "held_answers": int(self.call.held_answers),
                "returns_loop": r[_LOOP], "returns_timeout": r[_TIMEOUT],
                "returns_python": r[_PYTHON], "returns_signal": r[_EINTR],
                "to_python": {why: int(t[i]) for i, why in enumerate(_TO_PY)}}
