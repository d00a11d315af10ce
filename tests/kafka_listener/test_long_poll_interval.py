"""A consumer whose max.poll.interval.ms (JoinGroup's rebalance timeout) is above 30 minutes
joins, as on Kafka, which bounds only the session timeout (group.max.session.timeout.ms): the
listener answered INVALID_SESSION_TIMEOUT, so a consumer set up for hour-long processing never
got a partition. The session timeout keeps Kafka's bound."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer as CKConsumer
from kafka import KafkaConsumer

from edgebus import Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration
HOUR_MS, DAY_MS = 3_600_000, 86_400_000


def test_hour_long_poll_interval_joins(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "lpi")
    with Producer(socket=kbroker.socket) as p:
        p.send("lpi", b"one", partition=0)
        p.flush()
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "lpi-ck",
                    "max.poll.interval.ms": HOUR_MS, "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["lpi"])
        while (m := c.poll(2)) is None:
            pass
        assert m.error() is None, m.error()
        assert m.value() == b"one"
    finally:
        c.close()
    kc = KafkaConsumer("lpi", bootstrap_servers=kbroker.kafka_bootstrap, group_id="lpi-kp",
                       max_poll_interval_ms=DAY_MS, auto_offset_reset="earliest")
    try:
        got: list[bytes] = []
        while not got:
            got = [r.value for recs in kc.poll(2000).values() for r in recs]
        assert got == [b"one"]
    finally:
        kc.close()


def test_session_timeout_keeps_its_bound(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "lpi-s")
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "lpi-s",
                    "session.timeout.ms": HOUR_MS, "max.poll.interval.ms": HOUR_MS})
    try:
        c.subscribe(["lpi-s"])
        while (m := c.poll(2)) is None:
            pass
        assert m.error() is not None and m.error().code() == 26  # INVALID_SESSION_TIMEOUT
    finally:
        c.close()
