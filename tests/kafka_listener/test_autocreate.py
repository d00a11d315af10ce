"""Topic auto-creation (`kafka.auto_create_topics`, docs/KAFKA.md): real producers (confluent-kafka,
kcat -P, kafka-python) writing to a topic nobody created, as they do against a stock Kafka broker;
the request's own `allow_auto_topic_creation`, the setting switched off, and access control
refusing the creation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from kafka import KafkaProducer
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.metadata.v12.response import MetadataResponse

from edgebus import Admin, Consumer, TopicPartition
from edgebus.server.kafka import sasl
from edgebus.testing import EmbeddedBroker, wait_for
from tests.kafka_listener.conftest import connect, parse_response, raw_request, read_frame

pytestmark = pytest.mark.integration

UNKNOWN_TOPIC, INVALID_TOPIC, TOPIC_DENIED = 3, 17, 29


def topics(broker: EmbeddedBroker) -> list[str]:
    with Admin(socket=broker.socket) as a:
        return sorted(a.list_topics())


def native_values(broker: EmbeddedBroker, topic: str, n: int) -> list[bytes]:
    with Consumer(socket=broker.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition(topic, 0)])
        got: list[bytes] = []
        while len(got) < n:
            for recs in c.poll(2000).values():
                got.extend(r.value for r in recs if r.value is not None)
    return got


def metadata(broker: EmbeddedBroker, *names: str, allow: bool) -> dict[str, int]:
    """topic -> error code of a Metadata v12 request naming `names`."""
    req = MetadataRequest(topics=tuple(MetadataRequestTopic(name=n, topic_id=None) for n in names),
                          allow_auto_topic_creation=allow,
                          include_topic_authorized_operations=False)
    with connect(broker) as s:
        s.sendall(raw_request(3, 12, 5, req))
        _, resp = parse_response(read_frame(s), MetadataResponse, flexible_header=True)
    return {t.name: int(t.error_code) for t in resp.topics}


def test_confluent_producer_creates_the_topic(kbroker: EmbeddedBroker) -> None:
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "linger.ms": 0})
    errors: list[Any] = []
    for i in range(3):
        p.produce("auto-ck", b"v%d" % i, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert errors == [None, None, None]
    with Admin(socket=kbroker.socket) as a:
        assert len(a.describe_topic("auto-ck").partitions) == 1  # topic_defaults.partitions
    assert native_values(kbroker, "auto-ck", 3) == [b"v0", b"v1", b"v2"]


def test_a_consumer_does_not_create_unless_it_allows_it(kbroker: EmbeddedBroker) -> None:
    # librdkafka's consumer asks with allow_auto_topic_creation=false (its default), as Kafka's.
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "auto-g"})
    try:
        md = c.list_topics("auto-never", timeout=15)
        assert md.topics["auto-never"].error.code() == UNKNOWN_TOPIC
    finally:
        c.close()
    assert metadata(kbroker, "auto-raw-no", allow=False) == {"auto-raw-no": UNKNOWN_TOPIC}
    assert topics(kbroker) == []
    # Allowed: created and answered with its partitions at once; a name that is not a valid
    # topic name: INVALID_TOPIC_EXCEPTION, as Kafka answers; internal names are not created.
    assert metadata(kbroker, "auto-raw", "bad name", "__mine", allow=True) == {
        "auto-raw": 0, "bad name": INVALID_TOPIC, "__mine": INVALID_TOPIC}
    assert topics(kbroker) == ["auto-raw"]


@pytest.mark.skipif(shutil.which("kcat") is None,
                    reason="kcat is not installed (./scripts/quickstart setup test installs it as root)")
def test_kcat_produces_to_a_new_topic(kbroker: EmbeddedBroker) -> None:
    r = subprocess.run(["kcat", "-b", kbroker.kafka_bootstrap, "-P", "-t", "auto-kcat"],
                       input="a\nb\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "failed" not in r.stderr, r.stderr
    r = subprocess.run(["kcat", "-b", kbroker.kafka_bootstrap, "-C", "-t", "auto-kcat", "-o",
                        "beginning", "-e", "-f", "%s@%o\\n"], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.splitlines() == ["a@0", "b@1"], r.stderr


def test_kafka_python_producer_gets_the_default_partitions(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    b = make_broker({"topic_defaults": {"partitions": 3, "retention_ms": 3_600_000}}).start()
    kp = KafkaProducer(bootstrap_servers=b.kafka_bootstrap)
    try:
        md = [kp.send("auto-kp", b"x", partition=i).get(30) for i in range(3)]
    finally:
        kp.close()
    assert [(m.partition, m.offset) for m in md] == [(0, 0), (1, 0), (2, 0)]
    with Admin(socket=b.socket) as a:
        t = a.describe_topic("auto-kp")
    cfg = {c.name: c.value for c in t.configs}
    assert len(t.partitions) == 3 and cfg["retention_ms"] == "3600000"


def test_switched_off_nothing_is_created(make_broker: Callable[..., EmbeddedBroker]) -> None:
    b = make_broker({"kafka": {"auto_create_topics": False}}).start()
    assert metadata(b, "auto-off", allow=True) == {"auto-off": UNKNOWN_TOPIC}
    p = CKProducer({"bootstrap.servers": b.kafka_bootstrap, "message.timeout.ms": 3000})
    errors: list[Any] = []
    p.produce("auto-off", b"lost", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert topics(b) == []


@pytest.fixture
def sasl_broker(tmp_path: Path, make_broker: Callable[..., EmbeddedBroker]) -> Iterator[EmbeddedBroker]:
    creds = tmp_path / "users.yaml"
    sasl.add_user(creds, "alice", "wonderland")
    yield make_broker({
        "kafka": {"sasl_mechanisms": ["PLAIN"], "sasl_credentials_file": str(creds)},
        "acl": {"rules": ["allow sasl:alice read,write,create topic:auto-*",
                          "allow sasl:alice read,write topic:fixed-*"]}}).start()


def test_creating_needs_the_create_permission(sasl_broker: EmbeddedBroker) -> None:
    p = CKProducer({"bootstrap.servers": sasl_broker.kafka_bootstrap,
                    "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                    "sasl.username": "alice", "sasl.password": "wonderland", "linger.ms": 0,
                    "message.timeout.ms": 20000})
    result: dict[str, Any] = {}
    for topic in ("auto-mine", "fixed-notmine", "other"):
        p.produce(topic, b"v", on_delivery=lambda err, msg: result.__setitem__(msg.topic(), err))
    assert p.flush(60) == 0
    assert result["auto-mine"] is None
    # May write (so describe) but not create: Kafka's TOPIC_AUTHORIZATION_FAILED. May not even
    # describe: the same answer (from the Metadata guard). Neither topic is created.
    assert result["fixed-notmine"].code() == TOPIC_DENIED, result
    assert result["other"].code() == TOPIC_DENIED, result
    assert topics(sasl_broker) == ["auto-mine"]
    with Admin(socket=sasl_broker.socket) as a:
        denied = {(d["principal"], d["operation"]) for d in a.status()["acl"]["denied"]}
    assert ("sasl:alice", "create") in denied and ("sasl:alice", "describe") in denied


def test_the_setting_changes_on_a_reload(make_broker: Callable[..., EmbeddedBroker]) -> None:
    # kafka.auto_create_topics is applied by a SIGHUP reload (the rest of kafka.* waits for a
    # restart, and the reload says so), from the next Metadata request on.
    b = make_broker().start()
    assert metadata(b, "auto-reload-1", allow=True) == {"auto-reload-1": 0}  # context made

    def reload(**kafka: Any) -> None:
        cfg = yaml.safe_load(b.config_path.read_text())
        cfg.setdefault("kafka", {}).update(kafka)
        b.config_path.write_text(yaml.safe_dump(cfg))
        n = b.log().count("reloaded ")
        assert b.pid is not None
        os.kill(b.pid, signal.SIGHUP)
        wait_for(lambda: b.log().count("reloaded ") > n, 30, "the reload")

    reload(auto_create_topics=False)
    assert "kafka.auto_create_topics is off" in b.log()
    assert "only a restart applies" not in b.log()
    assert metadata(b, "auto-reload-2", allow=True) == {"auto-reload-2": UNKNOWN_TOPIC}
    reload(auto_create_topics=True, advertised="127.0.0.1:1")
    assert "kafka.advertised (null -> 127.0.0.1:1) changed in" in b.log()  # at the next restart
    assert metadata(b, "auto-reload-3", allow=True) == {"auto-reload-3": 0}
    assert topics(b) == ["auto-reload-1", "auto-reload-3"]
