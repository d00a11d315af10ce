"""Record batches: build, validate, stamp, split, decode (edgebus/batch.py; docs/FORMAT.md s. 2)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import format as F
from edgebus.batch import (
    BatchInfo,
    Record,
    build_batch,
    decode_batch,
    encode_record,
    iter_batches,
    record_size,
    stamp_batch,
    validate_batch,
)
from edgebus.errors import CorruptRecordError, RecordTooLargeError

RecordSpec = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]
TS = 1_700_000_000_000


def make_batch(
    specs: Sequence[RecordSpec], base_offset: int = 0, append_time: int = 0
) -> bytearray:
    """A stamped batch of the given (timestamp, key, value, headers) records."""
    encoded = [encode_record(ts, k, v, h) for ts, k, v, h in specs]
    stamps = [ts for ts, _, _, _ in specs]
    buf = bytearray(build_batch(encoded, stamps[0], max(stamps)))
    stamp_batch(buf, base_offset, append_time)
    return buf


def small_batch() -> bytearray:
    return make_batch([(TS, b"k", b"v", [("h", b"1")]), (TS + 1, None, b"", [])])


def reseal(buf: bytearray) -> bytearray:
    """Fix length and CRC after an edit, so that only the record structure is wrong."""
    struct.pack_into("<I", buf, F.BATCH_LENGTH, len(buf))
    struct.pack_into("<I", buf, F.BATCH_CRC, zlib.crc32(buf[F.CRC_START:]))
    return buf


def as_tuples(records: list[Record]) -> list[RecordSpec]:
    return [(r.timestamp, r.key, r.value, r.headers) for r in records]


# --- round trips ---------------------------------------------------------------------------------

ROUND_TRIP_CASES: dict[str, list[RecordSpec]] = {
    "null key and value": [(TS, None, None, [])],
    "empty key and value": [(TS, b"", b"", [])],
    "empty value, null key": [(TS, None, b"", [])],
    "key and value": [(TS, b"key", b"value", [])],
    "header with null value": [(TS, b"k", b"v", [("a", None), ("b", b"")])],
    "unicode header keys": [
        (TS, None, b"x", [("température", b"21.5"), ("键", None), ("🚀", b"")])
    ],
    "repeated header keys": [(TS, None, b"x", [("a", b"1"), ("a", b"2")])],
    "binary payload": [(TS, bytes(range(256)), bytes(range(255, -1, -1)), [])],
    "negative and extreme timestamps": [(-1, None, b"a", []), (2**63 - 1, None, b"b", []),
                                        (-(2**63), None, b"c", [])],
    "many records": [(TS + i, str(i).encode(), b"v" * (i % 7), [("i", str(i).encode())] * (i % 3))
                     for i in range(1000)],
}


@pytest.mark.unit
@pytest.mark.parametrize("specs", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_round_trip(specs: list[RecordSpec]) -> None:
    buf = make_batch(specs, base_offset=500, append_time=TS + 5)
    info = validate_batch(buf)
    max_ts = max(s[0] for s in specs)
    assert info == BatchInfo(500, TS + 5, len(buf), len(specs), specs[0][0], max_ts)
    records = decode_batch(bytes(buf), "t", 3)
    assert as_tuples(records) == specs
    assert [r.offset for r in records] == list(range(500, 500 + len(specs)))
    assert {(r.topic, r.partition, r.timestamp_type) for r in records} == {("t", 3, 0)}


@pytest.mark.unit
@pytest.mark.parametrize("specs", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_record_size_matches_encoding(specs: list[RecordSpec]) -> None:
    for ts, k, v, h in specs:
        assert record_size(k, v, h) == len(encode_record(ts, k, v, h))


@pytest.mark.unit
def test_decode_accepts_memoryview_and_bytearray() -> None:
    buf = small_batch()
    assert decode_batch(memoryview(buf), "t", 0) == decode_batch(bytes(buf), "t", 0)


@pytest.mark.unit
def test_built_batch_is_unstamped() -> None:
    raw = build_batch([encode_record(TS, None, b"v", [])], TS, TS)
    assert F.BATCH_PREFIX.unpack_from(raw, 0) == (0, 0, len(raw))
    pid, seq, epoch = struct.unpack_from("<qih", raw, F.BATCH_PRODUCER_ID)
    assert (pid, seq, epoch) == (-1, -1, -1)


@pytest.mark.unit
def test_build_batch_needs_a_record() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        build_batch([], TS, TS)


@pytest.mark.unit
def test_encode_record_limits() -> None:
    encode_record(TS, None, b"v", [("h", None)] * F.MAX_HEADERS_PER_RECORD)
    with pytest.raises(RecordTooLargeError, match="headers"):
        encode_record(TS, None, b"v", [("h", None)] * (F.MAX_HEADERS_PER_RECORD + 1))
    encode_record(TS, None, b"v", [("k" * 0xFFFF, None)])
    with pytest.raises(RecordTooLargeError, match="header key"):
        encode_record(TS, None, b"v", [("k" * 0x10000, None)])


# --- validate_batch ------------------------------------------------------------------------------


def _set(fmt: str, pos: int, value: int) -> Callable[[bytearray], bytearray]:
    def edit(buf: bytearray) -> bytearray:
        struct.pack_into(fmt, buf, pos, value)
        return buf

    return edit


REJECTIONS: dict[str, tuple[Callable[[bytearray], bytes | bytearray], type[Exception], str]] = {
    "empty buffer": (lambda b: b"", CorruptRecordError, "shorter than"),
    "short buffer": (lambda b: b[: F.BATCH_HEADER_SIZE - 1], CorruptRecordError, "shorter than"),
    "header only": (lambda b: b[: F.BATCH_HEADER_SIZE], CorruptRecordError, "length field says"),
    "truncated": (lambda b: b[:-1], CorruptRecordError, "length field says"),
    "extra byte": (lambda b: b + b"\0", CorruptRecordError, "length field says"),
    "length field too small": (_set("<I", F.BATCH_LENGTH, 70), CorruptRecordError, "length field"),
    "wrong magic": (_set("<B", F.BATCH_MAGIC, 2), CorruptRecordError, "magic 2"),
    "magic zero": (_set("<B", F.BATCH_MAGIC, 0), CorruptRecordError, "magic 0"),
    "compression gzip": (_set("<B", F.BATCH_ATTRIBUTES, 1), CorruptRecordError, "compression"),
    "compression codec 7": (_set("<B", F.BATCH_ATTRIBUTES, 7), CorruptRecordError, "codec 7"),
    "zero count": (_set("<I", F.BATCH_RECORD_COUNT, 0), CorruptRecordError, "no records"),
    "impossible count": (_set("<I", F.BATCH_RECORD_COUNT, 3), CorruptRecordError, "cannot fit"),
    "huge count": (_set("<I", F.BATCH_RECORD_COUNT, 2**32 - 1), CorruptRecordError, "cannot fit"),
    "crc field": (_set("<I", F.BATCH_CRC, 0), CorruptRecordError, "CRC mismatch"),
    "reserved bit": (_set("<B", F.BATCH_ATTRIBUTES, 0x40), CorruptRecordError, "CRC mismatch"),
    "timestamp": (_set("<q", F.BATCH_MAX_TIMESTAMP, 0), CorruptRecordError, "CRC mismatch"),
}


@pytest.mark.unit
@pytest.mark.parametrize(("edit", "exc", "fragment"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_validate_rejects(
    edit: Callable[[bytearray], bytes | bytearray], exc: type[Exception], fragment: str
) -> None:
    buf = edit(small_batch())
    with pytest.raises(exc, match=fragment):
        validate_batch(buf)
    with pytest.raises(exc, match=fragment):
        decode_batch(bytes(buf), "t", 0)


@pytest.mark.unit
def test_small_batch_is_the_expected_size() -> None:
    # Two records of 32 and 22 bytes: "impossible count" above relies on 3 * 22 > 54.
    assert len(small_batch()) == F.BATCH_HEADER_SIZE + 32 + 22


@pytest.mark.unit
def test_crc_catches_every_bit_flip_in_the_covered_region() -> None:
    good = small_batch()
    for pos in range(F.BATCH_CRC, len(good)):
        for bit in range(8):
            buf = bytearray(good)
            buf[pos] ^= 1 << bit
            with pytest.raises(CorruptRecordError) as ei:
                validate_batch(buf)
            if pos in (F.BATCH_MAGIC, F.BATCH_ATTRIBUTES) or (
                F.BATCH_RECORD_COUNT <= pos < F.BATCH_RECORD_COUNT + 4
            ):
                continue  # caught by a field check before the CRC
            assert "CRC mismatch" in str(ei.value), (pos, bit)


@pytest.mark.unit
def test_fields_outside_the_crc_are_not_checked() -> None:
    good = small_batch()
    for pos in range(F.BATCH_LENGTH):
        buf = bytearray(good)
        buf[pos] ^= 0xFF
        validate_batch(buf)


@pytest.mark.unit
def test_too_large() -> None:
    buf = small_batch()
    assert validate_batch(buf, max_bytes=len(buf)).length == len(buf)
    with pytest.raises(RecordTooLargeError, match=f"exceeds the limit of {len(buf) - 1} bytes"):
        validate_batch(buf, max_bytes=len(buf) - 1)


@pytest.mark.unit
def test_too_large_at_the_default_limit() -> None:
    # Rejected on its length before the CRC is computed: the size check comes first.
    buf = bytearray(F.MAX_BATCH_BYTES + 1)
    buf[: len(small_batch())] = small_batch()
    struct.pack_into("<I", buf, F.BATCH_LENGTH, len(buf))
    with pytest.raises(RecordTooLargeError) as ei:
        validate_batch(buf)
    assert ei.value.code == RecordTooLargeError.code
    assert "hint" in str(ei.value)


# --- stamp_batch ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_stamp_keeps_crc_valid() -> None:
    buf = bytearray(build_batch([encode_record(TS, b"k", b"v", [])], TS, TS))
    before = bytes(buf[F.BATCH_LENGTH :])
    validate_batch(buf)
    for base, atime in [(0, 0), (12345, TS + 9), (2**63 - 1, 2**63 - 1), (-1, -1)]:
        stamp_batch(buf, base, atime)
        info = validate_batch(buf)
        assert (info.base_offset, info.append_time) == (base, atime)
        assert bytes(buf[F.BATCH_LENGTH :]) == before
    stamp_batch(memoryview(buf), 7, 8)
    assert validate_batch(buf).base_offset == 7


# --- decode_batch --------------------------------------------------------------------------------


@pytest.mark.unit
def test_decode_with_min_offset() -> None:
    specs = [(TS + i, None, bytes([i]), []) for i in range(5)]
    buf = bytes(make_batch(specs, base_offset=100))
    everything = [100, 101, 102, 103, 104]
    assert [r.offset for r in decode_batch(buf, "t", 0, min_offset=0)] == everything
    assert [r.offset for r in decode_batch(buf, "t", 0, min_offset=100)] == everything
    got = decode_batch(buf, "t", 0, min_offset=102)
    assert [(r.offset, r.value) for r in got] == [(102, b"\2"), (103, b"\3"), (104, b"\4")]
    assert [r.offset for r in decode_batch(buf, "t", 0, min_offset=104)] == [104]
    assert decode_batch(buf, "t", 0, min_offset=105) == []


def _record_edit(edit: Callable[[bytearray], None]) -> bytearray:
    """A one-record batch (key b"k", value b"v", header ("h", b"1")) edited and resealed."""
    buf = make_batch([(TS, b"k", b"v", [("h", b"1")])])
    edit(buf)
    return reseal(buf)


R = F.BATCH_HEADER_SIZE  # start of the first record
# Positions inside that record: prefix 16, key 1, value_length 4, value 1, header_count 2,
# header key_length 2, header key 1, header value_length 4, header value 1.
KEY_LEN, VALUE_LEN, HEADER_COUNT, HKEY_LEN, HKEY, HVALUE_LEN = (
    R + 12, R + 17, R + 22, R + 24, R + 26, R + 27
)

CORRUPT_RECORDS: dict[str, tuple[Callable[[bytearray], None], str]] = {
    "key length -2": (lambda b: struct.pack_into("<i", b, KEY_LEN, -2), "key length -2"),
    "value length -5": (lambda b: struct.pack_into("<i", b, VALUE_LEN, -5), "value length -5"),
    "header value length -2": (
        lambda b: struct.pack_into("<i", b, HVALUE_LEN, -2), "header value length -2"
    ),
    "key overruns record": (
        lambda b: struct.pack_into("<i", b, KEY_LEN, 9), "inconsistent|malformed"
    ),
    "key overruns batch": (lambda b: struct.pack_into("<i", b, KEY_LEN, 10**6), "malformed"),
    "record length overruns batch": (lambda b: struct.pack_into("<I", b, R, 1000), "overruns"),
    "record length short": (lambda b: struct.pack_into("<I", b, R, 20), "inconsistent"),
    "header count too big": (lambda b: struct.pack_into("<H", b, HEADER_COUNT, 2), "malformed"),
    "header key not utf-8": (lambda b: b.__setitem__(HKEY, 0xFF), "malformed"),
    "trailing bytes": (lambda b: b.extend(b"\0" * 22), "cannot fit|trailing"),
    "trailing bytes, count ok": (lambda b: b.extend(b"\0" * 30), "trailing bytes"),
}


@pytest.mark.unit
@pytest.mark.parametrize(("edit", "fragment"), CORRUPT_RECORDS.values(), ids=CORRUPT_RECORDS.keys())
def test_decode_rejects_malformed_records(edit: Callable[[bytearray], None], fragment: str) -> None:
    buf = _record_edit(edit)
    validate_batch(buf)  # the CRC is right: only the record structure is wrong
    with pytest.raises(CorruptRecordError, match=fragment):
        decode_batch(bytes(buf), "t", 0)


@pytest.mark.unit
def test_record_edit_positions() -> None:
    buf = _record_edit(lambda b: None)
    assert buf[R + 16 : R + 17] == b"k" and buf[HKEY : HKEY + 1] == b"h"
    assert struct.unpack_from("<iiHH", buf, KEY_LEN)[0] == 1
    assert struct.unpack_from("<i", buf, HVALUE_LEN)[0] == 1
    assert struct.unpack_from("<H", buf, HKEY_LEN)[0] == 1


# --- iter_batches --------------------------------------------------------------------------------


@pytest.mark.unit
def test_iter_batches_with_trailing_partial_batch() -> None:
    batches = [bytes(make_batch([(TS + i, None, b"x" * i, [])], base_offset=i)) for i in range(3)]
    tail = bytes(make_batch([(TS, b"k", b"v" * 50, [])], base_offset=3))
    whole = b"".join(batches)
    for cut in range(len(tail)):
        got = [bytes(b) for b in iter_batches(whole + tail[:cut])]
        assert got == batches, cut
    assert [bytes(b) for b in iter_batches(whole + tail)] == [*batches, tail]
    assert list(iter_batches(b"")) == []


@pytest.mark.unit
def test_iter_batches_yields_decodable_views() -> None:
    chunk = b"".join(
        bytes(make_batch([(TS, None, bytes([i]), [])], base_offset=i)) for i in range(4)
    )
    values = [decode_batch(mv, "t", 0)[0].value for mv in iter_batches(memoryview(chunk))]
    assert values == [b"\0", b"\1", b"\2", b"\3"]


@pytest.mark.unit
@pytest.mark.parametrize("length", [0, 1, F.BATCH_PREFIX_SIZE, F.BATCH_HEADER_SIZE - 1])
def test_iter_batches_rejects_impossible_length(length: int) -> None:
    good = bytes(small_batch())
    bad = bytearray(good)
    struct.pack_into("<I", bad, F.BATCH_LENGTH, length)
    with pytest.raises(CorruptRecordError, match="impossible length"):
        list(iter_batches(good + bad))


# --- properties ----------------------------------------------------------------------------------

headers_st = st.lists(
    st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=16)), max_size=4
)
record_st = st.tuples(
    st.integers(-(2**63), 2**63 - 1),
    st.none() | st.binary(max_size=40),
    st.none() | st.binary(max_size=200),
    headers_st,
)


@pytest.mark.property
@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(record_st, min_size=1, max_size=20),
    base=st.integers(0, 2**62),
    atime=st.integers(-(2**63), 2**63 - 1),
    min_offset=st.integers(0, 25),
)
def test_property_round_trip(
    specs: list[RecordSpec], base: int, atime: int, min_offset: int
) -> None:
    buf = make_batch(specs, base_offset=base, append_time=atime)
    assert len(buf) == F.BATCH_HEADER_SIZE + sum(record_size(k, v, h) for _, k, v, h in specs)
    info = validate_batch(buf)
    assert (info.base_offset, info.append_time, info.record_count) == (base, atime, len(specs))
    records = decode_batch(bytes(buf), "topic", 1)
    assert as_tuples(records) == specs
    skipped = decode_batch(bytes(buf), "topic", 1, min_offset=base + min_offset)
    assert as_tuples(skipped) == specs[min_offset:]
    assert [r.offset for r in skipped] == list(range(base + min_offset, base + len(specs)))


@pytest.mark.property
@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(record_st, min_size=1, max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_property_resealed_garbage_decodes_or_raises_corrupt(
    specs: list[RecordSpec], edits: list[tuple[int, int]]
) -> None:
    """A batch with a valid CRC but scrambled records gives records or CorruptRecordError only."""
    buf = make_batch(specs)
    for pos, value in edits:
        buf[F.BATCH_HEADER_SIZE + pos % (len(buf) - F.BATCH_HEADER_SIZE)] = value
    reseal(buf)
    try:
        records = decode_batch(bytes(buf), "t", 0)
    except CorruptRecordError:
        return
    assert len(records) == validate_batch(buf).record_count


@given(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=3000))
def test_a_keyless_headerless_record_has_the_documented_bytes(ts: int, value: bytes) -> None:
    # encode_record's one-pack shortcut for the common record, against FORMAT.md section 2
    # spelled out field by field.
    want = (struct.pack("<I", 8 + 4 + 4 + len(value) + 2) + struct.pack("<q", ts) + struct.pack("<i", -1)
            + struct.pack("<i", len(value)) + value + struct.pack("<H", 0))
    assert encode_record(ts, None, value, ()) == want
    assert encode_record(ts, None, value, []) == want
