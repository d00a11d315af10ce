"""A producer's socket channel whose acknowledgements are taken at its next send (issue 16).

On the socket, the reader thread blocked in recv() is woken by the kernel for every
acknowledgement: a thread wake-up per record for a producer sending one record at a time. As on
the rings (ShmAsyncChannel, edgebus/client/shm_channel.py), while the producer sends steadily and
nobody waits on a result, the reader waits on a private eventfd instead of the socket, so the
kernel wakes nobody when an acknowledgement arrives, and each request written takes what came
with one recv(MSG_DONTWAIT) (`reap`, from the producer's send). Until the producer's first
callback the reader's unsignalled wait has no timer (edgebus/client/lazy_acks.py); after it,
it ends ACK_LAZY_GAPS average send gaps after the last send (ACK_LAZY_S at least, STEADY_S at
most). A nudge (someone waits: hurry(), waiting(); close()) ends it too; then it takes what is
left and, if nobody sends steadily any more, blocks in recv() as AsyncChannel does. A
supervisor that dies meanwhile ends it at once: the socket's hang-up (EPOLLRDHUP) is watched.

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
from collections.abc import Callable
from pathlib import Path

from edgebus.client import lazy_acks
from edgebus.client.channel import RECV_SIZE, AsyncChannel
from edgebus.client.dispatch import CORR_MASK, Callback
from edgebus.client.fast_acks import deliver as deliver_acks
from edgebus.client.lazy_acks import LazyAcks
from edgebus.client.record_frames import (
    FRAME_BUFFER_BYTES,
    FRAME_FIXED,
    NULL,
    PRODUCE,
    SEND_DECLINED,
    ffi_buffer,
    new_frame_buffer,
    sock_produce,
)
from edgebus.errors import BrokerUnavailableError

# send_record asks whether the supervisor has read our last request (an ioctl) only when that
# request went out less than this long ago: older ones it has read unless it is that far behind,
# and holding records back is for a supervisor that is (at 1,000 sends/s this spares a system
# call per send).
UNREAD_RECENT_S = 0.0005


class LazySocketChannel(LazyAcks, AsyncChannel):
    """AsyncChannel whose acknowledgements a steadily sending producer takes itself."""

    def __init__(self, path: Path, on_lost: Callable[[BaseException], None] | None = None) -> None:
        self._init_lazy_acks()
        self._sent = 0  # requests written; a reap without a new one since the last finds nothing
        self._reaped_at = 0
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
        # The socket's hang-up (not its data: that is the point) ends an unsignalled wait, so a
        # supervisor's death fails what is in flight even when the wait has no timer.
        self._ep.register(self._sock.fileno(), select.EPOLLRDHUP)
        self._sendall = self._sock.sendall
        self._fd = self._sock.fileno()  # send_record's (sock_send.c); closed only with the channel
        self._write = self._write_sock
        self._fbuf = new_frame_buffer()  # send_record's frame (writers hold _lock)
        self._fview = None if self._fbuf is None else memoryview(ffi_buffer(self._fbuf))

    def _write_sock(self, frame: bytes) -> None:
        self._note_send()
        self._sent += 1
        self._sendall(frame)

    def send_record(self, prefix: bytes, key: bytes | None, value: bytes | None, ts: int,
                    callback: Callback, hold: bool, now: float) -> bool:
        """send() of a one-record PRODUCE (edgebus/client/fast_send.py): built and sent by one
        C call (edgebus/sock_send.c), what send(2) did not take then sent by sendall; hold:
        write nothing and return False while the supervisor has yet to read bytes written
        before (SIOCOUTQ, asked only when the last request is under UNREAD_RECENT_S old).
        now: the caller's monotonic clock."""
        with self._lock:
            if self.lost is not None:
                raise BrokerUnavailableError(str(self.lost))
            corr = (next(self._corr) - 1) % CORR_MASK + 1  # dispatch.next_corr, inline
            k, kl = (NULL, -1) if key is None else (key, len(key))
            v, vl = (NULL, -1) if value is None else (value, len(value))
            plen = len(prefix)
            sent = sock_produce(self._fd, self._fbuf, FRAME_BUFFER_BYTES, prefix, plen, k, kl, v,
                                vl, ts, corr, PRODUCE,
                                hold and now - self._last_send < UNREAD_RECENT_S)
            if sent == SEND_DECLINED:
                return False
            self._pending[corr] = callback
            n = FRAME_FIXED + plen + (kl if kl > 0 else 0) + (vl if vl > 0 else 0)
            if sent != n:  # a full socket buffer took part of it (or none), or an error
                try:
                    if sent < 0:
                        raise OSError(-sent - 1000, os.strerror(-sent - 1000)) if sent <= -1000 \
                            else OSError(f"the frame was not built ({sent})")
                    self._sendall(self._fview[sent:n])  # type: ignore[index]
                except OSError as e:
                    self._pending.pop(corr, None)
                    raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None
            # _note_send, without its call (once per record); the gaps' average is used only
            # by timed waits (lazy_acks: with callbacks), so kept only then
            if self._timed:
                gap = now - self._last_send
                cap = lazy_acks.STEADY_S
                self._send_gap += ((gap if gap < cap else cap) - self._send_gap) / 4
            self._last_send = now
            self._sent += 1
        return True

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
        proto = self._proto
        if not proto.frames.buffered():
            # The common read: acknowledgements, whole, nothing left over from the last read.
            # Settled here in one walk (fast_acks.deliver), instead of two calls per frame
            # (next_response, next_frame) and a ResponseFrame each; a frame's start, or a large
            # frame, goes to the buffer.
            end = deliver_acks(self, data, False)[1]
            if end == len(data):
                return
            proto.receive_data(memoryview(data)[end:])
        else:
            proto.receive_data(data)
        nxt = proto.next_response
        frames = []
        while (f := nxt()) is not None:  # not iter(..., None): a dataclass == per frame
            frames.append(f)
        self._deliver(frames)

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

    def reap(self, force: bool = False) -> None:
        """Take the acknowledgements that came, in the calling thread (a producer's send),
        while the reader waits lazily; once per request written at most (force: whether or
        not one was written since, as when a future is asked for), never waiting."""
        if not self._lazy_wait or (self._sent == self._reaped_at and not force) \
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

    def _nudge(self) -> None:
        with self._fd_lock:
            if not self._fds_closed:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._nudge_fd, 1)

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
