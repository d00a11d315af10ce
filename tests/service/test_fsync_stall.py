"""A dying SD card stalls one fsync for seconds or minutes: durable producers wait, and this used
to show nowhere. Here the stall is real: the data directory is an ext4 on a loop device whose
image lies on a second ext4 (also a loop device) that `fsfreeze` freezes, so the inner
filesystem's writes to its "card" block until it is thawed while the supervisor's page-cache
writes go on. `edgebus status`, the metrics and the log must say so, and the stall's end too.
Also: with the watermarks at 0, a full disk said `disk state: ok`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.errors import DiskFullError
from edgebus.server.fsyncwatch import STALL_WARN_S
from edgebus.testing import EmbeddedBroker, scrape_metrics, wait_for

from .conftest import NotifySocket, loop_ext4, status_text
from .test_disk import KiB, MiB, ballast, produce_until_refused

pytestmark = pytest.mark.integration


@pytest.fixture
def freezable_card(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Yields (inner mount point: the data directory's filesystem, outer mount point: what
    `fsfreeze -f` stalls)."""
    outer, inner = tmp_path / "outer", tmp_path / "card"
    outer_loop = loop_ext4(tmp_path / "outer.img", outer, 96 * MiB)
    inner_loop = None
    try:
        inner_loop = loop_ext4(outer / "card.img", inner, 48 * MiB)
        yield inner, outer
    finally:
        subprocess.run(["fsfreeze", "-u", str(outer)], capture_output=True)  # never left frozen
        subprocess.run(["umount", "-l", str(inner)], capture_output=True)
        if inner_loop:
            subprocess.run(["losetup", "-d", inner_loop], capture_output=True)
        subprocess.run(["umount", "-l", str(outer)], capture_output=True)
        subprocess.run(["losetup", "-d", outer_loop], capture_output=True)


def _disk_state_line(text: str) -> str:
    return next(ln for ln in text.splitlines() if ln.startswith("disk state"))


def test_a_stalled_fsync_is_shown_warned_and_its_end_logged(
        freezable_card: tuple[Path, Path], tmp_path: Path, notify_socket: NotifySocket) -> None:
    card, outer = freezable_card
    b = EmbeddedBroker(tmp_path / "broker", config={
        "data_dir": str(card / "data"),
        # No checkpoint during the test: the stalled fsync is the producer's.
        "log": {"flush_interval_ms": 100, "checkpoint_interval_ms": 600_000},
        "metrics": {"listen": "127.0.0.1:0"},
    }).start(env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000"})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("stall", partitions=1)
        with Producer(socket=b.socket, acks="durable") as p:
            p.send("stall", b"before").get(10)
            assert scrape_metrics(b.metrics_port)["edgebus_fsync_in_progress_seconds"] == 0
            assert "STALLED" not in status_text(b)

            subprocess.run(["fsfreeze", "-f", str(outer)], check=True)
            try:
                fut = p.send("stall", b"during")
                wait_for(lambda: scrape_metrics(b.metrics_port)
                         ["edgebus_fsync_in_progress_seconds"] >= 1, 30, "the stall metric")
                text = status_text(b)
                assert "disk state:" in text and "STALLED: fsync of stall-0 running for" in text
                wait_for(lambda: "the fsync of stall-0 has been running for" in b.log(),
                         STALL_WARN_S + 30, "the stall's WARNING")
                wait_for(lambda: any("fsync of stall-0 STALLED for" in m
                                     for _t, m in notify_socket.lines("STATUS=")), 30,
                         "the systemd status line")
                assert not fut.done()  # durable: not acknowledged while the card stalls
            finally:
                subprocess.run(["fsfreeze", "-u", str(outer)], check=True)
            assert fut.get(30) is not None
        wait_for(lambda: "the fsync of stall-0 ended after" in b.log(), 30, "the end's line")
        log = b.log()
        assert log.count("has been running for") == 1, log
        assert scrape_metrics(b.metrics_port)["edgebus_fsync_in_progress_seconds"] == 0
        assert "STALLED" not in status_text(b)
    finally:
        b.kill9()
        b.cleanup()


def test_a_full_disk_with_watermarks_off_says_full(small_fs: Path, tmp_path: Path,
                                                   notify_socket: NotifySocket) -> None:
    b = EmbeddedBroker(tmp_path / "broker", config={
        "data_dir": str(small_fs / "data"),
        "disk": {"check_interval_ms": 200, "low_watermark": 0, "high_watermark": 0},
        "log": {"flush_interval_ms": 100},
    }).start(env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "1000000"})
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("f", config={"segment_bytes": 512 * KiB})
        assert "FULL" not in _disk_state_line(status_text(b))
        ballast(small_fs, 1 * MiB)
        produce_until_refused(b.socket, "f")
        with Producer(socket=b.socket, acks="written", linger_ms=0) as p, \
                pytest.raises(DiskFullError):
            p.send("f", b"x" * 1000).get(10)
        line = _disk_state_line(status_text(b))
        assert "FULL" in line and "appends refused" in line, line
        wait_for(lambda: any(m.startswith("STATUS=") and "(FULL)" in m
                             for _t, m in notify_socket.lines("STATUS=")), 30,
                 "the systemd status line")
    finally:
        b.cleanup()
