"""Regenerate the hand-made broken segments in this directory (see README.md).

Run from the repository root: PYTHONPATH=. python3 tests/data/segments/make_segments.py
Every batch holds 2 records; batch k is stamped base offset 2k, append time 1000 + k.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from edgebus import format as F
from edgebus.batch import build_batch, encode_record, stamp_batch

HERE = Path(__file__).resolve().parent


def batch(k: int, base: int | None = None) -> bytearray:
    recs = [encode_record(1000 + k, None, f"r{2 * k + i}".encode(), []) for i in range(2)]
    b = bytearray(build_batch(recs, 1000 + k, 1000 + k))
    stamp_batch(b, 2 * k if base is None else base, 1000 + k)
    return b


def good(n: int) -> bytearray:
    out = bytearray()
    for k in range(n):
        out += batch(k)
    return out


def with_length(b: bytearray, length: int) -> bytearray:
    struct.pack_into("<I", b, F.BATCH_LENGTH, length)
    return b


def main() -> None:
    b2 = batch(2)
    bad_crc = batch(2)
    bad_crc[-3] ^= 0x20
    bad_magic = batch(1)
    bad_magic[F.BATCH_MAGIC] = 2
    struct.pack_into("<I", bad_magic, F.BATCH_CRC, zlib.crc32(bad_magic[F.CRC_START:]))
    bad_crc1 = batch(1)
    bad_crc1[F.BATCH_HEADER_SIZE + 20] ^= 0x04
    first_bad = batch(0)
    first_bad[F.BATCH_HEADER_SIZE + 2] ^= 0x01
    files = {
        "torn-header.log": good(3) + batch(3)[:12],
        "torn-body.log": good(3) + batch(3)[:70],
        "bad-crc.log": good(2) + bad_crc + batch(3),
        "bad-length.log": good(2) + with_length(b2, 10),
        "huge-length.log": good(2) + with_length(batch(2), 0xFFFFFFFF),
        "offset-gap.log": good(2) + batch(2, base=7),
        "zero-tail.log": good(3) + bytes(4096),
        "bad-magic.log": good(1) + bad_magic,
        "first-batch-corrupt.log": first_bad + batch(1),
        "empty.log": bytearray(),
        "zeroed-middle.log": good(2) + bytes(2 * len(b2)) + batch(4) + batch(5),
        "rot-then-torn.log": batch(0) + bad_crc1 + batch(2) + batch(3)[:40],
    }
    for name, data in files.items():
        (HERE / name).write_bytes(bytes(data))


if __name__ == "__main__":
    main()
