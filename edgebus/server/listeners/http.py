"""The HTTP listener: the JSON API and the web console on the supervisor's loop (docs/HTTP.md).

h11 (sans-IO HTTP/1.1) parses and writes HTTP; the listener accepts, bounds and times out the
connections (listeners/http_connection.py), which adapt h11 to the loop and run each request as an
exchange of edgebus/server/http/api.py.

Bounds: `http.max_connections` (counted apart from the socket's clients), request heads of
MAX_HEAD_BYTES within HEAD_DEADLINE_S, bodies of `http.max_body_bytes`, `http.max_streams` live
tails, an SSE stream's unsent output (no new fetch above SSE_HIGH_WATER), idle keep-alive
connections closed after IDLE_S.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgebus.opsconfig import split_listen
from edgebus.server.listeners.inet import bind_tcp
from edgebus.server.listeners.stream import Connection, StreamListener
from edgebus.server.logrepeat import bound_repeats

if TYPE_CHECKING:  # ssl costs about 5 MB of RSS: loaded only with http.tls_cert
    import ssl

    from edgebus.server.http.api import App
    from edgebus.server.listeners.http_connection import HttpConnection
    from edgebus.server.loop import Loop

log = bound_repeats(logging.getLogger("edgebus.http"), logging.WARNING)  # a looping client: a few lines


@functools.cache
def https_connection() -> type[HttpConnection]:
    """HttpConnection over TLS: TlsConnection's recv/send (the handshake as data arrives). Made
    on first use, so that a listener without TLS never imports ssl (listeners/tls.py does)."""
    from edgebus.server.listeners.http_connection import HttpConnection
    from edgebus.server.listeners.tls import TlsConnection

    class HttpsConnection(HttpConnection, TlsConnection):
        tls = True

    return HttpsConnection


class HttpListener(StreamListener):
    name = "http"

    def __init__(self, loop: Loop, app: App | Callable[[], App], listen: str,
                 tls: ssl.SSLContext | None = None, *, max_connections: int = 32,
                 max_body: int = 2 * 1024 * 1024) -> None:
        """app: the application, or what makes it at the first connection (the supervisor's:
        the API's modules and h11 are not imported before someone connects, issue 16)."""
        super().__init__(loop)
        self._app: App | None = None
        self._make_app: Callable[[], App] | None = None
        if callable(app):  # an App is not callable: its factory is
            self._make_app = app
        else:
            self._set_app(app)
        self.host, self.port = split_listen(listen)
        self.tls = tls
        self.max_connections = max_connections
        self.max_body = max_body
        self.conns: dict[int, HttpConnection] = {}
        self.paused: set[HttpConnection] = set()
        self.streams = 0  # event streams open (app.max_streams bounds new ones)
        self.refused = 0
        self._next_tick = 0.0

    def _set_app(self, app: App) -> None:
        self._app = app
        app.listener = self

    @property
    def app(self) -> App:
        if self._app is None:
            assert self._make_app is not None
            self._set_app(self._make_app())
            self._make_app = None
        assert self._app is not None
        return self._app

    def bind(self) -> socket.socket:
        s = bind_tcp(self.host, self.port, setting="http.listen", backlog=64)
        self.port = s.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("http console and API on %s://%s:%d/", "https" if self.tls else "http", host,
                 self.port)
        return s

    def connection(self, sock: socket.socket, pid: int, uid: int) -> Connection:
        from edgebus.server.listeners.http_connection import HttpConnection

        if self.tls is None:
            return HttpConnection(sock, self.loop, self)
        tls = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return https_connection()(tls, self.loop, self)

    def accepted(self, conn: Connection) -> None:
        from edgebus.server.listeners.http_connection import TICK_S, HttpConnection

        assert isinstance(conn, HttpConnection)
        if len(self.conns) >= self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("refused an HTTP connection: %d are open, http.max_connections "
                            "(%d refused so far)", len(self.conns), self.refused)
            self.loop.close(conn)
            return
        now = time.monotonic()
        if not self.conns:
            self._next_tick = now + TICK_S
        self.conns[conn.id] = conn
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def next_deadline(self) -> float | None:
        if not self.conns:
            return None
        d = self._next_tick
        for c in self.paused:
            if c.ex is not None and c.ex.resume_at < d:
                d = c.ex.resume_at
        return d

    def tick(self, now: float) -> None:
        from edgebus.server.listeners.http_connection import DRAIN_S, HEAD_DEADLINE_S, IDLE_S, TICK_S

        for c in list(self.paused):
            if c.ex is None or c.closed:
                self.paused.discard(c)
            elif c.ex.resume_at <= now:
                self.paused.discard(c)
                c.wake()
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_S
        for c in list(self.conns.values()):
            if c.draining_since:
                if now - c.draining_since > DRAIN_S:
                    self.loop.close(c)
                continue
            if c.ex is not None:
                continue  # answering, or streaming (streams send keep-alives)
            # No whole request head soon after connecting (a slow-loris), or idle keep-alive.
            if (c.head is None and now - c.opened > HEAD_DEADLINE_S) or now - c.active > IDLE_S:
                self.loop.close(c)

    def connection_closed(self, conn: Connection) -> None:
        c = self.conns.pop(conn.id, None)
        if c is not None:
            self.paused.discard(c)
            if c.ex is not None and c.ex.started:
                self.streams -= 1
            if c.ex is not None:
                c.ex.gen.close()
                c.ex = None
