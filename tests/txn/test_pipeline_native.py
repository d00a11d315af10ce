"""A native exactly-once pipeline: consume from `in`, transform, produce to `out` and commit the
consumer's offsets in the same transaction (send_offsets_to_transaction). The pipeline process
is SIGKILLed three times mid-stream and started again; `out` (read committed) holds each
transformed input exactly once, in order."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgebus import Producer
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic
from tests.txn.test_transactions_native import native_until

pytestmark = [pytest.mark.integration, pytest.mark.crash]

N = 400

PIPELINE = textwrap.dedent("""
    import sys
    from edgebus import Consumer, Producer, TopicPartition
    sock = sys.argv[1]
    tp = TopicPartition("in", 0)
    c = Consumer(socket=sock, group_id="pipe", enable_auto_commit=False, transport="socket")
    c.assign([tp])
    start = c.committed(tp)
    c.seek(tp, start or 0)
    p = Producer(socket=sock, transactional_id="pipe-tx", linger_ms=1)
    p.init_transactions()  # aborts what a killed instance left open
    while True:
        got = c.poll(timeout_ms=200, max_records=7)
        recs = got.get(tp, [])
        if not recs:
            continue
        p.begin_transaction()
        for r in recs:
            p.send("out", b"out-" + r.value, partition=0)
        p.send_offsets_to_transaction({tp: recs[-1].offset + 1}, c)
        p.commit_transaction()
        print(recs[-1].offset, flush=True)
""")


def run(b: EmbeddedBroker) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PIPELINE, b.socket], stdout=subprocess.PIPE)


def wait_for_progress(proc: subprocess.Popen[bytes], lines: int) -> None:
    """Until the pipeline has committed `lines` more transactions."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = 0
    deadline = time.monotonic() + 60
    while seen < lines:
        assert time.monotonic() < deadline, "the pipeline made no progress"
        if select.select([fd], [], [], 1)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, "the pipeline exited"
            seen += chunk.count(b"\n")


def test_pipeline_sigkilled_three_times_gives_each_output_once(broker: EmbeddedBroker) -> None:
    create_topic(broker, "in")
    create_topic(broker, "out")
    with Producer(socket=broker.socket) as p:
        for i in range(N):
            p.send("in", b"%04d" % i, partition=0)
    for _ in range(3):
        proc = run(broker)
        try:
            wait_for_progress(proc, 5)
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: likely inside a transaction
            proc.wait()
    proc = run(broker)
    try:
        got = native_until(broker, "out", b"out-%04d" % (N - 1))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert got == [b"out-%04d" % i for i in range(N)]
