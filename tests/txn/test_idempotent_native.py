"""The native idempotent producer (Producer(enable_idempotence=True)) against a real supervisor:
answers lost with the connection (a proxy cuts it after the append) and a supervisor SIGKILLed
and restarted mid-stream leave every acknowledged record exactly once, in order; the same stream
without idempotence duplicates. And the supervisor's refusals of bad sequences, typed."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import batch as B
from edgebus import format as F
from edgebus.client.channel import SyncChannel
from edgebus.errors import (
    BrokerUnavailableError,
    CorruptRecordError,
    InvalidRequestError,
    InvalidTxnStateError,
    OperationTimeoutError,
    OutOfOrderSequenceError,
    ProducerFencedError,
)
from edgebus.protocol import messages as M
from tests.txn.cutproxy import CutProxy

pytestmark = [pytest.mark.integration, pytest.mark.crash]


def topic(broker, name: str = "t", partitions: int = 1) -> None:
    with Admin(socket=broker.socket, transport="socket") as a:
        a.create_topic(name, partitions)


def values(broker, name: str = "t", partition: int = 0) -> list[bytes]:
    with Consumer(socket=broker.socket, auto_offset_reset="earliest", transport="socket") as c:
        tp = TopicPartition(name, partition)
        c.assign([tp])
        c.seek_to_beginning()
        with Admin(socket=broker.socket, transport="socket") as a:
            last = a.describe_topic(name).partitions[partition].log_end_offset
        out: list[bytes] = []
        deadline = time.monotonic() + 30
        while c.position(tp) < last and time.monotonic() < deadline:
            out.extend(r.value for recs in c.poll(timeout_ms=200, max_records=1000).values()
                       for r in recs)
        return out


def retrying(sock: str, idempotent: bool, transport: str = "socket") -> Producer:
    return Producer(socket=sock, transport=transport, linger_ms=0, retries=math.inf,
                    retry_backoff_ms=10, retry_backoff_max_ms=100, delivery_timeout_ms=None,
                    enable_idempotence=idempotent)


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "plain"])
def test_answers_lost_with_the_connection(broker, tmp_path: Path, idempotent: bool) -> None:
    """Every 5th PRODUCE answer is lost (the connection is cut after the append): the resend
    is recognised by its sequence and answered with its first offset; a plain producer with the
    same retries appends it twice (why idempotence exists)."""
    topic(broker)
    proxy = CutProxy(broker.socket, tmp_path / "p.sock", every=5)
    p = retrying(str(tmp_path / "p.sock"), idempotent)
    try:
        # one record per batch (each waits for its answer), so answers are many
        offsets = [p.send("t", b"v%d" % i, partition=0).get(60).offset for i in range(120)]
    finally:
        p.close(10)
        proxy.close()
    assert proxy.cuts >= 20
    got = values(broker)
    expected = [b"v%d" % i for i in range(120)]
    if idempotent:
        assert got == expected
        assert offsets == list(range(120))
    else:
        assert len(got) > len(expected)  # each lost answer's batch was appended again
        assert sorted(set(got)) == sorted(expected)


def test_a_batch_that_fails_for_good_does_not_block_the_next(broker, tmp_path: Path) -> None:
    """A batch that never reached the supervisor fails after its delivery timeout: a hole in
    its partition's sequence. The producer starts over with a new producer id, so the next
    record is taken (with the old id it would be refused as out of order)."""
    topic(broker)
    proxy = CutProxy(broker.socket, tmp_path / "p.sock", every=10**9)
    p = Producer(socket=str(tmp_path / "p.sock"), transport="socket", linger_ms=0,
                 enable_idempotence=True, request_timeout_ms=300, delivery_timeout_ms=1000,
                 retry_backoff_ms=50, retry_backoff_max_ms=100)
    try:
        assert p.send("t", b"a", partition=0).get(10).offset == 0
        proxy.blackhole = True
        with pytest.raises((OperationTimeoutError, BrokerUnavailableError)):  # its last error
            p.send("t", b"lost", partition=0).get(30)
        # A resend of "lost" may still sit in the proxy's socket buffers (a loaded machine): cut
        # the connections before letting PRODUCE through again, so that it never arrives.
        proxy.cut()
        proxy.blackhole = False
        assert p.send("t", b"c", partition=0).get(30).offset == 1
    finally:
        p.close(10)
        proxy.close()
    assert values(broker) == [b"a", b"c"]


@pytest.mark.parametrize("transport", ["socket", "shm"])
def test_supervisor_sigkilled_mid_stream(broker, transport: str) -> None:
    """The supervisor is SIGKILLed three times while records stream and restarted on its data
    directory: the producer state comes back from the batch headers, every record exactly
    once and in order."""
    topic(broker)
    stream_through_kill9(broker, retrying(broker.socket, True, transport), 3000, kills=3,
                         pause_every=50)


def stream_through_kill9(broker, p: Producer, n: int, *, kills: int, pause_every: int) -> None:
    """Send n records to t/0 from a thread, pausing 5 ms every pause_every records (a stream, not
    one burst), while the supervisor is SIGKILLed and restarted `kills` times, 0.3 s apart; then
    every record is acknowledged at its own offset and is in the log exactly once, in order.
    Closes p."""
    futs = []

    def produce() -> None:
        for i in range(n):
            futs.append(p.send("t", b"r%d" % i, partition=0))
            if i % pause_every == 0:
                time.sleep(0.005)

    t = threading.Thread(target=produce)
    t.start()
    try:
        for _ in range(kills):
            time.sleep(0.3)
            broker.kill9()
            broker.start()
        t.join(120)
        offsets = [f.get(60).offset for f in futs]
    finally:
        p.close(30)
    assert values(broker) == [b"r%d" % i for i in range(n)]
    assert offsets == list(range(n))


def raw(sock: str, pid: int, epoch: int, seq: int, value: bytes, attrs: int = 0) -> M.ProduceResponse:
    rec = B.encode_record(1, None, value, ())
    batch = bytearray(B.build_batch([rec], 1, 1, pid, seq, epoch))
    if attrs:
        from edgebus.server.txn.mark import mark
        mark(batch, attrs)
    ch = SyncChannel(sock)
    try:
        return ch.request(M.Api.PRODUCE, M.ProduceRequest("t", 0, M.ACKS_WRITTEN, bytes(batch)))
    finally:
        ch.close()


def test_sequence_refusals_are_typed(broker) -> None:
    topic(broker)
    ch = SyncChannel(broker.socket)
    pid = ch.request(M.Api.INIT_PRODUCER_ID, M.InitProducerIdRequest("", 0)).producer_id
    ch.close()
    assert raw(broker.socket, pid, 0, 0, b"a").base_offset == 0
    assert raw(broker.socket, pid, 0, 1, b"b").base_offset == 1
    assert raw(broker.socket, pid, 0, 0, b"a").base_offset == 0  # a resend: its first offset
    with pytest.raises(OutOfOrderSequenceError, match="does not follow"):
        raw(broker.socket, pid, 0, 5, b"gap")
    assert raw(broker.socket, pid, 1, 0, b"c").base_offset == 2  # a new epoch starts at 0
    with pytest.raises(ProducerFencedError):
        raw(broker.socket, pid, 0, 2, b"old epoch")
    with pytest.raises(InvalidTxnStateError, match="no transactional id"):
        raw(broker.socket, pid, 1, 1, b"t", F.ATTR_TRANSACTIONAL)
    with pytest.raises(InvalidRequestError, match="base sequence"):
        raw(broker.socket, pid, 1, -1, b"no sequence")
    with pytest.raises(CorruptRecordError, match="control batches"):
        raw(broker.socket, pid, 1, 1, b"marker", F.ATTR_TRANSACTIONAL | F.ATTR_CONTROL)
    assert values(broker) == [b"a", b"b", b"c"]


def test_idempotence_needs_acks(broker) -> None:
    with pytest.raises(ValueError, match="acks"):
        Producer(socket=broker.socket, acks="none", enable_idempotence=True)
