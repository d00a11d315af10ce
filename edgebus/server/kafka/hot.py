"""The two hot answers, Produce (v3-v9) and Fetch (v4-v12), written as whole frames in one pass.

Every other answer goes through kio (codec.py), which builds a dataclass per partition and walks
its schema per field: about 20 us for a one-partition Produce answer, most of what a one-record
produce request cost the supervisor. These layouts are fixed (Kafka's ProduceResponse.json and
FetchResponse.json, the versions served here), so they are written once below with `struct`; the
bytes are exactly kio's for the same values (tests/kafka_listener/test_hot.py compares them for
every version served, with errors, messages, null and empty fields). Only the fields edgebus ever
sets are taken: no record errors, no throttling, no tagged fields (kio leaves out a tagged field
at its default, and edgebus never sets one).

Flexible versions (Produce v9, Fetch v12) use compact lengths (unsigned varint of n + 1, 0 =
null) and an empty tagged-field section (one 0 byte) after every structure, and the response
header v1 (correlation id, then its own empty tagged fields).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
# Produce: index, error_code, base_offset, log_append_time (-1: CreateTime), log_start_offset.
_PRODUCE_V3 = struct.Struct(">ihqq")
_PRODUCE_V5 = struct.Struct(">ihqqq")
# Fetch: partition_index, error_code, high_watermark, last_stable_offset[, log_start_offset].
_FETCH_V4 = struct.Struct(">ihqq")
_FETCH_V5 = struct.Struct(">ihqqq")
_ABORTED = struct.Struct(">qq")
_HEADER = struct.Struct(">ii")  # frame length, correlation id
_FETCH_TOP = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id (v7+)

PRODUCE_FLEXIBLE, FETCH_FLEXIBLE = 9, 12

# (partition index, error code, base offset, log start offset, error message)
ProducePart = tuple[int, int, int, int, "str | None"]
# (partition, error, high watermark, last stable offset, log start offset,
#  aborted transactions ((producer id, first offset), ...) or None, records)
FetchPart = tuple[int, int, int, int, int, "Sequence[tuple[int, int]] | None", "bytes | None"]


def _uvarint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _count(n: int | None, flexible: bool) -> bytes:
    """An array's length (None: null)."""
    if flexible:
        return _uvarint(0 if n is None else n + 1)
    return _I32.pack(-1 if n is None else n)


def _string(s: str | None, flexible: bool) -> bytes:
    if s is None:
        return b"\x00" if flexible else b"\xff\xff"
    b = s.encode()
    return (_uvarint(len(b) + 1) if flexible else _I16.pack(len(b))) + b


def produce_response(version: int, corr: int,
                     topics: Sequence[tuple[str, Sequence[ProducePart]]]) -> bytes:
    """The whole Produce response frame (length prefix included)."""
    flex = version >= PRODUCE_FLEXIBLE
    out: list[bytes] = [b"", _I32.pack(corr)]
    if flex:
        out.append(b"\x00")  # response header v1: no tagged fields
    out.append(_count(len(topics), flex))
    tail = b"\x00" if flex else b""
    for name, parts in topics:
        out.append(_string(name, flex))
        out.append(_count(len(parts), flex))
        for index, error, base, log_start, message in parts:
            if version >= 5:
                out.append(_PRODUCE_V5.pack(index, error, base, -1, log_start))
            else:
                out.append(_PRODUCE_V3.pack(index, error, base, -1))
            if version >= 8:
                out.append(_count(0, flex))  # record_errors: none
                out.append(_string(message, flex))
            out.append(tail)
        out.append(tail)
    out.append(b"\x00\x00\x00\x00")  # throttle_time_ms
    out.append(tail)
    return _with_length(out)


def fetch_response(version: int, corr: int,
                   topics: Sequence[tuple[str, Sequence[FetchPart]]]) -> bytes:
    """The whole Fetch response frame (length prefix included): session 0, no top-level error,
    no throttling. The records bytes are copied once, into the frame."""
    flex = version >= FETCH_FLEXIBLE
    out: list[bytes] = [b"", _I32.pack(corr)]
    if flex:
        out.append(b"\x00")
    out.append(_FETCH_TOP.pack(0, 0, 0) if version >= 7 else b"\x00\x00\x00\x00")
    out.append(_count(len(topics), flex))
    tail = b"\x00" if flex else b""
    for name, parts in topics:
        out.append(_string(name, flex))
        out.append(_count(len(parts), flex))
        for index, error, hw, lso, log_start, aborted, records in parts:
            if version >= 5:
                out.append(_FETCH_V5.pack(index, error, hw, lso, log_start))
            else:
                out.append(_FETCH_V4.pack(index, error, hw, lso))
            if aborted is None:
                out.append(_count(None, flex))
            else:
                out.append(_count(len(aborted), flex))
                for pid, first in aborted:
                    out.append(_ABORTED.pack(pid, first))
                    out.append(tail)
            if version >= 11:
                out.append(b"\xff\xff\xff\xff")  # preferred_read_replica: -1
            if records is None:
                out.append(b"\x00" if flex else b"\xff\xff\xff\xff")
            else:
                out.append(_uvarint(len(records) + 1) if flex else _I32.pack(len(records)))
                out.append(records)
            out.append(tail)
        out.append(tail)
    out.append(tail)
    return _with_length(out)


def _with_length(out: list[bytes]) -> bytes:
    """out[0] is a placeholder for the frame's length prefix."""
    out[0] = _I32.pack(sum(map(len, out)))
    return b"".join(out)
