"""The supervisor's shared-memory service (docs/ARCHITECTURE.md, "Shared-memory rings"): SHM_ATTACH
makes a connection's rings (one sealed memfd, three eventfds, passed back with SCM_RIGHTS), the
loop's poll reads the rings with recent traffic, and `connection_closed` reclaims a link at once.
One link, its ring reads and answers, is `ShmLink` in listeners/shm.py, whose docstring tells
the transport's whole story (lifecycle, wake-ups, backpressure).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.errors import InvalidRequestError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ServerProtocol
from edgebus.server.dispatch import NO_RESPONSE
from edgebus.server.listeners.shm import (
    DEFAULT_RING_BYTES,
    SPIN_NS,
    SPIN_SLICE_NS,
    ShmLink,
    load_ring,
    log,
)
from edgebus.server.service import LoopApi, Service
from edgebus.shm import cpu_free, unavailable_reason

if TYPE_CHECKING:
    from edgebus.server.listeners.stream import Connection


class ShmTransport(Service):
    """All links of the supervisor: the SHM_ATTACH handler, and the rings polled by the loop."""

    polls_when_asked = True  # while some link is polled (spinning), not per paced wake-up

    def __init__(self, api: LoopApi) -> None:
        self.api = api
        self.links: dict[int, ShmLink] = {}  # conn id -> link
        self.spinning: dict[int, ShmLink] = {}  # links polled by the loop
        self.reason = unavailable_reason()
        if self.reason is not None:  # said once at start; clients then use the socket
            log.warning("shared-memory rings are off: %s", self.reason)
        self._ring_ptrs: Any = None  # cffi array of the spinning rings, rebuilt when they change
        self._ring_links: list[ShmLink] = []
        # The C data plane (listeners/shm_plane.py), set by the Broker when its module is built.
        self.plane: Any = None
        # The parked loop (listeners/shm_park.py), started with the plane at the first attach.
        self.park: Any = None
        # Links' eventfds are edge-triggered where the loop's selector allows (epoll): a wake-up
        # then costs no read(2) of the eventfd's count (which just grows; 2**64 writes away from
        # its limit). A stale count wakes nobody; a write while the loop runs is reported at its
        # next select, as with a level-triggered count.
        self.edge = True

    # --- SHM_ATTACH ------------------------------------------------------------------------------
    def attach(self, conn: Connection, corr: int, req: M.ShmAttachRequest) -> Any:
        if self.reason is not None:
            raise InvalidRequestError(f"shared memory is not available on this supervisor: {self.reason}")
        if conn.shm is not None:
            raise InvalidRequestError("this connection already has shared-memory rings")
        if conn.out:
            raise InvalidRequestError("SHM_ATTACH must be sent with no responses outstanding")
        from edgebus.shm import ring as R

        req_cap = _ring_size(req.request_ring_bytes)
        resp_cap = _ring_size(req.response_ring_bytes)
        resp_off = R.ring_bytes(req_cap)
        size = resp_off + R.ring_bytes(resp_cap)
        fds: list[int] = []
        mapping = None
        try:
            memfd = os.memfd_create(f"edgebus-{conn.pid}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            fds.append(memfd)
            os.ftruncate(memfd, size)
            # Sealed: the client can neither shrink the memfd (a SIGBUS in the supervisor) nor
            # grow it; F_SEAL_SEAL stops it from changing the seals.
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            mapping = R.Mapping(memfd, size)
            R.init_ring(mapping, 0, req_cap)
            R.init_ring(mapping, resp_off, resp_cap)
            for _ in range(3):
                fds.append(R.new_eventfd())
            resp = M.ShmAttachResponse(req_cap, resp_cap, resp_off, size, 4)
            data = ServerProtocol.encode_response(corr, resp)
            sent = socket.send_fds(conn.sock, [data], fds)
            if sent != len(data):  # a tiny frame on an idle socket: does not happen in practice
                raise OSError("short send of the SHM_ATTACH response")
        except OSError as e:
            if mapping is not None:
                mapping.close()
            for fd in fds:
                os.close(fd)
            log.warning("%r: SHM_ATTACH failed: %s", conn, e)
            if isinstance(e, BlockingIOError):
                conn.closed = True  # the stream may now hold half a frame
                return NO_RESPONSE
            raise InvalidRequestError(f"cannot set up shared memory: {e}") from None
        os.close(memfd)  # the mapping keeps the memory; the client got its own descriptor
        load_ring()
        plane = self.plane
        if plane is not None and not plane.ready():  # loaded at the first attach (shm_plane.py)
            self.plane = plane.data.plane = None
        if self.park is None and self.plane is not None:
            from edgebus.server.listeners.shm_park import Park

            self.park = Park.start(self.plane, self.api)  # (None: EDGEBUS_SHM_C_PARK=0)
        link = ShmLink(self, conn, mapping, R.Ring(mapping, 0, req_cap),
                       R.Ring(mapping, resp_off, resp_cap), fds[1], fds[2], fds[3])
        conn.shm = link
        self.links[conn.id] = link
        if not self.api.register_edge(link.efd_sup, link):
            self.edge = False  # the same for every link: the loop's selector decides
        if self.park is not None:
            self.park.add(link)  # served in the parked wait when fast (shm_park.py)
        self._set_spinning(link, True)
        log.debug("%r attached rings of %d + %d bytes", conn, req_cap, resp_cap)
        return NO_RESPONSE

    # --- loop hooks ------------------------------------------------------------------------------
    def wake(self, link: ShmLink) -> None:
        if not link.spinning and not link.closed:
            link.req.cancel_sleep_data()
            self._set_spinning(link, True)

    def poll(self, idle: bool) -> bool:
        """After each select: service the links being polled; put quiet ones to sleep. When
        idle (the loop has nothing else to do) wait in C for up to SPIN_SLICE_NS first when a
        core is free, and put every quiet link to sleep at once when none is. True while some
        link is still polled: the loop must not sleep in select."""
        if not self.spinning:
            return False
        # Nothing else to do and no core to spare: quiet links sleep now rather than being polled
        # by the loop until SPIN_NS passes (a poll in Python takes the core the peer needs).
        sleep_now = False
        if idle:
            if cpu_free(time.monotonic_ns()):  # spin only with a core to spare
                ptrs = self._ptrs()
                from edgebus.shm._ring import lib

                lib.eb_wait_any(ptrs, len(self._ring_links), SPIN_SLICE_NS)
            else:
                sleep_now = True
        now = time.monotonic_ns()
        for link in list(self.spinning.values()):
            if link.closed:
                self._set_spinning(link, False)
                continue
            if link.service():
                continue
            if sleep_now or now - link.last_active > link.arrivals.window(SPIN_NS):
                # Announce sleep, fence, re-check (the C side): data that raced in is served.
                if link.req.prepare_sleep_data():
                    link.service()
                else:
                    self._set_spinning(link, False)
        return bool(self.spinning)

    def _set_spinning(self, link: ShmLink, on: bool) -> None:
        link.spinning = on
        if on:
            self.spinning[link.conn.id] = link
        else:
            self.spinning.pop(link.conn.id, None)
        self._ring_ptrs = None
        self.api.want_poll(self, bool(self.spinning))

    def _ptrs(self) -> Any:
        if self._ring_ptrs is None:
            from edgebus.shm._ring import ffi

            self._ring_links = list(self.spinning.values())
            self._ring_ptrs = ffi.new("eb_ring *[]", [ln.req.d for ln in self._ring_links])
        return self._ring_ptrs

    def connection_closed(self, conn: Connection) -> None:
        """Reclaim the connection's rings at once (the socket is gone or going)."""
        link = self.links.pop(conn.id, None)
        if link is None:
            return
        self._set_spinning(link, False)
        if self.park is not None:
            self.park.remove(link)
        self.api.unregister(link.efd_sup)
        link.close()

    def stats(self) -> dict[str, Any]:
        return {"links": len(self.links), "spinning": len(self.spinning),
                "pending_responses": sum(len(ln.pending) for ln in self.links.values())}


def _ring_size(asked: int) -> int:
    if asked <= 0:
        return DEFAULT_RING_BYTES
    if asked & (asked - 1) or not F.MIN_RING_BYTES <= asked <= F.MAX_RING_BYTES:
        raise InvalidRequestError(
            f"ring size {asked} must be a power of two in {F.MIN_RING_BYTES}..{F.MAX_RING_BYTES}")
    return asked

