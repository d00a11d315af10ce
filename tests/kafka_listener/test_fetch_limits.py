"""Produce with acks=0 and Fetch's three limits (max wait, min bytes, max bytes) through raw
Kafka frames and a real client, against a real supervisor: an acks=0 request gets no answer yet
its records land; a fetch parks until min_bytes have arrived; max_bytes and the partition's
max bytes bound an answer, which still carries one whole batch when that batch is larger."""

from __future__ import annotations

import datetime
import socket
import struct
import time

import pytest
from confluent_kafka import Producer as CKProducer
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse
from kio.schema.fetch.v12 import request as FR
from kio.schema.fetch.v12.response import FetchResponse
from kio.schema.produce.v9 import request as PR

from edgebus import Admin, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame
from tests.kafka_listener.test_records import kafka_batch

pytestmark = pytest.mark.integration


def log_end(broker: EmbeddedBroker, topic: str) -> int:
    with Admin(socket=broker.socket) as a:
        return a.list_offsets([TopicPartition(topic, 0)], -1)[TopicPartition(topic, 0)][0]


def fetch_request(topic: str, offset: int, *, max_wait_ms: int, min_bytes: int,
                  max_bytes: int, partition_max_bytes: int) -> FR.FetchRequest:
    return FR.FetchRequest(
        max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes,
        max_bytes=max_bytes, topics=(FR.FetchTopic(topic=topic, partitions=(FR.FetchPartition(
            partition=0, fetch_offset=offset, partition_max_bytes=partition_max_bytes),)),),
        forgotten_topics_data=())


def batch_sizes(records: bytes | None) -> list[int]:
    """The byte length of each whole Kafka batch in a Fetch answer's records."""
    out, pos, data = [], 0, records or b""
    while pos + 12 <= len(data):
        n = struct.unpack_from(">i", data, pos + 8)[0] + 12
        if pos + n > len(data):
            break  # a partial batch at the end: Kafka allows it, the client drops it
        out.append(n)
        pos += n
    return out


def answer(s: socket.socket) -> tuple[int, object]:
    corr, resp = parse_response(read_frame(s), FetchResponse, flexible_header=True)
    (topic,) = resp.responses
    (part,) = topic.partitions
    assert part.error_code == 0
    return corr, part


def test_acks_0_gets_no_answer_and_its_records_land(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "a0")
    with connect(kbroker) as s:
        req = PR.ProduceRequest(transactional_id=None, acks=0,
                                timeout=datetime.timedelta(seconds=30),
                                topic_data=(PR.TopicProduceData(name="a0", partition_data=(
                                    PR.PartitionProduceData(index=0, records=kafka_batch(
                                        [(None, b"r%d" % i, [], 0) for i in range(3)])),)),))
        s.sendall(raw_request(0, 9, 1, req))
        # The next frame on the connection answers the next request: the produce had none.
        s.sendall(raw_request(18, 3, 2, ApiVersionsRequest(client_software_name="t",
                                                           client_software_version="1")))
        corr, resp = parse_response(read_frame(s), ApiVersionsResponse, flexible_header=False)
        assert (corr, resp.error_code) == (2, 0)
    assert log_end(kbroker, "a0") == 3
    # And a real client configured with acks=0.
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "acks": 0, "linger.ms": 5})
    for i in range(500):
        p.produce("a0", b"v%d" % i, partition=0)
    assert p.flush(30) == 0
    deadline = time.monotonic() + 30  # acks=0 is fire and forget: wait until they are stored
    while log_end(kbroker, "a0") < 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log_end(kbroker, "a0") == 503


def test_a_fetch_waits_for_min_bytes_then_answers_with_everything(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "mb")
    with connect(kbroker) as s:
        s.sendall(raw_request(1, 12, 7, fetch_request("mb", 0, max_wait_ms=30_000, min_bytes=4000,
                                                      max_bytes=1 << 20,
                                                      partition_max_bytes=1 << 20)))
        with Producer(socket=kbroker.socket, linger_ms=0) as p:
            p.send("mb", b"x" * 100, partition=0).get(10)  # far below min_bytes
        s.settimeout(1.5)
        with pytest.raises(TimeoutError):
            s.recv(1)  # still parked: 100 bytes are not 4000
        s.settimeout(30)
        with Producer(socket=kbroker.socket, linger_ms=0) as p:
            p.send("mb", b"y" * 5000, partition=0).get(10)  # now past min_bytes
        corr, part = answer(s)  # long before the 30 s wait runs out (the timeout is 30 s)
    assert corr == 7 and part.high_watermark == 2  # type: ignore[attr-defined]
    assert len(batch_sizes(part.records)) == 2  # type: ignore[attr-defined]


def test_max_bytes_bound_an_answer_but_one_whole_batch_always_comes(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "xb")
    with Producer(socket=kbroker.socket, linger_ms=0) as p:
        for i in range(20):
            p.send("xb", bytes([i]) * 1000, partition=0).get(10)  # 20 batches of about 1.1 KB
    with connect(kbroker) as s:
        def fetch(corr: int, max_bytes: int, partition_max_bytes: int) -> list[int]:
            s.sendall(raw_request(1, 12, corr, fetch_request(
                "xb", 0, max_wait_ms=0, min_bytes=1, max_bytes=max_bytes,
                partition_max_bytes=partition_max_bytes)))
            got, part = answer(s)
            assert got == corr
            return batch_sizes(part.records)  # type: ignore[attr-defined]

        everything = fetch(1, 1 << 20, 1 << 20)
        assert len(everything) == 20
        one = everything[0]
        for corr, (mb, pmb) in enumerate([(3 * one + 10, 1 << 20), (1 << 20, 3 * one + 10)], 2):
            sizes = fetch(corr, mb, pmb)
            assert 1 <= len(sizes) <= 3 and sum(sizes) <= min(mb, pmb), (mb, pmb, sizes)
        # A limit below one batch: that batch still comes, alone (or the client could never
        # make progress), as in Kafka.
        assert fetch(9, 1, 1 << 20) == [one]
        assert fetch(10, 1 << 20, 1) == [one]
