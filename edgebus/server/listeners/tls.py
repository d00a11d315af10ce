"""TLS connections of the TCP listeners (replica, Kafka, HTTP), on non-blocking sockets.

Apart from listeners/tcp.py so that a listener without TLS never imports ssl (~4 MB of RSS with
libcrypto: issue 16); a configured TLS listener has imported it for its context already.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from edgebus.server.listeners.inet import peer_addr
from edgebus.server.listeners.stream import RECV_SIZE, Connection

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.replica")

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)

# A failed TLS handshake is logged at most this often (with how many were not): unauthenticated
# peers must not be able to flood the log.
HANDSHAKE_LOG_EVERY_S = 10.0
_handshake_log = [-math.inf, 0]  # [last logged (monotonic), failures since]: the first is logged


class TlsConnection(Connection):
    """A Connection over TLS on a non-blocking socket: the handshake runs as data arrives, and
    "TLS wants more bytes" is "try again" (BlockingIOError), never a dead peer."""

    sock: ssl.SSLSocket

    def __init__(self, sock: ssl.SSLSocket, loop: Loop, pid: int = -1, uid: int = -1) -> None:
        super().__init__(sock, loop, pid, uid)
        self.handshaken = False

    def _handshake(self) -> None:
        try:
            self.sock.do_handshake()
        except _WANT:
            raise BlockingIOError from None
        except ssl.SSLError as e:  # a certificate we do not trust, no certificate, not TLS
            now = time.monotonic()
            _handshake_log[1] += 1
            if now - _handshake_log[0] >= HANDSHAKE_LOG_EVERY_S:
                more = _handshake_log[1] - 1
                log.warning("refused a replica link from %s: TLS handshake failed: %s%s",
                            _peer(self.sock), e.reason or e,
                            f" (and {more} more since the last such line)" if more else "")
                _handshake_log[:] = [now, 0]
            raise
        self.handshaken = True
        cert: Any = self.sock.getpeercert()
        if cert:  # verified against replica.tls.ca (CERT_REQUIRED)
            for rdn in cert.get("subject", ()):
                for attr in rdn:
                    if attr[0] == "commonName":
                        self.peer_name = str(attr[1])

    def recv(self) -> bytes:
        if not self.handshaken:
            self._handshake()  # BlockingIOError until done; ssl.SSLError (an OSError) closes
        try:
            data = self.sock.recv(RECV_SIZE)
        except _WANT:
            raise BlockingIOError from None
        # OpenSSL hands out one record per read and may hold more decrypted bytes, which epoll
        # cannot see: take all of them now (at most a record beyond RECV_SIZE).
        while data and (n := self.sock.pending()):
            data += self.sock.recv(n)
        return data

    def process(self) -> None:
        """As Connection.process; and when the input bound stopped the reading with decrypted
        bytes still inside OpenSSL (no epoll event will come for them), read them now."""
        super().process()
        if self.closed or not self.handshaken or not self.reading:
            return
        n = self.sock.pending()
        if n and self.proto.frames.buffered() < self.max_input:
            try:
                data = self.sock.recv(n)
            except _WANT:
                return
            except OSError:
                self.loop.close(self)
                return
            if data:
                self.proto.receive_data(data)
                self.loop.pending.add(self)  # handled next turn, with the others' fairness

    def send(self, data: bytes | memoryview) -> int:
        if not self.handshaken:
            raise BlockingIOError  # nothing is answered before a request, so this is rare
        try:
            return self.sock.send(data)
        except _WANT:
            raise BlockingIOError from None


def _peer(sock: socket.socket) -> str:
    return peer_addr(sock, "a peer that is gone")
