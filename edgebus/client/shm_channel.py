"""Client channels over shared-memory rings, with the socket channels' interfaces.

`open_sync_channel` / `open_async_channel` pick the transport: "shm" forces the rings (errors if
they cannot be set up), "socket" forces the socket, "auto" (the default) tries the rings and falls
back to the socket with one debug log line when they are unavailable (C module not built, not
Linux, an older supervisor, or the supervisor refused).

Setup: connect to the Unix socket, send SHM_ATTACH, receive its response together with four file
descriptors (SCM_RIGHTS): the memfd holding both rings and three eventfds. Then requests go into
the request ring and responses come from the response ring; the socket stays open to notice the
supervisor's death at once (it becomes readable with EOF) and to carry frames too large for a
ring.

Waiting: spin in C for SPIN_NS (cheap while traffic flows), then announce the sleep (the ring's
waiting flag), re-check, and block in poll() on the eventfd and the socket together.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebus import format as F
from edgebus.client.channel import AsyncChannel, Callback, SyncChannel, connect, resolve_socket
from edgebus.client.fetch_ahead import is_empty, next_body
from edgebus.errors import BrokerUnavailableError, EdgebusError, OperationTimeoutError
from edgebus.fastpath.fetch import FetchBody, fetch_body, fetch_response
from edgebus.protocol import messages as M
from edgebus.protocol.codec import EncodedRequest, Message
from edgebus.protocol.framing import ClientProtocol, ResponseFrame
from edgebus.shm import cpu_free, unavailable_reason

log = logging.getLogger("edgebus.client.shm")

TRANSPORTS = ("auto", "shm", "socket")
# Spin this long for a response or for room before sleeping on the eventfd (a consumer waiting
# for its fetch answer, an Admin call). Spinning trades CPU for latency while traffic flows.
SPIN_NS = int(os.environ.get("EDGEBUS_SHM_SPIN_US", "200")) * 1000
# A producer's acknowledgement reader spins less: nobody waits on it in a hurry, and on a small
# machine its spinning takes the core the supervisor or a consumer needs.
ACK_SPIN_NS = min(SPIN_NS, 20_000)
# Lazy acknowledgements: while a producer sends steadily and nobody waits on a result, its
# reader collects acknowledgements every ACK_LAZY_S instead of being woken per response (each
# wake-up costs the supervisor an eventfd write and the producer a thread wake-up, together about
# as much as handling the record). Anyone who waits (a future's get(), flush(), a full buffer)
# calls hurry(), and the reader is then woken per response for URGENT_S. 0 turns laziness off.
ACK_LAZY_S = int(os.environ.get("EDGEBUS_SHM_ACK_LAZY_US", "1000")) / 1e6
URGENT_S = 0.1
# "Sends steadily": the last request went out less than this long ago; an idle producer's reader
# sleeps until signalled, so it costs nothing.
STEADY_S = 0.02
# Spin only while traffic flows: when the previous response came less than this long ago. An
# idle long-polling consumer then sleeps at once instead of spinning before every long poll.
RECENT_NS = 2_000_000
# Fetch-ahead for consumers (edgebus/client/fetch_ahead.py); EDGEBUS_SHM_FETCH_AHEAD=0 turns it off.
FETCH_AHEAD = os.environ.get("EDGEBUS_SHM_FETCH_AHEAD", "1") != "0"
# Default data bytes per ring; a producer asks for more when its max_request_size needs it.
DEFAULT_RING_BYTES = 4 * 1024 * 1024
_RECV = 1024 * 1024
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR


def check_transport(transport: str) -> str:
    """The transport to use. "auto" defers to $EDGEBUS_TRANSPORT when that is set (so a
    deployment or a test run can force one for every client without code changes)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}")
    if transport == "auto":
        forced = os.environ.get("EDGEBUS_TRANSPORT", "auto")
        if forced not in TRANSPORTS:
            raise ValueError(f"EDGEBUS_TRANSPORT must be one of {', '.join(TRANSPORTS)}; got {forced!r}")
        return forced
    return transport


def ring_bytes_for(max_frame: int) -> int:
    """The smallest allowed power-of-two ring whose max frame (capacity / 2) holds max_frame."""
    n = DEFAULT_RING_BYTES
    while n // 2 < max_frame and n < F.MAX_RING_BYTES:
        n *= 2
    return n


class ShmLink:
    """The client's end of one attached connection: socket, mapping, rings, eventfds.

    Thread use: one reader (of the response ring) and one writer (of the request ring) at a time;
    callers serialise each side. close() only after both have stopped (it unmaps).
    """

    def __init__(self, sock: socket.socket, resp: M.ShmAttachResponse, fds: list[int]) -> None:
        from edgebus.shm import ring as R

        memfd, self.efd_sup, self.efd_data, self.efd_space = fds
        try:
            self.mapping = R.Mapping(memfd, resp.map_bytes)
        finally:
            os.close(memfd)  # the mapping keeps the memory
        self.sock = sock
        self.req = R.Ring(self.mapping, 0, resp.request_ring_bytes)
        self.resp = R.Ring(self.mapping, resp.response_ring_offset, resp.response_ring_bytes)
        self.proto = ClientProtocol()  # frames that arrive on the socket (too large for the ring)
        self._rpoll = select.poll()
        self._rpoll.register(self.efd_data, select.POLLIN)
        self._rpoll.register(sock.fileno(), select.POLLIN)
        self._wpoll = select.poll()
        self._wpoll.register(self.efd_space, select.POLLIN)
        # A writer only watches for the supervisor's death; the socket's data is the reader's
        # (another thread in a producer), so it must not consume it.
        self._wpoll.register(sock.fileno(), select.POLLRDHUP)
        self.eof = False
        self.closed = False
        self.last_rx = 0  # monotonic ns of the last response frame

    # --- writing requests ------------------------------------------------------------------------
    def write(self, frame: bytes, deadline: float | None) -> None:
        """Put one request frame, waiting for room (this producer only: backpressure)."""
        req = self.req
        if len(frame) > req.max_frame:
            # Too big for the ring: the socket carries it. Callers that pipeline keep frames
            # within the ring (ring_bytes_for); for one-at-a-time callers order is trivially kept.
            self.sock.sendall(frame)
            return
        efd = self.efd_sup
        while not req.write(frame, efd):
            if self.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            if req.wait_space(len(frame), SPIN_NS) or req.prepare_sleep_space(len(frame)):
                continue
            self._sleep(self._wpoll, self.efd_space, deadline, reader=False)

    # --- reading responses -----------------------------------------------------------------------
    def read(self, deadline: float | None, spin_ns: int = SPIN_NS, lazy_s: float = 0.0
             ) -> list[ResponseFrame]:
        """Response frames (ring and socket), waiting until at least one or the deadline.
        lazy_s: instead, wait once for at most lazy_s without asking the supervisor to signal
        (it then skips the eventfd write per response), and return what came, maybe nothing; a
        write to efd_data by this process (a nudge) or the socket ends the wait early."""
        resp = self.resp
        if lazy_s:
            out = self._take()
            if not out and not self.eof:
                self._sleep(self._rpoll, self.efd_data, time.monotonic() + lazy_s, reader=True)
                out = self._take()
            if not out and self.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            return out
        while True:
            out = self._take()
            if out:
                return out
            if self.eof:
                raise BrokerUnavailableError("the supervisor closed the connection")
            now = time.monotonic_ns()
            if (spin_ns and now - self.last_rx < RECENT_NS and cpu_free(now)
                    and resp.wait_data(spin_ns)):
                continue
            if resp.prepare_sleep_data():
                continue
            try:
                if not self._sleep(self._rpoll, self.efd_data, deadline, reader=True):
                    return []
            finally:
                resp.cancel_sleep_data()

    def _take(self) -> list[ResponseFrame]:
        out: list[ResponseFrame] = []
        buf = self.resp.read(self.efd_sup)
        if buf is not None:
            mv = memoryview(buf)
            pos, end = 0, len(buf)
            unpack = F.RESPONSE_HEADER.unpack_from
            while pos < end:
                n, corr, err = unpack(buf, pos)
                out.append(ResponseFrame(corr, err, mv[pos + 10 : pos + 4 + n]))
                pos += 4 + n
        proto = self.proto
        if proto.frames.buffered():  # frames too large for the ring come on the socket
            while (f := proto.next_response()) is not None:
                out.append(f)
        if out:
            self.last_rx = time.monotonic_ns()
        return out

    def _sleep(self, poller: Any, efd: int, deadline: float | None, reader: bool) -> bool:
        """Block until efd or the socket is ready. False on the deadline."""
        if deadline is None:
            timeout = None
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timeout = left * 1000
        for fd, _ev in poller.poll(timeout):
            if fd == efd:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(efd)
            elif reader:
                self._recv_socket()
            else:
                self.eof = True  # POLLRDHUP/POLLHUP: the supervisor closed the connection
        return True

    def _recv_socket(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        self.proto.receive_data(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self.efd_sup, self.efd_data, self.efd_space):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.req = self.resp = None  # type: ignore[assignment]
        self.mapping.close()


def attach(sock: socket.socket, request_ring_bytes: int = 0, response_ring_bytes: int = 0,
           timeout: float = 10.0) -> ShmLink:
    """SHM_ATTACH on a freshly connected socket (nothing else outstanding on it)."""
    req = M.ShmAttachRequest(request_ring_bytes, response_ring_bytes)
    sock.sendall(ClientProtocol.encode_request(M.Api.SHM_ATTACH, 0, req))
    proto = ClientProtocol()
    fds: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while (frame := proto.next_response()) is None:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data, got, _flags, _addr = socket.recv_fds(sock, 4096, 4)
            except TimeoutError:
                raise OperationTimeoutError("no answer to SHM_ATTACH") from None
            finally:
                sock.settimeout(None)
            fds.extend(got)
            if not data:
                raise BrokerUnavailableError("the supervisor closed the connection during SHM_ATTACH")
            proto.receive_data(data)
        resp = ClientProtocol.decode_body(M.Api.SHM_ATTACH, frame)  # raises the typed error
        if len(fds) != 4 or resp.fd_count != 4:
            raise BrokerUnavailableError(f"SHM_ATTACH passed {len(fds)} descriptors, expected 4")
        if proto.frames.buffered():
            raise BrokerUnavailableError("unexpected bytes after the SHM_ATTACH response")
        link = ShmLink(sock, resp, fds)
        fds = []
        return link
    finally:
        for fd in fds:
            os.close(fd)


def connect_link(path: Path, transport: str, request_ring_bytes: int = 0
                 ) -> tuple[socket.socket, ShmLink | None]:
    """A connected socket, with rings attached when they can be had (see the module doc)."""
    sock = connect(path)
    reason = unavailable_reason()
    if reason is None:
        try:
            return sock, attach(sock, request_ring_bytes, DEFAULT_RING_BYTES)
        except (EdgebusError, OSError) as e:
            sock.close()
            reason = f"SHM_ATTACH failed: {e}"
            if transport == "shm":
                raise BrokerUnavailableError(f"shared memory with {path}: {reason}") from None
            sock = connect(path)  # the old stream's state is unknown: start clean
    elif transport == "shm":
        sock.close()
        raise BrokerUnavailableError(f"transport='shm' but {reason}")
    log.debug("using the socket transport to %s: %s", path, reason)
    return sock, None


# --- sync (Consumer, Admin) ----------------------------------------------------------------------
class ShmSyncChannel(SyncChannel):
    """SyncChannel over the rings when they can be had (transport "auto"/"shm")."""

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                 transport: str = "auto") -> None:
        super().__init__(path, timeout)
        self.transport = check_transport(transport)
        self._link: ShmLink | None = None
        # Fetch-ahead (edgebus/client/fetch_ahead.py): the guessed request's key and correlation
        # id, and its answer once it arrived.
        self._ahead: tuple[bytes, int] | None = None
        self._ahead_frame: ResponseFrame | None = None
        self._marks: dict[tuple[str, int], tuple[int, int]] = {}  # last high watermark, log start
        self.fetch_ahead_hits = 0

    @property
    def using_shm(self) -> bool:
        return self._link is not None

    def _ensure(self) -> socket.socket:
        if self._sock is None:
            sock, self._link = connect_link(self.path, self.transport)
            self._sock = sock
            self._proto = ClientProtocol() if self._link is None else self._link.proto
        return self._sock

    def request(self, api: int, body: Message | EncodedRequest, timeout: float | None = None) -> Any:
        self._ensure()
        link = self._link
        if link is None:
            return super().request(api, body, timeout)
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        try:
            if api == M.Api.FETCH:
                return self._fetch(body, deadline, t)  # type: ignore[arg-type]
            return ClientProtocol.decode_body(api, self._roundtrip(api, body, deadline, t))
        except (BrokerUnavailableError, OSError) as e:
            self.close()
            raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None

    def _send(self, api: int, body: Message | EncodedRequest, deadline: float) -> int:
        assert self._link is not None
        corr = next(self._corr) & 0xFFFFFFFF
        enc = body.frame(corr) if isinstance(body, FetchBody) else ClientProtocol.encode_request(api, corr, body)
        self._link.write(enc, deadline)
        return corr

    def _roundtrip(self, api: int, body: Message | EncodedRequest, deadline: float, t: float) -> ResponseFrame:
        return self._wait(self._send(api, body, deadline), deadline, t)

    def _wait(self, corr: int, deadline: float, t: float, soft: bool = False
              ) -> ResponseFrame | None:
        """The response to corr; a fetch-ahead answer arriving meanwhile is kept, others dropped
        (late answers to abandoned requests). soft: None at the deadline (the request stays
        outstanding) instead of closing the channel."""
        assert self._link is not None
        ahead = self._ahead[1] if self._ahead is not None else -1
        if corr == ahead and self._ahead_frame is not None:
            return self._ahead_frame
        while True:
            frames = self._link.read(deadline)
            if not frames:
                if soft:
                    return None
                self.close()  # a response we will not read in order may still come
                raise OperationTimeoutError(f"no response from {self.path} within {t:.1f} s")
            found = None
            for f in frames:
                if f.correlation_id == corr:
                    found = f
                elif f.correlation_id == ahead:
                    self._ahead_frame = f
            if found is not None:
                return found

    def _fetch(self, request: M.FetchRequest | FetchBody, deadline: float, t: float) -> Any:
        body = fetch_body(request)
        key = body.key
        ahead = self._ahead
        if ahead is not None and ahead[0] == key:
            # The fetch sent ahead is this one: wait for it as long as this request would
            # have waited at the supervisor, no longer (the guess may have been sent with a
            # longer max_wait_ms); if it is still parked, answer "nothing yet" and keep it.
            own = time.monotonic() + body.max_wait_ms / 1000 + 0.002
            frame = self._wait(ahead[1], min(deadline, own), t, soft=True)
            if frame is None:
                return self._nothing_yet(body)
            self._ahead, self._ahead_frame = None, None
            resp = fetch_response(frame)
            if not is_empty(resp):
                self.fetch_ahead_hits += 1
        else:
            # A wrong guess (seek, new assignment, other limits): its answer, if it comes, is
            # dropped; the supervisor answers it when its max_wait_ms runs out at the latest.
            self._ahead, self._ahead_frame = None, None
            resp = fetch_response(self._roundtrip(M.Api.FETCH, body, deadline, t))
        self._remember(resp)
        if FETCH_AHEAD:
            guess = next_body(body, resp, body.max_wait_ms)
            if guess is None and is_empty(resp) and body.max_wait_ms > 0:
                guess = body  # nothing new: keep one long-poll parked for the next poll
            if guess is not None:
                self._ahead = (guess.key, self._send(M.Api.FETCH, guess, deadline))
        return resp

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

    def close(self) -> None:
        link, self._link = self._link, None
        self._ahead = self._ahead_frame = None
        try:
            super().close()
        finally:
            if link is not None:
                link.close()


def open_sync_channel(path: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                      transport: str = "auto") -> SyncChannel:
    if check_transport(transport) == "socket":
        return SyncChannel(path, timeout)
    return ShmSyncChannel(path, timeout, transport)


# --- async (Producer) ----------------------------------------------------------------------------
class ShmAsyncChannel:
    """AsyncChannel's interface over the rings: send() from any thread (serialised by a lock),
    a reader thread resolves callbacks by correlation id."""

    def __init__(self, path: Path, link: ShmLink,
                 on_lost: Callable[[BaseException], None] | None = None) -> None:
        self.path = path
        self._link = link
        self._corr = itertools.count(1)
        self._lock = threading.Lock()  # the request ring's writer side and _pending
        self._pending: dict[int, Callback] = {}
        self._closed = False
        self.lost: BaseException | None = None
        self._on_lost = on_lost
        self._last_send = 0.0  # monotonic
        self._urgent_until = 0.0  # monotonic; see ACK_LAZY_S
        self._lazy_wait = False  # the reader is (about to be) in an unsignalled wait
        # hurry() writes to the link's eventfd from any thread; close() closes it. This lock
        # orders the two, so a nudge never lands on a closed (and maybe reused) descriptor number.
        self._fd_lock = threading.Lock()
        self._fds_closed = False
        self._reader = threading.Thread(target=self._read_loop, name="edgebus-shm-reader",
                                        daemon=True)
        self._reader.start()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def send(self, api: int, body: Message | EncodedRequest, callback: Callback | None) -> None:
        with self._lock:
            if self.lost is not None:
                raise BrokerUnavailableError(str(self.lost))
            corr = next(self._corr) & 0xFFFFFFFF
            frame = ClientProtocol.encode_request(api, corr, body)
            if callback is not None:
                self._pending[corr] = callback
            self._last_send = time.monotonic()
            try:
                self._link.write(frame, None)
            except (BrokerUnavailableError, OSError) as e:
                self._pending.pop(corr, None)
                raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None

    def _read_loop(self) -> None:
        err: BaseException
        link = self._link
        try:
            while not self._closed:
                # _lazy_wait is set before the checks: a hurry() after them sees it and nudges.
                self._lazy_wait = True
                now = time.monotonic()
                lazy = ACK_LAZY_S if (ACK_LAZY_S and now >= self._urgent_until
                                      and now - self._last_send < STEADY_S) else 0.0
                if not lazy:
                    self._lazy_wait = False
                try:
                    frames = link.read(None, ACK_SPIN_NS, lazy)
                finally:
                    self._lazy_wait = False  # also when the read raised: no nudges after that
                for frame in frames:
                    with self._lock:
                        cb = self._pending.pop(frame.correlation_id, None)
                    if cb is not None:
                        cb(frame, None)
            err = BrokerUnavailableError("the channel was closed")
        except BrokerUnavailableError as e:
            err = e
        except Exception as e:  # a protocol error from a broken peer
            err = e
        with self._lock:
            self.lost = err
            pending, self._pending = self._pending, {}
        for cb in pending.values():  # closed or not: every in-flight future gets an outcome
            cb(None, err)
        if not self._closed and self._on_lost is not None:
            self._on_lost(err)

    def hurry(self) -> None:
        """Someone waits for an acknowledgement: deliver them as they come for a while."""
        self._urgent_until = time.monotonic() + URGENT_S
        if self._lazy_wait:
            with self._fd_lock:
                if not self._fds_closed:
                    with contextlib.suppress(OSError):
                        os.eventfd_write(self._link.efd_data, 1)  # end the reader's unsignalled wait

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._link.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's poll (EOF)
        self._reader.join(timeout=5)
        self._link.sock.close()
        if not self._reader.is_alive():  # never unmap under a running reader
            with self._fd_lock:
                self._fds_closed = True
            self._link.close()


def open_async_channel(path: Path, transport: str = "auto", max_request_bytes: int = 0,
                       on_lost: Callable[[BaseException], None] | None = None
                       ) -> AsyncChannel | ShmAsyncChannel:
    if check_transport(transport) == "socket":
        return AsyncChannel(path, on_lost)
    ring = ring_bytes_for(max_request_bytes + 64 * 1024) if max_request_bytes else 0
    sock, link = connect_link(path, transport, ring)
    if link is None:
        sock.close()  # AsyncChannel makes its own connection
        return AsyncChannel(path, on_lost)
    return ShmAsyncChannel(path, link, on_lost)


__all__ = ["ShmAsyncChannel", "ShmSyncChannel", "open_async_channel", "open_sync_channel",
           "resolve_socket"]
