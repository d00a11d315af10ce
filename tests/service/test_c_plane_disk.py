"""The C data plane (listeners/shm_plane.py; sock_plane.py on the socket) when the disk fills:
on a real 4 MiB tmpfs, a producer (on the rings, on the socket) whose records go through the
plane meets the watermark (`reject`) and a real ENOSPC (watermarks off) exactly as through
Python: DiskFullError for the refused record, nothing of it left in the log, every acknowledged
record readable, and appends resuming densely once there is room. The plane must have served
the records before the refusal (else this tests Python only)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import DiskFullError
from edgebus.server.listeners import shm_plane
from tests.service.test_disk import (
    VALUE,
    KiB,
    MiB,
    ballast,
    broker_on,
    produce_until_refused,
    read_all,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built")]


def plane_frames(sock: str, transport: str = "shm") -> int:
    with Admin(socket=sock, transport="socket") as a:
        return int(a.status()["shm_plane" if transport == "shm" else "socket_plane"]["frames"])


def produce_on_until_refused(sock: str, topic: str, transport: str) -> tuple[int, DiskFullError]:
    """test_disk.produce_until_refused on the given transport (the socket's half of the plane
    is listeners/sock_plane.py)."""
    if transport == "shm":
        return produce_until_refused(sock, topic)
    with Producer(socket=sock, transport="socket", acks="written", linger_ms=0) as p:
        for i in range(20_000):
            try:
                p.send(topic, VALUE + b"%08d" % i).get(10)
            except DiskFullError as e:
                return i, e
    raise AssertionError("20,000 records were accepted; the disk never filled")


@pytest.mark.parametrize("transport", ["shm", "socket"])
@pytest.mark.parametrize("disk", [{"low_watermark": 0, "high_watermark": 0},
                                  {"low_watermark": "1MiB", "high_watermark": "2MiB"}],
                         ids=["enospc", "watermark"])
def test_a_full_disk_refuses_what_the_plane_would_append(small_fs: Path, tmp_path: Path,
                                                        disk: dict, transport: str) -> None:
    b = broker_on(small_fs, tmp_path, disk)
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("full", config={"segment_bytes": 512 * KiB, "on_disk_full": "reject"})
        extra = ballast(small_fs, 1536 * KiB if disk["low_watermark"] else 1 * MiB)
        acked, err = produce_on_until_refused(b.socket, "full", transport)
        assert err.code == DiskFullError.code
        assert plane_frames(b.socket, transport) > acked // 2, \
            "the records did not go through the plane"
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
        with Producer(socket=b.socket, transport=transport, acks="written", linger_ms=0) as p:
            offsets = [p.send("full", b"room again %d" % i).get(10).offset for i in range(5)]
        assert offsets == list(range(acked, acked + 5))
        assert "offline" not in b.log()
    finally:
        b.cleanup()
