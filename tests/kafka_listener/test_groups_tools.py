"""Consumer groups from outside Python: `kcat -G` (Debian's kcat, an older librdkafka) and
kafkajs under Debian's Node.js (installed once from npm by test_kafkajs.py's fixture)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.test_kafkajs import kafkajs  # noqa: F401  (the session fixture: npm install once)

pytestmark = pytest.mark.integration

WAIT_S = 60


def produce(broker: EmbeddedBroker, topic: str, n: int, partitions: int) -> None:
    with Producer(socket=broker.socket) as p:
        for i in range(n):
            p.send(topic, b"m%d" % i, partition=i % partitions)
        p.flush()


def group_offsets(broker: EmbeddedBroker, group: str) -> dict[int, int]:
    with Admin(socket=broker.socket) as a:
        return {tp.partition: o.offset for tp, o in a.list_group_offsets(group).items()}


def test_kcat_balanced_consumer(kbroker: EmbeddedBroker) -> None:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (Debian package kcat; scripts/quickstart installs it "
                    "when run as root)")
    create_topic(kbroker, "t", partitions=2)
    produce(kbroker, "t", 6, partitions=2)
    out = subprocess.run(
        ["kcat", "-b", kbroker.kafka_bootstrap, "-G", "kc", "t", "-o", "beginning", "-c", "6",
         "-f", "%p %o %s\n", "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100"],
        capture_output=True, text=True, timeout=WAIT_S, check=True)
    rows = sorted(tuple(line.split()) for line in out.stdout.splitlines() if line.strip())
    assert rows == sorted((str(i % 2), str(i // 2), f"m{i}") for i in range(6)), out.stderr
    # kcat commits what it consumed before leaving (the last auto-commit runs at close).
    assert group_offsets(kbroker, "kc") == {0: 3, 1: 3}


KAFKAJS_GROUP = r"""
const { Kafka, logLevel } = require('kafkajs');
const [broker, group, topic, want] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'kjs', brokers: [broker], logLevel: logLevel.NOTHING });
const consumer = kafka.consumer({ groupId: group, sessionTimeout: 30000 });
const got = [];
(async () => {
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        got.push([partition, Number(message.offset), message.value.toString()]);
        if (got.length >= Number(want)) resolve();
      },
    });
  });
  await consumer.disconnect();  // kafkajs commits the resolved offsets when it stops
  console.log(JSON.stringify(got));
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_kafkajs_group_consume(kbroker: EmbeddedBroker, kafkajs: Path,  # noqa: F811 (fixture)
                               tmp_path: Path) -> None:
    create_topic(kbroker, "t", partitions=2)
    produce(kbroker, "t", 6, partitions=2)
    script = tmp_path / "group.js"
    script.write_text(KAFKAJS_GROUP)
    r = subprocess.run(["node", str(script), kbroker.kafka_bootstrap, "kjs", "t", "6"],
                       capture_output=True, text=True, timeout=WAIT_S * 2,
                       env={**os.environ, "NODE_PATH": str(kafkajs)})
    assert r.returncode == 0, r.stderr[-2000:]
    got = sorted(tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1]))
    assert got == sorted((i % 2, i // 2, f"m{i}") for i in range(6))
    assert group_offsets(kbroker, "kjs") == {0: 3, 1: 3}
