"""One client on the loop over a stream socket (listeners/stream.py accepts them): it reads,
frames (ServerProtocol), hands each request to the dispatch table with fairness
(MAX_REQUESTS_PER_TURN) and an input bound, and queues answers with an output bound
(backpressure: a connection over it is not read until it drains). TLS and the HTTP API
subclass it (tls.py, http_connection.py)."""

from __future__ import annotations

import functools
import logging
import selectors
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from edgebus.errors import ProtocolError
from edgebus.protocol.framing import ServerProtocol
from edgebus.server.logrepeat import bound_repeats

if TYPE_CHECKING:
    from edgebus.server.loop import Loop

log = logging.getLogger("edgebus.conn")
# A client looping on bad frames or refused connections must not flood the journal.
bound_repeats(log)

RECV_SIZE = 256 * 1024
# Requests handled per connection per loop turn, so one busy client cannot starve the others.
MAX_REQUESTS_PER_TURN = 64
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class Connection:
    """Socket, input framing and an output queue with a byte bound (backpressure)."""

    # update_interest is this class's: nothing to re-arm while the connection reads, has no
    # output queued, is under its bound and awaits nothing (Loop.answer skips the call then).
    plain_interest = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "update_interest" in cls.__dict__:
            cls.plain_interest = False

    def __init__(self, sock: socket.socket, loop: Loop, pid: int = -1, uid: int = -1) -> None:
        self.sock = sock
        self.loop = loop
        self.id = 0  # given by Loop.adopt
        self.proto = ServerProtocol()
        self.out: deque[memoryview] = deque()
        self._out_bytes = 0
        # Over the output bound (out_bytes > max_output): a field the out_bytes setter keeps,
        # read once or more per request (a property was a Python call each time).
        self.overloaded = False
        self.max_output = loop.max_output_buffer  # set before any output is queued
        if type(self).send is Connection.send:  # a plain socket: its own send, no frame between
            self.send = sock.send  # type: ignore[method-assign,assignment]
        if type(self).recv is Connection.recv:
            self.recv = functools.partial(sock.recv, RECV_SIZE)  # type: ignore[method-assign]
        self.max_input = loop.max_input_buffer  # unhandled request bytes are not read past this
        self.closed = False
        self.reading = True
        self.events = _READ  # what the loop's selector watches (registered so by Loop.adopt)
        self.pid, self.uid = pid, uid  # the peer as the kernel names it; -1 when unknown
        self.parked = 0  # long-poll fetches waiting on this connection
        self.big_sndbuf = False  # REPLICA_FETCH raised its send buffer (handlers/replica.py)
        self.requests = 0
        # edgebus.server.listeners.shm.ShmLink after SHM_ATTACH: responses then go to its ring.
        self.shm: Any = None
        # The APIs this connection may call (None: all). A listener that needs a handshake first
        # (the replica listener) narrows it; the dispatcher refuses anything else.
        self.allowed: frozenset[int] | None = None
        # The replication peer this connection speaks for, after REPLICA_HELLO (None: a local client).
        self.node: str | None = None
        # The common name of a verified TLS client certificate (mutual TLS), else None.
        self.peer_name: str | None = None
        # Counted against limits.max_connections (False where the listener bounds its own).
        self.counts_as_client = True
        # Access control: its principals and cached decisions (edgebus/server/acl/), made at its
        # first checked request.
        self.acl: Any = None
        # Where this connection's request frames go: the loop's dispatch table, unless the
        # listener speaks another protocol (the Kafka listener gives its own dispatcher).
        self.dispatch_to: Any = None
        # Kafka answers in request order on a connection, and kafka-python and aiokafka check
        # it: a listener that needs this sets `awaiting` while an answer is deferred (a join, a
        # durable commit, a parked fetch), and like Kafka's broker reads no further request of
        # that connection until the answer is queued. `answers` counts queued answers.
        self.awaiting = False
        self.answers = 0
        # Its standing fetch on the socket (edgebus/server/handlers/standing.py; an shm link
        # keeps its own): correlation id while armed, its parked entry, and what to call once
        # queued output went to the kernel or the connection sent a request (a held answer).
        self.standing: int | None = None
        self.standing_w: Any = None
        self.on_room: Any = None
        self.standing_fd = -1  # sock.fileno(), cached by a standing fetch's start (SIOCOUTQ)
        # The C data plane's part of this connection (listeners/sock_plane.py SockLink), made at
        # its first grant: while it holds one, a read with no answer queued is one C call that
        # appends and answers the plain PRODUCEs it reads.
        self.plane_link: Any = None

    def __repr__(self) -> str:
        return f"conn#{self.id}(pid={self.pid})"

    # --- the socket (a TLS connection overrides these two) ----------------------------------------
    def send(self, data: bytes | memoryview) -> int:
        """Bytes sent; BlockingIOError when none can be now; another OSError: the peer is gone."""
        return self.sock.send(data)

    def recv(self) -> bytes:
        """Bytes received (b"" at EOF); BlockingIOError when none are ready."""
        return self.sock.recv(RECV_SIZE)

    @property
    def out_bytes(self) -> int:
        """Answer bytes queued and not yet sent (socket or shm link): the output bound's count.
        Setting it keeps the loop's total across connections (Loop.output_bytes) in step."""
        return self._out_bytes

    @out_bytes.setter
    def out_bytes(self, n: int) -> None:
        loop = self.loop
        loop.output_bytes += n - self._out_bytes
        loop.output_budget_used = loop.output_bytes >= loop.max_output_total
        self._out_bytes = n
        self.overloaded = n > self.max_output

    def release(self) -> None:
        """Drop every buffer of a closed connection at once: its unsent answers and unread
        requests (Loop.close)."""
        self.out.clear()
        self.out_bytes = 0
        self.proto = ServerProtocol()
        self.shm = None  # the link (closed by its service) and this object referred to each other
        self.standing = self.standing_w = self.on_room = None
        if self.plane_link is not None:
            self.plane_link.close()  # (out of the parked loop's table: the fd may be reused)
            self.plane_link = None

    # --- output ----------------------------------------------------------------------------------
    def queue(self, data: bytes) -> None:
        if self.closed:
            return
        self.answers += 1
        if self.awaiting:  # the deferred answer: the requests held behind it go on
            self.awaiting = False
            if self.proto.frames.buffered():
                self.loop.pending.add(self)
        if self.shm is not None and self.shm.queue(data):
            return  # in the response ring, or queued for it (counted in out_bytes)
        if not self.out:
            # Fast path: try to send at once, queue only the remainder.
            try:
                n = self.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.closed = True
                return
            if n == len(data):
                return
            rest = memoryview(data)[n:]
        else:
            rest = memoryview(data)
        self.out.append(rest)
        self.out_bytes += len(rest)

    def flush(self) -> bool:
        """Send queued output; True when everything is sent."""
        while self.out:
            head = self.out[0]
            try:
                n = self.send(head)
            except BlockingIOError:
                return False
            except OSError:
                self.closed = True
                return True
            self.out_bytes -= n
            if n == len(head):
                self.out.popleft()
            else:
                self.out[0] = head[n:]
                return False
        return True

    def update_interest(self) -> None:
        """Read unless over the output bound; watch writability while output is queued."""
        if self.closed:
            return
        # Awaiting a deferred answer, a connection handles no further request (process()), but
        # is still read up to its input bound: turning reads off and on again around every
        # parked Kafka fetch cost two epoll_ctl calls per answer.
        self.reading = not self.overloaded and not (
            self.awaiting and self.proto.frames.buffered() >= self.max_input)
        mask = (_READ if self.reading else 0) | (_WRITE if self.out else 0)
        if mask != self.events:  # called after every answer: most change nothing
            self.loop.sel.modify(self.sock, mask, self.on_event)
            self.events = mask

    # --- the loop's callbacks --------------------------------------------------------------------
    def on_event(self, mask: int) -> None:
        """Selector data: the socket is readable and/or writable."""
        if self.closed:  # a send failed outside process() (EPIPE): finish closing it
            self.loop.close(self)
            return
        if mask & _WRITE:
            self._on_writable()
            if self.closed:
                return
        buffered = self.proto.frames.buffered()
        if not mask & _READ or buffered >= self.max_input:
            return  # whole frames wait in Loop.pending; read more once they are handled
        pl = self.plane_link
        if (pl is not None and not self.out and not self.overloaded and not self.awaiting
                and self.shm is None and pl.grants and pl.read(buffered)):
            return  # read, served and answered in C (sock_plane.py), the rest dispatched
        try:
            data = self.recv()
        except BlockingIOError:
            return
        except OSError as e:
            log.info("%r read error: %s", self, e)
            self.loop.close(self)
            return
        if not data:
            self.loop.close(self)
            return
        self.proto.frames.feed(data)  # ServerProtocol.receive_data without its frame
        self.process()

    def _on_writable(self) -> None:
        self.flush()
        if self.closed:
            self.loop.close(self)
            return
        if self.on_room is not None and not self.out:
            self._room()
        was_overloaded_reads_off = not self.reading
        self.update_interest()
        if was_overloaded_reads_off and self.reading:
            self.process()

    def process(self) -> None:
        """Handle the whole request frames buffered, at most MAX_REQUESTS_PER_TURN of them."""
        handled = 0
        proto = self.proto
        dispatch = self.dispatch_to or self.loop.dispatch
        while (not self.closed and not self.overloaded and not self.awaiting
               and handled < MAX_REQUESTS_PER_TURN):
            try:
                req = proto.next_request()
            except ProtocolError as e:
                log.warning("%r sent a bad frame (%s); closing it", self, e)
                self.loop.close(self)
                return
            if req is None:
                break
            handled += 1
            dispatch(self, req.api_key, req.api_version, req.correlation_id, req.body)
        if self.closed:
            self.loop.close(self)
            return
        if handled and self.on_room is not None and not self.out:
            self._room()  # a request: the consumer is reading, look at its held answer again
        if (self.events != _READ or self.out or self.overloaded or self.awaiting
                or not self.plain_interest):
            self.update_interest()  # else it would find nothing to change
        if handled >= MAX_REQUESTS_PER_TURN and proto.frames.buffered():
            # More complete frames may be buffered; come back next turn without waiting for input.
            self.loop.pending.add(self)

    def _room(self) -> None:
        on_room, self.on_room = self.on_room, None
        on_room(self)

    def resume(self) -> None:
        """LoopApi.resume: re-arm, then handle the frames that waited for output room."""
        self.update_interest()
        if self.reading and not self.closed and self.proto.frames.buffered():
            self.process()
