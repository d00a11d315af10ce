"""The shm C data plane (listeners/shm_plane.py) when the disk fills: on a real 4 MiB tmpfs, a
producer whose records go through the plane meets the watermark (`reject`) and a real ENOSPC
(watermarks off) exactly as through Python: DiskFullError for the refused record, nothing of it
left in the log, every acknowledged record readable, and appends resuming densely once there is
room. The plane must have served the records before the refusal (else this tests Python only)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import DiskFullError
from edgebus.server.listeners import shm_plane
from tests.service.test_disk import KiB, MiB, ballast, broker_on, produce_until_refused, read_all

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built")]


def plane_frames(sock: str) -> int:
    with Admin(socket=sock, transport="socket") as a:
        return int(a.status()["shm_plane"]["frames"])


@pytest.mark.parametrize("disk", [{"low_watermark": 0, "high_watermark": 0},
                                  {"low_watermark": "1MiB", "high_watermark": "2MiB"}],
                         ids=["enospc", "watermark"])
def test_a_full_disk_refuses_what_the_plane_would_append(small_fs: Path, tmp_path: Path,
                                                        disk: dict) -> None:
    b = broker_on(small_fs, tmp_path, disk)
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("full", config={"segment_bytes": 512 * KiB, "on_disk_full": "reject"})
        extra = ballast(small_fs, 1536 * KiB if disk["low_watermark"] else 1 * MiB)
        acked, err = produce_until_refused(b.socket, "full")
        assert err.code == DiskFullError.code
        assert plane_frames(b.socket) > acked // 2, "the records did not go through the plane"
        with Admin(socket=b.socket) as a:
            assert a.describe_topic("full").partitions[0].log_end_offset == acked
        assert len(read_all(b.socket, "full")) == acked
        extra.unlink()
        if disk["low_watermark"]:
            with Admin(socket=b.socket) as a:  # the guard looks again on its timer
                deadline = time.monotonic() + 10
                while a.status()["disk"]["state"] == "low":
                    assert time.monotonic() < deadline, "the disk guard did not see the room"
                    time.sleep(0.1)
        with Producer(socket=b.socket, acks="written", linger_ms=0) as p:
            offsets = [p.send("full", b"room again %d" % i).get(10).offset for i in range(5)]
        assert offsets == list(range(acked, acked + 5))
        assert "offline" not in b.log()
    finally:
        b.cleanup()
