"""A one-step send's batch and its result in one object, made without a Python call (issue 16).

A one-step send (edgebus/client/fast_send.py) used to make a `_Builder`, its `BatchResult` and
the `FutureRecordMetadata`: three Python `__init__` frames (and a clock read) per record, about a
quarter of the instructions the sending thread ran per paced send. A `_OneSend` is both the
batch in flight (what `_finish`, the timeouts and a lost connection look at: `topic`,
`partition`, `size`, `count`, `deadline`) and its `BatchResult` (`result` is itself), and is
made by `type.__call__` with no Python `__init__`: what is the same for every record of a
partition (the producer, its results' lock, topic, partition) is a class attribute of a class
made once per producer and partition (`one_send_class`), what a record has not yet got (an
outcome, an event, callbacks) a class-level default its instance shadows when it gets one. Per
record, the sender stores three attributes (`deadline`, `size`, `first_ts`). The future is made
likewise (`new_future`, inlined by the sender: `object.__new__` and its three slots).

Invariants: BatchResult's (a callback is run once, by `done` or by `add_callback`, under the
owner's results lock); `callbacks` is the class's empty tuple until the first `add_callback`
gives the instance its own list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgebus.client.types import (
    RUNNING,
    AckOwner,
    BatchResult,
    FutureRecordMetadata,
    run_rest,
)

log = logging.getLogger("edgebus.producer")


class _OneSend(BatchResult):
    """A one-step send's batch and result (module docstring). No __slots__: instances keep
    the few per-record attributes in their (inline) dict, over the class-level defaults."""

    # BatchResult's state until an outcome comes: class-level defaults (no per-record stores).
    _done = False
    _event = None
    error = None
    base_offset = -1
    timestamp = -1
    callbacks: Any = ()
    # _Builder's, for a batch of one record that is never resent (no ordered retries here).
    count = 1
    records: Any = ()
    attempts = 0
    stamp = None
    order = 0
    # Set on the per-partition class (one_send_class).
    first_deadline: float
    # Set per record by the sender.
    deadline: float
    size: int
    first_ts: int

    __init__ = object.__init__  # made with no Python call

    @property
    def result(self) -> _OneSend:
        return self

    @property
    def max_ts(self) -> int:
        return self.first_ts

    @property
    def created(self) -> float:
        return self.deadline - self.first_deadline

    def add_callback(self, cb: Callable[[BatchResult], object]) -> None:
        with self._lock:
            pending = not self._done
            if pending:
                if self.callbacks == ():
                    self.callbacks = []
                self.callbacks.append(cb)
        if not pending:
            cb(self)
            return
        owner = self.owner
        if owner is not None and not owner._timed_acks:
            owner._callback_added()

    def __call__(self, frame: Any, err: BaseException | None) -> None:
        """The request's callback for what the bulk walk (edgebus/client/fast_acks.py) does not
        settle: a lost connection, an error, an unusual answer."""
        self.owner._one_step_done(self, frame, err)  # type: ignore[union-attr]


def one_send_class(owner: AckOwner, topic: str, partition: int,
                   first_deadline: float) -> type[_OneSend]:
    """The class of one producer's one-step sends to one partition (module docstring)."""
    return type("_OneSend", (_OneSend,), {
        "owner": owner, "_lock": owner._results_lock, "topic": topic, "partition": partition,
        "first_deadline": first_deadline})


def new_future(b: BatchResult, ts: int) -> FutureRecordMetadata:
    """FutureRecordMetadata(b, 0, ts) without its __init__'s frame (fast_send inlines this)."""
    f = object.__new__(FutureRecordMetadata)
    f._batch, f._index, f._timestamp = b, 0, ts
    return f


def run_callbacks(r: _OneSend, ev: Any, cbs: Any) -> None:
    """What is left to do for a settled one-step send outside the results lock: set its event
    (someone waits) and run its callbacks, in order, every one: an Exception logged, the first
    BaseException (KeyboardInterrupt) raised after the last. The one place for it:
    Producer._one_step_acked (fast_send.py) and the C settling (edgebus/onestep_settle.c)."""
    if ev is not None:
        ev.set()
    if not cbs:
        return
    rest = iter(cbs)
    running = RUNNING.owners  # flush()/close() inside a callback must know (types.in_callback)
    running.append(r.owner)
    try:
        for cb in rest:
            try:
                cb(r)  # the user's callbacks
            except Exception:
                log.exception("a send() callback raised; ignored")
            except BaseException as e:  # KeyboardInterrupt: raised once every callback ran
                run_rest(r, rest, e)
    finally:
        running.pop()
