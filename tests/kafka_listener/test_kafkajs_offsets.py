"""kafkajs's admin resetOffsets and setOffsets on the Kafka listener (a real node process).

resetOffsets commits Kafka's -2 (earliest) for the group's consumers to resolve at their next
start: Kafka stores a negative offset as sent, and so does the listener now (it answered
INVALID_COMMIT_OFFSET_SIZE, which crashed kafkajs's consumer and left resetOffsets hanging).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edgebus import Consumer, Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.test_kafkajs import kafkajs  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent


def _native_first_offset(broker: EmbeddedBroker, topic: str, group: str) -> int:
    with Consumer(topic, group_id=group, socket=broker.socket, auto_offset_reset="earliest",
                  enable_auto_commit=False) as c:
        while True:
            for recs in c.poll(2000).values():
                return recs[0].offset


def test_reset_and_set_offsets(kbroker: EmbeddedBroker, kafkajs: Path) -> None:  # noqa: F811
    topic, group = "js-reset", "js-reset-g"
    create_topic(kbroker, topic)
    with Producer(socket=kbroker.socket) as p:
        for i in range(5):
            p.send(topic, b"r%d" % i, partition=0)
        p.flush()
    r = subprocess.run(["node", str(HERE / "kafkajs_reset_offsets.js"), kbroker.kafka_bootstrap, topic, group],
                       capture_output=True, text=True, timeout=90,
                       env={**os.environ, "NODE_PATH": str(kafkajs)})
    assert r.returncode == 0, r.stderr[-2000:]
    steps = json.loads(r.stdout)
    assert steps == {"after_reset_earliest": [[0, "-2"]], "after_set_2": [[0, "2"]]}
    # The native consumer of the same group resumes at kafkajs's offset.
    assert _native_first_offset(kbroker, topic, group) == 2
