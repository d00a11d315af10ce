"""Standing fetches (FETCH_STANDING, docs/FORMAT.md 7.13): a consumer's fetch that stays armed
after it is answered, so a consumer on the shared-memory rings does not write a new fetch, and
wake the supervisor, after every answer.

A FETCH_STANDING is answered like a FETCH (at once when data is there, else parked until an
append or its wait runs out). After each answer that carries records the supervisor re-arms it at
once with the next request, by the rule both ends apply (edgebus/fastpath/standing.py: each
offset moved past the whole batches just sent), and answers that one under the same correlation
id when data comes; the consumer computes the same request to match its next poll, and sends
nothing. It ends with an answer that moved no offset (no records, or an error), when the
connection sends a FETCH or another FETCH_STANDING (which replaces it), or with the connection.
Its wait running out answers nothing: it is parked again (the consumer's own poll timeout gives
"nothing yet").

Flow control: an answer is pushed only while the link's response ring took every answer so far
(nothing queued behind it, the connection under its output bound); otherwise the fetch is
suspended (parked without a partition, so appends pass it by) and re-armed as soon as the
consumer has read enough for the queued answers to reach the ring (ShmLink.service calls
`resume`), or at the latest when its wait runs out. What one consumer that stops reading costs
is its ring plus one answer. Answers are capped to fit the ring (an answer's records are whatever
whole batches it carries; the consumer's next request follows from those).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus.errors import EdgebusError, InvalidRequestError
from edgebus.fastpath.standing import end_offset, next_fetch
from edgebus.protocol import messages as M
from edgebus.server.fetchwait import ParkedFetch

if TYPE_CHECKING:
    from edgebus.server.handlers.data import DataHandlers

# Room left in a response frame for everything but the records (headers, topic names).
_FRAME_SLACK = 64 * 1024
# A suspended standing fetch looks again after this long at first, then at doubling intervals up
# to its max_wait_ms, while the consumer has not read (bounds the wait on a late wake-up).
RECHECK_S = 0.002
# A frame size no ring takes: prepare_sleep_space with it only raises writer_waiting.
_NEVER_FITS = 0xFFFF_FFF0


def caught_up(link: Any) -> bool:
    """Whether the consumer has read every answer in the link's response ring. When not, the
    ring's writer_waiting flag is raised first (then the ring is looked at again: the consumer
    may have read in between), so that its next read signals the supervisor (efd_sup), which
    then calls link.on_room (docs/ARCHITECTURE.md, "Standing fetches")."""
    resp = link.resp
    if resp.used() == 0:
        return True
    resp.prepare_sleep_space(_NEVER_FITS)  # announce, full fence (C), then re-check below
    return bool(resp.used() == 0)


class StandingFetches:
    """The standing fetches of the shm links; a part of DataHandlers (loop thread only)."""

    def __init__(self, data: DataHandlers) -> None:
        self.data = data
        self.armed = 0  # re-arms done (stats: answers that needed no request)
        # FETCH's access-control check (set by the Broker when access control is on): a re-armed
        # fetch is a new request nobody sent, so it is checked again before each answer (cached:
        # one dict look-up; after a SIGHUP reload it decides anew, as for the next FETCH).
        self.check: Callable[[Any, Any], None] | None = None

    def _permitted(self, conn: Any, corr: int, req: M.FetchRequest) -> bool:
        """Whether `req` may still be answered; if not, it ends with the refusal as its answer."""
        if self.check is None:
            return True
        try:
            self.check(conn, req)
        except EdgebusError as e:
            self._stop(conn.shm)
            self.data.api.answer(conn, corr, e)
            return False
        return True

    def start(self, conn: Any, corr: int, req: M.FetchRequest) -> None:
        link = getattr(conn, "shm", None)
        if link is None:
            raise InvalidRequestError("FETCH_STANDING is served on shared-memory links only; "
                                      "send FETCH")
        if req.max_wait_ms <= 0 or req.min_bytes <= 0 or req.max_bytes <= 0 or not req.partitions \
                or any(fp.max_bytes <= 0 for fp in req.partitions):
            raise InvalidRequestError("a standing fetch needs max_wait_ms, min_bytes, max_bytes "
                                      "and each partition's max_bytes positive, and a partition")
        self.end(conn)
        cap = link.resp.max_frame - _FRAME_SLACK
        if req.max_bytes > cap > 0:  # every answer must fit the ring: flow control counts on it
            req = M.FetchRequest(req.max_wait_ms, req.min_bytes, cap, req.partitions)
        link.standing = corr
        self.arm(conn, corr, req)

    def end(self, conn: Any) -> None:
        """The connection's standing fetch, if any, ends (a new fetch replaces it)."""
        link: Any = getattr(conn, "shm", None)
        if getattr(link, "standing", None) is None:
            return
        link.standing = None
        w, link.standing_w = link.standing_w, None
        if w is not None:
            self.data.waiters.remove(w)

    def arm(self, conn: Any, corr: int, req: M.FetchRequest, recheck_s: float = RECHECK_S) -> None:
        """Serve `req` now if data is there (and again with its successor), else park it."""
        data = self.data
        link = conn.shm
        while True:
            if conn.closed or link is None or link.closed or link.standing != corr:
                return
            if link.pending or conn.overloaded:
                self._park(conn, corr, req, recheck_s)
                return
            if data._all_at_end(req):
                self._park(conn, corr, req)
                return
            if not caught_up(link):
                self._park(conn, corr, req, recheck_s)
                return
            if not self._permitted(conn, corr, req):
                return
            if data.api.output_budget_used:
                self._stop(link)
                data.api.answer(conn, corr, data._busy())
                return
            resp, total = data.read_fetch(req)
            if total < req.min_bytes and not any(p.error_code for p in resp.partitions):
                self._park(conn, corr, req)
                return
            data.api.answer(conn, corr, resp)
            nxt = next_fetch(req, resp, req.max_wait_ms)
            if nxt is None:
                self._stop(link)
                return
            self.armed += 1
            req = nxt

    def may_answer(self, w: ParkedFetch) -> bool:
        """DataHandlers.on_append, before answering standing fetch `w`: True when the consumer
        has read every answer so far; else `w` is held (suspended) until it has, so that what
        comes meanwhile goes out as one answer (a consumer that falls behind gets batches, as
        with one fetch per answer, instead of one frame per append)."""
        link = getattr(w.conn, "shm", None)
        if link is None or link.standing_w is not w:
            return True
        if not link.pending and not w.conn.overloaded and caught_up(link):
            if self._permitted(w.conn, w.correlation_id, w.request):
                return True
            self.data.waiters.remove(w)
            return False
        self.data.waiters.remove(w)
        self._park(w.conn, w.correlation_id, w.request, RECHECK_S)
        return False

    def answered(self, w: ParkedFetch, resp: M.FetchResponse | None, batch: Any = None,
                 base: int = -1) -> None:
        """Parked standing fetch `w` was just answered with `resp`, or (resp None) with the one
        `batch` appended at `base` (DataHandlers.fetch_appended): re-arm its successor."""
        conn = w.conn
        link = getattr(conn, "shm", None)
        if link is None or link.standing_w is not w:
            return
        link.standing_w = None
        req = w.request
        if resp is not None:
            nxt = next_fetch(req, resp, req.max_wait_ms)
        else:
            end = end_offset(batch)
            fp = req.partitions[0]
            nxt = None if end is None or end <= base else M.FetchRequest(
                req.max_wait_ms, req.min_bytes, req.max_bytes,
                [M.FetchPartition(fp.topic, fp.partition, end, fp.max_bytes)])
        if nxt is None or self.data.api.stopping:
            self._stop(link)
            return
        self.armed += 1
        self.arm(conn, w.correlation_id, nxt)

    def expired(self, w: ParkedFetch) -> None:
        """Its wait ran out (or it was suspended): park or serve it again, answering nothing."""
        link = getattr(w.conn, "shm", None)
        if link is None or link.standing_w is not w:
            return
        link.standing_w = None
        # A suspended one looks again at growing intervals while its consumer does not read.
        recheck = max(RECHECK_S, min(2 * w.recheck_s, self._wait(w.request)))
        self.arm(w.conn, w.correlation_id, w.request, recheck)

    def resume(self, link: Any) -> None:
        """ShmLink.service: the link's queued answers reached the ring; push again."""
        w = link.standing_w
        if w is None or not w.suspended:
            return
        self.data.waiters.remove(w)
        link.standing_w = None
        self.arm(w.conn, w.correlation_id, w.request)

    def _wait(self, req: M.FetchRequest) -> float:
        return min(req.max_wait_ms, self.data.max_fetch_wait_ms) / 1000

    def _park(self, conn: Any, corr: int, req: M.FetchRequest, recheck_s: float = 0.0) -> None:
        """Park `req`: waiting for data (recheck_s 0), or suspended until the consumer reads,
        looking again after recheck_s at the latest (the wake-up from its read is what normally
        resumes it; the timer only bounds the wait should that read come late)."""
        link = conn.shm
        wait = recheck_s or self._wait(req)
        w = ParkedFetch(conn, corr, req, time.monotonic() + wait, standing=True,
                        suspended=bool(recheck_s), recheck_s=recheck_s)
        self.data.waiters.park(w)
        link.standing_w = w
        if recheck_s:
            link.on_room = self.resume

    @staticmethod
    def _stop(link: Any) -> None:
        link.standing = None
        link.standing_w = None
