"""C helpers for record batches (in the same cffi module as the ring): the per-record loops that
cost about a microsecond each in Python.

- `encode_values`: the records of a send_batch call with no keys and no headers, encoded in one C
  call (the producer's bulk path).
- `decode_batch`: the consumer's decode; C walks and checks every record's lengths and returns an
  index, Python only makes the Record objects. Same results and errors as the Python decoder in
  edgebus.batch (tests/shm/test_records.py runs both on the same inputs).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from edgebus.shm._ring import ffi, lib

_FIELDS = lib.EB_IDX_FIELDS
RECORD_OVERHEAD = 22  # bytes of a record with no key and no headers, besides its value


def encode_values(values: Sequence[bytes], ts: int) -> tuple[bytearray, list[int]] | None:
    """(encoded records back to back, each record's size), or None when some value is not
    plain bytes (the caller then uses the general path)."""
    try:
        blob = b"".join(values)
    except TypeError:
        return None
    lens = array("I", map(len, values))
    if len(blob) != sum(lens) or None in values:  # a memoryview of wider items, or a null
        return None
    n = len(lens)
    out = bytearray(len(blob) + RECORD_OVERHEAD * n)
    lib.eb_encode_values(ffi.from_buffer(out), blob, ffi.from_buffer("uint32_t[]", lens), n, ts)
    return out, [RECORD_OVERHEAD + x for x in lens]


def index_records(data: bytes, length: int, count: int) -> array:
    """EB_IDX_FIELDS int64 per record; ValueError(i) naming the first malformed record."""
    idx = array("q", bytes(8 * _FIELDS * count))
    rc = lib.eb_index_records(data, length, count, ffi.from_buffer("int64_t[]", idx))
    if rc < 0:
        raise ValueError(-rc - 1)
    return idx


def decode_records(data: bytes, base_offset: int, length: int, count: int, topic: str,
                   partition: int, min_offset: int, record_cls: type, headers_at: object) -> list:
    """Records of one validated batch (data: its bytes) with offset >= min_offset."""
    idx = index_records(data, length, count)
    out = []
    append = out.append
    it = iter(idx)
    offset = base_offset
    skip = max(0, min_offset - base_offset)
    for ts, kp, kl, vp, vl, hp, hc in zip(it, it, it, it, it, it, it, strict=True):
        if skip:
            skip -= 1
            offset += 1
            continue
        append(record_cls(topic, partition, offset, ts,
                          None if kl < 0 else data[kp : kp + kl],
                          None if vl < 0 else data[vp : vp + vl],
                          headers_at(data, hp, hc) if hc else []))
        offset += 1
    return out


