"""The protocol fuzz rule on the Kafka listener: whatever bytes a client sends (random bytes,
truncated frames, huge or negative lengths, valid headers of every API with garbage bodies), it
gets well-formed answers or its connection closed; the supervisor stays up, logs no internal
error, and another client on its own connection is served throughout."""

from __future__ import annotations

import random
import socket
import struct

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse

from edgebus.server.kafka.apis import collect
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame

pytestmark = pytest.mark.integration


def _header(api_key: int, version: int, corr: int, flexible: bool) -> bytes:
    return struct.pack(">hhih", api_key, version, corr, 4) + b"fuzz" + (b"\x00" if flexible else b"")


def cases(seed: int = 12) -> list[bytes]:
    rnd = random.Random(seed)
    out = [
        struct.pack(">i", 0x7FFFFFFF) + b"x" * 100,  # a huge length: refused before buffering
        struct.pack(">i", -5) + b"x" * 10,  # negative
        struct.pack(">i", 3) + b"abc",  # shorter than any header
        struct.pack(">i", 100) + b"\x00\x12\x00\x03",  # truncated, then the client goes away
        struct.pack(">i", 8) + struct.pack(">hhi", 999, 0, 1),  # an unknown API
        struct.pack(">i", 8) + struct.pack(">hhi", 0, 99, 1),  # a version nobody knows
    ]
    out += [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))) for _ in range(40)]
    for api in collect().values():
        for version in (api.min_version, api.max_version):
            for flexible in (False, True):
                for _ in range(6):
                    garbage = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 120)))
                    payload = _header(api.api_key, version, 77, flexible) + garbage
                    out.append(struct.pack(">i", len(payload)) + payload)
    return out


def frames_or_close(s: socket.socket) -> None:
    """Read until the server closes; every answer must be a whole, length-prefixed frame."""
    s.settimeout(10)
    buf = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not d:
            break
        buf += d
    while buf:
        assert len(buf) >= 4
        n = struct.unpack(">i", buf[:4])[0]
        assert 4 <= n <= len(buf) - 4, "an answer that is not a whole frame"
        buf = buf[4 + n :]


def test_fuzz_rule(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=2)
    good = connect(kbroker)
    probe = raw_request(18, 3, 1, ApiVersionsRequest(client_software_name="g", client_software_version="1"))
    for i, data in enumerate(cases()):
        with connect(kbroker) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # closed by the server already
            frames_or_close(s)
        if i % 25 == 0:  # the other client is served all along
            good.sendall(probe)
            _, resp = parse_response(read_frame(good), ApiVersionsResponse, flexible_header=False)
            assert resp.error_code == 0
    good.sendall(probe)
    assert parse_response(read_frame(good), ApiVersionsResponse, flexible_header=False)[1].error_code == 0
    good.close()
    assert kbroker.proc is not None and kbroker.proc.poll() is None
    log = kbroker.log()
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
