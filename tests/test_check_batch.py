"""The produce path's one-call batch check (records.c eb_check_batch, `batch.produced_batch`):
it accepts exactly the batches that `validate_batch(compacted_ok=False)` and `check_records`
both accept, with the same BatchInfo, and hostile input (wrong lengths, bad CRC, truncated,
lying counts, malformed records) is refused, so that the supervisor's Python checks then run and
name what is wrong; a supervisor answers such a PRODUCE with that error."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import Producer
from edgebus import batch as B
from edgebus import format as F
from edgebus.errors import CorruptRecordError, RecordTooLargeError
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol
from edgebus.testing import EmbeddedBroker
from tests.server.rawclient import admin, raw, read_frames, req
from tests.test_batch import CORRUPT_RECORDS, _record_edit, make_batch, record_st, reseal

pytestmark = pytest.mark.unit

LIMIT = F.MAX_BATCH_BYTES


def python_checks(buf: bytearray | bytes | memoryview, max_bytes: int = LIMIT) -> B.BatchInfo | None:
    """What the supervisor checked before the C call: the BatchInfo, or None when refused."""
    try:
        info = B.validate_batch(buf, max_bytes, compacted_ok=False)
        B.check_records(buf, info)
    except (CorruptRecordError, RecordTooLargeError):
        return None
    return info


def good() -> bytearray:
    return make_batch([(1, None, b"x" * 100, []), (2, b"k", b"v", [("h", b"1")])],
                      base_offset=7, append_time=9)


def test_the_module_has_it() -> None:
    assert B._check_batch is not None, "the C module is built by ./scripts/quickstart setup"


def test_a_good_batch_gives_the_same_info_from_every_buffer_type() -> None:
    buf = good()
    want = B.validate_batch(buf)
    for view in (buf, bytes(buf), memoryview(buf), memoryview(bytes(buf)),
                 memoryview(b"pad" + bytes(buf))[3:]):
        assert B.produced_batch(view, LIMIT) == want
    assert want == (7, 9, len(buf), 2, 1, 2)


def _set(fmt: str, at: int, value: int) -> Callable[[bytearray], None]:
    return lambda b: struct.pack_into(fmt, b, at, value)


# Header edits, each resealed (length and CRC right, unless the edit is to those).
HEADER_EDITS: dict[str, tuple[Callable[[bytearray], None], bool]] = {
    "magic 2": (_set("<B", F.BATCH_MAGIC, 2), True),
    "codec 1": (_set("<B", F.BATCH_ATTRIBUTES, 1), True),
    "compacted away": (_set("<B", F.BATCH_ATTRIBUTES, F.ATTR_COMPACTED), True),
    "count 0": (_set("<I", F.BATCH_RECORD_COUNT, 0), True),
    "count too large to fit": (_set("<I", F.BATCH_RECORD_COUNT, 10**6), True),
    "count one too many": (_set("<I", F.BATCH_RECORD_COUNT, 3), True),
    "count one too few": (_set("<I", F.BATCH_RECORD_COUNT, 1), True),
    "length field short": (_set("<I", F.BATCH_LENGTH, 100), False),
    "length field long": (_set("<I", F.BATCH_LENGTH, 10**6), False),
    "crc off by one bit": (lambda b: b.__setitem__(F.BATCH_CRC, b[F.BATCH_CRC] ^ 1), False),
    "a payload byte flipped": (lambda b: b.__setitem__(len(b) - 5, b[len(b) - 5] ^ 0x40), False),
    "a header byte in the crc flipped": (_set("<q", F.BATCH_FIRST_TIMESTAMP, 12345), False),
}


@pytest.mark.parametrize("name", HEADER_EDITS)
def test_refuses_every_hostile_header(name: str) -> None:
    edit, resealed = HEADER_EDITS[name]
    buf = good()
    edit(buf)
    if resealed:
        struct.pack_into("<I", buf, F.BATCH_CRC, zlib.crc32(buf[F.CRC_START:]))
    assert python_checks(buf) is None
    assert B.produced_batch(buf, LIMIT) is None


@pytest.mark.parametrize("cut", [0, 1, 20, 63, 64, 65, 100])
def test_refuses_truncated_batches(cut: int) -> None:
    buf = good()
    short = bytes(buf[: min(cut, len(buf) - 1)])
    assert B.produced_batch(short, LIMIT) is None
    assert python_checks(short) is None


def test_refuses_trailing_bytes_and_the_limit() -> None:
    buf = good()
    assert B.produced_batch(bytes(buf) + b"\0", LIMIT) is None
    assert B.produced_batch(buf, len(buf) - 1) is None
    assert B.produced_batch(buf, len(buf)) is not None


@pytest.mark.parametrize(("edit", "fragment"), CORRUPT_RECORDS.values(), ids=CORRUPT_RECORDS.keys())
def test_refuses_every_malformed_record(edit: Callable[[bytearray], None], fragment: str) -> None:
    buf = _record_edit(edit)  # the header and CRC are right: only the records are wrong
    assert B.produced_batch(buf, LIMIT) is None


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(record_st, min_size=1, max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=0, max_size=6),
    sealed=st.booleans(),
    cut=st.none() | st.integers(0, 400),
)
def test_agrees_with_the_python_checks(specs: list, edits: list[tuple[int, int]], sealed: bool,
                                       cut: int | None) -> None:
    """Scrambled batches (anywhere, header included; resealed or not; cut or not): accepted
    exactly when the Python checks accept, with the same BatchInfo."""
    buf = make_batch(specs)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    if sealed:
        reseal(buf)
    if cut is not None:
        buf = buf[:cut]
    assert B.produced_batch(buf, LIMIT) == python_checks(buf)


def test_a_build_without_zlib_leaves_the_crc_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module built without zlib.h returns EB_CHECK_NO_CRC for a batch it found right but
    for the CRC; produced_batch then checks the CRC itself. (That build does not run here: its
    answer is given in its place.)"""
    monkeypatch.setattr(B, "_check_batch", lambda *a: -1)
    buf = good()
    assert B.produced_batch(buf, LIMIT) == B.validate_batch(buf)
    buf[-1] ^= 1
    assert B.produced_batch(buf, LIMIT) is None


def test_the_supervisor_names_what_is_wrong(broker: EmbeddedBroker) -> None:
    """A real supervisor answers hostile batches, which the C check refuses, with the Python
    checks' errors, and takes a good one after them on the same connection."""
    with admin(broker) as a:
        a.create_topic("cb", 1)
    with Producer(socket=broker.socket, transport="socket") as p:
        p.send("cb", b"first", partition=0).get(10)
    buf = good()
    bad_crc = bytearray(buf)
    bad_crc[-1] ^= 1
    bad_record = _record_edit(CORRUPT_RECORDS["key length -2"][0])
    cases = [(bad_crc, "CRC mismatch"), (bad_record, "do not decode"),
             (bytes(buf[:40]), "shorter than"), (bytes(buf), "")]
    s = raw(broker)
    try:
        for corr, (batch, _) in enumerate(cases):
            s.sendall(req(M.Api.PRODUCE, corr, M.ProduceRequest("cb", 0, M.ACKS_WRITTEN,
                                                                   bytes(batch))))
        frames = read_frames(s, 10, want=len(cases))
    finally:
        s.close()
    assert [f.correlation_id for f in frames] == list(range(len(cases)))
    for f, (_, fragment) in zip(frames[:-1], cases, strict=False):
        with pytest.raises(CorruptRecordError, match=fragment):
            ClientProtocol.decode_body(M.Api.PRODUCE, f)
    assert ClientProtocol.decode_body(M.Api.PRODUCE, frames[-1]).base_offset == 1


@pytest.mark.parametrize("value_len", [0, 4000, 4040, 4100, 70_000])
def test_the_crc_on_both_sides_of_the_libdeflate_threshold(value_len: int) -> None:
    """records.c's CRC is zlib's under EB_DEFLATE_MIN (4 KiB) and libdeflate's from it (when
    built with it): batches either side of it pass, and one flipped byte fails, in C."""
    buf = make_batch([(1, None, b"v" * value_len, [])], base_offset=3, append_time=4)
    assert B.produced_batch(buf, LIMIT) == B.validate_batch(buf)
    buf[-1] ^= 1
    assert B.produced_batch(buf, LIMIT) is None
