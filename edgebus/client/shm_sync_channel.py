"""The consumer's and the admin's channel over the shared-memory rings: `ShmSyncChannel`, a
SyncChannel whose transport is the rings (edgebus/client/shm_rings.py), plus fetch-ahead
(edgebus/client/fetch_ahead.py), and `open_sync_channel`, which picks the transport
(edgebus/client/shm_channel.py's docstring: "shm", "socket", "auto").

A consumer's channel is a ShmSyncChannel on the socket too (transport "socket", or "auto"
without rings): its fetch-ahead is then a standing fetch on the socket (FETCH_STANDING; flow
control there is the supervisor's, edgebus/server/handlers/standing.py). `STANDING` and
`FETCH_AHEAD` are read from this module's globals at each use (bench/paced.py and
bench/sockstand.py set `shm_sync_channel.STANDING` to compare).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgebus import format as F
from edgebus.client.channel import SyncChannel
from edgebus.client.dispatch import next_corr, refusal
from edgebus.client.fetch_ahead import is_empty, next_body
from edgebus.client.quick_take import AVAILABLE as _QUICK
from edgebus.client.quick_take import AnswerBuffer, QuickTake
from edgebus.client.shm_rings import ShmRings, connect_rings
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
from edgebus.tuning import FETCH_AHEAD, STANDING, check_transport

_NEVER = 1 << 62  # no answer body is this long: on the socket transport no answer ends a standing fetch

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
        try:
            self._rings.write(frame, deadline)
        except BaseException:
            # A frame too large for the ring goes on the socket (ShmRings.write), where part of
            # it may stay: the connection ends, as SyncChannel._write ends it
            self.close()
            raise

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
            # Too large for the ring, it came on the socket, and the supervisor's standing
            # fetch ended with it (handlers/standing.py): a new one is sent below.
            ended = self._rings is not None and len(frame.body) > self._rings.big_body
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
            ended = False
        self._remember(resp)
        if FETCH_AHEAD:
            guess = next_body(body, resp, body.max_wait_ms)
            if standing is not None:
                if guess is not None and not ended:
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
                rings = self._rings
                big = rings.big_body if rings is not None else _NEVER
                while frames:
                    frame = frames.popleft()
                    got = None if frame.error_code or len(frame.body) > big else _fetched_records(
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


__all__ = ["ShmSyncChannel", "open_sync_channel"]
