"""The background side of a group member: one thread, one connection to the coordinator.

The thread sends a heartbeat every heartbeat_interval and runs the group requests the application
thread hands it (join, sync, commit, offset fetch, leave), one at a time in the order given: a
commit queued before a rejoin is answered before the rejoin is sent. It never touches the consumer;
it only records what it learns (a rebalance began, the membership is lost) for the application
thread to act on at its next poll().

Membership is tied to this connection: the supervisor removes the member when it closes, so a
process that dies (kill -9 included) leaves its group at once, and a frozen process (SIGSTOP)
stops heartbeating and is removed after its session timeout. More than max_poll_interval between
polls means the application is stuck: the thread then leaves the group so that the partitions
move on (Kafka's rule).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from edgebus.client.channel import SyncChannel
from edgebus.errors import (
    BrokerUnavailableError,
    ClosedError,
    EdgebusError,
    IllegalGenerationError,
    OperationTimeoutError,
    RebalanceInProgressError,
    UnknownMemberError,
)
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol.codec import Message

log = logging.getLogger("edgebus.consumer.group")

_STOP = object()


class CoordinatorLink:
    def __init__(self, path: Path, group_id: str, *, heartbeat_interval: float,
                 max_poll_interval: float, request_timeout: float) -> None:
        self.group_id = group_id
        self.heartbeat_interval = heartbeat_interval
        self.max_poll_interval = max_poll_interval
        self.request_timeout = request_timeout
        # Invariant: every field below is read and written under _lock.
        self._lock = threading.Lock()
        self._identity: tuple[str, int] | None = None  # (member_id, generation) last joined
        self._rejoin_id = ""  # member id for the next JoinGroup ("" = as a new member)
        self._need_rejoin = False
        self._heartbeating = False
        self._next_heartbeat = 0.0
        self._last_poll = time.monotonic()
        self._stopped = False  # close() began: no job is queued any more
        self._rebalance_calls = 0  # JoinGroups and SyncGroups submitted and not answered
        self._ch = SyncChannel(path, request_timeout)  # used by the thread only
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="edgebus-group", daemon=True)
        self._thread.start()

    # --- state, for the application thread -------------------------------------------------------
    @property
    def identity(self) -> tuple[str, int] | None:
        with self._lock:
            return self._identity

    @property
    def need_rejoin(self) -> bool:
        with self._lock:
            return self._need_rejoin or self._identity is None

    @property
    def rebalancing(self) -> bool:
        """A JoinGroup or SyncGroup is under way, maybe for another thread (a JoinGroup may wait
        minutes for a member that stopped polling): requests submitted now wait behind it."""
        with self._lock:
            return self._rebalance_calls > 0

    def rejoin(self) -> None:
        with self._lock:
            self._need_rejoin = True

    def polled(self) -> None:
        with self._lock:
            self._last_poll = time.monotonic()

    def pause_heartbeats(self) -> None:
        with self._lock:
            self._heartbeating = False

    def left(self) -> None:
        """The member left the group (unsubscribe): no identity, no heartbeats; the next join
        is as a new member."""
        with self._lock:
            self._identity = None
            self._rejoin_id = ""
            self._need_rejoin = True
            self._heartbeating = False

    def forget_member_id(self) -> None:
        with self._lock:
            self._rejoin_id = ""

    def joined(self, member_id: str, generation: int) -> None:
        with self._lock:
            self._identity = (member_id, generation)
            self._rejoin_id = member_id
            self._need_rejoin = False
            self._heartbeating = True
            self._next_heartbeat = time.monotonic() + self.heartbeat_interval

    # --- requests, run on the thread -------------------------------------------------------------
    def submit(self, fn: Callable[[SyncChannel], Any]) -> Future[Any]:
        """Run fn(channel) on the thread after every job submitted before it."""
        fut: Future[Any] = Future()
        with self._lock:  # a job is queued before close()'s _STOP or not at all
            if self._stopped or not self._thread.is_alive():
                fut.set_exception(ClosedError("the consumer's group thread has stopped"))
                return fut
            self._jobs.put((fn, fut))
        return fut

    def call(self, fn: Callable[[SyncChannel], Any], timeout: float) -> Any:
        try:
            return self.submit(fn).result(timeout + self.request_timeout)
        except TimeoutError:
            raise OperationTimeoutError(
                f"no answer from the group coordinator within {timeout:.0f} s") from None

    def request(self, api: int, body: Message, timeout: float | None = None) -> Any:
        t = self.request_timeout if timeout is None else timeout
        if api == M.Api.SYNC_GROUP:
            return self._rebalance_call(lambda ch: ch.request(api, body, timeout=t), t)
        return self.call(lambda ch: ch.request(api, body, timeout=t), t)

    def _rebalance_call(self, fn: Callable[[SyncChannel], Any], timeout: float) -> Any:
        with self._lock:
            self._rebalance_calls += 1
        try:
            return self.call(fn, timeout)
        finally:
            with self._lock:
                self._rebalance_calls -= 1

    def join_request(self, make: Callable[[str], G.JoinGroupRequest], timeout: float) -> Any:
        """JoinGroup with the member id current when it is sent."""
        def run(ch: SyncChannel) -> Any:
            with self._lock:
                member_id = self._rejoin_id
            return ch.request(M.Api.JOIN_GROUP, make(member_id), timeout=timeout)

        return self._rebalance_call(run, timeout)

    def close(self) -> None:
        """Stop the thread and close the connection (the member leaves with it). A request under
        way in the thread (a JoinGroup parked for a rebalance may wait minutes) is ended by
        shutting the socket down, so that its caller gets an error at once: closing it under the
        thread would leave the thread blocked in recv (the kernel keeps the socket while a
        call uses it) and then reading a channel without a socket."""
        with self._lock:
            self._stopped = True
            self._jobs.put(_STOP)
        sock = getattr(self._ch, "_sock", None)  # SyncChannel's connection (None: not open)
        if sock is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=self.request_timeout)
        while True:  # jobs behind _STOP were never sent: their callers learn it now
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                job[1].set_exception(ClosedError("the consumer is closed"))
        if not self._thread.is_alive():
            self._ch.close()

    # --- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                due = self._next_heartbeat if self._heartbeating else None
            timeout = None if due is None else max(0.0, due - time.monotonic())
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            if job is None:
                self._heartbeat()
                continue
            fn, fut = job
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self._ch))
                except BaseException as e:  # handed to the thread waiting on the future
                    fut.set_exception(e)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._heartbeating or self._identity is None:
                return
            member_id, generation = self._identity
            self._next_heartbeat = now + self.heartbeat_interval
            idle = now - self._last_poll
        if idle > self.max_poll_interval:
            log.warning("group %s: no poll() for %.1f s (max_poll_interval_ms is %d); leaving the "
                        "group so that its partitions move on", self.group_id, idle,
                        int(self.max_poll_interval * 1000))
            with contextlib.suppress(EdgebusError):
                self._ch.request(M.Api.LEAVE_GROUP, G.LeaveGroupRequest(self.group_id, member_id))
            self._lost(forget_id=True)
            return
        try:
            self._ch.request(M.Api.HEARTBEAT, G.HeartbeatRequest(self.group_id, generation,
                                                                 member_id))
        except RebalanceInProgressError:
            # Keep heartbeating: the member stays alive until it rejoins at its next poll().
            self.rejoin()
        except IllegalGenerationError:
            self._lost(forget_id=False)
        except (UnknownMemberError, BrokerUnavailableError, OperationTimeoutError) as e:
            # A lost connection means the coordinator removed the member with it.
            log.info("group %s: membership lost (%s); rejoining at the next poll", self.group_id, e)
            self._lost(forget_id=True)
        except EdgebusError as e:
            log.warning("group %s: heartbeat failed: %s", self.group_id, e)

    def _lost(self, forget_id: bool) -> None:
        with self._lock:
            self._need_rejoin = True
            self._heartbeating = False
            if forget_id:
                self._rejoin_id = ""
