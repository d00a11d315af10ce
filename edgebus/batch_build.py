"""Record batches, the producer's side: encode records and build a batch around them (the
layouts of docs/FORMAT.md section 2). edgebus/batch.py, which checks, stamps and decodes them,
re-exports every name here: `edgebus.batch.build_batch` stays the way to call it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from edgebus import format as F
from edgebus.errors import RecordTooLargeError

_REC_HEAD = F.RECORD_PREFIX  # record_length, timestamp, key_len
_REC_NOKEY = F.RECORD_PREFIX_NO_KEY  # record_length, timestamp, key_len (-1), value_len
_NOKEY_REST = F.RECORD_MIN_SIZE - F.RECORD_LENGTH_SIZE  # record_length of a keyless, headerless record, less its value
_I32 = F.I32
_U16 = F.U16
# A record's fixed parts (docs/FORMAT.md 2.2): record_length is not counted in its own value; the
# prefix is record_length, timestamp and key_length; value_length and the header count follow.
_LEN_SIZE, _PREFIX_SIZE, _I32_SIZE, _U16_SIZE = F.RECORD_LENGTH_SIZE, _REC_HEAD.size, _I32.size, _U16.size
_BODY_FIXED = _PREFIX_SIZE - _LEN_SIZE + _I32_SIZE  # record_length's value, without key, value, headers


def encode_record(
    timestamp: int, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> bytes:
    """One record's bytes (record_length prefix included)."""
    if key is None and not headers and value is not None:  # the common record: one pack, one join
        return b"".join((_REC_NOKEY.pack(_NOKEY_REST + len(value), timestamp, -1, len(value)), value, b"\x00\x00"))
    klen = -1 if key is None else len(key)
    vlen = -1 if value is None else len(value)
    parts: list[bytes] = []
    if headers:
        if len(headers) > F.MAX_HEADERS_PER_RECORD:
            raise RecordTooLargeError(f"{len(headers)} headers, at most {F.MAX_HEADERS_PER_RECORD}")
        hparts = [_U16.pack(len(headers))]
        for hk, hv in headers:
            kb = hk.encode()
            if len(kb) > 0xFFFF:
                raise RecordTooLargeError(f"header key of {len(kb)} bytes, at most 65535")
            hparts.append(_U16.pack(len(kb)))
            hparts.append(kb)
            if hv is None:
                hparts.append(_I32.pack(-1))
            else:
                hparts.append(_I32.pack(len(hv)))
                hparts.append(hv)
        htail = b"".join(hparts)
    else:
        htail = b"\x00\x00"
    body_len = _BODY_FIXED + max(klen, 0) + max(vlen, 0) + len(htail)
    parts.append(_REC_HEAD.pack(body_len, timestamp, klen))
    if key:
        parts.append(key)
    parts.append(_I32.pack(vlen))
    if value:
        parts.append(value)
    parts.append(htail)
    return b"".join(parts)


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> int:
    """Encoded size of a record, for batch sizing before encoding."""
    size = _PREFIX_SIZE + (len(key) if key else 0) + _I32_SIZE + (len(value) if value else 0) + _U16_SIZE
    for hk, hv in headers:
        size += _U16_SIZE + len(hk.encode()) + _I32_SIZE + (len(hv) if hv else 0)
    return size


def build_batch(
    encoded_records: Sequence[bytes],
    first_timestamp: int,
    max_timestamp: int,
    producer_id: int = -1,
    base_sequence: int = -1,
    producer_epoch: int = -1,
    record_count: int | None = None,
) -> bytes:
    """A whole batch from already-encoded records; base_offset and append_time are left 0.
    record_count: how many records encoded_records holds when an element holds several
    (the producer's bulk path passes records encoded back to back); default one per element."""
    parts, _ = batch_parts(encoded_records, first_timestamp, max_timestamp, producer_id,
                           base_sequence, producer_epoch, record_count)
    return b"".join(parts)


def batch_parts(
    encoded_records: Sequence[bytes],
    first_timestamp: int,
    max_timestamp: int,
    producer_id: int = -1,
    base_sequence: int = -1,
    producer_epoch: int = -1,
    record_count: int | None = None,
    attributes: int = 0,
) -> tuple[list[bytes], int]:
    """build_batch's bytes as pieces (the 64-byte header, then the records as given) and their
    total length, for a caller that copies them once into a larger frame (the producer's
    PRODUCE request). The CRC runs over the pieces, so no joined copy is made here: each
    transient copy of a 256 KiB batch costs its page faults as well as the copy.
    `attributes`: F.ATTR_TRANSACTIONAL for a transactional producer's batch."""
    if not encoded_records:
        raise ValueError("a batch needs at least one record")
    body_head = F.BATCH_BODY_HEADER.pack(
        F.MAGIC, attributes, 0, len(encoded_records) if record_count is None else record_count,
        first_timestamp, max_timestamp,
        producer_id, base_sequence, producer_epoch, 0,
    )
    crc = zlib.crc32(body_head)
    length = F.BATCH_HEADER_SIZE
    for rec in encoded_records:
        crc = zlib.crc32(rec, crc)
        length += len(rec)
    return [F.BATCH_OUTSIDE_CRC.pack(0, 0, length, crc) + body_head, *encoded_records], length


def build_compacted(base_offset: int, count: int, append_time: int, first_timestamp: int,
                    max_timestamp: int) -> bytes:
    """The header-only batch standing for `count` offsets from base_offset that the log cleaner
    removed (docs/FORMAT.md 4.8): stamped, with its own CRC."""
    body = F.BATCH_BODY_HEADER.pack(F.MAGIC, F.ATTR_COMPACTED, 0, count, first_timestamp,
                                    max_timestamp, -1, -1, -1, 0)
    return F.BATCH_OUTSIDE_CRC.pack(base_offset, append_time, F.BATCH_HEADER_SIZE,
                                    zlib.crc32(body)) + body
