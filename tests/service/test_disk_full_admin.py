"""Control-plane writes on a full filesystem (a 4 MiB tmpfs the test mounts): creating a topic
answers DiskFullError, detected from ENOSPC, and leaves nothing half made (issue 14 item 8)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edgebus import Admin
from edgebus.errors import DiskFullError
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


def fill(fs: Path) -> Path:
    """Someone else's file that takes every free byte of the filesystem."""
    p = fs / "ballast"
    with open(p, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        for size in (4096, 512, 1):  # the last partial pages too
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return p


def test_create_topic_on_a_full_disk_is_disk_full(small_fs: Path, tmp_path: Path) -> None:
    # Watermarks at zero: only the filesystem itself says no.
    b = EmbeddedBroker(tmp_path / "broker", config={
        "data_dir": str(small_fs / "data"),
        "disk": {"low_watermark": 0, "high_watermark": 0},
    }).start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("before", partitions=1)
            ballast = fill(small_fs)
            with pytest.raises(DiskFullError) as e:
                a.create_topic("t", partitions=2)
            assert "creating topic t" in str(e.value) and "No space left" in str(e.value)
            assert sorted(a.list_topics()) == ["before"]  # nothing half made
            ballast.unlink()
            a.create_topic("t", partitions=2)  # room again: the same request succeeds
            assert sorted(a.list_topics()) == ["before", "t"]
        assert "Traceback" not in b.log()
    finally:
        b.cleanup()
