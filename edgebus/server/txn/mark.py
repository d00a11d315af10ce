"""Batches the supervisor itself builds or changes for transactions (docs/FORMAT.md 9.4):
attribute bits set in a built batch, the header view of a built batch, and the whole batches of
a read below an offset."""

from __future__ import annotations

import struct
import zlib
from typing import TypeVar

from edgebus import format as F
from edgebus.batch import BatchInfo


def mark(batch: bytearray, bits: int) -> None:
    """Set attribute bits in a built (unstamped) batch and seal its CRC again."""
    batch[F.BATCH_ATTRIBUTES] |= bits
    struct.pack_into("<I", batch, F.BATCH_CRC, zlib.crc32(memoryview(batch)[F.CRC_START:]))


def built_info(batch: bytearray) -> BatchInfo:
    """The BatchInfo of a batch the supervisor built (so the produce path does not check the CRC
    it has just computed)."""
    h = F.BATCH_HEADER.unpack_from(batch, 0)
    return BatchInfo(h[0], h[1], h[2], h[7], h[8], h[9])


_Data = TypeVar("_Data", bound="bytes | memoryview")


def up_to(data: _Data, end: int) -> _Data | bytes:
    """The whole edgebus batches of `data` that begin before offset `end`."""
    view = memoryview(data)
    pos = 0
    while pos + F.BATCH_PREFIX_SIZE <= len(view):
        base, _t, length = F.BATCH_PREFIX.unpack_from(view, pos)
        if base >= end:
            break
        pos += length
    return data if pos >= len(view) else bytes(view[:pos])
