"""The Kafka listener's skeleton: ApiVersions and Metadata against real Kafka clients, the
ApiVersions v0 answer to a version it does not know, and the listener's configuration rules."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsV0
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.api_versions.v3.response import ApiVersionsResponse as ApiVersionsV3

from edgebus import Admin
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame

pytestmark = pytest.mark.integration


def test_confluent_admin_lists_topics_and_partitions(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "orders", partitions=3)
    create_topic(kbroker, "events")
    md = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap}).list_topics(timeout=15)
    host, port = kbroker.kafka_bootstrap.rsplit(":", 1)
    assert [(b.id, b.host, b.port) for b in md.brokers.values()] == [(0, host, int(port))]
    assert md.cluster_id == "edgebus"
    # Internal topics (__consumer_offsets) are not listed.
    assert {t: sorted(m.partitions) for t, m in md.topics.items()} == {"orders": [0, 1, 2], "events": [0]}
    assert all(p.leader == 0 and p.replicas == [0] and p.isrs == [0]
               for p in md.topics["orders"].partitions.values())
    # A topic asked for by name that does not exist: UNKNOWN_TOPIC_OR_PARTITION (a client that
    # allows auto-creation, librdkafka's default for producers and admin clients, creates it:
    # tests/kafka_listener/test_autocreate.py).
    missing = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap,
                           "allow.auto.create.topics": False}).list_topics("nope", timeout=15)
    assert missing.topics["nope"].error is not None
    assert missing.topics["nope"].error.code() == 3


def test_kafka_python_sees_topics(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=2)
    c = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        assert c.topics() == {"t"}
        assert c.partitions_for_topic("t") == {0, 1}
    finally:
        c.close()


def test_api_versions_advertises_the_registry(kbroker: EmbeddedBroker) -> None:
    from edgebus.server.kafka.apis import collect

    with connect(kbroker) as s:
        s.sendall(raw_request(18, 3, 7, ApiVersionsRequest(client_software_name="t",
                                                           client_software_version="1")))
        corr, resp = parse_response(read_frame(s), ApiVersionsV3, flexible_header=False)
    assert corr == 7 and resp.error_code == 0
    advertised = {(k.api_key, k.min_version, k.max_version) for k in resp.api_keys}
    assert advertised == {(a.api_key, a.min_version, a.max_version) for a in collect().values()}
    assert {18, 3} <= {k for k, _, _ in advertised}


def test_api_versions_newer_than_known_gets_the_v0_answer(kbroker: EmbeddedBroker) -> None:
    """A client whose ApiVersions is newer than the broker's gets UNSUPPORTED_VERSION in a v0
    body with the supported ranges (and retries with the highest); the connection stays open."""
    with connect(kbroker) as s:
        s.sendall(raw_request(18, 99, 5, ApiVersionsRequest(client_software_name="t",
                                                            client_software_version="1"),
                              flexible=True))
        corr, resp = parse_response(read_frame(s), ApiVersionsV0, flexible_header=False)
        assert corr == 5 and resp.error_code == 35
        assert any(k.api_key == 18 for k in resp.api_keys)
        # Still open: a valid request is answered.
        s.sendall(raw_request(18, 3, 6, ApiVersionsRequest(client_software_name="t",
                                                           client_software_version="1")))
        corr, resp = parse_response(read_frame(s), ApiVersionsV3, flexible_header=False)
        assert corr == 6 and resp.error_code == 0


def test_status_shows_the_listener_and_its_connections(kbroker: EmbeddedBroker) -> None:
    with connect(kbroker) as s:
        s.sendall(raw_request(18, 3, 1, ApiVersionsRequest(client_software_name="t",
                                                           client_software_version="1"),
                              client_id="status-test"))
        assert read_frame(s)
        with Admin(socket=kbroker.socket) as a:
            st = a.status()
        (listener,) = st["kafka"]["listeners"]
        assert listener["listen"] == kbroker.kafka_bootstrap and listener["tls"] is False
        (conn,) = listener["connections"]
        assert conn["client_id"] == "status-test" and conn["requests"] == 1
        out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "status", "--socket",
                              kbroker.socket], capture_output=True, text=True, timeout=30)
        assert "kafka:" in out.stdout and kbroker.kafka_bootstrap in out.stdout, out.stdout
        assert "status-test" in out.stdout, out.stdout


def test_disabled_listener_serves_nothing(make_broker: Callable[..., EmbeddedBroker]) -> None:
    b = make_broker({"kafka": {"enabled": False}}).start()
    with Admin(socket=b.socket) as a:
        assert a.status()["kafka"] is None


def test_port_in_use_is_refused_naming_the_setting(make_broker: Callable[..., EmbeddedBroker]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        b = make_broker({"kafka": {"listeners": [f"127.0.0.1:{port}"]}})
        with pytest.raises(RuntimeError) as e:
            b.start(timeout=30)
    assert f"kafka.listeners: 127.0.0.1:{port} is already in use" in str(e.value)


def test_non_loopback_without_tls_or_sasl_is_refused(make_broker: Callable[..., EmbeddedBroker]) -> None:
    b = make_broker({"kafka": {"listeners": ["0.0.0.0:0"]}})
    with pytest.raises(RuntimeError) as e:
        b.start(timeout=30)
    assert "kafka.listeners: 0.0.0.0:0 is not a loopback address" in str(e.value)
