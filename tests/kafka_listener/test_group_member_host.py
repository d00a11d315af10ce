"""A Kafka group member's client host, as Kafka's DescribeGroups gives it ("/127.0.0.1"), seen by
librdkafka's admin client and kafka-python's, with a real librdkafka consumer in the group."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer as KConsumer
from confluent_kafka.admin import AdminClient
from kafka.admin import KafkaAdminClient

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

WAIT_S = 60  # upper bound on waiting for the member to join (never a speed assertion)


def test_describe_groups_names_the_members_host(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "hosted")
    c = KConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "hosted-g",
                   "auto.offset.reset": "earliest", "client.id": "host-probe"})
    try:
        c.subscribe(["hosted"])
        deadline = time.monotonic() + WAIT_S
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.1)
        assert c.assignment(), "the consumer never got its partition"
        ac = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
        desc = ac.describe_consumer_groups(["hosted-g"])["hosted-g"].result(15)
        assert [(m.client_id, m.host) for m in desc.members] == [("host-probe", "/127.0.0.1")]
        kp: Any = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
        try:
            group = kp.describe_groups(["hosted-g"])["hosted-g"]
            assert [(m["client_id"], m["client_host"]) for m in group["members"]] == [
                ("host-probe", "/127.0.0.1")]
        finally:
            kp.close()
    finally:
        c.close()
