"""A group's generation keeps counting after the group empties and after a supervisor restart,
as Kafka's does: it is what fences a zombie member's commits, so a new member must never be
handed a generation an earlier member of the group had. (It restarted at 1: "empty
(generation 2)" then "generation 1".) Real clients: confluent-kafka consumers joining, committing
and leaving, a transactional producer committing their offsets; the generation read back with
edgebus's Admin."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka import Producer as CKProducer

from edgebus import Admin
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration
TOPIC, GROUP = "gen-count", "gen-count-g"


def _member_commits_and_leaves(b: EmbeddedBroker) -> int:
    """A consumer joins, reads one record, commits it, and its generation (read while it is a
    member) is returned; then it leaves and the group is empty again."""
    c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": GROUP,
                    "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([TOPIC])
        deadline = time.monotonic() + 60  # a bound for a stuck join, not a timing claim
        msg = None
        while msg is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                msg = m
        assert msg is not None, "the consumer got no record"
        c.commit(message=msg, asynchronous=False)
        with Admin(socket=b.socket) as a:
            return a.describe_group(GROUP).generation
    finally:
        c.close()


def test_generation_counts_on_after_empty_and_restart(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, TOPIC)
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap})
    for i in range(3):
        p.produce(TOPIC, str(i).encode())
    assert p.flush(30) == 0
    first = _member_commits_and_leaves(kbroker)
    assert first == 1
    # Emptied (generation 2, as Kafka), then joined again: 3, not 1 again.
    second = _member_commits_and_leaves(kbroker)
    assert second == first + 2
    # A restarted supervisor goes on from the generation of the group's last commit.
    kbroker.restart()
    third = _member_commits_and_leaves(kbroker)
    assert third > second


def test_a_stale_generation_cannot_commit_in_a_transaction(kbroker: EmbeddedBroker) -> None:
    """TxnOffsetCommit (v3, KIP-447) carries the consumer's member id and generation: one from
    before a rebalance is refused (ILLEGAL_GENERATION) as Kafka refuses it; it was accepted."""
    topic, group = "gen-txn", "gen-txn-g"
    create_topic(kbroker, topic, partitions=2)
    conf = {"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": group,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "isolation.level": "read_committed"}
    gens: list[int] = []
    c1, c2 = CKConsumer(conf), CKConsumer(conf)
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "gen-txn-tx"})
    try:
        c1.subscribe([topic])
        with Admin(socket=kbroker.socket) as a:
            deadline = time.monotonic() + 60  # bounds for a stuck join, not timing claims
            while not c1.assignment() and time.monotonic() < deadline:
                c1.poll(0.2)
            stale = c1.consumer_group_metadata()
            gens.append(a.describe_group(group).generation)
            c2.subscribe([topic])  # a second member: the group rebalances, c1 rejoins
            while time.monotonic() < deadline:
                c1.poll(0.2)
                c2.poll(0.2)
                d = a.describe_group(group)
                if len(d.members) == 2 and c2.assignment() and len(c1.assignment()) == 1:
                    gens.append(d.generation)
                    break
        assert gens == [1, 2]
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(topic, b"out", partition=0)
        offsets = [TopicPartition(topic, c1.assignment()[0].partition, 1)]
        with pytest.raises(KafkaException) as err:
            p.send_offsets_to_transaction(offsets, stale, 30)
        assert err.value.args[0].code() == KafkaError.ILLEGAL_GENERATION, err.value
        p.abort_transaction(30)
        p.begin_transaction()  # the current generation commits
        p.produce(topic, b"out", partition=0)
        p.send_offsets_to_transaction(offsets, c1.consumer_group_metadata(), 30)
        p.commit_transaction(30)
    finally:
        c1.close()
        c2.close()
