"""One client connection on the supervisor's loop: a socket adapter around ServerProtocol."""

from __future__ import annotations

import logging
import selectors
import socket
import struct
from collections import deque
from typing import Any

from edgebus.protocol.framing import ServerProtocol

log = logging.getLogger("edgebus.conn")

RECV_SIZE = 256 * 1024
_PEERCRED = struct.Struct("3i")


class Connection:
    """Socket, input framing and an output queue with a byte bound (backpressure)."""

    def __init__(self, sock: socket.socket, conn_id: int, max_output: int) -> None:
        self.sock = sock
        self.id = conn_id
        self.proto = ServerProtocol()
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.max_output = max_output
        self.closed = False
        self.reading = True
        self.events = selectors.EVENT_READ  # what the broker's selector watches (registered so)
        self.pid, self.uid = _peer(sock)
        self.parked = 0  # long-poll fetches waiting on this connection
        self.requests = 0
        # edgebus.server.shm_transport.ShmLink after SHM_ATTACH: responses then go to its ring.
        self.shm: Any = None

    def __repr__(self) -> str:
        return f"conn#{self.id}(pid={self.pid})"

    def queue(self, data: bytes) -> None:
        if self.closed:
            return
        if self.shm is not None and self.shm.queue(data):
            return  # in the response ring, or queued for it (counted in out_bytes)
        if not self.out:
            # Fast path: try to send at once, queue only the remainder.
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.closed = True
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
        else:
            data = memoryview(data)
        self.out.append(data)  # type: ignore[arg-type]
        self.out_bytes += len(data)

    def flush(self) -> bool:
        """Send queued output; True when everything is sent."""
        while self.out:
            head = self.out[0]
            try:
                n = self.sock.send(head)
            except BlockingIOError:
                return False
            except OSError:
                self.closed = True
                return True
            self.out_bytes -= n
            if n == len(head):
                self.out.popleft()
            else:
                self.out[0] = head[n:]
                return False
        return True

    @property
    def overloaded(self) -> bool:
        return self.out_bytes > self.max_output


def _peer(sock: socket.socket) -> tuple[int, int]:
    try:
        pid, uid, _gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        return pid, uid
    except OSError:
        return -1, -1
