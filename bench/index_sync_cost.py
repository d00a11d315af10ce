"""CPU of the C data plane's sync-back writing the index entries C noted (plane_sync.py
`_index_entries`, tail28): in one write per file against one entry at a time as
Segment.index_entry writes them (before tail28), for 8, 22 and 64 entries (a sync-back at 1 KiB
and 10,000/s after a parked wait carried ~8-22, up to EB_PLANE_INDEX_MAX), on real index files
in a temporary directory. Medians of 200 calls, thread CPU time, three alternated runs each.

    python bench/index_sync_cost.py
"""
import os, tempfile, time
from pathlib import Path
from types import SimpleNamespace
from edgebus.log.index import OffsetIndex, TimeIndex
from edgebus.server.listeners import plane_sync as PS, shm_plane
shm_plane.load()
ffi = shm_plane._ffi
d = Path(tempfile.mkdtemp())
class Seg:  # the two members _index_entries uses, and Segment.index_entry itself
    base_offset = 0
    def __init__(self):
        self.index = OffsetIndex(d / "a.index"); self.timeindex = TimeIndex(d / "a.timeindex")
        self.index.open_for_append(); self.timeindex.open_for_append()
        self.bytes_since_index = 0
from edgebus.log.segment import Segment
Seg.index_entry = Segment.index_entry
seg = Seg()
g = SimpleNamespace(p=SimpleNamespace(_log=None, name="x"))
c = ffi.new("eb_grant *")
c.index_interval = 4096
rel = 0
def fill(n):
    global rel
    for i in range(n):
        c.ix_rel[i] = rel; c.ix_pos[i] = rel * 1100; c.ix_time[i] = 1700000000000 + rel; rel += 4
    c.ix_n = n
def one_by_one(g, seg, c, ffi):  # the loop before tail28
    for i in range(c.ix_n):
        seg.index_entry(c.ix_rel[i], c.ix_pos[i], c.ix_time[i])
    c.ix_n = 0
for n in (8, 22, 64):
    res = {}
    for name, fn in (("batched", PS._index_entries), ("per-entry", one_by_one)) * 3:
        ts = []
        for k in range(200):
            fill(n)
            t = time.thread_time_ns(); fn(g, seg, c, ffi); ts.append(time.thread_time_ns() - t)
        ts.sort(); res.setdefault(name, []).append(ts[len(ts)//2] / 1000)
    print(n, {k: [round(x, 1) for x in v] for k, v in res.items()})
