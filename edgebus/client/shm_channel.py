"""Client channels over the shared-memory rings, with the socket channels' interfaces.

`open_sync_channel` / `open_async_channel` pick the transport: "shm" forces the rings (errors if
they cannot be set up), "socket" forces the socket, "auto" (the default) tries the rings and falls
back to the socket with one debug log line when they are unavailable (C module not built, not
Linux, an older supervisor, or the supervisor refused); $EDGEBUS_TRANSPORT overrides "auto".

`ShmSyncChannel` is a SyncChannel whose transport is the rings (edgebus/client/shm_rings.py), plus
fetch-ahead (edgebus/client/fetch_ahead.py). `ShmAsyncChannel` is a Dispatcher (the pending
requests, edgebus/client/dispatch.py) whose reader waits on the response ring; while a producer
sends steadily its acknowledgements are taken at its next send instead (ACK_LAZY_S in
edgebus/tuning.py), or when a future is asked for (edgebus/client/lazy_acks.py).

A consumer's channel is a ShmSyncChannel on the socket too (transport "socket", or "auto"
without rings): its fetch-ahead is then a standing fetch on the socket (FETCH_STANDING; flow
control there is the supervisor's, edgebus/server/handlers/standing.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebus import format as F
from edgebus.client import lazy_acks
from edgebus.client.channel import AsyncChannel, SyncChannel
from edgebus.client.dispatch import CORR_MASK, Callback, Dispatcher, next_corr, refusal
from edgebus.client.fast_acks import deliver as deliver_acks
from edgebus.client.fetch_ahead import is_empty, next_body
from edgebus.client.lazy_acks import LazyAcks
from edgebus.client.quick_take import AVAILABLE as _QUICK
from edgebus.client.quick_take import AnswerBuffer, QuickTake
from edgebus.client.record_frames import (
    FRAME_BUFFER_BYTES,
    NULL,
    PRODUCE,
    frame_bytes,
    new_frame_buffer,
    produce_frame,
)
from edgebus.client.shm_rings import ShmRings, connect_rings, ring_bytes_for
from edgebus.client.socket_acks import LazySocketChannel
from edgebus.errors import (
    BrokerUnavailableError,
    ClosedError,
    InvalidRequestError,
    ProtocolError,
    UnsupportedVersionError,
)
from edgebus.fastpath.fetch import FetchBody, FetchPlan, fetch_body, fetch_response
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ResponseFrame
from edgebus.tuning import (
    ACK_SPIN_NS,
    FETCH_AHEAD,
    STANDING,
    check_transport,
)

try:  # the consumer's one-call decode of a standing fetch's answer (edgebus/records.c)
    from edgebus.records import fetched_records as _fetched_records
except ImportError:  # the C module is not built: the general path
    _fetched_records = None  # type: ignore[assignment]

_STANDING = int(M.Api.FETCH_STANDING)
# A supervisor without FETCH_STANDING answers the first one with these (one before socket
# standing fetches refuses it on a socket as invalid): the consumer sends FETCH from then on.
_NO_STANDING = (UnsupportedVersionError.code, InvalidRequestError.code)


def _min_bytes(body: FetchBody) -> int:
    return int(F.FETCH_REQUEST_RUN.unpack_from(body.data, 0)[1])


# --- sync (Consumer, Admin) ----------------------------------------------------------------------
class ShmSyncChannel(QuickTake, SyncChannel):
    """SyncChannel over the rings when they can be had (transport "auto"/"shm"); its standing
    fetch's answers are taken in one C call each when the C modules are built (QuickTake)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                 transport: str = "auto") -> None:
        super().__init__(path, timeout)
        self.transport = check_transport(transport)
        self._rings: ShmRings | None = None
        # Fetch-ahead (edgebus/client/fetch_ahead.py): the guessed request's key and correlation
        # id, and its answers as they arrived. A standing fetch (FETCH_STANDING, docs/FORMAT.md
        # 7.13) is answered many times under one correlation id, each answer the guess that
        # follows from the one before; `_standing` is its id while armed.
        # The key is None when only `_ahead_at` (plan, offsets, max_wait_ms: the guessed request)
        # was recorded (standing_records); `_ahead_key` makes it when the general path needs it.
        self._ahead: tuple[bytes | None, int] | None = None
        self._ahead_at: tuple[FetchPlan, tuple[int, ...], int] | None = None
        self._ahead_frames: deque[ResponseFrame] = deque()
        self._standing: int | None = None
        self._standing_ok = STANDING  # False once a supervisor did not know FETCH_STANDING
        # Held by a request (or a standing poll) while it uses the rings; shut() from another
        # thread (Consumer.close) unmaps them only once it has left. Re-entrant: a request that
        # fails closes the channel itself.
        self._use = threading.RLock()
        self._shut = False
        self._marks: dict[tuple[str, int], tuple[int, int]] = {}  # last high watermark, log start
        self.fetch_ahead_hits = 0
        self.quick_answers = 0  # answers taken by standing_records (tests, benchmarks)
        self._answer: AnswerBuffer | None = None  # QuickTake's buffer (this connection's)
        self.c_takes = 0  # answers QuickTake took in one C call (tests, benchmarks)

    @property
    def using_shm(self) -> bool:
        return self._rings is not None

    def _connect(self) -> None:
        if self.transport == "socket":  # the socket with standing fetches (open_sync_channel)
            return super()._connect()
        self._sock, self._rings = connect_rings(self.path, self.transport)
        if self._rings is None:
            super()._connect()  # the socket transport, on a fresh connection
            return
        self._proto = self._rings.proto

    def _write(self, frame: bytes, deadline: float) -> None:
        if self._rings is None:
            return super()._write(frame, deadline)
        self._rings.write(frame, deadline)

    def _frames(self, deadline: float) -> list[ResponseFrame]:
        if self._rings is None:
            return super()._frames(deadline)
        return self._rings.read(deadline)

    def _keep(self, frame: ResponseFrame) -> None:
        if self._ahead is not None and frame.correlation_id == self._ahead[1]:
            self._ahead_frames.append(frame)

    def _next_ahead(self, corr: int, deadline: float) -> ResponseFrame | None:
        """The next answer to the fetch sent ahead (a standing fetch's come one after another
        under one id, so SyncChannel._wait, which keeps the last of a read, does not do)."""
        frames = self._ahead_frames
        rings = self._rings
        while not frames:
            # _frames's ring case without its call (a paced consumer waits here every poll)
            got = rings.read(deadline) if rings is not None else self._frames(deadline)
            if not got:
                return None
            for f in got:
                if f.correlation_id == corr:
                    frames.append(f)
                elif (refused := refusal(f)) is not None:
                    self.close()
                    raise refused
                # else: a late answer to an abandoned request, dropped
        return frames.popleft()

    def _drop_ahead(self) -> None:
        # Its answers still on the way are dropped when they come (`_keep` no longer matches);
        # a standing fetch ends at the supervisor with the FETCH this is followed by.
        self._ahead, self._standing, self._ahead_at = None, None, None
        self._ahead_frames.clear()

    def _fetch(self, request: M.FetchRequest | FetchBody, deadline: float, t: float) -> Any:
        if self._rings is None and not (STANDING and FETCH_AHEAD):
            return super()._fetch(request, deadline, t)  # the socket, one fetch per answer
        body = fetch_body(request)
        key = body.key
        ahead = self._ahead_key()
        standing = None
        if ahead is not None and ahead[0] == key:
            # The fetch sent ahead is this one: wait for it as long as this request would
            # have waited at the supervisor, no longer (the guess may have been sent with a
            # longer max_wait_ms); if it is still parked, answer "nothing yet" and keep it.
            own = time.monotonic() + body.max_wait_ms / 1000 + 0.002
            frame = self._next_ahead(ahead[1], min(deadline, own))
            if frame is None:
                return self._nothing_yet(body)
            standing, self._ahead, self._ahead_at = self._standing, None, None
            if frame.error_code in _NO_STANDING and standing is not None:
                # A supervisor without FETCH_STANDING: fetch-ahead with plain fetches from now.
                self._standing_ok = False
                self._drop_ahead()
                return self._fetch(body, deadline, t)
            if frame.error_code:
                self._drop_ahead()  # an error ends a standing fetch at the supervisor too
            resp = fetch_response(frame)
            if not is_empty(resp):
                self.fetch_ahead_hits += 1
        else:
            # A wrong guess (seek, new assignment, other limits): its answer, if it comes, is
            # dropped; the supervisor answers it when its max_wait_ms runs out at the latest.
            self._drop_ahead()
            resp = fetch_response(self._roundtrip(M.Api.FETCH, body, deadline, t))
        self._remember(resp)
        if FETCH_AHEAD:
            guess = next_body(body, resp, body.max_wait_ms)
            if standing is not None:
                if guess is not None:
                    # The supervisor re-armed the standing fetch with this same guess
                    # (edgebus/fastpath/standing.py): its next answer comes under the same id.
                    self._ahead = (guess.key, standing)
                    self._ahead_at = (guess.plan, guess.offsets, guess.max_wait_ms)
                    return resp
                self._drop_ahead()  # no offset moved: it ended there
            if guess is None and is_empty(resp) and body.max_wait_ms > 0:
                guess = body  # nothing new: keep one long-poll parked for the next poll
            if guess is not None:
                self._send_ahead(guess, deadline)
        return resp

    def _send_ahead(self, guess: FetchBody, deadline: float) -> None:
        if self._standing_ok and guess.max_wait_ms > 0 and _min_bytes(guess) > 0:
            corr = next_corr(self._corr)
            data = guess.data
            self._write(F.REQUEST_HEADER.pack(F.REQUEST_MIN_LENGTH + len(data), _STANDING, 0,
                                              corr) + data, deadline)
            self._ahead, self._standing = (guess.key, corr), corr
        else:
            self._ahead = (guess.key, self._send(M.Api.FETCH, guess, deadline))
        self._ahead_at = (guess.plan, guess.offsets, guess.max_wait_ms)

    def _ahead_key(self) -> tuple[bytes | None, int] | None:
        ahead = self._ahead
        if ahead is not None and ahead[0] is None and self._ahead_at is not None:
            plan, offsets, max_wait_ms = self._ahead_at
            ahead = self._ahead = (plan.body(max_wait_ms, offsets).key, ahead[1])
        return ahead

    def request(self, api: int, body: Any, timeout: float | None = None) -> Any:
        with self._use:
            if self._shut:
                raise ClosedError("the channel is closed")
            try:
                return super().request(api, body, timeout)
            except Exception:
                if self._shut:  # shut() in another thread ended it: that is the news
                    raise ClosedError("the channel is closed") from None
                raise

    def standing_records(self, plan: FetchPlan, offset: int, max_wait_ms: int, deadline: float,
                         want: bytes, topic: str, partition: int, make: Callable[..., Any]
                         ) -> tuple[list[Any], int] | None:
        """The consumer's common poll in few calls: one partition, whose standing fetch is
        armed for exactly `plan` from `offset`. Waits as `_fetch` would for its next answers and
        decodes them in one C call each (edgebus.records.fetched_records): (records, high
        watermark), ([], -1) when none came within max_wait_ms. None when this does not apply,
        or an answer needs the general path (an error, damage, headers, ...): that answer is
        left first in line, and the caller's FETCH through `request` takes it as before.
        Every answer already received is taken, each answering the fetch re-armed from the end
        of the one before (edgebus/fastpath/standing.py)."""
        # Under the rings' use lock (see request); one function, not a wrapper and its body
        # (one Python call less per poll).
        with self._use:
            if self._shut:
                raise ClosedError("the channel is closed")
            try:
                at, corr = self._ahead_at, self._standing
                if corr is None or at is None or at[0] is not plan or at[1] != (offset,) \
                        or _fetched_records is None:
                    return None
                frames = self._ahead_frames
                out: list[Any] = []
                hw = -1
                if not frames:
                    until = time.monotonic() + max_wait_ms / 1000 + 0.002
                    if deadline < until:  # (no min(): a call less per poll)
                        until = deadline
                    try:
                        quick = self.quick_take(corr, until, want, offset, topic, partition,
                                                make) if _QUICK else None
                        if quick is None:
                            frame = self._next_ahead(corr, until)
                            if frame is None:
                                return [], -1
                            frames.appendleft(frame)  # before the answers read with it
                        else:
                            out, hw, offset = quick
                            if not out and not frames:
                                return [], -1
                    except (OSError, BrokerUnavailableError) as e:
                        self.close()
                        raise BrokerUnavailableError(
                            f"lost the connection to {self.path}: {e}") from None
                    except ProtocolError:
                        self.close()  # as request(): the next request starts on a new connection
                        raise
                while frames:
                    frame = frames.popleft()
                    got = None if frame.error_code else _fetched_records(
                        frame.body, want, offset, topic, partition, make)
                    if got is None:
                        frames.appendleft(frame)  # for the general path
                        break
                    recs, hw, ls, offset = got
                    self._marks[(topic, partition)] = (hw, ls)
                    self.fetch_ahead_hits += 1
                    self.quick_answers += 1
                    out += recs
                if not out:
                    return None
                # The supervisor re-armed the standing fetch from the end of what it sent (its
                # key is made only if the general path needs it).
                self._ahead, self._ahead_at = (None, corr), (plan, (offset,), at[2])
                return out, hw
            except Exception:
                if self._shut:  # shut() in another thread ended it: that is the news
                    raise ClosedError("the channel is closed") from None
                raise

    def _remember(self, resp: M.FetchResponse) -> None:
        for p in resp.partitions:
            if not p.error_code:
                self._marks[(p.topic, p.partition)] = (p.high_watermark, p.log_start_offset)

    def _nothing_yet(self, body: FetchBody) -> M.FetchResponse:
        """The answer the supervisor would give now: no records, the last known watermarks."""
        out = []
        for (topic, partition), offset in zip(body.plan.keys, body.offsets, strict=True):
            hw, ls = self._marks.get((topic, partition), (offset, 0))
            out.append(M.FetchedPartition(topic, partition, 0, "", hw, ls, b""))
        return M.FetchResponse(out)

    def shut(self) -> None:
        """The last close(), from any thread (Consumer.close while another thread polls): the
        socket's shutdown ends a wait under way, and the rings are unmapped only after that
        request has left them; later requests raise ClosedError. One still inside after the
        bound keeps the mapping and the socket: leaked, never unmapped under it."""
        self._shut = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._use.acquire(timeout=5):
            try:
                self.close()
            finally:
                self._use.release()

    def close(self) -> None:
        rings, self._rings = self._rings, None
        self._answer = None  # sized for this connection's ring
        self._drop_ahead()
        try:
            super().close()
        finally:
            if rings is not None:
                rings.close()


def open_sync_channel(path: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                      transport: str = "auto", fetches: bool = False) -> SyncChannel:
    """fetches: the channel serves a consumer's fetches, so on the socket too it is the channel
    with standing fetches (FETCH_STANDING; EDGEBUS_SHM_STANDING_FETCH=0: one fetch per answer)."""
    if check_transport(transport) == "socket" and not (fetches and STANDING):
        return SyncChannel(path, timeout)
    return ShmSyncChannel(path, timeout, transport)


# --- async (Producer) ----------------------------------------------------------------------------
class ShmAsyncChannel(LazyAcks, Dispatcher):
    """AsyncChannel's interface over the rings: send() from any thread (serialised by the
    Dispatcher's lock), the reader thread waits on the response ring.

    Lazy acknowledgements (ACK_LAZY_S in edgebus/tuning.py): while the producer sends steadily and
    nobody waits on a result, the reader sleeps without announcing itself, so the supervisor does
    not signal each response, and the producer takes what came at its next send (`reap`) or when
    a future is asked for; with callbacks registered, the reader collects what is left when its
    unsignalled wait ends, ACK_LAZY_GAPS send gaps after the last send (without, that wait has
    no timer: edgebus/client/lazy_acks.py). Invariant: one taker of the response ring at a time, with the callbacks of
    what it took (`_reap_lock`), so callbacks run once each and in response order.
    """

    def __init__(self, path: Path, rings: ShmRings,
                 on_lost: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(path, on_lost, "edgebus-shm-reader")
        self._rings = rings
        self._init_lazy_acks()
        # hurry() writes to the rings' eventfd from any thread; close() closes it. This lock
        # orders the two, so a nudge never lands on a closed (and maybe reused) descriptor number.
        self._fd_lock = threading.Lock()
        self._fds_closed = False
        # Held by whoever takes from the response ring and runs the callbacks: the reader (for
        # the whole of a signalled wait) or a sender reaping (never waited for by a sender).
        self._reap_lock = threading.Lock()
        self._deferred: BaseException | None = None  # what a reap met; the reader ends with it
        self.reaped = 0  # responses taken by senders (tests, benchmarks)
        self._write = self._write_ring
        self._fbuf = new_frame_buffer()  # send_record's frame when the ring has no room now
        # The request ring's head before our last request (writers hold _lock; C's too:
        # eb_ring_produce moves it): the supervisor has read everything before that request
        # once its tail reaches this (unread()).
        self._sender = rings.sender
        self._produce = rings.produce
        self._efd_sup = rings.efd_sup
        self._start()

    def _write_ring(self, frame: bytes) -> None:
        if self._fds_closed:  # under _lock (Dispatcher.send): close() unmaps only after it
            raise BrokerUnavailableError("the channel was closed")
        self._note_send()
        rings = self._rings
        self._sender.last_at = rings.req_head()
        rings.write(frame)

    def send_record(self, prefix: bytes, key: bytes | None, value: bytes | None, ts: int,
                    callback: Callback, hold: bool, now: float) -> bool:
        """send() of a one-record PRODUCE (edgebus/client/fast_send.py), built by C straight
        into the request ring with the hold and the doorbell decided there (one C call:
        edgebus/shm/produce.c); hold: write nothing and return False while the supervisor has
        yet to read a request written before our last one (unread()). now: the caller's
        monotonic clock (the send gap's note)."""
        with self._lock:
            if self.lost is not None:
                raise BrokerUnavailableError(str(self.lost))
            if self._fds_closed:
                raise BrokerUnavailableError("the channel was closed")
            corr = (next(self._corr) - 1) % CORR_MASK + 1  # dispatch.next_corr, inline
            k, kl = (NULL, -1) if key is None else (key, len(key))
            v, vl = (NULL, -1) if value is None else (value, len(value))
            rc = self._produce(prefix, len(prefix), k, kl, v, vl, ts, corr, PRODUCE,
                               self._efd_sup, hold)
            if rc == 2:
                return False
            self._pending[corr] = callback
            if rc != 1:  # no room now: the frame in a buffer, and the waiting write (backpressure)
                buf = self._fbuf
                n = produce_frame(buf, FRAME_BUFFER_BYTES, prefix, len(prefix), k, kl, v, vl, ts,
                                  corr, PRODUCE)
                rings = self._rings
                at = rings.req_head()
                try:
                    rings.write(frame_bytes(buf, n))
                except (BrokerUnavailableError, OSError, ValueError) as e:
                    self._pending.pop(corr, None)
                    raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None
                self._sender.last_at = at
            # _note_send, without its call (once per record); the gaps' average is used only
            # by timed waits (lazy_acks: with callbacks), so kept only then
            if self._timed:
                gap = now - self._last_send
                cap = lazy_acks.STEADY_S
                self._send_gap += ((gap if gap < cap else cap) - self._send_gap) / 4
            self._last_send = now
        return True

    def _receive(self) -> tuple[()]:
        if self._closed:
            raise BrokerUnavailableError("the channel was closed")
        if self._deferred is not None:
            raise self._deferred
        rings = self._rings
        # _lazy_wait is set before the checks (waiters, window): a waiter or hurry() after them
        # sees it and nudges; one before them is seen here (the GIL orders the two threads).
        self._lazy_wait = True
        until = self._lazy_until(time.monotonic())
        if not until or self._once:
            self._lazy_wait = False
            self._once = False  # this wait is the signalled one asked for
            with self._reap_lock:  # signalled: announce the wait, sleep until a response
                self._deliver(rings.read(None, ACK_SPIN_NS))
            return ()
        try:
            rings.wait_lazy(until)  # no lock: a send meanwhile takes what came (reap)
        finally:
            self._lazy_wait = False  # also when the wait raised: no nudges after that
        with self._reap_lock:
            frames = rings.take()
            if not frames and rings.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            self._deliver(frames)
        return ()

    def reap(self, force: bool = False) -> None:
        """Take and deliver the responses already in the ring, in the calling thread (a
        producer's next send, or a future asked for: force, the same here), while the reader
        sleeps unsignalled: nobody is woken for them. Never waits: if the reader is taking
        them right now, it delivers them."""
        if not self._lazy_wait or not self._reap_lock.acquire(blocking=False):
            return
        try:
            if self._fds_closed or self.lost is not None or self._deferred is not None:
                return
            rings = self._rings
            buf = rings.resp.read(rings.efd_sup)  # take_ring's bytes, without its frames
            if buf is not None:
                self.reaped += deliver_acks(self, buf, True)[0]
        except Exception as e:  # a corrupt ring or a refusal: the reader ends the channel with it
            self._deferred = e
            self._nudge()
        finally:
            self._reap_lock.release()

    def unread(self) -> bool:
        """Whether the supervisor has yet to read a request written into the ring before our
        last one: it is more than one request behind. Only then are records held back (invariant
        39): a supervisor that has yet to read just the last one reads the next with it, in the
        same wake-up, while a held record would wait for the last one's acknowledgement, a
        wake-up of this process's reader and then of its I/O thread, and the supervisor's next
        wake-up (at 10,000 sends a second, the p50's largest hop: bench/results/
        issue16-lat16.md). Any thread (a send() while the I/O thread replaces a lost channel):
        under _fd_lock, so the ring is never read after close() unmapped it."""
        with self._fd_lock:
            if self._fds_closed:
                return False
            rings = self._rings
            return rings.req is not None and rings.req_tail() < self._sender.last_at

    def _nudge(self) -> None:
        with self._fd_lock:
            if not self._fds_closed:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._rings.efd_data, 1)  # end the reader's unsignalled wait

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._rings.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's poll (EOF)
        self._reader.join(timeout=5)
        self._rings.sock.close()
        if not self._reader.is_alive():  # never unmap under a running reader (or a reap)
            with self._reap_lock, self._fd_lock:
                self._fds_closed = True
            # Nor under a writer (a send in another thread): writers hold _lock and look at
            # _fds_closed first, so once it is taken none is inside or will write. Not nested in
            # the locks above (a reap's delivery takes _lock under _reap_lock). One stuck past
            # the bound (it was woken by the shutdown above) keeps the mapping: leaked, no crash.
            if self._lock.acquire(timeout=5):
                try:
                    self._rings.close()
                finally:
                    self._lock.release()


def open_async_channel(path: Path, transport: str = "auto", max_request_bytes: int = 0,
                       on_lost: Callable[[BaseException], None] | None = None
                       ) -> AsyncChannel | ShmAsyncChannel:
    if check_transport(transport) == "socket":
        return LazySocketChannel(path, on_lost)
    ring = ring_bytes_for(max_request_bytes + 64 * 1024) if max_request_bytes else 0
    sock, rings = connect_rings(path, transport, ring)
    if rings is None:
        sock.close()  # the socket channel makes its own connection
        return LazySocketChannel(path, on_lost)
    return ShmAsyncChannel(path, rings, on_lost)


__all__ = ["ShmAsyncChannel", "ShmSyncChannel", "check_transport", "open_async_channel",
           "open_sync_channel"]
