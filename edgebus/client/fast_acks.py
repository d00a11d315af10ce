"""The acknowledgements of one-step sends, taken in bulk from the bytes they came in (issue 16).

A one-step send (edgebus/client/fast_send.py) registers its batch (`_OneSend`,
edgebus/client/one_send.py) itself as the request's callback. Its acknowledgement used to cost a
`ResponseFrame` object, the send's own closure, `produce_result`'s check, `_finish` and
`BatchResult.done`: five Python calls per record, each run cache-cold between two paced sends.
`deliver` walks the response frames in a buffer (the response ring's whole frames, or the whole
frames at the start of what a socket recv() returned) and, for every successful PRODUCE answer to a
one-step send, collects (batch, base offset, append time); the producer settles them all in one
call (`Producer._one_step_acked`). Anything else (an error, an unusual body, another request's
answer, a frame too large to take here) gets a `ResponseFrame` and its callback as before
(`Dispatcher._deliver`'s rules: in order, a raising callback logged, a refusal of the whole
connection raised), after the ones collected before it have been settled, so outcomes keep the
responses' order. A callback's BaseException (KeyboardInterrupt) ends nothing early: every answer
taken is settled once, then it is raised (`py_deliver`'s docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.client.dispatch import refusal
from edgebus.client.one_send import _OneSend, run_callbacks
from edgebus.protocol.framing import ResponseFrame

if TYPE_CHECKING:
    from edgebus.client.dispatch import Dispatcher

log = logging.getLogger("edgebus.channel")

_HEAD = F.RESPONSE_HEADER_SIZE  # length, correlation id, error code (docs/FORMAT.md 7.2)
_LEN = F.FRAME_LENGTH_SIZE  # a frame's length counts the bytes after itself
_HEAD_UNPACK = F.RESPONSE_HEADER.unpack_from
_RUN = F.PRODUCE_RESPONSE_RUN.size  # a PRODUCE answer's body: topic (u16 length, bytes), run
_RUN_UNPACK = F.PRODUCE_RESPONSE_RUN.unpack_from
_STR_UNPACK = F.STR_LENGTH.unpack_from
_STR = F.STR_LENGTH.size
# Larger frames, and the start of a frame, are left to the socket's FrameBuffer (its limits).
SMALL_FRAME = 64 * 1024


def py_deliver(ch: Dispatcher, buf: Any, whole: bool,
               failed: BaseException | None = None) -> tuple[int, int]:
    """Settle the responses at the start of buf, in order; (frames taken, where the rest
    starts). whole: buf holds whole frames only (the response ring's); else the walk stops at
    a partial frame or a large one, which the caller hands to its FrameBuffer.

    A callback's BaseException (KeyboardInterrupt, SystemExit; settling raises it once its
    group is settled) does not end the walk: every answer in buf is still settled, once, and
    then the first such exception is raised; what the walk left (whole=False: a frame's start,
    a large frame) is handed to the socket channel's FrameBuffer first (`_take_rest`), since
    the caller gets no position then, and a broken frame there still ends the connection
    (`_end_with`: the reader ends the channel with it), as it would without the callback.
    failed: one met before this walk (the C walk's settling, edgebus/onestep.c deliver),
    raised likewise. A refusal of the connection still ends the
    walk at once, and is what is raised: the connection is over, and its loss gives every
    request still pending its outcome."""
    pending, lock = ch._pending, ch._lock
    acked: list[tuple[_OneSend, int, int]] = []
    mv = None
    pos, end, taken = 0, len(buf), 0
    while end - pos >= _HEAD:
        n, corr, err = _HEAD_UNPACK(buf, pos)
        nxt = pos + _LEN + n
        if not whole and (n > SMALL_FRAME or n < _HEAD - _LEN or nxt > end):
            break
        with lock:
            cb = pending.pop(corr, None)
        if isinstance(cb, _OneSend) and not err and n - (_HEAD - _LEN) >= _STR + _RUN \
                and _STR_UNPACK(buf, pos + _HEAD)[0] == n - (_HEAD - _LEN) - _STR - _RUN:
            _p, base, ts, _ls = _RUN_UNPACK(buf, nxt - _RUN)
            acked.append((cb, base, ts))
        else:
            if acked:  # the answers before this one first: outcomes in response order
                try:  # (inline, not a helper: a Python call per reap on the Python path)
                    acked[0][0].owner._one_step_acked(acked)  # type: ignore[union-attr]
                except BaseException as e:  # every record settled first (_one_step_acked)
                    if failed is None:
                        failed = e
                acked = []
            if mv is None:
                mv = memoryview(buf)
            frame = ResponseFrame(corr, err, mv[pos + _HEAD : nxt])
            if cb is None:
                if (refused := refusal(frame)) is not None:
                    raise refused  # the supervisor refused this connection: end with it
            else:
                try:
                    cb(frame, None)
                except Exception:  # never let one callback end the reader thread
                    log.exception("a response callback failed")
                except BaseException as e:  # raised once the rest is settled
                    if failed is None:
                        failed = e
        pos = nxt
        taken += 1
    if acked:
        try:
            acked[0][0].owner._one_step_acked(acked)  # type: ignore[union-attr]
        except BaseException as e:
            if failed is None:
                failed = e
    if failed is not None:
        if not whole and pos < end:
            try:
                ch._take_rest(memoryview(buf)[pos:])  # type: ignore[attr-defined]
            except Exception as e:  # a broken frame, a refusal: still the connection's end
                ch._end_with(e)  # type: ignore[attr-defined]
            except BaseException:  # another callback's: the first one is raised
                log.debug("after a callback's exception, another callback raised too",
                          exc_info=True)
        raise failed
    return taken, pos


# What the channels call: this walk, or its C twin (which starts with no `failed`).
deliver: Callable[[Dispatcher, Any, bool], tuple[int, int]] = py_deliver
# LazySocketChannel.reap in C (edgebus/onestep_reap.c sock_reap), when built; None: the Python one.
C_REAP: Any = None
try:
    from edgebus import _onestep
    from edgebus.tuning import C_SEND
except ImportError:  # built without it: the Python walk
    pass
else:
    if C_SEND:
        _onestep.configure(py_deliver, _OneSend, run_callbacks, F.BATCH_HEADER_SIZE)
        deliver = _onestep.deliver
        C_REAP = _onestep.sock_reap
