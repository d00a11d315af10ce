"""The per-record conversions between Kafka records (v2: varints) and edgebus records (docs/FORMAT.md
section 9), in Python: the specification of records_kafka.c's loops (`eb_kafka_to_edgebus`,
`eb_edgebus_to_kafka`) and the fallback when the C module is not built (records.py calls them;
tests check that both give the same bytes and errors).
"""

from __future__ import annotations

import struct

from edgebus.errors import CorruptRecordError


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


def records_to_edgebus(recs: memoryview, count: int, base_ts: int) -> tuple[bytearray, int, int]:
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


def _put_varint(out: bytearray, v: int) -> None:
    z = (v << 1) ^ (v >> 63)
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def records_to_kafka(recs: memoryview, count: int, base_ts: int) -> bytearray:
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
