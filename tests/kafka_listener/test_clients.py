"""Real Kafka clients (confluent-kafka/librdkafka, kafka-python, aiokafka) against the Kafka
listener: produce with every compression and idempotence, consume with assign + seek, and the
native client and a Kafka client reading each other's records byte for byte."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition as CKTopicPartition

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

# Records with every shape: keys and none, values, tombstones (null value), empty values,
# headers (repeated keys, null values, binary), binary payloads.
SHAPES: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (b"k1", b"v1", []),
    (None, b"no key", []),
    (b"tomb", None, []),
    (b"empty", b"", [("h", b"")]),
    (b"\x00\xff", bytes(range(256)), [("a", b"1"), ("a", b"2"), ("n", None), ("bin", b"\x00\x01")]),
]


def ck_consume(bootstrap: str, topic: str, partitions: int, n: int, start: int = 0,
               timeout: float = 30) -> list[Any]:
    """n messages read with assign() at `start` (no group), in partition then offset order."""
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                    "fetch.wait.max.ms": 100})
    try:
        c.assign([CKTopicPartition(topic, p, start) for p in range(partitions)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
        assert len(out) == n, f"read {len(out)} of {n}"
        return sorted(out, key=lambda m: (m.partition(), m.offset()))
    finally:
        c.close()


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_produce_every_compression_idempotent(kbroker: EmbeddedBroker, compression: str) -> None:
    create_topic(kbroker, "c", partitions=2)
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "compression.type": compression,
                    "enable.idempotence": True, "linger.ms": 5})
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    for i in range(2000):
        p.produce("c", key=b"k%d" % i, value=b"v%d" % i * 10, partition=i % 2,
                  headers=[("i", str(i).encode())], on_delivery=on_delivery)
    assert p.flush(30) == 0
    # Offsets dense per partition, as the producer was told.
    assert sorted(delivered) == [(pt, o) for pt in (0, 1) for o in range(1000)]
    msgs = ck_consume(kbroker.kafka_bootstrap, "c", 2, 2000)
    for m in msgs:
        i = int(m.headers()[0][1])
        assert (m.partition(), m.key(), m.value()) == (i % 2, b"k%d" % i, b"v%d" % i * 10)
    # The native consumer reads the same records (stored uncompressed).
    with Consumer(socket=kbroker.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition("c", 0)])
        got: list[Any] = []
        while len(got) < 1000:
            for recs in c.poll(2000).values():
                got.extend(recs)
        assert [r.key for r in got] == [b"k%d" % i for i in range(0, 2000, 2)]


def test_seek_and_list_offsets(kbroker: EmbeddedBroker) -> None:
    """Watermarks, offsets_for_times (by the supervisor's append time, docs/KAFKA.md), assign at
    an offset and seek."""
    create_topic(kbroker, "s")
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "linger.ms": 0})
    for i in range(30):
        p.produce("s", value=b"%d" % i, timestamp=1_600_000_000_000 + i)
    assert p.flush(30) == 0
    time.sleep(0.05)
    between = int(time.time() * 1000)
    time.sleep(0.05)
    for i in range(30, 50):
        p.produce("s", value=b"%d" % i, timestamp=1_600_000_000_000 + i)
    assert p.flush(30) == 0
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "unused",
                    "enable.auto.commit": False})
    try:
        lo, hi = c.get_watermark_offsets(CKTopicPartition("s", 0), timeout=15)
        assert (lo, hi) == (0, 50)
        (found,) = c.offsets_for_times([CKTopicPartition("s", 0, between)], timeout=15)
        assert found.offset == 30  # the first record appended at or after the time
        c.assign([CKTopicPartition("s", 0, 40)])
        m = None
        while m is None:
            m = c.poll(1)
        # The record keeps the producer's create time.
        assert (m.offset(), m.value(), m.timestamp()) == (40, b"40", (1, 1_600_000_000_040))
        c.seek(CKTopicPartition("s", 0, 7))
        m = None
        while m is None:
            m = c.poll(1)
        assert (m.offset(), m.value()) == (7, b"7")
    finally:
        c.close()


def test_native_producer_to_kafka_consumer_byte_identical(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "n2k")
    with Producer(socket=kbroker.socket) as p:
        for key, value, headers in SHAPES:
            p.send("n2k", value=value, key=key, headers=headers, partition=0, timestamp_ms=1700000000000)
        p.flush()
    msgs = ck_consume(kbroker.kafka_bootstrap, "n2k", 1, len(SHAPES))
    got = [(m.key(), m.value(), [tuple(h) for h in (m.headers() or [])]) for m in msgs]
    assert got == [(k, v, [tuple(h) for h in hs]) for k, v, hs in SHAPES]
    assert {m.timestamp() for m in msgs} == {(1, 1700000000000)}
    with Admin(socket=kbroker.socket) as a:  # Kafka fetches count in the traffic figures
        assert a.status()["records_out"] >= len(SHAPES)


def test_kafka_producer_to_native_consumer_byte_identical(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "k2n")
    p = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "linger.ms": 0})
    for key, value, headers in SHAPES:
        p.produce("k2n", value=value, key=key, headers=headers or None, partition=0,
                  timestamp=1700000000001)
    assert p.flush(30) == 0
    with Consumer(socket=kbroker.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition("k2n", 0)])
        got: list[Any] = []
        deadline = time.monotonic() + 30
        while len(got) < len(SHAPES) and time.monotonic() < deadline:
            for recs in c.poll(1000).values():
                got.extend(recs)
    assert [(r.key, r.value, list(r.headers)) for r in got] == [(k, v, hs) for k, v, hs in SHAPES]
    assert [r.offset for r in got] == list(range(len(SHAPES)))
    assert {r.timestamp for r in got} == {1700000000001}


def test_kafka_python_produce_and_consume(kbroker: EmbeddedBroker) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KPTopicPartition

    create_topic(kbroker, "kp")
    prod = KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, compression_type="gzip")
    futures = [prod.send("kp", key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"%d" % i)])
               for i in range(100)]
    prod.flush()
    assert [f.get(timeout=10).offset for f in futures] == list(range(100))
    prod.close()
    cons = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, enable_auto_commit=False,
                         consumer_timeout_ms=10_000)
    tp = KPTopicPartition("kp", 0)
    cons.assign([tp])
    cons.seek(tp, 90)
    got = [(m.offset, m.key, m.value, m.headers) for m in cons]
    cons.close()
    assert got == [(i, b"k%d" % i, b"v%d" % i, [("h", b"%d" % i)]) for i in range(90, 100)]


def test_aiokafka_produce_and_consume(kbroker: EmbeddedBroker) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AIOTopicPartition

    create_topic(kbroker, "aio")

    async def run() -> list[tuple[int, bytes | None]]:
        prod = AIOKafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, enable_idempotence=True)
        await prod.start()
        try:
            for i in range(20):
                await prod.send_and_wait("aio", b"m%d" % i, partition=0)
        finally:
            await prod.stop()
        cons = AIOKafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap, enable_auto_commit=False)
        await cons.start()
        try:
            tp = AIOTopicPartition("aio", 0)
            cons.assign([tp])
            cons.seek(tp, 5)
            out: list[tuple[int, bytes | None]] = []
            while len(out) < 15:
                batch = await cons.getmany(tp, timeout_ms=1000)
                out.extend((m.offset, m.value) for m in batch.get(tp, []))
            return out
        finally:
            await cons.stop()

    assert asyncio.run(asyncio.wait_for(run(), 60)) == [(i, b"m%d" % i) for i in range(5, 20)]


def test_long_poll_fetch_answers_when_data_arrives(kbroker: EmbeddedBroker) -> None:
    """A consumer at the log end parks its fetch (fetch.wait.max.ms long) and gets a record
    appended meanwhile by a native producer, well before its wait runs out."""
    create_topic(kbroker, "lp")
    c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "unused",
                    "enable.auto.commit": False, "fetch.wait.max.ms": 30_000})
    try:
        c.assign([CKTopicPartition("lp", 0, 0)])
        assert c.poll(1.0) is None  # parked: nothing there
        with Producer(socket=kbroker.socket) as p:
            p.send("lp", b"late", partition=0).get(10)
        m = None
        deadline = time.monotonic() + 20  # far below the 30 s wait: answered by the append
        while m is None and time.monotonic() < deadline:
            m = c.poll(0.5)
        assert m is not None and m.value() == b"late"
    finally:
        c.close()


def test_compacted_topic_is_read_past_removed_offsets(make_broker: Any) -> None:
    """Offsets the log cleaner removed are served as empty Kafka batches, which librdkafka steps
    over: a consumer from offset 0 gets every surviving record, in order, and reaches the end."""
    b = make_broker({"log": {"cleaner_interval_ms": 200}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("cmp", partitions=1, config={"cleanup_policy": "compact", "segment_bytes": 4096})
    with Producer(socket=b.socket, linger_ms=0) as p:
        for i in range(300):
            p.send("cmp", b"v%d" % i, key=b"k%d" % (i % 3), partition=0).get(10)
    def read_native() -> list[Any]:
        with Consumer(socket=b.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
            c.assign([TopicPartition("cmp", 0)])
            out: list[Any] = []
            while not out or out[-1].offset < 299:
                for recs in c.poll(2000).values():
                    out.extend(recs)
        return [(r.offset, r.key, r.value) for r in out]

    deadline = time.monotonic() + 60
    before = read_native()
    while len(before) == 300 and time.monotonic() < deadline:  # until the cleaner removed some
        time.sleep(0.5)
        before = read_native()
    assert len(before) < 300, "the cleaner removed nothing"
    c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": "unused",
                    "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    kafka: list[Any] = []
    try:  # from offset 0 to the end, stepping over what the cleaner removed
        c.assign([CKTopicPartition("cmp", 0, 0)])
        deadline = time.monotonic() + 30
        while (not kafka or kafka[-1][0] < 299) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                kafka.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()
    # The cleaner may go on removing while the Kafka consumer reads (records only ever go), so
    # what librdkafka read lies between a native read before it and one after it.
    after = read_native()
    assert [o for o, _, _ in kafka] == sorted({o for o, _, _ in kafka}), "offsets increase"
    assert set(after) <= set(kafka) <= set(before)
    assert kafka[-3:] == [(297, b"k0", b"v297"), (298, b"k1", b"v298"), (299, b"k2", b"v299")]
