"""The supervisor's struct-level PRODUCE/FETCH codecs (edgebus/fastpath) against the generic codec.

The fast decoders must return exactly the generic codec's values for what they accept and decline
(None) everything else, so that malformed bodies still get the generic ProtocolError; the fast
encoders must give byte-identical frames, and anything unencodable must still raise the generic
codec's error.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edgebus import format as F
from edgebus.batch import build_batch, encode_record
from edgebus.errors import ProtocolError
from edgebus.fastpath import supervisor
from edgebus.fastpath.fetch import decode_fetch, encode_fetch, encode_fetched_one
from edgebus.fastpath.produce import decode_produce, encode_produce_response
from edgebus.protocol import messages as M
from edgebus.protocol.framing import RequestFrame

pytestmark = pytest.mark.property

BATCH = build_batch([encode_record(1, b"k", b"v" * 30, [("h", b"x")])], 1, 1)
topics = st.text(max_size=40) | st.sampled_from(["t", "sensors", "tøpic-ü", "a" * 300])
i8 = st.integers(-(2**7), 2**7 - 1)
i16 = st.integers(-(2**15), 2**15 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)
records = st.none() | st.binary(max_size=300) | st.just(BATCH) | st.binary(max_size=50).map(memoryview)


def generic_response(corr: int, body: M.Message) -> bytes:
    """What supervisor.encode_response gave before the fast encoders (the generic codec)."""
    out: list[bytes] = []
    type(body).encode(body, out)
    n = sum(map(len, out))  # framed with one join, as ServerProtocol.encode_response does
    return b"".join([F.RESPONSE_HEADER.pack(6 + n, corr, 0), *out])


def outcome(fn, *args):
    """The value or the exception (type and message) of fn(*args), for comparing two paths."""
    try:
        return ("ok", fn(*args))
    except Exception as e:
        return ("error", type(e), str(e))


# --- PRODUCE request -----------------------------------------------------------------------------
@given(topics, i32, i8, st.binary(max_size=500) | st.just(BATCH))
def test_decode_produce_gives_the_generic_fields(topic, partition, acks, batch):
    body = M.ProduceRequest(topic, partition, acks, batch).to_bytes()
    fields = decode_produce(body)
    assert fields is not None
    generic = M.ProduceRequest.from_bytes(body)
    assert fields[:3] == (generic.topic, generic.partition, generic.acks)
    assert isinstance(fields[3], memoryview) and bytes(fields[3]) == bytes(generic.batch) == batch
    assert supervisor.decode_request(RequestFrame(M.Api.PRODUCE, 0, 1, memoryview(body))) == generic


def test_the_batch_is_a_writable_slice_of_the_frame():
    """The supervisor stamps the batch in place, in the frame's own buffer (no copy)."""
    frame = bytearray(M.ProduceRequest("t", 0, 1, BATCH).to_bytes())
    fields = decode_produce(memoryview(frame))
    assert fields is not None and not fields[3].readonly
    fields[3][0:8] = b"\x07" * 8
    assert frame[-len(BATCH) :][:8] == b"\x07" * 8


VALID = M.ProduceRequest("sensors", 3, 1, BATCH).to_bytes()


@given(st.binary(max_size=200) | st.builds(lambda cut, extra: VALID[:cut] + extra,
                                           st.integers(0, len(VALID)), st.binary(max_size=8)))
@example(b"")
@example(b"\x01")
@example(b"\x05\x00ab")  # topic overruns
@example(b"\x02\x00\xff\xfe" + struct.pack("<ibi", 0, 1, 0))  # topic not UTF-8
@example(b"\x01\x00t" + struct.pack("<ibi", 0, 1, -1))  # null batch: the generic codec's job
@example(b"\x01\x00t" + struct.pack("<ibi", 0, 1, -2))  # negative length
@example(b"\x01\x00t" + struct.pack("<ibi", 0, 1, 3) + b"abcd")  # trailing byte
@example(b"\x01\x00t" + struct.pack("<ibi", 0, 1, 5) + b"abcd")  # batch overruns
@example(VALID + b"\x00")
def test_any_produce_body_decodes_as_the_generic_codec_does(body):
    fields = decode_produce(body)
    generic = outcome(M.ProduceRequest.from_bytes, body)
    if fields is not None:  # accepted: exactly the generic values
        assert generic[0] == "ok"
        assert M.ProduceRequest(*fields) == generic[1]
    via_server = outcome(supervisor.decode_request, RequestFrame(M.Api.PRODUCE, 0, 1, memoryview(body)))
    assert via_server == generic
    if generic[0] == "error":
        assert generic[1] is ProtocolError


# --- FETCH request -------------------------------------------------------------------------------
fetch_partitions = st.lists(st.builds(M.FetchPartition, topics, i32, i64, i32), max_size=3)


@given(i32, i32, i32, fetch_partitions)
def test_decode_fetch_gives_the_generic_request(max_wait, min_bytes, max_bytes, parts):
    body = M.FetchRequest(max_wait, min_bytes, max_bytes, parts).to_bytes()
    generic = M.FetchRequest.from_bytes(body)
    fast = decode_fetch(body)
    if len(parts) == 1:
        assert fast == generic
    else:
        assert fast is None  # more partitions than one: the generic codec decodes it
    assert supervisor.decode_request(RequestFrame(M.Api.FETCH, 0, 1, memoryview(body))) == generic


ONE_FETCH = M.FetchRequest(100, 1, 1 << 20, [M.FetchPartition("t", 0, 42, 1 << 20)]).to_bytes()


@given(st.binary(max_size=80) | st.builds(lambda cut, extra: ONE_FETCH[:cut] + extra,
                                          st.integers(0, len(ONE_FETCH)), st.binary(max_size=6)))
@example(ONE_FETCH[:-1])
@example(ONE_FETCH + b"\x00")
@example(ONE_FETCH[:12] + struct.pack("<i", -1) + ONE_FETCH[16:])  # negative count
@example(ONE_FETCH[:16] + b"\x01\x00\xff" + ONE_FETCH[19:])  # topic not UTF-8
def test_any_fetch_body_decodes_as_the_generic_codec_does(body):
    fast = decode_fetch(body)
    generic = outcome(M.FetchRequest.from_bytes, body)
    if fast is not None:
        assert generic == ("ok", fast)
    assert outcome(supervisor.decode_request, RequestFrame(M.Api.FETCH, 0, 1, memoryview(body))) == generic


def test_only_version_0_takes_the_fast_decoders():
    with pytest.raises(Exception, match="version 1 not in supported range"):
        supervisor.decode_request(RequestFrame(M.Api.PRODUCE, 1, 1, memoryview(VALID)))


# --- responses -----------------------------------------------------------------------------------
@given(u32, topics, i32, i64, i64, i64)
def test_produce_response_bytes_equal_the_generic_codec(corr, topic, partition, base, ts, start):
    body = M.ProduceResponse(topic, partition, base, ts, start)
    expected = outcome(generic_response, corr, body)
    assert outcome(supervisor.encode_response, corr, body) == expected
    if expected[0] == "ok":
        assert encode_produce_response(corr, topic, partition, base, ts, start) == expected[1]


fetched = st.builds(M.FetchedPartition, topics, i32, i16, st.text(max_size=20), i64, i64, records)


@given(u32, st.lists(fetched, max_size=4))
def test_fetch_response_bytes_equal_the_generic_codec(corr, parts):
    body = M.FetchResponse(parts)
    expected = outcome(generic_response, corr, body)
    assert outcome(supervisor.encode_response, corr, body) == expected
    if expected[0] == "ok":  # the struct-level encoder itself took it (no silent fallback)
        assert encode_fetch(corr, body) == expected[1]


@given(u32, topics, i32, i64, i64, st.binary(max_size=300) | st.just(BATCH))
def test_encode_fetched_one_equals_the_generic_codec(corr, topic, partition, hw, start, data):
    body = M.FetchResponse([M.FetchedPartition(topic, partition, 0, "", hw, start, data)])
    expected = outcome(generic_response, corr, body)
    if expected[0] == "ok":
        assert encode_fetched_one(corr, topic, partition, hw, start, data) == expected[1]
        assert encode_fetched_one(corr, topic, partition, hw, start, memoryview(bytearray(data))) == expected[1]


@pytest.mark.parametrize("body", [
    M.ProduceResponse("t", 2**31, 0, 0, 0),  # partition out of i32
    M.ProduceResponse("t", 0, 2**63, 0, 0),  # offset out of i64
    M.ProduceResponse("x" * 70_000, 0, 0, 0, 0),  # str longer than 65535 bytes
    M.ProduceResponse("\ud800", 0, 0, 0, 0),  # not encodable as UTF-8
    M.ProduceResponse(None, 0, 0, 0, 0),  # type: ignore[arg-type]
    M.FetchResponse([M.FetchedPartition("t", 0, 2**15, "", 0, 0, b"")]),
    M.FetchResponse([M.FetchedPartition("t", 0, 0, "m" * 70_000, 0, 0, b"")]),
    M.FetchResponse([M.FetchedPartition("t", 0, 0, "", 0, 0, "not bytes")]),
    M.FetchResponse([M.FetchedPartition("t", 0, 0, "", 0, 0, 5)]),
    M.FetchResponse([M.FetchedPartition("t", 0, None, "", 0, 0, b"")]),  # type: ignore[arg-type]
    M.FetchResponse([M.FetchedPartition("t", 0, 0, None, 0, 0, b"")]),  # type: ignore[arg-type]
    M.FetchResponse([M.FetchedPartition("t", None, 0, "", 0, 0, b"")]),  # type: ignore[arg-type]
    M.FetchResponse([M.FetchedPartition("t", 0, 0, "", 0, 0, [b"x"])]),
    M.FetchResponse([M.FetchedPartition(b"t", 0, 0, "", 0, 0, b"")]),  # type: ignore[arg-type]
    M.FetchResponse([M.FetchedPartition("t", 0, 0, "", 0, 0, b""), None]),  # type: ignore[list-item]
    M.FetchResponse(None),  # type: ignore[arg-type]
])
def test_unencodable_responses_raise_the_generic_error(body):
    generic = outcome(generic_response, 5, body)
    assert generic[0] == "error"
    assert outcome(supervisor.encode_response, 5, body) == generic


def test_an_error_response_ignores_the_body():
    body = M.ProduceResponse("t", 0, 1, 2, 3)
    out = supervisor.encode_response(9, body, 3, "nope")
    assert out == supervisor.encode_response(9, None, 3, "nope")
