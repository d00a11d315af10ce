"""The replica listener: TCP on a loopback address (`replica.listen`), for peers' replicators.

A connection here starts able to call only API_VERSIONS and REPLICA_HELLO; the handshake
(handlers/replica.py) widens that to what a replication link needs. TCP peers have no
SO_PEERCRED, so pid and uid are unknown (-1).
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING

from edgebus.errors import ConfigError
from edgebus.opsconfig import split_listen
from edgebus.server.handlers.replica import HANDSHAKE_APIS
from edgebus.server.listeners.stream import Connection, StreamListener

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.replica")


class ReplicaListener(StreamListener):
    name = "replica"

    def __init__(self, loop: Loop, listen: str) -> None:
        super().__init__(loop)
        self.host, self.port = split_listen(listen)

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
        log.info("replica listener on %s:%d", self.host, self.port)
        return s

    def accepted(self, conn: Connection) -> None:
        conn.allowed = HANDSHAKE_APIS
        # Replica appends are request/response: Nagle would hold each small answer back.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
