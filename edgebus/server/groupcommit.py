"""Group commit: one fsync per partition covers every durable batch appended meanwhile.

The loop appends and queues waiters; when no sync is running it hands every dirty partition's
SyncTicket to one helper thread. Batches appended while that sync runs wait for the next one, so
under load each fsync covers everything that arrived during the previous fsync.

Invariant: a waiter is answered OK only after a sync that began after its batch was written has
succeeded. A failed fsync fails its waiters and the partition goes offline; it is never retried
into success (after an fsync error the kernel may have dropped the dirty pages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgebus.errors import EdgebusError, StorageError

log = logging.getLogger("edgebus.groupcommit")


@dataclass
class SyncJob:
    tickets: list[tuple[Any, Any]]  # (partition, ticket)
    waiters: list[Any]  # opaque to this module; handed back on completion
    errors: dict[int, OSError] = field(default_factory=dict)  # index into tickets -> error
    skipped: set[int] = field(default_factory=set)  # id() of partitions that could not be synced
    seconds: float = 0.0


class GroupCommitter:
    """Owns the fsync thread. `on_done` is called on the loop thread via `drain()`."""

    def __init__(self, wake_fd: int) -> None:
        self._wake_fd = wake_fd
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._job: SyncJob | None = None
        self._done: list[SyncJob] = []
        self._tasks: list[Callable[[], None]] = []  # other slow disk work (checkpoint writes)
        self._stop = False
        self.busy = False
        self.pending_waiters: list[Any] = []
        self.dirty: dict[int, Any] = {}  # id(partition) -> partition with durable waiters
        self.syncs = 0
        self.sync_seconds = 0.0
        # What the thread is doing now: (what, monotonic start), set around each fsync or task
        # (per sync, never per append), read by the loop (fsyncwatch.py): a stalled card shows.
        self.running: tuple[str, float] | None = None
        self.idle_since = 0.0  # monotonic time `running` last became None
        self._thread = threading.Thread(target=self._run, name="edgebus-fsync", daemon=True)
        self._thread.start()

    def add_waiter(self, partition: Any, waiter: Any) -> None:
        self.pending_waiters.append(waiter)
        self.dirty[id(partition)] = partition

    def mark_dirty(self, partition: Any) -> None:
        """Include `partition` in the next sync (a waiter of another partition depends on it)."""
        self.dirty[id(partition)] = partition

    def start(self, partitions: list[Any] | None = None) -> bool:
        """Start a sync of the dirty partitions (plus `partitions`) if none is running."""
        if self.busy:
            return False
        parts = dict(self.dirty)
        for p in partitions or ():
            parts[id(p)] = p
        if not parts:
            return False
        tickets = []
        skipped: set[int] = set()
        for p in parts.values():
            try:
                t = p.begin_sync()
            except EdgebusError as e:  # closed (its topic was deleted this turn) or dup() failed
                log.error("no fsync of %s-%d: %s", p.topic, p.partition, e)
                skipped.add(id(p))
                continue
            if t is not None:
                tickets.append((p, t))
        waiters, self.pending_waiters, self.dirty = self.pending_waiters, [], {}
        job = SyncJob(tickets, waiters, skipped=skipped)
        if not tickets:
            # Nothing unsynced (e.g. already covered by a previous sync): answer at once.
            self._done.append(job)
            os.write(self._wake_fd, b"\x01")
            return True
        self.busy = True
        with self._cond:
            self._job = job
            self._cond.notify()
        return True

    def run_soon(self, task: Callable[[], None]) -> None:
        """Run task on the fsync thread (after any sync job, which has priority): slow disk work
        such as the checkpoint's fsyncs must not stall the loop on an SD card."""
        with self._cond:
            self._tasks.append(task)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._tasks and not self._stop:
                    self._cond.wait()
                if self._job is None:
                    tasks, self._tasks = self._tasks, []
                    if not tasks and self._stop:
                        return
                    job = None
                else:
                    job = self._job
                    self._job = None
                    tasks = []
            for task in tasks:
                self.running = (getattr(task, "what", "a background disk task"), time.monotonic())
                try:
                    task()
                except Exception:  # logged, never fatal to the thread: the next one may work
                    log.exception("background disk task failed")
                self.idle_since, self.running = time.monotonic(), None
            if job is None:
                continue
            t0 = time.perf_counter()
            for i, (p, ticket) in enumerate(job.tickets):
                self.running = (f"{p.topic}-{p.partition}", time.monotonic())
                try:
                    ticket.run()
                except OSError as e:
                    job.errors[i] = e
            self.idle_since, self.running = time.monotonic(), None
            job.seconds = time.perf_counter() - t0
            with self._lock:
                self._done.append(job)
            with contextlib.suppress(OSError):
                os.write(self._wake_fd, b"\x01")

    def drain(self, answer: Callable[[Any, BaseException | None], None]) -> int:
        """On the loop thread: finish completed jobs, calling answer(waiter, error_or_None)."""
        with self._lock:
            done, self._done = self._done, []
        for job in done:
            failed: set[int] = set()
            for i, (p, ticket) in enumerate(job.tickets):
                err = job.errors.get(i)
                if err is None:
                    p.complete_sync(ticket)
                else:
                    log.error("fsync failed on %s-%d: %s; partition is offline until restart",
                              p.topic, p.partition, err)
                    p.fail_sync(ticket, err)
                    failed.add(id(p))
            if job.tickets:
                self.busy = False
                self.syncs += 1
                self.sync_seconds += job.seconds
            for w in job.waiters:
                part = w.partition
                if id(part) in failed or id(part) in job.skipped or part.offline:
                    # An offline partition's reason names the first failure (an fsync's, or a
                    # write's that came after this batch: its fsync would cover the failed range).
                    why = getattr(part, "offline_reason", None) or "fsync failed"
                    answer(w, StorageError(f"{part.topic}-{part.partition} is not durable: {why}"))
                else:
                    answer(w, None)
        return len(done)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
