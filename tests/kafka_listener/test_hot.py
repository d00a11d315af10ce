"""The Produce and Fetch answers written in one pass (edgebus/server/kafka/hot.py) are byte for
byte what kio writes for the same values, at every version the listener serves; and a real
supervisor's answers at every version parse with kio's readers and say what was stored."""

from __future__ import annotations

import os
import pwd
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kio.index import load_payload_module
from kio.static.constants import EntityType

from edgebus import Producer
from edgebus.server.kafka import hot
from edgebus.server.kafka.codec import build, encode_response, response_module
from edgebus.server.kafka.data import APIS
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame

PRODUCE, FETCH = 0, 1
SERVED = {a.api_key: range(a.min_version, a.max_version + 1) for a in APIS}
i16 = st.integers(0, 120)  # Kafka's error codes
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
name = st.text(min_size=1, max_size=40)
message = st.one_of(st.none(), st.text(max_size=60))

produce_parts = st.lists(st.tuples(i32, i16, i64, i64, message), max_size=3)
produce_topics = st.lists(st.tuples(name, produce_parts), max_size=3)
aborted = st.one_of(st.none(), st.lists(st.tuples(i64, i64), max_size=3))
records = st.one_of(st.none(), st.binary(max_size=300))
fetch_parts = st.lists(st.tuples(i32, i16, i64, i64, i64, aborted, records), max_size=3)
fetch_topics = st.lists(st.tuples(name, fetch_parts), max_size=3)


def kio_produce(version: int, corr: int, topics: list[Any]) -> bytes:
    mod = response_module(PRODUCE, version)
    resp = build(mod.ProduceResponse, responses=tuple(
        build(mod.TopicProduceResponse, name=t, partition_responses=tuple(
            build(mod.PartitionProduceResponse, index=index, error_code=err, base_offset=base,
                  log_start_offset=log_start, record_errors=(), error_message=msg)
            for index, err, base, log_start, msg in parts))
        for t, parts in topics))
    return encode_response(PRODUCE, version, corr, resp)


def kio_fetch(version: int, corr: int, topics: list[Any]) -> bytes:
    mod = response_module(FETCH, version)
    resp = build(mod.FetchResponse, error_code=0, session_id=0, responses=tuple(
        build(mod.FetchableTopicResponse, topic=t, partitions=tuple(
            build(mod.PartitionData, partition_index=index, error_code=err, high_watermark=hw,
                  last_stable_offset=lso, log_start_offset=ls,
                  aborted_transactions=None if ab is None else tuple(
                      build(mod.AbortedTransaction, producer_id=pid, first_offset=first)
                      for pid, first in ab),
                  preferred_read_replica=-1, records=recs)
            for index, err, hw, lso, ls, ab, recs in parts))
        for t, parts in topics))
    return encode_response(FETCH, version, corr, resp)


@pytest.mark.unit
@pytest.mark.parametrize("version", SERVED[PRODUCE])
@settings(max_examples=60, deadline=None)
@given(corr=i32, topics=produce_topics)
def test_produce_answer_is_kios(version: int, corr: int, topics: list[Any]) -> None:
    assert hot.produce_response(version, corr, topics) == kio_produce(version, corr, topics)


@pytest.mark.unit
@pytest.mark.parametrize("version", SERVED[FETCH])
@settings(max_examples=60, deadline=None)
@given(corr=i32, topics=fetch_topics)
def test_fetch_answer_is_kios(version: int, corr: int, topics: list[Any]) -> None:
    assert hot.fetch_response(version, corr, topics) == kio_fetch(version, corr, topics)


@pytest.mark.unit
def test_long_lengths_take_multi_byte_varints() -> None:
    """Compact lengths of 127 and more take two or three varint bytes (v9 / v12)."""
    big = [("t" * 200, [(0, 0, 5, 5, 0, [(1, 2)] * 130, b"r" * 20_000)])]
    assert hot.fetch_response(12, 7, big) == kio_fetch(12, 7, big)
    topics = [("t" * 300, [(i, 1, i, 0, "m" * 150) for i in range(140)])]
    assert hot.produce_response(9, 7, topics) == kio_produce(9, 7, topics)


def _batch(values: list[bytes]) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=1_700_000_000_000 + i, key=None, value=v, headers=[])
    return bytes(b.build())


@pytest.mark.integration
def test_every_served_version_answers_what_was_stored(kbroker: EmbeddedBroker) -> None:
    """Produce at every served version, then Fetch at every served version from offset 0: the
    answers parse with kio, the produce offsets are dense and the fetched values are the ones
    sent, in order (the answers are hot.py's, no longer kio's)."""
    topic = "hot-versions"
    create_topic(kbroker, topic)
    sent: list[bytes] = []
    with connect(kbroker) as s:
        for corr, version in enumerate(SERVED[PRODUCE]):
            mod = load_payload_module(PRODUCE, version, EntityType.request)
            values = [f"v{version}-{i}".encode() for i in range(3)]
            req = build(mod.ProduceRequest, transactional_id=None, acks=1, timeout=5000,
                        topic_data=(build(mod.TopicProduceData, name=topic, partition_data=(
                            build(mod.PartitionProduceData, index=0, records=_batch(values)),)),))
            s.sendall(raw_request(PRODUCE, version, corr, req))
            resp_mod = response_module(PRODUCE, version)
            got_corr, resp = parse_response(read_frame(s), resp_mod.ProduceResponse, version >= 9)
            assert got_corr == corr
            (part,) = resp.responses[0].partition_responses
            assert (resp.responses[0].name, part.index, int(part.error_code)) == (topic, 0, 0)
            assert part.base_offset == len(sent)
            sent += values
        for corr, version in enumerate(SERVED[FETCH], start=100):
            mod = load_payload_module(FETCH, version, EntityType.request)
            req = build(mod.FetchRequest, replica_id=-1, max_wait=0, min_bytes=1,
                        max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                        topics=(build(mod.FetchTopic, topic=topic, partitions=(
                            build(mod.FetchPartition, partition=0, fetch_offset=0,
                                  partition_max_bytes=1 << 20, log_start_offset=-1,
                                  current_leader_epoch=-1),)),),
                        forgotten_topics_data=(), rack_id="")
            s.sendall(raw_request(FETCH, version, corr, req))
            resp_mod = response_module(FETCH, version)
            got_corr, resp = parse_response(read_frame(s), resp_mod.FetchResponse, version >= 12)
            assert got_corr == corr
            (part,) = resp.responses[0].partitions
            assert (int(part.error_code), part.high_watermark) == (0, len(sent))
            values = []
            data = bytes(part.records)
            pos = 0
            while pos < len(data):
                n = struct.unpack_from(">i", data, pos + 8)[0] + 12
                values += [r.value for r in DefaultRecordBatch(data[pos:pos + n])]
                pos += n
            assert values == sent


@pytest.mark.integration
def test_fetch_with_a_refused_topic_answers_both(make_broker: Any) -> None:
    """A Fetch naming a topic it may read and one a deny rule refuses it: one answer,
    written by hot.py, with the first topic's records and TOPIC_AUTHORIZATION_FAILED (29) for
    the other, for every Fetch version served."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    b = make_broker({"acl": {"rules": [f"deny user:{user} read topic:hot-no"]}}).start()
    create_topic(b, "hot-ok")
    create_topic(b, "hot-no")
    with Producer(socket=b.socket) as p:
        p.send("hot-ok", b"allowed", partition=0).get(10)
    with connect(b) as s:
        for corr, version in enumerate(SERVED[FETCH]):
            mod = load_payload_module(FETCH, version, EntityType.request)
            req = build(mod.FetchRequest, replica_id=-1, max_wait=0, min_bytes=1,
                        max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                        topics=tuple(build(mod.FetchTopic, topic=t, partitions=(
                            build(mod.FetchPartition, partition=0, fetch_offset=0,
                                  partition_max_bytes=1 << 20, log_start_offset=-1,
                                  current_leader_epoch=-1),)) for t in ("hot-ok", "hot-no")),
                        forgotten_topics_data=(), rack_id="")
            s.sendall(raw_request(FETCH, version, corr, req))
            got_corr, resp = parse_response(read_frame(s), response_module(FETCH, version).FetchResponse,
                                            version >= 12)
            assert got_corr == corr
            by_topic = {t.topic: t.partitions[0] for t in resp.responses}
            assert int(by_topic["hot-no"].error_code) == 29
            ok = by_topic["hot-ok"]
            assert (int(ok.error_code), ok.high_watermark) == (0, 1)
            assert [r.value for r in DefaultRecordBatch(bytes(ok.records))] == [b"allowed"]
