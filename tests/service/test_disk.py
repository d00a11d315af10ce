"""Disk watermarks on a real, small filesystem the test mounts itself (a 4 MiB tmpfs).

- `reject`: producers get DiskFullError while consumers keep reading; appends resume once the
  high watermark is free again;
- `drop-oldest`: appends keep being accepted and the oldest segments go;
- a real ENOSPC (watermarks off) reaches the producer as DiskFullError, detected by errno, and the
  partition stays usable.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import DiskFullError
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration

KiB, MiB = 1024, 1024 * 1024
VALUE = b"v" * 1000


def broker_on(fs: Path, tmp_path: Path, disk: dict) -> EmbeddedBroker:
    b = EmbeddedBroker(tmp_path / "broker", config={
        "data_dir": str(fs / "data"),
        "disk": {"check_interval_ms": 200, **disk},
        "log": {"flush_interval_ms": 100},
    })
    return b.start()


def ballast(fs: Path, size: int) -> Path:
    """A file on the small filesystem standing for someone else's data."""
    p = fs / "ballast"
    with open(p, "wb") as f:
        f.write(b"\0" * size)
    return p


def produce_until_refused(sock: str, topic: str, limit: int = 20_000) -> tuple[int, DiskFullError]:
    """Send one record at a time (acks=written) until one fails; (records acknowledged, error)."""
    with Producer(socket=sock, acks="written", linger_ms=0) as p:
        for i in range(limit):
            try:
                p.send(topic, VALUE + b"%08d" % i).get(10)
            except DiskFullError as e:
                return i, e
    raise AssertionError(f"{limit} records were accepted; the disk never filled")


def read_all(sock: str, topic: str, partitions: int = 1) -> list[bytes]:
    out: list[bytes] = []
    with Consumer(socket=sock, auto_offset_reset="earliest") as c:
        tps = [TopicPartition(topic, i) for i in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        idle = 0
        while idle < 3:
            got = c.poll(timeout_ms=300, max_records=10_000)
            n = sum(len(v) for v in got.values())
            idle = idle + 1 if n == 0 else 0
            for records in got.values():
                out.extend(bytes(r.value) for r in records)
    return out


def free_of(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_reject_refuses_producers_reads_go_on_and_resume_at_high_watermark(small_fs, tmp_path):
    b = broker_on(small_fs, tmp_path, {"low_watermark": "1MiB", "high_watermark": "2MiB"})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("r", config={"segment_bytes": 256 * KiB, "on_disk_full": "reject"})
        extra = ballast(small_fs, 1536 * KiB)
        acked, err = produce_until_refused(b.socket, "r")
        assert acked > 100
        text = str(err)
        assert "low watermark" in text and "on_disk_full=reject" in text and "hint:" in text, text
        assert free_of(small_fs) > 512 * KiB, "refused before the filesystem was really full"

        # Reads go on while appends are refused.
        values = read_all(b.socket, "r")
        assert len(values) == acked
        assert values[-1].endswith(b"%08d" % (acked - 1))
        with Admin(socket=b.socket) as a:
            st = a.status()
        assert st["disk"]["state"] == "low" and st["disk"]["rejected_appends"] >= 1

        # Free space past the high watermark: appends resume within a check interval.
        extra.unlink()
        deadline = time.monotonic() + 10
        with Producer(socket=b.socket, acks="written", linger_ms=0) as p:
            while True:
                try:
                    meta = p.send("r", b"after").get(10)
                    break
                except DiskFullError:
                    assert time.monotonic() < deadline, "appends did not resume"
                    time.sleep(0.1)
        assert meta.offset == acked
        assert "disk space recovered" in b.log()
        assert "disk space low" in b.log()
    finally:
        b.cleanup()


def test_drop_oldest_keeps_accepting_and_deletes_oldest_segments(small_fs, tmp_path):
    b = broker_on(small_fs, tmp_path, {"low_watermark": "1MiB", "high_watermark": "1536KiB"})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("d", partitions=2,
                           config={"segment_bytes": 128 * KiB, "on_disk_full": "drop-oldest"})
        total = 12 * MiB // len(VALUE)  # three times the filesystem
        with Producer(socket=b.socket, acks="written", linger_ms=2) as p:
            futures = [p.send("d", VALUE + b"%08d" % i, partition=i % 2) for i in range(total)]
            p.flush()
            for f in futures:
                f.get(10)  # every append accepted
        with Admin(socket=b.socket) as a:
            st = a.status()
            parts = a.describe_topic("d").partitions
        assert st["disk"]["dropped_segments"] > 0
        assert st["disk"]["rejected_appends"] == 0
        assert all(p.log_start_offset > 0 for p in parts), parts
        assert sum(p.log_end_offset for p in parts) == total
        assert free_of(small_fs) > 512 * KiB
        # What is left is the newest data, readable from the new log start.
        values = read_all(b.socket, "d", partitions=2)
        assert values and len(values) < total
        assert VALUE + b"%08d" % (total - 1) in values
        assert "drop-oldest: deleted segment" in b.log()
    finally:
        b.cleanup()


def test_enospc_maps_to_disk_full_by_errno_and_the_partition_survives(small_fs, tmp_path):
    # Watermarks at zero: only the filesystem itself says no.
    b = broker_on(small_fs, tmp_path, {"low_watermark": 0, "high_watermark": 0})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("e", config={"segment_bytes": 512 * KiB})
        extra = ballast(small_fs, 1 * MiB)
        acked, err = produce_until_refused(b.socket, "e")
        assert "No space left on device" in str(err), str(err)
        assert err.code == DiskFullError.code
        with Admin(socket=b.socket) as a:
            parts = a.describe_topic("e").partitions
        assert parts[0].log_end_offset == acked  # the failed append left nothing behind
        assert len(read_all(b.socket, "e")) == acked
        # Room again (someone else's file goes): the same partition takes appends, densely.
        extra.unlink()
        with Producer(socket=b.socket, acks="durable") as p:
            assert p.send("e", b"room again").get(10).offset == acked
        assert "offline" not in b.log()
    finally:
        b.cleanup()
