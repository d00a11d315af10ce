"""The C record helpers (edgebus/records.py) agree with the Python code in edgebus.batch,
which is the specification: same records, and malformed input still raises CorruptRecordError."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import batch as B
from edgebus import format as F
from edgebus import records as R
from edgebus.errors import CorruptRecordError

pytestmark = pytest.mark.property

values = st.one_of(st.none(), st.binary(max_size=300))
headers = st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=20))),
                   max_size=3)
records = st.lists(st.tuples(st.integers(-(2**40), 2**40), st.one_of(st.none(), st.binary(max_size=20)),
                             values, headers), min_size=1, max_size=30)


def python_decode(batch: bytes, min_offset: int) -> list[B.Record]:
    saved, B._fast = B._fast, None
    try:
        return B.decode_batch(batch, "t", 3, min_offset)
    finally:
        B._fast = saved


@settings(max_examples=300, deadline=None)
@given(records, st.integers(0, 40), st.integers(0, 1000))
def test_c_decode_equals_python_decode(recs, min_offset, base):
    enc = [B.encode_record(ts, k, v, h) for ts, k, v, h in recs]
    batch = bytearray(B.build_batch(enc, 1, 2))
    B.stamp_batch(batch, base, 5)
    assert B._fast is not None
    assert B.decode_batch(bytes(batch), "t", 3, base + min_offset) == \
        python_decode(bytes(batch), base + min_offset)


@settings(max_examples=300, deadline=None)
@given(records, st.data())
def test_corrupt_records_raise_the_same_error(recs, data):
    enc = [B.encode_record(ts, k, v, h) for ts, k, v, h in recs]
    batch = bytearray(B.build_batch(enc, 1, 2))
    # Corrupt a byte inside the records, then fix the CRC so only the record layout is wrong.
    pos = data.draw(st.integers(F.BATCH_HEADER_SIZE, len(batch) - 1))
    batch[pos] ^= data.draw(st.integers(1, 255))
    struct.pack_into("<I", batch, F.BATCH_CRC, zlib.crc32(batch[F.CRC_START:]))
    try:
        want = python_decode(bytes(batch), 0)
    except CorruptRecordError:
        with pytest.raises(CorruptRecordError):
            B.decode_batch(bytes(batch), "t", 3, 0)
        return
    assert B.decode_batch(bytes(batch), "t", 3, 0) == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=500), min_size=1, max_size=50), st.integers(-(2**40), 2**40))
def test_bulk_encoding_equals_encode_record(vals, ts):
    blob, sizes = R.encode_values(vals, ts)
    want = [B.encode_record(ts, None, v, ()) for v in vals]
    assert bytes(blob) == b"".join(want)
    assert sizes == [len(w) for w in want]


def test_bulk_encoding_declines_what_it_cannot_encode():
    assert R.encode_values([b"a", None], 1) is None
    assert R.encode_values([b"a", "text"], 1) is None
    assert R.encode_values([memoryview(b"abcd").cast("I")], 1) is None
