"""Small file helpers for the log: whole writes on fds, atomic replace, errno -> error mapping."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from edgebus.errors import DiskFullError, EdgebusError, StorageError

FILE_MODE = 0o640
DIR_MODE = 0o750
# Detected by errno, never by message text.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until every byte is written (a regular file may take a short write)."""
    mv = memoryview(data)
    done = 0
    n = len(mv)
    while done < n:
        w = os.write(fd, mv[done:])
        if w <= 0:
            raise OSError(errno.EIO, "write made no progress")
        done += w


def write_rest(fd: int, data: bytes | bytearray | memoryview, done: int) -> None:
    """The rest of `data` after the caller's own first os.write took `done` bytes of it (the
    caller makes that call itself so that a whole write, nearly always, costs no further one)."""
    if done <= 0:
        raise OSError(errno.EIO, "write made no progress")
    write_all(fd, memoryview(data)[done:])


def errno_text(err: int | None) -> str:
    """"EIO (Input/output error)": the errno's name, which an operator can search for, and its
    text (an errno this system does not name: its number)."""
    if not err:
        return "no errno"
    return f"{errno.errorcode.get(err, f'errno {err}')} ({os.strerror(err)})"


def storage_error(err: OSError, what: str) -> EdgebusError:
    """DiskFullError for ENOSPC/EDQUOT, StorageError for any other OSError."""
    if err.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"{what}: {err.strerror or err}")
    return StorageError(f"{what}: {err}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except OSError:
        unlink_quiet(tmp)  # a partial copy (ENOSPC) would only hold on to the space that ran out
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_file(path: Path, limit: int) -> bytes:
    """The whole file, refusing anything larger than `limit` bytes (bounded input)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise StorageError(f"{path} is {size} bytes, larger than the {limit}-byte limit")
        chunks = []
        pos = 0
        while True:
            chunk = os.pread(fd, max(size - pos, 65536), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
            if pos > limit:
                raise StorageError(f"{path} grew past the {limit}-byte limit while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def unlink_quiet(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
