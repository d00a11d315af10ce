"""An SD card that goes read-only under a running supervisor: ext4 mounted errors=remount-ro, on
a loop device, made to fail with the kernel's own trigger (/sys/fs/ext4/DEV/trigger_fs_error).
What the operator sees must say so: `edgebus status` (READ-ONLY, the offline partition), the
metrics, the systemd status line; and the checkpoint that fails every interval must not flood
the log (it used to write one ERROR line per interval, 720 an hour)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import StorageError
from edgebus.testing import EmbeddedBroker, scrape_metrics, wait_for

from .conftest import loop_ext4, status_text

pytestmark = pytest.mark.integration


@pytest.fixture
def ext4_remount_ro(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 32 MiB ext4 on a loop device, mounted errors=remount-ro (root needed); yields the mount
    point and the device's name under /sys/fs/ext4."""
    mnt = tmp_path / "card"
    loop = loop_ext4(tmp_path / "card.img", mnt, 32 * 1024 * 1024, "errors=remount-ro")
    try:
        name = os.path.basename(loop)
        if not os.path.exists(f"/sys/fs/ext4/{name}/trigger_fs_error"):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
            pytest.skip("this kernel has no /sys/fs/ext4/*/trigger_fs_error")
        yield mnt, name
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)


def test_filesystem_gone_read_only_is_shown_and_logged_briefly(
        ext4_remount_ro: tuple[Path, str], tmp_path: Path) -> None:
    mnt, dev = ext4_remount_ro
    b = EmbeddedBroker(tmp_path / "broker", config={
        "data_dir": str(mnt / "data"),
        "disk": {"check_interval_ms": 100},
        "log": {"flush_interval_ms": 100, "checkpoint_interval_ms": 50},
        "metrics": {"listen": "127.0.0.1:0"},
    }).start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("card", partitions=1)
        with Producer(socket=b.socket, acks="durable") as p:
            for i in range(10):
                p.send("card", b"before-%d" % i).get(10)
        m = scrape_metrics(b.metrics_port)
        assert m["edgebus_disk_read_only"] == 0 and m["edgebus_partitions_offline"] == 0
        assert "READ-ONLY" not in status_text(b)

        Path(f"/sys/fs/ext4/{dev}/trigger_fs_error").write_text("edgebus test: card failed\n")
        with Producer(socket=b.socket, acks="written") as p, pytest.raises(StorageError) as e:
            p.send("card", b"after").get(10)
        assert "read-only" in str(e.value).lower()

        wait_for(lambda: scrape_metrics(b.metrics_port)["edgebus_disk_read_only"] == 1, 20,
                 "the read-only gauge")
        assert scrape_metrics(b.metrics_port)["edgebus_partitions_offline"] == 1
        text = status_text(b)
        assert "READ-ONLY filesystem" in text
        assert "offline:" in text and "card-0" in text
        wait_for(lambda: "is read-only: appends and fsyncs fail" in b.log(), 20,
                 "the line saying the filesystem is read-only")
        # Many more disk checks pass (the metrics read the guard's state each time): the state
        # is logged once, not once per check.
        checks = scrape_metrics(b.metrics_port)["edgebus_process_cpu_seconds_total"]
        wait_for(lambda: scrape_metrics(b.metrics_port)["edgebus_process_cpu_seconds_total"]
                 > checks + 0.05, 30, "the supervisor to run on")
        assert b.log().count("is read-only: appends and fsyncs fail") == 1
    finally:
        b.kill9()
        b.cleanup()
