"""A producer's one-record send() as one C call: the glue of edgebus/onestep.c (issue 16).

`install(producer)` sets `producer.send` to an `edgebus._onestep.Sender` when the extension is
built, EDGEBUS_PRODUCER_C_SEND is not 0, the producer may send in one step at all (`_fast`:
edgebus/client/fast_send.py) and its class has not replaced `send`. The Sender does what
`Producer.send`, `_send_one` and the channel's `send_record` do for a plain one-step send, and
hands every other call to `Producer.send` unchanged (edgebus/onestep.c, its module comment).
What it needs of a channel is given here (`channel_handles`): the C write function's
arguments that never change while the channel lives, its lock, correlation ids and pending
table. `send_rest` is the socket's tail of a frame that send(2) took only part of.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.client import fast_send, lazy_acks
from edgebus.client.dispatch import CORR_MASK, unwritten
from edgebus.client.record_frames import FAST_MAX_RECORD, FRAME_BUFFER_BYTES, PRODUCE, produce_frame
from edgebus.client.types import FutureRecordMetadata
from edgebus.tuning import C_SEND

if TYPE_CHECKING:
    from edgebus.client.producer import Producer

try:
    from edgebus._onestep import Sender
except ImportError:  # built without it (no compiler): the Python path
    Sender = None  # type: ignore[misc,assignment]


def _address(ffi: Any, lib: Any, name: str) -> int:
    """A cffi module's C function's address (0: not there)."""
    if not hasattr(lib, name):
        return 0
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def _functions() -> tuple[int, int]:
    """The addresses of eb_ring_produce (edgebus/shm/produce.c) and eb_sock_produce
    (edgebus/sock_send.c); 0 for one that is not there or cannot build frames."""
    if produce_frame is None:
        return 0, 0
    ring = sock = 0
    try:
        from edgebus.shm._ring import ffi as rffi
        from edgebus.shm._ring import lib as rlib
        ring = _address(rffi, rlib, "eb_ring_produce")
    except ImportError:
        pass
    try:
        from edgebus._records import ffi as sffi
        from edgebus._records import lib as slib
        sock = _address(sffi, slib, "eb_sock_produce")
    except ImportError:
        pass
    return ring, sock


AVAILABLE = Sender is not None and C_SEND and produce_frame is not None
# The attributes the C code reads and sets in the producer's and the channel's __dict__ directly
# (edgebus/onestep.h get_attr): none may be a data descriptor of their class, for which Python
# would not look in the instance's dict first (_plain checks it).
PRODUCER_ATTRS = ("_fast", "value_serializer", "key_serializer", "_txn", "_channel", "_closed",
                  "_ready", "_in_flight", "_queued_bytes", "_sender_wake_at", "_drain_held",
                  "_blocked", "_flushing", "_open", "max_in_flight", "buffer_memory", "_cond", "_mutex",
                  "_results_lock", "_sent", "_counts")
CHANNEL_ATTRS = ("lost", "_fds_closed", "_timed", "_send_gap", "_last_send", "_sent",
                 "_read_mark")


def _plain(obj: object, names: tuple[str, ...]) -> bool:
    """Whether each name is a plain attribute of obj: in its __dict__, never a data descriptor
    of its class. Reading __dict__ also makes it now (CPython keeps an instance's attributes
    without one until asked), so the C code's reads of it allocate nothing."""
    d = getattr(obj, "__dict__", None)
    if type(d) is not dict:
        return False
    for name in names:
        for klass in type(obj).__mro__:
            if name in vars(klass):
                if hasattr(type(vars(klass)[name]), "__set__"):
                    return False
                break
    return True


def channel_handles(ch: Any) -> tuple[int, int, int, int, Any, Any, dict[int, Any]] | None:
    """(kind, a, b, c, lock, correlation counter, pending) of a channel the C path can write
    to: kind 0, the request ring (a: its eb_ring, b: the eb_sender, c: the supervisor's
    eventfd); kind 1, the Unix socket (a: its fd, b: the frame buffer, c: its size). None for
    any other channel (the Python path sends on it)."""
    from edgebus.client.shm_channel import ShmAsyncChannel
    from edgebus.client.socket_acks import LazySocketChannel
    if not _plain(ch, CHANNEL_ATTRS):
        return None
    if isinstance(ch, ShmAsyncChannel):
        from edgebus.shm._ring import ffi
        rings = ch._rings
        return (0, int(ffi.cast("uintptr_t", rings.req.d)), int(ffi.cast("uintptr_t", ch._sender)),
                ch._efd_sup, ch._lock, ch._corr, ch._pending)
    if isinstance(ch, LazySocketChannel) and ch._fbuf is not None:
        from edgebus._records import ffi
        return (1, ch._fd, int(ffi.cast("uintptr_t", ch._fbuf)), FRAME_BUFFER_BYTES, ch._lock,
                ch._corr, ch._pending)
    return None


def send_rest(producer: Producer, ch: Any, b: Any, sent: int, n: int, corr: int) -> None:
    """The rest of a one-step frame send(2) took only part of (or failed on), with the
    producer's I/O lock and the channel's lock held by the caller (the C Sender), as
    LazySocketChannel.send_record does it; a failure fails the record (not sent: dispatch.unwritten), as
    `_send_one` does. A failure after part of it went ends the connection first
    (LazySocketChannel._write_failed); an interrupt that may have come after its last byte is
    raised with the record pending (counted: its answer or that loss settles it)."""
    import os
    e: BaseException
    if sent < 0:  # none of it written: the stream holds no part of it
        e = OSError(-sent - 1000, os.strerror(-sent - 1000)) if sent <= -1000 \
            else OSError(f"the frame was not built ({sent})")
    else:
        try:
            ch._sendall(ch._fview[sent:n])
            return
        except BaseException as x:
            if not ch._write_failed(x):
                raise
            e = x
    ch._pending.pop(corr, None)
    err = unwritten(ch.path, e)
    with producer._mutex:
        producer._finish(b, -1, -1, err)


def install(producer: Producer) -> bool:
    """Make `producer.send` the C Sender when it can be (module docstring); whether it was."""
    from edgebus.client.producer import Producer
    if not AVAILABLE or not producer._fast or type(producer).send is not Producer.send or \
            not _plain(producer, PRODUCER_ATTRS):
        return False
    ring, sock = _functions()
    limits = (fast_send.REAP_AT, FAST_MAX_RECORD, F.BATCH_HEADER_SIZE,
              fast_send._RECORD_FIXED, producer._first_deadline,
              _unread_recent(), lazy_acks.STEADY_S, PRODUCE, CORR_MASK)
    producer.send = Sender(producer, Producer.send, producer._one_class, channel_handles,  # type: ignore[method-assign]
                           send_rest, FutureRecordMetadata, producer._mutex, producer._io_lock,
                           ring, sock, limits)
    return True


def _unread_recent() -> float:
    from edgebus.client.socket_acks import UNREAD_RECENT_S
    return UNREAD_RECENT_S
