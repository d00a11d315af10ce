"""A Kafka connection whose Fetch is parked (long poll) is still read (listeners/stream.py
update_interest): a client that goes away meanwhile is closed at once, its parked fetch with it,
not at the fetch's deadline; and requests sent behind the parked fetch are answered after it, in
order."""

from __future__ import annotations

import time

import pytest
from kio.index import load_payload_module
from kio.static.constants import EntityType

from edgebus import Admin, Producer
from edgebus.server.kafka.codec import build, response_module
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame

pytestmark = pytest.mark.integration
FETCH, API_VERSIONS = 1, 18


def fetch_request(topic: str, offset: int, wait_ms: int) -> object:
    mod = load_payload_module(FETCH, 12, EntityType.request)
    return build(mod.FetchRequest, replica_id=-1, max_wait=wait_ms, min_bytes=1, max_bytes=1 << 20,
                 isolation_level=0, session_id=0, session_epoch=-1,
                 topics=(build(mod.FetchTopic, topic=topic, partitions=(
                     build(mod.FetchPartition, partition=0, fetch_offset=offset,
                           partition_max_bytes=1 << 20, log_start_offset=-1,
                           current_leader_epoch=-1),)),),
                 forgotten_topics_data=(), rack_id="")


def kafka_connections(broker: EmbeddedBroker) -> list[dict[str, object]]:
    with Admin(socket=broker.socket) as a:
        (listener,) = a.status()["kafka"]["listeners"]
    return list(listener["connections"])


def test_a_client_gone_while_its_fetch_is_parked_is_closed_at_once(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "parked-gone")
    s = connect(kbroker)
    s.sendall(raw_request(FETCH, 12, 1, fetch_request("parked-gone", 0, 60_000), client_id="gone"))
    deadline = time.monotonic() + 30
    while not any(c["parked_fetches"] for c in kafka_connections(kbroker)):
        assert time.monotonic() < deadline, "the fetch was not parked"
        time.sleep(0.05)
    s.close()
    # Its fetch waits 60 s: the connection must go long before (read while awaiting: EOF).
    while kafka_connections(kbroker):
        assert time.monotonic() < deadline, "the closed client's connection is still there"
        time.sleep(0.05)


def test_requests_behind_a_parked_fetch_are_answered_after_it_in_order(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "parked-order")
    api_versions = load_payload_module(API_VERSIONS, 3, EntityType.request).ApiVersionsRequest(
        client_software_name="t", client_software_version="1")
    with connect(kbroker) as s:
        s.sendall(raw_request(FETCH, 12, 1, fetch_request("parked-order", 0, 60_000)))
        s.sendall(raw_request(API_VERSIONS, 3, 2, api_versions))
        time.sleep(0.3)  # both read by the supervisor, the second held behind the first
        with Producer(socket=kbroker.socket) as p:
            p.send("parked-order", b"wake", partition=0).get(10)
        corr, resp = parse_response(read_frame(s), response_module(FETCH, 12).FetchResponse, True)
        assert corr == 1 and resp.responses[0].partitions[0].high_watermark == 1
        corr, _ = parse_response(read_frame(s), response_module(API_VERSIONS, 3).ApiVersionsResponse,
                                 False)
        assert corr == 2
