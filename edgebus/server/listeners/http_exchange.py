"""The exchange of an HTTP request (listeners/http_connection.py): what runs a route of
edgebus/server/http/api.py on the loop.

A request runs as an *exchange*: a generator that yields `Call`s (one request body of the socket
protocol each), `Emit`s (a piece of a streamed answer: Server-Sent Events) and `Pause`s. A Call
is handed to `LoopApi.dispatch` like a frame read from the Unix socket, so the same dispatcher and
handlers (and their checks) serve it; the handler's answer frame comes back through `queue`, where
it is decoded and sent into the generator. Deferred answers (durable acks, parked long-poll
fetches) arrive the same way later, which is how the live tail waits for data without polling.
An SSE stream asks for no more records while SSE_HIGH_WATER bytes of it are unsent.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

import h11
from h11 import Connection as H11Connection
from h11 import Request as H11Request

from edgebus.errors import EdgebusError, InvalidRequestError, UnknownServerError
from edgebus.protocol.framing import ClientProtocol
from edgebus.server.http.exchange import Call, Emit, Pause, Reply, Request, error_reply

if TYPE_CHECKING:
    from edgebus.server.listeners.http import HttpListener
    from edgebus.server.listeners.http_connection import HttpConnection
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.http")

SSE_HIGH_WATER = 256 * 1024  # an SSE stream asks for no more records while this much is unsent
_corr = itertools.count(1)


class ExchangeState:
    """One request in progress: its generator, the Call it waits on, whether it streams."""

    __slots__ = ("answer", "gen", "held", "reads", "resume_at", "started", "stream", "waiting")

    def __init__(self, gen: Generator[Any, Any, Reply]) -> None:
        self.gen = gen
        self.waiting: tuple[int, int] | None = None  # (correlation id, api key) of the Call
        self.answer: tuple[Any, EdgebusError | None] | None = None  # came during the dispatch
        self.held: Any = None  # a Call held back until the stream's output drains
        self.resume_at = 0.0  # a Pause
        self.started = False  # a streamed response's head is sent
        self.stream = False
        self.reads: str | None = None  # the topic a stream reads (Emit.reads)


class ExchangeRunner:
    """The exchange half of HttpConnection (a mixin): start a request's exchange, step it, hand
    its Calls to the dispatcher and their answers back. The HTTP half (h11, the socket) gives
    `_send`, `_send_reply`, `_after_response` and `unsent()`."""

    listener: HttpListener
    loop: Loop
    closed: bool
    h11: H11Connection
    rpc: ClientProtocol
    head: H11Request | None
    body: bytearray
    ex: ExchangeState | None
    in_dispatch: bool

    def _send(self, *events: Any) -> None:
        raise NotImplementedError

    def _send_reply(self, reply: Reply, close: bool = False) -> None:
        raise NotImplementedError

    def _after_response(self) -> None:
        raise NotImplementedError

    def unsent(self) -> int:
        """Bytes queued for the client and not yet sent."""
        raise NotImplementedError

    def _start(self) -> None:
        head = self.head
        assert head is not None
        req = Request.from_h11(head, bytes(self.body), self)
        self.body.clear()
        result = self.listener.app.handle(req)
        if isinstance(result, Reply):
            self._send_reply(result)
            return
        self.ex = ExchangeState(result)
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
                self.listener.paused.add(cast("HttpConnection", self))
                return
            assert isinstance(item, Call)
            if ex.stream and self.unsent() > SSE_HIGH_WATER:
                ex.held = item  # sent when the client has read (_on_writable)
                return
            value, error = self._call(ex, item)
            if ex.waiting is not None:
                return  # answered later, through queue()

    def _call(self, ex: ExchangeState, call: Call) -> tuple[Any, EdgebusError | None]:
        try:
            body = memoryview(call.body.to_bytes())
        except Exception as e:  # a number out of its wire range
            return None, InvalidRequestError(f"a value is out of range: {e}")
        corr = next(_corr) & 0x7FFFFFFF or 1
        ex.waiting, ex.answer = (corr, call.api_key), None
        self.in_dispatch = True
        try:
            self.loop.dispatch(cast("HttpConnection", self), call.api_key, 0, corr, body)
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

    def _emit(self, ex: ExchangeState, item: Emit) -> None:
        if not ex.started:
            ex.started = ex.stream = True
            ex.reads = item.reads
            self.listener.streams += 1
            self._send(h11.Response(status_code=200, headers=h11_headers(item.headers), reason=b"OK"),
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

    def _send_held(self) -> None:
        """A Call an SSE stream held back, once the client has read (HttpConnection._on_writable)."""
        ex = self.ex
        if ex is not None and ex.held is not None and self.unsent() <= SSE_HIGH_WATER // 2:
            call, ex.held = ex.held, None
            value, error = self._call(ex, call)
            if ex.waiting is None:
                self._step(value, error)

    def end_stream(self, error: EdgebusError) -> None:
        """End a started stream now, whatever it waits on (a parked fetch, whose late answer is
        then dropped by `queue`; a Pause; room to send): `error` is thrown into its generator,
        which sends an event saying why and ends (sse.tail)."""
        ex = self.ex
        if ex is None or not ex.started or self.closed:
            return
        ex.waiting = ex.held = None
        self.listener.paused.discard(cast("HttpConnection", self))
        self._step(None, error)
        self.update_interest()

    def wake(self) -> None:
        """A Pause ended."""
        if self.ex is not None and not self.closed:
            self._step(None, None)
            self.update_interest()

    def update_interest(self) -> None:
        raise NotImplementedError


def h11_headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
