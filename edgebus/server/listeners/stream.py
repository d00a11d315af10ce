"""Stream-socket connections and their listener, for any socket family (docs/ARCHITECTURE.md).

`Connection` is one client on the loop: it reads, frames (ServerProtocol), hands each request to
the dispatch table with fairness (MAX_REQUESTS_PER_TURN) and an input bound, and queues answers
with an output bound (backpressure: a connection over it is not read until it drains).
`StreamListener` accepts (`Connection` is in listeners/connection.py). Nothing here is
specific to Unix sockets: a listener for another family (TCP, TLS) subclasses StreamListener and
says only how it binds and who the peer is.
"""

from __future__ import annotations

import errno
import functools
import socket
import time
from typing import TYPE_CHECKING

from edgebus import format as F
from edgebus.errors import EdgebusError
from edgebus.fastpath.supervisor import encode_response
from edgebus.server.listeners.connection import (  # noqa: F401 (their old import path)
    MAX_REQUESTS_PER_TURN,
    RECV_SIZE,
    Connection,
    log,
)
from edgebus.server.service import Service

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

# A refused connection is read (and what it sends dropped) this long at most, so that the client
# gets to read its refusal; and at most this many linger at once (beyond, they are just closed).
REFUSED_LINGER_S = 1.0
MAX_LINGERING = 64


class StreamListener(Service):
    """Accepts connections on a listening stream socket and hands them to the loop. A subclass
    gives `bind()` (the listening socket) and `peer(sock)` ((pid, uid), or (-1, -1))."""

    name = "stream"
    # Its only timer, a refused connection's lingering, is set in _refuse, which says so. (A
    # subclass with a next_deadline of its own is asked every turn: Loop's _static_timer.)
    timer_static = True

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.sock: socket.socket | None = None
        self._lingering: dict[socket.socket, float] = {}  # refused connections: until when

    def bind(self) -> socket.socket:
        raise NotImplementedError

    def peer(self, sock: socket.socket) -> tuple[int, int]:
        return -1, -1

    def connection(self, sock: socket.socket, pid: int, uid: int) -> Connection:
        """The Connection for an accepted socket (a TLS listener makes a TlsConnection)."""
        return Connection(sock, self.loop, pid, uid)

    def accepted(self, conn: Connection) -> None:
        """A new connection is on the loop: a listener that restricts what it may do says so here."""

    def listen(self) -> None:
        s = self.bind()
        s.setblocking(False)
        self.sock = s
        self.loop.register(s, self._on_accept)

    def _on_accept(self, mask: int) -> None:
        assert self.sock is not None
        loop = self.loop
        while True:
            try:
                s, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("cannot accept a connection: %s", e)
                    return
                raise
            pid, uid = self.peer(s)
            s.setblocking(False)
            conn = self.connection(s, pid, uid)
            refused = loop.adopt(conn)
            if refused is not None:
                log.warning("refused a connection from pid %d uid %d: %s", pid, uid, refused)
                self._refuse(s, refused)
                continue
            self.accepted(conn)
            log.debug("accepted %r uid=%d on %s", conn, conn.uid, self.name)

    # --- refused connections ---------------------------------------------------------------------
    def _refuse(self, s: socket.socket, err: EdgebusError) -> None:
        """Send `err` as the connection's only frame (correlation id 0, FORMAT.md 7.2), then
        linger: read and drop what the client sends until it hangs up or REFUSED_LINGER_S
        passes, so that its first request does not fail with EPIPE before it reads the frame.
        Lingering sockets hold no buffer; beyond MAX_LINGERING they are closed at once."""
        frame = encode_response(F.REFUSAL_CORRELATION_ID, None, err.code, str(err))
        try:
            s.send(frame)  # a fresh socket's buffer takes these few bytes whole
            s.shutdown(socket.SHUT_WR)
        except OSError:
            s.close()
            return
        if len(self._lingering) >= MAX_LINGERING:
            s.close()
            return
        self._lingering[s] = time.monotonic() + REFUSED_LINGER_S
        self.loop.deadline_changed()
        self.loop.register(s, functools.partial(self._drain, s))

    def _drain(self, s: socket.socket, mask: int) -> None:
        try:
            if s.recv(RECV_SIZE):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._end_linger(s)

    def _end_linger(self, s: socket.socket) -> None:
        if self._lingering.pop(s, None) is not None:
            self.loop.unregister(s)
            s.close()

    def next_deadline(self) -> float | None:
        return min(self._lingering.values()) if self._lingering else None

    def tick(self, now: float) -> None:
        for s, deadline in list(self._lingering.items()):
            if deadline <= now:
                self._end_linger(s)

    def shutdown(self) -> None:
        """Stop accepting: the listening socket goes first when the supervisor stops."""
        if self.sock is not None:
            self.loop.unregister(self.sock)
            self.sock.close()
            self.sock = None
        for s in list(self._lingering):
            self._end_linger(s)
