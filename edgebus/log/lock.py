"""The data directory lock: one supervisor per data directory.

flock() on `data_dir/.lock`, held for the life of the process (the kernel drops it when the process
dies, even by kill -9, so a stale lock never blocks a restart). The holder's pid is written into the
file only so that the error seen by a second supervisor can name it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from edgebus.errors import DataDirLockedError
from edgebus.log.fileutil import FILE_MODE, storage_error

LOCK_FILE = ".lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as e:
            raise storage_error(e, f"opening the lock file {self.path}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirLockedError(
                    f"data directory {self.data_dir} is in use by process {holder} "
                    f"(lock file {self.path})"
                ) from None
            raise storage_error(e, f"locking {self.path}") from e
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is informational; the flock is what excludes
        self.fd = fd

    def release(self) -> None:
        # The file stays: unlinking a lock file races with a process about to lock it.
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
