"""C helpers for record batches (the cffi module edgebus._records, built from edgebus/records.c at
install): the per-record loops that cost about a microsecond each in Python. Importing this
raises ImportError when the module is not built; edgebus.batch then uses its Python code.

- `encode_values`: the records of a send_batch call with no keys and no headers, encoded in one C
  call (the producer's bulk path).
- `check_records`: the supervisor's produce-time check that a batch's records decode (lengths and
  header keys), without building anything.
- `eb_check_batch`: all of the supervisor's produce-time checks of a batch (header, CRC,
  records) in one call (edgebus.batch.produced_batch).
- `decode_records`: the consumer's decode. C checks every record's lengths and writes a
  `struct` format that picks each record's timestamp, key and value out of the batch; one
  `Struct.unpack_from` call then makes all of those objects, and `map` makes the records, so no
  Python bytecode runs per record (about 0.2 us a record instead of 0.6). Same results and
  errors as the Python decoder in edgebus.batch, which is the specification
  (tests/shm/test_records.py and tests/shm/test_consumer_fast.py run both on the same inputs).
"""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from edgebus import format as F
from edgebus._records import ffi, lib

_FIELDS = lib.EB_IDX_FIELDS
RECORD_OVERHEAD = F.RECORD_MIN_SIZE  # bytes of a record with no key and no headers, besides its value

# Records per struct format: bounds a compiled Struct (about 50 bytes a record) and the format
# text (at most EB_FMT_PER_RECORD bytes a record: 56 KiB here).
CHUNK = 1024
# Compiled formats kept, by format text. Batches built alike (a producer sending records of one
# size) share a format, so the format is compiled once; other batches cost a compile (about 40
# ns a record, still less than slicing). Cleared when full: a few MiB at most.
FORMAT_CACHE = 16
_formats: dict[bytes, struct.Struct] = {}
_KEYS, _VALUES = lib.EB_FMT_KEYS, lib.EB_FMT_VALUES
_FMT_BYTES = lib.EB_FMT_PER_RECORD * CHUNK + 2
_PLAN = lib.EB_PLAN_FIELDS
# eb_plan_fetched (the consumer's fast path): None in a module built before it was added.
_plan_fetched: Any = getattr(lib, "eb_plan_fetched", None)
_FETCHED = getattr(lib, "EB_FETCHED_FIELDS", 5)
# eb_plan_fetched's out[]: high watermark, log start, end offset, records, first offset (int64s).
_FETCHED_OUT = struct.Struct("=5q")


class Planner:
    """eb_plan_fetched's output buffers for one user of fetched_at at a time (a consumer's
    channel, edgebus/client/quick_take.py, or one thread through fetched_records), with buffer
    views that read them without a cffi call's argument parsing."""

    __slots__ = ("fmt", "fmt_view", "out", "out_view")

    def __init__(self) -> None:
        self.fmt = ffi.new_allocator(should_clear_after_alloc=False)("char[]", _FMT_BYTES)
        self.fmt_view = ffi.buffer(self.fmt)
        self.out = ffi.new("int64_t[]", _FETCHED)
        self.out_view = ffi.buffer(self.out)


class _Scratch(threading.local):
    """Per-thread C buffers for decode_records (cffi drops the GIL during C calls, so threads
    must not share them): the plan, the format text, the next position."""

    def __init__(self) -> None:
        self.plan = ffi.new("int64_t[]", _PLAN)
        self.fmt = ffi.new_allocator(should_clear_after_alloc=False)("char[]", _FMT_BYTES)
        self.next_pos = ffi.new("uint64_t *")
        self.planner = Planner()


_scratch = _Scratch()


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


def index_records(data: Any, length: int, count: int) -> array[int]:
    """EB_IDX_FIELDS int64 per record; ValueError(i) naming the first malformed record."""
    idx = array("q", bytes(8 * _FIELDS * count))
    rc = lib.eb_index_records(ffi.from_buffer(data), length, count, ffi.from_buffer("int64_t[]", idx))
    if rc < 0:
        raise ValueError(-rc - 1)
    return idx


# eb_check_batch(ffi.from_buffer(batch), len(batch), max_bytes, compacted_ok): the record count
# when the header, CRC and every record hold; -1 (EB_CHECK_NO_CRC) when all but the CRC hold and
# the module was built without zlib; 0 when something is wrong. edgebus.batch.produced_batch
# calls it directly (no wrapper: once per PRODUCE). None in a module built before it was added
# (an install not rebuilt since): the Python checks then run, as without the module.
eb_check_batch: Any = getattr(lib, "eb_check_batch", None)
from_buffer = ffi.from_buffer


def check_records(data: Any, length: int, count: int) -> None:
    """Check every record of a batch as the consumer's decoder will (lengths, header keys as
    UTF-8) without building anything; ValueError(i) names the first malformed record."""
    rc = lib.eb_check_records(ffi.from_buffer(data), length, count)
    if rc < 0:
        raise ValueError(-rc - 1)


def _struct_for(fmt: bytes) -> struct.Struct:
    st = _formats.get(fmt)
    if st is None:
        if len(_formats) >= FORMAT_CACHE:
            _formats.clear()
        st = _formats[fmt] = struct.Struct(fmt)
    return st


def fetched_records(body: Any, want: bytes, min_offset: int, topic: str, partition: int,
                    make: Callable[..., Any]) -> tuple[list[Any], int, int, int] | None:
    """The consumer's fast path for one FETCH answer (edgebus/records_fetch.c eb_plan_fetched): the
    records at offset >= min_offset of a response body answering only the partition `want`
    names (its body prefix: partition count 1, topic, partition), each made by make(topic,
    partition, offset, timestamp, key, value), with the high watermark, log start offset and the
    offset after the last whole batch. None for anything the general decoder must look at (an
    error, damage, headers, null values, gaps, no records, more than CHUNK records): one C call
    checks and plans everything, one Struct.unpack_from makes every timestamp, key and value."""
    if _plan_fetched is None:
        return None
    return fetched_at(from_buffer(body), len(body), body, 0, want, min_offset, topic, partition,
                      make, _scratch.planner)


def fetched_at(body: Any, n: int, view: Any, at: int, want: bytes, min_offset: int, topic: str,
               partition: int, make: Callable[..., Any], p: Planner
               ) -> tuple[list[Any], int, int, int] | None:
    """fetched_records of the n-byte body at the C pointer `body`, which is `view` (any buffer)
    from byte `at` on: the records are unpacked from view where they lie (a consumer's reused
    answer buffer, edgebus/client/quick_take.py); p: the caller's Planner. The module must have
    eb_plan_fetched."""
    flen = _plan_fetched(body, n, want, len(want), min_offset, CHUNK, p.fmt, _FMT_BYTES, p.out)
    if flen <= 0:
        return None
    hw, ls, end, k, first = _FETCHED_OUT.unpack_from(p.out_view)
    return planned(view, at, p.fmt_view, flen, k, first, topic, partition, make), hw, ls, end


def planned(view: Any, at: int, fmt_view: Any, flen: int, k: int, first: int, topic: str,
            partition: int, make: Callable[..., Any]) -> list[Any]:
    """The k records eb_plan_fetched planned (its format: the first flen bytes of fmt_view),
    unpacked from view at byte `at` (the body's first byte), the first at offset `first`."""
    key = fmt_view[:flen]
    st = _formats.get(key)  # _struct_for's common case, without its call (once per answer)
    fields = (st or _struct_for(key)).unpack_from(view, at)
    if k == 1:  # one record (a paced consumer's every answer): no iterators to make
        return [make(topic, partition, first, fields[0], None, fields[1]) if len(fields) == 2
                else make(topic, partition, first, *fields)]
    if len(fields) == 2 * k:
        return list(map(make, repeat(topic), repeat(partition), range(first, first + k),
                        fields[0::2], repeat(None), fields[1::2]))
    # keyed: timestamp, key, value
    return list(map(make, repeat(topic), repeat(partition), range(first, first + k),
                    fields[0::3], fields[1::3], fields[2::3]))


def decode_records(batch: Any, base_offset: int, length: int, count: int, topic: str,
                   partition: int, min_offset: int, make: Callable[..., Any],
                   headers_at: Callable[[bytes, int, int], Any]) -> list[Any]:
    """Records of one validated batch (batch: its bytes, any buffer) with offset >= min_offset,
    each made by make(topic, partition, offset, timestamp, key, value, headers or None).
    ValueError(i) names the first malformed record (the caller re-decodes in Python for the
    error's wording)."""
    skip = min(max(0, min_offset - base_offset), count)
    sc = _scratch
    buf = ffi.from_buffer(batch)
    fmt = sc.fmt
    flen = lib.eb_plan_records(buf, length, count, skip, CHUNK, fmt, _FMT_BYTES, sc.plan)
    if flen < 0:
        raise ValueError(-flen - 1)
    pos, k, next_pos, null_keys, null_values, with_headers, flags = ffi.unpack(sc.plan, _PLAN)
    n = count - skip
    if not n:
        return []
    step = 1 + bool(flags & _KEYS) + bool(flags & _VALUES)
    idx: Any = None
    if with_headers or 0 < null_keys < n or 0 < null_values < n:
        idx = index_records(batch, length, count)  # nulls to restore, headers to decode
        data = bytes(batch) if with_headers else b""
    out: list[Any] = []
    first = 0  # index (from skip) of this chunk's first record
    while True:
        fields = _struct_for(ffi.unpack(fmt, flen)).unpack_from(batch, pos)
        keys: Any = fields[1::step] if flags & _KEYS else repeat(None)
        values: Any = fields[step - 1 :: step] if flags & _VALUES else repeat(None)
        headers: Any = repeat(None)
        if idx is not None:
            lo, hi = (skip + first) * _FIELDS, (skip + first + k) * _FIELDS
            if 0 < null_keys < n:
                keys = [None if kl < 0 else key for key, kl in zip(keys, idx[lo + 2 : hi : _FIELDS], strict=True)]
            if 0 < null_values < n:
                values = [None if vl < 0 else v for v, vl in zip(values, idx[lo + 4 : hi : _FIELDS], strict=True)]
            if with_headers:
                hps, hcs = idx[lo + 5 : hi : _FIELDS], idx[lo + 6 : hi : _FIELDS]
                headers = [headers_at(data, hp, hc) if hc else None for hp, hc in zip(hps, hcs, strict=True)]
        off = base_offset + skip + first
        recs = map(make, repeat(topic), repeat(partition), range(off, off + k), fields[0::step], keys,
                   values, headers)
        if first:
            out.extend(recs)
        else:
            out = list(recs)
        first += k
        if first >= n:
            return out
        pos = next_pos
        k = min(CHUNK, n - first)
        flen = lib.eb_format_records(buf, length, pos, k, flags, fmt, _FMT_BYTES, sc.next_pos)
        if flen < 0:
            raise ValueError(skip + first)  # not reached: eb_plan_records checked every record
        next_pos = sc.next_pos[0]


# eb_produce_frame(out, cap, prefix, len(prefix), key, klen, value, vlen, ts, corr, api): a
# one-record PRODUCE request frame written into `out` (edgebus/records.c); its length, or < 0
# (out too small; -2: built without zlib). The cffi function itself: a wrapper would cost a
# Python call per send (edgebus/client/fast_send.py).
eb_produce_frame: Any = getattr(lib, "eb_produce_frame", None)
NULL = ffi.NULL
# eb_sock_produce(fd, out, cap, prefix, len(prefix), key, klen, value, vlen, ts, corr, api,
# check_unread): the same frame built and given to one non-blocking send(2) (edgebus/sock_send.c);
# the bytes it took, or < 0 (SEND_DECLINED: the supervisor has bytes unread; -(1000 + errno)).
eb_sock_produce: Any = getattr(lib, "eb_sock_produce", None)
SEND_DECLINED: int = getattr(lib, "EB_SEND_DECLINED", -3)


def frame_buffer(size: int) -> Any:
    """A C buffer for eb_produce_frame (not zeroed: every byte of a frame is written)."""
    return ffi.new_allocator(should_clear_after_alloc=False)("char[]", size)


ffi_buffer = ffi.buffer  # a writable buffer over a C buffer (memoryview(ffi_buffer(buf)))


def frame_bytes(buf: Any, n: int) -> bytes:
    """The first n bytes of a frame_buffer, as bytes."""
    return bytes(ffi.buffer(buf, n))
