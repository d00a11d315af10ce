"""Client channels over the shared-memory rings, with the socket channels' interfaces.

`open_sync_channel` / `open_async_channel` pick the transport: "shm" forces the rings (errors if
they cannot be set up), "socket" forces the socket, "auto" (the default) tries the rings and falls
back to the socket with one debug log line when they are unavailable (C module not built, not
Linux, an older supervisor, or the supervisor refused); $EDGEBUS_TRANSPORT overrides "auto".

`ShmSyncChannel` (edgebus/client/shm_sync_channel.py; importable from here too) is a
SyncChannel whose transport is the rings (edgebus/client/shm_rings.py), plus fetch-ahead
(edgebus/client/fetch_ahead.py). `ShmAsyncChannel` is a Dispatcher (the pending
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
from collections.abc import Callable
from pathlib import Path

from edgebus.client import lazy_acks
from edgebus.client.channel import AsyncChannel
from edgebus.client.dispatch import CORR_MASK, Callback, Dispatcher, unwritten
from edgebus.client.fast_acks import deliver as deliver_acks
from edgebus.client.lazy_acks import LazyAcks
from edgebus.client.record_frames import (
    FRAME_BUFFER_BYTES,
    NULL,
    PRODUCE,
    frame_bytes,
    new_frame_buffer,
    produce_frame,
)
from edgebus.client.shm_rings import ShmRings, connect_rings, ring_bytes_for
from edgebus.client.shm_sync_channel import ShmSyncChannel, open_sync_channel  # re-exported
from edgebus.client.socket_acks import LazySocketChannel
from edgebus.errors import BrokerUnavailableError
from edgebus.tuning import ACK_SPIN_NS, check_transport


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

    # The callback of the record whose send_record raised (an interrupt while waiting for room)
    # with nothing published: its sender (fast_send) undoes what it counted.
    unwritten: object = None

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

    def _write_failed(self, e: BaseException) -> bool:
        """Dispatcher._write_failed for the ring: a frame is published whole or not at all, so
        the stream is whole either way; none of it can reach the supervisor unless the ring's
        head moved past where _write_ring found it (an interrupt raised right after publishing).
        Under _lock: only our writes move the head, and close() unmaps only after taking it.
        (ShmRings.write sends a frame larger than the ring's max on the socket: never here, the
        ring being sized for max_request_size, open_async_channel.)"""
        rings = self._rings
        return self._fds_closed or rings.req is None or rings.req_head() == self._sender.last_at

    def send_record(self, prefix: bytes, key: bytes | None, value: bytes | None, ts: int,
                    callback: Callback, hold: bool, now: float) -> bool:
        """send() of a one-record PRODUCE (edgebus/client/fast_send.py), built by C straight
        into the request ring with the hold and the doorbell decided there (one C call:
        edgebus/shm/produce.c); hold: write nothing and return False while the supervisor has
        yet to read a request written before our last one (unread()). now: the caller's
        monotonic clock (the send gap's note)."""
        with self._lock:
            if self.lost is not None:
                raise unwritten(self.path, self.lost)  # lost before it was written: not sent
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
                self._write_waiting(prefix, k, kl, v, vl, ts, corr, callback)
            # _note_send, without its call (once per record); the gaps' average is used only
            # by timed waits (lazy_acks: with callbacks), so kept only then
            if self._timed:
                gap = now - self._last_send
                cap = lazy_acks.STEADY_S
                self._send_gap += ((gap if gap < cap else cap) - self._send_gap) / 4
            self._last_send = now
        return True

    def _write_waiting(self, prefix: bytes, k: object, kl: int, v: object, vl: int, ts: int,
                       corr: int, callback: Callback) -> None:
        """Under _lock: send_record's frame when the ring has no room now, built into a buffer
        and written by the write that waits for room (backpressure). A method of its own: the
        success path's jump over it stays short (no EXTENDED_ARG)."""
        buf = self._fbuf
        n = produce_frame(buf, FRAME_BUFFER_BYTES, prefix, len(prefix), k, kl, v, vl, ts,
                          corr, PRODUCE)
        rings = self._rings
        at = rings.req_head()
        try:
            rings.write(frame_bytes(buf, n))
        except (BrokerUnavailableError, OSError, ValueError) as e:
            self._pending.pop(corr, None)
            raise unwritten(self.path, e) from None
        except BaseException:
            # An interrupt while waiting for room: unpublished unless the head moved (then it
            # is pending, settled by its answer). Unpublished, it is taken back as a send whose
            # reap raised is (fast_send: `unwritten`, not counted).
            if rings.req_head() == at:
                self._pending.pop(corr, None)
                self.unwritten = callback
            else:
                self._sender.last_at = at
            raise
        self._sender.last_at = at

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
