"""The HTTP listener: the JSON API and the web console on the supervisor's loop (docs/HTTP.md).

h11 (sans-IO HTTP/1.1) parses and writes HTTP; this module is the adapter between it and the loop.
A request runs as an *exchange*: a generator from edgebus/server/http/api.py that yields `Call`s
(one request body of the socket protocol each). A Call is handed to `LoopApi.dispatch` like a
frame read from the Unix socket, so the same dispatcher and handlers (and their checks) serve it;
the handler's answer frame comes back through `Connection.queue`, where it is decoded and sent
into the generator. Deferred answers (durable acks, parked long-poll fetches) arrive the same way
later, which is how the live tail (Server-Sent Events) waits for data without polling.

Bounds: `http.max_connections` (counted apart from the socket's clients), request heads of
MAX_HEAD_BYTES within HEAD_DEADLINE_S, bodies of `http.max_body_bytes`, `http.max_streams` live
tails, an SSE stream's unsent output (no new fetch above SSE_HIGH_WATER), idle keep-alive
connections closed after IDLE_S.
"""

from __future__ import annotations

import functools
import itertools
import logging
import selectors
import socket
import time
from collections.abc import Generator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

from edgebus.errors import EdgebusError, InvalidRequestError, UnknownServerError
from edgebus.opsconfig import split_listen
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.http.api import App
from edgebus.server.http.exchange import Call, Emit, Pause, Reply, Request, error_reply
from edgebus.server.listeners.inet import bind_tcp
from edgebus.server.listeners.stream import Connection, StreamListener

if TYPE_CHECKING:  # ssl costs about 5 MB of RSS: loaded only with http.tls_cert
    import ssl

    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.http")

MAX_HEAD_BYTES = 16 * 1024  # request line and headers (h11's max_incomplete_event_size)
HEAD_DEADLINE_S = 10.0  # a request head must be whole this long after the connection opened
IDLE_S = 60.0  # a keep-alive connection with nothing in progress
SSE_HIGH_WATER = 256 * 1024  # an SSE stream asks for no more records while this much is unsent
TICK_S = 1.0
DRAIN_S = 2.0  # a refused request's remaining body is read and dropped this long at most
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_corr = itertools.count(1)


class _Exchange:
    """One request in progress: its generator, the Call it waits on, whether it streams."""

    __slots__ = ("answer", "gen", "held", "resume_at", "started", "stream", "waiting")

    def __init__(self, gen: Generator[Any, Any, Reply]) -> None:
        self.gen = gen
        self.waiting: tuple[int, int] | None = None  # (correlation id, api key) of the Call
        self.answer: tuple[Any, EdgebusError | None] | None = None  # came during the dispatch
        self.held: Any = None  # a Call held back until the stream's output drains
        self.resume_at = 0.0  # a Pause
        self.started = False  # a streamed response's head is sent
        self.stream = False


class HttpConnection(Connection):
    """One HTTP client: h11 for the bytes, an exchange for the request being answered."""

    tls = False

    def __init__(self, sock: socket.socket, loop: Loop, listener: HttpListener) -> None:
        super().__init__(sock, loop)
        self.listener = listener
        self.counts_as_client = False  # bounded by http.max_connections instead
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.rpc = ClientProtocol()  # decodes the answer frames the dispatcher queues here
        # Who this connection authenticated as (token or basic user; "" before, or when the
        # listener asks for no authentication): set_principal.
        self.principal = ""
        # For access control (docs/SECURITY.md on the acl branch; harmless without it): a user
        # who proved a secret is a password-authenticated name, the principal `sasl:NAME` the
        # Kafka listener's SASL users get; without authentication (loopback only, config.py),
        # the client is found as identd would, by the owner of its loopback TCP socket.
        self.sasl_user: str | None = None
        self.tcp_owner_lookup = not listener.app.auth.required
        self.head: h11.Request | None = None
        self.body = bytearray()
        self.body_too_large = False
        self.ex: _Exchange | None = None
        self.opened = self.active = time.monotonic()
        self.in_dispatch = False
        self.close_when_sent = False
        # After a refusal that ends the connection (a body too large): our side is shut, and what
        # the client still sends is read and dropped for a while, so that it gets to read the
        # answer instead of a reset (StreamListener._refuse does the same for the socket).
        self.draining_since = 0.0

    def __repr__(self) -> str:
        return f"http#{self.id}({self.principal or 'anonymous'})"

    def set_principal(self, user: str) -> None:
        """The user a request authenticated as. HTTP authenticates each request, so a keep-alive
        connection may change user: then cached access decisions (`acl`) are dropped."""
        if user != self.principal:
            self.principal = user
            self.sasl_user = user or None
            self.acl = None

    # --- reading -----------------------------------------------------------------------------------
    def update_interest(self) -> None:
        if self.closed:
            return
        ex = self.ex
        # During an exchange the next request waits in the kernel (HTTP/1.1 answers in order); a
        # stream keeps reading so that a client going away is seen at once.
        self.reading = self.draining_since > 0 or (
            not self.overloaded and (ex is None or ex.stream))
        mask = (_READ if self.reading else 0) | (_WRITE if self.out else 0)
        if mask != self.events:
            self.loop.sel.modify(self.sock, mask, self.on_event)
            self.events = mask

    def on_event(self, mask: int) -> None:
        if self.closed:
            self.loop.close(self)
            return
        if mask & _WRITE:
            self._on_writable()
            if self.closed:
                return
        if not mask & _READ or not self.reading:
            return
        try:
            data = self.recv()
        except BlockingIOError:
            return
        except OSError as e:
            log.debug("%r read error: %s", self, e)
            self.loop.close(self)
            return
        self.active = time.monotonic()
        if self.draining_since:
            if not data:
                self.loop.close(self)
            return
        if self.ex is not None and self.ex.stream:
            if not data:  # the browser closed the tail
                self.loop.close(self)
            return  # nothing a client sends on an event stream means anything
        self.h11.receive_data(data)
        self._next_events()
        if self.closed:
            self.loop.close(self)
            return
        self.update_interest()

    def _next_events(self) -> None:
        while not self.closed and self.ex is None:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                self._bad_request(e)
                return
            if ev is h11.NEED_DATA:
                return
            if ev is h11.PAUSED:
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                    continue
                return
            if isinstance(ev, h11.Request):
                self.head, self.body_too_large = ev, False
                self.body.clear()
                length = _content_length(ev)
                if length is not None and length > self.listener.max_body:
                    self._too_large(length)
                    return
                if self.h11.they_are_waiting_for_100_continue:
                    # curl asks before a large body and would otherwise wait a second for this
                    self._send(h11.InformationalResponse(status_code=100, headers=[]))
            elif isinstance(ev, h11.Data):
                if len(self.body) + len(ev.data) > self.listener.max_body:
                    self._too_large(len(self.body) + len(ev.data))
                    return
                self.body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                self._start()
            elif isinstance(ev, h11.ConnectionClosed):
                self.loop.close(self)
                return

    def _bad_request(self, e: h11.RemoteProtocolError) -> None:
        status = e.error_status_hint
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.close_when_sent = True
            self._send_reply(error_reply(InvalidRequestError(f"bad HTTP request: {e}"), status),
                             close=True)
        else:
            self.loop.close(self)

    def _too_large(self, n: int) -> None:
        self.close_when_sent = True  # the rest of the body is not read
        self._send_reply(error_reply(InvalidRequestError(
            f"the request body of {n} bytes is larger than http.max_body_bytes "
            f"({self.listener.max_body})"), 413), close=True)

    # --- exchanges ---------------------------------------------------------------------------------
    def _start(self) -> None:
        head = self.head
        assert head is not None
        req = Request.from_h11(head, bytes(self.body), self)
        self.body.clear()
        result = self.listener.app.handle(req)
        if isinstance(result, Reply):
            self._send_reply(result)
            return
        self.ex = _Exchange(result)
        self._step(None, None)

    def _step(self, value: Any, error: EdgebusError | None) -> None:
        """Run the exchange until it waits (a Call answered later, a Pause, a full stream) or ends."""
        ex = self.ex
        while ex is not None and ex is self.ex and not self.closed:
            try:
                item = ex.gen.throw(error) if error is not None else ex.gen.send(value)
            except StopIteration as stop:
                self._finish(stop.value)
                return
            except EdgebusError as e:
                self._finish(error_reply(e))
                return
            except Exception as e:  # a bug must not take the supervisor down
                log.exception("internal error answering %s on %r", self.head and self.head.target, self)
                self._finish(error_reply(UnknownServerError(f"internal error: {e}")))
                return
            value, error = None, None
            if isinstance(item, Emit):
                self._emit(ex, item)
                continue
            if isinstance(item, Pause):
                ex.resume_at = time.monotonic() + item.seconds
                self.listener.paused.add(self)
                return
            assert isinstance(item, Call)
            if ex.stream and self.out_bytes > SSE_HIGH_WATER:
                ex.held = item  # sent when the client has read (_on_writable)
                return
            value, error = self._call(ex, item)
            if ex.waiting is not None:
                return  # answered later, through queue()

    def _call(self, ex: _Exchange, call: Call) -> tuple[Any, EdgebusError | None]:
        try:
            body = memoryview(call.body.to_bytes())
        except Exception as e:  # a number out of its wire range
            return None, InvalidRequestError(f"a value is out of range: {e}")
        corr = next(_corr) & 0x7FFFFFFF or 1
        ex.waiting, ex.answer = (corr, call.api_key), None
        self.in_dispatch = True
        try:
            self.loop.dispatch(self, call.api_key, 0, corr, body)
        finally:
            self.in_dispatch = False
        if ex.answer is not None:
            ex.waiting = None
            return ex.answer
        return None, None

    def queue(self, data: bytes) -> None:
        """An answer frame from the dispatcher or a deferred answer (LoopApi.answer)."""
        if self.closed:
            return
        self.rpc.receive_data(data)
        while (resp := self.rpc.next_response()) is not None:
            ex = self.ex
            if ex is None or ex.waiting is None or ex.waiting[0] != resp.correlation_id:
                continue  # the exchange it answered is gone
            try:
                result: tuple[Any, EdgebusError | None] = (
                    ClientProtocol.decode_body(ex.waiting[1], resp), None)
            except EdgebusError as e:
                result = (None, e)
            if self.in_dispatch:
                ex.answer = result
            else:
                ex.waiting = None
                self._step(*result)

    def _emit(self, ex: _Exchange, item: Emit) -> None:
        if not ex.started:
            ex.started = ex.stream = True
            self.listener.streams += 1
            self._send(h11.Response(status_code=200, headers=_headers(item.headers), reason=b"OK"),
                       h11.Data(data=item.data))
            return
        self._send(h11.Data(data=item.data))

    def _finish(self, reply: Reply) -> None:
        ex = self.ex
        self.ex = None
        if ex is not None and ex.started:  # a stream ended: finish it (or the error is lost)
            self.listener.streams -= 1
            self._send(h11.EndOfMessage())
            self._after_response()
            return
        self._send_reply(reply)

    def _send_reply(self, reply: Reply, close: bool = False) -> None:
        headers = _headers(reply.headers)
        headers.append((b"content-length", str(len(reply.body)).encode()))
        if close:
            headers.append((b"connection", b"close"))
        events: list[Any] = [h11.Response(status_code=reply.status, headers=headers,
                                          reason=_reason(reply.status))]
        if reply.body and (self.head is None or self.head.method != b"HEAD"):
            events.append(h11.Data(data=reply.body))
        events.append(h11.EndOfMessage())
        self._send(*events)
        self._after_response()

    def _after_response(self) -> None:
        if self.h11.our_state is h11.MUST_CLOSE or self.close_when_sent:
            self.close_when_sent = True
            if not self.out:
                self._sent_and_close()
            return
        self.loop.pending.discard(self)
        self._next_events()  # a pipelined request already buffered

    def _send(self, *events: Any) -> None:
        """h11's bytes for `events`, queued as one write (one segment for a small answer: a write
        per event costs a wake-up of the client per write)."""
        out = []
        for event in events:
            try:
                data = self.h11.send(event)
            except h11.LocalProtocolError as e:  # e.g. a body after HEAD: a bug, not the client's
                log.warning("%r: %s", self, e)
                self.close_when_sent = True
                break
            if data:
                out.append(data)
        if out:
            Connection.queue(self, out[0] if len(out) == 1 else b"".join(out))
            if self.closed:  # the peer is gone (the send failed): nothing else would close it
                self.loop.close(self)

    # --- output and timers -----------------------------------------------------------------------
    def _on_writable(self) -> None:
        self.flush()
        if self.closed:
            self.loop.close(self)
            return
        if self.close_when_sent and not self.out:
            self._sent_and_close()
            return
        ex = self.ex
        if ex is not None and ex.held is not None and self.out_bytes <= SSE_HIGH_WATER // 2:
            call, ex.held = ex.held, None
            value, error = self._call(ex, call)
            if ex.waiting is None:
                self._step(value, error)
        self.update_interest()

    def _sent_and_close(self) -> None:
        """Everything is sent and the connection ends: shut our side, drain theirs (plain TCP;
        a TLS connection is just closed)."""
        if self.draining_since or self.tls:
            self.loop.close(self)
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.loop.close(self)
            return
        self.draining_since = time.monotonic()
        self.update_interest()

    def wake(self) -> None:
        """A Pause ended."""
        if self.ex is not None and not self.closed:
            self._step(None, None)
            self.update_interest()

    def resume(self) -> None:
        self.update_interest()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _content_length(ev: h11.Request) -> int | None:
    for k, v in ev.headers:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


@functools.cache
def https_connection() -> type[HttpConnection]:
    """HttpConnection over TLS: TlsConnection's recv/send (the handshake as data arrives). Made
    on first use, so that a listener without TLS never imports ssl (listeners/tcp.py does)."""
    from edgebus.server.listeners.tcp import TlsConnection

    class HttpsConnection(HttpConnection, TlsConnection):
        tls = True

    return HttpsConnection


class HttpListener(StreamListener):
    name = "http"

    def __init__(self, loop: Loop, app: App, listen: str, tls: ssl.SSLContext | None = None,
                 *, max_connections: int = 32, max_body: int = 2 * 1024 * 1024) -> None:
        super().__init__(loop)
        self.app = app
        self.host, self.port = split_listen(listen)
        self.tls = tls
        self.max_connections = max_connections
        self.max_body = max_body
        self.conns: dict[int, HttpConnection] = {}
        self.paused: set[HttpConnection] = set()
        self.streams = 0  # event streams open (app.max_streams bounds new ones)
        self.refused = 0
        self._next_tick = 0.0
        app.listener = self

    def bind(self) -> socket.socket:
        s = bind_tcp(self.host, self.port, setting="http.listen", backlog=64)
        self.port = s.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("http console and API on %s://%s:%d/", "https" if self.tls else "http", host,
                 self.port)
        return s

    def connection(self, sock: socket.socket, pid: int, uid: int) -> Connection:
        if self.tls is None:
            return HttpConnection(sock, self.loop, self)
        tls = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return https_connection()(tls, self.loop, self)

    def accepted(self, conn: Connection) -> None:
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
