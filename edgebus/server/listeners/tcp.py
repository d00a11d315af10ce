"""The replica listener: TCP for peers' replicators (`replica.listen`), with TLS when configured.

A connection here starts able to call only API_VERSIONS and REPLICA_HELLO; the handshake
(handlers/replica.py) widens that to what a replication link needs. TCP peers have no
SO_PEERCRED, so pid and uid are unknown (-1). With `replica.tls`, every connection is TLS
(TlsConnection); with `replica.tls.ca` too, clients must present a certificate that CA signed, and
its common name is the node the link may speak for (mutual TLS).
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from edgebus.opsconfig import split_listen
from edgebus.server.dispatch import HANDSHAKE_APIS  # not handlers/replica.py: made at first use
from edgebus.server.listeners.inet import bind_tcp, peer_addr
from edgebus.server.listeners.stream import RECV_SIZE, Connection, StreamListener

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.replica")

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)

# Bounds for connections nobody has authenticated yet: anyone who can reach the port can open
# one. They are counted apart from local clients' limits.max_connections, so they cannot lock out
# local clients, and each may buffer only a small frame until REPLICA_HELLO succeeds.
MAX_REPLICA_CONNECTIONS = 16  # links from peers, authenticated or not; a gateway has a handful
PREAUTH_MAX_FRAME = 4096  # REPLICA_HELLO is a node name and a token
HELLO_DEADLINE_S = 10.0  # TLS handshake and REPLICA_HELLO must be done by then
# A link that sends nothing for this long is closed: a peer that lost power leaves a half-open
# connection that would otherwise count as live (and block `topics promote`) for ever. The
# replicator's heartbeat (heartbeat_s, default 5 s) keeps a healthy idle link under it.
# The default of replica.link_idle_timeout_ms.
LINK_IDLE_S = 30.0
TICK_S = 1.0
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


class ReplicaListener(StreamListener):
    name = "replica"

    def __init__(self, loop: Loop, listen: str, tls: ssl.SSLContext | None = None,
                 link_idle_s: float = LINK_IDLE_S) -> None:
        super().__init__(loop)
        self.link_idle_s = link_idle_s
        self.host, self.port = split_listen(listen)
        self.tls = tls
        # conn.id -> [conn, accepted at, last active, requests then] (monotonic)
        self.conns: dict[int, list[Any]] = {}
        self.refused = 0  # connections over MAX_REPLICA_CONNECTIONS
        self._next_tick = 0.0

    def bind(self) -> socket.socket:
        s = bind_tcp(self.host, self.port, setting="replica.listen", backlog=64)
        self.port = s.getsockname()[1]  # the one chosen when 0 was asked for
        log.info("replica listener on %s:%d%s", self.host, self.port,
                 " (TLS)" if self.tls is not None else "")
        return s

    def connection(self, sock: socket.socket, pid: int, uid: int) -> Connection:
        if self.tls is None:
            conn = Connection(sock, self.loop, pid, uid)
        else:
            tls = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn = TlsConnection(tls, self.loop, pid, uid)
        conn.counts_as_client = False  # bounded by MAX_REPLICA_CONNECTIONS instead
        return conn

    def accepted(self, conn: Connection) -> None:
        if len(self.conns) >= MAX_REPLICA_CONNECTIONS:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("refused a replica connection: %d are open, the limit (%d refused "
                            "so far)", len(self.conns), self.refused)
            self.loop.close(conn)
            return
        now = time.monotonic()
        if not self.conns:
            self._next_tick = now + TICK_S
        self.conns[conn.id] = [conn, now, now, conn.requests]
        conn.allowed = HANDSHAKE_APIS
        conn.max_input = PREAUTH_MAX_FRAME
        conn.proto.frames.limit(PREAUTH_MAX_FRAME)
        # Replica appends are request/response: Nagle would hold each small answer back.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    # --- the service: deadlines of unauthenticated and idle connections ----------------------------
    def next_deadline(self) -> float | None:
        return self._next_tick if self.conns else None

    def tick(self, now: float) -> None:
        self._next_tick = now + TICK_S
        for entry in list(self.conns.values()):
            conn, accepted_at, active, seen = entry
            if conn.requests != seen:
                entry[2], entry[3] = now, conn.requests
                continue
            if conn.node is None and now - accepted_at > HELLO_DEADLINE_S:
                log.warning("closed a replica connection that did not authenticate within %.0f s",
                            HELLO_DEADLINE_S)
                self.loop.close(conn)
            elif conn.node is not None and now - active > self.link_idle_s:
                log.warning("closed the replica link of node %s: silent for %.0f s (a half-open "
                            "connection, or a replicator without heartbeats)", conn.node, now - active)
                self.loop.close(conn)

    def connection_closed(self, conn: Connection) -> None:
        self.conns.pop(conn.id, None)

