"""The native transactional producer (Producer(transactional_id=...)) against a real supervisor:
commit and abort as the native Consumer (read_committed by default) and confluent-kafka consumers
(read_committed, read_uncommitted) see them; a SIGKILLed producer's open transaction never
becomes visible and is aborted after its timeout; zombie fencing; misuse refused with typed
errors; a native and a confluent-kafka transactional producer on one topic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus.errors import InvalidTxnStateError, ProducerFencedError
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.readers import native_values, read_all
from tests.kafka_listener.test_transactions import tx_producer

pytestmark = [pytest.mark.integration]


def txp(b: EmbeddedBroker, tid: str, **kw: object) -> Producer:
    p = Producer(socket=b.socket, transactional_id=tid, linger_ms=1, **kw)  # type: ignore[arg-type]
    p.init_transactions()
    return p


def native_until(b: EmbeddedBroker, topic: str, last: bytes) -> list[bytes]:
    """The native consumer's records of partition 0 up to and including `last` (a committed
    sentinel: what comes before it is all a reader will ever see there)."""
    out: list[bytes] = []
    with Consumer(socket=b.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition(topic, 0)])
        deadline = time.monotonic() + 30
        while last not in out:
            assert time.monotonic() < deadline, f"{last!r} not seen within 30 s; got {out}"
            for recs in c.poll(500).values():
                out.extend(r.value for r in recs)
    return out


def test_commit_and_abort_as_every_reader_sees_them(broker: EmbeddedBroker) -> None:
    create_topic(broker, "tx")
    p = txp(broker, "n1")
    try:
        p.begin_transaction()
        for i in range(3):
            p.send("tx", b"c%d" % i, partition=0)
        p.commit_transaction()
        p.begin_transaction()
        for i in range(3):
            p.send("tx", b"a%d" % i, partition=0)
        p.flush()
        p.abort_transaction()
        with p.transaction():  # the context-manager form commits
            p.send("tx", b"c3", partition=0)
        with pytest.raises(RuntimeError), p.transaction():  # and aborts when the block raises
            p.send("tx", b"a3", partition=0)
            p.flush()
            raise RuntimeError("boom")
        with p.transaction():
            p.send("tx", b"c4", partition=0)
    finally:
        p.close()
    committed = [b"c%d" % i for i in range(5)]
    assert native_until(broker, "tx", b"c4") == committed
    assert read_all(broker, "tx", "read_committed") == committed
    assert sorted(read_all(broker, "tx", "read_uncommitted")) == sorted(
        committed + [b"a%d" % i for i in range(4)])


def test_misuse_is_refused_with_typed_errors(broker: EmbeddedBroker) -> None:
    create_topic(broker, "m")
    p = Producer(socket=broker.socket, transactional_id="m1", linger_ms=1)
    plain = Producer(socket=broker.socket)
    try:
        with pytest.raises(InvalidTxnStateError, match="init_transactions"):
            p.begin_transaction()
        p.init_transactions()
        with pytest.raises(InvalidTxnStateError, match="in transaction"):
            p.send("m", b"outside", partition=0)
        with pytest.raises(InvalidTxnStateError):
            p.commit_transaction()
        p.begin_transaction()
        with pytest.raises(InvalidTxnStateError):
            p.begin_transaction()
        p.abort_transaction()
        with pytest.raises(InvalidTxnStateError, match="no transactional_id"):
            plain.begin_transaction()
    finally:
        p.close()
        plain.close()


KILLED = textwrap.dedent("""
    import sys, time
    from edgebus import Producer
    p = Producer(socket=sys.argv[1], transactional_id="doomed", transaction_timeout_ms=1500,
                 linger_ms=1)
    p.init_transactions()
    p.begin_transaction()
    for i in range(10):
        p.send("k", b"lost%d" % i, partition=0)
    p.flush()
    print("sent", flush=True)
    time.sleep(120)
""")


def test_sigkilled_producers_transaction_is_never_visible(broker: EmbeddedBroker) -> None:
    create_topic(broker, "k")
    proc = subprocess.Popen([sys.executable, "-c", KILLED, broker.socket], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"sent\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    other = txp(broker, "survivor")
    try:
        with other.transaction():
            other.send("k", b"after", partition=0)
    finally:
        other.close()
    # "after" becomes readable only once the killed producer's transaction is aborted (its
    # timeout); nothing of it is ever seen.
    assert native_until(broker, "k", b"after") == [b"after"]
    assert read_all(broker, "k", "read_committed") == [b"after"]
    assert sorted(read_all(broker, "k", "read_uncommitted")) == sorted(
        [b"after"] + [b"lost%d" % i for i in range(10)])
    # The coordinator's state ended the transaction (Kafka's CompleteAbort): none is open.
    with Admin(socket=broker.socket) as admin:
        (t,) = [t for t in admin.list_transactions().transactions if t.transactional_id == "doomed"]
    assert t.state == "empty" and t.partitions == [], t
    # The timeout bumped the epoch: a new instance of the id starts cleanly.
    again = txp(broker, "doomed")
    again.close()


def test_zombie_is_fenced(broker: EmbeddedBroker) -> None:
    create_topic(broker, "z")
    old = txp(broker, "zombie")
    new = None
    try:
        old.begin_transaction()
        old.send("z", b"old0", partition=0).get(10)
        new = txp(broker, "zombie")  # fences `old` and aborts its open transaction
        with pytest.raises(ProducerFencedError):
            old.send("z", b"old1", partition=0).get(10)
        with pytest.raises(ProducerFencedError):
            old.commit_transaction()
        with new.transaction():
            new.send("z", b"new0", partition=0)
    finally:
        old.close()
        if new is not None:
            new.close()
    assert native_until(broker, "z", b"new0") == [b"new0"]
    assert read_all(broker, "z", "read_committed") == [b"new0"]


def test_native_and_confluent_transactions_on_one_topic(broker: EmbeddedBroker) -> None:
    create_topic(broker, "mixed")
    n = txp(broker, "native-1")
    k = tx_producer(broker, "kafka-1")
    try:
        n.begin_transaction()
        k.begin_transaction()
        n.send("mixed", b"n-commit", partition=0)
        k.produce("mixed", b"k-abort", partition=0)
        k.flush(30)
        n.flush()
        k.abort_transaction(30)
        n.commit_transaction()
        k.begin_transaction()
        n.begin_transaction()
        k.produce("mixed", b"k-commit", partition=0)
        n.send("mixed", b"n-abort", partition=0)
        n.flush()
        k.commit_transaction(30)
        n.abort_transaction()
        with n.transaction():
            n.send("mixed", b"n-last", partition=0)
    finally:
        n.close()
    committed = [b"n-commit", b"k-commit", b"n-last"]
    assert native_until(broker, "mixed", b"n-last") == committed
    assert read_all(broker, "mixed", "read_committed") == committed
    assert sorted(read_all(broker, "mixed", "read_uncommitted")) == sorted(
        [*committed, b"k-abort", b"n-abort"])
    assert native_values(broker, "mixed") == committed


def test_transaction_across_a_supervisor_sigkill(broker: EmbeddedBroker) -> None:
    """A supervisor SIGKILLed in the middle of a native transaction: the producer's resends are
    recognised (idempotence inside the transaction), the transaction's state comes back from its
    file, and the commit after the restart makes each record visible once, in order."""
    create_topic(broker, "across")
    p = txp(broker, "across-1", retry_backoff_ms=10, retry_backoff_max_ms=100,
            delivery_timeout_ms=None)
    try:
        p.begin_transaction()
        futs = [p.send("across", b"r%d" % i, partition=0) for i in range(100)]
        futs[0].get(10)  # the transaction has begun on the supervisor; later batches may be in flight
        broker.kill9()
        broker.start()
        futs += [p.send("across", b"r%d" % i, partition=0) for i in range(100, 200)]
        p.commit_transaction()
        assert [f.get(10).offset for f in futs] == list(range(200))
    finally:
        p.close()
    expected = [b"r%d" % i for i in range(200)]
    assert native_until(broker, "across", b"r199") == expected
    assert read_all(broker, "across", "read_committed") == expected
