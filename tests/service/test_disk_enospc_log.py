"""Watermarks at zero (only the filesystem says no, docs/ARCHITECTURE.md "Disk watermarks"):
each append that meets ENOSPC used to log "disk space low ... below the low watermark 0 B" and
"disk space recovered" at once, two lines per refused append; now it is one line a minute saying
what happened. (Found by filling a small tmpfs as a user.) A real supervisor on a real 4 MiB
tmpfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import DiskFullError

from .test_disk import KiB, MiB, ballast, broker_on, produce_until_refused

pytestmark = pytest.mark.integration


def test_enospc_with_watermarks_off_logs_once_and_truly(small_fs: Path, tmp_path: Path) -> None:
    b = broker_on(small_fs, tmp_path, {"low_watermark": 0, "high_watermark": 0})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("e", config={"segment_bytes": 512 * KiB})
        ballast(small_fs, 1 * MiB)
        acked, err = produce_until_refused(b.socket, "e")
        assert "No space left on device" in str(err)
        with Producer(socket=b.socket, acks="written", linger_ms=0) as p:
            for i in range(20):
                with pytest.raises(DiskFullError):
                    p.send("e", b"x" * 1000 + b"%d" % i).get(10)
        log = b.log()
        assert "below the low watermark 0 B" not in log
        assert "disk space recovered" not in log
        lines = [ln for ln in log.splitlines() if "met ENOSPC" in ln]
        assert len(lines) == 1, lines
        assert "no space left on device on" in lines[0] and "each append is tried" in lines[0]
        with Admin(socket=b.socket) as a:
            assert a.describe_topic("e").partitions[0].log_end_offset == acked
    finally:
        b.cleanup()
