"""Producer.close() with a transaction open aborts it, as Kafka's producer does: a producer in
another process sends, closes, and exits; its records never reach a read_committed consumer (the
native one and confluent-kafka's), the coordinator holds no open transaction, and the next
transaction on the partition is readable at once, long before the closed one's timeout."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edgebus import Admin
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.kafka_listener.readers import read_all
from tests.txn.test_transactions_native import native_until, txp

pytestmark = [pytest.mark.integration]

# The timeout is far longer than native_until waits (30 s): only the abort by close() can let
# the sentinel through.
CLOSED = textwrap.dedent("""
    import sys
    from edgebus import Producer
    p = Producer(socket=sys.argv[1], transactional_id="closer", transaction_timeout_ms=600_000,
                 linger_ms=1)
    p.init_transactions()
    p.begin_transaction()
    for i in range(10):
        p.send("c", b"dropped%d" % i, partition=0)
    if sys.argv[2] == "flushed":
        p.flush()
    if sys.argv[2] == "with":
        with p:
            p.send("c", b"dropped-in-with", partition=0)
    else:
        p.close()
    p.close()  # a second close does nothing
    print("closed", flush=True)
""")


@pytest.mark.parametrize("how", ["flushed", "buffered", "with"])
def test_close_aborts_an_open_transaction(broker: EmbeddedBroker, how: str) -> None:
    topic = "c"
    create_topic(broker, topic)
    r = subprocess.run([sys.executable, "-c", CLOSED, broker.socket, how], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "closed\n", r.stderr
    assert "with a transaction open: aborting it" in r.stderr
    with Admin(socket=broker.socket) as admin:
        (t,) = [t for t in admin.list_transactions().transactions if t.transactional_id == "closer"]
    assert t.state == "empty" and t.partitions == [], t  # ended; Kafka's CompleteAbort
    other = txp(broker, f"after-{how}")
    try:
        with other.transaction():
            other.send(topic, b"after", partition=0)
    finally:
        other.close()
    assert native_until(broker, topic, b"after") == [b"after"]
    assert read_all(broker, topic, "read_committed") == [b"after"]
    dropped = [b"dropped%d" % i for i in range(10)] + ([b"dropped-in-with"] if how == "with" else [])
    # close() sent the buffered records before the abort marker: they are in the log, aborted.
    assert sorted(read_all(broker, topic, "read_uncommitted")) == sorted([b"after", *dropped])


def test_close_of_a_committed_producer_aborts_nothing(broker: EmbeddedBroker) -> None:
    create_topic(broker, "kept")
    p = txp(broker, "committer")
    p.begin_transaction()
    p.send("kept", b"kept", partition=0)
    p.commit_transaction()
    p.close()
    assert read_all(broker, "kept", "read_committed") == [b"kept"]
