"""ListGroups' state and type filters through the real admin clients. Kafka compares both
without case; librdkafka sends the type as "Classic", so confluent-kafka's
`list_consumer_groups(types={ConsumerGroupType.CLASSIC})` listed nothing here. KIP-848's
"consumer" type is not spoken by edgebus: none of its groups are listed for it."""

from __future__ import annotations

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupType
from confluent_kafka.admin import AdminClient
from kafka.admin import KafkaAdminClient

from edgebus import Consumer, Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration


def test_state_and_type_filters(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "lgf")
    with Producer(socket=kbroker.socket) as p:
        p.send("lgf", b"x", partition=0)
        p.flush()
    with Consumer("lgf", group_id="lgf-empty", socket=kbroker.socket, auto_offset_reset="earliest") as c:
        while not c.poll(2000):
            pass
        c.commit()
    # A member stays in "lgf-stable" while the admin clients list.
    with Consumer("lgf", group_id="lgf-stable", socket=kbroker.socket, auto_offset_reset="earliest") as c:
        while not c.poll(2000):
            pass
        a = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})

        def listed(**kw: object) -> list[tuple[str, object]]:
            r = a.list_consumer_groups(request_timeout=10, **kw).result()
            return sorted((g.group_id, g.state) for g in r.valid)

        stable, empty = ConsumerGroupState.STABLE, ConsumerGroupState.EMPTY
        both = [("lgf-empty", empty), ("lgf-stable", stable)]
        assert listed() == both
        assert listed(types={ConsumerGroupType.CLASSIC}) == both
        assert listed(types={ConsumerGroupType.CONSUMER}) == []
        assert listed(states={stable}) == [("lgf-stable", stable)]
        ka = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
        try:
            got = ka.list_groups(states_filter=["STABLE"], types_filter=["CLASSIC"])
        finally:
            ka.close()
        assert [(g["group_id"], g["group_state"], g["group_type"]) for g in got] == [
            ("lgf-stable", "Stable", "classic")]
