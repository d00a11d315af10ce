"""The C data plane's Python half: grants, their checks, and the sync-back (docs/ARCHITECTURE.md,
"The C data plane").

A link with a grant starts its wake-up with one C call (edgebus/shm/plane.c eb_plane_ring) that
copies its request frames out of the ring one at a time and takes, in order, the plain PRODUCEs
to partitions the link holds a *grant* for (eb_plane_produce): it checks, stamps and appends each
batch, answers a standing fetch parked at exactly its offset, and writes the acks=written answer
into the response ring. A frame it consumed and cannot take comes back to Python, which
dispatches it and reads on as always (a buffer Python read also goes through eb_plane_produce,
`serve`). Nothing else changes hands: the call runs on the loop thread, so the loop stays the
only writer of every partition.

A grant is made when Python's own path has just appended a plain PRODUCE from the link's
connection to the partition (`DataHandlers.produce_fields` calls `granted`). It copies what the
C call needs of the partition (log end, active segment, its fd, size, index state, the topic's
limits) into a C struct. Before every C call each grant is checked against what could change
the answer, all looked at directly (no epoch to forget to bump):
- the partition's write generation (`_gen`: every append, roll, cut-back and directory change
  bumps it), its active segment, config object (a config change or a mirror setting replaces
  it), log start (retention, DeleteRecords), offline and closed (a deleted topic's partitions
  are closed);
- the supervisor stopping, the disk guard being low;
- the connection's `allowed` APIs and the access-control cache the dispatcher's PRODUCE fast
  path uses (its generation moves on every ACL reload).
A grant that fails is refreshed when Python's checks still hold, else dropped; the C call also
declines on its own whatever needs Python (a roll, an index entry or recent-list trim due, the
disk budget spent, no room for the answer, a write error). After the call, `_sync` brings the
partition, segment, statistics and connection counters to where Python's path would have left
them, and tells the parked fetches (`on_append`) as that path does.

This module holds the plane's loading, its grants' checks and its calls; the grant itself is
listeners/plane_grant.py, the sync-back listeners/plane_sync.py, the socket half
listeners/sock_plane.py, and the parked loop listeners/shm_park.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus import tuning
from edgebus.errors import EdgebusError
from edgebus.log.partition import TAIL_BATCH_BYTES
from edgebus.log.segment import RECENT_BATCHES
from edgebus.protocol import messages as M
from edgebus.server.acl.checks import TOPIC_WRITE
from edgebus.server.listeners.plane_grant import Grant, write_failed
from edgebus.server.listeners.plane_sync import SyncBack
from edgebus.tuning import STANDING_WINDOW

if TYPE_CHECKING:
    from edgebus.server.disk import DiskGuard
    from edgebus.server.handlers.data import DataHandlers


# The C module is loaded at the first SHM_ATTACH (`load`), not at import: the broker imports
# this module at start, and an idle supervisor with no shm client need not map it (issue 16's
# idle RSS goal). Until then `available` only asks whether it is there to load.
_ffi: Any = None
_lib: Any = None


def available() -> bool:
    """Whether the C data plane can run here (its module built, and not switched off:
    EDGEBUS_SHM_C_PLANE); `load` still declines a stale build."""
    if _lib is not None:
        return True
    if not tuning.C_PLANE:
        return False
    from importlib.util import find_spec

    try:
        return find_spec("edgebus.shm._plane") is not None
    except ImportError:
        return False


def load() -> bool:
    """Load the C module (at the first SHM_ATTACH). False: not built, or a stale build (its tail
    copy would differ), and every frame goes to Python."""
    global _ffi, _lib
    if _lib is not None:
        return True
    try:
        from edgebus.shm._plane import ffi, lib
    except ImportError:  # not built (no compiler at install)
        return False
    if lib.EB_PLANE_TAIL != TAIL_BATCH_BYTES or lib.EB_PLANE_RECENT != 2 * RECENT_BATCHES:
        return False
    _ffi, _lib = ffi, lib
    return True


MAX_GRANTS = 8  # partitions per link served in C; more are served in Python
# A socket consumer's fetch held in C (sockplane.c, "C's own hold") keeps the batches appended
# meanwhile in a buffer of this size per grant (made at the first such consumer); more, and the
# hold is Python's. 32 KiB is ~190 batches of one 100 B record: ~19 ms at 10,000/s, longer
# than a consumer that keeps up is ever behind. (The answer's rest, should the socket take
# only part of it, must fit sock_plane.REST_BYTES.)
HOLD_BYTES = 32 * 1024
_WHY_FULL, _WHY_WRITE, _WHY_RING_END = 7, 10, 11  # plane.c's EB_PLANE_FULL, _WRITE, _RING_END
# eb_plane_ring: frames up to this size are served straight from the ring, through one scratch
# buffer (larger ones are read by Python as before); at most this many per call.
SCRATCH_BYTES = 64 * 1024
RING_FRAMES = 32
_PRODUCE = int(M.Api.PRODUCE)


class Plane(SyncBack):
    """The supervisor's C data plane for shm links (one, held by ShmTransport)."""

    def __init__(self, data: DataHandlers, disk: DiskGuard, acl: Any) -> None:
        self.data = data
        self.disk = disk
        self.acl = acl  # the dispatcher's Authorizer (None: access control off)
        # made by `ready` at the first SHM_ATTACH, with the C module
        self.call: Any = None
        self._ffi: Any = None  # (the sync-back's, plane_sync.py)
        self.scratch = bytearray()  # eb_plane_ring's copy of the frame it serves
        self._scratch_p: Any = None
        self.took = 0  # frames the last serve_ring took
        self.drained = False  # whether the last serve_ring found the ring empty
        self.frames = 0  # PRODUCEs appended and answered in C (`edgebus status`: shm_plane)
        self.standing_answers = 0  # standing fetches answered in C
        # Unix-socket connections served in C too (listeners/sock_plane.py SocketPlane, set by
        # the Broker unless EDGEBUS_SOCKET_C_PLANE=0).
        self.sockets: Any = None
        self.on_grant: Any = None  # called with a link at its new grant (shm_park.py)
        # The parked loop (shm_park.Park.start: at the first shm attach or granted socket).
        self.park: Any = None

    def ready(self) -> bool:
        """Load the C module and make the call's buffers (ShmTransport.attach, first link).
        False: it cannot load, and the caller drops the plane."""
        if self.call is None:
            if not load():
                return False
            self._ffi = _ffi
            self.call = _ffi.new("eb_plane_call *")
            self.scratch = bytearray(SCRATCH_BYTES)
            self._scratch_p = _ffi.from_buffer(self.scratch)
        return True

    # --- grants ----------------------------------------------------------------------------------
    def granted(self, conn: Any, p: Any) -> None:
        """DataHandlers.produce_fields: Python's path just appended a plain PRODUCE (acks none or
        written) from `conn` to `p`. Its link may now append the next ones in C."""
        link: Any = getattr(conn, "shm", None)
        if link is None and self.sockets is not None:
            link = self.sockets.link(conn)  # a Unix-socket connection's (sock_plane.py)
        grants = getattr(link, "grants", None)  # (a ShmLink's or SockLink's; None for anything else)
        if grants is None or link.closed:
            return
        key = (p.topic, p.partition)
        g = grants.get(key)
        if g is None:
            if len(grants) >= MAX_GRANTS or len(p.topic.encode()) > _lib.EB_PLANE_TOPIC_MAX \
                    or not self.permitted(conn, p):
                return
            g = grants[key] = Grant(p, _ffi)
            link.grant_ptrs = None
            if self.on_grant is not None and link is getattr(conn, "shm", None):
                self.on_grant(link)  # the parked loop looks at this ring link from now on
        g.refresh()

    def permitted(self, conn: Any, p: Any) -> bool:
        """What Python's PRODUCE path would check of this connection and partition, once the
        batch is a plain one: all must hold for the C call to take the next frame."""
        if self.data.api.stopping or self.disk.low or p.offline or p._closed \
                or p.config.mirror_of or p.topic.startswith("__"):
            return False
        if conn.allowed is not None and _PRODUCE not in conn.allowed:
            return False
        acl = self.acl
        if acl is None:
            return True
        # the dispatcher's fast-path condition: the connection's cached "yes" for the topic
        st = conn.acl
        return bool(st is not None and st.gen == acl.gen and st.node is conn.node
                    and (st.all or st.cache[TOPIC_WRITE].get(p.topic)))

    def _checked(self, link: Any) -> Any:
        """The link's grants, each checked and brought up to date, as the C call's array.
        (`permitted`'s checks inlined: this runs once per wake-up.)"""
        conn = link.conn
        grants = link.grants
        data = self.data
        acl = self.acl
        st = conn.acl
        allowed = conn.allowed
        common = not (data.api.stopping or self.disk.low
                      or (allowed is not None and _PRODUCE not in allowed)
                      or (acl is not None and (st is None or st.gen != acl.gen
                                               or st.node is not conn.node)))
        for g in list(grants.values()):
            p = g.p
            if not common or p.offline or p._closed or p.config is not g.cfg \
                    or (acl is not None and not (st.all or st.cache[TOPIC_WRITE].get(g.topic))):
                if not self.permitted(conn, p):  # (a config object replaced may still permit)
                    del grants[(g.topic, p.partition)]
                    link.grant_ptrs = None
                    continue
                g.refresh()
            elif p._gen != g.gen or p.log_start_offset != g.start or p._segments[-1] is not g.seg:
                g.refresh()
            self._watch(link, g)
        if link.grant_ptrs is None:
            link.grant_ptrs = _ffi.new("eb_grant *[]", [g.c for g in grants.values()])
        return link.grant_ptrs

    def _watch(self, link: Any, g: Grant) -> None:
        """Arm the grant's standing-fetch slot when the partition's only waiter is a standing
        fetch on another shm link that StandingFetches.push would answer from the next batch
        (its conditions that do not depend on the batch, checked here; the C call checks the
        rest: the offset, min_bytes, and that the consumer has read every answer). A socket
        consumer's fetch held until it reads (may_answer's, indexed under the partition) is
        armed as held: C looks at SIOCOUTQ per append as may_answer would, and only once it is 0
        do the appends go to Python's on_append (before, every append did, to find it not 0)."""
        c = g.c
        g.w = None
        c.w_ring = _ffi.NULL
        c.w_sock = -1
        c.w_held = c.w_ready = c.w_hold = c.w_listed = 0
        data = self.data
        key = (g.topic, g.p.partition)
        parked = data.waiters.by_partition.get(key)
        if (not parked or len(parked) != 1 or data.txn_filter is not None
                or data.api.output_budget_used  # (on_append then leaves parked fetches waiting)
                or (data.append_listeners and data.listened(key))):
            return
        [w] = parked
        if not w.standing:
            return
        conn = w.conn
        other: Any = getattr(conn, "shm", None)
        if w.recheck_s:  # held until its consumer reads
            if (other is None and not w.suspended and self.sockets is not None
                    and conn is not link.conn and conn.standing_w is w and not conn.closed
                    and not conn.out and not conn.overloaded and conn.standing_fd >= 0):
                g.w = w
                c.w_sock = conn.standing_fd
                c.w_held = 1
            return
        if other is None:  # a Unix-socket consumer's: its state is on the Connection
            sp = self.sockets
            if (sp is None or conn is link.conn or conn.standing_w is not w or conn.closed
                    or conn.out or conn.overloaded or conn.standing_fd < 0):
                return
            if sp.rest is None:  # (the buffer for a rest the socket does not take, made once)
                sp.make_buffers()
        elif (other is link or other.standing_w is not w or conn.closed or other.closed
              or other.pending or conn.overloaded):
            return
        req = w.request
        parts = req.partitions
        if len(parts) != 1 or parts[0].offset != g.p.log_end_offset:
            return
        check = data.standing.check
        if check is not None and g.w_checked != (w, self.acl.gen):
            # FETCH's access-control check, as push makes it per answer; its answer for this
            # fetch changes only with the rules (their generation)
            try:
                check(conn, req)
            except EdgebusError:
                return  # Python's path answers the refusal
            g.w_checked = (w, self.acl.gen)
        g.w = w
        if other is None:
            c.w_sock = conn.standing_fd  # answered as push answers a socket (sockplane.c)
            # held in C when its consumer has not read (in a parked wait): within read_fetch's
            # limit, so that the held answer is the one Python's on_append would give
            if g.hbuf is None:
                g.hbuf = _ffi.new("char[]", HOLD_BYTES)
                c.w_hbuf = g.hbuf
                c.w_hcap = HOLD_BYTES
            c.w_hmax = min(req.max_bytes, F.MAX_FETCH_RESPONSE_BYTES, parts[0].max_bytes)
        else:
            c.w_ring = other.resp_d
            c.w_efd = other.efd_data
        c.w_corr = w.correlation_id
        c.w_offset = parts[0].offset
        c.w_min_bytes = req.min_bytes
        # caught_up's window (the consumer's last entry). A consumer link that also produces
        # gets acks written by the C call that this window would not count: there the ring must
        # be empty, as before. (A socket consumer's rule is sockplane.c's: nothing unread.)
        c.w_window = -1 if other is None or other.grants else other.last_entry
        c.w_room = STANDING_WINDOW

    # --- the call --------------------------------------------------------------------------------
    def serve(self, link: Any, buf: bytearray, start: int) -> int:
        """Let the C call take frames of `buf` from `start`; return where Python goes on."""
        call = self.call
        disk = self.disk
        end = len(buf)
        while True:
            ptrs = self._checked(link)
            n = len(link.grants)
            if not n:
                return start
            call.budget = disk._budget
            call.frames = call.answers = 0
            at = int(_lib.eb_plane_produce(_ffi.from_buffer(buf), start, end, ptrs, n,
                                           link.resp_d, link.efd_data, call))
            frames = call.frames
            if frames:
                self._sync(link, call)
            if call.why == _WHY_WRITE:  # Python's path retries the frame and reports
                write_failed(link)
            # A grant's per-call room used up: synced, so the C call may go on (unless the
            # sync-back's on_append queued answers on this very link: they go first). Full with
            # nothing taken: the segment's recent list needs its trim, Python's path does it.
            if call.why != _WHY_FULL or not frames or at >= end or link.pending or link.closed:
                return at
            start = at

    def serve_ring(self, link: Any) -> int:
        """The link's wake-up in one C call (eb_plane_ring): frames taken from its request ring
        and served one by one until one cannot be. Returns the length of that frame, consumed
        and left in `scratch` for Python to dispatch; 0 when nothing was left to Python (then
        `drained` says whether the ring was found empty)."""
        call = self.call
        ptrs = self._checked(link)
        n = len(link.grants)
        self.drained = False
        if not n:
            return 0
        call.budget = self.disk._budget
        call.frames = call.answers = 0
        k = int(_lib.eb_plane_ring(link.req_d, link.efd_space, self._scratch_p, SCRATCH_BYTES,
                                   RING_FRAMES, ptrs, n, link.resp_d, link.efd_data, call))
        self.took = frames = call.frames
        if frames:
            self._sync(link, call)
        why = call.why
        if why == _WHY_WRITE:
            write_failed(link)
        self.drained = why == _WHY_RING_END
        return k

    def offline_failed(self, link: Any) -> None:
        """After EB_PLANE_WRITE in a parked wait: as after a call's (`write_failed`)."""
        write_failed(link)
