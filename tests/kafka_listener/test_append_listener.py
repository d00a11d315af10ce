"""A Kafka connection leaves the native fast paths as they were once it has no fetch parked:
the Kafka fetches' append listener (kafka/fetch.py KafkaFetches) is on DataHandlers only while a
Kafka fetch waits. Registered for good at the first Kafka connection, it sent every append of
every partition back to Python (shm_park's py_after) and turned off the standing answers written
in C, which doubled the supervisor's CPU per message of `python -m bench`'s paced rows, run on a
supervisor that had served the kafka-edgebus rows (fullgap26)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kio.index import load_payload_module
from kio.static.constants import EntityType

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.server.kafka.codec import response_module
from edgebus.shm import unavailable_reason
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame
from tests.kafka_listener.test_parked import fetch_request

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]
FETCH, API_VERSIONS = 1, 18
N = 300


def _standing_answers(broker: EmbeddedBroker) -> int:
    with Admin(socket=broker.socket, transport="socket") as a:
        return int(a.status()["shm_plane"]["standing_answers"])


def _paced_shm(broker: EmbeddedBroker, topic: str) -> int:
    """N one-record sends over shm, each acknowledged before the next, to a consumer long-polling
    the topic over shm: the standing answers the supervisor wrote meanwhile."""
    create_topic(broker, topic)
    c = Consumer(socket=broker.socket, transport="shm", auto_offset_reset="earliest",
                 fetch_max_wait_ms=100, max_poll_records=1_000_000)
    c.assign([TopicPartition(topic, 0)])
    got: list[bytes] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set() and len(got) < N:
            for recs in c.poll(200).values():
                got.extend(r.value for r in recs)

    t = threading.Thread(target=consume)
    before = _standing_answers(broker)
    t.start()
    try:
        with Producer(socket=broker.socket, transport="shm", linger_ms=0) as p:
            for i in range(N):
                p.send(topic, b"r%d" % i, partition=0).get(10)
                time.sleep(0.001)
        deadline = time.monotonic() + 20
        while len(got) < N and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(10)
        c.close()
    assert len(got) == N
    return _standing_answers(broker) - before


def test_native_standing_answers_after_a_kafka_fetch_was_parked_and_answered(
        kbroker: EmbeddedBroker) -> None:
    assert _paced_shm(kbroker, "fresh") > N // 4  # the control: C writes most answers
    create_topic(kbroker, "kafka-side")
    with connect(kbroker) as s:
        api_versions = load_payload_module(API_VERSIONS, 3, EntityType.request).ApiVersionsRequest(
            client_software_name="t", client_software_version="1")
        s.sendall(raw_request(API_VERSIONS, 3, 1, api_versions))
        assert read_frame(s)
        s.sendall(raw_request(FETCH, 12, 2, fetch_request("kafka-side", 0, 60_000)))
        time.sleep(0.3)  # parked
        with Producer(socket=kbroker.socket) as p:
            p.send("kafka-side", b"wake", partition=0).get(10)  # answers it (the listener)
        corr, resp = parse_response(read_frame(s), response_module(FETCH, 12).FetchResponse, True)
        assert corr == 2 and resp.responses[0].partitions[0].high_watermark == 1
        # The Kafka connection stays open, with no fetch parked: the native path is as before.
        assert _paced_shm(kbroker, "after-kafka") > N // 4


def _park_status(broker: EmbeddedBroker) -> dict[str, Any]:
    with Admin(socket=broker.socket, transport="socket") as a:
        return a.status()  # type: ignore[no-any-return]


def _kafka_parked(broker: EmbeddedBroker) -> int:
    return sum(c["parked_fetches"] for ln in _park_status(broker)["kafka"]["listeners"]
               for c in ln["connections"])


def test_a_parked_kafka_consumer_leaves_other_topics_in_c_and_still_gets_its_own(
        kbroker: EmbeddedBroker) -> None:
    """A live Kafka consumer (confluent-kafka) nearly always has a fetch parked. The listener
    is per partition: native traffic on another topic keeps its standing answers and parked
    appends in C (before: every append went back to Python, and no standing answer was written
    in C), while appends to the Kafka consumer's own partition, over shm, wake it at once (its
    fetch waits 20 s: only the append listener answers it sooner)."""
    ck = pytest.importorskip("confluent_kafka")
    create_topic(kbroker, "kside")
    c = ck.Consumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "unused",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 20_000,
                     "socket.timeout.ms": 60_000})
    c.assign([ck.TopicPartition("kside", 0, 0)])
    got: list[bytes] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())

    t = threading.Thread(target=consume)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while _kafka_parked(kbroker) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _kafka_parked(kbroker) > 0, "the Kafka consumer's fetch never parked"
        after0 = _park_status(kbroker)["shm_plane"]["park"]["to_python"]["after_append"]
        assert _paced_shm(kbroker, "native") > N // 4  # before: 0 (the listener on for all)
        after1 = _park_status(kbroker)["shm_plane"]["park"]["to_python"]["after_append"]
        assert after1 - after0 < N // 10, "native appends went back to Python for the listener"
        assert _kafka_parked(kbroker) > 0, "the Kafka fetch did not stay parked meanwhile"
        with Producer(socket=kbroker.socket, transport="shm", linger_ms=0) as p:
            for i in range(20):
                p.send("kside", b"k%d" % i, partition=0).get(10)
                deadline = time.monotonic() + 10  # (half the fetch's wait)
                while len(got) <= i and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert len(got) == i + 1, f"record {i} not delivered before the fetch's wait"
        assert got == [b"k%d" % i for i in range(20)]
    finally:
        stop.set()
        t.join(10)
        c.close()
