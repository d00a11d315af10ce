"""Idempotent produce through raw Kafka frames: InitProducerId, sequences continued, a retried
batch answered with its first offset and not appended again (also after a SIGKILL and restart:
the state is rebuilt from the batch headers), out-of-order sequences refused."""

from __future__ import annotations

import datetime
import socket

import pytest
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.init_producer_id.v4.response import InitProducerIdResponse
from kio.schema.produce.v9 import request as PR
from kio.schema.produce.v9.response import ProduceResponse

from edgebus import Admin, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, parse_response, raw_request, read_frame
from tests.kafka_listener.test_records import kafka_batch

pytestmark = pytest.mark.integration

_corr = iter(range(1, 1_000_000))


def init_pid(s: socket.socket) -> tuple[int, int]:
    req = InitProducerIdRequest(transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60),
                                producer_id=-1, producer_epoch=-1)
    s.sendall(raw_request(22, 4, next(_corr), req))
    _, resp = parse_response(read_frame(s), InitProducerIdResponse, flexible_header=True)
    assert resp.error_code == 0
    return resp.producer_id, resp.producer_epoch


def produce(s: socket.socket, topic: str, records: bytes, acks: int = 1) -> tuple[int, int]:
    """(error code, base offset) of one partition's answer."""
    req = PR.ProduceRequest(transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=30),
                            topic_data=(PR.TopicProduceData(name=topic, partition_data=(
                                PR.PartitionProduceData(index=0, records=records),)),))
    corr = next(_corr)
    s.sendall(raw_request(0, 9, corr, req))
    got, resp = parse_response(read_frame(s), ProduceResponse, flexible_header=True)
    assert got == corr
    (part,) = resp.responses[0].partition_responses
    return int(part.error_code), part.base_offset


def batch(pid: int, epoch: int, seq: int, n: int = 3) -> bytes:
    return kafka_batch([(None, b"r%d" % (seq + i), [], 0) for i in range(n)], pid=pid, epoch=epoch, seq=seq)


def log_end(broker: EmbeddedBroker, topic: str) -> int:
    with Admin(socket=broker.socket) as a:
        return a.list_offsets([TopicPartition(topic, 0)], -1)[TopicPartition(topic, 0)][0]


@pytest.mark.parametrize("acks", [1, -1])
def test_sequences_duplicates_and_gaps(kbroker: EmbeddedBroker, acks: int) -> None:
    create_topic(kbroker, "idem")
    with connect(kbroker) as s:
        pid, epoch = init_pid(s)
        assert pid > 0 and epoch == 0
        assert produce(s, "idem", batch(pid, epoch, 0), acks) == (0, 0)
        assert produce(s, "idem", batch(pid, epoch, 3), acks) == (0, 3)
        # The client did not get the answer and retries: the first offset, nothing appended.
        assert produce(s, "idem", batch(pid, epoch, 3), acks) == (0, 3)
        assert produce(s, "idem", batch(pid, epoch, 0), acks) == (0, 0)
        assert log_end(kbroker, "idem") == 6
        # A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing appended.
        assert produce(s, "idem", batch(pid, epoch, 10), acks)[0] == 45
        # An older epoch of the same producer is fenced.
        assert produce(s, "idem", batch(pid, epoch + 1, 0), acks) == (0, 6)
        assert produce(s, "idem", batch(pid, epoch, 6), acks)[0] == 47
        # Another producer has its own sequence.
        other, _ = init_pid(s)
        assert other != pid
        assert produce(s, "idem", batch(other, 0, 0, n=2), acks) == (0, 9)
        # A producer without id (not idempotent) is never checked.
        assert produce(s, "idem", batch(-1, -1, -1), acks) == (0, 11)
        assert produce(s, "idem", batch(-1, -1, -1), acks) == (0, 14)
    assert log_end(kbroker, "idem") == 17


def test_state_is_rebuilt_from_the_log_after_sigkill(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "idem")
    with connect(kbroker) as s:
        pid, epoch = init_pid(s)
        for seq in range(0, 30, 3):
            assert produce(s, "idem", batch(pid, epoch, seq), -1) == (0, seq)
    kbroker.kill9()
    kbroker.start()
    with connect(kbroker) as s:
        # The retry of the last batch after the crash: answered with its offset, not appended.
        assert produce(s, "idem", batch(pid, epoch, 27), -1) == (0, 27)
        assert produce(s, "idem", batch(pid, epoch, 24), -1) == (0, 24)
        assert produce(s, "idem", batch(pid, epoch, 31), -1)[0] == 45
        assert produce(s, "idem", batch(pid, epoch, 30), -1) == (0, 30)
        # A new producer id after the restart is not one handed out before.
        assert init_pid(s)[0] > pid
    assert log_end(kbroker, "idem") == 33
