"""Periodic log housekeeping on the loop: flush, recovery checkpoint, retention.

- flush: every `log.flush_interval_ms`, fsync the partitions appended to since the last flush
  (through the group committer, so it never runs beside another sync);
- checkpoint: every `log.checkpoint_interval_ms`, snapshot (cheap, here) and write it with its
  fsyncs on the fsync thread;
- retention: every `log.retention_check_interval_ms`, delete segments past their topic's limits;
- at each tick: a stalled fsync is logged (fsyncwatch.py), and the count of lines held back by
  logrepeat.py whose window has passed is logged.
"""

from __future__ import annotations

import logging
import time

from edgebus.errors import EdgebusError
from edgebus.log.manager import LogManager
from edgebus.server.clockcheck import ClockCheck
from edgebus.server.durable import DurableAcks
from edgebus.server.fsyncwatch import FsyncWatch
from edgebus.server.handlers.data import DataHandlers
from edgebus.server.logrepeat import bound_repeats, flush_held
from edgebus.server.service import Service

log = logging.getLogger("edgebus.housekeeping")
# A checkpoint that keeps failing (a read-only filesystem) would log every interval otherwise.
bound_repeats(log)


class Housekeeping(Service):
    timer_static = True  # its times move in tick() only
    def __init__(self, logs: LogManager, data: DataHandlers, durable: DurableAcks, *,
                 flush_interval_ms: int = 1000, checkpoint_interval_ms: int = 5000,
                 retention_check_interval_ms: int = 60_000) -> None:
        self.logs = logs
        self.data = data  # its `dirty` flag: something was appended since the last flush
        self.committer = durable.committer
        self.fsync = FsyncWatch(self.committer)
        self.flush_interval = flush_interval_ms / 1000
        self.checkpoint_interval = checkpoint_interval_ms / 1000
        self.retention_interval = retention_check_interval_ms / 1000
        now = time.monotonic()
        self.next_flush = now + self.flush_interval
        self.next_checkpoint = now + self.checkpoint_interval
        self.next_retention = now + self.retention_interval
        self.checkpoint_failures = 0  # in a row (set on the fsync thread)
        # A tail that recovery found past the checkpoint was written by the previous run but
        # maybe never fsynced: the first flush syncs it even with no append, so the checkpoint
        # covers it and crash after crash does not scan the same bytes again.
        data.dirty = True
        self.clock = ClockCheck()
        self.clock.check(logs.all_partitions(), time.time_ns() // 1_000_000)

    def set_intervals(self, flush_interval_ms: int, checkpoint_interval_ms: int,
                      retention_check_interval_ms: int) -> None:
        """A reload's intervals: each next run at most one new interval from now (a shorter
        interval is not waited out behind the old one)."""
        now = time.monotonic()
        self.flush_interval = flush_interval_ms / 1000
        self.checkpoint_interval = checkpoint_interval_ms / 1000
        self.retention_interval = retention_check_interval_ms / 1000
        self.next_flush = min(self.next_flush, now + self.flush_interval)
        self.next_checkpoint = min(self.next_checkpoint, now + self.checkpoint_interval)
        self.next_retention = min(self.next_retention, now + self.retention_interval)

    def next_deadline(self) -> float | None:
        return min(self.next_flush, self.next_checkpoint, self.next_retention)

    def tick(self, now: float) -> None:
        self.fsync.check(now)
        flush_held()
        if now >= self.next_flush:
            if self.data.dirty and self.committer.start(self.logs.all_partitions()):
                self.data.dirty = False
            self.next_flush = now + self.flush_interval
        if now >= self.next_checkpoint:
            self._checkpoint()
            self.next_checkpoint = now + self.checkpoint_interval
        if now >= self.next_retention:
            self._retention()
            self.next_retention = now + self.retention_interval

    def _checkpoint(self) -> None:
        # Snapshot here (cheap); the write and its two fsyncs run on the fsync thread.
        seq, data = self.logs.snapshot_checkpoint()

        def write() -> None:
            try:
                self.logs.write_checkpoint(data, seq)
            except (OSError, EdgebusError) as e:
                self.checkpoint_failures += 1
                log.error("cannot write the recovery checkpoint: %s", e)
                return
            if self.checkpoint_failures:
                log.info("the recovery checkpoint is written again, after %d failed attempt(s)",
                         self.checkpoint_failures)
                self.checkpoint_failures = 0

        write.what = "the recovery checkpoint"  # type: ignore[attr-defined]  # fsyncwatch.py
        self.committer.run_soon(write)

    def _retention(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        self.clock.check(self.logs.all_partitions(), now_ms)
        try:
            n = self.logs.apply_retention(now_ms)
            if n:
                log.info("retention deleted %d segment(s)", n)
        except (OSError, EdgebusError) as e:
            log.error("retention failed: %s", e)
