"""The supervisor's garbage collector (issue 16, tail latency).

What the start leaves on the heap (the modules, the config, the partitions' structures, recovery's
survivors) lives as long as the process; CPython's full collection would still walk all of it,
every time, on the event loop: a pause of milliseconds that every record in flight waits behind.
`freeze_after_start` moves it into the permanent generation once the supervisor listens (after
server/slim.py's collections), so a later full collection walks only what traffic made since.
Frozen objects are still freed by reference counting. What the freeze gives up: a reference cycle
among frozen objects that becomes garbage later (the structures of a partition recovered at the
start whose topic is deleted) is never collected. That is bounded by the start's own heap, memory
the supervisor held anyway, and cannot grow with traffic; the start's garbage cycles were
collected just before the freeze (server/slim.py).

`snapshot` is the status document's `gc` entry: the objects frozen and each generation's
collections so far, so an operator (and tests/server/test_gc_freeze.py) can see both.
"""

from __future__ import annotations

import gc
from typing import Any

from edgebus import tuning


def freeze_after_start() -> int:
    """Freeze the heap as it is now (EDGEBUS_GC_FREEZE=0: leave it); returns the objects frozen."""
    if tuning.GC_FREEZE:
        gc.freeze()
    return gc.get_freeze_count()


def snapshot() -> dict[str, Any]:
    """Objects frozen, and per generation (0, 1, 2) the collections and objects collected."""
    stats = gc.get_stats()
    return {"frozen": gc.get_freeze_count(),
            "collections": [s["collections"] for s in stats],
            "collected": [s["collected"] for s in stats]}
