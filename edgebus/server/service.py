"""What the supervisor's parts and its event loop know of each other (docs/ARCHITECTURE.md).

A part (a listener, the shm rings, the group coordinator, the disk guard, housekeeping, the
watchdog, the metrics endpoint) is a `Service` added to the loop (edgebus/server/loop.py). It gets
a `LoopApi`, never the loop or the Broker: the loop owns selectors, timers and connections, and a
part asks it for exactly these things. The loop computes its select timeout from every service's
`next_deadline()` and ticks the services whose deadline has come, so adding a part never means
editing the loop.
"""

from __future__ import annotations

import selectors
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from edgebus.errors import EdgebusError
from edgebus.protocol.codec import Message

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

    from edgebus.log.manager import LogManager
    from edgebus.server.durable import DurableAcks
    from edgebus.server.groups.handlers import GroupHandlers
    from edgebus.server.handlers.admin import AdminHandlers
    from edgebus.server.handlers.data import DataHandlers
    from edgebus.server.listeners.stream import Connection
    from edgebus.server.loop import Loop
    from edgebus.server.stats import Stats

# What a handler or a deferred answer sends: a response body, an error (sent as an error response
# with its code), or a response frame a fast codec already encoded (queued as it is).
Answer = Message | EdgebusError | bytes
# One request frame, whatever listener read it: (conn, api_key, api_version, correlation_id, body).
Dispatch = Callable[["Connection", int, int, int, memoryview], None]


class LoopApi(Protocol):
    """The loop as the parts see it. Loop thread only."""

    # True once a signal (or a test) asked the supervisor to stop: refuse new work.
    stopping: bool
    # Hand one request frame to the dispatch table (edgebus/server/dispatch.py); any listener that
    # reads frames calls it, and its answer comes back through `answer`.
    dispatch: Dispatch

    def answer(self, conn: Connection, corr: int, body: Answer) -> None:
        """THE way an answer goes out, immediate or deferred: encode `body` (unless it is already
        a frame), queue it on `conn` (socket or ring) and re-arm the connection's interest so a
        queued remainder is written. Does nothing for a closed connection."""
        ...

    def close(self, conn: Connection) -> None:
        """Close `conn` now and tell every service (`Service.connection_closed`). Idempotent."""
        ...

    def resume(self, conn: Connection) -> None:
        """Re-arm `conn` after its output drained or answers were queued outside its read turn,
        and handle the whole request frames it has buffered (they waited for room)."""
        ...

    @property
    def output_budget_used(self) -> bool:
        """The answers queued for all connections together reached limits.max_output_total_bytes:
        refuse work that would queue more (a fetch gets ServerBusyError)."""
        ...

    def adopt(self, conn: Connection) -> EdgebusError | None:
        """Watch a new connection (a listener accepted it); the error it is refused with (the
        supervisor is stopping, max_connections, max_connections_per_uid), or None. The
        listener sends that error as the connection's only frame."""
        ...

    def register(self, fd: FileDescriptorLike, callback: Callable[[int], None],
                 events: int = selectors.EVENT_READ) -> None:
        """Call `callback(mask)` when `fd` is ready for `events`; registering again changes the
        events and callback."""
        ...

    def register_edge(self, fd: int, callback: Callable[[int], None]) -> bool:
        """Like register (readable), edge-triggered where the selector can (epoll): True when
        it is, and then each write to an eventfd `fd` calls `callback` once, with no read of
        the count needed to re-arm it; False: level-triggered, read the eventfd as usual."""
        ...

    def unregister(self, fd: FileDescriptorLike) -> None:
        """Stop watching `fd` (nothing happens if it is not watched). Before closing it."""
        ...

    def park_fd(self) -> int:
        """The loop's epoll descriptor, for a wait done in C (listeners/shm_park.py); -1 when
        the loop's selector is not an epoll."""
        ...

    def set_parked(self, wait: Callable[[float], list[tuple[int, int]]]) -> None:
        """From now on the loop calls `wait(deadline)` instead of its epoll wait whenever it would
        block: it returns the ready (fd, epoll events) as the epoll wait would."""
        ...

    def want_poll(self, service: Service, on: bool) -> None:
        """A `polls_when_asked` service starts (on) or stops needing its poll() after every
        select. Cheap when nothing changes."""
        ...

    def deadline_changed(self) -> None:
        """A `timer_static` service moved its next_deadline() earlier outside its tick: the
        loop asks every such service again before it next sleeps."""
        ...


class Service:
    """A part on the loop. Every hook has a default that does nothing, and the loop calls only
    the hooks a service overrides (a service without timers costs the loop nothing per turn)."""

    # True: next_deadline() moves earlier only in tick(), in a signal handler, or where the
    # service then calls LoopApi.deadline_changed() (a periodic timer): the loop asks for it
    # after those only, instead of on every turn, i.e. for every paced message (issue 16).
    # Moving it later anywhere is fine: the loop wakes at the old time and finds nothing due.
    timer_static = False
    # True: the loop calls poll() only while the service asked for it (LoopApi.want_poll), not
    # after every select: for a service that has nothing to poll most of the time.
    polls_when_asked = False

    def next_deadline(self) -> float | None:
        """The monotonic time at which `tick` has work, or None for no timer."""
        return None

    def tick(self, now: float) -> None:
        """Called once `now` has reached `next_deadline()`, before the loop sleeps again."""

    def poll(self, idle: bool) -> bool:
        """Called after every select, after the connections' I/O. `idle`: the select returned
        nothing and no connection has frames waiting (the loop may spend a little time here).
        True = more work is expected at once: the next select must not sleep (shm spinning)."""
        return False

    def connection_closed(self, conn: Connection) -> None:
        """`conn` is closed: drop what the service holds for it (waiters, rings, members)."""

    def shutdown(self) -> None:
        """The supervisor is stopping (in the order services were added): stop accepting work
        and answer what waits. The loop flushes and closes every connection afterwards."""

    def close(self) -> None:
        """Release threads, sockets and descriptors: after every connection is closed."""


class Parts(Protocol):
    """What a part that works on the log and the shared handlers is given of the supervisor
    (the transaction coordinator, server/txn/coordinator.py): these, read-only, never the
    Broker's own methods. The Broker is one; a Kafka context (kafka/context.py) is another."""

    @property
    def logs(self) -> LogManager: ...
    @property
    def data(self) -> DataHandlers: ...
    @property
    def groups(self) -> GroupHandlers: ...


class SupervisorParts(Parts, Protocol):
    """What the Kafka front end is given (kafka/front.py, kafka/setup.py): the parts its
    context takes once, and the loop, to put its services on at its first connection."""

    @property
    def loop(self) -> Loop: ...
    @property
    def admin(self) -> AdminHandlers: ...
    @property
    def durable(self) -> DurableAcks: ...
    @property
    def stats(self) -> Stats: ...
