"""DiskGuard with an injected free-space probe on a real LogManager: every state change, fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgebus import batch as B
from edgebus.errors import DiskFullError
from edgebus.log.topic_config import TopicConfig
from edgebus.opsconfig import Threshold
from edgebus.server.disk import DiskGuard

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


class FakeDisk:
    def __init__(self, total: int = 100 * MiB, free: int = 50 * MiB) -> None:
        self.total, self.free = total, free
        self.fail: OSError | None = None

    def __call__(self, path: Path) -> tuple[int, int]:
        if self.fail is not None:
            raise self.fail
        return self.total, self.free


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def batch(n: int = 1, size: int = 100) -> tuple[bytearray, B.BatchInfo]:
    data = bytearray(B.build_batch([B.encode_record(0, None, b"x" * size, [])] * n, 0, 0))
    return data, B.validate_batch(data)


def guard(logs, disk: FakeDisk, clock: Clock | None = None, low="10MiB", high="20MiB") -> DiskGuard:
    def th(v: str) -> Threshold:
        return Threshold(percent=float(v[:-1])) if v.endswith("%") else Threshold(
            bytes=int(v[:-3]) * MiB)
    return DiskGuard(logs, th(low), th(high), 5.0, probe=disk, clock=clock or Clock())


def test_hysteresis_reject_then_resume_only_at_high_watermark(logs):
    logs.create_topic("r", TopicConfig())
    p = logs.partition("r", 0)
    disk = FakeDisk(free=50 * MiB)
    clock = Clock()
    g = guard(logs, disk, clock)
    g.check()
    assert not g.low
    data, info = batch()
    g.append(p, data, info, 1)

    disk.free = 9 * MiB
    clock.t += 5
    g.tick(clock.t)
    assert g.low
    with pytest.raises(DiskFullError, match="low watermark") as e:
        g.append(p, *batch(), 2)
    assert "hint:" in str(e.value) and e.value.retriable
    assert p.log_end_offset == 1 and g.rejected_appends == 1
    assert p.read(0, 1 << 20)  # reads go on

    disk.free = 15 * MiB  # above low, below high: still refused
    clock.t += 5
    g.tick(clock.t)
    assert g.low
    with pytest.raises(DiskFullError):
        g.append(p, *batch(), 3)

    disk.free = 20 * MiB
    clock.t += 5
    g.tick(clock.t)
    assert not g.low
    assert g.append(p, *batch(), 4)[0] == 1


def test_percent_watermarks_resolve_against_the_filesystem_size(logs):
    g = guard(logs, FakeDisk(total=1000 * MiB, free=40 * MiB), low="5%", high="10%")
    g.check()
    assert (g.low_bytes, g.high_bytes) == (50 * MiB, 100 * MiB)
    assert g.low


def test_budget_checks_before_a_burst_can_cross_the_low_watermark(logs):
    """No timer check is due, but appends worth more than (free - low) trigger one at once."""
    logs.create_topic("r", TopicConfig())
    p = logs.partition("r", 0)
    disk = FakeDisk(free=10 * MiB + 150_000)
    clock = Clock()
    g = guard(logs, disk, clock)
    g.check()
    checks = g.checks
    for _ in range(5):
        g.append(p, *batch(size=1000), 1)  # well within the budget: no statvfs
    assert g.checks == checks
    disk.free = 9 * MiB  # someone else wrote meanwhile
    with pytest.raises(DiskFullError):
        for _ in range(200):
            g.append(p, *batch(size=1000), 1)
    assert g.checks > checks


def test_drop_oldest_deletes_oldest_segments_first_and_never_the_active_one(logs):
    logs.create_topic("d", TopicConfig(partitions=2, segment_bytes=4096, on_disk_full="drop-oldest"))
    logs.create_topic("r", TopicConfig(segment_bytes=4096))  # reject: never touched
    for _ in range(20):
        for p in (*logs.partitions("d"), logs.partition("r", 0)):
            p.append(*batch(size=1000), 1)
    d0, d1 = logs.partitions("d")
    r0 = logs.partition("r", 0)
    r_segments = r0.segment_count
    assert d0.segment_count == d1.segment_count == 7
    # A timeline: d-1's i-th segment was last written before d-0's i-th.
    for p, shift in ((d0, 5), (d1, 0)):
        for i, f in enumerate(sorted(Path(p.path).glob("*.log"))):
            os.utime(f, (1_000_000 + 10 * i + shift,) * 2)

    deletions: list[tuple[str, int]] = []
    disk = FakeDisk(free=5 * MiB)

    def probe(path: Path) -> tuple[int, int]:
        return disk.total, disk.free + len(deletions) * MiB  # each deletion frees 1 MiB here

    g = guard(logs, disk)
    g._probe = probe  # type: ignore[method-assign]
    for p in (d0, d1):
        real = p.delete_oldest_segment

        def spy(p=p, real=real) -> bool:
            deletions.append((p.name, p.log_start_offset))
            return real()

        p.delete_oldest_segment = spy  # type: ignore[method-assign]
    g.check()
    # 15 MiB needed (5 -> 20) but only 12 segments may go (never the active ones).
    assert deletions == [(name, base) for base in (0, 3, 6, 9, 12, 15)
                         for name in ("d-1", "d-0")]
    assert d0.segment_count == d1.segment_count == 1
    assert d0.log_start_offset == 18 and d0.log_end_offset == 20
    assert r0.segment_count == r_segments and r0.log_start_offset == 0
    assert g.low and g.dropped_segments == 12
    end = d0.log_end_offset
    assert g.append(d0, *batch(), 1)[0] == end  # drop-oldest topics keep accepting
    with pytest.raises(DiskFullError):
        g.append(r0, *batch(), 1)  # reject topics do not


def test_internal_topics_are_neither_refused_nor_dropped(logs):
    logs.create_topic("__internal", TopicConfig(segment_bytes=4096, on_disk_full="drop-oldest"),
                      internal=True)
    p = logs.partition("__internal", 0)
    for _ in range(10):
        p.append(*batch(size=1000), 1)
    n = p.segment_count
    g = guard(logs, FakeDisk(free=0))
    g.check()
    assert g.low and p.segment_count == n


def test_a_failed_probe_keeps_the_state_and_logs_once(logs, caplog):
    disk = FakeDisk(free=1 * MiB)
    g = guard(logs, disk)
    g.check()
    assert g.low
    disk.fail = OSError(5, "Input/output error")
    g.check()
    g.check()
    assert g.low and g.snapshot()["error"]
    assert sum("cannot read free space" in r.message for r in caplog.records) == 1
    disk.fail = None
    disk.free = 50 * MiB
    g.check()
    assert not g.low and g.snapshot()["error"] is None


def test_snapshot_is_what_status_shows(logs):
    g = guard(logs, FakeDisk(total=100 * MiB, free=60 * MiB))
    g.check()
    s = g.snapshot()
    assert s["state"] == "ok" and s["free"] == 60 * MiB and s["used"] == 40 * MiB
    assert s["low_watermark"] == 10 * MiB and s["low_watermark_setting"] == str(10 * MiB)
