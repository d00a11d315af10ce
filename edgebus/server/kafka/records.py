"""Kafka record batches (magic v2) to and from edgebus batches (docs/FORMAT.md section 9).

Produce: every Kafka batch of a request is checked (length, magic 2, CRC-32C, no transaction or
control batch, offset deltas 0..n-1), decompressed (gzip, snappy, lz4, zstd; bounded by
MAX_BATCH_BYTES) and rebuilt as one edgebus batch with the same records: timestamps (made
absolute), keys, values, nulls, headers, and the producer id, epoch and base sequence in the
header fields FORMAT.md 2.1 reserved for them. Fetch: each stored edgebus batch becomes one
uncompressed Kafka batch with its base offset, timestamps and producer fields.

Records are converted one by one, so the per-record loops run in C (edgebus/records_kafka.c
`eb_kafka_to_edgebus`, `eb_edgebus_to_kafka`) when the module is built; the Python below is
the specification and the fallback, and tests check that both give the same bytes and errors.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from edgebus import format as F
from edgebus.errors import CorruptRecordError, RecordTooLargeError
from edgebus.server.kafka.compression import SMALL_OUTPUT, UnsupportedBatchError
from edgebus.server.kafka.compression import decompress as _decompress
from edgebus.server.kafka.record_loops import records_to_edgebus as _records_to_edgebus
from edgebus.server.kafka.record_loops import records_to_kafka as _records_to_kafka

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

ATTR_CODEC = 0x07
ATTR_LOG_APPEND_TIME = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20


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
