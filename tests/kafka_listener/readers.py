"""Reading what a topic holds, as the tests check their output: with a fresh confluent-kafka
consumer up to its end at a chosen isolation level, or with the native Consumer until it gets
nothing more."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from edgebus import Consumer as NativeConsumer
from edgebus import TopicPartition
from edgebus.testing import EmbeddedBroker


def read_to_end(bootstrap: str, topic: str, isolation: str, timeout_s: float = 30.0,
                fail_on_error: bool = True) -> tuple[list[Any], bool]:
    """(messages, whether the end was reached): every record a new consumer group with
    `isolation` (read_committed or read_uncommitted) gets from the earliest offset until its
    first end of partition (for read_committed: the last stable offset), or until `timeout_s`
    passes. A consumer error raises, or is skipped with `fail_on_error` false (a topic that does
    not exist yet)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": True})
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out, True
                if fail_on_error:
                    raise KafkaException(m.error())
                continue
            out.append(m)
    finally:
        c.close()
    return out, False


def native_read(sock: str, partitions: list[TopicPartition], quiet_polls: int = 2) -> list[bytes]:
    """Every value the native Consumer (read_committed where transactions are) gets from the
    start of `partitions`, until `quiet_polls` polls of a second in a row bring nothing."""
    out: list[bytes] = []
    with NativeConsumer(socket=sock, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign(partitions)
        idle = 0
        while idle < quiet_polls:
            got = c.poll(1000)
            idle = 0 if got else idle + 1
            for recs in got.values():
                out.extend(r.value for r in recs)
    return out


def read_all(b: EmbeddedBroker, topic: str, isolation: str, expect_end: bool = True) -> list[bytes]:
    """Every record value of partition 0 a fresh consumer with `isolation` gets until it reaches
    the partition's end (for read_committed: the last stable offset)."""
    msgs, ended = read_to_end(b.kafka_bootstrap, topic, isolation)
    out = [m.value() for m in msgs]
    assert ended or not expect_end, f"no end of partition within 30 s; got {len(out)} records"
    return out


def native_values(b: EmbeddedBroker, topic: str) -> list[bytes]:
    return native_read(b.socket, [TopicPartition(topic, 0)])
