"""OffsetFetch's require_stable (KIP-447), which read_committed consumers set: a partition whose
offset an open transaction will commit answers UNSTABLE_OFFSET_COMMIT, so that a consumer
taking the partition over waits for that transaction instead of starting from the offset
before it and processing the transaction's input a second time (an exactly-once app, Quix's
included, across a rebalance). The listener answered the old offset. Real clients: a
confluent-kafka transactional producer with send_offsets_to_transaction, kafka-python and
confluent-kafka consumers of each isolation level."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka import Producer as CKProducer
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration
GROUP = "unstable-g"


def _ck_committed(b: EmbeddedBroker, isolation: str) -> int:
    c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": GROUP,
                    "isolation.level": isolation})
    try:
        return c.committed([TopicPartition("unstable", 0)], 4)[0].offset
    finally:
        c.close()


def test_offsets_of_an_open_transaction_are_unstable(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "unstable")
    meta_source = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": GROUP})
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "unstable-tx"})
    p.init_transactions(10)
    p.begin_transaction()
    p.produce("unstable", b"out", partition=0)
    p.send_offsets_to_transaction([TopicPartition("unstable", 0, 5)],
                                  meta_source.consumer_group_metadata(), 10)
    meta_source.close()
    # read_uncommitted sees what is committed now: nothing; read_committed is told to wait.
    assert _ck_committed(kbroker, "read_uncommitted") < 0
    with pytest.raises(KafkaException):  # librdkafka retries UNSTABLE_OFFSET_COMMIT until then
        _ck_committed(kbroker, "read_committed")
    kc = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, group_id=GROUP,
                       isolation_level="read_committed", request_timeout_ms=5000)
    p.commit_transaction(10)
    try:
        assert kc.committed(KTP("unstable", 0)) == 5
    finally:
        kc.close()
    assert _ck_committed(kbroker, "read_committed") == 5
