"""The one-record PRODUCE frame a channel builds in C for edgebus/client/fast_send.py (issue 16).

`compose(buf, prefix, key, value, ts, corr)` is not a function here on purpose: each channel's
`send_record` calls the cffi function `produce_frame` itself (edgebus/records.c
eb_produce_frame), as one C call per send with no Python layer around it.
"""

from __future__ import annotations

from typing import Any

from edgebus.protocol import messages as M

try:
    from edgebus.records import (
        NULL,
        SEND_DECLINED,
        eb_produce_frame,
        eb_sock_produce,
        ffi_buffer,
        frame_buffer,
        frame_bytes,
    )
except ImportError:  # built without the C module: no one-step sends
    NULL = eb_produce_frame = eb_sock_produce = ffi_buffer = frame_buffer = frame_bytes = None  # type: ignore[assignment]
    SEND_DECLINED = -3
PRODUCE = int(M.Api.PRODUCE)
# The largest record (its encoded bytes) sent in one step; a larger one takes the general path.
# The frame buffer holds it with the largest topic name and the headers around it.
FAST_MAX_RECORD = 16 * 1024
FRAME_BUFFER_BYTES = FAST_MAX_RECORD + 1024


def _usable() -> Any:
    """eb_produce_frame, or None when it cannot build frames (no C module, or one built
    without zlib: it returns -2 and the general path computes the CRC in Python)."""
    if eb_produce_frame is None or frame_buffer is None:
        return None
    buf = frame_buffer(256)
    return eb_produce_frame if eb_produce_frame(buf, 256, b"", 0, NULL, -1, NULL, -1, 0, 0, 0) > 0 \
        else None


produce_frame: Any = _usable()
# The socket's one-call send (edgebus/sock_send.c), when frames can be built at all.
sock_produce: Any = eb_sock_produce if produce_frame is not None else None
# Bytes of a one-record PRODUCE frame besides its prefix (the body's topic, partition and acks)
# and its record's key and value: request header, batch length, batch header, record's fixed part.
FRAME_FIXED = 12 + 4 + 64 + 22


def new_frame_buffer() -> Any:
    """A channel's buffer for produce_frame (one per channel: its writers are serialised)."""
    return frame_buffer(FRAME_BUFFER_BYTES) if frame_buffer is not None else None
