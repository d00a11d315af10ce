"""Bad input gets a clear error or a closed connection; the supervisor keeps serving others."""

from __future__ import annotations

import re
import socket
import struct
import time
import zlib

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import batch as B
from edgebus import errors as E
from edgebus.protocol import messages as M
from edgebus.protocol.framing import ClientProtocol

pytestmark = pytest.mark.integration


def raw(sock_path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock_path)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True


def response(s: socket.socket, api: int):
    proto = ClientProtocol()
    while (frame := proto.next_response()) is None:
        data = s.recv(65536)
        assert data, "connection closed before a response"
        proto.receive_data(data)
    return ClientProtocol.decode_body(api, frame)


@pytest.fixture
def healthy(broker):
    """A good client that must keep working while others misbehave."""
    with Admin(socket=broker.socket) as a:
        a.create_topic("ok")
    p = Producer(socket=broker.socket, linger_ms=0)
    yield p
    p.send("ok", b"still here").get(5)
    p.close()


def test_garbage_bytes_close_only_that_connection(broker, healthy):
    s = raw(broker.socket)
    s.sendall(b"\xff" * 64)
    assert closed_by_peer(s)
    assert "bad frame" in broker.log()


def test_huge_length_is_refused_without_buffering(broker, healthy):
    s = raw(broker.socket)
    s.sendall(struct.pack("<I", 0xFFFFFFF0) + b"\x00" * 12)
    assert closed_by_peer(s)
    assert "exceeds the limit" in broker.log()


def test_truncated_frame_then_hangup(broker, healthy):
    s = raw(broker.socket)
    frame = ClientProtocol.encode_request(M.Api.METADATA, 1, M.MetadataRequest([]))
    s.sendall(frame[: len(frame) // 2])
    s.close()
    healthy.send("ok", b"x").get(5)


def test_unknown_api_gets_an_error_and_the_connection_stays(broker, healthy):
    s = raw(broker.socket)
    s.sendall(struct.pack("<IHHI", 8, 999, 0, 7))
    with pytest.raises(E.UnsupportedVersionError, match=r"unknown API key 999"):
        response(s, M.Api.METADATA)
    s.sendall(ClientProtocol.encode_request(M.Api.METADATA, 8, M.MetadataRequest([])))
    assert [t.name for t in response(s, M.Api.METADATA).topics] == ["ok"]


def test_malformed_body_gets_error_then_close(broker, healthy):
    s = raw(broker.socket)
    s.sendall(struct.pack("<IHHI", 8 + 3, M.Api.METADATA, 0, 9) + b"\x05\x00\x00")
    with pytest.raises(E.ProtocolError):
        response(s, M.Api.METADATA)
    assert closed_by_peer(s)


def test_corrupt_batch_and_unknown_topic_and_too_large(broker, healthy):
    s = raw(broker.socket)
    good = bytearray(B.build_batch([B.encode_record(1, None, b"v", [])], 1, 1))
    bad = bytearray(good)
    bad[-1] ^= 1
    s.sendall(ClientProtocol.encode_request(M.Api.PRODUCE, 1, M.ProduceRequest("ok", 0, 1, bytes(bad))))
    with pytest.raises(E.CorruptRecordError, match="CRC"):
        response(s, M.Api.PRODUCE)
    s.sendall(ClientProtocol.encode_request(M.Api.PRODUCE, 2, M.ProduceRequest("nope", 0, 1, bytes(good))))
    with pytest.raises(E.UnknownTopicError, match="nope"):
        response(s, M.Api.PRODUCE)
    big = B.build_batch([B.encode_record(1, None, b"x" * (2 * 1024 * 1024), [])], 1, 1)
    s.sendall(ClientProtocol.encode_request(M.Api.PRODUCE, 3, M.ProduceRequest("ok", 0, 1, big)))
    with pytest.raises(E.RecordTooLargeError, match="exceeds"):
        response(s, M.Api.PRODUCE)
    # The client-side check names the limit before anything is sent.
    with pytest.raises(E.RecordTooLargeError, match="max_request_size"):
        healthy.send("ok", b"x" * (2 * 1024 * 1024))


def test_batch_whose_records_do_not_decode_is_refused(broker, healthy):
    """A valid CRC over records that do not decode (issue 14, item 5): refused with a typed
    error, nothing appended, and every reader of the partition keeps working."""
    s = raw(broker.socket)
    good = bytearray(B.build_batch([B.encode_record(1, b"k", b"v", [])], 1, 1))
    bad = bytearray(good)
    struct.pack_into("<i", bad, 64 + 12, -2)  # the first record's key length
    struct.pack_into("<I", bad, 20, zlib.crc32(bad[24:]))  # resealed: the CRC is right
    B.validate_batch(bad)
    s.sendall(ClientProtocol.encode_request(M.Api.PRODUCE, 1, M.ProduceRequest("ok", 0, 1, bytes(bad))))
    with pytest.raises(E.CorruptRecordError, match=r"do not decode.*key length -2"):
        response(s, M.Api.PRODUCE)
    s.sendall(ClientProtocol.encode_request(M.Api.PRODUCE, 2, M.ProduceRequest("ok", 0, 1, bytes(good))))
    assert response(s, M.Api.PRODUCE).base_offset == 0  # nothing was appended before it
    s.close()
    with Consumer(socket=broker.socket, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("ok", 0)])
        recs = c.poll(5000)[TopicPartition("ok", 0)]
    assert [(r.offset, r.key, r.value) for r in recs] == [(0, b"k", b"v")]


def test_unknown_topic_errors_name_the_topic(broker):
    with Producer(socket=broker.socket) as p, pytest.raises(E.UnknownTopicError, match="missing"):
        p.send("missing", b"v")
    with pytest.raises(E.UnknownTopicError, match="missing"):
        Consumer("missing", socket=broker.socket)


def test_broker_unavailable_names_the_socket(tmp_path):
    path = str(tmp_path / "nobody.sock")
    with pytest.raises(E.BrokerUnavailableError, match=re.escape(path)):
        Producer(socket=path)


def test_client_dies_mid_write_others_unaffected(broker, healthy):
    s = raw(broker.socket)
    batch = B.build_batch([B.encode_record(1, None, b"v" * 1000, [])], 1, 1)
    frame = ClientProtocol.encode_request(M.Api.PRODUCE, 1, M.ProduceRequest("ok", 0, 2, batch))
    s.sendall(frame[:-100])
    s.close()
    time.sleep(0.1)
    c = Consumer(socket=broker.socket, auto_offset_reset="earliest")
    tp = TopicPartition("ok", 0)
    c.assign([tp])
    healthy.send("ok", b"after").get(5)
    # poll() returns as soon as a record is there: 30 s only bounds a loaded supervisor's answer
    vals = [r.value for r in c.poll(30_000).get(tp, [])]
    c.close()
    assert vals == [b"after"], "a half-sent batch must not be appended"
