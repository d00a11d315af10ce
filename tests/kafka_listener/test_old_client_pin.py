"""A Kafka client pinned to a version before 0.11 (kafka-python's `api_version=(0, 10, 1)`, a
line in many old examples) sends Produce v2, below the listener's floor (record batches only,
as Kafka 4): the connection is closed and the client sees only a timeout, so the supervisor's
log must say what happened and what to change. Unpinned, the same client negotiates."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from edgebus.testing import EmbeddedBroker, wait_for
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration


def test_pinned_old_client_is_named_in_the_log(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "pin")
    # delivery_timeout_ms expires the record, so close() can finish: a producer whose close
    # timed out kept its thread, which logged into later tests' caplog in the same worker.
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, api_version=(0, 10, 1),
                      max_block_ms=3000, request_timeout_ms=2000, delivery_timeout_ms=3000)
    try:
        # It never gets an answer: its record expires (timeout or the connection's error).
        with pytest.raises((KafkaTimeoutError, KafkaConnectionError)):
            p.send("pin", b"old").get(6)
    finally:
        p.close(timeout=10)
    wait_for(lambda: "called Kafka API 0 (produce) v2, outside 3..9 (a client pinned to a Kafka "
                     "older than 0.11, e.g. kafka-python's api_version=(0, 10); drop the pin"
             in kbroker.log(), timeout=10, what="the log line naming the pinned client")
    p = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        assert p.send("pin", b"new").get(10).offset == 0
    finally:
        p.close()
