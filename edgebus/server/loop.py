"""The supervisor's one event loop: a selector, the connections and the services' timers.

Each turn: tick every service whose deadline has come, sleep in epoll until the earliest next
deadline (not at all while a service polls, e.g. shm rings with traffic), call the callback of
each ready descriptor, handle frames left over by fairness, then let the services poll. The loop
is the `LoopApi` the services get (edgebus/server/service.py); it knows nothing of what they do.

A paced message costs the supervisor one wake-up, so what a turn runs besides the request's
handler is paid per message (issue 16): the loop waits in epoll directly (edgebus/server/
poller.py, not the selectors module), and asks a service with a periodic timer
(`Service.timer_static`) for its deadline only after its tick, not on every turn.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import selectors
import signal
import time
from collections.abc import Callable
from typing import Any

from edgebus import format as F
from edgebus.errors import (
    EdgebusError,
    ShuttingDownError,
    TooManyConnectionsError,
    UnknownServerError,
)
from edgebus.fastpath.supervisor import encode_response
from edgebus.protocol import messages as M
from edgebus.server.listeners.stream import Connection
from edgebus.server.memtrim import TRIM_AFTER_BYTES, release_free_memory
from edgebus.server.poller import Poller, mask
from edgebus.server.service import Answer, Dispatch, Service
from edgebus.server.stats import Stats

log = logging.getLogger("edgebus.loop")

_encode = encode_response


def _unwired(conn: Connection, api_key: int, api_version: int, corr: int, body: memoryview) -> None:
    raise RuntimeError("the loop has no dispatch table yet")


def _overrides(service: object, hook: str) -> bool:
    impl = getattr(type(service), hook, None)
    return impl is not None and impl is not getattr(Service, hook)


class Loop:
    """Implements LoopApi. Loop thread only, except `stop` (a signal handler)."""

    def __init__(self, stats: Stats, *, max_connections: int = 256,
                 max_output_buffer: int = F.MAX_OUTPUT_BUFFER,
                 max_input_buffer: int = 2 * F.MAX_FRAME_BYTES,
                 max_connections_per_uid: int = 128,
                 max_output_total: int = F.MAX_OUTPUT_TOTAL) -> None:
        self.stats = stats  # records/bytes out are counted where answers are encoded
        self.sel = Poller()
        # The wait done in C when the loop would block (LoopApi.set_parked; listeners/shm_park.py).
        self.parked: Callable[[float], list[tuple[int, int]]] | None = None
        self.conns: dict[int, Connection] = {}
        self.max_connections = max_connections
        self.max_connections_per_uid = max_connections_per_uid
        self.max_output_buffer = max_output_buffer
        self.max_output_total = max_output_total
        self.max_input_buffer = max_input_buffer
        # Invariant: output_bytes == sum(c.out_bytes for c in conns), kept by Connection.out_bytes.
        self.output_bytes = 0
        # LoopApi.output_budget_used: output_bytes >= max_output_total, kept with output_bytes by
        # Connection.out_bytes (a field: fetch answers read it per message).
        self.output_budget_used = max_output_total <= 0
        self.conns_per_uid: dict[int, int] = {}
        # Connections counted under uid -1 whose uid can be looked up (`uid_lookup`: a loopback
        # Kafka client's, from /proc/net/tcp): looked up only once some user could reach
        # max_connections_per_uid, i.e. when the loop holds that many connections in all.
        self.uid_deferred: set[Connection] = set()
        self.stopping = False
        self.dispatch: Dispatch = _unwired
        # Connections counted against max_connections (a listener with its own bound, the
        # replica listener, makes connections that are not).
        self.clients = 0
        self.pending: set[Connection] = set()  # connections with whole frames left unhandled
        self.services: list[Service] = []
        self._timed: list[Service] = []  # every service with a timer, in the order added
        self._dynamic: list[Service] = []  # those asked for their deadline on every turn
        self._static: list[Service] = []  # the others (timer_static): asked after a tick
        self._static_deadline = math.inf
        self._static_stale = False
        self._pollers: list[Service] = []  # polled after every select, in the order added
        self._asked: set[Service] = set()  # polls_when_asked services that asked (want_poll)
        self._conn_watchers: list[Service] = []
        self._next_id = 1
        self._signal_fds: tuple[int, int] | None = None

    def add(self, service: Service, before: Service | None = None) -> None:
        """Add a service; services shut down in the order they were added, or just `before`
        that one (a part made while serving: the Kafka front end's, kafka/front.py)."""
        if before is not None and before in self.services:
            self.services.insert(self.services.index(before), service)
        else:
            self.services.append(service)
        if _overrides(service, "next_deadline"):
            self._timed.append(service)
            (self._static if _static_timer(service) else self._dynamic).append(service)
            self._static_stale = True
        if _overrides(service, "poll") and not service.polls_when_asked:
            self._asked.add(service)
            self._update_pollers()
        if _overrides(service, "connection_closed"):
            self._conn_watchers.append(service)

    # --- LoopApi ---------------------------------------------------------------------------------
    def answer(self, conn: Connection, corr: int, body: Answer) -> None:
        if conn.closed:
            return
        if type(body) is bytes:  # a frame already (a standing fetch's answer): queue_answer's first case
            conn.queue(body)
        else:
            self.queue_answer(conn, corr, body)
        if (conn.events != _READ or conn.out or conn.overloaded or conn.awaiting
                or not conn.plain_interest):
            conn.update_interest()  # else it would find nothing to change (stream.py)

    def queue_answer(self, conn: Connection, corr: int, body: Answer) -> None:
        """`answer` without re-arming: for answers given during the connection's own read turn
        (the reader re-arms once after the turn)."""
        if type(body) is bytes:
            conn.queue(body)
            return
        try:
            if isinstance(body, EdgebusError):
                frame = _encode(corr, None, body.code, str(body))
            else:
                if type(body) is M.FetchResponse:
                    self.stats.fetch_sent(body)
                frame = _encode(corr, body)  # type: ignore[arg-type]  # a Message here
        except Exception as e:  # an unencodable response must not take the supervisor down
            log.exception("cannot encode the %s answer to %r", type(body).__name__, conn)
            frame = _encode(corr, None, UnknownServerError.code, f"internal error: {e}")
        conn.queue(frame)

    def close(self, conn: Connection) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        if conn.counts_as_client:
            self.clients -= 1
        conn.closed = True
        self.pending.discard(conn)
        self.uid_deferred.discard(conn)
        self._uncount(conn.uid)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()
        held = conn.out_bytes + conn.proto.frames.buffered()  # socket and shm link answers
        for s in self._conn_watchers:  # e.g. parked fetches, shm rings, group members
            s.connection_closed(conn)
        # Its buffers go now, whoever still holds the Connection object (a cycle with its shm
        # link, a parked fetch), and large ones are handed back to the kernel: unsent answers
        # can be tens of MiB per connection (edgebus/server/memtrim.py).
        conn.release()
        if held >= TRIM_AFTER_BYTES:
            release_free_memory()
        log.debug("closed %r after %d requests", conn, conn.requests)

    def resume(self, conn: Connection) -> None:
        conn.resume()

    def adopt(self, conn: Connection) -> EdgebusError | None:
        if self.stopping:
            return ShuttingDownError("the supervisor is shutting down")
        if conn.counts_as_client and self.clients >= self.max_connections:
            self.stats.refused_connection("max_connections")
            return TooManyConnectionsError(
                f"{self.clients} connections is the limit (limits.max_connections)")
        deferred = conn.uid < 0 and getattr(conn, "uid_lookup", None) is not None
        if len(self.conns) >= self.max_connections_per_uid and (deferred or self.uid_deferred):
            self._look_up_uids(conn if deferred else None)  # a user may be at its limit now
            deferred = False
        per_uid = self.conns_per_uid.get(conn.uid, 0)
        if per_uid >= self.max_connections_per_uid:
            self.stats.refused_connection("max_connections_per_uid")
            return TooManyConnectionsError(
                f"uid {conn.uid} has {per_uid} connections, the limit for one user "
                "(limits.max_connections_per_uid)")
        if conn.counts_as_client:
            self.clients += 1
        conn.id = self._next_id
        self._next_id += 1
        self.conns[conn.id] = conn
        self.conns_per_uid[conn.uid] = per_uid + 1
        if deferred:
            self.uid_deferred.add(conn)
        self.sel.register(conn.sock, selectors.EVENT_READ, conn.on_event)
        return None

    def _uncount(self, uid: int) -> None:
        left = self.conns_per_uid.get(uid, 1) - 1
        if left > 0:
            self.conns_per_uid[uid] = left
        else:
            self.conns_per_uid.pop(uid, None)

    def _look_up_uids(self, new: Connection | None) -> None:
        """The uids of the deferred connections (each moves from uid -1's count to its own)
        and of `new` (not counted yet)."""
        if new is not None:
            new.uid = _looked_up(new)
        for c in self.uid_deferred:
            uid = _looked_up(c)
            if uid >= 0:
                self._uncount(-1)
                self.conns_per_uid[uid] = self.conns_per_uid.get(uid, 0) + 1
                c.uid = uid
        self.uid_deferred.clear()

    def register(self, fd: Any, callback: Callable[[int], None],
                 events: int = selectors.EVENT_READ) -> None:
        try:
            self.sel.modify(fd, events, callback)
        except KeyError:
            self.sel.register(fd, events, callback)

    def register_edge(self, fd: int, callback: Callable[[int], None]) -> bool:
        self.register(fd, callback)
        self.sel.edge(fd)
        return True

    def park_fd(self) -> int:
        return self.sel.ep.fileno()

    def set_parked(self, wait: Callable[[float], list[tuple[int, int]]]) -> None:
        self.parked = wait

    def deadline_changed(self) -> None:
        self._static_stale = True

    def want_poll(self, service: Service, on: bool) -> None:
        if (service in self._asked) == on:
            return
        if on:
            self._asked.add(service)
        else:
            self._asked.discard(service)
        self._update_pollers()

    def _update_pollers(self) -> None:
        # A new list, not changed in place: Loop.run may be iterating over the old one.
        self._pollers = [s for s in self.services if s in self._asked]

    def unregister(self, fd: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(fd)

    # --- signals ---------------------------------------------------------------------------------
    def install_signals(self) -> None:
        """SIGTERM and SIGINT stop the loop; a byte on the wake-up pipe ends the select."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signal_fds = (r, w)
        self.register(r, self._drain_signals)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stopping = True

    def _drain_signals(self, mask: int) -> None:
        assert self._signal_fds is not None
        self._static_stale = True  # a handler may have set a timer (ConfigReload's SIGHUP)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._signal_fds[0], 4096):
                pass

    # --- the loop --------------------------------------------------------------------------------
    def _next_deadline(self) -> float:
        """The earliest deadline of all timed services (the static ones' as last asked)."""
        if self._static_stale:
            self._static_stale = False
            self._static_deadline = _earliest(self._static)
        return min(self._static_deadline, _earliest(self._dynamic))

    def _tick(self, now: float) -> None:
        for s in self._timed:
            d = s.next_deadline()
            if d is not None and d <= now:
                s.tick(now)
        self._static_stale = True  # a tick moved its own timer

    def run(self) -> None:
        """Serve until `stopping`."""
        poll = self.sel.ep.poll
        callbacks = self.sel.callbacks
        monotonic = time.monotonic
        dynamic, pending = self._dynamic, self.pending
        busy = False
        while not self.stopping:
            now = monotonic()
            # _next_deadline inlined: this runs once per wake-up, i.e. per paced message
            if self._static_stale:
                self._static_stale = False
                self._static_deadline = _earliest(self._static)
            deadline = self._static_deadline
            for s in dynamic:
                d = s.next_deadline()
                if d is not None and d < deadline:
                    deadline = d
            if deadline <= now:
                self._tick(now)
                deadline = self._next_deadline()
                now = monotonic()  # ticks may take a while
            if busy or pending:
                timeout = 0.0
            elif deadline == math.inf:
                timeout = -1.0
            else:
                timeout = deadline - now if deadline > now else 0.0
            parked = self.parked
            # would block: wait in C, which serves what it can without this turn (shm_park.py)
            events = poll(timeout) if parked is None or timeout == 0.0 else parked(deadline)
            for fd, ev in events:
                if fd in callbacks:  # not if an earlier callback of this turn unregistered it
                    callbacks[fd](_READ if ev == _IN else mask(ev))
            idle = not events and not pending
            if pending:
                conns = list(pending)
                pending.clear()
                for c in conns:
                    if c.reading and not c.closed:
                        c.process()
            busy = False
            for s in self._pollers:
                if s.poll(idle):
                    busy = True

    def shutdown(self) -> None:
        """Services stop in order (answer waiters, finish durable acks), then every connection's
        output is flushed (blocking, bounded) and it is closed, then services release."""
        for s in self.services:
            s.shutdown()
        for conn in list(self.conns.values()):
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.flush()
            self.close(conn)
        for s in self.services:
            s.close()

    def close_signals(self) -> None:
        if self._signal_fds is not None:
            signal.set_wakeup_fd(-1)
            self.unregister(self._signal_fds[0])
            for fd in self._signal_fds:
                os.close(fd)
            self._signal_fds = None


_READ = selectors.EVENT_READ
_IN = select.EPOLLIN  # what an eventfd or a socket with a request reports, alone


def _static_timer(service: Service) -> bool:
    """timer_static, said by the class that gives next_deadline or one below it: a subclass
    with timers of its own (HttpListener's) is asked every turn unless it says otherwise."""
    mro = type(service).__mro__
    owner = next(c for c in mro if "next_deadline" in c.__dict__)
    said = next(c for c in mro if "timer_static" in c.__dict__)
    return bool(service.timer_static) and issubclass(said, owner)


def _earliest(services: list[Service]) -> float:
    deadline = math.inf
    for s in services:
        d = s.next_deadline()
        if d is not None and d < deadline:
            deadline = d
    return deadline


def _looked_up(conn: Any) -> int:
    """conn.uid_lookup's answer (-1: none), asked once."""
    lookup, conn.uid_lookup = conn.uid_lookup, None
    uid = lookup()
    return -1 if uid is None else int(uid)
