"""ListOffsets' MAX_TIMESTAMP (-3, KIP-734) through confluent-kafka's admin client, which sends
it at ListOffsets v6 (the listener advertises no later one) and got INVALID_REQUEST. By
edgebus's time (append time, batch granularity, docs/KAFKA.md): the first offset of the last
batch, with its append time."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from edgebus import Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration


def _confluent(b: EmbeddedBroker, topic: str, spec: OffsetSpec) -> tuple[int, int]:
    a = AdminClient({"bootstrap.servers": b.kafka_bootstrap})
    tp = TopicPartition(topic, 0)
    info = a.list_offsets({tp: spec}, request_timeout=10)[tp].result(10)
    return info.offset, info.timestamp


def test_max_timestamp(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "maxts")
    assert _confluent(kbroker, "maxts", OffsetSpec.max_timestamp()) == (-1, -1)  # empty
    with Producer(socket=kbroker.socket) as p:
        for batch in ([b"a", b"b", b"c"], [b"d", b"e"]):
            for v in batch:
                p.send("maxts", v, partition=0)
            p.flush()
            time.sleep(0.01)  # the two batches get different append times (ms)
    offset, ts = _confluent(kbroker, "maxts", OffsetSpec.max_timestamp())
    assert offset == 3  # the first record of the last batch
    # Its time is the append time the timestamp search finds for that batch.
    assert (offset, ts) == _confluent(kbroker, "maxts", OffsetSpec.for_timestamp(ts))
    assert _confluent(kbroker, "maxts", OffsetSpec.for_timestamp(ts - 1000))[0] == 0
