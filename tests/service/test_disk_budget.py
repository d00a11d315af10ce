"""DiskGuard's append budget when another process writes to the same filesystem between checks.

The budget between two statvfs reads is half of the margin above the low watermark seen at the
first, so bytes written by someone else meanwhile are seen before our own appends use the margin
up: a fast producer stops at the low watermark instead of piling its whole old margin on top.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import batch as B
from edgebus.errors import DiskFullError
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.opsconfig import Threshold
from edgebus.server.disk import DiskGuard

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
LOW = 10 * MiB


class SharedDisk:
    """Free space = what was free at the start, less our partition's bytes and another writer's."""

    def __init__(self, logs: LogManager, start_free: int) -> None:
        self.logs, self.start_free, self.other = logs, start_free, 0

    def ours(self) -> int:
        return sum(p.size_bytes for p in self.logs.all_partitions())

    def free(self) -> int:
        return self.start_free - self.ours() - self.other

    def __call__(self, path: Path) -> tuple[int, int]:
        return 100 * MiB, self.free()


def append_until_refused(g: DiskGuard, p, limit: int = 10_000) -> int:
    for i in range(limit):
        data = bytearray(B.build_batch([B.encode_record(0, None, b"x" * 900, [])], 0, 0))
        try:
            g.append(p, data, B.validate_batch(data), 1)
        except DiskFullError:
            return i
    raise AssertionError("never refused")


@pytest.mark.parametrize("other_mib", [0.0, 0.3, 0.45])
def test_our_appends_stop_at_the_low_watermark_whatever_was_written_meanwhile(logs, other_mib):
    logs.create_topic("r", TopicConfig())
    p = logs.partition("r", 0)
    disk = SharedDisk(logs, LOW + MiB + disk_slack(logs))
    g = DiskGuard(logs, Threshold(bytes=LOW), Threshold(bytes=2 * LOW), 5.0, probe=disk)
    g.check()  # margin: 1 MiB
    disk.other = int(other_mib * MiB)  # someone else writes; no timer check is due
    checks = g.checks
    append_until_refused(g, p)
    assert g.low
    # Refused within one batch of the watermark, not the other writer's bytes below it.
    assert LOW - 1000 <= disk.free() < LOW
    assert g.checks - checks <= 16  # about log2(margin / batch) statvfs calls, not one per append


def test_far_from_the_watermark_appends_cost_no_statvfs(logs):
    logs.create_topic("r", TopicConfig())
    p = logs.partition("r", 0)
    disk = SharedDisk(logs, LOW + 1000 * MiB)
    g = DiskGuard(logs, Threshold(bytes=LOW), Threshold(bytes=2 * LOW), 5.0, probe=disk)
    g.check()
    checks = g.checks
    for _ in range(2000):
        data = bytearray(B.build_batch([B.encode_record(0, None, b"x" * 900, [])], 0, 0))
        g.append(p, data, B.validate_batch(data), 1)
    assert g.checks == checks


def disk_slack(logs: LogManager) -> int:
    """The bytes already in the log (the internal offsets topic) when the test starts."""
    return sum(p.size_bytes for p in logs.all_partitions())
