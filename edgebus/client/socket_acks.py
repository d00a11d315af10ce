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
A batch held for the next answer (hurry(once=True)) arms the socket's data in that wait instead
of nudging the reader: one wake-up per held batch, the answer's (sockack27).

Records are held back only while the supervisor has yet to read a request before our last one,
as on the rings (`unread`, `send_record`); the answers tell the last request's unread bytes
from earlier ones', since SIOCOUTQ counts the kernel's buffers, not our bytes.

Invariant: one taker of the socket's bytes at a time, with the callbacks of what it took
(`_reap_lock`: held by the reader for a whole blocking recv and for taking after a lazy wait; a
sender only tries it, and only while the reader waits lazily), so the frame parser sees the
stream in order and every callback runs once, in response order.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MethodType

from edgebus.client import fast_acks, lazy_acks
from edgebus.client.channel import RECV_SIZE, AsyncChannel
from edgebus.client.dispatch import CORR_MASK, Callback, unwritten
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

# send_record asks whether the supervisor has read what we wrote (an ioctl) only when the last
# request went out less than this long ago: older ones it has read unless it is that far behind,
# and holding records back is for a supervisor that is (at 1,000 sends/s this spares a system
# call per send).
UNREAD_RECENT_S = 0.0005
_OUTQ = struct.Struct("i")  # SIOCOUTQ's int
_NONE_QUEUED = _OUTQ.pack(0)


class LazySocketChannel(LazyAcks, AsyncChannel):
    """AsyncChannel whose acknowledgements a steadily sending producer takes itself."""

    # The callback of the record whose send_record raised from its reap (a user callback's
    # BaseException) before writing it: its sender (fast_send) undoes what it counted.
    unwritten: object = None

    def __init__(self, path: Path, on_lost: Callable[[BaseException], None] | None = None) -> None:
        self._init_lazy_acks()
        self._sent = 0  # requests written; a reap without a new one since the last finds nothing
        # _sent when send_record last found nothing unread: the supervisor had read every request
        # up to then, so at most those written since can be unread (under _lock)
        self._read_mark = 0
        # (_sent, unanswered) when unread() last found bytes unread: until one of them changes,
        # a held record's send need not ask the kernel again
        self._unread_seen = (-1, -1)
        self._unread_fresh = False  # send_record just found them unread: the next unread() knows
        self._reaped_at = 0
        self._reap_lock = threading.Lock()
        self._deferred: BaseException | None = None
        self.reaped = 0  # responses taken by senders (tests, benchmarks)
        self._nudge_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep = select.epoll(1)
        self._ep.register(self._nudge_fd, select.EPOLLIN | select.EPOLLET)
        self._fd_lock = threading.Lock()
        self._fds_closed = False
        # hurry(once=True) calls (_once_n), those that a wait took care of (_served_n: a
        # signalled wait, or an armed lazy one), and the last armed (_armed_n); under the GIL.
        # Set before the reader starts (in AsyncChannel.__init__).
        self._once_n = self._served_n = self._armed_n = 0
        self._arm_fd = -1
        try:
            super().__init__(path, on_lost)
        except BaseException:
            self._close_fds()
            raise
        # The socket's hang-up (not its data: that is the point) ends an unsignalled wait, so a
        # supervisor's death fails what is in flight even when the wait has no timer.
        self._ep.register(self._sock.fileno(), select.EPOLLRDHUP)
        # A second descriptor of the socket, for its data: armed (EPOLLIN, one-shot) by
        # hurry(once=True) while the reader waits lazily, so the next answer wakes it there,
        # instead of a nudge waking it now to wait for that answer in recv(): one wake-up per
        # held batch instead of two. The kernel disarms it when it fires.
        arm_fd = os.dup(self._sock.fileno())
        try:
            self._ep.register(arm_fd, select.EPOLLONESHOT)
        except BaseException:
            os.close(arm_fd)  # not yet _arm_fd: _close_fds would not close it
            raise
        self._arm_fd = arm_fd  # until now hurry(once=True) nudges
        self._sendall = self._sock.sendall
        self._fd = self._sock.fileno()  # send_record's (sock_send.c); closed only with the channel
        self._write = self._write_sock
        self._fbuf = new_frame_buffer()  # send_record's frame (writers hold _lock)
        self._fview = None if self._fbuf is None else memoryview(ffi_buffer(self._fbuf))
        if fast_acks.C_REAP is not None:  # a builtin is no method: bound here (a cycle the GC ends)
            self.reap = MethodType(fast_acks.C_REAP, self)  # type: ignore[method-assign]

    def _write_sock(self, frame: bytes) -> None:
        self._note_send()
        self._sent += 1
        self._sendall(frame)

    def unread(self) -> bool:
        """Whether the supervisor has yet to read a request written before our last one, as on
        the rings (ShmAsyncChannel.unread): just the last one unread holds nothing back (the
        supervisor is awake or being woken, and reads the next request with it in one wake-up;
        held, a record waited for that request's answer, this process's reader and I/O threads,
        and another wake-up of the supervisor). SIOCOUTQ counts the kernel's buffers of what is
        unread, not our bytes, so "before our last one" is told by the answers: unread bytes with
        at most one request unanswered are the last request's. Callers take the answers that came
        first (Producer._take_for_inline_send: reap). While nothing is written or answered and
        the reader waits armed for the next answer (a hold's), the answer stays what it was:
        the records sent during a hold ask the kernel once (none asks again right after
        send_record's own look declined the record)."""
        if len(self._pending) < 2:
            return False
        state = (self._sent, len(self._pending))
        fresh, self._unread_fresh = self._unread_fresh, False
        if state == self._unread_seen and (fresh or self._armed_n > self._served_n):
            # Nothing written or answered since bytes were found unread, and either that was
            # send_record's look for this very record (the general path asks next), or the
            # reader's wait is armed for the next answer (which changes the count): still unread
            return True
        if self._queued():
            self._unread_seen = state
            return True
        return False

    def _queued(self) -> bool:
        """SIOCOUTQ: bytes written and not yet read by the supervisor (on a Unix stream socket
        they stay charged to the sender until the peer reads them)."""
        try:
            # the socket's fileno(), not _fd: -1 (OSError) once closed, never a reused number
            return fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, _NONE_QUEUED) != _NONE_QUEUED
        except OSError:
            return False

    def send_record(self, prefix: bytes, key: bytes | None, value: bytes | None, ts: int,
                    callback: Callback, hold: bool, now: float) -> bool:
        """send() of a one-record PRODUCE (edgebus/client/fast_send.py): built and sent by one
        C call (edgebus/sock_send.c), what send(2) did not take then sent by sendall; hold:
        write nothing and return False while the supervisor has yet to read a request written
        before our last one (unread()). The C call looks at SIOCOUTQ only when more than one
        request may be unread (unanswered, and written since a look found nothing unread; else
        the bytes unread can only be the last request's) and the last one is under
        UNREAD_RECENT_S old; when it finds bytes unread, the answers that came are taken (reap)
        and the record goes unless two requests are still unanswered.
        now: the caller's monotonic clock."""
        # Look only if two requests or more may be unread: unanswered, and written since the
        # last look that found everything read (at 10,000 sends/s, one look per four sends)
        look = hold and len(self._pending) > 1 and self._sent - self._read_mark > 1 \
            and now - self._last_send < UNREAD_RECENT_S
        while True:  # twice at most: a look that found bytes unread, then without one
            with self._lock:
                if self.lost is not None:
                    raise unwritten(self.path, self.lost)  # lost before it was written: not sent
                corr = (next(self._corr) - 1) % CORR_MASK + 1  # dispatch.next_corr, inline
                k, kl = (NULL, -1) if key is None else (key, len(key))
                v, vl = (NULL, -1) if value is None else (value, len(value))
                plen = len(prefix)
                sent = sock_produce(self._fd, self._fbuf, FRAME_BUFFER_BYTES, prefix, plen, k,
                                    kl, v, vl, ts, corr, PRODUCE, look)
                if sent != SEND_DECLINED:
                    self._pending[corr] = callback
                    n = FRAME_FIXED + plen + (kl if kl > 0 else 0) + (vl if vl > 0 else 0)
                    if sent != n:  # a full socket buffer took part of it (or none), or an error
                        if sent < 0:  # none of it written: the stream holds no part of it
                            self._pending.pop(corr, None)
                            raise unwritten(self.path, OSError(
                                -sent - 1000, os.strerror(-sent - 1000)) if sent <= -1000
                                else OSError(f"the frame was not built ({sent})"))
                        try:
                            self._sendall(self._fview[sent:n])  # type: ignore[index]
                        except BaseException as e:
                            # Part of it is in the stream: the connection ends (_write_failed);
                            # an interrupt maybe after its last byte leaves it pending, settled
                            # by its answer or that loss (fast_send: counted, outcome unknown)
                            if not self._write_failed(e):
                                raise
                            self._pending.pop(corr, None)
                            raise unwritten(self.path, e) from None
                    # _note_send, without its call (once per record); the gaps' average is used
                    # only by timed waits (lazy_acks: with callbacks), so kept only then
                    if self._timed:
                        gap = now - self._last_send
                        cap = lazy_acks.STEADY_S
                        self._send_gap += ((gap if gap < cap else cap) - self._send_gap) / 4
                    self._last_send = now
                    if look:  # it found nothing unread: all written before this one was read
                        self._read_mark = self._sent
                    self._sent += 1
                    return True
            # Bytes unread: the last request's alone unless, with the answers that came taken
            # (outside _lock: delivering takes it), two or more are still unanswered.
            try:
                self.reap(force=True)
            except BaseException:  # another record's callback raised: this one is not written
                self.unwritten = callback
                raise
            if len(self._pending) > 1:
                self._unread_seen = (self._sent, len(self._pending))
                self._unread_fresh = True
                return False
            look = False

    def _end_stream(self) -> None:
        super()._end_stream()
        self._nudge()  # the reader's unsignalled wait ends (the socket's hang-up would too)

    def _take(self, block: bool) -> None:
        """Under _reap_lock: read what the socket holds (waiting for it when block) and run
        the callbacks of the whole frames."""
        try:
            data = self._sock.recv(RECV_SIZE) if block else \
                self._sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        self._take_data(data)

    def _take_data(self, data: bytes) -> None:
        """Under _reap_lock: run the callbacks of the whole frames of what a recv() returned
        (b"": the supervisor closed the connection); also the C reap's rest (_onestep.sock_reap:
        what its walk left)."""
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
            self._take_rest(memoryview(data)[end:])
        else:
            self._take_rest(data)

    def _take_rest(self, data: bytes | memoryview) -> None:
        """Under _reap_lock: bytes through the FrameBuffer, and the callbacks of the whole
        frames it then holds: what the bulk walk does not take (a frame's start, a large frame;
        all of a read that adds to bytes already buffered), and, when a callback raised during
        the walk, what it left (fast_acks.py_deliver hands it here, since its caller then gets
        no position)."""
        proto = self._proto
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
        self._lazy_wait = True  # before the checks: a hurry() after them sees it and nudges/arms
        until = self._lazy_until(time.monotonic())
        asked = self._once_n
        if not until or asked != self._served_n:
            self._lazy_wait = False
            self._served_n = asked  # this wait takes the next answer, which each of them awaits
            with self._reap_lock:
                self._take(block=True)
            return ()
        try:
            left = until - time.monotonic()
            if left > 0:
                self._ep.poll(left)
        finally:
            self._lazy_wait = False
        # A hurry(once=True) that armed the socket is served: its answer ended this wait, or
        # the socket stays armed for the next one (one-shot: disarmed only by data).
        if self._armed_n > self._served_n:
            self._served_n = self._armed_n
        with self._reap_lock:
            if self._closed:
                raise BrokerUnavailableError("the channel was closed")
            self._take(block=False)
        return ()

    def hurry(self, once: bool = False) -> None:
        """LazyAcks.hurry; once (a batch held for the next answer): while the reader waits
        lazily, the socket's data is added to its wait (armed) rather than the reader woken."""
        if not once:
            super().hurry()
            return
        self._once_n += 1  # before looking at _lazy_wait, which the reader sets before reading it
        n = self._once_n
        if self._lazy_wait:
            # Armed again even when this wait was armed already: the arm may have fired on an
            # answer this process's own reap took (a send's, a future asked) before the reader
            # ran on, and then nothing would wake the reader for this hold's answer until its
            # lazy wait ended (tests/client/test_socket_hold_rearm.py). One epoll_ctl per held
            # batch's record while the supervisor is behind.
            if self._arm():
                self._armed_n = n
            else:
                self._nudge()

    def _arm(self) -> bool:
        with self._fd_lock:
            if self._fds_closed or self._arm_fd < 0:
                return False
            try:
                self._ep.modify(self._arm_fd, select.EPOLLIN | select.EPOLLONESHOT)
            except OSError:
                return False
        return True

    def _py_reap(self, force: bool = False) -> None:
        """Take the acknowledgements that came, in the calling thread (a producer's send),
        while the reader waits lazily; once per request written at most (force: whether or
        not one was written since, as when a future is asked for), never waiting. In C when
        built (_onestep.sock_reap: this and _take's common read, with no Python frame; the C
        Sender calls it directly); this is its Python twin."""
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
            self._end_with(e)
        finally:
            self._reap_lock.release()

    def _end_with(self, e: Exception) -> None:
        """A broken stream or the end of it (a ProtocolError, a refusal, EOF) met by a sender's
        reap, or met under a callback's BaseException, which is what is raised then (py_deliver,
        the C reap): the reader ends the channel with it (its next _receive raises it), and
        every request in flight gets that outcome. The first one met is kept."""
        if self._deferred is None:
            self._deferred = e
        self._nudge()

    reap = _py_reap  # or, per instance, the C one (__init__)

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
        if self._arm_fd >= 0:
            os.close(self._arm_fd)

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
