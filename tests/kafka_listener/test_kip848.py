"""KIP-848's consumer group protocol (`group.protocol=consumer`) is not served; a client that asks
for it must fail at once with an answer naming the setting, not hang. Before kip848.py the
listener did not advertise ConsumerGroupHeartbeat and librdkafka, finding it missing, marked its
coordinator dead and queried it again forever: a consumer that read nothing and reported
nothing."""

from __future__ import annotations

import datetime
import time

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError
from confluent_kafka import Producer as CKProducer
from kio.schema.consumer_group_heartbeat.v0.request import (
    ConsumerGroupHeartbeatRequest as HeartbeatV0,
)
from kio.schema.consumer_group_heartbeat.v0.response import (
    ConsumerGroupHeartbeatResponse as HeartbeatResponseV0,
)
from kio.schema.consumer_group_heartbeat.v1.request import (
    ConsumerGroupHeartbeatRequest as HeartbeatV1,
)
from kio.schema.consumer_group_heartbeat.v1.response import (
    ConsumerGroupHeartbeatResponse as HeartbeatResponseV1,
)
from kio.schema.errors import ErrorCode

from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, parse_response, raw_request, read_frame

pytestmark = pytest.mark.integration

STUCK_S = 60  # no error this long: the client hangs (the bug), not a slow machine


def test_confluent_group_protocol_consumer_fails_fast(kbroker: EmbeddedBroker) -> None:
    boot = kbroker.kafka_bootstrap
    p = CKProducer({"bootstrap.servers": boot})
    p.produce("k848", b"r0")
    assert p.flush(30) == 0
    c = CKConsumer({"bootstrap.servers": boot, "group.id": "g848", "group.protocol": "consumer",
                    "auto.offset.reset": "earliest"})
    err = None
    try:
        c.subscribe(["k848"])
        deadline = time.monotonic() + STUCK_S
        while err is None and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            assert m.error() is not None, "a group.protocol=consumer consumer read a record"
            err = m.error()
    finally:
        c.close()
    assert err is not None, f"no error within {STUCK_S} s: the consumer hangs"
    assert err.code() == KafkaError._FATAL, err  # the error event itself is not .fatal()
    assert "ConsumerGroupHeartbeat" in err.str() and "version not supported" in err.str(), err
    log = kbroker.log_path.read_text()
    assert "asked to join group 'g848' with group.protocol=consumer" in log
    assert "only group.protocol=classic is served" in log
    # Nothing of it stayed behind: a classic consumer of the same group reads the record.
    c = CKConsumer({"bootstrap.servers": boot, "group.id": "g848", "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["k848"])
        got = None
        deadline = time.monotonic() + STUCK_S
        while got is None and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None:
                assert m.error() is None, m.error()
                got = m.value()
    finally:
        c.close()
    assert got == b"r0"


@pytest.mark.parametrize("version", [0, 1])
def test_heartbeat_answer_names_the_setting(kbroker: EmbeddedBroker, version: int) -> None:
    req, resp = (HeartbeatV0, HeartbeatResponseV0) if version == 0 else (HeartbeatV1,
                                                                         HeartbeatResponseV1)
    body = req(group_id="raw848", member_id="", member_epoch=0, instance_id=None, rack_id=None,
               rebalance_timeout=datetime.timedelta(minutes=5), subscribed_topic_names=("t",), server_assignor=None,
               topic_partitions=())
    s = connect(kbroker)
    try:
        s.sendall(raw_request(68, version, 7, body))
        frame = read_frame(s)
        assert frame, "the listener closed the connection instead of answering"
        corr, got = parse_response(frame, resp, flexible_header=True)
    finally:
        s.close()
    assert corr == 7
    assert got.error_code == ErrorCode.unsupported_version
    assert got.error_message is not None and "group.protocol=classic" in got.error_message
    assert got.member_epoch == -1 and got.assignment is None
