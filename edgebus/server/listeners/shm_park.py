"""The parked loop: the loop's wait done in C, serving granted shm links without a Python turn
(docs/ARCHITECTURE.md, "The C data plane"; edgebus/shm/park.c).

With the C data plane on (shm_plane.py) a steady shm producer's frame still cost the loop a
Python turn: the wake-up, the grant checks, the C call, the sync-back. Here every shm link's
eventfd goes into one epoll set of its own (the park set), watched by the loop's epoll; when the
loop would sleep (nothing polled, nothing pending) it calls `wait` instead of epoll.poll, and C
waits on the loop's epoll, serving the wake-ups of links Python marked `fast` as the link's own
wake-up would (eb_plane_ring, then sleep announced again). It comes back for anything else: the
loop's other descriptors, the deadline, a signal, or a link that needs Python (not fast, a
declined frame, a sync-back due, frames close enough together to poll, an append that someone
else waits on and C did not answer).

Ownership, kept by where the calls are: C serves a link only inside `wait` or `_on_ready`, which
the loop thread calls in place of its epoll wait, so no Python of the supervisor's runs between
C's appends; `_after`, the first thing after each call, syncs back every link C served
(Plane.sync: partition, segment, statistics, counters, parked fetches told) before any other
Python runs, and `_before`, right before each call, checks every grant again (Plane.checked:
ACL, config, retention, roll, delete, disk guard, stop, all looked at directly). So every change
Python makes to a partition happens between a sync-back and the next check, as with the
per-wake-up call.
"""

from __future__ import annotations

import math
import select
import time
from selectors import EVENT_READ
from typing import TYPE_CHECKING, Any

from edgebus.server.listeners import shm_plane
from edgebus.shm.spin import GAP_CAP_NS
from edgebus.tuning import SPIN_GAP_NS

if TYPE_CHECKING:
    from edgebus.server.listeners.shm import ShmLink
    from edgebus.server.listeners.shm_plane import Plane
    from edgebus.server.service import LoopApi

_LOOP, _TIMEOUT, _PYTHON, _EINTR, _ERROR = 0, 1, 2, 3, 4  # park.c's EB_PARK_*
# park.c's EB_TO_PY_*: why a link's wake-up went to Python (`edgebus status`)
_TO_PY = ("not_fast", "declined", "ring", "after_append", "spin", "standing")


class Park:
    """The park set and the C call's state (one, held by ShmTransport once a link attached)."""

    def __init__(self, plane: Plane, api: LoopApi, main_fd: int) -> None:
        ffi, lib = shm_plane._ffi, shm_plane._lib
        self.ffi, self.lib = ffi, lib
        self.plane = plane
        self.api = api
        self.ep = select.epoll()  # the park set (its fd is closed with the object)
        P = self.P = ffi.new("eb_park *")
        P.main_fd = main_fd
        P.park_fd = self.ep.fileno()
        P.deadline_ns = -1
        P.spin_gap_ns = SPIN_GAP_NS
        P.gap_cap_ns = GAP_CAP_NS
        P.scratch = plane._scratch_p
        P.cap = shm_plane.SCRATCH_BYTES
        P.max_frames = shm_plane.RING_FRAMES
        P.k_link = -1
        self.links: dict[int, ShmLink] = {}  # park id -> link
        # Links that hold grants (Plane.granted tells): the only ones `_before` looks at, so
        # that idle links cost a turn nothing. A link leaves when its grants are gone.
        self.granted: dict[int, ShmLink] = {}
        plane.on_grant = self._on_grant
        self.returns = [0, 0, 0, 0, 0]  # eb_park_wait's returns by why (`edgebus status`)
        self._next = 0
        api.register(self.ep.fileno(), self._on_ready)  # level-triggered: ready while any link is

    # --- links -----------------------------------------------------------------------------------
    def add(self, link: ShmLink) -> None:
        """Watch a new link's eventfd in the park set (in place of the loop's epoll)."""
        c = link.park_c = self.ffi.new("eb_park_link *")
        c.req, c.resp = link.req_d, link.resp_d
        c.efd_space, c.efd_data = link.efd_space, link.efd_data
        c.id = self._next
        link.park_id = self._next
        self._next += 1
        self.links[c.id] = link
        if self.lib.eb_park_add(self.P.park_fd, link.efd_sup, c) != 0:
            raise OSError(self.ffi.errno, "cannot add a link's eventfd to the park set")

    def _on_grant(self, link: ShmLink) -> None:
        if link.park_c is not None:
            self.granted[link.park_id] = link

    def remove(self, link: ShmLink) -> None:
        """Before the link's eventfd is closed."""
        self.granted.pop(link.park_id, None)
        if self.links.pop(link.park_id, None) is not None:
            self.lib.eb_park_remove(self.P.park_fd, link.efd_sup)
            c = link.park_c
            if c.frames:  # closed during `_after` (another link's on_append): its appends stay
                self.plane.sync(link, c.frames, c.answers)
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
        if why == _LOOP:
            n = P.nev
            fds, masks = P.ev_fd, P.ev_mask
            return [(fds[i], masks[i]) for i in range(n)]
        if why == _ERROR:
            raise OSError(P.err, "epoll_wait failed in the parked loop")
        return []  # timeout, links served, or a signal (its handler runs now)

    def _on_ready(self, mask: int) -> None:
        """The park set was ready while the loop waited in Python (a busy turn)."""
        self._before()
        self.lib.eb_park_drain(self.P)
        self._after()

    def _before(self) -> None:
        """Mark each link fast when C may serve its wake-ups, its grants checked now."""
        plane = self.plane
        P = self.P
        P.budget = plane.disk._budget
        data = plane.data
        waiters = data.waiters.by_partition
        listeners = bool(data.append_listeners)
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
                del self.granted[link.park_id]
                continue
            if link.pending or link.on_room is not None or link.spinning \
                    or conn.overloaded or conn.closed or link.closed:
                c.fast = 0
                continue
            ptrs = plane._checked(link)
            n = len(link.grants)
            if not n or not taken.isdisjoint(link.grants):
                c.fast = 0
                continue
            if self._socket_watcher(link):
                c.fast = 0  # a Unix-socket consumer's standing fetch: Python's call answers it
                continue
            taken.update(link.grants)
            c.grants, c.ng, c.fast = ptrs, n, 1
            after = listeners
            if not after and waiters:
                for key, g in link.grants.items():
                    if g.w is None and key in waiters:
                        after = True
                        break
            c.py_after = after
            a = link.arrivals
            c.arr_last, c.arr_gap = a.last, a.gap

    @staticmethod
    def _socket_watcher(link: Any) -> bool:
        """Whether a grant of the link would answer a Unix-socket consumer's standing fetch: the
        wait's calls have no buffer for the rest of an answer the socket takes only part of
        (sockplane.c), so such a link's wake-ups take Python's call, whose does."""
        return any(g.c.w_sock >= 0 for g in link.grants.values())

    def _after(self) -> None:
        """Sync back every link C served, then serve the links it left to Python."""
        P = self.P
        plane = self.plane
        plane.disk._budget = P.budget
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
            now = now or time.monotonic_ns()
            plane.sync(link, frames, c.answers)
            c.frames = c.answers = 0
            a = link.arrivals
            a.last, a.gap = c.arr_last, c.arr_gap
            link.last_active = now
        if not P.nout:
            return
        k_link, out = P.k_link, [P.out[i] for i in range(P.nout)]
        # A copy of the declined frame now: an earlier link's wake-up below reuses the scratch.
        kframe = plane.scratch[: P.k] if k_link >= 0 else None
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
        """`edgebus status`: wake-ups served in C without a Python turn, and the waits' returns."""
        r = self.returns
        t = self.P.to_py
        return {"wakeups": int(self.P.served), "returns_loop": r[_LOOP],
                "returns_timeout": r[_TIMEOUT], "returns_python": r[_PYTHON],
                "returns_signal": r[_EINTR],
                "to_python": {why: int(t[i]) for i, why in enumerate(_TO_PY)}}
