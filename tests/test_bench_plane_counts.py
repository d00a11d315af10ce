"""bench/plane_counts.py: a real supervisor, producer and consumer; the counts it reports per
message are the supervisor's own (`edgebus status`), read around one paced case."""

from __future__ import annotations

import pytest

from bench import plane_counts
from bench import run as R
from edgebus.server.listeners import shm_plane


@pytest.mark.integration
@pytest.mark.skipif(not shm_plane.available(), reason="the C data plane is not built")
def test_plane_counts_reports_the_supervisors_counts_per_message() -> None:
    rows = plane_counts.run([1024], ["shm", "socket"], 2000, 1, 0.5)
    assert [(r["transport"], r["size"]) for r in rows] == [("shm", 1024), ("socket", 1024)]
    shm, sock = rows
    # every batch is one record or more: at most one batch in C per message
    assert 0 < shm["frames"] <= 1 and shm["sock_frames"] == 0
    assert 0 < sock["sock_frames"] <= 1 and sock["sock_frames"] == sock["frames"]
    # 1 KiB records at the default 4 KiB index interval: batches due an index entry stay in C
    assert shm["to_py_declined"] < 0.1
    assert all(x > 0 for x in shm["cpu"]) and R.RATE == 10_000  # the rate restored
    assert plane_counts.render_row(shm).startswith("| 0 | shm | 1024 |")
