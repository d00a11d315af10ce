"""The replica listener: TCP for peers' replicators (`replica.listen`), with TLS when configured.

A connection here starts able to call only API_VERSIONS and REPLICA_HELLO; the handshake
(handlers/replica.py) widens that to what a replication link needs. TCP peers have no
SO_PEERCRED, so pid and uid are unknown (-1). With `replica.tls`, every connection is TLS
(listeners/tls.py TlsConnection); with `replica.tls.ca` too, clients must present a certificate that CA signed, and
its common name is the node the link may speak for (mutual TLS).
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from edgebus.opsconfig import split_listen
from edgebus.server.dispatch import HANDSHAKE_APIS  # not handlers/replica.py: made at first use
from edgebus.server.listeners.inet import bind_tcp
from edgebus.server.listeners.stream import Connection, StreamListener

if TYPE_CHECKING:
    import ssl  # imported by the TLS context a configured replica.tls made (listeners/tls.py)

    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.replica")

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
            from edgebus.server.listeners.tls import TlsConnection

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

