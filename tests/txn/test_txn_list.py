"""`edgebus txn list` (LIST_TRANSACTIONS) as an operator sees it: a real transactional producer
left open shows its producer id, epoch, partitions (from which offset), groups, age and timeout;
after its commit the id is there with nothing open; an idempotent producer's sequence per
partition; a Kafka (confluent-kafka) transactional producer in the same list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgebus import Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.test_transactions import tx_producer
from tests.txn.test_transactions_native import txp

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def txn_list(b: EmbeddedBroker, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "txn", "list", "--socket",
                           b.socket, *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)


def listed(b: EmbeddedBroker) -> dict[str, Any]:
    r = txn_list(b, "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_open_then_committed_transaction(broker: EmbeddedBroker) -> None:
    create_topic(broker, "tl", partitions=2)
    with Producer(socket=broker.socket, linger_ms=1) as plain:
        plain.send("tl", b"before", partition=1).get(10)
    p = txp(broker, "list-1", transaction_timeout_ms=45_000)
    idem = Producer(socket=broker.socket, enable_idempotence=True, linger_ms=1)
    try:
        idem.send("tl", b"i0", partition=0).get(10)
        idem.send("tl", b"i1", partition=0).get(10)
        p.begin_transaction()
        p.send("tl", b"a", partition=0).get(10)
        p.send("tl", b"b", partition=1).get(10)
        p.send_offsets_to_transaction({TopicPartition("tl", 0): 1}, "list-group")
        doc = listed(broker)
        (t,) = [t for t in doc["transactions"] if t["transactional_id"] == "list-1"]
        assert t["state"] == "ongoing" and t["timeout_ms"] == 45_000
        assert t["producer_id"] > 0 and t["epoch"] == 0
        assert 0 <= t["open_ms"] < 45_000
        assert t["partitions"] == [{"topic": "tl", "partition": 0, "first_offset": 2},
                                   {"topic": "tl", "partition": 1, "first_offset": 1}]
        assert t["groups"] == ["list-group"]
        held = {(q["topic"], q["partition"], q["producer_id"]): q for q in doc["producers"]}
        assert held[("tl", 1, t["producer_id"])]["epoch"] == 0
        (idem_row,) = [q for q in doc["producers"] if q["producer_id"] != t["producer_id"]]
        assert (idem_row["topic"], idem_row["partition"], idem_row["last_sequence"]) == ("tl", 0, 1)
        # The table form names the same.
        r = txn_list(broker)
        assert r.returncode == 0, r.stderr
        line = next(x for x in r.stdout.splitlines() if x.startswith("list-1"))
        assert "ongoing" in line and "tl-0@2, tl-1@1" in line and "list-group" in line
        p.commit_transaction()
        (t,) = [t for t in listed(broker)["transactions"] if t["transactional_id"] == "list-1"]
        assert (t["state"], t["open_ms"], t["partitions"], t["groups"]) == ("empty", None, [], [])
    finally:
        p.close()
        idem.close()


def test_kafka_transactional_producer_is_listed(broker: EmbeddedBroker) -> None:
    create_topic(broker, "tlk")
    k = tx_producer(broker, "list-kafka", timeout_ms=30_000)
    k.begin_transaction()
    k.produce("tlk", b"k", partition=0)
    k.flush(30)
    (t,) = [t for t in listed(broker)["transactions"] if t["transactional_id"] == "list-kafka"]
    assert (t["state"], t["timeout_ms"]) == ("ongoing", 30_000)
    assert t["partitions"] == [{"topic": "tlk", "partition": 0, "first_offset": 0}]
    k.abort_transaction(30)
    (t,) = [t for t in listed(broker)["transactions"] if t["transactional_id"] == "list-kafka"]
    assert t["state"] == "empty" and t["partitions"] == []
