"""The replica listener: TCP for peers' replicators (`replica.listen`), with TLS when configured.

A connection here starts able to call only API_VERSIONS and REPLICA_HELLO; the handshake
(handlers/replica.py) widens that to what a replication link needs. TCP peers have no
SO_PEERCRED, so pid and uid are unknown (-1). With `replica.tls`, every connection is TLS
(TlsConnection); with `replica.tls.ca` too, clients must present a certificate that CA signed, and
its common name is the node the link may speak for (mutual TLS).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from edgebus.errors import ConfigError
from edgebus.opsconfig import split_listen
from edgebus.server.handlers.replica import HANDSHAKE_APIS
from edgebus.server.listeners.stream import RECV_SIZE, Connection, StreamListener

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.replica")

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


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
            log.warning("refused a replica link from %s: TLS handshake failed: %s",
                        _peer(self.sock), e.reason or e)
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
        # OpenSSL hands out one record per read and may hold more decrypted bytes, which select()
        # cannot see: take what is there now.
        while data and len(data) < RECV_SIZE:
            try:
                more = self.sock.recv(RECV_SIZE - len(data))
            except _WANT:
                break
            if not more:
                break
            data += more
        return data

    def send(self, data: bytes | memoryview) -> int:
        if not self.handshaken:
            raise BlockingIOError  # nothing is answered before a request, so this is rare
        try:
            return self.sock.send(data)
        except _WANT:
            raise BlockingIOError from None


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "a peer that is gone"


def server_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    """TLS 1.2+ with the node's certificate; with `ca`, client certificates are required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"replica.tls: cannot load the certificates: {e}") from None
    return ctx


class ReplicaListener(StreamListener):
    name = "replica"

    def __init__(self, loop: Loop, listen: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(loop)
        self.host, self.port = split_listen(listen)
        self.tls = tls

    def bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old links linger
        try:
            s.bind((self.host, self.port))
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"replica.listen: {self.host}:{self.port} is already in use by another "
                    "process; choose another port") from None
            raise
        s.listen(64)
        self.port = s.getsockname()[1]  # the one chosen when 0 was asked for
        log.info("replica listener on %s:%d%s", self.host, self.port,
                 " (TLS)" if self.tls is not None else "")
        return s

    def connection(self, sock: socket.socket, pid: int, uid: int) -> Connection:
        if self.tls is None:
            return Connection(sock, self.loop, pid, uid)
        tls = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return TlsConnection(tls, self.loop, pid, uid)

    def accepted(self, conn: Connection) -> None:
        conn.allowed = HANDSHAKE_APIS
        # Replica appends are request/response: Nagle would hold each small answer back.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
