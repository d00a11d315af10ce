"""The producer's struct-level PRODUCE codec gives the generic codec's bytes and results."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgebus.batch import batch_parts, build_batch
from edgebus.errors import CorruptRecordError, ProtocolError
from edgebus.fastpath import supervisor
from edgebus.fastpath.produce import produce_body, produce_body_parts, produce_result
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

pytestmark = pytest.mark.property

topics = st.text(min_size=1, max_size=300)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


@given(topics, i32, st.sampled_from([0, 1, 2]), st.binary(max_size=2000), st.integers(0, 2**32 - 1))
def test_request_bytes_equal_the_generic_codec(topic: str, partition: int, acks: int, batch: bytes,
                                               corr: int) -> None:
    fast = ClientProtocol.encode_request(M.Api.PRODUCE, corr, produce_body(topic, partition, acks, batch))
    slow = ClientProtocol.encode_request(M.Api.PRODUCE, corr, M.ProduceRequest(topic, partition, acks, batch))
    assert fast == slow


@given(topics, i32, st.sampled_from([0, 1, 2]), st.lists(st.binary(min_size=1, max_size=300), min_size=1,
                                                        max_size=20),
       i64, st.integers(0, 2**32 - 1), st.booleans())
def test_a_batch_in_pieces_frames_as_the_joined_batch(topic: str, partition: int, acks: int,
                                                      records: list[bytes], ts: int, corr: int,
                                                      views: bool) -> None:
    # The producer frames a batch from its pieces (the CRC run over them, one join at the end);
    # the bytes must be those of the joined batch through the generic codec. Pieces may be
    # memoryviews (the bulk path's slices of one encoded blob).
    pieces = [memoryview(r) for r in records] if views else records
    parts, size = batch_parts(pieces, ts, ts, record_count=len(records))
    batch = build_batch(records, ts, ts)
    assert size == len(batch)
    body = produce_body_parts(topic, partition, acks, parts, size)
    fast = ClientProtocol.encode_request(M.Api.PRODUCE, corr, body)
    slow = ClientProtocol.encode_request(M.Api.PRODUCE, corr, M.ProduceRequest(topic, partition, acks, batch))
    assert fast == slow
    assert body.frame(corr) == fast  # framing twice (a retry) gives the same bytes


def _frame(data: bytes) -> ResponseFrame:
    frames = ClientProtocol()
    frames.receive_data(data)
    f = frames.next_response()
    assert f is not None
    return f


@given(topics, i32, i64, i64, i64)
def test_response_fields_equal_the_generic_codec(topic: str, partition: int, base: int, ts: int,
                                                 start: int) -> None:
    f = _frame(supervisor.encode_response(9, M.ProduceResponse(topic, partition, base, ts, start)))
    r = ClientProtocol.decode_body(M.Api.PRODUCE, f)
    assert produce_result(f) == (r.base_offset, r.append_time) == (base, ts)


def test_an_error_response_raises_its_typed_error() -> None:
    f = _frame(supervisor.encode_response(3, None, CorruptRecordError.code, "bad crc at byte 12"))
    with pytest.raises(CorruptRecordError, match="bad crc at byte 12"):
        produce_result(f)


@pytest.mark.parametrize("body", [b"", b"\x01", b"\x05\x00abc", b"\x01\x00a" + b"\x00" * 27,
                                  b"\x01\x00a" + b"\x00" * 29])
def test_a_malformed_response_fails_as_the_generic_codec_does(body: bytes) -> None:
    f = ResponseFrame(1, 0, memoryview(body))
    with pytest.raises(ProtocolError):
        ClientProtocol.decode_body(M.Api.PRODUCE, f)
    with pytest.raises(ProtocolError):
        produce_result(f)
