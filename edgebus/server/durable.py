"""Durable acknowledgements on the loop: answers sent once the group commit's fsync covers them.

A handler that appended with acks=durable (PRODUCE, OFFSET_COMMIT, RESET_OFFSETS) calls `add`
with the response it would have sent; the fsync thread (groupcommit.py) wakes the loop through a
pipe when a round finishes, and each waiter gets its response, or the fsync's error, through
LoopApi.answer like every other answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgebus.errors import EdgebusError, UnknownServerError
from edgebus.protocol.codec import Message
from edgebus.server.groupcommit import GroupCommitter
from edgebus.server.service import LoopApi, Service
from edgebus.server.stats import Stats

if TYPE_CHECKING:
    from edgebus.server.listeners.stream import Connection

log = logging.getLogger("edgebus.durable")

# At shutdown, durable acks still in flight are waited for at most this long.
SHUTDOWN_WAIT_S = 30.0


@dataclass(eq=False)
class DurableWaiter:
    conn: Any
    correlation_id: int
    partition: Any
    # sent once durable: a ProduceResponse, an OffsetCommitResponse, ...; or made then
    response: Message | Callable[[], Message]
    # The answer to send instead when the fsync fails (None: the error itself, as an edgebus
    # error frame); the Kafka listener answers in its own encoding.
    on_error: Callable[[BaseException], Any] | None = None


class DurableAcks(Service):
    polls_when_asked = True  # while durable waiters wait for a sync to start (add, poll)

    def __init__(self, api: LoopApi, stats: Stats) -> None:
        self.api = api
        self.stats = stats
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.committer = GroupCommitter(self._wake_w)
        api.register(self._wake_r, self._on_wake)

    def add(self, conn: Connection, corr: int, partition: Any, response: Message) -> None:
        """Answer `response` to `conn` once `partition` is fsynced (the handler returns DEFERRED)."""
        self.committer.add_waiter(partition, DurableWaiter(conn, corr, partition, response))
        self.api.want_poll(self, True)

    def add_after_sync(self, conn: Connection, corr: int, partitions: list[Any],
                       respond: Callable[[], Any],
                       on_error: Callable[[BaseException], Any] | None = None) -> None:
        """Answer `respond()`, computed then, once every one of `partitions` is fsynced (or
        `on_error(err)` if the fsync fails)."""
        w = DurableWaiter(conn, corr, partitions[0], respond, on_error)
        self.committer.add_waiter(partitions[0], w)
        for p in partitions[1:]:
            self.committer.mark_dirty(p)
        self.api.want_poll(self, True)

    def poll(self, idle: bool) -> bool:
        if self.committer.dirty:  # new durable waiters: start a sync now if none is running
            self.committer.start()
        if not self.committer.dirty:  # started (or nothing left): no poll until the next add
            self.api.want_poll(self, False)
        return False

    def _on_wake(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self.committer.drain(self._answer)
        self.stats.after_drain(self.committer)

    def _answer(self, w: DurableWaiter, err: BaseException | None) -> None:
        if err is None:
            resp: Message | EdgebusError
            if callable(w.response):  # computed after the sync (add_after_sync)
                try:
                    resp = w.response()
                except EdgebusError as e:
                    resp = e
            else:
                resp = w.response
            self.api.answer(w.conn, w.correlation_id, resp)
        elif w.on_error is not None:
            self.api.answer(w.conn, w.correlation_id, w.on_error(err))
        else:
            self.api.answer(w.conn, w.correlation_id, err if isinstance(err, EdgebusError)
                            else UnknownServerError(str(err)))

    def shutdown(self) -> None:
        # Finish in-flight and pending durable acks: wait for the running sync, then one more.
        c = self.committer
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while (c.busy or c.pending_waiters) and time.monotonic() < deadline:
            c.start()
            time.sleep(0.001)
            self._on_wake(0)

    def close(self) -> None:
        self.committer.close()
        self.api.unregister(self._wake_r)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
