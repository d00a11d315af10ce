"""kafka-python and aiokafka produce with each of Kafka's four compressions and idempotence on,
as confluent-kafka does in test_clients.py: the offsets they are told are dense, the records
read back natively are theirs, and every stored batch carries a producer id and a sequence (so
the listener ran the idempotent path, not a plain produce)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from edgebus import BatchReader, Consumer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration

N = 300
COMPRESSIONS = ["gzip", "snappy", "lz4", "zstd"]
PRODUCER_ID = struct.Struct("<q")  # the native batch header's producer_id, docs/FORMAT.md 2.1
SEQUENCE = struct.Struct("<i")  # base_sequence


def record(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return b"k%d" % i, b"value %d " % i * 20, [("i", b"%d" % i)]


def kafka_python(bootstrap: str, topic: str, compression: str) -> list[tuple[int, int]]:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                      enable_idempotence=True, acks="all", linger_ms=5)
    try:
        futures = []
        for i in range(N):
            k, v, h = record(i)
            futures.append(p.send(topic, key=k, value=v, headers=h, partition=i % 2))
        p.flush(30)
        return [(f.get(30).partition, f.get(30).offset) for f in futures]
    finally:
        p.close(30)


def aiokafka(bootstrap: str, topic: str, compression: str) -> list[tuple[int, int]]:
    from aiokafka import AIOKafkaProducer

    async def run() -> list[tuple[int, int]]:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                             enable_idempotence=True, acks="all", linger_ms=5)
        await p.start()
        try:
            futures = []
            for i in range(N):
                k, v, h = record(i)
                futures.append(await p.send(topic, key=k, value=v, headers=h, partition=i % 2))
            return [(md.partition, md.offset) for md in await asyncio.gather(*futures)]
        finally:
            await p.stop()

    return asyncio.run(asyncio.wait_for(run(), 60))


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("client", [kafka_python, aiokafka], ids=["kafka-python", "aiokafka"])
def test_produce_every_compression_idempotent(kbroker: EmbeddedBroker, client, compression) -> None:  # type: ignore[no-untyped-def]
    if client is kafka_python:
        from kafka import codec

        has = {"gzip": codec.has_gzip, "snappy": codec.has_snappy, "lz4": codec.has_lz4,
               "zstd": codec.has_zstd}[compression]
        assert has(), f"kafka-python has no {compression} codec: the test extra brings them"
    topic = f"pc-{client.__name__}-{compression}".replace("_", "-")
    create_topic(kbroker, topic, partitions=2)
    delivered = client(kbroker.kafka_bootstrap, topic, compression)
    assert sorted(delivered) == [(p, o) for p in (0, 1) for o in range(N // 2)]
    with Consumer(socket=kbroker.socket, auto_offset_reset="earliest",
                  enable_auto_commit=False) as c:
        c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        got: list = []  # type: ignore[type-arg]
        while len(got) < N:
            for recs in c.poll(2000).values():
                got.extend(recs)
    by_i = {int(dict(r.headers)["i"]): r for r in got}
    assert sorted(by_i) == list(range(N))
    for i, r in by_i.items():
        k, v, h = record(i)
        assert (r.partition, r.key, r.value, list(r.headers)) == (i % 2, k, v, h)
    with BatchReader(kbroker.socket) as rd:
        for p in (0, 1):
            batches, _, _ = rd.read(topic, p, 0, 1 << 22)
            assert batches
            for b in batches:
                assert PRODUCER_ID.unpack_from(b.data, 48)[0] > 0, "no producer id: not idempotent"
                assert SEQUENCE.unpack_from(b.data, 56)[0] >= 0
