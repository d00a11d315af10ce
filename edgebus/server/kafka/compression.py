"""The compressed records of a Kafka batch (gzip, snappy raw or xerial-framed, lz4, zstd),
decompressed with a bound: never more than MAX_BATCH_BYTES, checked while decompressing, so a
small "bomb" costs no more than the bound (docs/FORMAT.md section 9; records.py converts what
comes out). cramjam is imported at the first compressed batch, not at start.
"""

from __future__ import annotations

import zlib

from edgebus import format as F
from edgebus.errors import CorruptRecordError, EdgebusError, RecordTooLargeError

CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = range(5)
CODEC_NAMES = {CODEC_GZIP: "gzip", CODEC_SNAPPY: "snappy", CODEC_LZ4: "lz4", CODEC_ZSTD: "zstd"}
# snappy-java's stream framing, which the Java producer uses ("xerial"): magic, version, compat.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class UnsupportedBatchError(EdgebusError):
    """A Kafka batch edgebus does not take: an old magic, a transactional or control batch, an
    unknown codec (answered with the matching Kafka error code by produce.py)."""

    code = 3


# Decompression output (loop thread only): a kept 1 MiB buffer takes the usual batch (librdkafka's
# default batch is at most 1 MB); a larger one is decompressed again into a buffer of
# MAX_BATCH_BYTES + 1 made for it and dropped after, so that bound is never held for long.
SMALL_OUTPUT = 1024 * 1024
_small: bytearray | None = None


def decompress(codec: int, data: memoryview) -> memoryview:
    """The records of a compressed batch; RecordTooLargeError above MAX_BATCH_BYTES (checked
    while decompressing, so a small bomb never costs more than the bound)."""
    global _small
    if codec == CODEC_GZIP:
        try:
            raw = zlib.decompressobj(wbits=47).decompress(data, F.MAX_BATCH_BYTES + 1)  # gzip or zlib
        except zlib.error as e:
            raise CorruptRecordError(f"gzip data does not decompress: {e}") from None
        if len(raw) > F.MAX_BATCH_BYTES:
            raise _too_large()
        return memoryview(raw)
    if _small is None:
        _small = bytearray(SMALL_OUTPUT)
    try:
        return _decompress_into(codec, data, _small)
    except _Full:
        pass
    try:
        return _decompress_into(codec, data, bytearray(F.MAX_BATCH_BYTES + 1))
    except _Full:
        raise _too_large() from None


class _Full(Exception):
    """The output buffer was too small."""


def _decompress_into(codec: int, data: memoryview, out: bytearray) -> memoryview:
    import cramjam

    try:
        if codec == CODEC_SNAPPY:
            if bytes(data[:8]) == _XERIAL_MAGIC:
                return _xerial(data, out)
            n = cramjam.snappy.decompress_raw_into(bytes(data), out)
        elif codec == CODEC_LZ4:
            n = cramjam.lz4.decompress_into(bytes(data), out)
        elif codec == CODEC_ZSTD:
            n = cramjam.zstd.decompress_into(bytes(data), out)
        else:
            raise UnsupportedBatchError(f"unknown compression codec {codec}")
    except (cramjam.DecompressionError, ValueError) as e:
        if "whole buffer" in str(e) or "smaller than required" in str(e):  # cramjam: output full
            raise _Full from None
        raise CorruptRecordError(f"{CODEC_NAMES.get(codec, codec)} data does not decompress: {e}") from None
    if n > F.MAX_BATCH_BYTES:
        raise _too_large()
    if n >= len(out):
        raise _Full
    return memoryview(out)[:n]


def _xerial(data: memoryview, out: bytearray) -> memoryview:
    import cramjam

    pos, n = 16, 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise CorruptRecordError("xerial snappy block cut short")
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if size < 0 or pos + size > len(data):
            raise CorruptRecordError("xerial snappy block overruns the batch")
        dest = memoryview(out)[n:]
        n += cramjam.snappy.decompress_raw_into(bytes(data[pos : pos + size]), dest)
        pos += size
    return memoryview(out)[:n]


def _too_large() -> RecordTooLargeError:
    return RecordTooLargeError(f"the records of a Kafka batch decompress to more than "
                               f"{F.MAX_BATCH_BYTES} bytes (MAX_BATCH_BYTES)")
