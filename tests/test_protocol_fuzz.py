"""The fuzz rule of the protocol package, as property tests.

Rule: any bytes fed to the protocol either give valid events or raise the protocol's own errors
(ProtocolError; UnsupportedVersionError for a sound frame naming an unknown API or version),
nothing else, and never buffer more than one frame's limit plus the bytes of the latest read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebus import errors
from edgebus import format as F
from edgebus.batch import build_batch, encode_record
from edgebus.errors import ProtocolError, UnsupportedVersionError
from edgebus.protocol import codec as C
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol import registry as AR
from edgebus.protocol.framing import ClientProtocol, ServerProtocol

pytestmark = pytest.mark.property

SMALL = 256  # max_frame used here, so that random lengths often hit the bound
BATCH = build_batch([encode_record(1, b"k", b"v", [("h", None)])], 1, 1)

REQUEST_SAMPLES: dict[int, C.Message] = {
    M.Api.API_VERSIONS: M.ApiVersionsRequest("fuzz"),
    M.Api.METADATA: M.MetadataRequest(["a", "bb"]),
    M.Api.CREATE_TOPIC: M.CreateTopicRequest("t", 2, [M.ConfigEntry("retention_ms", "1000")]),
    M.Api.DELETE_TOPIC: M.DeleteTopicRequest("t"),
    M.Api.ALTER_TOPIC_CONFIG: M.AlterTopicConfigRequest("t", [M.ConfigEntry("retention_ms", "1")]),
    M.Api.PRODUCE: M.ProduceRequest("t", 0, M.ACKS_WRITTEN, BATCH),
    M.Api.FETCH: M.FetchRequest(100, 1, 4096, [M.FetchPartition("t", 0, 5, 1024)]),
    M.Api.FETCH_STANDING: M.FetchRequest(100, 1, 4096, [M.FetchPartition("t", 0, 5, 1024)]),
    M.Api.LIST_OFFSETS: M.ListOffsetsRequest([M.ListOffsetsPartition("t", 0, M.LATEST)]),
    M.Api.STATUS: M.Empty(),
    M.Api.SHM_ATTACH: M.ShmAttachRequest(0, 1 << 20),
    M.Api.JOIN_GROUP: G.JoinGroupRequest(
        "g", "", "c", 10_000, 30_000, ["t"], ["range"], [G.TopicPartitions("t", [0, 1])]
    ),
    M.Api.SYNC_GROUP: G.SyncGroupRequest("g", 1, "m-1"),
    M.Api.HEARTBEAT: G.HeartbeatRequest("g", 1, "m-1"),
    M.Api.LEAVE_GROUP: G.LeaveGroupRequest("g", "m-1"),
    M.Api.OFFSET_COMMIT: G.OffsetCommitRequest(
        "g", 1, "m-1", [G.OffsetCommitPartition("t", 0, 5, "x")]
    ),
    M.Api.OFFSET_FETCH: G.OffsetFetchRequest("g", [G.TopicPartitions("t", [0])]),
    M.Api.LIST_GROUPS: M.Empty(),
    M.Api.DESCRIBE_GROUP: G.DescribeGroupRequest("g"),
    M.Api.RESET_OFFSETS: G.ResetOffsetsRequest("g", "t", [0, 1], G.RESET_OFFSET, 7, 1),
    M.Api.REPLICA_HELLO: M.ReplicaHelloRequest("gw-7", "t0ken-0123456789abcdef"),
    M.Api.REPLICA_APPEND: M.ReplicaAppendRequest("t", 0, "ab" * 16, M.ACKS_WRITTEN, BATCH),
    M.Api.PROMOTE_TOPIC: M.PromoteTopicRequest("t"),
    M.Api.REPLICA_FETCH: M.ReplicaFetchRequest(1, 4096, [M.FetchPartition("t", 0, 5, 1024)]),
    M.Api.REPLICA_GAP: M.ReplicaGapRequest("t", 0, "ab" * 16, M.ACKS_WRITTEN, 5, 50, 1),
    M.Api.REPLICA_APPEND_COMPRESSED: M.ReplicaAppendCompressedRequest(
        "t", 0, "ab" * 16, M.ACKS_WRITTEN, M.CODEC_ZSTD, len(BATCH), b"(\xb5/\xfd"),
    M.Api.INIT_PRODUCER_ID: M.InitProducerIdRequest("tx", 60_000, 7, 1),
    M.Api.ADD_PARTITIONS_TO_TXN: M.AddPartitionsToTxnRequest("tx", 7, 1, [M.TxnPartition("a", 0)]),
    M.Api.TXN_OFFSET_COMMIT: M.TxnOffsetCommitRequest("tx", 7, 1, "g", [M.TxnOffset("a", 0, 1)]),
    M.Api.END_TXN: M.EndTxnRequest("tx", 7, 1, 1),
    M.Api.LIST_TRANSACTIONS: M.Empty(),
}


def test_every_served_api_has_a_sample() -> None:
    assert set(REQUEST_SAMPLES) == set(AR.REQUESTS)


# --- the rule, as one checker --------------------------------------------------------------------


class Closed(Exception):
    """The protocol raised ProtocolError: the connection would be closed here."""


def _chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos += n
        i += 1


Events = list[tuple[int, C.Message]]


def serve(data: bytes, sizes: list[int], max_frame: int = SMALL) -> tuple[Events, bool]:
    """Feed data to a ServerProtocol in chunks, checking the rule.

    Returns the requests decoded, and whether a ProtocolError would have closed the connection.
    """
    proto = ServerProtocol(max_frame=max_frame)
    events: Events = []
    try:
        for piece in _chunks(data, sizes):
            before = proto.frames.buffered()
            proto.receive_data(piece)
            assert proto.frames.buffered() == before + len(piece)
            while True:
                try:
                    req = proto.next_request()
                except ProtocolError as e:
                    raise Closed from e
                if req is None:
                    break
                assert len(req.body) <= max_frame - 8
                try:
                    msg = ServerProtocol.decode_body(req)
                except UnsupportedVersionError:
                    assert req.api_key not in AR.REQUESTS or req.api_version not in range(
                        AR.VERSIONS[req.api_key][1] + 1)
                    continue  # answered with error code 4; the connection stays open
                except ProtocolError as e:
                    raise Closed from e
                # A valid event is exactly what was sent: the encoding is canonical.
                assert type(msg) is AR.BODIES[(req.api_key, req.api_version)][0]
                assert msg.to_bytes() == bytes(req.body)
                events.append((req.api_key, msg))
            # Never more than one incomplete frame (its 4 length bytes included) stays buffered.
            assert proto.frames.buffered() < 4 + max_frame
    except Closed:
        return events, True
    return events, False


def request_frame(api_key: int, body: bytes, version: int = 0, corr: int = 1) -> bytes:
    return F.REQUEST_HEADER.pack(8 + len(body), api_key, version, corr) + body


# --- arbitrary bytes -----------------------------------------------------------------------------

sizes_st = st.lists(st.integers(1, 600), min_size=1, max_size=8)


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """Bytes shaped like request frames, so that the body decoders are reached, not only framing.

    Most frames have a sound header (a served API, version 0, the right length); the rest have
    any header. Bodies are a sample request, an edited one, or random bytes.
    """
    out = []
    for _ in range(draw(st.integers(1, 6))):
        sound = draw(st.integers(0, 3)) > 0
        if sound:
            api, version = draw(st.sampled_from(sorted(AR.REQUESTS))), 0
        else:
            api = draw(st.sampled_from(sorted(AR.REQUESTS)) | st.integers(0, 0xFFFF))
            version = draw(st.sampled_from([0, 1]) | st.integers(0, 0xFFFF))
        kind = draw(st.sampled_from(["sample", "edited sample", "random"]))
        body = REQUEST_SAMPLES.get(api, M.Empty()).to_bytes()
        if kind == "edited sample":
            start, end = sorted(draw(st.lists(st.integers(0, len(body)), min_size=2, max_size=2)))
            body = body[:start] + draw(st.binary(max_size=8)) + body[end:]
        elif kind == "random":
            body = draw(st.binary(max_size=SMALL))
        length = 8 + len(body)
        if not sound:
            length = draw(st.just(length) | st.integers(0, 2 * SMALL) | st.integers(0, 2**32 - 1))
        out.append(struct.pack("<IHHI", length, api, version, draw(st.integers(0, 2**32 - 1))))
        out.append(body)
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3 * SMALL), sizes=sizes_st)
def test_any_bytes(data: bytes, sizes: list[int]) -> None:
    serve(data, sizes)


@settings(max_examples=300, deadline=None)
@given(data=framed(), sizes=sizes_st)
def test_frame_shaped_bytes(data: bytes, sizes: list[int]) -> None:
    serve(data, sizes)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3 * SMALL) | framed(), sizes=sizes_st,
       api=st.sampled_from(sorted(AR.RESPONSES)))
def test_any_bytes_to_the_client(data: bytes, sizes: list[int], api: int) -> None:
    """The client side: responses decode, or raise an edgebus error (typed by the error code)."""
    proto = ClientProtocol(max_frame=SMALL)
    for piece in _chunks(data, sizes):
        proto.receive_data(piece)
        try:
            while (resp := proto.next_response()) is not None:
                try:
                    body = ClientProtocol.decode_body(api, resp)
                except ProtocolError:
                    continue
                except errors.EdgebusError as e:
                    assert resp.error_code != 0
                    assert e.code == resp.error_code or type(e) is errors.UnknownServerError
                    continue
                assert resp.error_code == 0
                assert body.to_bytes() == bytes(resp.body)
        except ProtocolError:
            return
        assert proto.frames.buffered() < 4 + SMALL


# --- mutated valid requests ----------------------------------------------------------------------

sample_st = st.sampled_from(sorted(REQUEST_SAMPLES))


@settings(max_examples=300, deadline=None)
@given(api=sample_st, flips=st.lists(st.integers(0, 2**20), max_size=8),
       cut=st.none() | st.integers(0, 2**20), sizes=sizes_st)
def test_mutated_frames(api: int, flips: list[int], cut: int | None, sizes: list[int]) -> None:
    """Bit flips and truncation anywhere in a frame, length prefix and header included."""
    frame = bytearray(ClientProtocol.encode_request(api, 3, REQUEST_SAMPLES[api]))
    for bit in flips:
        bit %= len(frame) * 8
        frame[bit // 8] ^= 1 << (bit % 8)
    if cut is not None:
        del frame[cut % (len(frame) + 1) :]
    # Follow it with a sound request: while the length prefix is intact, the stream stays in
    # sync, so that request is decoded unless the mutated one closed the connection.
    tail = ClientProtocol.encode_request(M.Api.STATUS, 4, M.Empty())
    events, closed = serve(bytes(frame) + tail, sizes, max_frame=4096)
    length_intact = cut is None and all(bit % (len(frame) * 8) >= 32 for bit in flips)
    if length_intact and not closed:
        assert events[-1] == (M.Api.STATUS, M.Empty())


@settings(max_examples=300, deadline=None)
@given(api=sample_st, flips=st.lists(st.integers(0, 2**20), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, 2**20))
def test_mutated_bodies(api: int, flips: list[int], cut: int | None) -> None:
    """Bit flips and truncation in the body, with a correct frame length: the decoder is reached."""
    body = bytearray(REQUEST_SAMPLES[api].to_bytes() or b"\0")
    for bit in flips:
        bit %= len(body) * 8
        body[bit // 8] ^= 1 << (bit % 8)
    if cut is not None:
        del body[cut % (len(body) + 1) :]
    serve(request_frame(api, bytes(body)), [1 << 16], max_frame=4096)


@pytest.mark.parametrize("api", sorted(REQUEST_SAMPLES), ids=lambda a: M.Api(a).name)
def test_every_single_bit_flip_and_truncation_of_each_request(api: int) -> None:
    """Exhaustive for each request type: a flipped bit decodes to a valid message or is a
    ProtocolError; a truncated body is always a ProtocolError."""
    cls = AR.REQUESTS[api]
    body = REQUEST_SAMPLES[api].to_bytes()
    for bit in range(len(body) * 8):
        mutated = bytearray(body)
        mutated[bit // 8] ^= 1 << (bit % 8)
        try:
            msg = cls.from_bytes(bytes(mutated))
        except ProtocolError:
            continue
        assert msg.to_bytes() == bytes(mutated)
    for cut in range(len(body)):
        server = ServerProtocol(max_frame=4096)
        server.receive_data(request_frame(api, body[:cut]))
        req = server.next_request()
        assert req is not None
        with pytest.raises(ProtocolError):
            ServerProtocol.decode_body(req)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=4, max_size=64), limit=st.integers(8, 64))
def test_length_is_checked_before_the_body_arrives(data: bytes, limit: int) -> None:
    """Whatever the first 4 bytes say, an oversized frame fails as soon as they are in."""
    proto = ServerProtocol(max_frame=limit)
    proto.receive_data(data[:4])
    (length,) = struct.unpack_from("<I", data)
    if length > limit or length < 8:
        with pytest.raises(ProtocolError):
            proto.next_request()
    else:
        assert proto.next_request() is None
