"""Record batches: build (producer side: edgebus/batch_build.py, re-exported here), validate and
stamp (supervisor), decode (consumer side).

The batch is the unit (docs/FORMAT.md): the bytes a producer builds are the bytes on disk and the
bytes a consumer receives. The supervisor only validates and stamps the header fields outside the
CRC; it never decodes records.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from edgebus import format as F

# The producer's side (their old import path: edgebus.batch.build_batch, ...).
from edgebus.batch_build import batch_parts as batch_parts
from edgebus.batch_build import build_batch as build_batch
from edgebus.batch_build import build_compacted as build_compacted
from edgebus.batch_build import encode_record as encode_record
from edgebus.batch_build import record_size as record_size
from edgebus.errors import CorruptRecordError, RecordTooLargeError

Headers = list[tuple[str, bytes | None]]


class Record:
    """One record as a consumer sees it: topic, partition, offset, timestamp, key, value, headers
    (a list of (str, bytes | None)) and timestamp_type. Attributes are assignable (deserializers
    replace key and value); records compare equal when all of them are.

    A plain __slots__ class rather than a dataclass: the consumer makes one per record (from C,
    through map), and each Python-level step here costs on every record. A record without headers
    makes its empty headers list when it is first read: most consumers never read headers, and a
    list per record is one more object for the cyclic garbage collector to scan (together about a
    third of a record's decode cost).
    """

    __slots__ = ("_headers", "key", "offset", "partition", "timestamp", "topic", "value")
    __match_args__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")
    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaced

    def __init__(self, topic: str, partition: int, offset: int, timestamp: int, key: bytes | None,
                 value: bytes | None, headers: Headers | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self._headers = headers  # None: no headers, the list is made when first read

    @property
    def headers(self) -> Headers:
        h = self._headers
        if h is None:
            h = self._headers = []
        return h

    @headers.setter
    def headers(self, headers: Headers) -> None:
        self._headers = headers

    @property
    def timestamp_type(self) -> int:
        return 0  # CreateTime, as in kafka-python

    def _fields(self) -> tuple[object, ...]:
        h = self._headers
        return (self.topic, self.partition, self.offset, self.timestamp, self.key, self.value,
                _NO_HEADERS if h is None else h)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return ("Record(topic={!r}, partition={!r}, offset={!r}, timestamp={!r}, key={!r}, value={!r}, "
                "headers={!r})".format(*self._fields()))


_NO_HEADERS: Headers = []  # compared with, never handed out


class BatchInfo(NamedTuple):
    """The header fields the supervisor needs, read without touching the records. A NamedTuple
    (immutable, compared by value, as the frozen dataclass it replaced): it is made once per
    PRODUCE, and a frozen dataclass's __init__ cost a microsecond of it."""

    base_offset: int
    append_time: int
    length: int
    record_count: int
    first_timestamp: int
    max_timestamp: int


_REC_HEAD = F.RECORD_PREFIX  # record_length, timestamp, key_len

try:  # C record loops (edgebus/records.py, built at install); the Python code below is the spec
    from edgebus import records as _fast
except ImportError:  # not built: everything still works, per record more slowly
    _fast = None  # type: ignore[assignment]
# A producer's batch checked whole in one C call (produced_batch), when built: the cffi
# function itself (records.check_batch's wrapper costs a call per PRODUCE).
_check_batch = None if _fast is None else _fast.eb_check_batch
_from_buffer = None if _fast is None else _fast.from_buffer
# BatchInfo's fields in header order: base_offset, append_time, length, (crc, magic, attributes,
# reserved skipped), record_count, first_timestamp, max_timestamp.
_INFO = struct.Struct(f"<qqI{F.BATCH_RECORD_COUNT - F.BATCH_CRC}xIqq")
assert _INFO.size == F.BATCH_MAX_TIMESTAMP + 8
_U32_AT = struct.Struct("<I").unpack_from
_new_tuple = tuple.__new__


def encode_plain_values(values: Sequence[bytes], ts: int) -> tuple[bytearray, list[int]] | None:
    """Keyless, headerless records of plain-bytes values, back to back, and each one's size,
    by the C loop; None without the C module or when some value is not plain bytes (the caller
    then encodes record by record)."""
    if _fast is None:
        return None
    return _fast.encode_values(values, ts)


_I32 = F.I32
_U16 = F.U16
# A record's fixed parts (docs/FORMAT.md 2.2): record_length is not counted in its own value; the
# prefix is record_length, timestamp and key_length; value_length and the header count follow.
_LEN_SIZE, _PREFIX_SIZE, _I32_SIZE, _U16_SIZE = F.RECORD_LENGTH_SIZE, _REC_HEAD.size, _I32.size, _U16.size
# Below this many records to return, the Python loop is quicker than setting up the C path.
_FAST_MIN_RECORDS = 4


def validate_batch(buf: bytes | bytearray | memoryview, max_bytes: int = F.MAX_BATCH_BYTES,
                   compacted_ok: bool = True) -> BatchInfo:
    """Check one whole batch's framing and CRC; raise CorruptRecordError or RecordTooLargeError.
    compacted_ok=False (a producer's batch) refuses the log cleaner's compacted-away batches.

    Per-batch work only: header fields and one CRC over the bytes.
    """
    h = _checked_header(buf, max_bytes, compacted_ok)
    return BatchInfo(h[0], h[1], h[2], h[7], h[8], h[9])


def produced_batch(buf: bytes | bytearray | memoryview, max_bytes: int) -> BatchInfo | None:
    """The BatchInfo of a producer's batch that both `validate_batch(buf, max_bytes,
    compacted_ok=False)` and `check_records` accept, from one C call (edgebus/records.c
    eb_check_batch: header, CRC, every record); None when either would refuse it, or without the
    C module: the caller then runs those two, whose errors say what is wrong. The supervisor's
    produce path, once per PRODUCE (tests/test_check_batch.py holds it to the two)."""
    if _check_batch is None:
        return None
    rc = _check_batch(_from_buffer(buf), len(buf), max_bytes, 0)
    # rc 0: refused; -1: accepted by a build without zlib, which leaves the CRC to us.
    if rc <= 0 and (rc == 0 or zlib.crc32(memoryview(buf)[F.CRC_START:])
                    != _U32_AT(buf, F.BATCH_CRC)[0]):
        return None
    return _new_tuple(BatchInfo, _INFO.unpack_from(buf, 0))


def is_compacted(buf: bytes | bytearray | memoryview) -> bool:
    """Whether a (validated) batch is a compacted-away batch: offsets without records."""
    return bool(buf[F.BATCH_ATTRIBUTES] & F.ATTR_COMPACTED)


def _checked_header(buf: bytes | bytearray | memoryview, max_bytes: int,
                    compacted_ok: bool = True) -> tuple[int, ...]:
    """validate_batch's checks; the header's fields unpacked (F.BATCH_HEADER order)."""
    n = len(buf)
    if n < F.BATCH_HEADER_SIZE:
        raise CorruptRecordError(f"batch of {n} bytes is shorter than its {F.BATCH_HEADER_SIZE}-byte header")
    h = F.BATCH_HEADER.unpack_from(buf, 0)
    (_base, _atime, length, crc, magic, attrs, _r, count, _first_ts, _max_ts, _pid, _seq, _ep, _r2) = h
    if length != n:
        raise CorruptRecordError(f"batch length field says {length} bytes but {n} were sent")
    if length > max_bytes:
        raise RecordTooLargeError(f"batch of {length} bytes exceeds the limit of {max_bytes} bytes")
    if magic != F.MAGIC:
        raise CorruptRecordError(f"unknown batch magic {magic}, expected {F.MAGIC}")
    if attrs & F.ATTR_CODEC_MASK:
        raise CorruptRecordError(f"compression codec {attrs & F.ATTR_CODEC_MASK} is not supported")
    if count < 1:
        raise CorruptRecordError("batch has no records")
    if attrs & F.ATTR_COMPACTED:
        if not compacted_ok:
            raise CorruptRecordError("a compacted-away batch (attributes bit 3) is written only by "
                                     "the supervisor's log cleaner, never produced")
        if length != F.BATCH_HEADER_SIZE:
            raise CorruptRecordError(f"a compacted-away batch has no records, but is {length} bytes")
    # Every record takes at least 22 bytes, so a count beyond that is a lie we can catch cheaply.
    elif count * F.RECORD_MIN_SIZE > length - F.BATCH_HEADER_SIZE:
        raise CorruptRecordError(f"record count {count} cannot fit in {length} bytes")
    if zlib.crc32(memoryview(buf)[F.CRC_START:length]) != crc:
        raise CorruptRecordError("batch CRC mismatch")
    return h


def check_records(buf: bytes | bytearray | memoryview, info: BatchInfo) -> None:
    """Check that the records of a validated batch decode as every consumer will decode them
    (lengths consistent, header keys UTF-8); CorruptRecordError names the first that does not.
    The supervisor calls this at produce, so that a batch with a valid CRC but undecodable records
    is refused instead of failing every reader of its partition. The per-record loop is C
    (edgebus/records.c eb_check_records, no allocation; `bench/micro.py` measures it); without the
    C module, the Python decoder."""
    bad = None
    if _fast is not None:
        try:
            _fast.check_records(buf, info.length, info.record_count)
            return
        except ValueError as e:
            bad = f"record {e.args[0]} of {info.record_count}"
    try:  # the Python decoder, without keeping the records; after C, for the reason's wording
        decode_batch(memoryview(buf), "", 0, info.base_offset + info.record_count)
    except CorruptRecordError as e:
        raise CorruptRecordError(f"the batch's records do not decode: {e}") from None
    if bad is not None:  # not reached (the two agree: tests/test_check_records.py)
        raise CorruptRecordError(f"the batch's records do not decode: {bad} is malformed")


def stamp_batch(buf: bytearray | memoryview, base_offset: int, append_time: int) -> None:
    """Write the supervisor's fields (outside the CRC) into a validated batch."""
    F.BATCH_STAMP.pack_into(buf, 0, base_offset, append_time)


def whole_batches(buf: bytes | memoryview | None, end: int | None = None) -> tuple[int, int, int]:
    """(bytes, first base offset, next offset) of the leading whole batches of `buf`, read from
    their headers only (no CRC): a trailing partial batch, and with `end` every batch that does
    not end at or before that offset, are left out. Offsets are -1 when there is no batch."""
    mv = memoryview(buf or b"")
    pos = 0
    first = nxt = -1
    scan = F.BATCH_SCAN
    while len(mv) - pos >= F.BATCH_HEADER_SIZE:
        base, length, count = scan.unpack_from(mv, pos)
        if length < F.BATCH_HEADER_SIZE or pos + length > len(mv):
            break
        if end is not None and base + count > end:
            break
        if first < 0:
            first = base
        nxt = base + count
        pos += length
    return pos, first, nxt


def iter_batches(buf: bytes | memoryview) -> Iterator[memoryview]:
    """Split a fetched chunk of whole batches; a trailing partial batch is ignored."""
    mv = memoryview(buf)
    pos = 0
    end = len(mv)
    while end - pos >= F.BATCH_PREFIX_SIZE:
        length = F.BATCH_PREFIX.unpack_from(mv, pos)[2]
        if length < F.BATCH_HEADER_SIZE:
            raise CorruptRecordError(f"batch at byte {pos} has impossible length {length}")
        if pos + length > end:
            return
        yield mv[pos : pos + length]
        pos += length


def decode_batch(batch: bytes | memoryview, topic: str, partition: int, min_offset: int = 0) -> list[Record]:
    """Validate a batch and decode its records with offset >= min_offset."""
    h = _checked_header(batch, F.MAX_BATCH_BYTES)
    base_offset, length, record_count = h[0], h[2], h[7]
    if h[5] & (F.ATTR_COMPACTED | F.ATTR_CONTROL):  # removed offsets, or a transaction marker
        return []
    if _fast is not None and record_count - max(0, min_offset - base_offset) >= _FAST_MIN_RECORDS:
        try:
            return _fast.decode_records(batch, base_offset, length, record_count,
                                        topic, partition, min_offset, Record, _headers_at)
        except (ValueError, struct.error):
            pass  # malformed: the Python decoder below names the record and the reason
    mv = memoryview(batch)
    pos = F.BATCH_HEADER_SIZE
    out: list[Record] = []
    offset = base_offset
    unpack_head = _REC_HEAD.unpack_from
    unpack_i32 = _I32.unpack_from
    unpack_u16 = _U16.unpack_from
    try:
        for _ in range(record_count):
            rlen, ts, klen = unpack_head(mv, pos)
            if klen < -1:
                raise CorruptRecordError(f"record at offset {offset} has key length {klen}")
            rend = pos + _LEN_SIZE + rlen
            if rend > length:
                raise CorruptRecordError(f"record at offset {offset} overruns its batch")
            p = pos + _PREFIX_SIZE
            if klen >= 0:
                key = bytes(mv[p : p + klen])
                p += klen
            else:
                key = None
            vlen = unpack_i32(mv, p)[0]
            p += _I32_SIZE
            if vlen < -1:
                raise CorruptRecordError(f"record at offset {offset} has value length {vlen}")
            if vlen >= 0:
                value = bytes(mv[p : p + vlen])
                p += vlen
            else:
                value = None
            hcount = unpack_u16(mv, p)[0]
            p += _U16_SIZE
            headers: Headers = []
            for _h in range(hcount):
                hklen = unpack_u16(mv, p)[0]
                p += _U16_SIZE
                hk = bytes(mv[p : p + hklen]).decode()
                p += hklen
                hvlen = unpack_i32(mv, p)[0]
                p += _I32_SIZE
                if hvlen < -1:
                    raise CorruptRecordError(
                        f"record at offset {offset} has header value length {hvlen}"
                    )
                if hvlen >= 0:
                    hv: bytes | None = bytes(mv[p : p + hvlen])
                    p += hvlen
                else:
                    hv = None
                headers.append((hk, hv))
            if p != rend:
                raise CorruptRecordError(f"record at offset {offset} has inconsistent lengths")
            if offset >= min_offset:
                out.append(Record(topic, partition, offset, ts, key, value, headers))
            offset += 1
            pos = rend
    except (struct.error, UnicodeDecodeError) as e:
        raise CorruptRecordError(f"record at offset {offset} is malformed: {e}") from None
    if pos != length:
        raise CorruptRecordError(f"batch at offset {base_offset} has {length - pos} trailing bytes")
    return out


def _headers_at(data: bytes, p: int, count: int) -> Headers:
    """The headers of a record whose u16 header count is at p (lengths already checked)."""
    headers: Headers = []
    p += _U16_SIZE
    for _ in range(count):
        hklen = _U16.unpack_from(data, p)[0]
        hk = data[p + _U16_SIZE : p + _U16_SIZE + hklen].decode()
        p += _U16_SIZE + hklen
        hvlen = _I32.unpack_from(data, p)[0]
        p += _I32_SIZE
        if hvlen >= 0:
            headers.append((hk, data[p : p + hvlen]))
            p += hvlen
        else:
            headers.append((hk, None))
    return headers
