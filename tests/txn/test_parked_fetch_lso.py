"""A consumer waiting at the log end while a transaction is open on its partition is not
answered with a batch appended after the transaction's first one: the native fetch shows only
what lies before the last stable offset (docs/FORMAT.md 9.4), also when the answer is built
from the batch just appended (DataHandlers.fetch_appended) instead of read back, on both
transports."""

from __future__ import annotations

import pytest

from edgebus import Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_no_batch_past_an_open_transaction(broker: EmbeddedBroker, transport: str) -> None:
    topic = f"lso-{transport}"
    create_topic(broker, topic)
    tx = Producer(socket=broker.socket, transactional_id=f"lso-{transport}", linger_ms=0)
    tx.init_transactions()
    try:
        tx.begin_transaction()
        tx.send(topic, b"in-txn", partition=0)
        tx.flush()  # offset 0, its transaction open
        with Consumer(socket=broker.socket, transport=transport, enable_auto_commit=False,
                      fetch_max_wait_ms=5000) as c, \
                Producer(socket=broker.socket, transport=transport, linger_ms=0) as plain:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            c.seek(tp, 1)  # the log end: its fetch waits there for the next append
            assert c.poll(200) == {}
            plain.send(topic, b"after", partition=0).get(10)  # offset 1, past the open one
            assert c.poll(1500) == {}, "a batch past the last stable offset was shown"
            tx.commit_transaction()
            got: list[bytes] = []
            for _ in range(20):
                for recs in c.poll(500).values():
                    got.extend(r.value for r in recs)
                if got:
                    break
            assert got == [b"after"]
    finally:
        tx.close()
