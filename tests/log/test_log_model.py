"""Model-based test: a random run of appends, reads, syncs, retention, restarts, process
crashes and power losses, with every read checked against a simple in-memory model."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from logtest_helpers import log_files, make_batch, records

from edgebus.batch import iter_batches, validate_batch
from edgebus.log import Partition, RecoveryPoint, TopicConfig

pytestmark = pytest.mark.property

CFG = TopicConfig(segment_bytes=700, index_interval_bytes=150, retention_ms=-1,
                  retention_bytes=-1)


@dataclass
class MBatch:
    base: int
    count: int
    append_time: int
    values: list[bytes]
    size: int


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="edgebus-model-"))
        self.dir = self.tmp / "t-0"
        self.p = Partition.open(self.dir, "t", 0, CFG)
        self.batches: list[MBatch] = []
        self.start = 0
        self.end = 0
        self.now = 10_000
        self.max_time_hi = -1  # the partition's max append time is at most this ...
        self.checkpoint: RecoveryPoint | None = None

    def teardown(self) -> None:
        self.p.abandon()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def values_from(self, offset: int) -> list[bytes]:
        return [v for b in self.batches for i, v in enumerate(b.values) if b.base + i >= offset]

    def reopen(self, rp: RecoveryPoint | None) -> None:
        self.p = Partition.open(self.dir, "t", 0, CFG, rp)

    # --- rules ------------------------------------------------------------------------------

    @rule(n=st.integers(1, 4), size=st.integers(0, 120), dt=st.integers(-40, 60))
    def append(self, n: int, size: int, dt: int) -> None:
        self.now += dt  # the clock may go back
        values = [b"%d:" % (self.end + i) + b"x" * size for i in range(n)]
        b = make_batch(values, self.now)
        base, t = self.p.append(b, validate_batch(b), self.now)
        assert base == self.end
        lo = max([self.now] + [x.append_time for x in self.batches])
        assert lo <= t <= max(self.now, self.max_time_hi)
        self.max_time_hi = max(self.max_time_hi, t)  # a stale checkpoint may bring back more
        self.batches.append(MBatch(base, n, t, values, len(b)))
        self.end += n

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        off = data.draw(st.integers(self.start, self.end), label="offset")
        max_bytes = data.draw(st.integers(1, 1500), label="max_bytes")
        got = self.p.read(off, max_bytes)
        if off == self.end:
            assert got == b""
            return
        heads = [validate_batch(b) for b in iter_batches(got)]
        assert heads and sum(h.length for h in heads) == len(got)
        assert heads[0].base_offset <= off < heads[0].base_offset + heads[0].record_count
        assert len(got) <= max_bytes or len(heads) == 1
        recs = records(got, min_offset=off)
        assert [r.offset for r in recs] == list(range(off, off + len(recs)))
        assert [r.value for r in recs] == self.values_from(off)[: len(recs)]

    @rule()
    def sync(self) -> None:
        t = self.p.begin_sync()
        if t is not None:
            t.run()
            self.p.complete_sync(t)
        assert self.p.begin_sync() is None
        assert self.p.synced_offset == self.end

    @rule()
    def take_checkpoint(self) -> None:
        self.checkpoint = self.p.recovery_point()

    @rule(keep=st.integers(0, 3000))
    def retention_by_bytes(self, keep: int) -> None:
        self.p.config = replace(CFG, retention_bytes=keep)
        self.p.apply_retention(self.now)
        self.p.config = CFG
        sizes = [f.stat().st_size for f in log_files(self.dir)]
        assert len(sizes) == 1 or sum(sizes) - sizes[0] < keep
        self.drop_below(self.p.log_start_offset)

    @rule(age=st.integers(0, 400))
    def retention_by_time(self, age: int) -> None:
        self.p.config = replace(CFG, retention_ms=age)
        self.p.apply_retention(self.now)
        self.p.config = CFG
        start = self.p.log_start_offset
        cutoff = self.now - age
        assert all(b.append_time < cutoff for b in self.batches if b.base < start)
        if all(b.append_time < cutoff for b in self.batches):
            assert start == self.end
        self.drop_below(start)

    def drop_below(self, start: int) -> None:
        assert self.start <= start <= self.end
        assert start == self.end or any(b.base == start for b in self.batches)
        self.batches = [b for b in self.batches if b.base >= start]
        self.start = start

    @rule()
    def clean_restart(self) -> None:
        self.p.close()
        self.checkpoint = self.p.recovery_point()
        self.reopen(self.checkpoint)
        assert self.p.recovery_report is not None
        assert self.p.recovery_report.scanned_bytes == 0

    @rule(use_checkpoint=st.booleans())
    def process_crash(self, use_checkpoint: bool) -> None:
        # The process dies; the kernel keeps every written byte.
        self.p.abandon()
        self.reopen(self.checkpoint if use_checkpoint else None)
        assert self.p.recovery_report is not None
        assert not self.p.recovery_report.anything_cut

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def power_loss(self, data: st.DataObject) -> None:
        # The machine loses power: any suffix of the unsynced bytes may be gone.
        synced = self.p.recovery_point()
        self.p.abandon()
        files = log_files(self.dir)
        bases = [int(f.name[:20]) for f in files]
        k0 = bases.index(synced.segment_base)
        k = data.draw(st.integers(k0, len(files) - 1), label="segment")
        lo = synced.position if k == k0 else 0
        cut = data.draw(st.integers(lo, files[k].stat().st_size), label="cut")
        os.truncate(files[k], cut)
        for f in files[k + 1 :]:
            f.unlink()  # their index files stay behind, as they may after a crash
        rp = data.draw(st.sampled_from([synced, self.checkpoint, None]), label="checkpoint")
        self.reopen(rp)
        new_end = self.p.log_end_offset
        assert synced.next_offset <= new_end <= self.end
        assert new_end == self.end or any(b.base == new_end for b in self.batches)
        self.batches = [b for b in self.batches if b.base < new_end]
        self.end = new_end
        if self.checkpoint is not None and self.checkpoint.next_offset > new_end:
            self.checkpoint = None  # a checkpoint is never newer than the synced point

    @invariant()
    def matches_model(self) -> None:
        assert (self.p.log_start_offset, self.p.log_end_offset) == (self.start, self.end)
        assert self.p.size_bytes == sum(b.size for b in self.batches)


LogMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogModel = LogMachine.TestCase
