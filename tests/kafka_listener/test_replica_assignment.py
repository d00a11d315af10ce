"""Manual replica assignments (kafka-topics --replica-assignment, kafka-python's
replica_assignments) through the real kafka-python admin client: on one broker, node 0, an
assignment of [0] to each partition is what Kafka would accept, and was refused outright
("manual replica assignment is not supported"); anything else is INVALID_REPLICA_ASSIGNMENT
saying what is wrong, as Kafka answers."""

from __future__ import annotations

import re

import pytest
from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import InvalidReplicationAssignmentError

from edgebus import Admin
from edgebus.testing import EmbeddedBroker

pytestmark = pytest.mark.integration


def _partitions(b: EmbeddedBroker, topic: str) -> int:
    with Admin(socket=b.socket) as a:
        return len(a.describe_topic(topic).partitions)


def test_assignments_on_one_broker(kbroker: EmbeddedBroker) -> None:
    ka = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        ka.create_topics([NewTopic("ra-ok", -1, -1, replica_assignments={0: [0], 1: [0]})])
        assert _partitions(kbroker, "ra-ok") == 2
        for assignment, why in (({0: [1]}, "unknown broker(s) [1]"),
                                ({0: [0, 0]}, "duplicate replicas [0, 0]"),
                                ({1: [0]}, "partitions [1] are not a consecutive 0-based")):
            with pytest.raises(InvalidReplicationAssignmentError, match=re.escape(why)):
                ka.create_topics([NewTopic("ra-bad", -1, -1, replica_assignments=assignment)])
        ka.create_partitions({"ra-ok": NewPartitions(3, [[0]])})
        assert _partitions(kbroker, "ra-ok") == 3
        with pytest.raises(InvalidReplicationAssignmentError, match="partition 3: unknown broker"):
            ka.create_partitions({"ra-ok": NewPartitions(4, [[2]])})
        with pytest.raises(InvalidReplicationAssignmentError, match=r"1 assignment\(s\) for 2 new"):
            ka.create_partitions({"ra-ok": NewPartitions(5, [[0]])})
    finally:
        ka.close()
    assert _partitions(kbroker, "ra-ok") == 3
    with Admin(socket=kbroker.socket) as a:
        assert "ra-bad" not in a.list_topics()
