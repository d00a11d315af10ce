"""Fixtures for tests/service: a notify socket playing systemd, a small tmpfs, an ext4 on a loop
device, and `edgebus status` as text."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebus.log.manager import LogManager
from edgebus.testing import EmbeddedBroker


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[LogManager]:
    """A real LogManager in a temporary data directory (the disk guard's tests)."""
    m = LogManager(tmp_path / "data")
    m.open()
    yield m
    m.close()


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket. Every datagram is kept with the
    monotonic time it arrived; `on_ready` runs in the receiving thread the moment READY=1 comes."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ebn-", dir="/tmp"))  # sun_path is short
        self.path = str(self.dir / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.on_ready = None
        self.ready_result: object = None
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode().splitlines():
                if line == "READY=1" and self.on_ready is not None:
                    self.ready_result = self.on_ready()
                with self._lock:
                    self.messages.append((now, line))

    def lines(self, prefix: str = "") -> list[tuple[float, str]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def wait_for(self, line: str, timeout: float = 30.0, after: float = 0.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in self.lines():
                if m == line and t >= after:
                    return t
            time.sleep(0.01)
        raise AssertionError(f"no {line!r} within {timeout} s; got {self.lines()}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    n = NotifySocket()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (root needed); skipped where mounting is impossible."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "tests/service/test_disk_unit.py covers the policies with a fake probe")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def loop_ext4(img: Path, mnt: Path, size: int, options: str = "") -> str:
    """An ext4 of `size` bytes in the file `img` on a loop device, mounted at `mnt` (made here)
    with mount `options`; the device. Skips the test where that cannot be done (root needed);
    the caller unmounts and detaches it."""
    with open(img, "wb") as f:
        f.truncate(size)
    mk = subprocess.run(["mkfs.ext4", "-q", str(img)], capture_output=True, text=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if mk.returncode != 0 or dev.returncode != 0:
        pytest.skip(f"cannot make a loop device here ({(mk.stderr + dev.stderr).strip()}); "
                    "needs root, mkfs.ext4 and losetup")
    loop = dev.stdout.strip()
    mnt.mkdir()
    r = subprocess.run(["mount", *(["-o", options] if options else []), loop, str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        pytest.skip(f"cannot mount ext4 on {loop}: {r.stderr.strip()}")
    return loop


def status_text(b: EmbeddedBroker) -> str:
    """What `edgebus status` prints for the supervisor `b`."""
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                           b.socket], capture_output=True, text=True, check=True).stdout
