"""What each process of a bench/hops.py case records: its stamps (CLOCK_MONOTONIC, kept in memory
as tuples of hops_analysis._EV's fields, written to EDGEBUS_HOPS_DIR at exit) and its
collections; and, in the supervisor, the wrapped methods that stamp. The supervisor runs this
file (`python bench/hops_record.py --serve CONFIG`) so that its methods are wrapped before it
serves."""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.hops_analysis import _EV, GCA, GCX, SD, SE, SF, SH, SP, SQ, SR, SW
from bench.paced_pair import gc_spans

_events: list[tuple[int, int, int, int, int]] = []
_now = time.monotonic_ns


_packed: list[bytes] = []  # stamps already packed (_full_collection_cost)


def _pack() -> None:
    _packed.append(b"".join(_EV.pack(*e) for e in _events))
    _events.clear()


def dump(role: str) -> None:
    d = os.environ.get("EDGEBUS_HOPS_DIR")
    _pack()
    if not d or not any(_packed):
        return
    with open(Path(d) / f"{role}-{os.getpid()}.ev", "wb") as f:
        f.write(b"".join(_packed))
    _packed.clear()


def _gc_hook() -> None:
    gc_spans(lambda t0, t1, gen: _events.append((GCA, t0, gen, t1 - t0, 0)))


# --- supervisor ----------------------------------------------------------------------------------
def _patch_supervisor() -> None:
    from edgebus.server import dispatch as D
    from edgebus.server.handlers import standing as S
    from edgebus.server.listeners import shm as L
    from edgebus.server.listeners import stream as ST

    orig_dispatch = D.Dispatcher.dispatch_frame

    def dispatch_frame(self: Any, conn: Any, key: int, ver: int, corr: int, body: Any) -> None:
        _events.append((SD, _now(), conn.id, key, corr))
        orig_dispatch(self, conn, key, ver, corr, body)
        _events.append((SE, _now(), conn.id, key, corr))

    D.Dispatcher.dispatch_frame = dispatch_frame  # type: ignore[method-assign,assignment]

    orig_queue = ST.Connection.queue

    def queue(self: Any, data: bytes) -> None:
        corr = int.from_bytes(bytes(data[4:8]), "little", signed=True)
        _events.append((SQ, _now(), self.id, corr, 0))
        orig_queue(self, data)

    ST.Connection.queue = queue  # type: ignore[method-assign]

    orig_link_queue = L.ShmLink.queue

    def link_queue(self: Any, data: bytes) -> bool:
        n = len(self.pending)
        r: bool = orig_link_queue(self, data)
        if len(self.pending) > n:
            _events.append((SP, _now(), self.conn.id, 0, 0))
        return r

    L.ShmLink.queue = link_queue  # type: ignore[method-assign]

    orig_flush = L.ShmLink._flush_pending

    def flush(self: Any) -> None:
        n = len(self.pending)
        orig_flush(self)
        if len(self.pending) < n:
            _events.append((SF, _now(), self.conn.id, n - len(self.pending), 0))

    L.ShmLink._flush_pending = flush  # type: ignore[method-assign]

    orig_call = L.ShmLink.__call__

    def call(self: Any, mask: int) -> None:
        _events.append((SW, _now(), self.conn.id, int(self.spinning), 0))
        orig_call(self, mask)

    L.ShmLink.__call__ = call  # type: ignore[method-assign]

    orig_may = S.StandingFetches.may_answer

    def may_answer(self: Any, w: Any) -> bool:
        r: bool = orig_may(self, w)
        if not r:
            _events.append((SH, _now(), w.conn.id, 0, 0))
        return r

    S.StandingFetches.may_answer = may_answer  # type: ignore[method-assign]

    orig_resume = S.StandingFetches.resume

    def resume(self: Any, link: Any) -> None:
        _events.append((SR, _now(), link.conn.id, 0, 0))
        orig_resume(self, link)

    S.StandingFetches.resume = resume  # type: ignore[method-assign]

    if os.environ.get("EDGEBUS_HOPS_NO_WINDOW"):
        # Variant EDGEBUS_HOPS_NO_WINDOW=1: a standing fetch answers only while its consumer has
        # read every answer (before lat16), not all but the last (handlers/standing.py caught_up).
        L.ShmLink.last_entry = property(lambda self: 0, lambda self, v: None)  # type: ignore[assignment]
        # ... and no window of unread bytes either (tail28's, 16 KiB by default): the Python
        # rule and the C plane's copy of it.
        # (not imported as SH and SP: those names in this function are the stamps' kinds, which
        # the wrappers above then found unbound, or a module)
        from edgebus.server.listeners import shm_plane

        S.STANDING_WINDOW = 0
        shm_plane.STANDING_WINDOW = 0


def _full_collection_cost() -> None:
    """At the supervisor's exit: one full collection timed (CPU time of this thread: the machine's
    load does not enter) as the heap stands (frozen, when the supervisor froze its start:
    server/gcpolicy.py), then again with everything unfrozen: what a full collection during
    traffic costs with and without the freeze. The objects tracked."""
    _pack()  # the stamps as bytes: their list would be walked by the unfrozen collection only
    gc.collect()  # first the garbage
    cpu = time.thread_time_ns
    t0 = cpu()
    gc.collect()
    frozen_ns = cpu() - t0
    n = gc.get_freeze_count() + len(gc.get_objects())
    gc.unfreeze()
    t0 = cpu()
    gc.collect()
    _events.append((GCX, _now(), frozen_ns, cpu() - t0, n))


def serve(config: str) -> int:
    _patch_supervisor()
    _gc_hook()
    atexit.register(dump, "sup")
    atexit.register(_full_collection_cost)  # runs before dump (atexit: last in, first out)
    from edgebus.cli.main import main

    return main(["serve", "--config", config])




if __name__ == "__main__":
    sys.exit(serve(sys.argv[2]))
