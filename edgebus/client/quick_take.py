"""A consumer's standing-fetch answers taken in one C call each (edgebus/shm/take.c).

At 1,000 records a second every answer is its own wake-up, and what the consumer does between
the wake-up and the returned records is most of its CPU. ShmSyncChannel.standing_records asks
`QuickTake.quick_take` first: one C call (take.c eb_take_plan, eb_take_sock_plan) waits for the
next frame, leaves it whole in a buffer of this channel (copied out of the response ring, or
received from the socket) and, when it answers the standing fetch with no error, checks and
plans its records where they lie (records_fetch.c eb_plan_fetched); its header fields and the plan
come back in the call's got[] (one struct unpack), and one `Struct.unpack_from` and a `map` make
the records (edgebus.records.planned). No bytearray, memoryview, ResponseFrame or epoll event
list per answer; the arguments that stay the same are set once (AnswerBuffer.take_plan_for).
Whatever else comes (another correlation id, an error, damage, headers, a socket that became
readable, a signal, bytes that are not whole frames) goes where the Python path would have put
it, and that path takes it from there.

Invariant: the buffer is reused by the next take; nothing made from it outlives that (the
records' fields are copies made by unpack_from; a frame for the Python path is copied out).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from edgebus import format as F
from edgebus.client.channel import RECV_SIZE
from edgebus.client.dispatch import refusal
from edgebus.errors import BrokerUnavailableError, EdgebusError
from edgebus.protocol.framing import ClientProtocol, ResponseFrame, whole_responses
from edgebus.tuning import C_TAKE, SPIN_GAP_NS

_HEAD = F.RESPONSE_HEADER_SIZE
# Bytes one recv of the socket transport takes at most: as much as the Python path's reads (its
# pages are touched only as far as reads fill them). A larger answer goes on there, from the
# partial frame this leaves buffered.
SOCKET_TAKE_BYTES = RECV_SIZE

try:
    from edgebus import records as _records
    from edgebus.records import planned as _planned
    from edgebus.shm._ring import ffi as _ffi
    from edgebus.shm._ring import lib as _lib

    # Modules built before eb_plan_fetched / eb_take_plan (an install not rebuilt since) lack them.
    AVAILABLE = C_TAKE and _records._plan_fetched is not None and hasattr(_lib, "eb_take_plan")
except ImportError:  # a C module is not built: the Python path takes every answer
    AVAILABLE = False
# eb_take_plan's got[]: correlation id, error code, frame bytes, more in the ring, the format's
# length (0: not planned), high watermark, log start, end offset, records, first offset.
_GOT = struct.Struct("=10q")
if AVAILABLE and _GOT.size // 8 != _lib.EB_TAKE_GOT:  # the cdef's got[10] (shm/_build.py)
    AVAILABLE = False


class AnswerBuffer:
    """A reused C buffer for one response frame (or one socket read), its header's fields."""

    __slots__ = ("buf", "cap", "got", "planner", "rings", "take", "view", "want")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        # Not zeroed: only the bytes a take wrote are read (and the pages stay untouched).
        self.buf = _ffi.new_allocator(should_clear_after_alloc=False)("char[]", cap)
        self.view = _ffi.buffer(self.buf)  # unpack_from reads the records from it
        self.planner = _records.Planner()  # eb_plan_fetched's buffers (the channel's own)
        # The ring's eb_take_plan arguments (set by take_plan_for), its got[] as a buffer, the
        # rings whose memory and arrivals it points to, and the partition prefix (immutable
        # bytes) its `want` points into: both kept alive here, want compared by identity. An
        # AnswerBuffer serves one connection (ShmSyncChannel.close drops it).
        self.take: Any = None
        self.got: Any = None
        self.rings: Any = None
        self.want: bytes | None = None

    def take_plan_for(self, rings: Any, corr: int, want: bytes) -> Any:
        """eb_take_plan's arguments for the ring of `rings` (None: eb_take_sock_plan's), the
        standing fetch `corr` and the partition prefix `want` (made once; corr and want set
        again when they change)."""
        t = self.take
        if t is None or self.rings is not rings:
            t = self.take = _ffi.new("eb_take_plan_t *")
            if rings is not None:  # None: the socket's eb_take_sock_plan (no ring fields)
                t.ring, t.epfd, t.efd_data, t.wake_fd = rings.take_args
                t.arr = rings.arrivals.c
            t.out, t.cap, t.head = self.buf, self.cap, _HEAD
            t.fmt, t.fmt_cap, t.max_records = self.planner.fmt, _records._FMT_BYTES, \
                _records.CHUNK
            self.got = _ffi.buffer(t.got)
            self.rings = rings
            self.want = None  # a new struct: want set below
            t.corr = -1
        if t.corr != corr:
            t.corr = corr
        if self.want is not want:
            t.want, t.wlen = _ffi.from_buffer(want), len(want)
            self.want = want  # t.want points into it
        return t

    def frame(self, start: int, n: int) -> ResponseFrame:
        """A copy of the whole frame of n bytes at start, for the Python path."""
        data = self.view[start : start + n]
        corr, err = F.RESPONSE_HEADER_REST.unpack_from(data, F.FRAME_LENGTH_SIZE)
        return ResponseFrame(corr, err, memoryview(data)[_HEAD:])


class QuickTake:
    """ShmSyncChannel's one-call take of its standing fetch's answers (a mixin: the channel's
    attributes below are its own)."""

    _rings: Any
    _sock: Any
    _proto: ClientProtocol
    _ahead_frames: deque[ResponseFrame]
    _marks: dict[tuple[str, int], tuple[int, int]]
    _answer: AnswerBuffer | None
    fetch_ahead_hits: int
    quick_answers: int
    c_takes: int
    close: Callable[[], None]

    def quick_take(self, corr: int, until: float, want: bytes, offset: int, topic: str,
                   partition: int, make: Callable[..., Any]) -> tuple[list[Any], int, int] | None:
        """(records, high watermark, the offset after them) of the answers to `corr` taken by C
        until `until` (monotonic seconds) for the first: ([], -1, offset) when none came.
        Frames the Python path must look at are left in `_ahead_frames` (after the records'
        answers, in order). None when C took nothing and the Python path must wait instead."""
        rings = self._rings
        if rings is None:
            return self._take_socket(corr, until, want, offset, topic, partition, make)
        arr = rings.arrivals.c
        if rings.from_socket or arr[1] <= SPIN_GAP_NS:
            return None  # frames on the socket, or coming close enough together to spin for
        ab = self._answer
        if ab is None:
            ab = self._answer = AnswerBuffer(rings.resp.max_frame)
        # One C call per answer waits, copies it and plans its records (take.c eb_take_plan).
        t = ab.take if ab.rings is rings and ab.want is want else None
        if t is None or t.corr != corr:
            t = ab.take_plan_for(rings, corr, want)
        take, got, view, fmt = _lib.eb_take_plan, ab.got, ab.view, ab.planner.fmt_view
        out: list[Any] = []
        hw = -1
        while True:
            n = take(t, until, offset)
            if n <= 0:  # the deadline; or something for the Python path (it raises what is wrong)
                break
            c, err, _n, more, flen, hw_, ls, end, k, first = _GOT.unpack_from(got)
            if c != corr or err:
                if c == corr:  # an error: the Python path's
                    self._ahead_frames.append(ab.frame(0, n))
                    break
                self._other(ab.frame(0, n))
                continue
            if flen <= 0:  # headers, damage, ...: the general decoder's
                self._ahead_frames.append(ab.frame(0, n))
                break
            out += _planned(view, _HEAD, fmt, flen, k, first, topic, partition, make)
            hw, offset = hw_, end
            self._marks[(topic, partition)] = (hw, ls)
            self.fetch_ahead_hits += 1
            self.quick_answers += 1
            self.c_takes += 1
            if not more:
                break
            until = 0.0  # what else the ring holds, without waiting
        if not out and n < 0 and not self._ahead_frames:
            return None
        return out, hw, offset

    def _take_socket(self, corr: int, until: float, want: bytes, offset: int, topic: str,
                     partition: int, make: Callable[..., Any]) -> tuple[list[Any], int, int] | None:
        sock, proto = self._sock, self._proto
        if sock is None or proto.frames.buffered():
            return None  # the start of a frame is buffered: the Python path completes it
        ab = self._answer
        if ab is None:
            ab = self._answer = AnswerBuffer(SOCKET_TAKE_BYTES)
        t = ab.take if ab.want is want else None
        if t is None or t.corr != corr:
            t = ab.take_plan_for(None, corr, want)
        # One C call waits, reads and plans the first frame's records (take.c eb_take_sock_plan).
        n = _lib.eb_take_sock_plan(t, sock.fileno(), until, offset)
        if n <= 0:
            if n == 0:
                return [], -1, offset
            if n == _lib.EB_TAKE_EOF:
                raise BrokerUnavailableError("the supervisor closed the connection")
            return None  # EINTR: the Python path's select runs the signal handlers
        # first: the first frame's bytes when it came whole, else -1
        c, err, first, _more, flen, hw_, ls, after, k, fo = _GOT.unpack_from(ab.got)
        out: list[Any] = []
        hw = -1
        if first > 0 and c == corr and not err:
            if flen > 0:
                out = _planned(ab.view, _HEAD, ab.planner.fmt_view, flen, k, fo, topic,
                               partition, make)
                hw, offset = hw_, after
                self._marks[(topic, partition)] = (hw, ls)
                self.fetch_ahead_hits += 1
                self.quick_answers += 1
                self.c_takes += 1
                if first == n:
                    return out, hw, offset
                start = first
            else:
                start = 0
        else:
            start = 0
        # The rest of the read, as SyncChannel._frames splits it: whole frames to the Python
        # path (answers to corr in order; others as _next_ahead treats them), a partial one to
        # the frame buffer.
        data = bytes(ab.view[start:n])
        frames, end = whole_responses(data)
        if end < len(data):
            proto.frames.feed(memoryview(data)[end:])
        for f in frames:
            if f.correlation_id == corr:
                self._ahead_frames.append(f)
            else:
                self._other(f)
        return out, hw, offset

    def _other(self, frame: ResponseFrame) -> None:
        """A frame that answers another request: the supervisor's refusal of the connection is
        raised (as _next_ahead does); a late answer to an abandoned request is dropped."""
        refused: EdgebusError | None = refusal(frame)
        if refused is not None:
            self.close()
            raise refused
