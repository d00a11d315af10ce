"""Keys and partitions across clients (docs/KAFKA.md, "Keys and partitions"): the native
Producer, confluent-kafka with its default partitioner and kcat put a key in the same partition
(CRC-32 of the key); kafka-python and kafkajs (murmur2 by default, as Java) put it elsewhere,
and with the partitioners the docs give (examples/kafka/edgebus_partitioner.py for
kafka-python, edgebus_partitioner.js for kafkajs) in the same one. Each client is real; the
partitions are read back from the log. (Found by following the docs as a user: a kettle's
readings from a kafkajs producer and a native one landed in two partitions.)"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from edgebus import Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.test_kafkajs import kafkajs  # noqa: F401  (the session fixture: npm install once)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
KEYS = [f"kettle-{i}" for i in range(12)]

JS = """
const { Kafka, logLevel } = require("kafkajs");
const { EdgebusPartitioner } = require(process.env.PARTITIONER);
const [broker, topic, tag, ...keys] = process.argv.slice(1);
const kafka = new Kafka({ brokers: [broker], logLevel: logLevel.ERROR });
(async () => {
  const options = tag === "js-edgebus" ? { createPartitioner: EdgebusPartitioner } : {};
  const p = kafka.producer(options);
  await p.connect();
  await p.send({ topic, messages: keys.map((key) => ({ key, value: tag })) });
  await p.disconnect();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _example_partitioner() -> object:
    """examples/kafka/edgebus_partitioner.py's EdgebusPartitioner, loaded from its file."""
    path = ROOT / "examples" / "kafka" / "edgebus_partitioner.py"
    spec = importlib.util.spec_from_file_location("edgebus_partitioner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EdgebusPartitioner()


def _partitions_by_tag(sock: str, topic: str) -> dict[str, dict[str, int]]:
    """tag (the record's value) -> key -> the partition the record is stored in."""
    out: dict[str, dict[str, int]] = {}
    with Consumer(socket=sock, auto_offset_reset="earliest", consumer_timeout_ms=1500) as c:
        c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        for r in c:
            assert r.key is not None and r.value is not None
            out.setdefault(r.value.decode(), {})[r.key.decode()] = r.partition
    return out


def test_the_documented_partitioners_agree_with_the_native_producer(
        kbroker: EmbeddedBroker, kafkajs: Path) -> None:  # noqa: F811
    import kafka
    from confluent_kafka import Producer as CkProducer

    create_topic(kbroker, "kettles", partitions=PARTITIONS)
    bootstrap = kbroker.kafka_bootstrap
    with Producer(socket=kbroker.socket) as p:
        for k in KEYS:
            p.send("kettles", b"native", key=k.encode())
    ck = CkProducer({"bootstrap.servers": bootstrap})
    for k in KEYS:
        ck.produce("kettles", b"confluent-kafka", key=k.encode())
    assert ck.flush(30) == 0
    for tag, kw in (("kafka-python", {}),
                    ("kafka-python-edgebus", {"partitioner": _example_partitioner()})):
        kp = kafka.KafkaProducer(bootstrap_servers=bootstrap, **kw)
        for k in KEYS:
            kp.send("kettles", tag.encode(), key=k.encode())
        kp.flush(30)
        kp.close()
    env = {**os.environ, "NODE_PATH": str(kafkajs), "KAFKAJS_NO_PARTITIONER_WARNING": "1",
           "PARTITIONER": str(ROOT / "examples" / "kafka" / "edgebus_partitioner.js")}
    for tag in ("js", "js-edgebus"):
        r = subprocess.run(["node", "-e", JS, bootstrap, "kettles", tag, *KEYS], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    tags = ["native", "confluent-kafka", "kafka-python", "kafka-python-edgebus", "js",
            "js-edgebus"]
    if shutil.which("kcat"):
        lines = "".join(f"{k}:kcat\n" for k in KEYS)
        subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", "kettles", "-K", ":"],
                       input=lines, text=True, check=True, timeout=60)
        tags.append("kcat")

    got = _partitions_by_tag(kbroker.socket, "kettles")
    assert sorted(got) == sorted(tags)
    assert all(len(got[t]) == len(KEYS) for t in tags), got
    native = got["native"]
    assert native == {k: zlib.crc32(k.encode()) % PARTITIONS for k in KEYS}
    for t in ("confluent-kafka", "kafka-python-edgebus", "js-edgebus", "kcat"):
        if t in got:
            assert got[t] == native, t
    # What the docs warn about: murmur2 (kafka-python's and kafkajs's default) differs, and the
    # two agree with each other (both are Java's partitioner).
    assert got["kafka-python"] == got["js"] != native
