"""The service part of parked fetches, shared by the native data plane (handlers/data.py) and the
Kafka listener (kafka/fetch.py): their FetchWaiters' deadlines are the service's timer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgebus.server.fetchwait import FetchWaiters, ParkedFetch
from edgebus.server.service import Service

if TYPE_CHECKING:
    from edgebus.server.listeners.stream import Connection


class ParkingService(Service):
    """A service whose timer is its parked fetches' deadlines: an expired fetch, and at shutdown
    every one, goes to `complete_fetch`; a closed connection's are dropped unanswered. The
    subclass sets `waiters` and answers."""

    waiters: FetchWaiters
    # The waiters' deadlines move earlier only in park, which tells the loop then (the subclass
    # gives its FetchWaiters LoopApi.deadline_changed): no next_deadline() per loop turn.
    timer_static = True

    def complete_fetch(self, w: ParkedFetch) -> None:
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        return self.waiters.next_deadline()

    def tick(self, now: float) -> None:
        for w in self.waiters.expired(now):
            self.complete_fetch(w)

    def connection_closed(self, conn: Connection) -> None:
        if conn.parked:
            for w in [w for w in self.waiters.all() if w.conn is conn]:
                self.waiters.remove(w)

    def shutdown(self) -> None:
        for w in self.waiters.all():
            self.complete_fetch(w)
