"""The supervisor's produce-time record check (issue 14, item 5): `batch.check_records` refuses
exactly the batches whose records the consumer's decoder refuses, in C (records.c
eb_check_records) and in Python (the decoder itself, without the C module)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import CorruptRecordError
from tests.test_batch import CORRUPT_RECORDS, _record_edit, make_batch, record_st, reseal

pytestmark = pytest.mark.unit


@pytest.fixture(params=["C", "Python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both implementations: the C module, and the Python decoder it replaces when not built."""
    if request.param == "Python":
        monkeypatch.setattr(B, "_fast", None)
    else:
        assert B._fast is not None, "the C module is built by ./scripts/quickstart setup"
    return str(request.param)


@pytest.mark.parametrize(("edit", "fragment"), CORRUPT_RECORDS.values(), ids=CORRUPT_RECORDS.keys())
def test_refuses_every_malformed_record(path: str, edit: Callable[[bytearray], None],
                                        fragment: str) -> None:
    buf = _record_edit(edit)
    info = B.validate_batch(buf)  # the CRC is right: only the record structure is wrong
    with pytest.raises(CorruptRecordError, match=f"do not decode: .*({fragment})"):
        B.check_records(buf, info)


def test_accepts_a_good_batch_of_every_shape(path: str) -> None:
    buf = make_batch([(1, None, None, []), (2, b"k", b"v", [("h", b"1"), ("\u00e9\u4e2d\U0001f600", None)]),
                      (3, b"", b"", []), (4, None, b"x" * 1000, [])])
    B.check_records(buf, B.validate_batch(buf))
    buf = make_batch([(5, None, b"v%d" % i, []) for i in range(1000)])
    B.check_records(memoryview(bytes(buf)), B.validate_batch(buf))


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(record_st, min_size=1, max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=0, max_size=6),
)
def test_agrees_with_the_decoder(specs: list, edits: list[tuple[int, int]]) -> None:
    """Scrambled (resealed) records: the check passes exactly when every consumer can decode."""
    buf = make_batch(specs)
    for pos, value in edits:
        buf[F.BATCH_HEADER_SIZE + pos % (len(buf) - F.BATCH_HEADER_SIZE)] = value
    reseal(buf)
    info = B.validate_batch(buf)
    try:
        B.decode_batch(bytes(buf), "t", 0)
        decodes = True
    except CorruptRecordError:
        decodes = False
    try:
        B.check_records(buf, info)
        passes = True
    except CorruptRecordError:
        passes = False
    assert passes == decodes


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=12) | st.text(max_size=6).map(str.encode))
def test_header_key_utf8_as_python_decodes_it(key: bytes) -> None:
    """Header keys are the one thing the C length check did not cover: strict UTF-8, as
    bytes.decode() (overlong forms, surrogates and code points above U+10FFFF refused)."""
    buf = make_batch([(1, None, b"v", [("k" * len(key), b"1")])])
    hkey = F.BATCH_HEADER_SIZE + F.RECORD_PREFIX_SIZE + 4 + 1 + 2 + 2
    assert struct.unpack_from("<H", buf, hkey - 2)[0] == len(key)
    buf[hkey : hkey + len(key)] = key
    reseal(buf)
    try:
        key.decode()
        valid = True
    except UnicodeDecodeError:
        valid = False
    try:
        B.check_records(buf, B.validate_batch(buf))
        assert valid
    except CorruptRecordError:
        assert not valid


@pytest.mark.parametrize("key", [b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                 b"\xf0\x80\x80\x80", b"\xc2", b"\xe2\x82", b"\x80", b"\xff"])
def test_invalid_utf8_header_keys(path: str, key: bytes) -> None:
    buf = make_batch([(1, None, b"v", [("k" * len(key), b"1")])])
    hkey = F.BATCH_HEADER_SIZE + F.RECORD_PREFIX_SIZE + 4 + 1 + 2 + 2
    buf[hkey : hkey + len(key)] = key
    reseal(buf)
    with pytest.raises(CorruptRecordError):
        B.check_records(buf, B.validate_batch(buf))
