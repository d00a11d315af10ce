"""The Kafka listener: Kafka's wire protocol on TCP (`kafka.listeners`), with TLS and SASL when
configured (docs/KAFKA.md).

Accept, read, fairness and the input and output bounds are Connection's, as for every listener;
what differs is the framing (a 4-byte big-endian length, edgebus/server/kafka/framing.py) and
where frames go: to the Kafka dispatcher (edgebus/server/kafka/apis.py), which answers in Kafka's
encoding. TCP peers have no SO_PEERCRED: a loopback client's uid is the owner of its end in
/proc/net/tcp (edgebus/acl/procnet.py), so its connections count against
limits.max_connections_per_uid as a native client's do; a remote client's uid and every pid
are unknown (-1). The table is read only when the uid matters: by the loop once it holds
max_connections_per_uid connections (below that no user can be at its limit; until then the
connection counts as uid -1 and is moved to its user's count then, server/loop.py), and by the
access rules at the connection's first checked request (server/acl/authorizer.py).
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from edgebus.acl.procnet import peer_uid
from edgebus.errors import EdgebusError
from edgebus.opsconfig import split_listen
from edgebus.server.kafka.framing import PREAUTH_MAX_FRAME, KafkaProtocol
from edgebus.server.listeners.inet import bind_tcp, peer_addr
from edgebus.server.listeners.stream import Connection, StreamListener

if TYPE_CHECKING:  # ssl costs ~5 MB of RSS: loaded only for a listener with TLS
    import ssl

    from edgebus.server.kafka.front import KafkaFront
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.kafka")


def _kafka_init(conn: Any, listener: KafkaListener) -> None:
    """What a Kafka connection adds to a Connection (plain or TLS)."""
    conn.proto = KafkaProtocol()
    conn.dispatch_to = listener.dispatcher()
    conn.listener = listener.name
    conn.peer_addr = peer_addr(conn.sock)
    conn.client_id = None  # from the request headers
    # The SASL user once authenticated (edgebus/server/kafka/sasl.py), else None. With SASL
    # configured, nothing but ApiVersions and the SASL APIs is served before.
    conn.principal = None
    # Without SASL, a loopback client is the local user owning its end (/proc/net/tcp), so a
    # Kafka program and a native one of the same user are one principal (server/acl/).
    conn.tcp_owner_lookup = True
    conn.uid_lookup = functools.partial(peer_uid, conn.sock)  # when the loop needs it
    conn.kafka_auth_required = bool(listener.front.settings.sasl_mechanisms)
    conn.accepted_at = time.time()
    if conn.kafka_auth_required:
        conn.proto.frames.limit(PREAUTH_MAX_FRAME)


class KafkaConnection(Connection):
    def __init__(self, sock: socket.socket, loop: Loop, listener: KafkaListener,
                 uid: int = -1) -> None:
        super().__init__(sock, loop, -1, uid)
        _kafka_init(self, listener)


@functools.cache
def _tls_connection_class() -> Any:
    """KafkaTlsConnection, made at the first TLS connection (listeners/tls.py imports ssl)."""
    from edgebus.server.listeners.tls import TlsConnection

    class KafkaTlsConnection(TlsConnection):
        def __init__(self, sock: ssl.SSLSocket, loop: Loop, listener: KafkaListener,
                     uid: int = -1) -> None:
            super().__init__(sock, loop, -1, uid)
            _kafka_init(self, listener)

    return KafkaTlsConnection


class KafkaListener(StreamListener):
    """One `kafka.listeners` address."""

    def __init__(self, loop: Loop, front: KafkaFront, listen: str,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(loop)
        self.front = front
        self.host, self.port = split_listen(listen)
        self.name = f"kafka {listen}"
        self.tls = tls
        self.dispatch: Any = None  # made at the first connection: dispatcher()
        self.conns: dict[int, Connection] = {}

    def bind(self) -> socket.socket:
        s = bind_tcp(self.host, self.port, setting="kafka.listeners", backlog=128,
                     in_use_hint=" (a Kafka broker?); set kafka.listeners to another port "
                                 "(without a config file: $EDGEBUS_KAFKA_LISTENERS, e.g. "
                                 "127.0.0.1:19092), or kafka.enabled: false")
        self.port = s.getsockname()[1]  # the one chosen when 0 was asked for
        self.name = f"kafka {self.host}:{self.port}"
        log.info("Kafka listener on %s:%d%s%s", self.host, self.port,
                 " (TLS)" if self.tls is not None else "",
                 f" (SASL {', '.join(self.front.settings.sasl_mechanisms)})"
                 if self.front.settings.sasl_mechanisms else "")
        return s

    def dispatcher(self) -> Any:
        """The Kafka dispatcher bound to the context; the first call imports the protocol
        package and makes the context (kafka/front.py: an idle supervisor never loads it)."""
        if self.dispatch is None:
            ctx = self.front.context()  # first: it keeps hypothesis out of kio's import
            from edgebus.server.kafka.apis import dispatch

            self.dispatch = functools.partial(dispatch, ctx)
        return self.dispatch

    def connection(self, sock: socket.socket, pid: int, uid: int) -> Connection:
        if self.tls is None:
            return KafkaConnection(sock, self.loop, self, uid)
        tls = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn: Connection = _tls_connection_class()(tls, self.loop, self, uid)
        return conn

    def _refuse(self, s: socket.socket, err: EdgebusError) -> None:
        """Close at once (the refusal is logged): a Kafka client cannot read the native error
        frame, and Kafka's broker too closes a connection over max.connections.per.ip."""
        s.close()

    def accepted(self, conn: Connection) -> None:
        self.conns[conn.id] = conn
        # Request/response: Nagle would hold each small answer back.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_closed(self, conn: Connection) -> None:
        self.conns.pop(conn.id, None)

    def status(self) -> dict[str, Any]:
        """This listener and its connections, for `edgebus status`."""
        return {
            "listen": f"{self.host}:{self.port}", "tls": self.tls is not None,
            "sasl": list(self.front.settings.sasl_mechanisms),
            "connections": [
                {"id": c.id, "peer": getattr(c, "peer_addr", "?"),
                 "client_id": getattr(c, "client_id", None),
                 "principal": getattr(c, "principal", None), "requests": c.requests,
                 "parked_fetches": c.parked, "output_bytes": c.out_bytes}
                for c in list(self.conns.values())],
        }
