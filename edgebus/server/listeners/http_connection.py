"""One HTTP client connection of the HTTP listener (listeners/http.py): h11 (sans-IO HTTP/1.1)
for the bytes here, and the exchange of the request being answered (listeners/http_exchange.py:
a route's generator whose Calls go through the same dispatcher as a socket request).

Bounds kept here and by the listener's tick: request heads of MAX_HEAD_BYTES within
HEAD_DEADLINE_S, a request body of http.max_body_bytes, an SSE stream's unsent output
(http_exchange.py SSE_HIGH_WATER), idle keep-alive connections closed after IDLE_S.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

from edgebus.errors import InvalidRequestError
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.http.exchange import Reply, error_reply
from edgebus.server.listeners.http_exchange import ExchangeRunner, ExchangeState, h11_headers
from edgebus.server.listeners.stream import Connection
from edgebus.server.logrepeat import bound_repeats

if TYPE_CHECKING:
    from edgebus.server.listeners.http import HttpListener
    from edgebus.server.loop import Loop

log = bound_repeats(logging.getLogger("edgebus.http"), logging.WARNING)  # a looping client: a few lines

MAX_HEAD_BYTES = 16 * 1024  # request line and headers (h11's max_incomplete_event_size)
HEAD_DEADLINE_S = 10.0  # a request head must be whole this long after the connection opened
IDLE_S = 60.0  # a keep-alive connection with nothing in progress
TICK_S = 1.0
DRAIN_S = 2.0  # a refused request's remaining body is read and dropped this long at most
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class HttpConnection(ExchangeRunner, Connection):
    """One HTTP client: h11 for the bytes, an exchange (ExchangeRunner) for the request being
    answered."""

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
        self.ex: ExchangeState | None = None
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

    def _send_reply(self, reply: Reply, close: bool = False) -> None:
        headers = h11_headers(reply.headers)
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
        self._send_held()
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

    def unsent(self) -> int:
        return self.out_bytes

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

