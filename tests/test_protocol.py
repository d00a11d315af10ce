"""The sans-IO protocol: codec, messages and framing, tested with bytes only (no sockets)."""

from __future__ import annotations

import random
import struct

import pytest

from edgebus import errors
from edgebus import format as F
from edgebus.batch import build_batch, encode_record
from edgebus.errors import ProtocolError, UnsupportedVersionError
from edgebus.protocol import codec as C
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol import registry as AR
from edgebus.protocol.framing import ClientProtocol, FrameBuffer, RequestFrame, ServerProtocol

pytestmark = pytest.mark.unit

BATCH = build_batch([encode_record(1, b"k", b"v", [("h", None)])], 1, 1)

CONFIG = M.ConfigEntry("retention_ms", "604800000")
PARTITION_META = M.PartitionMetadata(0, 10, 2**40, 123456789, 3)
TOPIC_META = M.TopicMetadata(
    "sensors", 0, "", [CONFIG], [PARTITION_META, M.PartitionMetadata(1, 0, 0, 0, 1)]
)
FETCH_PARTITION = M.FetchPartition("sensors", 1, 42, 1 << 20)
FETCHED = M.FetchedPartition("sensors", 1, 0, "", 100, 0, BATCH)
FETCHED_ERROR = M.FetchedPartition("sensors", 2, 10, "offset 9 out of range", -1, -1, None)
LIST_PARTITION = M.ListOffsetsPartition("sensors", 0, M.EARLIEST)
LISTED = M.ListedOffset("sensors", 0, 0, "", 7, 1_700_000_000_000)
TPS = [G.TopicPartitions("sensors", [0, 2, 5]), G.TopicPartitions("logs", [])]
COMMIT = G.OffsetCommitPartition("sensors", 0, 42, "host-a")
MEMBER = G.MemberDescription("m-1", "edgebus-python", 4242, 10_000, TPS)
LAG = G.PartitionLag("sensors", 0, 40, "", 1_700_000_000_000, 50, 10, "m-1")

# One sample per message class, with non-default values.
SAMPLES: dict[type[C.Message], list[C.Message]] = {
    M.ConfigEntry: [CONFIG, M.ConfigEntry("", "")],
    M.ApiVersionsRequest: [M.ApiVersionsRequest(), M.ApiVersionsRequest("tëst-client/1.0")],
    M.ApiVersionRange: [M.ApiVersionRange(4, 0, 0), M.ApiVersionRange(-1, -32768, 32767)],
    M.ApiVersionsResponse: [
        M.ApiVersionsResponse("0.1.0", [M.ApiVersionRange(int(k), lo, hi)
                                        for k, (lo, hi) in AR.VERSIONS.items()]),
        M.ApiVersionsResponse("", []),
    ],
    M.MetadataRequest: [M.MetadataRequest(), M.MetadataRequest(["a", "b.c", "d_e-f"])],
    M.PartitionMetadata: [PARTITION_META],
    M.TopicMetadata: [TOPIC_META, M.TopicMetadata("missing", 5, "unknown topic", [], [])],
    M.MetadataResponse: [M.MetadataResponse([TOPIC_META]), M.MetadataResponse([])],
    M.CreateTopicRequest: [M.CreateTopicRequest("t", 3), M.CreateTopicRequest("t", 1, [CONFIG])],
    M.AlterTopicConfigRequest: [M.AlterTopicConfigRequest("t", [CONFIG]),
                                M.AlterTopicConfigRequest("t", [])],
    M.AlterTopicConfigResponse: [M.AlterTopicConfigResponse([CONFIG, M.ConfigEntry("partitions", "2")])],
    M.DeleteTopicRequest: [M.DeleteTopicRequest("t")],
    M.Empty: [M.Empty()],
    M.ProduceRequest: [
        M.ProduceRequest("sensors", 0, M.ACKS_DURABLE, BATCH),
        M.ProduceRequest("t", 5, M.ACKS_NONE, b""),
    ],
    M.ProduceResponse: [M.ProduceResponse("sensors", 0, 2**62, 1_700_000_000_000, 0)],
    M.FetchPartition: [FETCH_PARTITION],
    M.FetchRequest: [
        M.FetchRequest(500, 1, 1 << 24, [FETCH_PARTITION]), M.FetchRequest(0, 0, 0, [])
    ],
    M.FetchedPartition: [FETCHED, FETCHED_ERROR],
    M.FetchResponse: [M.FetchResponse([FETCHED, FETCHED_ERROR]), M.FetchResponse([])],
    M.ListOffsetsPartition: [LIST_PARTITION],
    M.ListOffsetsRequest: [
        M.ListOffsetsRequest([LIST_PARTITION, M.ListOffsetsPartition("t", 1, M.LATEST)])
    ],
    M.ListedOffset: [LISTED],
    M.ListOffsetsResponse: [M.ListOffsetsResponse([LISTED])],
    M.StatusResponse: [M.StatusResponse(b'{"uptime_s": 3, "topics": {}}')],
    M.ShmAttachRequest: [M.ShmAttachRequest(0, 0), M.ShmAttachRequest(4096, 64 * 1024 * 1024)],
    M.ShmAttachResponse: [M.ShmAttachResponse(4 << 20, 4 << 20, 384 + (4 << 20), 768 + (8 << 20), 4)],
    M.ErrorBody: [M.ErrorBody("unknown topic 'x'"), M.ErrorBody("")],
    # Replication (docs/FORMAT.md 7.9)
    M.ReplicaHelloRequest: [M.ReplicaHelloRequest("gw-7", "t0ken-0123456789abcdef"),
                            M.ReplicaHelloRequest("gw-7", "")],
    M.ReplicaHelloResponse: [M.ReplicaHelloResponse("gw-8")],
    M.ReplicaAppendRequest: [M.ReplicaAppendRequest("t", 0, "ab" * 16, M.ACKS_DURABLE, BATCH),
                             M.ReplicaAppendRequest("t", 3, "ab" * 16, M.ACKS_WRITTEN, BATCH * 2)],
    M.ReplicaAppendResponse: [M.ReplicaAppendResponse("t", 0, 2, 1, 42)],
    M.ReplicaAppendCompressedRequest: [M.ReplicaAppendCompressedRequest(
        "t", 0, "ab" * 16, M.ACKS_DURABLE, M.CODEC_ZSTD, len(BATCH), b"(\xb5/\xfd")],
    M.ReplicaGapRequest: [M.ReplicaGapRequest("t", 1, "ab" * 16, M.ACKS_WRITTEN, 40, 1000, 1)],
    M.ReplicaFetchRequest: [M.ReplicaFetchRequest(1, 1 << 20, [M.FetchPartition("t", 0, 5, 1024)]),
                            M.ReplicaFetchRequest(0, 4096, [])],
    M.ReplicaFetchedPartition: [M.ReplicaFetchedPartition("t", 0, 0, "", "ab" * 16, 0, 5, 7, b"")],
    M.ReplicaFetchResponse: [M.ReplicaFetchResponse([
        M.ReplicaFetchedPartition("t", 0, 0, "", "ab" * 16, 0, 5, 7, BATCH),
        M.ReplicaFetchedPartition("t", 1, 10, "offset 9 is out of range", "", -1, -1, -1, b"")])],
    M.ReplicaFetchRequestV1: [M.ReplicaFetchRequestV1(1, 4096, [M.FetchPartition("t", 0, 5, 99)],
                                                      500)],
    M.ReplicaFetchedPartitionV1: [
        M.ReplicaFetchedPartitionV1("t", 0, 0, "", "ab" * 16, 0, 5, 7, b"", 12345)],
    M.ReplicaFetchResponseV1: [M.ReplicaFetchResponseV1([
        M.ReplicaFetchedPartitionV1("t", 0, 0, "", "ab" * 16, 0, 5, 7, BATCH, len(BATCH)),
        M.ReplicaFetchedPartitionV1("t", 1, 10, "out of range", "", -1, -1, -1, b"", -1)])],
    M.PromoteTopicRequest: [M.PromoteTopicRequest("t")],
    # Consumer groups (edgebus/protocol/groups.py)
    G.TopicPartitions: TPS,
    G.JoinGroupRequest: [
        G.JoinGroupRequest("g", "", "client", 10_000, 30_000, ["sensors"], ["range"]),
        G.JoinGroupRequest("g", "m-1", "client", 100, 1, ["a", "b"], ["sticky", "range"], TPS),
    ],
    G.JoinGroupResponse: [G.JoinGroupResponse(3, "m-1", "range", ["m-1", "m-2"])],
    G.SyncGroupRequest: [G.SyncGroupRequest("g", 3, "m-1")],
    G.SyncGroupResponse: [G.SyncGroupResponse(TPS), G.SyncGroupResponse([])],
    G.HeartbeatRequest: [G.HeartbeatRequest("g", 3, "m-1")],
    G.LeaveGroupRequest: [G.LeaveGroupRequest("g", "m-1")],
    G.OffsetCommitPartition: [COMMIT, G.OffsetCommitPartition("t", 1, 0)],
    G.OffsetCommitRequest: [
        G.OffsetCommitRequest("g", 3, "m-1", [COMMIT]),
        G.OffsetCommitRequest("g", G.NO_GENERATION, "", []),
    ],
    G.OffsetCommitResult: [G.OffsetCommitResult("sensors", 0, 14, "illegal generation")],
    G.OffsetCommitResponse: [
        G.OffsetCommitResponse(1_700_000_000_000, [G.OffsetCommitResult("sensors", 0, 0, "")])
    ],
    G.OffsetFetchRequest: [G.OffsetFetchRequest("g", TPS), G.OffsetFetchRequest("g", [])],
    G.CommittedOffset: [G.CommittedOffset("sensors", 0, G.NO_OFFSET, "", -1)],
    G.OffsetFetchResponse: [
        G.OffsetFetchResponse([G.CommittedOffset("sensors", 1, 7, "m", 1_700_000_000_000)])
    ],
    G.GroupListing: [G.GroupListing("g", "stable", "range", 2)],
    G.ListGroupsResponse: [G.ListGroupsResponse([G.GroupListing("g", "empty", "", 0)])],
    G.DescribeGroupRequest: [G.DescribeGroupRequest("g")],
    G.MemberDescription: [MEMBER],
    G.PartitionLag: [LAG],
    G.DescribeGroupResponse: [G.DescribeGroupResponse("g", "stable", 3, "range", [MEMBER], [LAG])],
    G.ResetOffsetsRequest: [
        G.ResetOffsetsRequest("g", "sensors", [], G.RESET_EARLIEST, 0, 1),
        G.ResetOffsetsRequest("g", "sensors", [0, 1], G.RESET_TIMESTAMP, 1_700_000_000_000, 0),
    ],
    G.OffsetReset: [G.OffsetReset("sensors", 0, G.NO_OFFSET, 0)],
    G.ResetOffsetsResponse: [G.ResetOffsetsResponse([G.OffsetReset("sensors", 1, 5, 9)])],
    # idempotent and transactional producers
    M.InitProducerIdRequest: [M.InitProducerIdRequest("", 0),
                              M.InitProducerIdRequest("tx-1", 60_000, 1_796_000_000_000_000, 3)],
    M.InitProducerIdResponse: [M.InitProducerIdResponse(1_796_000_000_000_000, 0)],
    M.TxnPartition: [M.TxnPartition("sensors", 1)],
    M.AddPartitionsToTxnRequest: [M.AddPartitionsToTxnRequest("tx-1", 7, 0, [M.TxnPartition("a", 0)])],
    M.TxnOffset: [M.TxnOffset("sensors", 0, 42, "m")],
    M.TxnOffsetCommitRequest: [M.TxnOffsetCommitRequest("tx-1", 7, 0, "g", [M.TxnOffset("a", 0, 1)])],
    M.EndTxnRequest: [M.EndTxnRequest("tx-1", 7, 0, 1), M.EndTxnRequest("tx-1", 7, 2, 0)],
    M.TxnPartitionInfo: [M.TxnPartitionInfo("t", 0, -1), M.TxnPartitionInfo("t", 3, 2**40)],
    M.TxnInfo: [M.TxnInfo("tx-1", 7, 2, "ongoing", 60_000, 1_234, [M.TxnPartitionInfo("t", 0, 5)],
                          ["g"]),
                M.TxnInfo("tx-2", 8, 0, "empty", 900_000, -1, [], [])],
    M.ProducerInfo: [M.ProducerInfo("t", 1, 7, 0, 2**31 - 1)],
    M.ListTransactionsResponse: [
        M.ListTransactionsResponse([], []),
        M.ListTransactionsResponse([M.TxnInfo("tx-1", 7, 2, "ongoing", 60_000, 1_234,
                                              [M.TxnPartitionInfo("t", 0, 5)], ["g"])],
                                   [M.ProducerInfo("t", 1, 7, 0, 41)])],
}
ALL_SAMPLES = [(cls, s) for cls, ss in SAMPLES.items() for s in ss]
SERVED = sorted(AR.REQUESTS)


def sample_id(v: object) -> str:
    return v.__name__ if isinstance(v, type) else type(v).__name__


def all_message_classes() -> set[type[C.Message]]:
    return {
        v for module in (M, G) for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, C.Message) and v is not C.Message
    }


# --- codec and messages --------------------------------------------------------------------------


def test_every_message_class_has_a_sample() -> None:
    assert all_message_classes() == set(SAMPLES)
    assert set(AR.REQUESTS.values()) | set(AR.RESPONSES.values()) <= set(SAMPLES)


@pytest.mark.parametrize("cls", sorted(all_message_classes(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_check_fields(cls: type[C.Message]) -> None:
    cls.check_fields()


def test_check_fields_catches_a_mismatch() -> None:
    class Broken(M.ConfigEntry):
        FIELDS = (("value", C.STR), ("name", C.STR))

    with pytest.raises(AssertionError):
        Broken.check_fields()


@pytest.mark.parametrize(("cls", "sample"), ALL_SAMPLES, ids=sample_id)
def test_round_trip(cls: type[C.Message], sample: C.Message) -> None:
    data = sample.to_bytes()
    assert cls.from_bytes(data) == sample
    assert cls.from_bytes(memoryview(data)) == sample
    assert cls.from_bytes(data).to_bytes() == data  # the encoding is canonical


@pytest.mark.parametrize(("cls", "sample"), ALL_SAMPLES, ids=sample_id)
def test_truncated_or_padded_body_is_a_protocol_error(
    cls: type[C.Message], sample: C.Message
) -> None:
    data = sample.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            cls.from_bytes(data[:cut])
    with pytest.raises(ProtocolError, match="trailing"):
        cls.from_bytes(data + b"\0")


def test_wire_type_encodings() -> None:
    def enc(t: C.WireType, v: object) -> bytes:
        out: list[bytes] = []
        t.encode(v, out)
        return b"".join(out)

    assert enc(C.I8, -1) == b"\xff"
    assert enc(C.I16, -2) == b"\xfe\xff"
    assert enc(C.I32, 1) == b"\1\0\0\0"
    assert enc(C.I64, -1) == b"\xff" * 8
    assert enc(C.U8, 255) == b"\xff"
    assert enc(C.U16, 0x1234) == b"\x34\x12"
    assert enc(C.U32, 2**32 - 1) == b"\xff" * 4
    assert enc(C.STR, "é") == b"\2\0\xc3\xa9"
    assert enc(C.BYTES, None) == b"\xff\xff\xff\xff"
    assert enc(C.BYTES, b"") == b"\0\0\0\0"
    assert enc(C.BYTES, memoryview(b"ab")) == b"\2\0\0\0ab"
    assert enc(C.Array(C.I8), [1, 2]) == b"\2\0\0\0\1\2"
    assert enc(C.Array(C.STR), []) == b"\0\0\0\0"


@pytest.mark.parametrize(
    ("typ", "value"),
    [(C.I8, 128), (C.I16, -(2**15) - 1), (C.I32, 2**31), (C.I64, 2**63), (C.U8, -1),
     (C.U16, 2**16), (C.U32, -1), (C.STR, "x" * 65536)],
)
def test_unencodable_values_raise_value_error(typ: C.WireType, value: object) -> None:
    with pytest.raises(ValueError):
        typ.encode(value, [])


@pytest.mark.parametrize(
    ("typ", "data", "fragment"),
    [
        (C.I32, b"\0\0\0", "truncated"),
        (C.STR, b"\5\0abc", "overruns"),
        (C.STR, b"\2\0\xc3", "overruns"),
        (C.STR, b"\1\0\xff", "UTF-8"),
        (C.STR, b"\3\0\xed\xa0\x80", "UTF-8"),  # an encoded surrogate
        (C.BYTES, b"\xfe\xff\xff\xff", "overruns"),  # length -2
        (C.BYTES, b"\5\0\0\0abc", "overruns"),
        (C.BYTES, b"\0\0", "truncated"),
        (C.Array(C.I8), b"\xff\xff\xff\xff", "cannot fit"),  # count -1: arrays are never null
        (C.Array(C.I8), b"\4\0\0\0abc", "cannot fit"),
        (C.Array(C.I8), b"\xff\xff\xff\x7f", "cannot fit"),
        (C.Array(C.I32), b"\2\0\0\0abcdef", "truncated"),
    ],
)
def test_malformed_wire_values(typ: C.WireType, data: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        typ.decode(memoryview(data), 0)


def test_decoded_bytes_are_views_without_copy() -> None:
    body = M.ProduceRequest("t", 0, 1, BATCH).to_bytes()
    decoded = M.ProduceRequest.from_bytes(body)
    assert isinstance(decoded.batch, memoryview) and decoded.batch == BATCH


# --- FrameBuffer ---------------------------------------------------------------------------------


def request_stream() -> tuple[bytes, list[tuple[int, int, C.Message]]]:
    """Several request frames back to back, and what each one carries."""
    sent = [
        (int(api), corr, SAMPLES[AR.REQUESTS[api]][corr % len(SAMPLES[AR.REQUESTS[api]])])
        for corr, api in enumerate(SERVED * 2)
    ]
    data = b"".join(ClientProtocol.encode_request(api, corr, body) for api, corr, body in sent)
    return data, sent


def drain_requests(proto: ServerProtocol) -> list[tuple[int, int, C.Message]]:
    got = []
    while (req := proto.next_request()) is not None:
        assert req.api_version == 0
        got.append((req.api_key, req.correlation_id, ServerProtocol.decode_body(req)))
    return got


def test_frames_fed_byte_by_byte() -> None:
    data, sent = request_stream()
    proto = ServerProtocol()
    got = []
    for i in range(len(data)):
        proto.receive_data(data[i : i + 1])
        got += drain_requests(proto)
    assert got == sent
    assert proto.frames.buffered() == 0


@pytest.mark.parametrize("seed", range(20))
def test_frames_fed_in_random_chunks(seed: int) -> None:
    data, sent = request_stream()
    rng = random.Random(seed)
    proto = ServerProtocol()
    got = []
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 2, 3, 7, 12, 13, 64, 500, 5000])
        proto.receive_data(memoryview(data)[pos : pos + n])
        pos += n
        if rng.random() < 0.7:  # sometimes feed several chunks before reading
            got += drain_requests(proto)
    got += drain_requests(proto)
    assert got == sent


def test_frame_buffer_need_and_partial_frames() -> None:
    fb = FrameBuffer(F.REQUEST_HEADER_SIZE)
    frame = ClientProtocol.encode_request(M.Api.DELETE_TOPIC, 1, M.DeleteTopicRequest("abc"))
    assert fb.need() == 0 and fb.next_frame() is None
    fb.feed(frame[:3])
    assert fb.need() == 0 and fb.next_frame() is None  # the length is not known yet
    fb.feed(frame[3:6])
    assert fb.need() == len(frame) - 6 and fb.next_frame() is None
    fb.feed(frame[6:])
    assert fb.need() == 0
    assert bytes(fb.next_frame() or b"") == frame[4:]
    assert fb.next_frame() is None and fb.buffered() == 0


def test_frame_buffer_compacts_consumed_bytes() -> None:
    frame = ClientProtocol.encode_request(M.Api.PRODUCE, 1, M.ProduceRequest("t", 0, 1, BATCH))
    fb = FrameBuffer(F.REQUEST_HEADER_SIZE)
    for _ in range(2000):
        fb.feed(frame + frame[:5])  # always leave a partial frame behind
        while fb.next_frame() is not None:
            pass
        fb.feed(frame[5:])
        while fb.next_frame() is not None:
            pass
        assert len(fb._buf) <= 65536 + 2 * len(frame) + 5


def test_returned_frames_survive_later_feeds() -> None:
    fb = FrameBuffer(F.REQUEST_HEADER_SIZE)
    a = ClientProtocol.encode_request(M.Api.DELETE_TOPIC, 1, M.DeleteTopicRequest("a"))
    b = ClientProtocol.encode_request(M.Api.DELETE_TOPIC, 2, M.DeleteTopicRequest("b"))
    fb.feed(a)
    first = fb.next_frame()
    fb.feed(b)
    second = fb.next_frame()
    assert first is not None and second is not None
    assert bytes(first) == a[4:] and bytes(second) == b[4:]


# --- ServerProtocol / ClientProtocol -------------------------------------------------------------


@pytest.mark.parametrize("api", SERVED, ids=lambda a: M.Api(a).name)
def test_request_round_trip(api: int) -> None:
    for i, body in enumerate(SAMPLES[AR.REQUESTS[api]]):
        data = ClientProtocol.encode_request(api, 2**32 - 1 - i, body)
        assert struct.unpack_from("<I", data)[0] == len(data) - 4
        server = ServerProtocol()
        server.receive_data(data)
        req = server.next_request()
        assert req is not None and server.next_request() is None
        assert (req.api_key, req.api_version, req.correlation_id) == (api, 0, 2**32 - 1 - i)
        assert ServerProtocol.decode_body(req) == body


@pytest.mark.parametrize("api", SERVED, ids=lambda a: M.Api(a).name)
def test_response_round_trip(api: int) -> None:
    for i, body in enumerate(SAMPLES[AR.RESPONSES[api]]):
        data = ServerProtocol.encode_response(i + 1, body)
        assert struct.unpack_from("<I", data)[0] == len(data) - 4
        client = ClientProtocol()
        client.receive_data(data)
        resp = client.next_response()
        assert resp is not None and client.next_response() is None
        assert (resp.correlation_id, resp.error_code) == (i + 1, 0)
        assert ClientProtocol.decode_body(api, resp) == body


def test_response_with_no_body() -> None:
    data = ServerProtocol.encode_response(9, None)
    assert data == F.RESPONSE_HEADER.pack(6, 9, 0)
    client = ClientProtocol()
    client.receive_data(data)
    resp = client.next_response()
    assert resp is not None
    assert ClientProtocol.decode_body(M.Api.CREATE_TOPIC, resp) == M.Empty()


WIRE_ERRORS = sorted(
    (c for c in errors._BY_CODE.values() if c.code < 100), key=lambda c: c.code
)


@pytest.mark.parametrize("cls", WIRE_ERRORS, ids=lambda c: c.__name__)
def test_error_response_raises_the_typed_error(cls: type[errors.EdgebusError]) -> None:
    body = M.ProduceResponse("t", 0, 0, 0, 0)  # ignored: an error response carries ErrorBody
    data = ServerProtocol.encode_response(77, body, error_code=cls.code, error_message="it broke")
    client = ClientProtocol()
    client.receive_data(data)
    resp = client.next_response()
    assert resp is not None and (resp.correlation_id, resp.error_code) == (77, cls.code)
    assert M.ErrorBody.from_bytes(resp.body) == M.ErrorBody("it broke")
    with pytest.raises(cls) as ei:
        ClientProtocol.decode_body(M.Api.PRODUCE, resp)
    assert type(ei.value) is cls
    assert "it broke" in str(ei.value)
    assert ei.value.code == cls.code


def test_error_response_with_unknown_code_or_no_message() -> None:
    client = ClientProtocol()
    client.receive_data(ServerProtocol.encode_response(1, None, error_code=999, error_message="?"))
    code = errors.UnknownTopicError.code
    client.receive_data(ServerProtocol.encode_response(2, None, error_code=code))
    resp = client.next_response()
    assert resp is not None
    with pytest.raises(errors.UnknownServerError, match=r"\?"):
        ClientProtocol.decode_body(M.Api.FETCH, resp)
    resp = client.next_response()
    assert resp is not None
    with pytest.raises(errors.UnknownTopicError, match="UnknownTopicError"):
        ClientProtocol.decode_body(M.Api.FETCH, resp)


@pytest.mark.parametrize(
    "message",
    ["x" * 0xFFFF, "x" * 0x10000, "é" * 40000, "x" + "€" * 30000, "bad \udcff surrogate",
     repr("\0" * 40000)],
    ids=["at limit", "one over", "2-byte chars", "3-byte chars", "lone surrogate", "quoted input"],
)
def test_long_error_messages_are_cut_not_fatal(message: str) -> None:
    """An error message may quote client input: it must never make encoding the response fail."""
    data = ServerProtocol.encode_response(3, None, errors.InvalidRequestError.code, message)
    client = ClientProtocol()
    client.receive_data(data)
    resp = client.next_response()
    assert resp is not None
    with pytest.raises(errors.InvalidRequestError) as ei:
        ClientProtocol.decode_body(M.Api.CREATE_TOPIC, resp)
    got = M.ErrorBody.from_bytes(resp.body).message
    assert len(got.encode()) <= 0xFFFF
    if len(message.encode("utf-8", "replace")) <= 0xFFFF:
        assert got == message.encode("utf-8", "replace").decode()
    else:
        assert got.endswith("...") and message.startswith(got[:-3])
    assert got in str(ei.value)


def _request(api_key: int, version: int = 0, body: bytes = b"") -> RequestFrame:
    server = ServerProtocol()
    server.receive_data(F.REQUEST_HEADER.pack(8 + len(body), api_key, version, 5) + body)
    req = server.next_request()
    assert req is not None
    return req


@pytest.mark.parametrize("api_key", [8, 9, 19, 1000, 0xFFFF])
def test_unknown_api_key(api_key: int) -> None:
    with pytest.raises(UnsupportedVersionError, match=f"unknown API key {api_key}") as ei:
        ServerProtocol.decode_body(_request(api_key))
    assert ei.value.code == 4


@pytest.mark.parametrize("api", SERVED, ids=lambda a: M.Api(a).name)
@pytest.mark.parametrize("version", [1, 7, 0xFFFF])
def test_unsupported_version(api: int, version: int) -> None:
    if version <= AR.VERSIONS[api][1]:
        return  # a version it serves (test_later_versions)
    body = SAMPLES[AR.REQUESTS[api]][0].to_bytes()
    with pytest.raises(UnsupportedVersionError, match=f"version {version} not in"):
        ServerProtocol.decode_body(_request(api, version, body))


def test_later_versions() -> None:
    """A later version is asked by sending its body (its class names the version), and its
    answer is decoded by the version asked: REPLICA_FETCH v1 carries the bytes to the log end,
    v0 (what an older peer serves and asks) does not."""
    v1 = SAMPLES[M.ReplicaFetchRequestV1][0]
    frame = ClientProtocol.encode_request(M.Api.REPLICA_FETCH, 5, v1)
    server = ServerProtocol()
    server.receive_data(frame)
    req = server.next_request()
    assert req is not None and req.api_version == 1
    assert type(ServerProtocol.decode_body(req)) is M.ReplicaFetchRequestV1
    v0 = M.ReplicaFetchRequest(v1.sync, v1.max_bytes, v1.partitions, v1.max_wait_ms)
    server.receive_data(ClientProtocol.encode_request(M.Api.REPLICA_FETCH, 6, v0))
    req = server.next_request()
    assert req is not None and req.api_version == 0
    assert type(ServerProtocol.decode_body(req)) is M.ReplicaFetchRequest
    answer = SAMPLES[M.ReplicaFetchResponseV1][0]
    out = ServerProtocol.encode_response(5, answer)
    client = ClientProtocol()
    client.receive_data(out)
    got = client.next_response()
    assert got is not None
    assert ClientProtocol.decode_body(M.Api.REPLICA_FETCH, got, 1) == answer
    with pytest.raises(ProtocolError):  # a v1 answer is not a v0 one
        ClientProtocol.decode_body(M.Api.REPLICA_FETCH, got)


def test_connection_survives_unsupported_version() -> None:
    server = ServerProtocol()
    server.receive_data(F.REQUEST_HEADER.pack(8, 9, 0, 1))  # key 9 is not assigned
    server.receive_data(ClientProtocol.encode_request(M.Api.STATUS, 2, M.Empty()))
    first = server.next_request()
    assert first is not None
    with pytest.raises(UnsupportedVersionError):
        ServerProtocol.decode_body(first)
    second = server.next_request()
    assert second is not None and second.correlation_id == 2
    assert ServerProtocol.decode_body(second) == M.Empty()


# --- frame length bounds -------------------------------------------------------------------------


@pytest.mark.parametrize("max_frame", [64, 1000])
def test_oversized_length_is_refused_before_the_body(max_frame: int) -> None:
    server = ServerProtocol(max_frame=max_frame)
    server.receive_data(struct.pack("<I", max_frame))
    assert server.next_request() is None  # exactly the limit is allowed; body not here yet
    server = ServerProtocol(max_frame=max_frame)
    server.receive_data(struct.pack("<I", max_frame + 1))
    with pytest.raises(ProtocolError, match=f"exceeds the limit of {max_frame}"):
        server.next_request()
    assert server.frames.buffered() == 4  # nothing of the body was waited for


def test_oversized_length_at_the_default_limit() -> None:
    for proto, limit in [(ServerProtocol(), F.MAX_FRAME_BYTES),
                         (ClientProtocol(), F.MAX_FRAME_BYTES + 1024 * 1024)]:
        proto.receive_data(struct.pack("<I", limit + 1) + b"\0" * 8)
        with pytest.raises(ProtocolError, match="exceeds"):
            proto.frames.next_frame()
    server = ServerProtocol()
    server.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        server.next_request()


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    body = M.ProduceRequest("t", 0, 1, b"x" * 50).to_bytes()
    frame = ClientProtocol.encode_request(M.Api.PRODUCE, 1, M.ProduceRequest("t", 0, 1, b"x" * 50))
    server = ServerProtocol(max_frame=8 + len(body))
    server.receive_data(frame)
    req = server.next_request()
    assert req is not None and bytes(req.body) == body


@pytest.mark.parametrize("length", [0, 1, 7])
def test_undersized_request_length(length: int) -> None:
    server = ServerProtocol()
    server.receive_data(struct.pack("<I", length) + b"\0" * length)
    with pytest.raises(ProtocolError, match="shorter than its header"):
        server.next_request()


@pytest.mark.parametrize("length", [0, 5])
def test_undersized_response_length(length: int) -> None:
    client = ClientProtocol()
    client.receive_data(struct.pack("<I", length) + b"\0" * length)
    with pytest.raises(ProtocolError, match="shorter than its header"):
        client.next_response()


def test_minimal_frames_are_accepted() -> None:
    server = ServerProtocol()
    server.receive_data(struct.pack("<IHHI", 8, M.Api.STATUS, 0, 3))
    req = server.next_request()
    assert req is not None and len(req.body) == 0
    assert ServerProtocol.decode_body(req) == M.Empty()
    client = ClientProtocol()
    client.receive_data(struct.pack("<IIh", 6, 3, 0))
    resp = client.next_response()
    assert resp is not None and len(resp.body) == 0


def test_bad_body_in_a_sound_frame_is_a_protocol_error() -> None:
    frame = ClientProtocol.encode_request(M.Api.METADATA, 1, M.MetadataRequest(["a"]))
    server = ServerProtocol()
    server.receive_data(frame[:-1] + b"\xff")  # invalid UTF-8 in the topic name
    req = server.next_request()
    assert req is not None
    with pytest.raises(ProtocolError, match="UTF-8"):
        ServerProtocol.decode_body(req)
