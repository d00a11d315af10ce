"""A bad topic setting through Kafka's admin APIs is refused with a message naming the setting
as the client sent it (`retention.ms`), not edgebus's field (`retention_ms`, which a Kafka user
never wrote): CreateTopics, IncrementalAlterConfigs and AlterConfigs, real clients."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KNewTopic
from kafka.errors import InvalidConfigurationError

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration
INVALID_CONFIG = 40


def _error(fut: object) -> tuple[int, str]:
    with pytest.raises(KafkaException) as e:
        fut.result(10)  # type: ignore[attr-defined]
    err = e.value.args[0]
    return err.code(), err.str()


def test_messages_name_kafka_settings(kbroker: EmbeddedBroker) -> None:
    a = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    code, msg = _error(a.create_topics([NewTopic("cfg-a", 1, 1, config={"retention.ms": "abc"})])["cfg-a"])
    assert (code, msg) == (INVALID_CONFIG, "topic config retention.ms: 'abc' is not an integer")
    create_topic(kbroker, "cfg-b")
    res = ConfigResource(ResourceType.TOPIC, "cfg-b", incremental_configs=[
        ConfigEntry("segment.bytes", "10", incremental_operation=AlterConfigOpType.SET)])
    code, msg = _error(a.incremental_alter_configs([res])[res])
    assert code == INVALID_CONFIG
    assert msg.startswith("topic config segment.bytes: 10 is outside ["), msg
    res = ConfigResource(ResourceType.TOPIC, "cfg-b", set_config={"cleanup.policy": "shred"})
    code, msg = _error(a.alter_configs([res])[res])
    assert (code, msg) == (INVALID_CONFIG, "topic config cleanup.policy: 'shred' is not one of "
                                           "delete, compact, compact,delete")
    ka = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        with pytest.raises(InvalidConfigurationError, match=r"topic config max\.message\.bytes: -5 is outside"):
            ka.create_topics([KNewTopic("cfg-c", 1, 1, topic_configs={"max.message.bytes": "-5"})])
    finally:
        ka.close()
