"""The parked loop keeps a steady producer in C across index entries and long runs (issue 16,
sup27): an index entry due and a grant's 32nd batch since its sync-back each used to decline the
frame, which then went through Python's whole PRODUCE path (about one frame in 24 at 100 B with
the default 4 KiB index interval, and one in 32). Now C notes the entry for the sync-back to
write (Segment.index_entry) and keeps the last batches' places for the segment's recent lists,
so neither returns to Python; the files, records, answers and counters stay Python's, byte for
byte. Real supervisors, a raw shm link (tests/shm/test_c_plane.py RawLink)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus import Admin
from edgebus.server.listeners import shm_plane
from edgebus.testing import EmbeddedBroker
from tests.shm.test_c_park import paced_frames, park
from tests.shm.test_c_plane import counters, normalized_files, records

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shm_plane.available(),
                                 reason="the C data plane is not built (edgebus.shm._plane) or "
                                        "EDGEBUS_SHM_C_PLANE=0")]

# An index entry due every fourth batch or so (each ~70-90 B), no roll: every decline counted
# below would be an index entry or a full grant, nothing else.
CONFIG = {"segment_bytes": 1 << 20, "index_interval_bytes": 300, "max_message_bytes": 1000}
N = 300  # > 2 x RECENT_BATCHES (128): the recent lists are trimmed between sync-backs too


def test_index_entries_and_long_runs_stay_in_the_parked_wait(tmp_path: Path) -> None:
    on = EmbeddedBroker(tmp_path / "on").start()
    off = EmbeddedBroker(tmp_path / "off").start(env={"EDGEBUS_SHM_C_PLANE": "0"})
    try:
        for b in (on, off):
            with Admin(socket=b.socket, transport="socket") as a:
                a.create_topic("ix", 1, config=CONFIG)
        got_on = paced_frames(on.socket, "ix", N, 0.001)
        got_off = paced_frames(off.socket, "ix", N, 0.001)
        assert got_on == got_off
        files = normalized_files(on.data_dir, "ix")
        assert len(files["00000000000000000000.index"]) >= 8 * 50, "too few index entries to judge"
        assert files == normalized_files(off.data_dir, "ix")
        assert records(on.socket, "ix") == records(off.socket, "ix")
        assert counters(on.socket, "ix") == counters(off.socket, "ix")
        p = park(on.socket)
        assert p is not None and p["wakeups"] > N // 2, f"the parked loop served little: {p}"
        # (before: ~1 in 4 of the frames declined for an index entry, 1 in 32 for a full grant;
        # now at most one in EB_PLANE_INDEX_MAX = 256 entries between two sync-backs)
        assert p["to_python"]["declined"] <= 3, p
    finally:
        on.cleanup()
        off.cleanup()
