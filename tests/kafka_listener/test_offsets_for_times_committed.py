"""offsets_for_times under read_committed, as Kafka answers it: an offset at or past the last
stable offset (inside a transaction still open) is not found (None / -1) for a read_committed
consumer, and is for a read_uncommitted one; once committed, both find it. Real clients: a
confluent-kafka transactional producer, kafka-python consumers of each isolation level."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer as CKProducer
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration


def _lookup(b: EmbeddedBroker, isolation: str, spec: int) -> int | None:
    c = KafkaConsumer(bootstrap_servers=b.kafka_bootstrap, isolation_level=isolation)
    try:
        found = c.offsets_for_times({KTP("oft", 0): spec})[KTP("oft", 0)]
    finally:
        c.close()
    return None if found is None else found.offset


def test_open_transaction_is_not_found_read_committed(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "oft")
    since = int(time.time() * 1000) - 60_000
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "oft-tx"})
    p.init_transactions(10)
    p.begin_transaction()
    p.produce("oft", b"open", partition=0)
    p.flush(10)  # written, the transaction still open
    assert _lookup(kbroker, "read_uncommitted", since) == 0
    assert _lookup(kbroker, "read_committed", since) is None
    p.commit_transaction(10)
    assert _lookup(kbroker, "read_committed", since) == 0
