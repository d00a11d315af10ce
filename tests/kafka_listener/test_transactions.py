"""Kafka transactions with confluent-kafka (librdkafka) against the listener: commit and abort,
read_committed against read_uncommitted, a producer SIGKILLed inside a transaction (its records
never become visible to read_committed: the coordinator aborts after transaction.timeout.ms),
fencing of a zombie with the same transactional id, and the transaction state surviving a
supervisor SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as CKProducer

from edgebus import Admin, Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.readers import native_values, read_all


def tx_producer(b: EmbeddedBroker, tid: str, timeout_ms: int = 60_000) -> CKProducer:
    p = CKProducer({"bootstrap.servers": b.kafka_bootstrap, "transactional.id": tid,
                    "transaction.timeout.ms": timeout_ms, "linger.ms": 5})
    p.init_transactions(30)
    return p


def test_commit_and_abort_read_committed_and_uncommitted(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "tx")
    p = tx_producer(kbroker, "t1")
    p.begin_transaction()
    for i in range(5):
        p.produce("tx", f"c{i}".encode(), partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce("tx", f"a{i}".encode(), partition=0)
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce("tx", b"c5", partition=0)
    p.commit_transaction(30)
    committed = read_all(kbroker, "tx", "read_committed")
    assert committed == [f"c{i}".encode() for i in range(6)]
    everything = read_all(kbroker, "tx", "read_uncommitted")
    assert sorted(everything) == sorted([f"c{i}".encode() for i in range(6)]
                                        + [f"a{i}".encode() for i in range(5)])
    # The native consumer reads committed data: no aborted record, no marker.
    assert native_values(kbroker, "tx") == committed


def test_open_transaction_holds_read_committed_back(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "hold")
    plain = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap})
    p = tx_producer(kbroker, "t-hold")
    p.begin_transaction()
    p.produce("hold", b"open", partition=0)
    p.flush(30)
    plain.produce("hold", b"after", partition=0)
    plain.flush(30)
    assert read_all(kbroker, "hold", "read_committed") == []  # the LSO is the open batch
    assert native_values(kbroker, "hold") == []
    assert read_all(kbroker, "hold", "read_uncommitted") == [b"open", b"after"]
    p.commit_transaction(30)
    assert read_all(kbroker, "hold", "read_committed") == [b"open", b"after"]
    assert native_values(kbroker, "hold") == [b"open", b"after"]


def test_zombie_is_fenced(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "fence")
    old = tx_producer(kbroker, "t-fence")
    old.begin_transaction()
    old.produce("fence", b"zombie", partition=0)
    old.flush(30)
    new = tx_producer(kbroker, "t-fence")  # aborts the zombie's open transaction, bumps the epoch
    new.begin_transaction()
    new.produce("fence", b"new", partition=0)
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        old.produce("fence", b"zombie2", partition=0)
        old.commit_transaction(30)
    assert e.value.args[0].fatal() or e.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    assert read_all(kbroker, "fence", "read_committed") == [b"new"]


KILLED_PRODUCER = textwrap.dedent("""
    import sys
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": sys.argv[1], "transactional.id": "t-dead",
                  "transaction.timeout.ms": 3000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(100):
        p.produce("dead", b"doomed%d" % i, partition=0)
    p.flush(30)
    print("flushed", flush=True)
    sys.stdin.read()
""")


def txn_state(b: EmbeddedBroker, tid: str) -> str:
    """The state of `tid`'s transaction as the coordinator holds it (`edgebus txn list`)."""
    with Admin(socket=b.socket) as a:
        return next(t.state for t in a.list_transactions().transactions
                    if t.transactional_id == tid)


def test_sigkilled_transactional_producer_is_aborted(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "dead")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PRODUCER, kbroker.kafka_bootstrap],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"flushed\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    plain = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap})
    plain.produce("dead", b"later", partition=0)
    plain.flush(30)
    # Until the coordinator aborts it (transaction.timeout.ms, 3 s), the open transaction holds
    # read_committed back. Under load the abort may come before this read: what the read saw
    # is checked only if the transaction was still open after it.
    held = read_all(kbroker, "dead", "read_committed", expect_end=False)
    if txn_state(kbroker, "t-dead") == "ongoing":
        assert held == []
    # Then it is aborted (the state change, not a clock, is waited for) and never seen.
    deadline = time.monotonic() + 120
    while txn_state(kbroker, "t-dead") != "empty":
        assert time.monotonic() < deadline, "the dead producer's transaction was never aborted"
        time.sleep(0.2)
    assert read_all(kbroker, "dead", "read_committed") == [b"later"]
    assert len(read_all(kbroker, "dead", "read_uncommitted")) == 101


def test_transaction_state_survives_supervisor_sigkill(
        make_broker: Callable[..., EmbeddedBroker]) -> None:
    # A fixed (free) port, so that the producer finds the supervisor again after the restart.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kbroker = make_broker({"kafka": {"listeners": [f"127.0.0.1:{port}"]}}).start()
    create_topic(kbroker, "dur")
    p = tx_producer(kbroker, "t-dur")
    p.begin_transaction()
    p.produce("dur", b"x1", partition=0)
    p.flush(30)
    kbroker.kill9()
    kbroker.restart()
    # The open transaction is known after the restart: read_committed still stops before it.
    plain = CKProducer({"bootstrap.servers": kbroker.kafka_bootstrap})
    plain.produce("dur", b"y", partition=0)
    plain.flush(30)
    assert read_all(kbroker, "dur", "read_committed") == []
    p.produce("dur", b"x2", partition=0)
    p.commit_transaction(60)
    assert read_all(kbroker, "dur", "read_committed") == [b"x1", b"y", b"x2"]
    # A new instance of the same transactional id fences the old one, across the restart too.
    p2 = tx_producer(kbroker, "t-dur")
    p2.begin_transaction()
    p2.produce("dur", b"x3", partition=0)
    p2.abort_transaction(30)
    assert read_all(kbroker, "dur", "read_committed") == [b"x1", b"y", b"x2"]


def test_compaction_keeps_what_transactions_decide(make_broker: Callable[..., EmbeddedBroker]) -> None:
    """An aborted transactional record is never taken for its key's latest by the log cleaner
    (which would remove the committed value before it), and committed ones survive cleaning."""
    b = make_broker({"log": {"cleaner_interval_ms": 200}}).start()
    with Admin(socket=b.socket) as a:
        a.create_topic("ctx", partitions=1, config={"cleanup_policy": "compact", "segment_bytes": 4096})
    with Producer(socket=b.socket, linger_ms=0) as p:
        for i in range(60):
            p.send("ctx", b"plain%d" % i, key=b"k%d" % (i % 3), partition=0).get(10)
    t = tx_producer(b, "t-ctx")
    t.begin_transaction()
    t.produce("ctx", b"aborted", key=b"k0", partition=0)
    t.flush(30)
    t.abort_transaction(30)
    t.begin_transaction()
    t.produce("ctx", b"committed", key=b"k1", partition=0)
    t.commit_transaction(30)
    with Producer(socket=b.socket, linger_ms=0) as p:  # roll the segments past the transactions
        for i in range(240):
            p.send("ctx", b"filler%d" % i, key=b"f%d" % (i % 4), partition=0).get(10)
    end = 60 + 2 + 2 + 240  # records and markers
    deadline = time.monotonic() + 60
    while True:  # until the cleaner has removed something
        values = native_values(b, "ctx")
        if len(values) < end - 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(values) < end - 4, "the cleaner removed nothing"
    latest: dict[bytes, bytes] = {}
    c = CKConsumer({"bootstrap.servers": b.kafka_bootstrap, "group.id": "g-ctx",
                    "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                    "enable.partition.eof": True})
    c.subscribe(["ctx"])
    try:
        while (m := c.poll(10)) is not None and not m.error():
            latest[m.key()] = m.value()
    finally:
        c.close()
    assert latest[b"k0"] == b"plain57"  # not the aborted record, and not removed because of it
    assert latest[b"k1"] == b"committed"
    assert latest[b"k2"] == b"plain59"
