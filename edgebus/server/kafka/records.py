"""Kafka record batches (magic v2) to and from edgebus batches (docs/FORMAT.md section 9).

Produce: every Kafka batch of a request is checked (length, magic 2, CRC-32C, no transaction or
control batch, offset deltas 0..n-1), decompressed (gzip, snappy, lz4, zstd; bounded by
MAX_BATCH_BYTES) and rebuilt as one edgebus batch with the same records: timestamps (made
absolute), keys, values, nulls, headers, and the producer id, epoch and base sequence in the
header fields FORMAT.md 2.1 reserved for them. Fetch: each stored edgebus batch becomes one
uncompressed Kafka batch with its base offset, timestamps and producer fields.

Records are converted one by one, so the per-record loops run in C (edgebus/records.c
`eb_kafka_to_edgebus`, `eb_edgebus_to_kafka`) when the module is built; the Python below is
the specification and the fallback, and tests check that both give the same bytes and errors.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from edgebus import format as F
from edgebus.errors import CorruptRecordError, EdgebusError, RecordTooLargeError

try:
    from edgebus._records import ffi as _ffi
    from edgebus._records import lib as _lib

    HAVE_C = hasattr(_lib, "eb_kafka_to_edgebus")
except ImportError:  # not built: the Python below
    HAVE_C = False

# cramjam and crc32c (about 4 MB of RSS together) are imported at the first Kafka batch, not at
# start, so that a supervisor nobody produces to over Kafka does not carry them.


_crc32c: Callable[[bytes | bytearray | memoryview], int] | None = None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    global _crc32c
    if _crc32c is None:
        from edgebus.server.slim import crc32c_function  # without the package's 2 MB (slim.py)

        _crc32c = crc32c_function()
    return int(_crc32c(data))


# Kafka's v2 batch header (big-endian), FORMAT.md 9.1.
KAFKA_HEADER = F.KAFKA_BATCH_HEADER
KAFKA_HEADER_SIZE = KAFKA_HEADER.size  # 61
# Offsets derived from the header's fields (base_offset, batch_length, partition_leader_epoch,
# magic, crc, ...): tests/test_format_doc.py checks them against FORMAT.md 9.1.
_CRC_AT = struct.calcsize(KAFKA_HEADER.format[:5])  # 17: the u32 CRC-32C follows magic
_CRC = struct.Struct(">I")
_CRC_START = _CRC_AT + _CRC.size  # 21: the CRC-32C covers attributes .. the end of the batch
_LENGTH_END = struct.calcsize(KAFKA_HEADER.format[:3])  # 12: base_offset and batch_length are not counted in it
_EB_HEADER = F.BATCH_HEADER

CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = range(5)
CODEC_NAMES = {CODEC_GZIP: "gzip", CODEC_SNAPPY: "snappy", CODEC_LZ4: "lz4", CODEC_ZSTD: "zstd"}
ATTR_CODEC = 0x07
ATTR_LOG_APPEND_TIME = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
# snappy-java's stream framing, which the Java producer uses ("xerial"): magic, version, compat.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class UnsupportedBatchError(EdgebusError):
    """A Kafka batch edgebus does not take: an old magic, a transactional or control batch, an
    unknown codec (answered with the matching Kafka error code by produce.py)."""

    code = 3


@dataclass(slots=True)
class Converted:
    """One Kafka batch as edgebus batches (one, or several when it is larger than the topic's
    max_message_bytes as stored: (batch, record count) each, dense offsets, base sequences
    continued), with what the idempotence check needs."""

    pieces: list[tuple[bytearray, int]]
    count: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def batch(self) -> bytearray:
        """The one edgebus batch (tests; a split batch has several)."""
        assert len(self.pieces) == 1
        return self.pieces[0][0]


# --- produce: Kafka -> edgebus ---------------------------------------------------------------------

# Decompression output (loop thread only): a kept 1 MiB buffer takes the usual batch (librdkafka's
# default batch is at most 1 MB); a larger one is decompressed again into a buffer of
# MAX_BATCH_BYTES + 1 made for it and dropped after, so that bound is never held for long.
SMALL_OUTPUT = 1024 * 1024
_small: bytearray | None = None


def _decompress(codec: int, data: memoryview) -> memoryview:
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


def _varint(b: memoryview, p: int, end: int) -> tuple[int, int]:
    """A zigzag varint (at most 10 bytes) at b[p]: (value, next position)."""
    shift = result = 0
    while True:
        if p >= end or shift > 63:
            raise CorruptRecordError("a Kafka record's varint is cut short or too long")
        c = b[p]
        p += 1
        result |= (c & 0x7F) << shift
        if not c & 0x80:
            return (result >> 1) ^ -(result & 1), p
        shift += 7


def _records_to_edgebus(recs: memoryview, count: int, base_ts: int) -> tuple[bytearray, int, int]:
    """(edgebus records, first timestamp, max timestamp) from `count` Kafka records."""
    out = bytearray()
    end = len(recs)
    p = 0
    first_ts = max_ts = base_ts
    pack_i32, pack_u16 = struct.Struct("<i").pack, struct.Struct("<H").pack
    for i in range(count):
        length, p = _varint(recs, p, end)
        stop = p + length
        if length < 6 or stop > end:
            raise CorruptRecordError(f"Kafka record {i} has a bad length {length}")
        p += 1  # attributes: unused in v2
        ts_delta, p = _varint(recs, p, stop)
        off_delta, p = _varint(recs, p, stop)
        if off_delta != i:
            raise CorruptRecordError(f"Kafka record {i} has offset delta {off_delta}: edgebus batches "
                                     "hold dense offsets")
        ts = base_ts + ts_delta
        if i == 0:
            first_ts = max_ts = ts
        elif ts > max_ts:
            max_ts = ts
        start = len(out)
        out += b"\0\0\0\0"
        out += struct.pack("<q", ts)
        p = _put_bytes(recs, p, stop, out, pack_i32, "key")
        p = _put_bytes(recs, p, stop, out, pack_i32, "value")
        nh, p = _varint(recs, p, stop)
        if not 0 <= nh <= 0xFFFF:
            raise CorruptRecordError(f"Kafka record {i} has {nh} headers")
        out += pack_u16(nh)
        for _ in range(nh):
            klen, p = _varint(recs, p, stop)
            if klen < 0 or klen > 0xFFFF or p + klen > stop:
                raise CorruptRecordError(f"Kafka record {i} has a header key of bad length {klen}")
            out += pack_u16(klen)
            out += recs[p : p + klen]
            p += klen
            p = _put_bytes(recs, p, stop, out, pack_i32, "header value")
        if p != stop:
            raise CorruptRecordError(f"Kafka record {i}'s fields do not fill its length")
        struct.pack_into("<I", out, start, len(out) - start - 4)
    if p != end:
        raise CorruptRecordError(f"{end - p} bytes after the last record of a Kafka batch")
    return out, first_ts, max_ts


def _put_bytes(recs: memoryview, p: int, stop: int, out: bytearray, pack_i32: object, what: str) -> int:
    n, p = _varint(recs, p, stop)
    if n < -1 or p + max(n, 0) > stop:
        raise CorruptRecordError(f"a Kafka record's {what} has a bad length {n}")
    out += pack_i32(n)  # type: ignore[operator]
    if n > 0:
        out += recs[p : p + n]
        p += n
    return p


def kafka_batches(data: bytes | memoryview, max_bytes: int = F.MAX_BATCH_BYTES) -> list[Converted]:
    """Every Kafka batch of a Produce partition's `records` as edgebus batches of at most
    `max_bytes` (the topic's max_message_bytes); the error of the first that is refused."""
    view = memoryview(data)
    out = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < KAFKA_HEADER_SIZE:
            raise CorruptRecordError(f"{len(view) - pos} bytes are not a whole Kafka batch header")
        (_, blen, _, magic, crc, attrs, last_delta, base_ts, _max_ts, pid, epoch, base_seq,
         count) = KAFKA_HEADER.unpack_from(view, pos)
        end = pos + _LENGTH_END + blen
        if blen < KAFKA_HEADER_SIZE - _LENGTH_END or end > len(view):
            raise CorruptRecordError(f"Kafka batch length {blen} does not fit the request")
        if magic != 2:
            raise UnsupportedBatchError(f"Kafka batch magic {magic}: only record batch v2 is supported")
        if crc32c(view[pos + _CRC_START : end]) != crc:
            raise CorruptRecordError("Kafka batch CRC-32C mismatch")
        if attrs & ATTR_CONTROL:
            raise UnsupportedBatchError("control batches are written only by the transaction coordinator")
        if count < 1 or count != last_delta + 1:
            raise CorruptRecordError(f"Kafka batch of {count} records with last offset delta {last_delta}")
        recs = view[pos + KAFKA_HEADER_SIZE : end]
        codec = attrs & ATTR_CODEC
        if codec:
            recs = _decompress(codec, recs)
        out.append(Converted(_to_edgebus(recs, count, base_ts, pid, epoch, base_seq, max_bytes),
                             count, pid, epoch, base_seq))
        pos = end
    if not out:
        raise CorruptRecordError("a Produce partition without a record batch")
    return out


def _to_edgebus(recs: memoryview, count: int, base_ts: int, pid: int, epoch: int, base_seq: int,
                max_bytes: int) -> list[tuple[bytearray, int]]:
    if HAVE_C:
        return _to_edgebus_c(recs, count, base_ts, pid, epoch, base_seq, max_bytes)
    body, first_ts, max_ts = _records_to_edgebus(recs, count, base_ts)
    batch = bytearray(F.BATCH_HEADER_SIZE) + body
    F.BATCH_BODY_HEADER.pack_into(batch, F.CRC_START, F.MAGIC, 0, 0, count, first_ts, max_ts, pid,
                                  base_seq, epoch, 0)
    _seal(batch)
    return split(batch, count, max_bytes)


def _seal(batch: bytearray) -> None:
    """Length and CRC into a batch whose header from magic on is written."""
    F.BATCH_OUTSIDE_CRC.pack_into(batch, 0, 0, 0, len(batch), _crc32()(memoryview(batch)[F.CRC_START:]))


_crc32_fn: Callable[..., int] | None = None


def _crc32() -> Callable[..., int]:
    """The edgebus batch's CRC-32: zlib-ng's where installed (the same CRC, about 25 times
    faster than zlib 1.2's table one, which was a third of the produce path's instructions per
    100-byte record), else zlib's."""
    global _crc32_fn
    if _crc32_fn is None:
        try:
            from edgebus.server.slim import zlib_ng_crc32  # without the package's gzip import

            _crc32_fn = zlib_ng_crc32()
        except ImportError:
            _crc32_fn = zlib.crc32
    return _crc32_fn


_REC_LEN = struct.Struct("<I")


def split(batch: bytearray, count: int, limit: int) -> list[tuple[bytearray, int]]:
    """`batch`, or when it is larger than `limit` (an edgebus record takes up to 16 bytes more
    than a Kafka one, so a full Kafka batch can be a little larger here) the same records as
    several batches each within it (dense offsets; base sequences continued)."""
    if len(batch) <= limit:
        return [(batch, count)]
    hdr = F.BATCH_HEADER.unpack_from(batch, 0)
    pid, seq, epoch = hdr[10], hdr[11], hdr[12]
    out: list[tuple[bytearray, int]] = []
    pos, end = F.BATCH_HEADER_SIZE, len(batch)
    start, n = pos, 0
    while pos < end:
        rlen = 4 + _REC_LEN.unpack_from(batch, pos)[0]
        if F.BATCH_HEADER_SIZE + rlen > limit:
            raise RecordTooLargeError(f"a record of {rlen} bytes exceeds the topic's max_message_bytes {limit}")
        if F.BATCH_HEADER_SIZE + (pos - start) + rlen > limit:
            out.append((_piece(batch, start, pos, n, pid, epoch, seq), n))
            seq = seq + n if seq >= 0 else seq
            start, n = pos, 0
        pos += rlen
        n += 1
    out.append((_piece(batch, start, pos, n, pid, epoch, seq), n))
    return out


def _piece(batch: bytearray, start: int, end: int, n: int, pid: int, epoch: int, seq: int) -> bytearray:
    recs = memoryview(batch)[start:end]
    first_ts = max_ts = struct.unpack_from("<q", recs, 4)[0]
    p = 0
    while p < len(recs):
        max_ts = max(max_ts, struct.unpack_from("<q", recs, p + 4)[0])
        p += 4 + _REC_LEN.unpack_from(recs, p)[0]
    out = bytearray(F.BATCH_HEADER_SIZE) + recs
    F.BATCH_BODY_HEADER.pack_into(out, F.CRC_START, F.MAGIC, 0, 0, n, first_ts, max_ts, pid, seq, epoch, 0)
    _seal(out)
    return out


# Conversion output, reused (loop thread only): allocating and zeroing a fresh worst-case
# buffer per batch cost more than the conversion itself (py-spy).
_out: bytearray | None = None
SCRATCH_MAX = 8 * 1024 * 1024


def _to_edgebus_c(recs: memoryview, count: int, base_ts: int, pid: int, epoch: int, base_seq: int,
                  max_bytes: int) -> list[tuple[bytearray, int]]:
    global _out
    # A piece is at most max_bytes; the C loop needs room for one more record's worst case
    # (three times its Kafka size, plus 24) before it sees that the record does not fit.
    cap = min(max_bytes, F.BATCH_HEADER_SIZE + 3 * len(recs) + 24 * count) + 3 * len(recs) + 24
    if cap <= SCRATCH_MAX:
        if _out is None or len(_out) < cap:
            _out = bytearray(max(cap, 1024 * 1024))
        out = _out
    else:
        out = bytearray(cap)
    dest = _ffi.from_buffer(out, require_writable=True)
    state = _ffi.new("uint64_t[2]")
    pieces: list[tuple[bytearray, int]] = []
    src = _ffi.from_buffer(recs)
    while state[1] < count:
        first = state[1]
        n = _lib.eb_kafka_to_edgebus(src, len(recs), count, base_ts, pid, epoch, base_seq, dest, cap,
                                     max_bytes, state)
        if n < 0:
            if n == -9:
                raise RecordTooLargeError(f"record {first} of a Kafka batch is larger than the topic's "
                                          f"max_message_bytes {max_bytes} as stored")
            raise CorruptRecordError(_C_ERRORS.get(int(n), f"Kafka records do not decode ({n})"))
        piece = out[:n]
        _seal(piece)
        pieces.append((piece, int(state[1] - first)))
    return pieces


_C_ERRORS = {
    -1: "a Kafka record's varint is cut short or too long",
    -2: "a Kafka record has a bad length",
    -3: "a Kafka record's offset delta is not its index: edgebus batches hold dense offsets",
    -4: "a Kafka record's key, value or header has a bad length",
    -5: "a Kafka record's fields do not fill its length",
    -6: "bytes after the last record of a Kafka batch",
    -7: "a Kafka record has too many headers",
}


# --- fetch: edgebus -> Kafka -----------------------------------------------------------------------

def edgebus_to_kafka(data: bytes | memoryview) -> bytes:
    """Whole edgebus batches (as read from a segment, stamped) as uncompressed Kafka batches."""
    view = memoryview(data)
    if HAVE_C:
        return _to_kafka_c(view)
    out: list[bytes] = []
    pos = 0
    while pos + F.BATCH_HEADER_SIZE <= len(view):
        (base, _atime, length, _crc, _magic, _attrs, _r, count, first_ts, max_ts, pid, base_seq,
         epoch, _r2) = _EB_HEADER.unpack_from(view, pos)
        if length < F.BATCH_HEADER_SIZE or pos + length > len(view):
            break
        recs = view[pos + F.BATCH_HEADER_SIZE : pos + length]
        if _attrs & F.ATTR_COMPACTED:
            # Offsets the log cleaner removed (FORMAT.md 4.8): an empty Kafka batch spanning
            # them, which consumers step over as they do over Kafka's own emptied batches.
            kb = bytearray(KAFKA_HEADER_SIZE)
            KAFKA_HEADER.pack_into(kb, 0, base, len(kb) - _LENGTH_END, 0, 2, 0, 0, count - 1,
                                   first_ts, max_ts, -1, -1, -1, 0)
            _CRC.pack_into(kb, _CRC_AT, crc32c(memoryview(kb)[_CRC_START:]))
            out.append(bytes(kb))
            pos += length
            continue
        kb = bytearray(KAFKA_HEADER_SIZE) + _records_to_kafka(recs, count, first_ts)
        KAFKA_HEADER.pack_into(kb, 0, base, len(kb) - _LENGTH_END, 0, 2, 0,
                               _attrs & (ATTR_TRANSACTIONAL | ATTR_CONTROL), count - 1, first_ts,
                               max_ts, pid, epoch, base_seq, count)
        _CRC.pack_into(kb, _CRC_AT, crc32c(memoryview(kb)[_CRC_START:]))
        out.append(bytes(kb))
        pos += length
    return b"".join(out)


# Fetch conversion output, reused (loop thread only) as the produce side's: a fresh worst-case
# buffer per batch was zeroed (about 2.5x the batch) and then copied twice more.
_kout: bytearray | None = None


def _to_kafka_c(view: memoryview) -> bytes:
    """edgebus_to_kafka with the records loop in C, every batch written into one reused buffer
    (a first pass over the batch headers sizes it), then copied out once."""
    global _kout
    batches = []
    cap = pos = 0
    while pos + F.BATCH_HEADER_SIZE <= len(view):
        h = _EB_HEADER.unpack_from(view, pos)
        length = h[2]
        if length < F.BATCH_HEADER_SIZE or pos + length > len(view):
            break
        batches.append((pos, h))
        # The C loop's bound per batch: a record takes at most twice its stored bytes plus 48.
        cap += KAFKA_HEADER_SIZE + 2 * (length - F.BATCH_HEADER_SIZE) + 48 * h[7]
        pos += length
    if _kout is None or len(_kout) < cap:
        _kout = bytearray(max(cap, SMALL_OUTPUT))
    out = _kout
    dest = _ffi.from_buffer(out, require_writable=True)
    src = _ffi.from_buffer(view)
    o = 0
    with memoryview(out) as mv:
        for pos, (base, _atime, length, _crc, _magic, attrs, _r, count, first_ts, max_ts, pid,
                  base_seq, epoch, _r2) in batches:
            if attrs & F.ATTR_COMPACTED:
                # Offsets the log cleaner removed (FORMAT.md 4.8): an empty Kafka batch spanning
                # them, which consumers step over as they do over Kafka's own emptied batches.
                n = 0
                KAFKA_HEADER.pack_into(out, o, base, KAFKA_HEADER_SIZE - _LENGTH_END, 0, 2, 0, 0,
                                       count - 1, first_ts, max_ts, -1, -1, -1, 0)
            else:
                n = _lib.eb_edgebus_to_kafka(src + pos + F.BATCH_HEADER_SIZE,
                                             length - F.BATCH_HEADER_SIZE, count, first_ts,
                                             dest + o + KAFKA_HEADER_SIZE, cap - o - KAFKA_HEADER_SIZE)
                if n < 0:
                    raise CorruptRecordError(f"the stored batch at offset {base} does not decode")
                KAFKA_HEADER.pack_into(out, o, base, KAFKA_HEADER_SIZE + n - _LENGTH_END, 0, 2, 0,
                                       attrs & (ATTR_TRANSACTIONAL | ATTR_CONTROL), count - 1,
                                       first_ts, max_ts, pid, epoch, base_seq, count)
            end = o + KAFKA_HEADER_SIZE + n
            _CRC.pack_into(out, o + 17, crc32c(mv[o + _CRC_START : end]))
            o = end
        return bytes(mv[:o])


_CRC = struct.Struct(">I")


def _put_varint(out: bytearray, v: int) -> None:
    z = (v << 1) ^ (v >> 63)
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _records_to_kafka(recs: memoryview, count: int, base_ts: int) -> bytearray:
    out = bytearray()
    p = 0
    u32, i64, i32, u16 = (struct.Struct(f).unpack_from for f in ("<I", "<q", "<i", "<H"))
    for i in range(count):
        rlen = u32(recs, p)[0]
        stop = p + 4 + rlen
        ts = i64(recs, p + 4)[0]
        q = p + 12
        body = bytearray(b"\0")  # attributes
        _put_varint(body, ts - base_ts)
        _put_varint(body, i)
        for _ in range(2):  # key, value
            n = i32(recs, q)[0]
            q += 4
            _put_varint(body, n)
            if n > 0:
                body += recs[q : q + n]
                q += n
        nh = u16(recs, q)[0]
        q += 2
        _put_varint(body, nh)
        for _ in range(nh):
            kl = u16(recs, q)[0]
            q += 2
            _put_varint(body, kl)
            body += recs[q : q + kl]
            q += kl
            vl = i32(recs, q)[0]
            q += 4
            _put_varint(body, vl)
            if vl > 0:
                body += recs[q : q + vl]
                q += vl
        if q != stop:
            raise CorruptRecordError(f"edgebus record {i} does not fill its length")
        _put_varint(out, len(body))
        out += body
        p = stop
    return out
