"""Kafka's admin APIs through real admin clients: confluent-kafka's AdminClient (librdkafka) and
kafka-python's KafkaAdminClient, checked against what the native Admin sees of the same log."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import NewPartitions as KNewPartitions
from kafka.admin import NewTopic as KNewTopic
from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

from edgebus import Admin, Consumer, Producer
from edgebus import TopicPartition as EbTopicPartition
from edgebus.errors import OffsetOutOfRangeError
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


def _error_code(future) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception) as ei:
        future.result(15)
    err = ei.value.args[0]
    assert isinstance(err, KafkaError), ei.value
    return int(err.code())


def test_confluent_admin_topics_configs_partitions(kbroker: EmbeddedBroker) -> None:
    ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    fs = ac.create_topics([NewTopic("orders", num_partitions=2, replication_factor=1,
                                    config={"retention.ms": "3600000", "segment.bytes": "1048576"})])
    assert fs["orders"].result(15) is None
    assert _error_code(ac.create_topics([NewTopic("orders", 1)])["orders"]) == 36  # TOPIC_ALREADY_EXISTS
    assert _error_code(ac.create_topics([NewTopic("rf3", 1, replication_factor=3)])["rf3"]) == 38
    assert _error_code(ac.create_topics(
        [NewTopic("zipped", 1, config={"compression.type": "gzip"})])["zipped"]) == 40  # INVALID_CONFIG
    assert _error_code(ac.create_topics(
        [NewTopic("odd", 1, config={"cleanup.policy": "archive"})])["odd"]) == 40
    assert _error_code(ac.create_topics([NewTopic("__mine", 1)])["__mine"]) == 17  # INVALID_TOPIC
    assert _error_code(ac.create_topics([NewTopic("huge", 5000)])["huge"]) == 37  # INVALID_PARTITIONS
    with Admin(socket=kbroker.socket) as a:
        assert sorted(a.list_topics()) == ["orders"], "refused topics were not created"
        cfg = {c.name: c.value for c in a.describe_topic("orders").configs}
    assert (cfg["partitions"], cfg["retention_ms"], cfg["segment_bytes"]) == ("2", "3600000", "1048576")

    res = ConfigResource("topic", "orders")
    described = ac.describe_configs([res])[res].result(15)
    assert described["retention.ms"].value == "3600000"
    assert described["cleanup.policy"].value == "delete" and not described["cleanup.policy"].is_read_only
    assert described["min.insync.replicas"].value == "1" and described["min.insync.replicas"].is_read_only
    assert described["max.message.bytes"].value == "1048576"

    alter = ConfigResource("topic", "orders", incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    assert ac.incremental_alter_configs([alter])[alter].result(15) is None
    bad = ConfigResource("topic", "orders", incremental_configs=[
        ConfigEntry("min.insync.replicas", "2", incremental_operation=AlterConfigOpType.SET)])
    assert _error_code(ac.incremental_alter_configs([bad])[bad]) == 40  # INVALID_CONFIG
    # cleanup.policy is a list: APPEND compact to delete gives both (edgebus: "compact,delete").
    both = ConfigResource("topic", "orders", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    assert ac.incremental_alter_configs([both])[both].result(15) is None
    unknown = ConfigResource("topic", "orders", incremental_configs=[
        ConfigEntry("flush.messages", "1", incremental_operation=AlterConfigOpType.SET)])
    assert _error_code(ac.incremental_alter_configs([unknown])[unknown]) == 40
    with Admin(socket=kbroker.socket) as a:
        cfg = {c.name: c.value for c in a.describe_topic("orders").configs}
    assert cfg["retention_ms"] == "60000"
    assert cfg["cleanup_policy"] == "compact,delete"
    assert cfg["segment_bytes"] == str(64 * 1024 * 1024), "DELETE resets to the default"

    assert ac.create_partitions([NewPartitions("orders", 5)])["orders"].result(15) is None
    assert _error_code(ac.create_partitions([NewPartitions("orders", 3)])["orders"]) == 37
    with Admin(socket=kbroker.socket) as a:
        assert len(a.describe_topic("orders").partitions) == 5

    assert ac.delete_topics(["orders"])["orders"].result(15) is None
    assert _error_code(ac.delete_topics(["orders"])["orders"]) == 3  # UNKNOWN_TOPIC_OR_PARTITION
    with Admin(socket=kbroker.socket) as a:
        assert a.list_topics() == []


def test_delete_records_is_durable_and_fences_reads(kbroker: EmbeddedBroker) -> None:
    ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    ac.create_topics([NewTopic("t", 2)])["t"].result(15)
    with Producer(socket=kbroker.socket) as p:
        for i in range(10):
            p.send("t", b"v%d" % i, partition=0)
        p.flush()
    done = ac.delete_records([TopicPartition("t", 0, 6)])
    (only,) = done.values()
    assert only.result(15).low_watermark == 6
    with pytest.raises(Exception) as ei:  # past the log end: OFFSET_OUT_OF_RANGE
        next(iter(ac.delete_records([TopicPartition("t", 0, 11)]).values())).result(15)
    assert ei.value.args[0].code() == 1
    kbroker.restart()  # the new log start is on disk, not only in memory
    with Admin(socket=kbroker.socket) as a:
        parts = a.describe_topic("t").partitions
        assert (parts[0].log_start_offset, parts[0].log_end_offset) == (6, 10)
    with Consumer(socket=kbroker.socket, auto_offset_reset="none") as c:
        c.assign([EbTopicPartition("t", 0)])
        c.seek(EbTopicPartition("t", 0), 3)
        with pytest.raises(OffsetOutOfRangeError):
            c.poll(2000)
        c.seek(EbTopicPartition("t", 0), 6)
        got = [r.value for recs in c.poll(5000).values() for r in recs]
    assert got == [b"v6", b"v7", b"v8", b"v9"]


def test_kafka_python_admin(kbroker: EmbeddedBroker) -> None:
    ka = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        ka.create_topics([KNewTopic("k", 2, 1, topic_configs={"retention.bytes": "100000"})])
        with pytest.raises(TopicAlreadyExistsError):
            ka.create_topics([KNewTopic("k", 2, 1)])
        with pytest.raises(InvalidReplicationFactorError):
            ka.create_topics([KNewTopic("k2", 1, 2)])
        assert "k" in ka.list_topics()
        got = ka.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "k")])
        assert got["topic"]["k"]["retention.bytes"]["value"] == "100000"
        ka.alter_configs([KConfigResource(ConfigResourceType.TOPIC, "k",
                                          configs={"retention.bytes": "200000"})])
        ka.create_partitions({"k": KNewPartitions(4)})
        with Admin(socket=kbroker.socket) as a:
            t = a.describe_topic("k")
            cfg = {c.name: c.value for c in t.configs}
        assert cfg["retention_bytes"] == "200000" and len(t.partitions) == 4
        ka.delete_topics(["k"])
        with Admin(socket=kbroker.socket) as a:
            assert "k" not in a.list_topics()
    finally:
        ka.close()
