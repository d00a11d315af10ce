"""The log cleaner of compacted topics, as a service on the loop (edgebus/log/cleaner.py does
the work).

One background thread cleans one partition at a time. The loop side (`tick`) makes the plans
(a snapshot of the partition's segments, cheap) and swaps the cleaned files in when the thread has
written them, so only the loop thread ever changes a Partition. A partition is planned when it
has new data since its last cleaning (a cleaning rereads everything: the cleaner keeps no state
on disk, so a restart costs one cleaning per compacted partition), or when one of its kept
tombstones has reached its delete_retention_ms. The thread's reads and writes together are paced
at `log.cleaner_io_bytes_per_s`.

The cleaning code (edgebus/log/cleaner.py), its queues and its thread are set up at the first
plan, i.e. once a compacted partition has two segments: a supervisor without one never imports
them (issue 16: idle memory).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from edgebus.errors import EdgebusError
from edgebus.log.fileutil import unlink_quiet
from edgebus.log.manager import LogManager
from edgebus.server.groupcommit import GroupCommitter
from edgebus.server.service import Service

if TYPE_CHECKING:
    import queue

    from edgebus.log.cleaner import CleanPlan, CleanResult, Throttle

log = logging.getLogger("edgebus.cleaner")

POLL_S = 0.2  # how often the loop looks for a finished cleaning while one runs


class LogCleaner(Service):
    timer_static = True  # its times move in tick() (_plan, _collect) only
    def __init__(self, logs: LogManager, committer: GroupCommitter, interval_ms: int = 15_000,
                 io_bytes_per_s: int = 4 * 1024 * 1024) -> None:
        self.logs = logs
        self.committer = committer
        self.interval = interval_ms / 1000
        self.io_bytes_per_s = io_bytes_per_s
        # Made by _setup at the first plan (the module docstring).
        self.throttle: Throttle | None = None
        self._todo: queue.Queue[CleanPlan | None] | None = None
        self._done: queue.Queue[tuple[CleanPlan, CleanResult | BaseException]] | None = None
        self._busy = False
        self._poll_at = 0.0  # while busy: when to look for its result
        self._next_plan = time.monotonic() + self.interval
        # name -> (log end offset at its last cleaning, time.time() ms when to clean again anyway)
        self._cleaned: dict[str, tuple[int, int | None]] = {}
        self._thread: threading.Thread | None = None
        # Totals for the status document and metrics.
        self.cleanings = 0
        self.segments_rewritten = 0
        self.records_removed = 0
        self.tombstones_removed = 0
        self.bytes_reclaimed = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.errors = 0
        self.last_error = ""

    # --- the loop side --------------------------------------------------------------------------

    def set_pace(self, interval_ms: int, io_bytes_per_s: int) -> None:
        """A reload's log.cleaner_interval_ms and cleaner_io_bytes_per_s: the next plan at most
        one new interval from now; the rate at once, for a cleaning under way too."""
        self.interval = interval_ms / 1000
        self._next_plan = min(self._next_plan, time.monotonic() + self.interval)
        self.io_bytes_per_s = io_bytes_per_s
        if self.throttle is not None:
            self.throttle.set_rate(io_bytes_per_s)

    def next_deadline(self) -> float | None:
        return self._poll_at if self._busy else self._next_plan

    def tick(self, now: float) -> None:
        self._poll_at = now + POLL_S
        self._collect()
        if not self._busy and now >= self._next_plan:
            self._next_plan = now + self.interval
            self._plan()

    def _setup(self) -> tuple[Throttle, queue.Queue[CleanPlan | None]]:
        if self.throttle is None or self._todo is None:
            import queue

            from edgebus.log.cleaner import Throttle

            self.throttle = Throttle(self.io_bytes_per_s)
            self._todo = queue.Queue()
            self._done = queue.Queue()
        return self.throttle, self._todo

    def _plan(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        for p in self.logs.all_partitions():
            if not p.config.compacted or p.offline or p.segment_count < 2:
                continue
            from edgebus.log.cleaner import CleanPlan

            _throttle, todo = self._setup()
            last = self._cleaned.get(p.name)
            if last is not None and last[0] == p.log_end_offset and (last[1] is None
                                                                    or now_ms < last[1]):
                continue
            try:
                segs = p.compaction_view()
            except EdgebusError:
                continue
            if not any(s.cleanable for s in segs):
                # Sealed but not yet fsynced (after a restart nothing syncs a quiet partition):
                # ask for the sync; the next plan finds them cleanable.
                self.committer.start([p])
                continue
            cfg = p.config
            todo.put(CleanPlan(p.topic, p.partition, tuple(segs), now_ms,
                                     cfg.delete_retention_ms, cfg.min_compaction_lag_ms))
            # A sealed segment not yet fsynced is left out of this cleaning: plan again.
            complete = all(s.cleanable for s in segs[:-1])
            if not complete:
                self.committer.start([p])
            self._cleaned[p.name] = (p.log_end_offset if complete else -1, None)
            self._busy = True
            self._start()
            return  # one at a time: the next is planned after this one is swapped in

    def _collect(self) -> None:
        if self._done is None:
            return  # never planned
        while True:
            if self._done.empty():  # the loop is its only reader
                return
            plan, res = self._done.get_nowait()
            self._busy = False
            self._next_plan = time.monotonic()  # another partition may be waiting
            if isinstance(res, BaseException):
                self.errors += 1
                self.last_error = f"{plan.topic}-{plan.partition}: {res}"
                log.error("cleaning %s-%d failed: %s", plan.topic, plan.partition, res)
                continue
            self._swap(plan, res)

    def _swap(self, plan: CleanPlan, res: CleanResult) -> None:
        name = f"{plan.topic}-{plan.partition}"
        try:
            p = self.logs.partition(plan.topic, plan.partition)
        except EdgebusError:
            p = None  # deleted meanwhile
        swapped = 0
        for c in res.segments:
            if p is None:
                unlink_quiet(c.cleaned_path)
                continue
            try:
                if p.replace_segment(c.base_offset, c.cleaned_path, c.source_size):
                    swapped += 1
                    self.segments_rewritten += 1
                    self.records_removed += c.records_removed
                    self.tombstones_removed += c.tombstones_removed
                    self.bytes_reclaimed += c.source_size - c.new_size
            except EdgebusError as e:
                self.errors += 1
                self.last_error = f"{name}: {e}"
                log.error("swapping in the cleaned segment %d of %s: %s", c.base_offset, name, e)
        self.cleanings += 1
        self.bytes_read += res.bytes_read
        self.bytes_written += res.bytes_written
        if name in self._cleaned:
            self._cleaned[name] = (self._cleaned[name][0], res.next_tombstone_expiry_ms)
        if res.skipped:
            log.warning("%s: %s", name, res.skipped)
        elif swapped:
            log.info("cleaned %s: %d segment(s) rewritten, %d records and %d tombstones removed, "
                     "%d keys", name, swapped, sum(c.records_removed for c in res.segments),
                     sum(c.tombstones_removed for c in res.segments), res.keys)

    def status(self) -> dict[str, Any]:
        return {"cleanings": self.cleanings, "segments_rewritten": self.segments_rewritten,
                "records_removed": self.records_removed,
                "tombstones_removed": self.tombstones_removed,
                "bytes_reclaimed": self.bytes_reclaimed, "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written, "errors": self.errors,
                "last_error": self.last_error, "running": self._busy,
                "io_bytes_per_s": max(1, self.io_bytes_per_s)}  # as Throttle takes it

    # --- the thread -----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgebus-cleaner", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        from edgebus.log.cleaner import CleaningStopped, clean

        throttle, todo = self._setup()  # made before the thread was started
        while True:
            plan = todo.get()
            if plan is None:
                return
            try:
                res: CleanResult | BaseException = clean(plan, throttle)
            except CleaningStopped:
                return
            except Exception as e:  # reported on the loop; the thread lives on
                res = e
            assert self._done is not None
            self._done.put((plan, res))

    def shutdown(self) -> None:
        if self.throttle is None or self._todo is None:
            return  # never set up: no thread
        self.throttle.stop()  # a cleaning in progress is abandoned (its temp file removed)
        self._todo.put(None)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)
        # A cleaning that finished but was never swapped in: its files would be deleted at the
        # next start anyway (.tmp); remove them now.
        if self._done is None:
            return
        from edgebus.log.cleaner import CleanResult

        while not self._done.empty():  # the thread has ended: nothing puts any more
            _plan, res = self._done.get_nowait()
            if isinstance(res, CleanResult):
                for c in res.segments:
                    unlink_quiet(c.cleaned_path)
