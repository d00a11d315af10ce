"""An index entry whose write fails is tried again at the next batch, in C as in Python
(docs/INVARIANTS.md 43; listeners/plane_sync.py `_index_entries`, Segment.note_batch).

A real failure: the time index's write needs a new page of a full 4 MiB tmpfs. The topic's index
interval gives an entry every other batch; records are sent one at a time until the time index
holds 341 entries (4,092 bytes: its 342nd needs a second page). Then the log's next pages are
allocated beyond its end (fallocate, FALLOC_FL_KEEP_SIZE: its size and bytes unchanged) and the
rest of the filesystem is filled, so that only the index's write fails: of the next two batches
the second is due an entry, which is skipped (the pair of index files cut back, a warning
logged). With room again, the next batch must carry the entry: Python's path leaves it due
after a failed write. Before tail28 the C data plane's sync-back skipped it and reset the
interval, so the next try came two batches later. Run with the plane on (every batch after the
first appended in C) and off (Python's path): the same index entries.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.server.listeners import shm_plane
from tests.service.test_disk import broker_on

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built")]

PAGE = 4096
TIME_ENTRY = 12  # docs/FORMAT.md: a time-index entry (i64 time, i32 relative offset)
OFFSET_ENTRY = 8  # an offset-index entry (i32 relative offset, i32 position)
FULL = PAGE // TIME_ENTRY  # 341 entries: the next needs the file's second page
VALUE = b"r" * 200  # a batch of ~270 bytes: an entry every other batch at the interval below
INTERVAL = 400


def _keep_pages(path: Path, n: int) -> None:
    """Allocate the next n pages past the end of `path` without changing its size or bytes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fd = os.open(path, os.O_WRONLY)
    try:
        if libc.fallocate(fd, 1, path.stat().st_size, n * PAGE) != 0:  # FALLOC_FL_KEEP_SIZE
            e = ctypes.get_errno()
            pytest.skip(f"fallocate(KEEP_SIZE) failed here: {os.strerror(e)}")
    finally:
        os.close(fd)


def _fill(fs: Path) -> Path:
    """A file taking every free page of the filesystem."""
    p = fs / "ballast"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, PAGE):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return p


def _offsets(path: Path, entry: int, at: int) -> list[int]:
    """The relative offsets in an index file (each entry `entry` bytes, the offset at `at`)."""
    data = path.read_bytes()
    return [struct.unpack_from("<i", data, k + at)[0] for k in range(0, len(data), entry)]


@pytest.mark.parametrize("plane", ["1", "0"], ids=["c-plane", "python"])
def test_a_failed_index_entry_is_tried_at_the_next_batch(small_fs: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         plane: str) -> None:
    monkeypatch.setenv("EDGEBUS_SHM_C_PLANE", plane)  # the embedded supervisor's environment
    b = broker_on(small_fs, tmp_path, {"low_watermark": 0, "high_watermark": 0})
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("ix", 1, config={"index_interval_bytes": INTERVAL})
            seg = small_fs / "data" / "ix-0"
            tix, oix, log = (seg / f"{0:020d}.{ext}" for ext in ("timeindex", "index", "log"))
            with Producer(socket=b.socket, transport="shm", acks="written", linger_ms=0) as p:

                def send() -> int:
                    offset = p.send("ix", VALUE, partition=0).get(10).offset
                    a.status()  # a Python turn of the supervisor: the C call's sync-back is done
                    return offset

                n = 0
                while not tix.exists() or tix.stat().st_size < FULL * TIME_ENTRY:
                    send()
                    n += 1
                    assert n < 4 * FULL, "the time index never reached a page's worth"
                assert tix.stat().st_size == FULL * TIME_ENTRY
                frames = a.status()["shm_plane"]["frames"]
                _keep_pages(log, 2)  # the next batches' room in the log, and only there
                ballast = _fill(small_fs)
                send()  # not due an entry
                failed = send()  # due one: its time-index write needs a page there is not
                assert tix.stat().st_size == FULL * TIME_ENTRY
                assert len(_offsets(oix, OFFSET_ENTRY, 0)) == FULL  # the pair cut back
                assert f"index entry for offset {failed} skipped" in b.log()
                ballast.unlink()
                retried = send()
            assert retried == failed + 1
            # the entry the failed write left due: at the very next batch
            assert _offsets(tix, TIME_ENTRY, 8)[-1] == retried
            assert _offsets(oix, OFFSET_ENTRY, 0)[-1] == retried
            # the last three batches appended in C (or, plane off, none)
            assert a.status()["shm_plane"]["frames"] - frames == (3 if plane == "1" else 0)
    finally:
        b.stop()
        b.cleanup()
