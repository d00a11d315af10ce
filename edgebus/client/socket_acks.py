"""A producer's socket channel whose acknowledgements are taken at its next send (issue 16).

On the socket, the reader thread blocked in recv() is woken by the kernel for every
acknowledgement: a thread wake-up per record for a producer sending one record at a time. As on
the rings (ShmAsyncChannel, edgebus/client/shm_channel.py), while the producer sends steadily and
nobody waits on a result, the reader waits on a private eventfd instead of the socket, so the
kernel wakes nobody when an acknowledgement arrives, and each request written takes what came
with one recv(MSG_DONTWAIT) (`reap`, from the producer's send). The reader's unsignalled wait ends
ACK_LAZY_GAPS average send gaps after the last send (ACK_LAZY_S at least, STEADY_S at most), or
at a nudge (someone waits: hurry(), waiting(); close()); then it takes what is left and, if
nobody sends steadily any more, blocks in recv() as AsyncChannel does. A supervisor that died
meanwhile is seen at the next send or when the wait ends (at most STEADY_S later).

Invariant: one taker of the socket's bytes at a time, with the callbacks of what it took
(`_reap_lock`: held by the reader for a whole blocking recv and for taking after a lazy wait; a
sender only tries it, and only while the reader waits lazily), so the frame parser sees the
stream in order and every callback runs once, in response order.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgebus.client.channel import RECV_SIZE, AsyncChannel
from edgebus.errors import BrokerUnavailableError
from edgebus.tuning import ACK_LAZY_GAPS, ACK_LAZY_S, STEADY_S, URGENT_S


class LazySocketChannel(AsyncChannel):
    """AsyncChannel whose acknowledgements a steadily sending producer takes itself."""

    def __init__(self, path: Path, on_lost: Callable[[BaseException], None] | None = None) -> None:
        self._last_send = 0.0  # monotonic
        self._send_gap = ACK_LAZY_S  # moving average of the gaps between requests (s)
        self._sent = 0  # requests written; a reap without a new one since the last finds nothing
        self._reaped_at = 0
        self._urgent_until = 0.0
        self._lazy_wait = False
        self._once = False
        self._waiters = 0
        self._waiters_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._deferred: BaseException | None = None
        self.reaped = 0  # responses taken by senders (tests, benchmarks)
        self._nudge_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep = select.epoll(1)
        self._ep.register(self._nudge_fd, select.EPOLLIN | select.EPOLLET)
        self._fd_lock = threading.Lock()
        self._fds_closed = False
        try:
            super().__init__(path, on_lost)
        except BaseException:
            self._close_fds()
            raise
        self._sendall = self._sock.sendall
        self._write = self._write_sock

    def _write_sock(self, frame: bytes) -> None:
        now = time.monotonic()
        gap = now - self._last_send
        self._send_gap += ((gap if gap < STEADY_S else STEADY_S) - self._send_gap) / 4
        self._last_send = now
        self._sent += 1
        self._sendall(frame)

    def _lazy_until(self, now: float) -> float:
        if not ACK_LAZY_S or self._waiters or now < self._urgent_until:
            return 0.0
        last = self._last_send
        if now - last >= STEADY_S:
            return 0.0
        span = ACK_LAZY_GAPS * self._send_gap
        until = last + max(ACK_LAZY_S, span if span < STEADY_S else STEADY_S)
        return until if until > now else 0.0

    def _take(self, block: bool) -> None:
        """Under _reap_lock: read what the socket holds (waiting for it when block) and run
        the callbacks of the whole frames."""
        try:
            data = self._sock.recv(RECV_SIZE) if block else \
                self._sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise BrokerUnavailableError(f"the supervisor at {self.path} closed the connection")
        self._proto.receive_data(data)
        self._deliver(iter(self._proto.next_response, None))

    def _receive(self) -> tuple[()]:
        if self._closed:
            raise BrokerUnavailableError("the channel was closed")
        if self._deferred is not None:
            raise self._deferred
        self._lazy_wait = True  # before the checks: a hurry() after them sees it and nudges
        until = self._lazy_until(time.monotonic())
        if not until or self._once:
            self._lazy_wait = False
            self._once = False
            with self._reap_lock:
                self._take(block=True)
            return ()
        try:
            left = until - time.monotonic()
            if left > 0:
                self._ep.poll(left)
        finally:
            self._lazy_wait = False
        with self._reap_lock:
            if self._closed:
                raise BrokerUnavailableError("the channel was closed")
            self._take(block=False)
        return ()

    def reap(self) -> None:
        """Take the acknowledgements that came, in the calling thread (a producer's send),
        while the reader waits lazily; once per request written at most, never waiting."""
        if not self._lazy_wait or self._sent == self._reaped_at \
                or not self._reap_lock.acquire(blocking=False):
            return
        try:
            if self.lost is not None or self._deferred is not None or self._closed:
                return
            self._reaped_at = self._sent
            n = len(self._pending)
            self._take(block=False)
            self.reaped += n - len(self._pending)
        except Exception as e:  # EOF, a broken stream: the reader ends the channel with it
            self._deferred = e
            self._nudge()
        finally:
            self._reap_lock.release()

    def hurry(self, once: bool = False) -> None:
        if once:
            self._once = True
        else:
            self._urgent_until = time.monotonic() + URGENT_S
        if self._lazy_wait:
            self._nudge()

    def _nudge(self) -> None:
        with self._fd_lock:
            if not self._fds_closed:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._nudge_fd, 1)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        with self._waiters_lock:
            self._waiters += 1
        try:
            self.hurry()
            yield
        finally:
            with self._waiters_lock:
                self._waiters -= 1

    def _close_fds(self) -> None:
        with self._fd_lock:
            if self._fds_closed:
                return
            self._fds_closed = True
        self._ep.close()
        os.close(self._nudge_fd)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # ends a blocking recv
        self._nudge()  # ends a lazy wait
        self._reader.join(timeout=5)
        self._sock.close()
        if not self._reader.is_alive():
            self._close_fds()


__all__ = ["LazySocketChannel"]
