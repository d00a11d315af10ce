"""A deleted topic takes its producers' and transactions' state with it: a topic re-created under
the same name starts with no sequences of the old one's idempotent producers, no aborted
transactions of the old one (a transactional producer keeps its id from one transaction to the
next, so those would hide its committed records), and an open transaction's first offset in the
old topic does not hold the new one's last stable offset. The transactions' part is in the state
file: it stays forgotten after a supervisor SIGKILL and restart."""

from __future__ import annotations

import pytest

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic
from tests.kafka_listener.readers import read_all
from tests.kafka_listener.test_idempotence import batch, init_pid, log_end, produce
from tests.txn.test_transactions_native import native_until, txp

pytestmark = [pytest.mark.integration]


def recreate(b: EmbeddedBroker, topic: str, via: str = "native") -> None:
    """Delete `topic` (with the native Admin, or Kafka's DeleteTopics) and create it again."""
    if via == "kafka":
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": b.kafka_bootstrap})  # kept until answered
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(30)
    with Admin(socket=b.socket) as a:
        if via == "native":
            a.delete_topic(topic)
        a.create_topic(topic, partitions=1)


@pytest.mark.parametrize("via", ["native", "kafka"])
def test_idempotent_producer_starts_over_in_a_recreated_topic(broker: EmbeddedBroker, via: str) -> None:
    create_topic(broker, "idem-re")
    with connect(broker) as s:
        pid, epoch = init_pid(s)
        assert produce(s, "idem-re", batch(pid, epoch, 0)) == (0, 0)
        recreate(broker, "idem-re", via)
        # The new partition knows no producer: sequence 0 again is a first batch, appended (it
        # was answered as a duplicate of the old topic's offset 0 and dropped).
        assert produce(s, "idem-re", batch(pid, epoch, 0)) == (0, 0)
        assert produce(s, "idem-re", batch(pid, epoch, 3)) == (0, 3)
    assert log_end(broker, "idem-re") == 6


def test_old_topics_aborted_transactions_forgotten_across_a_restart(broker: EmbeddedBroker) -> None:
    create_topic(broker, "tx-re")
    p = txp(broker, "re-1", retry_backoff_ms=10, retry_backoff_max_ms=100, delivery_timeout_ms=None)
    try:
        p.begin_transaction()
        for i in range(3):
            p.send("tx-re", b"a%d" % i, partition=0)
        p.flush()
        p.abort_transaction()  # aborted: offsets 0-2, its marker at 3
        recreate(broker, "tx-re")
        broker.kill9()  # the state file must already say the old topic is gone
        broker.start()
        with p.transaction():  # the same producer id: offsets 0-1 again, committed
            p.send("tx-re", b"c0", partition=0)
            p.send("tx-re", b"c1", partition=0)
    finally:
        p.close()
    assert native_until(broker, "tx-re", b"c1") == [b"c0", b"c1"]
    assert read_all(broker, "tx-re", "read_committed") == [b"c0", b"c1"]


def test_open_transaction_continues_in_a_recreated_topic(broker: EmbeddedBroker) -> None:
    create_topic(broker, "open-re")
    plain = Producer(socket=broker.socket, linger_ms=1)
    p = txp(broker, "re-2")
    try:
        for i in range(5):
            plain.send("open-re", b"old%d" % i, partition=0)
        plain.flush()
        p.begin_transaction()
        p.send("open-re", b"x", partition=0).get(10)  # first offset 5 in the old topic
        recreate(broker, "open-re")
        p.send("open-re", b"y", partition=0).get(10)  # offset 0 of the new one
        plain.send("open-re", b"z", partition=0).get(10)
        # The open transaction holds the new partition back from its own first batch there.
        assert read_all(broker, "open-re", "read_committed") == []
        p.abort_transaction()
        with p.transaction():
            p.send("open-re", b"end", partition=0)
    finally:
        p.close()
        plain.close()
    assert native_until(broker, "open-re", b"end") == [b"z", b"end"]
    assert read_all(broker, "open-re", "read_committed") == [b"z", b"end"]
    assert read_all(broker, "open-re", "read_uncommitted") == [b"y", b"z", b"end"]
