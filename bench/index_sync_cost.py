"""CPU of the C data plane's sync-back writing the index entries C noted (plane_sync.py
`_index_entries`, tail28): in one write per file against one entry at a time as
Segment.index_entry writes them (before tail28), for 8, 22 and 64 entries (a sync-back at 1 KiB
and 10,000/s after a parked wait carried ~8-22, up to EB_PLANE_INDEX_MAX), on real index files
in a temporary directory. Medians of 200 calls, thread CPU time, three alternated runs each.

    python -m bench.index_sync_cost
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgebus.log.index import OffsetIndex, TimeIndex
from edgebus.log.segment import Segment
from edgebus.server.listeners import plane_sync, shm_plane


class _Seg:
    """What `_index_entries` uses of a Segment: its two index files and Segment.index_entry."""

    base_offset = 0
    index_entry = Segment.index_entry

    def __init__(self, d: Path) -> None:
        self.index = OffsetIndex(d / "s.index")
        self.timeindex = TimeIndex(d / "s.timeindex")
        self.index.open_for_append()
        self.timeindex.open_for_append()
        self.bytes_since_index = 0


def _one_by_one(g: Any, seg: Any, c: Any, ffi: Any) -> None:
    """The sync-back's loop before tail28."""
    for i in range(c.ix_n):
        seg.index_entry(c.ix_rel[i], c.ix_pos[i], c.ix_time[i])
    c.ix_n = 0


def main() -> None:
    if not shm_plane.load():
        raise SystemExit("the C data plane is not built")
    ffi = shm_plane._ffi
    d = Path(tempfile.mkdtemp(prefix="eb-ixcost-"))
    try:
        seg = _Seg(d)
        g = SimpleNamespace(p=SimpleNamespace(_log=None, name="bench"))
        c = ffi.new("eb_grant *")
        c.index_interval = 4096
        rel = [0]

        def fill(n: int) -> None:
            for i in range(n):
                r = rel[0]
                c.ix_rel[i], c.ix_pos[i], c.ix_time[i] = r, r * 1100, 1_700_000_000_000 + r
                rel[0] += 4
            c.ix_n = n

        ways: list[tuple[str, Callable[..., None]]] = [
            ("one write per file", plane_sync._index_entries), ("one entry at a time", _one_by_one)]
        for n in (8, 22, 64):
            res: dict[str, list[float]] = {}
            for name, fn in ways * 3:
                ts = []
                for _ in range(200):
                    fill(n)
                    t = time.thread_time_ns()
                    fn(g, seg, c, ffi)
                    ts.append(time.thread_time_ns() - t)
                ts.sort()
                res.setdefault(name, []).append(ts[len(ts) // 2] / 1000)
            print(f"{n} entries: " + "; ".join(
                f"{k} {', '.join(f'{v:.1f}' for v in vs)} us" for k, vs in res.items()))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
