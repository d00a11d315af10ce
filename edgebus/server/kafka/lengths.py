"""A bound on every length in a Kafka request before kio decodes it.

kio's native reader allocates an array's capacity from the length the client sent before it reads
a single element: a compact-array length of 2**35 - 1 (a five-byte varint) in a 12-byte Produce
v9 body made it ask for hundreds of gigabytes, and the allocation failure aborts the whole
supervisor (Rust aborts on out-of-memory; no Python exception is raised). So each request is first
walked here with the same kio schema: every array, string and bytes length must fit in the bytes
that remain (each array element takes at least one byte). That is a typed ProtocolError, which
closes only the offending connection.

The walk only refuses lengths that are certainly impossible; where the schema has a shape it does
not know it stops checking and leaves the rest to kio (so it can never refuse a request kio would
read). It costs a few microseconds per request, none per record (record batches are one `records`
field).
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

from edgebus.errors import ProtocolError

_FIXED = {"bool": 1, "int8": 1, "int16": 2, "uint16": 2, "error_code": 2, "int32": 4,
          "timedelta_i32": 4, "int64": 8, "timedelta_i64": 8, "datetime_i64": 8, "float64": 8,
          "uuid": 16}
_STRINGS = ("string",)
_BYTES = ("bytes", "records")


class _Unknown(Exception):
    """A shape this walk does not follow: stop checking, let kio decode."""


@cache
def _plan(cls: type) -> tuple[tuple[str, Any, str], ...]:
    """(kind, nested class or None, kafka_type) for each untagged field, in wire order."""
    # Imported here, not at start: kio.serial imports asyncio and ssl (codec.py).
    from kio.serial._introspect import (
        EntityField,
        EntityTupleField,
        PrimitiveTupleField,
        classify_field,
        get_field_tag,
    )

    out: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(cls):
        if get_field_tag(f) is not None:
            continue  # carried in the tagged-field section, walked by its sizes
        fc = classify_field(f)
        if isinstance(fc, EntityTupleField):
            out.append(("entities", fc.type_, ""))
        elif isinstance(fc, EntityField):
            # A nullable struct (KIP-893: DescribeTopicPartitions' cursor) starts with an int8
            # marker, -1 for null.
            nullable = type(None) in typing.get_args(f.type)
            out.append(("nullable entity" if nullable else "entity", fc.type_, ""))
        elif isinstance(fc, PrimitiveTupleField):
            out.append(("array", None, f.metadata.get("kafka_type", "")))
        else:
            out.append(("value", None, f.metadata.get("kafka_type", "")))
    return tuple(out)


def _uvarint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 28:
            raise _Unknown  # kio reports the bad varint itself
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _i16(buf: memoryview, pos: int, end: int) -> int:
    if pos + 2 > end:
        raise _Unknown
    return int.from_bytes(buf[pos:pos + 2], "big", signed=True)


def _i32(buf: memoryview, pos: int, end: int) -> int:
    if pos + 4 > end:
        raise _Unknown
    return int.from_bytes(buf[pos:pos + 4], "big", signed=True)


def _fits(n: int, pos: int, end: int, what: str) -> None:
    if n > end - pos:
        raise ProtocolError(f"{what} length {n} in a request with {end - pos} bytes left")


def _sized(kind: str, flexible: bool, buf: memoryview, pos: int, end: int) -> int:
    """Skip one string or bytes value; the position after it."""
    if flexible:
        n, pos = _uvarint(buf, pos, end)
        n -= 1  # compact: length + 1, 0 = null
    elif kind in _STRINGS:
        n, pos = _i16(buf, pos, end), pos + 2
    else:
        n, pos = _i32(buf, pos, end), pos + 4
    if n <= 0:
        return pos
    _fits(n, pos, end, kind)
    return pos + n


def _count(flexible: bool, buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    if flexible:
        n, pos = _uvarint(buf, pos, end)
        n -= 1
    else:
        n, pos = _i32(buf, pos, end), pos + 4
    if n > 0:
        _fits(n, pos, end, "array")
    return n, pos


def _walk(cls: type, buf: memoryview, pos: int, end: int) -> int:
    flexible = bool(cls.__flexible__)  # type: ignore[attr-defined]
    for kind, nested, ktype in _plan(cls):
        if kind == "entities":
            n, pos = _count(flexible, buf, pos, end)
            for _ in range(max(n, 0)):
                pos = _walk(nested, buf, pos, end)
        elif kind == "entity":
            pos = _walk(nested, buf, pos, end)
        elif kind == "nullable entity":
            if pos >= end:
                raise _Unknown
            null = buf[pos] == 0xFF
            pos += 1
            if not null:
                pos = _walk(nested, buf, pos, end)
        elif kind == "array":
            n, pos = _count(flexible, buf, pos, end)
            for _ in range(max(n, 0)):
                pos = _value(ktype, flexible, buf, pos, end)
        else:
            pos = _value(ktype, flexible, buf, pos, end)
        if pos > end:
            raise _Unknown
    if flexible:  # the tagged-field section: count, then (tag, size, bytes) each
        n, pos = _uvarint(buf, pos, end)
        _fits(n, pos, end, "tagged-field section")
        for _ in range(n):
            _tag, pos = _uvarint(buf, pos, end)
            size, pos = _uvarint(buf, pos, end)
            _fits(size, pos, end, "tagged field")
            pos += size
    return pos


def _value(ktype: str, flexible: bool, buf: memoryview, pos: int, end: int) -> int:
    size = _FIXED.get(ktype)
    if size is not None:
        return pos + size
    if ktype in _STRINGS or ktype in _BYTES:
        return _sized(ktype, flexible, buf, pos, end)
    raise _Unknown


def check(entity: type, data: memoryview, offset: int) -> None:
    """ProtocolError if a length in the request body at data[offset:] exceeds what remains."""
    try:
        _walk(entity, data, offset, len(data))
    except _Unknown:
        return
