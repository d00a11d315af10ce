"""ListOffsets v1-v10 through the real clients. librdkafka sends v7 (it asks for 7 at most),
kafka-python 3 v10; both were held at v6 while the listener advertised no more (a cap put in
when Quix's kill-and-restart test stalled once under load: v7-v10 carry v6's fields, so the
answers below are the same bytes whatever the version, docs/KAFKA.md). MAX_TIMESTAMP (-3,
KIP-734): by edgebus's time (append time, batch granularity): the first offset of the last
batch, with its append time. Tiered storage's EARLIEST_LOCAL (-4, v8) and LATEST_TIERED (-5,
v9), as Kafka without a remote tier answers."""

from __future__ import annotations

import datetime
import logging
import time

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer as CKProducer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.admin import KafkaAdminClient
from kafka.admin import OffsetSpec as KOffsetSpec

from edgebus import Producer
from edgebus.server.kafka.codec import request_module, response_module
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import (
    connect,
    create_topic,
    parse_response,
    raw_request,
    read_frame,
)

pytestmark = pytest.mark.integration


def _confluent(b: EmbeddedBroker, topic: str, spec: OffsetSpec) -> tuple[int, int]:
    a = AdminClient({"bootstrap.servers": b.kafka_bootstrap})
    tp = TopicPartition(topic, 0)
    info = a.list_offsets({tp: spec}, request_timeout=10)[tp].result(10)
    return info.offset, info.timestamp


def _two_batches(b: EmbeddedBroker, topic: str) -> None:
    with Producer(socket=b.socket) as p:
        for batch in ([b"a", b"b", b"c"], [b"d", b"e"]):
            for v in batch:
                p.send(topic, v, partition=0)
            p.flush()
            time.sleep(0.01)  # the two batches get different append times (ms)


def test_max_timestamp(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "maxts")
    assert _confluent(kbroker, "maxts", OffsetSpec.max_timestamp()) == (-1, -1)  # empty
    _two_batches(kbroker, "maxts")
    offset, ts = _confluent(kbroker, "maxts", OffsetSpec.max_timestamp())
    assert offset == 3  # the first record of the last batch
    # Its time is the append time the timestamp search finds for that batch.
    assert (offset, ts) == _confluent(kbroker, "maxts", OffsetSpec.for_timestamp(ts))
    assert _confluent(kbroker, "maxts", OffsetSpec.for_timestamp(ts - 1000))[0] == 0
    # kafka-python sends these at v10 (it needs v7, v8, v9): IncompatibleBrokerVersion at v6.
    ka = KafkaAdminClient(bootstrap_servers=kbroker.kafka_bootstrap)
    try:
        got = ka.list_partition_offsets({KTP("maxts", 0): KOffsetSpec.MAX_TIMESTAMP})
        assert (got[KTP("maxts", 0)].offset, got[KTP("maxts", 0)].timestamp) == (3, ts)
        ka.delete_records({KTP("maxts", 0): 1})
        for spec, want in ((KOffsetSpec.EARLIEST_LOCAL, 1), (KOffsetSpec.LATEST_TIERED, -1),
                           (KOffsetSpec.EARLIEST, 1), (KOffsetSpec.LATEST, 5)):
            got = ka.list_partition_offsets({KTP("maxts", 0): spec})
            assert got[KTP("maxts", 0)].offset == want, spec
    finally:
        ka.close()


def test_consumers_list_offsets_at_their_versions(kbroker: EmbeddedBroker) -> None:
    """A read_committed librdkafka consumer (v7) and a kafka-python one (v10) over a partition
    with an open transaction: the end is the last stable offset, a time at or past it finds
    nothing; the uncommitted ones see the log end."""
    create_topic(kbroker, "lo7")
    _two_batches(kbroker, "lo7")  # offsets 0-4
    tx = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "lo7-tx"})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce("lo7", b"open", partition=0)  # offset 5, open: the last stable offset stays 5
    assert tx.flush(30) == 0
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    rk = logging.getLogger("test.lo7.rdkafka")
    rk.addHandler(Lines())
    rk.setLevel(logging.DEBUG)
    now = int(time.time() * 1000) + 60_000
    try:
        for isolation, end in (("read_committed", 5), ("read_uncommitted", 6)):
            c = CKConsumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": "lo7",
                           "isolation.level": isolation, "debug": "topic", "logger": rk})
            try:
                tp = TopicPartition("lo7", 0)
                assert c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, end)
                [first] = c.offsets_for_times([TopicPartition("lo7", 0, 0)], timeout=10)
                assert (first.offset, first.error) == (0, None)
                [later] = c.offsets_for_times([TopicPartition("lo7", 0, now)], timeout=10)
                assert later.offset == -1  # nothing at or after a time to come
                c.poll(0.5)  # serves the client's log lines to the logger
            finally:
                c.close()
            kc = KafkaConsumer(bootstrap_servers=kbroker.kafka_bootstrap,
                               isolation_level=isolation)
            try:
                ktp = KTP("lo7", 0)
                assert kc.beginning_offsets([ktp]) == {ktp: 0}
                assert kc.end_offsets([ktp]) == {ktp: end}
                assert kc.offsets_for_times({ktp: 0})[ktp].offset == 0
                assert kc.offsets_for_times({ktp: now})[ktp] is None
            finally:
                kc.close()
        sent = [ln for ln in lines if "ListOffsetsRequest (v" in ln]
        assert sent and all("ListOffsetsRequest (v7," in ln for ln in sent), sent[:3]
    finally:
        tx.abort_transaction(30)


def test_every_version_answers_alike(kbroker: EmbeddedBroker) -> None:
    """The same question at v1..v10, byte by byte on one connection: the same answers (v7-v10
    add nothing the listener fills differently)."""
    create_topic(kbroker, "loall")
    _two_batches(kbroker, "loall")
    _, ts = _confluent(kbroker, "loall", OffsetSpec.max_timestamp())
    specs = (-2, -1, -3, ts, ts - 1000, ts + 60_000)
    answers = {}
    with connect(kbroker) as s:
        for v in range(1, 11):
            req = request_module(2, v)
            parts = tuple(req.ListOffsetsPartition(partition_index=0, timestamp=t) for t in specs)
            topic = req.ListOffsetsTopic(name="loall", partitions=parts)
            kw: dict[str, object] = {"timeout": datetime.timedelta(0)} if v >= 10 else {}
            if v >= 2:
                kw["isolation_level"] = 0
            body = req.ListOffsetsRequest(replica_id=-1, topics=(topic,), **kw)
            s.sendall(raw_request(2, v, 100 + v, body))
            frame = read_frame(s)
            assert frame, f"v{v}: the listener closed the connection"
            mod = response_module(2, v)
            corr, resp = parse_response(frame, mod.ListOffsetsResponse,
                                        flexible_header=mod.ListOffsetsResponse.__flexible__)
            assert corr == 100 + v
            answers[v] = [(p.error_code, p.offset, p.timestamp)
                          for p in resp.topics[0].partitions]
    assert [a[:2] for a in answers[1]] == [(0, 0), (0, 5), (0, 3), (0, 3), (0, 0), (0, -1)]
    assert answers[1][2][2] == answers[1][3][2] == ts
    assert all(a == answers[1] for a in answers.values()), answers
