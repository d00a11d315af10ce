"""The C data plane appends a batch that is due a sparse index entry (plane.c idx_*: the entry
noted in the grant, written by Python's sync-back right after the call) instead of handing it to
Python: with 1 KiB records and the default 4 KiB index interval that was every fourth batch, and
at a paced 10,000/s, behind the Python turn, the next ones queued (issue 16's 1 KiB latency).
Two real supervisors, the plane on (the default) and off (EDGEBUS_SHM_C_PLANE=0), must write
the same log, .index and .timeindex files and give a consumer the same records."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, TopicPartition
from edgebus.server.listeners import shm_plane
from edgebus.testing import EmbeddedBroker
from tests.server.test_socket_plane import RawSock, socket_frames
from tests.shm.test_c_plane import (
    OFF,
    RawLink,
    batch,
    normalized_files,
    plane_frames,
    produce_frame,
    records,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "EDGEBUS_SHM_C_PLANE=0")]

N = 120
VALUE = b"k" * 1024


def _send_one_by_one(sock: str, topic: str, transport: str = "shm") -> None:
    """N one-record 1 KiB batches, each answered before the next goes (one per wake-up or
    socket read), on a raw ring link or a raw Unix-socket connection."""
    if transport == "socket":
        conn = RawSock(sock)
        try:
            for i in range(N):
                corr = 10_000 + i
                conn.send(produce_frame(corr, topic, 1, batch([VALUE + b"%d" % i])))
                conn.wait({corr})
            assert [(c, e) for c, e, _ in conn.frames] == [(10_000 + i, 0) for i in range(N)]
        finally:
            conn.close()
        return
    link = RawLink(sock)
    try:
        for i in range(N):
            corr = 10_000 + i
            link.send([produce_frame(corr, topic, 1, batch([VALUE + b"%d" % i]))])
            link.wait({corr})
            assert link.answers[corr][0] == 0
    finally:
        link.close()


@pytest.mark.parametrize("transport", ["shm", "socket"])
def test_batches_due_an_index_entry_are_appended_in_c_with_the_same_files(
        tmp_path: Path, transport: str) -> None:
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env=OFF)
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("idx", 1)  # the default index interval, 4096 bytes
        frames0 = plane_frames(on.socket)
        _send_one_by_one(on.socket, "idx", transport)
        _send_one_by_one(off.socket, "idx", transport)
        # Only the segment's first batch goes to Python (its first append time is set there;
        # a socket connection's grant also comes after Python's path appended a few of its
        # frames); before, every batch due an entry (about one in four) did too: 90 of 120.
        took = plane_frames(on.socket) - frames0
        assert took == N - 1 if transport == "shm" else N - 4 <= took <= N - 1
        assert plane_frames(off.socket) == 0
        assert socket_frames(on.socket) == (took if transport == "socket" else 0)
        files_on = normalized_files(on.data_dir, "idx")
        assert files_on == normalized_files(off.data_dir, "idx")
        index = next(v for k, v in files_on.items() if k.endswith(".index"))
        assert len(index) // 8 >= N // 5  # entries were written (8 bytes each)
        assert records(on.socket, "idx") == records(off.socket, "idx")
    finally:
        on.cleanup()
        off.cleanup()


def test_index_entries_written_by_the_sync_back_serve_lookups_after_a_kill9(tmp_path: Path) -> None:
    """Offsets looked up through the entries the sync-back wrote, before and after kill -9 and a
    restart (the index files loaded as they are, checked against the log)."""
    b = EmbeddedBroker(tmp_path / "b").start()
    try:
        with Admin(socket=b.socket, transport="socket") as a:
            a.create_topic("idx", 1)
        _send_one_by_one(b.socket, "idx")

        def from_offset(offset: int) -> list[int]:
            c = Consumer(socket=b.socket, transport="shm")
            tp = TopicPartition("idx", 0)
            c.assign([tp])
            c.seek(tp, offset)
            got: list[int] = []
            deadline = time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                for recs in c.poll(500).values():
                    got += [r.offset for r in recs if r.value == VALUE + b"%d" % r.offset]
            c.close()
            return got[:3]

        before = [from_offset(o) for o in (0, 37, 77, N - 3)]
        assert before == [[o, o + 1, o + 2] for o in (0, 37, 77, N - 3)]
        b.kill9()
        b.restart()
        assert [from_offset(o) for o in (0, 37, 77, N - 3)] == before
    finally:
        b.cleanup()
