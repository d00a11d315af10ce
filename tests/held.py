"""Records a producer held back when its supervisor died (kill -9): held behind a request the
supervisor had not read yet (a loaded machine's) and not yet sent by the I/O thread, they were
never written: they wait for a reconnection (or, on client25's branch, a plain producer fails
them at once as not sent), while every record written gets an outcome. The kill tests of
tests/client and tests/shm share this split."""

from __future__ import annotations

from typing import Any

from edgebus import Producer
from edgebus.testing import wait_for


def written_and_held(p: Producer, ch: Any, futures: list[Any]) -> tuple[list[Any], list[Any]]:
    """Once the channel `ch` (taken before the kill: the I/O thread may drop it, reconnecting)
    has seen the supervisor gone: (the futures of records written, those held back). Only the
    last records can be held back."""
    wait_for(lambda: ch.lost is not None, 10, "the producer to see the supervisor gone")
    with p._cond:
        waiting = {id(b.result) for b in [*p._ready, *p._open.values()]}
    written = [f for f in futures if id(f._batch) not in waiting]
    assert written == futures[:len(written)], "only the last records can be held back"
    return written, futures[len(written):]


def abandon(p: Producer) -> None:
    """The supervisor is gone for good: close() must not wait out its flush."""
    p._closed = True
    with p._cond:
        p._cond.notify_all()
