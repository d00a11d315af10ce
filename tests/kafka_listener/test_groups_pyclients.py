"""Consumer groups through the pure-Python Kafka clients: kafka-python and aiokafka subscribe,
consume, commit and seek, and their commits are the group's offsets for every other client."""

from __future__ import annotations

import asyncio
import time

import pytest
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.admin import KafkaAdminClient

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

WAIT_S = 60


def produce(broker: EmbeddedBroker, topic: str, n: int, partitions: int = 1) -> None:
    with Producer(socket=broker.socket) as p:
        for i in range(n):
            p.send(topic, b"v%d" % i, key=b"k%d" % i, partition=i % partitions)
        p.flush()


def group_offsets(broker: EmbeddedBroker, group: str) -> dict[int, int]:
    with Admin(socket=broker.socket) as a:
        return {tp.partition: o.offset for tp, o in a.list_group_offsets(group).items()}


def test_kafka_python_group_consume_commit_seek(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=2)
    produce(kbroker, "t", 10, partitions=2)
    c = KafkaConsumer("t", bootstrap_servers=kbroker.kafka_bootstrap, group_id="kp",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=WAIT_S * 1000)
    try:
        got = []
        for m in c:
            got.append((m.partition, m.offset, m.key, m.value))
            if len(got) == 10:
                break
        assert sorted(v for *_, v in got) == sorted(b"v%d" % i for i in range(10))
        assert c.assignment() == {KTP("t", 0), KTP("t", 1)}
        c.commit()
        assert group_offsets(kbroker, "kp") == {0: 5, 1: 5}
        c.seek(KTP("t", 1), 2)
        again = c.poll(timeout_ms=WAIT_S * 1000, max_records=3)
        assert [m.offset for m in again[KTP("t", 1)]] == [2, 3, 4]
    finally:
        c.close()
    ka = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        assert "kp" in [g["group_id"] for g in ka.list_groups()]
        offs = ka.list_group_offsets("kp")["kp"]
        assert {tp.partition: om.offset for tp, om in offs.items()} == {0: 5, 1: 5}
        ka.delete_groups(["kp"])
    finally:
        ka.close()
    assert group_offsets(kbroker, "kp") == {}


def test_aiokafka_group_consume_and_commit(kbroker: EmbeddedBroker) -> None:
    from aiokafka import AIOKafkaConsumer

    create_topic(kbroker, "t")
    produce(kbroker, "t", 6)

    async def run() -> list[bytes]:
        c = AIOKafkaConsumer("t", bootstrap_servers=kbroker.kafka_bootstrap, group_id="aio",
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            out: list[bytes] = []
            deadline = time.monotonic() + WAIT_S
            while len(out) < 6 and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                out += [m.value for msgs in batch.values() for m in msgs]
            await c.commit()
            return out
        finally:
            await c.stop()

    assert asyncio.run(run()) == [b"v%d" % i for i in range(6)]
    assert group_offsets(kbroker, "aio") == {0: 6}


def test_answers_keep_request_order_with_deferred_commits(kbroker: EmbeddedBroker,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """kafka-python checks that answers come in request order. Its heartbeat thread and its
    auto-commits share the coordinator connection; an OffsetCommit waits for its fsync, and a
    Heartbeat answered before it used to close that connection (CorrelationIdError), lose the
    commit and make the member rejoin."""
    import logging

    create_topic(kbroker, "t")
    caplog.set_level(logging.WARNING, logger="kafka")
    c = KafkaConsumer("t", bootstrap_servers=kbroker.kafka_bootstrap, group_id="order",
                      auto_offset_reset="earliest", enable_auto_commit=True,
                      auto_commit_interval_ms=20, heartbeat_interval_ms=20)
    try:
        with Producer(socket=kbroker.socket) as p:
            for i in range(200):
                p.send("t", b"v%d" % i)
                p.flush()
                c.poll(timeout_ms=10)
        c.commit()
    finally:
        c.close(autocommit=False)
    bad = [r.getMessage() for r in caplog.records
           if "Correlation" in r.getMessage() or "coordinator dead" in r.getMessage()]
    assert bad == []
    with Admin(socket=kbroker.socket) as a:
        offs = a.list_group_offsets("order")
    assert [o.offset for o in offs.values()] == [200]
