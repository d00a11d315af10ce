"""fsync tickets, offline partitions, and write failures on real files."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from logtest_helpers import append, log_files, make_batch, open_partition, read_all, values_of

from edgebus.errors import DiskFullError, StorageError
from edgebus.log import SyncTicket, TopicConfig

pytestmark = pytest.mark.unit

CFG = TopicConfig(segment_bytes=1000, index_interval_bytes=100)


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_sync_advances_the_recovery_point(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    assert p.begin_sync() is not None  # the new segment file and directory
    for i in range(3):
        append(p, values_of(2, 10, i * 2), 1_000 + i)
    before = p.recovery_point()
    t = p.begin_sync()
    assert t is not None and t.next_offset == 6 and p.synced_offset == before.next_offset
    fds = list(t.fds)
    t.run()
    assert not any(fd_is_open(fd) for fd in fds), "run() closes the dups"
    p.complete_sync(t)
    rp = p.recovery_point()
    assert (rp.segment_base, rp.position, rp.next_offset) == (0, p.size_bytes, 6)
    assert rp.max_append_time == 1_002 and p.synced_offset == 6
    assert p.begin_sync() is None, "nothing written since the last sync"


def test_ticket_covers_rolled_segments_and_the_directory(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    t = p.begin_sync()
    assert t is not None
    t.run()
    p.complete_sync(t)
    for i in range(30):
        append(p, values_of(3, 20, i * 3), 1_000 + i)
    nsegs = p.segment_count
    assert nsegs > 3
    t = p.begin_sync()
    assert t is not None and t.covers_dir
    assert len(t.segment_bases) == nsegs
    # .log, .index and .timeindex of each rolled segment, the active .log (its index files are
    # fsynced only at close), and the directory.
    assert len(t.fds) == 3 * (nsegs - 1) + 1 + 1
    t.run()
    p.complete_sync(t)
    assert p.recovery_point().segment_base == int(log_files(p.path)[-1].name[:20])
    assert p.begin_sync() is None


def test_appends_during_a_sync_need_the_next_one(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    append(p, [b"a"], 1)
    t1 = p.begin_sync()
    assert t1 is not None
    append(p, [b"b"], 2)  # lands while t1 runs on the helper thread
    t1.run()
    p.complete_sync(t1)
    assert p.synced_offset == 1
    t2 = p.begin_sync()
    assert t2 is not None and t2.next_offset == 2
    t2.run()
    p.complete_sync(t2)
    assert p.synced_offset == 2


def test_out_of_order_completion_never_moves_back(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    append(p, [b"a"], 1)
    t1 = p.begin_sync()
    append(p, [b"b"], 2)
    t2 = p.begin_sync()
    assert t1 is not None and t2 is not None
    t2.run()
    t1.run()
    p.complete_sync(t2)
    p.complete_sync(t1)
    assert p.synced_offset == 2


def test_retention_during_a_sync(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=300, retention_ms=10))
    for i in range(10):
        append(p, values_of(3, 20, i * 3), 1_000)
    t = p.begin_sync()
    assert t is not None
    p.apply_retention(now_ms=10**6)  # deletes every segment the ticket covers
    assert p.log_start_offset == p.log_end_offset == 30
    t.run()  # fsync of unlinked files is fine
    p.complete_sync(t)
    rp = p.recovery_point()
    assert rp.segment_base == 30 and rp.log_start_offset == 30
    t = p.begin_sync()
    assert t is not None  # the new segment file and the deletions are not synced yet
    t.run()
    p.complete_sync(t)
    p.close()
    q = open_partition(tmp_path / "t-0", p.config, p.recovery_point())
    assert (q.log_start_offset, q.log_end_offset) == (30, 30)


def test_failed_sync_takes_the_partition_offline(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    append(p, [b"a"], 1)
    good = p.begin_sync()
    assert good is not None
    good.run()
    p.complete_sync(good)
    before = p.recovery_point()
    append(p, [b"b"], 2)
    t = p.begin_sync()
    assert t is not None
    os.close(t.fds[0])  # a real fsync failure: EBADF
    with pytest.raises(OSError) as info:
        t.run()
    assert info.value.errno == errno.EBADF
    p.fail_sync(t, info.value)
    assert p.offline
    with pytest.raises(StorageError, match="offline"):
        append(p, [b"c"], 3)
    assert p.begin_sync() is None
    rp = p.recovery_point()
    assert (rp.segment_base, rp.position, rp.next_offset) == (
        before.segment_base, before.position, before.next_offset,
    ), "a failed fsync never advances the synced point"
    assert [v for _, v in read_all(p)] == [b"a", b"b"], "reads still work"
    p.close()  # no fsync attempted, no error
    q = open_partition(tmp_path / "t-0", CFG, before)
    assert not q.offline and q.log_end_offset == 2


def test_completion_after_a_failure_is_ignored(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", CFG)
    append(p, [b"a"], 1)
    t1 = p.begin_sync()
    t2 = p.begin_sync()
    assert t1 is not None and t2 is not None
    p.fail_sync(t1, OSError(errno.EIO, "I/O error"))
    t2.run()
    p.complete_sync(t2)
    assert p.synced_offset == 0


def test_run_closes_every_fd_and_raises_the_first_error(tmp_path: Path) -> None:
    r1, w1 = os.pipe()
    f = os.open(tmp_path / "x", os.O_CREAT | os.O_RDWR)
    bad = os.dup(f)
    os.close(bad)
    t = SyncTicket([f, bad, r1], 0, 0, 0, 0)
    with pytest.raises(OSError):
        t.run()
    assert not fd_is_open(f) and not fd_is_open(r1)
    os.close(w1)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE makes writes past `limit` short, then EFBIG: a real failing disk write."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_short_then_failed_write_leaves_no_partial_batch(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    p = open_partition(d, TopicConfig(segment_bytes=100_000))
    append(p, values_of(3), 1)
    size = p.size_bytes
    with file_size_limit(size + 50), pytest.raises(StorageError, match="File too large"):
        append(p, values_of(10, 30), 2)
    assert log_files(d)[0].stat().st_size == size
    assert p.offline and p.log_end_offset == 3
    p.close()
    q = open_partition(d, p.config, None)
    assert q.recovery_report is not None and not q.recovery_report.anything_cut
    assert append(q, [b"next"], 3)[0] == 3


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_retriable_and_clean(tiny_fs: Path) -> None:
    p = open_partition(tiny_fs / "t-0", TopicConfig(segment_bytes=16 * 1024, retention_ms=-1))
    written = 0
    with pytest.raises(DiskFullError):
        for i in range(1000):
            append(p, values_of(8, 200, i * 8), i)
            written += 8
    assert not p.offline
    assert p.log_end_offset == written
    assert [v for _, v in read_all(p)] == [v for i in range(written // 8)
                                           for v in values_of(8, 200, i * 8)]
    assert p.size_bytes == sum(f.stat().st_size for f in log_files(p.path))
    # Drop-oldest frees space; appending works again, densely.
    assert p.delete_oldest_segment()
    b = make_batch([b"after"])
    from edgebus.batch import validate_batch

    assert p.append(b, validate_batch(b), 10**6)[0] == written
    p.close()
