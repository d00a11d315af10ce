"""Setting attribute bits in a built batch (transactional, control: docs/FORMAT.md 9.4)."""

from __future__ import annotations

import struct
import zlib

from edgebus import format as F


def mark(batch: bytearray, bits: int) -> None:
    """Set attribute bits in a built (unstamped) batch and seal its CRC again."""
    batch[F.BATCH_ATTRIBUTES] |= bits
    struct.pack_into("<I", batch, F.BATCH_CRC, zlib.crc32(memoryview(batch)[F.CRC_START:]))
