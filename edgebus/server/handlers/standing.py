"""Standing fetches (FETCH_STANDING, docs/FORMAT.md 7.13): a consumer's fetch that stays armed
after it is answered, so a consumer (on the shared-memory rings or on the Unix socket) does not
write a new fetch, and wake the supervisor, after every answer.

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

On a Unix-socket connection (no link) the state lives on the Connection, and the supervisor
cannot see what the consumer read, but the kernel can: for AF_UNIX stream sockets SIOCOUTQ is
what the kernel still holds of the bytes sent and not yet read by the peer (0 once it took them
all off the socket). An answer is pushed only while nothing is queued in Connection.out and
SIOCOUTQ is 0 (the ring's rule: a consumer that falls behind gets what came meanwhile as one
answer). Otherwise the fetch is held; nothing raises an event when the peer reads (the socket
stays writable), so it is looked at again on every append to its partitions (it stays indexed
under them: one ioctl each), when Connection.out drains to the kernel (writability, watched
while output is queued), on the connection's next request, and by its timer (RECHECK_S,
doubling up to SOCKET_RECHECK_MAX_S) for the answer after the last append. What one socket
consumer that stops reading costs is what the kernel took (its send buffer at most) and one
answer of at most SOCKET_ANSWER_CAP bytes.
"""

from __future__ import annotations

import array
import fcntl
import socket
import termios
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.errors import EdgebusError, InvalidRequestError
from edgebus.fastpath.fetch import encode_fetched_one
from edgebus.fastpath.standing import end_offset, next_fetch
from edgebus.protocol import messages as M
from edgebus.server.fetchwait import ParkedFetch
from edgebus.tuning import STANDING_WINDOW

if TYPE_CHECKING:
    from edgebus.server.handlers.data import DataHandlers

# Room left in a response frame for everything but the records (headers, topic names).
_FRAME_SLACK = 64 * 1024
# A suspended standing fetch looks again after this long at first, then at doubling intervals up
# to its max_wait_ms, while the consumer has not read (bounds the wait on a late wake-up).
RECHECK_S = 0.002
# A frame size no ring takes: prepare_sleep_space with it only raises writer_waiting.
_NEVER_FITS = 0xFFFF_FFF0
# A batch's stamp and record count, read together (F.BATCH_STAMP's fields, then the count).
_STAMP = F.BATCH_STAMP.unpack_from
_COUNT = F.U32.unpack_from
_TXN_BITS = F.ATTR_TRANSACTIONAL | F.ATTR_CONTROL
# Largest answer on a socket: what one held connection keeps in Connection.out at most.
SOCKET_ANSWER_CAP = 1024 * 1024
# The longest a suspended socket fetch waits before it looks at SIOCOUTQ again: the delay a
# consumer that stopped reading sees once it reads again, at ~20 cheap wake-ups a second while
# it does not.
SOCKET_RECHECK_MAX_S = 0.05


def unread(sock: socket.socket) -> int:
    """SIOCOUTQ (= TIOCOUTQ): what the kernel holds of the bytes sent on `sock` and not yet read
    by the peer (AF_UNIX stream: its allocation for them); 0 once the peer read everything."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    return buf[0]


# unread(...) == 0 in one C call, on the fd `start` cached (Connection.standing_fd): this runs
# once per standing-fetch answer on a socket, where sock.fileno() and the array were two more.
_ioctl = fcntl.ioctl
_OUTQ = termios.TIOCOUTQ
_ZERO4 = bytes(4)


def _state(conn: Any) -> Any:
    """Where the connection's standing fetch lives: its shm link, else the Connection itself."""
    link = conn.shm
    return conn if link is None else link


def _backlog(conn: Any, st: Any) -> bool:
    """Answers queued in the supervisor (link.pending or Connection.out) or over the output bound:
    held until they drain (the link's service or the socket's writability calls on_room)."""
    return bool(conn.out if st is conn else st.pending) or conn.overloaded


def _read_up(conn: Any, st: Any) -> bool:
    """Whether the consumer has read every answer sent: the ring is empty; on a socket, SIOCOUTQ
    is 0 (it has taken every byte off the socket; it may still be decoding the last answer,
    so the next one overlaps that)."""
    if st is conn:
        return _ioctl(conn.standing_fd, _OUTQ, _ZERO4) == _ZERO4
    return caught_up(st)


def window(link: Any) -> int:
    """The unread answer bytes a ring consumer may have and still be answered at once: the last
    answer written (`ShmLink.last_entry`), or tuning.STANDING_WINDOW if more."""
    last: int = link.last_entry
    return last if last > STANDING_WINDOW else STANDING_WINDOW


def caught_up(link: Any) -> bool:
    """Whether the consumer has left at most `window` bytes of answers unread in the link's
    response ring. The consumer takes every answer there in one poll (client/quick_take.py), so
    the later ones cost it no wake-up, while holding one cost the supervisor two Python turns
    and a wake-up (the consumer's read signalling it) and the consumer another: the tail at
    10,000 records a second (bench/results/issue16-lat16.md with a window of one answer,
    issue16-tail28.md with STANDING_WINDOW). More unread: the ring's writer_waiting flag is
    raised first (then the ring is looked at again: the consumer may have read in between), so
    that its next read signals the supervisor (efd_sup), which then calls link.on_room
    (docs/ARCHITECTURE.md, "Standing fetches")."""
    resp = link.resp
    room = window(link)
    if resp.used() <= room:
        return True
    resp.prepare_sleep_space(_NEVER_FITS)  # announce, full fence (C), then re-check below
    return bool(resp.used() <= room)


class StandingFetches:
    """The standing fetches of shm links and socket connections; a part of DataHandlers (loop
    thread only). `st` below is where a connection's standing fetch lives (`_state`)."""

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
            self._stop(_state(conn))
            self.data.api.answer(conn, corr, e)
            return False
        return True

    def start(self, conn: Any, corr: int, req: M.FetchRequest) -> None:
        link = getattr(conn, "shm", None)
        if link is None and not _unix_stream(conn):
            raise InvalidRequestError("FETCH_STANDING is served on shared-memory links and Unix "
                                      "socket connections only; send FETCH")
        if req.max_wait_ms <= 0 or req.min_bytes <= 0 or req.max_bytes <= 0 or not req.partitions \
                or any(fp.max_bytes <= 0 for fp in req.partitions):
            raise InvalidRequestError("a standing fetch needs max_wait_ms, min_bytes, max_bytes "
                                      "and each partition's max_bytes positive, and a partition")
        self.end(conn)
        if link is None:
            conn.standing_fd = conn.sock.fileno()
        # Every answer must fit the ring (flow control counts on it); on a socket, what a held
        # connection keeps queued is at most one answer.
        cap = SOCKET_ANSWER_CAP if link is None else link.resp.max_frame - _FRAME_SLACK
        if req.max_bytes > cap > 0:
            req = M.FetchRequest(req.max_wait_ms, req.min_bytes, cap, req.partitions)
        _state(conn).standing = corr
        self.arm(conn, corr, req)

    def end(self, conn: Any) -> None:
        """The connection's standing fetch, if any, ends (a new fetch replaces it)."""
        link: Any = getattr(conn, "shm", None) or conn
        if getattr(link, "standing", None) is None:
            return
        link.standing = None
        w, link.standing_w = link.standing_w, None
        if w is not None:
            self.data.waiters.remove(w)

    def arm(self, conn: Any, corr: int, req: M.FetchRequest, recheck_s: float = RECHECK_S) -> None:
        """Serve `req` now if data is there (and again with its successor), else park it."""
        data = self.data
        link = _state(conn)
        while True:
            if conn.closed or link.closed or link.standing != corr:
                return
            if _backlog(conn, link):
                self._park(conn, corr, req, recheck_s)
                return
            if data._all_at_end(req):
                self._park(conn, corr, req)
                return
            if not _read_up(conn, link):
                self._park(conn, corr, req, recheck_s, indexed=link is conn)
                return
            if not self._permitted(conn, corr, req):
                return
            if data.api.output_budget_used:
                self._stop(link)
                data.api.answer(conn, corr, data._busy())
                return
            frame = data._fetch_tail(corr, req)
            if frame is not None:
                # The one batch appended since (a consumer one answer behind, resumed): from
                # memory, as read_fetch would answer it; the successor starts at the log end.
                if link is not conn and len(frame) > link.max_frame:
                    data.api.answer(conn, corr, frame)  # on the socket: the standing fetch ends
                    self._stop(link)
                    return
                data.api.answer(conn, corr, frame)
                fp = req.partitions[0]
                end = data.logs.partition(fp.topic, fp.partition).log_end_offset
                nxt: M.FetchRequest | None = M.FetchRequest(
                    req.max_wait_ms, req.min_bytes, req.max_bytes,
                    [M.FetchPartition(fp.topic, fp.partition, end, fp.max_bytes)])
            else:
                resp, total = data.read_fetch(req)
                if total < req.min_bytes and not any(p.error_code for p in resp.partitions):
                    self._park(conn, corr, req)
                    return
                before = sent_on_socket(conn)
                data.api.answer(conn, corr, resp)
                if sent_on_socket(conn) != before:
                    self._stop(link)  # too large for the ring: the standing fetch ends here
                    return
                nxt = next_fetch(req, resp, req.max_wait_ms)
            if nxt is None:
                self._stop(link)
                return
            self.armed += 1
            req = nxt
            recheck_s = RECHECK_S  # it read: a hold after this one starts at the short look again

    def push(self, w: ParkedFetch, p: Any, batch: Any, base: int, append_time: int) -> bool:
        """DataHandlers.on_append's common case for standing fetch `w`: `batch`, just appended
        to `p` at `base`, is exactly what `w` asks for and its consumer has read every answer
        so far. Then answer it from the batch and re-arm `w` in place (its offset moved past
        the batch, still parked under the partition) and return True. The same answer and the
        same state as may_answer + fetch_appended + answered + arm give (each condition below
        is one of theirs, tests/shm/test_standing_push.py compares them), without making a new
        request and parked fetch per answer; False, having changed nothing, when any condition
        fails: the general path then decides. `w` keeps the deadline it was parked with: its
        wait running out re-parks it silently (`expired`), as a re-armed one's does."""
        conn = w.conn
        link = conn.shm
        if link is None:
            link = conn
        req = w.request
        parts = req.partitions
        if (link.standing_w is not w or w.recheck_s or conn.closed or link.closed
                or len(parts) != 1):
            return False
        fp = parts[0]
        end = p.log_end_offset
        # fetch_appended's conditions, and the successor's (answered: the offset after the
        # batch; arm: that is the log end, so it parks again under the partition)
        if (fp.offset != base or len(batch) < req.min_bytes
                or batch[F.BATCH_ATTRIBUTES] & _TXN_BITS
                or _STAMP(batch, 0) != (base, append_time)
                or base + _COUNT(batch, F.BATCH_RECORD_COUNT)[0] != end or end <= base):
            return False
        data = self.data
        if data.api.stopping or (data.txn_filter is not None
                                 and data.txn_filter(p, batch) is not batch):
            return False
        # may_answer's: nothing queued behind, and the consumer read every answer (on the
        # rings: at most caught_up's window unread)
        if link is conn:
            if conn.out or conn.overloaded or _ioctl(conn.standing_fd, _OUTQ, _ZERO4) != _ZERO4:
                return False
        elif link.pending or conn.overloaded or link.resp.used() > window(link):
            return False
        if self.check is not None:
            try:
                self.check(conn, req)
            except EdgebusError:
                return False  # the general path answers the refusal
        try:
            frame = encode_fetched_one(w.correlation_id, fp.topic, fp.partition, end,
                                       p.log_start_offset, batch)
        except Exception:  # unusual values: the general path gives its own result or error
            return False
        if link is not conn and len(frame) > link.max_frame:
            return False  # the socket carries it, and the standing fetch ends: the general path
        data.stats.batch_sent(p.topic, batch)
        conn.queue(frame)
        conn.update_interest()  # as LoopApi.answer does after queueing
        self.armed += 1
        if conn.closed or (conn.out if link is conn else link.pending) or conn.overloaded:
            # the answer did not go out whole: arm decides (held until the consumer reads)
            data.waiters.remove(w)
            link.standing_w = None
            self.arm(conn, w.correlation_id, M.FetchRequest(
                req.max_wait_ms, req.min_bytes, req.max_bytes,
                [M.FetchPartition(fp.topic, fp.partition, end, fp.max_bytes)]))
            return True
        # Invariant: a standing fetch's request is its own (made by `start` or by a re-arm),
        # so moving its offset changes no other request.
        fp.offset = end
        return True

    def may_answer(self, w: ParkedFetch) -> bool:
        """DataHandlers.on_append, before answering standing fetch `w`: True when the consumer
        has read every answer so far; else `w` is held (suspended) until it has, so that what
        comes meanwhile goes out as one answer (a consumer that falls behind gets batches, as
        with one fetch per answer, instead of one frame per append)."""
        conn = w.conn
        link = _state(conn)
        if link.standing_w is not w:
            return True
        backlog = _backlog(conn, link)
        if not backlog and _read_up(conn, link):
            if self._permitted(w.conn, w.correlation_id, w.request):
                return True
            self.data.waiters.remove(w)
            return False
        if w.recheck_s and not w.suspended:
            return False  # a socket's held fetch: looked at again on the next append or timer
        self.data.waiters.remove(w)
        # A socket's fetch held for the consumer's reading stays under its partition: each
        # append looks at SIOCOUTQ again (the reading itself raises no event on a socket).
        self._park(w.conn, w.correlation_id, w.request, RECHECK_S,
                   indexed=link is conn and not backlog)
        return False

    def answered(self, w: ParkedFetch, resp: M.FetchResponse | None, batch: Any = None,
                 base: int = -1, socket_before: int = -1) -> None:
        """Parked standing fetch `w` was just answered with `resp`, or (resp None) with the one
        `batch` appended at `base` (DataHandlers.fetch_appended): re-arm its successor.
        socket_before: sent_on_socket(w.conn) before that answer was queued."""
        conn = w.conn
        link = _state(conn)
        if link.standing_w is not w:
            return
        link.standing_w = None
        if sent_on_socket(conn) != socket_before:
            self._stop(link)  # too large for the ring: the standing fetch ends here
            return
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
        link = _state(w.conn)
        if link.standing_w is not w:
            return
        link.standing_w = None
        # A suspended one looks again at growing intervals while its consumer does not read (on
        # a socket the timer is what notices the reading, so it looks more often).
        longest = self._wait(w.request) if link is not w.conn else SOCKET_RECHECK_MAX_S
        recheck = max(RECHECK_S, min(2 * w.recheck_s, longest))
        self.arm(w.conn, w.correlation_id, w.request, recheck)

    def resume(self, link: Any) -> None:
        """ShmLink.service: the link's queued answers reached the ring; or a socket Connection's
        `on_room` (its queued output went to the kernel, or it sent a request): push again."""
        w = link.standing_w
        if w is None or not w.recheck_s:
            return
        self.data.waiters.remove(w)
        link.standing_w = None
        self.arm(w.conn, w.correlation_id, w.request)

    def _wait(self, req: M.FetchRequest) -> float:
        return min(req.max_wait_ms, self.data.max_fetch_wait_ms) / 1000

    def _park(self, conn: Any, corr: int, req: M.FetchRequest, recheck_s: float = 0.0,
              indexed: bool = False) -> None:
        """Park `req`: waiting for data (recheck_s 0), or held until the consumer reads, looking
        again after recheck_s at the latest (on the rings the wake-up from its read is what
        normally resumes it; the timer only bounds the wait should that read come late). A held
        one is suspended (under no partition, appends pass it by) unless `indexed` (a socket's
        held for reading: every append looks at SIOCOUTQ again)."""
        link = _state(conn)
        wait = recheck_s or self._wait(req)
        w = ParkedFetch(conn, corr, req, time.monotonic() + wait, standing=True,
                        suspended=bool(recheck_s) and not indexed, recheck_s=recheck_s)
        self.data.waiters.park(w)
        link.standing_w = w
        if recheck_s:
            link.on_room = self.resume

    @staticmethod
    def _stop(link: Any) -> None:
        link.standing = None
        link.standing_w = None


def sent_on_socket(conn: Any) -> int:
    """How many answers too large for the connection's response ring went on its socket (-1:
    no rings). A standing fetch on the rings ends after such an answer, and the client knows it
    by the answer's size (larger than the ring's max_frame; docs/FORMAT.md): its later answers
    would come in the ring, which the client reads before the socket, and a consumer would take
    them first and skip the large one's records."""
    link = conn.shm
    return -1 if link is None else link.socket_frames


def _unix_stream(conn: Any) -> bool:
    """A plain AF_UNIX stream connection, where SIOCOUTQ tells what the peer has not read (not a
    TCP or TLS one: there it counts bytes the peer's kernel has not acknowledged)."""
    sock = getattr(conn, "sock", None)
    return type(sock) is socket.socket and sock.family == socket.AF_UNIX
