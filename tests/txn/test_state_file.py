"""The transaction state file's name: `transactions.json` (native producers use it as Kafka ones
do). A data directory of an older edgebus has `kafka-transactions.json` only: a supervisor
started on it keeps its open transactions and producer epochs, writes the new file and removes
the old one."""

from __future__ import annotations

import pytest

from edgebus import Producer
from edgebus.errors import ProducerFencedError
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.readers import read_all
from tests.txn.test_transactions_native import native_until, txp

pytestmark = [pytest.mark.integration]


def test_old_state_file_is_upgraded_in_place(broker: EmbeddedBroker) -> None:
    create_topic(broker, "up")
    new_file, old_file = broker.data_dir / "transactions.json", broker.data_dir / "kafka-transactions.json"
    p = txp(broker, "up-1", retry_backoff_ms=10, retry_backoff_max_ms=100, delivery_timeout_ms=None)
    fencer = None
    try:
        p.begin_transaction()
        p.send("up", b"o1", partition=0).get(10)
        broker.kill9()
        assert new_file.exists() and not old_file.exists()
        new_file.rename(old_file)  # what an older edgebus left
        broker.start()
        assert new_file.exists() and not old_file.exists()
        with Producer(socket=broker.socket) as plain:
            plain.send("up", b"after", partition=0).get(10)
        # The open transaction is known: read_committed stops before it.
        assert read_all(broker, "up", "read_committed") == []
        p.send("up", b"o2", partition=0)
        p.commit_transaction()
        assert native_until(broker, "up", b"o2") == [b"o1", b"after", b"o2"]
        # The producer id and epoch are known: a new instance of the id fences this one.
        fencer = txp(broker, "up-1")
        with pytest.raises(ProducerFencedError):
            p.begin_transaction()
            p.send("up", b"zombie", partition=0).get(10)
    finally:
        p.close()
        if fencer is not None:
            fencer.close()
    assert read_all(broker, "up", "read_committed") == [b"o1", b"after", b"o2"]


def test_stale_old_file_beside_the_new_one_is_removed(broker: EmbeddedBroker) -> None:
    """A supervisor killed between the upgrade's save and the old file's removal: the new file
    is the state; the old one (older, so wrong) is removed and never read."""
    create_topic(broker, "st")
    new_file, old_file = broker.data_dir / "transactions.json", broker.data_dir / "kafka-transactions.json"
    p = txp(broker, "st-1")
    try:
        stale = new_file.read_bytes()  # no transaction open in it
        p.begin_transaction()
        p.send("st", b"open", partition=0).get(10)
        broker.kill9()
        old_file.write_bytes(stale)
        broker.start()
        assert new_file.exists() and not old_file.exists()
        assert read_all(broker, "st", "read_committed") == []  # the open transaction is known
        p.commit_transaction()
    finally:
        p.close()
    assert read_all(broker, "st", "read_committed") == [b"open"]
