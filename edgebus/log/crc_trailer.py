"""The small text files of the data directory end with a `crc32 XXXXXXXX` line over the body
(docs/FORMAT.md: the recovery checkpoint, the Kafka leader epochs): a torn or edited file is
told apart from a good one."""

from __future__ import annotations

import zlib


def seal(body: bytes) -> bytes:
    """`body` with its crc32 line."""
    return body + b"crc32 %08x\n" % zlib.crc32(body)


def unseal(data: bytes) -> bytes:
    """The body of a sealed file; ValueError saying what is wrong when it is torn or edited."""
    cut = data.rfind(b"crc32 ")
    if cut < 0 or not data.endswith(b"\n"):
        raise ValueError("no crc32 line (torn file?)")
    body, trailer = data[:cut], data[cut:]
    try:
        crc = int(trailer[6:-1].decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("malformed crc32 line") from None
    if len(trailer) != 15 or zlib.crc32(body) != crc:
        raise ValueError("crc32 mismatch (torn or edited file)")
    return body
