"""Lengths in a Kafka request are bounded before kio decodes it: kio's native reader allocates an
array's capacity from the client's length, and a failed allocation aborts the process (no
exception). A 12-byte Produce v9 body with a five-byte array length killed the supervisor."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import pytest

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, read_frame

pytestmark = pytest.mark.integration

# Produce v9: transactional_id null, acks 1, timeout 1000, topic_data compact array of
# 18,397,754,563 elements (c4 e9 dd c4 44), then nothing.
HUGE_ARRAY_BODY = bytes.fromhex("000001000003e8c4e9ddc444")


@pytest.mark.unit
def test_a_huge_array_length_is_a_protocol_error_not_an_abort() -> None:
    # In a child: before the check this aborted the interpreter outright.
    code = (
        "from edgebus.server.kafka.codec import decode_request\n"
        "from edgebus.errors import ProtocolError\n"
        f"body = memoryview(bytes.fromhex({HUGE_ARRAY_BODY.hex()!r})).toreadonly()\n"
        "try:\n"
        "    decode_request(0, 9, body, 0)\n"
        "except ProtocolError as e:\n"
        "    print('refused:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    assert "refused: array length 18397754563 in a request with 0 bytes left" in r.stdout


def test_the_supervisor_survives_a_huge_array_length(kbroker: EmbeddedBroker) -> None:
    header = struct.pack(">hhih", 0, 9, 5, 4) + b"evil" + b"\x00"
    with connect(kbroker) as s:
        s.sendall(struct.pack(">i", len(header) + len(HUGE_ARRAY_BODY)) + header + HUGE_ARRAY_BODY)
        s.shutdown(socket.SHUT_WR)
        assert read_frame(s) == b"", "the offending connection is closed"
    assert kbroker.proc is not None and kbroker.proc.poll() is None
    with connect(kbroker) as s:  # and the next client is served
        from kio.schema.api_versions.v3.request import ApiVersionsRequest

        from tests.kafka_listener.conftest import raw_request

        s.sendall(raw_request(18, 3, 1, ApiVersionsRequest(client_software_name="t",
                                                            client_software_version="1")))
        assert read_frame(s)[:4] == struct.pack(">i", 1)


@pytest.mark.unit
@pytest.mark.parametrize("cursor", [None, ("t", 3)])
def test_a_nullable_struct_is_walked_with_its_marker(cursor: tuple[str, int] | None) -> None:
    # DescribeTopicPartitions' cursor is a nullable struct (an int8 marker first, KIP-893): the
    # walk once read the marker as a string length and refused kafka-python's valid request.
    import io

    from kio.schema.describe_topic_partitions.v0.request import (
        Cursor,
        DescribeTopicPartitionsRequest,
        TopicRequest,
    )
    from kio.serial import entity_writer

    from edgebus.server.kafka import lengths

    req = DescribeTopicPartitionsRequest(
        topics=(TopicRequest(name="dp-a"),), response_partition_limit=4,
        cursor=None if cursor is None else Cursor(topic_name=cursor[0], partition_index=cursor[1]))
    buf = io.BytesIO()
    entity_writer(DescribeTopicPartitionsRequest)(buf, req)
    lengths.check(DescribeTopicPartitionsRequest, memoryview(buf.getvalue()), 0)  # no error
